//! The embedded default's task queue: [`TaskQueuePort`] in this process,
//! for one node on its own store (SQLite, or PostgreSQL without
//! `--cluster`). The PostgreSQL engine (adapters' `PgTaskQueue`) is the
//! other adapter of the same port.
//!
//! It lives here, beside the job use cases, rather than in `adapters`: it
//! does no I/O (a set of queued tasks, and a tokio task per delivery), and
//! every `JobService` needs one from its constructor on, the tests' and
//! the bin's alike.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use async_trait::async_trait;

use ferry_domain::JobId;
use ferry_domain::ports::{Leadership, TaskHandlerPort, TaskQueueError, TaskQueuePort, TaskRef};

use super::runner::lock;

/// Delivers each enqueued task at once to the handler, on a tokio task of
/// its own (the job's window bounds how many per job, the runner's global
/// permits how many transfer at once); a task is in the queue (and
/// enqueueing it again does nothing) until its delivery returns.
#[derive(Default)]
pub struct LocalTaskQueue {
    handler: OnceLock<Weak<dyn TaskHandlerPort>>,
    queued: Arc<Mutex<HashSet<TaskRef>>>,
    phases: Arc<Mutex<HashSet<JobId>>>,
    leading: Arc<AtomicBool>,
}

impl std::fmt::Debug for LocalTaskQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTaskQueue")
            .field("queued", &lock(&self.queued).len())
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
        lock(&self.queued).len()
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
        let Some(handler) = self.handler.get().and_then(Weak::upgrade) else {
            return Err(TaskQueueError::Unavailable(
                "no task handler is attached to the in-process queue".into(),
            ));
        };
        for task in tasks {
            if !lock(&self.queued).insert(task.clone()) {
                continue;
            }
            let held = Held {
                set: self.queued.clone(),
                item: Some(task.clone()),
            };
            let handler = handler.clone();
            let task = task.clone();
            tokio::spawn(async move {
                // Out of the queue when the delivery returns, or if it
                // is dropped (the runtime shutting down).
                let _held = held;
                handler.run_task(task).await;
            });
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
