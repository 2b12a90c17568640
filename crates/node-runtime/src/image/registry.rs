//! The client side of the OCI distribution protocol: resolving a tag or digest to a manifest
//! and fetching blobs, with anonymous, basic and bearer-token authentication.

use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use serde::Deserialize;

use super::oci::{
    sha256_digest, MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
};
use super::{PullError, Reference, RegistryAuth};

/// Manifests and configs are small; a larger one is a broken or hostile registry, so they are
/// never buffered past this.
pub const MAX_DOCUMENT_BYTES: usize = 8 << 20;

// Indexes first, so a multi-platform image resolves to its index rather than to a platform
// the registry picks.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// A manifest as the registry served it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub media_type: String,
    /// sha256 of `body`, which is the manifest's identity.
    pub digest: String,
    pub body: Vec<u8>,
}

/// Talks to the registry that hosts one image reference.
pub struct RegistryClient {
    http: reqwest::Client,
    reference: Reference,
    base_url: String,
    auth: Option<RegistryAuth>,
    /// `Authorization` header value learned from the last challenge, reused for every
    /// following request so a pull costs one token round trip.
    authorization: Option<HeaderValue>,
}

impl RegistryClient {
    /// A client for `reference`'s registry. Plain http is used for loopback registries and
    /// those listed in `insecure_registries`; https otherwise.
    pub fn new(
        reference: &Reference,
        auth: Option<RegistryAuth>,
        insecure_registries: &[String],
    ) -> Result<Self, PullError> {
        let insecure = reference.is_loopback()
            || insecure_registries
                .iter()
                .any(|r| r == &reference.registry || r == reference.registry.split(':').next().unwrap_or(""));
        let scheme = if insecure { "http" } else { "https" };
        let base_url = format!("{scheme}://{}", reference.api_host());
        let http = reqwest::Client::builder()
            .user_agent(concat!("rkubelet/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            // No overall timeout: layers can be large. A stalled read is what to catch.
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|source| PullError::Http {
                reference: reference.name(),
                url: base_url.clone(),
                source,
            })?;
        Ok(Self {
            http,
            reference: reference.clone(),
            base_url,
            auth,
            authorization: None,
        })
    }

    /// Fetches the manifest (or index) that `reference` — a tag or a digest — names. When it
    /// is a digest, the body is checked against it.
    pub async fn fetch_manifest(&mut self, reference: &str) -> Result<FetchedManifest, PullError> {
        let url = format!(
            "{}/v2/{}/manifests/{}",
            self.base_url, self.reference.repository, reference
        );
        let response = self.get(&url, Some(MANIFEST_ACCEPT)).await?;
        let header_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let body = self.read_limited(response, &url, "manifest").await?;
        let digest = sha256_digest(&body);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(PullError::DigestMismatch {
                reference: self.reference.name(),
                what: format!("manifest {url}"),
                expected: reference.to_string(),
                actual: digest,
            });
        }
        // Registries sometimes answer with a generic content type; the document's own
        // mediaType field is authoritative then.
        let media_type = match header_type {
            Some(t)
                if [
                    MEDIA_TYPE_OCI_INDEX,
                    MEDIA_TYPE_OCI_MANIFEST,
                    MEDIA_TYPE_DOCKER_LIST,
                    MEDIA_TYPE_DOCKER_MANIFEST,
                ]
                .contains(&t.as_str()) =>
            {
                t
            }
            other => sniff_media_type(&body).or(other).unwrap_or_default(),
        };
        Ok(FetchedManifest {
            media_type,
            digest,
            body,
        })
    }

    /// Fetches a small blob (an image config) whole and checks its digest.
    pub async fn fetch_blob_bytes(&mut self, digest: &str, what: &str) -> Result<Vec<u8>, PullError> {
        let url = self.blob_url(digest);
        let response = self.get(&url, None).await?;
        let body = self.read_limited(response, &url, what).await?;
        let actual = sha256_digest(&body);
        if actual != digest {
            return Err(PullError::DigestMismatch {
                reference: self.reference.name(),
                what: what.to_string(),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(body)
    }

    /// Starts fetching a blob; the caller streams the body with [`Response::chunk`] and must
    /// check the digest itself.
    pub async fn fetch_blob(&mut self, digest: &str) -> Result<Response, PullError> {
        let url = self.blob_url(digest);
        self.get(&url, None).await
    }

    /// The URL a blob is fetched from, for error messages.
    pub fn blob_url(&self, digest: &str) -> String {
        format!(
            "{}/v2/{}/blobs/{}",
            self.base_url, self.reference.repository, digest
        )
    }

    /// Wraps a transport error while streaming a body.
    pub fn http_error(&self, url: &str, source: reqwest::Error) -> PullError {
        PullError::Http {
            reference: self.reference.name(),
            url: url.to_string(),
            source,
        }
    }

    /// GET with authentication: on a 401 the challenge is answered once (basic credentials
    /// or a bearer token) and the request repeated. Any error status becomes a `PullError`
    /// carrying the registry's reason.
    async fn get(&mut self, url: &str, accept: Option<&str>) -> Result<Response, PullError> {
        let mut challenged = false;
        loop {
            let mut request = self.http.get(url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(authorization) = &self.authorization {
                request = request.header(AUTHORIZATION, authorization.clone());
            }
            let response = request
                .send()
                .await
                .map_err(|source| self.http_error(url, source))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let reason = self.error_reason(response, url).await;
                match challenge {
                    Some(challenge) => {
                        self.answer_challenge(&challenge, &reason).await?;
                        continue;
                    }
                    None => return Err(self.unauthorized(reason)),
                }
            }
            let reason = self.error_reason(response, url).await;
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(self.unauthorized(reason));
            }
            return Err(PullError::Registry {
                reference: self.reference.name(),
                url: url.to_string(),
                status: status.as_u16(),
                reason,
            });
        }
    }

    async fn answer_challenge(&mut self, challenge: &str, reason: &str) -> Result<(), PullError> {
        let (scheme, params) = parse_challenge(challenge);
        if scheme.eq_ignore_ascii_case("basic") {
            let Some(auth) = &self.auth else {
                return Err(self.unauthorized(reason.to_string()));
            };
            self.authorization = Some(basic_header(auth));
            return Ok(());
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(self.unauthorized(format!(
                "unsupported authentication scheme {scheme:?} in challenge {challenge:?}"
            )));
        }
        let Some(realm) = param(&params, "realm") else {
            return Err(self.unauthorized(format!("bearer challenge without realm: {challenge:?}")));
        };
        let scope = param(&params, "scope")
            .map(str::to_string)
            .unwrap_or_else(|| format!("repository:{}:pull", self.reference.repository));
        let mut query: Vec<(&str, String)> = vec![("scope", scope)];
        if let Some(service) = param(&params, "service") {
            query.push(("service", service.to_string()));
        }
        let mut request = self.http.get(realm).query(&query);
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, basic_header(auth));
        }
        let response = request
            .send()
            .await
            .map_err(|source| self.http_error(realm, source))?;
        if !response.status().is_success() {
            let status = response.status();
            let reason = self.error_reason(response, realm).await;
            return Err(self.unauthorized(format!(
                "token service {realm} answered HTTP {}: {reason}",
                status.as_u16()
            )));
        }
        let body = self.read_limited(response, realm, "token response").await?;
        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let token: TokenResponse =
            serde_json::from_slice(&body).map_err(|source| PullError::BadDocument {
                reference: self.reference.name(),
                what: format!("token response from {realm}"),
                source,
            })?;
        let Some(token) = token.token.or(token.access_token).filter(|t| !t.is_empty()) else {
            return Err(self.unauthorized(format!("token service {realm} returned no token")));
        };
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| self.unauthorized(format!("token service {realm} returned a malformed token")))?;
        self.authorization = Some(value);
        Ok(())
    }

    fn unauthorized(&self, reason: String) -> PullError {
        PullError::Unauthorized {
            reference: self.reference.name(),
            registry: self.reference.registry.clone(),
            reason,
            hint: if self.auth.is_some() {
                "check the username and password in the image pull secret"
            } else {
                "the image may be private: add an image pull secret with credentials"
            },
        }
    }

    /// The registry's explanation of an error response: its `errors` array formatted as
    /// Docker does (`manifest unknown: manifest unknown`), else the body text, else the
    /// status line.
    async fn error_reason(&self, response: Response, url: &str) -> String {
        let status = response.status();
        let body = self
            .read_limited(response, url, "error response")
            .await
            .unwrap_or_default();
        #[derive(Deserialize)]
        struct Errors {
            errors: Vec<ErrorEntry>,
        }
        #[derive(Deserialize)]
        struct ErrorEntry {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        if let Ok(parsed) = serde_json::from_slice::<Errors>(&body) {
            let reasons: Vec<String> = parsed
                .errors
                .iter()
                .map(|e| {
                    let code = e.code.to_lowercase().replace('_', " ");
                    match (code.is_empty(), e.message.is_empty()) {
                        (false, false) => format!("{code}: {}", e.message),
                        (false, true) => code,
                        _ => e.message.clone(),
                    }
                })
                .filter(|s| !s.is_empty())
                .collect();
            if !reasons.is_empty() {
                return reasons.join("; ");
            }
        }
        let text = String::from_utf8_lossy(&body);
        let text = text.trim();
        if !text.is_empty() && text.len() <= 512 {
            return text.to_string();
        }
        status.to_string()
    }

    async fn read_limited(
        &self,
        mut response: Response,
        url: &str,
        what: &str,
    ) -> Result<Vec<u8>, PullError> {
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|source| self.http_error(url, source))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(PullError::TooLarge {
                    reference: self.reference.name(),
                    what: what.to_string(),
                    limit: MAX_DOCUMENT_BYTES,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn basic_header(auth: &RegistryAuth) -> HeaderValue {
    use base64::Engine as _;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", auth.username, auth.password));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

fn sniff_media_type(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        layers: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(body).ok()?;
    probe.media_type.or_else(|| {
        // OCI documents may omit mediaType; the shape tells them apart.
        if probe.manifests.is_some() {
            Some(MEDIA_TYPE_OCI_INDEX.to_string())
        } else if probe.layers.is_some() {
            Some(MEDIA_TYPE_OCI_MANIFEST.to_string())
        } else {
            None
        }
    })
}

/// Splits `Bearer realm="...",service="...",scope="a:b:pull,push"` into the scheme and its
/// parameters. Quoted values may contain commas.
fn parse_challenge(challenge: &str) -> (String, Vec<(String, String)>) {
    let challenge = challenge.trim();
    let (scheme, rest) = challenge
        .split_once(char::is_whitespace)
        .unwrap_or((challenge, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(escaped) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        params.push((key.trim().to_ascii_lowercase(), value));
    }
    (scheme.to_string(), params)
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_commas_in_scope() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(param(&params, "realm"), Some("https://auth.example/token"));
        assert_eq!(param(&params, "service"), Some("registry.example"));
        assert_eq!(param(&params, "scope"), Some("repository:a/b:pull,push"));
    }

    #[test]
    fn basic_challenge() {
        let (scheme, params) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(scheme, "Basic");
        assert_eq!(param(&params, "realm"), Some("Registry Realm"));
        let (scheme, params) = parse_challenge("Basic");
        assert_eq!(scheme, "Basic");
        assert!(params.is_empty());
    }

    #[test]
    fn loopback_and_listed_registries_use_http() {
        let local = Reference::parse("127.0.0.1:5000/a/b").unwrap();
        assert!(RegistryClient::new(&local, None, &[])
            .unwrap()
            .base_url
            .starts_with("http://"));
        let listed = Reference::parse("reg.internal:5000/a/b").unwrap();
        assert!(RegistryClient::new(&listed, None, &["reg.internal:5000".into()])
            .unwrap()
            .base_url
            .starts_with("http://"));
        let remote = Reference::parse("quay.io/a/b").unwrap();
        assert_eq!(
            RegistryClient::new(&remote, None, &[]).unwrap().base_url,
            "https://quay.io"
        );
        let hub = Reference::parse("busybox").unwrap();
        assert_eq!(
            RegistryClient::new(&hub, None, &[]).unwrap().base_url,
            "https://registry-1.docker.io"
        );
    }

    #[test]
    fn media_type_is_sniffed_from_shape() {
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(),
            Some(MEDIA_TYPE_OCI_INDEX)
        );
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"config":{},"layers":[]}"#).as_deref(),
            Some(MEDIA_TYPE_OCI_MANIFEST)
        );
    }

    /// A registry that only serves to bearer tokens from its own token service, like Docker
    /// Hub; in-process on loopback.
    mod token_flow {
        use std::sync::{Arc, Mutex};

        use base64::Engine as _;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        use super::*;

        const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;

        struct FakeRegistry {
            port: u16,
            /// Request lines (with query) the token service saw.
            token_requests: Arc<Mutex<Vec<String>>>,
        }

        async fn start() -> FakeRegistry {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let token_requests = Arc::new(Mutex::new(Vec::new()));
            let seen = token_requests.clone();
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 4096];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let head = String::from_utf8_lossy(&buf).into_owned();
                        let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                        let authorization = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("authorization: ")
                                    .or_else(|| l.strip_prefix("Authorization: "))
                            })
                            .unwrap_or("")
                            .trim()
                            .to_string();
                        let basic = format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode("alice:wonderland")
                        );
                        let (status, headers, body) = if target.starts_with("/token") {
                            seen.lock().unwrap().push(target.clone());
                            if authorization == basic {
                                ("200 OK", String::new(), r#"{"token":"tok-123"}"#.to_string())
                            } else if authorization.is_empty() {
                                (
                                    "200 OK",
                                    String::new(),
                                    r#"{"access_token":"anonymous"}"#.to_string(),
                                )
                            } else {
                                (
                                    "401 Unauthorized",
                                    String::new(),
                                    r#"{"details":"incorrect username or password"}"#.to_string(),
                                )
                            }
                        } else if authorization == "Bearer tok-123" {
                            (
                                "200 OK",
                                "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n".to_string(),
                                MANIFEST.to_string(),
                            )
                        } else {
                            (
                                "401 Unauthorized",
                                format!(
                                    "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake-registry\",scope=\"repository:rkube/private:pull\"\r\n"
                                ),
                                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_string(),
                            )
                        };
                        let response = format!(
                            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(response.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    });
                }
            });
            FakeRegistry { port, token_requests }
        }

        fn client(port: u16, auth: Option<(&str, &str)>) -> RegistryClient {
            let reference = Reference::parse(&format!("127.0.0.1:{port}/rkube/private:latest")).unwrap();
            let auth = auth.map(|(u, p)| RegistryAuth {
                username: u.into(),
                password: p.into(),
            });
            RegistryClient::new(&reference, auth, &[]).unwrap()
        }

        #[tokio::test]
        async fn bearer_token_is_fetched_with_basic_credentials_and_reused() {
            let registry = start().await;
            let mut client = client(registry.port, Some(("alice", "wonderland")));
            let manifest = client.fetch_manifest("latest").await.unwrap();
            assert_eq!(manifest.media_type, MEDIA_TYPE_OCI_MANIFEST);
            assert_eq!(manifest.digest, sha256_digest(MANIFEST.as_bytes()));
            // The token is reused: a second fetch costs no token round trip.
            client.fetch_manifest("latest").await.unwrap();
            let requests = registry.token_requests.lock().unwrap().clone();
            assert_eq!(requests.len(), 1, "{requests:?}");
            assert!(
                requests[0].contains("scope=repository%3Arkube%2Fprivate%3Apull"),
                "{requests:?}"
            );
            assert!(requests[0].contains("service=fake-registry"), "{requests:?}");
        }

        #[tokio::test]
        async fn wrong_credentials_and_anonymous_tokens_are_refused_with_reasons() {
            let registry = start().await;
            let err = client(registry.port, Some(("alice", "nope")))
                .fetch_manifest("latest")
                .await
                .unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, PullError::Unauthorized { .. }), "{message}");
            assert!(
                message.contains("token service") && message.contains("incorrect username or password"),
                "{message}"
            );
            assert!(message.contains("check the username and password"), "{message}");

            let err = client(registry.port, None)
                .fetch_manifest("latest")
                .await
                .unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains("unauthorized: authentication required"),
                "{message}"
            );
            assert!(message.contains("add an image pull secret"), "{message}");
        }
    }
}
