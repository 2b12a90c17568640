//! `rkubectl set image deployment/NAME CONTAINER=IMAGE...` (`*=IMAGE` for
//! every container): changes the template, which starts a rollout.

use crate::cmd::rollout::deployment_name;
use crate::cmd::Context;
use crate::error::CtlError;
use crate::server::ctl_error;
use rkube_api::apps::v1::Deployment;
use rkube_client::Api;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    #[command(subcommand)]
    pub what: SetCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SetCommand {
    /// Change container images: `set image deployment/web app=nginx:1.27`.
    Image {
        /// `deployment/NAME` followed by `CONTAINER=IMAGE` pairs.
        args: Vec<String>,
    },
}

/// Applies `CONTAINER=IMAGE` pairs to a deployment; errors name the
/// container that does not exist.
pub fn set_images(d: &mut Deployment, pairs: &[(String, String)]) -> Result<(), CtlError> {
    let spec = d
        .spec
        .get_or_insert_with(Default::default)
        .template
        .get_or_insert_with(Default::default)
        .spec
        .get_or_insert_with(Default::default);
    for (name, image) in pairs {
        let mut found = false;
        for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut()) {
            if name == "*" || c.name == *name {
                c.image = image.clone();
                found = true;
            }
        }
        if !found {
            return Err(CtlError::usage(format!(
                "unable to find container named {name:?}"
            )));
        }
    }
    Ok(())
}

pub async fn run(ctx: &Context, args: &SetArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let SetCommand::Image { args } = &args.what;
    let (targets, pairs): (Vec<String>, Vec<String>) = args.iter().cloned().partition(|a| !a.contains('='));
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|p| {
            let (c, i) = p.split_once('=').unwrap_or((p, ""));
            (c.to_string(), i.to_string())
        })
        .collect();
    if pairs.is_empty() || pairs.iter().any(|(c, i)| c.is_empty() || i.is_empty()) {
        return Err(CtlError::usage(
            "set image needs CONTAINER=IMAGE pairs (e.g. app=nginx:1.27)",
        ));
    }
    let name = deployment_name(&targets, "set image")?;
    let api: Api<Deployment> = Api::namespaced(ctx.client()?, &ctx.namespace);
    let mut failure = None;
    api.replace_with(&name, |mut d| {
        if let Err(e) = set_images(&mut d, &pairs) {
            failure = Some(e);
        }
        d
    })
    .await
    .map_err(|e| ctl_error(e, &ctx.server_url))?;
    if let Some(e) = failure {
        return Err(e);
    }
    writeln!(out, "deployment.apps/{name} image updated")?;
    Ok(())
}
