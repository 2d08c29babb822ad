//! Orphan cleanup of job tasks: checkpoints (and the temp files or uploads
//! they name) that no live task owns are discarded; live ones and other
//! writers' uploads are never touched.

use std::sync::Arc;
use std::time::Duration;

use ferry_adapters::events::BroadcastEvents;
use ferry_adapters::job_store::SqlJobStore;
use ferry_application::jobs::{Access, JobServiceConfig, SubmitJobRequest};
use ferry_domain::ports::{CheckpointStorePort, JobStorePort};
use ferry_domain::{Checkpoint, JobStatus, TransferId};
use ferry_tests::garage::{garage, service, unique_prefix};
use ferry_tests::origin::Behavior;
use ferry_tests::temp_checkpoint;

use crate::jobs::{Harness, fast_config, service_on};

fn with_checkpoints(store: &Arc<SqlJobStore>) -> JobServiceConfig {
    let mut config = fast_config();
    config.process.checkpoints = Some(store.clone());
    config
}

#[tokio::test]
async fn checkpoints_of_finished_tasks_are_discarded_and_live_ones_kept() {
    let h = Harness::sqlite().await;
    let service = service_on(
        h.store.clone(),
        h.files.path().to_path_buf(),
        h.events.clone(),
        with_checkpoints(&h.store),
    );
    // A finished job, and a job whose only file hangs (so it stays live).
    let (done_file, _) = h.file("done.bin", 1000, Behavior::Normal);
    let done = service
        .submit(SubmitJobRequest {
            files: vec![done_file],
            destination: "d".into(),
            ..SubmitJobRequest::default()
        })
        .await
        .unwrap();
    service.run(&done.job.id).await.unwrap();
    let (hang, _) = h.file("hang.bin", 2_000_000, Behavior::Stall { after: 1000 });
    let live = service
        .submit(SubmitJobRequest {
            files: vec![hang],
            destination: "d".into(),
            ..SubmitJobRequest::default()
        })
        .await
        .unwrap();
    let runner = tokio::spawn(service.clone().run_abortable(live.job.id.clone()));
    h.store
        .wait_until(|| async {
            h.store
                .get(&live.job.id)
                .await
                .unwrap()
                .unwrap()
                .job
                .tasks()[0]
                .status()
                == ferry_domain::TaskStatus::Running
        })
        .await;
    // "Running" is recorded before the transfer looks for its checkpoint:
    // wait until it has opened its source, so it cannot find (and discard,
    // as not its own) the fake checkpoint saved below.
    h.store
        .wait_until(|| async { h.origin.requests().iter().any(|r| r.path == "/hang.bin") })
        .await;

    // What a crash between the end of a task and its cleanup leaves.
    let dir = h.files.path().join("d/out");
    std::fs::create_dir_all(&dir).unwrap();
    let orphan_temp = dir.join(".done.bin.ferry-tmp.4000000000.00");
    let live_temp = dir.join(".hang.bin.ferry-tmp.4000000000.01");
    let orphan_id = TransferId::for_task(&done.job.id, 0);
    let live_id = TransferId::for_task(&live.job.id, 0);
    let not_a_task = TransferId::parse("copy-0123").unwrap();
    h.store
        .save(
            &orphan_id,
            &temp_checkpoint(&orphan_temp, "out/done.bin", 10),
        )
        .await
        .unwrap();
    h.store
        .save(&live_id, &temp_checkpoint(&live_temp, "out/hang.bin", 10))
        .await
        .unwrap();
    h.store
        .save(&not_a_task, &temp_checkpoint(&dir.join("x"), "out/x", 1))
        .await
        .unwrap();

    assert_eq!(service.discard_checkpoints(None, Duration::ZERO).await, 1);
    assert!(
        !orphan_temp.exists(),
        "the finished task's temp file is gone"
    );
    assert!(h.store.load(&orphan_id).await.unwrap().is_none());
    assert!(live_temp.exists(), "a running task's temp file is kept");
    assert!(h.store.load(&live_id).await.unwrap().is_some());
    assert!(h.store.load(&not_a_task).await.unwrap().is_some());
    // A grace period protects recent checkpoints even of finished tasks.
    h.store
        .save(
            &orphan_id,
            &Checkpoint {
                saved_at_ms: i64::MAX / 2,
                ..temp_checkpoint(&orphan_temp, "out/done.bin", 10)
            },
        )
        .await
        .unwrap();
    assert_eq!(
        service
            .discard_checkpoints(None, Duration::from_secs(300))
            .await,
        0
    );
    assert!(orphan_temp.exists());

    // Cancelling cleans the job's checkpoints at once.
    let cancelled = service.cancel(&Access::All, &live.job.id).await.unwrap();
    assert_eq!(cancelled.job.status(), JobStatus::Cancelled);
    runner.await.expect("the job run ends without panicking");
    assert!(h.store.load(&live_id).await.unwrap().is_none());
    assert!(!live_temp.exists());
}

#[tokio::test]
async fn a_cancelled_s3_job_leaves_no_upload_and_other_writers_uploads_are_untouched() {
    let h = Harness::sqlite().await;
    let events = BroadcastEvents::new(1000);
    let prefix = unique_prefix("orphans");
    let svc = service(&garage().endpoint).await;
    let service = service_on(
        h.store.clone(),
        h.files.path().to_path_buf(),
        events,
        with_checkpoints(&h.store),
    );
    // Another writer's upload in the same bucket and prefix.
    let other = svc
        .client()
        .create_multipart_upload()
        .bucket(&garage().bucket)
        .key(format!("{prefix}/out/someone-else.bin"))
        .send()
        .await
        .unwrap()
        .upload_id
        .unwrap();

    // 20 MiB in 8 MiB parts; the source hangs after 10 MiB, so part 1 is
    // uploaded and checkpointed.
    let (big, _) = h.file(
        "big.bin",
        20 << 20,
        Behavior::StallFirstRanged {
            times: 100,
            after: 10 << 20,
        },
    );
    let job = service
        .submit(SubmitJobRequest {
            files: vec![big],
            destination: format!("s3://{}/{prefix}", garage().bucket),
            ..SubmitJobRequest::default()
        })
        .await
        .unwrap();
    let id = job.job.id.clone();
    let runner = tokio::spawn(service.clone().run_abortable(id.clone()));
    let transfer = TransferId::for_task(&id, 0);
    h.store
        .wait_until(|| async {
            h.store
                .load(&transfer)
                .await
                .unwrap()
                .is_some_and(|c| c.committed() > 0)
        })
        .await;
    service.cancel(&Access::All, &id).await.unwrap();
    runner.await.expect("the job run ends without panicking");

    let uploads = || async {
        svc.list_incomplete_uploads(&garage().bucket, Some(&prefix), Duration::ZERO)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.upload_id)
            .collect::<Vec<_>>()
    };
    // Aborted asynchronously by the dropped transfer, then by the cleanup.
    h.store
        .wait_until(|| async { uploads().await == vec![other.clone()] })
        .await;
    assert!(h.store.load(&transfer).await.unwrap().is_none());
    assert_eq!(service.discard_checkpoints(None, Duration::ZERO).await, 0);
    assert_eq!(uploads().await, vec![other.clone()], "never touched");
    svc.abort_upload(
        &garage().bucket,
        &format!("{prefix}/out/someone-else.bin"),
        &other,
    )
    .await
    .unwrap();
}

/// Polls a condition for up to 10 s.
trait WaitUntil {
    async fn wait_until<F, Fut>(&self, condition: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>;
}

impl WaitUntil for Arc<SqlJobStore> {
    async fn wait_until<F, Fut>(&self, condition: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..200 {
            if condition().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("condition not met within 10 s");
    }
}
