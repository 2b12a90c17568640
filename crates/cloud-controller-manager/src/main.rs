//! `rkube-cloud-controller-manager`: parse flags and config, then run (see `rkube_daemon::main`).

use rkube_cloud_controller_manager::{run, Config, Options};

fn main() {
    let config = rkube_daemon::options::parse::<Options>().and_then(Config::from_options);
    rkube_daemon::main("rkube-cloud-controller-manager", config, run)
}
