//! Watching jobs: a snapshot first, then every event in sequence order,
//! with no gap and no duplicate, until the job's terminal event.
//!
//! Live events come from the service's in-process broadcast. A watcher that
//! falls behind (the broadcast overwrote events it had not read yet, or a
//! sequence number is skipped) catches up from the job store, which holds
//! every event: page by page, with progress events coalesced (the latest per
//! file wins; lifecycle events are never dropped). Memory per watcher is one
//! page at most. A watcher more than `watch_max_lag` events behind gets a
//! final `Lagged` and ends; the client reconnects with the last sequence
//! number it saw.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use thiserror::Error;
use tokio::sync::broadcast::{Receiver, error::RecvError};

use ferry_domain::JobId;
use ferry_domain::ports::{JobEvent, JobEventKind, JobFilter, JobHead, JobStoreError};

use super::access::Access;
use super::service::JobService;

/// What a watcher receives.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchItem {
    /// The job as it is when the watch starts; `seq` is the sequence number
    /// of the latest event it reflects.
    Snapshot {
        job: Box<JobHead>,
        seq: u64,
        replay_from: u64,
    },
    /// The unfinished jobs when a watch of all jobs starts.
    Jobs(Vec<JobHead>),
    Event(JobEvent),
    /// The watcher fell too far behind and the stream ends; reconnect from
    /// `last_seq` (per-job watches) to continue.
    Lagged {
        last_seq: u64,
    },
}

/// Why a watch could not start.
#[derive(Debug, Error)]
pub enum WatchError {
    #[error("job {0} does not exist")]
    NotFound(JobId),
    #[error(transparent)]
    Store(#[from] JobStoreError),
}

/// Counters of all watches (exported as metrics).
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Progress events left out while a watcher caught up.
    pub coalesced: AtomicU64,
    /// Watchers closed with `Lagged`.
    pub lagged: AtomicU64,
}

/// Drops each progress event that a later event of the same page, for the
/// same file, supersedes. Returns how many were dropped.
fn coalesce(page: &mut VecDeque<JobEvent>) -> u64 {
    let mut later: HashSet<usize> = HashSet::new();
    let mut keep = vec![true; page.len()];
    for (i, e) in page.iter().enumerate().rev() {
        let file = match &e.kind {
            JobEventKind::FileProgress { index, .. } => {
                if later.contains(index) {
                    keep[i] = false;
                }
                Some(*index)
            }
            JobEventKind::FileStarted { index, .. }
            | JobEventKind::FileSucceeded { index, .. }
            | JobEventKind::FileSkipped { index, .. }
            | JobEventKind::FileFailed { index, .. } => Some(*index),
            _ => None,
        };
        if let Some(f) = file {
            later.insert(f);
        }
    }
    let before = page.len();
    let mut i = 0;
    page.retain(|_| {
        let k = keep[i];
        i += 1;
        k
    });
    u64::try_from(before - page.len()).unwrap_or(0)
}

struct JobWatch {
    service: Arc<JobService>,
    id: JobId,
    rx: Receiver<JobEvent>,
    first: Option<WatchItem>,
    /// Sequence number of the last event delivered (or reflected).
    cursor: u64,
    /// Latest sequence number known to be stored.
    known: u64,
    page: VecDeque<JobEvent>,
    done: bool,
    /// Catching up because the watcher fell behind (progress may then be
    /// coalesced); a replay the client asked for is never coalesced.
    lagging: bool,
}

impl JobWatch {
    /// Reads the next page from the store, or ends the watch with `Lagged`.
    async fn catch_up(&mut self) -> Result<Option<WatchItem>, JobStoreError> {
        let config = self.service.config();
        if let Some(head) = self.service.recorder().store().head(&self.id).await? {
            self.known = self.known.max(head.last_event_seq);
        }
        if self.known.saturating_sub(self.cursor) > config.watch_max_lag {
            self.done = true;
            self.service
                .watch_stats()
                .lagged
                .fetch_add(1, Ordering::Relaxed);
            return Ok(Some(WatchItem::Lagged {
                last_seq: self.cursor,
            }));
        }
        let mut page: VecDeque<JobEvent> = self
            .service
            .events_after(&self.id, self.cursor, config.watch_page)
            .await?
            .into();
        if self.lagging {
            let dropped = coalesce(&mut page);
            self.service
                .watch_stats()
                .coalesced
                .fetch_add(dropped, Ordering::Relaxed);
        }
        self.page = page;
        Ok(None)
    }

    fn deliver(&mut self, event: JobEvent) -> WatchItem {
        self.cursor = event.seq;
        self.known = self.known.max(event.seq);
        if self.cursor >= self.known {
            self.lagging = false;
        }
        if event.kind.is_terminal() {
            self.done = true;
        }
        WatchItem::Event(event)
    }

    async fn next(&mut self) -> Option<WatchItem> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.page.pop_front() {
                if event.seq > self.cursor {
                    return Some(self.deliver(event));
                }
                continue;
            }
            if self.cursor < self.known {
                match self.catch_up().await {
                    Ok(Some(lagged)) => return Some(lagged),
                    Ok(None) if self.page.is_empty() => {
                        // The store has nothing newer after all.
                        self.known = self.cursor;
                        self.lagging = false;
                    }
                    Ok(None) => {}
                    Err(_) => return None,
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(e) if e.job_id != self.id || e.seq <= self.cursor => {}
                Ok(e) if e.seq == self.cursor + 1 => return Some(self.deliver(e)),
                Ok(e) => {
                    self.known = self.known.max(e.seq);
                    self.lagging = true;
                }
                Err(RecvError::Lagged(_)) => {
                    self.known = self.known.max(self.cursor + 1);
                    self.lagging = true;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

impl JobService {
    /// Watches one job: a snapshot, then its events after `after` (default:
    /// those after the snapshot), until its terminal event.
    pub async fn watch(
        self: &Arc<Self>,
        access: &Access,
        id: &JobId,
        after: Option<u64>,
    ) -> Result<impl Stream<Item = WatchItem> + Send + 'static, WatchError> {
        // Subscribe before reading, so nothing published meanwhile is missed.
        let rx = self.recorder().subscribe();
        let record = self
            .head(access, id)
            .await?
            .ok_or_else(|| WatchError::NotFound(id.clone()))?;
        let seq = record.last_event_seq;
        let cursor = after.unwrap_or(seq).min(seq);
        let terminal_reflected = record.status.is_terminal() && cursor >= seq;
        let state = JobWatch {
            service: self.clone(),
            id: id.clone(),
            rx,
            first: Some(WatchItem::Snapshot {
                job: Box::new(record),
                seq,
                replay_from: cursor,
            }),
            cursor,
            known: seq,
            page: VecDeque::new(),
            done: terminal_reflected,
            lagging: false,
        };
        Ok(futures::stream::unfold(state, |mut st| async move {
            st.next().await.map(|item| (item, st))
        }))
    }

    /// Watches all jobs `access` may see: those unfinished, then every
    /// event of theirs as it happens (an owner's stream leaves out other
    /// owners' events: a job first seen in an event is looked up once,
    /// through `access`). A watcher that falls behind gets `Lagged`.
    pub async fn watch_all(
        self: &Arc<Self>,
        access: &Access,
    ) -> Result<impl Stream<Item = WatchItem> + Send + 'static, WatchError> {
        let rx = self.recorder().subscribe();
        let page = self
            .list(
                access,
                &JobFilter {
                    owner: access.owner_filter(),
                    status: None,
                    limit: 1000,
                    cursor: None,
                },
            )
            .await?;
        let mut visible: std::collections::HashMap<JobId, bool> = HashMap::new();
        for h in &page.jobs {
            visible.insert(h.id.clone(), true);
        }
        let active: Vec<JobHead> = page
            .jobs
            .into_iter()
            .filter(|h| !h.status.is_terminal())
            .collect();
        let state = AllWatch {
            first: Some(WatchItem::Jobs(active)),
            rx,
            done: false,
            service: self.clone(),
            access: access.clone(),
            visible,
        };
        Ok(futures::stream::unfold(state, |mut st| async move {
            st.next().await.map(|item| (item, st))
        }))
    }
}

/// The state of one all-jobs watch.
struct AllWatch {
    first: Option<WatchItem>,
    rx: Receiver<JobEvent>,
    done: bool,
    service: Arc<JobService>,
    access: Access,
    /// Whether `access` may see a job, by id (looked up once per job).
    visible: HashMap<JobId, bool>,
}

impl AllWatch {
    async fn next(&mut self) -> Option<WatchItem> {
        if let Some(item) = self.first.take() {
            return Some(item);
        }
        if self.done {
            return None;
        }
        loop {
            match self.rx.recv().await {
                Ok(e) => {
                    if self.may_see(&e.job_id).await {
                        return Some(WatchItem::Event(e));
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    self.service
                        .watch_stats()
                        .lagged
                        .fetch_add(1, Ordering::Relaxed);
                    self.done = true;
                    return Some(WatchItem::Lagged { last_seq: 0 });
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    async fn may_see(&mut self, id: &JobId) -> bool {
        if self.access == Access::All {
            return true;
        }
        if let Some(seen) = self.visible.get(id) {
            return *seen;
        }
        // A store error hides the event rather than leak it.
        let seen = matches!(self.service.head(&self.access, id).await, Ok(Some(_)));
        if self.visible.len() > 100_000 {
            self.visible.clear();
        }
        self.visible.insert(id.clone(), seen);
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, kind: JobEventKind) -> JobEvent {
        JobEvent {
            job_id: JobId::parse("j").unwrap(),
            seq,
            at_ms: 0,
            kind,
        }
    }

    fn progress(seq: u64, index: usize) -> JobEvent {
        ev(
            seq,
            JobEventKind::FileProgress {
                index,
                bytes_done: seq,
                total: None,
            },
        )
    }

    #[test]
    fn progress_is_coalesced_and_lifecycle_kept() {
        let mut page: VecDeque<JobEvent> = vec![
            ev(
                1,
                JobEventKind::FileStarted {
                    index: 0,
                    attempt: 1,
                },
            ),
            progress(2, 0),
            progress(3, 1),
            progress(4, 0),
            progress(5, 0),
            ev(
                6,
                JobEventKind::FileSucceeded {
                    index: 1,
                    bytes: 9,
                    sha256: ferry_domain::Checksum::sha256(&"a".repeat(64)).unwrap(),
                    md5: None,
                },
            ),
            progress(7, 0),
        ]
        .into();
        assert_eq!(coalesce(&mut page), 4);
        let seqs: Vec<u64> = page.iter().map(|e| e.seq).collect();
        // Progress 2, 4, 5 of file 0 are superseded by 7; 3 of file 1 by 6.
        assert_eq!(seqs, vec![1, 6, 7]);
    }
}
