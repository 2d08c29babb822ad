#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Shared test support: a real HTTP origin with fault injection, and the
//! storage conformance suite every `FileStoragePort` adapter must pass.

pub mod checkpoint_conformance;
pub mod conformance;
pub mod export_provider;
pub mod garage;
pub mod job_store_conformance;
pub mod origin;
pub mod pg;
pub mod recorder;
pub mod s3proxy;
pub mod serve_process;
pub mod server;
pub mod sfn_endpoint;
pub mod told;

use std::time::Duration;

use ferry_adapters::{HttpClientConfig, PooledHttpClient};
use ferry_domain::ports::ProcessFileCommand;
use ferry_domain::{ObjectKey, RetryPolicy, SourceUrl};
use sha2::Digest;

/// The pooled HTTP client as the tests use it: retries after 5 ms instead
/// of a second, and a read is stalled after `read_idle`.
pub fn test_http_client(read_idle: Duration) -> PooledHttpClient {
    PooledHttpClient::new(HttpClientConfig {
        retry: retry(3, Duration::from_millis(5)),
        read_idle_timeout: read_idle,
        ..HttpClientConfig::default()
    })
    .unwrap()
}

/// The default retry policy with `retries` retries after the first try and
/// delays from `base`.
pub fn retry(retries: u32, base: Duration) -> RetryPolicy {
    RetryPolicy {
        attempts: retries + 1,
        base,
        ..RetryPolicy::default()
    }
}

/// A ProcessFile command copying `url` to `key`.
pub fn command(url: &str, key: &str) -> ProcessFileCommand {
    ProcessFileCommand::new(
        SourceUrl::parse(url).unwrap(),
        ObjectKey::parse(key).unwrap(),
    )
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no fixtures.
pub fn generate(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

/// A JobService wired as `ferry serve` wires it: each file through a
/// `TransferFactory` over `downloader` and `storages` with the config's
/// ProcessFile settings and retry policy.
pub fn job_service(
    store: std::sync::Arc<dyn ferry_domain::ports::JobStorePort>,
    downloader: std::sync::Arc<dyn ferry_domain::ports::HttpDownloadPort>,
    storages: std::sync::Arc<dyn ferry_domain::ports::StorageResolverPort>,
    events: std::sync::Arc<dyn ferry_domain::ports::JobEventsPort>,
    new_id: Box<dyn Fn() -> ferry_domain::JobId + Send + Sync>,
    config: ferry_application::jobs::JobServiceConfig,
) -> ferry_application::jobs::JobService {
    let transfers =
        ferry_application::TransferFactory::for_jobs(downloader, storages.clone(), &config);
    ferry_application::jobs::JobService::new(
        store,
        std::sync::Arc::new(transfers),
        storages,
        events,
        new_id,
        config,
    )
}

/// The kill-point build of ferry (`ferry-crashtest`) for the crash tests:
/// `FERRY_CRASHTEST_BIN`, else the binary beside `ferry` (the tested
/// build); scripts/test.sh builds it with `cargo build -p ferry --bin
/// ferry-crashtest --features failpoints`.
pub fn crashtest_bin(ferry: &str) -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("FERRY_CRASHTEST_BIN") {
        return bin.into();
    }
    let beside = std::path::Path::new(ferry).with_file_name("ferry-crashtest");
    assert!(
        beside.exists(),
        "{} is missing: build it with `cargo build -p ferry --bin ferry-crashtest --features failpoints` (scripts/test.sh does)",
        beside.display()
    );
    beside
}

/// What a crash between the end of a file task and its cleanup leaves in a
/// directory destination: a temp file of `len` zero bytes at `path` and a
/// checkpoint naming it as the staged state of `key`.
pub fn temp_checkpoint(path: &std::path::Path, key: &str, len: u64) -> ferry_domain::Checkpoint {
    std::fs::write(path, vec![0u8; usize::try_from(len).unwrap()]).unwrap();
    ferry_domain::Checkpoint::new(
        ferry_domain::SourceIdentity {
            url_sha256: "ab".repeat(32),
            length: 1 << 20,
            etag: Some("\"e\"".into()),
            last_modified: None,
        },
        ObjectKey::parse(key).unwrap(),
        ferry_domain::HashState {
            bytes: len,
            sha256: vec![0; 40],
            md5: None,
        },
        ferry_adapters::filesystem::TempFileState {
            path: path.display().to_string(),
            length: len,
        }
        .to_staged(),
        0,
    )
    .unwrap()
}

/// Every file under `dir` (recursively); none if it does not exist.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                found.extend(files_under(&p));
            } else {
                found.push(p);
            }
        }
    }
    found
}

/// Every event shown (or acknowledged) is stored as it was shown, but a
/// `file_progress` the store compacted when the job ended: then a later
/// progress of the same file is stored instead. And the store keeps at
/// most one progress per file of an ended job.
pub fn assert_stored_or_superseded(shown: &[serde_json::Value], stored: &[serde_json::Value]) {
    for event in shown {
        match stored.iter().find(|s| s["seq"] == event["seq"]) {
            Some(same) => assert_eq!(same, event, "a shown event was changed"),
            None => {
                assert_eq!(
                    event["type"], "file_progress",
                    "a shown event was lost: {event}"
                );
                assert!(
                    stored.iter().any(|s| s["type"] == "file_progress"
                        && s["index"] == event["index"]
                        && s["seq"].as_u64() > event["seq"].as_u64()),
                    "a shown progress event was lost without a later one: {event}"
                );
            }
        }
    }
    let mut progressed = std::collections::HashSet::new();
    for s in stored.iter().filter(|s| s["type"] == "file_progress") {
        assert!(
            progressed.insert(s["index"].as_u64()),
            "two progress events of file {} kept after the job ended",
            s["index"]
        );
    }
}
