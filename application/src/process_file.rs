//! The ProcessFile use case: source -> chunking -> size guard -> hashing ->
//! staged storage write, in one pass, verified before commit.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use tracing::{debug, warn};

use ferry_domain::ChecksumAlgorithm;
use ferry_domain::ports::{
    CommitInfo, DownloadError, DownloadRequest, FileStoragePort, HttpDownloadPort, LengthProblem,
    MemoryBudgetPort, ProcessFileCommand, ProcessFileError, ProcessFilePort, ProcessFileResult,
    SourceMeta, StagedWrite, StorageError, WriteRequest,
};

use crate::backpressure::Backpressure;
use crate::chunking::{Rechunker, chunk_size_for, chunk_size_under};
use crate::hashing::{HashState, StreamHasher};
use crate::size_guard::SizeGuard;

/// Tuning of the use case.
#[derive(Debug, Clone)]
pub struct ProcessFileConfig {
    /// How many times a body that fails mid-way with a transient error is
    /// re-requested from the failed offset (needs a source with ranges and a
    /// validator). 0 disables in-flight resume.
    pub resume_attempts: u32,
    /// Compute MD5 for every file, not only when one is expected or asked.
    pub always_md5: bool,
    /// Told how long each chunk took to process (its latency factor); its
    /// level also sizes chunks.
    pub pressure: Option<Arc<Backpressure>>,
    /// Where each chunk's memory is reserved before it is read; a transfer
    /// that cannot get it waits (and its source socket is not read).
    pub memory: Option<Arc<dyn MemoryBudgetPort>>,
}

impl Default for ProcessFileConfig {
    fn default() -> Self {
        Self {
            resume_attempts: 3,
            always_md5: false,
            pressure: None,
            memory: None,
        }
    }
}

/// Copies one source into one storage destination.
pub struct ProcessFile {
    downloader: Arc<dyn HttpDownloadPort>,
    storage: Arc<dyn FileStoragePort>,
    config: ProcessFileConfig,
}

impl std::fmt::Debug for ProcessFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessFile")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ProcessFile {
    pub fn new(
        downloader: Arc<dyn HttpDownloadPort>,
        storage: Arc<dyn FileStoragePort>,
        config: ProcessFileConfig,
    ) -> Self {
        Self {
            downloader,
            storage,
            config,
        }
    }

    /// Re-requests the source from `offset`, refusing a source that changed.
    async fn reopen(
        &self,
        command: &ProcessFileCommand,
        meta: &SourceMeta,
        offset: u64,
        target: usize,
    ) -> Result<Rechunker<ferry_domain::ByteStream<DownloadError>, DownloadError>, ProcessFileError>
    {
        let request = DownloadRequest {
            source: command.source.clone(),
            offset,
            if_range: meta.validator(),
        };
        let reopened = self.downloader.open(request).await?;
        let changed = reopened.meta.offset != offset
            || reopened.meta.total_length != meta.total_length
            || (offset == 0 && reopened.meta.validator() != meta.validator());
        if changed {
            return Err(DownloadError::SourceChanged {
                url: command.source.redacted(),
                detail: format!(
                    "asked for bytes from {offset} of {:?}, got a body from {} of {:?}",
                    meta.total_length, reopened.meta.offset, reopened.meta.total_length
                ),
            }
            .into());
        }
        Ok(Rechunker::starting_at(reopened.body, target, offset))
    }

    /// Streams the body into `writer`. A source that breaks mid-body is
    /// re-requested from the failed offset; a storage write that fails
    /// transiently is rewound to the storage's durable offset, the hash state
    /// restored to that offset, and the source re-read from there.
    async fn pump(
        &self,
        command: &ProcessFileCommand,
        meta: &SourceMeta,
        body: ferry_domain::ByteStream<DownloadError>,
        writer: &mut dyn StagedWrite,
        hasher: &mut StreamHasher,
        guard: &mut SizeGuard,
    ) -> Result<(), ProcessFileError> {
        let class_size = chunk_size_for(meta.total_length);
        let target = class_size;
        let replayable = is_replayable(meta);
        let mut body = Rechunker::new(body, target);
        let mut source_resumes = self.config.resume_attempts;
        let mut write_retries = self.config.resume_attempts;
        // Hash states at the start of each chunk not yet durable in storage.
        let mut snapshots: VecDeque<HashState> = VecDeque::new();
        loop {
            if let Some(pressure) = &self.config.pressure {
                let size = chunk_size_under(pressure.level(), body.target(), class_size);
                body.set_target(size);
            }
            // The chunk's memory is taken before it is read and held until
            // it is written.
            let _reservation = match &self.config.memory {
                Some(memory) => Some(memory.reserve(body.target() as u64).await),
                None => None,
            };
            let Some(item) = body.next().await else {
                break;
            };
            match item {
                Ok(chunk) => {
                    let chunk_started = Instant::now();
                    if replayable {
                        snapshots.push_back(hasher.snapshot());
                    }
                    guard.add(chunk.len() as u64)?;
                    hasher.update(&chunk);
                    if let Err(error) = writer.write(chunk).await {
                        if !(error.is_retryable() && replayable && write_retries > 0) {
                            return Err(error.into());
                        }
                        write_retries -= 1;
                        let durable = writer.durable_offset();
                        let Some(state) = snapshots.iter().find(|s| s.bytes == durable) else {
                            return Err(error.into());
                        };
                        *hasher =
                            StreamHasher::restore(state).map_err(|e| StorageError::Unexpected {
                                location: command.key.to_string(),
                                source: Box::new(e),
                            })?;
                        guard.rewind_to(durable);
                        warn!(key = %command.key, durable, %error, "storage write failed; re-reading the source from the durable offset");
                        writer.rewind(durable).await?;
                        snapshots.clear();
                        body = self.reopen(command, meta, durable, target).await?;
                        continue;
                    }
                    if let Some(pressure) = &self.config.pressure {
                        pressure.record_chunk(chunk_started.elapsed());
                    }
                    let durable = writer.durable_offset();
                    while snapshots.front().is_some_and(|s| s.bytes < durable) {
                        snapshots.pop_front();
                    }
                    command.progress.advanced(hasher.bytes());
                }
                Err(error) => {
                    let offset = hasher.bytes();
                    if !(error.is_retryable() && replayable && source_resumes > 0) {
                        return Err(body_error(error, meta, offset));
                    }
                    source_resumes -= 1;
                    warn!(source = %command.source, offset, %error, "source failed mid-body; resuming from offset");
                    body = self.reopen(command, meta, offset, target).await?;
                }
            }
        }
        guard.finish()?;
        Ok(())
    }
}

/// The source can serve any range again and tell whether it changed.
fn is_replayable(meta: &SourceMeta) -> bool {
    meta.accepts_ranges && meta.total_length.is_some() && meta.validator().is_some()
}

/// A body that broke before its declared end is reported as cut short.
fn body_error(error: DownloadError, meta: &SourceMeta, offset: u64) -> ProcessFileError {
    match (&error, meta.total_length) {
        (DownloadError::Interrupted { .. }, Some(total)) if offset < total => {
            ProcessFileError::LengthMismatch {
                declared: total,
                received: offset,
                problem: LengthProblem::Short,
            }
        }
        _ => error.into(),
    }
}

#[async_trait]
impl ProcessFilePort for ProcessFile {
    async fn process(
        &self,
        command: ProcessFileCommand,
    ) -> Result<ProcessFileResult, ProcessFileError> {
        let started = Instant::now();
        let download = self
            .downloader
            .open(DownloadRequest::whole(command.source.clone()))
            .await?;
        let meta = download.meta;
        let mut guard = SizeGuard::new(command.max_size, command.expected_size);
        guard.declare(meta.total_length)?;

        let with_md5 = command.compute_md5
            || self.config.always_md5
            || command.expected_for(ChecksumAlgorithm::Md5).is_some();
        let mut hasher = StreamHasher::new(with_md5);
        let mut writer = self
            .storage
            .begin_write(WriteRequest {
                key: command.key.clone(),
                size_hint: meta.total_length,
                replayable: is_replayable(&meta),
                expected_sha256_hex: command
                    .expected_for(ChecksumAlgorithm::Sha256)
                    .map(|c| c.hex().to_owned()),
                expected_md5_hex: command
                    .expected_for(ChecksumAlgorithm::Md5)
                    .map(|c| c.hex().to_owned()),
            })
            .await?;
        command.progress.started(meta.total_length);

        let pumped = self
            .pump(
                &command,
                &meta,
                download.body,
                writer.as_mut(),
                &mut hasher,
                &mut guard,
            )
            .await;
        if let Err(error) = pumped {
            abort(writer, &command).await;
            command.progress.finished(false);
            return Err(error);
        }

        let bytes = hasher.bytes();
        let (sha256, md5) = hasher.finalize();
        for expected in &command.expected {
            let actual = match expected.algorithm() {
                ChecksumAlgorithm::Sha256 => Some(&sha256),
                ChecksumAlgorithm::Md5 => md5.as_ref(),
            };
            if let Some(actual) = actual
                && actual != expected
            {
                abort(writer, &command).await;
                command.progress.finished(false);
                return Err(ProcessFileError::ChecksumMismatch {
                    algorithm: expected.algorithm(),
                    expected: expected.hex().to_owned(),
                    actual: actual.hex().to_owned(),
                });
            }
        }

        let stored = writer
            .commit(CommitInfo {
                size: bytes,
                sha256_hex: sha256.hex().to_owned(),
                md5_hex: md5.as_ref().map(|c| c.hex().to_owned()),
            })
            .await;
        command.progress.finished(stored.is_ok());
        let stored = stored?;
        debug!(key = %stored.key, bytes, "file stored");
        Ok(ProcessFileResult {
            key: stored.key,
            location: stored.location,
            bytes,
            sha256,
            md5,
            duration: started.elapsed(),
            final_url: meta.final_url.redacted(),
        })
    }
}

async fn abort(writer: Box<dyn StagedWrite>, command: &ProcessFileCommand) {
    if let Err(error) = writer.abort().await {
        warn!(key = %command.key, %error, "aborting the staged write failed");
    }
}

#[cfg(test)]
#[path = "process_file_tests.rs"]
mod tests;
