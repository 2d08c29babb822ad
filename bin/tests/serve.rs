//! `ferry serve` as a process, driven over HTTP and by `ferry job`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use ferry_tests::origin::{Behavior, Origin};
use ferry_tests::pg::PgDatabase;
use ferry_tests::serve_process::Server as ServeProcess;
use ferry_tests::{generate, sha256_hex};

/// The ferry binary under test: `FERRY_BIN` (e.g. the release build, which
/// scripts/test.sh runs these tests against once more), else the test
/// build.
fn ferry_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("FERRY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ferry").to_owned())
    })
}

struct Server;

impl Server {
    fn start(data_dir: &Path, extra: &[&str]) -> ServeProcess {
        ServeProcess::start(ferry_bin(), data_dir, extra)
    }
}

/// The job store `ferry serve` runs on: the embedded SQLite default, or a
/// throwaway PostgreSQL database (`--database-url`).
enum Store {
    Sqlite,
    Postgres(PgDatabase),
}

impl Store {
    async fn postgres() -> Self {
        Store::Postgres(PgDatabase::create().await)
    }

    /// The store's URL, as `ferry serve` with `data_dir` uses it.
    fn url(&self, data_dir: &Path) -> String {
        match self {
            Store::Sqlite => format!("sqlite://{}", data_dir.join("ferry.db").display()),
            Store::Postgres(db) => db.url.clone(),
        }
    }

    /// Waits until the store holds a checkpoint with some bytes committed.
    async fn wait_for_a_checkpoint(&self, data_dir: &Path) {
        use ferry_domain::ports::CheckpointStorePort;
        let store = ferry_adapters::job_store::SqlJobStore::connect(&self.url(data_dir))
            .await
            .unwrap();
        for _ in 0..400 {
            let saved = store.list().await.unwrap_or_default();
            if saved
                .iter()
                .any(|(_, c)| c.as_ref().is_ok_and(|c| c.committed() > 0))
            {
                store.close().await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no checkpoint was saved");
    }

    /// `ferry serve` started on this store.
    fn start(&self, data_dir: &Path, extra: &[&str]) -> ServeProcess {
        let mut flags: Vec<&str> = extra.to_vec();
        if let Store::Postgres(db) = self {
            flags.extend(["--database-url", db.url.as_str()]);
        }
        let server = Server::start(data_dir, &flags);
        let wanted = match self {
            Store::Sqlite => "job store sqlite",
            Store::Postgres(_) => "job store postgres",
        };
        assert!(server.log().contains(wanted), "{}", server.log());
        server
    }
}

#[tokio::test]
async fn api_runs_a_twenty_file_job_and_reports_per_file_results() {
    twenty_file_job(Store::Sqlite).await;
}

#[tokio::test]
async fn api_runs_a_twenty_file_job_on_postgresql() {
    twenty_file_job(Store::postgres().await).await;
}

async fn twenty_file_job(store: Store) {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = store.start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let mut files = Vec::new();
    for i in 0..20 {
        let data = generate(50_000 + i * 100, 70 + i as u64);
        origin.serve(&format!("/j/{i}.bin"), data.clone(), Behavior::Normal);
        let sha = if i == 13 {
            "1".repeat(64)
        } else {
            sha256_hex(&data)
        };
        files.push(json!({ "source": origin.url(&format!("/j/{i}.bin")), "key": format!("f/{i}.bin"), "sha256": sha }));
    }
    let job = server
        .submit(&json!({ "files": files, "destination": "api" }))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let done = server.wait_terminal(&id).await;
    assert_eq!(done["status"], "completed_with_errors");
    assert_eq!(done["summary"]["succeeded"], 19);
    assert_eq!(done["summary"]["failed"], 1);
    assert_eq!(done["files"][13]["error"]["code"], "checksum_mismatch");
    assert!(dir.path().join("files/api/f/0.bin").exists());
    assert!(!dir.path().join("files/api/f/13.bin").exists());

    let list = server
        .get_json("/v1/jobs?status=completed_with_errors")
        .await;
    assert_eq!(list["jobs"][0]["id"], id.as_str());
    let again = client
        .delete(format!("{}/v1/jobs/{id}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
}

#[tokio::test]
async fn bad_requests_get_json_errors_naming_the_field_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-body", "4KiB"]);
    let client = reqwest::Client::new();
    let post = |body: String| {
        client
            .post(format!("{}/v1/jobs", server.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases = vec![
        (json!({"files": [{"source": "http://h/a", "key": "../x"}]}).to_string(), 400, "files[0].key"),
        (json!({"files": [{"source": "file:///etc/passwd", "key": "x"}]}).to_string(), 400, "files[0].source"),
        (json!({"files": [{"source": "http://h/a", "key": "a"}, {"source": "http://h/b", "key": "a"}]}).to_string(), 400, "files[1].key"),
        (json!({"files": [{"source": "http://h/a", "key": "a", "sha256": "xyz"}]}).to_string(), 400, "files[0].sha256"),
        (json!({"files": []}).to_string(), 400, "files"),
    ];
    for (body, status, field) in cases {
        let resp = post(body).await.unwrap();
        assert_eq!(resp.status(), status);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["field"], field, "{v}");
        assert_eq!(v["error"]["code"], "invalid_request");
    }
    let huge = json!({"files": [{"source": format!("http://h/{}", "a".repeat(8000)), "key": "a"}]})
        .to_string();
    let resp = post(huge).await.unwrap();
    assert_eq!(resp.status(), 413);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "body_too_large");
    let resp = post("{not json".into()).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_json"
    );
    // JSON of the wrong shape: 422, saying where.
    let resp = post(r#"{"files": [{"source": "http://h/a", "key": 7}]}"#.into())
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_json");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("invalid type"), "{message}");
    assert!(message.contains("column"), "{message}");
    // Not JSON at all: 415.
    let resp = client
        .post(format!("{}/v1/jobs", server.url))
        .header("content-type", "text/plain")
        .body(json!({"files": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "unsupported_media_type"
    );
    let list = server.get_json("/v1/jobs").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0);
    let missing = client
        .get(format!("{}/v1/jobs/job_missing", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let openapi = server.get_json("/v1/openapi.json").await;
    assert_eq!(openapi["openapi"], "3.1.0");
    assert!(openapi["paths"]["/v1/jobs/{id}"]["delete"].is_object());
    let health = server.get_json("/healthz").await;
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn a_job_survives_kill_9_and_completes_after_restart() {
    kill_9_then_restart(Store::Sqlite).await;
}

#[tokio::test]
async fn a_job_survives_kill_9_and_completes_after_restart_on_postgresql() {
    kill_9_then_restart(Store::postgres().await).await;
}

async fn kill_9_then_restart(store: Store) {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = generate(300_000, 90);
    let b = generate(3_000_000, 91);
    origin.serve("/r/a.bin", a.clone(), Behavior::Normal);
    // The first request for b stalls mid-body, past its second
    // checkpoint (at 2 MiB, which waits for the fsync of the first
    // interval and so names at least 1 MiB, whatever the disk's speed) and
    // before its third (3 MiB): the server is killed then.
    origin.serve(
        "/r/b.bin",
        b.clone(),
        Behavior::StallFirstRanged {
            times: 1,
            after: 2_700_000,
        },
    );
    let flags = ["--checkpoint-interval", "1MiB"];
    let server = store.start(dir.path(), &flags);
    let job = server
        .submit(&json!({ "files": [
            { "source": origin.url("/r/a.bin"), "key": "a.bin", "sha256": sha256_hex(&a) },
            { "source": origin.url("/r/b.bin"), "key": "b.bin", "sha256": sha256_hex(&b) } ] }))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    // Wait until b is running (and checkpointed) and a is done.
    for _ in 0..200 {
        let j = server.get_json(&format!("/v1/jobs/{id}")).await;
        if j["files"][0]["status"] == "succeeded" && j["files"][1]["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.wait_for_a_checkpoint(dir.path()).await;
    server.kill9();
    assert!(!dir.path().join("files/b.bin").exists());

    let server = store.start(dir.path(), &flags);
    let done = server.wait_terminal(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["files"][1]["attempts"], 2);
    assert_eq!(std::fs::read(dir.path().join("files/a.bin")).unwrap(), a);
    assert_eq!(std::fs::read(dir.path().join("files/b.bin")).unwrap(), b);
    let events = reqwest::get(format!(
        "http://{}/v1/jobs/{id}/events?after=0",
        server.addr()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let resumed_event = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["type"] == "file_resumed");
    // The restarted task continued from its checkpoint (an fsynced
    // interval: 1 MiB, or 2 MiB if the second fsync finished before the
    // stall): a conditional range request from there, not the whole file.
    let resumed_event = resumed_event.expect("a file_resumed event");
    assert_eq!(resumed_event["index"], 1);
    let offset = resumed_event["offset"].as_u64().unwrap();
    assert!(
        offset == 1_048_576 || offset == 2_097_152,
        "resumed from {offset}"
    );
    let resumed = origin
        .requests()
        .into_iter()
        .rfind(|r| r.path == "/r/b.bin")
        .unwrap();
    assert_eq!(
        resumed.range.as_deref(),
        Some(format!("bytes={offset}-").as_str()),
        "{resumed:?}"
    );
    assert!(resumed.if_range.is_some());
    let temps: Vec<_> = std::fs::read_dir(dir.path().join("files"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".ferry-tmp."))
        .collect();
    assert!(
        temps.is_empty(),
        "the killed process's temp file was swept: {temps:?}"
    );
}

/// `ferry serve` killed (`kill -9`) in a burst of small files: no file or
/// event a client was told about is lost. Every event a live stream showed
/// before the kill is in the store afterwards, with the same sequence
/// number and content (events are published only once durable, in group
/// commits), and no file whose `file_succeeded` was shown is fetched again
/// by the restarted server (its task state was durable with the event).
#[tokio::test]
async fn a_kill_9_in_a_burst_of_small_files_loses_no_acknowledged_file_or_event() {
    kill_9_in_a_burst(Store::Sqlite).await;
}

#[tokio::test]
async fn a_kill_9_in_a_burst_of_small_files_loses_nothing_on_postgresql() {
    kill_9_in_a_burst(Store::postgres().await).await;
}

async fn kill_9_in_a_burst(store: Store) {
    const FILES: usize = 300;
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--concurrency", "16", "--per-job-concurrency", "16"];
    let server = store.start(dir.path(), &flags);
    let mut files = Vec::new();
    let mut datas = Vec::new();
    for i in 0..FILES {
        let data = generate(4096, 5_000 + i as u64);
        let path = format!("/burst/{i}.bin");
        // About 40 ms a file: the burst lasts long enough to be cut.
        origin.serve(
            &path,
            data.clone(),
            Behavior::Throttled {
                bytes_per_tick: 1024,
                tick: Duration::from_millis(10),
            },
        );
        files.push(json!({ "source": origin.url(&path), "key": format!("b/{i}.bin"), "sha256": sha256_hex(&data) }));
        datas.push(data);
    }
    let job = server
        .submit(&json!({ "files": files, "destination": "burst" }))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();

    // A live stream of the job's events; what it shows is acknowledged.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let reader = {
        let seen = seen.clone();
        let url = format!("{}/v1/jobs/{id}/events?after=0", server.url);
        tokio::spawn(async move {
            let mut response = reqwest::get(url).await.unwrap();
            let mut pending = Vec::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                        seen.lock().unwrap().push(v);
                    }
                }
            }
        })
    };
    let succeeded = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["type"] == "file_succeeded")
            .count()
    };
    for _ in 0..600 {
        if succeeded(&seen.lock().unwrap()) >= 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the stream ends with the server")
        .unwrap();
    let acknowledged = seen.lock().unwrap().clone();
    let done_before = succeeded(&acknowledged);
    assert!(
        (60..FILES).contains(&done_before),
        "killed mid-burst: {done_before} of {FILES} files shown done"
    );
    let fetched_before: Vec<usize> = (0..FILES)
        .map(|i| {
            origin
                .requests()
                .iter()
                .filter(|r| r.path == format!("/burst/{i}.bin"))
                .count()
        })
        .collect();

    let server = store.start(dir.path(), &flags);
    let done = server.wait_terminal(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    for (i, data) in datas.iter().enumerate() {
        assert_eq!(
            &std::fs::read(dir.path().join(format!("files/burst/b/{i}.bin"))).unwrap(),
            data,
            "file {i}"
        );
    }
    let stored: Vec<Value> = reqwest::get(format!("{}/v1/jobs/{id}/events?after=0", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let events = |items: &[Value]| -> Vec<Value> {
        items
            .iter()
            .filter(|e| e["seq"].is_u64() && e["type"] != "snapshot")
            .cloned()
            .collect()
    };
    let stored = events(&stored);
    let acknowledged = events(&acknowledged);
    assert!(acknowledged.len() > 60, "{}", acknowledged.len());
    ferry_tests::assert_stored_or_superseded(&acknowledged, &stored);
    for event in acknowledged
        .iter()
        .filter(|e| e["type"] == "file_succeeded")
    {
        let i = event["index"].as_u64().unwrap() as usize;
        let fetched = origin
            .requests()
            .iter()
            .filter(|r| r.path == format!("/burst/{i}.bin"))
            .count();
        assert_eq!(
            fetched, fetched_before[i],
            "file {i} was shown done, yet fetched again after the restart"
        );
    }
}

#[tokio::test]
async fn job_cli_submits_waits_and_reports_through_exit_codes() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let data = generate(100_000, 92);
    origin.serve("/c/ok.bin", data.clone(), Behavior::Normal);
    let spec = dir.path().join("job.json");
    let write = |sha: &str| {
        std::fs::write(
            &spec,
            json!({ "files": [{ "source": origin.url("/c/ok.bin"), "key": "ok.bin", "sha256": sha }] }).to_string(),
        )
        .unwrap();
    };
    let server_url = server.url.clone();
    let ferry = move |args: &[&str]| {
        Command::new(ferry_bin())
            .args(args)
            .env("FERRY_SERVER", &server_url)
            .output()
            .unwrap()
    };
    write(&sha256_hex(&data));
    let spec_s = spec.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking({
        let spec_s = spec_s.clone();
        let ferry = ferry.clone();
        move || ferry(&["job", "submit", &spec_s, "--wait"])
    });
    let out = out.await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["status"], "completed");
    let id = job["id"].as_str().unwrap().to_owned();

    write(&"2".repeat(64));
    let bad = tokio::task::spawn_blocking(move || ferry(&["job", "submit", &spec_s, "--wait"]))
        .await
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(8),
        "every file failed: the job failed"
    );

    let status = Command::new(ferry_bin())
        .args(["job", "status", &id, "--server", &server.url])
        .output()
        .unwrap();
    assert!(status.status.success());
    let cancel = Command::new(ferry_bin())
        .args(["job", "cancel", &id, "--server", &server.url])
        .output()
        .unwrap();
    assert_eq!(
        cancel.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    assert!(String::from_utf8_lossy(&cancel.stderr).contains("already ended"));
    let unreachable = Command::new(ferry_bin())
        .args(["job", "status", "x", "--server", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(9));
}

#[tokio::test]
async fn api_runs_an_export_job_and_never_shows_the_provider_secret() {
    use ferry_tests::export_provider::{ExportProvider, Script};
    let origin = Origin::start().await.unwrap();
    let mut manifest = Vec::new();
    for i in 0..3 {
        let data = generate(30_000 + i * 10, 900 + i as u64);
        origin.serve(&format!("/x/{i}.bin"), data.clone(), Behavior::Normal);
        manifest.push(json!({ "source": origin.url(&format!("/x/{i}.bin")), "key": format!("x/{i}.bin"), "sha256": sha256_hex(&data) }));
    }
    let provider = ExportProvider::start(Script::ready_after(1, Value::Array(manifest)))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--min-poll-interval", "10ms"]);
    let client = reqwest::Client::new();

    // Files and an export together are refused, naming the field.
    let both = client
        .post(format!("{}/v1/jobs", server.url))
        .json(
            &json!({ "files": [{"source": "https://o.example/a", "key": "a"}],
                       "export": { "start_url": provider.start_url() }, "destination": "exp" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 400);
    let err: Value = both.json().await.unwrap();
    assert_eq!(err["error"]["field"], "export");

    let job = server
        .submit(&json!({
            "export": { "start_url": provider.start_url(), "request": { "dataset": "d-42" },
                        "poll": { "base_interval_ms": 20, "max_interval_ms": 50, "deadline_ms": 30000 } },
            "destination": "exp"
        }))
        .await;
    assert_eq!(job["status"], "pending");
    assert_eq!(job["summary"]["total"], 0);
    let id = job["id"].as_str().unwrap().to_owned();
    let done = server.wait_terminal(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["summary"]["succeeded"], 3);
    assert_eq!(done["export"]["poll"]["max_interval_ms"], 50);
    assert!(
        done["export"]["status_url"]
            .as_str()
            .unwrap()
            .ends_with("/exports/1")
    );
    assert!(!done.to_string().contains("provider-s3cret"), "{done}");
    assert_eq!(provider.starts().len(), 1);
    assert_eq!(provider.starts()[0].body["dataset"], "d-42");
    for i in 0..3 {
        assert!(dir.path().join(format!("files/exp/x/{i}.bin")).exists());
    }
}

#[tokio::test]
async fn readyz_and_metrics_report_memory_and_backpressure() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--admission-caps", "4,2,1", "--memory-budget", "48MiB"],
    );
    let ready = server.get_json("/readyz").await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["pressure"]["level"], "none", "{ready}");
    assert_eq!(ready["pressure"]["admitted"], 0);
    // NONE admits --concurrency (default 16).
    assert_eq!(ready["pressure"]["cap"], 16);
    // The monitor samples every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = server.get_text("/metrics").await;
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    assert_eq!(value("ferry_memory_budget_bytes"), (48u64 << 20) as f64);
    assert_eq!(value("ferry_memory_budget_in_use_bytes"), 0.0);
    let rss = value("ferry_memory_rss_bytes");
    assert!(rss > 1e6 && rss < 1e9, "{rss}");
    assert_eq!(value("ferry_pressure_level"), 0.0);
    assert_eq!(value("ferry_admission_cap"), 16.0);

    let out = Command::new(ferry_bin())
        .args(["serve", "--admission-caps", "1,3,6"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LIGHT,MODERATE,HEAVY"));
}

/// A job into Garage, its server killed at an exact point (between a part
/// and its checkpoint; during the checkpoint's transaction), restarted:
/// the task resumes from the checkpoint in the job store, the object is
/// right, and no upload or checkpoint is left.
#[tokio::test(flavor = "multi_thread")]
async fn an_s3_job_killed_at_a_checkpoint_resumes_from_the_job_store() {
    let env = ferry_tests::garage::garage();
    for (point, skip) in [
        ("ferry-before-checkpoint", 2),
        ("ferry-checkpoint-written", 2),
    ] {
        let origin = Origin::start().await.unwrap();
        let data = generate(24 << 20, 93);
        origin.serve("/j/big.bin", data.clone(), Behavior::Normal);
        let dir = tempfile::tempdir().unwrap();
        let prefix = ferry_tests::garage::unique_prefix("serve-crash");
        let flags = [
            "--endpoint-url",
            env.endpoint.as_str(),
            "--part-size",
            "5MiB",
        ];
        let failpoints = format!("{point}={skip}*off->return");
        // The kill-point build dies; the shipped build takes over.
        let crashtest = ferry_tests::crashtest_bin(env!("CARGO_BIN_EXE_ferry"));
        let server = ServeProcess::start_with_env(
            crashtest.to_str().unwrap(),
            dir.path(),
            &flags,
            &[("FAILPOINTS", failpoints.as_str())],
        );
        let job = server
            .submit(&json!({
                "destination": format!("s3://{}/{prefix}", env.bucket),
                "files": [{ "source": origin.url("/j/big.bin"), "key": "big.bin", "sha256": sha256_hex(&data) }]
            }))
            .await;
        let id = job["id"].as_str().unwrap().to_owned();
        let mut server = server;
        let died = tokio::task::spawn_blocking(move || {
            let status = server.child.wait().unwrap();
            (server, status)
        });
        let (server, status) = tokio::time::timeout(Duration::from_secs(60), died)
            .await
            .unwrap()
            .unwrap();
        assert!(status.code().is_none(), "{point}: killed by its kill point");
        drop(server);

        let server = Server::start(dir.path(), &flags);
        let done = server.wait_terminal(&id).await;
        assert_eq!(done["status"], "completed", "{point}: {done}");
        let resumed = origin
            .requests()
            .into_iter()
            .rfind(|r| r.path == "/j/big.bin")
            .unwrap();
        // Checkpoints: the new upload, part 1 (5 MiB), part 2 (killed
        // before or while it was saved): resumed after part 1.
        assert_eq!(resumed.range.as_deref(), Some("bytes=5242880-"), "{point}");
        let svc = ferry_tests::garage::service(&env.endpoint).await;
        let uploads = svc
            .list_incomplete_uploads(&env.bucket, Some(&prefix), Duration::ZERO)
            .await
            .unwrap();
        assert!(uploads.is_empty(), "{point}: {uploads:?}");
        let meta = svc
            .head(&env.bucket, &format!("{prefix}/big.bin"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(meta.size, 24 << 20);
        assert_eq!(meta.sha256_hex.as_deref(), Some(sha256_hex(&data).as_str()));
    }
}

/// `ferry job --server URL ARGS...`, run off the async runtime.
async fn ferry_job(server: &str, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(ferry_bin());
    command.args(["job", "--server", server]).args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// Asserts the exit code, showing stderr when it differs.
fn assert_exit(out: &std::process::Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The NDJSON items `ferry job watch` wrote to stderr.
fn watched_items(stderr: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

/// Event sequence numbers in the order shown.
fn shown_seqs(items: &[Value]) -> Vec<u64> {
    items
        .iter()
        .filter(|v| v["type"] != "snapshot")
        .filter_map(|v| v["seq"].as_u64())
        .collect()
}

/// `ferry job watch ID` without a terminal: the stream as NDJSON on stderr
/// (snapshot first, events in order, progress included), the final job on
/// stdout, exit 0; an unknown job exits 9.
#[tokio::test]
async fn job_watch_follows_the_event_stream_to_the_end() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--progress-interval", "50ms"]);
    let files: Vec<Value> = (0..3)
        .map(|i| {
            let data = generate(600_000, 700 + i);
            let path = format!("/w/{i}.bin");
            origin.serve(
                &path,
                data.clone(),
                Behavior::Throttled {
                    bytes_per_tick: 100_000,
                    tick: Duration::from_millis(100),
                },
            );
            json!({ "source": origin.url(&path), "key": format!("w/{i}.bin"), "sha256": sha256_hex(&data) })
        })
        .collect();
    let job = server
        .submit(&json!({ "files": files, "destination": "watch" }))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let out = ferry_job(&server.url, &["watch", &id]).await;
    assert_exit(&out, 0);
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["status"], "completed");
    let items = watched_items(&out.stderr);
    assert_eq!(items[0]["type"], "snapshot", "{items:?}");
    let seqs = shown_seqs(&items);
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    let count = |t: &str| items.iter().filter(|v| v["type"] == t).count();
    assert!(count("file_progress") >= 3, "{items:?}");
    assert_eq!(count("file_succeeded"), 3);
    assert_eq!(count("job_completed"), 1);

    let missing = ferry_job(&server.url, &["watch", "no-such-job"]).await;
    assert_exit(&missing, 9);
}

/// A server restart while `ferry job watch` follows a job: the watcher
/// reconnects with `after=` and shows every event once, in order, to the
/// end; the job (resumed by the new process) completes; exit 0.
#[tokio::test]
async fn job_watch_reconnects_across_a_server_restart_without_gap_or_duplicate() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--progress-interval", "50ms"];
    let first = Server::start(dir.path(), &flags);
    let data = generate(3_000_000, 777);
    origin.serve(
        "/r/slow.bin",
        data.clone(),
        Behavior::Throttled {
            bytes_per_tick: 100_000,
            tick: Duration::from_millis(100),
        },
    );
    let job = first
        .submit(&json!({ "files": [{ "source": origin.url("/r/slow.bin"), "key": "slow.bin", "sha256": sha256_hex(&data) }], "destination": "restart" }))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let addr = first.addr();
    let watcher = std::process::Command::new(ferry_bin())
        .args(["job", "--server", &first.url, "watch", &id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Restart the server mid-transfer (the file takes about 3 s), on the
    // same address.
    first.wait_status(&id, &["downloading"]).await;
    for _ in 0..400 {
        let j = first.get_json(&format!("/v1/jobs/{id}")).await;
        if j["summary"]["running"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let j = first.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(j["status"], "downloading", "restarted before the end: {j}");
    first.sigterm();
    let mut first = first;
    first.child.wait().unwrap();
    let _second = ServeProcess::start_on(ferry_bin(), &addr, dir.path(), &flags, &[]);
    let out = tokio::task::spawn_blocking(move || watcher.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_exit(&out, 0);
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["status"], "completed");
    let items = watched_items(&out.stderr);
    let seqs = shown_seqs(&items);
    assert!(
        seqs.windows(2).all(|w| w[1] > w[0]),
        "no duplicate: {seqs:?}"
    );
    // No gap: every stored event up to the end was shown.
    let stored: Vec<Value> = reqwest::get(format!("http://{addr}/v1/jobs/{id}/events?after=0"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] != "snapshot")
        .collect();
    // Everything after what the first snapshot reflected.
    assert_eq!(items[0]["type"], "snapshot");
    let from = items[0]["seq"].as_u64().unwrap();
    let stored_seqs: Vec<u64> = stored
        .iter()
        .filter_map(|v| v["seq"].as_u64())
        .filter(|s| *s > from)
        .collect();
    let shown_stored: Vec<u64> = seqs
        .iter()
        .copied()
        .filter(|s| stored_seqs.contains(s))
        .collect();
    assert_eq!(shown_stored, stored_seqs, "every stored event was shown");
    let shown: Vec<Value> = items
        .iter()
        .filter(|v| v["seq"].is_u64() && v["type"] != "snapshot")
        .cloned()
        .collect();
    ferry_tests::assert_stored_or_superseded(&shown, &stored);
    assert_eq!(
        items
            .iter()
            .filter(|v| v["type"] == "job_completed")
            .count(),
        1
    );
}

/// `ferry job watch` on a terminal (a pseudo-terminal made by `script`):
/// progress bars instead of NDJSON lines, then the final job and exit 0.
#[tokio::test]
async fn job_watch_on_a_terminal_draws_bars_not_json_lines() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--progress-interval", "50ms"]);
    let data = generate(1_000_000, 778);
    origin.serve(
        "/t/bar.bin",
        data.clone(),
        Behavior::Throttled {
            bytes_per_tick: 100_000,
            tick: Duration::from_millis(100),
        },
    );
    let job = server
        .submit(&json!({ "files": [{ "source": origin.url("/t/bar.bin"), "key": "bar.bin", "sha256": sha256_hex(&data) }], "destination": "tty" }))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let command = format!("{} job --server {} watch {id}", ferry_bin(), server.url);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("TERM", "xterm")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    // `script` merges the terminal's output into its stdout.
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}");
    assert!(screen.contains("file 0 ["), "a bar was drawn: {screen}");
    assert!(!screen.contains("\"type\":\"file_progress\""), "{screen}");
    assert!(screen.contains("\"status\": \"completed\""), "{screen}");
}

/// `ferry job submit --wait` of a job where one file of two fails: the job
/// completes with errors and the command exits 7.
#[tokio::test]
async fn a_job_with_a_failed_file_exits_7() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let good = generate(30_000, 93);
    origin.serve("/e/good.bin", good.clone(), Behavior::Normal);
    origin.serve("/e/bad.bin", generate(30_000, 94), Behavior::Normal);
    let spec = dir.path().join("mixed.json");
    std::fs::write(
        &spec,
        json!({ "files": [
            { "source": origin.url("/e/good.bin"), "key": "good.bin", "sha256": sha256_hex(&good) },
            { "source": origin.url("/e/bad.bin"), "key": "bad.bin", "sha256": "2".repeat(64) } ] })
        .to_string(),
    )
    .unwrap();
    let out = ferry_job(&server.url, &["submit", spec.to_str().unwrap(), "--wait"]).await;
    assert_exit(&out, 7);
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["status"], "completed_with_errors");
    assert_eq!(job["files"][1]["error"]["code"], "checksum_mismatch");
}

/// The data directory ferry serve makes is the owner's alone, and so are
/// the SQLite store and its journal files (they hold source URLs and task
/// tokens while jobs run).
#[tokio::test]
async fn the_data_dir_and_the_store_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("state");
    let server = ServeProcess::start(ferry_bin(), &data, &[]);
    let job = server
        .submit(&json!({
            "destination": "modes",
            "files": [{ "source": "https://files.example.com/a.bin", "key": "a.bin" }]
        }))
        .await;
    server.wait_terminal(job["id"].as_str().unwrap()).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    let mut checked = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("ferry.db") {
            assert_eq!(mode(&path), 0o600, "{name}");
            checked += 1;
        }
    }
    assert!(checked >= 1, "the store's files were checked");
}

/// The periodic orphan sweep, not only the startup pass: while the server
/// runs, a checkpoint of a finished file task (what a crash between a
/// file's end and its cleanup leaves, here written into the store by the
/// test) is found by the next sweep, its temp file removed and the
/// checkpoint deleted; a recent one is kept for the grace period.
#[tokio::test]
async fn the_periodic_sweep_discards_orphans_found_while_serving() {
    use ferry_domain::TransferId;
    use ferry_domain::ports::CheckpointStorePort;
    let origin = Origin::start().await.unwrap();
    origin.serve("/o.bin", generate(1000, 5), Behavior::Normal);
    let dir = tempfile::tempdir().unwrap();
    let server = Store::Sqlite.start(dir.path(), &["--orphan-sweep-interval", "1s"]);
    let mut finished = Vec::new();
    for key in ["old.bin", "recent.bin"] {
        let job = server
            .submit(&json!({ "files": [{ "source": origin.url("/o.bin"), "key": format!("out/{key}") }], "destination": "sweep" }))
            .await;
        let id = job["id"].as_str().unwrap().to_owned();
        assert_eq!(server.wait_terminal(&id).await["status"], "completed");
        finished.push(TransferId::for_task(
            &ferry_domain::JobId::parse(&id).unwrap(),
            0,
        ));
    }

    let store = ferry_adapters::job_store::SqlJobStore::connect(&Store::Sqlite.url(dir.path()))
        .await
        .unwrap();
    let out = dir.path().join("files/sweep/out");
    let recent_temp = out.join(".recent.bin.ferry-tmp.4000000000.01");
    let old_temp = out.join(".old.bin.ferry-tmp.4000000000.00");
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    // The recent one first, so the sweep that takes the old one saw it.
    let recent = ferry_domain::Checkpoint {
        saved_at_ms: now_ms,
        ..ferry_tests::temp_checkpoint(&recent_temp, "out/recent.bin", 10)
    };
    store.save(&finished[1], &recent).await.unwrap();
    let an_hour_ago = ferry_domain::Checkpoint {
        saved_at_ms: now_ms - 3_600_000,
        ..ferry_tests::temp_checkpoint(&old_temp, "out/old.bin", 10)
    };
    store.save(&finished[0], &an_hour_ago).await.unwrap();

    let mut swept = false;
    for _ in 0..200 {
        if !old_temp.exists() && store.load(&finished[0]).await.unwrap().is_none() {
            swept = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        swept,
        "no sweep within 5 s of a 1 s interval:\n{}",
        server.log()
    );
    assert!(
        recent_temp.exists(),
        "a checkpoint younger than the grace period is kept"
    );
    assert!(store.load(&finished[1]).await.unwrap().is_some());
    assert!(
        dir.path().join("files/sweep/out/old.bin").exists(),
        "the finished file itself is never touched"
    );
    server.log_barrier().await;
    assert!(
        server.log().contains("orphaned checkpoints cleaned up"),
        "{}",
        server.log()
    );
    store.close().await;
}

/// Retention: with `--retain-jobs 3s`, an ended job goes with its tasks,
/// events and checkpoints (the temp file a checkpoint names removed), a
/// few seconds after it ended; a running job is untouched.
#[tokio::test]
async fn retention_deletes_ended_jobs_and_keeps_running_ones() {
    use ferry_domain::ports::{CheckpointStorePort, JobStorePort};
    use ferry_domain::{JobId, TransferId};
    let origin = Origin::start().await.unwrap();
    origin.serve("/done.bin", generate(1000, 8), Behavior::Normal);
    origin.serve(
        "/hang.bin",
        generate(2_000_000, 9),
        Behavior::Stall { after: 1000 },
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Store::Sqlite.start(dir.path(), &["--retain-jobs", "3s"]);
    let running = server
        .submit(&json!({ "files": [{ "source": origin.url("/hang.bin"), "key": "hang.bin" }], "destination": "keep" }))
        .await;
    let running = running["id"].as_str().unwrap().to_owned();
    server.wait_status(&running, &["downloading"]).await;
    let done = server
        .submit(&json!({ "files": [{ "source": origin.url("/done.bin"), "key": "out/done.bin" }], "destination": "gone" }))
        .await;
    let done = done["id"].as_str().unwrap().to_owned();
    assert_eq!(server.wait_terminal(&done).await["status"], "completed");
    let ended_at = std::time::Instant::now();

    // What a crash before the task's cleanup would have left.
    let store = ferry_adapters::job_store::SqlJobStore::connect(&Store::Sqlite.url(dir.path()))
        .await
        .unwrap();
    let done_id = JobId::parse(&done).unwrap();
    let temp = dir
        .path()
        .join("files/gone/out/.done.bin.ferry-tmp.4000000000.00");
    store
        .save(
            &TransferId::for_task(&done_id, 0),
            &ferry_tests::temp_checkpoint(&temp, "out/done.bin", 10),
        )
        .await
        .unwrap();
    assert!(
        !store
            .events_after(&done_id, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );

    let client = reqwest::Client::new();
    let mut gone = false;
    for _ in 0..400 {
        let status = client
            .get(format!("{}/v1/jobs/{done}", server.url))
            .send()
            .await
            .unwrap()
            .status();
        if status == 404 {
            gone = true;
            break;
        }
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        gone,
        "the ended job outlived 10 s of a 3 s retention:\n{}",
        server.log()
    );
    assert!(
        ended_at.elapsed() >= Duration::from_secs(2),
        "deleted {:?} after it ended, before its retention",
        ended_at.elapsed()
    );
    assert!(store.get(&done_id).await.unwrap().is_none());
    assert!(store.task(&done_id, 0).await.unwrap().is_none());
    assert!(
        store
            .events_after(&done_id, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .load(&TransferId::for_task(&done_id, 0))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !temp.exists(),
        "the staged bytes a checkpoint named are discarded"
    );
    assert!(
        dir.path().join("files/gone/out/done.bin").exists(),
        "the file written is the user's: never deleted"
    );
    let still = server.get_json(&format!("/v1/jobs/{running}")).await;
    assert_eq!(still["status"], "downloading", "{still}");
    server.log_barrier().await;
    assert!(
        server.log().contains("retention: ended jobs deleted"),
        "{}",
        server.log()
    );
    let cancelled = client
        .delete(format!("{}/v1/jobs/{running}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    store.close().await;
}

/// `--max-export-phases`: past the limit an export job waits, pending
/// (nothing asked of the provider), until a phase ends.
#[tokio::test]
async fn export_phases_past_the_limit_wait_pending() {
    use ferry_tests::export_provider::{ExportProvider, Outcome, Script};
    let provider = ExportProvider::start(Script {
        outcome: Outcome::Never,
        ..Script::ready_after(0, json!([]))
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--max-export-phases", "1", "--min-poll-interval", "10ms"],
    );
    let export = json!({ "export": { "start_url": provider.start_url(),
        "poll": { "base_interval_ms": 50, "max_interval_ms": 50, "deadline_ms": 600_000 } },
        "destination": "phases" });
    let first = server.submit(&export).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server.wait_status(&first, &["exporting"]).await;
    let second = server.submit(&export).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Long enough for the second to start if it could: the first polls
    // every 50 ms meanwhile.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        server.get_json(&format!("/v1/jobs/{second}")).await["status"],
        "pending"
    );
    assert_eq!(provider.starts().len(), 1, "one phase at a time");
    let cancelled = reqwest::Client::new()
        .delete(format!("{}/v1/jobs/{first}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    server.wait_status(&second, &["exporting"]).await;
    assert_eq!(provider.starts().len(), 2);
}
