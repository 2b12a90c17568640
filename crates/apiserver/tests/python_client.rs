//! The official Kubernetes Python client (PyPI `kubernetes`, installed by `make deps`
//! into `target/python`) against a secure apiserver: typed create/read/list, strategic
//! merge patch, the scale subresource, a watch, and errors as `ApiException`s with
//! Kubernetes' status and reason. The script is `tests/python/client.py`.

use rkube_client::kubeconfig::Kubeconfig;
use rkube_client::ClientConfig;
use serde_json::Value;
use std::path::PathBuf;

/// The virtualenv `make deps` creates (`RKUBE_TEST_PYTHON` overrides).
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("RKUBE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/python/bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_works_unchanged() {
    let python = python();
    assert!(
        python.exists(),
        "{} is missing: `make deps` installs the Python client (PyPI kubernetes) there",
        python.display()
    );
    let api = rkube_testing::TestApiServer::builder()
        .secure(&[])
        .start()
        .await
        .unwrap();
    let mut c = ClientConfig::load(&api.pki().join("admin.conf")).unwrap();
    c.server = api.url().to_string();
    let kubeconfig = api.dir().join("admin.kubeconfig");
    Kubeconfig::single("rkube", &c).save(&kubeconfig).unwrap();

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/client.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&kubeconfig)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checks: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let check = |name: &str| -> &Value {
        checks
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no {name} check in:\n{stdout}"))
    };
    assert_eq!(check("version")["major"], "1");
    assert_eq!(check("version")["minor"], "32");
    assert_eq!(check("created")["name"], "settings");
    assert_eq!(check("created")["uid"], true);
    assert_eq!(check("deployment")["replicas"], 2);
    assert_eq!(check("deployment")["strategy"], "RollingUpdate");
    assert_eq!(check("list")["names"], serde_json::json!(["settings"]));
    assert_eq!(check("list")["kind"], "ConfigMapList");
    assert_eq!(
        check("patch")["data"],
        serde_json::json!({"greeting": "hello", "extra": "1"})
    );
    assert_eq!(check("scale")["replicas"], 3);
    assert_eq!(check("watch")["type"], "ADDED");
    assert_eq!(check("watch")["data"], serde_json::json!({"k": "v"}));
    assert_eq!(check("missing")["status"], 404);
    assert_eq!(check("missing")["body_reason"], "NotFound");
    assert_eq!(check("missing")["message"], "pods \"nope\" not found");
    assert_eq!(check("duplicate")["status"], 409);
    assert_eq!(check("duplicate")["body_reason"], "AlreadyExists");
    assert_eq!(check("invalid")["status"], 422);
    assert_eq!(check("invalid")["body_reason"], "Invalid");
    assert_eq!(check("deleted")["gone"], true);
    api.stop().await.unwrap();
}
