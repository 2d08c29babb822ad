//! The task runner: one file task of a job through its Transfer, within
//! the global limit and the backpressure gate, each attempt recorded on its
//! task and announced. Which tasks run when is the task queue's (see
//! `dispatch`).

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::channel::mpsc;
use futures::{StreamExt, future};
use tracing::warn;

use ferry_domain::ports::{
    AttemptObserver, AttemptRefused, AttemptSlot, JobEventKind, ProcessFileCommand,
    ProcessFileError, ProcessFileResult, ProgressPort, StartGate, SuspendOnDrop, TransferError,
    TransferPort,
};
use ferry_domain::{
    ByteSize, ErrorClass, ErrorCode, FileTask, IfExists, JobId, TaskFailure, TaskStatus, TransferId,
};

use super::recorder::{Committing, Recorder};
use crate::backpressure::Backpressure;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A cluster node's hold on a task: the epoch its writes are fenced with,
/// and the switch that makes a dropped transfer keep its staged bytes
/// (handed over, not given up).
pub(super) struct Lease {
    pub(super) epoch: u64,
    pub(super) suspend: SuspendOnDrop,
}

/// The job a file task belongs to, as its run needs it.
pub(super) struct TaskContext {
    pub(super) job: JobId,
    /// Whose share of the global slots the task runs in ("" for none).
    pub(super) owner: String,
    pub(super) if_exists: IfExists,
}

/// Runs a job's file tasks, one at a time per call (the task queue decides
/// which run when).
pub(super) struct Runner {
    /// File tasks running at once across all jobs, shared fairly between
    /// owners.
    pub(super) global: Arc<super::fair::FairShare>,
    /// The backpressure gate every attempt passes.
    pub(super) pressure: Option<Arc<Backpressure>>,
    /// A file's first progress event comes one interval after its bytes
    /// begin to move, then at most one per interval (zero: every count).
    pub(super) progress_interval: Duration,
    pub(super) max_file_size: ByteSize,
    /// Tasks get transfer ids (and so checkpoints).
    pub(super) checkpoints: bool,
    /// The longest one file may take, all attempts and waits included.
    pub(super) file_deadline: Option<Duration>,
}

impl Runner {
    /// One file task: its Transfer (which retries), with each attempt
    /// recorded on the task and announced by [`TaskAttempts`]. With a
    /// `lease` (cluster mode), the task's states are written only under
    /// its epoch, an attempt whose start cannot be written (the lease is
    /// lost) is refused, which ends the transfer, and the staged write
    /// keeps its bytes if dropped once the lease's `suspend` is set.
    pub(super) async fn run_task(
        &self,
        recorder: &Recorder,
        context: &TaskContext,
        shared: &Mutex<FileTask>,
        transfer: &dyn TransferPort,
        lease: Option<&Lease>,
    ) {
        let fence = lease.map(|l| l.epoch);
        let id = context.job.clone();
        let if_exists = context.if_exists;
        let task = lock(shared).clone();
        let index = task.index;
        // Only HTTP(S) sources have a per-host connection limit.
        let host = match task.spec.source.scheme() {
            ferry_domain::SourceScheme::Http | ferry_domain::SourceScheme::Https => {
                task.spec.source.origin()
            }
            _ => String::new(),
        };
        let (tx, mut rx) = mpsc::unbounded();
        let mut command = ProcessFileCommand::new(task.spec.source.clone(), task.spec.key.clone());
        command.expected = task.spec.expected.clone();
        command.expected_size = task.spec.expected_size;
        command.headers = task.spec.headers.clone();
        command.attributes = task.spec.attributes.clone();
        command.skip_existing = if_exists == IfExists::Skip;
        command.no_clobber = if_exists == IfExists::Refuse;
        command.max_size = self.max_file_size;
        command.transfer_id = self.checkpoints.then(|| TransferId::for_task(&id, index));
        // Never started (as stored): no checkpoint to look up.
        let start = (command.transfer_id.is_some()
            && task.attempts() == 0
            && task.status() == TaskStatus::Queued)
            .then(|| Arc::new(StartCommit::default()));
        command.fresh_start = start.clone().map(|s| s as Arc<dyn StartGate>);
        if let Some(lease) = lease {
            command.suspend_on_drop = lease.suspend.clone();
            command.lease_epoch = Some(lease.epoch);
        }
        let counts = Arc::new(Mutex::new(Counts::default()));
        command.progress = Arc::new(EventProgress {
            tx,
            immediate: self.progress_interval.is_zero(),
            counts: counts.clone(),
        });
        // Taken by each forwarded note and by each attempt's state change:
        // a note is announced only while the task runs, so no event of a
        // task follows its end (nor, once every task ended, the job's).
        let gate = tokio::sync::Mutex::new(());
        let forward = async {
            // A file's progress is announced one interval after its bytes
            // first moved (then at most once per interval), from a timer:
            // a small file that ends sooner has no progress event, a file
            // that stalls shows how far it got.
            let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
            loop {
                let note = match timer.as_mut() {
                    None => rx.next().await,
                    Some(sleep) => match future::select(rx.next(), sleep.as_mut()).await {
                        future::Either::Left((note, _)) => note,
                        future::Either::Right(((), _)) => {
                            timer = None;
                            let mut c = lock(&counts);
                            c.armed = false;
                            Some(Note::Progress(c.done, c.total))
                        }
                    },
                };
                let Some(note) = note else { break };
                let kind = match note {
                    Note::Due => {
                        timer = Some(Box::pin(tokio::time::sleep(self.progress_interval)));
                        continue;
                    }
                    Note::Progress(bytes_done, total) => JobEventKind::FileProgress {
                        index,
                        bytes_done,
                        total,
                    },
                    Note::Resumed(offset) => JobEventKind::FileResumed { index, offset },
                    Note::Restarted(reason) => JobEventKind::FileRestarted { index, reason },
                };
                let _turn = gate.lock().await;
                let running = {
                    let mut task = lock(shared);
                    match &kind {
                        JobEventKind::FileProgress { bytes_done, .. } => {
                            task.progress(*bytes_done).is_ok()
                        }
                        _ => task.status() == TaskStatus::Running,
                    }
                };
                if !running {
                    continue;
                }
                recorder.emit(&id, kind).await;
            }
        };
        let attempts = TaskAttempts {
            runner: self,
            recorder,
            shared,
            gate: &gate,
            id: &id,
            owner: &context.owner,
            host: &host,
            index,
            fence,
            start: start.as_deref(),
        };
        // The command (and its progress sender) is dropped when the
        // transfer ends (or its deadline drops it), which ends the
        // forwarder.
        let run = transfer.run(command, task.attempts(), &attempts);
        let bounded = async {
            match self.file_deadline {
                Some(limit) => tokio::time::timeout(limit, run).await.ok(),
                None => Some(run.await),
            }
        };
        let (outcome, ()) = futures::join!(bounded, forward);
        match outcome {
            // Recorded and announced attempt by attempt.
            Some(Ok(_) | Err(TransferError::Failed(_))) => {}
            Some(Err(TransferError::Refused(e))) => {
                warn!(job = %id, index, error = %e, "task not started")
            }
            None => self.expire(recorder, shared, &gate, &id, fence).await,
        }
    }

    /// The file ran out of `file_deadline`: its transfer was dropped (which
    /// aborts what it staged); it fails, whatever it was doing.
    async fn expire(
        &self,
        recorder: &Recorder,
        shared: &Mutex<FileTask>,
        gate: &tokio::sync::Mutex<()>,
        id: &JobId,
        fence: Option<u64>,
    ) {
        let limit = self.file_deadline.unwrap_or_default();
        let failure = TaskFailure {
            class: ErrorClass::Client,
            code: ErrorCode::SourceError,
            message: format!(
                "the file did not finish within the per-file deadline of {} s (--file-deadline)",
                limit.as_secs()
            ),
        };
        let _turn = gate.lock().await;
        let expired = {
            let mut t = lock(shared);
            t.expire(failure.clone()).map(|()| t.clone())
        };
        let Ok(task) = expired else { return };
        warn!(job = %id, index = task.index, error = %failure.message, "file failed");
        let kind = JobEventKind::FileFailed {
            index: task.index,
            code: failure.code,
            class: failure.class,
            message: failure.message,
            will_retry: false,
        };
        recorder.save_task_and_emit(id, &task, kind, fence).await;
    }
}

/// What a transfer tells its task's event forwarder.
enum Note {
    Progress(u64, Option<u64>),
    /// Bytes moved since the last progress event: time to arm its timer.
    Due,
    Resumed(u64),
    Restarted(String),
}

/// A file's byte count as its transfer last reported it.
#[derive(Default)]
struct Counts {
    done: u64,
    total: Option<u64>,
    /// A [`Note::Due`] was sent and its progress event not yet made.
    armed: bool,
}

/// Hands progress from the (sync) ProgressPort to the task's event
/// forwarder: the latest count is kept, and the forwarder is woken once
/// per progress event it is to make (every count, with a zero interval).
struct EventProgress {
    tx: mpsc::UnboundedSender<Note>,
    immediate: bool,
    counts: Arc<Mutex<Counts>>,
}

impl ProgressPort for EventProgress {
    fn started(&self, total: Option<u64>) {
        lock(&self.counts).total = total;
    }

    fn advanced(&self, done: u64) {
        let mut c = lock(&self.counts);
        c.done = done;
        if self.immediate {
            let _ = self.tx.unbounded_send(Note::Progress(done, c.total));
        } else if !c.armed {
            c.armed = true;
            let _ = self.tx.unbounded_send(Note::Due);
        }
    }

    fn finished(&self, _ok: bool) {}

    fn resumed(&self, offset: u64) {
        let _ = self.tx.unbounded_send(Note::Resumed(offset));
    }

    fn restarted(&self, reason: &str) {
        let _ = self.tx.unbounded_send(Note::Restarted(reason.to_owned()));
    }
}

/// A task's attempts as the job sees them: each takes a global permit and
/// an admission, starts the task (stored, `file_started`), and a failure
/// re-queues or fails it (stored, `file_failed`).
struct TaskAttempts<'a> {
    runner: &'a Runner,
    recorder: &'a Recorder,
    shared: &'a Mutex<FileTask>,
    /// The task's turn between its notes and its state changes.
    gate: &'a tokio::sync::Mutex<()>,
    id: &'a JobId,
    owner: &'a str,
    /// The source's origin (its host's connection limit).
    host: &'a str,
    index: usize,
    fence: Option<u64>,
    /// A task that never started: its first attempt's start, for the gate
    /// of its first checkpoint.
    start: Option<&'a StartCommit>,
}

/// A fresh task's start as the job store takes it: its transfer skips the
/// checkpoint lookup (the task never started, so it has none) and waits
/// for this before its first checkpoint (see
/// `ProcessFileCommand::fresh_start`), so that a crash can never leave a
/// checkpoint of a task whose start is not on record.
#[derive(Default)]
pub(super) struct StartCommit {
    /// The queued start, until someone waits for it.
    pending: Mutex<Option<Committing>>,
    /// Whether it was committed, once known.
    known: tokio::sync::OnceCell<bool>,
}

impl StartCommit {
    fn hold(&self, committing: Committing) {
        *lock(&self.pending) = Some(committing);
    }

    fn settle(&self, committed: bool) {
        let _ = self.known.set(committed);
    }
}

#[async_trait]
impl StartGate for StartCommit {
    async fn durable(&self) -> bool {
        *self
            .known
            .get_or_init(|| async {
                // No start held: the attempt never got one.
                let pending = lock(&self.pending).take();
                match pending {
                    Some(committing) => committing.committed().await,
                    None => false,
                }
            })
            .await
    }
}

#[async_trait]
impl AttemptObserver for TaskAttempts<'_> {
    async fn starting(&self, attempt: u32) -> Result<AttemptSlot, AttemptRefused> {
        let refused = |reason: String| AttemptRefused { attempt, reason };
        let permit = self.runner.global.acquire(self.owner, self.host).await;
        let admission = match &self.runner.pressure {
            Some(gate) => Some(gate.admit_for(self.owner).await),
            None => None,
        };
        let _turn = self.gate.lock().await;
        let started = {
            let mut t = lock(self.shared);
            t.start().map(|()| t.clone())
        };
        let task = started.map_err(|e| refused(e.to_string()))?;
        let kind = JobEventKind::FileStarted {
            index: self.index,
            attempt: task.attempts(),
        };
        match self.fence {
            // Without a lease the transfer goes ahead whether or not its
            // start is stored yet (a failed save is logged and the next one
            // writes the task again): it starts while the start commits,
            // and everything the task writes later is committed after it.
            // A fresh start's first checkpoint waits for this commit.
            None => {
                let committing = self
                    .recorder
                    .queue_task_and_emit(self.id, &task, kind)
                    .await;
                if let Some(start) = self.start.filter(|_| attempt == 1) {
                    start.hold(committing);
                }
            }
            // Under a lease, a start that cannot be written is refused.
            Some(_) => {
                let saved = self
                    .recorder
                    .save_task_and_emit(self.id, &task, kind, self.fence)
                    .await;
                if let Some(start) = self.start.filter(|_| attempt == 1) {
                    start.settle(saved);
                }
                if !saved {
                    return Err(refused(
                        "this node no longer holds the task's lease".to_owned(),
                    ));
                }
            }
        }
        Ok(Box::new((permit, admission)))
    }

    async fn succeeded(&self, _attempt: u32, result: &ProcessFileResult) {
        let (id, index) = (self.id, self.index);
        let _turn = self.gate.lock().await;
        let done = {
            let mut t = lock(self.shared);
            if result.skipped {
                t.skip(result.bytes, result.sha256.clone())
            } else {
                t.succeed(result.bytes, result.sha256.clone(), result.md5.clone())
            }
            .map(|()| t.clone())
        };
        let kind = if result.skipped {
            JobEventKind::FileSkipped {
                index,
                bytes: result.bytes,
                sha256: result.sha256.clone(),
            }
        } else {
            JobEventKind::FileSucceeded {
                index,
                bytes: result.bytes,
                sha256: result.sha256.clone(),
                md5: result.md5.clone(),
            }
        };
        match done {
            Ok(t) => {
                self.recorder
                    .save_task_and_emit(id, &t, kind, self.fence)
                    .await;
            }
            Err(_) => self.recorder.emit(id, kind).await,
        }
    }

    async fn failed(&self, _attempt: u32, error: &ProcessFileError, will_retry: bool) {
        let (id, index) = (self.id, self.index);
        let failure = TaskFailure {
            class: error.class(),
            code: error.code(),
            message: error.to_string(),
        };
        let _turn = self.gate.lock().await;
        let updated = {
            let mut t = lock(self.shared);
            if will_retry {
                t.requeue()
            } else {
                t.fail(failure.clone())
            }
            .map(|()| t.clone())
        };
        warn!(job = %id, index, code = %failure.code, retry = will_retry, error = %failure.message, "file failed");
        let kind = JobEventKind::FileFailed {
            index,
            code: failure.code,
            class: failure.class,
            message: failure.message,
            will_retry,
        };
        match updated {
            Ok(t) => {
                self.recorder
                    .save_task_and_emit(id, &t, kind, self.fence)
                    .await;
            }
            Err(_) => self.recorder.emit(id, kind).await,
        }
    }
}
