//! The three ways an S3 write is staged, one type each over shared parts
//! (as object_store splits `MultipartUpload` from `WriteMultipart`), so a
//! write cannot be in a state its mode does not have:
//! - [`SinglePut`]: a streamed single PutObject whose last chunk is withheld
//!   until commit;
//! - [`StreamedMultipart`]: parts streamed from the source as they arrive,
//!   checkpointable and rewindable to the last completed part;
//! - [`BufferedMultipart`]: one part at a time held in memory (from the
//!   budget), for sources of unknown length or without ranges.
//!
//! [`Target`] is where a write goes and how its answers are checked;
//! [`Upload`] is one multipart upload (created on first part, completed at
//! commit, aborted when dropped unfinished).

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

use ferry_domain::ports::{CommitInfo, StagedWrite, StorageError, StoredObject, SuspendOnDrop};
use ferry_domain::{ObjectAttributes, ObjectKey, StagedState};

use super::attributes::{DigestMetadata, user_metadata, with_attributes};
use super::body::channel_body;
use super::errors::{map_sdk_error, map_streamed_error};
use super::service::{S3Service, s3_location};
use super::staged::{MultipartState, PartRecord};
use crate::killpoint::kill_point;
use crate::memory::{MemoryBudget, MemoryGrant};

type Sender = mpsc::Sender<Result<Bytes, std::io::Error>>;
type PartTask = JoinHandle<Result<Option<String>, StorageError>>;

/// The user metadata ferry records: the digests it verified.
pub(super) fn metadata_of(sha256: Option<&str>, md5: Option<&str>) -> HashMap<String, String> {
    let mut m = HashMap::new();
    if let Some(h) = sha256 {
        m.insert("sha256".to_owned(), h.to_owned());
    }
    if let Some(h) = md5 {
        m.insert("md5".to_owned(), h.to_owned());
    }
    m
}

/// The one ETag comparison: quotes dropped, hex case ignored.
pub(super) fn same_etag(a: &str, b: &str) -> bool {
    a.trim_matches('"')
        .eq_ignore_ascii_case(b.trim_matches('"'))
}

/// Whether an ETag is the MD5 `md5` (a single-part object's or part's).
pub(super) fn etag_matches(etag: &str, md5: &[u8]) -> bool {
    same_etag(etag, &hex::encode(md5))
}

/// Where a write goes and how its answers are checked.
pub(super) struct Target {
    pub(super) service: S3Service,
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) object_key: ObjectKey,
    /// Metadata set when the object or upload is created (digests known up
    /// front).
    pub(super) create_metadata: HashMap<String, String>,
    /// Content-Type, user metadata, tags, storage class, SSE, ACL.
    pub(super) attributes: ObjectAttributes,
    /// Send `If-None-Match: *` with the request that creates the object
    /// (PutObject, CompleteMultipartUpload): a server that honours it
    /// answers 412 when the key exists (`StorageError::AlreadyExists`).
    pub(super) if_absent: bool,
    /// How digests unknown at create reach the object.
    pub(super) digests: DigestMetadata,
    /// The largest single CopyObject (above it, a multipart copy).
    pub(super) copy_limit: u64,
    pub(super) verify_etags: bool,
    /// Chunks that may wait between the source and a request body.
    pub(super) depth: usize,
    /// Set: a dropped upload is kept for a resume elsewhere, not aborted.
    pub(super) suspend_on_drop: SuspendOnDrop,
}

impl Target {
    fn location(&self) -> String {
        s3_location(&self.bucket, &self.key)
    }

    fn unexpected(&self, what: String) -> StorageError {
        StorageError::Unexpected {
            location: self.location(),
            source: what.into(),
        }
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
                exhausted: false,
            }),
            None => Err(self.unexpected(format!("{what} returned no ETag"))),
        }
    }

    fn check_size(&self, written: u64, info: &CommitInfo) -> Result<(), StorageError> {
        if info.size == written {
            Ok(())
        } else {
            Err(self.unexpected(format!(
                "{written} bytes written but {} committed",
                info.size
            )))
        }
    }

    /// A whole object from memory, with the full metadata.
    async fn put_whole(&self, body: Bytes, info: &CommitInfo) -> Result<(), StorageError> {
        // One write with everything known by now (unless digests are off).
        let metadata = match self.digests {
            DigestMetadata::None => HashMap::new(),
            _ => full_metadata(info),
        };
        self.service
            .upload_buffer_with(
                &self.bucket,
                &self.key,
                body,
                metadata,
                &self.attributes,
                self.if_absent,
            )
            .await
    }

    /// After a commit, when the verified digests were not set at create:
    /// as `--digest-metadata` says (by default nothing: no second write).
    async fn attach_metadata(&self, info: &CommitInfo) {
        let full = full_metadata(info);
        let covered = full
            .iter()
            .all(|(k, v)| self.create_metadata.get(k) == Some(v));
        if covered {
            return;
        }
        let attached = match self.digests {
            DigestMetadata::Auto | DigestMetadata::None => {
                debug!(location = %self.location(), "digest not known at create: kept in the result only (--digest-metadata)");
                return;
            }
            DigestMetadata::Copy => {
                self.service
                    .set_metadata_of(
                        &self.bucket,
                        &self.key,
                        info.size,
                        self.copy_limit,
                        full,
                        &self.attributes,
                    )
                    .await
            }
            DigestMetadata::Tag => {
                let mut tags = self.attributes.tags().to_vec();
                tags.extend(full);
                self.service.put_tags(&self.bucket, &self.key, &tags).await
            }
        };
        if let Err(e) = attached {
            warn!(location = %self.location(), error = %e, "object stored, but its sha256/md5 could not be attached (--digest-metadata)");
        }
    }

    fn stored(&self, info: &CommitInfo) -> StoredObject {
        StoredObject {
            key: self.object_key.clone(),
            size: info.size,
            location: self.location(),
        }
    }

    /// Streams a request body of `len` bytes through a bounded channel.
    fn spawn_put(&self, len: u64, request: Request) -> (Sender, PartTask) {
        let (tx, body) = channel_body(len, self.depth);
        let client = self.service.client().clone();
        let (bucket, key, location) = (self.bucket.clone(), self.key.clone(), self.location());
        let metadata = user_metadata(&self.attributes, self.create_metadata.clone());
        let attributes = self.attributes.clone();
        let if_none_match = if_none_match(self.if_absent);
        let content_length = i64::try_from(len).unwrap_or(i64::MAX);
        let task = tokio::spawn(async move {
            let body = SdkByteStream::new(SdkBody::from_body_1_x(body));
            let etag = match request {
                Request::Object => {
                    let request = client
                        .put_object()
                        .bucket(bucket)
                        .key(key)
                        .content_length(content_length)
                        .set_if_none_match(if_none_match);
                    with_attributes!(request, &attributes, metadata, tags: true)
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| map_streamed_error(&location, e))?
                        .e_tag
                }
                Request::Part { upload_id, number } => {
                    client
                        .upload_part()
                        .bucket(bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(number)
                        .content_length(content_length)
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| map_streamed_error(&location, e))?
                        .e_tag
                }
            };
            Ok(etag)
        });
        (tx, task)
    }
}

/// `If-None-Match: *` for a no-clobber create.
pub(super) fn if_none_match(if_absent: bool) -> Option<String> {
    if_absent.then(|| "*".to_owned())
}

fn full_metadata(info: &CommitInfo) -> HashMap<String, String> {
    metadata_of(Some(&info.sha256_hex), info.md5_hex.as_deref())
}

/// What a streamed request uploads.
enum Request {
    Object,
    Part { upload_id: String, number: i32 },
}

/// One multipart upload: created on the first part, completed at commit,
/// aborted when dropped unfinished (unless kept for a resume).
pub(super) struct Upload {
    pub(super) target: Target,
    pub(super) id: Option<String>,
    pub(super) parts: Vec<CompletedPart>,
    /// Completed, aborted, or kept for a resume: nothing to clean on drop.
    finished: bool,
}

impl Upload {
    pub(super) fn new(target: Target) -> Self {
        Self {
            target,
            id: None,
            parts: Vec::new(),
            finished: false,
        }
    }

    /// Takes up an upload a checkpoint names, with its completed parts.
    pub(super) fn resumed(target: Target, state: &MultipartState) -> Self {
        Self {
            target,
            id: Some(state.upload_id.clone()),
            parts: state
                .parts
                .iter()
                .map(|p| {
                    CompletedPart::builder()
                        .part_number(i32::try_from(p.number).unwrap_or(i32::MAX))
                        .e_tag(&p.etag)
                        .build()
                })
                .collect(),
            finished: false,
        }
    }

    fn next_number(&self) -> i32 {
        i32::try_from(self.parts.len() + 1).unwrap_or(i32::MAX)
    }

    async fn ensure(&mut self) -> Result<String, StorageError> {
        if let Some(id) = &self.id {
            return Ok(id.clone());
        }
        let t = &self.target;
        let request = t
            .service
            .client()
            .create_multipart_upload()
            .bucket(&t.bucket)
            .key(&t.key);
        let metadata = user_metadata(&t.attributes, t.create_metadata.clone());
        let out = with_attributes!(request, &t.attributes, metadata, tags: true)
            .send()
            .await
            .map_err(|e| map_sdk_error(&t.location(), e))?;
        let id = out
            .upload_id
            .ok_or_else(|| t.unexpected("CreateMultipartUpload returned no upload id".into()))?;
        debug!(location = %t.location(), "multipart upload created");
        self.id = Some(id.clone());
        Ok(id)
    }

    fn record(&mut self, number: i32, etag: Option<String>) {
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(etag)
                .build(),
        );
    }

    /// Uploads an in-memory part (the SDK may retry it).
    async fn upload_part(&mut self, data: Bytes) -> Result<(), StorageError> {
        let upload_id = self.ensure().await?;
        let number = self.next_number();
        let t = &self.target;
        let md5 = if t.verify_etags {
            Md5::digest(&data)
        } else {
            Default::default()
        };
        let len = data.len() as u64;
        let out = t
            .service
            .client()
            .upload_part()
            .bucket(&t.bucket)
            .key(&t.key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .body(SdkByteStream::from(data))
            .send()
            .await
            .map_err(|e| map_sdk_error(&t.location(), e))?;
        t.check_etag(&format!("part {number}"), out.e_tag.as_deref(), &md5)?;
        self.record(number, out.e_tag);
        Ok(())
    }

    async fn complete(&mut self, written: u64) -> Result<(), StorageError> {
        let t = &self.target;
        let upload_id = self
            .id
            .clone()
            .ok_or_else(|| t.unexpected("no multipart upload to complete".into()))?;
        let parts = std::mem::take(&mut self.parts);
        t.service
            .client()
            .complete_multipart_upload()
            .bucket(&t.bucket)
            .key(&t.key)
            .upload_id(upload_id)
            .set_if_none_match(if_none_match(t.if_absent))
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map_sdk_error(&t.location(), e))?;
        self.id = None;
        self.finished = true;
        kill_point("ferry-s3-completed", written);
        Ok(())
    }

    async fn abort(&mut self) -> Result<(), StorageError> {
        self.finished = true;
        if let Some(id) = self.id.take() {
            let t = &self.target;
            t.service.abort_upload(&t.bucket, &t.key, &id).await?;
        }
        Ok(())
    }

    /// Keeps the upload and its parts for a resume: a checkpoint names them.
    fn keep(&mut self) {
        self.finished = true;
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.finished || self.target.suspend_on_drop.is_set() {
            return;
        }
        if let Some(id) = self.id.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let t = &self.target;
            let (service, bucket, key) = (t.service.clone(), t.bucket.clone(), t.key.clone());
            handle.spawn(async move {
                if let Err(e) = service.abort_upload(&bucket, &key, &id).await {
                    warn!(bucket, key, error = %e, "could not abort an abandoned upload");
                }
            });
        }
    }
}

/// A streamed single PutObject: the body streams as it arrives, the last
/// chunk is withheld until commit, so nothing lands unverified.
pub(super) struct SinglePut {
    target: Target,
    size: u64,
    written: u64,
    request: Option<(Sender, PartTask)>,
    held: Option<Bytes>,
    md5: Md5,
}

impl SinglePut {
    pub(super) fn new(target: Target, size: u64) -> Self {
        Self {
            target,
            size,
            written: 0,
            request: None,
            held: None,
            md5: Md5::new(),
        }
    }

    /// Drops the request (aborting it) and everything written.
    fn reset(&mut self) {
        if let Some((_, task)) = self.request.take() {
            task.abort();
        }
        self.held = None;
        self.md5 = Md5::new();
        self.written = 0;
    }
}

impl Drop for SinglePut {
    fn drop(&mut self) {
        if let Some((_, task)) = self.request.take() {
            task.abort();
        }
    }
}

#[async_trait]
impl StagedWrite for SinglePut {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        let new_written = self.written + chunk.len() as u64;
        if new_written > self.size {
            return Err(self
                .target
                .unexpected(format!("more than the declared {} bytes", self.size)));
        }
        if self.request.is_none() {
            self.request = Some(self.target.spawn_put(self.size, Request::Object));
        }
        if self.target.verify_etags {
            self.md5.update(&chunk);
        }
        self.written = new_written;
        if new_written == self.size {
            // The last bytes wait for commit: nothing lands unverified.
            self.held = Some(chunk);
            return Ok(());
        }
        let sent = match &self.request {
            Some((tx, _)) => tx.send(Ok(chunk)).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The request ended early: report why.
        let error = match self.request.take() {
            Some((_, task)) => match task.await {
                Ok(Err(e)) => e,
                _ => self
                    .target
                    .unexpected("the upload request ended early".into()),
            },
            None => self
                .target
                .unexpected("the upload request ended early".into()),
        };
        self.reset();
        Err(error)
    }

    fn durable_offset(&self) -> u64 {
        0
    }

    async fn rewind(&mut self, offset: u64) -> Result<(), StorageError> {
        if offset != 0 {
            return Err(self.target.unexpected(format!(
                "can only rewind to the durable offset 0, not {offset}"
            )));
        }
        self.reset();
        Ok(())
    }

    async fn commit(mut self: Box<Self>, info: CommitInfo) -> Result<StoredObject, StorageError> {
        self.target.check_size(self.written, &info)?;
        match self.request.take() {
            // Nothing was streamed (an empty file).
            None => self.target.put_whole(Bytes::new(), &info).await?,
            Some((sender, task)) => {
                if let Some(last) = self.held.take() {
                    // A failed send shows up as the task's error below.
                    let _ = sender.send(Ok(last)).await;
                }
                drop(sender);
                let digest = std::mem::replace(&mut self.md5, Md5::new()).finalize();
                let etag = match task.await {
                    Ok(r) => r?,
                    Err(e) => {
                        return Err(self.target.unexpected(format!("upload task failed: {e}")));
                    }
                };
                self.target
                    .check_etag("the object", etag.as_deref(), &digest)?;
                self.target.attach_metadata(&info).await;
            }
        }
        Ok(self.target.stored(&info))
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        self.reset();
        Ok(())
    }
}

/// A part whose body is being streamed.
struct InFlightPart {
    number: i32,
    len: u64,
    sent: u64,
    tx: Option<Sender>,
    task: PartTask,
    md5: Md5,
}

/// A streamed multipart upload: each part's body is fed from the source as
/// it arrives; a failed part leaves the durable offset at the last
/// completed part, to which the write can be rewound.
pub(super) struct StreamedMultipart {
    upload: Upload,
    size: u64,
    part_size: u64,
    written: u64,
    durable: u64,
    current: Option<InFlightPart>,
    /// Parts named in the last checkpoint (`None`: not checkpointed yet).
    reported_parts: Option<usize>,
}

impl StreamedMultipart {
    pub(super) fn new(upload: Upload, size: u64, part_size: u64) -> Self {
        Self {
            upload,
            size,
            part_size,
            written: 0,
            durable: 0,
            current: None,
            reported_parts: None,
        }
    }

    /// Continues an upload whose completed parts hold `committed` bytes.
    pub(super) fn resumed(upload: Upload, size: u64, part_size: u64, committed: u64) -> Self {
        let mut write = Self::new(upload, size, part_size);
        write.written = committed;
        write.durable = committed;
        write.reported_parts = Some(write.upload.parts.len());
        write
    }

    async fn start_part(&mut self) -> Result<InFlightPart, StorageError> {
        let len = self.part_size.min(self.size - self.durable);
        let upload_id = self.upload.ensure().await?;
        let number = self.upload.next_number();
        let (tx, task) = self
            .upload
            .target
            .spawn_put(len, Request::Part { upload_id, number });
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
        let t = &self.upload.target;
        let etag = match part.task.await {
            Ok(r) => r?,
            Err(e) => return Err(t.unexpected(format!("part task failed: {e}"))),
        };
        let md5 = part.md5.finalize();
        t.check_etag(&format!("part {}", part.number), etag.as_deref(), &md5)?;
        self.upload.record(part.number, etag);
        self.durable += part.len;
        Ok(())
    }

    fn stop_in_flight(&mut self) {
        if let Some(part) = self.current.take() {
            part.task.abort();
        }
    }

    /// The checkpointable state: the upload and its completed parts.
    fn state(&self, upload_id: &str) -> MultipartState {
        let mut offset = 0u64;
        let parts = self
            .upload
            .parts
            .iter()
            .map(|part| {
                let len = self.part_size.min(self.size.saturating_sub(offset));
                offset += len;
                PartRecord {
                    number: u32::try_from(part.part_number.unwrap_or(0)).unwrap_or(0),
                    size: len,
                    etag: part.e_tag.clone().unwrap_or_default(),
                }
            })
            .collect();
        MultipartState {
            upload_id: upload_id.to_owned(),
            part_size: self.part_size,
            parts,
        }
    }
}

impl Drop for StreamedMultipart {
    fn drop(&mut self) {
        self.stop_in_flight();
    }
}

#[async_trait]
impl StagedWrite for StreamedMultipart {
    async fn write(&mut self, mut rest: Bytes) -> Result<(), StorageError> {
        if self.written + rest.len() as u64 > self.size {
            return Err(self
                .upload
                .target
                .unexpected("more than the declared length".into()));
        }
        while !rest.is_empty() {
            let mut part = match self.current.take() {
                Some(p) => p,
                None => self.start_part().await?,
            };
            let room = part.len - part.sent;
            let piece = if rest.len() as u64 > room {
                rest.split_to(usize::try_from(room).unwrap_or(usize::MAX))
            } else {
                std::mem::take(&mut rest)
            };
            if self.upload.target.verify_etags {
                part.md5.update(&piece);
            }
            part.sent += piece.len() as u64;
            self.written += piece.len() as u64;
            let sent = match &part.tx {
                Some(tx) => tx.send(Ok(piece)).await.is_ok(),
                None => false,
            };
            if !sent || part.sent == part.len {
                if let Err(e) = self.finish_part(part).await {
                    self.written = self.durable;
                    return Err(e);
                }
                if !sent {
                    self.written = self.durable;
                    return Err(self
                        .upload
                        .target
                        .unexpected("a part request ended early".into()));
                }
            } else {
                self.current = Some(part);
            }
        }
        Ok(())
    }

    fn durable_offset(&self) -> u64 {
        self.durable
    }

    async fn rewind(&mut self, offset: u64) -> Result<(), StorageError> {
        if offset != self.durable {
            return Err(self.upload.target.unexpected(format!(
                "can only rewind to the durable offset {}, not {offset}",
                self.durable
            )));
        }
        self.stop_in_flight();
        self.written = self.durable;
        Ok(())
    }

    async fn commit(mut self: Box<Self>, info: CommitInfo) -> Result<StoredObject, StorageError> {
        let outcome = async {
            self.upload.target.check_size(self.written, &info)?;
            if self.current.is_some() {
                return Err(self
                    .upload
                    .target
                    .unexpected("commit with a part still in flight".into()));
            }
            self.upload.complete(self.written).await
        }
        .await;
        if let Err(e) = outcome {
            abort_after_failed_commit(&mut self.upload).await;
            return Err(e);
        }
        self.upload.target.attach_metadata(&info).await;
        Ok(self.upload.target.stored(&info))
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        self.stop_in_flight();
        self.upload.abort().await
    }

    async fn checkpoint(&mut self, force: bool) -> Result<Option<StagedState>, StorageError> {
        let Some(upload_id) = self.upload.id.clone() else {
            return Ok(None);
        };
        if !force && self.reported_parts == Some(self.upload.parts.len()) {
            return Ok(None);
        }
        let state = self.state(&upload_id);
        self.reported_parts = Some(self.upload.parts.len());
        Ok(Some(state.to_staged()))
    }

    fn suspend(mut self: Box<Self>) {
        // Keep the upload and its completed parts: a checkpoint names them.
        self.stop_in_flight();
        self.upload.keep();
    }
}

/// A multipart upload fed from memory, one part at a time (the part's
/// memory comes from the budget); a file smaller than one part is a single
/// PutObject at commit.
pub(super) struct BufferedMultipart {
    upload: Upload,
    part_size: u64,
    written: u64,
    buf: BytesMut,
    memory: Option<MemoryBudget>,
    /// The memory budget's share for `buf`, held while it fills.
    grant: Option<MemoryGrant>,
}

impl BufferedMultipart {
    pub(super) fn new(upload: Upload, part_size: u64, memory: Option<MemoryBudget>) -> Self {
        Self {
            upload,
            part_size,
            written: 0,
            buf: BytesMut::new(),
            memory,
            grant: None,
        }
    }
}

#[async_trait]
impl StagedWrite for BufferedMultipart {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        if self.grant.is_none()
            && let Some(budget) = &self.memory
        {
            // One part plus one chunk of slack, taken before the buffer
            // fills.
            let wanted = self.part_size + chunk.len() as u64;
            let granted = budget
                .acquire(wanted)
                .await
                .map_err(|e| StorageError::MemoryBudget {
                    location: self.upload.target.location(),
                    reason: e.to_string(),
                })?;
            self.grant = Some(granted);
        }
        let part_size = usize::try_from(self.part_size).unwrap_or(usize::MAX);
        self.buf.extend_from_slice(&chunk);
        self.written += chunk.len() as u64;
        // Keep at least one byte back: the last part is sent at commit.
        while self.buf.len() > part_size {
            let part = self.buf.split_to(part_size).freeze();
            self.upload.upload_part(part).await?;
        }
        // The part went out: give its memory back until more bytes come.
        if self.buf.is_empty() {
            self.grant = None;
        }
        Ok(())
    }

    fn durable_offset(&self) -> u64 {
        self.written
    }

    async fn rewind(&mut self, offset: u64) -> Result<(), StorageError> {
        if offset == self.written {
            Ok(())
        } else {
            Err(self
                .upload
                .target
                .unexpected("a buffered upload cannot rewind".into()))
        }
    }

    async fn commit(mut self: Box<Self>, info: CommitInfo) -> Result<StoredObject, StorageError> {
        let outcome = async {
            self.upload.target.check_size(self.written, &info)?;
            let last = self.buf.split().freeze();
            let _held_until_sent = self.grant.take();
            if self.upload.id.is_none() {
                // No upload was created: nothing to complete or abort.
                self.upload.target.put_whole(last, &info).await?;
                return Ok(true);
            }
            if !last.is_empty() {
                self.upload.upload_part(last).await?;
            }
            self.upload.complete(self.written).await?;
            Ok(false)
        }
        .await;
        match outcome {
            Ok(whole) => {
                if !whole {
                    self.upload.target.attach_metadata(&info).await;
                }
                Ok(self.upload.target.stored(&info))
            }
            Err(e) => {
                abort_after_failed_commit(&mut self.upload).await;
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        self.buf = BytesMut::new();
        self.grant = None;
        self.upload.abort().await
    }
}

async fn abort_after_failed_commit(upload: &mut Upload) {
    if let Err(abort) = upload.abort().await {
        warn!(location = %upload.target.location(), error = %abort, "abort after a failed commit failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_compare_quoted_and_case_insensitively() {
        let md5 = Md5::digest(b"test");
        assert!(etag_matches("\"098F6BCD4621D373CADE4E832627B4F6\"", &md5));
        assert!(!etag_matches(
            "\"098f6bcd4621d373cade4e832627b4f6-2\"",
            &md5
        ));
        assert!(same_etag("\"AbC\"", "abc"));
    }
}
