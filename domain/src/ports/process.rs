//! The driving port of the core use case: `ProcessFilePort`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

use crate::checkpoint::TransferId;
use crate::checksum::{Checksum, ChecksumAlgorithm};
use crate::error::{ErrorClass, ErrorCode};
use crate::headers::SourceHeaders;
use crate::key::ObjectKey;
use crate::ports::download::DownloadError;
use crate::ports::progress::ProgressPort;
use crate::ports::storage::StorageError;
use crate::size::ByteSize;
use crate::source::SourceUrl;

/// Default largest file accepted.
pub const DEFAULT_MAX_SIZE: ByteSize = ByteSize::gib(5);

/// Copy one source into storage under one key.
#[derive(Clone)]
pub struct ProcessFileCommand {
    pub source: SourceUrl,
    pub key: ObjectKey,
    /// Checked before the object is committed; at most one per algorithm.
    pub expected: Vec<Checksum>,
    /// The exact size the caller expects, if it knows it.
    pub expected_size: Option<u64>,
    pub max_size: ByteSize,
    /// Compute MD5 even when no MD5 is expected.
    pub compute_md5: bool,
    pub progress: Arc<dyn ProgressPort>,
    /// Names the transfer across restarts: with a checkpoint store
    /// configured, progress is checkpointed under it and a later call with
    /// the same id resumes from the last checkpoint.
    pub transfer_id: Option<TransferId>,
    /// Request headers for an HTTP source (secret values).
    pub headers: SourceHeaders,
    /// Name the file from the source's answer (`key` is the fallback).
    pub name_from: Option<crate::naming::NameFrom>,
    /// Content-Type, metadata, tags... for the stored object.
    pub attributes: crate::attributes::ObjectAttributes,
    /// Skip the file when the destination already holds it: same size and
    /// the expected SHA-256 (needs an expected SHA-256).
    pub skip_existing: bool,
    /// Never replace an existing object (`StorageError::AlreadyExists`).
    pub no_clobber: bool,
    /// Set by the caller before it drops the transfer to hand it over: the
    /// staged write keeps its bytes for a resume elsewhere.
    pub suspend_on_drop: crate::ports::storage::SuspendOnDrop,
    /// Cluster mode: the task's lease epoch; checkpoints are saved only
    /// under it (`CheckpointStorePort::save_fenced`).
    pub lease_epoch: Option<u64>,
    /// The transfer never started before (its task's first attempt, as
    /// the job store holds it): no checkpoint of it can exist, so none is
    /// looked up. Its first checkpoint is saved only once the gate says
    /// the start is durable, which keeps "no recorded start, no
    /// checkpoint" true across a crash. Set for one attempt only.
    pub fresh_start: Option<Arc<dyn StartGate>>,
}

/// Says when a transfer's start is durable (see
/// [`ProcessFileCommand::fresh_start`]).
#[async_trait]
pub trait StartGate: Send + Sync + 'static {
    /// Waits until the start is durable: `true`, or `false` if it will
    /// never be (its write failed; the transfer then saves no checkpoint).
    async fn durable(&self) -> bool;
}

impl ProcessFileCommand {
    pub fn new(source: SourceUrl, key: ObjectKey) -> Self {
        Self {
            source,
            key,
            expected: Vec::new(),
            expected_size: None,
            max_size: DEFAULT_MAX_SIZE,
            compute_md5: false,
            progress: Arc::new(crate::ports::progress::NoProgress),
            transfer_id: None,
            headers: SourceHeaders::default(),
            name_from: None,
            attributes: crate::attributes::ObjectAttributes::default(),
            skip_existing: false,
            no_clobber: false,
            suspend_on_drop: crate::ports::storage::SuspendOnDrop::default(),
            lease_epoch: None,
            fresh_start: None,
        }
    }

    pub fn expected_for(&self, algorithm: ChecksumAlgorithm) -> Option<&Checksum> {
        self.expected.iter().find(|c| c.algorithm() == algorithm)
    }
}

impl std::fmt::Debug for ProcessFileCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessFileCommand")
            .field("source", &self.source)
            .field("key", &self.key)
            .field("expected", &self.expected)
            .field("expected_size", &self.expected_size)
            .field("max_size", &self.max_size)
            .field("compute_md5", &self.compute_md5)
            .field("transfer_id", &self.transfer_id)
            .field("fresh_start", &self.fresh_start.is_some())
            .finish_non_exhaustive()
    }
}

/// What a successful copy produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessFileResult {
    pub key: ObjectKey,
    pub location: String,
    pub bytes: u64,
    pub sha256: Checksum,
    pub md5: Option<Checksum>,
    pub duration: Duration,
    /// Redacted URL actually read, after redirects.
    pub final_url: String,
    /// The offset this call continued from, when it resumed a checkpointed
    /// transfer (bytes below it were not fetched again).
    pub resumed_from: Option<u64>,
    /// `skip_existing`: the destination already held this file; nothing
    /// was fetched or written.
    pub skipped: bool,
}

impl ProcessFileResult {
    /// Average throughput in bytes per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            // Precision loss above 2^53 bytes is irrelevant for a rate.
            #[allow(clippy::cast_precision_loss)]
            let bytes = self.bytes as f64;
            bytes / secs
        } else {
            0.0
        }
    }
}

/// How a body's length disagreed with what was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthProblem {
    /// The body ended before its declared length.
    Short,
    /// The body went past its declared length.
    Long,
}

/// Why a copy failed. In every case nothing became visible at the destination.
#[derive(Debug, Error)]
pub enum ProcessFileError {
    #[error(transparent)]
    Source(#[from] DownloadError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the source is {} but the limit is {limit}; raise --max-size if this is expected", ByteSize::new(*.size))]
    TooLarge { limit: ByteSize, size: u64 },
    #[error(
        "the source sent more than the {limit} limit and was stopped; raise --max-size if this is expected"
    )]
    LimitExceeded { limit: ByteSize },
    #[error("the source declared {declared} bytes but sent {}{received}; it was cut off or is misbehaving", match .problem { LengthProblem::Short => "only ", LengthProblem::Long => "at least " })]
    LengthMismatch {
        declared: u64,
        received: u64,
        problem: LengthProblem,
    },
    #[error("expected {expected} bytes but the source {}", match .problem { LengthProblem::Short => format!("has {actual}"), LengthProblem::Long => format!("sent more ({actual} so far)") })]
    UnexpectedSize {
        expected: u64,
        actual: u64,
        problem: LengthProblem,
    },
    #[error("{algorithm} mismatch: expected {expected}, got {actual}; the file was not stored")]
    ChecksumMismatch {
        algorithm: ChecksumAlgorithm,
        expected: String,
        actual: String,
    },
}

impl ProcessFileError {
    pub fn class(&self) -> ErrorClass {
        match self {
            ProcessFileError::Source(e) => e.class(),
            ProcessFileError::Storage(e) => e.class(),
            // A body cut short is a network failure: a retry can succeed.
            ProcessFileError::LengthMismatch {
                problem: LengthProblem::Short,
                ..
            } => ErrorClass::Transient,
            ProcessFileError::LengthMismatch { .. }
            | ProcessFileError::TooLarge { .. }
            | ProcessFileError::LimitExceeded { .. }
            | ProcessFileError::UnexpectedSize { .. }
            | ProcessFileError::ChecksumMismatch { .. } => ErrorClass::Client,
        }
    }

    /// An adapter already retried this failure as far as the policy allows
    /// (see [`crate::retry`]): no further retry.
    pub fn is_exhausted(&self) -> bool {
        match self {
            ProcessFileError::Source(e) => e.is_exhausted(),
            ProcessFileError::Storage(e) => e.is_exhausted(),
            _ => false,
        }
    }

    /// The stable code for JSON output and events.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProcessFileError::Source(DownloadError::Forbidden { .. }) => ErrorCode::SourceForbidden,
            ProcessFileError::Source(DownloadError::Tls { .. }) => ErrorCode::SourceTls,
            ProcessFileError::Source(_) => ErrorCode::SourceError,
            ProcessFileError::Storage(StorageError::AlreadyExists { .. }) => {
                ErrorCode::DestinationExists
            }
            ProcessFileError::Storage(_) => ErrorCode::StorageError,
            ProcessFileError::TooLarge { .. } | ProcessFileError::LimitExceeded { .. } => {
                ErrorCode::SizeLimitExceeded
            }
            ProcessFileError::LengthMismatch { .. } => ErrorCode::LengthMismatch,
            ProcessFileError::UnexpectedSize { .. } => ErrorCode::SizeMismatch,
            ProcessFileError::ChecksumMismatch { .. } => ErrorCode::ChecksumMismatch,
        }
    }
}

/// Copies one file from a source to storage in one streaming pass.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ProcessFilePort: Send + Sync + 'static {
    async fn process(
        &self,
        command: ProcessFileCommand,
    ) -> Result<ProcessFileResult, ProcessFileError>;

    /// Gives up a checkpointed transfer that will not be retried: its staged
    /// bytes are discarded (upload aborted, temp file removed) and its
    /// checkpoint removed. Abandoning an unknown transfer succeeds.
    async fn abandon(&self, _id: &TransferId) -> Result<(), ProcessFileError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let e = ProcessFileError::TooLarge {
            limit: ByteSize::gib(5),
            size: 6 << 30,
        };
        assert_eq!(
            e.to_string(),
            "the source is 6 GiB but the limit is 5 GiB; raise --max-size if this is expected"
        );
        let short = ProcessFileError::LengthMismatch {
            declared: 10,
            received: 4,
            problem: LengthProblem::Short,
        };
        assert!(short.to_string().contains("sent only 4"), "{short}");
        assert!(short.class().is_retryable());
        let mismatch = ProcessFileError::ChecksumMismatch {
            algorithm: ChecksumAlgorithm::Sha256,
            expected: "aa".into(),
            actual: "bb".into(),
        };
        assert_eq!(mismatch.code(), "checksum_mismatch");
        assert!(!mismatch.class().is_retryable());
    }
}
