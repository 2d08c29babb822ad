//! The job use cases: StartExportJob (submit), DispatchDownloadTasks (run),
//! one Transfer per task (through `TransferPort`: ProcessFile, checkpoints,
//! the one retry loop), CompleteJob, cancel, and resume after a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::future::{AbortHandle, Abortable};
use futures::{StreamExt, stream};
use thiserror::Error;
use tokio::sync::{Semaphore, broadcast, watch};
use tracing::{info, warn};

use async_trait::async_trait;
use ferry_domain::ports::{
    AttemptObserver, AttemptRefused, AttemptSlot, ExportPoll, ExportProviderPort, JobEvent,
    JobEventKind, JobEventsPort, JobFilter, JobPage, JobRecord, JobStoreError, JobStorePort,
    ProcessFileCommand, ProcessFileError, ProcessFileResult, ProgressPort, StorageResolverPort,
    TransferError, TransferFactoryPort, TransferPort, WorkflowCallbackPort,
};
use ferry_domain::source::redact_text;
use ferry_domain::{
    ByteSize, Export, ExportProgress, Job, JobId, JobStatus, RetryPolicy, SourceUrl, TaskFailure,
    TaskStatus, TransferId,
};

use crate::checkpointing::now_ms;

use super::access::Access;
use super::validate::{InvalidJobRequest, SubmitJobRequest, validate, validate_files};
use crate::process_file::ProcessFileConfig;

/// Tuning of the job runner.
#[derive(Debug, Clone)]
pub struct JobServiceConfig {
    /// File tasks of one job running at once.
    pub per_job_concurrency: usize,
    /// File tasks running at once across all jobs.
    pub global_concurrency: usize,
    /// Retries of a file's transfer (attempts per file, delays, deadline);
    /// a retry resumes from the task's last checkpoint.
    pub retry: RetryPolicy,
    pub max_files_per_job: usize,
    pub max_file_size: ByteSize,
    /// At most one progress event per file per interval.
    pub progress_interval: Duration,
    /// Events held for live watchers (shared by all); a watcher further
    /// behind catches up from the job store.
    pub live_capacity: usize,
    /// Events read from the store per catch-up page.
    pub watch_page: u32,
    /// A watcher more events behind than this gets `lagged` and is closed.
    pub watch_max_lag: u64,
    pub allow_file_sources: bool,
    pub process: ProcessFileConfig,
    /// The backpressure gate every transfer passes (also given to
    /// ProcessFile for its chunk latencies); `None`: only the global limit.
    pub pressure: Option<Arc<crate::backpressure::Backpressure>>,
}

impl Default for JobServiceConfig {
    fn default() -> Self {
        Self {
            per_job_concurrency: 4,
            global_concurrency: 16,
            retry: RetryPolicy {
                attempts: 3,
                base: Duration::from_secs(1),
                max: Duration::from_secs(30),
                deadline: Duration::from_secs(30 * 60),
            },
            max_files_per_job: 10_000,
            max_file_size: ferry_domain::ports::process::DEFAULT_MAX_SIZE,
            progress_interval: Duration::from_secs(1),
            live_capacity: 4096,
            watch_page: 256,
            watch_max_lag: 100_000,
            allow_file_sources: false,
            process: ProcessFileConfig {
                always_md5: true,
                ..ProcessFileConfig::default()
            },
            pressure: None,
        }
    }
}

/// Why a job was not accepted.
#[derive(Debug, Error)]
pub enum SubmitError {
    #[error(transparent)]
    Invalid(#[from] InvalidJobRequest),
    #[error(transparent)]
    Store(#[from] JobStoreError),
}

/// Why a job could not be cancelled.
#[derive(Debug, Error)]
pub enum CancelError {
    #[error("job {0} does not exist")]
    NotFound(JobId),
    #[error("job {id} already ended ({status})", status = .status.as_str())]
    AlreadyEnded { id: JobId, status: JobStatus },
    #[error(transparent)]
    Store(#[from] JobStoreError),
}

struct Running {
    abort: AbortHandle,
    done: watch::Receiver<bool>,
}

/// The job use cases, shared by the API handlers and the runner.
pub struct JobService {
    pub(super) store: Arc<dyn JobStorePort>,
    transfers: Arc<dyn TransferFactoryPort>,
    pub(super) storages: Arc<dyn StorageResolverPort>,
    events: Arc<dyn JobEventsPort>,
    new_id: Box<dyn Fn() -> JobId + Send + Sync>,
    pub(super) config: JobServiceConfig,
    global: Arc<Semaphore>,
    running: Mutex<HashMap<JobId, Running>>,
    /// Held across "store the event" and "publish it", so subscribers see
    /// events in sequence order.
    emit_order: tokio::sync::Mutex<()>,
    /// Told how jobs with a task token ended (AWS Step Functions).
    callback: Option<Arc<dyn WorkflowCallbackPort>>,
    /// Starts and polls exports for jobs that do not list their files.
    exports: Option<Arc<dyn ExportProviderPort>>,
    /// Every stored event, in sequence order, for live watchers.
    pub(super) live: broadcast::Sender<JobEvent>,
    pub(super) watch_stats: super::watch::WatchStats,
}

/// How an export phase ended.
enum ExportOutcome {
    /// The manifest arrived; the job is downloading.
    Ready,
    /// The job failed (the reason is on the job).
    Failed(String),
}

impl std::fmt::Debug for JobService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// What a transfer tells its task's event forwarder.
enum Note {
    Progress(u64, Option<u64>),
    Resumed(u64),
    Restarted(String),
}

/// Sends rate-limited progress from the (sync) ProgressPort to the job's
/// event stream.
struct EventProgress {
    tx: mpsc::UnboundedSender<Note>,
    interval: Duration,
    state: Mutex<(Option<Instant>, Option<u64>)>,
}

impl ProgressPort for EventProgress {
    fn started(&self, total: Option<u64>) {
        lock(&self.state).1 = total;
    }

    fn advanced(&self, done: u64) {
        let mut st = lock(&self.state);
        let due = st.0.is_none_or(|t| t.elapsed() >= self.interval);
        if due {
            st.0 = Some(Instant::now());
            let _ = self.tx.unbounded_send(Note::Progress(done, st.1));
        }
    }

    fn finished(&self, _ok: bool) {}

    fn resumed(&self, offset: u64) {
        let _ = self.tx.unbounded_send(Note::Resumed(offset));
    }

    fn restarted(&self, reason: &str) {
        let _ = self.tx.unbounded_send(Note::Restarted(reason.to_owned()));
    }
}

impl JobService {
    /// `transfers` runs each file (see `TransferFactory::for_jobs`);
    /// `storages` is used for readiness and orphan cleanup.
    pub fn new(
        store: Arc<dyn JobStorePort>,
        transfers: Arc<dyn TransferFactoryPort>,
        storages: Arc<dyn StorageResolverPort>,
        events: Arc<dyn JobEventsPort>,
        new_id: Box<dyn Fn() -> JobId + Send + Sync>,
        config: JobServiceConfig,
    ) -> Self {
        let global = Arc::new(Semaphore::new(config.global_concurrency.max(1)));
        let (live, _) = broadcast::channel(config.live_capacity.max(16));
        Self {
            live,
            watch_stats: super::watch::WatchStats::default(),
            store,
            transfers,
            storages,
            events,
            new_id,
            config,
            global,
            running: Mutex::new(HashMap::new()),
            emit_order: tokio::sync::Mutex::new(()),
            callback: None,
            exports: None,
        }
    }

    /// Lets jobs start exports at a provider through `exports`.
    #[must_use]
    pub fn with_export_provider(mut self, exports: Arc<dyn ExportProviderPort>) -> Self {
        self.exports = Some(exports);
        self
    }

    /// Answers the task tokens of jobs through `callback` when they end.
    #[must_use]
    pub fn with_callback(mut self, callback: Arc<dyn WorkflowCallbackPort>) -> Self {
        self.callback = Some(callback);
        self
    }

    /// Tells the workflow how the job ended, if it carries a task token, and
    /// records the outcome on the job. A failed callback never changes the
    /// job's own result.
    async fn notify_workflow(&self, record: &mut JobRecord) {
        let (Some(callback), Some(token)) = (&self.callback, record.task_token.clone()) else {
            return;
        };
        let summary = record.job.summary();
        let status = record.job.status();
        let outcome = match status {
            JobStatus::Completed | JobStatus::CompletedWithErrors => {
                let output = serde_json::json!({
                    "job_id": record.job.id.as_str(),
                    "status": status.as_str(),
                    "destination": record.destination.to_string(),
                    "files": { "total": summary.total, "succeeded": summary.succeeded, "failed": summary.failed },
                    "bytes": summary.bytes_done,
                });
                callback
                    .succeed(&token, &output.to_string())
                    .await
                    .map(|()| "task_success")
            }
            JobStatus::Cancelled => callback
                .fail(&token, "ferry.JobCancelled", "the job was cancelled")
                .await
                .map(|()| "task_failure"),
            _ => {
                let cause = record.job.failure().unwrap_or("the job failed").to_owned();
                callback
                    .fail(&token, "ferry.JobFailed", &cause)
                    .await
                    .map(|()| "task_failure")
            }
        };
        record.callback = Some(match outcome {
            Ok(sent) => format!("sent {sent}"),
            Err(e) => {
                warn!(job = %record.job.id, error = %e, "workflow callback failed");
                format!("failed: {e}")
            }
        });
        record.updated_at_ms = now_ms();
        if let Err(e) = self.store.save_job(record).await {
            warn!(job = %record.job.id, error = %e, "could not record the callback outcome");
        }
    }

    pub fn config(&self) -> &JobServiceConfig {
        &self.config
    }

    /// Stores an event (assigning its sequence number) and publishes it.
    async fn emit(&self, id: &JobId, kind: JobEventKind) {
        let _order = self.emit_order.lock().await;
        let mut event = JobEvent {
            job_id: id.clone(),
            seq: 0,
            at_ms: now_ms(),
            kind,
        };
        match self.store.append_event(&event).await {
            Ok(seq) => event.seq = seq,
            Err(e) => warn!(job = %id, error = %e, "could not store an event"),
        }
        // No receiver is fine: nobody is watching.
        let _ = self.live.send(event.clone());
        self.events.publish(&event).await;
    }

    /// StartExportJob: validates, stores durably, announces. Run it with
    /// [`JobService::run_abortable`].
    pub async fn submit(&self, request: SubmitJobRequest) -> Result<JobRecord, SubmitError> {
        let valid = validate(
            &request,
            self.config.max_files_per_job,
            self.config.allow_file_sources,
        )?;
        let files = valid.files.len();
        let id = (self.new_id)();
        let now = now_ms();
        let export = valid.export.map(|spec| Export {
            spec,
            progress: ExportProgress::default(),
        });
        let record = JobRecord {
            export,
            job: Job::new(id.clone(), valid.files),
            destination: valid.destination,
            task_token: request.task_token,
            owner: request.owner,
            created_at_ms: now,
            updated_at_ms: now,
            callback: None,
            last_event_seq: 0,
        };
        self.store.create(&record).await?;
        info!(job = %id, files, "job accepted");
        self.emit(&id, JobEventKind::JobCreated { files }).await;
        Ok(record)
    }

    /// The job, if it exists and `access` may see it (`None` otherwise:
    /// a caller cannot tell another owner's job from a missing one).
    pub async fn get(
        &self,
        access: &Access,
        id: &JobId,
    ) -> Result<Option<JobRecord>, JobStoreError> {
        Ok(self
            .store
            .get(id)
            .await?
            .filter(|record| access.can_see(record)))
    }

    /// A page of the jobs `access` may see (the filter's owner is set from
    /// it).
    pub async fn list(
        &self,
        access: &Access,
        filter: &JobFilter,
    ) -> Result<JobPage, JobStoreError> {
        let filter = JobFilter {
            owner: access.owner_filter(),
            ..filter.clone()
        };
        self.store.list(&filter).await
    }

    pub async fn events_after(
        &self,
        id: &JobId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JobEvent>, JobStoreError> {
        self.store.events_after(id, after, limit).await
    }

    pub async fn ping(&self) -> Result<(), JobStoreError> {
        self.store.ping().await
    }

    /// The backpressure level and its inputs, if a gate is configured.
    pub fn pressure(&self) -> Option<crate::backpressure::PressureReport> {
        self.config.pressure.as_ref().map(|g| g.report())
    }

    /// Readiness of each dependency: (name, error if not ready).
    pub async fn readiness(&self) -> Vec<(&'static str, Option<String>)> {
        let (store, storage) = futures::join!(self.store.ping(), self.storages.ready());
        vec![
            ("job_store", store.err().map(|e| e.to_string())),
            ("storage", storage.err().map(|e| e.to_string())),
        ]
    }

    /// Runs a job, registered so that [`JobService::cancel`] can stop it.
    pub async fn run_abortable(self: Arc<Self>, id: JobId) {
        let (abort, registration) = AbortHandle::new_pair();
        let (done_tx, done_rx) = watch::channel(false);
        lock(&self.running).insert(
            id.clone(),
            Running {
                abort,
                done: done_rx,
            },
        );
        let outcome = Abortable::new(self.run(&id), registration).await;
        match outcome {
            Ok(Err(e)) => warn!(job = %id, error = %e, "job run failed"),
            Ok(Ok(())) => {}
            Err(_aborted) => info!(job = %id, "job run stopped"),
        }
        lock(&self.running).remove(&id);
        let _ = done_tx.send(true);
    }

    /// DispatchDownloadTasks + CompleteJob.
    pub async fn run(&self, id: &JobId) -> Result<(), JobStoreError> {
        let mut record = self
            .store
            .get(id)
            .await?
            .ok_or_else(|| JobStoreError::NotFound(id.clone()))?;
        if record.job.status().is_terminal() {
            return Ok(());
        }
        let transfer = match self.transfers.open(&record.destination).await {
            Ok(t) => t,
            Err(e) => {
                let reason = format!("the destination cannot be used: {e}");
                self.fail_job(&mut record, reason).await?;
                return Ok(());
            }
        };
        if record.export.is_some()
            && matches!(
                record.job.status(),
                JobStatus::Pending | JobStatus::Exporting
            )
        {
            match self.export_phase(&mut record).await? {
                ExportOutcome::Ready => {}
                ExportOutcome::Failed(reason) => {
                    self.fail_job(&mut record, reason).await?;
                    return Ok(());
                }
            }
        }
        if record.job.status() == JobStatus::Pending {
            record
                .job
                .start_downloading()
                .map_err(|e| JobStoreError::Unexpected(Box::new(e)))?;
            record.updated_at_ms = now_ms();
            self.store.save_job(&record).await?;
        }
        if record.job.requeue_running() > 0 {
            self.store.replace_tasks(id, record.job.tasks()).await?;
        }
        self.dispatch(record, transfer).await
    }

    /// DispatchDownloadTasks: every queued task through its Transfer, then
    /// CompleteJob.
    async fn dispatch(
        &self,
        record: JobRecord,
        transfer: Arc<dyn TransferPort>,
    ) -> Result<(), JobStoreError> {
        let id = record.job.id.clone();
        let queued: Vec<usize> = record
            .job
            .tasks()
            .iter()
            .filter(|t| t.status() == TaskStatus::Queued)
            .map(|t| t.index)
            .collect();
        let shared = Mutex::new(record);
        stream::iter(queued)
            .map(|i| self.run_task(&shared, transfer.as_ref(), i))
            .buffer_unordered(self.config.per_job_concurrency.max(1))
            .collect::<Vec<()>>()
            .await;
        self.complete(&id, &shared).await
    }

    /// Fails the job for `reason` (stored, announced, told to the workflow).
    async fn fail_job(&self, record: &mut JobRecord, reason: String) -> Result<(), JobStoreError> {
        let id = record.job.id.clone();
        if record.job.fail(reason).is_err() {
            return Ok(());
        }
        warn!(job = %id, reason = record.job.failure().unwrap_or(""), "job failed");
        record.updated_at_ms = now_ms();
        self.store.save_job(record).await?;
        self.store.replace_tasks(&id, record.job.tasks()).await?;
        let summary = record.job.summary();
        self.emit(
            &id,
            JobEventKind::JobCompleted {
                status: JobStatus::Failed,
                summary,
            },
        )
        .await;
        self.notify_workflow(record).await;
        Ok(())
    }

    /// StartExportJob at the provider + PollExportStatus until the manifest
    /// arrives, the provider fails the export, or the deadline passes. A
    /// restart continues from what is stored: an export already started is
    /// polled, never started twice.
    async fn export_phase(&self, record: &mut JobRecord) -> Result<ExportOutcome, JobStoreError> {
        let id = record.job.id.clone();
        let Some(provider) = self.exports.clone() else {
            return Ok(ExportOutcome::Failed(
                "this job starts an export, but no export provider is configured".into(),
            ));
        };
        let Some(mut export) = record.export.clone() else {
            return Ok(ExportOutcome::Failed(
                "the job has no export to start".into(),
            ));
        };
        if record.job.status() == JobStatus::Pending {
            record
                .job
                .start_export()
                .map_err(|e| JobStoreError::Unexpected(Box::new(e)))?;
            export.progress.started_at_ms = Some(now_ms());
            record.export = Some(export.clone());
            record.updated_at_ms = now_ms();
            self.store.save_job(record).await?;
            self.emit(&id, JobEventKind::ExportStarted).await;
        }
        let policy = export.spec.poll;
        let started_at = export.progress.started_at_ms.unwrap_or_else(now_ms);
        let deadline_ms = i64::try_from(policy.deadline().as_millis()).unwrap_or(i64::MAX);
        let deadline_at = started_at.saturating_add(deadline_ms);
        let timed_out = || {
            format!(
                "the export was not ready within its deadline of {} ms",
                policy.deadline().as_millis()
            )
        };
        // Waits before the next call; false once the deadline has passed.
        let wait = |attempt: u32| async move {
            let left = deadline_at.saturating_sub(now_ms());
            if left <= 0 {
                return false;
            }
            let left = Duration::from_millis(u64::try_from(left).unwrap_or(0));
            tokio::time::sleep(policy.interval(attempt).min(left)).await;
            true
        };

        let status_url: SourceUrl = match export.progress.status_url.clone() {
            Some(url) => url,
            None => {
                let mut attempt = 0;
                loop {
                    match provider.start(&id, &export.spec).await {
                        Ok(url) => break url,
                        Err(e) if e.class().is_retryable() => {
                            warn!(job = %id, error = %e, "export start failed; retrying");
                            if !wait(attempt).await {
                                return Ok(ExportOutcome::Failed(timed_out()));
                            }
                            attempt += 1;
                        }
                        Err(e) => {
                            return Ok(ExportOutcome::Failed(format!(
                                "the export could not be started: {}",
                                redact_text(&e.to_string())
                            )));
                        }
                    }
                }
            }
        };
        if export.progress.status_url.is_none() {
            export.progress.status_url = Some(status_url.clone());
            record.export = Some(export.clone());
            record.updated_at_ms = now_ms();
            self.store.save_job(record).await?;
            info!(job = %id, status_url = %status_url, "export started");
        }

        let mut attempt = 0;
        loop {
            if !wait(attempt).await {
                return Ok(ExportOutcome::Failed(timed_out()));
            }
            attempt += 1;
            let entries = match provider.poll(&status_url).await {
                Ok(ExportPoll::Pending) => continue,
                Ok(ExportPoll::Ready(entries)) => entries,
                Ok(ExportPoll::Failed(reason)) => {
                    return Ok(ExportOutcome::Failed(format!(
                        "the provider reported that the export failed: {}",
                        redact_text(&reason)
                    )));
                }
                Err(e) if e.class().is_retryable() => {
                    warn!(job = %id, error = %e, "export poll failed; polling again");
                    continue;
                }
                Err(e) => {
                    return Ok(ExportOutcome::Failed(format!(
                        "the export's status could not be read: {}",
                        redact_text(&e.to_string())
                    )));
                }
            };
            let files = match validate_files(
                &entries,
                "manifest.files",
                self.config.max_files_per_job,
                self.config.allow_file_sources,
            ) {
                Ok(files) => files,
                Err(e) => {
                    return Ok(ExportOutcome::Failed(format!(
                        "the export's manifest is not valid: {}",
                        redact_text(&e.to_string())
                    )));
                }
            };
            let count = files.len();
            record
                .job
                .export_ready(files)
                .map_err(|e| JobStoreError::Unexpected(Box::new(e)))?;
            record.updated_at_ms = now_ms();
            self.store.replace_tasks(&id, record.job.tasks()).await?;
            self.store.save_job(record).await?;
            info!(job = %id, files = count, "export ready");
            self.emit(&id, JobEventKind::ExportReady { files: count })
                .await;
            return Ok(ExportOutcome::Ready);
        }
    }

    /// One file task: its Transfer (which retries), with each attempt
    /// recorded on the task and announced by [`TaskAttempts`].
    async fn run_task(&self, shared: &Mutex<JobRecord>, transfer: &dyn TransferPort, index: usize) {
        let (id, task) = {
            let rec = lock(shared);
            (rec.job.id.clone(), rec.job.tasks().get(index).cloned())
        };
        let Some(task) = task else {
            warn!(job = %id, index, "no such task");
            return;
        };
        let (tx, mut rx) = mpsc::unbounded();
        let mut command = ProcessFileCommand::new(task.spec.source.clone(), task.spec.key.clone());
        command.expected = task.spec.expected.clone();
        command.expected_size = task.spec.expected_size;
        command.max_size = self.config.max_file_size;
        command.transfer_id = self
            .config
            .process
            .checkpoints
            .is_some()
            .then(|| TransferId::for_task(&id, index));
        command.progress = Arc::new(EventProgress {
            tx,
            interval: self.config.progress_interval,
            state: Mutex::new((None, None)),
        });
        let forward = async {
            while let Some(note) = rx.next().await {
                let kind = match note {
                    Note::Progress(bytes_done, total) => {
                        let _ = lock(shared)
                            .job
                            .task_mut(index)
                            .and_then(|t| t.progress(bytes_done));
                        JobEventKind::FileProgress {
                            index,
                            bytes_done,
                            total,
                        }
                    }
                    Note::Resumed(offset) => JobEventKind::FileResumed { index, offset },
                    Note::Restarted(reason) => JobEventKind::FileRestarted { index, reason },
                };
                self.emit(&id, kind).await;
            }
        };
        let attempts = TaskAttempts {
            service: self,
            shared,
            id: &id,
            index,
        };
        // The command (and its progress sender) is dropped when the
        // transfer ends, which ends the forwarder.
        let (outcome, ()) =
            futures::join!(transfer.run(command, task.attempts(), &attempts), forward);
        match outcome {
            // Recorded and announced attempt by attempt.
            Ok(_) | Err(TransferError::Failed(_)) => {}
            Err(TransferError::Refused(e)) => {
                warn!(job = %id, index, error = %e, "task not started")
            }
        }
    }

    async fn save_task(&self, id: &JobId, task: &ferry_domain::FileTask) {
        if let Err(e) = self.store.save_task(id, task).await {
            warn!(job = %id, index = task.index, error = %e, "could not save a task");
        }
    }

    /// CompleteJob: final status and summary, stored and announced.
    async fn complete(&self, id: &JobId, shared: &Mutex<JobRecord>) -> Result<(), JobStoreError> {
        let (mut record, status) = {
            let mut rec = lock(shared);
            match rec.job.complete() {
                Ok(status) => {
                    rec.updated_at_ms = now_ms();
                    (rec.clone(), status)
                }
                Err(e) => {
                    warn!(job = %id, error = %e, "job not completed");
                    return Ok(());
                }
            }
        };
        self.store.save_job(&record).await?;
        info!(job = %id, status = status.as_str(), "job finished");
        let summary = record.job.summary();
        self.emit(id, JobEventKind::JobCompleted { status, summary })
            .await;
        self.notify_workflow(&mut record).await;
        Ok(())
    }

    /// Cancels a job `access` may see: its running transfers stop (temp
    /// files removed, uploads aborted) and unfinished tasks become
    /// cancelled.
    pub async fn cancel(&self, access: &Access, id: &JobId) -> Result<JobRecord, CancelError> {
        if self.get(access, id).await?.is_none() {
            return Err(CancelError::NotFound(id.clone()));
        }
        let running = lock(&self.running).remove(id);
        if let Some(mut running) = running {
            running.abort.abort();
            let _ =
                tokio::time::timeout(Duration::from_secs(10), running.done.wait_for(|d| *d)).await;
        }
        let mut record = self
            .store
            .get(id)
            .await?
            .ok_or_else(|| CancelError::NotFound(id.clone()))?;
        let status = record.job.status();
        if record.job.cancel().is_err() {
            return Err(CancelError::AlreadyEnded {
                id: id.clone(),
                status,
            });
        }
        record.updated_at_ms = now_ms();
        self.store.save_job(&record).await?;
        self.store.replace_tasks(id, record.job.tasks()).await?;
        self.emit(id, JobEventKind::JobCancelled).await;
        self.notify_workflow(&mut record).await;
        self.discard_checkpoints(Some(id), Duration::ZERO).await;
        Ok(record)
    }

    /// Jobs left unfinished by a previous process, their running tasks
    /// re-queued; run each with [`JobService::run_abortable`].
    pub async fn unfinished(&self) -> Result<Vec<JobId>, JobStoreError> {
        self.store.unfinished().await
    }
}

pub use CancelError as JobCancelError;

/// A task's attempts as the job sees them: each takes a global permit and
/// an admission, starts the task (stored, `file_started`), and a failure
/// re-queues or fails it (stored, `file_failed`).
struct TaskAttempts<'a> {
    service: &'a JobService,
    shared: &'a Mutex<JobRecord>,
    id: &'a JobId,
    index: usize,
}

#[async_trait]
impl AttemptObserver for TaskAttempts<'_> {
    async fn starting(&self, attempt: u32) -> Result<AttemptSlot, AttemptRefused> {
        let refused = |reason: String| AttemptRefused { attempt, reason };
        let permit = self
            .service
            .global
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| refused(e.to_string()))?;
        let admission = match &self.service.config.pressure {
            Some(gate) => Some(gate.admit().await),
            None => None,
        };
        let started = {
            let mut rec = lock(self.shared);
            rec.job
                .task_mut(self.index)
                .and_then(|t| t.start().map(|()| t.clone()))
        };
        let task = started.map_err(|e| refused(e.to_string()))?;
        self.service.save_task(self.id, &task).await;
        self.service
            .emit(
                self.id,
                JobEventKind::FileStarted {
                    index: self.index,
                    attempt: task.attempts(),
                },
            )
            .await;
        Ok(Box::new((permit, admission)))
    }

    async fn succeeded(&self, _attempt: u32, result: &ProcessFileResult) {
        let (id, index) = (self.id, self.index);
        let done = {
            let mut rec = lock(self.shared);
            rec.job.task_mut(index).and_then(|t| {
                t.succeed(result.bytes, result.sha256.clone(), result.md5.clone())
                    .map(|()| t.clone())
            })
        };
        if let Ok(t) = done {
            self.service.save_task(id, &t).await;
        }
        self.service
            .emit(
                id,
                JobEventKind::FileSucceeded {
                    index,
                    bytes: result.bytes,
                    sha256: result.sha256.hex().to_owned(),
                    md5: result.md5.as_ref().map(|c| c.hex().to_owned()),
                },
            )
            .await;
    }

    async fn failed(&self, _attempt: u32, error: &ProcessFileError, will_retry: bool) {
        let (id, index) = (self.id, self.index);
        let failure = TaskFailure {
            class: error.class(),
            code: error.code().to_owned(),
            message: error.to_string(),
        };
        let updated = {
            let mut rec = lock(self.shared);
            rec.job.task_mut(index).and_then(|t| {
                if will_retry {
                    t.requeue()
                } else {
                    t.fail(failure.clone())
                }
                .map(|()| t.clone())
            })
        };
        if let Ok(t) = updated {
            self.service.save_task(id, &t).await;
        }
        warn!(job = %id, index, code = failure.code, retry = will_retry, error = %failure.message, "file failed");
        self.service
            .emit(
                id,
                JobEventKind::FileFailed {
                    index,
                    code: failure.code,
                    class: failure.class.as_str().to_owned(),
                    message: failure.message,
                    will_retry,
                },
            )
            .await;
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
