//! Routes a download to the HTTP client or the local-file reader by scheme.

use std::sync::Arc;

use async_trait::async_trait;
use ferry_domain::SourceScheme;
use ferry_domain::ports::{Download, DownloadError, DownloadRequest, HttpDownloadPort};

/// `HttpDownloadPort` that dispatches on the source's scheme.
pub struct SourceRouter {
    http: Arc<dyn HttpDownloadPort>,
    file: Option<Arc<dyn HttpDownloadPort>>,
    stdin: Option<Arc<dyn HttpDownloadPort>>,
    s3: Option<Arc<dyn HttpDownloadPort>>,
}

impl std::fmt::Debug for SourceRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceRouter")
            .field("file_enabled", &self.file.is_some())
            .field("stdin_enabled", &self.stdin.is_some())
            .field("s3_enabled", &self.s3.is_some())
            .finish_non_exhaustive()
    }
}

impl SourceRouter {
    /// `file` is `None` where local files must not be readable (the API).
    pub fn new(http: Arc<dyn HttpDownloadPort>, file: Option<Arc<dyn HttpDownloadPort>>) -> Self {
        Self {
            http,
            file,
            stdin: None,
            s3: None,
        }
    }

    /// Reads `s3://` sources with `s3` (the CLI only).
    pub fn with_s3(mut self, s3: Arc<dyn HttpDownloadPort>) -> Self {
        self.s3 = Some(s3);
        self
    }

    /// Reads `-` (standard input) with `stdin` (the CLI only).
    pub fn with_stdin(mut self, stdin: Arc<dyn HttpDownloadPort>) -> Self {
        self.stdin = Some(stdin);
        self
    }
}

#[async_trait]
impl HttpDownloadPort for SourceRouter {
    async fn open(&self, request: DownloadRequest) -> Result<Download, DownloadError> {
        match request.source.scheme() {
            SourceScheme::Http | SourceScheme::Https => self.http.open(request).await,
            SourceScheme::File => match &self.file {
                Some(file) => file.open(request).await,
                None => Err(DownloadError::Forbidden {
                    url: request.source.redacted(),
                    reason: "file:// sources are disabled here".into(),
                }),
            },
            SourceScheme::S3 => match &self.s3 {
                Some(s3) => s3.open(request).await,
                None => Err(DownloadError::Forbidden {
                    url: request.source.redacted(),
                    reason: "s3:// sources are read by ferry copy only".into(),
                }),
            },
            SourceScheme::Stdin => match &self.stdin {
                Some(stdin) => stdin.open(request).await,
                None => Err(DownloadError::Forbidden {
                    url: request.source.redacted(),
                    reason: "standard input is only a source for ferry copy".into(),
                }),
            },
        }
    }

    /// Only S3 objects declare a digest (their `sha256` metadata).
    async fn declared_sha256(
        &self,
        source: &ferry_domain::SourceUrl,
    ) -> Result<Option<ferry_domain::Checksum>, DownloadError> {
        match (source.scheme(), &self.s3) {
            (SourceScheme::S3, Some(s3)) => s3.declared_sha256(source).await,
            _ => Ok(None),
        }
    }
}
