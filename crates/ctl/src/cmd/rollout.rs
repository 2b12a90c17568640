//! `rkubectl rollout status|history|undo|restart KIND/NAME` for deployments, daemonsets
//! and statefulsets, and `pause|resume deployment/NAME`, with kubectl's wording. Rolling
//! back copies an old template into the workload: a Deployment's from its ReplicaSet (the
//! deployment controller then re-uses that ReplicaSet and gives it the next revision), a
//! DaemonSet's or StatefulSet's from its ControllerRevision (renumbered the same way).

use crate::args::parse_targets;
use crate::cmd::Context;
use crate::error::CtlError;
use crate::server::ctl_error;
use futures::StreamExt;
use rkube_api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use rkube_api::core::v1::PodTemplateSpec;
use rkube_api::Resource;
use rkube_client::{Api, Client, ListParams, WatchEvent, WatchParams};
use std::io::Write;
use std::time::Duration;

const REVISION: &str = "deployment.kubernetes.io/revision";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
const HASH_LABEL: &str = "pod-template-hash";

#[derive(Debug, clap::Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub action: RolloutAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum RolloutAction {
    /// Wait until the rollout finishes, printing its progress.
    Status {
        /// `deployment/NAME` or `deployment NAME`.
        target: Vec<String>,
        /// Wait for the rollout (false: print the state once).
        #[arg(short = 'w', long, default_value_t = true, action = clap::ArgAction::Set)]
        watch: bool,
        /// Give up after this long (`30s`, `5m`; 0 waits forever).
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// List the revisions.
    History { target: Vec<String> },
    /// Go back to the previous revision (or --to-revision).
    Undo {
        target: Vec<String>,
        /// The revision to go back to; 0 is the previous one.
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
    /// Restart every pod by rolling out the same template again.
    Restart { target: Vec<String> },
    /// Stop rolling out template changes.
    Pause { target: Vec<String> },
    /// Roll out template changes again.
    Resume { target: Vec<String> },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 30s, 5m)"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => Err(format!("invalid duration {s:?} (e.g. 30s, 5m)")),
    }
}

/// The one Deployment named by `deployment/NAME` or `deployment NAME`.
pub(crate) fn deployment_name(target: &[String], verb: &str) -> Result<String, CtlError> {
    let targets = parse_targets(target)?;
    match targets.as_slice() {
        [t] if t.info.kind == "Deployment" && t.names.len() == 1 => Ok(t.names[0].clone()),
        [t] if t.info.kind != "Deployment" => Err(CtlError::usage(format!(
            "{verb} is not supported for {}; use deployment/NAME",
            t.info.plural
        ))),
        _ => Err(CtlError::usage(format!(
            "{verb} needs exactly one deployment/NAME"
        ))),
    }
}

pub async fn run(ctx: &Context, args: &RolloutArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let client = ctx.client()?;
    let url = ctx.server_url.clone();
    let err = move |e: rkube_client::Error| ctl_error(e, &url);
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ctx.namespace);
    match &args.action {
        RolloutAction::Status {
            target,
            watch,
            timeout,
        } => {
            let targets = parse_targets(target)?;
            let (kind, name) = match targets.as_slice() {
                [t] if t.names.len() == 1 => (t.info.kind, t.names[0].clone()),
                _ => return Err(CtlError::usage("rollout status needs exactly one KIND/NAME")),
            };
            let ns = &ctx.namespace;
            let wait = async {
                match kind {
                    "Deployment" => status(&api, &name, *watch, out, status_line).await,
                    "DaemonSet" => {
                        status(
                            &Api::namespaced(client.clone(), ns),
                            &name,
                            *watch,
                            out,
                            daemon_set_status_line,
                        )
                        .await
                    }
                    "StatefulSet" => {
                        status(
                            &Api::namespaced(client.clone(), ns),
                            &name,
                            *watch,
                            out,
                            stateful_set_status_line,
                        )
                        .await
                    }
                    _ => Err(CtlError::usage(format!(
                        "rollout status is not supported for {kind}; use deployment, daemonset or statefulset"
                    ))),
                }
            };
            if timeout.is_zero() {
                wait.await
            } else {
                tokio::time::timeout(*timeout, wait)
                    .await
                    .map_err(|_| CtlError::usage("timed out waiting for the condition"))?
            }
        }
        RolloutAction::History { target } => {
            let (workload, name) = workload_target(target, "rollout history")?;
            let (_, mut revisions) = history(&client, &ctx.namespace, workload, &name)
                .await
                .map_err(&err)?;
            revisions.sort_by_key(|r| r.number);
            writeln!(out, "{}/{name} ", workload.resource())?;
            writeln!(out, "REVISION  CHANGE-CAUSE")?;
            for r in revisions {
                writeln!(out, "{:<9} {}", r.number, r.cause)?;
            }
            writeln!(out)?;
            Ok(())
        }
        RolloutAction::Undo { target, to_revision } => {
            let (workload, name) = workload_target(target, "rollout undo")?;
            let (current, revisions) = history(&client, &ctx.namespace, workload, &name)
                .await
                .map_err(&err)?;
            let what = format!("{} {name:?}", workload.kind().to_lowercase());
            let target = rollback_target(&what, &current, &revisions, *to_revision)?;
            if target.template == current.template {
                writeln!(
                    out,
                    "{}/{name} skipped rollback (current template already matches revision {})",
                    workload.resource(),
                    target.number
                )?;
                return Ok(());
            }
            let template = Some(target.template.clone());
            let ns = &ctx.namespace;
            let result = match workload {
                Workload::Deployment => api
                    .replace_with(&name, |mut d| {
                        d.spec.get_or_insert_with(Default::default).template = template.clone();
                        d
                    })
                    .await
                    .map(drop),
                Workload::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), ns)
                    .replace_with(&name, |mut d| {
                        d.spec.get_or_insert_with(Default::default).template = template.clone();
                        d
                    })
                    .await
                    .map(drop),
                Workload::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
                    .replace_with(&name, |mut s| {
                        s.spec.get_or_insert_with(Default::default).template = template.clone();
                        s
                    })
                    .await
                    .map(drop),
            };
            result.map_err(&err)?;
            writeln!(out, "{}/{name} rolled back", workload.resource())?;
            Ok(())
        }
        RolloutAction::Restart { target } => {
            let (workload, name) = workload_target(target, "rollout restart")?;
            let now = rkube_api::time::now();
            let patch =
                serde_json::json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}});
            let ns = &ctx.namespace;
            let result = match workload {
                Workload::Deployment => {
                    let d = api.get(&name).await.map_err(&err)?;
                    if d.spec.as_ref().is_some_and(|s| s.paused) {
                        return Err(CtlError::usage(format!(
                            "deployments.apps \"{name}\" can't restart paused deployment (run rollout resume first)"
                        )));
                    }
                    api.patch_merge(&name, &patch).await.map(drop)
                }
                Workload::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), ns)
                    .patch_merge(&name, &patch)
                    .await
                    .map(drop),
                Workload::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
                    .patch_merge(&name, &patch)
                    .await
                    .map(drop),
            };
            result.map_err(&err)?;
            writeln!(out, "{}/{name} restarted", workload.resource())?;
            Ok(())
        }
        RolloutAction::Pause { target } | RolloutAction::Resume { target } => {
            let pause = matches!(args.action, RolloutAction::Pause { .. });
            let verb = if pause { "rollout pause" } else { "rollout resume" };
            let name = deployment_name(target, verb)?;
            let d = api.get(&name).await.map_err(&err)?;
            if d.spec.as_ref().is_some_and(|s| s.paused) == pause {
                let state = if pause { "paused" } else { "resumed" };
                return Err(CtlError::usage(format!(
                    "deployments.apps \"{name}\" is already {state}"
                )));
            }
            api.patch_merge(&name, &serde_json::json!({"spec": {"paused": pause}}))
                .await
                .map_err(&err)?;
            writeln!(
                out,
                "deployment.apps/{name} {}",
                if pause { "paused" } else { "resumed" }
            )?;
            Ok(())
        }
    }
}

fn revision_of(meta: &rkube_api::meta::v1::ObjectMeta) -> i64 {
    meta.annotations
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The objects of kind `K` in `ns` whose controller is the object with `uid`: a
/// Deployment's ReplicaSets, a DaemonSet's or StatefulSet's ControllerRevisions.
async fn controlled_by<K: Resource>(client: &Client, ns: &str, uid: &str) -> rkube_client::Result<Vec<K>> {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    Ok(api
        .list_all(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|o| {
            o.metadata()
                .owner_references
                .iter()
                .any(|r| r.controller == Some(true) && r.uid == uid)
        })
        .collect())
}

/// A workload whose template `rollout history|undo|restart` act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Deployment,
    DaemonSet,
    StatefulSet,
}

impl Workload {
    fn kind(self) -> &'static str {
        match self {
            Workload::Deployment => "Deployment",
            Workload::DaemonSet => "DaemonSet",
            Workload::StatefulSet => "StatefulSet",
        }
    }

    /// As kubectl names it in what it prints: `daemonset.apps`.
    fn resource(self) -> String {
        format!("{}.apps", self.kind().to_lowercase())
    }
}

/// The one Deployment, DaemonSet or StatefulSet named by `KIND/NAME` or `KIND NAME`.
pub(crate) fn workload_target(target: &[String], verb: &str) -> Result<(Workload, String), CtlError> {
    let targets = parse_targets(target)?;
    let workload = |kind: &str| match kind {
        "Deployment" => Some(Workload::Deployment),
        "DaemonSet" => Some(Workload::DaemonSet),
        "StatefulSet" => Some(Workload::StatefulSet),
        _ => None,
    };
    match targets.as_slice() {
        [t] if t.names.len() == 1 => match workload(t.info.kind) {
            Some(w) => Ok((w, t.names[0].clone())),
            None => Err(CtlError::usage(format!(
                "{verb} is not supported for {}; use deployment, daemonset or statefulset",
                t.info.plural
            ))),
        },
        _ => Err(CtlError::usage(format!(
            "{verb} needs exactly one KIND/NAME (deployment, daemonset or statefulset)"
        ))),
    }
}

/// One template a workload has had: a Deployment's ReplicaSet, a DaemonSet's or
/// StatefulSet's ControllerRevision.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub number: i64,
    pub cause: String,
    pub template: PodTemplateSpec,
}

fn change_cause(meta: &rkube_api::meta::v1::ObjectMeta) -> String {
    meta.annotations
        .get(CHANGE_CAUSE)
        .cloned()
        .unwrap_or_else(|| "<none>".into())
}

/// The workload's current revision (number 0 when no revision holds its template yet)
/// and every revision it has.
async fn history(
    client: &Client,
    ns: &str,
    workload: Workload,
    name: &str,
) -> rkube_client::Result<(Revision, Vec<Revision>)> {
    let (meta, template) = match workload {
        Workload::Deployment => {
            let d: Deployment = Api::namespaced(client.clone(), ns).get(name).await?;
            let rss: Vec<ReplicaSet> = controlled_by(client, ns, &d.metadata().uid).await?;
            let revisions = rss
                .iter()
                .map(|rs| {
                    let mut template = rs
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.clone())
                        .unwrap_or_default();
                    if let Some(m) = template.metadata.as_mut() {
                        m.labels.remove(HASH_LABEL);
                    }
                    Revision {
                        number: revision_of(rs.metadata()),
                        cause: change_cause(rs.metadata()),
                        template,
                    }
                })
                .collect();
            let current = Revision {
                number: revision_of(d.metadata()),
                cause: change_cause(d.metadata()),
                template: d.spec.and_then(|s| s.template).unwrap_or_default(),
            };
            return Ok((current, revisions));
        }
        Workload::DaemonSet => {
            let d: DaemonSet = Api::namespaced(client.clone(), ns).get(name).await?;
            (d.metadata.unwrap_or_default(), d.spec.and_then(|s| s.template))
        }
        Workload::StatefulSet => {
            let s: StatefulSet = Api::namespaced(client.clone(), ns).get(name).await?;
            (s.metadata.unwrap_or_default(), s.spec.and_then(|s| s.template))
        }
    };
    let revisions: Vec<Revision> = controlled_by::<ControllerRevision>(client, ns, &meta.uid)
        .await?
        .into_iter()
        .filter_map(|r| {
            Some(Revision {
                number: r.revision,
                cause: change_cause(r.metadata()),
                template: rkube_api::revision::template_of(&r)?,
            })
        })
        .collect();
    let template = template.unwrap_or_default();
    let number = revisions
        .iter()
        .filter(|r| r.template == template)
        .map(|r| r.number)
        .max()
        .unwrap_or(0);
    let current = Revision {
        number,
        cause: change_cause(&meta),
        template,
    };
    Ok((current, revisions))
}

/// The revision to roll back to: `to`, or with 0 the newest one before the current.
pub fn rollback_target<'a>(
    what: &str,
    current: &Revision,
    revisions: &'a [Revision],
    to: i64,
) -> Result<&'a Revision, CtlError> {
    let to = if to == 0 {
        revisions
            .iter()
            .map(|r| r.number)
            .filter(|n| *n != current.number && *n > 0)
            .max()
            .ok_or_else(|| CtlError::usage(format!("no rollout history found for {what}")))?
    } else {
        to
    };
    revisions
        .iter()
        .find(|r| r.number == to)
        .ok_or_else(|| CtlError::usage(format!("unable to find specified revision {to} in history")))
}

/// kubectl's DeploymentStatusViewer: the line to print, and whether the
/// rollout is done.
pub fn status_line(d: &Deployment) -> Result<(String, bool), CtlError> {
    let name = d.name();
    let s = d.status.clone().unwrap_or_default();
    if d.metadata().generation > s.observed_generation {
        return Ok((
            "Waiting for deployment spec update to be observed...".into(),
            false,
        ));
    }
    if s.conditions
        .iter()
        .any(|c| c.r#type == "Progressing" && c.reason == "ProgressDeadlineExceeded")
    {
        return Err(CtlError::usage(format!(
            "deployment {name:?} exceeded its progress deadline"
        )));
    }
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if s.updated_replicas < replicas {
        return Ok((
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} out of {replicas} new replicas have been updated...",
                s.updated_replicas
            ),
            false,
        ));
    }
    if s.replicas > s.updated_replicas {
        return Ok((
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                s.replicas - s.updated_replicas
            ),
            false,
        ));
    }
    if s.available_replicas < s.updated_replicas {
        return Ok((
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} of {} updated replicas are available...",
                s.available_replicas, s.updated_replicas
            ),
            false,
        ));
    }
    Ok((format!("deployment {name:?} successfully rolled out"), true))
}

/// kubectl's rollout status of a DaemonSet.
pub fn daemon_set_status_line(ds: &DaemonSet) -> Result<(String, bool), CtlError> {
    let name = ds.name();
    let spec = ds.spec.clone().unwrap_or_default();
    if spec
        .update_strategy
        .as_ref()
        .is_some_and(|u| u.r#type == "OnDelete")
    {
        return Err(CtlError::usage(
            "rollout status is only available for RollingUpdate strategy type",
        ));
    }
    let s = ds.status.clone().unwrap_or_default();
    if ds.metadata().generation > s.observed_generation {
        return Ok((
            "Waiting for daemon set spec update to be observed...".into(),
            false,
        ));
    }
    if s.updated_number_scheduled < s.desired_number_scheduled {
        return Ok((
            format!(
                "Waiting for daemon set {name:?} rollout to finish: {} out of {} new pods have been updated...",
                s.updated_number_scheduled, s.desired_number_scheduled
            ),
            false,
        ));
    }
    if s.number_available < s.desired_number_scheduled {
        return Ok((
            format!(
                "Waiting for daemon set {name:?} rollout to finish: {} of {} updated pods are available...",
                s.number_available, s.desired_number_scheduled
            ),
            false,
        ));
    }
    Ok((format!("daemon set {name:?} successfully rolled out"), true))
}

/// kubectl's rollout status of a StatefulSet.
pub fn stateful_set_status_line(sts: &StatefulSet) -> Result<(String, bool), CtlError> {
    let spec = sts.spec.clone().unwrap_or_default();
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if strategy.r#type == "OnDelete" {
        return Err(CtlError::usage(
            "rollout status is only available for RollingUpdate strategy type",
        ));
    }
    let s = sts.status.clone().unwrap_or_default();
    if sts.metadata().generation > s.observed_generation {
        return Ok((
            "Waiting for statefulset spec update to be observed...".into(),
            false,
        ));
    }
    let replicas = spec.replicas.unwrap_or(1);
    if s.ready_replicas < replicas {
        return Ok((
            format!("Waiting for {} pods to be ready...", replicas - s.ready_replicas),
            false,
        ));
    }
    let partition = strategy.rolling_update.and_then(|r| r.partition).unwrap_or(0);
    if partition > 0 {
        if s.updated_replicas < replicas - partition {
            return Ok((
                format!(
                    "Waiting for partitioned roll out to finish: {} out of {} new pods have been updated...",
                    s.updated_replicas,
                    replicas - partition
                ),
                false,
            ));
        }
        return Ok((
            format!(
                "partitioned roll out complete: {} new pods have been updated...",
                s.updated_replicas
            ),
            true,
        ));
    }
    if s.update_revision != s.current_revision {
        return Ok((
            format!(
                "waiting for statefulset rolling update to complete {} pods at revision {}...",
                s.updated_replicas, s.update_revision
            ),
            false,
        ));
    }
    Ok((
        format!(
            "statefulset rolling update complete {} pods at revision {}...",
            s.current_replicas, s.current_revision
        ),
        true,
    ))
}

async fn status<K: Resource>(
    api: &Api<K>,
    name: &str,
    watch: bool,
    out: &mut dyn Write,
    status_line: fn(&K) -> Result<(String, bool), CtlError>,
) -> Result<(), CtlError> {
    let url = api.client().server().to_string();
    let err = |e: rkube_client::Error| ctl_error(e, &url);
    let mut last = String::new();
    loop {
        let d = api.get(name).await.map_err(err)?;
        let (line, done) = status_line(&d)?;
        if line != last {
            writeln!(out, "{line}")?;
            out.flush()?;
            last = line;
        }
        if done || !watch {
            return Ok(());
        }
        // Watch from the version read; any change to the Deployment may
        // change the line. A closed or expired watch starts over.
        let wp = WatchParams {
            field_selector: format!("metadata.name={name}"),
            resource_version: d.metadata().resource_version.clone(),
            ..Default::default()
        };
        let mut stream = api.watch(&wp).await.map_err(err)?;
        loop {
            match stream.next().await {
                Some(Ok(WatchEvent::Modified(d))) | Some(Ok(WatchEvent::Added(d))) => {
                    let (line, done) = status_line(&d)?;
                    if line != last {
                        writeln!(out, "{line}")?;
                        out.flush()?;
                        last = line;
                    }
                    if done {
                        return Ok(());
                    }
                }
                Some(Ok(WatchEvent::Deleted(_))) => {
                    return Err(CtlError::usage(format!(
                        "{} {name:?} was deleted",
                        K::info().singular
                    )));
                }
                Some(Ok(WatchEvent::Bookmark(_))) => {}
                Some(Err(_)) | None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::apps::v1::{DeploymentSpec, DeploymentStatus};

    fn d(generation: i32, status: DeploymentStatus) -> Deployment {
        let mut d = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(3),
                ..Default::default()
            }),
            status: Some(status),
            ..Default::default()
        };
        d.metadata_mut().name = "web".into();
        d.metadata_mut().generation = generation;
        d
    }

    #[test]
    fn status_lines_match_kubectl() {
        let line = |d: &Deployment| status_line(d).unwrap().0;
        assert_eq!(
            line(&d(
                2,
                DeploymentStatus {
                    observed_generation: 1,
                    ..Default::default()
                }
            )),
            "Waiting for deployment spec update to be observed..."
        );
        let s = DeploymentStatus {
            observed_generation: 1,
            replicas: 3,
            updated_replicas: 3,
            available_replicas: 1,
            ..Default::default()
        };
        assert_eq!(
            line(&d(1, s)),
            "Waiting for deployment \"web\" rollout to finish: 1 of 3 updated replicas are available..."
        );
        let s = DeploymentStatus {
            observed_generation: 1,
            replicas: 4,
            updated_replicas: 3,
            available_replicas: 3,
            ..Default::default()
        };
        assert_eq!(
            line(&d(1, s)),
            "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
        );
        let s = DeploymentStatus {
            observed_generation: 1,
            replicas: 3,
            updated_replicas: 3,
            available_replicas: 3,
            ..Default::default()
        };
        assert_eq!(
            status_line(&d(1, s)).unwrap(),
            ("deployment \"web\" successfully rolled out".to_string(), true)
        );
    }

    #[test]
    fn flags_parse() {
        use clap::Parser;
        let cli =
            crate::Cli::try_parse_from(["rkubectl", "rollout", "undo", "deployment/web", "--to-revision=2"])
                .unwrap();
        let crate::Command::Rollout(r) = cli.command else {
            panic!()
        };
        let RolloutAction::Undo { target, to_revision } = r.action else {
            panic!()
        };
        assert_eq!((target, to_revision), (vec!["deployment/web".to_string()], 2));
        assert!(deployment_name(&["pod/x".to_string()], "rollout undo").is_err());
        let ds = workload_target(&["ds/agent".to_string()], "rollout undo").unwrap();
        assert_eq!(ds, (Workload::DaemonSet, "agent".to_string()));
        let e = workload_target(&["cm/x".to_string()], "rollout undo").unwrap_err();
        assert!(e.to_string().contains("not supported for configmaps"), "{e}");
    }

    #[test]
    fn undo_goes_to_the_newest_revision_before_the_current_one() {
        let rev = |number: i64, image: &str| Revision {
            number,
            cause: "<none>".into(),
            template: serde_yaml::from_str(&format!("spec: {{containers: [{{name: a, image: {image}}}]}}"))
                .unwrap(),
        };
        let revisions = [rev(1, "v1"), rev(2, "v2"), rev(3, "v3")];
        let current = rev(3, "v3");
        assert_eq!(rollback_target("ds", &current, &revisions, 0).unwrap().number, 2);
        assert_eq!(rollback_target("ds", &current, &revisions, 1).unwrap().number, 1);
        let e = rollback_target("ds", &current, &revisions, 7).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("unable to find specified revision 7 in history"),
            "{e}"
        );
        let e = rollback_target("daemonset \"a\"", &current, &revisions[2..], 0).unwrap_err();
        assert!(
            e.to_string().contains("no rollout history found for daemonset"),
            "{e}"
        );
    }

    #[test]
    fn daemon_set_and_stateful_set_lines_match_kubectl() {
        let ds: DaemonSet = serde_yaml::from_str(
            "metadata: {name: agent, generation: 2}\nstatus: {observedGeneration: 2, desiredNumberScheduled: 3, updatedNumberScheduled: 1, numberAvailable: 1}\n",
        )
        .unwrap();
        assert_eq!(
            daemon_set_status_line(&ds).unwrap(),
            ("Waiting for daemon set \"agent\" rollout to finish: 1 out of 3 new pods have been updated...".into(), false)
        );
        let ds: DaemonSet = serde_yaml::from_str(
            "metadata: {name: agent}\nstatus: {desiredNumberScheduled: 3, updatedNumberScheduled: 3, numberAvailable: 3}\n",
        )
        .unwrap();
        assert_eq!(
            daemon_set_status_line(&ds).unwrap(),
            ("daemon set \"agent\" successfully rolled out".into(), true)
        );
        let sts: StatefulSet =
            serde_yaml::from_str("metadata: {name: db}\nspec: {replicas: 3}\nstatus: {readyReplicas: 1}\n")
                .unwrap();
        assert_eq!(
            stateful_set_status_line(&sts).unwrap(),
            ("Waiting for 2 pods to be ready...".into(), false)
        );
        let sts: StatefulSet = serde_yaml::from_str(
            "metadata: {name: db}\nspec: {replicas: 3, updateStrategy: {type: RollingUpdate, rollingUpdate: {partition: 2}}}\nstatus: {readyReplicas: 3, updatedReplicas: 1}\n",
        )
        .unwrap();
        assert_eq!(
            stateful_set_status_line(&sts).unwrap(),
            (
                "partitioned roll out complete: 1 new pods have been updated...".into(),
                true
            )
        );
        let sts: StatefulSet = serde_yaml::from_str(
            "metadata: {name: db}\nspec: {replicas: 1, updateStrategy: {type: OnDelete}}\n",
        )
        .unwrap();
        assert!(stateful_set_status_line(&sts).is_err());
    }
}
