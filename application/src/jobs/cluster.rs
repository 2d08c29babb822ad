//! Cluster mode: several `ferry serve` nodes on one PostgreSQL store.
//!
//! A job's phase (export, then downloading) runs on the node that received
//! it, which then enqueues its file tasks on the shared queue
//! (`TaskQueuePort`). Any node's worker may take a task: it claims it in the
//! job store under a new lease epoch (so a node that lost it can no longer
//! write it), runs it through the same Transfer as a single node, and, if
//! it finished the job's last file, completes the job by a conditional
//! update (once, whichever node gets there). Events committed on one node
//! reach the others through the store's notification feed
//! ([`ClusterNote`]); a `job_cancelled` there stops the job's transfers on
//! every node. A reconciler, on one node at a time, enqueues the tasks of
//! downloading jobs that are not in the queue (a crash between the job's
//! commit and its enqueue, a delivery that gave up).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::{AbortHandle, Abortable};
use tracing::{info, warn};

use ferry_domain::ports::{
    ClusterNote, JobRecord, JobStoreError, NodeId, SuspendOnDrop, TaskHandlerPort, TaskQueuePort,
    TaskRef,
};
use ferry_domain::{JobId, JobStatus, TaskStatus};

use super::runner::{Lease, lock};
use super::service::JobService;

/// How often a running task checks that this node still holds its lease.
const LEASE_CHECK: Duration = Duration::from_secs(1);
/// How long a hand-over waits for this node's transfers to stop.
const HAND_OVER_WAIT: Duration = Duration::from_secs(5);

/// A file task running on this node: how to stop it, and the switch that
/// makes it keep its staged bytes when stopped.
struct LocalRun {
    abort: AbortHandle,
    suspend: SuspendOnDrop,
}

/// What a node of a cluster has beside a single node's service.
pub(super) struct Cluster {
    pub(super) node: NodeId,
    pub(super) queue: Arc<dyn TaskQueuePort>,
    /// The file tasks running on this node, to stop them on a cancel or
    /// hand them over at shutdown.
    local: Mutex<HashMap<JobId, HashMap<usize, LocalRun>>>,
}

impl Cluster {
    pub(super) fn new(node: NodeId, queue: Arc<dyn TaskQueuePort>) -> Self {
        Self {
            node,
            queue,
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Stops this node's transfers of `job` (dropped: their temp files go,
    /// their uploads are aborted). Returns how many were running.
    pub(super) fn stop_local(&self, job: &JobId) -> usize {
        let running = lock(&self.local).remove(job).unwrap_or_default();
        for run in running.values() {
            run.abort.abort();
        }
        running.len()
    }

    /// Stops every transfer running on this node, keeping their staged
    /// bytes for whichever node takes them over. Returns their tasks.
    fn suspend_all(&self) -> Vec<TaskRef> {
        let local = lock(&self.local);
        let mut tasks = Vec::new();
        for (job, runs) in local.iter() {
            for (index, run) in runs {
                run.suspend.set();
                run.abort.abort();
                tasks.push(TaskRef {
                    job: job.clone(),
                    index: *index,
                });
            }
        }
        tasks
    }

    fn idle(&self) -> bool {
        lock(&self.local).is_empty()
    }
}

/// Why a task's run ended early.
enum Ended {
    /// Another node holds the lease now, or this node hands the task
    /// over: the transfer is suspended, not given up.
    LeaseLost,
    /// The task is over (cancelled elsewhere, or this run just finished).
    TaskOver,
}

/// The tasks of `record` the queue should hold: its window, the first
/// `window` tasks not over (running ones count), so a job never has more
/// than `window` files in flight across the cluster.
fn open_tasks(record: &JobRecord, window: usize) -> Vec<TaskRef> {
    record
        .job
        .tasks()
        .iter()
        .filter(|t| !t.status().is_terminal())
        .take(window.max(1))
        .map(|t| TaskRef {
            job: record.job.id.clone(),
            index: t.index,
        })
        .collect()
}

impl JobService {
    /// This node's id, in cluster mode.
    pub fn node(&self) -> Option<&NodeId> {
        self.cluster().map(|c| &c.node)
    }

    /// Cluster mode: the job's window of unfinished tasks onto the shared
    /// queue (at the end of its job phase, and after each of its files). A
    /// failure is left to the reconciler.
    pub(super) async fn enqueue_open_tasks(&self, record: &JobRecord) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let tasks = open_tasks(record, self.config().per_job_concurrency);
        match cluster.queue.enqueue(&tasks).await {
            Ok(()) => {
                info!(job = %record.job.id, tasks = tasks.len(), node = %cluster.node, "file tasks enqueued")
            }
            Err(e) => {
                warn!(job = %record.job.id, error = %e, "could not enqueue file tasks; the reconciler will")
            }
        }
    }

    /// Cluster mode, on the node leading (one at a time): every
    /// downloading job's window of unfinished tasks is made sure to be in
    /// the queue, and a pending or exporting job whose phase no node runs
    /// (its node died) has its phase run here. Returns how many tasks were looked at, or `None` if another
    /// node leads (or not in cluster mode).
    pub async fn reconcile(self: &Arc<Self>) -> Result<Option<usize>, JobStoreError> {
        let Some(cluster) = self.cluster() else {
            return Ok(None);
        };
        let _lead = match cluster.queue.lead().await {
            Ok(Some(lead)) => lead,
            Ok(None) => return Ok(None),
            Err(e) => {
                warn!(error = %e, "reconciler: cannot take the lead");
                return Ok(None);
            }
        };
        let mut seen = 0;
        for id in self.recorder().store().unfinished().await? {
            let Some(record) = self.recorder().store().get(&id).await? else {
                continue;
            };
            if matches!(
                record.job.status(),
                JobStatus::Pending | JobStatus::Exporting
            ) {
                // Its phase runs nowhere (its node died, or it was never
                // started): run it here.
                if let Ok(Some(free)) = cluster.queue.hold_job_phase(&id).await {
                    drop(free);
                    info!(job = %id, node = %cluster.node, "reconciler: taking over the job's phase");
                    tokio::spawn(self.clone().run_abortable(id));
                }
                continue;
            }
            if record.job.status() != JobStatus::Downloading {
                continue;
            }
            let tasks = open_tasks(&record, self.config().per_job_concurrency);
            seen += tasks.len();
            if let Err(e) = cluster.queue.enqueue(&tasks).await {
                warn!(job = %id, error = %e, "reconciler: could not enqueue");
            }
        }
        Ok(Some(seen))
    }

    /// What another node committed: its events go to this node's live
    /// watchers, and a cancelled job's transfers here stop.
    pub async fn on_cluster_note(&self, note: ClusterNote) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        if note.node == cluster.node {
            return;
        }
        if note.kind == "job_cancelled" {
            self.stop_job_phase(&note.job);
            let stopped = cluster.stop_local(&note.job);
            if stopped > 0 {
                info!(job = %note.job, stopped, from = %note.node, "job cancelled on another node; its transfers here stopped");
            }
        }
        if !self.recorder().watched() {
            return;
        }
        match self
            .recorder()
            .store()
            .events_after(&note.job, note.seq.saturating_sub(1), 1)
            .await
        {
            Ok(events) => events
                .into_iter()
                .filter(|e| e.seq == note.seq)
                .for_each(|e| self.recorder().relay(e)),
            // Watchers catch up from the store at their next event.
            Err(e) => warn!(job = %note.job, error = %e, "cluster feed: cannot read an event"),
        }
    }

    /// The feed may have missed notes (its connection dropped): every
    /// unfinished job's latest event goes to the live watchers, which
    /// makes any watcher behind it catch up from the store.
    pub async fn on_cluster_gap(&self) {
        if !self.recorder().watched() {
            return;
        }
        let Ok(ids) = self.recorder().store().unfinished().await else {
            return;
        };
        for id in ids {
            if let Ok(Some(record)) = self.recorder().store().get(&id).await
                && let Ok(events) = self
                    .recorder()
                    .store()
                    .events_after(&id, record.last_event_seq.saturating_sub(1), 1)
                    .await
            {
                events.into_iter().for_each(|e| self.recorder().relay(e));
            }
        }
    }

    /// One delivered task: checked against its job, claimed, run, and the
    /// job completed if this was its last file.
    async fn run_delivered(&self, cluster: &Cluster, task: TaskRef) -> Result<(), JobStoreError> {
        let store = self.recorder().store();
        let Some(mut record) = store.get(&task.job).await? else {
            return Ok(());
        };
        // A task picked up after its job ended (cancelled, failed) does
        // nothing.
        if record.job.status() != JobStatus::Downloading {
            return Ok(());
        }
        let Some(epoch) = store
            .claim_task(&task.job, task.index, cluster.node.as_str())
            .await?
        else {
            return self.after_task(&task.job).await;
        };
        // Running on a node that died: this node takes it over (it resumes
        // from the task's checkpoint).
        if let Ok(t) = record.job.task_mut(task.index)
            && t.status() == TaskStatus::Running
        {
            let _ = t.requeue();
        }
        let transfer = match self.transfers().open(&record.destination).await {
            Ok(t) => t,
            Err(e) => {
                warn!(job = %task.job, index = task.index, error = %e, "destination unusable; task left for another delivery");
                return Ok(());
            }
        };
        let (abort, registration) = AbortHandle::new_pair();
        let suspend = SuspendOnDrop::default();
        lock(&cluster.local)
            .entry(task.job.clone())
            .or_default()
            .insert(
                task.index,
                LocalRun {
                    abort,
                    suspend: suspend.clone(),
                },
            );
        let lease = Lease { epoch, suspend };
        let shared = Mutex::new(record);
        let run = Abortable::new(
            self.runner().run_task(
                self.recorder(),
                &shared,
                transfer.as_ref(),
                task.index,
                Some(&lease),
            ),
            registration,
        );
        // Meanwhile, once a second: is the lease still this node's?
        let watch = async {
            loop {
                tokio::time::sleep(LEASE_CHECK).await;
                match store.task_lease(&task.job, task.index).await {
                    Ok(Some(now)) if now == epoch => {}
                    Ok(Some(_)) => return Ended::LeaseLost,
                    Ok(None) => return Ended::TaskOver,
                    Err(_) => {}
                }
            }
        };
        let ended = match futures::future::select(Box::pin(run), Box::pin(watch)).await {
            futures::future::Either::Left((Ok(()), _)) => None,
            // Aborted: handed over at shutdown, or its job was cancelled
            // (on this node or another).
            futures::future::Either::Left((Err(_), _)) if lease.suspend.is_set() => {
                Some(Ended::LeaseLost)
            }
            futures::future::Either::Left((Err(_), _)) => Some(Ended::TaskOver),
            futures::future::Either::Right((Ended::LeaseLost, run)) => {
                // Handed over: the transfer stops, its upload kept for the
                // node that holds the task now.
                lease.suspend.set();
                drop(run);
                Some(Ended::LeaseLost)
            }
            futures::future::Either::Right((Ended::TaskOver, run)) => {
                drop(run);
                Some(Ended::TaskOver)
            }
        };
        {
            let mut local = lock(&cluster.local);
            if let Some(tasks) = local.get_mut(&task.job) {
                tasks.remove(&task.index);
                if tasks.is_empty() {
                    local.remove(&task.job);
                }
            }
        }
        match ended {
            None => {}
            Some(Ended::LeaseLost) => {
                warn!(job = %task.job, index = task.index, "task stopped and suspended: handed over, or another node holds its lease now");
                return Ok(());
            }
            Some(Ended::TaskOver) => {
                info!(job = %task.job, index = task.index, "task stopped: its job was cancelled, or the task ended elsewhere");
            }
        }
        self.after_task(&task.job).await
    }

    /// After a file of the job: completes the job if every task is over
    /// (CompleteJob, once across the cluster), else moves its window on.
    pub(super) async fn after_task(&self, id: &JobId) -> Result<(), JobStoreError> {
        let Some(record) = self.recorder().store().get(id).await? else {
            return Ok(());
        };
        if record.job.status() != JobStatus::Downloading {
            return Ok(());
        }
        if record.job.tasks().iter().any(|t| !t.status().is_terminal()) {
            self.enqueue_open_tasks(&record).await;
            return Ok(());
        }
        self.complete(record).await
    }
}

impl JobService {
    /// Cluster mode, at shutdown: stops this node's transfers keeping their
    /// staged bytes, and puts their tasks back in the queue, so that other
    /// nodes resume them from their checkpoints at once (not after the
    /// lease timeout). Returns how many were handed over.
    pub async fn hand_over(&self) -> usize {
        let Some(cluster) = self.cluster() else {
            return 0;
        };
        let tasks = cluster.suspend_all();
        if tasks.is_empty() {
            return 0;
        }
        let waited = tokio::time::Instant::now();
        while !cluster.idle() && waited.elapsed() < HAND_OVER_WAIT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match cluster.queue.release(&tasks).await {
            Ok(()) => {
                info!(tasks = tasks.len(), node = %cluster.node, "tasks handed over to the other nodes")
            }
            Err(e) => {
                warn!(error = %e, "could not hand tasks over; other nodes take them after the lease timeout")
            }
        }
        tasks.len()
    }
}

#[async_trait]
impl TaskHandlerPort for JobService {
    async fn run_task(&self, task: TaskRef) {
        let Some(cluster) = self.cluster() else {
            warn!(job = %task.job, index = task.index, "a queued task reached a node not in cluster mode");
            return;
        };
        if let Err(e) = self.run_delivered(cluster, task.clone()).await {
            warn!(job = %task.job, index = task.index, error = %e, "task run failed; the reconciler enqueues it again");
        }
    }
}
