//! Containers and their tasks on containerd, from create to remove, and the
//! [`ContainerRuntime`] implementation that ties the runtime's parts together.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use containerd_client::services::v1::container::Runtime as ContainerRuntimeInfo;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteTaskRequest,
    GetContainerRequest, GetRequest, KillRequest, ListContainersRequest, ListTasksRequest, StartRequest,
    UpdateContainerRequest, WaitRequest, WaitResponse,
};
use containerd_client::types::v1::{Process, Status as ProcessStatus};
use tonic::Code;
use tracing::Instrument as _;

use super::stats::cgroups_path_of;
use super::{
    format_rfc3339, parse_rfc3339, random_hex, timestamp_to_system_time, ContainerdRuntime, KILL_WAIT,
    LOGGER_DRAIN, SPEC_TYPE_URL,
};
use crate::runtime::{
    cgroups, labels, spec, ContainerConfig, ContainerId, ContainerRuntime, ContainerState, ContainerStats,
    ContainerStatus, ContainerStdin, ContainerSummary, Error, ExecOutput, ExecRequest, ExecSession,
    ImageInfo, ImageSummary, PullOptions, RuntimeEvent,
};
use crate::POD_STARTUP_TRACE;

impl ContainerdRuntime {
    pub(super) async fn get_container(&self, id: &ContainerId) -> Result<Container, Error> {
        let response = self
            .containers()
            .get(self.request(GetContainerRequest { id: id.0.clone() }))
            .await;
        match response {
            Ok(r) => r
                .into_inner()
                .container
                .ok_or_else(|| Error::NotFound { id: id.clone() }),
            Err(s) if s.code() == Code::NotFound => Err(Error::NotFound { id: id.clone() }),
            Err(s) => Err(self.status_error("get container", id.as_str(), s)),
        }
    }

    /// The task's init process, or `None` if the container has no task.
    pub(super) async fn get_task(&self, id: &ContainerId) -> Result<Option<Process>, Error> {
        let response = self
            .tasks()
            .get(self.request(GetRequest {
                container_id: id.0.clone(),
                exec_id: String::new(),
            }))
            .await;
        match response {
            Ok(r) => Ok(r.into_inner().process),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(self.status_error("get task", id.as_str(), s)),
        }
    }

    pub(super) async fn update_labels(
        &self,
        container: &Container,
        set: &[(&str, String)],
    ) -> Result<(), Error> {
        let mut updated = container.clone();
        let mut paths = Vec::new();
        for (key, value) in set {
            updated.labels.insert((*key).to_string(), value.clone());
            paths.push(format!("labels.{key}"));
        }
        self.containers()
            .update(self.request(UpdateContainerRequest {
                container: Some(updated),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(|s| self.status_error("update container labels", &container.id, s))?;
        Ok(())
    }

    /// Sends `signal` to the task (every process of it with `all`); a task that is gone or
    /// already stopped is not an error.
    pub(super) async fn kill(
        &self,
        id: &ContainerId,
        exec_id: &str,
        signal: i32,
        all: bool,
    ) -> Result<(), Error> {
        let result = self
            .tasks()
            .kill(self.request(KillRequest {
                container_id: id.0.clone(),
                exec_id: exec_id.to_string(),
                signal: signal as u32,
                all,
            }))
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound || s.code() == Code::FailedPrecondition => Ok(()),
            Err(s) => Err(self.status_error("kill task", id.as_str(), s)),
        }
    }

    /// Waits for a process to exit, at most `limit`; `Ok(None)` when it is still running.
    pub(super) async fn wait(
        &self,
        id: &ContainerId,
        exec_id: &str,
        limit: Option<Duration>,
    ) -> Result<Option<WaitResponse>, Error> {
        let mut tasks = self.tasks();
        let call = tasks.wait(self.unbounded_request(WaitRequest {
            container_id: id.0.clone(),
            exec_id: exec_id.to_string(),
        }));
        let result = match limit {
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(result) => result,
                Err(_) => return Ok(None),
            },
            None => call.await,
        };
        match result {
            Ok(r) => Ok(Some(r.into_inner())),
            // No task: nothing to wait for.
            Err(s) if s.code() == Code::NotFound => Ok(Some(WaitResponse::default())),
            Err(s) => Err(self.status_error("wait for task", id.as_str(), s)),
        }
    }

    /// State of a container from its record and its task. An exited task is reaped on
    /// sight: its exit code, time and OOM kill go into the container's labels (the cgroup
    /// proving an OOM kill disappears with the task), the task is deleted, which ends its
    /// shim and lets the logger drain the pipes, and the call returns once the logger has
    /// written the last line, so an exit is never reported before the log is complete.
    pub(super) async fn state_of(
        &self,
        container: &Container,
        task: Option<&Process>,
    ) -> Result<(ContainerState, Option<u32>), Error> {
        let Some(task) = task else {
            if let Some(code) = container.labels.get(labels::EXIT_CODE) {
                return Ok((
                    ContainerState::Exited {
                        exit_code: code.parse().unwrap_or(-1),
                        finished_at: container
                            .labels
                            .get(labels::FINISHED_AT)
                            .and_then(|s| parse_rfc3339(s)),
                        oom_killed: container.labels.get(labels::OOM_KILLED).map(String::as_str)
                            == Some("true"),
                    },
                    None,
                ));
            }
            if container.labels.contains_key(labels::STARTED_AT) {
                return Ok((
                    ContainerState::Unknown {
                        reason: "the container was started but containerd has no task for it (deleted outside rkube?)".to_string(),
                    },
                    None,
                ));
            }
            return Ok((ContainerState::Created, None));
        };
        let status = ProcessStatus::try_from(task.status).unwrap_or(ProcessStatus::Unknown);
        let pid = (task.pid != 0).then_some(task.pid);
        let state = match status {
            ProcessStatus::Created => ContainerState::Created,
            ProcessStatus::Running | ProcessStatus::Paused | ProcessStatus::Pausing => {
                ContainerState::Running
            }
            ProcessStatus::Stopped => return Ok((self.reap(container, task).await?, None)),
            ProcessStatus::Unknown => ContainerState::Unknown {
                reason: "containerd reports the task's status as unknown".to_string(),
            },
        };
        Ok((state, pid))
    }

    /// Records how the stopped `task` ended in the container's labels, deletes the task and
    /// waits (briefly) for the container's logger to finish. Safe to repeat after a crash
    /// at any step: the labels are written before the task goes.
    pub(super) async fn reap(&self, container: &Container, task: &Process) -> Result<ContainerState, Error> {
        let oom_killed = self.oom_killed(container).await?;
        let finished_at = task.exited_at.as_ref().and_then(timestamp_to_system_time);
        let exit_code = task.exit_status as i32;
        let mut set = vec![(labels::EXIT_CODE, exit_code.to_string())];
        if let Some(t) = finished_at {
            set.push((labels::FINISHED_AT, format_rfc3339(t)));
        }
        if oom_killed {
            set.push((labels::OOM_KILLED, "true".to_string()));
        }
        self.update_labels(container, &set).await?;
        let id = ContainerId(container.id.clone());
        // containerd answers "ttrpc: closed" while the task's shim is on its way out (a
        // restarted container's old shim, say): a moment later the delete goes through.
        // The exit is recorded above either way, so if it still fails the container is
        // reported as exited and the next look deletes the task.
        let mut attempt = 0;
        loop {
            let deleted = self
                .tasks()
                .delete(self.request(DeleteTaskRequest {
                    container_id: id.0.clone(),
                }))
                .await;
            match deleted {
                Ok(_) => break,
                Err(s) if s.code() == Code::NotFound => break,
                Err(s) if s.message().contains("ttrpc: closed") && attempt < 3 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(s) if s.message().contains("ttrpc: closed") => {
                    tracing::warn!(container = %id, error = %s, "exited task not deleted yet; the next sync deletes it");
                    break;
                }
                Err(s) => return Err(self.status_error("delete exited task", id.as_str(), s)),
            }
        }
        if let Some(log) = container.labels.get(labels::LOG_PATH) {
            if self.inner.config.log_driver.is_some() {
                wait_for_logger(Path::new(log), LOGGER_DRAIN).await;
            }
        }
        tracing::debug!(container = %id, exit_code, oom_killed, "reaped exited container");
        Ok(ContainerState::Exited {
            exit_code,
            finished_at,
            oom_killed,
        })
    }

    /// Every container record and every task of rkube's namespace: two calls.
    pub(super) async fn containers_and_tasks(
        &self,
    ) -> Result<(Vec<Container>, HashMap<String, Process>), Error> {
        let containers = self
            .containers()
            .list(self.request(ListContainersRequest { filters: vec![] }))
            .await
            .map_err(|s| self.status_error("list containers", &self.inner.config.namespace, s))?
            .into_inner()
            .containers;
        let tasks: HashMap<String, Process> = self
            .tasks()
            .list(self.request(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(|s| self.status_error("list tasks", &self.inner.config.namespace, s))?
            .into_inner()
            .tasks
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
        Ok((containers, tasks))
    }

    pub(super) async fn oom_killed(&self, container: &Container) -> Result<bool, Error> {
        if container.labels.get(labels::OOM_KILLED).map(String::as_str) == Some("true") {
            return Ok(true);
        }
        let Some(path) = cgroups_path_of(container) else {
            return Ok(false);
        };
        let count = cgroups::oom_kill_count(&self.inner.config.cgroup_root, &path).unwrap_or(None);
        if count.unwrap_or(0) == 0 {
            return Ok(false);
        }
        self.update_labels(container, &[(labels::OOM_KILLED, "true".to_string())])
            .await?;
        Ok(true)
    }

    pub(super) async fn create_inner(&self, config: &ContainerConfig) -> Result<ContainerId, Error> {
        let display = format!(
            "{}/{} container {}",
            config.pod_namespace, config.pod_name, config.name
        );
        spec::validate_pod_uid(&config.pod_uid, &display)?;
        let uid = config.pod_uid.as_str();
        let image = self
            .image_present(&config.image)
            .instrument(tracing::debug_span!(target: POD_STARTUP_TRACE, "image_read", pod_uid = uid))
            .await?
            .ok_or_else(|| Error::ImageNotPresent {
                image: config.image.clone(),
            })?;
        let id = ContainerId(random_hex(16));
        let cgroups_path = format!(
            "{}/{}/{}",
            self.inner.config.cgroup_parent.trim_end_matches('/'),
            config.pod_uid,
            id
        );
        let runtime_spec = spec::build(&id, config, &image.config, &cgroups_path)?;
        let spec_json = serde_json::to_vec(&runtime_spec).map_err(|source| Error::BadSpec {
            id: id.clone(),
            source,
        })?;

        let mut container_labels = config.labels.clone();
        container_labels.insert(labels::POD_UID.into(), config.pod_uid.clone());
        container_labels.insert(labels::POD_NAMESPACE.into(), config.pod_namespace.clone());
        container_labels.insert(labels::POD_NAME.into(), config.pod_name.clone());
        container_labels.insert(labels::CONTAINER_NAME.into(), config.name.clone());
        container_labels.insert(labels::RESTART_ATTEMPT.into(), config.restart_attempt.to_string());
        if let Some(signal) = image.config.stop_signal.as_deref().and_then(spec::parse_signal) {
            container_labels.insert(spec::STOP_SIGNAL_LABEL.into(), signal.to_string());
        }
        for (key, value) in super::stdin::io_labels(&config.io) {
            container_labels.insert(key.into(), value);
        }

        // The snapshot exists before the container record that references it; the lease
        // keeps the garbage collector off it in between.
        let lease = self.create_lease("create").await?;
        let result = async {
            self.snapshots()
                .prepare(self.leased_request(
                    PrepareSnapshotRequest {
                        snapshotter: self.inner.config.snapshotter.clone(),
                        key: id.0.clone(),
                        parent: image.chain_id.clone(),
                        labels: HashMap::new(),
                    },
                    &lease,
                    true,
                ))
                .instrument(tracing::debug_span!(target: POD_STARTUP_TRACE, "snapshot", pod_uid = uid))
                .await
                .map_err(|s| self.status_error("prepare snapshot", id.as_str(), s))?;
            let container = Container {
                id: id.0.clone(),
                labels: container_labels.into_iter().collect(),
                image: image.name.clone(),
                runtime: Some(ContainerRuntimeInfo {
                    name: self.inner.config.runtime.clone(),
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: SPEC_TYPE_URL.to_string(),
                    value: spec_json,
                }),
                snapshotter: self.inner.config.snapshotter.clone(),
                snapshot_key: id.0.clone(),
                ..Default::default()
            };
            self.containers()
                .create(self.leased_request(
                    CreateContainerRequest {
                        container: Some(container),
                    },
                    &lease,
                    true,
                ))
                .instrument(
                    tracing::debug_span!(target: POD_STARTUP_TRACE, "container_create", pod_uid = uid),
                )
                .await
                .map_err(|s| self.status_error("create container", id.as_str(), s))?;
            Ok::<_, Error>(())
        }
        .await;
        self.delete_lease(&lease).await;
        if let Err(error) = result {
            // Best effort: do not leave a snapshot without a container behind.
            let _ = self.remove_snapshot(&id).await;
            return Err(error);
        }
        tracing::debug!(container = %id, pod = %config.pod_name, namespace = %config.pod_namespace, name = %config.name, "created container");
        Ok(id)
    }

    pub(super) async fn remove_snapshot(&self, id: &ContainerId) -> Result<(), Error> {
        let result = self
            .snapshots()
            .remove(self.request(RemoveSnapshotRequest {
                snapshotter: self.inner.config.snapshotter.clone(),
                key: id.0.clone(),
            }))
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(self.status_error("remove snapshot", id.as_str(), s)),
        }
    }
}

#[async_trait]
impl ContainerRuntime for ContainerdRuntime {
    async fn pull_image(&self, reference: &str, options: &PullOptions) -> Result<ImageInfo, Error> {
        self.pull(reference, options).await
    }

    async fn image_present(&self, reference: &str) -> Result<Option<ImageInfo>, Error> {
        self.read_image(reference).await
    }

    async fn list_images(&self) -> Result<Vec<ImageSummary>, Error> {
        self.list_image_records().await
    }

    async fn remove_image(&self, name: &str) -> Result<(), Error> {
        self.delete_image_record(name).await
    }

    async fn create_container(&self, config: &ContainerConfig) -> Result<ContainerId, Error> {
        self.create_inner(config).await
    }

    async fn start_container(&self, id: &ContainerId, log_path: &Path) -> Result<(), Error> {
        if !log_path.is_absolute() {
            return Err(Error::InvalidConfig {
                container: id.0.clone(),
                field: "log path",
                reason: format!("{} is not absolute", log_path.display()),
            });
        }
        let container = self.get_container(id).await?;
        // A container runs once: after its task exited and was reaped only the labels
        // remember that it ran, and creating a task again would silently restart it.
        if container.labels.contains_key(labels::STARTED_AT)
            || container.labels.contains_key(labels::EXIT_CODE)
        {
            return Err(Error::AlreadyStarted { id: id.clone() });
        }
        let mounts = self
            .snapshots()
            .mounts(self.request(MountsRequest {
                snapshotter: container.snapshotter.clone(),
                key: container.snapshot_key.clone(),
            }))
            .await
            .map_err(|s| self.status_error("get root filesystem mounts", id.as_str(), s))?
            .into_inner()
            .mounts;
        let log_uri = match &self.inner.config.log_driver {
            Some(driver) => crate::log_driver::uri(driver, log_path),
            None => format!("file://{}", log_path.display()),
        };
        // One logger (or file) for both streams, unless the container has a stdin (see
        // `stdin.rs`); on a terminal only stdout.
        let io = self.task_io(id, &container.labels, &log_uri, log_path)?;
        let created = self
            .tasks()
            .create(self.request(CreateTaskRequest {
                container_id: id.0.clone(),
                rootfs: mounts,
                stdin: io.stdin,
                stdout: io.stdout,
                stderr: io.stderr,
                terminal: io.terminal,
                ..Default::default()
            }))
            .await;
        match created {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {
                return Err(Error::AlreadyStarted { id: id.clone() })
            }
            Err(s) => return Err(self.status_error("create task", id.as_str(), s)),
        }
        if let Err(s) = self
            .tasks()
            .start(self.request(StartRequest {
                container_id: id.0.clone(),
                exec_id: String::new(),
            }))
            .await
        {
            // Leave no half-started task: the next attempt creates it afresh.
            let error = self.status_error("start task", id.as_str(), s);
            let _ = self
                .tasks()
                .delete(self.request(DeleteTaskRequest {
                    container_id: id.0.clone(),
                }))
                .await;
            return Err(error);
        }
        self.update_labels(
            &container,
            &[
                (labels::LOG_PATH, log_path.display().to_string()),
                (labels::STARTED_AT, format_rfc3339(SystemTime::now())),
            ],
        )
        .await?;
        tracing::debug!(container = %id, log = %log_path.display(), "started container");
        Ok(())
    }

    fn exit_events(&self) -> tokio::sync::mpsc::Receiver<RuntimeEvent> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let runtime = self.clone();
        tokio::spawn(async move { runtime.forward_exits(tx).await });
        rx
    }

    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus, Error> {
        let container = self.get_container(id).await?;
        let task = self.get_task(id).await?;
        let (state, pid) = self.state_of(&container, task.as_ref()).await?;
        let labels: BTreeMap<String, String> = container.labels.clone().into_iter().collect();
        Ok(ContainerStatus {
            id: id.clone(),
            state,
            started_at: labels.get(labels::STARTED_AT).and_then(|s| parse_rfc3339(s)),
            pid,
            image: container.image.clone(),
            log_path: labels.get(labels::LOG_PATH).map(PathBuf::from),
            labels,
        })
    }

    async fn stop_container(&self, id: &ContainerId, grace: Duration) -> Result<(), Error> {
        let container = self.get_container(id).await?;
        let Some(task) = self.get_task(id).await? else {
            return Ok(());
        };
        match ProcessStatus::try_from(task.status).unwrap_or(ProcessStatus::Unknown) {
            ProcessStatus::Stopped => return Ok(()),
            ProcessStatus::Running | ProcessStatus::Paused | ProcessStatus::Pausing if !grace.is_zero() => {
                let signal = container
                    .labels
                    .get(spec::STOP_SIGNAL_LABEL)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(libc::SIGTERM);
                self.kill(id, "", signal, false).await?;
                if self.wait(id, "", Some(grace)).await?.is_some() {
                    return Ok(());
                }
                tracing::info!(container = %id, ?grace, "container ignored its stop signal; killing it");
            }
            // Created-but-not-started tasks, unknown states and a zero grace period: kill.
            _ => {}
        }
        self.kill(id, "", libc::SIGKILL, true).await?;
        match self.wait(id, "", Some(KILL_WAIT)).await? {
            Some(_) => Ok(()),
            None => Err(Error::StopTimeout {
                id: id.clone(),
                waited: grace + KILL_WAIT,
            }),
        }
    }

    async fn remove_container(&self, id: &ContainerId) -> Result<(), Error> {
        if let Some(task) = self.get_task(id).await? {
            if task.status != ProcessStatus::Stopped as i32 {
                self.kill(id, "", libc::SIGKILL, true).await?;
                if self.wait(id, "", Some(KILL_WAIT)).await?.is_none() {
                    return Err(Error::StopTimeout {
                        id: id.clone(),
                        waited: KILL_WAIT,
                    });
                }
            }
            let deleted = self
                .tasks()
                .delete(self.request(DeleteTaskRequest {
                    container_id: id.0.clone(),
                }))
                .await;
            if let Err(s) = deleted {
                if s.code() != Code::NotFound {
                    return Err(self.status_error("delete task", id.as_str(), s));
                }
            }
        }
        let deleted = self
            .containers()
            .delete(self.request(DeleteContainerRequest { id: id.0.clone() }))
            .await;
        if let Err(s) = deleted {
            if s.code() != Code::NotFound {
                return Err(self.status_error("delete container", id.as_str(), s));
            }
        }
        self.remove_snapshot(id).await?;
        self.remove_io_dir(id);
        tracing::debug!(container = %id, "removed container");
        Ok(())
    }

    async fn list_containers(&self) -> Result<Vec<ContainerSummary>, Error> {
        let (containers, tasks) = self.containers_and_tasks().await?;
        let mut summaries = Vec::with_capacity(containers.len());
        for container in containers {
            let (state, pid) = self.state_of(&container, tasks.get(&container.id)).await?;
            if state == ContainerState::Running {
                self.adopt_output(&ContainerId(container.id.clone()), &container.labels);
            }
            summaries.push(ContainerSummary {
                id: ContainerId(container.id.clone()),
                image: container.image.clone(),
                labels: container.labels.into_iter().collect(),
                state,
                pid,
            });
        }
        summaries.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(summaries)
    }

    async fn exec(&self, id: &ContainerId, request: &ExecRequest) -> Result<ExecOutput, Error> {
        self.exec_once(id, request).await
    }

    async fn open_stdin(&self, id: &ContainerId) -> Result<ContainerStdin, Error> {
        self.open_stdin_inner(id).await
    }

    async fn close_stdin(&self, id: &ContainerId) -> Result<(), Error> {
        self.close_stdin_inner(id).await
    }

    async fn resize_tty(&self, id: &ContainerId, width: u32, height: u32) -> Result<(), Error> {
        self.resize_tty_inner(id, width, height).await
    }

    async fn exec_interactive(
        &self,
        id: &ContainerId,
        command: &[String],
        tty: bool,
    ) -> Result<ExecSession, Error> {
        self.exec_session(id, command, tty).await
    }

    async fn running_container_stats(&self) -> Result<Vec<(ContainerSummary, ContainerStats)>, Error> {
        self.stats_of_running().await
    }

    async fn container_stats(&self, id: &ContainerId) -> Result<ContainerStats, Error> {
        self.stats_of(id).await
    }
}

/// Waits until no logger holds `log` (`rkubelet log-driver` keeps an exclusive lock on
/// its file for as long as it runs), at most `limit`. A file that is gone or was never
/// locked (raw `file://` logging) does not wait.
async fn wait_for_logger(log: &Path, limit: Duration) {
    let Ok(file) = std::fs::File::open(log) else {
        return;
    };
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                return;
            }
            Err(std::fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                tracing::debug!(log = %log.display(), "logger still writing after {limit:?}: {e}");
                return;
            }
        }
    }
}
