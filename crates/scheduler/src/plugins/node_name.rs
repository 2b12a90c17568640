//! NodeName: a pod that names its node (`spec.nodeName`) fits only there.
//! Such pods are normally bound already and never reach the scheduler;
//! the filter keeps the rule whole, as Kubernetes does.

use super::{Cycle, FilterPlugin, Unfit};
use crate::cache::NodeInfo;
use crate::pod_info::PodInfo;

pub struct NodeName;

pub const REASON: &str = "node(s) didn't match the requested node name";

impl FilterPlugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle<'_>) -> Result<(), Unfit> {
        if pod.node_name.is_empty() || pod.node_name == node.name {
            Ok(())
        } else {
            Err(Unfit::new(REASON))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_filter, node, pod};

    #[test]
    fn only_the_named_node_fits() {
        let mut p = pod("p", "0", "0");
        assert_eq!(check_filter(&NodeName, &p, &node("n1", "1", "1Gi")), Ok(()));
        p.spec.as_mut().unwrap().node_name = "n2".into();
        assert_eq!(check_filter(&NodeName, &p, &node("n2", "1", "1Gi")), Ok(()));
        assert_eq!(
            check_filter(&NodeName, &p, &node("n1", "1", "1Gi")),
            Err(vec![REASON.to_string()])
        );
    }
}
