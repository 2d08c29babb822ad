//! Where files land: `FileStoragePort`.
//!
//! A write is staged: bytes go somewhere invisible (a temp file, a multipart
//! upload) and become visible under the key only on [`StagedWrite::commit`].
//! [`StagedWrite::abort`], or dropping the handle, leaves nothing visible.

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use thiserror::Error;

use crate::error::{BoxError, ErrorClass};
use crate::key::ObjectKey;
use crate::stream::ByteStream;

/// What to write.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub key: ObjectKey,
    /// Exact length when the source declared one.
    pub size_hint: Option<u64>,
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
    #[error("no space left for {location}; free space or choose another destination")]
    StorageFull { location: String },
    #[error("the destination {location} cannot be used: {reason}")]
    InvalidDestination { location: String, reason: String },
    #[error("the storage at {location} is unavailable: {reason}")]
    Unavailable { location: String, reason: String },
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
            StorageError::NotFound { .. } | StorageError::InvalidDestination { .. } => {
                ErrorClass::Client
            }
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
}

/// An in-progress, invisible write.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait StagedWrite: Send {
    /// Appends bytes.
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError>;
    /// Makes the object visible under its key, atomically.
    async fn commit(self: Box<Self>, info: CommitInfo) -> Result<StoredObject, StorageError>;
    /// Discards everything written; nothing becomes visible.
    async fn abort(self: Box<Self>) -> Result<(), StorageError>;
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
    /// Streams an object's bytes.
    async fn read(&self, key: &ObjectKey) -> Result<ByteStream<StorageError>, StorageError>;
    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError>;
    /// An object's metadata, or `None` if it does not exist.
    async fn metadata(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError>;
}
