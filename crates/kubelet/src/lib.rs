//! `rkubelet`, the node agent: it registers this machine as a Node and keeps its Lease and
//! conditions fresh ([`node`]), runs the pods the scheduler bound to it through per-pod
//! workers ([`pod_worker`]: sandbox and network, image pulls, container starts and
//! restarts, probes, status, termination), prepares their volumes ([`volumes`]), and serves
//! the kubelet gRPC service ([`server`]) the apiserver proxies logs, exec and metrics to,
//! over TLS with a certificate the apiserver issues when the apiserver is https
//! ([`serving`], [`bootstrap`]). Under memory or disk pressure it reclaims and evicts as
//! Kubernetes' eviction manager does ([`node_pressure`]).
//!
//! This crate decides *which* containers should run and reports what it sees; how a
//! container, a pod network or an image is made real on this machine is the node runtime's
//! job (`rkube-node-runtime`: containerd, CNI, registries, logs, cgroups, mounts), which
//! never talks to the apiserver. With the `test-support` feature, [`testing`] re-exports the
//! runtime's end-to-end harness and builds kubelet configurations on it.

pub mod bootstrap;
pub mod claims;
pub mod config;
pub mod container_config;
pub mod daemon;
pub mod expansion;
pub mod node;
pub mod node_pressure;
pub mod pod_dns;
pub mod pod_worker;
pub mod probes;
pub mod server;
pub mod service_env;
pub mod serving;
pub mod volumes;

pub use config::{Config, Options};
pub use daemon::{run, start, RunningKubelet};
#[cfg(feature = "test-support")]
pub mod testing;

/// `error: cause: cause ...`: see [`rkube_daemon::error_report`].
pub use rkube_daemon::error_report;
