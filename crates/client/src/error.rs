//! The client's one error type. Server errors keep their Kubernetes meaning
//! (reason, field causes) so callers branch on `is_not_found()` and
//! friends instead of parsing messages.

use prost::Message;
use rkube_api::codec::CodecError;
use rkube_api::meta::v1 as meta;
use std::path::PathBuf;
use std::time::Duration;

/// One field-level reason an Invalid request was refused
/// (`spec.containers[0].image: Required value`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, ...
    pub reason: String,
    pub message: String,
    /// The field path, `spec.containers[0].image`.
    pub field: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver answered and refused the request. Displays the
    /// server's kubectl-style message (`pods "x" not found`) unchanged.
    #[error("{message}")]
    Api {
        code: tonic::Code,
        /// Kubernetes reason: `NotFound`, `AlreadyExists`, `Conflict`,
        /// `Invalid`, `Gone`, `Forbidden`, `Unauthorized`, ...
        reason: String,
        message: String,
        causes: Vec<Cause>,
    },

    /// The apiserver could not be reached, or the connection broke.
    #[error("cannot reach the apiserver at {server}: {message}; is it running, and is `server` in the client config right?")]
    Transport { server: String, message: String },

    /// A unary call got no answer in time. Watches are not limited.
    #[error("the apiserver at {server} did not answer {call} within {after:?}")]
    Timeout {
        server: String,
        call: &'static str,
        after: Duration,
    },

    /// An object from the server could not be decoded.
    #[error("cannot decode the apiserver's answer: {0}")]
    Decode(#[from] CodecError),

    /// The server's answer was well-formed protobuf but not what the
    /// protocol promises (an unknown watch event type, a missing object).
    #[error("unexpected answer from the apiserver: {0}")]
    Protocol(String),

    /// The client config file (or the address given instead of one) is
    /// missing, unreadable or wrong. Names the file and the field.
    #[error("{}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },

    /// A request the client refuses before sending it.
    #[error("{0}")]
    InvalidRequest(String),

    /// A patch or other JSON document could not be encoded.
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// `Store::by_index` was asked for an index nobody added.
    #[error("no index named {index:?} in this cache; add it with Store::add_index first")]
    NoSuchIndex { index: String },

    /// The leader elector could not renew its Lease before the renew
    /// deadline; the process must stop acting as leader.
    #[error("lost leadership of lease {lease} as {identity}")]
    LeadershipLost { lease: String, identity: String },
}

impl Error {
    /// Decodes a gRPC status from the apiserver (or from the transport)
    /// into an error with Kubernetes meaning. `server` names the address
    /// in transport errors.
    pub fn from_status(status: tonic::Status, server: &str) -> Error {
        let details = if status.details().is_empty() {
            None
        } else {
            meta::Status::decode(status.details()).ok()
        };
        // Statuses that tonic makes up from a transport failure carry the
        // underlying error as their source and no details; server statuses
        // never have a source on the client side.
        let local = std::error::Error::source(&status).is_some();
        if details.is_none() && (local || status.code() == tonic::Code::Unavailable) {
            return Error::Transport {
                server: server.to_string(),
                message: status.message().to_string(),
            };
        }
        let code = status.code();
        let (reason, details_msg, causes) = match details {
            Some(s) => {
                let causes = s
                    .details
                    .map(|d| {
                        d.causes
                            .into_iter()
                            .map(|c| Cause {
                                reason: c.reason,
                                message: c.message,
                                field: c.field,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let reason = if s.reason.is_empty() {
                    reason_for(code).to_string()
                } else {
                    s.reason
                };
                (reason, s.message, causes)
            }
            None => (reason_for(code).to_string(), String::new(), Vec::new()),
        };
        let message = if status.message().is_empty() {
            details_msg
        } else {
            status.message().to_string()
        };
        Error::Api {
            code,
            reason,
            message,
            causes,
        }
    }

    /// The gRPC code of an Api error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The Kubernetes reason of an Api error (`NotFound`, `Conflict`, ...).
    pub fn reason(&self) -> Option<&str> {
        match self {
            Error::Api { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Field causes of an Invalid error; empty otherwise.
    pub fn causes(&self) -> &[Cause] {
        match self {
            Error::Api { causes, .. } => causes,
            _ => &[],
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
    }

    pub fn is_already_exists(&self) -> bool {
        self.code() == Some(tonic::Code::AlreadyExists)
    }

    /// A write with a stale resourceVersion: read again and retry.
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(tonic::Code::Aborted)
    }

    /// The resourceVersion (watch) or continue token (list) is older than
    /// the server keeps: list again from scratch.
    pub fn is_gone(&self) -> bool {
        self.code() == Some(tonic::Code::OutOfRange)
    }

    pub fn is_invalid(&self) -> bool {
        self.code() == Some(tonic::Code::InvalidArgument)
    }

    pub fn is_forbidden(&self) -> bool {
        self.code() == Some(tonic::Code::PermissionDenied)
    }

    /// Refused for now (an eviction a PodDisruptionBudget forbids, a rate limit): retry
    /// after a pause.
    pub fn is_too_many_requests(&self) -> bool {
        self.code() == Some(tonic::Code::ResourceExhausted)
    }

    pub fn is_unauthorized(&self) -> bool {
        self.code() == Some(tonic::Code::Unauthenticated)
    }

    /// Worth retrying unchanged after a pause: the server was unreachable,
    /// slow or briefly unavailable.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transport { .. } | Error::Timeout { .. })
            || matches!(
                self.code(),
                Some(
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted
                )
            )
    }
}

/// The Kubernetes reason for a code when the server sent no details.
fn reason_for(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::Aborted => "Conflict",
        Code::InvalidArgument => "Invalid",
        Code::OutOfRange => "Gone",
        Code::PermissionDenied => "Forbidden",
        Code::Unauthenticated => "Unauthorized",
        Code::Unavailable => "ServiceUnavailable",
        Code::DeadlineExceeded => "Timeout",
        Code::ResourceExhausted => "TooManyRequests",
        Code::FailedPrecondition => "BadRequest",
        Code::Unimplemented => "MethodNotAllowed",
        _ => "InternalError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_with_details(code: tonic::Code, message: &str, s: meta::Status) -> tonic::Status {
        tonic::Status::with_details(code, message, s.encode_to_vec().into())
    }

    #[test]
    fn api_errors_keep_server_message_reason_and_causes() {
        let s = meta::Status {
            status: "Failure".into(),
            message: "ignored: the gRPC message wins".into(),
            reason: "Invalid".into(),
            details: Some(meta::StatusDetails {
                name: "web".into(),
                kind: "Pod".into(),
                causes: vec![meta::StatusCause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: "spec.containers[0].image".into(),
                }],
                ..Default::default()
            }),
            code: 422,
        };
        let msg = r#"Pod "web" is invalid: spec.containers[0].image: Required value"#;
        let err = Error::from_status(
            status_with_details(tonic::Code::InvalidArgument, msg, s),
            "http://x",
        );
        assert_eq!(err.to_string(), msg);
        assert!(err.is_invalid());
        assert!(!err.is_not_found());
        assert_eq!(err.reason(), Some("Invalid"));
        assert_eq!(err.causes().len(), 1);
        assert_eq!(err.causes()[0].field, "spec.containers[0].image");
    }

    #[test]
    fn codes_map_to_helpers_without_details() {
        type Check = fn(&Error) -> bool;
        let cases: [(tonic::Code, Check, &str); 5] = [
            (tonic::Code::NotFound, Error::is_not_found, "NotFound"),
            (
                tonic::Code::AlreadyExists,
                Error::is_already_exists,
                "AlreadyExists",
            ),
            (tonic::Code::Aborted, Error::is_conflict, "Conflict"),
            (tonic::Code::OutOfRange, Error::is_gone, "Gone"),
            (tonic::Code::InvalidArgument, Error::is_invalid, "Invalid"),
        ];
        for (code, check, reason) in cases {
            let err = Error::from_status(tonic::Status::new(code, "pods \"x\" whatever"), "http://x");
            assert!(check(&err), "{code:?}");
            assert_eq!(err.reason(), Some(reason));
            assert_eq!(err.to_string(), "pods \"x\" whatever");
        }
    }

    #[test]
    fn unavailable_without_details_is_a_transport_error_naming_the_server() {
        let err = Error::from_status(
            tonic::Status::unavailable("tcp connect error: Connection refused"),
            "http://127.0.0.1:6443",
        );
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
        assert!(err.is_transient());
        assert!(err.to_string().contains("http://127.0.0.1:6443"), "{err}");
        assert!(err.to_string().contains("Connection refused"), "{err}");
    }

    #[test]
    fn unavailable_from_the_server_stays_an_api_error() {
        let s = meta::Status {
            reason: "ServiceUnavailable".into(),
            code: 503,
            ..Default::default()
        };
        let err = Error::from_status(
            status_with_details(tonic::Code::Unavailable, "the server is shutting down", s),
            "http://x",
        );
        assert_eq!(err.code(), Some(tonic::Code::Unavailable));
        assert!(err.is_transient());
    }
}
