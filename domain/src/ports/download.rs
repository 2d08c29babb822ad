//! Reading a source: `HttpDownloadPort`.

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

use crate::checksum::Checksum;
use crate::error::{BoxError, ErrorClass};
use crate::headers::SourceHeaders;
use crate::source::SourceUrl;
use crate::stream::ByteStream;

/// A validator for a conditional range request (sent as `If-Range`), so a
/// resumed read fails over to the full body if the source changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validator {
    ETag(String),
    LastModified(String),
}

/// What to read.
#[derive(Debug, Clone)]
pub struct DownloadRequest {
    pub source: SourceUrl,
    /// First byte wanted; 0 reads the whole resource.
    pub offset: u64,
    /// Sent with a non-zero offset so the source answers with the whole body
    /// (offset 0 in [`SourceMeta`]) if it changed.
    pub if_range: Option<Validator>,
    /// Added to the request; secret; sent only to the URL's own origin.
    pub headers: SourceHeaders,
}

impl DownloadRequest {
    pub fn whole(source: SourceUrl) -> Self {
        Self {
            source,
            offset: 0,
            if_range: None,
            headers: SourceHeaders::default(),
        }
    }
}

/// What the source said about the resource before its body was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMeta {
    /// Total length of the resource, when known (not only of this body).
    pub total_length: Option<u64>,
    /// The offset the body starts at. It is 0 when a range was asked for but
    /// the source sent the whole resource.
    pub offset: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub accepts_ranges: bool,
    /// The URL finally read, after redirects.
    pub final_url: SourceUrl,
    /// The SHA-256 the source itself declares (an S3 object's `sha256`
    /// metadata): checked like an expected digest when the caller gives
    /// none.
    pub declared_sha256: Option<Checksum>,
    /// The `Content-Disposition` header, as sent (for `--name-from`).
    pub content_disposition: Option<String>,
    /// The `Content-Type` the source declares (kept on the object).
    pub content_type: Option<String>,
}

impl SourceMeta {
    /// Bytes the body should carry, when known.
    pub fn body_length(&self) -> Option<u64> {
        self.total_length.map(|t| t.saturating_sub(self.offset))
    }

    /// The best validator to resume this resource with.
    pub fn validator(&self) -> Option<Validator> {
        Validator::best(self.etag.as_deref(), self.last_modified.as_deref())
    }

    /// The source can serve any range again and tell whether it changed:
    /// what in-flight resume and checkpoints need.
    pub fn is_replayable(&self) -> bool {
        self.accepts_ranges && self.total_length.is_some() && self.validator().is_some()
    }
}

impl Validator {
    /// The validator to send as `If-Range`: a strong ETag, else
    /// Last-Modified (weak ETags cannot be used with If-Range).
    pub fn best(etag: Option<&str>, last_modified: Option<&str>) -> Option<Self> {
        match (etag, last_modified) {
            (Some(etag), _) if !etag.starts_with("W/") => Some(Validator::ETag(etag.to_owned())),
            (_, Some(lm)) => Some(Validator::LastModified(lm.to_owned())),
            _ => None,
        }
    }
}

/// An open source: its metadata and its body.
pub struct Download {
    pub meta: SourceMeta,
    pub body: ByteStream<DownloadError>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// Why a source could not be read. URLs in these errors are redacted.
#[derive(Debug, Error)]
pub enum DownloadError {
    /// `exhausted`: the adapter already retried this request as the retry
    /// policy allows; retrying it again would stack a second loop.
    #[error("the source {url} answered HTTP {status}{}{}", retry_hint(*.status), gave_up(*.exhausted))]
    Status {
        url: String,
        status: u16,
        exhausted: bool,
    },
    #[error("could not connect to the source {url}: {reason}{}", gave_up(*.exhausted))]
    Connect {
        url: String,
        reason: String,
        exhausted: bool,
    },
    /// TLS with the source failed: its certificate is not trusted (a
    /// private CA, a self-signed or expired certificate, a wrong name) or
    /// the handshake failed. Not transient: the same attempt fails again.
    #[error(
        "TLS with the source {url} failed: {reason}; if its certificate comes from a private CA, pass --ca-cert FILE (PEM) or set SSL_CERT_FILE"
    )]
    Tls { url: String, reason: String },
    #[error("the source {url} sent no data for {} s; it may be overloaded or the connection stalled", .idle.as_secs())]
    Stalled { url: String, idle: Duration },
    /// The body came slower than the minimum rate over a whole window.
    #[error("the source {url} sent {bytes} bytes in {} s, below the minimum rate of {min_bytes_per_sec} bytes/s; it is too slow (the attempt is retried)", .window.as_secs())]
    TooSlow {
        url: String,
        bytes: u64,
        window: Duration,
        min_bytes_per_sec: u64,
    },
    #[error("the connection to the source {url} broke during the body: {reason}")]
    Interrupted { url: String, reason: String },
    #[error("the source {url} redirected more than {max} times")]
    TooManyRedirects { url: String, max: usize },
    #[error("the source {url} does not exist")]
    NotFound { url: String },
    #[error("the source {url} cannot be read: permission denied")]
    PermissionDenied { url: String },
    #[error("the source {url} is not allowed: {reason}")]
    Forbidden { url: String, reason: String },
    #[error(
        "the source {url} changed while it was being read ({detail}); the transfer restarts from zero"
    )]
    SourceChanged { url: String, detail: String },
    #[error("unexpected error reading the source {url}: {source}")]
    Unexpected {
        url: String,
        #[source]
        source: BoxError,
    },
}

fn retry_hint(status: u16) -> &'static str {
    match status {
        404 => " (not found): check the URL",
        401 | 403 => " (access denied): check the URL's credentials or signature",
        416 => " (range not satisfiable)",
        429 => " (too many requests)",
        500..=599 => " (server error)",
        _ => "",
    }
}

fn gave_up(exhausted: bool) -> &'static str {
    if exhausted {
        " (gave up after the retries allowed)"
    } else {
        ""
    }
}

impl DownloadError {
    pub fn class(&self) -> ErrorClass {
        match self {
            DownloadError::Status { status, .. } => crate::retry::class_of_status(*status),
            DownloadError::Connect { .. }
            | DownloadError::Stalled { .. }
            | DownloadError::TooSlow { .. }
            | DownloadError::Interrupted { .. } => ErrorClass::Transient,
            DownloadError::TooManyRedirects { .. }
            | DownloadError::NotFound { .. }
            | DownloadError::PermissionDenied { .. }
            | DownloadError::Forbidden { .. }
            | DownloadError::Tls { .. } => ErrorClass::Client,
            DownloadError::SourceChanged { .. } => ErrorClass::SourceChanged,
            DownloadError::Unexpected { .. } => ErrorClass::Internal,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.class().is_retryable()
    }

    /// The adapter already retried this failure as far as the retry policy
    /// allows: the caller must not retry it again.
    pub fn is_exhausted(&self) -> bool {
        matches!(
            self,
            DownloadError::Status {
                exhausted: true,
                ..
            } | DownloadError::Connect {
                exhausted: true,
                ..
            }
        )
    }
}

/// Opens a source for streaming. Implemented by the pooled HTTP client and by
/// the local-file reader.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait HttpDownloadPort: Send + Sync + 'static {
    /// Opens the source. Non-success answers fail here, before any body byte.
    async fn open(&self, request: DownloadRequest) -> Result<Download, DownloadError>;

    /// The SHA-256 the source declares for its content, asked without
    /// reading the body (an S3 object's `sha256` metadata, by HeadObject);
    /// `None` when the source declares none or cannot say without a body.
    async fn declared_sha256(
        &self,
        _source: &crate::source::SourceUrl,
    ) -> Result<Option<crate::checksum::Checksum>, DownloadError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        let s = |status| DownloadError::Status {
            url: "http://h/x".into(),
            status,
            exhausted: false,
        };
        assert!(s(503).is_retryable());
        assert!(s(429).is_retryable());
        assert!(!s(404).is_retryable());
        assert!(!s(403).is_retryable());
        assert!(s(404).to_string().contains("HTTP 404 (not found)"));
        let gave_up = DownloadError::Status {
            url: "http://h/x".into(),
            status: 503,
            exhausted: true,
        };
        assert!(gave_up.is_exhausted() && gave_up.is_retryable());
        assert!(gave_up.to_string().contains("gave up"), "{gave_up}");
        assert!(!s(503).is_exhausted());
    }

    #[test]
    fn validator_prefers_strong_etag() {
        let meta = |etag: Option<&str>, lm: Option<&str>| SourceMeta {
            total_length: Some(10),
            offset: 4,
            etag: etag.map(str::to_owned),
            last_modified: lm.map(str::to_owned),
            accepts_ranges: true,
            final_url: SourceUrl::parse("http://h/x").unwrap(),
            declared_sha256: None,
            content_disposition: None,
            content_type: None,
        };
        assert_eq!(
            meta(Some("\"e1\""), Some("d")).validator(),
            Some(Validator::ETag("\"e1\"".into()))
        );
        assert_eq!(
            meta(Some("W/\"e1\""), Some("d")).validator(),
            Some(Validator::LastModified("d".into()))
        );
        assert_eq!(meta(None, None).validator(), None);
        assert_eq!(meta(None, None).body_length(), Some(6));
    }
}
