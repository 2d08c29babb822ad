//! The HTTP API (axum on hyper). Handlers only talk to the JobService; DTOs
//! here are the wire format, converted to and from the domain's types.

mod dto;
mod openapi;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use ferry_application::jobs::{JobCancelError, JobService, SubmitError};
use ferry_domain::ports::{JobFilter, JobStoreError};
use ferry_domain::{JobId, JobStatus};

pub use dto::JobRequestDto;

/// Shared state: the use cases, nothing else.
#[derive(Clone, Debug)]
pub struct AppState {
    pub jobs: Arc<JobService>,
}

/// An API error: `{"error": {"code", "message", "field"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({ "error": { "code": self.code, "message": self.message, "field": self.field } });
        (self.status, Json(body)).into_response()
    }
}

impl From<JobStoreError> for ApiError {
    fn from(e: JobStoreError) -> Self {
        match e {
            JobStoreError::NotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("job {id} does not exist"),
            ),
            JobStoreError::BadCursor => {
                let mut err =
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string());
                err.field = Some("cursor".into());
                err
            }
            JobStoreError::AlreadyExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            JobStoreError::Unavailable(_) => {
                tracing::error!(error = %e, "job store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the job store is unavailable; retry later",
                )
            }
            JobStoreError::Unexpected(_) => {
                tracing::error!(error = %e, "job store failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

fn json_rejection(r: &JsonRejection) -> ApiError {
    let status = r.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "invalid_json",
    };
    ApiError::new(status, code, r.body_text())
}

fn parse_id(raw: &str) -> Result<JobId, ApiError> {
    JobId::parse(raw).map_err(|e| {
        let mut err = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string());
        err.field = Some("id".into());
        err
    })
}

/// The router; `max_body` bounds request bodies (413 beyond).
pub fn router(state: AppState, max_body: usize) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/jobs", get(list_jobs).post(submit_job))
        .route("/v1/jobs/{id}", get(get_job).delete(cancel_job))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn submit_job(
    State(state): State<AppState>,
    body: Result<Json<JobRequestDto>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(dto) = body.map_err(|r| json_rejection(&r))?;
    let record = state
        .jobs
        .submit(dto.into_request())
        .await
        .map_err(|e| match e {
            SubmitError::Invalid(invalid) => {
                let mut err =
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", invalid.message);
                err.field = Some(invalid.field);
                err
            }
            SubmitError::Store(e) => e.into(),
        })?;
    tokio::spawn(state.jobs.clone().run_abortable(record.job.id.clone()));
    Ok((StatusCode::ACCEPTED, Json(dto::job_json(&record))))
}

async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&id)?;
    let record = state
        .jobs
        .get(&id)
        .await?
        .ok_or(JobStoreError::NotFound(id))?;
    Ok(Json(dto::job_json(&record)))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_jobs(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query
        .map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", r.body_text()))?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            let mut err = ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("`{s}` is not a job status (pending, exporting, downloading, completed, completed_with_errors, failed, cancelled)"),
            );
            err.field = Some("status".into());
            err
        })?),
    };
    let page = state
        .jobs
        .list(&JobFilter {
            status,
            limit: q.limit.unwrap_or(50).clamp(1, 1000),
            cursor: q.cursor,
        })
        .await?;
    let jobs: Vec<_> = page.jobs.iter().map(dto::job_json).collect();
    Ok(Json(
        json!({ "jobs": jobs, "next_cursor": page.next_cursor }),
    ))
}

async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&id)?;
    match state.jobs.cancel(&id).await {
        Ok(record) => Ok(Json(dto::job_json(&record))),
        Err(JobCancelError::NotFound(id)) => Err(JobStoreError::NotFound(id).into()),
        Err(e @ JobCancelError::AlreadyEnded { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_ended",
            e.to_string(),
        )),
        Err(JobCancelError::Store(e)) => Err(e.into()),
    }
}
