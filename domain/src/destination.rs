//! Where files go: a job's directory under the server's storage root, a
//! directory named on the command line, or an S3 bucket and prefix. Holds
//! the one `s3://` parser ([`S3Url`]) and `ferry copy`'s DEST rule
//! ([`CopyTarget`]).

use std::fmt;

use thiserror::Error;

use crate::key::ObjectKey;
use crate::source::SourceUrl;

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
    /// A directory of this machine named on the command line (`ferry
    /// copy`), absolute or relative to the working directory. Never parsed
    /// from a job request: [`Destination::parse`] does not produce it.
    Local {
        path: String,
    },
    /// Standard output (`ferry copy SOURCE -`): bytes are written as they
    /// arrive, so a failed check cannot unwrite them. Never parsed from a
    /// job request.
    Stdout,
}

/// Why a string is not a destination.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidDestination {
    #[error("`{0}` is not a valid bucket name (3-63 characters: a-z, 0-9, `-`, `.`)")]
    Bucket(String),
    #[error("the destination directory `{prefix}` is not usable: {reason}")]
    Prefix { prefix: String, reason: String },
    #[error("`{0}` is not an s3:// URL")]
    NotS3(String),
}

/// `s3://bucket[/path]` parsed: the one `s3://` parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// What follows the bucket, without a trailing `/` (may be empty).
    pub path: String,
    /// The URL ended in `/` (or had no path): it names a "directory".
    pub is_prefix: bool,
}

impl S3Url {
    pub fn parse(raw: &str) -> Result<Self, InvalidDestination> {
        let rest = raw
            .strip_prefix("s3://")
            .ok_or_else(|| InvalidDestination::NotS3(raw.to_owned()))?;
        let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_bucket {
            return Err(InvalidDestination::Bucket(bucket.to_owned()));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            path: path.trim_end_matches('/').to_owned(),
            is_prefix: path.is_empty() || path.ends_with('/'),
        })
    }
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
        if raw.starts_with("s3://") {
            let url = S3Url::parse(raw)?;
            return Ok(Destination::S3 {
                bucket: url.bucket,
                prefix: valid_prefix(&url.path)?,
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
            Destination::Local { path } => f.write_str(path),
            Destination::Stdout => f.write_str("-"),
            Destination::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Destination::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Where `ferry copy` puts one file: a destination and the key in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyTarget {
    pub destination: Destination,
    pub key: ObjectKey,
}

/// Why DEST cannot take the file; the message says what to give instead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct InvalidCopyTarget(pub String);

impl CopyTarget {
    /// `ferry copy`'s DEST rule. `s3://bucket/key`; `s3://bucket/prefix/`
    /// (the file keeps the source's name); a directory (`raw` ends in `/`,
    /// is `.`/`..`, or `is_dir`: it exists as one) where the file keeps the
    /// source's name; else a file path.
    ///
    /// `-` is standard output (a file named `-` is `./-`).
    pub fn parse(raw: &str, source: &SourceUrl, is_dir: bool) -> Result<Self, InvalidCopyTarget> {
        if raw == "-" {
            let name = source.file_name().unwrap_or_else(|| "stdout".to_owned());
            return Ok(Self {
                key: ObjectKey::parse(&name)
                    .or_else(|_| ObjectKey::parse("stdout"))
                    .map_err(|e| InvalidCopyTarget(format!("DEST -: {e}")))?,
                destination: Destination::Stdout,
            });
        }
        if raw.starts_with("s3://") {
            let url = S3Url::parse(raw).map_err(|e| InvalidCopyTarget(format!("DEST: {e}")))?;
            if url.is_prefix {
                return Ok(Self {
                    key: source_file_name(source, raw)?,
                    destination: Destination::S3 {
                        bucket: url.bucket,
                        prefix: url.path,
                    },
                });
            }
            let key = ObjectKey::parse(&url.path)
                .map_err(|e| InvalidCopyTarget(format!("DEST key `{}`: {e}", url.path)))?;
            return Ok(Self {
                key,
                destination: Destination::S3 {
                    bucket: url.bucket,
                    prefix: String::new(),
                },
            });
        }
        if raw.contains("://") {
            return Err(InvalidCopyTarget(format!(
                "DEST `{raw}` is not a local path; give a directory (ending in /) or a file path"
            )));
        }
        if raw.ends_with('/') || raw == "." || raw == ".." || is_dir {
            return Ok(Self {
                key: source_file_name(source, raw)?,
                destination: Destination::Local {
                    path: raw.to_owned(),
                },
            });
        }
        let (parent, name) = match raw.rsplit_once('/') {
            Some((parent, name)) => (if parent.is_empty() { "/" } else { parent }, name),
            None => (".", raw),
        };
        if name.is_empty() || name == "." || name == ".." {
            return Err(InvalidCopyTarget(format!("DEST `{raw}` has no file name")));
        }
        let key = ObjectKey::parse(name)
            .map_err(|e| InvalidCopyTarget(format!("DEST file name: {e}")))?;
        Ok(Self {
            key,
            destination: Destination::Local {
                path: parent.to_owned(),
            },
        })
    }
}

/// The key a "directory" DEST gives the file: the source's name.
fn source_file_name(source: &SourceUrl, raw: &str) -> Result<ObjectKey, InvalidCopyTarget> {
    if source.scheme() == crate::source::SourceScheme::Stdin {
        return Err(InvalidCopyTarget(format!(
            "standard input has no file name: give DEST with one, e.g. {}file.bin",
            if raw.ends_with('/') {
                raw.to_owned()
            } else {
                format!("{raw}/")
            }
        )));
    }
    let name = source.file_name().ok_or_else(|| {
        InvalidCopyTarget(format!(
            "cannot name the file from SOURCE {source}: its URL has no file name; give DEST with a file name, e.g. {}file.bin",
            if raw.ends_with('/') {
                raw.to_owned()
            } else {
                format!("{raw}/")
            }
        ))
    })?;
    ObjectKey::parse(&name).map_err(|e| {
        InvalidCopyTarget(format!(
            "the source's file name `{name}` cannot be used: {e}"
        ))
    })
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

    #[test]
    fn parses_s3_urls_once() {
        let t = S3Url::parse("s3://my-bucket/a/b/").unwrap();
        assert_eq!(
            (t.bucket.as_str(), t.path.as_str(), t.is_prefix),
            ("my-bucket", "a/b", true)
        );
        let t = S3Url::parse("s3://my-bucket/a/b.bin").unwrap();
        assert_eq!((t.path.as_str(), t.is_prefix), ("a/b.bin", false));
        let t = S3Url::parse("s3://my-bucket").unwrap();
        assert!(t.is_prefix && t.path.is_empty());
        assert!(S3Url::parse("s3://A_B/x").is_err());
        assert!(S3Url::parse("http://x/y").is_err());
    }

    #[test]
    fn copy_targets_follow_dest_rules() {
        let source = SourceUrl::parse("http://h/dir/file.bin?sig=1").unwrap();
        let t = |raw: &str, is_dir| CopyTarget::parse(raw, &source, is_dir);
        let local = |path: &str| Destination::Local { path: path.into() };
        let key = |k: &str| ObjectKey::parse(k).unwrap();
        assert_eq!(t("out/", false).unwrap().destination, local("out/"));
        assert_eq!(t("out/", false).unwrap().key, key("file.bin"));
        assert_eq!(t("out", true).unwrap().destination, local("out"));
        assert_eq!(t("out/x.bin", false).unwrap().key, key("x.bin"));
        assert_eq!(t("out/x.bin", false).unwrap().destination, local("out"));
        assert_eq!(t("x.bin", false).unwrap().destination, local("."));
        assert_eq!(t("/x.bin", false).unwrap().destination, local("/"));
        let s3 = t("s3://b-1/p/", false).unwrap();
        assert_eq!(
            s3.destination,
            Destination::S3 {
                bucket: "b-1".into(),
                prefix: "p".into()
            }
        );
        assert_eq!(s3.key, key("file.bin"));
        let s3 = t("s3://b-1/p/k.bin", false).unwrap();
        assert_eq!(s3.key, key("p/k.bin"));
        assert!(t("s3://B/x", false).unwrap_err().0.starts_with("DEST: "));
        assert!(
            t("http://h/x", false)
                .unwrap_err()
                .0
                .contains("not a local path")
        );
        let nameless = SourceUrl::parse("http://h/").unwrap();
        let e = CopyTarget::parse("out", &nameless, true).unwrap_err();
        assert!(e.0.contains("e.g. out/file.bin"), "{e}");
    }

    #[test]
    fn dash_is_standard_output_and_stdin_needs_a_named_dest() {
        let source = SourceUrl::parse("http://h/dir/file.bin").unwrap();
        let out = CopyTarget::parse("-", &source, false).unwrap();
        assert_eq!(out.destination, Destination::Stdout);
        assert_eq!(out.destination.to_string(), "-");
        // `./-` is a file named `-`.
        let file = CopyTarget::parse("./-", &source, false).unwrap();
        assert_eq!(file.destination, Destination::Local { path: ".".into() });
        assert_eq!(file.key.as_str(), "-");
        let stdin = SourceUrl::stdin().unwrap();
        assert_eq!(stdin.to_string(), "stdin");
        assert_eq!(stdin.file_name(), None);
        let e = CopyTarget::parse("out/", &stdin, false).unwrap_err();
        assert!(e.0.contains("standard input has no file name"), "{e}");
        let named = CopyTarget::parse("out/x.txt", &stdin, false).unwrap();
        assert_eq!(named.key.as_str(), "x.txt");
        assert_eq!(
            CopyTarget::parse("-", &stdin, false).unwrap().destination,
            Destination::Stdout
        );
        // No URL parses to stdin.
        assert!(SourceUrl::parse("stdin:-").is_err());
    }
}
