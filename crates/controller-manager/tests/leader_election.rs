//! Two controller-managers, both started through the same `run` as the binary, against a
//! real apiserver with RBAC: exactly one acts while both run (a Deployment gets one
//! ReplicaSet and exactly as many pods as it asks for, never a second set from the
//! standby); killed without a goodbye (`kill -9`: its Lease is not released), the leader
//! is replaced by the standby within the lease duration, and a Deployment made meanwhile
//! converges. The failover time is printed.

use anyhow::Result;
use futures::StreamExt;
use rkube_api::apps::v1::{Deployment, ReplicaSet};
use rkube_api::core::v1::Pod;
use rkube_api::Resource;
use rkube_client::{Api, Client, ListParams, WatchEvent, WatchParams};
use rkube_testing::{eventually, Daemon, LeaseProbe, TestApiServer};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::deployment;

const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(250);

fn start_manager(api: &TestApiServer) -> Daemon {
    let mut config = rkube_controller_manager::Config::new(api.url().to_string());
    config.kubeconfig = Some(api.pki().join("kube-controller-manager.conf"));
    config.controllers = vec!["replicaset,deployment".into()];
    config.leader_election.lease_duration = LEASE;
    config.leader_election.renew_deadline = RENEW;
    config.leader_election.retry_period = RETRY;
    Daemon::spawn(|stop| rkube_controller_manager::run(config, stop))
}

/// Every pod name ever added in `default`, from a watch opened now.
fn record_pod_creations(client: Client) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let added = Arc::new(Mutex::new(Vec::new()));
    let log = added.clone();
    let task = tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let Ok(mut stream) = pods.watch(&WatchParams::default()).await else {
            return;
        };
        while let Some(Ok(event)) = stream.next().await {
            if let WatchEvent::Added(p) = event {
                log.lock().unwrap().push(p.name().to_string());
            }
        }
    });
    (added, task)
}

/// The pods whose names start with `prefix` among those ever added, in order.
fn created(added: &Mutex<Vec<String>>, prefix: &str) -> Vec<String> {
    let added = added.lock().unwrap();
    added.iter().filter(|n| n.starts_with(prefix)).cloned().collect()
}

/// Waits until Deployment `name` has its `replicas` pods from one ReplicaSet and says so in
/// its status; returns when that was seen.
async fn converged(client: &Client, name: &str, replicas: i32) -> Result<Instant> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let selector = format!("app={name}");
    eventually(
        &format!("Deployment {name} to run {replicas} pods"),
        Duration::from_secs(20),
        || async {
            let d = deployments.get(name).await?;
            let rs = sets.list(&ListParams::default().labels(&selector)).await?.items;
            let live = pods.list(&ListParams::default().labels(&selector)).await?.items;
            let s = d.status.clone().unwrap_or_default();
            anyhow::ensure!(
                rs.len() == 1 && live.len() == replicas as usize && s.replicas == replicas,
                "{} ReplicaSets, {} pods, status.replicas {}",
                rs.len(),
                live.len(),
                s.replicas
            );
            Ok(Some(Instant::now()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_controller_manager_acts_and_a_standby_takes_over_when_it_is_killed() -> Result<()> {
    let api = TestApiServer::secure(&[]).await?;
    let client = api.client();
    let lease = LeaseProbe::new(client.clone(), "kube-system", "kube-controller-manager");
    let (added, recorder) = record_pod_creations(client.clone());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");

    // The first takes the fresh Lease at once.
    let started = Instant::now();
    let first = start_manager(&api);
    let leader = lease.new_holder("", LEASE).await?;
    let elected = started.elapsed();
    assert!(
        elected < RETRY * 4,
        "a fresh Lease is taken at once, not after {elected:?}"
    );
    let second = start_manager(&api);
    lease.renewed_by(&leader, 3, LEASE).await?;

    // Both run, one acts: exactly 4 pods are ever created for 4 replicas.
    deployments.create(&deployment("before", 4, "busybox")).await?;
    converged(&client, "before", 4).await?;
    lease.renewed_by(&leader, 4, LEASE).await?;
    let before = created(&added, "before-");
    assert_eq!(before.len(), 4, "pods created while two managers ran: {before:?}");

    // kill -9 the leader: the standby waits out the Lease, then acts.
    let killed = Instant::now();
    first.abort().await;
    deployments.create(&deployment("after", 3, "busybox")).await?;
    let successor = lease
        .new_holder(&leader, LEASE + RETRY * 4 + Duration::from_secs(1))
        .await?;
    let took_over = killed.elapsed();
    let done = converged(&client, "after", 3).await?;
    let converged_after = done - killed;
    println!(
        "controller-manager failover: lease {LEASE:?}: new leader after {took_over:?}, \
         Deployment converged {converged_after:?} after the kill"
    );
    assert!(
        took_over >= LEASE - RETRY * 2,
        "the standby waited out the dead leader's Lease: {took_over:?}"
    );
    assert!(
        took_over <= LEASE + RETRY * 4 + Duration::from_secs(1),
        "{took_over:?}"
    );
    let after = created(&added, "after-");
    assert_eq!(after.len(), 3, "{after:?}");

    // A graceful stop hands the Lease back at once.
    second.stop().await?;
    let (holder, _) = lease.holder().await?;
    assert_eq!(holder, "", "released by {successor}");
    recorder.abort();
    api.stop().await
}
