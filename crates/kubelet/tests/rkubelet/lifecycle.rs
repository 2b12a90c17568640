//! Lifecycle hooks on real containers: postStart runs as the container starts (and a
//! failing one kills it), preStop runs before the SIGTERM when the pod is deleted.

use std::time::Duration;

use rkube_api::core::v1::Event;
use rkube_client::{Api, DeleteParams};

use crate::{container, phase, require_containerd, wait_for_event, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn post_start_runs_at_start_and_pre_stop_before_the_sigterm() -> anyhow::Result<()> {
    require_containerd!();
    let c = Cluster::start().await?;
    // Everything the pod does goes into one file on the host, in order.
    let out = tempfile::tempdir()?;
    c.create_pod(&format!(
        r#"
metadata: {{name: hooks}}
spec:
  terminationGracePeriodSeconds: 20
  volumes: [{{name: out, hostPath: {{path: {dir}}}}}]
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, 'until [ -f /out/post-start ]; do sleep 0.1; done; echo main >> /out/log; trap "echo term >> /out/log; exit 0" TERM; while true; do sleep 0.2; done']
    volumeMounts: [{{name: out, mountPath: /out}}]
    lifecycle:
      postStart: {{exec: {{command: [sh, -c, 'echo post-start >> /out/log; touch /out/post-start']}}}}
      preStop: {{exec: {{command: [sh, -c, 'echo pre-stop >> /out/log']}}}}
"#,
        dir = out.path().display()
    ))
    .await?;
    let log = out.path().join("log");
    rkube_testing::eventually(
        "main to see its postStart hook",
        Duration::from_secs(60),
        || async { std::fs::read_to_string(&log).unwrap_or_default().contains("main") },
    )
    .await?;
    c.pods().delete("hooks", &DeleteParams::default()).await?;
    rkube_testing::eventually("the pod to be gone", Duration::from_secs(30), || async {
        Ok::<_, anyhow::Error>(c.pods().get_opt("hooks").await?.is_none())
    })
    .await?;
    let text = std::fs::read_to_string(&log)?;
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["post-start", "main", "pre-stop", "term"],
        "hooks ran in Kubernetes' order"
    );
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_post_start_hook_kills_the_container() -> anyhow::Result<()> {
    require_containerd!();
    let c = Cluster::start().await?;
    c.create_pod(
        r#"
metadata: {name: bad-hook}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, 'trap "exit 143" TERM; while true; do sleep 0.2; done']
    lifecycle:
      postStart: {exec: {command: [sh, -c, 'echo no database >&2; exit 3']}}
"#,
    )
    .await?;
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let msg = wait_for_event(&events, "bad-hook", "FailedPostStartHook").await?;
    assert!(
        msg.contains("exited with 3") && msg.contains("no database"),
        "{msg}"
    );
    let exit = c
        .wait_pod("bad-hook", Duration::from_secs(60), |p| {
            (phase(p) == "Failed").then(|| container(p, "main")?.state?.terminated)?
        })
        .await?;
    assert_ne!(exit.exit_code, 0);
    c.stop().await
}
