//! Validation of every kind, returning all field errors at once in
//! Kubernetes' wording (`spec.replicas: Invalid value: -1: must be greater
//! than or equal to 0`). The apiserver runs it after defaulting; rkubectl
//! runs it before sending anything, so a bad file writes nothing.
//!
//! One file per group of kinds; this root holds the error types, the
//! `Validate` trait and the public helpers other crates call.

mod batch;
pub mod certificates;
mod cluster;
mod config_data;
mod meta;
mod network_policy;
mod networking;
mod pod;
mod pod_dns;
mod policy;
mod rbac;
mod service;
mod storage;
mod volume;
mod workloads;

pub use cluster::parse_cidr;
pub use config_data::is_config_map_key;
pub use meta::{is_dns1123_label, is_dns1123_subdomain};
pub use network_policy::parse_any_cidr;
pub use networking::{is_wildcard_dns1123_subdomain, CLASS_ANNOTATION, DEFAULT_CLASS_ANNOTATION};
pub use pod::validate_pod_spec;
pub use pod_dns::{MAX_NAMESERVERS, MAX_SEARCHES};
pub use policy::HIGHEST_USER_PRIORITY;

use std::fmt;

/// Largest encoded object the apiserver stores (as etcd's default limit).
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorType {
    Required,
    Invalid(String),
    NotSupported(Vec<&'static str>),
    Duplicate(String),
    Forbidden,
    TooLong,
    /// A value outside an enum known only at run time (a CRD schema's): the
    /// value and the allowed ones, each as Kubernetes prints them.
    Unsupported {
        value: String,
        supported: Vec<String>,
    },
    /// A list longer than its `maxItems`.
    TooMany(u64),
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub kind: ErrorType,
    pub detail: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.field)?;
        match &self.kind {
            ErrorType::Required => write!(f, "Required value")?,
            ErrorType::Invalid(v) => write!(f, "Invalid value: {v}")?,
            ErrorType::NotSupported(vs) => {
                let quoted: Vec<String> = vs.iter().map(|v| format!("{v:?}")).collect();
                write!(f, "Unsupported value: supported values: {}", quoted.join(", "))?
            }
            ErrorType::Duplicate(v) => write!(f, "Duplicate value: {v}")?,
            ErrorType::Forbidden => write!(f, "Forbidden")?,
            ErrorType::TooLong => write!(f, "Too long")?,
            ErrorType::Unsupported { value, supported } => write!(
                f,
                "Unsupported value: {value}: supported values: {}",
                supported.join(", ")
            )?,
            ErrorType::TooMany(max) => write!(f, "Too many: must have at most {max} items")?,
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Collects errors under a path.
#[derive(Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn required(&mut self, field: impl Into<String>, detail: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            kind: ErrorType::Required,
            detail: detail.into(),
        });
    }
    pub fn invalid(&mut self, field: impl Into<String>, value: impl fmt::Debug, detail: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            kind: ErrorType::Invalid(format!("{value:?}")),
            detail: detail.into(),
        });
    }
    pub fn not_supported(&mut self, field: impl Into<String>, value: &str, allowed: &[&'static str]) {
        self.0.push(FieldError {
            field: field.into(),
            kind: ErrorType::NotSupported(allowed.to_vec()),
            detail: format!("got {value:?}"),
        });
    }
    pub fn duplicate(&mut self, field: impl Into<String>, value: impl fmt::Debug) {
        self.0.push(FieldError {
            field: field.into(),
            kind: ErrorType::Duplicate(format!("{value:?}")),
            detail: String::new(),
        });
    }
    pub fn forbidden(&mut self, field: impl Into<String>, detail: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            kind: ErrorType::Forbidden,
            detail: detail.into(),
        });
    }
    fn one_of(&mut self, field: String, value: &str, allowed: &[&'static str]) {
        if !allowed.contains(&value) {
            self.not_supported(field, value, allowed);
        }
    }
}

pub trait Validate {
    /// Every problem with the object; empty when it is valid. Expects
    /// defaults to have been applied.
    fn validate(&self) -> Vec<FieldError>;

    /// Problems with changing `old` into `self` (immutable fields).
    fn validate_update(&self, _old: &Self) -> Vec<FieldError> {
        Vec::new()
    }
}

/// Joins field errors the way the apiserver reports them.
pub fn summarize(kind: &str, name: &str, errors: &[FieldError]) -> String {
    let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    format!("{kind} {name:?} is invalid: {}", list.join(", "))
}

/// The metadata checks every kind shares (name or generateName, namespace,
/// labels, annotations), for objects without a typed message: custom
/// objects and CustomResourceDefinitions, named as DNS subdomains.
pub fn validate_object_meta(obj: &crate::meta::v1::ObjectMeta) -> Vec<FieldError> {
    let mut errs = Errors::default();
    meta::validate_meta(Some(obj), meta::NameRule::Subdomain, &mut errs);
    errs.0
}
