//! The secure apiserver and the real kubectl the kubectl tests drive:
//! `/usr/bin/kubectl` (the machine's version dispatcher, which runs the
//! kubectl matching the server's reported 1.32) with its own cache dir and
//! HOME, through kubeconfigs for the administrator and a node.
#![allow(dead_code)]

use rkube_client::kubeconfig::Kubeconfig;
use rkube_client::ClientConfig;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;

pub const KUBECTL: &str = "/usr/bin/kubectl";

pub struct Cluster {
    pub api: rkube_testing::TestApiServer,
    pub url: String,
}

/// A secure apiserver (TLS, client certificates, RBAC, an audit log, and a token file
/// with a user RBAC grants nothing), and kubeconfigs for the administrator
/// (`admin.kubeconfig`) and a node (`node.kubeconfig`, a user RBAC allows little),
/// pointing at it.
pub async fn start_cluster() -> Cluster {
    assert!(
        Path::new(KUBECTL).exists(),
        "{KUBECTL} is missing: these tests drive the real kubectl (see NOTES-platform.md)"
    );
    let api = rkube_testing::TestApiServer::builder()
        .secure(&["n1"])
        .flag_file("--token-auth-file", "tokens.csv", "carol-token,carol,1003\n")
        .start()
        .await
        .unwrap();
    let url = api.url().to_string();
    let pki = api.pki();
    for (stem, file) in [("admin", "admin.kubeconfig"), ("node-n1", "node.kubeconfig")] {
        // the generated config is a kubeconfig: read it, point it here
        let generated = pki.join(format!("{stem}.conf"));
        assert!(
            std::fs::read_to_string(&generated)
                .unwrap()
                .contains("kind: Config"),
            "certs generate writes kubeconfigs"
        );
        let mut c = ClientConfig::load(&generated).unwrap();
        c.server = url.clone();
        Kubeconfig::single("rkube", &c)
            .save(&api.dir().join(file))
            .unwrap();
    }
    Cluster { api, url }
}

impl Cluster {
    pub fn path(&self, name: &str) -> PathBuf {
        self.api.dir().join(name)
    }

    pub fn command(&self, kubeconfig: &str, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(KUBECTL);
        cmd.arg("--kubeconfig")
            .arg(self.path(kubeconfig))
            .arg("--cache-dir")
            .arg(self.path("kubectl-cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.api.dir())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// `kubectl ARGS` as `kubeconfig`'s user: success, stdout, stderr.
    pub async fn run_as(&self, kubeconfig: &str, args: &[&str]) -> (bool, String, String) {
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            self.command(kubeconfig, args).output(),
        )
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} took over 60s"))
        .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `kubectl ARGS` as the administrator, which must succeed: stdout.
    pub async fn kubectl(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run_as("admin.kubeconfig", args).await;
        assert!(ok, "kubectl {args:?} failed:\nstdout: {out}\nstderr: {err}");
        out
    }

    /// `kubectl WORDS` (split at spaces) as the administrator: stdout.
    pub async fn kubectl_words(&self, line: &str) -> String {
        self.kubectl(&line.split_whitespace().collect::<Vec<_>>()).await
    }

    pub async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all).await).unwrap()
    }

    pub async fn stop(self) {
        self.api.stop().await.unwrap();
    }
}
