//! `ferry serve`: reads config, wires adapters, resumes unfinished jobs,
//! serves the API until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ferry_adapters::checkpoint::checkpointed_temp_files;
use ferry_adapters::cluster::{PgTaskQueue, follow_cluster_events};
use ferry_adapters::events::{FanoutEvents, LogEvents};
use ferry_adapters::export_provider::{ExportProviderConfig, HttpExportProvider};
use ferry_adapters::job_store::SqlJobStore;
use ferry_adapters::memory::{MemoryAlarm, MemoryAlert, MemoryPools, rss_bytes};
use ferry_adapters::metrics::Metrics;
use ferry_adapters::s3::{S3Settings, S3StorageConfig};
use ferry_adapters::sfn::StepFunctionsCallback;
use ferry_adapters::storage_resolver::DefaultStorageResolver;
use ferry_adapters::webhook::{WebhookConfig, WebhookEvents};
use ferry_adapters::{
    FilesystemStorage, HttpClientConfig, LocalFileSource, MinRate, PooledHttpClient, SourceGuard,
    SourceRouter,
};
use ferry_application::jobs::{JobService, JobServiceConfig, OwnerQuota};
use ferry_application::{Backpressure, BackpressureConfig, ProcessFileConfig, TransferFactory};
use ferry_domain::ports::MemoryGaugePort;
use ferry_domain::ports::{HttpDownloadPort, JobEventsPort, NodeId, TaskHandlerPort};
use ferry_domain::{EgressPolicy, JobId};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;

use crate::api::auth::{AuthConfig, Limits, Tokens};
use crate::api::{AppState, router};
use crate::cli::{AuthMode, GlobalArgs, ServeArgs, Toggle};
use crate::exit;

fn fail(message: String) -> ExitCode {
    eprintln!("ferry: error: {message}");
    ExitCode::from(exit::USAGE)
}

fn new_job_id() -> JobId {
    let id = format!(
        "job_{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    );
    // Always valid: letters, digits and `_` only.
    JobId::parse(&id).unwrap_or_else(|_| new_job_id())
}

/// Who may call the API: tokens from --tokens, required when --auth says
/// so, or by default when listening beyond loopback.
fn auth_config(args: &ServeArgs) -> Result<AuthConfig, String> {
    let tokens = match &args.tokens {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--tokens {}: {e}", path.display()))?;
            let tokens =
                Tokens::parse(&text).map_err(|e| format!("--tokens {}: {e}", path.display()))?;
            if tokens.is_empty() {
                return Err(format!(
                    "--tokens {}: the file has no token (ferry token create NAME makes one)",
                    path.display()
                ));
            }
            Some(tokens)
        }
    };
    let loopback = args.listen.ip().is_loopback();
    let tokens = match (args.auth, tokens) {
        (AuthMode::Off, _) => {
            if !loopback {
                tracing::warn!(listen = %args.listen, "--auth off on a non-loopback address: anyone who can reach it can submit jobs");
            }
            None
        }
        (_, Some(tokens)) => Some(tokens),
        (AuthMode::Required, None) => {
            return Err(
                "--auth required needs --tokens FILE (ferry token create NAME makes a token)"
                    .into(),
            );
        }
        (AuthMode::Auto, None) if !loopback => {
            return Err(format!(
                "--listen {} is not a loopback address, so the API needs tokens: give --tokens FILE (ferry token create NAME makes one), or --auth off to serve it open",
                args.listen
            ));
        }
        (AuthMode::Auto, None) => None,
    };
    Ok(AuthConfig {
        tokens,
        public_metrics: args.public_metrics,
    })
}

/// How old a checkpoint that no live task owns must be to go (the startup
/// pass takes every orphan at once; then every `--orphan-sweep-interval`).
const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(300);

/// Aborts uploads and removes temp files of checkpoints whose task is over
/// (a crash between the end of a task and its cleanup), at startup and then
/// periodically.
async fn clean_orphans(jobs: Arc<JobService>, every: std::time::Duration) {
    jobs.discard_checkpoints(None, std::time::Duration::ZERO)
        .await;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        jobs.discard_checkpoints(None, ORPHAN_GRACE).await;
    }
}

/// `--per-owner-concurrency`, or its default: three quarters of the slots
/// when tokens make several owners, all of them for an open API's one.
fn per_owner_concurrency(args: &ServeArgs, tokens: bool) -> usize {
    let all = usize::from(args.concurrency);
    match args.per_owner_concurrency {
        Some(n) => usize::from(n).min(all),
        None if tokens => (all * 3 / 4).max(1),
        None => all,
    }
}

/// Deletes ended jobs older than `retain`: at startup, then every tenth
/// of `retain` (between 1 second and 10 minutes).
async fn retain_jobs(jobs: Arc<JobService>, retain: std::time::Duration) {
    let every = (retain / 10).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(600),
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        jobs.purge_ended(retain).await;
    }
}

pub async fn run(args: ServeArgs, global: GlobalArgs) -> ExitCode {
    // Configuration that can be refused is checked before anything starts.
    let auth = match auth_config(&args) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let data_dir = args.data_dir.clone();
    // The store holds source URLs and task tokens: owner-only, as made
    // here (an existing directory keeps the mode its owner gave it).
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data_dir)
    {
        return fail(format!(
            "--data-dir {}: cannot create it: {e}",
            data_dir.display()
        ));
    }
    let files_root: PathBuf = data_dir.join("files");
    let files = match FilesystemStorage::new(&files_root) {
        Ok(f) => f,
        Err(e) => return fail(format!("--data-dir: {e}")),
    };
    let database_url = match global.database_url.clone() {
        Some(url) => url,
        None => {
            // Made owner-only before SQLite opens it: its -wal and -shm
            // files take the database file's mode.
            let db = data_dir.join("ferry.db");
            if let Err(e) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&db)
            {
                return fail(format!("--data-dir: cannot create {}: {e}", db.display()));
            }
            format!("sqlite://{}?mode=rwc", db.display())
        }
    };
    let node = match cluster_node(&args, &database_url) {
        Ok(node) => node,
        Err(e) => return fail(e),
    };
    let store = match SqlJobStore::connect(&database_url).await {
        Ok(s) => Arc::new(match &node {
            Some(node) => s.announcing_as(node.clone()),
            None => s,
        }),
        Err(e) => return fail(format!("--database-url: {e}")),
    };
    let queue = match &node {
        Some(_) => match PgTaskQueue::connect(&database_url, args.lease_timeout).await {
            Ok(q) => Some(q),
            Err(e) => return fail(format!("--cluster: {e}")),
        },
        None => None,
    };
    // Temp files of dead processes go, except those a checkpoint names:
    // their transfers resume below.
    let keep = checkpointed_temp_files(store.as_ref(), None).await;
    match files.remove_stale_temp_files_except(keep).await {
        Ok(0) | Err(_) => {}
        Ok(n) => tracing::info!(removed = n, "stale temp files removed"),
    }
    let guard = (args.source_guard == Toggle::On).then(|| {
        SourceGuard::new(EgressPolicy::with_allowed(
            args.sources.allow_source.clone(),
        ))
    });
    let file_source = match &args.file_root {
        None => None,
        Some(root) => match LocalFileSource::confined(root) {
            Ok(f) => Some(Arc::new(f) as Arc<dyn HttpDownloadPort>),
            Err(e) => return fail(format!("--file-root {}: {e}", root.display())),
        },
    };
    // One retry policy: the source client retries before a body with the
    // jobs' policy and marks what it gave up on, so a task never retries
    // it again.
    let retry = JobServiceConfig::default().retry;
    let tls = match args.tls.trust() {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let http_config = HttpClientConfig {
        guard: guard.clone(),
        retry,
        tls,
        min_rate: (args.min_rate.as_u64() > 0).then_some(MinRate {
            bytes_per_sec: args.min_rate.as_u64(),
            window: args.min_rate_window,
        }),
        ..HttpClientConfig::default()
    };
    let per_host_concurrency = http_config.max_connections_per_host;
    let http = match PooledHttpClient::new(http_config) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let pools = match MemoryPools::split(global.memory_budget.as_u64(), args.part_size.as_u64()) {
        Ok(p) => p,
        Err(e) => return fail(format!("--memory-budget: {e}")),
    };
    let pressure = Arc::new(Backpressure::new(
        Arc::new(pools.clone()),
        BackpressureConfig {
            max_active: usize::from(args.concurrency),
            caps: args.admission_caps,
            latency_target: args.chunk_latency_target,
            ..BackpressureConfig::default()
        },
    ));
    let resolver = DefaultStorageResolver::new(
        files_root,
        S3Settings {
            endpoint_url: global.endpoint_url.clone(),
            region: global.region.clone(),
            profile: global.profile.clone(),
        },
        S3StorageConfig {
            part_size: args.part_size.as_u64(),
            memory: Some(pools.parts.clone()),
            verify_part_etags: args.verify_parts,
            digest_metadata: args.digest_metadata.mode(),
            ..S3StorageConfig::default()
        },
    )
    .with_checkpoint_bytes(args.checkpoint_interval.as_u64());
    let mut metrics = Metrics::new();
    if let Some(node) = &node {
        metrics.set_node(node.as_str());
    }
    let metrics = Arc::new(metrics);
    let mut sinks: Vec<Arc<dyn JobEventsPort>> = vec![metrics.clone(), Arc::new(LogEvents)];
    if let (Some(url), Some(secret)) = (args.webhook_url.clone(), args.webhook_secret.clone()) {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return fail("--webhook-url must be an http:// or https:// URL".into());
        }
        match WebhookEvents::start(WebhookConfig::new(url, secret.into_bytes())) {
            Ok(w) => sinks.push(Arc::new(w)),
            Err(e) => return fail(e),
        }
    }
    let events = FanoutEvents(sinks);
    let config = JobServiceConfig {
        per_job_concurrency: usize::from(args.per_job_concurrency),
        global_concurrency: usize::from(args.concurrency),
        per_owner_concurrency: per_owner_concurrency(&args, auth.tokens.is_some()),
        per_host_concurrency,
        max_files_per_job: args.max_files_per_job,
        max_export_phases: usize::from(args.max_export_phases),
        file_deadline: args.file_deadline.0,
        max_file_size: args.max_size,
        progress_interval: args.progress_interval,
        min_poll_interval: args.min_poll_interval,
        live_capacity: usize::try_from(args.stream_buffer).unwrap_or(4096),
        watch_max_lag: args.stream_max_lag,
        allow_file_sources: file_source.is_some(),
        pressure: Some(pressure),
        retry,
        process: ProcessFileConfig {
            memory: Some(Arc::new(pools.clone())),
            checkpoints: Some(store.clone()),
            ..JobServiceConfig::default().process
        },
        ..JobServiceConfig::default()
    };
    let callback = StepFunctionsCallback::connect(args.sfn_endpoint_url.clone()).await;
    let exports = match HttpExportProvider::new(ExportProviderConfig {
        guard,
        max_files: args.max_files_per_job,
        ..ExportProviderConfig::default()
    }) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let resolver = Arc::new(resolver);
    let transfers = TransferFactory::for_jobs(
        Arc::new(SourceRouter::new(Arc::new(http), file_source)),
        resolver.clone(),
        &config,
    );
    let concurrency = config.global_concurrency;
    let mut jobs = JobService::new(
        store,
        Arc::new(transfers),
        resolver,
        Arc::new(events),
        Box::new(new_job_id),
        config,
    )
    .with_callback(Arc::new(callback))
    .with_export_provider(Arc::new(exports));
    if let (Some(node), Some(queue)) = (&node, &queue) {
        jobs = jobs.with_cluster(node.clone(), Arc::new(queue.clone()));
    }
    let jobs = Arc::new(jobs);

    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => return fail(format!("--listen {}: {e}", args.listen)),
    };
    let addr: SocketAddr = listener.local_addr().unwrap_or(args.listen);

    let shutdown = CancellationToken::new();
    match (&node, queue) {
        (Some(node), Some(queue)) => {
            // A cluster node resumes nothing by itself: the queue hands
            // out tasks, and the reconciler re-enqueues what it lacks.
            tracing::info!(%node, lease_timeout = ?queue.lease_timeout(), "cluster node starting");
            start_cluster(
                node.clone(),
                queue,
                &jobs,
                &database_url,
                concurrency,
                &shutdown,
            );
        }
        _ => {
            match jobs.unfinished().await {
                Ok(ids) => {
                    for id in ids {
                        tracing::info!(job = %id, "resuming unfinished job");
                        tokio::spawn(jobs.clone().run_abortable(id));
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not list unfinished jobs"),
            }
            // The same reconciler as a cluster's, on this one node: a file
            // task whose delivery gave up (the store was unreachable) is
            // enqueued again.
            spawn_reconciler(&jobs, &shutdown, RECONCILE_EVERY);
        }
    }

    let hand_over = jobs.clone();
    tokio::spawn(monitor(jobs.clone(), metrics.clone(), pools));
    tokio::spawn(clean_orphans(jobs.clone(), args.orphan_sweep_interval));
    if let Some(retain) = args.retain_jobs.0 {
        tokio::spawn(retain_jobs(jobs.clone(), retain));
    }
    tokio::spawn(summarise_refusals(metrics.clone()));
    let auth_summary = auth.tokens.as_ref().map(Tokens::len);
    let app = router(
        AppState {
            jobs,
            metrics,
            shutdown: shutdown.clone(),
            heartbeat: args.heartbeat,
            auth: Arc::new(auth),
            limits: Arc::new(
                Limits::new(args.jobs_per_minute, args.max_streams_per_caller).with_quota(
                    OwnerQuota {
                        active_jobs: args.quota_active_jobs,
                        queued_files: args.quota_queued_files,
                        active_exports: args.quota_active_exports,
                    },
                ),
            ),
        },
        args.max_body.as_u64().try_into().unwrap_or(usize::MAX),
        args.body_read_timeout,
    );
    eprintln!(
        "ferry serve: listening on http://{addr} ({}data {}, job store {}, {}, source guard {})",
        node.as_ref()
            .map(|n| format!("cluster node {n}, "))
            .unwrap_or_default(),
        data_dir.display(),
        if database_url.starts_with("sqlite:") {
            "sqlite"
        } else {
            "postgres"
        },
        match &auth_summary {
            Some(n) => format!("{n} token(s)"),
            None => "no authentication".to_owned(),
        },
        if args.source_guard == Toggle::On {
            "on"
        } else {
            "OFF"
        },
    );
    // A cluster node hands its running files over as soon as it is told to
    // stop, while open connections drain (a busy connection must not hold
    // the hand-over back for `--shutdown-timeout`): the other nodes resume
    // them now, from their checkpoints, instead of after the lease timeout.
    let handing = node.is_some().then(|| {
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            hand_over.hand_over().await
        })
    });
    serve_until_signal(listener, app, &args, shutdown).await;
    if let Some(handing) = handing {
        match handing.await {
            Ok(0) => {}
            Ok(handed) => eprintln!(
                "ferry serve: {handed} running file task(s) handed over to the other nodes"
            ),
            Err(e) => tracing::error!(error = %e, "the hand-over task failed"),
        }
    }
    ExitCode::from(exit::OK)
}

/// How often the reconciler looks for file tasks missing from the queue
/// (on the one node that leads, or the one node).
const RECONCILE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// `--cluster`: this node's id, checked against the flags (a cluster needs
/// a PostgreSQL store); `None` for a single node.
fn cluster_node(args: &ServeArgs, database_url: &str) -> Result<Option<NodeId>, String> {
    if !args.cluster {
        return Ok(None);
    }
    if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
        return Err(
            "--cluster needs --database-url postgres://… (the store and queue every node shares)"
                .into(),
        );
    }
    let id = match &args.node_id {
        Some(id) => id.clone(),
        None => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let host: String = host
                .trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                .take(48)
                .collect();
            let host = if host.is_empty() { "node".into() } else { host };
            format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
        }
    };
    NodeId::parse(&id)
        .map(Some)
        .map_err(|e| format!("--node-id: {e}"))
}

/// A cluster node's background work: its queue workers, the event feed
/// (other nodes' events to live watchers, their cancels to this node's
/// transfers) and the reconciler.
fn start_cluster(
    node: NodeId,
    queue: PgTaskQueue,
    jobs: &Arc<JobService>,
    database_url: &str,
    concurrency: usize,
    shutdown: &CancellationToken,
) {
    let handler: Arc<dyn TaskHandlerPort> = jobs.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        queue.run_workers(&node, concurrency, handler, stop).await;
    });
    let (feed_jobs, gap_jobs, url, stop) = (
        jobs.clone(),
        jobs.clone(),
        database_url.to_owned(),
        shutdown.clone(),
    );
    tokio::spawn(async move {
        let followed = follow_cluster_events(
            &url,
            |note| {
                let jobs = feed_jobs.clone();
                async move { jobs.on_cluster_note(note).await }
            },
            || {
                let jobs = gap_jobs.clone();
                async move { jobs.on_cluster_gap().await }
            },
            stop,
        )
        .await;
        if let Err(e) = followed {
            tracing::error!(error = %e, "the cluster's event feed stopped");
        }
    });
    spawn_reconciler(jobs, shutdown, std::time::Duration::ZERO);
}

/// The reconciler, every [`RECONCILE_EVERY`] from `first_after` on (on the
/// one node leading): windows of downloading jobs missing from the task
/// queue enqueued, orphaned job phases taken over.
fn spawn_reconciler(
    jobs: &Arc<JobService>,
    shutdown: &CancellationToken,
    first_after: std::time::Duration,
) {
    let (jobs, stop) = (jobs.clone(), shutdown.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(first_after) => {}
        }
        loop {
            match jobs.reconcile().await {
                Ok(Some(n)) if n > 0 => tracing::debug!(tasks = n, "reconciler: queue checked"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reconciler: job store unavailable"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RECONCILE_EVERY) => {}
            }
        }
    });
}

/// RSS ceiling the memory monitor measures against: the budget plus what
/// the process needs besides file bytes (code, runtime, connections).
const RSS_ALLOWANCE: u64 = 32 << 20;

/// The memory monitor: every second, RSS and budget use into the metrics,
/// alerts logged when RSS crosses 60/75/85 % of budget + allowance, and the
/// backpressure level into the metrics (logged when it changes).
async fn monitor(jobs: Arc<JobService>, metrics: Arc<Metrics>, budget: MemoryPools) {
    let mut alarm = MemoryAlarm::new(budget.total() + RSS_ALLOWANCE);
    let mut last_level = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let rss = rss_bytes();
        metrics.observe_memory(rss, budget.in_use(), budget.total());
        if let Some(rss) = rss
            && let Some(alert) = alarm.sample(rss)
        {
            let mib = rss >> 20;
            let budget_mib = budget.total() >> 20;
            match alert {
                MemoryAlert::Normal => {
                    tracing::info!(rss_mib = mib, budget_mib, "memory back to normal")
                }
                MemoryAlert::Warning => tracing::warn!(
                    rss_mib = mib,
                    budget_mib,
                    "memory at the warning threshold (60 % of budget + allowance)"
                ),
                MemoryAlert::Critical | MemoryAlert::Emergency => tracing::error!(
                    rss_mib = mib,
                    budget_mib,
                    level = alert.as_str(),
                    "memory above the critical threshold"
                ),
            }
        }
        if let Some(report) = jobs.pressure() {
            metrics.observe_pressure(
                report.level.ordinal(),
                report.score.total(),
                report.active,
                report.cap,
            );
            if last_level != Some(report.level) {
                if last_level.is_some() {
                    tracing::info!(
                        level = report.level.as_str(),
                        score = report.score.total(),
                        active = report.active,
                        cap = report.cap,
                        "backpressure level changed"
                    );
                }
                last_level = Some(report.level);
            }
        }
    }
}

/// Accepts HTTP/1.1 connections (with upgrades, for WebSocket) until a
/// signal; then stops accepting, tells streams to end, and gives in-flight
/// requests `--shutdown-timeout` to finish. Unfinished jobs stay in the
/// store and resume at the next start.
async fn serve_until_signal(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    args: &ServeArgs,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(args.header_read_timeout)
        .max_headers(usize::from(args.max_headers))
        .max_buf_size(
            usize::try_from(args.max_header_bytes.as_u64())
                .unwrap_or(usize::MAX)
                .max(8192),
        )
        .keep_alive(true);
    let builder = builder.http1_only();
    let graceful = GracefulShutdown::new();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    // One permit per open connection: at the cap, the loop stops accepting
    // until a connection ends.
    let slots = Arc::new(tokio::sync::Semaphore::new(
        usize::try_from(args.max_connections).unwrap_or(usize::MAX),
    ));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut signal => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
            () = &mut signal => break,
        }
    }
    drop(listener);
    shutdown.cancel();
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(args.shutdown_timeout) => {
            tracing::warn!("connections still open after the shutdown timeout; closing them");
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    eprintln!("ferry serve: shutting down; unfinished jobs resume at the next start");
}

/// One log line per interval for the requests refused in it (401, 403,
/// 413, 421, 429, 431), instead of a line each: a flood of refused
/// requests cannot fill the disk.
async fn summarise_refusals(metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(REFUSAL_SUMMARY_EVERY);
    loop {
        tick.tick().await;
        let tally = metrics.take_refused();
        if tally.is_empty() {
            continue;
        }
        let total: u64 = tally.values().sum();
        let by_status = tally
            .iter()
            .map(|(status, n)| format!("{status}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::warn!(
            refused = total,
            by_status = %by_status,
            seconds = REFUSAL_SUMMARY_EVERY.as_secs(),
            "requests refused"
        );
    }
}

/// How often refused requests are summed up in the log.
const REFUSAL_SUMMARY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
