//! The sources users have, through the `ferry` binary: HTTPS with a private
//! CA (and HTTP/2), request headers that stay secret, stdin and stdout as
//! `-`, and URL lists.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use ferry_tests::origin::{Behavior, Origin};
use ferry_tests::server::TestCa;
use ferry_tests::{files_under, generate, sha256_hex};

/// The ferry binary under test: `FERRY_BIN` (the release build, in
/// scripts/test.sh's second pass), else the test build.
fn ferry_bin() -> String {
    std::env::var("FERRY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ferry").to_owned())
}

/// Runs ferry in `cwd` with `env` set (and no inherited FERRY_* or
/// SSL_CERT_* variables), feeding `stdin`.
async fn run(args: &[&str], cwd: &Path, env: &[(&str, &str)], stdin: Option<Vec<u8>>) -> Output {
    ferry_tests::serve_process::run_ferry(&ferry_bin(), args, cwd, env, stdin).await
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn https_sources_are_checked_against_the_given_ca_and_speak_http2() {
    let ca = TestCa::new().unwrap();
    let origin = Origin::start_tls(&ca).await.unwrap();
    let data = generate(300_000, 61);
    origin.serve("/secure.bin", data.clone(), Behavior::Normal);
    let url = origin.url("/secure.bin");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let work = tempfile::tempdir().unwrap();
    let ca_file = work.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let ca_path = ca_file.to_str().unwrap();

    // Untrusted: fails at once (one connection, no retry) with its own
    // exit code and a hint, and stores nothing.
    let out = run(
        &["copy", &url, "out/", "--no-checkpoint"],
        work.path(),
        &[],
        None,
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(10), "{err}");
    assert!(err.contains("--ca-cert"), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(
        !err.contains("retrying"),
        "an untrusted certificate is not retried: {err}"
    );
    assert_eq!(origin.connections(), 1, "one connection attempt");
    assert_eq!(json(&out)["code"], "source_tls");
    assert!(files_under(&work.path().join("out")).is_empty());

    // --ca-cert: trusted; ALPN picks HTTP/2.
    let out = run(
        &[
            "copy",
            &url,
            "out/",
            "--no-checkpoint",
            "--ca-cert",
            ca_path,
        ],
        work.path(),
        &[],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["sha256"], sha256_hex(&data));
    assert_eq!(
        std::fs::read(work.path().join("out/secure.bin")).unwrap(),
        data
    );
    let versions: Vec<String> = origin
        .requests()
        .iter()
        .map(|r| r.version.clone())
        .collect();
    assert_eq!(
        versions,
        vec!["HTTP/2.0".to_owned()],
        "one request, over HTTP/2"
    );

    // SSL_CERT_FILE is honoured by the default roots (webpki + native)...
    std::fs::remove_dir_all(work.path().join("out")).unwrap();
    let out = run(
        &["copy", &url, "out/", "--no-checkpoint"],
        work.path(),
        &[("SSL_CERT_FILE", ca_path)],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    // ... and not by --tls-roots webpki, which trusts only the compiled-in roots.
    let out = run(
        &[
            "copy",
            &url,
            "again/",
            "--no-checkpoint",
            "--tls-roots",
            "webpki",
        ],
        work.path(),
        &[("SSL_CERT_FILE", ca_path)],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));

    // A --ca-cert that cannot be used is a usage error naming the file.
    let not_pem = work.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    for bad in [not_pem.to_str().unwrap(), "/nonexistent/ca.pem"] {
        let out = run(
            &["copy", &url, "bad/", "--ca-cert", bad],
            work.path(),
            &[],
            None,
        )
        .await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--ca-cert") && err.contains(bad), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[tokio::test]
async fn headers_reach_the_origin_and_no_other_host_and_are_never_shown() {
    let origin = Origin::start().await.unwrap();
    let other = Origin::start().await.unwrap();
    let data = generate(200_000, 62);
    origin.serve("/private.bin", data.clone(), Behavior::Normal);
    origin.serve(
        "/same.bin",
        Vec::<u8>::new(),
        Behavior::Redirect {
            to: "/private.bin".into(),
        },
    );
    // Another origin (another host name and port).
    other.serve("/mirror.bin", data.clone(), Behavior::Normal);
    let cross = other.url("/mirror.bin").replace("127.0.0.1", "localhost");
    origin.serve(
        "/away.bin",
        Vec::<u8>::new(),
        Behavior::Redirect { to: cross },
    );
    origin.require_header("Authorization", "Bearer s3cr3t-t0ken-81");
    let work = tempfile::tempdir().unwrap();
    let headers = [
        "--header",
        "Authorization: Bearer s3cr3t-t0ken-81",
        "-H",
        "X-Api-Key: k3y-v4lue-82",
    ];

    // Without the header the origin refuses.
    let url = origin.url("/private.bin");
    let out = run(&["copy", &url, "none/"], work.path(), &[], None).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));

    // With it, directly and through a redirect on the same origin, at
    // debug level: stored, and no value in any output.
    for path in ["/private.bin", "/same.bin"] {
        let url = origin.url(path);
        let mut args = vec!["copy", url.as_str(), "out/", "--json"];
        args.extend(headers);
        let out = run(&args, work.path(), &[("FERRY_LOG", "debug")], None).await;
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("DEBUG"), "debug logs were on");
        let stdout = String::from_utf8_lossy(&out.stdout);
        for secret in ["s3cr3t-t0ken-81", "k3y-v4lue-82"] {
            assert!(
                !stdout.contains(secret) && !err.contains(secret),
                "{secret} shown"
            );
        }
        std::fs::remove_dir_all(work.path().join("out")).unwrap();
    }
    let last = origin.requests().pop().unwrap();
    assert_eq!(last.path, "/private.bin");
    assert_eq!(last.headers["x-api-key"], "k3y-v4lue-82");

    // A redirect to another host: followed, without the headers.
    let url = origin.url("/away.bin");
    let mut args = vec!["copy", url.as_str(), "out/", "--json"];
    args.extend(headers);
    let out = run(&args, work.path(), &[], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["sha256"], sha256_hex(&data));
    let at_other = other.requests();
    assert_eq!(at_other.len(), 1);
    for name in ["authorization", "x-api-key"] {
        assert!(
            !at_other[0].headers.contains_key(name),
            "{name} was sent to another host"
        );
    }
    let first = origin.requests().pop().unwrap();
    assert_eq!(first.path, "/away.bin");
    assert_eq!(first.headers["authorization"], "Bearer s3cr3t-t0ken-81");

    // FERRY_HEADER: one header a line.
    let url = origin.url("/private.bin");
    let out = run(
        &["copy", &url, "env/"],
        work.path(),
        &[(
            "FERRY_HEADER",
            "Authorization: Bearer s3cr3t-t0ken-81\nX-Trace: 1",
        )],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(origin.requests().pop().unwrap().headers["x-trace"], "1");

    // A malformed or forbidden header: a usage error that names the flag
    // and never echoes the value.
    for bad in [
        "Authorization Bearer s3cr3t-t0ken-81",
        "Host: s3cr3t-t0ken-81",
    ] {
        let out = run(
            &["copy", &url, "bad/", "--header", bad],
            work.path(),
            &[],
            None,
        )
        .await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--header #1"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}

#[tokio::test]
async fn dash_reads_stdin_and_writes_stdout_and_never_makes_a_file_named_dash() {
    let origin = Origin::start().await.unwrap();
    let data = generate(700_000, 63);
    origin.serve("/d/file.bin", data.clone(), Behavior::Normal);
    let url = origin.url("/d/file.bin");
    let sha = sha256_hex(&data);
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();

    // stdin -> a file path, checked against --sha256.
    let out = run(
        &["copy", "-", "out/piped.bin", "--sha256", &sha],
        cwd,
        &[],
        Some(data.to_vec()),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["source"], "stdin");
    assert_eq!(v["sha256"], sha);
    assert_eq!(std::fs::read(cwd.join("out/piped.bin")).unwrap(), data);
    // stdin into a directory: no name to give the file.
    let out = run(&["copy", "-", "out/"], cwd, &[], Some(b"x".to_vec())).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("standard input has no file name"),
        "{}",
        stderr(&out)
    );
    // stdin cannot resume.
    let out = run(
        &["copy", "-", "out/r.bin", "--resume"],
        cwd,
        &[],
        Some(b"x".to_vec()),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // URL -> stdout: exactly the bytes, nothing else on stdout, no result
    // on stderr without --json.
    let out = run(&["copy", &url, "-"], cwd, &[], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout[..] == data[..], "stdout holds exactly the file");
    assert!(!stderr(&out).contains("sha256"), "{}", stderr(&out));
    // With --json the result goes to stderr.
    let out = run(
        &["copy", &url, "-", "--json", "--progress", "none"],
        cwd,
        &[],
        None,
    )
    .await;
    assert!(out.stdout[..] == data[..]);
    let last = stderr(&out).trim().lines().last().unwrap().to_owned();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["sha256"], sha);
    assert_eq!(v["destination"], "-");
    // A wrong digest: the bytes are out already, the exit code says so.
    let out = run(
        &["copy", &url, "-", "--sha256", &"0".repeat(64)],
        cwd,
        &[],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), data.len());
    // stdin -> stdout.
    let out = run(&["copy", "-", "-"], cwd, &[], Some(data.to_vec())).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout[..] == data[..]);

    // None of that made a file named `-`; `./-` is one, on purpose.
    assert!(!cwd.join("-").exists());
    assert!(!cwd.join("out/-").exists());
    std::fs::write(cwd.join("-"), b"a file named dash").unwrap();
    let out = run(&["copy", "./-", "out/dash.txt"], cwd, &[], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(cwd.join("out/dash.txt")).unwrap(),
        b"a file named dash"
    );
    let out = run(
        &["copy", "-", "out/stdin.txt"],
        cwd,
        &[],
        Some(b"from stdin".to_vec()),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(cwd.join("out/stdin.txt")).unwrap(),
        b"from stdin"
    );
}

#[tokio::test]
async fn stdin_to_s3_is_buffered_in_parts_and_verified() {
    let env = ferry_tests::garage::garage();
    let data = generate(12 * 1024 * 1024 + 5, 64);
    let sha = sha256_hex(&data);
    let prefix = ferry_tests::garage::unique_prefix("stdin");
    let key = format!("{prefix}/from-stdin.bin");
    let dest = format!("s3://{}/{key}", env.bucket);
    let work = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "copy",
            "-",
            &dest,
            "--endpoint-url",
            &env.endpoint,
            "--part-size",
            "5MiB",
        ],
        work.path(),
        &[],
        Some(data.to_vec()),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["sha256"], sha);
    let svc = ferry_tests::garage::service(&env.endpoint).await;
    let meta = svc.head(&env.bucket, &key).await.unwrap().expect("stored");
    assert_eq!(meta.size, data.len() as u64);
    // Not known at start, so not on the object (no second write; the
    // digest is in the result).
    assert_eq!(meta.sha256_hex, None);
    // A wrong digest leaves no object and no upload.
    let bad_key = format!("{prefix}/bad.bin");
    let out = run(
        &[
            "copy",
            "-",
            &format!("s3://{}/{bad_key}", env.bucket),
            "--endpoint-url",
            &env.endpoint,
            "--sha256",
            &"1".repeat(64),
        ],
        work.path(),
        &[],
        Some(data.to_vec()),
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(svc.head(&env.bucket, &bad_key).await.unwrap().is_none());
    let left = svc
        .list_incomplete_uploads(&env.bucket, Some(&prefix), std::time::Duration::ZERO)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// A 1,000-line list: keys, digests, one malformed line (nothing copied,
/// the line named), then one wrong digest (that line fails, the rest land).
#[tokio::test]
async fn a_thousand_line_list_names_its_lines_in_errors_and_results() {
    let origin = Origin::start().await.unwrap();
    let mut list = String::from("# generated list\n");
    let mut expected = Vec::new();
    let bad_digest_line;
    {
        let mut line = 1;
        let mut bad = 0;
        for i in 0..1000u64 {
            let data = generate(2_000 + (i as usize % 7) * 100, 1000 + i);
            let path = format!("/many/f{i}.bin");
            origin.serve(&path, data.clone(), Behavior::Normal);
            let url = origin.url(&path);
            line += 1;
            let (entry, key) = match i % 4 {
                0 => (url.clone(), format!("f{i}.bin")),
                1 => (format!("{url} keyed/k{i}.bin"), format!("keyed/k{i}.bin")),
                2 => (
                    format!("{url} - {}", sha256_hex(&data)),
                    format!("f{i}.bin"),
                ),
                _ if i == 999 => {
                    bad = line;
                    (
                        format!("{url} wrong.bin {}", "0".repeat(64)),
                        "wrong.bin".to_owned(),
                    )
                }
                _ => (
                    format!("{url} d{i}.bin {}", sha256_hex(&data)),
                    format!("d{i}.bin"),
                ),
            };
            list.push_str(&entry);
            list.push('\n');
            expected.push((line, key, data));
        }
        bad_digest_line = bad;
    }
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    // A malformed line 500: nothing is fetched, the line is named.
    let mut lines: Vec<&str> = list.lines().collect();
    let broken_entry = format!("{} k.bin nothex", origin.url("/many/f0.bin"));
    let original_500 = lines[499].to_owned();
    lines[499] = &broken_entry;
    std::fs::write(cwd.join("broken.txt"), lines.join("\n")).unwrap();
    let out = run(
        &["copy", "--files-from", "broken.txt", "out/"],
        cwd,
        &[],
        None,
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("line 500: SHA256"), "{err}");
    assert!(
        origin.requests().is_empty(),
        "nothing fetched before the list is valid"
    );
    assert!(!cwd.join("out").exists());
    lines[499] = &original_500;

    std::fs::write(cwd.join("list.txt"), &list).unwrap();
    // Under an open-files limit far below the number of sources (as a
    // default 1024 would be for a longer list): what ferry holds open per
    // source (its transfer lock) is bounded by --concurrency.
    let bin = ferry_bin();
    let out = ferry_tests::serve_process::run_ferry(
        "prlimit",
        &[
            "--nofile=256",
            bin.as_str(),
            "copy",
            "--files-from",
            "list.txt",
            "out/",
            "--concurrency",
            "16",
            "--json",
        ],
        cwd,
        &[],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let results: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 1000, "one NDJSON result per entry");
    let failed: Vec<&serde_json::Value> = results.iter().filter(|r| r["status"] != "ok").collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["line"], bad_digest_line);
    assert_eq!(failed[0]["code"], "checksum_mismatch");
    assert!(
        stderr(&out).contains(&format!("line {bad_digest_line}:")),
        "{}",
        stderr(&out)
    );
    let mut lines_seen: Vec<u64> = results
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    lines_seen.sort_unstable();
    lines_seen.dedup();
    assert_eq!(lines_seen.len(), 1000);
    for (line, key, data) in &expected {
        let path = cwd.join("out").join(key);
        if *line == bad_digest_line {
            assert!(!path.exists(), "a wrong digest stores nothing");
        } else {
            assert_eq!(&std::fs::read(&path).unwrap(), data, "line {line}: {key}");
        }
    }
}

#[tokio::test]
async fn a_csv_list_can_come_from_stdin() {
    let origin = Origin::start().await.unwrap();
    let a = generate(10_000, 71);
    let b = generate(20_000, 72);
    origin.serve("/c/a.bin", a.clone(), Behavior::Normal);
    origin.serve("/c/b.bin", b.clone(), Behavior::Normal);
    let csv = format!(
        "source,sha256,key\n{},{},\"named with space.bin\"\n{},,\n",
        origin.url("/c/a.bin"),
        sha256_hex(&a),
        origin.url("/c/b.bin")
    );
    let work = tempfile::tempdir().unwrap();
    let out = run(
        &["copy", "--files-from", "-", "dir/"],
        work.path(),
        &[],
        Some(csv.into_bytes()),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(work.path().join("dir/named with space.bin")).unwrap(),
        a
    );
    assert_eq!(std::fs::read(work.path().join("dir/b.bin")).unwrap(), b);
    // Sources and a list together are refused.
    let out = run(
        &["copy", &origin.url("/c/a.bin"), "--files-from", "-", "dir/"],
        work.path(),
        &[],
        Some(Vec::new()),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not both"), "{}", stderr(&out));
}

/// Uploads `data` to `bucket/key`, with `sha256` metadata when given.
async fn put_object(bucket: &str, key: &str, data: &[u8], sha256: Option<&str>) {
    let env = ferry_tests::garage::garage();
    let svc = ferry_tests::garage::service(&env.endpoint).await;
    let mut metadata = std::collections::HashMap::new();
    if let Some(sha) = sha256 {
        metadata.insert("sha256".to_owned(), sha.to_owned());
    }
    svc.upload_buffer(bucket, key, bytes_of(data), metadata)
        .await
        .unwrap();
}

fn bytes_of(data: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(data)
}

#[tokio::test]
async fn s3_objects_and_prefixes_are_sources() {
    let env = ferry_tests::garage::garage();
    let prefix = ferry_tests::garage::unique_prefix("s3src");
    let a = generate(6 * 1024 * 1024 + 11, 81);
    let b = generate(30_000, 82);
    let c = generate(5_000, 83);
    put_object(
        &env.bucket,
        &format!("{prefix}/in/a.bin"),
        &a,
        Some(&sha256_hex(&a)),
    )
    .await;
    put_object(&env.bucket, &format!("{prefix}/in/b b.bin"), &b, None).await;
    put_object(&env.bucket, &format!("{prefix}/in/sub/c.bin"), &c, None).await;
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let endpoint = env.endpoint.as_str();

    // One object to another bucket under another key.
    let src = format!("s3://{}/{prefix}/in/a.bin", env.bucket);
    let dst = format!("s3://{}/{prefix}/copied.bin", env.bucket_2);
    let out = run(
        &["copy", &src, &dst, "--endpoint-url", endpoint],
        cwd,
        &[],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["sha256"], sha256_hex(&a));
    let svc = ferry_tests::garage::service(endpoint).await;
    let meta = svc
        .head(&env.bucket_2, &format!("{prefix}/copied.bin"))
        .await
        .unwrap()
        .expect("copied");
    assert_eq!(meta.size, a.len() as u64);
    assert_eq!(meta.sha256_hex.as_deref(), Some(sha256_hex(&a).as_str()));

    // A prefix into a directory: every object, keyed by its path under it.
    let out = run(
        &[
            "copy",
            &format!("s3://{}/{prefix}/in/", env.bucket),
            "dir/",
            "--endpoint-url",
            endpoint,
            "--concurrency",
            "3",
        ],
        cwd,
        &[],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(cwd.join("dir/a.bin")).unwrap(), a);
    assert_eq!(std::fs::read(cwd.join("dir/b b.bin")).unwrap(), b);
    assert_eq!(std::fs::read(cwd.join("dir/sub/c.bin")).unwrap(), c);

    // An object to standard output.
    let out = run(
        &[
            "copy",
            &format!("s3://{}/{prefix}/in/b b.bin", env.bucket),
            "-",
            "--endpoint-url",
            endpoint,
        ],
        cwd,
        &[],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout[..] == b[..]);

    // The digest the object declares is checked: a lying one fails (3).
    put_object(
        &env.bucket,
        &format!("{prefix}/liar.bin"),
        &c,
        Some(&"2".repeat(64)),
    )
    .await;
    let out = run(
        &[
            "copy",
            &format!("s3://{}/{prefix}/liar.bin", env.bucket),
            "lies/",
            "--endpoint-url",
            endpoint,
        ],
        cwd,
        &[],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!cwd.join("lies/liar.bin").exists());
    // A missing object or an empty prefix is a source error (5).
    for missing in [format!("{prefix}/nope.bin"), format!("{prefix}/empty/")] {
        let out = run(
            &[
                "copy",
                &format!("s3://{}/{missing}", env.bucket),
                "x/",
                "--endpoint-url",
                endpoint,
            ],
            cwd,
            &[],
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(5), "{missing}: {}", stderr(&out));
    }
}

/// kill -9 during an S3-source copy: the rerun asks for the rest with a
/// range request (seen at a proxy in front of Garage); an object replaced
/// in between restarts from zero.
#[tokio::test]
async fn a_killed_s3_source_copy_resumes_with_a_range_and_a_replaced_one_restarts() {
    let env = ferry_tests::garage::garage();
    let proxy = ferry_tests::s3proxy::S3Proxy::start(&env.endpoint)
        .await
        .unwrap();
    let prefix = ferry_tests::garage::unique_prefix("s3resume");
    let key = format!("{prefix}/big.bin");
    let data = generate(24 * 1024 * 1024, 84);
    put_object(&env.bucket, &key, &data, None).await;
    let src = format!("s3://{}/{key}", env.bucket);
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let state = cwd.join("state");
    let state_arg = state.to_str().unwrap();
    let source_endpoint = proxy.endpoint();
    let args = [
        "copy",
        src.as_str(),
        "out/",
        "--state-dir",
        state_arg,
        "--source-endpoint-url",
        source_endpoint.as_str(),
        "--no-progress",
    ];

    let kill = |point: &'static str| {
        let crashtest = ferry_tests::crashtest_bin(env!("CARGO_BIN_EXE_ferry"));
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let cwd = cwd.to_path_buf();
        tokio::task::spawn_blocking(move || {
            Command::new(crashtest)
                .args(&args)
                .current_dir(cwd)
                .env("FAILPOINTS", format!("{point}=2*off->return"))
                .env_remove("FERRY_LOG")
                .output()
                .unwrap()
        })
    };
    let out = kill("ferry-after-checkpoint").await.unwrap();
    assert_eq!(out.status.code(), None, "killed: {}", stderr(&out));
    let out = run(&args, cwd, &[], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    let resumed = v["resumed_from"].as_u64().expect("resumed");
    assert!(resumed > 0);
    assert_eq!(std::fs::read(cwd.join("out/big.bin")).unwrap(), data);
    let gets: Vec<String> = proxy
        .log()
        .into_iter()
        .filter(|l| l.starts_with("GET ") && l.contains("big.bin"))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert!(
        gets[1].ends_with(&format!(" range=bytes={resumed}-")),
        "{gets:?}"
    );

    // Killed again, then the object is replaced: the rerun starts over and
    // stores the new object whole.
    std::fs::remove_dir_all(cwd.join("out")).unwrap();
    let out = kill("ferry-after-checkpoint").await.unwrap();
    assert_eq!(out.status.code(), None, "killed: {}", stderr(&out));
    let replaced = generate(24 * 1024 * 1024, 85);
    put_object(&env.bucket, &key, &replaced, None).await;
    let out = run(&args, cwd, &[], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(json(&out).get("resumed_from").is_none(), "{}", json(&out));
    assert_eq!(std::fs::read(cwd.join("out/big.bin")).unwrap(), replaced);
}

/// Per-file headers in a job: they reach the origin, and the secret shows
/// nowhere: not in answers, events, metrics or debug logs, and not in the
/// store once the job has ended.
#[tokio::test]
async fn job_file_headers_reach_the_origin_and_nowhere_else() {
    use ferry_domain::ports::JobStorePort;
    let origin = Origin::start().await.unwrap();
    let data = generate(120_000, 91);
    origin.serve("/job/private.bin", data.clone(), Behavior::Normal);
    origin.serve("/job/open.bin", data.clone(), Behavior::Normal);
    let secret = "job-h3ader-s3cret-93";
    let dir = tempfile::tempdir().unwrap();
    let server = ferry_tests::serve_process::Server::start_with_env(
        &ferry_bin(),
        dir.path(),
        &[],
        &[("FERRY_LOG", "debug")],
    );
    let client = reqwest::Client::new();
    // A bad header is refused, naming the field and not echoing the value.
    let bad = client
        .post(format!("{}/v1/jobs", server.url))
        .json(&serde_json::json!({
            "files": [{ "source": origin.url("/job/private.bin"), "key": "p.bin",
                        "headers": { "Host": secret } }],
            "destination": "hdr"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body = bad.text().await.unwrap();
    assert!(body.contains("files[0].headers"), "{body}");
    assert!(!body.contains(secret), "{body}");

    origin.require_header("Authorization", &format!("Bearer {secret}"));
    let job = server
        .submit(&serde_json::json!({
            "files": [{ "source": origin.url("/job/private.bin"), "key": "p.bin",
                        "headers": { "Authorization": format!("Bearer {secret}") } }],
            "destination": "hdr"
        }))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let done = server.wait_terminal(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        std::fs::read(dir.path().join("files/hdr/p.bin")).unwrap(),
        data
    );
    // Everything the server says about the job, and its log.
    let events = client
        .get(format!("{}/v1/jobs/{id}/events", server.url))
        .header("Accept", "application/x-ndjson")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events.contains("\"succeeded\""), "{events}");
    let metrics = server.get_text("/metrics").await;
    let listing = server.get_json("/v1/jobs").await.to_string();
    let shown = [
        job.to_string(),
        done.to_string(),
        events,
        metrics,
        listing,
        server.log(),
    ];
    assert!(server.log().contains("DEBUG"), "debug logs were on");
    for text in &shown {
        assert!(!text.contains(secret), "the header value was shown: {text}");
    }
    // The store no longer holds it.
    let store = ferry_adapters::job_store::SqlJobStore::connect(&format!(
        "sqlite://{}",
        dir.path().join("ferry.db").display()
    ))
    .await
    .unwrap();
    let record = store
        .get(&ferry_domain::JobId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(record.job.tasks()[0].spec.headers.is_empty());
}

#[tokio::test]
async fn names_can_come_from_the_final_url_or_content_disposition() {
    let origin = Origin::start().await.unwrap();
    let a = generate(10_000, 95);
    let b = generate(11_000, 96);
    let c = generate(12_000, 97);
    origin.serve("/download/1", a.clone(), Behavior::Normal);
    origin.add_response_header(
        "/download/1",
        "Content-Disposition",
        "attachment; filename=\"report.pdf\"",
    );
    origin.serve("/download/2", b.clone(), Behavior::Normal);
    origin.add_response_header(
        "/download/2",
        "Content-Disposition",
        "attachment; filename=\"x.txt\"; filename*=UTF-8''na%C3%AFve%20notes.txt",
    );
    origin.serve("/download/3", c.clone(), Behavior::Normal);
    origin.add_response_header(
        "/download/3",
        "Content-Disposition",
        "attachment; filename=\"../../evil.sh\"",
    );
    origin.serve("/files/real-name.bin", a.clone(), Behavior::Normal);
    origin.serve(
        "/latest",
        Vec::<u8>::new(),
        Behavior::Redirect {
            to: "/files/real-name.bin".into(),
        },
    );
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let urls: Vec<String> = ["/download/1", "/download/2", "/download/3"]
        .iter()
        .map(|p| origin.url(p))
        .collect();

    let mut args = vec!["copy"];
    args.extend(urls.iter().map(String::as_str));
    args.extend(["cd/", "--name-from", "content-disposition"]);
    let out = run(&args, cwd, &[], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(cwd.join("cd/report.pdf")).unwrap(), a);
    assert_eq!(std::fs::read(cwd.join("cd/naïve notes.txt")).unwrap(), b);
    assert_eq!(
        std::fs::read(cwd.join("cd/evil.sh")).unwrap(),
        c,
        "no way out of DEST"
    );
    assert!(!cwd.join("evil.sh").exists());

    // The default keeps the URL's name; final-url follows the redirect.
    let latest = origin.url("/latest");
    let out = run(&["copy", &latest, "plain/"], cwd, &[], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(cwd.join("plain/latest").exists());
    let out = run(
        &["copy", &latest, "final/", "--name-from", "final-url"],
        cwd,
        &[],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(cwd.join("final/real-name.bin")).unwrap(), a);

    // Two sources naming themselves alike: the second is refused.
    origin.serve("/download/4", c.clone(), Behavior::Normal);
    origin.add_response_header(
        "/download/4",
        "Content-Disposition",
        "attachment; filename=\"report.pdf\"",
    );
    let one = origin.url("/download/1");
    let four = origin.url("/download/4");
    let out = run(
        &[
            "copy",
            &one,
            &four,
            "clash/",
            "--name-from",
            "content-disposition",
            "--concurrency",
            "1",
        ],
        cwd,
        &[],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("collide"), "{}", stderr(&out));
    assert_eq!(std::fs::read(cwd.join("clash/report.pdf")).unwrap(), a);
    // A file-path DEST has its name already.
    let out = run(
        &["copy", &one, "named.bin", "--name-from", "final-url"],
        cwd,
        &[],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test]
async fn copy_help_shows_every_source_and_destination_form() {
    let work = tempfile::tempdir().unwrap();
    let out = run(&["copy", "--help"], work.path(), &[], None).await;
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for form in [
        "s3://bucket/prefix/",
        "`-` for standard input",
        "standard output",
        "--files-from",
        "--header",
        "--ca-cert",
        "--tls-roots",
        "--name-from",
        "--source-endpoint-url",
    ] {
        assert!(help.contains(form), "{form} missing from copy --help");
    }
}

/// The list format submitted as a job: keys default to the URL's name,
/// digests are checked, a line problem names the line before anything is
/// sent.
#[tokio::test]
async fn a_url_list_can_be_submitted_as_a_job() {
    let origin = Origin::start().await.unwrap();
    let a = generate(40_000, 98);
    let b = generate(41_000, 99);
    origin.serve("/l/a.bin", a.clone(), Behavior::Normal);
    origin.serve("/l/b.bin", b.clone(), Behavior::Normal);
    let dir = tempfile::tempdir().unwrap();
    let server = ferry_tests::serve_process::Server::start(&ferry_bin(), dir.path(), &[]);
    let list = dir.path().join("urls.txt");
    std::fs::write(
        &list,
        format!(
            "# two files\n{}\n{} renamed/b.bin {}\n",
            origin.url("/l/a.bin"),
            origin.url("/l/b.bin"),
            sha256_hex(&b)
        ),
    )
    .unwrap();
    let list_arg = list.to_str().unwrap();
    let out = run(
        &[
            "job",
            "--server",
            &server.url,
            "submit",
            "--files-from",
            list_arg,
            "--destination",
            "listed",
            "--wait",
        ],
        dir.path(),
        &[],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let job = json(&out);
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(
        std::fs::read(dir.path().join("files/listed/a.bin")).unwrap(),
        a
    );
    assert_eq!(
        std::fs::read(dir.path().join("files/listed/renamed/b.bin")).unwrap(),
        b
    );

    std::fs::write(
        &list,
        format!("{} k.bin not-a-digest\n", origin.url("/l/a.bin")),
    )
    .unwrap();
    let out = run(
        &[
            "job",
            "--server",
            &server.url,
            "submit",
            "--files-from",
            list_arg,
            "--destination",
            "listed",
        ],
        dir.path(),
        &[],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("line 1: SHA256"), "{}", stderr(&out));
    // --files-from needs --destination.
    let out = run(
        &[
            "job",
            "--server",
            &server.url,
            "submit",
            "--files-from",
            list_arg,
        ],
        dir.path(),
        &[],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
