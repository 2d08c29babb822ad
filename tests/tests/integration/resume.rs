//! Resume from checkpoints, in one process: the same assertions for both
//! storages (directory, Garage S3), as the storage conformance suite does.
//! A transfer fails for good mid-way (no in-flight retries), its staged
//! bytes and checkpoint stay, and the next call continues from the
//! checkpoint; a changed source, vanished staged bytes or an abandon start
//! over or clean up. The crash harness (bin/tests/crash.rs) does the same
//! across `kill -9`.

use std::sync::Arc;
use std::time::Duration;

use ferry_adapters::checkpoint::CheckpointFiles;
use ferry_adapters::filesystem::TempFileState;
use ferry_adapters::s3::MultipartState;
use ferry_adapters::s3::{S3Storage, S3StorageConfig};
use ferry_adapters::{FilesystemStorage, SourceRouter};
use ferry_application::{ProcessFile, ProcessFileConfig, chunk_size_for};
use ferry_domain::ports::{
    CheckpointStorePort, FileStoragePort, ProcessFileCommand, ProcessFilePort, StartGate,
};
use ferry_domain::{ObjectKey, TransferId};
use ferry_tests::garage::{garage, service, unique_prefix};
use ferry_tests::origin::{Behavior, Origin};
use ferry_tests::told::Told;
use ferry_tests::{command, generate, sha256_hex};

use crate::storage_fs::temp_files;
use crate::storage_s3::incomplete_uploads;

const MIB: usize = 1024 * 1024;
const LEN: usize = 24 * MIB;
const PART: u64 = 5 * MIB as u64;

/// Which storage the suite runs against, and how to see leftovers.
enum Kind {
    Dir(tempfile::TempDir),
    S3 { prefix: String },
}

struct Bench {
    origin: Origin,
    kind: Kind,
    storage: Arc<dyn FileStoragePort>,
    states: tempfile::TempDir,
    checkpoints: Arc<CheckpointFiles>,
}

impl Bench {
    async fn new(s3: bool) -> Self {
        let origin = Origin::start().await.unwrap();
        let states = tempfile::tempdir().unwrap();
        let checkpoints = Arc::new(CheckpointFiles::open(states.path().join("state")).unwrap());
        let (kind, storage): (Kind, Arc<dyn FileStoragePort>) = if s3 {
            let prefix = unique_prefix("resume");
            let storage = S3Storage::new(
                service(&garage().endpoint).await,
                &garage().bucket,
                &prefix,
                S3StorageConfig {
                    part_size: PART,
                    ..S3StorageConfig::default()
                },
            );
            (Kind::S3 { prefix }, Arc::new(storage))
        } else {
            let dir = tempfile::tempdir().unwrap();
            let storage = FilesystemStorage::new(dir.path()).unwrap();
            (Kind::Dir(dir), Arc::new(storage))
        };
        Self {
            origin,
            kind,
            storage,
            states,
            checkpoints,
        }
    }

    /// ProcessFile with checkpoints and no in-flight resume: a broken body
    /// fails the call, as a crash would end it.
    fn use_case(&self) -> ProcessFile {
        let http = ferry_tests::test_http_client(Duration::from_secs(2));
        ProcessFile::new(
            Arc::new(SourceRouter::new(Arc::new(http), None)),
            self.storage.clone(),
            ProcessFileConfig {
                resume_attempts: 0,
                checkpoints: Some(self.checkpoints.clone()),
                ..ProcessFileConfig::default()
            },
        )
    }

    /// Serves `seed`'s bytes at `path`, breaking once after 12 MiB, and runs
    /// a transfer that fails there and stays suspended at its checkpoint.
    async fn fail_once(&self, path: &str, seed: u64, id: &str) -> (Vec<u8>, ProcessFile) {
        let data = generate(LEN, seed);
        self.origin.serve(
            path,
            data.clone(),
            Behavior::ResetAfter {
                after: 12 * MIB,
                times: 1,
            },
        );
        let use_case = self.use_case();
        assert!(use_case.process(self.command(path, id)).await.is_err());
        assert_eq!(self.leftovers().await, 1, "suspended, not discarded");
        (data, use_case)
    }

    fn command(&self, path: &str, id: &str) -> ProcessFileCommand {
        let mut c = command(&self.origin.url(path), "out/file.bin");
        c.transfer_id = Some(TransferId::parse(id).unwrap());
        c
    }

    /// Bytes staged but not committed: temp files or incomplete uploads.
    async fn leftovers(&self) -> usize {
        match &self.kind {
            Kind::Dir(dir) => temp_files(dir.path()).len(),
            Kind::S3 { prefix } => incomplete_uploads(prefix).await,
        }
    }

    async fn stored_sha256(&self) -> Option<String> {
        use futures::StreamExt;
        let key = ObjectKey::parse("out/file.bin").unwrap();
        let mut body = self.storage.read(&key).await.ok()?;
        let mut all = Vec::new();
        while let Some(chunk) = body.next().await {
            all.extend_from_slice(&chunk.unwrap());
        }
        Some(sha256_hex(&all))
    }

    /// The offset of the last range request the origin saw for `path`.
    fn last_range_start(&self, path: &str) -> Option<u64> {
        let last = self
            .origin
            .requests()
            .into_iter()
            .rfind(|r| r.path == path)?;
        let range = last.range?;
        range
            .strip_prefix("bytes=")?
            .trim_end_matches('-')
            .parse()
            .ok()
    }

    fn state_files(&self) -> usize {
        std::fs::read_dir(self.states.path().join("state"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))
            })
            .count()
    }
}

/// The most a resume may fetch again, per storage: one part (S3) or two
/// checkpoint intervals (directory: 5 chunks, at least 4 MiB apart, fsynced
/// in the background).
fn bound(s3: bool) -> u64 {
    if s3 {
        PART
    } else {
        2 * (5 * chunk_size_for(Some(LEN as u64)) as u64).max(4 << 20)
    }
}

async fn resumes_after_a_failure(s3: bool) {
    let b = Bench::new(s3).await;
    let data = generate(LEN, 61);
    let cut = 13 * MIB;
    b.origin.serve(
        "/f.bin",
        data.clone(),
        Behavior::ResetAfter {
            after: cut,
            times: 1,
        },
    );
    let use_case = b.use_case();
    let err = use_case
        .process(b.command("/f.bin", "t-resume"))
        .await
        .unwrap_err();
    assert!(err.class().is_retryable(), "{err}");
    // Suspended: the staged bytes and the checkpoint are there, nothing is
    // visible.
    assert!(b.stored_sha256().await.is_none());
    assert_eq!(b.state_files(), 1);
    assert_eq!(b.leftovers().await, 1);
    let checkpoint = b
        .checkpoints
        .load(&TransferId::parse("t-resume").unwrap())
        .await
        .unwrap()
        .unwrap();
    let committed = checkpoint.committed();
    assert!(
        committed > 0 && committed <= cut as u64 && cut as u64 - committed <= bound(s3),
        "checkpoint at {committed} for a cut at {cut}"
    );
    if s3 {
        let state = MultipartState::from_staged(&checkpoint.staged).unwrap();
        assert_eq!(state.parts.len(), 2);
    } else {
        TempFileState::from_staged(&checkpoint.staged).unwrap();
    }

    let told = Arc::new(Told::default());
    let mut again = b.command("/f.bin", "t-resume");
    again.progress = told.clone();
    let result = use_case.process(again).await.unwrap();
    assert_eq!(result.sha256.hex(), sha256_hex(&data));
    assert_eq!(result.resumed_from, Some(committed));
    assert_eq!(told.resumed(), vec![committed]);
    assert_eq!(b.last_range_start("/f.bin"), Some(committed));
    let last = b
        .origin
        .requests()
        .into_iter()
        .rfind(|r| r.path == "/f.bin");
    assert!(
        last.and_then(|r| r.if_range).is_some(),
        "resumed with If-Range"
    );
    assert_eq!(b.stored_sha256().await, Some(sha256_hex(&data)));
    assert_eq!(b.leftovers().await, 0, "nothing staged is left");
    assert_eq!(b.state_files(), 0, "the checkpoint is gone");
}

async fn restarts_when_the_source_changed(s3: bool) {
    let b = Bench::new(s3).await;
    let (_, use_case) = b.fail_once("/c.bin", 62, "t-changed").await;
    let new = generate(LEN, 63);
    b.origin.change("/c.bin", new.clone());

    let told = Arc::new(Told::default());
    let mut again = b.command("/c.bin", "t-changed");
    again.progress = told.clone();
    let result = use_case.process(again).await.unwrap();
    assert_eq!(result.resumed_from, None, "started from zero");
    assert_eq!(
        result.sha256.hex(),
        sha256_hex(&new),
        "never a mixed object"
    );
    let reasons = told.restarted();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("source changed"), "{reasons:?}");
    assert_eq!(b.stored_sha256().await, Some(sha256_hex(&new)));
    assert_eq!(b.leftovers().await, 0, "the stale upload/temp file is gone");
    assert_eq!(b.state_files(), 0);
}

async fn abandon_discards_everything(s3: bool) {
    let b = Bench::new(s3).await;
    b.fail_once("/a.bin", 64, "t-abandon").await;
    let use_case = b.use_case();
    use_case
        .abandon(&TransferId::parse("t-abandon").unwrap())
        .await
        .unwrap();
    assert_eq!(b.leftovers().await, 0);
    assert_eq!(b.state_files(), 0);
    assert!(b.stored_sha256().await.is_none());
}

async fn restarts_when_the_staged_bytes_are_gone(s3: bool) {
    let b = Bench::new(s3).await;
    let (data, use_case) = b.fail_once("/g.bin", 65, "t-gone").await;
    // Somebody removed the staged bytes (lifecycle rule, manual cleanup).
    let checkpoint = b
        .checkpoints
        .load(&TransferId::parse("t-gone").unwrap())
        .await
        .unwrap()
        .unwrap();
    b.storage
        .discard(&checkpoint.key, &checkpoint.staged)
        .await
        .unwrap();
    let result = use_case
        .process(b.command("/g.bin", "t-gone"))
        .await
        .unwrap();
    assert_eq!(result.resumed_from, None);
    assert_eq!(result.sha256.hex(), sha256_hex(&data));
    assert_eq!(b.leftovers().await, 0);
    assert_eq!(b.state_files(), 0);
}

async fn non_retryable_failures_leave_nothing(s3: bool) {
    let b = Bench::new(s3).await;
    let data = generate(LEN, 66);
    b.origin.serve("/m.bin", data, Behavior::Normal);
    let use_case = b.use_case();
    let mut cmd = b.command("/m.bin", "t-mismatch");
    cmd.expected = vec![ferry_domain::Checksum::sha256(&"0".repeat(64)).unwrap()];
    let err = use_case.process(cmd).await.unwrap_err();
    assert_eq!(err.code(), "checksum_mismatch");
    assert_eq!(b.leftovers().await, 0);
    assert_eq!(b.state_files(), 0);
}

#[tokio::test]
async fn directory_resumes_after_a_failure() {
    resumes_after_a_failure(false).await;
}

#[tokio::test]
async fn s3_resumes_after_a_failure() {
    resumes_after_a_failure(true).await;
}

#[tokio::test]
async fn directory_restarts_when_the_source_changed() {
    restarts_when_the_source_changed(false).await;
}

#[tokio::test]
async fn s3_restarts_when_the_source_changed() {
    restarts_when_the_source_changed(true).await;
}

#[tokio::test]
async fn directory_abandon_discards_everything() {
    abandon_discards_everything(false).await;
}

#[tokio::test]
async fn s3_abandon_discards_everything() {
    abandon_discards_everything(true).await;
}

#[tokio::test]
async fn directory_restarts_when_the_staged_bytes_are_gone() {
    restarts_when_the_staged_bytes_are_gone(false).await;
}

#[tokio::test]
async fn s3_restarts_when_the_staged_bytes_are_gone() {
    restarts_when_the_staged_bytes_are_gone(true).await;
}

#[tokio::test]
async fn directory_non_retryable_failures_leave_nothing() {
    non_retryable_failures_leave_nothing(false).await;
}

#[tokio::test]
async fn s3_non_retryable_failures_leave_nothing() {
    non_retryable_failures_leave_nothing(true).await;
}

/// A source that hangs mid-body is detected by the read-idle timeout (a
/// transient error) and re-read from the exact offset, in flight, with the
/// checkpointed transfer still correct.
#[tokio::test]
async fn a_stalled_source_is_resumed_from_the_exact_offset() {
    let b = Bench::new(false).await;
    let data = generate(LEN, 67);
    b.origin.serve(
        "/s.bin",
        data.clone(),
        Behavior::StallFirstRanged {
            times: 1,
            after: 9 * MIB,
        },
    );
    let http = ferry_tests::test_http_client(Duration::from_millis(300));
    let use_case = ProcessFile::new(
        Arc::new(SourceRouter::new(Arc::new(http), None)),
        b.storage.clone(),
        ProcessFileConfig {
            checkpoints: Some(b.checkpoints.clone()),
            ..ProcessFileConfig::default()
        },
    );
    let result = use_case
        .process(b.command("/s.bin", "t-stall"))
        .await
        .unwrap();
    assert_eq!(result.sha256.hex(), sha256_hex(&data));
    assert_eq!(b.last_range_start("/s.bin"), Some(9 * MIB as u64));
    assert_eq!(b.leftovers().await, 0);
    assert_eq!(b.state_files(), 0);
}

/// Counts what a transfer asks of its checkpoint store.
#[derive(Debug)]
struct Counting {
    inner: Arc<CheckpointFiles>,
    loads: std::sync::atomic::AtomicUsize,
    saves: std::sync::atomic::AtomicUsize,
    removes: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl CheckpointStorePort for Counting {
    async fn load(
        &self,
        id: &TransferId,
    ) -> Result<Option<ferry_domain::Checkpoint>, ferry_domain::ports::CheckpointError> {
        self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.load(id).await
    }
    async fn save(
        &self,
        id: &TransferId,
        checkpoint: &ferry_domain::Checkpoint,
    ) -> Result<(), ferry_domain::ports::CheckpointError> {
        self.saves.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.save(id, checkpoint).await
    }
    async fn remove(&self, id: &TransferId) -> Result<(), ferry_domain::ports::CheckpointError> {
        self.removes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.remove(id).await
    }
    async fn list(
        &self,
    ) -> Result<Vec<ferry_domain::ports::ListedCheckpoint>, ferry_domain::ports::CheckpointError>
    {
        self.inner.list().await
    }
}

impl Bench {
    /// ProcessFile (with in-flight resumes) on a checkpoint store that
    /// counts what it is asked.
    fn counted(&self) -> (Arc<Counting>, ProcessFile) {
        let counting = Arc::new(Counting {
            inner: self.checkpoints.clone(),
            loads: 0.into(),
            saves: 0.into(),
            removes: 0.into(),
        });
        let http = ferry_tests::test_http_client(Duration::from_secs(2));
        let use_case = ProcessFile::new(
            Arc::new(SourceRouter::new(Arc::new(http), None)),
            self.storage.clone(),
            ProcessFileConfig {
                checkpoints: Some(counting.clone()),
                ..ProcessFileConfig::default()
            },
        );
        (counting, use_case)
    }
}

/// A file smaller than one checkpoint interval (or part) never reaches a
/// checkpoint: it costs the checkpoint store nothing, not even a removal;
/// a large one is checkpointed and its checkpoint removed at the end.
async fn small_files_cost_the_checkpoint_store_nothing(s3: bool) {
    use std::sync::atomic::Ordering::SeqCst;
    let b = Bench::new(s3).await;
    let (counting, use_case) = b.counted();
    let small = generate(100 * 1024, 68);
    b.origin
        .serve("/small.bin", small.clone(), Behavior::Normal);
    let result = use_case
        .process(b.command("/small.bin", "t-small"))
        .await
        .unwrap();
    assert_eq!(result.sha256.hex(), sha256_hex(&small));
    assert_eq!(counting.saves.load(SeqCst), 0, "no checkpoint saved");
    assert_eq!(counting.removes.load(SeqCst), 0, "nothing to remove");

    let large = generate(LEN, 69);
    b.origin
        .serve("/large.bin", large.clone(), Behavior::Normal);
    let result = use_case
        .process(b.command("/large.bin", "t-large"))
        .await
        .unwrap();
    assert_eq!(result.sha256.hex(), sha256_hex(&large));
    assert!(counting.saves.load(SeqCst) >= 2, "checkpointed on the way");
    assert_eq!(counting.removes.load(SeqCst), 1, "and cleared at the end");
    assert_eq!(b.state_files(), 0);
    assert_eq!(b.leftovers().await, 0);
}

#[tokio::test]
async fn directory_small_files_cost_the_checkpoint_store_nothing() {
    small_files_cost_the_checkpoint_store_nothing(false).await;
}

#[tokio::test]
async fn s3_small_files_cost_the_checkpoint_store_nothing() {
    small_files_cost_the_checkpoint_store_nothing(true).await;
}

/// A start gate that answers `durable` once opened, counting the askers.
struct Gate {
    asked: std::sync::atomic::AtomicUsize,
    open: tokio::sync::watch::Sender<Option<bool>>,
}

#[async_trait::async_trait]
impl StartGate for Gate {
    async fn durable(&self) -> bool {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut rx = self.open.subscribe();
        let answer = *rx.wait_for(Option::is_some).await.unwrap();
        answer.unwrap()
    }
}

/// A transfer that never started (`fresh_start`) looks up no checkpoint;
/// its first checkpoint waits for the gate (the start's commit), and none
/// is saved if the gate says the start was never recorded.
async fn a_fresh_start_checkpoints_only_after_its_start_is_durable(s3: bool) {
    use std::sync::atomic::Ordering::SeqCst;
    let b = Bench::new(s3).await;
    let (counting, use_case) = b.counted();
    let use_case = Arc::new(use_case);
    let data = generate(LEN, 70);
    b.origin.serve("/fresh.bin", data.clone(), Behavior::Normal);
    let gate = |answer: Option<bool>| {
        Arc::new(Gate {
            asked: 0.into(),
            open: tokio::sync::watch::channel(answer).0,
        })
    };

    // The start's commit failed: the copy goes on, with no checkpoint.
    let refused = gate(Some(false));
    let mut cmd = b.command("/fresh.bin", "t-fresh-1");
    cmd.fresh_start = Some(refused.clone());
    let result = use_case.process(cmd).await.unwrap();
    assert_eq!(result.sha256.hex(), sha256_hex(&data));
    assert!(refused.asked.load(SeqCst) >= 1, "the gate was asked");
    assert_eq!(counting.loads.load(SeqCst), 0, "no lookup");
    assert_eq!(counting.saves.load(SeqCst), 0, "no checkpoint saved");
    assert_eq!(counting.removes.load(SeqCst), 0);

    // The start commits late: nothing is saved until it has.
    let late = gate(None);
    let mut cmd = b.command("/fresh.bin", "t-fresh-2");
    cmd.fresh_start = Some(late.clone());
    let run = tokio::spawn({
        let use_case = use_case.clone();
        async move { use_case.process(cmd).await }
    });
    tokio::time::timeout(Duration::from_secs(30), async {
        while late.asked.load(SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the first checkpoint asks the gate");
    assert_eq!(
        counting.saves.load(SeqCst),
        0,
        "not before the start is durable"
    );
    late.open.send_replace(Some(true));
    let result = run.await.unwrap().unwrap();
    assert_eq!(result.sha256.hex(), sha256_hex(&data));
    assert_eq!(counting.loads.load(SeqCst), 0, "no lookup");
    assert!(counting.saves.load(SeqCst) >= 1, "checkpointed once it was");
    assert_eq!(counting.removes.load(SeqCst), 1, "and cleared at the end");
    assert_eq!(b.state_files(), 0);
    assert_eq!(b.leftovers().await, 0);
}

#[tokio::test]
async fn directory_fresh_start_checkpoints_only_after_its_start_is_durable() {
    a_fresh_start_checkpoints_only_after_its_start_is_durable(false).await;
}

#[tokio::test]
async fn s3_fresh_start_checkpoints_only_after_its_start_is_durable() {
    a_fresh_start_checkpoints_only_after_its_start_is_durable(true).await;
}
