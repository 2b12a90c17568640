//! Output: kubectl's tables (one module per kind says its columns), and the
//! `-o yaml|json|name` forms.
//!
//! Adding a kind's table is one `TableRow` impl and one line in
//! `printer_for`; kinds without one get `NAME AGE`.

mod apps;
mod autoscaling;
mod batch;
mod cluster;
mod config;
mod coordination;
mod event;
pub mod jsonpath;
pub(crate) mod network;
mod pod;
mod policy;

pub use event::{event_source, event_times};
pub use pod::pod_status;

use crate::error::CtlError;
use chrono::{DateTime, Utc};
use rkube_api::{DynObject, Resource, ResourceInfo};
use std::io::Write;
use std::marker::PhantomData;

/// What a table looks like besides the kind's own columns.
#[derive(Debug, Clone)]
pub struct TableOptions {
    /// `-o wide`.
    pub wide: bool,
    /// `-A`: a NAMESPACE column first.
    pub show_namespace: bool,
    /// Several kinds in one command: names become `kind/name`, as kubectl
    /// prints them so rows of different tables cannot be confused.
    pub show_kind: bool,
    /// The clock ages are measured against.
    pub now: DateTime<Utc>,
}

/// A kind's table: its columns and one row per object, as kubectl prints
/// them. Cells are rendered strings; `<none>` and `<unknown>` as kubectl.
pub trait TableRow: Resource {
    /// The columns, NAME included, wide ones at the end when `wide`.
    fn columns(wide: bool) -> Vec<&'static str>;
    /// One cell per column.
    fn cells(&self, wide: bool, now: DateTime<Utc>) -> Vec<String>;
}

/// A kind's table printer, behind a trait object so a kind known only at
/// run time finds its printer.
pub trait KindPrinter: Sync {
    fn columns(&self, wide: bool) -> Vec<&'static str>;
    fn cells(&self, obj: &DynObject, wide: bool, now: DateTime<Utc>) -> Result<Vec<String>, CtlError>;
}

struct Printer<K>(PhantomData<fn() -> K>);

impl<K: TableRow> KindPrinter for Printer<K> {
    fn columns(&self, wide: bool) -> Vec<&'static str> {
        K::columns(wide)
    }
    fn cells(&self, obj: &DynObject, wide: bool, now: DateTime<Utc>) -> Result<Vec<String>, CtlError> {
        let k: K = obj.decode().map_err(CtlError::usage)?;
        Ok(k.cells(wide, now))
    }
}

/// Kinds with no table of their own: `NAME AGE`, as kubectl prints
/// resources it knows nothing about.
struct GenericPrinter;

impl KindPrinter for GenericPrinter {
    fn columns(&self, _wide: bool) -> Vec<&'static str> {
        vec!["NAME", "AGE"]
    }
    fn cells(&self, obj: &DynObject, _wide: bool, now: DateTime<Utc>) -> Result<Vec<String>, CtlError> {
        let meta = crate::objects::metadata(obj);
        Ok(vec![meta.name.clone(), age(&meta.creation_timestamp, now)])
    }
}

/// The table printer of a kind.
pub fn printer_for(info: &ResourceInfo) -> &'static dyn KindPrinter {
    use rkube_api::{
        apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch,
        coordination::v1 as coordination, core::v1 as core, policy::v1 as policy,
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
        ("apps", "Deployment") => p!(apps::Deployment),
        ("apps", "ReplicaSet") => p!(apps::ReplicaSet),
        ("apps", "DaemonSet") => p!(apps::DaemonSet),
        ("apps", "StatefulSet") => p!(apps::StatefulSet),
        ("batch", "Job") => p!(batch::Job),
        ("batch", "CronJob") => p!(batch::CronJob),
        ("autoscaling", "HorizontalPodAutoscaler") => p!(autoscaling::HorizontalPodAutoscaler),
        ("coordination.k8s.io", "Lease") => p!(coordination::Lease),
        ("policy", "PodDisruptionBudget") => p!(policy::PodDisruptionBudget),
        ("", "ResourceQuota") => p!(core::ResourceQuota),
        _ => &GenericPrinter,
    }
}

/// A table being built: header and rows, laid out like kubectl's
/// tabwriter (columns at least 6 wide, 3 spaces between them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Spaces between table columns.
pub const PADDING: usize = 3;
const MIN_WIDTH: usize = 6;

impl Table {
    /// The table for objects of one kind.
    pub fn build(info: &ResourceInfo, objects: &[DynObject], opts: &TableOptions) -> Result<Table, CtlError> {
        let mut table = Table {
            header: header(info, opts),
            rows: Vec::new(),
        };
        for obj in objects {
            table.rows.push(row(obj, opts)?);
        }
        Ok(table)
    }

    /// Column widths (cell text plus padding) for these rows.
    pub fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
        }
        widths.into_iter().map(|w| (w + PADDING).max(MIN_WIDTH)).collect()
    }

    pub fn render(&self) -> String {
        let widths = self.widths();
        let mut out = render_line(&self.header, &widths);
        for row in &self.rows {
            out.push_str(&render_line(row, &widths));
        }
        out
    }
}

/// One line of a table; the last cell is not padded.
pub fn render_line(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i + 1 == cells.len() {
            line.push_str(cell);
        } else {
            let width = widths.get(i).copied().unwrap_or(0);
            line.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count()).max(1);
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    line.push('\n');
    line
}

/// The header of a kind's table with these options.
pub fn header(info: &ResourceInfo, opts: &TableOptions) -> Vec<String> {
    let mut header: Vec<String> = printer_for(info)
        .columns(opts.wide)
        .into_iter()
        .map(String::from)
        .collect();
    if opts.show_namespace && info.namespaced {
        header.insert(0, "NAMESPACE".into());
    }
    header
}

/// One object's row with these options.
pub fn row(obj: &DynObject, opts: &TableOptions) -> Result<Vec<String>, CtlError> {
    let printer = printer_for(obj.info);
    let mut cells = printer.cells(obj, opts.wide, opts.now)?;
    if opts.show_kind {
        if let Some(i) = printer.columns(opts.wide).iter().position(|c| *c == "NAME") {
            cells[i] = format!("{}/{}", obj.info.singular_group(), cells[i]);
        }
    }
    if opts.show_namespace && obj.info.namespaced {
        cells.insert(0, obj.namespace.clone());
    }
    Ok(cells)
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

/// `-o` values.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    Table,
    Wide,
    Yaml,
    Json,
    Name,
    /// `jsonpath=TEMPLATE` (also `jsonpath='...'`): see [`jsonpath`].
    JsonPath(jsonpath::Template),
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wide" => Ok(OutputFormat::Wide),
            "yaml" => Ok(OutputFormat::Yaml),
            "json" => Ok(OutputFormat::Json),
            "name" => Ok(OutputFormat::Name),
            "jsonpath" | "jsonpath=" => Err(
                "template format specified but no template given: use -o jsonpath='{.metadata.name}'".into(),
            ),
            other => match other.strip_prefix("jsonpath=") {
                Some(t) => jsonpath::Template::parse(t)
                    .map(OutputFormat::JsonPath)
                    .map_err(|e| format!("error parsing jsonpath {t}: {e}")),
                None => Err(format!(
                    "unable to match a printer suitable for the output format {other:?}, allowed formats are: json,jsonpath,name,wide,yaml"
                )),
            },
        }
    }
}

/// Pretty JSON with kubectl's four-space indent.
pub fn json_pretty(value: &serde_json::Value) -> String {
    use serde::Serialize;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    // serialising a Value into memory cannot fail
    let _ = value.serialize(&mut ser);
    buf.push(b'\n');
    String::from_utf8(buf).unwrap_or_default()
}

/// Several objects as one document, the way `-o yaml|json` shows a list.
pub fn list_document(items: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "items": items,
        "kind": "List",
        "metadata": { "resourceVersion": "" },
    })
}

/// Writes objects as `-o yaml|json|name` asks: one object alone, several
/// as a `List` (`as_list` forces a list even for one, as a list query does).
pub fn print_objects(
    out: &mut dyn Write,
    format: &OutputFormat,
    objects: &[DynObject],
    as_list: bool,
) -> Result<(), CtlError> {
    // one object alone, several as a List; jsonpath templates, as
    // kubectl's, run against that same document
    let document = || -> Result<serde_json::Value, CtlError> {
        let mut items = Vec::with_capacity(objects.len());
        for obj in objects {
            items.push(obj.to_json().map_err(CtlError::usage)?);
        }
        Ok(if !as_list && items.len() == 1 {
            items.remove(0)
        } else {
            list_document(items)
        })
    };
    match format {
        OutputFormat::Name => {
            for obj in objects {
                writeln!(out, "{}", obj.display_name())?;
            }
        }
        OutputFormat::Yaml => write!(out, "{}", rkube_api::codec::json_to_yaml(&document()?))?,
        OutputFormat::Json => write!(out, "{}", json_pretty(&document()?))?,
        OutputFormat::JsonPath(t) => {
            let text = t
                .render(&document()?)
                .map_err(|e| CtlError::usage(format!("error executing jsonpath: {e}")))?;
            write!(out, "{text}")?;
        }
        OutputFormat::Table | OutputFormat::Wide => {
            return Err(CtlError::usage(
                "internal: tables are printed by the table printer",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn columns_are_padded_like_tabwriter() {
        let t = Table {
            header: vec!["NAME".into(), "READY".into(), "AGE".into()],
            rows: vec![vec!["nginx-7c5ddbdf54-x".into(), "1/1".into(), "5s".into()]],
        };
        assert_eq!(
            t.render(),
            "NAME                 READY   AGE\nnginx-7c5ddbdf54-x   1/1     5s\n"
        );
    }

    #[test]
    fn output_formats_parse() {
        assert_eq!("wide".parse::<OutputFormat>(), Ok(OutputFormat::Wide));
        assert!("xml"
            .parse::<OutputFormat>()
            .unwrap_err()
            .contains("allowed formats"));
    }

    #[test]
    fn several_objects_print_as_a_list() {
        let objs = rkube_api::codec::decode_manifests(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
            "f",
        )
        .unwrap();
        let mut out = Vec::new();
        print_objects(&mut out, &OutputFormat::Yaml, &objs, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("kind: List"), "{text}");
        let back = rkube_api::codec::decode_manifests(&text, "-").unwrap();
        assert_eq!(back, objs);

        let mut out = Vec::new();
        print_objects(&mut out, &OutputFormat::Json, &objs[..1], false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("{\n    \"apiVersion\": \"v1\""), "{text}");

        let mut out = Vec::new();
        print_objects(&mut out, &OutputFormat::Name, &objs, false).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "configmap/a\nconfigmap/b\n");
    }
}
