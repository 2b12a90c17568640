//! NodeUnschedulable: cordoned nodes (`spec.unschedulable`, what
//! `rkubectl cordon` sets) take no new pods, unless the pod tolerates the
//! `node.kubernetes.io/unschedulable:NoSchedule` taint (DaemonSet pods do).

use super::taint_toleration::tolerates;
use super::{Cycle, FilterPlugin, Unfit};
use crate::cache::NodeInfo;
use crate::pod_info::PodInfo;
use rkube_api::core::v1::Taint;

pub struct NodeUnschedulable;

pub const REASON: &str = "node(s) were unschedulable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle<'_>) -> Result<(), Unfit> {
        if !node.unschedulable() {
            return Ok(());
        }
        let taint = Taint {
            key: TAINT_UNSCHEDULABLE.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if pod.tolerations.iter().any(|t| tolerates(t, &taint)) {
            Ok(())
        } else {
            Err(Unfit::new(REASON))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_filter, node, pod, toleration};

    #[test]
    fn cordoned_nodes_refuse_pods_that_do_not_tolerate_it() {
        let mut n = node("n1", "1", "1Gi");
        let mut p = pod("p", "0", "0");
        assert_eq!(check_filter(&NodeUnschedulable, &p, &n), Ok(()));
        n.spec.get_or_insert_with(Default::default).unschedulable = true;
        assert_eq!(
            check_filter(&NodeUnschedulable, &p, &n),
            Err(vec![REASON.to_string()])
        );
        p.spec.as_mut().unwrap().tolerations.push(toleration(
            TAINT_UNSCHEDULABLE,
            "Exists",
            "",
            "NoSchedule",
        ));
        assert_eq!(check_filter(&NodeUnschedulable, &p, &n), Ok(()));
    }
}
