//! Pod Security admission against a secure apiserver, through both faces:
//! the real kubectl (REST: refusals, `Warning:` lines, label validation),
//! rkubectl and the typed client (gRPC), and the audit log.

use rkube_api::core::v1::Pod;
use std::path::Path;
use std::process::Stdio;

const KUBECTL: &str = "/usr/bin/kubectl";

/// What Kubernetes 1.32 answers for a pod with no securityContext under restricted.
const RESTRICTED_DETAIL: &str = r#"allowPrivilegeEscalation != false (container "app" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "app" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "app" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "app" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#;

fn pod_yaml(name: &str, namespace: &str, security: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{security}  containers:\n  - name: app\n    image: busybox\n"
    )
}

const COMPLIANT: &str = "  securityContext:\n    runAsNonRoot: true\n    runAsUser: 1000\n    seccompProfile:\n      type: RuntimeDefault\n  containers:\n  - name: app\n    image: busybox\n    securityContext:\n      allowPrivilegeEscalation: false\n      capabilities:\n        drop: [ALL]\n";

fn compliant_yaml(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{COMPLIANT}"
    )
}

struct Kubectl {
    kubeconfig: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Kubectl {
    /// `kubectl ARGS` (with `stdin` piped in): success, stdout, stderr.
    async fn run(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", &self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} took over 60s"))
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn ok(&self, args: &[&str], stdin: &str) -> (String, String) {
        let (ok, out, err) = self.run(args, stdin).await;
        assert!(ok, "kubectl {args:?} failed:\nstdout: {out}\nstderr: {err}");
        (out, err)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_labelled_for_pod_security_refuse_warn_and_audit() {
    assert!(
        Path::new(KUBECTL).exists(),
        "{KUBECTL} is missing: this test drives the real kubectl"
    );
    let api = rkube_testing::TestApiServer::secure(&["n1"]).await.unwrap();
    let mut conf = rkube_client::ClientConfig::load(&api.admin_conf()).unwrap();
    conf.server = api.url().to_string();
    let kubeconfig = api.dir().join("admin.kubeconfig");
    rkube_client::kubeconfig::Kubeconfig::single("rkube", &conf)
        .save(&kubeconfig)
        .unwrap();
    let k = Kubectl {
        kubeconfig,
        dir: api.dir().to_path_buf(),
    };

    // enforce: a pod without a securityContext is refused with Kubernetes' words
    k.ok(&["create", "namespace", "locked"], "").await;
    k.ok(
        &[
            "label",
            "namespace",
            "locked",
            "pod-security.kubernetes.io/enforce=restricted",
        ],
        "",
    )
    .await;
    let (ok, _, err) = k.run(&["apply", "-f", "-"], &pod_yaml("web", "locked", "")).await;
    assert!(!ok);
    let want =
        format!(r#"pods "web" is forbidden: violates PodSecurity "restricted:latest": {RESTRICTED_DETAIL}"#);
    assert!(
        err.contains("Error from server (Forbidden)") && err.contains(&want),
        "{err}"
    );
    // ... and a compliant one is created, with no warning
    let (out, err) = k.ok(&["apply", "-f", "-"], &compliant_yaml("ok", "locked")).await;
    assert!(
        out.contains("pod/ok created") && !err.contains("Warning"),
        "{out}{err}"
    );

    // the gRPC face refuses with the same message (rkubectl and the typed client)
    let manifest = api.dir().join("web.yaml");
    std::fs::write(&manifest, pod_yaml("web", "locked", "")).unwrap();
    // (apply prints each object's error on stderr, as kubectl does, then fails)
    let (_, res) = api.rkubectl(&["apply", "-f", manifest.to_str().unwrap()]).await;
    res.expect_err("rkubectl apply of a pod breaking restricted must fail");
    let (_, res) = api.rkubectl(&["get", "pod", "web", "-n", "locked"]).await;
    res.expect_err("the refused pod must not exist");
    let pod: Pod = serde_yaml::from_str(&pod_yaml("web2", "locked", "")).unwrap();
    let e = api.api::<Pod>("locked").create(&pod).await.unwrap_err();
    assert!(
        e.to_string().contains(&want.replace("\"web\"", "\"web2\"")),
        "{e}"
    );

    // a bad label value is refused, naming the label
    let (ok, _, err) = k
        .run(
            &[
                "label",
                "namespace",
                "locked",
                "--overwrite",
                "pod-security.kubernetes.io/enforce=strict",
            ],
            "",
        )
        .await;
    assert!(!ok);
    assert!(
        err.contains(r#"metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "strict": must be one of privileged, baseline, restricted"#),
        "{err}"
    );
    let (ok, _, err) = k
        .run(&["create", "-f", "-"], "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bad\n  labels:\n    pod-security.kubernetes.io/warn-version: \"1.32\"\n")
        .await;
    assert!(
        !ok && err.contains(
            r#"pod-security.kubernetes.io/warn-version]: Invalid value: "1.32": must be "latest" or "v1.x""#
        ),
        "{err}"
    );

    // warn and audit: the pod and a Deployment are created, with a warning and an audit annotation
    k.ok(&["create", "namespace", "watched"], "").await;
    k.ok(
        &[
            "label",
            "namespace",
            "watched",
            "pod-security.kubernetes.io/warn=restricted",
            "pod-security.kubernetes.io/audit=baseline",
            "pod-security.kubernetes.io/audit-version=v1.32",
        ],
        "",
    )
    .await;
    let warning = format!(r#"Warning: would violate PodSecurity "restricted:latest": {RESTRICTED_DETAIL}"#);
    let (out, err) = k
        .ok(
            &["apply", "-f", "-"],
            &pod_yaml("loose", "watched", "  hostNetwork: true\n"),
        )
        .await;
    assert!(out.contains("pod/loose created"), "{out}");
    assert!(
        err.contains(r#"Warning: would violate PodSecurity "restricted:latest": host namespaces (hostNetwork=true), allowPrivilegeEscalation != false"#),
        "{err}"
    );
    let (out, err) = k
        .ok(
            &["create", "deployment", "web", "--image=busybox", "-n", "watched"],
            "",
        )
        .await;
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(
        err.contains(&warning.replace(r#"container "app""#, r#"container "busybox""#)),
        "{err}"
    );
    let events = api.audit().unwrap();
    let created = events
        .iter()
        .find(|e| {
            e["verb"] == "create"
                && e["objectRef"]["resource"] == "pods"
                && e["objectRef"]["namespace"] == "watched"
        })
        .unwrap_or_else(|| panic!("no audit event for the pod: {events:?}"));
    assert_eq!(
        created["annotations"]["pod-security.kubernetes.io/audit-violations"],
        r#"would violate PodSecurity "baseline:v1.32": host namespaces (hostNetwork=true)"#,
        "{created}"
    );
    assert_eq!(
        created["annotations"]["pod-security.kubernetes.io/enforce-policy"],
        "privileged:latest"
    );

    // tightening enforce warns about the pods already breaking it (they keep running)
    let (_, err) = k
        .ok(
            &[
                "label",
                "namespace",
                "watched",
                "pod-security.kubernetes.io/enforce=baseline",
            ],
            "",
        )
        .await;
    assert!(
        err.contains(r#"Warning: existing pods in namespace "watched" violate the new PodSecurity enforce level "baseline:latest""#)
            && err.contains("Warning: loose: host namespaces"),
        "{err}"
    );

    // a namespace without labels is privileged: anything goes, with no warning
    let (out, err) = k
        .ok(
            &["apply", "-f", "-"],
            &pod_yaml("free", "default", "  hostPID: true\n"),
        )
        .await;
    assert!(
        out.contains("pod/free created") && !err.contains("Warning"),
        "{out}{err}"
    );
    api.stop().await.unwrap();
}
