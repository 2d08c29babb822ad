//! The cluster's file-task queue (apalis-postgres on 127.0.0.1:5432): a
//! delivery whose node stops goes back to the queue for the other nodes,
//! whatever the order of its acknowledgement and the node's release.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use ferry_adapters::cluster::PgTaskQueue;
use ferry_domain::JobId;
use ferry_domain::ports::{NodeId, TaskHandlerPort, TaskQueuePort, TaskRef};
use ferry_tests::pg::PgDatabase;

/// A node's handler: records each delivery, and runs it until its node
/// stops (as a suspended transfer does).
struct Node {
    name: &'static str,
    got: Arc<Mutex<Vec<(&'static str, TaskRef)>>>,
    stop: CancellationToken,
}

#[async_trait]
impl TaskHandlerPort for Node {
    async fn run_task(&self, task: TaskRef) {
        self.got.lock().unwrap().push((self.name, task));
        self.stop.cancelled().await;
    }
}

/// When the stopping node releases its task, relative to its delivery's
/// end (and so to the acknowledgement).
#[derive(Debug, Clone, Copy)]
enum Release {
    Never,
    BeforeTheRunEnds,
    AfterTheRunEnds,
}

async fn handed_over(release: Release) {
    let db = PgDatabase::create().await;
    let queue = Arc::new(
        PgTaskQueue::connect(&db.url, Duration::from_secs(60))
            .await
            .unwrap(),
    );
    let got = Arc::new(Mutex::new(Vec::new()));
    let start = |name: &'static str| {
        let stop = CancellationToken::new();
        let node = Arc::new(Node {
            name,
            got: got.clone(),
            stop: stop.clone(),
        });
        let queue = queue.clone();
        let worker_stop = stop.clone();
        let run = tokio::spawn(async move {
            queue
                .run_workers(&NodeId::parse(name).unwrap(), 2, node, worker_stop)
                .await
        });
        (stop, run)
    };
    let delivered = |n: usize| {
        let got = got.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let now = got.lock().unwrap().clone();
                if now.len() >= n {
                    return now;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{release:?}: {} deliveries after 10 s, {n} awaited: {now:?}",
                    now.len()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    let (stop_a, run_a) = start("node-a");
    let task = TaskRef {
        job: JobId::parse("job_handover").unwrap(),
        index: 3,
    };
    queue.enqueue(std::slice::from_ref(&task)).await.unwrap();
    assert_eq!(delivered(1).await, vec![("node-a", task.clone())]);

    // node-a stops: its run ends (and is acknowledged as its worker
    // closes); it releases its task before, after, or not at all.
    if let Release::BeforeTheRunEnds = release {
        queue.release(std::slice::from_ref(&task)).await.unwrap();
    }
    stop_a.cancel();
    run_a.await.unwrap();
    if let Release::AfterTheRunEnds = release {
        queue.release(std::slice::from_ref(&task)).await.unwrap();
    }

    // node-b, idle, takes it at once: long before the lease timeout
    // (60 s), after which a dead node's tasks would go anyway.
    let (stop_b, run_b) = start("node-b");
    let all = delivered(2).await;
    assert_eq!(all[1], ("node-b", task.clone()), "{release:?}");
    assert_eq!(all.len(), 2, "{release:?}: {all:?}");
    stop_b.cancel();
    run_b.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_s_delivery_goes_back_to_the_queue_without_a_release() {
    handed_over(Release::Never).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_released_before_its_run_ends_is_taken_by_another_node() {
    handed_over(Release::BeforeTheRunEnds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_released_after_its_run_ended_is_taken_by_another_node() {
    handed_over(Release::AfterTheRunEnds).await;
}
