//! rkube-testing: what rkube's tests (and its benchmark) share, and nothing
//! a shipped binary may use (every crate but rkube-bench takes it as a
//! dev-dependency only). It owns the in-process apiserver fixture
//! ([`TestApiServer`]: started through the same flags and `start` as
//! `main`, on a free loopback port over a temporary directory, with ready
//! clients and teardown), a throwaway etcd on loopback ([`etcd::Etcd`],
//! plain or TLS, killable and restartable), daemons run as
//! tasks through their `run` function ([`Daemon`]), rkubectl run in process
//! ([`rkubectl`]), a small tmpfs to fill ([`Tmpfs`]), and the one way a test waits
//! for something ([`eventually`]). Containers, registries and network namespaces are the
//! node runtime's test harness (`rkube_kubelet::testing`), not this crate's.

mod apiserver;
mod daemon;
pub mod etcd;
mod eventually;
mod leases;
mod rkubectl;
mod tmpfs;

pub use apiserver::{TestApiServer, TestApiServerBuilder};
pub use daemon::Daemon;
pub use eventually::{eventually, Observation};
pub use leases::LeaseProbe;
pub use rkubectl::rkubectl;
pub use tmpfs::Tmpfs;
