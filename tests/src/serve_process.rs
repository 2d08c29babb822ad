//! `ferry serve` as a child process for the binary's tests and benchmarks:
//! started on a free port, its stderr captured, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// A running `ferry serve`.
#[derive(Debug)]
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `ferry` (the binary at `ferry`) serving `data_dir`, with
    /// `extra` flags, and waits until it listens. Sources on 127.0.0.1 are
    /// allowed (`FERRY_ALLOW_SOURCE`) unless `env` sets it otherwise.
    pub fn start(ferry: &str, data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(ferry, data_dir, extra, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env(
        ferry: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_on(ferry, "127.0.0.1:0", data_dir, extra, env)
    }

    /// [`Server::start_with_env`] listening on `listen` (e.g. `0.0.0.0:0`).
    pub fn start_on(
        ferry: &str,
        listen: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(ferry)
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            // Test origins listen on loopback, which the SSRF guard refuses
            // by default; `env` can say otherwise.
            .env("FERRY_ALLOW_SOURCE", "127.0.0.1")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let url = loop {
            let line = lines.next().expect("server printed its address").unwrap();
            log.lock().unwrap().push(line.clone());
            if let Some(rest) = line.strip_prefix("ferry serve: listening on ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, url, log }
    }

    /// The server process's peak resident memory so far (`VmHWM`), KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_owned()
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until every line the server logged before now has been read:
    /// a request with a unique id is sent and waited for in the log (its
    /// `request` line comes after everything logged before it). Needs
    /// info-level logs.
    pub async fn log_barrier(&self) {
        let id = format!("log-barrier-{:016x}", rand::random::<u64>());
        let answer = reqwest::Client::new()
            .get(format!("{}/healthz", self.url))
            .header("x-request-id", &id)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
        tokio::time::timeout(Duration::from_secs(10), async {
            while !self.log().contains(&id) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the server logged the barrier request");
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// `GET path` (e.g. `/v1/jobs/ID`) answered as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `GET path` answered as text (e.g. `/metrics`).
    pub async fn get_text(&self, path: &str) -> String {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `POST /v1/jobs` with `job`; asserts the 202 and returns the job.
    pub async fn submit(&self, job: &Value) -> Value {
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/jobs", self.url))
            .json(job)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "job not accepted");
        resp.json().await.unwrap()
    }

    /// Polls `GET /v1/jobs/{id}` until its status is one of `statuses`.
    pub async fn wait_status(&self, id: &str, statuses: &[&str]) -> Value {
        for _ in 0..1200 {
            let job = self.get_json(&format!("/v1/jobs/{id}")).await;
            if job["status"]
                .as_str()
                .is_some_and(|s| statuses.contains(&s))
            {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {id} never reached {statuses:?}");
    }

    /// Waits until the job ended, whichever way.
    pub async fn wait_terminal(&self, id: &str) -> Value {
        self.wait_status(
            id,
            &["completed", "completed_with_errors", "failed", "cancelled"],
        )
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the ferry binary `ferry` once in `cwd` with `env` set (and no
/// inherited FERRY_* or SSL_CERT_* variables, so the caller's environment
/// cannot change what is tested), feeding `stdin`; stdout and stderr are
/// captured.
pub async fn run_ferry(
    ferry: &str,
    args: &[&str],
    cwd: &Path,
    env: &[(&str, &str)],
    stdin: Option<Vec<u8>>,
) -> std::process::Output {
    let ferry = ferry.to_owned();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let cwd = cwd.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(ferry);
        cmd.args(&args).current_dir(&cwd);
        for (k, _) in std::env::vars() {
            if k.starts_with("FERRY_") && k != "FERRY_BIN" || k.starts_with("SSL_CERT_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(data) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().unwrap();
            // A writer thread: ferry may answer before reading everything.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            });
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}
