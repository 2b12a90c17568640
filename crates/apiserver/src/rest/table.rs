//! Table answers: when a get, list or watch asks for
//! `application/json;as=Table;v=v1;g=meta.k8s.io` (stock `kubectl get`
//! does, with plain JSON as its fallback), the objects the same handler
//! returned are rendered as a meta.k8s.io/v1 Table with rkubectl's columns
//! (`rkube_printers`). Nothing else changes: the call, its authorization
//! and its errors are those of the JSON answer.

use super::Call;
use crate::error::ApiError;
use prost_types::Any;
use rkube_api::crd::PrinterColumn;
use rkube_api::rpc;
use rkube_api::ResourceInfo;
use rkube_printers::table::{self, IncludeObject};
use serde_json::{json, Value};

/// How a get, list or watch answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rendering {
    /// The objects as Kubernetes JSON.
    Objects,
    /// A meta.k8s.io/v1 Table, its rows carrying what `includeObject` asks.
    Table(IncludeObject),
    /// Only the objects' metadata, as meta.k8s.io/v1 PartialObjectMetadata
    /// (`super::metadata`).
    Metadata,
}

impl Rendering {
    /// What the request's Accept header and `includeObject` ask for.
    pub(super) fn of(call: &Call) -> Result<Rendering, ApiError> {
        match asked_for(call.accept()) {
            Rendering::Table(_) => IncludeObject::parse(call.query.get("includeObject"))
                .map(Rendering::Table)
                .map_err(ApiError::bad_request),
            other => Ok(other),
        }
    }
}

/// The first media range of `accept` the REST face can serve: the v1 Table
/// (its `includeObject` still to be read), v1 PartialObjectMetadata (or
/// its List), or JSON objects. Ranges it cannot serve (protobuf, other
/// versions) are passed over, and JSON is the answer when nothing matches.
fn asked_for(accept: &str) -> Rendering {
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let mut params = (None, None, None);
        for p in parts {
            match p.split_once('=') {
                Some(("as", v)) => params.0 = Some(v),
                Some(("g", v)) => params.1 = Some(v),
                Some(("v", v)) => params.2 = Some(v),
                _ => {}
            }
        }
        let json = matches!(media, "application/json" | "application/*" | "*/*");
        match params {
            (Some("Table"), Some("meta.k8s.io"), Some("v1")) if json => {
                return Rendering::Table(IncludeObject::default())
            }
            (
                Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                Some("meta.k8s.io"),
                Some("v1"),
            ) if json => return Rendering::Metadata,
            (Some(_), _, _) => continue,
            _ if json => return Rendering::Objects,
            _ => continue,
        }
    }
    Rendering::Objects
}

/// A list's `metadata`: its revision and where the next page starts.
pub(super) fn list_metadata(out: &rpc::ListResponse) -> Value {
    let mut metadata = json!({"resourceVersion": out.resource_version});
    if !out.r#continue.is_empty() {
        metadata["continue"] = json!(out.r#continue);
    }
    if let Some(n) = out.remaining_item_count {
        metadata["remainingItemCount"] = json!(n);
    }
    metadata
}

fn render(
    info: &ResourceInfo,
    objects: &[Any],
    metadata: Value,
    with_columns: bool,
    include: IncludeObject,
) -> Result<Value, ApiError> {
    table::table(info, objects, metadata, with_columns, include, chrono::Utc::now())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// A list as a Table.
pub(super) fn list(
    info: &ResourceInfo,
    out: &rpc::ListResponse,
    include: IncludeObject,
) -> Result<Value, ApiError> {
    render(info, &out.items, list_metadata(out), true, include)
}

/// A list of custom objects as a Table of their kind's printer columns.
pub(super) fn custom_list(
    columns: &[PrinterColumn],
    info: &ResourceInfo,
    out: &rpc::ListResponse,
    include: IncludeObject,
) -> Result<Value, ApiError> {
    let objects = out
        .items
        .iter()
        .map(|any| super::json::to_json(info, any))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rkube_printers::custom::table(
        columns,
        &objects,
        list_metadata(out),
        true,
        include,
        chrono::Utc::now(),
    ))
}

/// One custom object as a one-row Table.
pub(super) fn custom_object(
    columns: &[PrinterColumn],
    info: &ResourceInfo,
    any: &Any,
    include: IncludeObject,
) -> Result<Value, ApiError> {
    let obj = super::json::to_json(info, any)?;
    let rv = obj["metadata"]["resourceVersion"].clone();
    Ok(rkube_printers::custom::table(
        columns,
        std::slice::from_ref(&obj),
        json!({"resourceVersion": rv}),
        true,
        include,
        chrono::Utc::now(),
    ))
}

/// One object (a get by name) as a one-row Table at the object's revision.
pub(super) fn object(info: &ResourceInfo, any: &Any, include: IncludeObject) -> Result<Value, ApiError> {
    let json = rkube_api::codec::any_to_json(info, any).map_err(|e| ApiError::internal(e.to_string()))?;
    let rv = json["metadata"]["resourceVersion"].clone();
    render(
        info,
        std::slice::from_ref(any),
        json!({"resourceVersion": rv}),
        true,
        include,
    )
}

/// The Tables of a watch's events: one row each, the column definitions
/// in the first only, as Kubernetes sends them (kubectl keeps the first's).
pub(super) struct WatchTables {
    include: IncludeObject,
    columns_sent: bool,
    /// A custom kind's printer columns.
    custom: Option<Vec<PrinterColumn>>,
}

impl WatchTables {
    pub(super) fn new(include: IncludeObject) -> WatchTables {
        WatchTables {
            include,
            columns_sent: false,
            custom: None,
        }
    }

    /// The Tables of a custom kind's watch, with its printer columns.
    pub(super) fn custom(include: IncludeObject, columns: Vec<PrinterColumn>) -> WatchTables {
        WatchTables {
            include,
            columns_sent: false,
            custom: Some(columns),
        }
    }

    /// An ADDED/MODIFIED/DELETED event's object.
    pub(super) fn event(&mut self, info: &ResourceInfo, any: &Any) -> Result<Value, ApiError> {
        if let Some(columns) = &self.custom {
            let obj = super::json::to_json(info, any)?;
            let t = rkube_printers::custom::table(
                columns,
                std::slice::from_ref(&obj),
                json!({}),
                !self.columns_sent,
                self.include,
                chrono::Utc::now(),
            );
            self.columns_sent = true;
            return Ok(t);
        }
        let t = render(
            info,
            std::slice::from_ref(any),
            json!({}),
            !self.columns_sent,
            self.include,
        )?;
        self.columns_sent = true;
        Ok(t)
    }

    /// A BOOKMARK's object: an empty Table carrying the revision.
    pub(super) fn bookmark(resource_version: &str) -> Value {
        json!({
            "kind": "Table",
            "apiVersion": table::API_VERSION,
            "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": [],
            "rows": [],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wants_table(accept: &str) -> bool {
        matches!(asked_for(accept), Rendering::Table(_))
    }

    #[test]
    fn kubectls_accept_header_gets_the_v1_table() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(wants_table("application/json; as=Table; g=meta.k8s.io; v=v1"));
        // protobuf first, which the REST face does not speak, then a Table
        assert!(wants_table(
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io"
        ));
    }

    #[test]
    fn a_watch_sends_the_column_definitions_once() {
        use rkube_api::core::v1::ConfigMap;
        use rkube_api::Resource;
        let mut cm = ConfigMap::default();
        cm.metadata_mut().name = "c".into();
        let any = rkube_api::to_any(&cm);
        let mut tables = WatchTables::new(IncludeObject::Metadata);
        let first = tables.event(ConfigMap::info(), &any).unwrap();
        let second = tables.event(ConfigMap::info(), &any).unwrap();
        assert_eq!(first["columnDefinitions"].as_array().map(Vec::len), Some(3));
        assert_eq!(second["columnDefinitions"], json!([]));
        assert_eq!(second["rows"][0]["cells"][0], "c");
        assert_eq!(WatchTables::bookmark("12")["metadata"]["resourceVersion"], "12");
    }

    #[test]
    fn json_first_or_only_other_tables_get_objects() {
        for accept in [
            "",
            "application/json",
            "application/json, */*",
            "*/*",
            "application/json,application/json;as=Table;v=v1;g=meta.k8s.io",
            "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
            "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
        ] {
            assert!(!wants_table(accept), "{accept}");
        }
    }

    #[test]
    fn the_metadata_clients_accept_headers_get_partial_metadata() {
        for accept in [
            // kube-rs' get_metadata and metadata watches, and its list_metadata
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            // client-go's metadata client: protobuf first, then JSON
            "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,\
             application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
        ] {
            assert_eq!(asked_for(accept), Rendering::Metadata, "{accept}");
        }
        for accept in [
            "application/json,application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1beta1",
        ] {
            assert_eq!(asked_for(accept), Rendering::Objects, "{accept}");
        }
    }
}
