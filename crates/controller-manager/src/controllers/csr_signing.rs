//! The csrsigning controller: signs approved CertificateSigningRequests of
//! the signers rkube knows with the cluster CA, as Kubernetes' csrsigning
//! does. The CA comes from `--cluster-signing-cert-file` and
//! `--cluster-signing-key-file`; a certificate lasts
//! `min(spec.expirationSeconds, --cluster-signing-duration)` and never past
//! the CA's own expiry. Denied, failed or already signed requests are left
//! alone; a request the signer cannot honour (its usages are not the
//! signer's, its PEM does not verify) gets a Failed condition saying why.

use super::Error;
use crate::{Context, Shutdown};
use futures::future::BoxFuture;
use futures::FutureExt;
use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rkube_api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use rkube_api::validation::certificates::{
    has_condition, CONDITION_APPROVED, CONDITION_DENIED, CONDITION_FAILED, SIGNER_APISERVER_CLIENT,
    SIGNER_KUBELET_CLIENT, SIGNER_KUBELET_SERVING,
};
use rkube_api::Resource;
use rkube_client::{Action, Api, Controller, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

pub const NAME: &str = "csrsigning";

/// Kubernetes backdates certificates by five minutes for clock skew.
const BACKDATE: time::Duration = time::Duration::minutes(5);

/// The cluster CA and how long what it signs lasts.
pub struct ClusterSigner {
    issuer: Issuer<'static, KeyPair>,
    ca_not_after: OffsetDateTime,
    duration: Duration,
}

impl ClusterSigner {
    pub fn load(cert: &Path, key: &Path, duration: Duration) -> anyhow::Result<Self> {
        let (ca_pem, issuer) =
            rkube_client::pki::load_signing_ca(cert, key).map_err(|e| anyhow::anyhow!(e.0))?;
        let not_a_ca = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!(
                "--cluster-signing-cert-file {}: not a PEM CA certificate: {e}",
                cert.display()
            )
        };
        let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).map_err(|e| not_a_ca(&e))?;
        let ca = pem.parse_x509().map_err(|e| not_a_ca(&e))?;
        let ca_not_after = ca.validity().not_after.to_datetime();
        Ok(ClusterSigner {
            issuer,
            ca_not_after,
            duration,
        })
    }

    /// The PEM certificate for an approved `csr`, or why it cannot be signed.
    pub fn sign(&self, csr: &CertificateSigningRequest, now: OffsetDateTime) -> Result<String, String> {
        let spec = csr.spec.clone().unwrap_or_default();
        let (key_usages, ext_usages) = usages_for(&spec.signer_name, &spec.usages)?;
        let pem =
            std::str::from_utf8(&spec.request).map_err(|_| "spec.request is not PEM text".to_string())?;
        let mut req = CertificateSigningRequestParams::from_pem(pem)
            .map_err(|e| format!("spec.request cannot be signed: {e}"))?;
        let mut lifetime = self.duration;
        if let Some(secs) = spec.expiration_seconds {
            lifetime = lifetime.min(Duration::from_secs(u64::try_from(secs).unwrap_or(0)));
        }
        let lifetime = time::Duration::try_from(lifetime).unwrap_or(time::Duration::days(365));
        let params = &mut req.params;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = key_usages;
        params.extended_key_usages = ext_usages;
        params.not_before = now - BACKDATE;
        params.not_after = (now + lifetime).min(self.ca_not_after);
        let cert = req
            .signed_by(&self.issuer)
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok(cert.pem())
    }
}

/// The certificate's key usages for `usages`, when the signer allows them
/// (as Kubernetes' signers check them).
#[allow(clippy::type_complexity)]
fn usages_for(
    signer: &str,
    usages: &[String],
) -> Result<(Vec<KeyUsagePurpose>, Vec<ExtendedKeyUsagePurpose>), String> {
    let allowed: &[&str] = match signer {
        SIGNER_KUBELET_CLIENT | SIGNER_APISERVER_CLIENT => {
            &["digital signature", "key encipherment", "client auth"]
        }
        SIGNER_KUBELET_SERVING => &["digital signature", "key encipherment", "server auth"],
        other => return Err(format!("signer {other:?} is not one this controller signs for")),
    };
    let mut key = Vec::new();
    let mut ext = Vec::new();
    for u in usages {
        match u.as_str() {
            _ if !allowed.contains(&u.as_str()) => {
                return Err(format!(
                    "usage {u:?} is not allowed for signer {signer:?} (allowed: {allowed:?})"
                ))
            }
            "digital signature" => key.push(KeyUsagePurpose::DigitalSignature),
            "key encipherment" => key.push(KeyUsagePurpose::KeyEncipherment),
            "client auth" => ext.push(ExtendedKeyUsagePurpose::ClientAuth),
            "server auth" => ext.push(ExtendedKeyUsagePurpose::ServerAuth),
            _ => {}
        }
    }
    Ok((key, ext))
}

struct State {
    ctx: Arc<Context>,
    csrs: Store<CertificateSigningRequest>,
    signer: Option<ClusterSigner>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let signer = match (&ctx.config.cluster_signing_cert_file, &ctx.config.cluster_signing_key_file) {
            (Some(cert), Some(key)) => Some(ClusterSigner::load(cert, key, ctx.config.cluster_signing_duration)?),
            _ => {
                tracing::warn!(
                    "{NAME}: no --cluster-signing-cert-file/--cluster-signing-key-file: approved CertificateSigningRequests stay unsigned"
                );
                None
            }
        };
        let csrs = ctx.informers.get::<CertificateSigningRequest>();
        let workers = ctx.config.workers;
        let state = Arc::new(State {
            ctx,
            csrs: csrs.store(),
            signer,
        });
        Controller::new(NAME, state, reconcile)
            .primary(&csrs)
            .workers(workers)
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let (Some(csr), Some(signer)) = (state.csrs.get(&key), state.signer.as_ref()) else {
        return Ok(Action::await_change());
    };
    let signed = csr.status.as_ref().is_some_and(|s| !s.certificate.is_empty());
    let signer_name = csr
        .spec
        .as_ref()
        .map(|s| s.signer_name.as_str())
        .unwrap_or_default();
    if signed
        || !has_condition(&csr, CONDITION_APPROVED)
        || has_condition(&csr, CONDITION_DENIED)
        || has_condition(&csr, CONDITION_FAILED)
        || ![
            SIGNER_KUBELET_CLIENT,
            SIGNER_KUBELET_SERVING,
            SIGNER_APISERVER_CLIENT,
        ]
        .contains(&signer_name)
    {
        return Ok(Action::await_change());
    }
    let outcome = signer.sign(&csr, OffsetDateTime::now_utc());
    let api = Api::<CertificateSigningRequest>::all(state.ctx.client.clone());
    let result = api
        .replace_status_with(csr.name(), |mut c| {
            let status = c.status.get_or_insert_with(Default::default);
            if !status.certificate.is_empty()
                || status.conditions.iter().any(|x| x.r#type == CONDITION_FAILED)
            {
                return c;
            }
            match &outcome {
                Ok(pem) => status.certificate = pem.clone().into_bytes(),
                Err(why) => {
                    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    status.conditions.push(CertificateSigningRequestCondition {
                        r#type: CONDITION_FAILED.into(),
                        status: "True".into(),
                        reason: "SignerValidationFailure".into(),
                        message: why.clone(),
                        last_update_time: now.clone(),
                        last_transition_time: now,
                    });
                }
            }
            c
        })
        .await;
    match (result, &outcome) {
        (Ok(_), Ok(_)) => tracing::info!(csr = %key, "signed"),
        (Ok(_), Err(why)) => tracing::warn!(csr = %key, %why, "cannot sign"),
        (Err(e), _) if e.is_not_found() => {}
        (Err(e), _) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType};
    use rkube_api::certificates::v1::CertificateSigningRequestSpec;

    fn signer(dir: &Path, duration: Duration) -> ClusterSigner {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "rkube-ca");
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(dir.join("ca.key"), ca_key.serialize_pem()).unwrap();
        ClusterSigner::load(&dir.join("ca.crt"), &dir.join("ca.key"), duration).unwrap()
    }

    fn node_csr(signer: &str, usages: &[&str], expiration: Option<i32>) -> CertificateSigningRequest {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "system:nodes");
        dn.push(DnType::CommonName, "system:node:n1");
        params.distinguished_name = dn;
        CertificateSigningRequest {
            spec: Some(CertificateSigningRequestSpec {
                request: params
                    .serialize_request(&key)
                    .unwrap()
                    .pem()
                    .unwrap()
                    .into_bytes(),
                signer_name: signer.into(),
                usages: usages.iter().map(|u| u.to_string()).collect(),
                expiration_seconds: expiration,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_certificate_lasts_the_shorter_of_the_request_and_the_flag() {
        let dir = std::env::temp_dir().join(format!("rkube-csrsigning-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = signer(&dir, Duration::from_secs(120));
        // whole seconds, as a certificate keeps its times
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let lifetime = |expiration| {
            let pem = s
                .sign(
                    &node_csr(
                        SIGNER_KUBELET_CLIENT,
                        &["digital signature", "client auth"],
                        expiration,
                    ),
                    now,
                )
                .unwrap();
            let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
            let cert = p.parse_x509().unwrap();
            assert_eq!(cert.subject().to_string(), "O=system:nodes, CN=system:node:n1");
            (cert.validity().not_after.to_datetime() - now).whole_seconds()
        };
        assert_eq!(lifetime(None), 120);
        assert_eq!(lifetime(Some(3600)), 120);
        let long = signer(&dir, Duration::from_secs(8760 * 3600));
        let pem = long
            .sign(&node_csr(SIGNER_KUBELET_CLIENT, &["client auth"], Some(600)), now)
            .unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        assert_eq!(
            (p.parse_x509().unwrap().validity().not_after.to_datetime() - now).whole_seconds(),
            600
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn usages_the_signer_does_not_give_fail_the_request() {
        let dir = std::env::temp_dir().join(format!("rkube-csrsigning-u-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = signer(&dir, Duration::from_secs(3600));
        let why = s
            .sign(
                &node_csr(SIGNER_KUBELET_CLIENT, &["client auth", "server auth"], None),
                OffsetDateTime::now_utc(),
            )
            .unwrap_err();
        assert!(why.contains("\"server auth\""), "{why}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
