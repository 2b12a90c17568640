//! A small filesystem of a test's own, to fill: a tmpfs of a fixed size mounted under a
//! temporary directory (root only), unmounted when dropped, also when the test fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// A tmpfs of `size` bytes at [`Tmpfs::path`]; [`Tmpfs::fill`] takes every free byte with a
/// filler file and [`Tmpfs::free`] gives them back.
pub struct Tmpfs {
    dir: Option<tempfile::TempDir>,
    mount: PathBuf,
}

/// The filler's name inside the mount.
const FILLER: &str = "filler";

impl Tmpfs {
    pub fn mount(size: u64) -> anyhow::Result<Tmpfs> {
        let dir = tempfile::tempdir().context("creating the tmpfs mount point's parent")?;
        let mount = dir.path().join("fs");
        std::fs::create_dir(&mount).with_context(|| format!("creating {}", mount.display()))?;
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "rkube-test",
            ])
            .arg(&mount)
            .status()
            .context("running mount (the disk-full tests need root)")?;
        if !status.success() {
            bail!(
                "mounting a tmpfs at {} failed ({status}); the disk-full tests need root",
                mount.display()
            );
        }
        Ok(Tmpfs {
            dir: Some(dir),
            mount,
        })
    }

    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Writes the filler until the filesystem refuses (ENOSPC); returns its size.
    pub fn fill(&self) -> anyhow::Result<u64> {
        let path = self.mount.join(FILLER);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut written = 0u64;
        // Big chunks first, then smaller ones for the last pages.
        for chunk in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
            let buf = vec![0x5au8; chunk];
            loop {
                match file.write(&buf) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(28) => break,
                    Err(e) => return Err(e).with_context(|| format!("writing {}", path.display())),
                }
            }
        }
        Ok(written)
    }

    /// Removes the filler.
    pub fn free(&self) -> anyhow::Result<()> {
        let path = self.mount.join(FILLER);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process that still holds a file in it (a server being stopped) must
        // not keep the mount around.
        let unmounted = Command::new("umount").arg("-l").arg(&self.mount).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            eprintln!("could not unmount the test tmpfs at {}", self.mount.display());
            // Keep the directory: removing it would reach into the mount.
            if let Some(dir) = self.dir.take() {
                let _ = dir.keep();
            }
        }
    }
}
