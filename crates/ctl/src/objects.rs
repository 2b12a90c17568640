//! Operations on objects whose kind is known only at run time, dispatched
//! to the concrete type through `visit_kind`.

use rkube_api::meta::v1::ObjectMeta;
use rkube_api::validation::FieldError;
use rkube_api::{visit_kind, DynObject, KindVisitor, Resource, ResourceInfo};

/// Builds an object from its Kubernetes JSON form.
pub fn from_json(info: &'static ResourceInfo, json: serde_json::Value) -> Result<DynObject, String> {
    struct FromJson(serde_json::Value);
    impl KindVisitor for FromJson {
        type Output = Result<DynObject, String>;
        fn visit<K: Resource>(self) -> Self::Output {
            let obj: K = serde_json::from_value(self.0).map_err(|e| e.to_string())?;
            Ok(DynObject::from_typed(&obj))
        }
    }
    visit_kind(info, FromJson(json))
}

/// The object's metadata.
pub fn metadata(obj: &DynObject) -> ObjectMeta {
    struct Meta<'a>(&'a DynObject);
    impl KindVisitor for Meta<'_> {
        type Output = ObjectMeta;
        fn visit<K: Resource>(self) -> ObjectMeta {
            self.0
                .decode::<K>()
                .map(|k| k.metadata().clone())
                .unwrap_or_default()
        }
    }
    visit_kind(obj.info, Meta(obj))
}

/// The same object in another namespace.
pub fn with_namespace(obj: &DynObject, namespace: &str) -> Result<DynObject, String> {
    struct SetNs<'a>(&'a DynObject, &'a str);
    impl KindVisitor for SetNs<'_> {
        type Output = Result<DynObject, String>;
        fn visit<K: Resource>(self) -> Self::Output {
            let mut k: K = self.0.decode().map_err(|e| e.to_string())?;
            k.metadata_mut().namespace = self.1.to_string();
            Ok(DynObject::from_typed(&k))
        }
    }
    visit_kind(obj.info, SetNs(obj, namespace))
}

/// What the apiserver would say about the object: it is defaulted and
/// validated here exactly as there, so a bad file is refused before
/// anything in it is sent.
pub fn validation_errors(obj: &DynObject) -> Result<Vec<FieldError>, String> {
    struct Check<'a>(&'a DynObject);
    impl KindVisitor for Check<'_> {
        type Output = Result<Vec<FieldError>, String>;
        fn visit<K: Resource>(self) -> Self::Output {
            let mut k: K = self.0.decode().map_err(|e| e.to_string())?;
            k.apply_defaults();
            Ok(k.validate())
        }
    }
    visit_kind(obj.info, Check(obj))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::codec::decode_manifests;

    #[test]
    fn namespace_is_set_without_touching_the_rest() {
        let objs = decode_manifests(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n",
            "f",
        )
        .unwrap();
        let moved = with_namespace(&objs[0], "prod").unwrap();
        assert_eq!(moved.namespace, "prod");
        assert_eq!(moved.to_json().unwrap()["data"]["k"], "v");
        assert_eq!(metadata(&moved).namespace, "prod");
    }

    #[test]
    fn validation_runs_after_defaulting() {
        let objs = decode_manifests(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: -1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: nginx}]}\n",
            "web.yaml",
        )
        .unwrap();
        let errs = validation_errors(&objs[0]).unwrap();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            errs[0].to_string(),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
    }
}
