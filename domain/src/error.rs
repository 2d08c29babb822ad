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
    }
}
