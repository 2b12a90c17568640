use std::io;
use std::path::PathBuf;

use crate::Revision;

/// Everything the store can answer instead of a result.
///
/// The first five are the answers the apiserver maps onto Kubernetes statuses (NotFound,
/// AlreadyExists, Conflict, Gone); the rest describe the data directory or the machine, and
/// their messages name the path and what the operator should do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key} not found")]
    NotFound { key: String },

    #[error("key {key} already exists")]
    AlreadyExists { key: String },

    #[error(
        "key {key} has been modified: the write expected revision {expected} but the current \
         revision is {actual}; read it again and retry with the current revision"
    )]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },

    /// The change log no longer holds the revisions a watch asked for (Kubernetes: Gone).
    #[error(
        "revision {requested} is too old: changes up to revision {compacted} have been \
         compacted; list again and watch from the revision the list returns"
    )]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },

    /// A paginated list asked to continue on a snapshot the store no longer holds
    /// (Kubernetes: Gone, "continue token too old").
    #[error(
        "the list snapshot at revision {requested} is no longer held (the store is at revision \
         {current}); start the list again without a continue token"
    )]
    Expired { requested: Revision, current: Revision },

    #[error(
        "data directory {} is locked by another rkube-apiserver ({}); stop it or choose another \
         --data-dir",
        path.display(),
        holder.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"))
    )]
    Locked { path: PathBuf, holder: Option<u32> },

    #[error(
        "data in {} is corrupt: {detail}; restore the directory from a backup, or move it aside \
         and start with an empty --data-dir",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },

    #[error(
        "{} is not an rkube store: {detail}; choose an empty directory or an existing rkube data \
         directory for --data-dir",
        path.display()
    )]
    Foreign { path: PathBuf, detail: String },

    #[error(
        "{} holds store format {found} but this rkube-apiserver reads format {supported}; run the \
         rkube version that wrote it, or choose another --data-dir",
        path.display()
    )]
    UnsupportedFormat {
        path: PathBuf,
        found: String,
        supported: u64,
    },

    #[error(
        "I/O error on {}: {source}; check that the disk is present, writable and not full",
        path.display()
    )]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the store is closed (rkube-apiserver is shutting down)")]
    Closed,

    /// The storage has no room for the write: the disk under the sled data directory, or
    /// etcd's space quota (its NOSPACE alarm). Nothing was acknowledged; reads and watches
    /// keep being served, and retrying is right once space has been freed.
    #[error("storage full: {what}; the write was refused. {remedy}")]
    StorageFull { what: String, remedy: String },

    /// etcd did not answer (down, unreachable, or without a quorum). Nothing was written
    /// unless `detail` says the outcome is unknown; reads keep being served from the cache.
    #[error(
        "storage unavailable: etcd at {endpoints} {detail}; check that a majority of etcd members \
         are up and reachable from this apiserver"
    )]
    Unavailable { endpoints: String, detail: String },

    /// etcd answered with an error that retrying will not fix (permissions, a request it
    /// refuses, a TLS or configuration mismatch).
    #[error("etcd at {endpoints} refused the request: {detail}")]
    Etcd { endpoints: String, detail: String },

    /// A value a layer above the backend transformed on write (for example encrypted)
    /// cannot be transformed back; `detail` names the key and what to do.
    #[error("{detail}")]
    Untransformable { key: String, detail: String },
}

impl StoreError {
    /// True for the answers Kubernetes calls Gone: the client must relist.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::Compacted { .. } | Self::Expired { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: path.into(),
            detail: detail.into(),
        }
    }

    pub fn is_storage_full(&self) -> bool {
        matches!(self, Self::StorageFull { .. })
    }

    /// True for the I/O errors of a full filesystem (ENOSPC) or an exhausted disk quota
    /// (EDQUOT): conditions that pass once space is freed, unlike a failing disk.
    pub(crate) fn is_no_space(e: &io::Error) -> bool {
        matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        ) || matches!(e.raw_os_error(), Some(28 | 122))
    }

    /// The sled backend's answer while the filesystem of `data_dir` is full.
    pub(crate) fn disk_full(data_dir: &std::path::Path, source: impl std::fmt::Display) -> StoreError {
        StoreError::StorageFull {
            what: format!(
                "no space left on the filesystem holding the data directory {} ({source})",
                data_dir.display()
            ),
            remedy: "Free space on that filesystem or grow it (rkube-apiserver --data-dir); writes \
                     resume by themselves once there is room, without a restart, and reads and \
                     watches keep working meanwhile"
                .to_string(),
        }
    }

    /// Maps an error from sled onto the store's vocabulary, naming the database path.
    pub(crate) fn from_sled(path: impl Into<PathBuf>, err: sled::Error) -> StoreError {
        let path = path.into();
        match err {
            sled::Error::Io(source) => StoreError::Io { path, source },
            sled::Error::Corruption { at, .. } => StoreError::Corrupt {
                path,
                detail: match at {
                    Some(at) => format!("sled found a corrupt record at {at:?}"),
                    None => "sled found a corrupt record".to_string(),
                },
            },
            // Unsupported, ReportableBug, CollectionNotFound: the files are not what this
            // build of sled can read.
            other => StoreError::Corrupt {
                path,
                detail: format!("sled cannot use the database: {other}"),
            },
        }
    }
}
