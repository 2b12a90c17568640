//! get, describe and watch: what a user reads about the objects.

use super::*;

#[test]
fn get_prints_tables_wide_yaml_json_and_names() {
    let c = Cluster::start();
    c.run(&["apply", "-f", &c.write("app.yaml", APP)]).ok();

    let run = c.run(&["get", "deployments"]).ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[..4], ["web", "0/2", "0", "0"]);
    assert!(row[4].ends_with('s'), "age of a fresh object: {}", row[4]);

    let run = c.run(&["get", "deploy", "-o", "wide"]).ok();
    assert!(
        run.stdout
            .lines()
            .next()
            .unwrap()
            .ends_with("CONTAINERS   IMAGES       SELECTOR"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("nginx        nginx:1.25   app=web"),
        "{}",
        run.stdout
    );

    let run = c.run(&["get", "svc"]).ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    );
    // the apiserver's own `kubernetes` Service comes first, as in Kubernetes
    assert!(
        lines[1].starts_with("kubernetes   ClusterIP   10.96.0.1 "),
        "{}",
        lines[1]
    );
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row[0], "web");
    assert_eq!(row[1], "ClusterIP");
    // CLUSTER-IP is whatever the server allocated (`<none>` before it does)
    let svc: serde_json::Value =
        serde_json::from_str(&c.run(&["get", "svc/web", "-o", "json"]).ok().stdout).unwrap();
    let spec = &svc["spec"];
    let ip = spec
        .get("clusterIP")
        .or(spec.get("clusterIp"))
        .and_then(|v| v.as_str())
        .unwrap_or("<none>");
    assert_eq!(row[2], ip, "{}", lines[2]);
    assert_eq!(row[3..5], ["<none>", "80/TCP"]);

    let run = c.run(&["get", "cm"]).ok();
    assert!(
        run.stdout
            .starts_with("NAME         DATA   AGE\nweb-config   2      "),
        "{}",
        run.stdout
    );

    let run = c.run(&["get", "deploy/web", "-o", "yaml"]).ok();
    assert!(
        run.stdout.starts_with("apiVersion: apps/v1\nkind: Deployment\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("  replicas: 2\n"), "{}", run.stdout);

    let run = c.run(&["get", "cm", "-o", "yaml"]).ok();
    assert!(
        run.stdout.contains("kind: List"),
        "a list query prints a List: {}",
        run.stdout
    );

    let run = c.run(&["get", "configmap", "web-config", "-o", "json"]).ok();
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["data"]["greeting"], "hello");
    assert!(json["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|rv| !rv.is_empty()));

    let run = c.run(&["get", "deploy,svc,cm", "-o", "name"]).ok();
    assert_eq!(
        run.stdout,
        "deployment.apps/web\nservice/kubernetes\nservice/web\nconfigmap/web-config\n"
    );

    let run = c.run(&["get", "deploy,svc"]).ok();
    assert!(
        run.stdout.contains("deployment.apps/web"),
        "several kinds prefix names: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains("\n\nNAME "),
        "tables are separated: {}",
        run.stdout
    );
}

#[test]
fn label_and_field_selectors_filter() {
    let c = Cluster::start();
    let file = c.write(
        "cms.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: {app: a, tier: fe}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, labels: {app: b, tier: fe}}\n",
    );
    c.run(&["create", "-f", &file]).ok();
    assert_eq!(
        c.run(&["get", "cm", "-l", "app=a", "-o", "name"]).ok().stdout,
        "configmap/a\n"
    );
    assert_eq!(
        c.run(&["get", "cm", "-l", "tier=fe", "-o", "name"]).ok().stdout,
        "configmap/a\nconfigmap/b\n"
    );
    assert_eq!(
        c.run(&["get", "cm", "-l", "app in (b,c)", "-o", "name"])
            .ok()
            .stdout,
        "configmap/b\n"
    );
    assert_eq!(
        c.run(&["get", "cm", "--field-selector", "metadata.name=b", "-o", "name"])
            .ok()
            .stdout,
        "configmap/b\n"
    );
    let run = c.run(&["get", "cm", "-l", "app=zzz"]).ok();
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "No resources found in default namespace.\n");
    // machine-readable output stays parseable: an empty List, no chatter
    let run = c.run(&["get", "cm", "-l", "app=zzz", "-o", "json"]).ok();
    assert_eq!(run.stderr, "");
    let list: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        (list["kind"].as_str(), list["items"].as_array().map(Vec::len)),
        (Some("List"), Some(0))
    );
    let run = c.run(&["get", "cm", "--show-labels"]).ok();
    assert!(run.stdout.contains("app=a,tier=fe"), "{}", run.stdout);
}

#[test]
fn describe_shows_the_object_and_its_events() {
    let c = Cluster::start();
    c.run(&["apply", "-f", &c.write("app.yaml", APP)]).ok();
    let run = c.run(&["describe", "deploy", "web"]).ok();
    assert!(
        run.stdout
            .starts_with("Name:         web\nNamespace:    default\nLabels:       app=web\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.ends_with("\nEvents:  <none>\n"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("\nSpec:\n  Progress Deadline Seconds:  600\n  Replicas:                   2\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("\n  Selector:\n    Match Labels:\n      app:  web\n"),
        "{}",
        run.stdout
    );

    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let event = |name: &str, object: &str, reason: &str, message: &str| {
        let mut ev = rkube_api::core::v1::Event::default();
        ev.set_type_meta();
        let meta = ev.metadata_mut();
        meta.name = name.into();
        meta.namespace = "default".into();
        ev.involved_object = Some(rkube_api::core::v1::ObjectReference {
            kind: "Deployment".into(),
            name: object.into(),
            namespace: "default".into(),
            api_version: "apps/v1".into(),
            ..Default::default()
        });
        ev.reason = reason.into();
        ev.message = message.into();
        ev.r#type = "Normal".into();
        ev.source = Some(rkube_api::core::v1::EventSource {
            component: "deployment-controller".into(),
            host: String::new(),
        });
        ev.first_timestamp = now.clone();
        ev.last_timestamp = now.clone();
        ev.count = 1;
        ev
    };
    c.create(&event(
        "web.1",
        "web",
        "ScalingReplicaSet",
        "Scaled up replica set web-5d4f to 2",
    ));
    c.create(&event(
        "other.1",
        "other",
        "ScalingReplicaSet",
        "Scaled up replica set other-1 to 1",
    ));

    let run = c.run(&["describe", "deploy/web"]).ok();
    let events = run
        .stdout
        .split_once("Events:\n")
        .map(|(_, e)| e)
        .unwrap_or_else(|| panic!("{}", run.stdout));
    let lines: Vec<&str> = events.lines().collect();
    assert_eq!(lines.len(), 3, "header, rule, one event: {events}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["Type", "Reason", "Age", "From", "Message"]
    );
    assert!(lines[2].starts_with("  Normal  ScalingReplicaSet  "), "{events}");
    assert!(
        lines[2].ends_with("  deployment-controller  Scaled up replica set web-5d4f to 2"),
        "{events}"
    );

    let run = c.run(&["get", "events"]).ok();
    assert!(
        run.stdout
            .starts_with("LAST SEEN   TYPE     REASON              OBJECT             MESSAGE\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            " Normal   ScalingReplicaSet   deployment/web     Scaled up replica set web-5d4f to 2\n"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn pod_status_comes_from_the_containers() {
    let c = Cluster::start();
    c.run_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: crashy}\nspec:\n  containers: [{name: app, image: busybox}]\n",
    )
    .ok();
    let run = c.run(&["get", "pods"]).ok();
    let row: Vec<&str> = run.stdout.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["crashy", "0/1", "Pending", "0"]);

    // report a crash loop as the kubelet would
    let mut client = c.client();
    let req = rpc::GetRequest {
        resource: Some(ResourceId {
            group: String::new(),
            resource: "pods".into(),
        }),
        namespace: "default".into(),
        name: "crashy".into(),
    };
    let any = c
        .runtime
        .block_on(client.get(req))
        .unwrap()
        .into_inner()
        .object
        .unwrap();
    let mut pod: rkube_api::core::v1::Pod = rkube_api::from_any(&any).unwrap();
    let status: rkube_api::core::v1::PodStatus = serde_json::from_value(serde_json::json!({
        "phase": "Running",
        "containerStatuses": [{
            "name": "app", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        }],
    }))
    .unwrap();
    pod.status = Some(status);
    let req = rpc::UpdateRequest {
        resource: Some(ResourceId {
            group: String::new(),
            resource: "pods".into(),
        }),
        object: Some(to_any(&pod)),
        dry_run: false,
    };
    c.runtime.block_on(client.update_status(req)).unwrap();

    let run = c.run(&["get", "po", "crashy"]).ok();
    let row: Vec<&str> = run.stdout.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["crashy", "0/1", "CrashLoopBackOff", "3"]);
    let run = c.run(&["get", "pods", "-o", "wide"]).ok();
    assert!(run.stdout.starts_with("NAME     READY   STATUS             RESTARTS   AGE   IP       NODE     NOMINATED NODE   READINESS GATES\n"), "{}", run.stdout);
}

#[test]
fn namespaces_and_all_namespaces() {
    let c = Cluster::start();
    c.run_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n",
    )
    .ok();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n";
    assert_eq!(
        c.run_stdin(&["apply", "-n", "team", "-f", "-"], cm).ok().stdout,
        "configmap/settings created\n"
    );
    assert_eq!(
        c.run_stdin(&["apply", "-f", "-"], cm).ok().stdout,
        "configmap/settings created\n"
    );
    let run = c.run(&["get", "cm", "-A"]).ok();
    let lines: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAMESPACE", "NAME", "DATA", "AGE"]);
    assert_eq!(lines[1][..3], ["default", "settings", "0"]);
    assert_eq!(lines[2][..3], ["team", "settings", "0"]);

    let run = c.run(&["get", "ns"]).ok();
    assert!(run.stdout.starts_with("NAME "), "{}", run.stdout);
    assert!(run.stdout.contains("\nteam "), "{}", run.stdout);
    assert!(run.stdout.contains(" Active "), "{}", run.stdout);

    let run = c.run_stdin(
        &["apply", "-n", "team", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: default}\n",
    );
    let run = run.failed();
    assert!(
        run.stderr.contains("does not match the namespace \"team\""),
        "{}",
        run.stderr
    );

    let run = c.run(&["get", "cm", "-n", "empty-ns"]).ok();
    assert_eq!(run.stderr, "No resources found in empty-ns namespace.\n");
}

#[test]
fn watch_prints_changes_as_they_happen() {
    let c = Cluster::start();
    c.run_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\n",
    )
    .ok();
    let mut child = c
        .command(&["get", "cm", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut wrote = false;
    while Instant::now() < deadline && !seen.iter().any(|l: &String| l.starts_with("MODIFIED")) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
        if !wrote && seen.len() >= 2 {
            // the first object is on screen: now change things
            c.run_stdin(
                &["apply", "-f", "-"],
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: second}\n",
            )
            .ok();
            c.run_stdin(
                &["apply", "-f", "-"],
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\ndata: {a: b}\n",
            )
            .ok();
            wrote = true;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let rows: Vec<Vec<&str>> = seen.iter().map(|l| l.split_whitespace().collect()).collect();
    assert!(rows.len() >= 4, "{seen:#?}");
    assert_eq!(rows[0][..3], ["EVENT", "NAME", "DATA"]);
    assert_eq!(rows[1][..3], ["ADDED", "first", "0"]);
    assert_eq!(rows[2][..3], ["ADDED", "second", "0"]);
    assert_eq!(rows[3][..3], ["MODIFIED", "first", "1"]);
}

#[test]
fn api_resources_and_version() {
    let c = Cluster::start();
    let run = c.run(&["api-resources"]).ok();
    let lines: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    assert!(
        lines.contains(&vec!["pods", "po", "v1", "true", "Pod"]),
        "{}",
        run.stdout
    );
    assert!(
        lines.contains(&vec!["deployments", "deploy", "apps/v1", "true", "Deployment"]),
        "{}",
        run.stdout
    );
    assert!(
        lines.contains(&vec!["nodes", "no", "v1", "false", "Node"]),
        "{}",
        run.stdout
    );

    let run = c.run(&["version"]).ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(lines[0].starts_with("Client Version: v"), "{}", run.stdout);
    assert!(lines[1].starts_with("Server Version: "), "{}", run.stdout);
}
