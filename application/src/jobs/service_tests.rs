//! JobService's branches with mocked ports: the job store, the events sink,
//! the storage resolver and the transfer factory are mockall mocks; each
//! file runs through the real `Transfer` (the one retry loop) over a
//! scripted ProcessFile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use async_trait::async_trait;

use ferry_domain::ports::events::MockJobEventsPort;
use ferry_domain::ports::job_store::MockJobStorePort;
use ferry_domain::ports::storage::MockFileStoragePort;
use ferry_domain::ports::storage_resolver::MockStorageResolverPort;
use ferry_domain::ports::transfer::MockTransferFactoryPort;
use ferry_domain::ports::{
    DownloadError, FileRunContext, JobEvent, JobEventKind, JobRecord, JobTask, JobUpdate,
    OpenTaskBatch, OpenTasks, ProcessFileCommand, ProcessFileError, ProcessFilePort,
    ProcessFileResult, TransferPort,
};
use ferry_domain::ports::{JobStoreError, JobWrite};
use ferry_domain::{
    Checksum, ChecksumAlgorithm, JobId, JobStatus, ObjectKey, RetryPolicy, TaskStatus, TransferId,
};

use super::*;
use crate::jobs::{FileRequest, SubmitJobRequest};
use crate::transfer::Transfer;

/// What a scripted ProcessFile does on its next call.
enum Step {
    Ok,
    Fail(u16),
    /// Never returns (until the job is cancelled).
    Hang,
    /// The destination already holds the file (skip_existing).
    Skip,
    /// The key exists and overwriting is refused (no_clobber).
    Exists,
    /// Succeeds after a few milliseconds (files that overlap).
    Slow,
}

/// A ProcessFile that follows a script and counts abandons.
struct Scripted {
    steps: StdMutex<VecDeque<Step>>,
    calls: StdMutex<u32>,
    abandoned: StdMutex<u32>,
    /// What it was asked: (skip_existing, no_clobber, attributes). Not the
    /// command itself: its progress sender must drop when the call ends.
    seen: StdMutex<Vec<(bool, bool, ferry_domain::ObjectAttributes)>>,
    /// Calls in progress now, and the most at once.
    running: StdMutex<(usize, usize)>,
}

impl Scripted {
    fn new(steps: Vec<Step>) -> Arc<Self> {
        Arc::new(Self {
            steps: StdMutex::new(steps.into()),
            calls: StdMutex::new(0),
            abandoned: StdMutex::new(0),
            seen: StdMutex::new(Vec::new()),
            running: StdMutex::new((0, 0)),
        })
    }
}

fn sha() -> Checksum {
    Checksum::new(ChecksumAlgorithm::Sha256, &"ab".repeat(32)).unwrap()
}

#[async_trait]
impl ProcessFilePort for Scripted {
    async fn process(
        &self,
        command: ProcessFileCommand,
    ) -> Result<ProcessFileResult, ProcessFileError> {
        *self.calls.lock().unwrap() += 1;
        self.seen.lock().unwrap().push((
            command.skip_existing,
            command.no_clobber,
            command.attributes.clone(),
        ));
        let step = self.steps.lock().unwrap().pop_front().unwrap_or(Step::Ok);
        if let Step::Slow = step {
            {
                let mut running = self.running.lock().unwrap();
                running.0 += 1;
                running.1 = running.1.max(running.0);
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
            self.running.lock().unwrap().0 -= 1;
        }
        let done = ProcessFileResult {
            key: command.key.clone(),
            location: command.key.to_string(),
            bytes: 7,
            sha256: sha(),
            md5: None,
            duration: Duration::from_millis(1),
            final_url: command.source.redacted(),
            resumed_from: None,
            skipped: false,
        };
        match step {
            Step::Ok | Step::Slow => Ok(done),
            Step::Skip => Ok(ProcessFileResult {
                skipped: true,
                ..done
            }),
            Step::Exists => Err(ProcessFileError::Storage(
                ferry_domain::ports::StorageError::AlreadyExists {
                    location: command.key.to_string(),
                },
            )),
            Step::Fail(status) => Err(ProcessFileError::Source(DownloadError::Status {
                url: command.source.redacted(),
                status,
                exhausted: false,
            })),
            Step::Hang => futures::future::pending().await,
        }
    }

    async fn abandon(&self, _id: &TransferId) -> Result<(), ProcessFileError> {
        *self.abandoned.lock().unwrap() += 1;
        Ok(())
    }
}

/// The mocked world one test runs in.
struct World {
    service: Arc<JobService>,
    stored: Arc<StdMutex<Option<JobRecord>>>,
    published: Arc<StdMutex<Vec<JobEvent>>>,
    process: Arc<Scripted>,
    /// `prior_attempts` the service passed to each transfer run.
    priors: Arc<StdMutex<Vec<u32>>>,
    /// How many times a job's open tasks were read.
    open_reads: Arc<StdMutex<usize>>,
    /// How many times a job was read whole (with all its tasks).
    whole_reads: Arc<StdMutex<usize>>,
    /// How many times one task was read (at its delivery).
    task_reads: Arc<StdMutex<usize>>,
}

/// A TransferPort that records `prior_attempts`, then runs the real
/// Transfer.
struct Recording {
    inner: Transfer,
    priors: Arc<StdMutex<Vec<u32>>>,
}

#[async_trait]
impl TransferPort for Recording {
    async fn run(
        &self,
        command: ProcessFileCommand,
        prior_attempts: u32,
        observer: &dyn ferry_domain::ports::AttemptObserver,
    ) -> Result<ProcessFileResult, ferry_domain::ports::TransferError> {
        self.priors.lock().unwrap().push(prior_attempts);
        self.inner.run(command, prior_attempts, observer).await
    }

    async fn abandon(&self, id: &TransferId) -> Result<(), ProcessFileError> {
        self.inner.abandon(id).await
    }

    fn location(&self, key: &ObjectKey) -> String {
        self.inner.location(key)
    }
}

/// A job row's save, as the SQL store does it (an ended job with its
/// callback recorded keeps no task token).
fn apply(r: &mut JobRecord, u: &JobUpdate) {
    r.job = ferry_domain::Job::restore(
        r.job.id.clone(),
        u.status,
        r.job.tasks().to_vec(),
        u.failure.clone(),
    );
    r.callback = u.callback.clone();
    r.export = u.export.clone();
    r.updated_at_ms = u.updated_at_ms;
    if u.status.is_terminal() && u.callback.is_some() {
        r.task_token = None;
    }
}

/// What a file's run needs of the stored job, as the store reads it.
fn run_context(r: &JobRecord) -> FileRunContext {
    FileRunContext {
        owner: r.owner.clone(),
        destination: r.destination.clone(),
        options: r.options.clone(),
    }
}

fn world(steps: Vec<Step>, attempts: u32) -> World {
    let stored: Arc<StdMutex<Option<JobRecord>>> = Arc::new(StdMutex::new(None));
    let published = Arc::new(StdMutex::new(Vec::new()));
    let seq = Arc::new(StdMutex::new(0u64));

    let mut store = MockJobStorePort::new();
    let s = stored.clone();
    store.expect_create().returning(move |r| {
        *s.lock().unwrap() = Some(r.clone());
        Ok(())
    });
    let s = stored.clone();
    let whole_reads = Arc::new(StdMutex::new(0));
    let reads = whole_reads.clone();
    store.expect_get().returning(move |_| {
        *reads.lock().unwrap() += 1;
        Ok(s.lock().unwrap().clone())
    });
    let s = stored.clone();
    store.expect_save_job().returning(move |u| {
        if let Some(r) = s.lock().unwrap().as_mut() {
            apply(r, u);
        }
        Ok(())
    });
    let s = stored.clone();
    store.expect_task_token().returning(move |_| {
        Ok(s.lock()
            .unwrap()
            .as_ref()
            .and_then(|r| r.task_token.clone()))
    });
    let s = stored.clone();
    store.expect_replace_tasks().returning(move |_, tasks| {
        if let Some(r) = s.lock().unwrap().as_mut() {
            r.job = ferry_domain::Job::restore(
                r.job.id.clone(),
                r.job.status(),
                tasks.to_vec(),
                r.job.failure().map(str::to_owned),
            );
        }
        Ok(())
    });
    let s = stored.clone();
    store
        .expect_head()
        .returning(move |_| Ok(s.lock().unwrap().as_ref().map(JobRecord::head)));
    store.expect_compact_progress().returning(|_| Ok(0));
    let s = stored.clone();
    store.expect_unfinished().returning(move || {
        Ok(s.lock()
            .unwrap()
            .iter()
            .filter(|r| !r.job.status().is_terminal())
            .map(|r| r.job.id.clone())
            .collect())
    });
    let s = stored.clone();
    let task_reads = Arc::new(StdMutex::new(0));
    let reads = task_reads.clone();
    store.expect_task().returning(move |_, index| {
        *reads.lock().unwrap() += 1;
        Ok(s.lock().unwrap().as_ref().and_then(|r| {
            r.job.tasks().get(index).map(|t| JobTask {
                status: r.job.status(),
                job: run_context(r),
                task: t.clone(),
            })
        }))
    });
    let s = stored.clone();
    let open_reads = Arc::new(StdMutex::new(0));
    let reads = open_reads.clone();
    store.expect_open_tasks().returning(move |_, limit| {
        *reads.lock().unwrap() += 1;
        Ok(s.lock().unwrap().as_ref().map(|r| OpenTasks {
            status: r.job.status(),
            open: r
                .job
                .tasks()
                .iter()
                .filter(|t| !t.status().is_terminal())
                .map(|t| t.index)
                .take(limit)
                .collect(),
        }))
    });
    let s = stored.clone();
    let reads = open_reads.clone();
    store.expect_open_task_batch().returning(move |_, limit| {
        *reads.lock().unwrap() += 1;
        Ok(s.lock().unwrap().as_ref().map(|r| OpenTaskBatch {
            status: r.job.status(),
            job: run_context(r),
            tasks: r
                .job
                .tasks()
                .iter()
                .filter(|t| !t.status().is_terminal())
                .take(limit)
                .cloned()
                .collect(),
        }))
    });
    let s = stored.clone();
    store.expect_write_batch().returning(move |writes| {
        let mut n = seq.lock().unwrap();
        let mut stored = s.lock().unwrap();
        // All or nothing: a conditional job write whose status moved
        // (before the batch, or by an earlier write of it) fails the whole
        // batch, as the SQL store's does.
        let mut status = stored.as_ref().map(|r| r.job.status());
        for w in writes {
            if let JobWrite::Job { job, from } = w {
                if let Some(from) = from
                    && status != Some(*from)
                {
                    return Err(JobStoreError::StatusChanged {
                        job: job.id.clone(),
                        expected: *from,
                    });
                }
                status = Some(job.status);
            }
        }
        Ok(writes
            .iter()
            .map(|w| match w {
                JobWrite::Event(_) => {
                    *n += 1;
                    Some(*n)
                }
                JobWrite::Task { task, .. } => {
                    // The task's state lands in the stored record.
                    if let Some(r) = stored.as_mut() {
                        let mut tasks = r.job.tasks().to_vec();
                        tasks[task.index] = (**task).clone();
                        r.job = ferry_domain::Job::restore(
                            r.job.id.clone(),
                            r.job.status(),
                            tasks,
                            r.job.failure().map(str::to_owned),
                        );
                    }
                    None
                }
                JobWrite::Job { job, .. } => {
                    if let Some(r) = stored.as_mut() {
                        apply(r, job);
                    }
                    None
                }
            })
            .collect())
    });

    let mut events = MockJobEventsPort::new();
    let p = published.clone();
    events
        .expect_publish()
        .returning(move |e| p.lock().unwrap().push(e.clone()));

    let process = Scripted::new(steps);
    let priors = Arc::new(StdMutex::new(Vec::new()));
    let mut transfers = MockTransferFactoryPort::new();
    let (pr, pi) = (process.clone(), priors.clone());
    let policy = RetryPolicy {
        attempts,
        base: Duration::from_millis(1),
        max: Duration::from_millis(2),
        deadline: Duration::from_secs(60),
    };
    transfers.expect_open().returning(move |_| {
        Ok(Arc::new(Recording {
            inner: Transfer::new(pr.clone(), Arc::new(MockFileStoragePort::new()), policy),
            priors: pi.clone(),
        }) as Arc<dyn TransferPort>)
    });

    let config = JobServiceConfig {
        retry: policy,
        progress_interval: Duration::from_millis(1),
        ..JobServiceConfig::default()
    };
    let service = JobService::new(
        Arc::new(store),
        Arc::new(transfers),
        Arc::new(MockStorageResolverPort::new()),
        Arc::new(events),
        Box::new(|| JobId::parse("job-unit").unwrap()),
        config,
    );
    World {
        service: Arc::new(service),
        stored,
        published,
        process,
        priors,
        open_reads,
        whole_reads,
        task_reads,
    }
}

fn one_file() -> SubmitJobRequest {
    SubmitJobRequest {
        files: vec![FileRequest {
            source: "http://origin.test/a.bin".into(),
            key: "a.bin".into(),
            size: None,
            sha256: None,
            md5: None,
            headers: Default::default(),
            attributes: Default::default(),
        }],
        destination: "out".into(),
        ..SubmitJobRequest::default()
    }
}

impl World {
    async fn submit_and_run(&self) -> JobRecord {
        let rec = self.service.submit(one_file()).await.unwrap();
        self.service.clone().run_abortable(rec.job.id.clone()).await;
        self.record()
    }

    fn record(&self) -> JobRecord {
        self.stored.lock().unwrap().clone().unwrap()
    }

    fn kinds(&self) -> Vec<JobEventKind> {
        self.published
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.kind.clone())
            .collect()
    }

    fn retries_announced(&self) -> Vec<bool> {
        self.kinds()
            .iter()
            .filter_map(|k| match k {
                JobEventKind::FileFailed { will_retry, .. } => Some(*will_retry),
                _ => None,
            })
            .collect()
    }
}

fn started(kinds: &[JobEventKind]) -> usize {
    kinds
        .iter()
        .filter(|k| matches!(k, JobEventKind::FileStarted { .. }))
        .count()
}

#[tokio::test]
async fn a_file_that_succeeds_completes_the_job() {
    let w = world(vec![Step::Ok], 3);
    let rec = w.submit_and_run().await;
    assert_eq!(rec.job.status(), JobStatus::Completed);
    let task = &rec.job.tasks()[0];
    assert_eq!(task.status(), TaskStatus::Succeeded);
    assert_eq!(task.attempts(), 1);
    let kinds = w.kinds();
    assert!(matches!(kinds[0], JobEventKind::JobCreated { files: 1 }));
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, JobEventKind::FileSucceeded { bytes: 7, .. }))
    );
    assert!(matches!(
        kinds.last(),
        Some(JobEventKind::JobCompleted {
            status: JobStatus::Completed,
            ..
        })
    ));
    assert_eq!(*w.priors.lock().unwrap(), vec![0]);
}

/// One file with a SHA-256, job attributes and a file's own over them.
fn one_file_with(if_exists: ferry_domain::IfExists) -> SubmitJobRequest {
    let mut request = one_file();
    request.files[0].sha256 = Some(sha().hex().to_owned());
    request.files[0].attributes = ferry_domain::RequestedAttributes {
        content_type: Some("text/csv".into()),
        ..Default::default()
    };
    request.attributes = ferry_domain::RequestedAttributes {
        content_type: Some("application/json".into()),
        cache_control: Some("no-cache".into()),
        ..Default::default()
    };
    request.if_exists = if_exists;
    request
}

#[tokio::test]
async fn a_file_already_at_the_destination_is_skipped_and_the_job_completes() {
    let w = world(vec![Step::Skip], 3);
    let rec = w
        .service
        .submit(one_file_with(ferry_domain::IfExists::Skip))
        .await
        .unwrap();
    w.service.clone().run_abortable(rec.job.id.clone()).await;
    let rec = w.record();
    assert_eq!(rec.job.status(), JobStatus::Completed);
    assert_eq!(rec.job.tasks()[0].status(), TaskStatus::Skipped);
    assert_eq!(rec.job.summary().skipped, 1);
    assert_eq!(rec.job.summary().succeeded, 0);
    let kinds = w.kinds();
    assert!(kinds.iter().any(|k| matches!(
        k,
        JobEventKind::FileSkipped {
            index: 0,
            bytes: 7,
            ..
        }
    )));
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(k, JobEventKind::FileSucceeded { .. }))
    );
    let seen = w.process.seen.lock().unwrap();
    let (skip, no_clobber, attributes) = &seen[0];
    assert!(*skip && !*no_clobber);
    // The file's Content-Type over the job's; the job's Cache-Control kept.
    assert_eq!(attributes.content_type.as_deref(), Some("text/csv"));
    assert_eq!(attributes.cache_control.as_deref(), Some("no-cache"));
}

#[tokio::test]
async fn an_existing_key_under_refuse_fails_the_file_once_without_retry() {
    let w = world(vec![Step::Exists, Step::Ok], 3);
    let rec = w
        .service
        .submit(one_file_with(ferry_domain::IfExists::Refuse))
        .await
        .unwrap();
    w.service.clone().run_abortable(rec.job.id.clone()).await;
    let rec = w.record();
    let task = &rec.job.tasks()[0];
    assert_eq!(task.status(), TaskStatus::Failed);
    assert_eq!(task.attempts(), 1);
    assert_eq!(
        task.failure().map(|f| f.code),
        Some(ferry_domain::ErrorCode::DestinationExists)
    );
    let seen = w.process.seen.lock().unwrap();
    assert!(seen[0].1 && !seen[0].0);
}

#[tokio::test]
async fn skip_needs_every_file_s_sha256_and_bad_attributes_name_their_field() {
    let w = world(vec![], 3);
    let mut request = one_file_with(ferry_domain::IfExists::Skip);
    request.files[0].sha256 = None;
    let Err(super::SubmitError::Invalid(e)) = w.service.submit(request).await else {
        panic!("a skip job without digests is refused");
    };
    assert_eq!(e.field, "files[0].sha256");
    let mut request = one_file_with(ferry_domain::IfExists::Overwrite);
    request.files[0].attributes.acl = Some("everyone".into());
    let Err(super::SubmitError::Invalid(e)) = w.service.submit(request).await else {
        panic!("a bad ACL is refused");
    };
    assert_eq!(e.field, "files[0].attributes.acl");
    let mut request = one_file_with(ferry_domain::IfExists::Overwrite);
    request.attributes.sse = Some("rot13".into());
    let Err(super::SubmitError::Invalid(e)) = w.service.submit(request).await else {
        panic!("a bad SSE is refused");
    };
    assert_eq!(e.field, "attributes.sse");
    assert_eq!(*w.process.calls.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_transient_failure_is_retried_then_succeeds() {
    let w = world(vec![Step::Fail(503), Step::Ok], 3);
    let rec = w.submit_and_run().await;
    assert_eq!(rec.job.status(), JobStatus::Completed);
    assert_eq!(rec.job.tasks()[0].attempts(), 2);
    assert_eq!(w.retries_announced(), vec![true]);
    assert_eq!(started(&w.kinds()), 2);
    assert_eq!(*w.process.abandoned.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_permanent_failure_fails_the_file_at_once() {
    let w = world(vec![Step::Fail(404)], 3);
    let rec = w.submit_and_run().await;
    assert_eq!(rec.job.status(), JobStatus::Failed);
    let task = &rec.job.tasks()[0];
    assert_eq!(task.status(), TaskStatus::Failed);
    assert_eq!(task.attempts(), 1);
    assert_eq!(
        task.failure().map(|f| f.code.as_str()),
        Some("source_error")
    );
    assert_eq!(w.retries_announced(), vec![false]);
    assert_eq!(*w.process.calls.lock().unwrap(), 1);
}

#[tokio::test]
async fn exhausted_retries_fail_the_file_after_the_last_attempt() {
    let w = world(vec![Step::Fail(503), Step::Fail(503), Step::Fail(503)], 3);
    let rec = w.submit_and_run().await;
    assert_eq!(rec.job.status(), JobStatus::Failed);
    assert_eq!(rec.job.tasks()[0].attempts(), 3);
    assert_eq!(w.retries_announced(), vec![true, true, false]);
    assert_eq!(*w.process.calls.lock().unwrap(), 3);
}

#[tokio::test]
async fn cancel_stops_a_running_file() {
    let w = world(vec![Step::Hang], 3);
    let rec = w.service.submit(one_file()).await.unwrap();
    let id = rec.job.id.clone();
    let runner = tokio::spawn(w.service.clone().run_abortable(id.clone()));
    // Wait until the transfer runs.
    for _ in 0..500 {
        if started(&w.kinds()) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(started(&w.kinds()), 1, "the file never started");
    let cancelled = w.service.cancel(&Access::All, &id).await.unwrap();
    assert_eq!(cancelled.job.status(), JobStatus::Cancelled);
    tokio::time::timeout(Duration::from_secs(5), runner)
        .await
        .expect("the run ended")
        .expect("the run did not panic");
    assert_eq!(w.record().job.status(), JobStatus::Cancelled);
    assert!(w.kinds().contains(&JobEventKind::JobCancelled));
    assert!(matches!(
        w.service.cancel(&Access::All, &id).await,
        Err(CancelError::AlreadyEnded { .. })
    ));
}

#[tokio::test]
async fn a_restart_resumes_a_task_left_running_counting_its_attempt() {
    let w = world(vec![Step::Ok], 3);
    let rec = w.service.submit(one_file()).await.unwrap();
    // As a process that died mid-file left it: downloading, task running
    // (attempt 1).
    {
        let mut stored = w.stored.lock().unwrap();
        let r = stored.as_mut().unwrap();
        r.job.start_downloading().unwrap();
        r.job.task_mut(0).unwrap().start().unwrap();
    }
    w.service.clone().run_abortable(rec.job.id.clone()).await;
    let done = w.record();
    assert_eq!(done.job.status(), JobStatus::Completed);
    assert_eq!(done.job.tasks()[0].attempts(), 2);
    assert_eq!(*w.priors.lock().unwrap(), vec![1]);
}

#[tokio::test]
async fn the_reconciler_runs_a_downloading_job_s_window_and_completes_it_once() {
    let w = world(vec![Step::Ok, Step::Ok], 3);
    let mut request = one_file();
    request.files.push(FileRequest {
        key: "b.bin".into(),
        source: "http://origin.test/b.bin".into(),
        ..request.files[0].clone()
    });
    let rec = w.service.submit(request).await.unwrap();
    // As a process that died between the job phase and its first files
    // left it: downloading, nothing running, no phase anywhere.
    {
        let mut stored = w.stored.lock().unwrap();
        stored.as_mut().unwrap().job.start_downloading().unwrap();
    }
    assert_eq!(w.service.reconcile().await.unwrap(), Some(2));
    tokio::time::timeout(Duration::from_secs(10), async {
        while w.record().job.status() != JobStatus::Completed {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the reconciler's deliveries complete the job");
    assert_eq!(*w.process.calls.lock().unwrap(), 2);
    // Its files over, the job completed: again, nothing more happens.
    assert_eq!(w.service.reconcile().await.unwrap(), Some(0));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let completed = w
        .kinds()
        .iter()
        .filter(|k| matches!(k, JobEventKind::JobCompleted { .. }))
        .count();
    assert_eq!(completed, 1);
    assert_eq!(*w.process.calls.lock().unwrap(), 2);
    assert_eq!(rec.job.tasks().len(), 2);
}

#[tokio::test]
async fn every_read_cancel_and_watch_takes_the_callers_access() {
    let w = world(vec![Step::Ok], 3);
    let mut request = one_file();
    request.owner = Some("alice".into());
    let rec = w.service.submit(request).await.unwrap();
    let id = rec.job.id.clone();
    let bob = Access::Owner("bob".into());
    let alice = Access::Owner("alice".into());
    assert!(w.service.get(&bob, &id).await.unwrap().is_none());
    assert!(w.service.get(&alice, &id).await.unwrap().is_some());
    assert!(w.service.get(&Access::All, &id).await.unwrap().is_some());
    assert!(matches!(
        w.service.cancel(&bob, &id).await,
        Err(CancelError::NotFound(_))
    ));
    assert!(matches!(
        w.service.watch(&bob, &id, None).await,
        Err(crate::jobs::WatchError::NotFound(_))
    ));
    assert_eq!(
        w.record().job.status(),
        JobStatus::Pending,
        "bob cancelled nothing"
    );
}

/// A clock that reads what the test set.
#[derive(Debug)]
struct FixedClock(StdMutex<i64>);

impl ferry_domain::ports::Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        *self.0.lock().unwrap()
    }
}

#[tokio::test]
async fn records_and_events_take_the_injected_clock() {
    let mut w = world(vec![Step::Ok], 3);
    let clock = Arc::new(FixedClock(StdMutex::new(1_000)));
    let service = Arc::try_unwrap(w.service)
        .unwrap()
        .with_clock(clock.clone());
    w.service = Arc::new(service);
    let rec = w.service.submit(one_file()).await.unwrap();
    assert_eq!((rec.created_at_ms, rec.updated_at_ms), (1_000, 1_000));
    *clock.0.lock().unwrap() = 5_000;
    w.service.clone().run_abortable(rec.job.id.clone()).await;
    let done = w.record();
    assert_eq!(done.created_at_ms, 1_000);
    assert_eq!(done.updated_at_ms, 5_000);
    let stamps: Vec<i64> = w
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.at_ms)
        .collect();
    assert_eq!(stamps.first(), Some(&1_000));
    assert!(stamps[1..].iter().all(|&t| t == 5_000), "{stamps:?}");
}

/// The embedded default reads a job's next tasks with its window: a file's
/// end enqueues the next one without reading the store, and the job's
/// per-job concurrency (4 by default) still holds, with the window kept
/// full.
#[tokio::test]
async fn files_read_ahead_keep_the_window_full_and_never_wider() {
    let w = world((0..100).map(|_| Step::Slow).collect(), 3);
    let mut request = one_file();
    request.files = (0..100)
        .map(|i| FileRequest {
            key: format!("f{i}.bin"),
            source: format!("http://origin.test/f{i}.bin"),
            ..request.files[0].clone()
        })
        .collect();
    let rec = w.service.submit(request).await.unwrap();
    w.service.clone().run_abortable(rec.job.id.clone()).await;
    let done = w.record();
    assert_eq!(done.job.status(), JobStatus::Completed);
    assert_eq!(*w.process.calls.lock().unwrap(), 100, "each file once");
    let (now, most) = *w.process.running.lock().unwrap();
    assert_eq!(now, 0);
    assert_eq!(most, 4, "the window of 4 was full, and never wider");
    let reads = *w.open_reads.lock().unwrap();
    assert!(
        reads < 20,
        "{reads} reads of the open tasks for 100 files (one per file before)"
    );
    assert_eq!(
        *w.whole_reads.lock().unwrap(),
        1,
        "the job is read whole once, when its phase starts; it completes from its head"
    );
    assert_eq!(
        *w.task_reads.lock().unwrap(),
        0,
        "every file ran from its read-ahead copy, none read again at its delivery"
    );
}
