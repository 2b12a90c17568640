//! Eviction of a pod whose disk-backed emptyDir outgrew its `sizeLimit` (Kubernetes'
//! eviction manager, `localStorageEviction`), or that the node-pressure eviction manager
//! chose (`crate::node_pressure`; it hands the pod's worker the message through
//! `Shared::evictions`, and the rest is the same). Each limited volume of a running pod is
//! measured at most every `eviction_monitoring_period` (`du`'s count, see
//! [`disk_usage`]); the first one over its limit evicts the pod. Its containers are
//! killed at once, the pod turns `Failed` with reason `Evicted` and Kubernetes' message
//! (`Usage of EmptyDir volume "NAME" exceeds the limit "SIZE".`), a Warning event
//! `Evicted` says the same, and the contents of its disk-backed emptyDirs are removed so
//! the node gets the space back at once. The pod object stays, as in Kubernetes: its
//! controller (a ReplicaSet, a Job) makes a replacement, and its status says why.
//!
//! `medium: Memory` volumes are tmpfs mounts whose `size=` is the limit already: a write
//! past it fails with ENOSPC and nothing needs measuring.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rkube_api::core::v1::{Pod, PodSpec};
use rkube_node_runtime::{disk_usage, mounts};

use super::{key_of, PodWorker};

/// The disk-backed emptyDir volumes of `spec` that have a `sizeLimit`: name, limit in
/// bytes, and the limit as written (for the message).
fn limited_disk_volumes(spec: &PodSpec) -> Vec<(&str, i64, &str)> {
    spec.volumes
        .iter()
        .filter_map(|v| {
            let ed = v.empty_dir.as_ref().filter(|ed| ed.medium.is_empty())?;
            let q = ed.size_limit.as_ref()?;
            let bytes = q.value().ok().filter(|b| *b > 0)?;
            Some((v.name.as_str(), bytes, q.string.as_str()))
        })
        .collect()
}

impl PodWorker {
    /// Measures the pod's limited disk-backed emptyDirs when due and evicts the pod when
    /// one is over its limit. Returns when to measure again (`None`: nothing to measure).
    pub(super) async fn check_local_storage(&mut self, pod: &Arc<Pod>, spec: &PodSpec) -> Option<Duration> {
        let period = self.shared.config.eviction_monitoring_period;
        let limited = limited_disk_volumes(spec);
        if limited.is_empty() || self.evicted.is_some() {
            return None;
        }
        let due = self.usage_checked_at.is_none_or(|at| at.elapsed() >= period);
        if due {
            self.usage_checked_at = Some(Instant::now());
            for (name, limit, written) in limited {
                let dir = self.dirs.volume(name);
                let used = match disk_usage::bytes_used(&dir) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::debug!(pod = %key_of(pod), volume = %name, "measuring {}: {e}", dir.display());
                        continue;
                    }
                };
                if used > limit as u64 {
                    let message = format!("Usage of EmptyDir volume {name:?} exceeds the limit {written:?}.");
                    tracing::info!(pod = %key_of(pod), "evicting: {message} ({used} bytes used)");
                    self.shared.event(pod, true, "Evicted", message.clone());
                    self.evicted = Some(message);
                    self.finish_eviction(pod).await;
                    return None;
                }
            }
        }
        let since = self.usage_checked_at.map(|at| at.elapsed()).unwrap_or_default();
        Some(period.saturating_sub(since).max(Duration::from_millis(100)))
    }

    /// Kills the evicted pod's containers (again, if an earlier try failed) and removes
    /// the contents of its disk-backed emptyDirs once nothing runs. Idempotent.
    pub(super) async fn finish_eviction(&mut self, pod: &Arc<Pod>) {
        for t in self.tracks.values_mut() {
            if let Some((_, task)) = t.probe_task.take() {
                task.abort();
            }
        }
        let mut all_stopped = true;
        for (name, t) in self.tracks.iter_mut() {
            let Some(cur) = t.current.as_mut().filter(|i| i.exited().is_none()) else {
                continue;
            };
            // no preStop hook and no grace: the node is protecting its disk
            if let Err(e) = self.shared.runtime.stop_container(&cur.id, Duration::ZERO).await {
                tracing::warn!(pod = %key_of(pod), container = %name, "stopping the evicted pod's container: {e}");
                all_stopped = false;
                continue;
            }
            match self.shared.runtime.container_status(&cur.id).await {
                Ok(s) => cur.status = s,
                Err(e) if e.is_not_found() => t.current = None,
                Err(e) => {
                    tracing::warn!(pod = %key_of(pod), container = %name, "after stopping: {e}");
                    all_stopped = false;
                }
            }
        }
        if !all_stopped || self.evicted_reclaimed {
            return;
        }
        let spec = pod.spec.clone().unwrap_or_default();
        for v in spec
            .volumes
            .iter()
            .filter(|v| v.empty_dir.as_ref().is_some_and(|ed| ed.medium.is_empty()))
        {
            let dir = self.dirs.volume(&v.name);
            if !mounts::mount_points_below(&dir).is_empty() {
                continue;
            }
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                if let Err(e) = removed {
                    tracing::warn!(pod = %key_of(pod), volume = %v.name, "removing {}: {e}", path.display());
                }
            }
        }
        self.evicted_reclaimed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_disk_backed_empty_dirs_with_a_limit_are_measured() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "c", "image": "i"}],
            "volumes": [
                {"name": "scratch", "emptyDir": {"sizeLimit": "10Mi"}},
                {"name": "unlimited", "emptyDir": {}},
                {"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                {"name": "host", "hostPath": {"path": "/tmp"}},
            ],
        }))
        .unwrap();
        assert_eq!(limited_disk_volumes(&spec), vec![("scratch", 10 << 20, "10Mi")]);
    }
}
