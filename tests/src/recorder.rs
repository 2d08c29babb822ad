//! An HTTP receiver that records every request (headers and body) and can
//! answer the next N with a 500: the webhook's counterpart in tests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::server::{Spawned, spawn_http1};

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// Whether it was answered with a 500.
    pub refused: bool,
}

#[derive(Debug, Default)]
struct State {
    received: Vec<Received>,
    refuse_next: usize,
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct Recorder {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Stops the server when dropped.
    _task: Spawned,
}

impl Recorder {
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = spawn_http1(listener, || {}, move |req| record(shared.clone(), req));
        Ok(Self {
            addr,
            state,
            _task: task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn refuse_next(&self, n: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.refuse_next = n;
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state
            .lock()
            .map(|s| s.received.clone())
            .unwrap_or_default()
    }
}

async fn record(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let refused = match state.lock() {
        Ok(mut s) => {
            let refused = s.refuse_next > 0;
            if refused {
                s.refuse_next -= 1;
            }
            s.received.push(Received {
                headers,
                body,
                refused,
            });
            refused
        }
        Err(_) => true,
    };
    let mut resp = Response::new(Full::new(Bytes::new()));
    if refused {
        *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    Ok(resp)
}
