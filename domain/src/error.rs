//! The classification every port error maps into, so that retry policy reads
//! a kind and never parses a message.

use std::fmt;

/// What kind of failure happened, and therefore what a caller may do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Network reset, timeout, stall, 5xx, 429/SlowDown: the same request may
    /// succeed later.
    Transient,
    /// The source's content changed (ETag/Last-Modified/length differ): the
    /// transfer must restart from zero.
    SourceChanged,
    /// The request itself is wrong (4xx, bad checksum, size limit, bad key):
    /// retrying the same thing cannot help.
    Client,
    /// The destination refused for a lasting reason (full, permission).
    Storage,
    /// Somebody asked for the work to stop.
    Cancelled,
    /// A bug or an unclassified failure.
    Internal,
}

impl ErrorClass {
    /// Whether retrying the same operation can help.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Transient)
    }

    /// A stable snake_case name, used in JSON output, events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::SourceChanged => "source_changed",
            ErrorClass::Client => "client",
            ErrorClass::Storage => "storage",
            ErrorClass::Cancelled => "cancelled",
            ErrorClass::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a file failed, as a stable code: what scripts, JSON output, events
/// and the API carry (`code`). One variant per business case of
/// `ProcessFileError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The source's address is not allowed (SSRF guard).
    SourceForbidden,
    /// TLS with the source failed (an untrusted certificate).
    SourceTls,
    /// The source failed: network, HTTP status, cut short, changed.
    SourceError,
    /// The destination failed.
    StorageError,
    /// The key exists and overwriting was refused (`--no-clobber`).
    DestinationExists,
    /// Over the size limit.
    SizeLimitExceeded,
    /// The body's length differs from the declared one.
    LengthMismatch,
    /// The size differs from the expected one.
    SizeMismatch,
    ChecksumMismatch,
    /// Anything else (a bug).
    Internal,
}

impl ErrorCode {
    const ALL: [ErrorCode; 10] = [
        ErrorCode::DestinationExists,
        ErrorCode::SourceForbidden,
        ErrorCode::SourceTls,
        ErrorCode::SourceError,
        ErrorCode::StorageError,
        ErrorCode::SizeLimitExceeded,
        ErrorCode::LengthMismatch,
        ErrorCode::SizeMismatch,
        ErrorCode::ChecksumMismatch,
        ErrorCode::Internal,
    ];

    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::SourceForbidden => "source_forbidden",
            ErrorCode::SourceTls => "source_tls",
            ErrorCode::SourceError => "source_error",
            ErrorCode::StorageError => "storage_error",
            ErrorCode::DestinationExists => "destination_exists",
            ErrorCode::SizeLimitExceeded => "size_limit_exceeded",
            ErrorCode::LengthMismatch => "length_mismatch",
            ErrorCode::SizeMismatch => "size_mismatch",
            ErrorCode::ChecksumMismatch => "checksum_mismatch",
            ErrorCode::Internal => "internal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for ErrorCode {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl ErrorClass {
    const ALL: [ErrorClass; 6] = [
        ErrorClass::Transient,
        ErrorClass::SourceChanged,
        ErrorClass::Client,
        ErrorClass::Storage,
        ErrorClass::Cancelled,
        ErrorClass::Internal,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A boxed error source, kept so that the cause is never lost.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_is_retryable() {
        let all = [
            ErrorClass::Transient,
            ErrorClass::SourceChanged,
            ErrorClass::Client,
            ErrorClass::Storage,
            ErrorClass::Cancelled,
            ErrorClass::Internal,
        ];
        let retryable: Vec<_> = all.iter().filter(|c| c.is_retryable()).collect();
        assert_eq!(retryable, vec![&ErrorClass::Transient]);
        assert_eq!(ErrorClass::SourceChanged.to_string(), "source_changed");
        for c in all {
            assert_eq!(ErrorClass::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorClass::parse("nope"), None);
    }

    #[test]
    fn codes_round_trip_and_compare_with_text() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::ChecksumMismatch, "checksum_mismatch");
        assert_eq!(ErrorCode::parse("nope"), None);
    }
}
