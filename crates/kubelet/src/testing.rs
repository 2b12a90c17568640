//! The end-to-end harness of the node runtime (feature `test-support`), plus how a test
//! points a kubelet at one of its nodes.

pub use rkube_node_runtime::testing::*;

impl crate::Config {
    /// A kubelet configuration for `node`: its containerd, directories and cgroup under the
    /// test's, pods wired in its namespace, the kubelet's address `ip` and its server on a
    /// free port there, and `pod_cidr` (the node-ipam fallback).
    pub fn for_test_node(
        node: &TestNode,
        apiserver: impl Into<String>,
        node_name: &str,
        ip: std::net::IpAddr,
        pod_cidr: Option<&str>,
    ) -> Self {
        let mut config = crate::Config::new(apiserver, node_name);
        config.containerd_socket = node.socket.clone();
        config.root_dir = node.dir().join("kubelet-root");
        config.run_dir = node.dir().join("run");
        config.runtime_state_dir = node.dir().join("kubelet");
        config.cgroup_parent = node.cgroup_parent.clone();
        config.containerd_root = node.containerd_root();
        // No eviction thresholds or image garbage collection unless a test sets them: a
        // test machine's disk may well be fuller than Kubernetes' defaults allow, and a
        // test about something else must not see its pods evicted or images removed.
        config.eviction_hard = Vec::new();
        config.image_gc_high_threshold = 100;
        config.image_gc_low_threshold = 99;
        config.node_ip = ip;
        config.listen = std::net::SocketAddr::new(ip, 0);
        config.pod_cidr = pod_cidr.map(str::to_string);
        config.cni_node_netns = Some(node.netns_path.clone());
        config
    }
}
