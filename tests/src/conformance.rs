//! The storage conformance suite: the same assertions for every
//! `FileStoragePort` adapter (filesystem now, S3 next), in the manner of
//! object_store's `integration.rs`. Every key is placed under `prefix` so
//! that runs against shared buckets never collide.

use bytes::Bytes;
use futures::TryStreamExt;

use ferry_domain::ObjectKey;
use ferry_domain::ports::{CommitInfo, FileStoragePort, StorageError, WriteRequest};

use crate::{generate, md5_hex, sha256_hex};

fn key(prefix: &str, name: &str) -> ObjectKey {
    ObjectKey::with_prefix(prefix, name).unwrap()
}

fn info(data: &[u8]) -> CommitInfo {
    CommitInfo {
        size: data.len() as u64,
        sha256_hex: sha256_hex(data),
        md5_hex: Some(md5_hex(data)),
    }
}

/// Writes `data` in `chunk`-sized pieces and commits it.
pub async fn put(storage: &dyn FileStoragePort, key: &ObjectKey, data: &[u8], chunk: usize) {
    put_with(storage, key, data, chunk, false).await;
}

/// Like [`put`]; `replayable` tells the storage it may stream without a copy.
pub async fn put_with(
    storage: &dyn FileStoragePort,
    key: &ObjectKey,
    data: &[u8],
    chunk: usize,
    replayable: bool,
) {
    let mut request = WriteRequest::new(key.clone(), Some(data.len() as u64));
    request.replayable = replayable;
    let mut w = storage.begin_write(request).await.unwrap();
    for piece in data.chunks(chunk.max(1)) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    let stored = w.commit(info(data)).await.unwrap();
    assert_eq!(stored.size, data.len() as u64);
    assert_eq!(&stored.key, key);
}

pub async fn get(storage: &dyn FileStoragePort, key: &ObjectKey) -> Vec<u8> {
    let chunks: Vec<Bytes> = storage
        .read(key)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

/// Runs every assertion. `min_chunk` is the smallest write the backend
/// accepts for a multi-chunk object (e.g. irrelevant for files).
pub async fn run(storage: &dyn FileStoragePort, prefix: &str) {
    put_get_metadata_delete(storage, prefix).await;
    invisible_until_commit(storage, prefix).await;
    abort_leaves_nothing(storage, prefix).await;
    drop_leaves_nothing(storage, prefix).await;
    overwrite_replaces(storage, prefix).await;
    empty_object(storage, prefix).await;
    missing_objects(storage, prefix).await;
}

async fn put_get_metadata_delete(storage: &dyn FileStoragePort, prefix: &str) {
    for replayable in [false, true] {
        put_get_metadata_delete_with(storage, prefix, replayable).await;
    }
}

async fn put_get_metadata_delete_with(
    storage: &dyn FileStoragePort,
    prefix: &str,
    replayable: bool,
) {
    let data = generate(300_000, 1);
    let k = key(prefix, "nested/dir/file.bin");
    put_with(storage, &k, &data, 64 * 1024, replayable).await;
    let meta = storage
        .metadata(&k)
        .await
        .unwrap()
        .expect("committed object exists");
    assert_eq!(meta.size, data.len() as u64);
    if let Some(sha) = meta.sha256_hex {
        assert_eq!(sha, sha256_hex(&data), "recorded sha256");
    }
    assert_eq!(get(storage, &k).await, data);
    assert!(storage.location(&k).contains("nested/dir/file.bin"));
    storage.delete(&k).await.unwrap();
    assert!(storage.metadata(&k).await.unwrap().is_none());
    // Deleting again is not an error.
    storage.delete(&k).await.unwrap();
}

async fn invisible_until_commit(storage: &dyn FileStoragePort, prefix: &str) {
    for replayable in [false, true] {
        invisible_until_commit_with(storage, prefix, replayable).await;
    }
}

async fn invisible_until_commit_with(
    storage: &dyn FileStoragePort,
    prefix: &str,
    replayable: bool,
) {
    let data = generate(100_000, 2);
    let k = key(prefix, "staged.bin");
    let mut request = WriteRequest::new(k.clone(), Some(data.len() as u64));
    request.replayable = replayable;
    let mut w = storage.begin_write(request).await.unwrap();
    for piece in data.chunks(32 * 1024) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    assert!(
        storage.metadata(&k).await.unwrap().is_none(),
        "object visible before commit"
    );
    w.commit(info(&data)).await.unwrap();
    assert_eq!(get(storage, &k).await, data);
    storage.delete(&k).await.unwrap();
}

async fn abort_leaves_nothing(storage: &dyn FileStoragePort, prefix: &str) {
    let k = key(prefix, "aborted.bin");
    let mut w = storage
        .begin_write(WriteRequest::new(k.clone(), None))
        .await
        .unwrap();
    w.write(Bytes::from(generate(50_000, 3))).await.unwrap();
    w.abort().await.unwrap();
    assert!(storage.metadata(&k).await.unwrap().is_none());
}

async fn drop_leaves_nothing(storage: &dyn FileStoragePort, prefix: &str) {
    let k = key(prefix, "dropped.bin");
    {
        let mut w = storage
            .begin_write(WriteRequest::new(k.clone(), None))
            .await
            .unwrap();
        w.write(Bytes::from(generate(10_000, 4))).await.unwrap();
    }
    assert!(storage.metadata(&k).await.unwrap().is_none());
    // A streamed write dropped mid-way (all but the last bytes sent).
    let data = generate(70_000, 7);
    {
        let mut request = WriteRequest::new(k.clone(), Some(data.len() as u64));
        request.replayable = true;
        let mut w = storage.begin_write(request).await.unwrap();
        w.write(Bytes::copy_from_slice(&data[..60_000]))
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(storage.metadata(&k).await.unwrap().is_none());
}

async fn overwrite_replaces(storage: &dyn FileStoragePort, prefix: &str) {
    let k = key(prefix, "overwrite.bin");
    let first = generate(20_000, 5);
    let second = generate(7_000, 6);
    put(storage, &k, &first, 8192).await;
    put(storage, &k, &second, 8192).await;
    assert_eq!(get(storage, &k).await, second);
    storage.delete(&k).await.unwrap();
}

async fn empty_object(storage: &dyn FileStoragePort, prefix: &str) {
    let k = key(prefix, "empty.bin");
    put(storage, &k, &[], 1).await;
    assert_eq!(storage.metadata(&k).await.unwrap().unwrap().size, 0);
    assert!(get(storage, &k).await.is_empty());
    storage.delete(&k).await.unwrap();
}

async fn missing_objects(storage: &dyn FileStoragePort, prefix: &str) {
    let k = key(prefix, "never-written.bin");
    assert!(storage.metadata(&k).await.unwrap().is_none());
    match storage.read(&k).await {
        Err(StorageError::NotFound { .. }) => {}
        Err(other) => panic!("expected NotFound, got {other:?}"),
        Ok(_) => panic!("expected NotFound, got a stream"),
    }
}
