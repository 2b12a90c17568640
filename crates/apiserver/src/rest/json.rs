//! Objects between their wire form (`Any`, what the handlers speak) and
//! Kubernetes JSON, through the api crate's pbjson mapping (which also
//! writes the zero values Kubernetes always emits: `rkube_api::zero_values`).
//! Added here: tolerance for what clients send back unchanged (`null`s such as
//! `creationTimestamp: null`, and `selfLink`, which rkube does not keep).
//!
//! Two ways out: [`to_json`], a `serde_json::Value` for the answers that are reshaped
//! (tables, metadata, Scale), and the same JSON serialized straight from the typed
//! object (`encoder`, no `Value` in between) for everything sent as it is: lists and
//! watch events ([`items_json`], [`to_json_bytes`], through [`JsonCache`]) and single
//! objects ([`object_json`]).

use super::encoder::Encoder;
use crate::error::ApiError;
use prost_types::Any;
use rkube_api::{to_any, visit_kind, KindVisitor, Resource, ResourceInfo};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The Kubernetes JSON of a wire object, with apiVersion, kind and the
/// zero values Kubernetes writes.
pub fn to_json(info: &ResourceInfo, any: &Any) -> Result<Value, ApiError> {
    if is_json_kind(info) {
        return json_kind_object(info, any);
    }
    rkube_api::codec::any_to_json(info, any).map_err(|e| ApiError::internal(e.to_string()))
}

/// The Kubernetes JSON of a wire object, serialized: from [`JsonCache`] when this very
/// version was serialized before (a list, a watch event for many watchers, or the
/// apiserver's background encoding of every new version, `rest::warm`).
pub fn to_json_bytes(info: &ResourceInfo, any: &Any) -> Result<Arc<[u8]>, ApiError> {
    if is_json_kind(info) {
        return Ok(Arc::from(object_json(info, any)?));
    }
    JsonCache::global().encode(info, any)
}

/// The Kubernetes JSON of one object, serialized and not kept: a single answer (a get,
/// or what a write made), which nothing else is likely to send again.
pub fn object_json(info: &ResourceInfo, any: &Any) -> Result<Vec<u8>, ApiError> {
    if is_json_kind(info) {
        return serde_json::to_vec(&json_kind_object(info, any)?)
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    struct One<'a>(&'a Any);
    impl KindVisitor for One<'_> {
        type Output = Result<Vec<u8>, ApiError>;
        fn visit<K: Resource>(self) -> Self::Output {
            let mut out = Vec::with_capacity(self.0.value.len() * 5 / 2);
            write_object::<K>(&mut Encoder::new(), self.0, &mut out)?;
            Ok(out)
        }
    }
    visit_kind(info, One(any))
}

/// Appends the Kubernetes JSON of `any`, an object of kind `K`, to `out`: the bytes of
/// `serde_json::to_vec(&to_json(..))`, written without the `Value`.
fn write_object<K: Resource>(encoder: &mut Encoder, any: &Any, out: &mut Vec<u8>) -> Result<(), ApiError> {
    let mut obj: K = rkube_api::codec::from_any(any).map_err(|e| ApiError::internal(e.to_string()))?;
    obj.set_type_meta();
    encoder
        .write(&obj, out)
        .map_err(|e| ApiError::internal(format!("cannot write {} as JSON: {e}", K::INFO.kind)))
}

/// The JSON of every one of `items`, in order and separated by commas, written on
/// every core when there are many (a list of 10,000 pods is mostly this): one part per
/// core, to be sent one after the other (each but the first starts with its comma).
/// Each item's JSON comes from [`JsonCache`] or is written into its part and kept there.
pub fn items_json(info: &ResourceInfo, items: &[Any]) -> Result<Vec<Vec<u8>>, ApiError> {
    const PER_THREAD: usize = 256;
    if is_json_kind(info) {
        let mut out = Vec::new();
        for (i, any) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend(object_json(info, any)?);
        }
        return Ok(vec![out]);
    }
    let cache = JsonCache::global();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len().div_ceil(PER_THREAD))
        .max(1);
    if threads == 1 {
        return Ok(vec![cache.write_all(info, items, false)?]);
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| scope.spawn(move || cache.write_all(info, part, i > 0)))
            .collect();
        parts
            .into_iter()
            .map(|part| {
                part.join()
                    .map_err(|_| ApiError::internal("encoding a list item panicked"))?
            })
            .collect()
    })
}

/// Whether objects of `info`'s kind are JSON documents (CRDs and custom
/// objects: `rkube.dev/json/...` type URLs) rather than proto messages.
pub fn is_json_kind(info: &ResourceInfo) -> bool {
    info.type_url.starts_with(rkube_api::crd::JSON_TYPE_PREFIX)
}

/// A JSON kind's object in the version `info` serves: the handlers answer in the
/// storage version, and versions differ only in apiVersion (conversion None).
fn json_kind_object(info: &ResourceInfo, any: &Any) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(&any.value)
        .map_err(|e| ApiError::internal(format!("a {} object is not JSON: {e}", info.kind)))?;
    if v.is_object() {
        v["apiVersion"] = Value::String(info.api_version());
    }
    Ok(v)
}

/// Serialized JSON of object versions, keyed by their wire bytes (which carry the
/// resourceVersion, so a changed object is a new key): as Kubernetes' apiserver encodes a
/// watch event once for all its watchers, rkube encodes an object version once for every
/// list and watch that sends it. Two generations bounded by bytes: when the young one is
/// full it becomes the old one and the old one is dropped, so what lists and watches keep
/// asking for stays and the rest ages out.
///
/// Secrets are never kept (see [`JsonCache::keeps`]).
pub struct JsonCache {
    state: Mutex<Generations>,
    limit: usize,
    /// Items of kept kinds found held, and written because they were not.
    found: AtomicU64,
    written: AtomicU64,
}

#[derive(Default)]
struct Generations {
    young: Versions,
    old: Versions,
    young_bytes: usize,
    old_bytes: usize,
}

/// JSON by type URL and then by wire bytes: two levels, so that a lookup borrows the
/// `Any`'s own strings instead of building a key (a list looks up every item).
type Versions = HashMap<String, HashMap<Box<[u8]>, Arc<[u8]>>>;

/// An item's JSON as [`JsonCache::each`] hands it over: as kept in the cache, or (a
/// kind not kept) in the encoder's buffer.
enum Item<'a> {
    Shared(Arc<[u8]>),
    Bytes(&'a [u8]),
}

impl JsonCache {
    /// Up to this many bytes of JSON and wire bytes together per generation. A pod as a
    /// Deployment's running replica takes about 1.6 KB (1.1 KB of JSON, 0.5 KB of wire
    /// bytes), so one generation holds a 10,000-pod list (16 MB) with room to spare, and
    /// the whole cache, two generations, stays within 64 MiB.
    pub const LIMIT: usize = 32 << 20;

    pub fn global() -> &'static JsonCache {
        static CACHE: OnceLock<JsonCache> = OnceLock::new();
        CACHE.get_or_init(|| JsonCache::new(Self::LIMIT))
    }

    pub fn new(limit: usize) -> JsonCache {
        JsonCache {
            state: Mutex::default(),
            limit,
            found: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// Whether objects of this kind are kept. Not Secrets: their data would sit in the
    /// apiserver's memory in the clear, as JSON and wire bytes, long after any request
    /// needed it (the store encrypts them at rest when given a key), and a Secret list is
    /// neither large nor frequent enough to need the cache.
    pub fn keeps(info: &ResourceInfo) -> bool {
        info.kind != "Secret"
    }

    /// How many items of kept kinds lists, watches and the background encoding found
    /// held, and how many they wrote because they were not (the benchmark reports what
    /// a list right after many writes had to write itself).
    pub fn lookups(&self) -> (u64, u64) {
        (
            self.found.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        )
    }

    /// One generation's byte limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The bytes held now (JSON and wire bytes, both generations): at most twice
    /// [`JsonCache::limit`].
    pub fn bytes(&self) -> usize {
        let g = self.lock();
        g.young_bytes + g.old_bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The JSON of `any`, from the cache or made (and kept, if its kind is kept).
    pub fn encode(&self, info: &ResourceInfo, any: &Any) -> Result<Arc<[u8]>, ApiError> {
        let mut json = None;
        self.each(info, std::slice::from_ref(any), |_, item| {
            json = Some(match item {
                Item::Shared(json) => json,
                Item::Bytes(bytes) => Arc::from(bytes),
            });
        })?;
        json.ok_or_else(|| ApiError::internal("encoding an object gave no JSON"))
    }

    /// The JSON of each of `items` (all of `info`'s kind), from the cache or made (and
    /// kept, if their kind is kept), joined by commas (and starting with one if
    /// `leading_comma`).
    pub fn write_all(
        &self,
        info: &ResourceInfo,
        items: &[Any],
        leading_comma: bool,
    ) -> Result<Vec<u8>, ApiError> {
        // a pod's JSON is about twice its wire bytes: room for most lists without growing
        let wire: usize = items.iter().map(|a| a.value.len()).sum();
        let mut out = Vec::with_capacity(wire * 5 / 2 + items.len() + 1);
        self.each(info, items, |i, item| {
            if i > 0 || leading_comma {
                out.push(b',');
            }
            match item {
                Item::Shared(json) => out.extend_from_slice(&json),
                Item::Bytes(bytes) => out.extend_from_slice(bytes),
            }
        })?;
        Ok(out)
    }

    /// Calls `f` with each of `items`' JSON in order, found in the cache or written (and
    /// then kept, if the kind is kept): one dispatch on the kind and one encoder for all.
    fn each(
        &self,
        info: &ResourceInfo,
        items: &[Any],
        f: impl FnMut(usize, Item<'_>),
    ) -> Result<(), ApiError> {
        struct Part<'a, F> {
            cache: &'a JsonCache,
            items: &'a [Any],
            keep: bool,
            f: F,
        }
        impl<F: FnMut(usize, Item<'_>)> KindVisitor for Part<'_, F> {
            type Output = Result<(), ApiError>;
            fn visit<K: Resource>(mut self) -> Self::Output {
                thread_local! {
                    // the warm-up worker and watches encode one object at a time: their
                    // encoder keeps its buffers from one object to the next
                    static IDLE: std::cell::RefCell<(Encoder, Vec<u8>)> = Default::default();
                }
                let (mut encoder, mut buf) = IDLE.with(|idle| idle.take());
                let mut done = Ok(());
                let (mut found, mut written) = (0, 0);
                for (i, any) in self.items.iter().enumerate() {
                    if self.keep {
                        if let Some(hit) = self.cache.get(any) {
                            found += 1;
                            (self.f)(i, Item::Shared(hit));
                            continue;
                        }
                    }
                    buf.clear();
                    if let Err(e) = write_object::<K>(&mut encoder, any, &mut buf) {
                        done = Err(e);
                        break;
                    }
                    if self.keep {
                        written += 1;
                        let json: Arc<[u8]> = Arc::from(&buf[..]);
                        self.cache.put(any, json.clone());
                        (self.f)(i, Item::Shared(json));
                    } else {
                        (self.f)(i, Item::Bytes(&buf));
                    }
                }
                if self.keep {
                    self.cache.found.fetch_add(found, Ordering::Relaxed);
                    self.cache.written.fetch_add(written, Ordering::Relaxed);
                }
                // kept small: a large object's buffers are not held for ever
                if buf.capacity() <= 64 << 10 {
                    buf.clear();
                    IDLE.with(|idle| idle.replace((encoder, buf)));
                }
                done
            }
        }
        visit_kind(
            info,
            Part {
                cache: self,
                items,
                keep: Self::keeps(info),
                f,
            },
        )
    }

    /// Whether this version's JSON is held, without refreshing it.
    pub fn contains(&self, any: &Any) -> bool {
        let g = self.lock();
        let held = |v: &Versions| {
            v.get(any.type_url.as_str())
                .is_some_and(|m| m.contains_key(any.value.as_slice()))
        };
        held(&g.young) || held(&g.old)
    }

    pub fn get(&self, any: &Any) -> Option<Arc<[u8]>> {
        let mut guard = self.lock();
        let g = &mut *guard;
        if let Some(hit) = g
            .young
            .get(any.type_url.as_str())
            .and_then(|m| m.get(any.value.as_slice()))
        {
            return Some(hit.clone());
        }
        let (wire, hit) = g
            .old
            .get_mut(any.type_url.as_str())?
            .remove_entry(any.value.as_slice())?;
        let size = hit.len() + wire.len();
        // moved, not added: the total stays within two generations, and a list reading
        // its items back from the old generation must not age out the rest of them
        g.old_bytes -= size;
        g.young_bytes += size;
        g.young
            .entry(any.type_url.clone())
            .or_default()
            .insert(wire, hit.clone());
        Some(hit)
    }

    pub fn put(&self, any: &Any, json: Arc<[u8]>) {
        let size = json.len() + any.value.len();
        if size > self.limit {
            return;
        }
        let mut guard = self.lock();
        let g = &mut *guard;
        Self::make_room(g, size, self.limit);
        g.young_bytes += size;
        if !g.young.contains_key(any.type_url.as_str()) {
            g.young.insert(any.type_url.clone(), HashMap::new());
        }
        let Some(versions) = g.young.get_mut(any.type_url.as_str()) else {
            return;
        };
        if let Some(replaced) = versions.insert(any.value.as_slice().into(), json) {
            g.young_bytes -= replaced.len() + any.value.len();
        }
    }

    /// Ages the young generation out when `size` more bytes would overflow it.
    fn make_room(g: &mut Generations, size: usize, limit: usize) {
        if g.young_bytes + size > limit {
            g.old = std::mem::take(&mut g.young);
            g.old_bytes = std::mem::take(&mut g.young_bytes);
        }
    }
}

/// Removes what clients send but rkube does not keep: `null` means
/// "absent" in Kubernetes JSON, and `metadata.selfLink` is gone from
/// Kubernetes. `metadata.managedFields` stays: a write that sends them sets
/// them (see `managed_fields::given_or_kept`).
pub fn normalize_incoming(v: &mut Value) {
    fn strip_nulls(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|_, v| !v.is_null());
                map.values_mut().for_each(strip_nulls);
            }
            Value::Array(items) => items.iter_mut().for_each(strip_nulls),
            _ => {}
        }
    }
    strip_nulls(v);
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("selfLink");
    }
}

/// `fieldValidation`: what to do with fields rkube does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Refuse the object (BadRequest naming the field).
    Strict,
    /// Drop the field and say so in a `Warning` header (Kubernetes'
    /// default when the parameter is absent).
    Warn,
    /// Drop the field silently.
    Ignore,
}

impl FieldValidation {
    pub fn parse(param: &str) -> Result<FieldValidation, ApiError> {
        match param {
            "Strict" => Ok(FieldValidation::Strict),
            "" | "Warn" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation {other:?} is not one of Strict, Warn, Ignore"
            ))),
        }
    }
}

/// A client's object (a request body) as the wire form of `info`'s kind,
/// with the warnings to send back. A body of another kind is a BadRequest;
/// unknown fields are refused, dropped with a warning, or dropped, as
/// `validation` says.
pub fn from_json(
    info: &'static ResourceInfo,
    mut v: Value,
    validation: FieldValidation,
) -> Result<(Any, Vec<String>), ApiError> {
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object ({} {})",
            info.api_version(),
            info.kind
        )));
    }
    normalize_incoming(&mut v);
    let api_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
    if (!kind.is_empty() && kind != info.kind)
        || (!api_version.is_empty() && api_version != info.api_version())
    {
        return Err(ApiError::bad_request(format!(
            "the body is a {kind} of apiVersion {api_version}, but this URL serves {} of apiVersion {}",
            info.kind,
            info.api_version()
        )));
    }
    if is_json_kind(info) {
        // the apiserver applies the CRD's schema (pruning, defaults, validation)
        let any = Any {
            type_url: info.type_url.to_string(),
            value: serde_json::to_vec(&v).map_err(|e| ApiError::internal(e.to_string()))?,
        };
        return Ok((any, Vec::new()));
    }
    /// A decoding failure: the field path and serde's message.
    struct Decode<'a>(&'a Value);
    impl KindVisitor for Decode<'_> {
        type Output = Result<Any, (String, String)>;
        fn visit<K: Resource>(self) -> Self::Output {
            serde_path_to_error::deserialize::<_, K>(self.0)
                .map(|k| to_any(&k))
                .map_err(|e| (e.path().to_string(), e.inner().to_string()))
        }
    }
    let mut warnings = Vec::new();
    loop {
        let (path, message) = match visit_kind(info, Decode(&v)) {
            Ok(any) => return Ok((any, warnings)),
            Err(e) => e,
        };
        let field = if path == "." {
            info.kind.to_string()
        } else {
            format!("{}.{path}", info.kind)
        };
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next());
        // A Kubernetes field rkube deliberately leaves out is refused whatever
        // fieldValidation says: dropping it would run something else than the user asked.
        if let Some(full) = unknown.map(|name| unknown_path(&path, name)) {
            if let Some(why) = rkube_api::unsupported::reason(&full) {
                return Err(ApiError::bad_request(format!(
                    "{}.{full}: unsupported field: {why}",
                    info.kind
                )));
            }
        }
        match unknown {
            // each pass removes one field, so this ends
            Some(name) if validation != FieldValidation::Strict && remove_field(&mut v, &path, name) => {
                if validation == FieldValidation::Warn {
                    warnings.push(format!("unknown field {:?}", unknown_path(&path, name)));
                }
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {field}: {message}"
                )))
            }
        }
    }
}

/// The segments of a serde path (`spec.containers[0].image`).
fn segments(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        if let Some(name) = pieces.next().filter(|n| !n.is_empty()) {
            out.push(name.to_string());
        }
        out.extend(pieces.map(|i| i.trim_end_matches(']').to_string()));
    }
    out
}

/// `path` as kubectl names fields (`spec.containers[0].foo`), ending in `name`.
fn unknown_path(path: &str, name: &str) -> String {
    if path == "." || path.is_empty() {
        name.to_string()
    } else if path == name || path.ends_with(&format!(".{name}")) {
        path.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Removes field `name` of the object at `path` (serde's path may end at
/// the field or at its parent); false if it is not there.
fn remove_field(v: &mut Value, path: &str, name: &str) -> bool {
    let mut segs = segments(if path == "." { "" } else { path });
    if segs.last().map(String::as_str) == Some(name) {
        segs.pop();
    }
    let mut at = v;
    for s in &segs {
        let next = match at {
            Value::Object(m) => m.get_mut(s),
            Value::Array(items) => s.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        };
        match next {
            Some(n) => at = n,
            None => return false,
        }
    }
    at.as_object_mut().is_some_and(|m| m.remove(name).is_some())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cached_json_is_the_objects_json_and_the_cache_ages_out() {
        let pod: Pod = serde_yaml::from_str(
            "metadata: {name: web, namespace: default, resourceVersion: '7'}\nspec: {containers: [{name: c, image: busybox}]}\nstatus: {containerStatuses: [{name: c}]}\n",
        )
        .unwrap();
        let any = to_any(&pod);
        let direct = serde_json::to_vec(&to_json(Pod::info(), &any).unwrap()).unwrap();
        assert_eq!(&*to_json_bytes(Pod::info(), &any).unwrap(), &direct[..]);
        // from the cache, the same bytes, zero values included
        let again = to_json_bytes(Pod::info(), &any).unwrap();
        assert_eq!(&*again, &direct[..]);
        assert!(String::from_utf8_lossy(&again).contains(r#""restartCount":0"#));
        let many: Vec<Any> = (0..600)
            .map(|i| {
                let mut p = pod.clone();
                p.metadata.as_mut().unwrap().name = format!("web-{i}");
                to_any(&p)
            })
            .collect();
        let parts = items_json(Pod::info(), &many).unwrap();
        let joined: Vec<u8> = parts.concat();
        let items: Value = serde_json::from_slice(&[&b"["[..], &joined, b"]"].concat()).unwrap();
        assert_eq!(items.as_array().map(Vec::len), Some(600));
        assert_eq!(items[599]["metadata"]["name"], "web-599");

        let cache = JsonCache::new(3 * (direct.len() + any.value.len()));
        cache.put(&any, direct.clone().into());
        assert!(cache.get(&any).is_some());
        for other in &many[..3] {
            cache.put(other, direct.clone().into());
        }
        // two generations' worth of other entries later it is gone
        for other in &many[3..9] {
            cache.put(other, direct.clone().into());
        }
        assert!(cache.get(&any).is_none());
    }

    use super::*;
    use rkube_api::core::v1::Pod;
    use serde_json::json;

    #[test]
    fn client_bodies_with_nulls_and_managed_fields_decode() {
        let body = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "creationTimestamp": null, "managedFields": [{"manager": "kubectl"}]},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {}
        });
        let (any, warnings) = from_json(Pod::info(), body, FieldValidation::Strict).unwrap();
        assert!(warnings.is_empty());
        let back = to_json(Pod::info(), &any).unwrap();
        assert_eq!(back["metadata"]["name"], "p");
        assert_eq!(back["kind"], "Pod");
        assert_eq!(back["apiVersion"], "v1");
        assert_eq!(
            back["metadata"]["managedFields"][0]["manager"], "kubectl",
            "a client's managedFields are kept (the handlers decide what they become)"
        );
    }

    #[test]
    fn wrong_kinds_and_unknown_fields_name_what_is_wrong() {
        let strict = FieldValidation::Strict;
        let err = from_json(
            Pod::info(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment"}),
            strict,
        )
        .unwrap_err();
        assert_eq!(err.reason, "BadRequest");
        assert!(err.message.contains("Deployment"), "{}", err.message);
        let err = from_json(
            Pod::info(),
            json!({"kind": "Pod", "spec": {"containerz": []}}),
            strict,
        )
        .unwrap_err();
        assert!(err.message.contains("Pod.spec"), "{}", err.message);
        assert!(err.message.contains("containerz"), "{}", err.message);
    }

    #[test]
    fn unknown_fields_are_dropped_with_warnings_unless_strict() {
        let body = json!({"kind": "Pod", "metadata": {"name": "p", "nickname": "x"},
                          "spec": {"containers": [{"name": "c", "image": "i", "colour": "red"}], "shiny": true}});
        let (any, warnings) = from_json(Pod::info(), body.clone(), FieldValidation::Warn).unwrap();
        assert_eq!(
            warnings,
            [
                "unknown field \"metadata.nickname\"",
                "unknown field \"spec.containers[0].colour\"",
                "unknown field \"spec.shiny\""
            ]
            .map(String::from)
            .to_vec()
        );
        let back = to_json(Pod::info(), &any).unwrap();
        assert_eq!(back["spec"]["containers"][0]["image"], "i");
        let (_, none) = from_json(Pod::info(), body.clone(), FieldValidation::Ignore).unwrap();
        assert!(none.is_empty());
        assert!(from_json(Pod::info(), body, FieldValidation::Strict).is_err());
        assert_eq!(FieldValidation::parse("").unwrap(), FieldValidation::Warn);
        assert!(FieldValidation::parse("Lenient").is_err());
    }
}
