//! The SQL job store on SQLite and on PostgreSQL (127.0.0.1:5432).

use ferry_adapters::job_store::SqlJobStore;
use ferry_tests::job_store_conformance;

/// A throwaway PostgreSQL database, dropped when the test ends.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        let admin = std::env::var("FERRY_TEST_PG_ADMIN_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("ferry_test_{:016x}", rand::random::<u64>());
        psql(&admin, &format!("CREATE DATABASE {name}"));
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or(admin.clone());
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin = std::env::var("FERRY_TEST_PG_ADMIN_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        psql(
            &admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(url: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

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
