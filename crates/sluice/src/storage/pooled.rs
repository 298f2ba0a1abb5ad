//! Ranged reads into recycled buffers.
//!
//! object_store reads a range of a local file into a new buffer that it first fills with
//! zeros: for every 1 MiB read the allocator may map fresh pages, the kernel clears them
//! and the zeros are then overwritten. Here a read of a local file goes into a buffer from a
//! small pool, and the buffer goes back to the pool when the last [`Bytes`] slice of it is
//! dropped. Measured on a GROUP BY over 32 CSV files: page faults 17.6k -> 10.5k and peak
//! memory 128 -> 102 MiB; wall time no different within this machine's noise (a first
//! profile, taken on a noisy moment, had put page clearing at 13% of the CPU). The file is opened
//! by the store itself (`get_opts`, so wrappers such as the counting store still see the
//! read); other stores' results are collected as before.

use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;
use datafusion::object_store::path::Path;
use datafusion::object_store::{GetOptions, GetRange, GetResult, GetResultPayload, ObjectStore};

/// Buffers kept for reuse, at most (16 reads of 1 MiB).
const POOL_BUFFERS: usize = 16;

/// Reads shorter than this take a buffer of their own.
const POOLED_MIN: usize = 64 << 10;

/// Buffers back from finished reads.
static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A pooled buffer holding `len` bytes read; back to the pool when dropped.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if let Ok(mut pool) = POOL.lock() {
            if pool.len() < POOL_BUFFERS {
                pool.push(buf);
            }
        }
    }
}

/// A buffer of at least `len` bytes, from the pool when one is there.
fn buffer(len: usize) -> Vec<u8> {
    let reused = POOL.lock().ok().and_then(|mut pool| {
        let i = pool.iter().position(|b| b.len() >= len)?;
        Some(pool.swap_remove(i))
    });
    reused.unwrap_or_else(|| vec![0; len])
}

/// The bytes of `range` of `location` (as `ObjectStoreExt::get_range`), a local file's read
/// into a pooled buffer.
pub async fn get_range(
    store: &dyn ObjectStore,
    location: &Path,
    range: Range<u64>,
) -> datafusion::object_store::Result<Bytes> {
    let options = GetOptions {
        range: Some(GetRange::Bounded(range)),
        ..GetOptions::default()
    };
    let GetResult {
        payload,
        meta,
        range,
        attributes,
    } = store.get_opts(location, options).await?;
    match payload {
        GetResultPayload::File(file, path) => {
            tokio::task::spawn_blocking(move || read_file(&file, &path, range).map_err(local))
                .await
                .map_err(local)?
        }
        payload => {
            GetResult {
                payload,
                meta,
                range,
                attributes,
            }
            .bytes()
            .await
        }
    }
}

/// An error of a local read, as the local store reports its own.
fn local(
    source: impl std::error::Error + Send + Sync + 'static,
) -> datafusion::object_store::Error {
    datafusion::object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(source),
    }
}

/// Reads `range` of `file` (at `path`, for the error).
fn read_file(
    file: &std::fs::File,
    path: &std::path::Path,
    range: Range<u64>,
) -> std::io::Result<Bytes> {
    let len = usize::try_from(range.end.saturating_sub(range.start))
        .map_err(|_| std::io::Error::other("a read larger than memory"))?;
    let whole = |read: usize| {
        if read == len {
            return Ok(());
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "{} ended at byte {} while bytes up to {} were being read (the file shrank while it was read)",
                path.display(),
                range.start + read as u64,
                range.end
            ),
        ))
    };
    if len < POOLED_MIN {
        let mut buf = vec![0; len];
        whole(read_at(file, &mut buf, range.start)?)?;
        return Ok(Bytes::from(buf));
    }
    let mut pooled = Pooled {
        buf: buffer(len),
        len,
    };
    whole(read_at(file, &mut pooled.buf[..len], range.start)?)?;
    Ok(Bytes::from_owner(pooled))
}

/// Fills `buf` from `offset` of `file`, or up to the file's end: the bytes read.
fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut read = 0;
    while read < buf.len() {
        match file.read_at(&mut buf[read..], offset + read as u64) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::object_store::local::LocalFileSystem;

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect()
    }

    /// Reads of a local file with odd characters in its name (big ones into recycled
    /// buffers, each read after the last one's buffer went back) give the file's bytes.
    #[tokio::test]
    async fn ranged_reads_give_the_files_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = "a b#%~é.csv";
        let data = bytes(700_000, 3);
        std::fs::write(dir.path().join(name), &data).expect("write");
        // As the scans name local files (the odd characters stay as they are).
        let store = LocalFileSystem::new();
        let location = Path::from_absolute_path(dir.path().join(name)).expect("path");
        for (from, to) in [
            (0, 300_000),
            (5, 600_000),
            (100, 200),
            (650_000, 700_000),
            (1, 699_999),
        ] {
            let got = get_range(&store, &location, from..to).await.expect("read");
            assert_eq!(&got[..], &data[from as usize..to as usize], "{from}..{to}");
        }
        // Two reads alive at once never share a buffer.
        let a = get_range(&store, &location, 0..400_000)
            .await
            .expect("read");
        let b = get_range(&store, &location, 300_000..700_000)
            .await
            .expect("read");
        assert_eq!(&a[..], &data[..400_000]);
        assert_eq!(&b[..], &data[300_000..]);
    }

    /// A file that ends before the range read ends (it shrank after it was opened) is an
    /// error naming it, never a short read.
    #[test]
    fn a_file_shorter_than_the_range_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cut.csv");
        std::fs::write(&path, bytes(200_000, 5)).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        for range in [0..300_000, 150_000..250_000, 199_000..200_500] {
            let err = read_file(&file, &path, range.clone()).expect_err("short read");
            assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
            assert!(
                err.to_string().contains("cut.csv ended at byte 200000"),
                "{err}"
            );
        }
        assert_eq!(
            read_file(&file, &path, 0..200_000).expect("read").len(),
            200_000
        );
    }
}
