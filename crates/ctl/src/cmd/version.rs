//! `rkubectl version`: the client's version and, unless `--client`, the
//! server's.

use crate::cmd::Context;
use crate::error::CtlError;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// Print only the client version; do not contact the server.
    #[arg(long)]
    pub client: bool,
    /// `json` or `yaml` instead of text.
    #[arg(short = 'o', long = "output")]
    pub output: Option<String>,
}

/// `linux/amd64`, in Go's words as Kubernetes prints platforms.
pub fn client_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

pub fn client_version() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

pub async fn run(ctx: &Context, args: &VersionArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    if let Some(o) = args.output.as_deref() {
        if o != "json" && o != "yaml" {
            return Err(CtlError::usage(format!(
                "--output must be 'yaml' or 'json', not {o:?}"
            )));
        }
    }
    let client = serde_json::json!({"gitVersion": client_version(), "platform": client_platform()});
    let server = if args.client {
        None
    } else {
        // the client version is worth printing even when the server is down
        match ctx.connect().await {
            Ok(s) => Some(s.version().await),
            Err(e) => Some(Err(e)),
        }
    };
    match args.output.as_deref() {
        None => {
            writeln!(out, "Client Version: {}", client_version())?;
            match server {
                None => {}
                Some(Ok(v)) => writeln!(out, "Server Version: {}", v.git_version)?,
                Some(Err(e)) => return Err(e),
            }
        }
        Some(format) => {
            let mut doc = serde_json::json!({ "clientVersion": client });
            let mut error = None;
            match server {
                Some(Ok(v)) => {
                    doc["serverVersion"] =
                        serde_json::json!({"gitVersion": v.git_version, "platform": v.platform});
                }
                Some(Err(e)) => error = Some(e),
                None => {}
            }
            if format == "json" {
                write!(out, "{}", crate::printers::json_pretty(&doc))?;
            } else {
                write!(out, "{}", rkube_api::codec::json_to_yaml(&doc))?;
            }
            if let Some(e) = error {
                return Err(e);
            }
        }
    }
    Ok(())
}
