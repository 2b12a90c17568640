//! One sync of a running pod: its sandbox and network, its containers started and
//! restarted with back-off, its probes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rkube_api::core::v1::{Container, Pod};
use rkube_api::Resource as _;

use crate::config::Config;
use crate::container_config::{build_env, resources, security, user};
use crate::probes;
use crate::volumes::{self};
use rkube_node_runtime::network::{PodNetworkConfig, PortMapping, Protocol};
use rkube_node_runtime::runtime::{
    labels, ContainerConfig, ContainerId, ContainerIo, ContainerNetwork, ContainerState, ContainerStatus,
};

use tracing::Instrument as _;

use super::status::current_phase;
use super::{key_of, Instance, PodWorker};

impl PodWorker {
    /// Finds the containers a previous kubelet started for this pod.
    pub(super) async fn adopt(&mut self) -> anyhow::Result<()> {
        let list = self.shared.runtime.list_containers().await?;
        let mut by_name: HashMap<String, Vec<(u32, ContainerId)>> = HashMap::new();
        for c in list {
            if let Some(identity) = c.identity().filter(|i| i.pod_uid == self.uid) {
                by_name
                    .entry(identity.container_name)
                    .or_default()
                    .push((identity.restart_attempt, c.id));
            }
        }
        for (name, mut instances) in by_name {
            instances.sort_by_key(|i| std::cmp::Reverse(i.0));
            let track = self.tracks.entry(name).or_default();
            for (i, (attempt, id)) in instances.into_iter().enumerate() {
                if i >= 2 {
                    let _ = self.shared.runtime.remove_container(&id).await;
                    continue;
                }
                let status = self.shared.runtime.container_status(&id).await?;
                let instance = Instance { id, attempt, status };
                if i == 0 {
                    track.current = Some(instance);
                } else {
                    track.previous = Some(instance);
                }
            }
        }
        self.net = match self.shared.current_network() {
            Some(n) => n.status(&self.uid).await.ok().flatten(),
            None => None,
        };
        self.adopted = true;
        Ok(())
    }

    pub(super) async fn sync_running(&mut self, pod: &Arc<Pod>) -> anyhow::Result<Duration> {
        if !self.adopted {
            let span =
                tracing::debug_span!(target: rkube_api::POD_STARTUP_TRACE, "adopt", pod_uid = %self.uid);
            self.adopt().instrument(span).await?;
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let mut next = self.shared.config.pod_poll_interval;
        // What containerd says now.
        for track in self.tracks.values_mut() {
            if let Some(cur) = &mut track.current {
                if cur.exited().is_some() {
                    continue;
                }
                match self.shared.runtime.container_status(&cur.id).await {
                    Ok(s) => cur.status = s,
                    Err(e) if e.is_not_found() => track.current = None,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let mut already_terminal =
            matches!(current_phase(pod, &self.written).as_str(), "Succeeded" | "Failed");
        if let Some(message) = self.shared.take_eviction(&self.uid) {
            if self.evicted.is_none() && !already_terminal {
                self.shared.event(pod, true, "Evicted", message.clone());
                self.evicted = Some(message);
            }
        }
        if self.evicted.is_some() {
            // the eviction, or a retry of what it left undone (a container that did not stop)
            self.finish_eviction(pod).await;
        } else if !already_terminal {
            if let Some(wait) = self.check_local_storage(pod, &spec).await {
                next = next.min(wait);
            }
        }
        already_terminal |= self.evicted.is_some();
        if self.start_time.is_none() {
            self.start_time = pod
                .status
                .as_ref()
                .map(|s| s.start_time.clone())
                .filter(|s| !s.is_empty())
                .or_else(|| Some(crate::node::now_rfc3339()));
        }

        if !already_terminal {
            self.pod_waiting = None;
            let sandbox =
                tracing::debug_span!(target: rkube_api::POD_STARTUP_TRACE, "sandbox", pod_uid = %self.uid);
            let images = self.image_checks_ahead(pod, &spec);
            let (ready, images) = tokio::join!(self.ensure_sandbox(pod, &spec).instrument(sandbox), images);
            self.prefetched_images = images.into_iter().collect();
            if let Err(why) = ready {
                // what the early checks found still counts (a failed pull backs off)
                for (name, outcome) in std::mem::take(&mut self.prefetched_images) {
                    let c = spec
                        .init_containers
                        .iter()
                        .chain(&spec.containers)
                        .find(|c| c.name == name);
                    if let Some(c) = c {
                        let _ = self.record_image(pod, c, outcome);
                    }
                }
                self.pod_waiting = Some(why);
                next = next.min(Duration::from_secs(1));
            } else {
                next = next.min(self.run_containers(pod, &spec).await);
            }
            self.prefetched_images.clear();
        }
        self.manage_probe_tasks(pod, &spec);
        let status =
            tracing::debug_span!(target: rkube_api::POD_STARTUP_TRACE, "status_write", pod_uid = %self.uid);
        self.write_status(pod, &spec).instrument(status).await?;
        Ok(next)
    }

    /// On a pod's first sync, the image checks (and pulls) of the containers it starts
    /// first, to run beside the sandbox's setup: the first init container, or else every
    /// container. Nothing on later syncs, whose starts are restarts.
    fn image_checks_ahead(
        &self,
        pod: &Arc<Pod>,
        spec: &rkube_api::core::v1::PodSpec,
    ) -> impl std::future::Future<Output = Vec<(String, super::images::ImageOutcome)>> {
        let first: Vec<Container> = if !self.tracks.is_empty() {
            Vec::new()
        } else if let Some(init) = spec.init_containers.first() {
            vec![init.clone()]
        } else {
            spec.containers.clone()
        };
        let (shared, pod) = (self.shared.clone(), pod.clone());
        futures::future::join_all(first.into_iter().map(move |c| {
            let (shared, pod) = (shared.clone(), pod.clone());
            async move { (c.name.clone(), super::images::check_image(shared, pod, c).await) }
        }))
    }

    /// Network, volumes and the /etc files. `Err` says why the pod cannot start yet.
    pub(super) async fn ensure_sandbox(
        &mut self,
        pod: &Arc<Pod>,
        spec: &rkube_api::core::v1::PodSpec,
    ) -> Result<(), String> {
        let meta = pod.metadata.clone().unwrap_or_default();
        if !spec.host_network && self.net.is_none() {
            let Some(network) = self.shared.current_network() else {
                return Err(format!(
                    "network is not ready: node {} has no pod CIDR yet",
                    self.shared.config.node_name
                ));
            };
            let config = PodNetworkConfig {
                pod_uid: self.uid.clone(),
                pod_namespace: meta.namespace.clone(),
                pod_name: meta.name.clone(),
                port_mappings: port_mappings(spec),
            };
            match network.setup(&config).await {
                Ok(n) => self.net = Some(n),
                Err(e) => {
                    let msg = format!("setting up the pod network: {}", crate::error_report(&e));
                    self.shared
                        .event(pod, true, "FailedCreatePodSandBox", msg.clone());
                    return Err(msg);
                }
            }
        }
        let meta = pod
            .metadata
            .as_ref()
            .map(|m| (m.labels.clone(), m.annotations.clone()));
        let refresh = self.volumes.is_none()
            || self.volumes_at.elapsed() >= self.shared.config.resync_period
            || meta != self.volumes_meta;
        if refresh {
            let ca = self.shared.cluster_ca.as_deref();
            match volumes::prepare(&self.shared.client, pod, &self.dirs, ca).await {
                Ok(v) => {
                    self.volumes = Some(v);
                    self.volumes_at = Instant::now();
                    self.volumes_meta = meta;
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.shared.event(pod, true, "FailedMount", msg.clone());
                    if self.volumes.is_none() {
                        return Err(msg);
                    }
                }
            }
        }
        let hostname = hostname_of(pod);
        if let Err(e) =
            volumes::write_etc_files(&self.dirs, pod, &self.pod_ip(), &hostname, &self.shared.config)
        {
            return Err(format!("writing /etc/hosts of pod {}: {e}", key_of(pod)));
        }
        Ok(())
    }

    pub(super) fn pod_ip(&self) -> String {
        match &self.net {
            Some(n) => n.ip.to_string(),
            None => self.shared.config.node_ip.to_string(),
        }
    }

    pub(super) fn pod_ip_addr(&self) -> Option<IpAddr> {
        Some(
            self.net
                .as_ref()
                .map(|n| n.ip)
                .unwrap_or(self.shared.config.node_ip),
        )
    }

    /// Init containers in order, then the app containers. Returns when to look again.
    pub(super) async fn run_containers(
        &mut self,
        pod: &Arc<Pod>,
        spec: &rkube_api::core::v1::PodSpec,
    ) -> Duration {
        let mut next = self.shared.config.pod_poll_interval;
        let policy = spec.restart_policy.as_str();
        for c in &spec.init_containers {
            let t = self.tracks.entry(c.name.clone()).or_default();
            match t.current.as_ref().map(|i| (i.exited(), i.running())) {
                Some((Some((0, _)), _)) => continue,
                Some((Some(_), _)) if policy == "Never" => return next,
                Some((None, true)) => return next,
                _ => {
                    if let Some(wait) = self.start_if_due(pod, c, true).await {
                        next = next.min(wait);
                    }
                    return next;
                }
            }
        }
        for c in &spec.containers {
            let t = self.tracks.entry(c.name.clone()).or_default();
            // Liveness or startup probe failed: kill, and let the restart policy decide.
            if let Some(cur) = t.current.clone().filter(|i| i.running()) {
                if let Some(msg) = self.probes.get(&cur.id).failed {
                    self.shared.event(pod, false, "Killing", msg);
                    let grace = grace_for_probe(pod, c);
                    if let Err(e) = self.stop_container(pod, Some(c), &cur.id, grace).await {
                        tracing::warn!(pod = %key_of(pod), container = %c.name, "stopping after a failed probe: {e}");
                    }
                    self.probes.forget(&cur.id);
                    if let Ok(s) = self.shared.runtime.container_status(&cur.id).await {
                        if let Some(t) = self.tracks.get_mut(&c.name) {
                            if let Some(i) = &mut t.current {
                                i.status = s;
                            }
                        }
                    }
                }
            }
            let t = self.tracks.entry(c.name.clone()).or_default();
            let restart = match t.current.as_ref().map(|i| i.exited()) {
                None => true,
                Some(None) => false,
                Some(Some((code, _))) => match policy {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => true,
                },
            };
            if restart {
                if let Some(wait) = self.start_if_due(pod, c, false).await {
                    next = next.min(wait);
                }
            }
        }
        next
    }

    /// Starts the container's next attempt unless a back-off holds it; returns how long
    /// until it may be tried again when it did not start.
    pub(super) async fn start_if_due(
        &mut self,
        pod: &Arc<Pod>,
        c: &Container,
        _init: bool,
    ) -> Option<Duration> {
        let config = self.shared.config.clone();
        let t = self.tracks.entry(c.name.clone()).or_default();
        let now = SystemTime::now();
        // CrashLoopBackOff: the n-th quick exit in a row waits base * 2^(n-2), capped; a
        // long enough run starts the count again.
        if let Some(cur) = &t.current {
            if cur.exited().is_some() {
                let delay = backoff(cur.crash_streak(config.crashloop_backoff_reset), &config);
                let finished = match cur.status.state {
                    ContainerState::Exited {
                        finished_at: Some(f), ..
                    } => f,
                    _ => now,
                };
                let due = finished + delay;
                if delay > Duration::ZERO && due > now {
                    let message = format!(
                        "back-off {} restarting failed container={} pod={}_{}({})",
                        human(delay),
                        c.name,
                        pod.name(),
                        pod.namespace(),
                        self.uid
                    );
                    if t.waiting.as_ref().map(|w| w.0.as_str()) != Some("CrashLoopBackOff") {
                        self.shared.event(
                            pod,
                            true,
                            "BackOff",
                            format!(
                                "Back-off restarting failed container {} in pod {}",
                                c.name,
                                key_of(pod)
                            ),
                        );
                    }
                    t.waiting = Some(("CrashLoopBackOff".into(), message));
                    return Some(due.duration_since(now).unwrap_or_default());
                }
            }
        }
        if let Some(at) = t.pull_retry_at {
            if at > now {
                t.waiting = Some((
                    "ImagePullBackOff".into(),
                    format!("Back-off pulling image {:?}: {}", c.image, t.pull_error),
                ));
                return Some(at.duration_since(now).unwrap_or_default());
            }
        }
        self.start(pod, c).await.err()
    }

    /// Pull, configure, create and start one attempt of `c`.
    pub(super) async fn start(&mut self, pod: &Arc<Pod>, c: &Container) -> Result<(), Duration> {
        let shared = self.shared.clone();
        let rt = shared.runtime.clone();
        // Image.
        let image_id = match self.ensure_image(pod, c).await {
            Ok(id) => id,
            Err(wait) => return Err(wait),
        };
        let pod_ip = self.pod_ip();
        let host_ip = shared.config.node_ip.to_string();
        let config_span = tracing::debug_span!(target: rkube_api::POD_STARTUP_TRACE, "container_config", pod_uid = %self.uid);
        let services = match crate::service_env::services_for(&shared.client, pod)
            .instrument(config_span.clone())
            .await
        {
            Ok(s) => s,
            Err(e) => return Err(self.config_error(pod, c, e.0)),
        };
        let service_vars = crate::service_env::variables(&services);
        let env = match build_env(&shared.client, pod, c, (&pod_ip, &host_ip), &service_vars)
            .instrument(config_span)
            .await
        {
            Ok(env) => env,
            Err(e) => return Err(self.config_error(pod, c, e.0)),
        };
        let res = match resources(c) {
            Ok(r) => r,
            Err(e) => return Err(self.config_error(pod, c, e.0)),
        };
        let volumes = self.volumes.clone().unwrap_or_default();
        let mounts = match volumes::mounts_for(pod, c, &volumes, &self.dirs) {
            Ok(m) => m,
            Err(e) => return Err(self.config_error(pod, c, e.to_string())),
        };
        let (run_as_user, run_as_group) = user(pod, c);
        let security = match security(pod, c) {
            Ok(s) => s,
            Err(e) => return Err(self.config_error(pod, c, e.0)),
        };
        let meta = pod.metadata.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let t = self.tracks.entry(c.name.clone()).or_default();
        let attempt = t.current.as_ref().map(|i| i.attempt + 1).unwrap_or(0);
        let streak = t
            .current
            .as_ref()
            .map(|i| i.crash_streak(shared.config.crashloop_backoff_reset))
            .unwrap_or(0);
        let config = ContainerConfig {
            pod_uid: self.uid.clone(),
            pod_namespace: meta.namespace.clone(),
            pod_name: meta.name.clone(),
            name: c.name.clone(),
            restart_attempt: attempt,
            image: c.image.clone(),
            // `$(NAME)` in command and args refers to the container's env (not the image's).
            command: c
                .command
                .iter()
                .map(|a| crate::expansion::expand(a, &env))
                .collect(),
            args: c.args.iter().map(|a| crate::expansion::expand(a, &env)).collect(),
            env,
            working_dir: Some(c.working_dir.clone()).filter(|w| !w.is_empty()),
            mounts,
            network: match (&self.net, spec.host_network) {
                (_, true) => ContainerNetwork::Host,
                (Some(n), false) => ContainerNetwork::Namespace(n.netns_path.clone()),
                (None, false) => ContainerNetwork::Isolated,
            },
            hostname: Some(hostname_of(pod)),
            resources: res,
            run_as_user,
            run_as_group,
            security,
            labels: [(labels::CRASH_STREAK.to_string(), streak.to_string())].into(),
            io: ContainerIo {
                stdin: c.stdin,
                stdin_once: c.stdin_once,
                tty: c.tty,
            },
        };
        let id = match rt.create_container(&config).await {
            Ok(id) => id,
            Err(e) => {
                let msg = crate::error_report(&e);
                shared.event(pod, true, "Failed", format!("Error: {msg}"));
                t.waiting = Some(("CreateContainerError".into(), msg));
                return Err(backoff(1, &shared.config));
            }
        };
        shared.event(pod, false, "Created", format!("Created container {}", c.name));
        let log = self.dirs.log(&c.name, attempt);
        let task_start =
            tracing::debug_span!(target: rkube_api::POD_STARTUP_TRACE, "task_start", pod_uid = %self.uid);
        if let Err(e) = rt.start_container(&id, &log).instrument(task_start).await {
            let msg = crate::error_report(&e);
            shared.event(pod, true, "Failed", format!("Error: {msg}"));
            let _ = rt.remove_container(&id).await;
            t.waiting = Some(("RunContainerError".into(), msg));
            return Err(backoff(1, &shared.config));
        }
        shared.event(pod, false, "Started", format!("Started container {}", c.name));
        self.post_start(pod, c, &id).await;
        let t = self.tracks.entry(c.name.clone()).or_default();
        let status = match rt.container_status(&id).await {
            Ok(s) => s,
            Err(_) => ContainerStatus {
                id: id.clone(),
                state: ContainerState::Running,
                started_at: Some(SystemTime::now()),
                pid: None,
                image: c.image.clone(),
                labels: Default::default(),
                log_path: Some(log),
            },
        };
        // Keep the attempt before this one (lastState, `logs --previous`); drop older ones.
        let older = t.previous.take();
        t.previous = t.current.take();
        t.current = Some(Instance { id, attempt, status });
        t.waiting = None;
        t.image_id = image_id;
        if let Some(old) = older {
            let _ = rt.remove_container(&old.id).await;
        }
        if attempt >= 2 {
            let _ = std::fs::remove_file(self.dirs.log(&c.name, attempt - 2));
        }
        Ok(())
    }

    pub(super) fn config_error(&mut self, pod: &Arc<Pod>, c: &Container, msg: String) -> Duration {
        let t = self.tracks.entry(c.name.clone()).or_default();
        if t.waiting.as_ref().map(|w| &w.1) != Some(&msg) {
            self.shared.event(pod, true, "Failed", format!("Error: {msg}"));
        }
        t.waiting = Some(("CreateContainerConfigError".into(), msg));
        self.retry_soon()
    }

    /// When to try again after a problem the user is likely fixing right now (a missing
    /// ConfigMap, an image to be loaded): sooner than the periodic resync.
    pub(super) fn retry_soon(&self) -> Duration {
        self.shared.config.pod_poll_interval.min(Duration::from_secs(2))
    }

    /// Starts probe tasks for running containers with probes, stops the others' tasks.
    pub(super) fn manage_probe_tasks(&mut self, pod: &Arc<Pod>, spec: &rkube_api::core::v1::PodSpec) {
        for c in &spec.containers {
            let Some(t) = self.tracks.get_mut(&c.name) else {
                continue;
            };
            let running = t.current.as_ref().filter(|i| i.running()).map(|i| i.id.clone());
            let same = match (&t.probe_task, &running) {
                (Some((id, _)), Some(r)) => id == r,
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            if let Some((id, task)) = t.probe_task.take() {
                task.abort();
                self.probes.forget(&id);
            }
            let Some(id) = running.filter(|_| probes::has_probes(c)) else {
                continue;
            };
            let target = self.target(c, &id);
            let shared = self.shared.clone();
            let pod_for_events = pod.clone();
            let event: probes::EventFn = Arc::new(move |reason, message| {
                shared.event(&pod_for_events, true, reason, message);
            });
            let task = tokio::spawn(probes::run(target, self.probes.clone(), event));
            if let Some(t) = self.tracks.get_mut(&c.name) {
                t.probe_task = Some((id, task));
            }
        }
    }
}

pub(super) fn grace_for_probe(pod: &Pod, c: &Container) -> Duration {
    let probe = c
        .liveness_probe
        .as_ref()
        .and_then(|p| p.termination_grace_period_seconds)
        .or_else(|| {
            c.startup_probe
                .as_ref()
                .and_then(|p| p.termination_grace_period_seconds)
        });
    let seconds = probe
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

/// The crash streak after a run of `ran`, when `before` quick exits in a row preceded it: a
/// run of at least `reset` starts a new streak (it counts as its first exit), a shorter one
/// extends the streak.
pub(super) fn crash_streak(before: u32, ran: Duration, reset: Duration) -> u32 {
    if ran >= reset {
        1
    } else {
        before.saturating_add(1)
    }
}

/// The CrashLoopBackOff delay before the next restart of a container whose runs so far
/// (oldest first) lasted `runs`: [`backoff`] of the streak of quick exits since the last
/// run that lasted `crashloop_backoff_reset` (that run included).
#[cfg(test)]
pub(super) fn restart_delay(runs: &[Duration], config: &Config) -> Duration {
    let streak = runs.iter().fold(0, |before, ran| {
        crash_streak(before, *ran, config.crashloop_backoff_reset)
    });
    backoff(streak, config)
}

/// Delay before restart number `n` (1-based): none for the first, then base * 2^(n-2),
/// capped, as Kubernetes' kubelet does.
pub(super) fn backoff(n: u32, config: &Config) -> Duration {
    if n <= 1 {
        return Duration::ZERO;
    }
    let factor = 2u32.saturating_pow((n - 2).min(20));
    config
        .crashloop_backoff_base
        .saturating_mul(factor)
        .min(config.crashloop_backoff_max)
}

pub(super) fn human(d: Duration) -> String {
    if d.as_secs() >= 60 {
        format!("{}m{}s", d.as_secs() / 60, d.as_secs() % 60)
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

pub(super) fn hostname_of(pod: &Pod) -> String {
    let spec_name = pod.spec.as_ref().map(|s| s.hostname.clone()).unwrap_or_default();
    let name = if spec_name.is_empty() {
        pod.name().to_string()
    } else {
        spec_name
    };
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

pub(super) fn port_mappings(spec: &rkube_api::core::v1::PodSpec) -> Vec<PortMapping> {
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter())
        .filter(|p| p.host_port > 0)
        .filter_map(|p| {
            Some(PortMapping {
                host_port: u16::try_from(p.host_port).ok()?,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: match p.protocol.as_str() {
                    "UDP" => Protocol::Udp,
                    "SCTP" => Protocol::Sctp,
                    _ => Protocol::Tcp,
                },
                host_ip: p.host_ip.parse().ok(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_second_restart_and_is_capped() {
        let mut c = Config::new("http://x", "n");
        c.crashloop_backoff_base = Duration::from_secs(10);
        c.crashloop_backoff_max = Duration::from_secs(300);
        let d: Vec<u64> = (1..=8).map(|n| backoff(n, &c).as_secs()).collect();
        assert_eq!(d, vec![0, 10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn backoff_resets_after_a_run_as_long_as_the_reset_threshold() {
        let mut c = Config::new("http://x", "n");
        c.crashloop_backoff_base = Duration::from_secs(10);
        c.crashloop_backoff_max = Duration::from_secs(300);
        assert_eq!(
            c.crashloop_backoff_reset,
            Duration::from_secs(600),
            "Kubernetes' default"
        );
        let s = Duration::from_secs;
        let delay = |runs: &[u64]| {
            let runs: Vec<Duration> = runs.iter().map(|r| s(*r)).collect();
            restart_delay(&runs, &c).as_secs()
        };
        // Quick crashes: the same delays as by restart count.
        assert_eq!(delay(&[]), 0);
        assert_eq!(delay(&[1]), 0);
        assert_eq!(delay(&[1, 1]), 10);
        assert_eq!(delay(&[1; 7]), 300);
        for n in 1..=8 {
            assert_eq!(delay(&vec![1; n as usize]), backoff(n, &c).as_secs());
        }
        // A run of 10 minutes (or more) after a crash loop: restart at once, then start again
        // from the base delay.
        assert_eq!(delay(&[1, 1, 1, 1, 1, 1, 1, 600]), 0);
        assert_eq!(delay(&[1, 1, 1, 1, 1, 1, 1, 3600, 1]), 10);
        assert_eq!(delay(&[1, 1, 1, 1, 1, 1, 1, 3600, 1, 1]), 20);
        // Just short of the threshold does not reset.
        assert_eq!(delay(&[1, 1, 1, 1, 1, 1, 1, 599]), 300);
        // Long runs only: never a back-off.
        assert_eq!(delay(&[700, 700, 700]), 0);

        // The threshold is configurable.
        let mut short = c.clone();
        short.crashloop_backoff_reset = s(5);
        assert_eq!(restart_delay(&[s(1), s(1), s(1), s(5)], &short), s(0));
        assert_eq!(restart_delay(&[s(1), s(1), s(1), s(4)], &short), s(40));
        assert_eq!(restart_delay(&[s(1), s(5), s(4)], &short), s(10));

        // The label a restarted kubelet reads: streak before + this run.
        assert_eq!(crash_streak(6, s(1), s(5)), 7);
        assert_eq!(crash_streak(6, s(5), s(5)), 1);
        assert_eq!(crash_streak(u32::MAX, s(1), s(5)), u32::MAX);
    }
}
