//! Export jobs and their file tasks: explicit state machines whose illegal
//! transitions are errors, never panics.
//!
//! Job:  pending -> exporting -> downloading -> completed | completed_with_errors
//!       pending -> downloading (an explicit file list)
//!       any non-terminal -> failed | cancelled
//! Task: queued -> running -> succeeded | skipped | failed | cancelled
//!       running -> queued (retry, or re-queued after a restart)
//!       queued -> cancelled

use std::fmt;

use thiserror::Error;

use crate::checksum::Checksum;
use crate::error::{ErrorClass, ErrorCode};
use crate::key::ObjectKey;
use crate::source::SourceUrl;

/// A job identifier: 1..=64 characters of `[A-Za-z0-9_-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

/// Why a string is not a job id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`{0}` is not a job id (1-64 characters: letters, digits, `_`, `-`)")]
pub struct InvalidJobId(pub String);

impl JobId {
    pub fn parse(raw: &str) -> Result<Self, InvalidJobId> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidJobId(raw.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0)
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Pending,
    Exporting,
    Downloading,
    Completed,
    CompletedWithErrors,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed
                | JobStatus::CompletedWithErrors
                | JobStatus::Failed
                | JobStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Exporting => "exporting",
            JobStatus::Downloading => "downloading",
            JobStatus::Completed => "completed",
            JobStatus::CompletedWithErrors => "completed_with_errors",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            JobStatus::Pending,
            JobStatus::Exporting,
            JobStatus::Downloading,
            JobStatus::Completed,
            JobStatus::CompletedWithErrors,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// Where a file task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    /// The destination already held the file (`skip_existing`): nothing
    /// was fetched or written.
    Skipped,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded
                | TaskStatus::Skipped
                | TaskStatus::Failed
                | TaskStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            TaskStatus::Queued,
            TaskStatus::Running,
            TaskStatus::Succeeded,
            TaskStatus::Skipped,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// An attempted transition that the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransitionError {
    #[error("a job cannot go from {from} to {to}")]
    Job {
        from: &'static str,
        to: &'static str,
    },
    #[error("file task {index} cannot go from {from} to {to}")]
    Task {
        index: usize,
        from: &'static str,
        to: &'static str,
    },
    #[error("the job cannot complete: {pending} file task(s) are not finished")]
    TasksNotTerminal { pending: usize },
    #[error("no file task {index} in this job")]
    NoSuchTask { index: usize },
}

/// One file of a job, as requested.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSpec {
    pub source: SourceUrl,
    pub key: ObjectKey,
    pub expected_size: Option<u64>,
    pub expected: Vec<Checksum>,
    /// Request headers for the source; secret, kept only while the job runs.
    pub headers: crate::headers::SourceHeaders,
    /// What the stored object carries: the job's attributes with the
    /// file's own over them.
    pub attributes: crate::attributes::ObjectAttributes,
}

/// What a job does with a key the destination already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IfExists {
    /// Write the object again (the default).
    #[default]
    Overwrite,
    /// Skip the file when the destination holds it with the same size and
    /// SHA-256 (the expected one, or the source's declared one).
    Skip,
    /// Never replace an existing key: the file fails with
    /// `destination_exists`.
    Refuse,
}

impl IfExists {
    pub fn as_str(self) -> &'static str {
        match self {
            IfExists::Overwrite => "overwrite",
            IfExists::Skip => "skip",
            IfExists::Refuse => "refuse",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [IfExists::Overwrite, IfExists::Skip, IfExists::Refuse]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// How a job writes every file, beside each file's own fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobOptions {
    /// Applied to every file (an export's files too); a file's own
    /// attributes are laid over them.
    pub attributes: crate::attributes::ObjectAttributes,
    pub if_exists: IfExists,
}

/// Why a task failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub class: ErrorClass,
    /// Stable code (e.g. `checksum_mismatch`).
    pub code: ErrorCode,
    pub message: String,
}

/// One file's progress through a job.
#[derive(Debug, Clone, PartialEq)]
pub struct FileTask {
    pub index: usize,
    pub spec: FileSpec,
    status: TaskStatus,
    attempts: u32,
    bytes_done: u64,
    sha256: Option<Checksum>,
    md5: Option<Checksum>,
    failure: Option<TaskFailure>,
}

impl FileTask {
    pub fn new(index: usize, spec: FileSpec) -> Self {
        Self {
            index,
            spec,
            status: TaskStatus::Queued,
            attempts: 0,
            bytes_done: 0,
            sha256: None,
            md5: None,
            failure: None,
        }
    }

    /// Rebuilds a task from storage (the job store).
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        index: usize,
        spec: FileSpec,
        status: TaskStatus,
        attempts: u32,
        bytes_done: u64,
        sha256: Option<Checksum>,
        md5: Option<Checksum>,
        failure: Option<TaskFailure>,
    ) -> Self {
        Self {
            index,
            spec,
            status,
            attempts,
            bytes_done,
            sha256,
            md5,
            failure,
        }
    }

    pub fn status(&self) -> TaskStatus {
        self.status
    }
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
    pub fn bytes_done(&self) -> u64 {
        self.bytes_done
    }
    pub fn sha256(&self) -> Option<&Checksum> {
        self.sha256.as_ref()
    }
    pub fn md5(&self) -> Option<&Checksum> {
        self.md5.as_ref()
    }
    pub fn failure(&self) -> Option<&TaskFailure> {
        self.failure.as_ref()
    }

    fn illegal(&self, to: TaskStatus) -> TransitionError {
        TransitionError::Task {
            index: self.index,
            from: self.status.as_str(),
            to: to.as_str(),
        }
    }

    /// queued -> running (one more attempt).
    pub fn start(&mut self) -> Result<(), TransitionError> {
        if self.status != TaskStatus::Queued {
            return Err(self.illegal(TaskStatus::Running));
        }
        self.status = TaskStatus::Running;
        self.attempts += 1;
        self.bytes_done = 0;
        self.failure = None;
        Ok(())
    }

    /// Records progress of a running task (monotonic within an attempt).
    pub fn progress(&mut self, bytes_done: u64) -> Result<(), TransitionError> {
        if self.status != TaskStatus::Running {
            return Err(self.illegal(TaskStatus::Running));
        }
        self.bytes_done = self.bytes_done.max(bytes_done);
        Ok(())
    }

    /// running -> succeeded.
    pub fn succeed(
        &mut self,
        bytes: u64,
        sha256: Checksum,
        md5: Option<Checksum>,
    ) -> Result<(), TransitionError> {
        if self.status != TaskStatus::Running {
            return Err(self.illegal(TaskStatus::Succeeded));
        }
        self.status = TaskStatus::Succeeded;
        self.bytes_done = bytes;
        self.sha256 = Some(sha256);
        self.md5 = md5;
        Ok(())
    }

    /// running -> skipped: the destination already held the file.
    pub fn skip(&mut self, bytes: u64, sha256: Checksum) -> Result<(), TransitionError> {
        if self.status != TaskStatus::Running {
            return Err(self.illegal(TaskStatus::Skipped));
        }
        self.status = TaskStatus::Skipped;
        self.bytes_done = bytes;
        self.sha256 = Some(sha256);
        self.md5 = None;
        Ok(())
    }

    /// running -> failed.
    pub fn fail(&mut self, failure: TaskFailure) -> Result<(), TransitionError> {
        if self.status != TaskStatus::Running {
            return Err(self.illegal(TaskStatus::Failed));
        }
        self.status = TaskStatus::Failed;
        self.failure = Some(failure);
        Ok(())
    }

    /// queued | running -> failed: its time ran out, whether an attempt was
    /// running or it waited for the next one.
    pub fn expire(&mut self, failure: TaskFailure) -> Result<(), TransitionError> {
        if self.status.is_terminal() {
            return Err(self.illegal(TaskStatus::Failed));
        }
        self.status = TaskStatus::Failed;
        self.failure = Some(failure);
        Ok(())
    }

    /// running -> queued: to retry, or after a restart found it running.
    pub fn requeue(&mut self) -> Result<(), TransitionError> {
        if self.status != TaskStatus::Running {
            return Err(self.illegal(TaskStatus::Queued));
        }
        self.status = TaskStatus::Queued;
        Ok(())
    }

    /// queued | running -> cancelled.
    pub fn cancel(&mut self) -> Result<(), TransitionError> {
        if self.status.is_terminal() {
            return Err(self.illegal(TaskStatus::Cancelled));
        }
        self.status = TaskStatus::Cancelled;
        Ok(())
    }
}

/// Counts and totals of a job's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobSummary {
    pub total: usize,
    pub queued: usize,
    pub running: usize,
    pub succeeded: usize,
    /// Already at the destination (`skip_existing`); counts as done.
    pub skipped: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub bytes_done: u64,
}

impl JobSummary {
    /// How a downloading job with these counts ends, once every task is
    /// terminal: every file done (succeeded or skipped): `completed`; none
    /// done: `failed`, with its failure; some: `completed_with_errors`.
    /// The one rule, whether the job's tasks or only their counts (a job
    /// head) are at hand.
    pub fn outcome(&self) -> Result<(JobStatus, Option<String>), TransitionError> {
        let pending = self.queued + self.running;
        if pending > 0 {
            return Err(TransitionError::TasksNotTerminal { pending });
        }
        Ok(if self.failed + self.cancelled == 0 {
            (JobStatus::Completed, None)
        } else if self.succeeded + self.skipped == 0 && self.total > 0 {
            (
                JobStatus::Failed,
                Some(format!("all {} file(s) failed", self.total)),
            )
        } else {
            (JobStatus::CompletedWithErrors, None)
        })
    }
}

/// A batch of file tasks into one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    status: JobStatus,
    tasks: Vec<FileTask>,
    failure: Option<String>,
}

impl Job {
    /// A job from an explicit file list.
    pub fn new(id: JobId, files: Vec<FileSpec>) -> Self {
        let tasks = files
            .into_iter()
            .enumerate()
            .map(|(i, spec)| FileTask::new(i, spec))
            .collect();
        Self {
            id,
            status: JobStatus::Pending,
            tasks,
            failure: None,
        }
    }

    /// Rebuilds a job from storage.
    pub fn restore(
        id: JobId,
        status: JobStatus,
        tasks: Vec<FileTask>,
        failure: Option<String>,
    ) -> Self {
        Self {
            id,
            status,
            tasks,
            failure,
        }
    }

    pub fn status(&self) -> JobStatus {
        self.status
    }
    pub fn tasks(&self) -> &[FileTask] {
        &self.tasks
    }
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    fn illegal(&self, to: JobStatus) -> TransitionError {
        TransitionError::Job {
            from: self.status.as_str(),
            to: to.as_str(),
        }
    }

    /// pending -> exporting (the job starts an export at a provider).
    pub fn start_export(&mut self) -> Result<(), TransitionError> {
        if self.status != JobStatus::Pending || !self.tasks.is_empty() {
            return Err(self.illegal(JobStatus::Exporting));
        }
        self.status = JobStatus::Exporting;
        Ok(())
    }

    /// exporting -> downloading, with the manifest's files.
    pub fn export_ready(&mut self, files: Vec<FileSpec>) -> Result<(), TransitionError> {
        if self.status != JobStatus::Exporting {
            return Err(self.illegal(JobStatus::Downloading));
        }
        self.tasks = files
            .into_iter()
            .enumerate()
            .map(|(i, spec)| FileTask::new(i, spec))
            .collect();
        self.status = JobStatus::Downloading;
        Ok(())
    }

    /// pending -> downloading (an explicit file list).
    pub fn start_downloading(&mut self) -> Result<(), TransitionError> {
        if self.status != JobStatus::Pending {
            return Err(self.illegal(JobStatus::Downloading));
        }
        self.status = JobStatus::Downloading;
        Ok(())
    }

    pub fn task_mut(&mut self, index: usize) -> Result<&mut FileTask, TransitionError> {
        if self.status.is_terminal() {
            return Err(TransitionError::Job {
                from: self.status.as_str(),
                to: "a task change",
            });
        }
        self.tasks
            .get_mut(index)
            .ok_or(TransitionError::NoSuchTask { index })
    }

    /// downloading -> completed | completed_with_errors | failed, once every
    /// task is terminal (see [`JobSummary::outcome`]).
    pub fn complete(&mut self) -> Result<JobStatus, TransitionError> {
        if self.status != JobStatus::Downloading {
            return Err(self.illegal(JobStatus::Completed));
        }
        let (status, failure) = self.summary().outcome()?;
        self.status = status;
        if failure.is_some() {
            self.failure = failure;
        }
        Ok(status)
    }

    /// Any non-terminal state -> failed (e.g. the export failed).
    pub fn fail(&mut self, reason: String) -> Result<(), TransitionError> {
        if self.status.is_terminal() {
            return Err(self.illegal(JobStatus::Failed));
        }
        self.cancel_unfinished_tasks();
        self.failure = Some(reason);
        self.status = JobStatus::Failed;
        Ok(())
    }

    /// Any non-terminal state -> cancelled; unfinished tasks are cancelled.
    pub fn cancel(&mut self) -> Result<(), TransitionError> {
        if self.status.is_terminal() {
            return Err(self.illegal(JobStatus::Cancelled));
        }
        self.cancel_unfinished_tasks();
        self.status = JobStatus::Cancelled;
        Ok(())
    }

    fn cancel_unfinished_tasks(&mut self) {
        for task in &mut self.tasks {
            if !task.status.is_terminal() {
                task.status = TaskStatus::Cancelled;
            }
        }
    }

    /// After a restart: running tasks go back to the queue.
    pub fn requeue_running(&mut self) -> usize {
        let mut n = 0;
        for task in &mut self.tasks {
            if task.status == TaskStatus::Running {
                task.status = TaskStatus::Queued;
                n += 1;
            }
        }
        n
    }

    pub fn summary(&self) -> JobSummary {
        let mut s = JobSummary {
            total: self.tasks.len(),
            ..JobSummary::default()
        };
        for t in &self.tasks {
            match t.status {
                TaskStatus::Queued => s.queued += 1,
                TaskStatus::Running => s.running += 1,
                TaskStatus::Succeeded => s.succeeded += 1,
                TaskStatus::Skipped => s.skipped += 1,
                TaskStatus::Failed => s.failed += 1,
                TaskStatus::Cancelled => s.cancelled += 1,
            }
            s.bytes_done += t.bytes_done;
        }
        s
    }
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
