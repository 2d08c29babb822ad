//! `ferry copy SOURCE DEST`: wiring and output. The work is the ProcessFile
//! use case.

use std::collections::{HashMap, HashSet};
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
use ferry_adapters::memory::MemoryPools;
use ferry_adapters::s3::S3Source;
use ferry_adapters::s3::{S3Settings, S3StorageConfig};
use ferry_adapters::stdio::StdinSource;
use ferry_adapters::storage_resolver::DefaultStorageResolver;
use ferry_adapters::{
    HttpClientConfig, LocalFileSource, PooledHttpClient, SourceGuard, SourceRouter,
};
use ferry_application::{ProcessFileConfig, TransferFactory};
use ferry_domain::ports::{
    CheckpointStorePort, DownloadError, ProcessFileCommand, ProcessFileError, ProcessFileResult,
    TransferError, TransferFactoryPort, TransferPort, Unobserved,
};
use ferry_domain::{
    ByteSize, Checksum, CopyTarget, Destination, EgressPolicy, NameFrom, NameSource, ObjectKey,
    RetryPolicy, SourceHeader, SourceHeaders, SourceScheme, SourceUrl, TransferId,
};

use crate::cli::{CopyArgs, GlobalArgs, NameFromArg, ProgressMode, Toggle};
use crate::exit;
use crate::progress::{LineProgress, TerminalProgress};
use crate::url_list::{self, ListEntry};

/// A problem with the arguments, reported before any transfer starts.
pub(crate) struct UsageError(pub String);

fn parse_source(raw: &str) -> Result<SourceUrl, UsageError> {
    if raw == "-" {
        return SourceUrl::stdin().map_err(|e| UsageError(format!("SOURCE -: {e}")));
    }
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

#[derive(Serialize)]
struct JsonSuccess<'a> {
    status: &'static str,
    source: String,
    /// The entry's line in the --files-from list.
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    code: &'a str,
    class: &'a str,
    retryable: bool,
    message: &'a str,
}

/// Where results go: stdout, unless stdout carries the file (`-` as DEST),
/// then JSON (with --json) on stderr and no human summary.
#[derive(Debug, Clone, Copy)]
struct Report {
    json: bool,
    to_stderr: bool,
}

impl Report {
    fn for_args(args: &CopyArgs) -> Self {
        if args.paths.last().is_some_and(|dest| dest == "-") {
            Self {
                json: args.json,
                to_stderr: true,
            }
        } else {
            Self {
                json: args.json || !std::io::stdout().is_terminal(),
                to_stderr: false,
            }
        }
    }
}

fn print_json<T: Serialize>(value: &T, report: Report) {
    match serde_json::to_string(value) {
        Ok(s) if report.to_stderr => eprintln!("{s}"),
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("ferry: error: cannot encode the result as JSON: {e}"),
    }
}

fn report_success(result: &ProcessFileResult, origin: &Origin, report: Report) {
    if report.json {
        print_json(
            &JsonSuccess {
                status: if result.skipped { "skipped" } else { "ok" },
                source: origin.source.redacted(),
                line: origin.line,
                destination: &result.location,
                bytes: result.bytes,
                sha256: result.sha256.hex(),
                md5: result.md5.as_ref().map(|c| c.hex()),
                duration_seconds: result.duration.as_secs_f64(),
                throughput_bytes_per_second: result.throughput(),
                resumed_from: result.resumed_from,
            },
            report,
        );
    } else if !report.to_stderr && result.skipped {
        println!(
            "skipped {}: already stored with sha256 {}",
            result.location,
            result.sha256.hex()
        );
    } else if !report.to_stderr {
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

fn report_failure(error: &ProcessFileError, report: Report) -> ExitCode {
    report_failure_of(error, report, None)
}

/// Reports a failure; `source` names the file when several are copied.
fn report_failure_of(
    error: &ProcessFileError,
    report: Report,
    origin: Option<&Origin>,
) -> ExitCode {
    let message = error.to_string();
    print_error(&message, origin);
    if report.json {
        print_json(
            &JsonFailure {
                status: "error",
                source: origin.map(|o| o.source.redacted()),
                line: origin.and_then(|o| o.line),
                code: error.code().as_str(),
                class: error.class().as_str(),
                retryable: error.class().is_retryable(),
                message: &message,
            },
            report,
        );
    }
    ExitCode::from(exit::for_error(error))
}

/// `ferry: error: …` on stderr, naming the SOURCE (and its line in
/// --files-from) when there are several.
fn print_error(message: &str, origin: Option<&Origin>) {
    match origin {
        Some(Origin {
            source,
            line: Some(line),
        }) => eprintln!("ferry: error: line {line}: {source}: {message}"),
        Some(Origin { source, .. }) => eprintln!("ferry: error: {source}: {message}"),
        None => eprintln!("ferry: error: {message}"),
    }
}

fn usage(e: &UsageError, report: Report) -> ExitCode {
    usage_of(e, report, None)
}

/// A usage error, of one SOURCE of several when `origin` names it.
fn usage_of(e: &UsageError, report: Report, origin: Option<&Origin>) -> ExitCode {
    print_error(&e.0, origin);
    if report.json {
        print_json(
            &JsonFailure {
                status: "error",
                source: origin.map(|o| o.source.redacted()),
                line: origin.and_then(|o| o.line),
                code: "usage",
                class: "client",
                retryable: false,
                message: &e.0,
            },
            report,
        );
    }
    ExitCode::from(exit::USAGE)
}

/// `--header` values, checked here rather than by clap so that no error
/// echoes a value.
fn source_headers(raw: &[String]) -> Result<SourceHeaders, UsageError> {
    let parsed = raw
        .iter()
        .enumerate()
        .map(|(i, h)| {
            SourceHeader::parse(h).map_err(|e| UsageError(format!("--header #{}: {e}", i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    SourceHeaders::new(parsed).map_err(|e| UsageError(format!("--header: {e}")))
}

/// Whether a transfer can be checkpointed: not from standard input (read
/// once) nor to standard output (written at once).
fn resumable(p: &Planned) -> bool {
    p.source.scheme() != SourceScheme::Stdin && p.target.destination != Destination::Stdout
}

/// Where a result came from, for its report.
struct Origin {
    source: SourceUrl,
    line: Option<usize>,
}

/// One planned transfer.
struct Planned {
    source: SourceUrl,
    target: CopyTarget,
    /// Its line in the --files-from list.
    line: Option<usize>,
    expected: Vec<Checksum>,
    expected_size: Option<u64>,
}

/// Why the entries could not be gathered.
enum Gathered {
    Usage(UsageError),
    /// Listing an s3:// prefix failed.
    Source(DownloadError),
}

/// The entries to copy: the SOURCE arguments or the --files-from list,
/// with every `s3://bucket/prefix/` expanded into its objects (keyed by
/// their path under the prefix).
async fn gather(args: &CopyArgs, s3: &S3Source) -> Result<Vec<ListEntry>, Gathered> {
    let (_, sources) = args
        .paths
        .split_last()
        .ok_or_else(|| Gathered::Usage(UsageError("give at least one SOURCE and a DEST".into())))?;
    let entries: Vec<ListEntry> = match &args.files_from {
        Some(list) if !sources.is_empty() => {
            return Err(Gathered::Usage(UsageError(format!(
                "give SOURCE arguments or --files-from {}, not both",
                list.display()
            ))));
        }
        Some(list) => read_list(list).map_err(Gathered::Usage)?,
        None if sources.is_empty() => {
            return Err(Gathered::Usage(UsageError(
                "give at least one SOURCE and a DEST (or --files-from FILE and a DEST)".into(),
            )));
        }
        None => sources
            .iter()
            .map(|raw| ListEntry {
                line: 0,
                source: raw.clone(),
                key: None,
                sha256: args.sha256.clone(),
                md5: args.md5.clone(),
                size: None,
            })
            .collect(),
    };
    let mut expanded = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some((bucket, prefix)) = s3_prefix(&entry.source) else {
            expanded.push(entry);
            continue;
        };
        let objects = s3.list(&bucket, &prefix).await.map_err(Gathered::Source)?;
        if objects.is_empty() {
            return Err(Gathered::Source(DownloadError::NotFound {
                url: format!("s3://{bucket}/{prefix} (no objects under it)"),
            }));
        }
        for object in objects {
            let relative = object.key.strip_prefix(&prefix).unwrap_or(&object.key);
            let key = ObjectKey::parse(relative).map_err(|e| {
                Gathered::Usage(UsageError(format!(
                    "s3://{bucket}/{}: its name cannot be a key here: {e}",
                    object.key
                )))
            })?;
            let source = SourceUrl::s3(&bucket, &object.key)
                .map_err(|e| Gathered::Usage(UsageError(format!("SOURCE: {e}"))))?;
            expanded.push(ListEntry {
                line: entry.line,
                source: source.expose().to_owned(),
                key: Some(key),
                sha256: None,
                md5: None,
                size: Some(object.size),
            });
        }
    }
    Ok(expanded)
}

/// The bucket and prefix of an `s3://bucket/prefix/` SOURCE.
fn s3_prefix(raw: &str) -> Option<(String, String)> {
    SourceUrl::parse(raw)
        .ok()
        .and_then(|s| s.s3_object())
        .filter(|(_, key)| key.is_empty() || key.ends_with('/'))
}

/// Plans every entry against DEST; several entries (or a list) need a
/// directory or a prefix as DEST, and distinct keys.
fn plan(args: &CopyArgs, entries: Vec<ListEntry>) -> Result<Vec<Planned>, UsageError> {
    let dest_raw = args
        .paths
        .last()
        .ok_or_else(|| UsageError("give at least one SOURCE and a DEST".into()))?;
    let from_list = args.files_from.is_some();
    let sources = args.paths.split_last().map_or(&[][..], |(_, s)| s);
    let expanded = sources.iter().any(|raw| s3_prefix(raw).is_some());
    if args.name_from != NameFromArg::Url
        && !(dest_raw.ends_with('/') || Path::new(dest_raw).is_dir() || dest_raw == "-")
    {
        return Err(UsageError(format!(
            "--name-from names the file in a directory or prefix DEST ending in `/` (got `{dest_raw}`)"
        )));
    }
    if entries.len() > 1 || from_list || expanded {
        let is_dir_like = dest_raw.ends_with('/') || Path::new(dest_raw).is_dir();
        if !is_dir_like {
            return Err(UsageError(format!(
                "with several sources or --files-from, DEST must be a directory or an s3://bucket/prefix/ ending in `/` (got `{dest_raw}`)"
            )));
        }
        if args.sha256.is_some() || args.md5.is_some() {
            return Err(UsageError(
                "--sha256 and --md5 name one file's digest: give them with a single SOURCE (a list carries its own digests)".into(),
            ));
        }
    }
    let is_dir = Path::new(dest_raw).is_dir();
    let mut planned: Vec<Planned> = Vec::with_capacity(entries.len());
    let mut keys: HashMap<ObjectKey, usize> = HashMap::with_capacity(entries.len());
    for entry in entries {
        let at = |message: String| match from_list {
            true => UsageError(format!("--files-from line {}: {message}", entry.line)),
            false => UsageError(message),
        };
        if from_list && entry.source == "-" && args.files_from.as_deref() == Some(Path::new("-")) {
            return Err(at(
                "SOURCE - (stdin) while the list itself is read from stdin".into(),
            ));
        }
        let source = parse_source(&entry.source).map_err(|e| at(e.0))?;
        let mut target = CopyTarget::parse(dest_raw, &source, is_dir).map_err(|e| at(e.0))?;
        if let Some(key) = entry.key {
            target.key = key;
        }
        // With --name-from the key is decided when the source answers (and
        // collisions are refused then).
        if let Some(&other) = keys.get(&target.key)
            && args.name_from == NameFromArg::Url
        {
            let other: &Planned = &planned[other];
            return Err(at(format!(
                "SOURCE {} and {} would both be stored as `{}`",
                other.source, source, target.key
            )));
        }
        keys.insert(target.key.clone(), planned.len());
        planned.push(Planned {
            source,
            target,
            line: from_list.then_some(entry.line),
            expected: [entry.sha256, entry.md5].into_iter().flatten().collect(),
            expected_size: entry.size,
        });
    }
    if args.resume && planned.iter().any(|p| !resumable(p)) {
        return Err(UsageError(
            "--resume: a copy from or to - (standard input or output) cannot resume".into(),
        ));
    }
    Ok(planned)
}

/// Reads and checks a whole --files-from list (`-`: standard input).
pub(crate) fn read_list(path: &Path) -> Result<Vec<ListEntry>, UsageError> {
    let parsed = if path == Path::new("-") {
        url_list::parse(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path).map_err(|e| {
            UsageError(format!(
                "--files-from {}: cannot read it ({e})",
                path.display()
            ))
        })?;
        url_list::parse(std::io::BufReader::new(file))
    };
    parsed.map_err(|e| UsageError(format!("--files-from {}: {e}", path.display())))
}

pub async fn run(args: CopyArgs, global: GlobalArgs) -> ExitCode {
    let endpoint_url = global.endpoint_url.clone();
    let memory_budget = global.memory_budget;
    let json = Report::for_args(&args);
    let s3_source = S3Source::new(S3Settings {
        endpoint_url: args
            .source_endpoint_url
            .clone()
            .or_else(|| endpoint_url.clone()),
        region: global.region.clone(),
        profile: global.profile.clone(),
    });
    let entries = match gather(&args, &s3_source).await {
        Ok(entries) => entries,
        Err(Gathered::Usage(e)) => return usage(&e, json),
        Err(Gathered::Source(e)) => return report_failure(&ProcessFileError::Source(e), json),
    };
    let planned = match plan(&args, entries) {
        Ok(p) => p,
        Err(e) => return usage(&e, json),
    };
    let headers = match source_headers(&args.headers) {
        Ok(h) => h,
        Err(e) => return usage(&e, json),
    };
    if args.skip_existing
        && planned.iter().any(|p| {
            p.source.scheme() != ferry_domain::SourceScheme::S3
                && !p
                    .expected
                    .iter()
                    .any(|c| c.algorithm() == ferry_domain::ChecksumAlgorithm::Sha256)
        })
    {
        eprintln!(
            "ferry: warning: --skip-existing recognises a stored file by its SHA-256: files without an expected one (--sha256, a list's digest, an s3:// source's sha256 metadata) are copied"
        );
    }
    let attributes = match args.object.attributes() {
        Ok(a) => a,
        Err(e) => return usage(&UsageError(e), json),
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
    let policy = RetryPolicy {
        attempts: args.retries.saturating_add(1),
        deadline: args.retry_deadline,
        ..RetryPolicy::default()
    };
    let setup = Setup {
        endpoint_url: endpoint_url.clone(),
        region: global.region.clone(),
        profile: global.profile.clone(),
        pools,
        checkpoints: checkpoints.as_ref(),
        keep,
        policy,
        s3_source,
    };
    let transfer = match open_transfer(&args, first, setup).await {
        Ok(t) => t,
        Err(OpenError::Usage(e)) => return usage(&e, json),
        Err(OpenError::Storage(e)) => return report_failure(&e, json),
        Err(OpenError::Internal(e)) => {
            eprintln!("ferry: error: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };

    let progress = match (args.no_progress, args.progress) {
        (true, _) | (false, ProgressMode::None) => ProgressMode::None,
        (false, ProgressMode::Auto) if std::io::stderr().is_terminal() => {
            if args.json {
                ProgressMode::None
            } else {
                ProgressMode::Bar
            }
        }
        (false, ProgressMode::Auto) => ProgressMode::Lines,
        (false, mode) => mode,
    };
    let group = MultiProgress::new();
    let name_from = match args.name_from {
        NameFromArg::Url => None,
        NameFromArg::FinalUrl => Some(NameFrom::new(NameSource::FinalUrl)),
        NameFromArg::ContentDisposition => Some(NameFrom::new(NameSource::ContentDisposition)),
    };
    let commands: Vec<(Origin, ProcessFileCommand)> = planned
        .into_iter()
        .map(|p| {
            let mut command = ProcessFileCommand::new(p.source.clone(), p.target.key.clone());
            command.name_from = name_from.clone();
            if checkpoints.is_some() && resumable(&p) && name_from.is_none() {
                command.transfer_id = transfer_id(
                    &p.source,
                    &transfer.location(&p.target.key),
                    endpoint_url.as_deref(),
                );
            }
            command.expected = p.expected;
            command.expected_size = p.expected_size;
            command.max_size = args.max_size.unwrap_or(ByteSize::new(u64::MAX));
            command.compute_md5 = args.compute_md5;
            command.headers = headers.clone();
            command.attributes = attributes.clone();
            command.skip_existing = args.skip_existing;
            command.no_clobber = args.no_clobber;
            let label = || p.source.file_name().unwrap_or_else(|| "download".into());
            match progress {
                ProgressMode::Bar => {
                    command.progress = Arc::new(TerminalProgress::in_group(label(), &group));
                }
                ProgressMode::Lines => {
                    command.progress = Arc::new(LineProgress::new(label(), args.progress_every));
                }
                ProgressMode::Auto | ProgressMode::None => {}
            }
            let origin = Origin {
                source: p.source,
                line: p.line,
            };
            (origin, command)
        })
        .collect();

    if args.resume
        && let Some(store) = &checkpoints
    {
        for (Origin { source, .. }, command) in &commands {
            let Some(id) = &command.transfer_id else {
                continue;
            };
            if !matches!(store.load(id).await, Ok(Some(_))) {
                return usage(
                    &UsageError(format!(
                        "--resume: there is no checkpoint of {source} to {} in {}; run without --resume to start it",
                        transfer.location(&command.key),
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
    // DEST would take up the same checkpoint. Each lock is held while its
    // transfer runs (so open lock files are bounded by --concurrency, not
    // by the number of sources, whatever the open-files limit).
    let locks = checkpoints.as_ref();

    let several = commands.len() > 1;
    let use_case = transfer.as_ref();
    let transfers = futures::stream::iter(commands.into_iter().enumerate())
        .map(|(i, (source, command))| async move {
            let _lock = match (locks, &command.transfer_id) {
                (Some(store), Some(id)) => match lock_transfer(store, id) {
                    Ok(lock) => Some(lock),
                    Err(e) => return (i, source, Err(Failure::Usage(e))),
                },
                _ => None,
            };
            let outcome = match use_case.run(command, 0, &Unobserved).await {
                Ok(result) => Ok(result),
                Err(TransferError::Failed(e)) => Err(Failure::Transfer(e)),
                // Unobserved never refuses an attempt.
                Err(TransferError::Refused(e)) => Err(Failure::Transfer(
                    ProcessFileError::Storage(ferry_domain::ports::StorageError::Unexpected {
                        location: String::new(),
                        source: Box::new(e),
                    }),
                )),
            };
            (i, source, outcome)
        })
        .buffer_unordered(usize::from(args.concurrency));
    let mut outcomes = Vec::new();
    let finished = async {
        futures::pin_mut!(transfers);
        while let Some((i, origin, outcome)) = transfers.next().await {
            match &outcome {
                Ok(result) => report_success(result, &origin, json),
                Err(Failure::Transfer(error)) => {
                    report_failure_of(error, json, several.then_some(&origin));
                }
                Err(Failure::Usage(error)) => {
                    usage_of(error, json, several.then_some(&origin));
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
        return ExitCode::from(exit::INTERRUPTED);
    }
    // The exit code of the first failed SOURCE, in command-line order.
    outcomes.sort_by_key(|(i, _)| *i);
    let code = outcomes
        .iter()
        .find_map(|(_, o)| {
            o.as_ref().err().map(|f| match f {
                Failure::Transfer(e) => exit::for_error(e),
                Failure::Usage(_) => exit::USAGE,
            })
        })
        .unwrap_or(exit::OK);
    ExitCode::from(code)
}

/// Why the destination could not be opened.
enum OpenError {
    Usage(UsageError),
    Storage(ProcessFileError),
    /// The HTTP client could not be built (a bug or a broken TLS setup).
    Internal(String),
}

/// The transfer for DEST: the source client (with the guard when asked),
/// the destination's storage from the one resolver, checkpoints, the memory
/// pools and the retry policy; the source client retries before a body
/// with the same policy and marks what it gave up on, so nothing retries
/// twice.
/// What the transfer is built from, besides the arguments.
struct Setup<'a> {
    endpoint_url: Option<String>,
    region: Option<String>,
    profile: Option<String>,
    pools: MemoryPools,
    checkpoints: Option<&'a CheckpointFiles>,
    keep: HashSet<PathBuf>,
    policy: RetryPolicy,
    s3_source: S3Source,
}

async fn open_transfer(
    args: &CopyArgs,
    first: &Planned,
    setup: Setup<'_>,
) -> Result<Arc<dyn TransferPort>, OpenError> {
    let Setup {
        endpoint_url,
        region,
        profile,
        pools,
        checkpoints,
        keep,
        policy,
        s3_source,
    } = setup;
    let destination = &first.target.destination;
    if matches!(destination, Destination::S3 { .. }) && args.part_size.as_u64() < 5 * 1024 * 1024 {
        return Err(OpenError::Usage(UsageError(format!(
            "--part-size {} is below S3's 5 MiB minimum",
            args.part_size
        ))));
    }
    let guard = (args.source_guard == Toggle::On).then(|| {
        SourceGuard::new(EgressPolicy::with_allowed(
            args.sources.allow_source.clone(),
        ))
    });
    let tls = args
        .tls
        .trust()
        .map_err(|e| OpenError::Usage(UsageError(e)))?;
    let http = PooledHttpClient::new(HttpClientConfig {
        guard,
        retry: policy,
        tls,
        ..HttpClientConfig::default()
    })
    .map_err(|e| OpenError::Internal(e.to_string()))?;
    let downloader = SourceRouter::new(Arc::new(http), Some(Arc::new(LocalFileSource::new())))
        .with_stdin(Arc::new(StdinSource::new()))
        .with_s3(Arc::new(s3_source));
    let storages = DefaultStorageResolver::new(
        PathBuf::from("."),
        S3Settings {
            endpoint_url,
            region,
            profile,
        },
        S3StorageConfig {
            part_size: args.part_size.as_u64(),
            verify_part_etags: args.verify_parts,
            memory: Some(pools.parts.clone()),
            digest_metadata: args.digest_metadata.mode(),
            ..S3StorageConfig::default()
        },
    )
    .with_checkpoint_bytes(args.checkpoint_interval.as_u64())
    .with_local_sweep(keep);
    let factory = TransferFactory::new(
        Arc::new(downloader),
        Arc::new(storages),
        ProcessFileConfig {
            memory: Some(Arc::new(pools)),
            checkpoints: checkpoints
                .cloned()
                .map(|c| Arc::new(c) as Arc<dyn CheckpointStorePort>),
            ..ProcessFileConfig::default()
        },
        policy,
    );
    factory
        .open(destination)
        .await
        .map_err(|e| match destination {
            // A directory that cannot be made or written is a DEST problem.
            Destination::Local { .. } => OpenError::Usage(UsageError(format!("DEST: {e}"))),
            _ => OpenError::Storage(e.into()),
        })
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

/// Why one SOURCE of a copy was not stored.
enum Failure {
    Transfer(ProcessFileError),
    /// Refused before it started (its transfer is locked by another
    /// process, or the state directory cannot be used).
    Usage(UsageError),
}

/// Locks one transfer (one process per transfer); the lock is let go when
/// the guard drops.
fn lock_transfer(store: &CheckpointFiles, id: &TransferId) -> Result<TransferLock, UsageError> {
    store.lock(id).map_err(|e| match e {
        LockError::Held => UsageError(
            "another ferry copy of the same SOURCE to the same DEST is running; wait for it (it resumes where it stops)".into(),
        ),
        LockError::Failed(reason) => UsageError(format!("--state-dir: {reason}")),
    })
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
