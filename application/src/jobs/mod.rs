//! Export jobs: submit (validate, persist, announce), run (the export
//! phase, then the file tasks through their Transfer with bounded
//! concurrency), complete, cancel, watch, orphan cleanup, and resume after
//! a restart. `service` orchestrates; `recorder`, `runner`, `export`,
//! `workflow` and `dispatch` (the task queue: in-process, or several nodes
//! on one store) each own one part.

mod access;
mod cleanup;
mod dispatch;
mod export;
mod fair;
mod local_queue;
mod quota;
mod recorder;
mod runner;
mod service;
mod validate;
mod watch;
mod workflow;

pub use access::Access;
pub use local_queue::LocalTaskQueue;
pub use quota::{OwnerQuota, QuotaExceeded};
pub use service::{
    IDEMPOTENCY_TTL_MS, JobCancelError, JobService, JobServiceConfig, SubmitError, Submitted,
};
pub use validate::{
    ExportRequest, FileRequest, InvalidJobRequest, SubmitJobRequest, ValidatedJob, validate,
    validate_files,
};
pub use watch::{WatchError, WatchItem, WatchStats};
