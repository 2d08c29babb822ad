//! The one place a job's changes are stamped, stored and announced: every
//! `updated_at_ms = now; save; emit` of the job use cases goes through
//! [`Recorder`], with the injected [`Clock`].

use std::sync::Arc;

use tokio::sync::broadcast;
use tracing::warn;

use ferry_domain::ports::{
    Clock, JobEvent, JobEventKind, JobEventsPort, JobRecord, JobStoreError, JobStorePort,
};
use ferry_domain::{FileTask, JobId};

/// Stores and publishes a job's state and events.
pub(super) struct Recorder {
    store: Arc<dyn JobStorePort>,
    events: Arc<dyn JobEventsPort>,
    clock: Arc<dyn Clock>,
    /// Every stored event, in sequence order, for live watchers.
    live: broadcast::Sender<JobEvent>,
    /// Held across "store the event" and "publish it", so subscribers see
    /// events in sequence order.
    emit_order: tokio::sync::Mutex<()>,
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
            emit_order: tokio::sync::Mutex::new(()),
        }
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

    /// Saves one task's state; a failure is logged (the task's next save
    /// or the job's completion writes it again).
    pub(super) async fn save_task(&self, id: &JobId, task: &FileTask) {
        if let Err(e) = self.store.save_task(id, task).await {
            warn!(job = %id, index = task.index, error = %e, "could not save a task");
        }
    }

    /// Stores an event (assigning its sequence number) and publishes it.
    pub(super) async fn emit(&self, id: &JobId, kind: JobEventKind) {
        let _order = self.emit_order.lock().await;
        let mut event = JobEvent {
            job_id: id.clone(),
            seq: 0,
            at_ms: self.now_ms(),
            kind,
        };
        match self.store.append_event(&event).await {
            Ok(seq) => event.seq = seq,
            Err(e) => warn!(job = %id, error = %e, "could not store an event"),
        }
        // No receiver is fine: nobody is watching.
        let _ = self.live.send(event.clone());
        self.events.publish(&event).await;
    }
}
