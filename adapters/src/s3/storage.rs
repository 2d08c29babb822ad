//! `FileStoragePort` on one S3 bucket and prefix.
//!
//! Three write modes, chosen per write, one type each (`write.rs`):
//! - **streamed single PUT** (`SinglePut`): known length below `multipart_threshold` and a
//!   replayable source. The body streams as it arrives, but the last chunk
//!   is withheld until `commit`, so the object cannot land before ferry has
//!   verified the whole file.
//! - **streamed multipart** (`StreamedMultipart`): known length at or above the threshold and a
//!   replayable source. Each part's body is fed from the source as it
//!   arrives (no part is buffered); its MD5 is computed in flight and
//!   checked against the returned ETag. A failed part makes `write` return a
//!   transient error with the durable offset at the last completed part: the
//!   use case rewinds and re-reads exactly that part's range from the source.
//!   CompleteMultipartUpload runs only in `commit`, after verification.
//! - **buffered** (`BufferedMultipart`): unknown length or a source that cannot serve ranges. One
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
use tracing::debug;

use ferry_domain::ports::{FileStoragePort, ObjectMeta, StagedWrite, StorageError, WriteRequest};
use ferry_domain::stream::ByteStream;
use ferry_domain::{Checksum, ObjectKey, StagedState};

use super::attributes::DigestMetadata;
use super::service::{S3Service, s3_location};
use super::staged::MultipartState;
use super::write::{
    BufferedMultipart, SinglePut, StreamedMultipart, Target, Upload, metadata_of, same_etag,
};
use crate::memory::MemoryBudget;

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
    /// Compare each part's in-flight MD5 with the ETag the server returns
    /// (`--verify-parts`; off by default, as in both binaries).
    pub verify_part_etags: bool,
    /// Chunks that may wait between the source and a part's request.
    pub channel_depth: usize,
    /// Where buffered parts (unknown length, no ranges) take their memory
    /// from; `None` leaves them unbounded.
    pub memory: Option<MemoryBudget>,
    /// How digests unknown at create reach the object.
    pub digest_metadata: DigestMetadata,
    /// The largest object one CopyObject may copy (S3: 5 GiB); above it
    /// `--digest-metadata copy` copies in parts of at most this size.
    pub copy_object_limit: u64,
}

impl Default for S3StorageConfig {
    fn default() -> Self {
        Self {
            part_size: 8 * MIB,
            multipart_threshold: 8 * MIB,
            verify_part_etags: false,
            channel_depth: 2,
            memory: None,
            digest_metadata: DigestMetadata::default(),
            copy_object_limit: 5 * 1024 * MIB,
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

impl S3Storage {
    /// Where a write of `request` goes, with the metadata known up front.
    fn target(&self, request: &WriteRequest) -> Target {
        Target {
            service: self.service.clone(),
            bucket: self.bucket.clone(),
            key: self.full_key(&request.key),
            object_key: request.key.clone(),
            create_metadata: match self.config.digest_metadata {
                DigestMetadata::None => HashMap::new(),
                _ => metadata_of(
                    request.expected_sha256.as_ref().map(Checksum::hex),
                    request.expected_md5.as_ref().map(Checksum::hex),
                ),
            },
            attributes: request.attributes.clone(),
            if_absent: request.if_absent,
            digests: self.config.digest_metadata,
            copy_limit: self.config.copy_object_limit,
            verify_etags: self.config.verify_part_etags,
            depth: self.config.channel_depth,
            suspend_on_drop: request.suspend_on_drop.clone(),
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
        let target = self.target(&request);
        let config = &self.config;
        Ok(match (request.size_hint, request.replayable) {
            (Some(size), true) if size < config.multipart_threshold => {
                Box::new(SinglePut::new(target, size))
            }
            (Some(size), true) => Box::new(StreamedMultipart::new(
                Upload::new(target),
                size,
                part_size_for(size, config.part_size),
            )),
            (size, _) => Box::new(BufferedMultipart::new(
                Upload::new(target),
                part_size_for(size.unwrap_or(0), config.part_size),
                config.memory.clone(),
            )),
        })
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
        let state = MultipartState::from_staged(staged).map_err(&refuse)?;
        let (upload_id, part_size, parts) = (&state.upload_id, &state.part_size, &state.parts);
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
        let upload = Upload::resumed(self.target(&request), &state);
        Ok(Box::new(StreamedMultipart::resumed(
            upload, size, *part_size, committed,
        )))
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
}
