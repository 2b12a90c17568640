//! TaintToleration: a node's NoSchedule and NoExecute taints keep off every
//! pod that does not tolerate them; PreferNoSchedule taints only lower the
//! node's score.

use super::{normalize_reverse, Cycle, FilterPlugin, ScorePlugin, Unfit};
use crate::cache::NodeInfo;
use crate::pod_info::PodInfo;
use rkube_api::core::v1::Taint;

pub struct TaintToleration;

pub use rkube_api::placement::tolerates;

/// `node(s) had untolerated taint {key: value}`, Kubernetes' wording.
pub fn untolerated_reason(taint: &Taint) -> String {
    format!("node(s) had untolerated taint {{{}: {}}}", taint.key, taint.value)
}

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle<'_>) -> Result<(), Unfit> {
        let untolerated = node.taints().iter().find(|taint| {
            (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
                && !pod.tolerations.iter().any(|t| tolerates(t, taint))
        });
        match untolerated {
            Some(taint) => Err(Unfit::new(untolerated_reason(taint))),
            None => Ok(()),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn weight(&self) -> i64 {
        3
    }

    /// The number of PreferNoSchedule taints the pod does not tolerate.
    fn score(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle<'_>) -> i64 {
        node.taints()
            .iter()
            .filter(|taint| {
                taint.effect == "PreferNoSchedule"
                    && !pod
                        .tolerations
                        .iter()
                        .filter(|t| t.effect.is_empty() || t.effect == "PreferNoSchedule")
                        .any(|t| tolerates(t, taint))
            })
            .count() as i64
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_reverse(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_filter, node, pod, score_nodes, taint, toleration};

    #[test]
    fn toleration_matching_follows_kubernetes() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        assert!(tolerates(
            &toleration("dedicated", "Equal", "gpu", "NoSchedule"),
            &t
        ));
        assert!(tolerates(&toleration("dedicated", "", "gpu", ""), &t));
        assert!(!tolerates(
            &toleration("dedicated", "Equal", "cpu", "NoSchedule"),
            &t
        ));
        assert!(tolerates(&toleration("dedicated", "Exists", "", ""), &t));
        assert!(
            tolerates(&toleration("", "Exists", "", ""), &t),
            "empty key + Exists tolerates all"
        );
        assert!(!tolerates(
            &toleration("dedicated", "Exists", "", "NoExecute"),
            &t
        ));
        assert!(!tolerates(&toleration("dedicated", "Bogus", "gpu", ""), &t));
    }

    #[test]
    fn no_schedule_and_no_execute_taints_filter() {
        let mut n = node("n1", "1", "1Gi");
        let mut p = pod("p", "0", "0");
        n.spec.get_or_insert_with(Default::default).taints = vec![
            taint("soft", "", "PreferNoSchedule"),
            taint("node.kubernetes.io/not-ready", "", "NoExecute"),
        ];
        assert_eq!(
            check_filter(&TaintToleration, &p, &n),
            Err(vec![
                "node(s) had untolerated taint {node.kubernetes.io/not-ready: }".to_string()
            ])
        );
        p.spec.as_mut().unwrap().tolerations.push(toleration(
            "node.kubernetes.io/not-ready",
            "Exists",
            "",
            "NoExecute",
        ));
        assert_eq!(check_filter(&TaintToleration, &p, &n), Ok(()));
    }

    #[test]
    fn a_node_under_pressure_gets_no_new_pods() {
        let mut n = node("n1", "1", "1Gi");
        n.spec.get_or_insert_with(Default::default).taints =
            vec![taint("node.kubernetes.io/disk-pressure", "", "NoSchedule")];
        let best_effort = pod("be", "0", "0");
        let burstable = pod("b", "100m", "64Mi");
        for p in [&best_effort, &burstable] {
            assert_eq!(
                check_filter(&TaintToleration, p, &n),
                Err(vec![
                    "node(s) had untolerated taint {node.kubernetes.io/disk-pressure: }".to_string()
                ])
            );
        }
        // memory pressure keeps off only BestEffort pods, as Kubernetes does
        n.spec.as_mut().unwrap().taints =
            vec![taint(crate::pod_info::MEMORY_PRESSURE_TAINT, "", "NoSchedule")];
        assert_eq!(
            check_filter(&TaintToleration, &best_effort, &n),
            Err(vec![
                "node(s) had untolerated taint {node.kubernetes.io/memory-pressure: }".to_string()
            ])
        );
        assert_eq!(check_filter(&TaintToleration, &burstable, &n), Ok(()));
        let n2 = node("n2", "1", "1Gi");
        assert_eq!(check_filter(&TaintToleration, &best_effort, &n2), Ok(()));
    }

    #[test]
    fn prefer_no_schedule_lowers_the_score() {
        let clean = node("clean", "1", "1Gi");
        let mut soft = node("soft", "1", "1Gi");
        soft.spec.get_or_insert_with(Default::default).taints = vec![taint("k", "v", "PreferNoSchedule")];
        let p = pod("p", "0", "0");
        assert_eq!(
            score_nodes(&TaintToleration, &p, &[clean.clone(), soft.clone()]),
            [100, 0]
        );
        let mut tolerant = p.clone();
        tolerant
            .spec
            .as_mut()
            .unwrap()
            .tolerations
            .push(toleration("k", "Equal", "v", "PreferNoSchedule"));
        assert_eq!(
            score_nodes(&TaintToleration, &tolerant, &[clean, soft]),
            [100, 100]
        );
    }
}
