//! Configuration data: ConfigMaps and Secrets, whose keys become file names.

use super::meta::{validate_meta, NameRule};
use super::{Errors, FieldError, Validate};
use crate::core::v1 as corev1;

/// Whether `key` may name an entry of a ConfigMap or Secret (it becomes a
/// file name when mounted).
pub fn is_config_map_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn validate_data_keys<'a>(keys: impl Iterator<Item = &'a String>, f: &str, errs: &mut Errors) {
    for k in keys {
        let ok = is_config_map_key(k);
        if !ok {
            errs.invalid(
                format!("{f}[{k}]"),
                k,
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            );
        }
    }
}

impl Validate for corev1::ConfigMap {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        validate_data_keys(self.data.keys(), "data", &mut e);
        validate_data_keys(self.binary_data.keys(), "binaryData", &mut e);
        for k in self.data.keys() {
            if self.binary_data.contains_key(k) {
                e.invalid(format!("data[{k}]"), k, "duplicate of key present in binaryData");
            }
        }
        e.0
    }
}

impl Validate for corev1::Secret {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        validate_data_keys(self.data.keys(), "data", &mut e);
        validate_data_keys(self.string_data.keys(), "stringData", &mut e);
        e.0
    }
}
