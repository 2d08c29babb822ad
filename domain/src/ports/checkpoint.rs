//! Where checkpoints are kept: `CheckpointStorePort`. The job store keeps
//! those of job tasks; `ferry copy` keeps its own in a small state file.

use async_trait::async_trait;
use thiserror::Error;

use crate::checkpoint::{Checkpoint, TransferId};
use crate::error::{BoxError, ErrorClass};

/// Why a checkpoint could not be read or written.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// A stored checkpoint that cannot be decoded or fails validation: the
    /// transfer restarts from zero.
    #[error("the checkpoint of {id} is unreadable: {reason}")]
    Corrupt { id: TransferId, reason: String },
    #[error("the checkpoint store is unavailable: {0}")]
    Unavailable(String),
    #[error("unexpected checkpoint store error: {0}")]
    Unexpected(#[source] BoxError),
}

impl CheckpointError {
    pub fn class(&self) -> ErrorClass {
        match self {
            CheckpointError::Corrupt { .. } => ErrorClass::Client,
            CheckpointError::Unavailable(_) => ErrorClass::Transient,
            CheckpointError::Unexpected(_) => ErrorClass::Internal,
        }
    }
}

/// One listed checkpoint: its id and the checkpoint, or why it cannot be
/// read.
pub type ListedCheckpoint = (TransferId, Result<Checkpoint, String>);

/// Durable checkpoints, one per transfer. `save` replaces atomically: a
/// crash in the middle of a save leaves the previous checkpoint readable.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait CheckpointStorePort: Send + Sync + std::fmt::Debug + 'static {
    async fn load(&self, id: &TransferId) -> Result<Option<Checkpoint>, CheckpointError>;
    async fn save(&self, id: &TransferId, checkpoint: &Checkpoint) -> Result<(), CheckpointError>;
    /// Cluster mode: [`Self::save`] only while the task `id` names is
    /// under lease `epoch` and not over; `false`, and nothing written,
    /// otherwise (a node that lost the task never overwrites the new
    /// owner's checkpoint). A store without leases just saves.
    async fn save_fenced(
        &self,
        id: &TransferId,
        checkpoint: &Checkpoint,
        epoch: u64,
    ) -> Result<bool, CheckpointError> {
        let _ = epoch;
        self.save(id, checkpoint).await.map(|()| true)
    }
    /// Removing a missing checkpoint succeeds.
    async fn remove(&self, id: &TransferId) -> Result<(), CheckpointError>;
    /// Every stored checkpoint (for orphan cleanup). Unreadable ones are
    /// reported as `Err` entries so they can be removed.
    async fn list(&self) -> Result<Vec<ListedCheckpoint>, CheckpointError>;
}
