//! PersistentVolumeClaim volumes: the claim's bound volume, mounted on this node.
//!
//! * A volume of the `local` provider (`pv.kubernetes.io/provisioned-by:
//!   rkube.io/local`, a `local` path in this kubelet's volume directory) is an ext4
//!   image attached through a loop device ([`local_volume`]): made on first use at
//!   the claim's size, mounted once, bind-mounted into each pod's directory.
//! * Any other `local` or `hostPath` volume is bind-mounted from its path as it is.
//!
//! A pod's bind mount goes with the pod's directory; [`release_unused`] then unmounts
//! volumes no pod uses (the loop device goes with the mount), and [`reclaim_deleted`]
//! removes the images of volumes whose PersistentVolume is gone (reclaim policy
//! Delete). Mounts of running pods are left alone across kubelet restarts.

use std::path::{Path, PathBuf};

use rkube_api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use rkube_api::Resource;
use rkube_client::{Api, Client};
use rkube_node_runtime::local_volume;

/// The provisioner whose volumes live in the volume directory as images.
pub const LOCAL_PROVISIONER: &str = "rkube.io/local";
/// Announces the volume directory on the Node, for the provider's provisioner.
pub const VOLUME_DIR_ANNOTATION: &str = "rkube.io/local-volume-dir";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// Where this node keeps its local volumes.
pub fn volume_dir(root_dir: &Path) -> PathBuf {
    root_dir.join("local-volumes")
}

/// Mounting a volume and binding it into a pod happen together, and never while unused
/// volumes are released or removed: a release between the two would leave the pod an
/// empty directory instead of its data.
static MOUNTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Mounts the volume bound to claim `name` in `namespace` and bind-mounts it on `target`
/// (in the pod's directory); the error says what the user must fix or wait for.
pub async fn mount_claim(
    client: &Client,
    namespace: &str,
    name: &str,
    root_dir: &Path,
    target: &Path,
) -> Result<(), String> {
    let source = volume_path(client, namespace, name, root_dir).await?;
    let _held = MOUNTS.lock().await;
    if let Some(bytes) = source.1 {
        let p = source.0.clone();
        tokio::task::spawn_blocking(move || local_volume::ensure_mounted(&p, bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("mounting the volume of claim {name:?}: {e}"))?;
    }
    local_volume::bind(&source.0, target).map_err(|e| {
        format!(
            "bind-mounting the volume of claim {name:?} on {}: {e}",
            target.display()
        )
    })
}

/// The path of the volume bound to the claim, and its size when it is a local volume
/// this kubelet makes and mounts.
async fn volume_path(
    client: &Client,
    namespace: &str,
    name: &str,
    root_dir: &Path,
) -> Result<(PathBuf, Option<i64>), String> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let claim = claims
        .get_opt(name)
        .await
        .map_err(|e| format!("reading persistentVolumeClaim {name:?}: {e}"))?
        .ok_or_else(|| format!("persistentVolumeClaim {name:?} not found"))?;
    let volume = claim
        .spec
        .as_ref()
        .map(|s| s.volume_name.clone())
        .unwrap_or_default();
    let phase = claim.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    if volume.is_empty() || phase != "Bound" {
        return Err(format!(
            "persistentVolumeClaim {name:?} is not bound yet (phase {phase:?})"
        ));
    }
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&volume)
        .await
        .map_err(|e| format!("reading persistentVolume {volume:?} of claim {name:?}: {e}"))?;
    let spec = pv.spec.clone().unwrap_or_default();
    if let Some(local) = &spec.local {
        let path = PathBuf::from(&local.path);
        let provisioned =
            pv.metadata().annotations.get(PROVISIONED_BY).map(String::as_str) == Some(LOCAL_PROVISIONER);
        if provisioned && path.parent() == Some(volume_dir(root_dir).as_path()) {
            let bytes = spec
                .capacity
                .get("storage")
                .and_then(|q| q.value().ok())
                .filter(|b| *b > 0)
                .ok_or_else(|| format!("persistentVolume {volume:?} has no storage capacity"))?;
            return Ok((path, Some(bytes)));
        }
        if !path.is_dir() {
            return Err(format!(
                "local path {} of persistentVolume {volume:?} is not a directory on this node",
                path.display()
            ));
        }
        return Ok((path, None));
    }
    if let Some(h) = &spec.host_path {
        let path = PathBuf::from(&h.path);
        if h.r#type == "DirectoryOrCreate" {
            std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        }
        return Ok((path, None));
    }
    Err(format!(
        "persistentVolume {volume:?} has no source this node can mount (local or hostPath)"
    ))
}

/// Unmounts the local volumes no pod on this node uses any more.
pub async fn release_unused(root_dir: &Path) {
    let _held = MOUNTS.lock().await;
    for dir in local_volume::release_unused(&volume_dir(root_dir)) {
        tracing::info!(volume = %dir.display(), "unmounted: no pod uses it");
    }
}

/// Removes the unmounted local volumes whose PersistentVolume no longer exists: the space
/// of a deleted volume goes back to the node.
pub async fn reclaim_deleted(client: &Client, root_dir: &Path) {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let _held = MOUNTS.lock().await;
    for dir in local_volume::list(&volume_dir(root_dir)) {
        if local_volume::is_mounted(&dir) {
            continue;
        }
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        match api.get_opt(name).await {
            Ok(None) => match local_volume::remove(&dir) {
                Ok(()) => tracing::info!(volume = name, "removed: its PersistentVolume is gone"),
                Err(e) => tracing::warn!(volume = name, "removing: {e}"),
            },
            Ok(Some(_)) => {}
            Err(e) => tracing::warn!(volume = name, "cannot tell whether it still exists: {e}"),
        }
    }
}

/// Every 10 seconds: volumes no pod uses are unmounted, deleted ones reclaimed.
pub async fn housekeeping(client: Client, root_dir: PathBuf) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tick.tick().await;
        release_unused(&root_dir).await;
        reclaim_deleted(&client, &root_dir).await;
    }
}
