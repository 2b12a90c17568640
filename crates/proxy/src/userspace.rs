//! Userspace mode: a tokio TCP proxy for machines without nftables. Each
//! ServicePort with ready endpoints gets a listener on `ClusterIP:port`
//! (and on each LoadBalancer ingress address, with the same port) and, for
//! NodePort Services, on `0.0.0.0:nodePort`; connections go to
//! the ready endpoints round robin (or to the client's endpoint under
//! sessionAffinity ClientIP).
//!
//! A ClusterIP is only reachable here if it is a local address, so the
//! proxy adds each one (/32) to a dummy interface `rkube-svc` and removes
//! it when the Service goes. Kernels without the dummy driver get the
//! addresses on `lo` instead, labelled `lo:rksvc` so cleanup finds them. A ServicePort without ready endpoints has no
//! listener, so clients get a connection refused at once. UDP is not
//! proxied in this mode (logged once per ServicePort).

use crate::model::{Protocol, ServicePort};
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const INTERFACE: &str = "rkube-svc";
/// The label of ClusterIPs put on loopback when there is no dummy driver.
pub const LOOPBACK_LABEL: &str = "lo:rksvc";

#[derive(Debug, thiserror::Error)]
pub enum UserspaceError {
    #[error("cannot run {command:?}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command:?} failed: {stderr}")]
    Failed { command: String, stderr: String },
}

/// Where connections of one listener go.
struct Backends {
    endpoints: RwLock<Vec<SocketAddrV4>>,
    next: AtomicUsize,
    affinity: Option<Duration>,
    clients: Mutex<HashMap<IpAddr, (SocketAddrV4, Instant)>>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

impl Backends {
    /// Candidates in the order to try them: the client's sticky endpoint
    /// first if it is still ready, then round robin.
    fn order(&self, client: IpAddr) -> Vec<SocketAddrV4> {
        let eps = read(&self.endpoints).clone();
        if eps.is_empty() {
            return eps;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % eps.len();
        let mut order: Vec<_> = eps.iter().cycle().skip(start).take(eps.len()).copied().collect();
        if let Some(timeout) = self.affinity {
            let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((ep, at)) = clients.get(&client) {
                if at.elapsed() < timeout && eps.contains(ep) {
                    order.retain(|e| e != ep);
                    order.insert(0, *ep);
                }
            }
        }
        order
    }

    fn remember(&self, client: IpAddr, ep: SocketAddrV4) {
        if let Some(timeout) = self.affinity {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            clients.retain(|_, (_, at)| at.elapsed() < timeout);
            clients.insert(client, (ep, Instant::now()));
        }
    }
}

struct Listener {
    backends: Arc<Backends>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct UserspaceProxy {
    ip_command: Vec<String>,
    listeners: HashMap<SocketAddrV4, Listener>,
    addresses: BTreeSet<Ipv4Addr>,
    /// The device holding ClusterIPs, once it exists.
    device: Option<&'static str>,
    warned_udp: BTreeSet<String>,
}

impl UserspaceProxy {
    pub fn new(ip_command: Vec<String>) -> Self {
        UserspaceProxy {
            ip_command,
            listeners: HashMap::new(),
            addresses: BTreeSet::new(),
            device: None,
            warned_udp: BTreeSet::new(),
        }
    }

    async fn ip(&self, args: &[&str], ok_if: &[&str]) -> Result<(), UserspaceError> {
        let shown = format!("{} {}", self.ip_command.join(" "), args.join(" "));
        let spawn_err = |source| UserspaceError::Spawn {
            command: shown.clone(),
            source,
        };
        let (program, lead) = self
            .ip_command
            .split_first()
            .ok_or_else(|| spawn_err(std::io::Error::other("empty command")))?;
        let out = tokio::process::Command::new(program)
            .args(lead)
            .args(args)
            .output()
            .await
            .map_err(spawn_err)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || ok_if.iter().any(|s| stderr.contains(s)) {
            return Ok(());
        }
        Err(UserspaceError::Failed {
            command: shown,
            stderr: stderr.trim().to_string(),
        })
    }

    async fn ensure_interface(&mut self) -> Result<&'static str, UserspaceError> {
        if let Some(dev) = self.device {
            return Ok(dev);
        }
        let dev = match self
            .ip(&["link", "add", INTERFACE, "type", "dummy"], &["File exists"])
            .await
        {
            Ok(()) => {
                self.ip(&["link", "set", INTERFACE, "up"], &[]).await?;
                INTERFACE
            }
            Err(UserspaceError::Failed { stderr, .. }) if stderr.contains("Unknown device type") => {
                tracing::info!("no dummy interface driver in this kernel; ClusterIPs go on lo, labelled {LOOPBACK_LABEL}");
                "lo"
            }
            Err(e) => return Err(e),
        };
        self.device = Some(dev);
        Ok(dev)
    }

    async fn add_address(&self, dev: &str, ip: Ipv4Addr) -> Result<(), UserspaceError> {
        let cidr = format!("{ip}/32");
        let mut args = vec!["addr", "add", &cidr, "dev", dev];
        if dev == "lo" {
            args.extend(["label", LOOPBACK_LABEL]);
        }
        self.ip(&args, &["File exists"]).await
    }

    async fn sync_ports(&mut self, ports: &[ServicePort]) -> Result<(), UserspaceError> {
        // what should listen, and where its connections go
        let mut wanted: HashMap<SocketAddrV4, &ServicePort> = HashMap::new();
        let mut wanted_ips = BTreeSet::new();
        for sp in ports {
            if sp.protocol != Protocol::Tcp {
                if self.warned_udp.insert(sp.name.clone()) {
                    tracing::warn!(service = %sp.name, "userspace mode proxies TCP only; this UDP port is not served");
                }
                continue;
            }
            // LoadBalancer ingress addresses are served like the ClusterIP.
            for ip in sp.cluster_ip.iter().chain(&sp.load_balancer_ips) {
                wanted_ips.insert(*ip);
                if !sp.endpoints.is_empty() {
                    wanted.insert(SocketAddrV4::new(*ip, sp.port), sp);
                }
            }
            if let (Some(np), false) = (sp.node_port, sp.endpoints.is_empty()) {
                wanted.insert(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, np), sp);
            }
        }
        let dev = if wanted_ips.is_empty() && self.addresses.is_empty() {
            INTERFACE
        } else {
            self.ensure_interface().await?
        };
        for ip in wanted_ips.difference(&self.addresses.clone()) {
            self.add_address(dev, *ip).await?;
            self.addresses.insert(*ip);
        }
        self.listeners.retain(|addr, _| wanted.contains_key(addr));
        let mut first_error = None;
        for (addr, sp) in wanted {
            let timeout = sp.affinity_timeout.map(|t| Duration::from_secs(u64::from(t)));
            if let Some(l) = self.listeners.get(&addr) {
                *l.backends.endpoints.write().unwrap_or_else(|p| p.into_inner()) = sp.endpoints.clone();
                if l.backends.affinity == timeout {
                    continue;
                }
            }
            let listener = match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(service = %sp.name, %addr, "cannot listen: {e}");
                    first_error.get_or_insert(UserspaceError::Spawn {
                        command: format!("listen on {addr}"),
                        source: e,
                    });
                    continue;
                }
            };
            let backends = Arc::new(Backends {
                endpoints: RwLock::new(sp.endpoints.clone()),
                next: AtomicUsize::new(0),
                affinity: timeout,
                clients: Mutex::new(HashMap::new()),
            });
            let task = tokio::spawn(serve(listener, backends.clone(), sp.name.clone()));
            self.listeners.insert(addr, Listener { backends, task });
        }
        for ip in self.addresses.clone().difference(&wanted_ips) {
            self.ip(
                &["addr", "del", &format!("{ip}/32"), "dev", dev],
                &["Cannot assign"],
            )
            .await?;
            self.addresses.remove(ip);
        }
        first_error.map_or(Ok(()), Err)
    }
}

async fn serve(listener: TcpListener, backends: Arc<Backends>, name: String) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(service = %name, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let backends = backends.clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            for ep in backends.order(peer.ip()) {
                match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(SocketAddr::V4(ep)))
                    .await
                {
                    Ok(Ok(mut upstream)) => {
                        let _ = upstream.set_nodelay(true);
                        backends.remember(peer.ip(), ep);
                        let mut client = client;
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        return;
                    }
                    _ => continue,
                }
            }
            // no endpoint answered: dropping the client closes it
        });
    }
}

impl crate::Dataplane for UserspaceProxy {
    async fn sync(&mut self, ports: &[ServicePort]) -> Result<(), crate::Error> {
        Ok(self.sync_ports(ports).await?)
    }

    async fn cleanup(&mut self) -> Result<(), crate::Error> {
        self.listeners.clear();
        self.addresses.clear();
        self.ip(&["link", "del", INTERFACE], &["Cannot find device"])
            .await?;
        self.ip(&["addr", "flush", "dev", "lo", "label", LOOPBACK_LABEL], &[])
            .await?;
        self.device = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn load_balancer_addresses_get_a_listener_like_the_cluster_ip() {
        // An endpoint that greets; service addresses on loopback (local
        // without adding them, so `ip` is not needed: `true` stands in).
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let SocketAddr::V4(endpoint) = backend.local_addr().unwrap() else {
            unreachable!()
        };
        tokio::spawn(async move {
            while let Ok((mut s, _)) = backend.accept().await {
                let _ = s.write_all(b"hello").await;
            }
        });
        let port = {
            let probe = std::net::TcpListener::bind("127.66.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let mut sp = ServicePort {
            name: "default/web:".into(),
            cluster_ip: Some(Ipv4Addr::new(127, 66, 0, 1)),
            load_balancer_ips: vec![Ipv4Addr::new(127, 66, 0, 2)],
            protocol: Protocol::Tcp,
            port,
            node_port: None,
            affinity_timeout: None,
            endpoints: vec![endpoint],
        };
        let mut proxy = UserspaceProxy::new(vec!["true".into()]);
        proxy.sync_ports(std::slice::from_ref(&sp)).await.unwrap();
        for ip in ["127.66.0.1", "127.66.0.2"] {
            let mut s = TcpStream::connect((ip, port)).await.unwrap();
            let mut got = String::new();
            s.read_to_string(&mut got).await.unwrap();
            assert_eq!(got, "hello", "through {ip}");
        }
        // The load balancer address released: its listener goes.
        sp.load_balancer_ips.clear();
        proxy.sync_ports(std::slice::from_ref(&sp)).await.unwrap();
        assert!(TcpStream::connect(("127.66.0.2", port)).await.is_err());
        assert!(TcpStream::connect(("127.66.0.1", port)).await.is_ok());
    }
}
