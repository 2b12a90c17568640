//! [`ContainerRuntime`](super::ContainerRuntime) on containerd 1.6's native gRPC API, in its own containerd
//! namespace.
//!
//! Containers are plain containerd containers (runc v2 shim) whose root filesystem is an
//! overlayfs snapshot prepared on the image's chain ID, and whose stdout/stderr go to a log
//! file: through `rkubelet log-driver` (the shim's `binary://` IO, CRI records) when
//! `log_driver` is set, else raw through the shim's `file://` IO. Everything the pod worker needs to recognise a
//! container after a restart is in its labels.

//!
//! * this module: the connection (dialled lazily, dropped and redialled when containerd
//!   restarts), requests in rkube's containerd namespace, and mapping failures to errors;
//! * [`lifecycle`]: containers and their tasks, from create to remove, and the
//!   [`ContainerRuntime`](super::ContainerRuntime) implementation;
//! * [`events`]: task exits from containerd's event stream;
//! * [`exec`]: processes run inside running containers, one-shot or interactive;
//! * [`stats`]: CPU and memory of running containers from their cgroups;
//! * [`pull`]: client-side image pulls into containerd's content store.

mod events;
mod exec;
mod lifecycle;
mod pull;
mod stats;
mod stdin;

pub use pull::ImageConfig;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::version_client::VersionClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::{cgroups, spec, Error};
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
    /// second waits and then finds everything present, or takes the result of a pull that
    /// began after it was asked for (see `pull`). Each lock holds the last such pull.
    pub(super) pull_locks:
        tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<pull::RecentPull>>>>>,
    /// Containers whose output this process copies into their logs (those with a stdin
    /// and no terminal: see `stdin`).
    pub(super) log_copiers: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Set when this runtime goes: its copiers stop, as they would with the process.
    pub(super) stop_copiers: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_copiers
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
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
                log_copiers: Arc::default(),
                stop_copiers: Arc::default(),
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

    pub(super) fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel())
    }

    pub(super) fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel())
    }

    pub(super) fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel())
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

pub(super) fn random_hex(bytes: usize) -> String {
    use rand::RngCore as _;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
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
