//! `file://` sources: a local file read in chunks, with seek for offsets.

use std::io::{ErrorKind, SeekFrom};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::AsyncSeekExt;
use tokio_util::io::ReaderStream;

use ferry_domain::ports::{
    Download, DownloadError, DownloadRequest, HttpDownloadPort, SourceMeta, Validator,
};

/// Read buffer for local files.
const READ_CHUNK: usize = 256 * 1024;

/// Reads `file://` sources.
#[derive(Debug, Default, Clone)]
pub struct LocalFileSource;

impl LocalFileSource {
    pub fn new() -> Self {
        Self
    }
}

fn io_error(url: &str, e: std::io::Error) -> DownloadError {
    match e.kind() {
        ErrorKind::NotFound => DownloadError::NotFound {
            url: url.to_owned(),
        },
        ErrorKind::PermissionDenied => DownloadError::PermissionDenied {
            url: url.to_owned(),
        },
        _ => DownloadError::Unexpected {
            url: url.to_owned(),
            source: Box::new(e),
        },
    }
}

#[async_trait]
impl HttpDownloadPort for LocalFileSource {
    async fn open(&self, request: DownloadRequest) -> Result<Download, DownloadError> {
        let url = request.source.redacted();
        let path = request
            .source
            .file_path()
            .ok_or_else(|| DownloadError::Forbidden {
                url: url.clone(),
                reason: "not a file:// source".into(),
            })?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_error(&url, e))?;
        let md = file.metadata().await.map_err(|e| io_error(&url, e))?;
        if !md.is_file() {
            return Err(DownloadError::Forbidden {
                url,
                reason: "it is not a regular file".into(),
            });
        }
        let len = md.len();
        let last_modified = md.modified().ok().map(httpdate::fmt_http_date);
        // A resumed read only continues if the file is unchanged.
        let unchanged = match &request.if_range {
            Some(Validator::LastModified(lm)) => last_modified.as_deref() == Some(lm.as_str()),
            Some(Validator::ETag(_)) => false,
            None => true,
        };
        let offset = if unchanged && request.offset <= len {
            request.offset
        } else {
            0
        };
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))
                .await
                .map_err(|e| io_error(&url, e))?;
        }
        let body_url = url.clone();
        let body = ReaderStream::with_capacity(file, READ_CHUNK)
            .map(move |r| r.map_err(|e| io_error(&body_url, e)));
        Ok(Download {
            meta: SourceMeta {
                total_length: Some(len),
                offset,
                etag: None,
                last_modified,
                accepts_ranges: true,
                final_url: request.source.clone(),
            },
            body: Box::pin(body),
        })
    }
}
