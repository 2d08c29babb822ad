//! Durable jobs: `JobStorePort`.

use async_trait::async_trait;
use thiserror::Error;

use crate::destination::Destination;
use crate::error::{BoxError, ErrorClass};
use crate::export::Export;
use crate::job::{FileTask, Job, JobId, JobStatus, JobSummary, TaskStatus};
use crate::ports::events::JobEvent;
use crate::ports::workflow::CallbackOutcome;

/// A stored job with what the store keeps beside the state machine.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub job: Job,
    /// Where the files go.
    pub destination: Destination,
    /// Attributes and the existing-key rule for every file.
    pub options: crate::job::JobOptions,
    /// AWS Step Functions task token to answer when the job ends.
    pub task_token: Option<String>,
    /// Who submitted it (a token's identity), when the API is authenticated.
    pub owner: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// What happened to the workflow callback, if any.
    pub callback: Option<CallbackOutcome>,
    /// The export this job started at a provider, if it did not list its
    /// files (saved with the job).
    pub export: Option<Export>,
    /// Sequence number of the job's latest stored event when it was read
    /// (0: none). Maintained by the store; ignored by `save_job`.
    pub last_event_seq: u64,
}

impl JobRecord {
    /// The record without its tasks, their counts summed.
    pub fn head(&self) -> JobHead {
        JobHead {
            id: self.job.id.clone(),
            status: self.job.status(),
            failure: self.job.failure().map(str::to_owned),
            summary: self.job.summary(),
            destination: self.destination.clone(),
            options: self.options.clone(),
            has_task_token: self.task_token.is_some(),
            owner: self.owner.clone(),
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            callback: self.callback.clone(),
            export: self.export.clone(),
            last_event_seq: self.last_event_seq,
        }
    }
}

/// What a save of a job's own row writes (its tasks are written apart):
/// built from a whole record or from a head, so a job ends without its
/// tasks being read.
#[derive(Debug, Clone, PartialEq)]
pub struct JobUpdate {
    pub id: JobId,
    pub status: JobStatus,
    pub failure: Option<String>,
    pub callback: Option<CallbackOutcome>,
    pub export: Option<Export>,
    /// Unix milliseconds.
    pub updated_at_ms: i64,
}

impl JobRecord {
    pub fn update(&self) -> JobUpdate {
        JobUpdate {
            id: self.job.id.clone(),
            status: self.job.status(),
            failure: self.job.failure().map(str::to_owned),
            callback: self.callback.clone(),
            export: self.export.clone(),
            updated_at_ms: self.updated_at_ms,
        }
    }
}

impl JobHead {
    pub fn update(&self) -> JobUpdate {
        JobUpdate {
            id: self.id.clone(),
            status: self.status,
            failure: self.failure.clone(),
            callback: self.callback.clone(),
            export: self.export.clone(),
            updated_at_ms: self.updated_at_ms,
        }
    }

    /// downloading -> completed | completed_with_errors | failed from the
    /// summed counts alone ([`JobSummary::outcome`], the rule
    /// [`crate::job::Job::complete`] follows).
    pub fn complete(&mut self) -> Result<JobStatus, crate::job::TransitionError> {
        if self.status != JobStatus::Downloading {
            return Err(crate::job::TransitionError::Job {
                from: self.status.as_str(),
                to: JobStatus::Completed.as_str(),
            });
        }
        let (status, failure) = self.summary.outcome()?;
        self.status = status;
        if failure.is_some() {
            self.failure = failure;
        }
        Ok(status)
    }
}

/// A stored job without its tasks: what listings, snapshots and watchers
/// read, whatever the job's size (the store sums the tasks' counts and
/// bytes instead of reading them).
#[derive(Debug, Clone, PartialEq)]
pub struct JobHead {
    pub id: JobId,
    pub status: JobStatus,
    pub failure: Option<String>,
    pub summary: JobSummary,
    pub destination: Destination,
    pub options: crate::job::JobOptions,
    /// Whether a Step Functions task token is answered at the end (the
    /// token itself is not read).
    pub has_task_token: bool,
    pub owner: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub callback: Option<CallbackOutcome>,
    pub export: Option<Export>,
    /// Sequence number of the job's latest stored event (0: none).
    pub last_event_seq: u64,
}

/// Which of a job's tasks to read, in index order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks with an index above this one.
    pub after: Option<usize>,
    /// Only tasks in this state.
    pub status: Option<TaskStatus>,
    /// At most this many (at least 1).
    pub limit: u32,
}

/// What running one of a job's files needs of its job: who submitted it,
/// where its files go, and how. Read with the file's task (or a batch of
/// them), never with the job's other tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRunContext {
    /// Who submitted the job (the token's name).
    pub owner: Option<String>,
    pub destination: Destination,
    pub options: crate::job::JobOptions,
}

/// One task of a job with its job's status and what running it needs of
/// its job (read without the job's other tasks).
#[derive(Debug, Clone, PartialEq)]
pub struct JobTask {
    pub status: JobStatus,
    pub job: FileRunContext,
    pub task: FileTask,
}

/// A job's status and the indexes of its first unfinished (queued or
/// running) tasks, read without the tasks themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTasks {
    pub status: JobStatus,
    /// In index order, at most the limit asked for.
    pub open: Vec<usize>,
}

/// A job's status and what its files' runs need of it, with its first
/// unfinished (queued or running) tasks whole: the embedded default reads
/// a job's window and the tasks past it this way, once per few dozen
/// files, instead of reading each task when it is delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenTaskBatch {
    pub status: JobStatus,
    pub job: FileRunContext,
    /// In index order, at most the limit asked for.
    pub tasks: Vec<FileTask>,
}

/// What one owner has unfinished now (its quotas are checked against it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnerLoad {
    /// Jobs not ended.
    pub active_jobs: u64,
    /// Files queued or running in those jobs.
    pub open_files: u64,
    /// Jobs of an export not yet downloading (starting or polling).
    pub active_exports: u64,
}

/// Which jobs to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    /// Only the jobs of this owner.
    pub owner: Option<String>,
    pub limit: u32,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
}

/// One page of jobs.
#[derive(Debug, Clone)]
pub struct JobPage {
    pub jobs: Vec<JobHead>,
    pub next_cursor: Option<String>,
}

/// Why the job store failed.
#[derive(Debug, Error)]
pub enum JobStoreError {
    #[error("job {0} does not exist")]
    NotFound(JobId),
    #[error("job {0} already exists")]
    AlreadyExists(JobId),
    #[error("the cursor is not valid; start the listing again without it")]
    BadCursor,
    #[error("the job store is unavailable: {0}")]
    Unavailable(String),
    /// A fenced write of a task whose lease this node no longer holds
    /// (another node claimed it, or it was cancelled): nothing was written.
    #[error("task {index} of job {job} is no longer this node's to write")]
    LeaseLost { job: JobId, index: usize },
    /// A conditional write of a job whose stored status is no longer the
    /// one expected (another worker or node moved it first): nothing was
    /// written.
    #[error("job {job} is no longer {}: another worker moved it first", expected.as_str())]
    StatusChanged { job: JobId, expected: JobStatus },
    #[error("unexpected job store error: {0}")]
    Unexpected(#[source] BoxError),
}

impl JobStoreError {
    /// A fenced or conditional write that found its precondition gone
    /// (`LeaseLost`, `StatusChanged`): the writer's view is stale, and
    /// the events written with it must not be published.
    pub fn is_stale(&self) -> bool {
        matches!(
            self,
            JobStoreError::LeaseLost { .. } | JobStoreError::StatusChanged { .. }
        )
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            JobStoreError::NotFound(_)
            | JobStoreError::AlreadyExists(_)
            | JobStoreError::BadCursor
            | JobStoreError::LeaseLost { .. }
            | JobStoreError::StatusChanged { .. } => ErrorClass::Client,
            JobStoreError::Unavailable(_) => ErrorClass::Transient,
            JobStoreError::Unexpected(_) => ErrorClass::Internal,
        }
    }
}

/// A client's `Idempotency-Key` for one submission, scoped to the
/// submitting owner, with the fingerprint of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    owner: Option<String>,
    key: String,
    fingerprint: String,
}

/// Why a string is not an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("an Idempotency-Key is 1 to 255 visible ASCII characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    /// `key` as the client sent it; `fingerprint` identifies the request
    /// (e.g. a SHA-256 of its body).
    pub fn new(
        owner: Option<String>,
        key: &str,
        fingerprint: String,
    ) -> Result<Self, InvalidIdempotencyKey> {
        let ok = (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(InvalidIdempotencyKey);
        }
        Ok(Self {
            owner,
            key: key.to_owned(),
            fingerprint,
        })
    }

    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }
    pub fn key(&self) -> &str {
        &self.key
    }
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// What a keyed create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keyed {
    /// The key was new (or had expired): the job was stored.
    Created,
    /// The key names an earlier job of this owner; nothing was stored.
    /// `same_request`: the earlier request had the same fingerprint.
    Existing { job: JobId, same_request: bool },
}

/// One write of a group commit: a task's state, the job's own row, or an
/// event.
#[derive(Debug, Clone, PartialEq)]
pub enum JobWrite {
    /// What [`JobStorePort::save_job`] writes (not the tasks). With
    /// `from`, written only if the stored status is still `from`;
    /// otherwise the whole batch fails with `StatusChanged`. So a job's
    /// final status and its closing event are stored in one commit, once,
    /// whichever worker (or node) gets there first.
    Job {
        job: Box<JobUpdate>,
        from: Option<JobStatus>,
    },
    Task {
        job: JobId,
        task: Box<FileTask>,
        /// Cluster mode: written only if the task is still under this
        /// lease epoch (and not over); otherwise the whole batch fails
        /// with `LeaseLost`.
        fence: Option<u64>,
    },
    /// Stored with the job's next sequence number (its `seq` is ignored).
    Event(JobEvent),
}

/// Persists jobs, their tasks and their events.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait JobStorePort: Send + Sync + 'static {
    /// Stores a new job and its tasks atomically; durable when it returns.
    async fn create(&self, record: &JobRecord) -> Result<(), JobStoreError>;
    /// [`Self::create`] under an idempotency key: in the same transaction,
    /// the key (per owner) is recorded for the job, unless a record of it
    /// younger than `ttl_ms` exists, in which case nothing is stored and
    /// the earlier job is named. Concurrent uses of one key store one job.
    async fn create_keyed(
        &self,
        record: &JobRecord,
        key: &IdempotencyKey,
        ttl_ms: i64,
    ) -> Result<Keyed, JobStoreError>;
    async fn get(&self, id: &JobId) -> Result<Option<JobRecord>, JobStoreError>;
    /// Job `id` without its tasks (their counts and bytes summed by the
    /// store).
    async fn head(&self, id: &JobId) -> Result<Option<JobHead>, JobStoreError>;
    /// A page of job heads, newest first.
    async fn list(&self, filter: &JobFilter) -> Result<JobPage, JobStoreError>;
    /// Job `id`'s tasks that `filter` selects, in index order (empty if
    /// the job is missing).
    async fn tasks(&self, id: &JobId, filter: &TaskFilter) -> Result<Vec<FileTask>, JobStoreError>;
    /// Task `index` of job `id` with its job's status, destination and
    /// options (`None` if either is missing): one file's run reads one
    /// task, not the job's thousands.
    async fn task(&self, id: &JobId, index: usize) -> Result<Option<JobTask>, JobStoreError>;
    /// Job `id`'s status, destination, options and owner, and its first
    /// `limit` unfinished tasks, whole (`None` if the job is missing).
    async fn open_task_batch(
        &self,
        id: &JobId,
        limit: usize,
    ) -> Result<Option<OpenTaskBatch>, JobStoreError>;
    /// Job `id`'s status and its first `limit` unfinished tasks' indexes
    /// (`None` if the job is missing).
    async fn open_tasks(
        &self,
        id: &JobId,
        limit: usize,
    ) -> Result<Option<OpenTasks>, JobStoreError>;
    /// Saves the job's status, failure, callback and export (not its
    /// tasks). An ended job's secrets go in the same transaction: its
    /// task token once the callback is recorded, its tasks' headers, and
    /// their sources' query strings and userinfo (each keeps its redacted
    /// form), read and rewritten by the store a page at a time.
    async fn save_job(&self, job: &JobUpdate) -> Result<(), JobStoreError>;
    /// The Step Functions task token job `id` answers when it ends, if it
    /// has one still (`None` if the job is missing).
    async fn task_token(&self, id: &JobId) -> Result<Option<String>, JobStoreError>;
    /// Replaces all tasks (after an export's manifest arrives).
    async fn replace_tasks(&self, id: &JobId, tasks: &[FileTask]) -> Result<(), JobStoreError>;
    /// Saves task states, job rows and appends events, in order, all in one
    /// transaction: durable, all or nothing, when it returns. An event gets
    /// its job's next sequence number (from 1); the result gives each
    /// write's (`None` for a task or a job). Many files' writes committed together
    /// cost one commit (one fsync) instead of one each.
    async fn write_batch(&self, writes: &[JobWrite]) -> Result<Vec<Option<u64>>, JobStoreError>;
    /// Events of a job with a sequence number above `after`, in order.
    async fn events_after(
        &self,
        id: &JobId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JobEvent>, JobStoreError>;
    /// Cluster mode: takes task `index` of job `id` for `owner`, under a
    /// new lease epoch (returned), if the task is queued or running;
    /// `None` if it is over (or missing). Writes fenced with an older
    /// epoch fail from then on.
    async fn claim_task(
        &self,
        id: &JobId,
        index: usize,
        owner: &str,
    ) -> Result<Option<u64>, JobStoreError>;
    /// Cluster mode: the lease epoch task `index` of job `id` is under, if
    /// the task is not over (`None` if it is, or is missing).
    async fn task_lease(&self, id: &JobId, index: usize) -> Result<Option<u64>, JobStoreError>;
    /// Ids of jobs not in a terminal state (to resume after a restart).
    async fn unfinished(&self) -> Result<Vec<JobId>, JobStoreError>;
    /// What `owner` (`None`: jobs submitted without one) has unfinished.
    async fn owner_load(&self, owner: Option<String>) -> Result<OwnerLoad, JobStoreError>;
    /// Ids of ended jobs last saved before `before_ms` (epoch ms), oldest
    /// first, at most `limit`: what retention deletes.
    async fn ended_before(&self, before_ms: i64, limit: u32) -> Result<Vec<JobId>, JobStoreError>;
    /// Deletes an ended job with its tasks, events, idempotency keys and
    /// any checkpoint rows of its tasks, in one transaction. False (and
    /// nothing deleted) if the job is missing or not ended.
    async fn delete_ended(&self, id: &JobId) -> Result<bool, JobStoreError>;
    /// Deletes an ended job's `file_progress` events but the last of each
    /// file (what a replay needs: where each file got to); the number
    /// deleted. Nothing is deleted of a job not ended.
    async fn compact_progress(&self, id: &JobId) -> Result<u64, JobStoreError>;
    /// Cheap reachability check (readiness).
    async fn ping(&self) -> Result<(), JobStoreError>;
}
