//! `get pods`: NAME READY STATUS RESTARTS AGE (+ IP NODE NOMINATED NODE
//! READINESS GATES), with STATUS derived exactly as kubectl does, because
//! that word is what people read to decide what is wrong.

use super::{age, or_none, Column, TableRow};
use chrono::{DateTime, Utc};
use rkube_api::core::v1::{ContainerStatus, Pod};

/// The reason a node controller gives pods of a node that stopped
/// answering; kubectl shows such pods as `Unknown` while they are deleted.
const NODE_UNREACHABLE_REASON: &str = "NodeLost";

/// What `get pods` shows in READY, STATUS and RESTARTS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSummary {
    pub ready: usize,
    pub total: usize,
    pub status: String,
    pub restarts: i32,
    /// When the most recent restart happened (the last termination's end).
    pub last_restart: Option<String>,
}

fn waiting_reason(c: &ContainerStatus) -> Option<&str> {
    let w = c.state.as_ref()?.waiting.as_ref()?;
    (!w.reason.is_empty()).then_some(w.reason.as_str())
}

/// READY, STATUS and RESTARTS of a pod: the phase, unless a container is
/// waiting or has terminated with a reason (`CrashLoopBackOff`,
/// `ErrImagePull`, `Completed`, `OOMKilled`), an init container is still
/// working (`Init:0/1`), or the pod is being deleted (`Terminating`).
pub fn pod_status(pod: &Pod) -> PodSummary {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let mut reason = if status.phase.is_empty() {
        "Pending".to_string()
    } else {
        status.phase.clone()
    };
    if !status.reason.is_empty() {
        reason = status.reason.clone();
    }
    let mut restarts = 0;
    let mut ready = 0;
    let mut last_restart: Option<String> = None;
    let mut note_restart = |c: &ContainerStatus| {
        if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
            if !t.finished_at.is_empty() && last_restart.as_deref().is_none_or(|l| t.finished_at.as_str() > l)
            {
                last_restart = Some(t.finished_at.clone());
            }
        }
    };

    let mut initializing = false;
    for (i, c) in status.init_container_statuses.iter().enumerate() {
        restarts += c.restart_count;
        note_restart(c);
        let state = c.state.clone().unwrap_or_default();
        match (&state.terminated, waiting_reason(c)) {
            (Some(t), _) if t.exit_code == 0 => continue,
            (Some(t), _) => {
                reason = if !t.reason.is_empty() {
                    format!("Init:{}", t.reason)
                } else if t.signal != 0 {
                    format!("Init:Signal:{}", t.signal)
                } else {
                    format!("Init:ExitCode:{}", t.exit_code)
                };
            }
            (None, Some(w)) if w != "PodInitializing" => reason = format!("Init:{w}"),
            _ => reason = format!("Init:{i}/{}", spec.init_containers.len()),
        }
        initializing = true;
        break;
    }

    if !initializing {
        restarts = 0;
        let mut has_running = false;
        // the first container's state wins, as kubectl walks them backwards
        for c in status.container_statuses.iter().rev() {
            restarts += c.restart_count;
            note_restart(c);
            let state = c.state.clone().unwrap_or_default();
            if let Some(w) = waiting_reason(c) {
                reason = w.to_string();
            } else if let Some(t) = state.terminated.as_ref() {
                reason = if !t.reason.is_empty() {
                    t.reason.clone()
                } else if t.signal != 0 {
                    format!("Signal:{}", t.signal)
                } else {
                    format!("ExitCode:{}", t.exit_code)
                };
            } else if c.ready && state.running.is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = status
                .conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.status == "True");
            reason = if pod_ready {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    let deleting = pod
        .metadata
        .as_ref()
        .is_some_and(|m| !m.deletion_timestamp.is_empty());
    if deleting && status.reason == NODE_UNREACHABLE_REASON {
        reason = "Unknown".into();
    } else if deleting {
        reason = "Terminating".into();
    }

    PodSummary {
        ready,
        total: spec.containers.len(),
        status: reason,
        restarts,
        last_restart,
    }
}

impl TableRow for Pod {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Ready", "The aggregate readiness state of this pod for accepting traffic."),
        Column::string("Status", "The aggregate status of the containers in this pod."),
        Column::string(
            "Restarts",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        Column::AGE,
        Column::string("IP", "IP address allocated to the pod.").wide(),
        Column::string("Node", "The node the pod is bound to.").wide(),
        Column::string("Nominated Node", "The node a preempting pod is expected to run on.").wide(),
        Column::string("Readiness Gates", "Pod conditions evaluated for readiness.").wide(),
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let s = pod_status(self);
        let restarts = match &s.last_restart {
            Some(t) if s.restarts > 0 => format!("{} ({} ago)", s.restarts, age(t, now)),
            _ => s.restarts.to_string(),
        };
        let status = self.status.clone().unwrap_or_default();
        let spec = self.spec.clone().unwrap_or_default();
        vec![
            meta.name,
            format!("{}/{}", s.ready, s.total),
            s.status,
            restarts,
            age(&meta.creation_timestamp, now),
            or_none(status.pod_ip),
            or_none(spec.node_name),
            or_none(status.nominated_node_name),
            "<none>".into(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_time;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    const SPEC: &str = "metadata: {name: web-1, creationTimestamp: '2024-05-01T11:00:00Z'}\nspec: {containers: [{name: a, image: x}]}\n";

    fn status_of(status_yaml: &str) -> PodSummary {
        pod_status(&pod(&format!("{SPEC}status:\n{status_yaml}")))
    }

    #[test]
    fn running_pod_shows_phase_and_readiness() {
        let s = status_of("  phase: Running\n  containerStatuses:\n  - {name: a, ready: true, restartCount: 0, state: {running: {startedAt: '2024-05-01T11:00:01Z'}}}\n");
        assert_eq!(
            (s.ready, s.total, s.status.as_str(), s.restarts),
            (1, 1, "Running", 0)
        );
    }

    #[test]
    fn waiting_reason_wins_over_phase() {
        let s = status_of("  phase: Running\n  containerStatuses:\n  - {name: a, ready: false, restartCount: 4, state: {waiting: {reason: CrashLoopBackOff}}, lastState: {terminated: {exitCode: 1, reason: Error, finishedAt: '2024-05-01T11:59:15Z'}}}\n");
        assert_eq!(
            (s.ready, s.status.as_str(), s.restarts),
            (0, "CrashLoopBackOff", 4)
        );
        assert_eq!(s.last_restart.as_deref(), Some("2024-05-01T11:59:15Z"));
        let s = status_of("  phase: Pending\n  containerStatuses:\n  - {name: a, state: {waiting: {reason: ErrImagePull}}}\n");
        assert_eq!(s.status, "ErrImagePull");
    }

    #[test]
    fn terminated_reason_or_exit_code() {
        let s = status_of("  phase: Succeeded\n  containerStatuses:\n  - {name: a, state: {terminated: {exitCode: 0, reason: Completed}}}\n");
        assert_eq!(s.status, "Completed");
        let s = status_of("  phase: Running\n  containerStatuses:\n  - {name: a, state: {terminated: {exitCode: 137, reason: OOMKilled}}}\n");
        assert_eq!(s.status, "OOMKilled");
        let s = status_of(
            "  phase: Failed\n  containerStatuses:\n  - {name: a, state: {terminated: {exitCode: 3}}}\n",
        );
        assert_eq!(s.status, "ExitCode:3");
        let s = status_of("  phase: Failed\n  containerStatuses:\n  - {name: a, state: {terminated: {exitCode: 0, signal: 9}}}\n");
        assert_eq!(s.status, "Signal:9");
    }

    #[test]
    fn init_containers_show_progress() {
        let p = pod("metadata: {name: p}\nspec: {initContainers: [{name: i, image: x}, {name: j, image: x}], containers: [{name: a, image: x}]}\nstatus:\n  phase: Pending\n  initContainerStatuses:\n  - {name: i, state: {terminated: {exitCode: 0}}}\n  - {name: j, state: {running: {}}}\n");
        assert_eq!(pod_status(&p).status, "Init:1/2");
        let p = pod("metadata: {name: p}\nspec: {initContainers: [{name: i, image: x}], containers: [{name: a, image: x}]}\nstatus:\n  phase: Pending\n  initContainerStatuses:\n  - {name: i, restartCount: 2, state: {waiting: {reason: CrashLoopBackOff}}}\n");
        let s = pod_status(&p);
        assert_eq!((s.status.as_str(), s.restarts), ("Init:CrashLoopBackOff", 2));
    }

    #[test]
    fn deletion_shows_terminating() {
        let p = pod("metadata: {name: p, deletionTimestamp: '2024-05-01T11:00:00Z'}\nspec: {containers: [{name: a, image: x}]}\nstatus: {phase: Running}\n");
        assert_eq!(pod_status(&p).status, "Terminating");
        let p = pod("metadata: {name: p, deletionTimestamp: '2024-05-01T11:00:00Z'}\nspec: {containers: [{name: a, image: x}]}\nstatus: {phase: Running, reason: NodeLost}\n");
        assert_eq!(pod_status(&p).status, "Unknown");
    }

    #[test]
    fn pod_without_status_is_pending() {
        assert_eq!(pod_status(&pod(SPEC)).status, "Pending");
    }

    #[test]
    fn row_and_wide_row() {
        let now = parse_time("2024-05-01T12:00:00Z").unwrap();
        let p = pod(
            "metadata: {name: web-1, creationTimestamp: '2024-05-01T11:00:00Z'}\nspec: {containers: [{name: a, image: x}], nodeName: n1}\nstatus:\n  phase: Running\n  containerStatuses:\n  - {name: a, restartCount: 4, state: {waiting: {reason: CrashLoopBackOff}}, lastState: {terminated: {exitCode: 1, finishedAt: '2024-05-01T11:59:15Z'}}}\n",
        );
        // set in code: the test is about the row, not about JSON names
        let mut p = p;
        p.status.as_mut().unwrap().pod_ip = "10.244.1.5".into();
        assert_eq!(
            p.cells(false, now)[..5],
            ["web-1", "0/1", "CrashLoopBackOff", "4 (45s ago)", "60m"]
        );
        assert_eq!(
            p.cells(true, now)[5..],
            [
                "10.244.1.5".to_string(),
                "n1".into(),
                "<none>".into(),
                "<none>".into()
            ]
        );
    }
}
