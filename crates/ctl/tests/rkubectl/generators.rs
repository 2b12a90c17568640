//! Objects built from flags (create KIND, run, expose), `get all`,
//! `-o jsonpath` and `wait`: what kubectl users type without a manifest.

use super::*;

#[test]
fn create_run_and_expose_build_the_objects_kubectl_builds() {
    let c = Cluster::start();
    let run = c
        .run(&[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.25",
            "--replicas=2",
            "--port=80",
        ])
        .ok();
    assert_eq!(run.stdout, "deployment.apps/web created\n");
    let run = c
        .run(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.selector.matchLabels.app} {.spec.template.spec.containers[0].name}"])
        .ok();
    assert_eq!(run.stdout, "2 web nginx");

    let run = c
        .run(&[
            "expose",
            "deployment",
            "web",
            "--port=8080",
            "--target-port=80",
            "--type=NodePort",
        ])
        .ok();
    assert_eq!(run.stdout, "service/web exposed\n");
    let run = c
        .run(&[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.type} {.spec.selector.app} {.spec.ports[0].port}>{.spec.ports[0].targetPort}",
        ])
        .ok();
    assert_eq!(run.stdout, "NodePort web 8080>80");
    // a second service from the container ports it declares
    c.run(&["expose", "deploy/web", "--name=web-direct"]).ok();
    let run = c
        .run(&["get", "svc", "web-direct", "-o", "jsonpath={.spec.ports[*].port}"])
        .ok();
    assert_eq!(run.stdout, "80");

    let run = c
        .run(&[
            "run",
            "box",
            "--image=busybox",
            "--restart=Never",
            "--env=A=1",
            "--",
            "sleep",
            "3600",
        ])
        .ok();
    assert_eq!(run.stdout, "pod/box created\n");
    let run = c
        .run(&["get", "pod", "box", "-o", r#"jsonpath={.metadata.labels.run} {.spec.restartPolicy} {.spec.containers[0].args[*]} {.spec.containers[0].env[?(@.name=="A")].value}"#])
        .ok();
    assert_eq!(run.stdout, "box Never sleep 3600 1");

    c.run(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=*/5 * * * *",
        "--",
        "date",
    ])
    .ok();
    let run = c.run(&["create", "job", "tick-now", "--from=cronjob/tick"]).ok();
    assert_eq!(run.stdout, "job.batch/tick-now created\n");
    let run = c
        .run(&["get", "job", "tick-now", "-o", "jsonpath={.metadata.ownerReferences[0].name} {.metadata.annotations.cronjob\\.kubernetes\\.io/instantiate} {.spec.template.spec.containers[0].command[0]}"])
        .ok();
    assert_eq!(run.stdout, "tick manual date");
    let run = c.run(&["create", "job", "other", "--from=deploy/web"]).failed();
    assert!(run.stderr.contains("only cronjob/NAME"), "{}", run.stderr);
    c.run(&[
        "create",
        "job",
        "pi",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "exit 0",
    ])
    .ok();

    // `get all` lists every workload kind that has objects, kind-prefixed
    let run = c.run(&["get", "all"]).ok();
    for name in [
        "pod/box",
        "service/web",
        "deployment.apps/web",
        "cronjob.batch/tick",
        "job.batch/pi",
    ] {
        assert!(
            run.stdout.contains(name),
            "{name} missing from get all:\n{}",
            run.stdout
        );
    }
    assert!(!run.stdout.contains("configmap"), "{}", run.stdout);

    // configuration objects, from literals and files
    let file = c.write("app.conf", "x=1\n");
    let run = c
        .run(&[
            "create",
            "configmap",
            "conf",
            "--from-literal=greeting=hello",
            &format!("--from-file={file}"),
        ])
        .ok();
    assert_eq!(run.stdout, "configmap/conf created\n");
    let run = c
        .run(&[
            "get",
            "cm",
            "conf",
            "-o",
            "jsonpath={.data.greeting}/{.data.app\\.conf}",
        ])
        .ok();
    assert_eq!(run.stdout, "hello/x=1\n");
    c.run(&[
        "create",
        "secret",
        "generic",
        "pw",
        "--from-literal=password=s3cret",
    ])
    .ok();
    let run = c
        .run(&["get", "secret", "pw", "-o", "jsonpath={.type} {.data.password}"])
        .ok();
    assert_eq!(run.stdout, "Opaque czNjcmV0");
    c.run(&["create", "namespace", "team"]).ok();
    let run = c.run(&["create", "serviceaccount", "robot", "-n", "team"]).ok();
    assert_eq!(run.stdout, "serviceaccount/robot created\n");
    c.run(&["get", "sa", "robot", "-n", "team"]).ok();

    // a dry run prints a manifest and creates nothing
    let run = c
        .run(&[
            "create",
            "deployment",
            "draft",
            "--image=busybox",
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .ok();
    assert!(run.stdout.contains("kind: Deployment"), "{}", run.stdout);
    assert!(run.stdout.contains("name: draft"), "{}", run.stdout);
    let run = c.run(&["get", "deploy", "draft"]).failed();
    assert!(run.stderr.contains("not found"), "{}", run.stderr);

    // mistakes name what is wrong
    let run = c.run(&["create", "deployment", "x"]).failed();
    assert!(run.stderr.contains("--image"), "{}", run.stderr);
    let run = c
        .run(&["create", "configmap", "bad", "--from-literal=no-equals"])
        .failed();
    assert!(run.stderr.contains("KEY=VALUE"), "{}", run.stderr);
    let run = c.run(&["expose", "job", "pi", "--port=80"]).failed();
    assert!(run.stderr.contains("cannot expose job/pi"), "{}", run.stderr);
    let run = c.run(&["get", "pods", "-o", "jsonpath={.items[0]"]).failed();
    assert!(run.stderr.contains("jsonpath"), "{}", run.stderr);
}

#[test]
fn wait_watches_until_the_condition_or_the_deletion() {
    let c = Cluster::start();
    c.run(&["create", "configmap", "flag", "--from-literal=state=starting"])
        .ok();
    // already met: returns at once
    let run = c
        .run(&[
            "wait",
            "cm/flag",
            "--for=jsonpath={.data.state}=starting",
            "--timeout=5s",
        ])
        .ok();
    assert_eq!(run.stdout, "configmap/flag condition met\n");
    // not met in time: fails naming the object
    let run = c
        .run(&[
            "wait",
            "cm/flag",
            "--for=jsonpath={.data.state}=ready",
            "--timeout=1s",
        ])
        .failed();
    assert!(
        run.stderr
            .contains("timed out waiting for the condition on configmaps/flag"),
        "{}",
        run.stderr
    );

    // met while waiting
    let waiter = c
        .command(&[
            "wait",
            "cm/flag",
            "--for=jsonpath={.data.state}=ready",
            "--timeout=60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = c.write(
        "ready.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: flag}\ndata: {state: ready}\n",
    );
    c.run(&["apply", "-f", &ready]).ok();
    let run: Run = waiter.wait_with_output().unwrap().into();
    assert_eq!(run.ok().stdout, "configmap/flag condition met\n");

    // deletion
    let waiter = c
        .command(&["wait", "--for=delete", "configmap/flag", "--timeout=60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.run(&["delete", "configmap", "flag"]).ok();
    let run: Run = waiter.wait_with_output().unwrap().into();
    assert_eq!(run.ok().stdout, "configmap/flag deleted\n");
    // a name that does not exist is already deleted, and has no condition
    c.run(&["wait", "--for=delete", "cm/flag", "--timeout=1s"]).ok();
    let run = c
        .run(&["wait", "--for=condition=Ready", "cm/flag", "--timeout=1s"])
        .failed();
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
}
