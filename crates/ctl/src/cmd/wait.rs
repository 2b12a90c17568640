//! `rkubectl wait KIND/NAME... | KIND -l SEL | KIND --all
//! --for=condition=C[=V] | --for=delete | --for=jsonpath='{...}'=V
//! [--timeout=30s]`: blocks until each object meets the condition,
//! watching it rather than polling, and prints `job.batch/pi condition
//! met` as kubectl does; on timeout it fails naming the object.

use crate::args::{go_duration, parse_targets};
use crate::cmd::Context;
use crate::error::CtlError;
use crate::printers::jsonpath::Template;
use crate::server::ApiServer;
use rkube_api::{DynObject, ResourceInfo};
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// `KIND/NAME...`, `KIND NAME...`, or `KIND` with -l or --all.
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// `condition=Ready`, `condition=Available=false`, `delete`, or
    /// `jsonpath='{.status.phase}'=Running`.
    #[arg(long = "for")]
    pub for_: String,
    /// How long to wait for each object (`30s`, `5m`; `0` checks once).
    #[arg(long, default_value = "30s")]
    pub timeout: String,
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Every object of the kind in the namespace.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum WaitFor {
    /// A status condition of this type with this status (both compared
    /// ignoring case, as kubectl does).
    Condition(String, String),
    Delete,
    /// The template's output equals the value (or, without a value, is
    /// not empty).
    JsonPath(Template, Option<String>),
}

fn parse_for(text: &str) -> Result<WaitFor, CtlError> {
    if text.eq_ignore_ascii_case("delete") {
        return Ok(WaitFor::Delete);
    }
    if let Some(c) = text.strip_prefix("condition=") {
        let (ty, value) = c.split_once('=').unwrap_or((c, "true"));
        if ty.is_empty() {
            return Err(CtlError::usage(
                "--for=condition= needs a condition type, like condition=Ready",
            ));
        }
        return Ok(WaitFor::Condition(ty.to_string(), value.to_string()));
    }
    if let Some(j) = text.strip_prefix("jsonpath=") {
        // the template ends at its last `}`; `=VALUE` may follow
        let end = j.rfind('}').ok_or_else(|| {
            CtlError::usage(format!(
                "--for=jsonpath={j}: the path must be in braces, like jsonpath='{{.status.phase}}'=Running"
            ))
        })?;
        let (template, rest) = j.split_at(end + 1);
        let template =
            Template::parse(template).map_err(|e| CtlError::usage(format!("--for=jsonpath: {e}")))?;
        let value = match rest.strip_prefix('=') {
            Some(v) => Some(v.to_string()),
            None if rest.is_empty() => None,
            None => {
                return Err(CtlError::usage(format!(
                    "--for=jsonpath: unexpected {rest:?} after the path"
                )))
            }
        };
        return Ok(WaitFor::JsonPath(template, value));
    }
    Err(CtlError::usage(format!(
        "unrecognized condition {text:?}: use --for=condition=TYPE[=VALUE], --for=delete or --for=jsonpath='{{...}}'=VALUE"
    )))
}

/// Whether the object (as JSON) meets `cond`.
fn met(cond: &WaitFor, obj: &Value) -> bool {
    match cond {
        WaitFor::Delete => false,
        WaitFor::Condition(ty, value) => {
            obj["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    c["type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case(ty))
                        && c["status"]
                            .as_str()
                            .is_some_and(|s| s.eq_ignore_ascii_case(value))
                })
        }
        WaitFor::JsonPath(t, value) => match (t.render(obj), value) {
            (Ok(got), Some(want)) => got == *want,
            (Ok(got), None) => !got.is_empty(),
            (Err(_), _) => false,
        },
    }
}

pub async fn run(ctx: &Context, args: &WaitArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let cond = parse_for(&args.for_)?;
    let timeout = go_duration("--timeout", &args.timeout)?;
    let targets = parse_targets(&args.targets)?;
    let server = ctx.connect().await?;
    let mut objects: Vec<(&'static ResourceInfo, String)> = Vec::new();
    for t in &targets {
        if t.names.is_empty() {
            if args.selector.is_none() && !args.all {
                return Err(CtlError::usage(format!(
                    "wait needs names, -l SELECTOR or --all for {}",
                    t.info.plural
                )));
            }
            let list = server
                .list(t.info, &ctx.namespace, args.selector.as_deref().unwrap_or(""), "")
                .await?;
            objects.extend(list.items.iter().map(|o| (t.info, o.name.clone())));
        } else {
            objects.extend(t.names.iter().map(|n| (t.info, n.clone())));
        }
    }
    if objects.is_empty() {
        return Err(CtlError::usage("no matching resources found"));
    }
    for (info, name) in objects {
        let display = format!("{}/{name}", info.singular_group());
        match wait_one(&server, ctx, info, &name, &cond, timeout).await? {
            true => {
                let what = if cond == WaitFor::Delete {
                    "deleted"
                } else {
                    "condition met"
                };
                writeln!(out, "{display} {what}")?;
                out.flush()?;
            }
            false => {
                return Err(CtlError::usage(format!(
                    "timed out waiting for the condition on {}/{name}",
                    info.plural
                )))
            }
        }
    }
    Ok(())
}

/// Waits until the object meets `cond`; false on timeout.
async fn wait_one(
    server: &ApiServer,
    ctx: &Context,
    info: &'static ResourceInfo,
    name: &str,
    cond: &WaitFor,
    timeout: Duration,
) -> Result<bool, CtlError> {
    let check = |obj: &DynObject| -> Result<bool, CtlError> {
        Ok(met(cond, &obj.to_json().map_err(CtlError::usage)?))
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let fields = format!("metadata.name={name}");
    loop {
        // the current state, then changes from there
        let list = server.list(info, &ctx.namespace, "", &fields).await?;
        match list.items.first() {
            None if *cond == WaitFor::Delete => return Ok(true),
            None => {
                return Err(CtlError::usage(format!(
                    "{} {name:?} not found in namespace {:?}",
                    info.plural, ctx.namespace
                )))
            }
            Some(obj) if check(obj)? => return Ok(true),
            Some(_) => {}
        }
        let mut watch = server
            .watch(info, &ctx.namespace, "", &fields, &list.resource_version)
            .await?;
        loop {
            let next = tokio::time::timeout_at(deadline, watch.next()).await;
            let event = match next {
                Err(_elapsed) => return Ok(false),
                Ok(Err(e)) if e.is_gone() => break, // too far behind: look again
                Ok(Err(e)) => return Err(e),
                Ok(Ok(None)) => break, // the server ended the watch: look again
                Ok(Ok(Some(ev))) => ev,
            };
            if event.kind == "DELETED" {
                if *cond == WaitFor::Delete {
                    return Ok(true);
                }
                continue;
            }
            if check(&event.object)? {
                return Ok(true);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_parse_like_kubectl() {
        assert_eq!(
            parse_for("condition=Complete").unwrap(),
            WaitFor::Condition("Complete".into(), "true".into())
        );
        assert_eq!(
            parse_for("condition=Available=false").unwrap(),
            WaitFor::Condition("Available".into(), "false".into())
        );
        assert_eq!(parse_for("delete").unwrap(), WaitFor::Delete);
        assert!(matches!(
            parse_for("jsonpath={.status.phase}=Running").unwrap(),
            WaitFor::JsonPath(_, Some(v)) if v == "Running"
        ));
        assert!(matches!(
            parse_for("jsonpath={.status.podIP}").unwrap(),
            WaitFor::JsonPath(_, None)
        ));
        for bad in ["ready", "condition=", "jsonpath=.status", "jsonpath={.a}x"] {
            assert!(parse_for(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conditions_are_met_by_status() {
        let job =
            json!({"status": {"conditions": [{"type": "Complete", "status": "True"}], "phase": "Running"}});
        assert!(met(&parse_for("condition=complete").unwrap(), &job));
        assert!(!met(&parse_for("condition=Complete=false").unwrap(), &job));
        assert!(!met(&parse_for("condition=Failed").unwrap(), &job));
        assert!(met(&parse_for("jsonpath={.status.phase}=Running").unwrap(), &job));
        assert!(!met(&parse_for("jsonpath={.status.podIP}").unwrap(), &job));
        assert!(!met(&WaitFor::Delete, &job));
    }
}
