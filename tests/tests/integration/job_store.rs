//! The SQL job store on SQLite and on PostgreSQL (127.0.0.1:5432).

use ferry_adapters::job_store::SqlJobStore;
use ferry_tests::job_store_conformance;

pub use ferry_tests::pg::PgDatabase;

#[tokio::test]
async fn sqlite_job_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
    let store = SqlJobStore::connect(&url).await.unwrap();
    job_store_conformance::run(&store, "t").await;
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
    store.close().await;
    let again = SqlJobStore::connect(&db.url).await.unwrap();
    assert!(!again.unfinished().await.unwrap().is_empty());
    again.close().await;
}

use ferry_domain::ports::JobStorePort;
