//! Atomic commit of an output folder.
//!
//! A job writes into a staging folder beside its target (`.sluice-staging-NAME-JOB`), fsyncs
//! every file, and writes the `_SUCCESS` manifest into it last. Then, on Linux, one
//! `renameat2(RENAME_EXCHANGE)` swaps the staging folder and the target: every reader sees
//! either the complete old folder or the complete new one, whatever moment the process dies.
//! `append` stages hard links to the existing files beside the new ones, so the set of files
//! changes in that one exchange too. What is left in the staging path afterwards (the old
//! output, or an unfinished job's files) is removed by this commit or, after a crash, by the
//! next job writing to the same target. A lock file keeps two jobs off one target.
//!
//! Where the exchange is not available (another OS or a file system without it), overwrite
//! falls back to two renames; a crash between them leaves the complete new output in the
//! staging folder, and the next job moves it into place before it starts.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::WriteMode;
use crate::error::{Error, Result};
pub use crate::storage::manifest::{
    create_job_dir, manifest_paths, Manifest, WrittenFile, MANIFEST, REJECTS_DIR, STAGING_PREFIX,
};

/// A job's hold on an output target: the lock, the staging folder, and the commit.
#[derive(Debug)]
pub struct Commit {
    target: PathBuf,
    staging: PathBuf,
    job: String,
    lock: File,
    lock_path: PathBuf,
    /// Leftovers of earlier jobs that were cleaned up before this one started.
    pub recovered: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path.display().to_string(), e)
}

impl Commit {
    /// Locks the target, cleans up after crashed jobs, and creates a fresh staging folder.
    pub fn begin(target: &Path, job: &str) -> Result<Commit> {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .ok_or_else(|| Error::Config(format!("bad output path '{}'", target.display())))?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        let lock_path = parent.join(format!(".sluice-lock-{name}"));
        let lock = take_lock(&lock_path, target)?;
        let recovered = recover(&parent, &name, target)?;
        let staging = parent.join(format!("{STAGING_PREFIX}{name}-{job}"));
        std::fs::create_dir_all(&staging).map_err(io_err(&staging))?;
        Ok(Commit {
            target: target.to_path_buf(),
            staging,
            job: job.to_string(),
            lock,
            lock_path,
            recovered,
        })
    }

    /// The folder to write data files into.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// Removes the staging folder after a failed job.
    pub fn abort(self) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }

    /// Moves a single staged file onto the target path (one atomic rename).
    pub fn commit_file(self, staged: &str) -> Result<()> {
        let rejects = self.staging.join(REJECTS_DIR);
        if rejects.is_dir() {
            let mut name = self.target.as_os_str().to_os_string();
            name.push(REJECTS_DIR);
            let beside = PathBuf::from(name);
            if beside.exists() {
                std::fs::remove_dir_all(&beside).map_err(io_err(&beside))?;
            }
            std::fs::rename(&rejects, &beside).map_err(io_err(&beside))?;
        }
        let from = self.staging.join(staged);
        std::fs::rename(&from, &self.target).map_err(io_err(&self.target))?;
        sync_parent(&self.target);
        std::fs::remove_dir_all(&self.staging).map_err(io_err(&self.staging))?;
        Ok(())
    }

    /// Publishes the staged folder: writes the manifest, then swaps it into place.
    /// Returns the manifest now describing the target.
    pub fn commit_dir(self, mode: WriteMode, files: Vec<WrittenFile>) -> Result<Manifest> {
        let target_exists = self.target.exists();
        let mut listed = files;
        if mode == WriteMode::Append && target_exists {
            // Stage hard links to the existing files so the exchange adds the new ones as a set.
            // A folder without a manifest was not written by sluice: every visible file is
            // kept. A manifest that cannot be read stops the job (taking it for "none" would
            // adopt a crashed job's files).
            let old = if self.target.join(MANIFEST).exists() {
                Manifest::read(&self.target)?.files
            } else {
                existing_files(&self.target)?
            };
            for f in &old {
                let from = self.target.join(&f.path);
                let to = self.staging.join(&f.path);
                if let Some(p) = to.parent() {
                    std::fs::create_dir_all(p).map_err(io_err(p))?;
                }
                std::fs::hard_link(&from, &to).map_err(io_err(&from))?;
            }
            listed.extend(old);
            carry_rejects(
                &self.target.join(REJECTS_DIR),
                &self.staging.join(REJECTS_DIR),
            )?;
        }
        drop_unlisted(&self.staging, &listed)?;
        let manifest = Manifest::new(&self.job, listed);
        let manifest_path = self.staging.join(MANIFEST);
        let json =
            serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Config(e.to_string()))?;
        let mut f = File::create(&manifest_path).map_err(io_err(&manifest_path))?;
        std::io::Write::write_all(&mut f, &json).map_err(io_err(&manifest_path))?;
        f.sync_all().map_err(io_err(&manifest_path))?;
        sync_dir(&self.staging);
        if target_exists {
            if exchange(&self.staging, &self.target).is_err() {
                // Two renames; `recover` finishes the job if we die in between.
                let old = old_path(&self.staging);
                std::fs::rename(&self.target, &old).map_err(io_err(&self.target))?;
                std::fs::rename(&self.staging, &self.target).map_err(io_err(&self.target))?;
                std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
            } else {
                // The staging path now holds the old output.
                std::fs::remove_dir_all(&self.staging).map_err(io_err(&self.staging))?;
            }
        } else {
            std::fs::rename(&self.staging, &self.target).map_err(io_err(&self.target))?;
        }
        sync_parent(&self.target);
        Ok(manifest)
    }
}

/// Locks `path` (created if needed). The lock file is removed when the job ends, so a
/// holder checks that the path still names the file it locked: a job that opened the file
/// just before the previous holder removed it would otherwise hold a lock nobody sees.
fn take_lock(path: &Path, target: &Path) -> Result<File> {
    use std::os::unix::fs::MetadataExt;
    for _ in 0..10 {
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Config(format!(
                    "another sluice job is writing '{}'",
                    target.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(path.display().to_string(), e))
            }
        }
        let held = lock.metadata().map_err(io_err(path))?;
        match std::fs::metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(lock),
            _ => continue, // removed or replaced meanwhile: lock the new one
        }
    }
    Err(Error::Config(format!(
        "cannot lock '{}': its lock file keeps changing",
        target.display()
    )))
}

impl Drop for Commit {
    /// The lock file goes away with the job (removed while still locked, see
    /// [`take_lock`]); no `.sluice-lock-*` is left beside the output.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock_path);
        let _ = self.lock.unlock();
    }
}

/// Appending keeps the rejected rows of earlier jobs: their files are linked into the new
/// `_rejects/` beside this job's own (renamed `rejects-2.ndjson`, ... when a name is taken).
fn carry_rejects(old: &Path, new: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(old) else {
        return Ok(()); // no earlier rejects
    };
    std::fs::create_dir_all(new).map_err(io_err(new))?;
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    for from in names {
        let Some(name) = from.file_name() else {
            continue;
        };
        let mut to = new.join(name);
        let (stem, ext) = {
            let p = Path::new(name);
            (
                p.file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default(),
                p.extension().map(|s| s.to_string_lossy().to_string()),
            )
        };
        let mut n = 2;
        while to.exists() {
            let renamed = match &ext {
                Some(ext) => format!("{stem}-{n}.{ext}"),
                None => format!("{stem}-{n}"),
            };
            to = new.join(renamed);
            n += 1;
        }
        std::fs::hard_link(&from, &to).map_err(io_err(&from))?;
    }
    Ok(())
}

/// Removes the staged files no manifest entry lists — a partition run again that wrote into
/// fewer partition folders than its first run leaves such files — so the output holds
/// exactly the manifest's files, the rejects and the manifest. Folders left empty go too.
fn drop_unlisted(staging: &Path, listed: &[WrittenFile]) -> Result<()> {
    let keep: std::collections::HashSet<&Path> =
        listed.iter().map(|f| Path::new(f.path.as_str())).collect();
    let mut dirs = Vec::new();
    let walk = walkdir::WalkDir::new(staging)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == REJECTS_DIR));
    for entry in walk {
        let entry = entry.map_err(|e| Error::file(staging.display().to_string(), e))?;
        if entry.file_type().is_dir() {
            dirs.push(entry.path().to_path_buf());
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(staging)
            .map_err(|e| Error::file(staging.display().to_string(), e))?;
        if rel != Path::new(MANIFEST) && !keep.contains(rel) {
            std::fs::remove_file(entry.path()).map_err(io_err(entry.path()))?;
        }
    }
    // Deepest first; a folder that still holds files stays.
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
    Ok(())
}

/// Data files in a folder without a manifest (not written by sluice): every visible file.
fn existing_files(dir: &Path) -> Result<Vec<WrittenFile>> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| {
            let n = e.file_name().to_string_lossy();
            !n.starts_with('.') && !n.starts_with('_')
        })
    {
        let entry = entry.map_err(|e| Error::file(dir.display().to_string(), e))?;
        if entry.file_type().is_file() {
            let data = std::fs::read(entry.path()).map_err(io_err(entry.path()))?;
            let rel = entry
                .path()
                .strip_prefix(dir)
                .map_err(|e| Error::file(dir.display().to_string(), e))?;
            out.push(WrittenFile {
                path: rel.display().to_string(),
                rows: 0,
                bytes: data.len() as u64,
                crc32: crc32fast::hash(&data),
            });
        }
    }
    Ok(out)
}

/// Cleans up what crashed jobs left beside `target`: a staging folder holding a complete new
/// output whose target is missing (a crash between the fallback's two renames) is moved into
/// place; every other staging folder is removed.
fn recover(parent: &Path, name: &str, target: &Path) -> Result<Vec<String>> {
    let prefix = format!("{STAGING_PREFIX}{name}-");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(found);
    };
    // `.sluice-staging-out-` is also the start of `out-2`'s staging folders: only a job id
    // (and the fallback's `-old`) may follow the prefix.
    let mut leftovers: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix(&prefix)
                .is_some_and(is_job_suffix)
        })
        .map(|e| e.path())
        .collect();
    leftovers.sort();
    for path in &leftovers {
        // A crash between the fallback's two renames: the old output was moved aside and the
        // complete new one is still staged. Finish the commit.
        let interrupted = old_path(path).is_dir() && path.join(MANIFEST).is_file();
        if interrupted && !target.exists() {
            std::fs::rename(path, target).map_err(io_err(target))?;
            found.push(format!(
                "finished the interrupted commit of {}",
                path.display()
            ));
        }
    }
    for path in leftovers {
        if !path.exists() {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
        } else {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
        found.push(format!("removed {}", path.display()));
    }
    Ok(found)
}

/// True for what follows a staging prefix in this target's own folders: a job id (12 hex
/// digits), optionally with `-old`.
fn is_job_suffix(rest: &str) -> bool {
    let id = rest.strip_suffix("-old").unwrap_or(rest);
    id.len() == JOB_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Length of a job id (`plan_streams` in the sink).
pub const JOB_ID_LEN: usize = 12;

/// Where the fallback commit parks the old output.
fn old_path(staging: &Path) -> PathBuf {
    let mut name = staging.as_os_str().to_os_string();
    name.push("-old");
    PathBuf::from(name)
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::result::Result<(), std::io::Error> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE)
        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::result::Result<(), std::io::Error> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Makes a rename in a folder durable.
fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

fn sync_parent(path: &Path) {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
        _ => sync_dir(Path::new(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_never_brings_back_the_staging_folder_of_an_ended_job() {
        let dir = tempfile::tempdir().expect("tmp");
        let target = dir.path().join("out ~%#é");
        let commit = Commit::begin(&target, "job1").expect("begin");
        let staging = commit.staging().to_path_buf();
        // While the job lives: partition folders and the rejects folder are made below it.
        let part = staging.join("country=Côte d'Ivoire").join("year=2024");
        create_job_dir(&part).expect("partition folders");
        assert!(part.is_dir());
        create_job_dir(&part).expect("made twice");
        let rejects = staging.join(REJECTS_DIR);
        create_job_dir(&rejects).expect("rejects folder");
        // The job ends (failed, say) and its staging folder is removed; a task still
        // running elsewhere then asks for its folders: an error, and nothing reappears.
        std::fs::remove_dir_all(&staging).expect("clean up");
        for late in [&part, &rejects, &staging] {
            let e = create_job_dir(late).expect_err("the job is gone");
            assert!(e.to_string().contains("the job's folder is gone"), "{e}");
        }
        assert!(!staging.exists(), "the staging folder came back");
        let ledger = crate::ledger::remote::TaskLedger::default();
        assert!(ledger.write(&rejects).is_err());
        assert!(
            !staging.exists(),
            "a late ledger brought the staging folder back"
        );
        // Outside a staging folder (a task's local scratch folder) parents are made.
        let scratch = dir.path().join("sluice-upload-job1").join("tasks");
        create_job_dir(&scratch).expect("scratch");
        assert!(scratch.is_dir());
        drop(commit);
    }

    #[test]
    fn the_output_holds_exactly_the_listed_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let target = dir.path().join("out ~%#");
        let commit = Commit::begin(&target, "job1").expect("begin");
        let staging = commit.staging().to_path_buf();
        let put = |rel: &str, text: &str| {
            let p = staging.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, text).expect("write");
        };
        put("k=a/part-00000-job1.csv", "n\n1\n");
        // A first run of partition 1 wrote into k=b; its last run wrote nothing there.
        put("k=b/part-00001-job1.csv", "n\n2\n");
        put("k=a/part-00001-job1.csv", "n\n3\n");
        put("_rejects/rejects.ndjson", "{}\n");
        let listed = ["k=a/part-00000-job1.csv", "k=a/part-00001-job1.csv"]
            .iter()
            .map(|p| WrittenFile {
                path: p.to_string(),
                rows: 1,
                bytes: 4,
                crc32: crc32fast::hash(b"n\n1\n"),
            })
            .collect();
        commit
            .commit_dir(WriteMode::Overwrite, listed)
            .expect("commit");
        let mut present: Vec<String> = walkdir::WalkDir::new(&target)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                let e = e.expect("entry");
                e.path()
                    .strip_prefix(&target)
                    .expect("rel")
                    .display()
                    .to_string()
            })
            .collect();
        present.sort();
        assert_eq!(
            present,
            [
                MANIFEST,
                "_rejects",
                "_rejects/rejects.ndjson",
                "k=a",
                "k=a/part-00000-job1.csv",
                "k=a/part-00001-job1.csv"
            ]
        );
    }
}
