//! rkube-testing: what rkube's tests (and its benchmark) share, and nothing
//! a shipped binary may use (every crate but rkube-bench takes it as a
//! dev-dependency only). It owns the in-process apiserver fixture
//! ([`TestApiServer`]: started through the same flags and `start` as
//! `main`, on a free loopback port over a temporary directory, with ready
//! clients and teardown), a throwaway etcd on loopback ([`etcd::Etcd`],
//! plain or TLS, killable and restartable; [`etcd::EtcdCluster`], several
//! members with peer and client TLS), free ports ([`free_ports`]), daemons run as
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

/// `n` distinct ports free a moment ago on 127.0.0.1: all are held at once while picked,
/// so none is handed out twice (picking one at a time can return the same port again).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    use anyhow::Context;
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}
