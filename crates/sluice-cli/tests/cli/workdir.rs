//! A temporary working folder with helpers to write inputs and run the real `sluice` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temp folder that is deleted at the end of the test.
pub struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir {
            dir: tempfile::Builder::new()
                .prefix("sluice-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes bytes to a relative path, creating folders.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, contents).expect("write");
        p
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).expect("read")
    }

    /// A `sluice` command run in this folder.
    pub fn sluice(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.current_dir(self.dir.path());
        cmd.env_remove("SLUICE_LOG");
        cmd
    }

    /// Runs sluice with args and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.sluice().args(args).output().expect("run sluice");
        assert!(
            out.status.success(),
            "sluice {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs sluice with args and asserts the exit code; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out: Output = self.sluice().args(args).output().expect("run sluice");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "sluice {args:?}: expected exit {code}\nstdout: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout),
        );
        stderr
    }

    /// Runs a SQL query with sluice over `table=input` and returns CSV output lines.
    pub fn query(&self, sql: &str, tables: &[(&str, &str)]) -> Vec<String> {
        let mut args: Vec<String> =
            vec!["query".into(), sql.into(), "--output".into(), "csv".into()];
        for (name, input) in tables {
            args.push("--table".into());
            args.push(format!("{name}={input}"));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&refs).lines().map(str::to_string).collect()
    }

    /// Runs an ingest with `--report-json` and returns the parsed report.
    pub fn ingest(&self, args: &[&str]) -> serde_json::Value {
        let report = self.path(&format!("report-{}.json", uuid_like()));
        let mut all: Vec<&str> = vec!["ingest"];
        all.extend_from_slice(args);
        let rp = report.display().to_string();
        all.extend_from_slice(&["--report-json", &rp, "--quiet"]);
        self.ok(&all);
        let text = std::fs::read_to_string(&report).expect("report");
        serde_json::from_str(&text).expect("report json")
    }

    /// Staging folders a job left beside its target (there should be none).
    pub fn staging_leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.root())
            .expect("ls")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".sluice-staging"))
            .collect()
    }

    /// Data files (not manifests) below a folder, relative and sorted.
    pub fn data_files(&self, rel: &str) -> Vec<String> {
        let mut out = Vec::new();
        collect(&self.path(rel), &self.path(rel), &mut out);
        out.sort();
        out
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let p = entry.path();
        if p.is_dir() {
            collect(root, &p, out);
        } else {
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.starts_with('_') && !name.starts_with('.') {
                out.push(p.strip_prefix(root).expect("prefix").display().to_string());
            }
        }
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a Python snippet (pyarrow/duckdb) and returns stdout, or None when the readers are
/// not installed and the environment does not require them (CI sets
/// SLUICE_REQUIRE_PYTHON_READERS=1 so that they are never silently skipped there).
pub fn python(code: &str) -> Option<String> {
    let probe = Command::new("python3")
        .args(["-c", "import pyarrow, duckdb"])
        .output();
    let available = matches!(probe, Ok(ref o) if o.status.success());
    if !available {
        assert!(
            std::env::var_os("SLUICE_REQUIRE_PYTHON_READERS").is_none(),
            "pyarrow and duckdb are required here (pip install pyarrow duckdb)"
        );
        eprintln!("skipping the Python read-back: pyarrow/duckdb not installed");
        return None;
    }
    let out = Command::new("python3")
        .args(["-c", code])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        code
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Two ORC files written by pyarrow at `first` and `second` (relative to `wd`, folders
/// made): `first` holds ids 0..1000 with `v = id / 2`, `second` ids 0..500 with `v = 1`.
/// `None` (skip) when pyarrow is missing and not required.
pub fn orc_pair(wd: &Workdir, first: &str, second: &str) -> Option<()> {
    for rel in [first, second] {
        if let Some(parent) = wd.path(rel).parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
    }
    python(&format!(
        "import pyarrow as pa, pyarrow.orc as orc\n\
         orc.write_table(pa.table({{'id': list(range(1000)), 'v': [i * 0.5 for i in range(1000)]}}), r'{}')\n\
         orc.write_table(pa.table({{'id': list(range(500)), 'v': [1.0] * 500}}), r'{}')",
        wd.path(first).display(),
        wd.path(second).display()
    ))
    .map(|_| ())
}
