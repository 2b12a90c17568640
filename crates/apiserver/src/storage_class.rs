//! Kubernetes' DefaultStorageClass admission: a claim created without
//! `spec.storageClassName` gets the class annotated
//! `storageclass.kubernetes.io/is-default-class: "true"` (the newest, should
//! there be several, as Kubernetes picks). `storageClassName: ""` asks for no
//! class and is left alone; so is a claim when no class is the default.

use crate::error::{ApiError, ApiResult};
use crate::keys::storage_prefix;
use crate::State;
use rkube_api::core::v1::PersistentVolumeClaim;
use rkube_api::storage::v1::StorageClass;
use rkube_api::Resource;
use std::any::Any;

/// The annotation that marks the default class.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

/// Whether `class` is marked as the default.
pub fn is_default(class: &StorageClass) -> bool {
    class
        .metadata()
        .annotations
        .get(DEFAULT_CLASS_ANNOTATION)
        .is_some_and(|v| v == "true")
}

fn default_class(state: &State) -> ApiResult<Option<StorageClass>> {
    let info = StorageClass::info();
    let list = state
        .store
        .list(&storage_prefix(info, ""), None, 0, None)
        .map_err(|e| ApiError::from_store(e, info, ""))?;
    let mut best: Option<StorageClass> = None;
    for kv in &list.items {
        let Ok(class) = <StorageClass as prost::Message>::decode(kv.value.as_ref()) else {
            continue;
        };
        let newer = |b: &StorageClass| {
            (&class.metadata().creation_timestamp, &class.metadata().name)
                > (&b.metadata().creation_timestamp, &b.metadata().name)
        };
        if is_default(&class) && best.as_ref().is_none_or(newer) {
            best = Some(class);
        }
    }
    Ok(best)
}

/// Admits a new claim (other kinds pass): gives it the default class.
pub fn admit_create<K: Resource>(state: &State, obj: &mut K) -> ApiResult<()> {
    let Some(claim) = (obj as &mut dyn Any).downcast_mut::<PersistentVolumeClaim>() else {
        return Ok(());
    };
    let spec = claim.spec.get_or_insert_with(Default::default);
    if spec.storage_class_name.is_some() {
        return Ok(());
    }
    if let Some(class) = default_class(state)? {
        spec.storage_class_name = Some(class.metadata().name.clone());
    }
    Ok(())
}
