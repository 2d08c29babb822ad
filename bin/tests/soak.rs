//! The short soak CI runs (the 30-minute one is bench/soak.sh, figures in
//! docs/benchmarks.md): one `ferry serve` runs job after job (files that
//! succeed, one that fails, one job cancelled mid-transfer each round) for
//! FERRY_SOAK_SECS (default 40) seconds while its RSS and open file
//! descriptors are sampled. After a warm-up, the last part of the run must
//! not hold more descriptors, or much more memory, than the early part: a
//! leak per job or per connection shows up as growth.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::json;

use ferry_tests::origin::{Behavior, Origin};
use ferry_tests::serve_process::Server;
use ferry_tests::{generate, sha256_hex};

fn sample(pid: u32) -> (f64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss_kib / 1024.0, fds)
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_does_not_grow_over_many_jobs() {
    let secs: u64 = std::env::var("FERRY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let origin = Origin::start().await.unwrap();
    let data = generate(3 << 20, 5);
    let sha = sha256_hex(&data);
    origin.serve("/s/f.bin", data, Behavior::Normal);
    origin.serve(
        "/s/slow.bin",
        generate(8 << 20, 6),
        Behavior::Throttled {
            bytes_per_tick: 64 << 10,
            tick: Duration::from_millis(20),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        env!("CARGO_BIN_EXE_ferry"),
        dir.path(),
        &["--memory-budget", "32MiB", "--jobs-per-minute", "0"],
    );
    let pid = server.child.id();
    let client = reqwest::Client::new();

    let started = Instant::now();
    let mut samples: Vec<(f64, f64, usize)> = Vec::new();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        let mut files: Vec<_> = (0..6)
            .map(|i| json!({"source": origin.url("/s/f.bin"), "key": format!("r/f{i}.bin"), "sha256": sha}))
            .collect();
        files.push(json!({"source": origin.url("/s/missing.bin"), "key": "r/missing.bin"}));
        let job = server
            .submit(&json!({"destination": "soak", "files": files}))
            .await;
        let slow = server
            .submit(&json!({"destination": "soak", "files": [{"source": origin.url("/s/slow.bin"), "key": "slow.bin"}]}))
            .await;
        let id = job["id"].as_str().unwrap().to_owned();
        let done = server.wait_terminal(&id).await;
        assert_eq!(done["status"], "completed_with_errors", "{done}");
        assert_eq!(done["summary"]["succeeded"], 6, "{done}");
        let cancelled = client
            .delete(format!(
                "{}/v1/jobs/{}",
                server.url,
                slow["id"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap();
        assert!(cancelled.status().is_success() || cancelled.status() == 409);
        let _ = std::fs::remove_dir_all(dir.path().join("files/soak"));
        rounds += 1;
        let (rss, fds) = sample(pid);
        samples.push((started.elapsed().as_secs_f64(), rss, fds));
    }
    assert!(rounds >= 5, "only {rounds} rounds in {secs} s");
    let end = samples.last().unwrap().0;
    let window = |a: f64, b: f64| {
        samples
            .iter()
            .filter(move |s| s.0 >= a * end && s.0 <= b * end)
            .copied()
    };
    let peak_rss = |a, b| window(a, b).map(|s| s.1).fold(0.0, f64::max);
    let peak_fds = |a, b| window(a, b).map(|s| s.2).max().unwrap_or(0);
    let (early_rss, late_rss) = (peak_rss(0.25, 0.5), peak_rss(0.75, 1.0));
    let (early_fds, late_fds) = (peak_fds(0.25, 0.5), peak_fds(0.75, 1.0));
    println!(
        "soak: {rounds} rounds in {end:.0} s; peak RSS {early_rss:.1} -> {late_rss:.1} MiB, fds {early_fds} -> {late_fds}"
    );
    assert!(
        late_fds <= early_fds + 4,
        "file descriptors grew: {early_fds} -> {late_fds}"
    );
    assert!(
        late_rss <= early_rss + 16.0,
        "RSS grew: {early_rss:.1} -> {late_rss:.1} MiB"
    );
}
