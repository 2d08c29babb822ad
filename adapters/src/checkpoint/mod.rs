//! Checkpoint stores: state files for `ferry copy` ([`CheckpointFiles`]);
//! the job store ([`crate::job_store::SqlJobStore`]) keeps those of job
//! tasks. Both use one JSON form ([`codec`]).

pub mod codec;
mod files;

pub use files::{CheckpointFiles, LockError, TransferLock};

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_domain::ports::CheckpointStorePort;

use crate::filesystem::TempFileState;

/// The temp files that checkpoints name (saved less than `max_age` ago, if
/// given): a stale temp sweep keeps them for their resume.
pub async fn checkpointed_temp_files(
    store: &dyn CheckpointStorePort,
    max_age: Option<Duration>,
) -> HashSet<PathBuf> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let oldest_ms = max_age.map_or(i64::MIN, |age| {
        now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
    });
    store
        .list()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, c)| {
            let c = c.ok()?;
            let state = TempFileState::from_staged(&c.staged).ok()?;
            (c.saved_at_ms > oldest_ms).then(|| PathBuf::from(state.path))
        })
        .collect()
}
