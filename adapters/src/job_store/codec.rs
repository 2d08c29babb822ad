//! The job store's own codec: the JSON it keeps in its payload and export
//! columns. Versioned with the store's migrations, separate from the wire
//! format (`crate::wire`), so renaming a public field never changes a
//! stored row.

use serde_json::{Value, json};

use std::time::Duration;

use ferry_domain::ports::JobEventKind;
use ferry_domain::{
    Checksum, ErrorClass, ErrorCode, Export, ExportProgress, ExportSpec, IfExists, JobOptions,
    JobStatus, JobSummary, ObjectAttributes, PollPolicy, RequestedAttributes, SourceUrl,
};

fn summary_json(s: &JobSummary) -> Value {
    json!({
        "total": s.total, "queued": s.queued, "running": s.running,
        "succeeded": s.succeeded, "skipped": s.skipped, "failed": s.failed, "cancelled": s.cancelled,
        "bytes_done": s.bytes_done,
    })
}

fn summary_from(v: &Value) -> Option<JobSummary> {
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    let u = |k: &str| n(k).and_then(|x| usize::try_from(x).ok());
    Some(JobSummary {
        total: u("total")?,
        queued: u("queued")?,
        running: u("running")?,
        succeeded: u("succeeded")?,
        // Rows written before skipping existed have none.
        skipped: u("skipped").unwrap_or(0),
        failed: u("failed")?,
        cancelled: u("cancelled")?,
        bytes_done: n("bytes_done")?,
    })
}

/// The kind-specific fields of an event.
pub fn kind_payload(kind: &JobEventKind) -> Value {
    match kind {
        JobEventKind::JobCreated { files } => json!({ "files": files }),
        JobEventKind::ExportStarted => json!({}),
        JobEventKind::ExportReady { files } => json!({ "files": files }),
        JobEventKind::FileStarted { index, attempt } => {
            json!({ "index": index, "attempt": attempt })
        }
        JobEventKind::FileProgress {
            index,
            bytes_done,
            total,
        } => {
            json!({ "index": index, "bytes_done": bytes_done, "total": total })
        }
        JobEventKind::FileSucceeded {
            index,
            bytes,
            sha256,
            md5,
        } => {
            json!({ "index": index, "bytes": bytes, "sha256": sha256.hex(), "md5": md5.as_ref().map(Checksum::hex) })
        }
        JobEventKind::FileSkipped {
            index,
            bytes,
            sha256,
        } => json!({ "index": index, "bytes": bytes, "sha256": sha256.hex() }),
        JobEventKind::FileFailed {
            index,
            code,
            class,
            message,
            will_retry,
        } => json!({
            "index": index, "code": code.as_str(), "class": class.as_str(), "message": message, "will_retry": will_retry
        }),
        JobEventKind::FileResumed { index, offset } => {
            json!({ "index": index, "offset": offset })
        }
        JobEventKind::FileRestarted { index, reason } => {
            json!({ "index": index, "reason": reason })
        }
        JobEventKind::JobCompleted { status, summary } => {
            json!({ "status": status.as_str(), "summary": summary_json(summary) })
        }
        JobEventKind::JobCancelled => json!({}),
    }
}

/// Rebuilds a kind from its name and payload.
pub fn kind_from(name: &str, p: &Value) -> Option<JobEventKind> {
    let u = |k: &str| {
        p.get(k)
            .and_then(Value::as_u64)
            .and_then(|x| usize::try_from(x).ok())
    };
    let n = |k: &str| p.get(k).and_then(Value::as_u64);
    let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(match name {
        "job_created" => JobEventKind::JobCreated { files: u("files")? },
        "export_started" => JobEventKind::ExportStarted,
        "export_ready" => JobEventKind::ExportReady { files: u("files")? },
        "file_started" => JobEventKind::FileStarted {
            index: u("index")?,
            attempt: u32::try_from(n("attempt")?).ok()?,
        },
        "file_progress" => JobEventKind::FileProgress {
            index: u("index")?,
            bytes_done: n("bytes_done")?,
            total: n("total"),
        },
        "file_succeeded" => JobEventKind::FileSucceeded {
            index: u("index")?,
            bytes: n("bytes")?,
            sha256: Checksum::sha256(&s("sha256")?).ok()?,
            md5: match s("md5") {
                Some(hex) => Some(Checksum::md5(&hex).ok()?),
                None => None,
            },
        },
        "file_skipped" => JobEventKind::FileSkipped {
            index: u("index")?,
            bytes: n("bytes")?,
            sha256: Checksum::sha256(&s("sha256")?).ok()?,
        },
        "file_failed" => JobEventKind::FileFailed {
            index: u("index")?,
            code: ErrorCode::parse(&s("code")?)?,
            class: ErrorClass::parse(&s("class")?)?,
            message: s("message")?,
            will_retry: p.get("will_retry").and_then(Value::as_bool)?,
        },
        "file_resumed" => JobEventKind::FileResumed {
            index: u("index")?,
            offset: n("offset")?,
        },
        "file_restarted" => JobEventKind::FileRestarted {
            index: u("index")?,
            reason: s("reason")?,
        },
        "job_completed" => JobEventKind::JobCompleted {
            status: JobStatus::parse(&s("status")?)?,
            summary: summary_from(p.get("summary")?)?,
        },
        "job_cancelled" => JobEventKind::JobCancelled,
        _ => return None,
    })
}

/// The stored form of an object's attributes (validated again on read).
pub fn attributes_json(a: &ObjectAttributes) -> Value {
    let r = a.to_requested();
    json!({
        "content_type": r.content_type,
        "cache_control": r.cache_control,
        "content_disposition": r.content_disposition,
        "content_encoding": r.content_encoding,
        "metadata": r.metadata,
        "tags": r.tags,
        "storage_class": r.storage_class,
        "sse": r.sse,
        "sse_kms_key_id": r.sse_kms_key_id,
        "acl": r.acl,
        "preserve_mtime": r.preserve_mtime,
    })
}

/// Parses [`attributes_json`]'s output.
pub fn attributes_from(v: &Value) -> Option<ObjectAttributes> {
    let s = |k: &str| match v.get(k) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(_) => None,
    };
    let pairs = |k: &str| -> Option<Vec<(String, String)>> {
        match v.get(k) {
            None | Some(Value::Null) => Some(Vec::new()),
            Some(p) => serde_json::from_value(p.clone()).ok(),
        }
    };
    RequestedAttributes {
        content_type: s("content_type")?,
        cache_control: s("cache_control")?,
        content_disposition: s("content_disposition")?,
        content_encoding: s("content_encoding")?,
        metadata: pairs("metadata")?,
        tags: pairs("tags")?,
        storage_class: s("storage_class")?,
        sse: s("sse")?,
        sse_kms_key_id: s("sse_kms_key_id")?,
        acl: s("acl")?,
        preserve_mtime: v
            .get("preserve_mtime")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
    .validate()
    .ok()
}

/// The stored form of a job's options.
pub fn options_json(o: &JobOptions) -> Value {
    json!({
        "if_exists": o.if_exists.as_str(),
        "attributes": attributes_json(&o.attributes),
    })
}

/// Parses [`options_json`]'s output.
pub fn options_from(v: &Value) -> Option<JobOptions> {
    Some(JobOptions {
        if_exists: IfExists::parse(v.get("if_exists")?.as_str()?)?,
        attributes: attributes_from(v.get("attributes")?)?,
    })
}

/// The stored form of a job's export (full URLs: the store needs them to
/// run; the API shows redacted ones).
pub fn export_json(e: &Export) -> Value {
    json!({
        "start_url": e.spec.start_url.expose(),
        "request_body": e.spec.request_body,
        "base_interval_ms": u64::try_from(e.spec.poll.base_interval().as_millis()).unwrap_or(u64::MAX),
        "max_interval_ms": u64::try_from(e.spec.poll.max_interval().as_millis()).unwrap_or(u64::MAX),
        "deadline_ms": u64::try_from(e.spec.poll.deadline().as_millis()).unwrap_or(u64::MAX),
        "status_url": e.progress.status_url.as_ref().map(SourceUrl::expose),
        "started_at_ms": e.progress.started_at_ms,
    })
}

/// Parses [`export_json`]'s output.
pub fn export_from(v: &Value) -> Option<Export> {
    let ms = |k: &str| v.get(k).and_then(Value::as_u64).map(Duration::from_millis);
    let url = |k: &str| match v.get(k).and_then(Value::as_str) {
        Some(s) => SourceUrl::parse(s).ok().map(Some),
        None => Some(None),
    };
    Some(Export {
        spec: ExportSpec {
            start_url: url("start_url")??,
            request_body: v
                .get("request_body")
                .and_then(Value::as_str)
                .map(str::to_owned),
            poll: PollPolicy::new(
                ms("base_interval_ms")?,
                ms("max_interval_ms")?,
                ms("deadline_ms")?,
            )
            .ok()?,
        },
        progress: ExportProgress {
            status_url: url("status_url")?,
            started_at_ms: v.get("started_at_ms").and_then(Value::as_i64),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_attributes_round_trip() {
        let attributes = RequestedAttributes {
            content_type: Some("text/csv".into()),
            metadata: vec![("team".into(), "data".into())],
            tags: vec![("env".into(), "prod".into())],
            sse: Some("aws:kms".into()),
            sse_kms_key_id: Some("k-1".into()),
            storage_class: Some("STANDARD_IA".into()),
            acl: Some("private".into()),
            preserve_mtime: true,
            ..RequestedAttributes::default()
        }
        .validate()
        .unwrap();
        let options = JobOptions {
            attributes,
            if_exists: IfExists::Skip,
        };
        assert_eq!(options_from(&options_json(&options)), Some(options.clone()));
        let plain = JobOptions::default();
        assert_eq!(options_from(&options_json(&plain)), Some(plain));
        // A stored value that no longer validates is refused, not trusted.
        let mut bad = options_json(&options);
        bad["attributes"]["acl"] = json!("everyone");
        assert_eq!(options_from(&bad), None);
        bad["attributes"]["acl"] = json!("private");
        bad["if_exists"] = json!("sometimes");
        assert_eq!(options_from(&bad), None);
    }

    #[test]
    fn skipped_events_and_old_summaries_decode() {
        let kind = JobEventKind::FileSkipped {
            index: 2,
            bytes: 7,
            sha256: Checksum::sha256(&"a".repeat(64)).unwrap(),
        };
        assert_eq!(kind_from("file_skipped", &kind_payload(&kind)), Some(kind));
        let old = json!({"status": "completed", "summary": {"total": 1, "queued": 0,
            "running": 0, "succeeded": 1, "failed": 0, "cancelled": 0, "bytes_done": 3}});
        let Some(JobEventKind::JobCompleted { summary, .. }) = kind_from("job_completed", &old)
        else {
            panic!("an old job_completed row decodes");
        };
        assert_eq!((summary.succeeded, summary.skipped), (1, 0));
    }

    #[test]
    fn exports_round_trip() {
        let mut e = Export {
            spec: ExportSpec {
                start_url: SourceUrl::parse("https://p.example/start?token=s3cret").unwrap(),
                request_body: Some(r#"{"dataset":"d1"}"#.into()),
                poll: PollPolicy::new(
                    Duration::from_millis(10),
                    Duration::from_millis(80),
                    Duration::from_secs(5),
                )
                .unwrap(),
            },
            progress: ExportProgress::default(),
        };
        assert_eq!(export_from(&export_json(&e)), Some(e.clone()));
        e.progress = ExportProgress {
            status_url: Some(SourceUrl::parse("https://p.example/status/1").unwrap()),
            started_at_ms: Some(42),
        };
        assert_eq!(export_from(&export_json(&e)), Some(e));
        assert_eq!(export_from(&json!({"start_url": "ftp://x"})), None);
    }

    #[test]
    fn every_kind_round_trips() {
        let kinds = vec![
            JobEventKind::JobCreated { files: 3 },
            JobEventKind::ExportStarted,
            JobEventKind::ExportReady { files: 2 },
            JobEventKind::FileStarted {
                index: 1,
                attempt: 2,
            },
            JobEventKind::FileProgress {
                index: 1,
                bytes_done: 10,
                total: Some(20),
            },
            JobEventKind::FileProgress {
                index: 1,
                bytes_done: 10,
                total: None,
            },
            JobEventKind::FileSucceeded {
                index: 0,
                bytes: 5,
                sha256: Checksum::sha256(&"ab".repeat(32)).unwrap(),
                md5: None,
            },
            JobEventKind::FileFailed {
                index: 0,
                code: ferry_domain::ErrorCode::ChecksumMismatch,
                class: ErrorClass::Client,
                message: "m".into(),
                will_retry: false,
            },
            JobEventKind::FileResumed {
                index: 2,
                offset: 8 << 20,
            },
            JobEventKind::FileRestarted {
                index: 2,
                reason: "the source changed".into(),
            },
            JobEventKind::JobCompleted {
                status: JobStatus::CompletedWithErrors,
                summary: JobSummary {
                    total: 2,
                    succeeded: 1,
                    failed: 1,
                    bytes_done: 9,
                    ..JobSummary::default()
                },
            },
            JobEventKind::JobCancelled,
        ];
        for kind in kinds {
            assert_eq!(kind_from(kind.name(), &kind_payload(&kind)), Some(kind));
        }
    }
}
