//! apply, delete and the checks before anything is written.

use super::*;

#[test]
fn apply_creates_then_reports_unchanged_then_configured() {
    let c = Cluster::start();
    let file = c.write("app.yaml", APP);

    let run = c.run(&["apply", "-f", &file]).ok();
    assert_eq!(
        run.stdout,
        "deployment.apps/web created\nservice/web created\nconfigmap/web-config created\n"
    );

    let run = c.run(&["apply", "-f", &file]).ok();
    assert_eq!(
        run.stdout,
        "deployment.apps/web unchanged\nservice/web unchanged\nconfigmap/web-config unchanged\n"
    );

    let changed = c.write("app2.yaml", &APP.replace("replicas: 2", "replicas: 5"));
    let run = c.run(&["apply", "-f", &changed]).ok();
    assert_eq!(
        run.stdout,
        "deployment.apps/web configured\nservice/web unchanged\nconfigmap/web-config unchanged\n"
    );
    let run = c.run(&["get", "deploy/web", "-o", "json"]).ok();
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["spec"]["replicas"], 5);
    // the server's allocations survived the update of the service
    let run = c.run(&["get", "svc", "web", "-o", "json"]).ok();
    let svc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
}

#[test]
fn apply_reads_stdin_and_directories() {
    let c = Cluster::start();
    let run = c.run_stdin(&["apply", "-f", "-"], APP).ok();
    assert_eq!(run.stdout.lines().count(), 3, "{}", run.stdout);

    let dir = c.home().join("manifests");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("a.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    )
    .unwrap();
    let run = c.run(&["apply", "-f", dir.to_str().unwrap()]).ok();
    assert_eq!(run.stdout, "configmap/a created\nconfigmap/b created\n");
}

#[test]
fn get_yaml_applies_back_unchanged() {
    let c = Cluster::start();
    c.run(&["apply", "-f", &c.write("app.yaml", APP)]).ok();
    for kind in ["deploy/web", "svc/web", "cm/web-config"] {
        let yaml = c.run(&["get", kind, "-o", "yaml"]).ok().stdout;
        let run = c.run_stdin(&["apply", "-f", "-"], &yaml).ok();
        assert!(run.stdout.ends_with(" unchanged\n"), "{kind}: {}", run.stdout);
    }
    let list = c.run(&["get", "deploy,svc,cm", "-o", "yaml"]).ok().stdout;
    let run = c.run_stdin(&["apply", "-f", "-"], &list).ok();
    // the list holds the apiserver's own `kubernetes` Service too, as in Kubernetes
    assert_eq!(
        run.stdout,
        "deployment.apps/web unchanged\nservice/kubernetes unchanged\nservice/web unchanged\nconfigmap/web-config unchanged\n"
    );
    let json = c.run(&["get", "deploy", "web", "-o", "json"]).ok().stdout;
    let run = c.run_stdin(&["apply", "-f", "-"], &json).ok();
    assert_eq!(run.stdout, "deployment.apps/web unchanged\n");
}

#[test]
fn delete_by_name_kind_slash_name_file_and_selector() {
    let c = Cluster::start();
    let file = c.write("app.yaml", APP);
    c.run(&["apply", "-f", &file]).ok();

    let run = c.run(&["delete", "cm", "web-config"]).ok();
    assert_eq!(run.stdout, "configmap \"web-config\" deleted\n");
    let run = c.run(&["delete", "deploy/web", "--cascade=background"]).ok();
    assert_eq!(run.stdout, "deployment.apps \"web\" deleted\n");
    let run = c.run(&["delete", "-f", &file, "--ignore-not-found"]).ok();
    assert_eq!(run.stdout, "service \"web\" deleted\n");

    c.run(&["apply", "-f", &file]).ok();
    let run = c.run(&["delete", "cm", "-l", "app=web", "--grace-period=0"]).ok();
    assert_eq!(run.stdout, "configmap \"web-config\" deleted\n");
    let run = c.run(&["get", "cm"]).ok();
    assert_eq!(run.stderr, "No resources found in default namespace.\n");
}

#[test]
fn a_bad_object_fails_the_whole_file_and_writes_nothing() {
    let c = Cluster::start();
    let bad = APP.replace(
        "        image: nginx:1.25",
        "        image: nginx:1.25\n        imagePullPolice: Always",
    );
    let file = c.write("web.yaml", &bad);
    let run = c.run(&["apply", "-f", &file]).failed();
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        format!("error: {file}: document 1 (Deployment \"web\"): Deployment.spec.template.spec.containers[0].imagePullPolice: unknown field (did you mean \"imagePullPolicy\"?)\n")
    );
    let invalid = c.write("invalid.yaml", &APP.replace("replicas: 2", "replicas: -1"));
    let run = c.run(&["apply", "-f", &invalid]).failed();
    assert_eq!(
        run.stderr,
        format!("error: {invalid}: Deployment \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0\n")
    );
    c.run(&["create", "-f", &invalid]).failed();
    for kind in ["deploy", "cm"] {
        let run = c.run(&["get", kind]).ok();
        assert_eq!(run.stdout, "", "{kind} must not have been created");
        assert_eq!(run.stderr, "No resources found in default namespace.\n");
    }
    let run = c.run(&["get", "svc", "web"]).failed();
    assert_eq!(
        run.stderr,
        "Error from server (NotFound): services \"web\" not found\n"
    );
}
