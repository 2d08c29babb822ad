//! `Transfer`: a file's whole life, the one use case `ferry copy` and the
//! job runner both drive. ProcessFile (with its checkpoints) does one
//! attempt; this is the one retry loop around it: the domain's
//! [`RetryPolicy`] (full jitter from the one jitter source, attempt cap,
//! deadline, per-class rules), no retry of what an adapter already gave up
//! on (`exhausted`), and abandon (staged bytes and checkpoint discarded)
//! once it fails for good. `TransferFactory` builds one per destination.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Instant;
use tracing::warn;

use ferry_domain::ports::{
    AttemptObserver, FileStoragePort, HttpDownloadPort, ProcessFileCommand, ProcessFileError,
    ProcessFilePort, ProcessFileResult, StorageError, StorageResolverPort, TransferError,
    TransferFactoryPort, TransferPort,
};
use ferry_domain::{Destination, ObjectKey, RetryPolicy, TransferId, retry};

use crate::process_file::{ProcessFile, ProcessFileConfig};

/// One file's transfer into one storage, with retries.
pub struct Transfer {
    process: Arc<dyn ProcessFilePort>,
    storage: Arc<dyn FileStoragePort>,
    policy: RetryPolicy,
}

impl std::fmt::Debug for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfer")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Transfer {
    pub fn new(
        process: Arc<dyn ProcessFilePort>,
        storage: Arc<dyn FileStoragePort>,
        policy: RetryPolicy,
    ) -> Self {
        Self {
            process,
            storage,
            policy,
        }
    }

    /// The delay before the next attempt after `error`, or `None`: no retry.
    fn next_delay(
        &self,
        error: &ProcessFileError,
        retry: u32,
        first_try: Instant,
    ) -> Option<std::time::Duration> {
        if error.is_exhausted() {
            return None;
        }
        self.policy
            .delay_for(error.class(), retry, retry::jitter(), first_try.elapsed())
    }
}

#[async_trait]
impl TransferPort for Transfer {
    async fn run(
        &self,
        mut command: ProcessFileCommand,
        prior_attempts: u32,
        observer: &dyn AttemptObserver,
    ) -> Result<ProcessFileResult, TransferError> {
        let first_try = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let slot = observer.starting(attempt).await?;
            let error = match self.process.process(command.clone()).await {
                Ok(result) => {
                    observer.succeeded(attempt, &result).await;
                    return Ok(result);
                }
                Err(error) => error,
            };
            // A retry may find the checkpoint this attempt saved.
            command.fresh_start = None;
            let retry = prior_attempts.saturating_add(attempt - 1);
            let delay = self.next_delay(&error, retry, first_try);
            observer.failed(attempt, &error, delay.is_some()).await;
            // Permits are given back before waiting.
            drop(slot);
            let Some(delay) = delay else {
                if let Some(id) = &command.transfer_id
                    && let Err(e) = self.process.abandon(id).await
                {
                    warn!(transfer = %id, error = %e, "could not discard a failed transfer's staged bytes");
                }
                return Err(error.into());
            };
            warn!(source = %command.source, retry = retry + 1, delay_ms = delay.as_millis() as u64, %error, "transient failure; retrying from the last checkpoint");
            tokio::time::sleep(delay).await;
        }
    }

    async fn abandon(&self, id: &TransferId) -> Result<(), ProcessFileError> {
        self.process.abandon(id).await
    }

    fn location(&self, key: &ObjectKey) -> String {
        self.storage.location(key)
    }
}

/// Builds a [`Transfer`] per destination: its storage from the resolver,
/// ProcessFile over the shared source client, the one retry policy.
pub struct TransferFactory {
    downloader: Arc<dyn HttpDownloadPort>,
    storages: Arc<dyn StorageResolverPort>,
    process: ProcessFileConfig,
    policy: RetryPolicy,
}

impl std::fmt::Debug for TransferFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferFactory")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl TransferFactory {
    pub fn new(
        downloader: Arc<dyn HttpDownloadPort>,
        storages: Arc<dyn StorageResolverPort>,
        process: ProcessFileConfig,
        policy: RetryPolicy,
    ) -> Self {
        Self {
            downloader,
            storages,
            process,
            policy,
        }
    }

    /// The factory the job runner uses with `config`: its ProcessFile
    /// settings (with the backpressure gate) and its retry policy.
    pub fn for_jobs(
        downloader: Arc<dyn HttpDownloadPort>,
        storages: Arc<dyn StorageResolverPort>,
        config: &crate::jobs::JobServiceConfig,
    ) -> Self {
        let mut process = config.process.clone();
        if process.pressure.is_none() {
            process.pressure = config.pressure.clone();
        }
        Self::new(downloader, storages, process, config.retry)
    }
}

#[async_trait]
impl TransferFactoryPort for TransferFactory {
    async fn open(&self, destination: &Destination) -> Result<Arc<dyn TransferPort>, StorageError> {
        let storage = self.storages.resolve(destination).await?;
        let process = ProcessFile::new(
            self.downloader.clone(),
            storage.clone(),
            self.process.clone(),
        );
        Ok(Arc::new(Transfer::new(
            Arc::new(process),
            storage,
            self.policy,
        )))
    }
}

#[cfg(test)]
#[path = "transfer_tests.rs"]
mod tests;
