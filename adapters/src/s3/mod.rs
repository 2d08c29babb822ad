//! S3 (aws-sdk-s3): the per-call-bucket [`S3Service`] (ferry's S3
//! operations, each naming its bucket) and [`S3Storage`], the
//! `FileStoragePort` for one bucket and prefix, and [`S3Source`], S3
//! objects as sources (`ferry copy s3://…`).
//!
//! Client settings, measured against Garage 2.5.0 (docs/s3.md):
//! path-style addressing, `request_checksum_calculation(WhenRequired)` (a
//! streamed UploadPart with the SDK's default flexible checksums is rejected
//! by Garage with "Invalid payload signature"), and the SDK's stalled-stream
//! protection off for uploads (a slow *source* must not fail the upload;
//! ferry detects stalls at the source). Integrity does not rely on
//! server-side checksums: each part's MD5 is computed in flight and compared
//! with the ETag the server returns, and the whole file's SHA-256/MD5 are
//! verified before CompleteMultipartUpload.

mod attributes;
mod body;
mod errors;
mod service;
mod source;
mod staged;
mod storage;
mod write;

pub use attributes::DigestMetadata;
pub use errors::map_sdk_error;
pub use service::{BatchDeleteReport, IncompleteUpload, S3Service, S3Settings};
pub use source::{ListedObject, S3Source};
pub use staged::{MultipartState, PartRecord};
pub use storage::{S3Storage, S3StorageConfig};
