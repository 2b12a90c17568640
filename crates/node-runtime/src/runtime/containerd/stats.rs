//! CPU and memory of running containers, read from their cgroups.

use std::path::PathBuf;
use std::time::SystemTime;

use containerd_client::services::v1::Container;
use containerd_client::types::v1::Status as ProcessStatus;

use super::ContainerdRuntime;
use crate::runtime::{cgroups, ContainerId, ContainerState, ContainerStats, ContainerSummary, Error};

impl ContainerdRuntime {
    /// One list of containers and tasks, then the cgroup files: no call per container,
    /// which is what keeps the kubelet's periodic sampling cheap with many pods.
    pub(super) async fn stats_of_running(&self) -> Result<Vec<(ContainerSummary, ContainerStats)>, Error> {
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

    pub(super) async fn stats_of(&self, id: &ContainerId) -> Result<ContainerStats, Error> {
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

/// `linux.cgroupsPath` from a container's runtime spec.
pub(super) fn cgroups_path_of(container: &Container) -> Option<String> {
    let spec: serde_json::Value = serde_json::from_slice(&container.spec.as_ref()?.value).ok()?;
    spec.get("linux")?
        .get("cgroupsPath")?
        .as_str()
        .map(str::to_string)
}
