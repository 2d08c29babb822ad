//! The crash harness: `ferry copy` of a multi-part file is killed at exact
//! kill points (the `fail` crate's failpoints, compiled into test builds)
//! and at random times (`kill -9`), then run again with the same SOURCE and
//! DEST. Every time: the object's SHA-256 equals the source's, no temp file,
//! incomplete upload or state file is left, and the bytes fetched again
//! after the restart are at most one part (S3) or two checkpoint intervals
//! (directory: 2 x 4 MiB, the size of an S3 part).
//! Figures are printed (and appended to `$FERRY_CRASH_REPORT` if set) for
//! docs/reliability.md.
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

    /// The most a restart may fetch again.
    fn bound(&self) -> u64 {
        match self {
            // Two checkpoint intervals (5 chunks, at least 4 MiB): an fsync
            // runs in the background while the next interval is written.
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
    for _ in 0..100 {
        if state_files(&state).iter().any(|f| f.ends_with(".lock")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    killed_at: Option<u64>,
    resumed_from: u64,
    refetched: Option<u64>,
    restart: Duration,
}

/// Runs the restart and checks everything the harness promises.
async fn restart_and_check(
    label: String,
    url: &str,
    dest: &Dest,
    state: &Path,
    sha: &str,
    killed_at: Option<u64>,
) -> Outcome {
    let started = Instant::now();
    let out: Output = {
        let mut cmd = ferry(url, dest, state, &[]);
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
    let refetched = killed_at.map(|k| k.saturating_sub(resumed_from));
    if let Some(refetched) = refetched {
        assert!(
            refetched <= dest.bound(),
            "{label}: killed at {killed_at:?}, resumed from {resumed_from}: {refetched} bytes fetched again (bound {})",
            dest.bound()
        );
    }
    Outcome {
        label,
        killed_at,
        resumed_from,
        refetched,
        restart,
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

async fn harness(s3: bool) -> Vec<Outcome> {
    let origin = Origin::start().await.unwrap();
    let data = generate(LEN, 77);
    let sha = sha256_hex(&data);
    origin.serve("/f.bin", data, Behavior::Normal);
    let url = origin.url("/f.bin");
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
                &url,
                &dest,
                &state,
                &sha,
                Some(killed_at),
            )
            .await,
        );
    }

    // Random-time kills: kill -9 at a uniformly random moment of the copy.
    for round in 0..4u64 {
        dest.clear().await;
        let delay = Duration::from_millis(150 + (round * 7919 + 311) % 900);
        let mut child = ferry(&url, &dest, &state, &[]).spawn().unwrap();
        tokio::time::sleep(delay).await;
        let finished_first = child.try_wait().unwrap().is_some();
        let _ = Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = child.wait();
        let label = format!(
            "{} random kill at {} ms{}",
            dest.name(),
            delay.as_millis(),
            if finished_first {
                " (copy had finished)"
            } else {
                ""
            }
        );
        outcomes.push(restart_and_check(label, &url, &dest, &state, &sha, None).await);
    }
    outcomes
}

fn report(outcomes: &[Outcome]) {
    let mut lines = vec![
        "| case | killed at byte | resumed from | fetched again | restart to done |".to_owned(),
        "|---|---:|---:|---:|---:|".to_owned(),
    ];
    for o in outcomes {
        lines.push(format!(
            "| {} | {} | {} | {} | {:.2} s |",
            o.label,
            o.killed_at.map_or("-".into(), |k| k.to_string()),
            o.resumed_from,
            o.refetched.map_or("-".into(), |r| r.to_string()),
            o.restart.as_secs_f64()
        ));
    }
    let resumed = outcomes.iter().filter(|o| o.resumed_from > 0).count();
    lines.push(format!(
        "\n{} restarts, {} correct objects with no orphans, {resumed} continued from a checkpoint",
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

#[tokio::test(flavor = "multi_thread")]
async fn killed_directory_copies_resume_correctly() {
    let outcomes = harness(false).await;
    report(&outcomes);
    assert!(outcomes.iter().any(|o| o.resumed_from > 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_s3_copies_resume_correctly() {
    let outcomes = harness(true).await;
    report(&outcomes);
    assert!(outcomes.iter().any(|o| o.resumed_from > 0));
}
