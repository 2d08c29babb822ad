//! Opens the storage a job's destination names: `StorageResolverPort`.

use std::sync::Arc;

use async_trait::async_trait;

use crate::destination::Destination;
use crate::ports::storage::{FileStoragePort, StorageError};

#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait StorageResolverPort: Send + Sync + 'static {
    async fn resolve(
        &self,
        destination: &Destination,
    ) -> Result<Arc<dyn FileStoragePort>, StorageError>;

    /// Whether the default storage can be written now (readiness).
    async fn ready(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
