//! Where a file goes: an object key, valid for S3 and safe on a filesystem.

use std::fmt;

use thiserror::Error;

/// Longest key accepted, in bytes (S3's limit).
pub const MAX_KEY_LEN: usize = 1024;

/// Why a string is not a usable object key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidKey {
    #[error("the key is empty")]
    Empty,
    #[error("the key is {len} bytes long; at most {MAX_KEY_LEN} are allowed")]
    TooLong { len: usize },
    #[error("the key starts with `/`; keys are relative, e.g. `dir/file.bin`")]
    LeadingSlash,
    #[error("the key has a `{segment}` segment; `.` and `..` are not allowed")]
    DotSegment { segment: String },
    #[error("the key has an empty segment (`//` or a trailing `/`)")]
    EmptySegment,
    #[error("the key has a control character (U+{code:04X}) at byte {index}")]
    ControlCharacter { index: usize, code: u32 },
}

/// A validated object key: 1..=1024 bytes of UTF-8, relative, no `.`/`..` or
/// empty segments, no control characters (so never CR/LF in a header).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn parse(raw: &str) -> Result<Self, InvalidKey> {
        if raw.is_empty() {
            return Err(InvalidKey::Empty);
        }
        if raw.len() > MAX_KEY_LEN {
            return Err(InvalidKey::TooLong { len: raw.len() });
        }
        if let Some((index, c)) = raw.char_indices().find(|(_, c)| c.is_control()) {
            return Err(InvalidKey::ControlCharacter {
                index,
                code: u32::from(c),
            });
        }
        if raw.starts_with('/') {
            return Err(InvalidKey::LeadingSlash);
        }
        for segment in raw.split('/') {
            match segment {
                "" => return Err(InvalidKey::EmptySegment),
                "." | ".." => {
                    return Err(InvalidKey::DotSegment {
                        segment: segment.to_owned(),
                    });
                }
                _ => {}
            }
        }
        Ok(Self(raw.to_owned()))
    }

    /// Joins a prefix (`""`, `dir` or `dir/`) and a name into a key.
    pub fn with_prefix(prefix: &str, name: &str) -> Result<Self, InvalidKey> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            Self::parse(name)
        } else {
            Self::parse(&format!("{prefix}/{name}"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's segments, e.g. `["dir", "file.bin"]`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ObjectKey").field(&self.0).finish()
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for ok in ["a", "dir/file.bin", "a b/ü/日本.txt", "x..y/..z", ".hidden"] {
            let key = ObjectKey::parse(ok).unwrap();
            assert_eq!(key.as_str(), ok);
        }
        assert_eq!(ObjectKey::parse("d/e/f.bin").unwrap().file_name(), "f.bin");
        let max = "k".repeat(MAX_KEY_LEN);
        assert!(ObjectKey::parse(&max).is_ok());
    }

    #[test]
    fn rejects_each_bad_shape_with_its_reason() {
        assert_eq!(ObjectKey::parse(""), Err(InvalidKey::Empty));
        assert_eq!(
            ObjectKey::parse(&"k".repeat(MAX_KEY_LEN + 1)),
            Err(InvalidKey::TooLong {
                len: MAX_KEY_LEN + 1
            })
        );
        assert_eq!(
            ObjectKey::parse("/etc/passwd"),
            Err(InvalidKey::LeadingSlash)
        );
        for bad in ["..", "../x", "a/../b", "a/..", "./a", "a/./b"] {
            assert!(
                matches!(ObjectKey::parse(bad), Err(InvalidKey::DotSegment { .. })),
                "{bad}"
            );
        }
        for bad in ["a//b", "a/", "a/b/"] {
            assert_eq!(
                ObjectKey::parse(bad),
                Err(InvalidKey::EmptySegment),
                "{bad}"
            );
        }
        assert_eq!(
            ObjectKey::parse("a\r\nx-amz-acl: public"),
            Err(InvalidKey::ControlCharacter {
                index: 1,
                code: 0x0d
            })
        );
        assert!(matches!(
            ObjectKey::parse("a\u{0}b"),
            Err(InvalidKey::ControlCharacter { code: 0, .. })
        ));
        assert!(matches!(
            ObjectKey::parse("a\u{7f}"),
            Err(InvalidKey::ControlCharacter { code: 0x7f, .. })
        ));
        assert!(matches!(
            ObjectKey::parse("a\u{85}"),
            Err(InvalidKey::ControlCharacter { code: 0x85, .. })
        ));
    }

    #[test]
    fn no_byte_sequence_of_control_characters_survives() {
        // Property-style: every ASCII control character anywhere is rejected.
        for code in (0u8..0x20).chain([0x7f]) {
            for pos in 0..3 {
                let mut s = String::from("abc");
                s.insert(pos, char::from(code));
                assert!(ObjectKey::parse(&s).is_err(), "{code:#x} at {pos}");
            }
        }
    }

    #[test]
    fn prefix_join() {
        assert_eq!(ObjectKey::with_prefix("", "f").unwrap().as_str(), "f");
        assert_eq!(ObjectKey::with_prefix("p/", "f").unwrap().as_str(), "p/f");
        assert_eq!(
            ObjectKey::with_prefix("p/q", "f").unwrap().as_str(),
            "p/q/f"
        );
        assert!(ObjectKey::with_prefix("p", "..").is_err());
    }
}
