//! Prometheus metrics (prometheus-client), text exposition format.
//!
//! Transfer and job metrics are derived from job events: `Metrics` is a
//! `JobEventsPort` sink. Streams, HTTP requests and watch counters are
//! updated by the HTTP layer. Labels never carry URLs, keys or tokens: only
//! fixed vocabularies (error class, job status, protocol, route template,
//! method, status code).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use ferry_domain::ports::{JobEvent, JobEventKind, JobEventsPort};
use ferry_domain::{ErrorCode, JobId};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    pub protocol: String,
}

/// The HTTP method label: a closed vocabulary, so requests with made-up
/// methods cannot add series to `/metrics`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum MethodLabel {
    GET,
    POST,
    DELETE,
    HEAD,
    OPTIONS,
    other,
}

impl MethodLabel {
    pub fn of(method: &str) -> Self {
        match method {
            "GET" => Self::GET,
            "POST" => Self::POST,
            "DELETE" => Self::DELETE,
            "HEAD" => Self::HEAD,
            "OPTIONS" => Self::OPTIONS,
            _ => Self::other,
        }
    }
}

/// A refused request's status (401, 403, 413, 421, 429, 431).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabel {
    pub status: u16,
}

/// The statuses that mean "refused before any work": counted and summed up
/// in one log line per interval instead of a line per request, so a flood
/// cannot fill the disk with logs.
pub fn is_refusal(status: u16) -> bool {
    matches!(status, 401 | 403 | 413 | 421 | 429 | 431)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// A route template of the router (a fixed set), never a raw path.
    pub route: String,
    pub method: MethodLabel,
    pub status: u16,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~33 min.
    Histogram::new(exponential_buckets(0.001, 4.0, 12))
}

fn request_histogram() -> Histogram {
    // 0.1 ms .. ~26 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// ferry's metrics.
pub struct Metrics {
    registry: Registry,
    active_transfers: Gauge,
    transferred_bytes: Counter,
    transfer_duration: Histogram,
    checksum_failures: Counter,
    failed_files: Family<ClassLabel, Counter>,
    retries: Family<ClassLabel, Counter>,
    resumes: Counter,
    skipped: Counter,
    restarts: Counter,
    jobs_finished: Family<StatusLabel, Counter>,
    jobs_active: Gauge,
    streams: Family<ProtocolLabel, Gauge>,
    coalesced: Counter,
    lagged: Counter,
    coalesced_seen: AtomicU64,
    lagged_seen: AtomicU64,
    requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
    refused: Family<RefusedLabel, Counter>,
    /// Refusals since the last summary line, by status.
    refused_tally: Mutex<std::collections::BTreeMap<u16, u64>>,
    rss: Gauge,
    budget_total: Gauge,
    budget_in_use: Gauge,
    pressure_level: Gauge,
    pressure_score: Gauge,
    admitted: Gauge,
    admission_cap: Gauge,
    started: Mutex<HashMap<(JobId, usize), Instant>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let m = Self {
            active_transfers: Gauge::default(),
            transferred_bytes: Counter::default(),
            transfer_duration: duration_histogram(),
            checksum_failures: Counter::default(),
            failed_files: Family::default(),
            retries: Family::default(),
            resumes: Counter::default(),
            skipped: Counter::default(),
            restarts: Counter::default(),
            jobs_finished: Family::default(),
            jobs_active: Gauge::default(),
            streams: Family::default(),
            coalesced: Counter::default(),
            lagged: Counter::default(),
            coalesced_seen: AtomicU64::new(0),
            lagged_seen: AtomicU64::new(0),
            requests: Family::new_with_constructor(request_histogram),
            rss: Gauge::default(),
            budget_total: Gauge::default(),
            budget_in_use: Gauge::default(),
            pressure_level: Gauge::default(),
            pressure_score: Gauge::default(),
            admitted: Gauge::default(),
            admission_cap: Gauge::default(),
            started: Mutex::new(HashMap::new()),
            refused: Family::default(),
            refused_tally: Mutex::new(std::collections::BTreeMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "active_transfers",
            "File transfers running now",
            m.active_transfers.clone(),
        );
        registry.register(
            "transferred_bytes",
            "Bytes of files transferred and verified",
            m.transferred_bytes.clone(),
        );
        registry.register(
            "transfer_duration_seconds",
            "Duration of successful file transfers",
            m.transfer_duration.clone(),
        );
        registry.register(
            "checksum_failures",
            "Files whose checksum did not match",
            m.checksum_failures.clone(),
        );
        registry.register(
            "file_failures",
            "File attempts that failed, by error class",
            m.failed_files.clone(),
        );
        registry.register(
            "retries",
            "File attempts retried, by error class",
            m.retries.clone(),
        );
        registry.register(
            "files_skipped",
            "Files a job skipped because the destination already held them",
            m.skipped.clone(),
        );
        registry.register(
            "transfer_resumes",
            "Transfers continued from a checkpoint",
            m.resumes.clone(),
        );
        registry.register(
            "transfer_restarts",
            "Checkpoints that could not be used (source changed, staged bytes gone): transfer restarted from zero",
            m.restarts.clone(),
        );
        registry.register(
            "jobs_finished",
            "Jobs that ended, by final status",
            m.jobs_finished.clone(),
        );
        registry.register(
            "jobs_active",
            "Jobs created and not yet ended (this process)",
            m.jobs_active.clone(),
        );
        registry.register(
            "streams_connected",
            "Event streams connected now, by protocol",
            m.streams.clone(),
        );
        registry.register(
            "stream_events_coalesced",
            "Progress events coalesced for slow stream clients",
            m.coalesced.clone(),
        );
        registry.register(
            "stream_lagged_disconnects",
            "Stream clients closed with `lagged`",
            m.lagged.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP requests by route template, method and status",
            m.requests.clone(),
        );
        registry.register(
            "http_refused",
            "Requests refused before any work (401, 403, 413, 421, 429, 431), by status",
            m.refused.clone(),
        );
        for (name, help, gauge) in [
            (
                "memory_rss_bytes",
                "Resident set size of the process",
                &m.rss,
            ),
            (
                "memory_budget_bytes",
                "The memory budget for file-byte buffers",
                &m.budget_total,
            ),
            (
                "memory_budget_in_use_bytes",
                "Memory budget granted now",
                &m.budget_in_use,
            ),
            (
                "pressure_level",
                "Backpressure level: 0 none, 1 light, 2 moderate, 3 heavy, 4 critical",
                &m.pressure_level,
            ),
            (
                "pressure_score",
                "Backpressure score (0-100: memory 0-40, streams 0-30, latency 0-30)",
                &m.pressure_score,
            ),
            (
                "admitted_transfers",
                "Transfers admitted by the backpressure gate now",
                &m.admitted,
            ),
            (
                "admission_cap",
                "Transfers the current backpressure level admits",
                &m.admission_cap,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        // Known label values start at zero, so every series exists from
        // the first scrape.
        for class in [
            "transient",
            "source_changed",
            "client",
            "storage",
            "cancelled",
            "internal",
        ] {
            let label = ClassLabel {
                class: class.to_owned(),
            };
            let _ = m.failed_files.get_or_create(&label);
            if class == "transient" {
                let _ = m.retries.get_or_create(&label);
            }
        }
        for status in ["completed", "completed_with_errors", "failed", "cancelled"] {
            let _ = m.jobs_finished.get_or_create(&StatusLabel {
                status: status.to_owned(),
            });
        }
        for protocol in ["ndjson", "sse", "websocket"] {
            let _ = m.streams.get_or_create(&ProtocolLabel {
                protocol: protocol.to_owned(),
            });
        }
        Self { registry, ..m }
    }

    /// A stream of `protocol` connected; the guard disconnects it.
    pub fn stream_connected(&self, protocol: &str) -> StreamGuard {
        let gauge = self
            .streams
            .get_or_create(&ProtocolLabel {
                protocol: protocol.to_owned(),
            })
            .clone();
        gauge.inc();
        StreamGuard { gauge }
    }

    /// Records one HTTP request (`route` is the route template; the method
    /// is folded into [`MethodLabel`]).
    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: MethodLabel::of(method),
                status,
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a refused request (see [`is_refusal`]).
    pub fn refused(&self, status: u16) {
        self.refused.get_or_create(&RefusedLabel { status }).inc();
        if let Ok(mut tally) = self.refused_tally.lock() {
            *tally.entry(status).or_default() += 1;
        }
    }

    /// Refusals since the last call, by status (for one summary log line).
    pub fn take_refused(&self) -> std::collections::BTreeMap<u16, u64> {
        self.refused_tally
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }

    /// Brings counters kept elsewhere (watch statistics) up to date.
    pub fn observe_watch_totals(&self, coalesced: u64, lagged: u64) {
        let prev = self.coalesced_seen.swap(coalesced, Ordering::Relaxed);
        self.coalesced.inc_by(coalesced.saturating_sub(prev));
        let prev = self.lagged_seen.swap(lagged, Ordering::Relaxed);
        self.lagged.inc_by(lagged.saturating_sub(prev));
    }

    /// Memory now: the process's RSS (if known) and the budget.
    pub fn observe_memory(&self, rss: Option<u64>, budget_in_use: u64, budget_total: u64) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        if let Some(rss) = rss {
            self.rss.set(g(rss));
        }
        self.budget_in_use.set(g(budget_in_use));
        self.budget_total.set(g(budget_total));
    }

    /// The backpressure gate now.
    pub fn observe_pressure(&self, level: u8, score: u8, admitted: usize, cap: usize) {
        self.pressure_level.set(i64::from(level));
        self.pressure_score.set(i64::from(score));
        self.admitted
            .set(i64::try_from(admitted).unwrap_or(i64::MAX));
        self.admission_cap
            .set(i64::try_from(cap).unwrap_or(i64::MAX));
    }

    /// The text exposition.
    /// Cluster mode: `ferry_node_info{node="…"} 1`, which node's metrics
    /// these are.
    pub fn set_node(&mut self, node: &str) {
        let info = Family::<NodeLabel, Gauge>::default();
        info.get_or_create(&NodeLabel {
            node: node.to_owned(),
        })
        .set(1);
        self.registry.register(
            "node_info",
            "This node of a cluster (its id in the label)",
            info,
        );
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    fn take_started(&self, job: &JobId, index: usize) -> Option<Instant> {
        match self.started.lock() {
            Ok(mut m) => m.remove(&(job.clone(), index)),
            Err(p) => p.into_inner().remove(&(job.clone(), index)),
        }
    }

    /// Applies one job event.
    pub fn record(&self, event: &JobEvent) {
        match &event.kind {
            JobEventKind::JobCreated { .. } => {
                self.jobs_active.inc();
            }
            JobEventKind::FileStarted { index, .. } => {
                self.active_transfers.inc();
                if let Ok(mut m) = self.started.lock() {
                    m.insert((event.job_id.clone(), *index), Instant::now());
                }
            }
            JobEventKind::FileSucceeded { index, bytes, .. } => {
                if let Some(t) = self.take_started(&event.job_id, *index) {
                    self.active_transfers.dec();
                    self.transfer_duration.observe(t.elapsed().as_secs_f64());
                }
                self.transferred_bytes.inc_by(*bytes);
            }
            JobEventKind::FileSkipped { index, .. } => {
                if self.take_started(&event.job_id, *index).is_some() {
                    self.active_transfers.dec();
                }
                self.skipped.inc();
            }
            JobEventKind::FileFailed {
                index,
                code,
                class,
                will_retry,
                ..
            } => {
                if self.take_started(&event.job_id, *index).is_some() {
                    self.active_transfers.dec();
                }
                if *code == ErrorCode::ChecksumMismatch {
                    self.checksum_failures.inc();
                }
                let label = ClassLabel {
                    class: class.as_str().to_owned(),
                };
                self.failed_files.get_or_create(&label).inc();
                if *will_retry {
                    self.retries.get_or_create(&label).inc();
                }
            }
            JobEventKind::JobCompleted { status, .. } => {
                self.finish_job(&event.job_id, status.as_str());
            }
            JobEventKind::JobCancelled => self.finish_job(&event.job_id, "cancelled"),
            JobEventKind::FileResumed { .. } => {
                self.resumes.inc();
            }
            JobEventKind::FileRestarted { .. } => {
                self.restarts.inc();
            }
            JobEventKind::ExportStarted
            | JobEventKind::ExportReady { .. }
            | JobEventKind::FileProgress { .. } => {}
        }
    }

    fn finish_job(&self, job: &JobId, status: &str) {
        self.jobs_finished
            .get_or_create(&StatusLabel {
                status: status.to_owned(),
            })
            .inc();
        if self.jobs_active.get() > 0 {
            self.jobs_active.dec();
        }
        // Transfers of a cancelled job end without a file event.
        if let Ok(mut m) = self.started.lock() {
            let before = m.len();
            m.retain(|(j, _), _| j != job);
            for _ in m.len()..before {
                self.active_transfers.dec();
            }
        }
    }
}

/// Keeps a stream counted while it lives.
#[derive(Debug)]
pub struct StreamGuard {
    gauge: Gauge,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The metrics as a job event sink.
#[async_trait]
impl JobEventsPort for Metrics {
    async fn publish(&self, event: &JobEvent) {
        self.record(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_domain::{JobStatus, JobSummary};

    fn ev(kind: JobEventKind) -> JobEvent {
        JobEvent {
            job_id: JobId::parse("j1").unwrap(),
            seq: 1,
            at_ms: 0,
            kind,
        }
    }

    #[test]
    fn events_drive_the_transfer_and_job_metrics() {
        let m = Metrics::new();
        m.record(&ev(JobEventKind::JobCreated { files: 2 }));
        for index in 0..2 {
            m.record(&ev(JobEventKind::FileStarted { index, attempt: 1 }));
        }
        assert!(m.encode().contains("ferry_active_transfers 2"));
        m.record(&ev(JobEventKind::FileSucceeded {
            index: 0,
            bytes: 1000,
            sha256: ferry_domain::Checksum::sha256(&"a".repeat(64)).unwrap(),
            md5: None,
        }));
        m.record(&ev(JobEventKind::FileStarted {
            index: 2,
            attempt: 1,
        }));
        m.record(&ev(JobEventKind::FileSkipped {
            index: 2,
            bytes: 5,
            sha256: ferry_domain::Checksum::sha256(&"b".repeat(64)).unwrap(),
        }));
        m.record(&ev(JobEventKind::FileFailed {
            index: 1,
            code: ferry_domain::ErrorCode::ChecksumMismatch,
            class: ferry_domain::ErrorClass::Client,
            message: "x".into(),
            will_retry: false,
        }));
        m.record(&ev(JobEventKind::JobCompleted {
            status: JobStatus::CompletedWithErrors,
            summary: JobSummary::default(),
        }));
        m.observe_watch_totals(5, 1);
        m.observe_watch_totals(7, 1);
        let _guard = m.stream_connected("sse");
        m.request("/v1/jobs/{id}", "GET", 200, Duration::from_millis(3));
        let text = m.encode();
        for line in [
            "ferry_active_transfers 0",
            "ferry_transferred_bytes_total 1000",
            "ferry_transfer_duration_seconds_count 1",
            "ferry_checksum_failures_total 1",
            "ferry_files_skipped_total 1",
            "ferry_file_failures_total{class=\"client\"} 1",
            "ferry_jobs_finished_total{status=\"completed_with_errors\"} 1",
            "ferry_jobs_active 0",
            "ferry_streams_connected{protocol=\"sse\"} 1",
            "ferry_stream_events_coalesced_total 7",
            "ferry_stream_lagged_disconnects_total 1",
            "ferry_http_request_duration_seconds_count{route=\"/v1/jobs/{id}\",method=\"GET\",status=\"200\"} 1",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
        drop(_guard);
        assert!(
            m.encode()
                .contains("ferry_streams_connected{protocol=\"sse\"} 0")
        );
    }

    #[test]
    fn made_up_methods_share_one_series() {
        let m = Metrics::new();
        for i in 0..50 {
            m.request("/healthz", &format!("MADEUP{i}"), 405, Duration::ZERO);
        }
        m.request("/healthz", "get", 405, Duration::ZERO);
        m.request("/healthz", "GET", 200, Duration::ZERO);
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("ferry_http_request_duration_seconds_count"))
            .collect::<Vec<_>>();
        assert_eq!(series.len(), 2, "{series:?}");
        assert!(text.contains(
            "ferry_http_request_duration_seconds_count{route=\"/healthz\",method=\"other\",status=\"405\"} 51"
        ));
    }
}
