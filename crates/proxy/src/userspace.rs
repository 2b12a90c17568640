//! Userspace mode: a tokio TCP and UDP proxy for machines without nftables.
//! Each ServicePort with ready endpoints gets a frontend on `ClusterIP:port`
//! (and on each LoadBalancer ingress address, with the same port) and, for
//! NodePort Services, on `0.0.0.0:nodePort`: a listener for TCP, a socket
//! for UDP. Traffic goes to the ready endpoints round robin (or to the
//! client's endpoint under sessionAffinity ClientIP).
//!
//! UDP has no connections, so the proxy keeps what conntrack keeps for it: a
//! session per client address (address and port), with its own socket
//! connected to the endpoint chosen for the client's first datagram. Later
//! datagrams of the client go the same way, and what the endpoint sends back
//! is relayed to the client from the frontend socket. A session ends after
//! [`UDP_SESSION_IDLE`] without traffic either way (conntrack's UDP
//! timeout), at once when its endpoint leaves the ServicePort or refuses
//! the datagrams (ICMP port unreachable), and with its frontend. The number
//! of sessions per frontend is bounded ([`UDP_MAX_SESSIONS`]); when the
//! table is full, as conntrack does, a session that never got a reply makes
//! room, and if there is none the new client's datagram is dropped, so one
//! client flooding from many ports cannot exhaust memory or file
//! descriptors, nor push out the sessions that work. NodePort frontends
//! listen on `0.0.0.0`, so their replies leave from the address the
//! routing table picks towards the client, which on a node with several
//! addresses on one network may not be the one the client sent to.
//!
//! A ClusterIP is only reachable here if it is a local address, so the
//! proxy adds each one (/32) to a dummy interface `rkube-svc` and removes
//! it when the Service goes. Kernels without the dummy driver get the
//! addresses on `lo` instead, labelled `lo:rksvc` so cleanup finds them. A
//! ServicePort without ready endpoints has no frontend, so clients are
//! refused at once: a TCP reset, or for UDP the kernel's ICMP port
//! unreachable.

use crate::model::{Protocol, ServicePort};
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

pub const INTERFACE: &str = "rkube-svc";
/// The label of ClusterIPs put on loopback when there is no dummy driver.
pub const LOOPBACK_LABEL: &str = "lo:rksvc";
/// How long a UDP session lives without a datagram either way: conntrack's
/// `nf_conntrack_udp_timeout`.
pub const UDP_SESSION_IDLE: Duration = Duration::from_secs(30);
/// The most UDP sessions one frontend keeps (each holds a socket).
pub const UDP_MAX_SESSIONS: usize = 1024;
/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

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

/// Where the traffic of one frontend goes; each sync updates it in place, so
/// a frontend keeps its socket (and its UDP sessions) across syncs.
struct Backends {
    endpoints: RwLock<Vec<SocketAddrV4>>,
    next: AtomicUsize,
    affinity: RwLock<Option<Duration>>,
    clients: Mutex<HashMap<IpAddr, (SocketAddrV4, Instant)>>,
    /// Bumped when `endpoints` change, so UDP sessions towards an endpoint
    /// that left end at once rather than at their client's next datagram.
    changed: tokio::sync::watch::Sender<u64>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

impl Backends {
    fn new(endpoints: Vec<SocketAddrV4>, affinity: Option<Duration>) -> Self {
        Backends {
            endpoints: RwLock::new(endpoints),
            next: AtomicUsize::new(0),
            affinity: RwLock::new(affinity),
            clients: Mutex::new(HashMap::new()),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    fn update(&self, endpoints: &[SocketAddrV4], affinity: Option<Duration>) {
        {
            let mut current = write(&self.endpoints);
            if current.as_slice() != endpoints {
                *current = endpoints.to_vec();
                self.changed.send_modify(|g| *g += 1);
            }
        }
        let mut current = write(&self.affinity);
        if *current != affinity {
            *current = affinity;
            lock(&self.clients).clear();
        }
    }

    fn contains(&self, ep: &SocketAddrV4) -> bool {
        read(&self.endpoints).contains(ep)
    }

    /// Candidates in the order to try them: the client's sticky endpoint
    /// first if it is still ready, then round robin.
    fn order(&self, client: IpAddr) -> Vec<SocketAddrV4> {
        let eps = read(&self.endpoints).clone();
        if eps.is_empty() {
            return eps;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % eps.len();
        let mut order: Vec<_> = eps.iter().cycle().skip(start).take(eps.len()).copied().collect();
        if let Some(timeout) = *read(&self.affinity) {
            let clients = lock(&self.clients);
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
        if let Some(timeout) = *read(&self.affinity) {
            let mut clients = lock(&self.clients);
            clients.retain(|_, (_, at)| at.elapsed() < timeout);
            clients.insert(client, (ep, Instant::now()));
        }
    }
}

/// What serves one `(protocol, address:port)`: a TCP listener or a UDP
/// socket with its sessions, in a task that ends with it.
struct Frontend {
    backends: Arc<Backends>,
    task: JoinHandle<()>,
}

impl Drop for Frontend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct UserspaceProxy {
    ip_command: Vec<String>,
    frontends: HashMap<(Protocol, SocketAddrV4), Frontend>,
    addresses: BTreeSet<Ipv4Addr>,
    /// The device holding ClusterIPs, once it exists.
    device: Option<&'static str>,
    udp_limits: UdpLimits,
}

impl UserspaceProxy {
    pub fn new(ip_command: Vec<String>) -> Self {
        UserspaceProxy {
            ip_command,
            frontends: HashMap::new(),
            addresses: BTreeSet::new(),
            device: None,
            udp_limits: UdpLimits::default(),
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
        // what should be served, and where its traffic goes
        let mut wanted: HashMap<(Protocol, SocketAddrV4), &ServicePort> = HashMap::new();
        let mut wanted_ips = BTreeSet::new();
        for sp in ports {
            // LoadBalancer ingress addresses are served like the ClusterIP.
            for ip in sp.cluster_ip.iter().chain(&sp.load_balancer_ips) {
                wanted_ips.insert(*ip);
                if !sp.endpoints.is_empty() {
                    wanted.insert((sp.protocol, SocketAddrV4::new(*ip, sp.port)), sp);
                }
            }
            if let (Some(np), false) = (sp.node_port, sp.endpoints.is_empty()) {
                wanted.insert((sp.protocol, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, np)), sp);
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
        self.frontends.retain(|key, _| wanted.contains_key(key));
        let mut first_error = None;
        for ((protocol, addr), sp) in wanted {
            let affinity = sp.affinity_timeout.map(|t| Duration::from_secs(u64::from(t)));
            if let Some(f) = self.frontends.get(&(protocol, addr)) {
                f.backends.update(&sp.endpoints, affinity);
                continue;
            }
            let backends = Arc::new(Backends::new(sp.endpoints.clone(), affinity));
            let name = sp.name.clone();
            let task = match protocol {
                Protocol::Tcp => TcpListener::bind(addr)
                    .await
                    .map(|l| tokio::spawn(serve_tcp(l, backends.clone(), name))),
                Protocol::Udp => UdpSocket::bind(addr)
                    .await
                    .map(|s| tokio::spawn(serve_udp(s, backends.clone(), name, self.udp_limits))),
            };
            match task {
                Ok(task) => {
                    self.frontends
                        .insert((protocol, addr), Frontend { backends, task });
                }
                Err(e) => {
                    let proto = protocol.nft();
                    tracing::warn!(service = %sp.name, %addr, "cannot serve {proto}: {e}");
                    first_error.get_or_insert(UserspaceError::Spawn {
                        command: format!("bind {proto} {addr} for {}", sp.name),
                        source: e,
                    });
                }
            }
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

async fn serve_tcp(listener: TcpListener, backends: Arc<Backends>, name: String) {
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

/// Bounds of one UDP frontend's session table.
#[derive(Clone, Copy, Debug)]
struct UdpLimits {
    idle: Duration,
    max_sessions: usize,
}

impl Default for UdpLimits {
    fn default() -> Self {
        UdpLimits {
            idle: UDP_SESSION_IDLE,
            max_sessions: UDP_MAX_SESSIONS,
        }
    }
}

/// What a session's reply relay shares with the frontend's task.
struct SessionState {
    /// Milliseconds since the frontend started, at the last datagram.
    last_active: AtomicU64,
    /// The endpoint answered at least once (conntrack's "assured").
    replied: AtomicBool,
    /// The endpoint refused (ICMP port unreachable): the client's next
    /// datagram picks another.
    closed: AtomicBool,
}

/// One client address's path through a UDP frontend.
struct UdpSession {
    endpoint: SocketAddrV4,
    upstream: Arc<UdpSocket>,
    state: Arc<SessionState>,
    relay: JoinHandle<()>,
}

impl Drop for UdpSession {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

impl UdpSession {
    fn live(&self, now_ms: u64, idle: Duration) -> bool {
        !self.state.closed.load(Ordering::Relaxed)
            && now_ms.saturating_sub(self.state.last_active.load(Ordering::Relaxed)) < idle.as_millis() as u64
    }
}

/// One UDP frontend: its socket, its sessions and their relays.
struct UdpFrontend {
    socket: Arc<UdpSocket>,
    backends: Arc<Backends>,
    name: String,
    limits: UdpLimits,
    started: Instant,
    sessions: HashMap<SocketAddr, UdpSession>,
    /// When a full table last made a datagram be dropped (logged once a
    /// minute at most, not per datagram).
    warned_full: Option<Instant>,
}

impl UdpFrontend {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Ends the sessions that idled out, were refused, or whose endpoint left.
    fn prune(&mut self) {
        let (now, idle) = (self.now_ms(), self.limits.idle);
        let eps = read(&self.backends.endpoints).clone();
        self.sessions
            .retain(|_, s| s.live(now, idle) && eps.contains(&s.endpoint));
    }

    async fn forward(&mut self, datagram: &[u8], client: SocketAddr) {
        let now = self.now_ms();
        if let Some(s) = self.sessions.get(&client) {
            if s.live(now, self.limits.idle) && self.backends.contains(&s.endpoint) {
                s.state.last_active.store(now, Ordering::Relaxed);
                // A full send buffer drops the datagram, as a congested
                // network would, rather than stall every other client.
                match s.upstream.try_send(datagram) {
                    Ok(_) => return,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    Err(_) => {}
                }
            }
            // expired, refused or its endpoint left: a new session below
            self.sessions.remove(&client);
        }
        if self.sessions.len() >= self.limits.max_sessions && !self.make_room() {
            return;
        }
        let SocketAddr::V4(client_v4) = client else {
            return;
        };
        for ep in self.backends.order(client.ip()) {
            let Ok(upstream) = connect_udp(ep).await else {
                continue;
            };
            // (a new socket: tokio learns it is writable on this first send)
            if upstream.send(datagram).await.is_err() {
                continue;
            }
            let upstream = Arc::new(upstream);
            let state = Arc::new(SessionState {
                last_active: AtomicU64::new(now),
                replied: AtomicBool::new(false),
                closed: AtomicBool::new(false),
            });
            let relay = tokio::spawn(relay_replies(
                upstream.clone(),
                self.socket.clone(),
                client,
                state.clone(),
                self.started,
            ));
            self.backends.remember(client.ip(), ep);
            tracing::trace!(service = %self.name, client = %client_v4, endpoint = %ep, "new UDP session");
            self.sessions.insert(
                client,
                UdpSession {
                    endpoint: ep,
                    upstream,
                    state,
                    relay,
                },
            );
            return;
        }
        // no endpoint could be reached: the datagram is lost, as on a network
    }

    /// Frees a place in a full session table: the expired sessions go, or
    /// else the least recently active one that never got a reply. False
    /// when every session is alive and answered: the new client waits.
    fn make_room(&mut self) -> bool {
        self.prune();
        if self.sessions.len() < self.limits.max_sessions {
            return true;
        }
        let victim = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.state.replied.load(Ordering::Relaxed))
            .min_by_key(|(_, s)| s.state.last_active.load(Ordering::Relaxed))
            .map(|(c, _)| *c);
        if let Some(c) = victim {
            self.sessions.remove(&c);
            return true;
        }
        if self
            .warned_full
            .is_none_or(|at| at.elapsed() > Duration::from_secs(60))
        {
            self.warned_full = Some(Instant::now());
            tracing::warn!(
                service = %self.name,
                sessions = self.sessions.len(),
                "UDP session table full; datagrams of new clients are dropped until sessions idle out"
            );
        }
        false
    }
}

/// A socket of its own towards `ep`, so the endpoint's replies come back
/// to this session only.
async fn connect_udp(ep: SocketAddrV4) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).await?;
    s.connect(ep).await?;
    Ok(s)
}

/// Relays what the endpoint sends back to the client, from the frontend's
/// address (the one the client sent to).
async fn relay_replies(
    upstream: Arc<UdpSocket>,
    frontend: Arc<UdpSocket>,
    client: SocketAddr,
    state: Arc<SessionState>,
    started: Instant,
) {
    loop {
        if upstream.readable().await.is_err() {
            break;
        }
        // The buffer exists only while datagrams wait, not for every idle
        // session.
        let mut buf = Vec::with_capacity(MAX_DATAGRAM);
        loop {
            buf.clear();
            match upstream.try_recv_buf(&mut buf) {
                Ok(_) => {
                    state
                        .last_active
                        .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    state.replied.store(true, Ordering::Relaxed);
                    let _ = frontend.send_to(&buf, client).await;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // ECONNREFUSED: nothing listens on the endpoint's port
                    state.closed.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
    state.closed.store(true, Ordering::Relaxed);
}

async fn serve_udp(socket: UdpSocket, backends: Arc<Backends>, name: String, limits: UdpLimits) {
    let mut changed = backends.changed.subscribe();
    let mut frontend = UdpFrontend {
        socket: Arc::new(socket),
        backends,
        name,
        limits,
        started: Instant::now(),
        sessions: HashMap::new(),
        warned_full: None,
    };
    let mut sweep = tokio::time::interval((limits.idle / 4).max(Duration::from_millis(10)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            received = frontend.socket.recv_from(&mut buf) => match received {
                Ok((n, client)) => frontend.forward(&buf[..n], client).await,
                Err(e) => {
                    tracing::debug!(service = %frontend.name, "UDP receive failed: {e}");
                }
            },
            // an endpoint left: its sessions end now
            Ok(()) = changed.changed() => frontend.prune(),
            _ = sweep.tick() => frontend.prune(),
        }
    }
}

impl crate::Dataplane for UserspaceProxy {
    async fn sync(&mut self, ports: &[ServicePort]) -> Result<(), crate::Error> {
        Ok(self.sync_ports(ports).await?)
    }

    async fn cleanup(&mut self) -> Result<(), crate::Error> {
        self.frontends.clear();
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

    /// A UDP endpoint on loopback that answers every datagram with `name`.
    async fn udp_endpoint(name: &'static str) -> SocketAddrV4 {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let SocketAddr::V4(addr) = s.local_addr().unwrap() else {
            unreachable!()
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((_, peer)) = s.recv_from(&mut buf).await {
                let _ = s.send_to(name.as_bytes(), peer).await;
            }
        });
        addr
    }

    fn udp_port(ip: &str, endpoints: Vec<SocketAddrV4>) -> ServicePort {
        let port = std::net::UdpSocket::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        ServicePort {
            name: "default/dns:".into(),
            cluster_ip: Some(ip.parse().unwrap()),
            load_balancer_ips: vec![],
            protocol: Protocol::Udp,
            port,
            node_port: None,
            affinity_timeout: None,
            endpoints,
        }
    }

    /// A client socket of its own (its own session), connected to the
    /// Service: replies from any other address are not accepted.
    async fn udp_client(sp: &ServicePort) -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.connect((sp.cluster_ip.unwrap(), sp.port)).await.unwrap();
        s
    }

    /// Sends one datagram and waits up to `wait` for the answer.
    async fn ask(client: &UdpSocket, wait: Duration) -> std::io::Result<String> {
        client.send(b"who?").await?;
        let mut buf = [0u8; 1500];
        match tokio::time::timeout(wait, client.recv(&mut buf)).await {
            Ok(n) => Ok(String::from_utf8_lossy(&buf[..n?]).into_owned()),
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    const ANSWER: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn udp_sessions_stick_and_new_clients_go_round_robin() {
        let (a, b) = (udp_endpoint("a").await, udp_endpoint("b").await);
        let sp = udp_port("127.66.1.1", vec![a, b]);
        let mut proxy = UserspaceProxy::new(vec!["true".into()]);
        proxy.sync_ports(std::slice::from_ref(&sp)).await.unwrap();

        // one client: every datagram goes to the endpoint its first one went
        // to, and the answers come from the Service address (the client's
        // socket is connected to it and takes nothing else)
        let client = udp_client(&sp).await;
        let first = ask(&client, ANSWER).await.unwrap();
        for _ in 0..5 {
            assert_eq!(ask(&client, ANSWER).await.unwrap(), first);
        }
        // new clients alternate
        let mut answers = Vec::new();
        for _ in 0..4 {
            answers.push(ask(&udp_client(&sp).await, ANSWER).await.unwrap());
        }
        assert_eq!(answers, ["b", "a", "b", "a"], "first client got {first}");
    }

    #[tokio::test]
    async fn udp_client_ip_affinity_keeps_new_sessions_on_one_endpoint() {
        let (a, b) = (udp_endpoint("a").await, udp_endpoint("b").await);
        let mut sp = udp_port("127.66.1.2", vec![a, b]);
        let mut proxy = UserspaceProxy::new(vec!["true".into()]);
        proxy.sync_ports(std::slice::from_ref(&sp)).await.unwrap();
        // switching affinity on keeps the frontend (no second bind of the
        // same address)
        sp.affinity_timeout = Some(60);
        proxy.sync_ports(std::slice::from_ref(&sp)).await.unwrap();
        let first = ask(&udp_client(&sp).await, ANSWER).await.unwrap();
        for _ in 0..4 {
            assert_eq!(ask(&udp_client(&sp).await, ANSWER).await.unwrap(), first);
        }
    }

    #[tokio::test]
    async fn udp_sessions_end_when_their_endpoint_leaves_and_frontends_go_with_the_service() {
        let (a, b) = (udp_endpoint("a").await, udp_endpoint("b").await);
        let mut sp = udp_port("127.66.1.3", vec![a, b]);
        let mut proxy = UserspaceProxy::new(vec!["true".into()]);
        proxy.sync_ports(std::slice::from_ref(&sp)).await.unwrap();
        let client = udp_client(&sp).await;
        let first = ask(&client, ANSWER).await.unwrap();
        // the endpoint the session uses turns unready: the same client
        // goes to the other one
        let (gone, other) = if first == "a" { (a, "b") } else { (b, "a") };
        sp.endpoints.retain(|e| *e != gone);
        proxy.sync_ports(std::slice::from_ref(&sp)).await.unwrap();
        assert_eq!(ask(&client, ANSWER).await.unwrap(), other);
        // no ready endpoint: no frontend, so the kernel refuses at once
        sp.endpoints.clear();
        proxy.sync_ports(std::slice::from_ref(&sp)).await.unwrap();
        let refused = wait_until_refused(&client).await;
        assert!(refused, "a UDP Service without endpoints is refused");
        // back, then the Service deleted: refused again
        sp.endpoints = vec![a];
        proxy.sync_ports(std::slice::from_ref(&sp)).await.unwrap();
        assert_eq!(ask(&udp_client(&sp).await, ANSWER).await.unwrap(), "a");
        proxy.sync_ports(&[]).await.unwrap();
        assert!(wait_until_refused(&udp_client(&sp).await).await);
    }

    /// The frontend's task ends shortly after the sync that dropped it (the
    /// abort runs on the runtime): polls until a datagram is refused.
    async fn wait_until_refused(client: &UdpSocket) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match ask(client, Duration::from_millis(200)).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
                _ => tokio::task::yield_now().await,
            }
        }
        false
    }

    #[tokio::test]
    async fn udp_sessions_idle_out() {
        let (a, b) = (udp_endpoint("a").await, udp_endpoint("b").await);
        let sp = udp_port("127.66.1.4", vec![a, b]);
        let mut proxy = UserspaceProxy::new(vec!["true".into()]);
        let idle = Duration::from_millis(300);
        proxy.udp_limits.idle = idle;
        proxy.sync_ports(std::slice::from_ref(&sp)).await.unwrap();
        let client = udp_client(&sp).await;
        assert_eq!(ask(&client, ANSWER).await.unwrap(), "a");
        assert_eq!(ask(&client, ANSWER).await.unwrap(), "a");
        // silent for longer than the idle timeout (the waiting is the
        // condition under test): the next datagram opens a new session,
        // which round robin sends to the other endpoint
        tokio::time::sleep(idle * 2).await;
        assert_eq!(ask(&client, ANSWER).await.unwrap(), "b");
    }

    #[tokio::test]
    async fn a_flood_of_udp_clients_cannot_grow_the_session_table_or_push_out_working_sessions() {
        let a = udp_endpoint("a").await;
        let sp = udp_port("127.66.1.5", vec![a]);
        let mut proxy = UserspaceProxy::new(vec!["true".into()]);
        proxy.udp_limits.max_sessions = 4;
        proxy.sync_ports(std::slice::from_ref(&sp)).await.unwrap();
        let established = udp_client(&sp).await;
        assert_eq!(ask(&established, ANSWER).await.unwrap(), "a");
        // 10 more client ports: 3 fit, the others' datagrams are dropped
        // (each socket is kept, so its client address stays the same)
        let mut flood = Vec::new();
        let mut answered = 0;
        for _ in 0..10 {
            let c = udp_client(&sp).await;
            if ask(&c, Duration::from_millis(200)).await.is_ok() {
                answered += 1;
            }
            flood.push(c);
        }
        assert_eq!(answered, 3, "sessions beyond the limit of 4");
        assert_eq!(ask(&established, ANSWER).await.unwrap(), "a");
    }
}
