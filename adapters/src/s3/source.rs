//! S3 objects as sources (`ferry copy s3://bucket/key DEST`):
//! `HttpDownloadPort` over a streaming GetObject, and the listing of a
//! prefix (`s3://bucket/prefix/`).
//!
//! A resumed read asks for `Range: bytes=N-` with `If-Match` on the ETag
//! the first read saw (`If-Unmodified-Since` when only a date is known): an
//! object replaced in between answers 412, which is `SourceChanged`, and
//! the transfer starts again from zero; never a mixed object. The object's
//! `sha256` user metadata (what ferry writes) is reported as the declared
//! digest, checked when the caller gives none.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::date_time::Format;
use futures::stream;
use tokio::sync::OnceCell;

use ferry_domain::ports::{
    Download, DownloadError, DownloadRequest, HttpDownloadPort, SourceMeta, Validator,
};
use ferry_domain::{Checksum, SourceUrl};

use super::errors::{NO_CREDENTIALS, is_missing_credentials};
use super::service::{S3Service, S3Settings};
use crate::error_text::error_chain;

/// Reads `s3://` sources from one endpoint (client created on first use).
#[derive(Debug, Clone)]
pub struct S3Source {
    settings: S3Settings,
    service: Arc<OnceCell<S3Service>>,
}

/// One object found under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
}

impl S3Source {
    pub fn new(settings: S3Settings) -> Self {
        Self {
            settings,
            service: Arc::new(OnceCell::new()),
        }
    }

    async fn service(&self) -> &S3Service {
        self.service
            .get_or_init(|| S3Service::connect(&self.settings))
            .await
    }

    /// Every object under `prefix` in `bucket` (ListObjectsV2, all pages),
    /// skipping "directory" placeholder keys that end in `/`.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<ListedObject>, DownloadError> {
        let url = format!("s3://{bucket}/{prefix}");
        let mut pages = self
            .service()
            .await
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_error(&url, e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                if key.ends_with('/') {
                    continue;
                }
                found.push(ListedObject {
                    key: key.to_owned(),
                    size: u64::try_from(object.size().unwrap_or(0)).unwrap_or(0),
                });
            }
        }
        Ok(found)
    }
}

/// `bytes START-END/TOTAL` → (START, TOTAL); S3 always knows the total.
fn content_range(value: &str) -> Option<(u64, u64)> {
    let (start, total) = crate::http::parse_content_range(value)?;
    Some((start, total?))
}

/// GetObject/ListObjectsV2 errors as source errors, keeping the class. The
/// SDK already retried what it could: a transient failure is exhausted.
fn map_error<E>(url: &str, err: SdkError<E, HttpResponse>) -> DownloadError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let url = url.to_owned();
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or_default();
            match (code, status) {
                ("NoSuchKey" | "NotFound", _) | (_, 404) if code != "NoSuchBucket" => {
                    DownloadError::NotFound { url }
                }
                ("NoSuchBucket", _) => DownloadError::Forbidden {
                    url,
                    reason: "the bucket does not exist".into(),
                },
                (_, 401 | 403) => DownloadError::PermissionDenied { url },
                (_, 412) => DownloadError::SourceChanged {
                    url,
                    detail: "the object was replaced (its ETag changed)".into(),
                },
                (_, status) => DownloadError::Status {
                    url,
                    status,
                    exhausted: true,
                },
            }
        }
        SdkError::DispatchFailure(_) if is_missing_credentials(&error_chain(&err)) => {
            DownloadError::Forbidden {
                url,
                reason: NO_CREDENTIALS.into(),
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            DownloadError::Connect {
                url,
                reason: error_chain(&err),
                exhausted: true,
            }
        }
        _ => DownloadError::Unexpected {
            url,
            source: Box::new(err),
        },
    }
}

#[async_trait]
impl HttpDownloadPort for S3Source {
    async fn open(&self, request: DownloadRequest) -> Result<Download, DownloadError> {
        let url = request.source.redacted();
        let Some((bucket, key)) = request.source.s3_object() else {
            return Err(DownloadError::Forbidden {
                url,
                reason: "not an s3:// source".into(),
            });
        };
        if key.is_empty() || key.ends_with('/') {
            return Err(DownloadError::Forbidden {
                url,
                reason: "a prefix is not an object: copy it into a directory or prefix DEST".into(),
            });
        }
        let mut get = self
            .service()
            .await
            .client()
            .get_object()
            .bucket(&bucket)
            .key(&key);
        if request.offset > 0 {
            get = get.range(format!("bytes={}-", request.offset));
            match &request.if_range {
                Some(Validator::ETag(etag)) => get = get.if_match(etag),
                Some(Validator::LastModified(date)) => {
                    if let Ok(when) = aws_smithy_types::DateTime::from_str(date, Format::HttpDate) {
                        get = get.if_unmodified_since(when);
                    }
                }
                None => {}
            }
        }
        let out = get.send().await.map_err(|e| map_error(&url, e))?;
        let (offset, total_length) = match out.content_range() {
            Some(range) => {
                let (start, total) =
                    content_range(range).ok_or_else(|| DownloadError::Unexpected {
                        url: url.clone(),
                        source: "a ranged answer without a valid Content-Range".into(),
                    })?;
                (start, Some(total))
            }
            None => (0, out.content_length().and_then(|l| u64::try_from(l).ok())),
        };
        let declared_sha256 = out
            .metadata()
            .and_then(|m| m.get("sha256"))
            .and_then(|hex| Checksum::sha256(hex).ok());
        let meta = SourceMeta {
            total_length,
            offset,
            etag: out.e_tag().map(str::to_owned),
            last_modified: out
                .last_modified()
                .and_then(|t| t.fmt(Format::HttpDate).ok()),
            accepts_ranges: true,
            final_url: SourceUrl::s3(&bucket, &key).unwrap_or(request.source),
            declared_sha256,
            content_disposition: out.content_disposition().map(str::to_owned),
            content_type: out.content_type().map(str::to_owned),
        };
        let body = stream::unfold((out.body, url), |(mut body, url)| async move {
            match body.next().await {
                Some(Ok(bytes)) => Some((Ok(bytes), (body, url))),
                Some(Err(e)) => {
                    let error = DownloadError::Interrupted {
                        url: url.clone(),
                        reason: error_chain(&e),
                    };
                    Some((Err(error), (body, url)))
                }
                None => None,
            }
        });
        Ok(Download {
            meta,
            body: Box::pin(body),
        })
    }

    /// HeadObject: the object's `sha256` metadata (what ferry writes on
    /// the objects it verified), without a body.
    async fn declared_sha256(&self, source: &SourceUrl) -> Result<Option<Checksum>, DownloadError> {
        let url = source.redacted();
        let Some((bucket, key)) = source.s3_object() else {
            return Ok(None);
        };
        let out = self
            .service()
            .await
            .client()
            .head_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| map_error(&url, e))?;
        Ok(out
            .metadata()
            .and_then(|m| m.get("sha256"))
            .and_then(|hex| Checksum::sha256(hex).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        assert_eq!(content_range("bytes 100-199/1000"), Some((100, 1000)));
        assert_eq!(content_range("bytes 5-9/*"), None);
        assert_eq!(content_range("nonsense"), None);
    }
}
