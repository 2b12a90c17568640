//! What a process running a table of named controllers shares (the controller-manager and
//! the cloud-controller-manager): choosing them with `--controllers`, a shutdown signal
//! they all watch, and running them until shutdown or the first failure.

use futures::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

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

/// A controller: runs until shutdown; an error ends the process, which its supervisor
/// (systemd, `make up`) restarts.
pub type StartFn<C> = fn(Arc<C>, Shutdown) -> BoxFuture<'static, anyhow::Result<()>>;

/// Which of `names` `spec` enables: `*` is all, `name` adds one, `-name` removes one
/// (`*,-route`), in Kubernetes' `--controllers` syntax.
pub fn enabled_controllers(names: &[&'static str], spec: &[String]) -> anyhow::Result<Vec<&'static str>> {
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
                on = names.to_vec();
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

/// Starts the `enabled` controllers of `table` and runs them until `shutdown` resolves or
/// one fails (its error, naming it, is returned); then stops the others and waits for them.
pub async fn run_controllers<C: Send + Sync + 'static>(
    ctx: Arc<C>,
    table: &[(&'static str, StartFn<C>)],
    enabled: &[&str],
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for (name, start) in table.iter().filter(|(n, _)| enabled.contains(n)) {
        let fut = start(ctx.clone(), Shutdown::new(stop_rx.clone()));
        let name = *name;
        tasks.spawn(async move { (name, fut.await) });
        tracing::info!(controller = name, "started");
    }
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
