//! Limits on abuse, in process on loopback: the request size limit, the
//! per-user caps on watches and on requests in flight, and the request
//! timeout. Two users (static tokens) show that one user's excess does not
//! hold the other back.

mod common;

use common::{create, rid, Harness};
use rkube_api::core::v1::{
    ConfigMap, DaemonEndpoint, Namespace, Node, NodeAddress, NodeDaemonEndpoints, NodeStatus,
};
use rkube_api::rpc::{self, api_server_client::ApiServerClient};
use rkube_api::Resource;
use rkube_testing::{eventually, TestApiServer};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Code, Request};

const TOKENS: &str = "alice-token,alice,1\nbob-token,bob,2\nnode-token,system:node:n1,3,system:nodes\n";

/// An apiserver with `flags` that knows alice and bob by their tokens.
async fn start(flags: &[&str]) -> Harness {
    Harness::start_with(
        TestApiServer::builder()
            .flag_file("--token-auth-file", "tokens.csv", TOKENS)
            .flags(flags),
    )
    .await
}

/// `msg` sent as `user` (alice or bob).
fn as_user<T>(user: &str, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {user}-token").parse().unwrap());
    req
}

fn watch_namespaces() -> rpc::WatchRequest {
    rpc::WatchRequest {
        resource: rid::<Namespace>(),
        ..Default::default()
    }
}

fn get_default_namespace() -> rpc::GetRequest {
    rpc::GetRequest {
        resource: rid::<Namespace>(),
        namespace: String::new(),
        name: "default".into(),
    }
}

fn config_map(name: &str, bytes: usize) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata_mut().name = name.into();
    c.metadata_mut().namespace = "default".into();
    c.data.insert("blob".into(), "x".repeat(bytes));
    c
}

#[tokio::test]
async fn an_oversized_request_is_refused_naming_the_limit() {
    let c = start(&["--max-request-bytes", "262144"]).await;
    let mut client = c.client.clone();
    let create_as_alice = |cm: ConfigMap| {
        as_user(
            "alice",
            rpc::CreateRequest {
                resource: rid::<ConfigMap>(),
                namespace: "default".into(),
                object: Some(rkube_api::to_any(&cm)),
                dry_run: false,
            },
        )
    };
    let err = client
        .create(create_as_alice(config_map("big", 300 * 1024)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("262144 bytes") && err.message().contains("--max-request-bytes"),
        "{}",
        err.message()
    );
    // under the limit it goes through, on the same connection
    client
        .create(create_as_alice(config_map("small", 100 * 1024)))
        .await
        .unwrap();
    c.stop().await;
}

#[tokio::test]
async fn the_default_request_limit_is_three_mebibytes() {
    let c = start(&[]).await;
    let mut client = c.client.clone();
    let err = create(&mut client, &config_map("huge", 4 * 1024 * 1024))
        .await
        .unwrap_err();
    // authentication is on, but the size is checked first
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("3145728 bytes"), "{}", err.message());
    c.stop().await;
}

#[tokio::test]
async fn a_user_over_the_watch_cap_is_refused_while_others_go_on() {
    let c = start(&["--max-watches-per-user", "3"]).await;
    let mut client = c.client.clone();
    let mut alices = Vec::new();
    for _ in 0..3 {
        let w = client.watch(as_user("alice", watch_namespaces())).await.unwrap();
        alices.push(w.into_inner());
    }
    let err = client
        .watch(as_user("alice", watch_namespaces()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("alice") && err.message().contains("--max-watches-per-user=3"),
        "{}",
        err.message()
    );
    // alice's other requests, and bob's watches and requests, are not held back
    client
        .get(as_user("alice", get_default_namespace()))
        .await
        .unwrap();
    let mut bob = client
        .watch(as_user("bob", watch_namespaces()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bob.message().await.unwrap().unwrap().r#type, "ADDED");
    client.get(as_user("bob", get_default_namespace())).await.unwrap();
    // the open watches still stream
    assert_eq!(alices[0].message().await.unwrap().unwrap().r#type, "ADDED");

    // a closed watch gives its place back
    alices.pop();
    eventually("alice may watch again", Duration::from_secs(5), || {
        let mut client = client.clone();
        async move {
            match client.watch(as_user("alice", watch_namespaces())).await {
                Ok(w) => {
                    drop(w);
                    true
                }
                Err(e) => {
                    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                    false
                }
            }
        }
    })
    .await
    .unwrap();
    c.stop().await;
}

/// A TCP listener that accepts connections and never answers: a kubelet
/// that hangs, so that calls proxied to it stay in flight.
async fn hanging_kubelet() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    port
}

/// A Node whose kubelet is `port` on loopback (registered by bob).
async fn register_node(client: &mut ApiServerClient<Channel>, port: u16) {
    let mut node = Node::default();
    node.metadata_mut().name = "hung".into();
    let created = client
        .create(as_user(
            "bob",
            rpc::CreateRequest {
                resource: rid::<Node>(),
                namespace: String::new(),
                object: Some(rkube_api::to_any(&node)),
                dry_run: false,
            },
        ))
        .await
        .unwrap();
    let mut node: Node = common::obj(created);
    node.status = Some(NodeStatus {
        addresses: vec![NodeAddress {
            r#type: "InternalIP".into(),
            address: "127.0.0.1".into(),
        }],
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: port as i32 }),
        }),
        ..Default::default()
    });
    client
        .update_status(as_user(
            "bob",
            rpc::UpdateRequest {
                resource: rid::<Node>(),
                object: Some(rkube_api::to_any(&node)),
                dry_run: false,
            },
        ))
        .await
        .unwrap();
}

fn metrics() -> rpc::MetricsRequest {
    rpc::MetricsRequest {
        namespace: "default".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_user_over_the_inflight_cap_is_refused_while_others_go_on() {
    let c = start(&["--max-requests-inflight-per-user", "2"]).await;
    let mut client = c.client.clone();
    register_node(&mut client, hanging_kubelet().await).await;
    // two metrics calls wait on the hung kubelet (up to its 5 s timeout)
    let mut pending = Vec::new();
    for _ in 0..2 {
        let mut client = client.clone();
        pending.push(tokio::spawn(async move {
            client.metrics(as_user("alice", metrics())).await
        }));
    }
    let err = eventually("alice's third request is refused", Duration::from_secs(4), || {
        let mut client = client.clone();
        async move { client.get(as_user("alice", get_default_namespace())).await.err() }
    })
    .await
    .unwrap();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("alice") && err.message().contains("--max-requests-inflight-per-user=2"),
        "{}",
        err.message()
    );
    // bob is not held back, and alice's watches are not requests in flight
    client.get(as_user("bob", get_default_namespace())).await.unwrap();
    client.watch(as_user("alice", watch_namespaces())).await.unwrap();
    // once the calls end, alice may send again
    for p in pending {
        p.await.unwrap().unwrap();
    }
    client
        .get(as_user("alice", get_default_namespace()))
        .await
        .unwrap();
    c.stop().await;
}

#[tokio::test]
async fn slow_requests_time_out_but_watches_are_not_cut() {
    let c = start(&["--request-timeout", "1"]).await;
    let mut client = c.client.clone();
    register_node(&mut client, hanging_kubelet().await).await;
    let mut watch = client
        .watch(as_user("alice", watch_namespaces()))
        .await
        .unwrap()
        .into_inner();
    let started = Instant::now();
    let err = client.metrics(as_user("alice", metrics())).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("--request-timeout"), "{}", err.message());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // the watch outlived the timeout: it still delivers new events
    assert!(started.elapsed() >= Duration::from_secs(1));
    let mut ns = Namespace::default();
    ns.metadata_mut().name = "late".into();
    client
        .create(as_user(
            "bob",
            rpc::CreateRequest {
                resource: rid::<Namespace>(),
                namespace: String::new(),
                object: Some(rkube_api::to_any(&ns)),
                dry_run: false,
            },
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ev = tokio::time::timeout_at(deadline.into(), watch.message())
            .await
            .expect("the watch delivered no event for the new namespace")
            .expect("the watch was cut")
            .expect("the watch ended");
        let obj: Namespace = rkube_api::from_any(ev.object.as_ref().unwrap()).unwrap();
        if obj.name() == "late" {
            break;
        }
    }
    c.stop().await;
}

/// A flood of writes from one user (64 clients creating as fast as they can) against a
/// small `--max-mutating-requests-inflight`: the user's excess is refused at once with
/// RESOURCE_EXHAUSTED and a `retry-after`, while a node renewing its Lease through the
/// quarter kept for the system is never refused, and another user's rkube client gets
/// its write in by retrying after the pauses it is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_writes_is_refused_with_retry_after_while_nodes_keep_their_share() {
    let c = start(&[
        "--max-mutating-requests-inflight",
        "8",
        "--max-requests-inflight-per-user",
        "0",
    ])
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for task in 0..64 {
        let mut client = c.client.clone();
        let stop = stop.clone();
        flood.push(tokio::spawn(async move {
            let (mut created, mut refused, mut retry_after) = (0u32, 0u32, None);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let cm = config_map(&format!("flood-{task}-{i}"), 64);
                // dry runs: the whole write path but the store's, which stays small
                let req = rpc::CreateRequest {
                    resource: rid::<ConfigMap>(),
                    namespace: "default".into(),
                    object: Some(rkube_api::to_any(&cm)),
                    dry_run: true,
                };
                match client.create(as_user("alice", req)).await {
                    Ok(_) => created += 1,
                    Err(e) if e.code() == Code::ResourceExhausted => {
                        refused += 1;
                        retry_after = e
                            .metadata()
                            .get("retry-after")
                            .map(|v| v.to_str().unwrap().to_string());
                        assert!(
                            e.message().contains("--max-mutating-requests-inflight=8"),
                            "{}",
                            e.message()
                        );
                    }
                    Err(e) => panic!("flood create: {e:?}"),
                }
            }
            (created, refused, retry_after)
        }));
    }
    // The flood is being refused: the limit is reached.
    let mut probe = c.client.clone();
    eventually("alice's flood to be refused", Duration::from_secs(20), || {
        let mut probe = probe.clone();
        async move {
            let req = rpc::CreateRequest {
                resource: rid::<ConfigMap>(),
                namespace: "default".into(),
                object: Some(rkube_api::to_any(&config_map("probe", 1))),
                dry_run: true,
            };
            probe
                .create(as_user("alice", req))
                .await
                .err()
                .filter(|e| e.code() == Code::ResourceExhausted)
        }
    })
    .await
    .unwrap();
    // A node renews its Lease 30 times during the flood, each on the first try.
    let lease = rkube_api::coordination::v1::Lease {
        metadata: Some(rkube_api::meta::v1::ObjectMeta {
            name: "n1".into(),
            namespace: "kube-node-lease".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut current = probe
        .create(as_user(
            "node",
            rpc::CreateRequest {
                resource: rid::<rkube_api::coordination::v1::Lease>(),
                namespace: "kube-node-lease".into(),
                object: Some(rkube_api::to_any(&lease)),
                dry_run: false,
            },
        ))
        .await
        .expect("the node's Lease is created during the flood")
        .into_inner()
        .object;
    for round in 0..30 {
        let mut l: rkube_api::coordination::v1::Lease =
            rkube_api::from_any(current.as_ref().unwrap()).unwrap();
        l.spec.get_or_insert_with(Default::default).renew_time =
            format!("2026-12-07T00:00:{round:02}.000000Z");
        current = probe
            .update(as_user(
                "node",
                rpc::UpdateRequest {
                    resource: rid::<rkube_api::coordination::v1::Lease>(),
                    object: Some(rkube_api::to_any(&l)),
                    dry_run: false,
                },
            ))
            .await
            .unwrap_or_else(|e| panic!("renewal {round} refused during the flood: {e:?}"))
            .into_inner()
            .object;
    }
    // Other users share the users' places: bob's own writes are refused now and then...
    let mut bob_refused = 0;
    for i in 0..200 {
        let req = rpc::CreateRequest {
            resource: rid::<ConfigMap>(),
            namespace: "default".into(),
            object: Some(rkube_api::to_any(&config_map(&format!("bob-raw-{i}"), 8))),
            dry_run: true,
        };
        if let Err(e) = probe.create(as_user("bob", req)).await {
            assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
            bob_refused += 1;
            if bob_refused == 3 {
                break;
            }
        }
    }
    assert_eq!(bob_refused, 3, "bob is refused while alice floods");
    // ...but rkube's client retries after the pauses it is told (a second, then longer),
    // so these get in.
    let bob = c.api.client_with_token("bob-token").unwrap();
    let cms: rkube_client::Api<ConfigMap> = rkube_client::Api::namespaced(bob, "default");
    for i in 0..3 {
        cms.create(&config_map(&format!("bob-{i}"), 8))
            .await
            .unwrap_or_else(|e| panic!("bob's write {i} through rkube's client: {e}"));
    }

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut created, mut refused) = (0, 0);
    for task in flood {
        let (c, r, retry_after) = task.await.unwrap();
        created += c;
        refused += r;
        if r > 0 {
            assert_eq!(retry_after.as_deref(), Some("1"));
        }
    }
    assert!(created > 0 && refused > 0, "created {created}, refused {refused}");
    c.stop().await;
}
