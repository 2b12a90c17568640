//! Limits on abuse, enforced by a tower layer in front of the gRPC service
//! so that every RPC, present and future, is covered:
//!
//! * request size (`--max-request-bytes`, default 3 MiB like etcd's and
//!   Kubernetes' limit): tonic refuses a larger message before reading it;
//!   this layer rewrites tonic's terse answer into RESOURCE_EXHAUSTED naming
//!   the limit and the flag;
//! * concurrent watches per user (`--max-watches-per-user`) and in-flight
//!   requests per user (`--max-requests-inflight-per-user`), as Kubernetes'
//!   max-requests-inflight but per user, so that one runaway client cannot
//!   starve the others: over the cap the request is refused at once with
//!   RESOURCE_EXHAUSTED (Kubernetes' 429), never queued;
//! * a deadline on every request that is not long-running
//!   (`--request-timeout`); watches, logs and exec stream for as long as the
//!   client keeps them, as in Kubernetes.
//!
//! The user is found with the same authenticator the service uses (an
//! unauthenticated request counts as `system:anonymous`; the service
//! refuses it afterwards anyway).

use crate::authn::ANONYMOUS;
use crate::State;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::Status;

pub const DEFAULT_MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;
pub const DEFAULT_MAX_WATCHES_PER_USER: usize = 100;
pub const DEFAULT_MAX_REQUESTS_INFLIGHT_PER_USER: usize = 400;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The limits; 0 turns a count or the timeout off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    pub max_watches_per_user: usize,
    /// Requests other than watch, logs and exec being served at once.
    pub max_requests_inflight_per_user: usize,
    /// Deadline of a request other than watch, logs and exec.
    pub request_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_watches_per_user: DEFAULT_MAX_WATCHES_PER_USER,
            max_requests_inflight_per_user: DEFAULT_MAX_REQUESTS_INFLIGHT_PER_USER,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl LimitsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        // below this even a Node status or a small Pod would not fit
        if self.max_request_bytes < 64 * 1024 {
            anyhow::bail!(
                "--max-request-bytes must be at least 65536 (got {}); the default is {DEFAULT_MAX_REQUEST_BYTES}",
                self.max_request_bytes
            );
        }
        Ok(())
    }
}

/// Users' current counts of one kind of request, with its cap.
struct Counter {
    what: &'static str,
    flag: &'static str,
    cap: usize,
    counts: Mutex<HashMap<String, usize>>,
}

/// One counted request; gives its place back when dropped.
struct Slot {
    counter: Arc<Counter>,
    user: String,
}

impl Counter {
    fn new(what: &'static str, flag: &'static str, cap: usize) -> Arc<Self> {
        Arc::new(Counter {
            what,
            flag,
            cap,
            counts: Mutex::default(),
        })
    }

    fn take(self: &Arc<Self>, user: &str) -> Result<Option<Slot>, Status> {
        if self.cap == 0 {
            return Ok(None);
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(user.to_string()).or_insert(0);
        if *n >= self.cap {
            return Err(Status::resource_exhausted(format!(
                "too many {}: user {user:?} already has {} (the limit per user, {}={}); {}",
                self.what,
                *n,
                self.flag,
                self.cap,
                if self.what == "watches" {
                    "close watches it no longer needs (share informers), or raise the limit"
                } else {
                    "retry later, send fewer requests at once, or raise the limit"
                }
            )));
        }
        *n += 1;
        Ok(Some(Slot {
            counter: self.clone(),
            user: user.to_string(),
        }))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counter.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

struct Limits {
    config: LimitsConfig,
    /// For its authenticator.
    state: Arc<State>,
    watches: Arc<Counter>,
    inflight: Arc<Counter>,
}

/// The tower layer, in front of the service over `state`.
#[derive(Clone)]
pub struct LimitsLayer(Arc<Limits>);

impl LimitsLayer {
    pub fn new(config: LimitsConfig, state: Arc<State>) -> Self {
        LimitsLayer(Arc::new(Limits {
            watches: Counter::new("watches", "--max-watches-per-user", config.max_watches_per_user),
            inflight: Counter::new(
                "requests in flight",
                "--max-requests-inflight-per-user",
                config.max_requests_inflight_per_user,
            ),
            config,
            state,
        }))
    }
}

impl<S> tower::Layer<S> for LimitsLayer {
    type Service = LimitsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LimitsService {
            inner,
            limits: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LimitsService<S> {
    inner: S,
    limits: Arc<Limits>,
}

enum Kind {
    Watch,
    /// Logs and exec: long-running, neither counted nor timed out (their
    /// cost is on the kubelet, which bounds them).
    Stream,
    Request,
}

fn kind(uri: &http::Uri) -> Kind {
    let path = uri.path();
    // REST: `?watch=true` or `/watch/` in the path; log, exec, attach and
    // port-forward subresources stream
    let rest_watch = path.contains("/watch/")
        || uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    if rest_watch {
        return Kind::Watch;
    }
    match path.rsplit('/').next() {
        Some("Watch") => Kind::Watch,
        Some("Logs" | "Exec" | "log" | "exec" | "attach" | "portforward") => Kind::Stream,
        _ => Kind::Request,
    }
}

impl Limits {
    fn user<B>(&self, req: &http::Request<B>) -> String {
        if !self.state.authn.enabled() {
            return ANONYMOUS.into();
        }
        // the authenticator reads the bearer token and the TLS peer certificates
        let mut probe = http::Request::new(());
        if let Some(auth) = req.headers().get("authorization") {
            probe.headers_mut().insert("authorization", auth.clone());
        }
        type Tls = tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>;
        if let Some(tls) = req.extensions().get::<Tls>() {
            probe.extensions_mut().insert(tls.clone());
        }
        self.state
            .authn
            .authenticate(&tonic::Request::from_http(probe))
            .map(|u| u.name)
            .unwrap_or_else(|_| ANONYMOUS.into())
    }

    /// tonic refuses an oversized message with OUT_OF_RANGE and a message
    /// that names neither the flag nor what to do; say both.
    fn explain_too_large(
        &self,
        mut resp: http::Response<tonic::body::Body>,
    ) -> http::Response<tonic::body::Body> {
        let Some(status) = Status::from_header_map(resp.headers()) else {
            return resp;
        };
        if status.code() != tonic::Code::OutOfRange || !status.message().contains("message length too large")
        {
            return resp;
        }
        let found = status
            .message()
            .split("found ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .unwrap_or("more than the limit of");
        let status = Status::resource_exhausted(format!(
            "the request is too large: {found} bytes, the apiserver accepts at most {} bytes per request \
             (--max-request-bytes); keep large data out of objects (for example in a volume)",
            self.config.max_request_bytes
        ));
        let headers = resp.headers_mut();
        for h in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
            headers.remove(h);
        }
        if status.add_header(headers).is_err() {
            tracing::warn!("cannot rewrite the answer to an oversized request");
        }
        resp
    }
}

impl<S, B> tower::Service<http::Request<B>> for LimitsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // the clone that was made ready serves this call (tower's rule)
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.limits.clone();
        let kind = kind(req.uri());
        let user = match kind {
            Kind::Stream => String::new(),
            _ => limits.user(&req),
        };
        Box::pin(async move {
            match kind {
                Kind::Stream => inner.call(req).await,
                Kind::Watch => {
                    let slot = match limits.watches.take(&user) {
                        Ok(slot) => slot,
                        Err(status) => return Ok(status.into_http()),
                    };
                    let resp = inner.call(req).await?;
                    // the watch lasts as long as its response body
                    Ok(resp.map(|body| tonic::body::Body::new(Holding { body, _slot: slot })))
                }
                Kind::Request => {
                    let _slot = match limits.inflight.take(&user) {
                        Ok(slot) => slot,
                        Err(status) => return Ok(status.into_http()),
                    };
                    let timeout = limits.config.request_timeout;
                    let resp = if timeout.is_zero() {
                        inner.call(req).await?
                    } else {
                        match tokio::time::timeout(timeout, inner.call(req)).await {
                            Ok(resp) => resp?,
                            Err(_) => {
                                return Ok(Status::deadline_exceeded(format!(
                                    "the request did not finish within {}s (--request-timeout); \
                                     the apiserver may be overloaded, retry later",
                                    timeout.as_secs_f64()
                                ))
                                .into_http())
                            }
                        }
                    };
                    Ok(limits.explain_too_large(resp))
                }
            }
        })
    }
}

/// A response body that holds a watch's slot until the stream ends or the
/// client goes away.
struct Holding {
    body: tonic::body::Body,
    _slot: Option<Slot>,
}

impl http_body::Body for Holding {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_user_and_given_back() {
        let c = Counter::new("watches", "--max-watches-per-user", 2);
        let a1 = c.take("alice").unwrap();
        let _a2 = c.take("alice").unwrap();
        let err = c.take("alice").err().unwrap();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(
            err.message().contains("--max-watches-per-user=2"),
            "{}",
            err.message()
        );
        assert!(c.take("bob").unwrap().is_some());
        drop(a1);
        assert!(c.take("alice").unwrap().is_some());
        assert!(Counter::new("watches", "--x", 0).take("alice").unwrap().is_none());
    }

    fn config(flags: &[&str]) -> anyhow::Result<crate::Config> {
        let argv = ["rkube-apiserver", "--health-addr", "off"].iter().chain(flags);
        crate::Config::from_options(rkube_daemon::options::parse_from(argv)?)
    }

    #[test]
    fn flags_set_the_limits_and_defaults_are_kubernetes_like() {
        assert_eq!(config(&[]).unwrap().limits, LimitsConfig::default());
        assert_eq!(LimitsConfig::default().max_request_bytes, 3 * 1024 * 1024);
        let c = config(&[
            "--max-request-bytes",
            "1048576",
            "--max-watches-per-user",
            "7",
            "--max-requests-inflight-per-user",
            "0",
            "--request-timeout",
            "5",
        ])
        .unwrap();
        assert_eq!(
            c.limits,
            LimitsConfig {
                max_request_bytes: 1048576,
                max_watches_per_user: 7,
                max_requests_inflight_per_user: 0,
                request_timeout: Duration::from_secs(5),
            }
        );
        let err = config(&["--max-request-bytes", "100"]).unwrap_err().to_string();
        assert!(err.contains("--max-request-bytes must be at least"), "{err}");
    }

    #[test]
    fn the_config_file_takes_the_same_settings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("apiserver.yaml");
        std::fs::write(
            &file,
            "encryptionKeyFile: /etc/rkube/encryption.key\nmaxRequestBytes: 2097152\nmaxWatchesPerUser: 10\n\
             maxRequestsInflightPerUser: 20\nrequestTimeout: 30\n",
        )
        .unwrap();
        let c = config(&["--config", file.to_str().unwrap(), "--max-watches-per-user", "11"]).unwrap();
        assert_eq!(
            c.security.encryption_key_file.as_deref(),
            Some(std::path::Path::new("/etc/rkube/encryption.key"))
        );
        assert_eq!(c.limits.max_request_bytes, 2097152);
        assert_eq!(c.limits.max_watches_per_user, 11, "flags win over the file");
        assert_eq!(c.limits.max_requests_inflight_per_user, 20);
        assert_eq!(c.limits.request_timeout, Duration::from_secs(30));
    }

    #[test]
    fn long_running_calls_are_told_apart() {
        let kind = |u: &str| kind(&u.parse().unwrap());
        assert!(matches!(kind("/rkube.api.v1.ApiServer/Watch"), Kind::Watch));
        assert!(matches!(kind("/rkube.api.v1.ApiServer/Exec"), Kind::Stream));
        assert!(matches!(kind("/rkube.api.v1.ApiServer/Create"), Kind::Request));
        assert!(matches!(
            kind("/api/v1/pods?watch=true&resourceVersion=5"),
            Kind::Watch
        ));
        assert!(matches!(kind("/api/v1/watch/namespaces/a/pods"), Kind::Watch));
        assert!(matches!(kind("/api/v1/pods?watch=false"), Kind::Request));
        assert!(matches!(kind("/api/v1/namespaces/a/pods/p/log"), Kind::Stream));
    }
}
