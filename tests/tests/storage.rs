//! Storage end to end (issue 18): a one-node cluster with the cloud-controller-manager's
//! `local` provider, real containers and real ext4 volumes on loop devices under the
//! kubelet's root dir in the test's temp dir.
//!
//! What a user sees: a claim of the default class (WaitForFirstConsumer) is provisioned
//! on the node its pod is scheduled to; a file a pod writes there is read back by a new
//! pod (through a readOnly claim, which refuses writes); a write past the claim's size fails with "No space left on device"; a Retain
//! volume keeps its data after its claim is deleted and serves a new claim; a hand-made
//! Delete volume turns Failed instead of losing track of its data; a StatefulSet's
//! replicas each get their own volume, still mounted after a kubelet restart and kept
//! across a rolling update; two pods share a ReadWriteMany claim on the node, and a
//! restarted kubelet cleans up the volume of a pod force-deleted while it was down;
//! deleting a Delete claim removes its volume and its image file; no loop device of the
//! test is left at the end. A pod whose disk-backed emptyDir outgrows its `sizeLimit` is
//! evicted; one within its limit is not.

use anyhow::Context;
use futures::StreamExt;
use rkube_api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod};
use rkube_api::Resource;
use rkube_client::{Api, Client, DeleteParams};
use rkube_e2e::{run, ClusterOptions, TestCluster};
use rkube_testing::eventually;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CLASSES: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rkube.io/local
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: keep}
provisioner: rkube.io/local
reclaimPolicy: Retain
"#;

fn claim(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 16Mi}}}}\n{extra}"
    )
}

/// A pod that runs `script` once with `claim` at /data.
fn pod(name: &str, claim: &str, image: &str, script: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", {script:?}]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim}}}
"#
    )
}

async fn logs(client: &Client, pod: &str) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let mut chunks = client
        .logs(rkube_api::kubelet::v1::LogsRequest {
            namespace: "default".into(),
            pod: pod.into(),
            ..Default::default()
        })
        .await?;
    while let Some(chunk) = chunks.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Waits for the pod to finish and returns its phase and log.
async fn finished(cluster: &TestCluster, name: &str) -> anyhow::Result<(String, String)> {
    let pods = cluster.api::<Pod>("default")?;
    let phase = eventually(
        &format!("pod {name} to finish"),
        Duration::from_secs(90),
        || async {
            let p = pods.get(name).await.ok()?;
            let phase = p.status.map(|s| s.phase).unwrap_or_default();
            matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
        },
    )
    .await?;
    Ok((phase, logs(&cluster.client()?, name).await?))
}

async fn delete_pod(cluster: &TestCluster, name: &str) -> anyhow::Result<()> {
    let pods = cluster.api::<Pod>("default")?;
    pods.delete(name, &DeleteParams::default()).await?;
    eventually(&format!("pod {name} to go"), Duration::from_secs(60), || async {
        matches!(pods.get_opt(name).await, Ok(None)).then_some(())
    })
    .await
}

async fn bound_volume(cluster: &TestCluster, claim: &str) -> anyhow::Result<PersistentVolume> {
    let claims = cluster.api::<PersistentVolumeClaim>("default")?;
    let volumes = Api::<PersistentVolume>::all(cluster.client()?);
    let name = eventually(
        &format!("claim {claim} to be Bound"),
        Duration::from_secs(60),
        || async {
            let c = claims.get(claim).await.ok()?;
            let bound = c.status.as_ref().is_some_and(|s| s.phase == "Bound");
            let volume = c.spec.map(|s| s.volume_name).unwrap_or_default();
            (bound && !volume.is_empty()).then_some(volume)
        },
    )
    .await?;
    Ok(volumes.get(&name).await?)
}

/// Loop devices whose backing file is below `dir`.
fn loop_devices_below(dir: &Path) -> Vec<String> {
    let out = Command::new("losetup").args(["-a"]).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .map(str::to_string)
        .collect()
}

async fn scenario(netns: PathBuf) -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(
        netns,
        ClusterOptions {
            nodes: 1,
            cloud: true,
            ..Default::default()
        },
    )
    .await?;
    let root = cluster.nodes[0].kubelet_config.root_dir.clone();
    let result = checks(&mut cluster, &root).await;
    if result.is_err() {
        eprintln!("{}", cluster.diagnostics().await);
    }
    // whatever happened, no volume stays mounted or attached
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "awk '$5 ~ \"^{0}/\" {{print $5}}' /proc/self/mountinfo | sort -r | xargs -r umount -l",
            root.display()
        ))
        .status();
    cluster.stop().await?;
    result
}

async fn checks(cluster: &mut TestCluster, root: &Path) -> anyhow::Result<()> {
    let image = cluster.image.clone();
    let client = cluster.client()?;
    let claims = cluster.api::<PersistentVolumeClaim>("default")?;
    let volumes = Api::<PersistentVolume>::all(client.clone());
    cluster.apply(CLASSES)?;

    // 1. The default class is given at admission; the claim waits for its first pod.
    cluster.apply(&claim("data", ""))?;
    let made = claims.get("data").await?;
    assert_eq!(
        made.spec.as_ref().unwrap().storage_class_name.as_deref(),
        Some("local")
    );
    cluster.apply(&pod(
        "writer",
        "data",
        &image,
        "echo kept-across-pods > /data/msg && sync && df -k /data | tail -1",
    ))?;
    let (phase, log) = finished(cluster, "writer").await?;
    assert_eq!(phase, "Succeeded", "writer: {log}");
    let pv = bound_volume(cluster, "data").await?;
    let spec = pv.spec.clone().unwrap();
    assert_eq!(spec.storage_class_name, "local");
    assert_eq!(spec.persistent_volume_reclaim_policy, "Delete");
    let node = &cluster.nodes[0].name;
    let affinity = serde_json::to_string(&spec.node_affinity)?;
    assert!(affinity.contains(node.as_str()), "{affinity}");
    let claimed = claims.get("data").await?;
    assert_eq!(
        claimed
            .metadata()
            .annotations
            .get("volume.kubernetes.io/selected-node"),
        Some(node)
    );
    // its own filesystem, of about the claim's size (df's 1K-blocks column)
    let blocks: u64 = log.split_whitespace().nth(1).context("df output")?.parse()?;
    assert!((10_000..=16_384).contains(&blocks), "df: {log}");
    let image_file = PathBuf::from(format!("{}.img", spec.local.as_ref().unwrap().path));
    assert!(image_file.starts_with(root), "{}", image_file.display());
    assert_eq!(std::fs::metadata(&image_file)?.len(), 16 << 20);

    // 2. A new pod reads the file back; its claim is readOnly, so it cannot write.
    delete_pod(cluster, "writer").await?;
    cluster.apply(
        &pod(
            "reader",
            "data",
            &image,
            "cat /data/msg && ! touch /data/nope 2>/dev/null && echo read-only",
        )
        .replace("{claimName: data}", "{claimName: data, readOnly: true}"),
    )?;
    let (phase, log) = finished(cluster, "reader").await?;
    assert_eq!(
        (phase.as_str(), log.as_str()),
        ("Succeeded", "kept-across-pods\nread-only\n")
    );
    delete_pod(cluster, "reader").await?;

    // 3. Writing past the claim's size fails inside the container.
    cluster.apply(&pod(
        "filler",
        "data",
        &image,
        "dd if=/dev/zero of=/data/big bs=1M count=64 2>&1; rm -f /data/big",
    ))?;
    let (_, log) = finished(cluster, "filler").await?;
    assert!(log.contains("No space left on device"), "filler: {log}");
    assert_eq!(
        std::fs::metadata(&image_file)?.len(),
        16 << 20,
        "the image did not grow"
    );
    delete_pod(cluster, "filler").await?;

    // 3b. Two pods on the node share one claim (ReadWriteMany, within one node's
    // filesystem): what one writes the other reads, and the volume stays attached while
    // either uses it.
    cluster.apply(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: shared, namespace: default}\nspec:\n  accessModes: [ReadWriteMany]\n  resources: {requests: {storage: 8Mi}}\n",
    )?;
    cluster.apply(&pod(
        "share-a",
        "shared",
        &image,
        "echo from-a > /data/a && sync && exec sleep 3600",
    ))?;
    cluster.apply(&pod(
        "share-b",
        "shared",
        &image,
        "until [ -f /data/a ]; do sleep 0.1; done; cat /data/a; \
         until [ -f /data/go ]; do sleep 0.1; done; echo from-b > /data/b; sync; exec sleep 3600",
    ))?;
    let shared = bound_volume(cluster, "shared").await?;
    let shared_dir = PathBuf::from(&shared.spec.as_ref().unwrap().local.as_ref().unwrap().path);
    eventually(
        "share-b to read what share-a wrote",
        Duration::from_secs(60),
        || async { (logs(&client, "share-b").await.ok()? == "from-a\n").then_some(()) },
    )
    .await?;
    delete_pod(cluster, "share-a").await?;
    // share-b still has the volume: a file put in through the node's mount reaches it
    std::fs::write(shared_dir.join("go"), "")?;
    let answer = eventually("share-b to answer", Duration::from_secs(30), || async {
        std::fs::read_to_string(shared_dir.join("b")).ok()
    })
    .await?;
    assert_eq!(answer, "from-b\n");

    // A pod force-deleted while the kubelet is down: the restarted kubelet unmounts its
    // volume (the last user gone) and removes its directory.
    let pods = cluster.api::<Pod>("default")?;
    let b_uid = pods.get("share-b").await?.metadata().uid.clone();
    cluster.nodes[0].stop_kubelet().await;
    pods.delete(
        "share-b",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await?;
    assert!(pods.get_opt("share-b").await?.is_none());
    assert!(rkube_node_runtime::local_volume::is_mounted(&shared_dir));
    cluster.nodes[0].start_kubelet().await?;
    let b_dir = root.join("pods").join(&b_uid);
    eventually(
        "the restarted kubelet to clean up the deleted pod's volume",
        Duration::from_secs(60),
        || async {
            (!rkube_node_runtime::local_volume::is_mounted(&shared_dir) && !b_dir.exists()).then_some(())
        },
    )
    .await?;
    claims.delete("shared", &DeleteParams::default()).await?;
    eventually(
        "the shared volume to be deleted",
        Duration::from_secs(30),
        || async { matches!(volumes.get_opt(shared.name()).await, Ok(None)).then_some(()) },
    )
    .await?;

    // 4. Deleting a claim in use waits for its pod.
    cluster.apply(&pod("holder", "data", &image, "sleep 3600"))?;
    eventually("holder to run", Duration::from_secs(60), || async {
        let p = pods.get("holder").await.ok()?;
        (p.status?.phase == "Running").then_some(())
    })
    .await?;
    claims.delete("data", &DeleteParams::default()).await?;
    // a negative: over two seconds of the binder's attention the claim stays, marked
    for _ in 0..10 {
        let held = claims.get("data").await.context("the claim in use went")?;
        assert!(!held.metadata().deletion_timestamp.is_empty());
        assert!(held
            .metadata()
            .finalizers
            .iter()
            .any(|f| f == "kubernetes.io/pvc-protection"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    delete_pod(cluster, "holder").await?;
    // ... then goes, and with reclaim policy Delete its volume and image go too
    eventually("claim data to go", Duration::from_secs(30), || async {
        matches!(claims.get_opt("data").await, Ok(None)).then_some(())
    })
    .await?;
    eventually("its volume to be deleted", Duration::from_secs(30), || async {
        matches!(volumes.get_opt(pv.name()).await, Ok(None)).then_some(())
    })
    .await?;
    eventually("its image to be removed", Duration::from_secs(30), || async {
        (!image_file.exists()).then_some(())
    })
    .await?;

    // 5. Retain: the volume keeps its data after its claim goes, Released; an
    // administrator frees it and a new claim naming it reads the data.
    cluster.apply(&claim("precious", "  storageClassName: keep\n"))?;
    let kept = bound_volume(cluster, "precious").await?; // Immediate: bound before any pod
    cluster.apply(&pod(
        "saver",
        "precious",
        &image,
        "echo retained > /data/msg && sync",
    ))?;
    assert_eq!(finished(cluster, "saver").await?.0, "Succeeded");
    delete_pod(cluster, "saver").await?;
    claims.delete("precious", &DeleteParams::default()).await?;
    eventually(
        "the kept volume to be Released",
        Duration::from_secs(30),
        || async {
            let v = volumes.get(kept.name()).await.ok()?;
            (v.status?.phase == "Released").then_some(())
        },
    )
    .await?;
    volumes
        .patch_merge(kept.name(), &serde_json::json!({"spec": {"claimRef": null}}))
        .await?;
    cluster.apply(&claim(
        "again",
        &format!("  storageClassName: keep\n  volumeName: {}\n", kept.name()),
    ))?;
    assert_eq!(bound_volume(cluster, "again").await?.name(), kept.name());
    cluster.apply(&pod("restorer", "again", &image, "cat /data/msg"))?;
    let (phase, log) = finished(cluster, "restorer").await?;
    assert_eq!((phase.as_str(), log.as_str()), ("Succeeded", "retained\n"));
    delete_pod(cluster, "restorer").await?;

    // 5b. A hand-made volume with reclaim policy Delete: nothing can delete its storage,
    // so once its claim goes it turns Failed, says why, and its data stays.
    let handmade = root.join("handmade");
    std::fs::create_dir_all(&handmade)?;
    std::fs::write(handmade.join("keep"), "mine")?;
    cluster.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: handmade}}\nspec:\n  capacity: {{storage: 1Mi}}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Delete\n  storageClassName: \"\"\n  hostPath: {{path: {}}}\n",
        handmade.display()
    ))?;
    cluster.apply(&claim(
        "mine",
        "  storageClassName: \"\"\n  volumeName: handmade\n",
    ))?;
    bound_volume(cluster, "mine").await?;
    claims.delete("mine", &DeleteParams::default()).await?;
    let failed = eventually(
        "the hand-made volume to be Failed",
        Duration::from_secs(30),
        || async {
            let v = volumes.get("handmade").await.ok()?;
            (v.status.as_ref()?.phase == "Failed").then_some(v)
        },
    )
    .await?;
    let message = failed.status.unwrap().message;
    assert!(
        message.contains("persistentVolumeReclaimPolicy: Retain"),
        "{message}"
    );
    assert_eq!(std::fs::read_to_string(handmade.join("keep"))?, "mine");
    volumes.delete("handmade", &DeleteParams::default()).await?;

    // 6. A StatefulSet's replicas each get their own volume.
    cluster.apply(&format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web, namespace: default}}
spec:
  serviceName: web
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        command: ["sh", "-c", "[ -f /data/id ] || hostname > /data/id; exec sleep 3600"]
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 8Mi}}}}
"#
    ))?;
    let first = bound_volume(cluster, "data-web-0").await?;
    let second = bound_volume(cluster, "data-web-1").await?;
    assert_ne!(first.name(), second.name());
    for (pv, want) in [(&first, "web-0"), (&second, "web-1")] {
        let dir = PathBuf::from(&pv.spec.as_ref().unwrap().local.as_ref().unwrap().path);
        let id = eventually(
            &format!("{want} to write its id"),
            Duration::from_secs(60),
            // the shell creates the file before it writes the name: wait for the name
            || async {
                std::fs::read_to_string(dir.join("id"))
                    .ok()
                    .filter(|s| !s.trim().is_empty())
            },
        )
        .await?;
        assert_eq!(id.trim(), want);
    }

    // A kubelet restart leaves the volumes of running pods mounted (its housekeeping runs
    // at start): watched for two seconds.
    cluster.nodes[0].stop_kubelet().await;
    cluster.nodes[0].start_kubelet().await?;
    for _ in 0..10 {
        for pv in [&first, &second] {
            let dir = PathBuf::from(&pv.spec.as_ref().unwrap().local.as_ref().unwrap().path);
            assert!(
                rkube_node_runtime::local_volume::is_mounted(&dir),
                "{} was unmounted by the restarted kubelet",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A rolling update replaces each replica with a pod of the new template on the same
    // claim: the new pods print the id the old ones wrote.
    let sets = Api::<rkube_api::apps::v1::StatefulSet>::namespaced(client.clone(), "default");
    let mut old_uids = Vec::new();
    for name in ["web-0", "web-1"] {
        old_uids.push(pods.get(name).await?.metadata().uid.clone());
    }
    sets.patch_merge(
        "web",
        &serde_json::json!({"spec": {"template": {"spec": {"containers": [{
            "name": "main",
            "image": image,
            "command": ["sh", "-c", "cat /data/id; exec sleep 3600"],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        }]}}}}),
    )
    .await?;
    for (name, old_uid) in ["web-0", "web-1"].into_iter().zip(&old_uids) {
        let log = eventually(
            &format!("{name} to be replaced and print its id"),
            Duration::from_secs(120),
            || async {
                let p = pods.get(name).await.ok()?;
                let replaced = &p.metadata().uid != old_uid && p.status?.phase == "Running";
                let log = logs(&client, name).await.ok()?;
                (replaced && !log.is_empty()).then_some(log)
            },
        )
        .await?;
        assert_eq!(log.trim(), name);
    }
    assert_eq!(bound_volume(cluster, "data-web-0").await?.name(), first.name());
    assert_eq!(bound_volume(cluster, "data-web-1").await?.name(), second.name());

    // 7. Everything deleted: volumes unmounted, loop devices released, images removed.
    sets.delete("web", &DeleteParams::default()).await.ok();
    for name in ["web-0", "web-1"] {
        let _ = pods.delete(name, &DeleteParams::default()).await;
    }
    for c in ["data-web-0", "data-web-1", "again"] {
        let _ = claims.delete(c, &DeleteParams::default()).await;
    }
    let _ = volumes.delete(kept.name(), &DeleteParams::default()).await;
    eventually("every volume to go", Duration::from_secs(90), || async {
        let left = volumes.list(&Default::default()).await.ok()?;
        left.items.is_empty().then_some(())
    })
    .await?;
    eventually(
        "every loop device and image to be released",
        Duration::from_secs(30),
        || async {
            let images = rkube_node_runtime::local_volume::list(&root.join("local-volumes"));
            (loop_devices_below(root).is_empty() && images.is_empty()).then_some(())
        },
    )
    .await
    .with_context(|| {
        format!(
            "left: {:?}, mounts: {:?}",
            loop_devices_below(root),
            rkube_node_runtime::mounts::mount_points_below(root)
        )
    })?;
    Ok(())
}

#[test]
fn claims_are_provisioned_mounted_sized_retained_and_released() -> anyhow::Result<()> {
    run(scenario)
}

/// A pod with a disk-backed emptyDir of `limit` that writes `mib` MiB into it, then sleeps.
fn scratch_pod(name: &str, image: &str, limit: &str, mib: u32) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "dd if=/dev/zero of=/scratch/fill bs=1M count={mib} && sync && exec sleep 3600"]
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
  volumes:
  - name: scratch
    emptyDir: {{sizeLimit: {limit}}}
"#
    )
}

async fn eviction_scenario(netns: PathBuf) -> anyhow::Result<()> {
    let cluster = TestCluster::start(
        netns,
        ClusterOptions {
            nodes: 1,
            proxy: None,
            kubelet: |_, k| k.eviction_monitoring_period = Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await?;
    let result = eviction_checks(&cluster).await;
    if result.is_err() {
        eprintln!("{}", cluster.diagnostics().await);
    }
    cluster.stop().await?;
    result
}

async fn eviction_checks(cluster: &TestCluster) -> anyhow::Result<()> {
    let image = cluster.image.clone();
    let root = cluster.nodes[0].kubelet_config.root_dir.clone();
    let pods = cluster.api::<Pod>("default")?;
    // within its limit, and over it
    cluster.apply(&scratch_pod("modest", &image, "16Mi", 2))?;
    cluster.apply(&scratch_pod("greedy", &image, "4Mi", 8))?;

    let evicted = eventually("greedy to be evicted", Duration::from_secs(90), || async {
        let p = pods.get("greedy").await.ok()?;
        (p.status.as_ref()?.phase == "Failed").then_some(p)
    })
    .await?;
    let status = evicted.status.clone().unwrap();
    assert_eq!(status.reason, "Evicted");
    assert_eq!(
        status.message,
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"4Mi\"."
    );
    // its container was killed, not left running under a Failed pod
    let state = status.container_statuses[0].state.clone().unwrap();
    assert!(state.terminated.is_some(), "{state:?}");
    // and the node got its disk back
    let fill = root
        .join("pods")
        .join(&evicted.metadata().uid)
        .join("volumes/scratch/fill");
    assert!(!fill.exists(), "{} is still there", fill.display());

    let events = cluster.api::<Event>("default")?;
    eventually("the Evicted event", Duration::from_secs(30), || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .find(|e| {
                e.involved_object.as_ref().is_some_and(|o| o.name == "greedy")
                    && e.reason == "Evicted"
                    && e.r#type == "Warning"
                    && e.message == status.message
            })
            .map(|_| ())
    })
    .await?;

    // the pod within its limit keeps running through three more measurements
    let modest = eventually("modest to run", Duration::from_secs(30), || async {
        let p = pods.get("modest").await.ok()?;
        (p.status.as_ref()?.phase == "Running").then_some(p)
    })
    .await?;
    let written = root
        .join("pods")
        .join(&modest.metadata().uid)
        .join("volumes/scratch/fill");
    eventually("modest to write its 2 MiB", Duration::from_secs(30), || async {
        (std::fs::metadata(&written).ok()?.len() == 2 << 20).then_some(())
    })
    .await?;
    for _ in 0..15 {
        let status = pods.get("modest").await?.status.unwrap_or_default();
        assert_eq!((status.phase.as_str(), status.reason.as_str()), ("Running", ""));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[test]
fn an_empty_dir_past_its_size_limit_evicts_its_pod() -> anyhow::Result<()> {
    run(eviction_scenario)
}
