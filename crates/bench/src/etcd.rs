//! A throwaway etcd on loopback: fresh data directory, free ports, default
//! durability (fsync on every commit). The guard kills it when dropped, also
//! when the benchmark fails or panics.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Etcd {
    child: Child,
    /// `http://127.0.0.1:PORT`, for clients.
    pub endpoint: String,
    pub version: String,
    log: PathBuf,
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

impl Etcd {
    /// Starts `bin` with its data in `dir/data` and its log in `dir/etcd.log`
    /// and waits (at most 20 s) until it answers.
    pub async fn start(bin: &Path, dir: &Path) -> anyhow::Result<Etcd> {
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
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = dir.join("etcd.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(bin)
            .arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen-client-urls")
            .arg(&endpoint)
            .arg("--advertise-client-urls")
            .arg(&endpoint)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("default={peer}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut etcd = Etcd {
            child,
            endpoint,
            version,
            log,
        };
        etcd.wait_ready().await?;
        Ok(etcd)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "etcd exited with {status} before answering; its log:\n{}",
                    self.log_tail()
                );
            }
            let attempt = tokio::time::timeout(Duration::from_secs(1), async {
                let mut client = etcd_client::Client::connect([&self.endpoint], None).await?;
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

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
