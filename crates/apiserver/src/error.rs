//! API errors with Kubernetes meaning, and their gRPC form: the code says
//! what kind of failure it is, the message is what kubectl would print after
//! `Error from server (Reason):`, and the details carry a
//! `rkube.meta.v1.Status` with the reason and field causes.

use prost::Message;
use rkube_api::meta::v1::{Status, StatusCause, StatusDetails};
use rkube_api::validation::FieldError;
use rkube_api::ResourceInfo;
use rkube_store::StoreError;
use tonic::Code;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: Code,
    /// NotFound, AlreadyExists, Conflict, Invalid, Gone, BadRequest, ...
    pub reason: &'static str,
    pub message: String,
    pub kind: String,
    pub name: String,
    pub causes: Vec<StatusCause>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn new(code: Code, reason: &'static str, message: String) -> Self {
        ApiError {
            code,
            reason,
            message,
            kind: String::new(),
            name: String::new(),
            causes: Vec::new(),
        }
    }

    fn about(mut self, info: &ResourceInfo, name: &str) -> Self {
        self.kind = info.kind.to_string();
        self.name = name.to_string();
        self
    }

    pub fn not_found(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            Code::NotFound,
            "NotFound",
            format!("{} {name:?} not found", info.group_resource()),
        )
        .about(info, name)
    }

    pub fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            Code::AlreadyExists,
            "AlreadyExists",
            format!("{} {name:?} already exists", info.group_resource()),
        )
        .about(info, name)
    }

    pub fn conflict(info: &ResourceInfo, name: &str, why: &str) -> Self {
        Self::new(
            Code::Aborted,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: {why}",
                info.group_resource()
            ),
        )
        .about(info, name)
    }

    pub fn stale(info: &ResourceInfo, name: &str) -> Self {
        Self::conflict(
            info,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(info: &ResourceInfo, name: &str, errors: Vec<FieldError>) -> Self {
        let qualified = if info.group.is_empty() {
            info.kind.to_string()
        } else {
            format!("{}.{}", info.kind, info.group)
        };
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let joined = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let mut e = Self::new(
            Code::InvalidArgument,
            "Invalid",
            format!("{qualified} {name:?} is invalid: {joined}"),
        )
        .about(info, name);
        e.causes = errors
            .iter()
            .map(|f| StatusCause {
                reason: match f.kind {
                    rkube_api::validation::ErrorType::Required => "FieldValueRequired",
                    rkube_api::validation::ErrorType::Invalid(_) => "FieldValueInvalid",
                    rkube_api::validation::ErrorType::NotSupported(_) => "FieldValueNotSupported",
                    rkube_api::validation::ErrorType::Duplicate(_) => "FieldValueDuplicate",
                    rkube_api::validation::ErrorType::Forbidden => "FieldValueForbidden",
                    rkube_api::validation::ErrorType::TooLong => "FieldValueTooLong",
                    rkube_api::validation::ErrorType::Unsupported { .. } => "FieldValueNotSupported",
                    rkube_api::validation::ErrorType::TooMany(_) => "FieldValueTooMany",
                }
                .into(),
                message: f.to_string(),
                field: f.field.clone(),
            })
            .collect();
        e
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, "BadRequest", message.into())
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(Code::OutOfRange, "Gone", message.into())
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, "Forbidden", message.into())
    }

    /// 429: refused for now, retry later (an eviction a PodDisruptionBudget forbids).
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(Code::ResourceExhausted, "TooManyRequests", message.into())
    }

    /// A Forbidden about one object (`pods "web" is forbidden: ...`), as Kubernetes'
    /// admission plugins word their refusals; an object without a name yet (generateName)
    /// is `pods is forbidden: ...`.
    pub fn forbidden_object(info: &ResourceInfo, name: &str, why: &str) -> Self {
        let message = if name.is_empty() {
            format!("{} is forbidden: {why}", info.group_resource())
        } else {
            format!("{} {name:?} is forbidden: {why}", info.group_resource())
        };
        Self::new(Code::PermissionDenied, "Forbidden", message).about(info, name)
    }

    /// Adds a cause (`DisruptionBudget`, ...) to the details.
    pub fn with_cause(mut self, reason: &str, message: impl Into<String>) -> Self {
        self.causes.push(StatusCause {
            reason: reason.into(),
            message: message.into(),
            field: String::new(),
        });
        self
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, "InternalError", message.into())
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, "ServiceUnavailable", message.into())
    }

    /// Maps a store answer about `name` of kind `info`.
    pub fn from_store(e: StoreError, info: &ResourceInfo, name: &str) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::not_found(info, name),
            StoreError::AlreadyExists { .. } => Self::already_exists(info, name),
            StoreError::Conflict { .. } => Self::stale(info, name),
            e @ (StoreError::Compacted { .. } | StoreError::Expired { .. }) => Self::gone(e.to_string()),
            StoreError::Closed => {
                Self::unavailable("the apiserver is shutting down; retry against a running apiserver")
            }
            // etcd down or without quorum: clients retry, or fail over to another apiserver
            e @ StoreError::Unavailable { .. } => Self::unavailable(e.to_string()),
            // The disk (or etcd's quota) is full. Kubernetes answers etcd's "database space
            // exceeded" with a 500 InternalError; 503 ServiceUnavailable says better what
            // happened: the request was fine, the server cannot store it for now, and the
            // same request succeeds once space is freed (clients and controllers retry it,
            // and nothing about it needs fixing).
            e @ StoreError::StorageFull { .. } => Self::unavailable(e.to_string()),
            // names the object and what to do (a Secret encrypted with another key)
            e @ StoreError::Untransformable { .. } => Self::internal(e.to_string()),
            other => Self::internal(format!("storage error: {other}")),
        }
    }

    fn http_code(&self) -> i32 {
        match self.code {
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::InvalidArgument if self.reason == "Invalid" => 422,
            Code::InvalidArgument => 400,
            Code::OutOfRange => 410,
            Code::PermissionDenied => 403,
            Code::Unauthenticated => 401,
            Code::Unavailable => 503,
            Code::ResourceExhausted => 429,
            _ => 500,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> tonic::Status {
        let status = Status {
            status: "Failure".into(),
            message: e.message.clone(),
            reason: e.reason.into(),
            details: Some(StatusDetails {
                name: e.name.clone(),
                group: String::new(),
                kind: e.kind.clone(),
                uid: String::new(),
                causes: e.causes.clone(),
            }),
            code: e.http_code(),
        };
        tonic::Status::with_details(e.code, e.message, status.encode_to_vec().into())
    }
}
