//! One module per domain concept.
mod checksums;
pub mod jobs;
mod sources;
mod storage;
mod transfers;
