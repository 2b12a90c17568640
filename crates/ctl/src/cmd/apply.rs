//! `rkubectl apply -f`: create what does not exist, update what differs,
//! and say which (`deployment.apps/web created|configured|unchanged`).
//!
//! The decision is made on the fields the file sets: the file's object is
//! merged over the live one and the result compared with the live object.
//! Equal means `unchanged` and nothing is written; otherwise the merged
//! object is written with the live resourceVersion, so a concurrent
//! change is never overwritten (a conflict re-reads and retries).
//!
//! Merging over the live object, instead of replacing it, keeps what the
//! server filled in (defaults, the ClusterIP, allocated node ports,
//! status). The known cost, compared with kubectl's last-applied
//! annotation: removing a field from the file does not remove it from the
//! object; delete and re-apply, or edit the field explicitly.

use crate::cmd::Context;
use crate::error::CtlError;
use crate::manifest::{self, FileObject, Purpose};
use crate::objects;
use crate::server::ApiServer;
use serde_json::{Map, Value};
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Manifest file, directory of manifests, or `-` for standard input;
    /// repeatable. Multi-document YAML and `kind: List` are accepted.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE|DIR|-")]
    pub files: Vec<String>,
    /// Also read manifests in subdirectories of a directory.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

/// How many times a write that lost a race with another writer is retried.
const CONFLICT_RETRIES: usize = 5;

/// What applying one object did.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing on the server yet.
    Create,
    /// The server object already has every field the file sets.
    Unchanged,
    /// The server object with the file's fields merged over it.
    Configure(Value),
}

impl Decision {
    pub fn verb(&self) -> &'static str {
        match self {
            Decision::Create => "created",
            Decision::Unchanged => "unchanged",
            Decision::Configure(_) => "configured",
        }
    }
}

/// Decides what to do with the file object `desired` (already passed
/// through `desired_fields`) given the live object, if any.
pub fn decide(live: Option<&Value>, desired: &Value) -> Decision {
    let Some(live) = live else {
        return Decision::Create;
    };
    let merged = merge(live, desired);
    if &merged == live {
        Decision::Unchanged
    } else {
        Decision::Configure(merged)
    }
}

/// Metadata the server owns; a file made by `get -o yaml` carries it, and
/// it must neither count as a change nor be written back.
const SERVER_METADATA: &[&str] = &[
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The fields of a file object that apply sets: everything the file says
/// except status (owned by controllers) and server-owned metadata.
pub fn desired_fields(mut obj: Value) -> Value {
    if let Some(map) = obj.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in SERVER_METADATA {
                meta.remove(*f);
            }
        }
        // Secret.stringData is write-only: the server keeps it as data, so
        // compare it (and send it) in that form
        if map.get("kind").and_then(Value::as_str) == Some("Secret") {
            if let Some(Value::Object(string_data)) = map.remove("stringData") {
                use base64::Engine;
                let data = map.entry("data").or_insert_with(|| Value::Object(Map::new()));
                if let Some(data) = data.as_object_mut() {
                    for (k, v) in string_data {
                        let text = v.as_str().unwrap_or_default();
                        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                        data.insert(k, Value::String(encoded));
                    }
                }
            }
        }
    }
    obj
}

/// `patch` merged over `base`: objects merge key by key; lists of objects
/// merge element by element, matched by `name` when the elements have one
/// (containers, ports, env) and by position when both lists have the same
/// length, so server-filled fields inside list elements survive; anything
/// else is replaced by the patch's value.
pub fn merge(base: &Value, patch: &Value) -> Value {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            let mut out = b.clone();
            for (k, pv) in p {
                let merged = match b.get(k) {
                    Some(bv) => merge(bv, pv),
                    None => pv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(b), Value::Array(p)) => {
            let same_len = b.len() == p.len();
            let merged = p
                .iter()
                .enumerate()
                .map(|(i, pv)| {
                    let by_name = pv.get("name").and_then(Value::as_str).and_then(|name| {
                        b.iter()
                            .find(|bv| bv.get("name").and_then(Value::as_str) == Some(name))
                    });
                    let counterpart = match by_name {
                        Some(bv) => Some(bv),
                        None if same_len && pv.get("name").is_none() => b.get(i),
                        None => None,
                    };
                    match counterpart {
                        Some(bv) if bv.is_object() && pv.is_object() => merge(bv, pv),
                        _ => pv.clone(),
                    }
                })
                .collect();
            Value::Array(merged)
        }
        _ => patch.clone(),
    }
}

pub async fn run(ctx: &Context, args: &ApplyArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let sources = manifest::read_sources(&args.files, args.recursive)?;
    let objects = manifest::load(&sources, &ctx.namespace_choice(), Purpose::Apply)?;
    let server = ctx.connect().await?;
    let mut failed = false;
    for fo in &objects {
        match apply_one(&server, fo).await {
            Ok(decision) => writeln!(out, "{} {}", fo.obj.display_name(), decision.verb())?,
            Err(e @ CtlError::Connect { .. }) => return Err(e),
            Err(e) => {
                failed = true;
                eprintln!("{e}");
            }
        }
    }
    if failed {
        Err(CtlError::Reported)
    } else {
        Ok(())
    }
}

async fn apply_one(server: &ApiServer, fo: &FileObject) -> Result<Decision, CtlError> {
    let obj = &fo.obj;
    let desired = desired_fields(obj.to_json().map_err(CtlError::usage)?);
    let context = |verb: &str| format!("error when {verb} {:?}", fo.source);
    for _ in 0..CONFLICT_RETRIES {
        let live = match server.get(obj.info, &obj.namespace, &obj.name).await {
            Ok(live) => Some(live.to_json().map_err(CtlError::usage)?),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.with_context(context("retrieving current configuration of"))),
        };
        let decision = decide(live.as_ref(), &desired);
        match &decision {
            Decision::Unchanged => {}
            Decision::Create => {
                let to_create = objects::from_json(obj.info, desired.clone()).map_err(CtlError::usage)?;
                match server.create(&to_create).await {
                    Ok(_) => {}
                    // created by someone else since we looked: look again
                    Err(e) if e.is_already_exists() => continue,
                    Err(e) => return Err(e.with_context(context("creating"))),
                }
            }
            Decision::Configure(merged) => {
                let updated = objects::from_json(obj.info, merged.clone()).map_err(|e| {
                    CtlError::usage(format!(
                        "{}: cannot merge {} with the live object: {e}",
                        fo.source,
                        obj.display_name()
                    ))
                })?;
                match server.update(&updated).await {
                    Ok(_) => {}
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e.with_context(context("applying patch to"))),
                }
            }
        }
        return Ok(decision);
    }
    Err(CtlError::usage(format!(
        "{}: {} kept changing while it was applied; try again",
        fo.source,
        obj.display_name()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "7",
                         "creationTimestamp": "2024-05-01T11:00:00Z", "generation": 1, "labels": {"app": "web"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25",
                                                      "imagePullPolicy": "IfNotPresent",
                                                      "ports": [{"containerPort": 80, "protocol": "TCP"}]}],
                                      "restartPolicy": "Always"}},
                "revisionHistoryLimit": 10
            },
            "status": {"replicas": 3, "readyReplicas": 3}
        })
    }

    fn file_deployment(replicas: i64) -> Value {
        desired_fields(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25",
                                                      "ports": [{"containerPort": 80}]}]}}
            }
        }))
    }

    #[test]
    fn missing_object_is_created() {
        assert_eq!(decide(None, &file_deployment(3)), Decision::Create);
        assert_eq!(Decision::Create.verb(), "created");
    }

    #[test]
    fn same_fields_are_unchanged_despite_server_defaults() {
        assert_eq!(
            decide(Some(&live_deployment()), &file_deployment(3)),
            Decision::Unchanged
        );
    }

    #[test]
    fn a_changed_field_is_configured_and_keeps_server_fields() {
        let Decision::Configure(merged) = decide(Some(&live_deployment()), &file_deployment(5)) else {
            panic!("expected configured");
        };
        assert_eq!(merged["spec"]["replicas"], 5);
        assert_eq!(
            merged["metadata"]["resourceVersion"], "7",
            "written with the version read"
        );
        let c = &merged["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["imagePullPolicy"], "IfNotPresent",
            "server defaults inside lists survive"
        );
        assert_eq!(c["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn get_output_applies_back_unchanged() {
        // what `get -o yaml` prints, status and server metadata included,
        // even after the status moved on
        let mut from_get = live_deployment();
        from_get["metadata"]["resourceVersion"] = json!("3");
        from_get["status"]["readyReplicas"] = json!(1);
        assert_eq!(
            decide(Some(&live_deployment()), &desired_fields(from_get)),
            Decision::Unchanged
        );
    }

    #[test]
    fn service_ports_keep_allocated_node_ports() {
        let live = json!({"kind": "Service", "spec": {"type": "NodePort", "clusterIP": "10.96.0.7",
            "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}]}});
        let file = desired_fields(json!({"kind": "Service", "spec": {"type": "NodePort",
            "ports": [{"port": 80, "targetPort": 8080}]}}));
        assert_eq!(decide(Some(&live), &file), Decision::Unchanged);
        let file = desired_fields(json!({"kind": "Service", "spec": {"type": "NodePort",
            "ports": [{"port": 80, "targetPort": 9090}]}}));
        let Decision::Configure(merged) = decide(Some(&live), &file) else {
            panic!()
        };
        assert_eq!(merged["spec"]["ports"][0]["nodePort"], 30080);
        assert_eq!(merged["spec"]["ports"][0]["targetPort"], 9090);
        assert_eq!(merged["spec"]["clusterIP"], "10.96.0.7");
    }

    #[test]
    fn lists_match_elements_by_name() {
        let live = json!({"c": [{"name": "a", "x": 1, "d": "def"}, {"name": "b", "x": 2, "d": "def"}]});
        let file = json!({"c": [{"name": "b", "x": 2}, {"name": "a", "x": 1}]});
        // reordering is a change, but each element keeps its server fields
        let Decision::Configure(merged) = decide(Some(&live), &file) else {
            panic!()
        };
        assert_eq!(
            merged,
            json!({"c": [{"name": "b", "x": 2, "d": "def"}, {"name": "a", "x": 1, "d": "def"}]})
        );
        // a new element is taken as written
        let file = json!({"c": [{"name": "a", "x": 1}, {"name": "b", "x": 2}, {"name": "z"}]});
        let Decision::Configure(merged) = decide(Some(&live), &file) else {
            panic!()
        };
        assert_eq!(merged["c"][2], json!({"name": "z"}));
        assert_eq!(merged["c"][0]["d"], "def");
    }

    #[test]
    fn scalar_lists_are_replaced() {
        let live = json!({"args": ["a", "b"]});
        assert_eq!(
            decide(Some(&live), &json!({"args": ["a", "b"]})),
            Decision::Unchanged
        );
        assert_eq!(
            decide(Some(&live), &json!({"args": ["a"]})),
            Decision::Configure(json!({"args": ["a"]}))
        );
    }

    #[test]
    fn secret_string_data_compares_as_data() {
        let live = json!({"kind": "Secret", "type": "Opaque", "data": {"password": "aHVudGVyMg=="}});
        let file = desired_fields(json!({"kind": "Secret", "stringData": {"password": "hunter2"}}));
        assert_eq!(decide(Some(&live), &file), Decision::Unchanged);
    }
}
