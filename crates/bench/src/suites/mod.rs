//! The benchmark suites. To add one, write a module with a
//! `run(&Args) -> anyhow::Result<String>` returning a Markdown section and
//! list it in [`SUITES`].

pub mod apiserver;
pub mod cm_memory;
pub mod deployment;
pub mod dns;
pub mod footprint;
pub mod ingress;
pub mod job;
pub mod netpol;
pub mod pods;
pub mod proxy;
pub mod scale;
pub mod scheduler;
pub mod storage;

use crate::Args;

/// A named benchmark.
pub struct Suite {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&Args) -> anyhow::Result<String>,
}

/// Every suite, in the order they run.
pub const SUITES: &[Suite] = &[
    Suite {
        name: "apiserver",
        about: "creates/s, gets/s, list and watch latency of the apiserver, against etcd",
        run: apiserver::run,
    },
    Suite {
        name: "rest",
        about: "the apiserver's REST face (JSON) beside its gRPC face: creates/s, gets/s with 16 clients, a 10,000-pod list, watch delivery",
        run: apiserver::rest::run,
    },
    Suite {
        name: "scheduler",
        about: "pods/s and scheduling latency, 5,000 hollow nodes and 10,000 pods through the apiserver",
        run: scheduler::run,
    },
    Suite {
        name: "proxy",
        about: "rkube-proxy: full sync of 1,000/10,000 Services, network programming latency, HTTP via ClusterIP vs direct",
        run: proxy::run,
    },
    Suite {
        name: "ingress",
        about: "rkube-ingress: HTTP requests/s and p99 through the Ingress against the same two pods directly, 64 connections",
        run: ingress::run,
    },
    Suite {
        name: "dns",
        about: "the cluster DNS beside dnsmasq: answers/s and p99 with 64 UDP clients, and a new Service's time to resolve",
        run: dns::run,
    },
    Suite {
        name: "netpol",
        about: "NetworkPolicy enforcement: nft rules and sync time (compute, render, nft -f) for 100 and 1,000 policies",
        run: netpol::run,
    },
    Suite {
        name: "pods",
        about: "pod startup latency: 30 pods at once on one kubelet and containerd, against ctr run",
        run: pods::run,
    },
    Suite {
        name: "storage",
        about: "persistent storage: a claim's time to Bound, and a pod's start with a fresh local volume beside the same pod with an emptyDir",
        run: storage::run,
    },
    Suite {
        name: "deployment",
        about: "a Deployment scaled from 0 to 1,000 replicas on 100 hollow nodes: time until the pods exist and are bound, against a client creating them",
        run: deployment::run,
    },
    Suite {
        name: "job",
        about: "a Job of 1,000 completions with parallelism 50 on 100 hollow nodes: completions/s and the controller-manager's CPU, against a client running the same pods",
        run: job::run,
    },
    Suite {
        name: "controller-manager-memory",
        about: "resident memory of the rkube-controller-manager process with 10,000 pods in its caches",
        run: cm_memory::run,
    },
    Suite {
        name: "scale",
        about: "the control plane at 1,000 hollow nodes and 30,000 pods, then 5,000 nodes: RSS and bytes per object of each daemon, scheduler pods/s, write and list latency against Kubernetes' SLOs, watch fan-out to 1,000 watchers, node-lifecycle reaction to 100 lost nodes",
        run: scale::run,
    },
    Suite {
        name: "footprint",
        about: "resident memory and idle CPU of every daemon as its own process, at rest and with 100 pods on one real node",
        run: footprint::run,
    },
];

/// The suites named in `--only` (all when empty), in [`SUITES`] order.
pub fn select(only: &[String]) -> anyhow::Result<Vec<&'static Suite>> {
    for name in only {
        if !SUITES.iter().any(|s| s.name == name) {
            let known: Vec<String> = SUITES
                .iter()
                .map(|s| format!("{} ({})", s.name, s.about))
                .collect();
            anyhow::bail!("unknown suite {name:?}; known suites: {}", known.join(", "));
        }
    }
    Ok(SUITES
        .iter()
        .filter(|s| only.is_empty() || only.iter().any(|n| n == s.name))
        .collect())
}
