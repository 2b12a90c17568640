//! The audit log (`--audit-log-path`): one JSON line per mutating request
//! (create, update, patch, delete, and pods/binding and pods/exec), at
//! Kubernetes' `Metadata` level: who, what verb on which object, and the
//! response code, never a request or response body, so Secret data can
//! never reach the log. Refused requests (401, 403) are recorded too.

use crate::authn::UserInfo;
use crate::authz::Attributes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct AuditLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    kind: &'static str,
    api_version: &'static str,
    level: &'static str,
    stage: &'static str,
    audit_id: String,
    stage_timestamp: String,
    verb: &'a str,
    user: User<'a>,
    object_ref: ObjectRef<'a>,
    response_status: ResponseStatus,
    /// What admission noted (Pod Security's `pod-security.kubernetes.io/*`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct User<'a> {
    username: &'a str,
    groups: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef<'a> {
    resource: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    subresource: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    api_group: &'a str,
}

#[derive(Serialize)]
struct ResponseStatus {
    code: u16,
}

/// Whether requests of this verb are audited.
pub fn audited(attrs: &Attributes) -> bool {
    matches!(
        attrs.verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// The HTTP status Kubernetes would have answered.
pub fn http_code(verb: &str, code: tonic::Code) -> u16 {
    use tonic::Code::*;
    match code {
        Ok if verb == "create" => 201,
        Ok => 200,
        NotFound => 404,
        AlreadyExists | Aborted => 409,
        InvalidArgument => 422,
        OutOfRange => 410,
        PermissionDenied => 403,
        Unauthenticated => 401,
        Unavailable => 503,
        DeadlineExceeded => 504,
        ResourceExhausted => 429,
        _ => 500,
    }
}

impl AuditLog {
    /// Opens (creating, appending) the log file; the error names it.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!(
                    "--audit-log-path {}: cannot create its directory: {e}",
                    path.display()
                )
            })?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("--audit-log-path {}: cannot open: {e}", path.display()))?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn record(
        &self,
        user: &UserInfo,
        attrs: &Attributes,
        code: tonic::Code,
        annotations: &BTreeMap<String, String>,
    ) {
        let event = Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: "Metadata",
            stage: "ResponseComplete",
            audit_id: uuid::Uuid::new_v4().to_string(),
            stage_timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            verb: &attrs.verb,
            user: User {
                username: &user.name,
                groups: &user.groups,
            },
            object_ref: ObjectRef {
                resource: &attrs.resource,
                subresource: &attrs.subresource,
                namespace: &attrs.namespace,
                name: &attrs.name,
                api_group: &attrs.group,
            },
            response_status: ResponseStatus {
                code: http_code(&attrs.verb, code),
            },
            annotations,
        };
        let mut line = match serde_json::to_vec(&event) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot encode an audit event: {e}");
                return;
            }
        };
        line.push(b'\n');
        // One write per line on an O_APPEND file: lines never interleave.
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(&line) {
            tracing::error!(path = %self.path.display(), "cannot write the audit log: {e}");
        }
    }
}
