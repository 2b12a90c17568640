//! What the eviction signals read on this machine: memory from `/proc/meminfo`, the node
//! and image filesystems with `statvfs`. Behind [`SignalSource`] so unit tests can give
//! any figures; end-to-end tests use the real source on a small real filesystem.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rkube_node_runtime::disk_usage;

use super::thresholds::Signal;

/// One signal's reading: how much is left, out of how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub available: u64,
    pub capacity: u64,
}

pub type Observations = BTreeMap<Signal, Observation>;

/// Where the signals come from. A signal that cannot be read is left out (and its
/// thresholds are then never met).
pub trait SignalSource: Send + Sync {
    fn observe(&self) -> Observations;
}

/// The real machine: `/proc/meminfo`, the filesystem of the kubelet's root dir (nodefs)
/// and of containerd's root dir (imagefs).
pub struct MachineSignals {
    pub root_dir: PathBuf,
    pub image_fs_dir: PathBuf,
}

impl SignalSource for MachineSignals {
    fn observe(&self) -> Observations {
        let mut out = Observations::new();
        if let Some(m) = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| memory_available(&t))
        {
            out.insert(Signal::MemoryAvailable, m);
        }
        let filesystems = [
            (&self.root_dir, Signal::NodeFsAvailable, Signal::NodeFsInodesFree),
            (
                &self.image_fs_dir,
                Signal::ImageFsAvailable,
                Signal::ImageFsInodesFree,
            ),
        ];
        for (dir, bytes, inodes) in filesystems {
            match disk_usage::filesystem_stats(dir) {
                Ok(st) => {
                    out.insert(
                        bytes,
                        Observation {
                            available: st.available_bytes,
                            capacity: st.capacity_bytes,
                        },
                    );
                    // filesystems without an inode table (some tmpfs, btrfs) report 0
                    if st.inodes > 0 {
                        out.insert(
                            inodes,
                            Observation {
                                available: st.inodes_free,
                                capacity: st.inodes,
                            },
                        );
                    }
                }
                Err(e) => tracing::debug!("eviction signals: statvfs {}: {e}", dir.display()),
            }
        }
        out
    }
}

/// `memory.available` as Kubernetes computes it: capacity minus the working set, the
/// working set being what is in use (MemTotal - MemFree) less the inactive file cache the
/// kernel can drop at once.
pub fn memory_available(meminfo: &str) -> Option<Observation> {
    let field = |name: &str| -> Option<u64> {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
                .map(|kib| kib * 1024)
        })
    };
    let total = field("MemTotal")?;
    let usage = total.saturating_sub(field("MemFree")?);
    let working_set = usage.saturating_sub(field("Inactive(file)").unwrap_or(0));
    Some(Observation {
        available: total.saturating_sub(working_set),
        capacity: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_available_is_capacity_minus_the_working_set() {
        let meminfo = "MemTotal:        1000 kB\nMemFree:          200 kB\nMemAvailable:     500 kB\nActive(file):      50 kB\nInactive(file):   100 kB\n";
        // usage 800 kB, working set 700 kB, available 300 kB
        assert_eq!(
            memory_available(meminfo),
            Some(Observation {
                available: 300 * 1024,
                capacity: 1000 * 1024
            })
        );
        assert_eq!(memory_available("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn the_machine_reports_every_signal_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let source = MachineSignals {
            root_dir: dir.path().into(),
            image_fs_dir: dir.path().into(),
        };
        let obs = source.observe();
        for s in [
            Signal::MemoryAvailable,
            Signal::NodeFsAvailable,
            Signal::ImageFsAvailable,
        ] {
            let o = obs
                .get(&s)
                .unwrap_or_else(|| panic!("{} missing: {obs:?}", s.name()));
            assert!(o.available <= o.capacity && o.capacity > 0, "{}: {o:?}", s.name());
        }
        let missing = MachineSignals {
            root_dir: "/nonexistent/rkube".into(),
            image_fs_dir: "/nonexistent/rkube".into(),
        };
        assert!(!missing.observe().contains_key(&Signal::NodeFsAvailable));
    }
}
