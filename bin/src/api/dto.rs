//! Wire format of jobs. Secrets stay out: sources are shown redacted and the
//! Step Functions task token is never returned.

use serde::Deserialize;
use serde_json::{Value, json};

use ferry_adapters::job_store::codec::summary_json;
use ferry_application::jobs::{ExportRequest, FileRequest, SubmitJobRequest};
use ferry_domain::SourceUrl;
use ferry_domain::ports::JobRecord;

/// `POST /v1/jobs` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequestDto {
    #[serde(default)]
    pub files: Vec<FileDto>,
    /// Instead of `files`: an export to start at a provider.
    #[serde(default)]
    pub export: Option<ExportDto>,
    /// `s3://bucket/prefix`, or a directory under the server's files root.
    #[serde(default)]
    pub destination: String,
    #[serde(default)]
    pub task_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDto {
    pub source: String,
    pub key: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub md5: Option<String>,
}

/// `export` of `POST /v1/jobs` (see docs/export-provider.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportDto {
    pub start_url: String,
    /// Any JSON, sent as the start request's body.
    #[serde(default)]
    pub request: Option<Value>,
    #[serde(default)]
    pub poll: Option<PollDto>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollDto {
    #[serde(default)]
    pub base_interval_ms: Option<u64>,
    #[serde(default)]
    pub max_interval_ms: Option<u64>,
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

impl JobRequestDto {
    pub fn into_request(self) -> SubmitJobRequest {
        SubmitJobRequest {
            files: self
                .files
                .into_iter()
                .map(|f| FileRequest {
                    source: f.source,
                    key: f.key,
                    size: f.size,
                    sha256: f.sha256,
                    md5: f.md5,
                })
                .collect(),
            export: self.export.map(|e| {
                let poll = e.poll.unwrap_or_default();
                ExportRequest {
                    start_url: e.start_url,
                    request_body: e.request.map(|v| v.to_string()),
                    base_interval_ms: poll.base_interval_ms,
                    max_interval_ms: poll.max_interval_ms,
                    deadline_ms: poll.deadline_ms,
                }
            }),
            destination: self.destination,
            task_token: self.task_token,
            owner: None,
        }
    }
}

/// A job as the API shows it.
pub fn job_json(record: &JobRecord) -> Value {
    let files: Vec<Value> = record
        .job
        .tasks()
        .iter()
        .map(|t| {
            json!({
                "index": t.index,
                "source": t.spec.source.redacted(),
                "key": t.spec.key.as_str(),
                "status": t.status().as_str(),
                "attempts": t.attempts(),
                "bytes_done": t.bytes_done(),
                "sha256": t.sha256().map(|c| c.hex().to_owned()),
                "md5": t.md5().map(|c| c.hex().to_owned()),
                "error": t.failure().map(|f| json!({
                    "class": f.class.as_str(), "code": f.code, "message": f.message,
                })),
            })
        })
        .collect();
    json!({
        "id": record.job.id.as_str(),
        "status": record.job.status().as_str(),
        "destination": record.destination.to_string(),
        "owner": record.owner,
        "created_at_ms": record.created_at_ms,
        "updated_at_ms": record.updated_at_ms,
        "failure": record.job.failure(),
        "has_task_token": record.task_token.is_some(),
        "callback": record.callback,
        "summary": summary_json(&record.job.summary()),
        "export": record.export.as_ref().map(|e| json!({
            "start_url": e.spec.start_url.redacted(),
            "status_url": e.progress.status_url.as_ref().map(SourceUrl::redacted),
            "started_at_ms": e.progress.started_at_ms,
            "poll": {
                "base_interval_ms": u64::try_from(e.spec.poll.base_interval().as_millis()).unwrap_or(u64::MAX),
                "max_interval_ms": u64::try_from(e.spec.poll.max_interval().as_millis()).unwrap_or(u64::MAX),
                "deadline_ms": u64::try_from(e.spec.poll.deadline().as_millis()).unwrap_or(u64::MAX),
            },
        })),
        "files": files,
    })
}
