//! Orphan cleanup for job tasks: checkpoints (and the uploads or temp files
//! they name) that no live task owns any more. Run at startup, periodically,
//! and at once for a cancelled job. Only what a ferry checkpoint names is
//! touched: other writers' uploads in the same bucket are never listed,
//! let alone aborted.

use std::collections::HashSet;
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
        self.discard_where(|j| job.is_none_or(|want| want == j), grace)
            .await
            .map_or(0, |d| d.discarded)
    }

    /// [`Self::discard_checkpoints`] of the jobs `wanted` selects; `None`
    /// if the checkpoints could not be listed.
    pub(super) async fn discard_where(
        &self,
        wanted: impl Fn(&JobId) -> bool,
        grace: Duration,
    ) -> Option<Discarded> {
        let Some(store) = self.config().process.checkpoints.clone() else {
            return Some(Discarded::default());
        };
        let listed = match store.list().await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "checkpoint cleanup: cannot list checkpoints");
                return None;
            }
        };
        let mut kept = HashSet::new();
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let mut discarded = 0;
        for (id, checkpoint) in listed {
            let Some((job_id, index)) = id.task() else {
                continue;
            };
            if !wanted(&job_id) {
                continue;
            }
            let record = match self.recorder().store().task(&job_id, index).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(transfer = %id, error = %e, "checkpoint cleanup: job store unavailable");
                    kept.insert(job_id);
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
                (Ok(c), Some(record)) => {
                    match self.storages().resolve(&record.job.destination).await {
                        Ok(storage) => {
                            if let Err(e) = storage.discard(&c.key, &c.staged).await {
                                warn!(transfer = %id, error = %e, "checkpoint cleanup: could not discard staged bytes; will retry");
                                kept.insert(job_id);
                                continue;
                            }
                        }
                        Err(e) => {
                            warn!(transfer = %id, error = %e, "checkpoint cleanup: destination unusable; will retry");
                            kept.insert(job_id);
                            continue;
                        }
                    }
                }
                (Ok(_), None) => {
                    warn!(transfer = %id, "checkpoint cleanup: its job or task is gone; removing the checkpoint only");
                }
                (Err(reason), _) => {
                    warn!(transfer = %id, %reason, "checkpoint cleanup: unreadable checkpoint removed");
                }
            }
            if let Err(e) = store.remove(&id).await {
                warn!(transfer = %id, error = %e, "checkpoint cleanup: could not remove");
                kept.insert(job_id);
                continue;
            }
            discarded += 1;
        }
        if discarded > 0 {
            info!(discarded, "orphaned checkpoints cleaned up");
        }
        Some(Discarded { discarded, kept })
    }
}

impl JobService {
    /// Retention: deletes jobs that ended (were last saved) more than
    /// `retain` ago, with their tasks, events, idempotency keys and
    /// checkpoints. Staged bytes a checkpoint still names are discarded
    /// first; a job whose staged bytes cannot be discarded now stays for
    /// the next pass. Returns how many jobs went.
    pub async fn purge_ended(&self, retain: Duration) -> usize {
        const BATCH: u32 = 500;
        let store = self.recorder().store();
        let retain_ms = i64::try_from(retain.as_millis()).unwrap_or(i64::MAX);
        let before = self.recorder().now_ms().saturating_sub(retain_ms);
        let mut purged = 0;
        let mut skipped: HashSet<JobId> = HashSet::new();
        loop {
            let ids = match store.ended_before(before, BATCH).await {
                Ok(ids) => ids,
                Err(e) => {
                    warn!(error = %e, "retention: cannot list ended jobs");
                    break;
                }
            };
            let fresh: HashSet<JobId> = ids
                .iter()
                .filter(|id| !skipped.contains(*id))
                .cloned()
                .collect();
            if fresh.is_empty() {
                break;
            }
            let Some(discarded) = self
                .discard_where(|j| fresh.contains(j), Duration::ZERO)
                .await
            else {
                break;
            };
            for id in fresh {
                if discarded.kept.contains(&id) {
                    skipped.insert(id);
                    continue;
                }
                match store.delete_ended(&id).await {
                    Ok(true) => purged += 1,
                    Ok(false) => {
                        skipped.insert(id);
                    }
                    Err(e) => {
                        warn!(job = %id, error = %e, "retention: cannot delete an ended job");
                        skipped.insert(id);
                    }
                }
            }
            if ids.len() < BATCH as usize {
                break;
            }
        }
        if purged > 0 {
            info!(
                purged,
                retain_s = retain.as_secs(),
                "retention: ended jobs deleted"
            );
        }
        purged
    }
}

/// What a cleanup pass did.
#[derive(Debug, Default)]
pub(super) struct Discarded {
    pub discarded: usize,
    /// Jobs with a checkpoint left in place by a failure (to retry).
    pub kept: HashSet<JobId>,
}
