//! ferry's S3 operations, with the bucket given on every call (no hidden
//! default bucket). `S3Storage` (the `FileStoragePort`) uses the upload,
//! download, head, delete, list-parts, abort and metadata calls; the rest
//! (`download_to_file`, `delete_objects`, `presigned_get`,
//! `list_incomplete_uploads`) are library API for tools and tests built on
//! ferry's client settings, each tested on Garage. Nothing here aborts an
//! upload it is not given the id of: ferry aborts only uploads a checkpoint
//! or a live write names.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Region, RequestChecksumCalculation, ResponseChecksumValidation, StalledStreamProtectionConfig,
};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use bytes::Bytes;
use futures::stream;
use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};

use ferry_domain::ports::{ObjectMeta, StorageError};
use ferry_domain::stream::ByteStream;

use super::attributes::{user_metadata, with_attributes};
use super::errors::map_sdk_error;
use ferry_domain::ObjectAttributes;

/// How to reach S3. Credentials come from the standard AWS chain
/// (environment, profile, web identity, IMDS...).
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// e.g. `http://127.0.0.1:3900`; `AWS_ENDPOINT_URL` is honoured too.
    pub endpoint_url: Option<String>,
    /// Falls back to the AWS chain, then `us-east-1`.
    pub region: Option<String>,
    /// A named profile of the AWS config files (else `AWS_PROFILE`).
    pub profile: Option<String>,
}

/// Result of a batch delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchDeleteReport {
    pub deleted: usize,
    /// Keys that could not be deleted, with the server's reason.
    pub failed: Vec<(String, String)>,
}

/// A multipart upload that was started and not completed or aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<SystemTime>,
}

/// S3 operations, bucket per call.
#[derive(Debug, Clone)]
pub struct S3Service {
    client: Client,
}

pub(crate) fn s3_location(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

/// Percent-encodes a key for `x-amz-copy-source` (keeps `/`).
pub(crate) fn encode_copy_source(bucket: &str, key: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + key.len() + 1);
    out.push_str(bucket);
    out.push('/');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl S3Service {
    /// Builds a client from the standard AWS configuration chain.
    pub async fn connect(settings: &S3Settings) -> Self {
        let mut loader = crate::aws::config_loader();
        if let Some(endpoint) = &settings.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &settings.profile {
            loader = loader.profile_name(profile);
        }
        let shared = loader.load().await;
        let custom_endpoint = shared.endpoint_url().is_some();
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .upload_enabled(false)
                    .grace_period(Duration::from_secs(30))
                    .build(),
            );
        if custom_endpoint {
            builder = builder.force_path_style(true);
        }
        if shared.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        Self {
            client: Client::from_conf(builder.build()),
        }
    }

    pub fn from_client(client: Client) -> Self {
        Self { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Fails early, with a clear reason, if `bucket` cannot be used.
    /// `Ok(Some(region))`: the bucket lives in another region (the server
    /// answered a 3xx with `x-amz-bucket-region`, which the SDK does not
    /// follow): use a client for that region.
    pub async fn check_bucket(&self, bucket: &str) -> Result<Option<String>, StorageError> {
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(None),
            Err(e) => {
                let elsewhere = match &e {
                    aws_sdk_s3::error::SdkError::ServiceError(service)
                        if (300..400).contains(&service.raw().status().as_u16()) =>
                    {
                        service
                            .raw()
                            .headers()
                            .get("x-amz-bucket-region")
                            .map(str::to_owned)
                    }
                    _ => None,
                };
                if let Some(region) = elsewhere {
                    return Ok(Some(region));
                }
                Err(match map_sdk_error(&s3_location(bucket, ""), e) {
                    StorageError::NotFound { location } => StorageError::InvalidDestination {
                        location,
                        reason: "the bucket does not exist".into(),
                    },
                    other => other,
                })
            }
        }
    }

    /// Uploads bytes already in memory (one PutObject, SDK retries).
    pub async fn upload_buffer(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        metadata: HashMap<String, String>,
    ) -> Result<(), StorageError> {
        self.upload_buffer_with(
            bucket,
            key,
            data,
            metadata,
            &ObjectAttributes::default(),
            false,
        )
        .await
    }

    /// [`Self::upload_buffer`] with the object's attributes; `if_absent`
    /// sends `If-None-Match: *` (no-clobber).
    pub async fn upload_buffer_with(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        metadata: HashMap<String, String>,
        attributes: &ObjectAttributes,
        if_absent: bool,
    ) -> Result<(), StorageError> {
        let len = data.len() as i64;
        let request = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_length(len)
            .set_if_none_match(super::write::if_none_match(if_absent));
        with_attributes!(request, attributes, user_metadata(attributes, metadata), tags: true)
            .body(SdkByteStream::from(data))
            .send()
            .await
            .map_err(|e| map_sdk_error(&s3_location(bucket, key), e))?;
        Ok(())
    }

    /// Streams an object's bytes.
    pub async fn download_stream(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<ByteStream<StorageError>, StorageError> {
        let location = s3_location(bucket, key);
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_sdk_error(&location, e))?;
        let body = stream::unfold((out.body, location), |(mut body, location)| async move {
            match body.next().await {
                Some(Ok(bytes)) => Some((Ok(bytes), (body, location))),
                Some(Err(e)) => {
                    let error = StorageError::Unavailable {
                        location: location.clone(),
                        reason: e.to_string(),
                        exhausted: false,
                    };
                    Some((Err(error), (body, location)))
                }
                None => None,
            }
        });
        Ok(Box::pin(body))
    }

    /// Downloads to `path` atomically: a temp file beside it, fsync, rename.
    /// Library API (not used by `ferry copy`/`serve`).
    pub async fn download_to_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
    ) -> Result<u64, StorageError> {
        use futures::StreamExt;
        let shown = path.display().to_string();
        let io = |e: std::io::Error| StorageError::Unexpected {
            location: shown.clone(),
            source: Box::new(e),
        };
        let mut body = self.download_stream(bucket, key).await?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("download");
        let temp = path.with_file_name(format!(".{name}.ferry-tmp.{}.dl", std::process::id()));
        let result = async {
            let mut file = tokio::fs::File::create(&temp).await.map_err(io)?;
            let mut total = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                total += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(io)?;
            }
            crate::filesystem::publish(&mut file, &temp, path)
                .await
                .map_err(io)?;
            Ok(total)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }

    /// An object's size and recorded digests, or `None`.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let meta = out.metadata.unwrap_or_default();
                Ok(Some(ObjectMeta {
                    size: u64::try_from(out.content_length.unwrap_or(0)).unwrap_or(0),
                    last_modified: out.last_modified.and_then(|t| SystemTime::try_from(t).ok()),
                    sha256_hex: meta.get("sha256").cloned(),
                    md5_hex: meta.get("md5").cloned(),
                }))
            }
            Err(e) => match map_sdk_error(&s3_location(bucket, key), e) {
                StorageError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), StorageError> {
        match self
            .client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match map_sdk_error(&s3_location(bucket, key), e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Deletes many keys, 1,000 per request, reporting per-key failures.
    /// Library API (not used by `ferry copy`/`serve`).
    pub async fn delete_objects(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<BatchDeleteReport, StorageError> {
        let mut report = BatchDeleteReport::default();
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StorageError::Unexpected {
                    location: s3_location(bucket, ""),
                    source: Box::new(e),
                })?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StorageError::Unexpected {
                    location: s3_location(bucket, ""),
                    source: Box::new(e),
                })?;
            let out = self
                .client
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| map_sdk_error(&s3_location(bucket, ""), e))?;
            let errors = out.errors.unwrap_or_default();
            report.deleted += batch.len() - errors.len();
            for e in errors {
                report.failed.push((
                    e.key.unwrap_or_default(),
                    format!(
                        "{}: {}",
                        e.code.unwrap_or_default(),
                        e.message.unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(report)
    }

    /// A presigned GET URL valid for `expires`. The URL is a secret: never
    /// log it.
    pub async fn presigned_get(
        &self,
        bucket: &str,
        key: &str,
        expires: Duration,
    ) -> Result<String, StorageError> {
        let location = s3_location(bucket, key);
        let config = PresigningConfig::expires_in(expires).map_err(|e| {
            StorageError::InvalidDestination {
                location: location.clone(),
                reason: format!("bad presign expiry: {e}"),
            }
        })?;
        let req = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| map_sdk_error(&location, e))?;
        Ok(req.uri().to_owned())
    }

    /// Multipart uploads under `prefix` started more than `older_than` ago
    /// (to inspect, e.g. that nothing was left behind; it never aborts).
    /// Library API (not used by `ferry copy`/`serve`).
    pub async fn list_incomplete_uploads(
        &self,
        bucket: &str,
        prefix: Option<&str>,
        older_than: Duration,
    ) -> Result<Vec<IncompleteUpload>, StorageError> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut found = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .set_prefix(prefix.map(str::to_owned))
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| map_sdk_error(&s3_location(bucket, prefix.unwrap_or("")), e))?;
            for u in out.uploads.unwrap_or_default() {
                let initiated = u.initiated.and_then(|t| SystemTime::try_from(t).ok());
                if initiated.is_none_or(|t| t <= cutoff)
                    && let (Some(key), Some(upload_id)) = (u.key, u.upload_id)
                {
                    found.push(IncompleteUpload {
                        key,
                        upload_id,
                        initiated,
                    });
                }
            }
            if out.is_truncated != Some(true) {
                break;
            }
            key_marker = out.next_key_marker;
            id_marker = out.next_upload_id_marker;
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        Ok(found)
    }

    /// The parts of an incomplete upload: (number, size, ETag), in order.
    /// `NotFound` when the upload no longer exists.
    pub async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<(i32, u64, String)>, StorageError> {
        let location = s3_location(bucket, key);
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_parts()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.clone())
                .send()
                .await
                .map_err(|e| map_sdk_error(&location, e))?;
            for p in out.parts.unwrap_or_default() {
                if let (Some(n), Some(size), Some(etag)) = (p.part_number, p.size, p.e_tag) {
                    parts.push((n, u64::try_from(size).unwrap_or(0), etag));
                }
            }
            if out.is_truncated != Some(true) {
                break;
            }
            marker = out.next_part_number_marker;
            if marker.is_none() {
                break;
            }
        }
        parts.sort_by_key(|p| p.0);
        Ok(parts)
    }

    /// Aborts an upload, repeating until ListParts no longer knows it (parts
    /// in flight during an abort can otherwise survive it).
    pub async fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        let location = s3_location(bucket, key);
        for attempt in 0..5u32 {
            match self
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) => match map_sdk_error(&location, e) {
                    StorageError::NotFound { .. } => return Ok(()),
                    other => warn!(%location, error = %other, attempt, "abort failed"),
                },
            }
            match self.list_parts(bucket, key, upload_id).await {
                Err(StorageError::NotFound { .. }) => return Ok(()),
                Err(other) => debug!(%location, error = %other, "list parts after abort"),
                Ok(parts) if parts.is_empty() => return Ok(()),
                Ok(_) => {}
            }
            tokio::time::sleep(ferry_domain::retry::exponential(
                Duration::from_millis(100),
                Duration::from_secs(2),
                attempt,
            ))
            .await;
        }
        Err(StorageError::Unavailable {
            location,
            reason: "the multipart upload could not be aborted".into(),
            exhausted: true,
        })
    }

    /// Replaces the user metadata of an object of `size` bytes by a
    /// server-side self-copy, keeping its attributes: one CopyObject up to
    /// `copy_limit` (S3's is 5 GiB), above it a multipart copy
    /// (UploadPartCopy of ranges of at most `copy_limit`).
    pub async fn set_metadata_of(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
        copy_limit: u64,
        metadata: HashMap<String, String>,
        attributes: &ObjectAttributes,
    ) -> Result<(), StorageError> {
        if size <= copy_limit {
            return self.set_metadata(bucket, key, metadata, attributes).await;
        }
        let location = s3_location(bucket, key);
        let request = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key);
        let id =
            with_attributes!(request, attributes, user_metadata(attributes, metadata), tags: true)
                .send()
                .await
                .map_err(|e| map_sdk_error(&location, e))?
                .upload_id
                .ok_or_else(|| StorageError::Unexpected {
                    location: location.clone(),
                    source: "CreateMultipartUpload returned no upload id".into(),
                })?;
        let copied = self.copy_parts(bucket, key, &id, size, copy_limit).await;
        let completed = match copied {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&id)
                .multipart_upload(
                    aws_sdk_s3::types::CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| map_sdk_error(&location, e)),
            Err(e) => Err(e),
        };
        if completed.is_err()
            && let Err(e) = self.abort_upload(bucket, key, &id).await
        {
            warn!(%location, error = %e, "the multipart self-copy could not be aborted");
        }
        completed
    }

    /// The parts of a multipart self-copy, each a range of at most `limit`.
    async fn copy_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        size: u64,
        limit: u64,
    ) -> Result<Vec<aws_sdk_s3::types::CompletedPart>, StorageError> {
        let location = s3_location(bucket, key);
        let part = limit.max(size.div_ceil(10_000)).max(1);
        let mut parts = Vec::new();
        let mut start = 0u64;
        let mut number = 1i32;
        while start < size {
            let end = (start + part).min(size) - 1;
            let out = self
                .client
                .upload_part_copy()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .copy_source(encode_copy_source(bucket, key))
                .copy_source_range(format!("bytes={start}-{end}"))
                .send()
                .await
                .map_err(|e| map_sdk_error(&location, e))?;
            let etag = out.copy_part_result.and_then(|r| r.e_tag);
            parts.push(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(etag)
                    .build(),
            );
            start = end + 1;
            number += 1;
        }
        Ok(parts)
    }

    /// Replaces an object's user metadata (server-side self-copy), keeping
    /// its attributes (a copy with `REPLACE` would otherwise reset its
    /// Content-Type, storage class, encryption and ACL).
    pub async fn set_metadata(
        &self,
        bucket: &str,
        key: &str,
        metadata: HashMap<String, String>,
        attributes: &ObjectAttributes,
    ) -> Result<(), StorageError> {
        let request = self
            .client
            .copy_object()
            .bucket(bucket)
            .key(key)
            .copy_source(encode_copy_source(bucket, key))
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace);
        with_attributes!(request, attributes, user_metadata(attributes, metadata), tags: false)
            .send()
            .await
            .map_err(|e| map_sdk_error(&s3_location(bucket, key), e))?;
        Ok(())
    }

    /// Sets an object's tags (PutObjectTagging), replacing any.
    pub async fn put_tags(
        &self,
        bucket: &str,
        key: &str,
        tags: &[(String, String)],
    ) -> Result<(), StorageError> {
        let location = s3_location(bucket, key);
        let tag_set = tags
            .iter()
            .map(|(k, v)| aws_sdk_s3::types::Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StorageError::Unexpected {
                location: location.clone(),
                source: Box::new(e),
            })?;
        let tagging = aws_sdk_s3::types::Tagging::builder()
            .set_tag_set(Some(tag_set))
            .build()
            .map_err(|e| StorageError::Unexpected {
                location: location.clone(),
                source: Box::new(e),
            })?;
        self.client
            .put_object_tagging()
            .bucket(bucket)
            .key(key)
            .tagging(tagging)
            .send()
            .await
            .map_err(|e| map_sdk_error(&location, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_is_percent_encoded() {
        assert_eq!(encode_copy_source("b", "a/b c+d.bin"), "b/a/b%20c%2Bd.bin");
        assert_eq!(encode_copy_source("b", "日"), "b/%E6%97%A5");
    }
}
