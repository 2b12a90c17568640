//! `rkube-proxy`: parse flags and config, then run (see `rkube_daemon::main`).

use clap::Parser;

fn main() {
    let config = rkube_proxy::Config::from_args(rkube_proxy::Args::parse());
    rkube_daemon::main("rkube-proxy", config, rkube_proxy::run)
}
