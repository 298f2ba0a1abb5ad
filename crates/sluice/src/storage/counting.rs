//! An object store wrapper that counts the bytes the scans fetch, for live progress.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use futures::stream::BoxStream;

/// Bytes fetched so far, in total and per object.
#[derive(Debug, Default)]
pub struct ReadCounter {
    /// Total bytes fetched.
    pub bytes: AtomicU64,
    per_file: Mutex<HashMap<Path, u64>>,
}

impl ReadCounter {
    fn add(&self, location: &Path, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        if let Ok(mut map) = self.per_file.lock() {
            *map.entry(location.clone()).or_default() += n;
        }
    }

    /// Objects of which at least `sizes[path]` bytes have been fetched.
    pub fn files_done(&self, sizes: &HashMap<Path, u64>) -> u64 {
        let Ok(map) = self.per_file.lock() else {
            return 0;
        };
        map.iter()
            .filter(|(p, n)| sizes.get(*p).is_some_and(|size| **n >= *size))
            .count() as u64
    }

    /// Bytes fetched so far from one object.
    pub fn bytes_of(&self, location: &Path) -> u64 {
        self.per_file
            .lock()
            .ok()
            .and_then(|m| m.get(location).copied())
            .unwrap_or(0)
    }

    /// Forgets what was counted (after schema sampling, before the scan).
    pub fn reset(&self) {
        self.bytes.store(0, Ordering::Relaxed);
        if let Ok(mut map) = self.per_file.lock() {
            map.clear();
        }
    }
}

/// Wraps a store and counts the bytes of every read.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    counter: Arc<ReadCounter>,
}

impl CountingStore {
    /// Wraps `inner`, counting into `counter`.
    pub fn new(inner: Arc<dyn ObjectStore>, counter: Arc<ReadCounter>) -> Self {
        CountingStore { inner, counter }
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let result = self.inner.get_opts(location, options).await?;
        self.counter.add(
            location,
            result.range.end.saturating_sub(result.range.start),
        );
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        let result = self.inner.get_ranges(location, ranges).await?;
        self.counter
            .add(location, result.iter().map(|b| b.len() as u64).sum());
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
