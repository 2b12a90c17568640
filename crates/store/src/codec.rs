//! How records and change-log entries are laid out in sled's single key space.
//!
//! * `k/<key>` → create_revision (u64 BE), mod_revision (u64 BE), value bytes
//! * `l/<revision u64 BE>` → every event of the transaction that made that revision
//! * `m/rev` → the last committed revision; `m/compacted` → log entries at or below it are gone;
//!   `m/format` → the store format (also in the directory's marker)
//!
//! Integers are big-endian so that sled's byte order is revision order.

use bytes::Bytes;

use crate::{Event, EventKind, KeyValue, Revision};

pub(crate) const RECORD_PREFIX: &[u8] = b"k/";
pub(crate) const LOG_PREFIX: &[u8] = b"l/";
pub(crate) const META_REVISION: &[u8] = b"m/rev";
pub(crate) const META_COMPACTED: &[u8] = b"m/compacted";
/// The store format, written when the database is initialised. Its absence in a directory
/// whose marker says it was initialised means sled lost the data.
pub(crate) const META_FORMAT: &[u8] = b"m/format";

/// First byte of every log entry, so the entry layout can evolve within one store format.
const LOG_ENTRY_VERSION: u8 = 1;
const KIND_PUT: u8 = 0;
const KIND_DELETE: u8 = 1;

pub(crate) fn record_key(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_PREFIX.len() + key.len());
    out.extend_from_slice(RECORD_PREFIX);
    out.extend_from_slice(key.as_bytes());
    out
}

pub(crate) fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_be_bytes());
    out.extend_from_slice(&kv.mod_revision.to_be_bytes());
    out.extend_from_slice(&kv.value);
    out
}

/// Decodes a `k/` record; the error text names the key for the Corrupt message.
pub(crate) fn decode_record(db_key: &[u8], value: &[u8]) -> Result<KeyValue, String> {
    let key = db_key
        .strip_prefix(RECORD_PREFIX)
        .ok_or_else(|| format!("record key {db_key:?} lacks the k/ prefix"))?;
    let key = std::str::from_utf8(key)
        .map_err(|_| format!("record key {:?} is not UTF-8", String::from_utf8_lossy(key)))?;
    if value.len() < 16 {
        return Err(format!(
            "record for key {key} is {} bytes, shorter than its 16-byte header",
            value.len()
        ));
    }
    let (create, rest) = value.split_at(8);
    let (modified, body) = rest.split_at(8);
    Ok(KeyValue {
        key: key.to_string(),
        value: Bytes::copy_from_slice(body),
        create_revision: u64::from_be_bytes(create.try_into().expect("8 bytes")),
        mod_revision: u64::from_be_bytes(modified.try_into().expect("8 bytes")),
    })
}

pub(crate) fn log_key(revision: Revision) -> [u8; 10] {
    let mut out = [0u8; 10];
    out[..2].copy_from_slice(LOG_PREFIX);
    out[2..].copy_from_slice(&revision.to_be_bytes());
    out
}

pub(crate) fn log_revision(db_key: &[u8]) -> Result<Revision, String> {
    db_key
        .strip_prefix(LOG_PREFIX)
        .and_then(|rest| <[u8; 8]>::try_from(rest).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| format!("log key {db_key:?} is not l/ followed by 8 bytes"))
}

pub(crate) fn encode_u64(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

pub(crate) fn decode_u64(name: &str, value: &[u8]) -> Result<u64, String> {
    <[u8; 8]>::try_from(value)
        .map(u64::from_be_bytes)
        .map_err(|_| format!("{name} is {} bytes, expected 8", value.len()))
}

/// A log entry stores, per event: kind, key, and for a put the new value and its
/// create_revision; then the previous value with its revisions, if there was one. A
/// delete's event value is its previous value, so it is not stored twice.
pub(crate) fn encode_log_entry(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        5 + events
            .iter()
            .map(|e| 40 + 2 * e.kv.key.len() + e.kv.value.len())
            .sum::<usize>(),
    );
    out.push(LOG_ENTRY_VERSION);
    put_u32(&mut out, events.len());
    for event in events {
        match event.kind {
            EventKind::Put => {
                out.push(KIND_PUT);
                put_bytes(&mut out, event.kv.key.as_bytes());
                out.extend_from_slice(&event.kv.create_revision.to_be_bytes());
                put_bytes(&mut out, &event.kv.value);
            }
            EventKind::Delete => {
                out.push(KIND_DELETE);
                put_bytes(&mut out, event.kv.key.as_bytes());
            }
        }
        match &event.prev {
            None => out.push(0),
            Some(prev) => {
                out.push(1);
                out.extend_from_slice(&prev.create_revision.to_be_bytes());
                out.extend_from_slice(&prev.mod_revision.to_be_bytes());
                put_bytes(&mut out, &prev.value);
            }
        }
    }
    out
}

pub(crate) fn decode_log_entry(revision: Revision, data: &[u8]) -> Result<Vec<Event>, String> {
    let mut r = Reader { data, at: 0 };
    let fail = |what: &str| format!("log entry for revision {revision}: {what}");
    let version = r.u8().ok_or_else(|| fail("empty"))?;
    if version != LOG_ENTRY_VERSION {
        return Err(fail(&format!("unknown entry version {version}")));
    }
    let count = r.u32().ok_or_else(|| fail("truncated event count"))?;
    let mut events = Vec::with_capacity(count.min(4096) as usize);
    for _ in 0..count {
        let kind = r.u8().ok_or_else(|| fail("truncated event kind"))?;
        let key = r.bytes().ok_or_else(|| fail("truncated key"))?;
        let key = String::from_utf8(key.to_vec()).map_err(|_| fail("key is not UTF-8"))?;
        let put = match kind {
            KIND_PUT => {
                let create = r.u64().ok_or_else(|| fail("truncated create revision"))?;
                let value = r.bytes().ok_or_else(|| fail("truncated value"))?;
                Some((create, Bytes::copy_from_slice(value)))
            }
            KIND_DELETE => None,
            other => return Err(fail(&format!("unknown event kind {other}"))),
        };
        let prev = match r.u8().ok_or_else(|| fail("truncated previous-value flag"))? {
            0 => None,
            1 => {
                let create = r.u64().ok_or_else(|| fail("truncated previous revision"))?;
                let modified = r.u64().ok_or_else(|| fail("truncated previous revision"))?;
                let value = r.bytes().ok_or_else(|| fail("truncated previous value"))?;
                Some(KeyValue {
                    key: key.clone(),
                    value: Bytes::copy_from_slice(value),
                    create_revision: create,
                    mod_revision: modified,
                })
            }
            other => return Err(fail(&format!("bad previous-value flag {other}"))),
        };
        let event = match put {
            Some((create_revision, value)) => Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key,
                    value,
                    create_revision,
                    mod_revision: revision,
                },
                prev,
            },
            None => {
                let deleted = prev
                    .clone()
                    .ok_or_else(|| fail("delete event without the deleted value"))?;
                Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        mod_revision: revision,
                        ..deleted
                    },
                    prev,
                }
            }
        };
        events.push(event);
    }
    if r.at != data.len() {
        return Err(fail("trailing bytes"));
    }
    Ok(events)
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Keys and values are bounded far below 4 GiB by the apiserver's request size limit.
    let n = u32::try_from(n).expect("length fits in u32");
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.data.get(self.at..end)?;
        self.at = end;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, create: u64, modified: u64) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Bytes::from(value.to_string()),
            create_revision: create,
            mod_revision: modified,
        }
    }

    #[test]
    fn record_round_trips() {
        let original = kv("pods/default/web", "{\"a\":1}", 3, 9);
        let decoded = decode_record(&record_key(&original.key), &encode_record(&original)).unwrap();
        assert_eq!(decoded, original);
    }

    #[test]
    fn short_record_is_reported_with_its_key() {
        let err = decode_record(b"k/pods/x", b"short").unwrap_err();
        assert!(err.contains("pods/x"), "{err}");
    }

    #[test]
    fn log_entry_round_trips_puts_and_deletes() {
        let events = vec![
            Event {
                kind: EventKind::Put,
                kv: kv("a", "new", 7, 12),
                prev: Some(kv("a", "old", 7, 10)),
            },
            Event {
                kind: EventKind::Put,
                kv: kv("b", "first", 12, 12),
                prev: None,
            },
            Event {
                kind: EventKind::Delete,
                kv: kv("c", "gone", 4, 12),
                prev: Some(kv("c", "gone", 4, 8)),
            },
        ];
        let decoded = decode_log_entry(12, &encode_log_entry(&events)).unwrap();
        assert_eq!(decoded.len(), 3);
        for (d, e) in decoded.iter().zip(&events) {
            assert_eq!(d.kind, e.kind);
            assert_eq!(d.kv, e.kv);
            assert_eq!(d.prev, e.prev);
        }
    }

    #[test]
    fn truncated_log_entry_is_an_error_not_a_panic() {
        let events = vec![Event {
            kind: EventKind::Put,
            kv: kv("a", "value", 1, 1),
            prev: None,
        }];
        let encoded = encode_log_entry(&events);
        for cut in 0..encoded.len() {
            assert!(decode_log_entry(1, &encoded[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn log_keys_sort_by_revision() {
        assert!(log_key(255) < log_key(256));
        assert_eq!(log_revision(&log_key(42)).unwrap(), 42);
    }
}
