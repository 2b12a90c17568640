//! `rkubectl label|annotate KIND NAME k=v ... [k-] [--overwrite]` (or `KIND/NAME`): set
//! or remove labels or annotations, as kubectl does (`rkubectl label nodes node-1
//! disk=ssd`, `rkubectl annotate deploy/web kubernetes.io/change-cause="v2"`). Changing an
//! existing value needs `--overwrite`.

use crate::args::lookup_kind;
use crate::cmd::Context;
use crate::error::CtlError;
use rkube_api::ResourceInfo;
use std::collections::BTreeMap;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct LabelArgs {
    /// `KIND NAME` or `KIND/NAME` (`nodes node-1`, `deploy/web`), then `key=value` to
    /// set and `key-` to remove. Options may come in between, as with kubectl
    /// (`label pod -n shop web a=b`): one value at least per run of them, the whole
    /// checked by `split_target`.
    #[arg(required = true, num_args = 1.., action = clap::ArgAction::Append, value_name = "KIND NAME|KIND/NAME KEY=VALUE|KEY-")]
    pub args: Vec<String>,
    /// Replace values that exist already.
    #[arg(long)]
    pub overwrite: bool,
}

/// Which metadata map a command edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Labels,
    Annotations,
}

impl Field {
    fn key(self) -> &'static str {
        match self {
            Field::Labels => "labels",
            Field::Annotations => "annotations",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Field::Labels => "label",
            Field::Annotations => "annotation",
        }
    }
}

/// The object (kind, name) and the `key=value`/`key-` arguments after it.
pub fn split_target(args: &[String]) -> Result<(&'static ResourceInfo, String, &[String]), CtlError> {
    let usage = || CtlError::usage("name an object as KIND NAME or KIND/NAME (e.g. deploy/web)");
    let first = args.first().ok_or_else(usage)?;
    if let Some((kind, name)) = first.split_once('/') {
        if kind.is_empty() || name.is_empty() {
            return Err(usage());
        }
        return Ok((lookup_kind(kind)?, name.to_string(), &args[1..]));
    }
    let name = args.get(1).ok_or_else(usage)?;
    Ok((lookup_kind(first)?, name.clone(), &args[2..]))
}

/// Parsed arguments: keys to set and keys to remove.
pub fn parse_pairs(
    args: &[String],
    field: Field,
) -> Result<(BTreeMap<String, String>, Vec<String>), CtlError> {
    let mut set = BTreeMap::new();
    let mut remove = Vec::new();
    let noun = field.noun();
    for a in args {
        if let Some(key) = a.strip_suffix('-').filter(|k| !k.contains('=')) {
            remove.push(key.to_string());
        } else if let Some((k, v)) = a.split_once('=') {
            if k.is_empty() {
                return Err(CtlError::usage(format!("invalid {noun} {a:?}: the key is empty")));
            }
            set.insert(k.to_string(), v.to_string());
        } else {
            return Err(CtlError::usage(format!(
                "invalid {noun} {a:?}: use key=value to set or key- to remove"
            )));
        }
    }
    if set.is_empty() && remove.is_empty() {
        return Err(CtlError::usage(format!("at least one {noun} update is required")));
    }
    Ok((set, remove))
}

pub async fn run(ctx: &Context, args: &LabelArgs, field: Field, out: &mut dyn Write) -> Result<(), CtlError> {
    let (info, name, pairs) = split_target(&args.args)?;
    let (set, remove) = parse_pairs(pairs, field)?;
    let server = ctx.connect().await?;
    let obj = server.get(info, &ctx.namespace, &name).await?;
    let json = obj
        .to_json()
        .map_err(|e| CtlError::usage(format!("cannot read {}: {e}", obj.display_name())))?;
    let current = json
        .pointer(&format!("/metadata/{}", field.key()))
        .and_then(|l| l.as_object());
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
    let mut map = serde_json::Map::new();
    for (k, v) in &set {
        map.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    for k in &remove {
        map.insert(k.clone(), serde_json::Value::Null);
    }
    // The resourceVersion guards against a concurrent change the
    // --overwrite check did not see.
    let rv = json
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or_default();
    let patch = serde_json::json!({ "metadata": { field.key(): map, "resourceVersion": rv } });
    server.merge_patch(info, &ctx.namespace, &name, &patch).await?;
    let verb = match (field, set.is_empty()) {
        (Field::Labels, false) => "labeled",
        (Field::Labels, true) => "unlabeled",
        (Field::Annotations, _) => "annotated",
    };
    writeln!(out, "{}/{name} {verb}", info.singular)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_set_and_remove() {
        let (set, remove) = parse_pairs(&strings(&["disk=ssd", "zone-", "empty="]), Field::Labels).unwrap();
        assert_eq!(
            set,
            BTreeMap::from([("disk".into(), "ssd".into()), ("empty".into(), "".into())])
        );
        assert_eq!(remove, ["zone"]);
        assert!(parse_pairs(&strings(&["nonsense"]), Field::Labels).is_err());
        assert!(parse_pairs(&strings(&["=v"]), Field::Annotations).is_err());
        assert!(parse_pairs(&[], Field::Annotations).is_err());
    }

    #[test]
    fn objects_are_named_either_way() {
        let args = strings(&["deploy/web", "a=b"]);
        let (info, name, rest) = split_target(&args).unwrap();
        assert_eq!(
            (info.kind, name.as_str(), rest),
            ("Deployment", "web", &args[1..])
        );
        let args = strings(&["nodes", "n1", "a=b"]);
        let (info, name, rest) = split_target(&args).unwrap();
        assert_eq!((info.kind, name.as_str(), rest), ("Node", "n1", &args[2..]));
        assert!(split_target(&strings(&["widgets/x", "a=b"])).is_err());
    }
}
