//! `rkubectl token create [--ttl 24h]`: a bootstrap token, as `kubeadm
//! token create` makes one. It is a Secret `kube-system/bootstrap-token-ID`
//! of type `bootstrap.kubernetes.io/token`; the command prints `ID.SECRET`,
//! which a new node gives to `rkubelet --bootstrap-token` to obtain its
//! client certificate. The apiserver accepts it once (it deletes the Secret
//! when it issues the certificate), and never after its expiration.

use crate::cmd::Context;
use crate::error::CtlError;
use clap::{Args, Subcommand};
use rand::Rng;
use rkube_api::core::v1::Secret;
use rkube_api::Resource;
use rkube_client::Api;
use std::io::Write;
use std::time::Duration;

pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const NAMESPACE: &str = "kube-system";
pub const SECRET_PREFIX: &str = "bootstrap-token-";

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bootstrap token for a new node and print it (`ID.SECRET`).
    Create(CreateArgs),
}

#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    /// How long the token is valid: 24h, 30m, 1h30m; 0 never expires.
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// A note kept in the Secret (`description`).
    #[arg(long)]
    pub description: Option<String>,
}

/// Go-style durations as kubeadm takes them: `24h`, `90m`, `1h30m`, `45s`, `0`.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 24h, 30m, 1h30m; 0 for none)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0u64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let after = &rest[digits..];
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let secs = match &after[..unit_len] {
            "h" => 3600,
            "m" => 60,
            "s" => 1,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(secs)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = &after[unit_len..];
    }
    Ok(Duration::from_secs(total))
}

/// A new random token, `(id, secret)`: 6 and 16 characters of [a-z0-9],
/// Kubernetes' bootstrap token format.
pub fn generate_token() -> (String, String) {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    // ThreadRng is a CSPRNG seeded from the OS.
    let mut rng = rand::thread_rng();
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect()
    };
    let id = pick(6);
    let secret = pick(16);
    (id, secret)
}

/// The Secret that makes `id.secret` a bootstrap token valid for `ttl`
/// (none when zero).
pub fn token_secret(id: &str, secret: &str, ttl: Duration, description: Option<&str>) -> Secret {
    let mut s = Secret {
        r#type: SECRET_TYPE.into(),
        ..Default::default()
    };
    s.metadata_mut().name = format!("{SECRET_PREFIX}{id}");
    s.metadata_mut().namespace = NAMESPACE.into();
    let mut put = |k: &str, v: String| {
        s.data.insert(k.to_string(), v.into_bytes());
    };
    put("token-id", id.to_string());
    put("token-secret", secret.to_string());
    put("usage-bootstrap-authentication", "true".into());
    if !ttl.is_zero() {
        let at = chrono::Utc::now() + chrono::Duration::seconds(ttl.as_secs() as i64);
        put(
            "expiration",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    }
    if let Some(d) = description.filter(|d| !d.is_empty()) {
        put("description", d.to_string());
    }
    s
}

pub async fn run(ctx: &Context, args: &TokenArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    match &args.command {
        TokenCommand::Create(c) => {
            let server = ctx.connect().await?;
            let (id, secret) = generate_token();
            let obj = token_secret(&id, &secret, c.ttl, c.description.as_deref());
            Api::<Secret>::namespaced(server.client().clone(), NAMESPACE)
                .create(&obj)
                .await
                .map_err(|e| server.err(e))?;
            writeln!(out, "{id}.{secret}")?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_like_kubeadm() {
        assert_eq!(parse_ttl("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_ttl("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_ttl("0").unwrap(), Duration::ZERO);
        assert!(parse_ttl("1d").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("").is_err());
    }

    #[test]
    fn tokens_have_the_bootstrap_format() {
        let (id, secret) = generate_token();
        assert_eq!((id.len(), secret.len()), (6, 16));
        let ok = |s: &str| s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        assert!(ok(&id) && ok(&secret));
        assert_ne!(generate_token(), generate_token());
        let s = token_secret(&id, &secret, Duration::from_secs(60), None);
        assert_eq!(s.metadata().name, format!("bootstrap-token-{id}"));
        assert_eq!(s.data["usage-bootstrap-authentication"], b"true");
        assert!(s.data.contains_key("expiration"));
        let forever = token_secret(&id, &secret, Duration::ZERO, None);
        assert!(!forever.data.contains_key("expiration"));
    }
}
