//! What an object carries besides its bytes, for whoever reads it next:
//! Content-Type and the other representation headers, user metadata, tags,
//! storage class, server-side encryption and a canned ACL. Validated here;
//! the S3 adapter puts them on the wire at create, a directory keeps what
//! a file can (see docs/s3.md).

use std::fmt;

use thiserror::Error;

/// Metadata names ferry writes itself (the verified digests).
const RESERVED_METADATA: [&str; 2] = ["sha256", "md5"];
/// S3's limit on all user metadata, names and values together.
const MAX_METADATA_BYTES: usize = 2048;
/// S3's limit on tags per object.
const MAX_TAGS: usize = 10;

const ACLS: [&str; 7] = [
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
];

const STORAGE_CLASSES: [&str; 9] = [
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "EXPRESS_ONEZONE",
];

/// Why an attribute cannot be used; names the flag's subject.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidAttribute {
    #[error("`{0}` is not KEY=VALUE")]
    NotPair(String),
    #[error("the metadata name `{0}` is not valid: use letters, digits, - and _")]
    MetadataName(String),
    #[error("the metadata name `{0}` is ferry's own (it records the verified digest)")]
    ReservedMetadata(String),
    #[error("user metadata is over S3's {MAX_METADATA_BYTES} bytes")]
    MetadataTooLarge,
    #[error("at most {MAX_TAGS} tags per object")]
    TooManyTags,
    #[error("the tag `{0}` is too long (keys up to 128 characters, values up to 256)")]
    TagTooLong(String),
    #[error("`{name}` holds a control character")]
    Control { name: String },
    #[error("`{0}` is not a storage class ({list})", list = STORAGE_CLASSES.join(", "))]
    StorageClass(String),
    #[error("`{0}` is not a canned ACL ({list})", list = ACLS.join(", "))]
    Acl(String),
    #[error("--sse-kms-key-id needs --sse aws:kms")]
    KmsKeyWithoutKms,
}

/// Server-side encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// SSE-S3 (`AES256`).
    S3Managed,
    /// SSE-KMS (`aws:kms`), with a key id or the bucket's default key.
    Kms { key_id: Option<String> },
}

/// The attributes of one object. Empty by default: the storage then sets
/// only what it must (Content-Type: see [`ObjectAttributes::content_type`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ObjectAttributes {
    /// Set explicitly; otherwise the source's, else a guess from the key.
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    /// Stored as given; ferry never decompresses.
    pub content_encoding: Option<String>,
    metadata: Vec<(String, String)>,
    tags: Vec<(String, String)>,
    storage_class: Option<String>,
    encryption: Option<Encryption>,
    acl: Option<String>,
    /// A directory destination gives the file the source's Last-Modified
    /// as its mtime (`--preserve-mtime`).
    pub preserve_mtime: bool,
}

impl fmt::Debug for ObjectAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectAttributes")
            .field("content_type", &self.content_type)
            .field("cache_control", &self.cache_control)
            .field("content_disposition", &self.content_disposition)
            .field("content_encoding", &self.content_encoding)
            .field("metadata", &self.metadata)
            .field("tags", &self.tags)
            .field("storage_class", &self.storage_class)
            .field("encryption", &self.encryption)
            .field("acl", &self.acl)
            .field("preserve_mtime", &self.preserve_mtime)
            .finish()
    }
}

/// `KEY=VALUE`.
pub fn parse_pair(raw: &str) -> Result<(String, String), InvalidAttribute> {
    let (k, v) = raw
        .split_once('=')
        .ok_or_else(|| InvalidAttribute::NotPair(raw.to_owned()))?;
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

fn no_control(name: &str, value: &str) -> Result<(), InvalidAttribute> {
    if value.chars().any(char::is_control) {
        return Err(InvalidAttribute::Control {
            name: name.to_owned(),
        });
    }
    Ok(())
}

impl ObjectAttributes {
    /// Checks and sets the representation headers.
    pub fn with_headers(
        mut self,
        content_type: Option<String>,
        cache_control: Option<String>,
        content_disposition: Option<String>,
        content_encoding: Option<String>,
    ) -> Result<Self, InvalidAttribute> {
        for (name, value) in [
            ("content type", &content_type),
            ("cache control", &cache_control),
            ("content disposition", &content_disposition),
            ("content encoding", &content_encoding),
        ] {
            if let Some(v) = value {
                no_control(name, v)?;
            }
        }
        self.content_type = content_type;
        self.cache_control = cache_control;
        self.content_disposition = content_disposition;
        self.content_encoding = content_encoding;
        Ok(self)
    }

    /// User metadata (`x-amz-meta-NAME`); names are stored lowercase.
    pub fn with_metadata(mut self, pairs: Vec<(String, String)>) -> Result<Self, InvalidAttribute> {
        let mut total = 0;
        let mut metadata = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            let name = name.to_ascii_lowercase();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(InvalidAttribute::MetadataName(name));
            }
            if RESERVED_METADATA.contains(&name.as_str()) {
                return Err(InvalidAttribute::ReservedMetadata(name));
            }
            no_control(&name, &value)?;
            total += name.len() + value.len();
            metadata.push((name, value));
        }
        if total > MAX_METADATA_BYTES {
            return Err(InvalidAttribute::MetadataTooLarge);
        }
        self.metadata = metadata;
        Ok(self)
    }

    pub fn with_tags(mut self, pairs: Vec<(String, String)>) -> Result<Self, InvalidAttribute> {
        if pairs.len() > MAX_TAGS {
            return Err(InvalidAttribute::TooManyTags);
        }
        for (k, v) in &pairs {
            if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
                return Err(InvalidAttribute::TagTooLong(k.clone()));
            }
            no_control(k, v)?;
        }
        self.tags = pairs;
        Ok(self)
    }

    pub fn with_storage_class(mut self, class: Option<&str>) -> Result<Self, InvalidAttribute> {
        self.storage_class = class
            .map(|c| {
                let upper = c.to_ascii_uppercase();
                STORAGE_CLASSES
                    .contains(&upper.as_str())
                    .then_some(upper)
                    .ok_or_else(|| InvalidAttribute::StorageClass(c.to_owned()))
            })
            .transpose()?;
        Ok(self)
    }

    pub fn with_encryption(
        mut self,
        sse: Option<Encryption>,
        kms_key_id: Option<String>,
    ) -> Result<Self, InvalidAttribute> {
        self.encryption = match (sse, kms_key_id) {
            (Some(Encryption::Kms { .. }), key_id) => Some(Encryption::Kms { key_id }),
            (_, Some(_)) => return Err(InvalidAttribute::KmsKeyWithoutKms),
            (other, None) => other,
        };
        Ok(self)
    }

    pub fn with_acl(mut self, acl: Option<&str>) -> Result<Self, InvalidAttribute> {
        self.acl = acl
            .map(|a| {
                ACLS.contains(&a)
                    .then(|| a.to_owned())
                    .ok_or_else(|| InvalidAttribute::Acl(a.to_owned()))
            })
            .transpose()?;
        Ok(self)
    }

    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    pub fn tags(&self) -> &[(String, String)] {
        &self.tags
    }

    pub fn storage_class(&self) -> Option<&str> {
        self.storage_class.as_deref()
    }

    pub fn encryption(&self) -> Option<&Encryption> {
        self.encryption.as_ref()
    }

    pub fn acl(&self) -> Option<&str> {
        self.acl.as_deref()
    }

    /// The tags as a URL-encoded query (`x-amz-tagging`).
    pub fn tagging(&self) -> Option<String> {
        (!self.tags.is_empty()).then(|| {
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(self.tags.iter())
                .finish()
        })
    }
}

/// Attributes as a caller wrote them (a job's or a file's `attributes`,
/// a stored row), before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestedAttributes {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub metadata: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
    pub storage_class: Option<String>,
    /// `AES256` or `aws:kms`.
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub acl: Option<String>,
    pub preserve_mtime: bool,
}

/// Why requested attributes are not valid: the field (e.g. `metadata`,
/// `sse`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct InvalidAttributes {
    pub field: &'static str,
    pub message: String,
}

fn at(field: &'static str) -> impl Fn(InvalidAttribute) -> InvalidAttributes {
    move |e| InvalidAttributes {
        field,
        message: e.to_string(),
    }
}

impl RequestedAttributes {
    /// This request with `over`'s values where `over` sets them: scalar
    /// fields are replaced, metadata and tags merged by name (`over` wins).
    #[must_use]
    pub fn overlaid(mut self, over: &RequestedAttributes) -> RequestedAttributes {
        fn pick(base: &mut Option<String>, over: &Option<String>) {
            if over.is_some() {
                base.clone_from(over);
            }
        }
        fn merge(base: &mut Vec<(String, String)>, over: &[(String, String)]) {
            for (k, v) in over {
                match base.iter_mut().find(|(bk, _)| bk.eq_ignore_ascii_case(k)) {
                    Some(entry) => entry.1.clone_from(v),
                    None => base.push((k.clone(), v.clone())),
                }
            }
        }
        pick(&mut self.content_type, &over.content_type);
        pick(&mut self.cache_control, &over.cache_control);
        pick(&mut self.content_disposition, &over.content_disposition);
        pick(&mut self.content_encoding, &over.content_encoding);
        merge(&mut self.metadata, &over.metadata);
        merge(&mut self.tags, &over.tags);
        pick(&mut self.storage_class, &over.storage_class);
        if over.sse.is_some() {
            self.sse.clone_from(&over.sse);
            self.sse_kms_key_id.clone_from(&over.sse_kms_key_id);
        } else {
            pick(&mut self.sse_kms_key_id, &over.sse_kms_key_id);
        }
        pick(&mut self.acl, &over.acl);
        self.preserve_mtime |= over.preserve_mtime;
        self
    }

    /// Validates every field; the error names the first bad one.
    pub fn validate(self) -> Result<ObjectAttributes, InvalidAttributes> {
        let sse = self
            .sse
            .as_deref()
            .map(parse_encryption)
            .transpose()
            .map_err(|message| InvalidAttributes {
                field: "sse",
                message,
            })?;
        for (field, value) in [
            ("content_type", &self.content_type),
            ("cache_control", &self.cache_control),
            ("content_disposition", &self.content_disposition),
            ("content_encoding", &self.content_encoding),
        ] {
            if let Some(v) = value {
                no_control(field, v).map_err(at(field))?;
            }
        }
        let mut attributes = ObjectAttributes::default()
            .with_headers(
                self.content_type,
                self.cache_control,
                self.content_disposition,
                self.content_encoding,
            )
            .map_err(at("content_type"))?
            .with_metadata(self.metadata)
            .map_err(at("metadata"))?
            .with_tags(self.tags)
            .map_err(at("tags"))?
            .with_storage_class(self.storage_class.as_deref())
            .map_err(at("storage_class"))?
            .with_encryption(sse, self.sse_kms_key_id)
            .map_err(at("sse_kms_key_id"))?
            .with_acl(self.acl.as_deref())
            .map_err(at("acl"))?;
        attributes.preserve_mtime = self.preserve_mtime;
        Ok(attributes)
    }
}

impl ObjectAttributes {
    /// The request these attributes validate from (for storing them).
    pub fn to_requested(&self) -> RequestedAttributes {
        let (sse, sse_kms_key_id) = match &self.encryption {
            None => (None, None),
            Some(Encryption::S3Managed) => (Some("AES256".to_owned()), None),
            Some(Encryption::Kms { key_id }) => (Some("aws:kms".to_owned()), key_id.clone()),
        };
        RequestedAttributes {
            content_type: self.content_type.clone(),
            cache_control: self.cache_control.clone(),
            content_disposition: self.content_disposition.clone(),
            content_encoding: self.content_encoding.clone(),
            metadata: self.metadata.clone(),
            tags: self.tags.clone(),
            storage_class: self.storage_class.clone(),
            sse,
            sse_kms_key_id,
            acl: self.acl.clone(),
            preserve_mtime: self.preserve_mtime,
        }
    }

    /// True when nothing is set (the storage's defaults apply).
    pub fn is_default(&self) -> bool {
        *self == ObjectAttributes::default()
    }
}

/// `--sse AES256|aws:kms`.
pub fn parse_encryption(raw: &str) -> Result<Encryption, String> {
    match raw {
        "AES256" => Ok(Encryption::S3Managed),
        "aws:kms" => Ok(Encryption::Kms { key_id: None }),
        other => Err(format!("`{other}` is not AES256 or aws:kms")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_attributes_overlay_validate_and_round_trip() {
        let job = RequestedAttributes {
            content_type: Some("text/csv".into()),
            metadata: vec![
                ("team".into(), "data".into()),
                ("env".into(), "prod".into()),
            ],
            sse: Some("aws:kms".into()),
            sse_kms_key_id: Some("k-1".into()),
            ..RequestedAttributes::default()
        };
        let file = RequestedAttributes {
            cache_control: Some("max-age=60".into()),
            metadata: vec![("ENV".into(), "test".into())],
            sse: Some("AES256".into()),
            ..RequestedAttributes::default()
        };
        let merged = job.clone().overlaid(&file).validate().unwrap();
        assert_eq!(merged.content_type.as_deref(), Some("text/csv"));
        assert_eq!(merged.cache_control.as_deref(), Some("max-age=60"));
        assert_eq!(
            merged.metadata(),
            &[
                ("team".to_owned(), "data".to_owned()),
                ("env".to_owned(), "test".to_owned())
            ]
        );
        // The file's SSE replaces the job's, key id included.
        assert_eq!(merged.encryption(), Some(&Encryption::S3Managed));
        let again = merged.to_requested().validate().unwrap();
        assert_eq!(again, merged);
        let kms = job.validate().unwrap();
        assert_eq!(kms.to_requested().validate().unwrap(), kms);
        assert!(ObjectAttributes::default().is_default());
        assert!(!kms.is_default());

        for (bad, field) in [
            (
                RequestedAttributes {
                    sse: Some("rot13".into()),
                    ..RequestedAttributes::default()
                },
                "sse",
            ),
            (
                RequestedAttributes {
                    cache_control: Some("a\nb".into()),
                    ..RequestedAttributes::default()
                },
                "cache_control",
            ),
            (
                RequestedAttributes {
                    metadata: vec![("sha256".into(), "x".into())],
                    ..RequestedAttributes::default()
                },
                "metadata",
            ),
            (
                RequestedAttributes {
                    sse_kms_key_id: Some("k".into()),
                    ..RequestedAttributes::default()
                },
                "sse_kms_key_id",
            ),
            (
                RequestedAttributes {
                    acl: Some("everyone".into()),
                    ..RequestedAttributes::default()
                },
                "acl",
            ),
        ] {
            assert_eq!(bad.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn validates_each_attribute_with_a_reason() {
        let a = ObjectAttributes::default()
            .with_metadata(vec![("Team".into(), "data".into())])
            .unwrap()
            .with_tags(vec![("env".into(), "prod & test".into())])
            .unwrap()
            .with_storage_class(Some("standard_ia"))
            .unwrap()
            .with_acl(Some("bucket-owner-full-control"))
            .unwrap()
            .with_encryption(Some(Encryption::Kms { key_id: None }), Some("k-1".into()))
            .unwrap();
        assert_eq!(a.metadata(), &[("team".to_owned(), "data".to_owned())]);
        assert_eq!(a.storage_class(), Some("STANDARD_IA"));
        assert_eq!(a.tagging().as_deref(), Some("env=prod+%26+test"));
        assert_eq!(
            a.encryption(),
            Some(&Encryption::Kms {
                key_id: Some("k-1".into())
            })
        );
        let d = ObjectAttributes::default();
        assert!(matches!(
            d.clone().with_metadata(vec![("sha256".into(), "x".into())]),
            Err(InvalidAttribute::ReservedMetadata(_))
        ));
        assert!(matches!(
            d.clone()
                .with_metadata(vec![("bad name".into(), "x".into())]),
            Err(InvalidAttribute::MetadataName(_))
        ));
        assert!(matches!(
            d.clone()
                .with_metadata(vec![("big".into(), "x".repeat(3000))]),
            Err(InvalidAttribute::MetadataTooLarge)
        ));
        assert!(d.clone().with_storage_class(Some("COLD")).is_err());
        assert!(d.clone().with_acl(Some("everyone")).is_err());
        assert_eq!(
            d.clone()
                .with_encryption(Some(Encryption::S3Managed), Some("k".into())),
            Err(InvalidAttribute::KmsKeyWithoutKms)
        );
        let many: Vec<_> = (0..11).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_eq!(
            d.clone().with_tags(many),
            Err(InvalidAttribute::TooManyTags)
        );
        assert!(
            d.with_headers(Some("text/plain\r\nX: y".into()), None, None, None)
                .is_err()
        );
        assert_eq!(parse_pair("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_pair("novalue").is_err());
    }
}
