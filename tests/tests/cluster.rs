//! The control plane and a real node together: pods created without a node
//! are placed by the scheduler, created by the Deployment and ReplicaSet
//! controllers, and run by the kubelet in real containers; logs and exec
//! reach them through the apiserver, over gRPC and, from the real kubectl,
//! over REST (exec with exit codes and stdin, port-forward, attach).

use futures::StreamExt;
use rkube_api::apps::v1::Deployment;
use rkube_api::core::v1::Pod;
use rkube_api::kubelet::v1::{exec_input::Input, exec_output::Output, ExecInput, ExecStart};
use rkube_client::{Api, ListParams};
use rkube_kubelet::testing::{skip_reason, TestNode, TestRegistry};
use rkube_testing::{eventually, Daemon};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployment_without_nodes_named_is_scheduled_and_runs_on_a_real_kubelet() -> anyhow::Result<()> {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return Ok(());
    }
    let node = TestNode::start().await?;
    let registry = TestRegistry::start().await?;
    let (image, _) = registry.push_busybox("rkube/busybox").await?;
    // secure as users run it: TLS, every daemon with its own certificate, RBAC
    let dir = tempfile::tempdir()?;
    let pki = dir.path().join("pki");
    rkube_e2e::generate_pki(&pki, &[], &["node-a".to_string()])?;
    let api = rkube_e2e::start_apiserver(&pki, "127.0.0.1:0".parse()?).await?;
    let url = api.url().to_string();
    assert!(url.starts_with("https://"), "{url}");
    let conf = |stem: &str| Some(pki.join(format!("{stem}.conf")));

    // the kubelet, as its own tests start it, on the test's node namespace
    let mut kcfg = rkube_kubelet::Config::for_test_node(
        &node,
        url.clone(),
        "node-a",
        [127, 0, 0, 1].into(),
        Some("10.244.9.0/24"),
    );
    kcfg.kubeconfig = conf("node-node-a");
    kcfg.node_status_update_frequency = Duration::from_secs(1);
    let kubelet = rkube_kubelet::start(kcfg).await?;

    // the scheduler and the controller-manager through the same run() as their mains
    let mut scheduler_config = rkube_scheduler::Config::new(url.clone());
    scheduler_config.kubeconfig = conf("kube-scheduler");
    let scheduler = Daemon::spawn(|stop| rkube_scheduler::run(scheduler_config, stop));
    let mut cm_config = rkube_controller_manager::Config::new(url.clone());
    cm_config.kubeconfig = conf("kube-controller-manager");
    cm_config.controllers = vec!["replicaset".into(), "deployment".into()];
    let cm = Daemon::spawn(|stop| rkube_controller_manager::run(cm_config, stop));

    let client = api.client();
    let deployment: Deployment = serde_yaml::from_str(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: httpd
        image: {image}
        command: ["sh", "-c", "echo ready; exec sleep 3600"]
        resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
"#
    ))?;
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&deployment)
        .await?;

    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let running = eventually("2 pods Running", Duration::from_secs(60), || async {
        let list = pods
            .list(&ListParams {
                label_selector: "app=web".into(),
                ..Default::default()
            })
            .await?;
        let running: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .is_some_and(|s| s.phase == "Running" && !s.pod_ip.is_empty())
            })
            .collect();
        anyhow::ensure!(running.len() == 2, "{} Running", running.len());
        Ok(Some(running))
    })
    .await?;
    for p in &running {
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(
            spec.node_name, "node-a",
            "the scheduler placed it on the only node"
        );
        let scheduled = p
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.r#type == "PodScheduled" && c.status == "True");
        assert!(scheduled, "PodScheduled=True on {}", rkube_api::Resource::name(p));
        let owner = &p.metadata.as_ref().unwrap().owner_references[0];
        assert_eq!(owner.kind, "ReplicaSet");
    }
    // logs and exec go through the apiserver to the kubelet, as rkubectl's do
    let name = rkube_api::Resource::name(&running[0]).to_string();
    let mut log = Vec::new();
    let mut chunks = client
        .logs(rkube_api::kubelet::v1::LogsRequest {
            namespace: "default".into(),
            pod: name.clone(),
            ..Default::default()
        })
        .await?;
    while let Some(chunk) = chunks.next().await {
        log.extend_from_slice(&chunk?);
    }
    assert_eq!(String::from_utf8_lossy(&log), "ready\n");
    let start = ExecInput {
        input: Some(Input::Start(ExecStart {
            namespace: "default".into(),
            pod: name.clone(),
            command: vec!["sh".into(), "-c".into(), "hostname; exit 5".into()],
            ..Default::default()
        })),
    };
    let mut out = client.exec(futures::stream::iter(vec![start])).await?;
    let (mut stdout, mut code) = (Vec::new(), None);
    while let Some(o) = out.next().await {
        match o? {
            Output::Stdout(b) => stdout.extend(b),
            Output::ExitCode(c) => code = Some(c),
            Output::Stderr(_) => {}
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&stdout).trim(),
        name,
        "the pod's hostname is its name"
    );
    assert_eq!(code, Some(5));

    // the same through the real kubectl, over the REST face
    kubectl_streams_reach_a_real_container(&url, &pki.join("admin.conf"), dir.path(), &name).await?;
    // and kubectl top reads the kubelet's cgroup samples through metrics.k8s.io
    // (without kubectl, the streams part above says it skipped)
    if Path::new(KUBECTL).exists() {
        kubectl_top_shows_the_node_and_its_pods(&url, &pki.join("admin.conf"), dir.path(), &name).await?;
    }
    kubectl_attach_follows_a_running_container(&url, &pki.join("admin.conf"), dir.path(), &pods, &image)
        .await?;
    kubectl_attach_sends_stdin_and_resizes_the_terminal(
        &url,
        &pki.join("admin.conf"),
        dir.path(),
        &pods,
        &image,
    )
    .await?;

    let d = Api::<Deployment>::namespaced(client.clone(), "default");
    eventually(
        "the Deployment to report 2 ready replicas",
        Duration::from_secs(30),
        || async {
            let status = d.get("web").await?.status.unwrap_or_default();
            anyhow::ensure!(
                status.ready_replicas == 2 && status.available_replicas == 2,
                "{status:?}"
            );
            Ok(true)
        },
    )
    .await?;

    cm.stop().await?;
    scheduler.stop().await?;
    kubelet.stop().await;
    api.stop().await?;
    drop(node);
    Ok(())
}

const KUBECTL: &str = "/usr/bin/kubectl";

/// `kubectl ARGS` as the administrator: exit code, stdout, stderr.
async fn kubectl(
    url: &str,
    kubeconfig: &Path,
    home: &Path,
    stdin: Option<&[u8]>,
    args: &[&str],
) -> anyhow::Result<(Option<i32>, String, String)> {
    let mut child = kubectl_command(url, kubeconfig, home, args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data).await?;
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("kubectl {args:?} took over 60s"))??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn kubectl_command(url: &str, kubeconfig: &Path, home: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(KUBECTL);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--server")
        .arg(url)
        .arg("--cache-dir")
        .arg(home.join("kubectl-cache"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// `kubectl top nodes`, `top pods` and `top pod --containers`: the
/// kubelet's cgroup samples through the metrics.k8s.io API, as from
/// metrics-server.
async fn kubectl_top_shows_the_node_and_its_pods(
    url: &str,
    kubeconfig: &Path,
    home: &Path,
    pod: &str,
) -> anyhow::Result<()> {
    // the rows of a `kubectl top` table, split into columns, header first
    let top = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = kubectl(url, kubeconfig, home, None, &args).await?;
        anyhow::ensure!(code == Some(0), "kubectl {args:?}: {out}{err}");
        let rows: Vec<Vec<String>> = out
            .lines()
            .map(|l| l.split_whitespace().map(String::from).collect())
            .collect();
        Ok::<_, anyhow::Error>(rows)
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let quantity = |q: &str, unit: &str| q.strip_suffix(unit).is_some_and(|n| n.parse::<u64>().is_ok());

    let nodes = top(args(&["top", "nodes"])).await?;
    assert_eq!(
        nodes[0],
        ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"],
        "{nodes:?}"
    );
    let row = nodes.iter().find(|r| r[0] == "node-a").expect("the node's row");
    assert_eq!(row.len(), 5, "{nodes:?}");
    assert!(quantity(&row[1], "m") && quantity(&row[3], "Mi"), "{row:?}");
    assert!(row[3] != "0Mi", "a running node uses memory: {row:?}");
    assert!(quantity(&row[2], "%") && quantity(&row[4], "%"), "{row:?}");
    let one = top(args(&["top", "node", "node-a"])).await?;
    assert_eq!((one.len(), one[1][0].as_str()), (2, "node-a"), "{one:?}");

    // both web pods, once the kubelet has sampled their containers
    let pods = eventually(
        "kubectl top pods to show both web pods",
        Duration::from_secs(30),
        || async {
            let pods = top(args(&["top", "pods", "-l", "app=web"])).await?;
            anyhow::ensure!(pods.len() == 3, "{pods:?}");
            Ok(Some(pods))
        },
    )
    .await?;
    assert_eq!(pods[0], ["NAME", "CPU(cores)", "MEMORY(bytes)"]);
    let row = pods.iter().find(|r| r[0] == pod).expect("the pod's row");
    assert!(quantity(&row[1], "m") && quantity(&row[2], "Mi"), "{pods:?}");

    let containers = top(args(&["top", "pod", pod, "--containers"])).await?;
    assert_eq!(containers[0], ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]);
    assert_eq!(containers.len(), 2, "{containers:?}");
    assert_eq!(containers[1][..2], [pod.to_string(), "httpd".to_string()]);
    assert!(quantity(&containers[1][2], "m") && quantity(&containers[1][3], "Mi"));

    // every namespace; a selector that matches nothing is kubectl's own message
    let all = top(args(&["top", "pods", "-A"])).await?;
    assert!(
        all.iter()
            .any(|r| r[..2] == ["default".to_string(), pod.to_string()]),
        "{all:?}"
    );
    let (code, out, err) = kubectl(url, kubeconfig, home, None, &["top", "pods", "-l", "app=none"]).await?;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.contains("No resources found"), "{out}{err}");
    Ok(())
}

/// kubectl exec (WebSocket v5: exit codes, stdin and its end, stderr apart)
/// and kubectl port-forward (SPDY in WebSocket) into a running busybox pod.
async fn kubectl_streams_reach_a_real_container(
    url: &str,
    kubeconfig: &Path,
    home: &Path,
    pod: &str,
) -> anyhow::Result<()> {
    if !Path::new(KUBECTL).exists() {
        eprintln!("SKIPPED the kubectl part: {KUBECTL} is missing (see NOTES-platform.md)");
        return Ok(());
    }
    let run = |stdin: Option<&'static [u8]>, args: Vec<&'static str>| {
        let mut all = vec!["exec"];
        if stdin.is_some() {
            all.push("-i");
        }
        all.push(pod);
        all.push("--");
        all.extend(args);
        let all: Vec<String> = all.into_iter().map(String::from).collect();
        async move {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            kubectl(url, kubeconfig, home, stdin, &args).await
        }
    };
    let (code, out, err) = run(None, vec!["sh", "-c", "exit 3"]).await?;
    assert_eq!(code, Some(3), "stdout: {out}\nstderr: {err}");
    let (code, out, err) = run(Some(b"hi\n"), vec!["cat"]).await?;
    assert_eq!((code, out.as_str()), (Some(0), "hi\n"), "stderr: {err}");
    let (code, out, err) = run(None, vec!["sh", "-c", "echo out; echo err >&2"]).await?;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (Some(0), "out\n", "err\n"),
        "stdout and stderr apart"
    );

    // a client that goes away ends its command in the pod
    let mut left = kubectl_command(
        url,
        kubeconfig,
        home,
        &[
            "exec",
            pod,
            "--",
            "sh",
            "-c",
            "echo $$ > /tmp/left.pid; exec sleep 1000",
        ],
    )
    .stdin(Stdio::null())
    .spawn()?;
    let alive = || async {
        let (code, _, err) = run(
            None,
            vec![
                "sh",
                "-c",
                "test -s /tmp/left.pid && kill -0 $(cat /tmp/left.pid)",
            ],
        )
        .await?;
        anyhow::Ok((code, err))
    };
    eventually("the command to start", Duration::from_secs(30), || async {
        let (code, err) = alive().await?;
        anyhow::ensure!(code == Some(0), "not running yet: {err}");
        Ok(true)
    })
    .await?;
    left.start_kill()?;
    let _ = left.wait().await;
    eventually(
        "the command to end with its client",
        Duration::from_secs(30),
        || async {
            let (code, _) = alive().await?;
            anyhow::ensure!(code != Some(0), "still running");
            Ok(true)
        },
    )
    .await?;

    // kubectl cp is tar over exec's stdin and stdout
    let local = home.join("copied.txt");
    std::fs::write(&local, "copied by kubectl cp\n")?;
    let dest = format!("{pod}:/tmp/copied.txt");
    let local_arg = local.to_string_lossy().into_owned();
    let (code, _, err) = kubectl(url, kubeconfig, home, None, &["cp", &local_arg, &dest]).await?;
    assert_eq!(code, Some(0), "kubectl cp: {err}");
    let (_, out, err) = run(None, vec!["cat", "/tmp/copied.txt"]).await?;
    assert_eq!(out, "copied by kubectl cp\n", "{err}");

    // a web server in the pod, on its loopback only: port-forward reaches
    // 127.0.0.1 inside the pod, as Kubernetes' does
    let (code, _, err) = run(
        None,
        vec![
            "sh",
            "-c",
            "mkdir -p /tmp/www && echo hello from the pod > /tmp/www/index.html && httpd -p 127.0.0.1:8080 -h /tmp/www",
        ],
    )
    .await?;
    assert_eq!(code, Some(0), "starting httpd: {err}");
    let target = format!("pod/{pod}");
    let kubectl = kubectl_command(url, kubeconfig, home, &["port-forward", &target, ":8080"]);
    get_through_port_forward("kubectl", kubectl).await?;
    // rkubectl's, over gRPC
    let mut rkubectl = tokio::process::Command::new(rkube_e2e::rkubectl_binary()?);
    rkubectl
        .arg("--config")
        .arg(kubeconfig)
        .arg("--server")
        .arg(url)
        .args(["port-forward", &target, ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    get_through_port_forward("rkubectl", rkubectl).await
}

/// Starts `cmd` (a port-forward to the pod's 8080), reads where it listens
/// ("Forwarding from 127.0.0.1:LOCAL -> 8080") and fetches the page twice
/// through it.
async fn get_through_port_forward(what: &str, mut cmd: tokio::process::Command) -> anyhow::Result<()> {
    let mut child = cmd.stdin(Stdio::null()).spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let local: u16 = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("{what} port-forward did not say where it listens"))??
            .ok_or_else(|| anyhow::anyhow!("{what} port-forward exited"))?;
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            break rest.split(' ').next().unwrap_or("").parse()?;
        }
    };
    for _ in 0..2 {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", local)).await?;
        conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await?;
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut answer))
            .await
            .map_err(|_| anyhow::anyhow!("no answer through {what} port-forward"))??;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{what}: {answer}");
        assert!(answer.ends_with("hello from the pod\n"), "{what}: {answer}");
    }
    child.start_kill()?;
    let _ = child.wait().await;
    Ok(())
}

/// kubectl attach to a container printing a line every 100 ms: its lines as
/// they come (stdout and stderr apart), until it exits; `-i` is refused, as
/// the container has no stdin.
async fn kubectl_attach_follows_a_running_container(
    url: &str,
    kubeconfig: &Path,
    home: &Path,
    pods: &Api<Pod>,
    image: &str,
) -> anyhow::Result<()> {
    if !Path::new(KUBECTL).exists() {
        return Ok(());
    }
    let pod: Pod = serde_yaml::from_str(&format!(
        r#"
metadata: {{name: ticker, namespace: default}}
spec:
  restartPolicy: Never
  containers:
  - name: ticker
    image: {image}
    command: ["sh", "-c", "i=0; while [ ! -e /tmp/stop ]; do echo tick $i; echo tock $i >&2; i=$((i+1)); sleep 0.1; done; echo bye"]
"#
    ))?;
    pods.create(&pod).await?;
    eventually("the ticker to run", Duration::from_secs(60), || async {
        let p = pods.get("ticker").await?;
        let phase = p.status.map(|s| s.phase).unwrap_or_default();
        anyhow::ensure!(phase == "Running", "phase {phase:?}");
        Ok(true)
    })
    .await?;

    let (code, _, err) = kubectl(url, kubeconfig, home, Some(b"x\n"), &["attach", "-i", "ticker"]).await?;
    assert_ne!(code, Some(0), "a container without stdin refuses input: {err}");
    assert!(err.contains("set `stdin: true`"), "{err}");

    let mut child = kubectl_command(url, kubeconfig, home, &["attach", "ticker"])
        .stdin(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut stderr = child.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let errors = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let tick = |line: &str| -> anyhow::Result<u64> {
        let n = line
            .strip_prefix("tick ")
            .ok_or_else(|| anyhow::anyhow!("not a tick: {line:?}"))?;
        Ok(n.parse()?)
    };
    let first = tick(&next_line(&mut lines).await?)?;
    for i in 1..=5 {
        assert_eq!(
            tick(&next_line(&mut lines).await?)?,
            first + i,
            "lines in order, as they come"
        );
    }
    // the container ends: its last lines, then kubectl's success
    let (code, _, err) = kubectl(
        url,
        kubeconfig,
        home,
        None,
        &["exec", "ticker", "--", "touch", "/tmp/stop"],
    )
    .await?;
    assert_eq!(code, Some(0), "{err}");
    let mut last = String::new();
    while let Ok(line) = next_line(&mut lines).await {
        last = line;
    }
    assert_eq!(last, "bye", "the output up to the container's end");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    let errors = errors.await?;
    assert!(status.success(), "kubectl attach: {status}: {errors}");
    assert!(
        errors.contains(&format!("tock {}\n", first + 1)),
        "stderr apart: {errors}"
    );
    Ok(())
}

/// `kubectl attach -i` writes to the main process's stdin: with `stdinOnce`
/// the end of kubectl's input is the process's end of input (and the pod
/// completes); without it the stdin outlives the session, so a second attach
/// talks to the same process; `-it` gives the container's terminal, sized as
/// kubectl's.
async fn kubectl_attach_sends_stdin_and_resizes_the_terminal(
    url: &str,
    kubeconfig: &Path,
    home: &Path,
    pods: &Api<Pod>,
    image: &str,
) -> anyhow::Result<()> {
    if !Path::new(KUBECTL).exists() {
        return Ok(());
    }
    let echo = r#"while read line; do echo "got $line"; done; echo "end of input""#;
    let terminal = "while read x; do stty size; done";
    for (name, extra, script) in [
        ("once", "stdin: true, stdinOnce: true", echo),
        ("kept", "stdin: true", echo),
        ("term", "stdin: true, tty: true", terminal),
    ] {
        let pod: Pod = serde_yaml::from_str(&format!(
            r#"
metadata: {{name: {name}, namespace: default}}
spec:
  restartPolicy: Never
  containers:
  - {{name: c, image: "{image}", {extra}, command: ["sh", "-c", {script:?}]}}
"#
        ))?;
        pods.create(&pod).await?;
    }
    for name in ["once", "kept", "term"] {
        eventually(&format!("pod {name} to run"), Duration::from_secs(60), || async {
            let phase = pods.get(name).await?.status.map(|s| s.phase).unwrap_or_default();
            anyhow::ensure!(phase == "Running", "phase {phase:?}");
            Ok(true)
        })
        .await?;
    }

    // stdinOnce: kubectl's end of input ends the process's, which then exits 0
    let (code, out, err) = kubectl(
        url,
        kubeconfig,
        home,
        Some(b"hello\nworld\n"),
        &["attach", "-i", "once"],
    )
    .await?;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out, "got hello\ngot world\nend of input\n", "{err}");
    eventually("pod once to complete", Duration::from_secs(30), || async {
        let phase = pods
            .get("once")
            .await?
            .status
            .map(|s| s.phase)
            .unwrap_or_default();
        anyhow::ensure!(phase == "Succeeded", "phase {phase:?}");
        Ok(true)
    })
    .await?;

    // stdin without stdinOnce stays open after a session: the same process
    // answers the next one
    for word in ["one", "two"] {
        let mut child = kubectl_command(url, kubeconfig, home, &["attach", "-i", "kept"])
            .stdin(Stdio::piped())
            .spawn()?;
        let mut input = child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        input.write_all(format!("{word}\n").as_bytes()).await?;
        drop(input);
        assert_eq!(next_line(&mut lines).await?, format!("got {word}"));
        child.start_kill()?;
        let _ = child.wait().await;
    }
    // `kubectl run -i --rm`: a pod with a stdin, attached to, then deleted
    let image_flag = format!("--image={image}");
    let run = [
        "run",
        "oneoff",
        "-i",
        "--rm",
        "--restart=Never",
        &image_flag,
        "--",
        "sh",
        "-c",
        "read x; echo \"read $x\"",
    ];
    let (code, out, err) = kubectl(url, kubeconfig, home, Some(b"from run\n"), &run).await?;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("read from run\n"), "{out}{err}");
    assert!(out.contains("pod \"oneoff\" deleted"), "{out}{err}");

    let kept = pods.get("kept").await?.status.unwrap_or_default();
    assert_eq!(kept.phase, "Running", "the process never read end of input");
    assert_eq!(kept.container_statuses.first().map(|c| c.restart_count), Some(0));

    // -it: kubectl on a terminal (script(1) gives it one, 40 rows by 100
    // columns) sends its size, which the container's terminal takes
    let command = format!(
        "stty rows 40 cols 100; exec {KUBECTL} --kubeconfig {} --server {url} --cache-dir {} attach -it term",
        kubeconfig.display(),
        home.join("kubectl-cache").display()
    );
    let mut child = tokio::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env_remove("KUBECONFIG")
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut input = child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    let mut stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (seen_tx, mut seen) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf).await {
            if seen_tx.send(buf[..n].to_vec()).await.is_err() {
                break;
            }
        }
    });
    // Enter until the answer shows the new size: kubectl's first size and
    // its first keys travel apart, so the first `stty size` may predate it
    let mut screen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !screen.contains("40 100") {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the container's terminal never became 40x100: {screen:?}"
        );
        input.write_all(b"\r").await?;
        let wait = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                chunk = seen.recv() => match chunk {
                    Some(c) => screen.push_str(&String::from_utf8_lossy(&c)),
                    None => anyhow::bail!("kubectl attach -it ended: {screen:?}"),
                },
            }
        }
    }
    child.start_kill()?;
    let _ = child.wait().await;
    Ok(())
}

/// The next line kubectl attach prints; an error when it ends or stays quiet.
async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> anyhow::Result<String> {
    tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| anyhow::anyhow!("kubectl attach printed nothing for 30s"))??
        .ok_or_else(|| anyhow::anyhow!("kubectl attach ended"))
}
