//! The crash harness: `ferry copy` of a multi-part file is killed at exact
//! kill points (the `fail` crate's failpoints, compiled into the
//! `ferry-crashtest` binary only) and at seeded random times (`kill -9`,
//! the child asserted alive when killed), then run again with the same
//! SOURCE and DEST. Every time: the object's SHA-256 equals the source's,
//! no temp file, incomplete upload or state file is left, and, counted at
//! the origin, the restart's first request starts at the offset it
//! reported (`Range: bytes=N-`), it fetched exactly the rest of the file,
//! and the bytes fetched twice over both runs are at most the bound
//! (docs/reliability.md): one part (S3) or two checkpoint intervals
//! (directory), plus 1 MiB that may be in flight between the origin and
//! the process when it dies. The origin is rate-limited (12.5 MiB/s) so
//! that what it sent is what ferry had received.
//! Figures are printed (and appended to `$FERRY_CRASH_REPORT` if set) for
//! docs/reliability.md; `FERRY_CRASH_SEED` replays a run's kill times.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_application::chunk_size_for;
use ferry_tests::garage::{garage, service, unique_prefix};
use ferry_tests::origin::{Behavior, Origin};
use ferry_tests::{generate, sha256_hex};

const MIB: usize = 1024 * 1024;
const LEN: usize = 24 * MIB;
const PART: u64 = 5 * MIB as u64;
/// What may be in flight (socket buffers, a chunk being read) between the
/// origin and the process when it dies, beside what it had checkpointed.
const IN_FLIGHT: u64 = MIB as u64;
/// Random-time kills per storage.
const RANDOM_KILLS: usize = 20;
/// The origin's pace: 128 KiB every 10 ms.
const ORIGIN_PACE: Behavior = Behavior::ThrottledRanged {
    bytes_per_tick: 128 * 1024,
    tick: Duration::from_millis(10),
};
const PATH: &str = "/f.bin";

#[derive(Clone)]
enum Dest {
    Dir(PathBuf),
    S3 { prefix: String },
}

impl Dest {
    fn arg(&self) -> String {
        match self {
            Dest::Dir(dir) => format!("{}/", dir.display()),
            Dest::S3 { prefix } => format!("s3://{}/{prefix}/", garage().bucket),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Dest::Dir(_) => "directory",
            Dest::S3 { .. } => "s3",
        }
    }

    /// The most bytes a crash and restart may fetch twice, counted at the
    /// origin.
    fn bound(&self) -> u64 {
        IN_FLIGHT
            + match self {
                // Two checkpoint intervals (5 chunks, at least 4 MiB): an
                // fsync runs in the background while the next interval is
                // written.
                Dest::Dir(_) => 2 * (5 * chunk_size_for(Some(LEN as u64)) as u64).max(4 << 20),
                Dest::S3 { .. } => PART,
            }
    }

    async fn stored_sha256(&self) -> Option<String> {
        match self {
            Dest::Dir(dir) => std::fs::read(dir.join("f.bin"))
                .ok()
                .map(|d| sha256_hex(&d)),
            Dest::S3 { prefix } => {
                let svc = service(&garage().endpoint).await;
                let out = svc
                    .client()
                    .get_object()
                    .bucket(&garage().bucket)
                    .key(format!("{prefix}/f.bin"))
                    .send()
                    .await
                    .ok()?;
                let body = out.body.collect().await.ok()?.into_bytes();
                Some(sha256_hex(&body))
            }
        }
    }

    async fn leftovers(&self) -> usize {
        match self {
            Dest::Dir(dir) => std::fs::read_dir(dir)
                .map(|rd| {
                    rd.flatten()
                        .filter(|e| e.file_name().to_string_lossy().contains(".ferry-tmp."))
                        .count()
                })
                .unwrap_or(0),
            Dest::S3 { prefix } => service(&garage().endpoint)
                .await
                .list_incomplete_uploads(&garage().bucket, Some(prefix), Duration::ZERO)
                .await
                .unwrap()
                .len(),
        }
    }

    async fn clear(&self) {
        match self {
            Dest::Dir(dir) => {
                let _ = std::fs::remove_file(dir.join("f.bin"));
            }
            Dest::S3 { prefix } => {
                let svc = service(&garage().endpoint).await;
                svc.delete(&garage().bucket, &format!("{prefix}/f.bin"))
                    .await
                    .unwrap();
            }
        }
    }
}

fn ferry(url: &str, dest: &Dest, state: &Path, envs: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(ferry_tests::crashtest_bin(env!("CARGO_BIN_EXE_ferry")));
    cmd.args(["copy", url, &dest.arg(), "--json", "--no-progress"])
        .arg("--state-dir")
        .arg(state)
        .args(["--part-size", "5MiB"])
        .env_remove("FERRY_LOG")
        .env_remove("FAILPOINTS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Dest::S3 { .. } = dest {
        cmd.args(["--endpoint-url", &garage().endpoint]);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

fn state_files(state: &Path) -> Vec<String> {
    std::fs::read_dir(state)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A second copy of the same SOURCE to the same DEST while one runs is
/// refused (it would take up the same checkpoint).
#[tokio::test(flavor = "multi_thread")]
async fn a_second_copy_of_the_same_transfer_is_refused_while_one_runs() {
    let origin = Origin::start().await.unwrap();
    origin.serve(
        "/f.bin",
        generate(4 * MIB, 78),
        Behavior::Throttled {
            bytes_per_tick: 64 * 1024,
            tick: Duration::from_millis(10),
        },
    );
    let url = origin.url("/f.bin");
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let dest = Dest::Dir(work.path().join("out"));
    let mut first = ferry(&url, &dest, &state, &[]).spawn().unwrap();
    // Wait until the first holds its lock.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !state_files(&state).iter().any(|f| f.ends_with(".lock")) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the first copy takes its lock");
    let second = {
        let mut cmd = ferry(&url, &dest, &state, &[]);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    };
    assert_eq!(second.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another ferry copy"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        tokio::task::spawn_blocking(move || first.wait().unwrap())
            .await
            .unwrap()
            .success()
    );
    assert!(state_files(&state).is_empty(), "{:?}", state_files(&state));
}

/// One crash and restart.
struct Outcome {
    label: String,
    /// The offset a kill point reported (a random kill cannot report).
    killed_at: Option<u64>,
    /// Bytes the origin sent to the killed run.
    served_before: u64,
    resumed_from: u64,
    /// Bytes fetched twice, counted at the origin: what the killed run was
    /// sent beyond the offset the restart resumed from.
    refetched: u64,
    restart: Duration,
}

/// Runs the restart and checks everything the harness promises, at the
/// destination and at the origin.
async fn restart_and_check(
    label: String,
    origin: &Origin,
    dest: &Dest,
    state: &Path,
    sha: &str,
    killed_at: Option<u64>,
    killed_run_from: usize,
) -> Outcome {
    // Every request of the killed run is in the log by now (its process is
    // gone); what the origin sent it is summed after the restart, when no
    // frame of it can still be on its way.
    let asked_before = origin.requests().len();
    let started = Instant::now();
    let out: Output = {
        let mut cmd = ferry(&origin.url(PATH), dest, state, &[]);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    };
    let restart = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{label}: restart failed: {stderr}");
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(v["sha256"], sha, "{label}");
    assert_eq!(dest.stored_sha256().await.as_deref(), Some(sha), "{label}");
    assert_eq!(dest.leftovers().await, 0, "{label}: staged bytes left");
    assert!(
        state_files(state).is_empty(),
        "{label}: state files left: {:?}",
        state_files(state)
    );
    let resumed_from = v["resumed_from"].as_u64().unwrap_or(0);
    // At the origin: the restart asked from where it said it resumed, and
    // was sent exactly the rest of the file.
    let asked: Vec<_> = origin.requests()[asked_before..]
        .iter()
        .filter(|r| r.path == PATH)
        .cloned()
        .collect();
    if resumed_from > 0 && resumed_from < LEN as u64 {
        assert_eq!(
            asked.first().and_then(|r| r.range.clone()),
            Some(format!("bytes={resumed_from}-")),
            "{label}: the restart's first request"
        );
    }
    let served = origin.served_by_request();
    let served_before: u64 = served[killed_run_from..asked_before].iter().sum();
    let served_restart: u64 = served[asked_before..].iter().sum();
    assert_eq!(
        served_restart,
        LEN as u64 - resumed_from,
        "{label}: the restart resumed from {resumed_from} but was sent {served_restart} bytes"
    );
    if let Some(k) = killed_at {
        assert!(
            served_before >= k,
            "{label}: killed at byte {k}, but the origin sent only {served_before}"
        );
    }
    let refetched = served_before.saturating_sub(resumed_from);
    assert!(
        served_before + served_restart <= LEN as u64 + dest.bound(),
        "{label}: the origin sent {served_before} bytes before the kill and {served_restart} after it: \
         {refetched} fetched twice (bound {})",
        dest.bound()
    );
    Outcome {
        label,
        killed_at,
        served_before,
        resumed_from,
        refetched,
        restart,
    }
}

/// SplitMix64: the kill times' generator, seeded (and printed) so that a
/// run can be replayed with `FERRY_CRASH_SEED`.
struct Seeded(u64);

impl Seeded {
    fn from_env_or_clock() -> Self {
        let seed = std::env::var("FERRY_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `range` (milliseconds).
    fn millis(&mut self, range: std::ops::Range<u64>) -> Duration {
        Duration::from_millis(range.start + self.next() % (range.end - range.start))
    }
}

/// Kill points and how many passes to let through first. Every point is
/// reached for both destinations except the commit ones, which are per
/// storage.
fn points(dest: &Dest) -> Vec<(&'static str, u32)> {
    let mut p = vec![
        // During a part upload / between checkpoints (chunk 61 of 192).
        ("ferry-after-write", 60),
        // Between a part (or N chunks) and its checkpoint.
        ("ferry-before-checkpoint", 2),
        // During the checkpoint write (state file written, not renamed).
        ("ferry-checkpoint-written", 2),
        // Just after a checkpoint.
        ("ferry-after-checkpoint", 2),
        // Everything staged, before Complete/rename.
        ("ferry-before-commit", 0),
    ];
    p.push(match dest {
        // During Complete: the object exists, the checkpoint too.
        Dest::S3 { .. } => ("ferry-s3-completed", 0),
        Dest::Dir(_) => ("ferry-fs-renamed", 0),
    });
    p
}

async fn harness(s3: bool, seed: u64) -> Vec<Outcome> {
    let origin = Origin::start().await.unwrap();
    let data = generate(LEN, 77);
    let sha = sha256_hex(&data);
    origin.serve(PATH, data, ORIGIN_PACE);
    let url = origin.url(PATH);
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let dest = if s3 {
        Dest::S3 {
            prefix: unique_prefix("crash"),
        }
    } else {
        Dest::Dir(work.path().join("out"))
    };
    let report = work.path().join("killed");
    let mut outcomes = Vec::new();

    for (point, skip) in points(&dest) {
        dest.clear().await;
        let _ = std::fs::remove_file(&report);
        let envs = [
            ("FAILPOINTS", format!("{point}={skip}*off->return")),
            ("FERRY_KILL_REPORT", report.display().to_string()),
        ];
        let killed_run_from = origin.requests().len();
        let out = {
            let mut cmd = ferry(&url, &dest, &state, &envs);
            tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap()
        };
        assert!(
            !out.status.success() && out.status.code().is_none(),
            "{point}: ferry was not killed (is the binary built with the failpoints feature?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reported = std::fs::read_to_string(&report).unwrap();
        let (name, offset) = reported.trim().split_once(' ').unwrap();
        assert_eq!(name, point);
        let killed_at: u64 = offset.parse().unwrap();
        outcomes.push(
            restart_and_check(
                format!("{} {point}", dest.name()),
                &origin,
                &dest,
                &state,
                &sha,
                Some(killed_at),
                killed_run_from,
            )
            .await,
        );
    }

    // How long a whole copy takes at the origin's pace, so that every
    // random kill falls inside one.
    dest.clear().await;
    let started = Instant::now();
    let whole = {
        let mut cmd = ferry(&url, &dest, &state, &[]);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    };
    assert!(whole.status.success());
    let copy_ms = started.elapsed().as_millis() as u64;
    assert!(copy_ms > 1_000, "a whole copy took {copy_ms} ms");

    // Random-time kills: `kill -9` at a seeded random moment of the copy,
    // the process checked alive just before.
    let mut rng = Seeded(seed ^ u64::from(s3));
    for _ in 0..RANDOM_KILLS {
        dest.clear().await;
        // Never past 80 % of the shortest a copy can take at the origin's
        // pace (1.92 s), however fast this machine is at the moment.
        let paced_ms = (LEN / (128 * 1024)) as u64 * 10;
        let delay = rng.millis(copy_ms / 20..copy_ms.min(paced_ms) * 4 / 5);
        let killed_run_from = origin.requests().len();
        let mut child = ferry(&url, &dest, &state, &[]).spawn().unwrap();
        tokio::time::sleep(delay).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "{}: the copy ended before its kill at {} ms (seed {seed})",
            dest.name(),
            delay.as_millis()
        );
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(status.code().is_none(), "killed by a signal: {status}");
        let label = format!("{} random kill at {} ms", dest.name(), delay.as_millis());
        outcomes.push(
            restart_and_check(label, &origin, &dest, &state, &sha, None, killed_run_from).await,
        );
    }
    outcomes
}

fn report(seed: u64, outcomes: &[Outcome]) {
    let mut lines = vec![
        format!("seed {seed} (FERRY_CRASH_SEED={seed} replays the kill times)\n"),
        "| case | killed at byte | origin sent before the kill | resumed from | fetched twice (origin) | restart to done |".to_owned(),
        "|---|---:|---:|---:|---:|---:|".to_owned(),
    ];
    for o in outcomes {
        lines.push(format!(
            "| {} | {} | {} | {} | {} | {:.2} s |",
            o.label,
            o.killed_at.map_or("-".into(), |k| k.to_string()),
            o.served_before,
            o.resumed_from,
            o.refetched,
            o.restart.as_secs_f64()
        ));
    }
    let resumed = outcomes.iter().filter(|o| o.resumed_from > 0).count();
    let most = outcomes.iter().map(|o| o.refetched).max().unwrap_or(0);
    lines.push(format!(
        "\n{} restarts, {} correct objects with no orphans, {resumed} continued from a checkpoint, \
         at most {most} bytes fetched twice",
        outcomes.len(),
        outcomes.len()
    ));
    let text = lines.join("\n");
    println!("{text}");
    if let Some(path) = std::env::var_os("FERRY_CRASH_REPORT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "{text}\n").unwrap();
    }
}

async fn crash_and_restart(s3: bool) {
    let seed = Seeded::from_env_or_clock().0;
    println!("crash harness seed: {seed}");
    let outcomes = harness(s3, seed).await;
    report(seed, &outcomes);
    assert_eq!(
        outcomes.len(),
        points(&Dest::Dir(PathBuf::new())).len() + RANDOM_KILLS
    );
    assert!(outcomes.iter().filter(|o| o.resumed_from > 0).count() > RANDOM_KILLS / 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_directory_copies_resume_correctly() {
    crash_and_restart(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_s3_copies_resume_correctly() {
    crash_and_restart(true).await;
}
