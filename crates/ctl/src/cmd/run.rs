//! `rkubectl run NAME --image=IMG [--port=P] [--env=K=V]... [--labels=..]
//! [--restart=Always|OnFailure|Never] [--command] [-- ARGS...]`: one pod,
//! as kubectl run makes it.

use crate::cmd::generate::{self, OutputFlags, PodFlags};
use crate::cmd::Context;
use crate::error::CtlError;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    pub name: String,
    #[arg(long)]
    pub image: String,
    /// The container's port.
    #[arg(long)]
    pub port: Option<i32>,
    /// Environment variables, `KEY=VALUE`; repeatable.
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// The pod's labels, `k=v,k2=v2` (default `run=NAME`).
    #[arg(short = 'l', long)]
    pub labels: Option<String>,
    /// Always, OnFailure or Never.
    #[arg(long, default_value = "Always")]
    pub restart: String,
    /// The arguments after `--` are the command rather than its arguments.
    #[arg(long)]
    pub command: bool,
    #[command(flatten)]
    pub output: OutputFlags,
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub async fn run(ctx: &Context, args: &RunArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let labels = match &args.labels {
        Some(l) => l
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| generate::key_value(p, "label"))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let env = args
        .env
        .iter()
        .map(|e| generate::key_value(e, "--env"))
        .collect::<Result<_, _>>()?;
    let flags = PodFlags {
        image: &args.image,
        labels,
        env,
        port: args.port,
        restart: &args.restart,
        command: args.command,
        args: &args.args,
    };
    let pod = generate::pod(&args.name, &flags)?;
    args.output.create(ctx, pod, out).await.map(|_| ())
}
