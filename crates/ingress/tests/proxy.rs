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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let served = Arc::new(AtomicUsize::new(0));
                let service =
                    hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                        let seen = format!(
                            "{} {} xff={:?} host={:?} xfh={:?}",
                            req.method(),
                            req.uri(),
                            req.headers().get("x-forwarded-for"),
                            req.headers().get("host"),
                            req.headers().get("x-forwarded-host"),
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
            });
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
