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
pub const DEFAULT_MAX_REQUESTS_INFLIGHT: usize = 400;
pub const DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT: usize = 200;
/// Seconds a client is told to wait (`retry-after`) when the apiserver is full.
pub const RETRY_AFTER_SECONDS: u64 = 1;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The limits; 0 turns a count or the timeout off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    pub max_watches_per_user: usize,
    /// Requests other than watch, logs and exec being served at once.
    pub max_requests_inflight_per_user: usize,
    /// Reads (other than watch, logs and exec) the whole apiserver serves at once.
    pub max_requests_inflight: usize,
    /// Writes the whole apiserver serves at once.
    pub max_mutating_requests_inflight: usize,
    /// Deadline of a request other than watch, logs and exec.
    pub request_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_watches_per_user: DEFAULT_MAX_WATCHES_PER_USER,
            max_requests_inflight_per_user: DEFAULT_MAX_REQUESTS_INFLIGHT_PER_USER,
            max_requests_inflight: DEFAULT_MAX_REQUESTS_INFLIGHT,
            max_mutating_requests_inflight: DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT,
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
            let refuse = if self.what == "watches" {
                Status::resource_exhausted
            } else {
                overloaded
            };
            return Err(refuse(format!(
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

/// Who a request is from, for the apiserver-wide limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// `system:masters` (the admin): never limited, as Kubernetes' priority and fairness
    /// exempts that group, so an operator can always get in to fix an overload.
    Exempt,
    /// Nodes and the control plane's own daemons: may use every place, users only three
    /// quarters of them.
    System,
    User,
}

fn class_of(user: &crate::authn::UserInfo) -> Class {
    let in_group = |g: &str| user.groups.iter().any(|x| x == g);
    if in_group("system:masters") {
        Class::Exempt
    } else if in_group("system:nodes")
        || user.name.starts_with("system:node:")
        || matches!(
            user.name.as_str(),
            "system:kube-scheduler"
                | "system:kube-controller-manager"
                | "system:cloud-controller-manager"
                | "system:kube-proxy"
                | "system:rkube-ingress"
                | "system:apiserver"
        )
    {
        Class::System
    } else {
        Class::User
    }
}

/// The whole apiserver's requests of one sort (reads or writes) in flight, as
/// Kubernetes' `--max-requests-inflight` and `--max-mutating-requests-inflight`: over the
/// limit a request is refused at once (RESOURCE_EXHAUSTED, REST's 429, with
/// `retry-after`), never queued, and clients retry after a pause. A quarter of the places
/// is kept for nodes and the control plane's daemons, so a flood from users cannot starve
/// Lease renewals, pod status updates or controllers: users together get at most three
/// quarters. This is a simpler scheme than Kubernetes' priority levels with fair queues:
/// two shares and no queue, which is what keeps the cluster's own traffic flowing under a
/// flood, without queue tuning.
struct Shared {
    what: &'static str,
    flag: &'static str,
    cap: usize,
    used: std::sync::atomic::AtomicUsize,
}

/// One place in a [`Shared`] limit; given back when dropped.
struct SharedSlot(Arc<Shared>);

impl Shared {
    fn new(what: &'static str, flag: &'static str, cap: usize) -> Arc<Self> {
        Arc::new(Shared {
            what,
            flag,
            cap,
            used: Default::default(),
        })
    }

    fn take(self: &Arc<Self>, class: Class) -> Result<Option<SharedSlot>, Status> {
        use std::sync::atomic::Ordering;
        if self.cap == 0 || class == Class::Exempt {
            return Ok(None);
        }
        let room = match class {
            Class::System => self.cap,
            _ => (self.cap - self.cap / 4).max(1),
        };
        match self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < room).then_some(n + 1)
        }) {
            Ok(_) => Ok(Some(SharedSlot(self.clone()))),
            Err(n) => Err(overloaded(format!(
                "the apiserver is serving as many {} as it may ({n}; {}={}, of which a quarter is kept \
                 for nodes and the control plane); retry after {RETRY_AFTER_SECONDS}s, or raise the limit",
                self.what, self.flag, self.cap
            ))),
        }
    }
}

impl Drop for SharedSlot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// RESOURCE_EXHAUSTED with a `retry-after` (seconds), which rkube's client honours and
/// REST turns into 429 and a `Retry-After` header.
fn overloaded(message: String) -> Status {
    let mut status = Status::resource_exhausted(message);
    status.metadata_mut().insert(
        "retry-after",
        RETRY_AFTER_SECONDS.to_string().parse().expect("digits"),
    );
    status
}

struct Limits {
    config: LimitsConfig,
    /// For its authenticator.
    state: Arc<State>,
    watches: Arc<Counter>,
    inflight: Arc<Counter>,
    reads: Arc<Shared>,
    writes: Arc<Shared>,
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
            reads: Shared::new("reads", "--max-requests-inflight", config.max_requests_inflight),
            writes: Shared::new(
                "writes",
                "--max-mutating-requests-inflight",
                config.max_mutating_requests_inflight,
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
    /// A request that changes objects (counted against the writes' limit).
    Write,
}

fn kind(method: &http::Method, uri: &http::Uri) -> Kind {
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
        Some(
            "Create"
            | "Update"
            | "UpdateStatus"
            | "Patch"
            | "Delete"
            | "Bind"
            | "Evict"
            | "CreateToken"
            | "IssueNodeCertificate"
            | "IssueKubeletServingCertificate",
        ) => Kind::Write,
        // other gRPC calls (rkube's reads, health checks) are POSTs that read
        _ if path.starts_with("/rkube.") || path.starts_with("/grpc.") => Kind::Request,
        // REST: the method says
        _ if matches!(
            *method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        ) =>
        {
            Kind::Request
        }
        _ => Kind::Write,
    }
}

impl Limits {
    fn user<B>(&self, req: &http::Request<B>) -> crate::authn::UserInfo {
        if !self.state.authn.enabled() {
            return crate::authn::UserInfo::anonymous();
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
            .unwrap_or_else(|_| crate::authn::UserInfo::anonymous())
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
    B: http_body::Body + Send + Unpin + 'static,
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
        let max_body = limits.config.max_request_bytes;
        let kind = kind(req.method(), req.uri());
        let user = match kind {
            Kind::Stream => Default::default(),
            _ => limits.user(&req),
        };
        Box::pin(async move {
            match kind {
                Kind::Stream => inner.call(req).await,
                Kind::Watch => {
                    let slot = match limits.watches.take(&user.name) {
                        Ok(slot) => slot,
                        Err(status) => return Ok(refuse(req, status, max_body).await),
                    };
                    let resp = inner.call(req).await?;
                    // the watch lasts as long as its response body
                    Ok(resp.map(|body| tonic::body::Body::new(Holding { body, _slot: slot })))
                }
                Kind::Request | Kind::Write => {
                    let shared = match kind {
                        Kind::Write => &limits.writes,
                        _ => &limits.reads,
                    };
                    let _place = match shared.take(class_of(&user)) {
                        Ok(place) => place,
                        Err(status) => return Ok(refuse(req, status, max_body).await),
                    };
                    let _slot = match limits.inflight.take(&user.name) {
                        Ok(slot) => slot,
                        Err(status) => return Ok(refuse(req, status, max_body).await),
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

/// The answer to a refused request, sent once its body has been read (up to `max` bytes):
/// answering before reading makes HTTP/2 reset the stream, and a connection that collects
/// many resets is closed by the server's own protection against reset floods, which would
/// cut every other call sharing the connection (all of a controller-manager's, say).
async fn refuse<B>(req: http::Request<B>, status: Status, max: usize) -> http::Response<tonic::body::Body>
where
    B: http_body::Body + Unpin,
{
    use http_body_util::BodyExt as _;
    let mut body = req.into_body();
    let mut read = 0usize;
    while read <= max {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, bytes::Buf::remaining),
            _ => break,
        }
    }
    status.into_http()
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
            "--max-requests-inflight",
            "50",
            "--max-mutating-requests-inflight",
            "20",
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
                max_requests_inflight: 50,
                max_mutating_requests_inflight: 20,
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
             maxRequestsInflightPerUser: 20\nmaxMutatingRequestsInflight: 30\nrequestTimeout: 30\n",
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
        assert_eq!(c.limits.max_mutating_requests_inflight, 30);
        assert_eq!(c.limits.request_timeout, Duration::from_secs(30));
    }

    #[test]
    fn long_running_calls_reads_and_writes_are_told_apart() {
        let kind = |m: &str, u: &str| kind(&m.parse().unwrap(), &u.parse().unwrap());
        let post = |u: &str| kind("POST", u);
        assert!(matches!(post("/rkube.api.v1.ApiServer/Watch"), Kind::Watch));
        assert!(matches!(post("/rkube.api.v1.ApiServer/Exec"), Kind::Stream));
        assert!(matches!(post("/rkube.api.v1.ApiServer/Create"), Kind::Write));
        assert!(matches!(post("/rkube.api.v1.ApiServer/Evict"), Kind::Write));
        assert!(matches!(post("/rkube.api.v1.ApiServer/List"), Kind::Request));
        assert!(matches!(post("/rkube.api.v1.ApiServer/Version"), Kind::Request));
        assert!(matches!(post("/grpc.health.v1.Health/Check"), Kind::Request));
        assert!(matches!(
            kind("GET", "/api/v1/pods?watch=true&resourceVersion=5"),
            Kind::Watch
        ));
        assert!(matches!(
            kind("GET", "/api/v1/watch/namespaces/a/pods"),
            Kind::Watch
        ));
        assert!(matches!(kind("GET", "/api/v1/pods?watch=false"), Kind::Request));
        assert!(matches!(
            kind("GET", "/api/v1/namespaces/a/pods/p/log"),
            Kind::Stream
        ));
        assert!(matches!(kind("POST", "/api/v1/namespaces/a/pods"), Kind::Write));
        assert!(matches!(
            kind("PATCH", "/apis/apps/v1/namespaces/a/deployments/d"),
            Kind::Write
        ));
        assert!(matches!(
            kind("DELETE", "/api/v1/namespaces/a/pods/p"),
            Kind::Write
        ));
    }

    #[test]
    fn users_get_three_quarters_of_the_places_the_system_all_and_admins_are_exempt() {
        let user = |name: &str, group: &str| crate::authn::UserInfo {
            name: name.into(),
            groups: vec![group.into()],
            ..Default::default()
        };
        let limit = Shared::new("writes", "--max-mutating-requests-inflight", 8);
        let alice = class_of(&user("alice", "system:authenticated"));
        let mut held: Vec<_> = (0..6).map(|_| limit.take(alice).unwrap()).collect();
        let refused = limit.take(alice).err().expect("a user past 3/4 is refused");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert_eq!(refused.metadata().get("retry-after").unwrap(), "1");
        assert!(
            refused.message().contains("--max-mutating-requests-inflight=8"),
            "{}",
            refused.message()
        );
        let node = class_of(&user("system:node:n1", "system:nodes"));
        let scheduler = class_of(&user("system:kube-scheduler", "system:authenticated"));
        held.push(limit.take(node).unwrap());
        held.push(limit.take(scheduler).unwrap());
        assert!(limit.take(node).is_err(), "nobody past the limit");
        let admin = class_of(&user("admin", "system:masters"));
        assert!(limit.take(admin).unwrap().is_none(), "admins are not counted");
        held.truncate(5);
        assert!(
            limit.take(alice).unwrap().is_some(),
            "places come back when requests end"
        );
        let off = Shared::new("reads", "--max-requests-inflight", 0);
        assert!(off.take(alice).unwrap().is_none());
    }
}
