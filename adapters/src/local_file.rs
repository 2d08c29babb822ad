//! `file://` sources: a local file read in chunks, with seek for offsets.

use std::io::{ErrorKind, SeekFrom};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::AsyncSeekExt;
use tokio_util::io::ReaderStream;

use ferry_domain::ports::{
    Download, DownloadError, DownloadRequest, HttpDownloadPort, SourceMeta, Validator,
};

/// Read buffer for local files.
const READ_CHUNK: usize = 256 * 1024;

/// Reads `file://` sources, anywhere (the CLI) or confined to a root
/// directory (the API, with `--file-root`).
#[derive(Debug, Default, Clone)]
pub struct LocalFileSource {
    /// Canonical root every file must be under, symlinks resolved.
    root: Option<PathBuf>,
}

impl LocalFileSource {
    pub fn new() -> Self {
        Self { root: None }
    }

    /// Only files under `root` (after resolving symlinks) can be read.
    pub fn confined(root: &Path) -> std::io::Result<Self> {
        Ok(Self {
            root: Some(std::fs::canonicalize(root)?),
        })
    }
}

/// Where an open file really is: the kernel's view of the descriptor (so a
/// symlink swapped after the check cannot redirect the read), or the
/// canonical path where /proc is not available.
fn real_path(file: &tokio::fs::File, path: &Path) -> std::io::Result<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let Ok(p) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            return Ok(p);
        }
    }
    let _ = file;
    std::fs::canonicalize(path)
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
        if let Some(root) = &self.root {
            let real = real_path(&file, &path).map_err(|e| io_error(&url, e))?;
            if !real.starts_with(root) {
                return Err(DownloadError::Forbidden {
                    url,
                    reason:
                        "it is outside the directory file:// sources are confined to (--file-root)"
                            .into(),
                });
            }
        }
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
                declared_sha256: None,
                content_disposition: None,
                content_type: None,
            },
            body: Box::pin(body),
        })
    }
}
