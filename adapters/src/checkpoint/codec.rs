//! The one JSON form of a checkpoint, shared by the job store's
//! `ferry_checkpoints` table and `ferry copy`'s state files. Hash states are
//! hex; the source is identified by a digest of its URL, never the URL.
//! The staged state is the storage adapter's own (a JSON token, stored as
//! an object with its `kind`), read back through that adapter's type: the
//! form is the same as when the domain named each kind.

use serde_json::{Value, json};

use ferry_domain::{Checkpoint, HashState, ObjectKey, SourceIdentity, StagedState};

use crate::filesystem::TempFileState;
use crate::s3::MultipartState;

/// Bumped when the form changes; an unknown version is treated as corrupt
/// (the transfer restarts from zero).
const VERSION: u64 = 1;

pub fn to_json(c: &Checkpoint) -> String {
    // The adapter's token is a JSON object; stored with its kind.
    let mut staged = serde_json::from_str::<Value>(c.staged.token()).unwrap_or(Value::Null);
    if let Some(obj) = staged.as_object_mut() {
        obj.insert("kind".into(), json!(c.staged.kind()));
    }
    json!({
        "version": VERSION,
        "key": c.key.as_str(),
        "source": {
            "url_sha256": c.source.url_sha256,
            "length": c.source.length,
            "etag": c.source.etag,
            "last_modified": c.source.last_modified,
        },
        "hash": {
            "bytes": c.hash.bytes,
            "sha256": hex::encode(&c.hash.sha256),
            "md5": c.hash.md5.as_ref().map(hex::encode),
        },
        "staged": staged,
        "saved_at_ms": c.saved_at_ms,
    })
    .to_string()
}

/// Decodes and validates; the error says what is wrong.
pub fn from_json(raw: &str) -> Result<Checkpoint, String> {
    let v: Value = serde_json::from_str(raw).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("version").and_then(Value::as_u64) != Some(VERSION) {
        return Err("unknown checkpoint version".into());
    }
    let text = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("missing {k}"))
    };
    let num = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("missing {k}"))
    };
    let opt = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let unhex = |s: String| hex::decode(s).map_err(|e| format!("bad hex: {e}"));

    let key = ObjectKey::parse(&text(&v, "key")?).map_err(|e| e.to_string())?;
    let s = v.get("source").ok_or("missing source")?;
    let source = SourceIdentity {
        url_sha256: text(s, "url_sha256")?,
        length: num(s, "length")?,
        etag: opt(s, "etag"),
        last_modified: opt(s, "last_modified"),
    };
    let h = v.get("hash").ok_or("missing hash")?;
    let hash = HashState {
        bytes: num(h, "bytes")?,
        sha256: unhex(text(h, "sha256")?)?,
        md5: opt(h, "md5").map(unhex).transpose()?,
    };
    let st = v.get("staged").ok_or("missing staged")?;
    let staged = staged_from(st, &text(st, "kind")?)?;
    let saved_at_ms = v.get("saved_at_ms").and_then(Value::as_i64).unwrap_or(0);
    Checkpoint::new(source, key, hash, staged, saved_at_ms).map_err(|e| e.to_string())
}

/// A stored staged state, read through the adapter that owns its kind.
fn staged_from(st: &Value, kind: &str) -> Result<StagedState, String> {
    let parse = |what: &'static str| move |e: serde_json::Error| format!("bad {what} state: {e}");
    let mut token = st.clone();
    if let Some(o) = token.as_object_mut() {
        o.remove("kind");
    }
    match kind {
        MultipartState::KIND => {
            let state: MultipartState =
                serde_json::from_value(token).map_err(parse("multipart"))?;
            state.validate()?;
            Ok(state.to_staged())
        }
        TempFileState::KIND => {
            let state: TempFileState = serde_json::from_value(token).map_err(parse("temp file"))?;
            Ok(state.to_staged())
        }
        other => Err(format!("unknown staged kind {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(staged: StagedState) -> Checkpoint {
        let bytes = staged.committed();
        Checkpoint::new(
            SourceIdentity {
                url_sha256: "ab".repeat(32),
                length: 1 << 30,
                etag: Some("\"e1\"".into()),
                last_modified: Some("Mon, 30 Nov 2026 00:00:00 GMT".into()),
            },
            ObjectKey::parse("dir/file.bin").unwrap(),
            HashState {
                bytes,
                sha256: vec![7; 104],
                md5: Some(vec![9; 88]),
            },
            staged,
            1_764_460_800_000,
        )
        .unwrap()
    }

    #[test]
    fn both_kinds_round_trip() {
        let multipart = sample(
            MultipartState {
                upload_id: "u-1".into(),
                part_size: 8 << 20,
                parts: (1..=3)
                    .map(|n| crate::s3::PartRecord {
                        number: n,
                        size: 8 << 20,
                        etag: format!("\"etag{n}\""),
                    })
                    .collect(),
            }
            .to_staged(),
        );
        let file = sample(
            TempFileState {
                path: "/data/dir/.file.bin.ferry-tmp.1.2".into(),
                length: 5 << 20,
            }
            .to_staged(),
        );
        for c in [multipart, file] {
            assert_eq!(from_json(&to_json(&c)).unwrap(), c);
        }
    }

    #[test]
    fn damaged_checkpoints_are_refused_with_a_reason() {
        let c = sample(
            TempFileState {
                path: "/d/.f.ferry-tmp.1.2".into(),
                length: 10,
            }
            .to_staged(),
        );
        let good = to_json(&c);
        assert!(
            from_json(&good[..good.len() / 2])
                .unwrap_err()
                .contains("not JSON")
        );
        let wrong_offset = good.replace("\"length\":10", "\"length\":11");
        assert!(
            from_json(&wrong_offset)
                .unwrap_err()
                .contains("hash state covers")
        );
        let other_version = good.replace("\"version\":1", "\"version\":9");
        assert!(from_json(&other_version).is_err());
    }

    /// Checkpoints written before the staged state became the adapters'
    /// own still read back (the stored form did not change).
    #[test]
    fn checkpoints_in_the_earlier_form_still_resume() {
        let raw = r#"{"version":1,"key":"dir/file.bin","source":{"url_sha256":"abab","length":100,"etag":"\"e1\"","last_modified":null},"hash":{"bytes":60,"sha256":"0707","md5":null},"staged":{"kind":"multipart","upload_id":"u-1","part_size":30,"parts":[{"number":1,"size":30,"etag":"\"a\""},{"number":2,"size":30,"etag":"\"b\""}]},"saved_at_ms":5}"#;
        let c = from_json(raw).unwrap();
        let state = MultipartState::from_staged(&c.staged).unwrap();
        assert_eq!((state.upload_id.as_str(), state.parts.len()), ("u-1", 2));
        assert_eq!(c.committed(), 60);
        let file = r#"{"version":1,"key":"f.bin","source":{"url_sha256":"abab","length":100,"etag":null,"last_modified":"x"},"hash":{"bytes":10,"sha256":"0707","md5":null},"staged":{"kind":"temp_file","path":"/d/.f.ferry-tmp.1.2","length":10},"saved_at_ms":5}"#;
        let c = from_json(file).unwrap();
        assert_eq!(
            TempFileState::from_staged(&c.staged).unwrap().path,
            "/d/.f.ferry-tmp.1.2"
        );
        let gap = raw.replace("\"number\":2", "\"number\":3");
        assert!(from_json(&gap).unwrap_err().contains("1..n"));
    }
}
