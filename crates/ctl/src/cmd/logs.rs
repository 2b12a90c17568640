//! `rkubectl logs POD|KIND/NAME [-c C] [-f] [--previous] [--tail N] [--timestamps]
//! [--since 5m | --since-time T] [--limit-bytes N]`: a container's log,
//! through the apiserver from the pod's kubelet.

use crate::cmd::Context;
use crate::error::CtlError;
use futures::StreamExt;
use rkube_api::core::v1::Pod;
use rkube_api::kubelet::v1::LogsRequest;
use rkube_api::Resource;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The pod (`web-1` or `pod/web-1`), or a workload or service whose
    /// pod to read (`deploy/web`, `job/pi`, `svc/web`).
    pub pod: String,
    /// The container; may be left out when the pod has only one.
    #[arg(short = 'c', long = "container")]
    pub container: Option<String>,
    /// Keep streaming new lines until interrupted or the container stops.
    #[arg(short = 'f', long = "follow")]
    pub follow: bool,
    /// The log of the previous instance of a restarted container.
    #[arg(short = 'p', long = "previous")]
    pub previous: bool,
    /// Only the last N lines (-1: all).
    #[arg(long = "tail", default_value_t = -1, allow_hyphen_values = true)]
    pub tail: i64,
    /// Only lines newer than a relative duration like 5s, 2m or 3h.
    #[arg(long, value_name = "DURATION", conflicts_with_all = ["since_time", "since_seconds"])]
    pub since: Option<String>,
    /// Only lines at or after an RFC 3339 time (2026-11-28T01:02:03Z).
    #[arg(long = "since-time", value_name = "TIME", conflicts_with = "since_seconds")]
    pub since_time: Option<String>,
    /// Only lines newer than this many seconds (the same as --since=Ns).
    #[arg(long = "since-seconds", hide = true)]
    pub since_seconds: Option<i64>,
    /// Stop after this many bytes of output.
    #[arg(long = "limit-bytes", value_name = "N")]
    pub limit_bytes: Option<i64>,
    /// Prefix each line with its time (RFC 3339, as the container wrote it).
    #[arg(long)]
    pub timestamps: bool,
}

/// `--since`: a Go-style duration (`5s`, `2m`, `1h30m`) in whole seconds,
/// rounded up as kubectl does.
pub fn parse_since(text: &str) -> Result<i64, CtlError> {
    let d = crate::args::go_duration("--since", text)?;
    if d.is_zero() {
        return Err(CtlError::usage(format!(
            "--since {text:?} must be more than zero, like 30s, 5m or 2h"
        )));
    }
    Ok(d.as_nanos().div_ceil(1_000_000_000) as i64)
}

/// `pod/x` or `pods/x` or `po/x` is the same as `x`; `None` for another
/// kind (`deploy/web`), whose pods [`resolve_pod`] looks up.
pub fn pod_name(arg: &str) -> Result<Option<String>, CtlError> {
    match arg.split_once('/') {
        None => Ok(Some(arg.to_string())),
        Some((kind, name)) if matches!(kind, "pod" | "pods" | "po") && !name.is_empty() => {
            Ok(Some(name.to_string()))
        }
        Some((_, name)) if !name.is_empty() => Ok(None),
        Some(_) => Err(CtlError::usage(format!(
            "{arg:?}: expected KIND/NAME or a pod name"
        ))),
    }
}

/// The pod `arg` means: a pod by name, or one pod of a workload or
/// service (`deploy/web`, `job/pi`, `svc/web`), chosen as kubectl does:
/// scheduled, then running, then ready, then the oldest. With several,
/// says which on stderr.
pub async fn resolve_pod(ctx: &Context, arg: &str) -> Result<String, CtlError> {
    if let Some(name) = pod_name(arg)? {
        return Ok(name);
    }
    let (kind, name) = arg.split_once('/').unwrap_or((arg, ""));
    let info = crate::args::lookup_kind(kind)?;
    let server = ctx.connect().await?;
    let obj = server
        .get(info, &ctx.namespace, name)
        .await?
        .to_json()
        .map_err(CtlError::usage)?;
    let selector = selector_of(&obj).ok_or_else(|| {
        CtlError::usage(format!(
            "cannot find the pods of {arg}: a {} has no pod selector",
            info.singular
        ))
    })?;
    let pods = server.list(Pod::info(), &ctx.namespace, &selector, "").await?;
    let mut pods: Vec<Pod> = pods.items.iter().filter_map(|o| o.decode().ok()).collect();
    pods.sort_by_key(|p| {
        let status = p.status.clone().unwrap_or_default();
        let scheduled = p.spec.as_ref().is_some_and(|s| !s.node_name.is_empty());
        let ready = status
            .conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True");
        (
            !scheduled,
            status.phase != "Running",
            !ready,
            p.metadata().creation_timestamp.clone(),
        )
    });
    let Some(first) = pods.first() else {
        return Err(CtlError::usage(format!(
            "no pods found for {arg} (selector {selector:?})"
        )));
    };
    if pods.len() > 1 {
        eprintln!("Found {} pods, using pod/{}", pods.len(), first.metadata().name);
    }
    Ok(first.metadata().name.clone())
}

/// The pod selector of a workload (`spec.selector` as a LabelSelector) or
/// a Service (`spec.selector` as a map), as a selector string.
fn selector_of(obj: &serde_json::Value) -> Option<String> {
    let sel = obj.get("spec")?.get("selector")?;
    let labels = if sel.get("matchLabels").is_some() || sel.get("matchExpressions").is_some() {
        let ls: rkube_api::meta::v1::LabelSelector = serde_json::from_value(sel.clone()).ok()?;
        rkube_api::selector::Selector::from_label_selector(&ls).ok()?
    } else {
        let map: std::collections::BTreeMap<String, String> = serde_json::from_value(sel.clone()).ok()?;
        rkube_api::selector::Selector::from_map(&map)
    };
    (!labels.is_empty()).then(|| labels.to_string())
}

pub async fn run(ctx: &Context, args: &LogsArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let server = ctx.connect().await?;
    let req = LogsRequest {
        namespace: ctx.namespace.clone(),
        pod: resolve_pod(ctx, &args.pod).await?,
        container: args.container.clone().unwrap_or_default(),
        follow: args.follow,
        previous: args.previous,
        tail_lines: args.tail.max(0),
        since_seconds: match &args.since {
            Some(d) => parse_since(d)?,
            None => args.since_seconds.unwrap_or(0),
        },
        since_time: args.since_time.clone().unwrap_or_default(),
        limit_bytes: args.limit_bytes.unwrap_or(0).max(0),
        timestamps: args.timestamps,
    };
    let mut stream = server.client().logs(req).await.map_err(|e| server.err(e))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| server.err(e))?;
        out.write_all(&chunk)?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_go_durations_rounded_up_to_seconds() {
        assert_eq!(parse_since("5m").unwrap(), 300);
        assert_eq!(parse_since("1h30m").unwrap(), 5400);
        assert_eq!(parse_since("1.5s").unwrap(), 2);
        assert_eq!(parse_since("300ms").unwrap(), 1);
        for bad in ["", "5", "m", "5x", "-5s", "0s"] {
            let err = parse_since(bad).unwrap_err().to_string();
            assert!(err.contains("--since"), "{bad}: {err}");
        }
    }

    #[test]
    fn pod_names_accept_kind_prefixes() {
        assert_eq!(pod_name("web-1").unwrap().as_deref(), Some("web-1"));
        assert_eq!(pod_name("pod/web-1").unwrap().as_deref(), Some("web-1"));
        assert_eq!(pod_name("po/web-1").unwrap().as_deref(), Some("web-1"));
        assert_eq!(pod_name("deploy/web").unwrap(), None);
        assert!(pod_name("deploy/").is_err());
    }

    #[test]
    fn workloads_and_services_select_their_pods() {
        let deploy = serde_json::json!({"spec": {"selector": {"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}}});
        assert_eq!(selector_of(&deploy).as_deref(), Some("app=web,tier in (a,b)"));
        let svc = serde_json::json!({"spec": {"selector": {"app": "web"}}});
        assert_eq!(selector_of(&svc).as_deref(), Some("app=web"));
        assert_eq!(selector_of(&serde_json::json!({"spec": {}})), None);
    }
}
