//! Ingress end to end: two apps (Deployments of busybox httpd answering with their own
//! name, behind ClusterIP Services) reached through one rkube-ingress on node 0's :80
//! and :443, by Host header and by path (Exact vs Prefix), the defaultBackend, HTTPS with
//! the certificate of a kubernetes.io/tls Secret chosen by SNI (made in the test with
//! rcgen), an Ingress change taking effect, an Ingress naming a missing Service reported
//! without breaking the others, 503 for a Service without ready pods, and the node's
//! address in `status.loadBalancer`. Requests come from the cluster namespace (a machine
//! on the nodes' lan) with hyper's client.

use anyhow::Context;
use rkube_api::core::v1::{Event, Secret};
use rkube_api::networking::v1::Ingress;
use rkube_api::Resource;
use rkube_e2e::{run, ClusterOptions, NodeDaemon, TestCluster};
use rkube_testing::eventually;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;

/// The body of the test's requests.
type Body = http_body_util::Empty<hyper::body::Bytes>;

/// A Deployment whose pods answer every path the test asks for with `name`, and its Service.
fn app(image: &str, name: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {image}
        command: ["sh", "-c", "mkdir -p /www/api && for f in index.html about exact exactly api/v1; do echo {name} > /www/$f; done && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"#
    )
}

const NOBODY: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: nobody, namespace: default}
spec:
  selector: {app: nobody-has-this-label}
  ports: [{port: 80, targetPort: 8080}]
"#;

fn backend(svc: &str) -> String {
    format!("{{service: {{name: {svc}, port: {{number: 80}}}}}}")
}

/// The Ingress under test; `blue_host_app` is the app behind blue.example.com.
fn apps_ingress(blue_host_app: &str) -> String {
    let (blue, green, nobody) = (backend("blue"), backend("green"), backend("nobody"));
    let blue_host = backend(blue_host_app);
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: apps, namespace: default}}
spec:
  ingressClassName: rkube
  defaultBackend: {green}
  tls: [{{hosts: [secure.example.com], secretName: secure-tls}}]
  rules:
  - host: blue.example.com
    http: {{paths: [{{path: /, pathType: Prefix, backend: {blue_host}}}]}}
  - host: green.example.com
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: green, port: {{name: http}}}}}}}}]}}
  - host: secure.example.com
    http: {{paths: [{{path: /, pathType: Prefix, backend: {blue}}}]}}
  - host: paths.example.com
    http:
      paths:
      - {{path: /exact, pathType: Exact, backend: {blue}}}
      - {{path: /, pathType: Prefix, backend: {green}}}
      - {{path: /api, pathType: Prefix, backend: {blue}}}
  - host: nobody.example.com
    http: {{paths: [{{path: /, pathType: ImplementationSpecific, backend: {nobody}}}]}}
"#
    )
}

const BROKEN: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: broken, namespace: default}
spec:
  rules:
  - host: ghost.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: ghost, port: {number: 80}}}}]}
  tls: [{hosts: [ghost.example.com], secretName: no-such-secret}]
"#;

/// One GET of `path` for `host` at `addr` (HTTPS with SNI `host` when `tls` is given);
/// the status and the trimmed body.
async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> anyhow::Result<(u16, String)> {
    use http_body_util::BodyExt;
    let tcp = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    let req = hyper::Request::get(path).header("host", host).body(Body::new())?;
    let exchange = async {
        let resp = match tls {
            None => {
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                send.send_request(req).await?
            }
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
                let stream = connector.connect(name, tcp).await.context("TLS handshake")?;
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                send.send_request(req).await?
            }
        };
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).trim().to_string()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("the request timed out")?
}

/// Waits until GET `path` for `host` answers `status` with `body` (polled).
async fn expect(addr: SocketAddr, host: &str, path: &str, status: u16, body: &str) -> anyhow::Result<()> {
    eventually(
        &format!("GET http://{host}{path} to answer {status} {body:?}"),
        Duration::from_secs(60),
        || async {
            let got = get(addr, host, path, None).await?;
            anyhow::ensure!(got.0 == status && got.1.contains(body), "answered {got:?}");
            Ok(true)
        },
    )
    .await
}

/// A self-signed certificate for `host` and the Secret holding it.
fn tls_secret(host: &str) -> anyhow::Result<(Secret, rustls::pki_types::CertificateDer<'static>)> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])?.self_signed(&key)?;
    let mut secret = Secret {
        r#type: "kubernetes.io/tls".into(),
        ..Default::default()
    };
    secret.metadata_mut().name = "secure-tls".into();
    secret.metadata_mut().namespace = "default".into();
    secret.data.insert("tls.crt".into(), cert.pem().into_bytes());
    secret
        .data
        .insert("tls.key".into(), key.serialize_pem().into_bytes());
    Ok((secret, cert.der().clone()))
}

fn connector_trusting(
    cert: rustls::pki_types::CertificateDer<'static>,
) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn suite(netns: std::path::PathBuf) -> anyhow::Result<()> {
    let cluster = TestCluster::start(
        netns,
        ClusterOptions {
            nodes: 1,
            proxy: None,
            ..Default::default()
        },
    )
    .await?;
    let mut config = rkube_ingress::Config::new(cluster.lan_url(), "node-0");
    config.kubeconfig = Some(cluster.kubeconfig("rkube-ingress"));
    // on node 0, as the daemon runs there
    let mut ingress = NodeDaemon::start(cluster.nodes[0].netns(), "ingress".into(), |stop| {
        rkube_ingress::run(config, stop)
    })?;
    let node = cluster.nodes[0].ip;
    let http = SocketAddr::new(node.into(), 80);
    let https = SocketAddr::new(node.into(), 443);

    let (secret, cert) = tls_secret("secure.example.com")?;
    cluster.api::<Secret>("default")?.create(&secret).await?;
    cluster.apply(&format!(
        "{}---{}---{}---{}",
        app(&cluster.image, "blue"),
        app(&cluster.image, "green"),
        NOBODY,
        apps_ingress("blue")
    ))?;
    let result = async {
        // by host name, one address
        expect(http, "blue.example.com", "/", 200, "blue").await?;
        expect(http, "green.example.com", "/about", 200, "green").await?;
        expect(http, "green.example.com:80", "/", 200, "green").await?;
        // by path: Exact only for the exact path, Prefix by elements, longest first
        let paths = [
            ("/exact", "blue"),
            ("/exactly", "green"),
            ("/api/v1", "blue"),
            ("/about", "green"),
        ];
        for (path, app) in paths {
            let got = get(http, "paths.example.com", path, None).await?;
            assert_eq!(got, (200, app.to_string()), "GET paths.example.com{path}");
        }
        // any other host: the defaultBackend
        let got = get(http, "other.example.com", "/about", None).await?;
        assert_eq!(
            got,
            (200, "green".to_string()),
            "an unknown host reaches the defaultBackend"
        );
        // a Service without ready pods: 503 at once
        let got = get(http, "nobody.example.com", "/", None).await?;
        assert_eq!(got.0, 503, "a backend without endpoints: {got:?}");
        // both replicas of an app answer (round-robin over ready pods)
        let mut statuses = std::collections::BTreeSet::new();
        for _ in 0..4 {
            statuses.insert(get(http, "blue.example.com", "/", None).await?.0);
        }
        assert_eq!(statuses, [200].into());

        // HTTPS: the Secret's certificate for its host (the handshake trusts only it)
        let connector = connector_trusting(cert.clone())?;
        let got = eventually(
            "HTTPS for secure.example.com",
            Duration::from_secs(30),
            || async {
                get(https, "secure.example.com", "/", Some(&connector))
                    .await
                    .map(Some)
            },
        )
        .await?;
        assert_eq!(got, (200, "blue".to_string()));
        let no_cert = get(https, "blue.example.com", "/", Some(&connector)).await;
        assert!(
            no_cert.is_err(),
            "a host without a TLS entry gets no certificate: {no_cert:?}"
        );

        // status.loadBalancer: the node's address, and rkubectl shows it
        let ingresses = cluster.api::<Ingress>("default")?;
        let address = eventually(
            "status.loadBalancer of the Ingress",
            Duration::from_secs(30),
            || async {
                let ing = ingresses.get("apps").await?;
                let lb = ing
                    .status
                    .and_then(|s| s.load_balancer)
                    .map(|l| l.ingress)
                    .unwrap_or_default();
                anyhow::Ok(lb.first().map(|i| i.ip.clone()))
            },
        )
        .await?;
        assert_eq!(address, node.to_string());
        let table = cluster.rkubectl(&["get", "ingress", "apps"])?;
        let header: Vec<&str> = table
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"],
            "{table}"
        );
        assert!(
            table.contains("blue.example.com,green.example.com,secure.example.com + 2 more...")
                && table.contains(&node.to_string())
                && table.contains("80, 443"),
            "{table}"
        );

        // an Ingress naming a missing Service and Secret: Warning events on it, and the
        // other Ingress's routes untouched
        cluster.apply(BROKEN)?;
        let events = cluster.api::<Event>("default")?;
        eventually(
            "Warning events on the broken Ingress",
            Duration::from_secs(30),
            || async {
                let list = events.list(&Default::default()).await?;
                let reasons: Vec<(String, String)> = list
                    .items
                    .iter()
                    .filter(|e| e.involved_object.as_ref().is_some_and(|o| o.name == "broken"))
                    .map(|e| (e.reason.clone(), e.message.clone()))
                    .collect();
                let has =
                    |reason: &str, text: &str| reasons.iter().any(|(r, m)| r == reason && m.contains(text));
                anyhow::ensure!(
                    has("ServiceNotFound", "service \"default/ghost\" not found")
                        && has(
                            "SecretNotFound",
                            "TLS secret \"default/no-such-secret\" not found"
                        ),
                    "events: {reasons:?}"
                );
                Ok(true)
            },
        )
        .await?;
        let got = get(http, "ghost.example.com", "/", None).await?;
        assert_eq!(got.0, 503, "the broken rule answers 503: {got:?}");
        assert_eq!(
            get(http, "blue.example.com", "/", None).await?,
            (200, "blue".into())
        );
        assert_eq!(
            get(https, "secure.example.com", "/", Some(&connector)).await?,
            (200, "blue".into())
        );

        // updates take effect: a rule's backend changed by apply, then the
        // defaultBackend removed by a JSON patch, after which other hosts get 404
        cluster.apply(&apps_ingress("green"))?;
        expect(http, "blue.example.com", "/", 200, "green").await?;
        cluster.rkubectl(&[
            "patch",
            "ingress",
            "apps",
            "--type",
            "json",
            "-p",
            r#"[{"op": "remove", "path": "/spec/defaultBackend"}]"#,
        ])?;
        expect(http, "other.example.com", "/about", 404, "404").await?;
        assert_eq!(
            get(http, "green.example.com", "/", None).await?,
            (200, "green".into())
        );
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = &result {
        eprintln!("{e:#}\n{}", cluster.diagnostics().await);
    }
    ingress.stop()?;
    cluster.stop().await?;
    result
}

#[test]
fn ingress_routes_two_apps_by_host_and_path_with_tls() -> anyhow::Result<()> {
    run(suite)
}
