//! The `local` provider's routes against the real kernel, inside a network
//! namespace the test creates: the provider's calls (netlink, made by the
//! provider itself) run on a thread that entered that namespace, or name it
//! in `routes.netns`, and the host's routes are never touched. Needs root;
//! iproute2 builds the namespace and reads the kernel's routes back
//! independently of the provider. Skipped (with the reason printed)
//! otherwise.

use rkube_api::core::v1::NodeAddress;
use rkube_cloud_controller_manager::cloud::{CloudProvider, Route};
use rkube_cloud_controller_manager::providers::local::LocalCloud;
use std::path::Path;
use std::process::Command;

struct Netns(String);

impl Netns {
    fn create(name: &str) -> anyhow::Result<Netns> {
        // A leftover of an earlier run, if any (usually none: quiet).
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", name])?;
        let ns = Netns(name.to_string());
        // A link to a neighbour subnet: routes need a reachable next hop.
        ip(&[
            "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
        ])?;
        ip(&["-n", name, "addr", "add", "10.77.0.1/24", "dev", "v0"])?;
        ip(&["-n", name, "link", "set", "v0", "up"])?;
        ip(&["-n", name, "link", "set", "v1", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root to create a network namespace".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("needs iproute2 (ip)".into());
    }
    None
}

/// Runs `f` on a thread that entered network namespace `name`, with its
/// own single-threaded runtime (processes it spawns inherit the namespace).
fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> T {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f())
    })
    .join()
    .expect("netns thread")
}

fn route(node: &str, cidr: &str, via: &str) -> Route {
    Route {
        target_node: node.into(),
        target_node_addresses: vec![NodeAddress {
            r#type: "InternalIP".into(),
            address: via.into(),
        }],
        destination_cidr: cidr.into(),
    }
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("cloud.yaml");
    std::fs::write(
        &path,
        "machines:\n\
         - {name: self, addresses: [{type: InternalIP, address: 10.77.0.1}]}\n\
         - {name: b, addresses: [{type: InternalIP, address: 10.77.0.2}]}\n\
         - {name: c, addresses: [{type: InternalIP, address: 10.77.0.3}]}\n",
    )
    .unwrap();
    path
}

#[test]
fn routes_are_kernel_routes_tagged_with_their_protocol() -> anyhow::Result<()> {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return Ok(());
    }
    let host_before = ip(&["route", "show", "proto", "240"])?;
    let name = format!("rkccm-routes-{}", std::process::id());
    let _ns = Netns::create(&name)?;
    // Someone else's route, which the provider must neither list nor touch.
    ip(&[
        "-n",
        &name,
        "route",
        "add",
        "10.244.50.0/24",
        "via",
        "10.77.0.5",
        "proto",
        "static",
    ])?;
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path());

    let listed = in_netns(&name, move || {
        Box::pin(async move {
            let cloud = LocalCloud::load(&config).expect("cloud-config");
            let routes = cloud.routes().expect("routes enabled");
            routes
                .create_route("k", &route("b", "10.244.1.0/24", "10.77.0.2"))
                .await
                .unwrap();
            routes
                .create_route("k", &route("c", "10.244.2.0/24", "10.77.0.3"))
                .await
                .unwrap();
            // Idempotent.
            routes
                .create_route("k", &route("c", "10.244.2.0/24", "10.77.0.3"))
                .await
                .unwrap();
            // The node the manager runs on needs no route to itself.
            routes
                .create_route("k", &route("self", "10.244.0.0/24", "10.77.0.1"))
                .await
                .unwrap();
            // A next hop no interface reaches: the error says which route
            // and why.
            let err = routes
                .create_route("k", &route("far", "10.244.9.0/24", "172.30.0.12"))
                .await
                .unwrap_err()
                .to_string();
            for want in [
                "node far",
                "10.244.9.0/24",
                "no interface has a route to 172.30.0.12",
            ] {
                assert!(err.contains(want), "{want:?} missing from: {err}");
            }
            let mut listed = routes.list_routes("k").await.unwrap();
            listed.sort_by(|a, b| a.destination_cidr.cmp(&b.destination_cidr));
            listed
        })
    });
    let pairs: Vec<(String, String, String)> = listed
        .iter()
        .map(|r| {
            (
                r.destination_cidr.clone(),
                r.target_node.clone(),
                r.target_node_addresses[0].address.clone(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            (
                "10.244.1.0/24".to_string(),
                "b".to_string(),
                "10.77.0.2".to_string()
            ),
            (
                "10.244.2.0/24".to_string(),
                "c".to_string(),
                "10.77.0.3".to_string()
            ),
        ]
    );
    let table = ip(&["-n", &name, "route"])?;
    assert!(
        table.contains("10.244.1.0/24 via 10.77.0.2 dev v0 proto 240"),
        "{table}"
    );
    assert!(
        table.contains("10.244.2.0/24 via 10.77.0.3 dev v0 proto 240"),
        "{table}"
    );
    assert!(!table.contains("10.244.0.0/24"), "{table}");
    assert!(!table.contains("10.244.9.0/24"), "{table}");

    let config = dir.path().join("cloud.yaml");
    in_netns(&name, move || {
        Box::pin(async move {
            let cloud = LocalCloud::load(&config).expect("cloud-config");
            let routes = cloud.routes().expect("routes enabled");
            routes
                .delete_route("k", &route("b", "10.244.1.0/24", "10.77.0.2"))
                .await
                .unwrap();
            // Already gone: fine.
            routes
                .delete_route("k", &route("b", "10.244.1.0/24", "10.77.0.2"))
                .await
                .unwrap();
        })
    });
    let table = ip(&["-n", &name, "route"])?;
    assert!(!table.contains("10.244.1.0/24"), "{table}");
    assert!(table.contains("10.244.2.0/24 via 10.77.0.3"), "{table}");
    assert!(
        table.contains("10.244.50.0/24 via 10.77.0.5 dev v0 proto static"),
        "{table}"
    );
    assert_eq!(
        ip(&["route", "show", "proto", "240"])?,
        host_before,
        "host routes untouched"
    );
    Ok(())
}

#[test]
fn routes_netns_programs_a_named_namespace_from_outside() -> anyhow::Result<()> {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return Ok(());
    }
    let host_before = ip(&["route", "show", "proto", "240"])?;
    let name = format!("rkccm-routes-ns-{}", std::process::id());
    let _ns = Netns::create(&name)?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cloud.yaml");
    std::fs::write(
        &config,
        format!(
            "machines:\n\
             - {{name: b, addresses: [{{type: InternalIP, address: 10.77.0.2}}]}}\n\
             routes: {{netns: {name}, table: 1000}}\n"
        ),
    )?;
    // The provider runs here, in the test's (the host's) namespace, and
    // must reach into the named one.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cloud = LocalCloud::load(&config)?;
    let routes = cloud.routes().expect("routes enabled");
    let b = route("b", "10.244.3.0/24", "10.77.0.2");
    rt.block_on(routes.create_route("k", &b))?;
    let listed = rt.block_on(routes.list_routes("k"))?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (
            listed[0].destination_cidr.as_str(),
            listed[0].target_node.as_str()
        ),
        ("10.244.3.0/24", "b")
    );
    let table = ip(&["-n", &name, "route", "show", "table", "1000"])?;
    assert!(
        table.contains("10.244.3.0/24 via 10.77.0.2 dev v0 proto 240"),
        "{table}"
    );
    rt.block_on(routes.delete_route("k", &b))?;
    let table = ip(&["-n", &name, "route", "show", "table", "1000"])?;
    assert!(!table.contains("10.244.3.0/24"), "{table}");
    assert!(rt.block_on(routes.list_routes("k"))?.is_empty());

    // A namespace that does not exist is named in the error.
    std::fs::write(&config, "machines: []\nroutes: {netns: rkccm-no-such-ns}\n")?;
    let cloud = LocalCloud::load(&config)?;
    let err = rt
        .block_on(cloud.routes().expect("routes").list_routes("k"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("routes.netns rkccm-no-such-ns"), "{err}");
    assert_eq!(
        ip(&["route", "show", "proto", "240"])?,
        host_before,
        "host routes untouched"
    );
    Ok(())
}
