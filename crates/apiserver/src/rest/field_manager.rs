//! Who a REST write is on behalf of: the `fieldManager` query parameter,
//! or, as Kubernetes does, the client's user agent up to its first `/`
//! (`kubectl/v1.32.0 (linux/amd64) kubernetes/abc` writes as `kubectl`).
//! Server-side apply must name its manager (kubectl always does). The name
//! travels to the handlers as gRPC metadata, with `force`.

use super::Call;
use crate::error::ApiError;
use crate::managed_fields::{FORCE_HEADER, MANAGER_HEADER};

/// Kubernetes' limit on a manager's name.
const MAX_MANAGER_LEN: usize = 128;

/// The manager of a write from `param` (the query) or `user_agent`.
pub fn manager_of(param: &str, user_agent: &str) -> String {
    if !param.is_empty() {
        return param.to_string();
    }
    let name = user_agent.split('/').next().unwrap_or("").trim();
    name.chars().take(MAX_MANAGER_LEN).collect()
}

impl Call {
    /// `msg` as a gRPC write from the same caller, naming its field manager
    /// (and `force`, for an apply).
    pub(super) fn grpc_write<T>(&self, msg: T) -> Result<tonic::Request<T>, ApiError> {
        let param = self.query.get("fieldManager");
        if param.len() > MAX_MANAGER_LEN {
            return Err(ApiError::bad_request(format!(
                "fieldManager {param:?} is longer than {MAX_MANAGER_LEN} characters"
            )));
        }
        let agent = self
            .parts
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut req = self.grpc(msg);
        let manager = manager_of(param, agent);
        if let Ok(v) = manager.parse() {
            req.metadata_mut().insert(MANAGER_HEADER, v);
        }
        if self.query.flag("force") {
            req.metadata_mut()
                .insert(FORCE_HEADER, tonic::metadata::MetadataValue::from_static("true"));
        }
        Ok(req)
    }

    /// The manager an apply names: the `fieldManager` parameter, required.
    pub(super) fn apply_manager(&self) -> &str {
        self.query.get("fieldManager")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managers_come_from_the_parameter_or_the_user_agent() {
        assert_eq!(manager_of("kubectl-edit", "kubectl/v1.32.0"), "kubectl-edit");
        assert_eq!(
            manager_of("", "kubectl/v1.32.0 (linux/amd64) kubernetes/abcdef"),
            "kubectl"
        );
        assert_eq!(manager_of("", "python-requests/2.31"), "python-requests");
        assert_eq!(manager_of("", ""), "");
    }
}
