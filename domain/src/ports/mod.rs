//! The ports: what the application needs from the outside world (driven
//! ports) and what it offers to it (driving ports). Each port has its own
//! error enum with the business cases plus one `Unexpected` carrying the
//! source, and a `class()` that says whether a retry can help.

pub mod checkpoint;
pub mod clock;
pub mod download;
pub mod events;
pub mod export;
pub mod job_store;
pub mod memory;
pub mod process;
pub mod progress;
pub mod queue;
pub mod storage;
pub mod storage_resolver;
pub mod transfer;
pub mod workflow;

pub use checkpoint::{CheckpointError, CheckpointStorePort, ListedCheckpoint};
pub use clock::Clock;
pub use download::{
    Download, DownloadError, DownloadRequest, HttpDownloadPort, SourceMeta, Validator,
};
pub use events::{JobEvent, JobEventKind, JobEventsPort};
pub use export::{ExportPoll, ExportProviderError, ExportProviderPort, ManifestEntry};
pub use job_store::{
    FileRunContext, IdempotencyKey, InvalidIdempotencyKey, JobFilter, JobHead, JobPage, JobRecord,
    JobStoreError, JobStorePort, JobTask, JobUpdate, JobWrite, Keyed, OpenTaskBatch, OpenTasks,
    OwnerLoad, TaskFilter,
};
pub use memory::{MemoryBudgetPort, MemoryGaugePort, MemoryReservation};
pub use process::{
    LengthProblem, ProcessFileCommand, ProcessFileError, ProcessFilePort, ProcessFileResult,
    StartGate,
};
pub use progress::{NoProgress, ProgressPort};
pub use queue::{
    ClusterNote, InvalidNodeId, Leadership, NodeId, TaskHandlerPort, TaskQueueError, TaskQueuePort,
    TaskRef,
};
pub use storage::{
    CommitInfo, FileStoragePort, ObjectMeta, StagedWrite, StorageError, StoredObject,
    SuspendOnDrop, WriteRequest,
};
pub use storage_resolver::StorageResolverPort;
pub use transfer::{
    AttemptObserver, AttemptRefused, AttemptSlot, TransferError, TransferFactoryPort, TransferPort,
    Unobserved,
};
pub use workflow::{CallbackError, CallbackOutcome, CallbackSent, WorkflowCallbackPort};
