//! CustomResourceDefinitions against a secure apiserver (TLS, client
//! certificates, RBAC): the stock kubectl applies the README's example CRD
//! and Widgets, reads them as Tables with the CRD's printer columns,
//! patches, scales and updates their status, and is refused with the
//! field named when a Widget breaks the schema; rkube's own gRPC client
//! does the same through `Any`s carrying JSON, and a restarted apiserver
//! serves the CRDs it stored.

mod support;

use prost_types::Any;
use rkube_api::crd::CRD_INFO;
use rkube_api::ResourceInfo;
use rkube_client::{DeleteParams, ListParams, PostParams, Subresource, WatchEvent, WatchParams};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::kubectl::start_cluster;

const CRD: &str = include_str!("../../../deploy/examples/crd-widget.yaml");
const WIDGET: &str = include_str!("../../../deploy/examples/widget.yaml");

/// What rkube's gRPC client names the Widget kind by (group and plural; the
/// type URL says the object is JSON).
static WIDGETS: ResourceInfo = ResourceInfo {
    group: "example.com",
    version: "v1",
    kind: "Widget",
    plural: "widgets",
    singular: "widget",
    short_names: &["wd"],
    namespaced: true,
    has_status: true,
    type_url: "rkube.dev/json/example.com/v1/Widget",
};

fn json_any(info: &ResourceInfo, v: &Value) -> Any {
    Any {
        type_url: info.type_url.to_string(),
        value: serde_json::to_vec(v).unwrap(),
    }
}

fn from_any(any: &Any) -> Value {
    serde_json::from_slice(&any.value).unwrap()
}

fn write(dir: &std::path::Path, name: &str, yaml: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_a_crd_and_drives_its_custom_objects() {
    let c = start_cluster().await;
    let dir = c.api.dir().to_path_buf();
    let crd = write(&dir, "crd.yaml", CRD);
    let out = c.kubectl(&["apply", "-f", &crd]).await;
    assert!(
        out.contains("customresourcedefinition.apiextensions.k8s.io/widgets.example.com created"),
        "{out}"
    );
    c.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=5s",
    ])
    .await;
    let definition = c.json(&["get", "crd", "widgets.example.com"]).await;
    assert_eq!(definition["status"]["acceptedNames"]["kind"], "Widget");
    assert_eq!(definition["status"]["storedVersions"], json!(["v1"]));
    assert_eq!(definition["spec"]["names"]["listKind"], "WidgetList", "defaulted");

    // the new kind is served at once, by every name kubectl knows it by
    let widget = write(&dir, "widget.yaml", WIDGET);
    let out = c.kubectl(&["apply", "-f", &widget]).await;
    assert!(out.contains("widget.example.com/hello created"), "{out}");
    let table = c.kubectl(&["get", "widgets"]).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "REPLICAS", "IMAGE", "PHASE", "AGE"], "{table}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    // no status yet: the Phase cell is blank, as Kubernetes prints a path that is absent
    assert_eq!(&row[..3], ["hello", "2", "nginx:1.27"], "{table}");
    assert_eq!(row.len(), 4, "{table}");
    for name in ["wd", "widget", "widgets.example.com", "demo"] {
        let out = c.kubectl(&["get", name, "-o", "name"]).await;
        assert_eq!(out.trim(), "widget.example.com/hello", "kubectl get {name}");
    }
    let hello = c.json(&["get", "wd", "hello"]).await;
    assert_eq!(hello["apiVersion"], "example.com/v1");
    assert_eq!(hello["metadata"]["generation"], 1);
    assert!(!hello["metadata"]["uid"].as_str().unwrap_or("").is_empty());

    // patches: merge and JSON; generation follows the spec
    let out = c
        .kubectl(&[
            "patch",
            "widget",
            "hello",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"replicas":5}}"#,
        ])
        .await;
    assert!(out.contains("widget.example.com/hello patched"), "{out}");
    c.kubectl(&[
        "patch",
        "widget",
        "hello",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/size","value":"large"}]"#,
    ])
    .await;
    let hello = c.json(&["get", "widget", "hello"]).await;
    assert_eq!(
        (hello["spec"]["replicas"].as_i64(), hello["spec"]["size"].as_str()),
        (Some(5), Some("large"))
    );
    assert_eq!(hello["metadata"]["generation"], 3);

    // the status subresource owns status; the main resource cannot touch it
    c.kubectl(&[
        "patch",
        "widget",
        "hello",
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"replicas":4,"phase":"Ready","selector":"app=hello"}}"#,
    ])
    .await;
    c.kubectl(&[
        "patch",
        "widget",
        "hello",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"phase":"Broken"}}"#,
    ])
    .await;
    let hello = c.json(&["get", "widget", "hello"]).await;
    assert_eq!(hello["status"]["phase"], "Ready");
    assert_eq!(
        hello["metadata"]["generation"], 3,
        "status writes leave generation alone"
    );

    // kubectl scale goes through the scale subresource's paths
    let out = c.kubectl(&["scale", "widget", "hello", "--replicas=3"]).await;
    assert!(out.contains("widget.example.com/hello scaled"), "{out}");
    let scale: Value = serde_json::from_str(
        &c.kubectl(&[
            "get",
            "--raw",
            "/apis/example.com/v1/namespaces/default/widgets/hello/scale",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["replicas"], 4);
    assert_eq!(scale["status"]["selector"], "app=hello");
    let table = c.kubectl(&["get", "widget", "hello", "--no-headers"]).await;
    let row: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(&row[..4], ["hello", "3", "nginx:1.27", "Ready"], "{table}");

    // the older served version reads the same object under its apiVersion
    let old = c.json(&["get", "widgets.v1beta1.example.com", "hello"]).await;
    assert_eq!(old["apiVersion"], "example.com/v1beta1");
    assert_eq!(old["spec"]["replicas"], 3);

    // the schema: defaults applied, violations refused with the field named
    let plain = write(
        &dir,
        "plain.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: plain}\nspec: {image: busybox}\n",
    );
    c.kubectl(&["apply", "-f", &plain]).await;
    let plain = c.json(&["get", "widget", "plain"]).await;
    assert_eq!(plain["spec"]["replicas"], 1, "the schema's default");
    for (body, message) in [
        (
            "spec: {image: busybox, replicas: 0}",
            "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1",
        ),
        (
            "spec: {image: busybox, size: huge}",
            r#"spec.size: Unsupported value: "huge": supported values: "small", "large""#,
        ),
        ("spec: {replicas: 2}", "spec.image: Required value"),
        (
            "spec: {image: BusyBox}",
            r#"spec.image: Invalid value: "BusyBox": spec.image in body should match '^[a-z0-9./:-]+$'"#,
        ),
        (
            "spec: {image: busybox, replicas: two}",
            r#"spec.replicas: Invalid value: "two": spec.replicas in body must be of type integer: "string""#,
        ),
    ] {
        let bad = write(
            &dir,
            "bad.yaml",
            &format!("apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: bad}}\n{body}\n"),
        );
        let (ok, _, err) = c.run_as("admin.kubeconfig", &["apply", "-f", &bad]).await;
        assert!(!ok && err.contains(message), "{body}: {err}");
    }
    // unknown fields: refused by default (strict), pruned with a warning otherwise
    let extra = write(
        &dir,
        "extra.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: extra}\nspec: {image: busybox, colour: red, settings: {free: form}}\n",
    );
    let (ok, _, err) = c.run_as("admin.kubeconfig", &["apply", "-f", &extra]).await;
    assert!(!ok && err.contains(r#"unknown field "spec.colour""#), "{err}");
    let (ok, _, err) = c
        .run_as("admin.kubeconfig", &["apply", "--validate=warn", "-f", &extra])
        .await;
    assert!(
        ok && err.contains(r#"Warning: unknown field "spec.colour""#),
        "{err}"
    );
    let extra = c.json(&["get", "widget", "extra"]).await;
    assert_eq!(extra["spec"].get("colour"), None, "pruned");
    assert_eq!(extra["spec"]["settings"]["free"], "form", "preserved");

    // a CRD that cannot be served is refused, and the apiserver goes on
    let broken = CRD.replace("storage: false", "storage: true");
    let broken = write(
        &dir,
        "broken.yaml",
        &broken
            .replace("widgets.example.com", "gadgets.example.com")
            .replace("plural: widgets", "plural: gadgets")
            .replace("kind: Widget", "kind: Gadget")
            .replace("singular: widget", "singular: gadget")
            .replace("shortNames: [wd]", "shortNames: [gd]"),
    );
    let (ok, _, err) = c.run_as("admin.kubeconfig", &["apply", "-f", &broken]).await;
    assert!(
        !ok && err.contains("must have exactly one version marked as storage version"),
        "{err}"
    );
    let unstructured = write(
        &dir,
        "unstructured.yaml",
        &CRD.replace("widgets.example.com", "gizmos.example.com")
            .replace("plural: widgets", "plural: gizmos")
            .replace("kind: Widget", "kind: Gizmo")
            .replace("singular: widget", "singular: gizmo")
            .replace("shortNames: [wd]", "shortNames: [gz]")
            .replace(
                "              replicas: {type: integer}",
                "              replicas: {}",
            ),
    );
    let (ok, _, err) = c
        .run_as("admin.kubeconfig", &["apply", "-f", &unstructured])
        .await;
    assert!(
        !ok && err.contains("spec.versions[0].schema.openAPIV3Schema.properties[status].properties[replicas].type: Required value: must not be empty for specified object fields"),
        "{err}"
    );
    assert_eq!(c.kubectl(&["get", "wd", "-o", "name"]).await.lines().count(), 3);

    // deleting the CRD takes its objects and stops serving the kind
    c.kubectl(&["delete", "crd", "widgets.example.com", "--timeout=20s"])
        .await;
    let (ok, _, err) = c.run_as("admin.kubeconfig", &["get", "widgets"]).await;
    // (kubectl's cached discovery still names the kind: the server answers 404)
    assert!(
        !ok && (err.contains("the server doesn't have a resource type \"widgets\"")
            || err.contains("the server could not find the requested resource")),
        "{err}"
    );
    c.kubectl(&["apply", "-f", &crd]).await;
    let list = c.json(&["get", "widgets", "-A"]).await;
    assert_eq!(list["items"], json!([]), "the old objects went with the old CRD");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_clients_use_custom_kinds_as_json_and_a_restart_keeps_them() {
    let mut c = start_cluster().await;
    let client = c.api.client();
    let crd: Value = serde_yaml::from_str(CRD).unwrap();
    let created = Instant::now();
    client
        .create_any(&CRD_INFO, "", json_any(&CRD_INFO, &crd), &PostParams::default())
        .await
        .unwrap();
    // served within a second of the CRD's creation
    let served = rkube_testing::eventually("widgets to be served", Duration::from_secs(1), || {
        let client = client.clone();
        async move {
            client
                .list_any(&WIDGETS, "default", &ListParams::default())
                .await
                .ok()
        }
    })
    .await
    .unwrap();
    let ready_in = created.elapsed();
    assert!(served.items.is_empty());
    println!("widgets served {ready_in:?} after the CRD's creation");

    let mut watch = client
        .watch_any(&WIDGETS, "default", &WatchParams::default())
        .await
        .unwrap();
    let widget: Value = serde_yaml::from_str(WIDGET).unwrap();
    let made = client
        .create_any(
            &WIDGETS,
            "default",
            json_any(&WIDGETS, &widget),
            &PostParams::default(),
        )
        .await
        .unwrap();
    assert_eq!(made.type_url, WIDGETS.type_url);
    let made = from_any(&made);
    assert_eq!(made["spec"]["replicas"], 2);
    let rv: u64 = made["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv > 0);
    let first = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut watch))
        .await
        .expect("a watch event")
        .unwrap()
        .unwrap();
    match first.0 {
        WatchEvent::Added(any) => assert_eq!(from_any(&any)["metadata"]["name"], "hello"),
        other => panic!("expected ADDED, got {other:?}"),
    }

    // a merge patch over gRPC, a status update, and a stale update refused
    let patched = client
        .patch_any(
            &WIDGETS,
            "default",
            "hello",
            ("merge", &json!({"spec": {"replicas": 4}})),
            Subresource::Main,
            &PostParams::default(),
        )
        .await
        .unwrap();
    assert_eq!(from_any(&patched)["metadata"]["generation"], 2);
    let mut with_status = from_any(&patched);
    with_status["status"] = json!({"phase": "Ready", "replicas": 4});
    let updated = client
        .update_any(
            &WIDGETS,
            json_any(&WIDGETS, &with_status),
            Subresource::Status,
            &PostParams::default(),
        )
        .await
        .unwrap();
    assert_eq!(from_any(&updated)["status"]["phase"], "Ready");
    let stale = client
        .update_any(
            &WIDGETS,
            json_any(&WIDGETS, &with_status),
            Subresource::Main,
            &PostParams::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Some(tonic::Code::Aborted), "{stale}");
    match tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut watch))
        .await
        .expect("a watch event")
        .unwrap()
        .unwrap()
        .0
    {
        WatchEvent::Modified(any) => assert_eq!(from_any(&any)["spec"]["replicas"], 4),
        other => panic!("expected MODIFIED, got {other:?}"),
    }

    // the schema is the same for gRPC clients
    let mut bad = widget.clone();
    bad["metadata"]["name"] = json!("bad");
    bad["spec"]["replicas"] = json!(11);
    let refused = client
        .create_any(
            &WIDGETS,
            "default",
            json_any(&WIDGETS, &bad),
            &PostParams::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument));
    assert!(
        refused.to_string().contains(
            "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"
        ),
        "{refused}"
    );
    // a proto message where JSON is expected is refused, not guessed at
    let wrong = client
        .create_any(
            &WIDGETS,
            "default",
            Any {
                type_url: "type.googleapis.com/rkube.core.v1.ConfigMap".into(),
                value: vec![1, 2, 3],
            },
            &PostParams::default(),
        )
        .await
        .unwrap_err();
    assert!(wrong.to_string().contains("travel as JSON"), "{wrong}");

    // a patch that breaks the object's shape is refused, not a crash
    let broken = client
        .patch_any(
            &WIDGETS,
            "default",
            "hello",
            (
                "json",
                &json!([{"op": "replace", "path": "/metadata", "value": "x"}]),
            ),
            Subresource::Main,
            &PostParams::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(broken.code(), Some(tonic::Code::InvalidArgument), "{broken}");

    // a second CRD claiming the same kind in the group is stored, not served
    let mut rival = crd.clone();
    rival["metadata"]["name"] = json!("others.example.com");
    rival["spec"]["names"] = json!({"plural": "others", "kind": "Widget"});
    let rival = client
        .create_any(&CRD_INFO, "", json_any(&CRD_INFO, &rival), &PostParams::default())
        .await
        .unwrap();
    let conditions = from_any(&rival)["status"]["conditions"].clone();
    let names = conditions
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "NamesAccepted")
        .unwrap();
    assert_eq!(
        (names["status"].as_str(), names["reason"].as_str()),
        (Some("False"), Some("NameConflict"))
    );
    assert!(!client
        .discovery()
        .await
        .unwrap()
        .iter()
        .any(|r| r.name == "others"));

    // a restarted apiserver serves the CRDs it stored, and their objects
    drop(watch);
    c.api.restart().await.unwrap();
    let client = c.api.client();
    let hello = client.get_any(&WIDGETS, "default", "hello").await.unwrap();
    assert_eq!(from_any(&hello)["status"]["phase"], "Ready");
    let out = c.kubectl(&["get", "widgets", "-o", "name"]).await;
    assert_eq!(out.trim(), "widget.example.com/hello");

    // rkubectl finds the kind through discovery and prints the CRD's columns
    let (out, result) = c.api.rkubectl(&["get", "wd"]).await;
    result.unwrap();
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "REPLICAS", "IMAGE", "PHASE", "AGE"], "{out}");
    let row: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..4], ["hello", "4", "nginx:1.27", "Ready"], "{out}");
    let (out, result) = c
        .api
        .rkubectl(&["get", "widgets.example.com", "hello", "-o", "json"])
        .await;
    result.unwrap();
    let hello: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(hello["status"]["phase"], "Ready");
    let (_, result) = c.api.rkubectl(&["get", "gadgets"]).await;
    assert!(result
        .unwrap_err()
        .to_string()
        .contains("doesn't have a resource type \"gadgets\""));

    // the discovery call lists the kind for gRPC clients (rkubectl)
    let found = client.discovery().await.unwrap();
    assert!(found
        .iter()
        .any(|r| r.group == "example.com" && r.name == "widgets" && r.short_names == ["wd"]));

    client
        .delete_any(&CRD_INFO, "", "widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let gone = client.get_any(&WIDGETS, "default", "hello").await.unwrap_err();
    assert!(
        gone.to_string().contains("doesn't have a resource type"),
        "{gone}"
    );
    c.stop().await;
}
