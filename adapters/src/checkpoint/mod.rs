//! Checkpoint stores: state files for `ferry copy` ([`CheckpointFiles`]);
//! the job store ([`crate::job_store::SqlJobStore`]) keeps those of job
//! tasks. Both use one JSON form ([`codec`]).

pub mod codec;
mod files;

pub use files::CheckpointFiles;
