//! Which destinations a caller may write: a token's scopes. A scope names a
//! directory prefix under the server's storage root, or an S3 bucket (or
//! every bucket) and a key prefix in it; a destination is allowed when it
//! lies at or under one of its caller's scopes. File keys are relative to
//! their job's destination and cannot climb out of it ([`ObjectKey`]), so
//! checking the destination checks every key written.
//!
//! [`ObjectKey`]: crate::ObjectKey

use std::fmt;

use thiserror::Error;

use crate::destination::{Destination, S3Url};
use crate::key::ObjectKey;

/// One allowed place: `*`, `dir:*`, `dir:PREFIX`, `s3://*`,
/// `s3://*/PREFIX`, `s3://BUCKET` or `s3://BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationScope {
    /// Anywhere.
    Any,
    /// A directory destination at or under `prefix` ("" = any directory).
    Directory { prefix: String },
    /// An S3 destination in `bucket` (`None` = any bucket) at or under
    /// `prefix` ("" = the whole bucket).
    S3 {
        bucket: Option<String>,
        prefix: String,
    },
}

/// Why a string is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "`{raw}` is not a destination scope: {reason} (use *, dir:*, dir:PREFIX, s3://*, s3://*/PREFIX, s3://BUCKET or s3://BUCKET/PREFIX)"
)]
pub struct InvalidScope {
    pub raw: String,
    pub reason: String,
}

fn scope_prefix(raw: &str, prefix: &str) -> Result<String, InvalidScope> {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    ObjectKey::parse(trimmed)
        .map(|k| k.as_str().to_owned())
        .map_err(|e| InvalidScope {
            raw: raw.to_owned(),
            reason: e.to_string(),
        })
}

/// `path` is `prefix` or lies under it, by whole path segments.
fn under(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl DestinationScope {
    pub fn parse(raw: &str) -> Result<Self, InvalidScope> {
        let invalid = |reason: &str| InvalidScope {
            raw: raw.to_owned(),
            reason: reason.to_owned(),
        };
        if raw == "*" {
            return Ok(Self::Any);
        }
        if let Some(dir) = raw.strip_prefix("dir:") {
            if dir == "*" {
                return Ok(Self::Directory {
                    prefix: String::new(),
                });
            }
            if dir.is_empty() {
                return Err(invalid(
                    "a dir: scope needs a prefix, or * for every directory",
                ));
            }
            return Ok(Self::Directory {
                prefix: scope_prefix(raw, dir)?,
            });
        }
        if let Some(rest) = raw.strip_prefix("s3://*") {
            let prefix = match rest {
                "" | "/" => "",
                _ => rest
                    .strip_prefix('/')
                    .ok_or_else(|| invalid("`*` stands for a whole bucket name"))?,
            };
            return Ok(Self::S3 {
                bucket: None,
                prefix: scope_prefix(raw, prefix)?,
            });
        }
        if raw.starts_with("s3://") {
            let url = S3Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
            return Ok(Self::S3 {
                bucket: Some(url.bucket),
                prefix: scope_prefix(raw, &url.path)?,
            });
        }
        Err(invalid("it is neither dir: nor s3://"))
    }

    /// The owner's own prefix, in every directory and bucket: what a
    /// non-admin token with no scope of its own may write.
    pub fn own_prefix(owner: &str) -> Result<[Self; 2], InvalidScope> {
        let prefix = scope_prefix(owner, owner)?;
        Ok([
            Self::Directory {
                prefix: prefix.clone(),
            },
            Self::S3 {
                bucket: None,
                prefix,
            },
        ])
    }

    pub fn allows(&self, destination: &Destination) -> bool {
        match (self, destination) {
            (Self::Any, _) => true,
            (Self::Directory { prefix: scope }, Destination::Directory { prefix }) => {
                under(prefix, scope)
            }
            (
                Self::S3 {
                    bucket: scope_bucket,
                    prefix: scope,
                },
                Destination::S3 { bucket, prefix },
            ) => scope_bucket.as_ref().is_none_or(|b| b == bucket) && under(prefix, scope),
            _ => false,
        }
    }
}

impl fmt::Display for DestinationScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Directory { prefix } if prefix.is_empty() => f.write_str("dir:*"),
            Self::Directory { prefix } => write!(f, "dir:{prefix}"),
            Self::S3 { bucket, prefix } => {
                let bucket = bucket.as_deref().unwrap_or("*");
                if prefix.is_empty() {
                    write!(f, "s3://{bucket}")
                } else {
                    write!(f, "s3://{bucket}/{prefix}")
                }
            }
        }
    }
}

/// Where a caller may write: anywhere (admins, an open API), or only at or
/// under its scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WriteScopes {
    #[default]
    Anywhere,
    Only(Vec<DestinationScope>),
}

impl WriteScopes {
    pub fn allows(&self, destination: &Destination) -> bool {
        match self {
            Self::Anywhere => true,
            Self::Only(scopes) => scopes.iter().any(|s| s.allows(destination)),
        }
    }
}

impl fmt::Display for WriteScopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anywhere => f.write_str("*"),
            Self::Only(scopes) => {
                let shown: Vec<String> = scopes.iter().map(ToString::to_string).collect();
                f.write_str(&shown.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(raw: &str) -> Destination {
        Destination::parse(raw).unwrap()
    }

    fn scope(raw: &str) -> DestinationScope {
        DestinationScope::parse(raw).unwrap()
    }

    #[test]
    fn scopes_allow_their_prefix_by_whole_segments() {
        let cases = [
            ("*", "anything", true),
            ("*", "s3://bucket/x", true),
            ("dir:*", "a/b", true),
            ("dir:*", "", true),
            ("dir:*", "s3://bucket/a", false),
            ("dir:team-a", "team-a", true),
            ("dir:team-a/", "team-a/in/deep", true),
            ("dir:team-a", "team-ab", false),
            ("dir:team-a", "team", false),
            ("dir:team-a", "", false),
            ("dir:team-a", "s3://team-a/x", false),
            ("s3://*", "s3://any-bucket", true),
            ("s3://*", "dir", false),
            ("s3://*/alice", "s3://one/alice/x", true),
            ("s3://*/alice", "s3://two/alice", true),
            ("s3://*/alice", "s3://two/alicex", false),
            ("s3://*/alice", "s3://two", false),
            ("s3://data", "s3://data/anything/at/all", true),
            ("s3://data", "s3://data2/x", false),
            ("s3://data/in/", "s3://data/in/2026", true),
            ("s3://data/in", "s3://data/inbox", false),
            ("s3://data/in", "s3://other/in", false),
        ];
        for (s, d, allowed) in cases {
            assert_eq!(scope(s).allows(&dest(d)), allowed, "{s} vs {d}");
        }
    }

    #[test]
    fn bad_scopes_are_refused_and_good_ones_print_back() {
        for bad in [
            "",
            "dir:",
            "dir:/abs",
            "dir:a/../b",
            "s3://",
            "s3://*x/y",
            "s3://UPPER",
            "ftp://x",
            "team-a",
        ] {
            assert!(DestinationScope::parse(bad).is_err(), "{bad}");
        }
        let err = DestinationScope::parse("team-a").unwrap_err().to_string();
        assert!(
            err.contains("`team-a`") && err.contains("dir:PREFIX"),
            "{err}"
        );
        for good in [
            "*",
            "dir:*",
            "dir:a/b",
            "s3://*",
            "s3://*/a",
            "s3://bkt",
            "s3://bkt/a/b",
        ] {
            assert_eq!(scope(good).to_string(), good);
        }
        assert_eq!(scope("dir:a/").to_string(), "dir:a");
        assert_eq!(scope("s3://*/").to_string(), "s3://*");
    }

    #[test]
    fn the_own_prefix_is_the_owners_directory_and_prefix_in_any_bucket() {
        let own = WriteScopes::Only(DestinationScope::own_prefix("alice").unwrap().to_vec());
        assert!(own.allows(&dest("alice")));
        assert!(own.allows(&dest("alice/x")));
        assert!(own.allows(&dest("s3://bkt/alice/y")));
        assert!(!own.allows(&dest("bob")));
        assert!(!own.allows(&dest("")));
        assert!(!own.allows(&dest("s3://bkt/bob")));
        assert!(!own.allows(&dest("s3://bkt")));
        assert_eq!(own.to_string(), "dir:alice, s3://*/alice");
        assert!(WriteScopes::Anywhere.allows(&dest("s3://bkt")));
    }
}
