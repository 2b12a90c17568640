//! PartialObjectMetadata answers: when a get, list or watch asks for
//! `application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`
//! (client-go's metadata client, kube-rs' `get_metadata`, `list_metadata`
//! and `metadata_watcher`, which send no fallback), the objects the same
//! handler returned are cut down to their metadata, as meta.k8s.io/v1
//! `PartialObjectMetadata` and `PartialObjectMetadataList`. Only the
//! rendering differs from the JSON answer, as with Tables.

use serde_json::{json, Value};

const API_VERSION: &str = "meta.k8s.io/v1";

/// An object's (or a bookmark's) metadata as a PartialObjectMetadata.
pub(super) fn object(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": API_VERSION,
        "metadata": object["metadata"],
    })
}

/// A list (`PodList`, ...) as a PartialObjectMetadataList: its metadata
/// (revision, continue) kept, each item cut down.
pub(super) fn list(list: &Value) -> Value {
    let items: Vec<Value> = list["items"]
        .as_array()
        .map(|items| items.iter().map(object).collect())
        .unwrap_or_default();
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": API_VERSION,
        "metadata": list["metadata"],
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_metadata_is_left() {
        let cm = json!({
            "kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": "c", "labels": {"a": "b"}, "resourceVersion": "7"},
            "data": {"secret": "x"},
        });
        assert_eq!(
            object(&cm),
            json!({
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"name": "c", "labels": {"a": "b"}, "resourceVersion": "7"},
            })
        );
        let cms = json!({
            "kind": "ConfigMapList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "9", "continue": "next"},
            "items": [cm],
        });
        let partial = list(&cms);
        assert_eq!(partial["kind"], "PartialObjectMetadataList");
        assert_eq!(partial["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            partial["metadata"],
            json!({"resourceVersion": "9", "continue": "next"})
        );
        assert_eq!(partial["items"][0]["kind"], "PartialObjectMetadata");
        assert_eq!(partial["items"][0]["metadata"]["name"], "c");
        assert!(partial["items"][0].get("data").is_none());
        let empty = json!({"kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": []});
        assert_eq!(list(&empty)["items"], json!([]));
    }
}
