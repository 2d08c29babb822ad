//! The job use cases end to end: real origin, real HTTP client, filesystem
//! storage, SQL job store (SQLite, and PostgreSQL for the main scenario).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_adapters::events::BroadcastEvents;
use ferry_adapters::job_store::SqlJobStore;
use ferry_adapters::s3::{S3Settings, S3StorageConfig};
use ferry_adapters::storage_resolver::DefaultStorageResolver;
use ferry_adapters::{HttpClientConfig, PooledHttpClient, SourceRouter};
use ferry_application::jobs::{
    Access, FileRequest, JobService, JobServiceConfig, SubmitError, SubmitJobRequest,
};
use ferry_domain::ports::{JobEventKind, JobFilter, JobStorePort};
use ferry_domain::{JobId, JobStatus, RetryPolicy, TaskStatus};
use ferry_tests::origin::{Behavior, Origin};
use ferry_tests::{generate, sha256_hex};
use tokio::sync::broadcast;

use crate::job_store::PgDatabase;

pub struct Harness {
    pub origin: Origin,
    pub files: tempfile::TempDir,
    pub store: Arc<SqlJobStore>,
    pub events: BroadcastEvents,
    pub service: Arc<JobService>,
    _db_dir: tempfile::TempDir,
}

pub fn service_on(
    store: Arc<SqlJobStore>,
    files_root: PathBuf,
    events: BroadcastEvents,
    config: JobServiceConfig,
) -> Arc<JobService> {
    Arc::new(build_service(store, files_root, events, config))
}

pub fn build_service(
    store: Arc<SqlJobStore>,
    files_root: PathBuf,
    events: BroadcastEvents,
    config: JobServiceConfig,
) -> JobService {
    let http = ferry_tests::test_http_client(Duration::from_secs(20));
    let resolver = DefaultStorageResolver::new(
        files_root,
        S3Settings::default(),
        S3StorageConfig::default(),
    );
    ferry_tests::job_service(
        store,
        Arc::new(SourceRouter::new(Arc::new(http), None)),
        Arc::new(resolver),
        Arc::new(events),
        Box::new(|| JobId::parse(&format!("job-{:016x}", rand::random::<u64>())).unwrap()),
        config,
    )
}

/// A service over the harness's store and files with its own source client
/// and event sink.
fn service_over(
    h: &Harness,
    http: PooledHttpClient,
    events: Arc<dyn ferry_domain::ports::JobEventsPort>,
    config: JobServiceConfig,
) -> Arc<JobService> {
    Arc::new(ferry_tests::job_service(
        h.store.clone(),
        Arc::new(SourceRouter::new(Arc::new(http), None)),
        Arc::new(DefaultStorageResolver::new(
            h.files.path().to_path_buf(),
            S3Settings::default(),
            S3StorageConfig::default(),
        )),
        events,
        Box::new(|| JobId::parse(&format!("job-{:016x}", rand::random::<u64>())).unwrap()),
        config,
    ))
}

pub fn fast_config() -> JobServiceConfig {
    JobServiceConfig {
        min_poll_interval: Duration::from_millis(1),
        retry: RetryPolicy {
            base: Duration::from_millis(10),
            ..JobServiceConfig::default().retry
        },
        progress_interval: Duration::from_millis(10),
        ..JobServiceConfig::default()
    }
}

impl Harness {
    pub async fn sqlite() -> Self {
        let db_dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            db_dir.path().join("jobs.db").display()
        );
        Self::with_store(Arc::new(SqlJobStore::connect(&url).await.unwrap()), db_dir).await
    }

    pub async fn with_store(store: Arc<SqlJobStore>, db_dir: tempfile::TempDir) -> Self {
        let files = tempfile::tempdir().unwrap();
        let events = BroadcastEvents::new(10_000);
        let service = service_on(
            store.clone(),
            files.path().to_path_buf(),
            events.clone(),
            fast_config(),
        );
        Self {
            origin: Origin::start().await.unwrap(),
            files,
            store,
            events,
            service,
            _db_dir: db_dir,
        }
    }

    /// Submits a job of `files` into `destination` and runs it in the
    /// background: its id, its events from now on, and the run.
    pub async fn run(
        &self,
        files: Vec<FileRequest>,
        destination: &str,
    ) -> (
        JobId,
        broadcast::Receiver<ferry_domain::ports::JobEvent>,
        tokio::task::JoinHandle<()>,
    ) {
        let rec = self
            .service
            .submit(SubmitJobRequest {
                files,
                destination: destination.into(),
                ..SubmitJobRequest::default()
            })
            .await
            .unwrap();
        let id = rec.job.id.clone();
        let rx = self.events.subscribe();
        let runner = tokio::spawn(self.service.clone().run_abortable(id.clone()));
        (id, rx, runner)
    }

    pub fn file(&self, name: &str, len: usize, behavior: Behavior) -> (FileRequest, Vec<u8>) {
        let data = generate(len, name.len() as u64 * 7 + len as u64);
        self.origin
            .serve(&format!("/{name}"), data.clone(), behavior);
        let req = FileRequest {
            source: self.origin.url(&format!("/{name}")),
            key: format!("out/{name}"),
            sha256: Some(sha256_hex(&data)),
            ..FileRequest::default()
        };
        (req, data)
    }
}

/// Collects a job's events until its terminal event.
pub async fn events_until_end(
    rx: &mut broadcast::Receiver<ferry_domain::ports::JobEvent>,
    id: &JobId,
) -> Vec<ferry_domain::ports::JobEvent> {
    let mut out = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap()
            .unwrap();
        if &e.job_id != id {
            continue;
        }
        let end = e.kind.is_terminal();
        out.push(e);
        if end {
            return out;
        }
    }
}

async fn twenty_files_one_wrong_checksum(h: Harness) {
    let mut files = Vec::new();
    let mut datas = Vec::new();
    for i in 0..20 {
        let (mut f, data) = h.file(&format!("f{i:02}.bin"), 100_000 + i * 997, Behavior::Normal);
        if i == 7 {
            f.sha256 = Some("0".repeat(64));
        }
        files.push(f);
        datas.push(data);
    }
    let mut rx = h.events.subscribe();
    let record = h
        .service
        .submit(SubmitJobRequest {
            files,
            destination: "batch".into(),
            ..SubmitJobRequest::default()
        })
        .await
        .unwrap();
    let id = record.job.id.clone();
    // Durable before anyone is told: it is in the store already.
    assert_eq!(
        h.store.get(&id).await.unwrap().unwrap().job.status(),
        JobStatus::Pending
    );
    h.service.clone().run_abortable(id.clone()).await;

    let done = h.service.get(&Access::All, &id).await.unwrap().unwrap();
    assert_eq!(done.job.status(), JobStatus::CompletedWithErrors);
    let s = done.job.summary();
    assert_eq!((s.total, s.succeeded, s.failed), (20, 19, 1));
    for (i, t) in done.job.tasks().iter().enumerate() {
        let path = h
            .files
            .path()
            .join("batch/out")
            .join(format!("f{i:02}.bin"));
        if i == 7 {
            assert_eq!(t.status(), TaskStatus::Failed);
            assert_eq!(t.failure().unwrap().code, "checksum_mismatch");
            assert_eq!(t.attempts(), 1, "a checksum mismatch is not retried");
            assert!(!path.exists());
        } else {
            assert_eq!(t.status(), TaskStatus::Succeeded);
            assert_eq!(t.sha256().unwrap().hex(), sha256_hex(&datas[i]));
            assert!(t.md5().is_some());
            assert_eq!(std::fs::read(&path).unwrap(), datas[i]);
        }
    }
    let events = events_until_end(&mut rx, &id).await;
    assert_eq!(
        events.first().unwrap().kind,
        JobEventKind::JobCreated { files: 20 }
    );
    assert!(matches!(
        events.last().unwrap().kind,
        JobEventKind::JobCompleted {
            status: JobStatus::CompletedWithErrors,
            ..
        }
    ));
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gapless, ordered"
    );
    let stored = h.store.events_after(&id, 0, 10_000).await.unwrap();
    assert_eq!(stored, events, "every published event is stored for replay");
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.kind, JobEventKind::FileSucceeded { .. }))
            .count(),
        19
    );
}

#[tokio::test]
async fn a_twenty_file_job_with_one_bad_checksum_completes_with_errors_on_sqlite() {
    twenty_files_one_wrong_checksum(Harness::sqlite().await).await;
}

#[tokio::test]
async fn a_twenty_file_job_with_one_bad_checksum_completes_with_errors_on_postgres() {
    let db = PgDatabase::create().await;
    let store = Arc::new(SqlJobStore::connect(&db.url).await.unwrap());
    twenty_files_one_wrong_checksum(
        Harness::with_store(store.clone(), tempfile::tempdir().unwrap()).await,
    )
    .await;
    store.close().await;
}

#[tokio::test]
async fn transient_failures_are_retried_and_counted() {
    let h = Harness::sqlite().await;
    let (f, data) = h.file(
        "flaky.bin",
        300_000,
        Behavior::ShortFirst {
            times: 1,
            send: 100_000,
        },
    );
    let rec = h
        .service
        .submit(SubmitJobRequest {
            files: vec![f],
            destination: String::new(),
            ..SubmitJobRequest::default()
        })
        .await
        .unwrap();
    let mut rx = h.events.subscribe();
    h.service.clone().run_abortable(rec.job.id.clone()).await;
    let done = h
        .service
        .get(&Access::All, &rec.job.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.job.status(), JobStatus::Completed);
    assert_eq!(done.job.tasks()[0].attempts(), 2);
    assert_eq!(
        std::fs::read(h.files.path().join("out/flaky.bin")).unwrap(),
        data
    );
    let events = events_until_end(&mut rx, &rec.job.id).await;
    assert!(events.iter().any(|e| matches!(
        e.kind,
        JobEventKind::FileFailed {
            will_retry: true,
            ..
        }
    )));
}

#[tokio::test]
async fn cancelling_mid_transfer_stops_it_and_leaves_nothing() {
    let h = Harness::sqlite().await;
    let (stall, _) = h.file("stall.bin", 2_000_000, Behavior::Stall { after: 500_000 });
    let (id, mut rx, runner) = h.run(vec![stall], "c").await;
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        if matches!(e.kind, JobEventKind::FileProgress { .. }) {
            break;
        }
    }
    let cancelled = h.service.cancel(&Access::All, &id).await.unwrap();
    assert_eq!(cancelled.job.status(), JobStatus::Cancelled);
    tokio::time::timeout(Duration::from_secs(5), runner)
        .await
        .unwrap()
        .unwrap();
    let stored = h.store.get(&id).await.unwrap().unwrap();
    assert_eq!(stored.job.status(), JobStatus::Cancelled);
    assert_eq!(stored.job.tasks()[0].status(), TaskStatus::Cancelled);
    let dir = h.files.path().join("c/out");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert!(
        h.service.cancel(&Access::All, &id).await.is_err(),
        "a cancelled job cannot be cancelled again"
    );
}

/// Progress comes from a timer: one interval after a file's bytes begin to
/// move, then at most one per interval. A file done sooner has none; a slow
/// one has one about every interval, counts rising; a stalled one shows how
/// far it got although no byte moves any more.
#[tokio::test]
async fn progress_comes_one_interval_after_the_bytes_begin_and_a_stall_still_shows() {
    let mut h = Harness::sqlite().await;
    let interval = Duration::from_millis(300);
    h.service = service_on(
        h.store.clone(),
        h.files.path().to_path_buf(),
        h.events.clone(),
        JobServiceConfig {
            progress_interval: interval,
            ..fast_config()
        },
    );
    let (small, _) = h.file("small.bin", 100_000, Behavior::Normal);
    let (slow, _) = h.file(
        "slow.bin",
        1_200_000,
        Behavior::Throttled {
            bytes_per_tick: 50_000,
            tick: Duration::from_millis(50),
        },
    );
    let (stall, _) = h.file("stall.bin", 2_000_000, Behavior::Stall { after: 300_000 });
    let (id, mut rx, runner) = h.run(vec![small, slow, stall], "p").await;
    // Per file: when it started, and each progress (when, bytes).
    let mut started = [None; 3];
    let mut progress: [Vec<(tokio::time::Instant, u64)>; 3] = Default::default();
    let mut succeeded = [false; 3];
    while !(succeeded[0] && succeeded[1] && !progress[2].is_empty()) {
        let e = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("the job's events within 20 s")
            .unwrap();
        let now = tokio::time::Instant::now();
        match e.kind {
            JobEventKind::FileStarted { index, .. } => started[index] = Some(now),
            JobEventKind::FileProgress {
                index, bytes_done, ..
            } => progress[index].push((now, bytes_done)),
            JobEventKind::FileSucceeded { index, .. } => succeeded[index] = true,
            JobEventKind::FileFailed { index, .. } => panic!("file {index} failed: {e:?}"),
            _ => {}
        }
    }
    assert!(progress[0].is_empty(), "the small file: {:?}", progress[0]);
    // The slow file (about 1.2 s): first progress no sooner than one
    // interval after its start, then spaced by at least about an interval,
    // counts rising.
    let slow = &progress[1];
    assert!((2..=5).contains(&slow.len()), "{slow:?}");
    let first = slow[0].0 - started[1].unwrap();
    assert!(first >= interval - Duration::from_millis(50), "{first:?}");
    for pair in slow.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= interval - Duration::from_millis(50),
            "{slow:?}"
        );
        assert!(pair[1].1 > pair[0].1, "{slow:?}");
    }
    // The stalled file: one progress with the bytes it got, no more while
    // nothing moves.
    let (at, bytes) = progress[2][0];
    assert!(at - started[2].unwrap() >= interval - Duration::from_millis(50));
    assert!((1..=300_000).contains(&bytes), "{bytes}");
    let quiet = tokio::time::timeout(interval * 3, async {
        loop {
            let e = rx.recv().await.unwrap();
            if let JobEventKind::FileProgress { index: 2, .. } = e.kind {
                return e;
            }
        }
    })
    .await;
    assert!(
        quiet.is_err(),
        "a stalled file repeats no progress: {quiet:?}"
    );
    h.service.cancel(&Access::All, &id).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), runner)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_restart_resumes_unfinished_jobs() {
    let h = Harness::sqlite().await;
    let (a, data_a) = h.file("a.bin", 50_000, Behavior::Normal);
    let (b, data_b) = h.file("b.bin", 60_000, Behavior::Normal);
    let rec = h
        .service
        .submit(SubmitJobRequest {
            files: vec![a, b],
            destination: "r".into(),
            ..SubmitJobRequest::default()
        })
        .await
        .unwrap();
    // The first process died with the job downloading and task 0 running.
    let mut crashed = rec.clone();
    crashed.job.start_downloading().unwrap();
    crashed.job.task_mut(0).unwrap().start().unwrap();
    h.store.save_job(&crashed.update()).await.unwrap();
    h.store
        .replace_tasks(&crashed.job.id, crashed.job.tasks())
        .await
        .unwrap();

    // A new process on the same store and files.
    let fresh = service_on(
        h.store.clone(),
        h.files.path().to_path_buf(),
        BroadcastEvents::new(100),
        fast_config(),
    );
    let unfinished = fresh.unfinished().await.unwrap();
    assert_eq!(unfinished, vec![rec.job.id.clone()]);
    fresh.clone().run_abortable(rec.job.id.clone()).await;
    let done = fresh.get(&Access::All, &rec.job.id).await.unwrap().unwrap();
    assert_eq!(done.job.status(), JobStatus::Completed);
    assert_eq!(
        done.job.tasks()[0].attempts(),
        2,
        "the interrupted task ran again"
    );
    assert_eq!(
        std::fs::read(h.files.path().join("r/out/a.bin")).unwrap(),
        data_a
    );
    assert_eq!(
        std::fs::read(h.files.path().join("r/out/b.bin")).unwrap(),
        data_b
    );
}

#[tokio::test]
async fn an_invalid_job_is_rejected_and_nothing_is_stored() {
    let h = Harness::sqlite().await;
    let (good, _) = h.file("g.bin", 10, Behavior::Normal);
    let mut bad = good.clone();
    bad.key = "../escape".into();
    let err = h
        .service
        .submit(SubmitJobRequest {
            files: vec![good, bad],
            destination: String::new(),
            ..SubmitJobRequest::default()
        })
        .await
        .unwrap_err();
    match err {
        SubmitError::Invalid(e) => assert_eq!(e.field, "files[1].key"),
        other => panic!("{other:?}"),
    }
    let page = h
        .service
        .list(
            &Access::All,
            &JobFilter {
                owner: None,
                limit: 10,
                ..JobFilter::default()
            },
        )
        .await
        .unwrap();
    assert!(page.jobs.is_empty());
}

mod step_functions {
    use super::*;
    use ferry_tests::sfn_endpoint::SfnEndpoint;
    use serde_json::Value;

    async fn harness_with_callback(endpoint: &SfnEndpoint) -> Harness {
        let mut h = Harness::sqlite().await;
        let callback = endpoint.callback();
        h.service = Arc::new(
            build_service(
                h.store.clone(),
                h.files.path().to_path_buf(),
                h.events.clone(),
                fast_config(),
            )
            .with_callback(Arc::new(callback)),
        );
        h
    }

    async fn run_job(h: &Harness, files: Vec<FileRequest>) -> ferry_domain::ports::JobRecord {
        let rec = h
            .service
            .submit(SubmitJobRequest {
                files,
                destination: "sfn".into(),
                task_token: Some("token-abc".into()),
                ..SubmitJobRequest::default()
            })
            .await
            .unwrap();
        h.service.clone().run_abortable(rec.job.id.clone()).await;
        h.store.get(&rec.job.id).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_finished_job_sends_task_success_with_its_summary() {
        let endpoint = SfnEndpoint::start().await.unwrap();
        let h = harness_with_callback(&endpoint).await;
        let (good, _) = h.file("s1.bin", 20_000, Behavior::Normal);
        let (mut bad, _) = h.file("s2.bin", 20_000, Behavior::Normal);
        bad.sha256 = Some("3".repeat(64));
        let done = run_job(&h, vec![good, bad]).await;
        assert_eq!(done.job.status(), JobStatus::CompletedWithErrors);
        assert_eq!(
            done.callback.as_ref().map(ToString::to_string).as_deref(),
            Some("sent task_success")
        );
        let calls = endpoint.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].operation, "SendTaskSuccess");
        assert!(calls[0].signed, "the real SDK signs the call");
        assert_eq!(calls[0].body["taskToken"], "token-abc");
        let output: Value =
            serde_json::from_str(calls[0].body["output"].as_str().unwrap()).unwrap();
        assert_eq!(output["status"], "completed_with_errors");
        assert_eq!(output["files"]["succeeded"], 1);
        assert_eq!(output["files"]["failed"], 1);
        assert_eq!(output["job_id"], done.job.id.as_str());
    }

    #[tokio::test]
    async fn a_failed_job_sends_task_failure_with_error_and_cause() {
        let endpoint = SfnEndpoint::start().await.unwrap();
        let h = harness_with_callback(&endpoint).await;
        let (mut bad, _) = h.file("f.bin", 20_000, Behavior::Normal);
        bad.sha256 = Some("4".repeat(64));
        let done = run_job(&h, vec![bad]).await;
        assert_eq!(done.job.status(), JobStatus::Failed);
        let calls = endpoint.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].operation, "SendTaskFailure");
        assert_eq!(calls[0].body["error"], "ferry.JobFailed");
        assert!(calls[0].body["cause"].as_str().unwrap().contains("failed"));
        assert_eq!(
            done.callback.as_ref().map(ToString::to_string).as_deref(),
            Some("sent task_failure")
        );
    }

    #[tokio::test]
    async fn callbacks_are_retried_and_a_lost_callback_never_loses_the_result() {
        let endpoint = SfnEndpoint::start().await.unwrap();
        let h = harness_with_callback(&endpoint).await;
        endpoint.fail_next(2);
        let (good, _) = h.file("r.bin", 20_000, Behavior::Normal);
        let done = run_job(&h, vec![good]).await;
        assert_eq!(
            done.callback.as_ref().map(ToString::to_string).as_deref(),
            Some("sent task_success")
        );
        assert_eq!(endpoint.calls().len(), 3, "two 500s, then success");

        let endpoint2 = SfnEndpoint::start().await.unwrap();
        let h2 = harness_with_callback(&endpoint2).await;
        endpoint2.fail_next(100);
        let (good, _) = h2.file("r2.bin", 20_000, Behavior::Normal);
        let done = run_job(&h2, vec![good]).await;
        assert_eq!(
            done.job.status(),
            JobStatus::Completed,
            "the job's own result stands"
        );
        assert!(
            done.callback
                .as_ref()
                .map(ToString::to_string)
                .as_deref()
                .unwrap()
                .starts_with("failed:"),
            "{:?}",
            done.callback.as_ref().map(ToString::to_string)
        );
        assert_eq!(endpoint2.calls().len(), 4, "the SDK's 4 attempts");
    }
}

#[tokio::test]
async fn every_event_reaches_the_webhook_signed_and_in_order() {
    use ferry_adapters::events::FanoutEvents;
    use ferry_adapters::webhook::{WebhookConfig, WebhookEvents, signature, signed_content};
    use ferry_tests::recorder::Recorder;
    use hmac::{Hmac, KeyInit, Mac};

    let receiver = Recorder::start().await.unwrap();
    receiver.refuse_next(1);
    let secret = b"webhook-secret".to_vec();
    let mut config = WebhookConfig::new(receiver.url(), secret.clone());
    config.retry.base = Duration::from_millis(10);
    let webhook = WebhookEvents::start(config).unwrap();

    let mut h = Harness::sqlite().await;
    let fanout = FanoutEvents(vec![Arc::new(h.events.clone()), Arc::new(webhook)]);
    let http = PooledHttpClient::new(HttpClientConfig::default()).unwrap();
    h.service = service_over(&h, http, Arc::new(fanout), fast_config());
    let (a, _) = h.file("w1.bin", 30_000, Behavior::Normal);
    let (b, _) = h.file("w2.bin", 40_000, Behavior::Normal);
    let rec = h
        .service
        .submit(SubmitJobRequest {
            files: vec![a, b],
            destination: "hook".into(),
            ..SubmitJobRequest::default()
        })
        .await
        .unwrap();
    h.service.clone().run_abortable(rec.job.id.clone()).await;
    let stored = h.store.events_after(&rec.job.id, 0, 10_000).await.unwrap();

    // Wait for the deliveries (the first one is refused once, then retried).
    let mut delivered = Vec::new();
    for _ in 0..200 {
        delivered = receiver
            .received()
            .into_iter()
            .filter(|r| !r.refused)
            .collect();
        if delivered.len() >= stored.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        delivered.len(),
        stored.len(),
        "one delivery per stored event"
    );
    assert_eq!(receiver.received().iter().filter(|r| r.refused).count(), 1);
    let mut seqs = Vec::new();
    for r in &delivered {
        let sig = r
            .headers
            .get("x-ferry-signature")
            .unwrap()
            .to_str()
            .unwrap();
        let header = |name: &str| r.headers.get(name).unwrap().to_str().unwrap().to_owned();
        let (delivery, timestamp) = (header("x-ferry-delivery"), header("x-ferry-timestamp"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let ts: u64 = timestamp.parse().unwrap();
        assert!(now.abs_diff(ts) < 300, "a fresh timestamp: {ts} vs {now}");
        // Independent check with the hmac crate: delivery id, timestamp and
        // body are all covered.
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&secret).unwrap();
        mac.update(format!("{delivery}.{timestamp}.").as_bytes());
        mac.update(&r.body);
        assert_eq!(
            sig,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        // The same body under another delivery id does not verify.
        let forged = format!("{}x", delivery);
        assert_ne!(
            sig,
            signature(&secret, &signed_content(&forged, ts, &r.body))
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            delivery,
            format!("{}-{}", v["job_id"].as_str().unwrap(), v["seq"])
        );
        assert_eq!(v["job_id"], rec.job.id.as_str());
        assert_eq!(
            r.headers.get("x-ferry-event").unwrap().to_str().unwrap(),
            v["type"].as_str().unwrap()
        );
        seqs.push(v["seq"].as_u64().unwrap());
    }
    assert_eq!(
        seqs,
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        "in order, none missing"
    );
}

mod watching {
    use super::*;
    use ferry_application::jobs::WatchItem;
    use futures::StreamExt;

    /// A watcher that is not polled while a job runs falls behind a tiny
    /// live buffer; when it reads again it catches up from the store: every
    /// lifecycle event, in order, with superseded progress coalesced.
    #[tokio::test]
    async fn a_watcher_that_falls_behind_catches_up_with_progress_coalesced() {
        let mut h = Harness::sqlite().await;
        h.service = service_on(
            h.store.clone(),
            h.files.path().to_path_buf(),
            h.events.clone(),
            JobServiceConfig {
                progress_interval: Duration::ZERO,
                live_capacity: 16,
                ..fast_config()
            },
        );
        let n = 6;
        let files: Vec<FileRequest> = (0..n)
            .map(|i| h.file(&format!("w{i}.bin"), 1_500_000, Behavior::Normal).0)
            .collect();
        let rec = h
            .service
            .submit(SubmitJobRequest {
                files,
                destination: "watch".into(),
                ..SubmitJobRequest::default()
            })
            .await
            .unwrap();
        let id = rec.job.id.clone();
        let watch = h.service.watch(&Access::All, &id, None).await.unwrap();
        // Not polled while the job runs.
        h.service.clone().run_abortable(id.clone()).await;
        let items: Vec<WatchItem> = tokio::time::timeout(Duration::from_secs(30), watch.collect())
            .await
            .unwrap();
        let WatchItem::Snapshot { seq: first_seq, .. } = &items[0] else {
            panic!("a snapshot comes first: {:?}", items[0]);
        };
        let events: Vec<&ferry_domain::ports::JobEvent> = items[1..]
            .iter()
            .map(|i| match i {
                WatchItem::Event(e) => e,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let stored = h
            .store
            .events_after(&id, *first_seq, 100_000)
            .await
            .unwrap();
        assert_eq!(
            events
                .iter()
                .filter(|e| e.kind.is_lifecycle())
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            stored
                .iter()
                .filter(|e| e.kind.is_lifecycle())
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            "every lifecycle event, in order"
        );
        assert!(events.windows(2).all(|w| w[1].seq > w[0].seq));
        assert!(
            events.len() < stored.len(),
            "{} of {}",
            events.len(),
            stored.len()
        );
        assert!(
            h.service
                .watch_stats()
                .coalesced
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
        assert!(events.last().unwrap().kind.is_terminal());
    }

    #[tokio::test]
    async fn watching_an_unknown_job_is_an_error_and_a_finished_job_ends_after_its_snapshot() {
        let h = Harness::sqlite().await;
        let missing = JobId::parse("nope").unwrap();
        assert!(h.service.watch(&Access::All, &missing, None).await.is_err());
        let (f, _) = h.file("done.bin", 10_000, Behavior::Normal);
        let rec = h
            .service
            .submit(SubmitJobRequest {
                files: vec![f],
                destination: "done".into(),
                ..SubmitJobRequest::default()
            })
            .await
            .unwrap();
        tokio::time::timeout(
            Duration::from_secs(20),
            h.service.clone().run_abortable(rec.job.id.clone()),
        )
        .await
        .expect("the job runs to its end");
        let items: Vec<WatchItem> = tokio::time::timeout(
            Duration::from_secs(10),
            h.service
                .watch(&Access::All, &rec.job.id, None)
                .await
                .unwrap()
                .collect(),
        )
        .await
        .expect("a finished job's watch ends after its snapshot");
        assert_eq!(items.len(), 1, "{items:?}");
        let all: Vec<WatchItem> = tokio::time::timeout(
            Duration::from_secs(10),
            h.service
                .watch(&Access::All, &rec.job.id, Some(0))
                .await
                .unwrap()
                .collect(),
        )
        .await
        .expect("a replay ends with the terminal event");
        let stored = h.store.events_after(&rec.job.id, 0, 1000).await.unwrap();
        assert_eq!(all.len(), stored.len() + 1, "a replay is never coalesced");
    }
}

/// A memory gauge that always reads full.
#[derive(Debug)]
struct FullBudget;

impl ferry_domain::ports::MemoryGaugePort for FullBudget {
    fn in_use(&self) -> u64 {
        100
    }
    fn total(&self) -> u64 {
        100
    }
}

#[tokio::test]
async fn heavy_pressure_runs_a_jobs_files_one_at_a_time() {
    use ferry_application::{Backpressure, BackpressureConfig};
    // Budget full (40 points) and slow chunks (30): HEAVY, which admits
    // one transfer at a time although the job and the service allow 4
    // (without the gate, all 4 run at once: checked by hand).
    let gate = Arc::new(Backpressure::new(
        Arc::new(FullBudget),
        BackpressureConfig {
            max_active: 4,
            ..BackpressureConfig::default()
        },
    ));
    for _ in 0..ferry_application::backpressure::LATENCY_WINDOW {
        gate.record_chunk(Duration::from_secs(1));
    }
    let h = Harness::sqlite().await;
    let service = service_on(
        h.store.clone(),
        h.files.path().to_path_buf(),
        h.events.clone(),
        JobServiceConfig {
            per_job_concurrency: 4,
            global_concurrency: 4,
            pressure: Some(gate.clone()),
            ..fast_config()
        },
    );
    let files: Vec<FileRequest> = (0..4)
        .map(|i| {
            h.file(
                &format!("p{i}.bin"),
                300_000,
                Behavior::Throttled {
                    bytes_per_tick: 100_000,
                    tick: Duration::from_millis(50),
                },
            )
            .0
        })
        .collect();
    let mut rx = h.events.subscribe();
    let record = service
        .submit(SubmitJobRequest {
            files,
            destination: "pressure".into(),
            ..SubmitJobRequest::default()
        })
        .await
        .unwrap();
    let id = record.job.id.clone();
    service.clone().run_abortable(id.clone()).await;
    let events = events_until_end(&mut rx, &id).await;
    // Never two files running at once: each start follows the previous end.
    let mut running = 0i32;
    let mut most = 0;
    for e in &events {
        match e.kind {
            JobEventKind::FileStarted { .. } => running += 1,
            JobEventKind::FileSucceeded { .. } | JobEventKind::FileFailed { .. } => running -= 1,
            _ => {}
        }
        most = most.max(running);
    }
    assert_eq!(most, 1, "HEAVY admits one transfer at a time");
    let done = service.get(&Access::All, &id).await.unwrap().unwrap();
    assert_eq!(done.job.status(), JobStatus::Completed);
    let report = service.pressure().unwrap();
    assert_eq!(report.level, ferry_domain::PressureLevel::Heavy);
    assert_eq!(report.active, 0, "every admission was given back");
}

/// One retry loop: a source that answers 503 forever costs one request per
/// attempt the policy allows (the source client retries before the body
/// with the job's policy and marks the error exhausted, so the task does
/// not retry it again), counted at the origin.
#[tokio::test]
async fn a_source_that_always_answers_503_costs_one_request_per_allowed_attempt() {
    let mut h = Harness::sqlite().await;
    let config = fast_config();
    let http = PooledHttpClient::new(HttpClientConfig {
        retry: config.retry,
        ..HttpClientConfig::default()
    })
    .unwrap();
    h.service = service_over(&h, http, Arc::new(h.events.clone()), config.clone());
    let (f, _) = h.file(
        "down.bin",
        10_000,
        Behavior::FailFirst {
            times: usize::MAX,
            status: 503,
        },
    );
    let rec = h
        .service
        .submit(SubmitJobRequest {
            files: vec![f],
            destination: String::new(),
            ..SubmitJobRequest::default()
        })
        .await
        .unwrap();
    h.service.clone().run_abortable(rec.job.id.clone()).await;
    let done = h
        .service
        .get(&Access::All, &rec.job.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.job.status(), JobStatus::Failed);
    let task = &done.job.tasks()[0];
    assert_eq!(task.status(), TaskStatus::Failed);
    assert_eq!(
        task.attempts(),
        1,
        "the task did not retry what the client gave up on"
    );
    let served = h
        .origin
        .requests()
        .iter()
        .filter(|r| r.path == "/down.bin")
        .count();
    assert_eq!(served, config.retry.attempts as usize);
}

/// The all-jobs watch of an owner holds that owner's jobs and events only;
/// an admin's holds every job's.
#[tokio::test]
async fn an_owners_all_jobs_watch_shows_only_that_owners_jobs() {
    use ferry_application::jobs::WatchItem;
    use futures::StreamExt;
    let h = Harness::sqlite().await;
    let (a, _) = h.file("owned-a.bin", 50_000, Behavior::Normal);
    let (b, _) = h.file("owned-b.bin", 50_000, Behavior::Normal);
    let alice = Access::Owner("alice".into());
    let mut alice_watch = Box::pin(h.service.watch_all(&alice).await.unwrap());
    let mut admin_watch = Box::pin(h.service.watch_all(&Access::All).await.unwrap());
    for w in [&mut alice_watch, &mut admin_watch] {
        assert!(matches!(w.next().await, Some(WatchItem::Jobs(jobs)) if jobs.is_empty()));
    }
    let submit = |file: FileRequest, owner: &str| SubmitJobRequest {
        files: vec![file],
        destination: format!("owned-{owner}"),
        owner: Some(owner.into()),
        ..SubmitJobRequest::default()
    };
    let bobs = h.service.submit(submit(b, "bob")).await.unwrap();
    h.service.clone().run_abortable(bobs.job.id.clone()).await;
    let alices = h.service.submit(submit(a, "alice")).await.unwrap();
    h.service.clone().run_abortable(alices.job.id.clone()).await;
    // Alice's stream: her job's events to its end, none of Bob's.
    let mut seen = Vec::new();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(20), alice_watch.next())
            .await
            .unwrap()
            .unwrap();
        let WatchItem::Event(e) = item else {
            panic!("only events after the snapshot");
        };
        let end = e.kind.is_terminal();
        seen.push(e.job_id.clone());
        if end {
            break;
        }
    }
    assert!(seen.iter().all(|id| *id == alices.job.id), "{seen:?}");
    assert!(
        seen.len() >= 3,
        "job_created, file events, job_completed: {seen:?}"
    );
    // The admin's stream saw Bob's job first.
    let item = tokio::time::timeout(Duration::from_secs(20), admin_watch.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(item, WatchItem::Event(e) if e.job_id == bobs.job.id));
}
