//! One module per domain concept.
mod checksums;
mod exports;
mod invariants;
pub mod jobs;
mod sources;
mod storage;
mod transfers;
mod workflow;
