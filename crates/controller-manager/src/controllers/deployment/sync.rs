//! One reconcile of a Deployment: read the caches, decide with the pure
//! functions of `rollout` and `status`, and write one step (a new
//! ReplicaSet, a scale, a cleanup, the status).

use super::*;

// -------------------------------------------------------------- reconcile

/// A new ReplicaSet for the Deployment's template.
pub fn new_replicaset(d: &Deployment, replicas: i32, revision: i64) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let collision = d.status.as_ref().and_then(|s| s.collision_count);
    let mut template = spec.template.clone().unwrap_or_default();
    let hash = pod_template_hash(&template, collision);
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .insert(HASH_LABEL.into(), hash.clone());
    let mut selector = spec.selector.clone().unwrap_or_default();
    selector.match_labels.insert(HASH_LABEL.into(), hash.clone());
    let mut meta = ObjectMeta {
        name: format!("{}-{hash}", d.name()),
        namespace: d.namespace().to_string(),
        labels: template
            .metadata
            .as_ref()
            .map(|m| m.labels.clone())
            .unwrap_or_default(),
        owner_references: vec![controller_reference(d)],
        ..Default::default()
    };
    set_rs_annotations(&mut meta, d, revision);
    ReplicaSet {
        metadata: Some(meta),
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector: Some(selector),
            template: Some(template),
        }),
        ..Default::default()
    }
}

/// The annotations a ReplicaSet carries for its Deployment: the
/// Deployment's own (change-cause and the like), the revision, and the
/// sizes proportional scaling needs.
pub(super) fn set_rs_annotations(meta: &mut ObjectMeta, d: &Deployment, revision: i64) {
    for (k, v) in &d.metadata().annotations {
        if !NOT_COPIED.contains(&k.as_str()) {
            meta.annotations.insert(k.clone(), v.clone());
        }
    }
    meta.annotations.insert(REVISION.into(), revision.to_string());
    set_size_annotations(meta, d);
}

pub(super) fn set_size_annotations(meta: &mut ObjectMeta, d: &Deployment) {
    meta.annotations
        .insert(DESIRED_REPLICAS.into(), d_replicas(d).to_string());
    meta.annotations
        .insert(MAX_REPLICAS.into(), (d_replicas(d) + max_surge(d)).to_string());
}

pub(super) struct Run<'a> {
    state: &'a State,
    d: Deployment,
    rs_api: Api<ReplicaSet>,
    d_api: Api<Deployment>,
}

pub(super) async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let Some(cached) = state.deployments.get(&key) else {
        return Ok(Action::await_change());
    };
    let mut run = Run {
        state: &state,
        d: (*cached).clone(),
        rs_api: Api::namespaced(state.ctx.client.clone(), cached.namespace()),
        d_api: Api::namespaced(state.ctx.client.clone(), cached.namespace()),
    };
    let selector = match workload::selector_of(
        cached.spec.as_ref().and_then(|s| s.selector.as_ref()),
        &format!("deployment {key}"),
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%key, error = %e, "not managing replica sets");
            return Ok(Action::await_change());
        }
    };
    let rss = run.claim(&selector).await?;
    let now = Utc::now();
    let new_rs = find_new_rs(&run.d, &rss);
    let old: Vec<Arc<ReplicaSet>> = rss
        .iter()
        .filter(|r| {
            new_rs
                .as_ref()
                .is_none_or(|n| n.metadata().uid != r.metadata().uid)
        })
        .cloned()
        .collect();

    if is_deleting(run.d.metadata()) {
        // Being deleted: report, change nothing (the garbage collector
        // owns what happens to the ReplicaSets now).
        return run.write_status(&rss, new_rs.as_deref(), now, false).await;
    }
    let paused = run.d.spec.as_ref().is_some_and(|s| s.paused);
    if paused || is_scaling_event(&run.d, &rss) {
        // Kubernetes' `sync`: sizes only, no rollout.
        let new_rs = match new_rs {
            Some(n) => Some(run.sync_new_rs(n, &old).await?),
            None => None,
        };
        let changes = proportional_sizes(&run.d, new_rs.as_ref(), &old);
        if !changes.is_empty() {
            run.apply_sizes(&rss, &changes).await?;
            return Ok(Action::await_change());
        }
        if is_scaling_event(&run.d, &rss) {
            // Nothing to resize (the Deployment grew while a rollout already had its
            // surge up), but the active ReplicaSets still carry the old size: write the
            // new one, as Kubernetes' scaleReplicaSet does for a stale annotation alone.
            // Otherwise every later sync would come here again and the rollout to the
            // newest template would never start.
            let same: Vec<(String, i32)> = rss
                .iter()
                .filter(|r| rs_replicas(r) > 0)
                .map(|r| (r.name().to_string(), rs_replicas(r)))
                .collect();
            run.apply_sizes(&rss, &same).await?;
            return Ok(Action::await_change());
        }
        if paused {
            run.cleanup(&old).await?;
        }
        return run.write_status(&rss, new_rs.as_deref(), now, false).await;
    }

    if !is_rolling(&run.d) {
        return run.recreate(new_rs, old, now).await;
    }
    // RollingUpdate.
    let all_before: Vec<Arc<ReplicaSet>> = rss.clone();
    let new_rs = match new_rs {
        Some(n) => run.sync_new_rs(n, &old).await?,
        None => {
            let replicas = new_rs_replicas(&run.d, &all_before, None);
            run.create_new_rs(&old, replicas, now).await?
        }
    };
    let mut all = old.clone();
    all.push(new_rs.clone());
    let want = new_rs_replicas(&run.d, &all, Some(&new_rs));
    let target = if rs_replicas(&new_rs) > d_replicas(&run.d) {
        d_replicas(&run.d)
    } else {
        want
    };
    if target != rs_replicas(&new_rs) {
        run.scale(&new_rs, target).await?;
        return Ok(Action::await_change());
    }
    let downs = scale_down_old(&run.d, &old, Some(&new_rs));
    if !downs.is_empty() {
        run.apply_sizes(&all, &downs).await?;
        return Ok(Action::await_change());
    }
    let (status, _) = rollout_status(&run.d, &all, Some(&new_rs), now);
    if deployment_complete(&run.d, &status) {
        run.cleanup(&old).await?;
    }
    run.write_status(&all, Some(&new_rs), now, true).await
}

impl Run<'_> {
    /// The ReplicaSets of this Deployment: its own (released if their
    /// labels stopped matching) and matching orphans, adopted.
    async fn claim(
        &mut self,
        selector: &rkube_api::selector::Selector,
    ) -> Result<Vec<Arc<ReplicaSet>>, Error> {
        let uid = self.d.metadata().uid.clone();
        let deleting = is_deleting(self.d.metadata());
        let mut owned = Vec::new();
        let candidates = self
            .state
            .replicasets
            .by_index(NAMESPACE_INDEX, self.d.namespace())
            .unwrap_or_default();
        for rs in candidates {
            let matches = selector.matches(&rs.metadata().labels);
            match controller_ref(rs.metadata()) {
                Some(r) if r.uid == uid => {
                    if matches {
                        owned.push(rs);
                    } else if !deleting && !is_deleting(rs.metadata()) {
                        let mut copy = (*rs).clone();
                        copy.metadata_mut().owner_references.retain(|r| r.uid != uid);
                        ignore_stale(self.rs_api.update(&copy).await)?;
                    }
                }
                Some(_) => {}
                None if matches && !deleting && !is_deleting(rs.metadata()) => {
                    let mut copy = (*rs).clone();
                    copy.metadata_mut()
                        .owner_references
                        .push(controller_reference(&self.d));
                    if let Some(adopted) = ignore_stale(self.rs_api.update(&copy).await)? {
                        owned.push(Arc::new(adopted));
                    }
                }
                None => {}
            }
        }
        Ok(owned)
    }

    /// Makes the existing new ReplicaSet carry the newest revision (a
    /// rollback to an old template gives it a new one), the Deployment's
    /// annotations, and the Deployment the same revision.
    async fn sync_new_rs(
        &mut self,
        new_rs: Arc<ReplicaSet>,
        old: &[Arc<ReplicaSet>],
    ) -> Result<Arc<ReplicaSet>, Error> {
        let max_old = old.iter().map(|r| revision(r.metadata())).max().unwrap_or(0);
        let current = revision(new_rs.metadata());
        let rev = if current <= max_old { max_old + 1 } else { current };
        let mut copy = (*new_rs).clone();
        set_rs_annotations(copy.metadata_mut(), &self.d, rev);
        // Sizes are annotated when the ReplicaSet is scaled, not here.
        for k in [DESIRED_REPLICAS, MAX_REPLICAS] {
            match new_rs.metadata().annotations.get(k) {
                Some(v) => copy.metadata_mut().annotations.insert(k.into(), v.clone()),
                None => copy.metadata_mut().annotations.remove(k),
            };
        }
        let rs = if copy != *new_rs {
            Arc::new(self.rs_api.update(&copy).await?)
        } else {
            new_rs
        };
        self.set_revision(rev).await?;
        if deadline(&self.d).is_some()
            && self
                .d
                .status
                .as_ref()
                .and_then(|s| get_condition(s, "Progressing"))
                .is_none()
        {
            let msg = format!("Found new replica set {:?}", rs.name());
            let now = workload::now_rfc3339();
            let st = self.d.status.get_or_insert_with(Default::default);
            set_condition(
                &mut st.conditions,
                condition("Progressing", "True", "FoundNewReplicaSet", msg, &now),
            );
        }
        Ok(rs)
    }

    async fn set_revision(&mut self, rev: i64) -> Result<(), Error> {
        if revision(self.d.metadata()) == rev {
            return Ok(());
        }
        let mut copy = self.d.clone();
        copy.metadata_mut()
            .annotations
            .insert(REVISION.into(), rev.to_string());
        let status = self.d.status.clone();
        self.d = self.d_api.update(&copy).await?;
        // Keep the status changes made in memory this pass.
        self.d.status = status;
        Ok(())
    }

    async fn create_new_rs(
        &mut self,
        old: &[Arc<ReplicaSet>],
        replicas: i32,
        now: DateTime<Utc>,
    ) -> Result<Arc<ReplicaSet>, Error> {
        let rev = old.iter().map(|r| revision(r.metadata())).max().unwrap_or(0) + 1;
        let rs = new_replicaset(&self.d, replicas, rev);
        let created = match self.rs_api.create(&rs).await {
            Ok(c) => c,
            Err(e) if e.is_already_exists() => {
                let existing = self.rs_api.get(rs.name()).await?;
                let ours =
                    controller_ref(existing.metadata()).is_some_and(|r| r.uid == self.d.metadata().uid);
                let same = without_hash(existing.spec.as_ref().and_then(|s| s.template.as_ref()))
                    == without_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref()));
                if ours && same {
                    // Ours, created by an earlier pass the cache has not
                    // shown yet.
                    return Ok(Arc::new(existing));
                }
                // A hash collision: another template got this name. Count it
                // so the next hash differs.
                let mut copy = self.d.clone();
                let st = copy.status.get_or_insert_with(Default::default);
                let count = st.collision_count.unwrap_or(0) + 1;
                st.collision_count = Some(count);
                self.d_api.update_status(&copy).await?;
                return Err(Error::Invalid(format!(
                    "deployment {}: replica set {} exists with another template; retrying with collisionCount {count}",
                    self.d.key(),
                    rs.name(),
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let msg = format!("Scaled up replica set {} to {replicas}", created.name());
        self.event("ScalingReplicaSet", &msg).await;
        self.set_revision(rev).await?;
        if deadline(&self.d).is_some() {
            let now_s = workload::format_time(now);
            let msg = format!("Created new replica set {:?}", created.name());
            let st = self.d.status.get_or_insert_with(Default::default);
            set_condition(
                &mut st.conditions,
                condition("Progressing", "True", "NewReplicaSetCreated", msg, &now_s),
            );
            let copy = self.d.clone();
            if let Some(stored) = ignore_stale(self.d_api.update_status(&copy).await)? {
                self.d = stored;
            }
        }
        Ok(Arc::new(created))
    }

    async fn scale(&self, rs: &ReplicaSet, replicas: i32) -> Result<(), Error> {
        let old = rs_replicas(rs);
        let mut copy = rs.clone();
        copy.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
        set_size_annotations(copy.metadata_mut(), &self.d);
        if copy == *rs {
            return Ok(());
        }
        self.rs_api.update(&copy).await?;
        if old != replicas {
            let dir = if replicas > old { "up" } else { "down" };
            let msg = format!("Scaled {dir} replica set {} to {replicas}", rs.name());
            self.event("ScalingReplicaSet", &msg).await;
        }
        Ok(())
    }

    async fn apply_sizes(&self, all: &[Arc<ReplicaSet>], sizes: &[(String, i32)]) -> Result<(), Error> {
        for (name, size) in sizes {
            if let Some(rs) = all.iter().find(|r| r.name() == name) {
                self.scale(rs, *size).await?;
            }
        }
        Ok(())
    }

    async fn recreate(
        &mut self,
        new_rs: Option<Arc<ReplicaSet>>,
        old: Vec<Arc<ReplicaSet>>,
        now: DateTime<Utc>,
    ) -> Result<Action, Error> {
        let new_rs = match new_rs {
            Some(n) => Some(self.sync_new_rs(n, &old).await?),
            None => None,
        };
        let mut all = old.clone();
        all.extend(new_rs.clone());
        let active_old: Vec<&Arc<ReplicaSet>> = old.iter().filter(|r| rs_replicas(r) > 0).collect();
        if !active_old.is_empty() {
            for rs in active_old {
                self.scale(rs, 0).await?;
            }
            return Ok(Action::await_change());
        }
        if self.old_pods_running(&old) {
            return self.write_status(&all, new_rs.as_deref(), now, true).await;
        }
        let new_rs = match new_rs {
            Some(n) => n,
            None => {
                let n = self.create_new_rs(&old, d_replicas(&self.d), now).await?;
                all.push(n.clone());
                n
            }
        };
        if rs_replicas(&new_rs) != d_replicas(&self.d) {
            self.scale(&new_rs, d_replicas(&self.d)).await?;
            return Ok(Action::await_change());
        }
        let (status, _) = rollout_status(&self.d, &all, Some(&new_rs), now);
        if deployment_complete(&self.d, &status) {
            self.cleanup(&old).await?;
        }
        self.write_status(&all, Some(&new_rs), now, true).await
    }

    /// Whether any pod of an old ReplicaSet may still run (Recreate must
    /// not overlap old and new pods).
    fn old_pods_running(&self, old: &[Arc<ReplicaSet>]) -> bool {
        if old.iter().any(|r| rs_status(r).replicas > 0) {
            return true;
        }
        let uids: Vec<&str> = old.iter().map(|r| r.metadata().uid.as_str()).collect();
        self.state
            .pods
            .by_index(NAMESPACE_INDEX, self.d.namespace())
            .unwrap_or_default()
            .iter()
            .filter(|p| controller_ref(p.metadata()).is_some_and(|r| uids.contains(&r.uid.as_str())))
            .any(|p| !workload::is_terminal(p))
    }

    async fn cleanup(&self, old: &[Arc<ReplicaSet>]) -> Result<(), Error> {
        for rs in history_to_delete(&self.d, old) {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(rs.metadata().uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match self.rs_api.delete(rs.name(), &dp).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn write_status(
        &mut self,
        all: &[Arc<ReplicaSet>],
        new_rs: Option<&ReplicaSet>,
        now: DateTime<Utc>,
        rollout: bool,
    ) -> Result<Action, Error> {
        let now_s = workload::format_time(now);
        let (mut status, requeue) = if rollout {
            rollout_status(&self.d, all, new_rs, now)
        } else {
            (calculate_status(&self.d, all, new_rs, &now_s), None)
        };
        paused_conditions(&self.d, &mut status, &now_s);
        if self.d.status.as_ref() != Some(&status) {
            let mut copy = self.d.clone();
            copy.status = Some(status);
            ignore_stale(self.d_api.update_status(&copy).await)?;
        }
        Ok(requeue.map_or(Action::await_change(), Action::requeue))
    }

    async fn event(&self, reason: &str, msg: &str) {
        if let Err(e) = self
            .state
            .ctx
            .recorder
            .publish(&self.d, EventType::Normal, reason, msg)
            .await
        {
            tracing::debug!(deployment = %self.d.key(), error = %e, "cannot record event");
        }
    }
}

/// A write refused because the cache was behind (Conflict) or the object
/// went away: the newer state is on its way and brings the key back.
pub(super) fn ignore_stale<T>(r: rkube_client::Result<T>) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_conflict() || e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}
