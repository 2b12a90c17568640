//! What a user meets when something is wrong, and where rkubectl finds
//! its server and namespace.

use super::*;

#[test]
fn not_found_reads_like_kubectl_and_exits_1() {
    let c = Cluster::start();
    let run = c.run(&["get", "pod", "x"]).failed();
    assert_eq!(run.stderr, "Error from server (NotFound): pods \"x\" not found\n");
    let run = c.run(&["delete", "pod/x"]).failed();
    assert_eq!(run.stderr, "Error from server (NotFound): pods \"x\" not found\n");
    let run = c.run(&["describe", "deploy", "nope"]).failed();
    assert_eq!(
        run.stderr,
        "Error from server (NotFound): deployments.apps \"nope\" not found\n"
    );

    // what exists is still printed
    c.run_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    )
    .ok();
    let run = c.run(&["get", "cm", "a", "b", "-o", "name"]).failed();
    assert_eq!(run.stdout, "configmap/a\n");
    assert_eq!(
        run.stderr,
        "Error from server (NotFound): configmaps \"b\" not found\n"
    );

    let run = c.run(&["create", "-f", "-"]);
    assert_eq!(run.code, 1);
    let run = c
        .run_stdin(
            &["create", "-f", "-"],
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        )
        .failed();
    assert_eq!(
        run.stderr,
        "Error from server (AlreadyExists): error when creating \"STDIN\": configmaps \"a\" already exists\n"
    );
}

#[test]
fn unknown_kinds_and_bad_arguments_are_client_errors() {
    let c = Cluster::start();
    let run = c.run(&["get", "widgets"]).failed();
    assert_eq!(
        run.stderr,
        "error: the server doesn't have a resource type \"widgets\"\n"
    );
    let run = c.run(&["delete", "pod"]).failed();
    assert!(
        run.stderr
            .starts_with("error: resource(s) were provided, but no name was specified"),
        "{}",
        run.stderr
    );
    let run = c.run(&["apply", "-f", "/nonexistent.yaml"]).failed();
    assert_eq!(
        run.stderr,
        "error: the path \"/nonexistent.yaml\" does not exist\n"
    );
    let run = c.run(&["get", "pods", "-o", "xml"]).failed();
    assert!(
        run.stderr
            .contains("allowed formats are: json,jsonpath,name,wide,yaml"),
        "{}",
        run.stderr
    );
    let run = c.run_stdin(&["apply", "-f", "-"], "kind: [\n").failed();
    assert!(
        run.stderr.starts_with("error: STDIN: document 1: not valid YAML"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_server_that_is_not_running_is_explained() {
    let home = tempfile::tempdir().unwrap();
    // a port nothing listens on: bind one, then free it
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out: Run = rkubectl_command(home.path())
        .args(["--server", &url, "get", "pods"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with(&format!("error: cannot connect to the apiserver at {url}: ")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.ends_with("; is it running? (make up starts one)\n"),
        "{}",
        out.stderr
    );

    // the client version is printed even so
    let out: Run = rkubectl_command(home.path())
        .args(["--server", &url, "version"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 1);
    assert!(out.stdout.starts_with("Client Version: v"), "{}", out.stdout);
    let out: Run = rkubectl_command(home.path())
        .args(["version", "--client"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn the_config_file_gives_server_and_namespace() {
    let c = Cluster::start();
    c.run_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n",
    )
    .ok();
    let rkube = c.home().join(".rkube");
    std::fs::create_dir_all(&rkube).unwrap();
    std::fs::write(
        rkube.join("config"),
        format!("server: {}\nnamespace: team\n", c.url()),
    )
    .unwrap();
    let mut cmd = rkubectl_command(c.home());
    let mut child = cmd
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-config}\n")
        .unwrap();
    let run: Run = child.wait_with_output().unwrap().into();
    let run = run.ok();
    assert_eq!(run.stdout, "configmap/from-config created\n");
    let run = c.run(&["get", "cm", "-n", "team", "-o", "name"]).ok();
    assert_eq!(run.stdout, "configmap/from-config\n");

    std::fs::write(rkube.join("config"), "sever: typo\n").unwrap();
    let out: Run = rkubectl_command(c.home())
        .args(["get", "pods"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("unknown field `sever`"), "{}", out.stderr);
}
