//! One suite for every `CheckpointStorePort`: the job store on SQLite and
//! PostgreSQL, and `ferry copy`'s state files.

use ferry_adapters::s3::{MultipartState, PartRecord};
use ferry_domain::ports::{CheckpointError, CheckpointStorePort};
use ferry_domain::{Checkpoint, HashState, ObjectKey, SourceIdentity, TransferId};

pub fn checkpoint(parts: u32) -> Checkpoint {
    let staged = MultipartState {
        upload_id: format!("upload-{parts}"),
        part_size: 8 << 20,
        parts: (1..=parts)
            .map(|number| PartRecord {
                number,
                size: 8 << 20,
                etag: format!("\"etag-{number}\""),
            })
            .collect(),
    }
    .to_staged();
    Checkpoint::new(
        SourceIdentity {
            url_sha256: "cd".repeat(32),
            length: 1 << 30,
            etag: Some("\"v1\"".into()),
            last_modified: Some("Mon, 30 Nov 2026 00:00:00 GMT".into()),
        },
        ObjectKey::parse("a/b.bin").unwrap(),
        HashState {
            bytes: staged.committed(),
            sha256: vec![3; 104],
            md5: Some(vec![4; 88]),
        },
        staged,
        1_796_000_000_000 + i64::from(parts),
    )
    .unwrap()
}

/// Every assertion; ids are prefixed with `ns`.
pub async fn run(store: &dyn CheckpointStorePort, ns: &str) {
    let a = TransferId::parse(&format!("{ns}-a")).unwrap();
    let b = TransferId::parse(&format!("{ns}-b")).unwrap();
    assert!(store.load(&a).await.unwrap().is_none());
    store.remove(&a).await.unwrap();

    store.save(&a, &checkpoint(1)).await.unwrap();
    assert_eq!(store.load(&a).await.unwrap(), Some(checkpoint(1)));
    // A save replaces.
    store.save(&a, &checkpoint(3)).await.unwrap();
    assert_eq!(store.load(&a).await.unwrap(), Some(checkpoint(3)));
    store.save(&b, &checkpoint(2)).await.unwrap();

    let mine: Vec<_> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|(id, _)| id.as_str().starts_with(ns))
        .collect();
    assert_eq!(
        mine,
        vec![
            (a.clone(), Ok(checkpoint(3))),
            (b.clone(), Ok(checkpoint(2)))
        ]
    );

    store.remove(&a).await.unwrap();
    assert!(store.load(&a).await.unwrap().is_none());
    assert!(store.load(&b).await.unwrap().is_some());
    store.remove(&b).await.unwrap();
}

/// Cluster leases on the job store's checkpoints: a save fenced with the
/// task's current epoch is written; one with an older epoch, or for a task
/// that is over, is not (and leaves the current checkpoint as it was).
pub async fn fenced<S>(store: &S, ns: &str)
where
    S: CheckpointStorePort + ferry_domain::ports::JobStorePort,
{
    let mut rec = crate::job_store_conformance::record(&format!("{ns}-fenced"), 1, 30_000);
    rec.job.start_downloading().unwrap();
    store.create(&rec).await.unwrap();
    let job = rec.job.id.clone();
    let id = TransferId::for_task(&job, 0);
    let old = store.claim_task(&job, 0, "node-a").await.unwrap().unwrap();
    let new = store.claim_task(&job, 0, "node-b").await.unwrap().unwrap();
    assert!(store.save_fenced(&id, &checkpoint(2), new).await.unwrap());
    assert_eq!(store.load(&id).await.unwrap(), Some(checkpoint(2)));
    assert!(!store.save_fenced(&id, &checkpoint(1), old).await.unwrap());
    assert_eq!(store.load(&id).await.unwrap(), Some(checkpoint(2)));
    assert!(store.save_fenced(&id, &checkpoint(3), new).await.unwrap());
    assert_eq!(store.load(&id).await.unwrap(), Some(checkpoint(3)));
    // Over: nobody's lease writes it.
    let mut over = store.get(&job).await.unwrap().unwrap();
    over.job.cancel().unwrap();
    store.replace_tasks(&job, over.job.tasks()).await.unwrap();
    assert!(!store.save_fenced(&id, &checkpoint(4), new).await.unwrap());
    assert_eq!(store.load(&id).await.unwrap(), Some(checkpoint(3)));
    store.remove(&id).await.unwrap();
}

/// A damaged checkpoint is reported as corrupt (the transfer restarts),
/// never as a different checkpoint.
pub fn assert_corrupt(result: Result<Option<Checkpoint>, CheckpointError>) {
    assert!(
        matches!(result, Err(CheckpointError::Corrupt { .. })),
        "{result:?}"
    );
}
