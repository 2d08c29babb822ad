//! `ferry-stream-bench FERRY_BINARY [CONNECTS] [CLIENTS]`: measures
//! `ferry serve`'s live streams on loopback.
//!
//! 1. Time to first byte (the snapshot) over CONNECTS fresh connections per
//!    protocol (NDJSON, SSE, WebSocket) to a running job: p50 / p99.
//! 2. CLIENTS concurrent SSE clients on one running job: the server's RSS
//!    before and at peak, and event delivery latency (receive time minus the
//!    event's `at_ms`) p50 / p99 over every event every client received.
//!
//! Run through `bench/streams.sh` (which raises the file descriptor limit).
//! A measuring tool, not shipped: it stops at the first surprise.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use ferry_tests::generate;
use ferry_tests::origin::{Behavior, Origin};
use ferry_tests::serve_process::Server;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Opens a raw HTTP/1.1 stream request; returns the socket.
async fn open(addr: &str, path: &str, accept: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: {accept}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    s
}

/// Milliseconds from connect to the snapshot's first byte.
async fn ttfb_http(addr: &str, path: &str, accept: &str) -> f64 {
    let start = Instant::now();
    let mut s = open(addr, path, accept).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the stream closed before its snapshot");
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(8).any(|w| w == b"snapshot") {
            return start.elapsed().as_secs_f64() * 1000.0;
        }
    }
}

async fn ttfb_ws(url: &str) -> f64 {
    let start = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    loop {
        match ws.next().await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                assert!(t.contains("snapshot"));
                return start.elapsed().as_secs_f64() * 1000.0;
            }
            Some(Ok(_)) => {}
            other => panic!("no snapshot: {other:?}"),
        }
    }
}

/// One SSE client: latencies (ms) of every event it received.
async fn sse_client(addr: String, path: String, out: Arc<Mutex<Vec<f64>>>) {
    let mut s = open(&addr, &path, "text/event-stream").await;
    let mut pending = String::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut mine = Vec::new();
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let at = now_ms();
        pending.push_str(&String::from_utf8_lossy(&chunk[..n]));
        let mut done = false;
        while let Some(pos) = pending.find('\n') {
            let line: String = pending.drain(..=pos).collect();
            if let Some(data) = line.trim_end().strip_prefix("data: ")
                && let Ok(v) = serde_json::from_str::<Value>(data)
            {
                if let Some(sent) = v["at_ms"].as_i64() {
                    mine.push((at - sent) as f64);
                }
                if v["type"] == "job_completed" {
                    done = true;
                }
            }
        }
        if done {
            break;
        }
    }
    out.lock().unwrap().extend(mine);
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let ferry = args
        .next()
        .expect("usage: ferry-stream-bench FERRY [CONNECTS] [CLIENTS]");
    let connects: usize = args.next().map_or(1000, |s| s.parse().unwrap());
    let clients: usize = args.next().map_or(1000, |s| s.parse().unwrap());

    let origin = Origin::start().await.unwrap();
    // A slow file keeps a job running: 64 KiB every 100 ms.
    let slow = |secs: usize| {
        (
            secs * 10 * (64 << 10),
            Behavior::Throttled {
                bytes_per_tick: 64 << 10,
                tick: Duration::from_millis(100),
            },
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &ferry,
        dir.path(),
        &[
            "--progress-interval",
            "100ms",
            "--stream-buffer",
            "65536",
            "--max-streams-per-caller",
            "0",
            "--jobs-per-minute",
            "0",
        ],
        &[("FERRY_LOG", "error")],
    );
    let pid = server.child.id();
    let url = server.url.clone();
    let addr = server.addr();
    let http = reqwest::Client::new();
    let submit = |files: Value| {
        let server = &server;
        async move {
            let job = server
                .submit(&json!({ "files": files, "destination": "bench" }))
                .await;
            job["id"].as_str().unwrap().to_owned()
        }
    };

    // Phase 1: time to first byte, against a job that runs throughout.
    let (len, behavior) = slow(120);
    origin.serve("/ttfb.bin", generate(len, 1), behavior);
    let id = submit(json!([{ "source": origin.url("/ttfb.bin"), "key": "ttfb.bin" }])).await;
    let path = format!("/v1/jobs/{id}/events");
    let ws_url = format!("ws://{addr}/v1/jobs/{id}/ws");
    let mut rows = Vec::new();
    for protocol in ["ndjson", "sse", "websocket"] {
        let mut ms = Vec::with_capacity(connects);
        for _ in 0..connects {
            ms.push(match protocol {
                "ndjson" => ttfb_http(&addr, &path, "application/x-ndjson").await,
                "sse" => ttfb_http(&addr, &path, "text/event-stream").await,
                _ => ttfb_ws(&ws_url).await,
            });
        }
        ms.sort_by(f64::total_cmp);
        rows.push((protocol, pct(&ms, 0.5), pct(&ms, 0.99), ms[ms.len() - 1]));
    }
    println!("time to first byte (snapshot), {connects} sequential connects per protocol:");
    println!("  protocol   p50 ms   p99 ms   max ms");
    for (p, p50, p99, max) in rows {
        println!("  {p:<9} {p50:>7.2}  {p99:>7.2}  {max:>7.2}");
    }
    let _ = http.delete(format!("{url}/v1/jobs/{id}")).send().await;

    // Phase 2: many SSE clients on one running job (about 8 s long).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (len, behavior) = slow(8);
    origin.serve("/fanout.bin", generate(len, 2), behavior);
    let rss_before = rss_kib(pid);
    let id = submit(json!([{ "source": origin.url("/fanout.bin"), "key": "fanout.bin" }])).await;
    let path = format!("/v1/jobs/{id}/events");
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let peak = Arc::new(Mutex::new(rss_before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let r = rss_kib(pid);
                {
                    let mut p = peak.lock().unwrap();
                    *p = (*p).max(r);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        tasks.push(tokio::spawn(sse_client(
            addr.clone(),
            path.clone(),
            latencies.clone(),
        )));
    }
    for t in tasks {
        t.await.unwrap();
    }
    sampler.abort();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(f64::total_cmp);
    let peak = *peak.lock().unwrap();
    println!("{clients} concurrent SSE clients on one running job:");
    println!(
        "  events delivered {}, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  server RSS before {:.1} MiB, peak {:.1} MiB, extra {:.1} MiB",
        rss_before as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak.saturating_sub(rss_before)) as f64 / 1024.0
    );
}
