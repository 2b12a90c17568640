//! How much of the node's disk a directory tree holds, as `du` counts it: the blocks
//! allocated to every file and directory below it (so a sparse file counts what it
//! really uses), each hard-linked file once, without following symbolic links or
//! crossing into other filesystems (a volume mounted inside is not the directory's own
//! usage). The kubelet measures disk-backed emptyDir volumes with it against their
//! `sizeLimit`, and pods' use of the node's disk when it ranks them for eviction.
//!
//! [`filesystem_stats`] is the other view: how full the filesystem holding a path is
//! (`statvfs`), the kubelet's `nodefs.*` and `imagefs.*` eviction signals.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// Bytes allocated below `dir` (itself included). Files that vanish while the walk
/// runs (a container deleting them) are skipped; an unreadable `dir` is an error.
pub fn bytes_used(dir: &Path) -> std::io::Result<u64> {
    let root = std::fs::symlink_metadata(dir)?;
    let device = root.dev();
    let mut seen = HashSet::new();
    let mut total = root.blocks() * 512;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if d != dir && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != device {
                continue;
            }
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert(meta.ino()) {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// Size and free space of a filesystem, as an unprivileged user may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FilesystemStats {
    pub capacity_bytes: u64,
    /// Free to unprivileged users (`f_bavail`), as `df` shows it: the blocks reserved
    /// for root are not there for pods.
    pub available_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// How full the filesystem holding `path` is.
pub fn filesystem_stats(path: &Path) -> std::io::Result<FilesystemStats> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let block = st.fragment_size() as u64;
    Ok(FilesystemStats {
        capacity_bytes: st.blocks() as u64 * block,
        available_bytes: st.blocks_available() as u64 * block,
        inodes: st.files() as u64,
        inodes_free: st.files_available() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn counts_written_blocks_once_and_not_holes() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let empty = bytes_used(dir.path())?;
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub)?;
        let mut f = std::fs::File::create(sub.join("data"))?;
        f.write_all(&vec![7u8; 1 << 20])?;
        f.sync_all()?;
        // a hard link to the same file and a 1 GiB hole add nothing
        std::fs::hard_link(sub.join("data"), dir.path().join("link"))?;
        std::fs::File::create(dir.path().join("sparse"))?.set_len(1 << 30)?;
        let used = bytes_used(dir.path())? - empty;
        assert!((1 << 20..(1 << 20) + (64 << 10)).contains(&used), "{used}");
        Ok(())
    }

    #[test]
    fn filesystem_stats_see_a_write() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let st = filesystem_stats(dir.path())?;
        assert!(
            st.capacity_bytes > 0 && st.available_bytes <= st.capacity_bytes,
            "{st:?}"
        );
        assert!(st.inodes_free <= st.inodes, "{st:?}");
        assert!(filesystem_stats(Path::new("/nonexistent/rkube-df")).is_err());
        Ok(())
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        assert!(bytes_used(Path::new("/nonexistent/rkube-du")).is_err());
    }
}
