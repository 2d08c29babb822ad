//! The attack suite: `ferry serve` as a process, attacked over real sockets.
//!
//! - SSRF: every spelling of loopback, link-local metadata, a redirect from
//!   an allowed origin, an export provider on loopback; a canary listener on
//!   loopback must see zero connections.
//! - Authentication: missing, wrong and other-tenant tokens; 0.0.0.0 without
//!   tokens refuses to start, with tokens refuses anonymous submissions.
//! - Limits: bodies, header count and size, URL and key length, traversal
//!   and CR/LF keys, files per job, submissions per minute, streams per
//!   caller, 1,000 slowloris sockets while /healthz keeps answering, idle
//!   keep-alive connections closed.
//! - Secrets: every log line, API answer and /metrics output of the suite is
//!   scanned for the secrets it used.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use ferry_tests::origin::{Behavior, Origin};
use ferry_tests::serve_process::Server;
use ferry_tests::{generate, sha256_hex};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// Secrets the suite puts in URLs and tokens; none may come back out.
const URL_SECRETS: [&str; 5] = [
    "hunter2-pass",
    "AKIASECRETCREDENTIAL",
    "deadbeefsignature0123",
    "tok-secret-7781",
    "sigsecret-4412",
];

/// A listener on loopback that counts every connection made to it.
struct Canary {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Canary {
    async fn start() -> Self {
        let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = v4.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let mut listeners = vec![v4];
        // [::1] on the same port where the machine has IPv6.
        if let Ok(v6) =
            TcpListener::bind(SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], port))).await
        {
            listeners.push(v6);
        }
        for listener in listeners {
            let hits = hits.clone();
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\ncanary")
                        .await;
                }
            });
        }
        Self { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// `ferry token create ARGS`: the token and its tokens-file line.
fn create_token(args: &[&str]) -> (String, String) {
    let out = std::process::Command::new(FERRY)
        .args(["token", "create"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ferry token create failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.lines();
    let token = it.next().unwrap().to_owned();
    let line = it.next().unwrap().to_owned();
    assert!(
        !line.contains(&token),
        "the tokens file must hold only the hash"
    );
    (token, line)
}

/// Held by the tests that compare times and by those that load the machine
/// most (the refused-request flood, the slowloris sockets), so that no
/// timing is measured beside them.
static QUIET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A tokens file with three callers; returns (alice, bob, admin) tokens.
fn tokens_file(dir: &Path) -> (std::path::PathBuf, [String; 3]) {
    let mut lines = Vec::new();
    let mut tokens = Vec::new();
    for args in [&["alice"][..], &["bob"], &["ops", "--admin"]] {
        let (token, line) = create_token(args);
        tokens.push(token);
        lines.push(line);
    }
    let path = dir.join("tokens");
    std::fs::write(&path, lines.join("\n")).unwrap();
    (path, tokens.try_into().unwrap())
}

/// Everything the suite saw from the server, for the secret scan.
#[derive(Default)]
struct Seen(std::sync::Mutex<Vec<String>>);

impl Seen {
    fn add(&self, text: impl Into<String>) {
        self.0.lock().unwrap().push(text.into());
    }

    fn assert_clean(&self, secrets: &[&str]) {
        let all = self.0.lock().unwrap().join("\n");
        assert!(!all.is_empty());
        for secret in secrets {
            assert!(
                !all.contains(secret),
                "secret {secret:?} leaked; context: {}",
                context(&all, secret)
            );
        }
    }
}

fn context(all: &str, needle: &str) -> String {
    let at = all.find(needle).unwrap_or(0);
    all[at.saturating_sub(200)..(at + 200).min(all.len())].to_owned()
}

async fn call(
    seen: &Seen,
    req: reqwest::RequestBuilder,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    seen.add(text.clone());
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

async fn wait_terminal(
    seen: &Seen,
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Value {
    for _ in 0..600 {
        let mut req = http.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let (_, _, job) = call(seen, req).await;
        if matches!(
            job["status"].as_str(),
            Some("completed" | "completed_with_errors" | "failed" | "cancelled")
        ) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job never ended: {url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssrf_matrix_never_reaches_the_canary() {
    let canary = Canary::start().await;
    let p = canary.port;
    // The one origin the operator allowed: 127.0.0.2.
    let origin = Origin::bind("127.0.0.2:0".parse().unwrap(), None)
        .await
        .unwrap();
    let data = generate(200_000, 3);
    origin.serve("/ok.bin", data.clone(), Behavior::Normal);
    origin.serve(
        "/hop",
        "",
        Behavior::Redirect {
            to: format!("http://127.0.0.1:{p}/after-redirect"),
        },
    );
    origin.serve(
        "/hop-mapped",
        "",
        Behavior::Redirect {
            to: format!("http://[::ffff:127.0.0.1]:{p}/after-redirect"),
        },
    );
    origin.serve(
        "/hop-file",
        "",
        Behavior::Redirect {
            to: "file:///etc/passwd".into(),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        FERRY,
        dir.path(),
        &["--log-format", "json"],
        &[
            ("FERRY_ALLOW_SOURCE", "127.0.0.2"),
            (
                "FERRY_LOG",
                "debug,hyper=info,h2=info,sqlx=warn,aws_config=error,aws_smithy_runtime=error",
            ),
        ],
    );
    let seen = Seen::default();
    let http = reqwest::Client::new();

    let attacks = [
        format!("http://localhost:{p}/name"),
        format!("http://127.0.0.1:{p}/v4"),
        format!("http://[::1]:{p}/v6"),
        format!("http://[::ffff:127.0.0.1]:{p}/mapped"),
        format!("http://[::127.0.0.1]:{p}/compatible"),
        format!("http://0x7f000001:{p}/hex"),
        format!("http://2130706433:{p}/decimal"),
        format!("http://0177.0.0.1:{p}/octal"),
        format!("http://127.1:{p}/short"),
        format!("http://0.0.0.0:{p}/unspecified"),
        format!(
            "http://u:hunter2-pass@127.0.0.1:{p}/userinfo?X-Amz-Credential=AKIASECRETCREDENTIAL&X-Amz-Signature=deadbeefsignature0123"
        ),
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/".to_owned(),
        "http://[fd00:ec2::254]/latest/meta-data/".to_owned(),
        "http://10.0.0.1/internal".to_owned(),
        "http://100.100.100.200/alibaba-metadata".to_owned(),
        origin.url("/hop"),
        origin.url("/hop-mapped"),
        format!("{}?token=tok-secret-7781", origin.url("/hop")),
    ];
    let mut files: Vec<Value> = attacks
        .iter()
        .enumerate()
        .map(|(i, url)| json!({ "source": url, "key": format!("attack/{i}") }))
        .collect();
    files.push(json!({ "source": origin.url("/hop-file"), "key": "attack/file-redirect" }));
    files.push(json!({ "source": origin.url("/ok.bin"), "key": "allowed.bin", "sha256": sha256_hex(&data) }));
    let (status, _, job) = call(
        &seen,
        http.post(format!("{}/v1/jobs", server.url))
            .json(&json!({ "files": files, "destination": "ssrf" })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap();
    let done = wait_terminal(&seen, &http, &format!("{}/v1/jobs/{id}", server.url), None).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    let results = done["files"].as_array().unwrap();
    for (i, file) in results.iter().enumerate().take(attacks.len()) {
        assert_eq!(
            file["error"]["code"], "source_forbidden",
            "attack {} was not refused by the guard: {file}",
            attacks[i]
        );
        let message = file["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("address, which ferry does not fetch from"),
            "{message}"
        );
    }
    // The class is named; the address a name resolved to is not (attack 0
    // is `localhost`, whose URL holds no address).
    let by_name = results[0]["error"]["message"].as_str().unwrap();
    assert!(attacks[0].contains("localhost"), "{}", attacks[0]);
    assert!(!by_name.contains("127.0.0.1"), "{by_name}");
    assert!(
        results[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("loopback"),
        "{}",
        results[0]
    );
    assert!(
        results[11]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("link-local"),
        "{}",
        results[11]
    );
    // A redirect to file:// is never followed (refused by the policy, or
    // left as the 302 it is).
    let file_hop = &results[attacks.len()];
    assert_eq!(file_hop["status"], "failed", "{file_hop}");
    let message = file_hop["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("file://") || message.contains("HTTP 302"),
        "{file_hop}"
    );
    assert!(!dir.path().join("files/ssrf/attack/file-redirect").exists());
    let allowed = &results[attacks.len() + 1];
    assert_eq!(allowed["status"], "succeeded", "{allowed}");
    assert_eq!(
        std::fs::read(dir.path().join("files/ssrf/allowed.bin")).unwrap(),
        data
    );

    // The event history (NDJSON, ends after the terminal event) goes to
    // the secret scan too.
    let (_, _, events) = call(
        &seen,
        http.get(format!("{}/v1/jobs/{id}/events?after=0", server.url)),
    )
    .await;
    assert!(events.as_str().unwrap().contains("job_completed"));

    // An export provider on loopback is refused the same way.
    let (status, _, job) = call(
        &seen,
        http.post(format!("{}/v1/jobs", server.url)).json(&json!({
            "export": { "start_url": format!("http://127.0.0.1:{p}/exports?sig=sigsecret-4412") },
            "destination": "ssrf-export"
        })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap();
    let done = wait_terminal(&seen, &http, &format!("{}/v1/jobs/{id}", server.url), None).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["failure"].as_str().unwrap().contains("not allowed"),
        "{done}"
    );

    // file:// is refused by the API without --file-root.
    let (status, _, job) = call(
        &seen,
        http.post(format!("{}/v1/jobs", server.url)).json(&json!({
            "files": [{ "source": "file:///etc/passwd", "key": "passwd" }],
            "destination": "ssrf-file"
        })),
    )
    .await;
    if status == StatusCode::ACCEPTED {
        let id = job["id"].as_str().unwrap();
        let done = wait_terminal(&seen, &http, &format!("{}/v1/jobs/{id}", server.url), None).await;
        assert_eq!(
            done["files"][0]["error"]["code"], "source_forbidden",
            "{done}"
        );
    } else {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{job}");
    }
    assert!(!dir.path().join("files/ssrf-file/passwd").exists());

    let (_, _, metrics) = call(&seen, http.get(format!("{}/metrics", server.url))).await;
    assert!(metrics.as_str().unwrap().contains("ferry_"));
    assert_eq!(canary.hits(), 0, "the canary on loopback was reached");
    server.log_barrier().await;
    seen.add(server.log());
    seen.assert_clean(&URL_SECRETS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sources_stay_inside_the_file_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("exports");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("inside.txt"), b"inside").unwrap();
    std::fs::write(dir.path().join("secret.txt"), b"outside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link.txt")).unwrap();
    let server = Server::start(
        FERRY,
        &dir.path().join("data"),
        &["--file-root", root.to_str().unwrap()],
    );
    let url = |p: &Path| format!("file://{}", p.display());
    let job = server
        .submit(&json!({
            "files": [
                { "source": url(&root.join("inside.txt")), "key": "inside.txt" },
                { "source": url(&root.join("link.txt")), "key": "link.txt" },
                { "source": url(&root.join("../secret.txt")), "key": "dotdot.txt" },
                { "source": url(&dir.path().join("secret.txt")), "key": "direct.txt" },
            ],
            "destination": "files"
        }))
        .await;
    let done = server.wait_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(done["files"][0]["status"], "succeeded", "{done}");
    for i in 1..4 {
        assert_eq!(
            done["files"][i]["error"]["code"], "source_forbidden",
            "{done}"
        );
    }
    let out = dir.path().join("data/files/files");
    assert_eq!(std::fs::read(out.join("inside.txt")).unwrap(), b"inside");
    assert!(!out.join("link.txt").exists() && !out.join("direct.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_are_required_and_scoped() {
    let origin = Origin::start().await.unwrap();
    let data = generate(10_000, 9);
    origin.serve("/a.bin", data.clone(), Behavior::Normal);
    let dir = tempfile::tempdir().unwrap();
    let (tokens, [alice, bob, ops]) = tokens_file(dir.path());
    let server = Server::start(
        FERRY,
        &dir.path().join("data"),
        &[
            "--tokens",
            tokens.to_str().unwrap(),
            "--jobs-per-minute",
            "3",
            "--max-streams-per-caller",
            "1",
        ],
    );
    let seen = Seen::default();
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", server.url);
    // Each tenant writes under its own name (the default scope).
    let job_body = json!({ "files": [{ "source": origin.url("/a.bin"), "key": "a.bin" }], "destination": "alice/tok" });
    let bob_body = json!({ "files": [{ "source": origin.url("/a.bin"), "key": "a.bin" }], "destination": "bob/tok" });

    // Missing and wrong tokens.
    let (status, headers, body) = call(&seen, http.post(url("/v1/jobs")).json(&job_body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _, _) = call(
        &seen,
        http.post(url("/v1/jobs"))
            .bearer_auth("fy_0000")
            .json(&job_body),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = call(
        &seen,
        http.get(url("/v1/jobs"))
            .header("authorization", "Basic YWxpY2U6eA=="),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = call(&seen, http.get(url("/metrics"))).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "/metrics is protected unless --public-metrics"
    );
    for open in ["/healthz", "/readyz", "/v1/openapi.json"] {
        let (status, _, _) = call(&seen, http.get(url(open))).await;
        assert_eq!(status, StatusCode::OK, "{open}");
    }

    // Alice's job: hers and the admin's, nobody else's.
    let (status, _, job) = call(
        &seen,
        http.post(url("/v1/jobs"))
            .bearer_auth(&alice)
            .json(&job_body),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["owner"], "alice");
    let id = job["id"].as_str().unwrap().to_owned();
    let done = wait_terminal(&seen, &http, &url(&format!("/v1/jobs/{id}")), Some(&alice)).await;
    assert_eq!(done["status"], "completed");
    for path in [format!("/v1/jobs/{id}"), format!("/v1/jobs/{id}/events")] {
        let (status, _, body) = call(&seen, http.get(url(&path)).bearer_auth(&bob)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "bob read {path}: {body}");
    }
    let (status, _, _) = call(
        &seen,
        http.delete(url(&format!("/v1/jobs/{id}")))
            .bearer_auth(&bob),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, list) = call(&seen, http.get(url("/v1/jobs")).bearer_auth(&bob)).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0, "{list}");
    // Bob's all-jobs stream holds only his own jobs: none.
    let mut stream = http
        .get(url("/v1/events"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let first = stream.chunk().await.unwrap().unwrap();
    let snapshot: serde_json::Value =
        serde_json::from_slice(first.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["jobs"], serde_json::json!([]), "{snapshot}");
    drop(stream);
    let (_, _, list) = call(&seen, http.get(url("/v1/jobs")).bearer_auth(&alice)).await;
    assert_eq!(list["jobs"][0]["id"], id.as_str());
    let (_, _, list) = call(&seen, http.get(url("/v1/jobs")).bearer_auth(&ops)).await;
    assert_eq!(list["jobs"][0]["id"], id.as_str());
    let (status, _, _) = call(
        &seen,
        http.get(url(&format!("/v1/jobs/{id}"))).bearer_auth(&ops),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, metrics) = call(&seen, http.get(url("/metrics")).bearer_auth(&ops)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("ferry_http_request_duration_seconds")
    );

    // Streams per caller: one open stream, a second is refused.
    let first = http
        .get(url(&format!("/v1/jobs/{id}/events")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    // The job has ended: the stream ends after its terminal event, and
    // the slot is freed when it does.
    let text = first.text().await.unwrap();
    seen.add(text);
    let open = http
        .get(url("/v1/events"))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::OK);
    let (status, headers, body) = call(&seen, http.get(url("/v1/events")).bearer_auth(&ops)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "too_many_streams");
    assert!(headers.contains_key("retry-after"));
    drop(open);

    // Submissions per minute: alice has used 1 of 3.
    for _ in 0..2 {
        let (status, _, _) = call(
            &seen,
            http.post(url("/v1/jobs"))
                .bearer_auth(&alice)
                .json(&job_body),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, headers, body) = call(
        &seen,
        http.post(url("/v1/jobs"))
            .bearer_auth(&alice)
            .json(&job_body),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Bob's budget is his own.
    let (status, _, _) = call(
        &seen,
        http.post(url("/v1/jobs")).bearer_auth(&bob).json(&bob_body),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // ferry job with and without the token.
    let out = std::process::Command::new(FERRY)
        .args(["job", "--server", &server.url, "status", &id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 401"));
    let out = std::process::Command::new(FERRY)
        .args(["job", "--server", &server.url, "status", &id])
        .env("FERRY_TOKEN", &alice)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    seen.add(server.log());
    seen.assert_clean(&[alice.as_str(), bob.as_str(), ops.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_listen_needs_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(FERRY)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--tokens"),
        "{stderr}"
    );

    let (tokens, [alice, _, _]) = tokens_file(dir.path());
    let server = Server::start_on(
        FERRY,
        "0.0.0.0:0",
        &dir.path().join("data"),
        &["--tokens", tokens.to_str().unwrap()],
        &[],
    );
    let port = server.addr().rsplit(':').next().unwrap().to_owned();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let body = json!({ "files": [{ "source": "https://example.com/x", "key": "x" }] });
    let resp = http
        .post(format!("{base}/v1/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = http
        .get(format!("{base}/v1/jobs"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_with_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        FERRY,
        dir.path(),
        &[
            "--max-body",
            "64KiB",
            "--max-files-per-job",
            "3",
            "--max-headers",
            "32",
            "--max-header-bytes",
            "8KiB",
        ],
    );
    let http = reqwest::Client::new();
    let jobs = format!("{}/v1/jobs", server.url);
    let submit = |files: Value| http.post(&jobs).json(&json!({ "files": files }));
    let expect_400 = |field: &'static str| {
        move |(status, body): (StatusCode, Value)| {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(body["error"]["field"].as_str().unwrap(), field, "{body}");
        }
    };
    async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
    let long_url = format!("https://example.com/{}", "a".repeat(9000));
    expect_400("files[0].source")(send(submit(json!([{ "source": long_url, "key": "k" }]))).await);
    for key in [
        "../etc/passwd",
        "a/../../b",
        "/abs/path",
        "a\r\nX-Injected: 1",
        "nul\0byte",
        &"k".repeat(1025),
    ] {
        expect_400("files[0].key")(
            send(submit(
                json!([{ "source": "https://example.com/x", "key": key }]),
            ))
            .await,
        );
    }
    expect_400("files[0].source")(
        send(submit(
            json!([{ "source": "gopher://example.com/x", "key": "k" }]),
        ))
        .await,
    );
    let four: Vec<Value> = (0..4)
        .map(|i| json!({ "source": "https://example.com/x", "key": format!("k{i}") }))
        .collect();
    expect_400("files")(send(submit(json!(four))).await);

    let (status, body) = send(
        http.post(&jobs)
            .header("content-type", "application/json")
            .body(vec![b' '; 100 * 1024]),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    // Too many headers, and one header too large: 431 from hyper. A fresh
    // connection per request: the server closes a connection after a 413 or
    // a 431, and a pooled one could be caught closing.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut req = http.get(format!("{}/healthz", server.url));
    for i in 0..40 {
        req = req.header(format!("x-h{i}"), "v");
    }
    assert_eq!(
        req.send().await.unwrap().status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let big = "v".repeat(10 * 1024);
    let status = http
        .get(format!("{}/healthz", server.url))
        .header("x-big", big)
        .send()
        .await
        .map(|r| r.status());
    assert!(
        matches!(
            status,
            Ok(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE) | Err(_)
        ),
        "{status:?}"
    );
    assert_eq!(
        http.get(format!("{}/healthz", server.url))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_slowloris_sockets_do_not_stop_healthz() {
    let _quiet = QUIET.lock().await;
    // This process opens a thousand sockets (the server raises its own
    // limit at start).
    let limit = ferry_adapters::system::raise_open_file_limit();
    assert!(limit.is_none_or(|n| n >= 1200), "open-file limit {limit:?}");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(FERRY, dir.path(), &["--header-read-timeout", "3s"]);
    // The server's soft limit of open files is its hard one.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect();
    assert_eq!(open_files[0], open_files[1], "{limits}");
    let addr = server.addr();
    let mut sockets = Vec::new();
    for _ in 0..1000 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .await
            .unwrap();
        sockets.push(s);
    }
    // Dribble a byte on each while /healthz is asked on fresh connections.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for round in 0..5 {
        for s in sockets.iter_mut().step_by(7) {
            let _ = s.write_all(b"a").await;
        }
        let started = std::time::Instant::now();
        let resp = http.get(format!("{}/healthz", server.url)).send().await;
        let status = resp.map(|r| r.status());
        assert_eq!(status.ok(), Some(StatusCode::OK), "round {round}");
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // After the header-read timeout the server has closed them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut closed = 0;
    for s in &mut sockets {
        let mut buf = [0u8; 256];
        // Whatever the server said last, the socket must reach EOF.
        loop {
            match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => {
                    closed += 1;
                    break;
                }
                Ok(Ok(_)) => {}
                Err(_) => break,
            }
        }
    }
    assert_eq!(closed, sockets.len(), "slowloris sockets left open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(FERRY, dir.path(), &["--header-read-timeout", "1s"]);
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Idle: no next request. The server closes the connection.
    let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
}

/// DNS rebinding and WebSocket abuse on an API without tokens: a foreign
/// `Host` gets 421 and changes nothing; a cross-site WebSocket upgrade gets
/// 403; a 1 MiB WebSocket message closes the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebinding_hosts_and_websocket_abuse_are_refused() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};

    let origin = Origin::start().await.unwrap();
    origin.serve(
        "/slow.bin",
        generate(3_000_000, 31),
        Behavior::Throttled {
            bytes_per_tick: 100_000,
            tick: Duration::from_millis(100),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(FERRY, dir.path(), &["--allow-source", "127.0.0.1"]);
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", server.url);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let job = json!({ "files": [{ "source": origin.url("/slow.bin"), "key": "slow.bin" }], "destination": "ws" });

    // A page that rebinds its own name to 127.0.0.1 sends that name.
    for path in ["/healthz", "/v1/jobs"] {
        let resp = http
            .get(url(path))
            .header("host", format!("rebind.evil.example:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST, "{path}");
    }
    let refused = http
        .post(url("/v1/jobs"))
        .header("host", "rebind.evil.example")
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::MISDIRECTED_REQUEST);
    let listed: Value = http
        .get(url("/v1/jobs"))
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["jobs"].as_array().unwrap().len(),
        0,
        "nothing was submitted"
    );

    let created: Value = http
        .post(url("/v1/jobs"))
        .json(&job)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let ws_url = format!("{}/v1/jobs/{id}/ws", server.url.replace("http://", "ws://"));

    // Another site's page.
    let mut cross = ws_url.clone().into_client_request().unwrap();
    cross
        .headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(cross).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("a cross-site upgrade was accepted: {:?}", other.map(|_| ())),
    }

    // Its own page may; a 1 MiB message closes the socket.
    let mut same = ws_url.into_client_request().unwrap();
    same.headers_mut()
        .insert("origin", server.url.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(same).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(first, Message::Text(_)), "{first:?}");
    // A small message is fine: events keep coming.
    ws.send(Message::Text("hello".into())).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(next, Message::Text(_)), "{next:?}");
    let _ = ws.send(Message::Text("x".repeat(1 << 20).into())).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(_)) | Err(_) => return true,
                Ok(_) => {}
            }
        }
        true
    })
    .await
    .unwrap();
    assert!(closed);
    let job_now: Value = http
        .get(url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        job_now["status"], "downloading",
        "the socket closed before the job ended: {job_now}"
    );
}

/// An export job cannot make ferry poll a provider in a tight loop: a
/// 1 ms poll interval is refused with 400 naming the field, and nothing is
/// stored or started.
#[tokio::test]
async fn a_one_millisecond_poll_policy_is_refused() {
    let canary = Canary::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(FERRY, dir.path(), &[]);
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v1/jobs", server.url))
        .json(&json!({
            "export": { "start_url": format!("http://127.0.0.1:{}/start", canary.port),
                        "poll": { "base_interval_ms": 1, "max_interval_ms": 1, "deadline_ms": 604_800_000 } },
            "destination": "flood"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"]["field"], "export.poll.base_interval_ms",
        "{body}"
    );
    let listed: Value = http
        .get(format!("{}/v1/jobs", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(canary.hits(), 0);
}

/// A flood of refused requests (no token) for 10 s: every one is counted in
/// `/metrics`, and the server's log grows by summary lines, not a line per
/// request (under 1 MB in all).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_request_flood_writes_a_bounded_log() {
    let _quiet = QUIET.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (tokens, [_alice, _bob, ops]) = tokens_file(dir.path());
    let server = Server::start(
        FERRY,
        &dir.path().join("data"),
        &["--tokens", tokens.to_str().unwrap(), "--public-metrics"],
    );
    let url = format!("{}/v1/jobs", server.url);
    let started = std::time::Instant::now();
    let sent = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (url, sent) = (url.clone(), sent.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while started.elapsed() < Duration::from_secs(10) {
                    let resp = http
                        .post(&url)
                        .json(&json!({ "files": [], "destination": "" }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 1_000, "the flood was a flood: {sent} requests");
    let metrics = server.get_text("/metrics").await;
    let counted: usize = metrics
        .lines()
        .find(|l| l.starts_with("ferry_http_refused_total{status=\"401\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert_eq!(counted, sent, "every refusal is counted");
    let log = server.log();
    assert!(
        log.len() < 1_000_000,
        "log of {} bytes for {sent} refusals",
        log.len()
    );
    // The admin token still works, and its request is logged as usual.
    let ok = reqwest::Client::new()
        .get(format!("{}/v1/jobs", server.url))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

/// A client or Step Functions retry of `POST /v1/jobs` with the same
/// `Idempotency-Key` and body gets the first job back (200) and makes no
/// second one, even when the retries race; the same key with another body
/// is 422; keys belong to their token (another owner's same key is a new
/// job); a malformed key is 400 naming the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_idempotency_key_makes_one_job() {
    let seen = Seen::default();
    let dir = tempfile::tempdir().unwrap();
    let (tokens, [alice, bob, ops]) = tokens_file(dir.path());
    let server = Server::start(FERRY, dir.path(), &["--tokens", tokens.to_str().unwrap()]);
    let http = reqwest::Client::new();
    let url = format!("{}/v1/jobs", server.url);
    let job = json!({
        "destination": "alice/idem",
        "files": [{ "source": "https://files.example.com/a.bin", "key": "a.bin" }]
    });
    let mut bobs_job = job.clone();
    bobs_job["destination"] = json!("bob/idem");
    let post = |token: &str, key: &str, body: &Value| {
        http.post(&url)
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body)
    };
    // Five retries at once, then one more.
    let racing =
        futures::future::join_all((0..5).map(|_| call(&seen, post(&alice, "order-42", &job))))
            .await;
    let ids: std::collections::BTreeSet<String> = racing
        .iter()
        .map(|(status, _, body)| {
            assert!(
                *status == StatusCode::ACCEPTED || *status == StatusCode::OK,
                "{status}: {body}"
            );
            body["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one job for one key: {ids:?}");
    let accepted = racing
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::ACCEPTED)
        .count();
    assert_eq!(accepted, 1, "exactly one 202");
    let (status, _, again) = call(&seen, post(&alice, "order-42", &job)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"].as_str(), ids.iter().next().map(String::as_str));
    let (_, _, listed) = call(&seen, http.get(&url).bearer_auth(&alice)).await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "{listed}");

    // The same key with another request.
    let mut other = job.clone();
    other["destination"] = json!("alice/elsewhere");
    let (status, _, body) = call(&seen, post(&alice, "order-42", &other)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    assert_eq!(body["error"]["field"], "Idempotency-Key");

    // Bob's "order-42" is his own job.
    let (status, _, bobs) = call(&seen, post(&bob, "order-42", &bobs_job)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{bobs}");
    assert_ne!(bobs["id"], again["id"]);

    // A malformed key.
    let (status, _, body) = call(&seen, post(&alice, "has space", &job)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "Idempotency-Key");
    let (_, _, all) = call(&seen, http.get(&url).bearer_auth(&ops)).await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 2, "{all}");
}

/// A body trickled byte by byte is cut at `--body-read-timeout`: 408, the
/// connection closed, nothing stored; a body sent at once is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_at_the_body_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(FERRY, dir.path(), &["--body-read-timeout", "2s"]);
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut sock = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let trickle = async {
        // One byte every 200 ms: forever, by the body's standard.
        for _ in 0..100 {
            if sock.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut probe = [0u8; 1];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), sock.peek(&mut probe)).await
                && n > 0
            {
                break;
            }
        }
    };
    trickle.await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut answer)).await;
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "cut after {took:?}"
    );
    // The connection was closed (read_to_end returned).
    let http = reqwest::Client::new();
    let listed: Value = http
        .get(format!("{}/v1/jobs", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 0);
    let resp = http
        .post(format!("{}/v1/jobs", server.url))
        .json(&json!({"destination": "ok", "files": [{"source": "https://files.example.com/a.bin", "key": "a.bin"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
}

/// `--max-connections`: at the cap, a new connection waits (it is not
/// served) until an open one closes; then it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        FERRY,
        dir.path(),
        &["--max-connections", "3", "--header-read-timeout", "30s"],
    );
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Let the server take all three.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let healthz = format!("{}/healthz", server.url);
    let waited = http
        .get(&healthz)
        .timeout(Duration::from_millis(1500))
        .send()
        .await;
    assert!(waited.is_err(), "served beyond the cap: {waited:?}");
    drop(held.pop());
    let served = http
        .get(&healthz)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);
}

/// Destination scopes: a tenant writes only at or under its scopes (by
/// default its own name's prefix); anything else is 403 naming
/// `destination`, before any storage is asked (the answer for a bucket is
/// the same whether it exists or not), and nothing is stored or written.
#[tokio::test]
async fn a_tenant_cannot_write_outside_its_scopes() {
    let seen = Seen::default();
    let origin = Origin::start().await.unwrap();
    origin.serve("/a.bin", generate(1000, 3), Behavior::Normal);
    let dir = tempfile::tempdir().unwrap();
    let (alice, alice_line) = create_token(&["alice"]);
    let (bob, bob_line) = create_token(&[
        "bob",
        "--scope",
        "dir:shared/bob",
        "--scope",
        "s3://exports/bob",
    ]);
    let (ops, ops_line) = create_token(&["ops", "--admin"]);
    assert!(
        bob_line.ends_with(" bob scope=dir:shared/bob scope=s3://exports/bob"),
        "{bob_line}"
    );
    let refused = std::process::Command::new(FERRY)
        .args(["token", "create", "eve", "--scope", "ftp://x"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("`ftp://x` is not a destination scope"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{alice_line}\n{bob_line}\n{ops_line}\n")).unwrap();
    let data = dir.path().join("data");
    let server = Server::start(FERRY, &data, &["--tokens", tokens.to_str().unwrap()]);
    let http = reqwest::Client::new();
    let url = format!("{}/v1/jobs", server.url);
    let submit = |token: &str, destination: &str| {
        http.post(&url).bearer_auth(token).json(&json!({
            "files": [{ "source": origin.url("/a.bin"), "key": "a.bin" }],
            "destination": destination,
        }))
    };

    let forbidden = [
        (&alice, "bob"),
        (&alice, "alicex"),
        (&alice, ""),
        (&alice, "shared/bob"),
        (&alice, "s3://exports/bob"),
        (&alice, "s3://exports"),
        (&bob, "bob"),
        (&bob, "shared"),
        (&bob, "shared/bobby"),
        (&bob, "s3://exports/alice"),
        (&bob, "s3://other/bob"),
    ];
    for (token, destination) in forbidden {
        let (status, _, body) = call(&seen, submit(token, destination)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{destination}: {body}");
        assert_eq!(body["error"]["code"], "destination_not_allowed", "{body}");
        assert_eq!(body["error"]["field"], "destination", "{body}");
    }
    // Whether a bucket exists is not told: two buckets, one answer.
    let (_, _, a) = call(&seen, submit(&alice, "s3://no-such-bucket-9f2/x")).await;
    let (_, _, b) = call(&seen, submit(&alice, "s3://exports/x")).await;
    assert_eq!(
        a["error"]["message"]
            .as_str()
            .unwrap()
            .replace("no-such-bucket-9f2", "B"),
        b["error"]["message"]
            .as_str()
            .unwrap()
            .replace("exports", "B"),
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dir:alice, s3://*/alice"),
        "the answer names the caller's own scopes: {b}"
    );

    let mut accepted = Vec::new();
    for (token, destination) in [
        (&alice, "alice"),
        (&alice, "alice/in/2026"),
        (&bob, "shared/bob/in"),
        (&ops, "anywhere"),
    ] {
        let (status, _, job) = call(&seen, submit(token, destination)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{destination}: {job}");
        let id = job["id"].as_str().unwrap().to_owned();
        let done = wait_terminal(&seen, &http, &format!("{url}/{id}"), Some(&ops)).await;
        assert_eq!(done["status"], "completed", "{done}");
        accepted.push(id);
    }
    let (_, _, all) = call(&seen, http.get(&url).bearer_auth(&ops)).await;
    let mut listed: Vec<String> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    accepted.sort();
    assert_eq!(listed, accepted, "only the allowed jobs were stored");
    let root = data.join("files");
    let mut written: Vec<String> = ferry_tests::files_under(&root)
        .iter()
        .map(|p| {
            p.strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            "alice/a.bin",
            "alice/in/2026/a.bin",
            "anywhere/a.bin",
            "shared/bob/in/a.bin"
        ],
        "nothing was written outside the allowed destinations"
    );
    seen.add(server.log());
    seen.assert_clean(&[alice.as_str(), bob.as_str(), ops.as_str()]);
}

/// Fair shares: one tenant's 16 trickling files (4 jobs of 4, on two
/// hosts, 8 each: under the 10 connections per host) take at most its cap
/// of the 16 slots (three quarters by default with tokens), so another
/// tenant's job (on a third host) runs at once, in its normal time
/// (measured on the same server before the trickle; 10 % plus 300 ms of
/// scheduling noise). The backpressure caps are raised here so that only
/// the slots are shared (the next test keeps them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_tenant_cannot_starve_another() {
    let (alone, shared) = beside_a_trickle(&["--admission-caps", "16,16,16"], 12..=12).await;
    assert!(
        shared <= alone.mul_f64(1.1) + Duration::from_millis(300),
        "alice's job took {shared:?} beside the trickle, {alone:?} alone"
    );
}

/// The same with the default backpressure caps: the trickle's 11 streams
/// raise the pressure to LIGHT (6 transfers), and the other tenant still
/// runs at once with its fair share of those (3 of 6: two owners), so its
/// 4-file job takes about two rounds instead of one, never the trickle's
/// time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_backpressure_a_tenant_still_gets_its_share() {
    // The 11th stream makes 20.6 of 30 stream points: LIGHT.
    let (alone, shared) = beside_a_trickle(&[], 10..=11).await;
    assert!(
        shared <= alone.mul_f64(2.5) + Duration::from_millis(300),
        "alice's job took {shared:?} beside the trickle, {alone:?} alone"
    );
}

/// Alice's 4-file job alone, then beside mallory's trickle (of which
/// `started` files get going): the two times.
async fn beside_a_trickle(
    flags: &[&str],
    started: std::ops::RangeInclusive<usize>,
) -> (Duration, Duration) {
    let _quiet = QUIET.lock().await;
    let seen = Seen::default();
    let origin = Origin::start().await.unwrap();
    let slow = [
        Origin::start().await.unwrap(),
        Origin::start().await.unwrap(),
    ];
    let trickle = Behavior::Throttled {
        bytes_per_tick: 1,
        tick: Duration::from_millis(500),
    };
    for i in 0..16 {
        slow[i / 8].serve(
            &format!("/slow/{i}.bin"),
            generate(1 << 20, i as u64),
            trickle.clone(),
        );
    }
    // About 0.8 s per file at 1.25 MiB/s.
    for i in 0..4 {
        origin.serve(
            &format!("/fair/{i}.bin"),
            generate(1 << 20, 100 + i),
            Behavior::Throttled {
                bytes_per_tick: 64 << 10,
                tick: Duration::from_millis(50),
            },
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (alice, alice_line) = create_token(&["alice"]);
    let (mallory, mallory_line) = create_token(&["mallory"]);
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{alice_line}\n{mallory_line}\n")).unwrap();
    let mut args = vec!["--tokens", tokens.to_str().unwrap()];
    args.extend(flags);
    let server = Server::start(FERRY, &dir.path().join("data"), &args);
    let http = reqwest::Client::new();
    let url = format!("{}/v1/jobs", server.url);
    let alice_job = |destination: &str| {
        let files: Vec<Value> = (0..4)
            .map(|i| json!({ "source": origin.url(&format!("/fair/{i}.bin")), "key": format!("{i}.bin") }))
            .collect();
        http.post(&url)
            .bearer_auth(&alice)
            .json(&json!({ "files": files, "destination": destination }))
    };
    let timed = |req: reqwest::RequestBuilder| {
        let (seen, http, url, alice) = (&seen, &http, &url, &alice);
        async move {
            let started = std::time::Instant::now();
            let (status, _, job) = call(seen, req).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{job}");
            let id = job["id"].as_str().unwrap();
            let done = wait_terminal(seen, http, &format!("{url}/{id}"), Some(alice)).await;
            assert_eq!(done["status"], "completed", "{done}");
            started.elapsed()
        }
    };
    let alone = timed(alice_job("alice/alone")).await;

    let mut trickling = Vec::new();
    for j in 0..4 {
        let files: Vec<Value> = (0..4)
            .map(|i| {
                let n = j * 4 + i;
                json!({ "source": slow[n / 8].url(&format!("/slow/{n}.bin")), "key": format!("{i}.bin") })
            })
            .collect();
        let (status, _, job) = call(
            &seen,
            http.post(&url)
                .bearer_auth(&mallory)
                .json(&json!({ "files": files, "destination": format!("mallory/{j}") })),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        trickling.push(job["id"].as_str().unwrap().to_owned());
    }
    let slow_requested = || {
        slow.iter()
            .flat_map(Origin::requests)
            .map(|r| r.path)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let mut waited = 0;
    while slow_requested() < *started.start() {
        assert!(
            waited < 400,
            "mallory's files never started: {}",
            slow_requested()
        );
        waited += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        started.contains(&slow_requested()),
        "one tenant holds at most its cap ({started:?} of 16 slots): {}",
        slow_requested()
    );

    let shared = tokio::time::timeout(Duration::from_secs(30), timed(alice_job("alice/shared")))
        .await
        .expect("alice's job was starved");
    for id in trickling {
        let (status, _, _) = call(
            &seen,
            http.delete(format!("{url}/{id}")).bearer_auth(&mallory),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    // Alone again, now that the trickle is gone: the slower of the two
    // runs alone is the yardstick, so a load that comes and goes beside
    // the test is not taken for unfairness.
    let again = timed(alice_job("alice/again")).await;
    (alone.max(again), shared)
}

/// `--min-rate`: a source slower than the minimum over a window fails its
/// attempt (retried, then the file fails naming the rate); a normal file
/// of the same job is unaffected.
#[tokio::test]
async fn a_source_below_the_minimum_rate_fails_instead_of_holding_a_slot() {
    let origin = Origin::start().await.unwrap();
    origin.serve(
        "/trickle.bin",
        generate(1 << 20, 1),
        Behavior::Throttled {
            bytes_per_tick: 100,
            tick: Duration::from_millis(100),
        },
    );
    origin.serve("/ok.bin", generate(300_000, 2), Behavior::Normal);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        FERRY,
        dir.path(),
        &["--min-rate", "64KiB", "--min-rate-window", "1s"],
    );
    let started = std::time::Instant::now();
    let job = server
        .submit(&json!({ "files": [
            { "source": origin.url("/trickle.bin"), "key": "trickle.bin" },
            { "source": origin.url("/ok.bin"), "key": "ok.bin" },
        ], "destination": "rate" }))
        .await;
    let done = server.wait_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["files"][1]["status"], "succeeded", "{done}");
    let failed = &done["files"][0];
    assert_eq!(failed["status"], "failed", "{done}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("below the minimum rate of 65536 bytes/s"),
        "{message}"
    );
    let attempts = origin
        .requests()
        .iter()
        .filter(|r| r.path == "/trickle.bin")
        .count();
    assert!(attempts >= 2, "the too-slow attempt is retried: {attempts}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "each attempt ended after its 1 s window, not at the 30 s idle timeout: {:?}",
        started.elapsed()
    );
    assert!(!dir.path().join("files/rate/trickle.bin").exists());
}

/// Per-owner quotas: over one of them a submission is 429
/// `quota_exceeded` with `Retry-After`, the quota named in `field`, and
/// nothing stored; a token's own quotas (tokens file) replace the server's;
/// another owner is unaffected.
#[tokio::test]
async fn an_owner_over_its_quota_gets_429_naming_it() {
    let seen = Seen::default();
    let origin = Origin::start().await.unwrap();
    for i in 0..12 {
        origin.serve(
            &format!("/hang/{i}.bin"),
            generate(1 << 20, i),
            Behavior::Stall { after: 10 },
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (alice, alice_line) = create_token(&["alice"]);
    let (bob, bob_line) = create_token(&["bob"]);
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("{alice_line} active-jobs=2 queued-files=5\n{bob_line}\n"),
    )
    .unwrap();
    let server = Server::start(
        FERRY,
        &dir.path().join("data"),
        &[
            "--tokens",
            tokens.to_str().unwrap(),
            "--quota-active-jobs",
            "3",
        ],
    );
    let http = reqwest::Client::new();
    let url = format!("{}/v1/jobs", server.url);
    let next = std::sync::atomic::AtomicU64::new(0);
    let job = |token: &str, owner: &str, files: u64| {
        let files: Vec<Value> = (0..files)
            .map(|_| {
                let i = next.fetch_add(1, Ordering::SeqCst) % 12;
                json!({ "source": origin.url(&format!("/hang/{i}.bin")), "key": format!("{i}-{}.bin", next.load(Ordering::SeqCst)) })
            })
            .collect();
        http.post(&url)
            .bearer_auth(token)
            .json(&json!({ "files": files, "destination": owner }))
    };
    let mut alices = Vec::new();
    for _ in 0..2 {
        let (status, _, body) = call(&seen, job(&alice, "alice", 1)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        alices.push(body["id"].as_str().unwrap().to_owned());
    }
    let (status, headers, body) = call(&seen, job(&alice, "alice", 1)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded");
    assert_eq!(body["error"]["field"], "active_jobs");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("this owner has 2 and may have at most 2"),
        "{body}"
    );
    assert_eq!(headers["retry-after"], "30");
    // Bob has the server's quota (3), not alice's.
    for _ in 0..3 {
        let (status, _, body) = call(&seen, job(&bob, "bob", 1)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let (status, _, body) = call(&seen, job(&bob, "bob", 1)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["field"], "active_jobs");

    // One of alice's ends: 1 job, 1 open file; 5 files more would be 6.
    let (status, _, _) = call(
        &seen,
        http.delete(format!("{url}/{}", alices[0]))
            .bearer_auth(&alice),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = call(&seen, job(&alice, "alice", 5)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["field"], "queued_files");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(this job adds 5)"),
        "{body}"
    );
    let (status, _, body) = call(&seen, job(&alice, "alice", 4)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "4 more make 5: {body}");
    let (_, _, listed) = call(&seen, http.get(&url).bearer_auth(&alice)).await;
    assert_eq!(
        listed["jobs"].as_array().unwrap().len(),
        3,
        "the refused submissions stored nothing: {listed}"
    );
}

/// A hostile manifest (60 MiB of `[],`: 21 million empty lists, each a tree
/// node if parsed whole) is read entry by entry: the job fails at the first
/// entry, naming it, and the server's peak memory stays under 128 MiB.
#[tokio::test]
async fn a_hostile_manifest_fails_its_job_without_exhausting_memory() {
    use ferry_tests::export_provider::{ExportProvider, Outcome, Script};
    let mut text = Vec::with_capacity(61 << 20);
    text.push(b'[');
    while text.len() < 60 << 20 {
        text.extend_from_slice(b"[],");
    }
    text.extend_from_slice(b"[]]");
    let provider = ExportProvider::start(Script {
        outcome: Outcome::ReadyAtRawManifest(text.into()),
        ..Script::ready_after(0, json!([]))
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(FERRY, dir.path(), &[]);
    let job = server
        .submit(&json!({
            "export": { "start_url": provider.start_url(),
                        "poll": { "base_interval_ms": 1000, "max_interval_ms": 1000, "deadline_ms": 60_000 } },
            "destination": "hostile"
        }))
        .await;
    let done = server.wait_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    let failure = done["failure"].as_str().unwrap_or_default();
    assert!(
        failure.contains("manifest.files[0]: each file is a JSON object"),
        "{done}"
    );
    assert_eq!(provider.manifest_reads(), 1);
    let peak = server.peak_rss_kib();
    assert!(peak < 128 * 1024, "server peak RSS {peak} KiB");
}

/// `--file-deadline`: a file that keeps just above the minimum rate still
/// ends: past its deadline it fails (no retry), its staged bytes are
/// discarded, and the job's other files are unaffected.
#[tokio::test]
async fn a_file_past_its_deadline_fails_and_leaves_nothing() {
    let origin = Origin::start().await.unwrap();
    // 100 KiB/s: above the 16 KiB/s minimum, 20 s for 2 MiB.
    origin.serve(
        "/slow.bin",
        generate(2 << 20, 1),
        Behavior::Throttled {
            bytes_per_tick: 10 << 10,
            tick: Duration::from_millis(100),
        },
    );
    origin.serve("/ok.bin", generate(300_000, 2), Behavior::Normal);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(FERRY, dir.path(), &["--file-deadline", "2s"]);
    let started = std::time::Instant::now();
    let job = server
        .submit(&json!({ "files": [
            { "source": origin.url("/slow.bin"), "key": "slow.bin" },
            { "source": origin.url("/ok.bin"), "key": "ok.bin" },
        ], "destination": "deadline" }))
        .await;
    let done = server.wait_terminal(job["id"].as_str().unwrap()).await;
    let took = started.elapsed();
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["files"][1]["status"], "succeeded", "{done}");
    let failed = &done["files"][0];
    assert_eq!(failed["status"], "failed", "{done}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("per-file deadline of 2 s"),
        "{done}"
    );
    assert!(
        took < Duration::from_secs(10),
        "ended at its deadline: {took:?}"
    );
    assert_eq!(
        origin
            .requests()
            .iter()
            .filter(|r| r.path == "/slow.bin")
            .count(),
        1,
        "a deadline is not retried"
    );
    let left: Vec<_> = ferry_tests::files_under(&dir.path().join("files"))
        .into_iter()
        .filter(|p| !p.ends_with("deadline/ok.bin"))
        .collect();
    assert!(
        left.is_empty(),
        "nothing of the expired file is left: {left:?}"
    );
}

/// Finding 2, bounded reads: a 10,000-file job listed 1,000 times at
/// once (and its own answer asked 200 times at once) keeps the server
/// under 128 MiB. A listing shows each job's summary, not its files; the
/// job's answer shows its first 100 files and a cursor; its files come a
/// page at a time, each once; a stream's snapshot has no files.
#[tokio::test]
async fn a_big_job_listed_a_thousand_times_keeps_the_server_small() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(FERRY, dir.path(), &[]);
    // Sources nobody answers: the job is cancelled before they matter.
    let files: Vec<Value> = (0..10_000)
        .map(|i| json!({ "source": format!("http://127.0.0.1:9/{i}.bin"), "key": format!("big/{i}.bin") }))
        .collect();
    let job = server
        .submit(&json!({ "files": files, "destination": "big" }))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(
        job["files"].as_array().unwrap().len(),
        100,
        "first files only"
    );
    assert_eq!(job["files_next_cursor"], "99");
    let client = reqwest::Client::new();
    let cancelled = client
        .delete(format!("{}/v1/jobs/{id}", server.url))
        .send()
        .await
        .unwrap();
    assert!(cancelled.status().is_success(), "{}", cancelled.status());
    let done = server.wait_terminal(&id).await;
    assert_eq!(done["summary"]["total"], 10_000, "{}", done["summary"]);

    let list = |client: reqwest::Client| {
        let url = format!("{}/v1/jobs?limit=1000", server.url);
        async move {
            let page: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            page
        }
    };
    let pages = futures::future::join_all((0..1000).map(|_| list(client.clone()))).await;
    for page in &pages {
        let jobs = page["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 1, "{page}");
        assert_eq!(jobs[0]["summary"]["total"], 10_000);
        assert_eq!(
            jobs[0]["summary"]["cancelled"].as_u64().unwrap()
                + jobs[0]["summary"]["failed"].as_u64().unwrap()
                + jobs[0]["summary"]["succeeded"].as_u64().unwrap(),
            10_000
        );
        assert!(jobs[0].get("files").is_none(), "a listing has no files");
    }
    let answers = futures::future::join_all((0..200).map(|_| {
        let url = format!("{}/v1/jobs/{id}", server.url);
        let client = client.clone();
        async move {
            let job: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            job
        }
    }))
    .await;
    for job in &answers {
        assert_eq!(job["files"].as_array().unwrap().len(), 100);
        assert_eq!(job["files_next_cursor"], "99");
    }
    let peak = server.peak_rss_kib();
    assert!(peak < 128 * 1024, "server peak RSS {peak} KiB");

    // Every file, a page at a time, each once, in order.
    let mut seen = Vec::new();
    let mut cursor = done["files_next_cursor"].as_str().map(str::to_owned);
    seen.extend(
        done["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["index"].as_u64().unwrap()),
    );
    while let Some(c) = cursor {
        let page = server
            .get_json(&format!("/v1/jobs/{id}/files?limit=1000&cursor={c}"))
            .await;
        let files = page["files"].as_array().unwrap();
        assert!(files.len() <= 1000);
        seen.extend(files.iter().map(|f| f["index"].as_u64().unwrap()));
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, (0..10_000).collect::<Vec<u64>>());
    // `ferry job files` prints every page, a file a line.
    let out = std::process::Command::new(FERRY)
        .args(["job", "files", &id, "--server", &server.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["index"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(printed, seen);
    let out = std::process::Command::new(FERRY)
        .args([
            "job",
            "files",
            &id,
            "--status",
            "nonsense",
            "--server",
            &server.url,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("status: `nonsense` is not a file status"),
        "{err}"
    );
    // Filtered by status; a bad cursor, limit or status is a 400 naming it.
    let cancelled_files = server
        .get_json(&format!("/v1/jobs/{id}/files?status=cancelled&limit=5"))
        .await;
    let shown = cancelled_files["files"].as_array().unwrap();
    assert!(!shown.is_empty());
    assert!(
        shown.iter().all(|f| f["status"] == "cancelled"),
        "{cancelled_files}"
    );
    for (query, field) in [
        ("cursor=x", "cursor"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("status=done", "status"),
    ] {
        let resp = client
            .get(format!("{}/v1/jobs/{id}/files?{query}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let missing = client
        .get(format!("{}/v1/jobs/nope-1/files", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // A stream's snapshot: the summary, no files.
    let mut stream = client
        .get(format!("{}/v1/jobs/{id}/events", server.url))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    let mut text = Vec::new();
    while let Some(chunk) = stream.chunk().await.unwrap() {
        text.extend_from_slice(&chunk);
        if text.contains(&b'\n') {
            break;
        }
    }
    let line = text.split(|b| *b == b'\n').next().unwrap();
    let snapshot: Value = serde_json::from_slice(line).unwrap();
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["job"]["summary"]["total"], 10_000);
    assert!(snapshot["job"].get("files").is_none(), "{snapshot}");
}
