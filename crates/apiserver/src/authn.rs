//! Authentication: who is calling. Two authenticators, as Kubernetes has
//! them: the TLS client certificate (verified by rustls against
//! `--client-ca-file` during the handshake; user = subject CN, groups =
//! subject O) and static bearer tokens from `--token-auth-file`. With
//! neither configured, authentication is off and every caller is
//! `system:anonymous`, which is how the apiserver behaved before security
//! existed. With either configured, a request without valid credentials is
//! refused with UNAUTHENTICATED. Health endpoints are served elsewhere
//! (plain HTTP) and stay open.
//!
//! Bootstrap tokens (`ID.SECRET`, Kubernetes' format) are a third
//! authenticator, on when the apiserver can sign node certificates
//! (`--cluster-signing-cert-file`): each is a Secret
//! `kube-system/bootstrap-token-ID` of type `bootstrap.kubernetes.io/token`
//! (`rkubectl token create`), and authenticates as
//! `system:bootstrap:ID` in group `system:bootstrappers`, which may only
//! have a node client certificate signed (see `authz`).
//!
//! ServiceAccount tokens (JWTs the apiserver signed, see `serviceaccount`)
//! are the fourth, on with `--service-account-signing-key-file`: user
//! `system:serviceaccount:NS:NAME`, groups `system:serviceaccounts` and
//! `system:serviceaccounts:NS`.

use crate::serviceaccount::TokenSigner;
use rkube_api::core::v1::Secret;
use rkube_api::Resource;
use rkube_store::{KeyValue, Store};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tonic::{Code, Request, Status};

pub const ANONYMOUS: &str = "system:anonymous";
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// Members are allowed everything, whatever RBAC says (as Kubernetes).
pub const MASTERS_GROUP: &str = "system:masters";
/// The group of every bootstrap token's user.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
pub const BOOTSTRAP_USER_PREFIX: &str = "system:bootstrap:";
/// Where bootstrap token Secrets live, their name prefix and type.
pub const BOOTSTRAP_TOKEN_NAMESPACE: &str = "kube-system";
pub const BOOTSTRAP_TOKEN_SECRET_PREFIX: &str = "bootstrap-token-";
pub const BOOTSTRAP_TOKEN_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";

/// Whether `user` authenticated with a bootstrap token.
pub fn is_bootstrapper(user: &UserInfo) -> bool {
    user.name.starts_with(BOOTSTRAP_USER_PREFIX) && user.groups.iter().any(|g| g == BOOTSTRAPPERS_GROUP)
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn anonymous() -> Self {
        UserInfo {
            name: ANONYMOUS.into(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED_GROUP.into()],
        }
    }

    fn authenticated(name: String, uid: String, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            groups.push(AUTHENTICATED_GROUP.into());
        }
        UserInfo { name, uid, groups }
    }
}

/// The configured authenticators.
#[derive(Default)]
pub struct Authenticator {
    /// Client certificates are checked (a client CA is configured).
    client_certs: bool,
    /// Bearer token → user, from `--token-auth-file`.
    tokens: Option<HashMap<String, UserInfo>>,
    /// Where bootstrap token Secrets are looked up, when they are accepted.
    bootstrap: Option<Arc<dyn Store>>,
    /// ServiceAccount tokens: their signer, and where the accounts and
    /// pods they name are looked up.
    service_accounts: Option<(Arc<TokenSigner>, Arc<dyn Store>)>,
}

impl std::fmt::Debug for Authenticator {
    // Tokens stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("client_certs", &self.client_certs)
            .field("static_tokens", &self.tokens.as_ref().map(HashMap::len))
            .field("bootstrap_tokens", &self.bootstrap.is_some())
            .field("service_account_tokens", &self.service_accounts.is_some())
            .finish()
    }
}

impl Authenticator {
    /// Authentication off: everyone is anonymous.
    pub fn disabled() -> Self {
        Self::default()
    }

    pub fn new(client_certs: bool, token_file: Option<&Path>) -> anyhow::Result<Self> {
        let tokens = match token_file {
            Some(path) => Some(load_token_file(path)?),
            None => None,
        };
        Ok(Authenticator {
            client_certs,
            tokens,
            bootstrap: None,
            service_accounts: None,
        })
    }

    /// Accepts bootstrap tokens, looked up as Secrets in `store`.
    pub fn enable_bootstrap_tokens(&mut self, store: Arc<dyn Store>) {
        self.bootstrap = Some(store);
    }

    /// Accepts ServiceAccount tokens signed by `signer` (when callers must
    /// authenticate at all: see [`Authenticator::enabled`]).
    pub fn enable_service_account_tokens(&mut self, signer: Arc<TokenSigner>, store: Arc<dyn Store>) {
        self.service_accounts = Some((signer, store));
    }

    /// Whether callers must present credentials. ServiceAccount tokens
    /// alone do not turn authentication on: an `--insecure` apiserver
    /// stays open to everyone.
    pub fn enabled(&self) -> bool {
        self.client_certs || self.tokens.is_some() || self.bootstrap.is_some()
    }

    /// The caller of `req`: from its bearer token if it sends one (an
    /// unknown token is refused even when a certificate is also
    /// presented, so a typo is noticed), else from its client certificate.
    pub fn authenticate<T>(&self, req: &Request<T>) -> Result<UserInfo, Status> {
        if !self.enabled() {
            return Ok(UserInfo::anonymous());
        }
        if let Some(value) = req.metadata().get("authorization") {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(|| {
                    Status::new(
                        Code::Unauthenticated,
                        "the authorization header must be `Bearer <token>`",
                    )
                })?;
            if let Some(user) = self.tokens.as_ref().and_then(|t| t.get(token)) {
                return Ok(user.clone());
            }
            if let (Some(store), Some(parsed)) = (&self.bootstrap, BootstrapToken::parse(token)) {
                return parsed.lookup(store.as_ref()).map(|(user, _)| user);
            }
            if let Some((signer, store)) = &self.service_accounts {
                if let Some(user) = crate::serviceaccount::authenticate(signer, store.as_ref(), token) {
                    return user.map_err(|why| {
                        Status::new(
                            Code::Unauthenticated,
                            format!("the ServiceAccount token is not valid: {why}; request a new one (TokenRequest)"),
                        )
                    });
                }
            }
            return Err(Status::new(
                Code::Unauthenticated,
                "the bearer token is not known to this apiserver; check `token` in your client config",
            ));
        }
        if self.client_certs {
            if let Some(certs) = req.peer_certs() {
                if let Some(leaf) = certs.first() {
                    return user_from_certificate(leaf.as_ref());
                }
            }
        }
        Err(Status::new(
            Code::Unauthenticated,
            "no credentials; give clientCertificate/clientKey or token in your client config",
        ))
    }
}

/// A bearer token in bootstrap token form, `ID.SECRET` (6 and 16
/// characters of [a-z0-9]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
}

impl BootstrapToken {
    pub fn parse(token: &str) -> Option<BootstrapToken> {
        let (id, secret) = token.split_once('.')?;
        let ok = |s: &str, n: usize| {
            s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        (ok(id, 6) && ok(secret, 16)).then(|| BootstrapToken {
            id: id.into(),
            secret: secret.into(),
        })
    }

    /// The storage key of this token's Secret.
    pub fn secret_key(&self) -> String {
        crate::handlers::storage_key(
            Secret::info(),
            BOOTSTRAP_TOKEN_NAMESPACE,
            &format!("{BOOTSTRAP_TOKEN_SECRET_PREFIX}{}", self.id),
        )
    }

    /// Checks the token against its Secret as Kubernetes does (type,
    /// token-id, token-secret, usage-bootstrap-authentication, expiration,
    /// not being deleted); returns its user and the stored Secret (whose
    /// revision a caller consuming the token deletes at).
    pub fn lookup(&self, store: &dyn Store) -> Result<(UserInfo, KeyValue), Status> {
        let id = &self.id;
        let refuse = |why: String| {
            Status::new(
                Code::Unauthenticated,
                format!("bootstrap token {id:?} {why}; create a new one with `rkubectl token create`"),
            )
        };
        let kv = store.get(&self.secret_key()).ok_or_else(|| {
            refuse("is not known: it was never created, was already used, or was deleted".into())
        })?;
        let secret = <Secret as prost::Message>::decode(kv.value.as_ref())
            .map_err(|_| refuse("cannot be read from its Secret".into()))?;
        let field = |k: &str| {
            secret
                .data
                .get(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        if secret.r#type != BOOTSTRAP_TOKEN_SECRET_TYPE || field("token-id") != *id {
            return Err(refuse(format!(
                "has no valid Secret (type {BOOTSTRAP_TOKEN_SECRET_TYPE}, token-id {id})"
            )));
        }
        if !constant_time_eq(field("token-secret").as_bytes(), self.secret.as_bytes()) {
            return Err(refuse("does not match: its secret part is wrong".into()));
        }
        if field("usage-bootstrap-authentication") != "true" {
            return Err(refuse(
                "is not for authentication (usage-bootstrap-authentication is not \"true\")".into(),
            ));
        }
        if !secret.metadata().deletion_timestamp.is_empty() {
            return Err(refuse("is being deleted".into()));
        }
        let expiration = field("expiration");
        if !expiration.is_empty() {
            let at = chrono::DateTime::parse_from_rfc3339(&expiration)
                .map_err(|_| refuse(format!("has an unreadable expiration {expiration:?}")))?;
            if at <= chrono::Utc::now() {
                return Err(refuse(format!("expired at {expiration}")));
            }
        }
        let mut groups = vec![BOOTSTRAPPERS_GROUP.to_string()];
        // Extra groups must stay within system:bootstrappers:*, as Kubernetes
        // requires, so a token cannot claim system:masters.
        groups.extend(
            field("auth-extra-groups")
                .split(',')
                .map(str::trim)
                .filter(|g| g.starts_with("system:bootstrappers:"))
                .map(str::to_string),
        );
        Ok((
            UserInfo::authenticated(format!("{BOOTSTRAP_USER_PREFIX}{id}"), String::new(), groups),
            kv,
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// User = subject CommonName, groups = subject Organizations, as
/// Kubernetes maps client certificates. rustls has already verified the
/// chain and validity period.
pub fn user_from_certificate(der: &[u8]) -> Result<UserInfo, Status> {
    let bad = |why: String| Status::new(Code::Unauthenticated, format!("client certificate: {why}"));
    let (name, groups) = rkube_client::pki::certificate_subject(der).map_err(bad)?;
    let name = name.ok_or_else(|| bad("its subject has no CommonName (the user name)".into()))?;
    Ok(UserInfo::authenticated(name, String::new(), groups))
}

/// Reads Kubernetes' `--token-auth-file` format: one
/// `token,user,uid,"group1,group2"` per line (groups optional, quoted when
/// there are several). Errors name the file and line.
pub fn load_token_file(path: &Path) -> anyhow::Result<HashMap<String, UserInfo>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read --token-auth-file {}: {e}", path.display()))?;
    parse_token_file(&text).map_err(|e| anyhow::anyhow!("--token-auth-file {}: {e}", path.display()))
}

pub fn parse_token_file(text: &str) -> anyhow::Result<HashMap<String, UserInfo>> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split_csv(line).map_err(|e| anyhow::anyhow!("line {n}: {e}"))?;
        if fields.len() < 3 {
            anyhow::bail!("line {n}: expected token,user,uid[,\"group1,group2\"]");
        }
        let (token, user, uid) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        if token.is_empty() || user.is_empty() {
            anyhow::bail!("line {n}: the token and the user name must not be empty");
        }
        let groups = fields
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if out
            .insert(
                token.to_string(),
                UserInfo::authenticated(user.into(), uid.into(), groups),
            )
            .is_some()
        {
            anyhow::bail!("line {n}: duplicate token");
        }
    }
    Ok(out)
}

/// Splits one CSV line; `"..."` quotes a field containing commas, `""` is
/// a quote inside one.
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) if cur.trim().is_empty() => {
                cur.clear();
                quoted = true;
            }
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', true) => quoted = false,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    fields.push(cur);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_in_kubernetes_format() {
        let users =
            parse_token_file("# comment\nt1,alice,u1,\"dev,ops\"\nt2,bob,u2\n\nt3,carol,u3,viewers\n")
                .unwrap();
        assert_eq!(users["t1"].name, "alice");
        assert_eq!(users["t1"].groups, ["dev", "ops", AUTHENTICATED_GROUP]);
        assert_eq!(users["t2"].groups, [AUTHENTICATED_GROUP]);
        assert_eq!(users["t3"].groups, ["viewers", AUTHENTICATED_GROUP]);
        let err = parse_token_file("t1,alice\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        let err = parse_token_file("a,b,c\na,d,e\n").unwrap_err().to_string();
        assert!(err.contains("line 2: duplicate token"), "{err}");
    }

    #[test]
    fn bootstrap_tokens_have_kubernetes_format() {
        let t = BootstrapToken::parse("abc123.0123456789abcdef").unwrap();
        assert_eq!((t.id.as_str(), t.secret.as_str()), ("abc123", "0123456789abcdef"));
        assert_eq!(t.secret_key(), "core/secrets/kube-system/bootstrap-token-abc123");
        for bad in [
            "abc123",
            "ABC123.0123456789abcdef",
            "abc12.0123456789abcdef",
            "abc123.0123",
        ] {
            assert!(BootstrapToken::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn disabled_means_anonymous_and_enabled_needs_credentials() {
        let req = Request::new(());
        assert_eq!(
            Authenticator::disabled().authenticate(&req).unwrap(),
            UserInfo::anonymous()
        );
        let auth = Authenticator {
            tokens: Some(parse_token_file("secret,alice,1\n").unwrap()),
            ..Default::default()
        };
        assert_eq!(auth.authenticate(&req).unwrap_err().code(), Code::Unauthenticated);
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Bearer secret".parse().unwrap());
        assert_eq!(auth.authenticate(&req).unwrap().name, "alice");
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Bearer nope".parse().unwrap());
        assert_eq!(auth.authenticate(&req).unwrap_err().code(), Code::Unauthenticated);
    }
}
