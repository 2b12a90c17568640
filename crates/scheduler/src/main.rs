//! `rkube-scheduler`: parse flags and config, then run (see `rkube_daemon::main`).

use clap::Parser;

fn main() {
    let config = rkube_scheduler::Config::from_args(rkube_scheduler::Args::parse());
    rkube_daemon::main("rkube-scheduler", config, rkube_scheduler::run)
}
