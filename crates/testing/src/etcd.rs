//! A throwaway etcd on loopback (Debian's `etcd-server`): fresh data directory, free
//! ports, default durability (fsync on every commit), optionally TLS with client
//! certificates from a CA made for it. The guard kills it when dropped, also when a test
//! or the benchmark fails or panics; [`Etcd::kill`] and [`Etcd::restart`] let tests take
//! it away and bring it back on the same ports and data.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's etcd-server puts etcd; `RKUBE_ETCD_BIN` overrides it.
pub const DEFAULT_ETCD_BIN: &str = "/usr/bin/etcd";

/// The files of a TLS etcd: its CA, and a client certificate and key it accepts.
#[derive(Clone, Debug)]
pub struct EtcdPki {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub struct Etcd {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` (`https://` with TLS), for clients.
    pub endpoint: String,
    pub version: String,
    /// Set for an etcd started with [`Etcd::start_tls`].
    pub pki: Option<EtcdPki>,
    bin: PathBuf,
    dir: PathBuf,
    peer: String,
    log: PathBuf,
    /// Flags of the test's own ([`Etcd::temp_with_flags`]), kept across restarts.
    flags: Vec<std::ffi::OsString>,
    /// The temporary directory of [`Etcd::temp`], removed after the process is gone.
    _temp: Option<tempfile::TempDir>,
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

fn etcd_bin() -> PathBuf {
    std::env::var_os("RKUBE_ETCD_BIN").map_or_else(|| PathBuf::from(DEFAULT_ETCD_BIN), PathBuf::from)
}

impl Etcd {
    /// Starts `bin` with its data in `dir/data` and its log in `dir/etcd.log`
    /// and waits (at most 20 s) until it answers.
    pub async fn start(bin: &Path, dir: &Path) -> anyhow::Result<Etcd> {
        Self::launch(bin, dir, None, Vec::new()).await
    }

    /// An etcd in its own temporary directory (removed on drop), plain http.
    pub async fn temp() -> anyhow::Result<Etcd> {
        Self::temp_with_flags(&[]).await
    }

    /// [`Etcd::temp`] with more flags (`--quota-backend-bytes N`, ...).
    pub async fn temp_with_flags(flags: &[&str]) -> anyhow::Result<Etcd> {
        let temp = tempfile::tempdir()?;
        let flags = flags.iter().map(Into::into).collect();
        let mut etcd = Self::launch(&etcd_bin(), temp.path(), None, flags).await?;
        etcd._temp = Some(temp);
        Ok(etcd)
    }

    /// An etcd in its own temporary directory serving https and requiring client
    /// certificates: a CA, its serving certificate (127.0.0.1, localhost) and a client
    /// certificate are made in `DIR/pki` with rkube's PKI code.
    pub async fn start_tls() -> anyhow::Result<Etcd> {
        let temp = tempfile::tempdir()?;
        let pki_dir = temp.path().join("pki");
        std::fs::create_dir_all(&pki_dir)?;
        let (ca, _) = rkube_client::pki::CertificateAuthority::load_or_create(&pki_dir)
            .map_err(|e| anyhow::anyhow!("creating etcd's CA: {}", e.0))?;
        let now = time::OffsetDateTime::now_utc();
        let (from, until) = (now - time::Duration::hours(1), now + time::Duration::days(1));
        let sans = ["127.0.0.1".to_string(), "localhost".to_string()];
        let write = |name: &str, (crt, key): (String, String)| -> anyhow::Result<(PathBuf, PathBuf)> {
            let (c, k) = (
                pki_dir.join(format!("{name}.crt")),
                pki_dir.join(format!("{name}.key")),
            );
            std::fs::write(&c, crt)?;
            std::fs::write(&k, key)?;
            Ok((c, k))
        };
        let issue = |cn: &str, server: bool| {
            ca.issue(cn, &[], &sans, server, from, until)
                .map_err(|e| anyhow::anyhow!("issuing {cn}: {}", e.0))
        };
        let server = write("etcd-server", issue("etcd", true)?)?;
        let client = write("etcd-client", issue("rkube-apiserver", false)?)?;
        let pki = EtcdPki {
            ca: pki_dir.join("ca.crt"),
            client_cert: client.0,
            client_key: client.1,
        };
        let mut etcd = Self::launch(&etcd_bin(), temp.path(), Some((pki, server)), Vec::new()).await?;
        etcd._temp = Some(temp);
        Ok(etcd)
    }

    async fn launch(
        bin: &Path,
        dir: &Path,
        tls: Option<(EtcdPki, (PathBuf, PathBuf))>,
        flags: Vec<std::ffi::OsString>,
    ) -> anyhow::Result<Etcd> {
        let version = Command::new(bin).arg("--version").output().with_context(|| {
            format!(
                "cannot run {}: install Debian's etcd-server (`apt-get install etcd-server`, \
                     or `make deps`) or pass --etcd-bin",
                bin.display()
            )
        })?;
        let version = String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("etcd (unknown version)")
            .to_string();
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut etcd = Etcd {
            child: None,
            endpoint: format!("{scheme}://127.0.0.1:{client_port}"),
            version,
            pki: None,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            peer: format!("http://127.0.0.1:{peer_port}"),
            log: dir.join("etcd.log"),
            flags,
            _temp: None,
        };
        let mut tls_args = Vec::new();
        if let Some((pki, (cert, key))) = tls {
            tls_args = vec![
                "--cert-file".into(),
                cert.into_os_string(),
                "--key-file".into(),
                key.into_os_string(),
                "--trusted-ca-file".into(),
                pki.ca.clone().into_os_string(),
                "--client-cert-auth".into(),
            ];
            etcd.pki = Some(pki);
        }
        etcd.spawn(&tls_args)?;
        etcd.wait_ready().await?;
        Ok(etcd)
    }

    fn spawn(&mut self, extra: &[std::ffi::OsString]) -> anyhow::Result<()> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot create {}", self.log.display()))?;
        let child = Command::new(&self.bin)
            .arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--listen-client-urls")
            .arg(&self.endpoint)
            .arg("--advertise-client-urls")
            .arg(&self.endpoint)
            .arg("--listen-peer-urls")
            .arg(&self.peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&self.peer)
            .arg("--initial-cluster")
            .arg(format!("default={}", self.peer))
            .args(extra)
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// A client of this etcd (with the client certificate when it serves TLS).
    pub async fn client(&self) -> anyhow::Result<etcd_client::Client> {
        let mut options = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        if let Some(pki) = &self.pki {
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(&pki.ca)?))
                .identity(etcd_client::Identity::from_pem(
                    std::fs::read(&pki.client_cert)?,
                    std::fs::read(&pki.client_key)?,
                ));
            options = options.with_tls(tls);
        }
        Ok(etcd_client::Client::connect([&self.endpoint], Some(options)).await?)
    }

    /// SIGKILL, as a crash or a power cut would; the data stays for [`Etcd::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same member again on its data and ports and waits until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let mut tls_args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(pki) = &self.pki {
            let dir = pki.ca.parent().context("the CA has a directory")?;
            tls_args = vec![
                "--cert-file".into(),
                dir.join("etcd-server.crt").into_os_string(),
                "--key-file".into(),
                dir.join("etcd-server.key").into_os_string(),
                "--trusted-ca-file".into(),
                pki.ca.clone().into_os_string(),
                "--client-cert-auth".into(),
            ];
        }
        self.spawn(&tls_args)?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!(
                        "etcd exited with {status} before answering; its log:\n{}",
                        self.log_tail()
                    );
                }
            }
            let attempt = tokio::time::timeout(Duration::from_secs(1), async {
                let mut client = self.client().await?;
                client.status().await?;
                anyhow::Ok(())
            })
            .await;
            if let Ok(Ok(())) = attempt {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "etcd did not answer on {} within 20 s; its log:\n{}",
                    self.endpoint,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines etcd logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
