//! `rkubectl create -f`: create every object of the files; an object that
//! already exists is an error (use apply to update).

use crate::cmd::Context;
use crate::error::CtlError;
use crate::manifest::{self, Purpose};
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Manifest file, directory of manifests, or `-` for standard input;
    /// repeatable.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE|DIR|-")]
    pub files: Vec<String>,
    /// Also read manifests in subdirectories of a directory.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

pub async fn run(ctx: &Context, args: &CreateArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let sources = manifest::read_sources(&args.files, args.recursive)?;
    let objects = manifest::load(&sources, &ctx.namespace_choice(), Purpose::Create)?;
    let server = ctx.connect().await?;
    let mut failed = false;
    for fo in &objects {
        match server.create(&fo.obj).await {
            // generateName objects learn their name from the server
            Ok(created) => writeln!(out, "{} created", created.display_name())?,
            Err(e @ CtlError::Connect { .. }) => return Err(e),
            Err(e) => {
                failed = true;
                eprintln!(
                    "{}",
                    e.with_context(format!("error when creating {:?}", fo.source))
                );
            }
        }
    }
    if failed {
        Err(CtlError::Reported)
    } else {
        Ok(())
    }
}
