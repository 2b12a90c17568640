//! Signing node client certificates (IssueNodeCertificate): how a new node
//! turns a bootstrap token into its own identity. Kubernetes does this in
//! three steps (the kubelet creates a CertificateSigningRequest, the
//! controller-manager's approver approves it for system:bootstrappers, its
//! signer signs it with `--cluster-signing-cert-file`); rkube does them in
//! one call, in the apiserver, which holds the cluster CA given with the
//! same flags. The certificate's subject is always `CN=system:node:NAME,
//! O=system:nodes` whatever the request says, so a bootstrapper can obtain
//! a node identity and nothing more; the token it used is consumed by the
//! call (deleted at the revision it was read at), so it works once.

use crate::authn::{is_bootstrapper, BootstrapToken, UserInfo};
use crate::error::ApiError;
use rcgen::{
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use rkube_api::rpc;
use rkube_store::{Store, StoreError};
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// How long an issued node certificate is valid (Kubernetes' default
/// `--cluster-signing-duration` is one year).
const NODE_CERT_VALIDITY: Duration = Duration::days(365);

/// The cluster CA's certificate and key, from the signing flags.
pub struct NodeCertificateSigner {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl NodeCertificateSigner {
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let read = |flag: &str, p: &Path| {
            std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("cannot read {flag} {}: {e}", p.display()))
        };
        let ca_pem = read("--cluster-signing-cert-file", cert)?;
        let key_pem = read("--cluster-signing-key-file", key)?;
        let key_pair = KeyPair::from_pem(&key_pem).map_err(|e| {
            anyhow::anyhow!(
                "--cluster-signing-key-file {}: not a PEM private key: {e}",
                key.display()
            )
        })?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key_pair).map_err(|e| {
            anyhow::anyhow!(
                "--cluster-signing-cert-file {}: not a PEM CA certificate: {e}",
                cert.display()
            )
        })?;
        Ok(NodeCertificateSigner { issuer, ca_pem })
    }

    /// Signs `csr_pem`'s key as node `node_name`'s client certificate.
    pub fn sign(&self, node_name: &str, csr_pem: &str) -> Result<String, ApiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            ApiError::bad_request(format!(
                "csrPem is not a valid PEM certificate signing request: {e}"
            ))
        })?;
        let params = &mut csr.params;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, crate::node::NODES_GROUP);
        dn.push(
            DnType::CommonName,
            format!("{}{node_name}", crate::node::NODE_USER_PREFIX),
        );
        params.distinguished_name = dn;
        params.subject_alt_names.clear();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = OffsetDateTime::now_utc();
        // an hour of slack for clocks that differ between machines
        params.not_before = now - Duration::hours(1);
        params.not_after = now + NODE_CERT_VALIDITY;
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(|e| ApiError::internal(format!("signing the certificate of node {node_name}: {e}")))?;
        Ok(cert.pem())
    }
}

/// Node names as the kubelet accepts them (`--node-name`).
fn validate_node_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "nodeName {name:?} is not a valid node name (lowercase letters, digits, '-' and '.')"
        )))
    }
}

/// IssueNodeCertificate for an authorized `user`. A bootstrapper's token
/// (`token`, the bearer token it authenticated with) is consumed: the
/// certificate is returned only if its Secret is deleted at the revision
/// it was checked at, so two concurrent uses cannot both succeed.
pub async fn issue(
    signer: Option<&NodeCertificateSigner>,
    store: &dyn Store,
    user: &UserInfo,
    token: Option<&str>,
    req: &rpc::IssueNodeCertificateRequest,
) -> Result<rpc::IssueNodeCertificateResponse, tonic::Status> {
    let signer = signer.ok_or_else(|| {
        tonic::Status::failed_precondition(
            "this apiserver does not sign node certificates: start it with --cluster-signing-cert-file and --cluster-signing-key-file",
        )
    })?;
    validate_node_name(&req.node_name)?;
    let certificate_pem = signer.sign(&req.node_name, &req.csr_pem)?;
    if is_bootstrapper(user) {
        let token = token.and_then(BootstrapToken::parse).ok_or_else(|| {
            tonic::Status::unauthenticated("the bootstrap token is missing from the request")
        })?;
        let (_, kv) = token.lookup(store)?;
        match store.delete(&kv.key, Some(kv.mod_revision)).await {
            Ok(_) => {}
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {
                return Err(tonic::Status::unauthenticated(format!(
                    "bootstrap token {:?} was used by another request at the same time; create a new one with `rkubectl token create`",
                    token.id
                )))
            }
            Err(e) => return Err(ApiError::from_store(e, <rkube_api::core::v1::Secret as rkube_api::Resource>::info(), "").into()),
        }
        tracing::info!(token_id = %token.id, node = %req.node_name, "bootstrap token consumed: node client certificate issued");
    } else {
        tracing::info!(user = %user.name, node = %req.node_name, "node client certificate issued");
    }
    Ok(rpc::IssueNodeCertificateResponse {
        certificate_pem,
        ca_pem: signer.ca_pem.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_is_the_node_whatever_the_request_asks() {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("ca.key"), ca_key.serialize_pem()).unwrap();
        let signer =
            NodeCertificateSigner::load(&dir.path().join("ca.crt"), &dir.path().join("ca.key")).unwrap();

        let key = KeyPair::generate().unwrap();
        let mut asked = rcgen::CertificateParams::default();
        asked.distinguished_name.push(DnType::CommonName, "admin");
        asked
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        let pem = signer.sign("n1", &csr).unwrap();
        let der = rustls_pemfile_der(&pem);
        let user = crate::authn::user_from_certificate(&der).unwrap();
        assert_eq!(user.name, "system:node:n1");
        assert_eq!(user.groups, ["system:nodes", crate::authn::AUTHENTICATED_GROUP]);

        assert!(signer.sign("n1", "garbage").is_err());
        assert!(validate_node_name("Bad_Name").is_err());
    }

    fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
    }
}
