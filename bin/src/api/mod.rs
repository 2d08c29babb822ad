//! The HTTP API (axum on hyper). Handlers only talk to the JobService; DTOs
//! here are the wire format, converted to and from the domain's types.

pub mod auth;
mod dto;
mod openapi;
mod streams;
mod ui;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use ferry_adapters::metrics::Metrics;

use ferry_application::jobs::{JobCancelError, JobService, SubmitError, Submitted};

use auth::{AuthConfig, Caller, Limits};
use ferry_domain::ports::{
    IdempotencyKey, InvalidIdempotencyKey, JobFilter, JobStoreError, TaskFilter,
};
use ferry_domain::{JobId, JobStatus, TaskStatus};

use ferry_adapters::wire::{
    CheckDto, ErrorDetailDto, ErrorDto, FilePageDto, HealthDto, INLINE_FILES, JobDto, JobPageDto,
    JobRequestDto, PressureDto, ReadinessDto,
};

/// Shared state: the use cases, metrics, and the stream settings.
#[derive(Clone, Debug)]
pub struct AppState {
    pub jobs: Arc<JobService>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down: streams send a last event.
    pub shutdown: CancellationToken,
    /// Heartbeat after this long without an event on a stream.
    pub heartbeat: Duration,
    /// Who may call (tokens) and what is open.
    pub auth: Arc<AuthConfig>,
    /// Per-caller submission rate and stream count.
    pub limits: Arc<Limits>,
}

/// An API error: `{"error": {"code", "message", "field"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// Seconds, sent as `Retry-After`.
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// Names the request field at fault.
    fn at(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 404 for a job that does not exist or that the caller may not see
    /// (the two are indistinguishable on purpose).
    fn job_not_found(id: &JobId) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("job {id} does not exist"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorDto {
            error: ErrorDetailDto {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// The job without its files, if it exists and `caller` may see it.
async fn visible_job(
    state: &AppState,
    caller: &Caller,
    id: &JobId,
) -> Result<ferry_domain::ports::JobHead, ApiError> {
    state
        .jobs
        .head(&caller.access(), id)
        .await?
        .ok_or_else(|| ApiError::job_not_found(id))
}

/// The job's head and the tasks `filter` selects, if it exists and
/// `caller` may see it.
async fn visible_files(
    state: &AppState,
    caller: &Caller,
    id: &JobId,
    filter: &TaskFilter,
) -> Result<(ferry_domain::ports::JobHead, Vec<ferry_domain::FileTask>), ApiError> {
    state
        .jobs
        .files(&caller.access(), id, filter)
        .await?
        .ok_or_else(|| ApiError::job_not_found(id))
}

impl From<JobStoreError> for ApiError {
    fn from(e: JobStoreError) -> Self {
        match e {
            JobStoreError::NotFound(id) => ApiError::job_not_found(&id),
            JobStoreError::BadCursor => {
                let mut err =
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string());
                err.field = Some("cursor".into());
                err
            }
            JobStoreError::AlreadyExists(_)
            | JobStoreError::LeaseLost { .. }
            | JobStoreError::StatusChanged { .. } => {
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

/// A request body that was not whole by its deadline.
#[derive(Debug, Clone)]
struct BodyDeadline;

impl std::fmt::Display for BodyDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyDeadline {}

/// Gives every request body an overall deadline (a trickled body holds a
/// connection no longer than that): past it, reading the body fails with
/// [`BodyDeadline`], answered 408.
async fn body_deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + limit;
    let (parts, body) = req.into_parts();
    let timed = futures::stream::unfold(
        (body.into_data_stream(), false),
        move |(mut data, failed)| async move {
            if failed {
                return None;
            }
            match tokio::time::timeout_at(deadline, data.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), (data, false))),
                Ok(Some(Err(e))) => Some((Err(BoxedError::from(e)), (data, true))),
                Ok(None) => None,
                Err(_) => Some((Err(BoxedError::from(BodyDeadline)), (data, true))),
            }
        },
    );
    next.run(Request::from_parts(
        parts,
        axum::body::Body::from_stream(timed),
    ))
    .await
}

type BoxedError = Box<dyn std::error::Error + Send + Sync>;

fn json_rejection(r: &JsonRejection) -> ApiError {
    if ferry_adapters::error_text::find_cause::<BodyDeadline>(r).is_some() {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body did not arrive in time; send it whole, faster",
        );
    }
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
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()).at("id")
    })
}

/// The router; `max_body` bounds request bodies (413 beyond), and a body
/// must have arrived whole within `body_timeout` (408 beyond).
pub fn router(state: AppState, max_body: usize, body_timeout: Duration) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/events", get(streams::all_events))
        .route("/v1/jobs", get(list_jobs).post(submit_job))
        .route("/v1/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/v1/jobs/{id}/files", get(list_files))
        .route("/v1/jobs/{id}/events", get(streams::job_events))
        .route("/v1/jobs/{id}/ws", get(streams::job_ws))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        // The dashboard's static files: open, like /healthz (the page calls
        // the API with the tab's token).
        .merge(ui::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::check_host,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(body_timeout, body_deadline))
        .with_state(state)
}

/// A request id from `x-request-id` (if sane) or a new one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| format!("{:016x}", rand::random::<u64>()), str::to_owned)
}

/// Every request: a request id (echoed), a span carrying it, a log line and
/// the duration metric by route template.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let took = started.elapsed();
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let status = resp.status().as_u16();
    state.metrics.request(&route, &method, status, took);
    if ferry_adapters::metrics::is_refusal(status) {
        // Summed up in one line per interval (serve.rs), never a line each.
        state.metrics.refused(status);
        return resp;
    }
    span.in_scope(|| {
        tracing::info!(
            status,
            took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            "request"
        );
    });
    resp
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", security(()), tag = "health",
    responses((status = 200, description = "alive", body = HealthDto)))]
async fn healthz() -> Json<HealthDto> {
    Json(HealthDto {
        status: "ok".into(),
    })
}

/// Readiness: 200 when the job store and the storage answer, 503 otherwise,
/// with the status of each and the backpressure level.
#[utoipa::path(get, path = "/readyz", security(()), tag = "health",
    responses(
        (status = 200, description = "ready", body = ReadinessDto),
        (status = 503, description = "a dependency is not ready (named in `checks`)", body = ReadinessDto),
    ))]
async fn readyz(State(state): State<AppState>) -> Response {
    let checks = state.jobs.readiness().await;
    let ready = checks.iter().all(|(_, e)| e.is_none());
    let details = checks
        .into_iter()
        .map(|(name, err)| {
            let check = match err {
                None => CheckDto {
                    status: "ok".into(),
                    error: None,
                },
                Some(e) => CheckDto {
                    status: "unavailable".into(),
                    error: Some(ferry_domain::source::redact_text(&e)),
                },
            };
            (name.to_owned(), check)
        })
        .collect();
    let pressure = state.jobs.pressure().map(|r| PressureDto {
        level: r.level.as_str().to_owned(),
        score: u32::from(r.score.total()),
        memory: u32::from(r.score.memory),
        streams: u32::from(r.score.streams),
        latency: u32::from(r.score.latency),
        admitted: r.active,
        cap: r.cap,
        chunk_latency_p95_ms: r
            .chunk_latency_p95
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    });
    let body = ReadinessDto {
        status: if ready { "ready" } else { "not_ready" }.into(),
        checks: details,
        pressure,
        node: state.jobs.node().map(ToString::to_string),
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "OpenMetrics text exposition",
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
        (status = 401, description = "a token is needed (unless --public-metrics)", body = ErrorDto),
    ))]
async fn metrics(State(state): State<AppState>) -> Response {
    let stats = state.jobs.watch_stats();
    state.metrics.observe_watch_totals(
        stats.coalesced.load(std::sync::atomic::Ordering::Relaxed),
        stats.lagged.load(std::sync::atomic::Ordering::Relaxed),
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Submit a job; it is stored durably before the 202. With an
/// `Idempotency-Key`, a replay of the same request (within 24 hours, per
/// owner) answers 200 with the job the first one made, and stores nothing.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = JobRequestDto,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1-255 visible ASCII characters naming this submission: a retry with the same key and body gets the same job")),
    responses(
        (status = 200, description = "a replay of an earlier submission with this Idempotency-Key: its job", body = JobDto),
        (status = 202, description = "accepted and stored; it runs now", body = JobDto),
        (status = 400, description = "invalid request (`field` names the culprit, e.g. files[3].sha256, or Idempotency-Key)", body = ErrorDto),
        (status = 401, description = "a token is needed (when the server has tokens)", body = ErrorDto),
        (status = 403, description = "the destination is outside this token's scopes (`destination_not_allowed`, field `destination`)", body = ErrorDto),
        (status = 408, description = "the body did not arrive whole within --body-read-timeout (`body_timeout`)", body = ErrorDto),
        (status = 413, description = "body too large", body = ErrorDto),
        (status = 415, description = "not application/json", body = ErrorDto),
        (status = 422, description = "JSON of the wrong shape, or an Idempotency-Key already used with another request (`idempotency_key_reused`)", body = ErrorDto),
        (status = 429, description = "too many jobs submitted by this caller (`rate_limited`), or one of its quotas is full (`quota_exceeded`, `field` names it: active_jobs, queued_files, active_exports); see Retry-After", body = ErrorDto),
    ))]
async fn submit_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    body: Result<Json<Box<serde_json::value::RawValue>>, JsonRejection>,
) -> Result<(StatusCode, Json<JobDto>), ApiError> {
    state.limits.submit(&caller)?;
    // The body's text, checked as JSON (its content type, size and
    // syntax); parsed into its DTO below, without a `Value` in between.
    let Json(text) = body.map_err(|r| json_rejection(&r))?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(raw) => Some(
            raw.to_str()
                .ok()
                .and_then(|k| IdempotencyKey::new(caller.name.clone(), k, fingerprint(&text)).ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        InvalidIdempotencyKey.to_string(),
                    )
                    .at("Idempotency-Key")
                })?,
        ),
    };
    let request: JobRequestDto = serde_json::from_str(text.get()).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_json",
            format!("Failed to deserialize the JSON body into the target type: {e}"),
        )
    })?;
    drop(text);
    let mut request = dto::into_request(request);
    request.owner = caller.name.clone();
    request.scopes = caller.scopes.clone();
    request.quota = state.limits.quota(&caller);
    let submitted = match &key {
        None => state.jobs.submit(request).await.map(|record| Submitted {
            record,
            replayed: false,
        }),
        Some(key) => state.jobs.submit_keyed(request, key).await,
    }
    .map_err(|e| match e {
        SubmitError::Invalid(invalid) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", invalid.message)
                .at(invalid.field)
        }
        SubmitError::KeyReused(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            e.to_string(),
        )
        .at("Idempotency-Key"),
        SubmitError::OverQuota(over) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            over.to_string(),
        )
        .at(over.quota)
        .retry_after(QUOTA_RETRY_AFTER_S),
        SubmitError::Forbidden { field, message } => {
            ApiError::new(StatusCode::FORBIDDEN, "destination_not_allowed", message).at(field)
        }
        SubmitError::Store(e) => e.into(),
    })?;
    if submitted.replayed {
        return Ok((StatusCode::OK, Json(JobDto::of_record(&submitted.record))));
    }
    tokio::spawn(
        state
            .jobs
            .clone()
            .run_abortable(submitted.record.job.id.clone()),
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(JobDto::of_record(&submitted.record)),
    ))
}

/// `Retry-After` of a submission over a quota: jobs end on their own time,
/// so this is a polite pace, not a promise.
const QUOTA_RETRY_AFTER_S: u64 = 30;

/// What identifies a request for its idempotency key: the SHA-256 of its
/// JSON (objects' keys in a fixed order, whatever the body's spacing and
/// key order).
fn fingerprint(text: &serde_json::value::RawValue) -> String {
    let value: serde_json::Value = serde_json::from_str(text.get()).unwrap_or_default();
    hex::encode(auth::sha256(
        &serde_json::to_vec(&value).unwrap_or_default(),
    ))
}

/// A job with its files.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "the job id")),
    responses(
        (status = 200, description = "the job", body = JobDto),
        (status = 400, description = "not a job id", body = ErrorDto),
        (status = 401, description = "a token is needed", body = ErrorDto),
        (status = 404, description = "no such job (or another owner's)", body = ErrorDto),
    ))]
async fn get_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<JobDto>, ApiError> {
    let id = parse_id(&id)?;
    let first = TaskFilter {
        after: None,
        status: None,
        limit: u32::try_from(INLINE_FILES + 1).unwrap_or(u32::MAX),
    };
    let (head, tasks) = visible_files(&state, &caller, &id, &first).await?;
    Ok(Json(JobDto::with_files(&head, &tasks)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct FilesQuery {
    /// Only files in this status (queued, running, succeeded, skipped,
    /// failed, cancelled).
    status: Option<String>,
    /// Page size, 1-1000 (default 100).
    limit: Option<u32>,
    /// `next_cursor` of the previous page (or the job's
    /// `files_next_cursor`).
    cursor: Option<String>,
}

/// A job's files, in index order, a page at a time.
#[utoipa::path(get, path = "/v1/jobs/{id}/files", tag = "jobs",
    params(("id" = String, Path, description = "the job id"), FilesQuery),
    responses(
        (status = 200, description = "a page", body = FilePageDto),
        (status = 400, description = "not a job id, or a bad status, limit or cursor", body = ErrorDto),
        (status = 401, description = "a token is needed", body = ErrorDto),
        (status = 404, description = "no such job (or another owner's)", body = ErrorDto),
    ))]
async fn list_files(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<FilesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FilePageDto>, ApiError> {
    let id = parse_id(&id)?;
    let Query(q) = query
        .map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", r.body_text()))?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(TaskStatus::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("`{s}` is not a file status (queued, running, succeeded, skipped, failed, cancelled)"),
            )
            .at("status")
        })?),
    };
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            c.parse::<usize>()
                .map_err(|_| ApiError::from(JobStoreError::BadCursor))?,
        ),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("limit {limit} is out of range: give 1 to 1000"),
        )
        .at("limit"));
    }
    let filter = TaskFilter {
        after,
        status,
        limit: limit + 1,
    };
    let (_, tasks) = visible_files(&state, &caller, &id, &filter).await?;
    Ok(Json(FilePageDto::of(
        &tasks,
        usize::try_from(limit).unwrap_or(usize::MAX),
    )))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only jobs in this status (pending, exporting, downloading,
    /// completed, completed_with_errors, failed, cancelled).
    status: Option<String>,
    /// Page size, 1-1000 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List jobs, newest first (a scoped token sees only its own).
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses(
        (status = 200, description = "a page", body = JobPageDto),
        (status = 400, description = "bad status, limit or cursor", body = ErrorDto),
        (status = 401, description = "a token is needed", body = ErrorDto),
    ))]
async fn list_jobs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPageDto>, ApiError> {
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
        .list(
            &caller.access(),
            &JobFilter {
                status,
                owner: None,
                limit: q.limit.unwrap_or(50).clamp(1, 1000),
                cursor: q.cursor,
            },
        )
        .await?;
    Ok(Json(JobPageDto {
        jobs: page.jobs.iter().map(JobDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Cancel a job: transfers stop, partial uploads are aborted.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "the job id")),
    responses(
        (status = 200, description = "cancelled", body = JobDto),
        (status = 400, description = "not a job id", body = ErrorDto),
        (status = 401, description = "a token is needed", body = ErrorDto),
        (status = 404, description = "no such job (or another owner's)", body = ErrorDto),
        (status = 409, description = "the job already ended", body = ErrorDto),
    ))]
async fn cancel_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<JobDto>, ApiError> {
    let id = parse_id(&id)?;
    match state.jobs.cancel(&caller.access(), &id).await {
        Ok(record) => Ok(Json(JobDto::of_record(&record))),
        Err(JobCancelError::NotFound(id)) => Err(JobStoreError::NotFound(id).into()),
        Err(e @ JobCancelError::AlreadyEnded { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_ended",
            e.to_string(),
        )),
        Err(JobCancelError::Store(e)) => Err(e.into()),
    }
}
