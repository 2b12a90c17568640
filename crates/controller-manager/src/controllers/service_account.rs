//! The serviceaccount controller: every active namespace has a ServiceAccount named
//! `default`, which pods that name none run as. It is made again if deleted, and not made in
//! a namespace that is going away.

use super::Error;
use crate::{Context, Shutdown};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::core::v1::{Namespace, ServiceAccount};
use rkube_api::meta::v1::ObjectMeta;
use rkube_api::Resource;
use rkube_client::{Action, Api, Controller, Store};
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "serviceaccount";

/// The ServiceAccount every namespace has.
pub const DEFAULT: &str = "default";

struct State {
    ctx: Arc<Context>,
    namespaces: Store<Namespace>,
    accounts: Store<ServiceAccount>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let ns_informer = ctx.informers.get::<Namespace>();
        let sa_informer = ctx.informers.get::<ServiceAccount>();
        let workers = ctx.config.workers;
        let state = Arc::new(State {
            ctx,
            namespaces: ns_informer.store(),
            accounts: sa_informer.store(),
        });
        // A deleted default account wakes its namespace.
        let mapper = |sa: &ServiceAccount| {
            if sa.name() == DEFAULT {
                vec![sa.namespace().to_string()]
            } else {
                Vec::new()
            }
        };
        Controller::new(NAME, state, reconcile)
            .primary(&ns_informer)
            .watches(&sa_informer, mapper)
            .workers(workers)
            .resync(Duration::from_secs(300))
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let Some(ns) = state.namespaces.get(&key) else {
        return Ok(Action::await_change());
    };
    let active = ns.status.as_ref().is_none_or(|s| s.phase != "Terminating")
        && ns.metadata().deletion_timestamp.is_empty();
    if !active || state.accounts.get_namespaced(&key, DEFAULT).is_some() {
        return Ok(Action::await_change());
    }
    let mut sa = ServiceAccount {
        metadata: Some(ObjectMeta {
            name: DEFAULT.into(),
            namespace: key.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    sa.set_type_meta();
    match Api::<ServiceAccount>::namespaced(state.ctx.client.clone(), &key)
        .create(&sa)
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        // Already there (the cache was behind), or the namespace began terminating.
        Err(e) if e.is_already_exists() || e.is_forbidden() || e.is_not_found() => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}
