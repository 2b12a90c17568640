//! The controllers, one module each, registered by name in `ALL`. Each is
//! written the same way: `NAME`, `start(ctx, shutdown)` taking the manager's
//! [`Context`](crate::Context), a `State` holding what its reconciles need,
//! and `reconcile(key, state)` returning [`Error`].

use crate::StartFn;

pub mod cron_job;
pub mod csr_approving;
pub mod csr_signing;
pub mod daemon_set;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod expectations;
pub mod garbage_collector;
pub mod history;
pub mod hpa;
pub mod job;
pub mod job_plan;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod persistent_volume;
pub mod replicaset;
pub mod resource_quota;
pub mod service_account;
pub mod stateful_set;
pub mod token_cleaner;
pub mod workload;

/// Every controller by the name `--controllers` uses. Add a loop by adding
/// its module and one line here.
pub const ALL: &[(&str, StartFn)] = &[
    (replicaset::NAME, replicaset::start),
    (deployment::NAME, deployment::start),
    (garbage_collector::NAME, garbage_collector::start),
    (namespace::NAME, namespace::start),
    (endpoints::NAME, endpoints::start),
    (node_ipam::NAME, node_ipam::start),
    (node_lifecycle::NAME, node_lifecycle::start),
    (hpa::NAME, hpa::start),
    (job::NAME, job::start),
    (cron_job::NAME, cron_job::start),
    (daemon_set::NAME, daemon_set::start),
    (stateful_set::NAME, stateful_set::start),
    (service_account::NAME, service_account::start),
    (disruption::NAME, disruption::start),
    (resource_quota::NAME, resource_quota::start),
    (persistent_volume::NAME, persistent_volume::start),
    (token_cleaner::NAME, token_cleaner::start),
    (csr_approving::NAME, csr_approving::start),
    (csr_signing::NAME, csr_signing::start),
];

/// Why a reconcile failed; the runner logs it and retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] rkube_client::Error),
    #[error("{0}")]
    Invalid(String),
    /// Creating or deleting pods failed; `reason` is Kubernetes' (FailedCreate,
    /// FailedDelete) for the ReplicaFailure condition.
    #[error("{message}")]
    Manage { reason: &'static str, message: String },
}
