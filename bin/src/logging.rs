//! Structured logs through tracing, to stderr: human by default, or JSON.
//! Level from `FERRY_LOG` (e.g. `info`, `ferry_adapters=debug`); if unset,
//! `info` for `ferry serve` (one line per request, job and file outcome)
//! and `warn` for the CLI commands, and `error` for the AWS SDK (whose
//! warnings are Debug dumps of what ferry already reports as one clear
//! error).

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

pub fn init(format: LogFormat, service: bool) {
    let default = if service {
        "info,aws_config=error,aws_smithy_runtime=error,sqlx=warn,hyper=warn,h2=warn"
    } else {
        "warn,aws_config=error,aws_smithy_runtime=error"
    };
    let filter = EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only on a terminal, and never with NO_COLOR set: logs piped to
    // a file or a collector carry no escape codes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
