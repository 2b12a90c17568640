//! `rkubelet log-driver PATH`: the container logger containerd's runc shim runs for each
//! container (stdout/stderr URI `binary:///path/to/rkubelet?log-driver=PATH`).
//!
//! The shim's protocol (containerd 1.6, `pkg/process/io.go`): the URI's path is the
//! program, each query key and its first value become arguments, the environment holds only
//! `CONTAINER_ID` and `CONTAINER_NAMESPACE`; fd 3 is the container's stdout, fd 4 its
//! stderr and fd 5 a pipe to close once ready (the shim waits for that before starting the
//! container). When the task is deleted the shim closes its ends of the pipes and sends
//! SIGTERM, and SIGKILL 12 s later.
//!
//! Each piece of output becomes a CRI record ([`crate::logs`]) appended to PATH: whole lines
//! as `F`; a line longer than 16 KiB, or output that stops without a newline for 100 ms,
//! as `P` pieces. The shim owns this process, so logging carries on while the kubelet is
//! down or restarting. The driver holds an exclusive `flock` on PATH while it runs: the
//! kubelet reaps an exited container (deleting its task closes the pipes) and waits for
//! that lock to go before it reports the exit.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::logs::format_record;

/// The subcommand (and URI query key) the shim runs.
pub const SUBCOMMAND: &str = "log-driver";
/// What `rkubelet log-driver --check` prints: the kubelet checks that the binary it names
/// in URIs really is a log driver before relying on it.
pub const CHECK_OUTPUT: &str = "rkubelet log-driver: CRI format v1";

const STDOUT_FD: i32 = 3;
const STDERR_FD: i32 = 4;
const READY_FD: i32 = 5;
/// Longest record content; longer lines are split into P records, as CRI loggers do.
const MAX_RECORD: usize = 16 * 1024;
/// How long an unfinished line waits for the rest before it is written as a P record.
const PARTIAL_FLUSH: Duration = Duration::from_millis(100);

/// The URI the shim needs to run `driver` writing to `log_path`.
pub fn uri(driver: &Path, log_path: &Path) -> String {
    format!(
        "binary://{}?{SUBCOMMAND}={}",
        percent_encode(&driver.display().to_string()),
        percent_encode(&log_path.display().to_string())
    )
}

/// Percent-encodes everything but unreserved characters and `/`, so Go's URL parser gives
/// the path back unchanged (`+` would otherwise become a space in the query).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Entry point of `rkubelet log-driver ARGS`; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    match args {
        [flag] if flag == "--check" => {
            println!("{CHECK_OUTPUT}");
            0
        }
        [path] => run(Path::new(path)),
        _ => {
            eprintln!("usage: rkubelet log-driver LOG_PATH (run by containerd's shim, not by hand)");
            2
        }
    }
}

struct Stream {
    name: &'static str,
    pending: Vec<u8>,
    pending_since: Option<Instant>,
}

/// Opens inherited fd `fd` as a file of our own (`/proc/self/fd`, no unsafe code) and
/// closes the inherited one.
fn reopen(fd: i32) -> std::io::Result<std::fs::File> {
    let file = std::fs::File::open(format!("/proc/self/fd/{fd}"))?;
    let _ = nix::unistd::close(fd);
    Ok(file)
}

fn run(path: &Path) -> i32 {
    // The shim closes the pipes before its SIGTERM: keep reading until they are drained
    // (it sends SIGKILL 12 s later if something else still holds them). Blocked before any
    // thread starts, so every thread has it blocked.
    let mut term = nix::sys::signal::SigSet::empty();
    term.add(nix::sys::signal::Signal::SIGTERM);
    let _ = term.thread_block();
    let pipes = [STDOUT_FD, STDERR_FD].map(|fd| {
        reopen(fd)
            .map_err(|e| eprintln!("rkubelet log-driver: fd {fd}: {e}"))
            .ok()
    });
    // Ready: the shim may start the container now.
    copy_into_log(pipes, path, None, || {
        let _ = nix::unistd::close(READY_FD);
    });
    0
}

/// Writes what `pipes` (stdout, stderr) carry into the CRI log at `path`, as records,
/// until both end; holds an exclusive `flock` on `path` meanwhile. `ready` is called once
/// the log is open. The log driver runs this for the shim's pipes; the runtime runs it
/// itself for the fifos of a container whose stdin it keeps (see
/// `runtime::containerd::stdin`), with `stop`: once set, the copying ends within a
/// quarter second, without waiting for the end (what is unread stays in the pipes).
pub fn copy_into_log(
    pipes: [Option<std::fs::File>; 2],
    path: &Path,
    stop: Option<Arc<AtomicBool>>,
    ready: impl FnOnce(),
) {
    let opened = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::OpenOptions::new().create(true).append(true).open(path));
    // The lock is taken before anything is read: a second copier of the same pipes (a
    // restarted kubelet's runtime while the old one is still going) waits here without
    // taking data the first would log, and takes over when the first ends.
    let mut file = match opened {
        Ok(f) => match lock_log(&f, stop.as_deref()) {
            // Held until this process ends: the kubelet waits for it to go before it
            // reports the container's exit, so the log is complete by then.
            Ok(true) => Some(f),
            Ok(false) => return,
            Err(e) => {
                eprintln!("rkubelet log-driver: locking {}: {e}", path.display());
                Some(f)
            }
        },
        Err(e) => {
            // Still drain the pipes: a container whose output has no reader gets EPIPE.
            eprintln!(
                "rkubelet log-driver: opening {}: {e}; the output is discarded",
                path.display()
            );
            None
        }
    };
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Option<Vec<u8>>)>();
    let mut open = 0;
    for (index, pipe) in pipes.into_iter().enumerate() {
        let Some(mut pipe) = pipe else { continue };
        open += 1;
        let tx = tx.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Read as _;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                if let Some(stop) = &stop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if !readable(&pipe, 250) {
                        continue;
                    }
                }
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.send((index, Some(buf[..n].to_vec()))).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send((index, None));
        });
    }
    drop(tx);
    ready();

    let mut streams = [
        Stream {
            name: "stdout",
            pending: Vec::new(),
            pending_since: None,
        },
        Stream {
            name: "stderr",
            pending: Vec::new(),
            pending_since: None,
        },
    ];
    while open > 0 {
        let mut out: Vec<u8> = Vec::new();
        let wait = if streams.iter().any(|s| !s.pending.is_empty()) {
            PARTIAL_FLUSH
        } else {
            Duration::from_secs(3600)
        };
        match rx.recv_timeout(wait) {
            Ok((index, Some(data))) => {
                let stream = &mut streams[index];
                if stream.pending.is_empty() {
                    stream.pending_since = Some(Instant::now());
                }
                stream.pending.extend_from_slice(&data);
                take_lines(stream, &mut out);
            }
            Ok((index, None)) => {
                // EOF: whatever is left is the stream's last line.
                let stream = &mut streams[index];
                if !stream.pending.is_empty() {
                    out.extend(format_record(
                        SystemTime::now(),
                        stream.name,
                        false,
                        &stream.pending,
                    ));
                    stream.pending.clear();
                    stream.pending_since = None;
                }
                open -= 1;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // the readers stopped (`stop`): what they read is logged, a part line too
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                for stream in streams.iter_mut().filter(|s| !s.pending.is_empty()) {
                    stream.pending_since = Instant::now().checked_sub(PARTIAL_FLUSH);
                }
                open = 0;
            }
        }
        // Output that stopped mid-line: show it now, the rest follows as its own record.
        for stream in streams.iter_mut() {
            if stream
                .pending_since
                .is_some_and(|t| !stream.pending.is_empty() && t.elapsed() >= PARTIAL_FLUSH)
            {
                out.extend(format_record(
                    SystemTime::now(),
                    stream.name,
                    true,
                    &stream.pending,
                ));
                stream.pending.clear();
                stream.pending_since = None;
            }
        }
        if let (Some(f), false) = (file.as_mut(), out.is_empty()) {
            // One write per batch: O_APPEND keeps records whole for readers.
            if let Err(e) = f.write_all(&out) {
                eprintln!("rkubelet log-driver: writing {}: {e}", path.display());
            }
        }
    }
}

/// Takes the exclusive lock on `file`; with `stop`, polls for it and gives up (`false`)
/// once `stop` is set.
fn lock_log(file: &std::fs::File, stop: Option<&AtomicBool>) -> std::io::Result<bool> {
    let Some(stop) = stop else {
        file.lock()?;
        return Ok(true);
    };
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `pipe` has data (or its end) within `ms` milliseconds.
fn readable(pipe: &std::fs::File, ms: u16) -> bool {
    use nix::poll::{poll, PollFd, PollFlags};
    use std::os::fd::AsFd as _;
    let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
    // an error (EINTR) counts as readable: the read that follows tells
    poll(&mut fds, ms).map_or(true, |n| n > 0)
}

/// Moves every complete line (and every 16 KiB piece of an overlong one) out of `pending`.
fn take_lines(stream: &mut Stream, out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let mut start = 0;
    loop {
        let rest = &stream.pending[start..];
        match rest.iter().position(|b| *b == b'\n') {
            Some(i) if i <= MAX_RECORD => {
                out.extend(format_record(now, stream.name, false, &rest[..i]));
                start += i + 1;
            }
            _ if rest.len() > MAX_RECORD => {
                out.extend(format_record(now, stream.name, true, &rest[..MAX_RECORD]));
                start += MAX_RECORD;
            }
            _ => break,
        }
    }
    stream.pending.drain(..start);
    if stream.pending.is_empty() {
        stream.pending_since = None;
    } else if start > 0 {
        stream.pending_since = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{records, Format};

    #[test]
    fn uri_survives_go_url_parsing() {
        assert_eq!(
            uri(
                Path::new("/usr/bin/rkubelet"),
                Path::new("/var/lib/rkubelet/pods/u 1/logs/a+b/0.log")
            ),
            "binary:///usr/bin/rkubelet?log-driver=/var/lib/rkubelet/pods/u%201/logs/a%2Bb/0.log"
        );
    }

    #[test]
    fn lines_become_records_and_long_lines_are_split() {
        let mut stream = Stream {
            name: "stderr",
            pending: Vec::new(),
            pending_since: None,
        };
        let mut out = Vec::new();
        stream.pending.extend_from_slice(b"a\nbb\nunfinished");
        take_lines(&mut stream, &mut out);
        assert_eq!(stream.pending, b"unfinished");
        stream.pending = vec![b'x'; MAX_RECORD * 2 + 3];
        take_lines(&mut stream, &mut out);
        assert_eq!(stream.pending.len(), 3);
        let (recs, _) = records(&out, Format::Cri);
        let shape: Vec<(bool, usize)> = recs.iter().map(|r| (r.partial, r.content.len())).collect();
        assert_eq!(
            shape,
            [(false, 1), (false, 2), (true, MAX_RECORD), (true, MAX_RECORD)]
        );
        assert!(recs.iter().all(|r| r.stream == "stderr"));
    }
}
