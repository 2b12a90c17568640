//! pods/log, pods/exec, pods/portforward and the metrics API: the apiserver finds the node a
//! pod runs on and forwards the call to that node's kubelet, so clients
//! never need to reach nodes themselves (or know where they are).
//!
//! Kubelets are called over https when the apiserver has a client
//! certificate for them (`--kubelet-client-certificate` and
//! `--kubelet-client-key`, as Kubernetes names them), verifying each
//! kubelet's serving certificate against `--kubelet-certificate-authority`
//! (default: `--client-ca-file`) for the node's published IP address; else
//! over plain http, which is what kubelets serve when their apiserver is.

use crate::error::{ApiError, ApiResult};
use crate::handlers::storage_key;
use crate::State;
use futures::{Stream, StreamExt};
use prost::Message;
use rkube_api::core::v1::{Node, Pod};
use rkube_api::kubelet::v1::{self as kv1, kubelet_client::KubeletClient};
use rkube_api::rpc;
use rkube_api::selector::Selector;
use rkube_api::Resource;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Connections to kubelets, by address, reused across calls; plain text
/// unless built with [`Kubelets::new`] from TLS settings.
#[derive(Default)]
pub struct Kubelets {
    /// The apiserver's client identity and the CA of kubelets' serving
    /// certificates; `None`: plain http.
    tls: Option<ClientTlsConfig>,
    channels: Mutex<HashMap<String, Channel>>,
}

/// Where a node's kubelet listens, from the Node's status.
pub struct KubeletAddress {
    pub ip: String,
    pub port: u16,
}

impl Kubelets {
    /// From `--kubelet-client-certificate`, `--kubelet-client-key` and
    /// `--kubelet-certificate-authority` (else `--client-ca-file`): https
    /// when the certificate is given, plain http otherwise. Reads the files
    /// now, so a bad one stops the apiserver at start.
    pub fn new(security: &crate::SecurityConfig) -> anyhow::Result<Self> {
        let (Some(cert), Some(key)) = (&security.kubelet_client_certificate, &security.kubelet_client_key)
        else {
            return Ok(Kubelets::default());
        };
        let (ca_flag, ca) = match (&security.kubelet_certificate_authority, &security.client_ca_file) {
            (Some(ca), _) => ("--kubelet-certificate-authority", ca),
            (None, Some(ca)) => ("--client-ca-file", ca),
            (None, None) => anyhow::bail!(
                "--kubelet-client-certificate needs a CA to verify kubelets with: give --kubelet-certificate-authority (or --client-ca-file, the cluster CA)"
            ),
        };
        use rkube_client::pki::read_pem;
        let cert_pem = read_pem("--kubelet-client-certificate", cert)?;
        let key_pem = read_pem("--kubelet-client-key", key)?;
        let ca_pem = read_pem(ca_flag, ca)?;
        let tls = ClientTlsConfig::new()
            .identity(Identity::from_pem(cert_pem, key_pem))
            .ca_certificate(Certificate::from_pem(ca_pem));
        // the files are parsed when a connection is configured: try one now
        Endpoint::from_static("https://127.0.0.1")
            .tls_config(tls.clone())
            .map_err(|e| {
                anyhow::anyhow!(
                    "--kubelet-client-certificate {}, --kubelet-client-key {}, {ca_flag} {}: {}",
                    cert.display(),
                    key.display(),
                    ca.display(),
                    rkube_daemon::error_report(&e)
                )
            })?;
        Ok(Kubelets {
            tls: Some(tls),
            channels: Mutex::default(),
        })
    }

    /// Whether kubelets are called over https.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `http(s)://IP:PORT` of a kubelet.
    pub fn url(&self, addr: &KubeletAddress) -> String {
        let scheme = if self.tls() { "https" } else { "http" };
        if addr.ip.contains(':') {
            format!("{scheme}://[{}]:{}", addr.ip, addr.port)
        } else {
            format!("{scheme}://{}:{}", addr.ip, addr.port)
        }
    }

    /// A client for the kubelet at `addr`, and its URL. With TLS, the
    /// kubelet's certificate must be valid for its IP address.
    fn client(&self, node: &str, addr: &KubeletAddress) -> ApiResult<(KubeletClient<Channel>, String)> {
        let url = self.url(addr);
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(&url) {
            return Ok((KubeletClient::new(c.clone()), url));
        }
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| {
                ApiError::internal(format!("node {node:?}: kubelet address {url} is not valid: {e}"))
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone().domain_name(addr.ip.clone()))
                .map_err(|e| {
                    ApiError::internal(format!(
                        "node {node:?}: TLS settings for its kubelet at {url} (--kubelet-client-certificate, --kubelet-client-key, --kubelet-certificate-authority): {e}"
                    ))
                })?;
        }
        let channel = endpoint.connect_lazy();
        map.insert(url.clone(), channel.clone());
        Ok((KubeletClient::new(channel), url))
    }
}

/// A kubelet's error, relayed with the node it came from and, when it
/// is the connection or the kubelet's refusal, what to check.
fn relay(tls: bool, node: &str, url: &str, s: tonic::Status) -> tonic::Status {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded => {
            let hint = if tls {
                "is it running, and serving TLS with a certificate for this address signed by --kubelet-certificate-authority (or --client-ca-file)?"
            } else {
                "is it running? If kubelets serve TLS (their apiserver is https), give this apiserver --kubelet-client-certificate and --kubelet-client-key"
            };
            tonic::Status::unavailable(format!(
                "the kubelet of node {node:?} at {url} did not answer: {}; {hint}",
                status_detail(&s)
            ))
        }
        // the kubelet refuses callers, not requests: this is about the
        // apiserver's certificate
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
            tonic::Status::new(
                s.code(),
                format!(
                    "the kubelet of node {node:?} at {url} refused this apiserver: {}; give the apiserver --kubelet-client-certificate and --kubelet-client-key with CN {:?} or O \"system:masters\", signed by the kubelet's --client-ca-file",
                    s.message(),
                    rkube_client::pki::APISERVER_KUBELET_CLIENT_USER,
                ),
            )
        }
        _ => s,
    }
}

/// A status's message with its sources (the TLS or connection error a
/// transport failure carries), each said once.
fn status_detail(s: &tonic::Status) -> String {
    rkube_daemon::with_sources(s.message().to_string(), std::error::Error::source(s))
}

fn get_pod(state: &State, namespace: &str, name: &str) -> ApiResult<Pod> {
    let ns = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    let kv = state
        .store
        .get(&storage_key(Pod::info(), ns, name))
        .ok_or_else(|| ApiError::not_found(Pod::info(), name))?;
    Pod::decode(kv.value.as_ref()).map_err(|e| ApiError::internal(format!("stored pod {ns}/{name}: {e}")))
}

/// Where a node's kubelet listens, from its published status.
fn kubelet_address(node: &Node) -> ApiResult<KubeletAddress> {
    let status = node.status.clone().unwrap_or_default();
    let port = status
        .daemon_endpoints
        .and_then(|d| d.kubelet_endpoint)
        .map(|e| e.port)
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "node {:?} publishes no kubelet port (status.daemonEndpoints); is its kubelet running?",
                node.name()
            ))
        })?;
    let ip = status
        .addresses
        .iter()
        .find(|a| a.r#type == "InternalIP")
        .or_else(|| status.addresses.first())
        .map(|a| a.address.clone())
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "node {:?} publishes no address (status.addresses)",
                node.name()
            ))
        })?;
    let port = u16::try_from(port).map_err(|_| {
        ApiError::unavailable(format!(
            "node {:?} publishes kubelet port {port}, which is not a TCP port",
            node.name()
        ))
    })?;
    Ok(KubeletAddress { ip, port })
}

/// The kubelet that runs `namespace/pod`.
fn kubelet_for_pod(state: &State, namespace: &str, pod: &str) -> ApiResult<(String, KubeletAddress)> {
    let p = get_pod(state, namespace, pod)?;
    let node_name = p.spec.as_ref().map(|s| s.node_name.clone()).unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {pod:?} is not scheduled to a node yet, so it has no logs and nothing to exec into; see `rkubectl describe pod {pod}`"
        )));
    }
    let kv = state
        .store
        .get(&storage_key(Node::info(), "", &node_name))
        .ok_or_else(|| ApiError::not_found(Node::info(), &node_name))?;
    let node = Node::decode(kv.value.as_ref())
        .map_err(|e| ApiError::internal(format!("stored node {node_name}: {e}")))?;
    let addr = kubelet_address(&node)?;
    Ok((node_name, addr))
}

pub type LogStream = Pin<Box<dyn Stream<Item = Result<kv1::LogChunk, tonic::Status>> + Send>>;

pub async fn logs(state: &State, req: kv1::LogsRequest) -> Result<LogStream, tonic::Status> {
    let (node, addr) = kubelet_for_pod(state, &req.namespace, &req.pod)?;
    let kubelets = &state.kubelets;
    let (mut client, url) = kubelets.client(&node, &addr)?;
    let stream = client
        .logs(req)
        .await
        .map_err(|s| relay(kubelets.tls(), &node, &url, s))?
        .into_inner();
    let tls = kubelets.tls();
    Ok(Box::pin(
        stream.map(move |r| r.map_err(|s| relay(tls, &node, &url, s))),
    ))
}

pub type ExecStream = Pin<Box<dyn Stream<Item = Result<kv1::ExecOutput, tonic::Status>> + Send>>;

/// The first message of a client stream, which names the pod.
async fn first_message<T, S>(input: &mut S, what: &str) -> Result<T, tonic::Status>
where
    S: Stream<Item = Result<T, tonic::Status>> + Unpin,
{
    input
        .next()
        .await
        .transpose()?
        .ok_or_else(|| ApiError::bad_request(format!("{what} needs a first message naming the pod")).into())
}

/// The client's messages after the first, until it closes or fails.
fn rest_of<T: Send + 'static>(
    first: T,
    input: impl Stream<Item = Result<T, tonic::Status>> + Send + 'static,
) -> impl Stream<Item = T> + Send + 'static {
    let rest = input
        .take_while(|m| futures::future::ready(m.is_ok()))
        .filter_map(|m| async { m.ok() });
    futures::stream::once(async move { first }).chain(rest)
}

pub async fn exec<S>(
    state: &State,
    mut input: S,
    // authorization of the pods/exec request, once the pod is known
    admit: impl FnOnce(&kv1::ExecStart) -> Result<(), tonic::Status>,
) -> Result<ExecStream, tonic::Status>
where
    S: Stream<Item = Result<kv1::ExecInput, tonic::Status>> + Send + Unpin + 'static,
{
    let first = first_message(&mut input, "exec").await?;
    let Some(kv1::exec_input::Input::Start(start)) = &first.input else {
        return Err(ApiError::bad_request(
            "the first exec message must be `start` (pod, container, command)",
        )
        .into());
    };
    admit(start)?;
    if start.attach && !start.command.is_empty() {
        return Err(ApiError::bad_request("attach runs no command: leave `command` empty").into());
    }
    if !start.attach && start.command.is_empty() {
        return Err(
            ApiError::bad_request("exec needs a command: rkubectl exec POD -- COMMAND [ARGS...]").into(),
        );
    }
    let (node, addr) = kubelet_for_pod(state, &start.namespace, &start.pod)?;
    let kubelets = &state.kubelets;
    let (mut client, url) = kubelets.client(&node, &addr)?;
    let stream = client
        .exec(rest_of(first, input))
        .await
        .map_err(|s| relay(kubelets.tls(), &node, &url, s))?
        .into_inner();
    let tls = kubelets.tls();
    Ok(Box::pin(
        stream.map(move |r| r.map_err(|s| relay(tls, &node, &url, s))),
    ))
}

pub type PortForwardStream =
    Pin<Box<dyn Stream<Item = Result<kv1::PortForwardOutput, tonic::Status>> + Send>>;

/// One connection to a port of a pod, through its kubelet (see
/// `rkube.kubelet.v1.Kubelet.PortForward`).
pub async fn port_forward<S>(
    state: &State,
    mut input: S,
    // authorization of the pods/portforward request, once the pod is known
    admit: impl FnOnce(&kv1::PortForwardStart) -> Result<(), tonic::Status>,
) -> Result<PortForwardStream, tonic::Status>
where
    S: Stream<Item = Result<kv1::PortForwardInput, tonic::Status>> + Send + Unpin + 'static,
{
    let first = first_message(&mut input, "port-forward").await?;
    let Some(kv1::port_forward_input::Input::Start(start)) = &first.input else {
        return Err(
            ApiError::bad_request("the first port-forward message must be `start` (pod, port)").into(),
        );
    };
    admit(start)?;
    if !(1..=65535).contains(&start.port) {
        return Err(ApiError::bad_request(format!(
            "port-forward to pod {:?}: port {} is not a TCP port (1-65535)",
            start.pod, start.port
        ))
        .into());
    }
    let (node, addr) = kubelet_for_pod(state, &start.namespace, &start.pod)?;
    let kubelets = &state.kubelets;
    let (mut client, url) = kubelets.client(&node, &addr)?;
    let stream = client
        .port_forward(rest_of(first, input))
        .await
        .map_err(|s| relay(kubelets.tls(), &node, &url, s))?
        .into_inner();
    let tls = kubelets.tls();
    Ok(Box::pin(
        stream.map(move |r| r.map_err(|s| relay(tls, &node, &url, s))),
    ))
}

/// Whether a pod exists and is bound to a node whose kubelet can be
/// called: checked before a REST stream is upgraded, so these failures
/// are plain HTTP answers rather than messages inside the stream.
pub fn check_pod_reachable(state: &State, namespace: &str, pod: &str) -> Result<(), tonic::Status> {
    kubelet_for_pod(state, namespace, pod)
        .map(|_| ())
        .map_err(Into::into)
}

/// Gathers usage from every node's kubelet at once; a node that does not
/// answer is reported in `errors` rather than failing the whole answer.
pub async fn metrics(state: &State, req: rpc::MetricsRequest) -> ApiResult<rpc::MetricsResponse> {
    Selector::parse(&req.label_selector).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let nodes = state
        .store
        .list(&crate::handlers::storage_prefix(Node::info(), ""), None, 0, None)
        .map_err(|e| ApiError::from_store(e, Node::info(), ""))?;
    let mut calls = Vec::new();
    for kv in &nodes.items {
        let Ok(node) = Node::decode(kv.value.as_ref()) else {
            continue;
        };
        let name = node.name().to_string();
        let request = kv1::MetricsRequest {
            namespace: req.namespace.clone(),
            label_selector: req.label_selector.clone(),
        };
        let kubelets = &state.kubelets;
        let client = kubelet_address(&node).and_then(|addr| kubelets.client(&name, &addr));
        calls.push(async move {
            let (mut client, url) = client.map_err(|e| format!("node {name}: {e}"))?;
            match tokio::time::timeout(Duration::from_secs(5), client.metrics(request)).await {
                Ok(Ok(r)) => Ok(r.into_inner()),
                Ok(Err(s)) => Err(format!(
                    "node {name}: {}",
                    relay(kubelets.tls(), &name, &url, s).message()
                )),
                Err(_) => Err(format!(
                    "node {name}: the kubelet at {url} did not answer within 5s"
                )),
            }
        });
    }
    let mut out = rpc::MetricsResponse::default();
    for result in futures::future::join_all(calls).await {
        match result {
            Ok(m) => {
                out.pods.extend(m.pods);
                if req.nodes {
                    out.nodes.extend(m.node);
                }
            }
            Err(e) => out.errors.push(e),
        }
    }
    Ok(out)
}
