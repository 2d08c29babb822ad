//! Integration tests over real sockets and real files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod http_client;
mod job_store;
mod jobs;
mod orphans;
mod pipeline;
mod pipeline_s3;
mod resume;
mod storage_fs;
mod storage_s3;
mod task_queue;
