use super::*;
use serde_json::{json, Value};

fn pod(spec: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": spec,
    }))
    .unwrap()
}

fn lv(level: Level, version: Version) -> LevelVersion {
    LevelVersion { level, version }
}

/// The detail string Kubernetes prints for `spec` at `level:latest`.
fn at(level: Level, spec: Value) -> String {
    let p = pod(spec);
    describe(&evaluate(
        lv(level, Version::Latest),
        p.metadata(),
        p.spec.as_ref().unwrap(),
    ))
}

fn app(extra: Value) -> Value {
    let mut c = json!({"name": "app", "image": "busybox"});
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"containers": [c]})
}

/// What passes restricted: the fields Kubernetes' documentation lists.
fn compliant() -> Value {
    json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "app", "image": "busybox",
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
            },
        }],
    })
}

#[test]
fn a_plain_pod_breaks_restricted_as_kubernetes_says() {
    assert_eq!(
        at(Level::Restricted, app(json!({}))),
        r#"allowPrivilegeEscalation != false (container "app" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "app" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "app" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "app" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#
    );
    assert_eq!(at(Level::Baseline, app(json!({}))), "");
    assert_eq!(
        at(
            Level::Privileged,
            app(json!({"securityContext": {"privileged": true}}))
        ),
        ""
    );
}

#[test]
fn a_compliant_pod_passes_every_level() {
    for level in [Level::Privileged, Level::Baseline, Level::Restricted] {
        assert_eq!(at(level, compliant()), "", "{level}");
    }
}

#[test]
fn baseline_checks_word_their_details_as_kubernetes() {
    let cases = [
        (
            json!({"hostNetwork": true, "hostPID": true, "hostIPC": true, "containers": [{"name": "app", "image": "i"}]}),
            "host namespaces (hostNetwork=true, hostPID=true, hostIPC=true)",
        ),
        (
            app(json!({"securityContext": {"privileged": true}})),
            r#"privileged (container "app" must not set securityContext.privileged=true)"#,
        ),
        (
            app(json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN", "CHOWN", "NET_ADMIN"]}}})),
            r#"non-default capabilities (container "app" must not include "NET_ADMIN", "SYS_ADMIN" in securityContext.capabilities.add)"#,
        ),
        (
            json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}], "containers": [{"name": "app", "image": "i"}]}),
            r#"hostPath volumes (volume "root")"#,
        ),
        (
            app(
                json!({"ports": [{"containerPort": 80, "hostPort": 80}, {"containerPort": 443, "hostPort": 8443}]}),
            ),
            r#"hostPort (container "app" uses hostPorts 80, 8443)"#,
        ),
        (
            app(json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}})),
            r#"forbidden AppArmor profile (container "app" must not set AppArmor profile type to "Unconfined")"#,
        ),
        (
            app(json!({"securityContext": {"seLinuxOptions": {"type": "spc_t", "user": "root"}}})),
            r#"seLinuxOptions (container "app" set forbidden securityContext.seLinuxOptions: type "spc_t"; user may not be set)"#,
        ),
        (
            app(json!({"securityContext": {"procMount": "Unmasked"}})),
            r#"procMount (container "app" must not set securityContext.procMount to "Unmasked")"#,
        ),
        (
            json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}, "containers": [{"name": "app", "image": "i"}]}),
            r#"seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")"#,
        ),
        (
            json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}, {"name": "net.ipv4.tcp_syncookies", "value": "1"}, {"name": "vm.swappiness", "value": "1"}]}, "containers": [{"name": "app", "image": "i"}]}),
            "forbidden sysctls (kernel.msgmax, vm.swappiness)",
        ),
        (
            json!({"securityContext": {"windowsOptions": {"hostProcess": true}}, "containers": [{"name": "app", "image": "i", "securityContext": {"windowsOptions": {"hostProcess": true}}}]}),
            r#"hostProcess (pod and container "app" must not set securityContext.windowsOptions.hostProcess=true)"#,
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(at(Level::Baseline, spec), want);
    }
}

#[test]
fn apparmor_annotations_and_several_containers_are_named() {
    let mut p = pod(json!({"containers": [
        {"name": "a", "image": "i", "securityContext": {"privileged": true}},
        {"name": "b", "image": "i", "securityContext": {"privileged": true}},
    ]}));
    p.metadata_mut().annotations.insert(
        "container.apparmor.security.beta.kubernetes.io/a".into(),
        "unconfined".into(),
    );
    let got = describe(&evaluate(
        lv(Level::Baseline, Version::Latest),
        p.metadata(),
        p.spec.as_ref().unwrap(),
    ));
    assert_eq!(
        got,
        r#"forbidden AppArmor profile (annotation must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/a="unconfined""), privileged (containers "a", "b" must not set securityContext.privileged=true)"#
    );
}

#[test]
fn restricted_replaces_the_baseline_checks_it_tightens() {
    // hostPath is a restricted volume type there, not a second violation
    let mut spec = compliant();
    spec["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}, {"name": "tmp", "emptyDir": {}}]);
    assert_eq!(
        at(Level::Restricted, spec),
        r#"restricted volume types (volume "root" uses restricted volume type "hostPath")"#
    );
    let mut spec = compliant();
    spec["containers"][0]["securityContext"]["capabilities"]["add"] =
        json!(["SYS_ADMIN", "NET_BIND_SERVICE", "CHOWN"]);
    assert_eq!(
        at(Level::Restricted, spec),
        r#"unrestricted capabilities (container "app" must not include "CHOWN", "SYS_ADMIN" in securityContext.capabilities.add)"#
    );
    let mut spec = compliant();
    spec["securityContext"]["seccompProfile"]["type"] = json!("Unconfined");
    assert_eq!(
        at(Level::Restricted, spec),
        r#"seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")"#
    );
}

#[test]
fn restricted_user_checks() {
    let mut spec = compliant();
    spec["securityContext"]["runAsUser"] = json!(0);
    spec["containers"][0]["securityContext"]["runAsNonRoot"] = json!(false);
    spec["containers"][0]["securityContext"]["runAsUser"] = json!(0);
    assert_eq!(
        at(Level::Restricted, spec),
        r#"runAsNonRoot != true (container "app" must not set securityContext.runAsNonRoot=false), runAsUser=0 (pod and container "app" must not set runAsUser=0)"#
    );
    // a container's own setting is enough
    let mut spec = compliant();
    spec["securityContext"] = json!({});
    spec["containers"][0]["securityContext"]["runAsNonRoot"] = json!(true);
    spec["containers"][0]["securityContext"]["seccompProfile"] =
        json!({"type": "Localhost", "localhostProfile": "p.json"});
    assert_eq!(at(Level::Restricted, spec), "");
}

#[test]
fn init_containers_count_and_come_first() {
    let mut spec = compliant();
    spec["initContainers"] = json!([{"name": "setup", "image": "i"}]);
    assert_eq!(
        at(Level::Restricted, spec),
        r#"allowPrivilegeEscalation != false (container "setup" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "setup" must set securityContext.capabilities.drop=["ALL"])"#
    );
}

#[test]
fn versions_pick_the_checks_of_their_release() {
    let p = pod(
        json!({"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "4096 87380 6291456"}]},
        "containers": [{"name": "app", "image": "i", "securityContext": {"seLinuxOptions": {"type": "container_engine_t"}}}]}),
    );
    let (m, s) = (p.metadata(), p.spec.as_ref().unwrap());
    assert!(evaluate(lv(Level::Baseline, Version::Latest), m, s).is_empty());
    assert!(evaluate(lv(Level::Baseline, Version::V1(40)), m, s).is_empty());
    assert_eq!(
        describe(&evaluate(lv(Level::Baseline, Version::V1(31)), m, s)),
        "forbidden sysctls (net.ipv4.tcp_rmem)"
    );
    assert_eq!(evaluate(lv(Level::Baseline, Version::V1(30)), m, s).len(), 2);
    // before 1.22 restricted had no drop-ALL rule, before 1.8 no privilege escalation rule
    let p = pod(compliant());
    let mut p2 = p.clone();
    let c = &mut p2.spec.as_mut().unwrap().containers[0];
    c.security_context.as_mut().unwrap().capabilities = None;
    c.security_context.as_mut().unwrap().allow_privilege_escalation = None;
    let s2 = p2.spec.as_ref().unwrap();
    assert!(evaluate(lv(Level::Restricted, Version::V1(7)), p2.metadata(), s2).is_empty());
    assert_eq!(
        evaluate(lv(Level::Restricted, Version::V1(21)), p2.metadata(), s2).len(),
        1
    );
    assert_eq!(
        evaluate(lv(Level::Restricted, Version::V1(22)), p2.metadata(), s2).len(),
        2
    );
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (format!("pod-security.kubernetes.io/{k}"), v.to_string()))
        .collect()
}

#[test]
fn labels_make_the_policy() {
    let (p, errors) = policy(&labels(&[
        ("enforce", "baseline"),
        ("enforce-version", "v1.29"),
        ("audit", "restricted"),
    ]));
    assert!(errors.is_empty());
    assert_eq!(p.enforce.to_string(), "baseline:v1.29");
    assert_eq!(p.audit.to_string(), "restricted:latest");
    // warnings follow a stricter enforce when not set themselves
    assert_eq!(p.warn.to_string(), "baseline:v1.29");
    let (p, _) = policy(&labels(&[("enforce", "baseline"), ("warn", "privileged")]));
    assert_eq!(p.warn.level, Level::Privileged);
    let (p, errors) = policy(&BTreeMap::new());
    assert!(errors.is_empty());
    assert_eq!(p.enforce, PRIVILEGED);
}

#[test]
fn bad_labels_name_the_label_and_fail_closed_for_enforce_only() {
    let (p, errors) = policy(&labels(&[
        ("enforce", "strict"),
        ("warn", "loud"),
        ("audit-version", "1.30"),
    ]));
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            r#"metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "strict": must be one of privileged, baseline, restricted"#,
            r#"metadata.labels[pod-security.kubernetes.io/audit-version]: Invalid value: "1.30": must be "latest" or "v1.x""#,
            r#"metadata.labels[pod-security.kubernetes.io/warn]: Invalid value: "loud": must be one of privileged, baseline, restricted"#,
        ]
    );
    assert_eq!(p.enforce.level, Level::Restricted);
    assert_eq!(p.warn.level, Level::Privileged);
    for bad in ["v1.07", "v2.1", "v1.", "v1.x", "1.2"] {
        assert!(Version::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(Version::parse("v1.0"), Ok(Version::V1(0)));
    assert_eq!(Version::parse("v1.32"), Ok(Version::V1(32)));
}

#[test]
fn templates_are_found_in_every_workload() {
    let template = json!({"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "app", "image": "i"}]}});
    let d: Deployment =
        serde_json::from_value(json!({"metadata": {"name": "w"}, "spec": {"template": template}})).unwrap();
    assert!(matches!(pod_like(&d), Some((_, s, false)) if s.containers[0].name == "app"));
    let cj: CronJob = serde_json::from_value(
        json!({"metadata": {"name": "w"}, "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}}),
    )
    .unwrap();
    assert!(matches!(pod_like(&cj), Some((_, _, false))));
    assert!(matches!(pod_like(&pod(compliant())), Some((_, _, true))));
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap();
    assert!(pod_like(&ns).is_none());
}

#[test]
fn only_image_and_container_changes_are_evaluated_again() {
    let old = pod(app(json!({})));
    let mut new = old.clone();
    new.metadata_mut().labels.insert("x".into(), "y".into());
    assert!(!significant_pod_update(&new, &old));
    new.spec.as_mut().unwrap().containers[0].image = "busybox:2".into();
    assert!(significant_pod_update(&new, &old));
}

#[test]
fn tightening_is_what_rechecks_existing_pods() {
    let r = lv(Level::Restricted, Version::Latest);
    let b = lv(Level::Baseline, Version::Latest);
    assert!(tightened(&r, &b));
    assert!(!tightened(&b, &r));
    assert!(!tightened(&PRIVILEGED, &r));
    assert!(tightened(&lv(Level::Baseline, Version::V1(30)), &b));
}
