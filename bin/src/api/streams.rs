//! Live job events over NDJSON, SSE and WebSocket. Every stream starts with
//! a snapshot (written before anything else), then the job's events in
//! sequence order until its terminal event; heartbeats keep idle
//! connections alive; a server shutdown ends every stream with a final
//! `shutdown` event. Slow clients are handled by `JobService::watch` (catch
//! up from the store with progress coalesced, or `lagged` and close).

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, Stream, StreamExt};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use ferry_adapters::metrics::StreamGuard;
use ferry_adapters::wire::{ControlDto, ErrorDto, EventDto, JobDto, StreamItemDto};
use ferry_application::jobs::{WatchError, WatchItem};

use super::auth::{Caller, StreamSlot};
use super::{ApiError, AppState, parse_id, visible_job};

/// What goes down a stream.
enum Frame {
    Item(WatchItem),
    Heartbeat,
    Shutdown,
}

type BoxedItems = Pin<Box<dyn Stream<Item = WatchItem> + Send>>;

/// Interleaves heartbeats (after `every` of silence) and ends with a
/// `Shutdown` frame when the server stops.
fn framed(
    items: BoxedItems,
    every: Duration,
    shutdown: CancellationToken,
    guard: (StreamGuard, StreamSlot),
) -> impl Stream<Item = Frame> + Send {
    futures::stream::unfold(
        (items, shutdown, false, guard),
        move |(mut items, shutdown, ended, guard)| async move {
            if ended {
                return None;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => Some((Frame::Shutdown, (items, shutdown, true, guard))),
                item = items.next() => item.map(|i| (Frame::Item(i), (items, shutdown, false, guard))),
                () = tokio::time::sleep(every) => Some((Frame::Heartbeat, (items, shutdown, false, guard))),
            }
        },
    )
}

/// A frame as the wire shows it (`None` for heartbeats), with its SSE event
/// name and id.
fn frame_item(frame: &Frame) -> Option<(StreamItemDto, &'static str, Option<u64>)> {
    let control = |c: ControlDto| StreamItemDto::Control(c);
    match frame {
        // The snapshot's SSE id is its seq only when no older events
        // follow, so a reconnect never skips a replay.
        Frame::Item(WatchItem::Snapshot {
            job,
            seq,
            replay_from,
        }) => Some((
            control(ControlDto::Snapshot {
                seq: Some(*seq),
                job: Some(Box::new(JobDto::from(job.as_ref()))),
                jobs: None,
            }),
            "snapshot",
            (replay_from >= seq).then_some(*seq),
        )),
        Frame::Item(WatchItem::Jobs(jobs)) => Some((
            control(ControlDto::Snapshot {
                seq: None,
                job: None,
                jobs: Some(jobs.iter().map(JobDto::from).collect()),
            }),
            "snapshot",
            None,
        )),
        Frame::Item(WatchItem::Event(e)) => Some((
            StreamItemDto::Event(EventDto::from(e)),
            e.kind.name(),
            Some(e.seq),
        )),
        Frame::Item(WatchItem::Lagged { last_seq }) => Some((
            control(ControlDto::Lagged {
                last_seq: *last_seq,
                message: format!("the client fell too far behind; reconnect with after={last_seq}"),
            }),
            "lagged",
            None,
        )),
        Frame::Shutdown => Some((
            control(ControlDto::Shutdown {
                message: "the server is shutting down; reconnect to continue".into(),
            }),
            "shutdown",
            None,
        )),
        Frame::Heartbeat => None,
    }
}

/// One wire item as JSON text.
fn text(item: &StreamItemDto) -> String {
    serde_json::to_string(item).unwrap_or_else(|e| {
        tracing::error!(error = %e, "stream item not encodable");
        String::from("{}")
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Replay the stored events after this sequence number (wins over
    /// `Last-Event-ID`).
    after: Option<u64>,
}

fn watch_error(e: WatchError) -> ApiError {
    match e {
        WatchError::NotFound(id) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("job {id} does not exist"),
        ),
        WatchError::Store(e) => e.into(),
    }
}

/// The largest WebSocket message or frame a client may send (4 KiB).
const WS_MAX_MESSAGE: usize = 4 * 1024;

/// A browser's WebSocket upgrade must come from a page of this server: its
/// `Origin` (when sent) names the same host as `Host`. Cross-site pages get
/// 403 (WebSockets are not covered by CORS).
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    if host.is_some() && origin_host.is_some_and(|o| Some(o) == host) {
        return Ok(());
    }
    let mut err = ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "the WebSocket upgrade comes from another site's page (Origin differs from Host)",
    );
    err.field = Some("Origin".into());
    Err(err)
}

/// The stream's query, or a JSON 400 naming the field.
fn stream_query(
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<StreamQuery, ApiError> {
    query.map(|Query(q)| q).map_err(|r| {
        let mut err = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", r.body_text());
        err.field = Some("after".into());
        err
    })
}

/// `?after=N` wins over `Last-Event-ID`.
fn after_of(query: &StreamQuery, headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    if query.after.is_some() {
        return Ok(query.after);
    }
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                let mut err = ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Last-Event-ID must be an event sequence number",
                );
                err.field = Some("Last-Event-ID".into());
                err
            }),
    }
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"))
}

fn sse(frames: impl Stream<Item = Frame> + Send + 'static) -> Response {
    let events = frames.map(|frame| {
        let event = match frame_item(&frame) {
            None => Event::default().comment("heartbeat"),
            Some((item, name, id)) => {
                let e = Event::default().event(name).data(text(&item));
                match id {
                    Some(id) => e.id(id.to_string()),
                    None => e,
                }
            }
        };
        Ok::<_, Infallible>(event)
    });
    let mut resp = Sse::new(events).into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

fn ndjson(frames: impl Stream<Item = Frame> + Send + 'static) -> Response {
    let lines = frames.map(|frame| {
        let item = frame_item(&frame).map_or(
            StreamItemDto::Control(ControlDto::Heartbeat {}),
            |(item, _, _)| item,
        );
        let mut line = text(&item);
        line.push('\n');
        Ok::<_, Infallible>(Bytes::from(line))
    });
    let mut resp = Body::from_stream(lines).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// A job's live events: a snapshot, then every event in order until the
/// terminal one. SSE for `Accept: text/event-stream`, NDJSON otherwise.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "streams",
    params(("id" = String, Path, description = "the job id"), StreamQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "SSE reconnect: replay after this seq")),
    responses(
        (status = 200, description = "the stream (one JSON item per line or per SSE `data:`)",
            content((StreamItemDto = "application/x-ndjson"), (StreamItemDto = "text/event-stream"))),
        (status = 400, description = "bad id, `after` or Last-Event-ID", body = ErrorDto),
        (status = 401, description = "a token is needed", body = ErrorDto),
        (status = 404, description = "no such job (or another owner's)", body = ErrorDto),
        (status = 429, description = "too many open streams for this caller", body = ErrorDto),
    ))]
pub async fn job_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let after = after_of(&stream_query(query)?, &headers)?;
    visible_job(&state, &caller, &id).await?;
    let slot = state.limits.stream(&caller)?;
    let items = state
        .jobs
        .watch(&caller.access(), &id, after)
        .await
        .map_err(watch_error)?;
    Ok(http_stream(&state, &headers, Box::pin(items), slot))
}

/// Every job's events (SSE or NDJSON), after a snapshot of the unfinished
/// jobs: all jobs for an admin token (or an open server), the caller's own
/// jobs otherwise.
#[utoipa::path(get, path = "/v1/events", tag = "streams",
    responses(
        (status = 200, description = "the stream, never ending while the server runs",
            content((StreamItemDto = "application/x-ndjson"), (StreamItemDto = "text/event-stream"))),
        (status = 401, description = "a token is needed", body = ErrorDto),
        (status = 429, description = "too many open streams for this caller", body = ErrorDto),
    ))]
pub async fn all_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = caller.access();
    let slot = state.limits.stream(&caller)?;
    let items = state.jobs.watch_all(&access).await.map_err(watch_error)?;
    Ok(http_stream(&state, &headers, Box::pin(items), slot))
}

/// SSE or NDJSON, as the client's `Accept` asks, counted while it lives.
fn http_stream(
    state: &AppState,
    headers: &HeaderMap,
    items: BoxedItems,
    slot: StreamSlot,
) -> Response {
    let sse_wanted = wants_sse(headers);
    let guard = state
        .metrics
        .stream_connected(if sse_wanted { "sse" } else { "ndjson" });
    let frames = framed(
        items,
        state.heartbeat,
        state.shutdown.clone(),
        (guard, slot),
    );
    if sse_wanted {
        sse(frames)
    } else {
        ndjson(frames)
    }
}

/// A job's live events over a WebSocket: the same JSON items as text
/// frames; heartbeats are pings; the server closes the socket after the
/// terminal event.
#[utoipa::path(get, path = "/v1/jobs/{id}/ws", tag = "streams",
    params(("id" = String, Path, description = "the job id"), StreamQuery),
    responses(
        (status = 101, description = "switched to WebSocket; text frames carry StreamItem JSON"),
        (status = 400, description = "bad id or `after`, or not a WebSocket upgrade", body = ErrorDto),
        (status = 401, description = "a token is needed", body = ErrorDto),
        (status = 403, description = "the Origin is another site's", body = ErrorDto),
        (status = 404, description = "no such job (or another owner's)", body = ErrorDto),
        (status = 426, description = "a WebSocket upgrade is required", body = ErrorDto),
        (status = 429, description = "too many open streams for this caller", body = ErrorDto),
    ))]
pub async fn job_ws(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let after = after_of(&stream_query(query)?, &headers)?;
    same_origin(&headers)?;
    let upgrade = upgrade.map_err(|r| {
        let status = r.status();
        let code = if status == StatusCode::UPGRADE_REQUIRED {
            "upgrade_required"
        } else {
            "invalid_request"
        };
        ApiError::new(status, code, r.body_text())
    })?;
    visible_job(&state, &caller, &id).await?;
    let slot = state.limits.stream(&caller)?;
    let items = state
        .jobs
        .watch(&caller.access(), &id, after)
        .await
        .map_err(watch_error)?;
    let guard = state.metrics.stream_connected("websocket");
    let frames = framed(
        Box::pin(items),
        state.heartbeat,
        state.shutdown.clone(),
        (guard, slot),
    );
    // Clients only listen: their messages are never larger than a ping.
    Ok(upgrade
        .max_message_size(WS_MAX_MESSAGE)
        .max_frame_size(WS_MAX_MESSAGE)
        .on_upgrade(move |socket| pump_ws(socket, frames)))
}

async fn pump_ws(socket: WebSocket, frames: impl Stream<Item = Frame> + Send + 'static) {
    let (mut tx, mut rx) = socket.split();
    let mut frames = Box::pin(frames);
    loop {
        tokio::select! {
            frame = frames.next() => {
                let Some(frame) = frame else { break };
                let msg = match frame_item(&frame) {
                    None => Message::Ping(Bytes::from_static(b"ferry")),
                    Some((item, _, _)) => Message::Text(text(&item).into()),
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            incoming = rx.next() => match incoming {
                // The client went away: stop at once (frees the watch).
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = tx.send(Message::Close(None)).await;
}
