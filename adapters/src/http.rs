//! The pooled HTTP client: `HttpDownloadPort` over hyper 1 (through reqwest,
//! which brings TLS via rustls with webpki roots, redirects and pooling).
//!
//! In the spirit of undici's `Pool`:
//! - at most `max_connections_per_host` requests in flight per host (a
//!   semaphore per scheme+host+port whose permit lives as long as the body;
//!   reqwest alone only caps *idle* connections);
//! - keep-alive: idle connections are closed after `idle_timeout`, and no
//!   connection takes a new request once it is `max_connection_age` old
//!   (hyper's pool has no such limit, so the pool itself is renewed at that
//!   age: old connections finish their bodies and close);
//! - `connect_timeout`, and a read-idle timeout on the body
//!   (`read_idle_timeout`) so a stalled source fails instead of hanging;
//! - retries of connect errors and transient statuses (the domain's one
//!   table, `retry::is_transient_status`) answered before the body starts,
//!   with the domain's one `RetryPolicy` (full jitter, `Retry-After`
//!   honoured); the per-host permit is given back while it waits; what it
//!   gives up on is marked exhausted so no caller retries it again;
//! - no automatic decompression (`Accept-Encoding: identity`): bytes are
//!   stored exactly as served;
//! - at most `max_redirects` redirects (http and https only); the final URL
//!   is reported;
//! - with a [`SourceGuard`], the SSRF guard: only addresses its policy
//!   allows are connected to (see [`crate::egress`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt, stream};
use reqwest::header::{self, HeaderMap};
use reqwest::{Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use ferry_domain::ports::{
    Download, DownloadError, DownloadRequest, HttpDownloadPort, SourceMeta, Validator,
};
use ferry_domain::retry::{self, is_transient_status};
use ferry_domain::source::redact_text;
use ferry_domain::{RetryPolicy, SourceUrl};

use crate::egress::{self, SourceGuard};

/// Idle per-host limiters kept before unused ones are dropped.
const HOST_LIMITERS_KEPT: usize = 1024;

/// Tuning of the pooled client. Defaults follow undici's `Pool` (per-host
/// connection cap, keep-alive, connect and read-idle timeouts).
#[derive(Debug, Clone)]
pub struct HttpClientConfig {
    pub max_connections_per_host: usize,
    pub idle_timeout: Duration,
    /// Maximum keep-alive: no connection is reused for a new request after
    /// this age.
    pub max_connection_age: Duration,
    pub connect_timeout: Duration,
    pub read_idle_timeout: Duration,
    pub max_redirects: usize,
    /// Retries of failures before the body starts: `retry.attempts` tries
    /// in all, delays from the policy.
    pub retry: RetryPolicy,
    pub user_agent: String,
    /// The SSRF guard: when set, only addresses its policy allows are
    /// connected to, for the first request and every redirect hop.
    pub guard: Option<SourceGuard>,
    /// Which certificate authorities HTTPS sources are checked against.
    pub tls: TlsTrust,
    /// A body slower than this on average over a window fails with
    /// `TooSlow` (a transient failure: the attempt is retried, resuming).
    pub min_rate: Option<MinRate>,
}

/// The slowest a source body may be: at least `bytes_per_sec` on average
/// over each `window` of the body (the first window starts with the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    pub bytes_per_sec: u64,
    pub window: Duration,
}

impl MinRate {
    fn floor(&self) -> u64 {
        let per_window = u128::from(self.bytes_per_sec) * self.window.as_millis() / 1000;
        u64::try_from(per_window).unwrap_or(u64::MAX)
    }
}

/// The built-in root stores to trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsRoots {
    /// Mozilla's roots compiled into ferry (webpki-roots): the same on
    /// every machine.
    Webpki,
    /// The system's store (`/etc/ssl/certs` on Debian), or the PEM files
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` name when they are set.
    Native,
    /// Both: a private CA installed on the machine (or named by
    /// `SSL_CERT_FILE`) works, and so does a minimal container without a
    /// system store.
    #[default]
    Both,
}

/// The trust anchors for HTTPS sources: built-in roots plus extra CA
/// certificates (`--ca-cert FILE`, PEM).
#[derive(Clone, Default)]
pub struct TlsTrust {
    pub roots: TlsRoots,
    extra: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTrust")
            .field("roots", &self.roots)
            .field("extra_certificates", &self.extra.len())
            .finish()
    }
}

impl TlsTrust {
    /// `roots`, plus every certificate in the PEM files `ca_files`. Fails,
    /// naming the file, when one cannot be read or holds no certificate,
    /// and when `SSL_CERT_FILE` names a file that cannot be read while the
    /// system store is in use (reqwest would skip it silently).
    pub fn load(
        roots: TlsRoots,
        ca_files: &[std::path::PathBuf],
    ) -> Result<Self, HttpClientInitError> {
        let mut extra = Vec::new();
        for path in ca_files {
            extra.extend(read_pem(path, "--ca-cert")?);
        }
        if roots != TlsRoots::Webpki
            && let Some(file) = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty())
        {
            read_pem(std::path::Path::new(&file), "SSL_CERT_FILE")?;
        }
        Ok(Self { roots, extra })
    }

    fn apply(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let mut builder = builder
            .tls_built_in_root_certs(false)
            .tls_built_in_webpki_certs(self.roots != TlsRoots::Native)
            .tls_built_in_native_certs(self.roots != TlsRoots::Webpki);
        for cert in &self.extra {
            builder = builder.add_root_certificate(cert.clone());
        }
        builder
    }
}

/// The certificates of one PEM file; `what` names the flag or variable.
fn read_pem(
    path: &std::path::Path,
    what: &str,
) -> Result<Vec<reqwest::Certificate>, HttpClientInitError> {
    let pem = std::fs::read(path).map_err(|e| {
        HttpClientInitError(format!("{what} {}: cannot read it ({e})", path.display()))
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default();
    if certs.is_empty() {
        return Err(HttpClientInitError(format!(
            "{what} {}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        Self {
            max_connections_per_host: 10,
            idle_timeout: Duration::from_secs(30),
            max_connection_age: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            read_idle_timeout: Duration::from_secs(30),
            max_redirects: 5,
            retry: RetryPolicy {
                attempts: 4,
                base: Duration::from_millis(250),
                max: Duration::from_secs(30),
                deadline: Duration::from_secs(15 * 60),
            },
            user_agent: format!("ferry/{}", env!("CARGO_PKG_VERSION")),
            guard: None,
            tls: TlsTrust::default(),
            min_rate: None,
        }
    }
}

/// The two clients of one pool generation: `plain` follows redirects;
/// `scoped` carries a source's own headers and stops at a redirect to
/// another origin, which is then followed without them.
#[derive(Clone)]
struct Clients {
    plain: reqwest::Client,
    scoped: reqwest::Client,
}

/// `HttpDownloadPort` for `http://` and `https://` sources.
pub struct PooledHttpClient {
    /// The current pool and when it was created.
    pool: Mutex<(Clients, Instant)>,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    config: HttpClientConfig,
}

impl std::fmt::Debug for PooledHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledHttpClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The client could not be built (TLS initialisation).
#[derive(Debug, thiserror::Error)]
#[error("could not initialise the HTTP client: {0}")]
pub struct HttpClientInitError(pub String);

impl PooledHttpClient {
    pub fn new(config: HttpClientConfig) -> Result<Self, HttpClientInitError> {
        let client = Self::build(&config)?;
        Ok(Self {
            pool: Mutex::new((client, Instant::now())),
            hosts: Mutex::new(HashMap::new()),
            config,
        })
    }

    fn build(config: &HttpClientConfig) -> Result<Clients, HttpClientInitError> {
        let one = |same_origin_only| {
            let builder = reqwest::Client::builder()
                .user_agent(config.user_agent.clone())
                .connect_timeout(config.connect_timeout)
                .pool_idle_timeout(config.idle_timeout)
                .pool_max_idle_per_host(config.max_connections_per_host)
                .tcp_keepalive(Duration::from_secs(30))
                .tcp_nodelay(true);
            let builder = config.tls.apply(builder);
            egress::configure(
                builder,
                config.guard.as_ref(),
                config.max_redirects,
                same_origin_only,
            )
            .build()
            .map_err(|e| {
                HttpClientInitError(
                    crate::error_text::error_chain(&e.without_url()).replace("builder error: ", ""),
                )
            })
        };
        Ok(Clients {
            plain: one(false)?,
            scoped: one(true)?,
        })
    }

    /// The pool to send through, renewed once it reaches the maximum age.
    fn clients(&self) -> Clients {
        let mut pool = match self.pool.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        if pool.1.elapsed() >= self.config.max_connection_age
            && let Ok(fresh) = Self::build(&self.config)
        {
            *pool = (fresh, Instant::now());
        }
        pool.0.clone()
    }

    /// The per-host limiter, created on first use. Limiters nobody holds
    /// (no request in flight, no permit out) are dropped once the map
    /// passes [`HOST_LIMITERS_KEPT`] hosts, so a server fed many distinct
    /// hosts does not grow without bound.
    fn host_limiter(&self, source: &SourceUrl) -> Arc<Semaphore> {
        let key = host_key(source);
        let mut hosts = match self.hosts.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        if hosts.len() >= HOST_LIMITERS_KEPT && !hosts.contains_key(&key) {
            hosts.retain(|_, limiter| Arc::strong_count(limiter) > 1);
        }
        hosts
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.max_connections_per_host)))
            .clone()
    }

    /// One request for `target`; the source's headers go with it only while
    /// `with_headers` (the first origin), through the client that stops at
    /// a redirect to another origin.
    async fn send_once(
        &self,
        target: &SourceUrl,
        request: &DownloadRequest,
        with_headers: bool,
    ) -> Result<Response, reqwest::Error> {
        let clients = self.clients();
        let client = if with_headers {
            &clients.scoped
        } else {
            &clients.plain
        };
        let mut builder = client
            .get(target.expose())
            .header(header::ACCEPT_ENCODING, "identity");
        if with_headers {
            for h in request.headers.iter() {
                // SourceHeader's rule is the HTTP rule (no control
                // characters), so this never fails; it skips rather than
                // send something else.
                let Ok(mut value) = header::HeaderValue::from_bytes(h.value().as_bytes()) else {
                    warn!(header = h.name(), "header value not sendable; skipped");
                    continue;
                };
                value.set_sensitive(true);
                builder = builder.header(h.name(), value);
            }
        }
        if request.offset > 0 {
            builder = builder.header(header::RANGE, format!("bytes={}-", request.offset));
            match &request.if_range {
                Some(Validator::ETag(etag)) => builder = builder.header(header::IF_RANGE, etag),
                Some(Validator::LastModified(lm)) => {
                    builder = builder.header(header::IF_RANGE, lm);
                }
                None => {}
            }
        }
        builder.send().await
    }
}

impl PooledHttpClient {
    /// Where a 3xx answer points, checked as every redirect hop is.
    fn cross_origin_target(&self, url: &str, resp: &Response) -> Result<SourceUrl, DownloadError> {
        let location =
            header_str(resp.headers(), header::LOCATION).ok_or_else(|| DownloadError::Status {
                url: url.to_owned(),
                status: resp.status().as_u16(),
                exhausted: false,
            })?;
        let next = resp
            .url()
            .join(&location)
            .map_err(|e| DownloadError::Unexpected {
                url: url.to_owned(),
                source: format!("a redirect to an invalid URL: {e}").into(),
            })?;
        egress::check_redirect(&next, self.config.guard.as_ref()).map_err(|refused| {
            DownloadError::Forbidden {
                url: url.to_owned(),
                reason: refused.to_string(),
            }
        })?;
        SourceUrl::from_url(next).map_err(|e| DownloadError::Forbidden {
            url: url.to_owned(),
            reason: e.to_string(),
        })
    }
}

fn host_key(source: &SourceUrl) -> String {
    source.origin()
}

/// Maps a reqwest error to the port's error, never leaking the URL's secrets.
fn map_send_error(url: &str, e: &reqwest::Error, max_redirects: usize) -> DownloadError {
    if let Some(reason) = egress::refusal(e) {
        return DownloadError::Forbidden {
            url: url.to_owned(),
            reason,
        };
    }
    if let Some(tls) = crate::error_text::find_cause::<rustls::Error>(e) {
        return DownloadError::Tls {
            url: url.to_owned(),
            reason: tls.to_string(),
        };
    }
    let reason = redact_text(&error_chain(e));
    if e.is_redirect() {
        DownloadError::TooManyRedirects {
            url: url.to_owned(),
            max: max_redirects,
        }
    } else if e.is_builder() {
        DownloadError::Unexpected {
            url: url.to_owned(),
            source: reason.into(),
        }
    } else {
        DownloadError::Connect {
            url: url.to_owned(),
            reason,
            exhausted: false,
        }
    }
}

/// The error's causes, without the URL reqwest puts in its own message.
fn error_chain(e: &reqwest::Error) -> String {
    crate::error_text::causes(e).unwrap_or_else(|| {
        if e.is_timeout() {
            "timed out".to_owned()
        } else {
            "request failed".to_owned()
        }
    })
}

/// Marks an error this client retried (`retried`) as exhausted, so callers
/// do not retry it again.
fn exhausted(error: DownloadError, retried: bool) -> DownloadError {
    match error {
        DownloadError::Status { url, status, .. } => DownloadError::Status {
            url,
            status,
            exhausted: retried,
        },
        DownloadError::Connect { url, reason, .. } => DownloadError::Connect {
            url,
            reason,
            exhausted: retried,
        },
        other => other,
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Parses `Content-Range: bytes START-END/TOTAL`.
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    parse_content_range(&header_str(headers, header::CONTENT_RANGE)?)
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`): the one Content-Range
/// parser, for HTTP and S3 sources.
pub(crate) fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    Some((start.parse().ok()?, total))
}

#[async_trait]
impl HttpDownloadPort for PooledHttpClient {
    async fn open(&self, request: DownloadRequest) -> Result<Download, DownloadError> {
        let url = request.source.redacted();
        if let Some(guard) = &self.config.guard
            && let Ok(parsed) = url::Url::parse(request.source.expose())
            && let Err(denied) = guard.check_url(&parsed)
        {
            return Err(DownloadError::Forbidden {
                url,
                reason: denied.to_string(),
            });
        }
        let policy = self.config.retry;
        let first_try = Instant::now();
        let mut retry = 0u32;
        // Where the request goes: the source, then (with headers) the
        // target of a redirect to another origin, which gets no headers.
        let mut target = request.source.clone();
        let mut with_headers = !request.headers.is_empty();
        let (response, permit) = loop {
            // The per-host permit is held for one request (and its body),
            // never across a backoff sleep.
            let permit: OwnedSemaphorePermit = self
                .host_limiter(&target)
                .acquire_owned()
                .await
                .map_err(|e| DownloadError::Unexpected {
                    url: url.clone(),
                    source: Box::new(e),
                })?;
            let outcome = self.send_once(&target, &request, with_headers).await;
            let (error, wait_hint) = match outcome {
                Ok(resp) if resp.status().is_success() => break (resp, permit),
                Ok(resp) if with_headers && resp.status().is_redirection() => {
                    // The scoped client stopped at a redirect to another
                    // origin: follow it, without the source's headers.
                    target = self.cross_origin_target(&url, &resp)?;
                    with_headers = false;
                    debug!(source = %url, to = %target, "redirected to another origin; the source's headers are not sent there");
                    continue;
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let error = DownloadError::Status {
                        url: url.clone(),
                        status,
                        exhausted: false,
                    };
                    if !is_transient_status(status) {
                        return Err(error);
                    }
                    (error, retry_after(resp.headers()))
                }
                Err(e) => {
                    let error = map_send_error(&url, &e, self.config.max_redirects);
                    if !error.is_retryable() {
                        return Err(error);
                    }
                    (error, None)
                }
            };
            drop(permit);
            let Some(delay) =
                policy.delay_honouring(retry, retry::jitter(), first_try.elapsed(), wait_hint)
            else {
                return Err(exhausted(error, retry > 0));
            };
            retry += 1;
            warn!(source = %url, retry, delay_ms = delay.as_millis() as u64, %error, "retrying source");
            tokio::time::sleep(delay).await;
        };

        let headers = response.headers();
        let (offset, total_length) = if response.status() == StatusCode::PARTIAL_CONTENT {
            match content_range(headers) {
                Some((start, total)) => (start, total),
                None => {
                    return Err(DownloadError::Unexpected {
                        url,
                        source: "a 206 answer without a valid Content-Range".into(),
                    });
                }
            }
        } else {
            let len = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
            (0, len)
        };
        let accepts_ranges = response.status() == StatusCode::PARTIAL_CONTENT
            || header_str(headers, header::ACCEPT_RANGES).is_some_and(|v| v.contains("bytes"));
        let final_url =
            SourceUrl::from_url(response.url().clone()).unwrap_or_else(|_| request.source.clone());
        let meta = SourceMeta {
            total_length,
            offset,
            etag: header_str(headers, header::ETAG),
            last_modified: header_str(headers, header::LAST_MODIFIED),
            accepts_ranges,
            final_url,
            declared_sha256: None,
            content_disposition: header_str(headers, header::CONTENT_DISPOSITION),
            content_type: header_str(headers, header::CONTENT_TYPE),
        };
        debug!(source = %url, status = response.status().as_u16(), ?total_length, offset, "source opened");
        let body = idle_timeout_body(
            response.bytes_stream(),
            BodyLimits {
                idle: self.config.read_idle_timeout,
                min_rate: self.config.min_rate,
            },
            url,
            permit,
        );
        Ok(Download {
            meta,
            body: Box::pin(body),
        })
    }
}

/// A time no timer reaches (a window of `Duration::MAX`).
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86_400)
}

/// How slow a body may be.
#[derive(Debug, Clone, Copy)]
struct BodyLimits {
    /// No byte for this long fails it (`Stalled`).
    idle: Duration,
    /// Fewer bytes than this rate over a window fails it (`TooSlow`).
    min_rate: Option<MinRate>,
}

/// Wraps a body so that `idle` without a byte fails it with `Stalled`, and
/// a window below the minimum rate with `TooSlow`. The host permit is held
/// until the body is dropped or ends.
fn idle_timeout_body<S>(
    inner: S,
    limits: BodyLimits,
    url: String,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Bytes, DownloadError>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + Unpin + 'static,
{
    struct State<S> {
        inner: S,
        url: String,
        permit: Option<OwnedSemaphorePermit>,
        failed: bool,
        /// When the current rate window ends, and the bytes seen in it.
        window_end: tokio::time::Instant,
        in_window: u64,
    }
    let window = limits.min_rate.map_or(Duration::MAX, |r| r.window);
    let state = State {
        inner,
        url,
        permit: Some(permit),
        failed: false,
        window_end: tokio::time::Instant::now()
            .checked_add(window)
            .unwrap_or_else(far_future),
        in_window: 0,
    };
    stream::unfold(state, move |mut st| async move {
        if st.failed {
            return None;
        }
        let idle_end = tokio::time::Instant::now() + limits.idle;
        let next = loop {
            let next = tokio::time::timeout_at(idle_end.min(st.window_end), st.inner.next()).await;
            let now = tokio::time::Instant::now();
            let Some(rate) = limits.min_rate.filter(|_| now >= st.window_end) else {
                if next.is_err() && now < idle_end {
                    continue;
                }
                break next;
            };
            // A window ended: it must have brought its share (a chunk
            // arriving at its end counts in it).
            let arrived = match &next {
                Ok(Some(Ok(bytes))) => bytes.len() as u64,
                _ => 0,
            };
            let seen = st.in_window + arrived;
            if seen < rate.floor() {
                st.failed = true;
                st.permit = None;
                let error = DownloadError::TooSlow {
                    url: st.url.clone(),
                    bytes: seen,
                    window: rate.window,
                    min_bytes_per_sec: rate.bytes_per_sec,
                };
                return Some((Err(error), st));
            }
            st.window_end = now.checked_add(rate.window).unwrap_or_else(far_future);
            st.in_window = 0;
            match next {
                // The window ended before any byte or the idle time: wait on.
                Err(_) if now < idle_end => continue,
                Ok(Some(Ok(bytes))) => return Some((Ok(bytes), st)),
                other => break other,
            }
        };
        match next {
            Ok(Some(Ok(bytes))) => {
                st.in_window += bytes.len() as u64;
                Some((Ok(bytes), st))
            }
            Ok(Some(Err(e))) => {
                st.failed = true;
                st.permit = None;
                let error = DownloadError::Interrupted {
                    url: st.url.clone(),
                    reason: redact_text(&error_chain(&e)),
                };
                Some((Err(error), st))
            }
            Ok(None) => None,
            Err(_) => {
                st.failed = true;
                st.permit = None;
                let error = DownloadError::Stalled {
                    url: st.url.clone(),
                    idle: limits.idle,
                };
                Some((Err(error), st))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    /// Many distinct hosts: idle limiters are dropped past the bound; a
    /// limiter in use is kept (its count survives).
    #[tokio::test]
    async fn idle_host_limiters_do_not_accumulate() {
        let client = PooledHttpClient::new(HttpClientConfig::default()).unwrap();
        let held = client.host_limiter(&SourceUrl::parse("https://busy.example/x").unwrap());
        let permit = held.clone().try_acquire_owned().unwrap();
        for i in 0..3 * HOST_LIMITERS_KEPT {
            let url = SourceUrl::parse(&format!("https://h{i}.example/x")).unwrap();
            let _ = client.host_limiter(&url);
        }
        let kept = client.hosts.lock().unwrap().len();
        assert!(kept <= HOST_LIMITERS_KEPT + 1, "{kept} limiters kept");
        let again = client.host_limiter(&SourceUrl::parse("https://busy.example/x").unwrap());
        assert!(
            Arc::ptr_eq(&held, &again),
            "the busy host's limiter was kept"
        );
        assert_eq!(
            again.available_permits(),
            HttpClientConfig::default().max_connections_per_host - 1
        );
        drop(permit);
    }

    #[test]
    fn parses_content_range() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 100-199/1000"),
        );
        assert_eq!(content_range(&h), Some((100, Some(1000))));
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 5-9/*"),
        );
        assert_eq!(content_range(&h), Some((5, None)));
        h.insert(header::CONTENT_RANGE, HeaderValue::from_static("garbage"));
        assert_eq!(content_range(&h), None);
    }

    #[test]
    fn parses_retry_after() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn only_retried_errors_are_marked_exhausted() {
        let status = |exhausted| DownloadError::Status {
            url: "http://h/x".into(),
            status: 503,
            exhausted,
        };
        assert!(exhausted(status(false), true).is_exhausted());
        assert!(!exhausted(status(false), false).is_exhausted());
        let stalled = DownloadError::Stalled {
            url: "http://h/x".into(),
            idle: Duration::from_secs(1),
        };
        assert!(!exhausted(stalled, true).is_exhausted());
    }

    #[test]
    fn host_key_ignores_credentials_and_path() {
        let a = SourceUrl::parse("http://u:p@h.example/x?sig=1").unwrap();
        let b = SourceUrl::parse("http://h.example:80/y").unwrap();
        assert_eq!(host_key(&a), host_key(&b));
        assert!(!host_key(&a).contains('p') || !host_key(&a).contains("u:p"));
    }
}
