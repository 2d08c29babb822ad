//! What lands is right for whoever reads it next: Content-Type and the
//! other attributes on S3 objects (round-tripped through Garage, or seen on
//! the wire at a recording proxy where Garage does not implement them), one
//! write per object, and no size limit by default.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use ferry_tests::garage::{garage, unique_prefix};
use ferry_tests::origin::{Behavior, Origin};
use ferry_tests::s3proxy::S3Proxy;
use ferry_tests::{generate, sha256_hex};

fn ferry_bin() -> String {
    std::env::var("FERRY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ferry").to_owned())
}

async fn run(args: &[&str], cwd: &Path, stdin: Option<Vec<u8>>) -> Output {
    ferry_tests::serve_process::run_ferry(&ferry_bin(), args, cwd, &[], stdin).await
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// HEAD of an object, straight from the SDK.
async fn head(key: &str) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
    let env = garage();
    let svc = ferry_tests::garage::service(&env.endpoint).await;
    svc.client()
        .head_object()
        .bucket(&env.bucket)
        .key(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn content_type_and_attributes_round_trip_through_garage() {
    let env = garage();
    let origin = Origin::start().await.unwrap();
    let page = generate(20_000, 101);
    origin.serve("/o/page.html", page.clone(), Behavior::Normal);
    origin.add_response_header("/o/page.html", "Content-Type", "text/html; charset=utf-8");
    let prefix = unique_prefix("attrs");
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let endpoint = env.endpoint.as_str();
    let url = origin.url("/o/page.html");

    // The source's Content-Type is kept.
    let dest = format!("s3://{}/{prefix}/kept/", env.bucket);
    let out = run(
        &["copy", &url, &dest, "--endpoint-url", endpoint],
        cwd,
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let h = head(&format!("{prefix}/kept/page.html")).await;
    assert_eq!(h.content_type(), Some("text/html; charset=utf-8"));

    // Flags win, and user metadata comes back.
    let dest = format!("s3://{}/{prefix}/set/page.bin", env.bucket);
    let out = run(
        &[
            "copy",
            &url,
            &dest,
            "--endpoint-url",
            endpoint,
            "--content-type",
            "application/x-ferry-test",
            "--cache-control",
            "max-age=60",
            "--content-disposition",
            "attachment; filename=\"p.html\"",
            "--metadata",
            "team=data",
            "--metadata",
            "Owner=ops",
        ],
        cwd,
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let h = head(&format!("{prefix}/set/page.bin")).await;
    assert_eq!(h.content_type(), Some("application/x-ferry-test"));
    assert_eq!(h.cache_control(), Some("max-age=60"));
    assert_eq!(
        h.content_disposition(),
        Some("attachment; filename=\"p.html\"")
    );
    let meta = h.metadata().unwrap();
    assert_eq!(meta.get("team").map(String::as_str), Some("data"));
    assert_eq!(meta.get("owner").map(String::as_str), Some("ops"));

    // No type from the source (stdin): a guess from the key's extension.
    let dest = format!("s3://{}/{prefix}/guess/data.json", env.bucket);
    let out = run(
        &["copy", "-", &dest, "--endpoint-url", endpoint],
        cwd,
        Some(b"{}".to_vec()),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        head(&format!("{prefix}/guess/data.json"))
            .await
            .content_type(),
        Some("application/json")
    );

    // Bad attributes: usage errors naming the flag.
    for (flag, value, named) in [
        ("--metadata", "sha256=x", "--metadata"),
        ("--metadata", "no-equals", "--metadata"),
        ("--storage-class", "COLD", "--storage-class"),
        ("--acl", "everyone", "--acl"),
        ("--sse", "rot13", "--sse"),
    ] {
        let out = run(&["copy", &url, &dest, flag, value], cwd, None).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{flag} {value}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(named), "{}", stderr(&out));
    }
}

#[tokio::test]
async fn tags_storage_class_encryption_and_acl_reach_the_wire() {
    let env = garage();
    let proxy = S3Proxy::start(&env.endpoint).await.unwrap();
    let origin = Origin::start().await.unwrap();
    origin.serve("/w/a.bin", generate(10_000, 102), Behavior::Normal);
    let prefix = unique_prefix("wire");
    let work = tempfile::tempdir().unwrap();
    let url = origin.url("/w/a.bin");
    for (flags, wanted) in [
        (
            vec![
                "--tag",
                "env=prod",
                "--tag",
                "team=a b",
                "--storage-class",
                "standard_ia",
                "--acl",
                "bucket-owner-full-control",
            ],
            vec![
                "[x-amz-tagging=env=prod&team=a+b]",
                "[x-amz-storage-class=STANDARD_IA]",
                "[x-amz-acl=bucket-owner-full-control]",
            ],
        ),
        (
            vec!["--sse", "AES256"],
            vec!["[x-amz-server-side-encryption=AES256]"],
        ),
        (
            vec!["--sse", "aws:kms", "--sse-kms-key-id", "key-77"],
            vec![
                "[x-amz-server-side-encryption=aws:kms]",
                "[x-amz-server-side-encryption-aws-kms-key-id=key-77]",
            ],
        ),
    ] {
        let dest = format!("s3://{}/{prefix}/{}.bin", env.bucket, flags.len());
        let mut args = vec!["copy", url.as_str(), dest.as_str(), "--endpoint-url"];
        let endpoint = proxy.endpoint();
        args.push(&endpoint);
        args.extend(flags.iter().copied());
        // Garage may refuse what it does not implement; the request went
        // out either way, and that is what is checked.
        let _ = run(&args, work.path(), None).await;
        let put = proxy
            .log()
            .into_iter()
            .rev()
            .find(|l| l.starts_with("PUT ") && l.contains(&format!("{}.bin", flags.len())))
            .unwrap_or_else(|| panic!("no PutObject for {flags:?}: {:?}", proxy.log()));
        for w in wanted {
            assert!(put.contains(w), "{w} not in {put}");
        }
    }
}

/// Counts the writes of one object at the proxy: PutObject, multipart
/// create/complete, and self-copies.
fn writes(log: &[String], key: &str) -> (usize, usize, usize) {
    let of_key: Vec<&String> = log.iter().filter(|l| l.contains(key)).collect();
    let copies = of_key
        .iter()
        .filter(|l| l.contains("[x-amz-copy-source="))
        .count();
    let puts = of_key
        .iter()
        .filter(|l| {
            l.starts_with("PUT ")
                && !l.contains("partNumber=")
                && !l.contains("[x-amz-copy-source=")
        })
        .count();
    let completes = of_key
        .iter()
        .filter(|l| l.starts_with("POST ") && l.contains("uploadId="))
        .count();
    (puts, completes, copies)
}

#[tokio::test]
async fn one_write_per_object_unless_a_copy_is_asked_for() {
    let env = garage();
    let proxy = S3Proxy::start(&env.endpoint).await.unwrap();
    let origin = Origin::start().await.unwrap();
    let small = generate(50_000, 103);
    let big = generate(12 * 1024 * 1024 + 7, 104);
    origin.serve("/n/small.bin", small.clone(), Behavior::Normal);
    origin.serve("/n/big.bin", big.clone(), Behavior::Normal);
    let prefix = unique_prefix("onewrite");
    let work = tempfile::tempdir().unwrap();
    let endpoint = proxy.endpoint();
    let copy = |src: &'static str, key: &'static str, extra: Vec<String>| {
        let url = origin.url(src);
        let dest = format!("s3://{}/{prefix}/{key}", env.bucket);
        let endpoint = endpoint.clone();
        let cwd = work.path().to_path_buf();
        async move {
            let mut args = vec![
                "copy".to_owned(),
                url,
                dest,
                "--endpoint-url".into(),
                endpoint,
                "--part-size".into(),
                "5MiB".into(),
            ];
            args.extend(extra);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args, &cwd, None).await
        }
    };
    // Default, no digest known: one PutObject, or one multipart completed;
    // no self-copy; no digest metadata on the object.
    for (src, key) in [
        ("/n/small.bin", "auto-small.bin"),
        ("/n/big.bin", "auto-big.bin"),
    ] {
        let out = copy(src, key, vec![]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let (puts, completes, copies) = writes(&proxy.log(), key);
        assert_eq!(puts + completes, 1, "{key}: {:?}", proxy.log());
        assert_eq!(copies, 0, "{key}: no second write");
        let h = head(&format!("{prefix}/{key}")).await;
        assert!(
            h.metadata().is_none_or(|m| !m.contains_key("sha256")),
            "{key}"
        );
    }
    // A digest known at start lands at create, still one write.
    let sha = sha256_hex(&big);
    let out = copy(
        "/n/big.bin",
        "known.bin",
        vec!["--sha256".into(), sha.clone()],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(writes(&proxy.log(), "known.bin").2, 0);
    let h = head(&format!("{prefix}/known.bin")).await;
    assert_eq!(h.metadata().unwrap().get("sha256"), Some(&sha));
    // --digest-metadata copy: the self-copy, attributes kept.
    let out = copy(
        "/n/big.bin",
        "copied.bin",
        vec![
            "--digest-metadata".into(),
            "copy".into(),
            "--content-type".into(),
            "application/x-kept".into(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(writes(&proxy.log(), "copied.bin").2, 1);
    let h = head(&format!("{prefix}/copied.bin")).await;
    assert_eq!(h.metadata().unwrap().get("sha256"), Some(&sha));
    assert_eq!(
        h.content_type(),
        Some("application/x-kept"),
        "the copy kept the type"
    );
    // --digest-metadata tag: one PutObjectTagging after the commit (Garage
    // does not implement it: the object stays, with a warning).
    let out = copy(
        "/n/small.bin",
        "tagged.bin",
        vec!["--digest-metadata".into(), "tag".into()],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let log = proxy.log();
    let tagging: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("tagged.bin") && l.starts_with("PUT ") && l.contains("tagging"))
        .collect();
    assert_eq!(tagging.len(), 1, "{log:?}");
    assert_eq!(writes(&log, "tagged.bin").2, 0);
    // --digest-metadata none: not even a digest known at start.
    let out = copy(
        "/n/small.bin",
        "bare.bin",
        vec![
            "--digest-metadata".into(),
            "none".into(),
            "--sha256".into(),
            sha256_hex(&small),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let h = head(&format!("{prefix}/bare.bin")).await;
    assert!(h.metadata().is_none_or(|m| !m.contains_key("sha256")));
}

/// A bucket that answers 301 with `x-amz-bucket-region` (as AWS does for a
/// bucket in another region) is used in that region; a bucket that does
/// not exist is a clear storage error (6), never exit 1.
#[tokio::test]
async fn a_bucket_in_another_region_is_followed_there() {
    let env = garage();
    let proxy = S3Proxy::start(&env.endpoint).await.unwrap();
    let origin = Origin::start().await.unwrap();
    let data = generate(30_000, 105);
    origin.serve("/r/a.bin", data.clone(), Behavior::Normal);
    let prefix = unique_prefix("region");
    let work = tempfile::tempdir().unwrap();
    let url = origin.url("/r/a.bin");
    let dest = format!("s3://{}/{prefix}/a.bin", env.bucket);
    let endpoint = proxy.endpoint();
    // The test Garage's region; ferry is told another one.
    proxy.redirect_next("garage");
    let out = tokio::task::spawn_blocking({
        let cwd = work.path().to_path_buf();
        let (url, dest, endpoint) = (url.clone(), dest.clone(), endpoint.clone());
        move || {
            Command::new(ferry_bin())
                .args([
                    "copy",
                    &url,
                    &dest,
                    "--endpoint-url",
                    &endpoint,
                    "--region",
                    "eu-west-3",
                ])
                .current_dir(cwd)
                .env("FERRY_LOG", "debug")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("another region"), "said at debug level: {err}");
    assert!(proxy.log().len() >= 2, "{:?}", proxy.log());
    let h = head(&format!("{prefix}/a.bin")).await;
    assert_eq!(h.content_length(), Some(data.len() as i64));

    // A missing bucket: exit 6, one clear line.
    let out = run(
        &[
            "copy",
            &url,
            "s3://no-such-bucket-ferry/x.bin",
            "--endpoint-url",
            &env.endpoint,
        ],
        work.path(),
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

/// Re-runs: `--skip-existing` recognises a stored file by its SHA-256 and
/// asks the source nothing; `--no-clobber` never replaces a key (exit 11).
#[tokio::test]
async fn reruns_skip_what_is_stored_and_no_clobber_keeps_what_exists() {
    let env = garage();
    let origin = Origin::start().await.unwrap();
    let data = generate(9 * 1024 * 1024 + 1, 106);
    let other = generate(1_000, 107);
    let sha = sha256_hex(&data);
    origin.serve("/s/f.bin", data.clone(), Behavior::Normal);
    origin.serve("/s/other.bin", other.clone(), Behavior::Normal);
    let prefix = unique_prefix("rerun");
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let url = origin.url("/s/f.bin");
    let s3 = format!("s3://{}/{prefix}/f.bin", env.bucket);
    for dest in [s3.as_str(), "dir/"] {
        let args = [
            "copy",
            url.as_str(),
            dest,
            "--endpoint-url",
            env.endpoint.as_str(),
            "--sha256",
            sha.as_str(),
            "--skip-existing",
            "--json",
        ];
        let first = run(&args, cwd, None).await;
        assert!(first.status.success(), "{}", stderr(&first));
        let v: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
        assert_eq!(v["status"], "ok");
        let asked = origin.requests().len();
        let second = run(&args, cwd, None).await;
        assert!(second.status.success(), "{}", stderr(&second));
        let v: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
        assert_eq!(v["status"], "skipped", "{dest}: {v}");
        assert_eq!(v["sha256"], sha);
        assert_eq!(
            origin.requests().len(),
            asked,
            "{dest}: the source was asked nothing"
        );
    }
    // --no-clobber: an existing key stays as it is, and says so.
    let other_url = origin.url("/s/other.bin");
    for dest in [s3.as_str(), "dir/f.bin"] {
        let asked = origin.requests().len();
        let out = run(
            &[
                "copy",
                &other_url,
                dest,
                "--endpoint-url",
                &env.endpoint,
                "--no-clobber",
                "--json",
            ],
            cwd,
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["code"], "destination_exists");
        assert_eq!(origin.requests().len(), asked);
    }
    assert_eq!(std::fs::read(cwd.join("dir/f.bin")).unwrap(), data);
    assert_eq!(
        head(&format!("{prefix}/f.bin")).await.content_length(),
        Some(data.len() as i64)
    );
    // A new key with --no-clobber is written as usual.
    let out = run(&["copy", &other_url, "dir/", "--no-clobber"], cwd, None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(cwd.join("dir/other.bin")).unwrap(), other);
}

/// `--preserve-mtime`: a directory DEST gives the file the source's
/// Last-Modified; without it the file is as new as the copy.
#[tokio::test]
async fn preserve_mtime_keeps_the_sources_last_modified() {
    let origin = Origin::start().await.unwrap();
    origin.serve("/m/old.bin", generate(5_000, 108), Behavior::Normal);
    origin.add_response_header(
        "/m/old.bin",
        "Last-Modified",
        "Wed, 21 Oct 2015 07:28:00 GMT",
    );
    let work = tempfile::tempdir().unwrap();
    let url = origin.url("/m/old.bin");
    let out = run(
        &["copy", &url, "kept/", "--preserve-mtime"],
        work.path(),
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let mtime = std::fs::metadata(work.path().join("kept/old.bin"))
        .unwrap()
        .modified()
        .unwrap();
    let secs = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(secs, 1_445_412_480, "Wed, 21 Oct 2015 07:28:00 GMT");
    let out = run(&["copy", &url, "fresh/"], work.path(), None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let fresh = std::fs::metadata(work.path().join("fresh/old.bin"))
        .unwrap()
        .modified()
        .unwrap();
    assert!(fresh.elapsed().unwrap() < std::time::Duration::from_secs(600));
}

/// `--no-clobber` is also a conditional create: PutObject and
/// CompleteMultipartUpload carry `If-None-Match: *`, and a server that
/// answers 412 (another writer created the key after ferry's check, as AWS
/// answers) fails the file with exit 11 and leaves no upload behind.
#[tokio::test]
async fn no_clobber_creates_are_conditional_on_the_wire() {
    let env = garage();
    let proxy = S3Proxy::start(&env.endpoint).await.unwrap();
    let origin = Origin::start().await.unwrap();
    let small = generate(20_000, 108);
    let large = generate(9 * 1024 * 1024 + 1, 109);
    origin.serve("/c/small.bin", small.clone(), Behavior::Normal);
    origin.serve("/c/large.bin", large.clone(), Behavior::Normal);
    let prefix = unique_prefix("conditional");
    let work = tempfile::tempdir().unwrap();
    let endpoint = proxy.endpoint();
    let copy = |name: &str, key: String| {
        let url = origin.url(&format!("/c/{name}"));
        let dest = format!("s3://{}/{prefix}/{key}", env.bucket);
        let endpoint = endpoint.clone();
        let cwd = work.path().to_path_buf();
        async move {
            run(
                &[
                    "copy",
                    &url,
                    &dest,
                    "--endpoint-url",
                    &endpoint,
                    "--no-clobber",
                    "--json",
                ],
                &cwd,
                None,
            )
            .await
        }
    };
    for name in ["small.bin", "large.bin"] {
        let out = copy(name, name.to_owned()).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let creating: Vec<String> = proxy
            .log()
            .into_iter()
            .filter(|l| l.contains(&format!("{prefix}/{name}")))
            .filter(|l| {
                (l.starts_with("PUT") && !l.contains("partNumber="))
                    || (l.starts_with("POST") && l.contains("uploadId="))
            })
            .collect();
        assert_eq!(creating.len(), 1, "{creating:?}");
        assert!(
            creating[0].contains("[if-none-match=*]"),
            "{name}: {creating:?}"
        );
    }
    // A racing writer: the server refuses the create.
    for name in ["small.bin", "large.bin"] {
        proxy.precondition_fail_next_create();
        let key = format!("raced-{name}");
        let out = copy(name, key.clone()).await;
        assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["code"], "destination_exists", "{v}");
        let svc = ferry_tests::garage::service(&env.endpoint).await;
        let uploads = svc
            .client()
            .list_multipart_uploads()
            .bucket(&env.bucket)
            .prefix(format!("{prefix}/{key}"))
            .send()
            .await
            .unwrap();
        assert!(uploads.uploads().is_empty(), "{key}: {uploads:?}");
        let missing = svc
            .client()
            .head_object()
            .bucket(&env.bucket)
            .key(format!("{prefix}/{key}"))
            .send()
            .await;
        assert!(missing.is_err(), "{key} was not created");
    }
}

/// A job carries object attributes to every file and re-runs with
/// `--skip-existing` (files `skipped`, the source asked nothing) or
/// `--no-clobber` (files fail `destination_exists`, objects untouched).
#[tokio::test]
async fn a_job_carries_attributes_and_skips_or_refuses_what_exists() {
    let env = garage();
    let origin = Origin::start().await.unwrap();
    let a = generate(30_000, 110);
    let b = generate(31_000, 111);
    origin.serve("/j/a.csv", a.clone(), Behavior::Normal);
    origin.serve("/j/b.bin", b.clone(), Behavior::Normal);
    let prefix = unique_prefix("job-attrs");
    let dir = tempfile::tempdir().unwrap();
    let server = ferry_tests::serve_process::Server::start(
        &ferry_bin(),
        dir.path(),
        &["--endpoint-url", &env.endpoint],
    );
    let list = dir.path().join("urls.txt");
    std::fs::write(
        &list,
        format!(
            "{} a.csv {}\n{} b.bin {}\n",
            origin.url("/j/a.csv"),
            sha256_hex(&a),
            origin.url("/j/b.bin"),
            sha256_hex(&b)
        ),
    )
    .unwrap();
    let destination = format!("s3://{}/{prefix}", env.bucket);
    let submit = |extra: &'static [&'static str]| {
        let mut args: Vec<String> = [
            "job",
            "--server",
            server.url.as_str(),
            "submit",
            "--files-from",
            list.to_str().unwrap(),
            "--destination",
            destination.as_str(),
            "--wait",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let cwd = dir.path().to_path_buf();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run(&args, &cwd, None).await;
            let job: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|_| panic!("a job on stdout: {}", stderr(&out)));
            (out.status.code(), job)
        }
    };
    let (code, job) = submit(&[
        "--content-type",
        "text/csv",
        "--metadata",
        "team=data",
        "--cache-control",
        "no-cache",
    ])
    .await;
    assert_eq!(code, Some(0), "{job}");
    assert_eq!(job["attributes"]["content_type"], "text/csv", "{job}");
    for key in ["a.csv", "b.bin"] {
        let h = head(&format!("{prefix}/{key}")).await;
        assert_eq!(h.content_type(), Some("text/csv"));
        assert_eq!(h.cache_control(), Some("no-cache"));
        assert_eq!(
            h.metadata().and_then(|m| m.get("team")).map(String::as_str),
            Some("data")
        );
    }
    let asked = origin.requests().len();

    let (code, job) = submit(&["--skip-existing"]).await;
    assert_eq!(code, Some(0), "{job}");
    assert_eq!(job["if_exists"], "skip");
    assert_eq!(job["summary"]["skipped"], 2, "{job}");
    for f in job["files"].as_array().unwrap() {
        assert_eq!(f["status"], "skipped", "{f}");
    }
    assert_eq!(
        origin.requests().len(),
        asked,
        "the source was asked nothing"
    );

    let (code, job) = submit(&["--no-clobber"]).await;
    assert_eq!(code, Some(8), "every file refused: the job failed: {job}");
    for f in job["files"].as_array().unwrap() {
        assert_eq!(f["error"]["code"], "destination_exists", "{f}");
    }
    assert_eq!(origin.requests().len(), asked);
    let h = head(&format!("{prefix}/a.csv")).await;
    assert_eq!(h.content_length(), Some(a.len() as i64));
    let metrics = server.get_text("/metrics").await;
    assert!(
        metrics.contains("ferry_files_skipped_total 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("skipped"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `--skip-existing` with an s3:// source and no --sha256: the source's
/// own `sha256` metadata (HeadObject, no body) is the expected digest, so
/// the second run is skipped without a GET of the source.
#[tokio::test]
async fn skip_existing_uses_an_s3_sources_declared_digest() {
    let env = garage();
    let proxy = S3Proxy::start(&env.endpoint).await.unwrap();
    let origin = Origin::start().await.unwrap();
    let data = generate(50_000, 112);
    origin.serve("/d/src.bin", data.clone(), Behavior::Normal);
    let prefix = unique_prefix("declared");
    let work = tempfile::tempdir().unwrap();
    let src = format!("s3://{}/{prefix}/src.bin", env.bucket);
    let dst = format!("s3://{}/{prefix}/dst.bin", env.bucket);
    let sha = sha256_hex(&data);
    let url = origin.url("/d/src.bin");
    let out = run(
        &[
            "copy",
            &url,
            &src,
            "--endpoint-url",
            &env.endpoint,
            "--sha256",
            &sha,
        ],
        work.path(),
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let endpoint = proxy.endpoint();
    let args = [
        "copy",
        src.as_str(),
        dst.as_str(),
        "--endpoint-url",
        endpoint.as_str(),
        "--skip-existing",
        "--json",
    ];
    let first = run(&args, work.path(), None).await;
    assert!(first.status.success(), "{}", stderr(&first));
    let v: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(v["status"], "ok", "{v}");
    let before = proxy.log().len();
    let second = run(&args, work.path(), None).await;
    assert!(second.status.success(), "{}", stderr(&second));
    let v: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(v["status"], "skipped", "{v}");
    assert_eq!(v["sha256"], sha);
    let source_gets: Vec<String> = proxy.log()[before..]
        .iter()
        .filter(|l| l.starts_with("GET") && l.contains("/src.bin"))
        .cloned()
        .collect();
    assert!(source_gets.is_empty(), "{source_gets:?}");
    assert!(
        proxy.log()[before..]
            .iter()
            .any(|l| l.starts_with("HEAD") && l.contains("/src.bin")),
        "{:?}",
        proxy.log()
    );
}
