//! Test support for the security tests: a real apiserver in process with
//! TLS, client certificates from a PKI written by `rkubectl certs generate`,
//! RBAC and an audit log, and clients for the identities that PKI holds.
//!
//! Shared by crates/apiserver/tests (as `common::secure`) and by
//! crates/ctl/tests (included by `#[path]`), so it uses nothing from the
//! sibling `common` module and only crates both test targets depend on.
#![allow(dead_code)]

use rkube_apiserver::{RunningApiServer, SecurityConfig};
use rkube_client::{Client, ClientConfig, Error};
use rkube_ctl::cmd::certs::{generate, GenerateArgs};
use std::path::{Path, PathBuf};

pub struct SecureApiServer {
    server: Option<RunningApiServer>,
    /// Holds `pki/` (the generated PKI), `data/` and `audit.log`.
    pub dir: tempfile::TempDir,
    pub url: String,
}

impl SecureApiServer {
    /// An apiserver whose PKI has kubelet client certificates for `nodes`.
    pub async fn start(nodes: &[&str]) -> SecureApiServer {
        Self::start_with(nodes, |_, _| {}).await
    }

    /// As [`SecureApiServer::start`]; `more` adds flags to the security
    /// configuration before the server starts, given the temporary
    /// directory (the PKI is its `pki/`) to put any files they name in.
    pub async fn start_with(
        nodes: &[&str],
        more: impl FnOnce(&Path, &mut SecurityConfig),
    ) -> SecureApiServer {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        generate_pki(&pki, nodes);
        let mut config = rkube_apiserver::Config::local(dir.path().join("data"));
        config.security = SecurityConfig {
            tls_cert_file: Some(pki.join("apiserver.crt")),
            tls_private_key_file: Some(pki.join("apiserver.key")),
            client_ca_file: Some(pki.join("ca.crt")),
            authorization_mode: Some(rkube_apiserver::authz::Mode::Rbac),
            audit_log_path: Some(dir.path().join("audit.log")),
            ..Default::default()
        };
        more(dir.path(), &mut config.security);
        let server = rkube_apiserver::start(config).await.unwrap();
        let url = server.url();
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        SecureApiServer {
            server: Some(server),
            dir,
            url,
        }
    }

    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// A client from a generated config file, pointed at this server.
    pub fn client_from(&self, conf: &Path) -> Client {
        let mut cfg = ClientConfig::load(conf).unwrap();
        cfg.server = self.url.clone();
        Client::from_config(&cfg).unwrap()
    }

    /// A client for the PKI's `STEM.conf` (`admin`, `node-NAME`, ...).
    pub fn client(&self, stem: &str) -> Client {
        self.client_from(&self.pki().join(format!("{stem}.conf")))
    }

    pub fn admin(&self) -> Client {
        self.client("admin")
    }

    /// A client that trusts the server's CA and presents a bearer token.
    pub fn with_token(&self, token: &str) -> Client {
        Client::from_config(&ClientConfig {
            server: self.url.clone(),
            certificate_authority: Some(self.pki().join("ca.crt")),
            token: Some(token.into()),
            ..Default::default()
        })
        .unwrap()
    }

    /// `rkubectl --config admin.conf --server URL ARGS...`: output and result.
    pub async fn rkubectl(&self, args: &[&str]) -> (String, Result<(), rkube_ctl::CtlError>) {
        self.rkubectl_as(&self.pki().join("admin.conf"), args).await
    }

    /// `rkubectl --config CONF --server URL ARGS...`: output and result.
    pub async fn rkubectl_as(&self, conf: &Path, args: &[&str]) -> (String, Result<(), rkube_ctl::CtlError>) {
        use clap::Parser;
        let mut argv = vec![
            "rkubectl",
            "--config",
            conf.to_str().unwrap(),
            "--server",
            &self.url,
        ];
        argv.extend_from_slice(args);
        let cli = rkube_ctl::Cli::try_parse_from(argv).unwrap();
        let mut out = Vec::new();
        let result = rkube_ctl::run(cli, &mut out).await;
        (String::from_utf8(out).unwrap(), result)
    }

    /// The audit log's events so far.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub async fn stop(mut self) {
        self.server.take().unwrap().stop().await.unwrap();
    }
}

/// `rkubectl certs generate --dir DIR --node NODE...` as the tests use it.
pub fn generate_pki(dir: &Path, nodes: &[&str]) -> Vec<PathBuf> {
    generate(&GenerateArgs {
        dir: dir.to_path_buf(),
        apiserver_sans: vec![],
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        apiserver_url: "https://127.0.0.1:6443".into(),
        validity_days: 30,
    })
    .unwrap()
}

/// The gRPC code of an error the apiserver answered with.
pub fn code(e: &Error) -> Option<tonic::Code> {
    match e {
        Error::Api { code, .. } => Some(*code),
        _ => None,
    }
}
