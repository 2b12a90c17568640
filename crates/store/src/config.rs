use std::path::PathBuf;
use std::time::Duration;

/// How to open a [`SledStore`](crate::SledStore). Build it with [`StoreConfig::new`] and
/// change the fields that matter; the defaults suit a single control-plane machine.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The data directory. Created if missing; must be empty or an rkube store.
    pub path: PathBuf,
    /// sled's page cache. Small: the in-memory index already serves every read, so the cache
    /// only needs to hold the tree's inner pages and the log tail that watchers replay.
    pub cache_bytes: u64,
    /// How many revisions of change log to keep for watches that resume from an old
    /// revision. Older entries are compacted away and such watches answer Gone.
    pub history: u64,
    /// How often the writer checks whether the log has outgrown `history`. It also compacts
    /// as soon as the log exceeds `history` by 10%.
    pub compaction_interval: Duration,
    /// How long a watch may stay silent before it yields a progress item carrying the
    /// current revision (a Kubernetes bookmark).
    pub progress_interval: Duration,
    /// Committed batches buffered per watcher before it lags. A lagging watcher is not
    /// lost: it catches up from the persisted log. Tests set this tiny to force that path.
    pub watch_buffer: usize,
    /// Most transactions committed by one fsync.
    pub max_group: usize,
    /// How many list snapshots to hold for paginated lists (continue tokens).
    pub list_snapshots: usize,
    /// How long an unused list snapshot is held.
    pub list_snapshot_ttl: Duration,
    /// Space the data directory's filesystem must keep free after a write: below it writes
    /// are refused with StorageFull (reads and watches go on) until space is freed, so sled
    /// itself never meets a full disk in the middle of a write. 0 turns the check off (sled
    /// then meets the full disk, and the store reopens its database once there is room).
    pub min_free_bytes: u64,
}

impl StoreConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreConfig {
            path: path.into(),
            cache_bytes: 16 * 1024 * 1024,
            history: 100_000,
            compaction_interval: Duration::from_secs(60),
            progress_interval: Duration::from_secs(1),
            watch_buffer: 1024,
            max_group: 1024,
            list_snapshots: 32,
            list_snapshot_ttl: Duration::from_secs(5 * 60),
            min_free_bytes: 16 * 1024 * 1024,
        }
    }
}
