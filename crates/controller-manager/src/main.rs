//! `rkube-controller-manager`: parse flags and config, then run (see `rkube_daemon::main`).

use clap::Parser;

fn main() {
    let config = rkube_controller_manager::Config::from_args(rkube_controller_manager::Args::parse());
    rkube_daemon::main("rkube-controller-manager", config, rkube_controller_manager::run)
}
