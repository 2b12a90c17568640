//! The resourcequota controller: keeps each ResourceQuota's `status.hard` equal to its
//! spec and `status.used` equal to what its namespace holds, as Kubernetes' does. The
//! apiserver charges a quota when it admits an object; this loop gives back what is freed
//! (pods that end or are deleted, objects removed) and picks up changes to `spec.hard`.
//!
//! A recount reads the quota and then the objects straight from the apiserver, not from
//! caches, and writes with the quota's resourceVersion: the apiserver charges a quota in
//! the same transaction that creates the object, so every object charged before the quota
//! was read is in the list, and a charge after it makes the write conflict (then the loop
//! counts again). A lagging cache can therefore never hand out room twice.

use super::Error;
use crate::{Context, Shutdown};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::core::v1::{Pod, ResourceQuota};
use rkube_api::quota::{self, Usage};
use rkube_api::{Resource, KINDS};
use rkube_client::{Action, Api, Controller, ListParams, Store};
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "resourcequota";

/// How often quotas over kinds the loop does not watch are recounted (Kubernetes'
/// `--resource-quota-sync-period` is 5m; object counts here are cheap to take).
const RECOUNT: Duration = Duration::from_secs(30);

struct State {
    ctx: Arc<Context>,
    quotas: Store<ResourceQuota>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let quota_informer = ctx.informers.get::<ResourceQuota>();
        let pod_informer = ctx.informers.get::<Pod>();
        let quotas = quota_informer.store();
        // Pods are what quotas most often limit, and what frees room most often (ending,
        // being deleted): any change recounts the quotas of the pod's namespace.
        let pod_mapper = {
            let quotas = quotas.clone();
            move |pod: &Pod| {
                quotas
                    .list()
                    .iter()
                    .filter(|q| q.namespace() == pod.namespace())
                    .map(|q| q.key())
                    .collect::<Vec<_>>()
            }
        };
        let workers = ctx.config.workers;
        let state = Arc::new(State { ctx, quotas });
        Controller::new(NAME, state, reconcile)
            .primary(&quota_informer)
            .watches(&pod_informer, pod_mapper)
            .workers(workers)
            .resync(RECOUNT)
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let Some(cached) = state.quotas.get(&key) else {
        return Ok(Action::await_change());
    };
    let client = state.ctx.client.clone();
    let api: Api<ResourceQuota> = Api::namespaced(client.clone(), cached.namespace());
    // fresh, so that the count below includes everything charged to this revision
    let Some(q) = api.get_opt(cached.name()).await? else {
        return Ok(Action::await_change());
    };
    let hard = q.spec.as_ref().map(|s| s.hard.clone()).unwrap_or_default();
    let used = count(&client, &q).await?;
    let mut updated = q.clone();
    let status = updated.status.get_or_insert_with(Default::default);
    status.hard = hard.clone();
    status.used = hard
        .keys()
        .map(|k| (k.clone(), quota::quantity(k, used.get(k).copied().unwrap_or(0))))
        .collect();
    if updated != q {
        match api.update_status(&updated).await {
            Ok(_) => {}
            // charged meanwhile: count again
            Err(e) if e.is_conflict() => return Ok(Action::requeue(Duration::from_millis(100))),
            Err(e) if e.is_not_found() => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::requeue(RECOUNT))
}

/// What the quota's namespace holds under the quota's hard names, listed from the
/// apiserver.
async fn count(client: &rkube_client::Client, q: &ResourceQuota) -> Result<Usage, Error> {
    let hard = q.spec.as_ref().map(|s| s.hard.clone()).unwrap_or_default();
    let scoped = q.spec.as_ref().is_some_and(|s| !s.scopes.is_empty());
    let now = rkube_api::time::now();
    let mut used = Usage::new();
    for info in KINDS.iter().filter(|i| i.namespaced) {
        let names = quota::count_names(info);
        let is_pods = info.kind == "Pod";
        let wanted = names.iter().any(|n| hard.contains_key(n))
            || is_pods && quota::POD_COMPUTE.iter().any(|n| hard.contains_key(*n));
        if !wanted {
            continue;
        }
        if is_pods {
            let pods = Api::<Pod>::namespaced(client.clone(), q.namespace())
                .list(&ListParams::default())
                .await?;
            for pod in pods
                .items
                .iter()
                .filter(|p| quota::pod_counts(p, &now) && quota::in_scope(q, *p))
            {
                for (k, v) in quota::usage(pod) {
                    *used.entry(k).or_insert(0) += v;
                }
            }
        } else if !scoped {
            let n = client
                .list_dyn(info, q.namespace(), &ListParams::default())
                .await?
                .items
                .len() as i128;
            for name in names {
                *used.entry(name).or_insert(0) += n * 1_000_000_000;
            }
        }
    }
    Ok(used)
}
