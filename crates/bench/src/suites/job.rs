//! A Job of 1,000 completions, 50 at a time, on 100 hollow nodes (issue 16): the real
//! apiserver, scheduler and controller-manager in this process on their own runtimes (see
//! [`super::deployment::with_cluster`]). No kubelet runs; a hollow one here marks every
//! bound pod Succeeded at once, so what is measured is the control plane's round trip per
//! completion: the job controller creating a pod, the scheduler binding it, its end being
//! seen and counted (and its tracking finalizer removed), and the next pod created.
//!
//! Timed from the Job's creation until its Complete condition, with the CPU time the
//! controller-manager's threads used meanwhile.
//!
//! The floor, on a fresh cluster of the same shape: a client runs the same 1,000 pods
//! itself, keeping 50 in flight and creating the next as soon as one succeeds; the same
//! scheduler binds them and the same hollow kubelet ends them. Kubernetes publishes no Job
//! controller throughput figure to compare with, so the floor is the yardstick.

use super::deployment::{template_json, with_cluster, NODES};
use crate::Args;
use anyhow::Context;
use futures::StreamExt;
use rkube_api::batch::v1::Job;
use rkube_api::core::v1::Pod;
use rkube_api::Resource;
use rkube_client::{Api, Client, ListParams, WatchEvent, WatchParams};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const COMPLETIONS: i32 = 1_000;
const PARALLELISM: i32 = 50;
const NAMESPACE: &str = "default";
const MAX_WAIT: Duration = Duration::from_secs(600);
/// The pods of this bench (the Job's and the floor's), and only those, are ended.
const LABEL: &str = "bench-job";

struct Run {
    elapsed: Duration,
    /// CPU seconds of the controller-manager's threads during the run.
    cm_cpu: f64,
}

pub fn run(args: &Args) -> anyhow::Result<String> {
    std::fs::create_dir_all(&args.tmp_dir)
        .with_context(|| format!("cannot create {}", args.tmp_dir.display()))?;
    eprintln!("job: {COMPLETIONS} completions, parallelism {PARALLELISM}, on {NODES} hollow nodes");
    let job = with_cluster(args, "job", |_, client, _| async move { run_job(&client).await })?;
    eprintln!(
        "job: complete after {:.2} s; floor: a client running the same pods",
        job.elapsed.as_secs_f64()
    );
    let floor = with_cluster(args, "job-floor", |_, client, _| async move {
        run_floor(&client).await
    })?;
    Ok(render(&job, &floor))
}

/// CPU seconds used so far by the controller-manager's threads.
fn cm_cpu() -> anyhow::Result<f64> {
    let ticks = crate::process::thread_cpu_ticks(CM_THREADS)?;
    Ok(ticks as f64 / crate::process::ticks_per_second() as f64)
}

/// The controller-manager runtime's thread names, as Linux truncates them.
const CM_THREADS: &str = "controller-mana";

/// Ends every bound pod of this bench as Succeeded, as a kubelet would once its container
/// exits 0.
fn hollow_kubelet(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, NAMESPACE);
        loop {
            let Ok(list) = pods.list(&ListParams::default().labels(LABEL)).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut stream = match pods
                .watch(&WatchParams {
                    label_selector: LABEL.into(),
                    resource_version: list.resource_version.clone(),
                    ..Default::default()
                })
                .await
            {
                Ok(s) => s,
                Err(_) => continue,
            };
            let mut pending: Vec<Pod> = list.items;
            loop {
                for pod in pending.drain(..) {
                    end(&pods, pod).await;
                }
                match stream.next().await {
                    Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p))) => pending.push(p),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
        }
    })
}

async fn end(pods: &Api<Pod>, pod: Pod) {
    let bound = pod.spec.as_ref().is_some_and(|s| !s.node_name.is_empty());
    let phase = pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    if !bound || matches!(phase, "Succeeded" | "Failed") || !pod.metadata().deletion_timestamp.is_empty() {
        return;
    }
    let mut p = pod;
    let now = rkube_api::time::now();
    let s = p.status.get_or_insert_with(Default::default);
    s.phase = "Succeeded".into();
    s.start_time = now;
    let _ = pods.update_status(&p).await;
}

fn pod_template() -> serde_json::Value {
    let mut t = template_json();
    t["metadata"]["labels"] = serde_json::json!({ LABEL: "yes" });
    t["spec"]["restartPolicy"] = serde_json::json!("Never");
    t
}

async fn run_job(client: &Client) -> anyhow::Result<Run> {
    let kubelet = hollow_kubelet(client.clone());
    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    let job: Job = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench", "namespace": NAMESPACE},
        "spec": {"completions": COMPLETIONS, "parallelism": PARALLELISM, "template": pod_template()},
    }))
    .context("the bench Job")?;
    let cpu0 = cm_cpu()?;
    let started = Instant::now();
    jobs.create(&job).await.context("creating the Job")?;
    let list = jobs.list(&ListParams::default()).await?;
    let mut stream = jobs
        .watch(&WatchParams {
            resource_version: list.resource_version,
            ..Default::default()
        })
        .await?;
    let complete = |j: &Job| {
        j.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.r#type == "Complete" && c.status == "True")
        })
    };
    let deadline = tokio::time::Instant::now() + MAX_WAIT;
    let mut done = list.items.iter().any(complete);
    while !done {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(WatchEvent::Modified(j)))) => done = complete(&j),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => anyhow::bail!("the Job watch ended"),
            Err(_) => anyhow::bail!("the Job did not complete within {} s", MAX_WAIT.as_secs()),
        }
    }
    let elapsed = started.elapsed();
    let used = cm_cpu()? - cpu0;
    kubelet.abort();
    let s = jobs.get("bench").await?.status.unwrap_or_default();
    anyhow::ensure!(
        s.succeeded == COMPLETIONS,
        "the Job counted {} completions",
        s.succeeded
    );
    Ok(Run {
        elapsed,
        cm_cpu: used,
    })
}

async fn run_floor(client: &Client) -> anyhow::Result<Run> {
    let kubelet = hollow_kubelet(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let mut template: Pod = serde_json::from_value(pod_template()).context("the floor's pod")?;
    template.metadata_mut().generate_name = "floor-".into();
    template.metadata_mut().namespace = NAMESPACE.into();
    let cpu0 = cm_cpu()?;
    let started = Instant::now();
    let list = pods.list(&ListParams::default().labels(LABEL)).await?;
    let mut stream = pods
        .watch(&WatchParams {
            label_selector: LABEL.into(),
            resource_version: list.resource_version,
            ..Default::default()
        })
        .await?;
    let mut created = 0;
    for _ in 0..PARALLELISM {
        pods.create(&template).await?;
        created += 1;
    }
    let mut succeeded = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + MAX_WAIT;
    while succeeded.len() < COMPLETIONS as usize {
        let ev = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the floor's pods did not all succeed within {} s",
                    MAX_WAIT.as_secs()
                )
            })?;
        let Some(Ok(WatchEvent::Modified(p))) = ev else {
            anyhow::ensure!(ev.is_some(), "the pod watch ended");
            continue;
        };
        if p.status.as_ref().is_some_and(|s| s.phase == "Succeeded")
            && succeeded.insert(p.name().to_string())
            && created < COMPLETIONS
        {
            pods.create(&template).await?;
            created += 1;
        }
    }
    let elapsed = started.elapsed();
    let used = cm_cpu()? - cpu0;
    kubelet.abort();
    Ok(Run {
        elapsed,
        cm_cpu: used,
    })
}

fn render(job: &Run, floor: &Run) -> String {
    let rate = |r: &Run| f64::from(COMPLETIONS) / r.elapsed.as_secs_f64();
    let mut out = String::new();
    let _ = writeln!(out, "### Job: 1,000 completions, parallelism 50\n");
    let _ = writeln!(
        out,
        "{NODES} hollow nodes; a hollow kubelet ends each bound pod as Succeeded at once. Floor: a client running the same pods 50 at a time.\n"
    );
    let _ = writeln!(
        out,
        "| metric | Job | floor: client runs the pods | Job / floor |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: |");
    let _ = writeln!(
        out,
        "| creation to last completion | {:.2} s | {:.2} s | {:.2} |",
        job.elapsed.as_secs_f64(),
        floor.elapsed.as_secs_f64(),
        job.elapsed.as_secs_f64() / floor.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| completions/s | {:.0} | {:.0} | {:.2} |",
        rate(job),
        rate(floor),
        rate(job) / rate(floor)
    );
    let _ = writeln!(
        out,
        "| controller-manager CPU | {:.2} s ({:.1} ms per completion) | {:.2} s (its other loops seeing the pods) | |",
        job.cm_cpu,
        job.cm_cpu * 1000.0 / f64::from(COMPLETIONS),
        floor.cm_cpu
    );
    out
}
