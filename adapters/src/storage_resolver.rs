//! Opens the storage for a destination: a job's directory under the
//! server's files root, a directory named on the command line (`ferry
//! copy`), standard output (`-`), or an S3 bucket and prefix (one S3 client, created on first use
//! and shared). The one place storages are constructed.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::OnceCell;

use ferry_domain::Destination;
use ferry_domain::ports::{FileStoragePort, StorageError, StorageResolverPort};

use crate::filesystem::FilesystemStorage;
use crate::s3::{S3Service, S3Settings, S3Storage, S3StorageConfig};
use crate::stdio::StdoutStorage;

/// Resolves destinations for the job runner.
#[derive(Debug)]
pub struct DefaultStorageResolver {
    files_root: PathBuf,
    s3_settings: S3Settings,
    s3_config: S3StorageConfig,
    s3: OnceCell<S3Service>,
    checkpoint_bytes: u64,
    /// For `Local` destinations: sweep stale temp files left by killed
    /// processes in the directory, except these (checkpointed ones).
    sweep_keep: Option<HashSet<PathBuf>>,
    /// `-`: one standard output per process.
    stdout: StdoutStorage,
    /// Clients for buckets that said they live in another region.
    regional: tokio::sync::Mutex<std::collections::HashMap<String, S3Service>>,
}

impl DefaultStorageResolver {
    pub fn new(files_root: PathBuf, s3_settings: S3Settings, s3_config: S3StorageConfig) -> Self {
        Self {
            files_root,
            s3_settings,
            s3_config,
            s3: OnceCell::new(),
            checkpoint_bytes: crate::filesystem::DEFAULT_CHECKPOINT_BYTES,
            sweep_keep: None,
            stdout: StdoutStorage::new(),
            regional: tokio::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Opening a `Local` destination first removes stale temp files in its
    /// directory, except `keep` (`ferry copy`'s startup sweep).
    #[must_use]
    pub fn with_local_sweep(mut self, keep: HashSet<PathBuf>) -> Self {
        self.sweep_keep = Some(keep);
        self
    }

    fn directory(&self, root: PathBuf) -> Result<FilesystemStorage, StorageError> {
        Ok(FilesystemStorage::new(root)?.with_checkpoint_interval(
            crate::filesystem::DEFAULT_CHECKPOINT_EVERY,
            self.checkpoint_bytes,
        ))
    }

    /// A client for `region`, where `bucket` answered it lives (one per
    /// region, kept): the redirect is followed once, and said at debug
    /// level.
    async fn in_region(&self, bucket: &str, region: &str) -> Result<S3Service, StorageError> {
        tracing::debug!(
            bucket,
            region,
            "the bucket is in another region; using that region"
        );
        let mut regional = self.regional.lock().await;
        let service = match regional.get(region) {
            Some(s) => s.clone(),
            None => {
                let settings = S3Settings {
                    region: Some(region.to_owned()),
                    ..self.s3_settings.clone()
                };
                let s = S3Service::connect(&settings).await;
                regional.insert(region.to_owned(), s.clone());
                s
            }
        };
        drop(regional);
        match service.check_bucket(bucket).await? {
            None => Ok(service),
            Some(again) => Err(StorageError::InvalidDestination {
                location: format!("s3://{bucket}"),
                reason: format!(
                    "the bucket was said to be in region {region}, then in {again}; pass --region"
                ),
            }),
        }
    }

    /// Directory writes checkpoint at least `bytes` apart (0: every 5
    /// chunks).
    #[must_use]
    pub fn with_checkpoint_bytes(mut self, bytes: u64) -> Self {
        self.checkpoint_bytes = bytes;
        self
    }
}

#[async_trait]
impl StorageResolverPort for DefaultStorageResolver {
    async fn resolve(
        &self,
        destination: &Destination,
    ) -> Result<Arc<dyn FileStoragePort>, StorageError> {
        match destination {
            Destination::Directory { prefix } => {
                let mut root = self.files_root.clone();
                for segment in prefix.split('/').filter(|s| !s.is_empty()) {
                    root.push(segment);
                }
                Ok(Arc::new(self.directory(root)?))
            }
            Destination::Local { path } => {
                let storage = self.directory(PathBuf::from(path))?;
                if let Some(keep) = &self.sweep_keep {
                    storage.remove_stale_temp_files_in_root(keep.clone()).await;
                }
                Ok(Arc::new(storage))
            }
            Destination::Stdout => Ok(Arc::new(self.stdout.clone())),
            Destination::S3 { bucket, prefix } => {
                let service = self
                    .s3
                    .get_or_init(|| S3Service::connect(&self.s3_settings))
                    .await
                    .clone();
                let service = match service.check_bucket(bucket).await? {
                    None => service,
                    Some(region) => self.in_region(bucket, &region).await?,
                };
                Ok(Arc::new(S3Storage::new(
                    service,
                    bucket.clone(),
                    prefix,
                    self.s3_config.clone(),
                )))
            }
        }
    }

    /// The files root exists (or can be created), is a directory whose mode
    /// allows writing, and a probe file can really be written and removed
    /// there (mode bits say nothing of a read-only mount, a full disk or,
    /// for a non-root user, a directory owned by someone else).
    async fn ready(&self) -> Result<(), StorageError> {
        let root = self.files_root.clone();
        let location = root.display().to_string();
        let io = |e: std::io::Error| StorageError::Unavailable {
            location: location.clone(),
            reason: e.to_string(),
            exhausted: false,
        };
        tokio::fs::create_dir_all(&root).await.map_err(io)?;
        let meta = tokio::fs::metadata(&root).await.map_err(io)?;
        if !meta.is_dir() || meta.permissions().readonly() {
            return Err(StorageError::PermissionDenied {
                location: location.clone(),
                reason: "not a writable directory".into(),
            });
        }
        let probe = root.join(format!(
            ".ferry-ready-probe.{}.{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let written = tokio::fs::write(&probe, b"ready").await;
        let _ = tokio::fs::remove_file(&probe).await;
        written.map_err(|e| StorageError::PermissionDenied {
            location: location.clone(),
            reason: format!("a probe file cannot be written: {e}"),
        })
    }
}
