//! The columns of kinds CustomResourceDefinitions add: Name, then the
//! version's `additionalPrinterColumns` (each a JSONPath into the object),
//! or Name and Age when it declares none, as Kubernetes' apiextensions
//! apiserver prints them. Shared by the apiserver's Table answers (stock
//! `kubectl get`) and rkubectl.

use crate::table::{IncludeObject, API_VERSION};
use chrono::{DateTime, Utc};
use rkube_api::crd::{json_path, PrinterColumn};
use serde_json::{json, Value};

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated.";

/// The columns shown: Name first, then the declared ones (Age when none are).
pub fn columns(declared: &[PrinterColumn]) -> Vec<PrinterColumn> {
    let mut out = vec![PrinterColumn {
        name: "Name".into(),
        type_: "string".into(),
        format: "name".into(),
        description: NAME_DESCRIPTION.into(),
        priority: 0,
        json_path: ".metadata.name".into(),
    }];
    if declared.is_empty() {
        out.push(PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            json_path: ".metadata.creationTimestamp".into(),
            ..Default::default()
        });
    } else {
        out.extend(declared.iter().cloned());
    }
    out
}

/// One cell: the value at the column's path in the column's type; a date as
/// an age (`5m`), absent values null (kubectl prints those blank).
pub fn cell(column: &PrinterColumn, obj: &Value, now: DateTime<Utc>) -> Value {
    let Some(v) = json_path(obj, &column.json_path) else {
        return Value::Null;
    };
    match (column.type_.as_str(), v) {
        ("date", Value::String(ts)) => Value::String(crate::age(ts, now)),
        ("integer" | "number" | "boolean", v @ (Value::Number(_) | Value::Bool(_))) => v.clone(),
        (_, Value::String(s)) => Value::String(s.clone()),
        (_, Value::Null) => Value::Null,
        (_, other) => Value::String(other.to_string()),
    }
}

/// The text of a cell, for rkubectl's columns: blank when absent, as kubectl
/// prints a custom kind's null cells (not `<none>`, which is for built-in columns).
pub fn cell_text(column: &PrinterColumn, obj: &Value, now: DateTime<Utc>) -> String {
    match cell(column, obj, now) {
        Value::Null => String::new(),
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// The meta.k8s.io/v1 Table of custom objects.
pub fn table(
    declared: &[PrinterColumn],
    objects: &[Value],
    metadata: Value,
    with_columns: bool,
    include: IncludeObject,
    now: DateTime<Utc>,
) -> Value {
    let columns = columns(declared);
    let definitions: Vec<Value> = if with_columns {
        columns
            .iter()
            .map(|c| {
                json!({
                    "name": c.name, "type": c.type_, "format": c.format,
                    "description": c.description, "priority": c.priority,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let cells: Vec<Value> = columns.iter().map(|c| cell(c, obj, now)).collect();
            let object = match include {
                IncludeObject::None => Value::Null,
                IncludeObject::Metadata => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": API_VERSION,
                    "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
                }),
                IncludeObject::Object => obj.clone(),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": API_VERSION,
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_columns_follow_their_json_paths_and_types() {
        let declared = vec![
            PrinterColumn {
                name: "Replicas".into(),
                type_: "integer".into(),
                json_path: ".spec.replicas".into(),
                ..Default::default()
            },
            PrinterColumn {
                name: "Phase".into(),
                type_: "string".into(),
                json_path: ".status.phase".into(),
                ..Default::default()
            },
        ];
        let now = crate::parse_time("2024-05-01T12:00:00Z").unwrap();
        let obj = json!({"metadata": {"name": "w1", "creationTimestamp": "2024-05-01T11:55:00Z"}, "spec": {"replicas": 3}});
        let t = table(
            &declared,
            std::slice::from_ref(&obj),
            json!({}),
            true,
            IncludeObject::Metadata,
            now,
        );
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Replicas", "Phase"]);
        assert_eq!(t["rows"][0]["cells"], json!(["w1", 3, null]));
        // rkubectl's text: the absent phase blank, as kubectl prints it
        assert_eq!(cell_text(&declared[1], &obj, now), "");
        assert_eq!(cell_text(&declared[0], &obj, now), "3");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "w1");
        let t = table(&[], &[obj], json!({}), true, IncludeObject::None, now);
        assert_eq!(t["rows"][0]["cells"], json!(["w1", "5m"]));
    }
}
