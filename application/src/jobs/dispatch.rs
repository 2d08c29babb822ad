//! DispatchDownloadTasks, through a task queue (`TaskQueuePort`), in both
//! modes: the embedded default's in-process queue ([`LocalTaskQueue`]) and
//! a cluster's shared PostgreSQL queue.
//!
//! A job's phase (export, then downloading) runs on the node that received
//! it (under the job's phase lock), which enqueues its window of file tasks:
//! its first `per_job_concurrency` unfinished ones, so a job never has more
//! in flight. Whichever worker gets a task takes it from the tasks read
//! ahead with the window (the embedded default) or reads that one task
//! from the store, runs it through the job's Transfer, then moves the
//! window on or,
//! if it finished the job's last file, completes the job by a conditional
//! update (once, whichever worker gets there).
//!
//! Cluster mode adds: a worker claims its task in the job store under a new
//! lease epoch (so a node that lost it can no longer write it) and checks
//! the lease every second; events committed on one node reach the others
//! through the store's notification feed ([`ClusterNote`]), and a
//! `job_cancelled` there stops the job's transfers on every node; a
//! reconciler, on one node at a time, enqueues the windows of downloading
//! jobs missing from the queue (a crash between the job's commit and its
//! enqueue, a delivery that gave up) and takes over the phase of a job
//! whose node died. The embedded default runs the same reconciler, on its
//! one node.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::{AbortHandle, Abortable};
use tokio::sync::Notify;
use tracing::{info, warn};

use ferry_domain::ports::{
    ClusterNote, FileRunContext, JobStoreError, NodeId, SuspendOnDrop, TaskHandlerPort,
    TaskQueuePort, TaskRef, TransferPort,
};
use ferry_domain::{Destination, FileTask, JobId, JobStatus, TaskStatus};

use super::local_queue::LocalTaskQueue;
use super::runner::{Lease, TaskContext, lock};
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

/// How many of a job's unfinished tasks past its window the embedded
/// default reads with the window, per window slot.
const AHEAD_PER_SLOT: usize = 4;

/// How a service's file tasks are queued and run.
pub(super) struct Dispatch {
    /// Cluster mode: this node's id (its runs are fenced by lease
    /// epochs); `None` for the embedded default.
    pub(super) node: Option<NodeId>,
    pub(super) queue: Arc<dyn TaskQueuePort>,
    /// The embedded default's queue, to attach the service to it.
    local_queue: Option<Arc<LocalTaskQueue>>,
    /// The file tasks running on this node, to stop them on a cancel or
    /// hand them over at shutdown.
    local: Mutex<HashMap<JobId, HashMap<usize, LocalRun>>>,
    /// Set (under `local`'s lock) when this node hands its tasks over: a
    /// task delivered after that (the queue's worker may still be polling
    /// while it stops) is put back in the queue, not run.
    handing_over: AtomicBool,
    /// Each job's Transfer (its destination resolved once, not per file),
    /// while the job has files running here.
    transfers: Mutex<HashMap<JobId, Arc<dyn TransferPort>>>,
    /// Told when a job's last file is over, for each job whose phase waits
    /// for it here (the embedded default's).
    settled: Mutex<HashMap<JobId, Arc<Settle>>>,
    /// The embedded default: each job's tasks read ahead (see [`Ahead`]).
    ahead: Mutex<HashMap<JobId, Ahead>>,
}

/// The embedded default's read-ahead of one job: its window and its next
/// unfinished tasks past it (`AHEAD_PER_SLOT` per slot), read whole with
/// what their runs need of the job, so that a file's end tops the window
/// up and a delivery runs its task without reading the store (one read
/// per few dozen files, not two per file). The in-process queue counts
/// each job's tasks in it, so a top-up never fills a window past
/// `per_job_concurrency`, whoever calls it.
///
/// A copy is taken once, at its task's delivery. It cannot be stale: in
/// the embedded default only this process changes a downloading job's
/// tasks, a task's end is recorded here (`ended`) before its delivery
/// returns, and a copy of a task that ended here is never run (nor kept);
/// a cancel marks the job `stopped` (under the runs' lock, so a delivery
/// registering its run either is stopped with the others or sees the mark
/// and does not run).
#[derive(Default)]
struct Ahead {
    /// What the job's file runs need of it, as read with the tasks.
    job: Option<Arc<FileRunContext>>,
    /// Indexes past the window, in order, for the next top-ups.
    next: Vec<usize>,
    /// The tasks read, whole, until their delivery takes them.
    tasks: HashMap<usize, FileTask>,
    /// The tasks whose run ended here, a bit each.
    ended: Vec<u64>,
    /// The job's files were stopped here (cancelled).
    stopped: bool,
}

impl Ahead {
    fn ended(&self, index: usize) -> bool {
        self.ended
            .get(index / 64)
            .is_some_and(|word| word & (1 << (index % 64)) != 0)
    }

    fn end(&mut self, index: usize) {
        let word = index / 64;
        if self.ended.len() <= word {
            self.ended.resize(word + 1, 0);
        }
        self.ended[word] |= 1 << (index % 64);
        self.tasks.remove(&index);
    }
}

/// A delivered task as the read-ahead has it.
enum ReadAhead {
    /// Its copy, and its job.
    Copy(Box<FileTask>, Arc<FileRunContext>),
    /// It ended here: turned away, as the store would say.
    Ended,
    /// Its job was stopped here: not run.
    Stopped,
}

impl Dispatch {
    /// The embedded default: one node, the in-process queue.
    pub(super) fn local() -> Self {
        let queue = Arc::new(LocalTaskQueue::default());
        Self::with(None, queue.clone(), Some(queue))
    }

    /// Node `node` of a cluster sharing `queue`.
    pub(super) fn cluster(node: NodeId, queue: Arc<dyn TaskQueuePort>) -> Self {
        Self::with(Some(node), queue, None)
    }

    fn with(
        node: Option<NodeId>,
        queue: Arc<dyn TaskQueuePort>,
        local_queue: Option<Arc<LocalTaskQueue>>,
    ) -> Self {
        Self {
            node,
            queue,
            local_queue,
            local: Mutex::new(HashMap::new()),
            handing_over: AtomicBool::new(false),
            transfers: Mutex::new(HashMap::new()),
            settled: Mutex::new(HashMap::new()),
            ahead: Mutex::new(HashMap::new()),
        }
    }

    /// Stops this node's transfers of `job` (dropped: their temp files go,
    /// their uploads are aborted). Returns how many were running.
    pub(super) fn stop_local(&self, job: &JobId) -> usize {
        let running = {
            let mut local = lock(&self.local);
            // Under the runs' lock: a delivery registering its run from a
            // copy sees the mark, or is among the runs stopped here.
            let mut ahead = lock(&self.ahead);
            if self.local_queue.is_some() {
                let entry = ahead.entry(job.clone()).or_default();
                entry.stopped = true;
                entry.next.clear();
                entry.tasks.clear();
            }
            local.remove(job).unwrap_or_default()
        };
        for run in running.values() {
            run.abort.abort();
        }
        lock(&self.transfers).remove(job);
        running.len()
    }

    /// Takes `task`'s read-ahead copy, if any.
    fn take_read_ahead(&self, task: &TaskRef) -> Option<ReadAhead> {
        let mut ahead = lock(&self.ahead);
        let entry = ahead.get_mut(&task.job)?;
        if entry.stopped {
            return Some(ReadAhead::Stopped);
        }
        if entry.ended(task.index) {
            entry.tasks.remove(&task.index);
            return Some(ReadAhead::Ended);
        }
        let copy = entry.tasks.remove(&task.index)?;
        let job = entry.job.clone()?;
        Some(ReadAhead::Copy(Box::new(copy), job))
    }

    /// Whether `job`'s files may still run from copies (under the runs'
    /// lock: see [`Ahead`]).
    fn read_ahead_live(&self, job: &JobId) -> bool {
        lock(&self.ahead)
            .get(job)
            .is_some_and(|entry| !entry.stopped)
    }

    /// Drops `job`'s read-ahead once its cancel is stored (or could not
    /// be): its deliveries read the store again from then on.
    pub(super) fn forget_read_ahead(&self, job: &JobId) {
        lock(&self.ahead).remove(job);
    }

    /// Records that `task`'s run ended here, over.
    fn read_ahead_ended(&self, task: &TaskRef) {
        if let Some(entry) = lock(&self.ahead).get_mut(&task.job) {
            entry.end(task.index);
        }
    }

    /// Stops every transfer running on this node, keeping their staged
    /// bytes for whichever node takes them over. Returns their tasks.
    fn suspend_all(&self) -> Vec<TaskRef> {
        let local = lock(&self.local);
        self.handing_over.store(true, Ordering::SeqCst);
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

    /// Keeps `transfer` as job `id`'s while its files run here.
    pub(super) fn keep_transfer(&self, id: &JobId, transfer: Arc<dyn TransferPort>) {
        lock(&self.transfers).insert(id.clone(), transfer);
    }
}

/// What a job phase waiting for its job's end shares with the workers
/// finishing it: the wake-up, and the turn a completion (with its
/// callback) holds, so that the phase sees the job before or after the
/// whole completion, never in between.
#[derive(Default)]
struct Settle {
    notify: Notify,
    finishing: tokio::sync::Mutex<()>,
}

/// A job phase waiting for its job to end; its wake-up is removed when it
/// stops waiting (the job ended, or the phase was aborted).
struct Waiting<'a> {
    dispatch: &'a Dispatch,
    id: &'a JobId,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(&self.dispatch.settled).remove(self.id);
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

fn task_refs(id: &JobId, open: &[usize]) -> Vec<TaskRef> {
    open.iter()
        .map(|&index| TaskRef {
            job: id.clone(),
            index,
        })
        .collect()
}

impl JobService {
    /// This node's id, in cluster mode.
    pub fn node(&self) -> Option<&NodeId> {
        self.dispatch().node.as_ref()
    }

    /// The embedded default's queue delivers to this service (called
    /// before anything is enqueued: by the job phase and the reconciler).
    pub(super) fn attach(self: &Arc<Self>) {
        if let Some(queue) = &self.dispatch().local_queue {
            let weak: Weak<Self> = Arc::downgrade(self);
            let handler: Weak<dyn TaskHandlerPort> = weak;
            queue.attach(handler);
        }
    }

    /// The job's window of unfinished tasks (`open`, its first unfinished
    /// ones in order) onto the queue (at the end of its job phase, after
    /// each of its files, by the reconciler). The embedded default tops
    /// the window up to `per_job_concurrency` tasks in its queue; a
    /// cluster enqueues the window (the queue skips tasks it holds).
    /// Returns how many of `open` it went through; a failure is left to
    /// the reconciler.
    async fn enqueue_window(&self, id: &JobId, open: &[usize]) -> usize {
        let dispatch = self.dispatch();
        let window = self.config().per_job_concurrency.max(1);
        let result = match &dispatch.local_queue {
            Some(queue) => queue.top_up(id, open, window),
            None => {
                let tasks = task_refs(id, &open[..window.min(open.len())]);
                let result = dispatch.queue.enqueue(&tasks).await.map(|()| tasks.len());
                if let (Ok(_), Some(node)) = (&result, &dispatch.node) {
                    info!(job = %id, tasks = tasks.len(), %node, "file tasks enqueued");
                }
                result
            }
        };
        result.unwrap_or_else(|e| {
            warn!(job = %id, error = %e, "could not enqueue file tasks; the reconciler will");
            0
        })
    }

    /// The end of a job phase: the job's Transfer kept for its files, its
    /// window enqueued (or the job completed if no file is left). The
    /// embedded default then waits for the job to end, so that a job run
    /// lasts as long as its job (cancel stops it; a restart resumes it); a
    /// cluster node returns: its files run wherever the queue hands them.
    pub(super) async fn dispatch_files(
        &self,
        id: &JobId,
        transfer: Arc<dyn TransferPort>,
    ) -> Result<(), JobStoreError> {
        let dispatch = self.dispatch();
        dispatch.keep_transfer(id, transfer);
        if dispatch.node.is_some() {
            return self.after_task(id, None).await;
        }
        let settle = lock(&dispatch.settled)
            .entry(id.clone())
            .or_default()
            .clone();
        let _waiting = Waiting { dispatch, id };
        let mut settled = pin!(settle.notify.notified());
        settled.as_mut().enable();
        self.after_task(id, None).await?;
        loop {
            let over = {
                let _turn = settle.finishing.lock().await;
                let status = self.recorder().store().open_tasks(id, 0).await?;
                status.is_none_or(|s| s.status.is_terminal())
            };
            if over {
                return Ok(());
            }
            settled.as_mut().await;
            settled.set(settle.notify.notified());
            settled.as_mut().enable();
        }
    }

    /// On the node leading (one at a time; the embedded default's one
    /// node): every downloading job's window of unfinished tasks is made
    /// sure to be in the queue, and a pending or exporting job whose phase
    /// no node runs (its node died) has its phase run here. Returns how
    /// many tasks were looked at, or `None` if another node leads.
    pub async fn reconcile(self: &Arc<Self>) -> Result<Option<usize>, JobStoreError> {
        self.attach();
        let dispatch = self.dispatch();
        let _lead = match dispatch.queue.lead().await {
            Ok(Some(lead)) => lead,
            Ok(None) => return Ok(None),
            Err(e) => {
                warn!(error = %e, "reconciler: cannot take the lead");
                return Ok(None);
            }
        };
        let window = self.config().per_job_concurrency.max(1);
        let mut seen = 0;
        for id in self.recorder().store().unfinished().await? {
            let Some(open) = self.recorder().store().open_tasks(&id, window).await? else {
                continue;
            };
            if matches!(open.status, JobStatus::Pending | JobStatus::Exporting) {
                // Its phase runs nowhere (its node died, or it was never
                // started): run it here.
                if let Ok(Some(free)) = dispatch.queue.hold_job_phase(&id).await {
                    drop(free);
                    info!(job = %id, node = ?dispatch.node, "reconciler: taking over the job's phase");
                    tokio::spawn(self.clone().run_abortable(id));
                }
                continue;
            }
            if open.status != JobStatus::Downloading {
                continue;
            }
            seen += open.open.len();
            if open.open.is_empty() {
                // Its last file ended but the job did not complete (the
                // worker died in between).
                if let Err(e) = self.after_task(&id, None).await {
                    warn!(job = %id, error = %e, "reconciler: could not complete the job");
                }
                continue;
            }
            self.enqueue_window(&id, &open.open).await;
        }
        Ok(Some(seen))
    }

    /// What another node committed: its events go to this node's live
    /// watchers, and a cancelled job's transfers here stop.
    pub async fn on_cluster_note(&self, note: ClusterNote) {
        let dispatch = self.dispatch();
        if dispatch.node.as_ref().is_none_or(|node| *node == note.node) {
            return;
        }
        if note.kind == "job_cancelled" {
            self.stop_job_phase(&note.job);
            let stopped = dispatch.stop_local(&note.job);
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
            if let Ok(Some(head)) = self.recorder().store().head(&id).await
                && let Ok(events) = self
                    .recorder()
                    .store()
                    .events_after(&id, head.last_event_seq.saturating_sub(1), 1)
                    .await
            {
                events.into_iter().for_each(|e| self.recorder().relay(e));
            }
        }
    }

    /// The job's Transfer: the one kept for it, else opened for
    /// `destination` (and kept).
    async fn transfer_for(
        &self,
        id: &JobId,
        destination: &Destination,
    ) -> Option<Arc<dyn TransferPort>> {
        if let Some(t) = lock(&self.dispatch().transfers).get(id) {
            return Some(t.clone());
        }
        match self.transfers().open(destination).await {
            Ok(t) => {
                self.dispatch().keep_transfer(id, t.clone());
                Some(t)
            }
            Err(e) => {
                warn!(job = %id, error = %e, "destination unusable; task left for the reconciler");
                None
            }
        }
    }

    /// A task delivered while this node hands its tasks over: back in the
    /// queue for another node, unlocked (as `hand_over` leaves its own).
    async fn put_back(&self, task: TaskRef) -> Result<(), JobStoreError> {
        match self
            .dispatch()
            .queue
            .release(std::slice::from_ref(&task))
            .await
        {
            Ok(()) => {
                info!(job = %task.job, index = task.index, "task delivered during the hand-over; put back for the other nodes")
            }
            Err(e) => {
                warn!(job = %task.job, index = task.index, error = %e, "could not put back a task delivered during the hand-over; other nodes take it after the lease timeout")
            }
        }
        Ok(())
    }

    /// One delivered task: checked against its job, claimed (cluster
    /// mode), run, and the job completed if this was its last file.
    async fn run_delivered(&self, task: TaskRef) -> Result<(), JobStoreError> {
        let dispatch = self.dispatch();
        // Early, so a stopping node neither reads nor claims the task; the
        // check that makes the hand-over exact is the one under the runs'
        // lock below, where the run registers.
        if dispatch.handing_over.load(Ordering::SeqCst) {
            return self.put_back(task).await;
        }
        let store = self.recorder().store();
        // The embedded default: the task as read ahead with its window,
        // if it was; else (and in a cluster) read now.
        let copied = match &dispatch.local_queue {
            Some(_) => dispatch.take_read_ahead(&task),
            None => None,
        };
        let (mut file, job, from_copy) = match copied {
            Some(ReadAhead::Copy(file, job)) => (*file, job, true),
            Some(ReadAhead::Ended) => return self.after_task(&task.job, Some(&task)).await,
            Some(ReadAhead::Stopped) => return Ok(()),
            None => {
                let Some(found) = store.task(&task.job, task.index).await? else {
                    return Ok(());
                };
                // A task picked up after its job ended (cancelled, failed)
                // does nothing.
                if found.status != JobStatus::Downloading {
                    return Ok(());
                }
                (found.task, Arc::new(found.job), false)
            }
        };
        let epoch = match &dispatch.node {
            None if file.status().is_terminal() => {
                return self.after_task(&task.job, Some(&task)).await;
            }
            None => None,
            Some(node) => match store
                .claim_task(&task.job, task.index, node.as_str())
                .await?
            {
                Some(epoch) => Some(epoch),
                None => return self.after_task(&task.job, None).await,
            },
        };
        // Left running by a process (or node) that died: resumed here from
        // its checkpoint.
        if file.status() == TaskStatus::Running {
            let _ = file.requeue();
        }
        let Some(transfer) = self.transfer_for(&task.job, &job.destination).await else {
            return Ok(());
        };
        let (abort, registration) = AbortHandle::new_pair();
        let suspend = SuspendOnDrop::default();
        {
            let mut local = lock(&dispatch.local);
            if dispatch.handing_over.load(Ordering::SeqCst) {
                drop(local);
                return self.put_back(task).await;
            }
            // Cancelled since its copy was taken: not run.
            if from_copy && !dispatch.read_ahead_live(&task.job) {
                return Ok(());
            }
            local.entry(task.job.clone()).or_default().insert(
                task.index,
                LocalRun {
                    abort,
                    suspend: suspend.clone(),
                },
            );
        }
        let lease = epoch.map(|epoch| Lease {
            epoch,
            suspend: suspend.clone(),
        });
        let context = TaskContext {
            job: task.job.clone(),
            owner: job.owner.clone().unwrap_or_default(),
            if_exists: job.options.if_exists,
        };
        let shared = Mutex::new(file);
        let run = Abortable::new(
            self.runner().run_task(
                self.recorder(),
                &context,
                &shared,
                transfer.as_ref(),
                lease.as_ref(),
            ),
            registration,
        );
        // Meanwhile, in cluster mode, once a second: is the lease still
        // this node's?
        let watch = async {
            let Some(epoch) = epoch else {
                return std::future::pending().await;
            };
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
            futures::future::Either::Left((Err(_), _)) if suspend.is_set() => {
                Some(Ended::LeaseLost)
            }
            futures::future::Either::Left((Err(_), _)) => Some(Ended::TaskOver),
            futures::future::Either::Right((Ended::LeaseLost, run)) => {
                // Handed over: the transfer stops, its upload kept for the
                // node that holds the task now.
                suspend.set();
                drop(run);
                Some(Ended::LeaseLost)
            }
            futures::future::Either::Right((Ended::TaskOver, run)) => {
                drop(run);
                Some(Ended::TaskOver)
            }
        };
        {
            let mut local = lock(&dispatch.local);
            if let Some(tasks) = local.get_mut(&task.job) {
                tasks.remove(&task.index);
                if tasks.is_empty() {
                    local.remove(&task.job);
                }
            }
        }
        match ended {
            None => {
                // Its end is stored (its last write was waited for): a
                // copy read before it is never run.
                if dispatch.local_queue.is_some() && lock(&shared).status().is_terminal() {
                    dispatch.read_ahead_ended(&task);
                }
            }
            Some(Ended::LeaseLost) => {
                warn!(job = %task.job, index = task.index, "task stopped and suspended: handed over, or another node holds its lease now");
                return Ok(());
            }
            Some(Ended::TaskOver) => {
                info!(job = %task.job, index = task.index, "task stopped: its job was cancelled, or the task ended elsewhere");
                // Its delivery holds its place in the queue until it
                // returns: the stopped run's task is not delivered again
                // meanwhile.
                return self.after_task(&task.job, None).await;
            }
        }
        self.after_task(&task.job, Some(&task)).await
    }

    /// After a file of the job (`finished`: the delivery that ran it to
    /// its end, or turned it away as over): completes the job if every task is over
    /// (CompleteJob, once), else moves its window on: in the embedded
    /// default, from the tasks read ahead while there are any, else (and
    /// in a cluster) from a read of the job's open tasks.
    pub(super) async fn after_task(
        &self,
        id: &JobId,
        finished: Option<&TaskRef>,
    ) -> Result<(), JobStoreError> {
        let dispatch = self.dispatch();
        let window = self.config().per_job_concurrency.max(1);
        if let Some(queue) = &dispatch.local_queue
            && let Some(task) = finished
        {
            // Its slot is free from now on (its end is stored: delivered
            // again, it would be turned away).
            queue.done(task);
            let mut ahead = lock(&dispatch.ahead);
            if let Some(entry) = ahead.get_mut(id) {
                if entry.stopped {
                    return Ok(());
                }
                if !entry.next.is_empty() {
                    match queue.top_up(id, &entry.next, window) {
                        Ok(went) => {
                            entry.next.drain(..went);
                            return Ok(());
                        }
                        Err(e) => warn!(job = %id, error = %e, "could not enqueue file tasks"),
                    }
                }
            }
        }
        // The job's status once none of its tasks is left to enqueue
        // (`None`: the job is missing).
        let status = match dispatch.local_queue {
            Some(_) => match self.read_ahead(id, window).await? {
                ReadWindow::Enqueued => return Ok(()),
                ReadWindow::Over(status) => status,
            },
            None => match self.recorder().store().open_tasks(id, window).await? {
                Some(open) if open.status == JobStatus::Downloading && !open.open.is_empty() => {
                    self.enqueue_window(id, &open.open).await;
                    return Ok(());
                }
                open => open.map(|open| open.status),
            },
        };
        lock(&dispatch.ahead).remove(id);
        // Its files are over: completed here unless another worker did,
        // in the job's finishing turn when a phase here waits for it.
        let settle = lock(&self.dispatch().settled).get(id).cloned();
        let turn = match &settle {
            Some(settle) => Some(settle.finishing.lock().await),
            None => None,
        };
        let result = match status {
            Some(JobStatus::Downloading) => {
                // The head: the tasks' counts summed by the store, not
                // the job's tasks read.
                match self.recorder().store().head(id).await? {
                    Some(head)
                        if head.status == JobStatus::Downloading
                            && head.summary.queued + head.summary.running == 0 =>
                    {
                        self.complete(head).await
                    }
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        };
        drop(turn);
        // The job is over: its Transfer is no longer needed here, and a
        // phase waiting for it goes on.
        lock(&self.dispatch().transfers).remove(id);
        if let Some(settle) = settle {
            settle.notify.notify_waiters();
        }
        result
    }
}

/// What a read of a job's window found.
enum ReadWindow {
    /// Unfinished tasks, now in the queue (and read ahead).
    Enqueued,
    /// None left to run here, or the job is not downloading: its status
    /// (`None`: the job is missing).
    Over(Option<JobStatus>),
}

impl JobService {
    /// The embedded default: reads job `id`'s window and the tasks past
    /// it whole (see [`Ahead`]), keeps them, and enqueues the window.
    async fn read_ahead(&self, id: &JobId, window: usize) -> Result<ReadWindow, JobStoreError> {
        let dispatch = self.dispatch();
        let limit = window.saturating_add(window.saturating_mul(AHEAD_PER_SLOT));
        let Some(batch) = self.recorder().store().open_task_batch(id, limit).await? else {
            return Ok(ReadWindow::Over(None));
        };
        if batch.status != JobStatus::Downloading || batch.tasks.is_empty() {
            return Ok(ReadWindow::Over(Some(batch.status)));
        }
        let open: Vec<usize> = batch.tasks.iter().map(|t| t.index).collect();
        {
            // Kept before they are enqueued: a delivery may start at once.
            let mut ahead = lock(&dispatch.ahead);
            let entry = ahead.entry(id.clone()).or_default();
            if entry.stopped {
                return Ok(ReadWindow::Enqueued);
            }
            entry.job = Some(Arc::new(batch.job));
            for task in batch.tasks {
                if !entry.ended(task.index) {
                    entry.tasks.insert(task.index, task);
                }
            }
        }
        let went = self.enqueue_window(id, &open).await;
        let later = open.get(went..).unwrap_or_default().to_vec();
        if let Some(entry) = lock(&dispatch.ahead).get_mut(id)
            && !entry.stopped
        {
            entry.next = later;
        }
        Ok(ReadWindow::Enqueued)
    }
}

impl JobService {
    /// Cluster mode, at shutdown: stops this node's transfers keeping their
    /// staged bytes, and puts their tasks back in the queue, so that other
    /// nodes resume them from their checkpoints at once (not after the
    /// lease timeout). Returns how many were handed over.
    pub async fn hand_over(&self) -> usize {
        let dispatch = self.dispatch();
        if dispatch.node.is_none() {
            return 0;
        }
        let tasks = dispatch.suspend_all();
        if tasks.is_empty() {
            return 0;
        }
        let waited = tokio::time::Instant::now();
        while !dispatch.idle() && waited.elapsed() < HAND_OVER_WAIT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match dispatch.queue.release(&tasks).await {
            Ok(()) => {
                info!(tasks = tasks.len(), node = ?dispatch.node, "tasks handed over to the other nodes")
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
        if let Err(e) = self.run_delivered(task.clone()).await {
            warn!(job = %task.job, index = task.index, error = %e, "task run failed; the reconciler enqueues it again");
        }
    }
}
