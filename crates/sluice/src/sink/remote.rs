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
//! deletes the objects the new manifest does not list. A job that dies before its manifest
//! leaves only unlisted files, which readers ignore and the next `overwrite` deletes.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use datafusion::object_store::path::Path as StorePath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

use super::commit::{Manifest, MANIFEST, REJECTS_DIR};
use super::{WriteMode, WrittenFile};
use crate::error::{Error, Result};
use crate::source::remote::{build_store, list_sorted, store_error, RemoteUrl, StorageOptions};

/// Files up to this size go up in one PUT; bigger ones in multipart parts of this size.
const PART: usize = 8 << 20;

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
        if mode == WriteMode::Error && !self.existing().await?.is_empty() {
            return Err(Error::OutputExists(self.url.clone()));
        }
        Ok(())
    }

    /// Uploads the staged files, then the manifest, then (overwrite) deletes the rest.
    pub async fn commit(
        &self,
        staging: &Path,
        job: &str,
        mode: WriteMode,
        files: Vec<WrittenFile>,
        single: bool,
    ) -> Result<()> {
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
        if single {
            if let Some(f) = files.first() {
                self.upload(&staging.join(&f.path), &self.key("")?).await?;
            }
            return Ok(());
        }
        for f in &files {
            self.upload(&staging.join(&f.path), &self.key(&f.path)?)
                .await?;
        }
        let old = self.existing().await?;
        let mut all = files;
        if mode == WriteMode::Append {
            // No manifest yet: nothing to extend. Any other error stops the job: taking it
            // for "no manifest" would drop the earlier files from the output.
            match self.store.get(&self.key(MANIFEST)?).await {
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(&self.url, e)),
                Ok(got) => {
                    let bytes = got.bytes().await.map_err(|e| store_error(&self.url, e))?;
                    let previous = Manifest::parse(&bytes, &format!("{}/{MANIFEST}", self.url))?;
                    all.extend(previous.files);
                }
            }
        }
        let manifest = Manifest::new(job, all);
        let text =
            serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Config(e.to_string()))?;
        self.store
            .put(&self.key(MANIFEST)?, PutPayload::from(text))
            .await
            .map_err(|e| store_error(&self.url, e))?;
        if mode == WriteMode::Overwrite {
            let listed: HashSet<String> = manifest
                .files
                .iter()
                .map(|f| self.key(&f.path).map(|k| k.to_string()))
                .collect::<Result<_>>()?;
            let manifest_key = self.key(MANIFEST)?.to_string();
            for key in old {
                let k = key.to_string();
                if k != manifest_key && !listed.contains(&k) && !kept_rejects.contains(&k) {
                    self.store
                        .delete(&key)
                        .await
                        .map_err(|e| store_error(&self.url, e))?;
                }
            }
        }
        Ok(())
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
