//! TLS bootstrap: how a new node gets its own credentials from a bootstrap
//! token, as Kubernetes' kubelet does with `--bootstrap-kubeconfig`. When
//! `--kubeconfig` does not exist yet and `--bootstrap-token` is given, the
//! kubelet generates a private key (it never leaves the node), sends a
//! certificate signing request for it with the token to the apiserver's
//! IssueNodeCertificate, and writes the key, the signed certificate
//! (`system:node:NAME`, group `system:nodes`), the cluster CA and the
//! kubeconfig that uses them, each readable by root only. The token works
//! once; from then on the kubeconfig is what the kubelet runs with, and a
//! restart just reads it.

use anyhow::Context as _;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rkube_client::{Client, ClientConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::config::BootstrapToken;
use crate::config::Config;

/// Files written beside the kubeconfig.
pub const CLIENT_CERT_FILE: &str = "kubelet-client.crt";
pub const CLIENT_KEY_FILE: &str = "kubelet-client.key";
pub const CA_FILE: &str = "kubelet-ca.crt";

/// The client config the kubelet runs with: `--kubeconfig` (created by
/// bootstrapping first when it does not exist), with `--apiserver`
/// overriding its server; or plain `--apiserver` without credentials.
pub async fn client_config(config: &Config) -> anyhow::Result<ClientConfig> {
    let apiserver = Some(config.apiserver.as_str()).filter(|s| !s.is_empty());
    let Some(path) = &config.kubeconfig else {
        return Ok(ClientConfig::for_server(
            apiserver.unwrap_or(rkube_client::config::DEFAULT_SERVER),
        ));
    };
    if !path.exists() {
        let Some(token) = &config.bootstrap_token else {
            anyhow::bail!(
                "--kubeconfig {} does not exist: create it with `rkubectl certs generate --node {}` or give --bootstrap-token to obtain one",
                path.display(),
                config.node_name
            );
        };
        let server = apiserver.ok_or_else(|| {
            anyhow::anyhow!(
                "--bootstrap-token needs --apiserver: the apiserver to obtain the node certificate from"
            )
        })?;
        bootstrap(
            server,
            &config.node_name,
            token,
            config.bootstrap_ca_file.as_deref(),
            path,
        )
        .await?;
    }
    ClientConfig::for_daemon(apiserver, Some(path))
        .with_context(|| format!("--kubeconfig {}", path.display()))
}

/// Obtains node `node_name`'s client certificate with `token` from
/// `server` and writes it with its key, the CA and a kubeconfig at `path`.
pub async fn bootstrap(
    server: &str,
    node_name: &str,
    token: &BootstrapToken,
    ca_file: Option<&Path>,
    path: &Path,
) -> anyhow::Result<()> {
    let client = Client::from_config(&ClientConfig {
        server: server.to_string(),
        token: Some(token.0.clone()),
        certificate_authority: ca_file.map(Path::to_path_buf),
        ..ClientConfig::default()
    })
    .context("the bootstrap connection (--apiserver, --bootstrap-ca-file)")?;
    let (key, csr) = node_csr(node_name)?;
    tracing::info!(node = %node_name, token = ?token, %server, "bootstrapping: asking the apiserver for this node's client certificate");
    let issued = retry_unreachable(&client, "bootstrapping", || client.issue_node_certificate(node_name, &csr))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context(
            "obtaining this node's client certificate with --bootstrap-token (create a new token with `rkubectl token create`)",
        )?;

    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_private(&dir.join(CLIENT_KEY_FILE), key.serialize_pem().as_bytes())?;
    write_private(&dir.join(CLIENT_CERT_FILE), issued.certificate_pem.as_bytes())?;
    write_private(&dir.join(CA_FILE), issued.ca_pem.as_bytes())?;
    // The kubeconfig last (written atomically): a kubelet stopped half-way
    // has no kubeconfig and bootstraps again.
    ClientConfig {
        server: server.to_string(),
        certificate_authority: Some(PathBuf::from(CA_FILE)),
        client_certificate: Some(PathBuf::from(CLIENT_CERT_FILE)),
        client_key: Some(PathBuf::from(CLIENT_KEY_FILE)),
        ..ClientConfig::default()
    }
    .save(path)
    .with_context(|| format!("writing --kubeconfig {}", path.display()))?;
    tracing::info!(node = %node_name, kubeconfig = %path.display(), "bootstrapped: node client certificate written");
    Ok(())
}

/// A new private key (it never leaves the node) and a certificate signing
/// request for it as node `node_name` (CN `system:node:NAME`, O
/// `system:nodes`), for a client or a serving certificate.
pub(crate) fn node_csr(node_name: &str) -> anyhow::Result<(KeyPair, String)> {
    let key = KeyPair::generate().context("generating the node's private key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "system:nodes");
    dn.push(DnType::CommonName, format!("system:node:{node_name}"));
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .context("making the certificate signing request")?;
    Ok((key, csr))
}

/// `call`, retried with back-off while the apiserver is unreachable (the
/// node may start first), at most 30 times; a refusal is final. `doing`
/// names the step in the warnings.
pub(crate) async fn retry_unreachable<T, F, Fut>(
    client: &Client,
    doing: &str,
    mut call: F,
) -> Result<T, rkube_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, rkube_client::Error>>,
{
    let mut delay = Duration::from_millis(200);
    let mut attempts = 0;
    loop {
        match call().await {
            Err(e) if retriable(&e) && attempts < 30 => {
                tracing::warn!("{doing} against {}: {e}; retrying", client.server());
                attempts += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            result => return result,
        }
    }
}

/// Whether a failed call to the apiserver may succeed later (it was not
/// reached).
fn retriable(e: &rkube_client::Error) -> bool {
    match e {
        // not a timeout: the server may have consumed the token already
        rkube_client::Error::Api { code, .. } => *code == tonic::Code::Unavailable,
        rkube_client::Error::Transport { .. } => true,
        _ => false,
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let t = BootstrapToken("abcdef.0123456789abcdef".into());
        assert_eq!(format!("{t:?}"), "BootstrapToken(abcdef.<redacted>)");
    }

    #[test]
    fn a_bootstrap_token_needs_a_kubeconfig_to_write() {
        let config = crate::config::tests::config;
        let err = config(&[
            "--node-name",
            "n1",
            "--bootstrap-token",
            "abcdef.0123456789abcdef",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--bootstrap-token needs --kubeconfig"), "{err}");
        // with a kubeconfig, the apiserver defaults to its server
        let c = config(&["--node-name", "n1", "--kubeconfig", "/etc/rkube/kubelet.conf"]).unwrap();
        assert_eq!(c.apiserver, "");
    }
}
