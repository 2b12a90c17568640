//! The kubelet server's transport security: its serving certificate and who
//! may call it.
//!
//! * `--tls-cert-file` and `--tls-private-key-file` given: the operator's
//!   certificate.
//! * Else, with an https apiserver: a certificate the apiserver signs at
//!   each start (IssueKubeletServingCertificate) for a key generated here,
//!   valid for `--node-ip` (what the apiserver dials and verifies) and the
//!   node name. The key stays in memory: a restart asks again, so there is
//!   nothing on disk to rotate or to leak.
//! * Else (a plain-http apiserver: insecure development mode): plain text,
//!   as before.
//!
//! With TLS, callers must present a client certificate signed by
//! `--client-ca-file` (default: the cluster CA the kubelet trusts the
//! apiserver with), checked in the handshake; then only the apiserver (CN
//! `kube-apiserver-kubelet-client`) and group `system:masters` may call,
//! everyone else gets PERMISSION_DENIED. Kubernetes' kubelet asks the
//! apiserver (SubjectAccessReview) who else may; rkube's kubelet API is
//! only ever called by the apiserver, so it does not.
//!
//! This module must not decide anything about pods: it only guards the
//! server in [`crate::server`].

use std::net::IpAddr;

use anyhow::Context as _;
use rkube_client::pki::{read_pem, APISERVER_KUBELET_CLIENT_USER, MASTERS_GROUP};
use rkube_client::{Client, ClientConfig};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::config::Config;

/// The server's TLS settings: `None` serves plain text.
pub struct ServingTls {
    pub tls: Option<ServerTlsConfig>,
    /// Where the certificate came from, for the start-up log line.
    pub source: &'static str,
}

/// Decides how the server is secured (see the module doc) and obtains the
/// certificate when the apiserver issues it. `client_config` is what the
/// kubelet reaches the apiserver with, `client` the client made from it.
pub async fn serving_tls(
    config: &Config,
    client_config: &ClientConfig,
    client: &Client,
) -> anyhow::Result<ServingTls> {
    let https = client_config.server.starts_with("https://");
    let (identity, client_ca, source) = match (&config.tls_cert_file, &config.tls_private_key_file) {
        (Some(cert), Some(key)) => {
            let cert_pem = read_pem("--tls-cert-file", cert)?;
            let key_pem = read_pem("--tls-private-key-file", key)?;
            let ca = client_ca(config, client_config)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "--tls-cert-file: the kubelet server requires client certificates, so it needs the CA that signs them: give --client-ca-file (the cluster CA, ca.crt)"
                )
            })?;
            (Identity::from_pem(cert_pem, key_pem), ca, "--tls-cert-file")
        }
        (None, None) if https => {
            let ca = client_ca(config, client_config)?;
            let (identity, issuer_ca) = issue(config, client).await?;
            // the issuing CA is the cluster CA when the kubeconfig has none
            let ca = ca.unwrap_or_else(|| issuer_ca.into_bytes());
            (identity, ca, "issued by the apiserver")
        }
        (None, None) => {
            if let Some(ca) = &config.client_ca_file {
                anyhow::bail!(
                    "--client-ca-file {} needs TLS, but the apiserver {:?} is plain http, so it issues no serving certificate: give --tls-cert-file and --tls-private-key-file, or drop --client-ca-file",
                    ca.display(),
                    client_config.server
                );
            }
            return Ok(ServingTls {
                tls: None,
                source: "plain text: the apiserver is http",
            });
        }
        _ => anyhow::bail!("--tls-cert-file and --tls-private-key-file go together: give both or neither"),
    };
    let tls = ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(Certificate::from_pem(client_ca))
        // a caller without a certificate is refused in the handshake
        .client_auth_optional(false);
    Ok(ServingTls {
        tls: Some(tls),
        source,
    })
}

/// `--client-ca-file`, else the CA of the kubeconfig, else
/// `--bootstrap-ca-file`; `None` when none is given.
fn client_ca(config: &Config, client_config: &ClientConfig) -> anyhow::Result<Option<Vec<u8>>> {
    let (flag, path) = match (
        &config.client_ca_file,
        &client_config.certificate_authority,
        &config.bootstrap_ca_file,
    ) {
        (Some(p), _, _) => ("--client-ca-file", p),
        (None, Some(p), _) => ("the certificateAuthority of --kubeconfig", p),
        (None, None, Some(p)) => ("--bootstrap-ca-file", p),
        (None, None, None) => return Ok(None),
    };
    Ok(Some(read_pem(flag, path)?))
}

/// The addresses and names the serving certificate is for: the node IP
/// (what the apiserver dials, from the Node's InternalIP), the listen
/// address when it is a specific other one, and the node name as a DNS
/// name when it is one.
pub fn serving_names(config: &Config) -> (Vec<String>, Vec<String>) {
    let mut ips = vec![config.node_ip];
    let listen = config.listen.ip();
    if !listen.is_unspecified() && !ips.contains(&listen) {
        ips.push(listen);
    }
    let dns = [config.node_name.clone()]
        .into_iter()
        .filter(|n| rkube_api::validation::is_dns1123_subdomain(n))
        .collect();
    (ips.iter().map(IpAddr::to_string).collect(), dns)
}

/// Generates the key and has the apiserver sign it; returns the identity
/// and the issuing CA. Retried while the apiserver is unreachable (the
/// node may start first); a refusal is final.
async fn issue(config: &Config, client: &Client) -> anyhow::Result<(Identity, String)> {
    let (key, csr) = crate::bootstrap::node_csr(&config.node_name)?;
    let (ips, dns) = serving_names(config);
    let issued = crate::bootstrap::retry_unreachable(client, "obtaining the serving certificate", || {
        client.issue_kubelet_serving_certificate(&csr, ips.clone(), dns.clone())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
    .with_context(|| {
        format!(
            "obtaining node {}'s kubelet serving certificate from the apiserver (IssueKubeletServingCertificate); or give --tls-cert-file and --tls-private-key-file",
            config.node_name
        )
    })?;
    tracing::info!(node = %config.node_name, ?ips, ?dns, "kubelet serving certificate issued by the apiserver");
    Ok((
        Identity::from_pem(issued.certificate_pem, key.serialize_pem()),
        issued.ca_pem,
    ))
}

/// Who may call the kubelet server: with TLS, the apiserver and
/// `system:masters` (see the module doc); without, anyone who can reach
/// the port, as before.
#[derive(Clone)]
pub struct CallerCheck {
    node_name: String,
    tls: bool,
}

impl CallerCheck {
    pub fn new(node_name: &str, tls: bool) -> Self {
        CallerCheck {
            node_name: node_name.to_string(),
            tls,
        }
    }

    /// Ok when a caller with this certificate (DER) may call.
    pub fn admit(&self, leaf: &[u8]) -> Result<(), Status> {
        let (user, groups) = rkube_client::pki::certificate_subject(leaf)
            .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
        let user = user.unwrap_or_default();
        if user == APISERVER_KUBELET_CLIENT_USER || groups.iter().any(|g| g == MASTERS_GROUP) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "User {user:?} (groups {groups:?}) may not call the kubelet of node {:?}: only the apiserver (client certificate CN {APISERVER_KUBELET_CLIENT_USER:?}) and group {MASTERS_GROUP:?} may; go through the apiserver (`rkubectl logs`, `exec`, `top`)",
            self.node_name
        )))
    }
}

impl tonic::service::Interceptor for CallerCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if !self.tls {
            return Ok(req);
        }
        let leaf = req
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()))
            .ok_or_else(|| {
                // the handshake requires one, so this is a server bug
                Status::unauthenticated(
                    "no client certificate: the kubelet requires one signed by its --client-ca-file",
                )
            })?;
        self.admit(&leaf)?;
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn cert(cn: &str, orgs: &[&str]) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn only_the_apiserver_and_masters_may_call() {
        let check = CallerCheck::new("n1", true);
        check
            .admit(&cert("kube-apiserver-kubelet-client", &["system:masters"]))
            .unwrap();
        check.admit(&cert("kube-apiserver-kubelet-client", &[])).unwrap();
        check.admit(&cert("admin", &["system:masters"])).unwrap();
        for (cn, orgs) in [
            ("system:node:other", &["system:nodes"][..]),
            ("jane", &["developers"][..]),
            ("system:kube-proxy", &[][..]),
        ] {
            let e = check.admit(&cert(cn, orgs)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied);
            assert!(
                e.message().starts_with(&format!("User {cn:?}")) && e.message().contains(r#"node "n1""#),
                "{}",
                e.message()
            );
        }
    }

    #[test]
    fn the_certificate_names_the_node_ip_and_name() {
        let mut c = Config::new("https://10.0.0.1:6443", "node-a");
        c.node_ip = "10.0.0.5".parse().unwrap();
        assert_eq!(
            serving_names(&c),
            (vec!["10.0.0.5".to_string()], vec!["node-a".to_string()])
        );
        c.listen = "10.0.0.6:10250".parse().unwrap();
        c.node_name = "-odd".into();
        assert_eq!(
            serving_names(&c),
            (vec!["10.0.0.5".to_string(), "10.0.0.6".to_string()], vec![])
        );
    }

    #[tokio::test]
    async fn plain_http_serves_plain_text_unless_tls_is_asked_for() {
        let c = Config::new("http://127.0.0.1:6443", "n1");
        let cc = ClientConfig::for_server("http://127.0.0.1:6443");
        let client = Client::from_config(&cc).unwrap();
        assert!(serving_tls(&c, &cc, &client).await.unwrap().tls.is_none());

        let mut with_ca = c.clone();
        with_ca.client_ca_file = Some("/etc/rkube/ca.crt".into());
        let err = serving_tls(&with_ca, &cc, &client)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("--client-ca-file /etc/rkube/ca.crt needs TLS"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("k.crt"), dir.path().join("k.key"));
        let kp = KeyPair::generate().unwrap();
        std::fs::write(
            &crt,
            CertificateParams::new(vec!["n1".into()])
                .unwrap()
                .self_signed(&kp)
                .unwrap()
                .pem(),
        )
        .unwrap();
        std::fs::write(&key, kp.serialize_pem()).unwrap();
        let mut with_cert = c.clone();
        with_cert.tls_cert_file = Some(crt.clone());
        with_cert.tls_private_key_file = Some(key);
        let err = serving_tls(&with_cert, &cc, &client)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("give --client-ca-file"), "{err}");
        with_cert.client_ca_file = Some(crt);
        let tls = serving_tls(&with_cert, &cc, &client).await.unwrap();
        assert!(tls.tls.is_some());
        assert_eq!(tls.source, "--tls-cert-file");
    }
}
