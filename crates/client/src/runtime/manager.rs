//! What a process running a table of named controllers shares (the controller-manager and
//! the cloud-controller-manager): its `--controllers` and `--workers` options, choosing the
//! controllers by name, a shutdown signal they all watch, and [`Manager::run`], which
//! serves health, connects, builds the controllers' context and runs them until shutdown
//! or the first failure.

use crate::leader::{run_leading, LeaderElection};
use crate::{Client, Recorder, SharedInformers};
use futures::future::BoxFuture;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// `--controllers` and `--workers`, flattened into a manager's options (flags and config
/// file alike, see `rkube_daemon::options`), beside its `rkube_daemon::ClientOptions`
/// (not nested in them: see there).
#[derive(clap::Args, serde::Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct ManagerOptions {
    /// Which controllers run: `*` for all, `name` to add, `-name` to remove
    /// (e.g. `*,-route`); an unknown name is an error listing the known ones.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub controllers: Option<Vec<String>>,
    /// Concurrent reconciles per controller.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

impl ManagerOptions {
    /// The controllers spec, every controller (`*`) unless given.
    pub fn controllers(&self) -> Vec<String> {
        self.controllers.clone().unwrap_or_else(|| vec!["*".into()])
    }

    /// The workers per controller, `default` unless given; at least 1.
    pub fn workers(&self, default: usize) -> anyhow::Result<usize> {
        match self.workers.unwrap_or(default) {
            0 => anyhow::bail!("--workers must be at least 1"),
            n => Ok(n),
        }
    }
}

/// What the manager builds for its controllers' context: a client of the apiserver, the
/// informers they share and an event recorder under the manager's name.
pub struct ManagerParts {
    pub client: Client,
    pub informers: SharedInformers,
    pub recorder: Recorder,
}

/// A process running a table of named controllers.
pub struct Manager<C: 'static> {
    /// The event source (`controller-manager`).
    pub component: &'static str,
    /// Every controller, by the name `--controllers` uses.
    pub table: &'static [(&'static str, StartFn<C>)],
    /// Which of them run, in `--controllers` syntax.
    pub controllers: Vec<String>,
    pub apiserver: String,
    /// Credentials (see `--kubeconfig`); `None`: plain `apiserver`.
    pub kubeconfig: Option<PathBuf>,
    /// The health and metrics endpoint; `None` serves none.
    pub health_addr: Option<SocketAddr>,
    /// Whether the controllers run only while this process holds a Lease (see
    /// [`crate::leader::run_leading`]); off unless set with [`Manager::leader_election`].
    pub leader_election: Option<LeaderElection>,
}

impl<C: Send + Sync + 'static> Manager<C> {
    /// The manager `component` running the `controllers` (in `--controllers` syntax) of
    /// `table`, against `apiserver` with the credentials of `kubeconfig`.
    pub fn new(
        component: &'static str,
        table: &'static [(&'static str, StartFn<C>)],
        controllers: &[String],
        (apiserver, kubeconfig): (&str, Option<&std::path::Path>),
        health_addr: Option<SocketAddr>,
    ) -> Self {
        Manager {
            component,
            table,
            controllers: controllers.to_vec(),
            apiserver: apiserver.to_string(),
            kubeconfig: kubeconfig.map(Into::into),
            health_addr,
            leader_election: None,
        }
    }

    /// The controllers run only while this process leads, as `election` says.
    pub fn leader_election(mut self, election: LeaderElection) -> Self {
        self.leader_election = Some(election);
        self
    }

    /// Which controllers of the table `spec` enables (see [`enabled_controllers`]).
    pub fn enabled(
        table: &[(&'static str, StartFn<C>)],
        spec: &[String],
    ) -> anyhow::Result<Vec<&'static str>> {
        let names: Vec<&'static str> = table.iter().map(|(n, _)| *n).collect();
        enabled_controllers(&names, spec)
    }

    /// Serves health, connects to the apiserver, builds the controllers' context with
    /// `context`, says it is ready and runs the enabled controllers until `shutdown`
    /// resolves or one fails.
    pub async fn run(
        self,
        context: impl FnOnce(ManagerParts) -> C,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let enabled = Self::enabled(self.table, &self.controllers)?;
        let _health = rkube_daemon::serve_health(self.health_addr).await?;
        let client = Client::for_daemon(&self.apiserver, self.kubeconfig.as_deref())?;
        let host = rkube_daemon::host_name();
        let ctx_client = client.clone();
        let ctx = Arc::new(context(ManagerParts {
            recorder: Recorder::new(client.clone(), self.component, &host),
            informers: SharedInformers::new(client.clone()),
            client,
        }));
        // Ready means serving, as leader or as a standby waiting for the Lease.
        rkube_daemon::ready();
        let table = self.table;
        let election = self.leader_election.unwrap_or_else(|| LeaderElection {
            enabled: false,
            ..LeaderElection::new(self.component)
        });
        let client = ctx_client;
        run_leading(client, &election, shutdown, move |stop| async move {
            run_controllers(ctx, table, &enabled, stop).await
        })
        .await
    }
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
