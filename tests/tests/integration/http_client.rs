use std::time::Duration;

use futures::TryStreamExt;

use ferry_adapters::{HttpClientConfig, PooledHttpClient};
use ferry_domain::ErrorClass;
use ferry_domain::SourceUrl;
use ferry_domain::ports::{DownloadError, DownloadRequest, HttpDownloadPort, Validator};
use ferry_tests::generate;
use ferry_tests::origin::{Behavior, Origin};

fn client() -> PooledHttpClient {
    ferry_tests::test_http_client(Duration::from_millis(500))
}

fn whole(url: &str) -> DownloadRequest {
    DownloadRequest::whole(SourceUrl::parse(url).unwrap())
}

async fn body(d: ferry_domain::ports::Download) -> Result<Vec<u8>, DownloadError> {
    let chunks: Vec<bytes::Bytes> = d.body.try_collect().await?;
    Ok(chunks.concat())
}

#[tokio::test]
async fn known_length_body_and_metadata() {
    let origin = Origin::start().await.unwrap();
    let data = generate(200_000, 10);
    origin.serve("/f.bin", data.clone(), Behavior::Normal);
    let d = client().open(whole(&origin.url("/f.bin"))).await.unwrap();
    assert_eq!(d.meta.total_length, Some(200_000));
    assert_eq!(d.meta.offset, 0);
    assert!(d.meta.accepts_ranges);
    assert!(d.meta.etag.is_some());
    assert_eq!(body(d).await.unwrap(), data);
    // No automatic decompression is negotiated.
    assert_eq!(
        origin.requests()[0].accept_encoding.as_deref(),
        Some("identity")
    );
}

#[tokio::test]
async fn chunked_body_has_unknown_length() {
    let origin = Origin::start().await.unwrap();
    let data = generate(100_000, 11);
    origin.serve("/c.bin", data.clone(), Behavior::Chunked);
    let d = client().open(whole(&origin.url("/c.bin"))).await.unwrap();
    assert_eq!(d.meta.total_length, None);
    assert!(!d.meta.accepts_ranges);
    assert_eq!(body(d).await.unwrap(), data);
}

#[tokio::test]
async fn range_with_matching_and_stale_validator() {
    let origin = Origin::start().await.unwrap();
    let data = generate(50_000, 12);
    origin.serve("/r.bin", data.clone(), Behavior::Normal);
    let c = client();
    let first = c.open(whole(&origin.url("/r.bin"))).await.unwrap();
    let validator = first.meta.validator().unwrap();
    drop(first);

    let mut req = whole(&origin.url("/r.bin"));
    req.offset = 1000;
    req.if_range = Some(validator);
    let d = c.open(req.clone()).await.unwrap();
    assert_eq!(d.meta.offset, 1000);
    assert_eq!(d.meta.total_length, Some(50_000));
    assert_eq!(body(d).await.unwrap(), &data[1000..]);
    let seen = origin.requests();
    assert_eq!(seen.last().unwrap().range.as_deref(), Some("bytes=1000-"));

    // The source changed: If-Range no longer matches, the whole body comes.
    req.if_range = Some(Validator::ETag("\"stale\"".into()));
    let d = c.open(req).await.unwrap();
    assert_eq!(d.meta.offset, 0);
    assert_eq!(body(d).await.unwrap(), data);
}

#[tokio::test]
async fn body_shorter_than_content_length_fails() {
    let origin = Origin::start().await.unwrap();
    origin.serve(
        "/s.bin",
        generate(100_000, 13),
        Behavior::Short { send: 40_000 },
    );
    let d = client().open(whole(&origin.url("/s.bin"))).await.unwrap();
    assert_eq!(d.meta.total_length, Some(100_000));
    let err = body(d).await.unwrap_err();
    assert!(matches!(err, DownloadError::Interrupted { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn retries_503_then_succeeds() {
    let origin = Origin::start().await.unwrap();
    let data = generate(1000, 14);
    origin.serve(
        "/busy.bin",
        data.clone(),
        Behavior::FailFirst {
            times: 2,
            status: 503,
        },
    );
    let d = client()
        .open(whole(&origin.url("/busy.bin")))
        .await
        .unwrap();
    assert_eq!(body(d).await.unwrap(), data);
    assert_eq!(origin.requests().len(), 3);
}

#[tokio::test]
async fn gives_up_after_the_retry_budget_with_the_status() {
    let origin = Origin::start().await.unwrap();
    origin.serve(
        "/down.bin",
        generate(10, 15),
        Behavior::FailFirst {
            times: 100,
            status: 503,
        },
    );
    let c = PooledHttpClient::new(HttpClientConfig {
        retry: ferry_tests::retry(2, Duration::from_millis(1)),
        ..HttpClientConfig::default()
    })
    .unwrap();
    let err = c.open(whole(&origin.url("/down.bin"))).await.unwrap_err();
    assert!(
        matches!(err, DownloadError::Status { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(origin.requests().len(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let origin = Origin::start().await.unwrap();
    let err = client()
        .open(whole(&origin.url("/missing")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DownloadError::Status { status: 404, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("HTTP 404"));
    assert_eq!(origin.requests().len(), 1);
}

#[tokio::test]
async fn stalled_body_fails_after_the_idle_timeout() {
    let origin = Origin::start().await.unwrap();
    origin.serve(
        "/stall.bin",
        generate(100_000, 16),
        Behavior::Stall { after: 20_000 },
    );
    let started = std::time::Instant::now();
    let d = client()
        .open(whole(&origin.url("/stall.bin")))
        .await
        .unwrap();
    let err = body(d).await.unwrap_err();
    assert!(matches!(err, DownloadError::Stalled { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn follows_redirects_and_reports_the_final_url() {
    let origin = Origin::start().await.unwrap();
    let data = generate(5000, 17);
    origin.serve("/real.bin", data.clone(), Behavior::Normal);
    origin.serve(
        "/hop",
        Vec::new(),
        Behavior::Redirect {
            to: "/real.bin".into(),
        },
    );
    let d = client().open(whole(&origin.url("/hop"))).await.unwrap();
    assert!(d.meta.final_url.expose().ends_with("/real.bin"));
    assert_eq!(body(d).await.unwrap(), data);
}

#[tokio::test]
async fn redirect_loops_stop_after_five() {
    let origin = Origin::start().await.unwrap();
    origin.serve(
        "/loop",
        Vec::new(),
        Behavior::Redirect { to: "/loop".into() },
    );
    let err = client()
        .open(whole(&origin.url("/loop")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DownloadError::TooManyRedirects { max: 5, .. }),
        "{err:?}"
    );
    assert_eq!(origin.requests().len(), 6);
}

#[tokio::test]
async fn per_host_limit_holds_while_bodies_are_open() {
    let origin = Origin::start().await.unwrap();
    origin.serve("/p.bin", generate(1000, 18), Behavior::Normal);
    let c = PooledHttpClient::new(HttpClientConfig {
        max_connections_per_host: 2,
        ..HttpClientConfig::default()
    })
    .unwrap();
    let a = c.open(whole(&origin.url("/p.bin"))).await.unwrap();
    let _b = c.open(whole(&origin.url("/p.bin"))).await.unwrap();
    let third = tokio::time::timeout(
        Duration::from_millis(300),
        c.open(whole(&origin.url("/p.bin"))),
    )
    .await;
    assert!(
        third.is_err(),
        "a third request went out while two bodies were open"
    );
    drop(a);
    let third =
        tokio::time::timeout(Duration::from_secs(5), c.open(whole(&origin.url("/p.bin")))).await;
    assert!(third.is_ok_and(|r| r.is_ok()));
}

#[tokio::test]
async fn connection_errors_never_show_credentials() {
    // Bind then drop a listener to get a port with nobody behind it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = PooledHttpClient::new(HttpClientConfig {
        retry: ferry_tests::retry(0, Duration::from_millis(1)),
        ..HttpClientConfig::default()
    })
    .unwrap();
    let url = format!("http://admin:hunter2@127.0.0.1:{port}/f?X-Amz-Signature=deadbeef");
    let err = c.open(whole(&url)).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(matches!(err, DownloadError::Connect { .. }), "{err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("deadbeef"), "{shown}");
}

#[tokio::test]
async fn connections_are_reused_but_not_past_the_maximum_age() {
    let origin = Origin::start().await.unwrap();
    origin.serve("/k.bin", generate(1000, 19), Behavior::Normal);
    let c = PooledHttpClient::new(HttpClientConfig {
        // Long enough for three requests on a loaded machine.
        max_connection_age: Duration::from_secs(2),
        ..HttpClientConfig::default()
    })
    .unwrap();
    let first = std::time::Instant::now();
    for _ in 0..3 {
        let d = c.open(whole(&origin.url("/k.bin"))).await.unwrap();
        body(d).await.unwrap();
    }
    assert!(
        first.elapsed() < Duration::from_secs(2),
        "three requests took {:?}",
        first.elapsed()
    );
    assert_eq!(origin.connections(), 1, "keep-alive reuses one connection");
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(first.elapsed())).await;
    let d = c.open(whole(&origin.url("/k.bin"))).await.unwrap();
    body(d).await.unwrap();
    assert_eq!(
        origin.connections(),
        2,
        "an old connection takes no new request"
    );
}

/// Answers each lookup with the next address of a script (the last one
/// repeats): DNS rebinding.
struct Rebinding(std::sync::Mutex<Vec<std::net::IpAddr>>);

#[async_trait::async_trait]
impl ferry_adapters::egress::Lookup for Rebinding {
    async fn lookup(&self, _host: &str) -> std::io::Result<Vec<std::net::IpAddr>> {
        let mut script = self.0.lock().unwrap();
        let ip = if script.len() > 1 {
            script.remove(0)
        } else {
            script[0]
        };
        Ok(vec![ip])
    }
}

#[tokio::test]
async fn dns_rebinding_to_loopback_is_refused_at_connect_time() {
    use ferry_adapters::SourceGuard;
    use ferry_domain::{AllowEntry, EgressPolicy};

    // The "public" origin is 127.0.0.2 (allowed); the canary listens on
    // the same port on 127.0.0.1, where the second answer points.
    let origin = Origin::bind("127.0.0.2:0".parse().unwrap(), None)
        .await
        .unwrap();
    let port = origin.addr().port();
    let canary = Origin::bind(format!("127.0.0.1:{port}").parse().unwrap(), None)
        .await
        .unwrap();
    let data = generate(10_000, 77);
    origin.serve("/x", data.clone(), Behavior::Normal);
    canary.serve("/x", "canary", Behavior::Normal);

    let lookup = Rebinding(std::sync::Mutex::new(vec![
        "127.0.0.2".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
    ]));
    let guard = SourceGuard::with_lookup(
        EgressPolicy::with_allowed(vec![AllowEntry::parse("127.0.0.2").unwrap()]),
        std::sync::Arc::new(lookup),
    );
    let client = PooledHttpClient::new(HttpClientConfig {
        guard: Some(guard),
        // A new pool (so a new lookup) for every request.
        max_connection_age: Duration::ZERO,
        retry: ferry_tests::retry(0, Duration::from_millis(1)),
        ..HttpClientConfig::default()
    })
    .unwrap();
    let url = format!("http://rebind.test:{port}/x");
    let first = client.open(whole(&url)).await.unwrap();
    assert_eq!(body(first).await.unwrap(), data);
    let second = client.open(whole(&url)).await.unwrap_err();
    assert!(
        matches!(&second, DownloadError::Forbidden { reason, .. } if reason.contains("loopback")),
        "{second}"
    );
    assert_eq!(second.class(), ErrorClass::Client);
    assert_eq!(canary.connections(), 0, "the rebound address was reached");
    assert_eq!(origin.connections(), 1);
}

#[tokio::test]
async fn redirects_are_checked_hop_by_hop() {
    use ferry_adapters::SourceGuard;
    use ferry_domain::{AllowEntry, EgressPolicy};

    let origin = Origin::bind("127.0.0.2:0".parse().unwrap(), None)
        .await
        .unwrap();
    let canary = Origin::start().await.unwrap();
    canary.serve("/secret", "canary", Behavior::Normal);
    origin.serve(
        "/to-loopback",
        "",
        Behavior::Redirect {
            to: canary.url("/secret"),
        },
    );
    origin.serve(
        "/to-localhost",
        "",
        Behavior::Redirect {
            to: format!("http://localhost:{}/secret", canary.addr().port()),
        },
    );
    let client = PooledHttpClient::new(HttpClientConfig {
        guard: Some(SourceGuard::new(EgressPolicy::with_allowed(vec![
            AllowEntry::parse("127.0.0.2").unwrap(),
        ]))),
        retry: ferry_tests::retry(0, Duration::from_millis(1)),
        ..HttpClientConfig::default()
    })
    .unwrap();
    for path in ["/to-loopback", "/to-localhost"] {
        let err = client.open(whole(&origin.url(path))).await.unwrap_err();
        assert!(
            matches!(&err, DownloadError::Forbidden { reason, .. } if reason.contains("loopback")),
            "{path}: {err}"
        );
    }
    assert_eq!(canary.connections(), 0);
}
