//! `rkubectl certs generate --dir DIR`: the cluster's public-key
//! infrastructure ([`rkube_client::pki`]): one CA (kept when it already
//! exists, so running the command again re-issues certificates without
//! invalidating anything), the apiserver's serving certificate, and a
//! client certificate plus a client config file for each component, each
//! `--node` and an administrator.

use crate::error::CtlError;
use clap::{Args, Subcommand};
use rkube_client::pki::{self, PkiRequest};
use std::io::Write;
use std::path::PathBuf;

pub use rkube_client::pki::{client_identities, CertificateAuthority};

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the cluster CA (kept if DIR already has one), the apiserver's
    /// serving certificate, its client certificate towards kubelets
    /// (apiserver-kubelet-client.crt, for --kubelet-client-certificate), the
    /// key that signs ServiceAccount tokens (sa.key, kept if present, for
    /// --service-account-signing-key-file) and client certificates and config
    /// files for admin, the scheduler, the controller managers, kube-proxy and
    /// each --node.
    Generate(GenerateArgs),
}

#[derive(Debug, Args, Clone)]
pub struct GenerateArgs {
    /// Where to write the files (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Extra names or IP addresses the apiserver is reached at (localhost
    /// and 127.0.0.1 are always included). Repeat or separate with commas.
    #[arg(long = "apiserver-san", value_name = "IP|DNS", value_delimiter = ',')]
    pub apiserver_sans: Vec<String>,
    /// Node names to issue kubelet client certificates for
    /// (user system:node:NAME, group system:nodes).
    #[arg(long = "node", value_name = "NAME", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// The apiserver URL written into the client config files.
    #[arg(
        long = "apiserver-url",
        value_name = "URL",
        default_value = "https://127.0.0.1:6443"
    )]
    pub apiserver_url: String,
    /// Lifetime of the issued (non-CA) certificates, in days.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    pub validity_days: i64,
}

pub async fn run(args: &CertsArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    match &args.command {
        CertsCommand::Generate(g) => {
            let written = generate(g)?;
            for p in written {
                writeln!(out, "wrote {}", p.display())?;
            }
            Ok(())
        }
    }
}

/// Writes every file; returns their paths (the CA only when created).
pub fn generate(args: &GenerateArgs) -> Result<Vec<PathBuf>, CtlError> {
    pki::generate(&PkiRequest {
        dir: args.dir.clone(),
        apiserver_sans: args.apiserver_sans.clone(),
        nodes: args.nodes.clone(),
        apiserver_url: args.apiserver_url.clone(),
        validity_days: args.validity_days,
    })
    .map_err(|e| CtlError::usage(e.to_string()))
}
