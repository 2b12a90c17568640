//! The OpenAPI v3 schemas of the kinds, generated from `proto/` (the
//! descriptors with their comments that the api crate's build script
//! writes), so `kubectl explain` has fields, types and descriptions and
//! client-side `kubectl apply` computes its strategic merge patches from
//! them. One schema per message, named as Kubernetes names its types
//! (`io.k8s.api.core.v1.Pod`, `io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`),
//! fields under their JSON names (pbjson's lowerCamelCase or the proto's
//! `json_name`), messages by `$ref`, comments as descriptions.
//!
//! The list extensions (`x-kubernetes-patch-merge-key`,
//! `x-kubernetes-patch-strategy`) come from the strategic merge patch's own
//! table ([`patch::merge_key`]): kubectl 1.32 builds its patch from them
//! once a kind's schema carries `x-kubernetes-group-version-kind`, and the
//! server merges by the same keys. A message shared by several kinds (a
//! PodSpec) gets them when every kind reaching it agrees, which
//! [`patch_conflicts`] checks.

use super::patch;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use rkube_api::{ResourceInfo, FILE_DESCRIPTOR_SET, KINDS};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

/// A proto message with its comments.
struct Msg {
    desc: DescriptorProto,
    comment: String,
    /// One per field, in the descriptor's order ("" when none).
    field_comments: Vec<String>,
}

/// Every message of `proto/`, by full name with the leading dot
/// (`.rkube.core.v1.Pod`), as field type names spell them.
struct Protos {
    messages: HashMap<String, Msg>,
}

impl Protos {
    fn load() -> Protos {
        let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
            .expect("the build script writes a valid descriptor set");
        let mut messages = HashMap::new();
        for file in set.file {
            let comments: HashMap<Vec<i32>, String> = file
                .source_code_info
                .iter()
                .flat_map(|info| &info.location)
                .filter_map(|l| {
                    let text = l.leading_comments.as_deref().or(l.trailing_comments.as_deref())?;
                    Some((l.path.clone(), description(text)))
                })
                .collect();
            let package = format!(".{}", file.package());
            for (i, m) in file.message_type.into_iter().enumerate() {
                add_message(&mut messages, &comments, &package, vec![4, i as i32], m);
            }
        }
        Protos { messages }
    }

    fn get(&self, full: &str) -> &Msg {
        self.messages
            .get(full)
            .unwrap_or_else(|| panic!("{full} is not in the descriptor set"))
    }

    fn is_map(&self, f: &FieldDescriptorProto) -> bool {
        f.r#type() == Type::Message
            && f.label() == Label::Repeated
            && self
                .messages
                .get(f.type_name())
                .is_some_and(|m| m.desc.options.as_ref().is_some_and(|o| o.map_entry()))
    }

    /// The message types `full`'s fields refer to (map values included).
    fn references(&self, full: &str) -> Vec<String> {
        self.get(full)
            .desc
            .field
            .iter()
            .filter(|f| f.r#type() == Type::Message)
            .flat_map(|f| {
                if self.is_map(f) {
                    self.references(f.type_name())
                } else {
                    vec![f.type_name().to_string()]
                }
            })
            .collect()
    }
}

fn add_message(
    messages: &mut HashMap<String, Msg>,
    comments: &HashMap<Vec<i32>, String>,
    scope: &str,
    path: Vec<i32>,
    m: DescriptorProto,
) {
    let full = format!("{scope}.{}", m.name());
    let comment = comments.get(&path).cloned().unwrap_or_default();
    let field_comments = (0..m.field.len())
        .map(|j| {
            let mut p = path.clone();
            p.extend([2, j as i32]);
            comments.get(&p).cloned().unwrap_or_default()
        })
        .collect();
    for (k, nested) in m.nested_type.iter().enumerate() {
        let mut p = path.clone();
        p.extend([3, k as i32]);
        add_message(messages, comments, &full, p, nested.clone());
    }
    messages.insert(
        full,
        Msg {
            desc: m,
            comment,
            field_comments,
        },
    );
}

/// A proto comment as a description: wrapped lines joined, paragraphs kept.
fn description(comment: &str) -> String {
    let mut paragraphs: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in comment.lines().map(str::trim) {
        if line.is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
            continue;
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(line);
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    paragraphs.join("\n\n")
}

/// The Kubernetes name of a message's schema.
pub fn schema_name(full: &str) -> String {
    let full = full.trim_start_matches('.');
    match full {
        "rkube.meta.v1.IntOrString" => "io.k8s.apimachinery.pkg.util.intstr.IntOrString".into(),
        "rkube.meta.v1.Quantity" => "io.k8s.apimachinery.pkg.api.resource.Quantity".into(),
        "rkube.meta.v1.RawExtension" => "io.k8s.apimachinery.pkg.runtime.RawExtension".into(),
        _ => match (full.strip_prefix("rkube.meta."), full.strip_prefix("rkube.")) {
            (Some(meta), _) => format!("io.k8s.apimachinery.pkg.apis.meta.{meta}"),
            (None, Some(api)) => format!("io.k8s.api.{api}"),
            (None, None) => full.to_string(),
        },
    }
}

fn reference(full: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", schema_name(full))})
}

/// Times are RFC 3339 strings in rkube's protos, named as Kubernetes names
/// its `metav1.Time` fields.
fn is_time(f: &FieldDescriptorProto) -> bool {
    let name = f.name();
    f.r#type() == Type::String
        && (name.ends_with("_time")
            || name.ends_with("_timestamp")
            || name.ends_with("_at")
            || name == "time_added")
}

/// Descriptions of the fields every object has, where the proto says
/// nothing: `top` is whether the message is a kind's.
fn standard_description(json_name: &str, top: bool) -> Option<&'static str> {
    Some(match (json_name, top) {
        ("apiVersion", true) => {
            "The version of the schema this object follows: `group/version`, or `v1` for the \
             core group. The server converts what it is sent to the version it stores."
        }
        ("kind", true) => "The kind of object, in CamelCase (`Pod`, `Deployment`).",
        ("status", true) => {
            "What the system last observed of this object, written by the server and the \
             controllers; a client's changes to it go through the status subresource."
        }
        ("metadata", _) => {
            "Standard object metadata: name, namespace, labels, annotations, owners and \
             finalizers, and what the server sets (uid, resourceVersion, generation, \
             creationTimestamp)."
        }
        ("spec", _) => "What the user wants this object to be.",
        _ => return None,
    })
}

/// The schema of one value of field `f` (an array item or a map value
/// for repeated fields and maps).
fn value_schema(f: &FieldDescriptorProto) -> Value {
    match f.r#type() {
        Type::Message | Type::Group => reference(f.type_name()),
        Type::String if is_time(f) => {
            json!({"type": "string", "format": "date-time", "nullable": true})
        }
        Type::String | Type::Enum => json!({"type": "string"}),
        Type::Bytes => json!({"type": "string", "format": "byte"}),
        Type::Bool => json!({"type": "boolean"}),
        Type::Double => json!({"type": "number", "format": "double"}),
        Type::Float => json!({"type": "number", "format": "float"}),
        Type::Int64 | Type::Sint64 | Type::Sfixed64 | Type::Uint64 | Type::Fixed64 => {
            json!({"type": "integer", "format": "int64"})
        }
        Type::Int32 | Type::Sint32 | Type::Sfixed32 | Type::Uint32 | Type::Fixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
    }
}

impl Protos {
    fn field_schema(&self, f: &FieldDescriptorProto) -> Value {
        if self.is_map(f) {
            let entry = &self.get(f.type_name()).desc;
            let value = entry.field.iter().find(|v| v.number() == 2).expect("map value");
            return json!({"type": "object", "additionalProperties": value_schema(value)});
        }
        if f.label() == Label::Repeated {
            return json!({"type": "array", "items": value_schema(f)});
        }
        match value_schema(f) {
            // a $ref's siblings are ignored in OpenAPI 3.0, so it goes
            // under allOf where the field's own description can stand beside it
            r if r.get("$ref").is_some() => json!({"allOf": [r]}),
            other => other,
        }
    }

    /// The schema of message `full`, without the patch extensions.
    fn message_schema(&self, full: &str, top: bool) -> Value {
        let msg = self.get(full);
        let mut schema = match full {
            ".rkube.meta.v1.IntOrString" => json!({
                "oneOf": [{"type": "integer"}, {"type": "string"}],
                "format": "int-or-string",
                "x-kubernetes-int-or-string": true,
            }),
            ".rkube.meta.v1.Quantity" => json!({
                "oneOf": [{"type": "string"}, {"type": "number"}],
                "x-kubernetes-int-or-string": true,
            }),
            // embedded JSON of any shape (a ControllerRevision's data)
            ".rkube.meta.v1.RawExtension" => json!({
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
            }),
            _ => {
                let mut properties = Map::new();
                for (f, comment) in msg.desc.field.iter().zip(&msg.field_comments) {
                    let mut field = self.field_schema(f);
                    let text = if comment.is_empty() {
                        standard_description(f.json_name(), top).unwrap_or("")
                    } else {
                        comment
                    };
                    if !text.is_empty() {
                        field["description"] = json!(text);
                    }
                    properties.insert(f.json_name().to_string(), field);
                }
                json!({"type": "object", "properties": properties})
            }
        };
        if !msg.comment.is_empty() {
            schema["description"] = json!(msg.comment);
        }
        schema
    }
}

/// How a list is patched, as one kind's strategic merge sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ListPatch {
    /// The patch's list replaces the object's.
    Replace,
    /// Items are merged by this key.
    MergeBy(&'static str),
    /// A list of scalars merged as a set.
    MergeSet,
}

/// What each kind's strategic merge does with each list field, by
/// (schema name, JSON field name).
type ListPatches = BTreeMap<(String, String), BTreeMap<ListPatch, Vec<&'static str>>>;

/// Walks a kind's messages from its root, asking the patch table about
/// every list on the way (paths as [`patch::merge_key`] spells them).
fn walk_lists(
    protos: &Protos,
    kind: &'static str,
    full: &str,
    path: &str,
    stack: &mut Vec<String>,
    out: &mut ListPatches,
) {
    if stack.iter().any(|s| s == full) {
        return;
    }
    stack.push(full.to_string());
    for f in &protos.get(full).desc.field {
        if protos.is_map(f) {
            continue;
        }
        let at = if path.is_empty() {
            f.json_name().to_string()
        } else {
            format!("{path}.{}", f.json_name())
        };
        if f.label() == Label::Repeated {
            let how = match patch::merge_key(kind, &at) {
                Some(key) => ListPatch::MergeBy(key),
                None if patch::merges_primitives(&at) => ListPatch::MergeSet,
                None => ListPatch::Replace,
            };
            let kinds = out
                .entry((schema_name(full), f.json_name().to_string()))
                .or_default()
                .entry(how)
                .or_default();
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
            if f.r#type() == Type::Message {
                walk_lists(protos, kind, f.type_name(), &format!("{at}[]"), stack, out);
            }
        } else if f.r#type() == Type::Message {
            walk_lists(protos, kind, f.type_name(), &at, stack, out);
        }
    }
    stack.pop();
}

/// Lists Kubernetes patches with `$retainKeys` too (schema, field): a
/// volume or a deployment strategy changing its source or type drops the
/// old one's fields.
const RETAIN_KEYS: &[(&str, &str)] = &[
    ("io.k8s.api.core.v1.PodSpec", "volumes"),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy"),
];

/// Every kind's schemas and each group-version's document, built once.
struct Generated {
    schemas: BTreeMap<String, Value>,
    list_patches: ListPatches,
    /// Schema names each group-version's document holds.
    closure: BTreeMap<(&'static str, &'static str), BTreeSet<String>>,
}

fn root_message(info: &ResourceInfo) -> String {
    format!(".{}", info.type_url.trim_start_matches("type.googleapis.com/"))
}

fn generate() -> Generated {
    let protos = Protos::load();
    let mut schemas = BTreeMap::new();
    let mut list_patches = ListPatches::new();
    let mut closure: BTreeMap<(&str, &str), BTreeSet<String>> = BTreeMap::new();
    for info in KINDS {
        let root = root_message(info);
        walk_lists(&protos, info.kind, &root, "", &mut Vec::new(), &mut list_patches);
        let names = closure.entry((info.group, info.version)).or_default();
        let mut todo = vec![root.clone()];
        while let Some(full) = todo.pop() {
            if names.insert(schema_name(&full)) {
                schemas
                    .entry(schema_name(&full))
                    .or_insert_with(|| protos.message_schema(&full, false));
                todo.extend(protos.references(&full));
            }
        }
        let mut top = protos.message_schema(&root, true);
        top["x-kubernetes-group-version-kind"] =
            json!([{"group": info.group, "version": info.version, "kind": info.kind}]);
        schemas.insert(schema_name(&root), top);
    }
    for ((schema, field), hows) in &list_patches {
        let Some(property) = property_mut(&mut schemas, schema, field) else {
            continue;
        };
        // kinds sharing a list agree on it (patch_conflicts is tested
        // empty); were they not to, the list would say it merges
        let how = hows.keys().max().copied().unwrap_or(ListPatch::Replace);
        let retain = RETAIN_KEYS.contains(&(schema.as_str(), field.as_str()));
        match how {
            ListPatch::MergeBy(key) => {
                property["x-kubernetes-patch-merge-key"] = json!(key);
                property["x-kubernetes-patch-strategy"] =
                    json!(if retain { "merge,retainKeys" } else { "merge" });
                property["x-kubernetes-list-type"] = json!("map");
                property["x-kubernetes-list-map-keys"] = json!([key]);
            }
            ListPatch::MergeSet => {
                property["x-kubernetes-patch-strategy"] = json!("merge");
                property["x-kubernetes-list-type"] = json!("set");
            }
            // replaced whole by every patch: what Kubernetes calls atomic
            ListPatch::Replace => property["x-kubernetes-list-type"] = json!("atomic"),
        }
    }
    for (schema, field) in RETAIN_KEYS {
        if let Some(property) = property_mut(&mut schemas, schema, field) {
            if property.get("x-kubernetes-patch-strategy").is_none() {
                property["x-kubernetes-patch-strategy"] = json!("retainKeys");
            }
        }
    }
    Generated {
        schemas,
        list_patches,
        closure,
    }
}

fn property_mut<'a>(
    schemas: &'a mut BTreeMap<String, Value>,
    schema: &str,
    field: &str,
) -> Option<&'a mut Value> {
    schemas.get_mut(schema)?.get_mut("properties")?.get_mut(field)
}

fn generated() -> &'static Generated {
    static GENERATED: OnceLock<Generated> = OnceLock::new();
    GENERATED.get_or_init(generate)
}

/// The `components.schemas` of a group-version's document: its kinds'
/// schemas and every schema they refer to; None if no kind is served there.
pub fn schemas(group: &str, version: &str) -> Option<Map<String, Value>> {
    let g = generated();
    let names = g
        .closure
        .iter()
        .find(|((gr, v), _)| *gr == group && *v == version)?
        .1;
    Some(names.iter().map(|n| (n.clone(), g.schemas[n].clone())).collect())
}

/// The schema name of a kind's objects.
pub fn kind_schema_name(info: &ResourceInfo) -> String {
    schema_name(&root_message(info))
}

/// Lists whose strategic merge differs between the kinds that share
/// their message: "schema.field: kind merges by key, kind replaces".
/// Such a list's schema cannot say how every kind merges it; the fix is
/// in patch.rs's table.
pub fn patch_conflicts() -> Vec<String> {
    generated()
        .list_patches
        .iter()
        .filter(|(_, hows)| hows.len() > 1)
        .map(|((schema, field), hows)| {
            let said: Vec<String> = hows
                .iter()
                .map(|(how, kinds)| format!("{} {how:?}", kinds.join("/")))
                .collect();
            format!("{schema}.{field}: {}", said.join(", "))
        })
        .collect()
}
