//! An object's attributes on the wire: one place that puts them on every
//! request that creates an object (PutObject, CreateMultipartUpload, the
//! self-copy of `--digest-metadata copy`), and the digest metadata modes.

use std::collections::HashMap;

/// How the verified digests get onto an object whose digest was not known
/// when it was created (`--digest-metadata`). A digest known at start
/// (`--sha256`, `--md5`, a job file's, an S3 source's) always goes on the
/// object as `sha256`/`md5` metadata at create, except with `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DigestMetadata {
    /// No second write: the digest is in the result (and the job) only.
    #[default]
    Auto,
    /// Object tags `sha256`/`md5`, written once after the commit
    /// (PutObjectTagging), where the server implements tagging.
    Tag,
    /// A server-side self-copy replacing the metadata (a second write: a
    /// second ObjectCreated event and version; CopyObject stops at 5 GiB).
    Copy,
    /// Never: not even a digest known at start.
    None,
}

/// Applies `$attrs` (an `ObjectAttributes`) and the user metadata
/// `$metadata` to an S3 create request builder; `tags` as well unless the
/// request is a copy (which keeps the object's tags).
macro_rules! with_attributes {
    ($builder:expr, $attrs:expr, $metadata:expr, tags: $tags:expr) => {{
        use aws_sdk_s3::types::{ObjectCannedAcl, ServerSideEncryption, StorageClass};
        use ferry_domain::Encryption;
        let a: &ferry_domain::ObjectAttributes = $attrs;
        let mut b = $builder
            .set_content_type(a.content_type.clone())
            .set_cache_control(a.cache_control.clone())
            .set_content_disposition(a.content_disposition.clone())
            .set_content_encoding(a.content_encoding.clone())
            .set_metadata(Some($metadata))
            .set_storage_class(a.storage_class().map(StorageClass::from))
            .set_acl(a.acl().map(ObjectCannedAcl::from));
        if $tags {
            b = b.set_tagging(a.tagging());
        }
        match a.encryption() {
            Some(Encryption::S3Managed) => {
                b = b.server_side_encryption(ServerSideEncryption::Aes256);
            }
            Some(Encryption::Kms { key_id }) => {
                b = b
                    .server_side_encryption(ServerSideEncryption::AwsKms)
                    .set_ssekms_key_id(key_id.clone());
            }
            None => {}
        }
        b
    }};
}
pub(super) use with_attributes;

/// The user metadata of an object: the caller's, plus the digests.
pub(super) fn user_metadata(
    attributes: &ferry_domain::ObjectAttributes,
    digests: HashMap<String, String>,
) -> HashMap<String, String> {
    let mut all: HashMap<String, String> = attributes.metadata().iter().cloned().collect();
    all.extend(digests);
    all
}
