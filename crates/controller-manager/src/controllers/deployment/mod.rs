//! The Deployment controller: one ReplicaSet per pod template, named
//! `<deployment>-<pod-template-hash>`, rolled from old to new with the
//! RollingUpdate (maxSurge / maxUnavailable) or Recreate strategy;
//! revisions, history cleanup, pause, proportional scaling and the
//! Available / Progressing conditions as Kubernetes' deployment controller
//! computes them (pkg/controller/deployment), so `rollout status` and
//! anything that reads Kubernetes' status fields behave the same.
//!
//! The decisions are pure functions of the Deployment and its
//! ReplicaSets (tested below); `reconcile` only reads the caches and
//! writes what they decide, one step at a time: each write changes the
//! cache, which brings the Deployment back for the next step.

use super::workload::{self, controller_ref, controller_reference, is_deleting, NAMESPACE_INDEX};
use super::Error;
use crate::{Context, Shutdown};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use rkube_api::core::v1::{Pod, PodTemplateSpec};
use rkube_api::meta::v1::ObjectMeta;
use rkube_api::Resource;
use rkube_client::runtime::controller_owner_keys;
use rkube_client::{Action, Api, Controller, DeleteParams, EventType, Preconditions, Store};
use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

mod rollout;
mod status;
mod sync;
#[cfg(test)]
mod tests;

pub use rollout::*;
pub use status::*;
pub use sync::*;

pub const NAME: &str = "deployment";

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";
/// Annotations of the Deployment that are not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    REVISION,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deployment.kubernetes.io/revision-history",
    "kubectl.kubernetes.io/last-applied-configuration",
];

struct State {
    ctx: Arc<Context>,
    deployments: Store<Deployment>,
    replicasets: Store<ReplicaSet>,
    pods: Store<Pod>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let d_informer = ctx.informers.get::<Deployment>();
        let rs_informer = ctx.informers.get::<ReplicaSet>();
        let pod_informer = ctx.informers.get::<Pod>();
        let deployments = d_informer.store();
        let replicasets = rs_informer.store();
        let pods = pod_informer.store();
        deployments.add_index(NAMESPACE_INDEX, workload::namespace_index::<Deployment>);
        replicasets.add_index(NAMESPACE_INDEX, workload::namespace_index::<ReplicaSet>);
        pods.add_index(NAMESPACE_INDEX, workload::namespace_index::<Pod>);
        let rs_mapper = {
            let deployments = deployments.clone();
            move |rs: &ReplicaSet| {
                if controller_ref(rs.metadata()).is_some() {
                    return controller_owner_keys::<Deployment, ReplicaSet>(rs);
                }
                // An orphan wakes every Deployment that could adopt it.
                deployments
                    .by_index(NAMESPACE_INDEX, rs.namespace())
                    .unwrap_or_default()
                    .iter()
                    .filter(|d| {
                        workload::selector_of(d.spec.as_ref().and_then(|s| s.selector.as_ref()), "")
                            .is_ok_and(|s| s.matches(&rs.metadata().labels))
                    })
                    .map(|d| d.key())
                    .collect()
            }
        };
        // Pods matter only to Recreate, which waits for the old ones to go.
        let pod_mapper = {
            let replicasets = replicasets.clone();
            move |pod: &Pod| {
                controller_owner_keys::<ReplicaSet, Pod>(pod)
                    .iter()
                    .filter_map(|k| replicasets.get(k))
                    .flat_map(|rs| controller_owner_keys::<Deployment, ReplicaSet>(&*rs))
                    .collect()
            }
        };
        let workers = ctx.config.workers;
        let state = Arc::new(State {
            ctx,
            deployments,
            replicasets,
            pods,
        });
        Controller::new(NAME, state, reconcile)
            .primary(&d_informer)
            .watches(&rs_informer, rs_mapper)
            .watches(&pod_informer, pod_mapper)
            .workers(workers)
            .resync(Duration::from_secs(300))
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}
