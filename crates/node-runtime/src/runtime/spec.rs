//! Builds the OCI runtime spec (config.json) of a container from the pod's view of it
//! ([`ContainerConfig`]) and the image's defaults, the way Kubernetes on containerd does:
//! the same default mounts, capabilities and masked paths as containerd's defaults, and
//! Kubernetes' rules for command/args, env and CPU/memory limits.

use serde_json::{json, Value};

use super::{ContainerConfig, ContainerId, ContainerNetwork, Error, ImageConfig};

/// Label holding the numeric stop signal from the image's `StopSignal`.
pub const STOP_SIGNAL_LABEL: &str = "io.rkube.container.stop-signal";

/// PATH when the image sets none (containerd's default).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// CFS period Kubernetes uses for CPU limits.
const CPU_PERIOD_US: u64 = 100_000;
/// Kubernetes' floor for CPU shares (best-effort containers get this).
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
/// The kernel's minimum CFS quota.
const MIN_QUOTA_US: u64 = 1_000;

/// Capabilities a container gets by default (containerd's and Docker's default set).
const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The process arguments, by Kubernetes' rules: `command` replaces the image's entrypoint
/// (and then the image's cmd is dropped); `args` replaces the image's cmd.
pub fn process_args(config: &ContainerConfig, image: &ImageConfig) -> Vec<String> {
    match (config.command.is_empty(), config.args.is_empty()) {
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
        (true, false) => image.entrypoint.iter().chain(&config.args).cloned().collect(),
        (false, _) => config.command.iter().chain(&config.args).cloned().collect(),
    }
}

/// Image env, then the container's, a later value of a name replacing an earlier one in
/// place; PATH defaulted; HOSTNAME set as containerd's CRI plugin does.
pub fn environment(config: &ContainerConfig, image: &ImageConfig) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| match env.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = value.to_string(),
        None => env.push((name.to_string(), value.to_string())),
    };
    for entry in &image.env {
        let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
        set(name, value);
    }
    if let Some(hostname) = &config.hostname {
        set("HOSTNAME", hostname);
    }
    for (name, value) in &config.env {
        set(name, value);
    }
    let mut out: Vec<String> = env.into_iter().map(|(n, v)| format!("{n}={v}")).collect();
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, DEFAULT_PATH.to_string());
    }
    out
}

/// `cpu.shares` for a CPU request in millicores (Kubernetes' `MilliCPUToShares`).
pub fn cpu_shares(request_millis: Option<u64>) -> u64 {
    match request_millis {
        None | Some(0) => MIN_SHARES,
        Some(m) => (m.saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES),
    }
}

/// CFS quota (µs per 100ms period, as Kubernetes sets it) for a CPU limit in millicores.
pub fn cpu_quota(limit_millis: u64) -> u64 {
    (limit_millis.saturating_mul(CPU_PERIOD_US) / 1000).max(MIN_QUOTA_US)
}

/// [`check_pod_uid`](crate::check_pod_uid), as an error about the container `display`.
pub fn validate_pod_uid(uid: &str, display: &str) -> Result<(), Error> {
    crate::check_pod_uid(uid).map_err(|reason| Error::InvalidConfig {
        container: display.to_string(),
        field: "pod uid",
        reason,
    })
}

/// `SIGTERM`, `TERM` or `15` to a signal number.
pub fn parse_signal(signal: &str) -> Option<i32> {
    if let Ok(n) = signal.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = signal.trim_start_matches("SIG");
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        _ => return None,
    };
    Some(n)
}

/// uid and gid the process runs as.
fn user(config: &ContainerConfig, image: &ImageConfig, display: &str) -> Result<(u32, u32), Error> {
    let (image_uid, image_gid) = match image.user.as_deref() {
        None => (0, None),
        Some(user) => {
            let (u, g) = match user.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (user, None),
            };
            let numeric = |s: &str, what: &str| -> Result<u32, Error> {
                if s == "root" {
                    return Ok(0);
                }
                s.parse().map_err(|_| Error::InvalidConfig {
                    container: display.to_string(),
                    field: "image user",
                    reason: format!(
                        "the image runs as {what} {s:?}, a name rkube cannot resolve without the image's /etc/passwd; set securityContext.runAsUser (and runAsGroup) to numeric ids"
                    ),
                })
            };
            // A pod-level runAsUser makes the image's user irrelevant.
            if config.run_as_user.is_some() {
                (0, None)
            } else {
                (numeric(u, "user")?, g.map(|g| numeric(g, "group")).transpose()?)
            }
        }
    };
    let uid = config.run_as_user.unwrap_or(image_uid);
    let gid = config.run_as_group.or(image_gid).unwrap_or(0);
    Ok((uid, gid))
}

/// Every capability of the kernels rkube runs on, for `privileged` and `add: [ALL]`.
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_CONTROL",
    "CAP_AUDIT_READ",
    "CAP_AUDIT_WRITE",
    "CAP_BLOCK_SUSPEND",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_KILL",
    "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_MKNOD",
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_RAW",
    "CAP_PERFMON",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT",
    "CAP_SYS_MODULE",
    "CAP_SYS_NICE",
    "CAP_SYS_PACCT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
];

/// The container's capability set: the default set (every one when privileged), less
/// `drop` (`ALL` drops every one), plus `add`, as containerd's CRI plugin computes it.
fn capabilities(sec: &super::Security) -> Result<Vec<String>, String> {
    let norm = |c: &str| -> Result<String, String> {
        let upper = c.to_ascii_uppercase();
        let full = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        if full == "CAP_ALL" || ALL_CAPABILITIES.contains(&full.as_str()) {
            Ok(full)
        } else {
            Err(format!("unknown capability {c:?}"))
        }
    };
    if sec.privileged {
        return Ok(ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect());
    }
    let drop: Vec<String> = sec
        .drop_capabilities
        .iter()
        .map(|c| norm(c))
        .collect::<Result<_, _>>()?;
    let add: Vec<String> = sec
        .add_capabilities
        .iter()
        .map(|c| norm(c))
        .collect::<Result<_, _>>()?;
    let mut caps: Vec<String> = if drop.iter().any(|c| c == "CAP_ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .filter(|c| !drop.iter().any(|d| d == *c))
            .map(|c| c.to_string())
            .collect()
    };
    for c in add {
        if c == "CAP_ALL" {
            return Ok(ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect());
        }
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

/// Syscalls the RuntimeDefault seccomp profile refuses (EPERM): those Docker's and
/// containerd's default profiles leave out for a container without CAP_SYS_ADMIN — kernel
/// modules and keyrings, mounts and namespaces, clocks, reboot, tracing other processes,
/// BPF and perf. (Those profiles are allow-lists; this deny-list keeps every other call
/// working, so a syscall newer than the profile is not refused by surprise.)
const SECCOMP_DENIED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
];

fn runtime_default_seccomp() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": [{"names": SECCOMP_DENIED, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    })
}

/// The OCI runtime spec for container `id`.
pub fn build(
    id: &ContainerId,
    config: &ContainerConfig,
    image: &ImageConfig,
    cgroups_path: &str,
) -> Result<Value, Error> {
    let display = format!(
        "{}/{} container {}",
        config.pod_namespace, config.pod_name, config.name
    );
    let invalid = |field: &'static str, reason: String| Error::InvalidConfig {
        container: display.clone(),
        field,
        reason,
    };
    let args = process_args(config, image);
    if args.is_empty() {
        return Err(invalid(
            "command",
            "neither the container nor its image says what to run; set command".to_string(),
        ));
    }
    for (name, _) in &config.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(invalid("env", format!("{name:?} is not a valid variable name")));
        }
    }
    let cwd = config
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone())
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(invalid("workingDir", format!("{cwd:?} is not an absolute path")));
    }
    let (uid, gid) = user(config, image, &display)?;

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for mount in &config.mounts {
        if !mount.container_path.starts_with('/') {
            return Err(invalid(
                "volumeMounts",
                format!("mount path {:?} is not absolute", mount.container_path),
            ));
        }
        if !mount.host_path.is_absolute() {
            return Err(invalid(
                "volumeMounts",
                format!("host path {} is not absolute", mount.host_path.display()),
            ));
        }
        let mut options = vec!["rbind", "rprivate"];
        options.push(if mount.read_only { "ro" } else { "rw" });
        mounts.push(json!({
            "destination": mount.container_path,
            "type": "bind",
            "source": mount.host_path,
            "options": options,
        }));
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match &config.network {
        ContainerNetwork::Namespace(path) => {
            if !path.is_absolute() {
                return Err(invalid(
                    "network namespace",
                    format!("{} is not an absolute path", path.display()),
                ));
            }
            namespaces.push(json!({"type": "network", "path": path}));
        }
        ContainerNetwork::Isolated => namespaces.push(json!({"type": "network"})),
        ContainerNetwork::Host => {}
    }

    let mut resources = json!({
        // Deny all devices, then runc adds its default allow-list (null, zero, tty, ...).
        "devices": [{"allow": false, "access": "rwm"}],
        "cpu": {"shares": cpu_shares(config.resources.cpu_request_millis)},
    });
    if let Some(limit) = config.resources.cpu_limit_millis {
        resources["cpu"]["quota"] = json!(cpu_quota(limit));
        resources["cpu"]["period"] = json!(CPU_PERIOD_US);
    }
    if let Some(limit) = config.resources.memory_limit_bytes {
        if limit < 4 << 20 {
            return Err(invalid(
                "resources.limits.memory",
                format!("{limit} bytes is below the 4Mi a container needs to start"),
            ));
        }
        resources["memory"] = json!({"limit": limit});
    }

    let sec = &config.security;
    if sec.run_as_non_root && uid == 0 {
        return Err(invalid(
            "securityContext.runAsNonRoot",
            "container has runAsNonRoot and image will run as root; set runAsUser to a non-zero id or use an image that runs as a non-root user".into(),
        ));
    }
    let capabilities = json!(capabilities(sec).map_err(|e| invalid("securityContext.capabilities", e))?);
    if sec.privileged {
        // a privileged container sees the host's kernel interfaces, as in Kubernetes
        for m in &mut mounts {
            if matches!(m["destination"].as_str(), Some("/sys" | "/sys/fs/cgroup")) {
                if let Some(opts) = m["options"].as_array_mut() {
                    opts.retain(|o| o != "ro");
                    opts.push(json!("rw"));
                }
            }
        }
        resources["devices"] = json!([{"allow": true, "access": "rwm"}]);
    }
    // No rlimits: containers inherit containerd's (its systemd unit sets the open-file
    // limit). Asking for more than containerd has fails in runc without CAP_SYS_RESOURCE,
    // and asking for containerd's default 1024 starves servers.
    let mut spec = json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": config.io.tty,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": environment(config, image),
            "cwd": cwd,
            "capabilities": {
                "bounding": capabilities,
                "effective": capabilities,
                "permitted": capabilities,
            },
            "noNewPrivileges": sec.no_new_privileges && !sec.privileged,
        },
        "root": {"path": "rootfs", "readonly": sec.read_only_root_filesystem},
        "mounts": mounts,
        "linux": {
            "resources": resources,
            "cgroupsPath": cgroups_path,
            "namespaces": namespaces,
            "maskedPaths": if sec.privileged { &[][..] } else { MASKED_PATHS },
            "readonlyPaths": if sec.privileged { &[][..] } else { READONLY_PATHS },
        },
        "annotations": {"io.rkube.container.id": id.as_str()},
    });
    if !sec.supplemental_groups.is_empty() {
        spec["process"]["user"]["additionalGids"] = json!(sec.supplemental_groups);
    }
    if !sec.sysctls.is_empty() {
        let sysctls: serde_json::Map<String, Value> =
            sec.sysctls.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        spec["linux"]["sysctl"] = Value::Object(sysctls);
    }
    if sec.seccomp_runtime_default && !sec.privileged {
        spec["linux"]["seccomp"] = runtime_default_seccomp();
    }
    if let Some(hostname) = &config.hostname {
        spec["hostname"] = json!(hostname);
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::runtime::{BindMount, Resources};

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            env: vec!["PATH=/bin".into(), "A=image".into()],
            working_dir: Some("/srv".into()),
            user: None,
            stop_signal: None,
        }
    }

    fn config() -> ContainerConfig {
        ContainerConfig {
            pod_uid: "uid-1".into(),
            pod_namespace: "default".into(),
            pod_name: "web".into(),
            name: "app".into(),
            image: "busybox".into(),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let img = image();
        let mut c = config();
        assert_eq!(process_args(&c, &img), ["/entry", "default"]);
        c.args = vec!["x".into()];
        assert_eq!(process_args(&c, &img), ["/entry", "x"]);
        c.command = vec!["sh".into()];
        assert_eq!(process_args(&c, &img), ["sh", "x"]);
        c.args.clear();
        assert_eq!(process_args(&c, &img), ["sh"]);
    }

    #[test]
    fn env_overrides_in_place_and_defaults_path() {
        let mut c = config();
        c.env = vec![("A".into(), "pod".into()), ("B".into(), "1=2".into())];
        c.hostname = Some("web".into());
        assert_eq!(
            environment(&c, &image()),
            ["PATH=/bin", "A=pod", "HOSTNAME=web", "B=1=2"]
        );
        let bare = ImageConfig::default();
        assert_eq!(environment(&config(), &bare), [DEFAULT_PATH]);
    }

    #[test]
    fn cpu_and_memory_limits_become_cgroup_settings() {
        assert_eq!(cpu_shares(None), 2);
        assert_eq!(cpu_shares(Some(250)), 256);
        assert_eq!(cpu_shares(Some(1)), 2);
        assert_eq!(cpu_quota(500), 50_000);
        assert_eq!(cpu_quota(1), 1_000);
        let mut c = config();
        c.resources = Resources {
            memory_limit_bytes: Some(64 << 20),
            cpu_request_millis: Some(100),
            cpu_limit_millis: Some(200),
        };
        let spec = build(&ContainerId::from("abc"), &c, &image(), "/rkube/uid-1/abc").unwrap();
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(spec["linux"]["resources"]["cpu"]["shares"], 102);
        assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 20_000);
        assert_eq!(spec["linux"]["cgroupsPath"], "/rkube/uid-1/abc");
    }

    #[test]
    fn pod_network_namespace_and_mounts_are_in_the_spec() {
        let mut c = config();
        c.network = ContainerNetwork::Namespace(PathBuf::from("/run/rkubelet/netns/uid-1"));
        c.hostname = Some("web".into());
        c.mounts = vec![BindMount {
            host_path: PathBuf::from("/var/lib/rkubelet/pods/uid-1/volumes/data"),
            container_path: "/data".into(),
            read_only: true,
        }];
        let spec = build(&ContainerId::from("abc"), &c, &image(), "/rkube/uid-1/abc").unwrap();
        let namespaces = spec["linux"]["namespaces"].as_array().unwrap();
        assert!(namespaces.contains(&json!({"type": "network", "path": "/run/rkubelet/netns/uid-1"})));
        assert_eq!(spec["hostname"], "web");
        assert_eq!(spec["process"]["cwd"], "/srv");
        let data = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/data")
            .unwrap();
        assert_eq!(data["options"], json!(["rbind", "rprivate", "ro"]));
        let host = ContainerConfig {
            network: ContainerNetwork::Host,
            ..config()
        };
        let spec = build(&ContainerId::from("abc"), &host, &image(), "/x").unwrap();
        assert!(!spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
    }

    #[test]
    fn bad_input_is_an_error_naming_the_field() {
        let mut c = config();
        c.working_dir = Some("relative".into());
        let err = build(&ContainerId::from("a"), &c, &image(), "/x").unwrap_err();
        assert!(err.to_string().contains("workingDir"), "{err}");

        let err = build(&ContainerId::from("a"), &config(), &ImageConfig::default(), "/x").unwrap_err();
        assert!(err.to_string().contains("command"), "{err}");

        let named = ImageConfig {
            user: Some("nginx".into()),
            ..image()
        };
        let err = build(&ContainerId::from("a"), &config(), &named, "/x").unwrap_err();
        assert!(err.to_string().contains("runAsUser"), "{err}");
        let c = ContainerConfig {
            run_as_user: Some(101),
            ..config()
        };
        let spec = build(&ContainerId::from("a"), &c, &named, "/x").unwrap();
        assert_eq!(spec["process"]["user"]["uid"], 101);

        assert!(validate_pod_uid("../etc", "p").is_err());
        assert!(validate_pod_uid("0b1e-11", "p").is_ok());
    }

    #[test]
    fn image_user_with_group() {
        let img = ImageConfig {
            user: Some("1000:2000".into()),
            ..image()
        };
        let spec = build(&ContainerId::from("a"), &config(), &img, "/x").unwrap();
        assert_eq!(spec["process"]["user"], json!({"uid": 1000, "gid": 2000}));
        assert_eq!(parse_signal("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGBOGUS"), None);
    }
}
