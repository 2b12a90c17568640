//! Storage: PersistentVolumeClaims, and the claim templates of StatefulSets.

use super::meta::{validate_meta, NameRule};
use super::{Errors, FieldError, Validate};
use crate::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimSpec};

const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

/// A claim's spec at `f`: at least one known access mode, a storage request, and a volume
/// mode rkube can give.
pub(super) fn validate_claim_spec(spec: Option<&PersistentVolumeClaimSpec>, f: &str, e: &mut Errors) {
    let Some(spec) = spec else {
        e.required(format!("{f}.accessModes"), "at least 1 access mode is required");
        e.required(format!("{f}.resources[storage]"), "");
        return;
    };
    if spec.access_modes.is_empty() {
        e.required(format!("{f}.accessModes"), "at least 1 access mode is required");
    }
    for (j, mode) in spec.access_modes.iter().enumerate() {
        e.one_of(format!("{f}.accessModes[{j}]"), mode, ACCESS_MODES);
    }
    match spec.resources.as_ref().and_then(|r| r.requests.get("storage")) {
        None => e.required(format!("{f}.resources[storage]"), ""),
        Some(q) => match q.value() {
            Ok(bytes) if bytes > 0 => {}
            Ok(_) => e.invalid(
                format!("{f}.resources[storage]"),
                q.to_string(),
                "must be greater than zero",
            ),
            Err(err) => e.invalid(format!("{f}.resources[storage]"), q.to_string(), err.to_string()),
        },
    }
    if let Some(mode) = &spec.volume_mode {
        // Block volumes need device plumbing the kubelet does not have (yet).
        e.one_of(format!("{f}.volumeMode"), mode, &["Filesystem"]);
    }
}

impl Validate for PersistentVolumeClaim {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        validate_claim_spec(self.spec.as_ref(), "spec", &mut e);
        e.0
    }

    /// As Kubernetes: a claim's spec is fixed once created, but for its size.
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut e = Errors::default();
        let without_size = |c: &PersistentVolumeClaim| {
            c.spec.clone().map(|mut s| {
                s.resources = None;
                s
            })
        };
        if without_size(self) != without_size(old) {
            e.forbidden(
                "spec",
                "spec is immutable after creation except resources.requests",
            );
        }
        e.0
    }
}
