//! `rkube-controller-manager`: parse flags and config, set up logging, run.

use clap::Parser;

fn main() {
    let config = match rkube_controller_manager::Config::from_args(rkube_controller_manager::Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rkube-controller-manager: error: {e:#}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| {
        eprintln!("rkube-controller-manager: error: cannot start the async runtime: {e}");
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
    if let Err(e) = runtime.block_on(rkube_controller_manager::run(config, shutdown)) {
        eprintln!("rkube-controller-manager: error: {e:#}");
        std::process::exit(1);
    }
}
