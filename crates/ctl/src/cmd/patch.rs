//! `rkubectl patch KIND NAME|KIND/NAME -p PATCH [--type strategic|merge|json]`: change
//! part of an object, as kubectl does. The server applies the patch (a strategic merge
//! patch by default, merging lists such as containers by their keys; `merge` is RFC 7386,
//! `json` RFC 6902), so the result is what any other client's patch would give.

use crate::cmd::label::split_target;
use crate::cmd::Context;
use crate::error::CtlError;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct PatchArgs {
    /// `KIND NAME` or `KIND/NAME`.
    #[arg(required = true, num_args = 1..=2, value_name = "KIND NAME|KIND/NAME")]
    pub target: Vec<String>,
    /// The patch, JSON or YAML.
    #[arg(short = 'p', long)]
    pub patch: Option<String>,
    /// A file holding the patch.
    #[arg(long, conflicts_with = "patch")]
    pub patch_file: Option<std::path::PathBuf>,
    /// strategic (the default), merge or json.
    #[arg(long = "type", default_value = "strategic", value_parser = ["strategic", "merge", "json"])]
    pub patch_type: String,
}

/// The patch document from `-p` or `--patch-file`, JSON or YAML.
pub fn read_patch(args: &PatchArgs) -> Result<serde_json::Value, CtlError> {
    let (text, source) = match (&args.patch, &args.patch_file) {
        (Some(p), _) => (p.clone(), "-p".to_string()),
        (None, Some(f)) => (
            std::fs::read_to_string(f)
                .map_err(|e| CtlError::usage(format!("cannot read {}: {e}", f.display())))?,
            f.display().to_string(),
        ),
        (None, None) => {
            return Err(CtlError::usage(
                "give the patch with -p PATCH or --patch-file FILE",
            ))
        }
    };
    let doc: serde_json::Value = serde_yaml::from_str(&text)
        .map_err(|e| CtlError::usage(format!("the patch in {source} is neither JSON nor YAML: {e}")))?;
    let ok = if args.patch_type == "json" {
        doc.is_array()
    } else {
        doc.is_object()
    };
    if !ok {
        let want = if args.patch_type == "json" {
            "a list of RFC 6902 operations"
        } else {
            "an object"
        };
        return Err(CtlError::usage(format!(
            "a {} patch must be {want}",
            args.patch_type
        )));
    }
    Ok(doc)
}

pub async fn run(ctx: &Context, args: &PatchArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let (info, name, rest) = split_target(&args.target)?;
    if !rest.is_empty() {
        return Err(CtlError::usage("patch takes one object: KIND NAME or KIND/NAME"));
    }
    let patch = read_patch(args)?;
    let server = ctx.connect().await?;
    let before = server.get(info, &ctx.namespace, &name).await?;
    let after = server
        .client()
        .patch_dyn_typed(info, &ctx.namespace, &name, &args.patch_type, &patch)
        .await
        .map_err(|e| server.err(e))?;
    let unchanged = before.any.value == after.any.value;
    let verb = if unchanged {
        "patched (no change)"
    } else {
        "patched"
    };
    writeln!(out, "{}/{name} {verb}", info.singular)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(patch: &str, patch_type: &str) -> PatchArgs {
        PatchArgs {
            target: vec!["deploy/web".into()],
            patch: Some(patch.into()),
            patch_file: None,
            patch_type: patch_type.into(),
        }
    }

    #[test]
    fn patches_are_json_or_yaml_of_the_right_shape() {
        assert_eq!(
            read_patch(&args(r#"{"spec":{"replicas":2}}"#, "strategic")).unwrap(),
            serde_json::json!({"spec": {"replicas": 2}})
        );
        assert_eq!(
            read_patch(&args("spec: {replicas: 3}", "merge")).unwrap(),
            serde_json::json!({"spec": {"replicas": 3}})
        );
        assert!(read_patch(&args(r#"[{"op":"remove","path":"/a"}]"#, "json")).is_ok());
        let e = read_patch(&args(r#"{"a":1}"#, "json")).unwrap_err();
        assert!(e.to_string().contains("RFC 6902"), "{e}");
        assert!(read_patch(&args("[1]", "merge")).is_err());
    }
}
