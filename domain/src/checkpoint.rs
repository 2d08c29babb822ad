//! Crash-proof transfers: what is saved so that a transfer killed at any
//! point continues from where it stopped, and the retry policy that decides
//! when to try again.
//!
//! A [`Checkpoint`] pairs three facts that must agree at one byte offset:
//! the source identity (so a changed source is never spliced), the hash
//! states at that offset (so the final SHA-256/MD5 cover every byte), and the
//! staged write's durable state at that offset ([`StagedState`]: an S3
//! upload id and its completed parts, or a temp file and its synced length).

use std::fmt;

use thiserror::Error;

use crate::key::ObjectKey;
use crate::ports::download::Validator;

/// Names one transfer across restarts: `job-<job id>-<task index>` for job
/// tasks, a digest of source and destination for `ferry copy`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(String);

/// A transfer id that is empty, too long or has characters other than
/// `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid transfer id {0:?}: use 1-200 characters of A-Z a-z 0-9 . _ -")]
pub struct InvalidTransferId(pub String);

impl TransferId {
    pub fn parse(raw: &str) -> Result<Self, InvalidTransferId> {
        let ok = !raw.is_empty()
            && raw.len() <= 200
            && !raw.starts_with('.')
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidTransferId(raw.to_owned()))
        }
    }

    /// The id of a job's file task.
    pub fn for_task(job: &crate::job::JobId, index: usize) -> Self {
        // A JobId is already restricted to [A-Za-z0-9_-].
        Self(format!("job-{job}-{index}"))
    }

    /// The job and task index of a job task's id.
    pub fn task(&self) -> Option<(crate::job::JobId, usize)> {
        let rest = self.0.strip_prefix("job-")?;
        let (job, index) = rest.rsplit_once('-')?;
        Some((crate::job::JobId::parse(job).ok()?, index.parse().ok()?))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What identifies the source's content: resuming is only allowed against the
/// same URL, length and validator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIdentity {
    /// SHA-256 (hex) of the full URL: compares URLs without writing a
    /// presigned query string to disk.
    pub url_sha256: String,
    pub length: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl SourceIdentity {
    /// The validator a resumed range request sends as `If-Range`.
    pub fn validator(&self) -> Option<Validator> {
        Validator::best(self.etag.as_deref(), self.last_modified.as_deref())
    }

    /// Whether a fresh response describes the same content.
    pub fn same_content(&self, length: Option<u64>, validator: Option<&Validator>) -> bool {
        length == Some(self.length) && validator.is_some() && validator == self.validator().as_ref()
    }
}

/// A serialized hasher state at a byte offset (sha2/md-5 `SerializableState`,
/// about 100 bytes each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashState {
    pub bytes: u64,
    pub sha256: Vec<u8>,
    pub md5: Option<Vec<u8>>,
}

/// The durable part of a staged write, enough for the storage adapter that
/// made it to take it up again in another process. Opaque here: the domain
/// and the application see which adapter's it is (`kind`), the bytes it
/// holds for good (`committed`) and a `token` only that adapter reads (an
/// S3 upload id with its parts, a temp file's path), so a new storage
/// adapter adds no variant here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedState {
    kind: String,
    committed: u64,
    token: String,
}

impl StagedState {
    pub fn new(kind: impl Into<String>, committed: u64, token: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            committed,
            token: token.into(),
        }
    }

    /// Which adapter's state this is (e.g. `multipart`, `temp_file`).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Bytes this state holds for good.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The adapter's own description of the staged bytes.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// Everything needed to continue one transfer after a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub source: SourceIdentity,
    pub key: ObjectKey,
    /// Hash states at [`StagedState::committed`].
    pub hash: HashState,
    pub staged: StagedState,
    /// When it was saved, in milliseconds since the epoch.
    pub saved_at_ms: i64,
}

/// A checkpoint whose parts do not agree.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidCheckpoint {
    #[error("the hash state covers {hashed} bytes but the staged write holds {staged}")]
    OffsetMismatch { hashed: u64, staged: u64 },
    #[error("the staged write holds {staged} bytes, more than the source's {length}")]
    PastEnd { staged: u64, length: u64 },
}

impl Checkpoint {
    /// Builds a checkpoint, checking that its offsets agree.
    pub fn new(
        source: SourceIdentity,
        key: ObjectKey,
        hash: HashState,
        staged: StagedState,
        saved_at_ms: i64,
    ) -> Result<Self, InvalidCheckpoint> {
        let checkpoint = Self {
            source,
            key,
            hash,
            staged,
            saved_at_ms,
        };
        checkpoint.validate()?;
        Ok(checkpoint)
    }

    /// Checks a checkpoint read back from storage.
    pub fn validate(&self) -> Result<(), InvalidCheckpoint> {
        let staged = self.staged.committed();
        if self.hash.bytes != staged {
            return Err(InvalidCheckpoint::OffsetMismatch {
                hashed: self.hash.bytes,
                staged,
            });
        }
        if staged > self.source.length {
            return Err(InvalidCheckpoint::PastEnd {
                staged,
                length: self.source.length,
            });
        }
        Ok(())
    }

    /// Bytes already stored for good.
    pub fn committed(&self) -> u64 {
        self.staged.committed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> SourceIdentity {
        SourceIdentity {
            url_sha256: "ab".repeat(32),
            length: 100,
            etag: Some("\"v1\"".into()),
            last_modified: None,
        }
    }

    fn state(bytes: u64) -> HashState {
        HashState {
            bytes,
            sha256: vec![1; 40],
            md5: None,
        }
    }

    fn key() -> ObjectKey {
        ObjectKey::parse("a/b.bin").unwrap()
    }

    #[test]
    fn transfer_ids_are_validated() {
        assert!(TransferId::parse("job-0a1b-3").is_ok());
        assert!(TransferId::parse("copy-ab12.cd_ef").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "x\n", &"a".repeat(201)] {
            assert!(TransferId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn task_ids_round_trip() {
        let job = crate::job::JobId::parse("3f2a-b9_c").unwrap();
        let id = TransferId::for_task(&job, 17);
        assert_eq!(id.task(), Some((job, 17)));
        assert_eq!(TransferId::parse("copy-abc").unwrap().task(), None);
    }

    #[test]
    fn offsets_must_agree() {
        let staged = StagedState::new("temp_file", 40, "t");
        assert!(Checkpoint::new(identity(), key(), state(40), staged.clone(), 0).is_ok());
        assert_eq!(
            Checkpoint::new(identity(), key(), state(39), staged, 0),
            Err(InvalidCheckpoint::OffsetMismatch {
                hashed: 39,
                staged: 40
            })
        );
        let past = StagedState::new("temp_file", 101, "t");
        assert!(matches!(
            Checkpoint::new(identity(), key(), state(101), past, 0),
            Err(InvalidCheckpoint::PastEnd { .. })
        ));
    }

    #[test]
    fn staged_states_are_opaque_to_the_domain() {
        let staged = StagedState::new("multipart", 60, "{\"upload_id\":\"u\"}");
        assert_eq!(
            (staged.kind(), staged.committed(), staged.token()),
            ("multipart", 60, "{\"upload_id\":\"u\"}")
        );
        assert!(Checkpoint::new(identity(), key(), state(60), staged, 0).is_ok());
    }

    #[test]
    fn same_content_needs_length_and_validator() {
        let id = identity();
        let v1 = Validator::ETag("\"v1\"".into());
        let v2 = Validator::ETag("\"v2\"".into());
        assert!(id.same_content(Some(100), Some(&v1)));
        assert!(!id.same_content(Some(100), Some(&v2)));
        assert!(!id.same_content(Some(99), Some(&v1)));
        assert!(!id.same_content(None, Some(&v1)));
        assert!(!id.same_content(Some(100), None));
        let weak = SourceIdentity {
            etag: Some("W/\"v1\"".into()),
            last_modified: Some("Mon, 30 Nov 2026 00:00:00 GMT".into()),
            ..identity()
        };
        assert_eq!(
            weak.validator(),
            Some(Validator::LastModified(
                "Mon, 30 Nov 2026 00:00:00 GMT".into()
            ))
        );
    }
}
