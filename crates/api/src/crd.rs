//! apiextensions.k8s.io/v1 CustomResourceDefinition: its fields (read from
//! the JSON it is stored as), its defaulting and its validation, worded as
//! Kubernetes words them. What a CRD means for serving (the kinds it adds)
//! is the apiserver's business; this module only knows the definition.
//!
//! CRDs and custom objects have no proto message: they are JSON documents
//! (`serde_json::Value`), carried over gRPC in a `google.protobuf.Any` whose
//! type URL is [`type_url`] and whose value is the object's JSON.

use crate::validation::{ErrorType, FieldError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const GROUP: &str = "apiextensions.k8s.io";
pub const VERSION: &str = "v1";
pub const KIND: &str = "CustomResourceDefinition";
pub const PLURAL: &str = "customresourcedefinitions";

/// The type URL prefix of objects that travel as JSON.
pub const JSON_TYPE_PREFIX: &str = "rkube.dev/json/";

/// `rkube.dev/json/GROUP/VERSION/KIND`: the type URL of a JSON object in an `Any`.
pub fn type_url(group: &str, version: &str, kind: &str) -> String {
    format!("{JSON_TYPE_PREFIX}{group}/{version}/{kind}")
}

/// The CRD kind itself.
pub static CRD_INFO: crate::ResourceInfo = crate::ResourceInfo {
    group: GROUP,
    version: VERSION,
    kind: KIND,
    plural: PLURAL,
    singular: "customresourcedefinition",
    short_names: &["crd", "crds"],
    namespaced: false,
    has_status: true,
    type_url: "rkube.dev/json/apiextensions.k8s.io/v1/CustomResourceDefinition",
};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CrdSpec {
    pub group: String,
    pub names: CrdNames,
    pub scope: String,
    pub versions: Vec<CrdVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion: Option<Conversion>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub preserve_unknown_fields: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CrdNames {
    pub plural: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub singular: String,
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub list_kind: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub short_names: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Conversion {
    pub strategy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CrdVersion {
    pub name: String,
    pub served: bool,
    pub storage: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deprecated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deprecation_warning: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<VersionSchema>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subresources: Option<Subresources>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub additional_printer_columns: Vec<PrinterColumn>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionSchema {
    #[serde(rename = "openAPIV3Schema", default, skip_serializing_if = "Value::is_null")]
    pub open_api_v3_schema: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Subresources {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleSubresource>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScaleSubresource {
    pub spec_replicas_path: String,
    pub status_replicas_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_selector_path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PrinterColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub format: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub priority: i32,
    pub json_path: String,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl CrdSpec {
    /// The spec of a CRD object; a field of the wrong type is an error naming it.
    pub fn from_object(obj: &Value) -> Result<CrdSpec, FieldError> {
        let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
        if spec.is_null() {
            return Err(FieldError {
                field: "spec".into(),
                kind: ErrorType::Required,
                detail: String::new(),
            });
        }
        serde_path_to_error::deserialize::<_, CrdSpec>(spec).map_err(|e| FieldError {
            field: format!("spec.{}", e.path()),
            kind: ErrorType::Invalid(String::new()),
            detail: e.inner().to_string(),
        })
    }

    /// Kubernetes' defaults: singular and listKind from kind, conversion None.
    pub fn apply_defaults(&mut self) {
        if self.names.singular.is_empty() {
            self.names.singular = self.names.kind.to_ascii_lowercase();
        }
        if self.names.list_kind.is_empty() && !self.names.kind.is_empty() {
            self.names.list_kind = format!("{}List", self.names.kind);
        }
        if self.conversion.is_none() {
            self.conversion = Some(Conversion {
                strategy: "None".into(),
                webhook: None,
            });
        }
        for v in &mut self.versions {
            for c in &mut v.additional_printer_columns {
                if c.type_.is_empty() {
                    c.type_ = "string".into();
                }
            }
        }
    }

    pub fn namespaced(&self) -> bool {
        self.scope == "Namespaced"
    }

    /// The version objects are stored in (exactly one, once valid).
    pub fn storage_version(&self) -> Option<&CrdVersion> {
        self.versions.iter().find(|v| v.storage)
    }

    /// Every problem with this definition named `name`, as Kubernetes
    /// reports them (`spec.versions: Invalid value: ...: must have exactly
    /// one version marked as storage version`).
    pub fn validate(&self, name: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut invalid = |field: &str, value: String, detail: &str| {
            errors.push(FieldError {
                field: field.into(),
                kind: ErrorType::Invalid(value),
                detail: detail.into(),
            })
        };
        let expected = format!("{}.{}", self.names.plural, self.group);
        if !self.names.plural.is_empty() && !self.group.is_empty() && name != expected {
            invalid(
                "metadata.name",
                format!("{name:?}"),
                &format!("must be spec.names.plural+\".\"+spec.group ({expected:?})"),
            );
        }
        let mut required = Vec::new();
        if self.group.is_empty() {
            required.push("spec.group".to_string());
        } else if !self.group.contains('.') {
            invalid(
                "spec.group",
                format!("{:?}", self.group),
                "should be a domain with at least one dot",
            );
        } else if !is_dns_subdomain(&self.group) {
            invalid(
                "spec.group",
                format!("{:?}", self.group),
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            );
        }
        for (field, value) in [
            ("spec.names.plural", &self.names.plural),
            ("spec.names.singular", &self.names.singular),
        ] {
            if value.is_empty() {
                required.push(field.to_string());
            } else if !is_dns_label(value) {
                invalid(
                    field,
                    format!("{value:?}"),
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                );
            }
        }
        for (field, value) in [
            ("spec.names.kind", &self.names.kind),
            ("spec.names.listKind", &self.names.list_kind),
        ] {
            if value.is_empty() {
                required.push(field.to_string());
            } else if !is_kind_name(value) {
                invalid(
                    field,
                    format!("{value:?}"),
                    "may have mixed case, but should otherwise match: [a-z0-9]([-a-z0-9]*[a-z0-9])?",
                );
            }
        }
        if !self.names.kind.is_empty() && self.names.kind == self.names.list_kind {
            invalid(
                "spec.names.listKind",
                format!("{:?}", self.names.list_kind),
                "kind and listKind may not be the same",
            );
        }
        for (i, s) in self.names.short_names.iter().enumerate() {
            if !is_dns_label(s) {
                invalid(
                    &format!("spec.names.shortNames[{i}]"),
                    format!("{s:?}"),
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'",
                );
            }
        }
        for (i, s) in self.names.categories.iter().enumerate() {
            if !is_dns_label(s) {
                invalid(
                    &format!("spec.names.categories[{i}]"),
                    format!("{s:?}"),
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'",
                );
            }
        }
        if let Some(c) = &self.conversion {
            match c.strategy.as_str() {
                "None" => {}
                "Webhook" => errors.push(FieldError {
                    field: "spec.conversion.strategy".into(),
                    kind: ErrorType::Forbidden,
                    detail: "rkube does not call conversion webhooks yet: use strategy None (served versions differ only in apiVersion)".into(),
                }),
                other => errors.push(FieldError {
                    field: "spec.conversion.strategy".into(),
                    kind: ErrorType::NotSupported(vec!["None", "Webhook"]),
                    detail: format!("got {other:?}"),
                }),
            }
        }
        if self.scope.is_empty() {
            required.push("spec.scope".into());
        } else if !matches!(self.scope.as_str(), "Cluster" | "Namespaced") {
            errors.push(FieldError {
                field: "spec.scope".into(),
                kind: ErrorType::Unsupported {
                    value: format!("{:?}", self.scope),
                    supported: vec!["\"Cluster\"".into(), "\"Namespaced\"".into()],
                },
                detail: String::new(),
            });
        }
        if self.versions.is_empty() {
            errors.push(FieldError {
                field: "spec.versions".into(),
                kind: ErrorType::Invalid("null".into()),
                detail: "must have exactly one version marked as storage version".into(),
            });
        } else {
            let listed = format!(
                "[{}]",
                self.versions
                    .iter()
                    .map(|v| format!("{}{}", v.name, if v.storage { "(storage)" } else { "" }))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let storage = self.versions.iter().filter(|v| v.storage).count();
            if storage != 1 {
                errors.push(FieldError {
                    field: "spec.versions".into(),
                    kind: ErrorType::Invalid(listed.clone()),
                    detail: "must have exactly one version marked as storage version".into(),
                });
            }
            if !self.versions.iter().any(|v| v.served) {
                errors.push(FieldError {
                    field: "spec.versions".into(),
                    kind: ErrorType::Invalid(listed),
                    detail: "must have at least one version marked as served".into(),
                });
            }
        }
        for (i, v) in self.versions.iter().enumerate() {
            let path = format!("spec.versions[{i}]");
            if v.name.is_empty() {
                required.push(format!("{path}.name"));
            } else if !is_dns_label(&v.name) {
                errors.push(FieldError {
                    field: format!("{path}.name"),
                    kind: ErrorType::Invalid(format!("{:?}", v.name)),
                    detail: "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character".into(),
                });
            }
            if self.versions[..i].iter().any(|o| o.name == v.name) {
                errors.push(FieldError {
                    field: format!("{path}.name"),
                    kind: ErrorType::Duplicate(format!("{:?}", v.name)),
                    detail: String::new(),
                });
            }
            let schema_path = format!("{path}.schema.openAPIV3Schema");
            match v.schema.as_ref().map(|s| &s.open_api_v3_schema) {
                None | Some(Value::Null) => errors.push(FieldError {
                    field: schema_path,
                    kind: ErrorType::Required,
                    detail: "schemas are required".into(),
                }),
                Some(schema) => errors.extend(crate::schema::check(schema, &schema_path)),
            }
            if let Some(scale) = v.subresources.as_ref().and_then(|s| s.scale.as_ref()) {
                for (field, p) in [
                    ("specReplicasPath", Some(&scale.spec_replicas_path)),
                    ("statusReplicasPath", Some(&scale.status_replicas_path)),
                    ("labelSelectorPath", scale.label_selector_path.as_ref()),
                ] {
                    let Some(p) = p else { continue };
                    let field = format!("{path}.subresources.scale.{field}");
                    if p.is_empty() && field.ends_with("labelSelectorPath") {
                        continue;
                    }
                    if p.is_empty() {
                        required.push(field);
                    } else if !p.starts_with('.') || p.contains('[') {
                        errors.push(FieldError {
                            field,
                            kind: ErrorType::Invalid(format!("{p:?}")),
                            detail: "should be a json path under .spec or .status, as .spec.replicas".into(),
                        });
                    }
                }
            }
            for (j, c) in v.additional_printer_columns.iter().enumerate() {
                let cpath = format!("{path}.additionalPrinterColumns[{j}]");
                if c.name.is_empty() {
                    required.push(format!("{cpath}.name"));
                }
                if c.json_path.is_empty() {
                    required.push(format!("{cpath}.jsonPath"));
                } else if !c.json_path.starts_with('.') {
                    errors.push(FieldError {
                        field: format!("{cpath}.jsonPath"),
                        kind: ErrorType::Invalid(format!("{:?}", c.json_path)),
                        detail: "must be a simple json path starting with .".into(),
                    });
                }
                const TYPES: &[&str] = &["integer", "number", "string", "boolean", "date"];
                if !TYPES.contains(&c.type_.as_str()) {
                    errors.push(FieldError {
                        field: format!("{cpath}.type"),
                        kind: ErrorType::NotSupported(TYPES.to_vec()),
                        detail: format!("got {:?}", c.type_),
                    });
                }
            }
        }
        errors.extend(required.into_iter().map(|field| FieldError {
            field,
            kind: ErrorType::Required,
            detail: String::new(),
        }));
        errors
    }
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_kind_name(s: &str) -> bool {
    is_dns_label(&s.to_ascii_lowercase())
}

/// The value at a simple JSONPath (`.spec.replicas`, `.status.conditions[0].type`,
/// with `{}` around it or not), as `additionalPrinterColumns` and the scale
/// subresource address fields.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut cur = obj;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

/// Sets the value at a simple dotted path (`.spec.replicas`), creating objects on the way.
pub fn set_json_path(obj: &mut Value, path: &str, value: Value) {
    let parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
    let mut cur = obj;
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Default::default());
        }
        let map = cur.as_object_mut().expect("made an object above");
        if i + 1 == parts.len() {
            map.insert(part.to_string(), value);
            return;
        }
        cur = map
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "scope": "Namespaced",
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }],
            },
        })
    }

    fn errors(obj: &Value) -> Vec<String> {
        let mut spec = CrdSpec::from_object(obj).unwrap();
        spec.apply_defaults();
        spec.validate(obj["metadata"]["name"].as_str().unwrap())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_valid_crd_gets_kubernetes_defaults() {
        let mut spec = CrdSpec::from_object(&crd()).unwrap();
        spec.apply_defaults();
        assert_eq!(spec.names.singular, "widget");
        assert_eq!(spec.names.list_kind, "WidgetList");
        assert!(spec.validate("widgets.example.com").is_empty());
    }

    #[test]
    fn invalid_crds_are_refused_with_kubernetes_messages() {
        let mut c = crd();
        c["metadata"]["name"] = json!("widget.example.com");
        assert_eq!(
            errors(&c),
            [
                r#"metadata.name: Invalid value: "widget.example.com": must be spec.names.plural+"."+spec.group ("widgets.example.com")"#
            ]
        );
        let mut c = crd();
        c["spec"]["versions"][0]["storage"] = json!(false);
        assert_eq!(
            errors(&c),
            ["spec.versions: Invalid value: [v1]: must have exactly one version marked as storage version"]
        );
        let mut c = crd();
        c["spec"]["versions"][0]["schema"] = Value::Null;
        assert_eq!(
            errors(&c),
            ["spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required"]
        );
        let mut c = crd();
        c["spec"]["scope"] = json!("Global");
        assert_eq!(
            errors(&c),
            [r#"spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced""#]
        );
        let mut c = crd();
        c["spec"]["group"] = json!("example");
        c["metadata"]["name"] = json!("widgets.example");
        assert_eq!(
            errors(&c),
            [r#"spec.group: Invalid value: "example": should be a domain with at least one dot"#]
        );
        let mut c = crd();
        c["spec"]["names"]["kind"] = json!("");
        // singular is defaulted from kind, so it is missing too
        assert_eq!(
            errors(&c),
            [
                "spec.names.singular: Required value",
                "spec.names.kind: Required value",
                "spec.names.listKind: Required value"
            ]
        );
        let mut c = crd();
        c["spec"]["versions"][0]["served"] = json!(false);
        assert_eq!(
            errors(&c),
            ["spec.versions: Invalid value: [v1(storage)]: must have at least one version marked as served"]
        );
        let c = json!({"metadata": {"name": "x"}, "spec": {"versions": "v1"}});
        let e = CrdSpec::from_object(&c).unwrap_err();
        assert_eq!(e.field, "spec.versions");
    }

    #[test]
    fn json_paths_read_and_write_fields() {
        let mut obj = json!({"spec": {"replicas": 3}, "status": {"conditions": [{"type": "Ready"}]}});
        assert_eq!(json_path(&obj, ".spec.replicas"), Some(&json!(3)));
        assert_eq!(
            json_path(&obj, "{.status.conditions[0].type}"),
            Some(&json!("Ready"))
        );
        assert_eq!(json_path(&obj, ".status.replicas"), None);
        set_json_path(&mut obj, ".status.replicas", json!(2));
        assert_eq!(obj["status"]["replicas"], json!(2));
    }
}
