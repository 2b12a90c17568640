//! `rkubelet`: parse flags and config, then run (see `rkube_daemon::main`); or, as
//! `rkubelet log-driver PATH`, one container's logger (see `log_driver`).

fn main() {
    // containerd's shim runs `rkubelet log-driver PATH` as each container's logger.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(rkube_node_runtime::log_driver::SUBCOMMAND) {
        std::process::exit(rkube_node_runtime::log_driver::main(&args[1..]));
    }
    let options = rkube_daemon::options::parse::<rkube_kubelet::config::Options>();
    let config = options.and_then(rkube_kubelet::Config::from_options);
    rkube_daemon::main("rkubelet", config, rkube_kubelet::run)
}
