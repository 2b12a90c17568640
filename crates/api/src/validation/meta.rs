//! What every kind's validation shares: names (RFC 1123 labels and
//! subdomains), object metadata, labels, and ports by number or name.

use super::Errors;
use crate::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

pub(super) const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')";
pub(super) const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')";

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// How a kind's names are checked.
#[derive(Clone, Copy)]
pub(super) enum NameRule {
    Label,
    Subdomain,
    /// Node names, event names: any subdomain-ish string, as Kubernetes.
    Path,
}

pub(super) fn validate_meta(meta: Option<&ObjectMeta>, rule: NameRule, errs: &mut Errors) {
    let Some(meta) = meta else {
        errs.required("metadata.name", "name or generateName is required");
        return;
    };
    if meta.name.is_empty() {
        if meta.generate_name.is_empty() {
            errs.required("metadata.name", "name or generateName is required");
        }
    } else {
        let ok = match rule {
            NameRule::Label => is_dns1123_label(&meta.name),
            NameRule::Subdomain => is_dns1123_subdomain(&meta.name),
            NameRule::Path => {
                !meta.name.contains('/') && !meta.name.contains('%') && meta.name != "." && meta.name != ".."
            }
        };
        if !ok {
            let msg = match rule {
                NameRule::Label => DNS1123_LABEL_MSG,
                NameRule::Subdomain => DNS1123_SUBDOMAIN_MSG,
                NameRule::Path => "may not contain '/' or '%' and may not be '.' or '..'",
            };
            errs.invalid("metadata.name", &meta.name, msg);
        }
    }
    if !meta.namespace.is_empty() && !is_dns1123_label(&meta.namespace) {
        errs.invalid("metadata.namespace", &meta.namespace, DNS1123_LABEL_MSG);
    }
    validate_labels(&meta.labels, "metadata.labels", errs);
    for (i, o) in meta.owner_references.iter().enumerate() {
        let f = format!("metadata.ownerReferences[{i}]");
        if o.api_version.is_empty() {
            errs.required(format!("{f}.apiVersion"), "");
        }
        if o.kind.is_empty() {
            errs.required(format!("{f}.kind"), "");
        }
        if o.name.is_empty() {
            errs.required(format!("{f}.name"), "");
        }
        if o.uid.is_empty() {
            errs.required(format!("{f}.uid"), "");
        }
    }
    if meta
        .owner_references
        .iter()
        .filter(|o| o.controller == Some(true))
        .count()
        > 1
    {
        errs.invalid(
            "metadata.ownerReferences",
            "",
            "only one reference can have controller set to true",
        );
    }
}

pub(super) fn validate_labels(labels: &BTreeMap<String, String>, field: &str, errs: &mut Errors) {
    for (k, v) in labels {
        let name = k.rsplit('/').next().unwrap_or(k);
        let prefix_ok = match k.rsplit_once('/') {
            Some((p, _)) => is_dns1123_subdomain(p),
            None => true,
        };
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
        if !prefix_ok || !name_ok {
            errs.invalid(field, k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, at most 63 characters, with an optional DNS subdomain prefix and '/'");
        }
        let value_ok = v.is_empty()
            || (v.len() <= 63
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                && v.as_bytes()[0].is_ascii_alphanumeric()
                && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric());
        if !value_ok {
            errs.invalid(format!("{field}[{k}]"), v, "a valid label value must be 63 characters or less and must be empty or begin and end with an alphanumeric character, with '-', '_' or '.' between");
        }
    }
}

pub(super) fn validate_port(port: i32, field: String, errs: &mut Errors) {
    if !(1..=65535).contains(&port) {
        errs.invalid(field, port, "must be between 1 and 65535, inclusive");
    }
}

pub(super) fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

pub(super) const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

pub(super) fn validate_named_port(port: Option<&crate::intstr::IntOrString>, f: &str, errs: &mut Errors) {
    match port {
        None => errs.required(f.to_string(), ""),
        Some(p) => match p.as_str() {
            Some(name) if !is_port_name(name) => errs.invalid(
                f.to_string(),
                name,
                "must contain only lowercase letters, digits and '-', at most 15 characters",
            ),
            Some(_) => {}
            None => validate_port(p.int_val, f.to_string(), errs),
        },
    }
}
