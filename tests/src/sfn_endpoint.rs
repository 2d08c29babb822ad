//! A Step Functions test endpoint (awsJson1.0 over HTTP) that records the
//! calls the real aws-sdk-sfn client makes, checks their shape, and can
//! answer the first N calls with a 500 to exercise retries.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::server::{Spawned, spawn_http1};

/// One recorded call: the operation (from `X-Amz-Target`) and its body.
#[derive(Debug, Clone, PartialEq)]
pub struct SfnCall {
    pub operation: String,
    pub body: Value,
    pub signed: bool,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<SfnCall>,
    fail_next: usize,
}

/// A running endpoint; stops when dropped.
#[derive(Debug)]
pub struct SfnEndpoint {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Stops the server when dropped.
    _task: Spawned,
}

impl SfnEndpoint {
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = spawn_http1(listener, || {}, move |req| handle(shared.clone(), req));
        Ok(Self {
            addr,
            state,
            _task: task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next `n` calls with HTTP 500.
    pub fn fail_next(&self, n: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.fail_next = n;
        }
    }

    /// The real Step Functions adapter (aws-sdk-sfn), pointed here, with
    /// fast retries.
    pub fn callback(&self) -> ferry_adapters::sfn::StepFunctionsCallback {
        use aws_sdk_sfn::config::retry::RetryConfig;
        use aws_sdk_sfn::config::{BehaviorVersion, Credentials, Region};
        let conf = aws_sdk_sfn::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(ferry_adapters::aws::https_client())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                "AKIDFERRYTEST",
                "test-secret",
                None,
                None,
                "test",
            ))
            .endpoint_url(self.url())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(4)
                    .with_initial_backoff(std::time::Duration::from_millis(5)),
            )
            .build();
        ferry_adapters::sfn::StepFunctionsCallback::from_client(aws_sdk_sfn::Client::from_conf(
            conf,
        ))
    }

    pub fn calls(&self) -> Vec<SfnCall> {
        self.state
            .lock()
            .map(|s| s.calls.clone())
            .unwrap_or_default()
    }
}

fn reply(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    r
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let operation = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_start_matches("AWSStepFunctions.")
        .to_owned();
    let signed = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256"));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, "{}")),
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fail = {
        let Ok(mut s) = state.lock() else {
            return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, "{}"));
        };
        s.calls.push(SfnCall {
            operation: operation.clone(),
            body: body.clone(),
            signed,
        });
        if s.fail_next > 0 {
            s.fail_next -= 1;
            true
        } else {
            false
        }
    };
    if fail {
        return Ok(reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"__type":"ServiceUnavailable","message":"injected"}"#,
        ));
    }
    let token_ok = body
        .get("taskToken")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    let shape_ok = match operation.as_str() {
        "SendTaskSuccess" => body
            .get("output")
            .and_then(Value::as_str)
            .is_some_and(|o| serde_json::from_str::<Value>(o).is_ok()),
        "SendTaskFailure" => body.get("error").is_some() && body.get("cause").is_some(),
        _ => false,
    };
    if !(token_ok && shape_ok) {
        return Ok(reply(
            StatusCode::BAD_REQUEST,
            r#"{"__type":"InvalidOutput","message":"bad request shape"}"#,
        ));
    }
    Ok(reply(StatusCode::OK, "{}"))
}
