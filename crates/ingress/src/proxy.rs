//! The data path: plain HTTP/1.1 first through the fast path in
//! [`crate::h1`] (requests parsed by `httparse`, hyper's parser), and
//! everything that path leaves (HTTP/2, HTTP/1.0, TLS, large or chunked
//! uploads, 404/503 answers) through hyper (hyper-util's auto builder),
//! plain or TLS (rustls, certificate by SNI). Each request is routed by the
//! current [`RouteTable`] and forwarded to a ready pod of its backend
//! (round-robin) over HTTP/1.1.
//!
//! On hyper's path, per request, the work is kept to what forwarding needs:
//! the routing table is read without a lock (each connection keeps the
//! version it saw), the request's URI and headers are edited in place, and
//! the answer comes back over an upstream connection the client connection
//! opened earlier and keeps (up to [`IDLE_UPSTREAMS`]), driven by the client
//! connection's own task, so a request and its answer never wait for
//! another task or thread to be scheduled.

use crate::h1;
use crate::routes::RouteTable;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

/// A response: a pod's body streamed through, or one of ours.
pub type Body = Either<Incoming, Full<Bytes>>;

/// How long a pod gets to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upstream connections a client connection keeps open for reuse, over all
/// its backends' pods.
const IDLE_UPSTREAMS: usize = 8;

/// What every connection shares: the routes, swapped whole on each sync.
/// Each connection keeps its own receiver, so a request costs one atomic
/// load to learn whether the table changed, and a lock only when it did.
pub struct Proxy {
    table: watch::Sender<Arc<RouteTable>>,
}

impl Default for Proxy {
    fn default() -> Self {
        Self::new()
    }
}

impl Proxy {
    pub fn new() -> Self {
        Proxy {
            table: watch::Sender::new(Arc::default()),
        }
    }

    pub fn set_table(&self, table: RouteTable) {
        self.table.send_replace(Arc::new(table));
    }
}

/// An upstream connection's future, driven by the task of the client
/// connection it serves.
type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One client connection: its routing table reader and the upstream
/// connections it keeps. Upstream connections belong to the client
/// connection that opened them and are driven by its task: a request and its
/// answer never cross to another task or thread, and no pool is shared
/// between connections (no lock but this connection's own, uncontended).
struct Downstream {
    state: Mutex<DownstreamState>,
    drivers: mpsc::UnboundedSender<Driver>,
    remote: SocketAddr,
    /// X-Real-IP and, without a prior X-Forwarded-For, that header too.
    client_ip: HeaderValue,
    tls: bool,
}

struct DownstreamState {
    table_changes: watch::Receiver<Arc<RouteTable>>,
    table: Arc<RouteTable>,
    /// Idle upstream connections by pod address.
    upstreams: Vec<(SocketAddr, SendRequest<Incoming>)>,
}

impl Downstream {
    fn lock(&self) -> std::sync::MutexGuard<'_, DownstreamState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One request; see the module documentation.
    async fn handle(&self, mut req: Request<Incoming>) -> Response<Body> {
        let picked = {
            let mut state = self.lock();
            let DownstreamState {
                table_changes,
                table,
                upstreams,
            } = &mut *state;
            if table_changes.has_changed().unwrap_or(false) {
                *table = table_changes.borrow_and_update().clone();
            }
            let Some(host) = request_host(&req) else {
                return text(StatusCode::BAD_REQUEST, "the request names no host\n");
            };
            let Some(backend) = table.route(host, req.uri().path()) else {
                return text(
                    StatusCode::NOT_FOUND,
                    "404 page not found: no Ingress rule matches\n",
                );
            };
            let Some(upstream) = backend.pick() else {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "503 service unavailable: {} has no ready endpoints\n",
                        backend.name
                    ),
                );
            };
            let forwarded_host = HeaderValue::from_str(&lower_case(host)).ok();
            // an HTTP/1.1 client waits for this answer before it asks again,
            // so a connection still reading the last answer is worth waiting for
            let sequential = req.version() < Version::HTTP_2;
            let idle = take_idle(upstreams, upstream, sequential);
            (backend.clone(), upstream, forwarded_host, idle)
        };
        let (backend, upstream, forwarded_host, idle) = picked;
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            // HTTP/2 and absolute-form requests: HTTP/1.1 upstreams want
            // origin-form and the host in Host
            let original_host = req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(path);
            if let Some(v) = original_host {
                req.headers_mut().entry(header::HOST).or_insert(v);
            }
        }
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        forwarded_headers(headers, &self.client_ip, forwarded_host, self.tls);
        match self.send(upstream, idle, req).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Either::Left(body))
            }
            Err(e) => {
                let backend = &backend.name;
                tracing::debug!(%backend, %upstream, remote = %self.remote, "upstream failed: {e}");
                text(
                    StatusCode::BAD_GATEWAY,
                    &format!("502 bad gateway: {backend} at {upstream} did not answer\n"),
                )
            }
        }
    }

    /// Sends `req` to `upstream` over `idle` when given and still usable,
    /// else over a new connection; a request an idle connection could not
    /// take (the pod closed it meanwhile) goes over a new one.
    async fn send(
        &self,
        upstream: SocketAddr,
        idle: Option<SendRequest<Incoming>>,
        req: Request<Incoming>,
    ) -> anyhow::Result<Response<Incoming>> {
        let mut req = req;
        if let Some(mut sender) = idle {
            if sender.ready().await.is_ok() {
                match sender.try_send_request(req).await {
                    Ok(resp) => {
                        self.keep(upstream, sender);
                        return Ok(resp);
                    }
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(e.into_error().into()),
                    },
                }
            }
        }
        let mut sender = self.connect(upstream).await?;
        let resp = sender.send_request(req).await?;
        self.keep(upstream, sender);
        Ok(resp)
    }

    /// A new connection to `upstream`, driven by this connection's task.
    async fn connect(&self, upstream: SocketAddr) -> anyhow::Result<SendRequest<Incoming>> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream))
            .await
            .map_err(|_| anyhow::anyhow!("connecting timed out after {CONNECT_TIMEOUT:?}"))??;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        let driver: Driver = Box::pin(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%upstream, "upstream connection ended: {e}");
            }
        });
        self.drivers
            .send(driver)
            .map_err(|_| anyhow::anyhow!("the client connection is closing"))?;
        Ok(sender)
    }

    /// Keeps `sender` for the next request, unless the pod closed it or
    /// enough are kept already (then it closes once its answer is read).
    fn keep(&self, upstream: SocketAddr, sender: SendRequest<Incoming>) {
        if sender.is_closed() {
            return;
        }
        let mut state = self.lock();
        state.upstreams.retain(|(_, s)| !s.is_closed());
        if state.upstreams.len() < IDLE_UPSTREAMS {
            state.upstreams.push((upstream, sender));
        }
    }
}

/// A kept connection to `upstream`: one ready for a request, or, when
/// `sequential`, one still reading its last answer.
fn take_idle(
    upstreams: &mut Vec<(SocketAddr, SendRequest<Incoming>)>,
    upstream: SocketAddr,
    sequential: bool,
) -> Option<SendRequest<Incoming>> {
    let mine = |(a, s): &(SocketAddr, SendRequest<Incoming>)| *a == upstream && !s.is_closed();
    let i = upstreams
        .iter()
        .position(|u| mine(u) && u.1.is_ready())
        .or_else(|| sequential.then(|| upstreams.iter().position(mine)).flatten())?;
    Some(upstreams.swap_remove(i).1)
}

/// `s` in lower case, copied only when it has upper-case letters.
pub fn lower_case(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        s.to_ascii_lowercase().into()
    } else {
        s.into()
    }
}

/// The host a request is for, without port or brackets, as sent: the
/// URI's authority (HTTP/2, absolute-form) or the Host header.
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let host = match req.uri().host() {
        Some(h) => h,
        None => {
            let value = req.headers().get(header::HOST)?.to_str().ok()?;
            authority_host(value)?
        }
    };
    Some(host.trim_start_matches('[').trim_end_matches(']'))
}

/// The host of a Host header value (`name`, `name:port`, `[v6]:port`).
pub(crate) fn authority_host(value: &str) -> Option<&str> {
    if value.is_empty() || value.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    if value.starts_with('[') {
        let end = value.find(']')?;
        let rest = &value[end + 1..];
        return (rest.is_empty() || rest.strip_prefix(':').is_some_and(valid_port)).then(|| &value[..=end]);
    }
    match value.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (!host.is_empty() && valid_port(port)).then_some(host),
        Some(_) => None,
        None => Some(value),
    }
}

fn valid_port(p: &str) -> bool {
    p.is_empty() || p.parse::<u16>().is_ok()
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Headers that describe one hop, not the message (RFC 9110 7.6.1), and those
/// the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// X-Forwarded-For (appended), -Proto and -Host, and X-Real-IP, as ingress-nginx sets them.
fn forwarded_headers(headers: &mut HeaderMap, client: &HeaderValue, host: Option<HeaderValue>, tls: bool) {
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => {
            let client = client.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{prior}, {client}")).ok()
        }
        None => Some(client.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_REAL_IP, client.clone());
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    headers.insert(X_FORWARDED_PROTO, proto);
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// Accepts connections on `listener` until `shutdown` turns true; each
/// connection is served on its own task (TLS first when `tls` is given),
/// which also drives the connections to pods opened for it.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // out of file descriptors and the like: pause, do not spin
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut table_changes = proxy.table.subscribe();
            let table = table_changes.borrow_and_update().clone();
            match tls {
                None => {
                    // plain HTTP/1.1 first; hyper from the first request the
                    // fast path leaves to it (see crate::h1)
                    let mut stream = stream;
                    let mut fast = h1::Conn::new(table_changes, table, remote);
                    let read = match fast.serve(&mut stream).await {
                        h1::End::Closed => return,
                        h1::End::Fallback(read) => read,
                    };
                    let stream = Rewind { read, stream };
                    serve_hyper(stream, remote, fast.table_changes, fast.table, false).await;
                }
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => serve_hyper(stream, remote, table_changes, table, true).await,
                    Err(e) => tracing::debug!(%remote, "TLS handshake failed: {e}"),
                },
            }
        });
    }
}

/// Serves a client connection with hyper (HTTP/1.1 and HTTP/2), each request
/// through [`Downstream::handle`].
async fn serve_hyper<S>(
    stream: S,
    remote: SocketAddr,
    table_changes: watch::Receiver<Arc<RouteTable>>,
    table: Arc<RouteTable>,
    tls: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (drivers, new_drivers) = mpsc::unbounded_channel();
    let client_ip = HeaderValue::from_str(&remote.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let downstream = Arc::new(Downstream {
        state: Mutex::new(DownstreamState {
            table_changes,
            table,
            upstreams: Vec::new(),
        }),
        drivers,
        remote,
        client_ip,
        tls,
    });
    let service = hyper::service::service_fn(move |req| {
        let downstream = downstream.clone();
        async move { Ok::<_, Infallible>(downstream.handle(req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(60));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(e) = with_upstreams(conn, new_drivers).await {
        tracing::debug!(%remote, "connection ended: {e}");
    }
}

/// A stream whose first bytes were read already (by the fast path) and are
/// read again from `read` before the rest.
struct Rewind<S> {
    read: Bytes,
    stream: S,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return std::task::Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves `conn` while driving the upstream connections its requests open
/// (they arrive on `new`); when `conn` ends, so do they.
async fn with_upstreams<T>(conn: impl Future<Output = T>, mut new: mpsc::UnboundedReceiver<Driver>) -> T {
    let mut conn = std::pin::pin!(conn);
    let mut drivers = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(driver) = new.recv() => drivers.push(driver),
            Some(()) = drivers.next(), if !drivers.is_empty() => {}
            result = &mut conn => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_from_header_or_authority() {
        let req = Request::builder()
            .uri("/x")
            .header("host", "Foo.Example.com:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req), Some("Foo.Example.com"));
        let req = Request::builder()
            .uri("https://bar.example.com/x")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req), Some("bar.example.com"));
        let req = Request::builder()
            .uri("/x")
            .header("host", "[::1]:80")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req), Some("::1"));
        for bad in ["a:b:c", "x/y", ":80", "[::1]x", "h:port"] {
            let req = Request::builder().uri("/x").header("host", bad).body(()).unwrap();
            assert_eq!(request_host(&req), None, "{bad}");
        }
        let req = Request::builder().uri("/x").body(()).unwrap();
        assert_eq!(request_host(&req), None);
    }

    #[test]
    fn hop_by_hop_headers_go_forwarded_ones_come() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        let client = HeaderValue::from_static("10.0.0.9");
        forwarded_headers(&mut h, &client, Some(HeaderValue::from_static("foo")), true);
        assert!(
            h.get("x-secret").is_none() && h.get("connection").is_none() && h.get("keep-alive").is_none()
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "foo");
        assert_eq!(h["accept"], "*/*");
    }
}
