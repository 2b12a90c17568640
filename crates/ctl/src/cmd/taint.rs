//! `rkubectl taint nodes NODE key=value:Effect ... [--overwrite]`, and
//! `key:Effect-` / `key-` to remove, as kubectl has them. Effects:
//! NoSchedule, PreferNoSchedule, NoExecute.

use crate::cmd::Context;
use crate::error::CtlError;
use rkube_api::core::v1::{Node, Taint};
use rkube_client::Api;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct TaintArgs {
    /// `nodes` (or `node`, `no`).
    pub kind: String,
    /// The node to taint.
    pub node: String,
    /// `key=value:Effect` or `key:Effect` to add; `key=value:Effect-`,
    /// `key:Effect-` or `key-` to remove.
    #[arg(required = true, value_name = "TAINT")]
    pub taints: Vec<String>,
    /// Replace the value of a taint with the same key and effect.
    #[arg(long)]
    pub overwrite: bool,
}

/// One taint argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaintSpec {
    Add(Taint),
    /// Remove taints with this key (and this effect, when given).
    Remove {
        key: String,
        effect: Option<String>,
    },
}

const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

pub fn parse_taint(s: &str) -> Result<TaintSpec, CtlError> {
    let bad = |why: &str| CtlError::usage(format!("invalid taint spec {s:?}: {why}"));
    if let Some(rest) = s.strip_suffix('-') {
        let (key_value, effect) = match rest.split_once(':') {
            Some((kv, e)) => (kv, Some(e.to_string())),
            None => (rest, None),
        };
        let key = key_value.split_once('=').map(|(k, _)| k).unwrap_or(key_value);
        if key.is_empty() {
            return Err(bad("the key is empty"));
        }
        if let Some(e) = &effect {
            if !EFFECTS.contains(&e.as_str()) {
                return Err(bad(&format!(
                    "unknown effect {e:?}; use one of {}",
                    EFFECTS.join(", ")
                )));
            }
        }
        return Ok(TaintSpec::Remove {
            key: key.to_string(),
            effect,
        });
    }
    let Some((key_value, effect)) = s.split_once(':') else {
        return Err(bad("expected key=value:Effect (e.g. dedicated=gpu:NoSchedule)"));
    };
    if !EFFECTS.contains(&effect) {
        return Err(bad(&format!(
            "unknown effect {effect:?}; use one of {}",
            EFFECTS.join(", ")
        )));
    }
    let (key, value) = key_value.split_once('=').unwrap_or((key_value, ""));
    if key.is_empty() {
        return Err(bad("the key is empty"));
    }
    Ok(TaintSpec::Add(Taint {
        key: key.into(),
        value: value.into(),
        effect: effect.into(),
        time_added: if effect == "NoExecute" {
            rkube_api::time::now()
        } else {
            String::new()
        },
    }))
}

/// Applies `specs` to `taints`; errors name the taint and what to do.
pub fn apply(
    node: &str,
    taints: &mut Vec<Taint>,
    specs: &[TaintSpec],
    overwrite: bool,
) -> Result<(), CtlError> {
    for spec in specs {
        match spec {
            TaintSpec::Add(t) => match taints.iter_mut().find(|x| x.key == t.key && x.effect == t.effect) {
                Some(x) if x.value == t.value => {}
                Some(_) if !overwrite => {
                    return Err(CtlError::usage(format!(
                        "node {node} already has {} taint(s) with same effect(s) and --overwrite is false",
                        t.key
                    )))
                }
                Some(x) => *x = t.clone(),
                None => taints.push(t.clone()),
            },
            TaintSpec::Remove { key, effect } => {
                let before = taints.len();
                taints.retain(|x| !(x.key == *key && effect.as_ref().is_none_or(|e| *e == x.effect)));
                if taints.len() == before {
                    let what = match effect {
                        Some(e) => format!("{key}:{e}"),
                        None => key.clone(),
                    };
                    return Err(CtlError::usage(format!(
                        "taint {what:?} not found on node {node}"
                    )));
                }
            }
        }
    }
    Ok(())
}

pub async fn run(ctx: &Context, args: &TaintArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    if !matches!(args.kind.as_str(), "nodes" | "node" | "no") {
        return Err(CtlError::usage(format!(
            "taint applies to nodes only: rkubectl taint nodes NODE key=value:Effect (got kind {:?})",
            args.kind
        )));
    }
    let specs = args
        .taints
        .iter()
        .map(|s| parse_taint(s))
        .collect::<Result<Vec<_>, _>>()?;
    // Check against the node as it is, so a mistake is reported before
    // anything is written.
    let server = ctx.connect().await?;
    let nodes: Api<Node> = Api::all(server.client().clone());
    let current = nodes.get(&args.node).await.map_err(|e| server.err(e))?;
    let mut check = current.spec.clone().unwrap_or_default().taints;
    apply(&args.node, &mut check, &specs, args.overwrite)?;
    // Taints are a list a merge patch would replace whole: write the node
    // back at the revision read, re-reading on conflict.
    let mut failure = None;
    nodes
        .replace_with(&args.node, |mut n| {
            let spec = n.spec.get_or_insert_with(Default::default);
            let mut taints = spec.taints.clone();
            match apply(&args.node, &mut taints, &specs, args.overwrite) {
                Ok(()) => spec.taints = taints,
                Err(e) => failure = Some(e),
            }
            n
        })
        .await
        .map_err(|e| server.err(e))?;
    if let Some(e) = failure {
        return Err(e);
    }
    let removed_only = specs.iter().all(|s| matches!(s, TaintSpec::Remove { .. }));
    writeln!(
        out,
        "node/{} {}",
        args.node,
        if removed_only { "untainted" } else { "tainted" }
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn parses_kubectl_taint_syntax() {
        assert_eq!(
            parse_taint("dedicated=gpu:NoSchedule").unwrap(),
            TaintSpec::Add(t("dedicated", "gpu", "NoSchedule"))
        );
        assert_eq!(
            parse_taint("spot:PreferNoSchedule").unwrap(),
            TaintSpec::Add(t("spot", "", "PreferNoSchedule"))
        );
        assert_eq!(
            parse_taint("dedicated:NoSchedule-").unwrap(),
            TaintSpec::Remove {
                key: "dedicated".into(),
                effect: Some("NoSchedule".into())
            }
        );
        assert_eq!(
            parse_taint("dedicated-").unwrap(),
            TaintSpec::Remove {
                key: "dedicated".into(),
                effect: None
            }
        );
        let err = parse_taint("dedicated=gpu:Sometimes").unwrap_err().to_string();
        assert!(err.contains("unknown effect \"Sometimes\""), "{err}");
        assert!(parse_taint("dedicated=gpu").is_err());
    }

    #[test]
    fn overwrite_and_removal_rules() {
        let mut taints = vec![t("dedicated", "gpu", "NoSchedule")];
        let again = [parse_taint("dedicated=cpu:NoSchedule").unwrap()];
        let err = apply("n1", &mut taints, &again, false).unwrap_err().to_string();
        assert!(err.contains("already has dedicated taint(s)"), "{err}");
        apply("n1", &mut taints, &again, true).unwrap();
        assert_eq!(taints, [t("dedicated", "cpu", "NoSchedule")]);
        apply("n1", &mut taints, &[parse_taint("dedicated-").unwrap()], false).unwrap();
        assert!(taints.is_empty());
        let err = apply("n1", &mut taints, &[parse_taint("dedicated-").unwrap()], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found on node n1"), "{err}");
    }
}
