//! `rkubectl rollout status|history|undo|restart|pause|resume
//! deployment/NAME` (status also of daemonset/NAME and statefulset/NAME), with
//! kubectl's wording. Rolling back copies an old
//! ReplicaSet's template into the Deployment; the deployment controller
//! then re-uses that ReplicaSet and gives it the next revision.

use crate::args::parse_targets;
use crate::cmd::Context;
use crate::error::CtlError;
use crate::server::ctl_error;
use futures::StreamExt;
use rkube_api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
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
            let name = deployment_name(target, "rollout history")?;
            let d = api.get(&name).await.map_err(&err)?;
            let rss = owned_replicasets(&client, &d).await.map_err(&err)?;
            let mut revs: Vec<(i64, String)> = rss
                .iter()
                .map(|rs| {
                    let a = &rs.metadata().annotations;
                    let rev = a.get(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0);
                    (
                        rev,
                        a.get(CHANGE_CAUSE).cloned().unwrap_or_else(|| "<none>".into()),
                    )
                })
                .collect();
            revs.sort();
            writeln!(out, "deployment.apps/{name} ")?;
            writeln!(out, "REVISION  CHANGE-CAUSE")?;
            for (rev, cause) in revs {
                writeln!(out, "{rev:<9} {cause}")?;
            }
            writeln!(out)?;
            Ok(())
        }
        RolloutAction::Undo { target, to_revision } => {
            let name = deployment_name(target, "rollout undo")?;
            let d = api.get(&name).await.map_err(&err)?;
            let rss = owned_replicasets(&client, &d).await.map_err(&err)?;
            let template = rollback_template(&d, &rss, *to_revision)?;
            let current = d
                .spec
                .as_ref()
                .and_then(|s| s.template.clone())
                .unwrap_or_default();
            if template == current {
                let rev = revision_of(d.metadata());
                writeln!(out, "deployment.apps/{name} skipped rollback (current template already matches revision {rev})")?;
                return Ok(());
            }
            api.replace_with(&name, |mut d| {
                d.spec.get_or_insert_with(Default::default).template = Some(template.clone());
                d
            })
            .await
            .map_err(&err)?;
            writeln!(out, "deployment.apps/{name} rolled back")?;
            Ok(())
        }
        RolloutAction::Restart { target } => {
            let name = deployment_name(target, "rollout restart")?;
            let d = api.get(&name).await.map_err(&err)?;
            if d.spec.as_ref().is_some_and(|s| s.paused) {
                return Err(CtlError::usage(format!(
                    "deployments.apps \"{name}\" can't restart paused deployment (run rollout resume first)"
                )));
            }
            let now = rkube_api::time::now();
            let patch =
                serde_json::json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}});
            api.patch_merge(&name, &patch).await.map_err(&err)?;
            writeln!(out, "deployment.apps/{name} restarted")?;
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

async fn owned_replicasets(client: &Client, d: &Deployment) -> rkube_client::Result<Vec<ReplicaSet>> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), d.namespace());
    let uid = &d.metadata().uid;
    Ok(api
        .list_all(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|rs| {
            rs.metadata()
                .owner_references
                .iter()
                .any(|r| r.controller == Some(true) && &r.uid == uid)
        })
        .collect())
}

/// The template to roll back to: revision `to` (0: the one before the
/// current), without the hash label the controller added.
pub fn rollback_template(d: &Deployment, rss: &[ReplicaSet], to: i64) -> Result<PodTemplateSpec, CtlError> {
    let current = revision_of(d.metadata());
    let target = if to == 0 {
        rss.iter()
            .map(|rs| revision_of(rs.metadata()))
            .filter(|r| *r != current && *r > 0)
            .max()
            .ok_or_else(|| {
                CtlError::usage(format!("no rollout history found for deployment {:?}", d.name()))
            })?
    } else {
        to
    };
    let rs = rss
        .iter()
        .find(|rs| revision_of(rs.metadata()) == target)
        .ok_or_else(|| CtlError::usage(format!("unable to find specified revision {target} in history")))?;
    let mut t = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    if let Some(m) = t.metadata.as_mut() {
        m.labels.remove(HASH_LABEL);
    }
    Ok(t)
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
