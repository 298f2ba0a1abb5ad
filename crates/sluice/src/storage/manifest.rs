//! The `_SUCCESS` manifest of an output folder: what a complete output holds. Written last
//! by the sink's commit; read by appends, by readers that trust only listed files, and by
//! the remote overwrite.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One file written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrittenFile {
    /// Path relative to the output root (or the file itself for single-file output).
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the file's bytes.
    pub crc32: u32,
}

/// The manifest file written last into an output folder.
pub const MANIFEST: &str = "_SUCCESS";

/// The folder rejected rows are written to, inside an output folder. For a single-file
/// output it sits beside the file as `NAME_rejects/`.
pub const REJECTS_DIR: &str = "_rejects";

/// The name a job's staging folder starts with (`.sluice-staging-NAME-JOB`, beside the
/// target): everything the job writes is below it until the commit.
pub const STAGING_PREFIX: &str = ".sluice-staging-";

/// Creates the folder `dir` a task writes into. Below a job's staging folder, the folders
/// between it and `dir` are made one level at a time and the staging folder itself never:
/// once the job has ended and removed it, a task still running for it (a cluster's
/// straggler) gets an error here instead of bringing the folder back. Anywhere else (a
/// task's local scratch folder) `dir` is made with all its missing parents.
pub fn create_job_dir(dir: &Path) -> Result<()> {
    let root = dir.ancestors().find(|a| {
        a.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(STAGING_PREFIX))
    });
    let Some(root) = root else {
        return std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e));
    };
    if !root.is_dir() {
        return Err(Error::io(
            root.display().to_string(),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the job's folder is gone (the job has ended or was stopped)",
            ),
        ));
    }
    let mut at = root.to_path_buf();
    // `root` is one of `dir`'s ancestors: what follows it are the folders to make.
    for part in dir.components().skip(root.components().count()) {
        at.push(part);
        match std::fs::create_dir(&at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && at.is_dir() => {}
            Err(e) => return Err(Error::io(at.display().to_string(), e)),
        }
    }
    Ok(())
}

/// The `_SUCCESS` manifest: what a complete output holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub version: u32,
    /// The job that wrote the latest files.
    pub job: String,
    /// Total rows in the listed files.
    pub rows: u64,
    /// Total bytes of the listed files.
    pub bytes: u64,
    /// The data files of the output, relative to its folder.
    pub files: Vec<WrittenFile>,
}

/// The data files a sluice `_SUCCESS` manifest lists (relative paths), or `None` when the
/// bytes are not one (Spark writes an empty `_SUCCESS`).
pub fn manifest_paths(bytes: &[u8]) -> Option<std::collections::HashSet<String>> {
    let m: Manifest = serde_json::from_slice(bytes).ok()?;
    Some(m.files.into_iter().map(|f| f.path).collect())
}

impl Manifest {
    /// Builds a manifest over `files`.
    pub fn new(job: &str, mut files: Vec<WrittenFile>) -> Manifest {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Manifest {
            version: 1,
            job: job.to_string(),
            rows: files.iter().map(|f| f.rows).sum(),
            bytes: files.iter().map(|f| f.bytes).sum(),
            files,
        }
    }

    /// Reads the manifest of an output folder.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
        Manifest::parse(&text, &path.display().to_string())
    }

    /// Parses manifest bytes read from `what`, refusing listed paths that would leave the
    /// output folder (`../x`, `/etc/x`): an appending job links or keeps what it lists.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| Error::file(what, e))?;
        for f in &m.files {
            let inside = !f.path.is_empty()
                && Path::new(&f.path)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside {
                return Err(Error::file(
                    what,
                    format!("lists '{}', which is not a file inside the output", f.path),
                ));
            }
        }
        Ok(m)
    }

    /// Checks that every listed file exists with its size and checksum.
    pub fn verify(&self, dir: &Path) -> Result<()> {
        for f in &self.files {
            let path = dir.join(&f.path);
            let data =
                std::fs::read(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
            if data.len() as u64 != f.bytes || crc32fast::hash(&data) != f.crc32 {
                return Err(Error::file(
                    path.display().to_string(),
                    "does not match the manifest (size or checksum)",
                ));
            }
        }
        Ok(())
    }
}
