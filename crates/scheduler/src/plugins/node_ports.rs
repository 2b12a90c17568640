//! NodePorts: two pods cannot hold the same host port and protocol on one
//! node (unless they bind different, specific host IPs).

use super::{Cycle, FilterPlugin, Unfit};
use crate::cache::NodeInfo;
use crate::pod_info::PodInfo;

pub struct NodePorts;

pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

impl FilterPlugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle<'_>) -> Result<(), Unfit> {
        if pod.host_ports.iter().any(|p| node.port_in_use(p)) {
            Err(Unfit::new(REASON))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::testing::{node, pod, with_host_port};
    use std::sync::Arc;

    #[test]
    fn a_host_port_in_use_on_the_node_does_not_fit() {
        let mut cache = Cache::default();
        cache.set_node(Arc::new(node("n1", "4", "4Gi")));
        let first = PodInfo::new(&with_host_port(pod("a", "0", "0"), 8080, "")).unwrap();
        let cycle = Cycle::new(&first, &cache);
        assert_eq!(
            NodePorts.filter(&first, cache.node("n1").unwrap(), &cycle),
            Ok(())
        );
        drop(cycle);
        cache.assume(&first, "n1");

        let same = PodInfo::new(&with_host_port(pod("b", "0", "0"), 8080, "")).unwrap();
        let other = PodInfo::new(&with_host_port(pod("c", "0", "0"), 8081, "")).unwrap();
        let specific = PodInfo::new(&with_host_port(pod("d", "0", "0"), 8080, "10.0.0.1")).unwrap();
        let cycle = Cycle::new(&same, &cache);
        let n1 = cache.node("n1").unwrap();
        assert_eq!(NodePorts.filter(&same, n1, &cycle), Err(Unfit::new(REASON)));
        assert_eq!(NodePorts.filter(&other, n1, &cycle), Ok(()));
        assert!(
            NodePorts.filter(&specific, n1, &cycle).is_err(),
            "0.0.0.0 holds every IP"
        );
    }
}
