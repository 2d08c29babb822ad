//! ferry's adapters: the outside world behind the domain's ports.
//!
//! - [`http::PooledHttpClient`]: `HttpDownloadPort` over hyper (through
//!   reqwest), with a per-host connection limit, retries and stall detection.
//! - [`local_file::LocalFileSource`]: `HttpDownloadPort` for `file://`.
//! - [`stdio`]: `-` as a source (standard input) and a destination
//!   (standard output), for `ferry copy`.
//! - [`source_router::SourceRouter`]: picks a reader by scheme.
//! - [`filesystem::FilesystemStorage`]: `FileStoragePort` on a directory.
//! - [`export_provider::HttpExportProvider`]: `ExportProviderPort` over HTTP+JSON.
//! - [`cluster`]: cluster mode on PostgreSQL: `TaskQueuePort` over
//!   apalis-postgres, the reconciler's advisory lock, the event feed.
//! - [`system`]: the open-file limit raised at start.
//! - [`wire`]: the wire format (API, event streams, webhook) as serde DTOs
//!   with OpenAPI schemas.
//!
//! Architecture invariant: adapter error types never cross the port; every
//! failure is mapped to the port's error enum here, keeping its class.

pub mod aws;
pub mod checkpoint;
pub mod cluster;
pub mod egress;
pub mod error_text;
pub mod events;
pub mod export_provider;
pub mod filesystem;
pub mod http;
pub mod job_store;
mod killpoint;
pub mod local_file;
pub mod memory;
pub mod metrics;
pub mod s3;
pub mod sfn;
pub mod source_router;
pub mod stdio;
pub mod storage_resolver;
pub mod system;
pub mod webhook;
pub mod wire;

pub use egress::SourceGuard;
pub use filesystem::FilesystemStorage;
pub use http::{HttpClientConfig, MinRate, PooledHttpClient};
pub use local_file::LocalFileSource;
pub use source_router::SourceRouter;
