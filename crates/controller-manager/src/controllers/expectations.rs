//! Kubernetes' ControllerExpectations, keyed by what was written rather
//! than by counts: after a ReplicaSet creates or deletes pods, its cache
//! lags behind the apiserver for a moment, and acting on the stale cache
//! would create (or delete) the same pods twice. So each owner key
//! remembers the names it created and the uids it deleted; the owner acts
//! again only when the cache shows all of them, or after a timeout in case
//! a watch event was lost for good.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Kubernetes' ExpectationsTimeout.
pub const TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Default)]
struct Pending {
    /// Names of created pods not yet seen by the cache.
    creates: HashSet<String>,
    /// Uids of deleted pods the cache still shows alive.
    deletes: HashSet<String>,
    since: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
}

/// Whether an owner may act on its cache now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Satisfied,
    /// Writes still to be observed; look again at the latest after this
    /// long (the timeout), if no event comes first.
    Waiting(Duration),
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn expect_creates(&self, key: &str, names: impl IntoIterator<Item = String>) {
        let mut map = self.lock();
        let p = map.entry(key.to_string()).or_default();
        p.creates.extend(names);
        p.since = Some(Instant::now());
    }

    pub fn expect_deletes(&self, key: &str, uids: impl IntoIterator<Item = String>) {
        let mut map = self.lock();
        let p = map.entry(key.to_string()).or_default();
        p.deletes.extend(uids);
        p.since = Some(Instant::now());
    }

    /// A create observed (called from the pod event mapper, so a pod that
    /// came and went before the next reconcile still counts).
    pub fn observed_create(&self, key: &str, name: &str) {
        if let Some(p) = self.lock().get_mut(key) {
            p.creates.remove(name);
        }
    }

    /// Lowers the expectations of `key` by what the cache shows now —
    /// `seen(name)`: a created pod is in the cache; `gone(uid)`: a deleted
    /// pod is absent or marked for deletion — and says whether it may act.
    pub fn check(&self, key: &str, seen: impl Fn(&str) -> bool, gone: impl Fn(&str) -> bool) -> Readiness {
        let mut map = self.lock();
        let Some(p) = map.get_mut(key) else {
            return Readiness::Satisfied;
        };
        p.creates.retain(|n| !seen(n));
        p.deletes.retain(|u| !gone(u));
        if p.creates.is_empty() && p.deletes.is_empty() {
            map.remove(key);
            return Readiness::Satisfied;
        }
        let age = p.since.map(|s| s.elapsed()).unwrap_or(TIMEOUT);
        if age >= TIMEOUT {
            tracing::warn!(%key, creates = p.creates.len(), deletes = p.deletes.len(), "expectations timed out; acting on the cache");
            map.remove(key);
            return Readiness::Satisfied;
        }
        Readiness::Waiting(TIMEOUT - age)
    }

    /// The owner is gone: nothing to wait for.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_every_write_then_times_out() {
        let e = Expectations::default();
        assert_eq!(e.check("ns/a", |_| false, |_| false), Readiness::Satisfied);
        e.expect_creates("ns/a", ["a-1".to_string(), "a-2".to_string()]);
        e.expect_deletes("ns/a", ["uid-9".to_string()]);
        assert!(matches!(
            e.check("ns/a", |n| n == "a-1", |_| false),
            Readiness::Waiting(_)
        ));
        e.observed_create("ns/a", "a-2");
        assert!(matches!(
            e.check("ns/a", |_| false, |_| false),
            Readiness::Waiting(_)
        ));
        assert_eq!(e.check("ns/a", |_| false, |u| u == "uid-9"), Readiness::Satisfied);

        e.expect_creates("ns/b", ["b-1".to_string()]);
        tokio::time::advance(TIMEOUT).await;
        assert_eq!(
            e.check("ns/b", |_| false, |_| false),
            Readiness::Satisfied,
            "a lost event cannot block forever"
        );
    }
}
