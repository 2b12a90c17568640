//! An in-memory [`ContainerRuntime`] for the pod worker's unit tests. It keeps the same
//! rules as the real one (image must be pulled before create, start once, stop of a stopped
//! container succeeds, remove is idempotent) and lets the test decide what containers do:
//! exit with a code, get OOM-killed, answer execs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{
    labels, ContainerConfig, ContainerId, ContainerRuntime, ContainerState, ContainerStats, ContainerStatus,
    ContainerSummary, Error, ExecOutput, ExecRequest, ImageConfig, ImageInfo, ImageSummary, PullOptions,
    RuntimeEvent,
};
use crate::image::{PullError, Reference};

/// One thing the pod worker asked the runtime to do, in order, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    Pull(String),
    Create {
        pod_uid: String,
        name: String,
        attempt: u32,
    },
    Start(ContainerId),
    Stop {
        id: ContainerId,
        grace: Duration,
    },
    Remove(ContainerId),
    Exec {
        id: ContainerId,
        command: Vec<String>,
    },
}

#[derive(Debug, Clone)]
struct FakeContainer {
    config: ContainerConfig,
    state: ContainerState,
    started_at: Option<SystemTime>,
    log_path: Option<PathBuf>,
    /// Whether SIGTERM stops it (else stop waits for the grace period's SIGKILL).
    honours_sigterm: bool,
}

#[derive(Default)]
struct FakeState {
    /// Registry contents: image name -> config.
    registry: HashMap<String, ImageConfig>,
    /// Pulled images by normalised name.
    images: HashMap<String, ImageInfo>,
    pull_errors: HashMap<String, String>,
    containers: BTreeMap<ContainerId, FakeContainer>,
    exec_results: HashMap<(ContainerId, Vec<String>), ExecOutput>,
    stats: HashMap<ContainerId, ContainerStats>,
    calls: Vec<FakeCall>,
    next_id: u64,
    /// Receivers of `exit_events`, told of each exit as containerd's event stream would.
    exit_subscribers: Vec<tokio::sync::mpsc::Sender<RuntimeEvent>>,
}

impl FakeState {
    fn announce_exit(&mut self, id: &ContainerId) {
        self.exit_subscribers.retain(|tx| {
            !matches!(
                tx.try_send(RuntimeEvent::Exited {
                    container: id.clone(),
                    pod_uid: self.containers.get(id).map(|c| c.config.pod_uid.clone()),
                }),
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_))
            )
        });
    }
}

/// See the module documentation.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<FakeState>,
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `reference` pullable, with the given image defaults.
    pub fn add_registry_image(&self, reference: &str, config: ImageConfig) {
        if let Ok(r) = Reference::parse(reference) {
            self.lock().registry.insert(r.name(), config);
        }
    }

    /// Makes pulls of `reference` fail with the registry reason `reason`.
    pub fn fail_pull(&self, reference: &str, reason: &str) {
        if let Ok(r) = Reference::parse(reference) {
            self.lock().pull_errors.insert(r.name(), reason.to_string());
        }
    }

    /// The running container `id` exits with `exit_code`.
    pub fn exit_container(&self, id: &ContainerId, exit_code: i32, oom_killed: bool) {
        let mut state = self.lock();
        if let Some(c) = state.containers.get_mut(id) {
            c.state = ContainerState::Exited {
                exit_code,
                finished_at: Some(SystemTime::now()),
                oom_killed,
            };
            state.announce_exit(id);
        }
    }

    /// Whether container `id` exits on SIGTERM (default) or needs SIGKILL.
    pub fn set_honours_sigterm(&self, id: &ContainerId, honours: bool) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.honours_sigterm = honours;
        }
    }

    /// What `exec` of `command` in `id` returns (default: exit 0, no output).
    pub fn set_exec_result(&self, id: &ContainerId, command: &[&str], output: ExecOutput) {
        let command = command.iter().map(|s| s.to_string()).collect();
        self.lock().exec_results.insert((id.clone(), command), output);
    }

    pub fn set_stats(&self, id: &ContainerId, stats: ContainerStats) {
        self.lock().stats.insert(id.clone(), stats);
    }

    /// Everything asked of the runtime so far.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// The config a container was created with.
    pub fn container_config(&self, id: &ContainerId) -> Option<ContainerConfig> {
        self.lock().containers.get(id).map(|c| c.config.clone())
    }
}

fn fake_digest(seed: &str) -> String {
    crate::image::oci::sha256_digest(seed.as_bytes())
}

fn labels_of(config: &ContainerConfig) -> BTreeMap<String, String> {
    let mut l = config.labels.clone();
    l.insert(labels::POD_UID.into(), config.pod_uid.clone());
    l.insert(labels::POD_NAMESPACE.into(), config.pod_namespace.clone());
    l.insert(labels::POD_NAME.into(), config.pod_name.clone());
    l.insert(labels::CONTAINER_NAME.into(), config.name.clone());
    l.insert(labels::RESTART_ATTEMPT.into(), config.restart_attempt.to_string());
    l
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn pull_image(&self, reference: &str, _options: &PullOptions) -> Result<ImageInfo, Error> {
        let parsed = Reference::parse(reference).map_err(PullError::from)?;
        let name = parsed.name();
        let mut state = self.lock();
        state.calls.push(FakeCall::Pull(name.clone()));
        if let Some(reason) = state.pull_errors.get(&name) {
            return Err(PullError::Registry {
                reference: name.clone(),
                url: format!("fake://{}", parsed.locator()),
                status: 404,
                reason: reason.clone(),
            }
            .into());
        }
        let Some(config) = state.registry.get(&name).cloned() else {
            return Err(PullError::Registry {
                reference: name.clone(),
                url: format!("fake://{}", parsed.locator()),
                status: 404,
                reason: "manifest unknown: manifest unknown".to_string(),
            }
            .into());
        };
        let digest = fake_digest(&name);
        let info = ImageInfo {
            name: name.clone(),
            digest: digest.clone(),
            repo_digest: format!("{}@{digest}", parsed.locator()),
            config_digest: fake_digest(&format!("config {name}")),
            manifest_digest: digest,
            chain_id: fake_digest(&format!("chain {name}")),
            // every fake image weighs a MiB, so image garbage collection has bytes to count
            size: 1 << 20,
            config,
        };
        state.images.insert(name, info.clone());
        Ok(info)
    }

    async fn image_present(&self, reference: &str) -> Result<Option<ImageInfo>, Error> {
        let name = Reference::parse(reference).map_err(PullError::from)?.name();
        Ok(self.lock().images.get(&name).cloned())
    }

    async fn list_images(&self) -> Result<Vec<ImageSummary>, Error> {
        let state = self.lock();
        Ok(state
            .images
            .values()
            .map(|i| ImageSummary {
                name: i.name.clone(),
                size: i.size,
            })
            .collect())
    }

    async fn remove_image(&self, name: &str) -> Result<(), Error> {
        self.lock().images.remove(name);
        Ok(())
    }

    async fn create_container(&self, config: &ContainerConfig) -> Result<ContainerId, Error> {
        let display = format!(
            "{}/{} container {}",
            config.pod_namespace, config.pod_name, config.name
        );
        super::spec::validate_pod_uid(&config.pod_uid, &display)?;
        let name = Reference::parse(&config.image).map_err(PullError::from)?.name();
        let mut state = self.lock();
        let Some(image) = state.images.get(&name).cloned() else {
            return Err(Error::ImageNotPresent {
                image: config.image.clone(),
            });
        };
        // Same validation as the real runtime, so bad configs fail in unit tests too.
        super::spec::build(&ContainerId::from("fake"), config, &image.config, "/fake")?;
        state.next_id += 1;
        let id = ContainerId(format!("fake{:028x}", state.next_id));
        state.calls.push(FakeCall::Create {
            pod_uid: config.pod_uid.clone(),
            name: config.name.clone(),
            attempt: config.restart_attempt,
        });
        state.containers.insert(
            id.clone(),
            FakeContainer {
                config: config.clone(),
                state: ContainerState::Created,
                started_at: None,
                log_path: None,
                honours_sigterm: true,
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &ContainerId, log_path: &Path) -> Result<(), Error> {
        let mut state = self.lock();
        state.calls.push(FakeCall::Start(id.clone()));
        let c = state
            .containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound { id: id.clone() })?;
        if c.state != ContainerState::Created || c.started_at.is_some() {
            return Err(Error::AlreadyStarted { id: id.clone() });
        }
        c.state = ContainerState::Running;
        c.started_at = Some(SystemTime::now());
        c.log_path = Some(log_path.to_path_buf());
        Ok(())
    }

    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus, Error> {
        let state = self.lock();
        let c = state
            .containers
            .get(id)
            .ok_or_else(|| Error::NotFound { id: id.clone() })?;
        Ok(ContainerStatus {
            id: id.clone(),
            state: c.state.clone(),
            started_at: c.started_at,
            pid: (c.state == ContainerState::Running).then_some(4242),
            image: c.config.image.clone(),
            labels: labels_of(&c.config),
            log_path: c.log_path.clone(),
        })
    }

    async fn stop_container(&self, id: &ContainerId, grace: Duration) -> Result<(), Error> {
        let mut state = self.lock();
        state.calls.push(FakeCall::Stop {
            id: id.clone(),
            grace,
        });
        let c = state
            .containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound { id: id.clone() })?;
        if matches!(c.state, ContainerState::Running | ContainerState::Created) {
            // 143 = 128 + SIGTERM, 137 = 128 + SIGKILL, as containerd reports them.
            let exit_code = if c.honours_sigterm && !grace.is_zero() {
                143
            } else {
                137
            };
            c.state = ContainerState::Exited {
                exit_code,
                finished_at: Some(SystemTime::now()),
                oom_killed: false,
            };
            state.announce_exit(id);
        }
        Ok(())
    }

    fn exit_events(&self) -> tokio::sync::mpsc::Receiver<RuntimeEvent> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        self.lock().exit_subscribers.push(tx);
        rx
    }

    async fn remove_container(&self, id: &ContainerId) -> Result<(), Error> {
        let mut state = self.lock();
        state.calls.push(FakeCall::Remove(id.clone()));
        state.containers.remove(id);
        Ok(())
    }

    async fn list_containers(&self) -> Result<Vec<ContainerSummary>, Error> {
        let state = self.lock();
        Ok(state
            .containers
            .iter()
            .map(|(id, c)| ContainerSummary {
                id: id.clone(),
                image: c.config.image.clone(),
                labels: labels_of(&c.config),
                state: c.state.clone(),
                pid: (c.state == ContainerState::Running).then_some(4242),
            })
            .collect())
    }

    async fn exec(&self, id: &ContainerId, request: &ExecRequest) -> Result<ExecOutput, Error> {
        let mut state = self.lock();
        state.calls.push(FakeCall::Exec {
            id: id.clone(),
            command: request.command.clone(),
        });
        let c = state
            .containers
            .get(id)
            .ok_or_else(|| Error::NotFound { id: id.clone() })?;
        if c.state != ContainerState::Running {
            return Err(Error::NotRunning {
                id: id.clone(),
                what: "exec",
            });
        }
        Ok(state
            .exec_results
            .get(&(id.clone(), request.command.clone()))
            .cloned()
            .unwrap_or(ExecOutput {
                exit_code: 0,
                stdout: Vec::new(),
                stderr: Vec::new(),
            }))
    }

    async fn container_stats(&self, id: &ContainerId) -> Result<ContainerStats, Error> {
        let state = self.lock();
        let c = state
            .containers
            .get(id)
            .ok_or_else(|| Error::NotFound { id: id.clone() })?;
        if c.state != ContainerState::Running {
            return Err(Error::NotRunning {
                id: id.clone(),
                what: "reading stats",
            });
        }
        Ok(state.stats.get(id).copied().unwrap_or(ContainerStats {
            cpu_usage_nanos: 0,
            memory_working_set_bytes: 0,
            timestamp: SystemTime::now(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ContainerIdentity;

    fn config() -> ContainerConfig {
        ContainerConfig {
            pod_uid: "uid-1".into(),
            pod_namespace: "default".into(),
            pod_name: "web".into(),
            name: "app".into(),
            restart_attempt: 2,
            image: "busybox".into(),
            command: vec!["sh".into()],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn lifecycle_follows_the_real_runtime_rules() {
        let rt = FakeRuntime::new();
        assert!(matches!(
            rt.create_container(&config()).await,
            Err(Error::ImageNotPresent { .. })
        ));
        let err = rt
            .pull_image("busybox", &PullOptions::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("manifest unknown"), "{err}");

        rt.add_registry_image("busybox", ImageConfig::default());
        let info = rt.pull_image("busybox", &PullOptions::default()).await.unwrap();
        assert_eq!(info.name, "docker.io/library/busybox:latest");
        assert!(rt
            .image_present("docker.io/library/busybox")
            .await
            .unwrap()
            .is_some());

        let id = rt.create_container(&config()).await.unwrap();
        rt.start_container(&id, Path::new("/var/log/x.log"))
            .await
            .unwrap();
        assert!(matches!(
            rt.start_container(&id, Path::new("/var/log/x.log")).await,
            Err(Error::AlreadyStarted { .. })
        ));
        assert_eq!(
            rt.container_status(&id).await.unwrap().state,
            ContainerState::Running
        );

        let listed = rt.list_containers().await.unwrap();
        let identity = listed[0].identity().unwrap();
        assert_eq!(
            identity,
            ContainerIdentity {
                pod_uid: "uid-1".into(),
                pod_namespace: "default".into(),
                pod_name: "web".into(),
                container_name: "app".into(),
                restart_attempt: 2,
            }
        );

        rt.set_honours_sigterm(&id, false);
        rt.stop_container(&id, Duration::from_secs(1)).await.unwrap();
        assert!(matches!(
            rt.container_status(&id).await.unwrap().state,
            ContainerState::Exited { exit_code: 137, .. }
        ));
        rt.remove_container(&id).await.unwrap();
        rt.remove_container(&id).await.unwrap();
        assert!(rt.container_status(&id).await.unwrap_err().is_not_found());
        let calls = rt.calls();
        assert_eq!(calls.len(), 8, "{calls:?}");
        assert_eq!(
            calls[2],
            FakeCall::Create {
                pod_uid: "uid-1".into(),
                name: "app".into(),
                attempt: 2
            }
        );
        assert_eq!(
            calls[5],
            FakeCall::Stop {
                id: id.clone(),
                grace: Duration::from_secs(1)
            }
        );
    }

    #[tokio::test]
    async fn exec_and_oom_are_scriptable() {
        let rt = FakeRuntime::new();
        rt.add_registry_image("busybox", ImageConfig::default());
        rt.pull_image("busybox", &PullOptions::default()).await.unwrap();
        let id = rt.create_container(&config()).await.unwrap();
        rt.start_container(&id, Path::new("/l")).await.unwrap();
        rt.set_exec_result(
            &id,
            &["cat", "/ready"],
            ExecOutput {
                exit_code: 1,
                stdout: b"no".to_vec(),
                stderr: vec![],
            },
        );
        let request = ExecRequest {
            command: vec!["cat".into(), "/ready".into()],
            ..Default::default()
        };
        assert_eq!(rt.exec(&id, &request).await.unwrap().exit_code, 1);
        rt.exit_container(&id, 137, true);
        assert!(matches!(
            rt.container_status(&id).await.unwrap().state,
            ContainerState::Exited { oom_killed: true, .. }
        ));
        assert!(matches!(
            rt.exec(&id, &request).await,
            Err(Error::NotRunning { .. })
        ));
    }
}
