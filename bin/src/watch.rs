//! `ferry job watch ID` (and `ferry job submit --wait`): follows a job's
//! NDJSON event stream. Progress goes to stderr (a bar per file on a
//! terminal, the stream's lines as NDJSON otherwise), the final job to
//! stdout, and the exit code says how the job ended. A dropped stream, a
//! `lagged` notice or a server shutdown is followed by a reconnect with
//! `?after=<last seq>`: no event is shown twice or skipped.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use ferry_domain::{ByteSize, RetryPolicy, retry};

use crate::exit;

/// Longest silence on a stream (the server sends heartbeats every 15 s by
/// default) before the watcher reconnects.
const IDLE: Duration = Duration::from_secs(45);

/// How long the watcher keeps reconnecting to an unreachable server.
const RECONNECT_FOR: Duration = Duration::from_secs(300);

/// How one connection of the stream ended.
enum Ended {
    /// The job ended with this status.
    Job(String),
    /// Reconnect after this sequence number.
    Reconnect,
    /// A refusal the watcher cannot fix (e.g. 404): exit with this code.
    Fatal(u8, String),
}

/// Where progress goes.
enum Display {
    Bars {
        group: MultiProgress,
        bars: HashMap<u64, ProgressBar>,
    },
    Lines,
}

impl Display {
    fn new() -> Self {
        if std::io::stderr().is_terminal() {
            let group = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            Display::Bars {
                group,
                bars: HashMap::new(),
            }
        } else {
            Display::Lines
        }
    }

    fn show(&mut self, line: &str, item: &Value) {
        match self {
            Display::Lines => eprintln!("{line}"),
            Display::Bars { group, bars } => {
                let Some(index) = item["index"].as_u64() else {
                    return;
                };
                let bar = bars.entry(index).or_insert_with(|| {
                    let bar = group.add(ProgressBar::new(0));
                    if let Ok(style) = ProgressStyle::with_template(
                        "file {prefix} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {msg}",
                    ) {
                        bar.set_style(style.progress_chars("=> "));
                    }
                    bar.set_prefix(index.to_string());
                    bar
                });
                match item["type"].as_str().unwrap_or_default() {
                    "file_progress" => {
                        if let Some(total) = item["total"].as_u64() {
                            bar.set_length(total);
                        }
                        bar.set_position(item["bytes_done"].as_u64().unwrap_or(0));
                    }
                    kind @ ("file_succeeded" | "file_skipped") => {
                        let bytes = item["bytes"].as_u64().unwrap_or(0);
                        bar.set_length(bytes);
                        bar.set_position(bytes);
                        bar.finish_with_message(if kind == "file_skipped" {
                            "skipped (already there)"
                        } else {
                            "done"
                        });
                    }
                    "file_failed" if item["will_retry"] == false => {
                        bar.abandon_with_message(format!(
                            "failed: {}",
                            item["code"].as_str().unwrap_or("error")
                        ));
                    }
                    "file_failed" => bar.set_message("retrying"),
                    "file_resumed" => bar.set_message(format!(
                        "resumed at {}",
                        ByteSize::new(item["offset"].as_u64().unwrap_or(0))
                    )),
                    _ => {}
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Display::Bars { group, .. } = self {
            let _ = group.clear();
        }
    }
}

/// Follows job `id` on `server` to its end; `client` must have no overall
/// request timeout (streams are long).
pub async fn watch(client: &reqwest::Client, server: &str, id: &str) -> ExitCode {
    let mut display = Display::new();
    let mut last: Option<u64> = None;
    let policy = RetryPolicy {
        attempts: u32::MAX,
        base: Duration::from_millis(250),
        max: Duration::from_secs(5),
        deadline: RECONNECT_FOR,
    };
    let mut failures = 0u32;
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let ended = follow(client, server, id, &mut last, &mut display).await;
        let reason = match ended {
            Ok(Ended::Job(status)) => {
                display.finish();
                return finish(client, server, id, &status).await;
            }
            Ok(Ended::Fatal(code, message)) => {
                display.finish();
                eprintln!("ferry: error: {message}");
                return ExitCode::from(code);
            }
            Ok(Ended::Reconnect) => {
                failures = 0;
                unreachable_since = None;
                None
            }
            Err(reason) => Some(reason),
        };
        let since = *unreachable_since.get_or_insert_with(Instant::now);
        let delay = policy.delay(failures, retry::jitter(), since.elapsed());
        let Some(delay) = delay else {
            display.finish();
            eprintln!(
                "ferry: error: lost the event stream of job {id} at {server} for {} s: {}",
                RECONNECT_FOR.as_secs(),
                reason.unwrap_or_default()
            );
            return ExitCode::from(exit::SERVER);
        };
        if reason.is_some() {
            failures += 1;
        }
        tokio::time::sleep(delay).await;
    }
}

/// One connection: reads the stream until the job ends, the stream asks
/// for a reconnect, or the connection breaks (`Err`).
async fn follow(
    client: &reqwest::Client,
    server: &str,
    id: &str,
    last: &mut Option<u64>,
    display: &mut Display,
) -> Result<Ended, String> {
    let mut url = format!("{server}/v1/jobs/{id}/events");
    if let Some(seq) = last {
        url.push_str(&format!("?after={seq}"));
    }
    let resp = client
        .get(&url)
        .header(reqwest::header::ACCEPT, "application/x-ndjson")
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = resp.status();
    if !status.is_success() {
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("the event stream was refused")
            .to_owned();
        return if status.is_server_error() {
            Err(format!("{message} (HTTP {})", status.as_u16()))
        } else if status.as_u16() == 404 {
            Ok(Ended::Fatal(exit::SERVER, format!("{message} (HTTP 404)")))
        } else {
            Ok(Ended::Fatal(
                exit::USAGE,
                format!("{message} (HTTP {})", status.as_u16()),
            ))
        };
    }
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(IDLE, body.next()).await {
            Err(_) => return Err(format!("no data for {} s", IDLE.as_secs())),
            Ok(None) => return Ok(Ended::Reconnect),
            Ok(Some(Err(e))) => return Err(e.without_url().to_string()),
            Ok(Some(Ok(chunk))) => chunk,
        };
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&raw).trim().to_owned();
            if line.is_empty() {
                continue;
            }
            let Ok(item) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if let Some(ended) = handle(&line, &item, last, display) {
                return Ok(ended);
            }
        }
    }
}

/// One stream item; `Some` when this connection is over.
fn handle(
    line: &str,
    item: &Value,
    last: &mut Option<u64>,
    display: &mut Display,
) -> Option<Ended> {
    match item["type"].as_str().unwrap_or_default() {
        "heartbeat" => None,
        "snapshot" => {
            // Shown once: reconnects replay only what came after.
            if last.is_none() {
                display.show(line, item);
                *last = Some(item["seq"].as_u64().unwrap_or(0));
            }
            let status = item["job"]["status"].as_str().unwrap_or_default();
            is_ended(status).then(|| Ended::Job(status.to_owned()))
        }
        "lagged" => {
            *last = item["last_seq"].as_u64().or(*last);
            Some(Ended::Reconnect)
        }
        "shutdown" => Some(Ended::Reconnect),
        _ => {
            let seq = item["seq"].as_u64()?;
            if last.is_some_and(|l| seq <= l) {
                return None;
            }
            *last = Some(seq);
            display.show(line, item);
            match item["type"].as_str().unwrap_or_default() {
                "job_completed" => Some(Ended::Job(
                    item["status"].as_str().unwrap_or("failed").to_owned(),
                )),
                "job_cancelled" => Some(Ended::Job("cancelled".into())),
                _ => None,
            }
        }
    }
}

fn is_ended(status: &str) -> bool {
    matches!(
        status,
        "completed" | "completed_with_errors" | "failed" | "cancelled"
    )
}

/// Prints the final job on stdout and exits with its code.
async fn finish(client: &reqwest::Client, server: &str, id: &str, status: &str) -> ExitCode {
    match client.get(format!("{server}/v1/jobs/{id}")).send().await {
        Ok(resp) => match resp.json::<Value>().await {
            Ok(job) => match serde_json::to_string_pretty(&job) {
                Ok(text) => println!("{text}"),
                Err(e) => eprintln!("ferry: error: cannot print the job: {e}"),
            },
            Err(e) => eprintln!("ferry: error: the job is not JSON: {}", e.without_url()),
        },
        Err(e) => eprintln!(
            "ferry: error: cannot read the final job: {}",
            e.without_url()
        ),
    }
    crate::job_cmd::exit_for_status(status)
}
