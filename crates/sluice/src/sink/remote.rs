//! Committing an output to an object store, which has no rename.
//!
//! The files are written to a local staging folder first (the same writers as local output),
//! then uploaded — multipart for big files, in 8 MiB parts — under their final names, which
//! carry the job's id (`part-00000-<job>.parquet`), so they never collide with the files of
//! another job. The `_SUCCESS` manifest is uploaded **last**: it lists exactly the output's
//! data files (for `append`, the previous manifest's files plus the new ones). A single
//! object PUT is atomic on S3, GCS and Azure, so at every moment the manifest names a
//! complete set of files that exist. Readers that trust the manifest (sluice does, for any
//! output folder it reads) never see a partial output. After the manifest, `overwrite`
//! deletes what it replaced: the previous manifest's files and unlisted objects older than
//! its own uploads. A job that dies before its manifest leaves only unlisted files, which
//! readers ignore and the next `overwrite` deletes; objects uploaded while a job commits
//! belong to another job in progress and are left alone (see [`RemoteTarget::publish`]).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use datafusion::object_store::path::Path as StorePath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

use super::commit::{Manifest, MANIFEST, REJECTS_DIR};
use super::{WriteMode, WrittenFile};
use crate::error::{Error, Result};
use crate::storage::stores::{
    build_store, get_object, list_sorted, store_error, RemoteUrl, StorageOptions,
};

/// The start of the name of a cluster job's books prefix below the output
/// (`.sluice-books-JOB/`): its tasks' ledgers and rejects files, read back by the client.
pub const BOOKS_PREFIX: &str = ".sluice-books-";

/// Files up to this size go up in one PUT; bigger ones in multipart parts of this size.
const PART: usize = 8 << 20;

/// A job's files uploaded under their final names, not yet published.
#[derive(Debug)]
pub struct Uploaded {
    job: String,
    mode: WriteMode,
    files: Vec<WrittenFile>,
    single: bool,
    kept_rejects: HashSet<String>,
}

/// An output on an object store.
pub struct RemoteTarget {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl RemoteTarget {
    /// Opens the store of `url` (`s3://bucket/prefix`).
    pub fn open(url: &str, options: &StorageOptions) -> Result<RemoteTarget> {
        let parsed = RemoteUrl::parse(url)?;
        let store = build_store(&parsed, options)?;
        Ok(RemoteTarget {
            url: url.trim_end_matches('/').to_string(),
            store,
            prefix: parsed.key.trim_end_matches('/').to_string(),
        })
    }

    /// The object key of `rel` below the prefix, taken as written: partition folders such
    /// as `p=a%2Fb` or `p=héllo` must not be percent-encoded a second time, or readers would
    /// see other values (or nothing) under those keys.
    fn key(&self, rel: &str) -> Result<StorePath> {
        let raw = if rel.is_empty() {
            self.prefix.clone()
        } else if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        };
        StorePath::parse(&raw).map_err(|e| {
            Error::Config(format!(
                "'{}/{raw}' is not a valid object key: {e}",
                self.url
            ))
        })
    }

    /// The objects below the prefix (all of them, manifest and rejects included).
    async fn existing(&self) -> Result<Vec<StorePath>> {
        let listed = list_sorted(&self.store, &self.prefix, &self.url).await?;
        Ok(listed.into_iter().map(|m| m.location).collect())
    }

    /// Fails when the mode forbids writing over what is there.
    pub async fn check(&self, mode: WriteMode, single: bool) -> Result<()> {
        if single {
            let exists = match self.store.head(&self.key("")?).await {
                Ok(_) => true,
                Err(object_store::Error::NotFound { .. }) => false,
                Err(e) => return Err(store_error(&self.url, e)),
            };
            return match mode {
                WriteMode::Error if exists => Err(Error::OutputExists(self.url.clone())),
                WriteMode::Append => Err(Error::Config(format!(
                    "cannot append to the single file '{}': write to a folder",
                    self.url
                ))),
                _ => Ok(()),
            };
        }
        // A cluster job's books (see [`BOOKS_PREFIX`]) are no output: a task that finished
        // after its job failed may have uploaded its ledger after the clean-up.
        let books = self.key(BOOKS_PREFIX)?.to_string();
        let output = self
            .existing()
            .await?
            .into_iter()
            .any(|k| !k.to_string().starts_with(&books));
        if mode == WriteMode::Error && output {
            return Err(Error::OutputExists(self.url.clone()));
        }
        Ok(())
    }

    /// Uploads the staged files, then publishes them ([`RemoteTarget::upload_all`], then
    /// [`RemoteTarget::publish`]).
    pub async fn commit(
        &self,
        staging: &Path,
        job: &str,
        mode: WriteMode,
        files: Vec<WrittenFile>,
        single: bool,
    ) -> Result<()> {
        let uploaded = self.upload_all(staging, job, mode, files, single).await?;
        self.publish(uploaded).await
    }

    /// Uploads the rejects and data files of a job under their final names (readers do
    /// not see them until the manifest lists them).
    pub async fn upload_all(
        &self,
        staging: &Path,
        job: &str,
        mode: WriteMode,
        files: Vec<WrittenFile>,
        single: bool,
    ) -> Result<Uploaded> {
        let up = self
            .upload_rejects(staging, job, mode, files, single)
            .await?;
        if single {
            if let Some(f) = up.files.first() {
                self.upload(&staging.join(&f.path), &self.key("")?).await?;
            }
        } else {
            for f in &up.files {
                self.upload(&staging.join(&f.path), &self.key(&f.path)?)
                    .await?;
            }
        }
        Ok(up)
    }

    /// Uploads the rejects of a job whose data files (`files`) are already uploaded under
    /// their final names (by a cluster's tasks: [`RemoteTarget::upload_as`]).
    pub async fn upload_rejects(
        &self,
        staging: &Path,
        job: &str,
        mode: WriteMode,
        files: Vec<WrittenFile>,
        single: bool,
    ) -> Result<Uploaded> {
        // Rejected rows go beside the output: `OUT/_rejects/` or `FILE_rejects/`.
        let rejects = staging.join(REJECTS_DIR);
        let mut kept_rejects = HashSet::new();
        if let Ok(entries) = std::fs::read_dir(&rejects) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let mut key = if single {
                    StorePath::parse(format!("{}{REJECTS_DIR}/{name}", self.prefix))
                        .map_err(|e| Error::Config(format!("bad rejects key: {e}")))?
                } else {
                    self.key(&format!("{REJECTS_DIR}/{name}"))?
                };
                // Appending keeps the rejects of earlier jobs: this job's get its own name.
                if mode == WriteMode::Append && self.store.head(&key).await.is_ok() {
                    let (stem, ext) = name.rsplit_once('.').unwrap_or((name.as_str(), ""));
                    key = self.key(&format!("{REJECTS_DIR}/{stem}-{job}.{ext}"))?;
                }
                self.upload(&entry.path(), &key).await?;
                kept_rejects.insert(key.to_string());
            }
        }
        Ok(Uploaded {
            job: job.to_string(),
            mode,
            files,
            single,
            kept_rejects,
        })
    }

    /// Publishes uploaded files: checks they are all still there, writes the manifest (the
    /// one atomic step), and for `overwrite` deletes what the new manifest replaced: the
    /// previous manifest's files, and unlisted objects older than this job's uploads
    /// (leftovers of jobs that died). Objects uploaded since this job's first upload are
    /// another job's work in progress and are left alone; a job that finds its own uploads
    /// gone (deleted by a concurrent overwrite) fails instead of publishing a manifest that
    /// names missing files.
    pub async fn publish(&self, up: Uploaded) -> Result<()> {
        if up.single {
            return Ok(());
        }
        let listed = list_sorted(&self.store, &self.prefix, &self.url).await?;
        let ours = self.keys_of(&up.files)?;
        let present: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> = listed
            .iter()
            .map(|m| (m.location.to_string(), m.last_modified))
            .collect();
        let gone = ours.iter().filter(|k| !present.contains_key(*k)).count();
        if gone > 0 {
            return Err(Error::Config(format!(
                "{}: {gone} of this job's {} uploaded files are gone (another job overwrote the output while this one ran); nothing was committed",
                self.url,
                ours.len()
            )));
        }
        // The server's clock: when this job's first upload landed.
        let started = ours.iter().filter_map(|k| present.get(k)).min().copied();
        // Any error but "not found" stops the job: taking it for "no manifest" would drop
        // the earlier files from an append, or keep stale ones in an overwrite.
        let previous = match self.get(MANIFEST).await? {
            Some(bytes) => Some(Manifest::parse(
                &bytes,
                &format!("{}/{MANIFEST}", self.url),
            )?),
            None => None,
        };
        let mut all = up.files;
        if up.mode == WriteMode::Append {
            if let Some(previous) = &previous {
                all.extend(previous.files.iter().cloned());
            }
        }
        let manifest = Manifest::new(&up.job, all);
        let text =
            serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Config(e.to_string()))?;
        self.store
            .put(&self.key(MANIFEST)?, PutPayload::from(text))
            .await
            .map_err(|e| store_error(&self.url, e))?;
        if up.mode != WriteMode::Overwrite {
            return Ok(());
        }
        // An overwrite's manifest lists exactly this job's files.
        let replaced = match &previous {
            Some(m) => self.keys_of(&m.files)?,
            None => HashSet::new(),
        };
        let manifest_key = self.key(MANIFEST)?.to_string();
        for meta in listed {
            let k = meta.location.to_string();
            if k == manifest_key || ours.contains(&k) || up.kept_rejects.contains(&k) {
                continue;
            }
            let stale = started.is_none_or(|t| meta.last_modified < t);
            if replaced.contains(&k) || stale {
                self.store
                    .delete(&meta.location)
                    .await
                    .map_err(|e| store_error(&self.url, e))?;
            }
        }
        Ok(())
    }

    /// The object keys of manifest entries.
    fn keys_of(&self, files: &[WrittenFile]) -> Result<HashSet<String>> {
        files
            .iter()
            .map(|f| self.key(&f.path).map(|k| k.to_string()))
            .collect()
    }

    /// The output's URL (`s3://bucket/prefix`, without a trailing `/`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object `rel` below the prefix, `None` when there is none.
    pub async fn get(&self, rel: &str) -> Result<Option<bytes::Bytes>> {
        get_object(&self.store, &self.key(rel)?, &self.url).await
    }

    /// Uploads the local file `local` as `rel` below the prefix.
    pub async fn upload_as(&self, local: &Path, rel: &str) -> Result<()> {
        self.upload(local, &self.key(rel)?).await
    }

    /// Makes the object `rel` below a single-file target the target itself (a server-side
    /// copy, then the copy's source deleted): the target appears whole or not at all.
    pub async fn move_into_place(&self, rel: &str) -> Result<()> {
        let (from, to) = (self.key(rel)?, self.key("")?);
        self.store
            .copy(&from, &to)
            .await
            .map_err(|e| store_error(&self.url, e))?;
        self.delete(rel).await
    }

    /// Deletes the object `rel` below the prefix.
    pub async fn delete(&self, rel: &str) -> Result<()> {
        self.store
            .delete(&self.key(rel)?)
            .await
            .map_err(|e| store_error(&format!("{}/{rel}", self.url), e))
    }

    /// Downloads every object below `rel` into the folder `into`, each as a file named by
    /// its key's last part.
    pub async fn download_below(&self, rel: &str, into: &Path) -> Result<()> {
        let prefix = self.key(rel)?.to_string();
        let listed = list_sorted(&self.store, &prefix, &self.url).await?;
        std::fs::create_dir_all(into).map_err(|e| Error::io(into.display().to_string(), e))?;
        for meta in &listed {
            let bytes = get_object(&self.store, &meta.location, &self.url)
                .await?
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{}: {} was listed, then gone",
                        self.url, meta.location
                    ))
                })?;
            let path = into.join(meta.location.filename().unwrap_or_default());
            std::fs::write(&path, &bytes).map_err(|e| Error::io(path.display().to_string(), e))?;
        }
        Ok(())
    }

    /// Deletes every object below `rel`, and the data files of `job` that no manifest
    /// lists (a job that failed on a cluster after its tasks uploaded some): best effort,
    /// what is left is unlisted and ignored by readers.
    pub async fn clean_up(&self, rel: &str, job: Option<&str>) {
        let Ok(listed) = list_sorted(&self.store, &self.prefix, &self.url).await else {
            return;
        };
        let below = self.key(rel).map(|k| format!("{k}/")).unwrap_or_default();
        let marker = job.map(|j| format!("-{j}."));
        for meta in listed {
            let k = meta.location.to_string();
            let ours = marker
                .as_deref()
                .is_some_and(|m| meta.location.filename().is_some_and(|f| f.contains(m)));
            if k.starts_with(&below) || ours {
                let _ = self.store.delete(&meta.location).await;
            }
        }
    }

    /// Uploads one local file: one PUT when small, multipart otherwise.
    async fn upload(&self, local: &Path, key: &StorePath) -> Result<()> {
        let name = local.display().to_string();
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| Error::io(&name, e))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| Error::io(&name, e))?
            .len() as usize;
        if size <= PART {
            let mut buf = Vec::with_capacity(size);
            file.read_to_end(&mut buf)
                .await
                .map_err(|e| Error::io(&name, e))?;
            self.store
                .put(key, PutPayload::from(buf))
                .await
                .map_err(|e| store_error(&self.url, e))?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart(key)
            .await
            .map_err(|e| store_error(&self.url, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).await.map_err(|e| Error::io(&name, e))?;
            if n == 0 {
                break;
            }
            writer
                .wait_for_capacity(4)
                .await
                .map_err(|e| store_error(&self.url, e))?;
            writer.write(&buf[..n]);
        }
        writer
            .finish()
            .await
            .map_err(|e| store_error(&self.url, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::object_store::memory::InMemory;

    fn target(store: &Arc<dyn ObjectStore>) -> RemoteTarget {
        RemoteTarget {
            url: "mem://bkt/out".into(),
            store: Arc::clone(store),
            prefix: "out".into(),
        }
    }

    async fn put(store: &Arc<dyn ObjectStore>, key: &str, body: &[u8]) {
        store
            .put(&StorePath::from(key), PutPayload::from(body.to_vec()))
            .await
            .expect("put");
    }

    async fn keys(store: &Arc<dyn ObjectStore>) -> Vec<String> {
        let mut k: Vec<String> = list_sorted(store, "out", "mem")
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.location.to_string())
            .collect();
        k.sort();
        k
    }

    fn written(name: &str) -> WrittenFile {
        WrittenFile {
            path: name.into(),
            rows: 1,
            bytes: 4,
            crc32: 0,
        }
    }

    fn staged(dir: &Path, name: &str) -> WrittenFile {
        std::fs::write(dir.join(name), b"data").expect("stage");
        written(name)
    }

    // regression: an overwrite deleted every object its manifest did not list, including the
    // files a concurrent job had just uploaded (whose manifest then named missing files).
    #[tokio::test]
    async fn an_overwrite_leaves_a_concurrent_jobs_uploads_alone() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let old = Manifest::new("old", vec![written("part-old.parquet")]);
        let text = serde_json::to_vec(&old).expect("json");
        put(&store, "out/_SUCCESS", &text).await;
        put(&store, "out/part-old.parquet", b"old!").await;
        put(&store, "out/part-dead.parquet", b"left by a job that died").await;
        let dir = tempfile::tempdir().expect("tmp");
        let t = target(&store);
        let files = vec![staged(dir.path(), "part-a.parquet")];
        let up = t
            .upload_all(dir.path(), "a", WriteMode::Overwrite, files, false)
            .await
            .expect("upload");
        // Another job uploads while this one commits.
        put(&store, "out/part-b.parquet", b"in progress").await;
        t.publish(up).await.expect("publish");
        assert_eq!(
            keys(&store).await,
            ["out/_SUCCESS", "out/part-a.parquet", "out/part-b.parquet"]
        );
    }

    #[tokio::test]
    async fn a_job_whose_uploads_were_deleted_publishes_nothing() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let dir = tempfile::tempdir().expect("tmp");
        let t = target(&store);
        let files = vec![staged(dir.path(), "part-a.parquet")];
        let up = t
            .upload_all(dir.path(), "a", WriteMode::Overwrite, files, false)
            .await
            .expect("upload");
        store
            .delete(&StorePath::from("out/part-a.parquet"))
            .await
            .expect("delete");
        let e = t.publish(up).await.expect_err("must fail").to_string();
        assert!(e.contains("another job overwrote the output"), "{e}");
        assert!(keys(&store).await.is_empty());
    }
}
