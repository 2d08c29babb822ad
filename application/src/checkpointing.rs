//! One transfer's checkpoints: built from the storage's durable state and the
//! hash state at the same offset, saved through `CheckpointStorePort`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use ferry_domain::ports::{CheckpointStorePort, SourceMeta, StartGate};
use ferry_domain::{
    Checkpoint, Checksum, HashState, ObjectKey, SourceIdentity, SourceUrl, StagedState, TransferId,
};

use crate::killpoint::kill_point;

/// SHA-256 (hex) of the full URL: identifies the source in a checkpoint
/// without writing its query string (a presigned signature) anywhere.
pub fn url_fingerprint(source: &SourceUrl) -> String {
    let digest: [u8; 32] = Sha256::digest(source.expose().as_bytes()).into();
    Checksum::from_sha256_digest(&digest).hex().to_owned()
}

/// Milliseconds since the epoch (job and checkpoint timestamps).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl ferry_domain::ports::Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// Saves one transfer's checkpoints.
pub(crate) struct Checkpointer {
    pub(crate) store: Arc<dyn CheckpointStorePort>,
    pub(crate) id: TransferId,
    pub(crate) key: ObjectKey,
    pub(crate) source: Option<SourceIdentity>,
    /// Offset of the last checkpoint saved by this call.
    pub(crate) saved_at: Option<u64>,
    /// A checkpoint of this transfer may be on record (one was loaded, or a
    /// save was attempted): only then is there anything to clear. A file
    /// that never reached a checkpoint costs the store nothing.
    pub(crate) recorded: bool,
    /// Cluster mode: saves are fenced by this lease epoch.
    pub(crate) epoch: Option<u64>,
    /// A fresh start's gate (`ProcessFileCommand::fresh_start`): the first
    /// save waits for it; none is saved if it says the start never will
    /// be durable.
    pub(crate) start: Option<Arc<dyn StartGate>>,
}

impl Checkpointer {
    pub(crate) fn new(store: Arc<dyn CheckpointStorePort>, id: TransferId, key: ObjectKey) -> Self {
        Self {
            store,
            id,
            key,
            source: None,
            saved_at: None,
            recorded: false,
            epoch: None,
            start: None,
        }
    }

    /// Records what the source is; only a replayable source (length and
    /// validator) can be resumed, so only then are checkpoints saved.
    pub(crate) fn identify(&mut self, url: &SourceUrl, meta: &SourceMeta) {
        self.source = match meta.total_length {
            Some(length) if meta.is_replayable() => Some(SourceIdentity {
                url_sha256: url_fingerprint(url),
                length,
                etag: meta.etag.clone(),
                last_modified: meta.last_modified.clone(),
            }),
            _ => None,
        };
    }

    /// Saves a checkpoint. A save that fails is logged, not fatal: the
    /// transfer goes on and the previous checkpoint stays valid.
    pub(crate) async fn save(&mut self, staged: StagedState, hash: HashState) {
        let Some(source) = self.source.clone() else {
            return;
        };
        let at = staged.committed();
        let checkpoint = match Checkpoint::new(source, self.key.clone(), hash, staged, now_ms()) {
            Ok(c) => c,
            Err(e) => {
                warn!(transfer = %self.id, error = %e, "checkpoint not saved: inconsistent");
                return;
            }
        };
        if let Some(start) = &self.start {
            if !start.durable().await {
                debug!(transfer = %self.id, at, "checkpoint not saved: the task's start was not recorded");
                return;
            }
            self.start = None;
        }
        kill_point("ferry-before-checkpoint", at);
        self.recorded = true;
        let saved = match self.epoch {
            None => self.store.save(&self.id, &checkpoint).await.map(|()| true),
            Some(epoch) => self.store.save_fenced(&self.id, &checkpoint, epoch).await,
        };
        match saved {
            Ok(true) => {
                debug!(transfer = %self.id, at, "checkpoint saved");
                self.saved_at = Some(at);
            }
            Ok(false) => warn!(
                transfer = %self.id,
                "checkpoint not saved: this node no longer holds the task's lease"
            ),
            Err(e) => warn!(transfer = %self.id, error = %e, "checkpoint not saved"),
        }
        kill_point("ferry-after-checkpoint", at);
    }

    pub(crate) async fn clear(&self) {
        if !self.recorded {
            return;
        }
        if let Err(e) = self.store.remove(&self.id).await {
            warn!(transfer = %self.id, error = %e, "could not remove a checkpoint");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_hide_the_url() {
        let url = SourceUrl::parse("https://h/x?X-Amz-Signature=secret").unwrap();
        let print = url_fingerprint(&url);
        assert_eq!(print.len(), 64);
        assert!(!print.contains("secret"));
        let other = SourceUrl::parse("https://h/x?X-Amz-Signature=other").unwrap();
        assert_ne!(print, url_fingerprint(&other));
    }
}
