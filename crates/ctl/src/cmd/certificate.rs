//! `rkubectl certificate approve|deny NAME...`: decide CertificateSigningRequests,
//! as kubectl does: add an Approved or Denied condition through the
//! `approval` subresource. A request already decided the same way is left
//! alone; one decided the other way is refused (a decision is final).

use crate::cmd::Context;
use crate::error::CtlError;
use rkube_api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use rkube_api::validation::certificates::{has_condition, CONDITION_APPROVED, CONDITION_DENIED};
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct CertificateArgs {
    #[command(subcommand)]
    pub action: CertificateAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum CertificateAction {
    /// Approve CertificateSigningRequests: their signer then signs them.
    Approve(DecisionArgs),
    /// Deny CertificateSigningRequests: they are never signed.
    Deny(DecisionArgs),
}

#[derive(Debug, clap::Args)]
pub struct DecisionArgs {
    /// The CertificateSigningRequest(s) to decide.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

pub async fn certificate(ctx: &Context, args: &CertificateArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let (decision, other, names, reason) = match &args.action {
        CertificateAction::Approve(a) => (CONDITION_APPROVED, CONDITION_DENIED, &a.names, "KubectlApprove"),
        CertificateAction::Deny(a) => (CONDITION_DENIED, CONDITION_APPROVED, &a.names, "KubectlDeny"),
    };
    let csrs = rkube_client::Api::<CertificateSigningRequest>::all(ctx.client()?);
    for name in names {
        let csr = csrs.get(name).await.map_err(|e| CtlError::usage(e.to_string()))?;
        if has_condition(&csr, decision) {
            writeln!(
                out,
                "certificatesigningrequest.certificates.k8s.io/{name} {} (unchanged)",
                past(decision)
            )?;
            continue;
        }
        if has_condition(&csr, other) {
            return Err(CtlError::usage(format!(
                "certificatesigningrequest {name:?} is already {}; a decision cannot be changed: create a new request",
                past(other)
            )));
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut conditions = csr.status.clone().unwrap_or_default().conditions;
        conditions.push(CertificateSigningRequestCondition {
            r#type: decision.into(),
            status: "True".into(),
            reason: reason.into(),
            message: format!(
                "This CSR was {} by rkubectl certificate {}.",
                past(decision),
                verb(decision)
            ),
            last_update_time: now.clone(),
            last_transition_time: now,
        });
        // the resourceVersion makes it a compare-and-swap: a decision made
        // meanwhile by someone else is not overwritten
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": csr.metadata.as_ref().map(|m| m.resource_version.clone()).unwrap_or_default() },
            "status": { "conditions": conditions },
        });
        csrs.patch_approval_merge(name, &patch)
            .await
            .map_err(|e| CtlError::usage(e.to_string()))?;
        writeln!(
            out,
            "certificatesigningrequest.certificates.k8s.io/{name} {}",
            past(decision)
        )?;
    }
    Ok(())
}

fn past(decision: &str) -> &'static str {
    if decision == CONDITION_APPROVED {
        "approved"
    } else {
        "denied"
    }
}

fn verb(decision: &str) -> &'static str {
    if decision == CONDITION_APPROVED {
        "approve"
    } else {
        "deny"
    }
}
