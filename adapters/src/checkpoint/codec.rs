//! The one JSON form of a checkpoint, shared by the job store's
//! `ferry_checkpoints` table and `ferry copy`'s state files. Hash states are
//! hex; the source is identified by a digest of its URL, never the URL.

use serde_json::{Value, json};

use ferry_domain::{Checkpoint, HashState, ObjectKey, PartRecord, SourceIdentity, StagedState};

/// Bumped when the form changes; an unknown version is treated as corrupt
/// (the transfer restarts from zero).
const VERSION: u64 = 1;

pub fn to_json(c: &Checkpoint) -> String {
    let staged = match &c.staged {
        StagedState::Multipart {
            upload_id,
            part_size,
            parts,
        } => json!({
            "kind": "multipart",
            "upload_id": upload_id,
            "part_size": part_size,
            "parts": parts.iter().map(|p| json!({"number": p.number, "size": p.size, "etag": p.etag})).collect::<Vec<_>>(),
        }),
        StagedState::TempFile { path, length } => {
            json!({"kind": "temp_file", "path": path, "length": length})
        }
    };
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
    let staged = match text(st, "kind")?.as_str() {
        "multipart" => StagedState::Multipart {
            upload_id: text(st, "upload_id")?,
            part_size: num(st, "part_size")?,
            parts: st
                .get("parts")
                .and_then(Value::as_array)
                .ok_or("missing parts")?
                .iter()
                .map(|p| {
                    Ok(PartRecord {
                        number: u32::try_from(num(p, "number")?).map_err(|e| e.to_string())?,
                        size: num(p, "size")?,
                        etag: text(p, "etag")?,
                    })
                })
                .collect::<Result<_, String>>()?,
        },
        "temp_file" => StagedState::TempFile {
            path: text(st, "path")?,
            length: num(st, "length")?,
        },
        other => return Err(format!("unknown staged kind {other}")),
    };
    let saved_at_ms = v.get("saved_at_ms").and_then(Value::as_i64).unwrap_or(0);
    Checkpoint::new(source, key, hash, staged, saved_at_ms).map_err(|e| e.to_string())
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
        let multipart = sample(StagedState::Multipart {
            upload_id: "u-1".into(),
            part_size: 8 << 20,
            parts: (1..=3)
                .map(|n| PartRecord {
                    number: n,
                    size: 8 << 20,
                    etag: format!("\"etag{n}\""),
                })
                .collect(),
        });
        let file = sample(StagedState::TempFile {
            path: "/data/dir/.file.bin.ferry-tmp.1.2".into(),
            length: 5 << 20,
        });
        for c in [multipart, file] {
            assert_eq!(from_json(&to_json(&c)).unwrap(), c);
        }
    }

    #[test]
    fn damaged_checkpoints_are_refused_with_a_reason() {
        let c = sample(StagedState::TempFile {
            path: "/d/.f.ferry-tmp.1.2".into(),
            length: 10,
        });
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
}
