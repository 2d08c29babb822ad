//! The embedded default's task queue: [`TaskQueuePort`] in this process,
//! for one node on its own store (SQLite, or PostgreSQL without
//! `--cluster`). The PostgreSQL engine (adapters' `PgTaskQueue`) is the
//! other adapter of the same port.
//!
//! It lives here, beside the job use cases, rather than in `adapters`: it
//! does no I/O (a set of queued tasks, and a tokio task per delivery), and
//! every `JobService` needs one from its constructor on, the tests' and
//! the bin's alike.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use async_trait::async_trait;

use ferry_domain::JobId;
use ferry_domain::ports::{Leadership, TaskHandlerPort, TaskQueueError, TaskQueuePort, TaskRef};

use super::runner::lock;

/// Delivers each enqueued task at once to the handler, on a tokio task of
/// its own (the job's window bounds how many per job, the runner's global
/// permits how many transfer at once); a task is in the queue (and
/// enqueueing it again does nothing) until its delivery returns, or says
/// it is [`done`](LocalTaskQueue::done). It counts each job's tasks in it,
/// so that [`top_up`](LocalTaskQueue::top_up) can keep a job's window
/// exactly full.
#[derive(Default)]
pub struct LocalTaskQueue {
    handler: OnceLock<Weak<dyn TaskHandlerPort>>,
    queued: Arc<Mutex<InQueue>>,
    phases: Arc<Mutex<HashSet<JobId>>>,
    leading: Arc<AtomicBool>,
}

impl std::fmt::Debug for LocalTaskQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTaskQueue")
            .field("queued", &lock(&self.queued).tasks.len())
            .finish_non_exhaustive()
    }
}

impl LocalTaskQueue {
    /// Who runs the tasks (the job service; held weakly, as it holds the
    /// queue). The first call wins.
    pub fn attach(&self, handler: Weak<dyn TaskHandlerPort>) {
        let _ = self.handler.set(handler);
    }

    /// Tasks enqueued whose delivery has not returned yet.
    pub fn queued(&self) -> usize {
        lock(&self.queued).tasks.len()
    }

    /// Enqueues `candidates` (tasks of `job`, in order), skipping any in
    /// the queue, while fewer than `window` of the job's tasks are in it.
    /// Returns how many candidates it went through (enqueued or skipped):
    /// the rest are for a later top-up. Counting and enqueueing under one
    /// lock, callers finishing at once never fill a window past `window`.
    pub fn top_up(
        &self,
        job: &JobId,
        candidates: &[usize],
        window: usize,
    ) -> Result<usize, TaskQueueError> {
        let handler = self.handler()?;
        let mut added = Vec::new();
        let went = {
            let mut queued = lock(&self.queued);
            let mut count = queued.per_job.get(job).copied().unwrap_or(0);
            let mut went = 0;
            for &index in candidates {
                if count >= window {
                    break;
                }
                went += 1;
                let task = TaskRef {
                    job: job.clone(),
                    index,
                };
                if let Some(generation) = queued.insert(&task) {
                    count += 1;
                    added.push((task, generation));
                }
            }
            went
        };
        for (task, generation) in added {
            self.deliver(&handler, task, generation);
        }
        Ok(went)
    }

    /// A delivery's task is over (its run ended; what follows is the
    /// window's top-up): out of the queue now, its slot free, before its
    /// delivery returns.
    pub fn done(&self, task: &TaskRef) {
        lock(&self.queued).remove(task, None);
    }

    fn handler(&self) -> Result<Arc<dyn TaskHandlerPort>, TaskQueueError> {
        self.handler.get().and_then(Weak::upgrade).ok_or_else(|| {
            TaskQueueError::Unavailable(
                "no task handler is attached to the in-process queue".into(),
            )
        })
    }

    /// Runs `task`'s delivery on a tokio task of its own; out of the queue
    /// when it returns (or is dropped: the runtime shutting down), unless
    /// it left earlier.
    fn deliver(&self, handler: &Arc<dyn TaskHandlerPort>, task: TaskRef, generation: u64) {
        let held = HeldTask {
            queued: self.queued.clone(),
            task: task.clone(),
            generation,
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _held = held;
            handler.run_task(task).await;
        });
    }
}

/// The tasks in the queue, each with the generation of its entry (so that
/// a delivery that left early does not remove a later entry of its task),
/// and how many per job.
#[derive(Default)]
struct InQueue {
    tasks: HashMap<TaskRef, u64>,
    per_job: HashMap<JobId, usize>,
    next: u64,
}

impl InQueue {
    /// The new entry's generation, or `None` if the task is in already.
    fn insert(&mut self, task: &TaskRef) -> Option<u64> {
        if self.tasks.contains_key(task) {
            return None;
        }
        self.next += 1;
        self.tasks.insert(task.clone(), self.next);
        *self.per_job.entry(task.job.clone()).or_default() += 1;
        Some(self.next)
    }

    /// Removes `task`'s entry (only that generation's, if given).
    fn remove(&mut self, task: &TaskRef, generation: Option<u64>) {
        match self.tasks.get(task) {
            Some(g) if generation.is_none_or(|want| want == *g) => {}
            _ => return,
        }
        self.tasks.remove(task);
        if let Some(count) = self.per_job.get_mut(&task.job) {
            *count -= 1;
            if *count == 0 {
                self.per_job.remove(&task.job);
            }
        }
    }
}

/// A delivery's entry in the queue, removed when the delivery ends.
struct HeldTask {
    queued: Arc<Mutex<InQueue>>,
    task: TaskRef,
    generation: u64,
}

impl Drop for HeldTask {
    fn drop(&mut self) {
        lock(&self.queued).remove(&self.task, Some(self.generation));
    }
}

/// Removes an entry from a shared set when dropped.
struct Held<T: std::hash::Hash + Eq + Send + 'static> {
    set: Arc<Mutex<HashSet<T>>>,
    item: Option<T>,
}

impl<T: std::hash::Hash + Eq + Send + 'static> Drop for Held<T> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            lock(&self.set).remove(&item);
        }
    }
}

impl<T: std::hash::Hash + Eq + Send + 'static> Leadership for Held<T> {}

struct Lead(Arc<AtomicBool>);

impl Drop for Lead {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Leadership for Lead {}

#[async_trait]
impl TaskQueuePort for LocalTaskQueue {
    async fn enqueue(&self, tasks: &[TaskRef]) -> Result<(), TaskQueueError> {
        let handler = self.handler()?;
        for task in tasks {
            let Some(generation) = lock(&self.queued).insert(task) else {
                continue;
            };
            self.deliver(&handler, task.clone(), generation);
        }
        Ok(())
    }

    /// Nothing to hand over to: this process's next start resumes them.
    async fn release(&self, _tasks: &[TaskRef]) -> Result<(), TaskQueueError> {
        Ok(())
    }

    async fn hold_job_phase(
        &self,
        job: &JobId,
    ) -> Result<Option<Box<dyn Leadership>>, TaskQueueError> {
        if !lock(&self.phases).insert(job.clone()) {
            return Ok(None);
        }
        Ok(Some(Box::new(Held {
            set: self.phases.clone(),
            item: Some(job.clone()),
        })))
    }

    async fn lead(&self) -> Result<Option<Box<dyn Leadership>>, TaskQueueError> {
        if self.leading.swap(true, Ordering::AcqRel) {
            return Ok(None);
        }
        Ok(Some(Box::new(Lead(self.leading.clone()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Counts deliveries, each held until `gate` opens.
    struct Counting {
        runs: Mutex<Vec<TaskRef>>,
        gate: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl TaskHandlerPort for Counting {
        async fn run_task(&self, task: TaskRef) {
            lock(&self.runs).push(task);
            let _ = self.gate.acquire().await;
        }
    }

    fn task(job: &str, index: usize) -> TaskRef {
        TaskRef {
            job: JobId::parse(job).unwrap(),
            index,
        }
    }

    #[tokio::test]
    async fn delivers_each_task_once_while_it_is_in_the_queue() {
        let queue = LocalTaskQueue::default();
        let unattached = queue.enqueue(&[task("j", 0)]).await;
        assert!(matches!(unattached, Err(TaskQueueError::Unavailable(_))));
        let handler = Arc::new(Counting {
            runs: Mutex::new(Vec::new()),
            gate: tokio::sync::Semaphore::new(0),
        });
        let weak: Weak<dyn TaskHandlerPort> = Arc::downgrade(&(handler.clone() as Arc<_>));
        queue.attach(weak);
        queue.enqueue(&[task("j", 0), task("j", 1)]).await.unwrap();
        queue.enqueue(&[task("j", 0), task("j", 1)]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while lock(&handler.runs).len() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(queue.queued(), 2);
        // Still running: not delivered again.
        queue.enqueue(&[task("j", 0)]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(lock(&handler.runs).len(), 2);
        // Once its delivery returned, a task can be enqueued again.
        handler.gate.add_permits(2);
        tokio::time::timeout(Duration::from_secs(5), async {
            while queue.queued() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        queue.enqueue(&[task("j", 0)]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while lock(&handler.runs).len() < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(lock(&handler.runs)[2], task("j", 0));
    }

    #[tokio::test]
    async fn a_top_up_fills_a_jobs_window_and_no_further_and_done_frees_a_slot() {
        let queue = LocalTaskQueue::default();
        let job = JobId::parse("j").unwrap();
        assert!(matches!(
            queue.top_up(&job, &[0], 2),
            Err(TaskQueueError::Unavailable(_))
        ));
        let handler = Arc::new(Counting {
            runs: Mutex::new(Vec::new()),
            gate: tokio::sync::Semaphore::new(0),
        });
        let weak: Weak<dyn TaskHandlerPort> = Arc::downgrade(&(handler.clone() as Arc<_>));
        queue.attach(weak);
        // Another job's tasks do not count against this one's window.
        queue.enqueue(&[task("k", 0)]).await.unwrap();
        // Window 2: tasks 0 and 1 go in, 2 and 3 are left for later.
        assert_eq!(queue.top_up(&job, &[0, 1, 2, 3], 2).unwrap(), 2);
        assert_eq!(queue.queued(), 3);
        // Full: nothing goes in.
        assert_eq!(queue.top_up(&job, &[2, 3], 2).unwrap(), 0);
        // A slot freed: a task already in the queue is passed over, the
        // next one goes in.
        queue.done(&task("j", 0));
        assert_eq!(queue.top_up(&job, &[1, 2, 3], 2).unwrap(), 2);
        assert_eq!(queue.queued(), 3);
        tokio::time::timeout(Duration::from_secs(5), async {
            while lock(&handler.runs).len() < 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        let mut runs = lock(&handler.runs).clone();
        runs.sort_by_key(|t| (t.job.to_string(), t.index));
        assert_eq!(
            runs,
            vec![task("j", 0), task("j", 1), task("j", 2), task("k", 0)]
        );
        // A task done early can be enqueued again while its first
        // delivery still runs (its slot was given back): it runs once more.
        queue.done(&task("j", 1));
        assert_eq!(queue.top_up(&job, &[0], 2).unwrap(), 1);
        assert_eq!(queue.queued(), 3);
        handler.gate.add_permits(1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        handler.gate.add_permits(10);
        tokio::time::timeout(Duration::from_secs(5), async {
            while queue.queued() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(lock(&handler.runs).len(), 5, "task 0 ran again once");
    }

    #[tokio::test]
    async fn one_phase_per_job_and_one_leader_until_dropped() {
        let queue = LocalTaskQueue::default();
        let job = JobId::parse("j").unwrap();
        let phase = queue.hold_job_phase(&job).await.unwrap();
        assert!(phase.is_some());
        assert!(queue.hold_job_phase(&job).await.unwrap().is_none());
        let other = JobId::parse("k").unwrap();
        assert!(queue.hold_job_phase(&other).await.unwrap().is_some());
        drop(phase);
        assert!(queue.hold_job_phase(&job).await.unwrap().is_some());

        let lead = queue.lead().await.unwrap();
        assert!(lead.is_some());
        assert!(queue.lead().await.unwrap().is_none());
        drop(lead);
        assert!(queue.lead().await.unwrap().is_some());
    }
}
