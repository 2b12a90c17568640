//! The small HTTP endpoint every daemon serves for operators and probes,
//! as Kubernetes' components do: `GET /healthz` (and `/livez`) answers 200
//! `ok` while every registered check passes, `/readyz` answers 200 once the
//! daemon said it is ready (`crate::ready`), `/metrics` serves Prometheus
//! text. Plain tokio and HTTP/1.1 with `Connection: close`: the endpoint
//! sees a probe every few seconds, not traffic, and must cost nothing.
//!
//! It listens on loopback by default, on the ports Kubernetes uses for the
//! same component (the `*_PORT` constants), so nothing is exposed unless an
//! operator asks for it with `--health-addr`.

use crate::metrics::Registry;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// rkube-apiserver. Kubernetes serves /healthz on the API port itself;
/// rkube's API port speaks gRPC only, so health has its own port next to it.
pub const APISERVER_PORT: u16 = 6444;
/// rkube-controller-manager (kube-controller-manager's secure port).
pub const CONTROLLER_MANAGER_PORT: u16 = 10257;
/// rkube-cloud-controller-manager (cloud-controller-manager's secure port).
pub const CLOUD_CONTROLLER_MANAGER_PORT: u16 = 10258;
/// rkube-scheduler (kube-scheduler's secure port).
pub const SCHEDULER_PORT: u16 = 10259;
/// rkubelet (the kubelet's healthz port).
pub const KUBELET_PORT: u16 = 10248;
/// rkube-proxy (kube-proxy's healthz port).
pub const PROXY_PORT: u16 = 10256;
/// rkube-ingress (ingress-nginx's health port).
pub const INGRESS_PORT: u16 = 10254;

/// `--health-addr` / `healthAddr:` as given: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthAddr {
    Off,
    Listen(SocketAddr),
}

impl FromStr for HealthAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("off") {
            return Ok(HealthAddr::Off);
        }
        s.parse().map(HealthAddr::Listen).map_err(|_| {
            format!("{s:?} is not an address like 127.0.0.1:10259 (port 0 picks one), nor `off`")
        })
    }
}

impl<'de> serde::Deserialize<'de> for HealthAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl HealthAddr {
    /// Where to listen: what was given (flag before file, as the caller
    /// chose), else loopback on `default_port`; `None` when turned off.
    pub fn resolve(given: Option<HealthAddr>, default_port: u16) -> Option<SocketAddr> {
        match given {
            Some(HealthAddr::Off) => None,
            Some(HealthAddr::Listen(addr)) => Some(addr),
            None => Some(SocketAddr::from(([127, 0, 0, 1], default_port))),
        }
    }
}

type Check = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What `/healthz` and `/readyz` report, and what the systemd watchdog
/// consults before each ping.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    checks: Mutex<Vec<(String, Check)>>,
}

impl Health {
    pub fn new() -> Self {
        Health::default()
    }

    /// The process's health: one daemon per process, as systemd sees it.
    pub fn global() -> &'static Arc<Health> {
        static GLOBAL: OnceLock<Arc<Health>> = OnceLock::new();
        GLOBAL.get_or_init(|| Arc::new(Health::new()))
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Adds a liveness check: an `Err` makes `/healthz` answer 500 and
    /// stops the watchdog pings, so systemd restarts the daemon. Only for
    /// states a restart repairs; checks run under a lock, so they must be
    /// quick and must not add checks themselves.
    pub fn add_check(
        &self,
        name: impl Into<String>,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        checks.push((name.into(), Box::new(check)));
    }

    /// Every failing check as `name: reason`.
    pub fn check(&self) -> Result<(), String> {
        let checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        let failed: Vec<String> = checks
            .iter()
            .filter_map(|(name, check)| check().err().map(|why| format!("{name}: {why}")))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }
}

/// A running health endpoint; dropping it stops serving.
pub struct HealthServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HealthServer {
    /// Binds `addr` and serves `health` and `registry` (plus the process
    /// metrics) until dropped.
    pub async fn bind(
        addr: SocketAddr,
        health: Arc<Health>,
        registry: Arc<Registry>,
    ) -> std::io::Result<HealthServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, health.clone(), registry.clone()));
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning
                        tracing::warn!("health endpoint: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(HealthServer { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the process's health endpoint on `addr` (`None`: off), serving
/// the global `Health` and `Registry`. What each daemon's `run` calls
/// first, so a port clash fails the start with a clear message.
pub async fn serve_health(addr: Option<SocketAddr>) -> anyhow::Result<Option<HealthServer>> {
    let Some(addr) = addr else { return Ok(None) };
    let server = HealthServer::bind(addr, Health::global().clone(), Registry::global().clone())
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot serve /healthz and /metrics on {addr}: {e}; is another instance running? \
                 choose another --health-addr (healthAddr: in the config file), or `off`"
            )
        })?;
    tracing::info!(addr = %server.addr(), "serving /healthz, /readyz and /metrics");
    Ok(Some(server))
}

const MAX_REQUEST: usize = 8 * 1024;

async fn serve(mut stream: tokio::net::TcpStream, health: Arc<Health>, registry: Arc<Registry>) {
    let mut buf = Vec::with_capacity(512);
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    let (status, content_type, body) = respond(method, path, &health, &registry);
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn respond(
    method: &str,
    path: &str,
    health: &Health,
    registry: &Registry,
) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "only GET and HEAD\n".into());
    }
    match path {
        "/healthz" | "/livez" => match health.check() {
            Ok(()) => ("200 OK", TEXT, "ok".into()),
            Err(why) => ("500 Internal Server Error", TEXT, format!("unhealthy: {why}\n")),
        },
        "/readyz" => match (health.is_ready(), health.check()) {
            (true, Ok(())) => ("200 OK", TEXT, "ok".into()),
            (false, _) => (
                "503 Service Unavailable",
                TEXT,
                "not ready: still starting\n".into(),
            ),
            (true, Err(why)) => ("503 Service Unavailable", TEXT, format!("not ready: {why}\n")),
        },
        "/metrics" => {
            let mut out = String::new();
            crate::metrics::render_process_metrics(&mut out);
            registry.render(&mut out);
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", out)
        }
        _ => (
            "404 Not Found",
            TEXT,
            "not found; try /healthz, /livez, /readyz or /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw HTTP/1.1 exchange: (status code, body).
    async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out[9..12].parse().unwrap();
        let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
        (code, body)
    }

    #[tokio::test]
    async fn healthz_readyz_and_metrics_answer_over_http() {
        let health = Arc::new(Health::new());
        let registry = Arc::new(Registry::new());
        let server = HealthServer::bind("127.0.0.1:0".parse().unwrap(), health.clone(), registry.clone())
            .await
            .unwrap();
        let addr = server.addr();
        assert_ne!(addr.port(), 0);

        assert_eq!(get(addr, "GET", "/healthz").await, (200, "ok".into()));
        assert_eq!(get(addr, "GET", "/livez?verbose").await, (200, "ok".into()));
        let (code, body) = get(addr, "GET", "/readyz").await;
        assert_eq!(code, 503, "{body}");
        health.set_ready(true);
        assert_eq!(get(addr, "GET", "/readyz").await, (200, "ok".into()));

        registry.counter("rkube_test_syncs_total", "Syncs.").add(7);
        let (code, body) = get(addr, "GET", "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("\nrkube_test_syncs_total 7\n"), "{body}");
        assert!(body.contains("\nprocess_resident_memory_bytes "), "{body}");
        assert!(body.contains("\nprocess_cpu_seconds_total "), "{body}");

        // a failing check turns both health and readiness red, naming it
        let broken = Arc::new(AtomicBool::new(true));
        let flag = broken.clone();
        health.add_check("store", move || {
            if flag.load(Ordering::SeqCst) {
                Err("closed".into())
            } else {
                Ok(())
            }
        });
        let (code, body) = get(addr, "GET", "/healthz").await;
        assert_eq!((code, body.as_str()), (500, "unhealthy: store: closed\n"));
        assert_eq!(get(addr, "GET", "/readyz").await.0, 503);
        broken.store(false, Ordering::SeqCst);
        assert_eq!(get(addr, "GET", "/healthz").await, (200, "ok".into()));

        assert_eq!(get(addr, "HEAD", "/healthz").await, (200, String::new()));
        assert_eq!(get(addr, "POST", "/healthz").await.0, 405);
        assert_eq!(get(addr, "GET", "/nope").await.0, 404);

        // dropping the server stops serving
        drop(server);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(std::time::Instant::now() < deadline, "still accepting after drop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_taken_port_fails_naming_the_address_and_the_flag() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = serve_health(Some(addr)).await.err().unwrap().to_string();
        assert!(
            err.contains(&addr.to_string()) && err.contains("--health-addr"),
            "{err}"
        );
        assert!(serve_health(None).await.unwrap().is_none());
    }

    #[test]
    fn health_addresses_parse_and_default_to_loopback() {
        assert_eq!("off".parse::<HealthAddr>(), Ok(HealthAddr::Off));
        assert_eq!("".parse::<HealthAddr>(), Ok(HealthAddr::Off));
        assert_eq!(
            "0.0.0.0:1".parse::<HealthAddr>(),
            Ok(HealthAddr::Listen("0.0.0.0:1".parse().unwrap()))
        );
        let err = "10259".parse::<HealthAddr>().unwrap_err();
        assert!(err.contains("127.0.0.1:10259"), "{err}");
        assert_eq!(
            HealthAddr::resolve(None, SCHEDULER_PORT),
            Some("127.0.0.1:10259".parse().unwrap())
        );
        assert_eq!(HealthAddr::resolve(Some(HealthAddr::Off), SCHEDULER_PORT), None);
        let from_yaml: HealthAddr = serde_yaml::from_str("127.0.0.1:9").unwrap();
        assert_eq!(from_yaml, HealthAddr::Listen("127.0.0.1:9".parse().unwrap()));
        assert!(serde_yaml::from_str::<HealthAddr>("nine").is_err());
    }
}
