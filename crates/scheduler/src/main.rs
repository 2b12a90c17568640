//! `rkube-scheduler`: parse flags and config, set up logging, run.

use clap::Parser;

fn main() {
    let config = match rkube_scheduler::Config::from_args(rkube_scheduler::Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rkube-scheduler: error: {e:#}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| {
        eprintln!("rkube-scheduler: error: cannot start the async runtime: {e}");
        std::process::exit(1);
    });
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    if let Err(e) = runtime.block_on(rkube_scheduler::run(config, shutdown)) {
        eprintln!("rkube-scheduler: error: {e:#}");
        std::process::exit(1);
    }
}
