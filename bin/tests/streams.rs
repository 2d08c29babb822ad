//! Live progress and observability of `ferry serve`, with real clients over
//! real sockets: NDJSON, SSE (with Last-Event-ID reconnects) and WebSocket
//! streams, slow readers, health, metrics, request ids, secret-free logs,
//! graceful shutdown and the header-read timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use ferry_tests::origin::{Behavior, Origin};
use ferry_tests::serve_process::Server as ServeProcess;
use ferry_tests::{generate, sha256_hex};

struct Server;

impl Server {
    fn start(data_dir: &Path, extra: &[&str]) -> ServeProcess {
        ServeProcess::start(env!("CARGO_BIN_EXE_ferry"), data_dir, extra)
    }
}

/// Serves `n` files of `len` bytes and returns the job's file list.
fn files(origin: &Origin, n: usize, len: usize, behavior: &Behavior) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let data = generate(len + i, 500 + i as u64);
            let path = format!("/s/{i}-{len}.bin");
            origin.serve(&path, data.clone(), behavior.clone());
            json!({ "source": origin.url(&path), "key": format!("s/{i}.bin"), "sha256": sha256_hex(&data) })
        })
        .collect()
}

async fn submit(server: &ServeProcess, files: Vec<Value>) -> String {
    let job = server
        .submit(&json!({ "files": files, "destination": "streams" }))
        .await;
    job["id"].as_str().unwrap().to_owned()
}

/// Reads NDJSON lines from a response until it ends.
async fn ndjson(resp: reqwest::Response) -> Vec<Value> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), body.next())
        .await
        .unwrap()
    {
        buf.extend_from_slice(&chunk.unwrap());
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            out.push(serde_json::from_slice(&line).unwrap());
        }
    }
    out
}

/// One SSE event: (id, event, data).
type Sse = (Option<u64>, String, Value);

/// Reads SSE events; stops after `limit` events (None: to the end).
async fn sse(resp: reqwest::Response, limit: Option<usize>) -> Vec<Sse> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), body.next())
        .await
        .unwrap()
    {
        buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(pos) = buf.find("\n\n") {
            let block: String = buf.drain(..pos + 2).collect();
            let (mut id, mut event, mut data) = (None, String::new(), None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse().unwrap());
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str(v.trim()).unwrap());
                }
            }
            if let Some(data) = data {
                out.push((id, event, data));
                if limit.is_some_and(|l| out.len() >= l) {
                    return out;
                }
            }
        }
    }
    out
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e["type"] != "snapshot")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

/// What the store keeps of a finished job: a fresh stream replays it
/// with after=0 (its progress compacted to the last of each file).
async fn stored_events(server: &ServeProcess, id: &str) -> Vec<Value> {
    job_events(server, id, "after=0")
        .await
        .into_iter()
        .filter(|e| e["type"] != "snapshot")
        .collect()
}

/// A job's event stream with `query`, read to its end (NDJSON).
async fn job_events(server: &ServeProcess, id: &str, query: &str) -> Vec<Value> {
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/jobs/{id}/events?{query}", server.url))
        .send()
        .await
        .unwrap();
    ndjson(resp).await
}

/// The sequence number of an ended job's `job_completed`: stored in the
/// commit that ended the job, so there as soon as the status reads ended
/// (asks only for the last events, so a lag limit never applies).
async fn completed_seq(server: &ServeProcess, id: &str) -> u64 {
    let snapshot = job_events(server, id, "").await;
    let seq = snapshot[0]["seq"].as_u64().unwrap();
    let last = job_events(server, id, &format!("after={}", seq - 1)).await;
    let completed = last
        .last()
        .filter(|e| e["type"] == "job_completed")
        .unwrap_or_else(|| panic!("job {id} ended without its job_completed stored: {last:?}"));
    completed["seq"].as_u64().unwrap()
}

/// The last sequence number of a finished job.
async fn stored_count(server: &ServeProcess, id: &str) -> u64 {
    let stored = stored_events(server, id).await;
    stored.last().and_then(|e| e["seq"].as_u64()).unwrap()
}

#[tokio::test]
async fn ndjson_sse_and_websocket_deliver_the_snapshot_then_every_event_in_order() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--progress-interval", "5ms"]);
    let id = submit(&server, files(&origin, 4, 2_000_000, &Behavior::Normal)).await;
    let client = reqwest::Client::new();

    // NDJSON (the default), from the start of the job.
    let resp = client
        .get(format!("{}/v1/jobs/{id}/events?after=0", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let nd = ndjson(resp).await;
    assert_eq!(nd[0]["type"], "snapshot");
    assert_eq!(nd[0]["job"]["id"], id.as_str());
    assert_eq!(nd.last().unwrap()["type"], "job_completed");
    let stored = stored_events(&server, &id).await;
    let stored_seqs = seqs(&stored);
    let shown: Vec<Value> = nd[1..].to_vec();
    assert!(
        seqs(&shown).windows(2).all(|w| w[1] > w[0]),
        "ordered: {:?}",
        seqs(&shown)
    );
    // Everything stored was shown; what was shown and is no longer
    // stored is progress the job's end compacted.
    assert!(
        stored_seqs.iter().all(|s| seqs(&shown).contains(s)),
        "gapless"
    );
    ferry_tests::assert_stored_or_superseded(&shown, &stored);
    assert_eq!(nd[1]["type"], "job_created");

    // SSE: the same sequence, each event with its id.
    let resp = client
        .get(format!("{}/v1/jobs/{id}/events", server.url))
        .header("accept", "text/event-stream")
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse(resp, None).await;
    assert_eq!(events[0].1, "snapshot");
    assert_eq!(
        events[0].0, None,
        "no id on a snapshot followed by a replay"
    );
    let ids: Vec<u64> = events[1..].iter().map(|e| e.0.unwrap()).collect();
    assert_eq!(ids, stored_seqs);
    assert_eq!(events.last().unwrap().1, "job_completed");

    // WebSocket: text frames with the same JSON, then a close.
    let url = format!(
        "{}/v1/jobs/{id}/ws?after=0",
        server.url.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut frames = Vec::new();
    let mut closed = false;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .unwrap()
    {
        match msg.unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(t) => {
                frames.push(serde_json::from_str::<Value>(&t).unwrap());
            }
            tokio_tungstenite::tungstenite::Message::Close(_) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "the server closes after the terminal event");
    assert_eq!(frames[0]["type"], "snapshot");
    assert_eq!(seqs(&frames[1..]), stored_seqs);

    // Unknown job: 404 JSON before any stream starts.
    let missing = client
        .get(format!("{}/v1/jobs/nope/events", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_live_stream_starts_with_the_snapshot_and_sse_reconnects_without_gap_or_duplicate() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--progress-interval", "20ms"]);
    // Paced (about a second a file) so that the job is still running
    // while the first connection reads its first events, however fast
    // this machine is.
    let paced = Behavior::Throttled {
        bytes_per_tick: 32 * 1024,
        tick: Duration::from_millis(10),
    };
    let list = files(&origin, 3, 3_000_000, &paced);
    let id = submit(&server, list).await;
    let client = reqwest::Client::new();

    // First connection: snapshot (with its seq as id), then a few events.
    let resp = client
        .get(format!("{}/v1/jobs/{id}/events", server.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let first = sse(resp, Some(3)).await;
    assert_eq!(first[0].1, "snapshot");
    let mut last_id = first[0].0.expect("a live snapshot carries its seq");
    for e in &first[1..] {
        let id = e.0.unwrap();
        assert_eq!(id, last_id + 1);
        last_id = id;
    }
    // Reconnect with Last-Event-ID: the rest, with no gap and no duplicate.
    let resp = client
        .get(format!("{}/v1/jobs/{id}/events", server.url))
        .header("accept", "text/event-stream")
        .header("last-event-id", last_id.to_string())
        .send()
        .await
        .unwrap();
    let rest = sse(resp, None).await;
    assert_eq!(rest[0].1, "snapshot");
    let ids: Vec<u64> = rest[1..].iter().map(|e| e.0.unwrap()).collect();
    assert_eq!(ids.first().copied(), Some(last_id + 1));
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    assert_eq!(rest.last().unwrap().1, "job_completed");
    assert_eq!(*ids.last().unwrap(), stored_count(&server, &id).await);

    // A bad Last-Event-ID is a 400 naming the header.
    let bad = client
        .get(format!("{}/v1/jobs/{id}/events", server.url))
        .header("last-event-id", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["field"], "Last-Event-ID");
}

/// A client with a tiny receive window that reads nothing until the job
/// has finished: the server cannot write, falls behind the shared buffer,
/// and must catch up from the store, coalescing progress but keeping every
/// lifecycle event.
#[tokio::test]
async fn a_slow_reader_keeps_server_memory_bounded_and_gets_every_lifecycle_event() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--progress-interval", "0ms", "--stream-buffer", "16"],
    );
    let n = 12;
    let id = submit(&server, files(&origin, n, 4_000_000, &Behavior::Normal)).await;

    let addr: std::net::SocketAddr = server.addr().parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET /v1/jobs/{id}/events?after=0 HTTP/1.1\r\nHost: localhost\r\nAccept: application/x-ndjson\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    // Read nothing until the job is over.
    server.wait_status(&id, &["completed"]).await;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = [0u8; 4096];
        loop {
            let k = stream.read(&mut buf).await.unwrap();
            raw.extend_from_slice(&buf[..k]);
            if k == 0 {
                break;
            }
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&raw);
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(|v| v.is_object())
        .collect();
    assert_eq!(events[0]["type"], "snapshot");
    let count = |t: &str| events.iter().filter(|e| e["type"] == t).count();
    assert_eq!(count("job_created"), 1);
    assert_eq!(count("file_started"), n);
    assert_eq!(count("file_succeeded"), n);
    assert_eq!(count("job_completed"), 1);
    let s = seqs(&events);
    assert!(s.windows(2).all(|w| w[1] > w[0]), "ordered, no duplicate");
    let total = stored_count(&server, &id).await;
    assert_eq!(*s.last().unwrap(), total);
    // The server's memory stayed bounded while the reader did not read.
    let peak_kib = server.peak_rss_kib();
    // About 50 MiB measured (debug build, 2026-12-01): twice that is the bound.
    assert!(peak_kib < 96 * 1024, "server peak RSS {peak_kib} KiB");
}

#[tokio::test]
async fn a_client_too_far_behind_gets_lagged_and_can_resume_from_it() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--progress-interval",
            "0ms",
            "--stream-buffer",
            "16",
            "--stream-max-lag",
            "20",
        ],
    );
    let id = submit(&server, files(&origin, 6, 3_000_000, &Behavior::Normal)).await;
    let client = reqwest::Client::new();
    // Connect once the job is over, asking for everything: 20+ events behind.
    server.wait_status(&id, &["completed"]).await;
    let total = completed_seq(&server, &id).await;
    let resp = client
        .get(format!("{}/v1/jobs/{id}/events?after=0", server.url))
        .send()
        .await
        .unwrap();
    let events = ndjson(resp).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "lagged", "{events:?}");
    assert_eq!(last["last_seq"], 0);
    assert_eq!(events[0]["seq"].as_u64(), Some(total), "the snapshot");
    // Resuming from a recent point works.
    let resp = client
        .get(format!(
            "{}/v1/jobs/{id}/events?after={}",
            server.url,
            total - 5
        ))
        .send()
        .await
        .unwrap();
    let rest = ndjson(resp).await;
    let got = seqs(&rest);
    assert!(got.iter().all(|&s| s > total - 5), "{got:?}");
    assert_eq!(got.last(), Some(&total));
    assert_eq!(rest.last().unwrap()["type"], "job_completed");
    // Counted when the lagged stream's task ends, which may be just after
    // its last line reached the client.
    let counted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let metrics = server.get_text("/metrics").await;
            if metrics.contains("ferry_stream_lagged_disconnects_total 1") {
                return metrics;
            }
            assert!(
                !metrics.contains("ferry_stream_lagged_disconnects_total 2"),
                "one lagged stream counted twice"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(counted.is_ok(), "the lagged disconnect was never counted");
}

#[tokio::test]
async fn health_readiness_metrics_and_request_ids_answer_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/healthz", server.url))
        .header("x-request-id", "req-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.headers()["x-request-id"], "req-abc.123");
    let ready = client
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .unwrap();
    let generated = ready.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(
        generated.len(),
        16,
        "a new id when none (or a bad one) is sent"
    );
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["job_store"]["status"], "ok");
    assert_eq!(body["checks"]["storage"]["status"], "ok");

    // Storage not writable: not ready, and says which dependency.
    let files = dir.path().join("files");
    let mut perms = std::fs::metadata(&files).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&files, perms.clone()).unwrap();
    let not_ready = client
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .unwrap();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&files, perms).unwrap();
    assert_eq!(not_ready.status(), 503);
    let body: Value = not_ready.json().await.unwrap();
    assert_eq!(body["checks"]["storage"]["status"], "unavailable");
    assert_eq!(body["checks"]["job_store"]["status"], "ok");

    let metrics = client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = metrics.text().await.unwrap();
    for name in [
        "# TYPE ferry_active_transfers gauge",
        "# TYPE ferry_transferred_bytes counter",
        "# TYPE ferry_transfer_duration_seconds histogram",
        "# TYPE ferry_checksum_failures counter",
        "# TYPE ferry_retries counter",
        "# TYPE ferry_jobs_finished counter",
        "# TYPE ferry_streams_connected gauge",
        "# TYPE ferry_stream_events_coalesced counter",
        "# TYPE ferry_stream_lagged_disconnects counter",
        "ferry_http_request_duration_seconds_count{route=\"/healthz\",method=\"GET\",status=\"200\"} 1",
        "ferry_http_request_duration_seconds_count{route=\"/readyz\",method=\"GET\",status=\"503\"} 1",
    ] {
        assert!(text.contains(name), "missing {name}:\n{text}");
    }
}

#[tokio::test]
async fn json_logs_carry_request_and_job_ids_and_no_secret() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--log-format", "json"]);
    let data = generate(10_000, 1);
    origin.serve("/secret.bin", data.clone(), Behavior::Normal);
    let src = origin
        .url("/secret.bin?X-Amz-Signature=sig-s3cret&X-Amz-Credential=cred-s3cret&token=tok-s3cret")
        .replace("http://", "http://user:pass-s3cret@");
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/jobs", server.url))
        .header("x-request-id", "trace-77")
        .json(&json!({ "files": [
            { "source": src, "key": "ok.bin", "sha256": sha256_hex(&data) },
            { "source": origin.url("/missing?token=tok-s3cret"), "key": "missing.bin" }
        ], "destination": "logs", "task_token": "task-token-s3cret" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = ndjson(
        reqwest::Client::new()
            .get(format!("{}/v1/jobs/{id}/events?after=0", server.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(events.last().unwrap()["type"], "job_completed");
    server.log_barrier().await;
    let log = server.log();
    assert!(log.contains("\"request_id\":\"trace-77\""), "{log}");
    assert!(log.contains(&format!("\"job\":\"{id}\"")), "{log}");
    for secret in [
        "sig-s3cret",
        "cred-s3cret",
        "tok-s3cret",
        "pass-s3cret",
        "task-token-s3cret",
    ] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
        assert!(
            !serde_json::to_string(&events).unwrap().contains(secret),
            "{secret} leaked into events"
        );
    }
}

#[tokio::test]
async fn sigterm_ends_streams_with_a_final_event_and_the_job_resumes_later() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shutdown-timeout", "5s"]);
    let id = submit(
        &server,
        files(&origin, 1, 1_000_000, &Behavior::Stall { after: 100_000 }),
    )
    .await;
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/jobs/{id}/events", server.url))
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(ndjson(resp));
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.sigterm();
    let events = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.first().unwrap()["type"], "snapshot");
    assert_eq!(events.last().unwrap()["type"], "shutdown");
    let mut server = server;
    let status = tokio::task::spawn_blocking(move || {
        let s = server.child.wait().unwrap();
        (s, server)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "ferry serve exits 0 on SIGTERM");
    // The job was left unfinished, for the next start to resume.
    let again = Server::start(dir.path(), &[]);
    let job = again.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["status"], "downloading");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--header-read-timeout", "300ms"]);
    let addr = server.addr();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true), "the server closed the connection");
    // Well-behaved clients are unaffected.
    let ok = reqwest::get(format!("{}/healthz", server.url))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// Metric labels come from closed vocabularies: 50 requests with made-up
/// methods add no series to `/metrics` beyond the one `other` series.
#[tokio::test]
async fn made_up_methods_add_no_metric_series() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let series = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("ferry_http_request_duration_seconds_count"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let metrics = |client: reqwest::Client, url: String| async move {
        client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // One made-up method first, so its `other` series exists.
    let first = client
        .request(
            reqwest::Method::from_bytes(b"FIRSTMADEUP").unwrap(),
            format!("{}/healthz", server.url),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 405);
    let before = series(&metrics(client.clone(), server.url.clone()).await);
    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        let path = if i % 2 == 0 { "/healthz" } else { "/v1/jobs" };
        let resp = client
            .request(method, format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error(), "{}", resp.status());
    }
    let after = series(&metrics(client.clone(), server.url.clone()).await);
    let new: Vec<_> = after
        .iter()
        .map(|l| l.rsplit_once(' ').unwrap().0.to_owned())
        .filter(|name| !before.iter().any(|b| b.starts_with(name.as_str())))
        .collect();
    // At most: /v1/jobs's `other` series and /metrics's own GET series.
    assert!(
        new.iter()
            .all(|s| s.contains("method=\"other\"") || s.contains("route=\"/metrics\"")),
        "{new:?}"
    );
    assert!(new.len() <= 2, "{new:?}");
    assert!(!after.iter().any(|l| l.contains("MADEUP")), "{after:?}");
}

/// A read-only mount under a directory whose mode bits say "writable".
struct ReadOnlyMount(std::path::PathBuf);

impl ReadOnlyMount {
    fn over(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("mount")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "mount {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let d = dir.to_str().unwrap();
        run(&["--bind", d, d]);
        let mount = Self(dir.to_path_buf());
        run(&["-o", "remount,ro,bind", d]);
        mount
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// `/readyz` probes the storage for real: on a read-only mount (whose mode
/// bits still say writable) it answers 503 naming the storage.
#[tokio::test]
async fn readiness_probes_the_storage_with_a_real_write() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    let _ro = ReadOnlyMount::over(&files);
    assert!(!std::fs::metadata(&files).unwrap().permissions().readonly());
    let server = Server::start(dir.path(), &[]);
    let resp = reqwest::get(format!("{}/readyz", server.url))
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["checks"]["storage"]["status"], "unavailable", "{body}");
    assert!(
        body["checks"]["storage"]["error"]
            .as_str()
            .unwrap()
            .contains("probe file"),
        "{body}"
    );
    assert_eq!(body["checks"]["job_store"]["status"], "ok");
}
