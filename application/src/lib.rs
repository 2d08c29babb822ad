//! ferry's use cases and the stream transforms they are built from.
//!
//! Architecture invariant: this crate depends only on `ferry-domain` (and
//! pure libraries: hashing, futures). It never names an adapter technology.

pub mod backpressure;
pub mod checkpointing;
pub mod chunking;
pub mod hashing;
pub mod jobs;
pub mod killpoint;
pub mod process_file;
pub mod size_guard;
pub mod transfer;

#[cfg(test)]
mod proptests;

pub use backpressure::{Admission, Backpressure, BackpressureConfig, PressureReport};
pub use chunking::{Rechunker, chunk_size_for};
pub use hashing::{HashState, InvalidHashState, StreamHasher};
pub use process_file::{ProcessFile, ProcessFileConfig};
pub use size_guard::SizeGuard;
pub use transfer::{Transfer, TransferFactory};
