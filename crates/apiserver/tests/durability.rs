//! `kill -9` of the apiserver in the middle of a stream of writes loses
//! none that was acknowledged: the real binary, a real SIGKILL, a restart on
//! the same data directory.

mod common;

use common::*;
use rkube_api::core::v1::ConfigMap;
use rkube_api::rpc::api_server_client::ApiServerClient;
use rkube_api::Resource;
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(dir: &std::path::Path, port: u16) -> Child {
    spawn_with(dir, port, &["--insecure"])
}

fn spawn_with(dir: &std::path::Path, port: u16, flags: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rkube-apiserver"))
        .args(flags)
        // no health endpoint: its default port would clash between the tests
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--health-addr",
            "off",
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rkube-apiserver")
}

/// Starts the binary (`--insecure`) on a free port and connects once it answers. Tests run
/// side by side: another server may take the port between `free_port` and the child's
/// bind, and the child then exits; it is started again on another port.
async fn start(dir: &std::path::Path) -> (Child, ApiServerClient<tonic::transport::Channel>) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = spawn(dir, port);
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if let Ok(mut c) = ApiServerClient::connect(format!("http://127.0.0.1:{port}")).await {
                if c.version(rkube_api::rpc::VersionRequest {}).await.is_ok() {
                    return (child, c);
                }
            }
            assert!(
                Instant::now() < deadline,
                "apiserver did not come up on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("rkube-apiserver exited at start five times in a row (ports taken?)");
}

/// The binary with no security flags creates its PKI and serves only
/// authenticated TLS: the admin config it writes works, and nothing else
/// does. (The other tests here run it `--insecure`: they are about the store.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_is_secure_by_default_and_writes_the_admin_config() {
    use rkube_client::{Api, Client, ClientConfig, ListParams};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let pki = dir.path().join("pki");
    let mut child = spawn_with(
        &dir.path().join("store"),
        port,
        &["--cert-dir", pki.to_str().unwrap()],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let (admin, admin_conf) = loop {
        // written by the apiserver at start
        if let Ok(config) = ClientConfig::load(&pki.join("admin.conf")) {
            let client = Client::from_config(&config).unwrap();
            match Api::<ConfigMap>::namespaced(client.clone(), "default")
                .list(&ListParams::default())
                .await
            {
                Ok(_) => break (client, config),
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "the secure apiserver did not answer: {e}"
                ),
            }
        }
        assert!(
            Instant::now() < deadline,
            "the secure apiserver wrote no admin.conf"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(admin_conf.server, format!("https://127.0.0.1:{port}"));
    // The administrator may write.
    let cm = config_map("default", "secure", &[]);
    Api::<ConfigMap>::namespaced(admin, "default")
        .create(&cm)
        .await
        .unwrap();
    // Plain text is not spoken, and TLS without a client certificate is anonymous.
    let plain = Client::from_config(&ClientConfig::for_server(format!("http://127.0.0.1:{port}"))).unwrap();
    assert!(Api::<ConfigMap>::namespaced(plain, "default")
        .list(&ListParams::default())
        .await
        .is_err());
    let anonymous = Client::from_config(&ClientConfig {
        client_certificate: None,
        client_key: None,
        ..admin_conf.clone()
    })
    .unwrap();
    let err = Api::<ConfigMap>::namespaced(anonymous, "default")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("nauthenticated") || err.to_string().contains("credentials"),
        "{err}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, client) = start(dir.path()).await;

    let acked = Arc::new(Mutex::new(HashSet::new()));
    // Why a writer stopped: the kill, or (reported if the writes never flow) anything else.
    let stopped_by = Arc::new(Mutex::new(None::<String>));
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut c = client.clone();
        let acked = acked.clone();
        let stopped_by = stopped_by.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                match create(&mut c, &config_map("default", &name, &[])).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(name);
                    }
                    // the server died under us: stop writing
                    Err(e) => {
                        stopped_by.lock().unwrap().get_or_insert(format!("{e:?}"));
                        return;
                    }
                }
            }
        }));
    }
    // let the writes stream, then kill without warning
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.lock().unwrap().len() < 300 {
        assert!(
            Instant::now() < deadline,
            "writes are not being acknowledged ({} so far); a writer stopped on: {:?}",
            acked.lock().unwrap().len(),
            stopped_by.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let (mut child, mut c) = start(dir.path()).await;
    let (items, _) = list::<ConfigMap>(
        &mut c,
        rkube_api::rpc::ListRequest {
            namespace: "default".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let stored: HashSet<String> = items.iter().map(|cm| cm.name().to_string()).collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost after kill -9, e.g. {:?}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
    assert!(acked.len() >= 300);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut c) = start(dir.path()).await;
    for i in 0..20 {
        create(&mut c, &config_map("default", &format!("t{i}"), &[]))
            .await
            .unwrap();
    }
    // a watch is open while the server stops: it must not hold the shutdown up
    let req = rkube_api::rpc::WatchRequest {
        resource: rid::<ConfigMap>(),
        namespace: "default".into(),
        ..Default::default()
    };
    let _watch = c.watch(req).await.unwrap().into_inner();
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "rkube-apiserver did not exit within 10s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");

    let (mut child, mut c) = start(dir.path()).await;
    let (items, _) = list::<ConfigMap>(
        &mut c,
        rkube_api::rpc::ListRequest {
            namespace: "default".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(items.len(), 20);
    child.kill().unwrap();
    child.wait().unwrap();
}
