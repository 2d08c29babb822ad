//! Naming a file from what the source says when it answers
//! (`--name-from final-url|content-disposition`), and the one parser of
//! `Content-Disposition` (RFC 6266).
//!
//! The parser is hand-written: only the `filename*` (RFC 8187, UTF-8) and
//! `filename` parameters are needed, and the crates offering it come with a
//! whole MIME/mail stack. Whatever the server sends, the name goes through
//! [`sanitise`] and [`ObjectKey::parse`]: no directory part, no control
//! character, never `.` or `..`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::key::ObjectKey;

/// Where a name decided at answer time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameSource {
    /// The last path segment of the URL after redirects.
    FinalUrl,
    /// The `Content-Disposition` filename, else the final URL's name.
    ContentDisposition,
}

/// The names already given in one run, so that two sources naming
/// themselves alike do not land on one key.
#[derive(Debug, Clone)]
pub struct NameFrom {
    pub source: NameSource,
    taken: Arc<Mutex<HashMap<ObjectKey, String>>>,
}

impl NameFrom {
    pub fn new(source: NameSource) -> Self {
        Self {
            source,
            taken: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Claims `key` for `owner` (a source identity); the same owner may
    /// claim it again (a retry). `false`: another source has it.
    pub fn claim(&self, key: &ObjectKey, owner: &str) -> bool {
        let mut taken = match self.taken.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        match taken.get(key) {
            Some(existing) => existing == owner,
            None => {
                taken.insert(key.clone(), owner.to_owned());
                true
            }
        }
    }
}

/// The file name a `Content-Disposition` header gives: `filename*`
/// (UTF-8, percent-encoded) first, else `filename` (quoted or a token).
pub fn disposition_filename(header: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for param in split_params(header).into_iter().skip(1) {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        match name.as_str() {
            "filename*" => {
                // charset'language'percent-encoded
                let mut parts = value.splitn(3, '\'');
                let charset = parts.next().unwrap_or_default();
                let _language = parts.next();
                if let Some(encoded) = parts.next()
                    && charset.eq_ignore_ascii_case("utf-8")
                {
                    extended = percent_decode(encoded);
                }
            }
            "filename" => plain = Some(unquote(value)),
            _ => {}
        }
    }
    extended.or(plain).filter(|n| !n.is_empty())
}

/// Splits on `;` outside quotes.
fn split_params(header: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in header.chars() {
        match c {
            _ if escaped => {
                current.push(c);
                escaped = false;
            }
            '\\' if quoted => {
                current.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
}

fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A name a server gave, made safe as one key segment: the part after the
/// last `/` or `\`, control characters dropped, `.`/`..`/empty refused.
pub fn sanitise(name: &str) -> Option<ObjectKey> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return None;
    }
    ObjectKey::parse(cleaned).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rfc6266_filenames() {
        let cases = [
            ("attachment; filename=\"report.pdf\"", Some("report.pdf")),
            ("attachment; filename=plain.txt", Some("plain.txt")),
            (
                "attachment; filename=\"fallback.txt\"; filename*=UTF-8''na%C3%AFve%20file.txt",
                Some("naïve file.txt"),
            ),
            ("attachment; filename=\"a\\\"b;c.txt\"", Some("a\"b;c.txt")),
            ("inline", None),
            ("attachment; filename*=ISO-8859-1''x.txt", None),
            ("attachment; filename=\"\"", None),
        ];
        for (header, want) in cases {
            assert_eq!(disposition_filename(header).as_deref(), want, "{header}");
        }
    }

    #[test]
    fn sanitises_to_one_safe_segment() {
        let key = |s: &str| sanitise(s).map(|k| k.as_str().to_owned());
        assert_eq!(key("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(key("C:\\Users\\x\\evil.exe").as_deref(), Some("evil.exe"));
        assert_eq!(key("bad\u{0007}name.txt").as_deref(), Some("badname.txt"));
        assert_eq!(key(".."), None);
        assert_eq!(key("dir/"), None);
    }

    #[test]
    fn a_name_belongs_to_the_first_source_that_claims_it() {
        let names = NameFrom::new(NameSource::FinalUrl);
        let k = ObjectKey::parse("a.bin").unwrap();
        assert!(names.claim(&k, "http://h/1"));
        assert!(names.claim(&k, "http://h/1"), "a retry of the same source");
        assert!(!names.claim(&k, "http://h/2"));
    }
}
