//! The verbs, written once for every kind: each is a generic function over
//! `K: Resource`, picked at run time by `visit_kind`. They implement the
//! Kubernetes semantics the store does not know: defaulting, validation,
//! immutable metadata, status subresource, generation, finalizers and
//! graceful deletion, selectors and pagination.
//!
//! Over 900 lines because every verb lives here, each written once for
//! every kind; field managers are kept in `managed_fields`.

use crate::admission;
use crate::error::{ApiError, ApiResult};
// Re-exported so that `handlers::storage_key`, the path most callers use, keeps working.
pub use crate::keys::{storage_key, storage_prefix};
use crate::managed_fields::{self, Scope, Tracking, Writer};
use crate::State;
use base64::Engine;
use bytes::Bytes;
use prost_types::Any;
use rkube_api::codec::resource_version_suffix;
use rkube_api::rpc;
use rkube_api::selector::{FieldSelector, Selector};
use rkube_api::validation::MAX_OBJECT_BYTES;
use rkube_api::{from_any, Resource, ResourceInfo};
use rkube_store::{EventKind, KeyValue, StoreError, WatchItem};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The wire form of a stored object, with its resourceVersion stamped on.
pub(crate) fn stamped(kv: &KeyValue, info: &ResourceInfo) -> Any {
    let mut value = Vec::with_capacity(kv.value.len() + 24);
    value.extend_from_slice(&kv.value);
    value.extend(resource_version_suffix(kv.mod_revision));
    Any {
        type_url: info.type_url.to_string(),
        value,
    }
}

pub(crate) fn decode_stored<K: Resource>(kv: &KeyValue) -> ApiResult<K> {
    let mut obj = K::decode(kv.value.as_ref())
        .map_err(|e| ApiError::internal(format!("stored object {} cannot be decoded: {e}", kv.key)))?;
    obj.metadata_mut().resource_version = kv.mod_revision.to_string();
    Ok(obj)
}

/// What is stored: the object without its resourceVersion (the store's
/// revision is the truth).
pub(crate) fn encode_for_store<K: Resource>(obj: &K) -> ApiResult<Bytes> {
    let mut obj = obj.clone();
    obj.metadata_mut().resource_version.clear();
    let bytes = obj.encode_to_vec();
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::bad_request(format!(
            "{} {:?} is too large: {} bytes, the limit is {} bytes; keep large data out of the object (for example in a volume)",
            K::INFO.kind,
            obj.name(),
            bytes.len(),
            MAX_OBJECT_BYTES
        )));
    }
    Ok(Bytes::from(bytes))
}

fn decode_request<K: Resource>(any: Option<Any>) -> ApiResult<K> {
    let any = any.ok_or_else(|| ApiError::bad_request("the request carries no object"))?;
    from_any::<K>(&any).map_err(|e| ApiError::bad_request(format!("cannot decode the object: {e}")))
}

pub use rkube_api::time::now;

/// The namespace an object goes in: the request's, or the object's, or
/// `default`; a mismatch between the two is an error, as in Kubernetes.
pub(crate) fn resolve_namespace(info: &ResourceInfo, request: &str, object: &str) -> ApiResult<String> {
    if !info.namespaced {
        return Ok(String::new());
    }
    match (request, object) {
        ("", "") => Ok("default".into()),
        (r, "") => Ok(r.into()),
        ("", o) => Ok(o.into()),
        (r, o) if r == o => Ok(r.into()),
        (r, o) => Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({o}) does not match the namespace sent on the request ({r})"
        ))),
    }
}

pub(crate) fn generated_name(prefix: &str) -> String {
    // Kubernetes' alphabet: no vowels (no words), no confusable characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    let suffix: String = id.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

fn validate<K: Resource>(obj: &K, old: Option<&K>) -> ApiResult<()> {
    let mut errors = obj.validate();
    if let Some(old) = old {
        errors.extend(obj.validate_update(old));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(K::info(), obj.name(), errors))
    }
}

pub async fn create<K: Resource>(
    state: Arc<State>,
    req: rpc::CreateRequest,
    writer: &Writer,
) -> ApiResult<Any> {
    use tracing::Instrument as _;
    // a pod's first step on its way to Running (see `POD_STARTUP_TRACE`)
    let span = if K::info().kind == "Pod" {
        tracing::debug_span!(target: rkube_api::POD_STARTUP_TRACE, "apiserver_write", pod_uid = tracing::field::Empty)
    } else {
        tracing::Span::none()
    };
    create_object::<K>(state, req, writer).instrument(span).await
}

async fn create_object<K: Resource>(
    state: Arc<State>,
    req: rpc::CreateRequest,
    writer: &Writer,
) -> ApiResult<Any> {
    let info = K::info();
    let mut obj: K = decode_request(req.object)?;
    let namespace = resolve_namespace(info, &req.namespace, obj.namespace())?;
    let generate = obj.name().is_empty() && !obj.metadata().generate_name.is_empty();
    {
        let meta = obj.metadata_mut();
        meta.namespace = namespace.clone();
        meta.uid = uuid::Uuid::new_v4().to_string();
        tracing::Span::current().record("pod_uid", meta.uid.as_str());
        meta.creation_timestamp = now();
        meta.resource_version.clear();
        meta.deletion_timestamp.clear();
        meta.deletion_grace_period_seconds = None;
        meta.generation = if info.has_status { 1 } else { 0 };
    }
    obj.set_type_meta();
    if info.has_status {
        obj.copy_status_from(&K::default());
    }
    obj.apply_defaults();
    // LimitRange defaults before the QoS class is worked out and before quota charges them
    crate::limit_range::admit_create(&state, &mut obj)?;
    admission::prepare_create(&mut obj);
    crate::pod_priority::admit_create(&state, &mut obj)?;
    crate::ingress_class::admit_create(&state, &mut obj)?;
    crate::storage_class::admit_create(&state, &mut obj)?;
    // validation sees a name even for generateName, then the real one is set
    if generate {
        obj.metadata_mut().name = generated_name(&obj.metadata().generate_name.clone());
    }
    managed_fields::on_create(&mut obj, Tracking::of(writer))?;
    validate(&obj, None)?;
    admission::check_namespace(&state, info, &namespace)?;
    crate::pod_security::admit_create(&state, &obj)?;
    if req.dry_run {
        crate::quota::charge(&state, &obj)?;
        return Ok(rkube_api::to_any(&obj));
    }
    // Service addresses are reserved before the write and given back if it fails; the
    // write carries their reservation keys, so another apiserver's allocation of the same
    // value makes it fail, and this one allocates again.
    let unallocated = obj.clone();
    let mut allocation = admission::allocate_create(&state, &mut obj)?;
    let mut renames = 0;
    let mut reallocations = 0;
    loop {
        let key = storage_key(info, &namespace, obj.name());
        let written =
            match encode_for_store(&obj).and_then(|value| Ok((value, crate::quota::charge(&state, &obj)?))) {
                Ok((value, mut charges)) => {
                    charges.extend(admission::reserve_ops(&obj, allocation.as_ref()));
                    create_charged(&state, key, value, charges).await
                }
                Err(e) => {
                    admission::release(&state, allocation.as_ref());
                    return Err(e);
                }
            };
        match written {
            Ok(kv) => return Ok(stamped(&kv, info)),
            Err(StoreError::AlreadyExists { key: taken })
                if reallocations < MAX_REALLOCATIONS
                    && admission::lost_reservation(&state, allocation.as_ref(), &taken) =>
            {
                reallocations += 1;
                let name = obj.name().to_string();
                obj = unallocated.clone();
                obj.metadata_mut().name = name;
                allocation = admission::allocate_create(&state, &mut obj)?;
            }
            Err(StoreError::AlreadyExists { .. }) if generate && renames < 8 => {
                renames += 1;
                obj.metadata_mut().name = generated_name(&obj.metadata().generate_name.clone());
            }
            // a quota changed since it was read: charge it again
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => {
                admission::release(&state, allocation.as_ref());
                return Err(ApiError::from_store(e, info, obj.name()));
            }
        }
    }
}

/// How many times a Service write is tried again after other apiservers took the values
/// it was given (each time they are marked taken, so this bounds a storm, not a normal race).
const MAX_REALLOCATIONS: u32 = 32;

/// Creates `key`, with the quota charges (if any) in the same transaction.
async fn create_charged(
    state: &State,
    key: String,
    value: Bytes,
    mut charges: Vec<rkube_store::Op>,
) -> Result<KeyValue, StoreError> {
    if charges.is_empty() {
        return state.store.create(&key, value).await;
    }
    charges.push(rkube_store::Op::Create {
        key: key.clone(),
        value: value.clone(),
    });
    let result = state.store.txn(charges).await?;
    Ok(KeyValue {
        key,
        value,
        create_revision: result.revision,
        mod_revision: result.revision,
    })
}

/// Deletes `key` at revision `expected`, with `more` ops (a Service's released
/// reservations) in the same transaction; returns the deleted value at the delete's
/// revision.
async fn delete_with(
    state: &State,
    key: &str,
    expected: rkube_store::Revision,
    more: Vec<rkube_store::Op>,
) -> Result<KeyValue, StoreError> {
    if more.is_empty() {
        let (rev, mut kv) = state.store.delete(key, Some(expected)).await?;
        kv.mod_revision = rev;
        return Ok(kv);
    }
    let mut ops = vec![rkube_store::Op::Delete {
        key: key.to_string(),
        expected: Some(expected),
    }];
    ops.extend(more);
    let result = state.store.txn(ops).await?;
    let mut kv = result
        .prev
        .into_iter()
        .next()
        .flatten()
        .ok_or_else(|| StoreError::NotFound { key: key.to_string() })?;
    kv.mod_revision = result.revision;
    Ok(kv)
}

/// Replaces `current` with `value`, guarded by its revision, with `more` ops (a Service's
/// reservations taken and released) in the same transaction.
async fn put_with(
    state: &State,
    key: &str,
    value: Bytes,
    current: &KeyValue,
    more: Vec<rkube_store::Op>,
) -> Result<KeyValue, StoreError> {
    if more.is_empty() {
        return state.store.put(key, value, Some(current.mod_revision)).await;
    }
    let mut ops = vec![rkube_store::Op::Put {
        key: key.to_string(),
        value: value.clone(),
        expected: Some(current.mod_revision),
    }];
    ops.extend(more);
    let result = state.store.txn(ops).await?;
    Ok(KeyValue {
        key: key.to_string(),
        value,
        create_revision: current.create_revision,
        mod_revision: result.revision,
    })
}

pub async fn get<K: Resource>(state: Arc<State>, req: rpc::GetRequest) -> ApiResult<Any> {
    let info = K::info();
    let key = storage_key(info, &namespace_or_default(info, &req.namespace), &req.name);
    read(&state, &key, info, &req.name).map(|kv| stamped(&kv, info))
}

/// The stored object at `key`; NotFound if there is none, and an error
/// naming it if it cannot be read back (a Secret encrypted with another key).
pub(crate) fn read(state: &State, key: &str, info: &ResourceInfo, name: &str) -> ApiResult<KeyValue> {
    state
        .store
        .try_get(key)
        .map_err(|e| ApiError::from_store(e, info, name))?
        .ok_or_else(|| ApiError::not_found(info, name))
}

pub(crate) fn namespace_or_default(info: &ResourceInfo, ns: &str) -> String {
    if info.namespaced && ns.is_empty() {
        "default".into()
    } else {
        ns.into()
    }
}

/// Before a read that must reflect every write made before it through any
/// apiserver (a list, the initial state of a watch; as Kubernetes serves
/// them): on etcd, waits until this apiserver's cache has caught up with
/// etcd. Gets are served from the cache as it is, which already holds this
/// apiserver's own writes; a get races only writes made elsewhere, which
/// updates with a resourceVersion catch as Conflicts. When etcd cannot be
/// asked, the cache serves what it has: reads keep working while etcd is
/// down.
pub(crate) async fn consistent_read(state: &State) {
    if let Err(e) = state.store.sync().await {
        tracing::debug!("serving a list from the cache without confirming it is current: {e}");
    }
}

/// Parsed selectors of a list or watch.
struct Filter {
    labels: Selector,
    fields: FieldSelector,
}

impl Filter {
    fn parse<K: Resource>(label_selector: &str, field_selector: &str) -> ApiResult<Self> {
        let labels = Selector::parse(label_selector).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields =
            FieldSelector::parse(field_selector).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let probe = K::default();
        for f in fields.fields() {
            if probe.field(f).is_none() {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {f} (for {}, select by metadata.name or metadata.namespace)",
                    K::INFO.plural
                )));
            }
        }
        Ok(Filter { labels, fields })
    }

    fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    fn matches<K: Resource>(&self, obj: &K) -> bool {
        self.labels.matches(&obj.metadata().labels) && self.fields.matches(|f| obj.field(f))
    }

    fn matches_kv<K: Resource>(&self, kv: &KeyValue) -> ApiResult<bool> {
        if self.is_empty() {
            return Ok(true);
        }
        Ok(self.matches(&decode_stored::<K>(kv)?))
    }
}

pub(crate) fn encode_continue(revision: u64, key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{revision}:{key}"))
}

pub(crate) fn decode_continue(token: &str) -> ApiResult<(u64, String)> {
    let bad = || {
        ApiError::bad_request(format!(
            "continue token {token:?} is not valid; start the list again without it"
        ))
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (rev, key) = raw.split_once(':').ok_or_else(bad)?;
    Ok((rev.parse().map_err(|_| bad())?, key.to_string()))
}

pub async fn list<K: Resource>(state: Arc<State>, req: rpc::ListRequest) -> ApiResult<rpc::ListResponse> {
    let info = K::info();
    let filter = Filter::parse::<K>(&req.label_selector, &req.field_selector)?;
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
    let store_err = |e| ApiError::from_store(e, info, "");
    let mut items = Vec::new();
    let page_size = if limit == 0 { 0 } else { limit.max(500) };
    loop {
        let page = state
            .store
            .list(&prefix, after.as_deref(), page_size, at)
            .map_err(store_err)?;
        at = Some(page.revision);
        let n = page.items.len();
        for (i, kv) in page.items.iter().enumerate() {
            if filter.matches_kv::<K>(kv)? {
                items.push(stamped(kv, info));
                if limit != 0 && items.len() == limit {
                    let more = i + 1 < n || page.more;
                    let remaining = (!more).then_some(0).or_else(|| {
                        filter
                            .is_empty()
                            .then(|| (n - i - 1) as i32 + page.remaining as i32)
                    });
                    return Ok(rpc::ListResponse {
                        items,
                        resource_version: page.revision.to_string(),
                        r#continue: if more {
                            encode_continue(page.revision, &kv.key)
                        } else {
                            String::new()
                        },
                        remaining_item_count: if more { remaining } else { None },
                    });
                }
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

/// Metadata a client may not change through Update.
fn keep_system_metadata<K: Resource>(new: &mut K, old: &K) {
    let o = old.metadata();
    let n = new.metadata_mut();
    n.uid = o.uid.clone();
    n.creation_timestamp = o.creation_timestamp.clone();
    n.deletion_timestamp = o.deletion_timestamp.clone();
    n.deletion_grace_period_seconds = o.deletion_grace_period_seconds;
    n.generation = o.generation;
    n.namespace = o.namespace.clone();
    n.generate_name = if n.generate_name.is_empty() {
        o.generate_name.clone()
    } else {
        n.generate_name.clone()
    };
}

/// Update (spec and metadata) or UpdateStatus (status only).
pub async fn update<K: Resource>(
    state: Arc<State>,
    req: rpc::UpdateRequest,
    status: bool,
    writer: &Writer,
) -> ApiResult<Any> {
    let obj: K = decode_request(req.object)?;
    let scope = if status { Scope::Status } else { Scope::Main };
    update_object(state, obj, status, req.dry_run, Tracking::of(writer), scope).await
}

pub(crate) async fn update_object<K: Resource>(
    state: Arc<State>,
    incoming: K,
    status: bool,
    dry_run: bool,
    tracking: Tracking<'_>,
    scope: Scope,
) -> ApiResult<Any> {
    let info = K::info();
    let name = incoming.name().to_string();
    if name.is_empty() {
        return Err(ApiError::invalid(
            info,
            "",
            vec![rkube_api::validation::FieldError {
                field: "metadata.name".into(),
                kind: rkube_api::validation::ErrorType::Required,
                detail: "name is required".into(),
            }],
        ));
    }
    let namespace = namespace_or_default(info, incoming.namespace());
    let key = storage_key(info, &namespace, &name);
    let wanted_rv = incoming.metadata().resource_version.clone();
    loop {
        let kv = read(&state, &key, info, &name)?;
        if !wanted_rv.is_empty() && wanted_rv != kv.mod_revision.to_string() {
            return Err(ApiError::stale(info, &name));
        }
        let old: K = decode_stored(&kv)?;
        let mut new = if status {
            // UpdateStatus: everything but status comes from the stored object
            let mut n = old.clone();
            n.copy_status_from(&incoming);
            n
        } else {
            let mut n = incoming.clone();
            keep_system_metadata(&mut n, &old);
            n.copy_status_from(&old);
            n.apply_defaults();
            admission::prepare_update(&mut n, &old);
            if !n.same_spec(&old) {
                n.metadata_mut().generation = old.metadata().generation + 1;
            }
            n
        };
        new.set_type_meta();
        new.metadata_mut().resource_version = kv.mod_revision.to_string();
        if !matches!(tracking, Tracking::Done) {
            managed_fields::on_update(&old, &mut new, tracking, scope)?;
        }
        // a CertificateSigningRequest's status carries its decision, checked
        // as Kubernetes does (no Approved with Denied, none taken back)
        if !status || info.kind == "CertificateSigningRequest" {
            validate(&new, Some(&old))?;
            crate::pod_security::admit_update(&state, &new, &old)?;
        }
        // nothing changed: no write, no new resourceVersion (unless the
        // Secret is encrypted with a key being rotated out)
        if new == old && !state.encrypted.stale(&key) {
            return Ok(stamped(&kv, info));
        }
        // node ports for a type change or a new port; what is no longer held
        // goes back once the write succeeds
        let allocation = if status {
            None
        } else {
            admission::allocate_update(&state, &mut new, &old)?
        };
        let (taken, freed) = match &allocation {
            Some((t, f)) => (Some(t), Some(f)),
            None => (None, None),
        };
        if dry_run {
            admission::release(&state, taken);
            return Ok(rkube_api::to_any(&new));
        }
        let removed_last_finalizer =
            !old.metadata().finalizers.is_empty() && new.metadata().finalizers.is_empty();
        let deleting =
            removed_last_finalizer && !new.metadata().deletion_timestamp.is_empty() && deletable_now(&new);
        let result = if deleting {
            // a Service's reservations go in the same transaction as its removal
            let released = admission::release_deleted_ops(&state, &old).unwrap_or_default();
            delete_with(&state, &key, kv.mod_revision, released).await
        } else {
            match encode_for_store(&new) {
                Ok(value) => {
                    let mut ops = admission::reserve_ops(&new, taken);
                    ops.extend(admission::release_ops(&state, freed));
                    put_with(&state, &key, value, &kv, ops).await
                }
                Err(e) => {
                    admission::release(&state, taken);
                    return Err(e);
                }
            }
        };
        if let Err(StoreError::AlreadyExists { key: lost }) = &result {
            if admission::lost_reservation(&state, taken, lost) {
                // another apiserver took a value first: read and allocate again
                continue;
            }
        }
        if let Err(StoreError::NotFound { key: gone }) = &result {
            if gone != &key {
                // a reservation key went away meanwhile: work it out again
                admission::release(&state, taken);
                continue;
            }
        }
        if result.is_err() {
            admission::release(&state, taken);
        } else if deleting {
            admission::release(&state, taken);
            admission::release_deleted(&state, &new);
        } else {
            admission::release(&state, freed);
        }
        match result {
            Ok(kv) => return Ok(stamped(&kv, info)),
            // an unconditional update retries against the newer object
            Err(StoreError::Conflict { .. }) if wanted_rv.is_empty() => continue,
            Err(e) => return Err(ApiError::from_store(e, info, &name)),
        }
    }
}

/// Whether an object marked for deletion can go now that it has no
/// finalizers. A pod bound to a node waits for its kubelet to stop it
/// (graceful deletion), unless its grace period is zero.
fn deletable_now<K: Resource>(obj: &K) -> bool {
    if let Some(pod) = (obj as &dyn std::any::Any).downcast_ref::<rkube_api::core::v1::Pod>() {
        let bound = pod.spec.as_ref().is_some_and(|s| !s.node_name.is_empty());
        return !bound || pod.metadata().deletion_grace_period_seconds.unwrap_or(0) == 0;
    }
    true
}

pub async fn patch<K: Resource>(
    state: Arc<State>,
    req: rpc::PatchRequest,
    writer: &Writer,
) -> ApiResult<Any> {
    let info = K::info();
    let status = match req.subresource.as_str() {
        // the REST face turns a write to `scale` into a spec.replicas patch
        "" | "scale" => false,
        "status" => true,
        // a CertificateSigningRequest's decision: its conditions, which the
        // status rules below keep from removing a decision or a certificate
        "approval" if info.kind == "CertificateSigningRequest" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "subresource {other:?} cannot be patched; use \"\", \"status\" or \"scale\""
            )))
        }
    };
    let patch: serde_json::Value = serde_json::from_slice(&req.patch)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let applying = req.patch_type == "apply";
    if applying && writer.manager.is_empty() {
        let mut e = ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        );
        e.reason = "Invalid";
        return Err(e);
    }
    if applying && !patch.is_object() {
        return Err(ApiError::bad_request(
            "an applied configuration must be an object",
        ));
    }
    if writer.force && !applying {
        return Err(ApiError::bad_request("force is only allowed for apply patches"));
    }
    let scope = Scope::of_subresource(&req.subresource);
    let key = storage_key(info, &namespace_or_default(info, &req.namespace), &req.name);
    loop {
        let kv = read(&state, &key, info, &req.name)?;
        let current: K = decode_stored(&kv)?;
        let mut doc = serde_json::to_value(&current).map_err(|e| ApiError::internal(e.to_string()))?;
        let mut owners = Vec::new();
        if applying {
            owners = managed_fields::decode(&current.metadata().managed_fields);
            doc = managed_fields::apply(info, &doc, &mut owners, &patch, writer, scope)
                .map_err(|c| managed_fields::conflict_error(info, &req.name, &c))?;
        } else {
            crate::rest::patch::apply(&req.patch_type, info.kind, &mut doc, &patch)?;
        }
        let mut patched: K = serde_path_to_error_json::<K>(doc).map_err(|(path, msg)| {
            ApiError::invalid(
                info,
                &req.name,
                vec![rkube_api::validation::FieldError {
                    field: path,
                    kind: rkube_api::validation::ErrorType::Invalid(String::new()),
                    detail: msg,
                }],
            )
        })?;
        // a patch that names a resourceVersion is a precondition; otherwise
        // it applies to whatever is current (and retries on a race)
        let precondition = patched.metadata().resource_version != kv.mod_revision.to_string();
        if !precondition {
            patched.metadata_mut().resource_version = kv.mod_revision.to_string();
        }
        let tracking = if applying {
            patched.metadata_mut().managed_fields = managed_fields::encode(&owners);
            Tracking::Done
        } else {
            Tracking::of(writer)
        };
        match update_object(state.clone(), patched, status, req.dry_run, tracking, scope).await {
            Err(e) if e.reason == "Conflict" && !precondition => continue,
            other => return other,
        }
    }
}

fn serde_path_to_error_json<K: Resource>(doc: serde_json::Value) -> Result<K, (String, String)> {
    serde_path_to_error::deserialize::<_, K>(doc).map_err(|e| (e.path().to_string(), e.inner().to_string()))
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match patch {
        serde_json::Value::Object(p) => {
            if !target.is_object() {
                *target = serde_json::Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("just made an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

pub async fn delete<K: Resource>(state: Arc<State>, req: rpc::DeleteRequest) -> ApiResult<Any> {
    let info = K::info();
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
    admission::check_delete(&state, info, &name)?;
    crate::pod_priority::check_delete(info, &name)?;
    loop {
        let kv = read(&state, &key, info, &name)?;
        let obj: K = decode_stored(&kv)?;
        if let Some(p) = &req.preconditions {
            if !p.uid.is_empty() && p.uid != obj.metadata().uid {
                return Err(ApiError::conflict(
                    info,
                    &name,
                    &format!(
                        "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                        p.uid,
                        obj.metadata().uid
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
        let grace = admission::grace_period(&obj, req.grace_period_seconds);
        let mut marked = obj.clone();
        {
            let m = marked.metadata_mut();
            match policy {
                "Foreground" if !m.finalizers.iter().any(|f| f == "foregroundDeletion") => {
                    m.finalizers.push("foregroundDeletion".into())
                }
                "Orphan" if !m.finalizers.iter().any(|f| f == "orphan") => m.finalizers.push("orphan".into()),
                _ => {}
            }
        }
        admission::prepare_delete(&mut marked);
        let already = !obj.metadata().deletion_timestamp.is_empty();
        let must_wait = !marked.metadata().finalizers.is_empty() || grace.is_some_and(|g| g > 0);
        if req.dry_run {
            return Ok(stamped(&kv, info));
        }
        let result = if must_wait {
            let m = marked.metadata_mut();
            if !already {
                m.deletion_timestamp = match grace {
                    Some(g) if g > 0 => {
                        rkube_api::time::format(chrono::Utc::now() + chrono::Duration::seconds(g as i64))
                    }
                    _ => now(),
                };
            }
            // a later delete may shorten the grace period, never lengthen it
            let new_grace = grace.unwrap_or(0);
            m.deletion_grace_period_seconds = Some(match m.deletion_grace_period_seconds {
                Some(old) if already => old.min(new_grace),
                _ => new_grace,
            });
            if marked == obj {
                return Ok(stamped(&kv, info));
            }
            state
                .store
                .put(&key, encode_for_store(&marked)?, Some(kv.mod_revision))
                .await
        } else {
            // a Service's reservations go in the same transaction as its removal
            let released = admission::release_deleted_ops(&state, &obj).unwrap_or_default();
            delete_with(&state, &key, kv.mod_revision, released).await
        };
        match result {
            Ok(kv) => {
                if !must_wait {
                    admission::release_deleted(&state, &obj);
                }
                return Ok(stamped(&kv, info));
            }
            Err(StoreError::Conflict { .. }) => continue,
            // a reservation key went away meanwhile: work it out again
            Err(StoreError::NotFound { key: gone }) if gone != key => continue,
            Err(e) => return Err(ApiError::from_store(e, info, &name)),
        }
    }
}

pub async fn bind(state: Arc<State>, req: rpc::BindRequest) -> ApiResult<Any> {
    use rkube_api::core::v1::{Pod, PodCondition};
    let info = Pod::info();
    if req.node_name.is_empty() {
        return Err(ApiError::bad_request("a binding needs a node name"));
    }
    let key = storage_key(info, &namespace_or_default(info, &req.namespace), &req.name);
    loop {
        let kv = read(&state, &key, info, &req.name)?;
        let mut pod: Pod = decode_stored(&kv)?;
        if !req.uid.is_empty() && req.uid != pod.metadata().uid {
            return Err(ApiError::conflict(
                info,
                &req.name,
                "the pod was deleted and recreated (uid changed); schedule the new pod",
            ));
        }
        if !pod.metadata().deletion_timestamp.is_empty() {
            return Err(ApiError::conflict(
                info,
                &req.name,
                &format!("pod {} is being deleted, cannot be assigned to a host", req.name),
            ));
        }
        let spec = pod.spec.get_or_insert_with(Default::default);
        if !spec.node_name.is_empty() {
            return Err(ApiError::conflict(
                info,
                &req.name,
                &format!(
                    "pod {} is already assigned to node {:?}",
                    req.name, spec.node_name
                ),
            ));
        }
        if !spec.scheduling_gates.is_empty() {
            return Err(ApiError::conflict(
                info,
                &req.name,
                &format!(
                    "pod {} has non-empty .spec.schedulingGates; remove them before binding",
                    req.name
                ),
            ));
        }
        spec.node_name = req.node_name.clone();
        let status = pod.status.get_or_insert_with(Default::default);
        status.conditions.retain(|c| c.r#type != "PodScheduled");
        status.conditions.push(PodCondition {
            r#type: "PodScheduled".into(),
            status: "True".into(),
            last_transition_time: now(),
            ..Default::default()
        });
        match state
            .store
            .put(&key, encode_for_store(&pod)?, Some(kv.mod_revision))
            .await
        {
            Ok(kv) => return Ok(stamped(&kv, info)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, info, &req.name)),
        }
    }
}

pub type WatchSender = mpsc::Sender<Result<rpc::WatchEvent, tonic::Status>>;

pub(crate) fn event(kind: &str, object: Any) -> rpc::WatchEvent {
    rpc::WatchEvent {
        r#type: kind.into(),
        object: Some(object),
        resource_version: String::new(),
    }
}

/// Starts a watch: validates the request, then streams in a task until the
/// client goes away or the server shuts down.
pub async fn watch<K: Resource>(state: Arc<State>, req: rpc::WatchRequest, tx: WatchSender) -> ApiResult<()> {
    let info = K::info();
    let filter = Filter::parse::<K>(&req.label_selector, &req.field_selector)?;
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
            for kv in &snapshot.items {
                if filter.matches_kv::<K>(kv)? {
                    initial.push(event("ADDED", stamped(kv, info)));
                }
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
                Some(Ok(WatchItem::Event(ev))) => match translate::<K>(&filter, info, ev) {
                    Ok(Some(e)) => e,
                    Ok(None) => continue,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                },
            };
            if tx.send(Ok(out)).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Turns a store event into what a watcher with this filter sees: an
/// object that starts matching is ADDED, one that stops matching is DELETED.
fn translate<K: Resource>(
    filter: &Filter,
    info: &ResourceInfo,
    ev: rkube_store::Event,
) -> ApiResult<Option<rpc::WatchEvent>> {
    let now_matches = filter.matches_kv::<K>(&ev.kv)?;
    match ev.kind {
        EventKind::Delete => Ok(now_matches.then(|| event("DELETED", stamped(&ev.kv, info)))),
        EventKind::Put => {
            let was = match &ev.prev {
                Some(prev) => Some(filter.matches_kv::<K>(prev)?),
                None => None,
            };
            Ok(match (was, now_matches) {
                (None, true) | (Some(false), true) => Some(event("ADDED", stamped(&ev.kv, info))),
                (Some(true), true) => Some(event("MODIFIED", stamped(&ev.kv, info))),
                (Some(true), false) => Some(event("DELETED", stamped(&ev.kv, info))),
                _ => None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1, 2]});
        merge_patch(&mut doc, &json!({"a": [3]}));
        assert_eq!(doc, json!({"a": [3]}));
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "core/pods/default/x");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, "core/pods/default/x".to_string())
        );
        assert!(decode_continue("!!").is_err());
    }

    #[test]
    fn keys_are_scoped() {
        let pods = <rkube_api::core::v1::Pod as Resource>::info();
        let nodes = <rkube_api::core::v1::Node as Resource>::info();
        let deploys = <rkube_api::apps::v1::Deployment as Resource>::info();
        assert_eq!(storage_key(pods, "default", "x"), "core/pods/default/x");
        assert_eq!(storage_prefix(pods, ""), "core/pods/");
        assert_eq!(storage_key(nodes, "", "n1"), "core/nodes/n1");
        assert_eq!(storage_key(deploys, "ns", "web"), "apps/deployments/ns/web");
    }
}
