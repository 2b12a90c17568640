//! `Client`: one gRPC channel to the apiserver, shared by every `Api<K>`,
//! informer and controller of a process, plus the dynamic calls rkubectl
//! makes on kinds it learns at run time.
//!
//! Over 900 lines on purpose: one short method per apiserver RPC (objects,
//! subresources, streams, tokens, evictions, port-forward), so the whole gRPC
//! surface a client sees stays in one place beside the channel they share.

use crate::config::{server_list, validate_server, ClientConfig};
use crate::error::{Error, Result};
use crate::params::{DeleteParams, ListParams, ObjectList, PostParams, Subresource, WatchEvent, WatchParams};
use futures::stream::{BoxStream, StreamExt};
use prost_types::Any;
use rkube_api::resource::{visit_kind, KindVisitor};
use rkube_api::rpc::api_server_client::ApiServerClient;
use rkube_api::rpc::{self, ResourceId};
use rkube_api::{from_any, to_any, DynObject, Resource, ResourceInfo};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// How long a unary call may take before the client gives up. Watches are
/// not limited (they are meant to stay open); dead connections under them
/// are found by HTTP/2 keepalive instead.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Lists of thousands of pods exceed tonic's 4 MiB default.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

type Grpc = ApiServerClient<InterceptedService<Channel, Auth>>;

/// Adds the bearer token of the client config to every call.
#[derive(Clone)]
struct Auth {
    token: Option<MetadataValue<Ascii>>,
}

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            req.metadata_mut().insert("authorization", token.clone());
        }
        Ok(req)
    }
}

/// The rustls settings for an `https://` server: the cluster CA to verify
/// the server with (required: rkube never trusts the system roots for its
/// own cluster) and the client certificate, if any. Certificates with an
/// `http://` server are an error, so they are never silently unused.
fn tls_config(config: &ClientConfig) -> Result<Option<tonic::transport::ClientTlsConfig>> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |field: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| Error::Config {
            path: PathBuf::from(field),
            msg: format!("cannot read {}: {e}", p.display()),
        })
    };
    let err = |field: &str, msg: String| Error::Config {
        path: PathBuf::from(field),
        msg,
    };
    if !config.server.starts_with("https://") {
        if config.client_certificate.is_some()
            || config.certificate_authority.is_some()
            || config.client_certificate_data.is_some()
            || config.certificate_authority_data.is_some()
        {
            return Err(err(
                "server",
                format!(
                    "{:?}: certificates are configured, so the server must be an https:// address",
                    config.server
                ),
            ));
        }
        return Ok(None);
    }
    // inline PEM (a kubeconfig's `*-data`) wins over a file
    let pem =
        |field: &str, data: &Option<Vec<u8>>, file: &Option<std::path::PathBuf>| -> Result<Option<Vec<u8>>> {
            match (data, file) {
                (Some(d), _) => Ok(Some(d.clone())),
                (None, Some(p)) => read(field, p).map(Some),
                (None, None) => Ok(None),
            }
        };
    let ca = pem(
        "certificateAuthority",
        &config.certificate_authority_data,
        &config.certificate_authority,
    )?
    .ok_or_else(|| {
        err(
            "certificateAuthority",
            format!(
                "{:?} is https: give the cluster CA (ca.crt) that signs the apiserver's certificate",
                config.server
            ),
        )
    })?;
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    let cert = pem(
        "clientCertificate",
        &config.client_certificate_data,
        &config.client_certificate,
    )?;
    let key = pem("clientKey", &config.client_key_data, &config.client_key)?;
    match (cert, key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        _ => {
            return Err(err(
                "clientCertificate",
                "clientCertificate and clientKey go together: give both or neither".into(),
            ))
        }
    }
    Ok(Some(tls))
}

/// The apiservers a client may talk to, each with its own lazily connected channel, and
/// which one requests go to now. Shared by every clone of a [`Client`], so when one request
/// finds its apiserver gone, the whole process moves on to the next.
struct Servers {
    list: Vec<(Arc<str>, Grpc)>,
    current: AtomicUsize,
}

impl Servers {
    /// The server requests go to now: its index, address and channel.
    fn pick(&self) -> (usize, &Arc<str>, Grpc) {
        let i = self.current.load(Ordering::Relaxed) % self.list.len();
        let (url, grpc) = &self.list[i];
        (i, url, grpc.clone())
    }

    /// Server `failed` could not be reached: the next one in the list takes over, unless
    /// another request has already moved on from it (then its choice stands).
    fn fail_over_from(&self, failed: usize) {
        let next = next_server(failed, self.list.len());
        let _ = self
            .current
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Round robin: the server after `failed`, wrapping around.
fn next_server(failed: usize, count: usize) -> usize {
    (failed + 1) % count.max(1)
}

/// A cheap-to-clone handle on the connection to the apiserver. The
/// connection is made on first use and remade after a failure, so a
/// daemon started before the apiserver simply retries.
///
/// Given several apiservers (`server: https://a:6443,https://b:6443`), it
/// talks to one at a time and moves to the next when a request cannot reach
/// it (connection refused, reset, UNAVAILABLE): the request is sent again to
/// the next server, round robin from the failed one, with a growing pause
/// once every server has failed, until the request timeout. Requests that
/// may have reached a server before it broke are sent again only when doing
/// so twice changes nothing (reads, watches, resourceVersion-guarded
/// updates); others (create, delete, patch, bind, ...) return the error, as
/// they would with one server, and the next request goes to the next server.
/// All apiservers share the cluster CA, so one TLS identity serves them all.
#[derive(Clone)]
pub struct Client {
    servers: Arc<Servers>,
    namespace: Arc<str>,
    timeout: Duration,
    /// Sent as `x-rkube-field-manager`: the apiserver then records this
    /// client's writes in the objects' managedFields.
    field_manager: Option<MetadataValue<Ascii>>,
}

impl fmt::Debug for Client {
    // The token stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server())
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `url` (`http://127.0.0.1:6443`) with no credentials.
    /// Does not connect yet; must be called inside a tokio runtime.
    pub fn connect(url: &str) -> Result<Client> {
        Self::from_config(&ClientConfig::for_server(url))
    }

    /// What a daemon connects with: `apiserver` (empty: the file's server)
    /// and the credentials of its `--kubeconfig` file, if it has one.
    pub fn for_daemon(apiserver: &str, kubeconfig: Option<&std::path::Path>) -> Result<Client> {
        Self::from_config(&ClientConfig::for_daemon(Some(apiserver), kubeconfig)?)
    }

    /// A client for the server, namespace and token of a config.
    pub fn from_config(config: &ClientConfig) -> Result<Client> {
        let bad = |msg: String| Error::Config {
            path: PathBuf::from("server"),
            msg,
        };
        validate_server(&config.server).map_err(bad)?;
        let tls = tls_config(config)?;
        // Channel::new spawns its worker on the current runtime and would
        // panic outside one.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::InvalidRequest(
                "rkube_client::Client must be created inside a tokio runtime".into(),
            ));
        }
        let token = match &config.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| Error::Config {
                        path: PathBuf::from("token"),
                        msg: "the token must be printable ASCII".into(),
                    })?,
            ),
            None => None,
        };
        let mut list = Vec::new();
        for server in server_list(&config.server) {
            let endpoint = Endpoint::from_shared(server.to_string())
                .map_err(|e| bad(format!("{server:?}: {e}")))?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .tcp_keepalive(Some(KEEPALIVE_INTERVAL))
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                // Watches sit idle for long stretches; without pings a dead
                // server would leave them hanging forever.
                .keep_alive_while_idle(true);
            let endpoint = match &tls {
                // The same CA and client certificate for every apiserver; each is
                // verified against its own name (its certificate's SANs).
                Some(tls) => endpoint
                    .tls_config(tls.clone())
                    .map_err(|e| bad(format!("{server:?}: TLS settings: {e}")))?,
                None => endpoint,
            };
            let channel = endpoint.connect_lazy();
            let grpc = ApiServerClient::with_interceptor(channel, Auth { token: token.clone() })
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            list.push((Arc::from(server), grpc));
        }
        Ok(Client {
            servers: Arc::new(Servers {
                list,
                current: AtomicUsize::new(0),
            }),
            namespace: config.namespace.as_str().into(),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            field_manager: None,
        })
    }

    /// Loads the default client config (`$RKUBECONFIG` or
    /// `~/.rkube/config`) and connects with it.
    pub fn try_default() -> Result<Client> {
        Self::from_config(&ClientConfig::load_default()?)
    }

    /// The same connection with another unary-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The same connection writing as field manager `name` (as kubectl's
    /// `--field-manager`): the apiserver records the fields this client's
    /// writes change as `name`'s. Without it (controllers) writes are not
    /// tracked, which costs the apiserver nothing.
    pub fn with_field_manager(mut self, name: &str) -> Client {
        self.field_manager = name.parse().ok();
        self
    }

    /// The address of the apiserver requests go to now, for messages.
    pub fn server(&self) -> &str {
        self.servers.pick().1
    }

    /// Every apiserver this client may talk to, in order.
    pub fn servers(&self) -> Vec<&str> {
        self.servers.list.iter().map(|(url, _)| &**url).collect()
    }

    /// The config's default namespace.
    pub fn default_namespace(&self) -> &str {
        &self.namespace
    }

    fn grpc(&self) -> Grpc {
        self.servers.pick().2
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        // Tells the server when to give up too.
        req.set_timeout(self.timeout);
        if let Some(manager) = &self.field_manager {
            req.metadata_mut()
                .insert("x-rkube-field-manager", manager.clone());
        }
        req
    }

    /// One call of `call`: `f` sends `msg` on a fresh handle. When the apiserver is full
    /// (RESOURCE_EXHAUSTED with a `retry-after`, its answer to a flood) the call is sent
    /// again after that pause, growing with each refusal and with jitter so that many
    /// clients do not come back at once, up to [`OVERLOAD_RETRIES`] times, as client-go
    /// retries 429s with Retry-After. Refusals without `retry-after` (a disruption budget,
    /// a user's own watch limit) are the caller's to handle.
    ///
    /// With several apiservers, a call that cannot reach its server moves to the next (see
    /// [`Client`]); the request timeout bounds the whole search.
    async fn unary<M, T, F, Fut>(&self, call: &'static str, msg: M, f: F) -> Result<T>
    where
        M: Clone,
        F: Fn(Grpc, tonic::Request<M>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let count = self.servers.list.len();
        let mut attempt = 0;
        let mut unreachable = 0u32;
        loop {
            let (index, server, grpc) = self.servers.pick();
            let fut = f(grpc, self.request(msg.clone()));
            let status = match tokio::time::timeout(self.timeout, fut).await {
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => return Err(self.timed_out(call, server)),
            };
            if count > 1 && is_unreachable(&status) {
                self.servers.fail_over_from(index);
                unreachable += 1;
                let resend = idempotent(call) || never_sent(&status);
                let next = self.servers.pick().1.clone();
                tracing::warn!(%server, %next, call, error = %status.message(), resend, "apiserver unreachable; failing over");
                if !resend {
                    return Err(Error::from_status(status, server));
                }
                // Every server failed once more: wait before the next round.
                if unreachable.is_multiple_of(count as u32) {
                    let pause = failover_pause(unreachable / count as u32);
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(Error::from_status(status, server));
                    }
                    tokio::time::sleep(pause).await;
                }
                continue;
            }
            match retry_after(&status) {
                Some(pause) if attempt < OVERLOAD_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(overload_pause(pause, attempt)).await;
                }
                _ => return Err(Error::from_status(status, server)),
            }
        }
    }

    fn timed_out(&self, call: &'static str, server: &str) -> Error {
        Error::Timeout {
            server: server.to_string(),
            call,
            after: self.timeout,
        }
    }

    async fn unary_once<T>(
        &self,
        call: &'static str,
        fut: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        let server = self.server().to_string();
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(Error::from_status(status, &server)),
            Err(_) => Err(self.timed_out(call, &server)),
        }
    }

    // ---------------------------------------------------------------
    // Calls on objects in their wire form; Api<K> and the *_dyn calls
    // are thin layers over these. Public for kinds known only at run time:
    // the kinds CustomResourceDefinitions add travel as JSON in the `Any`
    // (type URL `rkube.dev/json/GROUP/VERSION/KIND`).

    pub async fn create_any(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        object: Any,
        pp: &PostParams,
    ) -> Result<Any> {
        let req = rpc::CreateRequest {
            resource: Some(resource_id(info)),
            namespace: scope(info, namespace).to_string(),
            object: Some(object),
            dry_run: pp.dry_run,
        };
        let resp = self
            .unary("Create", req, |mut g, r| async move { g.create(r).await })
            .await?;
        returned(resp.object, "Create")
    }

    pub async fn get_any(&self, info: &ResourceInfo, namespace: &str, name: &str) -> Result<Any> {
        let req = rpc::GetRequest {
            resource: Some(resource_id(info)),
            namespace: scope(info, namespace).to_string(),
            name: name.to_string(),
        };
        let resp = self
            .unary("Get", req, |mut g, r| async move { g.get(r).await })
            .await?;
        returned(resp.object, "Get")
    }

    pub async fn list_any(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        lp: &ListParams,
    ) -> Result<ObjectList<Any>> {
        let req = rpc::ListRequest {
            resource: Some(resource_id(info)),
            namespace: scope(info, namespace).to_string(),
            label_selector: lp.label_selector.clone(),
            field_selector: lp.field_selector.clone(),
            limit: i32::try_from(lp.limit).unwrap_or(i32::MAX),
            r#continue: lp.continue_token.clone(),
        };
        let resp = self
            .unary("List", req, |mut g, r| async move { g.list(r).await })
            .await?;
        Ok(ObjectList {
            items: resp.items,
            resource_version: resp.resource_version,
            continue_token: resp.r#continue,
            remaining_item_count: resp.remaining_item_count,
        })
    }

    pub async fn update_any(
        &self,
        info: &ResourceInfo,
        object: Any,
        sub: Subresource,
        pp: &PostParams,
    ) -> Result<Any> {
        let req = rpc::UpdateRequest {
            resource: Some(resource_id(info)),
            object: Some(object),
            dry_run: pp.dry_run,
        };
        let resp = match sub {
            Subresource::Main => {
                self.unary("Update", req, |mut g, r| async move { g.update(r).await })
                    .await?
            }
            Subresource::Status => {
                self.unary(
                    "UpdateStatus",
                    req,
                    |mut g, r| async move { g.update_status(r).await },
                )
                .await?
            }
            Subresource::Approval => {
                return Err(Error::Api {
                    code: tonic::Code::Unimplemented,
                    reason: "MethodNotAllowed".into(),
                    message: "a CertificateSigningRequest's approval is written with a patch (Api::patch_approval_merge), not an update".into(),
                    causes: Vec::new(),
                })
            }
        };
        returned(resp.object, "Update")
    }

    pub async fn patch_any(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
        (patch_type, patch): (&str, &serde_json::Value),
        sub: Subresource,
        pp: &PostParams,
    ) -> Result<Any> {
        if patch_type != "json" && !patch.is_object() {
            return Err(Error::InvalidRequest(format!(
                "a {patch_type} patch must be a JSON object, not {patch}"
            )));
        }
        let req = rpc::PatchRequest {
            resource: Some(resource_id(info)),
            namespace: scope(info, namespace).to_string(),
            name: name.to_string(),
            patch_type: patch_type.into(),
            patch: serde_json::to_vec(patch)?,
            subresource: sub.as_str().into(),
            dry_run: pp.dry_run,
        };
        let resp = self
            .unary("Patch", req, |mut g, r| async move { g.patch(r).await })
            .await?;
        returned(resp.object, "Patch")
    }

    pub async fn delete_any(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
        dp: &DeleteParams,
    ) -> Result<Option<Any>> {
        let req = rpc::DeleteRequest {
            resource: Some(resource_id(info)),
            namespace: scope(info, namespace).to_string(),
            name: name.to_string(),
            preconditions: dp
                .preconditions
                .as_ref()
                .map(|p| rkube_api::meta::v1::Preconditions {
                    uid: p.uid.clone().unwrap_or_default(),
                    resource_version: p.resource_version.clone().unwrap_or_default(),
                }),
            propagation_policy: dp
                .propagation_policy
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            grace_period_seconds: dp.grace_period_seconds,
            dry_run: dp.dry_run,
        };
        let resp = self
            .unary("Delete", req, |mut g, r| async move { g.delete(r).await })
            .await?;
        Ok(resp.object)
    }

    /// Opens a watch; events keep their wire form, with the event's
    /// resourceVersion alongside.
    pub async fn watch_any(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        wp: &WatchParams,
    ) -> Result<BoxStream<'static, Result<(WatchEvent<Any>, String)>>> {
        let req = rpc::WatchRequest {
            resource: Some(resource_id(info)),
            namespace: scope(info, namespace).to_string(),
            label_selector: wp.label_selector.clone(),
            field_selector: wp.field_selector.clone(),
            resource_version: wp.resource_version.clone(),
            allow_bookmarks: wp.allow_bookmarks,
        };
        // Opening fails over like any read; once open, a broken stream ends with an error
        // and the watcher opens it again from the last resourceVersion it saw, on
        // whichever apiserver answers then.
        let stream = self
            .unary("Watch", req, |mut g, mut r| async move {
                // No grpc-timeout here: the stream is meant to outlive it.
                r.metadata_mut().remove("grpc-timeout");
                g.watch(r).await
            })
            .await?;
        let server: Arc<str> = self.server().into();
        Ok(stream
            .map(move |item| match item {
                Ok(ev) => decode_raw_event(ev),
                Err(status) => Err(Error::from_status(status, &server)),
            })
            .boxed())
    }

    // ---------------------------------------------------------------
    // Dynamic calls, for rkubectl and other code that learns the kind at
    // run time.

    /// Creates an object of any kind in `namespace` (or the object's own
    /// namespace when it names one).
    pub async fn create_dyn(&self, obj: &DynObject, namespace: &str) -> Result<DynObject> {
        self.create_dyn_with(obj, namespace, &PostParams::default()).await
    }

    pub async fn create_dyn_with(
        &self,
        obj: &DynObject,
        namespace: &str,
        pp: &PostParams,
    ) -> Result<DynObject> {
        let ns = request_namespace(obj.info, &obj.namespace, namespace)?;
        let any = if obj.info.namespaced && obj.namespace.is_empty() {
            set_namespace(obj.info, &obj.any, &ns)?
        } else {
            obj.any.clone()
        };
        let any = self.create_any(obj.info, &ns, any, pp).await?;
        Ok(DynObject::from_any(any)?)
    }

    pub async fn get_dyn(&self, info: &ResourceInfo, namespace: &str, name: &str) -> Result<DynObject> {
        need_namespace(info, namespace, name)?;
        Ok(DynObject::from_any(self.get_any(info, namespace, name).await?)?)
    }

    /// One page; `namespace` "" lists every namespace.
    pub async fn list_dyn(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        lp: &ListParams,
    ) -> Result<ObjectList<DynObject>> {
        let list = self.list_any(info, namespace, lp).await?;
        Ok(ObjectList {
            items: list
                .items
                .into_iter()
                .map(DynObject::from_any)
                .collect::<std::result::Result<_, _>>()?,
            resource_version: list.resource_version,
            continue_token: list.continue_token,
            remaining_item_count: list.remaining_item_count,
        })
    }

    /// Replaces an object; its resourceVersion guards against lost updates.
    pub async fn update_dyn(&self, obj: &DynObject) -> Result<DynObject> {
        self.update_dyn_with(obj, Subresource::Main, &PostParams::default())
            .await
    }

    pub async fn update_dyn_with(
        &self,
        obj: &DynObject,
        sub: Subresource,
        pp: &PostParams,
    ) -> Result<DynObject> {
        let any = self.update_any(obj.info, obj.any.clone(), sub, pp).await?;
        Ok(DynObject::from_any(any)?)
    }

    /// JSON merge patch (RFC 7386) of the object's main resource.
    pub async fn patch_dyn(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<DynObject> {
        self.patch_dyn_typed(info, namespace, name, "merge", patch).await
    }

    /// A patch of `patch_type` of the object's main resource: "merge" (RFC 7386), "json"
    /// (RFC 6902) or "strategic" (Kubernetes' strategic merge patch).
    pub async fn patch_dyn_typed(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
        patch_type: &str,
        patch: &serde_json::Value,
    ) -> Result<DynObject> {
        need_namespace(info, namespace, name)?;
        let pp = PostParams::default();
        let any = self
            .patch_any(info, namespace, name, (patch_type, patch), Subresource::Main, &pp)
            .await?;
        Ok(DynObject::from_any(any)?)
    }

    /// Deletes an object; returns its last state when the server sends it
    /// (with `deletionTimestamp` set if finalizers keep it for now).
    pub async fn delete_dyn(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
        dp: &DeleteParams,
    ) -> Result<Option<DynObject>> {
        need_namespace(info, namespace, name)?;
        match self.delete_any(info, namespace, name, dp).await? {
            Some(any) => Ok(Some(DynObject::from_any(any)?)),
            None => Ok(None),
        }
    }

    /// Watches a collection; `namespace` "" watches every namespace.
    pub async fn watch_dyn(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        wp: &WatchParams,
    ) -> Result<BoxStream<'static, Result<WatchEvent<DynObject>>>> {
        let stream = self.watch_any(info, namespace, wp).await?;
        Ok(stream
            .map(|item| {
                let (ev, _rv) = item?;
                Ok(match ev {
                    WatchEvent::Added(a) => WatchEvent::Added(DynObject::from_any(a)?),
                    WatchEvent::Modified(a) => WatchEvent::Modified(DynObject::from_any(a)?),
                    WatchEvent::Deleted(a) => WatchEvent::Deleted(DynObject::from_any(a)?),
                    WatchEvent::Bookmark(rv) => WatchEvent::Bookmark(rv),
                })
            })
            .boxed())
    }

    /// The metadata of an object of a kind known only at run time (one a
    /// CustomResourceDefinition added), named by apiVersion and kind as an
    /// ownerReference names it: the kind is found through discovery, and the
    /// object travels as JSON. `Ok(None)` when the server has no such object.
    pub async fn get_metadata_by_kind(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<rkube_api::meta::v1::ObjectMeta>> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resources = self.discovery().await?;
        let Some(r) = resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
        else {
            return Err(Error::InvalidRequest(format!(
                "the server does not serve kind {kind} of apiVersion {api_version}"
            )));
        };
        let req = rpc::GetRequest {
            resource: Some(ResourceId {
                group: r.group.clone(),
                resource: r.name.clone(),
            }),
            namespace: if r.namespaced {
                namespace.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        };
        let resp = match self
            .unary("Get", req, |mut g, r| async move { g.get(r).await })
            .await
        {
            Ok(resp) => resp,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let any = returned(resp.object, "Get")?;
        let obj: serde_json::Value = serde_json::from_slice(&any.value)
            .map_err(|e| Error::InvalidRequest(format!("{kind} {name:?} did not come back as JSON: {e}")))?;
        let meta = serde_json::from_value(obj.get("metadata").cloned().unwrap_or_default())
            .map_err(|e| Error::InvalidRequest(format!("the metadata of {kind} {name:?}: {e}")))?;
        Ok(Some(meta))
    }

    /// The kinds the server serves.
    pub async fn discovery(&self) -> Result<Vec<rpc::ApiResource>> {
        let req = rpc::DiscoveryRequest {};
        Ok(self
            .unary("Discovery", req, |mut g, r| async move { g.discovery(r).await })
            .await?
            .resources)
    }

    /// Whether the caller (or the user and groups it names, which it must
    /// be allowed to impersonate) may do what `req` says: `auth can-i`.
    pub async fn access_review(&self, req: rpc::AccessReviewRequest) -> Result<rpc::AccessReviewResponse> {
        self.unary(
            "AccessReview",
            req,
            |mut g, r| async move { g.access_review(r).await },
        )
        .await
    }

    pub async fn version(&self) -> Result<rpc::VersionResponse> {
        let req = rpc::VersionRequest {};
        self.unary("Version", req, |mut g, r| async move { g.version(r).await })
            .await
    }

    /// Has the apiserver sign node `node_name`'s client certificate for
    /// the key of `csr_pem` (a kubelet with a bootstrap token, which the
    /// call consumes).
    pub async fn issue_node_certificate(
        &self,
        node_name: &str,
        csr_pem: &str,
    ) -> Result<rpc::IssueNodeCertificateResponse> {
        let req = rpc::IssueNodeCertificateRequest {
            node_name: node_name.to_string(),
            csr_pem: csr_pem.to_string(),
        };
        self.unary("IssueNodeCertificate", req, |mut g, r| async move {
            g.issue_node_certificate(r).await
        })
        .await
    }

    /// Has the apiserver sign this node's kubelet serving certificate for
    /// the key of `csr_pem`, valid for `ip_addresses` and `dns_names` (a
    /// kubelet with its node credentials; the node is the caller).
    pub async fn issue_kubelet_serving_certificate(
        &self,
        csr_pem: &str,
        ip_addresses: Vec<String>,
        dns_names: Vec<String>,
    ) -> Result<rpc::IssueKubeletServingCertificateResponse> {
        let req = rpc::IssueKubeletServingCertificateRequest {
            csr_pem: csr_pem.to_string(),
            ip_addresses,
            dns_names,
        };
        self.unary("IssueKubeletServingCertificate", req, |mut g, r| async move {
            g.issue_kubelet_serving_certificate(r).await
        })
        .await
    }

    /// A token for ServiceAccount `req.namespace/req.name` (TokenRequest,
    /// `serviceaccounts/token`): signed by the apiserver, for the
    /// audiences asked (default the apiserver's), optionally bound to a pod.
    pub async fn create_token(&self, req: rpc::CreateTokenRequest) -> Result<rpc::CreateTokenResponse> {
        self.unary(
            "CreateToken",
            req,
            |mut g, r| async move { g.create_token(r).await },
        )
        .await
    }

    /// A container's log (pods/log), proxied by the apiserver from the
    /// pod's kubelet; with `follow`, the stream stays open for new lines.
    pub async fn logs(
        &self,
        req: rkube_api::kubelet::v1::LogsRequest,
    ) -> Result<BoxStream<'static, Result<bytes::Bytes>>> {
        // No grpc-timeout: a followed log is meant to outlive it.
        let mut grpc = self.grpc();
        let follow = req.follow;
        let call = grpc.logs(tonic::Request::new(req));
        let stream = if follow {
            call.await
                .map_err(|s| Error::from_status(s, self.server()))?
                .into_inner()
        } else {
            self.unary_once("Logs", call).await?
        };
        let server: Arc<str> = self.server().into();
        Ok(stream
            .map(move |item| match item {
                Ok(chunk) => Ok(bytes::Bytes::from(chunk.data)),
                Err(status) => Err(Error::from_status(status, &server)),
            })
            .boxed())
    }

    /// Runs a command in a container (pods/exec). `input` must start with
    /// an `ExecInput::Start`; stdin follows. Output ends with the exit code.
    pub async fn exec(
        &self,
        input: impl futures::Stream<Item = rkube_api::kubelet::v1::ExecInput> + Send + 'static,
    ) -> Result<BoxStream<'static, Result<rkube_api::kubelet::v1::exec_output::Output>>> {
        let mut grpc = self.grpc();
        let stream = grpc
            .exec(tonic::Request::new(input))
            .await
            .map_err(|s| Error::from_status(s, self.server()))?
            .into_inner();
        let server: Arc<str> = self.server().into();
        Ok(stream
            .filter_map(move |item| {
                let out = match item {
                    Ok(o) => o.output.map(Ok),
                    Err(status) => Some(Err(Error::from_status(status, &server))),
                };
                futures::future::ready(out)
            })
            .boxed())
    }

    /// One TCP connection to a port of a pod (pods/portforward), through the
    /// apiserver and the pod's kubelet. `input` must start with a
    /// `PortForwardInput::Start`; the bytes for the pod follow, then `eof`.
    /// The output is the pod's bytes and ends when the pod closes.
    pub async fn port_forward(
        &self,
        input: impl futures::Stream<Item = rkube_api::kubelet::v1::PortForwardInput> + Send + 'static,
    ) -> Result<BoxStream<'static, Result<Vec<u8>>>> {
        let mut grpc = self.grpc();
        let stream = grpc
            .port_forward(tonic::Request::new(input))
            .await
            .map_err(|s| Error::from_status(s, self.server()))?
            .into_inner();
        let server: Arc<str> = self.server().into();
        Ok(stream
            .map(move |item| item.map(|o| o.data).map_err(|s| Error::from_status(s, &server)))
            .boxed())
    }

    /// CPU and memory usage of pods (and nodes), gathered by the apiserver
    /// from the kubelets (`rkubectl top`, the autoscaler).
    pub async fn metrics(&self, req: rpc::MetricsRequest) -> Result<rpc::MetricsResponse> {
        self.unary("Metrics", req, |mut g, r| async move { g.metrics(r).await })
            .await
    }

    /// Binds a pending pod to a node. `uid`, when non-empty, must be the
    /// pod's: a pod deleted and recreated under the same name is not bound
    /// by mistake.
    pub async fn bind(&self, namespace: &str, name: &str, uid: &str, node: &str) -> Result<()> {
        let req = rpc::BindRequest {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: uid.to_string(),
            node_name: node.to_string(),
        };
        self.unary("Bind", req, |mut g, r| async move { g.bind(r).await })
            .await?;
        Ok(())
    }

    /// Evicts a pod through its `eviction` subresource: the pod is deleted (with
    /// `eviction.delete_options`) unless a PodDisruptionBudget covering it allows no
    /// disruption now, which answers TooManyRequests ([`Error::is_too_many_requests`]):
    /// retry later, as `rkubectl drain` does.
    pub async fn evict(
        &self,
        namespace: &str,
        name: &str,
        eviction: rkube_api::policy::v1::Eviction,
    ) -> Result<()> {
        let req = rpc::EvictRequest {
            namespace: namespace.to_string(),
            name: name.to_string(),
            eviction: Some(eviction),
        };
        self.unary("Evict", req, |mut g, r| async move { g.evict(r).await })
            .await?;
        Ok(())
    }
}

pub(crate) fn resource_id(info: &ResourceInfo) -> ResourceId {
    ResourceId {
        group: info.group.to_string(),
        resource: info.plural.to_string(),
    }
}

/// Cluster-scoped kinds live in no namespace whatever the caller says.
fn scope<'a>(info: &ResourceInfo, namespace: &'a str) -> &'a str {
    if info.namespaced {
        namespace
    } else {
        ""
    }
}

pub(crate) fn need_namespace(info: &ResourceInfo, namespace: &str, name: &str) -> Result<()> {
    if info.namespaced && namespace.is_empty() {
        return Err(Error::InvalidRequest(format!(
            "{} {name:?}: a namespace is required to address one {}",
            info.kind, info.singular
        )));
    }
    Ok(())
}

/// The namespace to create in: the object's own, else the caller's; both
/// given and different is refused, as kubectl does.
pub(crate) fn request_namespace(info: &ResourceInfo, own: &str, given: &str) -> Result<String> {
    if !info.namespaced {
        return Ok(String::new());
    }
    match (own.is_empty(), given.is_empty()) {
        (false, false) if own != given => Err(Error::InvalidRequest(format!(
            "the namespace from the provided object {own:?} does not match the namespace {given:?}; \
             pass --namespace={own} or remove metadata.namespace from the object"
        ))),
        (false, _) => Ok(own.to_string()),
        (true, false) => Ok(given.to_string()),
        (true, true) => Err(Error::InvalidRequest(format!(
            "{}: a namespace is required to create a {}",
            info.kind, info.singular
        ))),
    }
}

fn set_namespace(info: &ResourceInfo, any: &Any, namespace: &str) -> Result<Any> {
    struct Set<'a>(&'a Any, &'a str);
    impl KindVisitor for Set<'_> {
        type Output = Result<Any>;
        fn visit<K: Resource>(self) -> Result<Any> {
            let mut obj: K = from_any(self.0)?;
            obj.metadata_mut().namespace = self.1.to_string();
            Ok(to_any(&obj))
        }
    }
    visit_kind(info, Set(any, namespace))
}

fn returned(object: Option<Any>, call: &str) -> Result<Any> {
    object.ok_or_else(|| Error::Protocol(format!("{call} returned no object")))
}

fn decode_raw_event(ev: rpc::WatchEvent) -> Result<(WatchEvent<Any>, String)> {
    let object = || {
        ev.object
            .clone()
            .ok_or_else(|| Error::Protocol(format!("watch event {} without an object", ev.r#type)))
    };
    let event = match ev.r#type.as_str() {
        "ADDED" => WatchEvent::Added(object()?),
        "MODIFIED" => WatchEvent::Modified(object()?),
        "DELETED" => WatchEvent::Deleted(object()?),
        "BOOKMARK" => WatchEvent::Bookmark(ev.resource_version.clone()),
        other => return Err(Error::Protocol(format!("unknown watch event type {other:?}"))),
    };
    Ok((event, ev.resource_version))
}

/// Whether a call failed because its apiserver could not be reached or went away (no
/// answer from an apiserver at all), rather than because an apiserver refused it.
fn is_unreachable(status: &tonic::Status) -> bool {
    let made_locally = std::error::Error::source(status).is_some();
    status.details().is_empty()
        && (status.code() == tonic::Code::Unavailable
            || (made_locally && status.code() == tonic::Code::Unknown))
}

/// Whether a failed call certainly never reached a server: the connection itself could
/// not be made, so sending it to another server cannot apply it twice.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
            ) {
                return true;
            }
        }
        // hyper-util's connector says so in words; its error type is private.
        if e.to_string().starts_with("tcp connect error") {
            return true;
        }
        source = e.source();
    }
    false
}

/// Calls that change nothing when sent twice: reads, and writes whose resourceVersion
/// guard turns a second copy into a Conflict (which callers already handle as a race).
fn idempotent(call: &str) -> bool {
    matches!(
        call,
        "Get"
            | "List"
            | "Watch"
            | "Discovery"
            | "Version"
            | "AccessReview"
            | "Metrics"
            | "Update"
            | "UpdateStatus"
    )
}

/// The pause after round `round` (1, 2, ...) in which every apiserver failed: 100 ms,
/// doubling to at most 2 s.
fn failover_pause(round: u32) -> Duration {
    Duration::from_millis(100) * (1u32 << round.saturating_sub(1).min(5)).min(20)
}

/// Times a call refused for overload is sent again before its error is returned.
pub const OVERLOAD_RETRIES: u32 = 5;

/// The pause an overloaded apiserver asked for (`retry-after` seconds on a
/// RESOURCE_EXHAUSTED status), if it did.
fn retry_after(status: &tonic::Status) -> Option<Duration> {
    if status.code() != tonic::Code::ResourceExhausted {
        return None;
    }
    let secs: f64 = status
        .metadata()
        .get("retry-after")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64(secs.clamp(0.0, 60.0)))
}

/// The wait before retry `attempt` (1, 2, ...): the server's pause, doubled with each
/// refusal (at most 8×) and spread over ±25 % so that refused clients do not return
/// together.
fn overload_pause(pause: Duration, attempt: u32) -> Duration {
    let base = pause.mul_f64(f64::from(1u32 << (attempt - 1).min(3)));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let spread = 0.75 + f64::from(nanos % 1000) / 2000.0;
    base.mul_f64(spread)
}

#[cfg(test)]
mod tests {
    #[test]
    fn overload_refusals_are_retried_after_growing_jittered_pauses() {
        let mut refused = tonic::Status::resource_exhausted("full");
        refused.metadata_mut().insert("retry-after", "1".parse().unwrap());
        assert_eq!(super::retry_after(&refused), Some(Duration::from_secs(1)));
        // a budget's refusal or a watch cap says no pause: not retried
        assert_eq!(
            super::retry_after(&tonic::Status::resource_exhausted("budget")),
            None
        );
        let mut other = tonic::Status::unavailable("x");
        other.metadata_mut().insert("retry-after", "1".parse().unwrap());
        assert_eq!(super::retry_after(&other), None);
        for (attempt, base) in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0)] {
            let p = super::overload_pause(Duration::from_secs(1), attempt).as_secs_f64();
            assert!((base * 0.75..=base * 1.25).contains(&p), "attempt {attempt}: {p}");
        }
    }

    use super::*;
    use rkube_api::core::v1::{Namespace, Pod};

    #[test]
    fn create_namespace_rules_match_kubectl() {
        let pod = Pod::INFO;
        assert_eq!(request_namespace(&pod, "a", "").unwrap(), "a");
        assert_eq!(request_namespace(&pod, "", "b").unwrap(), "b");
        assert_eq!(request_namespace(&pod, "a", "a").unwrap(), "a");
        assert!(request_namespace(&pod, "a", "b")
            .unwrap_err()
            .to_string()
            .contains("does not match"));
        assert!(request_namespace(&pod, "", "").is_err());
        assert_eq!(request_namespace(&Namespace::INFO, "", "b").unwrap(), "");
    }

    #[test]
    fn watch_events_decode_by_type() {
        let any = to_any(&Pod::default());
        let ev = |t: &str, object: Option<Any>| rpc::WatchEvent {
            r#type: t.into(),
            object,
            resource_version: "9".into(),
        };
        assert!(matches!(
            decode_raw_event(ev("ADDED", Some(any.clone()))),
            Ok((WatchEvent::Added(_), _))
        ));
        assert!(matches!(
            decode_raw_event(ev("DELETED", Some(any.clone()))),
            Ok((WatchEvent::Deleted(_), _))
        ));
        match decode_raw_event(ev("BOOKMARK", None)) {
            Ok((WatchEvent::Bookmark(rv), _)) => assert_eq!(rv, "9"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_raw_event(ev("MODIFIED", None)),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            decode_raw_event(ev("ERROR", Some(any))),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn connect_outside_a_runtime_is_an_error_not_a_panic() {
        let err = Client::connect("http://127.0.0.1:1").unwrap_err();
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }

    #[tokio::test]
    async fn bad_addresses_are_refused_before_connecting() {
        assert!(Client::connect("127.0.0.1:6443").is_err());
        // https needs the cluster CA to verify the server with
        assert!(Client::connect("https://127.0.0.1:6443")
            .unwrap_err()
            .to_string()
            .contains("certificateAuthority"));
        assert!(Client::connect("http://127.0.0.1:6443").is_ok());
    }

    #[tokio::test]
    async fn failover_moves_round_robin_from_the_failed_server() {
        let client = Client::connect("http://a:1, http://b:2,http://c:3").unwrap();
        assert_eq!(client.servers(), ["http://a:1", "http://b:2", "http://c:3"]);
        let servers = &client.servers;
        assert_eq!(client.server(), "http://a:1");
        servers.fail_over_from(0);
        assert_eq!(client.server(), "http://b:2");
        // a request that also failed on a, late: b stays
        servers.fail_over_from(0);
        assert_eq!(client.server(), "http://b:2");
        servers.fail_over_from(1);
        assert_eq!(client.server(), "http://c:3");
        servers.fail_over_from(2);
        assert_eq!(client.server(), "http://a:1", "wraps around");
        // clones share the choice
        let clone = client.clone();
        clone.servers.fail_over_from(0);
        assert_eq!(client.server(), "http://b:2");
        assert_eq!(next_server(0, 1), 0);
        let pauses: Vec<_> = (1..=7).map(|r| failover_pause(r).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[tokio::test]
    async fn when_no_server_answers_a_read_tries_each_until_its_timeout() {
        // Nothing listens on ports 1 and 2 of loopback: both refuse.
        let client = Client::connect("http://127.0.0.1:1,http://127.0.0.1:2")
            .unwrap()
            .with_timeout(Duration::from_millis(700));
        let started = std::time::Instant::now();
        let err = client.version().await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "gave up at the request timeout: {took:?}"
        );
        assert!(
            took >= Duration::from_millis(300),
            "waited between rounds: {took:?}"
        );
        // A create that never reached a server is sent on too, and fails the same way.
        let err = client.create_dyn(&pod_object(), "default").await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        let status = tonic::Status::unavailable("connection reset");
        assert!(is_unreachable(&status) && !never_sent(&status));
        assert!(idempotent("List") && !idempotent("Create"));
    }

    fn pod_object() -> DynObject {
        let mut pod = Pod::default();
        pod.metadata_mut().name = "p".into();
        DynObject::from_any(to_any(&pod)).unwrap()
    }

    #[tokio::test]
    async fn unreachable_server_is_a_transport_error_naming_it() {
        // Port 1 on loopback: nothing listens, the connect is refused.
        let client = Client::connect("http://127.0.0.1:1").unwrap();
        let err = client.version().await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(err.to_string().contains("http://127.0.0.1:1"), "{err}");
    }
}
