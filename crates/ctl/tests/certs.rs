//! The control plane's certificates over their lifetime, with the built `rkubectl`:
//! a PKI issued for 10 days makes rkubectl warn on stderr.

use rkube_testing::TestApiServer;
use std::path::Path;
use std::process::Command;

/// `rkubectl ARGS` with `home` as HOME: exit status, stdout, stderr.
fn rkubectl(home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rkubectl"))
        .env("HOME", home)
        .env_remove("RKUBECONFIG")
        .env_remove("KUBECONFIG")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A PKI issued for 10 days by `rkubectl certs generate` in `home/pki`, and an
/// apiserver on it (`--cert-dir`).
async fn short_lived_cluster(home: &Path) -> (TestApiServer, std::path::PathBuf) {
    let pki = home.join("pki");
    let (ok, _, err) = rkubectl(
        home,
        &[
            "certs",
            "generate",
            "--dir",
            pki.to_str().unwrap(),
            "--node",
            "n1",
            "--validity-days",
            "10",
        ],
    );
    assert!(ok, "{err}");
    let api = TestApiServer::builder().cert_dir(&pki).start().await.unwrap();
    (api, pki)
}

/// `rkubectl get ns` as the PKI's admin: exit status, stdout, stderr.
fn get_namespaces(home: &Path, pki: &Path, api: &TestApiServer) -> (bool, String, String) {
    let admin = pki.join("admin.conf");
    rkubectl(
        home,
        &[
            "--config",
            admin.to_str().unwrap(),
            "--server",
            api.url(),
            "get",
            "ns",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rkubectl_warns_when_its_client_certificate_expires_within_30_days() {
    let home = tempfile::tempdir().unwrap();
    let (api, pki) = short_lived_cluster(home.path()).await;
    // on stderr, about the client certificate, not about the 10-year CA; the output is intact
    let (ok, out, err) = get_namespaces(home.path(), &pki, &api);
    assert!(ok && out.contains("kube-system"), "{out}{err}");
    let want = format!(
        "Warning: the client certificate {} (CN \"admin\") expires at ",
        pki.join("admin.crt").display()
    );
    assert!(
        err.contains(&want) && err.contains(", in 9 days: renew it"),
        "{err}"
    );
    assert!(
        !err.contains("cluster CA") && !out.contains("Warning"),
        "{out}{err}"
    );
    api.stop().await.unwrap();
}
