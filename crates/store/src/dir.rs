//! The data directory: who may use it (the lock) and what it holds (the format marker).
//!
//! Layout: `LOCK` (flock'ed, holds the owner's pid), `rkube-store.json` (`{"format": 1}`),
//! `db/` (sled's files).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::StoreError;

pub(crate) const LOCK_FILE: &str = "LOCK";
pub(crate) const MARKER_FILE: &str = "rkube-store.json";
const MARKER_TMP: &str = "rkube-store.json.tmp";
pub(crate) const DB_DIR: &str = "db";
/// The on-disk layout this build reads and writes. Bump it when the record or log encoding
/// changes incompatibly.
pub(crate) const FORMAT: u64 = 1;

/// An exclusive flock on `DIR/LOCK`, released when the file is closed (dropped), including
/// when the process dies. flock belongs to the open file description, so a second open in
/// the same process is refused too.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Takes the directory for this process: refuses a directory that holds something else and
/// locks it. Returns whether the directory is an initialised store (has the marker); if
/// not, the caller initialises the database and then calls [`write_marker`], so that a
/// marker always means "sled holds an rkube store here".
pub(crate) fn prepare(dir: &Path) -> Result<(DirLock, bool), StoreError> {
    if dir.exists() && !dir.is_dir() {
        return Err(StoreError::Foreign {
            path: dir.to_path_buf(),
            detail: "it is a file, not a directory".to_string(),
        });
    }
    fs::create_dir_all(dir).map_err(StoreError::io(dir))?;

    // Check before creating LOCK, so that pointing --data-dir at the wrong directory leaves
    // no trace in it.
    if read_marker(dir)?.is_none() {
        refuse_if_not_empty(dir)?;
    }

    let lock = lock(dir)?;

    // Another process may have initialised the directory between the check and the lock.
    let initialised = match read_marker(dir)? {
        Some(format) => {
            check_format(dir, format)?;
            true
        }
        None => {
            refuse_if_not_empty(dir)?;
            false
        }
    };
    Ok((lock, initialised))
}

fn lock(dir: &Path) -> Result<DirLock, StoreError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(StoreError::io(&path))?;
    // Fully qualified: std's inherent File::try_lock (Rust 1.89+) would shadow fs4's method.
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => {}
        Err(fs4::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let holder = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(StoreError::Locked {
                path: dir.to_path_buf(),
                holder,
            });
        }
        Err(fs4::TryLockError::Error(source)) => return Err(StoreError::Io { path, source }),
    }
    // The pid is only for the message a second opener prints; it is not fsynced.
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .map_err(StoreError::io(&path))?;
    Ok(DirLock { _file: file })
}

fn refuse_if_not_empty(dir: &Path) -> Result<(), StoreError> {
    let mut foreign = Vec::new();
    for entry in fs::read_dir(dir).map_err(StoreError::io(dir))? {
        let entry = entry.map_err(StoreError::io(dir))?;
        let name = entry.file_name();
        // LOCK, db/ and the marker's temporary file are ours, left by a first open that
        // died before it wrote the marker.
        if name != LOCK_FILE && name != MARKER_TMP && name != DB_DIR {
            foreign.push(name.to_string_lossy().into_owned());
        }
    }
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    let shown: Vec<_> = foreign.iter().take(5).map(String::as_str).collect();
    Err(StoreError::Foreign {
        path: dir.to_path_buf(),
        detail: format!(
            "it is not empty ({}{}) and has no {MARKER_FILE}",
            shown.join(", "),
            if foreign.len() > shown.len() { ", ..." } else { "" }
        ),
    })
}

/// The marker's `format` value, or None when there is no marker.
fn read_marker(dir: &Path) -> Result<Option<serde_json::Value>, StoreError> {
    let path = dir.join(MARKER_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::Io { path, source: e }),
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| StoreError::corrupt(&path, format!("the format marker is not valid JSON: {e}")))?;
    match value.get("format") {
        Some(format) => Ok(Some(format.clone())),
        None => Err(StoreError::corrupt(
            &path,
            "the format marker has no \"format\" field",
        )),
    }
}

fn check_format(dir: &Path, format: serde_json::Value) -> Result<(), StoreError> {
    if format.as_u64() == Some(FORMAT) {
        return Ok(());
    }
    Err(StoreError::UnsupportedFormat {
        path: dir.to_path_buf(),
        found: format.to_string(),
        supported: FORMAT,
    })
}

/// Written through a temporary file and a rename, then the directory is synced, so a crash
/// leaves either no marker or a complete one.
pub(crate) fn write_marker(dir: &Path) -> Result<(), StoreError> {
    let tmp = dir.join(MARKER_TMP);
    let path = dir.join(MARKER_FILE);
    let body = format!("{{\"format\": {FORMAT}}}\n");
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(body.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(StoreError::io(&path))
}

pub(crate) fn db_path(dir: &Path) -> PathBuf {
    dir.join(DB_DIR)
}
