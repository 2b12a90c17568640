//! `rkube-apiserver`: parse flags and config, then run (see `rkube_daemon::main`).

use clap::Parser;

fn main() {
    let config = rkube_apiserver::Config::from_args(rkube_apiserver::Args::parse());
    rkube_daemon::main("rkube-apiserver", config, rkube_apiserver::run)
}
