//! The kernel's mount table as this process sees it, and the few mounts the node makes
//! itself (memory-backed volumes).

use std::path::{Path, PathBuf};

/// Mounts a tmpfs (`size` bytes at most, else the kernel's default of half the RAM) on
/// `dir` unless one is there already (a sync after a kubelet restart). Memory used in it
/// is charged to whoever writes it, as in Kubernetes.
pub fn mount_tmpfs(dir: &Path, size: Option<i64>) -> std::io::Result<()> {
    if mount_points_below(dir).iter().any(|m| m == dir) {
        return Ok(());
    }
    let options = match size {
        Some(bytes) => format!("mode=0777,size={bytes}"),
        None => "mode=0777".to_string(),
    };
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(std::io::Error::from)
}

/// Mount points at or below `dir` in this process's mount namespace, deepest first.
pub fn mount_points_below(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    points.dedup();
    points
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
pub fn unescape_mountinfo(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything mounted at or below `dir`, deepest first; lazily, so a process still
/// inside does not stop the cleanup. Mounts already gone are not an error.
pub fn unmount_below(dir: &Path) -> std::io::Result<()> {
    for point in mount_points_below(dir) {
        match nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(std::io::Error::from(e)),
        }
    }
    Ok(())
}
