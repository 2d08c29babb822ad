//! The `ferry` binary, run as a user would, against a real origin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use ferry_tests::origin::{Behavior, Origin};
use ferry_tests::{generate, sha256_hex};

fn ferry(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
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
