//! Line numbers of rejected rows in files read as byte ranges.
//!
//! A range knows its byte offsets, not its line numbers: the line of a bad row is the
//! number of line breaks before it in the file. Counting them is left to the error path
//! (clean data pays nothing), and [`LineIndex`] makes that count once per file: the ranges
//! of a file share the points already counted, and one range at a time extends them, so a
//! file split into many ranges, each with a bad row, is read for line breaks about once
//! (rather than once from byte 0 per range).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use datafusion::object_store::path::Path;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};

/// Bytes counted per read.
const CHUNK: u64 = 1 << 20;

/// Line breaks counted before offsets of one file (offset -> count), one counter at a time.
type Points = Arc<tokio::sync::Mutex<BTreeMap<u64, u64>>>;

/// Known line-break counts at offsets of each file, shared by the ranges being read.
#[derive(Debug, Default)]
pub struct LineIndex {
    files: Mutex<HashMap<String, Points>>,
}

impl LineIndex {
    /// Line breaks (`\n`) in bytes `0..offset` of `location` in `store`; `key` names the
    /// file among the index's files. Counting starts at the nearest point counted before,
    /// and only one caller per file counts at a time (the others then start where it got).
    pub async fn lines_before(
        &self,
        store: &Arc<dyn ObjectStore>,
        location: &Path,
        key: &str,
        offset: u64,
    ) -> datafusion::object_store::Result<u64> {
        let file = match self.files.lock() {
            Ok(mut files) => Arc::clone(files.entry(key.to_string()).or_default()),
            // A poisoned map: count alone, from the start.
            Err(_) => Arc::default(),
        };
        let mut points = file.lock().await;
        let (at, lines) = points
            .range(..=offset)
            .next_back()
            .map_or((0, 0), |(o, l)| (*o, *l));
        count(store, location, (at, lines), offset, |end, lines| {
            points.insert(end, lines);
        })
        .await
    }
}

/// The line counter of one range: asks the shared index once, then counts on from there
/// (rows arrive in offset order within a range).
#[derive(Debug, Default)]
pub struct RangeLines {
    at: Option<(u64, u64)>,
}

impl RangeLines {
    /// Line breaks before `offset` (see [`LineIndex::lines_before`]).
    pub async fn lines_before(
        &mut self,
        index: &LineIndex,
        store: &Arc<dyn ObjectStore>,
        location: &Path,
        key: &str,
        offset: u64,
    ) -> datafusion::object_store::Result<u64> {
        let lines = match self.at {
            Some(from) if from.0 <= offset => {
                count(store, location, from, offset, |_, _| {}).await?
            }
            _ => index.lines_before(store, location, key, offset).await?,
        };
        self.at = Some((offset, lines));
        Ok(lines)
    }
}

/// Line breaks before `offset`, counted on from `(at, lines)` (an offset and the breaks
/// before it) a chunk at a time; `each` sees every chunk's end and the count there.
async fn count(
    store: &Arc<dyn ObjectStore>,
    location: &Path,
    (mut at, mut lines): (u64, u64),
    offset: u64,
    mut each: impl FnMut(u64, u64),
) -> datafusion::object_store::Result<u64> {
    while at < offset {
        let to = (at + CHUNK).min(offset);
        let bytes = store.get_range(location, at..to).await?;
        lines += memchr::memchr_iter(b'\n', &bytes).count() as u64;
        at = to;
        each(at, lines);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::counting::{CountingStore, ReadCounter};
    use datafusion::object_store::memory::InMemory;
    use datafusion::object_store::{ObjectStoreExt, PutPayload};
    use std::sync::atomic::Ordering;

    /// A 10 MiB file of lines of varying length, in a store that counts what is read.
    async fn setup() -> (Arc<dyn ObjectStore>, Arc<ReadCounter>, Vec<u8>, Path) {
        let mut text = Vec::new();
        let mut i = 0u64;
        while text.len() < 10 << 20 {
            text.extend(std::iter::repeat_n(b'x', (i % 97) as usize));
            text.push(b'\n');
            i += 1;
        }
        let inner = InMemory::new();
        let path = Path::from("big.csv");
        inner
            .put(&path, PutPayload::from(text.clone()))
            .await
            .expect("put");
        let counter = Arc::new(ReadCounter::default());
        let store: Arc<dyn ObjectStore> =
            Arc::new(CountingStore::new(Arc::new(inner), Arc::clone(&counter)));
        (store, counter, text, path)
    }

    fn truth(text: &[u8], offset: u64) -> u64 {
        text[..offset as usize]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64
    }

    // regression: every range with a bad row counted line breaks from byte 0 on its own, so
    // a file cut into N ranges was read about N/2 times over on the error path.
    #[tokio::test]
    async fn ranges_of_a_file_count_its_line_breaks_about_once() {
        let (store, counter, text, path) = setup().await;
        let index = LineIndex::default();
        let size = text.len() as u64;
        // Ten ranges, visited out of order, each asking for a few bad rows' lines.
        let mut asked = 0u64;
        for k in [9u64, 3, 7, 0, 5, 1, 8, 2, 6, 4] {
            let start = size * k / 10;
            let mut range = RangeLines::default();
            for extra in [17u64, 5_000, 60_000] {
                let offset = (start + extra).min(size);
                let got = range
                    .lines_before(&index, &store, &path, "big.csv", offset)
                    .await
                    .expect("count");
                assert_eq!(got, truth(&text, offset), "offset {offset}");
                asked += 1;
            }
        }
        assert_eq!(asked, 30);
        let read = counter.bytes.load(Ordering::Relaxed);
        // Once over the file, plus at most a chunk per range and the in-range steps.
        assert!(
            read <= size + 10 * (CHUNK + 60_000),
            "{read} bytes read for a {size}-byte file"
        );
    }

    #[tokio::test]
    async fn concurrent_ranges_share_the_count() {
        let (store, counter, text, path) = setup().await;
        let index = Arc::new(LineIndex::default());
        let size = text.len() as u64;
        let tasks: Vec<_> = (0..8u64)
            .map(|k| {
                let (index, store, path) = (Arc::clone(&index), Arc::clone(&store), path.clone());
                tokio::spawn(async move {
                    let offset = size * (k + 1) / 9;
                    let got = index
                        .lines_before(&store, &path, "big.csv", offset)
                        .await
                        .expect("count");
                    (offset, got)
                })
            })
            .collect();
        for t in tasks {
            let (offset, got) = t.await.expect("join");
            assert_eq!(got, truth(&text, offset));
        }
        let read = counter.bytes.load(Ordering::Relaxed);
        assert!(
            read <= size + 8 * CHUNK,
            "{read} bytes read for a {size}-byte file"
        );
    }
}
