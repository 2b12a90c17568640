//! TLS termination: the certificates of the Ingresses' `tls` entries, read
//! from kubernetes.io/tls Secrets, chosen per connection by SNI (an exact
//! host, then a `*.suffix` wildcard, then a certificate listed without hosts).

use crate::routes::{by_age, Problem};
use rkube_api::core::v1::Secret;
use rkube_api::networking::v1::Ingress;
use rkube_api::Resource;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// Certificates by host name (lower case; `*.example.com` for wildcards).
#[derive(Default, Clone, Debug)]
pub struct Certificates {
    by_host: HashMap<String, Arc<CertifiedKey>>,
    /// From a `tls` entry without hosts: for names no other entry covers.
    fallback: Option<Arc<CertifiedKey>>,
}

impl Certificates {
    /// The certificate for a TLS client that asked for `sni`.
    pub fn find(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let exact = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase());
        exact
            .as_ref()
            .and_then(|h| {
                self.by_host.get(h).or_else(|| {
                    let (_, suffix) = h.split_once('.')?;
                    self.by_host.get(&format!("*.{suffix}"))
                })
            })
            .or(self.fallback.as_ref())
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.by_host.len() + usize::from(self.fallback.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A certificate and key from a Secret's `tls.crt` and `tls.key`.
pub fn certified_key(secret: &Secret) -> Result<CertifiedKey, String> {
    if secret.r#type != "kubernetes.io/tls" {
        return Err(format!("is of type {:?}, not kubernetes.io/tls", secret.r#type));
    }
    let crt = secret.data.get("tls.crt").ok_or("has no tls.crt")?;
    let key = secret.data.get("tls.key").ok_or("has no tls.key")?;
    let chain = CertificateDer::pem_slice_iter(crt)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key =
        PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("tls.key is not a PEM private key: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("tls.key is not a usable key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("tls.crt and tls.key do not match: {e}"))?;
    Ok(certified)
}

/// The certificates of `ingresses` (oldest first wins a host), and the
/// Secrets that are missing or unusable, as problems of their Ingress.
pub fn certificates(
    ingresses: &[Arc<Ingress>],
    secret: impl Fn(&str, &str) -> Option<Arc<Secret>>,
) -> (Certificates, Vec<Problem>) {
    let mut certs = Certificates::default();
    let mut problems = Vec::new();
    let mut parsed: HashMap<(String, String), Option<Arc<CertifiedKey>>> = HashMap::new();
    for ing in by_age(ingresses) {
        let ns = ing.namespace().to_string();
        for tls in ing.spec.iter().flat_map(|s| &s.tls) {
            if tls.secret_name.is_empty() {
                continue;
            }
            let key = (ns.clone(), tls.secret_name.clone());
            let cert = parsed
                .entry(key)
                .or_insert_with(|| {
                    let result = match secret(&ns, &tls.secret_name) {
                        None => Err(("SecretNotFound", "not found".to_string())),
                        Some(s) => certified_key(&s).map_err(|e| ("InvalidSecret", e)),
                    };
                    match result {
                        Ok(c) => Some(Arc::new(c)),
                        Err((reason, why)) => {
                            problems.push(Problem {
                                ingress: ing.key(),
                                reason,
                                message: format!("TLS secret \"{ns}/{}\" {why}", tls.secret_name),
                            });
                            None
                        }
                    }
                })
                .clone();
            let Some(cert) = cert else { continue };
            if tls.hosts.is_empty() {
                certs.fallback.get_or_insert(cert.clone());
            }
            for host in &tls.hosts {
                certs
                    .by_host
                    .entry(host.to_ascii_lowercase())
                    .or_insert_with(|| cert.clone());
            }
        }
    }
    (certs, problems)
}

/// The rustls resolver over the current certificates, swapped on every sync.
#[derive(Debug, Default)]
pub struct SniResolver(RwLock<Arc<Certificates>>);

impl SniResolver {
    pub fn set(&self, certs: Certificates) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certs);
    }

    fn current(&self) -> Arc<Certificates> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current().find(hello.server_name())
    }
}

/// The HTTPS listener's settings: HTTP/2 and HTTP/1.1 in ALPN, certificates by SNI.
pub fn server_config(resolver: Arc<SniResolver>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_secret(name: &str, hosts: &[&str]) -> Arc<Secret> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let mut s = Secret::default();
        s.metadata_mut().name = name.into();
        s.metadata_mut().namespace = "default".into();
        s.r#type = "kubernetes.io/tls".into();
        s.data.insert("tls.crt".into(), cert.pem().into_bytes());
        s.data.insert("tls.key".into(), key.serialize_pem().into_bytes());
        Arc::new(s)
    }

    #[test]
    fn certificates_by_sni_and_problems_by_ingress() {
        let secrets = [
            tls_secret("foo", &["foo.example.com"]),
            tls_secret("wild", &["*.example.org"]),
        ];
        let mut broken = (*secrets[0]).clone();
        broken.metadata_mut().name = "opaque".into();
        broken.r#type = "Opaque".into();
        let secrets: Vec<Arc<Secret>> = secrets.into_iter().chain([Arc::new(broken)]).collect();
        let mut ing: Ingress = serde_yaml::from_str(
            "spec: {tls: [{hosts: [foo.example.com], secretName: foo}, {hosts: ['*.example.org'], secretName: wild},
                          {hosts: [x.example.net], secretName: missing}, {hosts: [y.example.net], secretName: opaque}]}",
        )
        .unwrap();
        ing.metadata_mut().name = "web".into();
        ing.metadata_mut().namespace = "default".into();
        let (certs, problems) = certificates(&[Arc::new(ing)], |ns, n| {
            secrets
                .iter()
                .find(|s| s.namespace() == ns && s.name() == n)
                .cloned()
        });
        assert_eq!(certs.len(), 2);
        let foo = certs.find(Some("FOO.example.com")).unwrap();
        let wild = certs.find(Some("a.example.org")).unwrap();
        assert_ne!(foo.cert[0], wild.cert[0]);
        assert!(certs.find(Some("b.a.example.org")).is_none());
        assert!(certs.find(None).is_none());
        let reasons: Vec<(&str, &str)> = problems.iter().map(|p| (p.reason, p.message.as_str())).collect();
        assert_eq!(
            reasons,
            [
                ("SecretNotFound", "TLS secret \"default/missing\" not found"),
                (
                    "InvalidSecret",
                    "TLS secret \"default/opaque\" is of type \"Opaque\", not kubernetes.io/tls"
                ),
            ]
        );
    }
}
