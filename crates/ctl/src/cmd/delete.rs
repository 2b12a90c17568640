//! `rkubectl delete KIND NAME... | KIND/NAME... | -f FILE | KIND -l SEL |
//! KIND --all`: prints `pod "x" deleted` per object. Deletion is
//! asynchronous on the server (grace periods, finalizers, cascading): the
//! command returns once the server accepted it.

use crate::args::parse_targets;
use crate::cmd::Context;
use crate::error::CtlError;
use crate::manifest::{self, Purpose};
use crate::server::{ApiServer, DeleteOptions};
use rkube_api::ResourceInfo;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// `KIND NAME...`, `KIND/NAME...`, or `KIND` with -l or --all.
    pub targets: Vec<String>,
    /// Delete the objects of these manifests (file, directory or `-`).
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub files: Vec<String>,
    /// Also read manifests in subdirectories of a directory.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Delete the objects matching this label selector.
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Delete every object of the kind in the namespace.
    #[arg(long)]
    pub all: bool,
    /// What happens to dependents: `background` (the default: the garbage
    /// collector deletes them after the owner), `foreground` (dependents
    /// first, then the owner) or `orphan` (dependents are kept).
    #[arg(long, default_value = "background", value_parser = parse_cascade)]
    pub cascade: String,
    /// Seconds the object gets to stop gracefully; -1 uses the object's
    /// own default, 0 deletes immediately.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i32,
    /// Same as --grace-period=1: stop almost immediately.
    #[arg(long)]
    pub now: bool,
    /// Treat objects that do not exist as deleted.
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// `--cascade` values, including kubectl's legacy `true`/`false`.
fn parse_cascade(s: &str) -> Result<String, String> {
    match s.to_ascii_lowercase().as_str() {
        "background" | "true" => Ok("Background".into()),
        "foreground" => Ok("Foreground".into()),
        "orphan" | "false" => Ok("Orphan".into()),
        other => Err(format!("{other:?} is not one of background, foreground, orphan")),
    }
}

impl DeleteArgs {
    pub fn options(&self) -> DeleteOptions {
        let grace = if self.now { 1 } else { self.grace_period };
        DeleteOptions {
            propagation_policy: self.cascade.clone(),
            grace_period_seconds: (grace >= 0).then_some(grace),
        }
    }
}

pub async fn run(ctx: &Context, args: &DeleteArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let opts = args.options();
    // every (kind, namespace, name) to delete, resolved before deleting any
    let mut victims: Vec<(&'static ResourceInfo, String, String)> = Vec::new();
    let server;
    if !args.files.is_empty() {
        if !args.targets.is_empty() || args.selector.is_some() || args.all {
            return Err(CtlError::usage("give either -f FILE or KIND NAME..., not both"));
        }
        let sources = manifest::read_sources(&args.files, args.recursive)?;
        let objects = manifest::load(&sources, &ctx.namespace_choice(), Purpose::Delete)?;
        server = ctx.connect().await?;
        for fo in objects {
            victims.push((fo.obj.info, fo.obj.namespace.clone(), fo.obj.name.clone()));
        }
    } else {
        if args.targets.is_empty() {
            return Err(CtlError::usage(
                "you must provide one or more resources by argument or filename (e.g. `rkubectl delete pod x`, `rkubectl delete -f web.yaml`)",
            ));
        }
        let targets = parse_targets(&args.targets)?;
        let by_selector = args.selector.is_some() || args.all;
        if by_selector && targets.iter().any(|t| !t.names.is_empty()) {
            return Err(CtlError::usage(
                "names cannot be given together with --selector or --all",
            ));
        }
        if !by_selector && targets.iter().any(|t| t.names.is_empty()) {
            return Err(CtlError::usage(format!(
                "resource(s) were provided, but no name was specified; give a name, -l SELECTOR or --all (e.g. `rkubectl delete {} NAME`)",
                args.targets[0]
            )));
        }
        server = ctx.connect().await?;
        for t in &targets {
            if by_selector {
                let selector = args.selector.clone().unwrap_or_default();
                let list = server.list(t.info, &ctx.namespace, &selector, "").await?;
                for obj in list.items {
                    victims.push((t.info, obj.namespace.clone(), obj.name.clone()));
                }
            } else {
                for name in &t.names {
                    victims.push((t.info, ctx.namespace.clone(), name.clone()));
                }
            }
        }
        if by_selector && victims.is_empty() {
            eprintln!("No resources found");
            return Ok(());
        }
    }
    delete_all(&server, &victims, &opts, args.ignore_not_found, out).await
}

async fn delete_all(
    server: &ApiServer,
    victims: &[(&'static ResourceInfo, String, String)],
    opts: &DeleteOptions,
    ignore_not_found: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let mut failed = false;
    for (info, namespace, name) in victims {
        match server.delete(info, namespace, name, opts).await {
            Ok(()) => writeln!(out, "{} {name:?} deleted", info.singular_group())?,
            Err(e) if e.is_not_found() && ignore_not_found => {}
            Err(e @ CtlError::Connect { .. }) => return Err(e),
            Err(e) => {
                // like kubectl: report and go on with the other objects
                failed = true;
                eprintln!("{e}");
            }
        }
    }
    if failed {
        Err(CtlError::Reported)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cascade_values() {
        assert_eq!(parse_cascade("background").unwrap(), "Background");
        assert_eq!(parse_cascade("Foreground").unwrap(), "Foreground");
        assert_eq!(parse_cascade("orphan").unwrap(), "Orphan");
        assert_eq!(parse_cascade("false").unwrap(), "Orphan");
        assert!(parse_cascade("sometimes").is_err());
    }
}
