//! Exports: jobs that start an export at a provider, poll it, and download
//! its manifest (a scripted provider on a real socket).

use std::time::Duration;

use cucumber::{given, then, when};
use serde_json::{Value, json};

use ferry_application::jobs::ExportRequest;
use ferry_domain::JobStatus;
use ferry_domain::ports::JobEventKind;
use ferry_tests::export_provider::{ExportProvider, Outcome, Script};
use ferry_tests::origin::Behavior;

use super::jobs::{
    collect_until_end, current, job_id, jw, resumes, runs_in_background, serve, wait_for_event,
};
use crate::world::FerryWorld;

/// Serves `n` good files on the origin and returns them as a manifest
/// (the job itself lists no files).
fn manifest_of(world: &mut FerryWorld, n: usize) -> Value {
    for k in 0..n {
        serve(world, Behavior::Normal, 50_000 + k * 1_000);
    }
    let j = jw(world);
    let files: Vec<Value> = j
        .requests
        .drain(..)
        .map(|f| json!({ "source": f.source, "key": f.key, "sha256": f.sha256 }))
        .collect();
    Value::Array(files)
}

async fn provider(world: &mut FerryWorld, script: Script) {
    jw(world).provider = Some(ExportProvider::start(script).await.unwrap());
}

fn the_provider(world: &mut FerryWorld) -> &ExportProvider {
    jw(world)
        .provider
        .as_ref()
        .expect("an export provider was set up in this scenario")
}

#[given(regex = r"^an export provider that is ready after (\d+) polls? with (\d+) good files$")]
async fn ready_after(world: &mut FerryWorld, polls: usize, n: usize) {
    let files = manifest_of(world, n);
    provider(world, Script::ready_after(polls, files)).await;
}

#[given(regex = r"^an export provider whose manifest of (\d+) good files is at its own URL$")]
async fn ready_at_url(world: &mut FerryWorld, n: usize) {
    let files = manifest_of(world, n);
    let mut script = Script::ready_after(1, Value::Null);
    script.outcome = Outcome::ReadyAtManifestUrl(files);
    provider(world, script).await;
}

#[given(regex = r#"^an export provider that fails the export with "([^"]+)"$"#)]
async fn fails_with(world: &mut FerryWorld, reason: String) {
    let mut script = Script::ready_after(1, Value::Null);
    script.outcome = Outcome::Failed(reason);
    provider(world, script).await;
}

#[given("an export provider that is never ready")]
async fn never_ready(world: &mut FerryWorld) {
    let mut script = Script::ready_after(0, Value::Null);
    script.outcome = Outcome::Never;
    provider(world, script).await;
}

#[given(regex = r"^an export provider that refuses to start it with HTTP (\d+)$")]
async fn refuses(world: &mut FerryWorld, status: u16) {
    let mut script = Script::ready_after(0, Value::Null);
    script.start_status = Some(status);
    provider(world, script).await;
}

#[given(
    regex = r"^an export provider that is unavailable for (\d+) start requests and (\d+) polls, then ready with (\d+) good files$"
)]
async fn flaky_provider(world: &mut FerryWorld, starts: usize, polls: usize, n: usize) {
    let files = manifest_of(world, n);
    let mut script = Script::ready_after(0, files);
    script.start_unavailable = starts;
    script.poll_unavailable = polls;
    provider(world, script).await;
}

#[given(
    regex = r#"^an export provider whose manifest of (\d+) good files gives file (\d+) the key "([^"]+)"$"#
)]
async fn bad_manifest(world: &mut FerryWorld, n: usize, i: usize, key: String) {
    let mut files = manifest_of(world, n);
    files[i]["key"] = json!(key);
    provider(world, Script::ready_after(0, files)).await;
}

#[when(
    regex = r#"^I submit an export job into "([^"]*)" polling every (\d+) ms up to (\d+) ms for at most (\d+) ms$"#
)]
async fn submit_export(world: &mut FerryWorld, name: String, base: u64, max: u64, deadline: u64) {
    let start_url = the_provider(world).start_url();
    let j = jw(world);
    j.export = Some(ExportRequest {
        start_url,
        request_body: Some(json!({ "dataset": "d-42", "format": "parquet" }).to_string()),
        base_interval_ms: Some(base),
        max_interval_ms: Some(max),
        deadline_ms: Some(deadline),
    });
    super::jobs::submit(world, name).await;
}

/// The job's run (its future) is dropped mid-export, without a cancel: what
/// the store holds is what a crash would leave. A real `ferry serve` killed
/// with SIGKILL is bin/tests/serve.rs's.
#[when("the job's run is dropped while the export is pending")]
async fn dies_while_exporting(world: &mut FerryWorld) {
    runs_in_background(world);
    wait_for_event(world, |k| matches!(k, JobEventKind::ExportStarted)).await;
    // Let the provider see the start and a poll, then kill the runner
    // without cancelling anything (as a crash would).
    for _ in 0..200 {
        if !the_provider(world).polls().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !the_provider(world).polls().is_empty(),
        "the export was polled"
    );
    let j = jw(world);
    if let Some(runner) = j.runner.take() {
        runner.abort();
        if let Err(e) = runner.await {
            assert!(e.is_cancelled(), "the job run panicked: {e}");
        }
    }
    assert_eq!(current(world).await.job.status(), JobStatus::Exporting);
}

#[when("the provider then becomes ready")]
fn becomes_ready(world: &mut FerryWorld) {
    the_provider(world).set_pending_polls(0);
}

#[when("a new process resumes unfinished jobs and the job ends")]
async fn resume_to_end(world: &mut FerryWorld) {
    resumes(world).await;
    collect_until_end(world).await;
}

#[then(regex = r"^the job went through exporting, export ready with (\d+) files, and completion$")]
fn went_through(world: &mut FerryWorld, n: usize) {
    let names: Vec<&str> = jw(world)
        .published
        .iter()
        .map(|e| e.kind.name())
        .filter(|k| !k.starts_with("file_"))
        .collect();
    assert_eq!(
        names,
        vec![
            "job_created",
            "export_started",
            "export_ready",
            "job_completed"
        ]
    );
    let ready = jw(world)
        .published
        .iter()
        .find_map(|e| match e.kind {
            JobEventKind::ExportReady { files } => Some(files),
            _ => None,
        })
        .unwrap();
    assert_eq!(ready, n);
    let first_file = jw(world)
        .published
        .iter()
        .position(|e| e.kind.name().starts_with("file_"))
        .unwrap();
    let ready_at = jw(world)
        .published
        .iter()
        .position(|e| e.kind.name() == "export_ready")
        .unwrap();
    assert!(ready_at < first_file, "no file starts before the manifest");
}

#[then(regex = r#"^the job failed because "([^"]+)"$"#)]
async fn failed_because(world: &mut FerryWorld, reason: String) {
    let record = current(world).await;
    assert_eq!(record.job.status(), JobStatus::Failed);
    let failure = record.job.failure().unwrap_or_default();
    assert!(failure.contains(&reason), "{failure}");
    assert!(
        !failure.contains("provider-s3cret"),
        "no secret in {failure}"
    );
    assert!(record.job.tasks().is_empty(), "no file task was created");
}

#[then(
    "the provider was asked to start the export once, keyed by the job id, with the job's request"
)]
fn started_once(world: &mut FerryWorld) {
    let id = job_id(world);
    let starts = the_provider(world).starts();
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert_eq!(starts[0].idempotency_key.as_deref(), Some(id.as_str()));
    assert_eq!(starts[0].body["dataset"], "d-42");
}

#[then(
    regex = r"^the provider was asked to start the export (\d+) times, always with the same key$"
)]
fn started_n(world: &mut FerryWorld, n: usize) {
    let id = job_id(world);
    let starts = the_provider(world).starts();
    assert_eq!(starts.len(), n);
    assert!(
        starts
            .iter()
            .all(|s| s.idempotency_key.as_deref() == Some(id.as_str()))
    );
}

#[then(regex = r"^the waits between polls were at least (\d+), (\d+) and (\d+) ms$")]
fn waits_grow(world: &mut FerryWorld, a: u64, b: u64, c: u64) {
    let polls = the_provider(world).polls();
    assert!(polls.len() >= 4, "{} polls", polls.len());
    let gaps: Vec<Duration> = polls.windows(2).map(|w| w[1] - w[0]).collect();
    // Each wait is scheduled after the previous answer, so the gap between
    // two polls is never below the scheduled interval.
    for (gap, want) in gaps.iter().zip([a, b, c]) {
        assert!(
            *gap >= Duration::from_millis(want),
            "gaps {gaps:?}, wanted at least {want} ms"
        );
    }
}

#[then(regex = r"^the provider was polled at most (\d+) times$")]
fn polled_at_most(world: &mut FerryWorld, n: usize) {
    // At most: a loaded machine may reach the deadline before the first
    // poll, which is still a bounded export.
    let polls = the_provider(world).polls().len();
    assert!(polls <= n, "{polls} polls");
}

#[then("the manifest was read from its own URL")]
fn manifest_read(world: &mut FerryWorld) {
    assert_eq!(the_provider(world).manifest_reads(), 1);
}
