//! Acceptance tests (cucumber). Scenarios live in `features/`; the World
//! wires the real ProcessFile use case to real adapters (the test origin
//! over loopback, the filesystem storage in a temp dir).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod steps;
mod world;

use cucumber::World as _;

use crate::world::FerryWorld;

#[tokio::main]
async fn main() {
    let features = concat!(env!("CARGO_MANIFEST_DIR"), "/../features");
    FerryWorld::cucumber()
        .fail_on_skipped()
        .run_and_exit(features)
        .await;
}
