//! `rkubectl logs` and `rkubectl exec` end to end: the built rkubectl binary, run as a user
//! runs it, against an in-process apiserver that proxies to a real kubelet on a throwaway
//! containerd inside a test network namespace (`rkube_kubelet::testing`).

use std::process::Stdio;
use std::time::Duration;

use rkube_api::core::v1::Pod;
use rkube_client::{Api, Client};
use rkube_kubelet::testing::{TestNode, TestRegistry};
use rkube_testing::{eventually, TestApiServer};
use tokio::io::AsyncReadExt as _;

struct Cluster {
    kubelet: Option<rkube_kubelet::RunningKubelet>,
    api: Option<TestApiServer>,
    client: Client,
    image: String,
    _registry: TestRegistry,
    home: tempfile::TempDir,
    // Last: its drop kills every container and removes the namespace.
    node: TestNode,
}

impl Cluster {
    async fn start() -> anyhow::Result<Cluster> {
        let node = TestNode::start().await?;
        let registry = TestRegistry::start().await?;
        let (image, _) = registry.push_busybox("rkube/busybox").await?;
        let home = tempfile::tempdir()?;
        let api = TestApiServer::start().await?;
        let mut config = rkube_kubelet::Config::for_test_node(
            &node,
            api.url().to_string(),
            "node-a",
            [127, 0, 0, 1].into(),
            Some("10.244.9.0/24"),
        );
        config.crashloop_backoff_base = Duration::from_millis(300);
        config.crashloop_backoff_max = Duration::from_secs(1);
        config.pod_poll_interval = Duration::from_millis(200);
        let kubelet = rkube_kubelet::start(config).await?;
        Ok(Cluster {
            kubelet: Some(kubelet),
            client: api.client(),
            api: Some(api),
            image,
            _registry: registry,
            home,
            node,
        })
    }

    fn rkubectl(&self, args: &[&str]) -> tokio::process::Command {
        let url = self.api.as_ref().expect("apiserver").url();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_rkubectl"));
        cmd.env("HOME", self.home.path())
            .env_remove("RKUBECONFIG")
            .env_remove("RKUBE_SERVER")
            .arg("--server")
            .arg(url)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs rkubectl to completion: (exit code, stdout, stderr).
    async fn run(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let out = tokio::time::timeout(Duration::from_secs(30), self.rkubectl(args).output()).await??;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Runs rkubectl until its output satisfies `check` (within 30 s).
    async fn run_until(&self, args: &[&str], check: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let what = format!("rkubectl {args:?} to print what is expected");
        eventually(&what, Duration::from_secs(30), || async {
            let (code, out, err) = self.run(args).await?;
            if code == 0 && check(&out) {
                Ok(Some(out))
            } else {
                Err(anyhow::anyhow!("exit {code}\n{out}\n{err}"))
            }
        })
        .await
    }

    async fn create_pod(&self, yaml: &str) -> anyhow::Result<()> {
        let mut pod: Pod = serde_yaml::from_str(&yaml.replace("IMAGE", &self.image))?;
        pod.spec.get_or_insert_with(Default::default).node_name = "node-a".into();
        Api::<Pod>::namespaced(self.client.clone(), "default")
            .create(&pod)
            .await?;
        Ok(())
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(k) = self.kubelet.take() {
            k.stop().await;
        }
        if let Some(api) = self.api.take() {
            api.stop().await?;
        }
        drop(self.node);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rkubectl_logs_follows_tails_shows_the_previous_container_and_exec_gets_a_terminal(
) -> anyhow::Result<()> {
    if let Some(reason) = rkube_kubelet::testing::skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return Ok(());
    }
    let c = Cluster::start().await?;
    c.create_pod(
        r#"
metadata: {name: talker}
spec:
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c]
    args:
    - |
      for i in 1 2 3 4 5; do echo "line $i"; done
      while true; do
        if [ -f /tmp/more ]; then rm /tmp/more; echo appended; fi
        sleep 0.1
      done
"#,
    )
    .await?;
    c.create_pod(
        r#"
metadata: {name: restarter}
spec:
  volumes: [{name: state, emptyDir: {}}]
  containers:
  - name: main
    image: IMAGE
    volumeMounts: [{name: state, mountPath: /state}]
    command: [sh, -c]
    args:
    - |
      n=$(( $(cat /state/runs 2>/dev/null || echo 0) + 1 )); echo $n > /state/runs
      echo "run $n"
      if [ $n -ge 2 ]; then exec sleep 3600; fi
      exit 1
"#,
    )
    .await?;

    // --tail N: the last N lines.
    let tail = c
        .run_until(&["logs", "talker", "--tail", "2"], |o| o.contains("line 5"))
        .await?;
    assert_eq!(tail, "line 4\nline 5\n");

    // -f: the stream stays open and a line written later arrives on it.
    let mut follow = c
        .rkubectl(&["logs", "-f", "talker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = follow.stdout.take().expect("piped");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("line 5\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), stdout.read(&mut buf)).await??;
        anyhow::ensure!(
            n > 0,
            "rkubectl logs -f ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    let (code, _, err) = c.run(&["exec", "talker", "--", "touch", "/tmp/more"]).await?;
    assert_eq!(code, 0, "{err}");
    while !String::from_utf8_lossy(&seen).contains("appended\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), stdout.read(&mut buf)).await??;
        anyhow::ensure!(
            n > 0,
            "rkubectl logs -f ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        String::from_utf8_lossy(&seen),
        "line 1\nline 2\nline 3\nline 4\nline 5\nappended\n"
    );
    assert!(
        follow.try_wait()?.is_none(),
        "rkubectl logs -f must keep running while the container does"
    );
    follow.kill().await?;

    // --previous: the output of the container before the restart.
    let current = c
        .run_until(&["logs", "restarter"], |o| o.contains("run 2"))
        .await?;
    assert_eq!(current, "run 2\n");
    let (code, previous, err) = c.run(&["logs", "restarter", "--previous"]).await?;
    assert_eq!((code, previous.as_str()), (0, "run 1\n"), "{err}");
    // A container that never restarted has no previous log: a clear error, exit 1.
    let (code, _, err) = c.run(&["logs", "talker", "-p"]).await?;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("previous terminated container"), "{err}");

    // exec -it: a shell on a terminal; input piped here, so no raw mode on our side.
    let mut shell = c
        .rkubectl(&["exec", "-it", "talker", "--", "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = shell.stdin.take().expect("piped");
        stdin.write_all(b"tty; echo $((6*7)); exit\n").await?;
    }
    let out = tokio::time::timeout(Duration::from_secs(30), shell.wait_with_output()).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A terminal: the shell's stdin is a pty, and output lines end in CR LF.
    assert!(stdout.contains("/dev/pts/"), "{stdout:?}");
    assert!(stdout.contains("\r\n42\r\n"), "{stdout:?}");
    c.stop().await
}
