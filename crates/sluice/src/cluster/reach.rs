//! Every executor sees the job's inputs and outputs where the client does, checked before a
//! row is read.
//!
//! A cluster's executors open a job's files at the paths the client planned with. An
//! executor on a machine that mounts other storage there (a local disk where the client has
//! a shared one, an older copy, nothing at all) would read other rows, or write its part of
//! the output where the client never looks. So the client names what it sees ([`Reach`]:
//! one file of each folder it reads, with its size, and the folders it made for the job's
//! output), the job's session carries it, and each executor checks it before it runs its
//! first task of the job ([`Reach::check`]). An executor that cannot see them fails that
//! task with one line naming itself and the path; Ballista counts that failure as the job's
//! (it does not retry a task that failed this way), so nothing is committed.
//!
//! Inputs are checked through the executor's own object stores, exactly as its scans open
//! them, so an object-store input also proves the executor's credentials. An output folder
//! must already exist on the executor (the client made it, under a name of the job's own,
//! so no other machine has it by chance) and take a file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::TaskContext;
use datafusion::object_store::ObjectStoreExt;
use datafusion::physical_plan::ExecutionPlan;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// At most this many input folders are checked (one file each): a bound on the job's
/// session size and on the checks each executor makes.
pub const MAX_FOLDERS: usize = 256;

/// Checks an executor makes at once.
const AT_ONCE: usize = 16;

/// What every executor running a task of a job must see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    /// One file of each folder the job reads (the first by name), as the client sees it.
    pub inputs: Vec<Seen>,
    /// Folders the client made for the job, where its tasks write (whole paths).
    pub outputs: Vec<PathBuf>,
}

/// One input file as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Its store (`file:///`, `s3://bucket/`...).
    pub store: String,
    /// Its location in the store.
    pub location: String,
    /// The file as the user named it.
    pub display: String,
    /// Its size in bytes.
    pub size: u64,
}

impl Reach {
    /// What the executors must see to run `plan`: one file of each folder its sluice scans
    /// read (up to [`MAX_FOLDERS`]), and `outputs` (folders the client made for the job).
    pub fn of(plan: &Arc<dyn ExecutionPlan>, outputs: impl IntoIterator<Item = PathBuf>) -> Reach {
        // (store, folder) -> the folder's first file by location.
        let mut folders: BTreeMap<(String, String), Seen> = BTreeMap::new();
        let mut add = |store: &ObjectStoreUrl, location: &str, display: &str, size: u64| {
            let folder = location.rsplit_once('/').map_or("", |(f, _)| f).to_string();
            let key = (store.as_str().to_string(), folder);
            let seen = Seen {
                store: key.0.clone(),
                location: location.to_string(),
                display: display.to_string(),
                size,
            };
            match folders.get_mut(&key) {
                Some(first) if first.location <= seen.location => {}
                Some(first) => *first = seen,
                None => {
                    folders.insert(key, seen);
                }
            }
        };
        let mut todo = vec![Arc::clone(plan)];
        while let Some(node) = todo.pop() {
            if let Some(scan) = node.downcast_ref::<crate::source::csv_scan::CsvScanExec>() {
                for r in scan.partitions.iter().flatten() {
                    add(&scan.store_url, r.location.as_ref(), &r.display, r.size);
                }
            } else if let Some(scan) =
                node.downcast_ref::<crate::source::file_scan::FileByFileExec>()
            {
                for p in scan.partitions.iter().flatten() {
                    add(&scan.store_url, p.location.as_ref(), &p.display, p.size);
                }
            }
            // A scan cut for the cluster: its partitions' scans.
            if let Some(Ok(cut)) = super::partitions::parts_of(node.as_ref()) {
                todo.extend(cut.groups.into_iter().flatten());
            }
            todo.extend(node.children().into_iter().cloned());
        }
        let outputs: BTreeSet<PathBuf> = outputs.into_iter().collect();
        Reach {
            inputs: folders.into_values().take(MAX_FOLDERS).collect(),
            outputs: outputs.into_iter().collect(),
        }
    }

    /// Nothing to check.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty() && self.outputs.is_empty()
    }

    /// Checks that the executor named `executor`, whose task runs in `ctx`, sees every input
    /// as the client did and can write in every output folder: `Err` with one line naming
    /// the executor and the first path it cannot see.
    pub async fn check(&self, executor: &str, ctx: &TaskContext) -> Result<()> {
        let runtime = ctx.runtime_env();
        futures::stream::iter(self.inputs.iter().map(Ok))
            .try_for_each_concurrent(AT_ONCE, |seen| {
                let runtime = Arc::clone(&runtime);
                async move {
                    let fail = |what: String| unseen(executor, &what);
                    let store = ObjectStoreUrl::parse(&seen.store)
                        .and_then(|url| runtime.object_store(&url))
                        .map_err(|e| fail(format!("cannot open {}'s store ({e})", seen.display)))?;
                    let location = datafusion::object_store::path::Path::parse(&seen.location)
                        .map_err(|e| fail(format!("cannot name {} ({e})", seen.display)))?;
                    match store.head(&location).await {
                        Ok(meta) if meta.size == seen.size => Ok(()),
                        Ok(meta) => Err(fail(format!(
                            "sees another {}: {} bytes where the client's has {}",
                            seen.display, meta.size, seen.size
                        ))),
                        Err(e) => Err(fail(format!(
                            "cannot read {}",
                            crate::storage::stores::store_error(&seen.display, e)
                        ))),
                    }
                }
            })
            .await?;
        let outputs = self.outputs.clone();
        let executor = executor.to_string();
        crate::error::blocking(move || {
            outputs
                .iter()
                .try_for_each(|dir| writable(dir).map_err(|what| unseen(&executor, &what)))
        })
        .await
    }
}

/// The line of an executor that does not see what the client does.
fn unseen(executor: &str, what: &str) -> Error {
    Error::Unreachable(format!(
        "executor {executor} {what}: every executor must see the job's inputs and outputs at \
         the same paths as the client (a shared filesystem or object storage)"
    ))
}

/// Whether `dir` exists (made by the client: this executor must not make it) and takes a
/// file; what is wrong otherwise.
fn writable(dir: &Path) -> std::result::Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("finds no folder at {}", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("cannot find the job's folder {}", dir.display()))
        }
        Err(e) => {
            return Err(format!(
                "cannot see the job's folder {}: {e}",
                dir.display()
            ))
        }
    }
    tempfile::Builder::new()
        .prefix(".sluice-reach-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| format!("cannot write in the job's folder {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_folder_must_exist_and_take_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(writable(dir.path()), Ok(()));
        // The probe file is gone again.
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
        let missing = dir.path().join("not made # ü");
        let err = writable(&missing).expect_err("missing");
        assert!(
            err.contains("cannot find the job's folder") && err.contains("# ü"),
            "{err}"
        );
        let file = dir.path().join("f");
        std::fs::write(&file, "x").expect("write");
        assert!(writable(&file)
            .expect_err("a file")
            .contains("finds no folder"));
    }
}
