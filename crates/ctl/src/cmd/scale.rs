//! `rkubectl scale deployment/NAME --replicas=N` (also replicaset and
//! statefulset):
//! changes spec.replicas; the controllers do the rest.

use crate::args::parse_targets;
use crate::cmd::Context;
use crate::error::CtlError;
use crate::server::ctl_error;
use rkube_api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use rkube_client::Api;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// `deployment/NAME`, `replicaset/NAME`, or `KIND NAME...`.
    pub targets: Vec<String>,
    /// The new number of replicas.
    #[arg(long)]
    pub replicas: i32,
}

pub async fn run(ctx: &Context, args: &ScaleArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    if args.replicas < 0 {
        return Err(CtlError::usage("--replicas=COUNT must be 0 or more"));
    }
    let targets = parse_targets(&args.targets)?;
    let client = ctx.client()?;
    let patch = serde_json::json!({"spec": {"replicas": args.replicas}});
    for t in &targets {
        if t.names.is_empty() {
            return Err(CtlError::usage("scale needs the names of the objects to scale"));
        }
        for name in &t.names {
            let r = match t.info.kind {
                "Deployment" => Api::<Deployment>::namespaced(client.clone(), &ctx.namespace)
                    .patch_merge(name, &patch)
                    .await
                    .map(|_| ()),
                "ReplicaSet" => Api::<ReplicaSet>::namespaced(client.clone(), &ctx.namespace)
                    .patch_merge(name, &patch)
                    .await
                    .map(|_| ()),
                "StatefulSet" => Api::<StatefulSet>::namespaced(client.clone(), &ctx.namespace)
                    .patch_merge(name, &patch)
                    .await
                    .map(|_| ()),
                _ => {
                    return Err(CtlError::usage(format!(
                        "cannot scale {}: only deployments, replicasets and statefulsets can be scaled",
                        t.info.plural
                    )))
                }
            };
            r.map_err(|e| ctl_error(e, &ctx.server_url))?;
            writeln!(out, "{}/{name} scaled", t.info.singular_group())?;
        }
    }
    Ok(())
}
