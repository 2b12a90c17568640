//! `rkubectl cordon/uncordon/taint/label` against a real apiserver
//! (in-process, free loopback port), run through the same entry point as
//! the binary; assertions on what the user sees and on the stored Node.

use rkube_api::core::v1::Node;
use rkube_api::Resource;
use rkube_client::{Api, Client};
use rkube_testing::TestApiServer;

/// `rkubectl ARGS...` in process: its output, or its error as the user reads it.
async fn rkubectl(api: &TestApiServer, args: &[&str]) -> Result<String, String> {
    let (out, result) = api.rkubectl(args).await;
    result.map(|()| out).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_taint_and_label_a_node() {
    let server = TestApiServer::start().await.unwrap();
    let url = server.url().to_string();
    let nodes: Api<Node> = Api::all(Client::connect(&url).unwrap());
    let mut n = Node::default();
    n.metadata_mut().name = "node-1".into();
    nodes.create(&n).await.unwrap();
    let get = || async { nodes.get("node-1").await.unwrap() };

    assert_eq!(
        rkubectl(&server, &["cordon", "node-1"]).await.unwrap(),
        "node/node-1 cordoned\n"
    );
    assert!(get().await.spec.unwrap().unschedulable);
    assert_eq!(
        rkubectl(&server, &["cordon", "node-1"]).await.unwrap(),
        "node/node-1 already cordoned\n"
    );
    assert_eq!(
        rkubectl(&server, &["uncordon", "node-1"]).await.unwrap(),
        "node/node-1 uncordoned\n"
    );
    assert!(!get().await.spec.unwrap_or_default().unschedulable);

    assert_eq!(
        rkubectl(
            &server,
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
    let err = rkubectl(&server, &["taint", "nodes", "node-1", "dedicated=cpu:NoSchedule"])
        .await
        .unwrap_err();
    assert!(err.contains("already has dedicated taint(s)"), "{err}");
    rkubectl(
        &server,
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
            &server,
            &["taint", "nodes", "node-1", "dedicated:NoSchedule-", "spot-"]
        )
        .await
        .unwrap(),
        "node/node-1 untainted\n"
    );
    assert!(get().await.spec.unwrap().taints.is_empty());
    let err = rkubectl(&server, &["taint", "nodes", "node-1", "spot-"])
        .await
        .unwrap_err();
    assert!(err.contains("taint \"spot\" not found on node node-1"), "{err}");

    assert_eq!(
        rkubectl(&server, &["label", "nodes", "node-1", "disk=ssd"])
            .await
            .unwrap(),
        "node/node-1 labeled\n"
    );
    assert_eq!(
        get().await.metadata().labels.get("disk").map(String::as_str),
        Some("ssd")
    );
    let err = rkubectl(&server, &["label", "nodes", "node-1", "disk=hdd"])
        .await
        .unwrap_err();
    assert!(
        err.contains("'disk' already has a value (ssd), and --overwrite is false"),
        "{err}"
    );
    rkubectl(&server, &["label", "nodes", "node-1", "disk=hdd", "--overwrite"])
        .await
        .unwrap();
    assert_eq!(
        get().await.metadata().labels.get("disk").map(String::as_str),
        Some("hdd")
    );
    assert_eq!(
        rkubectl(&server, &["label", "nodes", "node-1", "disk-"])
            .await
            .unwrap(),
        "node/node-1 unlabeled\n"
    );
    assert!(!get().await.metadata().labels.contains_key("disk"));
    server.stop().await.unwrap();
}
