//! The node-side runtime below `rkubelet`: everything the pod worker needs to turn a pod
//! bound to this node into running processes, and nothing about *which* pods to run. It has
//! no apiserver client and decides no restarts, probes or status; the kubelet daemon
//! (`rkube-kubelet`) does that on top of it.
//!
//! * [`runtime`] — the [`ContainerRuntime`](runtime::ContainerRuntime) trait and its
//!   containerd implementation ([`runtime::containerd`]: connection, container lifecycle,
//!   exit events, exec, stats, client-side image pulls over the OCI distribution protocol),
//!   the OCI runtime spec built from a container's configuration, and cgroups.
//! * [`network`] — the [`PodNetwork`](network::PodNetwork) trait and its CNI
//!   implementation: one network namespace per pod, wired by the standard CNI plugins.
//! * [`image`] — image references, registry credentials (pull secrets) and the registry
//!   client the puller uses.
//! * [`logs`] and [`log_driver`] — the CRI log format and the per-container logger that
//!   writes it.
//! * [`mounts`] — reading the kernel's mount table.
//! * [`disk_usage`] — what a directory tree holds on disk (emptyDir `sizeLimit`).
//!
//! Both side effects sit behind traits with in-crate fakes ([`runtime::FakeRuntime`],
//! [`network::FakeNetwork`]) for the pod worker's unit tests. The crate keeps no state of
//! its own beyond what containerd and the CNI plugins store: a restarted kubelet
//! rediscovers everything from container labels and the network state directory.
//!
//! With the `test-support` feature, `testing` provides the end-to-end harness: a
//! throwaway containerd inside a private network namespace, a loopback registry and the
//! busybox test image.
//!
//! # What the pod worker must know
//!
//! * **One containerd container per start.** A container is started once; a restart is a
//!   new `create_container` with `restart_attempt + 1` (then remove the old one after its
//!   status was recorded as `lastState`). `start_container` on a started one is
//!   `Error::AlreadyStarted`.
//! * **Adoption** is by labels (`runtime::labels`): `list_containers` + `ContainerIdentity`.
//!   The log path and start time are labels too, so a new client reports them.
//! * **OOMKilled** is read from the container's cgroup (`oom_kill` in `memory.oom_control`
//!   on cgroup v1, `memory.events` on v2) while the exited task still exists, and then
//!   recorded in the `io.rkube.container.oom-killed` label. Call `container_status` (or
//!   `list_containers`) before `remove_container`, or the evidence is gone.
//! * **Logs**: with a log driver configured (`ContainerdConfig::log_driver`, the daemon's
//!   default), the shim starts `rkubelet log-driver PATH` ([`log_driver`]) for each
//!   container, which appends CRI records ([`logs`]: time, stream, full/partial, text) to
//!   the log file; stdout and stderr stay apart and in arrival order. The shim owns the
//!   logger, so logging continues while the kubelet is down. A line is written when it
//!   ends, or after 100 ms without its newline (as a partial record). Without a driver the
//!   shim appends the raw streams (`file://`), without times; readers detect the format
//!   per file. The logger exits when the task is deleted. Rotation must be
//!   copy-and-truncate (the writer keeps the file open, O_APPEND).
//! * **Network namespaces** live at `<run_dir>/netns/<pod-uid>` (default
//!   `/run/rkubelet/netns/<pod-uid>`); pass `PodNetworkStatus::netns_path` as
//!   `ContainerNetwork::Namespace`. Containers of a pod share the network namespace (and so
//!   localhost and the pod IP) but each has its own IPC, PID and UTS namespace; set the same
//!   hostname on each. /etc/hosts and /etc/resolv.conf are not written here: bind-mount
//!   them like volumes.
//! * **Cgroups** are `<cgroup_parent>/<pod-uid>/<container-id>`; call
//!   `ContainerdRuntime::remove_pod_cgroup` once a pod's last container is removed.
//! * Exit codes of signalled processes are `128 + signal` (137 after SIGKILL).
//! * Containers inherit containerd's rlimits (no RLIMIT_NOFILE in the spec).

/// The tracing target of a pod's startup steps (`rkube_api::POD_STARTUP_TRACE`, which this
/// crate cannot name: it does not depend on the API crate). Spans at DEBUG named after the
/// step, with the field `pod_uid`.
pub const POD_STARTUP_TRACE: &str = "rkube::pod_startup";

pub mod disk_usage;
pub mod image;
pub mod local_volume;
pub mod log_driver;
pub mod logs;
pub mod mounts;
pub mod network;
pub mod runtime;
#[cfg(feature = "test-support")]
pub mod testing;

/// Pod UIDs become cgroup, file and network namespace names: 1-128 letters, digits, `-`,
/// `_` or `.`, and not `.` or `..`. `Err` says what is wrong, for the caller's error.
pub fn check_pod_uid(uid: &str) -> Result<(), String> {
    let ok = !uid.is_empty()
        && uid.len() <= 128
        && uid != "."
        && uid != ".."
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!("{uid:?} must be 1-128 letters, digits, '-', '_' or '.'"))
    }
}

/// `error: cause: cause ...`: see [`rkube_daemon::error_report`].
pub use rkube_daemon::error_report;
