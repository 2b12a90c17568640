//! Objects built from command-line flags, as kubectl's generators build
//! them (`create deployment|job|cronjob|configmap|secret|serviceaccount|
//! namespace`, `run`, `expose`): the same names, labels and defaults, so a
//! `--dry-run=client -o yaml` of either tool reads alike. Pure functions;
//! the verbs send or print what they return.

use crate::error::CtlError;
use crate::objects;
use crate::printers::{self, OutputFormat};
use rkube_api::{DynObject, Resource};
use serde_json::{json, Map, Value};
use std::io::Write;

/// kubectl's `--dry-run` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DryRun {
    /// Send the object (the default).
    None,
    /// Print the object without sending it.
    Client,
}

/// What the generator verbs share: print instead of sending, and how.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputFlags {
    /// `client` prints the object without sending it (with `-o yaml` to
    /// start a manifest); `none` sends it.
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
    /// Print the created object as yaml, json or name.
    #[arg(short = 'o', long = "output")]
    pub output: Option<OutputFormat>,
}

impl OutputFlags {
    /// Puts `obj` in the context's namespace (when its kind has one), sends it
    /// (unless a dry run) and reports it the way kubectl does:
    /// `deployment.apps/web created`, or the object in the `-o` format.
    pub async fn create(
        &self,
        ctx: &crate::cmd::Context,
        obj: DynObject,
        out: &mut dyn Write,
    ) -> Result<DynObject, CtlError> {
        let obj = if obj.info.namespaced {
            objects::with_namespace(&obj, &ctx.namespace).map_err(CtlError::usage)?
        } else {
            obj
        };
        let obj = if self.dry_run == DryRun::Client {
            obj
        } else {
            ctx.connect().await?.create(&obj).await?
        };
        match &self.output {
            None | Some(OutputFormat::Table | OutputFormat::Wide) => {
                let suffix = if self.dry_run == DryRun::Client {
                    " (dry run)"
                } else {
                    ""
                };
                writeln!(out, "{} created{suffix}", obj.display_name())?;
            }
            Some(format) => printers::print_objects(out, format, std::slice::from_ref(&obj), false, false)?,
        }
        Ok(obj)
    }
}

/// Builds a typed object of kind `K` from its JSON, so a mistake in a
/// generator shows as the field it got wrong.
pub fn object<K: Resource>(json: Value) -> Result<DynObject, CtlError> {
    objects::from_json(K::info(), json).map_err(|e| CtlError::usage(format!("internal: {e}")))
}

/// `NAME=VALUE` pairs (labels, env, literals); the value may be empty
/// and may contain `=`.
pub fn key_value(text: &str, what: &str) -> Result<(String, String), CtlError> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(CtlError::usage(format!(
            "invalid {what} {text:?}: expected KEY=VALUE"
        ))),
    }
}

/// kubectl names a container after its image: the last path element,
/// without tag or digest, made a DNS label (`docker.io/library/nginx:1.25`
/// gives `nginx`).
pub fn container_name(image: &str) -> String {
    let base = image.rsplit('/').next().unwrap_or(image);
    let base = base.split('@').next().unwrap_or(base);
    let base = base.split(':').next().unwrap_or(base);
    let name: String = base
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = name.trim_matches('-');
    if name.is_empty() {
        "container".into()
    } else {
        name.chars().take(63).collect()
    }
}

/// The container part of a generated workload: image, optional command
/// (`-- CMD ARGS`, which kubectl makes the container's `command`), port.
fn container(name: &str, image: &str, command: &[String], port: Option<i32>) -> Value {
    let mut c = json!({"name": name, "image": image, "resources": {}});
    if !command.is_empty() {
        c["command"] = json!(command);
    }
    if let Some(p) = port {
        c["ports"] = json!([{"containerPort": p}]);
    }
    c
}

/// `create deployment NAME --image=IMG [--image=IMG2] [--replicas=N]
/// [--port=P] [-- CMD]`: label `app=NAME` on everything, one container
/// per image named after it.
pub fn deployment(
    name: &str,
    images: &[String],
    replicas: i32,
    port: Option<i32>,
    command: &[String],
) -> Result<DynObject, CtlError> {
    if images.is_empty() {
        return Err(CtlError::usage(
            "create deployment needs at least one --image (e.g. --image=nginx)",
        ));
    }
    if images.len() > 1 && !command.is_empty() {
        return Err(CtlError::usage(
            "cannot specify multiple --image options and a command",
        ));
    }
    let containers: Vec<Value> = images
        .iter()
        .map(|i| container(&container_name(i), i, command, port))
        .collect();
    object::<rkube_api::apps::v1::Deployment>(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": containers},
            },
        },
    }))
}

/// `create job NAME --image=IMG [-- CMD]`: one container named after the
/// job, never restarted in place (the Job controller retries).
pub fn job(name: &str, image: &str, command: &[String]) -> Result<DynObject, CtlError> {
    object::<rkube_api::batch::v1::Job>(json!({
        "metadata": {"name": name},
        "spec": {"template": {
            "metadata": {},
            "spec": {"containers": [container(name, image, command, None)], "restartPolicy": "Never"},
        }},
    }))
}

/// `create job NAME --from=cronjob/CJ`: the CronJob's job template run
/// now, owned by the CronJob and marked as started by hand, as kubectl
/// does (`cronjob.kubernetes.io/instantiate: manual`).
pub fn job_from_cronjob(name: &str, cron: &rkube_api::batch::v1::CronJob) -> Result<DynObject, CtlError> {
    let template = cron
        .spec
        .as_ref()
        .and_then(|s| s.job_template.as_ref())
        .cloned()
        .unwrap_or_default();
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut annotations = Map::new();
    annotations.insert("cronjob.kubernetes.io/instantiate".into(), json!("manual"));
    for (k, v) in &tmeta.annotations {
        annotations.insert(k.clone(), json!(v));
    }
    let meta = cron.metadata();
    let spec = serde_json::to_value(template.spec.unwrap_or_default())
        .map_err(|e| CtlError::usage(format!("internal: {e}")))?;
    object::<rkube_api::batch::v1::Job>(json!({
        "metadata": {
            "name": name,
            "annotations": annotations,
            "labels": tmeta.labels,
            "ownerReferences": [{
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "name": meta.name,
                "uid": meta.uid,
                "controller": true,
            }],
        },
        "spec": spec,
    }))
}

/// `create cronjob NAME --image=IMG --schedule=S [--restart=P] [-- CMD]`.
pub fn cronjob(
    name: &str,
    image: &str,
    schedule: &str,
    restart: &str,
    command: &[String],
) -> Result<DynObject, CtlError> {
    if schedule.trim().is_empty() {
        return Err(CtlError::usage(
            "create cronjob needs --schedule (e.g. --schedule='*/5 * * * *')",
        ));
    }
    if !matches!(restart, "OnFailure" | "Never") {
        return Err(CtlError::usage(format!(
            "invalid --restart={restart:?} for a cronjob: use OnFailure or Never"
        )));
    }
    object::<rkube_api::batch::v1::CronJob>(json!({
        "metadata": {"name": name},
        "spec": {
            "schedule": schedule,
            "jobTemplate": {
                "metadata": {"name": name},
                "spec": {"template": {
                    "metadata": {},
                    "spec": {"containers": [container(name, image, command, None)], "restartPolicy": restart},
                }},
            },
        },
    }))
}

/// The data of a ConfigMap or Secret from `--from-literal=K=V`,
/// `--from-file=[KEY=]PATH` (a directory adds each regular file in it)
/// and `--from-env-file=PATH` (`KEY=VALUE` lines, `#` comments).
pub fn data_from(
    literals: &[String],
    files: &[String],
    env_files: &[String],
) -> Result<Vec<(String, Vec<u8>)>, CtlError> {
    let mut data: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |key: String, value: Vec<u8>, from: &str| -> Result<(), CtlError> {
        if !rkube_api::validation::is_config_map_key(&key) {
            return Err(CtlError::usage(format!(
                "{key:?} (from {from}) is not a valid key name: keys consist of alphanumerics, '-', '_' or '.'"
            )));
        }
        if data.iter().any(|(k, _)| *k == key) {
            return Err(CtlError::usage(format!(
                "cannot add key {key:?} (from {from}): another key by that name already exists"
            )));
        }
        data.push((key, value));
        Ok(())
    };
    for l in literals {
        let (k, v) = key_value(l, "--from-literal")?;
        add(k, v.into_bytes(), &format!("--from-literal={l}"))?;
    }
    for f in files {
        let (key, path) = match f.split_once('=') {
            Some((k, p)) if !k.is_empty() => (Some(k.to_string()), p.to_string()),
            _ => (None, f.clone()),
        };
        let read = |p: &std::path::Path| {
            std::fs::read(p)
                .map_err(|e| CtlError::usage(format!("--from-file={f}: cannot read {}: {e}", p.display())))
        };
        let path = std::path::Path::new(&path);
        if path.is_dir() {
            if key.is_some() {
                return Err(CtlError::usage(format!(
                    "--from-file={f}: a key cannot be given for a directory"
                )));
            }
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| CtlError::usage(format!("--from-file={f}: {e}")))?
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.path())
                .collect();
            entries.sort();
            for p in entries {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                add(name, read(&p)?, &format!("--from-file={f}"))?;
            }
        } else {
            let name = match key {
                Some(k) => k,
                None => path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            add(name, read(path)?, &format!("--from-file={f}"))?;
        }
    }
    for f in env_files {
        let text =
            std::fs::read_to_string(f).map_err(|e| CtlError::usage(format!("--from-env-file={f}: {e}")))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = key_value(line, &format!("line {} of {f}", n + 1))?;
            add(k, v.into_bytes(), &format!("--from-env-file={f}"))?;
        }
    }
    Ok(data)
}

/// `create configmap NAME --from-...`: text values in `data`, the rest
/// in `binaryData`, as kubectl sorts them.
pub fn configmap(name: &str, data: Vec<(String, Vec<u8>)>) -> Result<DynObject, CtlError> {
    use base64::Engine;
    let mut text = Map::new();
    let mut binary = Map::new();
    for (k, v) in data {
        match String::from_utf8(v) {
            Ok(s) => {
                text.insert(k, json!(s));
            }
            Err(e) => {
                binary.insert(
                    k,
                    json!(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
                );
            }
        }
    }
    let mut obj = json!({"metadata": {"name": name}});
    if !text.is_empty() {
        obj["data"] = Value::Object(text);
    }
    if !binary.is_empty() {
        obj["binaryData"] = Value::Object(binary);
    }
    object::<rkube_api::core::v1::ConfigMap>(obj)
}

/// `create secret generic|tls|docker-registry NAME ...`: `data` holds
/// the values base64-encoded, as in every Secret.
pub fn secret(name: &str, kind: &str, data: Vec<(String, Vec<u8>)>) -> Result<DynObject, CtlError> {
    use base64::Engine;
    let encoded: Map<String, Value> = data
        .into_iter()
        .map(|(k, v)| (k, json!(base64::engine::general_purpose::STANDARD.encode(v))))
        .collect();
    let mut obj = json!({"metadata": {"name": name}, "data": encoded});
    if !kind.is_empty() {
        obj["type"] = json!(kind);
    }
    object::<rkube_api::core::v1::Secret>(obj)
}

/// The `.dockerconfigjson` of `create secret docker-registry`.
pub fn docker_config(server: &str, user: &str, password: &str, email: &str) -> Vec<u8> {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut entry = json!({"username": user, "password": password, "auth": auth});
    if !email.is_empty() {
        entry["email"] = json!(email);
    }
    json!({"auths": {server: entry}}).to_string().into_bytes()
}

pub fn service_account(name: &str) -> Result<DynObject, CtlError> {
    object::<rkube_api::core::v1::ServiceAccount>(json!({"metadata": {"name": name}}))
}

pub fn namespace(name: &str) -> Result<DynObject, CtlError> {
    object::<rkube_api::core::v1::Namespace>(json!({"metadata": {"name": name}, "spec": {}}))
}

/// What `run` puts in its pod.
#[derive(Debug, Default)]
pub struct PodFlags<'a> {
    pub image: &'a str,
    pub labels: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    pub port: Option<i32>,
    pub restart: &'a str,
    /// `--command`: the arguments after `--` are the command, not its
    /// arguments.
    pub command: bool,
    pub args: &'a [String],
}

/// `run NAME --image=IMG ...`: one pod labelled `run=NAME` (or the given
/// labels), one container named after the pod.
pub fn pod(name: &str, f: &PodFlags<'_>) -> Result<DynObject, CtlError> {
    if f.image.is_empty() {
        return Err(CtlError::usage("run needs --image (e.g. --image=busybox)"));
    }
    if !matches!(f.restart, "Always" | "OnFailure" | "Never") {
        return Err(CtlError::usage(format!(
            "invalid --restart={:?}: use Always, OnFailure or Never",
            f.restart
        )));
    }
    let labels: Map<String, Value> = if f.labels.is_empty() {
        [("run".to_string(), json!(name))].into_iter().collect()
    } else {
        f.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect()
    };
    let mut c = json!({"name": name, "image": f.image, "resources": {}});
    if !f.args.is_empty() {
        c[if f.command { "command" } else { "args" }] = json!(f.args);
    }
    if !f.env.is_empty() {
        c["env"] = f
            .env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
    }
    if let Some(p) = f.port {
        c["ports"] = json!([{"containerPort": p}]);
    }
    object::<rkube_api::core::v1::Pod>(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [c], "restartPolicy": f.restart, "dnsPolicy": "ClusterFirst"},
    }))
}

/// What `expose` puts in its Service.
#[derive(Debug, Default)]
pub struct ServiceFlags {
    pub name: String,
    pub selector: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    /// (port, target port, protocol); several get names `port-1`, ...
    pub ports: Vec<(i32, Value, String)>,
    pub service_type: String,
}

pub fn service(f: &ServiceFlags) -> Result<DynObject, CtlError> {
    let named = f.ports.len() > 1;
    let ports: Vec<Value> = f
        .ports
        .iter()
        .enumerate()
        .map(|(i, (port, target, protocol))| {
            let mut p = json!({"port": port, "protocol": protocol, "targetPort": target});
            if named {
                p["name"] = json!(format!("port-{}", i + 1));
            }
            p
        })
        .collect();
    let mut spec = json!({
        "ports": ports,
        "selector": f.selector.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<_, _>>(),
    });
    if !f.service_type.is_empty() {
        spec["type"] = json!(f.service_type);
    }
    let mut meta = json!({"name": f.name});
    if !f.labels.is_empty() {
        meta["labels"] = f
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect::<Map<_, _>>()
            .into();
    }
    object::<rkube_api::core::v1::Service>(json!({"metadata": meta, "spec": spec}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_come_from_images() {
        assert_eq!(container_name("nginx"), "nginx");
        assert_eq!(container_name("docker.io/library/nginx:1.25"), "nginx");
        assert_eq!(
            container_name("127.0.0.1:5000/tools/busy_box@sha256:abc"),
            "busy-box"
        );
        assert_eq!(container_name("registry:5000/App:latest"), "app");
    }

    #[test]
    fn a_deployment_reads_like_kubectls() {
        let d = deployment("web", &["nginx:1.25".into()], 3, Some(80), &[]).unwrap();
        let v = d.to_json().unwrap();
        assert_eq!(v["metadata"]["labels"]["app"], "web");
        assert_eq!(v["spec"]["replicas"], 3);
        assert_eq!(v["spec"]["selector"]["matchLabels"]["app"], "web");
        assert_eq!(v["spec"]["template"]["metadata"]["labels"]["app"], "web");
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            (c["name"].as_str(), c["image"].as_str()),
            (Some("nginx"), Some("nginx:1.25"))
        );
        assert_eq!(c["ports"][0]["containerPort"], 80);
        assert!(deployment("web", &[], 1, None, &[]).is_err());
        let two = ["a".to_string(), "b".to_string()];
        assert!(deployment("web", &two, 1, None, &["sh".into()]).is_err());
    }

    #[test]
    fn jobs_and_cronjobs_never_restart_in_place_unless_asked() {
        let j = job("pi", "busybox", &["sh".into(), "-c".into(), "exit 0".into()]).unwrap();
        let v = j.to_json().unwrap();
        assert_eq!(v["spec"]["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["command"][2],
            "exit 0"
        );
        let c = cronjob("tick", "busybox", "*/1 * * * *", "OnFailure", &[]).unwrap();
        let v = c.to_json().unwrap();
        assert_eq!(v["spec"]["schedule"], "*/1 * * * *");
        assert_eq!(
            v["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"],
            "OnFailure"
        );
        assert!(cronjob("tick", "busybox", "", "OnFailure", &[]).is_err());
        assert!(cronjob("tick", "busybox", "@hourly", "Always", &[]).is_err());
    }

    #[test]
    fn a_job_from_a_cronjob_is_owned_by_it_and_marked_manual() {
        let c = cronjob("tick", "busybox", "@hourly", "OnFailure", &[]).unwrap();
        let mut cron: rkube_api::batch::v1::CronJob = c.decode().unwrap();
        cron.metadata_mut().uid = "u-1".into();
        let j = job_from_cronjob("tick-now", &cron).unwrap().to_json().unwrap();
        assert_eq!(
            j["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
            "manual"
        );
        assert_eq!(j["metadata"]["ownerReferences"][0]["kind"], "CronJob");
        assert_eq!(j["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(j["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(j["spec"]["template"]["spec"]["containers"][0]["name"], "tick");
    }

    #[test]
    fn config_data_from_literals_files_and_env_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.conf"), "x=1\n").unwrap();
        std::fs::write(dir.path().join("bin"), [0xff, 0x00]).unwrap();
        let env = dir.path().join("env");
        std::fs::write(&env, "# comment\nA=1\n\nB=two=2\n").unwrap();
        let file = format!("{}", dir.path().join("app.conf").display());
        let data = data_from(
            &["greeting=hello".into()],
            &[
                format!("renamed={file}"),
                format!("{}", dir.path().join("bin").display()),
            ],
            &[format!("{}", env.display())],
        )
        .unwrap();
        let keys: Vec<&str> = data.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["greeting", "renamed", "bin", "A", "B"]);
        let cm = configmap("c", data.clone()).unwrap().to_json().unwrap();
        assert_eq!(cm["data"]["B"], "two=2");
        assert_eq!(cm["binaryData"]["bin"], "/wA=");
        let s = secret("s", "", data).unwrap().to_json().unwrap();
        assert_eq!(s["data"]["greeting"], "aGVsbG8=");
        // a key twice, a bad key, a missing file: each named
        let e = data_from(&["a=1".into(), "a=2".into()], &[], &[]).unwrap_err();
        assert!(e.to_string().contains("\"a\""), "{e}");
        let e = data_from(&["a b=1".into()], &[], &[]).unwrap_err();
        assert!(e.to_string().contains("not a valid key"), "{e}");
        let e = data_from(&[], &["/nonexistent/x".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x"), "{e}");
    }

    #[test]
    fn run_makes_one_pod() {
        let args = ["sleep".to_string(), "3600".to_string()];
        let f = PodFlags {
            image: "busybox",
            env: vec![("A".into(), "1".into())],
            restart: "Never",
            args: &args,
            ..Default::default()
        };
        let p = pod("box", &f).unwrap().to_json().unwrap();
        assert_eq!(p["metadata"]["labels"]["run"], "box");
        assert_eq!(p["spec"]["restartPolicy"], "Never");
        assert_eq!(p["spec"]["containers"][0]["args"][0], "sleep");
        assert_eq!(p["spec"]["containers"][0]["env"][0]["value"], "1");
        let f = PodFlags { command: true, ..f };
        let p = pod("box", &f).unwrap().to_json().unwrap();
        assert_eq!(p["spec"]["containers"][0]["command"][0], "sleep");
        assert!(pod(
            "box",
            &PodFlags {
                restart: "Sometimes",
                ..f
            }
        )
        .is_err());
    }

    #[test]
    fn services_name_ports_only_when_several() {
        let mut f = ServiceFlags {
            name: "web".into(),
            selector: vec![("app".into(), "web".into())],
            ports: vec![(80, json!(8080), "TCP".into())],
            service_type: "NodePort".into(),
            ..Default::default()
        };
        let s = service(&f).unwrap().to_json().unwrap();
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 8080);
        assert!(s["spec"]["ports"][0].get("name").is_none());
        assert_eq!(s["spec"]["type"], "NodePort");
        f.ports.push((443, json!("https"), "TCP".into()));
        let s = service(&f).unwrap().to_json().unwrap();
        assert_eq!(s["spec"]["ports"][1]["name"], "port-2");
        assert_eq!(s["spec"]["ports"][1]["targetPort"], "https");
    }
}
