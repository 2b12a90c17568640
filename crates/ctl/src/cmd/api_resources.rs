//! `rkubectl api-resources`: the kinds the server serves, from discovery:
//! NAME SHORTNAMES APIVERSION NAMESPACED KIND.

use crate::cmd::Context;
use crate::error::CtlError;
use crate::printers::Table;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct ApiResourcesArgs {
    /// Only namespaced (`true`) or only cluster-scoped (`false`) kinds.
    #[arg(long)]
    pub namespaced: Option<bool>,
    /// `name` prints only `plural.group` names.
    #[arg(short = 'o', long = "output")]
    pub output: Option<String>,
    /// Omit the header line.
    #[arg(long)]
    pub no_headers: bool,
}

pub async fn run(ctx: &Context, args: &ApiResourcesArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    if let Some(o) = args.output.as_deref() {
        if o != "name" && o != "wide" {
            return Err(CtlError::usage(format!(
                "--output must be 'name' or 'wide', not {o:?}"
            )));
        }
    }
    let server = ctx.connect().await?;
    let mut resources = server.discovery().await?;
    resources.retain(|r| args.namespaced.is_none_or(|n| n == r.namespaced));
    // core first, then by group, then by name, as kubectl lists them
    resources.sort_by(|a, b| (&a.group, &a.name).cmp(&(&b.group, &b.name)));
    if args.output.as_deref() == Some("name") {
        for r in &resources {
            if r.group.is_empty() {
                writeln!(out, "{}", r.name)?;
            } else {
                writeln!(out, "{}.{}", r.name, r.group)?;
            }
        }
        return Ok(());
    }
    let mut table = Table {
        header: ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
            .map(String::from)
            .to_vec(),
        rows: Vec::new(),
    };
    for r in &resources {
        let api_version = if r.group.is_empty() {
            r.version.clone()
        } else {
            format!("{}/{}", r.group, r.version)
        };
        table.rows.push(vec![
            r.name.clone(),
            r.short_names.join(","),
            api_version,
            r.namespaced.to_string(),
            r.kind.clone(),
        ]);
    }
    let text = table.render();
    let text = if args.no_headers {
        text.split_once('\n').map(|(_, rest)| rest).unwrap_or("")
    } else {
        &text
    };
    write!(out, "{text}")?;
    Ok(())
}
