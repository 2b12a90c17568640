//! rkubectl run in process, through the same parser and `run` as the binary.

use std::path::Path;

/// `rkubectl --config CONFIG --server URL ARGS...`: what it printed and
/// how it ended. `config` is the client config file (`/dev/null` for none,
/// so a stray `~/.rkube/config` is never read).
pub async fn rkubectl(url: &str, config: &Path, args: &[&str]) -> (String, Result<(), rkube_ctl::CtlError>) {
    use clap::Parser;
    let config = config.to_string_lossy();
    let argv = ["rkubectl", "--config", &config, "--server", url]
        .into_iter()
        .chain(args.iter().copied());
    let mut out = Vec::new();
    let result = match rkube_ctl::Cli::try_parse_from(argv) {
        Ok(cli) => rkube_ctl::run(cli, &mut out).await,
        Err(e) => Err(rkube_ctl::CtlError::usage(e.to_string())),
    };
    (String::from_utf8_lossy(&out).into_owned(), result)
}
