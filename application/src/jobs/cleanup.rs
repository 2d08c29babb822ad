//! Orphan cleanup for job tasks: checkpoints (and the uploads or temp files
//! they name) that no live task owns any more. Run at startup, periodically,
//! and at once for a cancelled job. Only what a ferry checkpoint names is
//! touched: other writers' uploads in the same bucket are never listed,
//! let alone aborted.

use std::time::Duration;

use tracing::{info, warn};

use ferry_domain::JobId;
use ferry_domain::TaskStatus;

use super::service::JobService;
use crate::checkpointing::now_ms;

impl JobService {
    /// Discards checkpoints whose task is over (succeeded, failed,
    /// cancelled) or whose job is gone or over, saved more than `grace` ago
    /// (a task of a job still running is never touched). With `job`, only
    /// that job's. Returns how many were discarded.
    pub async fn discard_checkpoints(&self, job: Option<&JobId>, grace: Duration) -> usize {
        let Some(store) = self.config().process.checkpoints.clone() else {
            return 0;
        };
        let listed = match store.list().await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "checkpoint cleanup: cannot list checkpoints");
                return 0;
            }
        };
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let mut discarded = 0;
        for (id, checkpoint) in listed {
            let Some((job_id, index)) = id.task() else {
                continue;
            };
            if job.is_some_and(|j| *j != job_id) {
                continue;
            }
            let record = match self.recorder().store().task(&job_id, index).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(transfer = %id, error = %e, "checkpoint cleanup: job store unavailable");
                    continue;
                }
            };
            let live = record.as_ref().is_some_and(|r| {
                !r.status.is_terminal()
                    && matches!(r.task.status(), TaskStatus::Queued | TaskStatus::Running)
            });
            if live {
                continue;
            }
            match (&checkpoint, &record) {
                (Ok(c), _) if now_ms().saturating_sub(c.saved_at_ms) < grace_ms => continue,
                (Ok(c), Some(record)) => match self.storages().resolve(&record.destination).await {
                    Ok(storage) => {
                        if let Err(e) = storage.discard(&c.key, &c.staged).await {
                            warn!(transfer = %id, error = %e, "checkpoint cleanup: could not discard staged bytes; will retry");
                            continue;
                        }
                    }
                    Err(e) => {
                        warn!(transfer = %id, error = %e, "checkpoint cleanup: destination unusable; will retry");
                        continue;
                    }
                },
                (Ok(_), None) => {
                    warn!(transfer = %id, "checkpoint cleanup: its job or task is gone; removing the checkpoint only");
                }
                (Err(reason), _) => {
                    warn!(transfer = %id, %reason, "checkpoint cleanup: unreadable checkpoint removed");
                }
            }
            if let Err(e) = store.remove(&id).await {
                warn!(transfer = %id, error = %e, "checkpoint cleanup: could not remove");
                continue;
            }
            discarded += 1;
        }
        if discarded > 0 {
            info!(discarded, "orphaned checkpoints cleaned up");
        }
        discarded
    }
}
