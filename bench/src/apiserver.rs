//! A loopback fake metadata API for the enrich benchmark and manual tries:
//! `apiserver [--latency-ms N] [--port P]` prints `listening on http://127.0.0.1:PORT` and
//! serves `GET /meta/{id}` and `POST /meta/batch` (see `sluice_testkit::meta_api`) until
//! killed. `apiserver --capacity` measures how many requests per second it answers at zero
//! latency on this machine, with 64 keep-alive clients, and exits.

use std::time::{Duration, Instant};

use sluice_testkit::{meta_api, ApiServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let latency = Duration::from_millis(
        arg("--latency-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(20),
    );
    if std::env::args().any(|a| a == "--capacity") {
        capacity().await;
        return;
    }
    let port: u16 = arg("--port").and_then(|v| v.parse().ok()).unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let server = ApiServer::serve(listener, std::sync::Arc::new(meta_api(latency)));
    println!("listening on {}", server.url(""));
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        eprintln!(
            "requests {} max in flight {}",
            server
                .counters
                .requests
                .load(std::sync::atomic::Ordering::Relaxed),
            server
                .counters
                .max_in_flight
                .load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}

/// Requests per second the server answers with no latency, 64 clients, 3 seconds.
async fn capacity() {
    let server = ApiServer::start(meta_api(Duration::ZERO)).await;
    let addr = server.addr();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for c in 0..64 {
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let req = format!("GET /meta/{c}-{n} HTTP/1.1\r\nhost: x\r\n\r\n");
                w.write_all(req.as_bytes()).await.expect("write");
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).await.expect("read");
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("content-length: ") {
                        len = v.parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).await.expect("body");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    println!(
        "capacity: {:.0} requests/s (64 keep-alive clients, zero latency)",
        total as f64 / 3.0
    );
}
