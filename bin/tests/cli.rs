//! The `ferry` binary, run as a user would, against a real origin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use ferry_tests::origin::{Behavior, Origin};
use ferry_tests::{generate, sha256_hex};

/// The ferry binary under test: `FERRY_BIN` (e.g. the release build, which
/// scripts/test.sh runs these tests against once more), else the test
/// build.
fn ferry_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("FERRY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ferry").to_owned())
    })
}

fn ferry(args: &[&str], cwd: &Path) -> Output {
    Command::new(ferry_bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("FERRY_LOG")
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn copy_into_a_directory_keeps_the_name_and_reports_json() {
    let origin = Origin::start().await.unwrap();
    let data = generate(1_500_000, 40);
    origin.serve("/dir/data.bin", data.clone(), Behavior::Normal);
    let work = tempfile::tempdir().unwrap();
    let sha = sha256_hex(&data);
    let url = origin.url("/dir/data.bin");
    let out = tokio::task::spawn_blocking({
        let cwd = work.path().to_path_buf();
        let sha = sha.clone();
        move || {
            ferry(
                &["copy", &url, "out/", "--sha256", &sha, "--compute-md5"],
                &cwd,
            )
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["bytes"], 1_500_000);
    assert_eq!(v["sha256"], sha);
    assert_eq!(v["md5"], ferry_tests::md5_hex(&data));
    assert_eq!(
        std::fs::read(work.path().join("out/data.bin")).unwrap(),
        data
    );
}

#[tokio::test]
async fn copy_to_a_file_path() {
    let origin = Origin::start().await.unwrap();
    let data = generate(10_000, 41);
    origin.serve("/a", data.clone(), Behavior::Chunked);
    let work = tempfile::tempdir().unwrap();
    let url = origin.url("/a");
    let cwd = work.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || ferry(&["copy", &url, "named.bin"], &cwd))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(work.path().join("named.bin")).unwrap(), data);
}

#[tokio::test]
async fn exit_codes_and_single_line_errors_leave_nothing_behind() {
    let origin = Origin::start().await.unwrap();
    origin.serve("/f.bin", generate(200_000, 42), Behavior::Normal);
    let work = tempfile::tempdir().unwrap();
    let url = origin.url("/f.bin");
    let missing = origin.url("/missing.bin");
    let cwd = work.path().to_path_buf();
    let wrong = "0".repeat(64);
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec![
                "copy".into(),
                url.clone(),
                "out/".into(),
                "--sha256".into(),
                wrong,
            ],
            3,
            "sha256 mismatch",
        ),
        (
            vec![
                "copy".into(),
                url.clone(),
                "out/".into(),
                "--max-size".into(),
                "100KiB".into(),
            ],
            4,
            "limit",
        ),
        (vec!["copy".into(), missing, "out/".into()], 5, "HTTP 404"),
        (
            vec!["copy".into(), "ftp://x/y".into(), "out/".into()],
            2,
            "scheme `ftp`",
        ),
        (
            vec!["copy".into(), url.clone(), "out/".into(), "--bogus".into()],
            2,
            "--bogus",
        ),
        (
            vec![
                "copy".into(),
                url,
                "out/".into(),
                "--md5".into(),
                "zz".into(),
            ],
            2,
            "32 hex characters",
        ),
    ];
    for (args, code, needle) in cases {
        let cwd = cwd.clone();
        let shown = args.join(" ");
        let out = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ferry(&args, &cwd)
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{shown}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("ferry: error: "), "{shown}: {stderr}");
        assert!(
            last.contains(needle),
            "{shown}: wanted `{needle}` in {last}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(
        entries(&work.path().join("out")).is_empty(),
        "{:?}",
        entries(&work.path().join("out"))
    );
}

#[tokio::test]
async fn secrets_in_the_source_never_reach_the_output() {
    let work = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!(
        "http://admin:hunter2@127.0.0.1:{port}/f.bin?X-Amz-Signature=deadbeef&token=t0psecret"
    );
    let cwd = work.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || ferry(&["copy", &url, "out/", "--json"], &cwd))
        .await
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(5), "{all}");
    for secret in ["hunter2", "deadbeef", "t0psecret", "admin"] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
}

#[tokio::test]
async fn local_paths_work_as_sources() {
    let work = tempfile::tempdir().unwrap();
    let data = generate(70_000, 43);
    std::fs::write(work.path().join("in.bin"), &data).unwrap();
    let cwd = work.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || ferry(&["copy", "in.bin", "copy/"], &cwd))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(work.path().join("copy/in.bin")).unwrap(),
        data
    );
}

#[tokio::test]
async fn copy_to_s3_prefix_and_key_with_metadata() {
    let env = ferry_tests::garage::garage();
    let origin = Origin::start().await.unwrap();
    let data = generate(9 * 1024 * 1024 + 3, 44);
    origin.serve("/s3/data.bin", data.clone(), Behavior::Normal);
    let prefix = ferry_tests::garage::unique_prefix("cli");
    let work = tempfile::tempdir().unwrap();
    let sha = sha256_hex(&data);
    let url = origin.url("/s3/data.bin");
    let dest_prefix = format!("s3://{}/{prefix}/", env.bucket);
    let dest_key = format!("s3://{}/{prefix}/named/copy.bin", env.bucket);
    let cwd = work.path().to_path_buf();
    let endpoint = env.endpoint.clone();
    let (a, b, bad) = tokio::task::spawn_blocking(move || {
        let a = ferry(
            &[
                "copy",
                &url,
                &dest_prefix,
                "--sha256",
                &sha,
                "--endpoint-url",
                &endpoint,
            ],
            &cwd,
        );
        let b = ferry(
            &[
                "copy",
                &url,
                &dest_key,
                "--part-size",
                "5MiB",
                "--compute-md5",
            ],
            &cwd,
        );
        let bad = ferry(
            &[
                "copy",
                &url,
                &format!("{dest_prefix}bad.bin"),
                "--sha256",
                &"1".repeat(64),
            ],
            &cwd,
        );
        (a, b, bad)
    })
    .await
    .unwrap();
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(
        json(&a)["destination"],
        format!("s3://{}/{prefix}/data.bin", env.bucket)
    );
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    assert_eq!(bad.status.code(), Some(3));

    let svc = ferry_tests::garage::service(&env.endpoint).await;
    // With --sha256 the digest is on the object (set at create); without,
    // it is in the result only (--digest-metadata auto: no second write).
    for (key, digest) in [
        (format!("{prefix}/data.bin"), Some(sha256_hex(&data))),
        (format!("{prefix}/named/copy.bin"), None),
    ] {
        let meta = svc
            .head(&env.bucket, &key)
            .await
            .unwrap()
            .expect("object exists");
        assert_eq!(meta.size, data.len() as u64);
        assert_eq!(meta.sha256_hex, digest, "{key}");
    }
    assert!(
        svc.head(&env.bucket, &format!("{prefix}/bad.bin"))
            .await
            .unwrap()
            .is_none()
    );
    let left = svc
        .list_incomplete_uploads(&env.bucket, Some(&prefix), std::time::Duration::ZERO)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn s3_destination_errors_are_clear() {
    let env = ferry_tests::garage::garage();
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().to_path_buf();
    let endpoint = env.endpoint.clone();
    let outs = tokio::task::spawn_blocking(move || {
        vec![
            (
                ferry(
                    &[
                        "copy",
                        "http://127.0.0.1:1/f.bin",
                        "s3://no-such-bucket-ferry/x",
                        "--endpoint-url",
                        &endpoint,
                    ],
                    &cwd,
                ),
                6,
                "bucket does not exist",
            ),
            (
                ferry(
                    &["copy", "http://127.0.0.1:1/f.bin", "s3://Bad_Bucket/x"],
                    &cwd,
                ),
                2,
                "not a valid bucket name",
            ),
            (
                ferry(
                    &[
                        "copy",
                        "http://127.0.0.1:1/f.bin",
                        "s3://ferry-test/x",
                        "--part-size",
                        "1MiB",
                    ],
                    &cwd,
                ),
                2,
                "5 MiB minimum",
            ),
            (
                ferry(&["copy", "http://127.0.0.1:1/", "s3://ferry-test/p/"], &cwd),
                2,
                "no file name",
            ),
        ]
    })
    .await
    .unwrap();
    for (out, code, needle) in outs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(
            stderr.lines().last().unwrap_or_default().contains(needle),
            "{needle}: {stderr}"
        );
    }
}

#[tokio::test]
async fn several_sources_into_a_directory_run_concurrently_with_one_result_each() {
    let origin = Origin::start().await.unwrap();
    let mut files = Vec::new();
    for i in 0..5 {
        let data = generate(200_000 + i * 1000, 45 + i as u64);
        origin.serve(&format!("/m/f{i}.bin"), data.clone(), Behavior::Normal);
        files.push(data);
    }
    origin.serve(
        "/m/missing-later.bin",
        Vec::new(),
        Behavior::FailFirst {
            times: 100,
            status: 404,
        },
    );
    let work = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec!["copy".into()];
    args.extend((0..5).map(|i| origin.url(&format!("/m/f{i}.bin"))));
    args.push(origin.url("/m/missing-later.bin"));
    args.extend(["out/".into(), "--concurrency".into(), "3".into()]);
    let cwd = work.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ferry(&args, &cwd)
    })
    .await
    .unwrap();
    // One file failed (404): the exit code says so, the others are stored.
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines.iter().filter(|v| v["status"] == "ok").count(), 5);
    for (i, data) in files.iter().enumerate() {
        assert_eq!(
            &std::fs::read(work.path().join(format!("out/f{i}.bin"))).unwrap(),
            data
        );
    }
    assert!(!work.path().join("out/missing-later.bin").exists());
}

#[tokio::test]
async fn several_sources_need_a_directory_and_distinct_names() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().to_path_buf();
    let outs = tokio::task::spawn_blocking(move || {
        vec![
            (
                ferry(
                    &["copy", "http://h/a.bin", "http://h/b.bin", "file.bin"],
                    &cwd,
                ),
                "must be a directory",
            ),
            (
                ferry(&["copy", "http://h/a.bin", "http://g/a.bin", "out/"], &cwd),
                "both be stored as `a.bin`",
            ),
            (
                ferry(
                    &[
                        "copy",
                        "http://h/a.bin",
                        "http://h/b.bin",
                        "out/",
                        "--sha256",
                        &"a".repeat(64),
                    ],
                    &cwd,
                ),
                "single SOURCE",
            ),
        ]
    })
    .await
    .unwrap();
    for (out, needle) in outs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    assert!(!work.path().join("out").exists() || entries(&work.path().join("out")).is_empty());
}

#[test]
fn a_missing_required_flag_is_named_on_the_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry(
        &["serve", "--webhook-url", "http://127.0.0.1:1/h"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--webhook-secret"), "{stderr}");
}

#[tokio::test]
async fn resume_without_a_checkpoint_is_a_clear_usage_error() {
    let origin = Origin::start().await.unwrap();
    origin.serve("/r.bin", generate(1000, 1), Behavior::Normal);
    let work = tempfile::tempdir().unwrap();
    let url = origin.url("/r.bin");
    let out = tokio::task::spawn_blocking({
        let cwd = work.path().to_path_buf();
        move || {
            ferry(
                &["copy", &url, "out/", "--resume", "--state-dir", "st"],
                &cwd,
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--resume: there is no checkpoint of"),
        "{stderr}"
    );
    assert!(entries(&work.path().join("out")).is_empty());
    assert!(origin.requests().is_empty(), "nothing was fetched");
}

#[tokio::test]
async fn an_unusable_default_state_directory_only_costs_the_checkpoints() {
    let origin = Origin::start().await.unwrap();
    let data = generate(100_000, 2);
    origin.serve("/w.bin", data.clone(), Behavior::Normal);
    let work = tempfile::tempdir().unwrap();
    // HOME is a file: ~/.local/state cannot be created.
    let home = work.path().join("home-is-a-file");
    std::fs::write(&home, b"x").unwrap();
    let url = origin.url("/w.bin");
    let out = tokio::task::spawn_blocking({
        let cwd = work.path().to_path_buf();
        move || {
            Command::new(ferry_bin())
                .args(["copy", &url, "out/"])
                .current_dir(&cwd)
                .env("HOME", &home)
                .env_remove("XDG_STATE_HOME")
                .env_remove("FERRY_STATE_DIR")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("copying without checkpoints"), "{stderr}");
    assert_eq!(std::fs::read(work.path().join("out/w.bin")).unwrap(), data);
}

/// One retry loop: with `--retries 2`, a source that answers 503 forever is
/// asked exactly three times (counted at the origin), then the copy fails
/// with the source's exit code and stores nothing.
#[tokio::test]
async fn a_source_that_always_answers_503_costs_retries_plus_one_requests() {
    let origin = Origin::start().await.unwrap();
    origin.serve(
        "/down.bin",
        generate(10_000, 41),
        Behavior::FailFirst {
            times: usize::MAX,
            status: 503,
        },
    );
    let work = tempfile::tempdir().unwrap();
    let url = origin.url("/down.bin");
    let cwd = work.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        ferry(
            &[
                "copy",
                &url,
                "out/",
                "--retries",
                "2",
                "--json",
                "--no-checkpoint",
            ],
            &cwd,
        )
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["code"], "source_error");
    assert_eq!(origin.requests().len(), 3);
    assert!(entries(&work.path().join("out")).is_empty());
}

/// Ctrl-C (SIGINT) mid-copy: exit 130, a one-line message, and nothing
/// stored: no destination file, no temp file.
#[tokio::test]
async fn an_interrupted_copy_exits_130_and_stores_nothing() {
    let origin = Origin::start().await.unwrap();
    origin.serve(
        "/slow.bin",
        generate(4_000_000, 42),
        Behavior::Throttled {
            bytes_per_tick: 50_000,
            tick: std::time::Duration::from_millis(50),
        },
    );
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("out");
    let child = std::process::Command::new(ferry_bin())
        .args(["copy", &origin.url("/slow.bin"), "out/", "--no-checkpoint"])
        .current_dir(work.path())
        .env_remove("FERRY_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the copy is under way: its temp file exists.
    let started = std::time::Instant::now();
    while entries(&out_dir).is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the copy never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(entries(&out_dir).is_empty(), "{:?}", entries(&out_dir));
}

/// `--progress lines`: short progress lines on stderr during a slow copy
/// (what CI and Kubernetes logs show); none with `--progress none`; the
/// JSON result on stdout is the same either way.
#[tokio::test]
async fn progress_lines_appear_in_logs_and_the_json_result_is_unchanged() {
    let origin = Origin::start().await.unwrap();
    let data = generate(2_000_000, 43);
    origin.serve(
        "/slow.bin",
        data.clone(),
        Behavior::Throttled {
            bytes_per_tick: 100_000,
            tick: std::time::Duration::from_millis(100),
        },
    );
    let url = origin.url("/slow.bin");
    let run = |mode: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let work = tempfile::tempdir().unwrap();
            let out = ferry(
                &[
                    "copy",
                    &url,
                    "out/",
                    "--progress",
                    mode,
                    "--progress-every",
                    "300ms",
                    "--no-checkpoint",
                ],
                work.path(),
            );
            (out, work)
        })
    };
    let (lines, _w1) = run("lines").await.unwrap();
    let (none, _w2) = run("none").await.unwrap();
    for out in [&lines, &none] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = json(out);
        assert_eq!(v["status"], "ok");
        assert_eq!(v["sha256"], sha256_hex(&data));
    }
    let stderr = String::from_utf8_lossy(&lines.stderr);
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("ferry: slow.bin: "))
        .collect();
    assert!(progress.len() >= 2, "{stderr}");
    assert!(
        progress
            .iter()
            .all(|l| l.contains("MiB") || l.contains("KiB")),
        "{progress:?}"
    );
    assert!(
        progress
            .iter()
            .any(|l| l.contains('%') && l.contains("ETA")),
        "{progress:?}"
    );
    assert!(
        String::from_utf8_lossy(&none.stderr).trim().is_empty(),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
}

/// Logs written to a pipe carry no colour escape codes.
#[tokio::test]
async fn piped_logs_have_no_escape_codes() {
    let origin = Origin::start().await.unwrap();
    origin.serve(
        "/busy.bin",
        generate(10_000, 44),
        Behavior::FailFirst {
            times: 1,
            status: 503,
        },
    );
    let url = origin.url("/busy.bin");
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        ferry(&["copy", &url, "out/", "--no-checkpoint"], &cwd)
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The retry was logged (a warning), without escape codes.
    assert!(stderr.contains("retrying source"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

/// A successful copy from a URL carrying userinfo and a presigned query,
/// with debug logs on: the JSON shows the source redacted, and no secret
/// appears on stdout or stderr.
#[tokio::test]
async fn a_successful_copy_shows_no_secret_even_at_debug_level() {
    let origin = Origin::start().await.unwrap();
    origin.serve("/s.bin", generate(50_000, 45), Behavior::Normal);
    let url = origin
        .url("/s.bin?X-Amz-Signature=deadbeef77&token=t0psecret77")
        .replace("http://", "http://admin77:hunter277@");
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(ferry_bin())
            .args(["copy", &url, "out/", "--json", "--no-checkpoint"])
            .current_dir(&cwd)
            .env("FERRY_LOG", "debug")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("DEBUG"), "debug logs were on: {stderr}");
    let v = json(&out);
    assert!(v["source"].as_str().unwrap().contains("REDACTED"), "{v}");
    for secret in ["hunter277", "deadbeef77", "t0psecret77", "admin77"] {
        assert!(!stdout.contains(secret), "{secret} in stdout: {stdout}");
        assert!(!stderr.contains(secret), "{secret} in stderr");
    }
}

/// `--source-guard on` from the command line: a loopback source is refused
/// before any connection (the origin sees nothing), unless allowed.
#[tokio::test]
async fn the_source_guard_refuses_loopback_from_the_cli_unless_allowed() {
    let origin = Origin::start().await.unwrap();
    origin.serve("/g.bin", generate(10_000, 46), Behavior::Normal);
    let url = origin.url("/g.bin");
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().to_path_buf();
    let (refused, allowed) = tokio::task::spawn_blocking(move || {
        let refused = ferry(
            &["copy", &url, "out/", "--source-guard", "on", "--json"],
            &cwd,
        );
        let allowed = ferry(
            &[
                "copy",
                &url,
                "out/",
                "--source-guard",
                "on",
                "--allow-source",
                "127.0.0.1",
                "--json",
            ],
            &cwd,
        );
        (refused, allowed)
    })
    .await
    .unwrap();
    assert_eq!(refused.status.code(), Some(5));
    assert_eq!(json(&refused)["code"], "source_forbidden");
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    // Only the allowed copy reached the origin.
    assert_eq!(origin.requests().len(), 1);
}

/// 408, 425 and 429 answered before the body (with `Retry-After`) are
/// retried by the binary, and the copy succeeds.
#[tokio::test]
async fn statuses_that_say_later_are_retried_through_the_binary() {
    let origin = Origin::start().await.unwrap();
    for status in [408u16, 425, 429] {
        origin.serve(
            &format!("/later-{status}.bin"),
            generate(20_000, u64::from(status)),
            Behavior::FailFirst { times: 2, status },
        );
    }
    for status in [408u16, 425, 429] {
        let url = origin.url(&format!("/later-{status}.bin"));
        let work = tempfile::tempdir().unwrap();
        let cwd = work.path().to_path_buf();
        let out = tokio::task::spawn_blocking(move || {
            ferry(&["copy", &url, "out/", "--no-checkpoint", "--json"], &cwd)
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{status}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let asked = origin
            .requests()
            .iter()
            .filter(|r| r.path == format!("/later-{status}.bin"))
            .count();
        assert_eq!(asked, 3, "{status}: two refusals, then the body");
    }
}

/// The shipped binary has no kill points: `FAILPOINTS` naming one (as the
/// crash harness arms `ferry-crashtest`) changes nothing: the copy
/// completes, stores the file and prints no warning about it.
#[tokio::test]
async fn failpoints_have_no_effect_on_the_shipped_binary() {
    let origin = Origin::start().await.unwrap();
    let data = generate(600_000, 47);
    origin.serve("/fp.bin", data.clone(), Behavior::Normal);
    let url = origin.url("/fp.bin");
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().to_path_buf();
    let report = work.path().join("killed");
    let report_s = report.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(ferry_bin())
            .args(["copy", &url, "out/", "--json"])
            .current_dir(&cwd)
            .env_remove("FERRY_LOG")
            .env(
                "FAILPOINTS",
                "ferry-after-write=off->return;ferry-before-checkpoint=off->return;ferry-fs-renamed=off->return",
            )
            .env("FERRY_KILL_REPORT", &report_s)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["sha256"], sha256_hex(&data));
    assert_eq!(std::fs::read(work.path().join("out/fp.bin")).unwrap(), data);
    assert!(!report.exists(), "no kill point ran");
    assert!(
        String::from_utf8_lossy(&out.stderr).trim().is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ferry copy` has no size limit by default: a 6 GiB file (sparse, so the
/// test costs no disk to prepare) is copied and verified, streamed to
/// standard output (no disk needed) and, where the disk has room for it,
/// into a directory; `--max-size` still opts in to a limit.
#[tokio::test]
async fn a_file_over_5_gib_is_copied_with_the_defaults() {
    const SIX_GIB: u64 = 6 * 1024 * 1024 * 1024;
    // sha256 of 6 GiB of zeros (`head -c 6G /dev/zero | sha256sum`).
    const ZEROS_SHA256: &str = "5c32c2b28999325bc5ad39d6530bcb46fbdf1f86375a991b7269764c50b0d109";
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(SIX_GIB)
        .unwrap();
    let cwd = work.path().to_path_buf();
    let limited = tokio::task::spawn_blocking({
        let cwd = cwd.clone();
        move || {
            ferry(
                &["copy", "disk.img", "limited/", "--max-size", "5GiB"],
                &cwd,
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(
        limited.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&limited.stderr)
    );
    // To stdout (thrown away): the result JSON is on stderr.
    let streamed = tokio::task::spawn_blocking({
        let cwd = cwd.clone();
        move || {
            Command::new(ferry_bin())
                .args(["copy", "disk.img", "-", "--json", "--progress", "none"])
                .current_dir(&cwd)
                .env_remove("FERRY_LOG")
                .stdout(std::process::Stdio::null())
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&streamed.stderr);
    assert!(streamed.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stderr.trim().lines().last().unwrap()).unwrap();
    assert_eq!(v["bytes"], SIX_GIB);
    assert_eq!(v["sha256"], ZEROS_SHA256);
    // Into a directory, when the disk can take 6 GiB (and some room).
    let free = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(work.path())
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.lines().nth(1).and_then(|l| l.trim().parse::<u64>().ok()))
        .unwrap_or(0);
    if free < SIX_GIB + (4 << 30) {
        eprintln!("only {free} bytes free: the 6 GiB directory copy is left out this run");
        return;
    }
    let copied = tokio::task::spawn_blocking(move || {
        ferry(&["copy", "disk.img", "out/", "--no-checkpoint"], &cwd)
    })
    .await
    .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let v = json(&copied);
    assert_eq!(v["bytes"], SIX_GIB);
    assert_eq!(v["sha256"], ZEROS_SHA256);
    let stored = work.path().join("out/disk.img");
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), SIX_GIB);
    std::fs::remove_file(stored).unwrap();
}

/// What an installed ferry offers besides copying: a version naming its
/// commit and build date, shell completions and a man page (the Debian
/// package ships them; scripts/package.sh --check installs it in CI).
#[test]
fn version_completions_and_man_page() {
    let cwd = std::env::temp_dir();
    let version = ferry(&["--version"], &cwd);
    assert!(version.status.success());
    let text = String::from_utf8_lossy(&version.stdout);
    // `ferry 0.1.0 (<commit> <yyyy-mm-dd>)`
    let inner = text
        .trim()
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no (commit date) in {text}"));
    let (commit, date) = inner.split_once(' ').unwrap();
    assert!(commit.len() >= 7, "{text}");
    assert_eq!(date.len(), 10, "{text}");
    for shell in ["bash", "zsh", "fish"] {
        let out = ferry(&["completions", shell], &cwd);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("copy") && script.contains("--files-from"),
            "{shell}"
        );
    }
    let man = ferry(&["manpage"], &cwd);
    assert!(man.status.success());
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH ferry 1"));
}

/// Exit 1 (an unclassified failure): what ferry prints cannot be written
/// (stdout is a full device). One error line, no panic.
#[test]
fn output_that_cannot_be_written_exits_1_with_one_line() {
    let work = tempfile::tempdir().unwrap();
    for args in [&["manpage"][..], &["completions", "bash"][..]] {
        let out = Command::new(ferry_bin())
            .args(args)
            .current_dir(work.path())
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("ferry: error: cannot write the ")
                && stderr.contains("No space left on device"),
            "{args:?}: {stderr}"
        );
    }
}
