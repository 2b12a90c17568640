//! The kubelet's server over TLS, both ways: a real kubelet (on a throwaway containerd in
//! a test network namespace) with its node credentials against an apiserver with TLS,
//! client certificates, RBAC and the cluster signing CA obtains its serving certificate
//! from the apiserver; `rkubectl logs` goes through the apiserver, which calls the kubelet
//! with its own client certificate (`--kubelet-client-certificate`) and verifies the
//! kubelet's by the node's IP; nobody else gets through to the kubelet directly.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rkube_api::core::v1::Pod;
use rkube_api::kubelet::v1::{kubelet_client::KubeletClient, LogsRequest};
use rkube_client::{Api, Client, ClientConfig};
use rkube_kubelet::testing::{TestNode, TestRegistry};
use rkube_testing::TestApiServer;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The secure apiserver, signing node certificates and calling kubelets over https
/// with the PKI's apiserver-kubelet-client certificate.
async fn start_apiserver(nodes: &[&str]) -> TestApiServer {
    TestApiServer::builder()
        .secure(nodes)
        .pki_flag("--cluster-signing-cert-file", "ca.crt")
        .pki_flag("--cluster-signing-key-file", "ca.key")
        .pki_flag("--kubelet-client-certificate", "apiserver-kubelet-client.crt")
        .pki_flag("--kubelet-client-key", "apiserver-kubelet-client.key")
        .pki_flag("--kubelet-certificate-authority", "ca.crt")
        .start()
        .await
        .unwrap()
}

/// TLS towards the kubelet trusting the cluster CA, as the PKI's `stem` (none: no
/// client certificate), verifying the kubelet's certificate for `domain`.
fn tls_as(pki: &Path, stem: Option<&str>, domain: &str) -> ClientTlsConfig {
    let read = |f: String| std::fs::read(pki.join(f)).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt".into())))
        .domain_name(domain);
    if let Some(stem) = stem {
        tls = tls.identity(Identity::from_pem(
            read(format!("{stem}.crt")),
            read(format!("{stem}.key")),
        ));
    }
    tls
}

/// `talker`'s log straight from the kubelet at `addr`, over TLS when given, else
/// plain http. Errors are (gRPC code, message with sources).
async fn direct_logs(
    addr: SocketAddr,
    tls: Option<ClientTlsConfig>,
) -> Result<String, (tonic::Code, String)> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    // the message with its sources, and the debug form, where a TLS alert shows
    let status = |s: tonic::Status| {
        (
            s.code(),
            format!(
                "{} ({s:?})",
                rkube_daemon::with_sources(s.message().to_string(), std::error::Error::source(&s))
            ),
        )
    };
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| (tonic::Code::Unavailable, rkube_daemon::error_report(&e)))?;
    let mut stream = KubeletClient::new(channel)
        .logs(LogsRequest {
            namespace: "default".into(),
            pod: "talker".into(),
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(status)? {
        out.extend(chunk.data);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A bare TLS handshake with the kubelet at `addr`, trusting the PKI's CA and offering
/// no client certificate, then a read: the kubelet's answer. (A gRPC call cannot show
/// it reliably: its HTTP/2 preface, sent before the server has judged the handshake,
/// can turn the kubelet's close into a reset that loses the alert.)
async fn handshake_without_certificate(addr: SocketAddr, pki: &Path) -> std::io::Error {
    use tokio::io::AsyncReadExt as _;
    use tokio_rustls::rustls::pki_types::{pem::PemObject as _, CertificateDer, ServerName};
    use tokio_rustls::rustls::{self, crypto::ring};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.join("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    // TLS 1.3: the client's side of the handshake completes before the server has
    // checked the (missing) certificate; its verdict is the next thing to read
    let mut tls = match connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
    {
        Ok(tls) => tls,
        Err(e) => return e,
    };
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
        Ok(Err(e)) => e,
        other => panic!("the kubelet accepted a TLS client without a certificate: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kubelet_of_a_tls_apiserver_serves_tls_to_the_apiserver_only() -> anyhow::Result<()> {
    if let Some(reason) = rkube_kubelet::testing::skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return Ok(());
    }
    let node = TestNode::start().await?;
    let registry = TestRegistry::start().await?;
    let (image, _) = registry.push_busybox("rkube/busybox").await?;
    let c = start_apiserver(&["node-a", "other"]).await;
    let pki = c.pki();

    // the kubelet with its node credentials and no certificate files of its own
    let mut config = rkube_kubelet::Config::for_test_node(
        &node,
        c.url().to_string(),
        "node-a",
        [127, 0, 0, 1].into(),
        Some("10.244.11.0/24"),
    );
    config.kubeconfig = Some(pki.join("node-node-a.conf"));
    config.pod_poll_interval = Duration::from_millis(200);
    let kubelet = rkube_kubelet::start(config).await?;
    let addr = kubelet.addr;

    // the apiserver signed it: audited as the node's serving certificate request
    let issued = c.audit().unwrap().iter().any(|e| {
        e["user"]["username"] == "system:node:node-a"
            && e["objectRef"]["resource"] == "certificatesigningrequests"
            && e["objectRef"]["subresource"] == "kubeletserving"
            && e["responseStatus"]["code"] == 201
    });
    assert!(issued, "{:#?}", c.audit().unwrap());

    let mut pod: Pod = serde_yaml::from_str(
        &r#"
metadata: {name: talker}
spec:
  nodeName: node-a
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, 'echo hello over tls; exec sleep 3600']
"#
        .replace("IMAGE", &image),
    )?;
    pod.spec.get_or_insert_with(Default::default).node_name = "node-a".into();
    Api::<Pod>::namespaced(c.client(), "default").create(&pod).await?;

    // `rkubectl logs` through the apiserver, which calls the kubelet over https
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (out, result) = c.rkubectl(&["logs", "talker"]).await;
        if result.is_ok() && out == "hello over tls\n" {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "rkubectl logs never printed the line: {out:?} {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // directly with the apiserver's certificate: the kubelet's certificate is for the
    // node IP and name, signed by the cluster CA
    for domain in ["127.0.0.1", "node-a"] {
        let out = direct_logs(addr, Some(tls_as(&pki, Some("apiserver-kubelet-client"), domain))).await;
        assert_eq!(out.as_deref(), Ok("hello over tls\n"), "{domain}");
    }
    // ... and for nothing else
    let err = direct_logs(
        addr,
        Some(tls_as(&pki, Some("apiserver-kubelet-client"), "node-b")),
    )
    .await
    .unwrap_err();
    assert!(
        err.1.contains(r#"certificate not valid for name "node-b""#),
        "{err:?}"
    );

    // no client certificate: refused in the TLS handshake, with TLS 1.3's alert
    let err = handshake_without_certificate(addr, &pki).await;
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    // ... so a gRPC call without one gets no answer from the kubelet at all
    let (code, message) = direct_logs(addr, Some(tls_as(&pki, None, "127.0.0.1")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            code,
            tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Unavailable
        ) && message.contains("transport error"),
        "{code:?} {message}"
    );

    // a certificate of the same CA, but not the apiserver's: PermissionDenied, naming
    // the user
    for (stem, user) in [
        ("node-other", "system:node:other"),
        ("kube-proxy", "system:kube-proxy"),
    ] {
        let (code, message) = direct_logs(addr, Some(tls_as(&pki, Some(stem), "127.0.0.1")))
            .await
            .unwrap_err();
        assert_eq!(code, tonic::Code::PermissionDenied, "{message}");
        assert!(
            message.starts_with(&format!("User {user:?}")) && message.contains("may not call the kubelet"),
            "{message}"
        );
    }
    // the administrator (group system:masters) may
    let out = direct_logs(addr, Some(tls_as(&pki, Some("admin"), "127.0.0.1"))).await;
    assert_eq!(out.as_deref(), Ok("hello over tls\n"));

    // plain text: no answer at all
    let err = direct_logs(addr, None).await.unwrap_err();
    assert_ne!(err.0, tonic::Code::PermissionDenied, "{err:?}");
    assert!(!err.1.contains("hello"), "{err:?}");

    kubelet.stop().await;
    c.stop().await.unwrap();
    drop(node);
    Ok(())
}

/// How the kubelet obtains its serving certificate (no containerd needed): only with
/// node credentials, only from an apiserver that signs, and the errors say what to do.
#[tokio::test]
async fn only_a_node_obtains_a_serving_certificate_and_errors_say_what_to_give() {
    let serving = |c: &TestApiServer, stem: &str| {
        let mut client_config = ClientConfig::load(&c.pki().join(format!("{stem}.conf"))).unwrap();
        client_config.server = c.url().to_string();
        let config = rkube_kubelet::Config::new(c.url().to_string(), "node-a");
        async move {
            let client = Client::from_config(&client_config).unwrap();
            rkube_kubelet::serving::serving_tls(&config, &client_config, &client).await
        }
    };
    let c = start_apiserver(&["node-a"]).await;
    let tls = serving(&c, "node-node-a").await.unwrap();
    assert!(tls.tls.is_some());
    assert_eq!(tls.source, "issued by the apiserver");

    // the administrator is not a node
    let err = format!("{:#}", serving(&c, "admin").await.err().unwrap());
    assert!(
        err.contains(r#"User "admin" cannot have a kubelet serving certificate signed: only a node"#)
            && err.contains("or give --tls-cert-file and --tls-private-key-file"),
        "{err}"
    );
    c.stop().await.unwrap();

    // an apiserver without the signing CA says which flags it needs
    let c = TestApiServer::secure(&["node-a"]).await.unwrap();
    let err = format!("{:#}", serving(&c, "node-node-a").await.err().unwrap());
    assert!(
        err.contains("start it with --cluster-signing-cert-file and --cluster-signing-key-file"),
        "{err}"
    );
    c.stop().await.unwrap();
}
