//! `rkubectl cordon/uncordon/taint/label` against a real apiserver
//! (in-process, free loopback port), run through the same entry point as
//! the binary; assertions on what the user sees and on the stored Node.

use clap::Parser;
use rkube_api::core::v1::Node;
use rkube_api::Resource;
use rkube_client::{Api, Client};

async fn rkubectl(url: &str, args: &[&str]) -> Result<String, String> {
    let head = ["rkubectl", "--server", url, "--config", "/dev/null"];
    let argv = head.iter().chain(args).copied();
    let cli = rkube_ctl::Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let r = rkube_ctl::run(cli, &mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    r.map(|_| text).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_taint_and_label_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let server = rkube_apiserver::start(rkube_apiserver::Config::local(dir.path()))
        .await
        .unwrap();
    let url = server.url();
    let nodes: Api<Node> = Api::all(Client::connect(&url).unwrap());
    let mut n = Node::default();
    n.metadata_mut().name = "node-1".into();
    nodes.create(&n).await.unwrap();
    let get = || async { nodes.get("node-1").await.unwrap() };

    assert_eq!(
        rkubectl(&url, &["cordon", "node-1"]).await.unwrap(),
        "node/node-1 cordoned\n"
    );
    assert!(get().await.spec.unwrap().unschedulable);
    assert_eq!(
        rkubectl(&url, &["cordon", "node-1"]).await.unwrap(),
        "node/node-1 already cordoned\n"
    );
    assert_eq!(
        rkubectl(&url, &["uncordon", "node-1"]).await.unwrap(),
        "node/node-1 uncordoned\n"
    );
    assert!(!get().await.spec.unwrap_or_default().unschedulable);

    assert_eq!(
        rkubectl(
            &url,
            &[
                "taint",
                "nodes",
                "node-1",
                "dedicated=gpu:NoSchedule",
                "spot:PreferNoSchedule"
            ]
        )
        .await
        .unwrap(),
        "node/node-1 tainted\n"
    );
    let taints = get().await.spec.unwrap().taints;
    assert_eq!(taints.len(), 2);
    assert_eq!(
        (
            taints[0].key.as_str(),
            taints[0].value.as_str(),
            taints[0].effect.as_str()
        ),
        ("dedicated", "gpu", "NoSchedule")
    );
    let err = rkubectl(&url, &["taint", "nodes", "node-1", "dedicated=cpu:NoSchedule"])
        .await
        .unwrap_err();
    assert!(err.contains("already has dedicated taint(s)"), "{err}");
    rkubectl(
        &url,
        &[
            "taint",
            "nodes",
            "node-1",
            "dedicated=cpu:NoSchedule",
            "--overwrite",
        ],
    )
    .await
    .unwrap();
    assert_eq!(get().await.spec.unwrap().taints[0].value, "cpu");
    assert_eq!(
        rkubectl(
            &url,
            &["taint", "nodes", "node-1", "dedicated:NoSchedule-", "spot-"]
        )
        .await
        .unwrap(),
        "node/node-1 untainted\n"
    );
    assert!(get().await.spec.unwrap().taints.is_empty());
    let err = rkubectl(&url, &["taint", "nodes", "node-1", "spot-"])
        .await
        .unwrap_err();
    assert!(err.contains("taint \"spot\" not found on node node-1"), "{err}");

    assert_eq!(
        rkubectl(&url, &["label", "nodes", "node-1", "disk=ssd"])
            .await
            .unwrap(),
        "node/node-1 labeled\n"
    );
    assert_eq!(
        get().await.metadata().labels.get("disk").map(String::as_str),
        Some("ssd")
    );
    let err = rkubectl(&url, &["label", "nodes", "node-1", "disk=hdd"])
        .await
        .unwrap_err();
    assert!(
        err.contains("'disk' already has a value (ssd), and --overwrite is false"),
        "{err}"
    );
    rkubectl(&url, &["label", "nodes", "node-1", "disk=hdd", "--overwrite"])
        .await
        .unwrap();
    assert_eq!(
        get().await.metadata().labels.get("disk").map(String::as_str),
        Some("hdd")
    );
    assert_eq!(
        rkubectl(&url, &["label", "nodes", "node-1", "disk-"])
            .await
            .unwrap(),
        "node/node-1 unlabeled\n"
    );
    assert!(!get().await.metadata().labels.contains_key("disk"));
    server.stop().await.unwrap();
}
