//! Container lifecycle on containerd: logs, exit codes, OOM kills, stop with a grace
//! period, exec, stats and adoption by a new runtime client.

use std::time::{Duration, Instant};

use rkube_node_runtime::runtime::{
    ContainerIdentity, ContainerRuntime, ContainerState, Error, ExecRequest, Resources,
};

use crate::{require_containerd, Fixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_logs_its_output_and_reports_its_exit_code() -> anyhow::Result<()> {
    require_containerd!();
    let f = Fixture::start().await?;
    let config = f.container("pod-echo", "echo", "echo hello from rkube; echo oops >&2; exit 3");
    let id = f.runtime.create_container(&config).await?;
    let status = f.runtime.container_status(&id).await?;
    assert_eq!(status.state, ContainerState::Created);
    assert_eq!(status.started_at, None);

    let log = f.node.log_path("echo");
    let before_start = std::time::SystemTime::now();
    f.runtime.start_container(&id, &log).await?;
    let state = f.wait_exited(&id, Duration::from_secs(20)).await?;
    let ContainerState::Exited {
        exit_code,
        finished_at,
        oom_killed,
    } = state
    else {
        unreachable!()
    };
    assert_eq!(exit_code, 3);
    assert!(!oom_killed);
    let status = f.runtime.container_status(&id).await?;
    let started_at = status.started_at.expect("started_at is recorded");
    assert!(started_at >= before_start - Duration::from_secs(1));
    assert!(finished_at.expect("finished_at") >= before_start);
    assert_eq!(status.log_path.as_deref(), Some(log.as_path()));

    // Starting twice is refused with a message saying what to do.
    let err = f.runtime.start_container(&id, &log).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyStarted { .. }), "{err}");

    f.runtime.remove_container(&id).await?;
    assert!(f.runtime.container_status(&id).await.unwrap_err().is_not_found());
    // Both streams are in the one file (their relative order is not guaranteed: they are
    // copied independently). The log driver the shim started drains both pipes after the
    // exit and may still be writing the last line when removal returns (on a loaded
    // machine, for a few seconds).
    rkube_testing::eventually("both streams in the log", Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&log)?;
        anyhow::ensure!(
            text.contains("hello from rkube\n") && text.contains("oops\n"),
            "log: {text:?}"
        );
        Ok(true)
    })
    .await?;
    f.runtime.remove_container(&id).await?;
    let cgroup = format!("/sys/fs/cgroup/memory{}/pod-echo/{id}", f.node.cgroup_parent);
    assert!(!std::path::Path::new(&cgroup).exists(), "{cgroup} left behind");
    f.runtime.remove_pod_cgroup("pod-echo")?;
    assert!(
        !std::path::Path::new(&format!("/sys/fs/cgroup/memory{}/pod-echo", f.node.cgroup_parent)).exists()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_the_memory_limit_is_reported_as_oom_killed() -> anyhow::Result<()> {
    require_containerd!();
    let f = Fixture::start().await?;
    let mut config = f.container(
        "pod-oom",
        "hog",
        // Doubles a shell string until the 16Mi limit is hit.
        "echo start; x=a; while true; do x=\"$x$x\"; done",
    );
    config.resources = Resources {
        memory_limit_bytes: Some(16 << 20),
        ..Default::default()
    };
    let id = f.run(&config).await?;
    let state = f.wait_exited(&id, Duration::from_secs(60)).await?;
    assert!(
        matches!(
            state,
            ContainerState::Exited {
                oom_killed: true,
                exit_code: 137,
                ..
            }
        ),
        "{state:?}"
    );
    // Still known after the task (and with it the cgroup proving it) is gone: adoption by a
    // new client reads the label.
    let listed = f.node.runtime().list_containers().await?;
    let summary = listed.iter().find(|c| c.id == id).expect("listed");
    assert!(matches!(
        summary.state,
        ContainerState::Exited { oom_killed: true, .. }
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_waits_for_sigterm_then_kills_after_the_grace_period() -> anyhow::Result<()> {
    require_containerd!();
    let f = Fixture::start().await?;
    let polite = f
        .run(&f.container(
            "pod-stop",
            "polite",
            "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done",
        ))
        .await?;
    let stubborn = f
        .run(&f.container(
            "pod-stop",
            "stubborn",
            "trap '' TERM; echo ready; while true; do sleep 0.1; done",
        ))
        .await?;
    // Let both shells install their traps.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    f.runtime.stop_container(&polite, Duration::from_secs(10)).await?;
    let polite_took = started.elapsed();
    assert!(polite_took < Duration::from_secs(5), "took {polite_took:?}");
    let state = f.runtime.container_status(&polite).await?.state;
    assert!(
        matches!(state, ContainerState::Exited { exit_code: 0, .. }),
        "{state:?}"
    );

    let grace = Duration::from_secs(2);
    let started = Instant::now();
    f.runtime.stop_container(&stubborn, grace).await?;
    let stubborn_took = started.elapsed();
    assert!(
        stubborn_took >= grace,
        "killed before the grace period: {stubborn_took:?}"
    );
    assert!(
        stubborn_took < grace + Duration::from_secs(5),
        "took {stubborn_took:?}"
    );
    let state = f.runtime.container_status(&stubborn).await?.state;
    assert!(
        matches!(
            state,
            ContainerState::Exited {
                exit_code: 137,
                oom_killed: false,
                ..
            }
        ),
        "{state:?}"
    );
    eprintln!("polite stop {polite_took:?}, stubborn stop {stubborn_took:?} (grace {grace:?})");

    // Stopping a stopped container is fine.
    f.runtime.stop_container(&stubborn, grace).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_returns_output_and_exit_code() -> anyhow::Result<()> {
    require_containerd!();
    let f = Fixture::start().await?;
    let mut config = f.container("pod-exec", "app", "echo ready > /tmp/ready; exec sleep 1000");
    config.env = vec![("GREETING".into(), "hi there".into())];
    config.working_dir = Some("/tmp".into());
    let id = f.run(&config).await?;

    let ran = f
        .runtime
        .exec(
            &id,
            &ExecRequest {
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo $GREETING from $(pwd); cat ready; echo err >&2; exit 7".into(),
                ],
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(ran.exit_code, 7);
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "hi there from /tmp\nready\n"
    );
    assert_eq!(String::from_utf8_lossy(&ran.stderr), "err\n");

    let piped = f
        .runtime
        .exec(
            &id,
            &ExecRequest {
                command: vec!["tr".into(), "a-z".into(), "A-Z".into()],
                stdin: Some(b"piped input\n".to_vec()),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(piped.exit_code, 0);
    assert_eq!(String::from_utf8_lossy(&piped.stdout), "PIPED INPUT\n");

    let started = Instant::now();
    let err = f
        .runtime
        .exec(
            &id,
            &ExecRequest {
                command: vec!["sleep".into(), "30".into()],
                timeout: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ExecTimeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let missing = f
        .runtime
        .exec(
            &id,
            &ExecRequest {
                command: vec!["/no/such/binary".into()],
                ..Default::default()
            },
        )
        .await;
    // runc fails to start it: an error, not a hang.
    assert!(
        missing.is_err() || missing.as_ref().is_ok_and(|o| o.exit_code != 0),
        "{missing:?}"
    );

    f.runtime.stop_container(&id, Duration::ZERO).await?;
    let err = f
        .runtime
        .exec(
            &id,
            &ExecRequest {
                command: vec!["true".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotRunning { .. }), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_come_from_the_container_cgroup() -> anyhow::Result<()> {
    require_containerd!();
    let f = Fixture::start().await?;
    let id = f
        .run(&f.container(
            "pod-stats",
            "busy",
            // 24 MiB in tmpfs (charged to the cgroup, never inactive file cache), some CPU.
            "dd if=/dev/zero of=/dev/shm/fill bs=1048576 count=24 2>/dev/null; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo done; exec sleep 1000",
        ))
        .await?;
    let log = f.node.log_path(&format!("busy-{id}"));
    rkube_testing::eventually(
        "the container to finish its work",
        Duration::from_secs(60),
        || async { std::fs::read_to_string(&log).ok().filter(|t| t.contains("done")) },
    )
    .await?;
    let stats = f.runtime.container_stats(&id).await?;
    eprintln!("stats: {stats:?}");
    assert!(stats.memory_working_set_bytes >= 24 << 20, "{stats:?}");
    assert!(stats.memory_working_set_bytes < 200 << 20, "{stats:?}");
    assert!(stats.cpu_usage_nanos > 50_000_000, "{stats:?}");

    f.runtime.stop_container(&id, Duration::ZERO).await?;
    f.runtime.remove_container(&id).await?;
    assert!(f.runtime.container_stats(&id).await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_adopts_containers_and_containerd_restarts_are_survived() -> anyhow::Result<()> {
    require_containerd!();
    let mut f = Fixture::start().await?;
    let mut web = f.container("pod-adopt-1", "web", "exec sleep 1000");
    web.restart_attempt = 2;
    web.labels.insert("example.com/extra".into(), "yes".into());
    let running = f.run(&web).await?;
    let created = f
        .runtime
        .create_container(&f.container("pod-adopt-1", "sidecar", "exec sleep 1000"))
        .await?;
    let pid = f.runtime.container_status(&running).await?.pid.expect("pid");

    // A restarted kubelet: a new client finds both, with their identity.
    let adopted = f.node.runtime().list_containers().await?;
    assert_eq!(adopted.len(), 2, "{adopted:?}");
    let web_summary = adopted.iter().find(|c| c.id == running).expect("web listed");
    assert_eq!(web_summary.state, ContainerState::Running);
    assert_eq!(web_summary.pid, Some(pid));
    assert_eq!(
        web_summary.identity(),
        Some(ContainerIdentity {
            pod_uid: "pod-adopt-1".into(),
            pod_namespace: "default".into(),
            pod_name: "pod-pod-adopt-1".into(),
            container_name: "web".into(),
            restart_attempt: 2,
        })
    );
    assert_eq!(
        web_summary.labels.get("example.com/extra").map(String::as_str),
        Some("yes")
    );
    assert_eq!(web_summary.image, f.image.name);
    let sidecar = adopted.iter().find(|c| c.id == created).expect("sidecar listed");
    assert_eq!(sidecar.state, ContainerState::Created);
    assert_eq!(sidecar.container_name(), Some("sidecar"));

    // containerd goes away: calls fail saying so, without hanging.
    f.node.stop_containerd();
    let err = f.runtime.container_status(&running).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&f.node.socket.display().to_string()),
        "{err}"
    );
    // containerd comes back; the container kept running and the same client reconnects.
    f.node.start_containerd().await?;
    let status = f.runtime.container_status(&running).await?;
    assert_eq!(status.state, ContainerState::Running);
    assert_eq!(status.pid, Some(pid));
    assert_eq!(f.runtime.list_containers().await?.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_container_configs_are_refused_before_anything_runs() -> anyhow::Result<()> {
    require_containerd!();
    let f = Fixture::start().await?;
    let mut config = f.container("pod-bad", "app", "true");
    config.image = format!("{}/rkube/never-pulled:latest", f.registry.host());
    let err = f.runtime.create_container(&config).await.unwrap_err();
    assert!(matches!(err, Error::ImageNotPresent { .. }), "{err}");
    assert!(err.to_string().contains("pull it first"), "{err}");

    let mut config = f.container("../escape", "app", "true");
    let err = f.runtime.create_container(&config).await.unwrap_err();
    assert!(err.to_string().contains("pod uid"), "{err}");

    config.pod_uid = "pod-bad".into();
    config.working_dir = Some("relative/dir".into());
    let err = f.runtime.create_container(&config).await.unwrap_err();
    assert!(err.to_string().contains("workingDir"), "{err}");

    assert!(f.runtime.list_containers().await?.is_empty());
    Ok(())
}

/// A container created with a stdin: what is written to it reaches the process (and
/// several writers may come and go); its output is logged by the runtime, which a new
/// runtime instance (a restarted kubelet) takes up, with what was written in between; and
/// closing the stdin (`stdinOnce`) is the process's end of input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_reaches_the_main_process_and_its_output_is_logged_across_runtime_restarts(
) -> anyhow::Result<()> {
    use rkube_node_runtime::runtime::ContainerIo;
    use tokio::io::AsyncWriteExt as _;
    require_containerd!();
    let f = Fixture::start().await?;
    let mut config = f.container(
        "pod-stdin",
        "reader",
        "while read line; do echo \"got $line\"; done; echo 'end of input'; exit 4",
    );
    config.io = ContainerIo {
        stdin: true,
        stdin_once: true,
        tty: false,
    };
    let log = f.node.log_path("reader");
    let logged = |want: &'static str| {
        let log = log.clone();
        async move {
            rkube_testing::eventually(
                &format!("{want:?} in the log"),
                Duration::from_secs(10),
                || async {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    Ok(Some(()).filter(|_| text.contains(want)))
                },
            )
            .await
        }
    };
    let first = f.node.runtime();
    let id = first.create_container(&config).await?;
    first.start_container(&id, &log).await?;
    for word in ["one", "two"] {
        let mut stdin = first.open_stdin(&id).await?;
        stdin.write_all(format!("{word}\n").as_bytes()).await?;
    }
    logged("stdout F got one\n").await?;
    logged("stdout F got two\n").await?;

    // This runtime goes (as with the kubelet's process): its copying stops and lets go of
    // the log; what the process writes meanwhile waits in the pipe.
    drop(first);
    rkube_testing::eventually("the log to be let go", Duration::from_secs(10), || async {
        let file = std::fs::File::open(&log)?;
        Ok(file.try_lock().ok())
    })
    .await?;
    let second = f.node.runtime();
    second.open_stdin(&id).await?.write_all(b"three\n").await?;
    second.list_containers().await?;
    logged("stdout F got three\n").await?;

    // stdinOnce: closed, the process reads its end; afterwards nobody can attach.
    second.close_stdin(&id).await?;
    let state = f.wait_exited(&id, Duration::from_secs(20)).await?;
    assert!(
        matches!(state, ContainerState::Exited { exit_code: 4, .. }),
        "{state:?}"
    );
    logged("stdout F end of input\n").await?;

    let plain = f.container("pod-stdin", "plain", "sleep 30");
    let plain = second.create_container(&plain).await?;
    second.start_container(&plain, &f.node.log_path("plain")).await?;
    let err = second.open_stdin(&plain).await.err().expect("no stdin");
    assert!(err.to_string().contains("stdin: true"), "{err}");
    second.remove_container(&plain).await?;
    second.remove_container(&id).await?;
    Ok(())
}
