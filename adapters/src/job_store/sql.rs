//! The SQL job store. Placeholders are `$1, $2, …` in order of first use
//! (portable between SQLite and PostgreSQL); integers are BIGINT; JSON is
//! TEXT.

use std::sync::Once;

use async_trait::async_trait;
use futures::TryStreamExt;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use tracing::info;

use ferry_domain::ports::{
    CallbackOutcome, CheckpointError, CheckpointStorePort, ClusterNote, FileRunContext,
    IdempotencyKey, JobEvent, JobFilter, JobHead, JobPage, JobRecord, JobStoreError, JobStorePort,
    JobTask, JobUpdate, JobWrite, Keyed, ListedCheckpoint, NodeId, OpenTaskBatch, OpenTasks,
    OwnerLoad, TaskFilter,
};
use ferry_domain::{
    Checkpoint, Checksum, Destination, ErrorClass, ErrorCode, FileSpec, FileTask, Job, JobId,
    JobOptions, JobStatus, JobSummary, ObjectAttributes, ObjectKey, RequestedHeaders,
    SourceHeaders, SourceUrl, TaskFailure, TaskStatus, TransferId,
};

use super::codec;
use crate::checkpoint::codec as checkpoint_codec;
use crate::killpoint::kill_point;

/// Schema versions, applied in order, each once.
const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE IF NOT EXISTS ferry_jobs (
            id TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            destination TEXT NOT NULL,
            task_token TEXT,
            owner TEXT,
            failure TEXT,
            callback TEXT,
            created_at_ms BIGINT NOT NULL,
            updated_at_ms BIGINT NOT NULL,
            next_seq BIGINT NOT NULL DEFAULT 0)",
            "CREATE INDEX IF NOT EXISTS ferry_jobs_created ON ferry_jobs (created_at_ms, id)",
            "CREATE INDEX IF NOT EXISTS ferry_jobs_status ON ferry_jobs (status)",
            "CREATE TABLE IF NOT EXISTS ferry_tasks (
            job_id TEXT NOT NULL REFERENCES ferry_jobs (id) ON DELETE CASCADE,
            idx BIGINT NOT NULL,
            source TEXT NOT NULL,
            dest_key TEXT NOT NULL,
            expected_size BIGINT,
            expected_sha256 TEXT,
            expected_md5 TEXT,
            status TEXT NOT NULL,
            attempts BIGINT NOT NULL,
            bytes_done BIGINT NOT NULL,
            sha256 TEXT,
            md5 TEXT,
            error_class TEXT,
            error_code TEXT,
            error_message TEXT,
            PRIMARY KEY (job_id, idx))",
            "CREATE TABLE IF NOT EXISTS ferry_events (
            job_id TEXT NOT NULL REFERENCES ferry_jobs (id) ON DELETE CASCADE,
            seq BIGINT NOT NULL,
            at_ms BIGINT NOT NULL,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (job_id, seq))",
        ],
    ),
    // Jobs that start an export at a provider (JSON, see codec::export_json).
    (2, &["ALTER TABLE ferry_jobs ADD COLUMN export TEXT"]),
    // Checkpoints of job tasks (JSON, see checkpoint::codec); not tied to a
    // job row by a foreign key, so that cleanup can find orphans.
    (
        3,
        &["CREATE TABLE IF NOT EXISTS ferry_checkpoints (
            transfer_id TEXT PRIMARY KEY,
            body TEXT NOT NULL,
            saved_at_ms BIGINT NOT NULL)"],
    ),
    // A file's request headers (JSON pairs, secret): set while the job
    // runs, cleared when it ends (see save_job).
    (4, &["ALTER TABLE ferry_tasks ADD COLUMN headers TEXT"]),
    // A job's options (JSON, see codec::options_json; NULL: the defaults)
    // and a file's effective attributes (codec::attributes_json; NULL: none).
    (
        5,
        &[
            "ALTER TABLE ferry_jobs ADD COLUMN options TEXT",
            "ALTER TABLE ferry_tasks ADD COLUMN attributes TEXT",
        ],
    ),
    // Idempotency keys of submissions, per owner ('' for none), kept for
    // their time to live (see create_keyed).
    (
        6,
        &["CREATE TABLE IF NOT EXISTS ferry_idempotency (
            owner TEXT NOT NULL,
            idem_key TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            job_id TEXT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            PRIMARY KEY (owner, idem_key))"],
    ),
    // Cluster mode: which node holds a task, under which lease epoch.
    (
        7,
        &[
            "ALTER TABLE ferry_tasks ADD COLUMN lease_owner TEXT",
            "ALTER TABLE ferry_tasks ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0",
        ],
    ),
    // A job's first unfinished tasks (its window in the task queue) read
    // without scanning its finished ones.
    (
        8,
        &[
            "CREATE INDEX IF NOT EXISTS ferry_tasks_open ON ferry_tasks (job_id, idx)
           WHERE status IN ('queued', 'running')",
        ],
    ),
    // Ended jobs by age, for retention.
    (
        9,
        &[
            "CREATE INDEX IF NOT EXISTS ferry_jobs_ended ON ferry_jobs (updated_at_ms)
           WHERE status IN ('completed', 'completed_with_errors', 'failed', 'cancelled')",
        ],
    ),
    // An owner's unfinished jobs, for its quotas.
    (
        10,
        &["CREATE INDEX IF NOT EXISTS ferry_jobs_owner ON ferry_jobs (owner, status)"],
    ),
    // The file an event is about (NULL: a job event, or stored before
    // this version), so that an ended job's progress events can be
    // compacted to the last of each file.
    (11, &["ALTER TABLE ferry_events ADD COLUMN task_idx BIGINT"]),
];

/// The terminal job statuses, as stored (see `JobStatus::is_terminal`).
macro_rules! ended {
    () => {
        "('completed', 'completed_with_errors', 'failed', 'cancelled')"
    };
}

/// Columns read, named (never `*`: a statement prepared before a schema
/// change must not see a different column list).
macro_rules! job_columns {
    () => {
        "id, status, destination, task_token, owner, failure, callback, \
         created_at_ms, updated_at_ms, next_seq, export, options"
    };
}
/// A task's state written into its row ($1-$8 by `bind_state`, then the
/// job id and index); a fenced write adds its conditions after it.
macro_rules! task_state_update {
    () => {
        "UPDATE ferry_tasks SET status = $1, attempts = $2, bytes_done = $3, sha256 = $4, md5 = $5,
            error_class = $6, error_code = $7, error_message = $8
         WHERE job_id = $9 AND idx = $10"
    };
}
macro_rules! task_columns {
    () => {
        "idx, source, dest_key, expected_size, expected_sha256, expected_md5, status, \
         attempts, bytes_done, sha256, md5, error_class, error_code, error_message, headers, \
         attributes"
    };
}

/// A job row with its tasks' counts and bytes summed: `$head` selects
/// the job rows (named `page`, with `job_columns!()`), in the order
/// wanted; each row gets `n_total`, `n_queued`, … `n_bytes`.
macro_rules! heads {
    ($($page:tt)*) => {
        concat!(
            "WITH page AS (", $($page)*, "),
             sums AS (SELECT job_id, COUNT(*) AS n_total,
               SUM(CASE WHEN status = 'queued' THEN 1 ELSE 0 END) AS n_queued,
               SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END) AS n_running,
               SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS n_succeeded,
               SUM(CASE WHEN status = 'skipped' THEN 1 ELSE 0 END) AS n_skipped,
               SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS n_failed,
               SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END) AS n_cancelled,
               CAST(SUM(bytes_done) AS BIGINT) AS n_bytes
               FROM ferry_tasks WHERE job_id IN (SELECT id FROM page) GROUP BY job_id)
             SELECT page.*, sums.n_total, sums.n_queued, sums.n_running, sums.n_succeeded,
               sums.n_skipped, sums.n_failed, sums.n_cancelled, sums.n_bytes
             FROM page LEFT JOIN sums ON sums.job_id = page.id
             ORDER BY page.created_at_ms DESC, page.id DESC"
        )
    };
}

/// Job store on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlJobStore {
    pool: AnyPool,
    /// Cluster mode (PostgreSQL): every stored event is also announced
    /// with `pg_notify` on [`EVENTS_CHANNEL`], from this node, in the
    /// event's own transaction (so delivered only once committed, in
    /// commit order).
    notify_as: Option<NodeId>,
}

/// The PostgreSQL channel events are announced on in cluster mode.
pub const EVENTS_CHANNEL: &str = "ferry_events";

fn unavailable(e: sqlx::Error) -> JobStoreError {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => JobStoreError::Unavailable(e.to_string()),
        other => JobStoreError::Unexpected(Box::new(other)),
    }
}

fn corrupt(what: String) -> JobStoreError {
    JobStoreError::Unexpected(format!("stored job data is not valid: {what}").into())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl SqlJobStore {
    /// Connects (`sqlite://PATH?mode=rwc`, `postgres://…`) and migrates.
    pub async fn connect(url: &str) -> Result<Self, JobStoreError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 10 })
            // A SQLite connection is a file in this process: nothing to
            // find dead before use, and the ping is one more hand-over to
            // its worker thread per statement outside a transaction. A
            // PostgreSQL connection is checked (the server may have gone).
            .test_before_acquire(!sqlite)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if sqlite {
                        for pragma in [
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA busy_timeout = 10000",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(|e| JobStoreError::Unavailable(format!("cannot open the job store: {e}")))?;
        let store = Self {
            pool,
            notify_as: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Cluster mode: announces every event this store commits, as `node`
    /// (see [`EVENTS_CHANNEL`]).
    #[must_use]
    pub fn announcing_as(mut self, node: NodeId) -> Self {
        self.notify_as = Some(node);
        self
    }

    async fn migrate(&self) -> Result<(), JobStoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS ferry_schema (version BIGINT NOT NULL)")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        let current: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM ferry_schema")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?
            .try_get::<Option<i64>, _>("v")
            .map_err(unavailable)?;
        let current = current.unwrap_or(0);
        for (version, statements) in MIGRATIONS {
            if *version <= current {
                continue;
            }
            let mut tx = self.pool.begin().await.map_err(unavailable)?;
            for &statement in *statements {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            }
            sqlx::query("INSERT INTO ferry_schema (version) VALUES ($1)")
                .bind(*version)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            info!(version, "job store schema migrated");
        }
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A job's status alone (`None`: no such job).
    async fn job_status(&self, id: &JobId) -> Result<Option<JobStatus>, JobStoreError> {
        sqlx::query("SELECT status FROM ferry_jobs WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .as_ref()
            .map(status_of)
            .transpose()
    }

    async fn record_from_row(&self, row: &AnyRow) -> Result<JobRecord, JobStoreError> {
        let head = JobRow::read(row)?;
        // Every task, through the one paged read of a job's tasks.
        let all = TaskFilter {
            limit: u32::MAX,
            ..TaskFilter::default()
        };
        let tasks = self.tasks(&head.id, &all).await?;
        Ok(JobRecord {
            job: Job::restore(head.id, head.status, tasks, head.failure),
            destination: head.destination,
            options: head.options,
            task_token: head.task_token,
            owner: head.owner,
            created_at_ms: head.created_at_ms,
            updated_at_ms: head.updated_at_ms,
            callback: head.callback,
            export: head.export,
            last_event_seq: head.last_event_seq,
        })
    }
}

/// The fields of a job row (`job_columns!()`), shared by a record and a
/// head.
struct JobRow {
    id: JobId,
    status: JobStatus,
    failure: Option<String>,
    destination: Destination,
    options: JobOptions,
    task_token: Option<String>,
    owner: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
    callback: Option<CallbackOutcome>,
    export: Option<ferry_domain::Export>,
    last_event_seq: u64,
}

impl JobRow {
    fn read(row: &AnyRow) -> Result<Self, JobStoreError> {
        let get = |c: &str| row.try_get::<String, _>(c).map_err(unavailable);
        let opt = |c: &str| row.try_get::<Option<String>, _>(c).map_err(unavailable);
        let export = match opt("export")? {
            None => None,
            Some(text) => {
                let value: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
                Some(codec::export_from(&value).ok_or_else(|| corrupt("export".into()))?)
            }
        };
        Ok(Self {
            id: JobId::parse(&get("id")?).map_err(|e| corrupt(e.to_string()))?,
            status: status_of(row)?,
            failure: opt("failure")?,
            destination: destination_of(row)?,
            options: options_of(row)?,
            task_token: opt("task_token")?,
            owner: opt("owner")?,
            created_at_ms: row.try_get("created_at_ms").map_err(unavailable)?,
            updated_at_ms: row.try_get("updated_at_ms").map_err(unavailable)?,
            callback: opt("callback")?
                .map(|c| CallbackOutcome::parse(&c).ok_or_else(|| corrupt(c)))
                .transpose()?,
            export,
            last_event_seq: to_u64(row.try_get("next_seq").map_err(unavailable)?),
        })
    }
}

/// A row of [`heads!`]: the job and its tasks' sums (NULL: no tasks).
fn head_from_row(row: &AnyRow) -> Result<JobHead, JobStoreError> {
    let job = JobRow::read(row)?;
    let n = |c: &str| -> Result<u64, JobStoreError> {
        Ok(to_u64(
            row.try_get::<Option<i64>, _>(c)
                .map_err(unavailable)?
                .unwrap_or(0),
        ))
    };
    let count = |c: &str| -> Result<usize, JobStoreError> {
        usize::try_from(n(c)?).map_err(|e| corrupt(e.to_string()))
    };
    Ok(JobHead {
        summary: JobSummary {
            total: count("n_total")?,
            queued: count("n_queued")?,
            running: count("n_running")?,
            succeeded: count("n_succeeded")?,
            skipped: count("n_skipped")?,
            failed: count("n_failed")?,
            cancelled: count("n_cancelled")?,
            bytes_done: n("n_bytes")?,
        },
        id: job.id,
        status: job.status,
        failure: job.failure,
        destination: job.destination,
        options: job.options,
        has_task_token: job.task_token.is_some(),
        owner: job.owner,
        created_at_ms: job.created_at_ms,
        updated_at_ms: job.updated_at_ms,
        callback: job.callback,
        export: job.export,
        last_event_seq: job.last_event_seq,
    })
}

/// A job row's status.
fn status_of(row: &AnyRow) -> Result<JobStatus, JobStoreError> {
    job_status_in(row, "status")
}

/// A job status read from `column`.
fn job_status_in(row: &AnyRow, column: &str) -> Result<JobStatus, JobStoreError> {
    let raw: String = row.try_get(column).map_err(unavailable)?;
    JobStatus::parse(&raw).ok_or_else(|| corrupt(raw))
}

/// A job row's destination.
fn destination_of(row: &AnyRow) -> Result<Destination, JobStoreError> {
    let raw: String = row.try_get("destination").map_err(unavailable)?;
    Destination::parse(&raw).map_err(|e| corrupt(e.to_string()))
}

/// A job row's options (the defaults when none were stored).
fn options_of(row: &AnyRow) -> Result<JobOptions, JobStoreError> {
    let stored: Option<String> = row.try_get("options").map_err(unavailable)?;
    match stored {
        None => Ok(JobOptions::default()),
        Some(text) => {
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
            codec::options_from(&value).ok_or_else(|| corrupt("job options".into()))
        }
    }
}

/// What a file's run needs of its job, from a row with the job's
/// `owner`, `destination` and `options`.
fn run_context_of(row: &AnyRow) -> Result<FileRunContext, JobStoreError> {
    Ok(FileRunContext {
        owner: row.try_get("owner").map_err(unavailable)?,
        destination: destination_of(row)?,
        options: options_of(row)?,
    })
}

fn export_text(record: &JobRecord) -> Option<String> {
    record
        .export
        .as_ref()
        .map(|e| codec::export_json(e).to_string())
}

/// `e` with its URLs redacted (what an ended job keeps).
fn redacted_export(e: &ferry_domain::Export) -> ferry_domain::Export {
    let redact = |u: &SourceUrl| SourceUrl::parse(&u.redacted()).unwrap_or_else(|_| u.clone());
    let mut copy = e.clone();
    copy.spec.start_url = redact(&e.spec.start_url);
    copy.progress.status_url = e.progress.status_url.as_ref().map(redact);
    copy
}

/// A task's stored headers (JSON pairs).
fn headers_from(stored: Option<String>) -> Result<SourceHeaders, JobStoreError> {
    let Some(text) = stored else {
        return Ok(SourceHeaders::default());
    };
    let pairs: Vec<(String, String)> =
        serde_json::from_str(&text).map_err(|e| corrupt(format!("task headers: {e}")))?;
    RequestedHeaders(pairs)
        .validate()
        .map_err(|e| corrupt(format!("task headers: {e}")))
}

/// A task's stored attributes (JSON object).
fn attributes_from(stored: Option<String>) -> Result<ObjectAttributes, JobStoreError> {
    let Some(text) = stored else {
        return Ok(ObjectAttributes::default());
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| corrupt(format!("task attributes: {e}")))?;
    codec::attributes_from(&value).ok_or_else(|| corrupt("task attributes".into()))
}

fn options_text(record: &JobRecord) -> Option<String> {
    (record.options != JobOptions::default())
        .then(|| codec::options_json(&record.options).to_string())
}

fn task_from_row(row: &AnyRow) -> Result<FileTask, JobStoreError> {
    let get = |c: &str| row.try_get::<String, _>(c).map_err(unavailable);
    let opt = |c: &str| row.try_get::<Option<String>, _>(c).map_err(unavailable);
    let int = |c: &str| row.try_get::<i64, _>(c).map_err(unavailable);
    let index = usize::try_from(int("idx")?).map_err(|e| corrupt(e.to_string()))?;
    let source = SourceUrl::parse(&get("source")?).map_err(|e| corrupt(e.to_string()))?;
    let key = ObjectKey::parse(&get("dest_key")?).map_err(|e| corrupt(e.to_string()))?;
    let mut expected = Vec::new();
    if let Some(h) = opt("expected_sha256")? {
        expected.push(Checksum::sha256(&h).map_err(|e| corrupt(e.to_string()))?);
    }
    if let Some(h) = opt("expected_md5")? {
        expected.push(Checksum::md5(&h).map_err(|e| corrupt(e.to_string()))?);
    }
    let status_raw = get("status")?;
    let status = TaskStatus::parse(&status_raw).ok_or_else(|| corrupt(status_raw))?;
    let failure = match (
        opt("error_class")?,
        opt("error_code")?,
        opt("error_message")?,
    ) {
        (Some(class), Some(code), Some(message)) => Some(TaskFailure {
            class: ErrorClass::parse(&class).unwrap_or(ErrorClass::Internal),
            code: ErrorCode::parse(&code).ok_or_else(|| corrupt(code))?,
            message,
        }),
        _ => None,
    };
    let sha256 = opt("sha256")?
        .map(|h| Checksum::sha256(&h))
        .transpose()
        .map_err(|e| corrupt(e.to_string()))?;
    let md5 = opt("md5")?
        .map(|h| Checksum::md5(&h))
        .transpose()
        .map_err(|e| corrupt(e.to_string()))?;
    Ok(FileTask::restore(
        index,
        FileSpec {
            source,
            key,
            expected_size: row
                .try_get::<Option<i64>, _>("expected_size")
                .map_err(unavailable)?
                .map(to_u64),
            expected,
            headers: headers_from(opt("headers")?)?,
            attributes: attributes_from(opt("attributes")?)?,
        },
        status,
        u32::try_from(int("attempts")?).unwrap_or(u32::MAX),
        to_u64(int("bytes_done")?),
        sha256,
        md5,
        failure,
    ))
}

/// Inserts a job's tasks, [`ROWS_PER_STATEMENT`] rows a statement (a
/// submission of thousands of files is a few statements, not one per
/// file); a task whose row exists has its state updated instead.
async fn upsert_tasks(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &JobId,
    tasks: &[FileTask],
) -> Result<(), JobStoreError> {
    let sqlite = is_sqlite(tx);
    let chunks = statement_chunks(sqlite, tasks, 17, |t| {
        t.spec.source.expose().len() + t.spec.key.as_str().len() + 256
    });
    for chunk in chunks {
        let mut sql = String::from(
            "INSERT INTO ferry_tasks (job_id, idx, source, dest_key, expected_size, expected_sha256,
                expected_md5, status, attempts, bytes_done, sha256, md5, error_class, error_code,
                error_message, headers, attributes) VALUES ",
        );
        push_placeholders(&mut sql, sqlite, chunk.len(), 17);
        sql.push_str(
            " ON CONFLICT (job_id, idx) DO UPDATE SET status = excluded.status,
               attempts = excluded.attempts, bytes_done = excluded.bytes_done,
               sha256 = excluded.sha256, md5 = excluded.md5, error_class = excluded.error_class,
               error_code = excluded.error_code, error_message = excluded.error_message",
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(chunk.len() <= 16);
        for task in chunk {
            query = bind_task(query, id, task);
        }
        query.execute(&mut **tx).await.map_err(unavailable)?;
    }
    Ok(())
}

/// Binds a task's whole row, in [`upsert_tasks`]' column order.
fn bind_task<'q>(query: AnyQuery<'q>, id: &'q JobId, t: &'q FileTask) -> AnyQuery<'q> {
    let expected = |alg| {
        t.spec
            .expected
            .iter()
            .find(|c| c.algorithm() == alg)
            .map(|c| c.hex().to_owned())
    };
    let query = query
        .bind(id.as_str())
        .bind(i64::try_from(t.index).unwrap_or(i64::MAX))
        .bind(t.spec.source.expose())
        .bind(t.spec.key.as_str())
        .bind(t.spec.expected_size.map(to_i64))
        .bind(expected(ferry_domain::ChecksumAlgorithm::Sha256))
        .bind(expected(ferry_domain::ChecksumAlgorithm::Md5));
    bind_state(query, t)
        .bind(
            (!t.spec.headers.is_empty() && !t.status().is_terminal())
                .then(|| serde_json::to_string(&t.spec.headers.to_pairs()).ok())
                .flatten(),
        )
        .bind(
            (!t.spec.attributes.is_default())
                .then(|| codec::attributes_json(&t.spec.attributes).to_string()),
        )
}

/// The `lease_epoch` a claim returned or a lease read found, if any row.
fn lease_epoch_of(row: Option<AnyRow>) -> Result<Option<u64>, JobStoreError> {
    row.map(|r| r.try_get::<i64, _>("lease_epoch").map(to_u64))
        .transpose()
        .map_err(unavailable)
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds a task's state columns, in order: status, attempts, bytes_done,
/// sha256, md5, error_class, error_code, error_message (the one mapping of
/// a task's state to its columns, for the inserts and the updates).
fn bind_state<'q>(query: AnyQuery<'q>, t: &FileTask) -> AnyQuery<'q> {
    let failure = t.failure();
    query
        .bind(t.status().as_str())
        .bind(i64::from(t.attempts()))
        .bind(to_i64(t.bytes_done()))
        .bind(t.sha256().map(|c| c.hex().to_owned()))
        .bind(t.md5().map(|c| c.hex().to_owned()))
        .bind(failure.map(|f| f.class.as_str().to_owned()))
        .bind(failure.map(|f| f.code.as_str().to_owned()))
        .bind(failure.map(|f| f.message.clone()))
}

/// Rows written by one statement of [`update_task_states`],
/// [`insert_events`] or [`upsert_tasks`] at most (17 columns: 2,176 bound
/// parameters, well under SQLite's 32,766 and PostgreSQL's 65,535).
const ROWS_PER_STATEMENT: usize = 128;

/// Tasks' states (each task once) in their stored rows, a statement per
/// [`ROWS_PER_STATEMENT`]; a task whose row is not there is inserted.
async fn update_task_states(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    states: &[(&JobId, &FileTask)],
) -> Result<(), JobStoreError> {
    let sqlite = is_sqlite(tx);
    for chunk in statement_chunks(sqlite, states, 10, |_| 160) {
        if let [(job, task)] = chunk {
            update_or_insert_task(tx, job, task).await?;
            continue;
        }
        // UPDATE … FROM (VALUES …): SQLite 3.33+ and PostgreSQL; a VALUES
        // list's columns are column1, column2, … in both.
        let mut sql = String::from(
            "UPDATE ferry_tasks SET status = v.column3, attempts = v.column4,
               bytes_done = v.column5, sha256 = v.column6, md5 = v.column7,
               error_class = v.column8, error_code = v.column9, error_message = v.column10
             FROM (VALUES ",
        );
        push_placeholders(&mut sql, sqlite, chunk.len(), 10);
        sql.push_str(") AS v WHERE ferry_tasks.job_id = v.column1 AND ferry_tasks.idx = v.column2");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(chunk.len() <= 16);
        for (job, task) in chunk {
            query = bind_state(
                query
                    .bind(job.as_str())
                    .bind(i64::try_from(task.index).unwrap_or(i64::MAX)),
                task,
            );
        }
        let done = query.execute(&mut **tx).await.map_err(unavailable)?;
        if usize::try_from(done.rows_affected()).unwrap_or(usize::MAX) < chunk.len() {
            // A task not stored yet (never so for a job's own tasks): each
            // alone, inserted where missing (the updates are idempotent).
            for (job, task) in chunk {
                update_or_insert_task(tx, job, task).await?;
            }
        }
    }
    Ok(())
}

/// What `save_job` writes: the job's row and, once it has ended, the
/// secrets it no longer needs dropped (its export's URLs redacted, its
/// task token once the callback is settled, its files' headers and full
/// URLs; sources keep their redacted form). With `from`, only if the
/// stored status is still `from` (`StatusChanged` otherwise).
async fn update_job_row(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    job: &JobUpdate,
    from: Option<JobStatus>,
) -> Result<(), JobStoreError> {
    let id = &job.id;
    let ended = job.status.is_terminal();
    let export = job.export.as_ref().map(|e| {
        let kept = if ended { redacted_export(e) } else { e.clone() };
        codec::export_json(&kept).to_string()
    });
    let query = match from {
        None => sqlx::query(
            "UPDATE ferry_jobs SET status = $1, failure = $2, callback = $3, updated_at_ms = $4,
                export = $5,
                task_token = CASE WHEN $6 = 1 THEN NULL ELSE task_token END
             WHERE id = $7",
        ),
        Some(_) => sqlx::query(
            "UPDATE ferry_jobs SET status = $1, failure = $2, callback = $3, updated_at_ms = $4,
                export = $5,
                task_token = CASE WHEN $6 = 1 THEN NULL ELSE task_token END
             WHERE id = $7 AND status = $8",
        ),
    };
    let query = query
        .bind(job.status.as_str())
        .bind(job.failure.clone())
        .bind(job.callback.as_ref().map(ToString::to_string))
        .bind(job.updated_at_ms)
        .bind(export)
        .bind(i64::from(ended && job.callback.is_some()))
        .bind(id.as_str());
    let query = match from {
        Some(from) => query.bind(from.as_str()),
        None => query,
    };
    let done = query.execute(&mut **tx).await.map_err(unavailable)?;
    if done.rows_affected() == 0 {
        return Err(match from {
            Some(expected) => JobStoreError::StatusChanged {
                job: id.clone(),
                expected,
            },
            None => JobStoreError::NotFound(id.clone()),
        });
    }
    if ended {
        forget_task_secrets(tx, id).await?;
    }
    Ok(())
}

/// Sources read per page when an ended job's are redacted.
const REDACT_PAGE: i64 = 512;

/// An ended job's files need their headers and full URLs no longer:
/// headers go, and each source with a secret keeps its redacted form. The
/// sources that may hold one (userinfo, a query or a fragment) are read
/// a page at a time and rewritten a statement per [`ROWS_PER_STATEMENT`]
/// such files, so a job of any size ends in bounded memory.
async fn forget_task_secrets(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &JobId,
) -> Result<(), JobStoreError> {
    let id = id.as_str();
    sqlx::query("UPDATE ferry_tasks SET headers = NULL WHERE job_id = $1 AND headers IS NOT NULL")
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    let sqlite = is_sqlite(tx);
    let mut after = -1_i64;
    loop {
        let rows = sqlx::query(
            "SELECT idx, source FROM ferry_tasks
             WHERE job_id = $1 AND idx > $2
               AND (source LIKE '%?%' OR source LIKE '%@%' OR source LIKE '%#%')
             ORDER BY idx LIMIT $3",
        )
        .bind(id)
        .bind(after)
        .bind(REDACT_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(unavailable)?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.try_get("idx").map_err(unavailable)?;
        let full = rows.len() == usize::try_from(REDACT_PAGE).unwrap_or(usize::MAX);
        let mut redacted: Vec<(i64, String)> = Vec::new();
        for row in &rows {
            let stored: String = row.try_get("source").map_err(unavailable)?;
            let source = SourceUrl::parse(&stored).map_err(|e| corrupt(e.to_string()))?;
            let kept = source.redacted();
            if kept != stored {
                redacted.push((row.try_get("idx").map_err(unavailable)?, kept));
            }
        }
        for chunk in statement_chunks(sqlite, &redacted, 3, |(_, source)| source.len()) {
            let mut sql = String::from("UPDATE ferry_tasks SET source = v.column3 FROM (VALUES ");
            push_placeholders(&mut sql, sqlite, chunk.len(), 3);
            sql.push_str(
                ") AS v WHERE ferry_tasks.job_id = v.column1 AND ferry_tasks.idx = v.column2",
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for (index, source) in chunk {
                query = query.bind(id).bind(*index).bind(source.as_str());
            }
            query.execute(&mut **tx).await.map_err(unavailable)?;
        }
        if !full {
            return Ok(());
        }
    }
}

/// Stores events under their sequence numbers (from [`allocate_seqs`]), a
/// statement per [`ROWS_PER_STATEMENT`].
async fn insert_events(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    events: &[(&JobEvent, u64)],
) -> Result<(), JobStoreError> {
    let sqlite = is_sqlite(tx);
    for chunk in statement_chunks(sqlite, events, 6, |_| 320) {
        let mut sql = String::from(
            "INSERT INTO ferry_events (job_id, seq, at_ms, kind, payload, task_idx) VALUES ",
        );
        push_placeholders(&mut sql, sqlite, chunk.len(), 6);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(chunk.len() <= 16);
        for (event, seq) in chunk {
            query = bind_event(query, event, *seq);
        }
        query.execute(&mut **tx).await.map_err(unavailable)?;
    }
    Ok(())
}

/// An event's row, numbered `seq`: job id, seq, time, kind, payload, the
/// file it is about.
fn bind_event<'q>(query: AnyQuery<'q>, event: &'q JobEvent, seq: u64) -> AnyQuery<'q> {
    query
        .bind(event.job_id.as_str())
        .bind(to_i64(seq))
        .bind(event.at_ms)
        .bind(event.kind.name())
        .bind(codec::kind_payload(&event.kind).to_string())
        .bind(
            event
                .kind
                .file_index()
                .map(|i| i64::try_from(i).unwrap_or(i64::MAX)),
        )
}

/// `rows` cut into the row lists of multi-row statements: at most
/// [`ROWS_PER_STATEMENT`] each, and on PostgreSQL, at most
/// [`PG_STATEMENT_BYTES`] of SQL and bound values (estimated: `row_bytes`
/// of a row's values, plus each parameter's placeholder, type and length).
/// sqlx 0.9.0 does not set TCP_NODELAY (transact-rs/sqlx#4335, fixed
/// upstream after 0.9.0), so a statement whose message spans two TLS
/// records waits for the server's delayed ACK: measured, 44 ms twice per
/// 128-row statement (a 20,000-file submission took 14.7 s; 1.5 s with
/// `sslmode=disable`). A message within one record (16 KiB) goes at once.
fn statement_chunks<T>(
    sqlite: bool,
    rows: &[T],
    columns: usize,
    row_bytes: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    if sqlite {
        return rows.chunks(ROWS_PER_STATEMENT).collect();
    }
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let size = row_bytes(row) + columns * 12;
        if i > start && (bytes + size > PG_STATEMENT_BYTES || i - start == ROWS_PER_STATEMENT) {
            chunks.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < rows.len() {
        chunks.push(&rows[start..]);
    }
    chunks
}

/// What one multi-row statement sends to PostgreSQL at most, in SQL and
/// in bound values (see [`statement_chunks`]).
const PG_STATEMENT_BYTES: usize = 12 * 1024;

fn is_sqlite(conn: &sqlx::AnyConnection) -> bool {
    conn.backend_name() == <sqlx::Sqlite as sqlx::Database>::NAME
}

/// `rows` tuples of `columns` placeholders for the database (`sqlite` or
/// PostgreSQL), bound in order: `($1, $2), ($3, $4)` on PostgreSQL,
/// `(?, ?), (?, ?)` on SQLite.
/// SQLite keeps a numbered or named parameter (`$1`, `?1`) in a list that
/// it scans to parse each one and again to bind each one (sqlx asks every
/// parameter's name), which is quadratic in a statement's parameters: a
/// 20,000-file submission in statements of 128 rows took 4.6-5.0 s with
/// `$N` and 2.0 s with `?N` (`perf`: 59 % in `sqlite3VListNumToName`),
/// against 1.1 s one row a statement. A plain `?` is not in that list.
fn push_placeholders(sql: &mut String, sqlite: bool, rows: usize, columns: usize) {
    use std::fmt::Write as _;
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            let sep = if column == 0 { "" } else { ", " };
            if sqlite {
                let _ = write!(sql, "{sep}?");
            } else {
                let _ = write!(sql, "{sep}${}", row * columns + column + 1);
            }
        }
        sql.push(')');
    }
}

/// A task's state in its stored row, or the task inserted if it has none.
async fn update_or_insert_task(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    job: &JobId,
    task: &FileTask,
) -> Result<(), JobStoreError> {
    if update_task_state(tx, job, task).await? == 0 {
        upsert_tasks(tx, job, std::slice::from_ref(task)).await?;
    }
    Ok(())
}

/// A task's state (status, attempts, bytes, digests, failure) in its
/// stored row; how many rows that was (0: no such task stored).
async fn update_task_state(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &JobId,
    t: &FileTask,
) -> Result<u64, JobStoreError> {
    let done = bind_state(sqlx::query(task_state_update!()), t)
        .bind(id.as_str())
        .bind(i64::try_from(t.index).unwrap_or(i64::MAX))
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    Ok(done.rows_affected())
}

/// A task's state, written only under lease `epoch` and while the task is
/// not over: `LeaseLost` otherwise.
async fn update_task_fenced(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &JobId,
    t: &FileTask,
    epoch: u64,
) -> Result<(), JobStoreError> {
    let done = bind_state(
        sqlx::query(concat!(
            task_state_update!(),
            " AND lease_epoch = $11
            AND status NOT IN ('succeeded', 'failed', 'cancelled', 'skipped')"
        )),
        t,
    )
    .bind(id.as_str())
    .bind(i64::try_from(t.index).unwrap_or(i64::MAX))
    .bind(to_i64(epoch))
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    if done.rows_affected() == 0 {
        return Err(JobStoreError::LeaseLost {
            job: id.clone(),
            index: t.index,
        });
    }
    Ok(())
}

/// Takes the next `count` sequence numbers of job `id` in `tx` (a per-job
/// counter row: jobs never wait for each other's numbers); the first.
async fn allocate_seqs(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &JobId,
    count: u64,
) -> Result<u64, JobStoreError> {
    let row = sqlx::query(
        "UPDATE ferry_jobs SET next_seq = next_seq + $2 WHERE id = $1 RETURNING next_seq",
    )
    .bind(id.as_str())
    .bind(to_i64(count))
    .fetch_optional(&mut **tx)
    .await
    .map_err(unavailable)?
    .ok_or_else(|| JobStoreError::NotFound(id.clone()))?;
    let last: i64 = row.try_get("next_seq").map_err(unavailable)?;
    Ok((to_u64(last) + 1).saturating_sub(count))
}

/// Stores an event in `tx` under `seq` (allocated by [`allocate_seqs`]),
/// and announces it to the cluster as `node`.
async fn insert_announced_event(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    event: &JobEvent,
    seq: u64,
    node: &NodeId,
) -> Result<u64, JobStoreError> {
    bind_event(
        sqlx::query(
            "INSERT INTO ferry_events (job_id, seq, at_ms, kind, payload, task_idx)
         VALUES ($1, $2, $3, $4, $5, $6)",
        ),
        event,
        seq,
    )
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    let note = ClusterNote {
        node: node.clone(),
        job: event.job_id.clone(),
        seq,
        kind: event.kind.name().to_owned(),
    };
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(EVENTS_CHANNEL)
        .bind(note.to_payload())
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    Ok(seq)
}

/// Inserts a job row and its tasks in `tx`.
async fn insert_job(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    record: &JobRecord,
) -> Result<(), JobStoreError> {
    let inserted = sqlx::query(
        "INSERT INTO ferry_jobs (id, status, destination, task_token, owner, failure, callback,
            created_at_ms, updated_at_ms, next_seq, export, options)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11)",
    )
    .bind(record.job.id.as_str())
    .bind(record.job.status().as_str())
    .bind(record.destination.to_string())
    .bind(record.task_token.clone())
    .bind(record.owner.clone())
    .bind(record.job.failure().map(str::to_owned))
    .bind(record.callback.as_ref().map(ToString::to_string))
    .bind(record.created_at_ms)
    .bind(record.updated_at_ms)
    .bind(export_text(record))
    .bind(options_text(record))
    .execute(&mut **tx)
    .await;
    if let Err(e) = inserted {
        return Err(if is_duplicate(&e) {
            JobStoreError::AlreadyExists(record.job.id.clone())
        } else {
            unavailable(e)
        });
    }
    upsert_tasks(tx, &record.job.id, record.job.tasks()).await
}

fn is_duplicate(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// The job an unexpired record of `key` names, and its fingerprint.
async fn keyed_job(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    key: &IdempotencyKey,
) -> Result<Option<(String, String)>, JobStoreError> {
    let row = sqlx::query(
        "SELECT job_id, fingerprint FROM ferry_idempotency WHERE owner = $1 AND idem_key = $2",
    )
    .bind(key.owner().unwrap_or_default())
    .bind(key.key())
    .fetch_optional(&mut **tx)
    .await
    .map_err(unavailable)?;
    row.map(|r| {
        Ok((
            r.try_get::<String, _>("job_id").map_err(unavailable)?,
            r.try_get::<String, _>("fingerprint").map_err(unavailable)?,
        ))
    })
    .transpose()
}

fn existing(job: &str, fingerprint: &str, key: &IdempotencyKey) -> Result<Keyed, JobStoreError> {
    Ok(Keyed::Existing {
        job: JobId::parse(job).map_err(|e| corrupt(e.to_string()))?,
        same_request: fingerprint == key.fingerprint(),
    })
}

#[async_trait]
impl JobStorePort for SqlJobStore {
    async fn create(&self, record: &JobRecord) -> Result<(), JobStoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        insert_job(&mut tx, record).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn create_keyed(
        &self,
        record: &JobRecord,
        key: &IdempotencyKey,
        ttl_ms: i64,
    ) -> Result<Keyed, JobStoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query(
            "DELETE FROM ferry_idempotency WHERE owner = $1 AND idem_key = $2 AND created_at_ms < $3",
        )
        .bind(key.owner().unwrap_or_default())
        .bind(key.key())
        .bind(record.created_at_ms.saturating_sub(ttl_ms))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        if let Some((job, fingerprint)) = keyed_job(&mut tx, key).await? {
            return existing(&job, &fingerprint, key);
        }
        let claimed = sqlx::query(
            "INSERT INTO ferry_idempotency (owner, idem_key, fingerprint, job_id, created_at_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(key.owner().unwrap_or_default())
        .bind(key.key())
        .bind(key.fingerprint())
        .bind(record.job.id.as_str())
        .bind(record.created_at_ms)
        .execute(&mut *tx)
        .await;
        match claimed {
            Ok(_) => {}
            Err(e) if is_duplicate(&e) => {
                // Another request took the key first: its job stands.
                drop(tx);
                let mut again = self.pool.begin().await.map_err(unavailable)?;
                let found = keyed_job(&mut again, key).await?;
                return match found {
                    Some((job, fingerprint)) => existing(&job, &fingerprint, key),
                    None => Err(JobStoreError::Unavailable(
                        "the idempotency key was taken and released; retry".into(),
                    )),
                };
            }
            Err(e) => return Err(unavailable(e)),
        }
        insert_job(&mut tx, record).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Keyed::Created)
    }

    async fn get(&self, id: &JobId) -> Result<Option<JobRecord>, JobStoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM ferry_jobs WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        match row {
            Some(row) => Ok(Some(self.record_from_row(&row).await?)),
            None => Ok(None),
        }
    }

    async fn task(&self, id: &JobId, index: usize) -> Result<Option<JobTask>, JobStoreError> {
        // One round trip: the task joined with what it needs of its job
        // (a file's run reads this once; the job's status is renamed, the
        // task has its own).
        let row = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            ", j.job_status, j.destination, j.options, j.owner
             FROM ferry_tasks JOIN (SELECT id AS job_ref, status AS job_status, destination,
               options, owner FROM ferry_jobs WHERE id = $1) j ON j.job_ref = ferry_tasks.job_id
             WHERE ferry_tasks.job_id = $1 AND ferry_tasks.idx = $2"
        ))
        .bind(id.as_str())
        .bind(i64::try_from(index).unwrap_or(i64::MAX))
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(JobTask {
            status: job_status_in(&row, "job_status")?,
            job: run_context_of(&row)?,
            task: task_from_row(&row)?,
        }))
    }

    async fn open_task_batch(
        &self,
        id: &JobId,
        limit: usize,
    ) -> Result<Option<OpenTaskBatch>, JobStoreError> {
        let row = sqlx::query(
            "SELECT status AS job_status, destination, options, owner FROM ferry_jobs WHERE id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut batch = OpenTaskBatch {
            status: job_status_in(&row, "job_status")?,
            job: run_context_of(&row)?,
            tasks: Vec::new(),
        };
        if limit == 0 {
            return Ok(Some(batch));
        }
        // The limit (the same on every call) written into the statement,
        // not bound: see `open_tasks`. The rows are decoded as they come.
        let sql = format!(
            concat!(
                "SELECT ",
                task_columns!(),
                " FROM ferry_tasks WHERE job_id = $1 AND status IN ('queued', 'running')
                 ORDER BY idx LIMIT {}"
            ),
            i64::try_from(limit).unwrap_or(i64::MAX)
        );
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch(&self.pool);
        while let Some(row) = rows.try_next().await.map_err(unavailable)? {
            batch.tasks.push(task_from_row(&row)?);
        }
        Ok(Some(batch))
    }

    async fn open_tasks(
        &self,
        id: &JobId,
        limit: usize,
    ) -> Result<Option<OpenTasks>, JobStoreError> {
        if limit == 0 {
            return Ok(self.job_status(id).await?.map(|status| OpenTasks {
                status,
                open: Vec::new(),
            }));
        }
        // One round trip and one row: the job's status, and its first
        // open tasks' indexes as one text (`3,4,7`; NULL when none is
        // open). Rows come one by one from SQLite's worker thread, each a
        // hand-over to this task: one row instead of a window's worth.
        // The limit (the window, the same on every call) is written into
        // the statement, not bound: SQLite 3.51 reads a bound LIMIT while
        // it plans, so each new binding re-prepares the statement (3 % of
        // the server's CPU on a job of small files, perf).
        let sql = format!(
            "SELECT status AS job_status,
               (SELECT string_agg(CAST(o.idx AS TEXT), ',') FROM
                 (SELECT idx FROM ferry_tasks WHERE job_id = $1
                    AND status IN ('queued', 'running') ORDER BY idx LIMIT {}) o) AS open
             FROM ferry_jobs WHERE id = $1",
            i64::try_from(limit).unwrap_or(i64::MAX)
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let listed: Option<String> = row.try_get("open").map_err(unavailable)?;
        let mut open = listed
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter(|idx| !idx.is_empty())
            .map(|idx| {
                idx.parse::<usize>()
                    .map_err(|e| corrupt(format!("open task index `{idx}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // string_agg keeps the subquery's order in practice; the window is
        // sorted all the same.
        open.sort_unstable();
        Ok(Some(OpenTasks {
            status: job_status_in(&row, "job_status")?,
            open,
        }))
    }

    async fn head(&self, id: &JobId) -> Result<Option<JobHead>, JobStoreError> {
        let row = sqlx::query(heads!(
            "SELECT ",
            job_columns!(),
            " FROM ferry_jobs WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(head_from_row).transpose()
    }

    async fn list(&self, filter: &JobFilter) -> Result<JobPage, JobStoreError> {
        let limit = i64::from(filter.limit.clamp(1, 1000));
        let (cursor_ms, cursor_id) = match &filter.cursor {
            None => (i64::MAX, String::new()),
            Some(c) => {
                let (ms, id) = c.split_once('.').ok_or(JobStoreError::BadCursor)?;
                (
                    ms.parse().map_err(|_| JobStoreError::BadCursor)?,
                    id.to_owned(),
                )
            }
        };
        let status = filter.status.map(|s| s.as_str().to_owned());
        let rows = sqlx::query(heads!(
            "SELECT ",
            job_columns!(),
            " FROM ferry_jobs
             WHERE (created_at_ms < $1 OR (created_at_ms = $1 AND id < $2 AND $2 <> ''))
               AND ($3 IS NULL OR status = $3)
               AND ($5 IS NULL OR owner = $5)
             ORDER BY created_at_ms DESC, id DESC
             LIMIT $4"
        ))
        .bind(cursor_ms)
        .bind(cursor_id)
        .bind(status)
        .bind(limit + 1)
        .bind(filter.owner.clone())
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
        let jobs = rows
            .iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(head_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if more {
            jobs.last().map(|h| format!("{}.{}", h.created_at_ms, h.id))
        } else {
            None
        };
        Ok(JobPage { jobs, next_cursor })
    }

    async fn tasks(&self, id: &JobId, filter: &TaskFilter) -> Result<Vec<FileTask>, JobStoreError> {
        let after = filter
            .after
            .map_or(-1, |i| i64::try_from(i).unwrap_or(i64::MAX));
        let mut rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM ferry_tasks WHERE job_id = $1 AND idx > $2 AND ($3 IS NULL OR status = $3)
             ORDER BY idx LIMIT $4"
        ))
        .bind(id.as_str())
        .bind(after)
        .bind(filter.status.map(|s| s.as_str().to_owned()))
        .bind(i64::from(filter.limit.max(1)))
        .fetch(&self.pool);
        // Each row decoded as it comes: a job's whole list (20,000 tasks)
        // never sits in memory twice, as driver rows and as tasks.
        let mut tasks = Vec::new();
        while let Some(row) = rows.try_next().await.map_err(unavailable)? {
            tasks.push(task_from_row(&row)?);
        }
        Ok(tasks)
    }

    async fn save_job(&self, job: &JobUpdate) -> Result<(), JobStoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        update_job_row(&mut tx, job, None).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn task_token(&self, id: &JobId) -> Result<Option<String>, JobStoreError> {
        let row = sqlx::query("SELECT task_token FROM ferry_jobs WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        match row {
            Some(row) => row.try_get("task_token").map_err(unavailable),
            None => Ok(None),
        }
    }

    async fn replace_tasks(&self, id: &JobId, tasks: &[FileTask]) -> Result<(), JobStoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("DELETE FROM ferry_tasks WHERE job_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        upsert_tasks(&mut tx, id, tasks).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn write_batch(&self, writes: &[JobWrite]) -> Result<Vec<Option<u64>>, JobStoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // Each job's sequence numbers for the batch, taken at once (one
        // counter update per job, not per event), in job id order (the
        // same lock order for every writer of a cluster).
        let mut counts: std::collections::BTreeMap<&str, (&JobId, u64)> =
            std::collections::BTreeMap::new();
        for write in writes {
            if let JobWrite::Event(event) = write {
                counts
                    .entry(event.job_id.as_str())
                    .or_insert((&event.job_id, 0))
                    .1 += 1;
            }
        }
        let mut next: std::collections::HashMap<&str, u64> =
            std::collections::HashMap::with_capacity(counts.len());
        for (key, (id, count)) in &counts {
            next.insert(key, allocate_seqs(&mut tx, id, *count).await?);
        }
        // Unfenced task states are written together, the latest per task
        // (a batch may hold a fast file's start and its end); events too,
        // unless each is announced to a cluster. A few statements per
        // batch, not two per file: each statement is a hand-over to the
        // connection's thread (SQLite) or a round trip (PostgreSQL).
        let mut states: Vec<(&JobId, &FileTask)> = Vec::new();
        let mut latest: std::collections::HashMap<(&str, usize), usize> =
            std::collections::HashMap::new();
        let mut events: Vec<(&JobEvent, u64)> = Vec::new();
        let mut seqs = Vec::with_capacity(writes.len());
        for write in writes {
            seqs.push(match write {
                JobWrite::Task {
                    job,
                    task,
                    fence: None,
                } => {
                    match latest.entry((job.as_str(), task.index)) {
                        std::collections::hash_map::Entry::Occupied(at) => {
                            states[*at.get()] = (job, task);
                        }
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            slot.insert(states.len());
                            states.push((job, task));
                        }
                    }
                    None
                }
                JobWrite::Task {
                    job,
                    task,
                    fence: Some(epoch),
                } => {
                    update_task_fenced(&mut tx, job, task, *epoch).await?;
                    None
                }
                JobWrite::Job { job, from } => {
                    update_job_row(&mut tx, job, *from).await?;
                    None
                }
                JobWrite::Event(event) => {
                    let slot = next.get_mut(event.job_id.as_str()).ok_or_else(|| {
                        JobStoreError::Unexpected("an event without its sequence number".into())
                    })?;
                    let seq = *slot;
                    *slot += 1;
                    match &self.notify_as {
                        Some(node) => {
                            Some(insert_announced_event(&mut tx, event, seq, node).await?)
                        }
                        None => {
                            events.push((event, seq));
                            Some(seq)
                        }
                    }
                }
            });
        }
        update_task_states(&mut tx, &states).await?;
        insert_events(&mut tx, &events).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(seqs)
    }

    async fn events_after(
        &self,
        id: &JobId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JobEvent>, JobStoreError> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, kind, payload FROM ferry_events WHERE job_id = $1 AND seq > $2
             ORDER BY seq LIMIT $3",
        )
        .bind(id.as_str())
        .bind(to_i64(after))
        .bind(i64::from(limit.max(1)))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind").map_err(unavailable)?;
                let payload: String = row.try_get("payload").map_err(unavailable)?;
                let value: serde_json::Value =
                    serde_json::from_str(&payload).map_err(|e| corrupt(e.to_string()))?;
                Ok(JobEvent {
                    job_id: id.clone(),
                    seq: to_u64(row.try_get("seq").map_err(unavailable)?),
                    at_ms: row.try_get("at_ms").map_err(unavailable)?,
                    kind: codec::kind_from(&kind, &value).ok_or_else(|| corrupt(kind.clone()))?,
                })
            })
            .collect()
    }

    async fn claim_task(
        &self,
        id: &JobId,
        index: usize,
        owner: &str,
    ) -> Result<Option<u64>, JobStoreError> {
        let row = sqlx::query(
            "UPDATE ferry_tasks SET lease_owner = $1, lease_epoch = lease_epoch + 1
             WHERE job_id = $2 AND idx = $3 AND status IN ('queued', 'running')
             RETURNING lease_epoch",
        )
        .bind(owner)
        .bind(id.as_str())
        .bind(i64::try_from(index).unwrap_or(i64::MAX))
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        lease_epoch_of(row)
    }

    async fn task_lease(&self, id: &JobId, index: usize) -> Result<Option<u64>, JobStoreError> {
        let row = sqlx::query(
            "SELECT lease_epoch FROM ferry_tasks
             WHERE job_id = $1 AND idx = $2 AND status IN ('queued', 'running')",
        )
        .bind(id.as_str())
        .bind(i64::try_from(index).unwrap_or(i64::MAX))
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        lease_epoch_of(row)
    }

    async fn unfinished(&self) -> Result<Vec<JobId>, JobStoreError> {
        let rows = sqlx::query(
            "SELECT id FROM ferry_jobs WHERE status IN ('pending', 'exporting', 'downloading')
             ORDER BY created_at_ms",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        ids_of(&rows)
    }

    async fn owner_load(&self, owner: Option<String>) -> Result<OwnerLoad, JobStoreError> {
        macro_rules! load {
            ($owner:literal) => {
                (
                    concat!(
                        "SELECT COUNT(*) AS active,
                            COALESCE(SUM(CASE WHEN export IS NOT NULL
                                AND status IN ('pending', 'exporting') THEN 1 ELSE 0 END), 0) AS exports
                         FROM ferry_jobs
                         WHERE ",
                        $owner,
                        " AND status IN ('pending', 'exporting', 'downloading')"
                    ),
                    concat!(
                        "SELECT COUNT(*) AS open FROM ferry_jobs j JOIN ferry_tasks t ON t.job_id = j.id
                         WHERE j.",
                        $owner,
                        " AND j.status IN ('pending', 'exporting', 'downloading')
                           AND t.status IN ('queued', 'running')"
                    ),
                )
            };
        }
        // The (owner, status) index serves both.
        let (jobs, files) = match owner {
            Some(_) => load!("owner = $1"),
            None => load!("owner IS NULL"),
        };
        let (mut jobs, mut files) = (sqlx::query(jobs), sqlx::query(files));
        if let Some(owner) = owner {
            jobs = jobs.bind(owner.clone());
            files = files.bind(owner);
        }
        let jobs = jobs.fetch_one(&self.pool).await.map_err(unavailable)?;
        let files = files.fetch_one(&self.pool).await.map_err(unavailable)?;
        let count = |row: &AnyRow, column: &str| -> Result<u64, JobStoreError> {
            Ok(to_u64(row.try_get::<i64, _>(column).map_err(unavailable)?))
        };
        Ok(OwnerLoad {
            active_jobs: count(&jobs, "active")?,
            active_exports: count(&jobs, "exports")?,
            open_files: count(&files, "open")?,
        })
    }

    async fn ended_before(&self, before_ms: i64, limit: u32) -> Result<Vec<JobId>, JobStoreError> {
        let rows = sqlx::query(concat!(
            "SELECT id FROM ferry_jobs WHERE status IN ",
            ended!(),
            " AND updated_at_ms < $1 ORDER BY updated_at_ms LIMIT $2"
        ))
        .bind(before_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        ids_of(&rows)
    }

    async fn delete_ended(&self, id: &JobId) -> Result<bool, JobStoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // Only an ended job goes (one that is running, or gone, keeps
        // everything). Its tasks and events would go with its row (ON
        // DELETE CASCADE); they are deleted explicitly too, so that a
        // store opened without foreign keys leaves nothing behind.
        let checkpoints = sqlx::query(
            "DELETE FROM ferry_checkpoints WHERE transfer_id IN
               (SELECT 'job-' || job_id || '-' || CAST(idx AS TEXT) FROM ferry_tasks WHERE job_id = $1)",
        )
        .bind(id.as_str());
        let statements = [
            "DELETE FROM ferry_jobs WHERE id = $1",
            "DELETE FROM ferry_tasks WHERE job_id = $1",
            "DELETE FROM ferry_events WHERE job_id = $1",
            "DELETE FROM ferry_idempotency WHERE job_id = $1",
        ];
        let ended: Option<String> = sqlx::query(concat!(
            "SELECT id FROM ferry_jobs WHERE id = $1 AND status IN ",
            ended!()
        ))
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?
        .map(|r| r.try_get("id"))
        .transpose()
        .map_err(unavailable)?;
        if ended.is_none() {
            return Ok(false);
        }
        // Checkpoint rows are named after tasks: deleted before the tasks.
        checkpoints.execute(&mut *tx).await.map_err(unavailable)?;
        for statement in statements {
            sqlx::query(statement)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn compact_progress(&self, id: &JobId) -> Result<u64, JobStoreError> {
        let done = sqlx::query(concat!(
            "DELETE FROM ferry_events WHERE job_id = $1 AND kind = 'file_progress'
               AND task_idx IS NOT NULL
               AND seq NOT IN (SELECT MAX(seq) FROM ferry_events
                 WHERE job_id = $1 AND kind = 'file_progress' AND task_idx IS NOT NULL
                 GROUP BY task_idx)
               AND EXISTS (SELECT 1 FROM ferry_jobs WHERE id = $1 AND status IN ",
            ended!(),
            ")"
        ))
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected())
    }

    async fn ping(&self) -> Result<(), JobStoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// The `id` column of job rows.
fn ids_of(rows: &[AnyRow]) -> Result<Vec<JobId>, JobStoreError> {
    rows.iter()
        .map(|r| {
            let id: String = r.try_get("id").map_err(unavailable)?;
            JobId::parse(&id).map_err(|e| corrupt(e.to_string()))
        })
        .collect()
}

fn checkpoint_error(e: sqlx::Error) -> CheckpointError {
    match unavailable(e) {
        JobStoreError::Unavailable(reason) => CheckpointError::Unavailable(reason),
        other => CheckpointError::Unexpected(Box::new(other)),
    }
}

#[async_trait]
impl CheckpointStorePort for SqlJobStore {
    async fn load(&self, id: &TransferId) -> Result<Option<Checkpoint>, CheckpointError> {
        let row = sqlx::query("SELECT body FROM ferry_checkpoints WHERE transfer_id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(checkpoint_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let body: String = row.try_get("body").map_err(checkpoint_error)?;
        checkpoint_codec::from_json(&body)
            .map(Some)
            .map_err(|reason| CheckpointError::Corrupt {
                id: id.clone(),
                reason,
            })
    }

    async fn save(&self, id: &TransferId, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        // One statement in one transaction: a crash before the commit leaves
        // the previous checkpoint.
        let mut tx = self.pool.begin().await.map_err(checkpoint_error)?;
        sqlx::query(
            "INSERT INTO ferry_checkpoints (transfer_id, body, saved_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (transfer_id) DO UPDATE SET body = excluded.body, saved_at_ms = excluded.saved_at_ms",
        )
        .bind(id.as_str())
        .bind(checkpoint_codec::to_json(checkpoint))
        .bind(checkpoint.saved_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(checkpoint_error)?;
        kill_point("ferry-checkpoint-written", checkpoint.committed());
        tx.commit().await.map_err(checkpoint_error)
    }

    async fn save_fenced(
        &self,
        id: &TransferId,
        checkpoint: &Checkpoint,
        epoch: u64,
    ) -> Result<bool, CheckpointError> {
        let Some((job, index)) = id.task() else {
            return self.save(id, checkpoint).await.map(|()| true);
        };
        // Written only if the task is still under this lease, in the same
        // statement that checks it.
        let done = sqlx::query(
            "INSERT INTO ferry_checkpoints (transfer_id, body, saved_at_ms)
             SELECT $1, $2, $3 WHERE EXISTS (
                SELECT 1 FROM ferry_tasks WHERE job_id = $4 AND idx = $5 AND lease_epoch = $6
                  AND status IN ('queued', 'running'))
             ON CONFLICT (transfer_id) DO UPDATE SET body = excluded.body, saved_at_ms = excluded.saved_at_ms",
        )
        .bind(id.as_str())
        .bind(checkpoint_codec::to_json(checkpoint))
        .bind(checkpoint.saved_at_ms)
        .bind(job.as_str())
        .bind(i64::try_from(index).unwrap_or(i64::MAX))
        .bind(to_i64(epoch))
        .execute(&self.pool)
        .await
        .map_err(checkpoint_error)?;
        kill_point("ferry-checkpoint-written", checkpoint.committed());
        Ok(done.rows_affected() > 0)
    }

    async fn remove(&self, id: &TransferId) -> Result<(), CheckpointError> {
        sqlx::query("DELETE FROM ferry_checkpoints WHERE transfer_id = $1")
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(checkpoint_error)?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ListedCheckpoint>, CheckpointError> {
        let rows =
            sqlx::query("SELECT transfer_id, body FROM ferry_checkpoints ORDER BY transfer_id")
                .fetch_all(&self.pool)
                .await
                .map_err(checkpoint_error)?;
        let mut found = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("transfer_id").map_err(checkpoint_error)?;
            let body: String = row.try_get("body").map_err(checkpoint_error)?;
            let Ok(id) = TransferId::parse(&id) else {
                continue;
            };
            found.push((id, checkpoint_codec::from_json(&body)));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_cut_by_rows_on_sqlite_and_by_bytes_on_postgresql() {
        let rows: Vec<usize> = (0..300).collect();
        let sqlite = statement_chunks(true, &rows, 17, |_| 100_000);
        assert_eq!(
            sqlite.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [128, 128, 44]
        );
        // Rows of 1,000 bytes (plus 10 columns' overhead): 10 a statement.
        let sizes = |row: &usize| if *row == 150 { 50_000 } else { 1_000 };
        let pg = statement_chunks(false, &rows, 10, sizes);
        let flat: Vec<usize> = pg.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(flat, rows, "every row once, in order");
        for chunk in &pg {
            let bytes: usize = chunk.iter().map(|r| sizes(r) + 10 * 12).sum();
            assert!(
                bytes <= PG_STATEMENT_BYTES || chunk.len() == 1,
                "{} rows, {bytes} bytes",
                chunk.len()
            );
        }
        assert_eq!(pg[0].len(), 10);
        assert!(
            pg.iter().any(|c| c == &[150]),
            "a row over the budget goes alone"
        );
        // Small rows: the row cap still holds.
        let small = statement_chunks(false, &rows, 2, |_| 1);
        assert!(small.iter().all(|c| c.len() <= ROWS_PER_STATEMENT));
        assert_eq!(small.len(), 3);
    }
}
