//! Container logs as the CRI-format files `rkubelet log-driver` writes: times, since,
//! tail, byte limits, follow, stdout and stderr, and logging that carries on while the
//! kubelet is down.

use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use rkube_api::kubelet::v1::LogsRequest;

use crate::{container, require_containerd, Cluster};

async fn read_logs(c: &Cluster, request: LogsRequest) -> anyhow::Result<String> {
    let mut client = c.kubelet_client().await?;
    let mut stream = client.logs(request).await?.into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend(chunk?.data);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn request(pod: &str) -> LogsRequest {
    LogsRequest {
        namespace: "default".into(),
        pod: pod.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_have_times_and_honour_since_tail_limit_and_follow_across_kubelet_restarts() -> anyhow::Result<()>
{
    require_containerd!();
    let mut c = Cluster::start().await?;
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
      echo out-1; echo err-1 >&2; printf 'no-newline'; sleep 1; echo ' and the rest'
      i=0
      while true; do
        if [ -f /tmp/go ]; then rm /tmp/go; i=$((i+1)); echo "tick $i"; fi
        sleep 0.1
      done
"#,
    )
    .await?;
    // A container with a stdin: its output goes through fifos the kubelet's runtime copies
    // (the shim's logger has no stdin); it is logged across the restart below too (the
    // runtime's own test covers a new runtime taking the copying up).
    c.create_pod(
        r#"
metadata: {name: listener}
spec:
  containers:
  - name: main
    image: IMAGE
    stdin: true
    command: [sh, -c]
    args:
    - |
      i=0
      while true; do
        if [ -f /tmp/go ]; then rm /tmp/go; i=$((i+1)); echo "heard $i"; fi
        sleep 0.1
      done
"#,
    )
    .await?;
    let t = Duration::from_secs(60);
    for pod in ["talker", "listener"] {
        c.wait_pod(pod, t, |p| container(p, "main")?.state?.running.map(|_| ()))
            .await?;
    }
    crate::daemon::exec(&c, "listener", &["touch", "/tmp/go"]).await?;
    rkube_testing::eventually("the listener's first line", Duration::from_secs(15), || async {
        let text = read_logs(&c, request("listener")).await?;
        Ok(Some(()).filter(|_| text == "heard 1\n"))
    })
    .await?;
    let all = rkube_testing::eventually(
        "the first lines to be logged",
        Duration::from_secs(15),
        || async {
            let text = read_logs(&c, request("talker")).await?;
            Ok(Some(text).filter(|t| t.contains("and the rest")))
        },
    )
    .await?;
    // stdout and stderr both; a line written in two parts (with a pause) is one line.
    assert!(all.contains("out-1\n") && all.contains("err-1\n"), "{all}");
    assert!(all.contains("no-newline and the rest\n"), "{all}");

    // Times: RFC 3339 in UTC, in order, within the last minute.
    let stamped = read_logs(
        &c,
        LogsRequest {
            timestamps: true,
            ..request("talker")
        },
    )
    .await?;
    let mut times = Vec::new();
    for line in stamped.lines() {
        let (ts, text) = line.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let t = SystemTime::from(chrono::DateTime::parse_from_rfc3339(ts)?);
        let age = SystemTime::now().duration_since(t)?;
        assert!(age < Duration::from_secs(60), "{line}");
        assert!(
            ["out-1", "err-1", "no-newline and the rest"].contains(&text),
            "{stamped}"
        );
        times.push(t);
    }
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{stamped}");
    // A line written in two parts has one time, that of its start.
    assert_eq!(times.len(), 3, "{stamped}");

    // tail counts records; limitBytes cuts the output.
    let tail = read_logs(
        &c,
        LogsRequest {
            tail_lines: 1,
            ..request("talker")
        },
    )
    .await?;
    assert_eq!(tail, " and the rest\n");
    let limited = read_logs(
        &c,
        LogsRequest {
            limit_bytes: 3,
            ..request("talker")
        },
    )
    .await?;
    assert_eq!(limited.len(), 3, "{limited:?}");

    // Follow: a line written later arrives on the open stream.
    let mut client = c.kubelet_client().await?;
    let mut follow = client
        .logs(LogsRequest {
            follow: true,
            tail_lines: 1,
            ..request("talker")
        })
        .await?
        .into_inner();
    let mut seen = String::new();
    while !seen.contains("and the rest") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await?
            .expect("stream open")?;
        seen.push_str(&String::from_utf8_lossy(&chunk.data));
    }
    crate::daemon::exec(&c, "talker", &["touch", "/tmp/go"]).await?;
    while !seen.contains("tick 1\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await?
            .expect("stream open")?;
        seen.push_str(&String::from_utf8_lossy(&chunk.data));
    }
    drop(follow);

    // The kubelet goes away; the container's output is still logged (the shim owns the
    // logger), and a new kubelet serves it.
    let before_stop = SystemTime::now();
    c.kubelet.take().expect("kubelet").stop().await;
    let runtime = c.node.runtime();
    let ids: Vec<_> = {
        use rkube_node_runtime::runtime::ContainerRuntime as _;
        runtime
            .list_containers()
            .await?
            .into_iter()
            .filter(|x| x.container_name() == Some("main"))
            .map(|x| x.id)
            .collect()
    };
    assert_eq!(ids.len(), 2, "{ids:?}");
    for id in &ids {
        use rkube_node_runtime::runtime::{ContainerRuntime as _, ExecRequest};
        runtime
            .exec(
                id,
                &ExecRequest {
                    command: vec!["touch".into(), "/tmp/go".into()],
                    ..Default::default()
                },
            )
            .await?;
    }
    // This runtime took the listener's output up as a restarted kubelet's does; it goes
    // before the new kubelet comes, which takes the copying over.
    drop(runtime);
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.kubelet = Some(rkube_kubelet::start(c.config.clone()).await?);
    let since = read_logs(
        &c,
        LogsRequest {
            since_time: rkube_node_runtime::logs::timestamp(before_stop),
            timestamps: true,
            ..request("talker")
        },
    )
    .await?;
    let lines: Vec<&str> = since.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "only what was written while the kubelet was down: {since}"
    );
    assert!(lines[0].ends_with(" tick 2"), "{since}");
    let recent = read_logs(
        &c,
        LogsRequest {
            since_seconds: 3600,
            ..request("talker")
        },
    )
    .await?;
    assert!(
        recent.contains("out-1\n") && recent.ends_with("tick 2\n"),
        "{recent}"
    );
    let err = read_logs(
        &c,
        LogsRequest {
            since_time: "yesterday".into(),
            ..request("talker")
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("RFC 3339"), "{err}");
    // what the listener wrote while no kubelet copied it waited in the pipe
    rkube_testing::eventually(
        "the listener's line from the kubelet's downtime",
        Duration::from_secs(15),
        || async {
            let text = read_logs(&c, request("listener")).await?;
            anyhow::ensure!(text == "heard 1\nheard 2\n", "the listener's log: {text:?}");
            Ok(true)
        },
    )
    .await?;
    c.stop().await
}

/// An exit is reported even when the kubelet's periodic resync is minutes away
/// (containerd's exit events wake the pod's worker), and once it is, the log already holds
/// everything the container wrote: a burst of lines right before the exit and a last line
/// without a newline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exits_are_reported_without_waiting_for_a_resync_and_with_the_log_complete() -> anyhow::Result<()> {
    require_containerd!();
    let c = Cluster::start_with(|config| config.pod_poll_interval = Duration::from_secs(300)).await?;
    c.create_pod(
        r#"
metadata: {name: finisher}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c]
    args:
    - |
      while [ ! -f /tmp/go ]; do sleep 0.05; done
      i=0
      while [ $i -lt 3000 ]; do echo "line-$i"; i=$((i+1)); done
      printf 'last words'
      exit 3
"#,
    )
    .await?;
    let t = Duration::from_secs(60);
    c.wait_pod("finisher", t, |p| {
        container(p, "main")?.state?.running.map(|_| ())
    })
    .await?;
    let (code, out) = crate::daemon::exec(&c, "finisher", &["touch", "/tmp/go"]).await?;
    assert_eq!(code, 0, "{out}");
    // Far sooner than the 300 s resync: only the exit event can explain it.
    let terminated = c
        .wait_pod("finisher", Duration::from_secs(20), |p| {
            container(p, "main")?.state?.terminated
        })
        .await?;
    assert_eq!(terminated.exit_code, 3);
    let log = read_logs(&c, request("finisher")).await?;
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3001, "every line is there when the exit is reported");
    assert_eq!(lines[0], "line-0");
    assert_eq!(lines[2999], "line-2999");
    assert_eq!(lines[3000], "last words");
    c.stop().await
}
