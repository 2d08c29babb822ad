//! ferry's domain: the pure core.
//!
//! Value objects that are valid by construction ([`SourceUrl`], [`ObjectKey`],
//! [`Checksum`], [`ByteSize`]), the ports the application drives
//! ([`ports`]) and the error classification every adapter maps into
//! ([`ErrorClass`]).
//!
//! Architecture invariant: nothing here performs I/O or names an adapter
//! technology (no tokio I/O, aws-sdk, hyper, reqwest or sqlx types).

pub mod attributes;
pub mod checkpoint;
pub mod checksum;
pub mod destination;
pub mod egress;
pub mod error;
pub mod export;
pub mod headers;
pub mod job;
pub mod key;
pub mod naming;
pub mod ports;
pub mod pressure;
pub mod retry;
pub mod scope;
pub mod size;
pub mod source;
pub mod stream;

#[cfg(test)]
mod proptests;

pub use attributes::{
    Encryption, InvalidAttribute, InvalidAttributes, ObjectAttributes, RequestedAttributes,
};
pub use checkpoint::{
    Checkpoint, HashState, InvalidCheckpoint, InvalidTransferId, SourceIdentity, StagedState,
    TransferId,
};
pub use checksum::{Checksum, ChecksumAlgorithm, InvalidChecksum};
pub use destination::{CopyTarget, Destination, InvalidCopyTarget, InvalidDestination, S3Url};
pub use egress::{AddressClass, AllowEntry, DeniedAddress, EgressPolicy, InvalidAllowEntry};
pub use error::{ErrorClass, ErrorCode};
pub use export::{Export, ExportProgress, ExportSpec, InvalidPollPolicy, PollPolicy};
pub use headers::{InvalidHeader, RequestedHeaders, SourceHeader, SourceHeaders};
pub use job::{
    FileSpec, FileTask, IfExists, InvalidJobId, Job, JobId, JobOptions, JobStatus, JobSummary,
    TaskFailure, TaskStatus, TransitionError,
};
pub use key::{InvalidKey, ObjectKey};
pub use naming::{NameFrom, NameSource};
pub use pressure::{
    AdmissionCaps, PressureController, PressureInputs, PressureLevel, PressureScore,
};
pub use retry::RetryPolicy;
pub use scope::{DestinationScope, InvalidScope, WriteScopes};
pub use size::{ByteSize, InvalidByteSize};
pub use source::{InvalidSource, SourceScheme, SourceUrl};
pub use stream::ByteStream;
