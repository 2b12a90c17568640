//! The meta.k8s.io/v1 `Table` a Kubernetes apiserver answers when a client
//! asks for `application/json;as=Table;v=v1;g=meta.k8s.io` (stock `kubectl
//! get` does): the kind's column definitions and one row per object, each
//! with its cells and, as `includeObject` asks, nothing, the object's
//! metadata (a PartialObjectMetadata, the default) or the whole object.
//! Cells are rendered wide, as Kubernetes' server does; the client hides
//! the priority-1 columns unless `-o wide`.

use crate::{printer_for, Column};
use chrono::{DateTime, Utc};
use prost_types::Any;
use rkube_api::codec::{any_to_json, CodecError};
use rkube_api::ResourceInfo;
use serde_json::{json, Value};

pub const API_VERSION: &str = "meta.k8s.io/v1";

/// `includeObject`: what each row carries besides its cells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    /// A PartialObjectMetadata: enough for `kubectl get -A` (the namespace)
    /// and `--show-labels`.
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    /// The query parameter's value; empty is the default.
    pub fn parse(value: &str) -> Result<IncludeObject, String> {
        match value {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(format!(
                "includeObject {other:?} is not one of None, Metadata, Object"
            )),
        }
    }
}

/// One column as a TableColumnDefinition.
pub fn column_definition(c: &Column) -> Value {
    json!({
        "name": c.name,
        "type": c.r#type,
        "format": c.format,
        "description": c.description,
        "priority": c.priority,
    })
}

/// A cell in its column's type: integers and booleans as JSON numbers and
/// booleans when the text is one, strings otherwise (`<unset>`).
fn typed_cell(column: Option<&Column>, text: String) -> Value {
    match column.map(|c| c.r#type) {
        Some("integer") => text.parse::<i64>().map_or(Value::String(text), Value::from),
        Some("boolean") => match text.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(text),
        },
        _ => Value::String(text),
    }
}

/// One object's row.
pub fn row(
    info: &ResourceInfo,
    any: &Any,
    include: IncludeObject,
    now: DateTime<Utc>,
) -> Result<Value, CodecError> {
    let printer = printer_for(info);
    let columns = printer.columns();
    let cells: Vec<Value> = printer
        .cells(info, any, true, now)?
        .into_iter()
        .enumerate()
        .map(|(i, text)| typed_cell(columns.get(i), text))
        .collect();
    let object = match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => {
            let mut object = any_to_json(info, any)?;
            json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": API_VERSION,
                "metadata": object.get_mut("metadata").map(Value::take).unwrap_or_else(|| json!({})),
            })
        }
        IncludeObject::Object => any_to_json(info, any)?,
    };
    Ok(json!({"cells": cells, "object": object}))
}

/// The Table of `objects` of one kind. `metadata` is the list's
/// (`resourceVersion`, `continue`); `with_columns` false leaves the column
/// definitions out, as Kubernetes does after the first event of a watch.
pub fn table(
    info: &ResourceInfo,
    objects: &[Any],
    metadata: Value,
    with_columns: bool,
    include: IncludeObject,
    now: DateTime<Utc>,
) -> Result<Value, CodecError> {
    let columns: Vec<Value> = if with_columns {
        printer_for(info)
            .columns()
            .iter()
            .map(column_definition)
            .collect()
    } else {
        Vec::new()
    };
    let rows = objects
        .iter()
        .map(|any| row(info, any, include, now))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "kind": "Table",
        "apiVersion": API_VERSION,
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::apps::v1::Deployment;
    use rkube_api::core::v1::{ConfigMap, Pod};
    use rkube_api::{to_any, Resource};

    fn now() -> DateTime<Utc> {
        crate::parse_time("2024-05-01T12:00:00Z").unwrap()
    }

    fn pod() -> Pod {
        serde_yaml::from_str(
            "metadata: {name: web-1, namespace: prod, resourceVersion: '7', labels: {app: web}, creationTimestamp: '2024-05-01T11:00:00Z'}\nspec: {containers: [{name: a, image: busybox}], nodeName: n1}\nstatus: {phase: Running}\n",
        )
        .unwrap()
    }

    #[test]
    fn a_pod_table_has_kubectls_columns_and_a_metadata_row() {
        let t = table(
            Pod::info(),
            &[to_any(&pod())],
            json!({"resourceVersion": "9", "continue": "c1"}),
            true,
            IncludeObject::default(),
            now(),
        )
        .unwrap();
        assert_eq!(
            (t["kind"].as_str(), t["apiVersion"].as_str()),
            (Some("Table"), Some("meta.k8s.io/v1"))
        );
        assert_eq!(
            (
                t["metadata"]["resourceVersion"].as_str(),
                t["metadata"]["continue"].as_str()
            ),
            (Some("9"), Some("c1"))
        );
        let columns: Vec<(&str, i64)> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap(), c["priority"].as_i64().unwrap()))
            .collect();
        assert_eq!(
            columns,
            [
                ("Name", 0),
                ("Ready", 0),
                ("Status", 0),
                ("Restarts", 0),
                ("Age", 0),
                ("IP", 1),
                ("Node", 1),
                ("Nominated Node", 1),
                ("Readiness Gates", 1)
            ]
        );
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        assert!(t["columnDefinitions"][0]["description"]
            .as_str()
            .unwrap()
            .contains("unique"));
        let row = &t["rows"][0];
        assert_eq!(
            row["cells"],
            json!(["web-1", "0/1", "Running", "0", "60m", "<none>", "n1", "<none>", "<none>"])
        );
        let object = &row["object"];
        assert_eq!(
            (object["kind"].as_str(), object["apiVersion"].as_str()),
            (Some("PartialObjectMetadata"), Some("meta.k8s.io/v1"))
        );
        assert_eq!(object["metadata"]["namespace"], "prod");
        assert_eq!(object["metadata"]["labels"]["app"], "web");
        assert!(object.get("spec").is_none(), "{object}");
    }

    #[test]
    fn include_object_chooses_what_rows_carry() {
        let any = to_any(&pod());
        let r = row(Pod::info(), &any, IncludeObject::None, now()).unwrap();
        assert!(r["object"].is_null());
        let r = row(Pod::info(), &any, IncludeObject::Object, now()).unwrap();
        assert_eq!(
            (
                r["object"]["kind"].as_str(),
                r["object"]["spec"]["nodeName"].as_str()
            ),
            (Some("Pod"), Some("n1"))
        );
        assert_eq!(IncludeObject::parse("").unwrap(), IncludeObject::Metadata);
        assert!(IncludeObject::parse("All")
            .unwrap_err()
            .contains("None, Metadata, Object"));
    }

    #[test]
    fn cells_take_their_columns_type() {
        let d: Deployment = serde_yaml::from_str(
            "metadata: {name: web}\nspec: {replicas: 2}\nstatus: {readyReplicas: 0, updatedReplicas: 2}\n",
        )
        .unwrap();
        let r = row(Deployment::info(), &to_any(&d), IncludeObject::None, now()).unwrap();
        assert_eq!(
            r["cells"].as_array().unwrap()[..4],
            [json!("web"), json!("0/2"), json!("2"), json!("0")]
        );
        let rs: rkube_api::apps::v1::ReplicaSet =
            serde_yaml::from_str("metadata: {name: web-1}\nspec: {replicas: 2}\n").unwrap();
        let r = row(
            rkube_api::apps::v1::ReplicaSet::info(),
            &to_any(&rs),
            IncludeObject::None,
            now(),
        )
        .unwrap();
        assert_eq!(r["cells"][1], json!(2), "ReplicaSet DESIRED is an integer column");
    }

    #[test]
    fn later_watch_events_leave_the_columns_out_and_unknown_kinds_get_name_and_age() {
        let cm: ConfigMap = serde_yaml::from_str("metadata: {name: c}\n").unwrap();
        let t = table(
            ConfigMap::info(),
            &[to_any(&cm)],
            json!({}),
            false,
            IncludeObject::None,
            now(),
        )
        .unwrap();
        assert_eq!(t["columnDefinitions"], json!([]));
        assert_eq!(t["rows"][0]["cells"], json!(["c", "0", "<unknown>"]));
        let generic = crate::KindPrinter::columns(&crate::GenericPrinter);
        assert_eq!(
            generic.iter().map(|c| c.name).collect::<Vec<_>>(),
            ["Name", "Age"]
        );
    }
}
