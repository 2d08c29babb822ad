//! The `ferry` binary: reads config, wires adapters, runs the command.
//! No business logic lives here.

mod api;
mod cli;
mod copy;
mod exit;
mod job_cmd;
mod logging;
mod progress;
mod serve;
mod url_list;
mod watch;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::report_parse_error(&e),
    };
    logging::init(
        cli.global.log_format,
        matches!(cli.command, Command::Serve(_)),
    );
    ferry_adapters::system::raise_open_file_limit();
    // Kill points of the crash-test harness: only in test builds.
    for problem in ferry_application::killpoint::arm_from_env() {
        eprintln!("ferry: warning: {problem}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Copy(args) => copy::run(*args, cli.global).await,
            Command::Serve(args) => serve::run(*args, cli.global).await,
            Command::Job(args) => job_cmd::run(args).await,
            Command::Token(args) => token_cmd(args),
            Command::Completions { shell } => {
                // Generated into memory: clap_complete panics on a write
                // error, and a full disk or closed pipe is not a bug.
                let mut command = <Cli as clap::CommandFactory>::command();
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut command, "ferry", &mut script);
                match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("ferry: error: cannot write the completions: {e}");
                        ExitCode::from(exit::INTERNAL)
                    }
                }
            }
            Command::Manpage => {
                let command = <Cli as clap::CommandFactory>::command();
                match clap_mangen::Man::new(command).render(&mut std::io::stdout()) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("ferry: error: cannot write the man page: {e}");
                        ExitCode::from(exit::INTERNAL)
                    }
                }
            }
        }
    })
}

/// `ferry token create NAME [--admin]`: the token, then its tokens-file line.
fn token_cmd(args: cli::TokenArgs) -> ExitCode {
    match args.command {
        cli::TokenCommand::Create {
            name,
            admin,
            scopes,
        } => {
            let line = api::auth::token_line("", &name, admin, &scopes);
            if let Err(e) = api::auth::Tokens::parse(&line) {
                // The tokens file's own check, on the line it would get.
                let e = e.trim_start_matches("line 1: ");
                eprintln!("ferry: error: {e}");
                return ExitCode::from(exit::USAGE);
            }
            let token = api::auth::new_token();
            println!("{token}");
            println!("{}", api::auth::token_line(&token, &name, admin, &scopes));
            ExitCode::from(exit::OK)
        }
    }
}
