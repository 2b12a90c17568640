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
    /// Re-issue certificates of DIR from its CA with the same subjects and
    /// names and a new validity, each with a new key (as kubeadm renews).
    /// NAME is a file stem (apiserver, admin, node-NAME, ...) or `all`; the
    /// CA itself is kept. Prints what to restart to pick them up.
    Renew(RenewArgs),
}

#[derive(Debug, Args, Clone)]
pub struct RenewArgs {
    /// The certificate to renew (its file name without `.crt`), or `all`.
    #[arg(value_name = "NAME|all", default_value = "all")]
    pub name: String,
    /// The PKI directory (`certs generate --dir`, the apiserver's --cert-dir).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/rkube/pki")]
    pub dir: PathBuf,
    /// Lifetime of the renewed certificates, in days.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    pub validity_days: i64,
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
        CertsCommand::Renew(r) => {
            let renewed = renew(r)?;
            for c in &renewed {
                writeln!(
                    out,
                    "renewed {} (CN {:?}), valid until {}",
                    c.path.display(),
                    c.common_name,
                    c.not_after
                )?;
            }
            let mut restart: Vec<&str> = renewed.iter().filter_map(|c| c.used_by).collect();
            restart.dedup();
            if !restart.is_empty() {
                writeln!(
                    out,
                    "restart to use the new certificates: {} (client config files name the files and need no change)",
                    restart.join(", ")
                )?;
            }
            Ok(())
        }
    }
}

/// One re-issued certificate.
#[derive(Debug)]
pub struct Renewed {
    pub path: PathBuf,
    pub common_name: String,
    /// RFC 3339.
    pub not_after: String,
    /// Which daemon reads it at start, if one does.
    pub used_by: Option<&'static str>,
}

/// The daemon that loads the certificate of file stem `stem` at start.
fn used_by(stem: &str) -> Option<&'static str> {
    Some(match stem {
        "apiserver" | "apiserver-kubelet-client" => "rkube-apiserver",
        "kube-scheduler" => "rkube-scheduler",
        "kube-controller-manager" => "rkube-controller-manager",
        "cloud-controller-manager" => "rkube-cloud-controller-manager",
        "kube-proxy" => "rkube-proxy",
        "rkube-ingress" => "rkube-ingress",
        "kubelet" => "rkubelet",
        s if s.starts_with("node-") => "rkubelet",
        _ => return None,
    })
}

/// What a certificate is issued for, read back from it.
struct Profile {
    common_name: String,
    organizations: Vec<String>,
    sans: Vec<String>,
    server: bool,
}

fn profile(path: &std::path::Path, pem: &[u8], ca_subject: &[u8]) -> Result<Option<Profile>, CtlError> {
    use x509_parser::extensions::GeneralName;
    let bad = |why: String| CtlError::usage(format!("{}: {why}", path.display()));
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| bad(format!("cannot be parsed: {e}")))?;
    // only what this CA signed: a certificate of another issuer is not ours to renew
    if cert.issuer().as_raw() != ca_subject {
        return Ok(None);
    }
    let (cn, organizations) = pki::certificate_subject(pem.contents.as_slice()).map_err(bad)?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => sans.push(d.to_string()),
                GeneralName::IPAddress(b) => {
                    let ip: Option<std::net::IpAddr> = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(Into::into),
                        16 => <[u8; 16]>::try_from(*b).ok().map(Into::into),
                        _ => None,
                    };
                    sans.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    let server = matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.server_auth);
    Ok(Some(Profile {
        common_name: cn.unwrap_or_default(),
        organizations,
        sans,
        server,
    }))
}

/// Re-issues `args.name` (or every certificate the CA of `args.dir` signed).
pub fn renew(args: &RenewArgs) -> Result<Vec<Renewed>, CtlError> {
    let dir = &args.dir;
    if args.validity_days <= 0 {
        return Err(CtlError::usage("--validity-days must be at least 1"));
    }
    let ca_path = dir.join("ca.crt");
    if !ca_path.exists() || !dir.join("ca.key").exists() {
        return Err(CtlError::usage(format!(
            "{} has no ca.crt and ca.key: renewing needs the CA that issued the certificates (`certs generate --dir` makes a PKI)",
            dir.display()
        )));
    }
    let (ca, _) = CertificateAuthority::load_or_create(dir).map_err(|e| CtlError::usage(e.to_string()))?;
    let ca_pem =
        std::fs::read(&ca_path).map_err(|e| CtlError::usage(format!("{}: {e}", ca_path.display())))?;
    let (_, ca_pem) = x509_parser::pem::parse_x509_pem(&ca_pem)
        .map_err(|e| CtlError::usage(format!("{}: not a PEM certificate: {e}", ca_path.display())))?;
    let ca_cert = ca_pem
        .parse_x509()
        .map_err(|e| CtlError::usage(format!("{}: cannot be parsed: {e}", ca_path.display())))?;
    let ca_subject = ca_cert.subject().as_raw();

    let mut stems: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| CtlError::usage(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".crt").map(str::to_string))
        .filter(|s| s != "ca" && dir.join(format!("{s}.key")).exists())
        .collect();
    stems.sort();
    if args.name != "all" {
        if !stems.contains(&args.name) {
            return Err(CtlError::usage(format!(
                "no certificate {:?} with its key in {} (there are: {}, or all)",
                args.name,
                dir.display(),
                stems.join(", ")
            )));
        }
        stems = vec![args.name.clone()];
    }
    let now = time::OffsetDateTime::now_utc();
    // an hour back, as `certs generate` does, for clocks a little behind
    let (from, until) = (
        now - time::Duration::hours(1),
        now + time::Duration::days(args.validity_days),
    );
    let mut renewed = Vec::new();
    for stem in stems {
        let path = dir.join(format!("{stem}.crt"));
        let pem = std::fs::read(&path).map_err(|e| CtlError::usage(format!("{}: {e}", path.display())))?;
        let Some(p) = profile(&path, &pem, ca_subject)? else {
            if args.name != "all" {
                return Err(CtlError::usage(format!(
                    "{} was not issued by {}: renew it with the CA that did",
                    path.display(),
                    ca_path.display()
                )));
            }
            continue;
        };
        let (crt, key) = ca
            .issue(&p.common_name, &p.organizations, &p.sans, p.server, from, until)
            .map_err(|e| CtlError::usage(e.to_string()))?;
        // the key first: a certificate never sits beside a key it does not match for long
        write_private(&dir.join(format!("{stem}.key")), key.as_bytes(), 0o600)?;
        write_private(&path, crt.as_bytes(), 0o644)?;
        renewed.push(Renewed {
            path,
            common_name: p.common_name,
            not_after: until
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            used_by: used_by(&stem),
        });
    }
    renewed.sort_by_key(|r| r.used_by);
    Ok(renewed)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// daemon starting meanwhile reads the old file or the new one.
fn write_private(path: &std::path::Path, bytes: &[u8], mode: u32) -> Result<(), CtlError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| CtlError::usage(format!("{}: cannot write: {e}", path.display()));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".renewing");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
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
