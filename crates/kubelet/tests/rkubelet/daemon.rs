//! The kubelet's user-visible behaviour: node registration, pods running with their
//! configuration, restart policies, probes, deletion, restarts and the gRPC service.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rkube_api::coordination::v1::Lease;
use rkube_api::core::v1::{ConfigMap, Event, Node, Pod, Secret};
use rkube_api::kubelet::v1::{exec_input, exec_output, ExecInput, ExecStart, LogsRequest, MetricsRequest};
use rkube_api::meta::v1::ObjectMeta;
use rkube_api::Resource as _;
use rkube_client::{Api, DeleteParams, ListParams, WatchEvent};
use rkube_kubelet::testing::http_get_in_netns;
use rkube_node_runtime::runtime::ContainerRuntime as _;

use crate::{condition, container, phase, require_containerd, Cluster};

pub(crate) async fn logs(c: &Cluster, pod: &str, container: &str, previous: bool) -> anyhow::Result<String> {
    let mut client = c.kubelet_client().await?;
    let mut stream = client
        .logs(LogsRequest {
            namespace: "default".into(),
            pod: pod.into(),
            container: container.into(),
            previous,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend(chunk?.data);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

pub(crate) async fn exec(c: &Cluster, pod: &str, command: &[&str]) -> anyhow::Result<(i32, String)> {
    let mut client = c.kubelet_client().await?;
    let start = ExecInput {
        input: Some(exec_input::Input::Start(ExecStart {
            namespace: "default".into(),
            pod: pod.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })),
    };
    let mut stream = client
        .exec(futures::stream::iter(vec![start]))
        .await?
        .into_inner();
    let (mut code, mut out) = (None, String::new());
    while let Some(msg) = stream.next().await {
        match msg?.output {
            Some(exec_output::Output::Stdout(d)) | Some(exec_output::Output::Stderr(d)) => {
                out.push_str(&String::from_utf8_lossy(&d))
            }
            Some(exec_output::Output::ExitCode(c)) => code = Some(c),
            None => {}
        }
    }
    Ok((code.ok_or_else(|| anyhow::anyhow!("no exit code"))?, out))
}

/// The Events about `pod`.
async fn events_of(c: &Cluster, pod: &str) -> anyhow::Result<Vec<Event>> {
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.involved_object.as_ref().is_some_and(|o| o.name == pod))
        .collect())
}

async fn event_reasons(c: &Cluster, pod: &str) -> anyhow::Result<Vec<(String, String)>> {
    Ok(events_of(c, pod)
        .await?
        .into_iter()
        .map(|e| (e.reason, e.message))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_registers_and_a_configured_pod_runs_and_serves_logs_exec_and_metrics() -> anyhow::Result<()> {
    require_containerd!();
    let c = Cluster::start().await?;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let node = nodes.get("node-a").await?;
    let status = node.status.clone().unwrap_or_default();
    assert_eq!(
        status.capacity.get("pods").map(|q| q.string.as_str()),
        Some("110")
    );
    assert!(status.capacity.contains_key("cpu") && status.capacity.contains_key("memory"));
    assert!(status.capacity.contains_key("ephemeral-storage"));
    assert_eq!(
        status
            .daemon_endpoints
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port),
        Some(i32::from(c.kubelet.as_ref().unwrap().addr.port()))
    );
    let labels = node.metadata.clone().unwrap_or_default().labels;
    assert_eq!(labels.get("kubernetes.io/os").map(String::as_str), Some("linux"));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
        .map(|c| c.status.clone());
    assert_eq!(ready.as_deref(), Some("True"), "{:?}", status.conditions);
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let first = leases.get("node-a").await?.spec.unwrap_or_default();
    assert_eq!(first.holder_identity, "node-a");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = leases.get("node-a").await?.spec.unwrap_or_default();
    assert_ne!(first.renew_time, second.renew_time, "lease not renewed");

    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    cms.create(&serde_yaml::from_str(
        "metadata: {name: settings}\ndata: {greeting: hello}",
    )?)
    .await?;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    let mut secret = Secret {
        metadata: Some(ObjectMeta {
            name: "creds".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    secret.data.insert("password".into(), b"s3cret".to_vec());
    secrets.create(&secret).await?;

    let created = Instant::now();
    c.create_pod(
        r#"
metadata: {name: web, labels: {app: web}}
spec:
  volumes:
  - {name: cm, configMap: {name: settings}}
  - {name: sec, secret: {secretName: creds}}
  - {name: work, emptyDir: {}}
  initContainers:
  - name: first
    image: IMAGE
    command: [sh, -c, "echo first >> /work/order"]
    volumeMounts: [{name: work, mountPath: /work}]
  - name: second
    image: IMAGE
    command: [sh, -c, "echo second >> /work/order"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: app
    image: IMAGE
    command: [sh, -c, "echo POD=$POD_NAME NS=$POD_NS IP=$POD_IP G=$GREETING P=$PASSWORD; cat /etc/cm/greeting /etc/sec/password; echo; cat /work/order; hostname; exec httpd -f -p 8080 -h /var/www"]
    ports: [{name: http, containerPort: 8080}]
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: settings, key: greeting}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    volumeMounts:
    - {name: cm, mountPath: /etc/cm}
    - {name: sec, mountPath: /etc/sec}
    - {name: work, mountPath: /work}
    readinessProbe:
      httpGet: {path: /, port: http}
      periodSeconds: 1
"#,
    )
    .await?;
    let running_after = c
        .wait_pod("web", Duration::from_secs(60), |p| {
            (phase(p) == "Running").then(|| created.elapsed())
        })
        .await?;
    let pod = c
        .wait_pod("web", Duration::from_secs(30), |p| {
            (condition(p, "Ready").as_deref() == Some("True")).then(|| p.clone())
        })
        .await?;
    eprintln!(
        "pod Running after {running_after:?}, Ready after {:?}",
        created.elapsed()
    );
    let status = pod.status.clone().unwrap_or_default();
    assert!(status.pod_ip.starts_with("10.244.9."), "{}", status.pod_ip);
    assert_eq!(status.host_ip, "127.0.0.1");
    assert!(!status.start_time.is_empty());
    let app = container(&pod, "app").unwrap();
    assert!(
        app.container_id.starts_with("containerd://"),
        "{}",
        app.container_id
    );
    assert!(app.image_id.contains("@sha256:"), "{}", app.image_id);
    assert_eq!(condition(&pod, "Initialized").as_deref(), Some("True"));
    assert!(container(&pod, "first")
        .unwrap()
        .state
        .unwrap()
        .terminated
        .is_some());

    // Reached from inside the node's namespace only.
    let addr = std::net::SocketAddr::new(status.pod_ip.parse()?, 8080);
    let (code, body) = http_get_in_netns(&c.node.netns_path, addr, "/", Duration::from_secs(2))?;
    assert_eq!((code, body.as_str()), (200, "rkube test image\n"));

    let text = logs(&c, "web", "app", false).await?;
    let ip = status.pod_ip.clone();
    assert!(
        text.contains(&format!("POD=web NS=default IP={ip} G=hello P=s3cret")),
        "{text}"
    );
    assert!(text.contains("hellos3cret"), "{text}");
    assert!(text.contains("first\nsecond\n"), "{text}");
    assert!(text.contains("\nweb\n"), "hostname: {text}");

    let (code, out) = exec(
        &c,
        "web",
        &["sh", "-c", "cat /etc/cm/greeting; grep web /etc/hosts; exit 4"],
    )
    .await?;
    assert_eq!(code, 4);
    assert!(out.starts_with("hello"), "{out}");
    assert!(out.contains(&ip), "{out}");

    let mut kc = c.kubelet_client().await?;
    let metrics = kc.metrics(MetricsRequest::default()).await?.into_inner();
    let web = metrics
        .pods
        .iter()
        .find(|p| p.name == "web")
        .expect("web in metrics");
    assert!(
        web.containers
            .iter()
            .any(|c| c.name == "app" && c.memory_bytes > 0),
        "{web:?}"
    );
    assert!(metrics.node.is_some_and(|n| n.memory_bytes > 0));

    // configMap volumes follow the object.
    cms.replace_with("settings", |mut cm| {
        cm.data.insert("greeting".into(), "bonjour".into());
        cm
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, out) = exec(&c, "web", &["cat", "/etc/cm/greeting"]).await?;
        if out == "bonjour" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "configMap volume not refreshed: {out:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let reasons = event_reasons(&c, "web").await?;
    for r in ["Pulling", "Pulled", "Created", "Started"] {
        assert!(reasons.iter().any(|(x, _)| x == r), "no {r} event: {reasons:?}");
    }
    assert!(
        reasons.iter().any(|(_, m)| m == "Started container app"),
        "{reasons:?}"
    );
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_policies_crash_loops_oom_kills_and_pull_errors_are_reported() -> anyhow::Result<()> {
    require_containerd!();
    let c = Cluster::start().await?;
    // Every version of every pod the kubelet writes, as a watch sees them.
    let pods_api: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let mut watch = pods_api.watch(&Default::default()).await?;
    let versions = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Pod>::new()));
    let recorder = tokio::spawn({
        let versions = versions.clone();
        async move {
            while let Some(Ok(event)) = watch.next().await {
                if let WatchEvent::Added(p) | WatchEvent::Modified(p) = event {
                    versions.lock().unwrap().push(p);
                }
            }
        }
    });
    let pods = [
        ("ok", "Never", "echo done; exit 0", ""),
        ("fails", "Never", "exit 3", ""),
        ("crash", "Always", "echo crashed; exit 1", ""),
        (
            "hog",
            "Never",
            "x=a; while true; do x=\"$x$x\"; done",
            "resources: {limits: {memory: 16Mi}}",
        ),
    ];
    for (name, policy, script, extra) in pods {
        c.create_pod(&format!(
            "metadata: {{name: {name}}}\nspec:\n  restartPolicy: {policy}\n  containers:\n  - name: main\n    image: IMAGE\n    command: [sh, -c, '{script}']\n    {extra}\n"
        ))
        .await?;
    }
    let missing = format!("{}/rkube/nope:latest", c.registry.host());
    c.create_pod(&format!(
        "metadata: {{name: missing}}\nspec:\n  containers:\n  - {{name: main, image: '{missing}'}}\n"
    ))
    .await?;

    let t = Duration::from_secs(60);
    c.wait_pod("ok", t, |p| (phase(p) == "Succeeded").then_some(()))
        .await?;
    let fails = c
        .wait_pod("fails", t, |p| (phase(p) == "Failed").then(|| p.clone()))
        .await?;
    let term = container(&fails, "main")
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((term.exit_code, term.reason.as_str()), (3, "Error"));
    let hog = c
        .wait_pod("hog", t, |p| (phase(p) == "Failed").then(|| p.clone()))
        .await?;
    let term = container(&hog, "main")
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(term.reason, "OOMKilled", "{term:?}");

    let mut saw_backoff = false;
    let crash = c
        .wait_pod("crash", t, |p| {
            let s = container(p, "main")?;
            if s.state
                .as_ref()?
                .waiting
                .as_ref()
                .is_some_and(|w| w.reason == "CrashLoopBackOff")
            {
                saw_backoff = true;
            }
            (saw_backoff && s.restart_count >= 3).then(|| p.clone())
        })
        .await?;
    let s = container(&crash, "main").unwrap();
    let last = s.last_state.unwrap().terminated.expect("lastState.terminated");
    assert_eq!((last.exit_code, last.reason.as_str()), (1, "Error"));
    assert!(last.container_id.starts_with("containerd://") && !last.finished_at.is_empty());
    assert!(logs(&c, "crash", "main", true).await?.contains("crashed"));
    let crash_backoffs: Vec<Event> = events_of(&c, "crash")
        .await?
        .into_iter()
        .filter(|e| e.reason == "BackOff")
        .collect();

    let waiting = c
        .wait_pod("missing", t, |p| {
            let w = container(p, "main")?.state?.waiting?;
            (w.reason == "ImagePullBackOff").then_some(w)
        })
        .await?;
    assert!(waiting.message.contains("nope"), "{waiting:?}");
    // Round after round of failed pulls (each one a manifest request the registry logs),
    // the back-off message stays the same: it is made from the last pull error, not from
    // the message before it, so the pod object does not grow with every sync.
    let pulls = |c: &Cluster| c.registry.log().matches("/v2/rkube/nope/manifests/").count();
    let before = pulls(&c);
    c.wait_pod("missing", t, |_| (pulls(&c) >= before + 3).then_some(()))
        .await?;
    let again = c
        .wait_pod("missing", t, |p| {
            let w = container(p, "main")?.state?.waiting?;
            (w.reason == "ImagePullBackOff").then_some(w)
        })
        .await?;
    assert_eq!(again.message, waiting.message);
    let quoted = format!("{missing:?}");
    assert_eq!(again.message.matches(&quoted).count(), 1, "{again:?}");
    let reasons = event_reasons(&c, "missing").await?;
    let failed = reasons.iter().find(|(r, _)| r == "Failed").expect("Failed event");
    assert!(
        failed.1.to_lowercase().contains("manifest unknown") || failed.1.contains("404"),
        "{failed:?}"
    );

    // Through rounds of back-off, every write the kubelet made changed something (no
    // version repeats the one before it but for its resourceVersion), and the objects stay
    // small: status messages do not grow from one round to the next.
    recorder.abort();
    let versions = std::mem::take(&mut *versions.lock().unwrap());
    for name in ["crash", "missing"] {
        let mine: Vec<Pod> = versions.iter().filter(|p| p.name() == name).cloned().collect();
        assert!(mine.len() >= 4, "{name}: {} versions", mine.len());
        let bare = |p: &Pod| {
            let mut p = p.clone();
            p.metadata_mut().resource_version.clear();
            p.metadata_mut().managed_fields.clear();
            p
        };
        for pair in mine.windows(2) {
            assert_ne!(
                bare(&pair[0]),
                bare(&pair[1]),
                "{name}: a write that changed nothing (resourceVersion {} after {})",
                pair[1].metadata().resource_version,
                pair[0].metadata().resource_version
            );
        }
        let sizes: Vec<usize> = mine.iter().map(prost::Message::encoded_len).collect();
        assert!(sizes.iter().all(|&n| n < 4096), "{name}: sizes {sizes:?}");
    }
    // One BackOff event for the crash loop, its repeats counted on it (as Kubernetes
    // aggregates events), not one object per round.
    assert_eq!(crash_backoffs.len(), 1, "{crash_backoffs:?}");
    assert!(crash_backoffs[0].count >= 2, "{crash_backoffs:?}");
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probes_graceful_deletion_and_kubelet_restarts() -> anyhow::Result<()> {
    require_containerd!();
    let mut c = Cluster::start().await?;
    c.create_pod(
        r#"
metadata: {name: live}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "touch /tmp/alive; sleep 1; rm /tmp/alive; exec sleep 1000"]
    livenessProbe: {exec: {command: [test, -f, /tmp/alive]}, periodSeconds: 1, failureThreshold: 1}
"#,
    )
    .await?;
    c.create_pod(
        r#"
metadata: {name: ready}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "exec sleep 1000"]
    readinessProbe: {exec: {command: [test, -f, /tmp/ready]}, periodSeconds: 1, failureThreshold: 1}
"#,
    )
    .await?;
    c.create_pod(
        r#"
metadata: {name: graceful}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, "trap 'echo TERM; exit 0' TERM; while true; do sleep 0.1; done"]
"#,
    )
    .await?;
    let t = Duration::from_secs(60);
    c.wait_pod("live", t, |p| {
        (container(p, "main")?.restart_count >= 1).then_some(())
    })
    .await?;
    let reasons = event_reasons(&c, "live").await?;
    assert!(
        reasons
            .iter()
            .any(|(r, m)| r == "Killing" && m.contains("failed liveness probe, will be restarted")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|(r, _)| r == "Unhealthy"), "{reasons:?}");

    c.wait_pod("ready", t, |p| (phase(p) == "Running").then_some(()))
        .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        condition(&c.pods().get("ready").await?, "Ready").as_deref(),
        Some("False")
    );
    exec(&c, "ready", &["touch", "/tmp/ready"]).await?;
    c.wait_pod("ready", t, |p| {
        (condition(p, "Ready").as_deref() == Some("True")).then_some(())
    })
    .await?;
    exec(&c, "ready", &["rm", "/tmp/ready"]).await?;
    let before = c
        .wait_pod("ready", t, |p| {
            (condition(p, "Ready").as_deref() == Some("False")).then(|| container(p, "main"))
        })
        .await?
        .unwrap();

    // Kubelet restart: the containers keep running and are adopted.
    c.kubelet.take().unwrap().stop().await;
    c.kubelet = Some(rkube_kubelet::start(c.config.clone()).await?);
    exec(&c, "ready", &["touch", "/tmp/ready"]).await?;
    let after = c
        .wait_pod("ready", t, |p| {
            (condition(p, "Ready").as_deref() == Some("True")).then(|| container(p, "main"))
        })
        .await?
        .unwrap();
    assert_eq!(after.container_id, before.container_id);
    assert_eq!(after.restart_count, before.restart_count);

    // Graceful deletion: SIGTERM is honoured long before the 30 s grace period ends.
    c.wait_pod("graceful", t, |p| (phase(p) == "Running").then_some(()))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    c.pods().delete("graceful", &DeleteParams::default()).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.pods().get_opt("graceful").await?.is_some() {
        assert!(Instant::now() < deadline, "pod object still there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "deletion took {took:?}");
    let left: BTreeMap<_, _> = c.node.runtime().list_containers().await.map(|l| {
        l.into_iter()
            .filter(|x| x.labels.get("io.rkube.pod.name").map(String::as_str) == Some("graceful"))
            .map(|x| (x.id, x.state))
            .collect()
    })?;
    assert!(left.is_empty(), "containers left: {left:?}");
    eprintln!("graceful deletion took {took:?}");
    c.stop().await
}

/// Files below `dir` (recursively), as (path, contents); none if `dir` does not exist.
fn files_below(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                out.push((path, text));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containerd_restarts_leave_running_pods_alone_and_new_pods_still_start() -> anyhow::Result<()> {
    require_containerd!();
    let mut c = Cluster::start().await?;
    let t = Duration::from_secs(60);
    c.create_pod(
        "metadata: {name: steady}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: main, image: IMAGE, command: [sleep, '1000']}\n",
    )
    .await?;
    let before = c
        .wait_pod("steady", t, |p| {
            let s = container(p, "main")?;
            (phase(p) == "Running" && s.state.as_ref()?.running.is_some()).then_some(s)
        })
        .await?;

    c.node.restart_containerd().await?;

    // The kubelet reconnects; for a while (many poll intervals) the pod stays exactly as it
    // was: same container, no restart.
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        let pod = c.pods().get("steady").await?;
        let now = container(&pod, "main").expect("status of main");
        assert_eq!(phase(&pod), "Running");
        assert_eq!(now.container_id, before.container_id, "{now:?}");
        assert_eq!(now.restart_count, 0, "{now:?}");
        assert!(
            now.state.as_ref().and_then(|s| s.running.as_ref()).is_some(),
            "{now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id = before
        .container_id
        .strip_prefix("containerd://")
        .expect("containerd:// id")
        .to_string();
    let status = c
        .node
        .runtime()
        .container_status(&rkube_node_runtime::runtime::ContainerId(id))
        .await?;
    assert_eq!(
        status.state,
        rkube_node_runtime::runtime::ContainerState::Running,
        "containerd's view after its restart"
    );
    let (code, out) = exec(&c, "steady", &["echo", "still here"]).await?;
    assert_eq!((code, out.as_str()), (0, "still here\n"));

    // A pod created after the restart runs.
    c.create_pod(
        "metadata: {name: later}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: main, image: IMAGE, command: [sleep, '1000']}\n",
    )
    .await?;
    let later = c
        .wait_pod("later", t, |p| {
            (phase(p) == "Running").then(|| container(p, "main"))
        })
        .await?
        .expect("status of later/main");
    assert!(later.state.and_then(|s| s.running).is_some());
    assert_eq!(later.restart_count, 0);
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_force_deleted_while_the_kubelet_is_down_is_cleaned_up_when_it_returns() -> anyhow::Result<()> {
    require_containerd!();
    let mut c = Cluster::start().await?;
    let t = Duration::from_secs(60);
    c.create_pod(
        "metadata: {name: doomed}\nspec:\n  terminationGracePeriodSeconds: 30\n  containers:\n  - {name: main, image: IMAGE, command: [sleep, '1000']}\n",
    )
    .await?;
    let pod = c
        .wait_pod("doomed", t, |p| (phase(p) == "Running").then(|| p.clone()))
        .await?;
    let uid = pod.metadata.clone().unwrap_or_default().uid;
    let ip = pod.status.clone().unwrap_or_default().pod_ip;
    assert!(!uid.is_empty() && !ip.is_empty(), "uid {uid:?} ip {ip:?}");

    let netns = c.config.run_dir.join("netns").join(&uid);
    let ipam = c.config.root_dir.join("cni").join("ipam");
    let pod_dir = c.config.root_dir.join("pods").join(&uid);
    let runtime = c.node.runtime();
    let containers_of_pod = || async {
        anyhow::Ok(
            runtime
                .list_containers()
                .await?
                .into_iter()
                .filter(|x| x.labels.get("io.rkube.pod.uid") == Some(&uid))
                .map(|x| x.id)
                .collect::<Vec<_>>(),
        )
    };
    let allocations = || {
        files_below(&ipam)
            .into_iter()
            .filter(|(path, text)| {
                path.file_name().is_some_and(|n| n.to_string_lossy() == ip) || text.contains(&uid)
            })
            .map(|(path, _)| path)
            .collect::<Vec<_>>()
    };
    // What must go: sanity-check that it is there to begin with.
    assert_eq!(containers_of_pod().await?.len(), 1);
    assert!(netns.exists(), "{} missing", netns.display());
    assert!(
        !allocations().is_empty(),
        "no host-local allocation of {ip} under {}",
        ipam.display()
    );

    c.kubelet.take().expect("kubelet running").stop().await;
    c.pods()
        .delete(
            "doomed",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await?;
    assert!(
        c.pods().get_opt("doomed").await?.is_none(),
        "force deletion is immediate"
    );
    // Nobody cleaned up meanwhile.
    assert_eq!(containers_of_pod().await?.len(), 1);

    c.kubelet = Some(rkube_kubelet::start(c.config.clone()).await?);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = containers_of_pod().await?;
        let ips = allocations();
        let clean = left.is_empty() && !netns.exists() && ips.is_empty() && !pod_dir.exists();
        if clean {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the kubelet's restart: containers {left:?}, netns exists {}, allocations {ips:?}, pod dir exists {}",
            netns.exists(),
            pod_dir.exists()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The address is free again: the next pod may get it, and gets one in any case.
    c.create_pod(
        "metadata: {name: next}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: main, image: IMAGE, command: [sleep, '1000']}\n",
    )
    .await?;
    c.wait_pod("next", t, |p| (phase(p) == "Running").then_some(()))
        .await?;
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_that_ran_long_enough_restarts_without_back_off() -> anyhow::Result<()> {
    require_containerd!();
    let mut c = Cluster::start().await?;
    // Runs of 1.5 s count as healthy: every restart is immediate, however many there were.
    c.kubelet.take().expect("kubelet running").stop().await;
    c.config.crashloop_backoff_reset = Duration::from_secs(1);
    c.kubelet = Some(rkube_kubelet::start(c.config.clone()).await?);
    c.create_pod(
        "metadata: {name: flappy}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: main, image: IMAGE, command: [sh, -c, 'sleep 1.5; exit 1']}\n",
    )
    .await?;
    let mut backoffs = Vec::new();
    c.wait_pod("flappy", Duration::from_secs(60), |p| {
        let s = container(p, "main")?;
        if let Some(w) = s.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            if w.reason == "CrashLoopBackOff" {
                backoffs.push(w.message.clone());
            }
        }
        (s.restart_count >= 3).then_some(())
    })
    .await?;
    assert!(backoffs.is_empty(), "backed off after healthy runs: {backoffs:?}");
    let reasons = event_reasons(&c, "flappy").await?;
    assert!(!reasons.iter().any(|(r, _)| r == "BackOff"), "{reasons:?}");
    c.stop().await
}
