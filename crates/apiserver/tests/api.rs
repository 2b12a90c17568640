//! The apiserver's behaviour as a client sees it over gRPC.

mod common;

use common::*;
use futures::StreamExt;
use rkube_api::apps::v1::Deployment;
use rkube_api::core::v1::{ConfigMap, Namespace, Pod};
use rkube_api::rpc;
use rkube_api::Resource;
use tonic::Code;

#[tokio::test]
async fn system_namespaces_exist_and_are_protected() {
    let mut h = Harness::start().await;
    let (nss, _) = list::<Namespace>(&mut h.client, Default::default())
        .await
        .unwrap();
    let names: Vec<_> = nss.iter().map(|n| n.name().to_string()).collect();
    assert_eq!(names, ["default", "kube-node-lease", "kube-system"]);
    assert!(nss.iter().all(|n| n.status.as_ref().unwrap().phase == "Active"));
    let err = delete::<Namespace>(&mut h.client, "", "default", "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("may not be deleted"), "{}", err.message());
}

#[tokio::test]
async fn crud_with_resource_versions_and_conflicts() {
    let mut h = Harness::start().await;
    let created = create(&mut h.client, &config_map("default", "cm1", &[]))
        .await
        .unwrap();
    let m = created.metadata();
    assert!(!m.uid.is_empty() && !m.creation_timestamp.is_empty());
    let rv1: u64 = m.resource_version.parse().unwrap();
    assert_eq!(created.kind, "ConfigMap");
    assert_eq!(created.api_version, "v1");

    let dup = create(&mut h.client, &config_map("default", "cm1", &[]))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    assert_eq!(dup.message(), "configmaps \"cm1\" already exists");
    assert_eq!(reason(&dup), "AlreadyExists");

    let mut changed = created.clone();
    changed.data.insert("k".into(), "v2".into());
    let updated = update(&mut h.client, &changed).await.unwrap();
    let rv2: u64 = updated.metadata().resource_version.parse().unwrap();
    assert!(rv2 > rv1);
    assert_eq!(updated.metadata().uid, created.metadata().uid);

    // writing with the old resourceVersion is a conflict
    let stale = update(&mut h.client, &changed).await.unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert!(
        stale.message().contains("the object has been modified"),
        "{}",
        stale.message()
    );

    // an update that changes nothing does not write
    let same = update(&mut h.client, &updated).await.unwrap();
    assert_eq!(
        same.metadata().resource_version,
        updated.metadata().resource_version
    );

    let got: ConfigMap = get(&mut h.client, "default", "cm1").await.unwrap();
    assert_eq!(got, updated);
    delete::<ConfigMap>(&mut h.client, "default", "cm1", "")
        .await
        .unwrap();
    let gone = get::<ConfigMap>(&mut h.client, "default", "cm1")
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(gone.message(), "configmaps \"cm1\" not found");
}

#[tokio::test]
async fn namespaced_objects_need_their_namespace() {
    let mut h = Harness::start().await;
    let err = create(&mut h.client, &config_map("nope", "x", &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "namespaces \"nope\" not found");
}

#[tokio::test]
async fn generation_moves_with_spec_and_status_is_a_subresource() {
    let mut h = Harness::start().await;
    let p = create(&mut h.client, &pod("default", "p1")).await.unwrap();
    assert_eq!(p.metadata().generation, 1);
    assert_eq!(p.status.as_ref().unwrap().phase, "Pending");
    // defaults were applied
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy, "Always");
    assert_eq!(spec.containers[0].image_pull_policy, "IfNotPresent");

    // Update cannot change status...
    let mut p2 = p.clone();
    p2.status.as_mut().unwrap().phase = "Running".into();
    p2.metadata_mut().labels.insert("x".into(), "y".into());
    let p3 = update(&mut h.client, &p2).await.unwrap();
    assert_eq!(p3.status.as_ref().unwrap().phase, "Pending");
    assert_eq!(p3.metadata().labels["x"], "y");
    assert_eq!(p3.metadata().generation, 1, "labels are not spec");

    // ...and UpdateStatus cannot change anything else
    let mut p4 = p3.clone();
    p4.status.as_mut().unwrap().phase = "Running".into();
    p4.metadata_mut().labels.clear();
    p4.spec.as_mut().unwrap().containers[0].image = "busybox:2".into();
    let p5 = update_status(&mut h.client, &p4).await.unwrap();
    assert_eq!(p5.status.as_ref().unwrap().phase, "Running");
    assert_eq!(p5.metadata().labels["x"], "y");
    assert_eq!(p5.spec.as_ref().unwrap().containers[0].image, "busybox:1");

    // a spec change bumps generation
    let mut p6 = p5.clone();
    p6.spec.as_mut().unwrap().containers[0].image = "busybox:2".into();
    let p7 = update(&mut h.client, &p6).await.unwrap();
    assert_eq!(p7.metadata().generation, 2);

    // most of a pod's spec is immutable
    let mut p8 = p7.clone();
    p8.spec.as_mut().unwrap().containers[0].command = vec!["sh".into()];
    let err = update(&mut h.client, &p8).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("pod updates may not change fields"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn validation_reports_every_error_at_once() {
    let mut h = Harness::start().await;
    let d: Deployment = serde_yaml::from_str(
        "metadata: {name: web}\nspec:\n  replicas: -2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: nope}}\n    spec:\n      containers: [{name: Bad_Name, image: x}]\n",
    )
    .unwrap();
    let err = create(&mut h.client, &d).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "Invalid");
    let msg = err.message();
    assert!(msg.starts_with("Deployment.apps \"web\" is invalid: ["), "{msg}");
    for part in [
        "spec.replicas: Invalid value: -2",
        "spec.template.metadata.labels: Invalid value",
        "spec.template.spec.containers[0].name: Invalid value: \"Bad_Name\"",
    ] {
        assert!(msg.contains(part), "{part} missing from {msg}");
    }
    use prost::Message;
    let status = rkube_api::meta::v1::Status::decode(err.details()).unwrap();
    assert_eq!(status.details.unwrap().causes.len(), 3);
    assert_eq!(status.code, 422);
}

#[tokio::test]
async fn generate_name_makes_unique_names() {
    let mut h = Harness::start().await;
    let mut names = std::collections::HashSet::new();
    for _ in 0..20 {
        let mut cm = config_map("default", "", &[]);
        cm.metadata_mut().generate_name = "web-".into();
        let c = create(&mut h.client, &cm).await.unwrap();
        assert!(
            c.name().starts_with("web-") && c.name().len() == 9,
            "{}",
            c.name()
        );
        assert!(names.insert(c.name().to_string()));
    }
}

#[tokio::test]
async fn lists_filter_by_labels_and_fields_and_paginate_consistently() {
    let mut h = Harness::start().await;
    for i in 0..25 {
        let tier = if i % 2 == 0 { "fe" } else { "be" };
        create(
            &mut h.client,
            &config_map(
                "default",
                &format!("cm-{i:02}"),
                &[("tier", tier), ("n", &i.to_string())],
            ),
        )
        .await
        .unwrap();
    }
    create(
        &mut h.client,
        &config_map("kube-system", "other", &[("tier", "fe")]),
    )
    .await
    .unwrap();
    let sel = |s: &str| rpc::ListRequest {
        namespace: "default".into(),
        label_selector: s.into(),
        ..Default::default()
    };
    assert_eq!(
        list::<ConfigMap>(&mut h.client, sel("tier=fe"))
            .await
            .unwrap()
            .0
            .len(),
        13
    );
    assert_eq!(
        list::<ConfigMap>(&mut h.client, sel("tier!=fe"))
            .await
            .unwrap()
            .0
            .len(),
        12
    );
    assert_eq!(
        list::<ConfigMap>(&mut h.client, sel("n in (1,2,3)"))
            .await
            .unwrap()
            .0
            .len(),
        3
    );
    assert_eq!(
        list::<ConfigMap>(&mut h.client, sel("n notin (1,2,3),tier=be"))
            .await
            .unwrap()
            .0
            .len(),
        10
    );
    assert_eq!(
        list::<ConfigMap>(&mut h.client, sel("!tier"))
            .await
            .unwrap()
            .0
            .len(),
        0
    );
    assert_eq!(
        list::<ConfigMap>(&mut h.client, sel("tier"))
            .await
            .unwrap()
            .0
            .len(),
        25
    );
    let all = rpc::ListRequest {
        label_selector: "tier=fe".into(),
        ..Default::default()
    };
    assert_eq!(
        list::<ConfigMap>(&mut h.client, all).await.unwrap().0.len(),
        14,
        "all namespaces"
    );
    let by_name = rpc::ListRequest {
        namespace: "default".into(),
        field_selector: "metadata.name=cm-07".into(),
        ..Default::default()
    };
    assert_eq!(
        list::<ConfigMap>(&mut h.client, by_name).await.unwrap().0.len(),
        1
    );
    let bad = rpc::ListRequest {
        field_selector: "spec.nodeName=x".into(),
        ..Default::default()
    };
    let err = list::<ConfigMap>(&mut h.client, bad).await.unwrap_err();
    assert!(
        err.message().contains("field label not supported: spec.nodeName"),
        "{}",
        err.message()
    );

    // pages of 10 at one revision: writes in between do not show up
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut revision = String::new();
    loop {
        let req = rpc::ListRequest {
            namespace: "default".into(),
            limit: 10,
            r#continue: token.clone(),
            ..Default::default()
        };
        let (items, resp) = list::<ConfigMap>(&mut h.client, req).await.unwrap();
        if revision.is_empty() {
            revision = resp.resource_version.clone();
            create(&mut h.client, &config_map("default", "cm-00a", &[]))
                .await
                .unwrap();
        } else {
            assert_eq!(
                resp.resource_version, revision,
                "every page is at the first page's revision"
            );
        }
        seen.extend(items.iter().map(|c| c.name().to_string()));
        if resp.r#continue.is_empty() {
            break;
        }
        token = resp.r#continue;
    }
    assert_eq!(seen.len(), 25);
    assert!(!seen.contains(&"cm-00a".to_string()));
}

#[tokio::test]
async fn concurrent_writers_never_lose_an_update() {
    let h = Harness::start().await;
    let mut c = h.client.clone();
    create(&mut c, &config_map("default", "counter", &[]))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut c = h.client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                loop {
                    let mut cm: ConfigMap = get(&mut c, "default", "counter").await.unwrap();
                    let n: u64 = cm.data.get("n").map(|v| v.parse().unwrap()).unwrap_or(0);
                    cm.data.insert("n".into(), (n + 1).to_string());
                    match update(&mut c, &cm).await {
                        Ok(_) => break,
                        Err(e) if e.code() == Code::Aborted => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let cm: ConfigMap = get(&mut c, "default", "counter").await.unwrap();
    assert_eq!(cm.data["n"], "160");
}

async fn next_event(s: &mut tonic::Streaming<rpc::WatchEvent>) -> (String, ConfigMap) {
    let ev = tokio::time::timeout(std::time::Duration::from_secs(5), s.next())
        .await
        .expect("watch event in time")
        .unwrap()
        .unwrap();
    let obj = ev
        .object
        .as_ref()
        .map(|a| rkube_api::from_any(a).unwrap())
        .unwrap_or_default();
    (ev.r#type, obj)
}

#[tokio::test]
async fn watch_replays_across_restarts_then_streams_live() {
    let mut h = Harness::start().await;
    let first = create(&mut h.client, &config_map("default", "a", &[("app", "x")]))
        .await
        .unwrap();
    let from = first.metadata().resource_version.clone();
    let mut b = create(&mut h.client, &config_map("default", "b", &[("app", "x")]))
        .await
        .unwrap();
    b.data.insert("k".into(), "changed".into());
    update(&mut h.client, &b).await.unwrap();
    delete::<ConfigMap>(&mut h.client, "default", "a", "")
        .await
        .unwrap();
    h.restart().await;

    let req = rpc::WatchRequest {
        resource: rid::<ConfigMap>(),
        namespace: "default".into(),
        resource_version: from,
        ..Default::default()
    };
    let mut s = h.client.watch(req).await.unwrap().into_inner();
    let (t, o) = next_event(&mut s).await;
    assert_eq!((t.as_str(), o.name()), ("ADDED", "b"));
    let (t, o) = next_event(&mut s).await;
    assert_eq!(
        (t.as_str(), o.name(), o.data["k"].as_str()),
        ("MODIFIED", "b", "changed")
    );
    let (t, o) = next_event(&mut s).await;
    assert_eq!((t.as_str(), o.name()), ("DELETED", "a"));
    create(&mut h.client, &config_map("default", "c", &[]))
        .await
        .unwrap();
    let (t, o) = next_event(&mut s).await;
    assert_eq!((t.as_str(), o.name()), ("ADDED", "c"));
}

#[tokio::test]
async fn watch_with_a_selector_sees_objects_enter_and_leave_it() {
    let mut h = Harness::start().await;
    create(&mut h.client, &config_map("default", "pre", &[("app", "web")]))
        .await
        .unwrap();
    let req = rpc::WatchRequest {
        resource: rid::<ConfigMap>(),
        namespace: "default".into(),
        label_selector: "app=web".into(),
        allow_bookmarks: true,
        ..Default::default()
    };
    let mut s = h.client.watch(req).await.unwrap().into_inner();
    let (t, o) = next_event(&mut s).await;
    assert_eq!((t.as_str(), o.name()), ("ADDED", "pre"), "initial state first");
    let mut other = create(&mut h.client, &config_map("default", "other", &[("app", "db")]))
        .await
        .unwrap();
    other.metadata_mut().labels.insert("app".into(), "web".into());
    let other = update(&mut h.client, &other).await.unwrap();
    let (t, o) = next_event(&mut s).await;
    assert_eq!(
        (t.as_str(), o.name()),
        ("ADDED", "other"),
        "entering the selector is ADDED"
    );
    let mut other = other;
    other.metadata_mut().labels.insert("app".into(), "db".into());
    update(&mut h.client, &other).await.unwrap();
    let (t, o) = next_event(&mut s).await;
    assert_eq!(
        (t.as_str(), o.name()),
        ("DELETED", "other"),
        "leaving the selector is DELETED"
    );
    // idle: a bookmark carries the current revision
    let ev = tokio::time::timeout(std::time::Duration::from_secs(5), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.r#type, "BOOKMARK");
    assert!(ev.resource_version.parse::<u64>().unwrap() > 0);
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let mut h = Harness::start().await;
    let mut cm = config_map("default", "held", &[]);
    cm.metadata_mut().finalizers = vec!["example.com/hold".into()];
    create(&mut h.client, &cm).await.unwrap();
    let marked: ConfigMap = delete(&mut h.client, "default", "held", "").await.unwrap();
    assert!(!marked.metadata().deletion_timestamp.is_empty());
    let mut still: ConfigMap = get(&mut h.client, "default", "held").await.unwrap();
    assert!(!still.metadata().deletion_timestamp.is_empty());
    still.metadata_mut().finalizers.clear();
    update(&mut h.client, &still).await.unwrap();
    assert_eq!(
        get::<ConfigMap>(&mut h.client, "default", "held")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // Foreground adds the finalizer the garbage collector removes
    create(&mut h.client, &config_map("default", "fg", &[]))
        .await
        .unwrap();
    let fg: ConfigMap = delete(&mut h.client, "default", "fg", "Foreground")
        .await
        .unwrap();
    assert_eq!(fg.metadata().finalizers, ["foregroundDeletion"]);
}

#[tokio::test]
async fn bind_assigns_once_and_never_a_deleted_pod() {
    let mut h = Harness::start().await;
    let p = create(&mut h.client, &pod("default", "p")).await.unwrap();
    let bind = |node: &str| rpc::BindRequest {
        namespace: "default".into(),
        name: "p".into(),
        uid: p.metadata().uid.clone(),
        node_name: node.into(),
    };
    let bound: Pod = obj(h.client.bind(bind("n1")).await.unwrap());
    assert_eq!(bound.spec.as_ref().unwrap().node_name, "n1");
    let cond = &bound.status.as_ref().unwrap().conditions[0];
    assert_eq!(
        (cond.r#type.as_str(), cond.status.as_str()),
        ("PodScheduled", "True")
    );
    let again = h.client.bind(bind("n2")).await.unwrap_err();
    assert_eq!(again.code(), Code::Aborted);
    assert!(
        again.message().contains("already assigned to node \"n1\""),
        "{}",
        again.message()
    );

    // a bound pod is deleted gracefully: marked, and removed only after
    // its kubelet confirms with grace period 0
    let marked: Pod = delete(&mut h.client, "default", "p", "").await.unwrap();
    assert!(!marked.metadata().deletion_timestamp.is_empty());
    assert_eq!(marked.metadata().deletion_grace_period_seconds, Some(30));
    let req = rpc::DeleteRequest {
        resource: rid::<Pod>(),
        namespace: "default".into(),
        name: "p".into(),
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    h.client.delete(req).await.unwrap();
    assert_eq!(
        get::<Pod>(&mut h.client, "default", "p")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    let q = create(&mut h.client, &pod("default", "q")).await.unwrap();
    let mut q2 = q.clone();
    q2.metadata_mut().finalizers = vec!["hold".into()];
    update(&mut h.client, &q2).await.unwrap();
    delete::<Pod>(&mut h.client, "default", "q", "").await.unwrap();
    let err = h
        .client
        .bind(rpc::BindRequest {
            namespace: "default".into(),
            name: "q".into(),
            uid: String::new(),
            node_name: "n1".into(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("is being deleted"), "{}", err.message());
}

#[tokio::test]
async fn merge_patch_changes_only_what_it_names() {
    let mut h = Harness::start().await;
    create(&mut h.client, &config_map("default", "p", &[("a", "1")]))
        .await
        .unwrap();
    let req = rpc::PatchRequest {
        resource: rid::<ConfigMap>(),
        namespace: "default".into(),
        name: "p".into(),
        patch_type: "merge".into(),
        patch: br#"{"metadata":{"labels":{"b":"2"}},"data":{"k":null,"x":"y"}}"#.to_vec(),
        ..Default::default()
    };
    let out: ConfigMap = obj(h.client.patch(req).await.unwrap());
    assert_eq!(out.metadata().labels.len(), 2);
    assert_eq!(out.data.get("x").map(String::as_str), Some("y"));
    assert!(!out.data.contains_key("k"));
}

#[tokio::test]
async fn a_second_apiserver_cannot_open_the_same_data_dir() {
    let h = Harness::start().await;
    let err = rkube_testing::TestApiServer::builder()
        .data_dir(h.api.data_dir())
        .start()
        .await
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains("locked by another rkube-apiserver"), "{msg}");
}

#[tokio::test]
async fn unknown_resources_are_named() {
    let mut h = Harness::start().await;
    let req = rpc::GetRequest {
        resource: Some(rpc::ResourceId {
            group: "".into(),
            resource: "widgets".into(),
        }),
        namespace: "default".into(),
        name: "x".into(),
    };
    let err = h.client.get(req).await.unwrap_err();
    assert!(
        err.message().contains("doesn't have a resource type \"widgets\""),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn pods_get_their_priority_from_their_priority_class() {
    use rkube_api::scheduling::v1::PriorityClass;
    let mut h = Harness::start().await;
    // The built-in classes exist from the first start.
    let critical = create(&mut h.client, &{
        let mut p = pod("default", "critical");
        p.spec.as_mut().unwrap().priority_class_name = "system-node-critical".into();
        p
    })
    .await
    .unwrap();
    let spec = critical.spec.unwrap();
    assert_eq!(spec.priority, Some(2_000_001_000));
    assert_eq!(spec.preemption_policy.as_deref(), Some("PreemptLowerPriority"));
    let err = delete::<PriorityClass>(&mut h.client, "", "system-node-critical", "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // No class and no default: 0.
    let plain = create(&mut h.client, &pod("default", "plain")).await.unwrap();
    assert_eq!(plain.spec.unwrap().priority, Some(0));
    // An unknown class is refused with Kubernetes' words.
    let mut unknown = pod("default", "unknown");
    unknown.spec.as_mut().unwrap().priority_class_name = "gold".into();
    let err = create(&mut h.client, &unknown).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message()
            .contains("no PriorityClass with name gold was found"),
        "{}",
        err.message()
    );
    // A globalDefault class applies to pods that name none.
    let mut silver = PriorityClass::default();
    silver.metadata_mut().name = "silver".into();
    silver.value = 1000;
    silver.global_default = true;
    silver.preemption_policy = Some("Never".into());
    create(&mut h.client, &silver).await.unwrap();
    let defaulted = create(&mut h.client, &pod("default", "defaulted")).await.unwrap();
    let spec = defaulted.spec.unwrap();
    assert_eq!(spec.priority_class_name, "silver");
    assert_eq!(spec.priority, Some(1000));
    assert_eq!(spec.preemption_policy.as_deref(), Some("Never"));
    // A pod may not claim a priority of its own.
    let mut claims = pod("default", "claims");
    claims.spec.as_mut().unwrap().priority = Some(5);
    let err = create(&mut h.client, &claims).await.unwrap_err();
    assert!(
        err.message()
            .contains("the integer value of priority (5) must not be provided"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn ingresses_without_a_class_get_the_default_one_and_bad_paths_are_refused() {
    use rkube_api::networking::v1::{Ingress, IngressClass};
    let mut h = Harness::start().await;
    let ingress = |name: &str, extra: &str| -> Ingress {
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: default{extra}}}
spec: {{defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}}}"
        ))
        .unwrap()
    };
    // no default class: the field stays empty
    let none = create(&mut h.client, &ingress("none", "")).await.unwrap();
    assert_eq!(none.spec.unwrap().ingress_class_name, None);
    let class = |name: &str, default: bool| -> IngressClass {
        let annotations = if default {
            ", annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}"
        } else {
            ""
        };
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}{annotations}}}\nspec: {{controller: example.com/{name}}}"
        ))
        .unwrap()
    };
    create(&mut h.client, &class("other", false)).await.unwrap();
    create(&mut h.client, &class("rkube", true)).await.unwrap();
    let defaulted = create(&mut h.client, &ingress("defaulted", "")).await.unwrap();
    assert_eq!(
        defaulted.spec.unwrap().ingress_class_name.as_deref(),
        Some("rkube")
    );
    // a class named by the old annotation is left as it is
    let annotated = create(
        &mut h.client,
        &ingress("annotated", ", annotations: {kubernetes.io/ingress.class: other}"),
    )
    .await
    .unwrap();
    assert_eq!(annotated.spec.unwrap().ingress_class_name, None);
    // validation speaks Kubernetes' words
    let mut bad = ingress("bad", "");
    bad.spec = serde_yaml::from_str(
        "{rules: [{http: {paths: [{path: /, backend: {service: {name: web, port: {number: 80}}}}]}}]}",
    )
    .unwrap();
    let err = create(&mut h.client, &bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_gated_pod_starts_scheduling_gated_and_cannot_be_bound() {
    let mut h = Harness::start().await;
    let mut p = pod("default", "gated");
    p.spec.as_mut().unwrap().scheduling_gates = vec![rkube_api::core::v1::PodSchedulingGate {
        name: "example.com/wait".into(),
    }];
    let created = create(&mut h.client, &p).await.unwrap();
    let cond = &created.status.unwrap().conditions[0];
    assert_eq!(
        (cond.r#type.as_str(), cond.status.as_str(), cond.reason.as_str()),
        ("PodScheduled", "False", "SchedulingGated")
    );
    let err = h
        .client
        .bind(rpc::BindRequest {
            namespace: "default".into(),
            name: "gated".into(),
            uid: String::new(),
            node_name: "n1".into(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("schedulingGates"), "{}", err.message());
}

/// A gRPC request naming its field manager (and forcing, for an apply).
fn as_manager<T>(msg: T, manager: &str, force: bool) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("x-rkube-field-manager", manager.parse().unwrap());
    if force {
        req.metadata_mut()
            .insert("x-rkube-force", "true".parse().unwrap());
    }
    req
}

fn managers(cm: &ConfigMap) -> Vec<(String, String)> {
    cm.metadata()
        .managed_fields
        .iter()
        .map(|e| (e.manager.clone(), e.operation.clone()))
        .collect()
}

#[tokio::test]
async fn grpc_writes_record_field_managers_only_when_named() {
    let mut h = Harness::start().await;
    // untracked: a controller's write costs nothing and records nothing
    let cm = create(&mut h.client, &config_map("default", "owned", &[]))
        .await
        .unwrap();
    assert!(cm.metadata().managed_fields.is_empty());

    let patch = |manager: &str, patch_type: &str, body: serde_json::Value, force: bool| {
        as_manager(
            rpc::PatchRequest {
                resource: rid::<ConfigMap>(),
                namespace: "default".into(),
                name: "owned".into(),
                patch_type: patch_type.into(),
                patch: serde_json::to_vec(&body).unwrap(),
                subresource: String::new(),
                dry_run: false,
            },
            manager,
            force,
        )
    };
    // rkubectl's client names itself
    let rkubectl = rkube_client::Client::connect(h.api.url())
        .unwrap()
        .with_field_manager("rkubectl");
    let edited: ConfigMap = rkubectl
        .patch_dyn(
            ConfigMap::info(),
            "default",
            "owned",
            &serde_json::json!({"data": {"k": "w"}}),
        )
        .await
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(
        managers(&edited),
        [("rkubectl".to_string(), "Update".to_string())]
    );

    let config = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": "owned"}, "data": {"k": "x"}});
    // an apply must name its manager
    let err = h
        .client
        .patch(rpc::PatchRequest {
            patch: serde_json::to_vec(&config).unwrap(),
            ..patch("", "apply", serde_json::json!({}), false).into_inner()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("fieldManager"), "{}", err.message());
    let err = h
        .client
        .patch(patch("deployer", "apply", config.clone(), false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(
        err.message(),
        "Apply failed with 1 conflict: conflict with \"rkubectl\" using v1: .data.k"
    );
    let applied: ConfigMap = obj(h
        .client
        .patch(patch("deployer", "apply", config, true))
        .await
        .unwrap());
    assert_eq!(applied.data["k"], "x");
    assert_eq!(
        managers(&applied),
        [("deployer".to_string(), "Apply".to_string())]
    );
    h.stop().await;
}
