//! The tokencleaner controller: a bootstrap token (a Secret of type
//! `bootstrap.kubernetes.io/token` in kube-system) whose `expiration` has
//! passed is deleted, as Kubernetes' tokencleaner does. The apiserver
//! already refuses an expired token; deleting it keeps expired credentials
//! from piling up in the store. A token not yet expired is looked at again
//! when it expires.

use super::Error;
use crate::{Context, Shutdown};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::core::v1::Secret;
use rkube_api::Resource;
use rkube_client::{Action, Api, Controller, DeleteParams, Preconditions, Store};
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "tokencleaner";

const NAMESPACE: &str = "kube-system";
const TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";

struct State {
    ctx: Arc<Context>,
    secrets: Store<Secret>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let informer = ctx.informers.get::<Secret>();
        let workers = ctx.config.workers;
        let state = Arc::new(State {
            ctx,
            secrets: informer.store(),
        });
        Controller::new(NAME, state, reconcile)
            .primary(&informer)
            .workers(workers)
            .resync(Duration::from_secs(300))
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

/// When a bootstrap token Secret expires: `None` for other Secrets and for
/// tokens without an `expiration`; an unreadable one counts as expired, as
/// Kubernetes' cleaner treats it (the apiserver refuses it anyway).
pub fn expiry(secret: &Secret) -> Option<DateTime<Utc>> {
    if secret.namespace() != NAMESPACE || secret.r#type != TOKEN_TYPE {
        return None;
    }
    let raw = secret.data.get("expiration")?;
    let text = String::from_utf8_lossy(raw);
    Some(
        DateTime::parse_from_rfc3339(text.trim())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
    )
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let Some(secret) = state.secrets.get(&key) else {
        return Ok(Action::await_change());
    };
    let Some(at) = expiry(&secret) else {
        return Ok(Action::await_change());
    };
    let left = at - Utc::now();
    if left > chrono::TimeDelta::zero() {
        // a second late rather than early: the clock's rounding must not make us look too soon
        let wait = left.to_std().unwrap_or_default() + Duration::from_secs(1);
        return Ok(Action::requeue(wait));
    }
    // only the Secret that was read: a token made again under the same name is not ours
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(secret.metadata().uid.clone()),
            resource_version: Some(secret.metadata().resource_version.clone()),
        }),
        ..Default::default()
    };
    match Api::<Secret>::namespaced(state.ctx.client.clone(), NAMESPACE)
        .delete(secret.name(), &params)
        .await
    {
        Ok(_) => {
            tracing::info!(secret = %key, expired = %at.to_rfc3339(), "deleted an expired bootstrap token")
        }
        Err(e) if e.is_not_found() || e.is_conflict() => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::meta::v1::ObjectMeta;

    fn token(namespace: &str, kind: &str, expiration: Option<&str>) -> Secret {
        let mut s = Secret {
            metadata: Some(ObjectMeta {
                name: "bootstrap-token-abcdef".into(),
                namespace: namespace.into(),
                ..Default::default()
            }),
            r#type: kind.into(),
            ..Default::default()
        };
        if let Some(e) = expiration {
            s.data.insert("expiration".into(), e.as_bytes().to_vec());
        }
        s
    }

    #[test]
    fn only_bootstrap_tokens_with_an_expiration_expire() {
        let at = "2030-01-02T03:04:05Z";
        assert_eq!(
            expiry(&token(NAMESPACE, TOKEN_TYPE, Some(at))).map(|t| t.to_rfc3339()),
            Some("2030-01-02T03:04:05+00:00".into())
        );
        assert_eq!(expiry(&token(NAMESPACE, TOKEN_TYPE, None)), None);
        assert_eq!(expiry(&token("default", TOKEN_TYPE, Some(at))), None);
        assert_eq!(expiry(&token(NAMESPACE, "Opaque", Some(at))), None);
        // unreadable: gone at once
        assert_eq!(
            expiry(&token(NAMESPACE, TOKEN_TYPE, Some("tomorrow"))),
            Some(DateTime::<Utc>::MIN_UTC)
        );
    }
}
