//! One port, both protocols: the listener offers `h2` and `http/1.1` in
//! ALPN (plain text: HTTP/1.1 or HTTP/2 with prior knowledge), and every
//! request goes through the same limits; `content-type: application/grpc`
//! then goes to tonic, everything else to the REST face. The TLS session's
//! client certificates ride in the request extensions exactly where tonic
//! puts them, so one authenticator serves both faces.

use crate::limits::LimitsLayer;
use crate::rest::Rest;
use anyhow::Context;
use bytes::Bytes;
use futures::future::BoxFuture;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::rustls;
use tonic::body::Body;
use tonic::transport::server::Connected;
use tower::{Service, ServiceExt};

/// The rustls server settings from the TLS flags, or None for plain text.
/// Client certificates are optional at the TLS layer (token users present
/// none); the authenticator refuses a request that has no credentials.
pub fn tls_config(security: &crate::SecurityConfig) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&security.tls_cert_file, &security.tls_private_key_file) else {
        return Ok(None);
    };
    let read = |flag: &str, p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("cannot read {flag} {}", p.display()))
    };
    let certs = |flag: &str, p: &std::path::Path| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let pem = read(flag, p)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{flag} {} is not a PEM certificate file", p.display()))?;
        if certs.is_empty() {
            anyhow::bail!("{flag} {} holds no PEM certificate", p.display());
        }
        Ok(certs)
    };
    let chain = certs("--tls-cert-file", cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read("--tls-private-key-file", key)?).with_context(|| {
        format!(
            "--tls-private-key-file {} is not a PEM private key",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("the TLS protocol versions")?;
    let builder = match &security.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs("--client-ca-file", ca)? {
                roots.add(c).with_context(|| {
                    format!(
                        "--client-ca-file {}: a certificate is not usable as a CA",
                        ca.display()
                    )
                })?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .allow_unauthenticated()
                    .build()
                    .with_context(|| format!("--client-ca-file {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("--tls-cert-file and --tls-private-key-file do not form a usable pair")?;
    // h2 first: gRPC clients need it; HTTP/1.1 clients (the Python client,
    // WebSocket upgrades) pick the second
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The router of one request: gRPC or REST.
#[derive(Clone)]
struct Faces {
    grpc: tonic::service::Routes,
    rest: Arc<Rest>,
}

fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

impl Service<http::Request<hyper::body::Incoming>> for Faces {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        if is_grpc(&req) {
            let grpc = self.grpc.clone();
            Box::pin(async move { grpc.oneshot(req).await })
        } else {
            let rest = self.rest.clone();
            Box::pin(async move { Ok(rest.handle(req).await) })
        }
    }
}

/// A refusal by the limits layer (too many requests, timeout) is written
/// as gRPC status headers; a REST client gets it as a `Status` object.
#[derive(Clone)]
struct RestRefusals<S>(S);

impl<S> Service<http::Request<hyper::body::Incoming>> for RestRefusals<S>
where
    S: Service<http::Request<hyper::body::Incoming>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let clone = self.0.clone();
        let mut inner = std::mem::replace(&mut self.0, clone);
        let grpc = is_grpc(&req);
        Box::pin(async move {
            let resp = inner.call(req).await?;
            if grpc {
                return Ok(resp);
            }
            Ok(match tonic::Status::from_header_map(resp.headers()) {
                Some(s) if s.code() != tonic::Code::Ok => crate::rest::status::response(&s, None),
                _ => resp,
            })
        })
    }
}

/// Serves both faces on `listener` until `stop` flips; then stops
/// accepting and gives open connections ten seconds to finish (watches
/// end on the same flag).
pub(crate) fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    grpc: tonic::service::Routes,
    rest: Arc<Rest>,
    limits: LimitsLayer,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let service = RestRefusals(tower::Layer::layer(&limits, Faces { grpc, rest }));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)));
        // with a timer, HTTP/1.1 headers must arrive within hyper's
        // header read timeout (30 s): a slow client cannot hold a task
        builder.http1().timer(TokioTimer::new());
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|s| *s) => break,
            };
            let tcp = match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // out of file descriptors and the like: wait, do not spin
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let builder = builder.clone();
            let service = service.clone();
            let watcher = graceful.watcher();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Some(acceptor) = acceptor else {
                    let info = tcp.connect_info();
                    let svc = with_extension(service, info);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!("connection ended: {e}");
                    }
                    return;
                };
                let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                };
                let info = stream.connect_info();
                let svc = with_extension(service, info);
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!("connection ended: {e}");
                }
            });
        }
        if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open 10s after shutdown began; closing them");
        }
        Ok(())
    })
}

/// The service of one connection: each request carries the connection's
/// info (peer address, TLS client certificates) as tonic's would.
fn with_extension<S, T>(
    service: S,
    info: T,
) -> hyper_util::service::TowerToHyperService<
    impl Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future = impl Send,
        > + Clone,
>
where
    S: Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>,
        > + Clone
        + Send
        + 'static,
    T: Clone + Send + Sync + 'static,
{
    let svc = tower::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(info.clone());
        service.clone().oneshot(req)
    });
    hyper_util::service::TowerToHyperService::new(svc)
}

/// A body of bytes, for answers built in full.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body::new(http_body_util::Full::new(bytes.into()))
}

/// A body of several buffers sent one after the other, its length known up front (so
/// it goes out with a Content-Length, as [`full`]'s does): a large list's parts, written
/// on several cores, are not copied into one buffer first.
pub fn parts(parts: Vec<Bytes>) -> Body {
    struct Parts {
        parts: std::collections::VecDeque<Bytes>,
        remaining: u64,
    }
    impl http_body::Body for Parts {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            let this = self.get_mut();
            Poll::Ready(this.parts.pop_front().map(|part| {
                this.remaining -= part.len() as u64;
                Ok(http_body::Frame::data(part))
            }))
        }
        fn is_end_stream(&self) -> bool {
            self.parts.is_empty()
        }
        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(self.remaining)
        }
    }
    let parts: std::collections::VecDeque<Bytes> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    let remaining = parts.iter().map(|p| p.len() as u64).sum();
    Body::new(Parts { parts, remaining })
}
