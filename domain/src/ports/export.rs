//! Starting and polling exports at a provider: `ExportProviderPort`.

use async_trait::async_trait;
use thiserror::Error;

use crate::error::{BoxError, ErrorClass};
use crate::export::ExportSpec;
use crate::job::JobId;
use crate::source::SourceUrl;

/// One file of a provider's manifest, as the provider wrote it; the
/// application validates it exactly like a file of a submitted job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ManifestEntry {
    pub source: String,
    pub key: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub md5: Option<String>,
    /// Request headers for the source (secret values); none from providers.
    pub headers: crate::headers::RequestedHeaders,
    /// The object's attributes, over the job's.
    pub attributes: crate::attributes::RequestedAttributes,
}

/// What a poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportPoll {
    /// Not ready yet; poll again later.
    Pending,
    /// Ready: the files to download.
    Ready(Vec<ManifestEntry>),
    /// The provider gave up, with its reason.
    Failed(String),
}

/// Why talking to the provider failed.
#[derive(Debug, Error)]
pub enum ExportProviderError {
    /// The provider refused the request (4xx other than 408/429): asking
    /// again cannot help.
    #[error("the export provider refused the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    /// The provider could not be reached or answered 5xx/408/429.
    #[error("the export provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider answered something that is not the protocol.
    #[error("the export provider's answer is not valid: {0}")]
    BadResponse(String),
    /// The provider's address is one ferry may not connect to (the SSRF
    /// guard).
    #[error("the export provider's URL is not allowed: {0}")]
    Forbidden(String),
    #[error("unexpected export provider error: {0}")]
    Unexpected(#[source] BoxError),
}

impl ExportProviderError {
    pub fn class(&self) -> ErrorClass {
        match self {
            ExportProviderError::Rejected { .. }
            | ExportProviderError::BadResponse(_)
            | ExportProviderError::Forbidden(_) => ErrorClass::Client,
            ExportProviderError::Unavailable(_) => ErrorClass::Transient,
            ExportProviderError::Unexpected(_) => ErrorClass::Internal,
        }
    }
}

/// A provider that prepares exports.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ExportProviderPort: Send + Sync + 'static {
    /// Starts the export for `job` (idempotent per job id at the provider);
    /// returns where to poll.
    async fn start(&self, job: &JobId, spec: &ExportSpec)
    -> Result<SourceUrl, ExportProviderError>;
    /// Asks how the export is doing.
    async fn poll(&self, status_url: &SourceUrl) -> Result<ExportPoll, ExportProviderError>;
}
