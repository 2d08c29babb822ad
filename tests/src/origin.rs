//! A real HTTP/1.1 origin on loopback (hyper), serving in-memory or on-disk
//! files with scripted faults: chunked bodies, bodies cut short, stalls,
//! resets, 503 bursts, redirects, and full Range/If-Range support.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, stream};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use tokio::net::TcpListener;

use crate::server::{Spawned, TestCa, spawn_http1, spawn_tls};
use tokio_util::io::ReaderStream;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// How a route misbehaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Content-Length, ETag, Accept-Ranges; honours Range and If-Range.
    Normal,
    /// No Content-Length (chunked transfer encoding), no ranges.
    Chunked,
    /// Declares the full length, sends `send` bytes, then breaks the
    /// connection. No ranges advertised.
    Short { send: usize },
    /// Answers `status` (with `Retry-After: 0`) to the first `times` requests.
    FailFirst { times: usize, status: u16 },
    /// Sends `after` bytes, then nothing ever again.
    Stall { after: usize },
    /// The first `times` responses break after `after` bytes; ranges work.
    ResetAfter { after: usize, times: usize },
    /// Redirects (302) to another path.
    Redirect { to: String },
    /// The first `times` responses send `after` bytes and then stall
    /// forever; later ones are served normally.
    StallFirst { times: usize, after: usize },
    /// Like `StallFirst`, but ranges (with ETag and If-Range) are
    /// advertised and honoured: a resumable source that hangs.
    StallFirstRanged { times: usize, after: usize },
    /// The first `times` responses are cut after `send` bytes (no ranges
    /// advertised, so only a whole retry helps); then served normally.
    ShortFirst { times: usize, send: usize },
    /// Served whole, `bytes_per_tick` every `tick` (a slow origin).
    Throttled {
        bytes_per_tick: usize,
        tick: Duration,
    },
    /// Like `Throttled`, with ranges (ETag, If-Range) honoured: a slow
    /// origin a transfer can resume from.
    ThrottledRanged {
        bytes_per_tick: usize,
        tick: Duration,
    },
}

#[derive(Debug, Clone)]
enum Content {
    Memory(Bytes),
    File(PathBuf),
}

#[derive(Debug, Clone)]
struct Route {
    content: Content,
    behavior: Behavior,
    etag: String,
    hits: usize,
    /// Extra response headers.
    extra: Vec<(String, String)>,
}

/// A request the origin received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub accept_encoding: Option<String>,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Every request header as received.
    pub headers: http::HeaderMap,
}

#[derive(Debug, Default)]
struct State {
    routes: HashMap<String, Route>,
    dir: Option<PathBuf>,
    log: Vec<Recorded>,
    connections: usize,
    /// Every request must carry this header with this value (401 otherwise).
    required: Option<(String, String)>,
    /// Responses in flight per path now, and the most ever.
    in_flight: HashMap<String, usize>,
    most_in_flight: HashMap<String, usize>,
    /// Body bytes handed to the connection per path (what the origin
    /// served, counted as it sends).
    served: HashMap<String, u64>,
    /// The same per request, in the order of `log`.
    served_by_request: Vec<u64>,
}

/// A running origin; stops when dropped.
#[derive(Debug)]
pub struct Origin {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<Mutex<State>>,
    /// Stops the server when dropped.
    _task: Spawned,
}

impl Origin {
    /// Starts on 127.0.0.1 with a random port.
    pub async fn start() -> std::io::Result<Self> {
        Self::bind("127.0.0.1:0".parse().map_err(std::io::Error::other)?, None).await
    }

    /// Starts on `addr`, also serving files under `dir` (if given).
    pub async fn bind(addr: SocketAddr, dir: Option<PathBuf>) -> std::io::Result<Self> {
        Self::listen(addr, dir, None).await
    }

    /// Starts an HTTPS origin on 127.0.0.1 (HTTP/2 or HTTP/1.1 by ALPN)
    /// with a certificate `ca` signed for `localhost` and `127.0.0.1`.
    pub async fn start_tls(ca: &TestCa) -> std::io::Result<Self> {
        let acceptor = ca.acceptor().map_err(std::io::Error::other)?;
        let addr = "127.0.0.1:0".parse().map_err(std::io::Error::other)?;
        Self::listen(addr, None, Some(acceptor)).await
    }

    async fn listen(
        addr: SocketAddr,
        dir: Option<PathBuf>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            dir,
            ..State::default()
        }));
        let counter = state.clone();
        let on_accept = move || {
            if let Ok(mut s) = counter.lock() {
                s.connections += 1;
            }
        };
        let shared = state.clone();
        let handler = move |req| handle(shared.clone(), req);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = match tls {
            Some(acceptor) => spawn_tls(listener, acceptor, on_accept, handler),
            None => spawn_http1(listener, on_accept, handler),
        };
        Ok(Self {
            addr,
            scheme,
            state,
            _task: task,
        })
    }

    /// Adds a response header to a route already served.
    pub fn add_response_header(&self, path: &str, name: &str, value: &str) {
        if let Ok(mut s) = self.state.lock()
            && let Some(r) = s.routes.get_mut(path)
        {
            r.extra.push((name.to_owned(), value.to_owned()));
        }
    }

    /// From now on every request must carry `name: value` (401 otherwise).
    pub fn require_header(&self, name: &str, value: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.required = Some((name.to_owned(), value.to_owned()));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    pub fn serve(&self, path: &str, data: impl Into<Bytes>, behavior: Behavior) {
        self.add(path, Content::Memory(data.into()), behavior);
    }

    pub fn serve_file(&self, path: &str, file: PathBuf, behavior: Behavior) {
        self.add(path, Content::File(file), behavior);
    }

    fn add(&self, path: &str, content: Content, behavior: Behavior) {
        if let Ok(mut s) = self.state.lock() {
            let etag = format!("\"{}-{}\"", path.len(), s.routes.len() + 1);
            s.routes.insert(
                path.to_owned(),
                Route {
                    content,
                    behavior,
                    etag,
                    hits: 0,
                    extra: Vec::new(),
                },
            );
        }
    }

    /// Replaces a route's content (and ETag), as if the file changed.
    pub fn change(&self, path: &str, data: impl Into<Bytes>) {
        if let Ok(mut s) = self.state.lock()
            && let Some(r) = s.routes.get_mut(path)
        {
            r.content = Content::Memory(data.into());
            r.etag = format!("\"changed-{}\"", r.hits);
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().map(|s| s.log.clone()).unwrap_or_default()
    }

    pub fn connections(&self) -> usize {
        self.state.lock().map(|s| s.connections).unwrap_or_default()
    }

    /// Body bytes of `path` the origin has sent so far, over every
    /// response (counted as each frame is handed to the connection).
    pub fn served(&self, path: &str) -> u64 {
        self.state
            .lock()
            .map(|s| s.served.get(path).copied().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Body bytes sent in answer to each request so far, in the order of
    /// [`Origin::requests`].
    pub fn served_by_request(&self) -> Vec<u64> {
        self.state
            .lock()
            .map(|s| s.served_by_request.clone())
            .unwrap_or_default()
    }

    /// The most responses for `path` that were ever in flight at once
    /// (sent, and neither finished nor abandoned by their client).
    pub fn most_in_flight(&self, path: &str) -> usize {
        self.state
            .lock()
            .map(|s| s.most_in_flight.get(path).copied().unwrap_or_default())
            .unwrap_or_default()
    }
}

fn full(data: Bytes) -> Body {
    http_body_util::Full::new(data)
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = code;
    r
}

fn header_of(req: &Request<Incoming>, name: header::HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A body of `data` from `start`, in 16 KiB frames, ending per `end`.
enum End {
    Clean,
    Break,
    Stall,
}

fn body_of(data: Bytes, end: End) -> Body {
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = data
        .chunks(16 * 1024)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let tail = stream::once(async move {
        match end {
            End::Clean => None,
            End::Break => {
                // Let the headers and the bytes before the break reach the
                // client first, as with a real connection reset.
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some(Err(std::io::Error::other("scripted connection break")))
            }
            End::Stall => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                None
            }
        }
    })
    .filter_map(|x| async move { x });
    BodyExt::boxed_unsync(StreamBody::new(stream::iter(frames).chain(tail)))
}

fn file_body(path: PathBuf, start: u64) -> Body {
    let s = stream::once(async move {
        use tokio::io::AsyncSeekExt;
        let mut f = tokio::fs::File::open(path).await?;
        f.seek(std::io::SeekFrom::Start(start)).await?;
        Ok::<_, std::io::Error>(ReaderStream::with_capacity(f, 256 * 1024))
    })
    .map(|r| match r {
        Ok(s) => s.boxed(),
        Err(e) => stream::once(async move { Err(e) }).boxed(),
    })
    .flatten()
    .map(|r| r.map(Frame::data));
    BodyExt::boxed_unsync(StreamBody::new(s))
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let request_no: usize;
    let range = header_of(&req, header::RANGE);
    let if_range = header_of(&req, header::IF_RANGE);
    let route = {
        let Ok(mut s) = state.lock() else {
            return Ok(status(StatusCode::INTERNAL_SERVER_ERROR));
        };
        s.log.push(Recorded {
            path: path.clone(),
            range: range.clone(),
            if_range: if_range.clone(),
            accept_encoding: header_of(&req, header::ACCEPT_ENCODING),
            version: format!("{:?}", req.version()),
            headers: req.headers().clone(),
        });
        request_no = s.served_by_request.len();
        s.served_by_request.push(0);
        if let Some((name, value)) = &s.required
            && req
                .headers()
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                != Some(value.as_str())
        {
            return Ok(status(StatusCode::UNAUTHORIZED));
        }
        let dir = s.dir.clone();
        match s.routes.get_mut(&path) {
            Some(r) => {
                r.hits += 1;
                Some((r.clone(), r.hits))
            }
            None => dir.and_then(|d| {
                let rel = path.trim_start_matches('/');
                if rel.split('/').any(|seg| seg == ".." || seg.is_empty()) {
                    return None;
                }
                let file = d.join(rel);
                file.is_file().then(|| {
                    let etag = format!("\"file-{}\"", rel.len());
                    (
                        Route {
                            content: Content::File(file),
                            behavior: Behavior::Normal,
                            etag,
                            hits: 1,
                            extra: Vec::new(),
                        },
                        1,
                    )
                })
            }),
        }
    };
    let Some((route, hits)) = route else {
        return Ok(status(StatusCode::NOT_FOUND));
    };
    let total = match &route.content {
        Content::Memory(b) => b.len() as u64,
        Content::File(p) => match tokio::fs::metadata(p).await {
            Ok(m) => m.len(),
            Err(_) => return Ok(status(StatusCode::NOT_FOUND)),
        },
    };
    let ranges_ok = matches!(
        route.behavior,
        Behavior::Normal
            | Behavior::ResetAfter { .. }
            | Behavior::StallFirstRanged { .. }
            | Behavior::ThrottledRanged { .. }
    );
    let mut start = 0u64;
    if ranges_ok
        && let Some(r) = &range
        && if_range.as_ref().is_none_or(|v| v == &route.etag)
    {
        let Some(s) = r
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return Ok(status(StatusCode::RANGE_NOT_SATISFIABLE));
        };
        if s >= total {
            return Ok(status(StatusCode::RANGE_NOT_SATISFIABLE));
        }
        start = s;
    }
    let partial = start > 0;

    let mut builder = Response::builder();
    if ranges_ok {
        builder = builder
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::ETAG, route.etag.clone());
    }
    if !route
        .extra
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        builder = builder.header(header::CONTENT_TYPE, "application/octet-stream");
    }
    for (name, value) in &route.extra {
        builder = builder.header(name.as_str(), value.as_str());
    }

    let memory = |start: u64| match &route.content {
        Content::Memory(b) => b.slice(usize::try_from(start).unwrap_or(0)..),
        Content::File(_) => Bytes::new(),
    };
    let response = match &route.behavior {
        Behavior::Redirect { to } => builder
            .status(StatusCode::FOUND)
            .header(header::LOCATION, to.clone())
            .body(full(Bytes::new())),
        Behavior::FailFirst {
            times,
            status: code,
        } if hits <= *times => builder
            .status(StatusCode::from_u16(*code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE))
            .header(header::RETRY_AFTER, "0")
            .body(full(Bytes::new())),
        Behavior::Chunked => builder.body(body_of(memory(0), End::Clean)),
        Behavior::StallFirst { times, after } | Behavior::StallFirstRanged { times, after }
            if hits <= *times =>
        {
            let data = memory(0);
            let cut = data.slice(..(*after).min(data.len()));
            builder
                .header(header::CONTENT_LENGTH, total)
                .body(body_of(cut, End::Stall))
        }
        Behavior::ShortFirst { times, send } if hits <= *times => {
            let data = memory(0);
            let cut = data.slice(..(*send).min(data.len()));
            builder
                .header(header::CONTENT_LENGTH, total)
                .body(body_of(cut, End::Break))
        }
        Behavior::Short { send } => {
            let data = memory(0);
            let cut = data.slice(..(*send).min(data.len()));
            builder
                .header(header::CONTENT_LENGTH, total)
                .body(body_of(cut, End::Break))
        }
        Behavior::Throttled {
            bytes_per_tick,
            tick,
        }
        | Behavior::ThrottledRanged {
            bytes_per_tick,
            tick,
        } => {
            let data = memory(start);
            if partial {
                builder = builder.status(StatusCode::PARTIAL_CONTENT).header(
                    header::CONTENT_RANGE,
                    format!("bytes {start}-{}/{total}", total - 1),
                );
            }
            let step = (*bytes_per_tick).max(1);
            let tick = *tick;
            let frames = stream::iter(
                (0..data.len())
                    .step_by(step)
                    .map(move |at| data.slice(at..(at + step).min(data.len()))),
            )
            .then(move |piece| async move {
                tokio::time::sleep(tick).await;
                Ok::<_, std::io::Error>(Frame::data(piece))
            });
            builder
                .header(header::CONTENT_LENGTH, total - start)
                .body(BodyExt::boxed_unsync(StreamBody::new(frames)))
        }
        Behavior::Stall { after } => {
            let data = memory(0);
            let cut = data.slice(..(*after).min(data.len()));
            builder
                .header(header::CONTENT_LENGTH, total)
                .body(body_of(cut, End::Stall))
        }
        other => {
            let len = total - start;
            if partial {
                builder = builder.status(StatusCode::PARTIAL_CONTENT).header(
                    header::CONTENT_RANGE,
                    format!("bytes {start}-{}/{total}", total - 1),
                );
            }
            builder = builder.header(header::CONTENT_LENGTH, len);
            let breaks = matches!(other, Behavior::ResetAfter { times, .. } if hits <= *times);
            match (&route.content, other) {
                (Content::File(p), _) => builder.body(file_body(p.clone(), start)),
                (_, Behavior::ResetAfter { after, .. }) if breaks => {
                    let data = memory(start);
                    let cut = data.slice(..(*after).min(data.len()));
                    builder.body(body_of(cut, End::Break))
                }
                _ => builder.body(body_of(memory(start), End::Clean)),
            }
        }
    };
    let response = response.unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR));
    Ok(response.map(|body| tracked(body, state, path, request_no)))
}

/// Counts the response in flight for `path` (from now until its body is
/// finished or dropped: the client read it all, or went away).
fn tracked(body: Body, state: Arc<Mutex<State>>, path: String, request_no: usize) -> Body {
    struct InFlight {
        state: Arc<Mutex<State>>,
        path: String,
    }
    impl Drop for InFlight {
        fn drop(&mut self) {
            if let Ok(mut s) = self.state.lock()
                && let Some(n) = s.in_flight.get_mut(&self.path)
            {
                *n = n.saturating_sub(1);
            }
        }
    }
    if let Ok(mut s) = state.lock() {
        let n = s.in_flight.entry(path.clone()).or_default();
        *n += 1;
        let n = *n;
        let most = s.most_in_flight.entry(path.clone()).or_default();
        *most = (*most).max(n);
    }
    let guard = InFlight { state, path };
    let frames = http_body_util::BodyStream::new(body).map(move |frame| {
        if let Ok(f) = &frame
            && let Some(data) = f.data_ref()
            && let Ok(mut s) = guard.state.lock()
        {
            *s.served.entry(guard.path.clone()).or_default() += data.len() as u64;
            if let Some(n) = s.served_by_request.get_mut(request_no) {
                *n += data.len() as u64;
            }
        }
        frame
    });
    BodyExt::boxed_unsync(StreamBody::new(frames))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Two clients reading one slow file at once count 2; one after the
    /// other, 1; a client that goes away mid-body no longer counts.
    #[tokio::test]
    async fn responses_in_flight_are_counted_per_path() {
        let origin = Origin::start().await.unwrap();
        let slow = Behavior::Throttled {
            bytes_per_tick: 1024,
            tick: Duration::from_millis(10),
        };
        origin.serve("/both", vec![7u8; 20 * 1024], slow.clone());
        origin.serve("/one", vec![7u8; 20 * 1024], slow.clone());
        origin.serve("/gone", vec![7u8; 200 * 1024], slow);
        let get = |path: &str| reqwest::get(origin.url(path));
        let (a, b) = futures::join!(get("/both"), get("/both"));
        let (a, b) = futures::join!(a.unwrap().bytes(), b.unwrap().bytes());
        assert_eq!(a.unwrap().len() + b.unwrap().len(), 40 * 1024);
        assert_eq!(origin.most_in_flight("/both"), 2);
        for _ in 0..2 {
            get("/one").await.unwrap().bytes().await.unwrap();
        }
        assert_eq!(origin.most_in_flight("/one"), 1);
        let partial = get("/gone").await.unwrap();
        drop(partial);
        tokio::time::sleep(Duration::from_millis(200)).await;
        get("/gone").await.unwrap().bytes().await.unwrap();
        assert_eq!(origin.most_in_flight("/gone"), 1);
        // What was sent, counted at the origin: whole bodies in full, the
        // abandoned one as far as it went.
        assert_eq!(origin.served("/both"), 40 * 1024);
        assert_eq!(origin.served("/one"), 40 * 1024);
        let gone = origin.served("/gone");
        assert!(
            (200 * 1024..400 * 1024).contains(&gone),
            "{gone} bytes served"
        );
    }
}
