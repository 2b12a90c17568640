//! Named network namespaces as files: a namespace is kept alive by bind-mounting its
//! `/proc/.../ns/net` onto a file, the way `ip netns add` does under /run/netns, but in a
//! directory of our choosing (iproute2 has no option for that).

use std::fs::File;
use std::io;
use std::os::fd::AsFd as _;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, FsType};

/// `f_type` of the nsfs pseudo-filesystem that namespace files live on.
const NSFS_MAGIC: FsType = FsType(0x6e73_6673);

/// Whether `path` is a mounted network namespace file.
pub fn is_netns(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Creates a new network namespace pinned at `path` (its directory is created). If `path`
/// already holds a namespace it is kept: creating is idempotent.
pub fn create(path: &Path) -> io::Result<()> {
    if is_netns(path) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    File::create(path)?;
    let target = path.to_path_buf();
    // unshare(CLONE_NEWNET) moves only the calling thread, so a short-lived thread does it
    // and the namespace outlives the thread through the bind mount.
    let result = std::thread::spawn(move || -> io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(io::Error::from)
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("network namespace thread panicked")));
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Unpins and deletes the namespace file at `path`; the namespace itself disappears once no
/// process is left in it. A missing file is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (never mounted, or unmounted already).
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs `f` on a thread that has joined the network namespace at `path`. Sockets created in
/// `f` belong to that namespace for their whole life, so `f` can return a connected
/// `std::net::TcpStream`. Used for probes into a pod's namespace and by tests to reach pods
/// in a namespace they created.
pub fn run_in<F, T>(path: &Path, f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let file = File::open(path)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> io::Result<T> {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("thread in network namespace panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn create_enter_and_remove() {
        if !is_root() {
            eprintln!("skipping: creating network namespaces needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netns/pod-a");
        create(&path).unwrap();
        assert!(is_netns(&path));
        create(&path).unwrap();
        // The namespace is really another one: a listener on the host's loopback is
        // reachable from here but not from inside (where loopback is even down).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connect = move || {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500)).is_ok()
        };
        assert!(connect());
        assert!(!run_in(&path, connect).unwrap());
        remove(&path).unwrap();
        assert!(!path.exists());
        remove(&path).unwrap();
    }
}
