//! The tokencleaner loop against a secure apiserver in process: bootstrap tokens made by
//! `rkubectl token create` go once they expire, not before; a token still valid and
//! Secrets that are not bootstrap tokens stay.

use anyhow::Result;
use chrono::{DateTime, Utc};
use rkube_api::core::v1::Secret;
use rkube_api::Resource;
use rkube_client::Api;
use rkube_testing::{eventually, TestApiServer};
use std::time::Duration;

mod common;
use common::Cluster;

fn secret(name: &str, kind: &str, expiration: &str) -> Secret {
    let mut s = Secret {
        r#type: kind.into(),
        ..Default::default()
    };
    s.metadata_mut().name = name.into();
    s.metadata_mut().namespace = "kube-system".into();
    s.data.insert("token-id".into(), b"abcdef".to_vec());
    s.data.insert("token-secret".into(), b"0123456789abcdef".to_vec());
    s.data.insert("expiration".into(), expiration.as_bytes().to_vec());
    s
}

/// `rkubectl token create --ttl TTL`: the token's Secret name and expiration.
async fn create_token(
    api: &TestApiServer,
    secrets: &Api<Secret>,
    ttl: &str,
) -> Result<(String, DateTime<Utc>)> {
    let (out, res) = api.rkubectl(&["token", "create", "--ttl", ttl]).await;
    res?;
    let id = out.trim().split('.').next().unwrap_or_default().to_string();
    let name = format!("bootstrap-token-{id}");
    let s = secrets.get(&name).await?;
    let at = String::from_utf8(s.data["expiration"].clone())?;
    Ok((name, DateTime::parse_from_rfc3339(&at)?.with_timezone(&Utc)))
}

#[tokio::test]
async fn expired_bootstrap_tokens_are_deleted_when_they_expire() -> Result<()> {
    let api = TestApiServer::secure(&["n1"]).await?;
    let secrets: Api<Secret> = Api::namespaced(api.client(), "kube-system");
    // made before the loop starts: one long expired, one that is not a token
    secrets
        .create(&secret(
            "bootstrap-token-abcdef",
            "bootstrap.kubernetes.io/token",
            "2020-01-01T00:00:00Z",
        ))
        .await?;
    secrets
        .create(&secret("not-a-token", "Opaque", "2020-01-01T00:00:00Z"))
        .await?;
    let (short, expires) = create_token(&api, &secrets, "4s").await?;
    let (long, _) = create_token(&api, &secrets, "24h").await?;
    let c = Cluster::start(api, "tokencleaner", |_| None).await?;

    let gone = |name: String| {
        let secrets = secrets.clone();
        async move {
            match secrets.get(&name).await {
                Err(e) if e.is_not_found() => Ok(true),
                Ok(_) => Err(anyhow::anyhow!("{name} is still there")),
                Err(e) => Err(e.into()),
            }
        }
    };
    eventually("the expired token is deleted", Duration::from_secs(30), || {
        gone("bootstrap-token-abcdef".into())
    })
    .await?;
    eventually(
        "the 4s token is deleted once expired",
        Duration::from_secs(30),
        || gone(short.clone()),
    )
    .await?;
    let seen_gone = Utc::now();
    assert!(seen_gone >= expires, "deleted before it expired at {expires}");
    secrets.get(&long).await?;
    secrets.get("not-a-token").await?;
    c.stop().await
}
