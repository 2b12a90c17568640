//! The control plane's certificates over their lifetime, with the built `rkubectl`:
//! a PKI issued for 10 days makes rkubectl warn on stderr; `certs renew` re-issues
//! from the same CA with the same names and a year's validity, new keys; clients take
//! the renewed files at their next start and a restarted apiserver serves the renewed
//! certificate to clients that still trust only the old CA.

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

/// The certificate's subject, SANs (as text), notAfter (unix seconds) and public key.
fn read_cert(path: &Path) -> (String, Vec<String>, i64, Vec<u8>) {
    let pem = std::fs::read(path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let sans = cert
        .subject_alternative_name()
        .unwrap()
        .map(|e| e.value.general_names.iter().map(|n| format!("{n:?}")).collect())
        .unwrap_or_default();
    (
        cert.subject().to_string(),
        sans,
        cert.validity().not_after.timestamp(),
        cert.public_key().raw.to_vec(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_renew_reissues_from_the_same_ca_and_a_restarted_apiserver_is_trusted() {
    let home = tempfile::tempdir().unwrap();
    let (mut api, pki) = short_lived_cluster(home.path()).await;
    let dir = pki.to_str().unwrap();
    let ca = std::fs::read(pki.join("ca.crt")).unwrap();
    let (subject, sans, old_expiry, old_key) = read_cert(&pki.join("apiserver.crt"));

    let (ok, out, err) = rkubectl(home.path(), &["certs", "renew", "--dir", dir, "all"]);
    assert!(ok, "{err}");
    for line in [
        format!("renewed {dir}/apiserver.crt (CN \"rkube-apiserver\"), valid until "),
        format!("renewed {dir}/node-n1.crt (CN \"system:node:n1\")"),
        "restart to use the new certificates: rkube-apiserver, rkube-cloud-controller-manager, \
         rkube-controller-manager, rkube-ingress, rkube-proxy, rkube-scheduler, rkubelet"
            .into(),
    ] {
        assert!(out.contains(&line), "{line}\n{out}");
    }
    assert!(!out.contains("ca.crt"), "the CA is not renewed:\n{out}");
    assert_eq!(std::fs::read(pki.join("ca.crt")).unwrap(), ca);
    let (new_subject, new_sans, new_expiry, new_key) = read_cert(&pki.join("apiserver.crt"));
    assert_eq!((new_subject, new_sans), (subject, sans));
    let (day, year) = (24 * 3600, 365 * 24 * 3600);
    assert!(
        (new_expiry - (old_expiry - 10 * day + year)).abs() < 3600,
        "expiry {old_expiry} -> {new_expiry}"
    );
    assert_ne!(new_key, old_key, "renewal makes a new key, as kubeadm's");

    // one by name, and a name that is not there
    let (ok, out, _) = rkubectl(home.path(), &["certs", "renew", "--dir", dir, "kube-proxy"]);
    assert!(
        ok && out.contains("kube-proxy.crt") && !out.contains("admin.crt"),
        "{out}"
    );
    let (ok, _, err) = rkubectl(home.path(), &["certs", "renew", "--dir", dir, "kube-prxy"]);
    assert!(!ok && err.contains("no certificate \"kube-prxy\""), "{err}");

    // the running apiserver accepts the renewed client certificate (same CA); no warning now
    let (ok, _, err) = get_namespaces(home.path(), &pki, &api);
    assert!(ok && !err.contains("Warning"), "{err}");
    // restarted, it serves the renewed certificate and key (the old ones are gone from
    // disk), which clients verify against the CA they always had
    api.restart().await.unwrap();
    let (ok, out, err) = get_namespaces(home.path(), &pki, &api);
    assert!(
        ok && out.contains("kube-system") && !err.contains("Warning"),
        "{out}{err}"
    );
    api.stop().await.unwrap();
}
