//! A scriptable export provider on a real socket, speaking the protocol of
//! docs/export-provider.md: `POST /exports` starts an export and answers its
//! status URL; `GET /exports/1` answers pending N times, then ready (files
//! inline or at `/exports/1/manifest`) or failed. It records every call.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::server::{Spawned, spawn_http1};

/// How the export ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Ready with these files, inline in the status answer.
    Ready(Value),
    /// Ready with these files at `manifest_url`.
    ReadyAtManifestUrl(Value),
    /// Ready, with this text (any bytes, e.g. a hostile document) at
    /// `manifest_url`.
    ReadyAtRawManifest(Bytes),
    /// The provider fails the export with this reason.
    Failed(String),
    /// Pending forever.
    Never,
}

/// What the provider does.
#[derive(Debug, Clone)]
pub struct Script {
    /// Pending answers before the outcome.
    pub pending_polls: usize,
    pub outcome: Outcome,
    /// The start request is answered with this status instead of 202.
    pub start_status: Option<u16>,
    /// The first N start requests are answered 503.
    pub start_unavailable: usize,
    /// The first N polls are answered 503.
    pub poll_unavailable: usize,
}

impl Script {
    pub fn ready_after(pending_polls: usize, files: Value) -> Self {
        Self {
            pending_polls,
            outcome: Outcome::Ready(files),
            start_status: None,
            start_unavailable: 0,
            poll_unavailable: 0,
        }
    }
}

/// One recorded start request.
#[derive(Debug, Clone, PartialEq)]
pub struct StartCall {
    pub body: Value,
    pub idempotency_key: Option<String>,
}

#[derive(Debug)]
struct State {
    script: Script,
    starts: Vec<StartCall>,
    polls: Vec<Instant>,
    manifest_reads: usize,
}

/// A running provider; stops when dropped.
#[derive(Debug)]
pub struct ExportProvider {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Stops the server when dropped.
    _task: Spawned,
}

impl ExportProvider {
    pub async fn start(script: Script) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            script,
            starts: Vec::new(),
            polls: Vec::new(),
            manifest_reads: 0,
        }));
        let shared = state.clone();
        let task = spawn_http1(listener, || {}, move |req| handle(shared.clone(), req));
        Ok(Self {
            addr,
            state,
            _task: task,
        })
    }

    /// The start URL (with a secret in its query, which must never leak).
    pub fn start_url(&self) -> String {
        format!("http://{}/exports?sig=provider-s3cret", self.addr)
    }

    pub fn starts(&self) -> Vec<StartCall> {
        self.state.lock().unwrap().starts.clone()
    }

    pub fn polls(&self) -> Vec<Instant> {
        self.state.lock().unwrap().polls.clone()
    }

    pub fn manifest_reads(&self) -> usize {
        self.state.lock().unwrap().manifest_reads
    }

    /// Makes the next poll answer the outcome.
    pub fn set_pending_polls(&self, n: usize) {
        let mut s = self.state.lock().unwrap();
        s.script.pending_polls = s.polls.len() + n;
    }
}

fn reply(status: u16, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let idempotency_key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut s = state.lock().unwrap();
    Ok(match (method, path.as_str()) {
        (Method::POST, "/exports") => {
            s.starts.push(StartCall {
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                idempotency_key,
            });
            if s.script.start_unavailable > 0 {
                s.script.start_unavailable -= 1;
                reply(503, &json!({ "error": "busy" }))
            } else if let Some(status) = s.script.start_status {
                reply(status, &json!({ "error": "no such dataset" }))
            } else {
                reply(202, &json!({ "status_url": "/exports/1" }))
            }
        }
        (Method::GET, "/exports/1") => {
            s.polls.push(Instant::now());
            if s.script.poll_unavailable > 0 {
                s.script.poll_unavailable -= 1;
                return Ok(reply(503, &json!({ "error": "busy" })));
            }
            if s.polls.len() <= s.script.pending_polls {
                return Ok(reply(200, &json!({ "status": "running" })));
            }
            match &s.script.outcome {
                Outcome::Ready(files) => reply(200, &json!({ "status": "ready", "files": files })),
                Outcome::ReadyAtManifestUrl(_) | Outcome::ReadyAtRawManifest(_) => reply(
                    200,
                    &json!({ "status": "ready", "manifest_url": "/exports/1/manifest" }),
                ),
                Outcome::Failed(reason) => {
                    reply(200, &json!({ "status": "failed", "error": reason }))
                }
                Outcome::Never => reply(200, &json!({ "status": "pending" })),
            }
        }
        (Method::GET, "/exports/1/manifest") => {
            s.manifest_reads += 1;
            match &s.script.outcome {
                Outcome::ReadyAtManifestUrl(files) => reply(200, &json!({ "files": files })),
                Outcome::ReadyAtRawManifest(text) => {
                    let mut r = Response::new(Full::new(text.clone()));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    r
                }
                _ => reply(404, &json!({ "error": "no manifest" })),
            }
        }
        _ => reply(404, &json!({ "error": "not found" })),
    })
}
