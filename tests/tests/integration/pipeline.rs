//! ProcessFile end to end: real origin, real HTTP client, real filesystem.

use std::sync::Arc;
use std::time::Duration;

use ferry_adapters::{FilesystemStorage, LocalFileSource, SourceRouter};
use ferry_application::{ProcessFile, ProcessFileConfig};
use ferry_domain::ports::{LengthProblem, ProcessFileError, ProcessFilePort};
use ferry_domain::{ByteSize, Checksum};
use ferry_tests::origin::{Behavior, Origin};
use ferry_tests::{command, generate, md5_hex, sha256_hex};

use crate::storage_fs::temp_files;

struct Setup {
    origin: Origin,
    dir: tempfile::TempDir,
    use_case: ProcessFile,
}

async fn setup() -> Setup {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let http = ferry_tests::test_http_client(Duration::from_millis(500));
    let router = SourceRouter::new(Arc::new(http), Some(Arc::new(LocalFileSource::new())));
    let storage = FilesystemStorage::new(dir.path()).unwrap();
    let use_case = ProcessFile::new(
        Arc::new(router),
        Arc::new(storage),
        ProcessFileConfig::default(),
    );
    Setup {
        origin,
        dir,
        use_case,
    }
}

impl Setup {
    fn assert_nothing_at(&self, key: &str) {
        assert!(!self.dir.path().join(key).exists(), "{key} is visible");
        assert!(temp_files(self.dir.path()).is_empty(), "temp files left");
    }
}

#[tokio::test]
async fn copies_a_multi_megabyte_file_with_verified_checksums() {
    let s = setup().await;
    let data = generate(3_000_000, 20);
    s.origin.serve("/big.bin", data.clone(), Behavior::Normal);
    let mut cmd = command(&s.origin.url("/big.bin"), "out/big.bin");
    cmd.expected = vec![
        Checksum::sha256(&sha256_hex(&data)).unwrap(),
        Checksum::md5(&md5_hex(&data)).unwrap(),
    ];
    let result = s.use_case.process(cmd).await.unwrap();
    assert_eq!(result.bytes, 3_000_000);
    assert_eq!(result.sha256.hex(), sha256_hex(&data));
    assert_eq!(result.md5.unwrap().hex(), md5_hex(&data));
    assert_eq!(
        std::fs::read(s.dir.path().join("out/big.bin")).unwrap(),
        data
    );
    assert!(temp_files(s.dir.path()).is_empty());
}

#[tokio::test]
async fn checksum_mismatch_leaves_nothing() {
    let s = setup().await;
    s.origin
        .serve("/f.bin", generate(500_000, 21), Behavior::Normal);
    let mut cmd = command(&s.origin.url("/f.bin"), "f.bin");
    cmd.expected = vec![Checksum::sha256(&"ab".repeat(32)).unwrap()];
    let err = s.use_case.process(cmd).await.unwrap_err();
    assert_eq!(err.code(), "checksum_mismatch");
    s.assert_nothing_at("f.bin");
}

#[tokio::test]
async fn size_limit_by_header_reads_no_body() {
    let s = setup().await;
    s.origin
        .serve("/f.bin", generate(2_000_000, 22), Behavior::Normal);
    let mut cmd = command(&s.origin.url("/f.bin"), "f.bin");
    cmd.max_size = ByteSize::mib(1);
    let err = s.use_case.process(cmd).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProcessFileError::TooLarge {
                size: 2_000_000,
                ..
            }
        ),
        "{err:?}"
    );
    s.assert_nothing_at("f.bin");
}

#[tokio::test]
async fn size_limit_by_counting_a_chunked_body() {
    let s = setup().await;
    s.origin
        .serve("/c.bin", generate(2_000_000, 23), Behavior::Chunked);
    let mut cmd = command(&s.origin.url("/c.bin"), "c.bin");
    cmd.max_size = ByteSize::mib(1);
    let err = s.use_case.process(cmd).await.unwrap_err();
    assert!(
        matches!(err, ProcessFileError::LimitExceeded { .. }),
        "{err:?}"
    );
    s.assert_nothing_at("c.bin");
}

#[tokio::test]
async fn short_body_fails_and_leaves_nothing() {
    let s = setup().await;
    s.origin.serve(
        "/s.bin",
        generate(1_000_000, 24),
        Behavior::Short { send: 300_000 },
    );
    let err = s
        .use_case
        .process(command(&s.origin.url("/s.bin"), "s.bin"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProcessFileError::LengthMismatch {
                declared: 1_000_000,
                problem: LengthProblem::Short,
                ..
            }
        ),
        "{err:?}"
    );
    s.assert_nothing_at("s.bin");
}

#[tokio::test]
async fn reset_mid_body_resumes_with_a_range_request() {
    let s = setup().await;
    let data = generate(2_000_000, 25);
    s.origin.serve(
        "/r.bin",
        data.clone(),
        Behavior::ResetAfter {
            after: 700_000,
            times: 1,
        },
    );
    let mut cmd = command(&s.origin.url("/r.bin"), "r.bin");
    cmd.expected = vec![Checksum::sha256(&sha256_hex(&data)).unwrap()];
    let result = s.use_case.process(cmd).await.unwrap();
    assert_eq!(result.bytes, 2_000_000);
    assert_eq!(std::fs::read(s.dir.path().join("r.bin")).unwrap(), data);
    let requests = s.origin.requests();
    assert_eq!(requests.len(), 2);
    let range = requests[1].range.clone().unwrap();
    let from: u64 = range
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(from > 0 && from <= 700_000, "resumed from {from}");
    assert!(requests[1].if_range.is_some());
}

#[tokio::test]
async fn stalled_source_fails_without_leaving_a_file() {
    let s = setup().await;
    s.origin.serve(
        "/stall.bin",
        generate(1_000_000, 26),
        Behavior::Stall { after: 100_000 },
    );
    let mut cmd = command(&s.origin.url("/stall.bin"), "stall.bin");
    cmd.expected = vec![];
    let err = s.use_case.process(cmd).await.unwrap_err();
    assert!(err.class().is_retryable(), "{err:?}");
    s.assert_nothing_at("stall.bin");
}

#[tokio::test]
async fn local_file_source_copies_with_the_same_pipeline() {
    let s = setup().await;
    let src_dir = tempfile::tempdir().unwrap();
    let data = generate(1_234_567, 27);
    let path = src_dir.path().join("local.bin");
    std::fs::write(&path, &data).unwrap();
    let url = format!("file://{}", path.display());
    let result = s
        .use_case
        .process(command(&url, "copied/local.bin"))
        .await
        .unwrap();
    assert_eq!(result.sha256.hex(), sha256_hex(&data));
    assert_eq!(
        std::fs::read(s.dir.path().join("copied/local.bin")).unwrap(),
        data
    );
}
