//! The wire format: serde-derived DTOs for the HTTP API, the event streams
//! (NDJSON, SSE, WebSocket) and the webhook, converted from and to the
//! domain's types. The OpenAPI document is generated from these types
//! (utoipa). The job store keeps its own codec (`job_store::codec`): a
//! field renamed here never changes a stored row, and the reverse.
//!
//! Secrets stay out: sources and URLs are shown redacted and the Step
//! Functions task token is never returned.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use ferry_domain::ports::{JobEvent, JobEventKind, JobHead, JobRecord, ManifestEntry};
use ferry_domain::{
    ErrorClass, FileTask, IfExists, JobStatus, JobSummary, RequestedAttributes, SourceUrl,
    TaskStatus,
};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatusDto {
    Pending,
    Exporting,
    Downloading,
    Completed,
    CompletedWithErrors,
    Failed,
    Cancelled,
}

impl From<JobStatus> for JobStatusDto {
    fn from(s: JobStatus) -> Self {
        match s {
            JobStatus::Pending => Self::Pending,
            JobStatus::Exporting => Self::Exporting,
            JobStatus::Downloading => Self::Downloading,
            JobStatus::Completed => Self::Completed,
            JobStatus::CompletedWithErrors => Self::CompletedWithErrors,
            JobStatus::Failed => Self::Failed,
            JobStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// Where a file of a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatusDto {
    Queued,
    Running,
    Succeeded,
    /// The destination already held it (`if_exists: skip`).
    Skipped,
    Failed,
    Cancelled,
}

impl From<TaskStatus> for TaskStatusDto {
    fn from(s: TaskStatus) -> Self {
        match s {
            TaskStatus::Queued => Self::Queued,
            TaskStatus::Running => Self::Running,
            TaskStatus::Succeeded => Self::Succeeded,
            TaskStatus::Skipped => Self::Skipped,
            TaskStatus::Failed => Self::Failed,
            TaskStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// What kind of failure happened (what a retry can do about it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClassDto {
    Transient,
    SourceChanged,
    Client,
    Storage,
    Cancelled,
    Internal,
}

impl From<ErrorClass> for ErrorClassDto {
    fn from(c: ErrorClass) -> Self {
        match c {
            ErrorClass::Transient => Self::Transient,
            ErrorClass::SourceChanged => Self::SourceChanged,
            ErrorClass::Client => Self::Client,
            ErrorClass::Storage => Self::Storage,
            ErrorClass::Cancelled => Self::Cancelled,
            ErrorClass::Internal => Self::Internal,
        }
    }
}

/// Counts of a job's files by state, and bytes done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SummaryDto {
    pub total: usize,
    pub queued: usize,
    pub running: usize,
    pub succeeded: usize,
    /// Already at the destination (`if_exists: skip`); counts as done.
    pub skipped: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub bytes_done: u64,
}

impl From<&JobSummary> for SummaryDto {
    fn from(s: &JobSummary) -> Self {
        Self {
            total: s.total,
            queued: s.queued,
            running: s.running,
            succeeded: s.succeeded,
            skipped: s.skipped,
            failed: s.failed,
            cancelled: s.cancelled,
            bytes_done: s.bytes_done,
        }
    }
}

/// Why a file failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FileErrorDto {
    pub class: ErrorClassDto,
    /// Stable snake_case code, e.g. `checksum_mismatch`.
    pub code: String,
    pub message: String,
}

/// One file of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FileDto {
    pub index: usize,
    /// Redacted: no userinfo, every query value `REDACTED`.
    pub source: String,
    pub key: String,
    pub status: TaskStatusDto,
    pub attempts: u32,
    pub bytes_done: u64,
    pub sha256: Option<String>,
    pub md5: Option<String>,
    pub error: Option<FileErrorDto>,
}

impl From<&FileTask> for FileDto {
    fn from(t: &FileTask) -> Self {
        Self {
            index: t.index,
            source: t.spec.source.redacted(),
            key: t.spec.key.as_str().to_owned(),
            status: t.status().into(),
            attempts: t.attempts(),
            bytes_done: t.bytes_done(),
            sha256: t.sha256().map(|c| c.hex().to_owned()),
            md5: t.md5().map(|c| c.hex().to_owned()),
            error: t.failure().map(|f| FileErrorDto {
                class: f.class.into(),
                code: f.code.as_str().to_owned(),
                message: f.message.clone(),
            }),
        }
    }
}

/// Poll timing of an export, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PollView {
    pub base_interval_ms: u64,
    pub max_interval_ms: u64,
    pub deadline_ms: u64,
}

/// The export a job started at a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ExportView {
    pub start_url: String,
    pub status_url: Option<String>,
    pub started_at_ms: Option<i64>,
    pub poll: PollView,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Files shown inside a job's answer (`GET /v1/jobs/{id}`, a submission,
/// a cancellation); the rest are paged at `GET /v1/jobs/{id}/files`.
pub const INLINE_FILES: usize = 100;

/// A job as the API shows it. Listings and stream snapshots leave out
/// `files`; a job's own answer carries its first [`INLINE_FILES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct JobDto {
    pub id: String,
    pub status: JobStatusDto,
    /// `s3://bucket/prefix`, or a directory under the server's files root.
    pub destination: String,
    /// The token name that submitted it (authenticated servers).
    pub owner: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Why the job failed, when it did.
    pub failure: Option<String>,
    /// The job answers a Step Functions task token when it ends (the token
    /// itself is never shown).
    pub has_task_token: bool,
    /// What happened to the Step Functions callback: `sent task_success`,
    /// `sent task_failure` or `failed: <reason>`.
    pub callback: Option<String>,
    pub summary: SummaryDto,
    pub export: Option<ExportView>,
    /// The job's object attributes (each file may add its own).
    pub attributes: AttributesDto,
    pub if_exists: IfExistsDto,
    /// The job's first files, in index order (a job's own answer only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileDto>>,
    /// Set when the job has more files than `files` shows: pass as
    /// `cursor` to `GET /v1/jobs/{id}/files` for the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_next_cursor: Option<String>,
}

impl From<&JobHead> for JobDto {
    fn from(head: &JobHead) -> Self {
        Self {
            id: head.id.as_str().to_owned(),
            status: head.status.into(),
            destination: head.destination.to_string(),
            owner: head.owner.clone(),
            created_at_ms: head.created_at_ms,
            updated_at_ms: head.updated_at_ms,
            failure: head.failure.clone(),
            has_task_token: head.has_task_token,
            callback: head.callback.as_ref().map(ToString::to_string),
            summary: (&head.summary).into(),
            export: head.export.as_ref().map(|e| ExportView {
                start_url: e.spec.start_url.redacted(),
                status_url: e.progress.status_url.as_ref().map(SourceUrl::redacted),
                started_at_ms: e.progress.started_at_ms,
                poll: PollView {
                    base_interval_ms: millis(e.spec.poll.base_interval()),
                    max_interval_ms: millis(e.spec.poll.max_interval()),
                    deadline_ms: millis(e.spec.poll.deadline()),
                },
            }),
            attributes: AttributesDto::from(&head.options.attributes.to_requested()),
            if_exists: head.options.if_exists.into(),
            files: None,
            files_next_cursor: None,
        }
    }
}

impl JobDto {
    /// The job with its first files: `tasks` are its first ones in index
    /// order; past [`INLINE_FILES`] of them, the rest are named by
    /// `files_next_cursor`.
    pub fn with_files(head: &JobHead, tasks: &[FileTask]) -> Self {
        let page = FilePageDto::of(tasks, INLINE_FILES);
        Self {
            files: Some(page.files),
            files_next_cursor: page.next_cursor,
            ..Self::from(head)
        }
    }

    /// A whole record's answer (a submission, a cancellation).
    pub fn of_record(record: &JobRecord) -> Self {
        let tasks = record.job.tasks();
        Self::with_files(&record.head(), &tasks[..tasks.len().min(INLINE_FILES + 1)])
    }
}

/// A page of jobs, newest first (without their files).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobPageDto {
    pub jobs: Vec<JobDto>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// A page of a job's files, in index order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FilePageDto {
    pub files: Vec<FileDto>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

impl FilePageDto {
    /// `tasks` read with a limit of `limit + 1`: the extra one only says
    /// that there are more.
    pub fn of(tasks: &[FileTask], limit: usize) -> Self {
        let shown = &tasks[..tasks.len().min(limit)];
        Self {
            files: shown.iter().map(FileDto::from).collect(),
            next_cursor: if tasks.len() > limit {
                shown.last().map(|t| t.index.to_string())
            } else {
                None
            },
        }
    }
}

/// What happened, with the fields of its kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKindDto {
    JobCreated {
        files: usize,
    },
    ExportStarted {},
    ExportReady {
        files: usize,
    },
    FileStarted {
        index: usize,
        attempt: u32,
    },
    FileProgress {
        index: usize,
        bytes_done: u64,
        total: Option<u64>,
    },
    FileSucceeded {
        index: usize,
        bytes: u64,
        sha256: String,
        md5: Option<String>,
    },
    /// The destination already held the file (`if_exists: skip`).
    FileSkipped {
        index: usize,
        bytes: u64,
        sha256: String,
    },
    FileFailed {
        index: usize,
        /// Stable snake_case code, e.g. `checksum_mismatch`.
        code: String,
        class: ErrorClassDto,
        message: String,
        will_retry: bool,
    },
    FileResumed {
        index: usize,
        offset: u64,
    },
    FileRestarted {
        index: usize,
        reason: String,
    },
    JobCompleted {
        status: JobStatusDto,
        summary: SummaryDto,
    },
    JobCancelled {},
}

impl From<&JobEventKind> for EventKindDto {
    fn from(kind: &JobEventKind) -> Self {
        match kind.clone() {
            JobEventKind::JobCreated { files } => Self::JobCreated { files },
            JobEventKind::ExportStarted => Self::ExportStarted {},
            JobEventKind::ExportReady { files } => Self::ExportReady { files },
            JobEventKind::FileStarted { index, attempt } => Self::FileStarted { index, attempt },
            JobEventKind::FileProgress {
                index,
                bytes_done,
                total,
            } => Self::FileProgress {
                index,
                bytes_done,
                total,
            },
            JobEventKind::FileSucceeded {
                index,
                bytes,
                sha256,
                md5,
            } => Self::FileSucceeded {
                index,
                bytes,
                sha256: sha256.hex().to_owned(),
                md5: md5.as_ref().map(|c| c.hex().to_owned()),
            },
            JobEventKind::FileSkipped {
                index,
                bytes,
                sha256,
            } => Self::FileSkipped {
                index,
                bytes,
                sha256: sha256.hex().to_owned(),
            },
            JobEventKind::FileFailed {
                index,
                code,
                class,
                message,
                will_retry,
            } => Self::FileFailed {
                index,
                code: code.as_str().to_owned(),
                class: class.into(),
                message,
                will_retry,
            },
            JobEventKind::FileResumed { index, offset } => Self::FileResumed { index, offset },
            JobEventKind::FileRestarted { index, reason } => Self::FileRestarted { index, reason },
            JobEventKind::JobCompleted { status, summary } => Self::JobCompleted {
                status: status.into(),
                summary: (&summary).into(),
            },
            JobEventKind::JobCancelled => Self::JobCancelled {},
        }
    }
}

/// One stored event of a job: `{"seq","job_id","type","at_ms",…fields}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct EventDto {
    /// The job's sequence number of this event (from 1, no gaps).
    pub seq: u64,
    pub job_id: String,
    /// Unix milliseconds.
    pub at_ms: i64,
    #[serde(flatten)]
    pub kind: EventKindDto,
}

impl From<&JobEvent> for EventDto {
    fn from(e: &JobEvent) -> Self {
        Self {
            seq: e.seq,
            job_id: e.job_id.as_str().to_owned(),
            at_ms: e.at_ms,
            kind: (&e.kind).into(),
        }
    }
}

/// One item of a live stream (an NDJSON line, an SSE `data:`, a WebSocket
/// text frame).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum StreamItemDto {
    Event(EventDto),
    Control(ControlDto),
}

/// The stream's own items: the first snapshot, heartbeats (NDJSON), the
/// lagged notice and the shutdown notice.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlDto {
    /// The job when the stream starts (`job`, with `seq` of the latest
    /// event it reflects), or the unfinished jobs (`jobs`, all-jobs
    /// stream).
    Snapshot {
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        job: Option<Box<JobDto>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        jobs: Option<Vec<JobDto>>,
    },
    Heartbeat {},
    /// The client fell too far behind; reconnect with `after=last_seq`.
    Lagged {
        last_seq: u64,
        message: String,
    },
    /// The server is shutting down; reconnect to continue.
    Shutdown {
        message: String,
    },
}

/// An API error: `{"error": {"code", "message", "field"}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDto {
    pub error: ErrorDetailDto,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetailDto {
    /// Stable snake_case code, e.g. `invalid_request`, `not_found`.
    pub code: String,
    pub message: String,
    /// The request field at fault (e.g. `files[3].sha256`), when one is.
    pub field: Option<String>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthDto {
    /// Always `ok` while the process serves.
    pub status: String,
}

/// One dependency's readiness.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckDto {
    /// `ok` or `unavailable`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The backpressure gate's level and inputs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PressureDto {
    /// `none`, `light`, `moderate`, `heavy` or `critical`.
    pub level: String,
    pub score: u32,
    pub memory: u32,
    pub streams: u32,
    pub latency: u32,
    pub admitted: usize,
    pub cap: usize,
    pub chunk_latency_p95_ms: Option<u64>,
}

/// `GET /readyz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReadinessDto {
    /// `ready` or `not_ready`.
    pub status: String,
    /// By dependency: `job_store`, `storage`.
    pub checks: BTreeMap<String, CheckDto>,
    pub pressure: Option<PressureDto>,
    /// Cluster mode: this node's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `POST /v1/jobs`: files to copy, or an export to start at a provider.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "destination": "exports/2026",
    "files": [{
        "source": "https://files.example.com/data/a.bin",
        "key": "a.bin",
        "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    }]
}))]
pub struct JobRequestDto {
    #[serde(default)]
    pub files: Vec<FileRequestDto>,
    /// Instead of `files`: an export to start at a provider.
    #[serde(default)]
    pub export: Option<ExportRequestDto>,
    /// `s3://bucket/prefix`, or a directory under the server's files root.
    #[serde(default)]
    pub destination: String,
    /// An AWS Step Functions task token to answer when the job ends.
    #[serde(default)]
    pub task_token: Option<String>,
    /// Attributes of every object the job writes (an export's files too);
    /// a file's own `attributes` are laid over them.
    #[serde(default)]
    pub attributes: Option<AttributesDto>,
    /// What to do with a key the destination already holds.
    #[serde(default)]
    pub if_exists: Option<IfExistsDto>,
}

/// What a job does with a key the destination already holds: `overwrite`
/// (the default); `skip` when it holds the same size and SHA-256 (every
/// file then needs its `sha256`; the file ends `skipped`); `refuse`: never
/// replace an existing key (the file fails with `destination_exists`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IfExistsDto {
    #[default]
    Overwrite,
    Skip,
    Refuse,
}

impl From<IfExistsDto> for IfExists {
    fn from(v: IfExistsDto) -> Self {
        match v {
            IfExistsDto::Overwrite => IfExists::Overwrite,
            IfExistsDto::Skip => IfExists::Skip,
            IfExistsDto::Refuse => IfExists::Refuse,
        }
    }
}

impl From<IfExists> for IfExistsDto {
    fn from(v: IfExists) -> Self {
        match v {
            IfExists::Overwrite => IfExistsDto::Overwrite,
            IfExists::Skip => IfExistsDto::Skip,
            IfExists::Refuse => IfExistsDto::Refuse,
        }
    }
}

/// What a stored object carries besides its bytes (docs/s3.md). Without
/// `content_type`, the source's Content-Type is used, else a guess from
/// the key's extension.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributesDto {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    /// Stored as given; ferry never decompresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    /// User metadata (`x-amz-meta-NAME`); names are letters, digits, `-`, `_`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Object tags (at most 10).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "STANDARD_IA")]
    pub storage_class: Option<String>,
    /// `AES256` or `aws:kms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<String>,
    /// With `sse: aws:kms`: the key (else the bucket's default key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_kms_key_id: Option<String>,
    /// A canned ACL, e.g. `bucket-owner-full-control`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<String>,
    /// Directory destinations: the file's mtime from the source's
    /// Last-Modified.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preserve_mtime: bool,
}

impl From<AttributesDto> for RequestedAttributes {
    fn from(a: AttributesDto) -> Self {
        RequestedAttributes {
            content_type: a.content_type,
            cache_control: a.cache_control,
            content_disposition: a.content_disposition,
            content_encoding: a.content_encoding,
            metadata: a.metadata.into_iter().collect(),
            tags: a.tags.into_iter().collect(),
            storage_class: a.storage_class,
            sse: a.sse,
            sse_kms_key_id: a.sse_kms_key_id,
            acl: a.acl,
            preserve_mtime: a.preserve_mtime,
        }
    }
}

impl From<&RequestedAttributes> for AttributesDto {
    fn from(a: &RequestedAttributes) -> Self {
        AttributesDto {
            content_type: a.content_type.clone(),
            cache_control: a.cache_control.clone(),
            content_disposition: a.content_disposition.clone(),
            content_encoding: a.content_encoding.clone(),
            metadata: a.metadata.iter().cloned().collect(),
            tags: a.tags.iter().cloned().collect(),
            storage_class: a.storage_class.clone(),
            sse: a.sse.clone(),
            sse_kms_key_id: a.sse_kms_key_id.clone(),
            acl: a.acl.clone(),
            preserve_mtime: a.preserve_mtime,
        }
    }
}

/// One file of a job request (also a manifest entry of an export).
/// `Debug` shows header names only.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRequestDto {
    /// `http://` or `https://` URL (`file://` only with `--file-root`).
    #[schema(format = "uri", example = "https://files.example.com/data/a.bin")]
    pub source: String,
    /// Where the file lands under the destination: 1-1024 bytes, relative,
    /// no `.`/`..` or empty segments, no control characters.
    #[schema(example = "data/a.bin", min_length = 1, max_length = 1024)]
    pub key: String,
    #[serde(default)]
    pub size: Option<u64>,
    /// Expected SHA-256 (64 hex digits), checked before the file is stored.
    #[serde(default)]
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub sha256: Option<String>,
    /// Expected MD5 (32 hex digits).
    #[serde(default)]
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub md5: Option<String>,
    /// Request headers for the source (e.g. `{"Authorization": "Bearer
    /// …"}`): at most 32; not `Host` or hop-by-hop headers. Secret: never
    /// shown in answers, events or logs, sent only to the source's own
    /// origin (not after a redirect to another host), and removed from the
    /// store when the job ends.
    #[serde(default)]
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// This object's attributes, laid over the job's.
    #[serde(default)]
    pub attributes: Option<AttributesDto>,
}

impl std::fmt::Debug for FileRequestDto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&String> = self.headers.iter().flat_map(|h| h.keys()).collect();
        f.debug_struct("FileRequestDto")
            .field("source", &ferry_domain::source::redact_text(&self.source))
            .field("key", &self.key)
            .field("size", &self.size)
            .field("sha256", &self.sha256)
            .field("md5", &self.md5)
            .field("headers", &headers)
            .field("attributes", &self.attributes)
            .finish()
    }
}

impl From<FileRequestDto> for ManifestEntry {
    fn from(f: FileRequestDto) -> Self {
        ManifestEntry {
            source: f.source,
            key: f.key,
            size: f.size,
            sha256: f.sha256,
            md5: f.md5,
            headers: ferry_domain::RequestedHeaders(
                f.headers.unwrap_or_default().into_iter().collect(),
            ),
            attributes: f.attributes.map(Into::into).unwrap_or_default(),
        }
    }
}

/// `export` of `POST /v1/jobs` (see docs/export-provider.md).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRequestDto {
    pub start_url: String,
    /// Any JSON, sent as the start request's body.
    #[serde(default)]
    pub request: Option<serde_json::Value>,
    #[serde(default)]
    pub poll: Option<PollRequestDto>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PollRequestDto {
    #[serde(default)]
    pub base_interval_ms: Option<u64>,
    #[serde(default)]
    pub max_interval_ms: Option<u64>,
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use ferry_domain::JobId;

    #[test]
    fn events_keep_their_flat_shape() {
        let e = JobEvent {
            job_id: JobId::parse("j1").unwrap(),
            seq: 3,
            at_ms: 42,
            kind: JobEventKind::FileProgress {
                index: 1,
                bytes_done: 10,
                total: None,
            },
        };
        let v = serde_json::to_value(EventDto::from(&e)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"seq":3,"job_id":"j1","at_ms":42,"type":"file_progress","index":1,"bytes_done":10,"total":null})
        );
        let done = JobEvent {
            kind: JobEventKind::JobCancelled,
            ..e
        };
        let v = serde_json::to_value(EventDto::from(&done)).unwrap();
        assert_eq!(v["type"], "job_cancelled");
        let hb = serde_json::to_value(StreamItemDto::Control(ControlDto::Heartbeat {})).unwrap();
        assert_eq!(hb, serde_json::json!({"type":"heartbeat"}));
    }
}
