//! The node-ipam controller: every Node gets `spec.podCIDR` (and
//! `podCIDRs`), a distinct slice of the cluster CIDR that its kubelet's CNI
//! hands out pod addresses from (Kubernetes' range allocator).
//!
//! The allocation set is rebuilt from every Node's podCIDR before anything
//! is allocated, so a restarted controller never hands out a CIDR in use;
//! allocation runs under one worker and one lock. A deleted Node's CIDR is
//! released. IPv4 only: a dual-stack cluster CIDR is refused at start.

use super::Error;
use crate::{Context, Shutdown};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::core::v1::Node;
use rkube_api::Resource;
use rkube_client::{Action, Api, Controller, EventType, Store, WorkQueue};
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub const NAME: &str = "node-ipam";
/// How soon a node that found the range full looks again, in case a
/// release was missed (a release wakes the waiting nodes at once).
const RETRY_WHEN_FULL: Duration = Duration::from_secs(30);

/// Hands out the `2^(mask - prefix)` subnets of a cluster CIDR.
#[derive(Debug, Clone)]
pub struct CidrAllocator {
    base: u32,
    prefix: u8,
    mask: u8,
    used: BTreeSet<u32>,
    /// Which node holds which subnet: makes allocation idempotent for a
    /// node whose write has not come back through the cache yet.
    owners: HashMap<String, u32>,
}

impl CidrAllocator {
    /// An allocator of /`mask` subnets of `cidr` (`10.244.0.0/16`).
    pub fn new(cidr: &str, mask: u8) -> Result<Self, String> {
        let (base, prefix) = parse_cidr(cidr).map_err(|e| format!("--cluster-cidr {cidr:?}: {e}"))?;
        if mask < prefix || mask > 32 {
            return Err(format!(
                "--node-cidr-mask-size {mask} must be between the cluster CIDR's prefix length {prefix} and 32"
            ));
        }
        if mask - prefix > 24 {
            return Err(format!(
                "--node-cidr-mask-size {mask}: more than 2^24 node subnets of {cidr} is not supported"
            ));
        }
        Ok(CidrAllocator {
            base,
            prefix,
            mask,
            used: BTreeSet::new(),
            owners: HashMap::new(),
        })
    }

    fn count(&self) -> u32 {
        1u32 << (self.mask - self.prefix)
    }

    fn subnet(&self, index: u32) -> String {
        let addr = self.base + (index << (32 - self.mask as u32));
        format!("{}/{}", Ipv4Addr::from(addr), self.mask)
    }

    /// The index of `cidr` if it is exactly one of our subnets.
    fn index_of(&self, cidr: &str) -> Option<u32> {
        let (addr, len) = parse_cidr(cidr).ok()?;
        if len != self.mask {
            return None;
        }
        let offset = addr.checked_sub(self.base)?;
        let index = offset >> (32 - self.mask as u32);
        (index < self.count()).then_some(index)
    }

    /// Marks `cidr` as `node`'s (a node that already has one keeps it).
    /// Returns false for a CIDR that is not one of our subnets.
    pub fn occupy(&mut self, node: &str, cidr: &str) -> bool {
        let Some(index) = self.index_of(cidr) else {
            return false;
        };
        self.used.insert(index);
        self.owners.insert(node.to_string(), index);
        true
    }

    /// `node`'s subnet: the one it holds, else the lowest free one; None
    /// when the range is exhausted.
    pub fn allocate(&mut self, node: &str) -> Option<String> {
        if let Some(index) = self.owners.get(node) {
            return Some(self.subnet(*index));
        }
        let index = (0..self.count()).find(|i| !self.used.contains(i))?;
        self.used.insert(index);
        self.owners.insert(node.to_string(), index);
        Some(self.subnet(index))
    }

    /// Frees `node`'s subnet, if it held one.
    pub fn release(&mut self, node: &str) -> Option<String> {
        let index = self.owners.remove(node)?;
        // Two nodes could claim one subnet (set by hand); free it only
        // when no other node still holds it.
        if !self.owners.values().any(|i| *i == index) {
            self.used.remove(&index);
        }
        Some(self.subnet(index))
    }
}

fn parse_cidr(cidr: &str) -> Result<(u32, u8), String> {
    let (addr, len) = cidr.split_once('/').ok_or("not a CIDR (want a.b.c.d/len)")?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address (only IPv4 pod networks are supported)"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("{len:?} is not a prefix length"))?;
    if len > 32 {
        return Err(format!("prefix length {len} is more than 32"));
    }
    let addr = u32::from(addr);
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    };
    Ok((addr & mask, len))
}

struct State {
    ctx: Arc<Context>,
    nodes: Store<Node>,
    allocator: Mutex<CidrAllocator>,
    /// The controller's queue, to wake nodes still waiting for a CIDR when
    /// one is released.
    queue: OnceLock<WorkQueue>,
}

impl State {
    fn allocator(&self) -> std::sync::MutexGuard<'_, CidrAllocator> {
        self.allocator.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let mut allocator = CidrAllocator::new(&ctx.config.cluster_cidr, ctx.config.node_cidr_mask_size)
            .map_err(anyhow::Error::msg)?;
        let nodes = ctx.informers.get::<Node>();
        tokio::select! {
            _ = nodes.wait_until_synced() => {}
            _ = shutdown.clone().wait() => return Ok(()),
        }
        // Every CIDR in use is known before the first allocation.
        for node in nodes.store().list() {
            let spec = node.spec.clone().unwrap_or_default();
            for cidr in std::iter::once(&spec.pod_cidr)
                .chain(&spec.pod_cidrs)
                .filter(|c| !c.is_empty())
            {
                if !allocator.occupy(node.name(), cidr) {
                    tracing::warn!(
                        node = node.name(),
                        cidr,
                        "podCIDR outside the cluster CIDR; left as it is"
                    );
                }
            }
        }
        let state = Arc::new(State {
            ctx: ctx.clone(),
            nodes: nodes.store(),
            allocator: Mutex::new(allocator),
            queue: OnceLock::new(),
        });
        let controller = Controller::new(NAME, state.clone(), reconcile);
        let _ = state.queue.set(controller.queue());
        controller
            .primary(&nodes)
            // One worker: allocations are serialised (the lock makes it
            // safe regardless).
            .workers(1)
            .resync(Duration::from_secs(300))
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let Some(node) = state.nodes.get(&key) else {
        if let Some(cidr) = state.allocator().release(&key) {
            tracing::info!(node = %key, %cidr, "node deleted; released its podCIDR");
            if let Some(queue) = state.queue.get() {
                let waiting = state.nodes.list();
                let waiting = waiting
                    .iter()
                    .filter(|n| n.spec.as_ref().is_none_or(|s| s.pod_cidr.is_empty()));
                for node in waiting {
                    queue.add(node.key());
                }
            }
        }
        return Ok(Action::await_change());
    };
    let spec = node.spec.clone().unwrap_or_default();
    if !spec.pod_cidr.is_empty() {
        // Keeps what it has (also one set by someone else meanwhile).
        state.allocator().occupy(&key, &spec.pod_cidr);
        return Ok(Action::await_change());
    }
    let Some(cidr) = state.allocator().allocate(&key) else {
        let message = format!(
            "Node {key} status is now: CIDRNotAvailable (no free /{} left in {})",
            state.ctx.config.node_cidr_mask_size, state.ctx.config.cluster_cidr
        );
        if let Err(e) = state
            .ctx
            .recorder
            .publish(node.as_ref(), EventType::Warning, "CIDRNotAvailable", &message)
            .await
        {
            tracing::warn!(node = %key, error = %e, "cannot record event");
        }
        return Ok(Action::requeue(RETRY_WHEN_FULL));
    };
    let mut desired = (*node).clone();
    let s = desired.spec.get_or_insert_with(Default::default);
    s.pod_cidr = cidr.clone();
    s.pod_cidrs = vec![cidr.clone()];
    // Written at the resourceVersion read; on a conflict the subnet stays
    // reserved for this node and the retry writes the same one.
    Api::<Node>::all(state.ctx.client.clone())
        .update(&desired)
        .await?;
    tracing::info!(node = %key, %cidr, "allocated podCIDR");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_subnets_and_reuses_freed_ones() {
        let mut a = CidrAllocator::new("10.244.0.0/16", 24).unwrap();
        assert_eq!(a.allocate("n1").as_deref(), Some("10.244.0.0/24"));
        assert_eq!(a.allocate("n2").as_deref(), Some("10.244.1.0/24"));
        assert_eq!(
            a.allocate("n1").as_deref(),
            Some("10.244.0.0/24"),
            "idempotent per node"
        );
        assert_eq!(a.release("n1").as_deref(), Some("10.244.0.0/24"));
        assert_eq!(a.allocate("n3").as_deref(), Some("10.244.0.0/24"));
        assert_eq!(a.release("nope"), None);
    }

    #[test]
    fn existing_cidrs_are_never_handed_out_again() {
        let mut a = CidrAllocator::new("10.244.0.0/16", 24).unwrap();
        assert!(a.occupy("old", "10.244.0.0/24"));
        assert!(a.occupy("older", "10.244.2.0/24"));
        assert!(!a.occupy("alien", "192.168.0.0/24"));
        assert!(!a.occupy("alien", "10.244.3.0/25"), "wrong size");
        assert_eq!(a.allocate("n1").as_deref(), Some("10.244.1.0/24"));
        assert_eq!(a.allocate("n2").as_deref(), Some("10.244.3.0/24"));
    }

    #[test]
    fn an_exhausted_range_allocates_nothing() {
        let mut a = CidrAllocator::new("10.0.0.0/30", 31).unwrap();
        assert_eq!(a.allocate("a").as_deref(), Some("10.0.0.0/31"));
        assert_eq!(a.allocate("b").as_deref(), Some("10.0.0.2/31"));
        assert_eq!(a.allocate("c"), None);
        a.release("a");
        assert_eq!(a.allocate("c").as_deref(), Some("10.0.0.0/31"));
    }

    #[test]
    fn a_shared_subnet_stays_used_until_its_last_holder_goes() {
        let mut a = CidrAllocator::new("10.244.0.0/16", 24).unwrap();
        a.occupy("x", "10.244.0.0/24");
        a.occupy("y", "10.244.0.0/24");
        a.release("x");
        assert_eq!(a.allocate("z").as_deref(), Some("10.244.1.0/24"));
    }

    #[test]
    fn bad_configuration_is_refused_with_the_flag_named() {
        let e = CidrAllocator::new("10.244.0.0/16", 8).unwrap_err();
        assert!(e.contains("--node-cidr-mask-size 8"), "{e}");
        let e = CidrAllocator::new("fd00::/64", 80).unwrap_err();
        assert!(e.contains("--cluster-cidr") && e.contains("IPv4"), "{e}");
        // host bits in the cluster CIDR are ignored, as Kubernetes does
        let mut a = CidrAllocator::new("10.244.7.9/16", 24).unwrap();
        assert_eq!(a.allocate("n").as_deref(), Some("10.244.0.0/24"));
    }
}
