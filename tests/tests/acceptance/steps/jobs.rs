//! Jobs: submitting, running, cancelling and resuming export jobs through
//! the real JobService (SQLite store, test origin, filesystem storage).

use std::sync::Arc;
use std::time::Duration;

use cucumber::{given, then, when};

use ferry_adapters::events::BroadcastEvents;
use ferry_adapters::job_store::SqlJobStore;
use ferry_adapters::s3::{S3Settings, S3StorageConfig};
use ferry_adapters::storage_resolver::DefaultStorageResolver;
use ferry_adapters::{HttpClientConfig, PooledHttpClient, SourceRouter};
use ferry_application::jobs::{
    FileRequest, JobService, JobServiceConfig, SubmitError, SubmitJobRequest,
};
use ferry_domain::ports::{JobEvent, JobEventKind, JobFilter, JobRecord, JobStorePort};
use ferry_domain::{JobId, JobStatus, TaskStatus};
use ferry_tests::origin::Behavior;
use ferry_tests::{generate, sha256_hex};

use crate::world::FerryWorld;

/// The job side of a scenario.
#[derive(Debug)]
pub struct JobWorld {
    store: Arc<SqlJobStore>,
    _db_dir: tempfile::TempDir,
    files_root: tempfile::TempDir,
    events: BroadcastEvents,
    rx: tokio::sync::broadcast::Receiver<JobEvent>,
    config: JobServiceConfig,
    service: Arc<JobService>,
    requests: Vec<FileRequest>,
    datas: Vec<Vec<u8>>,
    submitted: Option<Result<JobRecord, SubmitError>>,
    runner: Option<tokio::task::JoinHandle<()>>,
    published: Vec<JobEvent>,
}

fn service(
    store: Arc<SqlJobStore>,
    root: &std::path::Path,
    events: BroadcastEvents,
    config: JobServiceConfig,
) -> Arc<JobService> {
    let http = PooledHttpClient::new(HttpClientConfig {
        retry_base_delay: Duration::from_millis(5),
        read_idle_timeout: Duration::from_secs(20),
        ..HttpClientConfig::default()
    })
    .unwrap();
    Arc::new(JobService::new(
        store,
        Arc::new(SourceRouter::new(Arc::new(http), None)),
        Arc::new(DefaultStorageResolver::new(
            root.to_path_buf(),
            S3Settings::default(),
            S3StorageConfig::default(),
        )),
        Arc::new(events),
        Box::new(|| JobId::parse(&format!("job_{:016x}", rand::random::<u64>())).unwrap()),
        config,
    ))
}

async fn job_world(per_job: usize) -> JobWorld {
    let db_dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        db_dir.path().join("jobs.db").display()
    );
    let store = Arc::new(SqlJobStore::connect(&url).await.unwrap());
    let files_root = tempfile::tempdir().unwrap();
    let events = BroadcastEvents::new(10_000);
    let config = JobServiceConfig {
        per_job_concurrency: per_job,
        retry_base_delay: Duration::from_millis(10),
        progress_interval: Duration::from_millis(10),
        ..JobServiceConfig::default()
    };
    JobWorld {
        service: service(
            store.clone(),
            files_root.path(),
            events.clone(),
            config.clone(),
        ),
        rx: events.subscribe(),
        store,
        _db_dir: db_dir,
        files_root,
        events,
        config,
        requests: Vec::new(),
        datas: Vec::new(),
        submitted: None,
        runner: None,
        published: Vec::new(),
    }
}

fn jw(world: &mut FerryWorld) -> &mut JobWorld {
    world
        .jobs
        .as_mut()
        .expect("a job service was set up in this scenario")
}

fn job_id(world: &mut FerryWorld) -> JobId {
    match &jw(world).submitted {
        Some(Ok(record)) => record.job.id.clone(),
        other => panic!("no accepted job: {other:?}"),
    }
}

async fn current(world: &mut FerryWorld) -> JobRecord {
    let id = job_id(world);
    jw(world)
        .store
        .get(&id)
        .await
        .unwrap()
        .expect("the job is stored")
}

/// Collects this job's published events up to its terminal event.
async fn collect_until_end(world: &mut FerryWorld) {
    let id = job_id(world);
    let j = jw(world);
    loop {
        let e = tokio::time::timeout(Duration::from_secs(30), j.rx.recv())
            .await
            .unwrap()
            .unwrap();
        if e.job_id != id {
            continue;
        }
        let end = e.kind.is_terminal();
        j.published.push(e);
        if end {
            return;
        }
    }
}

#[given(regex = r"^a job service on SQLite$")]
async fn on_sqlite(world: &mut FerryWorld) {
    world.jobs = Some(job_world(4).await);
}

#[given(regex = r"^a job service on SQLite running (\d+) files of a job at a time$")]
async fn on_sqlite_bounded(world: &mut FerryWorld, n: usize) {
    world.jobs = Some(job_world(n).await);
}

fn serve(world: &mut FerryWorld, behavior: Behavior, len: usize) {
    let i = jw(world).requests.len();
    let data = generate(len, 1000 + i as u64);
    let path = format!("/job/f{i}.bin");
    world.origin.serve(&path, data.clone(), behavior);
    let url = world.origin.url(&path);
    let j = jw(world);
    j.requests.push(FileRequest {
        source: url,
        key: format!("f{i}.bin"),
        sha256: Some(sha256_hex(&data)),
        ..FileRequest::default()
    });
    j.datas.push(data);
}

#[given(regex = r"^the origin serves (\d+) good files$")]
fn good_files(world: &mut FerryWorld, n: usize) {
    for k in 0..n {
        serve(world, Behavior::Normal, 60_000 + k * 1_000);
    }
}

#[given("the origin serves a file that is cut short on its first request")]
fn flaky_file(world: &mut FerryWorld) {
    serve(
        world,
        Behavior::ShortFirst {
            times: 1,
            send: 50_000,
        },
        200_000,
    );
}

#[given("the origin serves a file that stalls mid-body")]
fn stalling_file(world: &mut FerryWorld) {
    serve(world, Behavior::Stall { after: 100_000 }, 1_000_000);
}

#[given(regex = r"^file (\d+) of the job expects a wrong SHA-256$")]
fn wrong_sha(world: &mut FerryWorld, i: usize) {
    jw(world).requests[i].sha256 = Some("0".repeat(64));
}

#[given("every file of the job expects a wrong SHA-256")]
fn all_wrong(world: &mut FerryWorld) {
    for r in &mut jw(world).requests {
        r.sha256 = Some("0".repeat(64));
    }
}

#[given(regex = r#"^file (\d+) of the job has the key "([^"]+)"$"#)]
fn key_of(world: &mut FerryWorld, i: usize, key: String) {
    jw(world).requests[i].key = key;
}

#[when(regex = r#"^I submit a job for those files into "([^"]*)"$"#)]
async fn submit(world: &mut FerryWorld, destination: String) {
    let j = jw(world);
    let request = SubmitJobRequest {
        files: j.requests.clone(),
        destination,
        ..SubmitJobRequest::default()
    };
    j.submitted = Some(j.service.submit(request).await);
}

#[when("the job runs to the end")]
async fn runs(world: &mut FerryWorld) {
    let id = job_id(world);
    jw(world).service.clone().run_abortable(id).await;
    collect_until_end(world).await;
}

#[when("the job starts running in the background")]
fn runs_in_background(world: &mut FerryWorld) {
    let id = job_id(world);
    let j = jw(world);
    j.runner = Some(tokio::spawn(j.service.clone().run_abortable(id)));
}

#[when("I cancel the job once its file is transferring")]
async fn cancel_when_transferring(world: &mut FerryWorld) {
    let id = job_id(world);
    let j = jw(world);
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), j.rx.recv())
            .await
            .unwrap()
            .unwrap();
        if e.job_id == id && matches!(e.kind, JobEventKind::FileProgress { .. }) {
            break;
        }
    }
    j.service.cancel(&id).await.unwrap();
    if let Some(runner) = j.runner.take() {
        tokio::time::timeout(Duration::from_secs(10), runner)
            .await
            .unwrap()
            .unwrap();
    }
}

#[when(regex = r"^the process dies while file (\d+) of the job is running$")]
async fn dies(world: &mut FerryWorld, i: usize) {
    let mut record = current(world).await;
    record.job.start_downloading().unwrap();
    record.job.task_mut(i).unwrap().start().unwrap();
    let j = jw(world);
    j.store.save_job(&record).await.unwrap();
    j.store
        .replace_tasks(&record.job.id, record.job.tasks())
        .await
        .unwrap();
}

#[when("a new process resumes unfinished jobs")]
async fn resumes(world: &mut FerryWorld) {
    let j = jw(world);
    let fresh = service(
        j.store.clone(),
        j.files_root.path(),
        j.events.clone(),
        j.config.clone(),
    );
    for id in fresh.unfinished().await.unwrap() {
        fresh.clone().run_abortable(id).await;
    }
}

#[then(regex = r#"^the job is "([a-z_]+)"$"#)]
async fn status_is(world: &mut FerryWorld, status: String) {
    let record = current(world).await;
    assert_eq!(record.job.status().as_str(), status);
}

#[then(regex = r#"^every file of the job succeeded and is stored under "([^"]*)"$"#)]
async fn all_stored(world: &mut FerryWorld, dest: String) {
    let record = current(world).await;
    let j = jw(world);
    for (i, task) in record.job.tasks().iter().enumerate() {
        assert_eq!(task.status(), TaskStatus::Succeeded, "file {i}");
        let path = j.files_root.path().join(&dest).join(task.spec.key.as_str());
        assert!(
            std::fs::read(&path).unwrap() == j.datas[i],
            "file {i} content"
        );
    }
}

#[then(regex = r#"^file (\d+) failed with "([a-z_]+)" after (\d+) attempts?$"#)]
async fn failed_with(world: &mut FerryWorld, i: usize, code: String, attempts: u32) {
    let record = current(world).await;
    let t = &record.job.tasks()[i];
    assert_eq!(t.status(), TaskStatus::Failed);
    assert_eq!(t.failure().unwrap().code, code);
    assert_eq!(t.attempts(), attempts);
}

#[then("the other files succeeded")]
async fn others_succeeded(world: &mut FerryWorld) {
    let record = current(world).await;
    let failed = record
        .job
        .tasks()
        .iter()
        .filter(|t| t.status() == TaskStatus::Failed)
        .count();
    assert_eq!(failed, 1);
    assert_eq!(record.job.summary().succeeded, record.job.tasks().len() - 1);
}

#[then(regex = r"^file (\d+) succeeded after (\d+) attempts?$")]
async fn succeeded_after(world: &mut FerryWorld, i: usize, attempts: u32) {
    let record = current(world).await;
    let t = &record.job.tasks()[i];
    assert_eq!(t.status(), TaskStatus::Succeeded);
    assert_eq!(t.attempts(), attempts);
}

#[then(regex = r"^an event announced that file (\d+) will be retried$")]
fn retry_announced(world: &mut FerryWorld, i: usize) {
    let found = jw(world)
        .published
        .iter()
        .any(|e| matches!(&e.kind, JobEventKind::FileFailed { index, will_retry: true, .. } if *index == i));
    assert!(found);
}

#[then(regex = r#"^the job is rejected on field "([^"]+)"$"#)]
fn rejected_on(world: &mut FerryWorld, field: String) {
    match &jw(world).submitted {
        Some(Err(SubmitError::Invalid(e))) => assert_eq!(e.field, field, "{e}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[then("no job is stored")]
async fn none_stored(world: &mut FerryWorld) {
    let page = jw(world)
        .store
        .list(&JobFilter {
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert!(page.jobs.is_empty());
}

#[then(regex = r#"^nothing is stored under "([^"]*)"$"#)]
fn nothing_under(world: &mut FerryWorld, dest: String) {
    let dir = jw(world).files_root.path().join(dest);
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .map(|r| r.flatten().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let p = e.path();
            assert!(p.is_dir(), "left behind: {}", p.display());
            stack.push(p);
        }
    }
}

#[then("cancelling the job again is refused")]
async fn cancel_again(world: &mut FerryWorld) {
    let id = job_id(world);
    assert!(jw(world).service.cancel(&id).await.is_err());
}

#[then(regex = r#"^the first event is "([a-z_]+)" and the last is "([a-z_]+)"$"#)]
fn first_last(world: &mut FerryWorld, first: String, last: String) {
    let p = &jw(world).published;
    assert_eq!(p.first().unwrap().kind.name(), first);
    assert_eq!(p.last().unwrap().kind.name(), last);
}

#[then("the event sequence numbers are 1, 2, 3... without gaps")]
fn gapless(world: &mut FerryWorld) {
    let seqs: Vec<u64> = jw(world).published.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[then("the stored events replay exactly what was published")]
async fn replay(world: &mut FerryWorld) {
    let id = job_id(world);
    let j = jw(world);
    let stored = j.store.events_after(&id, 0, 100_000).await.unwrap();
    assert_eq!(stored, j.published);
}

#[then(regex = r"^at most (\d+) files of the job were running at any moment$")]
fn bounded(world: &mut FerryWorld, n: usize) {
    let mut running = std::collections::HashSet::new();
    let mut max = 0;
    for e in &jw(world).published {
        match &e.kind {
            JobEventKind::FileStarted { index, .. } => {
                running.insert(*index);
            }
            JobEventKind::FileSucceeded { index, .. } | JobEventKind::FileFailed { index, .. } => {
                running.remove(index);
            }
            _ => {}
        }
        max = max.max(running.len());
    }
    assert!(max <= n, "{max} ran at once");
    assert!(max >= 1);
    let _ = JobStatus::Completed;
}
