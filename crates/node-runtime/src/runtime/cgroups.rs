//! Reads container cgroups directly from cgroupfs: OOM-kill counters and usage.
//!
//! Tasks.Metrics would need the cgroup metrics protobufs, which containerd-client does not
//! ship; the files are simple and the same data. Both hierarchies are handled: v1 (one
//! directory per controller under the root, as on this project's hosts) and v2 (unified).

use std::io;
use std::path::{Path, PathBuf};

fn is_v2(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

/// Directory of `cgroup_path` under one v1 controller, or under the v2 root.
fn dir(root: &Path, controller: Option<&str>, cgroup_path: &str) -> PathBuf {
    let relative = cgroup_path.trim_start_matches('/');
    match controller {
        Some(controller) if !is_v2(root) => root.join(controller).join(relative),
        _ => root.join(relative),
    }
}

fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Value of `key` in a flat-keyed file (`key value` per line).
fn keyed(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// How many processes the kernel OOM-killed in the cgroup; `None` if the cgroup is gone.
/// v1: `oom_kill` in `memory.oom_control` (kernel 4.13+); v2: `oom_kill` in `memory.events`.
pub fn oom_kill_count(root: &Path, cgroup_path: &str) -> io::Result<Option<u64>> {
    let file = if is_v2(root) {
        dir(root, None, cgroup_path).join("memory.events")
    } else {
        dir(root, Some("memory"), cgroup_path).join("memory.oom_control")
    };
    Ok(read_optional(&file)?.and_then(|c| keyed(&c, "oom_kill")))
}

/// `(cpu nanoseconds, memory working set bytes)`, or `None` if the cgroup is gone (the
/// container is not running).
pub fn stats(root: &Path, cgroup_path: &str) -> io::Result<Option<(u64, u64)>> {
    if is_v2(root) {
        let d = dir(root, None, cgroup_path);
        let Some(cpu) = read_optional(&d.join("cpu.stat"))? else {
            return Ok(None);
        };
        let cpu_nanos = keyed(&cpu, "usage_usec").unwrap_or(0).saturating_mul(1000);
        let usage = read_optional(&d.join("memory.current"))?
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let inactive = read_optional(&d.join("memory.stat"))?
            .and_then(|s| keyed(&s, "inactive_file"))
            .unwrap_or(0);
        return Ok(Some((cpu_nanos, usage.saturating_sub(inactive))));
    }
    let Some(cpu) = read_optional(&dir(root, Some("cpuacct"), cgroup_path).join("cpuacct.usage"))? else {
        return Ok(None);
    };
    let cpu_nanos = cpu.trim().parse().unwrap_or(0);
    let memory = dir(root, Some("memory"), cgroup_path);
    let usage = read_optional(&memory.join("memory.usage_in_bytes"))?
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    // Working set as cAdvisor computes it: usage minus inactive page cache.
    let inactive = read_optional(&memory.join("memory.stat"))?
        .and_then(|s| keyed(&s, "total_inactive_file"))
        .unwrap_or(0);
    Ok(Some((cpu_nanos, usage.saturating_sub(inactive))))
}

/// Removes `cgroup_path` and the cgroups below it, in every hierarchy; cgroups that are
/// already gone are fine. A cgroup that still has processes cannot be removed (`EBUSY`).
pub fn remove(root: &Path, cgroup_path: &str) -> io::Result<()> {
    let relative = cgroup_path.trim_start_matches('/');
    if relative.is_empty() {
        return Ok(());
    }
    let tops: Vec<PathBuf> = if is_v2(root) {
        vec![root.join(relative)]
    } else {
        std::fs::read_dir(root)?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path().join(relative))
            .collect()
    };
    for top in tops {
        remove_tree(&top)?;
    }
    Ok(())
}

fn remove_tree(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    // Only subdirectories are child cgroups; the files are the kernel's interface and go
    // away with rmdir.
    for entry in entries.filter_map(Result::ok) {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_files_are_read() {
        let root = tempfile::tempdir().unwrap();
        let memory = root.path().join("memory/rkube/pod/c1");
        let cpuacct = root.path().join("cpuacct/rkube/pod/c1");
        std::fs::create_dir_all(&memory).unwrap();
        std::fs::create_dir_all(&cpuacct).unwrap();
        std::fs::write(
            memory.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        std::fs::write(memory.join("memory.usage_in_bytes"), "10000\n").unwrap();
        std::fs::write(memory.join("memory.stat"), "cache 5\ntotal_inactive_file 4000\n").unwrap();
        std::fs::write(cpuacct.join("cpuacct.usage"), "123456\n").unwrap();
        assert_eq!(oom_kill_count(root.path(), "/rkube/pod/c1").unwrap(), Some(2));
        assert_eq!(
            stats(root.path(), "/rkube/pod/c1").unwrap(),
            Some((123_456, 6_000))
        );
        assert_eq!(oom_kill_count(root.path(), "/rkube/pod/gone").unwrap(), None);
        assert_eq!(stats(root.path(), "/rkube/pod/gone").unwrap(), None);
    }

    #[test]
    fn v2_files_are_read() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        let c = root.path().join("rkube/pod/c1");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(
            c.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        std::fs::write(c.join("cpu.stat"), "usage_usec 7\nuser_usec 5\n").unwrap();
        std::fs::write(c.join("memory.current"), "9000\n").unwrap();
        std::fs::write(c.join("memory.stat"), "anon 1\ninactive_file 1000\n").unwrap();
        assert_eq!(oom_kill_count(root.path(), "/rkube/pod/c1").unwrap(), Some(1));
        assert_eq!(stats(root.path(), "/rkube/pod/c1").unwrap(), Some((7_000, 8_000)));
    }
}
