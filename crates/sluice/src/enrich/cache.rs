//! A persistent response cache: one entry per request, keyed by a hash of the request, in a
//! folder or under an object-store prefix (`s3://`, `gs://`, `az://`): a cluster's executors
//! share it either way.
//!
//! The key is the BLAKE3 hash of method, URL and body with secrets redacted (a rotated token
//! keeps the cache; nothing secret is stored). In a folder, an entry is written to a
//! temporary file and renamed into place; on an object store, it is one PUT (atomic on S3,
//! GCS and Azure). Readers and concurrent writers (other partitions, other executors, other
//! runs) never see half an entry, and its header carries a hash of the body, so an entry
//! damaged any other way is detected and fetched again. A job killed half-way keeps every
//! entry written before the kill: the re-run calls only the rest.
//!
//! A store that fails (unreachable, refusing the credentials) turns the cache off for the
//! rest of the run, with one warning: every key is then called, none waits on the store's
//! retries again, and the log does not get a line per key.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};
use crate::storage::stores::{
    build_store, get_object, is_remote, key_path, store_error, RemoteUrl, StorageOptions,
};

const MAGIC: &str = "sluice-cache-v1";

/// The cache of one enrich stage.
#[derive(Debug, Clone)]
pub struct Cache {
    place: Place,
    ttl: Option<Duration>,
}

/// Where a cache's entries are.
#[derive(Debug, Clone)]
enum Place {
    /// A folder: entries as files.
    Folder(PathBuf),
    /// An object store: entries as objects below the key of `url`; `off` once it failed.
    Store {
        url: Arc<RemoteUrl>,
        store: Arc<dyn ObjectStore>,
        off: Arc<AtomicBool>,
    },
}

impl Cache {
    /// Opens (creating) the cache folder.
    fn open(dir: &Path, ttl: Option<Duration>) -> Result<Cache> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        Ok(Cache {
            place: Place::Folder(dir.to_path_buf()),
            ttl,
        })
    }

    /// Opens the cache at `location`: an object-store URL (its store opened with `storage`)
    /// or a folder (relative to `base`).
    pub fn open_at(
        location: &str,
        base: &Path,
        storage: &StorageOptions,
        ttl: Option<Duration>,
    ) -> Result<Cache> {
        if !is_remote(location) {
            let dir = Path::new(location);
            return match dir.is_absolute() {
                true => Cache::open(dir, ttl),
                false => Cache::open(&base.join(dir), ttl),
            };
        }
        let url = RemoteUrl::parse(location.trim_end_matches('/'))?;
        Ok(Cache {
            place: Place::Store {
                store: build_store(&url, storage)?,
                url: Arc::new(url),
                off: Arc::new(AtomicBool::new(false)),
            },
            ttl,
        })
    }

    /// The key of a request (its parts with secrets already redacted).
    pub fn key(method: &str, url: &str, body: Option<&str>) -> String {
        let mut h = blake3::Hasher::new();
        h.update(method.as_bytes());
        h.update(b"\0");
        h.update(url.as_bytes());
        h.update(b"\0");
        if let Some(b) = body {
            h.update(b.as_bytes());
        }
        h.finalize().to_hex().to_string()
    }

    /// The entry's place below the cache's folder or prefix.
    fn relative(key: &str) -> String {
        format!("{}/{key}", &key[..2])
    }

    /// The entry's object below the cache's key, taken as written ([`key_path`]).
    fn object(url: &RemoteUrl, key: &str) -> Result<datafusion::object_store::path::Path> {
        let rel = Cache::relative(key);
        match url.key.is_empty() {
            true => key_path(url, &rel),
            false => key_path(url, &format!("{}/{rel}", url.key)),
        }
    }

    fn path(dir: &Path, key: &str) -> PathBuf {
        dir.join(Cache::relative(key))
    }

    /// The stored body for `key`, when present, whole and fresh (file reads on a blocking
    /// thread, off the async runtime).
    pub async fn load(&self, key: &str) -> Option<Vec<u8>> {
        match &self.place {
            Place::Folder(_) => {
                let (cache, key) = (self.clone(), key.to_string());
                crate::error::blocking(move || Ok(cache.get(&key)))
                    .await
                    .ok()
                    .flatten()
            }
            Place::Store { url, store, off } => {
                if off.load(Ordering::Relaxed) {
                    return None;
                }
                let got = match Cache::object(url, key) {
                    Ok(at) => get_object(store, &at, &url.store).await,
                    Err(e) => Err(e),
                };
                match got {
                    Ok(data) => self.body_of(&data?),
                    Err(e) => {
                        turn_off(off, &e);
                        None
                    }
                }
            }
        }
    }

    /// Stores `body` for `key` (whole or not at all).
    pub async fn store(&self, key: &str, body: Vec<u8>) -> Result<()> {
        match &self.place {
            Place::Folder(_) => {
                let (cache, key) = (self.clone(), key.to_string());
                crate::error::blocking(move || cache.put(&key, &body)).await
            }
            Place::Store { url, store, off } => {
                if off.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let put = match Cache::object(url, key) {
                    Ok(at) => store
                        .put(&at, PutPayload::from(entry(&body)))
                        .await
                        .map_err(|e| store_error(&url.store, e)),
                    Err(e) => Err(e),
                };
                if let Err(e) = put {
                    turn_off(off, &e);
                }
                Ok(())
            }
        }
    }

    /// The stored body for `key` in a cache folder (`None` on an object store: see
    /// [`Cache::load`]).
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let Place::Folder(dir) = &self.place else {
            return None;
        };
        let data = std::fs::read(Cache::path(dir, key)).ok()?;
        self.body_of(&data)
    }

    /// The body of a stored entry, when it is whole and fresh.
    fn body_of(&self, data: &[u8]) -> Option<Vec<u8>> {
        let nl = data.iter().position(|b| *b == b'\n')?;
        let header = std::str::from_utf8(&data[..nl]).ok()?;
        let body = &data[nl + 1..];
        let mut parts = header.split(' ');
        let (magic, stored, hash) = (parts.next()?, parts.next()?, parts.next()?);
        if magic != MAGIC || blake3::hash(body).to_hex().as_str() != hash {
            return None;
        }
        if let Some(ttl) = self.ttl {
            let stored: u64 = stored.parse().ok()?;
            let age = now_secs().saturating_sub(stored);
            if age > ttl.as_secs() {
                return None;
            }
        }
        Some(body.to_vec())
    }

    /// Stores `body` for `key` in a cache folder (atomically: temp file, then rename); on an
    /// object store, see [`Cache::store`].
    fn put(&self, key: &str, body: &[u8]) -> Result<()> {
        let Place::Folder(root) = &self.place else {
            return Err(Error::Config(
                "an object-store cache is written asynchronously (Cache::store)".into(),
            ));
        };
        let path = Cache::path(root, key);
        let dir = path.parent().unwrap_or(root);
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&entry(body))?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(path.display().to_string(), e)
        })
    }
}

/// Turns an object-store cache off after `error`, saying so once.
fn turn_off(off: &AtomicBool, error: &Error) {
    if !off.swap(true, Ordering::Relaxed) {
        tracing::warn!("enrich cache: {error}: the cache is off for the rest of this run");
    }
}

/// A stored entry: a header line (magic, when, the body's hash), then the body.
fn entry(body: &[u8]) -> Vec<u8> {
    let mut out = format!("{MAGIC} {} {}\n", now_secs(), blake3::hash(body).to_hex()).into_bytes();
    out.extend_from_slice(body);
    out
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_damage_and_ttl() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = Cache::open(dir.path(), None).expect("open");
        let key = Cache::key("GET", "http://h/m/1", None);
        assert_eq!(cache.get(&key), None);
        cache.put(&key, b"{\"a\":1}").expect("put");
        assert_eq!(cache.get(&key).as_deref(), Some(&b"{\"a\":1}"[..]));
        // A damaged entry is a miss.
        let path = Cache::path(dir.path(), &key);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] = b'X';
        std::fs::write(&path, bytes).expect("write");
        assert_eq!(cache.get(&key), None);
        // Different requests, different keys.
        assert_ne!(key, Cache::key("POST", "http://h/m/1", None));
        assert_ne!(
            Cache::key("POST", "http://h/m", Some("a")),
            Cache::key("POST", "http://h/m", Some("b"))
        );
        // An entry stored in 1970 is a miss under a TTL, a hit without one.
        let old = format!("{MAGIC} 1 {}\n1", blake3::hash(b"1").to_hex());
        std::fs::write(&path, old).expect("write");
        assert_eq!(cache.get(&key).as_deref(), Some(&b"1"[..]));
        let ttl = Cache::open(dir.path(), Some(Duration::from_secs(86400))).expect("open");
        assert_eq!(ttl.get(&key), None);
        ttl.put(&key, b"1").expect("put");
        assert_eq!(ttl.get(&key).as_deref(), Some(&b"1"[..]));
    }
}
