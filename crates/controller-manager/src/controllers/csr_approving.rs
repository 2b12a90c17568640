//! The csrapproving controller: approves the CertificateSigningRequests a
//! node makes for itself, as Kubernetes' csrapproving does, and leaves
//! every other request for a person (`rkubectl certificate approve`). It
//! never denies: a request it cannot vouch for is simply not approved.
//!
//! * `kubernetes.io/kube-apiserver-client-kubelet`: the request's subject
//!   is exactly `CN=system:node:NAME, O=system:nodes`, it asks for no other
//!   names, its usages are client ones, and it was made either by that very
//!   node (`spec.username` is `system:node:NAME`: a renewal) or by a
//!   bootstrap token (`system:bootstrap:*` in `system:bootstrappers`: the
//!   first certificate of a new node).
//! * `kubernetes.io/kubelet-serving`: made by node NAME for itself (same
//!   subject), server usages, and every DNS name and IP address it asks for
//!   is one of the addresses Node NAME reports in `status.addresses`.
//!   (Kubernetes leaves serving certificates to a person or a third-party
//!   approver; rkube approves them when the names are provably the node's.)
//!
//! `spec.username` and `spec.groups` are written by the apiserver from the
//! caller's credentials, so a node cannot claim to be another.

use super::Error;
use crate::{Context, Shutdown};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use rkube_api::core::v1::Node;
use rkube_api::validation::certificates::{
    csr_der, has_condition, CONDITION_APPROVED, CONDITION_DENIED, SIGNER_KUBELET_CLIENT,
    SIGNER_KUBELET_SERVING,
};
use rkube_api::Resource;
use rkube_client::{Action, Api, Controller, Store};
use std::net::IpAddr;
use std::sync::Arc;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

pub const NAME: &str = "csrapproving";

const NODE_USER_PREFIX: &str = "system:node:";
const NODES_GROUP: &str = "system:nodes";
const BOOTSTRAP_USER_PREFIX: &str = "system:bootstrap:";
const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";

struct State {
    ctx: Arc<Context>,
    csrs: Store<CertificateSigningRequest>,
    nodes: Store<Node>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let csrs = ctx.informers.get::<CertificateSigningRequest>();
        let nodes = ctx.informers.get::<Node>();
        let workers = ctx.config.workers;
        let state = Arc::new(State {
            ctx,
            csrs: csrs.store(),
            nodes: nodes.store(),
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

/// What a request asks for, read from its PEM.
#[derive(Debug, Default, PartialEq)]
pub struct Requested {
    pub common_names: Vec<String>,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// SANs of other kinds (email, URI): never in a node certificate
    pub other_names: usize,
}

/// Parses and checks the signature of a PEM certificate request.
pub fn parse_request(pem: &[u8]) -> Result<Requested, String> {
    let der = csr_der(pem)?;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| format!("not a PKCS#10 certificate request: {e}"))?;
    csr.verify_signature()
        .map_err(|_| "the request's signature does not match its public key".to_string())?;
    let subject = &csr.certification_request_info.subject;
    let strings = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
        it.map(|a| a.as_str().map(str::to_string).unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let mut out = Requested {
        common_names: strings(&mut subject.iter_common_name()),
        organizations: strings(&mut subject.iter_organization()),
        ..Default::default()
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => out.dns_names.push(d.to_string()),
                    GeneralName::IPAddress(b) => match <[u8; 4]>::try_from(*b) {
                        Ok(v4) => out.ip_addresses.push(IpAddr::from(v4)),
                        Err(_) => match <[u8; 16]>::try_from(*b) {
                            Ok(v6) => out.ip_addresses.push(IpAddr::from(v6)),
                            Err(_) => out.other_names += 1,
                        },
                    },
                    _ => out.other_names += 1,
                }
            }
        }
    }
    Ok(out)
}

/// Whether csrapproving approves `csr`: `Ok(reason)` to approve, `Err(why
/// not)` to leave it to a person. `node_addresses(NAME)` gives the
/// addresses Node NAME reports (None: no such node).
pub fn decide(
    csr: &CertificateSigningRequest,
    node_addresses: impl Fn(&str) -> Option<Vec<String>>,
) -> Result<&'static str, String> {
    let spec = csr.spec.clone().unwrap_or_default();
    let req = parse_request(&spec.request)?;
    let node = match (req.common_names.as_slice(), req.organizations.as_slice()) {
        ([cn], [o]) if o == NODES_GROUP => cn
            .strip_prefix(NODE_USER_PREFIX)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("the subject's CN {cn:?} is not system:node:NAME"))?,
        _ => {
            return Err(format!(
                "the subject must be exactly CN=system:node:NAME, O={NODES_GROUP} (got CN {:?}, O {:?})",
                req.common_names, req.organizations
            ))
        }
    };
    let in_group = |g: &str| spec.groups.iter().any(|x| x == g);
    let self_request = spec.username == format!("{NODE_USER_PREFIX}{node}") && in_group(NODES_GROUP);
    let usages_within = |allowed: &[&str], needed: &str| {
        spec.usages.iter().all(|u| allowed.contains(&u.as_str())) && spec.usages.iter().any(|u| u == needed)
    };
    match spec.signer_name.as_str() {
        SIGNER_KUBELET_CLIENT => {
            if !req.dns_names.is_empty() || !req.ip_addresses.is_empty() || req.other_names > 0 {
                return Err("a node client certificate carries no subject alternative names".into());
            }
            if !usages_within(
                &["digital signature", "key encipherment", "client auth"],
                "client auth",
            ) {
                return Err(format!(
                    "usages {:?} are not a node client's (client auth, digital signature, key encipherment)",
                    spec.usages
                ));
            }
            if self_request {
                return Ok("AutoApproved: a node renewing its own client certificate");
            }
            if spec.username.starts_with(BOOTSTRAP_USER_PREFIX) && in_group(BOOTSTRAPPERS_GROUP) {
                return Ok("AutoApproved: a bootstrap token asking for a node client certificate");
            }
            Err(format!(
                "requested by {:?}, neither node {node:?} itself nor a bootstrap token",
                spec.username
            ))
        }
        SIGNER_KUBELET_SERVING => {
            if !self_request {
                return Err(format!(
                    "requested by {:?}: only node {node:?} itself may ask for its serving certificate",
                    spec.username
                ));
            }
            if !usages_within(
                &["digital signature", "key encipherment", "server auth"],
                "server auth",
            ) {
                return Err(format!(
                    "usages {:?} are not a kubelet server's (server auth, digital signature, key encipherment)",
                    spec.usages
                ));
            }
            if req.other_names > 0 || (req.dns_names.is_empty() && req.ip_addresses.is_empty()) {
                return Err("a serving certificate names the node by DNS names and IP addresses only".into());
            }
            let known = node_addresses(node).ok_or_else(|| format!("node {node:?} does not exist"))?;
            let known_ip = |ip: &IpAddr| known.iter().any(|a| a.parse::<IpAddr>().ok() == Some(*ip));
            if let Some(bad) = req.dns_names.iter().find(|d| !known.contains(d)) {
                return Err(format!(
                    "DNS name {bad:?} is not one of node {node:?}'s addresses {known:?}"
                ));
            }
            if let Some(bad) = req.ip_addresses.iter().find(|ip| !known_ip(ip)) {
                return Err(format!(
                    "IP address {bad} is not one of node {node:?}'s addresses {known:?}"
                ));
            }
            Ok("AutoApproved: a node's serving certificate for its own addresses")
        }
        other => Err(format!("signer {other:?} is approved by hand")),
    }
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let Some(csr) = state.csrs.get(&key) else {
        return Ok(Action::await_change());
    };
    if has_condition(&csr, CONDITION_APPROVED) || has_condition(&csr, CONDITION_DENIED) {
        return Ok(Action::await_change());
    }
    let addresses = |node: &str| {
        state.nodes.get(node).map(|n| {
            n.status
                .iter()
                .flat_map(|s| s.addresses.iter().map(|a| a.address.clone()))
                .collect::<Vec<_>>()
        })
    };
    let reason = match decide(&csr, addresses) {
        Ok(reason) => reason,
        Err(why) => {
            tracing::debug!(csr = %key, %why, "not approving; left for rkubectl certificate approve");
            return Ok(Action::await_change());
        }
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut conditions = csr.status.clone().unwrap_or_default().conditions;
    conditions.push(CertificateSigningRequestCondition {
        r#type: CONDITION_APPROVED.into(),
        status: "True".into(),
        reason: "AutoApproved".into(),
        message: format!(
            "Auto approving by {NAME}: {}",
            reason.trim_start_matches("AutoApproved: ")
        ),
        last_update_time: now.clone(),
        last_transition_time: now,
    });
    // the resourceVersion read: a person's decision made meanwhile stands
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": csr.metadata().resource_version },
        "status": { "conditions": conditions },
    });
    match Api::<CertificateSigningRequest>::all(state.ctx.client.clone())
        .patch_approval_merge(csr.name(), &patch)
        .await
    {
        Ok(_) => tracing::info!(csr = %key, "approved: {reason}"),
        Err(e) if e.is_not_found() || e.is_conflict() => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
    use rkube_api::certificates::v1::CertificateSigningRequestSpec;

    fn request(cn: &str, o: &str, sans: Vec<SanType>) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, o);
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
            .into_bytes()
    }

    fn csr(
        signer: &str,
        pem: Vec<u8>,
        user: &str,
        groups: &[&str],
        usages: &[&str],
    ) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: Some(CertificateSigningRequestSpec {
                request: pem,
                signer_name: signer.into(),
                usages: usages.iter().map(|u| u.to_string()).collect(),
                username: user.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const CLIENT: &[&str] = &["digital signature", "client auth"];
    const SERVING: &[&str] = &["digital signature", "key encipherment", "server auth"];

    fn n1_addresses(node: &str) -> Option<Vec<String>> {
        (node == "n1").then(|| vec!["10.0.0.1".to_string(), "n1".to_string()])
    }

    #[test]
    fn a_node_renewing_its_own_client_certificate_is_approved() {
        let c = csr(
            SIGNER_KUBELET_CLIENT,
            request("system:node:n1", NODES_GROUP, vec![]),
            "system:node:n1",
            &[NODES_GROUP, "system:authenticated"],
            CLIENT,
        );
        assert!(decide(&c, n1_addresses).is_ok(), "{:?}", decide(&c, n1_addresses));
    }

    #[test]
    fn a_bootstrap_token_may_ask_for_a_new_nodes_client_certificate() {
        let c = csr(
            SIGNER_KUBELET_CLIENT,
            request("system:node:n9", NODES_GROUP, vec![]),
            "system:bootstrap:abcdef",
            &[BOOTSTRAPPERS_GROUP],
            CLIENT,
        );
        assert!(decide(&c, n1_addresses).is_ok(), "{:?}", decide(&c, n1_addresses));
    }

    #[test]
    fn a_node_asking_for_another_nodes_name_is_not_approved() {
        let c = csr(
            SIGNER_KUBELET_CLIENT,
            request("system:node:n2", NODES_GROUP, vec![]),
            "system:node:n1",
            &[NODES_GROUP],
            CLIENT,
        );
        let why = decide(&c, n1_addresses).unwrap_err();
        assert!(why.contains("neither node \"n2\" itself"), "{why}");
        let serving = csr(
            SIGNER_KUBELET_SERVING,
            request(
                "system:node:n2",
                NODES_GROUP,
                vec![SanType::IpAddress("10.0.0.1".parse().unwrap())],
            ),
            "system:node:n1",
            &[NODES_GROUP],
            SERVING,
        );
        assert!(decide(&serving, n1_addresses).is_err());
    }

    #[test]
    fn a_client_request_with_other_subjects_or_usages_is_not_approved() {
        let admin = csr(
            SIGNER_KUBELET_CLIENT,
            request("system:node:n1", "system:masters", vec![]),
            "system:node:n1",
            &[NODES_GROUP],
            CLIENT,
        );
        assert!(decide(&admin, n1_addresses)
            .unwrap_err()
            .contains("O=system:nodes"));
        let server = csr(
            SIGNER_KUBELET_CLIENT,
            request("system:node:n1", NODES_GROUP, vec![]),
            "system:node:n1",
            &[NODES_GROUP],
            &["server auth", "client auth"],
        );
        assert!(decide(&server, n1_addresses).unwrap_err().contains("usages"));
        let someone = csr(
            SIGNER_KUBELET_CLIENT,
            request("system:node:n1", NODES_GROUP, vec![]),
            "alice",
            &["system:authenticated"],
            CLIENT,
        );
        assert!(decide(&someone, n1_addresses).is_err());
    }

    #[test]
    fn a_serving_request_is_approved_only_for_the_nodes_own_addresses() {
        let own = csr(
            SIGNER_KUBELET_SERVING,
            request(
                "system:node:n1",
                NODES_GROUP,
                vec![
                    SanType::IpAddress("10.0.0.1".parse().unwrap()),
                    SanType::DnsName("n1".try_into().unwrap()),
                ],
            ),
            "system:node:n1",
            &[NODES_GROUP],
            SERVING,
        );
        assert!(
            decide(&own, n1_addresses).is_ok(),
            "{:?}",
            decide(&own, n1_addresses)
        );
        let foreign = csr(
            SIGNER_KUBELET_SERVING,
            request(
                "system:node:n1",
                NODES_GROUP,
                vec![SanType::DnsName("kubernetes.default.svc".try_into().unwrap())],
            ),
            "system:node:n1",
            &[NODES_GROUP],
            SERVING,
        );
        assert!(decide(&foreign, n1_addresses)
            .unwrap_err()
            .contains("kubernetes.default.svc"));
    }

    #[test]
    fn a_tampered_request_is_not_approved() {
        let mut pem = request("system:node:n1", NODES_GROUP, vec![]);
        let text = String::from_utf8(pem.clone()).unwrap();
        // flip one base64 character inside the body: the signature no longer matches
        let at = text.find("-----\n").unwrap() + 40;
        pem[at] = if pem[at] == b'A' { b'B' } else { b'A' };
        let c = csr(
            SIGNER_KUBELET_CLIENT,
            pem,
            "system:node:n1",
            &[NODES_GROUP],
            CLIENT,
        );
        assert!(decide(&c, n1_addresses).is_err());
    }
}
