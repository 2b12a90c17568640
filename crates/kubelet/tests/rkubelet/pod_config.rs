//! Pod configuration the kubelet resolves itself: image pull secrets for private
//! registries, `$(VAR)` references in command/args/env, and memory-backed emptyDirs.

use std::time::Duration;

use base64::Engine as _;
use rkube_api::core::v1::{Event, Secret};
use rkube_api::meta::v1::ObjectMeta;
use rkube_client::Api;
use rkube_kubelet::testing::TestRegistry;

use crate::{container, phase, require_containerd, Cluster};

fn docker_secret(name: &str, type_: &str, key: &str, document: String) -> Secret {
    let mut secret = Secret {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        r#type: type_.into(),
        ..Default::default()
    };
    secret.data.insert(key.into(), document.into_bytes());
    secret
}

fn pod_yaml(name: &str, image: &str, secret: Option<&str>) -> String {
    let secrets = secret
        .map(|s| format!("  imagePullSecrets: [{{name: {s}}}]\n"))
        .unwrap_or_default();
    format!(
        "metadata: {{name: {name}}}\nspec:\n{secrets}  restartPolicy: Never\n  containers:\n  - name: main\n    image: '{image}'\n    imagePullPolicy: Always\n    command: [sh, -c, 'echo pulled']\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_images_are_pulled_with_the_pods_pull_secrets_or_the_nodes_config() -> anyhow::Result<()> {
    require_containerd!();
    let c = Cluster::start().await?;
    let private = TestRegistry::start_with_basic_auth("puller", "0pen-sesame").await?;
    let (image, _) = private.push_busybox("team/app").await?;
    let host = private.host();
    let auth = base64::engine::general_purpose::STANDARD.encode("puller:0pen-sesame");
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    secrets
        .create(&docker_secret(
            "regcred",
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
        ))
        .await?;
    secrets
        .create(&docker_secret(
            "legacy",
            "kubernetes.io/dockercfg",
            ".dockercfg",
            format!(
                r#"{{"http://{host}/team":{{"username":"puller","password":"0pen-sesame","email":"x@y"}}}}"#
            ),
        ))
        .await?;
    secrets
        .create(&docker_secret(
            "wrong",
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            format!(r#"{{"auths":{{"{host}":{{"username":"puller","password":"guess"}}}}}}"#),
        ))
        .await?;

    let ws = |p: &rkube_api::core::v1::Pod| container(p, "main")?.state?.waiting;
    let t = Duration::from_secs(60);
    // Without credentials: ErrImagePull with the registry's reason.
    c.create_pod(&pod_yaml("anonymous", &image, None)).await?;
    let waiting = c
        .wait_pod("anonymous", t, |p| {
            ws(p).filter(|w| w.reason == "ErrImagePull" || w.reason == "ImagePullBackOff")
        })
        .await?;
    assert!(
        waiting.message.contains("refused access") && waiting.message.contains("add an image pull secret"),
        "{waiting:?}"
    );
    // A secret with the wrong password: refused, and the message says to check the secret.
    c.create_pod(&pod_yaml("wrong", &image, Some("wrong"))).await?;
    let waiting = c
        .wait_pod("wrong", t, |p| {
            ws(p).filter(|w| w.reason == "ErrImagePull" || w.reason == "ImagePullBackOff")
        })
        .await?;
    assert!(
        waiting.message.contains("check the username and password"),
        "{waiting:?}"
    );
    // A missing secret is reported, and the pull still tried.
    c.create_pod(&pod_yaml("nosecret", &image, Some("absent")))
        .await?;

    // With a dockerconfigjson secret, and with a legacy dockercfg one whose key has a
    // scheme and a repository prefix: pulled and run.
    c.create_pod(&pod_yaml("withsecret", &image, Some("regcred")))
        .await?;
    c.create_pod(&pod_yaml("withlegacy", &image, Some("legacy")))
        .await?;
    for name in ["withsecret", "withlegacy"] {
        c.wait_pod(name, t, |p| (phase(p) == "Succeeded").then_some(()))
            .await?;
    }
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let missing = crate::wait_for_event(&events, "nosecret", "FailedToRetrieveImagePullSecret").await?;
    assert!(missing.contains("default/absent not found"), "{missing}");
    assert_eq!(
        phase(&c.pods().get("anonymous").await?),
        "Pending",
        "the pod without credentials must not run"
    );

    // Node-wide credentials in <root-dir>/config.json serve pods without secrets.
    std::fs::write(
        c.config.root_dir.join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )?;
    c.create_pod(&pod_yaml("nodecreds", &image, None)).await?;
    c.wait_pod("nodecreds", t, |p| (phase(p) == "Succeeded").then_some(()))
        .await?;
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn variable_references_expand_and_memory_empty_dirs_are_tmpfs() -> anyhow::Result<()> {
    require_containerd!();
    let c = Cluster::start().await?;
    c.create_pod(
        r#"
metadata: {name: expand}
spec:
  restartPolicy: Never
  volumes:
  - {name: scratch, emptyDir: {medium: Memory, sizeLimit: 8Mi}}
  - {name: disk, emptyDir: {}}
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c]
    args: ["echo 'GREETING=$(GREETING) ESC=$$(GREETING) MISSING=$(MISSING) POD=$(POD)'; grep -E ' /(scratch|disk) ' /proc/mounts"]
    env:
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: WHO, value: world}
    - {name: GREETING, value: "hello-$(WHO)-from-$(POD)"}
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
    - {name: disk, mountPath: /disk}
"#,
    )
    .await?;
    c.wait_pod("expand", Duration::from_secs(60), |p| {
        (phase(p) == "Succeeded").then_some(())
    })
    .await?;
    let text = crate::daemon::logs(&c, "expand", "main", false).await?;
    assert!(
        text.contains("GREETING=hello-world-from-expand ESC=$(GREETING) MISSING=$(MISSING) POD=expand"),
        "{text}"
    );
    // 8Mi = 8192k: the tmpfs is sized by sizeLimit; the plain emptyDir is not a tmpfs.
    let scratch = text
        .lines()
        .find(|l| l.contains(" /scratch "))
        .unwrap_or_else(|| panic!("/scratch not mounted: {text}"));
    assert!(
        scratch.starts_with("tmpfs /scratch tmpfs") && scratch.contains("size=8192k"),
        "{scratch}"
    );
    let disk = text.lines().find(|l| l.contains(" /disk ")).unwrap_or_default();
    assert!(!disk.contains("tmpfs"), "{disk}");

    // Deleting the pod unmounts the tmpfs and removes its directory.
    let uid = c.pods().get("expand").await?.metadata.unwrap_or_default().uid;
    let volume = c.config.root_dir.join("pods").join(&uid);
    c.pods()
        .delete("expand", &rkube_client::DeleteParams::default())
        .await?;
    let what = format!("{} and its tmpfs mount to go", volume.display());
    rkube_testing::eventually(&what, Duration::from_secs(30), || async {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        !volume.exists() && !mounts.contains(&uid)
    })
    .await?;
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn security_contexts_are_applied_to_the_containers() -> anyhow::Result<()> {
    require_containerd!();
    let c = Cluster::start().await?;
    // The restricted profile most hardened charts use, plus a safe sysctl and fsGroup.
    c.create_pod(
        r#"
metadata: {name: locked}
spec:
  restartPolicy: Never
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    fsGroup: 2000
    supplementalGroups: [3000]
    seccompProfile: {type: RuntimeDefault}
    sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "81"}]
  volumes: [{name: scratch, emptyDir: {}}]
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c]
    args: ["grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp):' /proc/self/status; id; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; touch /rootfs-write 2>/dev/null && echo root-writable || echo root-read-only; touch /scratch/f && echo scratch-writable; unshare -n true 2>/dev/null && echo unshared || echo unshare-refused"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
"#,
    )
    .await?;
    c.wait_pod("locked", Duration::from_secs(60), |p| {
        (phase(p) == "Succeeded").then_some(())
    })
    .await?;
    let text = crate::daemon::logs(&c, "locked", "main", false).await?;
    // only CAP_NET_BIND_SERVICE (bit 10) is left; a non-root process holds none effective
    // (as under containerd: no ambient capabilities)
    assert!(text.contains("CapBnd:\t0000000000000400"), "{text}");
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert!(text.contains("Seccomp:\t2"), "seccomp filter mode: {text}");
    assert!(
        text.contains("uid=1000") && text.contains("2000") && text.contains("3000"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "81"), "the sysctl: {text}");
    assert!(text.contains("root-read-only"), "{text}");
    assert!(
        text.contains("scratch-writable"),
        "fsGroup makes the emptyDir writable: {text}"
    );
    assert!(text.contains("unshare-refused"), "{text}");

    // runAsNonRoot with an image that runs as root never starts, and says why.
    c.create_pod(
        r#"
metadata: {name: rooted}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: IMAGE
    command: [sh, -c, 'echo should not run']
    securityContext: {runAsNonRoot: true}
"#,
    )
    .await?;
    let waiting = c
        .wait_pod("rooted", Duration::from_secs(60), |p| {
            container(p, "main")?.state?.waiting
        })
        .await?;
    assert!(waiting.message.contains("runAsNonRoot"), "{waiting:?}");

    // a sysctl outside the safe set is refused by name
    c.create_pod(
        r#"
metadata: {name: tuned}
spec:
  restartPolicy: Never
  securityContext:
    sysctls: [{name: net.core.somaxconn, value: "1024"}]
  containers:
  - {name: main, image: IMAGE, command: [sh, -c, 'true']}
"#,
    )
    .await?;
    let waiting = c
        .wait_pod("tuned", Duration::from_secs(60), |p| {
            container(p, "main")?.state?.waiting
        })
        .await?;
    assert!(waiting.message.contains("net.core.somaxconn"), "{waiting:?}");
    c.stop().await
}
