//! SDK errors mapped to `StorageError` at the edge, keeping the class.

use aws_sdk_s3::config::http::HttpResponse;

use crate::error_text::error_chain;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use ferry_domain::ports::StorageError;
use ferry_domain::retry::is_transient_status;

/// What to say when the SDK found no credentials (S3 as destination or
/// source).
pub(super) const NO_CREDENTIALS: &str = "no usable AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE";

/// Whether a dispatch failure's text is the SDK failing to load credentials.
pub(super) fn is_missing_credentials(reason: &str) -> bool {
    reason.contains("loading credentials")
}

/// Maps an S3 operation error whose request the SDK could retry (its body
/// is in memory or empty: the SDK's standard retries ran), so a transient
/// failure is marked exhausted. `location` names what was being accessed.
pub fn map_sdk_error<E>(location: &str, err: SdkError<E, HttpResponse>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    map(location, err, true)
}

/// Maps the error of a request whose body was streamed from the source: the
/// SDK cannot retry it, so a transient failure is left to the caller
/// (ProcessFile re-reads the part, or the transfer retries).
pub fn map_streamed_error<E>(location: &str, err: SdkError<E, HttpResponse>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    map(location, err, false)
}

fn map<E>(location: &str, err: SdkError<E, HttpResponse>, exhausted: bool) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let location = location.to_owned();
    let reason = error_chain(&err);
    match &err {
        SdkError::DispatchFailure(_) if is_missing_credentials(&reason) => {
            StorageError::PermissionDenied {
                location,
                reason: NO_CREDENTIALS.into(),
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            StorageError::Unavailable {
                location,
                reason,
                exhausted,
            }
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default().to_owned();
            let message = service.err().message().unwrap_or_default().to_owned();
            let status = service.raw().status().as_u16();
            let reason = if message.is_empty() {
                format!("{code} (HTTP {status})")
            } else {
                format!("{code}: {message} (HTTP {status})")
            };
            match (code.as_str(), status) {
                ("NoSuchKey" | "NotFound" | "NoSuchUpload", _) | (_, 404)
                    if code != "NoSuchBucket" =>
                {
                    StorageError::NotFound { location }
                }
                ("NoSuchBucket", _) => StorageError::InvalidDestination {
                    location,
                    reason: "the bucket does not exist".into(),
                },
                // Only ferry's no-clobber creates are conditional
                // (`If-None-Match: *`); a source's If-Match is mapped by
                // the source.
                ("PreconditionFailed", _) | (_, 412) => StorageError::AlreadyExists { location },
                ("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch", _)
                | (_, 401 | 403) => StorageError::PermissionDenied { location, reason },
                ("SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout", _) => {
                    StorageError::Unavailable {
                        location,
                        reason,
                        exhausted,
                    }
                }
                (_, status) if is_transient_status(status) => StorageError::Unavailable {
                    location,
                    reason,
                    exhausted,
                },
                ("EntityTooLarge" | "QuotaExceeded", _) => StorageError::StorageFull { location },
                (_, 300..=399) => StorageError::InvalidDestination {
                    location,
                    reason: format!(
                        "the server redirected the request ({reason}): the bucket is probably in another region; pass --region"
                    ),
                },
                _ => StorageError::Unexpected {
                    location,
                    source: reason.into(),
                },
            }
        }
        _ => StorageError::Unexpected {
            location,
            source: Box::new(err),
        },
    }
}
