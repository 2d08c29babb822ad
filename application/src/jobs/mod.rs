//! Export jobs: submit (validate, persist, announce), run (dispatch the file
//! tasks through ProcessFile with bounded concurrency and retries), complete,
//! cancel, and resume after a restart.

mod access;
mod cleanup;
mod service;
mod validate;
mod watch;

pub use access::Access;
pub use service::{JobCancelError, JobService, JobServiceConfig, SubmitError};
pub use validate::{
    ExportRequest, FileRequest, InvalidJobRequest, SubmitJobRequest, ValidatedJob, validate,
    validate_files,
};
pub use watch::{WatchError, WatchItem, WatchStats};
