//! The client against the real apiserver on a free loopback port over a
//! temporary data directory: typed CRUD and its errors, watch, informer,
//! conflict retries, events and leader election.

use anyhow::{Context, Result};
use futures::StreamExt;
use rkube_api::core::v1::{ConfigMap, Container, Event, Pod, PodSpec, PodStatus};
use rkube_api::Resource;
use rkube_client::runtime::WatcherConfig;
use rkube_client::{
    Api, DeleteParams, EventType, Informer, LeaderElectionConfig, LeaderElector, ListParams, Recorder,
    WatchEvent, WatchParams,
};
use rkube_testing::TestApiServer;
use std::sync::Arc;
use std::time::Duration;

fn pod(name: &str) -> Pod {
    let mut p = Pod {
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: "nginx:1.25".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    p.metadata_mut().name = name.into();
    p.metadata_mut().labels.insert("app".into(), "web".into());
    p
}

fn configmap(name: &str) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata_mut().name = name.into();
    c
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .with_context(|| format!("timed out: {what}"))
}

#[tokio::test]
async fn pod_crud_and_errors_keep_kubernetes_meaning() -> Result<()> {
    let h = TestApiServer::start().await?;
    let version = h.client().version().await?;
    assert!(!version.git_version.is_empty());
    assert!(h.client().discovery().await?.iter().any(|r| r.name == "pods"));

    let pods: Api<Pod> = Api::namespaced(h.client(), "default");
    let created = pods.create(&pod("web-1")).await?;
    assert_eq!(created.namespace(), "default");
    assert!(!created.metadata().uid.is_empty());
    let rv = created.metadata().resource_version.clone();
    assert!(!rv.is_empty());

    let again = pods.create(&pod("web-1")).await.unwrap_err();
    assert!(again.is_already_exists(), "{again:?}");

    let got = pods.get("web-1").await?;
    assert_eq!(got.metadata().uid, created.metadata().uid);
    assert!(pods.get_opt("nope").await?.is_none());
    let missing = pods.get("nope").await.unwrap_err();
    assert!(missing.is_not_found());
    assert_eq!(missing.to_string(), "pods \"nope\" not found");

    let mut bad = pod("bad");
    bad.spec.as_mut().unwrap().containers[0].image.clear();
    let invalid = pods.create(&bad).await.unwrap_err();
    assert!(invalid.is_invalid(), "{invalid:?}");
    assert!(
        invalid
            .causes()
            .iter()
            .any(|c| c.field.contains("spec.containers[0].image")),
        "{:?}",
        invalid.causes()
    );

    // Update with the resourceVersion read; a stale one is a Conflict.
    let mut changed = got.clone();
    changed
        .metadata_mut()
        .labels
        .insert("tier".into(), "front".into());
    let updated = pods.update(&changed).await?;
    assert_eq!(updated.metadata().labels["tier"], "front");
    let stale = pods.update(&changed).await.unwrap_err();
    assert!(stale.is_conflict(), "{stale:?}");

    let mut with_status = updated.clone();
    with_status.status = Some(PodStatus {
        phase: "Running".into(),
        ..Default::default()
    });
    let stored = pods.update_status(&with_status).await?;
    assert_eq!(stored.status.as_ref().map(|s| s.phase.as_str()), Some("Running"));

    let patched = pods
        .patch_merge(
            "web-1",
            &serde_json::json!({"metadata": {"labels": {"tier": null, "x": "y"}}}),
        )
        .await?;
    assert!(!patched.metadata().labels.contains_key("tier"));
    assert_eq!(patched.metadata().labels["x"], "y");
    let patched = pods
        .patch_status_merge("web-1", &serde_json::json!({"status": {"phase": "Succeeded"}}))
        .await?;
    assert_eq!(
        patched.status.as_ref().map(|s| s.phase.as_str()),
        Some("Succeeded")
    );

    for i in 2..=5 {
        pods.create(&pod(&format!("web-{i}"))).await?;
    }
    let page = pods.list(&ListParams::default().limit(2)).await?;
    assert_eq!(page.items.len(), 2);
    assert!(!page.continue_token.is_empty());
    let all = pods
        .list_all(&ListParams::default().limit(2).labels("app=web"))
        .await?;
    assert_eq!(all.items.len(), 5);
    let everywhere: Api<Pod> = Api::all(h.client());
    assert_eq!(everywhere.list_all(&ListParams::default()).await?.items.len(), 5);
    assert!(everywhere
        .get("web-1")
        .await
        .unwrap_err()
        .to_string()
        .contains("namespace is required"));

    pods.delete("web-1", &DeleteParams::default().grace_period(0))
        .await?;
    assert!(pods.get_opt("web-1").await?.is_none());
    assert!(pods
        .delete("web-1", &DeleteParams::default())
        .await
        .unwrap_err()
        .is_not_found());
    h.stop().await
}

#[tokio::test]
async fn watch_sees_changes_after_a_list() -> Result<()> {
    let h = TestApiServer::start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(h.client(), "default");
    cms.create(&configmap("before")).await?;
    let list = cms.list(&ListParams::default()).await?;
    let wp = WatchParams {
        resource_version: list.resource_version.clone(),
        ..Default::default()
    };
    let mut events = cms.watch(&wp).await?;

    cms.create(&configmap("a")).await?;
    cms.patch_merge("a", &serde_json::json!({"data": {"k": "v"}}))
        .await?;
    cms.delete("a", &DeleteParams::default()).await?;

    let mut seen = Vec::new();
    while seen.len() < 3 {
        match within("watch events", events.next())
            .await?
            .context("the watch ended")??
        {
            WatchEvent::Added(c) => seen.push(format!("ADDED {}", c.name())),
            WatchEvent::Modified(c) => seen.push(format!("MODIFIED {} {:?}", c.name(), c.data.get("k"))),
            WatchEvent::Deleted(c) => seen.push(format!("DELETED {}", c.name())),
            WatchEvent::Bookmark(_) => {}
        }
    }
    assert_eq!(seen, ["ADDED a", "MODIFIED a Some(\"v\")", "DELETED a"]);
    h.stop().await
}

#[tokio::test]
async fn an_informer_mirrors_the_server() -> Result<()> {
    let h = TestApiServer::start().await?;
    let pods: Api<Pod> = Api::namespaced(h.client(), "default");
    pods.create(&pod("p1")).await?;
    let informer = Informer::new(Api::<Pod>::all(h.client()), WatcherConfig::default());
    let store = informer.store();
    store.add_index("app", |p: &Pod| {
        p.metadata().labels.get("app").cloned().into_iter().collect()
    });
    informer.start()?;
    within("sync", informer.wait_until_synced()).await?;
    assert!(store.get("default/p1").is_some());

    pods.create(&pod("p2")).await?;
    pods.delete("p1", &DeleteParams::default().grace_period(0))
        .await?;
    within("the cache follows", async {
        while store.get("default/p2").is_none() || store.get("default/p1").is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    assert_eq!(store.index_keys("app", "web")?, ["default/p2"]);
    h.stop().await
}

#[tokio::test]
async fn replace_with_retries_conflicts_until_every_writer_lands() -> Result<()> {
    let h = TestApiServer::start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(h.client(), "default");
    cms.create(&configmap("counter")).await?;
    let mut writers = Vec::new();
    for i in 0..4 {
        let cms = cms.clone();
        writers.push(tokio::spawn(async move {
            cms.replace_with("counter", |mut c| {
                c.data.insert(format!("writer-{i}"), "done".into());
                c
            })
            .await
        }));
    }
    for w in writers {
        w.await??;
    }
    assert_eq!(cms.get("counter").await?.data.len(), 4, "no write was lost");
    h.stop().await
}

#[tokio::test]
async fn repeated_events_are_aggregated() -> Result<()> {
    let h = TestApiServer::start().await?;
    let pods: Api<Pod> = Api::namespaced(h.client(), "default");
    let p = pods.create(&pod("p1")).await?;
    let recorder = Recorder::new(h.client(), "test-controller", "host-1");
    for _ in 0..3 {
        recorder
            .publish(&p, EventType::Warning, "BackOff", "Back-off restarting")
            .await?;
    }
    let events = Api::<Event>::namespaced(h.client(), "default")
        .list(&ListParams::default())
        .await?;
    assert_eq!(events.items.len(), 1);
    let e = &events.items[0];
    assert_eq!(e.count, 3);
    assert_eq!(e.involved_object.as_ref().map(|o| o.name.as_str()), Some("p1"));
    assert_eq!(
        e.source.as_ref().map(|s| s.component.as_str()),
        Some("test-controller")
    );
    h.stop().await
}

#[tokio::test]
async fn leader_election_takes_the_lease() -> Result<()> {
    let h = TestApiServer::start().await?;
    let config = LeaderElectionConfig {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(200),
        ..LeaderElectionConfig::new("scheduler", "kube-system", "replica-a")
    };
    let elector = Arc::new(LeaderElector::new(h.client(), config)?);
    let mut leader = elector.is_leader();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let elector = elector.clone();
        async move {
            elector
                .run(
                    async move {
                        let _ = stopped.await;
                    },
                    || {},
                    || {},
                )
                .await
        }
    });
    within("elected", leader.wait_for(|l| *l)).await??;
    let leases: Api<rkube_api::coordination::v1::Lease> = Api::namespaced(h.client(), "kube-system");
    let lease = leases.get("scheduler").await?;
    assert_eq!(
        lease.spec.as_ref().map(|s| s.holder_identity.as_str()),
        Some("replica-a")
    );
    let _ = stop.send(());
    task.await??;
    let released = leases.get("scheduler").await?;
    assert_eq!(
        released.spec.as_ref().map(|s| s.holder_identity.as_str()),
        Some("")
    );
    h.stop().await
}

#[tokio::test]
async fn an_informer_survives_an_apiserver_restart() -> Result<()> {
    // A short history, so the informer's revision may be forgotten while
    // it is away and it must relist; either way the end state must match.
    // (Under the flag's minimum: set on the configuration.)
    let mut h = TestApiServer::builder()
        .configure(|config| config.watch_history = 10)
        .start()
        .await?;
    let cms: Api<ConfigMap> = Api::namespaced(h.client(), "default");
    cms.create(&configmap("kept")).await?;
    cms.create(&configmap("doomed")).await?;
    let informer = Informer::new(cms.clone(), WatcherConfig::default());
    let store = informer.store();
    informer.start()?;
    within("sync", informer.wait_until_synced()).await?;
    assert_eq!(store.len(), 2);

    // Same data directory, same address: the client's channel reconnects.
    h.restart().await?;

    cms.delete("doomed", &DeleteParams::default()).await?;
    for i in 0..20 {
        cms.create(&configmap(&format!("new-{i}"))).await?;
    }
    within("the cache catches up", async {
        while store.get("default/doomed").is_some() || store.len() != 21 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;
    h.stop().await
}

/// A client given two apiservers, A and B, fails over when A dies: its informer resumes on
/// B from the last resourceVersion it saw (every write before and after reaches it exactly
/// once, none twice), and unary calls go to B without reconfiguration. With the sled
/// backend only one apiserver may open a data directory, so B is started on A's directory
/// (another port) once A is gone, as a second apiserver over a shared store would serve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_two_apiservers_fails_over_and_its_watch_resumes_without_gaps_or_repeats() -> Result<()> {
    let data = tempfile::tempdir()?;
    let b_addr = {
        let free = std::net::TcpListener::bind("127.0.0.1:0")?;
        free.local_addr()?
    };
    let a = TestApiServer::builder().data_dir(data.path()).start().await?;
    let client = rkube_client::Client::connect(&format!("{},http://{b_addr}", a.url()))?;
    assert_eq!(client.servers().len(), 2);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..5 {
        cms.create(&configmap(&format!("before-{i}"))).await?;
    }

    // The informer's events, as its cache receives them.
    let events = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let seen = events.clone();
    let config = WatcherConfig {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
        ..WatcherConfig::default()
    };
    let mut stream = Box::pin(rkube_client::runtime::watcher(cms.clone(), config));
    let first = within("the first list", stream.next()).await?;
    let Some(rkube_client::runtime::Event::Resync(listed)) = first else {
        anyhow::bail!("the watcher began with {first:?}");
    };
    assert_eq!(listed.len(), 5);
    let reader = tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            if let rkube_client::runtime::Event::Applied(cm) = event {
                let m = cm.metadata();
                seen.lock()
                    .unwrap()
                    .push((m.name.clone(), m.resource_version.clone()));
            }
        }
    });
    for i in 0..5 {
        cms.create(&configmap(&format!("during-a-{i}"))).await?;
    }
    within("the informer sees A's writes", async {
        while events.lock().unwrap().len() < 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;

    // A goes away; B comes up on the same store at another address.
    a.stop().await?;
    let b = TestApiServer::builder()
        .data_dir(data.path())
        .listen(b_addr)
        .start()
        .await?;
    let failed_over = std::time::Instant::now();
    for i in 0..5 {
        cms.create(&configmap(&format!("after-{i}"))).await?;
    }
    println!(
        "first write through B {:?} after B started",
        failed_over.elapsed()
    );
    assert_eq!(client.server(), format!("http://{b_addr}"));
    within("the informer sees B's writes", async {
        while events.lock().unwrap().len() < 10 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;

    // Exactly once each, and what the cache holds is what a fresh list says.
    let seen = events.lock().unwrap().clone();
    let mut names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    let mut want: Vec<String> = (0..5)
        .flat_map(|i| [format!("during-a-{i}"), format!("after-{i}")])
        .collect();
    want.sort_unstable();
    assert_eq!(names, want, "every write after the list, exactly once: {seen:?}");
    let fresh = Api::<ConfigMap>::namespaced(b.client(), "default")
        .list(&ListParams::default())
        .await?;
    assert_eq!(fresh.items.len(), 15);
    for (name, rv) in &seen {
        let now = fresh.items.iter().find(|c| c.name() == name.as_str()).unwrap();
        assert_eq!(&now.metadata().resource_version, rv, "{name}");
    }
    reader.abort();
    b.stop().await
}
