//! ServiceAccount tokens, as Kubernetes' TokenRequest API makes them: the
//! apiserver signs short-lived, audience-bound JWTs (ES256, ECDSA P-256,
//! with the key `--service-account-signing-key-file`) for a ServiceAccount,
//! optionally bound to a pod, and accepts them back as bearer tokens while
//! they are unexpired, meant for it (audience), and the ServiceAccount (and
//! the pod) they name still exist with the same uid.
//!
//! The claims are Kubernetes' own (`iss`, `sub`, `aud`, `exp`, `iat`,
//! `nbf`, `jti` and the private `kubernetes.io` claim), so tools that read
//! a pod's token see what they expect.

use crate::authn::UserInfo;
use crate::error::{ApiError, ApiResult};
use crate::keys::storage_key;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey};
use rkube_api::core::v1::{Pod, ServiceAccount};
use rkube_api::rpc;
use rkube_api::Resource;
use rkube_store::Store;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Kubernetes' default issuer (and so the default audience).
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The group of every ServiceAccount, and the prefix of each namespace's.
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
pub const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";
/// A TokenRequest without expirationSeconds gets an hour, as in Kubernetes.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// Kubernetes refuses shorter lifetimes ("may not specify a duration less
/// than 10 minutes").
pub const MIN_EXPIRATION_SECONDS: i64 = 600;

/// The user name of a ServiceAccount.
pub fn user_name(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_USER_PREFIX}{namespace}:{name}")
}

/// A name and uid, as the `kubernetes.io` claim records objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KubernetesClaim {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
}

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    #[serde(default)]
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

/// Signs and verifies ServiceAccount tokens.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    /// Kubernetes' key id: base64url(SHA-256(the public key's DER SPKI)).
    kid: String,
    issuer: String,
    /// What the apiserver accepts as a token's audience, and the default
    /// audience of a TokenRequest (`--api-audiences`, default the issuer).
    audiences: Vec<String>,
    /// `--service-account-max-token-expiration`, seconds.
    max_expiration: Option<i64>,
    rng: SystemRandom,
}

impl std::fmt::Debug for TokenSigner {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .finish()
    }
}

/// DER prefix of a P-256 SubjectPublicKeyInfo before the 65-byte point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
    0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}

impl TokenSigner {
    /// Loads the PKCS#8 PEM ECDSA P-256 key in `path`; errors name the file
    /// and the flag.
    pub fn load(
        path: &Path,
        issuer: &str,
        audiences: Vec<String>,
        max_expiration: Option<i64>,
    ) -> anyhow::Result<TokenSigner> {
        let bad =
            |why: String| anyhow::anyhow!("--service-account-signing-key-file {}: {why}", path.display());
        let pem = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let der = pem_body(&pem, "PRIVATE KEY").ok_or_else(|| {
            bad("not a PEM \"PRIVATE KEY\" (PKCS#8); `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` makes one".into())
        })?;
        Self::from_pkcs8(&der, issuer, audiences, max_expiration).map_err(|e| bad(e.to_string()))
    }

    /// A signer over a PKCS#8 DER ECDSA P-256 key.
    pub fn from_pkcs8(
        der: &[u8],
        issuer: &str,
        audiences: Vec<String>,
        max_expiration: Option<i64>,
    ) -> anyhow::Result<TokenSigner> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng).map_err(
            |e| {
                anyhow::anyhow!(
                    "not an ECDSA P-256 private key ({e}); ServiceAccount tokens are signed with ES256"
                )
            },
        )?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let kid = B64.encode(ring::digest::digest(&ring::digest::SHA256, &spki));
        let audiences = if audiences.is_empty() {
            vec![issuer.to_string()]
        } else {
            audiences
        };
        Ok(TokenSigner {
            key,
            kid,
            issuer: issuer.to_string(),
            audiences,
            max_expiration,
            rng,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// The signed JWT of `claims`.
    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let header = Header {
            alg: "ES256".into(),
            kid: self.kid.clone(),
            typ: None,
        };
        let signing_input = format!(
            "{}.{}",
            B64.encode(serde_json::to_vec(&header)?),
            B64.encode(serde_json::to_vec(claims)?)
        );
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing the token failed"))?;
        Ok(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
    }

    /// The claims of `token` if it is this apiserver's, correctly signed,
    /// valid at `now` (seconds since the epoch) and meant for one of its
    /// audiences; otherwise why not. `None`: not a ServiceAccount token of
    /// this issuer at all (another authenticator may know it).
    pub fn verify(&self, token: &str, now: i64) -> Option<Result<Claims, String>> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let claims: Claims = B64
            .decode(c)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())?;
        if claims.iss != self.issuer {
            return None;
        }
        Some(self.check(h, c, s, claims, now))
    }

    fn check(&self, h: &str, c: &str, s: &str, claims: Claims, now: i64) -> Result<Claims, String> {
        let header: Header = B64
            .decode(h)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or("its header cannot be read")?;
        if header.alg != "ES256" {
            return Err(format!("it is signed with {:?}, not ES256", header.alg));
        }
        let sig = B64.decode(s).map_err(|_| "its signature cannot be read")?;
        let public = UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        public
            .verify(format!("{h}.{c}").as_bytes(), &sig)
            .map_err(|_| "its signature is not valid (signed with another key, or altered)")?;
        if now >= claims.exp {
            return Err(format!(
                "it expired at {}",
                rfc3339(claims.exp).unwrap_or_else(|| claims.exp.to_string())
            ));
        }
        if now < claims.nbf {
            return Err("it is not valid yet (nbf)".into());
        }
        if !claims.aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(format!(
                "its audiences {:?} do not include this apiserver's {:?}",
                claims.aud, self.audiences
            ));
        }
        Ok(claims)
    }

    /// Serves a TokenRequest for ServiceAccount `req.namespace/req.name`:
    /// reads the account (and the bound pod), settles the spec (defaults,
    /// limits), signs.
    pub fn create_token(
        &self,
        store: &dyn Store,
        req: &rpc::CreateTokenRequest,
    ) -> ApiResult<rpc::CreateTokenResponse> {
        let sa_info = ServiceAccount::info();
        let sa: ServiceAccount = read(store, sa_info, &req.namespace, &req.name)?
            .ok_or_else(|| ApiError::not_found(sa_info, &req.name))?;
        let invalid = |field: &str, msg: String| invalid(&req.name, field, msg);
        let mut expiration = req
            .expiration_seconds
            .map(i64::from)
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        // (Kubernetes' other bound, 2^32 seconds, is beyond the int32 field)
        if expiration < MIN_EXPIRATION_SECONDS {
            return Err(invalid(
                "spec.expirationSeconds",
                format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
            ));
        }
        if let Some(max) = self.max_expiration {
            expiration = expiration.min(max);
        }
        let mut bound = req.bound_object_ref.clone();
        let pod = match &mut bound {
            None => None,
            Some(r) if r.kind == "Pod" && matches!(r.api_version.as_str(), "" | "v1") => {
                let pod_info = Pod::info();
                let pod: Pod = read(store, pod_info, &req.namespace, &r.name)?
                    .ok_or_else(|| ApiError::not_found(pod_info, &r.name))?;
                let meta = pod.metadata();
                if !r.uid.is_empty() && r.uid != meta.uid {
                    return Err(ApiError::conflict(
                        sa_info,
                        &req.name,
                        &format!(
                            "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                            r.uid
                        ),
                    ));
                }
                let account = pod.spec.as_ref().map(|s| s.service_account_name.as_str());
                if account != Some(req.name.as_str()) {
                    return Err(invalid(
                        "spec.boundObjectRef",
                        format!(
                            "Invalid value: {:?}: pod {:?} runs as ServiceAccount {:?}, not {:?}",
                            r.name,
                            r.name,
                            account.unwrap_or_default(),
                            req.name
                        ),
                    ));
                }
                r.api_version = "v1".into();
                r.uid = meta.uid.clone();
                Some(ObjectRef {
                    name: meta.name.clone(),
                    uid: meta.uid.clone(),
                })
            }
            Some(r) => {
                return Err(invalid(
                    "spec.boundObjectRef.kind",
                    format!(
                        "Unsupported value: {:?}: tokens can be bound to v1 Pods (apiVersion {:?})",
                        r.kind, r.api_version
                    ),
                ))
            }
        };
        let audiences = if req.audiences.is_empty() {
            self.audiences.clone()
        } else {
            req.audiences.clone()
        };
        let now = now_seconds();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: user_name(&req.namespace, &req.name),
            aud: audiences.clone(),
            exp: now + expiration,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: KubernetesClaim {
                namespace: req.namespace.clone(),
                serviceaccount: ObjectRef {
                    name: req.name.clone(),
                    uid: sa.metadata().uid.clone(),
                },
                pod,
            },
        };
        let token = self
            .sign(&claims)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(rpc::CreateTokenResponse {
            token,
            expiration_timestamp: rfc3339(claims.exp).unwrap_or_default(),
            audiences,
            expiration_seconds: i32::try_from(expiration).unwrap_or(i32::MAX),
            bound_object_ref: bound,
        })
    }
}

/// Kubernetes' Invalid answer about a TokenRequest's field.
fn invalid(name: &str, field: &str, msg: String) -> ApiError {
    ApiError {
        code: tonic::Code::InvalidArgument,
        reason: "Invalid",
        message: format!("TokenRequest.authentication.k8s.io {name:?} is invalid: {field}: {msg}"),
        kind: "TokenRequest".into(),
        name: name.into(),
        causes: vec![rkube_api::meta::v1::StatusCause {
            reason: "FieldValueInvalid".into(),
            message: msg,
            field: field.into(),
        }],
    }
}

fn rfc3339(seconds: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(seconds, 0).map(rkube_api::time::format)
}

/// The object stored under `namespace/name`, if any.
fn read<K: Resource>(
    store: &dyn Store,
    info: &rkube_api::ResourceInfo,
    namespace: &str,
    name: &str,
) -> ApiResult<Option<K>> {
    let Some(kv) = store.get(&storage_key(info, namespace, name)) else {
        return Ok(None);
    };
    K::decode(kv.value.as_ref()).map(Some).map_err(|e| {
        ApiError::internal(format!(
            "stored {} {namespace}/{name} cannot be decoded: {e}",
            info.kind
        ))
    })
}

/// Authenticates a ServiceAccount token: its signature, lifetime and
/// audience (`signer.verify`), then that the account, and the pod it is
/// bound to, still exist with the uids it names (a deleted pod's token is
/// dead even before it expires). `None`: not such a token.
pub fn authenticate(
    signer: &TokenSigner,
    store: &dyn Store,
    token: &str,
) -> Option<Result<UserInfo, String>> {
    let claims = match signer.verify(token, now_seconds())? {
        Ok(c) => c,
        Err(why) => return Some(Err(why)),
    };
    Some(check_objects(store, claims))
}

fn check_objects(store: &dyn Store, claims: Claims) -> Result<UserInfo, String> {
    let k = &claims.kubernetes;
    let ns = &k.namespace;
    let sa_name = &k.serviceaccount.name;
    if claims.sub != user_name(ns, sa_name) {
        return Err("its subject does not match its kubernetes.io claim".into());
    }
    let sa: Option<ServiceAccount> =
        read(store, ServiceAccount::info(), ns, sa_name).map_err(|e| e.message.clone())?;
    match sa {
        Some(sa) if sa.metadata().uid == k.serviceaccount.uid => {
            if !sa.metadata().deletion_timestamp.is_empty() {
                return Err(format!("ServiceAccount {ns}/{sa_name} is being deleted"));
            }
        }
        Some(_) => {
            return Err(format!(
                "ServiceAccount {ns}/{sa_name} was deleted and created again (its uid is not {})",
                k.serviceaccount.uid
            ))
        }
        None => return Err(format!("ServiceAccount {ns}/{sa_name} has been deleted")),
    }
    if let Some(bound) = &k.pod {
        let pod: Option<Pod> = read(store, Pod::info(), ns, &bound.name).map_err(|e| e.message.clone())?;
        match pod {
            Some(pod) if pod.metadata().uid == bound.uid => {
                // As Kubernetes: the token works through the pod's grace
                // period (preStop hooks may call the API), not after it.
                let deletion = &pod.metadata().deletion_timestamp;
                if let Ok(at) = chrono::DateTime::parse_from_rfc3339(deletion) {
                    if at.timestamp() < now_seconds() {
                        return Err(format!(
                            "the pod {ns}/{} it is bound to has been deleted",
                            bound.name
                        ));
                    }
                }
            }
            Some(_) => {
                return Err(format!(
                    "the pod {ns}/{} it is bound to was deleted and created again (its uid is not {})",
                    bound.name, bound.uid
                ))
            }
            None => {
                return Err(format!(
                    "the pod {ns}/{} it is bound to has been deleted",
                    bound.name
                ))
            }
        }
    }
    Ok(UserInfo {
        name: claims.sub.clone(),
        uid: k.serviceaccount.uid.clone(),
        groups: vec![
            SERVICE_ACCOUNTS_GROUP.into(),
            format!("{SERVICE_ACCOUNTS_GROUP}:{ns}"),
            crate::authn::AUTHENTICATED_GROUP.into(),
        ],
    })
}

/// The DER body of the first PEM block labelled `label`.
fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let b64: String = pem[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(audiences: &[&str]) -> TokenSigner {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        TokenSigner::from_pkcs8(
            &key.serialize_der(),
            DEFAULT_ISSUER,
            audiences.iter().map(|a| a.to_string()).collect(),
            None,
        )
        .unwrap()
    }

    fn claims(now: i64, aud: &str) -> Claims {
        Claims {
            iss: DEFAULT_ISSUER.into(),
            sub: user_name("shop", "robot"),
            aud: vec![aud.into()],
            exp: now + 600,
            iat: now,
            nbf: now,
            jti: "1".into(),
            kubernetes: KubernetesClaim {
                namespace: "shop".into(),
                serviceaccount: ObjectRef {
                    name: "robot".into(),
                    uid: "u1".into(),
                },
                pod: None,
            },
        }
    }

    #[test]
    fn tokens_have_kubernetes_shape_and_verify() {
        let s = signer(&[]);
        assert_eq!(s.audiences(), [DEFAULT_ISSUER]);
        let now = 1_700_000_000;
        let token = s.sign(&claims(now, DEFAULT_ISSUER)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(
            header["kid"].as_str().unwrap().len(),
            43,
            "base64url of a SHA-256"
        );
        let body: serde_json::Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(body["sub"], "system:serviceaccount:shop:robot");
        assert_eq!(body["kubernetes.io"]["serviceaccount"]["uid"], "u1");
        assert_eq!(body["aud"][0], DEFAULT_ISSUER);
        assert_eq!(
            s.verify(&token, now + 1).unwrap().unwrap(),
            claims(now, DEFAULT_ISSUER)
        );
    }

    #[test]
    fn expired_foreign_altered_and_misaddressed_tokens_are_refused() {
        let s = signer(&["api"]);
        let now = 1_700_000_000;
        let token = s.sign(&claims(now, "api")).unwrap();
        let err = s.verify(&token, now + 600).unwrap().unwrap_err();
        assert!(err.contains("expired"), "{err}");
        let err = s.verify(&token, now - 1).unwrap().unwrap_err();
        assert!(err.contains("not valid yet"), "{err}");
        // another apiserver's key, same issuer
        let other = signer(&["api"]).sign(&claims(now, "api")).unwrap();
        let err = s.verify(&other, now).unwrap().unwrap_err();
        assert!(err.contains("signature"), "{err}");
        // claims changed after signing
        let mut forged = claims(now, "api");
        forged.sub = user_name("kube-system", "admin");
        let forged_body = B64.encode(serde_json::to_vec(&forged).unwrap());
        let parts: Vec<&str> = token.split('.').collect();
        let altered = format!("{}.{forged_body}.{}", parts[0], parts[2]);
        let err = s.verify(&altered, now).unwrap().unwrap_err();
        assert!(err.contains("signature"), "{err}");
        // for another audience
        let token = s.sign(&claims(now, "vault")).unwrap();
        let err = s.verify(&token, now).unwrap().unwrap_err();
        assert!(err.contains("audiences"), "{err}");
        // not a JWT, or another issuer's: for other authenticators
        assert!(s.verify("abc123.0123456789abcdef", now).is_none());
        let mut foreign = claims(now, "api");
        foreign.iss = "https://elsewhere".into();
        assert!(s.verify(&s.sign(&foreign).unwrap(), now).is_none());
    }

    #[test]
    fn keys_load_from_pem_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(rkube_client::pki::ensure_service_account_key(dir.path()).unwrap());
        let path = dir.path().join(rkube_client::pki::SERVICE_ACCOUNT_KEY);
        let a = TokenSigner::load(&path, DEFAULT_ISSUER, vec![], None).unwrap();
        assert!(!rkube_client::pki::ensure_service_account_key(dir.path()).unwrap());
        let b = TokenSigner::load(&path, DEFAULT_ISSUER, vec![], None).unwrap();
        let token = a.sign(&claims(now_seconds(), DEFAULT_ISSUER)).unwrap();
        assert!(
            b.verify(&token, now_seconds()).unwrap().is_ok(),
            "the kept key verifies"
        );
        std::fs::write(&path, "nope").unwrap();
        let err = TokenSigner::load(&path, DEFAULT_ISSUER, vec![], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--service-account-signing-key-file") && err.contains("sa.key"),
            "{err}"
        );
    }
}
