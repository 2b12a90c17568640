//! Images: reference parsing, the OCI image format, and the client side of the OCI
//! distribution protocol. Writing what was fetched into containerd is the runtime's job
//! (`runtime::containerd`), because containerd 1.6 has no transfer service.

pub mod credentials;
pub mod oci;
pub mod reference;
pub mod registry;

pub use reference::{Reference, ReferenceError};
pub use registry::RegistryClient;

/// Credentials for a registry, from an image pull secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    // Never print the password: errors and traces carry this struct around.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to reach registries for one pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Basic credentials, used directly or to obtain a bearer token.
    pub auth: Option<RegistryAuth>,
    /// Registries (`host` or `host:port`) reached over plain http, like Docker's
    /// `insecure-registries`. Loopback registries (`localhost`, `127.0.0.0/8`, `::1`) always
    /// are.
    pub insecure_registries: Vec<String>,
}

/// Why an image could not be pulled. The kubelet reports these as `ErrImagePull`; each names
/// the image and, where the registry gave one, the registry's own reason.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    InvalidReference(#[from] ReferenceError),

    /// The registry answered with an error status (e.g. 404 `manifest unknown`).
    #[error("pulling image {reference}: {reason} (registry answered HTTP {status} for {url})")]
    Registry {
        reference: String,
        url: String,
        status: u16,
        reason: String,
    },

    /// The registry (or its token service) refused the credentials or asked for some.
    #[error("pulling image {reference}: registry {registry} refused access: {reason}; {hint}")]
    Unauthorized {
        reference: String,
        registry: String,
        reason: String,
        hint: &'static str,
    },

    /// The registry could not be reached or the connection broke.
    #[error("pulling image {reference}: request to {url} failed: {}", crate::error_report(.source))]
    Http {
        reference: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// What the registry sent does not hash to the digest it was asked for.
    #[error("pulling image {reference}: {what} has digest {actual}, expected {expected}; the registry or a proxy corrupted it")]
    DigestMismatch {
        reference: String,
        what: String,
        expected: String,
        actual: String,
    },

    #[error("pulling image {reference}: no manifest for platform {platform}; the image is built for: {}", if .available.is_empty() { "unspecified platforms".to_string() } else { .available.join(", ") })]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        available: Vec<String>,
    },

    #[error("pulling image {reference}: unsupported manifest media type {media_type:?}{}", if .media_type.contains("manifest.v1") { " (Docker schema 1 images are not supported; push the image again with a current client)" } else { "" })]
    UnsupportedMediaType { reference: String, media_type: String },

    #[error("pulling image {reference}: the {what} is not valid: {source}")]
    BadDocument {
        reference: String,
        what: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("pulling image {reference}: the {what} is larger than {limit} bytes")]
    TooLarge {
        reference: String,
        what: String,
        limit: usize,
    },

    /// containerd refused to store or unpack what was fetched.
    #[error("pulling image {reference}: containerd {operation} failed: {}", .source.message())]
    Store {
        reference: String,
        operation: String,
        #[source]
        source: tonic::Status,
    },

    #[error(
        "pulling image {reference}: layer {layer} unpacked to {actual}, but the image config says {expected}"
    )]
    Unpack {
        reference: String,
        layer: String,
        expected: String,
        actual: String,
    },
}
