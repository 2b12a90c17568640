//! The pod's status from what the runtime reports, written when it differs from what the
//! apiserver has.

use std::sync::Arc;

use rkube_api::core::v1::{
    Container, ContainerState as ApiState, ContainerStateRunning, ContainerStateWaiting,
    ContainerStatus as ApiStatus, HostIp, Pod, PodCondition, PodIp, PodStatus,
};
use rkube_api::Resource as _;
use rkube_client::Api;

use super::{rfc3339, uid_of, Instance, PodWorker};
use rkube_node_runtime::runtime::ContainerState;

impl PodWorker {
    pub(super) fn container_status(&self, c: &Container, is_init: bool) -> ApiStatus {
        let t = self.tracks.get(&c.name);
        let current = t.and_then(|t| t.current.as_ref());
        let waiting = |reason: &str, message: &str| ApiState {
            waiting: Some(ContainerStateWaiting {
                reason: reason.into(),
                message: message.into(),
            }),
            ..Default::default()
        };
        let terminated = |i: &Instance| ApiState {
            terminated: Some(i.terminated()),
            ..Default::default()
        };
        let mut ready = false;
        let mut started = None;
        let (state, last) = match current {
            None => {
                let (reason, message) = match (t.and_then(|t| t.waiting.clone()), &self.pod_waiting) {
                    (Some(w), _) => w,
                    (None, Some(m)) => ("ContainerCreating".to_string(), m.clone()),
                    (None, None) if is_init => ("PodInitializing".to_string(), String::new()),
                    (None, None) => ("ContainerCreating".to_string(), String::new()),
                };
                (waiting(&reason, &message), None)
            }
            Some(i) => {
                let last = t.and_then(|t| t.previous.as_ref()).map(terminated);
                match &i.status.state {
                    ContainerState::Running => {
                        let probes = self.probes.get(&i.id);
                        let s = if c.startup_probe.is_some() {
                            probes.started
                        } else {
                            true
                        };
                        started = Some(s);
                        ready = if is_init {
                            false
                        } else if c.readiness_probe.is_some() || c.startup_probe.is_some() {
                            probes.ready && s
                        } else {
                            true
                        };
                        (
                            ApiState {
                                running: Some(ContainerStateRunning {
                                    started_at: i.status.started_at.map(rfc3339).unwrap_or_default(),
                                }),
                                ..Default::default()
                            },
                            last,
                        )
                    }
                    ContainerState::Created => (waiting("ContainerCreating", ""), last),
                    _ => {
                        started = Some(false);
                        ready = is_init && i.exited() == Some((0, false));
                        match t.and_then(|t| t.waiting.clone()) {
                            Some((reason, message)) => (waiting(&reason, &message), Some(terminated(i))),
                            None => (terminated(i), last),
                        }
                    }
                }
            }
        };
        ApiStatus {
            name: c.name.clone(),
            state: Some(state),
            last_state: Some(last.unwrap_or_default()),
            ready,
            restart_count: current.map(|i| i.attempt as i32).unwrap_or(0),
            image: c.image.clone(),
            image_id: t.map(|t| t.image_id.clone()).unwrap_or_default(),
            container_id: current
                .map(|i| format!("containerd://{}", i.id))
                .unwrap_or_default(),
            started: if is_init {
                None
            } else {
                Some(started.unwrap_or(false))
            },
        }
    }

    pub(super) fn compute_status(&self, pod: &Pod, spec: &rkube_api::core::v1::PodSpec) -> PodStatus {
        let old = pod.status.clone().unwrap_or_default();
        let policy = spec.restart_policy.as_str();
        let init_statuses: Vec<ApiStatus> = spec
            .init_containers
            .iter()
            .map(|c| self.container_status(c, true))
            .collect();
        let statuses: Vec<ApiStatus> = spec
            .containers
            .iter()
            .map(|c| self.container_status(c, false))
            .collect();
        let exited = |name: &str| {
            self.tracks
                .get(name)
                .and_then(|t| t.current.as_ref())
                .and_then(Instance::exited)
        };
        let init_done = spec
            .init_containers
            .iter()
            .all(|c| exited(&c.name).is_some_and(|e| e.0 == 0));
        let init_failed = policy == "Never"
            && spec
                .init_containers
                .iter()
                .any(|c| exited(&c.name).is_some_and(|e| e.0 != 0));
        let previous_phase = current_phase(pod, &self.written);
        let was_terminal = matches!(previous_phase.as_str(), "Succeeded" | "Failed");
        let phase = if was_terminal {
            previous_phase
        } else if self.evicted.is_some() || init_failed {
            "Failed".to_string()
        } else if !init_done {
            "Pending".to_string()
        } else {
            let finals: Vec<Option<i32>> = spec
                .containers
                .iter()
                .map(|c| {
                    exited(&c.name).and_then(|(code, _)| match policy {
                        "Never" => Some(code),
                        "OnFailure" if code == 0 => Some(code),
                        _ => None,
                    })
                })
                .collect();
            if !finals.is_empty() && finals.iter().all(Option::is_some) {
                if finals.iter().all(|c| *c == Some(0)) {
                    "Succeeded".to_string()
                } else {
                    "Failed".to_string()
                }
            } else if spec
                .containers
                .iter()
                .all(|c| self.tracks.get(&c.name).is_some_and(|t| t.current.is_some()))
            {
                "Running".to_string()
            } else {
                "Pending".to_string()
            }
        };
        let terminal = matches!(phase.as_str(), "Succeeded" | "Failed");
        let now = crate::node::now_rfc3339();
        let condition = |type_: &str, ok: bool, reason: &str, message: String| {
            let status = if ok { "True" } else { "False" }.to_string();
            let previous = old.conditions.iter().find(|c| c.r#type == type_);
            PodCondition {
                r#type: type_.into(),
                last_transition_time: match previous {
                    Some(p) if p.status == status && !p.last_transition_time.is_empty() => {
                        p.last_transition_time.clone()
                    }
                    _ => now.clone(),
                },
                status,
                last_probe_time: String::new(),
                reason: if ok { String::new() } else { reason.into() },
                message: if ok { String::new() } else { message },
            }
        };
        let incomplete: Vec<&str> = spec
            .init_containers
            .iter()
            .filter(|c| exited(&c.name).is_none_or(|e| e.0 != 0))
            .map(|c| c.name.as_str())
            .collect();
        let unready: Vec<&str> = statuses
            .iter()
            .filter(|s| !s.ready)
            .map(|s| s.name.as_str())
            .collect();
        let (ready_reason, ready_msg) = if terminal {
            ("PodCompleted", String::new())
        } else {
            (
                "ContainersNotReady",
                format!("containers with unready status: [{}]", unready.join(" ")),
            )
        };
        let all_ready = unready.is_empty() && !terminal;
        let scheduled = old
            .conditions
            .iter()
            .find(|c| c.r#type == "PodScheduled")
            .cloned()
            .unwrap_or_else(|| condition("PodScheduled", true, "", String::new()));
        let conditions = vec![
            condition(
                "Initialized",
                init_done || (terminal && incomplete.is_empty()),
                "ContainersNotInitialized",
                format!("containers with incomplete status: [{}]", incomplete.join(" ")),
            ),
            condition("Ready", all_ready, ready_reason, ready_msg.clone()),
            condition("ContainersReady", all_ready, ready_reason, ready_msg),
            scheduled,
        ];
        let host_ip = self.shared.config.node_ip.to_string();
        let pod_ip = if spec.host_network || self.net.is_some() {
            self.pod_ip()
        } else {
            String::new()
        };
        // an eviction's reason stays with the pod, also through a kubelet restart
        let (reason, message) = match &self.evicted {
            Some(why) if !was_terminal => ("Evicted".to_string(), why.clone()),
            _ if was_terminal => (old.reason.clone(), old.message.clone()),
            _ => (String::new(), self.pod_waiting.clone().unwrap_or_default()),
        };
        PodStatus {
            phase,
            conditions,
            message,
            reason,
            host_ips: vec![HostIp { ip: host_ip.clone() }],
            host_ip,
            pod_ips: if pod_ip.is_empty() {
                vec![]
            } else {
                vec![PodIp { ip: pod_ip.clone() }]
            },
            pod_ip,
            start_time: self.start_time.clone().unwrap_or_default(),
            init_container_statuses: init_statuses,
            container_statuses: statuses,
            qos_class: old.qos_class.clone(),
            nominated_node_name: old.nominated_node_name.clone(),
        }
    }

    /// Writes the status if it differs from what the apiserver has, retrying conflicts.
    pub(super) async fn write_status(
        &mut self,
        pod: &Arc<Pod>,
        spec: &rkube_api::core::v1::PodSpec,
    ) -> anyhow::Result<()> {
        let base = newer(pod, self.written.as_ref());
        let status = self.compute_status(&base, spec);
        if base.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), pod.namespace());
        let mut obj = base.clone();
        for attempt in 0..5 {
            obj.status = Some(status.clone());
            match api.update_status(&obj).await {
                Ok(stored) => {
                    self.written = Some(stored);
                    return Ok(());
                }
                Err(e) if e.is_conflict() && attempt < 4 => {
                    obj = api.get(pod.name()).await?;
                    if uid_of(&obj) != self.uid {
                        return Ok(());
                    }
                }
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

pub(super) fn current_phase(pod: &Pod, written: &Option<Pod>) -> String {
    let base = newer(pod, written.as_ref());
    base.status.as_ref().map(|s| s.phase.clone()).unwrap_or_default()
}

/// The more recent of the informer's copy and what our last write returned.
pub(super) fn newer(pod: &Pod, written: Option<&Pod>) -> Pod {
    let rv = |p: &Pod| {
        p.metadata
            .as_ref()
            .and_then(|m| m.resource_version.parse::<u64>().ok())
            .unwrap_or(0)
    };
    match written {
        Some(w) if uid_of(w) == uid_of(pod) && rv(w) > rv(pod) => w.clone(),
        _ => pod.clone(),
    }
}
