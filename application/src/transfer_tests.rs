#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Mutex;
use std::time::Duration;

use ferry_domain::ports::process::MockProcessFilePort;
use ferry_domain::ports::storage::MockFileStoragePort;
use ferry_domain::ports::{AttemptRefused, AttemptSlot, DownloadError};
use ferry_domain::{Checksum, ChecksumAlgorithm, SourceUrl};

use super::*;

fn command(with_id: bool) -> ProcessFileCommand {
    let mut c = ProcessFileCommand::new(
        SourceUrl::parse("http://h/a.bin").unwrap(),
        ObjectKey::parse("a.bin").unwrap(),
    );
    if with_id {
        c.transfer_id = Some(TransferId::parse("copy-abc").unwrap());
    }
    c
}

fn result() -> ProcessFileResult {
    ProcessFileResult {
        key: ObjectKey::parse("a.bin").unwrap(),
        location: "/x/a.bin".into(),
        bytes: 3,
        sha256: Checksum::new(ChecksumAlgorithm::Sha256, &"ab".repeat(32)).unwrap(),
        md5: None,
        duration: Duration::from_millis(1),
        final_url: "http://h/a.bin".into(),
        resumed_from: None,
        skipped: false,
    }
}

fn status(code: u16, exhausted: bool) -> ProcessFileError {
    ProcessFileError::Source(DownloadError::Status {
        url: "http://h/a.bin".into(),
        status: code,
        exhausted,
    })
}

fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        base: Duration::from_millis(100),
        max: Duration::from_secs(1),
        deadline: Duration::from_secs(60),
    }
}

/// Records what the transfer told it; refuses attempt `refuse_at`.
#[derive(Default)]
struct Recorder {
    started: Mutex<Vec<u32>>,
    failed: Mutex<Vec<(u32, bool)>>,
    succeeded: Mutex<Vec<u32>>,
    refuse_at: Option<u32>,
}

#[async_trait]
impl AttemptObserver for Recorder {
    async fn starting(&self, attempt: u32) -> Result<AttemptSlot, AttemptRefused> {
        if self.refuse_at == Some(attempt) {
            return Err(AttemptRefused {
                attempt,
                reason: "cancelled".into(),
            });
        }
        self.started.lock().unwrap().push(attempt);
        Ok(Box::new(()))
    }

    async fn succeeded(&self, attempt: u32, _result: &ProcessFileResult) {
        self.succeeded.lock().unwrap().push(attempt);
    }

    async fn failed(&self, attempt: u32, _error: &ProcessFileError, will_retry: bool) {
        self.failed.lock().unwrap().push((attempt, will_retry));
    }
}

/// A ProcessFile that fails with `errors` in turn, then succeeds; counts
/// abandons.
fn scripted(errors: Vec<ProcessFileError>, abandons: usize) -> MockProcessFilePort {
    let mut process = MockProcessFilePort::new();
    let script = Mutex::new(errors.into_iter());
    process
        .expect_process()
        .returning(move |_| match script.lock().unwrap().next() {
            Some(e) => Err(e),
            None => Ok(result()),
        });
    process
        .expect_abandon()
        .times(abandons)
        .returning(|_| Ok(()));
    process
}

fn transfer(process: MockProcessFilePort, attempts: u32) -> Transfer {
    Transfer::new(
        Arc::new(process),
        Arc::new(MockFileStoragePort::new()),
        policy(attempts),
    )
}

#[tokio::test(start_paused = true)]
async fn succeeds_at_once_without_retry() {
    let t = transfer(scripted(vec![], 0), 3);
    let seen = Recorder::default();
    let r = t.run(command(true), 0, &seen).await.unwrap();
    assert_eq!(r.bytes, 3);
    assert_eq!(*seen.started.lock().unwrap(), vec![1]);
    assert!(seen.failed.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_then_succeed() {
    let t = transfer(scripted(vec![status(503, false), status(503, false)], 0), 3);
    let seen = Recorder::default();
    t.run(command(true), 0, &seen).await.unwrap();
    assert_eq!(*seen.started.lock().unwrap(), vec![1, 2, 3]);
    assert_eq!(*seen.failed.lock().unwrap(), vec![(1, true), (2, true)]);
    assert_eq!(*seen.succeeded.lock().unwrap(), vec![3]);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_cap_and_abandon() {
    let errors = vec![status(503, false), status(503, false), status(503, false)];
    let t = transfer(scripted(errors, 1), 3);
    let seen = Recorder::default();
    let e = t.run(command(true), 0, &seen).await.unwrap_err();
    assert!(matches!(e, TransferError::Failed(_)), "{e:?}");
    assert_eq!(
        *seen.failed.lock().unwrap(),
        vec![(1, true), (2, true), (3, false)]
    );
}

#[tokio::test(start_paused = true)]
async fn prior_attempts_count_toward_the_cap() {
    let t = transfer(scripted(vec![status(503, false)], 1), 3);
    let seen = Recorder::default();
    // Two attempts were made by an earlier process: this is the last.
    assert!(t.run(command(true), 2, &seen).await.is_err());
    assert_eq!(*seen.failed.lock().unwrap(), vec![(1, false)]);
}

#[tokio::test(start_paused = true)]
async fn what_an_adapter_gave_up_on_is_not_retried_again() {
    let t = transfer(scripted(vec![status(503, true)], 1), 5);
    let seen = Recorder::default();
    assert!(t.run(command(true), 0, &seen).await.is_err());
    assert_eq!(*seen.started.lock().unwrap(), vec![1]);
    assert_eq!(*seen.failed.lock().unwrap(), vec![(1, false)]);
}

#[tokio::test(start_paused = true)]
async fn client_errors_fail_at_once_and_without_an_id_nothing_is_abandoned() {
    let t = transfer(scripted(vec![status(404, false)], 0), 5);
    let seen = Recorder::default();
    assert!(t.run(command(false), 0, &seen).await.is_err());
    assert_eq!(*seen.failed.lock().unwrap(), vec![(1, false)]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_attempt_stops_the_transfer() {
    let t = transfer(scripted(vec![status(503, false)], 0), 5);
    let seen = Recorder {
        refuse_at: Some(2),
        ..Recorder::default()
    };
    let e = t.run(command(true), 0, &seen).await.unwrap_err();
    assert!(matches!(e, TransferError::Refused(_)), "{e:?}");
}

#[tokio::test(start_paused = true)]
async fn retries_wait_within_the_policy() {
    let t = transfer(scripted(vec![status(503, false)], 0), 3);
    let seen = Recorder::default();
    let before = Instant::now();
    t.run(command(true), 0, &seen).await.unwrap();
    // Full jitter under the first ceiling (100 ms).
    assert!(before.elapsed() <= Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_storage_request_the_sdk_already_retried_is_not_retried_again() {
    let exhausted = ProcessFileError::Storage(ferry_domain::ports::StorageError::Unavailable {
        location: "s3://b/k".into(),
        reason: "SlowDown".into(),
        exhausted: true,
    });
    let t = transfer(scripted(vec![exhausted], 1), 5);
    let seen = Recorder::default();
    assert!(t.run(command(true), 0, &seen).await.is_err());
    assert_eq!(*seen.failed.lock().unwrap(), vec![(1, false)]);
    let fresh = ProcessFileError::Storage(ferry_domain::ports::StorageError::Unavailable {
        location: "s3://b/k".into(),
        reason: "reset".into(),
        exhausted: false,
    });
    let t = transfer(scripted(vec![fresh], 0), 5);
    let seen = Recorder::default();
    t.run(command(true), 0, &seen).await.unwrap();
    assert_eq!(*seen.failed.lock().unwrap(), vec![(1, true)]);
}
