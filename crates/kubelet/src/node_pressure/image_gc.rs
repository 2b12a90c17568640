//! Image garbage collection, as Kubernetes' image GC manager does it: when the image
//! filesystem is fuller than `--image-gc-high-threshold` percent, images no container uses
//! are deleted, least recently used first, until it is back down to
//! `--image-gc-low-threshold`; under DiskPressure every unused image goes. When an image
//! was last used is remembered in memory (as Kubernetes does): an image no container used
//! since this kubelet started counts from when it was first seen. An image first seen less
//! than `--minimum-image-ttl-duration` ago stays, so one pulled a moment ago is not taken
//! away before its container is created.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rkube_node_runtime::image::Reference;
use rkube_node_runtime::runtime::{ContainerRuntime, ImageSummary};

#[derive(Debug, Clone, Copy)]
struct Record {
    first_seen: Instant,
    last_used: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct ImageGc {
    records: HashMap<String, Record>,
}

/// What one collection did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub removed: Vec<String>,
    pub freed_bytes: u64,
}

impl ImageGc {
    /// Lists the images and the containers, refreshes when each image was last used and
    /// returns the unused ones, least recently used first.
    async fn unused(
        &mut self,
        runtime: &dyn ContainerRuntime,
        min_age: Duration,
    ) -> anyhow::Result<Vec<ImageSummary>> {
        let images = runtime.list_images().await?;
        // containers of any state hold their image's snapshot as their parent
        let used: HashSet<String> = runtime
            .list_containers()
            .await?
            .into_iter()
            .map(|c| Reference::parse(&c.image).map(|r| r.name()).unwrap_or(c.image))
            .collect();
        let now = Instant::now();
        let names: HashSet<&str> = images.iter().map(|i| i.name.as_str()).collect();
        self.records.retain(|name, _| names.contains(name.as_str()));
        for image in &images {
            let record = self.records.entry(image.name.clone()).or_insert(Record {
                first_seen: now,
                last_used: None,
            });
            if used.contains(&image.name) {
                record.last_used = Some(now);
            }
        }
        let mut unused: Vec<ImageSummary> = images
            .into_iter()
            .filter(|i| !used.contains(&i.name))
            .filter(|i| now.saturating_duration_since(self.records[&i.name].first_seen) >= min_age)
            .collect();
        unused.sort_by_key(|i| {
            let r = self.records[&i.name];
            (r.last_used.unwrap_or(r.first_seen), i.name.clone())
        });
        Ok(unused)
    }

    /// Deletes unused images, least recently used first, until `bytes_to_free` are freed
    /// (`u64::MAX`: every unused image).
    pub async fn collect(
        &mut self,
        runtime: &dyn ContainerRuntime,
        bytes_to_free: u64,
        min_age: Duration,
    ) -> anyhow::Result<Collected> {
        let mut done = Collected::default();
        for image in self.unused(runtime, min_age).await? {
            if done.freed_bytes >= bytes_to_free {
                break;
            }
            match runtime.remove_image(&image.name).await {
                Ok(()) => {
                    tracing::info!(image = %image.name, size = image.size, "image garbage collection removed an unused image");
                    self.records.remove(&image.name);
                    done.freed_bytes += image.size;
                    done.removed.push(image.name);
                }
                Err(e) => tracing::warn!(image = %image.name, "image garbage collection: {e}"),
            }
        }
        Ok(done)
    }
}

/// Bytes to free so the filesystem's usage drops to `low` percent, when it is above
/// `high` percent; 0 otherwise (and always with `high` 100, which turns collection off).
pub fn bytes_to_free(available: u64, capacity: u64, high: u8, low: u8) -> u64 {
    if capacity == 0 || high >= 100 {
        return 0;
    }
    let used = capacity.saturating_sub(available);
    let percent = used as f64 * 100.0 / capacity as f64;
    if percent <= f64::from(high) {
        return 0;
    }
    let target = (capacity as f64 * f64::from(low) / 100.0) as u64;
    used.saturating_sub(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_node_runtime::runtime::{ContainerConfig, FakeRuntime, ImageConfig, PullOptions};

    #[test]
    fn collection_starts_above_high_and_aims_for_low() {
        assert_eq!(bytes_to_free(20, 100, 85, 80), 0); // 80% used
        assert_eq!(bytes_to_free(10, 100, 85, 80), 10); // 90% used, down to 80
        assert_eq!(bytes_to_free(0, 100, 100, 80), 0);
        assert_eq!(bytes_to_free(0, 0, 85, 80), 0);
    }

    #[tokio::test]
    async fn unused_images_go_least_recently_used_first_and_used_ones_stay() {
        let rt = FakeRuntime::new();
        let mut gc = ImageGc::default();
        for name in ["old", "newer", "used"] {
            rt.add_registry_image(name, ImageConfig::default());
            rt.pull_image(name, &PullOptions::default()).await.unwrap();
            // each seen by a collection first at a later time than the one before
            assert!(!gc.unused(&rt, Duration::ZERO).await.unwrap().is_empty());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        rt.create_container(&ContainerConfig {
            pod_uid: "0b4f3c1e-8d2a-4e5f-9a6b-7c8d9e0f1a2b".into(),
            name: "c".into(),
            image: "used".into(),
            command: vec!["sleep".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        // too young for an hour's minimum age
        let done = gc
            .collect(&rt, u64::MAX, Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(done.removed.is_empty());
        let done = gc.collect(&rt, 1, Duration::ZERO).await.unwrap();
        assert_eq!(done.removed, ["docker.io/library/old:latest"]);
        let done = gc.collect(&rt, u64::MAX, Duration::ZERO).await.unwrap();
        assert_eq!(done.removed, ["docker.io/library/newer:latest"]);
        let left: Vec<_> = rt
            .list_images()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(left, ["docker.io/library/used:latest"]);
    }
}
