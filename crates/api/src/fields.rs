//! Field-selector lookups per kind: which fields a kind can be selected by
//! (`spec.nodeName`, `status.phase`), as Kubernetes supports them.

use crate::meta::v1::ObjectMeta;
use crate::{
    apps, autoscaling, batch, certificates, coordination, core, networking, policy, rbac, scheduling, storage,
};

pub trait Fields {
    /// The value of a selectable field, or None when the kind does not
    /// support selecting by it.
    fn field(&self, path: &str) -> Option<String>;
}

/// The metadata fields every kind can be selected by. Takes the metadata
/// itself rather than a `Resource`, because `Resource` requires `Fields`: a
/// missing metadata reads as empty, as `Resource::metadata` reads it.
fn meta_field(meta: Option<&ObjectMeta>, path: &str) -> Option<String> {
    match path {
        "metadata.name" => Some(meta.map(|m| m.name.clone()).unwrap_or_default()),
        "metadata.namespace" => Some(meta.map(|m| m.namespace.clone()).unwrap_or_default()),
        _ => None,
    }
}

macro_rules! meta_only {
    ($($ty:ty),*) => {$(
        impl Fields for $ty {
            fn field(&self, path: &str) -> Option<String> {
                meta_field(self.metadata.as_ref(), path)
            }
        }
    )*};
}

meta_only!(
    core::v1::Namespace,
    core::v1::Service,
    core::v1::Endpoints,
    core::v1::ConfigMap,
    apps::v1::Deployment,
    apps::v1::ReplicaSet,
    apps::v1::DaemonSet,
    apps::v1::StatefulSet,
    apps::v1::ControllerRevision,
    batch::v1::Job,
    batch::v1::CronJob,
    core::v1::ServiceAccount,
    core::v1::ResourceQuota,
    core::v1::LimitRange,
    core::v1::PersistentVolumeClaim,
    core::v1::PersistentVolume,
    storage::v1::StorageClass,
    policy::v1::PodDisruptionBudget,
    scheduling::v1::PriorityClass,
    networking::v1::NetworkPolicy,
    networking::v1::Ingress,
    networking::v1::IngressClass,
    autoscaling::v2::HorizontalPodAutoscaler,
    coordination::v1::Lease,
    certificates::v1::CertificateSigningRequest,
    rbac::v1::Role,
    rbac::v1::ClusterRole,
    rbac::v1::RoleBinding,
    rbac::v1::ClusterRoleBinding
);

impl Fields for core::v1::Pod {
    fn field(&self, path: &str) -> Option<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        match path {
            "spec.nodeName" => Some(spec.node_name),
            "spec.schedulerName" => Some(spec.scheduler_name),
            "spec.restartPolicy" => Some(spec.restart_policy),
            "status.phase" => Some(status.phase),
            "status.podIP" => Some(status.pod_ip),
            _ => meta_field(self.metadata.as_ref(), path),
        }
    }
}

impl Fields for core::v1::Node {
    fn field(&self, path: &str) -> Option<String> {
        match path {
            "spec.unschedulable" => Some(self.spec.as_ref().is_some_and(|s| s.unschedulable).to_string()),
            _ => meta_field(self.metadata.as_ref(), path),
        }
    }
}

impl Fields for core::v1::Secret {
    fn field(&self, path: &str) -> Option<String> {
        match path {
            "type" => Some(self.r#type.clone()),
            _ => meta_field(self.metadata.as_ref(), path),
        }
    }
}

impl Fields for core::v1::Event {
    fn field(&self, path: &str) -> Option<String> {
        let io = self.involved_object.clone().unwrap_or_default();
        match path {
            "involvedObject.kind" => Some(io.kind),
            "involvedObject.name" => Some(io.name),
            "involvedObject.namespace" => Some(io.namespace),
            "involvedObject.uid" => Some(io.uid),
            "reason" => Some(self.reason.clone()),
            "type" => Some(self.r#type.clone()),
            _ => meta_field(self.metadata.as_ref(), path),
        }
    }
}
