//! `FileStoragePort` on a local directory.
//!
//! Keys map to paths under the root and can never leave it (keys are
//! validated, and every parent directory is resolved through symlinks and
//! checked to still be under the root). A write goes to a temporary file in
//! the destination's own directory (`.NAME.ferry-tmp.PID.RANDOM`), is
//! flushed and fsynced, then renamed over the final name: a reader sees the
//! old object or the whole new one, never a part. Abort, drop and crashes
//! leave no visible file; temp files of dead processes are removed by
//! [`FilesystemStorage::remove_stale_temp_files`] (run at startup).

use std::collections::HashSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;
use tracing::{debug, warn};

use ferry_domain::ports::{
    CommitInfo, FileStoragePort, ObjectMeta, StagedWrite, StorageError, StoredObject, WriteRequest,
};
use ferry_domain::stream::ByteStream;
use ferry_domain::{ObjectKey, StagedState};

use crate::killpoint::kill_point;

/// Marker in temp file names.
pub const TEMP_MARKER: &str = ".ferry-tmp.";
/// Age after which a temp file is stale even if its owner cannot be checked.
const STALE_AGE: Duration = Duration::from_secs(24 * 3600);

/// Chunks between two checkpoints of a directory write.
pub const DEFAULT_CHECKPOINT_EVERY: u32 = 5;
/// Bytes between two fsyncs of a checkpointed directory write, at least.
/// The fsyncs run in the background (at most one at a time) and a
/// checkpoint names what one confirmed, so a crash costs at most two
/// intervals: 8 MiB, one S3 part. Syncing every 5 chunks in line cost 35-40 %
/// of a 1 GiB copy's throughput (docs/reliability.md).
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;

/// Storage in a directory.
#[derive(Debug, Clone)]
pub struct FilesystemStorage {
    root: PathBuf,
    checkpoint_every: u32,
    checkpoint_bytes: u64,
}

fn io_error(location: &str, e: std::io::Error) -> StorageError {
    match e.kind() {
        ErrorKind::NotFound => StorageError::NotFound {
            location: location.to_owned(),
        },
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            StorageError::PermissionDenied {
                location: location.to_owned(),
                reason: e.to_string(),
            }
        }
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => StorageError::StorageFull {
            location: location.to_owned(),
        },
        ErrorKind::IsADirectory | ErrorKind::NotADirectory | ErrorKind::InvalidFilename => {
            StorageError::InvalidDestination {
                location: location.to_owned(),
                reason: e.to_string(),
            }
        }
        _ => StorageError::Unexpected {
            location: location.to_owned(),
            source: Box::new(e),
        },
    }
}

impl FilesystemStorage {
    /// Uses `root` (created if missing) as the storage root.
    pub fn new(root: impl AsRef<Path>) -> Result<Self, StorageError> {
        let root = root.as_ref();
        let shown = root.display().to_string();
        std::fs::create_dir_all(root).map_err(|e| io_error(&shown, e))?;
        let root = root.canonicalize().map_err(|e| io_error(&shown, e))?;
        if !root.is_dir() {
            return Err(StorageError::InvalidDestination {
                location: shown,
                reason: "it is not a directory".into(),
            });
        }
        Ok(Self {
            root,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_bytes: DEFAULT_CHECKPOINT_BYTES,
        })
    }

    /// Checkpoints a write every `n` chunks and at least `bytes` apart
    /// (after an fsync); `bytes` 0: every `n` chunks.
    pub fn with_checkpoint_interval(mut self, n: u32, bytes: u64) -> Self {
        self.checkpoint_every = n.max(1);
        self.checkpoint_bytes = bytes;
        self
    }

    /// A write into `temp` (opened as `file`, holding `length` bytes already
    /// on disk) that becomes `target` on commit.
    fn writer(
        &self,
        key: ObjectKey,
        temp: PathBuf,
        target: PathBuf,
        file: tokio::fs::File,
        length: u64,
        request: &WriteRequest,
    ) -> FsStagedWrite {
        let mtime = request
            .attributes
            .preserve_mtime
            .then_some(request.source_last_modified.as_deref())
            .flatten()
            .and_then(|date| httpdate::parse_http_date(date).ok());
        FsStagedWrite {
            suspend_on_drop: request.suspend_on_drop.clone(),
            mtime,
            if_absent: request.if_absent,
            key,
            temp,
            target,
            file: Some(file),
            written: length,
            finished: false,
            every: self.checkpoint_every,
            every_bytes: self.checkpoint_bytes,
            since: 0,
            synced: length,
            sync_started: length,
            pending: None,
            checkpointed: false,
            direct: None,
            in_flight: None,
        }
    }

    /// A new temp file name beside `target`, owned by this process.
    fn temp_for(target: &Path, key: &ObjectKey) -> PathBuf {
        let suffix: u64 = rand::rng().random();
        target.with_file_name(format!(
            ".{}{TEMP_MARKER}{}.{suffix:016x}",
            key.file_name(),
            std::process::id()
        ))
    }

    /// The temp file a checkpoint names, if it really is one of `key`'s
    /// temp files under the root (a forged or stale checkpoint must never
    /// make ferry touch another file).
    async fn checkpointed_temp(
        &self,
        key: &ObjectKey,
        path: &str,
    ) -> Result<(PathBuf, PathBuf), StorageError> {
        let target = self.confined_parent(key).await?;
        let temp = PathBuf::from(path);
        let prefix = format!(".{}{TEMP_MARKER}", key.file_name());
        let same_dir = temp.parent() == target.parent();
        let named = temp
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&prefix));
        if same_dir && named {
            Ok((temp, target))
        } else {
            Err(StorageError::InvalidDestination {
                location: target.display().to_string(),
                reason: "the checkpoint names a file that is not this key's temp file".into(),
            })
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_for(&self, key: &ObjectKey) -> PathBuf {
        let mut path = self.root.clone();
        for segment in key.segments() {
            path.push(segment);
        }
        path
    }

    /// Creates the key's parent directories and checks, through symlinks,
    /// that they are still under the root.
    async fn confined_parent(&self, key: &ObjectKey) -> Result<PathBuf, StorageError> {
        let path = self.path_for(key);
        let location = path.display().to_string();
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| io_error(&location, e))?;
        let real = tokio::fs::canonicalize(&parent)
            .await
            .map_err(|e| io_error(&location, e))?;
        if !real.starts_with(&self.root) {
            return Err(StorageError::InvalidDestination {
                location,
                reason: "a symlink leads outside the storage root".into(),
            });
        }
        Ok(real.join(key.file_name()))
    }

    /// Removes temp files left by processes that are no longer running (or
    /// older than a day where that cannot be checked). Returns how many.
    pub async fn remove_stale_temp_files(&self) -> Result<usize, StorageError> {
        self.remove_stale_temp_files_except(HashSet::new()).await
    }

    /// Like [`Self::remove_stale_temp_files`], but keeps the temp files in
    /// `keep` (those live checkpoints name: they will be resumed).
    pub async fn remove_stale_temp_files_except(
        &self,
        keep: HashSet<PathBuf>,
    ) -> Result<usize, StorageError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || sweep_dir(&root, true, &keep))
            .await
            .map_err(|e| StorageError::Unexpected {
                location: "temp file sweep".into(),
                source: Box::new(e),
            })
    }
}

impl FilesystemStorage {
    /// Like [`Self::remove_stale_temp_files`], but only in the root itself
    /// (not recursive): cheap enough for every CLI copy.
    pub async fn remove_stale_temp_files_in_root(&self, keep: HashSet<PathBuf>) -> usize {
        let dir = self.root.clone();
        tokio::task::spawn_blocking(move || sweep_dir(&dir, false, &keep))
            .await
            .unwrap_or(0)
    }
}

fn sweep_dir(root: &Path, recursive: bool, keep: &HashSet<PathBuf>) -> usize {
    let mut removed = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                if recursive {
                    dirs.push(path);
                }
            } else if kind.is_file() && !keep.contains(&path) && is_stale_temp(&path) {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "could not remove stale temp file")
                    }
                }
            }
        }
    }
    removed
}

fn is_stale_temp(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let Some((_, rest)) = name.split_once(TEMP_MARKER) else {
        return false;
    };
    let pid = rest.split('.').next().and_then(|p| p.parse::<u32>().ok());
    if Path::new("/proc/self").exists()
        && let Some(pid) = pid
    {
        return !Path::new(&format!("/proc/{pid}")).exists();
    }
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age > STALE_AGE)
}

/// A write in progress into a temp file.
struct FsStagedWrite {
    /// Set: a dropped write keeps its temp file for a resume elsewhere.
    suspend_on_drop: ferry_domain::ports::SuspendOnDrop,
    key: ObjectKey,
    temp: PathBuf,
    target: PathBuf,
    file: Option<tokio::fs::File>,
    written: u64,
    finished: bool,
    /// Checkpoint every this many chunks, at least this many bytes apart.
    every: u32,
    every_bytes: u64,
    /// Chunks since the last checkpoint.
    since: u32,
    /// Length an fsync confirmed.
    synced: u64,
    /// Length the last fsync started at.
    sync_started: u64,
    /// The fsync running in the background, and the length it covers.
    pending: Option<(u64, tokio::task::JoinHandle<std::io::Result<()>>)>,
    /// Whether checkpoints are asked of this write (then only what an
    /// fsync confirmed is durable).
    checkpointed: bool,
    /// The modification time the file gets at commit (`preserve_mtime`).
    mtime: Option<std::time::SystemTime>,
    /// No-clobber: publish only if `target` does not exist.
    if_absent: bool,
    /// The temp file's descriptor (a duplicate of `file`'s, sharing its
    /// offset) for writing large chunks from a blocking thread without
    /// `tokio::fs::File`'s copy of every chunk into its own buffer; made
    /// at the first large chunk.
    direct: Option<Arc<std::fs::File>>,
    /// The large chunk being written through `direct`, if any: waited for
    /// before any other use of the file (one write in flight, as with
    /// `tokio::fs::File`).
    in_flight: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Chunks at least this long are written from the `Bytes` itself on a
/// blocking thread (no copy); shorter ones through `tokio::fs::File`.
const DIRECT_AT: usize = 128 * 1024;

/// A use of the temp file (`doing`: "write", "commit"…) after it was
/// closed.
fn closed(location: &str, doing: &str) -> StorageError {
    StorageError::Unexpected {
        location: location.to_owned(),
        source: format!("{doing} after the file was closed").into(),
    }
}

/// A second `std` descriptor of `file` (sharing its offset), for blocking
/// work off the runtime: large writes, fsync, setting the mtime.
async fn std_duplicate(
    file: &tokio::fs::File,
    location: &str,
) -> Result<std::fs::File, StorageError> {
    let dup = file.try_clone().await.map_err(|e| io_error(location, e))?;
    Ok(dup.into_std().await)
}

/// Flushes and fsyncs a written temp file, renames it over `target` and
/// fsyncs the directory, so the rename itself is durable: the one way a
/// file of ferry's becomes visible on disk.
pub(crate) async fn publish(
    file: &mut tokio::fs::File,
    temp: &Path,
    target: &Path,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    file.flush().await?;
    file.sync_all().await?;
    tokio::fs::rename(temp, target).await?;
    sync_parent_dir(target).await;
    Ok(())
}

/// [`publish`] that never replaces an existing `target`: the temp file is
/// hard-linked to the final name (which fails atomically if the name
/// exists), then its temp name is removed. On a filesystem without hard
/// links, an existence check then a rename (not atomic against a writer
/// racing for the same name).
async fn publish_new(
    file: &mut tokio::fs::File,
    temp: &Path,
    target: &Path,
    location: &str,
) -> Result<(), StorageError> {
    use tokio::io::AsyncWriteExt;
    let exists = || StorageError::AlreadyExists {
        location: location.to_owned(),
    };
    file.flush().await.map_err(|e| io_error(location, e))?;
    file.sync_all().await.map_err(|e| io_error(location, e))?;
    match tokio::fs::hard_link(temp, target).await {
        Ok(()) => {
            // The object is visible; a leftover temp name is swept at start.
            if let Err(e) = tokio::fs::remove_file(temp).await {
                warn!(path = %temp.display(), error = %e, "could not remove a temp name after linking it");
            }
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(exists()),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::Unsupported | ErrorKind::PermissionDenied
            ) =>
        {
            if tokio::fs::try_exists(target).await.unwrap_or(false) {
                return Err(exists());
            }
            tokio::fs::rename(temp, target)
                .await
                .map_err(|e| io_error(location, e))?;
        }
        Err(e) => return Err(io_error(location, e)),
    }
    sync_parent_dir(target).await;
    Ok(())
}

/// Makes a rename into `path`'s directory durable (a failure is logged:
/// the file itself is complete and fsynced).
async fn sync_parent_dir(path: &Path) {
    let Some(dir) = path.parent().map(Path::to_path_buf) else {
        return;
    };
    let synced = tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all()).await;
    if let Ok(Err(e)) = synced {
        warn!(error = %e, "could not fsync the destination directory");
    }
}

/// What a directory write checkpoints: its temp file and the length known
/// to be on disk. The domain carries it as an opaque `StagedState` (kind
/// `temp_file`, a JSON token); only this adapter reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TempFileState {
    pub path: String,
    pub length: u64,
}

impl TempFileState {
    /// The `StagedState` kind of directory writes.
    pub const KIND: &'static str = "temp_file";

    /// As the domain carries it.
    pub fn to_staged(&self) -> StagedState {
        let token = serde_json::to_string(self).unwrap_or_default();
        StagedState::new(Self::KIND, self.length, token)
    }

    /// Reads a `StagedState` this adapter made; the error says what is
    /// wrong.
    pub fn from_staged(staged: &StagedState) -> Result<Self, String> {
        if staged.kind() != Self::KIND {
            return Err(format!(
                "a {} checkpoint is not a directory write",
                staged.kind()
            ));
        }
        let state: Self = serde_json::from_str(staged.token())
            .map_err(|e| format!("damaged temp file state: {e}"))?;
        if state.length != staged.committed() {
            return Err("the temp file's length is not the committed bytes".into());
        }
        Ok(state)
    }
}

impl FsStagedWrite {
    fn location(&self) -> String {
        self.target.display().to_string()
    }

    fn state_at(&self, length: u64) -> StagedState {
        TempFileState {
            path: self.temp.display().to_string(),
            length,
        }
        .to_staged()
    }

    /// Waits for the large chunk in flight, if any: every byte written so
    /// far is then in the file (or its error is reported).
    async fn settle(&mut self, location: &str) -> Result<(), StorageError> {
        let Some(handle) = self.in_flight.take() else {
            return Ok(());
        };
        match handle.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_error(location, e)),
            Err(e) => Err(StorageError::Unexpected {
                location: location.to_owned(),
                source: Box::new(e),
            }),
        }
    }

    /// The temp file with every byte written so far in it (the large
    /// chunk in flight landed, `tokio::fs::File`'s buffer flushed): how
    /// every use of the file other than a small write begins.
    async fn settled_file(
        &mut self,
        location: &str,
        doing: &str,
    ) -> Result<&mut tokio::fs::File, StorageError> {
        self.settle(location).await?;
        let file = self.file.as_mut().ok_or_else(|| closed(location, doing))?;
        file.flush().await.map_err(|e| io_error(location, e))?;
        Ok(file)
    }

    /// Waits for the background fsync, if any; its length is then durable.
    async fn collect_sync(&mut self, location: &str) -> Result<Option<u64>, StorageError> {
        let Some((length, handle)) = self.pending.take() else {
            return Ok(None);
        };
        match handle.await {
            Ok(Ok(())) => {
                self.synced = self.synced.max(length);
                Ok(Some(length))
            }
            Ok(Err(e)) => Err(io_error(location, e)),
            Err(e) => Err(StorageError::Unexpected {
                location: location.to_owned(),
                source: Box::new(e),
            }),
        }
    }

    fn remove_temp(&mut self) {
        self.finished = true;
        self.file = None;
        if let Err(e) = std::fs::remove_file(&self.temp)
            && e.kind() != ErrorKind::NotFound
        {
            warn!(path = %self.temp.display(), error = %e, "could not remove temp file");
        }
    }
}

impl Drop for FsStagedWrite {
    fn drop(&mut self) {
        if !self.finished && !self.suspend_on_drop.is_set() {
            self.remove_temp();
        }
    }
}

#[async_trait]
impl StagedWrite for FsStagedWrite {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        let location = self.location();
        self.settle(&location).await?;
        let len = chunk.len() as u64;
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| closed(&location, "write"))?;
        if chunk.len() < DIRECT_AT {
            file.write_all(&chunk)
                .await
                .map_err(|e| io_error(&location, e))?;
        } else {
            // Whatever `file` still has in flight lands first.
            file.flush().await.map_err(|e| io_error(&location, e))?;
            let direct = match &self.direct {
                Some(direct) => direct.clone(),
                None => {
                    let dup = std_duplicate(file, &location).await?;
                    self.direct.insert(Arc::new(dup)).clone()
                }
            };
            self.in_flight = Some(tokio::task::spawn_blocking(move || {
                use std::io::Write as _;
                (&*direct).write_all(&chunk)
            }));
        }
        self.written += len;
        Ok(())
    }

    fn durable_offset(&self) -> u64 {
        // Checkpointed writes: what an fsync confirmed. Otherwise every
        // written byte (nothing will ask to go back further).
        if self.checkpointed {
            self.synced
        } else {
            self.written
        }
    }

    async fn rewind(&mut self, offset: u64) -> Result<(), StorageError> {
        use tokio::io::AsyncSeekExt;
        let location = self.location();
        if offset > self.written {
            return Err(StorageError::Unexpected {
                location,
                source: format!(
                    "cannot rewind to {offset}: only {} bytes written",
                    self.written
                )
                .into(),
            });
        }
        let file = self.settled_file(&location, "rewind").await?;
        file.set_len(offset)
            .await
            .map_err(|e| io_error(&location, e))?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| io_error(&location, e))?;
        self.written = offset;
        self.pending = None;
        self.synced = self.synced.min(offset);
        self.sync_started = self.synced;
        Ok(())
    }

    async fn commit(mut self: Box<Self>, info: CommitInfo) -> Result<StoredObject, StorageError> {
        let location = self.location();
        let result = async {
            self.settled_file(&location, "commit").await?;
            let mut file = self
                .file
                .take()
                .ok_or_else(|| closed(&location, "commit"))?;
            if self.written != info.size {
                return Err(StorageError::Unexpected {
                    location: location.clone(),
                    source: format!(
                        "wrote {} bytes but {} were committed",
                        self.written, info.size
                    )
                    .into(),
                });
            }
            if let Some(mtime) = self.mtime {
                // Before the rename: the file appears with its final times.
                let std_file = std_duplicate(&file, &location).await?;
                tokio::task::spawn_blocking(move || std_file.set_modified(mtime))
                    .await
                    .map_err(|e| StorageError::Unexpected {
                        location: location.clone(),
                        source: Box::new(e),
                    })?
                    .map_err(|e| io_error(&location, e))?;
            }
            if self.if_absent {
                publish_new(&mut file, &self.temp, &self.target, &location).await?;
            } else {
                publish(&mut file, &self.temp, &self.target)
                    .await
                    .map_err(|e| io_error(&location, e))?;
            }
            self.finished = true;
            kill_point("ferry-fs-renamed", self.written);
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                debug!(path = %location, bytes = info.size, "committed");
                Ok(StoredObject {
                    key: self.key.clone(),
                    size: info.size,
                    location,
                })
            }
            Err(e) => {
                self.remove_temp();
                Err(e)
            }
        }
    }

    async fn checkpoint(&mut self, force: bool) -> Result<Option<StagedState>, StorageError> {
        self.since += 1;
        self.checkpointed = true;
        let location = self.location();
        if force {
            // Now, synchronously: the last one (before commit). The first
            // comes with the first fsync, an interval in: a file smaller
            // than that is never named by a checkpoint (it costs no fsync
            // or store write of its own; a crash leaves an unnamed temp
            // file of a dead process, which the sweep removes, and the
            // file is fetched again).
            self.collect_sync(&location).await?;
            let file = self.settled_file(&location, "checkpoint").await?;
            file.sync_data().await.map_err(|e| io_error(&location, e))?;
            self.since = 0;
            self.synced = self.written;
            self.sync_started = self.written;
            return Ok(Some(self.state_at(self.written)));
        }
        // In between, fsyncs run in the background while bytes keep
        // flowing; a checkpoint names what a finished fsync made durable.
        let mut ready = None;
        if self.pending.as_ref().is_some_and(|(_, h)| h.is_finished()) {
            ready = self.collect_sync(&location).await?;
        }
        let due = self.since >= self.every && self.written - self.sync_started >= self.every_bytes;
        if due {
            // At most one fsync in flight: a disk slower than the source
            // waits here, which bounds what a crash costs to two intervals.
            if let Some(len) = self.collect_sync(&location).await? {
                ready = Some(len);
            }
            let file = self.settled_file(&location, "checkpoint").await?;
            let handle = std_duplicate(file, &location).await?;
            let length = self.written;
            self.pending = Some((
                length,
                tokio::task::spawn_blocking(move || handle.sync_data()),
            ));
            self.sync_started = length;
            self.since = 0;
        }
        Ok(ready.map(|len| self.state_at(len)))
    }

    fn suspend(mut self: Box<Self>) {
        // Keep the temp file: a checkpoint names it.
        self.finished = true;
        self.file = None;
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        self.file = None;
        self.finished = true;
        match tokio::fs::remove_file(&self.temp).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&self.temp.display().to_string(), e)),
        }
    }
}

#[async_trait]
impl FileStoragePort for FilesystemStorage {
    fn location(&self, key: &ObjectKey) -> String {
        self.path_for(key).display().to_string()
    }

    async fn begin_write(
        &self,
        request: WriteRequest,
    ) -> Result<Box<dyn StagedWrite>, StorageError> {
        let target = self.confined_parent(&request.key).await?;
        let location = target.display().to_string();
        if tokio::fs::symlink_metadata(&target)
            .await
            .is_ok_and(|m| m.is_dir())
        {
            return Err(StorageError::InvalidDestination {
                location,
                reason: "a directory already has that name".into(),
            });
        }
        let temp = Self::temp_for(&target, &request.key);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await
            .map_err(|e| io_error(&location, e))?;
        if let Some(size) = request.size_hint {
            // Reserve nothing, but fail early on an impossible size.
            if size > i64::MAX as u64 {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(StorageError::InvalidDestination {
                    location,
                    reason: "the size is larger than a file can be".into(),
                });
            }
        }
        Ok(Box::new(self.writer(
            request.key.clone(),
            temp,
            target,
            file,
            0,
            &request,
        )))
    }

    async fn resume_write(
        &self,
        request: WriteRequest,
        staged: &StagedState,
    ) -> Result<Box<dyn StagedWrite>, StorageError> {
        let TempFileState { path, length } =
            TempFileState::from_staged(staged).map_err(|reason| {
                StorageError::InvalidDestination {
                    location: self.location(&request.key),
                    reason,
                }
            })?;
        let (path, length) = (&path, &length);
        let (old, target) = self.checkpointed_temp(&request.key, path).await?;
        let location = target.display().to_string();
        let on_disk = tokio::fs::symlink_metadata(&old)
            .await
            .map_err(|e| io_error(&location, e))?;
        if !on_disk.is_file() || on_disk.len() < *length {
            return Err(StorageError::InvalidDestination {
                location,
                reason: format!(
                    "the temp file holds {} bytes, fewer than the {length} checkpointed",
                    on_disk.len()
                ),
            });
        }
        // Take the file over under this process's name, so that no sweep
        // mistakes it for a dead process's leftover.
        let temp = Self::temp_for(&target, &request.key);
        tokio::fs::rename(&old, &temp)
            .await
            .map_err(|e| io_error(&location, e))?;
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&temp)
            .await
            .map_err(|e| io_error(&location, e))?;
        file.set_len(*length)
            .await
            .map_err(|e| io_error(&location, e))?;
        {
            use tokio::io::AsyncSeekExt;
            file.seek(std::io::SeekFrom::Start(*length))
                .await
                .map_err(|e| io_error(&location, e))?;
        }
        debug!(path = %temp.display(), length, "resuming a temp file");
        Ok(Box::new(self.writer(
            request.key.clone(),
            temp,
            target,
            file,
            *length,
            &request,
        )))
    }

    async fn discard(&self, key: &ObjectKey, staged: &StagedState) -> Result<(), StorageError> {
        let Ok(state) = TempFileState::from_staged(staged) else {
            return Ok(());
        };
        let (temp, _) = self.checkpointed_temp(key, &state.path).await?;
        match tokio::fs::remove_file(&temp).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&temp.display().to_string(), e)),
        }
    }

    async fn read(&self, key: &ObjectKey) -> Result<ByteStream<StorageError>, StorageError> {
        let path = self.path_for(key);
        let location = path.display().to_string();
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_error(&location, e))?;
        let stream = ReaderStream::with_capacity(file, 256 * 1024)
            .map(move |r| r.map_err(|e| io_error(&location, e)));
        Ok(Box::pin(stream))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let path = self.path_for(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&path.display().to_string(), e)),
        }
    }

    async fn metadata(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        let path = self.path_for(key);
        match tokio::fs::metadata(&path).await {
            Ok(md) if md.is_file() => Ok(Some(ObjectMeta {
                size: md.len(),
                last_modified: md.modified().ok(),
                sha256_hex: None,
                md5_hex: None,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path.display().to_string(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_detection_reads_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir
            .path()
            .join(format!(".a{TEMP_MARKER}{}.00", std::process::id()));
        let dead = dir
            .path()
            .join(format!(".a{TEMP_MARKER}{}.00", u32::MAX - 1));
        let other = dir.path().join("a.bin");
        for p in [&live, &dead, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        assert!(!is_stale_temp(&live));
        assert!(is_stale_temp(&dead));
        assert!(!is_stale_temp(&other));
        let checkpointed = dir
            .path()
            .join(format!(".b{TEMP_MARKER}{}.00", u32::MAX - 1));
        std::fs::write(&checkpointed, b"x").unwrap();
        let keep = HashSet::from([checkpointed.clone()]);
        assert_eq!(sweep_dir(dir.path(), true, &keep), 1);
        assert!(live.exists() && other.exists() && !dead.exists());
        assert!(checkpointed.exists(), "a checkpointed temp file is kept");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn symlink_out_of_root_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        let storage = FilesystemStorage::new(root.path()).unwrap();
        let key = ObjectKey::parse("escape/pwned.bin").unwrap();
        let err = storage
            .begin_write(WriteRequest::new(key, None))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, StorageError::InvalidDestination { .. }),
            "{err:?}"
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    /// No-clobber is decided at the commit itself: a file that appears
    /// after the write began is kept, the write fails `AlreadyExists`, and
    /// no temp file is left; a new name is published as usual.
    #[tokio::test]
    async fn an_if_absent_commit_never_replaces_a_file_that_appeared_meanwhile() {
        let root = tempfile::tempdir().unwrap();
        let storage = FilesystemStorage::new(root.path()).unwrap();
        let info = CommitInfo {
            size: 3,
            sha256_hex: "a".repeat(64),
            md5_hex: None,
        };
        for (name, racer) in [("raced.bin", true), ("fresh.bin", false)] {
            let key = ObjectKey::parse(name).unwrap();
            let mut request = WriteRequest::new(key.clone(), Some(3));
            request.if_absent = true;
            let mut write = storage.begin_write(request).await.unwrap();
            write.write(Bytes::from_static(b"new")).await.unwrap();
            if racer {
                std::fs::write(root.path().join(name), b"theirs").unwrap();
            }
            let committed = write.commit(info.clone()).await;
            if racer {
                assert!(
                    matches!(committed, Err(StorageError::AlreadyExists { .. })),
                    "{committed:?}"
                );
                assert_eq!(std::fs::read(root.path().join(name)).unwrap(), b"theirs");
            } else {
                committed.unwrap();
                assert_eq!(std::fs::read(root.path().join(name)).unwrap(), b"new");
            }
        }
        let mut names: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["fresh.bin", "raced.bin"], "no temp file left");
    }

    /// Large chunks (written from a blocking thread) and small ones
    /// (through `tokio::fs::File`) land in order; a checkpoint covers every
    /// byte written before it, a rewind cuts a large chunk's bytes off, and
    /// the committed file is exactly what was kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_and_small_chunks_land_in_order_through_checkpoint_and_rewind() {
        let root = tempfile::tempdir().unwrap();
        let storage = FilesystemStorage::new(root.path()).unwrap();
        let piece = |len: usize, seed: u8| -> Vec<u8> {
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect()
        };
        let key = ObjectKey::parse("mixed.bin").unwrap();
        let mut write = storage
            .begin_write(WriteRequest::new(key, None))
            .await
            .unwrap();
        let mut kept = Vec::new();
        for (len, seed) in [(DIRECT_AT + 7, 1), (10_000, 2), (3 * DIRECT_AT, 3), (1, 4)] {
            let bytes = piece(len, seed);
            kept.extend_from_slice(&bytes);
            write.write(Bytes::from(bytes)).await.unwrap();
        }
        let state = write.checkpoint(true).await.unwrap().unwrap();
        assert_eq!(state.committed(), kept.len() as u64);
        let temp = TempFileState::from_staged(&state).unwrap();
        assert_eq!(std::fs::read(&temp.path).unwrap(), kept, "synced bytes");
        // A large chunk, then back to the checkpoint, then more.
        write
            .write(Bytes::from(piece(2 * DIRECT_AT, 5)))
            .await
            .unwrap();
        write.rewind(kept.len() as u64).await.unwrap();
        for (len, seed) in [(5_000, 6), (DIRECT_AT, 7)] {
            let bytes = piece(len, seed);
            kept.extend_from_slice(&bytes);
            write.write(Bytes::from(bytes)).await.unwrap();
        }
        let info = CommitInfo {
            size: kept.len() as u64,
            sha256_hex: "a".repeat(64),
            md5_hex: None,
        };
        write.commit(info).await.unwrap();
        assert_eq!(std::fs::read(root.path().join("mixed.bin")).unwrap(), kept);
    }
}
