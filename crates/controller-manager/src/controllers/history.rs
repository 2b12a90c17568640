//! ControllerRevisions: the template history of DaemonSets and StatefulSets, kept as
//! Kubernetes keeps it, so `rollout history` lists it and `rollout undo` (rkubectl's or
//! kubectl's) goes back to an earlier template.
//!
//! * Each distinct pod template an owner has had is one revision named `OWNER-HASH`
//!   (the hash its pods carry in `controller-revision-hash`), labelled with the template's
//!   labels plus that hash, carrying the owner's annotations (so `kubernetes.io/change-cause`
//!   shows in the history) and, as `data`, the strategic merge patch
//!   that restores the template (`rkube_api::revision`).
//! * Revision numbers grow: a new template gets the highest number plus one; going back to
//!   an earlier template renumbers that template's revision to the top rather than copying
//!   it, as Kubernetes does, so `rollout history` shows each template once.
//! * Old revisions beyond `revisionHistoryLimit` (default 10) are deleted, oldest first,
//!   except those some live pod still runs.

use super::daemon_set::REVISION_HASH_LABEL;
use super::workload::{controller_ref, controller_reference, is_deleting, NAMESPACE_INDEX};
use super::Error;
use rkube_api::apps::v1::ControllerRevision;
use rkube_api::core::v1::{Pod, PodTemplateSpec};
use rkube_api::meta::v1::ObjectMeta;
use rkube_api::revision::data_for;
use rkube_api::Resource;
use rkube_client::{Api, Client, DeleteParams, Store};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The name of the revision of `owner`'s template with hash `hash`.
pub fn revision_name(owner: &str, hash: &str) -> String {
    format!("{owner}-{hash}")
}

/// The hash a revision stands for.
pub fn hash_of(revision: &ControllerRevision) -> Option<&str> {
    revision
        .metadata()
        .labels
        .get(REVISION_HASH_LABEL)
        .map(String::as_str)
}

/// What to do with an owner's revisions.
#[derive(Debug, Default, PartialEq)]
pub struct HistoryPlan {
    /// The revision to create for the current template.
    pub create: Option<ControllerRevision>,
    /// A revision to renumber (name, new number): the current template was an earlier one.
    pub renumber: Option<(String, i64)>,
    /// Revisions beyond the history limit that no live pod runs.
    pub delete: Vec<String>,
}

/// The plan for `owner`, whose current template is `template` (hash `hash`), given the
/// revisions it controls (`revisions`), the hashes its live pods carry and its
/// `revisionHistoryLimit`.
pub fn plan<K: Resource>(
    owner: &K,
    template: &PodTemplateSpec,
    hash: &str,
    revisions: &[Arc<ControllerRevision>],
    live: &BTreeSet<String>,
    limit: Option<i32>,
) -> HistoryPlan {
    let mut plan = HistoryPlan::default();
    let top = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    match revisions.iter().find(|r| hash_of(r) == Some(hash)) {
        Some(r) if r.revision < top => plan.renumber = Some((r.name().to_string(), top + 1)),
        Some(_) => {}
        None => {
            let mut labels = template
                .metadata
                .as_ref()
                .map(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(REVISION_HASH_LABEL.into(), hash.into());
            plan.create = Some(ControllerRevision {
                metadata: Some(ObjectMeta {
                    name: revision_name(owner.name(), hash),
                    namespace: owner.namespace().to_string(),
                    labels,
                    annotations: owner.metadata().annotations.clone(),
                    owner_references: vec![controller_reference(owner)],
                    ..Default::default()
                }),
                data: Some(data_for(template)),
                revision: top + 1,
                ..Default::default()
            });
        }
    }
    // Oldest first; the current one and those live pods run are never deleted.
    let mut old: Vec<&Arc<ControllerRevision>> = revisions
        .iter()
        .filter(|r| hash_of(r).is_some_and(|h| h != hash && !live.contains(h)))
        .collect();
    old.sort_by_key(|r| r.revision);
    let keep = limit.unwrap_or(10).max(0) as usize;
    let excess = old.len().saturating_sub(keep);
    plan.delete = old[..excess].iter().map(|r| r.name().to_string()).collect();
    plan
}

/// The revisions `owner` controls, from the cache (indexed by [`NAMESPACE_INDEX`]).
pub fn owned<K: Resource>(store: &Store<ControllerRevision>, owner: &K) -> Vec<Arc<ControllerRevision>> {
    let uid = &owner.metadata().uid;
    store
        .by_index(NAMESPACE_INDEX, owner.namespace())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| controller_ref(r.metadata()).is_some_and(|o| &o.uid == uid))
        .collect()
}

/// Brings `owner`'s revisions in line with its current `template` (its own, as `rollout
/// undo` would put it back; `hash` names the template its pods are made from) and the pods
/// it runs (see [`plan`]); returns its revisions as they now are.
pub async fn sync<K: Resource>(
    client: &Client,
    store: &Store<ControllerRevision>,
    owner: &K,
    template: &PodTemplateSpec,
    hash: &str,
    pods: &[Arc<Pod>],
    limit: Option<i32>,
) -> Result<Vec<Arc<ControllerRevision>>, Error> {
    let mut revisions = owned(store, owner);
    if is_deleting(owner.metadata()) {
        return Ok(revisions);
    }
    let live: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.metadata().labels.get(REVISION_HASH_LABEL).cloned())
        .collect();
    let plan = plan(owner, template, hash, &revisions, &live, limit);
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), owner.namespace());
    if let Some(new) = &plan.create {
        match api.create(new).await {
            Ok(created) => revisions.push(Arc::new(created)),
            // the cache has not seen it yet; the watch event brings it
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some((name, number)) = &plan.renumber {
        if let Some(slot) = revisions.iter_mut().find(|r| r.name() == name) {
            let mut r = (**slot).clone();
            r.revision = *number;
            *slot = Arc::new(api.update(&r).await?);
        }
    }
    for name in &plan.delete {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        revisions.retain(|r| r.name() != name);
    }
    Ok(revisions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::apps::v1::DaemonSet;
    use rkube_api::core::v1::{Container, PodSpec};
    use rkube_api::revision::template_of;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: [("app".to_string(), "agent".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "agent".into(),
                    image: image.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn owner() -> DaemonSet {
        DaemonSet {
            metadata: Some(ObjectMeta {
                name: "agent".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                annotations: [("kubernetes.io/change-cause".to_string(), "v2".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn revision(hash: &str, number: i64) -> Arc<ControllerRevision> {
        let mut r = plan(&owner(), &template(hash), hash, &[], &BTreeSet::new(), None)
            .create
            .unwrap();
        r.revision = number;
        Arc::new(r)
    }

    #[test]
    fn a_new_template_becomes_the_next_revision_restorable_by_its_patch() {
        let p = plan(
            &owner(),
            &template("v2"),
            "h2",
            &[revision("h1", 1)],
            &BTreeSet::new(),
            None,
        );
        let created = p.create.unwrap();
        assert_eq!(created.name(), "agent-h2");
        assert_eq!(created.revision, 2);
        assert_eq!(created.metadata().labels.get(REVISION_HASH_LABEL).unwrap(), "h2");
        assert_eq!(created.metadata().labels.get("app").unwrap(), "agent");
        assert_eq!(
            created
                .metadata()
                .annotations
                .get("kubernetes.io/change-cause")
                .unwrap(),
            "v2"
        );
        assert_eq!(created.metadata().owner_references[0].uid, "u1");
        assert_eq!(template_of(&created), Some(template("v2")));
        assert_eq!((p.renumber, p.delete.len()), (None, 0));
    }

    #[test]
    fn going_back_renumbers_the_old_revision_instead_of_copying_it() {
        let revs = [revision("h1", 1), revision("h2", 2)];
        let p = plan(&owner(), &template("v1"), "h1", &revs, &BTreeSet::new(), None);
        assert_eq!(p.create, None);
        assert_eq!(p.renumber, Some(("agent-h1".to_string(), 3)));
        let p = plan(&owner(), &template("v2"), "h2", &revs, &BTreeSet::new(), None);
        assert_eq!(p, HistoryPlan::default());
    }

    #[test]
    fn history_beyond_the_limit_goes_oldest_first_but_not_what_pods_run() {
        let revs: Vec<_> = (1..=5).map(|i| revision(&format!("h{i}"), i)).collect();
        let live: BTreeSet<String> = ["h1".to_string()].into();
        let p = plan(&owner(), &template("v5"), "h5", &revs, &live, Some(2));
        // old ones: h2, h3, h4 (h1 is live, h5 current); keep 2
        assert_eq!(p.delete, vec!["agent-h2".to_string()]);
        let p = plan(&owner(), &template("v5"), "h5", &revs, &BTreeSet::new(), Some(0));
        assert_eq!(p.delete.len(), 4);
    }
}
