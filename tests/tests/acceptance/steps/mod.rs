//! One module per domain concept.
mod checksums;
mod sources;
mod storage;
mod transfers;
