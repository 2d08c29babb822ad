//! Where a job's files go: a directory under the server's storage root, or
//! an S3 bucket and prefix.

use std::fmt;

use thiserror::Error;

use crate::key::ObjectKey;

/// A validated job destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A relative directory under the server's storage root ("" = the root).
    Directory {
        prefix: String,
    },
    S3 {
        bucket: String,
        prefix: String,
    },
}

/// Why a string is not a destination.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidDestination {
    #[error("`{0}` is not a valid bucket name (3-63 characters: a-z, 0-9, `-`, `.`)")]
    Bucket(String),
    #[error("the destination directory `{prefix}` is not usable: {reason}")]
    Prefix { prefix: String, reason: String },
}

fn valid_prefix(prefix: &str) -> Result<String, InvalidDestination> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if prefix.starts_with('/') {
        return Err(InvalidDestination::Prefix {
            prefix: prefix.to_owned(),
            reason: "it must be relative (no leading `/`)".into(),
        });
    }
    ObjectKey::parse(trimmed).map_err(|e| InvalidDestination::Prefix {
        prefix: prefix.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(trimmed.to_owned())
}

impl Destination {
    /// `s3://bucket[/prefix]`, or a relative directory (`""` for the root).
    pub fn parse(raw: &str) -> Result<Self, InvalidDestination> {
        if let Some(rest) = raw.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !ok {
                return Err(InvalidDestination::Bucket(bucket.to_owned()));
            }
            return Ok(Destination::S3 {
                bucket: bucket.to_owned(),
                prefix: valid_prefix(prefix)?,
            });
        }
        Ok(Destination::Directory {
            prefix: valid_prefix(raw)?,
        })
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Directory { prefix } => f.write_str(prefix),
            Destination::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Destination::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        for raw in ["s3://my-bucket/a/b", "s3://my-bucket", "exports/2026", ""] {
            let d = Destination::parse(raw).unwrap();
            assert_eq!(Destination::parse(&d.to_string()).unwrap(), d, "{raw}");
        }
        assert_eq!(
            Destination::parse("s3://b-1/p/").unwrap(),
            Destination::S3 {
                bucket: "b-1".into(),
                prefix: "p".into()
            }
        );
    }

    #[test]
    fn rejects_escapes_and_bad_buckets() {
        assert!(Destination::parse("../etc").is_err());
        assert!(Destination::parse("/abs").is_err());
        assert!(Destination::parse("a/../../b").is_err());
        assert!(Destination::parse("s3://UP/x").is_err());
        assert!(Destination::parse("s3://b/x/../y").is_err());
    }
}
