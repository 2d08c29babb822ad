//! What happens to jobs, published as it happens: `JobEventsPort`.

use async_trait::async_trait;

use crate::checksum::Checksum;
use crate::error::{ErrorClass, ErrorCode};
use crate::job::{JobId, JobStatus, JobSummary};

/// One event of a job. `seq` is assigned by the job store (1, 2, ...); 0
/// before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    pub job_id: JobId,
    pub seq: u64,
    /// Unix milliseconds.
    pub at_ms: i64,
    pub kind: JobEventKind,
}

/// The kinds of events.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEventKind {
    JobCreated {
        files: usize,
    },
    /// The export was started at the provider (the job is `exporting`).
    ExportStarted,
    ExportReady {
        files: usize,
    },
    FileStarted {
        index: usize,
        attempt: u32,
    },
    FileProgress {
        index: usize,
        bytes_done: u64,
        total: Option<u64>,
    },
    FileSucceeded {
        index: usize,
        bytes: u64,
        sha256: Checksum,
        md5: Option<Checksum>,
    },
    /// The destination already held the file (`skip_existing`).
    FileSkipped {
        index: usize,
        bytes: u64,
        sha256: Checksum,
    },
    FileFailed {
        index: usize,
        code: ErrorCode,
        class: ErrorClass,
        message: String,
        will_retry: bool,
    },
    /// The transfer continued from its checkpoint at `offset`.
    FileResumed {
        index: usize,
        offset: u64,
    },
    /// The transfer's checkpoint could not be used (`reason`, e.g. the
    /// source changed): it starts again from zero.
    FileRestarted {
        index: usize,
        reason: String,
    },
    JobCompleted {
        status: JobStatus,
        summary: JobSummary,
    },
    JobCancelled,
}

impl JobEventKind {
    /// Stable snake_case name.
    pub fn name(&self) -> &'static str {
        match self {
            JobEventKind::JobCreated { .. } => "job_created",
            JobEventKind::ExportStarted => "export_started",
            JobEventKind::ExportReady { .. } => "export_ready",
            JobEventKind::FileStarted { .. } => "file_started",
            JobEventKind::FileProgress { .. } => "file_progress",
            JobEventKind::FileSucceeded { .. } => "file_succeeded",
            JobEventKind::FileSkipped { .. } => "file_skipped",
            JobEventKind::FileFailed { .. } => "file_failed",
            JobEventKind::FileResumed { .. } => "file_resumed",
            JobEventKind::FileRestarted { .. } => "file_restarted",
            JobEventKind::JobCompleted { .. } => "job_completed",
            JobEventKind::JobCancelled => "job_cancelled",
        }
    }

    /// The file an event is about, if it is about one.
    pub fn file_index(&self) -> Option<usize> {
        match self {
            JobEventKind::FileStarted { index, .. }
            | JobEventKind::FileProgress { index, .. }
            | JobEventKind::FileSucceeded { index, .. }
            | JobEventKind::FileSkipped { index, .. }
            | JobEventKind::FileFailed { index, .. }
            | JobEventKind::FileResumed { index, .. }
            | JobEventKind::FileRestarted { index, .. } => Some(*index),
            JobEventKind::JobCreated { .. }
            | JobEventKind::ExportStarted
            | JobEventKind::ExportReady { .. }
            | JobEventKind::JobCompleted { .. }
            | JobEventKind::JobCancelled => None,
        }
    }

    /// Lifecycle events are never dropped or coalesced; progress may be.
    pub fn is_lifecycle(&self) -> bool {
        !matches!(self, JobEventKind::FileProgress { .. })
    }

    /// The last event a job emits.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobEventKind::JobCompleted { .. } | JobEventKind::JobCancelled
        )
    }
}

/// Receives stored events (in-process broadcast, webhook, logs).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait JobEventsPort: Send + Sync + 'static {
    /// Best effort: a sink that fails logs it; it never fails the job.
    async fn publish(&self, event: &JobEvent);
}
