//! pods/log, pods/exec, pods/portforward and metrics (gRPC, and REST's
//! metrics.k8s.io) are forwarded to the kubelet of the pod's node, found
//! through the Node's published address and port, over gRPC and, for the
//! real kubectl, over REST. The kubelet
//! here is a small in-test peer; the real one is tested in crates/kubelet
//! and the end-to-end tests.

mod common;

use common::*;
use futures::StreamExt;
use rkube_api::core::v1::{DaemonEndpoint, Node, NodeAddress, NodeDaemonEndpoints, NodeStatus};
use rkube_api::kubelet::v1::{self as kv1, exec_input::Input, exec_output::Output, kubelet_server};
use rkube_api::rpc;
use rkube_api::Resource;
use std::pin::Pin;
use tonic::{Request, Response, Status, Streaming};

struct FakeKubelet {
    node: String,
}

type Out<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl kubelet_server::Kubelet for FakeKubelet {
    type LogsStream = Out<kv1::LogChunk>;
    async fn logs(&self, req: Request<kv1::LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let r = req.into_inner();
        let lines = [
            format!("{} {} line1\n", r.pod, r.container),
            "line2\n".to_string(),
        ];
        let take = if r.tail_lines > 0 {
            r.tail_lines as usize
        } else {
            lines.len()
        };
        let chunks: Vec<_> = lines[lines.len() - take..]
            .iter()
            .map(|l| {
                Ok(kv1::LogChunk {
                    data: l.clone().into_bytes(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    type ExecStream = Out<kv1::ExecOutput>;
    async fn exec(
        &self,
        req: Request<Streaming<kv1::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut input = req.into_inner();
        let Some(kv1::ExecInput {
            input: Some(Input::Start(start)),
        }) = input.message().await?
        else {
            return Err(Status::invalid_argument("no start"));
        };
        // echo the command, then stdin, then finish with exit code 3
        let mut out = vec![
            Output::Stdout(format!("{}: {}\n", self.node, start.command.join(" ")).into_bytes()),
            Output::Stderr(b"warning\n".to_vec()),
        ];
        while let Some(msg) = input.message().await? {
            match msg.input {
                Some(Input::Stdin(b)) => out.push(Output::Stdout(b)),
                Some(Input::StdinEof(_)) => break,
                _ => {}
            }
        }
        out.push(Output::ExitCode(3));
        Ok(Response::new(Box::pin(futures::stream::iter(
            out.into_iter().map(|o| Ok(kv1::ExecOutput { output: Some(o) })),
        ))))
    }

    type PortForwardStream = Out<kv1::PortForwardOutput>;
    /// A port that answers every byte upper-cased, and closes when the
    /// caller has no more; port 1 refuses, as a port nothing listens on.
    async fn port_forward(
        &self,
        req: Request<Streaming<kv1::PortForwardInput>>,
    ) -> Result<Response<Self::PortForwardStream>, Status> {
        use kv1::port_forward_input::Input as Pf;
        let mut input = req.into_inner();
        let Some(kv1::PortForwardInput {
            input: Some(Pf::Start(start)),
        }) = input.message().await?
        else {
            return Err(Status::invalid_argument("no start"));
        };
        if start.port == 1 {
            return Err(Status::failed_precondition("connection refused"));
        }
        let out = futures::stream::unfold(input, |mut input| async move {
            match input.message().await {
                Ok(Some(kv1::PortForwardInput {
                    input: Some(Pf::Data(d)),
                })) => Some((
                    Ok(kv1::PortForwardOutput {
                        data: d.to_ascii_uppercase(),
                    }),
                    input,
                )),
                _ => None,
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn metrics(
        &self,
        req: Request<kv1::MetricsRequest>,
    ) -> Result<Response<kv1::MetricsResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(kv1::MetricsResponse {
            pods: vec![kv1::PodUsage {
                namespace: "default".into(),
                name: format!("pod-on-{}", self.node),
                containers: vec![kv1::ContainerUsage {
                    name: "c".into(),
                    cpu_millis: 250,
                    memory_bytes: 64 << 20,
                }],
                timestamp: String::new(),
                window_seconds: 10,
            }]
            .into_iter()
            .filter(|p| r.namespace.is_empty() || p.namespace == r.namespace)
            .collect(),
            node: Some(kv1::NodeUsage {
                name: self.node.clone(),
                cpu_millis: 500,
                memory_bytes: 1 << 30,
                ..Default::default()
            }),
        }))
    }
}

async fn fake_kubelet(node: &str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let svc = kubelet_server::KubeletServer::new(FakeKubelet { node: node.into() });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    port
}

fn node(name: &str, port: i32) -> Node {
    let mut n = Node::default();
    n.metadata_mut().name = name.into();
    n.status = Some(NodeStatus {
        addresses: vec![NodeAddress {
            r#type: "InternalIP".into(),
            address: "127.0.0.1".into(),
        }],
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port }),
        }),
        ..Default::default()
    });
    n
}

async fn register(h: &mut Harness, n: &Node) {
    let created = create(&mut h.client, n).await.unwrap();
    let mut with_status = created.clone();
    with_status.status = n.status.clone();
    update_status(&mut h.client, &with_status).await.unwrap();
}

async fn bound_pod(h: &mut Harness, name: &str, node: &str) {
    create(&mut h.client, &pod("default", name)).await.unwrap();
    h.client
        .bind(rpc::BindRequest {
            namespace: "default".into(),
            name: name.into(),
            uid: String::new(),
            node_name: node.into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn logs_and_exec_reach_the_pods_kubelet() {
    let mut h = Harness::start().await;
    let port = fake_kubelet("n1").await;
    register(&mut h, &node("n1", port as i32)).await;
    bound_pod(&mut h, "p", "n1").await;

    let req = kv1::LogsRequest {
        namespace: "default".into(),
        pod: "p".into(),
        container: "c".into(),
        ..Default::default()
    };
    let mut s = h.client.logs(req).await.unwrap().into_inner();
    let mut text = Vec::new();
    while let Some(c) = s.next().await {
        text.extend(c.unwrap().data);
    }
    assert_eq!(String::from_utf8(text).unwrap(), "p c line1\nline2\n");

    let input = futures::stream::iter(vec![
        kv1::ExecInput {
            input: Some(Input::Start(kv1::ExecStart {
                namespace: "default".into(),
                pod: "p".into(),
                command: vec!["echo".into(), "hi".into()],
                stdin: true,
                ..Default::default()
            })),
        },
        kv1::ExecInput {
            input: Some(Input::Stdin(b"typed\n".to_vec())),
        },
        kv1::ExecInput {
            input: Some(Input::StdinEof(true)),
        },
    ]);
    let mut out = h.client.exec(input).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(o) = out.next().await {
        got.push(o.unwrap().output.unwrap());
    }
    assert_eq!(
        got,
        vec![
            Output::Stdout(b"n1: echo hi\n".to_vec()),
            Output::Stderr(b"warning\n".to_vec()),
            Output::Stdout(b"typed\n".to_vec()),
            Output::ExitCode(3)
        ]
    );
}

#[tokio::test]
async fn pods_without_a_reachable_kubelet_say_why() {
    let mut h = Harness::start().await;
    create(&mut h.client, &pod("default", "pending")).await.unwrap();
    let req = |pod: &str| kv1::LogsRequest {
        namespace: "default".into(),
        pod: pod.into(),
        ..Default::default()
    };
    let err = h.client.logs(req("pending")).await.unwrap_err();
    assert!(
        err.message().contains("is not scheduled to a node yet"),
        "{}",
        err.message()
    );
    let err = h.client.logs(req("missing")).await.unwrap_err();
    assert_eq!(err.message(), "pods \"missing\" not found");

    // a node whose kubelet is gone: the error names the node and address
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    register(&mut h, &node("gone", dead as i32)).await;
    bound_pod(&mut h, "orphan", "gone").await;
    let err = h.client.logs(req("orphan")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("the kubelet of node \"gone\""),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn metrics_gather_every_node_and_report_the_silent_ones() {
    let mut h = Harness::start().await;
    for n in ["a", "b"] {
        let port = fake_kubelet(n).await;
        register(&mut h, &node(n, port as i32)).await;
    }
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    register(&mut h, &node("c", dead as i32)).await;
    let resp = h
        .client
        .metrics(rpc::MetricsRequest {
            namespace: "default".into(),
            label_selector: String::new(),
            nodes: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut pods: Vec<_> = resp.pods.iter().map(|p| p.name.clone()).collect();
    pods.sort();
    assert_eq!(pods, ["pod-on-a", "pod-on-b"]);
    assert_eq!(resp.nodes.len(), 2);
    assert_eq!(resp.errors.len(), 1, "{:?}", resp.errors);
    assert!(resp.errors[0].starts_with("node c:"), "{:?}", resp.errors);
}

#[tokio::test]
async fn rest_metrics_k8s_io_answers_as_metrics_server_does() {
    let mut h = Harness::start().await;
    for n in ["a", "b"] {
        let port = fake_kubelet(n).await;
        register(&mut h, &node(n, port as i32)).await;
    }
    let url = format!("{}/apis/metrics.k8s.io/v1beta1", h.api.url());
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let req = http.get(format!("{url}/{path}"));
        async move {
            let resp = req.send().await.unwrap();
            let code = resp.status().as_u16();
            let body: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
            (code, body)
        }
    };
    let names = |list: &serde_json::Value| {
        let mut n: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    let (code, nodes) = get("nodes").await;
    assert_eq!(code, 200, "{nodes}");
    assert_eq!(nodes["kind"], "NodeMetricsList");
    assert_eq!(names(&nodes), ["a", "b"]);
    let (code, a) = get("nodes/a").await;
    assert_eq!(code, 200, "{a}");
    assert_eq!(a["kind"], "NodeMetrics");
    assert_eq!(a["usage"]["cpu"], "500000000n");
    assert_eq!(a["usage"]["memory"], "1048576Ki");
    let (code, missing) = get("nodes/z").await;
    assert_eq!((code, &missing["reason"]), (404, &serde_json::json!("NotFound")));
    let (_, none) = get("nodes?labelSelector=role%3Dnone").await;
    assert_eq!(names(&none), Vec::<String>::new());

    let (code, pods) = get("namespaces/default/pods").await;
    assert_eq!(code, 200, "{pods}");
    assert_eq!(pods["kind"], "PodMetricsList");
    assert_eq!(names(&pods), ["pod-on-a", "pod-on-b"]);
    let (_, all) = get("pods").await;
    assert_eq!(names(&all), ["pod-on-a", "pod-on-b"]);
    let (_, other) = get("namespaces/other/pods").await;
    assert_eq!(names(&other), Vec::<String>::new());
    let (code, pod) = get("namespaces/default/pods/pod-on-b").await;
    assert_eq!(code, 200, "{pod}");
    assert_eq!(pod["metadata"]["namespace"], "default");
    assert_eq!(pod["window"], "10s");
    assert_eq!(
        pod["containers"],
        serde_json::json!([{"name": "c", "usage": {"cpu": "250000000n", "memory": "65536Ki"}}])
    );
}

#[tokio::test]
async fn rest_pods_log_streams_the_kubelets_text() {
    let mut h = Harness::start().await;
    let port = fake_kubelet("n1").await;
    register(&mut h, &node("n1", port as i32)).await;
    bound_pod(&mut h, "p", "n1").await;
    let url = h.api.url().to_string();
    let http = reqwest::Client::new();
    let resp = http
        .get(format!(
            "{url}/api/v1/namespaces/default/pods/p/log?container=c&tailLines=1"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "line2\n");
    let resp = http
        .get(format!("{url}/api/v1/namespaces/default/pods/p/log?container=c"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "p c line1\nline2\n");
    // a pod that is not there: a Status, before any text
    let resp = http
        .get(format!("{url}/api/v1/namespaces/default/pods/nope/log"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let status: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(status["reason"], "NotFound");
}

const KUBECTL: &str = "/usr/bin/kubectl";

/// The real kubectl against `url`, its caches in `dir`.
fn kubectl(url: &str, dir: &std::path::Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(KUBECTL);
    cmd.arg("--server")
        .arg(url)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn finished(child: tokio::process::Child) -> std::process::Output {
    tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl finishes within 60s")
        .unwrap()
}

/// kubectl 1.32's own exec (WebSocket, v5.channel.k8s.io) through the REST
/// face to the pod's kubelet: output on the right streams, stdin through,
/// the command's exit code as kubectl's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_runs_through_the_pods_kubelet() {
    let mut h = Harness::start().await;
    let port = fake_kubelet("n1").await;
    register(&mut h, &node("n1", port as i32)).await;
    bound_pod(&mut h, "p", "n1").await;
    let url = h.api.url().to_string();
    let dir = tempfile::tempdir().unwrap();

    let mut cmd = kubectl(&url, dir.path(), &["exec", "p", "-c", "c", "--", "echo", "hi"]);
    let out = finished(cmd.stdin(std::process::Stdio::null()).spawn().unwrap()).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(3), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout, "n1: echo hi\n", "stderr: {stderr}");
    assert!(
        stderr.starts_with("warning\n"),
        "stderr apart from stdout: {stderr}"
    );

    // stdin: what kubectl reads is sent, and its end too (v5 closes it)
    let mut cmd = kubectl(&url, dir.path(), &["exec", "-i", "p", "-c", "c", "--", "cat"]);
    let mut child = cmd.stdin(std::process::Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"typed\n")
        .await
        .unwrap();
    drop(stdin);
    let out = finished(child).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "n1: cat\ntyped\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3));

    // a pod that is not there: kubectl says so, as for Kubernetes
    let out = finished(
        kubectl(&url, dir.path(), &["exec", "nope", "--", "true"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not found"), "{stderr}");
}

/// `kubectl port-forward` (SPDY tunnelled in WebSocket) through the REST
/// face: each local connection becomes a PortForward call to the pod's
/// kubelet, bytes flow both ways, and a refused port is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_reaches_the_pods_kubelet() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let mut h = Harness::start().await;
    let port = fake_kubelet("n1").await;
    register(&mut h, &node("n1", port as i32)).await;
    bound_pod(&mut h, "p", "n1").await;
    // kubectl forwards only to a Running pod
    let mut p: rkube_api::core::v1::Pod = get(&mut h.client, "default", "p").await.unwrap();
    p.status.get_or_insert_with(Default::default).phase = "Running".into();
    update_status(&mut h.client, &p).await.unwrap();
    let url = h.api.url().to_string();
    let dir = tempfile::tempdir().unwrap();

    let mut child = kubectl(&url, dir.path(), &["port-forward", "pod/p", ":8080", ":1"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // "Forwarding from 127.0.0.1:LOCAL -> 8080", one line per port
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut local = std::collections::HashMap::new();
    while local.len() < 2 {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("kubectl says where it listens")
            .unwrap()
            .expect("kubectl is still running");
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            let (l, r) = rest.split_once(" -> ").unwrap();
            local.insert(r.to_string(), l.parse::<u16>().unwrap());
        }
    }
    for round in 0..2 {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", local["8080"]))
            .await
            .unwrap();
        conn.write_all(format!("hello {round}").as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 7];
        tokio::time::timeout(std::time::Duration::from_secs(10), conn.read_exact(&mut buf))
            .await
            .expect("the answer comes back")
            .unwrap();
        assert_eq!(buf, format!("HELLO {round}").as_bytes());
    }
    // a port that refuses: the connection ends and kubectl says why
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", local["1"]))
        .await
        .unwrap();
    let _ = conn.write_all(b"x").await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read_to_end(&mut rest))
        .await
        .expect("the refused connection is closed");
    assert!(rest.is_empty(), "{rest:?}");
    let _ = child.start_kill();
    let out = finished(child).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connection refused"), "{stderr}");
}
