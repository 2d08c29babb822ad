//! `-` on the command line: standard input as a source and standard output
//! as a destination (`ferry copy - DEST`, `ferry copy SOURCE -`).
//!
//! Standard input is read once, with no length and no ranges: a transfer
//! from it cannot resume or be retried from zero. Standard output cannot
//! take bytes back: what was written stays written, so a failed check
//! after the last byte is reported (exit 3) but not undone, as with curl.
//! Within one transfer, a source interrupted mid-body continues at the
//! exact offset already written (bytes on stdout are "durable"); a second
//! transfer to the same stdout after bytes went out is refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use ferry_domain::ObjectKey;
use ferry_domain::ports::{
    CommitInfo, Download, DownloadError, DownloadRequest, FileStoragePort, HttpDownloadPort,
    ObjectMeta, SourceMeta, StagedWrite, StorageError, StoredObject, WriteRequest,
};
use ferry_domain::stream::ByteStream;

/// Read buffer for standard input.
const READ_CHUNK: usize = 256 * 1024;

/// Where `-` is shown in messages and results.
pub const STDOUT_LOCATION: &str = "-";

/// `HttpDownloadPort` for `stdin` sources: one read of standard input.
#[derive(Debug, Default)]
pub struct StdinSource {
    opened: AtomicBool,
}

impl StdinSource {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl HttpDownloadPort for StdinSource {
    async fn open(&self, request: DownloadRequest) -> Result<Download, DownloadError> {
        let url = request.source.redacted();
        if request.offset > 0 || self.opened.swap(true, Ordering::SeqCst) {
            return Err(DownloadError::Forbidden {
                url,
                reason: "standard input can be read only once: a copy from - cannot resume or start again".into(),
            });
        }
        let body = ReaderStream::with_capacity(tokio::io::stdin(), READ_CHUNK).map(move |r| {
            r.map_err(|e| DownloadError::Interrupted {
                url: "stdin".into(),
                reason: e.to_string(),
            })
        });
        Ok(Download {
            meta: SourceMeta {
                total_length: None,
                offset: 0,
                etag: None,
                last_modified: None,
                accepts_ranges: false,
                final_url: request.source,
                declared_sha256: None,
                content_disposition: None,
                content_type: None,
            },
            body: Box::pin(body),
        })
    }
}

/// `FileStoragePort` writing to standard output.
#[derive(Debug, Default, Clone)]
pub struct StdoutStorage {
    /// Bytes written to stdout by any write of this process.
    written: Arc<AtomicU64>,
}

impl StdoutStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn unsupported(what: &str) -> StorageError {
        StorageError::InvalidDestination {
            location: STDOUT_LOCATION.into(),
            reason: format!("standard output cannot {what}"),
        }
    }
}

#[async_trait]
impl FileStoragePort for StdoutStorage {
    fn location(&self, _key: &ObjectKey) -> String {
        STDOUT_LOCATION.into()
    }

    async fn begin_write(
        &self,
        _request: WriteRequest,
    ) -> Result<Box<dyn StagedWrite>, StorageError> {
        let already = self.written.load(Ordering::SeqCst);
        if already > 0 {
            return Err(StorageError::InvalidDestination {
                location: STDOUT_LOCATION.into(),
                reason: format!(
                    "{already} bytes already went to standard output; a copy to - cannot start again"
                ),
            });
        }
        Ok(Box::new(StdoutWrite {
            out: tokio::io::stdout(),
            written: 0,
            total: self.written.clone(),
        }))
    }

    async fn read(&self, _key: &ObjectKey) -> Result<ByteStream<StorageError>, StorageError> {
        Err(Self::unsupported("be read back"))
    }

    async fn delete(&self, _key: &ObjectKey) -> Result<(), StorageError> {
        Err(Self::unsupported("delete what it was given"))
    }

    async fn metadata(&self, _key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        Ok(None)
    }
}

struct StdoutWrite {
    out: tokio::io::Stdout,
    written: u64,
    total: Arc<AtomicU64>,
}

fn io_error(e: &std::io::Error) -> StorageError {
    StorageError::InvalidDestination {
        location: STDOUT_LOCATION.into(),
        reason: format!("writing to standard output failed: {e}"),
    }
}

#[async_trait]
impl StagedWrite for StdoutWrite {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        self.out.write_all(&chunk).await.map_err(|e| io_error(&e))?;
        let n = chunk.len() as u64;
        self.written += n;
        self.total.fetch_add(n, Ordering::SeqCst);
        Ok(())
    }

    /// Everything written is on stdout for good.
    fn durable_offset(&self) -> u64 {
        self.written
    }

    async fn rewind(&mut self, offset: u64) -> Result<(), StorageError> {
        if offset == self.written {
            Ok(())
        } else {
            Err(StdoutStorage::unsupported("take back bytes it was given"))
        }
    }

    async fn commit(mut self: Box<Self>, info: CommitInfo) -> Result<StoredObject, StorageError> {
        self.out.flush().await.map_err(|e| io_error(&e))?;
        let key = ObjectKey::parse("stdout").map_err(|e| StorageError::Unexpected {
            location: STDOUT_LOCATION.into(),
            source: Box::new(e),
        })?;
        Ok(StoredObject {
            key,
            size: info.size,
            location: STDOUT_LOCATION.into(),
        })
    }

    /// What was written stays written; only the rest is not sent.
    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        self.out.flush().await.map_err(|e| io_error(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stdout_refuses_a_second_start_and_any_rewind_backwards() {
        let storage = StdoutStorage::new();
        let key = ObjectKey::parse("k").unwrap();
        let mut w = storage
            .begin_write(WriteRequest::new(key.clone(), None))
            .await
            .unwrap();
        w.write(Bytes::from_static(b"")).await.unwrap();
        // Nothing written yet: a new start is fine.
        assert!(
            storage
                .begin_write(WriteRequest::new(key.clone(), None))
                .await
                .is_ok()
        );
        w.write(Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(w.durable_offset(), 1);
        assert!(w.rewind(1).await.is_ok());
        assert!(w.rewind(0).await.is_err());
        let again = storage.begin_write(WriteRequest::new(key, None)).await;
        assert!(matches!(
            again,
            Err(StorageError::InvalidDestination { .. })
        ));
    }

    #[tokio::test]
    async fn stdin_is_read_once_and_never_from_an_offset() {
        let source = StdinSource::new();
        let stdin = ferry_domain::SourceUrl::stdin().unwrap();
        let ranged = DownloadRequest {
            offset: 5,
            ..DownloadRequest::whole(stdin.clone())
        };
        assert!(matches!(
            source.open(ranged).await,
            Err(DownloadError::Forbidden { .. })
        ));
    }
}
