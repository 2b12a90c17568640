//! `rkubelet`: parse flags and config, then run (see `rkube_daemon::main`).

use clap::Parser;

fn main() {
    let config = rkube_kubelet::Config::from_args(rkube_kubelet::Args::parse());
    rkube_daemon::main("rkubelet", config, rkube_kubelet::run)
}
