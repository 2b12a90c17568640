//! `rkubectl`: parses the command line and hands it to the library; the
//! process exits 1 on any error, as kubectl does.

use clap::Parser;
use rkube_ctl::{run, Cli, CtlError};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; usage mistakes exit 1
            // like kubectl, not clap's 2
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let code = match runtime.block_on(run(cli, &mut out)) {
        Ok(()) => 0,
        // the reader went away (`| head`): nothing left to say
        Err(CtlError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(CtlError::Reported) => 1,
        Err(CtlError::ExitCode(code)) => code,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    };
    std::process::exit(code);
}
