//! CertificateSigningRequests (certificates.k8s.io/v1), in Kubernetes'
//! words: a PEM CERTIFICATE REQUEST, a signer rkube knows, key usages from
//! Kubernetes' list, and Approved/Denied conditions that never coexist.

use super::meta::{validate_meta, NameRule};
use super::{Errors, FieldError, Validate};
use crate::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use base64::Engine;

/// Client certificates for any user, approved by hand.
pub const SIGNER_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// A kubelet's client certificate (`system:node:NAME` in `system:nodes`).
pub const SIGNER_KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// A kubelet's serving certificate (its node's names and addresses).
pub const SIGNER_KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

/// The signers rkube's controller-manager can sign for.
pub const SIGNERS: &[&str] = &[
    SIGNER_APISERVER_CLIENT,
    SIGNER_KUBELET_CLIENT,
    SIGNER_KUBELET_SERVING,
];

/// Kubernetes' key usages (certificates/v1 KeyUsage).
pub const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

pub const CONDITION_APPROVED: &str = "Approved";
pub const CONDITION_DENIED: &str = "Denied";
pub const CONDITION_FAILED: &str = "Failed";

/// Kubernetes' shortest certificate: ten minutes.
pub const MIN_EXPIRATION_SECONDS: i32 = 600;

/// The DER bytes of the one PEM `CERTIFICATE REQUEST` block in `pem`, or
/// what is wrong with it.
pub fn csr_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "must be PEM text, not binary DER".to_string())?;
    const BEGIN: &str = "-----BEGIN CERTIFICATE REQUEST-----";
    const END: &str = "-----END CERTIFICATE REQUEST-----";
    let start = text.find(BEGIN).ok_or(
        "must contain a PEM block of type CERTIFICATE REQUEST (-----BEGIN CERTIFICATE REQUEST-----)",
    )?;
    let body = &text[start + BEGIN.len()..];
    let end = body
        .find(END)
        .ok_or("the CERTIFICATE REQUEST block has no -----END CERTIFICATE REQUEST----- line")?;
    if body[end + END.len()..].contains("-----BEGIN") {
        return Err("must contain exactly one PEM block".into());
    }
    let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the CERTIFICATE REQUEST block is not valid base64: {e}"))?;
    // a PKCS#10 request is one DER SEQUENCE
    if der.first() != Some(&0x30) || der.len() < 16 {
        return Err("the CERTIFICATE REQUEST block is not a DER-encoded PKCS#10 request".into());
    }
    Ok(der)
}

/// Whether `csr` has a condition of `kind` with status True.
pub fn has_condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == kind && c.status == "True")
    })
}

fn validate_conditions(conditions: &[CertificateSigningRequestCondition], e: &mut Errors) {
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in conditions.iter().enumerate() {
        let f = format!("status.conditions[{i}]");
        if c.r#type.is_empty() {
            e.required(format!("{f}.type"), "");
        }
        if seen.contains(&c.r#type.as_str())
            && [CONDITION_APPROVED, CONDITION_DENIED, CONDITION_FAILED].contains(&c.r#type.as_str())
        {
            e.duplicate(format!("{f}.type"), &c.r#type);
        }
        seen.push(&c.r#type);
        e.one_of(format!("{f}.status"), &c.status, &["True", "False", "Unknown"]);
        if [CONDITION_APPROVED, CONDITION_DENIED].contains(&c.r#type.as_str()) && c.status != "True" {
            e.not_supported(format!("{f}.status"), &c.status, &["True"]);
        }
    }
    if seen.contains(&CONDITION_APPROVED) && seen.contains(&CONDITION_DENIED) {
        e.invalid(
            "status.conditions",
            CONDITION_APPROVED,
            "Approved and Denied conditions are mutually exclusive",
        );
    }
}

impl Validate for CertificateSigningRequest {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        let spec = self.spec.clone().unwrap_or_default();
        if spec.request.is_empty() {
            e.required(
                "spec.request",
                "a PEM CERTIFICATE REQUEST (rkubectl and the kubelet make one)",
            );
        } else if let Err(detail) = csr_der(&spec.request) {
            e.invalid("spec.request", "<PEM data>", detail);
        }
        if spec.signer_name.is_empty() {
            e.required("spec.signerName", "");
        } else {
            e.one_of("spec.signerName".into(), &spec.signer_name, SIGNERS);
        }
        if let Some(secs) = spec.expiration_seconds {
            if secs < MIN_EXPIRATION_SECONDS {
                e.invalid(
                    "spec.expirationSeconds",
                    secs,
                    format!(
                        "may not specify a duration less than {MIN_EXPIRATION_SECONDS} seconds (10 minutes)"
                    ),
                );
            }
        }
        if spec.usages.is_empty() {
            e.required("spec.usages", "at least one key usage, such as \"client auth\"");
        }
        for (i, u) in spec.usages.iter().enumerate() {
            e.one_of(format!("spec.usages[{i}]"), u, USAGES);
            if spec.usages[..i].contains(u) {
                e.duplicate(format!("spec.usages[{i}]"), u);
            }
        }
        if let Some(status) = &self.status {
            validate_conditions(&status.conditions, &mut e);
        }
        e.0
    }

    /// As Kubernetes: the request is fixed once created; a decision, once
    /// made, is not taken back.
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut e = Errors::default();
        if self.spec != old.spec {
            e.forbidden("spec", "field is immutable");
        }
        for kind in [CONDITION_APPROVED, CONDITION_DENIED] {
            if has_condition(old, kind) && !has_condition(self, kind) {
                e.forbidden(
                    "status.conditions",
                    format!("updates may not remove a condition of type {kind:?}"),
                );
            }
        }
        let old_cert = old
            .status
            .as_ref()
            .map(|s| s.certificate.as_slice())
            .unwrap_or_default();
        let new_cert = self
            .status
            .as_ref()
            .map(|s| s.certificate.as_slice())
            .unwrap_or_default();
        if !old_cert.is_empty() && old_cert != new_cert {
            e.forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            );
        }
        e.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::v1::{CertificateSigningRequestSpec, CertificateSigningRequestStatus};
    use crate::meta::v1::ObjectMeta;

    // shaped like a request: validation checks the PEM block and the DER
    // SEQUENCE tag; the signer parses the request itself
    const PEM: &str = "-----BEGIN CERTIFICATE REQUEST-----\nMIHKMHICAQAwEDEOMAwGA1UEAwwFaGVsbG8wWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAS8\n-----END CERTIFICATE REQUEST-----\n";

    fn csr(signer: &str, usages: &[&str]) -> CertificateSigningRequest {
        CertificateSigningRequest {
            metadata: Some(ObjectMeta {
                name: "node-csr-1".into(),
                ..Default::default()
            }),
            spec: Some(CertificateSigningRequestSpec {
                request: PEM.as_bytes().to_vec(),
                signer_name: signer.into(),
                usages: usages.iter().map(|u| u.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn a_kubelet_client_request_is_valid() {
        let c = csr(SIGNER_KUBELET_CLIENT, &["digital signature", "client auth"]);
        assert_eq!(c.validate(), Vec::new());
    }

    #[test]
    fn unknown_signer_usage_and_bad_pem_are_named() {
        let mut c = csr("example.com/mine", &["client auth", "flying"]);
        c.spec.as_mut().unwrap().request =
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec();
        c.spec.as_mut().unwrap().expiration_seconds = Some(60);
        let errors = c.validate();
        assert_eq!(
            fields(&errors),
            [
                "spec.request",
                "spec.signerName",
                "spec.expirationSeconds",
                "spec.usages[1]"
            ]
        );
        assert!(
            errors[0].to_string().contains("CERTIFICATE REQUEST"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn approved_and_denied_exclude_each_other_and_stick() {
        let mut c = csr(SIGNER_KUBELET_CLIENT, &["client auth"]);
        let cond = |t: &str| CertificateSigningRequestCondition {
            r#type: t.into(),
            status: "True".into(),
            ..Default::default()
        };
        c.status = Some(CertificateSigningRequestStatus {
            conditions: vec![cond(CONDITION_APPROVED), cond(CONDITION_DENIED)],
            certificate: Vec::new(),
        });
        assert_eq!(fields(&c.validate()), ["status.conditions"]);
        let mut approved = c.clone();
        approved.status.as_mut().unwrap().conditions = vec![cond(CONDITION_APPROVED)];
        let mut undone = approved.clone();
        undone.status.as_mut().unwrap().conditions.clear();
        assert_eq!(fields(&undone.validate_update(&approved)), ["status.conditions"]);
    }
}
