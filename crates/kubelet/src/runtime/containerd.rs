//! [`ContainerRuntime`] on containerd 1.6's native gRPC API, in its own containerd
//! namespace.
//!
//! Containers are plain containerd containers (runc v2 shim) whose root filesystem is an
//! overlayfs snapshot prepared on the image's chain ID, and whose stdout/stderr go to a log
//! file: through `rkubelet log-driver` (the shim's `binary://` IO, CRI records) when
//! `log_driver` is set, else raw through the shim's `file://` IO. Everything the pod worker needs to recognise a
//! container after a restart is in its labels.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use containerd_client::events::TaskExit;
use containerd_client::services::v1::container::Runtime as ContainerRuntimeInfo;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::SubscribeRequest;
use containerd_client::services::v1::{
    CloseIoRequest, Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, GetContainerRequest, GetRequest,
    KillRequest, ListContainersRequest, ListTasksRequest, ResizePtyRequest, StartRequest,
    UpdateContainerRequest, WaitRequest, WaitResponse,
};
use containerd_client::types::v1::{Process, Status as ProcessStatus};
use prost::Message as _;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::{
    cgroups, labels, spec, ContainerConfig, ContainerId, ContainerRuntime, ContainerState, ContainerStats,
    ContainerStatus, ContainerSummary, Error, ExecChunk, ExecOutput, ExecRequest, ExecSession,
    ExecSessionInput, ImageInfo, PullOptions, RuntimeEvent,
};
use crate::image::oci::Platform;

/// Type URL containerd expects for an OCI runtime spec carried in an `Any` (JSON value).
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Type URL of an OCI process spec (exec).
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// How long an ordinary unary call may take before it is abandoned, so a wedged containerd
/// shows up as an error instead of a pod worker that hangs. Waits, unpacking and content
/// transfers are not bounded by it.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for a container to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long a reaped container's logger may take to write what is left in its pipes.
const LOGGER_DRAIN: Duration = Duration::from_secs(2);

/// Where and how to reach containerd, and the node-local paths the runtime uses.
#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    /// containerd's gRPC socket.
    pub socket: PathBuf,
    /// containerd namespace holding rkube's images and containers.
    pub namespace: String,
    pub snapshotter: String,
    /// Shim runtime name.
    pub runtime: String,
    /// Parent of every container cgroup: containers get `<parent>/<pod-uid>/<container-id>`.
    pub cgroup_parent: String,
    /// Where the cgroup hierarchies are mounted (v1: one directory per controller).
    pub cgroup_root: PathBuf,
    /// Directory for exec output files; must be on the same machine as containerd.
    pub state_dir: PathBuf,
    /// Platform to pick from multi-platform images.
    pub platform: Platform,
    /// The `rkubelet` binary the shim runs as each container's logger
    /// (`rkubelet log-driver PATH`, writing CRI records); `None`: the shim appends the raw
    /// streams to the log file itself (`file://`).
    pub log_driver: Option<PathBuf>,
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/containerd/containerd.sock"),
            namespace: "rkube".to_string(),
            snapshotter: "overlayfs".to_string(),
            runtime: "io.containerd.runc.v2".to_string(),
            cgroup_parent: "/rkube".to_string(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            state_dir: PathBuf::from("/var/lib/rkubelet/runtime"),
            platform: Platform::host(),
            log_driver: None,
        }
    }
}

/// containerd-backed [`ContainerRuntime`]. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct ContainerdRuntime {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) config: ContainerdConfig,
    /// Built lazily and dropped when containerd is unreachable, so the call after a
    /// containerd restart dials a fresh connection.
    channel: Mutex<Option<Channel>>,
    /// Pulls of the same image are serialised (as the kubelet's serialised pulls are): the
    /// second waits and then finds everything present.
    pub(super) pull_locks: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ContainerdRuntime {
    /// A runtime for `config`. Does not connect: the first call does, and every call after
    /// containerd became unreachable reconnects.
    pub fn new(config: ContainerdConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                channel: Mutex::new(None),
                pull_locks: tokio::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Like [`new`](Self::new), then checks that containerd answers.
    pub async fn connect(config: ContainerdConfig) -> Result<Self, Error> {
        let runtime = Self::new(config);
        runtime.version().await?;
        Ok(runtime)
    }

    pub fn config(&self) -> &ContainerdConfig {
        &self.inner.config
    }

    /// containerd's version string.
    pub async fn version(&self) -> Result<String, Error> {
        let response = VersionClient::new(self.channel())
            .version(self.request(()))
            .await
            .map_err(|s| self.status_error("version", "containerd", s))?;
        Ok(response.into_inner().version)
    }

    /// Removes the (empty) per-pod cgroup directories left after all the pod's containers
    /// were removed; runc removes only each container's own cgroup.
    pub fn remove_pod_cgroup(&self, pod_uid: &str) -> Result<(), Error> {
        spec::validate_pod_uid(pod_uid, pod_uid)?;
        let path = format!("{}/{}", self.inner.config.cgroup_parent, pod_uid);
        cgroups::remove(&self.inner.config.cgroup_root, &path).map_err(|source| Error::Io {
            what: "removing pod cgroup",
            path: PathBuf::from(&path),
            source,
        })
    }

    pub(super) fn channel(&self) -> Channel {
        let mut guard = self
            .inner
            .channel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(channel) = guard.as_ref() {
            return channel.clone();
        }
        let socket = self.inner.config.socket.clone();
        // The URI is required by tonic and ignored by the unix-socket connector.
        let channel = Endpoint::from_static("http://containerd.invalid")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }));
        *guard = Some(channel.clone());
        channel
    }

    fn forget_channel(&self) {
        *self
            .inner
            .channel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// A request in rkube's namespace with the default deadline.
    pub(super) fn request<T>(&self, message: T) -> Request<T> {
        let mut request = self.unbounded_request(message);
        request.set_timeout(CALL_TIMEOUT);
        request
    }

    /// A request in rkube's namespace without a deadline (waits, transfers).
    pub(super) fn unbounded_request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = self.inner.config.namespace.parse() {
            request.metadata_mut().insert("containerd-namespace", value);
        }
        request
    }

    /// A request that also holds `lease`, so what it creates survives garbage collection
    /// until the lease is deleted.
    pub(super) fn leased_request<T>(&self, message: T, lease: &str, bounded: bool) -> Request<T> {
        let mut request = if bounded {
            self.request(message)
        } else {
            self.unbounded_request(message)
        };
        if let Ok(value) = lease.parse() {
            request.metadata_mut().insert("containerd-lease", value);
        }
        request
    }

    /// Maps a failed call to an [`Error`]; an unreachable containerd also drops the
    /// connection so the next call dials again.
    pub(super) fn status_error(&self, operation: &'static str, object: &str, status: Status) -> Error {
        if is_connection_error(&status) {
            self.forget_channel();
            return Error::Unavailable {
                socket: self.inner.config.socket.clone(),
                operation,
                object: object.to_string(),
                source: status,
            };
        }
        Error::Containerd {
            operation,
            object: object.to_string(),
            source: status,
        }
    }

    fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel())
    }

    fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel())
    }

    fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel())
    }

    async fn get_container(&self, id: &ContainerId) -> Result<Container, Error> {
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
    async fn get_task(&self, id: &ContainerId) -> Result<Option<Process>, Error> {
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

    async fn update_labels(&self, container: &Container, set: &[(&str, String)]) -> Result<(), Error> {
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
    async fn kill(&self, id: &ContainerId, exec_id: &str, signal: i32, all: bool) -> Result<(), Error> {
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
    async fn wait(
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
    async fn state_of(
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
    async fn reap(&self, container: &Container, task: &Process) -> Result<ContainerState, Error> {
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
        let deleted = self
            .tasks()
            .delete(self.request(DeleteTaskRequest {
                container_id: id.0.clone(),
            }))
            .await;
        match deleted {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(self.status_error("delete exited task", id.as_str(), s)),
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

    /// Feeds `tx` with the exits of containers in rkube's namespace from containerd's event
    /// stream until `tx` is closed. Each (re)subscription is followed by a
    /// [`RuntimeEvent::Resync`], as exits during the gap were not seen.
    async fn forward_exits(&self, tx: tokio::sync::mpsc::Sender<RuntimeEvent>) {
        let filter = format!(
            "topic==\"/tasks/exit\",namespace=={}",
            self.inner.config.namespace
        );
        let mut first = true;
        loop {
            let subscribed = EventsClient::new(self.channel())
                .subscribe(self.unbounded_request(SubscribeRequest {
                    filters: vec![filter.clone()],
                }))
                .await;
            match subscribed {
                Ok(stream) => {
                    if !first && tx.send(RuntimeEvent::Resync).await.is_err() {
                        return;
                    }
                    first = false;
                    let mut stream = stream.into_inner();
                    loop {
                        tokio::select! {
                            _ = tx.closed() => return,
                            message = stream.message() => match message {
                                Ok(Some(envelope)) => {
                                    let Some(exit) = envelope
                                        .event
                                        .and_then(|any| TaskExit::decode(any.value.as_slice()).ok())
                                    else {
                                        continue;
                                    };
                                    // Exec'd processes report their own exits (id = exec id).
                                    if exit.id != exit.container_id {
                                        continue;
                                    }
                                    let container = ContainerId(exit.container_id);
                                    let pod_uid = match self.get_container(&container).await {
                                        Ok(c) => c.labels.get(labels::POD_UID).cloned(),
                                        Err(_) => None,
                                    };
                                    if tx.send(RuntimeEvent::Exited { container, pod_uid }).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(None) => break,
                                Err(status) => {
                                    tracing::debug!("containerd event stream: {status}");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(status) => {
                    let error = self.status_error("subscribe to task exits", "events", status);
                    tracing::debug!("{error}");
                    first = false;
                }
            }
            // containerd restarting: try again shortly; the pod workers' resync covers
            // the gap.
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Every container record and every task of rkube's namespace: two calls.
    async fn containers_and_tasks(&self) -> Result<(Vec<Container>, HashMap<String, Process>), Error> {
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

    async fn oom_killed(&self, container: &Container) -> Result<bool, Error> {
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

    async fn create_inner(&self, config: &ContainerConfig) -> Result<ContainerId, Error> {
        let display = format!(
            "{}/{} container {}",
            config.pod_namespace, config.pod_name, config.name
        );
        spec::validate_pod_uid(&config.pod_uid, &display)?;
        let image = self
            .image_present(&config.image)
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

    async fn remove_snapshot(&self, id: &ContainerId) -> Result<(), Error> {
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

    /// The OCI process of an exec into running container `id`: it inherits the container's
    /// user, env, cwd and capabilities, and runs `command`.
    async fn exec_process(&self, id: &ContainerId, command: &[String]) -> Result<serde_json::Value, Error> {
        let container = self.get_container(id).await?;
        match self.get_task(id).await? {
            Some(p) if p.status == ProcessStatus::Running as i32 => {}
            _ => {
                return Err(Error::NotRunning {
                    id: id.clone(),
                    what: "exec",
                })
            }
        }
        let container_spec: serde_json::Value = container
            .spec
            .as_ref()
            .map(|any| serde_json::from_slice(&any.value))
            .transpose()
            .map_err(|source| Error::BadSpec {
                id: id.clone(),
                source,
            })?
            .unwrap_or_default();
        let mut process = container_spec
            .get("process")
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(|| serde_json::json!({"cwd": "/", "user": {"uid": 0, "gid": 0}}));
        process["args"] = serde_json::json!(command);
        Ok(process)
    }

    async fn exec_inner(
        &self,
        id: &ContainerId,
        request: &ExecRequest,
        dir: &Path,
        exec_id: &str,
    ) -> Result<ExecOutput, Error> {
        let io_error = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { what, path, source }
        };
        let mut process = self.exec_process(id, &request.command).await?;
        process["terminal"] = serde_json::json!(false);
        let process_json = serde_json::to_vec(&process).map_err(|source| Error::BadSpec {
            id: id.clone(),
            source,
        })?;

        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io_error("creating exec io directory", dir))?;
        // Fifos, not file:// URIs: the shim sends both streams of a file:// process to the
        // stdout path, and exec callers need them apart.
        let stdout_path = dir.join("stdout");
        let stderr_path = dir.join("stderr");
        let stdin_path = dir.join("stdin");
        let mut fifos = vec![&stdout_path, &stderr_path];
        if request.stdin.is_some() {
            fifos.push(&stdin_path);
        }
        for fifo in fifos {
            nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(|e| {
                Error::Io {
                    what: "creating exec fifo",
                    path: fifo.clone(),
                    source: e.into(),
                }
            })?;
        }
        // A read-write "keeper" on each output fifo keeps the pipe alive from now on: the
        // shim's writes are buffered even before our reader thread gets to open it, and the
        // reader sees end-of-file only once the keeper is dropped after the process is gone.
        let open_keeper = |path: &PathBuf| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(io_error("opening exec fifo", path))
        };
        let keepers = (open_keeper(&stdout_path)?, open_keeper(&stderr_path)?);
        let stdout_reader = spawn_fifo_reader(stdout_path.clone());
        let stderr_reader = spawn_fifo_reader(stderr_path.clone());
        // Opening stdin for writing blocks until the shim opens it while starting the
        // process; `release_fifo` frees the writer if that never happens.
        let stdin_writer = request.stdin.clone().map(|data| {
            let path = stdin_path.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                use std::io::Write as _;
                let mut fifo = std::fs::OpenOptions::new().write(true).open(&path)?;
                // A process that exits without reading its stdin breaks the pipe: fine.
                match fifo.write_all(&data) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                    other => other,
                }
            })
        });

        let outcome = async {
            self.tasks()
                .exec(self.request(ExecProcessRequest {
                    container_id: id.0.clone(),
                    stdin: if request.stdin.is_some() {
                        stdin_path.display().to_string()
                    } else {
                        String::new()
                    },
                    stdout: stdout_path.display().to_string(),
                    stderr: stderr_path.display().to_string(),
                    terminal: false,
                    spec: Some(prost_types::Any {
                        type_url: PROCESS_TYPE_URL.to_string(),
                        value: process_json,
                    }),
                    exec_id: exec_id.to_string(),
                }))
                .await
                .map_err(|s| self.status_error("exec", id.as_str(), s))?;
            self.tasks()
                .start(self.request(StartRequest {
                    container_id: id.0.clone(),
                    exec_id: exec_id.to_string(),
                }))
                .await
                .map_err(|s| self.status_error("start exec", id.as_str(), s))?;
            let run = async {
                if let Some(writer) = stdin_writer {
                    if let Ok(Err(e)) = writer.await {
                        tracing::debug!(container = %id, error = %e, "writing exec stdin");
                    }
                    // The shim holds its own writer on the stdin fifo (for this call), so the
                    // process sees end-of-file only after CloseIO.
                    let closed = self
                        .tasks()
                        .close_io(self.request(CloseIoRequest {
                            container_id: id.0.clone(),
                            exec_id: exec_id.to_string(),
                            stdin: true,
                        }))
                        .await;
                    if let Err(s) = closed {
                        if s.code() != Code::NotFound {
                            return Err(self.status_error("close exec stdin", id.as_str(), s));
                        }
                    }
                }
                self.wait(id, exec_id, None).await
            };
            let finished = match request.timeout {
                Some(limit) => tokio::time::timeout(limit, run).await.ok(),
                None => Some(run.await),
            };
            match finished.transpose()?.flatten() {
                Some(exit) => Ok(exit.exit_status as i32),
                None => {
                    self.kill(id, exec_id, libc::SIGKILL, false).await?;
                    let _ = self.wait(id, exec_id, Some(KILL_WAIT)).await;
                    Err(Error::ExecTimeout {
                        id: id.clone(),
                        command: request.command.clone(),
                        timeout: request.timeout.unwrap_or_default(),
                    })
                }
            }
        }
        .await;

        // Deleting the process makes the shim finish copying and close its fifo ends.
        let deleted = self
            .tasks()
            .delete_process(self.request(DeleteProcessRequest {
                container_id: id.0.clone(),
                exec_id: exec_id.to_string(),
            }))
            .await;
        drop(keepers);
        if request.stdin.is_some() {
            release_fifo(&stdin_path);
        }
        let stdout = collect_fifo(stdout_reader, &stdout_path).await;
        let stderr = collect_fifo(stderr_reader, &stderr_path).await;
        let exit_code = outcome?;
        if let Err(s) = deleted {
            if s.code() != Code::NotFound {
                return Err(self.status_error("delete exec process", id.as_str(), s));
            }
        }
        let stdout = stdout?;
        let stderr = stderr?;
        Ok(ExecOutput {
            exit_code,
            stdout,
            stderr,
        })
    }
}

impl ContainerdRuntime {
    /// See [`ContainerRuntime::exec_interactive`]. The shim makes the pty for a tty
    /// process; rkube only moves bytes between fifos and channels.
    async fn exec_session(
        &self,
        id: &ContainerId,
        command: &[String],
        tty: bool,
    ) -> Result<ExecSession, Error> {
        let io_error = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { what, path, source }
        };
        if command.is_empty() {
            return Err(Error::InvalidConfig {
                container: id.0.clone(),
                field: "exec command",
                reason: "it is empty".to_string(),
            });
        }
        let mut process = self.exec_process(id, command).await?;
        process["terminal"] = serde_json::json!(tty);
        if tty {
            // As containerd's CRI does: programs need TERM to drive a terminal.
            let env = process["env"].as_array().cloned().unwrap_or_default();
            if !env
                .iter()
                .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
            {
                let mut env = env;
                env.push(serde_json::json!("TERM=xterm"));
                process["env"] = serde_json::json!(env);
            }
        }
        let process_json = serde_json::to_vec(&process).map_err(|source| Error::BadSpec {
            id: id.clone(),
            source,
        })?;
        let exec_id = format!("exec-{}", random_hex(8));
        let dir = self
            .inner
            .config
            .state_dir
            .join("exec")
            .join(format!("{id}-{exec_id}"));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_error("creating exec io directory", &dir))?;
        let stdin_path = dir.join("stdin");
        let stdout_path = dir.join("stdout");
        let stderr_path = dir.join("stderr");
        let mut fifos = vec![&stdin_path, &stdout_path];
        if !tty {
            fifos.push(&stderr_path);
        }
        for fifo in fifos {
            nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(|e| {
                Error::Io {
                    what: "creating exec fifo",
                    path: fifo.clone(),
                    source: e.into(),
                }
            })?;
        }
        // Keepers hold the output fifos open (see exec_inner); dropped when the process is
        // gone, so the readers see end-of-file.
        let open_keeper = |path: &PathBuf| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(io_error("opening exec fifo", path))
        };
        let mut keepers = vec![open_keeper(&stdout_path)?];
        if !tty {
            keepers.push(open_keeper(&stderr_path)?);
        }
        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<ExecChunk>(64);
        let mut readers = Vec::new();
        let streams: Vec<(PathBuf, bool)> = if tty {
            vec![(stdout_path.clone(), false)]
        } else {
            vec![(stdout_path.clone(), false), (stderr_path.clone(), true)]
        };
        for (path, is_stderr) in streams {
            let tx = out_tx.clone();
            readers.push(tokio::task::spawn_blocking(move || {
                use std::io::Read as _;
                let Ok(mut fifo) = std::fs::File::open(&path) else {
                    return;
                };
                let mut buf = vec![0u8; 32 * 1024];
                while let Ok(n) = fifo.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    let data = buf[..n].to_vec();
                    let chunk = if is_stderr {
                        ExecChunk::Stderr(data)
                    } else {
                        ExecChunk::Stdout(data)
                    };
                    if tx.blocking_send(chunk).is_err() {
                        return;
                    }
                }
            }));
        }
        // stdin: bytes go to a blocking writer as they arrive; it opens the fifo once the
        // shim has (opening blocks until then).
        let (data_tx, data_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let writer_path = stdin_path.clone();
        let writer = tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let Ok(mut fifo) = std::fs::OpenOptions::new().write(true).open(&writer_path) else {
                return;
            };
            while let Ok(data) = data_rx.recv() {
                if fifo.write_all(&data).is_err() {
                    return;
                }
            }
        });
        let started = async {
            self.tasks()
                .exec(self.request(ExecProcessRequest {
                    container_id: id.0.clone(),
                    stdin: stdin_path.display().to_string(),
                    stdout: stdout_path.display().to_string(),
                    stderr: if tty {
                        String::new()
                    } else {
                        stderr_path.display().to_string()
                    },
                    terminal: tty,
                    spec: Some(prost_types::Any {
                        type_url: PROCESS_TYPE_URL.to_string(),
                        value: process_json,
                    }),
                    exec_id: exec_id.clone(),
                }))
                .await
                .map_err(|s| self.status_error("exec", id.as_str(), s))?;
            self.tasks()
                .start(self.request(StartRequest {
                    container_id: id.0.clone(),
                    exec_id: exec_id.clone(),
                }))
                .await
                .map_err(|s| self.status_error("start exec", id.as_str(), s))?;
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = started {
            drop(data_tx);
            release_fifo(&stdin_path);
            drop(keepers);
            let _ = self
                .tasks()
                .delete_process(self.request(DeleteProcessRequest {
                    container_id: id.0.clone(),
                    exec_id: exec_id.clone(),
                }))
                .await;
            let _ = writer.await;
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e);
        }

        let (in_tx, mut in_rx) = tokio::sync::mpsc::channel::<ExecSessionInput>(64);
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let mut data_tx = Some(data_tx);
            let mut writer = Some(writer);
            let mut input_open = true;
            let mut killed = false;
            let wait = me.wait(&id, &exec_id, None);
            tokio::pin!(wait);
            let exit = loop {
                tokio::select! {
                    result = &mut wait => break result,
                    // The user went away: an interactive shell would otherwise run forever.
                    _ = out_tx.closed(), if !killed => {
                        killed = true;
                        let _ = me.kill(&id, &exec_id, libc::SIGKILL, false).await;
                    }
                    message = in_rx.recv(), if input_open => match message {
                        Some(ExecSessionInput::Stdin(data)) => {
                            if let Some(tx) = &data_tx {
                                let _ = tx.send(data);
                            }
                        }
                        Some(ExecSessionInput::Resize { width, height }) if tty => {
                            let _ = me
                                .tasks()
                                .resize_pty(me.request(ResizePtyRequest {
                                    container_id: id.0.clone(),
                                    exec_id: exec_id.clone(),
                                    width,
                                    height,
                                }))
                                .await;
                        }
                        Some(ExecSessionInput::Resize { .. }) => {}
                        // On a terminal, the end of the user's input is Ctrl-D, as if
                        // typed: closing the shim's stdin would hang up the terminal
                        // before the process read what was sent.
                        Some(ExecSessionInput::StdinEof) | None if tty => {
                            input_open = false;
                            if let Some(tx) = &data_tx {
                                let _ = tx.send(vec![0x04]);
                            }
                        }
                        Some(ExecSessionInput::StdinEof) | None => {
                            input_open = false;
                            if data_tx.take().is_some() {
                                // Everything sent is written before the end is signalled.
                                if let Some(w) = writer.as_mut() {
                                    let _ = tokio::time::timeout(FIFO_DRAIN, w).await;
                                }
                                writer = None;
                                // The shim holds its own writer: the process sees EOF only
                                // after CloseIO.
                                let _ = me
                                    .tasks()
                                    .close_io(me.request(CloseIoRequest {
                                        container_id: id.0.clone(),
                                        exec_id: exec_id.clone(),
                                        stdin: true,
                                    }))
                                    .await;
                            }
                        }
                    },
                }
            };
            // Deleting the process makes the shim close its fifo ends.
            let _ = me
                .tasks()
                .delete_process(me.request(DeleteProcessRequest {
                    container_id: id.0.clone(),
                    exec_id: exec_id.clone(),
                }))
                .await;
            drop(data_tx);
            release_fifo(&stdin_path);
            drop(keepers);
            drop(out_tx);
            for reader in readers {
                let _ = tokio::time::timeout(FIFO_DRAIN, reader).await;
            }
            if let Some(w) = writer {
                let _ = w.await;
            }
            let _ = tokio::fs::remove_dir_all(&dir).await;
            let code = exit.map(|w| w.map(|w| w.exit_status as i32).unwrap_or(-1));
            let _ = exit_tx.send(code);
        });
        Ok(ExecSession {
            input: in_tx,
            output: out_rx,
            exit: exit_rx,
        })
    }
}

/// How long to wait for exec output after the process is gone.
const FIFO_DRAIN: Duration = Duration::from_secs(10);

type FifoReader = tokio::task::JoinHandle<std::io::Result<Vec<u8>>>;

fn spawn_fifo_reader(path: PathBuf) -> FifoReader {
    tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut data = Vec::new();
        std::fs::File::open(&path)?.read_to_end(&mut data)?;
        Ok(data)
    })
}

/// Unblocks a writer stuck opening the stdin fifo at `path` (the shim never opened it,
/// e.g. because the process failed to start) by opening and closing a reader without
/// blocking; the writer's write then fails harmlessly. No effect when it is past its open.
fn release_fifo(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
}

async fn collect_fifo(reader: FifoReader, path: &Path) -> Result<Vec<u8>, Error> {
    let io_error = |source| Error::Io {
        what: "reading exec output",
        path: path.to_path_buf(),
        source,
    };
    match tokio::time::timeout(FIFO_DRAIN, reader).await {
        Ok(Ok(result)) => result.map_err(io_error),
        Ok(Err(join)) => Err(io_error(std::io::Error::other(join))),
        Err(_) => Err(io_error(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the shim kept the output open",
        ))),
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
        let created = self
            .tasks()
            .create(self.request(CreateTaskRequest {
                container_id: id.0.clone(),
                rootfs: mounts,
                stdin: String::new(),
                // One logger (or file) for both streams.
                stdout: log_uri.clone(),
                stderr: log_uri,
                terminal: false,
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
        tracing::debug!(container = %id, "removed container");
        Ok(())
    }

    async fn list_containers(&self) -> Result<Vec<ContainerSummary>, Error> {
        let (containers, tasks) = self.containers_and_tasks().await?;
        let mut summaries = Vec::with_capacity(containers.len());
        for container in containers {
            let (state, pid) = self.state_of(&container, tasks.get(&container.id)).await?;
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
        if request.command.is_empty() {
            return Err(Error::InvalidConfig {
                container: id.0.clone(),
                field: "exec command",
                reason: "it is empty".to_string(),
            });
        }
        let exec_id = format!("exec-{}", random_hex(8));
        let dir = self
            .inner
            .config
            .state_dir
            .join("exec")
            .join(format!("{id}-{exec_id}"));
        let result = self.exec_inner(id, request, &dir, &exec_id).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result
    }

    async fn exec_interactive(
        &self,
        id: &ContainerId,
        command: &[String],
        tty: bool,
    ) -> Result<ExecSession, Error> {
        self.exec_session(id, command, tty).await
    }

    /// One list of containers and tasks, then the cgroup files: no call per container,
    /// which is what keeps the kubelet's periodic sampling cheap with many pods.
    async fn running_container_stats(&self) -> Result<Vec<(ContainerSummary, ContainerStats)>, Error> {
        let (containers, tasks) = self.containers_and_tasks().await?;
        let mut out = Vec::new();
        for container in containers {
            let Some(task) = tasks.get(&container.id) else {
                continue;
            };
            if task.status != ProcessStatus::Running as i32 {
                continue;
            }
            let Some(path) = cgroups_path_of(&container) else {
                continue;
            };
            let Ok(Some((cpu_usage_nanos, memory_working_set_bytes))) =
                cgroups::stats(&self.inner.config.cgroup_root, &path)
            else {
                continue;
            };
            out.push((
                ContainerSummary {
                    id: ContainerId(container.id.clone()),
                    image: container.image.clone(),
                    labels: container.labels.into_iter().collect(),
                    state: ContainerState::Running,
                    pid: (task.pid != 0).then_some(task.pid),
                },
                ContainerStats {
                    cpu_usage_nanos,
                    memory_working_set_bytes,
                    timestamp: SystemTime::now(),
                },
            ));
        }
        Ok(out)
    }

    async fn container_stats(&self, id: &ContainerId) -> Result<ContainerStats, Error> {
        let container = self.get_container(id).await?;
        let path = cgroups_path_of(&container).ok_or_else(|| Error::NotRunning {
            id: id.clone(),
            what: "reading stats",
        })?;
        match cgroups::stats(&self.inner.config.cgroup_root, &path) {
            Ok(Some((cpu_usage_nanos, memory_working_set_bytes))) => Ok(ContainerStats {
                cpu_usage_nanos,
                memory_working_set_bytes,
                timestamp: SystemTime::now(),
            }),
            Ok(None) => Err(Error::NotRunning {
                id: id.clone(),
                what: "reading stats",
            }),
            Err(source) => Err(Error::Io {
                what: "reading container cgroup",
                path: PathBuf::from(path),
                source,
            }),
        }
    }
}

/// Whether a failed call means containerd could not be reached (restarting, socket gone).
fn is_connection_error(status: &Status) -> bool {
    match status.code() {
        // "ref ... locked" is containerd telling a second writer to wait, not a lost
        // connection.
        Code::Unavailable => !status.message().contains("locked"),
        Code::Unknown => {
            let message = status.message();
            message.contains("transport") || message.contains("connect")
        }
        _ => false,
    }
}

/// `linux.cgroupsPath` from a container's runtime spec.
fn cgroups_path_of(container: &Container) -> Option<String> {
    let spec: serde_json::Value = serde_json::from_slice(&container.spec.as_ref()?.value).ok()?;
    spec.get("linux")?
        .get("cgroupsPath")?
        .as_str()
        .map(str::to_string)
}

pub(super) fn random_hex(bytes: usize) -> String {
    use rand::RngCore as _;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
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

pub(super) fn timestamp_to_system_time(ts: &prost_types::Timestamp) -> Option<SystemTime> {
    // containerd reports the zero time for processes that have not exited.
    if ts.seconds <= 0 {
        return None;
    }
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(ts.seconds as u64, ts.nanos.max(0) as u32))
}

pub(super) fn format_rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

pub(super) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_keeps_nanoseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
    }

    #[test]
    fn unset_exit_time_is_none() {
        assert_eq!(
            timestamp_to_system_time(&prost_types::Timestamp {
                seconds: -62135596800,
                nanos: 0
            }),
            None
        );
    }

    #[test]
    fn lock_contention_is_not_a_lost_connection() {
        assert!(!is_connection_error(&Status::unavailable(
            "ref rkube-x locked for 1s"
        )));
        assert!(is_connection_error(&Status::unavailable(
            "error trying to connect"
        )));
        assert!(!is_connection_error(&Status::not_found("nope")));
    }
}
