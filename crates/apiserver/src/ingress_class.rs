//! Kubernetes' DefaultIngressClass admission: an Ingress created without
//! `spec.ingressClassName` (and without the older `kubernetes.io/ingress.class`
//! annotation) gets the name of the IngressClass annotated
//! `ingressclass.kubernetes.io/is-default-class: "true"`, so which controller
//! serves it is settled once and shows in `kubectl get ingress`. With several
//! default classes the most recently created one is taken, as Kubernetes does;
//! with none the field stays empty.

use crate::error::{ApiError, ApiResult};
use crate::keys::storage_prefix;
use crate::{handlers, State};
use rkube_api::networking::v1::{Ingress, IngressClass};
use rkube_api::validation::{CLASS_ANNOTATION, DEFAULT_CLASS_ANNOTATION};
use rkube_api::Resource;
use std::any::Any;

fn default_class(state: &State) -> ApiResult<Option<String>> {
    let info = IngressClass::info();
    let list = state
        .store
        .list(&storage_prefix(info, ""), None, 0, None)
        .map_err(|e| ApiError::from_store(e, info, ""))?;
    let classes = list
        .items
        .iter()
        .map(handlers::decode_stored::<IngressClass>)
        .collect::<ApiResult<Vec<_>>>()?;
    let is_default = |c: &IngressClass| {
        c.metadata()
            .annotations
            .get(DEFAULT_CLASS_ANNOTATION)
            .is_some_and(|v| v == "true")
    };
    // RFC 3339 in UTC: the text orders as the time does
    Ok(classes
        .iter()
        .filter(|c| is_default(c))
        .max_by(|a, b| {
            a.metadata()
                .creation_timestamp
                .cmp(&b.metadata().creation_timestamp)
        })
        .map(|c| c.name().to_string()))
}

/// Admits a new Ingress (other kinds pass): names the default class when it names none.
pub fn admit_create<K: Resource>(state: &State, obj: &mut K) -> ApiResult<()> {
    let Some(ing) = (obj as &mut dyn Any).downcast_mut::<Ingress>() else {
        return Ok(());
    };
    let named = ing.spec.as_ref().is_some_and(|s| s.ingress_class_name.is_some())
        || ing.metadata().annotations.contains_key(CLASS_ANNOTATION);
    if named {
        return Ok(());
    }
    if let Some(class) = default_class(state)? {
        ing.spec.get_or_insert_with(Default::default).ingress_class_name = Some(class);
    }
    Ok(())
}
