//! A throwaway etcd on loopback (Debian's `etcd-server`): fresh data directory, free
//! ports, default durability (fsync on every commit), optionally TLS with client
//! certificates from a CA made for it. The guard kills it when dropped, also when a test
//! or the benchmark fails or panics; [`Etcd::kill`] and [`Etcd::restart`] let tests take
//! it away and bring it back on the same ports and data. [`EtcdCluster`] is several such
//! members forming one cluster, with peer and client TLS, as operators run etcd.

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
    /// The member's name in its cluster (`default` when alone).
    pub name: String,
    bin: PathBuf,
    dir: PathBuf,
    peer: String,
    log: PathBuf,
    /// Flags besides the name, data directory and URLs (TLS, the initial cluster), given
    /// again on [`Etcd::restart`].
    args: Vec<std::ffi::OsString>,
    /// The temporary directory of [`Etcd::temp`], removed after the process is gone.
    _temp: Option<tempfile::TempDir>,
}

/// `etcd --version`'s first line; the error says how to install etcd.
fn etcd_version(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin).arg("--version").output().with_context(|| {
        format!(
            "cannot run {}: install Debian's etcd-server (`apt-get install etcd-server`, \
                 or `make deps`) or pass --etcd-bin",
            bin.display()
        )
    })?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("etcd (unknown version)")
        .to_string())
}

/// A CA made in `dir/pki` with rkube's PKI code, and what it signed for 127.0.0.1 and
/// localhost: a client certificate (the apiserver's), a serving certificate and a peer
/// certificate (serving and client at once, as members dial each other with it). Returns
/// the client side, and the (certificate, key) files of the serving and peer ones.
type CertFiles = (PathBuf, PathBuf);
fn make_pki(dir: &Path) -> anyhow::Result<(EtcdPki, CertFiles, CertFiles)> {
    let pki_dir = dir.join("pki");
    std::fs::create_dir_all(&pki_dir)?;
    let (ca, _) = rkube_client::pki::CertificateAuthority::load_or_create(&pki_dir)
        .map_err(|e| anyhow::anyhow!("creating etcd's CA: {}", e.0))?;
    let now = time::OffsetDateTime::now_utc();
    let (from, until) = (now - time::Duration::hours(1), now + time::Duration::days(1));
    let sans = ["127.0.0.1".to_string(), "localhost".to_string()];
    let write = |name: &str, (crt, key): (String, String)| -> anyhow::Result<CertFiles> {
        let (c, k) = (
            pki_dir.join(format!("{name}.crt")),
            pki_dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, crt)?;
        std::fs::write(&k, key)?;
        Ok((c, k))
    };
    fn failed(cn: &str) -> impl FnOnce(rkube_client::pki::PkiError) -> anyhow::Error + '_ {
        move |e| anyhow::anyhow!("issuing {cn}: {}", e.0)
    }
    let server = write(
        "etcd-server",
        ca.issue("etcd", &[], &sans, true, from, until)
            .map_err(failed("etcd"))?,
    )?;
    let peer = write(
        "etcd-peer",
        ca.issue_peer("etcd-peer", &sans, from, until)
            .map_err(failed("etcd-peer"))?,
    )?;
    let client = write(
        "etcd-client",
        ca.issue("rkube-apiserver", &[], &sans, false, from, until)
            .map_err(failed("rkube-apiserver"))?,
    )?;
    let pki = EtcdPki {
        ca: pki_dir.join("ca.crt"),
        client_cert: client.0,
        client_key: client.1,
    };
    Ok((pki, server, peer))
}

/// etcd's flags for https to clients that must show a certificate `pki`'s CA signed.
fn client_tls_args(pki: &EtcdPki, cert: &Path, key: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "--cert-file".into(),
        cert.into(),
        "--key-file".into(),
        key.into(),
        "--trusted-ca-file".into(),
        pki.ca.clone().into_os_string(),
        "--client-cert-auth".into(),
    ]
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

    /// [`Etcd::temp`] with more flags (`--quota-backend-bytes N`, ...), kept across
    /// restarts.
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
        let (pki, server, _) = make_pki(temp.path())?;
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
        let version = etcd_version(bin)?;
        let [client_port, peer_port] = crate::free_ports(2)?[..] else {
            unreachable!("two ports asked for")
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut etcd = Etcd::new(
            bin,
            dir,
            version,
            "default",
            format!("{scheme}://127.0.0.1:{client_port}"),
            format!("http://127.0.0.1:{peer_port}"),
        )?;
        etcd.args = vec![
            "--initial-cluster".into(),
            format!("default={}", etcd.peer).into(),
        ];
        if let Some((pki, (cert, key))) = tls {
            etcd.args.extend(client_tls_args(&pki, &cert, &key));
            etcd.pki = Some(pki);
        }
        etcd.args.extend(flags);
        etcd.spawn()?;
        etcd.wait_ready().await?;
        Ok(etcd)
    }

    /// A member not started yet, its data in `dir/data` and its log in `dir/etcd.log`.
    fn new(
        bin: &Path,
        dir: &Path,
        version: String,
        name: &str,
        endpoint: String,
        peer: String,
    ) -> anyhow::Result<Etcd> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Etcd {
            child: None,
            endpoint,
            version,
            pki: None,
            name: name.to_string(),
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            peer,
            log: dir.join("etcd.log"),
            args: Vec::new(),
            _temp: None,
        })
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot create {}", self.log.display()))?;
        let child = Command::new(&self.bin)
            .arg("--name")
            .arg(&self.name)
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
            .args(&self.args)
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
        self.spawn()?;
        self.wait_ready().await
    }

    /// Whether its process runs (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
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

/// Several etcd members forming one cluster on loopback, each its own process with its own
/// data directory, TLS between members (peer certificates checked both ways) and to
/// clients (client certificates required), as operators run etcd. Members can be killed
/// and restarted one by one; the guard kills them all when dropped.
pub struct EtcdCluster {
    pub members: Vec<Etcd>,
    /// The CA and the client certificate the members accept.
    pub pki: EtcdPki,
    _temp: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `n` members in a temporary directory (removed on drop) and waits until every
    /// one answers and the cluster has a leader.
    pub async fn start_tls(n: usize) -> anyhow::Result<EtcdCluster> {
        let temp = tempfile::tempdir()?;
        let (pki, (server_crt, server_key), (peer_crt, peer_key)) = make_pki(temp.path())?;
        let bin = etcd_bin();
        let version = etcd_version(&bin)?;
        let ports = crate::free_ports(2 * n)?;
        let mut members = Vec::new();
        for i in 0..n {
            members.push(Etcd::new(
                &bin,
                &temp.path().join(format!("member-{i}")),
                version.clone(),
                &format!("member-{i}"),
                format!("https://127.0.0.1:{}", ports[2 * i]),
                format!("https://127.0.0.1:{}", ports[2 * i + 1]),
            )?);
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.args = vec![
                "--initial-cluster".into(),
                initial_cluster.clone().into(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                "rkube-test".into(),
                "--peer-cert-file".into(),
                peer_crt.clone().into(),
                "--peer-key-file".into(),
                peer_key.clone().into(),
                "--peer-trusted-ca-file".into(),
                pki.ca.clone().into(),
                "--peer-client-cert-auth".into(),
            ];
            m.args.extend(client_tls_args(&pki, &server_crt, &server_key));
            m.pki = Some(pki.clone());
            // all at once: a member waits for its peers before it answers
            m.spawn()?;
        }
        for m in &mut members {
            m.wait_ready().await?;
        }
        let cluster = EtcdCluster {
            members,
            pki,
            _temp: temp,
        };
        cluster.wait_for_leader(Duration::from_secs(20)).await?;
        Ok(cluster)
    }

    /// Every member's client URL, as `--etcd-servers` takes them.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint.clone()).collect()
    }

    /// The index of the member that leads now, as the running members report it.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        let mut last = String::from("no member answered");
        for m in &self.members {
            let status = tokio::time::timeout(Duration::from_secs(2), async {
                m.client().await?.status().await.map_err(anyhow::Error::from)
            })
            .await;
            match status {
                Ok(Ok(status)) if status.leader() != 0 => {
                    let leader = status.leader();
                    for (i, other) in self.members.iter().enumerate() {
                        let id = tokio::time::timeout(Duration::from_secs(2), async {
                            anyhow::Ok(
                                other
                                    .client()
                                    .await?
                                    .status()
                                    .await?
                                    .header()
                                    .map(|h| h.member_id()),
                            )
                        })
                        .await;
                        if let Ok(Ok(Some(id))) = id {
                            if id == leader {
                                return Ok(i);
                            }
                        }
                    }
                    last = format!("{} names leader {leader:x}, which did not answer", m.name);
                }
                Ok(Ok(_)) => last = format!("{} knows no leader", m.name),
                Ok(Err(e)) => last = format!("{}: {e:#}", m.name),
                Err(_) => last = format!("{} did not answer within 2 s", m.name),
            }
        }
        anyhow::bail!("no etcd leader: {last}")
    }

    /// Waits until the running members have elected a leader; returns its index.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        crate::eventually("an etcd leader", timeout, || async {
            self.leader().await.map(Some)
        })
        .await
    }
}
