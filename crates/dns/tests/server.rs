//! The DNS server on loopback, fed by informers over in-memory events, with a
//! fake upstream resolver: what a client sees over UDP and TCP.

use futures::channel::mpsc;
use rkube_api::core::v1::{Endpoints, Pod, Service};
use rkube_client::runtime::Event;
use rkube_client::Informer;
use rkube_dns::proto::op::{Message, OpCode, ResponseCode};
use rkube_dns::proto::rr::rdata::A;
use rkube_dns::proto::rr::{RData, Record, RecordType};
use rkube_dns::{client, Config};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

fn informer<K: rkube_api::Resource>() -> (Informer<K>, mpsc::UnboundedSender<Event<K>>) {
    let (tx, rx) = mpsc::unbounded();
    let inf = Informer::from_events(Box::pin(rx));
    inf.start().unwrap();
    (inf, tx)
}

fn yaml<K: serde::de::DeserializeOwned>(s: &str) -> K {
    serde_yaml::from_str(s).unwrap()
}

/// An upstream that answers every A query with 192.0.2.1.
async fn fake_upstream() -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.metadata.recursion_available = true;
            r.add_queries(q.queries.clone());
            let name = q.queries[0].name().clone();
            r.add_answer(Record::from_rdata(
                name,
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
            ));
            let _ = sock.send_to(&r.to_vec().unwrap(), from).await;
        }
    });
    addr
}

const PATIENCE: Duration = Duration::from_secs(5);

async fn udp(server: SocketAddr, name: &str, t: RecordType) -> Message {
    client::udp(server, name, t, PATIENCE).await.unwrap()
}

async fn tcp(server: SocketAddr, name: &str, t: RecordType) -> Message {
    client::tcp(server, name, t, PATIENCE).await.unwrap()
}

fn addresses(m: &Message) -> Vec<Ipv4Addr> {
    client::addresses(m)
        .into_iter()
        .filter_map(|ip| match ip {
            std::net::IpAddr::V4(v4) => Some(v4),
            _ => None,
        })
        .collect()
}

type Feed<K> = mpsc::UnboundedSender<Event<K>>;

/// The server on loopback with the fake upstream, fed by the returned senders.
async fn start() -> (rkube_dns::DnsServer, Feed<Service>, Feed<Endpoints>, Feed<Pod>) {
    let (services, svc_tx) = informer::<Service>();
    let (endpoints, ep_tx) = informer::<Endpoints>();
    let (pods, pod_tx) = informer::<Pod>();
    let mut config = Config::new();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.interface = None;
    config.upstreams = vec![fake_upstream().await];
    let server = rkube_dns::start(config, services, endpoints, pods).await.unwrap();
    (server, svc_tx, ep_tx, pod_tx)
}

#[tokio::test]
async fn answers_cluster_names_forwards_the_rest_and_truncates_over_udp() {
    let (server, svc_tx, ep_tx, pod_tx) = start().await;
    let addr = server.addr;

    // before the caches sync, cluster names are not known: SERVFAIL, not NXDOMAIN
    let m = udp(addr, "web.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);

    let many: Vec<String> = (1..=60).map(|i| format!("{{ip: 10.244.0.{i}}}")).collect();
    svc_tx
        .unbounded_send(Event::Resync(vec![
            yaml("metadata: {name: web, namespace: shop}\nspec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}"),
            yaml("metadata: {name: big, namespace: shop}\nspec: {clusterIP: None}"),
        ]))
        .unwrap();
    ep_tx
        .unbounded_send(Event::Resync(vec![yaml(&format!(
            "metadata: {{name: big, namespace: shop}}\nsubsets: [{{addresses: [{}]}}]",
            many.join(", ")
        ))]))
        .unwrap();
    pod_tx.unbounded_send(Event::Resync(vec![])).unwrap();

    rkube_testing::eventually("the zone is built", Duration::from_secs(5), || async {
        udp(addr, "web.shop.svc.cluster.local.", RecordType::A)
            .await
            .metadata
            .response_code
            == ResponseCode::NoError
    })
    .await
    .unwrap();
    let m = udp(addr, "Web.Shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&m), [Ipv4Addr::new(10, 96, 0, 10)]);
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers[0].ttl, 5);

    let m = udp(addr, "nope.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        m.authorities[0].record_type(),
        RecordType::SOA,
        "negative answers carry the SOA"
    );
    let m = udp(addr, "web.shop.svc.cluster.local.", RecordType::AAAA).await;
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 0)
    );

    let m = tcp(addr, "_http._tcp.web.shop.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.additionals.len(), 1);

    // other names: the upstream's answer, over both transports
    let m = udp(addr, "example.com.", RecordType::A).await;
    assert_eq!(addresses(&m), [Ipv4Addr::new(192, 0, 2, 1)]);
    assert!(!m.metadata.authoritative);
    let m = tcp(addr, "example.com.", RecordType::A).await;
    assert_eq!(addresses(&m), [Ipv4Addr::new(192, 0, 2, 1)]);

    // 60 addresses do not fit 512 bytes: TC over UDP, everything over TCP
    let m = udp(addr, "big.shop.svc.cluster.local.", RecordType::A).await;
    assert!(m.metadata.truncation, "the TC bit is set");
    assert!(m.answers.len() < 60);
    let m = tcp(addr, "big.shop.svc.cluster.local.", RecordType::A).await;
    assert!(!m.metadata.truncation);
    assert_eq!(addresses(&m).len(), 60);

    // a new Service answers as soon as its watch event arrives
    svc_tx
        .unbounded_send(Event::Applied(yaml(
            "metadata: {name: late, namespace: shop}\nspec: {clusterIP: 10.96.0.11}",
        )))
        .unwrap();
    rkube_testing::eventually("the new Service resolves", Duration::from_secs(1), || async {
        addresses(&udp(addr, "late.shop.svc.cluster.local.", RecordType::A).await)
            == [Ipv4Addr::new(10, 96, 0, 11)]
    })
    .await
    .unwrap();
    drop(server);
}

/// Sends `query` with `id` from a fresh socket and returns the raw answer.
async fn raw_exchange(server: SocketAddr, id: u16, query: &[u8]) -> Vec<u8> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(server).await.unwrap();
    let mut q = query.to_vec();
    q[..2].copy_from_slice(&id.to_be_bytes());
    sock.send(&q).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, sock.recv(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn repeated_queries_get_their_own_id_and_follow_the_zone() {
    let (server, svc_tx, ep_tx, pod_tx) = start().await;
    let addr = server.addr;
    svc_tx
        .unbounded_send(Event::Resync(vec![yaml(
            "metadata: {name: db, namespace: shop}\nspec: {clusterIP: None}",
        )]))
        .unwrap();
    ep_tx
        .unbounded_send(Event::Resync(vec![yaml(
            "metadata: {name: db, namespace: shop}\nsubsets: [{addresses: [{ip: 10.244.0.7}]}]",
        )]))
        .unwrap();
    pod_tx.unbounded_send(Event::Resync(vec![])).unwrap();
    let db = "db.shop.svc.cluster.local.";
    rkube_testing::eventually("the zone is built", Duration::from_secs(5), || async {
        addresses(&udp(addr, db, RecordType::A).await) == [Ipv4Addr::new(10, 244, 0, 7)]
    })
    .await
    .unwrap();

    // the same question under many ids: each answer carries its own id
    // and the same records, however often it was asked before
    let query = client::request(0, db, RecordType::A).unwrap();
    for id in [1u16, 0xbeef, 1, 77, 0xffff] {
        let raw = raw_exchange(addr, id, &query).await;
        let m = Message::from_vec(&raw).unwrap();
        assert_eq!(m.metadata.id, id);
        assert_eq!(addresses(&m), [Ipv4Addr::new(10, 244, 0, 7)]);
        assert_eq!(m.queries[0].name().to_ascii(), db);
    }

    // the endpoints move: the next answer to the very same bytes follows
    ep_tx
        .unbounded_send(Event::Applied(yaml(
            "metadata: {name: db, namespace: shop}\nsubsets: [{addresses: [{ip: 10.244.0.9}, {ip: 10.244.0.8}]}]",
        )))
        .unwrap();
    rkube_testing::eventually(
        "the answer follows the endpoints",
        Duration::from_secs(1),
        || async {
            let m = Message::from_vec(&raw_exchange(addr, 5, &query).await).unwrap();
            let mut ips = addresses(&m);
            ips.sort();
            ips == [Ipv4Addr::new(10, 244, 0, 8), Ipv4Addr::new(10, 244, 0, 9)]
        },
    )
    .await
    .unwrap();

    // the Service goes: its name is gone too
    svc_tx
        .unbounded_send(Event::Deleted(yaml(
            "metadata: {name: db, namespace: shop}\nspec: {clusterIP: None}",
        )))
        .unwrap();
    rkube_testing::eventually("the name is gone", Duration::from_secs(1), || async {
        let m = Message::from_vec(&raw_exchange(addr, 6, &query).await).unwrap();
        m.metadata.response_code == ResponseCode::NXDomain
    })
    .await
    .unwrap();
    drop(server);
}
