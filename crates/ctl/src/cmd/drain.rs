//! `rkubectl drain NODE`: cordon the node (`spec.unschedulable`), then
//! delete every pod on it and wait until they are gone, printing what
//! kubectl prints. kubectl skips DaemonSet and mirror pods and uses the
//! eviction API (PodDisruptionBudgets); rkube has none of those, so every
//! pod on the node is deleted.

use crate::cmd::Context;
use crate::error::CtlError;
use crate::server::{ApiServer, DeleteOptions};
use rkube_api::core::v1::{Node, Pod};
use rkube_api::{DynObject, Resource};
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// The node to drain.
    pub node: String,
    /// Seconds each pod gets to stop gracefully; -1 uses the pod's own
    /// terminationGracePeriodSeconds.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i32,
    /// How long to wait for the pods to be gone (`90s`, `5m`); 0 waits
    /// forever.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Accepted for kubectl compatibility: rkube has no DaemonSets yet.
    #[arg(long)]
    pub ignore_daemonsets: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 90s, 5m)"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    }
}

fn decode<K: Resource>(obj: &DynObject) -> Result<K, CtlError> {
    obj.decode::<K>()
        .map_err(|e| CtlError::usage(format!("cannot decode {}: {e}", obj.display_name())))
}

pub async fn run(ctx: &Context, args: &DrainArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let server = ctx.connect().await?;
    let node: Node = decode(&server.get(Node::info(), "", &args.node).await?)?;
    if node.spec.as_ref().is_some_and(|s| s.unschedulable) {
        writeln!(out, "node/{} already cordoned", args.node)?;
    } else {
        let patch = serde_json::json!({ "spec": { "unschedulable": true } });
        server.merge_patch(Node::info(), "", &args.node, &patch).await?;
        writeln!(out, "node/{} cordoned", args.node)?;
    }
    out.flush()?;

    let pods = pods_on(&server, &args.node).await?;
    let opts = DeleteOptions {
        propagation_policy: String::new(),
        grace_period_seconds: (args.grace_period >= 0).then_some(args.grace_period),
    };
    for pod in &pods {
        writeln!(out, "evicting pod {}/{}", pod.namespace(), pod.name())?;
        out.flush()?;
        match server
            .delete(Pod::info(), pod.namespace(), pod.name(), &opts)
            .await
        {
            Err(e) if !e.is_not_found() => {
                return Err(e.with_context(format!("evicting pod {}/{}", pod.namespace(), pod.name())));
            }
            _ => {}
        }
    }

    let deadline = (!args.timeout.is_zero()).then(|| Instant::now() + args.timeout);
    let mut waiting: Vec<Pod> = pods;
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for pod in waiting {
            match server.get(Pod::info(), pod.namespace(), pod.name()).await {
                // A new pod under the same name is not the one we evicted.
                Ok(obj) if decode::<Pod>(&obj)?.metadata().uid == pod.metadata().uid => still.push(pod),
                Ok(_) => writeln!(out, "pod/{} evicted", pod.name())?,
                Err(e) if e.is_not_found() => writeln!(out, "pod/{} evicted", pod.name())?,
                Err(e) => return Err(e),
            }
        }
        out.flush()?;
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let names: Vec<String> = waiting
                .iter()
                .map(|p| format!("{}/{}", p.namespace(), p.name()))
                .collect();
            return Err(CtlError::usage(format!(
                "unable to drain node {:?}: timed out after {:?} waiting for pods to be deleted: {}; is the node's kubelet running? (rkubectl delete pod --grace-period=0 removes a pod at once)",
                args.node,
                args.timeout,
                names.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    writeln!(out, "node/{} drained", args.node)?;
    Ok(())
}

/// Every pod bound to `node`, in every namespace.
async fn pods_on(server: &ApiServer, node: &str) -> Result<Vec<Pod>, CtlError> {
    let list = server
        .list(Pod::info(), "", "", &format!("spec.nodeName={node}"))
        .await?;
    let mut pods = list
        .items
        .iter()
        .map(decode::<Pod>)
        .collect::<Result<Vec<_>, _>>()?;
    pods.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
    Ok(pods)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").unwrap_err().contains("unknown unit"));
    }
}
