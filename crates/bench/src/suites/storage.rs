//! The cost of persistent storage (issue 18), on one real node ([`OneNode`]: containerd
//! in a private network namespace, the busybox image on a loopback registry): rkube's
//! apiserver, scheduler, controller-manager (the persistent-volume binder),
//! cloud-controller-manager (only its volume-provisioner loop, `local` provider) and
//! kubelet in this process. Volumes are the local provider's real ones: an ext4 image of
//! the claim's size made with `fallocate` and `mkfs.ext4`, attached through a loop
//! device, under the test node's temporary directory. Nothing leaves the machine.
//!
//! One thing at a time, so each figure is a latency and not a queue, `ROUNDS` rounds:
//!
//! * a claim of an Immediate class, from just before its create request to the watch
//!   showing it `Bound` (the binder asks for a volume, the provisioner makes it, the
//!   binder binds both);
//! * a pod (scheduled, not pre-bound) with an emptyDir, from just before its create to
//!   the watch showing it `Running`: the baseline;
//! * the same pod with a fresh claim of a WaitForFirstConsumer class, from just before
//!   the claim's create (the pod's follows at once) to `Running`: scheduling, the
//!   selected-node annotation, provisioning on that node, binding, then on the node
//!   `mkfs.ext4`, the loop mount and the bind mount;
//! * the same pod with the Immediate claim bound before: only the node's part.
//!
//! The order of the three pods turns each round, and every pod and claim is deleted (and
//! gone) before the next round. The table gives p50 and the worst of each, and each pod
//! kind's p50 over the emptyDir pod's.

use crate::one_node::{Daemons, OneNode};
use crate::pod_watch;
use crate::stats::Samples;
use crate::Args;
use anyhow::Context;
use rkube_api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use rkube_api::storage::v1::StorageClass;
use rkube_api::Resource;
use rkube_client::{Api, Client, DeleteParams};
use std::fmt::Write as _;
use std::future::Future;
use std::time::{Duration, Instant};

const ROUNDS: usize = 10;
const NAMESPACE: &str = "default";
const NODE: &str = "bench-storage-node";
/// Every claim's size: each is a real ext4 image of this size, allocated in full.
const CLAIM_SIZE: &str = "256Mi";
const IMMEDIATE: &str = "bench-immediate";
const WAIT_FOR_FIRST_CONSUMER: &str = "bench-wffc";
const MAX_WAIT: Duration = Duration::from_secs(120);

pub fn run(_args: &Args) -> anyhow::Result<String> {
    if let Some(reason) = rkube_kubelet::testing::skip_reason() {
        anyhow::bail!("the storage suite needs a real containerd: {reason}");
    }
    for tool in ["mkfs.ext4", "losetup"] {
        if !executable_on_path(tool) {
            anyhow::bail!("the storage suite needs {tool} (Debian packages e2fsprogs and mount)");
        }
    }
    crate::one_node::block_on("bench-storage", measure()).map(|r| render(&r))
}

fn executable_on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

struct Results {
    bound: Samples,
    empty_dir: Samples,
    fresh: Samples,
    prebound: Samples,
}

async fn measure() -> anyhow::Result<Results> {
    let OneNode {
        node,
        registry,
        image,
        api,
        api_dir,
    } = OneNode::start().await?;
    let url = api.url();
    // the local provider knows the machine by name; its other loops are not wanted here
    let cloud_config = api_dir.path().join("cloud-config.yaml");
    std::fs::write(&cloud_config, format!("machines:\n  - name: {NODE}\n"))?;
    let mut daemons = Daemons::new();
    let scheduler = rkube_scheduler::Config::new(&url);
    daemons.spawn("scheduler", |stop| rkube_scheduler::run(scheduler, stop));
    let cm = rkube_controller_manager::Config::new(&url);
    daemons.spawn("controller-manager", |stop| {
        rkube_controller_manager::run(cm, stop)
    });
    let mut ccm = rkube_cloud_controller_manager::Config::new(&url);
    ccm.controllers = vec!["volume-provisioner".into()];
    ccm.cloud_config = Some(cloud_config);
    daemons.spawn("cloud-controller-manager", |stop| {
        rkube_cloud_controller_manager::run(ccm, stop)
    });
    // the pod CIDR comes from the controller-manager's node-ipam loop
    let config = rkube_kubelet::Config::for_test_node(&node, url.clone(), NODE, [127, 0, 0, 1].into(), None);
    let kubelet = rkube_kubelet::start(config)
        .await
        .context("starting the kubelet")?;
    let result = measure_with(&url, &image).await;
    kubelet.stop().await;
    let stopped = daemons.stop().await;
    // whatever is still mounted below the node goes before its directory does
    let root = node.dir().join("kubelet-root");
    for point in rkube_node_runtime::mounts::mount_points_below(&root) {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
    drop(node); // kills every container, removes the namespace and the images
    api.stop().await.context("stopping the apiserver")?;
    drop(registry);
    stopped.and(result)
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("")
}

fn claim_phase(c: &PersistentVolumeClaim) -> &str {
    c.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("")
}

/// Waits until `check` is true, or fails after [`MAX_WAIT`] saying what was awaited.
async fn wait_for<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + MAX_WAIT;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("{what}: not after {MAX_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `create` and returns the time from just before it to the watch showing the
/// object named `name` in the state `reached` looks for.
async fn time_until<K: Resource, Fut>(
    api: &Api<K>,
    name: &str,
    reached: fn(&K) -> bool,
    create: Fut,
) -> anyhow::Result<Duration>
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    let rv = api.list(&Default::default()).await?.resource_version;
    let wanted = name.to_string();
    let (seen, watcher) =
        pod_watch::first_seen(api, rv, 1, move |o: &K| o.name() == wanted && reached(o)).await?;
    let started = Instant::now();
    create.await?;
    if tokio::time::timeout(MAX_WAIT, watcher).await.is_err() {
        anyhow::bail!("{} {name} did not get there within {MAX_WAIT:?}", K::INFO.kind);
    }
    let at = *seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .with_context(|| format!("the watch of {} ended before {name} got there", K::INFO.plural))?;
    Ok(at.duration_since(started))
}

async fn measure_with(url: &str, image: &str) -> anyhow::Result<Results> {
    let client = Client::connect(url)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NAMESPACE);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let classes: Api<StorageClass> = Api::all(client.clone());
    for (name, mode) in [
        (IMMEDIATE, "Immediate"),
        (WAIT_FOR_FIRST_CONSUMER, "WaitForFirstConsumer"),
    ] {
        classes
            .create(&serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "provisioner": "rkube.io/local",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": mode,
            }))?)
            .await
            .with_context(|| format!("creating StorageClass {name}"))?;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for("the node to be Ready with a pod CIDR", || async {
        let Some(n) = nodes.get_opt(NODE).await? else {
            return Ok(false);
        };
        let ready = n.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.status == "True")
        });
        Ok(ready && n.spec.as_ref().is_some_and(|s| !s.pod_cidr.is_empty()))
    })
    .await?;

    eprintln!("warm-up pod (pulls {image})");
    let running = |p: &Pod| phase(p) == "Running";
    time_until(&pods, "warm-up", running, async {
        pods.create(&pod_object("warm-up", image, None)).await?;
        Ok(())
    })
    .await?;
    delete_and_wait(&pods, &claims, &["warm-up"], &[]).await?;

    let mut r = Results {
        bound: Samples::default(),
        empty_dir: Samples::default(),
        fresh: Samples::default(),
        prebound: Samples::default(),
    };
    let bound = |c: &PersistentVolumeClaim| claim_phase(c) == "Bound";
    for round in 0..ROUNDS {
        eprintln!("round {} of {ROUNDS}", round + 1);
        let early = format!("early-{round}");
        let took = time_until(&claims, &early, bound, async {
            claims.create(&claim_object(&early, IMMEDIATE)).await?;
            Ok(())
        })
        .await?;
        r.bound.extend([took]);

        let (empty, fresh, prebound) = (
            format!("empty-{round}"),
            format!("fresh-{round}"),
            format!("prebound-{round}"),
        );
        for kind in 0..3 {
            match (kind + round) % 3 {
                0 => {
                    let took = time_until(&pods, &empty, running, async {
                        pods.create(&pod_object(&empty, image, None)).await?;
                        Ok(())
                    })
                    .await?;
                    r.empty_dir.extend([took]);
                }
                1 => {
                    let took = time_until(&pods, &fresh, running, async {
                        claims
                            .create(&claim_object(&fresh, WAIT_FOR_FIRST_CONSUMER))
                            .await?;
                        pods.create(&pod_object(&fresh, image, Some(&fresh))).await?;
                        Ok(())
                    })
                    .await?;
                    r.fresh.extend([took]);
                }
                _ => {
                    let took = time_until(&pods, &prebound, running, async {
                        pods.create(&pod_object(&prebound, image, Some(&early))).await?;
                        Ok(())
                    })
                    .await?;
                    r.prebound.extend([took]);
                }
            }
        }
        delete_and_wait(
            &pods,
            &claims,
            &[empty.as_str(), fresh.as_str(), prebound.as_str()],
            &[early.as_str(), fresh.as_str()],
        )
        .await?;
    }
    wait_for("every volume to be deleted", || async {
        Ok(volumes.list(&Default::default()).await?.items.is_empty())
    })
    .await?;
    Ok(r)
}

/// Deletes the pods and claims and waits until they are gone (a claim waits for its pod).
async fn delete_and_wait(
    pods: &Api<Pod>,
    claims: &Api<PersistentVolumeClaim>,
    pod_names: &[&str],
    claim_names: &[&str],
) -> anyhow::Result<()> {
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    for name in pod_names {
        pods.delete(name, &now).await?;
    }
    for name in claim_names {
        claims.delete(name, &DeleteParams::default()).await?;
    }
    wait_for("the round's pods and claims to go", || async {
        for name in pod_names {
            if pods.get_opt(name).await?.is_some() {
                return Ok(false);
            }
        }
        for name in claim_names {
            if claims.get_opt(name).await?.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
}

fn claim_object(name: &str, class: &str) -> PersistentVolumeClaim {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "storageClassName": class,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": CLAIM_SIZE}},
        },
    }))
    .expect("a valid claim")
}

/// A `sleep` pod with a volume at /data: the claim `claim`, else an emptyDir.
fn pod_object(name: &str, image: &str, claim: Option<&str>) -> Pod {
    let volume = match claim {
        Some(c) => serde_json::json!({"name": "data", "persistentVolumeClaim": {"claimName": c}}),
        None => serde_json::json!({"name": "data", "emptyDir": {}}),
    };
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "main",
                "image": image,
                "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [volume],
        },
    }))
    .expect("a valid pod")
}

fn render(r: &Results) -> String {
    let base = r.empty_dir.quantile_ms(0.5);
    let mut s = String::new();
    let _ = writeln!(s, "## storage: claim binding and pod start with a fresh volume\n");
    let _ = writeln!(
        s,
        "One node, real containerd, the `local` provider's ext4-on-loop volumes of {CLAIM_SIZE}; \
         {ROUNDS} rounds, one object at a time, creation to the state seen through a watch. \
         Pods are scheduled (not pre-bound); the ratio is each pod's p50 over the emptyDir \
         pod's p50 of the same run.\n"
    );
    let _ = writeln!(s, "| measure | n | p50 (ms) | max (ms) | p50 ÷ emptyDir pod |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    let mut row = |what: &str, samples: &Samples, ratio: bool| {
        let p50 = samples.quantile_ms(0.5);
        let ratio = if ratio {
            format!("{:.2}", p50 / base)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "| {what} | {} | {p50:.0} | {:.0} | {ratio} |",
            samples.len(),
            samples.quantile_ms(1.0)
        );
    };
    row("claim (Immediate) created → Bound", &r.bound, false);
    row("pod with an emptyDir → Running", &r.empty_dir, true);
    row(
        "pod with a fresh claim (WaitForFirstConsumer) → Running",
        &r.fresh,
        true,
    );
    row(
        "pod with a claim bound beforehand (Immediate) → Running",
        &r.prebound,
        true,
    );
    s
}
