//! Tests of the `local` provider: the cloud-config file, the address pool and routes.

use super::routes::parse_cidr;
use super::*;
use rkube_api::core::v1::{LoadBalancerStatus, ServiceSpec, ServiceStatus};

const SAMPLE: &str = "\
machines:
  - name: a
    addresses: [{type: InternalIP, address: 10.0.0.2}, {type: Hostname, address: a.lan}]
    zone: shelf-1
    region: home
    instanceType: pi4
  - name: b
    addresses: [{type: InternalIP, address: 10.0.0.3}]
    shutdown: true
loadBalancerPool: 192.0.2.100-192.0.2.102
routes: {protocol: 241}
";

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("cloud.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn node(name: &str) -> Node {
    let mut n = Node::default();
    n.metadata_mut().name = name.into();
    n
}

fn service(uid: &str, ingress: &str) -> Service {
    let mut s = Service {
        spec: Some(ServiceSpec {
            r#type: "LoadBalancer".into(),
            ..Default::default()
        }),
        status: (!ingress.is_empty()).then(|| ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: vec![LoadBalancerIngress {
                    ip: ingress.into(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    s.metadata_mut().uid = uid.into();
    s.metadata_mut().name = format!("svc-{uid}");
    s.metadata_mut().namespace = "default".into();
    s
}

async fn ensure(cloud: &LocalCloud, svc: &Service) -> CloudResult<String> {
    Ok(cloud.ensure_load_balancer("k", svc, &[]).await?[0].ip.clone())
}

#[tokio::test]
async fn machines_are_instances_with_their_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = LocalCloud::load(&write(dir.path(), SAMPLE)).unwrap();
    let meta = cloud.instance_metadata(&node("a")).await.unwrap();
    assert_eq!(meta.provider_id, "local://a");
    assert_eq!(
        (
            meta.instance_type.as_str(),
            meta.zone.as_str(),
            meta.region.as_str()
        ),
        ("pi4", "shelf-1", "home")
    );
    assert_eq!(meta.addresses.len(), 2);
    assert_eq!(meta.addresses[0].r#type, "InternalIP");
    assert!(cloud.instance_exists(&node("a")).await.unwrap());
    assert!(!cloud.instance_shutdown(&node("a")).await.unwrap());
    assert!(cloud.instance_shutdown(&node("b")).await.unwrap());
    assert!(!cloud.instance_exists(&node("c")).await.unwrap());
    assert!(matches!(
        cloud.instance_metadata(&node("c")).await,
        Err(CloudError::InstanceNotFound(_))
    ));
    // The providerID wins over the node's name.
    let mut renamed = node("other-name");
    renamed.spec.get_or_insert_with(Default::default).provider_id = "local://a".into();
    assert!(cloud.instance_exists(&renamed).await.unwrap());
    assert_eq!(cloud.current().routes.protocol, 241);
    assert!(cloud.routes().is_some());
}

#[test]
fn a_garbled_cloud_config_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("machines:\n  - nme: a\n", "machines[0]: unknown field `nme`"),
        (
            "machines:\n  - name: a\n    addresses: [{type: InternalAddress, address: 10.0.0.2}]\n",
            "machines[0].addresses[0].type: \"InternalAddress\" is not one of",
        ),
        (
            "machines:\n  - name: a\n    addresses: [{type: InternalIP, address: ten}]\n",
            "machines[0].addresses[0].address: \"ten\" is not an IP address",
        ),
        (
            "machines: [{name: a}, {name: a}]\n",
            "machines[1].name: \"a\" is listed twice",
        ),
        (
            "loadBalancerPool: 192.0.2.9-192.0.2.1\n",
            "loadBalancerPool: \"192.0.2.9-192.0.2.1\": the range ends before it starts",
        ),
        (
            "loadBalancerPool: lots\n",
            "loadBalancerPool: \"lots\" is neither a range",
        ),
        ("routes: {protocol: 300}\n", "routes.protocol"),
    ];
    for (text, want) in cases {
        let path = write(dir.path(), text);
        let err = format!("{:#}", LocalCloud::load(&path).err().expect(text));
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(want), "{text}: {err}");
    }
    let err = format!(
        "{:#}",
        LocalCloud::load(&dir.path().join("missing.yaml")).err().unwrap()
    );
    assert!(
        err.contains("cannot read cloud-config") && err.contains("missing.yaml"),
        "{err}"
    );
}

#[test]
fn the_shipped_example_is_valid() {
    let text = include_str!("../../../../../deploy/examples/cloud-config.yaml");
    let c = CloudConfig::parse(text, Path::new("deploy/examples/cloud-config.yaml")).unwrap();
    assert_eq!(c.machines.len(), 2);
    assert_eq!(c.pool.unwrap().size(), 21);
    assert_eq!(c.routes, RouteSettings::default());
}

#[test]
fn pools_are_ranges_or_cidrs() {
    let p = Pool::parse("192.0.2.100-192.0.2.120").unwrap();
    assert_eq!(
        (p.first, p.last, p.size()),
        ("192.0.2.100".parse().unwrap(), "192.0.2.120".parse().unwrap(), 21)
    );
    let p = Pool::parse("192.0.2.96/28").unwrap();
    assert_eq!(
        (p.first.to_string(), p.last.to_string()),
        ("192.0.2.97".into(), "192.0.2.110".into())
    );
    let p = Pool::parse("192.0.2.7/32").unwrap();
    assert_eq!((p.first.to_string(), p.size()), ("192.0.2.7".into(), 1));
    assert!(Pool::parse("192.0.2.0/33").is_err());
}

#[test]
fn pod_cidrs_are_checked_before_they_reach_the_kernel() {
    assert_eq!(
        parse_cidr("10.244.1.0/24").unwrap(),
        ("10.244.1.0".parse().unwrap(), 24)
    );
    assert_eq!(
        parse_cidr("fd00:10:244:1::/64").unwrap(),
        ("fd00:10:244:1::".parse().unwrap(), 64)
    );
    for (bad, why) in [
        ("10.244.1.0", "is not a CIDR"),
        ("10.244.1.7/24", "has host bits set"),
        ("10.244.1.0/33", "prefix length must be 0-32"),
        ("ten/8", "\"ten\" is not an IP address"),
    ] {
        let err = parse_cidr(bad).unwrap_err();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[tokio::test]
async fn pool_addresses_are_stable_released_and_recovered_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), SAMPLE);
    let cloud = LocalCloud::load(&path).unwrap();
    let (one, two, three) = (service("1", ""), service("2", ""), service("3", ""));
    assert_eq!(ensure(&cloud, &one).await.unwrap(), "192.0.2.100");
    assert_eq!(ensure(&cloud, &two).await.unwrap(), "192.0.2.101");
    assert_eq!(ensure(&cloud, &one).await.unwrap(), "192.0.2.100", "stable");
    assert_eq!(ensure(&cloud, &three).await.unwrap(), "192.0.2.102");
    let err = ensure(&cloud, &service("4", "")).await.unwrap_err().to_string();
    assert!(err.contains("exhausted") && err.contains("cloud.yaml"), "{err}");
    cloud.ensure_load_balancer_deleted("k", &one).await.unwrap();
    assert!(cloud.get_load_balancer("k", &one).await.unwrap().is_none());
    assert_eq!(
        ensure(&cloud, &service("4", "")).await.unwrap(),
        "192.0.2.100",
        "reused"
    );

    // A new process: Services showing an address get it back, whatever
    // order they come in; new ones get what is free.
    let cloud = LocalCloud::load(&path).unwrap();
    assert_eq!(
        ensure(&cloud, &service("3", "192.0.2.102")).await.unwrap(),
        "192.0.2.102"
    );
    assert_eq!(ensure(&cloud, &service("5", "")).await.unwrap(), "192.0.2.100");
    // An address outside the pool (the pool changed) is not kept.
    assert_eq!(
        ensure(&cloud, &service("6", "198.51.100.1")).await.unwrap(),
        "192.0.2.101"
    );

    // spec.loadBalancerIP is honoured inside the pool, refused outside.
    let cloud = LocalCloud::load(&path).unwrap();
    let mut pinned = service("7", "");
    pinned.spec.as_mut().unwrap().load_balancer_ip = "192.0.2.102".into();
    assert_eq!(ensure(&cloud, &pinned).await.unwrap(), "192.0.2.102");
    pinned.spec.as_mut().unwrap().load_balancer_ip = "192.0.2.1".into();
    let err = ensure(&cloud, &pinned).await.unwrap_err().to_string();
    assert!(err.contains("spec.loadBalancerIP 192.0.2.1 is outside"), "{err}");
}

#[tokio::test]
async fn the_file_is_read_again_when_it_changes_and_a_bad_edit_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "machines: [{name: a}]\n");
    let cloud = LocalCloud::load(&path).unwrap();
    assert!(!cloud.instance_exists(&node("b")).await.unwrap());
    assert!(cloud.load_balancer_name(&service("x", "")).starts_with('a'));
    let err = ensure(&cloud, &service("x", "")).await.unwrap_err().to_string();
    assert!(err.contains("has no loadBalancerPool"), "{err}");

    write(
        dir.path(),
        "machines: [{name: a}, {name: b}]\nloadBalancerPool: 192.0.2.10/32\n",
    );
    assert!(cloud.instance_exists(&node("b")).await.unwrap());
    assert_eq!(ensure(&cloud, &service("x", "")).await.unwrap(), "192.0.2.10");

    // Removing a machine retires it.
    write(
        dir.path(),
        "machines: [{name: b}]\nloadBalancerPool: 192.0.2.10/32\n",
    );
    assert!(!cloud.instance_exists(&node("a")).await.unwrap());

    // A typo keeps the last good version instead of retiring everything.
    write(dir.path(), "machines: [{nam: b}]\n");
    assert!(cloud.instance_exists(&node("b")).await.unwrap());
}
