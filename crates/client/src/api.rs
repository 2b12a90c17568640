//! `Api<K>`: the typed calls on one kind, in one namespace or all of them.

use crate::client::{need_namespace, request_namespace, Client};
use crate::error::Result;
use crate::list_watch::{list_pages, ListWatch};
use crate::params::{DeleteParams, ListParams, ObjectList, PostParams, Subresource, WatchEvent, WatchParams};
use futures::stream::{BoxStream, StreamExt};
use prost_types::Any;
use rkube_api::{from_any, to_any, Resource};
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

/// How often `replace_with` re-reads and retries after a Conflict before
/// giving the Conflict to the caller (client-go's `DefaultRetry` steps).
const CONFLICT_RETRIES: u32 = 5;

/// Typed access to objects of kind `K`.
pub struct Api<K> {
    client: Client,
    /// None: all namespaces (lists and watches), or a cluster-scoped kind.
    namespace: Option<String>,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            _kind: PhantomData,
        }
    }
}

impl<K: Resource> fmt::Debug for Api<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("kind", &K::INFO.kind)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl<K: Resource> Api<K> {
    /// Objects in one namespace. For cluster-scoped kinds the namespace is
    /// ignored.
    pub fn namespaced(client: Client, namespace: &str) -> Self {
        let namespace = (K::INFO.namespaced && !namespace.is_empty()).then(|| namespace.to_string());
        Api {
            client,
            namespace,
            _kind: PhantomData,
        }
    }

    /// A cluster-scoped kind, or every namespace of a namespaced kind (for
    /// list and watch; single objects then need their namespace, so
    /// `create`/`update` use the object's own).
    pub fn all(client: Client) -> Self {
        Api {
            client,
            namespace: None,
            _kind: PhantomData,
        }
    }

    /// Objects in the client config's default namespace.
    pub fn default_namespaced(client: Client) -> Self {
        let ns = client.default_namespace().to_string();
        Self::namespaced(client, &ns)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The namespace this handle addresses; None for all namespaces.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    /// The namespace a single-object call addresses; refuses a namespaced
    /// kind through `Api::all`, which would otherwise reach the server as
    /// an empty namespace and fail with a less helpful message.
    fn object_ns(&self, name: &str) -> Result<&str> {
        need_namespace(&K::INFO, self.ns(), name)?;
        Ok(self.ns())
    }

    pub async fn get(&self, name: &str) -> Result<K> {
        let ns = self.object_ns(name)?;
        decode(&self.client.get_any(&K::INFO, ns, name).await?)
    }

    /// Like `get`, with NotFound as None.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>> {
        match self.get(name).await {
            Ok(obj) => Ok(Some(obj)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of objects.
    pub async fn list(&self, lp: &ListParams) -> Result<ObjectList<K>> {
        let list = self.client.list_any(&K::INFO, self.ns(), lp).await?;
        Ok(ObjectList {
            items: list.items.iter().map(decode).collect::<Result<_>>()?,
            resource_version: list.resource_version,
            continue_token: list.continue_token,
            remaining_item_count: list.remaining_item_count,
        })
    }

    /// Every object, following continue tokens (pages of `lp.limit`, or
    /// 500). All pages come from one snapshot, so `resource_version` is
    /// where a watch must start to miss nothing. If the continue token
    /// expires midway, lists again in one call.
    pub async fn list_all(&self, lp: &ListParams) -> Result<ObjectList<K>> {
        list_pages(self, lp).await
    }

    /// Creates `obj` in this handle's namespace (or its own, with
    /// `Api::all`). Returns the object as stored.
    pub async fn create(&self, obj: &K) -> Result<K> {
        self.create_with(obj, &PostParams::default()).await
    }

    pub async fn create_with(&self, obj: &K, pp: &PostParams) -> Result<K> {
        let ns = request_namespace(&K::INFO, &obj.metadata().namespace, self.ns())?;
        let any = self
            .client
            .create_any(&K::INFO, &ns, self.wire(obj, &ns), pp)
            .await?;
        decode(&any)
    }

    /// Replaces the object (everything but status for kinds with a status
    /// subresource). Fails with Conflict if `obj`'s resourceVersion is not
    /// the stored one: read, modify, write again (see `replace_with`).
    pub async fn update(&self, obj: &K) -> Result<K> {
        self.update_sub(obj, Subresource::Main, &PostParams::default())
            .await
    }

    /// Replaces only the status; the same resourceVersion rule applies.
    pub async fn update_status(&self, obj: &K) -> Result<K> {
        self.update_sub(obj, Subresource::Status, &PostParams::default())
            .await
    }

    pub async fn update_with(&self, obj: &K, sub: Subresource, pp: &PostParams) -> Result<K> {
        self.update_sub(obj, sub, pp).await
    }

    async fn update_sub(&self, obj: &K, sub: Subresource, pp: &PostParams) -> Result<K> {
        let ns = request_namespace(&K::INFO, &obj.metadata().namespace, self.ns())?;
        let any = self
            .client
            .update_any(&K::INFO, self.wire(obj, &ns), sub, pp)
            .await?;
        decode(&any)
    }

    /// JSON merge patch (RFC 7386) of everything but status.
    pub async fn patch_merge(&self, name: &str, patch: &serde_json::Value) -> Result<K> {
        self.patch_sub(name, patch, Subresource::Main).await
    }

    /// JSON merge patch of the status subresource.
    pub async fn patch_status_merge(&self, name: &str, patch: &serde_json::Value) -> Result<K> {
        self.patch_sub(name, patch, Subresource::Status).await
    }

    /// JSON merge patch of a CertificateSigningRequest's `approval`
    /// subresource (its Approved/Denied conditions).
    pub async fn patch_approval_merge(&self, name: &str, patch: &serde_json::Value) -> Result<K> {
        self.patch_sub(name, patch, Subresource::Approval).await
    }

    async fn patch_sub(&self, name: &str, patch: &serde_json::Value, sub: Subresource) -> Result<K> {
        let ns = self.object_ns(name)?;
        let any = self
            .client
            .patch_any(&K::INFO, ns, name, ("merge", patch), sub, &PostParams::default())
            .await?;
        decode(&any)
    }

    /// Deletes an object. Returns its last state when the server sends it;
    /// with finalizers it is still there, with `deletionTimestamp` set.
    pub async fn delete(&self, name: &str, dp: &DeleteParams) -> Result<Option<K>> {
        let ns = self.object_ns(name)?;
        match self.client.delete_any(&K::INFO, ns, name, dp).await? {
            Some(any) => Ok(Some(decode(&any)?)),
            None => Ok(None),
        }
    }

    /// Watches this handle's namespace (or all). The stream ends when the
    /// server closes it; an expired `resource_version` fails with Gone,
    /// either at once or as the stream's first item.
    pub async fn watch(&self, wp: &WatchParams) -> Result<BoxStream<'static, Result<WatchEvent<K>>>> {
        let stream = self.client.watch_any(&K::INFO, self.ns(), wp).await?;
        Ok(stream
            .map(|item| item.and_then(|(ev, rv)| decode_event(ev, &rv)))
            .boxed())
    }

    /// Reads the object, applies `f` and writes it back with the
    /// resourceVersion it read, re-reading and retrying on Conflict. Writes
    /// nothing if `f` changes nothing. Returns the stored object.
    pub async fn replace_with<F>(&self, name: &str, f: F) -> Result<K>
    where
        F: FnMut(K) -> K,
    {
        self.replace_sub(name, Subresource::Main, f).await
    }

    /// `replace_with` for the status subresource: what controllers use to
    /// write status without losing a concurrent spec change.
    pub async fn replace_status_with<F>(&self, name: &str, f: F) -> Result<K>
    where
        F: FnMut(K) -> K,
    {
        self.replace_sub(name, Subresource::Status, f).await
    }

    async fn replace_sub<F>(&self, name: &str, sub: Subresource, mut f: F) -> Result<K>
    where
        F: FnMut(K) -> K,
    {
        let mut attempt = 0;
        loop {
            let current = self.get(name).await?;
            let rv = current.metadata().resource_version.clone();
            let mut desired = f(current.clone());
            if desired == current {
                return Ok(current);
            }
            // The write must be guarded by what was read, whatever `f` did.
            desired.metadata_mut().resource_version = rv;
            match self.update_sub(&desired, sub, &PostParams::default()).await {
                Err(e) if e.is_conflict() && attempt + 1 < CONFLICT_RETRIES => {
                    attempt += 1;
                    tracing::debug!(kind = K::INFO.kind, name, attempt, "conflict, reading again");
                    tokio::time::sleep(conflict_pause(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// The object as sent: namespaced kinds carry their namespace inside
    /// (Update has no separate namespace field).
    fn wire(&self, obj: &K, ns: &str) -> Any {
        if K::INFO.namespaced && obj.metadata().namespace != ns {
            let mut obj = obj.clone();
            obj.metadata_mut().namespace = ns.to_string();
            to_any(&obj)
        } else {
            to_any(obj)
        }
    }
}

/// A short, jittered pause so two writers that conflicted do not collide
/// again in lockstep.
fn conflict_pause(attempt: u32) -> Duration {
    let base = 10 * u64::from(attempt);
    Duration::from_millis(base + rand::random::<u64>() % (base + 1))
}

fn decode<K: Resource>(any: &Any) -> Result<K> {
    Ok(from_any(any)?)
}

fn decode_event<K: Resource>(ev: WatchEvent<Any>, event_rv: &str) -> Result<WatchEvent<K>> {
    let obj = |any: Any| -> Result<K> {
        let mut k: K = decode(&any)?;
        // Resuming a watch needs a revision for every event; the object's
        // own is authoritative, the event's fills in if it is missing.
        if k.metadata().resource_version.is_empty() && !event_rv.is_empty() {
            k.metadata_mut().resource_version = event_rv.to_string();
        }
        Ok(k)
    };
    Ok(match ev {
        WatchEvent::Added(a) => WatchEvent::Added(obj(a)?),
        WatchEvent::Modified(a) => WatchEvent::Modified(obj(a)?),
        WatchEvent::Deleted(a) => WatchEvent::Deleted(obj(a)?),
        WatchEvent::Bookmark(rv) => WatchEvent::Bookmark(rv),
    })
}

#[async_trait::async_trait]
impl<K: Resource> ListWatch<K> for Api<K> {
    async fn list(&self, lp: &ListParams) -> Result<ObjectList<K>> {
        Api::list(self, lp).await
    }

    async fn watch(&self, wp: &WatchParams) -> Result<BoxStream<'static, Result<WatchEvent<K>>>> {
        Api::watch(self, wp).await
    }
}
