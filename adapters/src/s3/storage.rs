//! `FileStoragePort` on one S3 bucket and prefix.
//!
//! Three write modes, chosen per write:
//! - **streamed single PUT**: known length below `multipart_threshold` and a
//!   replayable source. The body streams as it arrives, but the last chunk
//!   is withheld until `commit`, so the object cannot land before ferry has
//!   verified the whole file.
//! - **streamed multipart**: known length at or above the threshold and a
//!   replayable source. Each part's body is fed from the source as it
//!   arrives (no part is buffered); its MD5 is computed in flight and
//!   checked against the returned ETag. A failed part makes `write` return a
//!   transient error with the durable offset at the last completed part: the
//!   use case rewinds and re-reads exactly that part's range from the source.
//!   CompleteMultipartUpload runs only in `commit`, after verification.
//! - **buffered**: unknown length or a source that cannot serve ranges. One
//!   part at a time is held in memory (so a part can be retried by the SDK
//!   without the source), uploaded when full; a file smaller than one part
//!   is a single PutObject at commit.
//!
//! User metadata `sha256`/`md5` (x-amz-meta-*) is set when the upload starts
//! if the caller's expected digests are known then (they are verified before
//! commit); otherwise it is attached right after commit by a server-side
//! self-copy (the object is complete and verified either way).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::body::SdkBody;
use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use ferry_domain::ports::{
    CommitInfo, FileStoragePort, ObjectMeta, StagedWrite, StorageError, StoredObject, WriteRequest,
};
use ferry_domain::stream::ByteStream;
use ferry_domain::{Checksum, ObjectKey, StagedState};

use super::staged::{MultipartState, PartRecord};

use super::body::channel_body;
use super::errors::map_sdk_error;
use super::service::{S3Service, s3_location};
use crate::killpoint::kill_point;
use crate::memory::{MemoryBudget, MemoryGrant};

const MIB: u64 = 1024 * 1024;
/// S3's smallest part (except the last) and largest part count.
const MIN_PART: u64 = 5 * MIB;
const MAX_PARTS: u64 = 10_000;

/// Upload tuning.
#[derive(Debug, Clone)]
pub struct S3StorageConfig {
    /// Part size; raised so no file needs more than 10,000 parts, never
    /// below 5 MiB, rounded up to a whole MiB.
    pub part_size: u64,
    /// Files at least this large use multipart upload.
    pub multipart_threshold: u64,
    /// Compare each part's in-flight MD5 with the ETag the server returns.
    pub verify_part_etags: bool,
    /// Chunks that may wait between the source and a part's request.
    pub channel_depth: usize,
    /// Where buffered parts (unknown length, no ranges) take their memory
    /// from; `None` leaves them unbounded.
    pub memory: Option<MemoryBudget>,
}

impl Default for S3StorageConfig {
    fn default() -> Self {
        Self {
            part_size: 8 * MIB,
            multipart_threshold: 8 * MIB,
            verify_part_etags: true,
            channel_depth: 2,
            memory: None,
        }
    }
}

/// The part size for a file of `total` bytes.
pub fn part_size_for(total: u64, configured: u64) -> u64 {
    let size = configured.max(MIN_PART).max(total.div_ceil(MAX_PARTS));
    size.div_ceil(MIB) * MIB
}

/// Storage in one bucket under one prefix.
#[derive(Debug, Clone)]
pub struct S3Storage {
    service: S3Service,
    bucket: String,
    prefix: String,
    config: S3StorageConfig,
}

impl S3Storage {
    pub fn new(
        service: S3Service,
        bucket: impl Into<String>,
        prefix: &str,
        config: S3StorageConfig,
    ) -> Self {
        Self {
            service,
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').to_owned(),
            config,
        }
    }

    pub fn service(&self) -> &S3Service {
        &self.service
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The full S3 key of `key`.
    pub fn full_key(&self, key: &ObjectKey) -> String {
        if self.prefix.is_empty() {
            key.as_str().to_owned()
        } else {
            format!("{}/{}", self.prefix, key)
        }
    }
}

fn metadata_of(sha256: Option<&str>, md5: Option<&str>) -> HashMap<String, String> {
    let mut m = HashMap::new();
    if let Some(s) = sha256 {
        m.insert("sha256".to_owned(), s.to_owned());
    }
    if let Some(s) = md5 {
        m.insert("md5".to_owned(), s.to_owned());
    }
    m
}

/// Whether an ETag is the MD5 `md5` (a single-part object's or part's).
fn etag_matches(etag: &str, md5: &[u8]) -> bool {
    same_etag(etag, &hex::encode(md5))
}

type Sender = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// A part whose body is being streamed.
struct InFlightPart {
    number: i32,
    len: u64,
    sent: u64,
    tx: Option<Sender>,
    task: JoinHandle<Result<Option<String>, StorageError>>,
    md5: Md5,
}

enum Mode {
    Single {
        tx: Option<Sender>,
        task: Option<JoinHandle<Result<Option<String>, StorageError>>>,
        held: Option<Bytes>,
        md5: Md5,
    },
    Multipart {
        part_size: u64,
        current: Option<InFlightPart>,
    },
    Buffered {
        part_size: u64,
        buf: BytesMut,
        /// The memory budget's share for `buf`, held while it fills.
        grant: Option<MemoryGrant>,
    },
}

struct S3Write {
    service: S3Service,
    bucket: String,
    key: String,
    object_key: ObjectKey,
    size: Option<u64>,
    written: u64,
    durable: u64,
    create_metadata: HashMap<String, String>,
    verify_etags: bool,
    depth: usize,
    memory: Option<MemoryBudget>,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    mode: Mode,
    finished: bool,
    /// Parts named in the last checkpoint (`None`: the upload was not
    /// checkpointed yet).
    reported_parts: Option<usize>,
}

impl S3Write {
    fn location(&self) -> String {
        s3_location(&self.bucket, &self.key)
    }

    fn unexpected(&self, what: String) -> StorageError {
        StorageError::Unexpected {
            location: self.location(),
            source: what.into(),
        }
    }

    async fn ensure_upload(&mut self) -> Result<String, StorageError> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let out = self
            .service
            .client()
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_metadata(Some(self.create_metadata.clone()))
            .send()
            .await
            .map_err(|e| map_sdk_error(&self.location(), e))?;
        let id = out
            .upload_id
            .ok_or_else(|| self.unexpected("CreateMultipartUpload returned no upload id".into()))?;
        debug!(location = %self.location(), "multipart upload created");
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    fn spawn_part(
        &self,
        upload_id: String,
        number: i32,
        len: u64,
    ) -> (Sender, JoinHandle<Result<Option<String>, StorageError>>) {
        let (tx, body) = channel_body(len, self.depth);
        let client = self.service.client().clone();
        let (bucket, key, location) = (self.bucket.clone(), self.key.clone(), self.location());
        let task = tokio::spawn(async move {
            let out = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(i64::try_from(len).unwrap_or(i64::MAX))
                .body(SdkByteStream::new(SdkBody::from_body_1_x(body)))
                .send()
                .await
                .map_err(|e| map_sdk_error(&location, e))?;
            Ok(out.e_tag)
        });
        (tx, task)
    }

    fn check_etag(&self, what: &str, etag: Option<&str>, md5: &[u8]) -> Result<(), StorageError> {
        if !self.verify_etags {
            return Ok(());
        }
        match etag {
            Some(etag) if etag_matches(etag, md5) => Ok(()),
            Some(etag) => Err(StorageError::Unavailable {
                location: self.location(),
                reason: format!(
                    "{what} arrived corrupted: ETag {etag} differs from the MD5 {} ferry sent",
                    hex::encode(md5)
                ),
            }),
            None => Err(self.unexpected(format!("{what} returned no ETag"))),
        }
    }

    async fn start_part(&mut self, part_size: u64) -> Result<InFlightPart, StorageError> {
        let size = self.size.unwrap_or(0);
        let len = part_size.min(size - self.durable);
        let upload_id = self.ensure_upload().await?;
        let number = i32::try_from(self.parts.len() + 1).unwrap_or(i32::MAX);
        let (tx, task) = self.spawn_part(upload_id, number, len);
        Ok(InFlightPart {
            number,
            len,
            sent: 0,
            tx: Some(tx),
            task,
            md5: Md5::new(),
        })
    }

    /// Waits for a part's request, verifies it and records it.
    async fn finish_part(&mut self, mut part: InFlightPart) -> Result<(), StorageError> {
        part.tx = None;
        let etag = match part.task.await {
            Ok(r) => r?,
            Err(e) => return Err(self.unexpected(format!("part task failed: {e}"))),
        };
        let md5 = part.md5.finalize();
        self.check_etag(&format!("part {}", part.number), etag.as_deref(), &md5)?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(part.number)
                .set_e_tag(etag)
                .build(),
        );
        self.durable += part.len;
        Ok(())
    }

    /// Uploads an in-memory part (the SDK may retry it).
    async fn upload_buffered_part(&mut self, data: Bytes) -> Result<(), StorageError> {
        let upload_id = self.ensure_upload().await?;
        let number = i32::try_from(self.parts.len() + 1).unwrap_or(i32::MAX);
        let md5 = if self.verify_etags {
            Md5::digest(&data)
        } else {
            Default::default()
        };
        let len = data.len() as u64;
        let out = self
            .service
            .client()
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .body(SdkByteStream::from(data))
            .send()
            .await
            .map_err(|e| map_sdk_error(&self.location(), e))?;
        self.check_etag(&format!("part {number}"), out.e_tag.as_deref(), &md5)?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag)
                .build(),
        );
        Ok(())
    }

    async fn write_single(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        let size = self.size.unwrap_or(0);
        let new_written = self.written + chunk.len() as u64;
        if new_written > size {
            return Err(self.unexpected(format!("more than the declared {size} bytes")));
        }
        let needs_start = matches!(&self.mode, Mode::Single { task: None, .. });
        if needs_start {
            let (tx, body) = channel_body(size, self.depth);
            let client = self.service.client().clone();
            let (bucket, key, location) = (self.bucket.clone(), self.key.clone(), self.location());
            let metadata = self.create_metadata.clone();
            let task = tokio::spawn(async move {
                let out = client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .content_length(i64::try_from(size).unwrap_or(i64::MAX))
                    .set_metadata(Some(metadata))
                    .body(SdkByteStream::new(SdkBody::from_body_1_x(body)))
                    .send()
                    .await
                    .map_err(|e| map_sdk_error(&location, e))?;
                Ok(out.e_tag)
            });
            if let Mode::Single { tx: t, task: k, .. } = &mut self.mode {
                *t = Some(tx);
                *k = Some(task);
            }
        }
        let Mode::Single { tx, held, md5, .. } = &mut self.mode else {
            return Err(self.unexpected("wrong write mode".into()));
        };
        if self.verify_etags {
            md5.update(&chunk);
        }
        self.written = new_written;
        if new_written == size {
            // The last bytes wait for commit: nothing lands unverified.
            *held = Some(chunk);
            return Ok(());
        }
        let sent = match tx {
            Some(tx) => tx.send(Ok(chunk)).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The request ended early: report why.
        let error = match &mut self.mode {
            Mode::Single {
                task: Some(task), ..
            } => match task.await {
                Ok(Err(e)) => e,
                _ => self.unexpected("the upload request ended early".into()),
            },
            _ => self.unexpected("the upload request ended early".into()),
        };
        self.reset_single();
        Err(error)
    }

    fn reset_single(&mut self) {
        if let Mode::Single {
            tx,
            task,
            held,
            md5,
        } = &mut self.mode
        {
            *tx = None;
            if let Some(t) = task.take() {
                t.abort();
            }
            *held = None;
            *md5 = Md5::new();
        }
        self.written = 0;
    }

    async fn write_multipart(&mut self, mut rest: Bytes) -> Result<(), StorageError> {
        let Mode::Multipart { part_size, .. } = &self.mode else {
            return Err(self.unexpected("wrong write mode".into()));
        };
        let part_size = *part_size;
        if self.written + rest.len() as u64 > self.size.unwrap_or(0) {
            return Err(self.unexpected("more than the declared length".into()));
        }
        while !rest.is_empty() {
            let current = match &mut self.mode {
                Mode::Multipart { current, .. } => current.take(),
                _ => None,
            };
            let mut part = match current {
                Some(p) => p,
                None => self.start_part(part_size).await?,
            };
            let room = part.len - part.sent;
            let piece = if rest.len() as u64 > room {
                rest.split_to(usize::try_from(room).unwrap_or(usize::MAX))
            } else {
                std::mem::take(&mut rest)
            };
            if self.verify_etags {
                part.md5.update(&piece);
            }
            part.sent += piece.len() as u64;
            self.written += piece.len() as u64;
            let sent = match &part.tx {
                Some(tx) => tx.send(Ok(piece)).await.is_ok(),
                None => false,
            };
            if !sent || part.sent == part.len {
                let outcome = self.finish_part(part).await;
                if let Err(e) = outcome {
                    self.written = self.durable;
                    return Err(e);
                }
                if !sent {
                    self.written = self.durable;
                    return Err(self.unexpected("a part request ended early".into()));
                }
            } else if let Mode::Multipart { current, .. } = &mut self.mode {
                *current = Some(part);
            }
        }
        Ok(())
    }

    async fn write_buffered(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        let needs_grant = matches!(&self.mode, Mode::Buffered { grant: None, .. });
        if needs_grant && let Some(budget) = self.memory.clone() {
            let Mode::Buffered { part_size, .. } = &self.mode else {
                return Err(self.unexpected("wrong write mode".into()));
            };
            // One part plus one chunk of slack, taken before the buffer fills.
            let wanted = *part_size + chunk.len() as u64;
            let granted =
                budget
                    .acquire(wanted)
                    .await
                    .map_err(|e| StorageError::InvalidDestination {
                        location: self.location(),
                        reason: e.to_string(),
                    })?;
            if let Mode::Buffered { grant, .. } = &mut self.mode {
                *grant = Some(granted);
            }
        }
        let Mode::Buffered { part_size, buf, .. } = &mut self.mode else {
            return Err(self.unexpected("wrong write mode".into()));
        };
        let part_size = usize::try_from(*part_size).unwrap_or(usize::MAX);
        buf.extend_from_slice(&chunk);
        self.written += chunk.len() as u64;
        self.durable = self.written;
        // Keep at least one byte back: the last part is sent at commit.
        while let Mode::Buffered { buf, .. } = &mut self.mode
            && buf.len() > part_size
        {
            let part = buf.split_to(part_size).freeze();
            self.upload_buffered_part(part).await?;
        }
        // The part went out: give its memory back until more bytes come.
        if let Mode::Buffered { buf, grant, .. } = &mut self.mode
            && buf.is_empty()
        {
            *grant = None;
        }
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), StorageError> {
        let upload_id = self
            .upload_id
            .clone()
            .ok_or_else(|| self.unexpected("no multipart upload to complete".into()))?;
        let parts = std::mem::take(&mut self.parts);
        self.service
            .client()
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map_sdk_error(&self.location(), e))?;
        self.upload_id = None;
        kill_point("ferry-s3-completed", self.written);
        Ok(())
    }

    async fn commit_inner(&mut self, info: &CommitInfo) -> Result<(), StorageError> {
        if info.size != self.written {
            return Err(self.unexpected(format!(
                "{} bytes written but {} committed",
                self.written, info.size
            )));
        }
        let full_metadata = metadata_of(Some(&info.sha256_hex), info.md5_hex.as_deref());
        let mut metadata_done = false;
        match &mut self.mode {
            Mode::Single {
                tx,
                task,
                held,
                md5,
            } => match task.take() {
                None => {
                    // Nothing was streamed (an empty file).
                    self.service
                        .upload_buffer(&self.bucket, &self.key, Bytes::new(), full_metadata.clone())
                        .await?;
                    metadata_done = true;
                }
                Some(task) => {
                    let sender = tx.take();
                    if let (Some(sender), Some(last)) = (sender, held.take()) {
                        // A failed send shows up as the task's error below.
                        let _ = sender.send(Ok(last)).await;
                    }
                    let digest = std::mem::replace(md5, Md5::new()).finalize();
                    let etag = match task.await {
                        Ok(r) => r?,
                        Err(e) => return Err(self.unexpected(format!("upload task failed: {e}"))),
                    };
                    self.check_etag("the object", etag.as_deref(), &digest)?;
                }
            },
            Mode::Multipart { current, .. } => {
                if current.is_some() {
                    return Err(self.unexpected("commit with a part still in flight".into()));
                }
                self.complete().await?;
            }
            Mode::Buffered { buf, grant, .. } => {
                let last = buf.split().freeze();
                let _held_until_sent = grant.take();
                if self.upload_id.is_none() {
                    self.service
                        .upload_buffer(&self.bucket, &self.key, last, full_metadata.clone())
                        .await?;
                    metadata_done = true;
                } else {
                    if !last.is_empty() {
                        self.upload_buffered_part(last).await?;
                    }
                    self.complete().await?;
                }
            }
        }
        self.finished = true;
        let covered = full_metadata
            .iter()
            .all(|(k, v)| self.create_metadata.get(k) == Some(v));
        if !metadata_done
            && !covered
            && let Err(e) = self
                .service
                .set_metadata(&self.bucket, &self.key, full_metadata)
                .await
        {
            warn!(location = %self.location(), error = %e, "object stored, but its sha256/md5 metadata could not be attached");
        }
        Ok(())
    }

    fn stop_in_flight(&mut self) {
        match &mut self.mode {
            Mode::Single { .. } => self.reset_single(),
            Mode::Multipart { current, .. } => {
                if let Some(part) = current.take() {
                    part.task.abort();
                }
            }
            Mode::Buffered { buf, grant, .. } => {
                *buf = BytesMut::new();
                *grant = None;
            }
        }
    }

    async fn abort_upload(&mut self) -> Result<(), StorageError> {
        self.stop_in_flight();
        self.finished = true;
        if let Some(id) = self.upload_id.take() {
            self.service
                .abort_upload(&self.bucket, &self.key, &id)
                .await?;
        }
        Ok(())
    }
}

impl Drop for S3Write {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.stop_in_flight();
        if let Some(id) = self.upload_id.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let (service, bucket, key) =
                (self.service.clone(), self.bucket.clone(), self.key.clone());
            handle.spawn(async move {
                if let Err(e) = service.abort_upload(&bucket, &key, &id).await {
                    warn!(bucket, key, error = %e, "could not abort an abandoned upload");
                }
            });
        }
    }
}

#[async_trait]
impl StagedWrite for S3Write {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        match self.mode {
            Mode::Single { .. } => self.write_single(chunk).await,
            Mode::Multipart { .. } => self.write_multipart(chunk).await,
            Mode::Buffered { .. } => self.write_buffered(chunk).await,
        }
    }

    fn durable_offset(&self) -> u64 {
        self.durable
    }

    async fn rewind(&mut self, offset: u64) -> Result<(), StorageError> {
        if offset != self.durable {
            return Err(self.unexpected(format!(
                "can only rewind to the durable offset {}, not {offset}",
                self.durable
            )));
        }
        if matches!(self.mode, Mode::Buffered { .. }) && offset != self.written {
            return Err(self.unexpected("a buffered upload cannot rewind".into()));
        }
        self.stop_in_flight();
        self.written = self.durable;
        Ok(())
    }

    async fn commit(mut self: Box<Self>, info: CommitInfo) -> Result<StoredObject, StorageError> {
        match self.commit_inner(&info).await {
            Ok(()) => Ok(StoredObject {
                key: self.object_key.clone(),
                size: info.size,
                location: self.location(),
            }),
            Err(e) => {
                if let Err(abort) = self.abort_upload().await {
                    warn!(location = %self.location(), error = %abort, "abort after a failed commit failed");
                }
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        self.abort_upload().await
    }

    async fn checkpoint(&mut self, force: bool) -> Result<Option<StagedState>, StorageError> {
        // Only a streamed multipart upload can be taken up again: a single
        // PUT is under one part, a buffered one has no replayable source.
        let (Mode::Multipart { part_size, .. }, Some(upload_id)) = (&self.mode, &self.upload_id)
        else {
            return Ok(None);
        };
        if !force && self.reported_parts == Some(self.parts.len()) {
            return Ok(None);
        }
        let size = self.size.unwrap_or(0);
        let mut offset = 0u64;
        let mut parts = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            let len = (*part_size).min(size.saturating_sub(offset));
            offset += len;
            parts.push(PartRecord {
                number: u32::try_from(part.part_number.unwrap_or(0)).unwrap_or(0),
                size: len,
                etag: part.e_tag.clone().unwrap_or_default(),
            });
        }
        let state = MultipartState {
            upload_id: upload_id.clone(),
            part_size: *part_size,
            parts,
        };
        self.reported_parts = Some(self.parts.len());
        Ok(Some(state.to_staged()))
    }

    fn suspend(mut self: Box<Self>) {
        // Keep the upload and its completed parts: a checkpoint names them.
        self.stop_in_flight();
        self.finished = true;
    }
}

/// The one ETag comparison: quotes dropped, hex case ignored.
fn same_etag(a: &str, b: &str) -> bool {
    a.trim_matches('"')
        .eq_ignore_ascii_case(b.trim_matches('"'))
}

impl S3Storage {
    /// A write of `request` with nothing uploaded yet.
    fn writer(&self, request: WriteRequest, size: Option<u64>, mode: Mode) -> S3Write {
        S3Write {
            service: self.service.clone(),
            bucket: self.bucket.clone(),
            key: self.full_key(&request.key),
            object_key: request.key,
            size,
            written: 0,
            durable: 0,
            create_metadata: metadata_of(
                request.expected_sha256.as_ref().map(Checksum::hex),
                request.expected_md5.as_ref().map(Checksum::hex),
            ),
            verify_etags: self.config.verify_part_etags,
            depth: self.config.channel_depth,
            memory: self.config.memory.clone(),
            upload_id: None,
            parts: Vec::new(),
            mode,
            finished: false,
            reported_parts: None,
        }
    }
}

#[async_trait]
impl FileStoragePort for S3Storage {
    fn location(&self, key: &ObjectKey) -> String {
        s3_location(&self.bucket, &self.full_key(key))
    }

    async fn begin_write(
        &self,
        request: WriteRequest,
    ) -> Result<Box<dyn StagedWrite>, StorageError> {
        let mode = match (request.size_hint, request.replayable) {
            (Some(size), true) if size < self.config.multipart_threshold => Mode::Single {
                tx: None,
                task: None,
                held: None,
                md5: Md5::new(),
            },
            (Some(size), true) => Mode::Multipart {
                part_size: part_size_for(size, self.config.part_size),
                current: None,
            },
            (size, _) => Mode::Buffered {
                part_size: part_size_for(size.unwrap_or(0), self.config.part_size),
                buf: BytesMut::new(),
                grant: None,
            },
        };
        let size = request.size_hint;
        Ok(Box::new(self.writer(request, size, mode)))
    }

    async fn resume_write(
        &self,
        request: WriteRequest,
        staged: &StagedState,
    ) -> Result<Box<dyn StagedWrite>, StorageError> {
        let key = self.full_key(&request.key);
        let location = s3_location(&self.bucket, &key);
        let refuse = |reason: String| StorageError::InvalidDestination {
            location: location.clone(),
            reason,
        };
        let MultipartState {
            upload_id,
            part_size,
            parts,
        } = MultipartState::from_staged(staged).map_err(&refuse)?;
        let (upload_id, part_size, parts) = (&upload_id, &part_size, &parts);
        let size = match request.size_hint {
            Some(size) if request.replayable => size,
            _ => {
                return Err(refuse(
                    "only a replayable source of known length resumes".into(),
                ));
            }
        };
        if *part_size < MIN_PART || size.div_ceil(*part_size) > MAX_PARTS {
            return Err(refuse(format!(
                "part size {part_size} does not fit S3's limits"
            )));
        }
        // The upload must still hold every checkpointed part, unchanged.
        // Parts after them (uploaded after the last checkpoint) are simply
        // uploaded again.
        let listed = self
            .service
            .list_parts(&self.bucket, &key, upload_id)
            .await?;
        for part in parts {
            let found = listed
                .iter()
                .find(|(n, _, _)| u32::try_from(*n).ok() == Some(part.number));
            match found {
                Some((_, listed_size, etag))
                    if *listed_size == part.size && same_etag(etag, &part.etag) => {}
                _ => {
                    return Err(refuse(format!(
                        "part {} of the upload differs from the checkpoint",
                        part.number
                    )));
                }
            }
        }
        let committed = staged.committed();
        debug!(%location, committed, parts = parts.len(), "resuming a multipart upload");
        let mut write = self.writer(
            request,
            Some(size),
            Mode::Multipart {
                part_size: *part_size,
                current: None,
            },
        );
        write.written = committed;
        write.durable = committed;
        write.upload_id = Some(upload_id.clone());
        write.parts = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(i32::try_from(p.number).unwrap_or(i32::MAX))
                    .e_tag(&p.etag)
                    .build()
            })
            .collect();
        write.reported_parts = Some(parts.len());
        Ok(Box::new(write))
    }

    async fn discard(&self, key: &ObjectKey, staged: &StagedState) -> Result<(), StorageError> {
        let Ok(state) = MultipartState::from_staged(staged) else {
            return Ok(());
        };
        self.service
            .abort_upload(&self.bucket, &self.full_key(key), &state.upload_id)
            .await
    }

    async fn read(&self, key: &ObjectKey) -> Result<ByteStream<StorageError>, StorageError> {
        self.service
            .download_stream(&self.bucket, &self.full_key(key))
            .await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.service.delete(&self.bucket, &self.full_key(key)).await
    }

    async fn metadata(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        self.service.head(&self.bucket, &self.full_key(key)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_respect_s3_limits() {
        assert_eq!(part_size_for(100 * MIB, 8 * MIB), 8 * MIB);
        assert_eq!(part_size_for(100 * MIB, MIB), 5 * MIB);
        // 200 GiB at 8 MiB would be 25,600 parts: raised to fit 10,000.
        let big = 200 * 1024 * MIB;
        let p = part_size_for(big, 8 * MIB);
        assert!(big.div_ceil(p) <= MAX_PARTS);
        assert_eq!(p % MIB, 0);
        assert_eq!(part_size_for(0, 8 * MIB), 8 * MIB);
    }

    #[test]
    fn etags_compare_quoted_and_case_insensitively() {
        let md5 = Md5::digest(b"test");
        assert!(etag_matches("\"098F6BCD4621D373CADE4E832627B4F6\"", &md5));
        assert!(!etag_matches(
            "\"098f6bcd4621d373cade4e832627b4f6-2\"",
            &md5
        ));
    }
}
