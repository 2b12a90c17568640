//! Pod volumes on the node's disk, under `<root-dir>/pods/<uid>/`:
//!
//! * `emptyDir`: a directory `volumes/<name>`; with `medium: Memory` a tmpfs is mounted on
//!   it (`sizeLimit` is its `size=`), shared by the pod's containers and unmounted when the
//!   pod is cleaned up ([`unmount_pod_volumes`]).
//! * `hostPath`: the host path itself; `DirectoryOrCreate`/`FileOrCreate` create it,
//!   `Directory`/`File` require it.
//! * `configMap`/`secret`: files written from the object (keys, or `items` with their
//!   paths and modes, `defaultMode`), replaced atomically one by one on every refresh.
//! * `/etc/hosts` and `/etc/resolv.conf` are files of the pod, bind-mounted into each
//!   container.
//! * The ServiceAccount volume: `token` (a TokenRequest bound to the pod, renewed when 80%
//!   of its lifetime has passed), `ca.crt` (the cluster CA this kubelet trusts the
//!   apiserver with) and `namespace`, in `serviceaccount/`, mounted read-only at
//!   `/var/run/secrets/kubernetes.io/serviceaccount` in every container unless
//!   `automountServiceAccountToken` is false (the pod's, else its ServiceAccount's) or a
//!   volumeMount already uses that path. Kubernetes' admission adds this as a projected
//!   volume `kube-api-access-XXXXX` to the pod spec, whose `ca.crt` comes from a ConfigMap
//!   `kube-root-ca.crt` a controller publishes in every namespace; here the kubelet adds it
//!   itself, because then it needs no published ConfigMap (a node works with the
//!   apiserver alone) and the pod spec stays as the user wrote it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use rkube_api::core::v1::{Container, KeyToPath, Pod, Secret, ServiceAccount};
use rkube_client::{Api, Client};

use rkube_node_runtime::mounts;
use rkube_node_runtime::runtime::BindMount;

mod projected;
use projected::{config_map_data, downward_files, projected_files, secret_source};

/// Why a pod's volumes cannot be prepared; each names the pod and volume, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(
        "volume {volume:?} of pod {pod}: {kind} {name:?} not found; create it or mark the volume optional"
    )]
    SourceMissing {
        pod: String,
        volume: String,
        kind: &'static str,
        name: String,
    },
    #[error("volume {volume:?} of pod {pod}: reading {kind} {name:?}: {source}")]
    Api {
        pod: String,
        volume: String,
        kind: &'static str,
        name: String,
        #[source]
        source: Box<rkube_client::Error>,
    },
    #[error("volume {volume:?} of pod {pod}: {what} {}: {source}", .path.display())]
    Io {
        pod: String,
        volume: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {volume:?} of pod {pod}: {reason}")]
    Invalid {
        pod: String,
        volume: String,
        reason: String,
    },
    #[error("the ServiceAccount token of pod {pod} (ServiceAccount {account:?}): {source}")]
    Token {
        pod: String,
        account: String,
        #[source]
        source: Box<rkube_client::Error>,
    },
    #[error("container {container:?} of pod {pod}: volumeMounts: {reason}")]
    Mount {
        pod: String,
        container: String,
        reason: String,
    },
}

/// Unmounts everything mounted below a pod's directory (memory-backed emptyDirs), so the
/// directory can be removed; lazily, so a process still inside does not stop the cleanup.
pub fn unmount_pod_volumes(dirs: &PodDirs) -> std::io::Result<()> {
    mounts::unmount_below(&dirs.root)
}

/// Paths of one pod's files on the node.
#[derive(Debug, Clone)]
pub struct PodDirs {
    pub root: PathBuf,
}

impl PodDirs {
    pub fn new(root_dir: &Path, uid: &str) -> Self {
        PodDirs {
            root: root_dir.join("pods").join(uid),
        }
    }
    /// The kubelet's root directory (`<root-dir>` of `<root-dir>/pods/<uid>`).
    pub fn node_root(&self) -> PathBuf {
        self.root
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
    pub fn volume(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }
    /// The ServiceAccount volume (outside `volumes/`, so no pod volume's name can clash).
    pub fn service_account(&self) -> PathBuf {
        self.root.join("serviceaccount")
    }
    pub fn hosts(&self) -> PathBuf {
        self.root.join("etc-hosts")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.root.join("resolv.conf")
    }
    pub fn logs(&self, container: &str) -> PathBuf {
        self.root.join("logs").join(container)
    }
    /// The log of one start of a container: `logs/<container>/<attempt>.log`.
    pub fn log(&self, container: &str, attempt: u32) -> PathBuf {
        self.logs(container).join(format!("{attempt}.log"))
    }
}

fn pod_key(pod: &Pod) -> String {
    let m = pod.metadata.as_ref();
    format!(
        "{}/{}",
        m.map(|m| m.namespace.as_str()).unwrap_or_default(),
        m.map(|m| m.name.as_str()).unwrap_or_default()
    )
}

/// Where the ServiceAccount volume is mounted in each container, as in Kubernetes.
pub const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Its key in the map [`prepare`] returns: not a valid volume name, so no pod volume
/// can be mistaken for it.
const SERVICE_ACCOUNT_VOLUME: &str = "kubernetes.io/serviceaccount";
/// The lifetime the kubelet asks for, as Kubernetes' kubelet (3607 seconds: an hour,
/// and seven seconds that tell its tokens apart).
const TOKEN_EXPIRATION_SECONDS: i32 = 3607;

/// Creates or refreshes every volume of `pod`; returns volume name → host path.
/// `cluster_ca` is what the ServiceAccount volume's `ca.crt` holds.
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    dirs: &PodDirs,
    cluster_ca: Option<&[u8]>,
) -> Result<HashMap<String, PathBuf>, VolumeError> {
    let key = pod_key(pod);
    let namespace = pod
        .metadata
        .as_ref()
        .map(|m| m.namespace.clone())
        .unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = HashMap::new();
    for v in &spec.volumes {
        let io = |what: &'static str, path: &Path| {
            let (pod, volume, path) = (key.clone(), v.name.clone(), path.to_path_buf());
            move |source| VolumeError::Io {
                pod,
                volume,
                what,
                path,
                source,
            }
        };
        let path = if let Some(ed) = &v.empty_dir {
            let p = dirs.volume(&v.name);
            std::fs::create_dir_all(&p).map_err(io("creating", &p))?;
            match ed.medium.as_str() {
                "" => {}
                "Memory" => {
                    let size =
                        match &ed.size_limit {
                            Some(q) => Some(q.value().ok().filter(|b| *b > 0).ok_or_else(|| {
                                VolumeError::Invalid {
                                    pod: key.clone(),
                                    volume: v.name.clone(),
                                    reason: format!(
                                        "emptyDir.sizeLimit {:?} is not a positive quantity of bytes",
                                        q.string
                                    ),
                                }
                            })?),
                            None => None,
                        };
                    mounts::mount_tmpfs(&p, size).map_err(io("mounting a tmpfs on", &p))?;
                }
                other => {
                    return Err(VolumeError::Invalid {
                        pod: key,
                        volume: v.name.clone(),
                        reason: format!(
                            "emptyDir.medium {other:?} is not supported; use \"\" (node disk) or Memory"
                        ),
                    })
                }
            }
            p
        } else if let Some(hp) = &v.host_path {
            let p = PathBuf::from(&hp.path);
            if !p.is_absolute() {
                return Err(VolumeError::Invalid {
                    pod: key,
                    volume: v.name.clone(),
                    reason: format!("hostPath.path {:?} must be absolute", hp.path),
                });
            }
            match hp.r#type.as_str() {
                "DirectoryOrCreate" => std::fs::create_dir_all(&p).map_err(io("creating", &p))?,
                "FileOrCreate" if !p.exists() => {
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
                    }
                    std::fs::File::create(&p).map_err(io("creating", &p))?;
                }
                "Directory" if !p.is_dir() => {
                    return Err(VolumeError::Invalid {
                        pod: key,
                        volume: v.name.clone(),
                        reason: format!("hostPath {} is not a directory (type Directory)", p.display()),
                    })
                }
                "File" if !p.is_file() => {
                    return Err(VolumeError::Invalid {
                        pod: key,
                        volume: v.name.clone(),
                        reason: format!("hostPath {} is not a file (type File)", p.display()),
                    })
                }
                _ => {}
            }
            p
        } else if let Some(cm) = &v.config_map {
            let data = config_map_data(client, &key, &namespace, &v.name, &cm.name, cm.optional).await?;
            let p = dirs.volume(&v.name);
            let files = key_files(
                &key,
                &v.name,
                &data.unwrap_or_default(),
                &cm.items,
                cm.default_mode,
            )?;
            write_files(&key, &v.name, &p, files)?;
            p
        } else if let Some(s) = &v.secret {
            let data = secret_source(client, &key, &namespace, &v.name, &s.secret_name, s.optional).await?;
            let p = dirs.volume(&v.name);
            let files = key_files(&key, &v.name, &data.unwrap_or_default(), &s.items, s.default_mode)?;
            write_files(&key, &v.name, &p, files)?;
            p
        } else if let Some(projected) = &v.projected {
            let p = dirs.volume(&v.name);
            let files = projected_files(client, pod, &v.name, projected, &p).await?;
            write_files(&key, &v.name, &p, files)?;
            p
        } else if let Some(d) = &v.downward_api {
            let p = dirs.volume(&v.name);
            let files = downward_files(pod, &v.name, &d.items, d.default_mode)?;
            write_files(&key, &v.name, &p, files)?;
            p
        } else if let Some(c) = &v.persistent_volume_claim {
            // the volume's mount, bound into the pod's directory (which goes with the pod)
            let p = dirs.volume(&v.name);
            crate::claims::mount_claim(client, &namespace, &c.claim_name, &dirs.node_root(), &p)
                .await
                .map_err(|reason| VolumeError::Invalid {
                    pod: key.clone(),
                    volume: v.name.clone(),
                    reason,
                })?;
            p
        } else {
            return Err(VolumeError::Invalid {
                pod: key,
                volume: v.name.clone(),
                reason: "no supported source (emptyDir, hostPath, configMap, secret, projected, downwardAPI)"
                    .into(),
            });
        };
        // fsGroup: the pod's volumes (not the host's paths) belong to that group, writable
        // by it where the volume is, with new files inheriting it, as Kubernetes sets it up.
        let fs_group = spec.security_context.as_ref().and_then(|sc| sc.fs_group);
        if let (Some(gid), None) = (fs_group, &v.host_path) {
            let writable = v.empty_dir.is_some();
            set_group(&path, gid.max(0) as u32, writable).map_err(io("setting the fsGroup of", &path))?;
        }
        out.insert(v.name.clone(), path);
    }
    if let Some(dir) = prepare_service_account(client, pod, dirs, cluster_ca).await? {
        out.insert(SERVICE_ACCOUNT_VOLUME.into(), dir);
    }
    Ok(out)
}

/// Gives `root` and everything below it to group `gid`: group-readable (and writable when
/// `writable`), directories setgid so new files join the group.
fn set_group(root: &Path, gid: u32, writable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(root)?;
    if meta.file_type().is_symlink() {
        // projections' `..data` links: their targets are walked on their own
        return Ok(());
    }
    std::os::unix::fs::chown(root, None, Some(gid))?;
    let mut mode = meta.permissions().mode() | 0o040;
    if writable {
        mode |= 0o020;
    }
    if meta.is_dir() {
        mode |= 0o2010;
        for entry in std::fs::read_dir(root)? {
            set_group(&entry?.path(), gid, writable)?;
        }
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode))
}

/// Writes (or renews) the ServiceAccount volume of `pod`; its directory, or `None` when
/// the pod gets none: automount is off, its ServiceAccount does not exist (the apiserver
/// admits such pods; Kubernetes refuses them), or the apiserver issues no tokens (an
/// `--insecure` development apiserver, where no token is needed).
async fn prepare_service_account(
    client: &Client,
    pod: &Pod,
    dirs: &PodDirs,
    cluster_ca: Option<&[u8]>,
) -> Result<Option<PathBuf>, VolumeError> {
    let key = pod_key(pod);
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let account = if spec.service_account_name.is_empty() {
        "default".to_string()
    } else {
        spec.service_account_name.clone()
    };
    let token_error = |source| VolumeError::Token {
        pod: key.clone(),
        account: account.clone(),
        source: Box::new(source),
    };
    // the pod's field wins over its account's
    let automount = match spec.automount_service_account_token {
        Some(a) => a,
        None => {
            let found = Api::<ServiceAccount>::namespaced(client.clone(), &meta.namespace)
                .get_opt(&account)
                .await
                .map_err(token_error)?;
            match found {
                Some(sa) => sa.automount_service_account_token != Some(false),
                None => {
                    tracing::info!(pod = %key, %account, "the pod's ServiceAccount does not exist: no API token is mounted");
                    return Ok(None);
                }
            }
        }
    };
    if !automount {
        return Ok(None);
    }
    let dir = dirs.service_account();
    let current = std::fs::read_to_string(dir.join("token")).ok();
    let now = chrono::Utc::now().timestamp();
    let token = match current.filter(|t| !token_needs_refresh(t, now)) {
        Some(t) => t,
        None => match request_token(client, pod, Vec::new(), TOKEN_EXPIRATION_SECONDS).await? {
            Some(t) => t,
            None => return Ok(None),
        },
    };
    let mut data = BTreeMap::from([
        ("token".to_string(), token.into_bytes()),
        ("namespace".to_string(), meta.namespace.clone().into_bytes()),
    ]);
    if let Some(ca) = cluster_ca {
        data.insert("ca.crt".into(), ca.to_vec());
    }
    write_projection(&key, SERVICE_ACCOUNT_VOLUME, &dir, &data, &[], None)?;
    Ok(Some(dir))
}

/// A token of the pod's ServiceAccount for `audiences` (the apiserver's when empty), bound
/// to the pod; `None` when the apiserver issues none (an `--insecure` development one).
async fn request_token(
    client: &Client,
    pod: &Pod,
    audiences: Vec<String>,
    expiration_seconds: i32,
) -> Result<Option<String>, VolumeError> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let account = Some(spec.service_account_name)
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "default".into());
    let req = rkube_api::rpc::CreateTokenRequest {
        namespace: meta.namespace.clone(),
        name: account.clone(),
        audiences,
        expiration_seconds: Some(expiration_seconds),
        bound_object_ref: Some(rkube_api::rpc::BoundObjectReference {
            kind: "Pod".into(),
            api_version: "v1".into(),
            name: meta.name.clone(),
            uid: meta.uid.clone(),
        }),
    };
    match client.create_token(req).await {
        Ok(out) => Ok(Some(out.token)),
        Err(e) if e.code() == Some(tonic::Code::Unimplemented) => {
            tracing::debug!(pod = %pod_key(pod), "the apiserver issues no ServiceAccount tokens: {e}");
            Ok(None)
        }
        Err(e) => Err(VolumeError::Token {
            pod: pod_key(pod),
            account,
            source: Box::new(e),
        }),
    }
}

/// Whether a token is due for renewal at `now` (seconds): once 80% of its lifetime
/// (`iat` to `exp`) has passed, as Kubernetes' kubelet renews, or when it cannot be read.
fn token_needs_refresh(token: &str, now: i64) -> bool {
    use base64::Engine;
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|c| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let (Some(iat), Some(exp)) = (
        claims.as_ref().and_then(|c| c["iat"].as_i64()),
        claims.as_ref().and_then(|c| c["exp"].as_i64()),
    ) else {
        return true;
    };
    now >= iat + (exp - iat) * 8 / 10
}

/// A Secret's data with `stringData` merged over it (the apiserver normally merges already).
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret.data.clone().into_iter().collect();
    for (k, v) in &secret.string_data {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    data
}

/// A relative path without `..`: item paths and subPaths must stay inside the volume.
fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// A file of a projected volume: its path in the volume, content and mode.
type VolumeFile = (String, Vec<u8>, u32);

/// The files of a ConfigMap's or Secret's `data`: every key under its name, or the
/// `items` (each key at its path, with its mode); modes default to `default_mode`, else
/// 0644.
fn key_files(
    pod: &str,
    volume: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: &[KeyToPath],
    default_mode: Option<i32>,
) -> Result<Vec<VolumeFile>, VolumeError> {
    let default_mode = file_mode(None, default_mode);
    if items.is_empty() {
        return Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), default_mode))
            .collect());
    }
    let mut files = Vec::new();
    for item in items {
        let Some(v) = data.get(&item.key) else {
            return Err(VolumeError::Invalid {
                pod: pod.into(),
                volume: volume.into(),
                reason: format!("items: key {:?} is not in the source object", item.key),
            });
        };
        files.push((
            item.path.clone(),
            v.clone(),
            file_mode(item.mode, Some(default_mode as i32)),
        ));
    }
    Ok(files)
}

/// A file's mode: its own, else the volume's default, else 0644.
fn file_mode(mode: Option<i32>, default_mode: Option<i32>) -> u32 {
    mode.or(default_mode).unwrap_or(0o644) as u32 & 0o7777
}

fn write_projection(
    pod: &str,
    volume: &str,
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: &[KeyToPath],
    default_mode: Option<i32>,
) -> Result<(), VolumeError> {
    let files = key_files(pod, volume, data, items, default_mode)?;
    write_files(pod, volume, dir, files)
}

/// Writes `files` into `dir`, each replaced atomically when it changed, and removes the
/// files that are no longer wanted.
fn write_files(pod: &str, volume: &str, dir: &Path, files: Vec<VolumeFile>) -> Result<(), VolumeError> {
    let io = |what: &'static str, path: &Path| {
        let (pod, volume, path) = (pod.to_string(), volume.to_string(), path.to_path_buf());
        move |source| VolumeError::Io {
            pod,
            volume,
            what,
            path,
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let mut wanted = HashSet::new();
    for (rel, content, mode) in files {
        if !safe_relative(&rel) {
            return Err(VolumeError::Invalid {
                pod: pod.into(),
                volume: volume.into(),
                reason: format!("path {rel:?} must be relative and must not contain '..'"),
            });
        }
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        if std::fs::read(&path).is_ok_and(|old| old == *content)
            && std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o7777 == mode)
        {
            wanted.insert(path);
            continue;
        }
        // Write then rename, so a container never reads half a file.
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        ));
        std::fs::write(&tmp, &content).map_err(io("writing", &tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("renaming", &path))?;
        wanted.insert(path);
    }
    // Keys removed from the object disappear from the volume.
    remove_unwanted(dir, &wanted);
    Ok(())
}

fn remove_unwanted(dir: &Path, wanted: &HashSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_unwanted(&p, wanted);
            let _ = std::fs::remove_dir(&p);
        } else if !wanted.contains(&p) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Writes the pod's /etc/hosts and /etc/resolv.conf files (see `crate::pod_dns`).
pub fn write_etc_files(
    dirs: &PodDirs,
    pod: &Pod,
    pod_ip: &str,
    hostname: &str,
    config: &crate::config::Config,
) -> std::io::Result<()> {
    std::fs::create_dir_all(&dirs.root)?;
    let host_network = pod.spec.as_ref().is_some_and(|s| s.host_network);
    let hosts = if host_network {
        let node = std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| "127.0.0.1\tlocalhost\n".into());
        node + &crate::pod_dns::host_aliases(pod)
    } else {
        crate::pod_dns::hosts_file(pod, pod_ip, hostname, &config.cluster_domain)
    };
    write_if_changed(&dirs.hosts(), hosts.as_bytes())?;
    let node = std::fs::read_to_string(&config.resolv_conf).unwrap_or_default();
    let resolv = crate::pod_dns::resolv_conf(
        pod,
        &crate::pod_dns::ResolvConf::parse(&node),
        &config.cluster_dns,
        &config.cluster_domain,
    );
    write_if_changed(&dirs.resolv_conf(), resolv.render().as_bytes())
}

fn write_if_changed(path: &Path, content: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    std::fs::write(path, content)
}

/// The bind mounts of `container`: its volumeMounts, then /etc/hosts and resolv.conf.
pub fn mounts_for(
    pod: &Pod,
    container: &Container,
    volumes: &HashMap<String, PathBuf>,
    dirs: &PodDirs,
) -> Result<Vec<BindMount>, VolumeError> {
    let key = pod_key(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let err = |reason: String| VolumeError::Mount {
        pod: key.clone(),
        container: container.name.clone(),
        reason,
    };
    let mut mounts = Vec::new();
    let mut targets = HashSet::new();
    for vm in &container.volume_mounts {
        let Some(base) = volumes.get(&vm.name) else {
            return Err(err(format!("volume {:?} is not in spec.volumes", vm.name)));
        };
        let source = spec.volumes.iter().find(|v| v.name == vm.name);
        let projected = source.is_some_and(|v| {
            v.config_map.is_some()
                || v.secret.is_some()
                || v.persistent_volume_claim.as_ref().is_some_and(|c| c.read_only)
        });
        let mut host_path = base.clone();
        if !vm.sub_path.is_empty() {
            if !safe_relative(&vm.sub_path) {
                return Err(err(format!(
                    "subPath {:?} of volume {:?} must be relative and must not contain '..'",
                    vm.sub_path, vm.name
                )));
            }
            host_path = base.join(&vm.sub_path);
            if !host_path.exists() {
                std::fs::create_dir_all(&host_path)
                    .map_err(|e| err(format!("creating subPath {}: {e}", host_path.display())))?;
            }
        }
        if !vm.mount_path.starts_with('/') {
            return Err(err(format!("mountPath {:?} must be absolute", vm.mount_path)));
        }
        targets.insert(vm.mount_path.trim_end_matches('/').to_string());
        mounts.push(BindMount {
            host_path,
            container_path: vm.mount_path.clone(),
            read_only: vm.read_only || projected,
        });
    }
    if let Some(dir) = volumes.get(SERVICE_ACCOUNT_VOLUME) {
        if !targets.contains(SERVICE_ACCOUNT_MOUNT_PATH) {
            mounts.push(BindMount {
                host_path: dir.clone(),
                container_path: SERVICE_ACCOUNT_MOUNT_PATH.into(),
                read_only: true,
            });
        }
    }
    for (target, path) in [
        ("/etc/hosts", dirs.hosts()),
        ("/etc/resolv.conf", dirs.resolv_conf()),
    ] {
        if !targets.contains(target) && path.exists() {
            mounts.push(BindMount {
                host_path: path,
                container_path: target.into(),
                read_only: false,
            });
        }
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_after_80_percent_of_their_lifetime() {
        use base64::Engine;
        let b64 =
            |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let token = format!(
            "{}.{}.sig",
            b64(serde_json::json!({"alg": "ES256"})),
            b64(serde_json::json!({"iat": 1000, "exp": 2000}))
        );
        assert!(!token_needs_refresh(&token, 1000));
        assert!(!token_needs_refresh(&token, 1799));
        assert!(token_needs_refresh(&token, 1800));
        assert!(token_needs_refresh("garbage", 0));
    }

    #[test]
    fn the_service_account_volume_is_mounted_unless_its_path_is_taken() {
        let dirs = PodDirs::new(Path::new("/var/lib/rkubelet"), "u1");
        let volumes = HashMap::from([
            (SERVICE_ACCOUNT_VOLUME.to_string(), dirs.service_account()),
            ("own".to_string(), PathBuf::from("/tmp/own")),
        ]);
        let pod = Pod {
            spec: Some(rkube_api::core::v1::PodSpec {
                volumes: vec![rkube_api::core::v1::Volume {
                    name: "own".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let plain = Container::default();
        let mounts = mounts_for(&pod, &plain, &volumes, &dirs).unwrap();
        let sa = mounts
            .iter()
            .find(|m| m.container_path == SERVICE_ACCOUNT_MOUNT_PATH)
            .expect("mounted");
        assert!(sa.read_only);
        assert_eq!(sa.host_path, dirs.service_account());
        let own = Container {
            volume_mounts: vec![rkube_api::core::v1::VolumeMount {
                name: "own".into(),
                mount_path: SERVICE_ACCOUNT_MOUNT_PATH.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mounts = mounts_for(&pod, &own, &volumes, &dirs).unwrap();
        let at: Vec<_> = mounts
            .iter()
            .filter(|m| m.container_path == SERVICE_ACCOUNT_MOUNT_PATH)
            .collect();
        assert_eq!(at.len(), 1);
        assert_eq!(at[0].host_path, PathBuf::from("/tmp/own"));
    }

    #[test]
    fn projections_follow_items_modes_and_removals() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("v");
        let data = BTreeMap::from([("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())]);
        write_projection("ns/p", "v", &vol, &data, &[], Some(0o600)).unwrap();
        assert_eq!(std::fs::read(vol.join("a")).unwrap(), b"1");
        let mode = std::fs::metadata(vol.join("b")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let items = vec![KeyToPath {
            key: "b".into(),
            path: "sub/bee".into(),
            mode: Some(0o400),
        }];
        write_projection("ns/p", "v", &vol, &data, &items, None).unwrap();
        assert!(!vol.join("a").exists());
        assert_eq!(std::fs::read(vol.join("sub/bee")).unwrap(), b"2");
        let bad = vec![KeyToPath {
            key: "b".into(),
            path: "../escape".into(),
            mode: None,
        }];
        let err = write_projection("ns/p", "v", &vol, &data, &bad, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ns/p") && err.contains("'..'"), "{err}");
    }
}
