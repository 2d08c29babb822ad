//! Exit codes, documented in README.md. Scripts rely on them: never renumber.

use ferry_domain::ErrorClass;
use ferry_domain::ports::{DownloadError, ProcessFileError, StorageError};

pub const OK: u8 = 0;
/// A bug or an unclassified failure.
pub const INTERNAL: u8 = 1;
/// Bad flags, arguments or configuration.
pub const USAGE: u8 = 2;
/// The content did not match an expected checksum.
pub const CHECKSUM_MISMATCH: u8 = 3;
/// The source is larger than allowed, or not the expected size.
pub const SIZE_LIMIT: u8 = 4;
/// The source could not be read (network, HTTP status, cut short, changed).
pub const SOURCE: u8 = 5;
/// The destination could not be written.
pub const STORAGE: u8 = 6;
/// `ferry job submit --wait`: the job finished, some files failed.
pub const JOB_WITH_ERRORS: u8 = 7;
/// `ferry job submit --wait`: the job failed or was cancelled.
pub const JOB_FAILED: u8 = 8;
/// The ferry server could not be reached or failed (job commands).
pub const SERVER: u8 = 9;
/// TLS with the source failed: its certificate is not trusted (see
/// `--ca-cert`). Not retried.
pub const SOURCE_TLS: u8 = 10;
/// `--no-clobber`: the destination key exists; nothing was written.
pub const DESTINATION_EXISTS: u8 = 11;
/// Interrupted (Ctrl-C, SIGINT): nothing was stored.
pub const INTERRUPTED: u8 = 130;

pub fn for_error(error: &ProcessFileError) -> u8 {
    match error {
        ProcessFileError::ChecksumMismatch { .. } => CHECKSUM_MISMATCH,
        ProcessFileError::TooLarge { .. }
        | ProcessFileError::LimitExceeded { .. }
        | ProcessFileError::UnexpectedSize { .. } => SIZE_LIMIT,
        ProcessFileError::Source(DownloadError::Tls { .. }) => SOURCE_TLS,
        ProcessFileError::Source(e) if e.class() == ErrorClass::Internal => INTERNAL,
        ProcessFileError::Source(_) | ProcessFileError::LengthMismatch { .. } => SOURCE,
        ProcessFileError::Storage(StorageError::AlreadyExists { .. }) => DESTINATION_EXISTS,
        ProcessFileError::Storage(e) if e.class() == ErrorClass::Internal => INTERNAL,
        ProcessFileError::Storage(_) => STORAGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_domain::ChecksumAlgorithm;

    #[test]
    fn codes_are_distinct_per_outcome() {
        let mismatch = ProcessFileError::ChecksumMismatch {
            algorithm: ChecksumAlgorithm::Sha256,
            expected: "a".into(),
            actual: "b".into(),
        };
        let limit = ProcessFileError::LimitExceeded {
            limit: ferry_domain::ByteSize::new(1),
        };
        // The README's table, in its order.
        let codes = [
            OK,
            INTERNAL,
            USAGE,
            CHECKSUM_MISMATCH,
            SIZE_LIMIT,
            SOURCE,
            STORAGE,
            JOB_WITH_ERRORS,
            JOB_FAILED,
            SERVER,
            SOURCE_TLS,
            DESTINATION_EXISTS,
            INTERRUPTED,
        ];
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 130]);
        let mut sorted = codes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), codes.len());
        assert_eq!(for_error(&mismatch), CHECKSUM_MISMATCH);
        assert_eq!(for_error(&limit), SIZE_LIMIT);
        let gave_up = ProcessFileError::Source(ferry_domain::ports::DownloadError::Status {
            url: "http://h/x".into(),
            status: 503,
            exhausted: true,
        });
        assert_eq!(for_error(&gave_up), SOURCE);
        let untrusted = ProcessFileError::Source(ferry_domain::ports::DownloadError::Tls {
            url: "https://h/x".into(),
            reason: "invalid peer certificate: UnknownIssuer".into(),
        });
        assert_eq!(for_error(&untrusted), SOURCE_TLS);
        assert!(!untrusted.class().is_retryable());
        let bug = ProcessFileError::Storage(ferry_domain::ports::StorageError::Unexpected {
            location: "x".into(),
            source: "bug".into(),
        });
        assert_eq!(for_error(&bug), INTERNAL);
        let budget = ProcessFileError::Storage(ferry_domain::ports::StorageError::MemoryBudget {
            location: "x".into(),
            reason: "r".into(),
        });
        assert_eq!(for_error(&budget), STORAGE);
    }
}
