//! The S3 adapter against a real Garage (started by scripts/garage.sh).

use std::time::Duration;

use ferry_adapters::s3::{S3Storage, S3StorageConfig};
use ferry_domain::ObjectKey;
use ferry_tests::garage::{garage, service, unique_prefix};
use ferry_tests::{conformance, generate};

pub async fn storage(endpoint: &str, prefix: &str) -> S3Storage {
    S3Storage::new(
        service(endpoint).await,
        &garage().bucket,
        prefix,
        S3StorageConfig::default(),
    )
}

/// Incomplete multipart uploads left under `prefix`.
pub async fn incomplete_uploads(prefix: &str) -> usize {
    let svc = service(&garage().endpoint).await;
    svc.list_incomplete_uploads(&garage().bucket, Some(prefix), Duration::ZERO)
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn s3_storage_passes_the_conformance_suite() {
    let prefix = unique_prefix("conformance");
    let s = storage(&garage().endpoint, &prefix).await;
    conformance::run(&s, "c").await;
    assert_eq!(incomplete_uploads(&prefix).await, 0);
}

#[tokio::test]
async fn bucket_is_per_call_never_a_hidden_default() {
    let svc = service(&garage().endpoint).await;
    let key = format!("{}/per-call.bin", unique_prefix("bucket"));
    let data = bytes::Bytes::from(generate(1000, 50));
    svc.upload_buffer(&garage().bucket_2, &key, data.clone(), Default::default())
        .await
        .unwrap();
    assert!(svc.head(&garage().bucket_2, &key).await.unwrap().is_some());
    assert!(svc.head(&garage().bucket, &key).await.unwrap().is_none());
    let s2 = S3Storage::new(
        svc.clone(),
        &garage().bucket_2,
        "",
        S3StorageConfig::default(),
    );
    let k = ObjectKey::parse(&key).unwrap();
    assert_eq!(conformance::get(&s2, &k).await, data);
    svc.delete(&garage().bucket_2, &key).await.unwrap();
}

#[tokio::test]
async fn batch_delete_of_2500_keys_in_1000_key_requests() {
    let svc = service(&garage().endpoint).await;
    let prefix = unique_prefix("batch");
    let keys: Vec<String> = (0..2500).map(|i| format!("{prefix}/k{i:05}")).collect();
    let bucket = garage().bucket.clone();
    futures::stream::iter(keys.clone())
        .for_each_concurrent(32, |k| {
            let (svc, bucket) = (svc.clone(), bucket.clone());
            async move {
                svc.upload_buffer(
                    &bucket,
                    &k,
                    bytes::Bytes::from_static(b"x"),
                    Default::default(),
                )
                .await
                .unwrap();
            }
        })
        .await;
    let report = svc.delete_objects(&bucket, &keys).await.unwrap();
    assert_eq!(report.deleted, 2500);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let listed = svc
        .client()
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(&prefix)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count.unwrap_or(0), 0);
}

#[tokio::test]
async fn presigned_url_is_fetchable_with_a_plain_http_client() {
    let svc = service(&garage().endpoint).await;
    let key = format!("{}/presigned.bin", unique_prefix("presign"));
    let data = bytes::Bytes::from(generate(10_000, 51));
    svc.upload_buffer(&garage().bucket, &key, data.clone(), Default::default())
        .await
        .unwrap();
    let url = svc
        .presigned_get(&garage().bucket, &key, Duration::from_secs(300))
        .await
        .unwrap();
    assert!(url.contains("X-Amz-Signature="));
    let got = reqwest::get(&url).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap(), data);
    svc.delete(&garage().bucket, &key).await.unwrap();
}

#[tokio::test]
async fn download_to_file_is_atomic_and_complete() {
    let svc = service(&garage().endpoint).await;
    let key = format!("{}/dl.bin", unique_prefix("dl"));
    let data = bytes::Bytes::from(generate(3_000_000, 52));
    svc.upload_buffer(&garage().bucket, &key, data.clone(), Default::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dl.bin");
    let n = svc
        .download_to_file(&garage().bucket, &key, &path)
        .await
        .unwrap();
    assert_eq!(n, 3_000_000);
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temp file left"
    );
    let missing = svc
        .download_to_file(
            &garage().bucket,
            &format!("{key}.missing"),
            &dir.path().join("m.bin"),
        )
        .await;
    assert!(missing.is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    svc.delete(&garage().bucket, &key).await.unwrap();
}

#[tokio::test]
async fn incomplete_uploads_are_listed_by_age_and_aborted() {
    let svc = service(&garage().endpoint).await;
    let prefix = unique_prefix("orphans");
    let key = format!("{prefix}/orphan.bin");
    let created = svc
        .client()
        .create_multipart_upload()
        .bucket(&garage().bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let id = created.upload_id.unwrap();
    let young = svc
        .list_incomplete_uploads(&garage().bucket, Some(&prefix), Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(young.is_empty(), "a fresh upload is not older than an hour");
    let all = svc
        .list_incomplete_uploads(&garage().bucket, Some(&prefix), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].upload_id, id);
    // ferry aborts only uploads it can name (a checkpoint's upload id).
    svc.abort_upload(&garage().bucket, &key, &all[0].upload_id)
        .await
        .unwrap();
    assert_eq!(incomplete_uploads(&prefix).await, 0);
}

use futures::StreamExt;
