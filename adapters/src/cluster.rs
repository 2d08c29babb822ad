//! Cluster mode on PostgreSQL: the file-task queue (apalis-postgres: per
//! worker heartbeats, a dead worker's tasks re-enqueued by any live one),
//! the reconciler's lead (a session advisory lock) and the feed of events
//! other nodes committed (`LISTEN` on the job store's channel, through
//! sqlx's `PgListener`).

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{
    BackendExt, BoxDynError, Data, DeferredError, Strategy, TaskBuilder, WorkerBuilder,
    WorkerBuilderExt,
};
use apalis_postgres::{Config, PgPool, PostgresStorage};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::Acquire;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use ferry_domain::JobId;
use ferry_domain::ports::{
    ClusterNote, Leadership, NodeId, TaskHandlerPort, TaskQueueError, TaskQueuePort, TaskRef,
};

use crate::job_store::EVENTS_CHANNEL;

/// The apalis queue (its `job_type`) ferry's file tasks go through.
const QUEUE: &str = "ferry.file_tasks";
/// The advisory lock key the reconciler's leader holds ("ferry" in ASCII).
const LEAD_KEY: i64 = 0x0066_6572_7279;
/// The first half of a job phase's advisory lock key ("ferr"); the second
/// is `hashtext` of the job id.
const PHASE_KEY: i32 = 0x6665_7272;
/// How often an idle worker asks for tasks (new and re-enqueued ones).
const POLL: Duration = Duration::from_millis(250);
/// How often a worker tells the queue it is alive. apalis-postgres 1.0
/// also fetches again after an empty fetch only when its heartbeat wakes
/// it, so this bounds how long an idle node leaves a new or handed-over
/// task waiting (it was lease_timeout / 5: 6 s at a 30 s lease).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// A queued file task, as stored in the queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileTaskMessage {
    job: String,
    index: usize,
}

fn unavailable(e: impl std::fmt::Display) -> TaskQueueError {
    TaskQueueError::Unavailable(e.to_string())
}

/// The shared queue of file tasks, on PostgreSQL.
#[derive(Clone)]
pub struct PgTaskQueue {
    pool: PgPool,
    config: Config,
}

impl std::fmt::Debug for PgTaskQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTaskQueue")
            .field("lease_timeout", &self.config.orphaned_duration())
            .finish_non_exhaustive()
    }
}

impl PgTaskQueue {
    /// Connects and installs (migrates) the queue's schema. A worker whose
    /// heartbeat is older than `lease_timeout` is dead: its tasks go to
    /// other nodes (heartbeats every [`HEARTBEAT`]).
    pub async fn connect(url: &str, lease_timeout: Duration) -> Result<Self, TaskQueueError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(url)
            .await
            .map_err(|e| unavailable(format!("cannot connect to the queue's database: {e}")))?;
        PostgresStorage::setup(&pool)
            .await
            .map_err(|e| unavailable(format!("cannot install the queue's schema: {e}")))?;
        let heartbeat = HEARTBEAT;
        let missed = usize::try_from(lease_timeout.as_secs() / heartbeat.as_secs().max(1))
            .unwrap_or(5)
            .max(2);
        let config = Config::default()
            .queue(QUEUE)
            .batch_size(1)
            .heartbeat_interval(heartbeat)
            .missed_heartbeats(missed);
        Ok(Self { pool, config })
    }

    /// How long a silent worker keeps its tasks.
    pub fn lease_timeout(&self) -> Duration {
        self.config.orphaned_duration()
    }

    /// Runs this node's workers until `stop`: at most `concurrency` tasks
    /// at once, each handed to `handler`. A worker the queue stops (a
    /// failed heartbeat) is started again under a new name.
    pub async fn run_workers(
        &self,
        node: &NodeId,
        concurrency: usize,
        handler: Arc<dyn TaskHandlerPort>,
        stop: CancellationToken,
    ) {
        for generation in 1u64.. {
            let backend = PostgresStorage::<FileTaskMessage>::new(&self.pool)
                .with_config(self.config.clone())
                .poll_with_strategy(Strategy::new().interval(POLL));
            let worker = WorkerBuilder::new(format!("{node}.{generation}"))
                .backend(backend)
                .data(Handler {
                    port: handler.clone(),
                    stopping: stop.clone(),
                })
                .concurrency(concurrency.max(1))
                .build(handle);
            let stopping = stop.clone();
            let ended = worker
                .run_until(async move {
                    stopping.cancelled().await;
                    Ok::<(), std::io::Error>(())
                })
                .await;
            if stop.is_cancelled() {
                return;
            }
            match ended {
                Ok(()) => warn!(%node, "queue worker ended; starting it again"),
                Err(e) => warn!(%node, error = %e, "queue worker stopped; starting it again"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// The handler a worker hands deliveries to, and its node's stop.
#[derive(Clone)]
struct Handler {
    port: Arc<dyn TaskHandlerPort>,
    stopping: CancellationToken,
}

/// One delivery: the task to the handler, whose outcome is in the job
/// store. It runs as its own tokio task, so a worker's transfers use all
/// the runtime's threads.
///
/// A delivery that ends while its node stops (the node suspended its run
/// to hand it over) is acknowledged as deferred, which puts the task back
/// in the queue (`Pending`): it is then runnable by any node whatever the
/// order of this acknowledgement and the node's `release`. Acknowledged
/// as done, a handed-over task was seen left out of the queue (its row
/// `Done`; an idle node never took the file, about one cluster-suite run
/// in four on 2 cores) until the reconciler noticed: most likely the
/// release that followed ran on a pooled connection left inside a
/// transaction (see `release`; the mechanism is reproduced, its part in
/// those runs inferred) and was never committed. A task that did finish
/// just as its node stopped is delivered once more and ends at once (the
/// store says it is over).
async fn handle(message: FileTaskMessage, handler: Data<Handler>) -> Result<(), BoxDynError> {
    match JobId::parse(&message.job) {
        Ok(job) => {
            let Handler { port, stopping } = (*handler).clone();
            let task = TaskRef {
                job,
                index: message.index,
            };
            if let Err(e) = tokio::spawn(async move { port.run_task(task).await }).await {
                warn!(error = %e, "a task run panicked or was cancelled");
            }
            if stopping.is_cancelled() {
                return Err(DeferredError::new("its node stopped: handed over").into());
            }
        }
        Err(e) => {
            warn!(job = %message.job, error = %e, "a queued task names no valid job; dropped")
        }
    }
    Ok(())
}

/// The reconciler's lead: a connection holding the session advisory lock
/// (closed, and so released, when dropped).
struct Lead {
    _conn: sqlx::PgConnection,
}

impl Leadership for Lead {}

#[async_trait]
impl TaskQueuePort for PgTaskQueue {
    async fn enqueue(&self, tasks: &[TaskRef]) -> Result<(), TaskQueueError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = tasks.iter().map(TaskRef::idempotency_key).collect();
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let mut tx = conn.begin().await.map_err(unavailable)?;
        // A finished delivery of a task that is still unfinished (it gave
        // up, or its node stopped it) makes way for a new one.
        sqlx::query(
            "DELETE FROM apalis.jobs WHERE job_type = $1 AND idempotency_key = ANY($2)
               AND status IN ('Done', 'Failed', 'Killed')",
        )
        .bind(QUEUE)
        .bind(&keys)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let present: Vec<String> = sqlx::query_scalar(
            "SELECT idempotency_key FROM apalis.jobs WHERE job_type = $1 AND idempotency_key = ANY($2)",
        )
        .bind(QUEUE)
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        let present: std::collections::HashSet<String> = present.into_iter().collect();
        let mut batch = Vec::new();
        for (task, key) in tasks.iter().zip(&keys) {
            if present.contains(key) {
                continue;
            }
            let message = FileTaskMessage {
                job: task.job.to_string(),
                index: task.index,
            };
            let bytes =
                serde_json::to_vec(&message).map_err(|e| TaskQueueError::Unexpected(e.into()))?;
            batch.push(TaskBuilder::new(bytes).idempotency_key(key).build());
        }
        if !batch.is_empty() {
            apalis_postgres::queries::push_tasks(&mut *tx, QUEUE, batch)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn release(&self, tasks: &[TaskRef]) -> Result<(), TaskQueueError> {
        let keys: Vec<String> = tasks.iter().map(TaskRef::idempotency_key).collect();
        // Unlocked, its delivery's acknowledgement (which names the worker
        // that held it) no longer matches the row. In an explicit
        // transaction, never as a lone statement: apalis drops a fetch in
        // flight when its worker stops, and sqlx 0.9.0 then returns to the
        // pool a connection whose `BEGIN` had reached the server without
        // knowing it is in a transaction, where a lone statement is never
        // committed (reproduced: of 100 `begin()`s cancelled 0-100 µs in,
        // one left its connection so); a `BEGIN`/`COMMIT` of our own
        // commits it.
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let released = sqlx::query(
            "UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL,
                done_at = NULL, run_at = NOW()
             WHERE job_type = $1 AND idempotency_key = ANY($2)",
        )
        .bind(QUEUE)
        .bind(&keys)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        debug!(
            asked = keys.len(),
            released = released.rows_affected(),
            "file tasks released to the queue"
        );
        Ok(())
    }

    async fn hold_job_phase(
        &self,
        job: &JobId,
    ) -> Result<Option<Box<dyn Leadership>>, TaskQueueError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?.detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(PHASE_KEY)
            .bind(job.as_str())
            .fetch_one(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(got.then(|| Box::new(Lead { _conn: conn }) as Box<dyn Leadership>))
    }

    async fn lead(&self) -> Result<Option<Box<dyn Leadership>>, TaskQueueError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?.detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEAD_KEY)
            .fetch_one(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(got.then(|| Box::new(Lead { _conn: conn }) as Box<dyn Leadership>))
    }
}

/// Listens to the events other nodes commit and hands each to `on_note`;
/// after the connection dropped (notes may have been missed) it calls
/// `on_gap` once it is back. Runs until `stop`.
pub async fn follow_cluster_events<N, G, NF, GF>(
    url: &str,
    on_note: N,
    on_gap: G,
    stop: CancellationToken,
) -> Result<(), TaskQueueError>
where
    N: Fn(ClusterNote) -> NF,
    NF: Future<Output = ()>,
    G: Fn() -> GF,
    GF: Future<Output = ()>,
{
    let mut listener = PgListener::connect(url)
        .await
        .map_err(|e| unavailable(format!("cannot listen for cluster events: {e}")))?;
    listener
        .listen(EVENTS_CHANNEL)
        .await
        .map_err(|e| unavailable(format!("cannot listen for cluster events: {e}")))?;
    info!(channel = EVENTS_CHANNEL, "following the cluster's events");
    // After a drop, the next receive reconnects; a second later (connected
    // again, if the database is back) watchers are told to catch up from
    // the store, which holds whatever notes were lost meanwhile.
    let mut catch_up_at: Option<tokio::time::Instant> = None;
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = async {
                match catch_up_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                catch_up_at = None;
                on_gap().await;
                continue;
            }
            next = listener.try_recv() => next,
        };
        match next {
            Ok(Some(notification)) => match ClusterNote::parse(notification.payload()) {
                Some(note) => on_note(note).await,
                None => warn!(
                    payload = notification.payload(),
                    "cluster feed: unreadable note"
                ),
            },
            Ok(None) => {
                warn!("cluster feed: connection lost; reconnecting");
                catch_up_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            }
            Err(e) => {
                warn!(error = %e, "cluster feed: error; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                catch_up_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            }
        }
    }
}
