//! Where files land: `FileStoragePort`.
//!
//! A write is staged: bytes go somewhere invisible (a temp file, a multipart
//! upload) and become visible under the key only on [`StagedWrite::commit`].
//! [`StagedWrite::abort`], or dropping the handle, leaves nothing visible.

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use thiserror::Error;

use crate::attributes::ObjectAttributes;
use crate::checkpoint::StagedState;
use crate::checksum::Checksum;
use crate::error::{BoxError, ErrorClass};
use crate::key::ObjectKey;
use crate::stream::ByteStream;

/// Set before a staged write is dropped, it keeps its staged bytes (as
/// [`StagedWrite::suspend`] does) instead of aborting them: the transfer
/// was handed to another process that resumes it from its checkpoint (a
/// cluster node that lost a task's lease, or hands its tasks over at
/// shutdown). Unset, dropping aborts, as always.
#[derive(Debug, Clone, Default)]
pub struct SuspendOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl SuspendOnDrop {
    /// From now on, a drop keeps the staged bytes.
    pub fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// What to write.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub key: ObjectKey,
    /// Exact length when the source declared one.
    pub size_hint: Option<u64>,
    /// The caller can re-read the source from any offset (ranges and a
    /// validator): the storage may stream without keeping a copy and, when a
    /// write fails, ask to be rewound to its durable offset.
    pub replayable: bool,
    /// Digests the caller will verify before commit, known up front; the
    /// storage may record them when the write starts.
    pub expected_sha256: Option<Checksum>,
    pub expected_md5: Option<Checksum>,
    /// What the object carries besides its bytes (Content-Type resolved).
    pub attributes: ObjectAttributes,
    /// The source's `Last-Modified`, as sent (for `preserve_mtime`).
    pub source_last_modified: Option<String>,
    /// Commit only if no object holds the key yet (no-clobber); otherwise
    /// `StorageError::AlreadyExists`. Atomic where the storage supports it
    /// (a directory; S3 servers that honour `If-None-Match: *`).
    pub if_absent: bool,
    /// Whether a drop keeps the staged bytes (see [`SuspendOnDrop`]).
    pub suspend_on_drop: SuspendOnDrop,
}

impl WriteRequest {
    pub fn new(key: ObjectKey, size_hint: Option<u64>) -> Self {
        Self {
            key,
            size_hint,
            replayable: false,
            expected_sha256: None,
            expected_md5: None,
            attributes: ObjectAttributes::default(),
            source_last_modified: None,
            if_absent: false,
            suspend_on_drop: SuspendOnDrop::default(),
        }
    }
}

/// Facts recorded with the object when it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub size: u64,
    pub sha256_hex: String,
    pub md5_hex: Option<String>,
}

/// A committed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: ObjectKey,
    pub size: u64,
    /// Human-readable location: a path or `s3://bucket/key`.
    pub location: String,
}

/// What storage knows of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    pub last_modified: Option<SystemTime>,
    /// SHA-256 hex recorded at commit, where the backend keeps metadata.
    pub sha256_hex: Option<String>,
    pub md5_hex: Option<String>,
}

/// Why storage refused or failed.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("no object at {location}")]
    NotFound { location: String },
    #[error("permission denied writing {location}: {reason}")]
    PermissionDenied { location: String, reason: String },
    #[error(
        "{location} already exists and overwriting is refused (--no-clobber, or a job's if_exists: refuse); nothing was written"
    )]
    AlreadyExists { location: String },
    #[error("no space left for {location}; free space or choose another destination")]
    StorageFull { location: String },
    #[error("the destination {location} cannot be used: {reason}")]
    InvalidDestination { location: String, reason: String },
    /// `exhausted`: the adapter (or its SDK) already retried this request
    /// as far as its policy allows; retrying it again would stack loops.
    #[error("the storage at {location} is unavailable: {reason}")]
    Unavailable {
        location: String,
        reason: String,
        exhausted: bool,
    },
    /// The memory budget cannot hold what this write must buffer.
    #[error(
        "the memory budget cannot buffer a part for {location}: {reason}; raise --memory-budget or lower --part-size"
    )]
    MemoryBudget { location: String, reason: String },
    #[error("unexpected storage error at {location}: {source}")]
    Unexpected {
        location: String,
        #[source]
        source: BoxError,
    },
}

impl StorageError {
    pub fn class(&self) -> ErrorClass {
        match self {
            StorageError::NotFound { .. }
            | StorageError::AlreadyExists { .. }
            | StorageError::InvalidDestination { .. }
            | StorageError::MemoryBudget { .. } => ErrorClass::Client,
            StorageError::PermissionDenied { .. } | StorageError::StorageFull { .. } => {
                ErrorClass::Storage
            }
            StorageError::Unavailable { .. } => ErrorClass::Transient,
            StorageError::Unexpected { .. } => ErrorClass::Internal,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.class().is_retryable()
    }

    /// The adapter already retried this failure as far as its policy
    /// allows: the caller must not retry it again.
    pub fn is_exhausted(&self) -> bool {
        matches!(
            self,
            StorageError::Unavailable {
                exhausted: true,
                ..
            }
        )
    }
}

/// An in-progress, invisible write.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait StagedWrite: Send {
    /// Appends bytes. A transient error may be recovered from with
    /// [`StagedWrite::rewind`] to [`StagedWrite::durable_offset`].
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError>;
    /// Bytes stored for good: a rewind never goes below this offset.
    fn durable_offset(&self) -> u64;
    /// Discards everything after `offset` (the durable offset) so that
    /// writing resumes there.
    async fn rewind(&mut self, offset: u64) -> Result<(), StorageError>;
    /// Makes the object visible under its key, atomically.
    async fn commit(self: Box<Self>, info: CommitInfo) -> Result<StoredObject, StorageError>;
    /// Discards everything written; nothing becomes visible.
    async fn abort(self: Box<Self>) -> Result<(), StorageError>;
    /// The durable state to record in a checkpoint, when one is due: S3 once
    /// the upload exists and after every completed part, a directory every
    /// N-th call after an fsync. `force` asks for it now (after a resume).
    /// `None`: nothing new, or this write cannot be resumed.
    async fn checkpoint(&mut self, _force: bool) -> Result<Option<StagedState>, StorageError> {
        Ok(None)
    }
    /// Stops writing but keeps the staged bytes for
    /// [`FileStoragePort::resume_write`] (a retry or the next process);
    /// whoever suspends must later resume or
    /// [`FileStoragePort::discard`] them.
    fn suspend(self: Box<Self>) {}
}

/// A place to store files: a directory or an S3 bucket and prefix.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait FileStoragePort: Send + Sync + 'static {
    /// Where `key` lands, for messages (`/data/out/a.bin`, `s3://b/p/a.bin`).
    fn location(&self, key: &ObjectKey) -> String;
    /// Starts a staged write.
    async fn begin_write(
        &self,
        request: WriteRequest,
    ) -> Result<Box<dyn StagedWrite>, StorageError>;
    /// Takes up a staged write saved by [`StagedWrite::checkpoint`],
    /// after checking it is still there and intact (S3: ListParts matches;
    /// directory: the temp file holds at least the synced length, truncated
    /// back to it). An error means it cannot be resumed: discard it and start
    /// from zero.
    async fn resume_write(
        &self,
        request: WriteRequest,
        _staged: &StagedState,
    ) -> Result<Box<dyn StagedWrite>, StorageError> {
        Err(StorageError::InvalidDestination {
            location: self.location(&request.key),
            reason: "this storage cannot resume a staged write".into(),
        })
    }
    /// Deletes a staged write that will not be resumed (aborts the upload,
    /// removes the temp file). Discarding what is already gone succeeds.
    async fn discard(&self, _key: &ObjectKey, _staged: &StagedState) -> Result<(), StorageError> {
        Ok(())
    }
    /// Streams an object's bytes.
    async fn read(&self, key: &ObjectKey) -> Result<ByteStream<StorageError>, StorageError>;
    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError>;
    /// An object's metadata, or `None` if it does not exist.
    async fn metadata(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError>;
}
