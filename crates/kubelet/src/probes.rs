//! Liveness, readiness and startup probes of one running container.
//!
//! Each running container with probes gets one task: the startup probe first (it holds
//! the others back), then readiness and liveness side by side. Results go into a shared
//! [`ProbeStatus`] and wake the pod worker, which owns every decision (killing, restarting,
//! the Ready condition). HTTP and TCP probes connect from *inside* the pod's network
//! namespace (a thread that joined it), never from the host's.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rkube_api::core::v1::{
    Container, ExecAction, GrpcAction, HttpGetAction, LifecycleHandler, Probe, TcpSocketAction,
};
use rkube_api::intstr::IntOrString;
use tokio::sync::Notify;

use rkube_node_runtime::network::netns;
use rkube_node_runtime::runtime::{ContainerId, ContainerRuntime, ExecRequest};

/// What the probes of one container found so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeStatus {
    /// The startup probe succeeded (or there is none).
    pub started: bool,
    /// The readiness probe passes (or there is none, once started).
    pub ready: bool,
    /// The liveness or startup probe failed `failureThreshold` times: the message to log.
    pub failed: Option<String>,
}

/// Probe results of a pod's containers, by container id, and how the pod worker is woken.
#[derive(Default)]
pub struct ProbeBoard {
    states: Mutex<HashMap<ContainerId, ProbeStatus>>,
    pub wake: Notify,
}

impl ProbeBoard {
    pub fn get(&self, id: &ContainerId) -> ProbeStatus {
        lock(&self.states).get(id).cloned().unwrap_or_default()
    }

    pub fn forget(&self, id: &ContainerId) {
        lock(&self.states).remove(id);
    }

    fn update(&self, id: &ContainerId, f: impl FnOnce(&mut ProbeStatus)) {
        let changed = {
            let mut states = lock(&self.states);
            let entry = states.entry(id.clone()).or_default();
            let before = entry.clone();
            f(entry);
            *entry != before
        };
        if changed {
            self.wake.notify_one();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reports a probe failure as an event (reason `Unhealthy`).
pub type EventFn = Arc<dyn Fn(&'static str, String) + Send + Sync>;

/// Where and how to probe one container.
#[derive(Clone)]
pub struct ProbeTarget {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub id: ContainerId,
    pub container: Container,
    /// The pod's IP (the host's for hostNetwork pods).
    pub pod_ip: Option<IpAddr>,
    /// The pod's network namespace; `None` for hostNetwork pods.
    pub netns: Option<PathBuf>,
}

/// Whether a container needs a probe task at all.
pub fn has_probes(c: &Container) -> bool {
    c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some()
}

fn secs(v: i32, default: u64) -> Duration {
    if v > 0 {
        Duration::from_secs(v as u64)
    } else {
        Duration::from_secs(default)
    }
}

fn threshold(v: i32, default: u32) -> u32 {
    if v > 0 {
        v as u32
    } else {
        default
    }
}

/// Runs the container's probes until aborted (the pod worker aborts the task when the
/// container stops or is replaced).
pub async fn run(target: ProbeTarget, board: Arc<ProbeBoard>, event: EventFn) {
    let id = target.id.clone();
    if let Some(probe) = target.container.startup_probe.clone() {
        tokio::time::sleep(secs(probe.initial_delay_seconds, 0)).await;
        let failure_threshold = threshold(probe.failure_threshold, 3);
        let mut failures = 0;
        loop {
            match probe_once(&target, &probe).await {
                Ok(()) => break,
                Err(msg) => {
                    failures += 1;
                    event("Unhealthy", format!("Startup probe failed: {msg}"));
                    if failures >= failure_threshold {
                        board.update(&id, |s| {
                            s.failed = Some(format!(
                                "Container {} failed startup probe",
                                target.container.name
                            ))
                        });
                        return;
                    }
                }
            }
            tokio::time::sleep(secs(probe.period_seconds, 10)).await;
        }
    }
    board.update(&id, |s| s.started = true);
    let readiness = async {
        let Some(probe) = target.container.readiness_probe.clone() else {
            board.update(&id, |s| s.ready = true);
            return;
        };
        tokio::time::sleep(secs(probe.initial_delay_seconds, 0)).await;
        let (success_threshold, failure_threshold) = (
            threshold(probe.success_threshold, 1),
            threshold(probe.failure_threshold, 3),
        );
        let (mut successes, mut failures) = (0, 0);
        loop {
            match probe_once(&target, &probe).await {
                Ok(()) => {
                    failures = 0;
                    successes += 1;
                    if successes >= success_threshold {
                        board.update(&id, |s| s.ready = true);
                    }
                }
                Err(msg) => {
                    successes = 0;
                    failures += 1;
                    event("Unhealthy", format!("Readiness probe failed: {msg}"));
                    if failures >= failure_threshold {
                        board.update(&id, |s| s.ready = false);
                    }
                }
            }
            tokio::time::sleep(secs(probe.period_seconds, 10)).await;
        }
    };
    let liveness = async {
        let Some(probe) = target.container.liveness_probe.clone() else {
            return std::future::pending::<()>().await;
        };
        tokio::time::sleep(secs(probe.initial_delay_seconds, 0)).await;
        let failure_threshold = threshold(probe.failure_threshold, 3);
        let mut failures = 0;
        loop {
            match probe_once(&target, &probe).await {
                Ok(()) => failures = 0,
                Err(msg) => {
                    failures += 1;
                    event("Unhealthy", format!("Liveness probe failed: {msg}"));
                    if failures >= failure_threshold {
                        board.update(&id, |s| {
                            s.failed = Some(format!(
                                "Container {} failed liveness probe, will be restarted",
                                target.container.name
                            ))
                        });
                        return;
                    }
                }
            }
            tokio::time::sleep(secs(probe.period_seconds, 10)).await;
        }
    };
    tokio::join!(readiness, liveness);
}

/// What a probe or a lifecycle hook does.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    Exec(&'a ExecAction),
    HttpGet(&'a HttpGetAction),
    TcpSocket(&'a TcpSocketAction),
    Grpc(&'a GrpcAction),
    Sleep(Duration),
}

impl<'a> Action<'a> {
    pub fn of_probe(p: &'a Probe) -> Option<Action<'a>> {
        (p.exec.as_ref().map(Action::Exec))
            .or(p.http_get.as_ref().map(Action::HttpGet))
            .or(p.tcp_socket.as_ref().map(Action::TcpSocket))
            .or(p.grpc.as_ref().map(Action::Grpc))
    }

    /// A lifecycle hook's action. A `tcpSocket` hook is accepted and never run, as in
    /// Kubernetes.
    pub fn of_hook(h: &'a LifecycleHandler) -> Option<Action<'a>> {
        (h.exec.as_ref().map(Action::Exec))
            .or(h.http_get.as_ref().map(Action::HttpGet))
            .or(h
                .sleep
                .as_ref()
                .map(|s| Action::Sleep(Duration::from_secs(s.seconds.max(0) as u64))))
    }
}

/// One probe attempt: `Ok` on success, else why it failed.
pub async fn probe_once(target: &ProbeTarget, probe: &Probe) -> Result<(), String> {
    let Some(action) = Action::of_probe(probe) else {
        return Err("the probe has no handler (exec, httpGet, tcpSocket or grpc)".into());
    };
    perform(target, action, Some(secs(probe.timeout_seconds, 1))).await
}

/// Performs `action` against the container: `Ok` on success, else why it failed. Network
/// actions connect from inside the pod's network namespace; `timeout` bounds each step
/// (None: exec runs to its end, as lifecycle hooks do).
pub async fn perform(
    target: &ProbeTarget,
    action: Action<'_>,
    timeout: Option<Duration>,
) -> Result<(), String> {
    let net_timeout = timeout.unwrap_or(Duration::from_secs(30));
    match action {
        Action::Sleep(d) => {
            tokio::time::sleep(d).await;
            Ok(())
        }
        Action::Exec(exec) => {
            let out = target
                .runtime
                .exec(
                    &target.id,
                    &ExecRequest {
                        command: exec.command.clone(),
                        stdin: None,
                        timeout,
                    },
                )
                .await
                .map_err(|e| crate::error_report(&e))?;
            if out.exit_code == 0 {
                return Ok(());
            }
            let mut text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if !err.is_empty() {
                text = if text.is_empty() {
                    err
                } else {
                    format!("{text}; {err}")
                };
            }
            Err(format!(
                "command {:?} exited with {}: {text}",
                exec.command, out.exit_code
            ))
        }
        Action::HttpGet(http) => http_get(target, http, net_timeout).await,
        Action::TcpSocket(tcp) => {
            let port = resolve_port(&target.container, tcp.port.as_ref())?;
            let addr = SocketAddr::new(host_ip(target, &tcp.host)?, port);
            in_pod_netns(target.netns.clone(), move || {
                TcpStream::connect_timeout(&addr, net_timeout).map(|_| ())
            })
            .await
            .map_err(|e| format!("dial tcp {addr}: {e}"))
        }
        Action::Grpc(g) => grpc_check(target, g, net_timeout).await,
    }
}

async fn http_get(target: &ProbeTarget, http: &HttpGetAction, timeout: Duration) -> Result<(), String> {
    if http.scheme.eq_ignore_ascii_case("https") {
        return Err("httpGet scheme HTTPS is not supported by rkubelet; use HTTP or an exec probe".into());
    }
    let port = resolve_port(&target.container, http.port.as_ref())?;
    let ip = host_ip(target, &http.host)?;
    let addr = SocketAddr::new(ip, port);
    let path = if http.path.is_empty() {
        "/".to_string()
    } else {
        http.path.clone()
    };
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/rkube\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for h in &http.http_headers {
        request.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    request.push_str("\r\n");
    let status = in_pod_netns(target.netns.clone(), move || -> std::io::Result<u16> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(request.as_bytes())?;
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        line.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {:?}", line.lines().next())))
    })
    .await
    .map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {status}"))
    }
}

/// A `grpc.health.v1.Health/Check` over plaintext HTTP/2, as Kubernetes' gRPC probe: the
/// connection is opened inside the pod's network namespace, then spoken from here.
async fn grpc_check(target: &ProbeTarget, g: &GrpcAction, timeout: Duration) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let port = u16::try_from(g.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {} is out of range", g.port))?;
    let addr = SocketAddr::new(host_ip(target, "")?, port);
    let unreachable = |e: &dyn std::fmt::Display| {
        format!(
            "timeout: failed to connect service {:?} within {timeout:?}: {e}",
            addr.to_string()
        )
    };
    let stream = in_pod_netns(target.netns.clone(), move || {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .await
    .map_err(|e| unreachable(&e))?;
    let stream = tokio::net::TcpStream::from_std(stream).map_err(|e| unreachable(&e))?;
    let mut once = Some(stream);
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let s = once.take();
        async move {
            s.map(hyper_util::rt::TokioIo::new)
                .ok_or_else(|| std::io::Error::other("the probe's connection was used already"))
        }
    });
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| unreachable(&e))?
            .connect_with_connector(connector)
            .await
            .map_err(|e| unreachable(&e))?;
        let request = HealthCheckRequest {
            service: g.service.clone().unwrap_or_default(),
        };
        HealthClient::new(channel)
            .check(request)
            .await
            .map(|r| r.into_inner().status)
            .map_err(|e| format!("error: health rpc failed: {} ({:?})", e.message(), e.code()))
    };
    let status = tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| format!("timeout: health rpc did not complete within {timeout:?}"))??;
    match ServingStatus::try_from(status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Err(format!(
            "service unhealthy (responded with {:?})",
            other.as_str_name()
        )),
        Err(_) => Err(format!("service unhealthy (responded with status {status})")),
    }
}

fn host_ip(target: &ProbeTarget, host: &str) -> Result<IpAddr, String> {
    if !host.is_empty() {
        return host
            .parse()
            .map_err(|_| format!("probe host {host:?} is not an IP address (host names are not resolved)"));
    }
    target
        .pod_ip
        .ok_or_else(|| "the pod has no IP address yet".to_string())
}

/// A probe port: a number, or the name of one of the container's ports.
pub fn resolve_port(container: &Container, port: Option<&IntOrString>) -> Result<u16, String> {
    let Some(port) = port else {
        return Err("the probe has no port".into());
    };
    let number = match port.as_str() {
        Some(name) => container
            .ports
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.container_port)
            .ok_or_else(|| {
                format!(
                    "port {name:?} is not a named port of container {:?}",
                    container.name
                )
            })?,
        None => port.as_int().unwrap_or(0),
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {number} is out of range"))
}

/// Runs blocking socket code on a thread inside the pod's network namespace (or the host's
/// for hostNetwork pods).
pub(crate) async fn in_pod_netns<T: Send + 'static>(
    netns_path: Option<PathBuf>,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(move || match netns_path {
        Some(path) => netns::run_in(&path, f)?,
        None => f(),
    })
    .await
    .map_err(|e| std::io::Error::other(format!("the thread in the pod network namespace failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::core::v1::ContainerPort;

    #[test]
    fn named_ports_resolve_through_the_container() {
        let c = Container {
            name: "web".into(),
            ports: vec![ContainerPort {
                name: "http".into(),
                container_port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(resolve_port(&c, Some(&IntOrString::string("http"))), Ok(8080));
        assert_eq!(resolve_port(&c, Some(&IntOrString::int(81))), Ok(81));
        let err = resolve_port(&c, Some(&IntOrString::string("metrics"))).unwrap_err();
        assert!(err.contains("\"metrics\"") && err.contains("\"web\""), "{err}");
    }

    #[tokio::test]
    async fn grpc_probes_ask_the_standard_health_service() {
        use tonic_health::ServingStatus;
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("", ServingStatus::Serving).await;
        reporter.set_service_status("cart", ServingStatus::Serving).await;
        reporter
            .set_service_status("payments", ServingStatus::NotServing)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let target = ProbeTarget {
            runtime: Arc::new(rkube_node_runtime::runtime::FakeRuntime::new()),
            id: ContainerId("c".into()),
            container: Container::default(),
            pod_ip: Some("127.0.0.1".parse().unwrap()),
            netns: None,
        };
        let probe = |port: i32, service: Option<&str>| Probe {
            grpc: Some(GrpcAction {
                port,
                service: service.map(str::to_string),
            }),
            timeout_seconds: 2,
            ..Default::default()
        };
        assert_eq!(probe_once(&target, &probe(port.into(), None)).await, Ok(()));
        assert_eq!(
            probe_once(&target, &probe(port.into(), Some("cart"))).await,
            Ok(())
        );
        let down = probe_once(&target, &probe(port.into(), Some("payments")))
            .await
            .unwrap_err();
        assert!(down.contains("NOT_SERVING"), "{down}");
        let unknown = probe_once(&target, &probe(port.into(), Some("nope")))
            .await
            .unwrap_err();
        assert!(unknown.contains("NotFound"), "{unknown}");
        server.abort();
        let _ = server.await;
        let closed = probe_once(&target, &probe(port.into(), None)).await.unwrap_err();
        assert!(closed.contains("failed to connect service"), "{closed}");
    }

    #[test]
    fn hooks_run_exec_http_or_sleep_and_never_tcp() {
        let h: LifecycleHandler = serde_json::from_str(r#"{"sleep": {"seconds": 3}}"#).unwrap();
        assert!(matches!(Action::of_hook(&h), Some(Action::Sleep(d)) if d == Duration::from_secs(3)));
        let h: LifecycleHandler = serde_json::from_str(r#"{"tcpSocket": {"port": 80}}"#).unwrap();
        assert!(Action::of_hook(&h).is_none());
        let h: LifecycleHandler = serde_json::from_str(r#"{"exec": {"command": ["true"]}}"#).unwrap();
        assert!(matches!(Action::of_hook(&h), Some(Action::Exec(_))));
    }
}
