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
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use ferry_adapters::job_store::codec::event_json;
use ferry_adapters::metrics::StreamGuard;
use ferry_application::jobs::{Access, WatchError, WatchItem};

use super::auth::{Caller, StreamSlot};
use super::{ApiError, AppState, dto, parse_id, visible_job};

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

/// The JSON of a frame (`None` for heartbeats).
fn frame_json(frame: &Frame) -> Option<(Value, &'static str, Option<u64>)> {
    match frame {
        // The snapshot's SSE id is its seq only when no older events
        // follow, so a reconnect never skips a replay.
        Frame::Item(WatchItem::Snapshot {
            job,
            seq,
            replay_from,
        }) => Some((
            json!({ "type": "snapshot", "seq": seq, "job": dto::job_json(job) }),
            "snapshot",
            (replay_from >= seq).then_some(*seq),
        )),
        Frame::Item(WatchItem::Jobs(jobs)) => {
            let jobs: Vec<Value> = jobs.iter().map(dto::job_json).collect();
            Some((
                json!({ "type": "snapshot", "jobs": jobs }),
                "snapshot",
                None,
            ))
        }
        Frame::Item(WatchItem::Event(e)) => Some((event_json(e), e.kind.name(), Some(e.seq))),
        Frame::Item(WatchItem::Lagged { last_seq }) => Some((
            json!({ "type": "lagged", "last_seq": last_seq,
                    "message": format!("the client fell too far behind; reconnect with after={last_seq}") }),
            "lagged",
            None,
        )),
        Frame::Shutdown => Some((
            json!({ "type": "shutdown", "message": "the server is shutting down; reconnect to continue" }),
            "shutdown",
            None,
        )),
        Frame::Heartbeat => None,
    }
}

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    after: Option<u64>,
}

fn watch_error(e: WatchError) -> ApiError {
    let message = e.to_string();
    match e {
        WatchError::NotFound(id) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("job {id} does not exist"),
        ),
        WatchError::Forbidden => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
        WatchError::Store(e) => e.into(),
    }
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
        let event = match frame_json(&frame) {
            None => Event::default().comment("heartbeat"),
            Some((value, name, id)) => {
                let e = Event::default().event(name).data(value.to_string());
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
        let value = frame_json(&frame)
            .map(|(v, _, _)| v)
            .unwrap_or_else(|| json!({ "type": "heartbeat" }));
        let mut line = value.to_string();
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

/// `GET /v1/jobs/{id}/events`: SSE for `Accept: text/event-stream`,
/// NDJSON otherwise.
pub async fn job_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let after = after_of(&query, &headers)?;
    visible_job(&state, &caller, &id).await?;
    let slot = state.limits.stream(&caller)?;
    let items = state
        .jobs
        .watch(&caller.access(), &id, after)
        .await
        .map_err(watch_error)?;
    Ok(http_stream(&state, &headers, Box::pin(items), slot))
}

/// `GET /v1/events`: every job's events (SSE or NDJSON), after a snapshot
/// of the unfinished jobs.
pub async fn all_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = caller.access();
    if access != Access::All {
        return Err(watch_error(WatchError::Forbidden));
    }
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

/// `GET /v1/jobs/{id}/ws`: the same JSON as text frames; heartbeats are
/// pings; the server closes the socket after the terminal event.
pub async fn job_ws(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let after = after_of(&query, &headers)?;
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
    Ok(upgrade.on_upgrade(move |socket| pump_ws(socket, frames)))
}

async fn pump_ws(socket: WebSocket, frames: impl Stream<Item = Frame> + Send + 'static) {
    let (mut tx, mut rx) = socket.split();
    let mut frames = Box::pin(frames);
    loop {
        tokio::select! {
            frame = frames.next() => {
                let Some(frame) = frame else { break };
                let msg = match frame_json(&frame) {
                    None => Message::Ping(Bytes::from_static(b"ferry")),
                    Some((v, _, _)) => Message::Text(v.to_string().into()),
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
