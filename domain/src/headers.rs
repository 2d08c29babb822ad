//! Request headers a user adds to an HTTP source (`--header 'Name: value'`,
//! a job file's `headers`): typically credentials (`Authorization: Bearer
//! …`), so every value is treated as a secret. `Debug` and `Display` never
//! show a value; only [`SourceHeader::value`] gives it, for the adapter that
//! sends it.

use std::fmt;

use thiserror::Error;

/// Most headers one source may carry.
pub const MAX_SOURCE_HEADERS: usize = 32;
/// Longest header value accepted, in bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 8192;

/// Headers ferry sets itself, or that belong to one connection (hop-by-hop,
/// RFC 9110 §7.6.1): a user may not set them.
const RESERVED: [&str; 13] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "range",
    "if-range",
    "accept-encoding",
    "expect",
];

/// Why a header cannot be used. The value is never echoed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidHeader {
    // Neither echoes the input: it may be a credential typed wrongly.
    #[error("a header must be written `Name: value` (no `:` found)")]
    MissingColon,
    #[error("the header name is not valid: use letters, digits and - only, then `:`")]
    BadName,
    #[error("the value of header `{name}` holds a control character (a line break?)")]
    BadValue { name: String },
    #[error("the value of header `{name}` is over {MAX_HEADER_VALUE_LEN} bytes")]
    ValueTooLong { name: String },
    #[error(
        "the header `{name}` cannot be set: ferry sets it itself or it belongs to one connection (Host and hop-by-hop headers are refused)"
    )]
    Reserved { name: String },
    #[error("at most {MAX_SOURCE_HEADERS} headers per source")]
    TooMany,
    #[error("the header `{name}` is given twice")]
    Duplicate { name: String },
}

/// One validated header; its value is secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SourceHeader {
    name: String,
    value: String,
}

impl SourceHeader {
    /// `Name: value`, as curl's `-H`.
    pub fn parse(raw: &str) -> Result<Self, InvalidHeader> {
        let Some((name, value)) = raw.split_once(':') else {
            return Err(InvalidHeader::MissingColon);
        };
        Self::new(name.trim(), value.trim())
    }

    pub fn new(name: &str, value: &str) -> Result<Self, InvalidHeader> {
        let valid_name = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name {
            return Err(InvalidHeader::BadName);
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED.contains(&lower.as_str()) {
            return Err(InvalidHeader::Reserved {
                name: name.to_owned(),
            });
        }
        if value.len() > MAX_HEADER_VALUE_LEN {
            return Err(InvalidHeader::ValueTooLong {
                name: name.to_owned(),
            });
        }
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(InvalidHeader::BadValue {
                name: name.to_owned(),
            });
        }
        Ok(Self {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The secret value, for the adapter that sends it.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for SourceHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: <redacted>", self.name)
    }
}

impl fmt::Display for SourceHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The headers of one source: distinct names (case-insensitive), at most
/// [`MAX_SOURCE_HEADERS`]. Sent only to the origin (scheme, host, port) of
/// the URL they were given for, never after a redirect to another one.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct SourceHeaders(Vec<SourceHeader>);

impl SourceHeaders {
    pub fn new(headers: Vec<SourceHeader>) -> Result<Self, InvalidHeader> {
        if headers.len() > MAX_SOURCE_HEADERS {
            return Err(InvalidHeader::TooMany);
        }
        for (i, h) in headers.iter().enumerate() {
            if headers[..i]
                .iter()
                .any(|o| o.name.eq_ignore_ascii_case(&h.name))
            {
                return Err(InvalidHeader::Duplicate {
                    name: h.name.clone(),
                });
            }
        }
        Ok(Self(headers))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &SourceHeader> {
        self.0.iter()
    }
}

impl fmt::Debug for SourceHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

/// Headers as a request gave them, `(name, value)` pairs not yet checked
/// (a job file's `headers`); `Debug` shows names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RequestedHeaders(pub Vec<(String, String)>);

impl RequestedHeaders {
    /// Checks every header, as `--header` is checked.
    pub fn validate(&self) -> Result<SourceHeaders, InvalidHeader> {
        let parsed = self
            .0
            .iter()
            .map(|(name, value)| SourceHeader::new(name, value))
            .collect::<Result<Vec<_>, _>>()?;
        SourceHeaders::new(parsed)
    }
}

impl fmt::Debug for RequestedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| format!("{name}: <redacted>")))
            .finish()
    }
}

impl SourceHeaders {
    /// `(name, value)` pairs, values included: for the store that keeps
    /// them while the job runs.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_curl_style_and_hides_the_value() {
        let h = SourceHeader::parse("Authorization:  Bearer s3cr3t ").unwrap();
        assert_eq!(h.name(), "Authorization");
        assert_eq!(h.value(), "Bearer s3cr3t");
        let shown = format!(
            "{h} {h:?} {:?}",
            SourceHeaders::new(vec![h.clone()]).unwrap()
        );
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("Authorization"));
    }

    #[test]
    fn refuses_host_hop_by_hop_and_bad_input_without_echoing_values() {
        for raw in [
            "Host: evil",
            "connection: close",
            "Transfer-Encoding: x",
            "Range: bytes=0-",
        ] {
            assert!(
                matches!(
                    SourceHeader::parse(raw),
                    Err(InvalidHeader::Reserved { .. })
                ),
                "{raw}"
            );
        }
        assert!(matches!(
            SourceHeader::parse("no colon secret"),
            Err(InvalidHeader::MissingColon)
        ));
        assert!(matches!(
            SourceHeader::parse("Bad Name: v"),
            Err(InvalidHeader::BadName)
        ));
        let split = SourceHeader::new("X-Token", "abc\r\nInjected: 1").unwrap_err();
        assert!(matches!(split, InvalidHeader::BadValue { .. }));
        assert!(!split.to_string().contains("abc"), "{split}");
        let long = "v".repeat(MAX_HEADER_VALUE_LEN + 1);
        assert!(matches!(
            SourceHeader::new("X-Long", &long),
            Err(InvalidHeader::ValueTooLong { .. })
        ));
    }

    #[test]
    fn requested_headers_hide_values_and_validate() {
        let raw = RequestedHeaders(vec![("X-Key".into(), "hush-42".into())]);
        assert!(!format!("{raw:?}").contains("hush-42"));
        let checked = raw.validate().unwrap();
        assert_eq!(checked.to_pairs(), raw.0);
        let bad = RequestedHeaders(vec![("Host".into(), "x".into())]);
        assert!(matches!(
            bad.validate(),
            Err(InvalidHeader::Reserved { .. })
        ));
    }

    #[test]
    fn names_are_distinct_and_bounded() {
        let a = SourceHeader::parse("X-A: 1").unwrap();
        let a2 = SourceHeader::parse("x-a: 2").unwrap();
        assert!(matches!(
            SourceHeaders::new(vec![a.clone(), a2]),
            Err(InvalidHeader::Duplicate { .. })
        ));
        let many: Vec<_> = (0..=MAX_SOURCE_HEADERS)
            .map(|i| SourceHeader::new(&format!("X-{i}"), "v").unwrap())
            .collect();
        assert_eq!(SourceHeaders::new(many), Err(InvalidHeader::TooMany));
        assert_eq!(SourceHeaders::new(vec![a]).unwrap().len(), 1);
    }
}
