//! Field managers and server-side apply: which client owns which fields of
//! an object (`metadata.managedFields`), how a write moves ownership, and
//! how an applied configuration is merged (conflicts, force, and removal of
//! the fields a manager stops applying), as Kubernetes' structured-merge-diff
//! does it, over the objects' Kubernetes JSON.
//!
//! Field sets are computed from the JSON: objects are granular (every key is
//! a field), lists merge by the merge keys of `rest::patch` (items are
//! `k:{"name":"x"}`), `metadata.finalizers` is a set (`v:"x"`), every other
//! list is atomic (owned as a whole). Only writes that name a field manager
//! are tracked ([`Tracking`]): every REST write does (the `fieldManager`
//! parameter, or the client's user agent), gRPC writes only when they send
//! the [`MANAGER_HEADER`], so the controllers' gRPC writes pay nothing
//! beyond keeping the entries they do not touch.
//!
//! One file of about 900 lines, half of it unit tests: the set computation,
//! its fieldsV1 encoding and the two algorithms over it read best together.

use crate::error::{ApiError, ApiResult};
use rkube_api::meta::v1::{ManagedFieldsEntry, StatusCause};
use rkube_api::raw::RawExtension;
use rkube_api::{Resource, ResourceInfo};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The gRPC metadata naming a write's field manager.
pub const MANAGER_HEADER: &str = "x-rkube-field-manager";
/// The gRPC metadata saying an apply takes fields from other managers.
pub const FORCE_HEADER: &str = "x-rkube-force";

/// Who a write is on behalf of, as the handlers see it.
#[derive(Debug, Clone, Default)]
pub struct Writer {
    /// The field manager; empty: the write is not tracked.
    pub manager: String,
    /// An apply that takes conflicting fields instead of failing.
    pub force: bool,
}

impl Writer {
    /// The writer named by a gRPC request's metadata.
    pub fn of<T>(req: &tonic::Request<T>) -> Writer {
        let get = |name| {
            req.metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        Writer {
            manager: get(MANAGER_HEADER),
            force: get(FORCE_HEADER) == "true",
        }
    }
}

/// How an update treats `metadata.managedFields`.
#[derive(Debug, Clone, Copy)]
pub enum Tracking<'a> {
    /// Untracked write: keep the entries (or take the client's).
    Off,
    /// A non-apply write by this manager: it owns what it changed.
    Update(&'a str),
    /// The entries are already worked out (server-side apply).
    Done,
}

impl<'a> Tracking<'a> {
    pub fn of(writer: &'a Writer) -> Tracking<'a> {
        if writer.manager.is_empty() {
            Tracking::Off
        } else {
            Tracking::Update(&writer.manager)
        }
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// A field of an object, or a key of a map.
    Field(String),
    /// A list item by its merge key: the key object's compact JSON.
    Key(String),
    /// An item of a set: its compact JSON.
    Value(String),
}

pub type Path = Vec<Step>;
pub type FieldSet = BTreeSet<Path>;

/// Which part of an object a write covers: the main resource owns
/// everything but status, the status subresource only status; a write
/// through `scale` is the main resource's, recorded as the scale's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Main,
    Status,
    Scale,
}

impl Scope {
    pub fn of_subresource(sub: &str) -> Scope {
        match sub {
            "status" => Scope::Status,
            "scale" => Scope::Scale,
            _ => Scope::Main,
        }
    }

    fn subresource(self) -> &'static str {
        match self {
            Scope::Main => "",
            Scope::Status => "status",
            Scope::Scale => "scale",
        }
    }
}

/// Metadata the server sets, owned by nobody (Kubernetes strips the same).
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// The fields `doc` (an object of `kind`) sets, in `scope`.
pub fn field_set(kind: &str, doc: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(top) = doc.as_object() else {
        return out;
    };
    let mut at = Path::new();
    for (k, v) in top {
        let wanted = match scope {
            Scope::Main | Scope::Scale => k != "apiVersion" && k != "kind" && k != "status",
            Scope::Status => k == "status",
        };
        if !wanted {
            continue;
        }
        at.push(Step::Field(k.clone()));
        match (k.as_str(), v.as_object()) {
            ("metadata", Some(meta)) => {
                for (mk, mv) in meta {
                    if SERVER_METADATA.contains(&mk.as_str()) {
                        continue;
                    }
                    at.push(Step::Field(mk.clone()));
                    collect(kind, &join("metadata", mk), mv, &mut at, &mut out);
                    at.pop();
                }
            }
            _ => collect(kind, k, v, &mut at, &mut out),
        }
        at.pop();
    }
    out
}

fn collect(kind: &str, path: &str, v: &Value, at: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                at.push(Step::Field(k.clone()));
                collect(kind, &join(path, k), child, at, out);
                at.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let key = crate::rest::patch::merge_key(kind, path);
            if let Some(key) = key.filter(|k| items.iter().all(|i| i.get(*k).is_some())) {
                let item_path = format!("{path}[]");
                for item in items {
                    at.push(key_step(key, &item[key]));
                    out.insert(at.clone());
                    collect(kind, &item_path, item, at, out);
                    at.pop();
                }
            } else if crate::rest::patch::merges_primitives(path)
                && items.iter().all(|i| !i.is_object() && !i.is_array())
            {
                for item in items {
                    at.push(Step::Value(item.to_string()));
                    out.insert(at.clone());
                    at.pop();
                }
            } else {
                out.insert(at.clone());
            }
        }
        _ => {
            out.insert(at.clone());
        }
    }
}

fn key_step(key: &str, value: &Value) -> Step {
    let mut m = Map::new();
    m.insert(key.to_string(), value.clone());
    Step::Key(Value::Object(m).to_string())
}

fn step_matches(step: &Step, item: &Value) -> bool {
    match step {
        Step::Key(k) => match serde_json::from_str::<Map<String, Value>>(k) {
            Ok(key) => key.iter().all(|(f, v)| item.get(f) == Some(v)),
            Err(_) => false,
        },
        Step::Value(v) => serde_json::from_str::<Value>(v).is_ok_and(|v| &v == item),
        Step::Field(_) => false,
    }
}

/// The value at `path` in `doc`.
pub fn lookup<'a>(doc: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |node, step| match step {
        Step::Field(f) => node.as_object()?.get(f),
        _ => node.as_array()?.iter().find(|i| step_matches(step, i)),
    })
}

fn lookup_mut<'a>(doc: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(doc, |node, step| match step {
        Step::Field(f) => node.as_object_mut()?.get_mut(f),
        _ => node.as_array_mut()?.iter_mut().find(|i| step_matches(step, i)),
    })
}

/// Removes the field or item at `path` from `doc`.
fn remove(doc: &mut Value, path: &[Step]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let Some(node) = lookup_mut(doc, parent) else {
        return;
    };
    match last {
        Step::Field(f) => {
            if let Some(m) = node.as_object_mut() {
                m.remove(f);
            }
        }
        step => {
            if let Some(items) = node.as_array_mut() {
                items.retain(|i| !step_matches(step, i));
            }
        }
    }
}

/// Whether `path` has a different value in `a` and `b`: for list items,
/// whether one has the item and the other not.
fn differs(a: &Value, b: &Value, path: &[Step]) -> bool {
    match path.last() {
        Some(Step::Field(_)) => lookup(a, path) != lookup(b, path),
        _ => lookup(a, path).is_some() != lookup(b, path).is_some(),
    }
}

/// Paths in `set` at or under `path`.
fn under<'a>(set: &'a FieldSet, path: &'a Path) -> impl Iterator<Item = &'a Path> {
    set.range(path.clone()..).take_while(move |p| p.starts_with(path))
}

/// Kubernetes' path notation: `.spec.containers[name="web"].image`.
pub fn path_string(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Step::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = key.iter().map(|(f, v)| format!("{f}={v}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            Step::Value(v) => s.push_str(&format!("[={v}]")),
        }
    }
    s
}

/// The fieldsV1 tree of a set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<String, Node>,
    }
    fn encode(step: &Step) -> String {
        match step {
            Step::Field(f) => format!("f:{f}"),
            Step::Key(k) => format!("k:{k}"),
            Step::Value(v) => format!("v:{v}"),
        }
    }
    fn render(node: &Node) -> Value {
        let mut m: Map<String, Value> = node
            .children
            .iter()
            .map(|(k, c)| (k.clone(), render(c)))
            .collect();
        if node.member && !m.is_empty() {
            m.insert(".".into(), json!({}));
        }
        Value::Object(m)
    }
    let mut root = Node::default();
    for path in set {
        let node = path
            .iter()
            .fold(&mut root, |n, step| n.children.entry(encode(step)).or_default());
        node.member = true;
    }
    render(&root)
}

/// The set a fieldsV1 tree describes (what does not parse is left out).
pub fn from_fields_v1(tree: &Value) -> FieldSet {
    fn walk(node: &Map<String, Value>, at: &mut Path, out: &mut FieldSet) {
        for (k, child) in node {
            if k == "." {
                out.insert(at.clone());
                continue;
            }
            let step = match k.split_at_checked(2) {
                Some(("f:", f)) => Step::Field(f.to_string()),
                Some(("k:", j)) => match serde_json::from_str::<Value>(j) {
                    Ok(v @ Value::Object(_)) => Step::Key(v.to_string()),
                    _ => continue,
                },
                Some(("v:", j)) => match serde_json::from_str::<Value>(j) {
                    Ok(v) => Step::Value(v.to_string()),
                    Err(_) => continue,
                },
                _ => continue,
            };
            at.push(step);
            match child.as_object() {
                Some(m) if !m.is_empty() => walk(m, at, out),
                _ => {
                    out.insert(at.clone());
                }
            }
            at.pop();
        }
    }
    let mut out = FieldSet::new();
    if let Some(m) = tree.as_object() {
        walk(m, &mut Path::new(), &mut out);
    }
    out
}

/// A managedFields entry with its set decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub fields: FieldSet,
}

impl Owner {
    /// A new entry, written now.
    fn new(info: &ResourceInfo, manager: &str, operation: &str, scope: Scope, fields: FieldSet) -> Owner {
        Owner {
            manager: manager.into(),
            operation: operation.into(),
            api_version: info.api_version(),
            time: crate::handlers::now(),
            subresource: scope.subresource().into(),
            fields,
        }
    }

    /// `manager`'s entry for `operation` in `owners`, created if missing,
    /// marked as written now.
    fn touch<'a>(
        owners: &'a mut Vec<Owner>,
        info: &ResourceInfo,
        manager: &str,
        operation: &str,
        scope: Scope,
    ) -> &'a mut Owner {
        let i = match owners
            .iter()
            .position(|o| o.is(manager, operation, scope.subresource()))
        {
            Some(i) => i,
            None => {
                owners.push(Owner::new(info, manager, operation, scope, FieldSet::new()));
                owners.len() - 1
            }
        };
        let o = &mut owners[i];
        o.time = crate::handlers::now();
        o.api_version = info.api_version();
        o
    }

    fn is(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    /// How Kubernetes names the manager in a conflict.
    fn label(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

pub fn decode(entries: &[ManagedFieldsEntry]) -> Vec<Owner> {
    entries
        .iter()
        .map(|e| Owner {
            manager: e.manager.clone(),
            operation: e.operation.clone(),
            api_version: e.api_version.clone(),
            time: e.time.clone(),
            subresource: e.subresource.clone(),
            fields: e
                .fields_v1
                .as_ref()
                .map(|f| from_fields_v1(&f.value()))
                .unwrap_or_default(),
        })
        .collect()
}

pub fn encode(owners: &[Owner]) -> Vec<ManagedFieldsEntry> {
    owners
        .iter()
        .filter(|o| !o.fields.is_empty())
        .map(|o| ManagedFieldsEntry {
            manager: o.manager.clone(),
            operation: o.operation.clone(),
            api_version: o.api_version.clone(),
            time: o.time.clone(),
            fields_type: "FieldsV1".into(),
            fields_v1: Some(RawExtension::from_value(&to_fields_v1(&o.fields))),
            subresource: o.subresource.clone(),
        })
        .collect()
}

/// The entries a write keeps, as Kubernetes decides from what the client
/// sent: none (or `[]`) keeps the stored entries, so clients that do not
/// know the field cannot drop it; a single empty entry (`[{}]`) clears
/// them; valid entries replace them; invalid ones (an operation other than
/// Apply or Update, a fieldsType other than FieldsV1) are ignored.
pub fn given_or_kept(given: &[ManagedFieldsEntry], stored: &[ManagedFieldsEntry]) -> Vec<ManagedFieldsEntry> {
    if is_reset(given) {
        Vec::new()
    } else if given.is_empty() || !valid(given) {
        stored.to_vec()
    } else {
        given.to_vec()
    }
}

fn valid(given: &[ManagedFieldsEntry]) -> bool {
    given.iter().all(|e| {
        matches!(e.operation.as_str(), "Apply" | "Update")
            && e.fields_type == "FieldsV1"
            && e.fields_v1.is_some()
    })
}

fn is_reset(given: &[ManagedFieldsEntry]) -> bool {
    given.len() == 1 && given[0].manager.is_empty() && given[0].fields_v1.is_none()
}

/// The entries of a new object: the client's (unless `[{}]`), or else the
/// creator owning everything it set.
pub fn on_create<K: Resource>(obj: &mut K, tracking: Tracking) -> ApiResult<()> {
    let given = std::mem::take(&mut obj.metadata_mut().managed_fields);
    if !given.is_empty() && valid(&given) {
        obj.metadata_mut().managed_fields = given;
        return Ok(());
    }
    if let Tracking::Update(manager) = tracking {
        let info = K::info();
        let fields = field_set(info.kind, &to_value(obj)?, Scope::Main);
        obj.metadata_mut().managed_fields =
            encode(&[Owner::new(info, manager, "Update", Scope::Main, fields)]);
    }
    Ok(())
}

fn to_value<K: Resource>(obj: &K) -> ApiResult<Value> {
    serde_json::to_value(obj).map_err(|e| ApiError::internal(e.to_string()))
}

/// Sets `new`'s entries for an update from `old`: the client's or the
/// stored ones, and under [`Tracking::Update`] the manager takes the
/// fields it changed from whoever owned them.
pub fn on_update<K: Resource>(old: &K, new: &mut K, tracking: Tracking, scope: Scope) -> ApiResult<()> {
    let entries = given_or_kept(&new.metadata().managed_fields, &old.metadata().managed_fields);
    new.metadata_mut().managed_fields = entries;
    let Tracking::Update(manager) = tracking else {
        return Ok(());
    };
    let info = K::info();
    let mut owners = decode(&new.metadata().managed_fields);
    let changed = record_update(
        info,
        &to_value(old)?,
        &to_value(new)?,
        &mut owners,
        manager,
        scope,
    );
    if changed {
        new.metadata_mut().managed_fields = encode(&owners);
    }
    Ok(())
}

/// Moves the fields that differ between `old` and `new` to `manager`'s
/// Update entry; false when nothing differs (the entries stay as they are).
pub fn record_update(
    info: &ResourceInfo,
    old: &Value,
    new: &Value,
    owners: &mut Vec<Owner>,
    manager: &str,
    scope: Scope,
) -> bool {
    let before = field_set(info.kind, old, scope);
    let after = field_set(info.kind, new, scope);
    let changed: FieldSet = after
        .iter()
        .filter(|p| differs(old, new, p))
        .chain(before.difference(&after))
        .cloned()
        .collect();
    if changed.is_empty() {
        return false;
    }
    for o in owners.iter_mut() {
        o.fields.retain(|p| !changed.contains(p));
    }
    let taken: FieldSet = changed.intersection(&after).cloned().collect();
    Owner::touch(owners, info, manager, "Update", scope)
        .fields
        .extend(taken);
    owners.retain(|o| !o.fields.is_empty());
    true
}

/// A field another manager owns with another value.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub path: String,
}

/// The entry an apply that creates the object starts with.
pub fn created_by_apply(info: &ResourceInfo, config: &Value, manager: &str, scope: Scope) -> Value {
    let entries = encode(&[Owner::new(
        info,
        manager,
        "Apply",
        scope,
        field_set(info.kind, config, scope),
    )]);
    serde_json::to_value(entries).unwrap_or(Value::Null)
}

/// Server-side apply of `config` by `manager` to `live`: the merged object,
/// with `owners` updated; or the conflicts when another manager owns a
/// field the configuration changes (unless `force`, which takes them).
pub fn apply(
    info: &ResourceInfo,
    live: &Value,
    owners: &mut Vec<Owner>,
    config: &Value,
    writer: &Writer,
    scope: Scope,
) -> Result<Value, Vec<Conflict>> {
    let manager = writer.manager.as_str();
    let sub = scope.subresource();
    let mine = |o: &Owner| o.is(manager, "Apply", sub);
    let applied = field_set(info.kind, config, scope);
    let mut conflicts = Vec::new();
    let mut taken = Vec::new();
    for path in applied.iter().filter(|p| differs(live, config, p)) {
        for (i, o) in owners.iter().enumerate() {
            if !mine(o) && o.fields.contains(path) {
                conflicts.push(Conflict {
                    manager: o.label(),
                    path: path_string(path),
                });
                taken.push((i, path.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !writer.force {
        return Err(conflicts);
    }
    for (i, path) in taken {
        owners[i].fields.remove(&path);
    }
    let mut merged = live.clone();
    let mut config = config.clone();
    if let Some(meta) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    if scope != Scope::Status {
        if let Some(m) = config.as_object_mut() {
            m.remove("status");
        }
    }
    // a configuration is always an object (checked by the caller)
    let _ = crate::rest::patch::apply("apply", info.kind, &mut merged, &config);
    let before = owners
        .iter()
        .find(|o| mine(o))
        .map(|o| o.fields.clone())
        .unwrap_or_default();
    // deepest first: an item's fields go before the item
    let dropped: Vec<&Path> = before.difference(&applied).collect();
    for path in dropped.into_iter().rev() {
        let kept_by_others = owners
            .iter()
            .any(|o| !mine(o) && under(&o.fields, path).next().is_some());
        if !kept_by_others && !is_key_field(path) {
            remove(&mut merged, path);
        }
    }
    let unchanged = merged == *live && before == applied;
    if !unchanged {
        Owner::touch(owners, info, manager, "Apply", scope).fields = applied;
        owners.retain(|o| !o.fields.is_empty());
    }
    Ok(merged)
}

/// Whether `path` is the merge key of the list item it is in (an item
/// keeps its key while it exists).
fn is_key_field(path: &[Step]) -> bool {
    match path {
        [.., Step::Key(k), Step::Field(f)] => {
            serde_json::from_str::<Map<String, Value>>(k).is_ok_and(|key| key.contains_key(f))
        }
        _ => false,
    }
}

/// Kubernetes' 409 for an apply that would overrule other managers.
pub fn conflict_error(info: &ResourceInfo, name: &str, conflicts: &[Conflict]) -> ApiError {
    let message = if let [c] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager, c.path
        )
    } else {
        let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for c in conflicts {
            by_manager.entry(&c.manager).or_default().push(&c.path);
        }
        let lines: Vec<String> = by_manager
            .iter()
            .map(|(m, paths)| {
                let list: Vec<String> = paths.iter().map(|p| format!("- {p}")).collect();
                format!("conflicts with {m}:\n{}", list.join("\n"))
            })
            .collect();
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let mut e = ApiError::conflict(info, name, "");
    e.message = message;
    e.causes = conflicts
        .iter()
        .map(|c| StatusCause {
            reason: "FieldManagerConflict".into(),
            message: format!("conflict with {}", c.manager),
            field: c.path.clone(),
        })
        .collect();
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> &'static ResourceInfo {
        rkube_api::apps::v1::Deployment::info()
    }

    fn deployment(replicas: i64, env: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "uid": "u", "labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx", "env": env, "args": ["-v"]}]}}}
        })
    }

    fn writer(manager: &str, force: bool) -> Writer {
        Writer {
            manager: manager.into(),
            force,
        }
    }

    #[test]
    fn field_sets_encode_as_kubernetes_fields_v1() {
        let doc = deployment(2, json!([{"name": "A", "value": "1"}]));
        let set = field_set("Deployment", &doc, Scope::Main);
        let tree = to_fields_v1(&set);
        assert_eq!(
            tree,
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}, "f:finalizers": {"v:\"a\"": {}}},
                "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {
                        ".": {}, "f:name": {}, "f:image": {}, "f:args": {},
                        "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}}
                    }}}}}
            })
        );
        assert_eq!(from_fields_v1(&tree), set, "the encoding reads back");
        let env = vec![
            Step::Field("spec".into()),
            Step::Field("template".into()),
            Step::Field("spec".into()),
            Step::Field("containers".into()),
            Step::Key("{\"name\":\"web\"}".into()),
            Step::Field("image".into()),
        ];
        assert_eq!(
            path_string(&env),
            ".spec.template.spec.containers[name=\"web\"].image"
        );
        assert_eq!(lookup(&doc, &env), Some(&json!("nginx")));
    }

    #[test]
    fn another_managers_field_is_a_conflict_unless_forced() {
        let live = deployment(2, json!([]));
        let mut owners = Vec::new();
        record_update(
            info(),
            &json!({}),
            &live,
            &mut owners,
            "kubectl-client-side-apply",
            Scope::Main,
        );
        let config = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                            "spec": {"replicas": 5}});
        let err = apply(
            info(),
            &live,
            &mut owners,
            &config,
            &writer("other", false),
            Scope::Main,
        )
        .unwrap_err();
        assert_eq!(
            err,
            vec![Conflict {
                manager: "\"kubectl-client-side-apply\" using apps/v1".into(),
                path: ".spec.replicas".into()
            }]
        );
        let e = conflict_error(info(), "web", &err);
        assert_eq!(
            e.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
        assert_eq!(e.causes[0].reason, "FieldManagerConflict");
        // the same value is shared, not a conflict
        let same = json!({"spec": {"replicas": 2}});
        apply(
            info(),
            &live,
            &mut owners.clone(),
            &same,
            &writer("other", false),
            Scope::Main,
        )
        .unwrap();
        let merged = apply(
            info(),
            &live,
            &mut owners,
            &config,
            &writer("other", true),
            Scope::Main,
        )
        .unwrap();
        assert_eq!(merged["spec"]["replicas"], 5);
        let replicas = vec![Step::Field("spec".into()), Step::Field("replicas".into())];
        let holders: Vec<&str> = owners
            .iter()
            .filter(|o| o.fields.contains(&replicas))
            .map(|o| o.manager.as_str())
            .collect();
        assert_eq!(holders, ["other"], "force takes the field");
    }

    #[test]
    fn fields_a_manager_stops_applying_are_removed_unless_shared() {
        let config = |env: Value, labels: Value| {
            json!({"metadata": {"name": "web", "labels": labels},
                   "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx", "env": env}]}}}})
        };
        let first = config(
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]),
            json!({"app": "web", "tier": "x"}),
        );
        let mut owners = Vec::new();
        let live = apply(
            info(),
            &json!({}),
            &mut owners,
            &first,
            &writer("kubectl", false),
            Scope::Main,
        )
        .unwrap();
        // another manager applies the tier label too
        let theirs = json!({"metadata": {"labels": {"tier": "x"}}});
        let live = apply(
            info(),
            &live,
            &mut owners,
            &theirs,
            &writer("other", false),
            Scope::Main,
        )
        .unwrap();
        let second = config(json!([{"name": "A", "value": "1"}]), json!({"app": "web"}));
        let out = apply(
            info(),
            &live,
            &mut owners,
            &second,
            &writer("kubectl", false),
            Scope::Main,
        )
        .unwrap();
        let env = &out["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(
            env,
            &json!([{"name": "A", "value": "1"}]),
            "B is no longer applied"
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "tier": "x"}),
            "tier is still other's"
        );
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["image"], "nginx");
        // re-applying the same configuration changes nothing
        let before = owners.clone();
        let again = apply(
            info(),
            &out,
            &mut owners,
            &second,
            &writer("kubectl", false),
            Scope::Main,
        )
        .unwrap();
        assert_eq!(again, out);
        assert_eq!(
            owners, before,
            "a no-op apply keeps the entries (and their times)"
        );
    }

    #[test]
    fn updates_move_changed_fields_and_managed_fields_given_by_clients() {
        let old = deployment(2, json!([{"name": "A", "value": "1"}]));
        let mut owners = Vec::new();
        record_update(
            info(),
            &json!({}),
            &old,
            &mut owners,
            "kubectl-create",
            Scope::Main,
        );
        let new = deployment(3, json!([]));
        assert!(record_update(
            info(),
            &old,
            &new,
            &mut owners,
            "kubectl-edit",
            Scope::Main
        ));
        let edit = owners.iter().find(|o| o.manager == "kubectl-edit").unwrap();
        assert_eq!(
            to_fields_v1(&edit.fields),
            json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {"f:env": {}}}}}}})
        );
        let create = owners.iter().find(|o| o.manager == "kubectl-create").unwrap();
        assert!(!create
            .fields
            .iter()
            .any(|p| p.len() > 1 && p[1] == Step::Field("replicas".into())));
        assert!(!record_update(
            info(),
            &new,
            &new,
            &mut owners,
            "kubectl-edit",
            Scope::Main
        ));

        let stored = encode(&owners);
        assert_eq!(given_or_kept(&[], &stored), stored, "absent or [] keeps them");
        assert!(
            given_or_kept(&[ManagedFieldsEntry::default()], &stored).is_empty(),
            "[{{}}] clears them"
        );
        assert_eq!(given_or_kept(&stored[..1], &stored), stored[..1].to_vec());
        let invalid = ManagedFieldsEntry {
            manager: "x".into(),
            operation: "Delete".into(),
            ..stored[0].clone()
        };
        assert_eq!(
            given_or_kept(&[invalid], &stored),
            stored,
            "invalid entries are ignored"
        );
    }
}
