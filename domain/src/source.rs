//! Where a file comes from: an `http://`, `https://` or `file://` URL.
//!
//! A [`SourceUrl`] may carry secrets (userinfo, presigned query strings). Its
//! `Display` and `Debug` forms are always redacted; only [`SourceUrl::expose`]
//! gives the full URL, for the adapter that must send it.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;
use url::Url;

/// Longest source URL accepted, in bytes.
pub const MAX_SOURCE_URL_LEN: usize = 8192;

/// The schemes ferry can read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceScheme {
    Http,
    Https,
    File,
    /// An S3 object (`s3://bucket/key`), or every object under a prefix
    /// (`s3://bucket/prefix/`, expanded by the caller).
    S3,
    /// Standard input (`ferry copy - DEST`): read once, unknown length, no
    /// ranges. Only [`SourceUrl::stdin`] makes one; no URL parses to it.
    Stdin,
}

/// Why a string is not a usable source.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidSource {
    #[error("the source is empty: give an http://, https:// or file:// URL")]
    Empty,
    #[error("the source is {len} bytes long; at most {MAX_SOURCE_URL_LEN} are accepted")]
    TooLong { len: usize },
    // The input is deliberately not echoed: it may hold credentials.
    #[error("the source is not a valid URL ({reason}); give an http://, https:// or file:// URL")]
    Malformed { reason: String },
    #[error("the source scheme `{scheme}` is not supported; use http://, https:// or file://")]
    UnsupportedScheme { scheme: String },
    #[error("the source URL has no host; write it as scheme://host/path")]
    MissingHost,
    #[error("a file:// source must be an absolute local path, e.g. file:///data/big.bin")]
    BadFilePath,
}

/// A validated source location.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SourceUrl {
    url: Url,
    scheme: SourceScheme,
}

impl SourceUrl {
    /// Parses and validates a source URL.
    pub fn parse(raw: &str) -> Result<Self, InvalidSource> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(InvalidSource::Empty);
        }
        if raw.len() > MAX_SOURCE_URL_LEN {
            return Err(InvalidSource::TooLong { len: raw.len() });
        }
        let url = Url::parse(raw).map_err(|e| InvalidSource::Malformed {
            reason: e.to_string(),
        })?;
        Self::from_url(url)
    }

    /// Validates an already parsed URL (e.g. the target of a redirect).
    pub fn from_url(url: Url) -> Result<Self, InvalidSource> {
        let scheme = match url.scheme() {
            "http" => SourceScheme::Http,
            "https" => SourceScheme::Https,
            "file" => SourceScheme::File,
            "s3" => SourceScheme::S3,
            other => {
                return Err(InvalidSource::UnsupportedScheme {
                    scheme: other.to_owned(),
                });
            }
        };
        match scheme {
            SourceScheme::Http | SourceScheme::Https => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(InvalidSource::MissingHost);
                }
            }
            SourceScheme::Stdin => {}
            SourceScheme::S3 => {
                let bucket = url.host_str().unwrap_or_default();
                crate::destination::S3Url::parse(&format!("s3://{bucket}/")).map_err(|e| {
                    InvalidSource::Malformed {
                        reason: e.to_string(),
                    }
                })?;
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(InvalidSource::Malformed {
                        reason: "an s3:// source has no query or fragment".into(),
                    });
                }
            }
            SourceScheme::File => {
                let local_host = matches!(url.host_str(), None | Some("") | Some("localhost"));
                if !local_host || url.to_file_path().is_err() {
                    return Err(InvalidSource::BadFilePath);
                }
            }
        }
        Ok(Self { url, scheme })
    }

    /// Standard input, for `ferry copy - DEST` (the fixed URL `stdin:-`,
    /// which always parses).
    pub fn stdin() -> Result<Self, InvalidSource> {
        let url = Url::parse("stdin:-").map_err(|e| InvalidSource::Malformed {
            reason: e.to_string(),
        })?;
        Ok(Self {
            url,
            scheme: SourceScheme::Stdin,
        })
    }

    /// The source for an object `key` of `bucket` (each path segment
    /// percent-encoded, so any key round-trips through [`Self::s3_object`]).
    pub fn s3(bucket: &str, key: &str) -> Result<Self, InvalidSource> {
        let mut url =
            Url::parse(&format!("s3://{bucket}/")).map_err(|e| InvalidSource::Malformed {
                reason: e.to_string(),
            })?;
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(key.split('/'));
        }
        Self::from_url(url)
    }

    /// An `s3://` source's bucket and key (percent-decoded; ending in `/`
    /// or empty for a prefix).
    pub fn s3_object(&self) -> Option<(String, String)> {
        if self.scheme != SourceScheme::S3 {
            return None;
        }
        let bucket = self.url.host_str()?.to_owned();
        let key = percent_decode(self.url.path().trim_start_matches('/'))?;
        Some((bucket, key))
    }

    pub fn scheme(&self) -> SourceScheme {
        self.scheme
    }

    /// `scheme://host:port` (the scheme's default port filled in), without
    /// credentials or path: what connection limits are counted per.
    pub fn origin(&self) -> String {
        format!(
            "{}://{}:{}",
            self.url.scheme(),
            self.url.host_str().unwrap_or_default(),
            self.url.port_or_known_default().unwrap_or_default()
        )
    }

    /// The full URL, secrets included. Only for the adapter that sends it.
    pub fn expose(&self) -> &str {
        self.url.as_str()
    }

    /// The local path of a `file://` source.
    pub fn file_path(&self) -> Option<PathBuf> {
        match self.scheme {
            SourceScheme::File => self.url.to_file_path().ok(),
            _ => None,
        }
    }

    /// The last non-empty path segment, percent-decoded, if it is a usable
    /// file name (used to name the destination when DEST is a directory).
    pub fn file_name(&self) -> Option<String> {
        let segment = self.url.path_segments()?.rev().find(|s| !s.is_empty())?;
        let decoded = percent_decode(segment)?;
        if decoded.is_empty()
            || decoded == "."
            || decoded == ".."
            || decoded.contains('/')
            || decoded.chars().any(char::is_control)
        {
            return None;
        }
        Some(decoded)
    }

    /// The URL with userinfo removed and every query value replaced, safe for
    /// logs, errors, events and API responses.
    pub fn redacted(&self) -> String {
        match self.scheme {
            SourceScheme::Stdin => "stdin".to_owned(),
            _ => redact_url(&self.url),
        }
    }
}

/// Redacts an arbitrary URL: userinfo dropped, query values and fragment
/// replaced by `REDACTED`. A query segment without `=` (`?SECRETTOKEN`) may
/// itself be the secret: it is replaced whole.
pub fn redact_url(url: &Url) -> String {
    let mut copy = url.clone();
    // Both setters only fail for URLs that cannot carry credentials at all.
    let _ = copy.set_username("");
    let _ = copy.set_password(None);
    if let Some(query) = url.query() {
        let redacted: Vec<String> = query
            .split('&')
            .filter(|segment| !segment.is_empty())
            .map(|segment| match segment.split_once('=') {
                Some((name, _)) => format!("{name}=REDACTED"),
                None => "REDACTED".to_owned(),
            })
            .collect();
        if redacted.is_empty() {
            copy.set_query(Some("REDACTED"));
        } else {
            copy.set_query(Some(&redacted.join("&")));
        }
    }
    if url.fragment().is_some() {
        copy.set_fragment(Some("REDACTED"));
    }
    copy.to_string()
}

/// Redacts whatever looks like a URL inside free text (e.g. an error message
/// from a library that embeds the URL it was given).
pub fn redact_text(text: &str) -> String {
    text.split_inclusive(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == '"')
        .map(|piece| {
            let trimmed = piece
                .trim_end_matches(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == '"');
            let tail = &piece[trimmed.len()..];
            match Url::parse(trimmed) {
                Ok(url) if url.has_host() => format!("{}{tail}", redact_url(&url)),
                _ => piece.to_owned(),
            }
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SourceUrl").field(&self.redacted()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_schemes() {
        assert_eq!(
            SourceUrl::parse("http://example.com/a.bin")
                .unwrap()
                .scheme(),
            SourceScheme::Http
        );
        assert_eq!(
            SourceUrl::parse("https://example.com/a.bin")
                .unwrap()
                .scheme(),
            SourceScheme::Https
        );
        let file = SourceUrl::parse("file:///tmp/a.bin").unwrap();
        assert_eq!(file.scheme(), SourceScheme::File);
        assert_eq!(file.file_path().unwrap(), PathBuf::from("/tmp/a.bin"));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert_eq!(SourceUrl::parse("  "), Err(InvalidSource::Empty));
        assert!(matches!(
            SourceUrl::parse("ftp://example.com/x"),
            Err(InvalidSource::UnsupportedScheme { scheme }) if scheme == "ftp"
        ));
        assert!(matches!(
            SourceUrl::parse("not a url"),
            Err(InvalidSource::Malformed { .. })
        ));
        assert!(matches!(
            SourceUrl::parse("file://otherhost/x"),
            Err(InvalidSource::BadFilePath)
        ));
        let long = format!("http://example.com/{}", "a".repeat(MAX_SOURCE_URL_LEN));
        assert!(matches!(
            SourceUrl::parse(&long),
            Err(InvalidSource::TooLong { .. })
        ));
    }

    #[test]
    fn s3_sources_round_trip_any_key() {
        for key in ["a.bin", "dir/sub/x y.bin", "100%/done?.txt", "prefix/"] {
            let src = SourceUrl::s3("my-bucket", key).unwrap();
            assert_eq!(src.scheme(), SourceScheme::S3);
            assert_eq!(
                src.s3_object(),
                Some(("my-bucket".into(), key.into())),
                "{src}"
            );
        }
        let parsed = SourceUrl::parse("s3://b-1/dir/k.bin").unwrap();
        assert_eq!(parsed.file_name().as_deref(), Some("k.bin"));
        assert_eq!(parsed.s3_object(), Some(("b-1".into(), "dir/k.bin".into())));
        assert!(SourceUrl::parse("s3://Bad_Bucket/k").is_err());
        assert!(SourceUrl::parse("s3://b-1/k?versionId=1").is_err());
        assert_eq!(SourceUrl::parse("http://h/x").unwrap().s3_object(), None);
    }

    #[test]
    fn malformed_error_never_echoes_the_input() {
        let err = SourceUrl::parse("http://user:hunter2@[bad/x").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn display_and_debug_are_redacted() {
        let src = SourceUrl::parse(
            "https://alice:s3cret@bucket.example.com/k.bin?X-Amz-Signature=abc123&X-Amz-Credential=AKIA#frag",
        )
        .unwrap();
        for shown in [src.to_string(), format!("{src:?}"), src.redacted()] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(!shown.contains("alice"), "{shown}");
            assert!(!shown.contains("abc123"), "{shown}");
            assert!(!shown.contains("AKIA"), "{shown}");
            assert!(shown.contains("bucket.example.com/k.bin"), "{shown}");
        }
        assert!(src.expose().contains("s3cret"));
    }

    #[test]
    fn redacts_urls_inside_text() {
        let text = "error sending request for url (http://u:pw@h.example/x?token=t0k): boom";
        let out = redact_text(text);
        assert!(!out.contains("pw@"), "{out}");
        assert!(!out.contains("t0k"), "{out}");
        assert!(out.contains("boom"));
        assert!(out.contains("h.example/x?token=REDACTED"), "{out}");
        // A bare query segment may be the secret itself.
        let bare = SourceUrl::parse("https://h.example/x?SECRETTOKEN&a=1").unwrap();
        assert_eq!(bare.redacted(), "https://h.example/x?REDACTED&a=REDACTED");
        assert!(!format!("{bare:?} {bare}").contains("SECRETTOKEN"));
    }

    #[test]
    fn file_name_is_the_decoded_last_segment() {
        let src = SourceUrl::parse("http://h/dir/my%20file.bin?x=1").unwrap();
        assert_eq!(src.file_name().as_deref(), Some("my file.bin"));
        let dir = SourceUrl::parse("http://h/dir/").unwrap();
        assert_eq!(dir.file_name().as_deref(), Some("dir"));
        assert_eq!(SourceUrl::parse("http://h/").unwrap().file_name(), None);
        assert_eq!(
            SourceUrl::parse("http://h/a%2Fb").unwrap().file_name(),
            None
        );
        assert_eq!(SourceUrl::parse("http://h/%0a").unwrap().file_name(), None);
    }
}
