//! `rkubectl logs POD [-c C] [-f] [--previous] [--tail N]`: a container's
//! log, through the apiserver from the pod's kubelet.

use crate::cmd::Context;
use crate::error::CtlError;
use futures::StreamExt;
use rkube_api::kubelet::v1::LogsRequest;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The pod (`web-1` or `pod/web-1`).
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
    /// Only lines newer than this many seconds.
    #[arg(long = "since-seconds")]
    pub since_seconds: Option<i64>,
    /// Prefix each line with its time.
    #[arg(long)]
    pub timestamps: bool,
}

/// `pod/x` or `pods/x` or `po/x` is the same as `x`.
pub fn pod_name(arg: &str) -> Result<String, CtlError> {
    match arg.split_once('/') {
        None => Ok(arg.to_string()),
        Some((kind, name)) if matches!(kind, "pod" | "pods" | "po") && !name.is_empty() => {
            Ok(name.to_string())
        }
        Some((kind, _)) => Err(CtlError::usage(format!(
            "{arg:?}: only pods have logs and can be exec'd into, not {kind}"
        ))),
    }
}

pub async fn run(ctx: &Context, args: &LogsArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let server = ctx.connect().await?;
    let req = LogsRequest {
        namespace: ctx.namespace.clone(),
        pod: pod_name(&args.pod)?,
        container: args.container.clone().unwrap_or_default(),
        follow: args.follow,
        previous: args.previous,
        tail_lines: args.tail.max(0),
        since_seconds: args.since_seconds.unwrap_or(0),
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
    fn pod_names_accept_kind_prefixes() {
        assert_eq!(pod_name("web-1").unwrap(), "web-1");
        assert_eq!(pod_name("pod/web-1").unwrap(), "web-1");
        assert_eq!(pod_name("po/web-1").unwrap(), "web-1");
        assert!(pod_name("deploy/web")
            .unwrap_err()
            .to_string()
            .contains("only pods"));
    }
}
