//! `ferry copy SOURCE DEST`: wiring and output. The work is the ProcessFile
//! use case.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use futures::StreamExt;
use indicatif::MultiProgress;
use serde::Serialize;

use ferry_adapters::checkpoint::{
    CheckpointFiles, LockError, TransferLock, checkpointed_temp_files,
};
use ferry_adapters::filesystem::DEFAULT_CHECKPOINT_EVERY;
use ferry_adapters::memory::{MemoryBudget, MemoryPools};
use ferry_adapters::s3::{S3Service, S3Settings, S3Storage, S3StorageConfig, S3Target};
use ferry_adapters::{
    FilesystemStorage, HttpClientConfig, LocalFileSource, PooledHttpClient, SourceGuard,
    SourceRouter,
};
use ferry_application::{ProcessFile, ProcessFileConfig};
use ferry_domain::ports::{
    CheckpointStorePort, FileStoragePort, ProcessFileCommand, ProcessFileError, ProcessFilePort,
    ProcessFileResult,
};
use ferry_domain::{ByteSize, EgressPolicy, ObjectKey, RetryPolicy, SourceUrl, TransferId};

use crate::cli::{CopyArgs, Toggle};
use crate::exit;
use crate::progress::TerminalProgress;

/// A problem with the arguments, reported before any transfer starts.
struct UsageError(String);

/// Where a copy goes: a storage and a key in it.
enum Destination {
    Directory {
        root: PathBuf,
        key: ObjectKey,
    },
    S3 {
        bucket: String,
        prefix: String,
        key: ObjectKey,
    },
}

fn parse_source(raw: &str) -> Result<SourceUrl, UsageError> {
    if raw.contains("://") {
        return SourceUrl::parse(raw).map_err(|e| UsageError(format!("SOURCE: {e}")));
    }
    // A plain local path.
    let path = Path::new(raw);
    let absolute = std::fs::canonicalize(path).map_err(|e| {
        UsageError(format!(
            "SOURCE `{raw}` is not a URL and not a readable local file ({e}); give an http://, https:// or file:// URL or an existing path"
        ))
    })?;
    let url = format!("file://{}", absolute.display());
    SourceUrl::parse(&url).map_err(|e| UsageError(format!("SOURCE: {e}")))
}

fn parse_dest(raw: &str, source: &SourceUrl) -> Result<Destination, UsageError> {
    if raw.starts_with("s3://") {
        let target = S3Target::parse(raw).map_err(|e| UsageError(format!("DEST: {e}")))?;
        if target.is_prefix {
            let name = source_file_name(source, raw)?;
            return Ok(Destination::S3 {
                bucket: target.bucket,
                prefix: target.prefix,
                key: name,
            });
        }
        let key = ObjectKey::parse(&target.prefix)
            .map_err(|e| UsageError(format!("DEST key `{}`: {e}", target.prefix)))?;
        return Ok(Destination::S3 {
            bucket: target.bucket,
            prefix: String::new(),
            key,
        });
    }
    if raw.contains("://") {
        return Err(UsageError(format!(
            "DEST `{raw}` is not a local path; give a directory (ending in /) or a file path"
        )));
    }
    let path = Path::new(raw);
    let is_dir = raw.ends_with('/') || raw == "." || raw == ".." || path.is_dir();
    if is_dir {
        let key = source_file_name(source, raw)?;
        return Ok(Destination::Directory {
            root: path.to_path_buf(),
            key,
        });
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| UsageError(format!("DEST `{raw}` has no file name")))?;
    let key = ObjectKey::parse(name).map_err(|e| UsageError(format!("DEST file name: {e}")))?;
    let root = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(Destination::Directory { root, key })
}

/// The key a "directory" destination gives the file: the source's name.
fn source_file_name(source: &SourceUrl, raw: &str) -> Result<ObjectKey, UsageError> {
    let name = source.file_name().ok_or_else(|| {
        UsageError(format!(
            "cannot name the file from SOURCE {source}: its URL has no file name; give DEST with a file name, e.g. {}file.bin",
            if raw.ends_with('/') { raw.to_owned() } else { format!("{raw}/") }
        ))
    })?;
    ObjectKey::parse(&name).map_err(|e| {
        UsageError(format!(
            "the source's file name `{name}` cannot be used: {e}"
        ))
    })
}

/// Why the destination could not be opened.
enum OpenError {
    Usage(UsageError),
    Storage(ProcessFileError),
}

impl From<UsageError> for OpenError {
    fn from(e: UsageError) -> Self {
        OpenError::Usage(e)
    }
}

/// Builds the storage adapter for the destination.
async fn open_storage(
    dest: &Destination,
    endpoint_url: Option<String>,
    part_size: ByteSize,
    verify_parts: bool,
    memory: MemoryBudget,
    keep: HashSet<PathBuf>,
    checkpoint_bytes: u64,
) -> Result<Arc<dyn FileStoragePort>, OpenError> {
    match dest {
        Destination::Directory { root, key } => {
            let storage = FilesystemStorage::new(root)
                .map_err(|e| UsageError(format!("DEST: {e}")))?
                .with_checkpoint_interval(DEFAULT_CHECKPOINT_EVERY, checkpoint_bytes);
            storage.remove_stale_temp_files_near(key, keep).await;
            Ok(Arc::new(storage))
        }
        Destination::S3 { bucket, prefix, .. } => {
            if part_size.as_u64() < 5 * 1024 * 1024 {
                return Err(UsageError(format!(
                    "--part-size {part_size} is below S3's 5 MiB minimum"
                ))
                .into());
            }
            let service = S3Service::connect(&S3Settings {
                endpoint_url,
                region: None,
            })
            .await;
            service
                .check_bucket(bucket)
                .await
                .map_err(|e| OpenError::Storage(e.into()))?;
            let config = S3StorageConfig {
                part_size: part_size.as_u64(),
                verify_part_etags: verify_parts,
                memory: Some(memory),
                ..S3StorageConfig::default()
            };
            Ok(Arc::new(S3Storage::new(
                service,
                bucket.clone(),
                prefix,
                config,
            )))
        }
    }
}

#[derive(Serialize)]
struct JsonSuccess<'a> {
    status: &'static str,
    source: String,
    destination: &'a str,
    bytes: u64,
    sha256: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    md5: Option<&'a str>,
    duration_seconds: f64,
    throughput_bytes_per_second: f64,
    /// The offset a resumed copy continued from (bytes below it were not
    /// fetched again).
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed_from: Option<u64>,
}

#[derive(Serialize)]
struct JsonFailure<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    code: &'a str,
    class: &'a str,
    retryable: bool,
    message: &'a str,
}

fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("ferry: error: cannot encode the result as JSON: {e}"),
    }
}

fn report_success(result: &ProcessFileResult, source: &SourceUrl, json: bool) {
    if json {
        print_json(&JsonSuccess {
            status: "ok",
            source: source.redacted(),
            destination: &result.location,
            bytes: result.bytes,
            sha256: result.sha256.hex(),
            md5: result.md5.as_ref().map(|c| c.hex()),
            duration_seconds: result.duration.as_secs_f64(),
            throughput_bytes_per_second: result.throughput(),
            resumed_from: result.resumed_from,
        });
    } else {
        // Display only: precision loss is irrelevant for a rate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rate = ByteSize::new(result.throughput() as u64);
        println!(
            "copied {} to {} in {:.1}s ({rate}/s)",
            ByteSize::new(result.bytes),
            result.location,
            result.duration.as_secs_f64()
        );
        if let Some(offset) = result.resumed_from {
            println!("resumed from {} (a checkpoint)", ByteSize::new(offset));
        }
        println!("sha256 {}", result.sha256.hex());
        if let Some(md5) = &result.md5 {
            println!("md5    {}", md5.hex());
        }
    }
}

fn report_failure(error: &ProcessFileError, json: bool) -> ExitCode {
    report_failure_of(error, json, None)
}

/// Reports a failure; `source` names the file when several are copied.
fn report_failure_of(error: &ProcessFileError, json: bool, source: Option<&SourceUrl>) -> ExitCode {
    let message = error.to_string();
    match source {
        Some(source) => eprintln!("ferry: error: {source}: {message}"),
        None => eprintln!("ferry: error: {message}"),
    }
    if json {
        print_json(&JsonFailure {
            status: "error",
            source: source.map(SourceUrl::redacted),
            code: error.code(),
            class: error.class().as_str(),
            retryable: error.class().is_retryable(),
            message: &message,
        });
    }
    ExitCode::from(exit::for_error(error))
}

fn usage(e: &UsageError, json: bool) -> ExitCode {
    eprintln!("ferry: error: {}", e.0);
    if json {
        print_json(&JsonFailure {
            status: "error",
            source: None,
            code: "usage",
            class: "client",
            retryable: false,
            message: &e.0,
        });
    }
    ExitCode::from(exit::USAGE)
}

/// One planned transfer.
struct Planned {
    source: SourceUrl,
    dest: Destination,
}

impl Destination {
    fn key(&self) -> &ObjectKey {
        match self {
            Destination::Directory { key, .. } | Destination::S3 { key, .. } => key,
        }
    }
}

/// Parses every SOURCE against DEST; several sources need a directory or a
/// prefix as DEST, and distinct file names.
fn plan(args: &CopyArgs) -> Result<Vec<Planned>, UsageError> {
    let (dest_raw, sources) = args
        .paths
        .split_last()
        .ok_or_else(|| UsageError("give at least one SOURCE and a DEST".into()))?;
    let several = sources.len() > 1;
    if several {
        let is_dir_like = dest_raw.ends_with('/') || Path::new(dest_raw).is_dir();
        if !is_dir_like {
            return Err(UsageError(format!(
                "with several sources, DEST must be a directory or an s3://bucket/prefix/ ending in `/` (got `{dest_raw}`)"
            )));
        }
        if args.sha256.is_some() || args.md5.is_some() {
            return Err(UsageError(
                "--sha256 and --md5 name one file's digest: give them with a single SOURCE".into(),
            ));
        }
    }
    let mut planned: Vec<Planned> = Vec::with_capacity(sources.len());
    for raw in sources {
        let source = parse_source(raw)?;
        let dest = parse_dest(dest_raw, &source)?;
        if let Some(other) = planned.iter().find(|p| p.dest.key() == dest.key()) {
            return Err(UsageError(format!(
                "SOURCE {} and {} would both be stored as `{}`",
                other.source,
                source,
                dest.key()
            )));
        }
        planned.push(Planned { source, dest });
    }
    Ok(planned)
}

pub async fn run(
    args: CopyArgs,
    endpoint_url: Option<String>,
    memory_budget: ByteSize,
) -> ExitCode {
    let json = args.json || !std::io::stdout().is_terminal();
    let planned = match plan(&args) {
        Ok(p) => p,
        Err(e) => return usage(&e, json),
    };
    let Some(first) = planned.first() else {
        return usage(
            &UsageError("give at least one SOURCE and a DEST".into()),
            json,
        );
    };
    let pools = match MemoryPools::split(memory_budget.as_u64(), args.part_size.as_u64()) {
        Ok(p) => p,
        Err(e) => return usage(&UsageError(format!("--memory-budget: {e}")), json),
    };
    let checkpoints = if args.no_checkpoint {
        None
    } else {
        match open_state_dir(args.state_dir.as_deref()) {
            Ok(store) => Some(store),
            // Asked for explicitly (or --resume): a clear error.
            Err(e) if args.state_dir.is_some() || args.resume => return usage(&e, json),
            // The default place is unusable (a read-only home): copy
            // anyway, without crash-resume, and say so.
            Err(e) => {
                eprintln!(
                    "ferry: warning: {}; copying without checkpoints (a crash restarts from zero)",
                    e.0
                );
                None
            }
        }
    };
    let keep = match &checkpoints {
        Some(store) => checkpointed_temp_files(store, Some(STATE_GRACE)).await,
        None => HashSet::new(),
    };
    let storage = match open_storage(
        &first.dest,
        endpoint_url.clone(),
        args.part_size,
        args.verify_parts,
        pools.parts.clone(),
        keep,
        args.checkpoint_interval.as_u64(),
    )
    .await
    {
        Ok(s) => s,
        Err(OpenError::Usage(e)) => return usage(&e, json),
        Err(OpenError::Storage(e)) => return report_failure(&e, json),
    };
    let guard = (args.source_guard == Toggle::On).then(|| {
        SourceGuard::new(EgressPolicy::with_allowed(
            args.sources.allow_source.clone(),
        ))
    });
    let http = match PooledHttpClient::new(HttpClientConfig {
        guard,
        ..HttpClientConfig::default()
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferry: error: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let downloader = SourceRouter::new(Arc::new(http), Some(Arc::new(LocalFileSource::new())));
    let use_case = ProcessFile::new(
        Arc::new(downloader),
        storage.clone(),
        ProcessFileConfig {
            memory: Some(Arc::new(pools)),
            checkpoints: checkpoints
                .clone()
                .map(|c| Arc::new(c) as Arc<dyn CheckpointStorePort>),
            ..ProcessFileConfig::default()
        },
    );
    let policy = RetryPolicy {
        attempts: args.retries.saturating_add(1),
        deadline: args.retry_deadline,
        ..RetryPolicy::default()
    };

    let show_progress = !args.no_progress && !args.json && std::io::stderr().is_terminal();
    let group = MultiProgress::new();
    let expected: Vec<_> = [args.sha256.clone(), args.md5.clone()]
        .into_iter()
        .flatten()
        .collect();
    let commands: Vec<(SourceUrl, ProcessFileCommand)> = planned
        .into_iter()
        .map(|p| {
            let mut command = ProcessFileCommand::new(p.source.clone(), p.dest.key().clone());
            if checkpoints.is_some() {
                command.transfer_id = transfer_id(
                    &p.source,
                    &storage.location(p.dest.key()),
                    endpoint_url.as_deref(),
                );
            }
            command.expected = expected.clone();
            command.max_size = args.max_size;
            command.compute_md5 = args.compute_md5;
            if show_progress {
                let label = p.source.file_name().unwrap_or_else(|| "download".into());
                command.progress = Arc::new(TerminalProgress::in_group(label, &group));
            }
            (p.source, command)
        })
        .collect();

    if args.resume
        && let Some(store) = &checkpoints
    {
        for (source, command) in &commands {
            let Some(id) = &command.transfer_id else {
                continue;
            };
            if !matches!(store.load(id).await, Ok(Some(_))) {
                return usage(
                    &UsageError(format!(
                        "--resume: there is no checkpoint of {source} to {} in {}; run without --resume to start it",
                        storage.location(&command.key),
                        store.dir().display()
                    )),
                    json,
                );
            }
        }
    }
    let transfer_ids: Vec<TransferId> = commands
        .iter()
        .filter_map(|(_, c)| c.transfer_id.clone())
        .collect();
    // One process per transfer: two copies of the same SOURCE to the same
    // DEST would take up the same checkpoint.
    let _locks = match &checkpoints {
        Some(store) => match lock_transfers(store, &transfer_ids) {
            Ok(locks) => locks,
            Err(e) => return usage(&e, json),
        },
        None => Vec::new(),
    };

    let several = commands.len() > 1;
    let use_case = &use_case;
    let transfers = futures::stream::iter(commands.into_iter().enumerate())
        .map(|(i, (source, command))| async move {
            (i, source, with_retries(use_case, command, policy).await)
        })
        .buffer_unordered(usize::from(args.concurrency));
    let mut outcomes = Vec::new();
    let finished = async {
        futures::pin_mut!(transfers);
        while let Some((i, source, outcome)) = transfers.next().await {
            match &outcome {
                Ok(result) => report_success(result, &source, json),
                Err(error) => {
                    report_failure_of(error, json, several.then_some(&source));
                }
            }
            outcomes.push((i, outcome));
        }
    };
    let interrupted = tokio::select! {
        () = finished => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    if interrupted {
        // Dropping the transfers removed their temp files and aborted their
        // uploads: nothing unfinished is visible. Their checkpoints go too.
        for id in &transfer_ids {
            let _ = use_case.abandon(id).await;
        }
        eprintln!("ferry: interrupted; unfinished files were not stored");
        return ExitCode::from(130);
    }
    // The exit code of the first failed SOURCE, in command-line order.
    outcomes.sort_by_key(|(i, _)| *i);
    let code = outcomes
        .iter()
        .find_map(|(_, o)| o.as_ref().err().map(exit::for_error))
        .unwrap_or(exit::OK);
    ExitCode::from(code)
}

/// Runs one copy, retrying transient failures with the policy's full-jitter
/// backoff (each retry resumes from the last checkpoint) and a source that
/// changed mid-copy at once from zero. A copy that fails
/// for good discards what it staged.
async fn with_retries(
    use_case: &ProcessFile,
    command: ProcessFileCommand,
    policy: RetryPolicy,
) -> Result<ProcessFileResult, ProcessFileError> {
    let started = std::time::Instant::now();
    let mut retry = 0;
    loop {
        let outcome = use_case.process(command.clone()).await;
        let error = match outcome {
            Ok(result) => return Ok(result),
            Err(e) => e,
        };
        let delay = policy.delay_for(error.class(), retry, rand::random(), started.elapsed());
        let Some(delay) = delay else {
            if let Some(id) = &command.transfer_id {
                let _ = use_case.abandon(id).await;
            }
            return Err(error);
        };
        tracing::warn!(source = %command.source, retry = retry + 1, delay_ms = delay.as_millis(), %error, "transient failure; retrying from the last checkpoint");
        tokio::time::sleep(delay).await;
        retry += 1;
    }
}

/// The state directory: --state-dir, else $XDG_STATE_HOME/ferry/copy, else
/// ~/.local/state/ferry/copy.
fn open_state_dir(flag: Option<&Path>) -> Result<CheckpointFiles, UsageError> {
    let dir = match flag {
        Some(dir) => dir.to_path_buf(),
        None => {
            let base = std::env::var_os("XDG_STATE_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
                .ok_or_else(|| {
                    UsageError(
                        "no state directory: set --state-dir (or HOME), or pass --no-checkpoint"
                            .into(),
                    )
                })?;
            base.join("ferry").join("copy")
        }
    };
    CheckpointFiles::open(&dir).map_err(|e| UsageError(format!("--state-dir: {e}")))
}

/// Locks every transfer (one process per transfer); the locks are let go
/// when the returned guards drop.
fn lock_transfers(
    store: &CheckpointFiles,
    ids: &[TransferId],
) -> Result<Vec<TransferLock>, UsageError> {
    ids.iter()
        .map(|id| {
            store.lock(id).map_err(|e| match e {
                LockError::Held => UsageError(
                    "another ferry copy of the same SOURCE to the same DEST is running; wait for it (it resumes where it stops)".into(),
                ),
                LockError::Failed(reason) => UsageError(format!("--state-dir: {reason}")),
            })
        })
        .collect()
}

/// How long a `ferry copy` checkpoint protects its temp file from the stale
/// temp sweep: after a week, an unresumed copy's temp file is swept.
const STATE_GRACE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// One copy's id: a digest of the full source URL, the destination and the
/// endpoint (no secret can be read back from it).
fn transfer_id(source: &SourceUrl, location: &str, endpoint: Option<&str>) -> Option<TransferId> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [source.expose(), location, endpoint.unwrap_or("")] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = hex::encode(h.finalize());
    TransferId::parse(&format!("copy-{}", digest.get(..32)?)).ok()
}
