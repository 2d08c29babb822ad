//! `JobEventsPort` adapters: an in-process broadcast (for embedders and
//! tests that observe a service from outside; `ferry serve`'s live streams
//! read `JobService::watch`), structured logs, and a fan-out to several
//! sinks.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tracing::info;

use ferry_domain::ports::{JobEvent, JobEventsPort};

/// Publishes to in-process subscribers. Slow subscribers lag (and are told
/// so by the channel); stored events let them catch up.
#[derive(Debug, Clone)]
pub struct BroadcastEvents {
    tx: broadcast::Sender<JobEvent>,
}

impl BroadcastEvents {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.tx.subscribe()
    }
}

#[async_trait]
impl JobEventsPort for BroadcastEvents {
    async fn publish(&self, event: &JobEvent) {
        // No subscriber is not an error.
        let _ = self.tx.send(event.clone());
    }
}

/// Logs lifecycle events at info (progress at debug).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogEvents;

#[async_trait]
impl JobEventsPort for LogEvents {
    async fn publish(&self, event: &JobEvent) {
        if event.kind.is_lifecycle() {
            info!(job = %event.job_id, seq = event.seq, event = event.kind.name(), "job event");
        } else {
            tracing::debug!(job = %event.job_id, seq = event.seq, event = event.kind.name(), "job event");
        }
    }
}

/// Sends every event to each sink in turn.
pub struct FanoutEvents(pub Vec<Arc<dyn JobEventsPort>>);

impl std::fmt::Debug for FanoutEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FanoutEvents({} sinks)", self.0.len())
    }
}

#[async_trait]
impl JobEventsPort for FanoutEvents {
    async fn publish(&self, event: &JobEvent) {
        for sink in &self.0 {
            sink.publish(event).await;
        }
    }
}
