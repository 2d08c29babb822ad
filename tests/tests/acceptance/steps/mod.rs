//! One module per domain concept.
pub mod checkpoints;
mod checksums;
mod exports;
mod invariants;
pub mod jobs;
mod sources;
mod storage;
mod transfers;
mod workflow;
