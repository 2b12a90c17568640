//! The container runtime the pod worker drives: pull images, create/start/stop/remove
//! containers, read their status, exec into them and read their resource usage.
//!
//! [`ContainerRuntime`] is the seam: [`ContainerdRuntime`] talks to containerd, and
//! [`FakeRuntime`] is an in-memory stand-in for the pod worker's unit tests.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::image::PullError;

mod cgroups;
pub mod containerd;
pub mod fake;

pub mod spec;

pub use containerd::ImageConfig;
pub use containerd::{ContainerdConfig, ContainerdRuntime};
pub use fake::FakeRuntime;

pub use crate::image::{PullOptions, RegistryAuth};

/// Removes a cgroup and its children in every hierarchy under `root` (cgroup v1: each
/// controller directory; v2: the unified tree). Cgroups already gone are fine; one that
/// still has processes fails with `EBUSY`.
pub fn remove_cgroup_tree(root: &Path, cgroup_path: &str) -> std::io::Result<()> {
    cgroups::remove(root, cgroup_path)
}

/// Labels every container carries, so a restarted kubelet can tell which pod and which
/// container of its spec a running container is (adoption), and what happened to it.
pub mod labels {
    pub const POD_UID: &str = "io.rkube.pod.uid";
    pub const POD_NAMESPACE: &str = "io.rkube.pod.namespace";
    pub const POD_NAME: &str = "io.rkube.pod.name";
    pub const CONTAINER_NAME: &str = "io.rkube.container.name";
    pub const RESTART_ATTEMPT: &str = "io.rkube.container.restart-attempt";
    /// Set by `start_container`.
    pub const LOG_PATH: &str = "io.rkube.container.log-path";
    /// RFC 3339, set by `start_container`: containerd does not record when a task started.
    pub const STARTED_AT: &str = "io.rkube.container.started-at";
    /// `"true"` once an exited container was seen OOM-killed; the cgroup that proves it is
    /// gone after the task is deleted, the label is not.
    pub const OOM_KILLED: &str = "io.rkube.container.oom-killed";
    /// Set by the pod worker at creation: how many runs in a row before this one ended
    /// quickly (CrashLoopBackOff's step), so a restarted kubelet keeps the back-off.
    pub const CRASH_STREAK: &str = "io.rkube.container.crash-streak";
    /// Set when the exited task is reaped (deleted, so its shim and logger go): the exit
    /// code and RFC 3339 time containerd reported, which the task no longer holds.
    pub const EXIT_CODE: &str = "io.rkube.container.exit-code";
    pub const FINISHED_AT: &str = "io.rkube.container.finished-at";
    /// Set at creation when the main process gets a stdin (`kubectl attach -i`): `"open"`,
    /// or `"once"` (closed when the first attach session ends).
    pub const STDIN: &str = "io.rkube.container.stdin";
    /// `"true"` at creation when the main process runs on a terminal.
    pub const TTY: &str = "io.rkube.container.tty";
}

/// What [`ContainerRuntime::exit_events`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEvent {
    /// A container's main process exited; `pod_uid` from its labels when it is rkube's.
    Exited {
        container: ContainerId,
        pod_uid: Option<String>,
    },
    /// Exits may have been missed (the event stream was re-established): look at every
    /// container again.
    Resync,
}

/// containerd's identifier of a container (32 lowercase hex digits when rkube made it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(pub String);

impl ContainerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ContainerId {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

/// What the node knows about an image it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Normalised reference the image record is stored under,
    /// e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// Digest of what the reference resolved to in the registry: the index for
    /// multi-platform images, else the manifest.
    pub digest: String,
    /// `<registry>/<repository>@<digest>`: what Kubernetes reports as
    /// `containerStatuses[].imageID`.
    pub repo_digest: String,
    /// Digest of the image config: Docker's image ID.
    pub config_digest: String,
    /// Digest of the platform manifest that was unpacked.
    pub manifest_digest: String,
    /// Snapshot (chain ID) holding the unpacked root filesystem.
    pub chain_id: String,
    /// Sum of the compressed layer sizes.
    pub size: u64,
    /// Defaults the image sets for its containers.
    pub config: ImageConfig,
}

/// An image record on the node, for image garbage collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Normalised reference, as [`ImageInfo::name`] and [`ContainerSummary::image`] have it.
    pub name: String,
    /// Sum of the compressed layer sizes (0 when the image's documents are unreadable).
    pub size: u64,
}

/// How a container reaches the network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ContainerNetwork {
    /// Join the pod's network namespace (the path `PodNetwork::setup` returned).
    Namespace(PathBuf),
    /// Share the node's network namespace (`hostNetwork: true`).
    Host,
    /// A fresh namespace with only loopback.
    #[default]
    Isolated,
}

/// A bind mount of a host path (a volume) into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// Resource limits, in Kubernetes' units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// `resources.limits.memory` in bytes; the container is OOM-killed above it.
    pub memory_limit_bytes: Option<u64>,
    /// `resources.requests.cpu` in millicores, turned into cgroup CPU shares.
    pub cpu_request_millis: Option<u64>,
    /// `resources.limits.cpu` in millicores, turned into a CFS quota.
    pub cpu_limit_millis: Option<u64>,
}

/// A container's security settings, Kubernetes' `securityContext` (the container's over
/// the pod's) as the runtime applies them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Security {
    /// Every capability, unmasked `/proc`, writable `/sys`, every device of the cgroup.
    pub privileged: bool,
    /// Capability names as Kubernetes writes them (`NET_ADMIN`; `ALL`).
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    pub read_only_root_filesystem: bool,
    /// `allowPrivilegeEscalation: false`: the process and its children cannot gain
    /// privileges (no_new_privs).
    pub no_new_privileges: bool,
    /// Refuse to start as uid 0.
    pub run_as_non_root: bool,
    /// `supplementalGroups` and `fsGroup`.
    pub supplemental_groups: Vec<u32>,
    /// Namespaced kernel parameters (`securityContext.sysctls`).
    pub sysctls: Vec<(String, String)>,
    /// `seccompProfile.type: RuntimeDefault`.
    pub seccomp_runtime_default: bool,
}

/// Everything needed to create one container of a pod. Plain data: the pod worker maps the
/// Pod spec onto it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerConfig {
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    /// `spec.containers[].name`.
    pub name: String,
    /// How many times this container of the pod was started before (0 first).
    pub restart_attempt: u32,
    /// Image reference as in the pod spec; it must have been pulled.
    pub image: String,
    /// `command`: replaces the image's entrypoint when not empty.
    pub command: Vec<String>,
    /// `args`: replaces the image's cmd when not empty.
    pub args: Vec<String>,
    /// Added to the image's environment; later entries win over earlier ones and the image's.
    pub env: Vec<(String, String)>,
    /// `workingDir`, else the image's, else `/`.
    pub working_dir: Option<String>,
    pub mounts: Vec<BindMount>,
    pub network: ContainerNetwork,
    /// The pod's hostname (its name unless `spec.hostname` says otherwise).
    pub hostname: Option<String>,
    pub resources: Resources,
    /// `securityContext.runAsUser`; else the image's user; else root.
    pub run_as_user: Option<u32>,
    /// `securityContext.runAsGroup`.
    pub run_as_group: Option<u32>,
    /// The rest of the container's `securityContext`, merged with the pod's.
    pub security: Security,
    /// Extra labels on the containerd container record.
    pub labels: BTreeMap<String, String>,
    /// The main process's stdin and terminal (`stdin`, `stdinOnce`, `tty`).
    pub io: ContainerIo,
}

/// The main process's stdin and terminal, from the container's `stdin`, `stdinOnce` and
/// `tty`. Without `stdin` the process reads end-of-file at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContainerIo {
    pub stdin: bool,
    /// The stdin closes (the process reads end-of-file) when the first attach session that
    /// sent to it ends, and stays closed until the container is restarted.
    pub stdin_once: bool,
    pub tty: bool,
}

/// Where `kubectl attach -i` writes: the running main process's stdin
/// ([`ContainerRuntime::open_stdin`]).
pub type ContainerStdin = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// Where a container is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created but never started.
    Created,
    Running,
    Exited {
        exit_code: i32,
        finished_at: Option<SystemTime>,
        /// The kernel killed a process of the container for exceeding its memory limit.
        oom_killed: bool,
    },
    /// containerd reports something rkube cannot interpret (e.g. the task vanished).
    Unknown {
        reason: String,
    },
}

/// Status of one container, as the pod worker reports it in `containerStatuses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: ContainerId,
    pub state: ContainerState,
    pub started_at: Option<SystemTime>,
    /// Host PID of the container's init process while it runs.
    pub pid: Option<u32>,
    /// The image reference the container was created from.
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub log_path: Option<PathBuf>,
}

/// One container found on the node, for adoption after a kubelet restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    pub id: ContainerId,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    pub pid: Option<u32>,
}

impl ContainerSummary {
    /// The rkube identity in the labels, or `None` for containers rkube did not create.
    pub fn identity(&self) -> Option<ContainerIdentity> {
        ContainerIdentity::from_labels(&self.labels)
    }

    /// The container's name in its pod spec, if rkube created it.
    pub fn container_name(&self) -> Option<&str> {
        self.labels.get(labels::CONTAINER_NAME).map(String::as_str)
    }
}

/// Which pod and which container of its spec a containerd container is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerIdentity {
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub container_name: String,
    pub restart_attempt: u32,
}

impl ContainerIdentity {
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Self> {
        Some(Self {
            pod_uid: labels.get(labels::POD_UID)?.clone(),
            pod_namespace: labels.get(labels::POD_NAMESPACE)?.clone(),
            pod_name: labels.get(labels::POD_NAME)?.clone(),
            container_name: labels.get(labels::CONTAINER_NAME)?.clone(),
            restart_attempt: labels.get(labels::RESTART_ATTEMPT)?.parse().ok()?,
        })
    }
}

/// A command to run inside a running container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecRequest {
    pub command: Vec<String>,
    /// Written to the command's stdin, which is then closed.
    pub stdin: Option<Vec<u8>>,
    /// Killed (and an error returned) when it runs longer; probes set their timeoutSeconds.
    pub timeout: Option<Duration>,
}

/// What an exec'd command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// What the user sends to an interactive exec ([`ContainerRuntime::exec_interactive`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecSessionInput {
    Stdin(Vec<u8>),
    /// The user's stdin ended.
    StdinEof,
    /// The user's terminal changed size (tty sessions).
    Resize {
        width: u32,
        height: u32,
    },
}

/// Output of an interactive exec; a tty session has only stdout (the terminal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecChunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// A running interactive exec: input goes in as it comes, output comes out as the process
/// writes it. `output` closes once all output was read; `exit` then has the exit code.
/// Dropping `output` before the end kills the process (the user went away).
pub struct ExecSession {
    pub input: tokio::sync::mpsc::Sender<ExecSessionInput>,
    pub output: tokio::sync::mpsc::Receiver<ExecChunk>,
    pub exit: tokio::sync::oneshot::Receiver<Result<i32, Error>>,
}

/// Resource usage of a running container, from its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerStats {
    /// Cumulative CPU time, in nanoseconds.
    pub cpu_usage_nanos: u64,
    /// Memory usage minus inactive file cache: what Kubernetes calls the working set and
    /// compares with the limit.
    pub memory_working_set_bytes: u64,
    /// When the numbers were read.
    pub timestamp: SystemTime,
}

/// Errors of the container runtime. Each names the image, container or path involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// containerd could not be reached; the next call dials again.
    #[error("containerd at {} is unreachable ({operation} for {object}): {}; is containerd running?", .socket.display(), .source.message())]
    Unavailable {
        socket: PathBuf,
        operation: &'static str,
        object: String,
        #[source]
        source: tonic::Status,
    },

    /// A containerd call failed for a reason other than the ones below.
    #[error("containerd {operation} for {object} failed: {}", .source.message())]
    Containerd {
        operation: &'static str,
        object: String,
        #[source]
        source: tonic::Status,
    },

    #[error(transparent)]
    Pull(#[from] PullError),

    #[error("image {image} is not present on this node (or not unpacked); pull it first")]
    ImageNotPresent { image: String },

    #[error("the image record {image} in containerd is unusable: {reason}; pull the image again")]
    BrokenImage { image: String, reason: String },

    #[error("container {id} does not exist")]
    NotFound { id: ContainerId },

    #[error("container {id} was already started; create a new container to run it again")]
    AlreadyStarted { id: ContainerId },

    #[error("container {id} is not running; {what} needs a running container")]
    NotRunning { id: ContainerId, what: &'static str },

    #[error("invalid container config for {container}: {field}: {reason}")]
    InvalidConfig {
        container: String,
        field: &'static str,
        reason: String,
    },

    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("exec {command:?} in container {id} did not finish within {timeout:?} and was killed")]
    ExecTimeout {
        id: ContainerId,
        command: Vec<String>,
        timeout: Duration,
    },

    #[error("container {id} did not stop within {waited:?} even after SIGKILL")]
    StopTimeout { id: ContainerId, waited: Duration },

    #[error("the runtime spec of container {id} is not valid JSON: {source}")]
    BadSpec {
        id: ContainerId,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Whether the error means the container is not there (already removed).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Whether the error is an image pull failure, reported as `ErrImagePull`.
    pub fn is_pull_error(&self) -> bool {
        matches!(self, Error::Pull(_))
    }
}

/// The node's container runtime, as the pod worker uses it. Every method is safe to call
/// again after a failure (level-driven callers retry).
#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Pulls `reference` from its registry and unpacks it, so containers can be created
    /// from it. Layers already present are not fetched again.
    async fn pull_image(&self, reference: &str, options: &PullOptions) -> Result<ImageInfo, Error>;

    /// The image if it is pulled and unpacked on this node.
    async fn image_present(&self, reference: &str) -> Result<Option<ImageInfo>, Error>;

    /// Every image record in rkube's containerd namespace (image garbage collection).
    async fn list_images(&self) -> Result<Vec<ImageSummary>, Error> {
        Ok(Vec::new())
    }

    /// Deletes the image record `name` (normalised) and waits until containerd has
    /// collected the blobs and snapshots nothing else uses. Removing an image that does
    /// not exist succeeds.
    async fn remove_image(&self, name: &str) -> Result<(), Error> {
        let _ = name;
        Ok(())
    }

    /// Creates (does not start) a container; the image must be present.
    async fn create_container(&self, config: &ContainerConfig) -> Result<ContainerId, Error>;

    /// Starts a created container with stdout and stderr appended to `log_path` (absolute;
    /// its directory is created): CRI records written by the log driver when one is
    /// configured, else the raw streams. Once `container_status` reports the container
    /// exited, the file holds everything it wrote.
    async fn start_container(&self, id: &ContainerId, log_path: &Path) -> Result<(), Error>;

    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus, Error>;

    /// SIGTERM, then SIGKILL to every process of the container if it is still running after
    /// `grace`. Returns once it has exited. Stopping a stopped container succeeds.
    async fn stop_container(&self, id: &ContainerId, grace: Duration) -> Result<(), Error>;

    /// Kills if needed and deletes the container, its task and its root filesystem.
    /// Removing a container that does not exist succeeds.
    async fn remove_container(&self, id: &ContainerId) -> Result<(), Error>;

    /// Every container in rkube's containerd namespace.
    async fn list_containers(&self) -> Result<Vec<ContainerSummary>, Error>;

    /// Runs a command in a running container and collects its output.
    async fn exec(&self, id: &ContainerId, request: &ExecRequest) -> Result<ExecOutput, Error>;

    async fn container_stats(&self, id: &ContainerId) -> Result<ContainerStats, Error>;

    /// Container exits as they happen, so the kubelet notices an exit at once instead of
    /// polling every container. The stream re-establishes itself (sending
    /// [`RuntimeEvent::Resync`]) and ends only when the receiver is dropped; a runtime
    /// without events returns a closed receiver and the kubelet relies on its resync.
    fn exit_events(&self) -> tokio::sync::mpsc::Receiver<RuntimeEvent> {
        tokio::sync::mpsc::channel(1).1
    }

    /// Every running container with its usage now (the kubelet's periodic sample).
    async fn running_container_stats(&self) -> Result<Vec<(ContainerSummary, ContainerStats)>, Error> {
        let mut out = Vec::new();
        for c in self.list_containers().await? {
            if c.state != ContainerState::Running {
                continue;
            }
            if let Ok(stats) = self.container_stats(&c.id).await {
                out.push((c, stats));
            }
        }
        Ok(out)
    }

    /// Starts `command` in a running container with streaming stdin and output; with `tty`
    /// on a terminal (stderr is the terminal too), as `kubectl exec -it` does.
    async fn exec_interactive(
        &self,
        id: &ContainerId,
        command: &[String],
        tty: bool,
    ) -> Result<ExecSession, Error> {
        let _ = (command, tty);
        Err(Error::InvalidConfig {
            container: id.0.clone(),
            field: "exec",
            reason: "this runtime has no interactive exec".to_string(),
        })
    }

    /// A writer to the running main process's stdin (created with [`ContainerIo::stdin`]);
    /// several may be open at once, and dropping one does not close the stdin.
    async fn open_stdin(&self, id: &ContainerId) -> Result<ContainerStdin, Error> {
        Err(Error::InvalidConfig {
            container: id.0.clone(),
            field: "stdin",
            reason: "this runtime keeps no stdin for a container".to_string(),
        })
    }

    /// Closes the main process's stdin: it reads end-of-file (`stdinOnce`).
    async fn close_stdin(&self, id: &ContainerId) -> Result<(), Error> {
        let _ = id;
        Ok(())
    }

    /// Sets the size of the main process's terminal (created with [`ContainerIo::tty`]).
    async fn resize_tty(&self, id: &ContainerId, width: u32, height: u32) -> Result<(), Error> {
        let _ = (id, width, height);
        Ok(())
    }
}
