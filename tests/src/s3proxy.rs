//! A fault-injecting proxy in front of an S3 server (Garage). It forwards
//! requests unchanged (the Host header the client signed included) and can
//! fail the Nth UploadPart (or PutObject) with a 503, a connection reset or
//! a wrong ETag in its answer,
//! or answer CompleteMultipartUpload with `200 OK` and an error body. Its
//! log has one line per request: `METHOD /path?query[ range=bytes=N-]`
//! then ` [name=value]` for each attribute header (x-amz-meta-*, tagging,
//! storage class, SSE, ACL, Content-Type, x-amz-copy-source...).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

use crate::server::{Spawned, spawn_http1};

type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// How to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Status503,
    Reset,
    /// The upload reaches the server, but its answer carries another ETag
    /// (as if the bytes had been corrupted on the way).
    WrongEtag,
}

#[derive(Debug, Default)]
struct Rules {
    /// Fail the UploadPart / PutObject requests with these 1-based indexes.
    fail_uploads: Vec<(usize, Fault)>,
    uploads_seen: usize,
    complete_with_error_body: bool,
    /// Answer the next request with `301` and `x-amz-bucket-region: R`.
    redirect_next: Option<String>,
    /// Answer the next object-creating request (PutObject,
    /// CompleteMultipartUpload) `412 PreconditionFailed`, as AWS does for
    /// `If-None-Match: *` when another writer created the key first.
    precondition_fail_next_create: bool,
    log: Vec<String>,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct S3Proxy {
    addr: SocketAddr,
    rules: Arc<Mutex<Rules>>,
    /// Stops the server when dropped.
    _task: Spawned,
}

fn is_upload(req: &Request<Incoming>) -> bool {
    req.method() == http::Method::PUT && !req.headers().contains_key("x-amz-copy-source")
}

fn is_complete(req: &Request<Incoming>) -> bool {
    req.method() == http::Method::POST && req.uri().query().is_some_and(|q| q.contains("uploadId="))
}

impl S3Proxy {
    /// Proxies to `upstream` (e.g. `http://127.0.0.1:3900`).
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upstream: Uri = upstream.parse().map_err(std::io::Error::other)?;
        let rules = Arc::new(Mutex::new(Rules::default()));
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build_http();
        let shared = rules.clone();
        let task = spawn_http1(
            listener,
            || {},
            move |req| forward(client.clone(), shared.clone(), upstream.clone(), req),
        );
        Ok(Self {
            addr,
            rules,
            _task: task,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Fails the `n`th (1-based) upload request from now on with `fault`.
    pub fn fail_upload(&self, n: usize, fault: Fault) {
        if let Ok(mut r) = self.rules.lock() {
            let base = r.uploads_seen;
            r.fail_uploads.push((base + n, fault));
        }
    }

    pub fn complete_with_error_body(&self, on: bool) {
        if let Ok(mut r) = self.rules.lock() {
            r.complete_with_error_body = on;
        }
    }

    /// `METHOD path?query` of every request, in order.
    /// The next request is answered `301 PermanentRedirect` with
    /// `x-amz-bucket-region: region`, as AWS answers for a bucket in
    /// another region.
    pub fn redirect_next(&self, region: &str) {
        if let Ok(mut r) = self.rules.lock() {
            r.redirect_next = Some(region.to_owned());
        }
    }

    /// See `Rules::precondition_fail_next_create`.
    pub fn precondition_fail_next_create(&self) {
        if let Ok(mut r) = self.rules.lock() {
            r.precondition_fail_next_create = true;
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.rules.lock().map(|r| r.log.clone()).unwrap_or_default()
    }
}

fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    body.map_err(Into::into).boxed_unsync()
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    rules: Arc<Mutex<Rules>>,
    upstream: Uri,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    let mut fault = None;
    let mut fake_complete = false;
    if let Ok(mut r) = rules.lock() {
        let range = req
            .headers()
            .get(http::header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(|v| format!(" range={v}"))
            .unwrap_or_default();
        // The headers that carry an object's attributes, as sent.
        let mut attrs = String::new();
        for (name, value) in req.headers() {
            let n = name.as_str();
            if matches!(
                n,
                "x-amz-copy-source"
                    | "x-amz-tagging"
                    | "x-amz-storage-class"
                    | "x-amz-server-side-encryption"
                    | "x-amz-server-side-encryption-aws-kms-key-id"
                    | "x-amz-acl"
                    | "content-type"
                    | "cache-control"
                    | "content-disposition"
                    | "content-encoding"
                    | "if-none-match"
            ) || n.starts_with("x-amz-meta-")
            {
                attrs.push_str(&format!(" [{n}={}]", value.to_str().unwrap_or("?")));
            }
        }
        r.log.push(format!(
            "{} {}{range}{attrs}",
            req.method(),
            req.uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        ));
        if is_upload(&req) {
            r.uploads_seen += 1;
            let n = r.uploads_seen;
            fault = r
                .fail_uploads
                .iter()
                .find(|(i, _)| *i == n)
                .map(|(_, f)| *f);
        }
        fake_complete = is_complete(&req) && r.complete_with_error_body;
        let creates = is_complete(&req)
            || (is_upload(&req) && !req.uri().query().is_some_and(|q| q.contains("partNumber=")));
        if creates && r.precondition_fail_next_create {
            r.precondition_fail_next_create = false;
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>";
            let mut resp = Response::new(boxed(Full::new(Bytes::from_static(body.as_bytes()))));
            *resp.status_mut() = StatusCode::PRECONDITION_FAILED;
            return Ok(resp);
        }
        if let Some(region) = r.redirect_next.take() {
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint.</Message></Error>";
            let mut resp = Response::new(boxed(Full::new(Bytes::from_static(body.as_bytes()))));
            *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
            if let Ok(v) = http::HeaderValue::from_str(&region) {
                resp.headers_mut().insert("x-amz-bucket-region", v);
            }
            return Ok(resp);
        }
    }
    match fault {
        Some(Fault::Reset) => {
            // Read a little of the body, then break the connection.
            let _ = req.body_mut().frame().await;
            return Err("injected connection reset".into());
        }
        Some(Fault::Status503) => {
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>injected</Message></Error>";
            let mut resp = Response::new(boxed(Full::new(Bytes::from_static(body.as_bytes()))));
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return Ok(resp);
        }
        Some(Fault::WrongEtag) | None => {}
    }
    if fake_complete {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>injected error in a 200 answer</Message></Error>";
        return Ok(Response::new(boxed(Full::new(Bytes::from_static(
            body.as_bytes(),
        )))));
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let mut parts = upstream.into_parts();
    parts.path_and_query = Some(path.parse()?);
    *req.uri_mut() = Uri::from_parts(parts)?;
    let mut resp = client.request(req).await?;
    if fault == Some(Fault::WrongEtag) {
        resp.headers_mut().insert(
            http::header::ETAG,
            http::HeaderValue::from_static("\"00000000000000000000000000000000\""),
        );
    }
    Ok(resp.map(boxed))
}
