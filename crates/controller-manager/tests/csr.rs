//! csrapproving and csrsigning against a secure apiserver in process: a
//! node's request for its own client certificate is approved and signed
//! with the cluster CA for `min(expirationSeconds, --cluster-signing-duration)`,
//! and the certificate works; a node asking for another node's name is not
//! approved; a request for another signer waits for `rkubectl certificate
//! approve`, and a denied one is never signed.

use anyhow::{Context as _, Result};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rkube_api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use rkube_api::core::v1::Node;
use rkube_api::Resource;
use rkube_client::{Api, Client, ClientConfig};
use rkube_testing::{eventually, TestApiServer};
use std::time::Duration;

mod common;
use common::Cluster;

fn request(
    name: &str,
    cn: &str,
    o: &str,
    signer: &str,
    usages: &[&str],
) -> (KeyPair, CertificateSigningRequest) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, o);
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    let mut csr = CertificateSigningRequest {
        spec: Some(CertificateSigningRequestSpec {
            request: params
                .serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap()
                .into_bytes(),
            signer_name: signer.into(),
            usages: usages.iter().map(|u| u.to_string()).collect(),
            expiration_seconds: Some(3600),
            // whatever the requester claims, the apiserver writes who it is
            username: "system:admin".into(),
            groups: vec!["system:masters".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    csr.metadata_mut().name = name.into();
    (key, csr)
}

fn conditions(csr: &CertificateSigningRequest) -> Vec<String> {
    csr.status
        .iter()
        .flat_map(|s| s.conditions.iter().map(|c| c.r#type.clone()))
        .collect()
}

async fn signed(csrs: &Api<CertificateSigningRequest>, name: &str) -> Result<Vec<u8>> {
    eventually(&format!("{name} is signed"), Duration::from_secs(30), || async {
        let c = csrs.get(name).await?;
        match c.status.map(|s| s.certificate).filter(|c| !c.is_empty()) {
            Some(cert) => Ok(Some(cert)),
            None => Err(anyhow::anyhow!(
                "{name} has no certificate yet, conditions {:?}",
                conditions(&csrs.get(name).await?)
            )),
        }
    })
    .await
}

#[tokio::test]
async fn a_nodes_own_client_request_is_approved_signed_and_works() -> Result<()> {
    let api = TestApiServer::secure(&["n1", "n2"]).await?;
    let pki = api.pki();
    let node_client = api.client_as("node-n1")?;
    let node_csrs: Api<CertificateSigningRequest> = Api::all(node_client);
    let admin_csrs: Api<CertificateSigningRequest> = Api::all(api.client());
    // a node with that name, for the new certificate to read
    let mut n1 = Node::default();
    n1.metadata_mut().name = "n1".into();
    match Api::<Node>::all(api.client()).create(&n1).await {
        Err(e) if !e.is_already_exists() => return Err(e.into()),
        _ => {}
    }

    const CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
    let usages = ["digital signature", "key encipherment", "client auth"];
    // before the loops run: node n1 asks for n2's identity
    let (_, theft) = request("n1-wants-n2", "system:node:n2", "system:nodes", CLIENT, &usages);
    node_csrs.create(&theft).await?;
    let c = Cluster::start_with(
        api,
        "csrapproving,csrsigning",
        |config| {
            config.cluster_signing_cert_file = Some(pki.join("ca.crt"));
            config.cluster_signing_key_file = Some(pki.join("ca.key"));
            config.cluster_signing_duration = Duration::from_secs(120);
        },
        |_| None,
    )
    .await?;

    let (key, own) = request("n1-renewal", "system:node:n1", "system:nodes", CLIENT, &usages);
    let created = node_csrs.create(&own).await?;
    let spec = created.spec.clone().unwrap_or_default();
    assert_eq!(
        spec.username, "system:node:n1",
        "the apiserver writes the requester"
    );
    assert!(
        spec.groups.contains(&"system:nodes".to_string()),
        "{:?}",
        spec.groups
    );

    let pem = signed(&node_csrs, "n1-renewal").await?;
    let stored = node_csrs.get("n1-renewal").await?;
    assert_eq!(conditions(&stored), ["Approved"]);
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem)?;
    let cert = block.parse_x509()?;
    assert_eq!(cert.subject().to_string(), "O=system:nodes, CN=system:node:n1");
    let lifetime = cert.validity().not_after.timestamp() - chrono::Utc::now().timestamp();
    // --cluster-signing-duration 2m beats expirationSeconds 3600
    assert!((90..=121).contains(&lifetime), "lifetime {lifetime}s");

    // the new certificate is an identity the apiserver accepts as node n1
    let renewed = Client::from_config(&ClientConfig {
        server: c.api.url().to_string(),
        certificate_authority: Some(pki.join("ca.crt")),
        client_certificate_data: Some(pem.clone()),
        client_key_data: Some(key.serialize_pem().into_bytes()),
        ..ClientConfig::default()
    })?;
    let node = Api::<Node>::all(renewed)
        .get("n1")
        .await
        .context("node n1 reading itself with its renewed certificate")?;
    assert_eq!(node.name(), "n1");

    // a request for a person's signer is left alone until approved by hand
    let (_, person) = request(
        "alice",
        "alice",
        "developers",
        "kubernetes.io/kube-apiserver-client",
        &["digital signature", "client auth"],
    );
    admin_csrs.create(&person).await?;
    let (_, denied) = request(
        "mallory",
        "mallory",
        "system:masters",
        "kubernetes.io/kube-apiserver-client",
        &["client auth"],
    );
    admin_csrs.create(&denied).await?;
    assert!(conditions(&admin_csrs.get("alice").await?).is_empty());
    let (out, res) = c.api.rkubectl(&["certificate", "deny", "mallory"]).await;
    res?;
    assert!(
        out.contains("certificatesigningrequest.certificates.k8s.io/mallory denied"),
        "{out}"
    );
    let (out, res) = c.api.rkubectl(&["certificate", "approve", "alice"]).await;
    res?;
    assert!(out.contains("alice approved"), "{out}");
    signed(&admin_csrs, "alice").await?;
    // a decision is final
    let (_, res) = c.api.rkubectl(&["certificate", "approve", "mallory"]).await;
    let err = res.expect_err("approving a denied request").to_string();
    assert!(err.contains("already denied"), "{err}");

    // by now the loops have seen the theft attempt (made first): never approved
    let theft = node_csrs.get("n1-wants-n2").await?;
    assert!(conditions(&theft).is_empty(), "{:?}", conditions(&theft));
    let mallory = admin_csrs.get("mallory").await?;
    assert_eq!(conditions(&mallory), ["Denied"]);
    assert!(mallory.status.unwrap_or_default().certificate.is_empty());
    c.stop().await
}
