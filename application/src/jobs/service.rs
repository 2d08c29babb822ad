//! The job use cases, as orchestration: StartExportJob (submit), the export
//! phase ([`ExportPhase`]), DispatchDownloadTasks ([`Runner`], one Transfer
//! per file through `TransferPort`), CompleteJob, the workflow callback
//! ([`WorkflowNotifier`]), cancel, and resume after a restart. Every change
//! is stamped, stored and announced by one [`Recorder`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{AbortHandle, Abortable};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use ferry_domain::ports::{
    Clock, ExportProviderPort, IdempotencyKey, JobEvent, JobEventKind, JobEventsPort, JobFilter,
    JobHead, JobPage, JobRecord, JobStoreError, JobStorePort, Keyed, Leadership, NodeId,
    StorageResolverPort, TaskFilter, TaskQueuePort, TransferFactoryPort, WorkflowCallbackPort,
};
use ferry_domain::{ByteSize, Export, ExportProgress, Job, JobId, JobStatus, RetryPolicy};

use super::access::Access;
use super::dispatch::Dispatch;
use super::export::{ExportOutcome, ExportPhase};
use super::quota::OwnerQuota;
use super::recorder::Recorder;
use super::runner::{Runner, lock};
use super::validate::{InvalidJobRequest, SubmitJobRequest, validate};
use super::workflow::WorkflowNotifier;
use crate::checkpointing::SystemClock;
use crate::process_file::ProcessFileConfig;

/// Tuning of the job runner.
#[derive(Debug, Clone)]
pub struct JobServiceConfig {
    /// File tasks of one job running at once.
    pub per_job_concurrency: usize,
    /// File tasks running at once across all jobs.
    pub global_concurrency: usize,
    /// File tasks of one owner running at once (its cap within the
    /// global slots, which are shared round-robin between owners).
    pub per_owner_concurrency: usize,
    /// File tasks reading from one source host (scheme, host and port) at
    /// once: the source client's connection limit per host, taken before
    /// a global slot so that files waiting for a busy host hold none.
    pub per_host_concurrency: usize,
    /// Retries of a file's transfer (attempts per file, delays, deadline);
    /// a retry resumes from the task's last checkpoint.
    pub retry: RetryPolicy,
    pub max_files_per_job: usize,
    /// The longest one file may take, all attempts and waits included
    /// (`None`: no limit); past it the file fails.
    pub file_deadline: Option<Duration>,
    /// Export phases (start and poll) running at once on this server.
    pub max_export_phases: usize,
    pub max_file_size: ByteSize,
    /// The shortest export poll interval a job may ask for.
    pub min_poll_interval: Duration,
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
            per_owner_concurrency: 16,
            per_host_concurrency: 10,
            retry: RetryPolicy {
                attempts: 3,
                base: Duration::from_secs(1),
                max: Duration::from_secs(30),
                deadline: Duration::from_secs(30 * 60),
            },
            max_files_per_job: 10_000,
            max_export_phases: 64,
            file_deadline: None,
            min_poll_interval: Duration::from_secs(1),
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
    /// The idempotency key names an earlier job submitted with another
    /// request.
    #[error(
        "this Idempotency-Key was used for job {0} with a different request; use a new key for a new job"
    )]
    KeyReused(JobId),
    /// The submitter is at one of its quotas.
    #[error(transparent)]
    OverQuota(#[from] super::quota::QuotaExceeded),
    /// The destination is outside the submitter's scopes. The message
    /// names the scopes, never whether the destination exists.
    #[error("{field}: {message}")]
    Forbidden { field: String, message: String },
    #[error(transparent)]
    Store(#[from] JobStoreError),
}

/// How long an idempotency key names its job (24 hours).
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// What a keyed submission did.
#[derive(Debug)]
pub struct Submitted {
    pub record: JobRecord,
    /// The key named an earlier job with the same request: this is that
    /// job, and nothing new was stored or started.
    pub replayed: bool,
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
    recorder: Recorder,
    transfers: Arc<dyn TransferFactoryPort>,
    storages: Arc<dyn StorageResolverPort>,
    new_id: Box<dyn Fn() -> JobId + Send + Sync>,
    config: JobServiceConfig,
    runner: Runner,
    exports: ExportPhase,
    workflow: WorkflowNotifier,
    running: Mutex<HashMap<JobId, Running>>,
    watch_stats: super::watch::WatchStats,
    /// How file tasks are queued and run: the in-process queue, or (cluster
    /// mode) this node and the shared queue.
    dispatch: Dispatch,
}

impl std::fmt::Debug for JobService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobService")
            .field("config", &self.config)
            .finish_non_exhaustive()
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
        let runner = Runner {
            global: super::fair::FairShare::new(
                config.global_concurrency,
                config.per_owner_concurrency,
                config.per_host_concurrency,
            ),
            pressure: config.pressure.clone(),
            progress_interval: config.progress_interval,
            max_file_size: config.max_file_size,
            checkpoints: config.process.checkpoints.is_some(),
            file_deadline: config.file_deadline,
        };
        let exports = ExportPhase {
            provider: None,
            phases: Arc::new(tokio::sync::Semaphore::new(config.max_export_phases.max(1))),
            max_files_per_job: config.max_files_per_job,
            allow_file_sources: config.allow_file_sources,
        };
        Self {
            recorder: Recorder::new(store, events, Arc::new(SystemClock), config.live_capacity),
            transfers,
            storages,
            new_id,
            runner,
            exports,
            workflow: WorkflowNotifier::default(),
            config,
            running: Mutex::new(HashMap::new()),
            watch_stats: super::watch::WatchStats::default(),
            dispatch: Dispatch::local(),
        }
    }

    /// Cluster mode: this service is node `node` of a cluster whose file
    /// tasks go through `queue` (see `jobs::cluster`).
    #[must_use]
    pub fn with_cluster(mut self, node: NodeId, queue: Arc<dyn TaskQueuePort>) -> Self {
        self.dispatch = Dispatch::cluster(node, queue);
        self
    }

    pub(super) fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    pub(super) fn transfers(&self) -> &Arc<dyn TransferFactoryPort> {
        &self.transfers
    }

    pub(super) fn runner(&self) -> &Runner {
        &self.runner
    }

    /// Lets jobs start exports at a provider through `exports`.
    #[must_use]
    pub fn with_export_provider(mut self, exports: Arc<dyn ExportProviderPort>) -> Self {
        self.exports.provider = Some(exports);
        self
    }

    /// Answers the task tokens of jobs through `callback` when they end.
    #[must_use]
    pub fn with_callback(mut self, callback: Arc<dyn WorkflowCallbackPort>) -> Self {
        self.workflow.callback = Some(callback);
        self
    }

    /// Reads wall-clock time from `clock` (records, events, export
    /// deadlines) instead of the system's.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.recorder.set_clock(clock);
        self
    }

    pub fn config(&self) -> &JobServiceConfig {
        &self.config
    }

    pub(super) fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    pub(super) fn storages(&self) -> &Arc<dyn StorageResolverPort> {
        &self.storages
    }

    /// Counters of all watches (exported as metrics).
    pub fn watch_stats(&self) -> &super::watch::WatchStats {
        &self.watch_stats
    }

    /// StartExportJob: validates, stores durably, announces. Run it with
    /// [`JobService::run_abortable`].
    pub async fn submit(&self, request: SubmitJobRequest) -> Result<JobRecord, SubmitError> {
        let quota = request.quota;
        let record = self.new_record(request)?;
        self.check_quota(&record, &quota).await?;
        self.recorder.store().create(&record).await?;
        self.announce(&record).await;
        Ok(record)
    }

    /// [`JobService::submit`] under a client's idempotency key: the first
    /// request stores the job; a replay (same key and fingerprint, within
    /// 24 hours) gets that job back and stores nothing; the same key with
    /// another request is `KeyReused`.
    pub async fn submit_keyed(
        &self,
        request: SubmitJobRequest,
        key: &IdempotencyKey,
    ) -> Result<Submitted, SubmitError> {
        let quota = request.quota;
        let record = self.new_record(request)?;
        self.check_quota(&record, &quota).await?;
        match self
            .recorder
            .store()
            .create_keyed(&record, key, IDEMPOTENCY_TTL_MS)
            .await?
        {
            Keyed::Created => {
                self.announce(&record).await;
                Ok(Submitted {
                    record,
                    replayed: false,
                })
            }
            Keyed::Existing {
                job,
                same_request: true,
            } => {
                let access = key
                    .owner()
                    .map_or(Access::All, |o| Access::Owner(o.to_owned()));
                match self.get(&access, &job).await? {
                    Some(earlier) => Ok(Submitted {
                        record: earlier,
                        replayed: true,
                    }),
                    // Its job is gone (retention): the key is spent.
                    None => Err(SubmitError::KeyReused(job)),
                }
            }
            Keyed::Existing { job, .. } => Err(SubmitError::KeyReused(job)),
        }
    }

    /// A validated request as a new job record (not stored).
    fn new_record(&self, request: SubmitJobRequest) -> Result<JobRecord, SubmitError> {
        let valid = validate(
            &request,
            self.config.max_files_per_job,
            self.config.allow_file_sources,
        )?;
        if !request.scopes.allows(&valid.destination) {
            return Err(SubmitError::Forbidden {
                field: "destination".into(),
                message: format!(
                    "this token may not write to `{}`; it may write at or under: {}",
                    valid.destination, request.scopes
                ),
            });
        }
        if let Some(spec) = &valid.export
            && spec.poll.base_interval() < self.config.min_poll_interval
        {
            return Err(SubmitError::Invalid(InvalidJobRequest {
                field: "export.poll.base_interval_ms".into(),
                message: format!(
                    "polls at most every {} ms on this server; ask for a longer base_interval_ms",
                    self.config.min_poll_interval.as_millis()
                ),
            }));
        }
        if self.dispatch.node.is_some()
            && matches!(
                valid.destination,
                ferry_domain::Destination::Directory { .. }
            )
        {
            return Err(SubmitError::Invalid(InvalidJobRequest {
                field: "destination".into(),
                message: "this server is a cluster node, and a directory is local to one node; \
                          give an s3://bucket/prefix destination"
                    .into(),
            }));
        }
        let id = (self.new_id)();
        let now = self.recorder.now_ms();
        let export = valid.export.map(|spec| Export {
            spec,
            progress: ExportProgress::default(),
        });
        Ok(JobRecord {
            export,
            job: Job::new(id, valid.files),
            destination: valid.destination,
            options: valid.options,
            task_token: request.task_token,
            owner: request.owner,
            created_at_ms: now,
            updated_at_ms: now,
            callback: None,
            last_event_seq: 0,
        })
    }

    /// Whether the new job fits its owner's quotas (read from the store:
    /// a soft limit, as concurrent submissions may pass it together).
    async fn check_quota(&self, record: &JobRecord, quota: &OwnerQuota) -> Result<(), SubmitError> {
        if *quota == OwnerQuota::default() {
            return Ok(());
        }
        let load = self
            .recorder
            .store()
            .owner_load(record.owner.clone())
            .await?;
        let files = u64::try_from(record.job.tasks().len()).unwrap_or(u64::MAX);
        quota.admit(&load, files, record.export.is_some())?;
        Ok(())
    }

    async fn announce(&self, record: &JobRecord) {
        let id = &record.job.id;
        let files = record.job.tasks().len();
        info!(job = %id, files, "job accepted");
        self.recorder
            .emit(id, JobEventKind::JobCreated { files })
            .await;
    }

    /// The job, if it exists and `access` may see it (`None` otherwise:
    /// a caller cannot tell another owner's job from a missing one).
    pub async fn get(
        &self,
        access: &Access,
        id: &JobId,
    ) -> Result<Option<JobRecord>, JobStoreError> {
        Ok(self
            .recorder
            .store()
            .get(id)
            .await?
            .filter(|record| access.can_see(record.owner.as_deref())))
    }

    /// The job without its tasks (their counts summed), if it exists and
    /// `access` may see it: what is shown of a job whatever its size.
    pub async fn head(
        &self,
        access: &Access,
        id: &JobId,
    ) -> Result<Option<JobHead>, JobStoreError> {
        Ok(self
            .recorder
            .store()
            .head(id)
            .await?
            .filter(|head| access.can_see(head.owner.as_deref())))
    }

    /// A page of the tasks of a job `access` may see (`None`: no such
    /// job, or not the caller's).
    pub async fn files(
        &self,
        access: &Access,
        id: &JobId,
        filter: &TaskFilter,
    ) -> Result<Option<(JobHead, Vec<ferry_domain::FileTask>)>, JobStoreError> {
        let Some(head) = self.head(access, id).await? else {
            return Ok(None);
        };
        let tasks = if filter.limit == 0 {
            Vec::new()
        } else {
            self.recorder.store().tasks(id, filter).await?
        };
        Ok(Some((head, tasks)))
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
        self.recorder.store().list(&filter).await
    }

    pub async fn events_after(
        &self,
        id: &JobId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JobEvent>, JobStoreError> {
        self.recorder.store().events_after(id, after, limit).await
    }

    pub async fn ping(&self) -> Result<(), JobStoreError> {
        self.recorder.store().ping().await
    }

    /// The backpressure level and its inputs, if a gate is configured.
    pub fn pressure(&self) -> Option<crate::backpressure::PressureReport> {
        self.config.pressure.as_ref().map(|g| g.report())
    }

    /// Readiness of each dependency: (name, error if not ready).
    pub async fn readiness(&self) -> Vec<(&'static str, Option<String>)> {
        let (store, storage) = futures::join!(self.recorder.store().ping(), self.storages.ready());
        vec![
            ("job_store", store.err().map(|e| e.to_string())),
            ("storage", storage.err().map(|e| e.to_string())),
        ]
    }

    /// Runs a job's phase, registered so that [`JobService::cancel`] can
    /// stop it; nothing if its phase runs already (here or, in cluster
    /// mode, on another node).
    pub async fn run_abortable(self: Arc<Self>, id: JobId) {
        self.attach();
        let Some(_phase) = self.hold_phase(&id).await else {
            return;
        };
        let (abort, registration) = AbortHandle::new_pair();
        let (done_tx, done_rx) = watch::channel(false);
        lock(&self.running).insert(
            id.clone(),
            Running {
                abort,
                done: done_rx,
            },
        );
        let outcome = Abortable::new(self.run_phase(&id), registration).await;
        match outcome {
            Ok(Err(e)) => warn!(job = %id, error = %e, "job run failed"),
            Ok(Ok(())) => {}
            Err(_aborted) => info!(job = %id, "job run stopped"),
        }
        lock(&self.running).remove(&id);
        let _ = done_tx.send(true);
    }

    /// The lock on job `id`'s phase: `None` if it runs already.
    async fn hold_phase(&self, id: &JobId) -> Option<Box<dyn Leadership>> {
        match self.dispatch.queue.hold_job_phase(id).await {
            Ok(held) => held,
            Err(e) => {
                warn!(job = %id, error = %e, "cannot take the job's phase; the reconciler will");
                None
            }
        }
    }

    /// [`JobService::run_abortable`] without the registration: the export
    /// phase (if any), then the files through the task queue, then
    /// CompleteJob.
    pub async fn run(self: &Arc<Self>, id: &JobId) -> Result<(), JobStoreError> {
        self.attach();
        let Some(_phase) = self.hold_phase(id).await else {
            return Ok(());
        };
        self.run_phase(id).await
    }

    /// The job's phase, under its lock: the export (if any), then its
    /// files dispatched (see `dispatch`).
    async fn run_phase(&self, id: &JobId) -> Result<(), JobStoreError> {
        let recorder = &self.recorder;
        let mut record = recorder
            .store()
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
                return self.fail_job(record, reason).await;
            }
        };
        if record.export.is_some()
            && matches!(
                record.job.status(),
                JobStatus::Pending | JobStatus::Exporting
            )
            && let ExportOutcome::Failed(reason) = self.exports.run(recorder, &mut record).await?
        {
            return self.fail_job(record, reason).await;
        }
        if record.job.status() == JobStatus::Pending {
            record
                .job
                .start_downloading()
                .map_err(|e| JobStoreError::Unexpected(Box::new(e)))?;
            recorder.save_job(&mut record).await?;
        }
        drop(record);
        self.dispatch_files(id, transfer).await
    }

    /// Fails the job for `reason` (stored, announced, told to the workflow).
    async fn fail_job(&self, mut record: JobRecord, reason: String) -> Result<(), JobStoreError> {
        let id = record.job.id.clone();
        if record.job.fail(reason).is_err() {
            return Ok(());
        }
        warn!(job = %id, reason = record.job.failure().unwrap_or(""), "job failed");
        let summary = record.job.summary();
        let kind = JobEventKind::JobCompleted {
            status: JobStatus::Failed,
            summary,
        };
        self.recorder
            .save_job_and_tasks_and_emit(&mut record, kind)
            .await?;
        self.workflow
            .notify_record(&self.recorder, &mut record)
            .await;
        self.compact_progress(&id).await;
        Ok(())
    }

    /// An ended job's progress events but the last of each file are
    /// deleted (a replay still shows where each file got to); a failure
    /// only leaves them for retention.
    async fn compact_progress(&self, id: &JobId) {
        match self.recorder.store().compact_progress(id).await {
            Ok(n) => debug!(job = %id, deleted = n, "progress events compacted"),
            Err(e) => warn!(job = %id, error = %e, "progress events not compacted"),
        }
    }

    /// CompleteJob: final status and summary, stored and announced, from
    /// the job's head (its tasks' counts summed by the store: a job of any
    /// size ends without its tasks being read). The save is conditional
    /// (the job still downloading), so the job completes once whichever
    /// workers (or nodes) try.
    pub(super) async fn complete(&self, mut head: JobHead) -> Result<(), JobStoreError> {
        let id = head.id.clone();
        let status = match head.complete() {
            Ok(status) => status,
            Err(e) => {
                warn!(job = %id, error = %e, "job not completed");
                return Ok(());
            }
        };
        // The status and its closing event in one commit, only if the job
        // is still downloading: a client that reads the status ended finds
        // the event stored.
        let kind = JobEventKind::JobCompleted {
            status,
            summary: head.summary,
        };
        let saved = self
            .recorder
            .save_job_and_emit(&mut head, Some(JobStatus::Downloading), kind)
            .await?;
        if !saved {
            return Ok(());
        }
        info!(job = %id, status = status.as_str(), "job finished");
        self.workflow.notify(&self.recorder, &mut head).await;
        self.compact_progress(&id).await;
        Ok(())
    }

    /// Stops this node's run of job `id`'s phase (export, enqueue), if it
    /// runs here.
    pub(super) fn stop_job_phase(&self, id: &JobId) {
        if let Some(running) = lock(&self.running).remove(id) {
            running.abort.abort();
        }
    }

    /// Cancels a job `access` may see: its running transfers stop (temp
    /// files removed, uploads aborted) and unfinished tasks become
    /// cancelled.
    pub async fn cancel(&self, access: &Access, id: &JobId) -> Result<JobRecord, CancelError> {
        if self.get(access, id).await?.is_none() {
            return Err(CancelError::NotFound(id.clone()));
        }
        self.dispatch.stop_local(id);
        let running = lock(&self.running).remove(id);
        if let Some(mut running) = running {
            running.abort.abort();
            let _ =
                tokio::time::timeout(Duration::from_secs(10), running.done.wait_for(|d| *d)).await;
        }
        let mut record = self
            .recorder
            .store()
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
        let saved = self
            .recorder
            .save_job_and_tasks_and_emit(&mut record, JobEventKind::JobCancelled)
            .await;
        self.dispatch.forget_read_ahead(id);
        saved?;
        self.workflow
            .notify_record(&self.recorder, &mut record)
            .await;
        self.discard_checkpoints(Some(id), Duration::ZERO).await;
        self.compact_progress(id).await;
        Ok(record)
    }

    /// Jobs left unfinished by a previous process, their running tasks
    /// re-queued; run each with [`JobService::run_abortable`].
    pub async fn unfinished(&self) -> Result<Vec<JobId>, JobStoreError> {
        self.recorder.store().unfinished().await
    }
}

pub use CancelError as JobCancelError;

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
