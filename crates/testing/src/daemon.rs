//! A daemon run as a task of the test's runtime, through the same `run`
//! function its `main` calls.

use anyhow::Context;
use futures::future::BoxFuture;
use std::future::Future;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running daemon: `stop` asks it to shut down as SIGTERM would and
/// waits, `abort` kills it as `kill -9` would. Dropped, it is told to stop.
pub struct Daemon {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    /// Spawns `run(shutdown)`: e.g. `Daemon::spawn(|stop| rkube_scheduler::run(config, stop))`.
    pub fn spawn<Fut>(run: impl FnOnce(BoxFuture<'static, ()>) -> Fut) -> Daemon
    where
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(Box::pin(async {
            let _ = stopped.await;
        })));
        Daemon { stop, task }
    }

    /// Shuts it down and returns what its `run` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("the daemon's task panicked")?
    }

    /// Ends it without a graceful shutdown: work in flight is cut off.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
