//! `rkube-apiserver`: parse flags and config, set up logging, run.

use clap::Parser;

fn main() {
    let args = rkube_apiserver::Args::parse();
    let config = match rkube_apiserver::Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rkube-apiserver: error: {e:#}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rkube-apiserver: error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(rkube_apiserver::run(config, rkube_apiserver::shutdown_signal())) {
        eprintln!("rkube-apiserver: error: {e:#}");
        std::process::exit(1);
    }
}
