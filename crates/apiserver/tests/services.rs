//! Service address allocation as a client sees it: ClusterIPs and NodePorts
//! handed out once, honoured or refused when requested, released on
//! delete, and still known after a restart.

mod common;

use common::*;
use rkube_api::core::v1::Service;
use std::collections::HashSet;
use tonic::Code;

fn service(name: &str, extra: &str) -> Service {
    let ports = if extra.contains("ports:") {
        ""
    } else {
        "  ports: [{port: 80}]\n"
    };
    let text =
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{ports}{extra}");
    serde_yaml::from_str(&text).unwrap()
}

fn ip(s: &Service) -> String {
    s.spec.as_ref().unwrap().cluster_ip.clone()
}

fn node_port(s: &Service) -> i32 {
    s.spec.as_ref().unwrap().ports[0].node_port
}

#[tokio::test]
async fn concurrent_creates_get_distinct_addresses_and_ports() {
    let h = Harness::start().await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let mut c = h.client.clone();
        tasks.push(tokio::spawn(async move {
            create(&mut c, &service(&format!("s{i}"), "  type: NodePort\n"))
                .await
                .unwrap()
        }));
    }
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for t in tasks {
        let s = t.await.unwrap();
        let addr: std::net::Ipv4Addr = ip(&s).parse().unwrap();
        assert_eq!(addr.octets()[..2], [10, 96], "{addr}");
        assert!(ips.insert(ip(&s)), "clusterIP {} handed out twice", ip(&s));
        assert!((30000..=32767).contains(&node_port(&s)));
        assert!(
            ports.insert(node_port(&s)),
            "nodePort {} handed out twice",
            node_port(&s)
        );
        assert_eq!(s.spec.as_ref().unwrap().cluster_ips, vec![ip(&s)]);
    }
}

#[tokio::test]
async fn requested_values_are_honoured_or_refused() {
    let mut h = Harness::start().await;
    let a = create(
        &mut h.client,
        &service(
            "a",
            "  clusterIP: 10.96.5.5\n  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n",
        ),
    )
    .await
    .unwrap();
    assert_eq!(ip(&a), "10.96.5.5");
    assert_eq!(node_port(&a), 30080);
    let err = create(&mut h.client, &service("b", "  clusterIP: 10.96.5.5\n"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("already allocated"), "{}", err.message());
    let err = create(&mut h.client, &service("c", "  clusterIP: 10.200.0.1\n"))
        .await
        .unwrap_err();
    assert!(err.message().contains("valid range"), "{}", err.message());
    let err = create(
        &mut h.client,
        &service("d", "  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n"),
    )
    .await
    .unwrap_err();
    assert!(err.message().contains("already allocated"), "{}", err.message());
    let err = create(
        &mut h.client,
        &service("e", "  type: NodePort\n  ports: [{port: 80, nodePort: 80}]\n"),
    )
    .await
    .unwrap_err();
    assert!(err.message().contains("valid range"), "{}", err.message());
    // a refused create took nothing: the address it would have got is still free
    let headless = create(&mut h.client, &service("h", "  clusterIP: None\n"))
        .await
        .unwrap();
    assert_eq!(ip(&headless), "None");
    // delete releases; the same values can be requested again
    delete::<Service>(&mut h.client, "default", "a", "")
        .await
        .unwrap();
    let again = create(
        &mut h.client,
        &service(
            "a2",
            "  clusterIP: 10.96.5.5\n  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n",
        ),
    )
    .await
    .unwrap();
    assert_eq!((ip(&again).as_str(), node_port(&again)), ("10.96.5.5", 30080));
}

#[tokio::test]
async fn type_changes_allocate_and_release_node_ports() {
    let mut h = Harness::start().await;
    let s = create(&mut h.client, &service("t", "")).await.unwrap();
    assert_eq!(node_port(&s), 0);
    let mut np = s.clone();
    np.spec.as_mut().unwrap().r#type = "NodePort".into();
    let np = update(&mut h.client, &np).await.unwrap();
    let port = node_port(&np);
    assert!((30000..=32767).contains(&port));
    assert_eq!(ip(&np), ip(&s));
    let mut back = np.clone();
    back.spec.as_mut().unwrap().r#type = "ClusterIP".into();
    back.spec.as_mut().unwrap().ports[0].node_port = 0;
    let back = update(&mut h.client, &back).await.unwrap();
    assert_eq!(node_port(&back), 0);
    // the released port can be requested by another Service
    let other = create(
        &mut h.client,
        &service(
            "o",
            &format!("  type: NodePort\n  ports: [{{port: 80, nodePort: {port}}}]\n"),
        ),
    )
    .await
    .unwrap();
    assert_eq!(node_port(&other), port);
}

#[tokio::test]
async fn allocations_survive_a_restart() {
    let mut h = Harness::start().await;
    let a = create(
        &mut h.client,
        &service("a", "  type: NodePort\n  ports: [{port: 80, nodePort: 30100}]\n"),
    )
    .await
    .unwrap();
    h.restart().await;
    let err = create(
        &mut h.client,
        &service("b", &format!("  clusterIP: {}\n", ip(&a))),
    )
    .await
    .unwrap_err();
    assert!(err.message().contains("already allocated"), "{}", err.message());
    let err = create(
        &mut h.client,
        &service("c", "  type: NodePort\n  ports: [{port: 80, nodePort: 30100}]\n"),
    )
    .await
    .unwrap_err();
    assert!(err.message().contains("already allocated"), "{}", err.message());
    for i in 0..20 {
        let s = create(&mut h.client, &service(&format!("n{i}"), ""))
            .await
            .unwrap();
        assert_ne!(ip(&s), ip(&a));
    }
}
