//! `rkubectl exec POD [-c C] [-i] [-t] -- CMD ARGS...`: runs a command in a
//! container through the apiserver and the pod's kubelet; stdout and stderr
//! come back separately and rkubectl exits with the command's status. With
//! `-t` the command runs on a terminal (`-it`: an interactive shell; the
//! local terminal is put in raw mode).

use crate::cmd::logs::resolve_pod;
use crate::cmd::Context;
use crate::error::CtlError;
use futures::StreamExt;
use rkube_api::kubelet::v1::{exec_input::Input, exec_output::Output, ExecInput, ExecStart};
use std::io::{Read, Write};

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The pod (`web-1` or `pod/web-1`).
    pub pod: String,
    /// The container; may be left out when the pod has only one.
    #[arg(short = 'c', long = "container")]
    pub container: Option<String>,
    /// Pass standard input to the command.
    #[arg(short = 'i', long = "stdin")]
    pub stdin: bool,
    /// Allocate a terminal (with -i: an interactive shell).
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub async fn run(ctx: &Context, args: &ExecArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let server = ctx.connect().await?;
    let start = ExecInput {
        input: Some(Input::Start(ExecStart {
            namespace: ctx.namespace.clone(),
            pod: resolve_pod(ctx, &args.pod).await?,
            container: args.container.clone().unwrap_or_default(),
            command: args.command.clone(),
            stdin: args.stdin,
            tty: args.tty,
            attach: false,
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<ExecInput>(16);
    tx.send(start)
        .await
        .map_err(|_| CtlError::usage("exec stream closed"))?;
    if args.stdin {
        // stdin is read on a thread: it blocks, and the runtime is single-threaded
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut stdin = std::io::stdin();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(ExecInput {
                            input: Some(Input::StdinEof(true)),
                        });
                        return;
                    }
                    Ok(n) => {
                        if tx
                            .blocking_send(ExecInput {
                                input: Some(Input::Stdin(buf[..n].to_vec())),
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    // With a terminal on both ends, keys go to the remote one as they are typed (raw mode);
    // restored when this returns.
    let _raw = if args.tty && args.stdin {
        RawTerminal::enter()
    } else {
        None
    };
    let input = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut output = server.client().exec(input).await.map_err(|e| server.err(e))?;
    let mut stderr = std::io::stderr();
    while let Some(item) = output.next().await {
        match item.map_err(|e| server.err(e))? {
            Output::Stdout(b) => {
                out.write_all(&b)?;
                out.flush()?;
            }
            Output::Stderr(b) => {
                stderr.write_all(&b)?;
                stderr.flush()?;
            }
            Output::ExitCode(0) => return Ok(()),
            Output::ExitCode(code) => return Err(CtlError::ExitCode(code)),
        }
    }
    Err(CtlError::usage(
        "the exec stream ended without an exit status; the kubelet may have restarted",
    ))
}

/// The local terminal in raw mode while this lives: no echo, no line editing, no signals
/// from Ctrl-C (the remote terminal handles them).
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    /// `None` when stdin is not a terminal (piped input is sent as it is).
    fn enter() -> Option<RawTerminal> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ =
            nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}
