//! Secrets encrypted at rest (`--encryption-key-file`), the way Kubernetes'
//! `aesgcm` encryption provider does it: a [`Store`] layer between the
//! handlers and the backend that encrypts the value of every Secret written
//! and decrypts it when read, so nothing above it changes and nothing below
//! it (the sled files, backups of the data directory) holds Secret data in
//! the clear. Every other kind is stored as it was.
//!
//! A stored Secret is `k8s:enc:aesgcm:v1:key1:` + 12-byte random nonce +
//! AES-256-GCM ciphertext and tag, with the storage key as additional
//! authenticated data (a ciphertext copied under another name does not
//! decrypt). A plain protobuf value never starts with `k` (that would be a
//! proto2 group tag), so the prefix tells encrypted and plain values apart:
//! Secrets written before encryption was turned on still read, and are
//! encrypted when next written.
//!
//! The key file holds 32 random bytes, base64-encoded (as the `secret` of
//! Kubernetes' EncryptionConfiguration): `head -c 32 /dev/urandom | base64`.
//! Losing it loses the Secrets; keep a copy where the data directory's
//! backups are not.
//!
//! Several keys, one a line (`NAME:BASE64`, or `BASE64` named `keyN` by its
//! line), rotate it as Kubernetes' provider lists do: the first encrypts,
//! all decrypt. A value names the key it was written with; a Secret read
//! with another than the first is *stale*, and an update rewrites it even
//! when nothing else changed, so replacing every Secret moves them all to
//! the first key (the README gives the procedure).

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::Aes256Gcm;
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use rkube_store::{
    Event, KeyValue, ListResult, Op, Revision, Store, StoreError, StoreFuture, TxnResult, WatchItem,
    WatchStream,
};
use std::path::Path;
use std::sync::Arc;

/// What starts an encrypted value: provider and format version, then the
/// key's name and `:`.
pub const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:";
/// What any encrypted value starts with, whatever the provider or key.
const ANY_ENCRYPTED: &[u8] = b"k8s:enc:";
const NONCE_BYTES: usize = 12;
/// The storage prefix of the kinds that are encrypted (see `handlers::storage_prefix`).
const ENCRYPTED_PREFIXES: &[&str] = &["core/secrets/"];

/// The AES-256-GCM keys from `--encryption-key-file`, the first the one
/// that encrypts. Not `Debug`: they must never reach a log line.
#[derive(Clone)]
pub struct EncryptionKey(Arc<Vec<(String, Aes256Gcm)>>);

impl EncryptionKey {
    /// Reads the key file: one key a line, 32 bytes in base64, optionally
    /// named (`NAME:BASE64`); blank lines and `#` comments are skipped.
    /// Errors name the file and line and say how to make a good key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read --encryption-key-file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|why| {
            anyhow::anyhow!(
                "--encryption-key-file {}: {why}; each line must hold 32 random bytes in base64 \
                 (optionally `NAME:` first), made with `head -c 32 /dev/urandom | base64`",
                path.display()
            )
        })
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut keys: Vec<(String, Aes256Gcm)> = Vec::new();
        let lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        for (n, line) in lines.filter(|(_, l)| !l.is_empty() && !l.starts_with('#')) {
            let (name, b64) = match line.split_once(':') {
                Some((name, b64)) => (name.trim().to_string(), b64.trim()),
                None => (format!("key{}", keys.len() + 1), line),
            };
            let where_ = format!("line {n}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "{where_}: the key name {name:?} must be letters, digits, - or _"
                ));
            }
            if keys.iter().any(|(k, _)| *k == name) {
                return Err(format!("{where_}: a second key named {name:?}"));
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| format!("{where_}: the key is not base64 text"))?;
            if raw.len() != 32 {
                return Err(format!(
                    "{where_}: the key is {} bytes, AES-256 needs exactly 32",
                    raw.len()
                ));
            }
            let cipher =
                Aes256Gcm::new_from_slice(&raw).map_err(|_| format!("{where_}: the key is not 32 bytes"))?;
            keys.push((name, cipher));
        }
        if keys.is_empty() {
            return Err("the file holds no key".into());
        }
        Ok(EncryptionKey(Arc::new(keys)))
    }

    /// The key that encrypts: the first.
    fn primary(&self) -> &(String, Aes256Gcm) {
        &self.0[0]
    }
}

/// `Secret ns/name` for a storage key, for messages.
fn describe(key: &str) -> String {
    match key.strip_prefix("core/secrets/") {
        Some(rest) => format!("Secret {rest}"),
        None => format!("the object stored at {key}"),
    }
}

fn untransformable(key: &str, detail: String) -> StoreError {
    StoreError::Untransformable {
        key: key.to_string(),
        detail,
    }
}

/// The encrypting layer over a store. Without a key it still recognises
/// encrypted values, so that an apiserver started without its key file
/// answers with a clear error rather than garbage.
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    key: Option<EncryptionKey>,
}

impl EncryptedStore {
    pub fn new(inner: Arc<dyn Store>, key: Option<EncryptionKey>) -> Self {
        EncryptedStore { inner, key }
    }

    fn covers(key: &str) -> bool {
        ENCRYPTED_PREFIXES.iter().any(|p| key.starts_with(p))
    }

    fn encrypt(&self, key: &str, value: Bytes) -> Result<Bytes, StoreError> {
        let Some(keys) = self.key.as_ref().filter(|_| Self::covers(key)) else {
            return Ok(value);
        };
        let (name, cipher) = keys.primary();
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &value,
                    aad: key.as_bytes(),
                },
            )
            .map_err(|_| untransformable(key, format!("{} cannot be encrypted", describe(key))))?;
        let mut out =
            Vec::with_capacity(ENCRYPTED_PREFIX.len() + name.len() + 1 + NONCE_BYTES + sealed.len());
        out.extend_from_slice(ENCRYPTED_PREFIX);
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(Bytes::from(out))
    }

    fn decrypt_value(&self, key: &str, value: &Bytes) -> Result<Option<Bytes>, StoreError> {
        self.open(key, value).map(|o| o.map(|(plain, _)| plain))
    }

    /// The plain value of an encrypted one, and whether it was written
    /// with another key than the first; `None` for a value stored plain.
    fn open(&self, key: &str, value: &Bytes) -> Result<Option<(Bytes, bool)>, StoreError> {
        if !value.starts_with(ANY_ENCRYPTED) {
            return Ok(None); // stored before encryption was turned on
        }
        let named = value
            .strip_prefix(ENCRYPTED_PREFIX)
            .and_then(|rest| Some(rest.split_at(rest.iter().position(|b| *b == b':')?)));
        let Some((name, body)) = named else {
            let end = value.len().min(64);
            let head = String::from_utf8_lossy(&value[..end]);
            let provider = head.split(':').take(5).collect::<Vec<_>>().join(":");
            return Err(untransformable(
                key,
                format!(
                    "{} is encrypted with {provider}, which this apiserver does not know (it writes {}); \
                     start it with the configuration the value was written with",
                    describe(key),
                    String::from_utf8_lossy(ENCRYPTED_PREFIX).trim_end_matches(':'),
                ),
            ));
        };
        let body = &body[1..];
        let Some(keys) = &self.key else {
            return Err(untransformable(
                key,
                format!(
                    "{} is stored encrypted but this apiserver has no --encryption-key-file; \
                     restart it with the key file the Secret was written with",
                    describe(key)
                ),
            ));
        };
        let wrong_key = || {
            untransformable(
                key,
                format!(
                    "{} cannot be decrypted: the --encryption-key-file does not match the key it was \
                     encrypted with ({:?}; none of the file's keys opens it); restart the apiserver \
                     with a key file holding that key",
                    describe(key),
                    String::from_utf8_lossy(name)
                ),
            )
        };
        if body.len() < NONCE_BYTES {
            return Err(wrong_key());
        }
        let (nonce, sealed) = body.split_at(NONCE_BYTES);
        // the key it names first; then the others, in case it was renamed
        let mut order: Vec<usize> = (0..keys.0.len()).collect();
        order.sort_by_key(|i| keys.0[*i].0.as_bytes() != name);
        for i in order {
            let payload = Payload {
                msg: sealed,
                aad: key.as_bytes(),
            };
            if let Ok(plain) = keys.0[i].1.decrypt(aes_gcm::Nonce::from_slice(nonce), payload) {
                return Ok(Some((Bytes::from(plain), i != 0)));
            }
        }
        Err(wrong_key())
    }

    /// Whether the Secret stored at `key` is encrypted with another key
    /// than the first (or not at all while a key is given): an update then
    /// writes it again even if nothing changed, which is how rotation
    /// re-encrypts every Secret.
    pub fn stale(&self, key: &str) -> bool {
        if self.key.is_none() || !Self::covers(key) {
            return false;
        }
        match self.inner.get(key) {
            Some(kv) => !matches!(self.open(key, &kv.value), Ok(Some((_, false)))),
            None => false,
        }
    }

    fn decrypt(&self, mut kv: KeyValue) -> Result<KeyValue, StoreError> {
        if Self::covers(&kv.key) {
            if let Some(plain) = self.decrypt_value(&kv.key, &kv.value)? {
                kv.value = plain;
            }
        }
        Ok(kv)
    }

    fn decrypt_event(&self, ev: Event) -> Result<Event, StoreError> {
        Ok(Event {
            kind: ev.kind,
            kv: self.decrypt(ev.kv)?,
            prev: ev.prev.map(|p| self.decrypt(p)).transpose()?,
        })
    }
}

impl Store for EncryptedStore {
    /// A value that cannot be decrypted reads as absent here; the handlers
    /// use [`Store::try_get`], which says why.
    fn get(&self, key: &str) -> Option<KeyValue> {
        self.try_get(key).unwrap_or_else(|e| {
            tracing::warn!(key, "{e}");
            None
        })
    }

    fn try_get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).map(|kv| self.decrypt(kv)).transpose()
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at_revision: Option<Revision>,
    ) -> Result<ListResult, StoreError> {
        let mut page = self.inner.list(prefix, start_after, limit, at_revision)?;
        page.items = std::mem::take(&mut page.items)
            .into_iter()
            .map(|kv| self.decrypt(kv))
            .collect::<Result<_, _>>()?;
        Ok(page)
    }

    fn txn(&self, ops: Vec<Op>) -> StoreFuture<TxnResult> {
        let ops: Result<Vec<Op>, StoreError> = ops
            .into_iter()
            .map(|op| {
                Ok(match op {
                    Op::Create { key, value } => {
                        let value = self.encrypt(&key, value)?;
                        Op::Create { key, value }
                    }
                    Op::Put { key, value, expected } => {
                        let value = self.encrypt(&key, value)?;
                        Op::Put { key, value, expected }
                    }
                    delete @ Op::Delete { .. } => delete,
                })
            })
            .collect();
        let ops = match ops {
            Ok(ops) => ops,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let txn = self.inner.txn(ops);
        let this = EncryptedStore {
            inner: self.inner.clone(),
            key: self.key.clone(),
        };
        Box::pin(async move {
            let mut result = txn.await?;
            result.prev = std::mem::take(&mut result.prev)
                .into_iter()
                .map(|p| p.map(|kv| this.decrypt(kv)).transpose())
                .collect::<Result<_, _>>()?;
            Ok(result)
        })
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let inner = self.inner.watch(prefix, after)?;
        let this = EncryptedStore {
            inner: self.inner.clone(),
            key: self.key.clone(),
        };
        Ok(WatchStream::new(inner.map(move |item| match item {
            Ok(WatchItem::Event(ev)) => this.decrypt_event(ev).map(WatchItem::Event),
            other => other,
        })))
    }

    fn revision(&self) -> Revision {
        self.inner.revision()
    }

    fn sync(&self) -> StoreFuture<Revision> {
        self.inner.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> EncryptionKey {
        EncryptionKey::parse(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])).unwrap()
    }

    fn layer(k: Option<EncryptionKey>) -> EncryptedStore {
        // the inner store is not used by these tests
        struct Nothing;
        impl Store for Nothing {
            fn get(&self, _: &str) -> Option<KeyValue> {
                None
            }
            fn list(
                &self,
                _: &str,
                _: Option<&str>,
                _: usize,
                _: Option<Revision>,
            ) -> Result<ListResult, StoreError> {
                Err(StoreError::Closed)
            }
            fn txn(&self, _: Vec<Op>) -> StoreFuture<TxnResult> {
                Box::pin(async { Err(StoreError::Closed) })
            }
            fn watch(&self, _: &str, _: Revision) -> Result<WatchStream, StoreError> {
                Err(StoreError::Closed)
            }
            fn revision(&self) -> Revision {
                0
            }
        }
        EncryptedStore::new(Arc::new(Nothing), k)
    }

    #[test]
    fn key_file_format_is_checked() {
        assert!(EncryptionKey::parse("not base64!").is_err());
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        let err = EncryptionKey::parse(&short).err().unwrap();
        assert!(err.contains("16 bytes"), "{err}");
        assert!(EncryptionKey::parse(&format!(
            "  {}\n",
            base64::engine::general_purpose::STANDARD.encode([1u8; 32])
        ))
        .is_ok());
    }

    #[test]
    fn secrets_round_trip_and_other_kinds_stay_plain() {
        let s = layer(Some(key()));
        let k = "core/secrets/default/db";
        let sealed = s.encrypt(k, Bytes::from_static(b"hunter2")).unwrap();
        assert!(sealed.starts_with(ENCRYPTED_PREFIX));
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        // random nonce: the same value encrypts differently each time
        assert_ne!(sealed, s.encrypt(k, Bytes::from_static(b"hunter2")).unwrap());
        assert_eq!(
            s.decrypt_value(k, &sealed).unwrap().unwrap(),
            Bytes::from_static(b"hunter2")
        );
        let cm = "core/configmaps/default/db";
        assert_eq!(
            s.encrypt(cm, Bytes::from_static(b"x")).unwrap(),
            Bytes::from_static(b"x")
        );
        // plain values written before encryption read as they are
        assert!(s
            .decrypt_value(k, &Bytes::from_static(b"\x0a\x02hi"))
            .unwrap()
            .is_none());
        // a ciphertext copied under another name does not decrypt
        assert!(s.decrypt_value("core/secrets/default/other", &sealed).is_err());
    }

    #[test]
    fn several_keys_the_first_encrypts_all_decrypt() {
        let b64 = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        let k = "core/secrets/default/db";
        let old = layer(Some(key()));
        let sealed_old = old.encrypt(k, Bytes::from_static(b"v")).unwrap();
        assert!(sealed_old.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
        // the new key first, under a name; the old one second (renamed: still found)
        let both = EncryptionKey::parse(&format!("# rotation\nnew:{}\n\nold:{}\n", b64(9), b64(7))).unwrap();
        let s = layer(Some(both));
        let sealed_new = s.encrypt(k, Bytes::from_static(b"v")).unwrap();
        assert!(sealed_new.starts_with(b"k8s:enc:aesgcm:v1:new:"));
        assert_eq!(
            s.open(k, &sealed_old).unwrap().unwrap(),
            (Bytes::from_static(b"v"), true)
        );
        assert_eq!(
            s.open(k, &sealed_new).unwrap().unwrap(),
            (Bytes::from_static(b"v"), false)
        );
        // bare keys are named by their place
        let bare = EncryptionKey::parse(&format!("{}\n{}\n", b64(1), b64(2))).unwrap();
        let names: Vec<&str> = bare.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["key1", "key2"]);
        for (text, why) in [
            ("", "holds no key"),
            (
                &format!("a:{}\na:{}", b64(1), b64(2)) as &str,
                "line 2: a second key named \"a\"",
            ),
            (&format!("bad name:{}", b64(1)), "line 1: the key name"),
        ] {
            let err = EncryptionKey::parse(text).err().unwrap();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn wrong_or_missing_key_is_a_clear_error() {
        let k = "core/secrets/prod/db";
        let sealed = layer(Some(key()))
            .encrypt(k, Bytes::from_static(b"hunter2"))
            .unwrap();
        let other =
            EncryptionKey::parse(&base64::engine::general_purpose::STANDARD.encode([8u8; 32])).unwrap();
        let err = layer(Some(other))
            .decrypt_value(k, &sealed)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Secret prod/db") && err.contains("does not match"),
            "{err}"
        );
        let err = layer(None).decrypt_value(k, &sealed).unwrap_err().to_string();
        assert!(
            err.contains("Secret prod/db") && err.contains("no --encryption-key-file"),
            "{err}"
        );
    }
}
