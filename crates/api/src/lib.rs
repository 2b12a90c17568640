//! rkube's API: the kinds generated from `proto/` (prost + tonic), their
//! Kubernetes JSON/YAML form (pbjson plus the hand-written union types), the
//! registry of kinds (`Resource`), validation, defaulting, label and field
//! selectors and quantities.
//!
//! This crate is pure: it performs no I/O and knows nothing of storage or
//! transport beyond the generated gRPC stubs.

pub mod intstr;
pub mod quantity;
pub mod quota;
pub mod raw;
pub mod revision;

#[allow(clippy::all, missing_docs)]
pub mod meta {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/rkube.meta.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/rkube.meta.v1.serde.rs"));
    }
}

#[allow(clippy::all, missing_docs)]
pub mod core {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/rkube.core.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/rkube.core.v1.serde.rs"));
    }
}

#[allow(clippy::all, missing_docs)]
pub mod apps {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/rkube.apps.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/rkube.apps.v1.serde.rs"));
    }
}

#[allow(clippy::all, missing_docs)]
pub mod autoscaling {
    pub mod v2 {
        include!(concat!(env!("OUT_DIR"), "/rkube.autoscaling.v2.rs"));
        include!(concat!(env!("OUT_DIR"), "/rkube.autoscaling.v2.serde.rs"));
    }
}

#[allow(clippy::all, missing_docs)]
pub mod batch {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/rkube.batch.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/rkube.batch.v1.serde.rs"));
    }
}

#[allow(clippy::all, missing_docs)]
pub mod policy {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/rkube.policy.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/rkube.policy.v1.serde.rs"));
    }
}

/// certificates.k8s.io/v1: CertificateSigningRequest.
#[allow(clippy::all, missing_docs)]
pub mod certificates {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/rkube.certificates.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/rkube.certificates.v1.serde.rs"));
    }
}

#[allow(clippy::all, missing_docs)]
pub mod scheduling {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/rkube.scheduling.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/rkube.scheduling.v1.serde.rs"));
    }
}

/// networking.k8s.io/v1: NetworkPolicy, Ingress and IngressClass.
#[allow(clippy::all, missing_docs)]
pub mod networking {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/rkube.networking.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/rkube.networking.v1.serde.rs"));
    }
}

#[allow(clippy::all, missing_docs)]
pub mod storage {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/rkube.storage.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/rkube.storage.v1.serde.rs"));
    }
}

#[allow(clippy::all, missing_docs)]
pub mod coordination {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/rkube.coordination.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/rkube.coordination.v1.serde.rs"));
    }
}

#[allow(clippy::all, missing_docs)]
pub mod rbac {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/rkube.rbac.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/rkube.rbac.v1.serde.rs"));
    }
}

/// The kubelet's service (package `rkube.kubelet.v1`): logs, exec and
/// metrics, called by the apiserver.
#[allow(clippy::all, missing_docs)]
pub mod kubelet {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/rkube.kubelet.v1.rs"));
    }
}

/// The gRPC service and its messages (package `rkube.api.v1`).
#[allow(clippy::all, missing_docs)]
pub mod api {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/rkube.api.v1.rs"));
    }
}
pub use api::v1 as rpc;

/// The protobuf descriptors of every file in `proto/`, with their comments
/// (protoc's source info), as written by the build script: what the
/// apiserver's OpenAPI schemas are generated from.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rkube_descriptor.bin"));

pub mod codec;
pub mod crd;
pub mod cron;
pub mod defaults;
pub mod fields;
pub mod placement;
pub mod resource;
pub mod schema;
pub mod selector;
pub mod time;
pub mod unsupported;
pub mod validation;
pub mod zero_values;

/// The tracing target of the steps of a pod's startup, from the apiserver's write to the
/// first status write: every daemon on the path records its step as a span (or, for a
/// delivery, an event) at DEBUG level with this target, named after the step, with the
/// field `pod_uid`, so that one pod's steps can be put together across daemons by uid and
/// time (`RUST_LOG=rkube::pod_startup=debug` shows them; `rkube-bench --only pods`
/// collects them in process and prints the breakdown).
pub const POD_STARTUP_TRACE: &str = "rkube::pod_startup";

pub use codec::{from_any, to_any, DynObject};
pub use resource::{object_key, visit_kind, KindVisitor, Resource, ResourceInfo, KINDS};
