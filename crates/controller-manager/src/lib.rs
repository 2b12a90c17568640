//! rkube-controller-manager: one process running named reconcile loops,
//! each built on the client crate's controller runner, level-triggered,
//! idempotent and safe to kill at any moment. It talks only to the
//! apiserver; it must not touch containers, nodes' networks or the store.
//!
//! Which loops run is configuration (`--controllers=*,-name`): every loop is
//! registered by name in `CONTROLLERS`.

pub mod config;
pub mod controllers;
pub mod metrics;

pub use config::{Args, Config};
use futures::future::BoxFuture;
use rkube_client::{Client, Recorder};
pub use rkube_daemon::notify_systemd;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

/// What every controller shares.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub informers: rkube_client::SharedInformers,
    pub recorder: Recorder,
}

/// Resolves when the process shuts down.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub fn new(rx: watch::Receiver<bool>) -> Self {
        Shutdown(rx)
    }

    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}

/// A controller: runs until shutdown; an error ends the process, which its
/// supervisor (systemd, `make up`) restarts.
pub type StartFn = fn(Arc<Context>, Shutdown) -> BoxFuture<'static, anyhow::Result<()>>;

/// Every controller, by the name `--controllers` uses.
pub const CONTROLLERS: &[(&str, StartFn)] = controllers::ALL;

/// Which controllers `spec` enables: `*` is all, `name` adds one, `-name`
/// removes one (`*,-horizontal-pod-autoscaler`).
pub fn enabled(spec: &[String]) -> anyhow::Result<Vec<&'static str>> {
    let names: Vec<&'static str> = CONTROLLERS.iter().map(|(n, _)| *n).collect();
    let mut on: Vec<&'static str> = Vec::new();
    for item in spec
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (remove, name) = match item.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, item),
        };
        if name == "*" {
            if remove {
                on.clear();
            } else {
                on = names.clone();
            }
            continue;
        }
        let Some(found) = names.iter().find(|n| **n == name) else {
            anyhow::bail!(
                "--controllers: unknown controller {name:?}; known: {}",
                names.join(", ")
            );
        };
        if remove {
            on.retain(|n| n != found);
        } else if !on.contains(found) {
            on.push(found);
        }
    }
    Ok(on)
}

/// Runs the enabled controllers until `shutdown` resolves: what `main` calls.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let enabled = enabled(&config.controllers)?;
    let _health = rkube_daemon::serve_health(config.health_addr).await?;
    let client = Client::connect(&config.apiserver)?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let recorder = Recorder::new(client.clone(), "controller-manager", &host);
    let ctx = Arc::new(Context {
        informers: rkube_client::SharedInformers::new(client.clone()),
        client,
        config,
        recorder,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for (name, start) in CONTROLLERS.iter().filter(|(n, _)| enabled.contains(n)) {
        let fut = start(ctx.clone(), Shutdown::new(stop_rx.clone()));
        let name = *name;
        tasks.spawn(async move { (name, fut.await) });
        tracing::info!(controller = name, "started");
    }
    rkube_daemon::ready();
    tokio::select! {
        _ = shutdown => {}
        Some(done) = tasks.join_next() => {
            if let Ok((name, Err(e))) = done {
                let _ = stop_tx.send(true);
                return Err(e.context(format!("controller {name} failed")));
            }
        }
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_selection_follows_kubernetes_syntax() {
        let all = enabled(&["*".into()]).unwrap();
        assert_eq!(all.len(), CONTROLLERS.len());
        if let Some(first) = all.first() {
            let without = enabled(&[format!("*,-{first}")]).unwrap();
            assert!(!without.contains(first));
            assert_eq!(enabled(&[first.to_string()]).unwrap(), vec![*first]);
        }
        let err = enabled(&["nope".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown controller \"nope\""), "{err}");
    }
}
