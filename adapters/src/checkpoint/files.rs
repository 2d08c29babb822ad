//! `CheckpointStorePort` on a directory of small JSON files, one per
//! transfer (`ferry copy`'s state files). A save writes a temp file, fsyncs
//! it, renames it over the old one and fsyncs the directory: a crash at any
//! point leaves the previous checkpoint or the new one, never a torn file.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use ferry_domain::ports::{CheckpointError, CheckpointStorePort, ListedCheckpoint};
use ferry_domain::{Checkpoint, TransferId};

use super::codec;
use crate::killpoint::kill_point;

const SUFFIX: &str = ".json";

/// Checkpoints as files in one directory.
#[derive(Debug, Clone)]
pub struct CheckpointFiles {
    dir: PathBuf,
}

fn io(e: std::io::Error) -> CheckpointError {
    CheckpointError::Unavailable(e.to_string())
}

impl CheckpointFiles {
    /// Uses `dir`, created (mode 0700 where supported) if missing.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let dir = dir.as_ref().to_path_buf();
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&dir).map_err(|e| {
            CheckpointError::Unavailable(format!(
                "cannot create the state directory {}: {e}",
                dir.display()
            ))
        })?;
        remove_dead_temp_files(&dir);
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &TransferId) -> PathBuf {
        self.dir.join(format!("{id}{SUFFIX}"))
    }

    /// Takes the exclusive lock of a transfer (`ID.lock`), so that one
    /// process at a time works on its checkpoint. The OS releases it when
    /// the process ends, however it ends; dropping the guard also removes
    /// the file (a crash leaves it, and the next lock reuses it).
    ///
    /// A process that opened the file just before its holder removed it
    /// would lock a file no longer at the path while a third process locks
    /// a new one: so a lock counts only if the locked file is still the one
    /// at the path, and is taken again otherwise.
    pub fn lock(&self, id: &TransferId) -> Result<TransferLock, LockError> {
        let path = self.dir.join(format!("{id}.lock"));
        let shown = path.display().to_string();
        for _ in 0..8 {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| LockError::Failed(format!("cannot open {shown}: {e}")))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Err(LockError::Held),
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(LockError::Failed(format!("cannot lock {shown}: {e}")));
                }
            }
            if is_at_path(&file, &path) {
                return Ok(TransferLock { path, _file: file });
            }
            // Removed or replaced since we opened it: try the current one.
        }
        Err(LockError::Failed(format!(
            "cannot lock {shown}: the file keeps being replaced"
        )))
    }
}

/// Whether `file` is the file now at `path` (same device and inode).
fn is_at_path(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(held), Ok(now)) => held.dev() == now.dev() && held.ino() == now.ino(),
        _ => false,
    }
}

/// Why a transfer could not be locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockError {
    /// Another process holds it.
    Held,
    Failed(String),
}

/// A held transfer lock; removes its file when dropped (a process that
/// opened it meanwhile sees, after locking, that it is no longer at the
/// path, and opens the new one: see [`CheckpointFiles::lock`]).
#[derive(Debug)]
pub struct TransferLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl Drop for TransferLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes half-written state files (`ID.tmp.PID`) of processes that are no
/// longer running: a crash during a save leaves one behind.
fn remove_dead_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.rsplit_once(".tmp."))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        if !alive && Path::new("/proc/self").exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn save_sync(dir: &Path, path: &Path, body: &str, offset: u64) -> std::io::Result<()> {
    use std::io::Write;
    let temp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(body.as_bytes())?;
        file.sync_all()?;
        kill_point("ferry-checkpoint-written", offset);
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[async_trait]
impl CheckpointStorePort for CheckpointFiles {
    async fn load(&self, id: &TransferId) -> Result<Option<Checkpoint>, CheckpointError> {
        match tokio::fs::read_to_string(self.path(id)).await {
            Ok(raw) => {
                codec::from_json(&raw)
                    .map(Some)
                    .map_err(|reason| CheckpointError::Corrupt {
                        id: id.clone(),
                        reason,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn save(&self, id: &TransferId, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let (dir, path, body) = (self.dir.clone(), self.path(id), codec::to_json(checkpoint));
        let offset = checkpoint.committed();
        tokio::task::spawn_blocking(move || save_sync(&dir, &path, &body, offset))
            .await
            .map_err(|e| CheckpointError::Unexpected(Box::new(e)))?
            .map_err(io)
    }

    async fn remove(&self, id: &TransferId) -> Result<(), CheckpointError> {
        match tokio::fs::remove_file(self.path(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    async fn list(&self) -> Result<Vec<ListedCheckpoint>, CheckpointError> {
        let mut found = Vec::new();
        let mut entries = tokio::fs::read_dir(&self.dir).await.map_err(io)?;
        while let Some(entry) = entries.next_entry().await.map_err(io)? {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| TransferId::parse(n).ok())
            else {
                continue;
            };
            let checkpoint = tokio::fs::read_to_string(entry.path())
                .await
                .map_err(|e| e.to_string())
                .and_then(|raw| codec::from_json(&raw));
            found.push((id, checkpoint));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check that makes a lock count: a handle whose file was removed
    /// or replaced at the path is not the lock.
    #[test]
    fn a_lock_file_removed_or_replaced_after_opening_is_not_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let stale = std::fs::File::create(&path).unwrap();
        assert!(is_at_path(&stale, &path));
        std::fs::remove_file(&path).unwrap();
        assert!(!is_at_path(&stale, &path));
        std::fs::write(&path, b"").unwrap();
        assert!(!is_at_path(&stale, &path));
    }
}
