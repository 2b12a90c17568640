//! The resource verbs over REST: each builds the gRPC request the gRPC
//! face would receive, calls the same `ApiServer` method (authentication,
//! RBAC, node restriction, admission, validation, audit and the store all
//! happen there) and writes the answer as Kubernetes JSON.

use super::json::{from_json, items_json, object_json, to_json, to_json_bytes, FieldValidation};
use super::metadata;
use super::protobuf;
use super::table::{self, Rendering, WatchTables};
use super::{json_response, status, Call, Target};
use crate::error::ApiError;
use crate::service::ApiService;
use bytes::Bytes;
use futures::StreamExt;
use prost_types::Any;
use rkube_api::meta::v1::Preconditions;
use rkube_api::rpc::{self, api_server_server::ApiServer};
use rkube_api::ResourceInfo;
use serde_json::{json, Value};
use std::time::Duration;
use tonic::body::Body;
use tonic::Status;

type Answer = Result<http::Response<Body>, Status>;

fn resource(info: &ResourceInfo) -> Option<rpc::ResourceId> {
    Some(rpc::ResourceId {
        group: info.group.into(),
        resource: info.plural.into(),
    })
}

fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

fn dry_run(call: &Call) -> bool {
    call.query.get("dryRun") == "All"
}

fn object_answer(code: u16, info: &ResourceInfo, any: Option<Any>) -> Answer {
    let any = any.ok_or_else(|| Status::internal("the apiserver answered without an object"))?;
    Ok(super::json_bytes_response(code, object_json(info, &any)?))
}

/// The client's object from a body, as `fieldValidation` asks.
fn decode_body(
    api: &ApiService,
    call: &Call,
    info: &'static ResourceInfo,
    v: Value,
) -> Result<(Any, Vec<String>), ApiError> {
    let validation = FieldValidation::parse(call.query.get("fieldValidation"))?;
    // a custom object's unknown fields are pruned by the apiserver with a
    // warning; Strict refuses them instead, as Kubernetes does
    if validation == FieldValidation::Strict {
        if let Some(schema) = api.state.custom.of(info).and_then(|k| k.schema.clone()) {
            let mut copy = v.clone();
            let mut unknown = Vec::new();
            rkube_api::schema::prune(&mut copy, &schema, &mut unknown);
            if !unknown.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    unknown.join(", ")
                )));
            }
        }
    }
    from_json(
        info,
        v,
        FieldValidation::parse(call.query.get("fieldValidation"))?,
    )
}

/// Adds Kubernetes `Warning` headers (`299 - "text"`) to an answer.
fn with_warnings(answer: Answer, warnings: &[String]) -> Answer {
    let mut resp = answer?;
    for w in warnings {
        let text = format!("299 - {:?}", w);
        if let Ok(v) = http::HeaderValue::from_str(&text) {
            resp.headers_mut().append(http::header::WARNING, v);
        }
    }
    Ok(resp)
}

/// The gRPC face's admission warnings (`warning` metadata) after the decoder's.
fn admission_warnings<T>(mut warnings: Vec<String>, resp: &tonic::Response<T>) -> Vec<String> {
    let sent = resp.metadata().get_all(crate::service::WARNING_METADATA);
    warnings.extend(sent.iter().filter_map(|v| v.to_str().ok().map(str::to_string)));
    warnings
}

/// Serves a request for `t`; every failure is a `Status` object.
pub(super) async fn serve(api: &ApiService, call: &Call, t: Target, body: Bytes) -> http::Response<Body> {
    use http::Method;
    let info = t.info;
    let method = &call.parts.method;
    let watch = t.watch || call.query.flag("watch");
    let body = match protobuf::json_body(call, body) {
        Ok(body) => body,
        Err(e) => return status::error_response(e, Some(info)),
    };
    let answer = match (t.name.is_empty(), t.subresource.as_str()) {
        (true, _) if *method == Method::GET && watch => watch_objects(api, call, &t).await,
        (true, _) if *method == Method::GET => list(api, call, &t).await,
        (true, _) if *method == Method::POST => create(api, call, &t, &body).await,
        (true, _) if *method == Method::DELETE => delete_collection(api, call, &t).await,
        (false, "") if *method == Method::GET && watch => watch_objects(api, call, &t).await,
        (false, "" | "status") if *method == Method::GET => get(api, call, &t).await,
        (false, "" | "status") if *method == Method::PUT => update(api, call, &t, &body).await,
        (false, "" | "status") if *method == Method::PATCH => patch(api, call, &t, body).await,
        (false, "") if *method == Method::DELETE => delete(api, call, &t, &body).await,
        (false, "approval") if info.kind == "CertificateSigningRequest" && *method == Method::PATCH => {
            patch(api, call, &t, body).await
        }
        (false, "scale") if super::discovery::has_scale(info) => scale(api, call, &t, &body).await,
        (false, "scale") if custom_scale(api, info).is_some() => scale(api, call, &t, &body).await,
        (false, "log") if info.kind == "Pod" && *method == Method::GET => logs(api, call, &t).await,
        (false, "eviction") if info.kind == "Pod" && *method == Method::POST => {
            evict(api, call, &t, &body).await
        }
        (false, "token") if info.kind == "ServiceAccount" && *method == Method::POST => {
            token_request(api, call, &t, &body).await
        }
        (false, "status") if !info.has_status => Err(Status::not_found(format!(
            "{} have no status subresource",
            info.plural
        ))),
        (false, "" | "status" | "scale") | (true, _) => Err(Status::unimplemented(format!(
            "{method} is not allowed on {}",
            call.parts.uri.path()
        ))),
        (false, sub) => Err(Status::not_found(format!(
            "the server could not find the requested resource ({}/{sub})",
            info.plural
        ))),
    };
    answer.unwrap_or_else(|s| status::response(&s, Some(info)))
}

async fn get(api: &ApiService, call: &Call, t: &Target) -> Answer {
    let req = rpc::GetRequest {
        resource: resource(t.info),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
    };
    let out = api.get(call.grpc(req)).await?.into_inner();
    // the rendering is looked at once the call is authorized, as in Kubernetes
    match (Rendering::of(call)?, out.object) {
        (Rendering::Table(include), Some(any)) => match api.state.custom.of(t.info) {
            Some(kind) => Ok(json_response(
                200,
                &table::custom_object(&kind.columns, t.info, &any, include)?,
            )),
            None => Ok(json_response(200, &table::object(t.info, &any, include)?)),
        },
        (Rendering::Metadata, Some(any)) => {
            Ok(json_response(200, &metadata::object(&to_json(t.info, &any)?)))
        }
        (_, object) => object_answer(200, t.info, object),
    }
}

fn list_request(call: &Call, t: &Target) -> Result<rpc::ListRequest, ApiError> {
    let limit = call.query.int("limit")?.unwrap_or(0);
    Ok(rpc::ListRequest {
        resource: resource(t.info),
        namespace: t.namespace.clone(),
        label_selector: call.query.get("labelSelector").into(),
        field_selector: call.query.get("fieldSelector").into(),
        limit: i32::try_from(limit).unwrap_or(i32::MAX),
        r#continue: call.query.get("continue").into(),
    })
}

/// A list as Kubernetes writes it: `PodList`, the revision as a string,
/// `items` even when empty.
fn list_json(info: &ResourceInfo, out: &rpc::ListResponse) -> Result<Value, ApiError> {
    let items = out
        .items
        .iter()
        .map(|any| to_json(info, any))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "kind": format!("{}List", info.kind),
        "apiVersion": info.api_version(),
        "metadata": table::list_metadata(out),
        "items": items,
    }))
}

/// A list as [`list_json`] writes it, its items' JSON straight from
/// `json::items_json` (what a large list's time goes to): the parts of the body, to be
/// sent one after the other rather than copied into one buffer.
fn list_parts(info: &ResourceInfo, out: &rpc::ListResponse) -> Result<Vec<Bytes>, ApiError> {
    let items = items_json(info, &out.items)?;
    let head = json!({
        "kind": format!("{}List", info.kind),
        "apiVersion": info.api_version(),
        "metadata": table::list_metadata(out),
    });
    let mut head = serde_json::to_vec(&head).map_err(|e| ApiError::internal(e.to_string()))?;
    // the head's closing brace becomes the items' place
    head.pop();
    head.extend_from_slice(br#","items":["#);
    let mut parts = Vec::with_capacity(items.len() + 2);
    parts.push(Bytes::from(head));
    parts.extend(items.into_iter().map(Bytes::from));
    parts.push(Bytes::from_static(b"]}"));
    Ok(parts)
}

async fn list(api: &ApiService, call: &Call, t: &Target) -> Answer {
    let out = api.list(call.grpc(list_request(call, t)?)).await?.into_inner();
    let body = match Rendering::of(call)? {
        Rendering::Objects => return Ok(super::json_parts_response(200, list_parts(t.info, &out)?)),
        Rendering::Table(include) => match api.state.custom.of(t.info) {
            Some(kind) => table::custom_list(&kind.columns, t.info, &out, include)?,
            None => table::list(t.info, &out, include)?,
        },
        Rendering::Metadata => metadata::list(&list_json(t.info, &out)?),
    };
    Ok(json_response(200, &body))
}

async fn create(api: &ApiService, call: &Call, t: &Target, body: &Bytes) -> Answer {
    create_object(api, call, t, body_json(body)?).await
}

/// Creates the client's object `v` (a POST, or an apply of something absent).
async fn create_object(api: &ApiService, call: &Call, t: &Target, v: Value) -> Answer {
    let (object, warnings) = decode_body(api, call, t.info, v)?;
    let req = rpc::CreateRequest {
        resource: resource(t.info),
        namespace: t.namespace.clone(),
        object: Some(object),
        dry_run: dry_run(call),
    };
    let out = api.create(call.grpc_write(req)?).await?;
    let warnings = admission_warnings(warnings, &out);
    with_warnings(object_answer(201, t.info, out.into_inner().object), &warnings)
}

/// The body of a PUT, with the URL's namespace and name checked against
/// (or filled into) its metadata, as Kubernetes does.
fn put_body(t: &Target, body: &Bytes) -> Result<Value, ApiError> {
    let mut v = body_json(body)?;
    let meta = v
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?
        .entry("metadata")
        .or_insert_with(|| json!({}));
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        meta["name"] = json!(t.name);
    } else if name != t.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            t.name
        )));
    }
    if t.info.namespaced {
        let ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
        if ns.is_empty() {
            meta["namespace"] = json!(t.namespace);
        } else if ns != t.namespace {
            return Err(ApiError::bad_request(format!(
                "the namespace of the object ({ns}) does not match the namespace on the URL ({})",
                t.namespace
            )));
        }
    }
    Ok(v)
}

async fn update(api: &ApiService, call: &Call, t: &Target, body: &Bytes) -> Answer {
    let (object, warnings) = decode_body(api, call, t.info, put_body(t, body)?)?;
    let req = rpc::UpdateRequest {
        resource: resource(t.info),
        object: Some(object),
        dry_run: dry_run(call),
    };
    let out = if t.subresource == "status" {
        api.update_status(call.grpc_write(req)?).await?
    } else {
        api.update(call.grpc_write(req)?).await?
    };
    let warnings = admission_warnings(warnings, &out);
    with_warnings(object_answer(200, t.info, out.into_inner().object), &warnings)
}

fn patch_type(call: &Call) -> Result<&'static str, Status> {
    let ct = call.content_type();
    super::patch::type_of_content(ct).ok_or_else(|| {
        Status::unimplemented(format!(
            "unsupported patch content type {ct:?}: rkube accepts application/merge-patch+json, \
             application/json-patch+json, application/strategic-merge-patch+json and \
             application/apply-patch+yaml"
        ))
    })
}

async fn patch(api: &ApiService, call: &Call, t: &Target, body: Bytes) -> Answer {
    let patch_type = match patch_type(call) {
        Ok(p) => p,
        Err(s) => return Ok(unsupported_media_type(&s)),
    };
    // an applied configuration may be YAML; the handler reads JSON
    let body = if patch_type == "apply" {
        let value: Value = serde_json::from_slice(&body)
            .or_else(|_| serde_yaml::from_slice(&body))
            .map_err(|e| {
                ApiError::bad_request(format!("the applied configuration is neither JSON nor YAML: {e}"))
            })?;
        Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
    } else {
        body
    };
    let req = rpc::PatchRequest {
        resource: resource(t.info),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        patch_type: patch_type.into(),
        patch: body.to_vec(),
        subresource: t.subresource.clone(),
        dry_run: dry_run(call),
    };
    if patch_type == "apply" && call.apply_manager().is_empty() {
        let mut e = ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        );
        e.reason = "Invalid";
        return Err(e.into());
    }
    match api.patch(call.grpc_write(req)?).await {
        Ok(out) => {
            let warnings = admission_warnings(Vec::new(), &out);
            with_warnings(object_answer(200, t.info, out.into_inner().object), &warnings)
        }
        // server-side apply creates what is not there yet, owned by its manager
        Err(s) if patch_type == "apply" && t.subresource.is_empty() && s.code() == tonic::Code::NotFound => {
            let mut config = put_body(t, &body)?;
            let entries = crate::managed_fields::created_by_apply(
                t.info,
                &config,
                call.apply_manager(),
                crate::managed_fields::Scope::Main,
            );
            config["metadata"]["managedFields"] = entries;
            create_object(api, call, t, config).await
        }
        Err(s) => Err(s),
    }
}

fn unsupported_media_type(s: &Status) -> http::Response<Body> {
    let (_, mut body) = status::status_json(s, None);
    body["reason"] = json!("UnsupportedMediaType");
    body["code"] = json!(415);
    json_response(415, &body)
}

/// DeleteOptions, from the body (if any) and the query.
fn delete_request(call: &Call, t: &Target, name: &str, body: &Bytes) -> Result<rpc::DeleteRequest, ApiError> {
    let opts = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        body_json(body)?
    };
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut policy = s(&opts["propagationPolicy"]);
    if policy.is_empty() {
        policy = call.query.get("propagationPolicy").into();
    }
    if policy.is_empty() && (opts["orphanDependents"] == json!(true) || call.query.flag("orphanDependents")) {
        policy = "Orphan".into();
    }
    let grace = match opts["gracePeriodSeconds"].as_i64() {
        Some(g) => Some(g),
        None => call.query.int("gracePeriodSeconds")?,
    };
    let pre = &opts["preconditions"];
    let preconditions = (pre.is_object()).then(|| Preconditions {
        uid: s(&pre["uid"]),
        resource_version: s(&pre["resourceVersion"]),
    });
    let dry = opts["dryRun"]
        .as_array()
        .is_some_and(|d| d.iter().any(|v| v == "All"))
        || dry_run(call);
    Ok(rpc::DeleteRequest {
        resource: resource(t.info),
        namespace: t.namespace.clone(),
        name: name.into(),
        preconditions,
        propagation_policy: policy,
        grace_period_seconds: grace.map(|g| i32::try_from(g).unwrap_or(i32::MAX)),
        dry_run: dry,
    })
}

async fn delete(api: &ApiService, call: &Call, t: &Target, body: &Bytes) -> Answer {
    let req = delete_request(call, t, &t.name, body)?;
    let out = api.delete(call.grpc(req)).await?.into_inner();
    object_answer(200, t.info, out.object)
}

/// POST pods/NAME/eviction with a policy/v1 (or v1beta1) Eviction: its deleteOptions
/// become the pod's delete. Answers Kubernetes' success `Status` (201).
async fn evict(api: &ApiService, call: &Call, t: &Target, body: &Bytes) -> Answer {
    let eviction = body_json(body)?;
    let name = eviction["metadata"]["name"].as_str().unwrap_or("");
    let options = eviction
        .get("deleteOptions")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let options = serde_json::to_vec(&options).map_err(|e| ApiError::internal(e.to_string()))?;
    let delete = delete_request(call, t, &t.name, &Bytes::from(options))?;
    let req = rpc::EvictRequest {
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        eviction: Some(rkube_api::policy::v1::Eviction {
            metadata: Some(rkube_api::meta::v1::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            delete_options: Some(rkube_api::policy::v1::DeleteOptions {
                grace_period_seconds: delete.grace_period_seconds,
                preconditions: delete.preconditions,
                propagation_policy: delete.propagation_policy,
                dry_run: if delete.dry_run {
                    vec!["All".into()]
                } else {
                    Vec::new()
                },
            }),
            ..Default::default()
        }),
    };
    api.evict(call.grpc(req)).await?;
    let mut ok = super::status::success();
    ok["code"] = json!(201);
    Ok(json_response(201, &ok))
}

/// Deletes every object the selectors match: authorized as
/// `deletecollection`, then one Delete each (so each is also authorized,
/// admitted and audited as a delete), answering the list of what was
/// deleted.
async fn delete_collection(api: &ApiService, call: &Call, t: &Target) -> Answer {
    // Kubernetes' verb first, then each object as its own delete
    let attrs =
        crate::authz::Attributes::new("deletecollection", t.info.group, t.info.plural, &t.namespace, "");
    api.admit(api.authenticate(&call.grpc(())), &attrs)?;
    let mut req = list_request(call, t)?;
    req.limit = 0;
    req.r#continue.clear();
    let listed = api.list(call.grpc(req)).await?.into_inner();
    let mut deleted = rpc::ListResponse {
        resource_version: listed.resource_version.clone(),
        ..Default::default()
    };
    for any in &listed.items {
        let obj = to_json(t.info, any)?;
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        let mut target = t.clone();
        target.namespace = obj["metadata"]["namespace"].as_str().unwrap_or("").into();
        let req = delete_request(call, &target, name, &Bytes::new())?;
        match api.delete(call.grpc(req)).await {
            Ok(out) => deleted.items.extend(out.into_inner().object),
            // deleted meanwhile: that is what was asked
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(s),
        }
    }
    Ok(json_response(200, &list_json(t.info, &deleted)?))
}

/// A watch as newline-delimited JSON events. `resourceVersion` "" and "0"
/// both start with the current objects as ADDED (Kubernetes' "any
/// version"); a version too old is an in-stream ERROR carrying a 410
/// `Status`, so clients relist.
async fn watch_objects(api: &ApiService, call: &Call, t: &Target) -> Answer {
    let info = t.info;
    let mut field_selector = call.query.get("fieldSelector").to_string();
    if !t.name.is_empty() {
        let by_name = format!("metadata.name={}", t.name);
        field_selector = if field_selector.is_empty() {
            by_name
        } else {
            format!("{field_selector},{by_name}")
        };
    }
    let rv = match call.query.get("resourceVersion") {
        "0" => "",
        rv => rv,
    };
    let req = rpc::WatchRequest {
        resource: resource(info),
        namespace: t.namespace.clone(),
        label_selector: call.query.get("labelSelector").into(),
        field_selector,
        resource_version: rv.into(),
        allow_bookmarks: call.query.flag("allowWatchBookmarks"),
    };
    let timeout = call.query.int("timeoutSeconds")?.filter(|s| *s > 0);
    let events = match api.watch(call.grpc(req)).await {
        Ok(stream) => stream.into_inner().boxed(),
        Err(s) if s.code() == tonic::Code::OutOfRange => futures::stream::once(async move { Err(s) }).boxed(),
        Err(s) => return Err(s),
    };
    let rendering = Rendering::of(call)?;
    let mut tables = match rendering {
        Rendering::Objects | Rendering::Metadata => None,
        Rendering::Table(include) => Some(match api.state.custom.of(info) {
            Some(kind) => WatchTables::custom(include, kind.columns.clone()),
            None => WatchTables::new(include),
        }),
    };
    let partial = rendering == Rendering::Metadata;
    let lines = events.map(move |ev| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(event_line(
            info,
            ev,
            tables.as_mut(),
            partial,
        )))
    });
    let body = match timeout {
        Some(secs) => {
            let end = tokio::time::sleep(Duration::from_secs(u64::try_from(secs).unwrap_or(0)));
            Body::new(http_body_util::StreamBody::new(lines.take_until(end)))
        }
        None => Body::new(http_body_util::StreamBody::new(lines)),
    };
    let mut resp = http::Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// One watch event as a JSON line; its object a one-row Table when the
/// watch asked for `tables`, a PartialObjectMetadata when `partial`.
fn event_line(
    info: &ResourceInfo,
    ev: Result<rpc::WatchEvent, Status>,
    tables: Option<&mut WatchTables>,
    partial: bool,
) -> Bytes {
    let cut = |object: Value| {
        if partial {
            metadata::object(&object)
        } else {
            object
        }
    };
    let value = match ev {
        Ok(ev) if ev.r#type == "BOOKMARK" => json!({
            "type": "BOOKMARK",
            "object": match tables {
                Some(_) => WatchTables::bookmark(&ev.resource_version),
                None => cut(json!({
                    "kind": info.kind,
                    "apiVersion": info.api_version(),
                    "metadata": {"resourceVersion": ev.resource_version},
                })),
            },
        }),
        // the common case, from the object's cached JSON
        Ok(ev) if tables.is_none() && !partial && ev.object.is_some() => {
            let object = ev.object.as_ref().map(|o| to_json_bytes(info, o));
            match object {
                Some(Ok(object)) => {
                    let head = json!({"type": ev.r#type});
                    let head = serde_json::to_vec(&head).unwrap_or_default();
                    let mut line = Vec::with_capacity(head.len() + object.len() + 12);
                    line.extend_from_slice(&head[..head.len().saturating_sub(1)]);
                    line.extend_from_slice(br#","object":"#);
                    line.extend_from_slice(&object);
                    line.extend_from_slice(b"}\n");
                    return Bytes::from(line);
                }
                Some(Err(e)) => {
                    json!({"type": "ERROR", "object": status::status_json(&e.into(), Some(info)).1})
                }
                None => unreachable!("checked above"),
            }
        }
        Ok(ev) => match ev.object.as_ref().map(|o| match tables {
            Some(tables) => tables.event(info, o),
            None => to_json(info, o).map(cut),
        }) {
            Some(Ok(object)) => json!({"type": ev.r#type, "object": object}),
            Some(Err(e)) => json!({"type": "ERROR", "object": status::status_json(&e.into(), Some(info)).1}),
            None => {
                json!({"type": "ERROR", "object": status::status_json(&Status::internal("a watch event without an object"), Some(info)).1})
            }
        },
        Err(s) => json!({"type": "ERROR", "object": status::status_json(&s, Some(info)).1}),
    };
    let mut line = serde_json::to_vec(&value).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// The autoscaling/v1 Scale of a Deployment or ReplicaSet.
fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let selector: Vec<String> = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector.join(",")},
    })
}

/// The scale subresource of a custom kind, if its CRD declares one.
fn custom_scale(api: &ApiService, info: &ResourceInfo) -> Option<rkube_api::crd::ScaleSubresource> {
    api.state.custom.of(info).and_then(|k| k.scale.clone())
}

/// The autoscaling/v1 Scale of a custom object, from its CRD's paths.
fn custom_scale_of(obj: &Value, paths: &rkube_api::crd::ScaleSubresource) -> Value {
    use rkube_api::crd::json_path;
    let meta = &obj["metadata"];
    let int = |p: &str| json_path(obj, p).and_then(Value::as_i64).unwrap_or(0);
    let mut status = json!({"replicas": int(&paths.status_replicas_path)});
    if let Some(selector) = paths
        .label_selector_path
        .as_deref()
        .and_then(|p| json_path(obj, p))
        .and_then(Value::as_str)
    {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": int(&paths.spec_replicas_path)},
        "status": status,
    })
}

/// The replica count a write to the scale subresource asks for, and the
/// resourceVersion it is conditional on (PUT).
fn wanted_replicas(call: &Call, body: &Bytes) -> Result<(i64, String), Status> {
    let v = body_json(body)?;
    let from_json_patch = || {
        v.as_array().and_then(|ops| {
            ops.iter()
                .rev()
                .find(|op| {
                    op["path"] == "/spec/replicas" && matches!(op["op"].as_str(), Some("replace" | "add"))
                })
                .and_then(|op| op["value"].as_i64())
        })
    };
    let replicas = if call.parts.method == http::Method::PATCH && patch_type(call)? == "json" {
        from_json_patch()
    } else {
        v["spec"]["replicas"].as_i64()
    };
    let replicas = replicas.ok_or_else(|| {
        Status::from(ApiError::bad_request(
            "a write to the scale subresource must set spec.replicas",
        ))
    })?;
    let rv = if call.parts.method == http::Method::PUT {
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string()
    } else {
        String::new()
    };
    Ok((replicas, rv))
}

/// `deployments/scale`, `replicasets/scale`: a write becomes a merge patch
/// of `spec.replicas` through the Patch handler (subresource `scale`, so
/// RBAC sees `deployments/scale`), and the answer is the new Scale.
async fn scale(api: &ApiService, call: &Call, t: &Target, body: &Bytes) -> Answer {
    use http::Method;
    let method = &call.parts.method;
    let object = if *method == Method::GET {
        let req = rpc::GetRequest {
            resource: resource(t.info),
            namespace: t.namespace.clone(),
            name: t.name.clone(),
        };
        api.get(call.grpc(req)).await?.into_inner().object
    } else if *method == Method::PUT || *method == Method::PATCH {
        let (replicas, rv) = wanted_replicas(call, body)?;
        let mut merge = json!({"spec": {"replicas": replicas}});
        if let Some(paths) = custom_scale(api, t.info) {
            merge = json!({});
            rkube_api::crd::set_json_path(&mut merge, &paths.spec_replicas_path, json!(replicas));
        }
        if !rv.is_empty() {
            merge["metadata"] = json!({"resourceVersion": rv});
        }
        let req = rpc::PatchRequest {
            resource: resource(t.info),
            namespace: t.namespace.clone(),
            name: t.name.clone(),
            patch_type: "merge".into(),
            patch: serde_json::to_vec(&merge).unwrap_or_default(),
            subresource: "scale".into(),
            dry_run: dry_run(call),
        };
        api.patch(call.grpc_write(req)?).await?.into_inner().object
    } else {
        return Err(Status::unimplemented(format!(
            "{method} is not allowed on a scale subresource"
        )));
    };
    let object = object.ok_or_else(|| Status::internal("the apiserver answered without an object"))?;
    let obj = to_json(t.info, &object)?;
    match custom_scale(api, t.info) {
        Some(paths) => Ok(json_response(200, &custom_scale_of(&obj, &paths))),
        None => Ok(json_response(200, &scale_of(&obj))),
    }
}

/// `kubectl auth can-i`: a SelfSubjectAccessReview answered by the same
/// AccessReview call rkubectl uses.
pub(super) async fn self_subject_access_review(
    api: &ApiService,
    call: &Call,
    body: &Bytes,
) -> http::Response<Body> {
    let review = protobuf::json_body(call, body.clone()).and_then(|body| body_json(&body));
    let review = match review {
        Ok(v) => v,
        Err(e) => return status::error_response(e, None),
    };
    let attrs = &review["spec"]["resourceAttributes"];
    let s = |k: &str| attrs[k].as_str().unwrap_or("").to_string();
    if !attrs.is_object() {
        return status::error_response(
            ApiError::bad_request(
                "rkube answers SelfSubjectAccessReviews about resources (spec.resourceAttributes) only",
            ),
            None,
        );
    }
    let req = rpc::AccessReviewRequest {
        verb: s("verb"),
        group: s("group"),
        resource: s("resource"),
        subresource: s("subresource"),
        namespace: s("namespace"),
        name: s("name"),
        user: String::new(),
        groups: Vec::new(),
    };
    match api.access_review(call.grpc(req)).await {
        Ok(out) => {
            let out = out.into_inner();
            let mut answer = json!({
                "kind": "SelfSubjectAccessReview",
                "apiVersion": "authorization.k8s.io/v1",
                "metadata": {},
                "spec": review["spec"],
                "status": {"allowed": out.allowed},
            });
            if !out.reason.is_empty() {
                answer["status"]["reason"] = json!(out.reason);
            }
            json_response(201, &answer)
        }
        Err(s) => status::response(&s, None),
    }
}

/// `serviceaccounts/NAME/token`: an authentication.k8s.io/v1 TokenRequest
/// (JSON, or protobuf as `kubectl create token` sends it) answered by the
/// CreateToken call rkube's own clients use.
async fn token_request(api: &ApiService, call: &Call, t: &Target, body: &Bytes) -> Answer {
    let spec = if body.is_empty() {
        json!({})
    } else {
        body_json(body)?.get("spec").cloned().unwrap_or_else(|| json!({}))
    };
    let bad =
        |field: &str, what: &str| ApiError::bad_request(format!("TokenRequest spec.{field} must be {what}"));
    let audiences = match &spec["audiences"] {
        Value::Null => Vec::new(),
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("audiences", "a list of strings"))?,
        _ => return Err(bad("audiences", "a list of strings").into()),
    };
    let expiration_seconds = match &spec["expirationSeconds"] {
        Value::Null => None,
        v => {
            let n = v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| bad("expirationSeconds", "an integer"))?;
            // 68 years; Kubernetes allows up to 2^32 seconds
            Some(i32::try_from(n).map_err(|_| bad("expirationSeconds", "at most 2147483647"))?)
        }
    };
    let bound_object_ref = match &spec["boundObjectRef"] {
        Value::Null => None,
        r => {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
            Some(rpc::BoundObjectReference {
                kind: s("kind"),
                api_version: s("apiVersion"),
                name: s("name"),
                uid: s("uid"),
            })
        }
    };
    let req = rpc::CreateTokenRequest {
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        audiences,
        expiration_seconds,
        bound_object_ref,
    };
    let out = api.create_token(call.grpc(req)).await?.into_inner();
    let bound = out
        .bound_object_ref
        .map(|r| json!({"kind": r.kind, "apiVersion": r.api_version, "name": r.name, "uid": r.uid}));
    Ok(json_response(
        201,
        &json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": t.name, "namespace": t.namespace, "creationTimestamp": null},
            "spec": {
                "audiences": out.audiences,
                "expirationSeconds": out.expiration_seconds,
                "boundObjectRef": bound,
            },
            "status": {"token": out.token, "expirationTimestamp": out.expiration_timestamp},
        }),
    ))
}

/// `pods/log` as plain text, streamed from the pod's kubelet through the
/// same Logs call rkubectl uses (`follow`, `container`, `previous`,
/// `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`, `limitBytes`).
async fn logs(api: &ApiService, call: &Call, t: &Target) -> Answer {
    let q = &call.query;
    let req = rkube_api::kubelet::v1::LogsRequest {
        namespace: t.namespace.clone(),
        pod: t.name.clone(),
        container: q.get("container").into(),
        follow: q.flag("follow"),
        previous: q.flag("previous"),
        tail_lines: q.int("tailLines")?.unwrap_or(0),
        since_seconds: q.int("sinceSeconds")?.unwrap_or(0),
        timestamps: q.flag("timestamps"),
        limit_bytes: q.int("limitBytes")?.unwrap_or(0),
        since_time: q.get("sinceTime").into(),
    };
    let chunks = api.logs(call.grpc(req)).await?.into_inner();
    // an error after the first bytes can only end the text: the status
    // line has been sent
    let frames = chunks
        .take_while(|c| std::future::ready(c.is_ok()))
        .filter_map(|c| std::future::ready(c.ok()))
        .map(|c| Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(c.data))));
    let mut resp = http::Response::new(Body::new(http_body_util::StreamBody::new(frames)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    Ok(resp)
}
