use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cucumber::World;

use ferry_adapters::{FilesystemStorage, LocalFileSource, SourceRouter};
use ferry_application::{ProcessFile, ProcessFileConfig};
use ferry_domain::ports::{ProcessFileError, ProcessFileResult};
use ferry_domain::{ByteSize, Checksum};
use ferry_tests::origin::Origin;

/// State shared by the steps of one scenario.
#[derive(Debug, World)]
#[world(init = Self::new)]
pub struct FerryWorld {
    pub origin: Origin,
    pub dir: tempfile::TempDir,
    pub files: HashMap<String, Vec<u8>>,
    pub expected: Vec<Checksum>,
    pub max_size: ByteSize,
    pub outcome: Option<Result<ProcessFileResult, ProcessFileError>>,
    /// Set by the jobs steps.
    pub jobs: Option<crate::steps::jobs::JobWorld>,
    /// A job entity on its own (domain invariants).
    pub job: Option<ferry_domain::Job>,
    /// Set by the checkpoint steps.
    pub checkpoints: Option<crate::steps::checkpoints::CheckpointWorld>,
    /// Where a flaky source breaks its first response.
    pub broke_at: Option<u64>,
}

impl FerryWorld {
    async fn new() -> Self {
        Self {
            origin: Origin::start().await.expect("origin starts"),
            dir: tempfile::tempdir().expect("temp dir"),
            files: HashMap::new(),
            expected: Vec::new(),
            max_size: ferry_domain::ports::process::DEFAULT_MAX_SIZE,
            outcome: None,
            jobs: None,
            job: None,
            checkpoints: None,
            broke_at: None,
        }
    }

    /// The use case wired to the real adapters for this scenario.
    pub fn process_file(&self) -> ProcessFile {
        let http = ferry_tests::test_http_client(Duration::from_secs(2));
        let router = SourceRouter::new(Arc::new(http), Some(Arc::new(LocalFileSource::new())));
        let storage = FilesystemStorage::new(self.dir.path()).expect("storage");
        ProcessFile::new(
            Arc::new(router),
            Arc::new(storage),
            ProcessFileConfig::default(),
        )
    }

    pub fn file(&self, name: &str) -> &[u8] {
        self.files
            .get(name)
            .unwrap_or_else(|| panic!("no source file named {name} in this scenario"))
    }
}
