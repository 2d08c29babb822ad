//! URL lists (`--files-from FILE`): the one parser of both formats.
//!
//! - Plain: one entry a line, `SOURCE [KEY [SHA256]]` separated by
//!   whitespace; `#` starts a comment line; blank lines are skipped; a KEY
//!   of `-` keeps the default name (to give a digest without a key).
//! - CSV with a header line naming its columns, among `source` (required),
//!   `key`, `sha256`, `md5`, `size`, in any order; quoted fields as usual.
//!   A list is CSV when its first entry line is such a header.
//!
//! The whole list is checked before anything is copied; every problem names
//! its line.

use std::io::BufRead;

use ferry_domain::{Checksum, ObjectKey, SourceUrl};

/// One entry of a list.
#[derive(Debug, Clone)]
pub struct ListEntry {
    /// 1-based line number in the list.
    pub line: usize,
    /// As written (a URL, a local path or `-`), parsed by the caller.
    pub source: String,
    pub key: Option<ObjectKey>,
    pub sha256: Option<Checksum>,
    pub md5: Option<Checksum>,
    pub size: Option<u64>,
}

/// Problems, each with its line; at most [`MAX_REPORTED`] are kept.
#[derive(Debug)]
pub struct ListErrors(pub Vec<String>);

/// Problems listed before giving up on a list.
const MAX_REPORTED: usize = 10;

impl std::fmt::Display for ListErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

/// Parses a whole list.
pub fn parse(reader: impl BufRead) -> Result<Vec<ListEntry>, ListErrors> {
    let mut lines = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        match line {
            Ok(l) => lines.push(l),
            Err(e) => return Err(ListErrors(vec![format!("line {}: {e}", i + 1)])),
        }
    }
    let first = lines
        .iter()
        .map(|l| l.trim())
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    let is_csv = first.is_some_and(|l| {
        l.contains(',')
            && l.split(',')
                .any(|c| c.trim().trim_matches('"').eq_ignore_ascii_case("source"))
    });
    if is_csv {
        // Comment lines become blank lines (which CSV skips) so that record
        // positions stay the file's line numbers.
        let text: Vec<&str> = lines
            .iter()
            .map(|l| {
                if l.trim_start().starts_with('#') {
                    ""
                } else {
                    l.as_str()
                }
            })
            .collect();
        parse_csv(&text.join("\n"))
    } else {
        parse_plain(&lines)
    }
}

fn collect(results: Vec<Result<ListEntry, String>>) -> Result<Vec<ListEntry>, ListErrors> {
    let mut entries = Vec::with_capacity(results.len());
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(e) => entries.push(e),
            Err(e) if errors.len() < MAX_REPORTED => errors.push(e),
            Err(_) => {}
        }
    }
    if !errors.is_empty() {
        return Err(ListErrors(errors));
    }
    if entries.is_empty() {
        return Err(ListErrors(vec!["the list has no entries".into()]));
    }
    Ok(entries)
}

fn parse_plain(lines: &[String]) -> Result<Vec<ListEntry>, ListErrors> {
    let results = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
        .map(|(i, l)| {
            let line = i + 1;
            let fields: Vec<&str> = l.split_whitespace().collect();
            let [source, rest @ ..] = fields.as_slice() else {
                return Err(format!("line {line}: empty"));
            };
            if rest.len() > 2 {
                return Err(format!(
                    "line {line}: {} fields; write SOURCE [KEY [SHA256]] (a key with spaces needs the CSV form)",
                    fields.len()
                ));
            }
            entry(
                line,
                source,
                rest.first().copied().filter(|k| *k != "-"),
                rest.get(1).copied(),
                None,
                None,
            )
        })
        .collect();
    collect(results)
}

fn parse_csv(text: &str) -> Result<Vec<ListEntry>, ListErrors> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| ListErrors(vec![format!("the CSV header: {e}")]))?
        .clone();
    let column = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let known = ["source", "key", "sha256", "md5", "size"];
    if let Some(unknown) = header
        .iter()
        .find(|h| !known.iter().any(|k| h.eq_ignore_ascii_case(k)))
    {
        return Err(ListErrors(vec![format!(
            "the CSV header names an unknown column `{unknown}`; use source,key,sha256,md5,size"
        )]));
    }
    let Some(source_col) = column("source") else {
        return Err(ListErrors(vec![
            "the CSV header has no `source` column".into(),
        ]));
    };
    let (key_col, sha_col, md5_col, size_col) = (
        column("key"),
        column("sha256"),
        column("md5"),
        column("size"),
    );
    let results = reader
        .records()
        .map(|record| {
            let record = record.map_err(|e| match e.position() {
                Some(p) => format!("line {}: {e}", line_at(text, p.byte())),
                None => e.to_string(),
            })?;
            let line = record.position().map_or(0, |p| line_at(text, p.byte()));
            let field =
                |col: Option<usize>| col.and_then(|c| record.get(c)).filter(|v| !v.is_empty());
            entry(
                line,
                record.get(source_col).unwrap_or_default(),
                field(key_col),
                field(sha_col),
                field(md5_col),
                field(size_col),
            )
        })
        .collect();
    collect(results)
}

/// The 1-based line of the record starting at byte offset `byte` of
/// `text` (the csv crate's own line count skips blank lines, and a
/// record's offset is before the blank lines it skipped).
fn line_at(text: &str, byte: u64) -> usize {
    let bytes = text.as_bytes();
    let mut start = usize::try_from(byte).unwrap_or(usize::MAX).min(bytes.len());
    while start < bytes.len() && (bytes[start] == b'\n' || bytes[start] == b'\r') {
        start += 1;
    }
    bytes[..start].iter().filter(|b| **b == b'\n').count() + 1
}

fn entry(
    line: usize,
    source: &str,
    key: Option<&str>,
    sha256: Option<&str>,
    md5: Option<&str>,
    size: Option<&str>,
) -> Result<ListEntry, String> {
    if source.is_empty() {
        return Err(format!("line {line}: no SOURCE"));
    }
    if source != "-" && source.contains("://") {
        // Checked here so the line is named; the message never echoes
        // the URL (it may hold a signature).
        SourceUrl::parse(source).map_err(|e| format!("line {line}: SOURCE: {e}"))?;
    }
    let key = key
        .map(|k| ObjectKey::parse(k).map_err(|e| format!("line {line}: KEY `{k}`: {e}")))
        .transpose()?;
    let sha256 = sha256
        .map(|d| Checksum::sha256(d).map_err(|e| format!("line {line}: SHA256: {e}")))
        .transpose()?;
    let md5 = md5
        .map(|d| Checksum::md5(d).map_err(|e| format!("line {line}: MD5: {e}")))
        .transpose()?;
    let size = size
        .map(|s| {
            s.parse::<u64>()
                .map_err(|_| format!("line {line}: SIZE `{s}` is not a whole number of bytes"))
        })
        .transpose()?;
    Ok(ListEntry {
        line,
        source: source.to_owned(),
        key,
        sha256,
        md5,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Vec<ListEntry>, ListErrors> {
        parse(s.as_bytes())
    }

    #[test]
    fn plain_lists_take_optional_keys_and_digests() {
        let sha = "ab".repeat(32);
        let list = format!(
            "# a comment\n\nhttp://h/a.bin\nhttp://h/b.bin  renamed/b.bin\nhttp://h/c.bin - {sha}\n"
        );
        let entries = parse_str(&list).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].line, 3);
        assert!(entries[0].key.is_none());
        assert_eq!(entries[1].key.as_ref().unwrap().as_str(), "renamed/b.bin");
        assert!(entries[2].key.is_none());
        assert_eq!(entries[2].sha256.as_ref().unwrap().hex(), sha);
    }

    #[test]
    fn every_problem_names_its_line() {
        let e = parse_str("http://h/a\nhttp://h/b k1 nothex\nhttp://h/c k2 x y\nftp://h/d\n")
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("line 2: SHA256"), "{text}");
        assert!(text.contains("line 3: 4 fields"), "{text}");
        assert!(text.contains("line 4: SOURCE"), "{text}");
        assert!(!text.contains("line 1"), "{text}");
        assert!(parse_str("# only comments\n").is_err());
    }

    #[test]
    fn csv_lists_have_a_header_and_quoted_fields() {
        let sha = "cd".repeat(32);
        let list = format!(
            "source,key,sha256,size\nhttp://h/a.bin,\"with space.bin\",{sha},10\n# skipped\nhttp://h/b.bin,,,\n"
        );
        let entries = parse_str(&list).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].key.as_ref().unwrap().as_str(), "with space.bin");
        assert_eq!(entries[0].size, Some(10));
        assert_eq!(entries[0].line, 2);
        assert!(entries[1].key.is_none() && entries[1].sha256.is_none());
        assert_eq!(entries[1].line, 4);
        let bad = parse_str("source,key,size\nhttp://h/a,k,ten\n").unwrap_err();
        assert!(bad.to_string().contains("line 2: SIZE"), "{bad}");
        let unknown = parse_str("source,colour\nhttp://h/a,red\n").unwrap_err();
        assert!(unknown.to_string().contains("`colour`"), "{unknown}");
    }
}
