//! The real kubectl (`/usr/bin/kubectl`, the machine's version dispatcher,
//! which runs the kubectl matching the server's reported 1.32) against a
//! secure apiserver: TLS with client certificates from a PKI written by
//! `rkubectl certs generate`, RBAC and an audit log, through a standard
//! kubeconfig. Everything kubectl does here goes over the REST face.
//! One file over 900 lines because every test shares the one secure cluster
//! and kubectl helpers above; each test is one kubectl feature.

mod support;

use serde_json::Value;
use std::process::Stdio;
use support::kubectl::start_cluster;

/// The README's example (a Deployment with probes, resources and named
/// ports, and a NodePort Service) and a ConfigMap.
fn app() -> String {
    format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  greeting: hello\n",
        include_str!("../../../deploy/examples/web.yaml")
    )
}

const IMAGE: &str = "localhost:5000/rkube/busybox:latest";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drives_a_secure_apiserver() {
    let c = start_cluster().await;
    assert!(c.url.starts_with("https://"), "{}", c.url);

    let version = c.json(&["version"]).await;
    assert_eq!(version["serverVersion"]["minor"], "32", "{version}");

    let resources = c.kubectl(&["api-resources"]).await;
    let deployments = resources
        .lines()
        .find(|l| l.starts_with("deployments "))
        .unwrap_or_else(|| panic!("{resources}"));
    assert!(
        deployments.contains("deploy") && deployments.contains("apps/v1"),
        "{deployments}"
    );

    let ns = c.kubectl(&["get", "ns"]).await;
    assert!(ns.contains("default") && ns.contains("kube-system"), "{ns}");

    // apply validates without --validate=false (the server does it)
    std::fs::write(c.path("app.yaml"), app()).unwrap();
    let app_file = c.path("app.yaml");
    let app_file = app_file.to_str().unwrap();
    let applied = c.kubectl(&["apply", "-f", app_file]).await;
    for line in [
        "configmap/web-config created",
        "deployment.apps/web created",
        "service/web created",
    ] {
        assert!(applied.contains(line), "{applied}");
    }
    let deploy = c.json(&["get", "deployment", "web"]).await;
    assert_eq!(
        (deploy["kind"].as_str(), deploy["spec"]["replicas"].as_i64()),
        (Some("Deployment"), Some(3))
    );
    let yaml = c.kubectl(&["get", "configmap", "web-config", "-o", "yaml"]).await;
    assert!(
        yaml.contains("greeting: hello") && yaml.contains("kind: ConfigMap"),
        "{yaml}"
    );
    let image = c
        .kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await;
    assert_eq!(image, IMAGE);
    let svc = c.json(&["get", "svc", "web"]).await;
    assert!(
        svc["spec"]["clusterIP"].as_str().is_some_and(|ip| !ip.is_empty()),
        "{svc}"
    );

    // a second apply of a changed file: a strategic merge patch
    let changed = app()
        .replace("replicas: 3", "replicas: 4")
        .replace(IMAGE, "busybox:v2");
    std::fs::write(c.path("app.yaml"), changed).unwrap();
    let applied = c.kubectl(&["apply", "-f", app_file]).await;
    assert!(applied.contains("deployment.apps/web configured"), "{applied}");
    assert!(applied.contains("configmap/web-config unchanged"), "{applied}");
    let deploy = c.json(&["get", "deploy", "web"]).await;
    assert_eq!(deploy["spec"]["replicas"], 4);
    let httpd = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(httpd["image"], "busybox:v2");
    assert_eq!(httpd["readinessProbe"]["httpGet"]["port"], "http", "{httpd}");

    // the three patch types, scale, label, set image
    c.kubectl(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"m":"1"}}}"#,
    ])
    .await;
    c.kubectl(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/j","value":"2"}]"#,
    ])
    .await;
    c.kubectl(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"httpd","env":[{"name":"MODE","value":"test"}]}]}}}}"#,
    ])
    .await;
    let scaled = c.kubectl(&["scale", "deploy", "web", "--replicas=5"]).await;
    assert!(scaled.contains("deployment.apps/web scaled"), "{scaled}");
    c.kubectl(&["label", "deploy", "web", "tier=front"]).await;
    c.kubectl(&["set", "image", "deploy/web", "httpd=busybox:v3"])
        .await;
    let deploy = c.json(&["get", "deploy", "web"]).await;
    let labels = &deploy["metadata"]["labels"];
    assert_eq!(
        (
            labels["m"].as_str(),
            labels["j"].as_str(),
            labels["tier"].as_str()
        ),
        (Some("1"), Some("2"), Some("front"))
    );
    assert_eq!(deploy["spec"]["replicas"], 5);
    let httpd = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(httpd["image"], "busybox:v3");
    assert_eq!(httpd["env"][0]["value"], "test", "{httpd}");
    assert!(
        httpd["args"][0].as_str().unwrap().contains("httpd -f -p 8080"),
        "strategic merge keeps what the patch does not name: {httpd}"
    );

    // get -w sees a change, then is stopped
    let mut watch = c
        .command(
            "admin.kubeconfig",
            &["get", "configmaps", "-w", "--output-watch-events"],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    std::fs::write(
        c.path("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\n",
    )
    .unwrap();
    c.kubectl(&["create", "-f", c.path("cm.yaml").to_str().unwrap()])
        .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    watch.start_kill().unwrap();
    let out = watch.wait_with_output().await.unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(seen.contains("ADDED") && seen.contains("watched"), "{seen}");

    // delete waits for the object to be gone
    let deleted = c
        .kubectl(&["delete", "configmap", "watched", "--wait=true", "--timeout=20s"])
        .await;
    assert!(deleted.contains("configmap \"watched\" deleted"), "{deleted}");
    let (ok, _, err) = c
        .run_as("admin.kubeconfig", &["get", "configmap", "watched"])
        .await;
    assert!(!ok);
    assert!(
        err.contains("Error from server (NotFound): configmaps \"watched\" not found"),
        "{err}"
    );

    // authorization over REST: the admin may, a node may not
    assert_eq!(
        c.kubectl(&["auth", "can-i", "delete", "namespaces"]).await.trim(),
        "yes"
    );
    let (ok, out, _) = c
        .run_as("node.kubeconfig", &["auth", "can-i", "delete", "namespaces"])
        .await;
    assert!(!ok && out.starts_with("no"), "{out}");
    let (ok, _, err) = c
        .run_as("node.kubeconfig", &["delete", "configmap", "web-config"])
        .await;
    assert!(!ok);
    assert!(err.contains("Error from server (Forbidden)"), "{err}");

    // HTTP/1.1 over TLS, as the Python client speaks it: ALPN offers it,
    // the client certificate authenticates, no credentials is a 401 Status
    let pki = c.path("pki");
    let read = |f: &str| std::fs::read(pki.join(f)).unwrap();
    let ca = reqwest::Certificate::from_pem(&read("ca.crt")).unwrap();
    let mut identity = read("admin.crt");
    identity.extend(read("admin.key"));
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca.clone())
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let resp = http
        .get(format!("{}/api/v1/namespaces", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (resp.status().as_u16(), resp.version()),
        (200, reqwest::Version::HTTP_11)
    );
    let list: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(list["kind"], "NamespaceList");
    let anonymous = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let resp = anonymous
        .get(format!("{}/api/v1/namespaces", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let status: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("Unauthorized"))
    );
    // bearer tokens: a known user without rights is Forbidden, an unknown
    // token Unauthorized
    for (token, code, reason) in [("carol-token", 403, "Forbidden"), ("wrong", 401, "Unauthorized")] {
        let resp = anonymous
            .get(format!("{}/api/v1/namespaces/default/configmaps", c.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), code, "{token}");
        let status: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        assert_eq!(status["reason"], reason, "{status}");
        if code == 403 {
            let message = status["message"].as_str().unwrap();
            assert!(
                message.contains("carol") && message.contains("configmaps"),
                "{message}"
            );
        }
    }

    // deletecollection is authorized as Kubernetes' own verb
    let resp = anonymous
        .delete(format!("{}/api/v1/namespaces/default/configmaps", c.url))
        .bearer_auth("carol-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let status: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert!(
        status["message"].as_str().unwrap().contains("deletecollection"),
        "{status}"
    );

    // REST writes are audited like gRPC ones
    let audit = std::fs::read_to_string(c.path("audit.log")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"deployments\"") && l.contains("\"verb\":\"patch\"")),
        "{audit}"
    );
    c.stop().await;
}

/// kubectl's own drain over the eviction subresource: refused and retried while a
/// PodDisruptionBudget allows nothing (the test plays the disruption controller), done
/// once it allows one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_evicts_through_budgets() {
    use rkube_api::core::v1::{Node, Pod, PodCondition};
    use rkube_api::policy::v1::PodDisruptionBudget;
    use rkube_api::Resource;
    use rkube_client::Api;
    let c = start_cluster().await;
    let client = c.api.client();
    let mut node = Node::default();
    node.metadata_mut().name = "n1".into();
    Api::<Node>::all(client.clone()).create(&node).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_yaml::from_str(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {app: web}}\nspec:\n  nodeName: n1\n  containers: [{name: app, image: busybox}]\n",
    )
    .unwrap();
    pods.create(&pod).await.unwrap();
    pods.replace_status_with("a", |mut p| {
        let s = p.status.get_or_insert_with(Default::default);
        s.phase = "Running".into();
        s.conditions.push(PodCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        });
        p
    })
    .await
    .unwrap();
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let pdb: PodDisruptionBudget = serde_yaml::from_str(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec:\n  minAvailable: 1\n  selector: {matchLabels: {app: web}}\n",
    )
    .unwrap();
    let generation = pdbs.create(&pdb).await.unwrap().metadata().generation;
    let allow = |n: i32| {
        let pdbs = pdbs.clone();
        async move {
            pdbs.replace_status_with("web", |mut p| {
                let s = p.status.get_or_insert_with(Default::default);
                s.observed_generation = generation;
                s.disruptions_allowed = n;
                s.current_healthy = 1 + n;
                s.desired_healthy = 1;
                s.expected_pods = 1;
                p
            })
            .await
            .unwrap();
        }
    };
    allow(0).await;
    // --force: the pod declares no controller
    let (ok, out, err) = c
        .run_as(
            "admin.kubeconfig",
            &["drain", "n1", "--force", "--grace-period=0", "--timeout=3s"],
        )
        .await;
    assert!(!ok, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("error when evicting pods/\"a\" -n \"default\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget."),
        "stdout: {out}\nstderr: {err}"
    );
    assert!(pods.get_opt("a").await.unwrap().is_some());
    allow(1).await;
    let out = c
        .kubectl(&["drain", "n1", "--force", "--grace-period=0", "--timeout=30s"])
        .await;
    assert!(out.contains("pod/a evicted"), "{out}");
    assert!(out.contains("node/n1 drained"), "{out}");
    assert!(pods.get_opt("a").await.unwrap().is_none());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_service_account_tokens_that_authenticate() {
    let c = start_cluster().await;
    let sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: robot, namespace: default}\n";
    std::fs::write(c.path("sa.yaml"), sa).unwrap();
    c.kubectl(&["apply", "-f", c.path("sa.yaml").to_str().unwrap()])
        .await;
    // `kubectl create token` sends a protobuf TokenRequest
    let token = c
        .kubectl(&["create", "token", "robot", "--duration", "20m"])
        .await;
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let (ok, _, err) = c
        .run_as(
            "admin.kubeconfig",
            &["create", "token", "robot", "--duration", "1m"],
        )
        .await;
    assert!(!ok);
    assert!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );
    // the token is the account, whatever else the kubeconfig holds
    let (ok, out, _) = c
        .run_as(
            "admin.kubeconfig",
            &["--token", token, "auth", "can-i", "list", "pods"],
        )
        .await;
    assert!(!ok && out.starts_with("no"), "{out}");
    let (ok, _, err) = c
        .run_as("admin.kubeconfig", &["--token", token, "get", "pods"])
        .await;
    assert!(!ok);
    assert!(
        err.contains(r#"User "system:serviceaccount:default:robot" cannot list resource "pods""#),
        "{err}"
    );
    c.stop().await;
}

/// kubectl exec, attach and port-forward are authorized as Kubernetes does it,
/// `create` on `pods/exec`, `pods/attach` and `pods/portforward` (kubectl sends a GET for
/// the WebSocket), and refused before the connection is upgraded, so
/// kubectl prints the server's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_attach_and_port_forward_need_create_on_their_subresources() {
    let c = start_cluster().await;
    let pki = c.api.pki();
    // carol, by her token, may read pods only
    let carol = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: rkube\n  cluster: {{server: {}, certificate-authority: {}}}\n\
         users:\n- name: carol\n  user: {{token: carol-token}}\ncontexts:\n- name: carol\n  context: {{cluster: rkube, user: carol}}\n\
         current-context: carol\n",
        c.url,
        pki.join("ca.crt").display()
    );
    std::fs::write(c.path("carol.kubeconfig"), carol).unwrap();
    let grants = |resources: &str| {
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: carol, namespace: default}}\n\
             rules:\n- apiGroups: [\"\"]\n  resources: [{resources}]\n  verbs: [get, list, create]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: carol, namespace: default}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: carol}}\n\
             subjects:\n- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: carol}}\n"
        )
    };
    std::fs::write(c.path("carol-role.yaml"), grants("pods")).unwrap();
    let role = c.path("carol-role.yaml");
    c.kubectl(&["apply", "-f", role.to_str().unwrap()]).await;
    std::fs::write(
        c.path("pod.yaml"),
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  containers:\n  - {{name: c, image: {IMAGE}}}\n"),
    )
    .unwrap();
    c.kubectl(&["apply", "-f", c.path("pod.yaml").to_str().unwrap()])
        .await;
    // kubectl forwards only to a Running pod: say it runs (no node here)
    c.kubectl(&[
        "patch",
        "pod",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ])
    .await;

    let (ok, out, err) = c.run_as("carol.kubeconfig", &["exec", "web", "--", "true"]).await;
    assert!(!ok, "{out}");
    assert!(
        err.contains(r#"User "carol" cannot create resource "pods/exec""#),
        "{err}"
    );
    let (ok, out, err) = c.run_as("carol.kubeconfig", &["attach", "web"]).await;
    assert!(!ok, "{out}");
    assert!(
        err.contains(r#"User "carol" cannot create resource "pods/attach""#),
        "{err}"
    );
    let (ok, out, err) = c
        .run_as("carol.kubeconfig", &["port-forward", "pod/web", ":8080"])
        .await;
    assert!(!ok, "{out}");
    assert!(
        err.contains(r#"User "carol" cannot create resource "pods/portforward""#),
        "{err}"
    );

    // with the right, the request gets through to the pod, which runs nowhere
    std::fs::write(&role, grants("pods, pods/exec, pods/attach")).unwrap();
    c.kubectl(&["apply", "-f", role.to_str().unwrap()]).await;
    for args in [&["exec", "web", "--", "true"][..], &["attach", "web"]] {
        let (ok, out, err) = c.run_as("carol.kubeconfig", args).await;
        assert!(!ok, "{out}");
        assert!(err.contains("is not scheduled to a node yet"), "{args:?}: {err}");
    }
    c.stop().await;
}

/// The columns of a table kubectl printed: its header split where kubectl's
/// tabwriter put three or more spaces, so multi-word headers stay whole.
fn header(out: &str) -> Vec<String> {
    out.lines()
        .next()
        .unwrap_or_default()
        .split("   ")
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect()
}

/// The words of the line of a table that starts with `name`.
fn row<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{out}"))
        .split_whitespace()
        .collect()
}

/// Stock `kubectl get` asks for a meta.k8s.io/v1 Table and prints the
/// server's columns: what kubectl shows against Kubernetes, with the
/// values of the objects (a pod's phase, a Deployment's ready/wanted, a
/// Service's node port, a node's addresses with `-o wide`), `-A` and
/// `--show-labels` from the rows' metadata, and `-w` printing new rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_prints_the_servers_tables() {
    let c = start_cluster().await;
    let file = c.path("objects.yaml");
    let file = file.to_str().unwrap();
    std::fs::write(
        file,
        format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: n1}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: web-1, labels: {{app: web}}}}\n\
             spec: {{nodeName: n1, containers: [{{name: c, image: {IMAGE}}}]}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: web-2}}\nspec: {{containers: [{{name: c, image: {IMAGE}}}]}}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\n\
             spec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: c, image: {IMAGE}}}]}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{type: NodePort, selector: {{app: web}}, ports: [{{port: 80}}]}}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{a: '1', b: '2'}}\n"
        ),
    )
    .unwrap();
    c.kubectl(&["apply", "-f", file]).await;
    let status = |kind: &'static str, name: &'static str, status: &'static str| {
        let c = &c;
        async move {
            c.kubectl(&[
                "patch",
                kind,
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                status,
            ])
            .await;
        }
    };
    status(
        "pod",
        "web-1",
        r#"{"status":{"phase":"Running","podIP":"10.244.0.5","containerStatuses":[{"name":"c","image":"busybox","imageID":"","ready":true,"restartCount":0,"state":{"running":{"startedAt":"2024-05-01T11:00:00Z"}}}]}}"#,
    )
    .await;
    status(
        "node",
        "n1",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True"}],"addresses":[{"type":"InternalIP","address":"192.168.7.10"}],"nodeInfo":{"kubeletVersion":"v1.32.0","osImage":"Debian GNU/Linux 12","kernelVersion":"6.1.0","containerRuntimeVersion":"containerd://1.6.20"}}}"#,
    )
    .await;

    let pods = c.kubectl(&["get", "pods"]).await;
    assert_eq!(
        header(&pods),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{pods}"
    );
    assert_eq!(
        row(&pods, "web-1")[..4],
        ["web-1", "1/1", "Running", "0"],
        "{pods}"
    );
    assert_eq!(
        row(&pods, "web-2")[..4],
        ["web-2", "0/1", "Pending", "0"],
        "{pods}"
    );
    let wide = c.kubectl(&["get", "pods", "-o", "wide"]).await;
    assert_eq!(
        header(&wide),
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ],
        "{wide}"
    );
    assert_eq!(
        row(&wide, "web-1")[5..],
        ["10.244.0.5", "n1", "<none>", "<none>"],
        "{wide}"
    );
    // --sort-by asks for whole objects in the rows (includeObject=Object)
    let sorted = c.kubectl(&["get", "pods", "--sort-by=.status.phase"]).await;
    let names: Vec<&str> = sorted
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["web-2", "web-1"], "Pending before Running:\n{sorted}");
    // a get by name is a one-row table
    let one = c.kubectl(&["get", "pod", "web-2"]).await;
    assert_eq!(
        (one.lines().count(), row(&one, "web-2")[2]),
        (2, "Pending"),
        "{one}"
    );

    let deploy = c.kubectl(&["get", "deploy"]).await;
    assert_eq!(
        header(&deploy),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{deploy}"
    );
    assert_eq!(row(&deploy, "web")[..4], ["web", "0/2", "0", "0"], "{deploy}");
    let wide = c.kubectl(&["get", "deploy", "-o", "wide"]).await;
    assert_eq!(row(&wide, "web")[5..], ["c", IMAGE, "app=web"], "{wide}");

    let svc = c.json(&["get", "svc", "web"]).await;
    let (cluster_ip, node_port) = (
        svc["spec"]["clusterIP"].as_str().unwrap().to_string(),
        svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap(),
    );
    let svcs = c.kubectl(&["get", "svc"]).await;
    assert_eq!(
        header(&svcs),
        ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
        "{svcs}"
    );
    assert_eq!(
        row(&svcs, "web")[..5],
        [
            "web",
            "NodePort",
            cluster_ip.as_str(),
            "<none>",
            &format!("80:{node_port}/TCP")
        ],
        "{svcs}"
    );

    let nodes = c.kubectl(&["get", "nodes", "-o", "wide"]).await;
    assert_eq!(
        header(&nodes),
        [
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME"
        ],
        "{nodes}"
    );
    let n1 = row(&nodes, "n1");
    assert_eq!(
        (n1[1], n1[2], n1[4], n1[5], n1[6]),
        ("Ready", "<none>", "v1.32.0", "192.168.7.10", "<none>"),
        "{nodes}"
    );
    assert!(
        nodes.contains("Debian GNU/Linux 12") && nodes.contains("containerd://1.6.20"),
        "{nodes}"
    );

    // the rows' metadata: kubectl adds the namespace and the labels itself,
    // and names rows by kind when one command shows several kinds
    let all = c.kubectl(&["get", "pods", "-A", "--show-labels"]).await;
    assert_eq!(
        header(&all).first().map(String::as_str),
        Some("NAMESPACE"),
        "{all}"
    );
    assert_eq!(header(&all).last().map(String::as_str), Some("LABELS"), "{all}");
    assert_eq!(row(&all, "default")[1], "web-1", "{all}");
    assert_eq!(row(&all, "default").last(), Some(&"app=web"), "{all}");
    let mixed = c.kubectl(&["get", "deploy,svc"]).await;
    assert!(
        mixed.contains("deployment.apps/web") && mixed.contains("service/web"),
        "{mixed}"
    );
    let cms = c.kubectl(&["get", "configmaps"]).await;
    assert_eq!(header(&cms), ["NAME", "DATA", "AGE"], "{cms}");
    assert_eq!(row(&cms, "settings")[..2], ["settings", "2"], "{cms}");

    // a Table is the same list, authorized the same way
    let (ok, out, err) = c.run_as("node.kubeconfig", &["get", "secrets"]).await;
    assert!(!ok, "{out}");
    assert!(
        err.contains("Error from server (Forbidden)") && err.contains("secrets"),
        "{err}"
    );

    // -w: the first table, then a row per change, in the same columns
    let mut watch = c
        .command("admin.kubeconfig", &["get", "pods", "-w"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(watch.stdout.take().unwrap()));
    let mut next_line = async || {
        tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("kubectl get -w printed nothing for 30s")
            .unwrap()
            .expect("kubectl get -w ended")
    };
    assert_eq!(
        header(&next_line().await),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    while !next_line().await.starts_with("web-2") {}
    status("pod", "web-2", r#"{"status":{"phase":"Failed"}}"#).await;
    loop {
        let line = next_line().await;
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"web-2") && words.get(2) == Some(&"Failed") {
            break;
        }
    }
    watch.start_kill().unwrap();
    c.stop().await;
}

/// A Deployment of two containers, `a` with env A1, A2 and A3, `b` with env B1.
const TWO_CONTAINERS: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: pair}
spec:
  replicas: 1
  selector: {matchLabels: {app: pair}}
  template:
    metadata: {labels: {app: pair}}
    spec:
      containers:
      - name: a
        image: busybox:1
        env: [{name: A1, value: '1'}, {name: A2, value: '2'}, {name: A3, value: '3'}]
      - name: b
        image: busybox:1
        env: [{name: B1, value: '1'}]
";

/// `kubectl explain` reads the schemas the server generates from proto/,
/// and client-side `kubectl apply` computes its strategic merge patch from
/// their merge keys: a re-apply changing one container and dropping one env
/// entry keeps what it does not name, including what was added beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explains_and_applies_with_the_servers_schemas() {
    let c = start_cluster().await;

    let containers = c.kubectl(&["explain", "pods.spec.containers"]).await;
    for want in [
        "KIND:       Pod",
        "VERSION:    v1",
        "FIELD: containers <[]Container>",
        "The pod's app containers",
        "FIELDS:",
        "image\t<string>",
        "The container image to run",
        "env\t<[]EnvVar>",
        "resources\t<ResourceRequirements>",
    ] {
        assert!(containers.contains(want), "{want:?} in:\n{containers}");
    }
    let nested = c
        .kubectl(&["explain", "deployment.spec.template.spec.containers.ports"])
        .await;
    assert!(
        nested.contains("GROUP:      apps") && nested.contains("containerPort\t<integer>"),
        "{nested}"
    );
    let recursive = c.kubectl(&["explain", "deployment", "--recursive"]).await;
    for want in [
        "KIND:       Deployment",
        "spec\t<DeploymentSpec>",
        "      containers\t<[]Container>",
        "maxSurge\t<IntOrString>",
        "creationTimestamp\t<string>",
    ] {
        assert!(recursive.contains(want), "{want:?} in:\n{recursive}");
    }
    // every kind served is explained, in its own group-version
    for k in rkube_api::KINDS {
        let api_version = format!("--api-version={}", k.api_version());
        let out = c.kubectl(&["explain", k.plural, &api_version]).await;
        assert!(
            out.contains(&format!("KIND:       {}\n", k.kind)) && out.contains("metadata\t<ObjectMeta>"),
            "{out}"
        );
    }
    let (ok, _, err) = c
        .run_as("admin.kubeconfig", &["explain", "pods.spec.nosuchfield"])
        .await;
    assert!(!ok && err.contains("nosuchfield"), "{err}");

    let file = c.path("pair.yaml");
    let file = file.to_str().unwrap();
    std::fs::write(file, TWO_CONTAINERS).unwrap();
    let applied = c.kubectl(&["apply", "-f", file]).await;
    assert!(applied.contains("deployment.apps/pair created"), "{applied}");
    // beside the applied configuration: an env entry of b and a third container
    c.kubectl(&["set", "env", "deployment/pair", "-c", "b", "B2=9"])
        .await;
    c.kubectl(&[
        "patch",
        "deployment",
        "pair",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"busybox:1"}]}}}}"#,
    ])
    .await;

    let changed = TWO_CONTAINERS
        .replacen("image: busybox:1", "image: busybox:2", 1)
        .replace(" {name: A2, value: '2'},", "");
    std::fs::write(file, changed).unwrap();
    let (ok, out, err) = c.run_as("admin.kubeconfig", &["apply", "-f", file, "-v=6"]).await;
    assert!(
        ok && out.contains("deployment.apps/pair configured"),
        "{out}\n{err}"
    );
    // the patch came from the server's schema, without falling back
    assert!(err.contains("/openapi/v3/apis/apps/v1"), "{err}");
    assert!(!err.contains("error calculating patch"), "{err}");

    let deploy = c.json(&["get", "deployment", "pair"]).await;
    let containers = deploy["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    let summary: Vec<(String, String, Vec<String>)> = containers
        .iter()
        .map(|c| {
            let env = c["env"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .map(|v| format!("{}={}", v["name"].as_str().unwrap(), v["value"].as_str().unwrap()))
                        .collect()
                })
                .unwrap_or_default();
            (
                c["name"].as_str().unwrap().to_string(),
                c["image"].as_str().unwrap().to_string(),
                env,
            )
        })
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        summary,
        vec![
            ("a".into(), "busybox:2".into(), s(&["A1=1", "A3=3"])),
            ("b".into(), "busybox:1".into(), s(&["B1=1", "B2=9"])),
            ("c".into(), "busybox:1".into(), vec![]),
        ]
    );
    c.stop().await;
}

/// kubectl's typed clients (`kubectl create KIND ...`) send Kubernetes'
/// protobuf, which the REST face transcodes to the JSON it reads; the objects
/// read back hold what kubectl put in them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_sends_protobuf_that_the_server_reads() {
    use serde_json::json;
    let c = start_cluster().await;
    // `kubectl WORDS` as the administrator, and `kubectl get WORDS -o json`
    let run = |line: &'static str| c.kubectl_words(line);
    let get = |line: &'static str| async {
        let mut args: Vec<&str> = "get".split(' ').chain(line.split_whitespace()).collect();
        args.extend(["-o", "json"]);
        serde_json::from_str::<Value>(&c.kubectl(&args).await).unwrap()
    };
    run("create namespace shop").await;
    assert_eq!(get("namespace shop").await["metadata"]["name"], "shop");

    // kubectl says at -v=8 what it sent and accepts
    let line = "-n shop create deployment web --image=busybox --replicas=2 --port=8080 -v=8";
    let (done, _, log) = c
        .run_as("admin.kubeconfig", &line.split(' ').collect::<Vec<_>>())
        .await;
    assert!(done, "{log}");
    assert!(
        log.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "kubectl sent no protobuf:\n{log}"
    );
    // a JSON answer too, which is what rkube sends
    assert!(
        log.contains("Accept: application/vnd.kubernetes.protobuf,application/json"),
        "{log}"
    );
    let d = get("-n shop deployment web").await;
    assert_eq!(d["spec"]["replicas"], 2, "{d}");
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web", "{d}");
    assert_eq!(d["spec"]["template"]["metadata"]["labels"]["app"], "web", "{d}");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "busybox", "{d}");
    assert_eq!(container["ports"][0]["containerPort"], 8080, "{d}");

    // a server-side dry run answers the object and stores nothing
    let out = run("-n shop create deployment dry --image=busybox --dry-run=server -o yaml").await;
    assert!(
        out.contains("name: dry") && out.contains("image: busybox"),
        "{out}"
    );
    let (found, _, _) = c
        .run_as("admin.kubeconfig", &["-n", "shop", "get", "deployment", "dry"])
        .await;
    assert!(!found, "a dry run stored the deployment");

    run("-n shop create configmap cfg --from-literal=greeting=hello").await;
    let cm = get("-n shop configmap cfg").await;
    assert_eq!(cm["data"]["greeting"], "hello", "{cm}");

    run("-n shop create secret generic pw --from-literal=password=hunter2").await;
    let s = get("-n shop secret pw").await;
    assert_eq!(
        (&s["data"]["password"], &s["type"]),
        (&json!("aHVudGVyMg=="), &json!("Opaque")),
        "{s}"
    );

    run("-n shop create serviceaccount robot").await;
    assert_eq!(
        get("-n shop serviceaccount robot").await["metadata"]["name"],
        "robot"
    );

    run("-n shop create job once --image=busybox -- echo hi").await;
    let j = get("-n shop job once").await;
    let pod = &j["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["command"], json!(["echo", "hi"]), "{j}");
    assert_eq!(pod["restartPolicy"], "Never", "{j}");

    let cron = [
        "-n",
        "shop",
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=*/5 * * * *",
        "--",
        "date",
    ];
    c.kubectl(&cron).await;
    let cj = get("-n shop cronjob tick").await;
    assert_eq!(cj["spec"]["schedule"], "*/5 * * * *", "{cj}");
    let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["command"], json!(["date"]), "{cj}");

    run("-n shop create role reader --verb=get,list --resource=pods").await;
    let r = get("-n shop role reader").await;
    assert_eq!(r["rules"][0]["verbs"], json!(["get", "list"]), "{r}");
    assert_eq!(r["rules"][0]["resources"], json!(["pods"]), "{r}");
    run("-n shop create rolebinding read --role=reader --user=alice").await;
    let rb = get("-n shop rolebinding read").await;
    assert_eq!(
        (&rb["roleRef"]["name"], &rb["subjects"][0]["name"]),
        (&json!("reader"), &json!("alice")),
        "{rb}"
    );
    run("create clusterrole node-reader --verb=get --resource=nodes").await;
    let cr = get("clusterrole node-reader").await;
    assert_eq!(cr["rules"][0]["resources"], json!(["nodes"]), "{cr}");
    run("create clusterrolebinding node-read --clusterrole=node-reader --group=ops").await;
    let crb = get("clusterrolebinding node-read").await;
    assert_eq!(
        (&crb["subjects"][0]["kind"], &crb["roleRef"]["kind"]),
        (&json!("Group"), &json!("ClusterRole")),
        "{crb}"
    );

    run("-n shop create quota q --hard=pods=10,requests.cpu=2").await;
    let q = get("-n shop quota q").await;
    assert_eq!(
        q["spec"]["hard"],
        json!({"pods": "10", "requests.cpu": "2"}),
        "{q}"
    );

    run("-n shop create pdb web --selector=app=web --min-available=50%").await;
    let pdb = get("-n shop pdb web").await;
    assert_eq!(pdb["spec"]["minAvailable"], "50%", "{pdb}");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"]["app"], "web", "{pdb}");

    run("create priorityclass high --value=1000 --description=urgent").await;
    let pc = get("priorityclass high").await;
    assert_eq!(
        (&pc["value"], &pc["description"]),
        (&json!(1000), &json!("urgent")),
        "{pc}"
    );

    run("-n shop create service clusterip web --tcp=80:8080").await;
    let svc = get("-n shop service web").await;
    let port = &svc["spec"]["ports"][0];
    assert_eq!(
        (&port["port"], &port["targetPort"]),
        (&json!(80), &json!(8080)),
        "{svc}"
    );
    assert_eq!(svc["spec"]["selector"]["app"], "web", "{svc}");

    // an Ingress: the rule's value (`http`) is an embedded struct on the wire
    run("-n shop create ingress web --class=rkube --rule=foo.example.com/api*=web:80,tls=web-tls --rule=/exact=web:http --default-backend=web:http").await;
    let ing = get("-n shop ingress web").await;
    let spec = &ing["spec"];
    assert_eq!(spec["ingressClassName"], "rkube", "{ing}");
    assert_eq!(
        spec["rules"][0],
        json!({"host": "foo.example.com", "http": {"paths": [{"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}),
        "{ing}"
    );
    assert_eq!(spec["rules"][1]["http"]["paths"][0]["pathType"], "Exact", "{ing}");
    assert_eq!(
        spec["tls"][0],
        json!({"hosts": ["foo.example.com"], "secretName": "web-tls"}),
        "{ing}"
    );
    assert_eq!(spec["defaultBackend"]["service"]["port"]["name"], "http", "{ing}");

    // outside shop, whose quota wants cpu requests
    run("run one --image=busybox --env=MODE=test --port=80 -- sleep 1").await;
    let pod = get("pod one").await;
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        container["env"][0],
        json!({"name": "MODE", "value": "test"}),
        "{pod}"
    );
    assert_eq!(container["args"], json!(["sleep", "1"]), "{pod}");
    assert_eq!(container["ports"][0]["containerPort"], 80, "{pod}");
    c.stop().await;
}

const SSA: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: ssa
  labels: {app: ssa, tier: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: ssa}}
  template:
    metadata: {labels: {app: ssa}}
    spec:
      containers:
      - name: web
        image: busybox:1
        env: [{name: A, value: '1'}, {name: B, value: '2'}]
";

/// The managers owning `.spec.replicas` of a Deployment, from its managedFields.
fn replicas_owners(deploy: &Value) -> Vec<String> {
    deploy["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["fieldsV1"]["f:spec"].get("f:replicas").is_some())
        .map(|e| {
            format!(
                "{}/{}",
                e["manager"].as_str().unwrap(),
                e["operation"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_owns_conflicts_and_prunes_fields() {
    let c = start_cluster().await;
    let write = |name: &str, yaml: &str| {
        let file = c.path(name);
        std::fs::write(&file, yaml).unwrap();
        file.to_str().unwrap().to_string()
    };

    let first = write("ssa.yaml", SSA);
    let out = c.kubectl(&["apply", "--server-side", "-f", &first]).await;
    assert!(out.contains("deployment.apps/ssa serverside-applied"), "{out}");
    let shown = c
        .kubectl(&["get", "deployment", "ssa", "-o", "yaml", "--show-managed-fields"])
        .await;
    for want in [
        "manager: kubectl\n",
        "operation: Apply",
        "fieldsType: FieldsV1",
        "apiVersion: apps/v1",
        "f:replicas: {}",
        "k:{\"name\":\"web\"}",
        "k:{\"name\":\"B\"}",
    ] {
        assert!(shown.contains(want), "{want:?} in:\n{shown}");
    }
    let hidden = c.kubectl(&["get", "deployment", "ssa", "-o", "yaml"]).await;
    assert!(
        !hidden.contains("managedFields"),
        "kubectl hides them by default:\n{hidden}"
    );

    // another manager changing replicas conflicts with kubectl's ownership
    let other = write(
        "other.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ssa\nspec:\n  replicas: 5\n",
    );
    let (ok, _, err) = c
        .run_as(
            "admin.kubeconfig",
            &["apply", "--server-side", "--field-manager=other", "-f", &other],
        )
        .await;
    assert!(!ok, "a conflicting apply fails");
    assert!(
        err.contains("Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"),
        "{err}"
    );
    assert_eq!(c.json(&["get", "deployment", "ssa"]).await["spec"]["replicas"], 2);
    let out = c
        .kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            &other,
        ])
        .await;
    assert!(out.contains("serverside-applied"), "{out}");
    let deploy = c
        .json(&["get", "deployment", "ssa", "--show-managed-fields"])
        .await;
    assert_eq!(deploy["spec"]["replicas"], 5);
    assert_eq!(replicas_owners(&deploy), ["other/Apply"], "force took the field");

    // kubectl stops applying replicas, the tier label and env B: the label and
    // B go, replicas stays (other still owns it)
    let pruned = SSA
        .replace("  replicas: 2\n", "")
        .replace(", tier: web", "")
        .replace(", {name: B, value: '2'}", "");
    let first = write("ssa.yaml", &pruned);
    c.kubectl(&["apply", "--server-side", "-f", &first]).await;
    let deploy = c
        .json(&["get", "deployment", "ssa", "--show-managed-fields"])
        .await;
    assert_eq!(deploy["metadata"]["labels"], serde_json::json!({"app": "ssa"}));
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["env"], serde_json::json!([{"name": "A", "value": "1"}]));
    assert_eq!(container["image"], "busybox:1");
    assert_eq!(deploy["spec"]["replicas"], 5);

    // fields written by client-side apply belong to kubectl-client-side-apply
    let csa = write("csa.yaml", &SSA.replace("name: ssa\n", "name: csa\n"));
    c.kubectl(&["apply", "-f", &csa]).await;
    let changed = write(
        "csa.yaml",
        &SSA.replace("name: ssa\n", "name: csa\n")
            .replace("replicas: 2", "replicas: 3"),
    );
    let (ok, _, err) = c
        .run_as("admin.kubeconfig", &["apply", "--server-side", "-f", &changed])
        .await;
    assert!(
        !ok && err.contains("conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"),
        "{err}"
    );
    // the same configuration as the client-side apply's: no conflict (equal
    // values are shared), and kubectl moves the object to server-side apply
    let same = write("csa.yaml", &SSA.replace("name: ssa\n", "name: csa\n"));
    let (ok, out, err) = c
        .run_as("admin.kubeconfig", &["apply", "--server-side", "-f", &same])
        .await;
    assert!(
        ok && out.contains("deployment.apps/csa serverside-applied"),
        "{out}\n{err}"
    );
    let deploy = c
        .json(&["get", "deployment", "csa", "--show-managed-fields"])
        .await;
    let owners = replicas_owners(&deploy);
    assert!(owners.contains(&"kubectl/Apply".to_string()), "{owners:?}");
    // a plain update (kubectl scale) moves the field to its manager (kubectl
    // 1.32 names none: the user agent's `kubectl`), through the subresource
    c.kubectl(&["scale", "deployment", "csa", "--replicas=4"]).await;
    let deploy = c
        .json(&["get", "deployment", "csa", "--show-managed-fields"])
        .await;
    assert_eq!(replicas_owners(&deploy), ["kubectl/Update"]);
    let scale = deploy["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["operation"] == "Update" && e["manager"] == "kubectl")
        .unwrap();
    assert_eq!(scale["subresource"], "scale");
    c.stop().await;
}

/// Storage kinds through stock kubectl: apply (schema-validated) of a default
/// StorageClass, a PersistentVolume and a claim without a class; the claim gets the
/// default class at admission; `get sc` and `get pv` print kubectl's columns, the
/// default class marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_storage_classes_volumes_and_claims() {
    let c = start_cluster().await;
    let file = c.path("storage.yaml");
    let file = file.to_str().unwrap();
    std::fs::write(
        file,
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: local\n  annotations: {storageclass.kubernetes.io/is-default-class: \"true\"}\n\
         provisioner: rkube.io/local\nvolumeBindingMode: WaitForFirstConsumer\n---\n\
         apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: disk-1}\n\
         spec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  storageClassName: local\n  hostPath: {path: /srv/disk-1}\n---\n\
         apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\n\
         spec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n",
    )
    .unwrap();
    c.kubectl(&["apply", "-f", file]).await;
    let class = c
        .kubectl(&["get", "pvc", "data", "-o", "jsonpath={.spec.storageClassName}"])
        .await;
    assert_eq!(class, "local");
    let sc = c.kubectl(&["get", "sc"]).await;
    assert_eq!(
        header(&sc),
        [
            "NAME",
            "PROVISIONER",
            "RECLAIMPOLICY",
            "VOLUMEBINDINGMODE",
            "ALLOWVOLUMEEXPANSION",
            "AGE"
        ]
    );
    assert_eq!(
        row(&sc, "local")[..6],
        [
            "local",
            "(default)",
            "rkube.io/local",
            "Delete",
            "WaitForFirstConsumer",
            "false"
        ]
    );
    let pv = c.kubectl(&["get", "pv"]).await;
    assert_eq!(
        header(&pv)[..5],
        ["NAME", "CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS"]
    );
    assert_eq!(
        row(&pv, "disk-1")[..5],
        ["disk-1", "1Gi", "RWO", "Retain", "Pending"]
    );
    c.stop().await;
}
