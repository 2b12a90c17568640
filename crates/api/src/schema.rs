//! The OpenAPI v3 schemas of CustomResourceDefinitions, as Kubernetes'
//! apiextensions-apiserver applies them to custom objects: defaulting
//! (`default`), pruning of fields the schema does not declare (unless
//! `x-kubernetes-preserve-unknown-fields`), and validation (types,
//! `required`, `enum`, bounds, lengths, `pattern`, `items`, `properties`,
//! `additionalProperties`), with Kubernetes' wording of each error; and the
//! structural-schema check of a CRD's schema itself.
//!
//! Schemas and objects are plain JSON (`serde_json::Value`): custom kinds
//! are known only at run time. Pure: no I/O.

use crate::validation::{ErrorType, FieldError};
use serde_json::Value;

/// The fields every object has whatever its schema says: never pruned at the root.
const ROOT_FIELDS: &[&str] = &["apiVersion", "kind", "metadata"];

/// The extension that keeps fields a schema does not declare.
pub const PRESERVE_UNKNOWN: &str = "x-kubernetes-preserve-unknown-fields";
const INT_OR_STRING: &str = "x-kubernetes-int-or-string";

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn preserves(schema: &Value) -> bool {
    schema[PRESERVE_UNKNOWN] == Value::Bool(true)
}

/// What `additionalProperties` says: a schema for every other key, or none.
fn additional(schema: &Value) -> Option<&Value> {
    match schema.get("additionalProperties") {
        Some(Value::Object(o)) if !o.is_empty() => schema.get("additionalProperties"),
        Some(Value::Bool(true)) => Some(&Value::Null),
        _ => None,
    }
}

/// Removes every field `schema` does not declare, as Kubernetes prunes custom
/// objects; each removal is a warning worded as Kubernetes' (`unknown field
/// "spec.foo"`). At the root, apiVersion, kind and metadata stay.
pub fn prune(obj: &mut Value, schema: &Value, warnings: &mut Vec<String>) {
    prune_at(obj, schema, "", true, warnings);
}

fn prune_at(obj: &mut Value, schema: &Value, path: &str, root: bool, warnings: &mut Vec<String>) {
    match obj {
        Value::Object(fields) => {
            if preserves(schema) && schema.get("properties").is_none() {
                return;
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let extra = additional(schema);
            let names: Vec<String> = fields.keys().cloned().collect();
            for name in names {
                if root && ROOT_FIELDS.contains(&name.as_str()) {
                    continue;
                }
                let child = join(path, &name);
                match properties.and_then(|p| p.get(&name)).or(extra) {
                    Some(sub) => {
                        if let Some(v) = fields.get_mut(&name) {
                            prune_at(v, sub, &child, false, warnings);
                        }
                    }
                    None if preserves(schema) => {}
                    None => {
                        fields.remove(&name);
                        warnings.push(format!("unknown field {child:?}"));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_at(item, sub, &format!("{path}[{i}]"), false, warnings);
                }
            }
        }
        _ => {}
    }
}

/// Fills in the `default` of every field that is absent, where its parent
/// is present (and the defaults of objects just defaulted), as Kubernetes
/// does when it reads or writes a custom object.
pub fn apply_defaults(obj: &mut Value, schema: &Value) {
    match obj {
        Value::Object(fields) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, sub) in properties {
                    if !fields.contains_key(name) {
                        if let Some(default) = sub.get("default") {
                            fields.insert(name.clone(), default.clone());
                        }
                    }
                    if let Some(v) = fields.get_mut(name) {
                        apply_defaults(v, sub);
                    }
                }
            }
            if let Some(extra) = additional(schema).filter(|s| !s.is_null()) {
                let declared = schema.get("properties").and_then(Value::as_object);
                for (name, v) in fields.iter_mut() {
                    if declared.is_none_or(|d| !d.contains_key(name)) {
                        apply_defaults(v, extra);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for item in items {
                    apply_defaults(item, sub);
                }
            }
        }
        _ => {}
    }
}

/// Go's `%v` of a JSON value, as Kubernetes prints the value in `Invalid value: ...`.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn invalid(field: &str, value: &Value, detail: String) -> FieldError {
    FieldError {
        field: field.to_string(),
        kind: ErrorType::Invalid(shown(value)),
        detail,
    }
}

/// Every way `obj` breaks `schema`, each as Kubernetes words it
/// (`spec.replicas: Invalid value: 0: spec.replicas in body should be
/// greater than or equal to 1`). At the root, apiVersion, kind and metadata
/// are not the schema's business.
pub fn validate(obj: &Value, schema: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    validate_at(obj, schema, "", true, &mut errors);
    errors
}

fn validate_at(v: &Value, schema: &Value, path: &str, root: bool, errors: &mut Vec<FieldError>) {
    let here = if path.is_empty() { "<root>" } else { path };
    if v.is_null() {
        if schema["nullable"] == Value::Bool(true) {
            return;
        }
        // Kubernetes drops nulls of non-nullable fields before validating
        // (pruning them); a null at the root is a malformed object
        if root {
            errors.push(invalid(
                here,
                v,
                format!("{here} in body must be of type object: \"null\""),
            ));
        }
        return;
    }
    let declared = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let actual = type_of(v);
    let int_or_string = schema[INT_OR_STRING] == Value::Bool(true);
    if int_or_string {
        if !matches!(actual, "integer" | "string") {
            errors.push(invalid(
                here,
                v,
                format!("{here} in body must be of type integer or string: {actual:?}"),
            ));
            return;
        }
    } else if !declared.is_empty() && declared != actual && !(declared == "number" && actual == "integer") {
        errors.push(invalid(
            here,
            v,
            format!("{here} in body must be of type {declared}: {actual:?}"),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.iter().any(|a| a == v) {
            errors.push(FieldError {
                field: here.to_string(),
                kind: ErrorType::Unsupported {
                    value: shown(v),
                    supported: allowed.iter().map(shown).collect(),
                },
                detail: String::new(),
            });
        }
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let bound = |k: &str| schema.get(k).and_then(Value::as_f64);
            let exclusive = |k: &str| schema[k] == Value::Bool(true);
            let num = |f: f64| Value::from(f).to_string().trim_end_matches(".0").to_string();
            if let Some(min) = bound("minimum") {
                if exclusive("exclusiveMinimum") && x <= min {
                    errors.push(invalid(
                        here,
                        v,
                        format!("{here} in body should be greater than {}", num(min)),
                    ));
                } else if x < min {
                    errors.push(invalid(
                        here,
                        v,
                        format!("{here} in body should be greater than or equal to {}", num(min)),
                    ));
                }
            }
            if let Some(max) = bound("maximum") {
                if exclusive("exclusiveMaximum") && x >= max {
                    errors.push(invalid(
                        here,
                        v,
                        format!("{here} in body should be less than {}", num(max)),
                    ));
                } else if x > max {
                    errors.push(invalid(
                        here,
                        v,
                        format!("{here} in body should be less than or equal to {}", num(max)),
                    ));
                }
            }
            if let Some(m) = bound("multipleOf").filter(|m| *m > 0.0) {
                if (x / m).fract() != 0.0 {
                    errors.push(invalid(
                        here,
                        v,
                        format!("{here} in body should be a multiple of {}", num(m)),
                    ));
                }
            }
        }
        Value::String(s) => {
            let chars = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
                if chars < min {
                    errors.push(invalid(
                        here,
                        v,
                        format!("{here} in body should be at least {min} chars long"),
                    ));
                }
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                if chars > max {
                    errors.push(FieldError {
                        field: here.to_string(),
                        kind: ErrorType::TooLong,
                        detail: format!("may not be more than {max} bytes"),
                    });
                }
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                // the CRD's schema was checked when it was written: a pattern that does
                // not compile here cannot occur, and matches nothing if it did
                let matched = regex::Regex::new(pattern).is_ok_and(|re| re.is_match(s));
                if !matched {
                    errors.push(invalid(
                        here,
                        v,
                        format!("{here} in body should match '{pattern}'"),
                    ));
                }
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if n < min {
                    errors.push(invalid(
                        here,
                        v,
                        format!("{here} in body should have at least {min} items"),
                    ));
                }
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                if n > max {
                    errors.push(FieldError {
                        field: here.to_string(),
                        kind: ErrorType::TooMany(max),
                        detail: String::new(),
                    });
                }
            }
            if schema["uniqueItems"] == Value::Bool(true) {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        errors.push(FieldError {
                            field: format!("{path}[{i}]"),
                            kind: ErrorType::Duplicate(shown(item)),
                            detail: String::new(),
                        });
                    }
                }
            }
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_at(item, sub, &format!("{path}[{i}]"), false, errors);
                }
            }
        }
        Value::Object(fields) => {
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if fields.get(name).is_none_or(Value::is_null) {
                    errors.push(FieldError {
                        field: join(path, name),
                        kind: ErrorType::Required,
                        detail: String::new(),
                    });
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let extra = additional(schema).filter(|s| !s.is_null());
            for (name, child) in fields {
                if root && ROOT_FIELDS.contains(&name.as_str()) {
                    continue;
                }
                if let Some(sub) = properties.and_then(|p| p.get(name)).or(extra) {
                    validate_at(child, sub, &join(path, name), false, errors);
                }
            }
        }
        _ => {}
    }
}

/// The problems that make `schema` (a CRD version's `openAPIV3Schema`, at
/// `path`) unusable, worded as Kubernetes words them: it must be structural
/// (a type for every field, object at the root), and its patterns,
/// bounds and defaults must make sense.
pub fn check(schema: &Value, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {}
        None if preserves(schema) => {}
        None => errors.push(FieldError {
            field: format!("{path}.type"),
            kind: ErrorType::Required,
            detail: "must not be empty at the root".into(),
        }),
        Some(other) => errors.push(FieldError {
            field: format!("{path}.type"),
            kind: ErrorType::Invalid(format!("{other:?}")),
            detail: "must be object at the root".into(),
        }),
    }
    check_at(schema, path, true, &mut errors);
    errors
}

const TYPES: &[&str] = &["object", "array", "string", "integer", "number", "boolean"];

fn check_at(schema: &Value, path: &str, root: bool, errors: &mut Vec<FieldError>) {
    let Some(fields) = schema.as_object() else {
        errors.push(FieldError {
            field: path.to_string(),
            kind: ErrorType::Invalid(shown(schema)),
            detail: "must be a JSON schema object".into(),
        });
        return;
    };
    let ty = fields.get("type").and_then(Value::as_str);
    match (ty, fields.get("type")) {
        (None, Some(other)) => errors.push(FieldError {
            field: format!("{path}.type"),
            kind: ErrorType::Invalid(shown(other)),
            detail: "must be a string".into(),
        }),
        (Some(t), _) if !TYPES.contains(&t) => errors.push(FieldError {
            field: format!("{path}.type"),
            kind: ErrorType::Unsupported {
                value: format!("{t:?}"),
                supported: TYPES.iter().map(|t| format!("{t:?}")).collect(),
            },
            detail: String::new(),
        }),
        (None, None) if !root && !preserves(schema) && schema[INT_OR_STRING] != Value::Bool(true) => errors
            .push(FieldError {
                field: format!("{path}.type"),
                kind: ErrorType::Required,
                detail: "must not be empty for specified object fields".into(),
            }),
        _ => {}
    }
    for unsupported in ["$ref", "not", "anyOf", "oneOf", "allOf"] {
        if fields.contains_key(unsupported) && root {
            // Kubernetes allows these only as value validations; rkube does not enforce them
            errors.push(FieldError {
                field: format!("{path}.{unsupported}"),
                kind: ErrorType::Forbidden,
                detail: "rkube does not support this keyword yet; express the constraint with type, enum, pattern and bounds".into(),
            });
        }
    }
    if let Some(pattern) = fields.get("pattern") {
        match pattern.as_str().map(regex::Regex::new) {
            Some(Ok(_)) => {}
            _ => errors.push(FieldError {
                field: format!("{path}.pattern"),
                kind: ErrorType::Invalid(shown(pattern)),
                detail: "must be a valid regular expression".into(),
            }),
        }
    }
    for bound in ["minimum", "maximum", "multipleOf"] {
        if let Some(b) = fields.get(bound) {
            if !b.is_number() {
                errors.push(FieldError {
                    field: format!("{path}.{bound}"),
                    kind: ErrorType::Invalid(shown(b)),
                    detail: "must be a number".into(),
                });
            }
        }
    }
    for count in [
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
    ] {
        if let Some(c) = fields.get(count) {
            if !c.is_u64() {
                errors.push(FieldError {
                    field: format!("{path}.{count}"),
                    kind: ErrorType::Invalid(shown(c)),
                    detail: "must be a non-negative integer".into(),
                });
            }
        }
    }
    if let Some(required) = fields.get("required") {
        if !required
            .as_array()
            .is_some_and(|r| r.iter().all(Value::is_string))
        {
            errors.push(FieldError {
                field: format!("{path}.required"),
                kind: ErrorType::Invalid(shown(required)),
                detail: "must be a list of field names".into(),
            });
        }
    }
    if let Some(values) = fields.get("enum") {
        if !values.is_array() {
            errors.push(FieldError {
                field: format!("{path}.enum"),
                kind: ErrorType::Invalid(shown(values)),
                detail: "must be a list of values".into(),
            });
        }
    }
    if ty == Some("array") && !fields.contains_key("items") {
        errors.push(FieldError {
            field: format!("{path}.items"),
            kind: ErrorType::Required,
            detail: "must be specified".into(),
        });
    }
    if let Some(props) = fields.get("properties") {
        match props.as_object() {
            Some(props) => {
                if fields.contains_key("additionalProperties")
                    && fields["additionalProperties"] != Value::Bool(false)
                {
                    errors.push(FieldError {
                        field: format!("{path}.additionalProperties"),
                        kind: ErrorType::Forbidden,
                        detail: "additionalProperties and properties are mutual exclusive".into(),
                    });
                }
                for (name, sub) in props {
                    check_at(sub, &format!("{path}.properties[{name}]"), false, errors);
                }
            }
            None => errors.push(FieldError {
                field: format!("{path}.properties"),
                kind: ErrorType::Invalid(shown(props)),
                detail: "must be an object of field schemas".into(),
            }),
        }
    }
    if let Some(items) = fields.get("items") {
        check_at(items, &format!("{path}.items"), false, errors);
    }
    if let Some(extra @ Value::Object(_)) = fields.get("additionalProperties") {
        check_at(extra, &format!("{path}.additionalProperties"), false, errors);
    }
    if let Some(default) = fields.get("default") {
        let mut d = default.clone();
        let mut ignored = Vec::new();
        prune_at(&mut d, schema, path, false, &mut ignored);
        if !ignored.is_empty() || validate_value(&d, schema).is_some() {
            errors.push(FieldError {
                field: format!("{path}.default"),
                kind: ErrorType::Invalid(shown(default)),
                detail: validate_value(default, schema)
                    .unwrap_or_else(|| "must not have fields the schema does not declare".into()),
            });
        }
    }
}

/// The first problem of a default value under its own schema.
fn validate_value(v: &Value, schema: &Value) -> Option<String> {
    let mut errors = Vec::new();
    validate_at(v, schema, "", false, &mut errors);
    errors.first().map(ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn widget_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "minLength": 1, "pattern": "^[a-z0-9./:-]+$"},
                        "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                        "size": {"type": "string", "enum": ["small", "large"]},
                        "name": {"type": "string", "maxLength": 5},
                        "ports": {"type": "array", "items": {"type": "integer"}},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
                "status": {"type": "object", "properties": {"ready": {"type": "integer"}}},
            },
        })
    }

    fn messages(obj: &Value) -> Vec<String> {
        validate(obj, &widget_schema())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn errors_are_worded_as_kubernetes_words_them() {
        let m = messages(&json!({"spec": {"image": "nginx", "replicas": 0}}));
        assert_eq!(
            m,
            ["spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1"]
        );
        let m = messages(&json!({"spec": {"image": "nginx", "replicas": 11}}));
        assert_eq!(
            m,
            ["spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"]
        );
        let m = messages(&json!({"spec": {"image": "nginx", "replicas": "two"}}));
        assert_eq!(
            m,
            [
                r#"spec.replicas: Invalid value: "two": spec.replicas in body must be of type integer: "string""#
            ]
        );
        let m = messages(&json!({"spec": {"replicas": 2}}));
        assert_eq!(m, ["spec.image: Required value"]);
        let m = messages(&json!({"spec": {"image": "nginx", "size": "huge"}}));
        assert_eq!(
            m,
            [r#"spec.size: Unsupported value: "huge": supported values: "small", "large""#]
        );
        let m = messages(&json!({"spec": {"image": "NGINX"}}));
        assert_eq!(
            m,
            [r#"spec.image: Invalid value: "NGINX": spec.image in body should match '^[a-z0-9./:-]+$'"#]
        );
        let m = messages(&json!({"spec": {"image": ""}}));
        assert!(
            m.contains(
                &r#"spec.image: Invalid value: "": spec.image in body should be at least 1 chars long"#
                    .to_string()
            ),
            "{m:?}"
        );
        let m = messages(&json!({"spec": {"image": "a", "name": "toolong"}}));
        assert_eq!(m, ["spec.name: Too long: may not be more than 5 bytes"]);
        let m = messages(&json!({"spec": {"image": "a", "ports": [80, "http"]}}));
        assert_eq!(
            m,
            [
                r#"spec.ports[1]: Invalid value: "http": spec.ports[1] in body must be of type integer: "string""#
            ]
        );
        let m = messages(&json!({"spec": {"image": "a", "labels": {"a": 1}}}));
        assert_eq!(
            m,
            [r#"spec.labels.a: Invalid value: 1: spec.labels.a in body must be of type string: "integer""#]
        );
        assert!(
            messages(&json!({"spec": {"image": "nginx:1.27", "replicas": 3, "size": "small"}})).is_empty()
        );
        // apiVersion, kind and metadata are not the schema's
        assert!(messages(
            &json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"}, "spec": {"image": "a"}})
        )
        .is_empty());
    }

    #[test]
    fn pruning_drops_undeclared_fields_with_a_warning_and_keeps_preserved_ones() {
        let mut obj = json!({
            "apiVersion": "x/v1", "kind": "Widget", "metadata": {"name": "a"},
            "spec": {"image": "a", "foo": 1, "extra": {"anything": {"goes": true}}, "ports": [1]},
            "top": true,
        });
        let mut warnings = Vec::new();
        prune(&mut obj, &widget_schema(), &mut warnings);
        assert_eq!(
            warnings,
            [r#"unknown field "spec.foo""#, r#"unknown field "top""#]
        );
        assert_eq!(
            obj,
            json!({
                "apiVersion": "x/v1", "kind": "Widget", "metadata": {"name": "a"},
                "spec": {"image": "a", "extra": {"anything": {"goes": true}}, "ports": [1]},
            })
        );
    }

    #[test]
    fn defaults_fill_absent_fields_under_present_parents() {
        let mut obj = json!({"spec": {"image": "a"}});
        apply_defaults(&mut obj, &widget_schema());
        assert_eq!(obj["spec"]["replicas"], json!(1));
        let mut obj = json!({"spec": {"image": "a", "replicas": 4}});
        apply_defaults(&mut obj, &widget_schema());
        assert_eq!(obj["spec"]["replicas"], json!(4));
        // no spec, no spec.replicas
        let mut obj = json!({});
        apply_defaults(&mut obj, &widget_schema());
        assert_eq!(obj, json!({}));
    }

    #[test]
    fn schemas_that_are_not_structural_are_refused() {
        let path = "spec.versions[0].schema.openAPIV3Schema";
        assert!(check(&widget_schema(), path).is_empty());
        let errs: Vec<String> = check(
            &json!({"type": "object", "properties": {"spec": {"properties": {}}}}),
            path,
        )
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            errs,
            ["spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields"]
        );
        let errs: Vec<String> = check(&json!({"type": "array", "items": {"type": "string"}}), path)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            [
                r#"spec.versions[0].schema.openAPIV3Schema.type: Invalid value: "array": must be object at the root"#
            ]
        );
        let errs = check(
            &json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}}),
            path,
        );
        assert_eq!(errs[0].field, format!("{path}.properties[a].pattern"));
        let errs = check(
            &json!({"type": "object", "properties": {"a": {"type": "integer", "minimum": 1, "default": 0}}}),
            path,
        );
        assert_eq!(errs[0].field, format!("{path}.properties[a].default"));
        let errs = check(
            &json!({"type": "object", "properties": {"a": {"type": "strin"}}}),
            path,
        );
        assert_eq!(errs[0].field, format!("{path}.properties[a].type"));
        let errs = check(
            &json!({"type": "object", "properties": {"a": {"type": "array"}}}),
            path,
        );
        assert_eq!(
            errs[0].to_string(),
            format!("{path}.properties[a].items: Required value: must be specified")
        );
    }
}
