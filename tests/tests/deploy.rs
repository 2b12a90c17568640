//! Running rkube on servers: `deploy/install.sh` into a temporary root for
//! each role (what it writes, with which modes, and that a second run keeps
//! the operator's settings), `systemd-analyze verify` on every unit, the
//! sample settings read by each daemon's own configuration code, and the
//! health endpoints the units' users probe.

use rkube_testing::eventually;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CONTROL_PLANE: &[(&str, &str, &str)] = &[
    ("rkube-apiserver", "rkube-apiserver.service", "apiserver"),
    ("rkube-scheduler", "rkube-scheduler.service", "scheduler"),
    (
        "rkube-controller-manager",
        "rkube-controller-manager.service",
        "controller-manager",
    ),
    (
        "rkube-cloud-controller-manager",
        "rkube-cloud-controller-manager.service",
        "cloud-controller-manager",
    ),
];
const NODE: &[(&str, &str, &str)] = &[
    ("rkubelet", "rkubelet.service", "kubelet"),
    ("rkube-proxy", "rkube-proxy.service", "proxy"),
    ("rkube-ingress", "rkube-ingress.service", "ingress"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn daemons(role: &str) -> Vec<(&'static str, &'static str, &'static str)> {
    match role {
        "control-plane" => CONTROL_PLANE.to_vec(),
        "node" => NODE.to_vec(),
        _ => CONTROL_PLANE.iter().chain(NODE).copied().collect(),
    }
}

/// Executables standing in for the release binaries, each printing its
/// name and `version`.
fn fake_binaries(dir: &Path, version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    for (bin, _, _) in CONTROL_PLANE.iter().chain(NODE).chain(&[("rkubectl", "", "")]) {
        let path = dir.join(bin);
        std::fs::write(&path, format!("#!/bin/sh\necho {bin} {version}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Runs install.sh with DESTDIR=`root` and a restrictive umask (the modes it
/// sets must not depend on the caller's); (success, stdout + stderr).
fn install(root: &Path, role: &str, bin_dir: &Path) -> (bool, String) {
    install_with(root, &["--role", role], bin_dir)
}

/// install.sh with `args` (`--role ROLE` and more) and `--bin-dir bin_dir`.
fn install_with(root: &Path, args: &[&str], bin_dir: &Path) -> (bool, String) {
    let script = repo().join("deploy/install.sh");
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 077; exec \"$0\" \"$@\"")
        .arg(&script)
        .args(args)
        .arg("--bin-dir")
        .arg(bin_dir)
        .env("DESTDIR", root)
        .output()
        .expect("running deploy/install.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every path below `root` with its mode (`0o755`) and, for files, content.
fn tree(root: &Path) -> BTreeMap<String, (u32, Option<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                stack.push(path);
                out.insert(rel, (mode, None));
            } else {
                out.insert(rel, (mode, Some(std::fs::read(&path).unwrap())));
            }
        }
    }
    out
}

/// What install.sh must write for `role`, binaries from `bin_dir`.
fn expected(role: &str, bin_dir: &Path) -> BTreeMap<String, (u32, Option<Vec<u8>>)> {
    let mut want = BTreeMap::new();
    for dir in [
        "etc",
        "etc/rkube",
        "etc/systemd",
        "etc/systemd/system",
        "usr",
        "usr/local",
        "usr/local/bin",
        "var",
        "var/lib",
        "var/lib/rkube",
    ] {
        want.insert(dir.to_string(), (0o755, None));
    }
    let read = |p: PathBuf| Some(std::fs::read(p).unwrap());
    let mut bins = vec!["rkubectl"];
    for (bin, unit, conf) in daemons(role) {
        bins.push(bin);
        want.insert(
            format!("etc/systemd/system/{unit}"),
            (0o644, read(repo().join("deploy/systemd").join(unit))),
        );
        want.insert(
            format!("etc/rkube/{conf}.yaml"),
            (
                0o644,
                read(repo().join("deploy/config").join(format!("{conf}.yaml"))),
            ),
        );
    }
    for bin in bins {
        want.insert(format!("usr/local/bin/{bin}"), (0o755, read(bin_dir.join(bin))));
    }
    want
}

fn assert_tree(root: &Path, want: &BTreeMap<String, (u32, Option<Vec<u8>>)>) {
    let got = tree(root);
    let names = |t: &BTreeMap<String, _>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&got),
        names(want),
        "install.sh wrote other paths than expected"
    );
    for (path, (mode, content)) in want {
        let (got_mode, got_content) = &got[path];
        assert_eq!(*got_mode, *mode, "mode of {path}: {got_mode:o}, want {mode:o}");
        assert!(
            got_content == content,
            "content of {path} differs from its source"
        );
    }
}

#[test]
fn install_sh_installs_each_role_into_destdir_and_a_second_run_keeps_edited_settings() {
    for role in ["control-plane", "node", "all"] {
        let tmp = tempfile::tempdir().unwrap();
        let (bins, root) = (tmp.path().join("bin"), tmp.path().join("root"));
        std::fs::create_dir(&root).unwrap();
        fake_binaries(&bins, "v1");

        let (ok, out) = install(&root, role, &bins);
        assert!(ok, "install.sh --role {role} failed:\n{out}");
        let mut want = expected(role, &bins);
        assert_tree(&root, &want);
        for step in ["systemctl daemon-reload", "systemctl enable --now"] {
            assert!(out.contains(step), "the next steps do not say `{step}`:\n{out}");
        }

        // the operator edits a setting; new binaries arrive; install again
        let (_, _, conf) = daemons(role)[0];
        let edited = root.join(format!("etc/rkube/{conf}.yaml"));
        let mine = b"# mine\napiserver: http://10.0.0.1:6443\n".to_vec();
        std::fs::write(&edited, &mine).unwrap();
        want.get_mut(&format!("etc/rkube/{conf}.yaml")).unwrap().1 = Some(mine);
        fake_binaries(&bins, "v2");
        for (path, (_, content)) in want.iter_mut() {
            if let Some(bin) = path.strip_prefix("usr/local/bin/") {
                *content = Some(std::fs::read(bins.join(bin)).unwrap());
            }
        }
        let (ok, out) = install(&root, role, &bins);
        assert!(ok, "second install.sh --role {role} failed:\n{out}");
        assert!(out.contains(&format!("kept      {}", edited.display())), "{out}");
        assert_tree(&root, &want);
    }
}

/// `--store etcd` installs the apiserver's settings for etcd and an etcd member (unit and
/// settings; the binary is the distribution's), and nothing of it on a node.
#[test]
fn install_sh_with_store_etcd_adds_an_etcd_member_and_the_apiservers_etcd_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let (bins, root) = (tmp.path().join("bin"), tmp.path().join("root"));
    std::fs::create_dir(&root).unwrap();
    fake_binaries(&bins, "v1");
    let (ok, out) = install_with(&root, &["--role", "control-plane", "--store", "etcd"], &bins);
    assert!(ok, "install.sh --store etcd failed:\n{out}");
    let mut want = expected("control-plane", &bins);
    let read = |p: &str| Some(std::fs::read(repo().join(p)).unwrap());
    want.insert(
        "etc/systemd/system/rkube-etcd.service".into(),
        (0o644, read("deploy/systemd/rkube-etcd.service")),
    );
    want.insert(
        "etc/rkube/etcd.yaml".into(),
        (0o644, read("deploy/config/etcd.yaml")),
    );
    want.insert(
        "etc/rkube/apiserver.yaml".into(),
        (0o644, read("deploy/config/apiserver-etcd.yaml")),
    );
    assert_tree(&root, &want);
    assert!(
        out.contains("systemctl enable --now rkube-etcd.service rkube-apiserver.service")
            && out.contains("deploy/etcd-pki.sh"),
        "{out}"
    );

    let node_root = tmp.path().join("node");
    std::fs::create_dir(&node_root).unwrap();
    let (ok, out) = install_with(&node_root, &["--role", "node", "--store", "etcd"], &bins);
    assert!(
        !ok && out.contains("--store etcd is for the control plane"),
        "{out}"
    );
    let (ok, out) = install_with(&node_root, &["--role", "all", "--store", "zookeeper"], &bins);
    assert!(
        !ok && out.contains("--store 'zookeeper' is not one of sled, etcd"),
        "{out}"
    );
    assert!(tree(&node_root).is_empty(), "a refused install wrote files");
}

#[test]
fn install_sh_refuses_bad_arguments_and_missing_binaries_before_writing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let (bins, root) = (tmp.path().join("bin"), tmp.path().join("root"));
    std::fs::create_dir(&root).unwrap();
    fake_binaries(&bins, "v1");
    std::fs::remove_file(bins.join("rkube-proxy")).unwrap();
    let (ok, out) = install(&root, "node", &bins);
    assert!(!ok);
    assert!(
        out.contains(&format!("{}/rkube-proxy is missing", bins.display())) && out.contains("make build"),
        "{out}"
    );
    assert!(
        tree(&root).is_empty(),
        "a failed install wrote {:?}",
        tree(&root).keys()
    );
    let (ok, out) = install(&root, "master", &bins);
    assert!(
        !ok && out.contains("--role 'master' is not one of control-plane, node, all"),
        "{out}"
    );
}

/// The units as a server would have them: installed by install.sh into a
/// root that also holds the distribution's units (sysinit.target,
/// containerd.service, ...), which verify resolves dependencies against.
fn verify(root: &Path, units: &[PathBuf]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("--man=no")
        .args(units)
        .output()
        .expect("running systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!(
            "SKIPPED: systemd-analyze is not installed (Debian package systemd; `make deps` installs it)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (bins, root) = (tmp.path().join("bin"), tmp.path().join("root"));
    std::fs::create_dir(&root).unwrap();
    fake_binaries(&bins, "v1");
    let (ok, out) = install_with(&root, &["--role", "all", "--store", "etcd"], &bins);
    assert!(ok, "{out}");
    // Debian's etcd-server installs the etcd binary rkube-etcd.service runs
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::copy(bins.join("rkubectl"), root.join("usr/bin/etcd")).unwrap();
    let system_units = root.join("usr/lib/systemd");
    std::fs::create_dir_all(&system_units).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system")
        .arg(&system_units)
        .status()
        .unwrap();
    assert!(copied.success(), "copying the distribution's units");
    let containerd = system_units.join("system/containerd.service");
    if !containerd.exists() {
        // what the containerd package installs, reduced to what verify reads
        std::fs::write(
            &containerd,
            "[Unit]\nDescription=containerd\n[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
    }

    let units: Vec<PathBuf> = daemons("all")
        .iter()
        .map(|(_, unit, _)| unit)
        .chain(&["rkube-etcd.service"])
        .map(|unit| root.join("etc/systemd/system").join(unit))
        .collect();
    let (ok, out) = verify(&root, &units);
    // warnings (an unknown key, a bad value) fail as errors do
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify:\n{out}");

    for (bin, unit, conf) in daemons("all") {
        let text = std::fs::read_to_string(root.join("etc/systemd/system").join(unit)).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for want in [
            "Type=notify".to_string(),
            "Restart=always".to_string(),
            "Wants=network-online.target".to_string(),
            format!("ExecStart=/usr/local/bin/{bin} --config /etc/rkube/{conf}.yaml"),
        ] {
            assert!(lines.contains(&want.as_str()), "{unit} lacks `{want}`");
        }
        assert!(
            lines.iter().any(|l| l.starts_with("WatchdogSec=")),
            "{unit} has no watchdog"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("After=") && l.contains("network-online.target")),
            "{unit} is not ordered after the network"
        );
    }
    let etcd = std::fs::read_to_string(root.join("etc/systemd/system/rkube-etcd.service")).unwrap();
    for want in [
        "Type=notify",
        "Restart=always",
        "ExecStart=/usr/bin/etcd --config-file /etc/rkube/etcd.yaml",
        // Debian's own single-member etcd.service would hold the ports
        "Conflicts=etcd.service",
        "StateDirectory=rkube/etcd",
    ] {
        assert!(
            etcd.lines().any(|l| l == want),
            "rkube-etcd.service lacks `{want}`"
        );
    }
    let apiserver = std::fs::read_to_string(root.join("etc/systemd/system/rkube-apiserver.service")).unwrap();
    assert!(
        apiserver
            .lines()
            .any(|l| l.starts_with("After=") && l.contains("rkube-etcd.service")),
        "the apiserver does not start after a local etcd member"
    );
    let kubelet = std::fs::read_to_string(root.join("etc/systemd/system/rkubelet.service")).unwrap();
    for want in ["Requires=containerd.service", "KillMode=process", "Delegate=yes"] {
        assert!(
            kubelet.lines().any(|l| l == want),
            "rkubelet.service lacks `{want}`"
        );
    }
    assert!(kubelet
        .lines()
        .any(|l| l.starts_with("After=") && l.contains("containerd.service")));

    // the check can fail: a unit whose binary is missing does not verify
    std::fs::remove_file(root.join("usr/local/bin/rkube-proxy")).unwrap();
    let proxy_unit: Vec<PathBuf> = units
        .iter()
        .filter(|u| u.ends_with("rkube-proxy.service"))
        .cloned()
        .collect();
    let (ok, out) = verify(&root, &proxy_unit);
    assert!(!ok && out.contains("/usr/local/bin/rkube-proxy"), "{out}");
}

#[test]
fn the_sample_settings_are_valid_for_each_daemon_and_serve_health_on_the_documented_ports() {
    use rkube_daemon::options::parse_from;
    let conf = |name: &str| repo().join("deploy/config").join(format!("{name}.yaml"));
    let loopback = |port: u16| Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));

    let config = |daemon: &str, name: &str| -> [std::ffi::OsString; 3] {
        [daemon.into(), "--config".into(), conf(name).into_os_string()]
    };
    let c =
        rkube_apiserver::Config::from_options(parse_from(config("rkube-apiserver", "apiserver")).unwrap())
            .unwrap();
    assert_eq!(c.data_dir, Path::new("/var/lib/rkube/apiserver"));
    assert_eq!(c.health_addr, loopback(6444));
    // secure: its own PKI in the unit's StateDirectory, RBAC, an audit log in LogsDirectory
    assert_eq!(
        c.auto_pki.as_ref().map(|p| p.dir.as_path()),
        Some(Path::new("/var/lib/rkube/pki"))
    );
    assert_eq!(
        c.security.authorization_mode,
        Some(rkube_apiserver::authz::Mode::Rbac)
    );
    assert_eq!(
        c.security.audit_log_path.as_deref(),
        Some(Path::new("/var/log/rkube/audit.log"))
    );
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/rkube-apiserver.service")).unwrap();
    assert!(
        unit.lines()
            .any(|l| l == "StateDirectory=rkube/apiserver rkube/pki"),
        "{unit}"
    );
    assert!(unit.lines().any(|l| l == "LogsDirectory=rkube"), "{unit}");

    // the etcd-backed sample: every member, etcd's CA and the apiservers' client certificate
    let c = rkube_apiserver::Config::from_options(
        parse_from(config("rkube-apiserver", "apiserver-etcd")).unwrap(),
    )
    .unwrap();
    let etcd = c.etcd.expect("apiserver-etcd.yaml selects the etcd backend");
    assert_eq!(etcd.servers.len(), 3, "{:?}", etcd.servers);
    assert!(etcd.servers.iter().all(|s| s.starts_with("https://")));
    assert_eq!(
        (etcd.cafile.as_deref(), etcd.certfile.as_deref()),
        (
            Some(Path::new("/etc/rkube/etcd/ca.crt")),
            Some(Path::new("/etc/rkube/etcd/apiserver-etcd-client.crt"))
        )
    );
    assert_eq!(c.health_addr, loopback(6444));
    etcd_sample_names_only_etcds_settings(&conf("etcd"));

    let c =
        rkube_scheduler::Config::from_options(parse_from(config("rkube-scheduler", "scheduler")).unwrap())
            .unwrap();
    assert_eq!(c.health_addr, loopback(10259));
    assert_eq!(
        c.kubeconfig.as_deref(),
        Some(Path::new("/var/lib/rkube/pki/kube-scheduler.conf"))
    );

    let argv = config("rkube-controller-manager", "controller-manager");
    let c = rkube_controller_manager::Config::from_options(parse_from(argv).unwrap()).unwrap();
    assert_eq!(c.health_addr, loopback(10257));

    // the machines file is the operator's; give it one so the rest is checked
    let tmp = tempfile::tempdir().unwrap();
    let cloud = tmp.path().join("cloud-config.yaml");
    std::fs::write(&cloud, "machines: []\n").unwrap();
    let mut argv = config("rkube-cloud-controller-manager", "cloud-controller-manager").to_vec();
    argv.extend(["--cloud-config".into(), cloud.into_os_string()]);
    let c = rkube_cloud_controller_manager::Config::from_options(parse_from(argv).unwrap()).unwrap();
    assert_eq!(c.cloud_provider, "local");

    let mut argv = config("rkubelet", "kubelet").to_vec();
    argv.extend(["--node-name".into(), "node-1".into()]);
    let c = rkube_kubelet::config::Config::from_options(parse_from(argv).unwrap()).unwrap();
    assert_eq!(c.root_dir, Path::new("/var/lib/rkube/kubelet"));
    assert_eq!(c.health_addr, loopback(10248));

    let mut argv = config("rkube-proxy", "proxy").to_vec();
    argv.extend(["--node-name".into(), "node-1".into()]);
    let c = rkube_proxy::Config::from_options(parse_from(argv).unwrap()).unwrap();
    assert_eq!(c.health_addr, loopback(10256));

    let mut argv = config("rkube-ingress", "ingress").to_vec();
    argv.extend(["--node-name".into(), "node-1".into()]);
    let c = rkube_ingress::Config::from_options(parse_from(argv).unwrap()).unwrap();
    assert_eq!(c.health_addr, loopback(10254));
    assert_eq!(c.http_addr, Some("0.0.0.0:80".parse().unwrap()));
}

/// The etcd member's sample is etcd's own configuration file: every key is one of the
/// flags `etcd --help` lists (a misspelt one would be ignored by nobody: etcd refuses
/// it), the TLS sections hold etcd's TLS keys, and the member is among the initial
/// cluster with the files deploy/etcd-pki.sh writes.
fn etcd_sample_names_only_etcds_settings(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let yaml: BTreeMap<String, serde_yaml::Value> = serde_yaml::from_str(&text).unwrap();
    let Ok(help) = Command::new("/usr/bin/etcd").arg("--help").output() else {
        eprintln!("SKIPPED the etcd flag names: /usr/bin/etcd is not installed (Debian package etcd-server)");
        return;
    };
    let help = String::from_utf8_lossy(&help.stdout).into_owned() + &String::from_utf8_lossy(&help.stderr);
    let tls_keys = ["cert-file", "key-file", "client-cert-auth", "trusted-ca-file"];
    for (key, value) in &yaml {
        if key.ends_with("-transport-security") {
            let section: BTreeMap<String, serde_yaml::Value> = serde_yaml::from_value(value.clone()).unwrap();
            for k in section.keys() {
                assert!(
                    tls_keys.contains(&k.as_str()),
                    "{key}.{k} is not an etcd TLS setting"
                );
            }
            assert_eq!(
                section.get("client-cert-auth"),
                Some(&serde_yaml::Value::Bool(true))
            );
            continue;
        }
        assert!(
            help.contains(&format!("--{key} ")),
            "{}: `{key}` is not an etcd flag",
            path.display()
        );
    }
    let name = yaml["name"].as_str().unwrap();
    let peer = yaml["initial-advertise-peer-urls"].as_str().unwrap();
    assert!(
        yaml["initial-cluster"]
            .as_str()
            .unwrap()
            .split(',')
            .any(|m| m == format!("{name}={peer}")),
        "the member is not in its initial cluster"
    );
    assert!(text.contains(&format!("/etc/rkube/etcd/{name}.crt")));
}

/// `N` distinct loopback addresses free at the moment of asking (all held
/// open together, so no two are the same).
fn free_addrs<const N: usize>() -> [std::net::SocketAddr; N] {
    let held: Vec<_> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap())
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((
        code,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    ))
}

async fn wait_for_200(addr: std::net::SocketAddr, path: &str) {
    eventually(
        &format!("GET http://{addr}{path} to answer 200 ok"),
        Duration::from_secs(30),
        || async {
            let (code, body) = http_get(addr, path).await?;
            anyhow::ensure!(code == 200 && body == "ok", "{code} {body:?}");
            Ok(true)
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_control_plane_daemons_serve_healthz_readyz_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let [api_listen, api_health, sched_health, cm_health] = free_addrs::<4>();
    let mut api = rkube_apiserver::Config::local(dir.path().join("store"));
    api.listen = api_listen;
    api.health_addr = Some(api_health);
    let url = format!("http://{api_listen}");
    let apiserver = tokio::spawn(rkube_apiserver::run(api, stopped(stop_rx.clone())));
    wait_for_200(api_health, "/readyz").await;
    wait_for_200(api_health, "/healthz").await;
    let (code, metrics) = http_get(api_health, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("\nprocess_resident_memory_bytes "), "{metrics}");

    let mut sched = rkube_scheduler::Config::new(&url);
    sched.health_addr = Some(sched_health);
    let scheduler = tokio::spawn(rkube_scheduler::run(sched, stopped(stop_rx.clone())));
    let mut cm = rkube_controller_manager::Config::new(&url);
    cm.health_addr = Some(cm_health);
    let manager = tokio::spawn(rkube_controller_manager::run(cm, stopped(stop_rx.clone())));
    for addr in [sched_health, cm_health] {
        wait_for_200(addr, "/healthz").await;
        wait_for_200(addr, "/livez").await;
        let (code, metrics) = http_get(addr, "/metrics").await.unwrap();
        assert_eq!(code, 200);
        assert!(metrics.contains("\nprocess_cpu_seconds_total "), "{metrics}");
    }

    stop_tx.send(true).unwrap();
    for task in [scheduler, manager, apiserver] {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a daemon did not stop")
            .unwrap()
            .unwrap();
    }
    // the endpoint goes away with its daemon
    assert!(http_get(api_health, "/healthz").await.is_err());
}
