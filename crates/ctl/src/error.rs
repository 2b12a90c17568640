//! The errors a user of rkubectl can meet, printed the way kubectl prints
//! them so that muscle memory and scripts that grep for them keep working.

use std::fmt;

/// Everything that makes a command fail. `Display` is the whole line the
/// user sees on stderr; every variant exits with status 1.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The apiserver refused the request: `Error from server (NotFound):
    /// pods "x" not found`. `reason` comes from the `Status` in the gRPC
    /// details, `message` is already phrased for users by the apiserver.
    #[error("Error from server ({reason}): {message}")]
    Server {
        reason: String,
        code: tonic::Code,
        message: String,
    },

    /// `exec`: the remote command finished with this non-zero status, which
    /// rkubectl exits with, as kubectl does.
    #[error("command terminated with exit code {0}")]
    ExitCode(i32),

    /// The apiserver could not be reached at all.
    #[error(
        "error: cannot connect to the apiserver at {url}: {detail}; is it running? (make up starts one)"
    )]
    Connect { url: String, detail: String },

    /// A mistake on the client side: bad arguments, unreadable files,
    /// invalid manifests.
    #[error("error: {0}")]
    Usage(String),

    /// Several complete error lines, each already starting with
    /// `error: ` (every problem of a set of manifests).
    #[error("{}", .0.join("\n"))]
    Lines(Vec<String>),

    /// Errors were already printed one by one (for example one per object
    /// of a file); only the exit status is left to set.
    #[error("")]
    Reported,

    /// Writing the output failed (a closed pipe, a full disk).
    #[error("error: cannot write output: {0}")]
    Io(#[from] std::io::Error),
}

impl CtlError {
    pub fn usage(msg: impl fmt::Display) -> Self {
        CtlError::Usage(msg.to_string())
    }

    /// Whether the server said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CtlError::Server { reason, .. } if reason == "NotFound")
    }

    pub fn is_already_exists(&self) -> bool {
        matches!(self, CtlError::Server { reason, .. } if reason == "AlreadyExists")
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, CtlError::Server { reason, .. } if reason == "Conflict")
    }

    pub fn is_gone(&self) -> bool {
        matches!(self, CtlError::Server { reason, .. } if reason == "Gone" || reason == "Expired")
    }

    /// The same server error with kubectl's context in front of the
    /// message (`error when creating "web.yaml": ...`); other errors are
    /// returned unchanged.
    pub fn with_context(self, context: impl fmt::Display) -> Self {
        match self {
            CtlError::Server {
                reason,
                code,
                message,
            } => CtlError::Server {
                reason,
                code,
                message: format!("{context}: {message}"),
            },
            other => other,
        }
    }

    /// Builds the error for a gRPC status the apiserver returned.
    pub fn from_status(status: &tonic::Status, url: &str) -> Self {
        use prost::Message;
        let code = status.code();
        if code == tonic::Code::Unavailable {
            return CtlError::Connect {
                url: url.to_string(),
                detail: transport_detail(status),
            };
        }
        let details = rkube_api::meta::v1::Status::decode(status.details()).ok();
        let reason = details
            .as_ref()
            .map(|d| d.reason.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| reason_for_code(code).to_string());
        let message = if !status.message().is_empty() {
            status.message().to_string()
        } else {
            details.map(|d| d.message).unwrap_or_default()
        };
        CtlError::Server {
            reason,
            code,
            message,
        }
    }
}

/// The Kubernetes reason matching a gRPC code, for statuses that carry no
/// `Status` details (a proxy in between, an older server).
fn reason_for_code(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::Aborted => "Conflict",
        Code::InvalidArgument => "Invalid",
        Code::OutOfRange => "Gone",
        Code::PermissionDenied => "Forbidden",
        Code::Unauthenticated => "Unauthorized",
        Code::DeadlineExceeded => "Timeout",
        Code::ResourceExhausted => "TooManyRequests",
        Code::Unimplemented => "MethodNotAllowed",
        Code::FailedPrecondition => "BadRequest",
        _ => "InternalError",
    }
}

/// The most useful line of a transport failure: tonic nests the OS error
/// ("Connection refused") a few sources deep.
fn transport_detail(status: &tonic::Status) -> String {
    let mut detail = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        "the connection failed".into()
    } else {
        detail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn server_errors_read_like_kubectl() {
        let body = rkube_api::meta::v1::Status {
            reason: "NotFound".into(),
            message: "pods \"x\" not found".into(),
            code: 404,
            ..Default::default()
        };
        let status = tonic::Status::with_details(
            tonic::Code::NotFound,
            "pods \"x\" not found",
            body.encode_to_vec().into(),
        );
        let err = CtlError::from_status(&status, "http://127.0.0.1:6443");
        assert!(err.is_not_found());
        assert_eq!(
            err.to_string(),
            "Error from server (NotFound): pods \"x\" not found"
        );
    }

    #[test]
    fn reason_falls_back_to_the_code() {
        let status = tonic::Status::new(tonic::Code::Aborted, "the object has been modified");
        let err = CtlError::from_status(&status, "http://x");
        assert!(err.is_conflict());
        assert_eq!(
            err.to_string(),
            "Error from server (Conflict): the object has been modified"
        );
    }

    #[test]
    fn unavailable_means_cannot_connect() {
        let status = tonic::Status::new(tonic::Code::Unavailable, "tcp connect error");
        let err = CtlError::from_status(&status, "http://127.0.0.1:1");
        assert_eq!(
            err.to_string(),
            "error: cannot connect to the apiserver at http://127.0.0.1:1: tcp connect error; is it running? (make up starts one)"
        );
    }
}
