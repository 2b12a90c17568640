//! Errors as Kubernetes `Status` objects: the one place where a failure
//! becomes an HTTP code, a reason and a body. Every REST failure passes
//! through [`status_json`]: the handlers' `ApiError` reaches it inside the
//! `tonic::Status` the gRPC face would send (its details carry the reason,
//! code and causes), and answers without details (authentication, limits)
//! are mapped from their gRPC code.

use crate::error::ApiError;
use prost::Message;
use rkube_api::ResourceInfo;
use serde_json::{json, Value};
use tonic::{Code, Status};

/// The HTTP code and reason of a gRPC code, for answers without details.
fn by_code(code: Code) -> (u16, &'static str) {
    match code {
        Code::NotFound => (404, "NotFound"),
        Code::AlreadyExists => (409, "AlreadyExists"),
        Code::Aborted => (409, "Conflict"),
        Code::InvalidArgument | Code::FailedPrecondition => (400, "BadRequest"),
        Code::OutOfRange => (410, "Gone"),
        Code::Unauthenticated => (401, "Unauthorized"),
        Code::PermissionDenied => (403, "Forbidden"),
        Code::ResourceExhausted => (429, "TooManyRequests"),
        Code::DeadlineExceeded => (504, "Timeout"),
        Code::Unavailable => (503, "ServiceUnavailable"),
        Code::Unimplemented => (405, "MethodNotAllowed"),
        _ => (500, "InternalError"),
    }
}

/// The `Status` object and HTTP code for `s`; `info` fills the group and
/// kind when the request was about a known resource.
pub fn status_json(s: &Status, info: Option<&ResourceInfo>) -> (u16, Value) {
    let detailed = (!s.details().is_empty())
        .then(|| rkube_api::meta::v1::Status::decode(s.details()).ok())
        .flatten()
        .filter(|d| d.code != 0);
    let (code, reason, mut details) = match detailed {
        Some(d) => {
            let details = d.details.map(|det| {
                let causes: Vec<Value> = det
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                let mut v = json!({"name": det.name, "kind": det.kind});
                if !causes.is_empty() {
                    v["causes"] = Value::Array(causes);
                }
                v
            });
            (
                u16::try_from(d.code).unwrap_or(500),
                d.reason,
                details.unwrap_or_else(|| json!({})),
            )
        }
        None => {
            let (code, reason) = by_code(s.code());
            (code, reason.to_string(), json!({}))
        }
    };
    if let Some(info) = info {
        // Kubernetes names the resource (`pods`) in details.kind, except
        // for Invalid, which names the kind (`Pod`)
        if reason != "Invalid" {
            details["kind"] = json!(info.plural);
        }
        if !info.group.is_empty() {
            details["group"] = json!(info.group);
        }
    }
    if details.get("name").and_then(Value::as_str) == Some("") {
        details.as_object_mut().map(|d| d.remove("name"));
    }
    if code == 429 {
        details["retryAfterSeconds"] = json!(1);
    }
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": s.message(),
        "reason": reason,
        "code": code,
    });
    if details.as_object().is_some_and(|d| !d.is_empty()) {
        body["details"] = details;
    }
    (code, body)
}

/// An HTTP answer carrying the `Status` for `s`.
pub fn response(s: &Status, info: Option<&ResourceInfo>) -> http::Response<tonic::body::Body> {
    let (code, body) = status_json(s, info);
    let mut resp = super::json_response(code, &body);
    if code == 429 {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    }
    resp
}

/// The answer for an error found by the REST face itself (a bad URL or
/// body): it goes through the same conversion as the handlers' errors.
pub fn error_response(e: ApiError, info: Option<&ResourceInfo>) -> http::Response<tonic::body::Body> {
    response(&Status::from(e), info)
}

/// A success `Status`, as Kubernetes answers a deletecollection.
pub fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::core::v1::Pod;
    use rkube_api::validation::{ErrorType, FieldError};
    use rkube_api::Resource;

    /// A full disk is a 503 a client may retry, not a 500 that suggests a bug.
    #[test]
    fn storage_full_is_service_unavailable() {
        let info = Pod::info();
        let full = rkube_store::StoreError::StorageFull {
            what: "no space left on the filesystem holding the data directory /var/lib/rkube".into(),
            remedy: "Free space on that filesystem".into(),
        };
        let (code, body) = status_json(&ApiError::from_store(full, info, "web").into(), Some(info));
        assert_eq!(code, 503);
        assert_eq!(body["reason"], "ServiceUnavailable");
        assert!(
            body["message"].as_str().unwrap().contains("/var/lib/rkube"),
            "{body}"
        );
    }

    #[test]
    fn handler_errors_keep_their_reason_code_and_causes() {
        let info = Pod::info();
        let (code, body) = status_json(&ApiError::not_found(info, "web").into(), Some(info));
        assert_eq!(code, 404);
        assert_eq!(body["reason"], "NotFound");
        assert_eq!(body["code"], 404);
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["status"], "Failure");
        assert_eq!(body["details"]["name"], "web");
        assert_eq!(body["details"]["kind"], "pods");
        assert_eq!(body["message"], "pods \"web\" not found");

        let invalid = ApiError::invalid(
            info,
            "web",
            vec![FieldError {
                field: "spec.containers".into(),
                kind: ErrorType::Required,
                detail: "at least one container".into(),
            }],
        );
        let (code, body) = status_json(&invalid.into(), Some(info));
        assert_eq!(code, 422);
        assert_eq!(body["reason"], "Invalid");
        assert_eq!(body["details"]["causes"][0]["field"], "spec.containers");
        assert_eq!(body["details"]["causes"][0]["reason"], "FieldValueRequired");

        let (code, body) = status_json(&ApiError::stale(info, "web").into(), None);
        assert_eq!((code, body["reason"].as_str()), (409, Some("Conflict")));
        let (code, body) = status_json(&ApiError::already_exists(info, "web").into(), None);
        assert_eq!((code, body["reason"].as_str()), (409, Some("AlreadyExists")));
        let (code, body) = status_json(&ApiError::gone("too old").into(), None);
        assert_eq!((code, body["reason"].as_str()), (410, Some("Gone")));
        let (code, body) = status_json(&ApiError::bad_request("no").into(), None);
        assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
        let (code, body) = status_json(&ApiError::forbidden("no").into(), None);
        assert_eq!((code, body["reason"].as_str()), (403, Some("Forbidden")));
    }

    #[test]
    fn bare_grpc_answers_map_by_code() {
        let (code, body) = status_json(&Status::unauthenticated("who?"), None);
        assert_eq!((code, body["reason"].as_str()), (401, Some("Unauthorized")));
        assert_eq!(body["message"], "who?");
        let (code, body) = status_json(&Status::resource_exhausted("slow down"), None);
        assert_eq!((code, body["reason"].as_str()), (429, Some("TooManyRequests")));
        assert_eq!(body["details"]["retryAfterSeconds"], 1);
        let resp = response(&Status::resource_exhausted("slow down"), None);
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "1");
    }
}
