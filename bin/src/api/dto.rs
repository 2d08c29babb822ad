//! Requests from the wire into the application's types. The wire format
//! itself (every request, answer and event) is `ferry_adapters::wire`.

use ferry_adapters::wire::JobRequestDto;
use ferry_application::jobs::{ExportRequest, SubmitJobRequest};

/// `POST /v1/jobs`'s body as the JobService takes it (the owner, scopes
/// and quotas are set by the handler from the caller).
pub fn into_request(dto: JobRequestDto) -> SubmitJobRequest {
    SubmitJobRequest {
        files: dto.files.into_iter().map(Into::into).collect(),
        export: dto.export.map(|e| {
            let poll = e.poll.unwrap_or_default();
            ExportRequest {
                start_url: e.start_url,
                request_body: e.request.map(|v| v.to_string()),
                base_interval_ms: poll.base_interval_ms,
                max_interval_ms: poll.max_interval_ms,
                deadline_ms: poll.deadline_ms,
            }
        }),
        destination: dto.destination,
        task_token: dto.task_token,
        owner: None,
        scopes: ferry_domain::WriteScopes::default(),
        quota: ferry_application::jobs::OwnerQuota::default(),
        attributes: dto.attributes.map(Into::into).unwrap_or_default(),
        if_exists: dto.if_exists.unwrap_or_default().into(),
    }
}
