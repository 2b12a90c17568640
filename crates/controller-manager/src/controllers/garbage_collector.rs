//! The garbage collector: ownerReferences make deletion cascade.
//!
//! * Background: an object all of whose owners are gone (by uid: an owner
//!   deleted and recreated under the same name is another owner) is
//!   deleted.
//! * Foreground: an owner marked for deletion with the `foregroundDeletion`
//!   finalizer gets its dependents deleted (themselves in foreground, so
//!   the whole tree goes bottom-up), and once no dependent that blocks it
//!   (`blockOwnerDeletion: true`) is left, the finalizer is removed and the
//!   apiserver removes the owner.
//! * Orphan: an owner with the `orphan` finalizer has its reference
//!   removed from every dependent, then the finalizer.
//!
//! It watches the kinds that carry ownerReferences here (Pods, ReplicaSets,
//! Deployments, Jobs, CronJobs, DaemonSets, StatefulSets and claims; the list is
//! `watched_kinds!`) with one loop per kind, each woken by changes to its owners and
//! dependents of any of those kinds; owners of other kinds are looked up through the API. Before deleting anything because its owner
//! is missing from the cache, the owner is read from the apiserver: a
//! cache that has not seen a new owner yet must never cost its dependents.

use super::workload::is_deleting;
use super::Error;
use crate::{Context, Shutdown};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use rkube_api::batch::v1::{CronJob, Job};
use rkube_api::core::v1::{PersistentVolumeClaim, Pod};
use rkube_api::meta::v1::{ObjectMeta, OwnerReference};
use rkube_api::{visit_kind, KindVisitor, Resource, ResourceInfo};
use rkube_client::{
    Action, Api, Client, Controller, DeleteParams, Informer, Preconditions, PropagationPolicy, Store,
};
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "garbage-collector";

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";
const OWNER_INDEX: &str = "garbage-collector/owner-uid";

/// Calls `$m!` with every kind the collector watches, as `field: Type` pairs.
macro_rules! watched_kinds {
    ($m:ident) => {
        $m! {
            pods: Pod,
            replicasets: ReplicaSet,
            deployments: Deployment,
            jobs: Job,
            cronjobs: CronJob,
            daemonsets: DaemonSet,
            statefulsets: StatefulSet,
            claims: PersistentVolumeClaim
        }
    };
}

macro_rules! define_state {
    ($($field:ident: $kind:ty),*) => {
        /// One informer per watched kind.
        struct Informers {
            $($field: Informer<$kind>,)*
        }

        /// Every watched kind's cache.
        struct State {
            client: Client,
            $($field: Store<$kind>,)*
        }

        impl Informers {
            fn new(ctx: &Context) -> Self {
                let informers = Informers {
                    $($field: ctx.informers.get::<$kind>(),)*
                };
                $(informers.$field.store().add_index(OWNER_INDEX, owner_uids::<$kind>);)*
                informers
            }

            fn state(&self, client: Client) -> State {
                State {
                    client,
                    $($field: self.$field.store(),)*
                }
            }

            /// The loop over objects of kind `K`: an object is looked at when it changes,
            /// when one of its owners changes, and when one of its dependents changes.
            fn kind_loop<K: Resource>(&self, state: &Arc<State>, primary: &Informer<K>, workers: usize) -> Controller<State, Error> {
                let name = format!("{NAME}/{}", K::INFO.plural);
                Controller::new(&name, state.clone(), reconcile::<K>)
                    .primary(primary)
                    $(.watches(&self.$field, related::<K, $kind>(primary.store())))*
                    .workers(workers)
                    .resync(Duration::from_secs(300))
            }

            async fn run(&self, state: Arc<State>, workers: usize, shutdown: Shutdown) {
                futures::join!($(self.kind_loop(&state, &self.$field, workers).run(shutdown.clone().wait())),*);
            }
        }

        impl State {
            fn dependents(&self, uid: &str) -> Vec<Dependent> {
                let mut out = Vec::new();
                $(dependents_in(&self.$field, uid, &mut out);)*
                out
            }

            fn cached(&self, info: &ResourceInfo, ns: &str, name: &str) -> Option<ObjectMeta> {
                let key = rkube_api::object_key(ns, name);
                $(
                if info == <$kind as Resource>::info() {
                    return self.$field.get(&key).map(|o| o.metadata().clone());
                }
                )*
                None
            }

            /// The cache of `K`, one of the watched kinds.
            fn store<K: Resource>(&self) -> Option<Store<K>> {
                $(
                if let Some(store) = (&self.$field as &dyn std::any::Any).downcast_ref::<Store<K>>() {
                    return Some(store.clone());
                }
                )*
                None
            }
        }
    };
}

watched_kinds!(define_state);

fn owner_uids<K: Resource>(obj: &K) -> Vec<String> {
    obj.metadata()
        .owner_references
        .iter()
        .map(|r| r.uid.clone())
        .collect()
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let informers = Informers::new(&ctx);
        let state = Arc::new(informers.state(ctx.client.clone()));
        informers.run(state, ctx.config.workers, shutdown).await;
        Ok(())
    }
    .boxed()
}

/// Keys of `K` objects related to a changed `O`: its dependents and its
/// owners of kind `K`.
fn related<K: Resource, O: Resource>(store: Store<K>) -> impl Fn(&O) -> Vec<String> + Send + Sync + 'static {
    move |obj: &O| {
        let mut keys = store
            .index_keys(OWNER_INDEX, &obj.metadata().uid)
            .unwrap_or_default();
        for r in &obj.metadata().owner_references {
            if r.kind == K::INFO.kind && r.api_version == K::INFO.api_version() {
                let ns = if K::INFO.namespaced { obj.namespace() } else { "" };
                keys.push(rkube_api::object_key(ns, &r.name));
            }
        }
        keys
    }
}

/// How a dependent stands with its owners.
#[derive(Debug, Default, PartialEq)]
pub struct Owners {
    /// Existing owners not being deleted in foreground.
    pub solid: Vec<OwnerReference>,
    /// Owners that no longer exist (by uid).
    pub dangling: Vec<OwnerReference>,
    /// Owners waiting, in foreground deletion, for their dependents.
    pub waiting: Vec<OwnerReference>,
}

/// What to do with a dependent.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Keep,
    /// Some owners remain: drop the references to the missing ones.
    RemoveReferences(Vec<String>),
    Delete(PropagationPolicy),
}

/// Kubernetes' attemptToDeleteItem decision.
pub fn verdict(owners: &Owners, has_dependents: bool) -> Verdict {
    if owners.solid.is_empty() && owners.dangling.is_empty() && owners.waiting.is_empty() {
        return Verdict::Keep;
    }
    if !owners.solid.is_empty() {
        if owners.dangling.is_empty() {
            return Verdict::Keep;
        }
        return Verdict::RemoveReferences(owners.dangling.iter().map(|r| r.uid.clone()).collect());
    }
    if !owners.waiting.is_empty() && has_dependents {
        // The owner waits for us, and we have dependents of our own: they
        // must go first too.
        return Verdict::Delete(PropagationPolicy::Foreground);
    }
    Verdict::Delete(PropagationPolicy::Background)
}

/// What to do with an owner marked for deletion.
#[derive(Debug, PartialEq)]
pub enum OwnerStep {
    None,
    /// Take our reference off every dependent, then drop `orphan`.
    Orphan,
    /// Delete these dependents (not yet being deleted) and wait.
    DeleteDependents(Vec<(&'static ResourceInfo, String, String, String)>),
    /// Nothing blocks any more: drop `foregroundDeletion`.
    RemoveForegroundFinalizer,
    /// Dependents that block are still going.
    Wait,
}

/// A dependent of some owner: its kind, namespace, name, uid, whether it
/// is being deleted and whether it blocks the owner's deletion.
#[derive(Debug, Clone)]
pub struct Dependent {
    pub info: &'static ResourceInfo,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub deleting: bool,
    pub blocks: bool,
}

pub fn owner_step(owner: &ObjectMeta, dependents: &[Dependent]) -> OwnerStep {
    if !is_deleting(owner) {
        return OwnerStep::None;
    }
    if owner.finalizers.iter().any(|f| f == ORPHAN) {
        return OwnerStep::Orphan;
    }
    if !owner.finalizers.iter().any(|f| f == FOREGROUND) {
        return OwnerStep::None;
    }
    let to_delete: Vec<_> = dependents
        .iter()
        .filter(|d| !d.deleting)
        .map(|d| (d.info, d.namespace.clone(), d.name.clone(), d.uid.clone()))
        .collect();
    if !to_delete.is_empty() {
        return OwnerStep::DeleteDependents(to_delete);
    }
    if dependents.iter().any(|d| d.blocks) {
        OwnerStep::Wait
    } else {
        OwnerStep::RemoveForegroundFinalizer
    }
}

fn dependents_in<D: Resource>(store: &Store<D>, uid: &str, out: &mut Vec<Dependent>) {
    for d in store.by_index(OWNER_INDEX, uid).unwrap_or_default() {
        let blocks = d
            .metadata()
            .owner_references
            .iter()
            .any(|r| r.uid == uid && r.block_owner_deletion == Some(true));
        out.push(Dependent {
            info: D::info(),
            namespace: d.namespace().to_string(),
            name: d.name().to_string(),
            uid: d.metadata().uid.clone(),
            deleting: is_deleting(d.metadata()),
            blocks,
        });
    }
}

impl State {
    /// The owner a reference names, if it exists with that uid: from the
    /// cache, confirmed by the apiserver when the cache does not have it.
    async fn owner(&self, namespace: &str, r: &OwnerReference) -> Result<Option<ObjectMeta>, Error> {
        let Some(info) = ResourceInfo::by_kind(&r.api_version, &r.kind) else {
            // a kind a CustomResourceDefinition added: asked for through discovery
            let meta = self
                .client
                .get_metadata_by_kind(&r.api_version, &r.kind, namespace, &r.name)
                .await
                .map_err(|e| {
                    Error::Invalid(format!(
                        "ownerReference to {} {} {:?}: {e}; not collecting",
                        r.api_version, r.kind, r.name
                    ))
                })?;
            return Ok(meta.filter(|m| m.uid == r.uid));
        };
        let ns = if info.namespaced { namespace } else { "" };
        if let Some(meta) = self.cached(info, ns, &r.name) {
            if meta.uid == r.uid {
                return Ok(Some(meta));
            }
        }
        let live = match self.client.get_dyn(info, ns, &r.name).await {
            Ok(obj) => obj,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        struct Meta<'a>(&'a rkube_api::DynObject);
        impl KindVisitor for Meta<'_> {
            type Output = Option<ObjectMeta>;
            fn visit<K: Resource>(self) -> Option<ObjectMeta> {
                self.0.decode::<K>().ok().map(|k| k.metadata().clone())
            }
        }
        let meta = visit_kind(info, Meta(&live));
        Ok(meta.filter(|m| m.uid == r.uid))
    }
}

async fn reconcile<K: Resource>(key: String, state: Arc<State>) -> Result<Action, Error> {
    let Some(store) = state.store::<K>() else {
        return Ok(Action::await_change());
    };
    let Some(obj) = store.get(&key) else {
        return Ok(Action::await_change());
    };
    let meta = obj.metadata().clone();
    let api: Api<K> = Api::namespaced(state.client.clone(), &meta.namespace);

    // As an owner being deleted.
    let dependents = state.dependents(&meta.uid);
    match owner_step(&meta, &dependents) {
        OwnerStep::None => {}
        OwnerStep::Orphan => {
            for d in &dependents {
                remove_references(&state, d, std::slice::from_ref(&meta.uid)).await?;
            }
            remove_finalizer(&api, &meta, ORPHAN).await?;
            return Ok(Action::await_change());
        }
        OwnerStep::DeleteDependents(victims) => {
            for (info, ns, name, uid) in victims {
                // Dependents with dependents of their own go in foreground
                // too, so the owner waits for the whole tree.
                let policy = if state.dependents(&uid).is_empty() {
                    PropagationPolicy::Background
                } else {
                    PropagationPolicy::Foreground
                };
                delete(&state.client, info, &ns, &name, &uid, policy).await?;
            }
            return Ok(Action::await_change());
        }
        OwnerStep::RemoveForegroundFinalizer => {
            remove_finalizer(&api, &meta, FOREGROUND).await?;
            return Ok(Action::await_change());
        }
        OwnerStep::Wait => return Ok(Action::await_change()),
    }
    if is_deleting(&meta) || meta.owner_references.is_empty() {
        return Ok(Action::await_change());
    }

    // As a dependent.
    let mut owners = Owners::default();
    for r in &meta.owner_references {
        match state.owner(&meta.namespace, r).await? {
            None => owners.dangling.push(r.clone()),
            Some(o) if is_deleting(&o) && o.finalizers.iter().any(|f| f == FOREGROUND) => {
                owners.waiting.push(r.clone())
            }
            Some(_) => owners.solid.push(r.clone()),
        }
    }
    match verdict(&owners, !dependents.is_empty()) {
        Verdict::Keep => {}
        Verdict::RemoveReferences(uids) => {
            let me = Dependent {
                info: K::info(),
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                uid: meta.uid.clone(),
                deleting: false,
                blocks: false,
            };
            remove_references(&state, &me, &uids).await?;
        }
        Verdict::Delete(policy) => {
            tracing::info!(kind = K::INFO.kind, %key, ?policy, "deleting: every owner is gone or being deleted");
            delete(
                &state.client,
                K::info(),
                &meta.namespace,
                &meta.name,
                &meta.uid,
                policy,
            )
            .await?;
        }
    }
    // No informer follows the kinds CustomResourceDefinitions add, so nothing
    // announces such an owner's deletion: look again a little later.
    let custom_owner = meta
        .owner_references
        .iter()
        .any(|r| ResourceInfo::by_kind(&r.api_version, &r.kind).is_none());
    if custom_owner {
        return Ok(Action::requeue(CUSTOM_OWNER_RECHECK));
    }
    Ok(Action::await_change())
}

/// How often a dependent of a custom object checks that its owner is still there.
const CUSTOM_OWNER_RECHECK: Duration = Duration::from_secs(2);

async fn delete(
    client: &Client,
    info: &'static ResourceInfo,
    ns: &str,
    name: &str,
    uid: &str,
    policy: PropagationPolicy,
) -> Result<(), Error> {
    let dp = DeleteParams {
        propagation_policy: Some(policy),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match client.delete_dyn(info, ns, name, &dp).await {
        Ok(_) => Ok(()),
        // Gone already, or replaced by another object of that name.
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn remove_finalizer<K: Resource>(
    api: &Api<K>,
    meta: &ObjectMeta,
    finalizer: &str,
) -> Result<(), Error> {
    let uid = meta.uid.clone();
    let r = api
        .replace_with(&meta.name, |mut o: K| {
            if o.metadata().uid == uid {
                o.metadata_mut().finalizers.retain(|f| f != finalizer);
            }
            o
        })
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Takes the references to `owner_uids` off a dependent (read, change,
/// write with the version read).
async fn remove_references(state: &State, d: &Dependent, owner_uids: &[String]) -> Result<(), Error> {
    struct Remove<'a> {
        client: &'a Client,
        d: &'a Dependent,
        uids: &'a [String],
    }
    impl KindVisitor for Remove<'_> {
        type Output = BoxFuture<'static, rkube_client::Result<()>>;
        fn visit<K: Resource>(self) -> Self::Output {
            let api: Api<K> = Api::namespaced(self.client.clone(), &self.d.namespace);
            let name = self.d.name.clone();
            let uid = self.d.uid.clone();
            let uids = self.uids.to_vec();
            async move {
                api.replace_with(&name, |mut o: K| {
                    if o.metadata().uid == uid {
                        o.metadata_mut()
                            .owner_references
                            .retain(|r| !uids.contains(&r.uid));
                    }
                    o
                })
                .await
                .map(|_| ())
            }
            .boxed()
        }
    }
    let fut = visit_kind(
        d.info,
        Remove {
            client: &state.client,
            d,
            uids: owner_uids,
        },
    );
    match fut.await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(uid: &str) -> OwnerReference {
        OwnerReference {
            uid: uid.into(),
            ..Default::default()
        }
    }

    fn dep(name: &str, deleting: bool, blocks: bool) -> Dependent {
        Dependent {
            info: Pod::info(),
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            deleting,
            blocks,
        }
    }

    fn owner(finalizers: &[&str], deleting: bool) -> ObjectMeta {
        ObjectMeta {
            uid: "owner".into(),
            finalizers: finalizers.iter().map(|s| s.to_string()).collect(),
            deletion_timestamp: if deleting {
                "2024-01-01T00:00:00Z".into()
            } else {
                String::new()
            },
            ..Default::default()
        }
    }

    #[test]
    fn dependents_go_only_when_every_owner_is_gone() {
        let all_gone = Owners {
            dangling: vec![r("a"), r("b")],
            ..Default::default()
        };
        assert_eq!(
            verdict(&all_gone, false),
            Verdict::Delete(PropagationPolicy::Background)
        );
        let one_left = Owners {
            solid: vec![r("a")],
            dangling: vec![r("b")],
            ..Default::default()
        };
        assert_eq!(
            verdict(&one_left, false),
            Verdict::RemoveReferences(vec!["b".into()])
        );
        let fine = Owners {
            solid: vec![r("a")],
            ..Default::default()
        };
        assert_eq!(verdict(&fine, true), Verdict::Keep);
        let waiting = Owners {
            waiting: vec![r("a")],
            ..Default::default()
        };
        assert_eq!(
            verdict(&waiting, true),
            Verdict::Delete(PropagationPolicy::Foreground)
        );
        assert_eq!(
            verdict(&waiting, false),
            Verdict::Delete(PropagationPolicy::Background)
        );
        assert_eq!(verdict(&Owners::default(), false), Verdict::Keep);
    }

    #[test]
    fn foreground_deletes_dependents_then_waits_for_blockers_then_finishes() {
        let o = owner(&[FOREGROUND], true);
        let step = owner_step(&o, &[dep("a", false, true), dep("b", true, true)]);
        let OwnerStep::DeleteDependents(v) = step else {
            panic!("{step:?}")
        };
        assert_eq!(v.iter().map(|x| x.2.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(owner_step(&o, &[dep("b", true, true)]), OwnerStep::Wait);
        assert_eq!(
            owner_step(&o, &[dep("c", true, false)]),
            OwnerStep::RemoveForegroundFinalizer
        );
        assert_eq!(owner_step(&o, &[]), OwnerStep::RemoveForegroundFinalizer);
    }

    #[test]
    fn orphan_and_live_owners() {
        assert_eq!(
            owner_step(&owner(&[ORPHAN], true), &[dep("a", false, true)]),
            OwnerStep::Orphan
        );
        assert_eq!(
            owner_step(&owner(&[FOREGROUND], false), &[dep("a", false, true)]),
            OwnerStep::None
        );
        assert_eq!(
            owner_step(&owner(&["other"], true), &[dep("a", false, true)]),
            OwnerStep::None
        );
    }
}
