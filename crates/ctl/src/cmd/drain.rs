//! `rkubectl drain NODE`: cordon the node (`spec.unschedulable`), then evict every pod on
//! it through the `pods/eviction` subresource and wait until they are gone, printing what
//! kubectl prints. As kubectl:
//!
//! * an eviction a PodDisruptionBudget forbids (429) is retried every 5 seconds, with
//!   `error when evicting pods/"NAME" -n "NS" (will retry after 5s): ...` on stderr, until
//!   it succeeds or `--timeout` passes;
//! * `--disable-eviction` deletes the pods instead, ignoring budgets;
//! * DaemonSet-managed pods would come straight back (they tolerate cordoned nodes): drain
//!   refuses to go on while there are some, unless `--ignore-daemonsets` leaves them be.

use crate::cmd::Context;
use crate::error::CtlError;
use crate::server::{ApiServer, DeleteOptions};
use rkube_api::core::v1::{Node, Pod};
use rkube_api::policy::v1::{DeleteOptions as EvictionDeleteOptions, Eviction};
use rkube_api::{DynObject, Resource};
use std::io::Write;
use std::time::{Duration, Instant};

/// kubectl's pause between evictions a budget refused.
const EVICTION_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// The node to drain.
    pub node: String,
    /// Seconds each pod gets to stop gracefully; -1 uses the pod's own
    /// terminationGracePeriodSeconds.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i32,
    /// How long to wait for the pods to be evicted and gone (`90s`, `5m`); 0 waits
    /// forever.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Leave DaemonSet-managed pods on the node (without it, drain refuses to go on
    /// while there are some).
    #[arg(long)]
    pub ignore_daemonsets: bool,
    /// Delete the pods instead of evicting them: PodDisruptionBudgets are not asked.
    /// Use with care.
    #[arg(long)]
    pub disable_eviction: bool,
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

    let (daemons, pods): (Vec<Pod>, Vec<Pod>) =
        pods_on(&server, &args.node).await?.into_iter().partition(|p| {
            p.metadata()
                .owner_references
                .iter()
                .any(|r| r.controller == Some(true) && r.kind == "DaemonSet")
        });
    if !daemons.is_empty() {
        let names = daemons
            .iter()
            .map(|p| format!("{}/{}", p.namespace(), p.name()))
            .collect::<Vec<_>>()
            .join(", ");
        if !args.ignore_daemonsets {
            return Err(CtlError::usage(format!(
                "unable to drain node {:?} due to error: cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): {names}",
                args.node
            )));
        }
        eprintln!("Warning: ignoring DaemonSet-managed Pods: {names}");
    }

    let deadline = (!args.timeout.is_zero()).then(|| Instant::now() + args.timeout);
    let grace = (args.grace_period >= 0).then_some(args.grace_period);
    let verb = if args.disable_eviction {
        "deleting"
    } else {
        "evicting"
    };
    for pod in &pods {
        writeln!(out, "{verb} pod {}/{}", pod.namespace(), pod.name())?;
    }
    out.flush()?;
    // every pod at once, as kubectl does: one budget that waits holds up no other pod
    let attempts = pods.iter().map(|pod| async {
        if args.disable_eviction {
            let opts = DeleteOptions {
                propagation_policy: String::new(),
                grace_period_seconds: grace,
            };
            return match server
                .delete(Pod::info(), pod.namespace(), pod.name(), &opts)
                .await
            {
                Err(e) if !e.is_not_found() => Err(format!(
                    "error when deleting pods/{:?} -n {:?}: {e}",
                    pod.name(),
                    pod.namespace()
                )),
                _ => Ok(()),
            };
        }
        evict(&server, pod, grace, deadline, args.timeout).await
    });
    let failed: Vec<String> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if !failed.is_empty() {
        return Err(CtlError::usage(format!(
            "unable to drain node {:?}: {}",
            args.node,
            failed.join("; ")
        )));
    }

    let done = if args.disable_eviction {
        "deleted"
    } else {
        "evicted"
    };
    let mut waiting: Vec<Pod> = pods;
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for pod in waiting {
            match server.get(Pod::info(), pod.namespace(), pod.name()).await {
                // A new pod under the same name is not the one we evicted.
                Ok(obj) if decode::<Pod>(&obj)?.metadata().uid == pod.metadata().uid => still.push(pod),
                Ok(_) => writeln!(out, "pod/{} {done}", pod.name())?,
                Err(e) if e.is_not_found() => writeln!(out, "pod/{} {done}", pod.name())?,
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

/// Evicts `pod`, retrying every 5 seconds while a budget forbids it, until `deadline`.
async fn evict(
    server: &ApiServer,
    pod: &Pod,
    grace: Option<i32>,
    deadline: Option<Instant>,
    timeout: Duration,
) -> Result<(), String> {
    let (ns, name) = (pod.namespace(), pod.name());
    let eviction = Eviction {
        api_version: "policy/v1".into(),
        kind: "Eviction".into(),
        metadata: Some(rkube_api::meta::v1::ObjectMeta {
            name: name.into(),
            namespace: ns.into(),
            ..Default::default()
        }),
        delete_options: Some(EvictionDeleteOptions {
            grace_period_seconds: grace,
            ..Default::default()
        }),
    };
    loop {
        match server.client().evict(ns, name, eviction.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) if e.is_too_many_requests() => {
                eprintln!("error when evicting pods/{name:?} -n {ns:?} (will retry after 5s): {e}");
                let pause = match deadline {
                    Some(d) => d.saturating_duration_since(Instant::now()).min(EVICTION_RETRY),
                    None => EVICTION_RETRY,
                };
                tokio::time::sleep(pause).await;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(format!(
                        "error when evicting pods/{name:?} -n {ns:?}: global timeout reached: {timeout:?}"
                    ));
                }
            }
            Err(e) => {
                return Err(format!(
                    "error when evicting pods/{name:?} -n {ns:?}: {}",
                    server.err(e)
                ))
            }
        }
    }
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
