//! The one place a job's changes are stamped, stored and announced: every
//! `updated_at_ms = now; save; emit` of the job use cases goes through
//! [`Recorder`], with the injected [`Clock`].
//!
//! Task states and events are group-committed: one writer task takes every
//! write queued while the previous commit was in flight and commits them in
//! one transaction (one fsync for many files), then publishes the events in
//! sequence order and only then answers the callers. So an event is never
//! published, nor a caller told its write is done, before it is durable;
//! there is no added delay (a write that finds the writer idle is committed
//! at once) and no process-wide lock around a commit.

use std::sync::{Arc, OnceLock};

use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::warn;

use ferry_domain::ports::{
    Clock, JobEvent, JobEventKind, JobEventsPort, JobRecord, JobStoreError, JobStorePort, JobWrite,
};
use ferry_domain::{FileTask, JobId};

/// The most callers' writes committed together.
const MAX_GROUP: usize = 512;
/// Callers' writes waiting for the writer before `record` waits to queue.
const QUEUE: usize = 4096;

/// Stores and publishes a job's state and events.
pub(super) struct Recorder {
    store: Arc<dyn JobStorePort>,
    events: Arc<dyn JobEventsPort>,
    clock: Arc<dyn Clock>,
    /// Every stored event, in sequence order, for live watchers.
    live: broadcast::Sender<JobEvent>,
    /// The group-commit writer, started by the first write.
    writer: OnceLock<mpsc::Sender<Pending>>,
    /// Without a tokio runtime (no writer): held across "store the writes"
    /// and "publish the events", so subscribers see events in order.
    unbatched: tokio::sync::Mutex<()>,
}

/// One caller's writes, committed together, and whom to tell.
struct Pending {
    writes: Vec<JobWrite>,
    /// Told whether the writes were committed.
    done: oneshot::Sender<bool>,
}

/// Writes handed over: the writer's answer to come, or already committed
/// (true) or not.
enum Queued {
    Waiting(oneshot::Receiver<bool>),
    Done(bool),
}

/// Writes queued without waiting: [`Committing::committed`] waits.
pub(super) struct Committing(Queued);

impl Committing {
    /// Waits for the commit: whether the writes are in.
    pub(super) async fn committed(self) -> bool {
        match self.0 {
            Queued::Waiting(committed) => committed.await.unwrap_or(false),
            Queued::Done(ok) => ok,
        }
    }
}

/// What the writer needs: where to store and where to publish.
#[derive(Clone)]
struct Outlet {
    store: Arc<dyn JobStorePort>,
    events: Arc<dyn JobEventsPort>,
    live: broadcast::Sender<JobEvent>,
}

impl Outlet {
    /// Commits the groups' writes in one transaction (or, if that fails,
    /// each group alone, so that one bad write cannot sink the others),
    /// then publishes their events in order. Returns, per group, whether
    /// its writes were committed.
    async fn commit(&self, groups: Vec<Vec<JobWrite>>) -> Vec<bool> {
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        let all: Vec<JobWrite> = groups.into_iter().flatten().collect();
        // An error: its text, and whether it was a lost lease (whose
        // events are a stale node's and are not published).
        let failed =
            |e: &JobStoreError| (e.to_string(), matches!(e, JobStoreError::LeaseLost { .. }));
        let results: Vec<Result<Option<u64>, (String, bool)>> =
            match self.store.write_batch(&all).await {
                Ok(seqs) => seqs.into_iter().map(Ok).collect(),
                Err(error) if sizes.len() == 1 => all.iter().map(|_| Err(failed(&error))).collect(),
                Err(_) => {
                    let mut results = Vec::with_capacity(all.len());
                    let mut rest = all.as_slice();
                    for &size in &sizes {
                        let (group, next) = rest.split_at(size);
                        rest = next;
                        match self.store.write_batch(group).await {
                            Ok(seqs) => results.extend(seqs.into_iter().map(Ok)),
                            Err(e) => results.extend(group.iter().map(|_| Err(failed(&e)))),
                        }
                    }
                    results
                }
            };
        let mut oks = Vec::with_capacity(all.len());
        for (write, result) in all.into_iter().zip(results) {
            oks.push(result.is_ok());
            match write {
                JobWrite::Task { job, task, .. } => {
                    if let Err((error, _)) = result {
                        warn!(job = %job, index = task.index, %error, "could not save a task");
                    }
                }
                JobWrite::Event(mut event) => {
                    match result {
                        Ok(Some(seq)) => event.seq = seq,
                        Ok(None) => {}
                        Err((_, true)) => continue,
                        Err((error, false)) => {
                            warn!(job = %event.job_id, %error, "could not store an event");
                        }
                    }
                    // No receiver is fine: nobody is watching.
                    let _ = self.live.send(event.clone());
                    self.events.publish(&event).await;
                }
            }
        }
        let mut rest = oks.as_slice();
        sizes
            .into_iter()
            .map(|size| {
                let (group, next) = rest.split_at(size.min(rest.len()));
                rest = next;
                group.iter().all(|ok| *ok)
            })
            .collect()
    }
}

/// The writer: every write queued while a commit was in flight goes into
/// the next one.
async fn group_commits(outlet: Outlet, mut queue: mpsc::Receiver<Pending>) {
    let mut taken = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut taken, MAX_GROUP).await > 0 {
        let (groups, replies): (Vec<_>, Vec<_>) =
            taken.drain(..).map(|p| (p.writes, p.done)).unzip();
        let committed = outlet.commit(groups).await;
        for (reply, ok) in replies.into_iter().zip(committed) {
            // A caller that stopped waiting is fine: its writes are in.
            let _ = reply.send(ok);
        }
    }
}

impl Recorder {
    pub(super) fn new(
        store: Arc<dyn JobStorePort>,
        events: Arc<dyn JobEventsPort>,
        clock: Arc<dyn Clock>,
        live_capacity: usize,
    ) -> Self {
        let (live, _) = broadcast::channel(live_capacity.max(16));
        Self {
            store,
            events,
            clock,
            live,
            writer: OnceLock::new(),
            unbatched: tokio::sync::Mutex::new(()),
        }
    }

    fn outlet(&self) -> Outlet {
        Outlet {
            store: self.store.clone(),
            events: self.events.clone(),
            live: self.live.clone(),
        }
    }

    /// Commits `writes` together (grouped with other callers' writes) and
    /// returns once they are durable and their events published: true if
    /// they were committed.
    async fn write(&self, writes: Vec<JobWrite>) -> bool {
        Committing(self.queue(writes).await).committed().await
    }

    /// Hands `writes` to the group-commit writer and returns once they are
    /// queued, behind every write queued before them (their events are
    /// published after the commit, in that order, as ever). Without a
    /// writer, commits them here.
    async fn queue(&self, mut writes: Vec<JobWrite>) -> Queued {
        let writer = match self.writer.get() {
            Some(writer) => Some(writer),
            None => tokio::runtime::Handle::try_current().ok().map(|runtime| {
                self.writer.get_or_init(|| {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    runtime.spawn(group_commits(self.outlet(), rx));
                    tx
                })
            }),
        };
        if let Some(writer) = writer {
            let (done, committed) = oneshot::channel();
            match writer.send(Pending { writes, done }).await {
                // The writer answers after the commit.
                Ok(()) => return Queued::Waiting(committed),
                // The runtime that ran the writer is gone: write here.
                Err(mpsc::error::SendError(pending)) => writes = pending.writes,
            }
        }
        let _order = self.unbatched.lock().await;
        Queued::Done(
            self.outlet()
                .commit(vec![writes])
                .await
                .first()
                .copied()
                .unwrap_or(false),
        )
    }

    pub(super) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub(super) fn store(&self) -> &Arc<dyn JobStorePort> {
        &self.store
    }

    pub(super) fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    /// Live events from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.live.subscribe()
    }

    /// Stamps the record's `updated_at_ms` and saves the job (not its tasks).
    pub(super) async fn save_job(&self, record: &mut JobRecord) -> Result<(), JobStoreError> {
        record.updated_at_ms = self.now_ms();
        self.store.save_job(record).await
    }

    /// Saves all the job's tasks, then stamps and saves the job: tasks
    /// first, so a stored job's status never runs ahead of its tasks (a
    /// crash between the two repeats the step instead of, say, finding a
    /// downloading job without its manifest's tasks).
    pub(super) async fn save_job_and_tasks(
        &self,
        record: &mut JobRecord,
    ) -> Result<(), JobStoreError> {
        self.store
            .replace_tasks(&record.job.id, record.job.tasks())
            .await?;
        self.save_job(record).await
    }

    /// Stores an event (assigning its sequence number) and publishes it.
    pub(super) async fn emit(&self, id: &JobId, kind: JobEventKind) {
        self.write(vec![self.event_write(id, kind)]).await;
    }

    /// Hands an event another node committed to this node's live
    /// watchers (not to the event sinks: its own node published it).
    pub(super) fn relay(&self, event: JobEvent) {
        let _ = self.live.send(event);
    }

    /// Whether anyone on this node watches events live.
    pub(super) fn watched(&self) -> bool {
        self.live.receiver_count() > 0
    }

    /// Saves a task's state and stores and publishes an event about it, in
    /// one commit. A failure is logged (the task's next save or the job's
    /// completion writes it again; the event is published all the same).
    /// With a `fence` (cluster mode), written only under that lease epoch.
    /// Returns whether it was committed.
    pub(super) async fn save_task_and_emit(
        &self,
        id: &JobId,
        task: &FileTask,
        kind: JobEventKind,
        fence: Option<u64>,
    ) -> bool {
        let event = self.event_write(id, kind);
        self.write(vec![task_write(id, task, fence), event]).await
    }

    /// [`Self::save_task_and_emit`] without waiting for the commit (no
    /// fence). The task's later writes are queued behind it, so they are
    /// committed with it or after it, and its event is published before
    /// theirs. The returned handle tells when it is committed, for a
    /// caller that must wait before something else is made durable.
    pub(super) async fn queue_task_and_emit(
        &self,
        id: &JobId,
        task: &FileTask,
        kind: JobEventKind,
    ) -> Committing {
        let event = self.event_write(id, kind);
        Committing(self.queue(vec![task_write(id, task, None), event]).await)
    }

    fn event_write(&self, id: &JobId, kind: JobEventKind) -> JobWrite {
        JobWrite::Event(JobEvent {
            job_id: id.clone(),
            seq: 0,
            at_ms: self.now_ms(),
            kind,
        })
    }
}

fn task_write(id: &JobId, task: &FileTask, fence: Option<u64>) -> JobWrite {
    JobWrite::Task {
        job: id.clone(),
        task: Box::new(task.clone()),
        fence,
    }
}
