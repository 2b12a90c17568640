//! The registry of kinds. Every kind is one proto message plus one line in
//! the `kinds!` table below; the line gives its names, scope and whether it
//! has a status subresource, and generates the `Resource` impl, the
//! `ResourceInfo` entry and the arm of `visit_kind`.

use crate::meta::v1::ObjectMeta;
use crate::{
    apps, autoscaling, batch, certificates, coordination, core, networking, policy, rbac, scheduling, storage,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Static facts about a kind, for discovery, the CLI and dynamic dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group: "" for core, "apps", "autoscaling", "coordination.k8s.io".
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Plural resource name, the key in URLs and storage ("pods").
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Whether the kind has a status subresource: Update ignores status and
    /// UpdateStatus ignores everything else.
    pub has_status: bool,
    /// Type URL of the message inside `google.protobuf.Any`.
    pub type_url: &'static str,
}

impl ResourceInfo {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, or `pods` for the core group, as kubectl prints
    /// in `deployment.apps/web created`.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `deployment.apps`, or `pod`, for `kind.group/name` output.
    pub fn singular_group(&self) -> String {
        let kind = self.kind.to_ascii_lowercase();
        if self.group.is_empty() {
            kind
        } else {
            format!("{kind}.{}", self.group)
        }
    }

    /// Kubernetes' resource categories of the kind: `all` for what
    /// `kubectl get all` shows (workloads, their pods, services, autoscalers).
    pub fn categories(&self) -> &'static [&'static str] {
        match (self.group, self.kind) {
            ("", "Pod" | "Service")
            | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
            | ("batch", "Job" | "CronJob")
            | ("autoscaling", "HorizontalPodAutoscaler") => &["all"],
            _ => &[],
        }
    }

    /// The kinds of a category (`all`), in kubectl's order of `get all`.
    pub fn in_category(category: &str) -> Vec<&'static ResourceInfo> {
        const ORDER: &[&str] = &[
            "Pod",
            "Service",
            "DaemonSet",
            "Deployment",
            "ReplicaSet",
            "StatefulSet",
            "HorizontalPodAutoscaler",
            "CronJob",
            "Job",
        ];
        let mut kinds: Vec<&'static ResourceInfo> = KINDS
            .iter()
            .filter(|k| k.categories().contains(&category))
            .collect();
        kinds.sort_by_key(|k| ORDER.iter().position(|o| *o == k.kind).unwrap_or(ORDER.len()));
        kinds
    }

    /// Finds a kind by any name kubectl accepts: plural, singular, short
    /// name, kind, optionally qualified with the group (`deployments.apps`).
    pub fn lookup(name: &str) -> Option<&'static ResourceInfo> {
        let lower = name.to_ascii_lowercase();
        let (base, group) = match lower.split_once('.') {
            Some((b, g)) => (b.to_string(), Some(g.to_string())),
            None => (lower.clone(), None),
        };
        KINDS.iter().find(|k| {
            let names = [k.plural, k.singular]
                .into_iter()
                .chain(k.short_names.iter().copied())
                .any(|n| n == base)
                || k.kind.eq_ignore_ascii_case(&base);
            names && group.as_deref().is_none_or(|g| g == k.group)
        })
    }

    /// Finds a kind by `apiVersion` and `kind`, as written in a manifest.
    pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
        KINDS
            .iter()
            .find(|k| k.kind == kind && k.api_version() == api_version)
    }

    pub fn by_type_url(url: &str) -> Option<&'static ResourceInfo> {
        KINDS.iter().find(|k| k.type_url == url)
    }

    pub fn by_group_resource(group: &str, plural: &str) -> Option<&'static ResourceInfo> {
        KINDS.iter().find(|k| k.group == group && k.plural == plural)
    }
}

/// A kind of object the API serves.
pub trait Resource:
    prost::Message
    + Default
    + Clone
    + PartialEq
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + crate::validation::Validate
    + crate::defaults::Defaulting
    + crate::fields::Fields
    + 'static
{
    const INFO: ResourceInfo;

    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    /// Sets `apiVersion` and `kind` to this kind's.
    fn set_type_meta(&mut self);
    /// The `apiVersion` and `kind` the object itself says.
    fn type_meta(&self) -> (&str, &str);
    /// Whether the desired state (everything but metadata and status) is
    /// the same; a change bumps `metadata.generation`.
    fn same_spec(&self, other: &Self) -> bool;
    /// Replaces this object's status with `other`'s (no-op without status).
    fn copy_status_from(&mut self, other: &Self);
    /// Replaces everything but metadata and status with `other`'s.
    fn copy_spec_from(&mut self, other: &Self);

    /// The kind's entry in `KINDS`.
    fn info() -> &'static ResourceInfo {
        &Self::INFO
    }

    fn name(&self) -> &str {
        &self.metadata().name
    }

    fn namespace(&self) -> &str {
        &self.metadata().namespace
    }

    /// `namespace/name`, or `name` for cluster-scoped kinds: the key of
    /// caches and work queues.
    fn key(&self) -> String {
        object_key(self.namespace(), self.name())
    }
}

/// `namespace/name`, or `name` when there is no namespace.
pub fn object_key(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// Something that acts on a kind known only at run time: `visit_kind`
/// calls `visit::<K>()` with the concrete type.
pub trait KindVisitor {
    type Output;
    fn visit<K: Resource>(self) -> Self::Output;
}

macro_rules! impl_status_kind {
    ($ty:ty) => {
        fn same_spec(&self, other: &Self) -> bool {
            self.spec == other.spec
        }
        fn copy_status_from(&mut self, other: &Self) {
            self.status = other.status.clone();
        }
        fn copy_spec_from(&mut self, other: &Self) {
            self.spec = other.spec.clone();
        }
    };
}

macro_rules! impl_plain_kind {
    ($ty:ty) => {
        fn same_spec(&self, other: &Self) -> bool {
            let mut a = self.clone();
            let mut b = other.clone();
            a.metadata = None;
            b.metadata = None;
            a.set_type_meta();
            b.set_type_meta();
            a == b
        }
        fn copy_status_from(&mut self, _other: &Self) {}
        fn copy_spec_from(&mut self, other: &Self) {
            let meta = self.metadata.take();
            *self = other.clone();
            self.metadata = meta;
        }
    };
}

macro_rules! kinds {
    ($( $ty:ty => { group: $group:literal, version: $version:literal, kind: $kind:literal,
        plural: $plural:literal, singular: $singular:literal, short: [$($short:literal),*],
        namespaced: $ns:literal, status: $status:ident, proto: $proto:literal } ),* $(,)?) => {
        $(
        impl Resource for $ty {
            const INFO: ResourceInfo = ResourceInfo {
                group: $group,
                version: $version,
                kind: $kind,
                plural: $plural,
                singular: $singular,
                short_names: &[$($short),*],
                namespaced: $ns,
                has_status: kinds!(@has $status),
                type_url: concat!("type.googleapis.com/", $proto),
            };
            fn metadata(&self) -> &ObjectMeta {
                static EMPTY: std::sync::OnceLock<ObjectMeta> = std::sync::OnceLock::new();
                self.metadata.as_ref().unwrap_or_else(|| EMPTY.get_or_init(ObjectMeta::default))
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                self.metadata.get_or_insert_with(ObjectMeta::default)
            }
            fn set_type_meta(&mut self) {
                self.api_version = Self::INFO.api_version();
                self.kind = $kind.to_string();
            }
            fn type_meta(&self) -> (&str, &str) {
                (&self.api_version, &self.kind)
            }
            kinds!(@body $status $ty);
        }
        )*

        /// Every kind this API serves.
        pub static KINDS: &[ResourceInfo] = &[$(<$ty as Resource>::INFO),*];

        /// Calls `visitor.visit::<K>()` for the kind `info` describes.
        pub fn visit_kind<V: KindVisitor>(info: &ResourceInfo, visitor: V) -> V::Output {
            $(
            if info.kind == $kind && info.group == $group {
                return visitor.visit::<$ty>();
            }
            )*
            unreachable!("ResourceInfo values come from KINDS")
        }
    };
    (@has status) => { true };
    (@has plain) => { false };
    (@body status $ty:ty) => { impl_status_kind!($ty); };
    (@body plain $ty:ty) => { impl_plain_kind!($ty); };
}

kinds! {
    core::v1::Namespace => { group: "", version: "v1", kind: "Namespace", plural: "namespaces", singular: "namespace", short: ["ns"], namespaced: false, status: status, proto: "rkube.core.v1.Namespace" },
    core::v1::Node => { group: "", version: "v1", kind: "Node", plural: "nodes", singular: "node", short: ["no"], namespaced: false, status: status, proto: "rkube.core.v1.Node" },
    core::v1::Pod => { group: "", version: "v1", kind: "Pod", plural: "pods", singular: "pod", short: ["po"], namespaced: true, status: status, proto: "rkube.core.v1.Pod" },
    core::v1::Service => { group: "", version: "v1", kind: "Service", plural: "services", singular: "service", short: ["svc"], namespaced: true, status: status, proto: "rkube.core.v1.Service" },
    core::v1::Endpoints => { group: "", version: "v1", kind: "Endpoints", plural: "endpoints", singular: "endpoints", short: ["ep"], namespaced: true, status: plain, proto: "rkube.core.v1.Endpoints" },
    core::v1::Event => { group: "", version: "v1", kind: "Event", plural: "events", singular: "event", short: ["ev"], namespaced: true, status: plain, proto: "rkube.core.v1.Event" },
    core::v1::ConfigMap => { group: "", version: "v1", kind: "ConfigMap", plural: "configmaps", singular: "configmap", short: ["cm"], namespaced: true, status: plain, proto: "rkube.core.v1.ConfigMap" },
    core::v1::Secret => { group: "", version: "v1", kind: "Secret", plural: "secrets", singular: "secret", short: [], namespaced: true, status: plain, proto: "rkube.core.v1.Secret" },
    core::v1::ServiceAccount => { group: "", version: "v1", kind: "ServiceAccount", plural: "serviceaccounts", singular: "serviceaccount", short: ["sa"], namespaced: true, status: plain, proto: "rkube.core.v1.ServiceAccount" },
    core::v1::ResourceQuota => { group: "", version: "v1", kind: "ResourceQuota", plural: "resourcequotas", singular: "resourcequota", short: ["quota"], namespaced: true, status: status, proto: "rkube.core.v1.ResourceQuota" },
    core::v1::PersistentVolumeClaim => { group: "", version: "v1", kind: "PersistentVolumeClaim", plural: "persistentvolumeclaims", singular: "persistentvolumeclaim", short: ["pvc"], namespaced: true, status: status, proto: "rkube.core.v1.PersistentVolumeClaim" },
    core::v1::PersistentVolume => { group: "", version: "v1", kind: "PersistentVolume", plural: "persistentvolumes", singular: "persistentvolume", short: ["pv"], namespaced: false, status: status, proto: "rkube.core.v1.PersistentVolume" },
    storage::v1::StorageClass => { group: "storage.k8s.io", version: "v1", kind: "StorageClass", plural: "storageclasses", singular: "storageclass", short: ["sc"], namespaced: false, status: plain, proto: "rkube.storage.v1.StorageClass" },
    core::v1::LimitRange => { group: "", version: "v1", kind: "LimitRange", plural: "limitranges", singular: "limitrange", short: ["limits"], namespaced: true, status: plain, proto: "rkube.core.v1.LimitRange" },
    apps::v1::Deployment => { group: "apps", version: "v1", kind: "Deployment", plural: "deployments", singular: "deployment", short: ["deploy"], namespaced: true, status: status, proto: "rkube.apps.v1.Deployment" },
    apps::v1::ReplicaSet => { group: "apps", version: "v1", kind: "ReplicaSet", plural: "replicasets", singular: "replicaset", short: ["rs"], namespaced: true, status: status, proto: "rkube.apps.v1.ReplicaSet" },
    apps::v1::DaemonSet => { group: "apps", version: "v1", kind: "DaemonSet", plural: "daemonsets", singular: "daemonset", short: ["ds"], namespaced: true, status: status, proto: "rkube.apps.v1.DaemonSet" },
    apps::v1::StatefulSet => { group: "apps", version: "v1", kind: "StatefulSet", plural: "statefulsets", singular: "statefulset", short: ["sts"], namespaced: true, status: status, proto: "rkube.apps.v1.StatefulSet" },
    apps::v1::ControllerRevision => { group: "apps", version: "v1", kind: "ControllerRevision", plural: "controllerrevisions", singular: "controllerrevision", short: [], namespaced: true, status: plain, proto: "rkube.apps.v1.ControllerRevision" },
    batch::v1::Job => { group: "batch", version: "v1", kind: "Job", plural: "jobs", singular: "job", short: [], namespaced: true, status: status, proto: "rkube.batch.v1.Job" },
    batch::v1::CronJob => { group: "batch", version: "v1", kind: "CronJob", plural: "cronjobs", singular: "cronjob", short: ["cj"], namespaced: true, status: status, proto: "rkube.batch.v1.CronJob" },
    policy::v1::PodDisruptionBudget => { group: "policy", version: "v1", kind: "PodDisruptionBudget", plural: "poddisruptionbudgets", singular: "poddisruptionbudget", short: ["pdb"], namespaced: true, status: status, proto: "rkube.policy.v1.PodDisruptionBudget" },
    scheduling::v1::PriorityClass => { group: "scheduling.k8s.io", version: "v1", kind: "PriorityClass", plural: "priorityclasses", singular: "priorityclass", short: ["pc"], namespaced: false, status: plain, proto: "rkube.scheduling.v1.PriorityClass" },
    networking::v1::NetworkPolicy => { group: "networking.k8s.io", version: "v1", kind: "NetworkPolicy", plural: "networkpolicies", singular: "networkpolicy", short: ["netpol"], namespaced: true, status: plain, proto: "rkube.networking.v1.NetworkPolicy" },
    networking::v1::Ingress => { group: "networking.k8s.io", version: "v1", kind: "Ingress", plural: "ingresses", singular: "ingress", short: ["ing"], namespaced: true, status: status, proto: "rkube.networking.v1.Ingress" },
    networking::v1::IngressClass => { group: "networking.k8s.io", version: "v1", kind: "IngressClass", plural: "ingressclasses", singular: "ingressclass", short: [], namespaced: false, status: plain, proto: "rkube.networking.v1.IngressClass" },
    autoscaling::v2::HorizontalPodAutoscaler => { group: "autoscaling", version: "v2", kind: "HorizontalPodAutoscaler", plural: "horizontalpodautoscalers", singular: "horizontalpodautoscaler", short: ["hpa"], namespaced: true, status: status, proto: "rkube.autoscaling.v2.HorizontalPodAutoscaler" },
    coordination::v1::Lease => { group: "coordination.k8s.io", version: "v1", kind: "Lease", plural: "leases", singular: "lease", short: [], namespaced: true, status: plain, proto: "rkube.coordination.v1.Lease" },
    certificates::v1::CertificateSigningRequest => { group: "certificates.k8s.io", version: "v1", kind: "CertificateSigningRequest", plural: "certificatesigningrequests", singular: "certificatesigningrequest", short: ["csr"], namespaced: false, status: status, proto: "rkube.certificates.v1.CertificateSigningRequest" },
    rbac::v1::Role => { group: "rbac.authorization.k8s.io", version: "v1", kind: "Role", plural: "roles", singular: "role", short: [], namespaced: true, status: plain, proto: "rkube.rbac.v1.Role" },
    rbac::v1::ClusterRole => { group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRole", plural: "clusterroles", singular: "clusterrole", short: [], namespaced: false, status: plain, proto: "rkube.rbac.v1.ClusterRole" },
    rbac::v1::RoleBinding => { group: "rbac.authorization.k8s.io", version: "v1", kind: "RoleBinding", plural: "rolebindings", singular: "rolebinding", short: [], namespaced: true, status: plain, proto: "rkube.rbac.v1.RoleBinding" },
    rbac::v1::ClusterRoleBinding => { group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRoleBinding", plural: "clusterrolebindings", singular: "clusterrolebinding", short: [], namespaced: false, status: plain, proto: "rkube.rbac.v1.ClusterRoleBinding" },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_accepts_every_kubectl_spelling() {
        for (name, kind) in [
            ("po", "Pod"),
            ("pods", "Pod"),
            ("pod", "Pod"),
            ("Pod", "Pod"),
            ("deploy", "Deployment"),
            ("deployments.apps", "Deployment"),
            ("rs", "ReplicaSet"),
            ("svc", "Service"),
            ("no", "Node"),
            ("ns", "Namespace"),
            ("ep", "Endpoints"),
            ("ev", "Event"),
            ("cm", "ConfigMap"),
            ("hpa", "HorizontalPodAutoscaler"),
            ("leases", "Lease"),
            ("clusterroles", "ClusterRole"),
            ("rolebindings.rbac.authorization.k8s.io", "RoleBinding"),
            ("clusterrolebinding", "ClusterRoleBinding"),
            ("role", "Role"),
            ("sa", "ServiceAccount"),
            ("quota", "ResourceQuota"),
            ("limits", "LimitRange"),
            ("pvc", "PersistentVolumeClaim"),
            ("pv", "PersistentVolume"),
            ("sc", "StorageClass"),
            ("ds", "DaemonSet"),
            ("sts", "StatefulSet"),
            ("controllerrevisions", "ControllerRevision"),
            ("jobs.batch", "Job"),
            ("cj", "CronJob"),
            ("pdb", "PodDisruptionBudget"),
            ("pc", "PriorityClass"),
            ("netpol", "NetworkPolicy"),
            ("networkpolicies.networking.k8s.io", "NetworkPolicy"),
            ("ing", "Ingress"),
            ("ingresses.networking.k8s.io", "Ingress"),
            ("ingressclass", "IngressClass"),
        ] {
            assert_eq!(ResourceInfo::lookup(name).map(|k| k.kind), Some(kind), "{name}");
        }
        assert!(ResourceInfo::lookup("pods.apps").is_none());
        assert!(ResourceInfo::lookup("widgets").is_none());
    }

    #[test]
    fn every_kind_carries_metadata_as_field_3() {
        // The apiserver appends `metadata { resourceVersion }` to stored
        // bytes (protobuf merges repeated message fields), which relies on
        // every kind having metadata at field 3.
        struct Check;
        impl KindVisitor for Check {
            type Output = ();
            fn visit<K: Resource>(self) {
                let mut obj = K::default();
                obj.metadata_mut().name = "a".into();
                let mut bytes = obj.encode_to_vec();
                bytes.extend(crate::codec::resource_version_suffix(42));
                let back = K::decode(bytes.as_slice()).unwrap();
                assert_eq!(back.metadata().name, "a", "{}", K::INFO.kind);
                assert_eq!(back.metadata().resource_version, "42", "{}", K::INFO.kind);
            }
        }
        for k in KINDS {
            visit_kind(k, Check);
        }
    }
}
