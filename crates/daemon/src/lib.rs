//! What every rkube daemon's `main` shares, so each `main.rs` is a few
//! lines: logging through tracing (`RUST_LOG`), the async runtime, shutdown
//! on SIGTERM or Ctrl-C, readiness and the watchdog for systemd
//! (`Type=notify`, `WatchdogSec=`), the health and metrics endpoint, and
//! the shape of a daemon's options: one struct that is both its flags and its
//! optional YAML config file, with the settings every daemon shares declared
//! once (see [`options`]). It must stay free of anything specific to one
//! daemon.
//!
//! A daemon's `run` does two things with it: `serve_health(addr)` first
//! (the endpoint lives as long as the returned handle), and `ready()` once
//! it serves. `main` does the rest: watchdog pings, `STOPPING=1` on SIGTERM.

pub mod health;
pub mod metrics;
pub mod options;
pub mod systemd;

pub use health::{serve_health, Health, HealthAddr, HealthServer};
pub use metrics::Registry;
pub use options::{ClientOptions, DaemonOptions, DurationArg, Options};
use std::future::Future;
use std::path::Path;

/// Runs a daemon: `config` is the result of parsing flags and the config
/// file; `run` is the daemon's library entry point. Bad configuration exits
/// 2 with one line, before anything starts; a failure while running exits 1.
pub fn main<C, Fut>(name: &str, config: anyhow::Result<C>, run: impl FnOnce(C, ShutdownSignal) -> Fut) -> !
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            std::process::exit(2);
        }
    };
    // stderr, and colours only on a terminal: journald and log files
    // (`make up`) would otherwise keep the escape codes.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    Registry::global()
        .gauge_with(
            "rkube_build_info",
            "Which rkube daemon and version this is; always 1.",
            &[("daemon", name), ("version", env!("CARGO_PKG_VERSION"))],
        )
        .set(1);
    start_watchdog(&runtime);
    let shutdown: ShutdownSignal = Box::pin(async {
        shutdown_signal().await;
        notify_systemd("STOPPING=1");
    });
    match runtime.block_on(run(config, shutdown)) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// The future `shutdown_signal` returns.
pub type ShutdownSignal = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Resolves on SIGTERM or Ctrl-C.
pub fn shutdown_signal() -> ShutdownSignal {
    Box::pin(async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    })
}

/// Tells systemd (`Type=notify`) about the daemon's state (`READY=1`,
/// `STOPPING=1`, `WATCHDOG=1`), when run under it; does nothing otherwise.
pub fn notify_systemd(state: &str) {
    let notifier = systemd::Notifier::from_env();
    if let Err(e) = notifier.notify(state) {
        let socket = notifier.socket().unwrap_or_default().to_string_lossy();
        tracing::warn!("cannot notify systemd at {socket}: {e}");
    }
}

/// The daemon serves: `/readyz` turns green and systemd gets `READY=1`
/// (a `Type=notify` unit is "active" from then on, and units ordered
/// after it start). Call it once the daemon's listeners are bound and its
/// loops started.
pub fn ready() {
    Health::global().set_ready(true);
    notify_systemd("READY=1");
}

/// When systemd asked for a watchdog (`WatchdogSec=` sets `WATCHDOG_USEC`
/// and `WATCHDOG_PID`), pings it at half the interval from a task on
/// `runtime`, while the process's health checks pass. The task lives and
/// dies with the runtime, so a wedged or stopped runtime stops the pings.
fn start_watchdog(runtime: &tokio::runtime::Runtime) {
    let notifier = systemd::Notifier::from_env();
    if !notifier.is_enabled() {
        return;
    }
    let interval = systemd::watchdog_interval(
        std::env::var_os("WATCHDOG_USEC").as_deref(),
        std::env::var_os("WATCHDOG_PID").as_deref(),
        std::process::id(),
    );
    match interval {
        Ok(Some(interval)) => {
            tracing::info!(?interval, "pinging the systemd watchdog");
            runtime.spawn(systemd::watchdog(notifier, interval, || Health::global().check()));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("systemd watchdog not used: {e}"),
    }
}

/// A listener's accepted connections with Nagle's algorithm off, for a
/// tonic server's `serve_with_incoming`: tonic sets TCP_NODELAY only on
/// sockets it accepts itself, and without it every small reply waits for
/// the client's delayed ACK (about 40 ms a call).
pub fn nodelay_incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::TryStreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map_ok(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!("cannot set TCP_NODELAY: {e}");
        }
        stream
    })
}

/// The apiserver URL a daemon uses: `--apiserver` (flag or config file), else, with a
/// `--kubeconfig`, empty (the kubeconfig's server), else the local default.
pub fn apiserver_url(given: Option<String>, kubeconfig: Option<&Path>) -> String {
    given.unwrap_or_else(|| {
        if kubeconfig.is_some() {
            String::new()
        } else {
            "https://127.0.0.1:6443".to_string()
        }
    })
}

/// This machine's host name (the kernel's), empty when it cannot be read:
/// for event sources, leader-election identities and default names.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `error: cause: cause ...` — an error with its whole source chain, for
/// status messages (a pod's `ErrImagePull` reason, an event, a relayed
/// gRPC error) where only one line is shown.
pub fn error_report(error: &dyn std::error::Error) -> String {
    with_sources(error.to_string(), error.source())
}

/// `head`, then each error of the `source` chain not already said (wrappers
/// often repeat their source's text).
pub fn with_sources(mut head: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(cause) = source {
        let text = cause.to_string();
        if !head.contains(&text) {
            head.push_str(": ");
            head.push_str(&text);
        }
        source = cause.source();
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apiserver_comes_from_the_option_the_kubeconfig_or_the_default() {
        let kc = Some(Path::new("/etc/rkube/scheduler.conf"));
        assert_eq!(apiserver_url(Some("https://a:6443".into()), kc), "https://a:6443");
        // Empty: the kubeconfig's own server.
        assert_eq!(apiserver_url(None, kc), "");
        assert_eq!(apiserver_url(None, None), "https://127.0.0.1:6443");
    }
}
