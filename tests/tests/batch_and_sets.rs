//! Jobs, CronJobs, StatefulSets and DaemonSets end to end, on real nodes and containers,
//! driven with rkubectl as a user would: a Job whose pods fail twice and then succeed (and
//! a quota of three pods holding a Deployment of four at three), a
//! CronJob that does not overlap its runs (Forbid), a StatefulSet scaled 3 -> 5 -> 2 in
//! order (its partition keeping a re-created pod at the old template), a DaemonSet
//! following nodes that join and are tainted; both sets' rollout history and undo; every
//! owner's deletion takes its pods.

use futures::StreamExt;
use rkube_api::apps::v1::{ControllerRevision, DaemonSet};
use rkube_api::batch::v1::Job;
use rkube_api::core::v1::Pod;
use rkube_client::{ListParams, WatchEvent, WatchParams};
use rkube_e2e::{pod_ready, run, ClusterOptions, TestCluster};
use rkube_testing::eventually;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn name(p: &Pod) -> String {
    p.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default()
}

fn live(p: &Pod) -> bool {
    p.metadata
        .as_ref()
        .is_some_and(|m| m.deletion_timestamp.is_empty())
}

/// The hash of the owner's revision numbered `number` (its pods carry it as
/// `controller-revision-hash`).
async fn revision_hash(cluster: &TestCluster, owner: &str, number: i64) -> anyhow::Result<String> {
    let revisions = cluster.api::<ControllerRevision>("default")?;
    eventually(
        &format!("revision {number} of {owner}"),
        Duration::from_secs(30),
        || async {
            let list = revisions.list(&ListParams::default()).await?;
            let hash = list
                .items
                .into_iter()
                .filter_map(|r| {
                    let m = r.metadata?;
                    let owned = m.owner_references.iter().any(|o| o.name == owner);
                    (r.revision == number && owned).then(|| m.labels["controller-revision-hash"].clone())
                })
                .next();
            anyhow::Ok(hash)
        },
    )
    .await
}

/// Waits until `want` (pod name -> revision hash) are the ready pods matching `selector`.
async fn pods_at(cluster: &TestCluster, selector: &str, want: &[(&str, &str)]) -> anyhow::Result<()> {
    eventually(
        &format!("pods {want:?} ready"),
        Duration::from_secs(90),
        || async {
            let pods = live_pods(cluster, selector).await?;
            let got: Vec<(String, String)> = pods
                .iter()
                .filter(|p| pod_ready(p))
                .map(|p| {
                    (
                        name(p),
                        p.metadata.as_ref().unwrap().labels["controller-revision-hash"].clone(),
                    )
                })
                .collect();
            let want: Vec<(String, String)> =
                want.iter().map(|(n, h)| (n.to_string(), h.to_string())).collect();
            anyhow::ensure!(got == want && pods.len() == want.len(), "ready: {got:?}");
            Ok(true)
        },
    )
    .await
}

async fn live_pods(cluster: &TestCluster, selector: &str) -> anyhow::Result<Vec<Pod>> {
    let pods = cluster.api::<Pod>("default")?;
    let mut found: Vec<Pod> = pods
        .list(&ListParams::default().labels(selector))
        .await?
        .items
        .into_iter()
        .filter(live)
        .collect();
    found.sort_by_key(name);
    Ok(found)
}

async fn jobs(netns: std::path::PathBuf) -> anyhow::Result<()> {
    let cluster = TestCluster::start(netns, ClusterOptions::default()).await?;
    // the attempts count themselves in a directory of the node, so the third one succeeds
    let state = tempfile::tempdir()?;
    cluster.apply(&format!(
        "apiVersion: batch/v1
kind: Job
metadata: {{name: flaky}}
spec:
  backoffLimit: 4
  template:
    spec:
      restartPolicy: Never
      volumes: [{{name: state, hostPath: {{path: {dir}, type: DirectoryOrCreate}}}}]
      containers:
      - name: try
        image: {image}
        command: [sh, -c, 'n=$(cat /state/n 2>/dev/null || echo 0); echo $((n+1)) > /state/n; echo attempt $n; [ $n -ge 2 ]']
        volumeMounts: [{{name: state, mountPath: /state}}]
",
        dir = state.path().display(),
        image = cluster.image
    ))?;
    let out = cluster.rkubectl(&["wait", "--for=condition=complete", "job/flaky", "--timeout=120s"])?;
    assert_eq!(out, "job.batch/flaky condition met\n");
    let job = cluster.api::<Job>("default")?.get("flaky").await?;
    let s = job.status.unwrap_or_default();
    assert_eq!(
        (s.failed, s.succeeded, s.active),
        (2, 1, 0),
        "two failures, then a success"
    );
    let pods = live_pods(&cluster, "batch.kubernetes.io/job-name=flaky").await?;
    let phases: Vec<String> = pods
        .iter()
        .map(|p| p.status.as_ref().map(|s| s.phase.clone()).unwrap_or_default())
        .collect();
    assert_eq!(phases.iter().filter(|p| *p == "Failed").count(), 2, "{phases:?}");
    let logs = cluster.rkubectl(&["logs", "job/flaky"])?;
    assert!(
        logs.starts_with("attempt "),
        "logs of one of the job's pods: {logs:?}"
    );
    let table = cluster.rkubectl(&["get", "jobs"])?;
    assert!(table.contains("flaky") && table.contains("Complete"), "{table}");

    // deleting the Job takes its pods
    cluster.rkubectl(&["delete", "job", "flaky"])?;
    eventually("the Job's pods to go", Duration::from_secs(60), || async {
        let all = cluster
            .api::<Pod>("default")?
            .list(&ListParams::default().labels("batch.kubernetes.io/job-name=flaky"))
            .await?;
        anyhow::ensure!(all.items.is_empty(), "{} pods left", all.items.len());
        Ok(true)
    })
    .await?;

    // a quota of three pods: a Deployment of four runs three, and a fourth pod is refused
    cluster.rkubectl(&["create", "namespace", "capped"])?;
    cluster.apply("apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: pods-3, namespace: capped}\nspec: {hard: {pods: '3'}}\n")?;
    cluster.rkubectl(&[
        "-n",
        "capped",
        "create",
        "deployment",
        "web",
        &format!("--image={}", cluster.image),
        "--replicas=4",
        "--",
        "sh",
        "-c",
        "exec sleep 3600",
    ])?;
    eventually(
        "three of four replicas to run",
        Duration::from_secs(90),
        || async {
            let pods = cluster
                .api::<Pod>("capped")?
                .list(&ListParams::default())
                .await?
                .items;
            let ready = pods.iter().filter(|p| pod_ready(p)).count();
            anyhow::ensure!(
                pods.len() == 3 && ready == 3,
                "{} pods, {ready} ready",
                pods.len()
            );
            Ok(true)
        },
    )
    .await?;
    let refused = cluster
        .rkubectl(&[
            "-n",
            "capped",
            "run",
            "extra",
            &format!("--image={}", cluster.image),
        ])
        .expect_err("a fourth pod is over the quota");
    assert!(
        format!("{refused:#}")
            .contains("exceeded quota: pods-3, requested: pods=1, used: pods=3, limited: pods=3"),
        "{refused:#}"
    );
    let events = cluster.rkubectl(&[
        "-n",
        "capped",
        "get",
        "events",
        "-o",
        "jsonpath={.items[*].message}",
    ])?;
    assert!(
        events.contains("exceeded quota: pods-3"),
        "the ReplicaSet says why: {events}"
    );
    cluster.stop().await
}

#[test]
fn a_job_whose_pods_fail_twice_then_succeed_completes() -> anyhow::Result<()> {
    run(jobs)
}

async fn cron_job(netns: std::path::PathBuf) -> anyhow::Result<()> {
    let cluster = TestCluster::start(netns, ClusterOptions::default()).await?;
    // every minute, each run outlasting the next slot: Forbid must skip, not overlap
    cluster.apply(&format!(
        "apiVersion: batch/v1
kind: CronJob
metadata: {{name: tick}}
spec:
  schedule: '*/1 * * * *'
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: 1
          containers:
          - name: tick
            image: {image}
            command: [sh, -c, 'echo tick; exec sleep 3600']
",
        image = cluster.image
    ))?;
    let jobs = cluster.api::<Job>("default")?;
    let first = eventually("the first scheduled run", Duration::from_secs(75), || async {
        let list = jobs.list(&ListParams::default()).await?;
        anyhow::ensure!(list.items.len() == 1, "{} jobs", list.items.len());
        Ok(Some(list.items[0].clone()))
    })
    .await?;
    let first = first.metadata.map(|m| m.name).unwrap_or_default();
    assert!(first.starts_with("tick-"), "{first}");
    // the next slot comes while the first run is still active: skipped, and said so
    eventually("the next run to be skipped", Duration::from_secs(75), || async {
        let out = cluster.rkubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=tick",
            "-o",
            "jsonpath={.items[*].reason}",
        ])?;
        anyhow::ensure!(out.contains("JobAlreadyActive"), "events: {out}");
        Ok(true)
    })
    .await?;
    let names: Vec<String> = jobs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|j| j.metadata.map(|m| m.name))
        .collect();
    assert_eq!(names, [first], "no second run while the first is active");

    // a run by hand is not subject to the schedule
    let out = cluster.rkubectl(&["create", "job", "tick-now", "--from=cronjob/tick"])?;
    assert_eq!(out, "job.batch/tick-now created\n");
    eventually(
        "the manual run's pod to start",
        Duration::from_secs(60),
        || async {
            let pods = live_pods(&cluster, "batch.kubernetes.io/job-name=tick-now").await?;
            Ok(pods.iter().any(pod_ready))
        },
    )
    .await?;

    // deleting the CronJob takes its Jobs and their pods
    cluster.rkubectl(&["delete", "cronjob", "tick"])?;
    eventually(
        "the CronJob's jobs and pods to go",
        Duration::from_secs(60),
        || async {
            let left_jobs = jobs.list(&ListParams::default()).await?.items.len();
            let left_pods = cluster
                .api::<Pod>("default")?
                .list(&ListParams::default())
                .await?
                .items
                .len();
            anyhow::ensure!(left_jobs + left_pods == 0, "{left_jobs} jobs, {left_pods} pods");
            Ok(true)
        },
    )
    .await?;
    cluster.stop().await
}

#[test]
fn a_cron_job_runs_on_schedule_without_overlapping_under_forbid() -> anyhow::Result<()> {
    run(cron_job)
}

/// Every pod event of a selector, in order: (name, "ADDED" | "TERMINATING").
async fn record_pod_events(
    cluster: &TestCluster,
    selector: &str,
) -> anyhow::Result<(
    Arc<Mutex<Vec<(String, &'static str)>>>,
    tokio::task::JoinHandle<()>,
)> {
    let pods = cluster.api::<Pod>("default")?;
    let list = pods.list(&ListParams::default().labels(selector)).await?;
    let mut stream = pods
        .watch(&WatchParams {
            label_selector: selector.into(),
            resource_version: list.resource_version,
            ..Default::default()
        })
        .await?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let events = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(Ok(ev)) = stream.next().await {
            let mut events = events.lock().unwrap_or_else(|e| e.into_inner());
            match ev {
                WatchEvent::Added(p) => events.push((name(&p), "ADDED")),
                WatchEvent::Modified(p) if !live(&p) => {
                    let n = name(&p);
                    if !events.iter().any(|(e, k)| *e == n && *k == "TERMINATING") {
                        events.push((n, "TERMINATING"));
                    }
                }
                _ => {}
            }
        }
    });
    Ok((seen, task))
}

fn events_of(seen: &Mutex<Vec<(String, &'static str)>>, kind: &str) -> Vec<String> {
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(_, k)| *k == kind)
        .map(|(n, _)| n.clone())
        .collect()
}

async fn ready_names(cluster: &TestCluster, selector: &str, want: &[&str]) -> anyhow::Result<()> {
    eventually(
        &format!("ready pods {want:?}"),
        Duration::from_secs(90),
        || async {
            let pods = live_pods(cluster, selector).await?;
            let ready: Vec<String> = pods.iter().filter(|p| pod_ready(p)).map(name).collect();
            let names: Vec<String> = pods.iter().map(name).collect();
            anyhow::ensure!(ready == want && names == want, "pods {names:?}, ready {ready:?}");
            Ok(true)
        },
    )
    .await
}

async fn stateful_set(netns: std::path::PathBuf) -> anyhow::Result<()> {
    let cluster = TestCluster::start(netns, ClusterOptions::default()).await?;
    cluster.apply(&format!(
        "apiVersion: v1
kind: Service
metadata: {{name: db}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{port: 5432}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: 3
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: {image}
        command: [sh, -c, 'exec sleep 3600']
",
        image = cluster.image
    ))?;
    ready_names(&cluster, "app=db", &["db-0", "db-1", "db-2"]).await?;
    let out = cluster.rkubectl(&["rollout", "status", "statefulset/db", "--timeout=60s"])?;
    assert!(
        out.contains("statefulset rolling update complete 3 pods"),
        "{out}"
    );
    // stable names are the pods' hostnames
    let host = cluster.rkubectl(&["exec", "db-1", "--", "hostname"])?;
    assert_eq!(host.trim(), "db-1");

    let (seen, watcher) = record_pod_events(&cluster, "app=db").await?;
    cluster.rkubectl(&["scale", "statefulset/db", "--replicas=5"])?;
    ready_names(&cluster, "app=db", &["db-0", "db-1", "db-2", "db-3", "db-4"]).await?;
    assert_eq!(events_of(&seen, "ADDED"), ["db-3", "db-4"], "created in order");
    cluster.rkubectl(&["scale", "statefulset/db", "--replicas=2"])?;
    ready_names(&cluster, "app=db", &["db-0", "db-1"]).await?;
    eventually("the removed pods to be gone", Duration::from_secs(60), || async {
        let all = cluster
            .api::<Pod>("default")?
            .list(&ListParams::default().labels("app=db"))
            .await?;
        Ok(all.items.len() == 2)
    })
    .await?;
    watcher.abort();
    assert_eq!(
        events_of(&seen, "TERMINATING"),
        ["db-4", "db-3", "db-2"],
        "removed in reverse order"
    );

    // an update with a partition replaces only the pods at or above it; a pod below it
    // that is deleted comes back at the old template; undo goes back
    let first = revision_hash(&cluster, "db", 1).await?;
    cluster.rkubectl(&[
        "patch",
        "statefulset/db",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":1}}}}"#,
    ])?;
    cluster.rkubectl(&["rollout", "restart", "statefulset/db"])?;
    let second = revision_hash(&cluster, "db", 2).await?;
    pods_at(&cluster, "app=db", &[("db-0", &first), ("db-1", &second)]).await?;
    cluster.rkubectl(&["delete", "pod", "db-0"])?;
    pods_at(&cluster, "app=db", &[("db-0", &first), ("db-1", &second)]).await?;
    let history = cluster.rkubectl(&["rollout", "history", "statefulset/db"])?;
    assert_eq!(
        history,
        "statefulset.apps/db \nREVISION  CHANGE-CAUSE\n1         <none>\n2         <none>\n\n"
    );
    let out = cluster.rkubectl(&["rollout", "undo", "statefulset/db"])?;
    assert_eq!(out.trim(), "statefulset.apps/db rolled back");
    pods_at(&cluster, "app=db", &[("db-0", &first), ("db-1", &first)]).await?;
    assert_eq!(
        revision_hash(&cluster, "db", 3).await?,
        first,
        "revision 1 renumbered"
    );

    cluster.rkubectl(&["delete", "statefulset", "db"])?;
    eventually(
        "the StatefulSet's pods to go",
        Duration::from_secs(60),
        || async {
            let all = cluster
                .api::<Pod>("default")?
                .list(&ListParams::default().labels("app=db"))
                .await?;
            Ok(all.items.is_empty())
        },
    )
    .await?;
    cluster.stop().await
}

#[test]
fn a_stateful_set_scales_up_in_order_and_down_in_reverse() -> anyhow::Result<()> {
    run(stateful_set)
}

async fn pods_by_node(cluster: &TestCluster) -> anyhow::Result<Vec<String>> {
    let mut nodes: Vec<String> = live_pods(cluster, "app=agent")
        .await?
        .iter()
        .filter(|p| pod_ready(p))
        .map(|p| p.spec.as_ref().map(|s| s.node_name.clone()).unwrap_or_default())
        .collect();
    nodes.sort();
    Ok(nodes)
}

async fn agents_on(cluster: &TestCluster, want: &[&str]) -> anyhow::Result<()> {
    eventually(
        &format!("agent pods ready on {want:?}"),
        Duration::from_secs(90),
        || async {
            let got = pods_by_node(cluster).await?;
            anyhow::ensure!(got == want, "ready on {got:?}");
            Ok(true)
        },
    )
    .await
}

async fn daemon_set(netns: std::path::PathBuf) -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(
        netns,
        ClusterOptions {
            nodes: 3,
            ..Default::default()
        },
    )
    .await?;
    // node-2 joins later: its kubelet is stopped and its Node removed
    cluster.nodes[2].stop_kubelet().await;
    cluster.rkubectl(&["delete", "node", "node-2"])?;
    cluster.apply(&format!(
        "apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: agent
        image: {image}
        command: [sh, -c, 'exec sleep 3600']
",
        image = cluster.image
    ))?;
    agents_on(&cluster, &["node-0", "node-1"]).await?;
    let out = cluster.rkubectl(&["rollout", "status", "daemonset/agent", "--timeout=60s"])?;
    assert_eq!(
        out.trim_end().lines().last(),
        Some("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );
    cluster.nodes[2].start_kubelet().await?;
    agents_on(&cluster, &["node-0", "node-1", "node-2"]).await?;
    // a NoExecute taint the pods do not tolerate sends them away
    cluster.rkubectl(&["taint", "nodes", "node-1", "maintenance=now:NoExecute"])?;
    agents_on(&cluster, &["node-0", "node-2"]).await?;
    let sets = cluster.api::<DaemonSet>("default")?;
    eventually("the DaemonSet's status", Duration::from_secs(30), || async {
        let s = sets.get("agent").await?.status.unwrap_or_default();
        let counts = (
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_ready,
        );
        anyhow::ensure!(counts == (2, 2, 2), "{s:?}");
        Ok(true)
    })
    .await?;

    // each template is a revision: a restart makes revision 2 (with the change cause the
    // DaemonSet carried), undo brings revision 1 back as revision 3, and the pods follow
    let first = revision_hash(&cluster, "agent", 1).await?;
    cluster.rkubectl(&[
        "annotate",
        "daemonset/agent",
        "kubernetes.io/change-cause=restarted",
    ])?;
    cluster.rkubectl(&["rollout", "restart", "daemonset/agent"])?;
    let second = revision_hash(&cluster, "agent", 2).await?;
    let at = |hash: String| {
        let cluster = &cluster;
        async move {
            eventually("agents at one revision", Duration::from_secs(90), || async {
                let pods = live_pods(cluster, "app=agent").await?;
                let hashes: Vec<&str> = pods
                    .iter()
                    .filter(|p| pod_ready(p))
                    .map(|p| p.metadata.as_ref().unwrap().labels["controller-revision-hash"].as_str())
                    .collect();
                anyhow::ensure!(hashes == [hash.as_str(); 2] && pods.len() == 2, "{hashes:?}");
                Ok(true)
            })
            .await
        }
    };
    at(second.clone()).await?;
    let history = cluster.rkubectl(&["rollout", "history", "daemonset/agent"])?;
    assert_eq!(
        history,
        "daemonset.apps/agent \nREVISION  CHANGE-CAUSE\n1         <none>\n2         restarted\n\n"
    );
    let out = cluster.rkubectl(&["rollout", "undo", "daemonset/agent"])?;
    assert_eq!(out.trim(), "daemonset.apps/agent rolled back");
    at(first.clone()).await?;
    assert_eq!(revision_hash(&cluster, "agent", 3).await?, first);
    let out = cluster.rkubectl(&["rollout", "undo", "daemonset/agent", "--to-revision=3"])?;
    assert_eq!(
        out.trim(),
        "daemonset.apps/agent skipped rollback (current template already matches revision 3)"
    );

    cluster.rkubectl(&["delete", "daemonset", "agent"])?;
    eventually("the DaemonSet's pods to go", Duration::from_secs(60), || async {
        let all = cluster
            .api::<Pod>("default")?
            .list(&ListParams::default().labels("app=agent"))
            .await?;
        Ok(all.items.is_empty())
    })
    .await?;
    cluster.stop().await
}

#[test]
fn a_daemon_set_follows_nodes_that_join_and_leaves_tainted_ones() -> anyhow::Result<()> {
    run(daemon_set)
}
