//! Node pressure on a real node: a kubelet whose root dir is a small tmpfs (a real
//! filesystem that fills for real) reports DiskPressure, evicts the pod filling it and
//! not the Guaranteed one beside it, and reports the pressure gone once the transition
//! period has passed; image garbage collection removes an image no container uses.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rkube_api::core::v1::{Event, Node};
use rkube_client::{Api, ListParams};
use rkube_kubelet::node_pressure::thresholds::parse_thresholds;
use rkube_node_runtime::runtime::{ContainerRuntime as _, PullOptions};

use super::{phase, require_containerd, wait_for_event, Cluster};

/// A tmpfs mounted over a directory, lazily unmounted when dropped (a container may
/// still hold it in its own mount namespace).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()?;
        anyhow::ensure!(status.success(), "mounting a tmpfs on {}", dir.display());
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn node_condition(node: &Node, kind: &str) -> Option<(String, String)> {
    let c = node
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == kind)?;
    Some((c.status.clone(), c.reason.clone()))
}

async fn wait_disk_pressure(c: &Cluster, want: &str) -> anyhow::Result<String> {
    let nodes: Api<Node> = Api::all(c.client.clone());
    let name = c.config.node_name.clone();
    rkube_testing::eventually(
        &format!("DiskPressure {want}"),
        Duration::from_secs(60),
        || async {
            let node = nodes.get(&name).await?;
            Ok(node_condition(&node, "DiskPressure")
                .filter(|(status, _)| status == want)
                .map(|(_, reason)| reason))
        },
    )
    .await
}

/// Creates a Guaranteed pod `name` (requests equal limits) that sleeps, and waits until it runs.
async fn run_guaranteed_pod(c: &Cluster, name: &str) -> anyhow::Result<()> {
    let yaml = r#"
metadata: {name: NAME}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: IMAGE
    command: [sh, -c, "exec sleep 3600"]
    resources:
      requests: {cpu: 100m, memory: 64Mi}
      limits: {cpu: 100m, memory: 64Mi}
"#;
    c.create_pod(&yaml.replace("NAME", name)).await?;
    c.wait_pod(name, Duration::from_secs(60), |p| {
        (phase(p) == "Running").then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_node_filesystem_evicts_the_best_effort_pod_filling_it() -> anyhow::Result<()> {
    require_containerd!();
    let mut root = None;
    let mut mount_error = None;
    let c = Cluster::start_with(|config| {
        // 16 MiB of real filesystem for volumes and logs; pressure below half of it
        match Tmpfs::mount(&config.root_dir, "16m") {
            Ok(t) => root = Some(t),
            Err(e) => mount_error = Some(e),
        }
        config.eviction_hard = parse_thresholds("--eviction-hard", "nodefs.available<50%").unwrap();
        config.eviction_pressure_transition_period = Duration::from_secs(4);
        config.eviction_monitoring_period = Duration::from_millis(300);
    })
    .await?;
    if let Some(e) = mount_error {
        return Err(e);
    }
    assert_eq!(wait_disk_pressure(&c, "False").await?, "KubeletHasNoDiskPressure");

    run_guaranteed_pod(&c, "steady").await?;
    c.create_pod(
        r#"
metadata: {name: filler}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: app
    image: IMAGE
    command: [sh, -c, "dd if=/dev/zero of=/scratch/fill bs=1M count=12; exec sleep 3600"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  volumes:
  - {name: scratch, emptyDir: {}}
"#,
    )
    .await?;

    let (reason, message) = c
        .wait_pod("filler", Duration::from_secs(60), |p| {
            let s = p.status.as_ref()?;
            (s.phase == "Failed").then(|| (s.reason.clone(), s.message.clone()))
        })
        .await?;
    assert_eq!(reason, "Evicted");
    assert!(
        message.starts_with(
            "The node was low on resource: ephemeral-storage. Threshold quantity: 8Mi, available: "
        ),
        "{message}"
    );
    assert!(
        message.ends_with("request is 0, has larger consumption of ephemeral-storage."),
        "{message}"
    );
    // the pressure is reported while it lasts, and a little after
    assert_eq!(wait_disk_pressure(&c, "True").await?, "KubeletHasDiskPressure");
    let events: Api<Event> = Api::all(c.client.clone());
    assert_eq!(wait_for_event(&events, "filler", "Evicted").await?, message);
    let node_event = wait_for_event(&events, &c.config.node_name, "EvictionThresholdMet").await?;
    assert_eq!(node_event, "Attempting to reclaim ephemeral-storage");

    // the space came back (the evicted pod's emptyDir is emptied) and, once the
    // transition period is over, the pressure is gone; the Guaranteed pod ran through it
    assert_eq!(wait_disk_pressure(&c, "False").await?, "KubeletHasNoDiskPressure");
    let steady = c.pods().get("steady").await?;
    assert_eq!(phase(&steady), "Running");
    let restarts: i32 = steady
        .status
        .iter()
        .flat_map(|s| &s.container_statuses)
        .map(|cs| cs.restart_count)
        .sum();
    assert_eq!(restarts, 0);
    let events = events.list(&ListParams::default()).await?;
    assert!(
        !events
            .items
            .iter()
            .any(|e| e.reason == "Evicted" && e.involved_object.as_ref().is_some_and(|o| o.name == "steady")),
        "the Guaranteed pod was not evicted"
    );
    // unmounted before the node's directory is removed
    drop(root);
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn image_garbage_collection_removes_unused_images_and_keeps_used_ones() -> anyhow::Result<()> {
    require_containerd!();
    let mut c = Cluster::start().await?;
    c.create_pod(
        r#"
metadata: {name: user}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: app, image: IMAGE, command: [sh, -c, "exec sleep 3600"]}
"#,
    )
    .await?;
    c.wait_pod("user", Duration::from_secs(60), |p| {
        (phase(p) == "Running").then_some(())
    })
    .await?;
    let (spare, _) = c.registry.push_busybox("rkube/spare").await?;
    let runtime = c.node.runtime();
    runtime.pull_image(&spare, &PullOptions::default()).await?;
    assert!(runtime.image_present(&spare).await?.is_some());

    // The image filesystem is surely fuller than 1%: collect down to 0%.
    c.kubelet.take().expect("kubelet running").stop().await;
    c.config.image_gc_high_threshold = 1;
    c.config.image_gc_low_threshold = 0;
    c.config.minimum_image_ttl = Duration::ZERO;
    c.kubelet = Some(rkube_kubelet::start(c.config.clone()).await?);

    rkube_testing::eventually("the unused image removed", Duration::from_secs(30), || async {
        Ok(runtime.image_present(&spare).await?.is_none().then_some(()))
    })
    .await?;
    assert!(
        runtime.image_present(&c.image).await?.is_some(),
        "the image a container uses stays"
    );
    assert_eq!(phase(&c.pods().get("user").await?), "Running");
    c.stop().await
}

/// A memory threshold no machine satisfies trips MemoryPressure for real: the BestEffort
/// pod (using memory beyond its request of nothing) goes before the Guaranteed one, with
/// Kubernetes' memory message naming its container's working set.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_pressure_evicts_the_best_effort_pod_first() -> anyhow::Result<()> {
    require_containerd!();
    let mut c = Cluster::start().await?;
    run_guaranteed_pod(&c, "guaranteed").await?;
    c.create_pod(
        r#"
metadata: {name: besteffort}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - {name: app, image: IMAGE, command: [sh, -c, "exec sleep 3600"]}
"#,
    )
    .await?;
    c.wait_pod("besteffort", Duration::from_secs(60), |p| {
        (phase(p) == "Running").then_some(())
    })
    .await?;
    c.kubelet.take().expect("kubelet running").stop().await;
    c.config.eviction_hard =
        parse_thresholds("--eviction-hard", "memory.available<1Ti").map_err(anyhow::Error::msg)?;
    // a look every 2 s: time to see one eviction before the next
    c.config.eviction_monitoring_period = Duration::from_secs(2);
    c.kubelet = Some(rkube_kubelet::start(c.config.clone()).await?);

    let message = c
        .wait_pod("besteffort", Duration::from_secs(60), |p| {
            let s = p.status.as_ref()?;
            (s.phase == "Failed" && s.reason == "Evicted").then(|| s.message.clone())
        })
        .await?;
    assert_eq!(phase(&c.pods().get("guaranteed").await?), "Running", "not first");
    assert!(
        message.starts_with("The node was low on resource: memory. Threshold quantity: 1Ti, available: "),
        "{message}"
    );
    assert!(
        message.contains(". Container app was using ")
            && message.ends_with(", request is 0, has larger consumption of memory."),
        "{message}"
    );
    let nodes: Api<Node> = Api::all(c.client.clone());
    let name = c.config.node_name.clone();
    rkube_testing::eventually("MemoryPressure True", Duration::from_secs(30), || async {
        let node = nodes.get(&name).await?;
        Ok(node_condition(&node, "MemoryPressure")
            .filter(|(s, r)| s == "True" && r == "KubeletHasInsufficientMemory"))
    })
    .await?;
    c.stop().await
}
