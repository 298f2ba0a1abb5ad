//! A moto S3 server (`pip install "moto[server]"`) on a free loopback port, for tests of
//! object storage, with raw S3 requests to set it up.
//!
//! Tests that need it call [`Moto::start`]: with `SLUICE_REQUIRE_S3` set (as `.ci/run` does)
//! a missing `moto_server` is a failure, elsewhere the test skips.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto S3 server on a free loopback port; killed when dropped.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto, or returns `None` (skip) when it is not installed and not required.
    pub fn start(extra_env: &[(&str, &str)]) -> Option<Moto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut cmd = Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var("SLUICE_REQUIRE_S3").is_err(),
                    "moto_server is required here: {e}"
                );
                eprintln!("skipping: moto_server not installed ({e})");
                return None;
            }
        };
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Listening is not ready: moto loads its S3 backend on the first request, and a
        // request in that moment can get a 500 (a bucket creation failed so in CI). Ready is
        // answering a bucket listing; a server told to check credentials refuses an unsigned
        // one, and any answer will do.
        let checks_auth = extra_env
            .iter()
            .any(|(k, _)| *k == "INITIAL_NO_AUTH_ACTION_COUNT");
        loop {
            let (status, body) = moto.call("GET", "/", b"");
            if status == 200 || (checks_auth && status != 0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server is not answering: {status} {body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A raw S3 request (moto does not check signatures unless asked to).
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> u16 {
        self.call(method, path, body).0
    }

    /// Keys below `prefix` in `bucket`.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (_, body) = self.call(
            "GET",
            &format!("/{bucket}?list-type=2&prefix={prefix}"),
            b"",
        );
        let mut keys: Vec<String> = body
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }

    /// An object's text, read with boto3 (which comes with moto): moto refuses unsigned
    /// GETs and DELETEs of objects.
    pub fn get(&self, bucket: &str, key: &str) -> String {
        self.boto3(&format!(
            "sys.stdout.write(s3.get_object(Bucket='{bucket}', Key='{key}')['Body'].read().decode())"
        ))
    }

    /// Runs Python with `s3`, a boto3 client of this server; returns its stdout.
    fn boto3(&self, statement: &str) -> String {
        let code = format!(
            "import boto3, sys\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='testing', aws_secret_access_key='testing-secret-key', region_name='us-east-1')\n{statement}",
            self.endpoint()
        );
        let out = Command::new("python3")
            .args(["-c", &code])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A raw request: status and body.
    pub fn call(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(head.as_bytes()).expect("write");
        s.write_all(body).expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let code = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    /// Creates a bucket.
    pub fn bucket(&self, name: &str) {
        assert_eq!(self.request("PUT", &format!("/{name}"), b""), 200);
    }

    /// Deletes an object.
    pub fn delete(&self, bucket: &str, key: &str) {
        self.boto3(&format!("s3.delete_object(Bucket='{bucket}', Key='{key}')"));
    }

    /// Storage options reaching this server (for the library API).
    pub fn storage_options(&self) -> Vec<(String, String)> {
        [
            ("endpoint", self.endpoint()),
            ("allow_http", "true".into()),
            ("region", "us-east-1".into()),
            ("access_key_id", "testing".into()),
            ("secret_access_key", "testing-secret-key".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Uploads an object under exactly `key` (any characters: `%`, `#`, unicode...),
    /// through boto3.
    pub fn put_exact(&self, bucket: &str, key: &str, body: &str) {
        let code = format!(
            "import boto3, json, os\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='testing', aws_secret_access_key='testing-secret-key', region_name='us-east-1')\ns3.put_object(Bucket='{bucket}', Key=os.environ['KEY'], Body=os.environ['BODY'].encode())",
            self.endpoint()
        );
        let out = Command::new("python3")
            .args(["-c", &code])
            .env("KEY", key)
            .env("BODY", body)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Keys below `prefix` in `bucket`, exactly as stored (through boto3).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let text = self.boto3(&format!(
            "import json\nr = s3.list_objects_v2(Bucket='{bucket}', Prefix='{prefix}')\nsys.stdout.write(json.dumps([o['Key'] for o in r.get('Contents', [])]))"
        ));
        let mut keys: Vec<String> = serde_json::from_str(&text).expect("keys json");
        keys.sort();
        keys
    }

    /// Uploads an object.
    pub fn put(&self, bucket: &str, key: &str, body: impl AsRef<[u8]>) {
        let code = self.request("PUT", &format!("/{bucket}/{key}"), body.as_ref());
        assert_eq!(code, 200, "PUT {key}");
    }
}
