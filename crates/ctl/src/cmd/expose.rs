//! `rkubectl expose deployment|replicaset|statefulset|pod|service NAME
//! [--port=P] [--target-port=T] [--protocol=TCP] [--type=T] [--name=N]`:
//! a Service in front of the object's pods, its selector and ports taken
//! from the object as kubectl does.

use crate::args::parse_targets;
use crate::cmd::generate::{self, OutputFlags, ServiceFlags};
use crate::cmd::Context;
use crate::error::CtlError;
use serde_json::{json, Value};
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct ExposeArgs {
    /// `KIND NAME` or `KIND/NAME`.
    #[arg(required = true, num_args = 1..=2)]
    pub target: Vec<String>,
    /// The Service's port (default: the container or service ports).
    #[arg(long)]
    pub port: Option<i32>,
    /// The pods' port, a number or a name (default: --port).
    #[arg(long)]
    pub target_port: Option<String>,
    #[arg(long, default_value = "TCP")]
    pub protocol: String,
    /// ClusterIP, NodePort or LoadBalancer.
    #[arg(long = "type", default_value = "")]
    pub service_type: String,
    /// The Service's name (default: the object's).
    #[arg(long)]
    pub name: Option<String>,
    /// The pods to send to, `k=v,...` (default: the object's selector).
    #[arg(long)]
    pub selector: Option<String>,
    #[command(flatten)]
    pub output: OutputFlags,
}

pub async fn run(ctx: &Context, args: &ExposeArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let targets = parse_targets(&args.target)?;
    let [target] = targets.as_slice() else {
        return Err(CtlError::usage("expose takes one object: KIND NAME or KIND/NAME"));
    };
    let [name] = target.names.as_slice() else {
        return Err(CtlError::usage("expose takes one object: KIND NAME or KIND/NAME"));
    };
    let server = ctx.connect().await?;
    let obj = server
        .get(target.info, &ctx.namespace, name)
        .await?
        .to_json()
        .map_err(CtlError::usage)?;
    let what = format!("{}/{name}", target.info.singular);
    let mut flags = ServiceFlags {
        name: args.name.clone().unwrap_or_else(|| name.clone()),
        service_type: args.service_type.clone(),
        labels: string_map(&obj["metadata"]["labels"]),
        ..Default::default()
    };
    flags.selector = match &args.selector {
        Some(s) => s
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| generate::key_value(p, "--selector"))
            .collect::<Result<_, _>>()?,
        None => selector(target.info.kind, &obj)
            .map_err(|e| CtlError::usage(format!("cannot expose {what}: {e}")))?,
    };
    let target_port = |port: i32| match &args.target_port {
        Some(t) => t.parse::<i32>().map(|n| json!(n)).unwrap_or_else(|_| json!(t)),
        None => json!(port),
    };
    flags.ports = match args.port {
        Some(p) => vec![(p, target_port(p), args.protocol.clone())],
        None => ports(target.info.kind, &obj)
            .into_iter()
            .map(|(p, t, proto)| match &args.target_port {
                Some(_) => (p, target_port(p), proto),
                None => (p, t, proto),
            })
            .collect(),
    };
    if flags.ports.is_empty() {
        return Err(CtlError::usage(format!(
            "couldn't find port via --port flag or introspection: {what} declares no ports; give --port"
        )));
    }
    let svc = generate::service(&flags)?;
    if args.output.output.is_none() {
        // kubectl says "exposed" rather than "created"
        let mut sink = Vec::new();
        let created = args.output.create(ctx, svc, &mut sink).await?;
        let dry = if args.output.dry_run == generate::DryRun::Client {
            " (dry run)"
        } else {
            ""
        };
        writeln!(out, "{} exposed{dry}", created.display_name())?;
        return Ok(());
    }
    args.output.create(ctx, svc, out).await.map(|_| ())
}

fn string_map(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The pods the object stands for: a workload's matchLabels (a Service
/// selector is a plain map, so matchExpressions cannot be carried over), a
/// pod's labels, a service's selector.
fn selector(kind: &str, obj: &Value) -> Result<Vec<(String, String)>, String> {
    let found = match kind {
        "Pod" => string_map(&obj["metadata"]["labels"]),
        "Service" => string_map(&obj["spec"]["selector"]),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            let sel = &obj["spec"]["selector"];
            if sel["matchExpressions"].as_array().is_some_and(|e| !e.is_empty()) {
                return Err(
                    "its selector has matchExpressions, which a Service cannot express; give --selector"
                        .into(),
                );
            }
            string_map(&sel["matchLabels"])
        }
        other => {
            return Err(format!(
                "a {other} cannot be exposed; expose its pods' owner or a pod"
            ))
        }
    };
    if found.is_empty() {
        return Err("it selects no labels; give --selector".into());
    }
    Ok(found)
}

/// (port, targetPort, protocol) from the containers' ports, or a
/// service's ports.
fn ports(kind: &str, obj: &Value) -> Vec<(i32, Value, String)> {
    let proto = |p: &Value| p["protocol"].as_str().unwrap_or("TCP").to_string();
    if kind == "Service" {
        return obj["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p["port"].as_i64()? as i32,
                    p.get("targetPort").cloned().unwrap_or(p["port"].clone()),
                    proto(p),
                ))
            })
            .collect();
    }
    let spec = if kind == "Pod" {
        &obj["spec"]
    } else {
        &obj["spec"]["template"]["spec"]
    };
    spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .filter_map(|p| {
            let n = p["containerPort"].as_i64()? as i32;
            Some((n, json!(n), proto(p)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_ports_come_from_the_object() {
        let deploy = json!({"metadata": {"labels": {"app": "web"}}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"ports": [{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}]}]}}}});
        assert_eq!(
            selector("Deployment", &deploy).unwrap(),
            [("app".to_string(), "web".to_string())]
        );
        assert_eq!(
            ports("Deployment", &deploy),
            [
                (8080, json!(8080), "TCP".to_string()),
                (53, json!(53), "UDP".to_string())
            ]
        );
        let exprs = json!({"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}});
        assert!(selector("Deployment", &exprs).unwrap_err().contains("--selector"));
        assert!(selector("Job", &deploy).is_err());
        let pod = json!({"metadata": {"labels": {"run": "x"}}, "spec": {"containers": [{}]}});
        assert_eq!(
            selector("Pod", &pod).unwrap(),
            [("run".to_string(), "x".to_string())]
        );
        assert!(ports("Pod", &pod).is_empty());
    }
}
