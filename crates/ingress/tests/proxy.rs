//! The data path on loopback, against a real HTTP server standing in for a
//! pod: what a client of the Ingress and the pod each see when requests
//! share a keep-alive connection, and when the pod closes its side.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use rkube_api::core::v1::{Endpoints, Service};
use rkube_api::networking::v1::Ingress;
use rkube_ingress::proxy::{serve, Proxy};
use rkube_ingress::routes::Resolver;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A pod: answers every request with the headers the Ingress sent it, on
/// 127.0.0.1:0; counts the connections it accepts; closes each connection
/// after `per_connection` requests.
async fn pod(per_connection: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    listen(move |stream| async move {
        let served = Arc::new(AtomicUsize::new(0));
        let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let n = served.fetch_add(1, Ordering::SeqCst) + 1;
            let seen = format!(
                "{} {} xff={:?} host={:?} xfh={:?}{}",
                req.method(),
                req.uri(),
                req.headers().get("x-forwarded-for"),
                req.headers().get("host"),
                req.headers().get("x-forwarded-host"),
                match req.headers().get("x-secret") {
                    Some(v) => format!(" x-secret={v:?}"),
                    None => String::new(),
                },
            );
            let mut resp = hyper::Response::new(http_body_util::Full::new(Bytes::from(seen)));
            if n >= per_connection {
                resp.headers_mut()
                    .insert("connection", hyper::header::HeaderValue::from_static("close"));
            }
            async move { Ok::<_, std::convert::Infallible>(resp) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .await;
    })
    .await
}

/// A listener on 127.0.0.1:0 that counts the connections it accepts and
/// serves each with `serve` on a task of its own.
async fn listen<F, S>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream) -> S + Send + 'static,
    S: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream));
        }
    });
    (addr, connections)
}

/// rkube-ingress's listener on 127.0.0.1:0, routing host `web.example` to `pod`.
async fn ingress(pod: SocketAddr) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let service: Service = serde_yaml::from_str(
        "metadata: {name: web, namespace: default}\nspec: {ports: [{name: http, port: 80}]}",
    )
    .unwrap();
    let endpoints: Endpoints = serde_yaml::from_str(&format!(
        "metadata: {{name: web, namespace: default}}\nsubsets: [{{addresses: [{{ip: {}}}], ports: [{{name: http, port: {}}}]}}]",
        pod.ip(),
        pod.port()
    ))
    .unwrap();
    let ing: Ingress = serde_yaml::from_str(
        "metadata: {name: web, namespace: default}\nspec: {rules: [{host: web.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]}",
    )
    .unwrap();
    let (service, endpoints) = (Arc::new(service), Arc::new(endpoints));
    let (table, problems) = Resolver {
        service: &|_, _| Some(service.clone()),
        endpoints: &|_, _| Some(endpoints.clone()),
    }
    .table(&[Arc::new(ing)]);
    assert!(problems.is_empty(), "{problems:?}");
    let proxy = Arc::new(Proxy::new());
    proxy.set_table(table);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(serve(listener, None, proxy, stopped));
    (addr, stop)
}

/// A client on one keep-alive connection to `addr`.
async fn client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> (u16, String) {
    sender.ready().await.unwrap();
    let req = hyper::Request::get(path)
        .header("host", "Web.Example:8080")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn requests_on_one_client_connection_reuse_one_pod_connection() {
    let (pod, connections) = pod(usize::MAX).await;
    let (addr, _stop) = ingress(pod).await;
    let mut c = client(addr).await;
    for i in 0..20 {
        let (status, seen) = get(&mut c, &format!("/page/{i}?q=1")).await;
        assert_eq!(status, 200, "{seen}");
        assert_eq!(
            seen,
            format!(
                "GET /page/{i}?q=1 xff=Some(\"127.0.0.1\") host=Some(\"Web.Example:8080\") xfh=Some(\"web.example\")"
            )
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the pod saw one connection per request"
    );
}

#[tokio::test]
async fn a_pod_closing_its_connection_costs_the_client_nothing() {
    // the pod closes every connection after 3 requests
    let (pod, connections) = pod(3).await;
    let (addr, _stop) = ingress(pod).await;
    let mut c = client(addr).await;
    for i in 0..12 {
        let (status, seen) = get(&mut c, &format!("/{i}")).await;
        assert_eq!(status, 200, "request {i}: {seen}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn unknown_hosts_get_404_and_the_connection_stays_usable() {
    let (pod, _) = pod(usize::MAX).await;
    let (addr, _stop) = ingress(pod).await;
    let mut c = client(addr).await;
    c.ready().await.unwrap();
    let req = hyper::Request::get("/")
        .header("host", "other.example")
        .body(Empty::new())
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 404);
    resp.into_body().collect().await.unwrap();
    assert_eq!(get(&mut c, "/").await.0, 200);
}

/// A pod that answers every request with its body after `got:`, streamed
/// (so hyper sends it chunked); counts the connections it accepts.
async fn echo_pod() -> (SocketAddr, Arc<AtomicUsize>) {
    use hyper::body::Frame;
    listen(|stream| async move {
        let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
            let body = req.into_body().collect().await?.to_bytes();
            let frames = [Bytes::from_static(b"got:"), body]
                .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)));
            let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
            Ok::<_, hyper::Error>(hyper::Response::new(body))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .await;
    })
    .await
}

#[tokio::test]
async fn uploads_and_chunked_answers_share_one_pod_connection() {
    let (pod, connections) = echo_pod().await;
    let (addr, _stop) = ingress(pod).await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut c, conn) = hyper::client::conn::http1::handshake::<_, http_body_util::Full<Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (i, body) in ["", "hello", &"x".repeat(100_000)].into_iter().enumerate() {
        c.ready().await.unwrap();
        let req = hyper::Request::post("/echo")
            .header("host", "web.example")
            .body(http_body_util::Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let resp = c.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(
            resp.headers()
                .get("transfer-encoding")
                .map(|v| v.to_str().unwrap()),
            Some("chunked"),
            "request {i}"
        );
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got, format!("got:{body}"), "request {i}");
    }
    // the 100 kB upload went through hyper's path, which keeps its own connection
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

/// Sends `raw` on a new connection and reads until the Ingress closes it.
async fn exchange(addr: SocketAddr, raw: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_string(&mut answer))
        .await
        .expect("the Ingress closed the connection")
        .unwrap();
    answer
}

#[tokio::test]
async fn hop_by_hop_headers_stop_at_the_ingress_and_close_is_honoured() {
    let (pod, _) = pod(usize::MAX).await;
    let (addr, _stop) = ingress(pod).await;
    let answer = exchange(
        addr,
        "GET /x HTTP/1.1\r\nHost: web.example\r\nConnection: close, x-secret\r\nX-Secret: 1\r\nX-Forwarded-For: 10.1.1.1\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(
        answer.ends_with(
            "GET /x xff=Some(\"10.1.1.1, 127.0.0.1\") host=Some(\"web.example\") xfh=Some(\"web.example\")"
        ),
        "{answer}"
    );
    // HTTP/1.0 is hyper's: answered, then closed
    let answer = exchange(addr, "GET /old HTTP/1.0\r\nHost: web.example\r\n\r\n").await;
    assert!(answer.contains(" 200 OK\r\n"), "{answer}");
    assert!(
        answer.ends_with(
            "GET /old xff=Some(\"127.0.0.1\") host=Some(\"web.example\") xfh=Some(\"web.example\")"
        ),
        "{answer}"
    );
}
