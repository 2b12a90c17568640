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
//!
//! IssueKubeletServingCertificate signs a kubelet's serving certificate the
//! same way: same CA, same subject, server-auth usage, and the IP addresses
//! and DNS names the kubelet serves on, so the apiserver can verify the
//! kubelet it calls for logs, exec and metrics.

use crate::authn::{is_bootstrapper, BootstrapToken, UserInfo};
use crate::error::ApiError;
use rcgen::{
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
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
        let (ca_pem, issuer) =
            rkube_client::pki::load_signing_ca(cert, key).map_err(|e| anyhow::anyhow!(e.0))?;
        Ok(NodeCertificateSigner { issuer, ca_pem })
    }

    /// Signs `csr_pem`'s key as node `node_name`'s client certificate.
    pub fn sign(&self, node_name: &str, csr_pem: &str) -> Result<String, ApiError> {
        self.sign_for_node(
            node_name,
            csr_pem,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    /// Signs `csr_pem`'s key as node `node_name`'s kubelet serving
    /// certificate for `sans` (checked with [`serving_names`]).
    pub fn sign_serving(
        &self,
        node_name: &str,
        csr_pem: &str,
        sans: Vec<SanType>,
    ) -> Result<String, ApiError> {
        self.sign_for_node(node_name, csr_pem, sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// The subject is always the node, whatever the request says; `sans`
    /// and `usage` replace the request's too.
    fn sign_for_node(
        &self,
        node_name: &str,
        csr_pem: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<String, ApiError> {
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
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
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

/// Writes who is asking into a new CertificateSigningRequest's
/// `spec.username`, `uid` and `groups`, whatever the request said, as
/// Kubernetes does: the approver trusts these fields to tell a node asking
/// for its own name from one asking for another's.
pub fn stamp_requester(object: &mut Option<prost_types::Any>, user: &UserInfo) -> Result<(), ApiError> {
    use rkube_api::certificates::v1::CertificateSigningRequest;
    let Some(any) = object.as_ref() else {
        return Ok(());
    };
    let mut csr: CertificateSigningRequest = rkube_api::from_any(any).map_err(|e| {
        ApiError::bad_request(format!("the CertificateSigningRequest cannot be decoded: {e}"))
    })?;
    let spec = csr.spec.get_or_insert_with(Default::default);
    spec.username = user.name.clone();
    spec.uid = user.uid.clone();
    spec.groups = user.groups.clone();
    *object = Some(rkube_api::to_any(&csr));
    Ok(())
}

/// Most addresses and names one serving certificate may carry: a node has
/// a few; more is a mistake or an attempt to pass for other hosts.
pub const MAX_SERVING_NAMES: usize = 16;

/// The subject alternative names of a kubelet serving certificate: every
/// requested IP address must parse (and be a unicast address a client
/// could dial), every DNS name must be a lowercase RFC 1123 name without
/// wildcards, at least one of either and at most [`MAX_SERVING_NAMES`].
pub fn serving_names(ips: &[String], dns_names: &[String]) -> Result<Vec<SanType>, ApiError> {
    let total = ips.len() + dns_names.len();
    if total == 0 {
        return Err(ApiError::bad_request(
            "ipAddresses and dnsNames are both empty: a serving certificate needs the addresses the kubelet serves on",
        ));
    }
    if total > MAX_SERVING_NAMES {
        return Err(ApiError::bad_request(format!(
            "{total} ipAddresses and dnsNames requested: a kubelet serving certificate may carry at most {MAX_SERVING_NAMES}"
        )));
    }
    let mut sans = Vec::with_capacity(total);
    for ip in ips {
        let parsed: std::net::IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| ApiError::bad_request(format!("ipAddresses: {ip:?} is not an IP address")))?;
        if parsed.is_unspecified() || parsed.is_multicast() {
            return Err(ApiError::bad_request(format!(
                "ipAddresses: {ip:?} is not an address a client can connect to; give the node's own address (--node-ip)"
            )));
        }
        sans.push(SanType::IpAddress(parsed));
    }
    for name in dns_names {
        if !rkube_api::validation::is_dns1123_subdomain(name) {
            return Err(ApiError::bad_request(format!(
                "dnsNames: {name:?} is not a DNS name (lowercase letters, digits, '-' and '.', labels of at most 63 characters; no wildcards)"
            )));
        }
        let ia5 = name
            .clone()
            .try_into()
            .map_err(|_| ApiError::bad_request(format!("dnsNames: {name:?} is not an ASCII DNS name")))?;
        sans.push(SanType::DnsName(ia5));
    }
    Ok(sans)
}

/// IssueKubeletServingCertificate for an authenticated `user`, who must be
/// a node: the certificate is for that node and no other.
///
/// Kubernetes does not auto-approve kubelet serving CSRs (signer
/// `kubernetes.io/kubelet-serving`): an operator or a custom approver
/// checks that the requested addresses belong to the node. We sign the
/// node's own request at once because only an authenticated node can ask,
/// only for its own name (the subject comes from its credentials, not the
/// request), with the checks of [`serving_names`]. What an approver would
/// add is that the addresses are the node's: a node that claims another's
/// address can pass for that kubelet to a client whose traffic to it it
/// already intercepts. rkube accepts that for one-call issuance; a cluster
/// that does not can give kubelets --tls-cert-file instead.
pub fn issue_serving(
    signer: Option<&NodeCertificateSigner>,
    user: &UserInfo,
    req: &rpc::IssueKubeletServingCertificateRequest,
) -> Result<rpc::IssueKubeletServingCertificateResponse, tonic::Status> {
    let node_name = serving_node(user)?;
    let signer = signer.ok_or_else(|| {
        tonic::Status::failed_precondition(
            "this apiserver does not sign kubelet serving certificates: start it with --cluster-signing-cert-file and --cluster-signing-key-file, or give the kubelet --tls-cert-file and --tls-private-key-file",
        )
    })?;
    let sans = serving_names(&req.ip_addresses, &req.dns_names)?;
    let certificate_pem = signer.sign_serving(node_name, &req.csr_pem, sans)?;
    tracing::info!(node = %node_name, ips = ?req.ip_addresses, dns = ?req.dns_names, "kubelet serving certificate issued");
    Ok(rpc::IssueKubeletServingCertificateResponse {
        certificate_pem,
        ca_pem: signer.ca_pem.clone(),
    })
}

/// The node `user` is, or PERMISSION_DENIED: only `system:node:NAME` in
/// group `system:nodes` may have a kubelet serving certificate signed.
pub fn serving_node(user: &UserInfo) -> Result<&str, tonic::Status> {
    crate::node::node_name(user).ok_or_else(|| {
        tonic::Status::permission_denied(format!(
            "User {:?} cannot have a kubelet serving certificate signed: only a node (user system:node:NAME in group system:nodes) may, for itself; run the kubelet with its node credentials (--kubeconfig, or --bootstrap-token to obtain them)",
            user.name
        ))
    })
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

    fn signer(dir: &Path) -> NodeCertificateSigner {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("ca.key"), ca_key.serialize_pem()).unwrap();
        NodeCertificateSigner::load(&dir.join("ca.crt"), &dir.join("ca.key")).unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn serving_names_must_parse_and_be_few() {
        let sans = serving_names(
            &strings(&["10.0.0.5", "fd00::5"]),
            &strings(&["node-a", "node-a.example.com"]),
        )
        .unwrap();
        assert_eq!(sans.len(), 4);
        assert_eq!(sans[0], SanType::IpAddress("10.0.0.5".parse().unwrap()));

        let err =
            |ips: &[&str], dns: &[&str]| serving_names(&strings(ips), &strings(dns)).unwrap_err().message;
        assert!(err(&["10.0.0.300"], &[]).contains(r#""10.0.0.300" is not an IP address"#));
        assert!(err(&["0.0.0.0"], &[]).contains("--node-ip"));
        assert!(err(&[], &["*.example.com"]).contains("is not a DNS name"));
        assert!(err(&[], &["Node_A"]).contains("is not a DNS name"));
        assert!(err(&[], &["-a.example"]).contains("is not a DNS name"));
        assert!(err(&[], &[]).contains("both empty"));
        let many: Vec<String> = (1..=17).map(|i| format!("10.0.0.{i}")).collect();
        let e = serving_names(&many, &[]).unwrap_err().message;
        assert!(e.contains("at most 16"), "{e}");
        assert!(serving_names(&many[..16], &[]).is_ok());
    }

    #[test]
    fn only_a_node_gets_a_serving_certificate_for_itself() {
        let dir = tempfile::tempdir().unwrap();
        let signer = signer(dir.path());
        let key = KeyPair::generate().unwrap();
        let mut asked = rcgen::CertificateParams::default();
        asked
            .distinguished_name
            .push(DnType::CommonName, "system:node:other");
        let req = rpc::IssueKubeletServingCertificateRequest {
            csr_pem: asked.serialize_request(&key).unwrap().pem().unwrap(),
            ip_addresses: strings(&["10.0.0.5"]),
            dns_names: strings(&["n1"]),
        };
        let user = |name: &str, groups: &[&str]| UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: strings(groups),
        };

        // not a node: refused, naming the user
        for who in [
            user("admin", &["system:masters"]),
            user("system:node:n1", &["system:authenticated"]),
            user("system:bootstrap:abcdef", &["system:bootstrappers"]),
            UserInfo::anonymous(),
        ] {
            let e = issue_serving(Some(&signer), &who, &req).unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{who:?}");
            assert!(
                e.message().contains(&format!("User {:?}", who.name)),
                "{}",
                e.message()
            );
        }

        // a node: its own name whatever the request says, server auth, the SANs
        let node = user("system:node:n1", &["system:nodes", "system:authenticated"]);
        let e = issue_serving(None, &node, &req).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message().contains("--cluster-signing-cert-file"),
            "{}",
            e.message()
        );
        let issued = issue_serving(Some(&signer), &node, &req).unwrap();
        let der = rustls_pemfile_der(&issued.certificate_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let user = crate::authn::user_from_certificate(&der).unwrap();
        assert_eq!(user.name, "system:node:n1");
        assert_eq!(user.groups, ["system:nodes", crate::authn::AUTHENTICATED_GROUP]);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        let names: Vec<String> = san.general_names.iter().map(|n| format!("{n}")).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().any(|n| n.contains("n1")), "{names:?}");
        assert_eq!(
            issued.ca_pem,
            std::fs::read_to_string(dir.path().join("ca.crt")).unwrap()
        );

        // bad names are refused before anything is signed
        let bad = rpc::IssueKubeletServingCertificateRequest {
            ip_addresses: strings(&["not-an-ip"]),
            ..req.clone()
        };
        let e = issue_serving(Some(&signer), &node, &bad).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
    }

    fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
    }
}
