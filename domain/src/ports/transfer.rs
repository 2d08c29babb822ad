//! A file's whole life as one driving port: `TransferPort` (copy with
//! checkpoints, the one retry loop, abandon on final failure) and the
//! factory that builds one per destination, `TransferFactoryPort`.

use std::sync::Arc;

use async_trait::async_trait;

use crate::checkpoint::TransferId;
use crate::destination::Destination;
use crate::key::ObjectKey;
use crate::ports::process::{ProcessFileCommand, ProcessFileError, ProcessFileResult};
use crate::ports::storage::StorageError;

/// Held for the length of one attempt (permits, admissions); dropped
/// before a retry waits.
pub type AttemptSlot = Box<dyn Send + Sync>;

/// Why an attempt could not start: the caller stopped the transfer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the transfer was stopped before attempt {attempt}: {reason}")]
pub struct AttemptRefused {
    pub attempt: u32,
    pub reason: String,
}

/// What a transfer tells its caller about each attempt; the caller takes
/// its permits, records task state and emits events here.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait AttemptObserver: Send + Sync {
    /// Before attempt `attempt` (1 = the first try of this call): returns
    /// what must be held during the attempt, or refuses to go on.
    async fn starting(&self, attempt: u32) -> Result<AttemptSlot, AttemptRefused>;

    /// After the attempt that succeeded, while its slot is still held.
    async fn succeeded(&self, attempt: u32, result: &ProcessFileResult);

    /// After a failed attempt, while its slot is still held; `will_retry`
    /// says whether another follows.
    async fn failed(&self, attempt: u32, error: &ProcessFileError, will_retry: bool);
}

/// An observer that holds nothing and records nothing (`ferry copy`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unobserved;

#[async_trait]
impl AttemptObserver for Unobserved {
    async fn starting(&self, _attempt: u32) -> Result<AttemptSlot, AttemptRefused> {
        Ok(Box::new(()))
    }

    async fn succeeded(&self, _attempt: u32, _result: &ProcessFileResult) {}

    async fn failed(&self, _attempt: u32, _error: &ProcessFileError, _will_retry: bool) {}
}

/// Why a transfer ended without a result.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Failed(#[from] ProcessFileError),
    #[error(transparent)]
    Refused(#[from] AttemptRefused),
}

/// One file from its source into one destination, for its whole life.
/// (No mockall mock: its observer argument is a borrowed trait object;
/// tests script a fake instead.)
#[async_trait]
pub trait TransferPort: Send + Sync {
    /// Runs the copy, retrying what the retry policy allows (each retry
    /// resumes from the last checkpoint). `prior_attempts` counts attempts
    /// made before this call (by a previous process) toward the cap. A
    /// transfer that fails for good has its staged bytes discarded.
    async fn run(
        &self,
        command: ProcessFileCommand,
        prior_attempts: u32,
        observer: &dyn AttemptObserver,
    ) -> Result<ProcessFileResult, TransferError>;

    /// Gives a checkpointed transfer up (cancel, Ctrl-C): staged bytes
    /// discarded, checkpoint removed.
    async fn abandon(&self, id: &TransferId) -> Result<(), ProcessFileError>;

    /// Where `key` lands, for messages and transfer ids.
    fn location(&self, key: &ObjectKey) -> String;
}

/// Builds the transfer for a destination (opening its storage).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait TransferFactoryPort: Send + Sync {
    async fn open(&self, destination: &Destination) -> Result<Arc<dyn TransferPort>, StorageError>;
}
