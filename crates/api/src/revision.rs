//! What a ControllerRevision holds: the pod template of a DaemonSet or StatefulSet, kept
//! as Kubernetes keeps it, a strategic merge patch `{"spec":{"template":{...,
//! "$patch":"replace"}}}` that restores the template (which is what `kubectl rollout
//! undo` applies).

use crate::apps::v1::ControllerRevision;
use crate::core::v1::PodTemplateSpec;
use crate::raw::RawExtension;

/// The data of a revision of `template`.
pub fn data_for(template: &PodTemplateSpec) -> RawExtension {
    let mut t = serde_json::to_value(template).unwrap_or_default();
    if let Some(map) = t.as_object_mut() {
        map.insert("$patch".into(), "replace".into());
    }
    RawExtension::from_value(&serde_json::json!({ "spec": { "template": t } }))
}

/// The template `revision` restores; `None` when its data is not such a patch.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = revision.data.as_ref()?.value().pointer("/spec/template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::v1::{Container, PodSpec};

    #[test]
    fn a_template_survives_the_round_trip_through_its_patch() {
        let template = PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "agent".into(),
                    image: "agent:v2".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        let r = ControllerRevision {
            data: Some(data_for(&template)),
            ..Default::default()
        };
        assert_eq!(
            r.data.as_ref().unwrap().value()["spec"]["template"]["$patch"],
            "replace"
        );
        assert_eq!(template_of(&r), Some(template));
        assert_eq!(template_of(&ControllerRevision::default()), None);
    }
}
