//! Jobs: submitting, running, cancelling and resuming export jobs through
//! the real JobService. The backend is chosen per run (see `main.rs`):
//! SQLite + a directory by default, PostgreSQL + Garage for the scenarios
//! tagged `@garage-postgres` in the second pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cucumber::{given, then, when};

use ferry_adapters::SourceRouter;
use ferry_adapters::events::BroadcastEvents;
use ferry_adapters::export_provider::{ExportProviderConfig, HttpExportProvider};
use ferry_adapters::job_store::SqlJobStore;
use ferry_adapters::s3::{S3Service, S3Settings, S3StorageConfig};
use ferry_adapters::storage_resolver::DefaultStorageResolver;
use ferry_application::jobs::{
    Access, ExportRequest, FileRequest, JobService, JobServiceConfig, SubmitError, SubmitJobRequest,
};
use ferry_domain::ports::{JobEvent, JobEventKind, JobFilter, JobRecord, JobStorePort};
use ferry_domain::{JobId, RetryPolicy, TaskStatus};
use ferry_tests::export_provider::ExportProvider;
use ferry_tests::garage::{garage, unique_prefix};
use ferry_tests::origin::Behavior;
use ferry_tests::pg::PgDatabase;
use ferry_tests::sfn_endpoint::SfnEndpoint;
use ferry_tests::{generate, sha256_hex};

use crate::world::FerryWorld;

/// Whether this pass runs on PostgreSQL + Garage (set by `main`).
pub static SHARED_BACKEND: AtomicBool = AtomicBool::new(false);

/// Where a scenario's files land.
#[derive(Debug)]
enum Place {
    /// Under a temp directory (the resolver's files root).
    Directory,
    /// In the test Garage, under a fresh prefix.
    S3 {
        service: S3Service,
        bucket: String,
        prefix: String,
    },
}

/// The job side of a scenario.
#[derive(Debug)]
pub struct JobWorld {
    // Field order matters: the store closes before its database is dropped.
    pub store: Arc<SqlJobStore>,
    _pg: Option<PgDatabase>,
    _db_dir: tempfile::TempDir,
    files_root: tempfile::TempDir,
    place: Place,
    events: BroadcastEvents,
    pub rx: tokio::sync::broadcast::Receiver<JobEvent>,
    pub config: JobServiceConfig,
    service: Option<Arc<JobService>>,
    pub sfn: Option<SfnEndpoint>,
    pub provider: Option<ExportProvider>,
    pub requests: Vec<FileRequest>,
    pub datas: Vec<Vec<u8>>,
    pub export: Option<ExportRequest>,
    pub task_token: Option<String>,
    pub submitted: Option<Result<JobRecord, SubmitError>>,
    /// Further jobs of the scenario (concurrency scenarios).
    pub others: Vec<JobId>,
    pub runner: Option<tokio::task::JoinHandle<()>>,
    pub published: Vec<JobEvent>,
}

impl JobWorld {
    async fn new(per_job: usize) -> Self {
        let shared = SHARED_BACKEND.load(Ordering::SeqCst);
        let db_dir = tempfile::tempdir().unwrap();
        let (store, pg) = if shared {
            let pg = PgDatabase::create().await;
            (SqlJobStore::connect(&pg.url).await.unwrap(), Some(pg))
        } else {
            let url = format!(
                "sqlite://{}?mode=rwc",
                db_dir.path().join("jobs.db").display()
            );
            (SqlJobStore::connect(&url).await.unwrap(), None)
        };
        let place = if shared {
            let env = garage();
            Place::S3 {
                service: ferry_tests::garage::service(&env.endpoint).await,
                bucket: env.bucket.clone(),
                prefix: unique_prefix("acceptance"),
            }
        } else {
            Place::Directory
        };
        let events = BroadcastEvents::new(10_000);
        JobWorld {
            store: Arc::new(store),
            _pg: pg,
            _db_dir: db_dir,
            files_root: tempfile::tempdir().unwrap(),
            place,
            rx: events.subscribe(),
            events,
            config: JobServiceConfig {
                per_job_concurrency: per_job,
                min_poll_interval: Duration::from_millis(1),
                retry: RetryPolicy {
                    base: Duration::from_millis(10),
                    ..JobServiceConfig::default().retry
                },
                progress_interval: Duration::from_millis(10),
                ..JobServiceConfig::default()
            },
            service: None,
            sfn: None,
            provider: None,
            requests: Vec::new(),
            datas: Vec::new(),
            export: None,
            task_token: None,
            submitted: None,
            others: Vec::new(),
            runner: None,
            published: Vec::new(),
        }
    }

    /// A JobService over this scenario's store, storage, events, Step
    /// Functions endpoint and export provider client: a new "process".
    pub fn fresh_service(&self) -> Arc<JobService> {
        let http = ferry_tests::test_http_client(Duration::from_secs(20));
        let s3 = match &self.place {
            Place::Directory => S3Settings::default(),
            Place::S3 { .. } => S3Settings {
                endpoint_url: Some(garage().endpoint.clone()),
                region: Some("garage".into()),
                ..S3Settings::default()
            },
        };
        let mut service = ferry_tests::job_service(
            self.store.clone(),
            Arc::new(SourceRouter::new(Arc::new(http), None)),
            Arc::new(DefaultStorageResolver::new(
                self.files_root.path().to_path_buf(),
                s3,
                S3StorageConfig::default(),
            )),
            Arc::new(self.events.clone()),
            Box::new(|| JobId::parse(&format!("job_{:016x}", rand::random::<u64>())).unwrap()),
            self.config.clone(),
        )
        .with_export_provider(Arc::new(
            HttpExportProvider::new(ExportProviderConfig::default()).unwrap(),
        ));
        if let Some(sfn) = &self.sfn {
            service = service.with_callback(Arc::new(sfn.callback()));
        }
        Arc::new(service)
    }

    /// The scenario's service, built on first use.
    pub fn service(&mut self) -> Arc<JobService> {
        if self.service.is_none() {
            self.service = Some(self.fresh_service());
        }
        self.service.clone().unwrap()
    }

    /// The destination a job names for `name`.
    pub fn destination(&self, name: &str) -> String {
        match &self.place {
            Place::Directory => name.to_owned(),
            Place::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}/{name}"),
        }
    }

    /// The stored bytes of `key` under `name`, if visible.
    pub async fn stored(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        match &self.place {
            Place::Directory => std::fs::read(self.files_root.path().join(name).join(key)).ok(),
            Place::S3 {
                service,
                bucket,
                prefix,
            } => {
                let got = service
                    .client()
                    .get_object()
                    .bucket(bucket)
                    .key(format!("{prefix}/{name}/{key}"))
                    .send()
                    .await
                    .ok()?;
                Some(got.body.collect().await.unwrap().into_bytes().to_vec())
            }
        }
    }

    /// Everything under `name`: visible objects and (S3) unfinished uploads.
    pub async fn leftovers(&self, name: &str) -> Vec<String> {
        match &self.place {
            Place::Directory => {
                let mut found = Vec::new();
                let mut stack = vec![self.files_root.path().join(name)];
                while let Some(d) = stack.pop() {
                    for e in std::fs::read_dir(&d)
                        .map(|r| r.flatten().collect::<Vec<_>>())
                        .unwrap_or_default()
                    {
                        let p = e.path();
                        if p.is_dir() {
                            stack.push(p);
                        } else {
                            found.push(p.display().to_string());
                        }
                    }
                }
                found
            }
            Place::S3 {
                service,
                bucket,
                prefix,
            } => {
                let under = format!("{prefix}/{name}/");
                let listed = service
                    .client()
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&under)
                    .send()
                    .await
                    .unwrap();
                let mut found: Vec<String> = listed
                    .contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned))
                    .collect();
                let uploads = service
                    .list_incomplete_uploads(bucket, Some(&under), Duration::ZERO)
                    .await
                    .unwrap();
                found.extend(uploads.into_iter().map(|u| format!("upload of {}", u.key)));
                found
            }
        }
    }
}

pub fn jw(world: &mut FerryWorld) -> &mut JobWorld {
    world
        .jobs
        .as_mut()
        .expect("a job service was set up in this scenario")
}

pub fn job_id(world: &mut FerryWorld) -> JobId {
    match &jw(world).submitted {
        Some(Ok(record)) => record.job.id.clone(),
        other => panic!("no accepted job: {other:?}"),
    }
}

pub async fn current(world: &mut FerryWorld) -> JobRecord {
    let id = job_id(world);
    jw(world)
        .store
        .get(&id)
        .await
        .unwrap()
        .expect("the job is stored")
}

/// Records this job's published events until one matches `stop` (each
/// event must arrive within `per_event`).
async fn record_until(
    world: &mut FerryWorld,
    per_event: Duration,
    stop: impl Fn(&JobEventKind) -> bool,
) {
    let id = job_id(world);
    let j = jw(world);
    loop {
        let e = tokio::time::timeout(per_event, j.rx.recv())
            .await
            .unwrap()
            .unwrap();
        if e.job_id != id {
            continue;
        }
        let hit = stop(&e.kind);
        j.published.push(e);
        if hit {
            return;
        }
    }
}

/// Collects this job's published events up to its terminal event.
pub async fn collect_until_end(world: &mut FerryWorld) {
    record_until(world, Duration::from_secs(30), JobEventKind::is_terminal).await;
}

/// Waits for this job's first published event matching `pred`.
pub async fn wait_for_event(world: &mut FerryWorld, pred: impl Fn(&JobEventKind) -> bool) {
    record_until(world, Duration::from_secs(10), pred).await;
}

#[given(regex = r"^a job service$")]
async fn a_service(world: &mut FerryWorld) {
    world.jobs = Some(JobWorld::new(4).await);
}

#[given(regex = r"^a job service running (\d+) files of a job at a time$")]
async fn a_bounded_service(world: &mut FerryWorld, n: usize) {
    world.jobs = Some(JobWorld::new(n).await);
}

#[given(regex = r"^a job service running at most (\d+) files at once across all jobs$")]
async fn a_globally_bounded_service(world: &mut FerryWorld, n: usize) {
    let mut j = JobWorld::new(4).await;
    j.config.global_concurrency = n;
    world.jobs = Some(j);
}

pub fn serve(world: &mut FerryWorld, behavior: Behavior, len: usize) {
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
pub async fn submit(world: &mut FerryWorld, name: String) {
    let j = jw(world);
    let request = SubmitJobRequest {
        files: j.requests.clone(),
        export: j.export.clone(),
        destination: j.destination(&name),
        task_token: j.task_token.clone(),
        ..SubmitJobRequest::default()
    };
    let service = j.service();
    j.submitted = Some(service.submit(request).await);
}

#[when("the job runs to the end")]
pub async fn runs(world: &mut FerryWorld) {
    let id = job_id(world);
    jw(world).service().run_abortable(id).await;
    collect_until_end(world).await;
}

#[when("the job starts running in the background")]
pub fn runs_in_background(world: &mut FerryWorld) {
    let id = job_id(world);
    let j = jw(world);
    j.runner = Some(tokio::spawn(j.service().run_abortable(id)));
}

#[when("I cancel the job once its file is transferring")]
async fn cancel_when_transferring(world: &mut FerryWorld) {
    wait_for_event(world, |k| matches!(k, JobEventKind::FileProgress { .. })).await;
    let id = job_id(world);
    let j = jw(world);
    j.service().cancel(&Access::All, &id).await.unwrap();
    if let Some(runner) = j.runner.take() {
        tokio::time::timeout(Duration::from_secs(10), runner)
            .await
            .unwrap()
            .unwrap();
    }
}

/// The stored state a crash mid-file leaves (downloading, the file running
/// on its first attempt), written directly: no process dies here. A real
/// `ferry serve` killed with SIGKILL mid-file is bin/tests/serve.rs's.
#[when(
    regex = r"^the store holds the job as a process that died while file (\d+) was running left it$"
)]
async fn dies(world: &mut FerryWorld, i: usize) {
    let mut record = current(world).await;
    record.job.start_downloading().unwrap();
    record.job.task_mut(i).unwrap().start().unwrap();
    let j = jw(world);
    j.store.save_job(&record.update()).await.unwrap();
    j.store
        .replace_tasks(&record.job.id, record.job.tasks())
        .await
        .unwrap();
}

#[when("a new process resumes unfinished jobs")]
pub async fn resumes(world: &mut FerryWorld) {
    let j = jw(world);
    let fresh = j.fresh_service();
    j.service = Some(fresh.clone());
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
pub async fn all_stored(world: &mut FerryWorld, name: String) {
    let record = current(world).await;
    let j = jw(world);
    assert_eq!(record.job.tasks().len(), j.datas.len());
    for (i, task) in record.job.tasks().iter().enumerate() {
        assert_eq!(task.status(), TaskStatus::Succeeded, "file {i}");
        let stored = j.stored(&name, task.spec.key.as_str()).await;
        assert!(stored.as_ref() == Some(&j.datas[i]), "file {i} content");
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
            owner: None,
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert!(page.jobs.is_empty());
}

#[then(regex = r#"^nothing is stored under "([^"]*)"$"#)]
pub async fn nothing_under(world: &mut FerryWorld, name: String) {
    let left = jw(world).leftovers(&name).await;
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[then("cancelling the job again is refused")]
async fn cancel_again(world: &mut FerryWorld) {
    let id = job_id(world);
    assert!(jw(world).service().cancel(&Access::All, &id).await.is_err());
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

/// The most files running at once in `events` (across jobs).
fn max_running(events: &[JobEvent]) -> usize {
    let mut running = std::collections::HashSet::new();
    let mut max = 0;
    for e in events {
        match &e.kind {
            JobEventKind::FileStarted { index, .. } => {
                running.insert((e.job_id.clone(), *index));
            }
            JobEventKind::FileSucceeded { index, .. } | JobEventKind::FileFailed { index, .. } => {
                running.remove(&(e.job_id.clone(), *index));
            }
            _ => {}
        }
        max = max.max(running.len());
    }
    max
}

#[then(regex = r"^at most (\d+) files of the job were running at any moment$")]
fn bounded(world: &mut FerryWorld, n: usize) {
    let max = max_running(&jw(world).published);
    assert!(max <= n, "{max} ran at once");
    assert!(max >= 1);
}

#[when(regex = r#"^I submit (\d+) jobs of those files into "([^"]*)" and run them together$"#)]
async fn run_together(world: &mut FerryWorld, n: usize, name: String) {
    let j = jw(world);
    let service = j.service();
    let mut ids = Vec::new();
    for k in 0..n {
        let record = service
            .submit(SubmitJobRequest {
                files: j.requests.clone(),
                destination: j.destination(&format!("{name}/{k}")),
                ..SubmitJobRequest::default()
            })
            .await
            .unwrap();
        ids.push(record.job.id);
    }
    let runs: Vec<_> = ids
        .iter()
        .map(|id| tokio::spawn(service.clone().run_abortable(id.clone())))
        .collect();
    for r in runs {
        r.await.unwrap();
    }
    let mut done = 0;
    while done < n {
        let e = tokio::time::timeout(Duration::from_secs(30), j.rx.recv())
            .await
            .unwrap()
            .unwrap();
        if !ids.contains(&e.job_id) {
            continue;
        }
        if e.kind.is_terminal() {
            done += 1;
        }
        j.published.push(e);
    }
    j.others = ids;
}

#[then(regex = r"^at most (\d+) files were running at any moment across the jobs$")]
fn bounded_across(world: &mut FerryWorld, n: usize) {
    let j = jw(world);
    let max = max_running(&j.published);
    assert!(max <= n, "{max} ran at once");
    let jobs: std::collections::HashSet<_> = j
        .published
        .iter()
        .filter(|e| matches!(e.kind, JobEventKind::FileStarted { .. }))
        .map(|e| e.job_id.clone())
        .collect();
    assert_eq!(jobs.len(), j.others.len(), "every job ran files");
}

#[then(regex = r#"^every one of those jobs is "([a-z_]+)"$"#)]
async fn all_jobs_are(world: &mut FerryWorld, status: String) {
    let j = jw(world);
    for id in &j.others {
        let record = j.store.get(id).await.unwrap().unwrap();
        assert_eq!(record.job.status().as_str(), status);
    }
}
