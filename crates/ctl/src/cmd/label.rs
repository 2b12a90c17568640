//! `rkubectl label KIND NAME k=v ... [k-] [--overwrite]`: set or remove
//! labels, as kubectl does (`rkubectl label nodes node-1 disk=ssd`).
//! Changing an existing label's value needs `--overwrite`.

use crate::cmd::Context;
use crate::error::CtlError;
use rkube_api::ResourceInfo;
use std::collections::BTreeMap;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct LabelArgs {
    /// The kind (`nodes`, `pods`, `deploy`, ...).
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// `key=value` to set, `key-` to remove.
    #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
    pub labels: Vec<String>,
    /// Replace the value of labels that exist already.
    #[arg(long)]
    pub overwrite: bool,
}

/// Parsed arguments: labels to set and keys to remove.
pub fn parse_labels(args: &[String]) -> Result<(BTreeMap<String, String>, Vec<String>), CtlError> {
    let mut set = BTreeMap::new();
    let mut remove = Vec::new();
    for a in args {
        if let Some(key) = a.strip_suffix('-').filter(|k| !k.contains('=')) {
            remove.push(key.to_string());
        } else if let Some((k, v)) = a.split_once('=') {
            if k.is_empty() {
                return Err(CtlError::usage(format!("invalid label {a:?}: the key is empty")));
            }
            set.insert(k.to_string(), v.to_string());
        } else {
            return Err(CtlError::usage(format!(
                "invalid label {a:?}: use key=value to set or key- to remove"
            )));
        }
    }
    Ok((set, remove))
}

pub async fn run(ctx: &Context, args: &LabelArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let info = ResourceInfo::lookup(&args.kind).ok_or_else(|| {
        CtlError::usage(format!(
            "the server doesn't have a resource type {:?} (see rkubectl api-resources)",
            args.kind
        ))
    })?;
    let (set, remove) = parse_labels(&args.labels)?;
    let server = ctx.connect().await?;
    let obj = server.get(info, &ctx.namespace, &args.name).await?;
    let json = obj
        .to_json()
        .map_err(|e| CtlError::usage(format!("cannot read {}: {e}", obj.display_name())))?;
    let current = json.pointer("/metadata/labels").and_then(|l| l.as_object());
    let have = |k: &str| {
        current
            .and_then(|m| m.get(k))
            .and_then(|v| v.as_str().map(str::to_string))
    };
    if !args.overwrite {
        for (k, v) in &set {
            if let Some(old) = have(k) {
                if old != *v {
                    return Err(CtlError::usage(format!(
                        "'{k}' already has a value ({old}), and --overwrite is false"
                    )));
                }
            }
        }
    }
    let mut labels = serde_json::Map::new();
    for (k, v) in &set {
        labels.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    for k in &remove {
        labels.insert(k.clone(), serde_json::Value::Null);
    }
    // The resourceVersion guards against a concurrent change the
    // --overwrite check did not see.
    let rv = json
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or_default();
    let patch = serde_json::json!({ "metadata": { "labels": labels, "resourceVersion": rv } });
    server
        .merge_patch(info, &ctx.namespace, &args.name, &patch)
        .await?;
    let verb = if set.is_empty() { "unlabeled" } else { "labeled" };
    writeln!(out, "{}/{} {verb}", info.singular, args.name)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_set_and_remove() {
        let (set, remove) = parse_labels(&["disk=ssd".into(), "zone-".into(), "empty=".into()]).unwrap();
        assert_eq!(
            set,
            BTreeMap::from([("disk".into(), "ssd".into()), ("empty".into(), "".into())])
        );
        assert_eq!(remove, ["zone"]);
        assert!(parse_labels(&["nonsense".into()]).is_err());
        assert!(parse_labels(&["=v".into()]).is_err());
    }
}
