//! Kinds known at run time: CustomResourceDefinitions and the kinds they
//! define. The static registry (`rkube_api::KINDS`) holds the kinds with a
//! proto message; beside it, [`CustomKinds`] holds the CRD kind itself and
//! every served version of every established CRD, rebuilt from the store
//! whenever a CRD is written (and at start). Both faces consult it where
//! they consult the static registry: the gRPC service's resolution, REST
//! routing, discovery, Table output, storage keys and RBAC (the same
//! `ResourceInfo` describes both).
//!
//! Objects of these kinds are JSON documents: stored as JSON under the same
//! `{group}/{plural}/{namespace}/{name}` keys, with the store's revision as
//! resourceVersion, and carried over gRPC in an `Any` whose type URL is
//! `rkube.dev/json/GROUP/VERSION/KIND` and whose value is the JSON. Their
//! verbs are in [`objects`]; they follow the built-in ones (uid, generation,
//! finalizers, graceful deletion, status subresource, selectors,
//! pagination, watch) without a typed message.

pub mod objects;

use rkube_api::crd::{self, CrdSpec, PrinterColumn, ScaleSubresource, CRD_INFO};
use rkube_api::ResourceInfo;
use rkube_store::Store;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// One served version of a custom kind, or the CRD kind itself.
#[derive(Debug)]
pub struct CustomKind {
    /// Names, scope and version as every other kind has them.
    pub info: &'static ResourceInfo,
    /// The version objects are stored in.
    pub storage_version: String,
    pub list_kind: String,
    /// The version's OpenAPI v3 schema; `None` for the CRD kind, which is
    /// validated by `rkube_api::crd`.
    pub schema: Option<Value>,
    pub status: bool,
    pub scale: Option<ScaleSubresource>,
    pub columns: Vec<PrinterColumn>,
    pub categories: Vec<String>,
    /// The CRD that defines this kind; `None` for CustomResourceDefinition.
    pub crd: Option<String>,
    /// Whether the version is served (unserved versions are only looked up
    /// by apiVersion, to refuse them).
    pub served: bool,
    pub deprecation_warning: Option<String>,
}

impl CustomKind {
    pub fn is_crd(&self) -> bool {
        self.crd.is_none()
    }

    fn definitions() -> CustomKind {
        CustomKind {
            info: &CRD_INFO,
            storage_version: crd::VERSION.into(),
            list_kind: format!("{}List", crd::KIND),
            schema: None,
            status: true,
            scale: None,
            columns: vec![PrinterColumn {
                name: "Created At".into(),
                type_: "date".into(),
                json_path: ".metadata.creationTimestamp".into(),
                ..Default::default()
            }],
            categories: vec!["api-extensions".into()],
            crd: None,
            served: true,
            deprecation_warning: None,
        }
    }

    /// `GROUP/STORAGE_VERSION`: the apiVersion objects are stored with.
    pub fn storage_api_version(&self) -> String {
        format!("{}/{}", self.info.group, self.storage_version)
    }
}

/// The run-time registry, shared by both faces.
pub struct CustomKinds {
    kinds: RwLock<Arc<Vec<Arc<CustomKind>>>>,
}

impl Default for CustomKinds {
    fn default() -> Self {
        CustomKinds {
            kinds: RwLock::new(Arc::new(vec![Arc::new(CustomKind::definitions())])),
        }
    }
}

/// A `ResourceInfo` for a kind learnt at run time, interned: the same
/// definition gives the same `&'static`, so the memory kept is bounded by
/// the distinct definitions ever served, not by how often they are written.
fn intern(spec: &CrdSpec, version: &str, has_status: bool) -> &'static ResourceInfo {
    let (group, kind, plural, singular) = (
        spec.group.as_str(),
        spec.names.kind.as_str(),
        spec.names.plural.as_str(),
        spec.names.singular.as_str(),
    );
    let (short_names, namespaced) = (&spec.names.short_names, spec.namespaced());
    static INTERNED: OnceLock<Mutex<HashMap<String, &'static ResourceInfo>>> = OnceLock::new();
    let key = format!(
        "{group}/{version}/{kind}/{plural}/{singular}/{}/{namespaced}/{has_status}",
        short_names.join(",")
    );
    let mut map = INTERNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(info) = map.get(&key) {
        return info;
    }
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    let shorts: Vec<&'static str> = short_names.iter().map(|s| leak(s)).collect();
    let info: &'static ResourceInfo = Box::leak(Box::new(ResourceInfo {
        group: leak(group),
        version: leak(version),
        kind: leak(kind),
        plural: leak(plural),
        singular: leak(singular),
        short_names: Box::leak(shorts.into_boxed_slice()),
        namespaced,
        has_status,
        type_url: leak(&crd::type_url(group, version, kind)),
    }));
    map.insert(key, info);
    info
}

/// Why a CRD's names cannot be served: they are taken.
pub fn names_conflict(spec: &CrdSpec, name: &str, others: &[(String, CrdSpec)]) -> Option<String> {
    let builtin = rkube_api::KINDS
        .iter()
        .chain(std::iter::once(&CRD_INFO))
        .find(|k| k.group == spec.group && (k.plural == spec.names.plural || k.kind == spec.names.kind));
    if let Some(k) = builtin {
        return Some(format!(
            "{:?} is already in use by the built-in kind {}",
            spec.names.plural, k.kind
        ));
    }
    others
        .iter()
        .filter(|(n, _)| n != name)
        .find(|(_, o)| o.group == spec.group && o.names.kind == spec.names.kind)
        .map(|(n, _)| {
            format!(
                "{:?} is already in use by CustomResourceDefinition {n:?}",
                spec.names.kind
            )
        })
}

impl CustomKinds {
    fn snapshot(&self) -> Arc<Vec<Arc<CustomKind>>> {
        self.kinds.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every kind, every version (served or not).
    pub fn all(&self) -> Vec<Arc<CustomKind>> {
        self.snapshot().iter().cloned().collect()
    }

    /// The kind of `group`/`plural` at `version`; without a version, the
    /// served storage version (else the first served one), as gRPC
    /// requests name collections without a version.
    pub fn find(&self, group: &str, plural: &str, version: Option<&str>) -> Option<Arc<CustomKind>> {
        let kinds = self.snapshot();
        let mut matching = kinds
            .iter()
            .filter(|k| k.served && k.info.group == group && k.info.plural == plural);
        match version {
            Some(v) => matching.find(|k| k.info.version == v).cloned(),
            None => {
                let all: Vec<_> = matching.collect();
                all.iter()
                    .find(|k| k.info.version == k.storage_version)
                    .or_else(|| all.first())
                    .map(|k| Arc::clone(k))
            }
        }
    }

    /// The custom kind `info` describes, if it is one.
    pub fn of(&self, info: &ResourceInfo) -> Option<Arc<CustomKind>> {
        if !info.type_url.starts_with(crd::JSON_TYPE_PREFIX) {
            return None;
        }
        self.snapshot()
            .iter()
            .find(|k| k.info.type_url == info.type_url)
            .cloned()
    }

    /// The served kind of `apiVersion` and `kind`, as a manifest names it.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<CustomKind>> {
        self.snapshot()
            .iter()
            .find(|k| k.served && k.info.kind == kind && k.info.api_version() == api_version)
            .cloned()
    }

    /// Rebuilds the registry from the CRDs in the store. A CRD that cannot
    /// be read is logged and skipped: it must not stop the others being
    /// served, nor the apiserver starting.
    pub fn reload(&self, store: &dyn Store) -> Result<(), rkube_store::StoreError> {
        let prefix = crate::keys::storage_prefix(&CRD_INFO, "");
        let page = store.list(&prefix, None, 0, None)?;
        let mut defined: Vec<(String, CrdSpec, bool)> = Vec::new();
        for kv in &page.items {
            let parsed = serde_json::from_slice::<Value>(&kv.value)
                .map_err(|e| e.to_string())
                .and_then(|obj| {
                    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
                    let established = objects::condition_true(&obj, "Established");
                    let mut spec = CrdSpec::from_object(&obj).map_err(|e| e.to_string())?;
                    spec.apply_defaults();
                    Ok((name, spec, established))
                });
            match parsed {
                Ok(d) => defined.push(d),
                Err(e) => {
                    tracing::warn!(key = %kv.key, "a stored CustomResourceDefinition cannot be read, its kind is not served: {e}")
                }
            }
        }
        let mut kinds = vec![Arc::new(CustomKind::definitions())];
        for (name, spec, established) in &defined {
            if !established {
                continue;
            }
            let Some(storage) = spec.storage_version() else {
                continue;
            };
            for v in &spec.versions {
                let status = v.subresources.as_ref().is_some_and(|s| s.status.is_some());
                let info = intern(spec, &v.name, status);
                kinds.push(Arc::new(CustomKind {
                    info,
                    storage_version: storage.name.clone(),
                    list_kind: spec.names.list_kind.clone(),
                    schema: v.schema.as_ref().map(|s| s.open_api_v3_schema.clone()),
                    status,
                    scale: v.subresources.as_ref().and_then(|s| s.scale.clone()),
                    columns: v.additional_printer_columns.clone(),
                    categories: spec.names.categories.clone(),
                    crd: Some(name.clone()),
                    served: v.served,
                    deprecation_warning: v.deprecated.then(|| {
                        v.deprecation_warning.clone().unwrap_or_else(|| {
                            format!("{}/{} {} is deprecated", spec.group, v.name, spec.names.kind)
                        })
                    }),
                }));
            }
        }
        *self.kinds.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(kinds);
        Ok(())
    }

    /// The specs of the stored CRDs other than `except`, for name conflicts.
    pub fn defined(&self) -> Vec<(String, CrdSpec)> {
        let mut seen = HashMap::new();
        for k in self.snapshot().iter() {
            if let Some(crd) = &k.crd {
                seen.entry(crd.clone()).or_insert_with(|| CrdSpec {
                    group: k.info.group.into(),
                    names: rkube_api::crd::CrdNames {
                        plural: k.info.plural.into(),
                        kind: k.info.kind.into(),
                        ..Default::default()
                    },
                    ..Default::default()
                });
            }
        }
        seen.into_iter().collect()
    }
}
