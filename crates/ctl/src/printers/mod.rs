//! Output: kubectl's tables laid out on a terminal, and the
//! `-o yaml|json|name|jsonpath` forms.
//!
//! Which columns a kind has and what its cells say is `rkube_printers`'
//! (shared with the apiserver's Table answers); this module only picks the
//! columns `-o wide` asks for and pads them as kubectl's tabwriter does.

pub mod jsonpath;

pub use rkube_printers::network;
pub use rkube_printers::{age, event_source, event_times, human_duration, or_none, parse_time, pod_status};

use crate::error::CtlError;
use chrono::{DateTime, Utc};
use rkube_api::{DynObject, ResourceInfo};
use rkube_printers::{printer_for, Column};
use std::io::Write;

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

impl TableOptions {
    /// Whether a column is printed: priority-1 columns only with `-o wide`.
    fn shows(&self, column: &Column) -> bool {
        self.wide || column.priority == 0
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
        .columns()
        .iter()
        .filter(|c| opts.shows(c))
        .map(Column::header)
        .collect();
    if opts.show_namespace && info.namespaced {
        header.insert(0, "NAMESPACE".into());
    }
    header
}

/// One object's row with these options.
pub fn row(obj: &DynObject, opts: &TableOptions) -> Result<Vec<String>, CtlError> {
    let printer = printer_for(obj.info);
    let all = printer
        .cells(obj.info, &obj.any, opts.wide, opts.now)
        .map_err(CtlError::usage)?;
    let mut cells = Vec::with_capacity(all.len() + 1);
    for (column, mut cell) in printer.columns().iter().zip(all) {
        if !opts.shows(column) {
            continue;
        }
        if opts.show_kind && column.format == "name" {
            cell = format!("{}/{cell}", obj.info.singular_group());
        }
        cells.push(cell);
    }
    if opts.show_namespace && obj.info.namespaced {
        cells.insert(0, obj.namespace.clone());
    }
    Ok(cells)
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
/// Drops `metadata.managedFields`: bookkeeping of which client owns which
/// field, long and rarely wanted, so kubectl's printers hide it unless
/// `--show-managed-fields`.
pub fn hide_managed_fields(doc: &mut serde_json::Value) {
    if let Some(meta) = doc.get_mut("metadata").and_then(serde_json::Value::as_object_mut) {
        meta.remove("managedFields");
    }
}

pub fn print_objects(
    out: &mut dyn Write,
    format: &OutputFormat,
    objects: &[DynObject],
    as_list: bool,
    show_managed_fields: bool,
) -> Result<(), CtlError> {
    // one object alone, several as a List; jsonpath templates, as
    // kubectl's, run against that same document
    let document = || -> Result<serde_json::Value, CtlError> {
        let mut items = Vec::with_capacity(objects.len());
        for obj in objects {
            let mut item = obj.to_json().map_err(CtlError::usage)?;
            if !show_managed_fields {
                hide_managed_fields(&mut item);
            }
            items.push(item);
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
    fn managed_fields_print_only_when_asked() {
        let objs = rkube_api::codec::decode_manifests(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  managedFields:\n  - {manager: rkubectl, operation: Update, fieldsType: FieldsV1, fieldsV1: {f:data: {}}}\n",
            "f",
        )
        .unwrap();
        let print = |show| {
            let mut out = Vec::new();
            print_objects(&mut out, &OutputFormat::Yaml, &objs, false, show).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(!print(false).contains("managedFields"), "{}", print(false));
        assert!(print(true).contains("manager: rkubectl"), "{}", print(true));
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
        print_objects(&mut out, &OutputFormat::Yaml, &objs, false, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("kind: List"), "{text}");
        let back = rkube_api::codec::decode_manifests(&text, "-").unwrap();
        assert_eq!(back, objs);

        let mut out = Vec::new();
        print_objects(&mut out, &OutputFormat::Json, &objs[..1], false, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("{\n    \"apiVersion\": \"v1\""), "{text}");

        let mut out = Vec::new();
        print_objects(&mut out, &OutputFormat::Name, &objs, false, false).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "configmap/a\nconfigmap/b\n");
    }
}
