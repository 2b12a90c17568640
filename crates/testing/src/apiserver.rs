//! The apiserver in process, as tests start it: its configuration from the
//! daemon's own flags (`Args` and `Config::from_args`, as `main`), started
//! by `rkube_apiserver::start` (what `run` serves with) on a free loopback
//! port over a temporary directory.

use anyhow::Context;
use rkube_apiserver::RunningApiServer;
use rkube_client::{Api, Client, ClientConfig};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How the server is secured.
#[derive(Clone)]
enum Security {
    /// `--insecure`: plain text, no authentication, everything allowed.
    Insecure,
    /// A PKI written into `DIR/pki` as `rkubectl certs generate` writes it
    /// (kubelet client certificates for `nodes`), and TLS, client
    /// certificates, RBAC, ServiceAccount tokens and an audit log from it.
    Pki { nodes: Vec<String> },
    /// `--cert-dir DIR`: the daemon's own secure default on a PKI the test
    /// made there, and an audit log.
    CertDir(PathBuf),
}

type Configure = Arc<dyn Fn(&mut rkube_apiserver::Config) + Send + Sync>;

/// Options of a [`TestApiServer`]; `start` starts it.
#[derive(Clone)]
pub struct TestApiServerBuilder {
    security: Security,
    listen: SocketAddr,
    flags: Vec<OsString>,
    files: Vec<(String, String, String)>,
    pki_files: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
    configure: Option<Configure>,
}

impl TestApiServerBuilder {
    /// TLS, client certificates and RBAC on a PKI the fixture generates,
    /// with kubelet client certificates (`node-NAME.conf`) for `nodes`;
    /// the audit log is [`TestApiServer::audit`].
    pub fn secure(mut self, nodes: &[&str]) -> Self {
        self.security = Security::Pki {
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        };
        self
    }

    /// Secure by default, as a user who gives only `--cert-dir DIR` gets it
    /// (node certificates signed, https to kubelets), on the PKI in `dir`.
    pub fn cert_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.security = Security::CertDir(dir.into());
        self
    }

    /// Listens on `addr` instead of a free loopback port.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// More command-line flags, as an operator would give them.
    pub fn flags<S: Into<OsString>>(mut self, flags: impl IntoIterator<Item = S>) -> Self {
        self.flags.extend(flags.into_iter().map(Into::into));
        self
    }

    /// Writes `contents` to the file `name` in the server's directory and
    /// passes it as `flag FILE` (a token file, a key, ...).
    pub fn flag_file(mut self, flag: &str, name: &str, contents: &str) -> Self {
        self.files.push((flag.into(), name.into(), contents.into()));
        self
    }

    /// Passes `flag PKI/FILE`, a file of the server's PKI (e.g.
    /// `--cluster-signing-key-file ca.key`).
    pub fn pki_flag(mut self, flag: &str, file: &str) -> Self {
        self.pki_files.push((flag.into(), file.into()));
        self
    }

    /// Keeps the store in `dir` (which outlives the server) instead of the
    /// server's temporary directory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Changes the configuration after the flags are read, for what no flag
    /// allows (e.g. a watch history under the flag's minimum).
    pub fn configure(mut self, f: impl Fn(&mut rkube_apiserver::Config) + Send + Sync + 'static) -> Self {
        self.configure = Some(Arc::new(f));
        self
    }

    /// Starts the server; returns once it accepts requests.
    pub async fn start(self) -> anyhow::Result<TestApiServer> {
        let dir = tempfile::tempdir().context("creating the apiserver's temporary directory")?;
        if let Security::Pki { nodes } = &self.security {
            rkube_client::pki::generate(&rkube_client::pki::PkiRequest {
                dir: dir.path().join("pki"),
                apiserver_sans: vec![],
                nodes: nodes.clone(),
                apiserver_url: "https://127.0.0.1:6443".into(),
                validity_days: 365,
            })?;
        }
        for (_, name, contents) in &self.files {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        }
        let server = rkube_apiserver::start(self.config(dir.path(), self.listen)?).await?;
        let url = reachable_url(&server);
        let client = match self.security {
            Security::Insecure => Client::connect(&url)?,
            _ => client_from(&self.pki_dir(dir.path()).join("admin.conf"), &url)?,
        };
        Ok(TestApiServer {
            url,
            addr: server.addr,
            server: Some(server),
            client,
            options: self,
            dir: Some(dir),
        })
    }

    /// The PKI: `DIR/pki`, or the `cert_dir` given.
    fn pki_dir(&self, dir: &Path) -> PathBuf {
        match &self.security {
            Security::CertDir(pki) => pki.clone(),
            _ => dir.join("pki"),
        }
    }

    /// The server's configuration: its flags read as `main` reads them.
    /// The one place a test's apiserver is configured.
    fn config(&self, dir: &Path, listen: SocketAddr) -> anyhow::Result<rkube_apiserver::Config> {
        let data_dir = self.data_dir.clone().unwrap_or_else(|| dir.join("data"));
        let mut argv: Vec<OsString> = vec![
            "rkube-apiserver".into(),
            "--health-addr".into(),
            "off".into(),
            "--listen".into(),
            listen.to_string().into(),
            "--data-dir".into(),
            data_dir.into(),
        ];
        let audit = || ["--audit-log-path".into(), dir.join("audit.log").into()];
        let pki = self.pki_dir(dir);
        match &self.security {
            Security::Insecure => argv.push("--insecure".into()),
            Security::Pki { .. } => {
                argv.extend([
                    "--tls-cert-file".into(),
                    pki.join("apiserver.crt").into(),
                    "--tls-private-key-file".into(),
                    pki.join("apiserver.key").into(),
                    "--client-ca-file".into(),
                    pki.join("ca.crt").into(),
                    "--authorization-mode".into(),
                    "RBAC".into(),
                    "--service-account-signing-key-file".into(),
                    pki.join(rkube_client::pki::SERVICE_ACCOUNT_KEY).into(),
                ]);
                argv.extend(audit());
            }
            Security::CertDir(_) => {
                argv.extend(["--cert-dir".into(), pki.clone().into()]);
                argv.extend(audit());
            }
        }
        for (flag, name, _) in &self.files {
            argv.extend([flag.into(), dir.join(name).into()]);
        }
        for (flag, file) in &self.pki_files {
            argv.extend([flag.into(), pki.join(file).into()]);
        }
        argv.extend(self.flags.iter().cloned());
        let options = rkube_daemon::options::parse_from::<rkube_apiserver::Options, _, _>(&argv)
            .context("the test apiserver's flags")?;
        let mut config = rkube_apiserver::Config::from_options(options)?;
        if let Some(configure) = &self.configure {
            configure(&mut config);
        }
        Ok(config)
    }
}

/// A client from the config file `conf`, pointed at `url`.
fn client_from(conf: &Path, url: &str) -> anyhow::Result<Client> {
    let mut config = ClientConfig::load(conf)?;
    config.server = url.to_string();
    Ok(Client::from_config(&config)?)
}

/// Where a client on this machine reaches `server`: on loopback when it
/// listens on every address (the serving certificate names 127.0.0.1).
fn reachable_url(server: &RunningApiServer) -> String {
    let mut addr = server.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let scheme = if server.url().starts_with("https:") {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{addr}")
}

/// A running apiserver, its address and directory, and clients of it.
/// Dropped, it shuts down and its directory is removed once it stopped;
/// [`TestApiServer::stop`] does the same and waits, reporting errors.
pub struct TestApiServer {
    server: Option<RunningApiServer>,
    url: String,
    addr: SocketAddr,
    client: Client,
    options: TestApiServerBuilder,
    /// `data/` (the store), `pki/`, `audit.log` and the files of
    /// [`TestApiServerBuilder::flag_file`]. Only `Drop` takes it.
    dir: Option<tempfile::TempDir>,
}

impl TestApiServer {
    /// A plain-text apiserver without authentication (`--insecure`), for
    /// tests of the API itself and of its clients.
    pub fn builder() -> TestApiServerBuilder {
        TestApiServerBuilder {
            security: Security::Insecure,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            flags: Vec::new(),
            files: Vec::new(),
            pki_files: Vec::new(),
            data_dir: None,
            configure: None,
        }
    }

    /// `TestApiServer::builder().start()`.
    pub async fn start() -> anyhow::Result<TestApiServer> {
        Self::builder().start().await
    }

    /// `TestApiServer::builder().secure(nodes).start()`.
    pub async fn secure(nodes: &[&str]) -> anyhow::Result<TestApiServer> {
        Self::builder().secure(nodes).start().await
    }

    /// `http://127.0.0.1:PORT`, or `https://` when secured (loopback also
    /// when it listens on every address).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("only Drop takes the directory").path()
    }

    /// Where the store is.
    pub fn data_dir(&self) -> PathBuf {
        self.options
            .data_dir
            .clone()
            .unwrap_or_else(|| self.dir().join("data"))
    }

    /// The PKI: `DIR/pki`, or the `cert_dir` given.
    pub fn pki(&self) -> PathBuf {
        self.options.pki_dir(self.dir())
    }

    /// A client with every right: no credentials on a plain-text server,
    /// the PKI's `admin.conf` on a secure one.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// `Api<K>` of the admin client in `namespace` (ignored for
    /// cluster-scoped kinds).
    pub fn api<K: rkube_api::Resource>(&self, namespace: &str) -> Api<K> {
        Api::namespaced(self.client(), namespace)
    }

    /// A client with the credentials of the PKI's `STEM.conf` (`admin`,
    /// `node-NAME`, `controller-manager`, ...).
    pub fn client_as(&self, stem: &str) -> anyhow::Result<Client> {
        self.client_from(&self.pki().join(format!("{stem}.conf")))
    }

    /// A client from the config file `conf`, pointed at this server.
    pub fn client_from(&self, conf: &Path) -> anyhow::Result<Client> {
        client_from(conf, &self.url)
    }

    /// A client that presents a bearer token (and trusts the server's CA
    /// when secured).
    pub fn client_with_token(&self, token: &str) -> anyhow::Result<Client> {
        let certificate_authority = match self.options.security {
            Security::Insecure => None,
            _ => Some(self.pki().join("ca.crt")),
        };
        Ok(Client::from_config(&ClientConfig {
            server: self.url.clone(),
            certificate_authority,
            token: Some(token.into()),
            ..Default::default()
        })?)
    }

    /// The admin's client config file (`/dev/null`, none, when plain text).
    pub fn admin_conf(&self) -> PathBuf {
        match self.options.security {
            Security::Insecure => PathBuf::from("/dev/null"),
            _ => self.pki().join("admin.conf"),
        }
    }

    /// `rkubectl ARGS...` in process as the admin: output and result.
    pub async fn rkubectl(&self, args: &[&str]) -> (String, Result<(), rkube_ctl::CtlError>) {
        crate::rkubectl(&self.url, &self.admin_conf(), args).await
    }

    /// `rkubectl --config CONF ARGS...` in process: output and result.
    pub async fn rkubectl_as(&self, conf: &Path, args: &[&str]) -> (String, Result<(), rkube_ctl::CtlError>) {
        crate::rkubectl(&self.url, conf, args).await
    }

    /// The audit log's events so far (secure servers write one).
    pub fn audit(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let path = self.dir().join("audit.log");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        text.lines()
            .map(|l| {
                serde_json::from_str(l).with_context(|| format!("an audit event in {}: {l}", path.display()))
            })
            .collect()
    }

    /// Stops it and starts it again with the same options on the same
    /// store and address (retrying while the port is still taken).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(server) = self.server.take() {
            server.stop().await.context("stopping the apiserver")?;
        }
        let config = self.options.config(self.dir(), self.addr)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match rkube_apiserver::start(config.clone()).await {
                Ok(server) => {
                    self.server = Some(server);
                    return Ok(());
                }
                Err(e) if tokio::time::Instant::now() > deadline => {
                    return Err(e.context("restarting the apiserver"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Shuts it down (ends watches, flushes the store) and waits.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        match self.server.take() {
            Some(server) => server.stop().await,
            None => Ok(()),
        }
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        let (Some(server), dir) = (self.server.take(), self.dir.take()) else {
            return;
        };
        // Drop cannot wait: the shutdown runs on the test's runtime, and the
        // directory goes when it is done (or when the runtime ends).
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = server.stop().await;
                    drop(dir);
                });
            }
            Err(_) => drop((server, dir)),
        }
    }
}
