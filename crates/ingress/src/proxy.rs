//! The data path: HTTP/1.1 and HTTP/2 (hyper, through hyper-util's auto
//! builder), plain or TLS (rustls, certificate by SNI), each request routed
//! by the current [`RouteTable`] and forwarded to a ready pod of its backend
//! (round-robin) over a pooled HTTP/1.1 connection (hyper-util's client).
//! No request is parsed here by hand: hyper owns the protocol.

use crate::routes::RouteTable;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub type Body = BoxBody<Bytes, hyper::Error>;

/// What every connection shares: the routes (swapped whole on each sync)
/// and the pool of upstream connections.
pub struct Proxy {
    table: RwLock<Arc<RouteTable>>,
    client: Client<HttpConnector, Incoming>,
}

impl Default for Proxy {
    fn default() -> Self {
        Self::new()
    }
}

impl Proxy {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Proxy {
            table: RwLock::default(),
            client,
        }
    }

    pub fn set_table(&self, table: RouteTable) {
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    }

    fn table(&self) -> Arc<RouteTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One request, from `remote`, arrived over TLS or not.
    pub async fn handle(&self, mut req: Request<Incoming>, remote: SocketAddr, tls: bool) -> Response<Body> {
        let Some(host) = request_host(&req) else {
            return text(StatusCode::BAD_REQUEST, "the request names no host\n");
        };
        let Some(backend) = self.table().route(&host, req.uri().path()) else {
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
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let Ok(uri) = format!("http://{upstream}{path}").parse::<Uri>() else {
            return text(StatusCode::BAD_REQUEST, "the request path is not valid\n");
        };
        let original_host = req.uri().authority().map(|a| a.to_string());
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        if !headers.contains_key(header::HOST) {
            // HTTP/2 carries the host in :authority; HTTP/1.1 upstreams want Host
            if let Some(v) = original_host.and_then(|h| HeaderValue::from_str(&h).ok()) {
                headers.insert(header::HOST, v);
            }
        }
        forwarded_headers(headers, remote, &host, tls);
        match self.client.request(req).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.boxed())
            }
            Err(e) => {
                tracing::debug!(backend = %backend.name, %upstream, "upstream failed: {e}");
                text(
                    StatusCode::BAD_GATEWAY,
                    &format!("502 bad gateway: {} at {upstream} did not answer\n", backend.name),
                )
            }
        }
    }
}

/// The host a request is for, lower case, without port: the URI's authority
/// (HTTP/2, absolute-form) or the Host header.
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    let host = match req.uri().host() {
        Some(h) => h.to_string(),
        None => {
            let value = req.headers().get(header::HOST)?.to_str().ok()?;
            value.parse::<http::uri::Authority>().ok()?.host().to_string()
        }
    };
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
    )
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
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

/// X-Forwarded-For (appended), -Proto and -Host, and X-Real-IP, as ingress-nginx sets them.
fn forwarded_headers(headers: &mut HeaderMap, remote: SocketAddr, host: &str, tls: bool) {
    let client = remote.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {client}"),
        None => client.clone(),
    };
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set("x-forwarded-for", &xff);
    set("x-real-ip", &client);
    set("x-forwarded-proto", if tls { "https" } else { "http" });
    set("x-forwarded-host", host);
}

/// Accepts connections on `listener` until `shutdown` turns true; each
/// connection is served on its own task (TLS first when `tls` is given).
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
            let is_tls = tls.is_some();
            let service = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req, remote, is_tls).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(60));
            let result = match tls {
                None => builder.serve_connection(TokioIo::new(stream), service).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => builder.serve_connection(TokioIo::new(stream), service).await,
                    Err(e) => {
                        tracing::debug!(%remote, "TLS handshake failed: {e}");
                        return;
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(%remote, "connection ended: {e}");
            }
        });
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
        assert_eq!(request_host(&req).as_deref(), Some("foo.example.com"));
        let req = Request::builder()
            .uri("https://bar.example.com/x")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("bar.example.com"));
        let req = Request::builder()
            .uri("/x")
            .header("host", "[::1]:80")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("::1"));
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
        forwarded_headers(&mut h, "10.0.0.9:5555".parse().unwrap(), "foo", true);
        assert!(
            h.get("x-secret").is_none() && h.get("connection").is_none() && h.get("keep-alive").is_none()
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "foo");
        assert_eq!(h["accept"], "*/*");
    }
}
