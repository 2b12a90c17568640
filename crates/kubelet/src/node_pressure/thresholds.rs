//! Eviction thresholds as Kubernetes writes them: `--eviction-hard
//! memory.available<100Mi,nodefs.available<10%`. A threshold is met when the signal's
//! available amount drops below it; a percentage is of the signal's capacity.

use std::fmt;

use rkube_api::quantity::Quantity;

/// Kubernetes' `--eviction-hard` default on Linux.
pub const DEFAULT_EVICTION_HARD: &str =
    "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%";

/// What the kubelet measures to decide whether the node is short of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// The node's memory minus its working set.
    MemoryAvailable,
    /// Free space on the filesystem of the kubelet's root dir (volumes, logs).
    NodeFsAvailable,
    NodeFsInodesFree,
    /// Free space on containerd's root filesystem (images, container layers).
    ImageFsAvailable,
    ImageFsInodesFree,
}

impl Signal {
    pub const ALL: [Signal; 5] = [
        Signal::MemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
        }
    }

    /// The resource the node is low on, as eviction messages name it.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => "inodes",
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => "ephemeral-storage",
        }
    }

    /// The node condition the signal drives.
    pub fn condition(self) -> Condition {
        match self {
            Signal::MemoryAvailable => Condition::MemoryPressure,
            _ => Condition::DiskPressure,
        }
    }

    /// Whether the amount is bytes (else a count of inodes).
    pub fn is_bytes(self) -> bool {
        !matches!(self, Signal::NodeFsInodesFree | Signal::ImageFsInodesFree)
    }

    /// Whether the signal is about the image filesystem.
    pub fn is_imagefs(self) -> bool {
        matches!(self, Signal::ImageFsAvailable | Signal::ImageFsInodesFree)
    }
}

/// The node conditions eviction thresholds drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Condition {
    MemoryPressure,
    DiskPressure,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// Bytes (or inodes for the inode signals).
    Absolute(u64),
    /// Of the signal's capacity, in (0, 100].
    Percent(f64),
}

/// One `signal<amount`.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub amount: Amount,
    /// The amount as the operator wrote it, for messages.
    pub written: String,
}

impl Threshold {
    /// The amount below which the threshold is met, for a signal of `capacity`.
    pub fn limit(&self, capacity: u64) -> u64 {
        match self.amount {
            Amount::Absolute(v) => v,
            Amount::Percent(p) => (capacity as f64 * p / 100.0).round() as u64,
        }
    }

    /// Whether `available` out of `capacity` is below the threshold.
    pub fn met(&self, available: u64, capacity: u64) -> bool {
        available < self.limit(capacity)
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}<{}", self.signal.name(), self.written)
    }
}

/// Parses `flag`'s value: comma-separated `signal<amount`, amount a quantity (`100Mi`) or
/// a percentage (`10%`). Empty: no thresholds. Errors name the flag and the bad part.
pub fn parse_thresholds(flag: &str, text: &str) -> Result<Vec<Threshold>, String> {
    let mut out: Vec<Threshold> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |why: String| format!("{flag} {text:?}: {part:?} {why}");
        let Some((name, amount)) = part.split_once('<') else {
            return Err(bad(
                "is not signal<amount (only < is supported), e.g. memory.available<100Mi".into(),
            ));
        };
        let (name, amount) = (name.trim(), amount.trim());
        let Some(signal) = Signal::ALL.into_iter().find(|s| s.name() == name) else {
            let known: Vec<_> = Signal::ALL.iter().map(|s| s.name()).collect();
            return Err(bad(format!(
                "names no eviction signal; use one of {}",
                known.join(", ")
            )));
        };
        let parsed = match amount.strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Amount::Percent(p),
                _ => return Err(bad("has a percentage outside (0%, 100%]".into())),
            },
            None => match Quantity::new(amount).value() {
                Ok(v) if v >= 0 => Amount::Absolute(v as u64),
                _ => {
                    return Err(bad(
                        "has no valid amount: give a quantity like 100Mi or a percentage like 10%".into(),
                    ))
                }
            },
        };
        if out.iter().any(|t| t.signal == signal) {
            return Err(bad(format!("repeats {}", signal.name())));
        }
        out.push(Threshold {
            signal,
            amount: parsed,
            written: amount.to_string(),
        });
    }
    Ok(out)
}

/// `bytes` the way Kubernetes prints a quantity: the largest binary suffix that divides
/// it exactly (`100Mi`), else plain bytes.
pub fn format_bytes(bytes: u64) -> String {
    for (shift, suffix) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_parses_as_kubernetes_has_it() {
        let t = parse_thresholds("--eviction-hard", DEFAULT_EVICTION_HARD).unwrap();
        let signals: Vec<_> = t.iter().map(|t| t.signal).collect();
        assert_eq!(
            signals,
            [
                Signal::MemoryAvailable,
                Signal::NodeFsAvailable,
                Signal::ImageFsAvailable,
                Signal::NodeFsInodesFree
            ]
        );
        assert_eq!(t[0].amount, Amount::Absolute(100 << 20));
        assert_eq!(t[1].amount, Amount::Percent(10.0));
        assert_eq!(t[0].to_string(), "memory.available<100Mi");
        assert!(parse_thresholds("--eviction-hard", "").unwrap().is_empty());
    }

    #[test]
    fn thresholds_compare_available_with_the_amount_or_share_of_capacity() {
        let t = parse_thresholds("--eviction-hard", "nodefs.available<10%, memory.available<1Gi").unwrap();
        assert_eq!(t[0].limit(1000), 100);
        assert!(t[0].met(99, 1000));
        assert!(!t[0].met(100, 1000));
        assert!(t[1].met((1 << 30) - 1, 1 << 40));
        assert!(!t[1].met(1 << 30, 1 << 40));
    }

    #[test]
    fn bad_input_names_the_flag_and_the_part() {
        for (text, says) in [
            ("memory.available>100Mi", "only < is supported"),
            ("memory.free<100Mi", "names no eviction signal"),
            ("nodefs.available<110%", "outside (0%, 100%]"),
            ("nodefs.available<lots", "no valid amount"),
            ("nodefs.available<-1", "no valid amount"),
            (
                "nodefs.available<1%,nodefs.available<2%",
                "repeats nodefs.available",
            ),
        ] {
            let err = parse_thresholds("--eviction-hard", text).unwrap_err();
            assert!(err.starts_with(&format!("--eviction-hard {text:?}")), "{err}");
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn bytes_print_as_kubernetes_quantities() {
        assert_eq!(format_bytes(100 << 20), "100Mi");
        assert_eq!(format_bytes(80 << 20), "80Mi");
        assert_eq!(format_bytes(1536), "1536");
        assert_eq!(format_bytes(3 << 10), "3Ki");
        assert_eq!(format_bytes(0), "0");
        assert_eq!(format_bytes(1001), "1001");
    }
}
