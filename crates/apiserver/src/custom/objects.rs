//! The verbs for objects that are JSON documents (custom objects and the
//! CRDs themselves), with the built-in verbs' semantics: system metadata
//! the client cannot set, `generation` bumped by a change of anything but
//! metadata and status, the status subresource, finalizers and
//! deletionTimestamp, resourceVersion preconditions, label and field
//! selectors, pagination and watch. What is theirs: the CRD's OpenAPI
//! schema is applied on every write (pruning with a warning, defaults,
//! validation), objects are stored in the storage version and answered in
//! the version asked for (conversion strategy None: only apiVersion
//! changes), and a CRD's writes change what the apiserver serves.

use super::CustomKind;
use crate::admission;
use crate::error::{ApiError, ApiResult};
use crate::handlers::{
    consistent_read, decode_continue, encode_continue, event, generated_name, namespace_or_default, now,
    read, resolve_namespace, storage_key, storage_prefix, WatchSender,
};
use crate::managed_fields::{self, Scope, Writer};
use crate::State;
use bytes::Bytes;
use prost_types::Any;
use rkube_api::crd::{CrdSpec, JSON_TYPE_PREFIX};
use rkube_api::meta::v1::ObjectMeta;
use rkube_api::rpc;
use rkube_api::selector::{FieldSelector, Selector};
use rkube_api::validation::{ErrorType, FieldError, MAX_OBJECT_BYTES};
use rkube_store::{EventKind, KeyValue, StoreError, WatchItem};
use serde_json::{json, Value};
use std::sync::Arc;

/// The finalizer-free removal of a CRD's objects happens before the CRD
/// itself goes; this bounds one page of it.
const CLEANUP_PAGE: usize = 500;

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

/// The JSON object inside a request's `Any`.
fn decode_request(kind: &CustomKind, any: Option<Any>) -> ApiResult<Value> {
    let info = kind.info;
    let any = any.ok_or_else(|| ApiError::bad_request("the request carries no object"))?;
    if !any.type_url.starts_with(JSON_TYPE_PREFIX) {
        return Err(ApiError::bad_request(format!(
            "{} objects travel as JSON: send an Any with type URL {:?} whose value is the object's JSON (got type URL {:?})",
            info.kind, info.type_url, any.type_url
        )));
    }
    let obj: Value = serde_json::from_slice(&any.value)
        .map_err(|e| ApiError::bad_request(format!("the {} object is not valid JSON: {e}", info.kind)))?;
    check_type(kind, &obj)?;
    Ok(obj)
}

/// An object's apiVersion and kind must be this kind's (any served version), or absent.
fn check_type(kind: &CustomKind, obj: &Value) -> ApiResult<()> {
    let info = kind.info;
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object ({} {})",
            info.api_version(),
            info.kind
        )));
    }
    let api_version = obj["apiVersion"].as_str().unwrap_or("");
    let k = obj["kind"].as_str().unwrap_or("");
    let group_ok =
        api_version.is_empty() || api_version.split_once('/').is_some_and(|(g, _)| g == info.group);
    if (!k.is_empty() && k != info.kind) || !group_ok {
        return Err(ApiError::bad_request(format!(
            "the object is a {k} of apiVersion {api_version}, but this is {} of apiVersion {}",
            info.kind,
            info.api_version()
        )));
    }
    Ok(())
}

/// The object's metadata as the typed ObjectMeta (its fields checked).
fn meta_of(kind: &CustomKind, obj: &Value) -> ApiResult<ObjectMeta> {
    match obj.get("metadata") {
        None | Some(Value::Null) => Ok(ObjectMeta::default()),
        Some(m) => serde_path_to_error::deserialize::<_, ObjectMeta>(m).map_err(|e| {
            ApiError::bad_request(format!(
                "strict decoding error: {}.metadata.{}: {}",
                kind.info.kind,
                e.path(),
                e.inner()
            ))
        }),
    }
}

fn set_meta(obj: &mut Value, meta: &ObjectMeta) -> ApiResult<()> {
    obj["metadata"] = serde_json::to_value(meta).map_err(internal)?;
    Ok(())
}

/// Everything but metadata and status: what a change of bumps `generation`.
fn desired(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    v
}

/// A stored object, with its resourceVersion, in the version `info` serves.
fn decode_stored(kv: &KeyValue, info: &rkube_api::ResourceInfo) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| internal(format!("stored object {} cannot be decoded: {e}", kv.key)))?;
    if !obj.is_object() {
        return Err(internal(format!("stored object {} is not a JSON object", kv.key)));
    }
    obj["apiVersion"] = json!(info.api_version());
    obj["kind"] = json!(info.kind);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(obj)
}

/// The wire form of an object of `info`.
pub(crate) fn to_any(info: &rkube_api::ResourceInfo, obj: &Value) -> Any {
    Any {
        type_url: info.type_url.to_string(),
        value: serde_json::to_vec(obj).unwrap_or_default(),
    }
}

fn stamped(kv: &KeyValue, info: &rkube_api::ResourceInfo) -> ApiResult<Any> {
    Ok(to_any(info, &decode_stored(kv, info)?))
}

/// What is stored: the storage version's apiVersion, no resourceVersion.
fn encode_for_store(kind: &CustomKind, obj: &Value, name: &str) -> ApiResult<Bytes> {
    let mut obj = obj.clone();
    obj["apiVersion"] = json!(kind.storage_api_version());
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    let bytes = serde_json::to_vec(&obj).map_err(internal)?;
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::bad_request(format!(
            "{} {name:?} is too large: {} bytes, the limit is {MAX_OBJECT_BYTES} bytes",
            kind.info.kind,
            bytes.len()
        )));
    }
    Ok(Bytes::from(bytes))
}

/// Whether a CRD's status has condition `type` True.
pub fn condition_true(obj: &Value, type_: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == type_ && c["status"] == "True"))
}

/// Schema (or CRD) work on an object about to be written: pruning with
/// warnings, defaults, then validation of the whole object.
fn admit(
    state: &State,
    kind: &CustomKind,
    obj: &mut Value,
    old: Option<&Value>,
    name: &str,
) -> ApiResult<()> {
    let info = kind.info;
    let mut errors = Vec::new();
    if let Some(schema) = &kind.schema {
        let mut warnings = Vec::new();
        rkube_api::schema::prune(obj, schema, &mut warnings);
        for w in warnings {
            admission::warn(w);
        }
        rkube_api::schema::apply_defaults(obj, schema);
        errors.extend(rkube_api::schema::validate(obj, schema));
    }
    if kind.is_crd() {
        errors.extend(admit_definition(state, obj, old, name));
    }
    if let Some(w) = &kind.deprecation_warning {
        admission::warn(w.clone());
    }
    let meta = meta_of(kind, obj)?;
    let mut meta_errors = rkube_api::validation::validate_object_meta(&meta);
    meta_errors.append(&mut errors);
    if meta_errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(info, name, meta_errors))
    }
}

/// A CRD's own checks, its defaults written back, and its status (the
/// names it is served under, Established) worked out now: the kind is
/// served as soon as the write is acknowledged.
fn admit_definition(state: &State, obj: &mut Value, old: Option<&Value>, name: &str) -> Vec<FieldError> {
    let mut spec = match CrdSpec::from_object(obj) {
        Ok(s) => s,
        Err(e) => return vec![e],
    };
    spec.apply_defaults();
    let mut errors = spec.validate(name);
    if let Some(old) = old {
        if let Ok(old_spec) = CrdSpec::from_object(old) {
            if old_spec.scope != spec.scope && !old_spec.scope.is_empty() {
                errors.push(FieldError {
                    field: "spec.scope".into(),
                    kind: ErrorType::Invalid(format!("{:?}", spec.scope)),
                    detail: "field is immutable".into(),
                });
            }
        }
    }
    if !errors.is_empty() {
        return errors;
    }
    match serde_json::to_value(&spec) {
        Ok(v) => obj["spec"] = v,
        Err(e) => {
            return vec![FieldError {
                field: "spec".into(),
                kind: ErrorType::Invalid(String::new()),
                detail: e.to_string(),
            }]
        }
    }
    let conflict = super::names_conflict(&spec, name, &state.custom.defined());
    let now = now();
    let old_conditions = old
        .map(|o| o["status"]["conditions"].clone())
        .unwrap_or(Value::Null);
    let since = |type_: &str, status: &str| {
        old_conditions
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_ && c["status"] == status))
            .and_then(|c| c["lastTransitionTime"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| now.clone())
    };
    let (accepted, established) = match &conflict {
        None => (
            json!({"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                   "message": "no conflicts found", "lastTransitionTime": since("NamesAccepted", "True")}),
            json!({"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                   "message": "the initial names have been accepted", "lastTransitionTime": since("Established", "True")}),
        ),
        Some(why) => (
            json!({"type": "NamesAccepted", "status": "False", "reason": "NameConflict",
                   "message": why, "lastTransitionTime": since("NamesAccepted", "False")}),
            json!({"type": "Established", "status": "False", "reason": "NotAccepted",
                   "message": "not all names are accepted", "lastTransitionTime": since("Established", "False")}),
        ),
    };
    let mut stored: Vec<String> = old
        .and_then(|o| o["status"]["storedVersions"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if let Some(v) = spec.storage_version() {
        if !stored.contains(&v.name) {
            stored.push(v.name.clone());
        }
    }
    obj["status"] = json!({
        "conditions": [accepted, established],
        "acceptedNames": if conflict.is_none() { serde_json::to_value(&spec.names).unwrap_or(Value::Null) } else { json!({"plural": "", "kind": ""}) },
        "storedVersions": stored,
    });
    Vec::new()
}

/// After a CRD write: serve what the store now defines.
fn definitions_changed(state: &State) {
    if let Err(e) = state.custom.reload(state.store.as_ref()) {
        tracing::warn!("cannot reload the CustomResourceDefinitions; what is served may be stale until the next CRD write: {e}");
    }
}

pub async fn create(state: Arc<State>, kind: Arc<CustomKind>, req: rpc::CreateRequest) -> ApiResult<Any> {
    let info = kind.info;
    let mut obj = decode_request(&kind, req.object)?;
    let mut meta = meta_of(&kind, &obj)?;
    let namespace = resolve_namespace(info, &req.namespace, &meta.namespace)?;
    let generate = meta.name.is_empty() && !meta.generate_name.is_empty();
    meta.namespace = namespace.clone();
    meta.uid = uuid::Uuid::new_v4().to_string();
    meta.creation_timestamp = now();
    meta.resource_version.clear();
    meta.deletion_timestamp.clear();
    meta.deletion_grace_period_seconds = None;
    meta.generation = 1;
    if generate {
        meta.name = generated_name(&meta.generate_name);
    }
    set_meta(&mut obj, &meta)?;
    obj["apiVersion"] = json!(info.api_version());
    obj["kind"] = json!(info.kind);
    if kind.status && !kind.is_crd() {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    admit(&state, &kind, &mut obj, None, &meta.name)?;
    admission::check_namespace(&state, info, &namespace)?;
    if req.dry_run {
        return Ok(to_any(info, &obj));
    }
    let mut renames = 0;
    loop {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let key = storage_key(info, &namespace, &name);
        match state
            .store
            .create(&key, encode_for_store(&kind, &obj, &name)?)
            .await
        {
            Ok(kv) => {
                if kind.is_crd() {
                    definitions_changed(&state);
                }
                return stamped(&kv, info);
            }
            Err(StoreError::AlreadyExists { .. }) if generate && renames < 8 => {
                renames += 1;
                obj["metadata"]["name"] = json!(generated_name(&meta.generate_name));
            }
            Err(e) => return Err(ApiError::from_store(e, info, &name)),
        }
    }
}

pub async fn get(state: Arc<State>, kind: Arc<CustomKind>, req: rpc::GetRequest) -> ApiResult<Any> {
    let info = kind.info;
    let key = storage_key(info, &namespace_or_default(info, &req.namespace), &req.name);
    stamped(&read(&state, &key, info, &req.name)?, info)
}

/// Label and field selectors over JSON objects (fields: metadata.name and
/// metadata.namespace, as Kubernetes allows for custom objects).
struct Filter {
    labels: Selector,
    fields: FieldSelector,
}

impl Filter {
    fn parse(info: &rkube_api::ResourceInfo, labels: &str, fields: &str) -> ApiResult<Filter> {
        let labels = Selector::parse(labels).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(fields).map_err(|e| ApiError::bad_request(e.to_string()))?;
        for f in fields.fields() {
            if !matches!(f, "metadata.name" | "metadata.namespace") {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {f} (for {}, select by metadata.name or metadata.namespace)",
                    info.plural
                )));
            }
        }
        Ok(Filter { labels, fields })
    }

    fn matches(&self, kv: &KeyValue) -> bool {
        if self.labels.is_empty() && self.fields.is_empty() {
            return true;
        }
        let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else {
            return false;
        };
        let labels = obj["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        self.labels.matches(&labels)
            && self.fields.matches(|f| match f {
                "metadata.name" => Some(obj["metadata"]["name"].as_str().unwrap_or("").to_string()),
                "metadata.namespace" => Some(obj["metadata"]["namespace"].as_str().unwrap_or("").to_string()),
                _ => None,
            })
    }
}

pub async fn list(
    state: Arc<State>,
    kind: Arc<CustomKind>,
    req: rpc::ListRequest,
) -> ApiResult<rpc::ListResponse> {
    let info = kind.info;
    let filter = Filter::parse(info, &req.label_selector, &req.field_selector)?;
    let prefix = storage_prefix(info, &req.namespace);
    let limit = usize::try_from(req.limit.max(0)).unwrap_or(0);
    let (mut at, mut after) = if req.r#continue.is_empty() {
        (None, None)
    } else {
        let (rev, key) = decode_continue(&req.r#continue)?;
        if !key.starts_with(&prefix) {
            return Err(ApiError::bad_request(
                "the continue token belongs to another list; start again without it",
            ));
        }
        (Some(rev), Some(key))
    };
    if at.is_none() {
        consistent_read(&state).await;
    }
    let mut items = Vec::new();
    let page_size = if limit == 0 { 0 } else { limit.max(500) };
    loop {
        let page = state
            .store
            .list(&prefix, after.as_deref(), page_size, at)
            .map_err(|e| ApiError::from_store(e, info, ""))?;
        at = Some(page.revision);
        let n = page.items.len();
        for (i, kv) in page.items.iter().enumerate() {
            if !filter.matches(kv) {
                continue;
            }
            items.push(stamped(kv, info)?);
            if limit != 0 && items.len() == limit {
                let more = i + 1 < n || page.more;
                return Ok(rpc::ListResponse {
                    items,
                    resource_version: page.revision.to_string(),
                    r#continue: if more {
                        encode_continue(page.revision, &kv.key)
                    } else {
                        String::new()
                    },
                    remaining_item_count: None,
                });
            }
        }
        if !page.more || n == 0 {
            return Ok(rpc::ListResponse {
                items,
                resource_version: page.revision.to_string(),
                r#continue: String::new(),
                remaining_item_count: None,
            });
        }
        after = page.items.last().map(|kv| kv.key.clone());
    }
}

/// Update or UpdateStatus.
pub async fn update(
    state: Arc<State>,
    kind: Arc<CustomKind>,
    req: rpc::UpdateRequest,
    status: bool,
) -> ApiResult<Any> {
    let obj = decode_request(&kind, req.object)?;
    let scope = if status { Scope::Status } else { Scope::Main };
    write(&state, &kind, obj, scope, req.dry_run, true).await
}

/// Replaces the stored object with `incoming` as `scope` allows: the main
/// resource keeps the stored status (when there is a status subresource),
/// the status subresource keeps everything else. `precondition`: a
/// resourceVersion in `incoming` must be current.
async fn write(
    state: &Arc<State>,
    kind: &CustomKind,
    incoming: Value,
    scope: Scope,
    dry_run: bool,
    precondition: bool,
) -> ApiResult<Any> {
    let info = kind.info;
    let in_meta = meta_of(kind, &incoming)?;
    let name = in_meta.name.clone();
    if name.is_empty() {
        return Err(ApiError::invalid(
            info,
            "",
            vec![FieldError {
                field: "metadata.name".into(),
                kind: ErrorType::Required,
                detail: "name is required".into(),
            }],
        ));
    }
    let namespace = namespace_or_default(info, &in_meta.namespace);
    let key = storage_key(info, &namespace, &name);
    let wanted_rv = if precondition {
        in_meta.resource_version.clone()
    } else {
        String::new()
    };
    loop {
        let kv = read(state, &key, info, &name)?;
        if !wanted_rv.is_empty() && wanted_rv != kv.mod_revision.to_string() {
            return Err(ApiError::stale(info, &name));
        }
        let old = decode_stored(&kv, info)?;
        let old_meta = meta_of(kind, &old)?;
        let status_only = matches!(scope, Scope::Status);
        let mut new = if status_only && kind.status {
            let mut n = old.clone();
            n["status"] = incoming.get("status").cloned().unwrap_or(Value::Null);
            if n["status"].is_null() {
                n.as_object_mut().map(|m| m.remove("status"));
            }
            n
        } else {
            let mut n = incoming.clone();
            let mut m = meta_of(kind, &n)?;
            m.uid = old_meta.uid.clone();
            m.creation_timestamp = old_meta.creation_timestamp.clone();
            m.deletion_timestamp = old_meta.deletion_timestamp.clone();
            m.deletion_grace_period_seconds = old_meta.deletion_grace_period_seconds;
            m.generation = old_meta.generation;
            m.namespace = old_meta.namespace.clone();
            if m.generate_name.is_empty() {
                m.generate_name = old_meta.generate_name.clone();
            }
            set_meta(&mut n, &m)?;
            if kind.status || kind.is_crd() {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        n.as_object_mut().map(|o| o.remove("status"));
                    }
                }
            }
            n
        };
        new["apiVersion"] = json!(info.api_version());
        new["kind"] = json!(info.kind);
        admit(state, kind, &mut new, Some(&old), &name)?;
        if desired(&new) != desired(&old) {
            new["metadata"]["generation"] = json!(old_meta.generation + 1);
        }
        new["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
        if new == old {
            return to_any_checked(info, &old);
        }
        if dry_run {
            return Ok(to_any(info, &new));
        }
        let new_meta = meta_of(kind, &new)?;
        let deleting = !old_meta.finalizers.is_empty()
            && new_meta.finalizers.is_empty()
            && !new_meta.deletion_timestamp.is_empty();
        let result = if deleting {
            state
                .store
                .delete(&key, Some(kv.mod_revision))
                .await
                .map(|(rev, mut kv)| {
                    kv.mod_revision = rev;
                    kv
                })
        } else {
            state
                .store
                .put(&key, encode_for_store(kind, &new, &name)?, Some(kv.mod_revision))
                .await
        };
        match result {
            Ok(kv) => {
                if kind.is_crd() {
                    if deleting {
                        remove_defined_objects(state, &new).await?;
                    }
                    definitions_changed(state);
                }
                return stamped(&kv, info);
            }
            Err(StoreError::Conflict { .. }) if wanted_rv.is_empty() => continue,
            Err(e) => return Err(ApiError::from_store(e, info, &name)),
        }
    }
}

fn to_any_checked(info: &rkube_api::ResourceInfo, obj: &Value) -> ApiResult<Any> {
    Ok(to_any(info, obj))
}

pub async fn patch(
    state: Arc<State>,
    kind: Arc<CustomKind>,
    req: rpc::PatchRequest,
    writer: &Writer,
) -> ApiResult<Any> {
    let info = kind.info;
    let patch: Value = serde_json::from_slice(&req.patch)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let scope = match req.subresource.as_str() {
        "" | "scale" => Scope::Main,
        "status" if kind.status => Scope::Status,
        other => {
            return Err(ApiError::bad_request(format!(
                "{} have no {other:?} subresource",
                info.plural
            )))
        }
    };
    let applying = req.patch_type == "apply";
    if applying && writer.manager.is_empty() {
        return Err(ApiError::bad_request(
            "fieldManager: Required value: is required for apply patch",
        ));
    }
    let key = storage_key(info, &namespace_or_default(info, &req.namespace), &req.name);
    loop {
        let kv = read(&state, &key, info, &req.name)?;
        let current = decode_stored(&kv, info)?;
        let mut doc = current.clone();
        if applying {
            let meta = meta_of(&kind, &current)?;
            let mut owners = managed_fields::decode(&meta.managed_fields);
            doc = managed_fields::apply(info, &doc, &mut owners, &patch, writer, scope)
                .map_err(|c| managed_fields::conflict_error(info, &req.name, &c))?;
            let mut m = meta_of(&kind, &doc)?;
            m.managed_fields = managed_fields::encode(&owners);
            set_meta(&mut doc, &m)?;
        } else {
            crate::rest::patch::apply(&req.patch_type, info.kind, &mut doc, &patch)?;
        }
        check_type(&kind, &doc)?;
        if !doc["metadata"].is_object() {
            return Err(ApiError::bad_request(format!(
                "the patched {} {:?} has no metadata object; a patch may change metadata's fields, not replace it",
                info.kind, req.name
            )));
        }
        // a patch that names a resourceVersion is a precondition; otherwise it
        // applies to whatever is current (and retries on a race)
        let named = doc["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let precondition = named != kv.mod_revision.to_string();
        doc["metadata"]["name"] = json!(req.name);
        if info.namespaced {
            doc["metadata"]["namespace"] = current["metadata"]["namespace"].clone();
        }
        match write(&state, &kind, doc, scope, req.dry_run, precondition).await {
            Err(e) if e.reason == "Conflict" && !precondition => continue,
            other => return other,
        }
    }
}

pub async fn delete(state: Arc<State>, kind: Arc<CustomKind>, req: rpc::DeleteRequest) -> ApiResult<Any> {
    let info = kind.info;
    let name = req.name.clone();
    let key = storage_key(info, &namespace_or_default(info, &req.namespace), &name);
    let policy = match req.propagation_policy.as_str() {
        "" | "Background" => "Background",
        "Foreground" => "Foreground",
        "Orphan" => "Orphan",
        other => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy {other:?} is not one of Background, Foreground, Orphan"
            )))
        }
    };
    loop {
        let kv = read(&state, &key, info, &name)?;
        let obj = decode_stored(&kv, info)?;
        let mut meta = meta_of(&kind, &obj)?;
        if let Some(p) = &req.preconditions {
            if !p.uid.is_empty() && p.uid != meta.uid {
                return Err(ApiError::conflict(
                    info,
                    &name,
                    &format!(
                        "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                        p.uid, meta.uid
                    ),
                ));
            }
            if !p.resource_version.is_empty() && p.resource_version != kv.mod_revision.to_string() {
                return Err(ApiError::conflict(info, &name, &format!(
                    "Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}",
                    p.resource_version, kv.mod_revision
                )));
            }
        }
        let before = meta.clone();
        match policy {
            "Foreground" if !meta.finalizers.iter().any(|f| f == "foregroundDeletion") => {
                meta.finalizers.push("foregroundDeletion".into())
            }
            "Orphan" if !meta.finalizers.iter().any(|f| f == "orphan") => {
                meta.finalizers.push("orphan".into())
            }
            _ => {}
        }
        if req.dry_run {
            return stamped(&kv, info);
        }
        let result = if !meta.finalizers.is_empty() {
            if meta.deletion_timestamp.is_empty() {
                meta.deletion_timestamp = now();
                meta.deletion_grace_period_seconds = Some(0);
            }
            if meta == before {
                return stamped(&kv, info);
            }
            let mut marked = obj.clone();
            set_meta(&mut marked, &meta)?;
            state
                .store
                .put(
                    &key,
                    encode_for_store(&kind, &marked, &name)?,
                    Some(kv.mod_revision),
                )
                .await
        } else {
            state
                .store
                .delete(&key, Some(kv.mod_revision))
                .await
                .map(|(rev, mut kv)| {
                    kv.mod_revision = rev;
                    kv
                })
        };
        match result {
            Ok(done) => {
                if kind.is_crd() && meta.finalizers.is_empty() {
                    remove_defined_objects(&state, &obj).await?;
                    definitions_changed(&state);
                }
                return stamped(&done, info);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, info, &name)),
        }
    }
}

/// A deleted CRD takes its objects with it (Kubernetes' customresourcecleanup):
/// every object stored under the kind's keys goes, whatever finalizers it has,
/// as nothing could serve them any more.
async fn remove_defined_objects(state: &State, crd: &Value) -> ApiResult<()> {
    let Ok(spec) = CrdSpec::from_object(crd) else {
        return Ok(());
    };
    let group = if spec.group.is_empty() {
        "core"
    } else {
        &spec.group
    };
    let prefix = format!("{group}/{}/", spec.names.plural);
    let mut removed = 0usize;
    loop {
        let page = state.store.list(&prefix, None, CLEANUP_PAGE, None).map_err(|e| {
            ApiError::internal(format!(
                "removing the objects of CustomResourceDefinition {}: {e}",
                crd["metadata"]["name"]
            ))
        })?;
        if page.items.is_empty() {
            break;
        }
        for kv in &page.items {
            match state.store.delete(&kv.key, None).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => removed += 1,
                Err(e) => {
                    return Err(ApiError::internal(format!(
                    "removing {} of a deleted CustomResourceDefinition: {e}; delete the CRD again to finish",
                    kv.key
                )))
                }
            }
        }
    }
    if removed > 0 {
        tracing::info!(crd = %crd["metadata"]["name"], objects = removed, "removed the objects of a deleted CustomResourceDefinition");
    }
    Ok(())
}

/// Starts a watch of JSON objects; events carry them in the version asked for.
pub async fn watch(
    state: Arc<State>,
    kind: Arc<CustomKind>,
    req: rpc::WatchRequest,
    tx: WatchSender,
) -> ApiResult<()> {
    let info = kind.info;
    let filter = Filter::parse(info, &req.label_selector, &req.field_selector)?;
    let prefix = storage_prefix(info, &req.namespace);
    let from: Option<u64> = if req.resource_version.is_empty() {
        None
    } else {
        Some(req.resource_version.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion {:?} is not a revision number",
                req.resource_version
            ))
        })?)
    };
    let mut initial = Vec::new();
    let start = match from {
        Some(rev) => rev,
        None => {
            consistent_read(&state).await;
            let snapshot = state
                .store
                .list(&prefix, None, 0, None)
                .map_err(|e| ApiError::from_store(e, info, ""))?;
            for kv in snapshot.items.iter().filter(|kv| filter.matches(kv)) {
                initial.push(event("ADDED", stamped(kv, info)?));
            }
            snapshot.revision
        }
    };
    let mut stream = state
        .store
        .watch(&prefix, start)
        .map_err(|e| ApiError::from_store(e, info, ""))?;
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        for ev in initial {
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            };
            let out = match item {
                None => return,
                Some(Err(e)) => {
                    let _ = tx.send(Err(ApiError::from_store(e, info, "").into())).await;
                    return;
                }
                Some(Ok(WatchItem::Progress(rev))) => {
                    if !req.allow_bookmarks {
                        continue;
                    }
                    rpc::WatchEvent {
                        r#type: "BOOKMARK".into(),
                        object: None,
                        resource_version: rev.to_string(),
                    }
                }
                Some(Ok(WatchItem::Event(ev))) => {
                    let now_matches = filter.matches(&ev.kv);
                    let was = ev.prev.as_ref().map(|p| filter.matches(p));
                    let type_ = match (ev.kind, was, now_matches) {
                        (EventKind::Delete, _, true) => "DELETED",
                        (EventKind::Put, None | Some(false), true) => "ADDED",
                        (EventKind::Put, Some(true), true) => "MODIFIED",
                        (EventKind::Put, Some(true), false) => "DELETED",
                        _ => continue,
                    };
                    match stamped(&ev.kv, info) {
                        Ok(any) => event(type_, any),
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    }
                }
            };
            if tx.send(Ok(out)).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_follows_everything_but_metadata_and_status() {
        let a =
            json!({"apiVersion": "x/v1", "metadata": {"name": "a"}, "spec": {"n": 1}, "status": {"r": 1}});
        let mut b = a.clone();
        b["status"]["r"] = json!(2);
        b["metadata"]["labels"] = json!({"x": "y"});
        b["apiVersion"] = json!("x/v2");
        assert_eq!(desired(&a), desired(&b));
        b["spec"]["n"] = json!(2);
        assert_ne!(desired(&a), desired(&b));
    }
}
