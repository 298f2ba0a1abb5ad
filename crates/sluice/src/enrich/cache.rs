//! A persistent response cache: one file per request, keyed by a hash of the request.
//!
//! The key is the BLAKE3 hash of method, URL and body with secrets redacted (a rotated token
//! keeps the cache; nothing secret is stored). An entry is written to a temporary file and
//! renamed into place, so readers and concurrent writers (other partitions, other runs)
//! never see half an entry; its header carries a hash of the body, so an entry damaged any
//! other way is detected and fetched again. A job killed half-way keeps every entry written
//! before the kill: the re-run calls only the rest.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

const MAGIC: &str = "sluice-cache-v1";

/// The cache folder of one enrich stage.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    ttl: Option<Duration>,
}

impl Cache {
    /// Opens (creating) the cache folder.
    pub fn open(dir: &Path, ttl: Option<Duration>) -> Result<Cache> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        Ok(Cache {
            dir: dir.to_path_buf(),
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

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(key)
    }

    /// [`Cache::get`] on a blocking thread (file reads stay off the async runtime).
    pub async fn load(&self, key: &str) -> Option<Vec<u8>> {
        let (cache, key) = (self.clone(), key.to_string());
        crate::error::blocking(move || Ok(cache.get(&key)))
            .await
            .ok()
            .flatten()
    }

    /// [`Cache::put`] on a blocking thread.
    pub async fn store(&self, key: &str, body: Vec<u8>) -> Result<()> {
        let (cache, key) = (self.clone(), key.to_string());
        crate::error::blocking(move || cache.put(&key, &body)).await
    }

    /// The stored body for `key`, when present, whole and fresh.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let data = std::fs::read(self.path(key)).ok()?;
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

    /// Stores `body` for `key` (atomically: temp file, then rename).
    pub fn put(&self, key: &str, body: &[u8]) -> Result<()> {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{MAGIC} {} {}", now_secs(), blake3::hash(body).to_hex())?;
            f.write_all(body)?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(path.display().to_string(), e)
        })
    }
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
        let path = cache.path(&key);
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
