//! Daemons run as their own processes, for the suites that measure a process: finding the
//! release binaries, starting them with a log file, reading their memory and CPU time from
//! /proc, and stopping them (SIGTERM, then SIGKILL) on every exit path.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the workspace's binaries: this executable's own
/// (`target/release` under `make bench`, which builds every binary first).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the benchmark's own executable")?;
    exe.parent()
        .map(Path::to_path_buf)
        .with_context(|| format!("{} has no parent directory", exe.display()))
}

/// `bin_dir()/name` if it was built.
pub fn binary(name: &str) -> anyhow::Result<Option<PathBuf>> {
    let path = bin_dir()?.join(name);
    Ok(path.is_file().then_some(path))
}

/// `bin_dir()/name`, or an error saying how to build it.
pub fn require(name: &str) -> anyhow::Result<PathBuf> {
    binary(name)?.with_context(|| {
        format!(
            "{name} is not built next to the benchmark ({}); run `make bench` or \
             `cargo build --release --workspace --bins` first",
            bin_dir().map(|d| d.display().to_string()).unwrap_or_default()
        )
    })
}

/// Whether `binary --help` lists `flag` (flags other engineers are adding as this is
/// written, such as `--health-addr`).
pub fn supports(binary: &Path, flag: &str) -> bool {
    Command::new(binary)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
}

/// A daemon started by a suite; stopped when dropped.
pub struct Daemon {
    pub name: String,
    pub pid: i32,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `program args...`, optionally inside the network namespace at `netns` (with
    /// `nsenter --net`, which execs the program, so the pid is the daemon's), its output
    /// going to `log_dir/<name>.log`.
    pub fn start(
        name: &str,
        netns: Option<&Path>,
        program: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> anyhow::Result<Daemon> {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg(program);
                c
            }
            None => Command::new(program),
        };
        let child = command
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {} ({name})", program.display()))?;
        let pid = child.id() as i32;
        let mut daemon = Daemon {
            name: name.to_string(),
            pid,
            child,
            log,
        };
        // nsenter execs the daemon; wait until it has, so /proc/PID is the daemon's.
        let expected = program.canonicalize().unwrap_or_else(|_| program.to_path_buf());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            daemon.check_running()?;
            if std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == expected) {
                return Ok(daemon);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{name} (pid {pid}) is not running {} after 10 s",
                expected.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// An error with the log's tail if the daemon has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "{} exited ({status}); the end of its log {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        Memory::of(self.pid)
    }

    pub fn cpu_ticks(&self) -> anyhow::Result<u64> {
        cpu_ticks(self.pid)
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Resident memory of a process, from /proc/PID/status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// VmRSS, bytes.
    pub rss: u64,
    /// VmHWM (peak RSS), bytes.
    pub hwm: u64,
}

impl Memory {
    pub fn of(pid: i32) -> anyhow::Result<Memory> {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = text
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("{path} has no {name} line"))?;
            let kib: u64 = line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("{path}: cannot parse {line:?}"))?;
            Ok(kib * 1024)
        };
        Ok(Memory {
            rss: field("VmRSS:")?,
            hwm: field("VmHWM:")?,
        })
    }
}

/// Proportional set size of a process, bytes (`Pss:` of /proc/PID/smaps_rollup): its RSS
/// with each shared page divided among the processes sharing it, so PSS of many copies of
/// one program adds up to what they really use.
pub fn pss(pid: i32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .with_context(|| format!("{path} has no Pss line"))?;
    let kib: u64 = line["Pss:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{path}: cannot parse {line:?}"))?;
    Ok(kib * 1024)
}

/// utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat).
pub fn cpu_ticks(pid: i32) -> anyhow::Result<u64> {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

/// utime + stime of this process's threads whose name starts with `prefix` (Linux
/// truncates thread names to 15 bytes), in clock ticks.
pub fn thread_cpu_ticks(prefix: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").context("cannot list /proc/self/task")? {
        let dir = task?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(prefix) {
            // a thread that ended meanwhile took its time with it
            total += stat_ticks(&dir.join("stat").to_string_lossy()).unwrap_or(0);
        }
    }
    Ok(total)
}

/// utime + stime of the stat file at `path` (a process's or a thread's).
fn stat_ticks(path: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    // The command name may contain spaces; the fields after it are fixed.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is fields[N - 3].
    let get = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .with_context(|| format!("{path}: no field {n}"))?
            .parse()
            .with_context(|| format!("{path}: field {n} is not a number"))
    };
    Ok(get(14)? + get(15)?)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux if that fails).
pub fn ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
