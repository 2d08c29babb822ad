//! URL -> S3 end to end: real origin, real HTTP client, Garage (optionally
//! behind the fault-injecting proxy).

use std::sync::Arc;
use std::time::Duration;

use ferry_adapters::s3::{S3Storage, S3StorageConfig};
use ferry_adapters::{HttpClientConfig, PooledHttpClient, SourceRouter};
use ferry_application::{ProcessFile, ProcessFileConfig};
use ferry_domain::ports::{FileStoragePort, ProcessFilePort};
use ferry_domain::{Checksum, ObjectKey};
use ferry_tests::garage::{garage, service, unique_prefix};
use ferry_tests::origin::{Behavior, Origin};
use ferry_tests::s3proxy::{Fault, S3Proxy};
use ferry_tests::{command, conformance, generate, md5_hex, sha256_hex};

use crate::storage_s3::incomplete_uploads;

const MIB: usize = 1024 * 1024;

struct Setup {
    origin: Origin,
    storage: Arc<S3Storage>,
    prefix: String,
    use_case: ProcessFile,
}

async fn setup(endpoint: &str, label: &str) -> Setup {
    setup_with(endpoint, label, false).await
}

/// `verify_parts`: check each part's MD5 against its ETag (`--verify-parts`;
/// off in both binaries by default, as in [`setup`]).
async fn setup_with(endpoint: &str, label: &str, verify_parts: bool) -> Setup {
    setup_config(
        endpoint,
        label,
        S3StorageConfig {
            part_size: 5 * MIB as u64,
            verify_part_etags: verify_parts,
            // These tests check the digests on every object, also those
            // not known at start: the self-copy mode.
            digest_metadata: ferry_adapters::s3::DigestMetadata::Copy,
            ..S3StorageConfig::default()
        },
    )
    .await
}

async fn setup_config(endpoint: &str, label: &str, config: S3StorageConfig) -> Setup {
    let origin = Origin::start().await.unwrap();
    let prefix = unique_prefix(label);
    let storage = Arc::new(S3Storage::new(
        service(endpoint).await,
        &garage().bucket,
        &prefix,
        config,
    ));
    let http = ferry_tests::test_http_client(Duration::from_secs(2));
    let use_case = ProcessFile::new(
        Arc::new(SourceRouter::new(Arc::new(http), None)),
        storage.clone(),
        ProcessFileConfig::default(),
    );
    Setup {
        origin,
        storage,
        prefix,
        use_case,
    }
}

impl Setup {
    async fn assert_nothing(&self, key: &str) {
        let k = ObjectKey::parse(key).unwrap();
        assert!(
            self.storage.metadata(&k).await.unwrap().is_none(),
            "{key} is visible"
        );
        assert_eq!(
            incomplete_uploads(&self.prefix).await,
            0,
            "incomplete upload left"
        );
    }

    async fn assert_stored(&self, key: &str, data: &[u8]) {
        let k = ObjectKey::parse(key).unwrap();
        let got = conformance::get(self.storage.as_ref(), &k).await;
        assert!(
            got == data,
            "stored bytes differ ({} vs {})",
            got.len(),
            data.len()
        );
        let meta = self.storage.metadata(&k).await.unwrap().unwrap();
        assert_eq!(meta.size, data.len() as u64);
        assert_eq!(meta.sha256_hex.as_deref(), Some(sha256_hex(data).as_str()));
        assert_eq!(
            incomplete_uploads(&self.prefix).await,
            0,
            "incomplete upload left"
        );
    }
}

#[tokio::test]
async fn multipart_upload_of_several_parts_with_metadata() {
    let s = setup(&garage().endpoint, "multipart").await;
    let data = generate(18 * MIB + 12_345, 60);
    s.origin.serve("/big.bin", data.clone(), Behavior::Normal);
    let mut cmd = command(&s.origin.url("/big.bin"), "big.bin");
    cmd.compute_md5 = true;
    let result = s.use_case.process(cmd).await.unwrap();
    assert_eq!(result.sha256.hex(), sha256_hex(&data));
    assert!(result.location.starts_with("s3://"));
    s.assert_stored("big.bin", &data).await;
    let meta = s
        .storage
        .metadata(&ObjectKey::parse("big.bin").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.md5_hex.as_deref(), Some(md5_hex(&data).as_str()));
}

#[tokio::test]
async fn expected_checksums_are_recorded_at_create_and_verified() {
    let s = setup(&garage().endpoint, "expected").await;
    let data = generate(11 * MIB, 61);
    s.origin.serve("/f.bin", data.clone(), Behavior::Normal);
    let mut cmd = command(&s.origin.url("/f.bin"), "f.bin");
    cmd.expected = vec![
        Checksum::sha256(&sha256_hex(&data)).unwrap(),
        Checksum::md5(&md5_hex(&data)).unwrap(),
    ];
    s.use_case.process(cmd).await.unwrap();
    s.assert_stored("f.bin", &data).await;
}

#[tokio::test]
async fn checksum_mismatch_leaves_no_object_and_no_upload() {
    let s = setup(&garage().endpoint, "mismatch").await;
    for (name, len) in [("big.bin", 12 * MIB), ("small.bin", 100_000)] {
        s.origin
            .serve(&format!("/{name}"), generate(len, 62), Behavior::Normal);
        let mut cmd = command(&s.origin.url(&format!("/{name}")), name);
        cmd.expected = vec![Checksum::sha256(&"0".repeat(64)).unwrap()];
        let err = s.use_case.process(cmd).await.unwrap_err();
        assert_eq!(err.code(), "checksum_mismatch");
        s.assert_nothing(name).await;
    }
}

#[tokio::test]
async fn failed_part_is_reread_by_range_and_the_object_is_correct() {
    for fault in [Fault::Status503, Fault::Reset] {
        let proxy = S3Proxy::start(&garage().endpoint).await.unwrap();
        let s = setup(&proxy.endpoint(), "partfail").await;
        let data = generate(17 * MIB, 63);
        s.origin.serve("/f.bin", data.clone(), Behavior::Normal);
        proxy.fail_upload(2, fault);
        let mut cmd = command(&s.origin.url("/f.bin"), "f.bin");
        cmd.expected = vec![Checksum::sha256(&sha256_hex(&data)).unwrap()];
        let result = s.use_case.process(cmd).await;
        assert!(result.is_ok(), "{fault:?}: {result:?}");
        s.assert_stored("f.bin", &data).await;
        let ranges: Vec<String> = s
            .origin
            .requests()
            .into_iter()
            .filter_map(|r| r.range)
            .collect();
        // Part 2 starts at 5 MiB: exactly that range is fetched again.
        assert_eq!(ranges, vec![format!("bytes={}-", 5 * MIB)], "{fault:?}");
    }
}

/// `--verify-parts`: a part whose answer carries another ETag (corrupted on
/// the way) is caught, re-read by its range and sent again; the object is
/// correct.
#[tokio::test]
async fn a_part_with_a_wrong_etag_is_caught_and_sent_again() {
    let proxy = S3Proxy::start(&garage().endpoint).await.unwrap();
    let s = setup_with(&proxy.endpoint(), "wrongetag", true).await;
    let data = generate(17 * MIB, 67);
    s.origin.serve("/f.bin", data.clone(), Behavior::Normal);
    proxy.fail_upload(2, Fault::WrongEtag);
    let mut cmd = command(&s.origin.url("/f.bin"), "f.bin");
    cmd.expected = vec![Checksum::sha256(&sha256_hex(&data)).unwrap()];
    let result = s.use_case.process(cmd).await;
    assert!(result.is_ok(), "{result:?}");
    s.assert_stored("f.bin", &data).await;
    let ranges: Vec<String> = s
        .origin
        .requests()
        .into_iter()
        .filter_map(|r| r.range)
        .collect();
    assert_eq!(ranges, vec![format!("bytes={}-", 5 * MIB)]);
    let part_2_uploads = proxy
        .log()
        .iter()
        .filter(|l| l.starts_with("PUT ") && l.contains("partNumber=2"))
        .count();
    assert_eq!(part_2_uploads, 2, "part 2 was sent again");
}

#[tokio::test]
async fn complete_answering_200_with_an_error_body_leaves_nothing() {
    let proxy = S3Proxy::start(&garage().endpoint).await.unwrap();
    let s = setup(&proxy.endpoint(), "complete200").await;
    s.origin
        .serve("/f.bin", generate(11 * MIB, 64), Behavior::Normal);
    proxy.complete_with_error_body(true);
    let err = s
        .use_case
        .process(command(&s.origin.url("/f.bin"), "f.bin"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "storage_error", "{err}");
    proxy.complete_with_error_body(false);
    s.assert_nothing("f.bin").await;
}

#[tokio::test]
async fn source_that_ends_early_leaves_nothing() {
    let s = setup(&garage().endpoint, "short").await;
    // No ranges advertised: nothing to resume from.
    s.origin.serve(
        "/f.bin",
        generate(12 * MIB, 65),
        Behavior::Short { send: 7 * MIB },
    );
    let err = s
        .use_case
        .process(command(&s.origin.url("/f.bin"), "f.bin"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "length_mismatch", "{err}");
    s.assert_nothing("f.bin").await;
}

#[tokio::test]
async fn unknown_length_source_is_uploaded_one_buffered_part_at_a_time() {
    let s = setup(&garage().endpoint, "chunked").await;
    let data = generate(13 * MIB + 7, 66);
    s.origin.serve("/c.bin", data.clone(), Behavior::Chunked);
    let result = s
        .use_case
        .process(command(&s.origin.url("/c.bin"), "c.bin"))
        .await
        .unwrap();
    assert_eq!(result.bytes, data.len() as u64);
    s.assert_stored("c.bin", &data).await;
    // And a small one becomes a single PutObject.
    let small = generate(300_000, 67);
    s.origin.serve("/s.bin", small.clone(), Behavior::Chunked);
    s.use_case
        .process(command(&s.origin.url("/s.bin"), "s.bin"))
        .await
        .unwrap();
    s.assert_stored("s.bin", &small).await;
}

#[tokio::test]
async fn small_file_is_one_streamed_put_with_metadata() {
    let proxy = S3Proxy::start(&garage().endpoint).await.unwrap();
    let s = setup(&proxy.endpoint(), "single").await;
    let data = generate(3 * MIB, 68);
    s.origin.serve("/s.bin", data.clone(), Behavior::Normal);
    s.use_case
        .process(command(&s.origin.url("/s.bin"), "s.bin"))
        .await
        .unwrap();
    s.assert_stored("s.bin", &data).await;
    let log = proxy.log();
    assert!(!log.iter().any(|l| l.contains("uploads")), "{log:?}");
}

#[tokio::test]
async fn buffered_parts_take_their_memory_from_the_budget_and_wait_for_it() {
    use ferry_adapters::memory::MemoryBudget;
    // Room for one 5 MiB part (plus a chunk) at a time: two unknown-length
    // transfers must take turns, and both complete.
    let budget = MemoryBudget::new(5 * MIB as u64 + 512 * 1024);
    let origin = Origin::start().await.unwrap();
    let prefix = unique_prefix("budget");
    let storage = Arc::new(S3Storage::new(
        service(&garage().endpoint).await,
        &garage().bucket,
        &prefix,
        S3StorageConfig {
            part_size: 5 * MIB as u64,
            memory: Some(budget.clone()),
            ..S3StorageConfig::default()
        },
    ));
    let http = PooledHttpClient::new(HttpClientConfig::default()).unwrap();
    let use_case = ProcessFile::new(
        Arc::new(SourceRouter::new(Arc::new(http), None)),
        storage.clone(),
        ProcessFileConfig::default(),
    );
    let a = generate(11 * MIB, 69);
    let b = generate(7 * MIB, 70);
    origin.serve("/a.bin", a.clone(), Behavior::Chunked);
    origin.serve("/b.bin", b.clone(), Behavior::Chunked);
    let (ra, rb) = tokio::join!(
        use_case.process(command(&origin.url("/a.bin"), "a.bin")),
        use_case.process(command(&origin.url("/b.bin"), "b.bin")),
    );
    assert_eq!(ra.unwrap().sha256.hex(), sha256_hex(&a));
    assert_eq!(rb.unwrap().sha256.hex(), sha256_hex(&b));
    assert_eq!(budget.in_use(), 0, "every grant was returned");
    assert_eq!(
        conformance::get(storage.as_ref(), &ObjectKey::parse("a.bin").unwrap()).await,
        a
    );

    // A part that can never fit fails at once with the flag to change.
    let tiny = S3Storage::new(
        service(&garage().endpoint).await,
        &garage().bucket,
        &prefix,
        S3StorageConfig {
            part_size: 5 * MIB as u64,
            memory: Some(MemoryBudget::new(MIB as u64)),
            ..S3StorageConfig::default()
        },
    );
    let http = PooledHttpClient::new(HttpClientConfig::default()).unwrap();
    let small = ProcessFile::new(
        Arc::new(SourceRouter::new(Arc::new(http), None)),
        Arc::new(tiny),
        ProcessFileConfig::default(),
    );
    let err = small
        .process(command(&origin.url("/b.bin"), "c.bin"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--memory-budget"), "{err}");
}

/// `--digest-metadata copy` above the single-copy limit (5 GiB on S3;
/// lowered here so the test stays small): a multipart self-copy of ranges
/// (UploadPartCopy), never one CopyObject; the metadata lands.
#[tokio::test]
async fn digest_copy_above_the_copy_limit_goes_in_parts() {
    let proxy = S3Proxy::start(&garage().endpoint).await.unwrap();
    let s = setup_config(
        &proxy.endpoint(),
        "copyparts",
        S3StorageConfig {
            part_size: 5 * MIB as u64,
            digest_metadata: ferry_adapters::s3::DigestMetadata::Copy,
            copy_object_limit: 5 * MIB as u64,
            ..S3StorageConfig::default()
        },
    )
    .await;
    let data = generate(12 * MIB + 5, 66);
    s.origin.serve("/cp.bin", data.clone(), Behavior::Normal);
    let result = s
        .use_case
        .process(command(&s.origin.url("/cp.bin"), "cp.bin"))
        .await
        .unwrap();
    assert_eq!(result.sha256.hex(), sha256_hex(&data));
    s.assert_stored("cp.bin", &data).await;
    let log = proxy.log();
    let part_copies: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("partNumber=") && l.contains("[x-amz-copy-source="))
        .collect();
    assert_eq!(part_copies.len(), 3, "12 MiB in 5 MiB ranges: {log:?}");
    let single_copies = log
        .iter()
        .filter(|l| l.contains("[x-amz-copy-source=") && !l.contains("partNumber="))
        .count();
    assert_eq!(single_copies, 0, "no CopyObject above the limit");
}
