//! `rkubectl cordon NODE` and `rkubectl uncordon NODE`: mark a node
//! unschedulable (`spec.unschedulable`) so the scheduler places no new
//! pods there, or undo it. Pods already on the node keep running.

use crate::cmd::Context;
use crate::error::CtlError;
use rkube_api::core::v1::Node;
use rkube_api::Resource;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct CordonArgs {
    /// The node(s) to mark.
    #[arg(required = true, value_name = "NODE")]
    pub nodes: Vec<String>,
}

pub async fn cordon(ctx: &Context, args: &CordonArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    set(ctx, args, true, out).await
}

pub async fn uncordon(ctx: &Context, args: &CordonArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    set(ctx, args, false, out).await
}

async fn set(
    ctx: &Context,
    args: &CordonArgs,
    unschedulable: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let server = ctx.connect().await?;
    let verb = if unschedulable { "cordoned" } else { "uncordoned" };
    for name in &args.nodes {
        let node: Node = server
            .get(Node::info(), "", name)
            .await?
            .decode()
            .map_err(|e| CtlError::usage(format!("cannot decode node {name:?}: {e}")))?;
        if node.spec.as_ref().is_some_and(|s| s.unschedulable) == unschedulable {
            writeln!(out, "node/{name} already {verb}")?;
            continue;
        }
        // A merge patch of one field: no read-modify-write race with the
        // kubelet's or controllers' writes.
        let patch = serde_json::json!({ "spec": { "unschedulable": unschedulable } });
        server.merge_patch(Node::info(), "", name, &patch).await?;
        writeln!(out, "node/{name} {verb}")?;
    }
    Ok(())
}
