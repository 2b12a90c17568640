//! `rkubectl logs POD [-c C] [-f] [--previous] [--tail N] [--timestamps]
//! [--since 5m | --since-time T] [--limit-bytes N]`: a container's log,
//! through the apiserver from the pod's kubelet.

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

/// A Go-style duration (`5s`, `2m`, `1h30m`, `1.5h`, `300ms`) in whole seconds, rounded up
/// as kubectl does.
pub fn parse_since(text: &str) -> Result<i64, CtlError> {
    let bad = || {
        CtlError::usage(format!(
            "--since {text:?} is not a duration; use a number with a unit, like 30s, 5m or 2h"
        ))
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        nanos += number * scale;
        rest = &rest[unit_len..];
    }
    if nanos <= 0.0 {
        return Err(bad());
    }
    Ok((nanos / 1e9).ceil() as i64)
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
        assert_eq!(pod_name("web-1").unwrap(), "web-1");
        assert_eq!(pod_name("pod/web-1").unwrap(), "web-1");
        assert_eq!(pod_name("po/web-1").unwrap(), "web-1");
        assert!(pod_name("deploy/web")
            .unwrap_err()
            .to_string()
            .contains("only pods"));
    }
}
