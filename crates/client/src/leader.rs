//! Leader election over a `coordination.k8s.io/v1` Lease, as client-go's
//! `leaderelection`: replicas of a daemon race to write their identity
//! into one Lease; writes are guarded by resourceVersion, so of two
//! candidates that read the same Lease only one can write it.
//!
//! Why two leaders never overlap: a candidate takes a Lease held by
//! someone else only after it has seen the Lease unchanged for
//! `lease_duration` by its own clock (no clock agreement needed); a
//! leader that has not renewed within `renew_deadline` (shorter) of its
//! last successful renewal's start steps down first.

use crate::api::Api;
use crate::client::Client;
use crate::error::{Error, Result};
use chrono::{SecondsFormat, Utc};
use futures::future::BoxFuture;
use rkube_api::coordination::v1::{Lease, LeaseSpec};
use rkube_api::meta::v1::ObjectMeta;
use rkube_api::Resource;
use rkube_daemon::DurationArg;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// `--leader-elect` and its timings, named as Kubernetes' components name them, flattened
/// into the options (flags and config file alike) of every daemon that runs as one active
/// replica among standbys: the scheduler and both controller managers.
#[derive(clap::Args, serde::Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeaderElectionOptions {
    /// Act only while holding a Lease, so that several replicas can run
    /// with one active and the others standing by (default true, as in
    /// Kubernetes); `--leader-elect=false` for a lone instance
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: Option<bool>,
    /// How long standbys wait after the last renewal they saw before taking
    /// over a Lease (e.g. 15s, the default)
    #[arg(long, value_name = "DURATION")]
    pub leader_elect_lease_duration: Option<DurationArg>,
    /// How long the leader keeps trying to renew before it stops acting
    /// and exits; shorter than the lease duration (default 10s)
    #[arg(long, value_name = "DURATION")]
    pub leader_elect_renew_deadline: Option<DurationArg>,
    /// Pause between attempts to acquire or renew the Lease (default 2s)
    #[arg(long, value_name = "DURATION")]
    pub leader_elect_retry_period: Option<DurationArg>,
    /// The Lease's name (default: the component's, e.g.
    /// kube-controller-manager)
    #[arg(long, value_name = "NAME")]
    pub leader_elect_resource_name: Option<String>,
    /// The Lease's namespace (default kube-system)
    #[arg(long, value_name = "NAMESPACE")]
    pub leader_elect_resource_namespace: Option<String>,
}

impl LeaderElectionOptions {
    /// The options over the defaults (on, Lease kube-system/`lease_name`, client-go's
    /// timings), checked; errors name the flag.
    pub fn resolve(&self, lease_name: &str) -> anyhow::Result<LeaderElection> {
        let d = LeaderElection::new(lease_name);
        let pick = |v: Option<DurationArg>, d: Duration| v.map_or(d, |v| v.0);
        let e = LeaderElection {
            enabled: self.leader_elect.unwrap_or(d.enabled),
            lease_name: self.leader_elect_resource_name.clone().unwrap_or(d.lease_name),
            namespace: self
                .leader_elect_resource_namespace
                .clone()
                .unwrap_or(d.namespace),
            lease_duration: pick(self.leader_elect_lease_duration, d.lease_duration),
            renew_deadline: pick(self.leader_elect_renew_deadline, d.renew_deadline),
            retry_period: pick(self.leader_elect_retry_period, d.retry_period),
        };
        e.validate()?;
        Ok(e)
    }
}

/// Whether a daemon elects a leader, over which Lease, with which timings: what its
/// configuration keeps. The identity is made when the daemon runs (host name and a random
/// suffix), so two replicas started from one configuration never share one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElection {
    pub enabled: bool,
    pub lease_name: String,
    pub namespace: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderElection {
    /// On, as in Kubernetes, over the Lease kube-system/`lease_name` with client-go's
    /// timings (15 s lease, 10 s renew deadline, 2 s retry).
    pub fn new(lease_name: &str) -> Self {
        let c = LeaderElectionConfig::new(lease_name, "kube-system", "-");
        LeaderElection {
            enabled: true,
            lease_name: c.lease_name,
            namespace: c.namespace,
            lease_duration: c.lease_duration,
            renew_deadline: c.renew_deadline,
            retry_period: c.retry_period,
        }
    }

    /// The elector's configuration for the process `identity`.
    pub fn config(&self, identity: &str) -> LeaderElectionConfig {
        LeaderElectionConfig {
            lease_name: self.lease_name.clone(),
            namespace: self.namespace.clone(),
            identity: identity.to_string(),
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        }
    }

    /// Errors name the flags.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if self.namespace.is_empty() {
            anyhow::bail!("--leader-elect-resource-namespace must not be empty (default kube-system)");
        }
        self.config("-").validate().map_err(|e| {
            anyhow::anyhow!(
                "{e} (--leader-elect-lease-duration {:?} > --leader-elect-renew-deadline {:?} > \
                 --leader-elect-retry-period {:?}, with room for a retry)",
                self.lease_duration,
                self.renew_deadline,
                self.retry_period
            )
        })
    }
}

/// Runs `work` until `shutdown`, and with leader election on, only while this process holds
/// the Lease: it campaigns first (a standby waits here, ready and healthy), starts `work`
/// once elected, and releases the Lease on shutdown so a standby takes over within a retry
/// period. `work` is given a future that resolves when it must stop.
///
/// A leader that loses its Lease (it could not renew within the renew deadline, or found
/// another holder) stops `work` and returns an error, so the daemon exits and its
/// supervisor (systemd, `make up`) restarts it as a candidate. That is what Kubernetes'
/// components do, and it is safer than stopping the loops and campaigning again in the
/// same process: nothing a leader started (informers' handlers, spawned reconciles, queued
/// retries) can outlive its leadership, and a standby has already taken over by the time
/// the restarted process campaigns.
pub async fn run_leading<F, Fut>(
    client: Client,
    election: &LeaderElection,
    shutdown: impl Future<Output = ()>,
    work: F,
) -> anyhow::Result<()>
where
    F: FnOnce(BoxFuture<'static, ()>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut shutdown = std::pin::pin!(shutdown);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_work: BoxFuture<'static, ()> = Box::pin(async move {
        let _ = done_rx.await;
    });
    if !election.enabled {
        let mut work = std::pin::pin!(work(stop_work));
        tokio::select! {
            r = &mut work => return r,
            _ = &mut shutdown => {}
        }
        let _ = done_tx.send(());
        return work.await;
    }

    let identity = format!("{}_{:016x}", rkube_daemon::host_name(), rand::random::<u64>());
    let lease = format!("{}/{}", election.namespace, election.lease_name);
    let status = rkube_daemon::Registry::global().gauge_with(
        "leader_election_master_status",
        "1 while this process holds its leader-election Lease, else 0.",
        &[("name", &election.lease_name)],
    );
    status.set(0);
    let elector = Arc::new(LeaderElector::new(client, election.config(&identity))?);
    let mut leading = elector.is_leader();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let el = elector.clone();
    let mut campaign = AbortOnDrop(tokio::spawn(async move {
        el.run(
            async move {
                if stop_rx.wait_for(|s| *s).await.is_err() {
                    // Dropped without a shutdown: see `AbortOnDrop`.
                    std::future::pending::<()>().await;
                }
            },
            || {},
            || {},
        )
        .await
    }));
    tracing::info!(%lease, %identity, "standing by until this process holds the lease");
    tokio::select! {
        _ = &mut shutdown => {
            let _ = stop_tx.send(true);
            let _ = (&mut campaign.0).await;
            return Ok(());
        }
        r = &mut campaign.0 => {
            anyhow::bail!("leader election for {lease} ended before this process led: {r:?}");
        }
        // (the guard `wait_for` returns must not live across the select: it is not Send)
        _ = async { let _ = leading.wait_for(|l| *l).await.is_ok(); } => {}
    }
    status.set(1);
    tracing::info!(%lease, %identity, "leading: starting work");
    enum Ended {
        Shutdown,
        Work(anyhow::Result<()>),
        Lost(std::result::Result<Result<()>, tokio::task::JoinError>),
    }
    let mut work = std::pin::pin!(work(stop_work));
    let ended = tokio::select! {
        _ = &mut shutdown => Ended::Shutdown,
        r = &mut work => Ended::Work(r),
        r = &mut campaign.0 => Ended::Lost(r),
    };
    let _ = done_tx.send(());
    let result = match ended {
        Ended::Shutdown => work.await,
        Ended::Work(r) => r,
        Ended::Lost(r) => {
            status.set(0);
            // Give the work a retry period to stop cleanly; past that it is dropped
            // (cancelled), as the process is about to exit anyway.
            let _ = tokio::time::timeout(election.retry_period, &mut work).await;
            tracing::error!(%lease, %identity, "leader election lost; stopping");
            return Err(match r {
                Ok(Err(e)) => anyhow::Error::new(e).context(format!(
                    "lost the lease {lease}; exiting so that a new leader takes over"
                )),
                other => anyhow::anyhow!("leader election for {lease} stopped: {other:?}"),
            });
        }
    };
    // Release only once the work has stopped, so a successor never overlaps it.
    let _ = stop_tx.send(true);
    let _ = (&mut campaign.0).await;
    status.set(0);
    result
}

/// The campaign task of [`run_leading`], aborted when that future is dropped without a
/// shutdown (its task aborted, as a test's `kill -9`, or its runtime gone): the Lease is
/// then left to expire, as a killed process leaves it, rather than released by a task
/// that outlived its daemon.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads and writes the Lease: the apiserver, or a fake in tests.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    async fn get(&self, name: &str) -> Result<Option<Lease>>;
    async fn create(&self, lease: &Lease) -> Result<Lease>;
    /// Must fail with Conflict unless `lease`'s resourceVersion is current.
    async fn update(&self, lease: &Lease) -> Result<Lease>;
}

#[async_trait::async_trait]
impl LeaseStore for Api<Lease> {
    async fn get(&self, name: &str) -> Result<Option<Lease>> {
        self.get_opt(name).await
    }

    async fn create(&self, lease: &Lease) -> Result<Lease> {
        Api::create(self, lease).await
    }

    async fn update(&self, lease: &Lease) -> Result<Lease> {
        Api::update(self, lease).await
    }
}

#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    pub lease_name: String,
    pub namespace: String,
    /// Unique per process: hostname plus a random suffix, so a restarted
    /// process does not mistake its predecessor's Lease for its own.
    pub identity: String,
    /// How long non-leaders wait after the last renewal they saw before
    /// taking over.
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before stepping down.
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(lease_name: &str, namespace: &str, identity: &str) -> Self {
        LeaderElectionConfig {
            lease_name: lease_name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: &str| {
            Err(Error::InvalidRequest(format!(
                "leader election for lease {:?}: {m}",
                self.lease_name
            )))
        };
        if self.lease_name.is_empty() {
            return bad("the lease name must not be empty");
        }
        if self.identity.is_empty() {
            return bad("the identity must not be empty");
        }
        if self.lease_duration < Duration::from_secs(1) {
            return bad("the lease duration must be at least 1s");
        }
        if self.renew_deadline >= self.lease_duration {
            return bad("the renew deadline must be shorter than the lease duration");
        }
        if self.retry_period.is_zero() || self.retry_period.mul_f64(1.2) >= self.renew_deadline {
            return bad("the retry period must be positive and well below the renew deadline");
        }
        Ok(())
    }
}

/// The Lease as last seen, and when this process first saw it so.
#[derive(Debug, Default)]
struct Observed {
    resource_version: String,
    at: Option<Instant>,
}

/// The result of one attempt.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// The Lease is ours now.
    Held,
    /// Someone else holds a live Lease.
    HeldByOther(String),
    /// Lost a race (Conflict, AlreadyExists): try again next period.
    Raced,
}

pub struct LeaderElector {
    store: Arc<dyn LeaseStore>,
    config: LeaderElectionConfig,
    leader: watch::Sender<bool>,
    observed: Mutex<Observed>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.config)
            .field("leader", &*self.leader.borrow())
            .finish_non_exhaustive()
    }
}

impl LeaderElector {
    /// An elector over the Lease `config.lease_name` in `config.namespace`.
    pub fn new(client: Client, config: LeaderElectionConfig) -> Result<Self> {
        let api = Api::<Lease>::namespaced(client, &config.namespace);
        Self::with_store(Arc::new(api), config)
    }

    pub fn with_store(store: Arc<dyn LeaseStore>, config: LeaderElectionConfig) -> Result<Self> {
        config.validate()?;
        let (leader, _) = watch::channel(false);
        Ok(LeaderElector {
            store,
            config,
            leader,
            observed: Mutex::default(),
        })
    }

    /// Whether this process leads now, and every change of it.
    pub fn is_leader(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    fn observed(&self) -> MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Campaigns until elected, calls `on_started_leading`, renews until
    /// `shutdown` or until renewal fails, then calls `on_stopped_leading`.
    /// On shutdown the Lease is released so a successor need not wait;
    /// returns Ok. Losing the Lease returns `Error::LeadershipLost`: the
    /// caller should exit, as client-go daemons do, so no work started as
    /// leader continues.
    pub async fn run<S, A, B>(&self, shutdown: S, on_started_leading: A, on_stopped_leading: B) -> Result<()>
    where
        S: Future<Output = ()>,
        A: FnOnce(),
        B: FnOnce(),
    {
        let mut shutdown = std::pin::pin!(shutdown);
        let name = &self.config.lease_name;
        let me = &self.config.identity;

        // Campaign.
        let mut last_renewal = loop {
            let start = Instant::now();
            let attempt = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                a = self.try_acquire_or_renew() => a,
            };
            match attempt {
                Ok(Attempt::Held) => break start,
                Ok(Attempt::HeldByOther(holder)) => {
                    tracing::debug!(lease = %name, %holder, "lease held by another")
                }
                Ok(Attempt::Raced) => tracing::debug!(lease = %name, "lost a race for the lease"),
                Err(e) => tracing::warn!(lease = %name, error = %e, "cannot acquire lease"),
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(jittered(self.config.retry_period)) => {}
            }
        };
        tracing::info!(lease = %name, identity = %me, "became leader");
        self.leader.send_replace(true);
        on_started_leading();

        // Renew.
        let lost = loop {
            let deadline = last_renewal + self.config.renew_deadline;
            // Never sleep past the deadline still believing to lead.
            let wake = (Instant::now() + self.config.retry_period).min(deadline);
            tokio::select! {
                _ = &mut shutdown => break false,
                _ = tokio::time::sleep_until(wake) => {}
            }
            let start = Instant::now();
            let attempt = tokio::select! {
                _ = &mut shutdown => break false,
                a = tokio::time::timeout_at(deadline, self.try_acquire_or_renew()) => a,
            };
            match attempt {
                Ok(Ok(Attempt::Held)) => last_renewal = start,
                Ok(Ok(Attempt::HeldByOther(holder))) => {
                    tracing::warn!(lease = %name, %holder, "lease taken by another");
                    break true;
                }
                Ok(Ok(Attempt::Raced)) => tracing::debug!(lease = %name, "renewal raced; retrying"),
                Ok(Err(e)) => tracing::warn!(lease = %name, error = %e, "cannot renew lease"),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                tracing::warn!(lease = %name, "renew deadline passed");
                break true;
            }
        };
        self.leader.send_replace(false);
        if !lost {
            let release = tokio::time::timeout(self.config.retry_period, self.release()).await;
            if !matches!(release, Ok(Ok(()))) {
                tracing::warn!(lease = %name, "could not release the lease; successors wait for it to expire");
            }
        }
        on_stopped_leading();
        if lost {
            Err(Error::LeadershipLost {
                lease: format!("{}/{}", self.config.namespace, name),
                identity: me.clone(),
            })
        } else {
            tracing::info!(lease = %name, identity = %me, "stopped leading");
            Ok(())
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<Attempt> {
        let me = &self.config.identity;
        let now_time = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(current) = self.store.get(&self.config.lease_name).await? else {
            let lease = Lease {
                metadata: Some(ObjectMeta {
                    name: self.config.lease_name.clone(),
                    namespace: self.config.namespace.clone(),
                    ..Default::default()
                }),
                spec: Some(LeaseSpec {
                    holder_identity: me.clone(),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: now_time.clone(),
                    renew_time: now_time,
                    lease_transitions: Some(0),
                }),
                ..Default::default()
            };
            return match self.store.create(&lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(Attempt::Held)
                }
                Err(e) if e.is_already_exists() => Ok(Attempt::Raced),
                Err(e) => Err(e),
            };
        };

        let observed_at = self.observe(&current);
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone();
        if !holder.is_empty() && &holder != me {
            let held_for = spec
                .lease_duration_seconds
                .filter(|d| *d > 0)
                .map(|d| Duration::from_secs(d as u64))
                .unwrap_or(self.config.lease_duration);
            if Instant::now() < observed_at + held_for && !long_expired(&spec.renew_time, held_for) {
                return Ok(Attempt::HeldByOther(holder));
            }
        }

        let mut next = current.clone();
        let mut spec = spec;
        if &holder != me {
            spec.acquire_time = now_time.clone();
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = me.clone();
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = now_time;
        next.spec = Some(spec);
        // `next` carries the resourceVersion just read: if anyone wrote
        // since, this fails with Conflict instead of overwriting them.
        match self.store.update(&next).await {
            Ok(updated) => {
                self.observe(&updated);
                Ok(Attempt::Held)
            }
            Err(e) if e.is_conflict() => Ok(Attempt::Raced),
            Err(e) => Err(e),
        }
    }

    /// Records the Lease as seen; returns when this process first saw this
    /// version of it.
    fn observe(&self, lease: &Lease) -> Instant {
        let now = Instant::now();
        let mut o = self.observed();
        let rv = &lease.metadata().resource_version;
        if o.at.is_none() || &o.resource_version != rv {
            o.resource_version = rv.clone();
            o.at = Some(now);
        }
        o.at.unwrap_or(now)
    }

    /// Hands the Lease back: empty holder, 1 s duration (as client-go's
    /// ReleaseOnCancel), guarded by resourceVersion so it never clears a
    /// successor's Lease.
    async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.store.get(&self.config.lease_name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity != self.config.identity {
            return Ok(());
        }
        spec.holder_identity.clear();
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        self.store.update(&lease).await?;
        Ok(())
    }
}

/// Whether a Lease last renewed at `renew_time` (by its holder's clock) has clearly been
/// dead for a while by this machine's clock: more than twice its duration ago. Such a
/// Lease, left by a previous run of the cluster or a holder that died long ago, is taken
/// at once instead of after watching it for a whole lease duration (client-go always
/// waits). Only clocks more than a lease duration apart could make a live holder's Lease
/// look so old; a Lease renewed recently is still waited for by this process's own clock,
/// which needs no clock agreement.
fn long_expired(renew_time: &str, duration: Duration) -> bool {
    let Ok(renewed) = chrono::DateTime::parse_from_rfc3339(renew_time) else {
        return false;
    };
    let age = Utc::now().signed_duration_since(renewed);
    age.to_std().is_ok_and(|age| age > duration * 2)
}

/// Up to 20 % later, so candidates that started together spread out.
fn jittered(d: Duration) -> Duration {
    d + d.mul_f64(rand::random::<f64>() * 0.2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// An in-memory Lease table with resourceVersion checks, like the
    /// apiserver's.
    #[derive(Default)]
    struct FakeLeases {
        lease: Mutex<Option<Lease>>,
        revision: Mutex<u64>,
    }

    impl FakeLeases {
        fn current(&self) -> Option<Lease> {
            self.lease.lock().unwrap().clone()
        }

        fn stamp(&self, mut lease: Lease) -> Lease {
            let mut rev = self.revision.lock().unwrap();
            *rev += 1;
            lease.metadata_mut().resource_version = rev.to_string();
            lease
        }

        fn api_error(code: tonic::Code, msg: &str) -> Error {
            Error::Api {
                code,
                reason: String::new(),
                message: msg.into(),
                causes: vec![],
            }
        }
    }

    /// One candidate's view of the fake, which can be cut off from it.
    struct Candidate {
        leases: Arc<FakeLeases>,
        cut: AtomicBool,
    }

    impl Candidate {
        fn new(leases: &Arc<FakeLeases>) -> Arc<Candidate> {
            Arc::new(Candidate {
                leases: leases.clone(),
                cut: AtomicBool::new(false),
            })
        }

        fn check(&self) -> Result<()> {
            if self.cut.load(Ordering::SeqCst) {
                return Err(Error::Transport {
                    server: "fake".into(),
                    message: "partitioned".into(),
                });
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl LeaseStore for Candidate {
        async fn get(&self, _name: &str) -> Result<Option<Lease>> {
            self.check()?;
            Ok(self.leases.current())
        }

        async fn create(&self, lease: &Lease) -> Result<Lease> {
            self.check()?;
            let mut slot = self.leases.lease.lock().unwrap();
            if slot.is_some() {
                return Err(FakeLeases::api_error(tonic::Code::AlreadyExists, "exists"));
            }
            let stored = self.leases.stamp(lease.clone());
            *slot = Some(stored.clone());
            Ok(stored)
        }

        async fn update(&self, lease: &Lease) -> Result<Lease> {
            self.check()?;
            let mut slot = self.leases.lease.lock().unwrap();
            let current_rv = slot.as_ref().map(|l| l.metadata().resource_version.clone());
            if current_rv.as_deref() != Some(lease.metadata().resource_version.as_str()) {
                return Err(FakeLeases::api_error(tonic::Code::Aborted, "conflict"));
            }
            let stored = self.leases.stamp(lease.clone());
            *slot = Some(stored.clone());
            Ok(stored)
        }
    }

    fn config(identity: &str) -> LeaderElectionConfig {
        LeaderElectionConfig {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            ..LeaderElectionConfig::new("controller-manager", "kube-system", identity)
        }
    }

    fn elector(c: &Arc<Candidate>, identity: &str) -> Arc<LeaderElector> {
        Arc::new(LeaderElector::with_store(c.clone(), config(identity)).unwrap())
    }

    /// Who started (true) or stopped (false) leading, and when.
    type Log = Arc<Mutex<Vec<(String, bool, Instant)>>>;

    /// Runs `e` in a task; returns a shutdown trigger and its result.
    fn spawn(
        e: &Arc<LeaderElector>,
        log: &Log,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<()>>,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let e = e.clone();
        let (l1, l2) = (log.clone(), log.clone());
        let id = e.identity().to_string();
        let id2 = id.clone();
        let task = tokio::spawn(async move {
            e.run(
                async move {
                    let _ = rx.await;
                },
                move || l1.lock().unwrap().push((id, true, Instant::now())),
                move || l2.lock().unwrap().push((id2, false, Instant::now())),
            )
            .await
        });
        (tx, task)
    }

    /// Asserts that at no instant two identities led at once.
    fn assert_never_two_leaders(log: &[(String, bool, Instant)]) {
        let mut leading: Option<&str> = None;
        for (id, started, _) in log {
            if *started {
                assert!(
                    leading.is_none(),
                    "{id} started leading while {leading:?} led: {log:?}"
                );
                leading = Some(id);
            } else {
                assert_eq!(leading, Some(id.as_str()));
                leading = None;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_candidate_creates_and_holds_the_lease() {
        let leases = Arc::new(FakeLeases::default());
        let a = elector(&Candidate::new(&leases), "a");
        let mut leader = a.is_leader();
        let log = Arc::default();
        let (stop, task) = spawn(&a, &log);
        leader.wait_for(|l| *l).await.unwrap();
        let lease = leases.current().unwrap();
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity, "a");
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        // MicroTime: RFC 3339 with six fractional digits.
        let renew = &spec.renew_time;
        assert!(chrono::DateTime::parse_from_rfc3339(renew).is_ok(), "{renew}");
        assert_eq!(
            renew.split('.').nth(1).map(|f| f.trim_end_matches('Z').len()),
            Some(6),
            "{renew}"
        );

        // It keeps renewing.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(*leader.borrow());
        assert_ne!(leases.current().unwrap().spec.unwrap().renew_time, *renew);
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert!(!*leader.borrow());
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_candidate_waits_while_the_leader_renews() {
        let leases = Arc::new(FakeLeases::default());
        let a = elector(&Candidate::new(&leases), "a");
        let b = elector(&Candidate::new(&leases), "b");
        let log = Arc::default();
        let (_stop_a, _ta) = spawn(&a, &log);
        a.is_leader().wait_for(|l| *l).await.unwrap();
        let (_stop_b, _tb) = spawn(&b, &log);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(*a.is_leader().borrow());
        assert!(!*b.is_leader().borrow());
        assert_eq!(leases.current().unwrap().spec.unwrap().holder_identity, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn a_partitioned_leader_steps_down_before_another_takes_over() {
        let leases = Arc::new(FakeLeases::default());
        let ca = Candidate::new(&leases);
        let a = elector(&ca, "a");
        let b = elector(&Candidate::new(&leases), "b");
        let log: Log = Arc::default();
        let (_stop_a, task_a) = spawn(&a, &log);
        a.is_leader().wait_for(|l| *l).await.unwrap();
        let (_stop_b, _tb) = spawn(&b, &log);
        tokio::time::sleep(Duration::from_secs(7)).await;

        ca.cut.store(true, Ordering::SeqCst);
        let cut_at = Instant::now();
        let result = task_a.await.unwrap();
        assert!(matches!(result, Err(Error::LeadershipLost { .. })), "{result:?}");
        b.is_leader().wait_for(|l| *l).await.unwrap();

        let log = log.lock().unwrap().clone();
        assert_never_two_leaders(&log);
        let a_stopped = log.iter().find(|(id, s, _)| id == "a" && !s).unwrap().2;
        let b_started = log.iter().find(|(id, s, _)| id == "b" && *s).unwrap().2;
        assert!(
            a_stopped <= cut_at + Duration::from_secs(10),
            "a stepped down within the renew deadline"
        );
        assert!(b_started > a_stopped);
        let spec = leases.current().unwrap().spec.unwrap();
        assert_eq!(spec.holder_identity, "b");
        assert_eq!(spec.lease_transitions, Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn candidates_racing_for_an_expired_lease_elect_exactly_one() {
        let leases = Arc::new(FakeLeases::default());
        // A lease left by a process that died.
        let dead = Candidate::new(&leases);
        dead.create(&Lease {
            metadata: Some(ObjectMeta {
                name: "controller-manager".into(),
                ..Default::default()
            }),
            spec: Some(LeaseSpec {
                holder_identity: "dead".into(),
                lease_duration_seconds: Some(15),
                lease_transitions: Some(4),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
        let log: Log = Arc::default();
        let electors: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|id| elector(&Candidate::new(&leases), id))
            .collect();
        let _tasks: Vec<_> = electors.iter().map(|e| spawn(e, &log)).collect();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let leaders: Vec<_> = electors.iter().filter(|e| *e.is_leader().borrow()).collect();
        assert_eq!(leaders.len(), 1);
        assert_never_two_leaders(&log.lock().unwrap());
        let spec = leases.current().unwrap().spec.unwrap();
        assert_eq!(spec.holder_identity, leaders[0].identity());
        assert_eq!(spec.lease_transitions, Some(5));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_releases_so_a_successor_need_not_wait() {
        let leases = Arc::new(FakeLeases::default());
        let a = elector(&Candidate::new(&leases), "a");
        let b = elector(&Candidate::new(&leases), "b");
        let log: Log = Arc::default();
        let (stop_a, task_a) = spawn(&a, &log);
        a.is_leader().wait_for(|l| *l).await.unwrap();
        let (_stop_b, _tb) = spawn(&b, &log);
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop_a.send(()).unwrap();
        task_a.await.unwrap().unwrap();
        let released = Instant::now();
        assert_eq!(leases.current().unwrap().spec.unwrap().holder_identity, "");
        b.is_leader().wait_for(|l| *l).await.unwrap();
        assert!(
            Instant::now() - released < Duration::from_secs(5),
            "b took over within a retry period"
        );
        assert_never_two_leaders(&log.lock().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_dead_for_long_is_taken_at_once_a_recent_one_waited_out() {
        let leases = Arc::new(FakeLeases::default());
        let dead = Candidate::new(&leases);
        let long_ago =
            (Utc::now() - chrono::Duration::minutes(5)).to_rfc3339_opts(SecondsFormat::Micros, true);
        dead.create(&Lease {
            metadata: Some(ObjectMeta {
                name: "controller-manager".into(),
                ..Default::default()
            }),
            spec: Some(LeaseSpec {
                holder_identity: "previous-run".into(),
                lease_duration_seconds: Some(15),
                renew_time: long_ago,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
        let a = elector(&Candidate::new(&leases), "a");
        let started = Instant::now();
        let (_stop, _task) = spawn(&a, &Arc::default());
        a.is_leader().wait_for(|l| *l).await.unwrap();
        assert!(Instant::now() - started < Duration::from_secs(1), "taken at once");

        // Renewed a moment ago by a holder that then died: waited out by this clock.
        assert!(!long_expired(&Utc::now().to_rfc3339(), Duration::from_secs(15)));
        assert!(!long_expired("not a time", Duration::from_secs(15)));
    }

    #[test]
    fn options_resolve_over_kubernetes_defaults_and_name_bad_flags() {
        let on = LeaderElectionOptions::default()
            .resolve("kube-scheduler")
            .unwrap();
        assert_eq!(on, LeaderElection::new("kube-scheduler"));
        assert!(on.enabled);
        assert_eq!(
            (on.namespace.as_str(), on.lease_duration),
            ("kube-system", Duration::from_secs(15))
        );
        let o = LeaderElectionOptions {
            leader_elect: Some(false),
            leader_elect_resource_name: Some("mine".into()),
            leader_elect_lease_duration: Some(DurationArg(Duration::from_secs(30))),
            ..Default::default()
        };
        let off = o.resolve("kube-scheduler").unwrap();
        assert!(!off.enabled);
        assert_eq!(
            (off.lease_name.as_str(), off.lease_duration),
            ("mine", Duration::from_secs(30))
        );
        let bad = LeaderElectionOptions {
            leader_elect_renew_deadline: Some(DurationArg(Duration::from_secs(20))),
            ..Default::default()
        };
        let err = bad.resolve("kube-scheduler").unwrap_err().to_string();
        assert!(err.contains("--leader-elect-renew-deadline"), "{err}");
    }

    #[test]
    fn inconsistent_timings_are_refused() {
        let leases = Arc::new(FakeLeases::default());
        let c = Candidate::new(&leases);
        let mut cfg = config("a");
        cfg.renew_deadline = cfg.lease_duration;
        assert!(LeaderElector::with_store(c.clone(), cfg).is_err());
        let mut cfg = config("a");
        cfg.retry_period = cfg.renew_deadline;
        assert!(LeaderElector::with_store(c.clone(), cfg).is_err());
        assert!(LeaderElector::with_store(c, config("")).is_err());
    }
}
