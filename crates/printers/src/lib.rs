//! The columns `kubectl get` shows for each kind, and each object's row: the
//! one definition rkubectl's tables and the apiserver's meta.k8s.io/v1 Table
//! answers (what stock kubectl prints) are both built from.
//!
//! Adding a kind's table is one [`TableRow`] impl and one line in
//! [`printer_for`]; kinds without one get `Name Age`, as Kubernetes' default
//! table convertor gives them. Columns carry Kubernetes' names ("Nominated
//! Node"); kubectl and rkubectl print them upper-cased. This crate renders
//! cells only: laying a table out on a terminal is the client's business,
//! and it never talks to the apiserver.

mod access;
mod apps;
mod autoscaling;
mod batch;
mod cluster;
mod config;
mod coordination;
pub mod custom;
mod event;
pub mod ingress;
pub mod network;
mod network_policy;
mod pod;
mod policy;
mod storage;
pub mod table;

pub use event::{event_source, event_times};
pub use pod::{pod_status, PodSummary};

use chrono::{DateTime, Utc};
use prost_types::Any;
use rkube_api::codec::{from_any, CodecError};
use rkube_api::{visit_kind, KindVisitor, Resource, ResourceInfo};
use std::marker::PhantomData;

/// One column of a kind's table, as a meta.k8s.io/v1 TableColumnDefinition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Kubernetes' name ("Nominated Node"); printed upper-cased.
    pub name: &'static str,
    /// The OpenAPI type of the cells: "string", "integer", "boolean", "date".
    pub r#type: &'static str,
    /// "name" for the column holding the object's name (kubectl writes
    /// `kind/name` there when a command shows several kinds).
    pub format: &'static str,
    pub description: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: i32,
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated.";
const AGE_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.";

impl Column {
    /// The object's name.
    pub const NAME: Column = Column {
        name: "Name",
        r#type: "string",
        format: "name",
        description: NAME_DESCRIPTION,
        priority: 0,
    };
    /// How long ago the object was created (`5m`).
    pub const AGE: Column = Column::string("Age", AGE_DESCRIPTION);
    /// When the object was created, as a timestamp (roles, limit ranges).
    pub const CREATED_AT: Column = Column {
        name: "Created At",
        r#type: "date",
        format: "",
        description: AGE_DESCRIPTION,
        priority: 0,
    };

    pub const fn string(name: &'static str, description: &'static str) -> Column {
        Column {
            name,
            r#type: "string",
            format: "",
            description,
            priority: 0,
        }
    }

    pub const fn integer(name: &'static str, description: &'static str) -> Column {
        Column {
            r#type: "integer",
            ..Column::string(name, description)
        }
    }

    pub const fn boolean(name: &'static str, description: &'static str) -> Column {
        Column {
            r#type: "boolean",
            ..Column::string(name, description)
        }
    }

    /// The same column, shown only with `-o wide` (priority 1).
    pub const fn wide(self) -> Column {
        Column { priority: 1, ..self }
    }

    /// The header kubectl prints for it.
    pub fn header(&self) -> String {
        self.name.to_uppercase()
    }
}

/// The wide columns of workloads: CONTAINERS IMAGES SELECTOR.
pub(crate) const CONTAINERS: Column =
    Column::string("Containers", "Names of each container in the template.").wide();
pub(crate) const IMAGES: Column =
    Column::string("Images", "Images referenced by each container in the template.").wide();
pub(crate) const SELECTOR: Column =
    Column::string("Selector", "A label query over the pods this object selects.").wide();

/// A kind's table: its columns and one row per object, as kubectl prints
/// them. Cells are rendered strings; `<none>` and `<unknown>` as kubectl.
pub trait TableRow: Resource {
    /// Every column, `-o wide` ones (priority 1) included, in kubectl's order.
    const COLUMNS: &'static [Column];
    /// One cell per column of `COLUMNS`. `wide` changes only how a cell
    /// reads (a Service's load-balancer addresses are shortened unless wide);
    /// the apiserver, as Kubernetes', renders wide.
    fn cells(&self, wide: bool, now: DateTime<Utc>) -> Vec<String>;
}

/// A kind's table printer, behind a trait object so a kind known only at
/// run time finds its printer.
pub trait KindPrinter: Sync {
    fn columns(&self) -> &'static [Column];
    /// The row of a wire object of the printer's kind.
    fn cells(
        &self,
        info: &ResourceInfo,
        any: &Any,
        wide: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, CodecError>;
}

struct Printer<K>(PhantomData<fn() -> K>);

impl<K: TableRow> KindPrinter for Printer<K> {
    fn columns(&self) -> &'static [Column] {
        K::COLUMNS
    }
    fn cells(
        &self,
        _info: &ResourceInfo,
        any: &Any,
        wide: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, CodecError> {
        Ok(from_any::<K>(any)?.cells(wide, now))
    }
}

/// Kinds with no table of their own: `Name Age`, as Kubernetes' default
/// table convertor and kubectl print resources they know nothing about.
struct GenericPrinter;

impl KindPrinter for GenericPrinter {
    fn columns(&self) -> &'static [Column] {
        &[Column::NAME, Column::AGE]
    }
    fn cells(
        &self,
        info: &ResourceInfo,
        any: &Any,
        _wide: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, CodecError> {
        struct NameAge<'a>(&'a Any, DateTime<Utc>);
        impl KindVisitor for NameAge<'_> {
            type Output = Result<Vec<String>, CodecError>;
            fn visit<K: Resource>(self) -> Self::Output {
                let k: K = from_any(self.0)?;
                let meta = k.metadata();
                Ok(vec![meta.name.clone(), age(&meta.creation_timestamp, self.1)])
            }
        }
        visit_kind(info, NameAge(any, now))
    }
}

/// The table printer of a kind.
pub fn printer_for(info: &ResourceInfo) -> &'static dyn KindPrinter {
    use rkube_api::{
        apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch,
        coordination::v1 as coordination, core::v1 as core, networking::v1 as networking,
        policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling, storage::v1 as storage,
    };
    // Printers are zero-sized constants, promoted to statics.
    macro_rules! p {
        ($k:ty) => {
            &Printer::<$k>(PhantomData)
        };
    }
    match (info.group, info.kind) {
        ("", "Pod") => p!(core::Pod),
        ("", "Node") => p!(core::Node),
        ("", "Namespace") => p!(core::Namespace),
        ("", "Service") => p!(core::Service),
        ("", "Endpoints") => p!(core::Endpoints),
        ("", "Event") => p!(core::Event),
        ("", "ConfigMap") => p!(core::ConfigMap),
        ("", "Secret") => p!(core::Secret),
        ("", "ServiceAccount") => p!(core::ServiceAccount),
        ("", "ResourceQuota") => p!(core::ResourceQuota),
        ("", "LimitRange") => p!(core::LimitRange),
        ("", "PersistentVolumeClaim") => p!(core::PersistentVolumeClaim),
        ("", "PersistentVolume") => p!(core::PersistentVolume),
        ("storage.k8s.io", "StorageClass") => p!(storage::StorageClass),
        ("apps", "Deployment") => p!(apps::Deployment),
        ("apps", "ReplicaSet") => p!(apps::ReplicaSet),
        ("apps", "DaemonSet") => p!(apps::DaemonSet),
        ("apps", "StatefulSet") => p!(apps::StatefulSet),
        ("apps", "ControllerRevision") => p!(apps::ControllerRevision),
        ("batch", "Job") => p!(batch::Job),
        ("batch", "CronJob") => p!(batch::CronJob),
        ("autoscaling", "HorizontalPodAutoscaler") => p!(autoscaling::HorizontalPodAutoscaler),
        ("coordination.k8s.io", "Lease") => p!(coordination::Lease),
        ("policy", "PodDisruptionBudget") => p!(policy::PodDisruptionBudget),
        ("scheduling.k8s.io", "PriorityClass") => p!(scheduling::PriorityClass),
        ("networking.k8s.io", "NetworkPolicy") => p!(networking::NetworkPolicy),
        ("networking.k8s.io", "Ingress") => p!(networking::Ingress),
        ("networking.k8s.io", "IngressClass") => p!(networking::IngressClass),
        ("rbac.authorization.k8s.io", "Role") => p!(rbac::Role),
        ("rbac.authorization.k8s.io", "ClusterRole") => p!(rbac::ClusterRole),
        ("rbac.authorization.k8s.io", "RoleBinding") => p!(rbac::RoleBinding),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => p!(rbac::ClusterRoleBinding),
        _ => &GenericPrinter,
    }
}

/// `45s`, `3m12s`, `5h`, `2d`: kubectl's `HumanDuration`, which keeps two
/// units while the first is small and one after.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        // clocks a little apart are tolerated; more is a broken timestamp
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let years = hours / 24 / 365;
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{days}d")
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Parses an RFC 3339 timestamp as the API writes them.
pub fn parse_time(ts: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The age of a timestamp, `<unknown>` when there is none.
pub fn age(ts: &str, now: DateTime<Utc>) -> String {
    match parse_time(ts) {
        Some(t) => human_duration((now - t).num_seconds()),
        None => "<unknown>".into(),
    }
}

/// `<none>` for an empty cell, as kubectl shows absent values.
pub fn or_none(s: impl Into<String>) -> String {
    let s = s.into();
    if s.is_empty() {
        "<none>".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::KINDS;

    #[test]
    fn ages_read_like_kubectl() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (192, "3m12s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (5 * 3600, "5h"),
            (5 * 3600 + 120, "5h2m"),
            (30 * 3600, "30h"),
            (2 * 86400, "2d"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (40 * 86400, "40d"),
            (3 * 365 * 86400, "3y"),
            (3 * 365 * 86400 + 86400 * 7, "3y7d"),
            (10 * 365 * 86400, "10y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn age_of_a_timestamp() {
        let now = parse_time("2024-05-01T12:00:00Z").unwrap();
        assert_eq!(age("2024-05-01T11:56:48Z", now), "3m12s");
        assert_eq!(age("", now), "<unknown>");
        assert_eq!(age("yesterday", now), "<unknown>");
    }

    /// Every kind's row has one cell per column, wide or not, even for an
    /// object with nothing set: a row that is short would shift every
    /// column after the gap.
    #[test]
    fn every_kind_has_one_cell_per_column_and_a_name_column() {
        struct Empty;
        impl KindVisitor for Empty {
            type Output = Any;
            fn visit<K: Resource>(self) -> Any {
                rkube_api::to_any(&K::default())
            }
        }
        let now = parse_time("2024-05-01T12:00:00Z").unwrap();
        for info in KINDS {
            let printer = printer_for(info);
            let any = visit_kind(info, Empty);
            for wide in [false, true] {
                let cells = printer.cells(info, &any, wide, now).unwrap();
                assert_eq!(cells.len(), printer.columns().len(), "{} wide={wide}", info.kind);
            }
            assert!(
                printer.columns().iter().any(|c| c.format == "name"),
                "{} has no name column",
                info.kind
            );
        }
    }
}
