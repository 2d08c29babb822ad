//! The SQL job store on SQLite and on PostgreSQL (127.0.0.1:5432).

use ferry_adapters::checkpoint::CheckpointFiles;
use ferry_adapters::job_store::SqlJobStore;
use ferry_domain::TransferId;
use ferry_domain::ports::CheckpointStorePort;
use ferry_tests::{checkpoint_conformance, job_store_conformance};

pub use ferry_tests::pg::PgDatabase;

#[tokio::test]
async fn sqlite_job_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
    let store = SqlJobStore::connect(&url).await.unwrap();
    job_store_conformance::run(&store, "t").await;
    checkpoint_conformance::run(&store, "t").await;
    checkpoint_conformance::fenced(&store, "t").await;
    job_store_conformance::retention(&store, "t").await;
    job_store_conformance::owner_loads(&store, "t").await;
    // Reopening migrates nothing twice and sees the same data.
    store.close().await;
    let again = SqlJobStore::connect(&url).await.unwrap();
    assert!(!again.unfinished().await.unwrap().is_empty());
}

#[tokio::test]
async fn postgres_job_store_passes_the_conformance_suite() {
    let db = PgDatabase::create().await;
    let store = SqlJobStore::connect(&db.url).await.unwrap();
    job_store_conformance::run(&store, "t").await;
    checkpoint_conformance::run(&store, "t").await;
    checkpoint_conformance::fenced(&store, "t").await;
    job_store_conformance::retention(&store, "t").await;
    job_store_conformance::owner_loads(&store, "t").await;
    store.close().await;
    let again = SqlJobStore::connect(&db.url).await.unwrap();
    assert!(!again.unfinished().await.unwrap().is_empty());
    again.close().await;
}

use ferry_domain::ports::JobStorePort;

#[tokio::test]
async fn state_files_pass_the_checkpoint_suite_and_survive_a_torn_save() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointFiles::open(dir.path().join("state")).unwrap();
    checkpoint_conformance::run(&store, "t").await;
    // A save killed before its rename leaves a temp file of a dead process:
    // the next open removes it, and the checkpoint before it is intact.
    let torn = dir.path().join("state/t-x.tmp.4000000000");
    std::fs::write(&torn, b"{\"version\":1,").unwrap();
    let again = CheckpointFiles::open(dir.path().join("state")).unwrap();
    assert!(!torn.exists());
    assert!(again.list().await.unwrap().is_empty());
    // A damaged file is reported as corrupt, not misread.
    std::fs::write(dir.path().join("state/t-y.json"), b"{\"version\":1,").unwrap();
    let id = TransferId::parse("t-y").unwrap();
    checkpoint_conformance::assert_corrupt(again.load(&id).await);
    assert!(again.list().await.unwrap()[0].1.is_err());
}
