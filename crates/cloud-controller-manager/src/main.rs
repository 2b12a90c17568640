//! `rkube-cloud-controller-manager`: parse flags and config, then run (see `rkube_daemon::main`).

use clap::Parser;

fn main() {
    let config =
        rkube_cloud_controller_manager::Config::from_args(rkube_cloud_controller_manager::Args::parse());
    rkube_daemon::main(
        "rkube-cloud-controller-manager",
        config,
        rkube_cloud_controller_manager::run,
    )
}
