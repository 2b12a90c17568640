//! pods/log, pods/exec and the metrics API: the apiserver finds the node a
//! pod runs on and forwards the call to that node's kubelet, so clients
//! never need to reach nodes themselves (or know where they are).

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
use tonic::transport::{Channel, Endpoint};

/// Connections to kubelets, by address, reused across calls.
#[derive(Default)]
pub struct Kubelets {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Kubelets {
    fn client(&self, url: &str) -> ApiResult<KubeletClient<Channel>> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(url) {
            return Ok(KubeletClient::new(c.clone()));
        }
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(|e| ApiError::internal(format!("kubelet address {url} is not valid: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect_lazy();
        map.insert(url.to_string(), channel.clone());
        Ok(KubeletClient::new(channel))
    }
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

/// `http://IP:PORT` of a node's kubelet, from its published status.
fn kubelet_url(node: &Node) -> ApiResult<String> {
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
    if ip.contains(':') {
        Ok(format!("http://[{ip}]:{port}"))
    } else {
        Ok(format!("http://{ip}:{port}"))
    }
}

/// The kubelet that runs `namespace/pod`.
fn kubelet_for_pod(state: &State, namespace: &str, pod: &str) -> ApiResult<(String, String)> {
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
    Ok((node_name, kubelet_url(&node)?))
}

/// A kubelet's error, relayed with the node it came from.
fn relay(node: &str, url: &str, s: tonic::Status) -> tonic::Status {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded => {
            tonic::Status::unavailable(format!(
                "the kubelet of node {node:?} at {url} did not answer: {}; is it running?",
                s.message()
            ))
        }
        _ => s,
    }
}

pub type LogStream = Pin<Box<dyn Stream<Item = Result<kv1::LogChunk, tonic::Status>> + Send>>;

pub async fn logs(state: &State, req: kv1::LogsRequest) -> Result<LogStream, tonic::Status> {
    let (node, url) = kubelet_for_pod(state, &req.namespace, &req.pod)?;
    let mut client = state.kubelets.client(&url)?;
    let stream = client
        .logs(req)
        .await
        .map_err(|s| relay(&node, &url, s))?
        .into_inner();
    Ok(Box::pin(
        stream.map(move |r| r.map_err(|s| relay(&node, &url, s))),
    ))
}

pub type ExecStream = Pin<Box<dyn Stream<Item = Result<kv1::ExecOutput, tonic::Status>> + Send>>;

pub async fn exec(
    state: &State,
    mut input: tonic::Streaming<kv1::ExecInput>,
    // authorization of the pods/exec request, once the pod is known
    admit: impl FnOnce(&kv1::ExecStart) -> Result<(), tonic::Status>,
) -> Result<ExecStream, tonic::Status> {
    let first = input
        .message()
        .await?
        .ok_or_else(|| ApiError::bad_request("exec needs a first message naming the pod and the command"))?;
    let Some(kv1::exec_input::Input::Start(start)) = &first.input else {
        return Err(ApiError::bad_request(
            "the first exec message must be `start` (pod, container, command)",
        )
        .into());
    };
    admit(start)?;
    if start.command.is_empty() {
        return Err(
            ApiError::bad_request("exec needs a command: rkubectl exec POD -- COMMAND [ARGS...]").into(),
        );
    }
    let (node, url) = kubelet_for_pod(state, &start.namespace, &start.pod)?;
    let mut client = state.kubelets.client(&url)?;
    // the first message, then whatever the client sends, until it closes
    let rest = input
        .take_while(|m| futures::future::ready(m.is_ok()))
        .filter_map(|m| async { m.ok() });
    let outbound = futures::stream::once(async move { first }).chain(rest);
    let stream = client
        .exec(outbound)
        .await
        .map_err(|s| relay(&node, &url, s))?
        .into_inner();
    Ok(Box::pin(
        stream.map(move |r| r.map_err(|s| relay(&node, &url, s))),
    ))
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
        let client = kubelet_url(&node).and_then(|url| Ok((state.kubelets.client(&url)?, url)));
        calls.push(async move {
            let (mut client, url) = client.map_err(|e| format!("node {name}: {e}"))?;
            match tokio::time::timeout(Duration::from_secs(5), client.metrics(request)).await {
                Ok(Ok(r)) => Ok(r.into_inner()),
                Ok(Err(s)) => Err(format!("node {name}: {}", relay(&name, &url, s).message())),
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
