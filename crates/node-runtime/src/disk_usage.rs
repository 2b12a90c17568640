//! How much of the node's disk a directory tree holds, as `du` counts it: the blocks
//! allocated to every file and directory below it (so a sparse file counts what it
//! really uses), each hard-linked file once, without following symbolic links or
//! crossing into other filesystems (a volume mounted inside is not the directory's own
//! usage). The kubelet measures disk-backed emptyDir volumes with it against their
//! `sizeLimit`.

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
    fn a_missing_directory_is_an_error() {
        assert!(bytes_used(Path::new("/nonexistent/rkube-du")).is_err());
    }
}
