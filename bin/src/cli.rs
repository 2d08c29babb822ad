//! Command-line surface. Every flag can also come from `FERRY_<FLAG>`.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use ferry_adapters::http::{TlsRoots, TlsTrust};
use ferry_domain::{AllowEntry, ByteSize, Checksum};

use crate::exit;

/// `ferry --version`: the crate version, the commit and the build date.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("FERRY_COMMIT"),
    " ",
    env!("FERRY_BUILD_DATE"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version = VERSION,
    about = "Moves files from URLs into storage in one streaming pass, verified before they become visible."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// S3 endpoint for s3:// destinations (e.g. http://127.0.0.1:3900);
    /// defaults to AWS_ENDPOINT_URL, then AWS itself.
    #[arg(long, global = true, env = "FERRY_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Job store: postgres://… for a shared store; default: SQLite in the
    /// data directory.
    #[arg(long, global = true, env = "FERRY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Memory for buffers that hold file bytes where a part must be kept
    /// (S3 uploads of unknown-length or non-range sources); transfers wait
    /// for it rather than exceed it.
    #[arg(long, global = true, env = "FERRY_MEMORY_BUDGET", default_value = "64MiB", value_parser = parse_size)]
    pub memory_budget: ByteSize,
    /// AWS region for S3 (else AWS_REGION, the profile's, then us-east-1).
    /// A bucket that answers it lives elsewhere is used in its own region.
    #[arg(long, global = true, env = "FERRY_REGION")]
    pub region: Option<String>,
    /// A named profile of the AWS config and credentials files (else
    /// AWS_PROFILE).
    #[arg(long, global = true, env = "FERRY_PROFILE")]
    pub profile: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

/// How `ferry copy` shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    Auto,
    Bar,
    Lines,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy files: each SOURCE (http://, https://, file://, a local path,
    /// s3://bucket/key, s3://bucket/prefix/ for every object under it, or
    /// `-` for standard input) into DEST: a directory (ending in `/` or
    /// existing), a file path, s3://bucket/key, s3://bucket/prefix/, or `-`
    /// for standard output (a file named `-` is `./-`). With several
    /// sources (or --files-from LIST) DEST must be a directory or a prefix;
    /// they run --concurrency at a time.
    ///
    /// Examples:
    ///   ferry copy https://example.com/big.iso ./downloads/
    ///   ferry copy -H 'Authorization: Bearer TOKEN' https://internal/x.bin s3://bucket/in/
    ///   ferry copy --ca-cert corp-ca.pem https://files.corp/a.tar s3://bucket/a.tar
    ///   tar c dir | ferry copy - s3://bucket/backup.tar
    ///   ferry copy s3://bucket/logs/ ./logs/        ferry copy s3://bucket/k - | less
    ///   ferry copy --files-from urls.txt s3://bucket/prefix/
    #[command(verbatim_doc_comment)]
    Copy(Box<CopyArgs>),
    /// Run the job service: the HTTP API and the job runner.
    Serve(Box<ServeArgs>),
    /// Talk to a running `ferry serve`.
    Job(JobArgs),
    /// Make API tokens for `ferry serve --tokens`.
    Token(TokenArgs),
    /// Print a shell completion script (e.g. `ferry completions bash >
    /// /usr/share/bash-completion/completions/ferry`).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) on stdout.
    Manpage,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random token (line 1) and its tokens-file line (line 2:
    /// `sha256:<hash> NAME [admin] [scope=...]`); only the hash goes in the
    /// file.
    Create {
        /// Who the token is for; it owns the jobs submitted with it.
        name: String,
        /// The token sees every job, not only its own, and may write
        /// anywhere unless --scope says otherwise.
        #[arg(long)]
        admin: bool,
        /// Where its jobs may write (repeatable): `dir:PREFIX`, `dir:*`,
        /// `s3://BUCKET[/PREFIX]`, `s3://*/PREFIX`, `s3://*` or `*`.
        /// Default: its own name's prefix (`dir:NAME`, `s3://*/NAME`);
        /// admins: anywhere.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
    },
}

/// Whether the API needs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Required when listening on a non-loopback address or when --tokens
    /// is given; open otherwise.
    Auto,
    /// Always required (needs --tokens).
    Required,
    /// Never required (not for untrusted networks).
    Off,
}

/// The SSRF guard: on, sources may only resolve to public addresses (plus
/// --allow-source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Toggle {
    On,
    Off,
}

/// Which sources may be fetched (the SSRF guard).
#[derive(Debug, Clone, Args)]
pub struct SourceGuardArgs {
    /// Networks (CIDR or address) and host names (`files.internal`,
    /// `*.internal`) sources may reach although they are not public;
    /// comma-separated or repeated.
    #[arg(long, env = "FERRY_ALLOW_SOURCE", value_delimiter = ',', value_parser = parse_allow)]
    pub allow_source: Vec<AllowEntry>,
}

/// What an S3 object carries besides its bytes (a directory DEST keeps
/// none of these; see docs/s3.md).
#[derive(Debug, Clone, Args)]
pub struct ObjectArgs {
    /// Content-Type of the object (default: the source's, else a guess
    /// from the key's extension, else application/octet-stream).
    #[arg(long, env = "FERRY_CONTENT_TYPE")]
    pub content_type: Option<String>,
    #[arg(long, env = "FERRY_CACHE_CONTROL")]
    pub cache_control: Option<String>,
    #[arg(long, env = "FERRY_CONTENT_DISPOSITION")]
    pub content_disposition: Option<String>,
    /// Stored as given (e.g. gzip); ferry never decompresses.
    #[arg(long, env = "FERRY_CONTENT_ENCODING")]
    pub content_encoding: Option<String>,
    /// User metadata KEY=VALUE (x-amz-meta-KEY); repeatable.
    #[arg(
        long = "metadata",
        env = "FERRY_METADATA",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    pub metadata: Vec<String>,
    /// Object tag KEY=VALUE; repeatable (at most 10).
    #[arg(
        long = "tag",
        env = "FERRY_TAG",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    pub tags: Vec<String>,
    /// Storage class (STANDARD, STANDARD_IA, GLACIER_IR, ...).
    #[arg(long, env = "FERRY_STORAGE_CLASS")]
    pub storage_class: Option<String>,
    /// Server-side encryption: AES256 (SSE-S3) or aws:kms (SSE-KMS).
    #[arg(long, env = "FERRY_SSE", value_parser = ["AES256", "aws:kms"])]
    pub sse: Option<String>,
    /// The KMS key for --sse aws:kms (default: the bucket's).
    #[arg(long, env = "FERRY_SSE_KMS_KEY_ID")]
    pub sse_kms_key_id: Option<String>,
    /// Canned ACL (private, bucket-owner-full-control, ...).
    #[arg(long, env = "FERRY_ACL")]
    pub acl: Option<String>,
    /// Directory DEST: give the file the source's Last-Modified as its
    /// modification time.
    #[arg(long, env = "FERRY_PRESERVE_MTIME")]
    pub preserve_mtime: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DigestMetadataArg {
    Auto,
    Tag,
    Copy,
    None,
}

impl DigestMetadataArg {
    pub fn mode(self) -> ferry_adapters::s3::DigestMetadata {
        use ferry_adapters::s3::DigestMetadata;
        match self {
            DigestMetadataArg::Auto => DigestMetadata::Auto,
            DigestMetadataArg::Tag => DigestMetadata::Tag,
            DigestMetadataArg::Copy => DigestMetadata::Copy,
            DigestMetadataArg::None => DigestMetadata::None,
        }
    }
}

impl ObjectArgs {
    /// The flags as requested attributes (`KEY=VALUE` pairs split), or
    /// one line naming the flag that is wrong.
    pub fn requested(&self) -> Result<ferry_domain::RequestedAttributes, String> {
        use ferry_domain::attributes::parse_pair;
        let pairs = |flag: &str, raw: &[String]| {
            raw.iter()
                .map(|p| parse_pair(p).map_err(|e| format!("{flag}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(ferry_domain::RequestedAttributes {
            content_type: self.content_type.clone(),
            cache_control: self.cache_control.clone(),
            content_disposition: self.content_disposition.clone(),
            content_encoding: self.content_encoding.clone(),
            metadata: pairs("--metadata", &self.metadata)?,
            tags: pairs("--tag", &self.tags)?,
            storage_class: self.storage_class.clone(),
            sse: self.sse.clone(),
            sse_kms_key_id: self.sse_kms_key_id.clone(),
            acl: self.acl.clone(),
            preserve_mtime: self.preserve_mtime,
        })
    }

    /// The attributes, or one line naming the flag that is wrong.
    pub fn attributes(&self) -> Result<ferry_domain::ObjectAttributes, String> {
        self.requested()?.validate().map_err(|e| {
            let flag = match e.field {
                "tags" => "--tag".to_owned(),
                field => format!("--{}", field.replace('_', "-")),
            };
            format!("{flag}: {}", e.message)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NameFromArg {
    Url,
    FinalUrl,
    ContentDisposition,
}

/// Which certificate authorities HTTPS sources are checked against.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Also trust the CA certificates in this PEM file (an internal CA);
    /// repeatable, or comma-separated in FERRY_CA_CERT.
    #[arg(
        long,
        env = "FERRY_CA_CERT",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub ca_cert: Vec<std::path::PathBuf>,
    /// Built-in roots: `webpki` (Mozilla's, compiled in), `native` (the
    /// system store, or SSL_CERT_FILE / SSL_CERT_DIR when set) or `both`.
    #[arg(long, env = "FERRY_TLS_ROOTS", value_enum, default_value_t = TlsRootsArg::Both)]
    pub tls_roots: TlsRootsArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsRootsArg {
    Webpki,
    Native,
    Both,
}

impl TlsArgs {
    /// The trust anchors, or one line saying which file is wrong.
    pub fn trust(&self) -> Result<TlsTrust, String> {
        let roots = match self.tls_roots {
            TlsRootsArg::Webpki => TlsRoots::Webpki,
            TlsRootsArg::Native => TlsRoots::Native,
            TlsRootsArg::Both => TlsRoots::Both,
        };
        TlsTrust::load(roots, &self.ca_cert).map_err(|e| e.0)
    }
}

fn parse_caps(s: &str) -> Result<ferry_domain::AdmissionCaps, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let numbers: Option<Vec<usize>> = parts.iter().map(|p| p.parse().ok()).collect();
    match numbers.as_deref() {
        Some(&[light, moderate, heavy]) if light >= moderate && moderate >= heavy && heavy >= 1 => {
            Ok(ferry_domain::AdmissionCaps {
                light,
                moderate,
                heavy,
            })
        }
        _ => Err(format!(
            "`{s}` is not three caps LIGHT,MODERATE,HEAVY, decreasing and at least 1 (e.g. 6,3,1)"
        )),
    }
}

fn parse_allow(s: &str) -> Result<AllowEntry, String> {
    AllowEntry::parse(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "FERRY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Run as one node of a cluster: file tasks are shared with the other
    /// nodes on the same PostgreSQL --database-url (see docs/cluster.md).
    #[arg(long, env = "FERRY_CLUSTER")]
    pub cluster: bool,
    /// This node's id in a cluster (letters, digits, '.', '_', '-'; unique
    /// among the nodes); default: host name and a random suffix.
    #[arg(long, env = "FERRY_NODE_ID", requires = "cluster")]
    pub node_id: Option<String>,
    /// In a cluster: how long a node whose heartbeat stopped keeps its
    /// file tasks before other nodes take them over (from checkpoints).
    #[arg(long, env = "FERRY_LEASE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub lease_timeout: std::time::Duration,
    /// How often checkpoints that no live task owns (what a crash between
    /// the end of a file and its cleanup leaves) are looked for; their temp
    /// files are removed and their uploads aborted once they are 5 minutes
    /// old. Startup always takes every orphan at once.
    #[arg(long, env = "FERRY_ORPHAN_SWEEP_INTERVAL", default_value = "10m", value_parser = parse_interval)]
    pub orphan_sweep_interval: std::time::Duration,
    /// How long an ended job (its files' states, events and checkpoints)
    /// is kept after it ended; `off` keeps every job. Ended jobs older
    /// than this are deleted at startup and then regularly (every tenth
    /// of it, at most every 10 minutes).
    #[arg(long, env = "FERRY_RETAIN_JOBS", default_value = "30d", value_parser = parse_maybe_duration)]
    pub retain_jobs: MaybeDuration,
    /// Where the SQLite job store and directory destinations live.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "./ferry-data")]
    pub data_dir: std::path::PathBuf,
    /// Largest request body accepted (413 beyond).
    #[arg(long, env = "FERRY_MAX_BODY", default_value = "1MiB", value_parser = parse_size)]
    pub max_body: ByteSize,
    /// Files of one job transferred at once.
    #[arg(long, env = "FERRY_PER_JOB_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub per_job_concurrency: u16,
    /// Files transferred at once across all jobs.
    #[arg(long, env = "FERRY_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Files one owner (token) transfers at once, across its jobs; free
    /// slots go round-robin between owners. Default: three quarters of
    /// --concurrency when the API has tokens (so another tenant always
    /// finds a slot), all of it when it has none (one owner).
    #[arg(long, env = "FERRY_PER_OWNER_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub per_owner_concurrency: Option<u16>,
    /// The slowest a source may send, per second on average over each
    /// --min-rate-window; slower fails the attempt (retried, resuming from
    /// its checkpoint) so a trickling source cannot hold a slot for ever.
    /// 0: no minimum.
    #[arg(long, env = "FERRY_MIN_RATE", default_value = "16KiB", value_parser = parse_size)]
    pub min_rate: ByteSize,
    /// The longest one file may take in a run, its attempts, retries and
    /// waits for a slot included; past it the file fails (`off`: no limit).
    #[arg(long, env = "FERRY_FILE_DEADLINE", default_value = "24h", value_parser = parse_maybe_duration)]
    pub file_deadline: MaybeDuration,
    /// The window --min-rate is averaged over.
    #[arg(long, env = "FERRY_MIN_RATE_WINDOW", default_value = "60s", value_parser = parse_interval)]
    pub min_rate_window: std::time::Duration,
    /// Export phases (starting and polling a provider) running at once;
    /// more jobs of an export wait, pending.
    #[arg(long, env = "FERRY_MAX_EXPORT_PHASES", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_export_phases: u16,
    /// Most files one job may have.
    #[arg(long, env = "FERRY_MAX_FILES_PER_JOB", default_value_t = 10_000)]
    pub max_files_per_job: usize,
    /// Largest file accepted.
    #[arg(long, env = "FERRY_MAX_SIZE", default_value = "5GiB", value_parser = parse_size)]
    pub max_size: ByteSize,
    /// S3 multipart part size.
    #[arg(long, env = "FERRY_PART_SIZE", default_value = "8MiB", value_parser = parse_size)]
    pub part_size: ByteSize,
    /// Least bytes between two fsyncs (and checkpoints) of a directory
    /// write; 0: every 5 chunks.
    #[arg(long, env = "FERRY_CHECKPOINT_INTERVAL", default_value = "4MiB", value_parser = parse_size)]
    pub checkpoint_interval: ByteSize,
    /// Check each S3 part's MD5 against the ETag the server returns (one
    /// more MD5 pass over the bytes; as `ferry copy --verify-parts`).
    #[arg(long, env = "FERRY_VERIFY_PARTS")]
    pub verify_parts: bool,
    /// How verified digests reach S3 objects whose digest the job did not
    /// give (as `ferry copy --digest-metadata`).
    #[arg(long, env = "FERRY_DIGEST_METADATA", value_enum, default_value_t = DigestMetadataArg::Auto)]
    pub digest_metadata: DigestMetadataArg,
    /// AWS Step Functions endpoint for task-token callbacks (default: AWS).
    #[arg(long, env = "FERRY_SFN_ENDPOINT_URL")]
    pub sfn_endpoint_url: Option<String>,
    /// POST every job event there as JSON, signed (needs --webhook-secret).
    #[arg(long, env = "FERRY_WEBHOOK_URL", requires = "webhook_secret")]
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key for the X-Ferry-Signature header of webhook calls.
    #[arg(long, env = "FERRY_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Event streams send a heartbeat after this long without an event.
    #[arg(long, env = "FERRY_HEARTBEAT", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat: std::time::Duration,
    /// A file's first progress event comes this long after its bytes
    /// begin to move, then at most one per interval (0ms: every count).
    #[arg(long, env = "FERRY_PROGRESS_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub progress_interval: std::time::Duration,
    /// The shortest poll interval an export job may ask for (a shorter
    /// `export.poll.base_interval_ms` is refused with 400), so a job cannot
    /// turn ferry into a flood against a provider.
    #[arg(long, env = "FERRY_MIN_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub min_poll_interval: std::time::Duration,
    /// Recent events held in memory for live streams (shared); a stream
    /// further behind catches up from the job store.
    #[arg(long, env = "FERRY_STREAM_BUFFER", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    pub stream_buffer: u32,
    /// A stream client more events behind than this gets `lagged` and is closed.
    #[arg(long, env = "FERRY_STREAM_MAX_LAG", default_value_t = 100_000)]
    pub stream_max_lag: u64,
    /// A client must send its request headers within this (slowloris guard).
    #[arg(long, env = "FERRY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: std::time::Duration,
    /// A request body must have arrived whole within this (a trickled body
    /// gets 408 and its connection is closed).
    #[arg(long, env = "FERRY_BODY_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_read_timeout: std::time::Duration,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish.
    #[arg(long, env = "FERRY_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: std::time::Duration,
    /// Tokens file: lines `sha256:<hash> NAME [admin]` (ferry token create).
    #[arg(long, env = "FERRY_TOKENS")]
    pub tokens: Option<std::path::PathBuf>,
    /// When the API needs a bearer token.
    #[arg(long, env = "FERRY_AUTH", value_enum, default_value_t = AuthMode::Auto)]
    pub auth: AuthMode,
    /// Serve /metrics without a token.
    #[arg(long, env = "FERRY_PUBLIC_METRICS")]
    pub public_metrics: bool,
    /// Refuse sources that resolve to loopback, private, link-local and
    /// other non-public addresses (SSRF guard).
    #[arg(long, env = "FERRY_SOURCE_GUARD", value_enum, default_value_t = Toggle::On)]
    pub source_guard: Toggle,
    #[command(flatten)]
    pub sources: SourceGuardArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Accept file:// sources from the API, confined to this directory
    /// (refused otherwise).
    #[arg(long, env = "FERRY_FILE_ROOT")]
    pub file_root: Option<std::path::PathBuf>,
    /// Most request headers accepted (431 beyond).
    #[arg(long, env = "FERRY_MAX_HEADERS", default_value_t = 64, value_parser = clap::value_parser!(u16).range(8..=1000))]
    pub max_headers: u16,
    /// Largest request head (request line and headers) accepted (431 beyond).
    #[arg(long, env = "FERRY_MAX_HEADER_BYTES", default_value = "16KiB", value_parser = parse_size)]
    pub max_header_bytes: ByteSize,
    /// Open client connections at most; beyond it, new connections wait in
    /// the kernel's accept queue until one closes (idle ones close after
    /// --header-read-timeout).
    #[arg(long, env = "FERRY_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Event streams one caller may hold open at once (429 beyond; 0: no limit).
    #[arg(long, env = "FERRY_MAX_STREAMS_PER_CALLER", default_value_t = 64)]
    pub max_streams_per_caller: usize,
    /// Transfers admitted at the LIGHT, MODERATE and HEAVY backpressure
    /// levels (NONE admits --concurrency; CRITICAL pauses).
    #[arg(long, env = "FERRY_ADMISSION_CAPS", default_value = "6,3,1", value_parser = parse_caps)]
    pub admission_caps: ferry_domain::AdmissionCaps,
    /// Per-chunk processing latency target (the backpressure latency factor).
    #[arg(long, env = "FERRY_CHUNK_LATENCY_TARGET", default_value = "200ms", value_parser = parse_duration)]
    pub chunk_latency_target: std::time::Duration,
    /// Unfinished jobs one owner (token) may have at once (429
    /// `quota_exceeded` beyond; 0: no limit; a token's `active-jobs=N`
    /// replaces it).
    #[arg(long, env = "FERRY_QUOTA_ACTIVE_JOBS", default_value_t = 1000)]
    pub quota_active_jobs: u64,
    /// Files queued or running one owner may have across its jobs (a new
    /// job's files count at once; 0: no limit; `queued-files=N`).
    #[arg(long, env = "FERRY_QUOTA_QUEUED_FILES", default_value_t = 200_000)]
    pub quota_queued_files: u64,
    /// Jobs in their export phase one owner may have at once (0: no
    /// limit; `active-exports=N`).
    #[arg(long, env = "FERRY_QUOTA_ACTIVE_EXPORTS", default_value_t = 20)]
    pub quota_active_exports: u64,
    /// Jobs one caller may submit per minute (429 with Retry-After beyond; 0: no limit).
    #[arg(long, env = "FERRY_JOBS_PER_MINUTE", default_value_t = 120)]
    pub jobs_per_minute: u32,
}

/// `250ms`, `15s`, `2m`, `1h`, or plain seconds.
/// A duration that can be `off` (`None`), e.g. `--retain-jobs`.
#[derive(Debug, Clone, Copy)]
pub struct MaybeDuration(pub Option<std::time::Duration>);

fn parse_maybe_duration(raw: &str) -> Result<MaybeDuration, String> {
    if raw.trim() == "off" {
        return Ok(MaybeDuration(None));
    }
    let keep = parse_duration(raw)?;
    if keep < std::time::Duration::from_secs(1) {
        return Err(format!("`{raw}` is too short: at least 1s (or `off`)"));
    }
    Ok(MaybeDuration(Some(keep)))
}

fn parse_interval(raw: &str) -> Result<std::time::Duration, String> {
    let every = parse_duration(raw)?;
    if every < std::time::Duration::from_secs(1) {
        return Err(format!("`{raw}` is too short: at least 1s"));
    }
    Ok(every)
}

pub fn parse_duration(raw: &str) -> Result<std::time::Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{raw}` is not a duration (e.g. 250ms, 15s, 2m, 30d)"))?;
    match unit.trim() {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "" | "s" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(std::time::Duration::from_secs(n.saturating_mul(3600))),
        "d" => Ok(std::time::Duration::from_secs(n.saturating_mul(86_400))),
        other => Err(format!(
            "`{other}` is not a duration unit (use ms, s, m, h or d)"
        )),
    }
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// The ferry server.
    #[arg(
        long,
        global = true,
        env = "FERRY_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// Bearer token for a server that needs one (ferry token create).
    #[arg(long, global = true, env = "FERRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: JobCommand,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a job from a JSON file ({"files":[{"source","key","sha256"?}],"destination"?}).
    ///
    /// Or from a URL list: `--files-from FILE --destination DEST` (the list
    /// format of `ferry copy --files-from`).
    Submit {
        #[arg(required_unless_present = "files_from", conflicts_with = "files_from")]
        file: Option<std::path::PathBuf>,
        /// A URL list (`-`: standard input) instead of a JSON file.
        #[arg(long, value_name = "FILE", requires = "destination")]
        files_from: Option<std::path::PathBuf>,
        /// With --files-from: the job's destination (s3://bucket/prefix or
        /// a directory under the server's files root).
        #[arg(long, requires = "files_from")]
        destination: Option<String>,
        /// Wait for the job to end, following its event stream (as `ferry job
        /// watch`); the exit code tells how it ended.
        #[arg(long)]
        wait: bool,
        /// Attributes of every object (over a JSON job's own `attributes`).
        #[command(flatten)]
        object: Box<ObjectArgs>,
        /// Skip files the destination already holds with the same size and
        /// SHA-256 (`if_exists: skip`; every file needs its SHA-256).
        #[arg(long, conflicts_with = "no_clobber")]
        skip_existing: bool,
        /// Never replace an existing key (`if_exists: refuse`): such a file
        /// fails with `destination_exists`.
        #[arg(long)]
        no_clobber: bool,
    },
    /// Follow a job's event stream until it ends: per-file progress bars on
    /// a terminal, NDJSON lines on stderr otherwise; reconnects without gap
    /// or duplicate after a drop or a server restart; prints the final job
    /// on stdout and exits with its code (0, 7 with errors, 8 failed or
    /// cancelled, 9 server unreachable).
    Watch { id: String },
    /// Show a job: its status, summary and first 100 files (`files_next_cursor`
    /// is set when it has more; `ferry job files` prints them all).
    Status { id: String },
    /// Print a job's files, one JSON object a line (NDJSON), in index
    /// order, every page of them.
    Files {
        id: String,
        /// Only files in this state (queued, running, succeeded, skipped,
        /// failed, cancelled).
        #[arg(long)]
        status: Option<String>,
    },
    /// Cancel a job.
    Cancel { id: String },
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// SOURCE... DEST: one or more sources (URLs or local paths), then the
    /// destination (a directory, a file path, s3://bucket/key or
    /// s3://bucket/prefix/).
    #[arg(value_name = "SOURCE... DEST", num_args = 1.., required = true)]
    pub paths: Vec<String>,
    /// Copy every entry of this list (`-`: standard input) into DEST (a
    /// directory or prefix): one `SOURCE [KEY [SHA256]]` a line (`#`
    /// comments; KEY `-` keeps the default name), or CSV with a header
    /// (source,key,sha256,md5,size). The whole list is checked first;
    /// errors and results name the line.
    #[arg(long, env = "FERRY_FILES_FROM", value_name = "FILE")]
    pub files_from: Option<std::path::PathBuf>,
    /// How a file is named in a directory or prefix DEST: `url` (the
    /// last segment of the URL given, percent-decoded), `final-url` (of the
    /// URL after redirects) or `content-disposition` (the server's
    /// filename, else the final URL's). A name from the answer is decided
    /// when the source answers, made safe as one key segment; two sources
    /// of one run may not take the same name. Copies named this way are not
    /// checkpointed.
    #[arg(long, env = "FERRY_NAME_FROM", value_enum, default_value_t = NameFromArg::Url)]
    pub name_from: NameFromArg,
    #[command(flatten)]
    pub object: ObjectArgs,
    /// How the verified SHA-256/MD5 reach an object when they were not
    /// known at start (with --sha256/--md5 they go on as metadata at
    /// create): `auto` (default: no second write; the digest is in the
    /// result), `tag` (object tags, once, after the commit), `copy` (a
    /// self-copy: a second write) or `none` (never, not even when known).
    #[arg(long, env = "FERRY_DIGEST_METADATA", value_enum, default_value_t = DigestMetadataArg::Auto)]
    pub digest_metadata: DigestMetadataArg,
    /// Skip a file the destination already holds: an object of the same
    /// size whose SHA-256 (stored, or read back) is the expected one
    /// (--sha256, a list's digest, or an s3:// source's own sha256
    /// metadata; without one the file is copied).
    /// Nothing is fetched from the source; the result says "skipped".
    #[arg(long, env = "FERRY_SKIP_EXISTING", conflicts_with = "no_clobber")]
    pub skip_existing: bool,
    /// Never replace an existing key: such a file fails with exit 11 and
    /// nothing is fetched or written.
    #[arg(long, env = "FERRY_NO_CLOBBER")]
    pub no_clobber: bool,
    /// S3 endpoint for s3:// SOURCEs when it differs from DEST's
    /// (--endpoint-url); default: the same.
    #[arg(long, env = "FERRY_SOURCE_ENDPOINT_URL")]
    pub source_endpoint_url: Option<String>,
    /// Transfers run at once when several sources are given.
    #[arg(long, env = "FERRY_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Expected SHA-256 (hex); the file is not stored if it differs.
    #[arg(long, env = "FERRY_SHA256", value_parser = parse_sha256)]
    pub sha256: Option<Checksum>,
    /// Expected MD5 (hex); the file is not stored if it differs.
    #[arg(long, env = "FERRY_MD5", value_parser = parse_md5)]
    pub md5: Option<Checksum>,
    /// Largest file accepted, e.g. 5GiB, 100MB, 4096 (default: no limit;
    /// memory does not grow with the size).
    #[arg(long, env = "FERRY_MAX_SIZE", value_parser = parse_size)]
    pub max_size: Option<ByteSize>,
    /// S3 multipart part size (at least 5MiB; raised so a file needs at most
    /// 10,000 parts).
    #[arg(long, env = "FERRY_PART_SIZE", default_value = "8MiB", value_parser = parse_size)]
    pub part_size: ByteSize,
    /// Check each S3 part's MD5 (computed in flight) against the ETag the
    /// server returns: detects corruption on the way in, at the cost of one
    /// more MD5 pass over the bytes.
    #[arg(long, env = "FERRY_VERIFY_PARTS")]
    pub verify_parts: bool,
    /// Compute MD5 too, even when no --md5 is given.
    #[arg(long, env = "FERRY_COMPUTE_MD5")]
    pub compute_md5: bool,
    /// Print one JSON object with the result (the default when stdout is not a terminal).
    #[arg(long, env = "FERRY_JSON")]
    pub json: bool,
    /// Never show progress (same as `--progress none`).
    #[arg(long, env = "FERRY_NO_PROGRESS")]
    pub no_progress: bool,
    /// How progress shows on stderr: `bar` (a terminal bar), `lines` (a
    /// short line every --progress-every: for CI and Kubernetes logs),
    /// `none`, or `auto`: a bar on a terminal, lines otherwise. The JSON
    /// result on stdout is the same whatever this is.
    #[arg(long, env = "FERRY_PROGRESS", value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// With `--progress lines`: at most one line per file this often.
    #[arg(long, env = "FERRY_PROGRESS_EVERY", default_value = "5s", value_parser = parse_duration)]
    pub progress_every: std::time::Duration,
    /// Refuse sources that resolve to non-public addresses (SSRF guard;
    /// on by default for ferry serve).
    #[arg(long, env = "FERRY_SOURCE_GUARD", value_enum, default_value_t = Toggle::Off)]
    pub source_guard: Toggle,
    #[command(flatten)]
    pub sources: SourceGuardArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Send this header to HTTP sources, as `Name: value` (e.g.
    /// `Authorization: Bearer …`); repeatable, newline-separated in
    /// FERRY_HEADER. Values are secrets: never logged or printed, and not
    /// sent after a redirect to another host.
    // Parsed by `copy` (SourceHeader::parse), not by clap: clap's error
    // would echo the value.
    #[arg(
        long = "header",
        short = 'H',
        env = "FERRY_HEADER",
        value_delimiter = '\n',
        value_name = "NAME: VALUE",
        hide_env_values = true
    )]
    pub headers: Vec<String>,
    /// Where checkpoints (small state files) are kept so that a killed or
    /// failed copy, run again with the same SOURCE and DEST, continues where
    /// it stopped. Default: $XDG_STATE_HOME/ferry/copy, else
    /// ~/.local/state/ferry/copy.
    #[arg(long, env = "FERRY_STATE_DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// Require a checkpoint to resume from (fail if there is none); without
    /// it a copy resumes when it finds one and starts afresh otherwise.
    #[arg(long, env = "FERRY_RESUME", conflicts_with = "no_checkpoint")]
    pub resume: bool,
    /// Neither save nor use checkpoints.
    #[arg(long, env = "FERRY_NO_CHECKPOINT")]
    pub no_checkpoint: bool,
    /// Least bytes between two fsyncs of a directory write, each followed
    /// by a checkpoint (fsyncs run in the background; a crash re-fetches at
    /// most two intervals); 0: every 5 chunks. S3 checkpoints after every
    /// part.
    #[arg(long, env = "FERRY_CHECKPOINT_INTERVAL", default_value = "4MiB", value_parser = parse_size)]
    pub checkpoint_interval: ByteSize,
    /// Retries of a transient failure (network, 5xx, stall) per file; each
    /// resumes from the last checkpoint. Delays: full jitter, doubling from
    /// 500 ms up to 30 s.
    #[arg(long, env = "FERRY_RETRIES", default_value_t = 3)]
    pub retries: u32,
    /// No retry starts after this long from the first attempt (e.g. 15m, 1h).
    #[arg(long, env = "FERRY_RETRY_DEADLINE", default_value = "15m", value_parser = parse_duration)]
    pub retry_deadline: std::time::Duration,
}

fn parse_sha256(s: &str) -> Result<Checksum, String> {
    Checksum::sha256(s).map_err(|e| e.to_string())
}

fn parse_md5(s: &str) -> Result<Checksum, String> {
    Checksum::md5(s).map_err(|e| e.to_string())
}

fn parse_size(s: &str) -> Result<ByteSize, String> {
    ByteSize::parse(s).map_err(|e| e.to_string())
}

/// Help and version print as usual; any other parse error becomes one line.
pub fn report_parse_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let rendered = e.render().to_string();
            let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first = lines
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_owned();
            // "…not provided:" is followed by the argument names.
            if first.ends_with(':')
                && let Some(next) = lines.next()
            {
                first = format!("{first} {next}");
            }
            eprintln!("ferry: error: {first} (see ferry --help)");
            ExitCode::from(exit::USAGE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_copy_flags() {
        let cli = Cli::try_parse_from([
            "ferry",
            "copy",
            "http://h/f.bin",
            "out/",
            "--max-size",
            "10MB",
            "--sha256",
            &"AB".repeat(32),
        ])
        .unwrap();
        let Command::Copy(args) = cli.command else {
            panic!("expected copy")
        };
        assert_eq!(
            args.paths,
            vec!["http://h/f.bin".to_owned(), "out/".to_owned()]
        );
        assert_eq!(args.max_size, Some(ByteSize::new(10_000_000)));
        assert_eq!(args.sha256.unwrap().hex(), "ab".repeat(32));
    }

    #[test]
    fn several_sources_then_dest() {
        let cli =
            Cli::try_parse_from(["ferry", "copy", "a", "b", "c", "out/", "--concurrency", "8"])
                .unwrap();
        let Command::Copy(args) = cli.command else {
            panic!("copy")
        };
        assert_eq!(args.paths.len(), 4);
        assert_eq!(args.concurrency, 8);
        // One path parses (DEST with --files-from); none does not.
        assert!(Cli::try_parse_from(["ferry", "copy", "only-one"]).is_ok());
        assert!(Cli::try_parse_from(["ferry", "copy"]).is_err());
        assert!(Cli::try_parse_from(["ferry", "copy", "a", "b", "--concurrency", "0"]).is_err());
    }

    #[test]
    fn bad_values_are_rejected_with_the_reason() {
        let err = Cli::try_parse_from(["ferry", "copy", "a", "b", "--sha256", "xyz"]).unwrap_err();
        assert!(err.to_string().contains("64 hex characters"), "{err}");
        let err =
            Cli::try_parse_from(["ferry", "copy", "a", "b", "--max-size", "5XB"]).unwrap_err();
        assert!(err.to_string().contains("unknown unit"), "{err}");
    }
}
