//! The ProcessFile use case: source -> chunking -> size guard -> hashing ->
//! staged storage write, in one pass, verified before commit.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use tracing::{debug, warn};

use ferry_domain::naming::{self, NameFrom, NameSource};
use ferry_domain::ports::{
    CheckpointStorePort, CommitInfo, DownloadError, DownloadRequest, FileStoragePort,
    HttpDownloadPort, LengthProblem, MemoryBudgetPort, ObjectMeta, ProcessFileCommand,
    ProcessFileError, ProcessFilePort, ProcessFileResult, SourceMeta, StagedWrite, StorageError,
    WriteRequest,
};
use ferry_domain::{Checkpoint, ChecksumAlgorithm, ObjectKey, TransferId};

use crate::backpressure::Backpressure;
use crate::checkpointing::{Checkpointer, url_fingerprint};
use crate::chunking::{Rechunker, chunk_size_for, chunk_size_under};
use crate::hashing::{HashState, HashingInterrupted, PipelinedHasher, StreamHasher};
use crate::killpoint::kill_point;
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
    /// Where checkpoints of commands that carry a `transfer_id` are kept; a
    /// later call with the same id resumes from the last one.
    pub checkpoints: Option<Arc<dyn CheckpointStorePort>>,
}

impl Default for ProcessFileConfig {
    fn default() -> Self {
        Self {
            resume_attempts: 3,
            always_md5: false,
            pressure: None,
            memory: None,
            checkpoints: None,
        }
    }
}

/// A transfer ready to pump: the source from some offset, the staged write
/// and the hash state at that offset.
struct Opened {
    meta: SourceMeta,
    /// `None`: every byte is already staged (resumed at the end).
    body: Option<ferry_domain::ByteStream<DownloadError>>,
    writer: Box<dyn StagedWrite>,
    hasher: StreamHasher,
    guard: SizeGuard,
    resumed_from: Option<u64>,
}

/// How a resume attempt ended.
enum Resume {
    Opened(Box<Opened>),
    /// The object was committed before the crash; only the checkpoint was
    /// left to remove.
    AlreadyStored(ProcessFileResult),
    /// Nothing usable: start from zero.
    Fresh,
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
    fn with_md5(&self, command: &ProcessFileCommand) -> bool {
        command.compute_md5
            || self.config.always_md5
            || command.expected_for(ChecksumAlgorithm::Md5).is_some()
    }

    fn write_request(command: &ProcessFileCommand, meta: &SourceMeta) -> WriteRequest {
        WriteRequest {
            key: command.key.clone(),
            size_hint: meta.total_length,
            replayable: meta.is_replayable(),
            expected_sha256: command
                .expected_for(ChecksumAlgorithm::Sha256)
                .or(meta.declared_sha256.as_ref())
                .cloned(),
            expected_md5: command.expected_for(ChecksumAlgorithm::Md5).cloned(),
            attributes: {
                let mut attributes = command.attributes.clone();
                attributes.content_type = Some(content_type_for(command, meta));
                attributes
            },
            source_last_modified: meta.last_modified.clone(),
            if_absent: command.no_clobber,
            suspend_on_drop: command.suspend_on_drop.clone(),
        }
    }

    fn checkpointer(&self, command: &ProcessFileCommand) -> Option<Checkpointer> {
        let store = self.config.checkpoints.clone()?;
        let id = command.transfer_id.clone()?;
        let mut checkpointer = Checkpointer::new(store, id, command.key.clone());
        checkpointer.epoch = command.lease_epoch;
        checkpointer.start = command.fresh_start.clone();
        Some(checkpointer)
    }

    /// Opens the source from zero and begins a fresh staged write.
    ///
    /// With `name_from`, the key is decided here, from the answer.
    async fn open_fresh(
        &self,
        command: &mut ProcessFileCommand,
    ) -> Result<Opened, ProcessFileError> {
        let download = self
            .downloader
            .open(DownloadRequest {
                headers: command.headers.clone(),
                ..DownloadRequest::whole(command.source.clone())
            })
            .await?;
        let meta = download.meta;
        if let Some(name_from) = &command.name_from {
            command.key = self.answered_name(command, name_from, &meta)?;
        }
        let mut guard = SizeGuard::new(command.max_size, command.expected_size);
        guard.declare(meta.total_length)?;
        let hasher = StreamHasher::new(self.with_md5(command));
        let writer = self
            .storage
            .begin_write(Self::write_request(command, &meta))
            .await?;
        command.progress.started(meta.total_length);
        Ok(Opened {
            meta,
            body: Some(download.body),
            writer,
            hasher,
            guard,
            resumed_from: None,
        })
    }

    /// The key the source's answer names (`--name-from`), claimed for this
    /// source in the run; the command's key when the answer names nothing.
    fn answered_name(
        &self,
        command: &ProcessFileCommand,
        name_from: &NameFrom,
        meta: &SourceMeta,
    ) -> Result<ObjectKey, ProcessFileError> {
        let from_disposition = || {
            meta.content_disposition
                .as_deref()
                .and_then(naming::disposition_filename)
        };
        let name = match name_from.source {
            NameSource::ContentDisposition => {
                from_disposition().or_else(|| meta.final_url.file_name())
            }
            NameSource::FinalUrl => meta.final_url.file_name(),
        };
        let key = name
            .as_deref()
            .and_then(naming::sanitise)
            .unwrap_or_else(|| command.key.clone());
        if !name_from.claim(&key, command.source.expose()) {
            return Err(ProcessFileError::Storage(
                StorageError::InvalidDestination {
                    location: self.storage.location(&key),
                    reason: format!(
                        "another source of this copy is already stored as `{key}` (names from --name-from collide)"
                    ),
                },
            ));
        }
        Ok(key)
    }

    /// Continues from the command's checkpoint when there is one that still
    /// matches the source and the staged bytes; otherwise discards it.
    async fn try_resume(
        &self,
        command: &ProcessFileCommand,
        checkpointer: &mut Checkpointer,
        started: Instant,
    ) -> Result<Resume, ProcessFileError> {
        if command.fresh_start.is_some() {
            // Never started: nothing to resume, no lookup.
            return Ok(Resume::Fresh);
        }
        let loaded = checkpointer.store.load(&checkpointer.id).await;
        checkpointer.recorded = !matches!(loaded, Ok(None));
        let checkpoint = match loaded {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(Resume::Fresh),
            Err(e) => {
                warn!(transfer = %checkpointer.id, error = %e, "unreadable checkpoint; starting from zero");
                command.progress.restarted(&e.to_string());
                checkpointer.clear().await;
                return Ok(Resume::Fresh);
            }
        };
        if checkpoint.key != command.key
            || checkpoint.source.url_sha256 != url_fingerprint(&command.source)
        {
            return Ok(self
                .restart(
                    command,
                    checkpointer,
                    &checkpoint,
                    "the source URL or destination key changed".into(),
                )
                .await);
        }
        if checkpoint.hash.md5.is_some() != self.with_md5(command) {
            return Ok(self
                .restart(
                    command,
                    checkpointer,
                    &checkpoint,
                    "the MD5 requirement changed".into(),
                )
                .await);
        }
        let hasher = match StreamHasher::restore(&checkpoint.hash) {
            Ok(h) => h,
            Err(e) => {
                return Ok(self
                    .restart(command, checkpointer, &checkpoint, e.to_string())
                    .await);
            }
        };
        let committed = checkpoint.committed();
        let length = checkpoint.source.length;
        let (meta, body) = if committed == length {
            // Every byte is staged: no need to ask the source for anything.
            let meta = SourceMeta {
                total_length: Some(length),
                offset: length,
                etag: checkpoint.source.etag.clone(),
                last_modified: checkpoint.source.last_modified.clone(),
                accepts_ranges: true,
                final_url: command.source.clone(),
                declared_sha256: None,
                content_disposition: None,
                content_type: None,
            };
            (meta, None)
        } else {
            let opened = self
                .downloader
                .open(DownloadRequest {
                    source: command.source.clone(),
                    offset: committed,
                    if_range: checkpoint.source.validator(),
                    headers: command.headers.clone(),
                })
                .await;
            let download = match opened {
                Ok(d) => d,
                // A source that refuses the conditional read (S3's If-Match
                // answering 412) rather than sending the whole body.
                Err(e @ DownloadError::SourceChanged { .. }) => {
                    return Ok(self
                        .restart(command, checkpointer, &checkpoint, e.to_string())
                        .await);
                }
                Err(e) => return Err(e.into()),
            };
            let meta = download.meta;
            if meta.offset != committed
                || !checkpoint
                    .source
                    .same_content(meta.total_length, meta.validator().as_ref())
            {
                return Ok(self.restart(command, checkpointer, &checkpoint, format!(
                    "the source changed since the checkpoint at byte {committed} (length, ETag or Last-Modified differ)"
                )).await);
            }
            (meta, Some(download.body))
        };
        let request = Self::write_request(command, &meta);
        let writer = match self.storage.resume_write(request, &checkpoint.staged).await {
            Ok(w) => w,
            Err(e) => {
                if committed == length
                    && let Some(result) = self
                        .already_stored(command, &checkpoint, &hasher, &meta, started)
                        .await
                {
                    checkpointer.clear().await;
                    return Ok(Resume::AlreadyStored(result));
                }
                return Ok(self
                    .restart(
                        command,
                        checkpointer,
                        &checkpoint,
                        format!("the staged bytes cannot be resumed: {e}"),
                    )
                    .await);
            }
        };
        let mut guard = SizeGuard::new(command.max_size, command.expected_size);
        guard.declare(Some(length))?;
        guard.resume_at(committed)?;
        checkpointer.source = Some(checkpoint.source.clone());
        checkpointer.saved_at = Some(committed);
        command.progress.started(Some(length));
        command.progress.resumed(committed);
        command.progress.advanced(committed);
        debug!(transfer = %checkpointer.id, committed, "resuming from a checkpoint");
        Ok(Resume::Opened(Box::new(Opened {
            meta,
            body,
            writer,
            hasher,
            guard,
            resumed_from: Some(committed),
        })))
    }

    /// Gives up a checkpoint that cannot be used: its staged bytes are
    /// discarded and the transfer starts from zero, saying why.
    async fn restart(
        &self,
        command: &ProcessFileCommand,
        checkpointer: &Checkpointer,
        checkpoint: &Checkpoint,
        reason: String,
    ) -> Resume {
        warn!(transfer = %checkpointer.id, %reason, "checkpoint not usable; starting from zero");
        command.progress.restarted(&reason);
        if let Err(e) = self
            .storage
            .discard(&checkpoint.key, &checkpoint.staged)
            .await
        {
            warn!(transfer = %checkpointer.id, error = %e, "could not discard the stale staged write");
        }
        checkpointer.clear().await;
        Resume::Fresh
    }

    /// After a crash between commit and the checkpoint's removal: the object
    /// is there if its size and SHA-256 are those the checkpoint's final hash
    /// state gives (from metadata, or by reading the object back).
    async fn already_stored(
        &self,
        command: &ProcessFileCommand,
        checkpoint: &Checkpoint,
        hasher: &StreamHasher,
        meta: &SourceMeta,
        started: Instant,
    ) -> Option<ProcessFileResult> {
        let stored = self.storage.metadata(&command.key).await.ok()??;
        if stored.size != checkpoint.source.length {
            return None;
        }
        let (sha256, md5) = hasher.clone().finalize();
        let matches = self.stored_sha256_is(&command.key, &stored, &sha256).await;
        if !matches || first_mismatch(command, meta, &sha256, md5.as_ref()).is_some() {
            return None;
        }
        debug!(key = %command.key, "the object was committed before the restart");
        Some(ProcessFileResult {
            key: command.key.clone(),
            location: self.storage.location(&command.key),
            bytes: stored.size,
            sha256,
            md5,
            duration: started.elapsed(),
            final_url: meta.final_url.redacted(),
            resumed_from: Some(stored.size),
            skipped: false,
        })
    }

    /// Whether the stored object's SHA-256 is `sha256`: from its metadata,
    /// else by reading it back (never the source).
    async fn stored_sha256_is(
        &self,
        key: &ObjectKey,
        stored: &ObjectMeta,
        sha256: &ferry_domain::Checksum,
    ) -> bool {
        if let Some(hex) = &stored.sha256_hex {
            return hex == sha256.hex();
        }
        let Ok(mut body) = self.storage.read(key).await else {
            return false;
        };
        let mut check = StreamHasher::new(false);
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => check.update(&c),
                Err(_) => return false,
            }
        }
        check.finalize().0 == *sha256
    }

    /// `--skip-existing`: the destination already holds an object of the
    /// expected size whose SHA-256 is the expected one; decided without
    /// asking the source anything. Only with an expected SHA-256.
    async fn existing(
        &self,
        command: &ProcessFileCommand,
        started: Instant,
    ) -> Option<ProcessFileResult> {
        // The expected SHA-256, else the one the source declares (an S3
        // object's metadata, asked without its body).
        let expected = match command.expected_for(ChecksumAlgorithm::Sha256) {
            Some(e) => e.clone(),
            None => self
                .downloader
                .declared_sha256(&command.source)
                .await
                .ok()??,
        };
        let expected = &expected;
        let stored = self.storage.metadata(&command.key).await.ok()??;
        if command
            .expected_size
            .is_some_and(|size| size != stored.size)
            || !self.stored_sha256_is(&command.key, &stored, expected).await
        {
            return None;
        }
        debug!(key = %command.key, "already stored with the expected SHA-256; skipped");
        Some(ProcessFileResult {
            key: command.key.clone(),
            location: self.storage.location(&command.key),
            bytes: stored.size,
            sha256: expected.clone(),
            md5: stored
                .md5_hex
                .as_deref()
                .and_then(|h| ferry_domain::Checksum::md5(h).ok()),
            duration: started.elapsed(),
            final_url: command.source.redacted(),
            resumed_from: None,
            skipped: true,
        })
    }

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
            headers: command.headers.clone(),
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
    /// restored to that offset, and the source re-read from there. With a
    /// checkpointer, the storage's durable state is checkpointed whenever it
    /// says one is due.
    #[allow(clippy::too_many_arguments)]
    async fn pump(
        &self,
        command: &ProcessFileCommand,
        meta: &SourceMeta,
        body: ferry_domain::ByteStream<DownloadError>,
        writer: &mut dyn StagedWrite,
        hasher: &mut StreamHasher,
        guard: &mut SizeGuard,
        checkpointer: Option<&mut Checkpointer>,
    ) -> Result<(), ProcessFileError> {
        let mut pipe = PipelinedHasher::new(std::mem::replace(hasher, StreamHasher::new(false)));
        let pumped = self
            .pump_through(command, meta, body, writer, &mut pipe, guard, checkpointer)
            .await;
        *hasher = pipe
            .finish()
            .await
            .map_err(|e| hashing_failed(command, e))?;
        pumped
    }

    #[allow(clippy::too_many_arguments)]
    async fn pump_through(
        &self,
        command: &ProcessFileCommand,
        meta: &SourceMeta,
        body: ferry_domain::ByteStream<DownloadError>,
        writer: &mut dyn StagedWrite,
        hasher: &mut PipelinedHasher,
        guard: &mut SizeGuard,
        mut checkpointer: Option<&mut Checkpointer>,
    ) -> Result<(), ProcessFileError> {
        let class_size = chunk_size_for(meta.total_length);
        let target = class_size;
        let replayable = meta.is_replayable();
        let mut body = Rechunker::starting_at(body, target, hasher.fed());
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
            // it is written and hashed.
            let reservation = match &self.config.memory {
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
                        let settled = hasher
                            .settled()
                            .await
                            .map_err(|e| hashing_failed(command, e))?;
                        snapshots.push_back(settled.snapshot());
                    }
                    guard.add(chunk.len() as u64)?;
                    // Hashed on another thread while this one writes.
                    hasher
                        .feed(chunk.clone(), reservation)
                        .await
                        .map_err(|e| hashing_failed(command, e))?;
                    if let Err(error) = writer.write(chunk).await {
                        if !(error.is_retryable() && replayable && write_retries > 0) {
                            return Err(error.into());
                        }
                        write_retries -= 1;
                        let durable = writer.durable_offset();
                        let Some(state) = snapshots.iter().find(|s| s.bytes == durable) else {
                            return Err(error.into());
                        };
                        let restored =
                            StreamHasher::restore(state).map_err(|e| StorageError::Unexpected {
                                location: command.key.to_string(),
                                source: Box::new(e),
                            })?;
                        *hasher = PipelinedHasher::new(restored);
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
                    if replayable && let Some(checkpointer) = checkpointer.as_deref_mut() {
                        kill_point("ferry-after-write", hasher.fed());
                        checkpoint(command, writer, hasher, &snapshots, checkpointer, false)
                            .await?;
                    }
                    let durable = writer.durable_offset();
                    while snapshots.front().is_some_and(|s| s.bytes < durable) {
                        snapshots.pop_front();
                    }
                    command.progress.advanced(hasher.fed());
                }
                Err(error) => {
                    let offset = hasher.fed();
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

/// A hashing thread lost, as the storage-side unexpected failure it is
/// (the runtime is going away; the transfer can be resumed).
fn hashing_failed(command: &ProcessFileCommand, error: HashingInterrupted) -> ProcessFileError {
    ProcessFileError::Storage(StorageError::Unexpected {
        location: command.key.to_string(),
        source: Box::new(error),
    })
}

/// Asks the storage whether a checkpoint is due and, if so, saves it with
/// the hash state at the storage's durable offset (waiting for the chunk
/// being hashed only then).
async fn checkpoint(
    command: &ProcessFileCommand,
    writer: &mut dyn StagedWrite,
    hasher: &mut PipelinedHasher,
    snapshots: &VecDeque<HashState>,
    checkpointer: &mut Checkpointer,
    force: bool,
) -> Result<(), ProcessFileError> {
    let Some(staged) = writer.checkpoint(force).await? else {
        return Ok(());
    };
    let at = staged.committed();
    let hash = if at == hasher.fed() {
        let settled = hasher
            .settled()
            .await
            .map_err(|e| hashing_failed(command, e))?;
        Some(settled.snapshot())
    } else {
        snapshots.iter().find(|s| s.bytes == at).cloned()
    };
    if let Some(hash) = hash {
        checkpointer.save(staged, hash).await;
    }
    Ok(())
}

/// The object's Content-Type: as asked, else the source's, else a guess
/// from the key's extension, else `application/octet-stream`.
fn content_type_for(command: &ProcessFileCommand, meta: &SourceMeta) -> String {
    command
        .attributes
        .content_type
        .clone()
        .or_else(|| meta.content_type.clone())
        .or_else(|| {
            mime_guess::from_path(command.key.as_str())
                .first_raw()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "application/octet-stream".to_owned())
}

/// The first expected digest the computed ones contradict: the command's,
/// and the SHA-256 the source declares when the command gives none.
fn first_mismatch(
    command: &ProcessFileCommand,
    meta: &SourceMeta,
    sha256: &ferry_domain::Checksum,
    md5: Option<&ferry_domain::Checksum>,
) -> Option<ProcessFileError> {
    let declared = meta
        .declared_sha256
        .as_ref()
        .filter(|_| command.expected_for(ChecksumAlgorithm::Sha256).is_none());
    command
        .expected
        .iter()
        .chain(declared)
        .find_map(|expected| {
            let actual = match expected.algorithm() {
                ChecksumAlgorithm::Sha256 => Some(sha256),
                ChecksumAlgorithm::Md5 => md5,
            }?;
            (actual != expected).then(|| ProcessFileError::ChecksumMismatch {
                algorithm: expected.algorithm(),
                expected: expected.hex().to_owned(),
                actual: actual.hex().to_owned(),
            })
        })
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
        mut command: ProcessFileCommand,
    ) -> Result<ProcessFileResult, ProcessFileError> {
        let started = Instant::now();
        if command.skip_existing
            && let Some(result) = self.existing(&command, started).await
        {
            command.progress.finished(true);
            return Ok(result);
        }
        if command.no_clobber
            && let Ok(Some(_)) = self.storage.metadata(&command.key).await
        {
            return Err(ProcessFileError::Storage(StorageError::AlreadyExists {
                location: self.storage.location(&command.key),
            }));
        }
        let mut checkpointer = self.checkpointer(&command);
        let resumed = match checkpointer.as_mut() {
            Some(cp) => self.try_resume(&command, cp, started).await?,
            None => Resume::Fresh,
        };
        let opened = match resumed {
            Resume::Opened(opened) => *opened,
            Resume::AlreadyStored(result) => {
                command.progress.finished(true);
                return Ok(result);
            }
            Resume::Fresh => self.open_fresh(&mut command).await?,
        };
        let Opened {
            meta,
            body,
            mut writer,
            mut hasher,
            mut guard,
            resumed_from,
        } = opened;
        if let Some(cp) = checkpointer.as_mut()
            && cp.source.is_none()
        {
            cp.identify(&command.source, &meta);
        }

        let pumped = match body {
            Some(body) => {
                self.pump(
                    &command,
                    &meta,
                    body,
                    writer.as_mut(),
                    &mut hasher,
                    &mut guard,
                    checkpointer.as_mut(),
                )
                .await
            }
            None => guard.finish().map(|_| ()),
        };
        if let Err(error) = pumped {
            self.give_up(writer, &command, checkpointer.as_ref(), &error)
                .await;
            command.progress.finished(false);
            return Err(error);
        }

        let bytes = hasher.bytes();
        if let Some(cp) = checkpointer.as_mut()
            && cp.source.is_some()
            && cp.recorded
        {
            // Every byte staged and recorded: a crash during commit resumes
            // with nothing left to fetch. A file that never reached a
            // checkpoint (smaller than one interval or part) is fetched
            // again instead: cheaper than a store commit per file.
            let mut pipe = PipelinedHasher::new(hasher);
            let saved = checkpoint(
                &command,
                writer.as_mut(),
                &mut pipe,
                &VecDeque::new(),
                cp,
                true,
            )
            .await;
            hasher = pipe
                .finish()
                .await
                .map_err(|e| hashing_failed(&command, e))?;
            if let Err(error) = saved {
                self.give_up(writer, &command, Some(cp), &error).await;
                command.progress.finished(false);
                return Err(error);
            }
        }
        let (sha256, md5) = hasher.finalize();
        if let Some(mismatch) = first_mismatch(&command, &meta, &sha256, md5.as_ref()) {
            abort(writer, &command).await;
            if let Some(cp) = &checkpointer {
                cp.clear().await;
            }
            command.progress.finished(false);
            return Err(mismatch);
        }

        kill_point("ferry-before-commit", bytes);
        let stored = writer
            .commit(CommitInfo {
                size: bytes,
                sha256_hex: sha256.hex().to_owned(),
                md5_hex: md5.as_ref().map(|c| c.hex().to_owned()),
            })
            .await;
        if let Some(cp) = &checkpointer {
            // Committed, or failed and aborted by commit: either way the
            // staged bytes are gone.
            cp.clear().await;
        }
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
            resumed_from,
            skipped: false,
        })
    }

    async fn abandon(&self, id: &TransferId) -> Result<(), ProcessFileError> {
        let Some(store) = &self.config.checkpoints else {
            return Ok(());
        };
        if let Ok(Some(checkpoint)) = store.load(id).await {
            self.storage
                .discard(&checkpoint.key, &checkpoint.staged)
                .await?;
        }
        store
            .remove(id)
            .await
            .map_err(|e| StorageError::Unexpected {
                location: format!("checkpoint {id}"),
                source: Box::new(e),
            })?;
        Ok(())
    }
}

impl ProcessFile {
    /// After a failure: a retryable one with a checkpoint saved keeps the
    /// staged bytes for the retry (or the next process) to resume; anything
    /// else discards them and the checkpoint.
    async fn give_up(
        &self,
        writer: Box<dyn StagedWrite>,
        command: &ProcessFileCommand,
        checkpointer: Option<&Checkpointer>,
        error: &ProcessFileError,
    ) {
        match checkpointer {
            Some(cp) if cp.saved_at.is_some() && error.class().is_retryable() => {
                debug!(transfer = %cp.id, "transfer suspended at its checkpoint for a retry");
                writer.suspend();
            }
            Some(cp) => {
                abort(writer, command).await;
                cp.clear().await;
            }
            None => abort(writer, command).await,
        }
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
