//! The namespace controller: a namespace being deleted (the apiserver
//! marks it Terminating with the `kubernetes` finalizer) has everything in
//! it deleted, every namespaced kind of the API; when nothing is left the
//! finalizer is removed and the apiserver removes the namespace. Pods that
//! stop gracefully keep it Terminating until their kubelets are done.

use super::workload::is_deleting;
use super::Error;
use crate::{Context, Shutdown};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::core::v1::Namespace;
use rkube_api::{Resource, ResourceInfo, KINDS};
use rkube_client::{Action, Api, Client, Controller, DeleteParams, ListParams, Store};
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "namespace";

pub const FINALIZER: &str = "kubernetes";
/// How soon a namespace whose content is still going is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

struct State {
    client: Client,
    namespaces: Store<Namespace>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let informer = ctx.informers.get::<Namespace>();
        let state = Arc::new(State {
            client: ctx.client.clone(),
            namespaces: informer.store(),
        });
        Controller::new(NAME, state, reconcile)
            .primary(&informer)
            .workers(ctx.config.workers)
            .resync(Duration::from_secs(300))
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

/// The kinds whose objects live in namespaces, in the order they are
/// deleted: workloads before the pods they would recreate.
pub fn namespaced_kinds() -> Vec<&'static ResourceInfo> {
    let rank = |k: &ResourceInfo| match k.kind {
        "Deployment" | "DaemonSet" | "StatefulSet" | "CronJob" | "HorizontalPodAutoscaler" => 0,
        "ReplicaSet" | "Job" => 1,
        "Pod" => 2,
        _ => 3,
    };
    let mut kinds: Vec<&'static ResourceInfo> = KINDS.iter().filter(|k| k.namespaced).collect();
    kinds.sort_by_key(|k| rank(k));
    kinds
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let Some(ns) = state.namespaces.get(&key) else {
        return Ok(Action::await_change());
    };
    if !is_deleting(ns.metadata()) || !ns.metadata().finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = ns.name().to_string();
    let mut remaining = 0usize;
    for info in namespaced_kinds() {
        let list = state.client.list_dyn(info, &name, &ListParams::default()).await?;
        for obj in list.items {
            remaining += 1;
            match state
                .client
                .delete_dyn(info, &name, &obj.name, &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => remaining -= 1,
                Err(e) => return Err(e.into()),
            }
        }
    }
    if remaining > 0 {
        // Deletion is asynchronous (grace periods, finalizers): look again
        // until the lists come back empty.
        tracing::debug!(namespace = %name, remaining, "content still being deleted");
        return Ok(Action::requeue(RECHECK));
    }
    let api: Api<Namespace> = Api::all(state.client.clone());
    let uid = ns.metadata().uid.clone();
    match api
        .replace_with(&name, |mut n: Namespace| {
            if n.metadata().uid == uid {
                n.metadata_mut().finalizers.retain(|f| f != FINALIZER);
            }
            n
        })
        .await
    {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(namespace = %name, "namespace emptied; finalizer removed");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_namespaced_kind_is_emptied_workloads_first() {
        let kinds: Vec<&str> = namespaced_kinds().iter().map(|k| k.kind).collect();
        assert!(!kinds.contains(&"Namespace") && !kinds.contains(&"Node"));
        for k in [
            "Pod",
            "Service",
            "ConfigMap",
            "Secret",
            "Event",
            "Lease",
            "Endpoints",
        ] {
            assert!(kinds.contains(&k), "{k}");
        }
        let pos = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
        assert!(pos("Deployment") < pos("ReplicaSet") && pos("ReplicaSet") < pos("Pod"));
    }
}
