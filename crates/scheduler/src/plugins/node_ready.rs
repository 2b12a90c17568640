//! NodeReady: a node whose Ready condition is not True takes no new pods.
//! Kubernetes expresses this with the taints the node-lifecycle controller
//! puts on such nodes (`node.kubernetes.io/not-ready`, `.../unreachable`);
//! this filter applies the same taint at once, before that controller has
//! run, so the window after a node fails (or before its kubelet reports)
//! is closed too. Pods that tolerate the taint still fit, and the reason
//! reads exactly like TaintToleration's.

use super::taint_toleration::{tolerates, untolerated_reason};
use super::{Cycle, FilterPlugin, Unfit};
use crate::cache::{NodeInfo, Readiness};
use crate::pod_info::PodInfo;
use rkube_api::core::v1::Taint;

pub struct NodeReady;

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";

impl FilterPlugin for NodeReady {
    fn name(&self) -> &'static str {
        "NodeReady"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle<'_>) -> Result<(), Unfit> {
        let key = match node.readiness {
            Readiness::Ready => return Ok(()),
            Readiness::NotReady => TAINT_NOT_READY,
            Readiness::Unreachable => TAINT_UNREACHABLE,
        };
        // TaintToleration already judged the real taint, if it is there.
        if node.taints().iter().any(|t| t.key == key) {
            return Ok(());
        }
        let taint = Taint {
            key: key.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if pod.tolerations.iter().any(|t| tolerates(t, &taint)) {
            Ok(())
        } else {
            Err(Unfit::new(untolerated_reason(&taint)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_filter, node, pod, toleration};

    #[test]
    fn not_ready_and_unreachable_nodes_refuse_pods_as_if_tainted() {
        let mut n = node("n1", "1", "1Gi");
        let mut p = pod("p", "0", "0");
        assert_eq!(check_filter(&NodeReady, &p, &n), Ok(()));
        n.status.as_mut().unwrap().conditions[0].status = "False".into();
        assert_eq!(
            check_filter(&NodeReady, &p, &n),
            Err(vec![
                "node(s) had untolerated taint {node.kubernetes.io/not-ready: }".to_string()
            ])
        );
        n.status.as_mut().unwrap().conditions[0].status = "Unknown".into();
        assert_eq!(
            check_filter(&NodeReady, &p, &n),
            Err(vec![
                "node(s) had untolerated taint {node.kubernetes.io/unreachable: }".to_string()
            ])
        );
        p.spec
            .as_mut()
            .unwrap()
            .tolerations
            .push(toleration(TAINT_UNREACHABLE, "Exists", "", ""));
        assert_eq!(check_filter(&NodeReady, &p, &n), Ok(()));
        n.status.as_mut().unwrap().conditions.clear();
        assert!(
            check_filter(&NodeReady, &p, &n).is_err(),
            "no Ready condition yet: not ready"
        );
    }
}
