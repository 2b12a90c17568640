//! Local volumes with real sizes: each volume is an ext4 filesystem in an image
//! file `DIR/NAME.img`, attached through a loop device and mounted at `DIR/NAME`;
//! pods get bind mounts of that mount. A write past the size fails with ENOSPC
//! inside the volume instead of filling the node.
//!
//! The image is allocated in full (`fallocate`), so a volume's space is the
//! node's from the start and cannot be overcommitted. The loop device is
//! attached by mount(8)'s `-o loop`, which marks it autoclear: it is released
//! by the kernel when the filesystem's last mount goes, so no loop device
//! outlives its volume's mounts even when this process dies.
//!
//! Needs `mkfs.ext4` (e2fsprogs), `mount`/`umount` and `fallocate` (util-linux).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::mounts;

/// The image file of the volume mounted at `dir`.
pub fn image_of(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".img");
    PathBuf::from(s)
}

fn run(cmd: &mut Command) -> std::io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "{:?} failed ({}): {}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Whether something is mounted exactly at `dir`.
pub fn is_mounted(dir: &Path) -> bool {
    mounts::mount_points_below(dir).iter().any(|m| m == dir)
}

/// Makes the volume's filesystem (`bytes` large) unless its image exists, and mounts it
/// at `dir` unless mounted (a kubelet restart finds it mounted and leaves it).
pub fn ensure_mounted(dir: &Path, bytes: i64) -> std::io::Result<()> {
    if is_mounted(dir) {
        return Ok(());
    }
    let image = image_of(dir);
    if let Some(parent) = image.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if !image.exists() {
        // made under a temporary name, so a crash never leaves a half-made image behind
        let partial = image.with_extension("img.partial");
        let _ = std::fs::remove_file(&partial);
        run(Command::new("fallocate")
            .arg("-l")
            .arg(bytes.to_string())
            .arg(&partial))?;
        // -m 0: the claim's size is the user's (no blocks reserved for root)
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&partial))?;
        std::fs::rename(&partial, &image)?;
    }
    std::fs::create_dir_all(dir)?;
    match attached_loop_device(&image) {
        // The filesystem is still alive on its loop device (its last unmount is being
        // finished, or a mount elsewhere holds it): mount that device, which gives the
        // same filesystem. A second loop device over the image would be a second,
        // independent ext4 on the same blocks: stale reads and a corrupted image.
        Some(device) => run(Command::new("mount").args(["-t", "ext4"]).arg(device).arg(dir))?,
        None => run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(&image)
            .arg(dir))?,
    }
    // the volume's root is writable by any user a pod runs as, as a fresh emptyDir is
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
}

/// The loop device `image` is attached to, if any (`losetup -j`).
fn attached_loop_device(image: &Path) -> Option<String> {
    let out = Command::new("losetup").arg("-j").arg(image).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    line.split_once(':').map(|(device, _)| device.to_string())
}

/// Bind-mounts `source` on `target` (made if missing) unless something is mounted there.
pub fn bind(source: &Path, target: &Path) -> std::io::Result<()> {
    if is_mounted(target) {
        return Ok(());
    }
    std::fs::create_dir_all(target)?;
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(std::io::Error::from)
}

/// The device (`major:minor`) of each mount point in this mount namespace.
fn devices() -> Vec<(String, PathBuf)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let dev = f.nth(2)?.to_string();
            let point = f.nth(1)?;
            Some((dev, PathBuf::from(mounts::unescape_mountinfo(point))))
        })
        .collect()
}

/// Unmounts the volumes mounted directly below `root` that no pod's bind mount uses any
/// more (their loop devices go with them); returns their directories.
pub fn release_unused(root: &Path) -> Vec<PathBuf> {
    let all = devices();
    let mut released = Vec::new();
    for (dev, point) in &all {
        if point.parent() != Some(root) {
            continue;
        }
        let users = all.iter().filter(|(d, _)| d == dev).count();
        if users == 1 {
            // not lazy: the filesystem is written back and its loop device released
            // before this returns, so a pod mounting the volume next finds it whole
            match nix::mount::umount2(point, nix::mount::MntFlags::empty()) {
                Ok(()) => released.push(point.clone()),
                Err(nix::errno::Errno::EBUSY) => {
                    tracing::debug!(volume = %point.display(), "still busy; unmounted at a later look")
                }
                Err(e) => tracing::warn!(volume = %point.display(), "unmounting: {e}"),
            }
        }
    }
    released
}

/// The volumes (their mount directories) that have an image below `root`.
pub fn list(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "img"))
        .map(|p| p.with_extension(""))
        .collect()
}

/// Removes an unmounted volume: its image and mount directory (its space goes back to
/// the node). Refuses while it is mounted.
pub fn remove(dir: &Path) -> std::io::Result<()> {
    if is_mounted(dir) {
        return Err(std::io::Error::other(format!(
            "{} is still mounted",
            dir.display()
        )));
    }
    match std::fs::remove_file(image_of(dir)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real volume: made, mounted, full at its size, released and removed.
    #[test]
    fn a_volume_is_its_own_filesystem_of_its_size() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root for loop devices");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("volumes");
        let dir = root.join("pvc-1");
        ensure_mounted(&dir, 8 << 20).unwrap();
        assert!(is_mounted(&dir));
        ensure_mounted(&dir, 8 << 20).unwrap(); // again: left alone
        let pod = tmp.path().join("pod");
        bind(&dir, &pod).unwrap();
        std::fs::write(pod.join("hello"), b"hi").unwrap();
        let err = std::fs::write(pod.join("big"), vec![0u8; 16 << 20]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::ENOSPC), "{err}");
        // still used by the pod's bind mount
        assert!(release_unused(&root).is_empty());
        nix::mount::umount2(&pod, nix::mount::MntFlags::MNT_DETACH).unwrap();
        assert_eq!(release_unused(&root), vec![dir.clone()]);
        assert_eq!(list(&root), vec![dir.clone()]);
        // mounted again: the data is there
        ensure_mounted(&dir, 8 << 20).unwrap();
        assert_eq!(std::fs::read(dir.join("hello")).unwrap(), b"hi");
        nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH).unwrap();
        remove(&dir).unwrap();
        assert!(list(&root).is_empty());
    }
}
