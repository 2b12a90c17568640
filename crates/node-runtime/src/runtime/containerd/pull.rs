//! Client-side image pull into containerd (containerd 1.6 has no transfer service): the
//! registry client fetches, this module stores the blobs with the Content service, unpacks
//! the layers with the Diff service onto snapshots, and records the image.
//!
//! Garbage-collection references are set the way containerd's own client sets them, so a
//! pulled image keeps its blobs and unpacked snapshots alive: index -> manifest ->
//! config + layers, config -> top snapshot. A lease protects everything until the image
//! record exists.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, CreateRequest as CreateLeaseRequest, DeleteImageRequest,
    DeleteRequest as DeleteLeaseRequest, GetImageRequest, Image, Info as ContentInfo, InfoRequest,
    ListImagesRequest, ReadContentRequest, UpdateImageRequest, UpdateRequest as UpdateContentRequest,
    WriteAction, WriteContentRequest,
};
use containerd_client::types::Descriptor as ContainerdDescriptor;
use futures::SinkExt as _;
use sha2::{Digest as _, Sha256};
use tonic::Code;

use super::{format_rfc3339, random_hex, ContainerdRuntime};
use crate::image::oci::{
    chain_ids, manifest_kind, Descriptor, ImageConfigFile, Index, Manifest, ManifestKind,
};
use crate::image::registry::{FetchedManifest, MAX_DOCUMENT_BYTES};
use crate::image::{PullError, Reference, RegistryClient};
use crate::runtime::{Error, ImageInfo, ImageSummary, PullOptions};

/// Bytes per `Content.Write` message; well under gRPC's 4 MiB default message limit.
const WRITE_CHUNK: usize = 1 << 20;
/// A crashed kubelet's lease expires on its own after this.
const LEASE_EXPIRY: Duration = Duration::from_secs(3600);
/// How long to wait for another writer of the same blob (another image sharing a layer).
const LOCKED_RETRY_FOR: Duration = Duration::from_secs(300);

const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
const LABEL_GC_CONFIG: &str = "containerd.io/gc.ref.content.config";
const LABEL_GC_EXPIRE: &str = "containerd.io/gc.expire";

/// The defaults an image sets for containers run from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `uid`, `uid:gid`, `name` or `name:group`, as in the image.
    pub user: Option<String>,
    /// e.g. `SIGQUIT`.
    pub stop_signal: Option<String>,
}

impl From<&ImageConfigFile> for ImageConfig {
    fn from(file: &ImageConfigFile) -> Self {
        let run = file.config.clone().unwrap_or_default();
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Self {
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            env: run.env.unwrap_or_default(),
            working_dir: non_empty(run.working_dir),
            user: non_empty(run.user),
            stop_signal: non_empty(run.stop_signal),
        }
    }
}

/// Where a blob's bytes come from.
enum BlobSource<'a> {
    Memory(&'a [u8]),
    Registry(&'a mut RegistryClient),
}

/// The last successful pull of an image name, which pulls asked for before it began share.
pub(crate) struct RecentPull {
    began: Instant,
    input: String,
    auth: Option<crate::image::RegistryAuth>,
    info: ImageInfo,
}

impl ContainerdRuntime {
    pub(super) async fn pull(&self, input: &str, options: &PullOptions) -> Result<ImageInfo, Error> {
        let asked_at = Instant::now();
        let reference = Reference::parse(input).map_err(PullError::from)?;
        let name = reference.name();
        let lock = {
            let mut locks = self.inner.pull_locks.lock().await;
            locks
                .entry(name.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None)))
                .clone()
        };
        let mut serialised = lock.lock().await;
        // A pull of the same reference with the same credentials that began after this one
        // was asked for resolved the reference at least as recently as this one would: its
        // result is this one's (30 pods of one image starting at once make two pulls, not
        // 30 in a row).
        let shared = serialised
            .as_ref()
            .filter(|p| p.began >= asked_at && p.input == input && p.auth == options.auth)
            .map(|p| p.info.clone());
        let result = match shared {
            Some(info) => Ok(info),
            None => {
                let began = Instant::now();
                let result = self.pull_unshared(&reference, options).await;
                *serialised = result.as_ref().ok().map(|info| RecentPull {
                    began,
                    input: input.to_string(),
                    auth: options.auth.clone(),
                    info: info.clone(),
                });
                result
            }
        };
        drop(serialised);
        // Forget the lock once nobody else waits on it, so the map does not grow with every
        // image ever pulled.
        let mut locks = self.inner.pull_locks.lock().await;
        if locks.get(&name).is_some_and(|l| Arc::strong_count(l) <= 2) {
            locks.remove(&name);
        }
        result
    }

    async fn pull_unshared(&self, reference: &Reference, options: &PullOptions) -> Result<ImageInfo, Error> {
        let mut registry =
            RegistryClient::new(reference, options.auth.clone(), &options.insecure_registries)?;
        let top = registry.fetch_manifest(reference.manifest_reference()).await?;
        tracing::info!(image = %reference.name(), digest = %top.digest, "pulling image");
        let lease = self.create_lease("pull").await?;
        let result = self.pull_leased(reference, &mut registry, top, &lease).await;
        self.delete_lease(&lease).await;
        result
    }

    async fn pull_leased(
        &self,
        reference: &Reference,
        registry: &mut RegistryClient,
        top: FetchedManifest,
        lease: &str,
    ) -> Result<ImageInfo, Error> {
        let name = reference.name();
        let bad = |what: &str| {
            let what = what.to_string();
            let name = name.clone();
            move |source| PullError::BadDocument {
                reference: name,
                what,
                source,
            }
        };

        // Resolve an index to this node's platform.
        let (index, manifest_doc) = match manifest_kind(&top.media_type) {
            Some(ManifestKind::Manifest) => (None, top.clone()),
            Some(ManifestKind::Index) => {
                let index: Index = serde_json::from_slice(&top.body).map_err(bad("image index"))?;
                let platform = &self.inner.config.platform;
                let (position, chosen) = index
                    .manifests
                    .iter()
                    .enumerate()
                    .find(|(_, d)| Some(*d) == index.select(platform))
                    .ok_or_else(|| PullError::NoMatchingPlatform {
                        reference: name.clone(),
                        platform: platform.to_string(),
                        available: index.platforms(),
                    })?;
                let fetched = registry.fetch_manifest(&chosen.digest).await?;
                if manifest_kind(&fetched.media_type) != Some(ManifestKind::Manifest) {
                    return Err(PullError::UnsupportedMediaType {
                        reference: name.clone(),
                        media_type: fetched.media_type,
                    }
                    .into());
                }
                (Some((top.clone(), position)), fetched)
            }
            None => {
                return Err(PullError::UnsupportedMediaType {
                    reference: name.clone(),
                    media_type: top.media_type.clone(),
                }
                .into())
            }
        };
        let manifest: Manifest = serde_json::from_slice(&manifest_doc.body).map_err(bad("image manifest"))?;

        let config_bytes = match self.read_content(&manifest.config.digest, &name).await? {
            Some(bytes) => bytes,
            None => {
                registry
                    .fetch_blob_bytes(&manifest.config.digest, "image config")
                    .await?
            }
        };
        let config: ImageConfigFile = serde_json::from_slice(&config_bytes).map_err(bad("image config"))?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(PullError::Unpack {
                reference: name.clone(),
                layer: "count".to_string(),
                expected: format!("{} layers in the config", diff_ids.len()),
                actual: format!("{} layers in the manifest", manifest.layers.len()),
            }
            .into());
        }
        if diff_ids.is_empty() {
            return Err(PullError::Unpack {
                reference: name.clone(),
                layer: "count".to_string(),
                expected: "at least one layer".to_string(),
                actual: "none".to_string(),
            }
            .into());
        }
        let chain = chain_ids(diff_ids);
        let top_chain = chain.last().cloned().unwrap_or_default();

        // Blobs, children before parents.
        for (layer, diff_id) in manifest.layers.iter().zip(diff_ids) {
            let labels = HashMap::from([(LABEL_UNCOMPRESSED.to_string(), diff_id.clone())]);
            self.store_blob(&name, layer, labels, lease, BlobSource::Registry(registry))
                .await?;
        }
        let snapshot_label = format!("containerd.io/gc.ref.snapshot.{}", self.inner.config.snapshotter);
        self.store_blob(
            &name,
            &manifest.config,
            HashMap::from([(snapshot_label, top_chain.clone())]),
            lease,
            BlobSource::Memory(&config_bytes),
        )
        .await?;
        let mut manifest_labels =
            HashMap::from([(LABEL_GC_CONFIG.to_string(), manifest.config.digest.clone())]);
        for (i, layer) in manifest.layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest.clone(),
            );
        }
        let manifest_desc = descriptor_of(&manifest_doc);
        self.store_blob(
            &name,
            &manifest_desc,
            manifest_labels,
            lease,
            BlobSource::Memory(&manifest_doc.body),
        )
        .await?;
        if let Some((index_doc, position)) = &index {
            self.store_blob(
                &name,
                &descriptor_of(index_doc),
                HashMap::from([(
                    format!("containerd.io/gc.ref.content.m.{position}"),
                    manifest_doc.digest.clone(),
                )]),
                lease,
                BlobSource::Memory(&index_doc.body),
            )
            .await?;
        }

        self.unpack(&name, &manifest.layers, diff_ids, &chain, lease)
            .await?;

        let target = descriptor_of(&top);
        self.put_image_record(&name, &target, lease).await?;
        tracing::info!(image = %name, digest = %top.digest, "pulled image");
        Ok(ImageInfo {
            name: name.clone(),
            digest: top.digest.clone(),
            repo_digest: format!("{}@{}", reference.locator(), top.digest),
            config_digest: manifest.config.digest.clone(),
            manifest_digest: manifest_doc.digest.clone(),
            chain_id: top_chain,
            size: manifest.layers.iter().map(|l| l.size.max(0) as u64).sum(),
            config: ImageConfig::from(&config),
        })
    }

    /// Applies each layer onto a snapshot of the previous ones, committing it under its
    /// chain ID. Layers whose snapshot exists (shared with another image) are skipped.
    async fn unpack(
        &self,
        name: &str,
        layers: &[Descriptor],
        diff_ids: &[String],
        chain: &[String],
        lease: &str,
    ) -> Result<(), Error> {
        let snapshotter = self.inner.config.snapshotter.clone();
        let store_error = |operation: &str, status| self.store_error(name, operation, status);
        for (i, layer) in layers.iter().enumerate() {
            if self.snapshot_exists(&chain[i]).await? {
                continue;
            }
            let key = format!("rkube-unpack-{}-{}", random_hex(6), chain[i]);
            let parent = if i == 0 {
                String::new()
            } else {
                chain[i - 1].clone()
            };
            let mut snapshots = SnapshotsClient::new(self.channel());
            let mounts = snapshots
                .prepare(self.leased_request(
                    PrepareSnapshotRequest {
                        snapshotter: snapshotter.clone(),
                        key: key.clone(),
                        parent,
                        labels: HashMap::new(),
                    },
                    lease,
                    true,
                ))
                .await
                .map_err(|s| store_error("prepare snapshot", s))?
                .into_inner()
                .mounts;
            let applied = DiffClient::new(self.channel())
                .apply(self.leased_request(
                    ApplyRequest {
                        diff: Some(to_containerd_descriptor(layer)),
                        mounts,
                        payloads: HashMap::new(),
                        sync_fs: false,
                    },
                    lease,
                    false,
                ))
                .await;
            let applied = match applied {
                Ok(r) => r.into_inner().applied.map(|d| d.digest).unwrap_or_default(),
                Err(s) => {
                    self.remove_unpack_snapshot(&key).await;
                    return Err(store_error(&format!("apply layer {}", layer.digest), s));
                }
            };
            if applied != diff_ids[i] {
                self.remove_unpack_snapshot(&key).await;
                return Err(PullError::Unpack {
                    reference: name.to_string(),
                    layer: layer.digest.clone(),
                    expected: diff_ids[i].clone(),
                    actual: applied,
                }
                .into());
            }
            let committed = snapshots
                .commit(self.leased_request(
                    CommitSnapshotRequest {
                        snapshotter: snapshotter.clone(),
                        name: chain[i].clone(),
                        key: key.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                    true,
                ))
                .await;
            match committed {
                Ok(_) => {}
                // Someone unpacked the same layer meanwhile; theirs is as good.
                Err(s) if s.code() == Code::AlreadyExists => {
                    self.remove_unpack_snapshot(&key).await;
                }
                Err(s) => {
                    self.remove_unpack_snapshot(&key).await;
                    return Err(store_error("commit snapshot", s));
                }
            }
        }
        Ok(())
    }

    async fn remove_unpack_snapshot(&self, key: &str) {
        let _ = SnapshotsClient::new(self.channel())
            .remove(self.request(RemoveSnapshotRequest {
                snapshotter: self.inner.config.snapshotter.clone(),
                key: key.to_string(),
            }))
            .await;
    }

    async fn snapshot_exists(&self, key: &str) -> Result<bool, Error> {
        let result = SnapshotsClient::new(self.channel())
            .stat(self.request(StatSnapshotRequest {
                snapshotter: self.inner.config.snapshotter.clone(),
                key: key.to_string(),
            }))
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(self.status_error("stat snapshot", key, s)),
        }
    }

    async fn put_image_record(&self, name: &str, target: &Descriptor, lease: &str) -> Result<(), Error> {
        let image = Image {
            name: name.to_string(),
            labels: HashMap::new(),
            target: Some(to_containerd_descriptor(target)),
            created_at: None,
            updated_at: None,
        };
        let mut images = ImagesClient::new(self.channel());
        let created = images
            .create(self.leased_request(
                CreateImageRequest {
                    image: Some(image.clone()),
                    source_date_epoch: None,
                },
                lease,
                true,
            ))
            .await;
        match created {
            Ok(_) => Ok(()),
            // Re-pull of a tag: point the record at what the tag names now.
            Err(s) if s.code() == Code::AlreadyExists => images
                .update(self.leased_request(
                    UpdateImageRequest {
                        image: Some(image),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["target".to_string()],
                        }),
                        source_date_epoch: None,
                    },
                    lease,
                    true,
                ))
                .await
                .map(|_| ())
                .map_err(|s| self.store_error(name, "update image record", s)),
            Err(s) => Err(self.store_error(name, "create image record", s)),
        }
    }

    fn store_error(&self, name: &str, operation: &str, status: tonic::Status) -> Error {
        // Routes through status_error for its reconnect side effect.
        let _ = self.status_error("pull", name, status.clone());
        Error::Pull(PullError::Store {
            reference: name.to_string(),
            operation: operation.to_string(),
            source: status,
        })
    }

    /// Makes sure `desc` is in the content store with `labels`: labels an existing blob, or
    /// writes it. Waits out another writer of the same blob.
    async fn store_blob(
        &self,
        name: &str,
        desc: &Descriptor,
        labels: HashMap<String, String>,
        lease: &str,
        mut source: BlobSource<'_>,
    ) -> Result<(), Error> {
        let started = tokio::time::Instant::now();
        loop {
            if self.content_exists(&desc.digest, name).await? {
                return self.label_content(name, &desc.digest, &labels).await;
            }
            match self.write_blob(name, desc, &labels, lease, &mut source).await {
                Ok(()) => return Ok(()),
                Err(Error::Pull(PullError::Store { source: status, .. }))
                    if status.code() == Code::AlreadyExists =>
                {
                    return self.label_content(name, &desc.digest, &labels).await;
                }
                Err(Error::Pull(PullError::Store { source: status, .. }))
                    if status.code() == Code::Unavailable
                        && status.message().contains("locked")
                        && started.elapsed() < LOCKED_RETRY_FOR =>
                {
                    tracing::debug!(blob = %desc.digest, "blob is being written by another pull; waiting");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn write_blob(
        &self,
        name: &str,
        desc: &Descriptor,
        labels: &HashMap<String, String>,
        lease: &str,
        source: &mut BlobSource<'_>,
    ) -> Result<(), Error> {
        let write_ref = format!("rkube-pull-{}", desc.digest);
        // No Abort of a leftover partial ingest first: the ref may be another pull's write
        // in progress (same blob, other image), and aborting it breaks that pull's commit.
        // containerd truncates a stale ingest when a write starts again at offset 0, and a
        // live one answers "locked", which store_blob waits out.
        let (mut tx, rx) = futures::channel::mpsc::channel::<WriteContentRequest>(4);
        let message = |action: WriteAction, offset: i64, data: Vec<u8>| WriteContentRequest {
            action: action as i32,
            r#ref: write_ref.clone(),
            total: desc.size,
            expected: desc.digest.clone(),
            offset,
            data,
            labels: if action == WriteAction::Commit {
                labels.clone()
            } else {
                HashMap::new()
            },
        };

        let producer = async {
            let mut hasher = Sha256::new();
            let mut offset: i64 = 0;
            // A send only fails when the call has ended; the consumer reports why.
            match source {
                BlobSource::Memory(bytes) => {
                    for chunk in bytes.chunks(WRITE_CHUNK) {
                        hasher.update(chunk);
                        if tx
                            .send(message(WriteAction::Write, offset, chunk.to_vec()))
                            .await
                            .is_err()
                        {
                            return Ok(());
                        }
                        offset += chunk.len() as i64;
                    }
                }
                BlobSource::Registry(registry) => {
                    let url = registry.blob_url(&desc.digest);
                    let mut response = registry.fetch_blob(&desc.digest).await?;
                    let mut buffer = Vec::with_capacity(WRITE_CHUNK);
                    loop {
                        let chunk = response.chunk().await.map_err(|e| registry.http_error(&url, e))?;
                        let done = chunk.is_none();
                        if let Some(chunk) = chunk {
                            hasher.update(&chunk);
                            buffer.extend_from_slice(&chunk);
                            if offset + (buffer.len() as i64) > desc.size {
                                break;
                            }
                        }
                        if buffer.len() >= WRITE_CHUNK || (done && !buffer.is_empty()) {
                            let data = std::mem::replace(&mut buffer, Vec::with_capacity(WRITE_CHUNK));
                            let len = data.len() as i64;
                            if tx.send(message(WriteAction::Write, offset, data)).await.is_err() {
                                return Ok(());
                            }
                            offset += len;
                        }
                        if done {
                            break;
                        }
                    }
                    offset += buffer.len() as i64;
                }
            }
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if offset != desc.size || actual != desc.digest {
                // Dropping the sender without a commit abandons the write.
                return Err(Error::Pull(PullError::DigestMismatch {
                    reference: name.to_string(),
                    what: format!(
                        "blob {} ({} bytes received, {} expected)",
                        desc.digest, offset, desc.size
                    ),
                    expected: desc.digest.clone(),
                    actual,
                }));
            }
            let _ = tx.send(message(WriteAction::Commit, offset, Vec::new())).await;
            drop(tx);
            Ok(())
        };

        let consumer = async {
            let mut content = ContentClient::new(self.channel());
            let mut responses = content
                .write(self.leased_request(rx, lease, false))
                .await
                .map_err(|s| self.store_error(name, &format!("write blob {}", desc.digest), s))?
                .into_inner();
            loop {
                match responses.message().await {
                    Ok(Some(response)) if response.action == WriteAction::Commit as i32 => {
                        return Ok(());
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Err(self.store_error(
                            name,
                            &format!("write blob {}", desc.digest),
                            tonic::Status::aborted("the write ended before the blob was committed"),
                        ))
                    }
                    Err(s) => return Err(self.store_error(name, &format!("write blob {}", desc.digest), s)),
                }
            }
        };

        let (produced, consumed) = tokio::join!(producer, consumer);
        // The producer's error (registry, digest) explains a consumer failure, not the
        // other way round.
        produced?;
        consumed
    }

    async fn content_exists(&self, digest: &str, name: &str) -> Result<bool, Error> {
        let result = ContentClient::new(self.channel())
            .info(self.request(InfoRequest {
                digest: digest.to_string(),
            }))
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(self.store_error(name, &format!("look up blob {digest}"), s)),
        }
    }

    async fn label_content(
        &self,
        name: &str,
        digest: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), Error> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        ContentClient::new(self.channel())
            .update(self.request(UpdateContentRequest {
                info: Some(ContentInfo {
                    digest: digest.to_string(),
                    labels: labels.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(|s| self.store_error(name, &format!("label blob {digest}"), s))?;
        Ok(())
    }

    /// A small blob from the content store, or `None` if it is not there.
    async fn read_content(&self, digest: &str, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let result = ContentClient::new(self.channel())
            .read(self.request(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await;
        let mut stream = match result {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(self.store_error(name, &format!("read blob {digest}"), s)),
        };
        let mut data = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => {
                    data.extend_from_slice(&chunk.data);
                    if data.len() > MAX_DOCUMENT_BYTES {
                        return Err(PullError::TooLarge {
                            reference: name.to_string(),
                            what: format!("blob {digest}"),
                            limit: MAX_DOCUMENT_BYTES,
                        }
                        .into());
                    }
                }
                Ok(None) => return Ok(Some(data)),
                Err(s) if s.code() == Code::NotFound => return Ok(None),
                Err(s) => return Err(self.store_error(name, &format!("read blob {digest}"), s)),
            }
        }
    }

    /// The image named by `input` if its record, documents and unpacked snapshot are all
    /// there.
    pub(super) async fn read_image(&self, input: &str) -> Result<Option<ImageInfo>, Error> {
        let reference = Reference::parse(input).map_err(PullError::from)?;
        let name = reference.name();
        let broken = |reason: String| Error::BrokenImage {
            image: name.clone(),
            reason,
        };
        let result = ImagesClient::new(self.channel())
            .get(self.request(GetImageRequest { name: name.clone() }))
            .await;
        let image = match result {
            Ok(r) => r.into_inner().image,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(self.status_error("get image", &name, s)),
        };
        let Some(target) = image.and_then(|i| i.target) else {
            return Ok(None);
        };
        let Some(top) = self.read_content(&target.digest, &name).await? else {
            return Ok(None);
        };
        let (manifest_digest, manifest_bytes) = match manifest_kind(&target.media_type) {
            Some(ManifestKind::Manifest) => (target.digest.clone(), top),
            Some(ManifestKind::Index) => {
                let index: Index = serde_json::from_slice(&top)
                    .map_err(|e| broken(format!("its index is not valid: {e}")))?;
                let Some(chosen) = index.select(&self.inner.config.platform) else {
                    return Err(broken(format!(
                        "its index has no manifest for {}",
                        self.inner.config.platform
                    )));
                };
                match self.read_content(&chosen.digest, &name).await? {
                    Some(bytes) => (chosen.digest.clone(), bytes),
                    None => return Ok(None),
                }
            }
            None => {
                return Err(broken(format!(
                    "its target has media type {:?}",
                    target.media_type
                )))
            }
        };
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| broken(format!("its manifest is not valid: {e}")))?;
        let Some(config_bytes) = self.read_content(&manifest.config.digest, &name).await? else {
            return Ok(None);
        };
        let config: ImageConfigFile = serde_json::from_slice(&config_bytes)
            .map_err(|e| broken(format!("its config is not valid: {e}")))?;
        let Some(chain_id) = chain_ids(&config.rootfs.diff_ids).pop() else {
            return Err(broken("its config lists no layers".to_string()));
        };
        if !self.snapshot_exists(&chain_id).await? {
            return Ok(None);
        }
        Ok(Some(ImageInfo {
            name: name.clone(),
            digest: target.digest.clone(),
            repo_digest: format!("{}@{}", reference.locator(), target.digest),
            config_digest: manifest.config.digest.clone(),
            manifest_digest,
            chain_id,
            size: manifest.layers.iter().map(|l| l.size.max(0) as u64).sum(),
            config: ImageConfig::from(&config),
        }))
    }

    /// Every image record, with its size when its documents are readable.
    pub(super) async fn list_image_records(&self) -> Result<Vec<ImageSummary>, Error> {
        let images = ImagesClient::new(self.channel())
            .list(self.request(ListImagesRequest { filters: Vec::new() }))
            .await
            .map_err(|s| self.status_error("list images", "every image", s))?
            .into_inner()
            .images;
        let mut out = Vec::with_capacity(images.len());
        for image in images {
            // a record whose documents are gone still takes a name; it is worth removing
            let size = match self.read_image(&image.name).await {
                Ok(Some(info)) => info.size,
                _ => 0,
            };
            out.push(ImageSummary {
                name: image.name,
                size,
            });
        }
        Ok(out)
    }

    /// Deletes the image record; `sync` makes containerd collect the blobs and snapshots
    /// only it held before answering, so the space is free when this returns.
    pub(super) async fn delete_image_record(&self, name: &str) -> Result<(), Error> {
        let result = ImagesClient::new(self.channel())
            .delete(self.request(DeleteImageRequest {
                name: name.to_string(),
                sync: true,
                target: None,
            }))
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(self.status_error("delete image", name, s)),
        }
    }

    /// A lease that expires on its own, in case this process dies before deleting it.
    pub(super) async fn create_lease(&self, purpose: &str) -> Result<String, Error> {
        let id = format!("rkube-{purpose}-{}", random_hex(8));
        let expires = format_rfc3339(SystemTime::now() + LEASE_EXPIRY);
        LeasesClient::new(self.channel())
            .create(self.request(CreateLeaseRequest {
                id: id.clone(),
                labels: HashMap::from([(LABEL_GC_EXPIRE.to_string(), expires)]),
            }))
            .await
            .map_err(|s| self.status_error("create lease", &id, s))?;
        Ok(id)
    }

    /// Best effort: a lease left behind expires by itself.
    pub(super) async fn delete_lease(&self, id: &str) {
        if let Err(status) = LeasesClient::new(self.channel())
            .delete(self.request(DeleteLeaseRequest {
                id: id.to_string(),
                sync: false,
            }))
            .await
        {
            tracing::warn!(lease = id, error = %status.message(), "could not delete containerd lease; it expires by itself");
        }
    }
}

fn descriptor_of(doc: &FetchedManifest) -> Descriptor {
    Descriptor {
        media_type: doc.media_type.clone(),
        digest: doc.digest.clone(),
        size: doc.body.len() as i64,
        platform: None,
        annotations: Default::default(),
    }
}

fn to_containerd_descriptor(desc: &Descriptor) -> ContainerdDescriptor {
    ContainerdDescriptor {
        media_type: desc.media_type.clone(),
        digest: desc.digest.clone(),
        size: desc.size,
        annotations: desc.annotations.clone().into_iter().collect(),
    }
}
