use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream;
use mockall::predicate::always;

use ferry_domain::ports::download::MockHttpDownloadPort;
use ferry_domain::ports::progress::MockProgressPort;
use ferry_domain::ports::storage::{MockFileStoragePort, MockStagedWrite};
use ferry_domain::ports::{Download, StoredObject, Validator, WriteRequest};
use ferry_domain::{ByteSize, Checksum, ObjectKey, SourceUrl};

use super::*;

const TEST_SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const TEST_MD5: &str = "098f6bcd4621d373cade4e832627b4f6";

fn meta(total: Option<u64>, offset: u64, ranges: bool) -> SourceMeta {
    SourceMeta {
        total_length: total,
        offset,
        etag: Some("\"v1\"".into()),
        last_modified: None,
        accepts_ranges: ranges,
        final_url: SourceUrl::parse("http://origin.test/f.bin").unwrap(),
        declared_sha256: None,
        content_disposition: None,
        content_type: None,
    }
}

fn download(meta: SourceMeta, items: Vec<Result<&'static [u8], DownloadError>>) -> Download {
    let items: Vec<Result<Bytes, DownloadError>> = items
        .into_iter()
        .map(|i| i.map(Bytes::from_static))
        .collect();
    Download {
        meta,
        body: Box::pin(stream::iter(items)),
    }
}

fn command() -> ProcessFileCommand {
    ProcessFileCommand::new(
        SourceUrl::parse("http://origin.test/f.bin").unwrap(),
        ObjectKey::parse("out/f.bin").unwrap(),
    )
}

/// What the mock storage saw.
#[derive(Default)]
struct Seen {
    written: Vec<u8>,
    committed: Option<CommitInfo>,
    aborted: bool,
    /// Durable offsets are multiples of this ("parts"); 0 means every byte.
    part: usize,
    /// Fail the write call with this index (0-based) once, transiently.
    fail_write_at: Option<usize>,
    writes: usize,
    rewound_to: Vec<u64>,
    request: Option<WriteRequest>,
}

impl Seen {
    fn durable(&self) -> u64 {
        let n = self.written.len();
        let d = if self.part == 0 { n } else { n - n % self.part };
        d as u64
    }
}

fn storage(seen: Arc<Mutex<Seen>>) -> MockFileStoragePort {
    let mut storage = MockFileStoragePort::new();
    storage.expect_begin_write().returning(move |request| {
        seen.lock().unwrap().request = Some(request);
        let mut w = MockStagedWrite::new();
        let s = seen.clone();
        w.expect_write().returning(move |chunk| {
            let mut s = s.lock().unwrap();
            let call = s.writes;
            s.writes += 1;
            if s.fail_write_at == Some(call) {
                s.fail_write_at = None;
                return Err(ferry_domain::ports::StorageError::Unavailable {
                    location: "mem".into(),
                    reason: "part upload reset".into(),
                    exhausted: false,
                });
            }
            s.written.extend_from_slice(&chunk);
            Ok(())
        });
        let s = seen.clone();
        w.expect_durable_offset()
            .returning(move || s.lock().unwrap().durable());
        let s = seen.clone();
        w.expect_rewind().returning(move |offset| {
            let mut s = s.lock().unwrap();
            s.written.truncate(usize::try_from(offset).unwrap());
            s.rewound_to.push(offset);
            Ok(())
        });
        let s = seen.clone();
        w.expect_commit().returning(move |info| {
            s.lock().unwrap().committed = Some(info.clone());
            Ok(StoredObject {
                key: ObjectKey::parse("out/f.bin").unwrap(),
                size: info.size,
                location: "mem://out/f.bin".into(),
            })
        });
        let s = seen.clone();
        w.expect_abort().returning(move || {
            s.lock().unwrap().aborted = true;
            Ok(())
        });
        Ok(Box::new(w))
    });
    storage
}

fn use_case(downloader: MockHttpDownloadPort, storage: MockFileStoragePort) -> ProcessFile {
    ProcessFile::new(
        Arc::new(downloader),
        Arc::new(storage),
        ProcessFileConfig::default(),
    )
}

fn interrupted() -> DownloadError {
    DownloadError::Interrupted {
        url: "http://origin.test/f.bin".into(),
        reason: "connection reset".into(),
    }
}

#[tokio::test]
async fn copies_hashes_and_commits_with_both_digests() {
    let mut dl = MockHttpDownloadPort::new();
    dl.expect_open().times(1).returning(|_| {
        Ok(download(
            meta(Some(4), 0, false),
            vec![Ok(b"te"), Ok(b"st")],
        ))
    });
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut cmd = command();
    cmd.expected = vec![
        Checksum::sha256(TEST_SHA256).unwrap(),
        Checksum::md5(TEST_MD5).unwrap(),
    ];
    let mut progress = MockProgressPort::new();
    progress
        .expect_started()
        .with(mockall::predicate::eq(Some(4)))
        .times(1)
        .return_const(());
    progress.expect_advanced().times(1..).return_const(());
    progress
        .expect_finished()
        .with(mockall::predicate::eq(true))
        .times(1)
        .return_const(());
    cmd.progress = Arc::new(progress);

    let result = use_case(dl, storage(seen.clone()))
        .process(cmd)
        .await
        .unwrap();

    assert_eq!(result.bytes, 4);
    assert_eq!(result.sha256.hex(), TEST_SHA256);
    assert_eq!(result.md5.unwrap().hex(), TEST_MD5);
    assert_eq!(result.location, "mem://out/f.bin");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.written, b"test");
    assert!(!seen.aborted);
    let info = seen.committed.clone().unwrap();
    assert_eq!(info.size, 4);
    assert_eq!(info.sha256_hex, TEST_SHA256);
    assert_eq!(info.md5_hex.as_deref(), Some(TEST_MD5));
}

#[tokio::test]
async fn checksum_mismatch_aborts_and_never_commits() {
    let mut dl = MockHttpDownloadPort::new();
    dl.expect_open()
        .returning(|_| Ok(download(meta(Some(4), 0, false), vec![Ok(b"tent")])));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut cmd = command();
    cmd.expected = vec![Checksum::sha256(TEST_SHA256).unwrap()];

    let err = use_case(dl, storage(seen.clone()))
        .process(cmd)
        .await
        .unwrap_err();

    match err {
        ProcessFileError::ChecksumMismatch {
            algorithm,
            expected,
            actual,
        } => {
            assert_eq!(algorithm, ChecksumAlgorithm::Sha256);
            assert_eq!(expected, TEST_SHA256);
            assert_ne!(actual, TEST_SHA256);
        }
        other => panic!("unexpected {other:?}"),
    }
    let seen = seen.lock().unwrap();
    assert!(seen.aborted);
    assert!(seen.committed.is_none());
}

#[tokio::test]
async fn md5_mismatch_is_caught_too() {
    let mut dl = MockHttpDownloadPort::new();
    dl.expect_open()
        .returning(|_| Ok(download(meta(Some(4), 0, false), vec![Ok(b"test")])));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut cmd = command();
    cmd.expected = vec![Checksum::md5(&"0".repeat(32)).unwrap()];
    let err = use_case(dl, storage(seen.clone()))
        .process(cmd)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ProcessFileError::ChecksumMismatch {
            algorithm: ChecksumAlgorithm::Md5,
            ..
        }
    ));
    assert!(seen.lock().unwrap().committed.is_none());
}

#[tokio::test]
async fn declared_length_over_limit_fails_before_any_write() {
    let mut dl = MockHttpDownloadPort::new();
    dl.expect_open()
        .returning(|_| Ok(download(meta(Some(11), 0, false), vec![Ok(b"never read")])));
    let mut storage = MockFileStoragePort::new();
    storage.expect_begin_write().never();
    let mut cmd = command();
    cmd.max_size = ByteSize::new(10);
    let err = use_case(dl, storage).process(cmd).await.unwrap_err();
    assert!(
        matches!(err, ProcessFileError::TooLarge { size: 11, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn undeclared_body_over_limit_is_stopped_and_aborted() {
    let mut dl = MockHttpDownloadPort::new();
    dl.expect_open().returning(|_| {
        Ok(download(
            meta(None, 0, false),
            vec![Ok(b"12345"), Ok(b"67890"), Ok(b"X"), Ok(b"Y")],
        ))
    });
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut cmd = command();
    cmd.max_size = ByteSize::new(10);
    let err = use_case(dl, storage(seen.clone()))
        .process(cmd)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProcessFileError::LimitExceeded { .. }),
        "{err:?}"
    );
    let seen = seen.lock().unwrap();
    assert!(seen.aborted);
    assert!(seen.committed.is_none());
    assert!(
        seen.written.len() <= 10,
        "wrote {} bytes past the limit",
        seen.written.len()
    );
}

#[tokio::test]
async fn body_longer_than_declared_is_rejected() {
    let mut dl = MockHttpDownloadPort::new();
    dl.expect_open().returning(|_| {
        Ok(download(
            meta(Some(4), 0, false),
            vec![Ok(b"test"), Ok(b"!")],
        ))
    });
    let seen = Arc::new(Mutex::new(Seen::default()));
    let err = use_case(dl, storage(seen.clone()))
        .process(command())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProcessFileError::LengthMismatch {
                problem: LengthProblem::Long,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(seen.lock().unwrap().aborted);
}

#[tokio::test]
async fn body_cut_short_without_ranges_fails_as_short() {
    let mut dl = MockHttpDownloadPort::new();
    dl.expect_open().times(1).returning(|_| {
        Ok(download(
            meta(Some(8), 0, false),
            vec![Ok(b"tes"), Err(interrupted())],
        ))
    });
    let seen = Arc::new(Mutex::new(Seen::default()));
    let err = use_case(dl, storage(seen.clone()))
        .process(command())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProcessFileError::LengthMismatch {
                declared: 8,
                received: 3,
                problem: LengthProblem::Short
            }
        ),
        "{err:?}"
    );
    assert!(err.class().is_retryable());
    assert!(seen.lock().unwrap().aborted);
}

#[tokio::test]
async fn mid_body_failure_resumes_from_the_exact_offset() {
    let mut dl = MockHttpDownloadPort::new();
    let mut seq = mockall::Sequence::new();
    dl.expect_open()
        .times(1)
        .in_sequence(&mut seq)
        .withf(|r| r.offset == 0 && r.if_range.is_none())
        .returning(|_| {
            Ok(download(
                meta(Some(4), 0, true),
                vec![Ok(b"te"), Err(interrupted())],
            ))
        });
    dl.expect_open()
        .times(1)
        .in_sequence(&mut seq)
        .withf(|r| r.offset == 2 && r.if_range == Some(Validator::ETag("\"v1\"".into())))
        .returning(|_| Ok(download(meta(Some(4), 2, true), vec![Ok(b"st")])));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut cmd = command();
    cmd.expected = vec![Checksum::sha256(TEST_SHA256).unwrap()];
    let result = use_case(dl, storage(seen.clone()))
        .process(cmd)
        .await
        .unwrap();
    assert_eq!(result.sha256.hex(), TEST_SHA256);
    assert_eq!(seen.lock().unwrap().written, b"test");
}

#[tokio::test]
async fn source_that_changed_on_resume_fails_without_commit() {
    let mut dl = MockHttpDownloadPort::new();
    let mut seq = mockall::Sequence::new();
    dl.expect_open()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| {
            Ok(download(
                meta(Some(4), 0, true),
                vec![Ok(b"te"), Err(interrupted())],
            ))
        });
    // If-Range did not match: the source sends the whole (new) body.
    dl.expect_open()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(download(meta(Some(4), 0, true), vec![Ok(b"new!")])));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let err = use_case(dl, storage(seen.clone()))
        .process(command())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ferry_domain::ErrorClass::SourceChanged);
    let seen = seen.lock().unwrap();
    assert!(seen.aborted);
    assert!(seen.committed.is_none());
}

#[tokio::test]
async fn permanent_source_error_fails_before_storage() {
    let mut dl = MockHttpDownloadPort::new();
    dl.expect_open().with(always()).returning(|_| {
        Err(DownloadError::Status {
            url: "http://origin.test/f.bin".into(),
            status: 404,
            exhausted: false,
        })
    });
    let mut storage = MockFileStoragePort::new();
    storage.expect_begin_write().never();
    let err = use_case(dl, storage).process(command()).await.unwrap_err();
    assert_eq!(err.code(), "source_error");
    assert!(!err.class().is_retryable());
}

const K32: usize = 32 * 1024;

fn leaked(len: usize) -> &'static [u8] {
    let v: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    Box::leak(v.into_boxed_slice())
}

#[tokio::test]
async fn failed_storage_write_rewinds_to_the_durable_offset_and_rereads_the_source() {
    // Three 32 KiB chunks; storage makes 64 KiB "parts" durable and fails
    // the third write once: the use case must rewind to 64 KiB.
    let data = leaked(3 * K32);
    let total = data.len() as u64;
    let mut dl = MockHttpDownloadPort::new();
    let mut seq = mockall::Sequence::new();
    dl.expect_open()
        .times(1)
        .in_sequence(&mut seq)
        .withf(|r| r.offset == 0)
        .returning(move |_| Ok(download(meta(Some(total), 0, true), vec![Ok(data)])));
    dl.expect_open()
        .times(1)
        .in_sequence(&mut seq)
        .withf(|r| {
            r.offset == 2 * K32 as u64 && r.if_range == Some(Validator::ETag("\"v1\"".into()))
        })
        .returning(move |_| {
            Ok(download(
                meta(Some(total), 2 * K32 as u64, true),
                vec![Ok(&data[2 * K32..])],
            ))
        });
    let seen = Arc::new(Mutex::new(Seen {
        part: 2 * K32,
        fail_write_at: Some(2),
        ..Seen::default()
    }));
    let mut whole = crate::hashing::StreamHasher::new(false);
    whole.update(data);
    let (want_sha, _) = whole.finalize();
    let mut cmd = command();
    cmd.expected = vec![want_sha.clone()];

    let result = use_case(dl, storage(seen.clone()))
        .process(cmd)
        .await
        .unwrap();

    assert_eq!(result.sha256, want_sha);
    assert_eq!(result.bytes, total);
    let seen = seen.lock().unwrap();
    assert!(seen.written == data, "stored bytes differ");
    assert_eq!(seen.rewound_to, vec![2 * K32 as u64]);
    let request = seen.request.clone().unwrap();
    assert!(request.replayable);
    assert_eq!(request.expected_sha256.as_ref(), Some(&want_sha));
}

#[tokio::test]
async fn failed_write_without_a_replayable_source_fails_cleanly() {
    // Unknown length: 64 KiB chunks, not replayable.
    let data = leaked(4 * K32);
    let mut dl = MockHttpDownloadPort::new();
    dl.expect_open()
        .times(1)
        .returning(move |_| Ok(download(meta(None, 0, false), vec![Ok(data)])));
    let seen = Arc::new(Mutex::new(Seen {
        fail_write_at: Some(1),
        ..Seen::default()
    }));
    let err = use_case(dl, storage(seen.clone()))
        .process(command())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "storage_error");
    let seen = seen.lock().unwrap();
    assert!(seen.aborted);
    assert!(seen.rewound_to.is_empty());
    assert!(!seen.request.clone().unwrap().replayable);
}

/// A budget that records reservations: (held now, sizes, most held at once).
#[derive(Debug, Clone, Default)]
struct CountingBudget(Arc<Mutex<(usize, Vec<u64>, usize)>>);

struct Held(CountingBudget);

impl Drop for Held {
    fn drop(&mut self) {
        (self.0).0.lock().unwrap().0 -= 1;
    }
}

impl ferry_domain::ports::MemoryGaugePort for CountingBudget {
    fn in_use(&self) -> u64 {
        0
    }
    fn total(&self) -> u64 {
        1 << 30
    }
}

#[async_trait]
impl MemoryBudgetPort for CountingBudget {
    async fn reserve(&self, bytes: u64) -> ferry_domain::ports::MemoryReservation {
        let mut st = self.0.lock().unwrap();
        st.0 += 1;
        st.1.push(bytes);
        st.2 = st.2.max(st.0);
        ferry_domain::ports::MemoryReservation::new(bytes, Held(self.clone()))
    }
}

#[tokio::test]
async fn every_chunk_is_read_into_reserved_memory_one_at_a_time() {
    // 3 MiB in 100 KiB frames: chunks of 1 MiB (the size class of a
    // 3 MiB file), each reserved before it is read.
    let data: &'static [u8] = leaked(3 << 20);
    let mut dl = MockHttpDownloadPort::new();
    dl.expect_open().times(1).returning(move |_| {
        Ok(download(
            meta(Some(3 << 20), 0, true),
            data.chunks(100 * 1024).map(Ok).collect(),
        ))
    });
    let seen = Arc::new(Mutex::new(Seen::default()));
    let budget = CountingBudget::default();
    let process = ProcessFile::new(
        Arc::new(dl),
        Arc::new(storage(seen.clone())),
        ProcessFileConfig {
            memory: Some(Arc::new(budget.clone())),
            ..ProcessFileConfig::default()
        },
    );
    let result = process.process(command()).await.unwrap();
    assert_eq!(result.bytes, 3 << 20);
    let (held, sizes, max_held) = budget.0.lock().unwrap().clone();
    assert_eq!(held, 0, "every reservation was returned");
    assert_eq!(max_held, 1, "one chunk at a time per transfer");
    let chunk = chunk_size_for(Some(3 << 20)) as u64;
    // One reservation per chunk, plus the one that finds the end.
    assert_eq!(sizes.len() as u64, (3 << 20) / chunk + 1, "{sizes:?}");
    assert!(sizes.iter().all(|&s| s == chunk));
    assert_eq!(seen.lock().unwrap().written.len(), 3 << 20);
}

#[test]
fn chunks_shrink_under_pressure_and_grow_back() {
    use ferry_domain::PressureLevel as L;
    const K: usize = 1024;
    let class = 1024 * K;
    let table = [
        (L::None, 1024 * K, 1024 * K),
        (L::None, 64 * K, 128 * K),
        (L::Light, 256 * K, 256 * K),
        (L::Moderate, 1024 * K, 512 * K),
        (L::Heavy, 64 * K, 32 * K),
        (L::Critical, 32 * K, 32 * K),
    ];
    for (level, current, next) in table {
        assert_eq!(
            crate::chunking::chunk_size_under(level, current, class),
            next,
            "{level:?} at {current}"
        );
    }
    // A small file's class is below the floor: never grown past it.
    assert_eq!(
        crate::chunking::chunk_size_under(L::None, 32 * K, 16 * K),
        16 * K
    );
}
