//! The controllers, one module each, registered by name in `ALL`.

use crate::StartFn;

pub mod deployment;
pub mod endpoints;
pub mod expectations;
pub mod garbage_collector;
pub mod hpa;
pub mod job;
pub mod job_plan;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod replicaset;
pub mod workload;

/// Every controller by the name `--controllers` uses. Add a loop by adding
/// its module and one line here.
pub const ALL: &[(&str, StartFn)] = &[
    ("replicaset", replicaset::start),
    ("deployment", deployment::start),
    ("garbage-collector", garbage_collector::start),
    ("namespace", namespace::start),
    ("endpoints", endpoints::start),
    ("node-ipam", node_ipam::start),
    ("node-lifecycle", node_lifecycle::start),
    ("horizontal-pod-autoscaler", hpa::start),
    (job::NAME, job::start),
];
