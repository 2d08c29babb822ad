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
    Clock, JobEvent, JobEventKind, JobEventsPort, JobHead, JobRecord, JobStoreError, JobStorePort,
    JobUpdate, JobWrite,
};
use ferry_domain::{FileTask, JobId, JobStatus};

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
    done: oneshot::Sender<Outcome>,
}

/// What became of one caller's writes.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Committed,
    /// A fenced or conditional write found its precondition gone
    /// ([`JobStoreError::is_stale`]): nothing of the group was written,
    /// and its events were not published.
    Stale,
    /// The store failed (its message).
    Failed(String),
}

/// Writes handed over: the writer's answer to come, or already given.
enum Queued {
    Waiting(oneshot::Receiver<Outcome>),
    Done(Outcome),
}

impl Queued {
    async fn outcome(self) -> Outcome {
        match self {
            Queued::Waiting(answer) => answer
                .await
                .unwrap_or_else(|_| Outcome::Failed("the group-commit writer stopped".into())),
            Queued::Done(outcome) => outcome,
        }
    }
}

/// Writes queued without waiting: [`Committing::committed`] waits.
pub(super) struct Committing(Queued);

impl Committing {
    /// Waits for the commit: whether the writes are in.
    pub(super) async fn committed(self) -> bool {
        self.0.outcome().await == Outcome::Committed
    }
}

/// A job as a use case holds it, whole ([`JobRecord`]) or without its
/// tasks ([`JobHead`]): stamped and saved the same way.
pub(super) trait JobRow {
    fn stamp(&mut self, now_ms: i64);
    fn update(&self) -> JobUpdate;
}

impl JobRow for JobRecord {
    fn stamp(&mut self, now_ms: i64) {
        self.updated_at_ms = now_ms;
    }
    fn update(&self) -> JobUpdate {
        JobRecord::update(self)
    }
}

impl JobRow for JobHead {
    fn stamp(&mut self, now_ms: i64) {
        self.updated_at_ms = now_ms;
    }
    fn update(&self) -> JobUpdate {
        JobHead::update(self)
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
    /// then publishes their events in order. Returns what became of each
    /// group. A stale group's events are not published (a stale node's,
    /// or a job's closing event another worker already wrote), nor are
    /// those of a failed group that writes its job's row (an event about
    /// a status the store does not hold); a failed group's other events
    /// are (their tasks' next saves, or the job's completion, write them
    /// again).
    async fn commit(&self, groups: Vec<Vec<JobWrite>>) -> Vec<Outcome> {
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        let guarded: Vec<bool> = groups
            .iter()
            .map(|g| g.iter().any(|w| matches!(w, JobWrite::Job { .. })))
            .collect();
        let all: Vec<JobWrite> = groups.into_iter().flatten().collect();
        let failed = |e: &JobStoreError| {
            if e.is_stale() {
                Outcome::Stale
            } else {
                Outcome::Failed(e.to_string())
            }
        };
        // Per group: its sequence numbers, or what stopped it.
        let results: Vec<Result<Vec<Option<u64>>, Outcome>> =
            match self.store.write_batch(&all).await {
                Ok(mut seqs) => sizes
                    .iter()
                    .map(|&size| Ok(seqs.drain(..size.min(seqs.len())).collect()))
                    .collect(),
                Err(error) if sizes.len() == 1 => vec![Err(failed(&error))],
                Err(_) => {
                    let mut results = Vec::with_capacity(sizes.len());
                    let mut rest = all.as_slice();
                    for &size in &sizes {
                        let (group, next) = rest.split_at(size);
                        rest = next;
                        results.push(self.store.write_batch(group).await.map_err(|e| failed(&e)));
                    }
                    results
                }
            };
        let mut writes = all.into_iter();
        let mut outcomes = Vec::with_capacity(sizes.len());
        for ((size, guarded), result) in sizes.into_iter().zip(guarded).zip(results) {
            let group: Vec<JobWrite> = writes.by_ref().take(size).collect();
            let (seqs, outcome) = match result {
                Ok(seqs) => (seqs, Outcome::Committed),
                Err(outcome) => (Vec::new(), outcome),
            };
            let publish = match &outcome {
                Outcome::Committed => true,
                Outcome::Stale => false,
                Outcome::Failed(_) => !guarded,
            };
            for (i, write) in group.into_iter().enumerate() {
                match write {
                    JobWrite::Task { job, task, .. } => {
                        if let Outcome::Failed(error) = &outcome {
                            warn!(job = %job, index = task.index, %error, "could not save a task");
                        }
                    }
                    JobWrite::Job { job, .. } => {
                        if let Outcome::Failed(error) = &outcome {
                            warn!(job = %job.id, %error, "could not save a job");
                        }
                    }
                    JobWrite::Event(mut event) => {
                        if let Some(Some(seq)) = seqs.get(i) {
                            event.seq = *seq;
                        } else if let Outcome::Failed(error) = &outcome {
                            warn!(job = %event.job_id, %error, "could not store an event");
                        }
                        if !publish {
                            continue;
                        }
                        // No receiver is fine: nobody is watching.
                        let _ = self.live.send(event.clone());
                        self.events.publish(&event).await;
                    }
                }
            }
            outcomes.push(outcome);
        }
        outcomes
    }
}

/// The writer: every write queued while a commit was in flight goes into
/// the next one.
async fn group_commits(outlet: Outlet, mut queue: mpsc::Receiver<Pending>) {
    let mut taken = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut taken, MAX_GROUP).await > 0 {
        let (groups, replies): (Vec<_>, Vec<_>) =
            taken.drain(..).map(|p| (p.writes, p.done)).unzip();
        let outcomes = outlet.commit(groups).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that stopped waiting is fine: its writes are in.
            let _ = reply.send(outcome);
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
                .pop()
                .unwrap_or_else(|| Outcome::Failed("nothing was written".into())),
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

    /// Stamps the job's `updated_at_ms` and saves it (not its tasks).
    pub(super) async fn save_job(&self, job: &mut impl JobRow) -> Result<(), JobStoreError> {
        job.stamp(self.now_ms());
        self.store.save_job(&job.update()).await
    }

    /// Saves all the job's tasks, then stamps and saves the job with an
    /// event about it (one commit): tasks first, so a stored job's status
    /// never runs ahead of its tasks (a crash between the two repeats the
    /// step instead of, say, finding a downloading job without its
    /// manifest's tasks).
    pub(super) async fn save_job_and_tasks_and_emit(
        &self,
        record: &mut JobRecord,
        kind: JobEventKind,
    ) -> Result<(), JobStoreError> {
        self.store
            .replace_tasks(&record.job.id, record.job.tasks())
            .await?;
        self.save_job_and_emit(record, None, kind).await.map(|_| ())
    }

    /// Stamps the job's `updated_at_ms` and saves it (not its tasks) and
    /// an event about it in one commit, the event published after it.
    /// With `from`, only if the stored status is still `from`: `Ok(false)`
    /// if another worker moved it first (nothing written, nothing
    /// published). So a job's stored status never runs ahead of the event
    /// that announces it.
    pub(super) async fn save_job_and_emit(
        &self,
        job: &mut impl JobRow,
        from: Option<JobStatus>,
        kind: JobEventKind,
    ) -> Result<bool, JobStoreError> {
        job.stamp(self.now_ms());
        let update = job.update();
        let event = self.event_write(&update.id, kind);
        let write = JobWrite::Job {
            job: Box::new(update),
            from,
        };
        match self.queue(vec![write, event]).await.outcome().await {
            Outcome::Committed => Ok(true),
            Outcome::Stale => Ok(false),
            Outcome::Failed(error) => Err(JobStoreError::Unavailable(error)),
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ferry_domain::ports::events::MockJobEventsPort;
    use ferry_domain::ports::job_store::MockJobStorePort;
    use ferry_domain::{Destination, Job, JobOptions};

    use super::*;
    use crate::checkpointing::SystemClock;

    fn record(id: &str) -> JobRecord {
        let mut job = Job::new(JobId::parse(id).unwrap(), Vec::new());
        job.start_downloading().unwrap();
        JobRecord {
            job,
            destination: Destination::Directory {
                prefix: String::new(),
            },
            options: JobOptions::default(),
            task_token: None,
            owner: None,
            created_at_ms: 1,
            updated_at_ms: 1,
            callback: None,
            export: None,
            last_event_seq: 0,
        }
    }

    fn ended(id: &str) -> JobRecord {
        let mut record = record(id);
        record.job.cancel().unwrap();
        record
    }

    /// A recorder over `store` whose published events land in the vector.
    fn recorder(store: MockJobStorePort) -> (Recorder, Arc<Mutex<Vec<JobEvent>>>) {
        let published = Arc::new(Mutex::new(Vec::new()));
        let mut events = MockJobEventsPort::new();
        let p = published.clone();
        events
            .expect_publish()
            .returning(move |e| p.lock().unwrap().push(e.clone()));
        let recorder = Recorder::new(Arc::new(store), Arc::new(events), Arc::new(SystemClock), 16);
        (recorder, published)
    }

    fn jobs_in(writes: &[JobWrite]) -> usize {
        writes
            .iter()
            .filter(|w| matches!(w, JobWrite::Job { .. }))
            .count()
    }

    #[tokio::test]
    async fn a_job_write_that_lost_its_race_or_failed_publishes_nothing() {
        let mut store = MockJobStorePort::new();
        let calls = Arc::new(Mutex::new(0));
        let c = calls.clone();
        store.expect_write_batch().returning(move |writes| {
            *c.lock().unwrap() += 1;
            let job = match &writes[0] {
                JobWrite::Job { job, .. } => job.id.clone(),
                other => panic!("{other:?}"),
            };
            if job.as_str() == "lost" {
                Err(JobStoreError::StatusChanged {
                    job,
                    expected: JobStatus::Downloading,
                })
            } else {
                Err(JobStoreError::Unavailable("disk gone".into()))
            }
        });
        let (recorder, published) = recorder(store);
        let mut lost = ended("lost");
        let saved = recorder
            .save_job_and_emit(
                &mut lost,
                Some(JobStatus::Downloading),
                JobEventKind::JobCancelled,
            )
            .await;
        assert!(!saved.unwrap());
        assert!(lost.updated_at_ms > 1, "the record is stamped");
        let saved = recorder
            .save_job_and_emit(&mut ended("failed"), None, JobEventKind::JobCancelled)
            .await;
        assert!(matches!(
            saved,
            Err(JobStoreError::Unavailable(e)) if e.contains("disk gone")
        ));
        assert_eq!(*calls.lock().unwrap(), 2);
        assert!(published.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn in_one_group_commit_the_first_conditional_write_wins_and_only_its_event_is_published()
    {
        let mut store = MockJobStorePort::new();
        let batches = Arc::new(Mutex::new(Vec::new()));
        let b = batches.clone();
        store.expect_write_batch().returning(move |writes| {
            b.lock().unwrap().push(writes.len());
            // The store moves the job once: a batch with two conditional
            // writes of it fails whole; alone, the second finds it moved.
            let seen = b.lock().unwrap().len();
            match (jobs_in(writes), seen) {
                (2, _) => Err(JobStoreError::StatusChanged {
                    job: JobId::parse("race").unwrap(),
                    expected: JobStatus::Downloading,
                }),
                (1, 2) => Ok(vec![None, Some(7)]),
                _ => Err(JobStoreError::StatusChanged {
                    job: JobId::parse("race").unwrap(),
                    expected: JobStatus::Downloading,
                }),
            }
        });
        let (recorder, published) = recorder(store);
        let write = |record: JobRecord| {
            vec![
                JobWrite::Job {
                    job: Box::new(record.update()),
                    from: Some(JobStatus::Downloading),
                },
                recorder.event_write(&JobId::parse("race").unwrap(), JobEventKind::JobCancelled),
            ]
        };
        // Both queued before the writer runs: one group commit.
        let first = recorder.queue(write(ended("race"))).await;
        let second = recorder.queue(write(ended("race"))).await;
        assert_eq!(first.outcome().await, Outcome::Committed);
        assert_eq!(second.outcome().await, Outcome::Stale);
        assert_eq!(*batches.lock().unwrap(), vec![4, 2, 2]);
        let published = published.lock().unwrap();
        assert_eq!(published.len(), 1, "{published:?}");
        assert_eq!(published[0].seq, 7);
        assert_eq!(published[0].kind, JobEventKind::JobCancelled);
    }

    #[tokio::test]
    async fn a_failed_group_of_task_states_still_publishes_its_events() {
        let mut store = MockJobStorePort::new();
        store
            .expect_write_batch()
            .returning(|_| Err(JobStoreError::Unavailable("disk gone".into())));
        let (recorder, published) = recorder(store);
        let id = JobId::parse("tasks").unwrap();
        assert!(
            !recorder
                .write(vec![recorder.event_write(&id, JobEventKind::JobCancelled)])
                .await
        );
        assert_eq!(published.lock().unwrap().len(), 1);
    }
}
