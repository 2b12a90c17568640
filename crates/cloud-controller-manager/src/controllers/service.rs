//! The service controller (Kubernetes' service controller in the cloud
//! controller manager): a `type: LoadBalancer` Service gets a load
//! balancer from the provider and its address in
//! `status.loadBalancer.ingress`; the load balancer is deleted when the
//! Service is deleted or changes type. Services with a
//! `spec.loadBalancerClass` belong to another implementation and are left
//! alone.
//!
//! The finalizer `service.kubernetes.io/load-balancer-cleanup` goes on a
//! Service before its load balancer is made and comes off only after the
//! load balancer is gone, so a Service deleted while this manager is down
//! still has its address released when it comes back.
//!
//! Providers that allocate from a pool (`local`) rebuild their state from
//! the Services' status: at start the Services that already show an
//! address are ensured first, so a new Service cannot take an address that
//! an existing one still holds.

use super::{ready_status, Error};
use crate::{Context, Shutdown};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Node, Service};
use rkube_api::Resource;
use rkube_client::{Action, Api, Controller, EventType, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const NAME: &str = "service";
pub const FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";

struct State {
    ctx: Arc<Context>,
    services: Store<Service>,
    nodes: Store<Node>,
    /// The node set each load balancer was last pointed at.
    hosts: Mutex<HashMap<String, Vec<String>>>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        if ctx.cloud.load_balancer().is_none() {
            return super::idle(NAME, "the provider has no load balancers", shutdown).await;
        }
        let services = ctx.informers.get::<Service>();
        let nodes = ctx.informers.get::<Node>();
        let state = Arc::new(State {
            ctx: ctx.clone(),
            services: services.store(),
            nodes: nodes.store(),
            hosts: Mutex::new(HashMap::new()),
        });
        let svc_store = services.store();
        let controller = Controller::new(NAME, state.clone(), reconcile)
            .primary(&services)
            // The node set changed: load balancers are pointed at it again
            // (quietly when nothing changed).
            .watches(&nodes, move |_: &Node| {
                svc_store
                    .list()
                    .iter()
                    .filter(|s| wants_load_balancer(s))
                    .map(|s| s.key())
                    .collect()
            })
            .workers(ctx.config.workers);
        tokio::select! {
            _ = futures::future::join(services.wait_until_synced(), nodes.wait_until_synced()) => {}
            _ = shutdown.clone().wait() => return Ok(()),
        }
        adopt(&state).await;
        controller.run(shutdown.wait()).await;
        Ok(())
    }
    .boxed()
}

/// Ensures, one by one, the load balancers whose Services already show an
/// address, before anything else may allocate.
async fn adopt(state: &State) {
    let Some(lb) = state.ctx.cloud.load_balancer() else {
        return;
    };
    let nodes = hosts(&state.nodes);
    for svc in state.services.list() {
        if wants_load_balancer(&svc) && !ingress(&svc).is_empty() {
            if let Err(e) = lb
                .ensure_load_balancer(&state.ctx.config.cluster_name, &svc, &nodes)
                .await
            {
                tracing::warn!(service = %svc.key(), "cannot adopt load balancer: {e}");
            }
        }
    }
}

/// Whether this controller should give `svc` a load balancer.
pub fn wants_load_balancer(svc: &Service) -> bool {
    svc.metadata().deletion_timestamp.is_empty()
        && svc
            .spec
            .as_ref()
            .is_some_and(|s| s.r#type == "LoadBalancer" && s.load_balancer_class.is_empty())
}

pub fn has_finalizer(svc: &Service) -> bool {
    svc.metadata().finalizers.iter().any(|f| f == FINALIZER)
}

pub fn ingress(svc: &Service) -> Vec<LoadBalancerIngress> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .map(|l| l.ingress.clone())
        .unwrap_or_default()
}

/// The nodes a load balancer sends traffic to: Ready ones, sorted.
fn hosts(nodes: &Store<Node>) -> Vec<Node> {
    let mut out: Vec<Node> = nodes
        .list()
        .iter()
        .filter(|n| ready_status(n) == "True" && n.metadata().deletion_timestamp.is_empty())
        .map(|n| (**n).clone())
        .collect();
    out.sort_by(|a, b| a.name().cmp(b.name()));
    out
}

fn ips(ingress: &[LoadBalancerIngress]) -> Vec<&str> {
    ingress.iter().map(|i| i.ip.as_str()).collect()
}

async fn set_ingress(ctx: &Context, svc: &Service, ingress: Vec<LoadBalancerIngress>) -> Result<(), Error> {
    let api = Api::<Service>::namespaced(ctx.client.clone(), svc.namespace());
    match api
        .replace_status_with(svc.name(), |mut s| {
            s.status.get_or_insert_with(Default::default).load_balancer = Some(LoadBalancerStatus {
                ingress: ingress.clone(),
            });
            s
        })
        .await
    {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

async fn set_finalizer(ctx: &Context, svc: &Service, on: bool) -> Result<(), Error> {
    let api = Api::<Service>::namespaced(ctx.client.clone(), svc.namespace());
    match api
        .replace_with(svc.name(), |mut s| {
            let f = &mut s.metadata.get_or_insert_with(Default::default).finalizers;
            f.retain(|x| x != FINALIZER);
            if on {
                f.push(FINALIZER.to_string());
            }
            s
        })
        .await
    {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let Some(lb) = ctx.cloud.load_balancer() else {
        return Ok(Action::await_change());
    };
    let cluster = &ctx.config.cluster_name;
    let Some(svc) = state.services.get(&key) else {
        state.hosts.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        return Ok(Action::await_change());
    };
    let current = ingress(&svc);
    if wants_load_balancer(&svc) {
        if !has_finalizer(&svc) {
            set_finalizer(ctx, &svc, true).await?;
        }
        let nodes = hosts(&state.nodes);
        let names: Vec<String> = nodes.iter().map(|n| n.name().to_string()).collect();
        let existing = lb.get_load_balancer(cluster, &svc).await?;
        if existing
            .as_deref()
            .is_some_and(|e| !e.is_empty() && ips(e) == ips(&current))
        {
            let before = state
                .hosts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone(), names.clone());
            if before.as_ref() != Some(&names) {
                if let Err(e) = lb.update_load_balancer(cluster, &svc, &nodes).await {
                    state.hosts.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                    crate::record(
                        ctx,
                        &*svc,
                        EventType::Warning,
                        "UpdateLoadBalancerFailed",
                        &format!("Error updating load balancer with new hosts: {e}"),
                    )
                    .await;
                    return Err(e.into());
                }
                if before.is_some() {
                    crate::record(
                        ctx,
                        &*svc,
                        EventType::Normal,
                        "UpdatedLoadBalancer",
                        "Updated load balancer with new hosts",
                    )
                    .await;
                }
            }
            return Ok(Action::await_change());
        }
        crate::record(
            ctx,
            &*svc,
            EventType::Normal,
            "EnsuringLoadBalancer",
            "Ensuring load balancer",
        )
        .await;
        let got = match lb.ensure_load_balancer(cluster, &svc, &nodes).await {
            Ok(g) => g,
            Err(e) => {
                crate::record(
                    ctx,
                    &*svc,
                    EventType::Warning,
                    "SyncLoadBalancerFailed",
                    &format!("Error syncing load balancer: {e}"),
                )
                .await;
                return Err(e.into());
            }
        };
        if got != current {
            set_ingress(ctx, &svc, got.clone()).await?;
        }
        state
            .hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), names);
        tracing::info!(service = %key, ingress = ?ips(&got), "load balancer ensured");
        crate::record(
            ctx,
            &*svc,
            EventType::Normal,
            "EnsuredLoadBalancer",
            "Ensured load balancer",
        )
        .await;
        return Ok(Action::await_change());
    }
    // Not (or no longer) a load balancer of ours: release it.
    if !has_finalizer(&svc) && current.is_empty() {
        return Ok(Action::await_change());
    }
    crate::record(
        ctx,
        &*svc,
        EventType::Normal,
        "DeletingLoadBalancer",
        "Deleting load balancer",
    )
    .await;
    if let Err(e) = lb.ensure_load_balancer_deleted(cluster, &svc).await {
        crate::record(
            ctx,
            &*svc,
            EventType::Warning,
            "SyncLoadBalancerFailed",
            &format!("Error deleting load balancer: {e}"),
        )
        .await;
        return Err(e.into());
    }
    state.hosts.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
    if !current.is_empty() && svc.metadata().deletion_timestamp.is_empty() {
        set_ingress(ctx, &svc, Vec::new()).await?;
    }
    tracing::info!(service = %key, "load balancer deleted");
    crate::record(
        ctx,
        &*svc,
        EventType::Normal,
        "DeletedLoadBalancer",
        "Deleted load balancer",
    )
    .await;
    if has_finalizer(&svc) {
        set_finalizer(ctx, &svc, false).await?;
    }
    Ok(Action::await_change())
}
