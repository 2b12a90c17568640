//! The Kubernetes REST face over plain HTTP/1.1 (`--insecure`), as the
//! Python client and curl speak it: URLs, Kubernetes JSON, `Status`
//! errors with their codes, the three patch types, lists, watches, and
//! gRPC still answering on the same port.

use serde_json::{json, Value};

struct Rest {
    api: rkube_testing::TestApiServer,
    url: String,
    http: reqwest::Client,
}

/// An insecure apiserver with a short watch history (so a watch from an
/// old revision meets Gone), and an HTTP/1.1 client for it.
async fn start() -> Rest {
    let api = rkube_testing::TestApiServer::builder()
        .configure(|c| c.watch_history = 5)
        .start()
        .await
        .unwrap();
    let url = api.url().to_string();
    Rest {
        api,
        url,
        http: reqwest::Client::new(),
    }
}

impl Rest {
    async fn send(&self, method: &str, path: &str, content_type: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req
                .header("content-type", content_type)
                .body(serde_json::to_vec(&b).unwrap());
        }
        let resp = req.send().await.unwrap();
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (code, v)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, "", None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send("POST", path, "application/json", Some(body)).await
    }

    async fn stop(self) {
        self.api.stop().await.unwrap();
    }
}

fn configmap(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "labels": labels, "creationTimestamp": null, "managedFields": []},
           "data": {"k": "v"}})
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [
                                     {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
                                     {"name": "side", "image": "busybox"}]}}}})
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";

#[tokio::test]
async fn version_health_and_discovery() {
    let s = start().await;
    let (code, v) = s.get("/version").await;
    assert_eq!(
        (code, v["major"].as_str(), v["minor"].as_str()),
        (200, Some("1"), Some("32"))
    );
    assert!(
        v["gitVersion"].as_str().unwrap().starts_with("v1.32.0-rkube"),
        "{v}"
    );
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(s.get(path).await, (200, Value::String("ok".into())), "{path}");
    }
    let (_, api) = s.get("/api").await;
    assert_eq!(api["versions"], json!(["v1"]));
    let (_, groups) = s.get("/apis").await;
    assert!(groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["name"] == "apps"));
    let (code, apps) = s.get("/apis/apps/v1").await;
    assert_eq!(code, 200);
    let names: Vec<&str> = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"deployments") && names.contains(&"deployments/scale"),
        "{names:?}"
    );
    let (code, missing) = s.get("/apis/nothing.example/v1").await;
    assert_eq!((code, missing["reason"].as_str()), (404, Some("NotFound")));
    // aggregated discovery when asked for, as kubectl 1.32 does first
    let aggregated = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    let resp = s
        .http
        .get(format!("{}/apis", s.url))
        .header("accept", format!("{aggregated},application/json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], aggregated);
    let list: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(list["kind"], "APIGroupDiscoveryList");
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["metadata"]["name"] == "apps"));
    // impersonation is refused rather than ignored
    let resp = s
        .http
        .get(format!("{}{CMS}", s.url))
        .header("impersonate-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let (code, _) = s.get("/openapi/v3/apis/apps/v1").await;
    assert_eq!(code, 200);
    s.stop().await;
}

#[tokio::test]
async fn crud_answers_kubernetes_json_and_status_errors() {
    let s = start().await;
    // an empty list still has items, and a string resourceVersion
    let (code, list) = s.get(CMS).await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["items"], json!([]));
    assert!(list["metadata"]["resourceVersion"].is_string(), "{list}");

    let (code, created) = s.post(CMS, configmap("a", json!({"app": "x"}))).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        (created["kind"].as_str(), created["apiVersion"].as_str()),
        (Some("ConfigMap"), Some("v1"))
    );
    assert!(created["metadata"]["uid"].is_string());

    let (code, dup) = s.post(CMS, configmap("a", json!({}))).await;
    assert_eq!(code, 409);
    assert_eq!(
        (
            dup["kind"].as_str(),
            dup["status"].as_str(),
            dup["reason"].as_str(),
            dup["code"].as_i64()
        ),
        (Some("Status"), Some("Failure"), Some("AlreadyExists"), Some(409))
    );
    assert_eq!(dup["details"]["name"], "a");

    let (code, nf) = s.get(&format!("{CMS}/nope")).await;
    assert_eq!((code, nf["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(nf["message"], "configmaps \"nope\" not found");

    // unknown fields: refused by name with fieldValidation=Strict (what
    // kubectl sends), else dropped with a Warning header (Kubernetes' default)
    let mut bad = configmap("w", json!({}));
    bad["dta"] = json!({});
    let (code, err) = s
        .post(&format!("{CMS}?fieldValidation=Strict"), bad.clone())
        .await;
    assert_eq!((code, err["reason"].as_str()), (400, Some("BadRequest")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("dta"), "{err}");
    let resp = s
        .http
        .post(format!("{}{CMS}", s.url))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&bad).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.headers()["warning"], "299 - \"unknown field \\\"dta\\\"\"");
    assert_eq!(s.send("DELETE", &format!("{CMS}/w"), "", None).await.0, 200);

    // validation: 422 with causes
    let mut invalid = deployment("bad");
    invalid["spec"]["template"]["spec"]["containers"] = json!([]);
    let (code, err) = s.post(DEPLOYS, invalid).await;
    assert_eq!((code, err["reason"].as_str()), (422, Some("Invalid")), "{err}");
    assert!(!err["details"]["causes"].as_array().unwrap().is_empty(), "{err}");

    // update with a stale resourceVersion: 409 Conflict
    let mut stale = created.clone();
    stale["data"] = json!({"k": "new"});
    let (code, updated) = s
        .send(
            "PUT",
            &format!("{CMS}/a"),
            "application/json",
            Some(stale.clone()),
        )
        .await;
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["data"]["k"], "new");
    let (code, conflict) = s
        .send("PUT", &format!("{CMS}/a"), "application/json", Some(stale))
        .await;
    assert_eq!((code, conflict["reason"].as_str()), (409, Some("Conflict")));

    // a name mismatch between URL and body is a BadRequest
    let (code, _) = s
        .send(
            "PUT",
            &format!("{CMS}/other"),
            "application/json",
            Some(configmap("a", json!({}))),
        )
        .await;
    assert_eq!(code, 400);

    // selectors, limit and continue
    for (n, app) in [("b", "x"), ("c", "y"), ("d", "x")] {
        assert_eq!(s.post(CMS, configmap(n, json!({"app": app}))).await.0, 201);
    }
    let (_, xs) = s.get(&format!("{CMS}?labelSelector=app%3Dx")).await;
    let names: Vec<&str> = xs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "d"]);
    let (_, page) = s.get(&format!("{CMS}?limit=2")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, rest) = s.get(&format!("{CMS}?limit=2&continue={token}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    let (_, by_name) = s.get(&format!("{CMS}?fieldSelector=metadata.name%3Dc")).await;
    assert_eq!(by_name["items"][0]["metadata"]["name"], "c");

    // delete with a failing precondition, then for real; deletecollection
    let (code, err) = s
        .send(
            "DELETE",
            &format!("{CMS}/a"),
            "application/json",
            Some(json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "wrong"}})),
        )
        .await;
    assert_eq!((code, err["reason"].as_str()), (409, Some("Conflict")));
    let (code, _) = s
        .send(
            "DELETE",
            &format!("{CMS}/a"),
            "application/json",
            Some(json!({"propagationPolicy": "Background"})),
        )
        .await;
    assert_eq!(code, 200);
    let (code, gone) = s
        .send("DELETE", &format!("{CMS}?labelSelector=app%3Dx"), "", None)
        .await;
    assert_eq!(code, 200, "{gone}");
    assert_eq!(gone["items"].as_array().unwrap().len(), 2);
    let (_, left) = s.get(CMS).await;
    let names: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c"]);
    s.stop().await;
}

#[tokio::test]
async fn patches_scale_and_status() {
    let s = start().await;
    assert_eq!(s.post(DEPLOYS, deployment("web")).await.0, 201);
    let web = format!("{DEPLOYS}/web");
    let (code, v) = s
        .send(
            "PATCH",
            &web,
            "application/merge-patch+json",
            Some(json!({"metadata": {"labels": {"m": "1"}}})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["metadata"]["labels"]["m"], "1");
    let (code, v) = s
        .send(
            "PATCH",
            &web,
            "application/json-patch+json",
            Some(json!([{"op": "add", "path": "/metadata/labels/j", "value": "2"}])),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["metadata"]["labels"], json!({"m": "1", "j": "2"}));
    // a failing JSON patch test is Invalid
    let (code, v) = s
        .send(
            "PATCH",
            &web,
            "application/json-patch+json",
            Some(json!([{"op": "test", "path": "/metadata/labels/j", "value": "3"}])),
        )
        .await;
    assert_eq!((code, v["reason"].as_str()), (422, Some("Invalid")), "{v}");
    // strategic: containers merge by name, the other container stays
    let (code, v) = s
        .send(
            "PATCH",
            &web,
            "application/strategic-merge-patch+json",
            Some(json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let containers = &v["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().unwrap().len(), 2, "{containers}");
    assert_eq!(containers[0]["image"], "nginx:2");
    assert_eq!(containers[0]["env"][0]["name"], "A");
    // server-side apply: merges into what is there...
    let (code, v) = s
        .send(
            "PATCH",
            &format!("{web}?fieldManager=test"),
            "application/apply-patch+yaml",
            Some(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"applied": "yes"}}})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (
            v["metadata"]["labels"]["applied"].as_str(),
            v["metadata"]["labels"]["m"].as_str()
        ),
        (Some("yes"), Some("1"))
    );
    // ...and creates what is not (YAML is accepted)
    let resp = s
        .http
        .patch(format!("{}{CMS}/applied?fieldManager=test", s.url))
        .header("content-type", "application/apply-patch+yaml")
        .body("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: b\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let created: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(
        created["metadata"]["managedFields"],
        json!([{"manager": "test", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {"f:a": {}}}, "time": created["metadata"]["managedFields"][0]["time"]}]),
        "the applier owns what it applied"
    );
    // an apply must name its manager
    let (code, v) = s
        .send(
            "PATCH",
            &web,
            "application/apply-patch+yaml",
            Some(json!({"metadata": {"name": "web"}})),
        )
        .await;
    assert_eq!((code, v["reason"].as_str()), (422, Some("Invalid")), "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("fieldManager: Required value"),
        "{v}"
    );
    // another manager's field with another value: 409 with a cause per field
    let (code, v) = s
        .send(
            "PATCH",
            &format!("{web}?fieldManager=other"),
            "application/apply-patch+yaml",
            Some(json!({"metadata": {"name": "web", "labels": {"applied": "no"}}})),
        )
        .await;
    assert_eq!((code, v["reason"].as_str()), (409, Some("Conflict")), "{v}");
    assert_eq!(
        v["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"test\"",
                "field": ".metadata.labels.applied"}]),
        "{v}"
    );
    // `[{}]` clears the entries; `[]` would keep them
    let (code, v) = s
        .send(
            "PATCH",
            &web,
            "application/merge-patch+json",
            Some(json!({"metadata": {"managedFields": [{}]}})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let managers: Vec<&str> = v["metadata"]["managedFields"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["manager"].as_str()).collect())
        .unwrap_or_default();
    assert!(managers.is_empty(), "{v}");
    // a content type rkube does not take is a 415
    let (code, v) = s
        .send("PATCH", &web, "application/x-unknown", Some(json!({})))
        .await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (415, Some("UnsupportedMediaType")),
        "{v}"
    );

    // scale: a Scale object in, a Scale object out
    let (code, scale) = s
        .send(
            "PATCH",
            &format!("{web}/scale"),
            "application/merge-patch+json",
            Some(json!({"spec": {"replicas": 4}})),
        )
        .await;
    assert_eq!(code, 200, "{scale}");
    assert_eq!(
        (scale["kind"].as_str(), scale["apiVersion"].as_str()),
        (Some("Scale"), Some("autoscaling/v1"))
    );
    assert_eq!(scale["spec"]["replicas"], 4);
    assert_eq!(scale["status"]["replicas"], 0, "zero values are written");
    assert_eq!(scale["status"]["selector"], "app=web");
    let (_, v) = s.get(&web).await;
    assert_eq!(v["spec"]["replicas"], 4);

    // the status subresource writes status only
    let mut with_status = v.clone();
    with_status["status"] = json!({"replicas": 4, "readyReplicas": 2});
    with_status["spec"]["replicas"] = json!(9);
    let (code, v) = s
        .send(
            "PUT",
            &format!("{web}/status"),
            "application/json",
            Some(with_status),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (
            v["status"]["readyReplicas"].as_i64(),
            v["spec"]["replicas"].as_i64()
        ),
        (Some(2), Some(4))
    );
    s.stop().await;
}

/// Reads newline-delimited events from a streaming response until `n`
/// are in.
async fn events(resp: reqwest::Response, n: usize) -> Vec<Value> {
    let mut resp = resp;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), resp.chunk())
            .await
            .expect("a watch event within 10s")
            .unwrap();
        let Some(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            out.push(serde_json::from_slice(&line).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn watches_stream_events_resume_and_report_gone() {
    let s = start().await;
    let (_, a) = s.post(CMS, configmap("a", json!({}))).await;
    let rv = a["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    // resourceVersion=0: the current objects first, then changes
    let resp = s
        .http
        .get(format!("{}{CMS}?watch=true&resourceVersion=0", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    s.post(CMS, configmap("b", json!({}))).await;
    let evs = events(resp, 2).await;
    assert_eq!(
        (
            evs[0]["type"].as_str(),
            evs[0]["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("a"))
    );
    assert_eq!(
        (
            evs[1]["type"].as_str(),
            evs[1]["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("b"))
    );
    assert_eq!(evs[1]["object"]["kind"], "ConfigMap");

    // resume from a revision: only what came after (the legacy /watch/ path)
    let resp = s
        .http
        .get(format!(
            "{}/api/v1/watch/namespaces/default/configmaps?resourceVersion={rv}&timeoutSeconds=2",
            s.url
        ))
        .send()
        .await
        .unwrap();
    let evs = events(resp, 5).await;
    assert_eq!(evs.len(), 1, "the stream ends at timeoutSeconds: {evs:?}");
    assert_eq!(evs[0]["object"]["metadata"]["name"], "b");

    // a revision older than the history: an in-stream ERROR with 410
    for i in 0..10 {
        s.post(CMS, configmap(&format!("x{i}"), json!({}))).await;
    }
    let resp = s
        .http
        .get(format!("{}{CMS}?watch=1&resourceVersion={rv}", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let evs = events(resp, 1).await;
    assert_eq!(evs[0]["type"], "ERROR", "{evs:?}");
    assert_eq!(evs[0]["object"]["code"], 410);
    assert_eq!(evs[0]["object"]["reason"], "Gone");
    s.stop().await;
}

#[tokio::test]
async fn bookmarks_when_asked_and_limits_as_429() {
    let server = rkube_testing::TestApiServer::builder()
        .configure(|c| c.limits.max_watches_per_user = 1)
        .start()
        .await
        .unwrap();
    let url = server.url().to_string();
    let http = reqwest::Client::new();
    let resp = http
        .get(format!(
            "{url}{CMS}?watch=true&allowWatchBookmarks=true&timeoutSeconds=5"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // the one watch allowed is open: the next is refused, Kubernetes' way
    let refused = http.get(format!("{url}{CMS}?watch=true")).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let status: Value = serde_json::from_str(&refused.text().await.unwrap()).unwrap();
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("TooManyRequests"))
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("--max-watches-per-user"),
        "{status}"
    );
    let evs = events(resp, 1).await;
    assert_eq!(evs[0]["type"], "BOOKMARK", "{evs:?}");
    assert_eq!(evs[0]["object"]["kind"], "ConfigMap");
    assert!(
        evs[0]["object"]["metadata"]["resourceVersion"].is_string(),
        "{evs:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_and_rest_share_the_port() {
    let s = start().await;
    assert_eq!(s.post(CMS, configmap("shared", json!({}))).await.0, 201);
    let client =
        rkube_client::Client::from_config(&rkube_client::ClientConfig::for_server(s.url.clone())).unwrap();
    let api: rkube_client::Api<rkube_api::core::v1::ConfigMap> =
        rkube_client::Api::namespaced(client, "default");
    let cm = api.get("shared").await.unwrap();
    assert_eq!(cm.data.get("k").map(String::as_str), Some("v"));
    s.stop().await;
}

/// Waits (up to 30 s, the worker runs at the lowest priority) until the apiserver's
/// background encoding has put `any`'s JSON in the cache.
async fn wait_cached(any: &prost_types::Any, what: &str) {
    let cache = rkube_apiserver::rest::json::JsonCache::global();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cache.contains(any) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} was not encoded in the background within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Creates `yaml` (an object of kind `K` in `default`) over gRPC, without any JSON,
/// and returns the stored version as a list sends it (the wire bytes gRPC sends).
async fn create_over_grpc<K: rkube_api::Resource>(s: &Rest, yaml: &str) -> prost_types::Any {
    let obj: K = serde_yaml::from_str(yaml).unwrap();
    let obj = rkube_api::codec::DynObject::from_typed(&obj);
    let client = s.api.client();
    client.create_dyn(&obj, "default").await.unwrap();
    client.get_dyn(K::info(), "default", &obj.name).await.unwrap().any
}

#[tokio::test]
async fn written_objects_are_encoded_before_any_list_and_listed_from_the_cache() {
    let s = start().await;
    let stored = create_over_grpc::<rkube_api::core::v1::Pod>(
        &s,
        "metadata: {name: warm, namespace: default}\nspec: {containers: [{name: c, image: busybox}]}\n",
    )
    .await;
    // nobody has read it as JSON: only the background encoding can have cached it
    wait_cached(&stored, "the pod").await;
    let cached = rkube_apiserver::rest::json::JsonCache::global()
        .get(&stored)
        .unwrap();
    let body = s
        .http
        .get(format!("{}/api/v1/namespaces/default/pods", s.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        body.windows(cached.len()).any(|w| w == &cached[..]),
        "the list carries the cached JSON verbatim: {}",
        String::from_utf8_lossy(&body)
    );
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["items"][0]["metadata"]["name"], "warm");
    assert_eq!(list["items"][0]["kind"], "Pod");
    s.stop().await;
}

#[tokio::test]
async fn secrets_are_never_kept_as_json() {
    let s = start().await;
    let stored = create_over_grpc::<rkube_api::core::v1::Secret>(
        &s,
        "metadata: {name: token, namespace: default}\nstringData: {password: hunter2}\n",
    )
    .await;
    // written after the Secret: once it is encoded, the Secret has been passed over
    let cm = create_over_grpc::<rkube_api::core::v1::ConfigMap>(
        &s,
        "metadata: {name: after-secret, namespace: default}\ndata: {k: v}\n",
    )
    .await;
    wait_cached(&cm, "the ConfigMap written after the Secret").await;
    let cache = rkube_apiserver::rest::json::JsonCache::global();
    assert!(
        !cache.contains(&stored),
        "the Secret was encoded in the background"
    );
    // nor when read over REST
    let (code, got) = s.get("/api/v1/namespaces/default/secrets/token").await;
    assert_eq!(code, 200, "{got}");
    let (code, list) = s.get("/api/v1/namespaces/default/secrets").await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["items"][0]["metadata"]["name"], "token");
    assert!(!cache.contains(&stored), "a REST read kept the Secret's JSON");
    s.stop().await;
}
