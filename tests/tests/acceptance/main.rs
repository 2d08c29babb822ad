//! Acceptance tests (cucumber). Scenarios live in `features/`; the World
//! wires the real use cases to real adapters.
//!
//! Two passes: every scenario on the embedded adapters (SQLite, a
//! directory, the test origin over loopback), then the scenarios tagged
//! `@garage-postgres` again on PostgreSQL (a throwaway database on
//! 127.0.0.1:5432) and Garage (S3). `FERRY_ACCEPTANCE=embedded` runs only
//! the first pass (for a machine without those servers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod steps;
mod world;

use std::sync::atomic::Ordering;

use cucumber::World as _;
use cucumber::writer::Stats as _;

use crate::steps::jobs::SHARED_BACKEND;
use crate::world::FerryWorld;

/// The tag of scenarios that also run on PostgreSQL + Garage.
const SHARED_TAG: &str = "garage-postgres";

#[tokio::main]
async fn main() {
    let features = concat!(env!("CARGO_MANIFEST_DIR"), "/../features");
    let embedded = FerryWorld::cucumber().fail_on_skipped().run(features).await;
    let mut failed = embedded.execution_has_failed();

    if std::env::var("FERRY_ACCEPTANCE").as_deref() != Ok("embedded") {
        println!("\n== The @{SHARED_TAG} scenarios again, on PostgreSQL + Garage ==\n");
        SHARED_BACKEND.store(true, Ordering::SeqCst);
        // Each scenario has its own PostgreSQL database and pool: bound how
        // many run at once to stay well under the server's connection limit.
        let shared = FerryWorld::cucumber()
            .max_concurrent_scenarios(6)
            .fail_on_skipped()
            .filter_run(features, |feature, _rule, scenario| {
                feature
                    .tags
                    .iter()
                    .chain(&scenario.tags)
                    .any(|t| t == SHARED_TAG)
            })
            .await;
        assert!(
            shared.scenarios_stats().passed > 0 || shared.execution_has_failed(),
            "no @{SHARED_TAG} scenario ran"
        );
        failed |= shared.execution_has_failed();
    }
    if failed {
        eprintln!("acceptance tests failed");
        std::process::exit(1);
    }
}
