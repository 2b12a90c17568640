//! `rkube-ingress`: parse flags and config, then run (see `rkube_daemon::main`).

use rkube_ingress::{run, Config, Options};

fn main() {
    let config = rkube_daemon::options::parse::<Options>().and_then(Config::from_options);
    rkube_daemon::main("rkube-ingress", config, run)
}
