//! `ferry job submit|status|cancel`: a client of `ferry serve`'s API.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::cli::{JobArgs, JobCommand};
use crate::exit;

fn fail(code: u8, message: String) -> ExitCode {
    eprintln!("ferry: error: {message}");
    ExitCode::from(code)
}

/// Turns an API answer into JSON, or a one-line error with an exit code.
async fn answer(
    resp: Result<reqwest::Response, reqwest::Error>,
    server: &str,
) -> Result<Value, ExitCode> {
    let resp = resp.map_err(|e| {
        fail(
            exit::SERVER,
            format!(
                "cannot reach the ferry server at {server}: {}",
                e.without_url()
            ),
        )
    })?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| {
        fail(
            exit::SERVER,
            format!("the server's answer is not JSON: {}", e.without_url()),
        )
    })?;
    if status.is_success() {
        return Ok(body);
    }
    let err = &body["error"];
    let message = err["message"].as_str().unwrap_or("request refused");
    let shown = match err["field"].as_str() {
        Some(field) => format!("{field}: {message}"),
        None => message.to_owned(),
    };
    let code = if status.is_client_error() && status.as_u16() != 404 {
        exit::USAGE
    } else {
        exit::SERVER
    };
    Err(fail(code, format!("{shown} (HTTP {})", status.as_u16())))
}

fn print(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("ferry: error: cannot print the answer: {e}"),
    }
}

pub(crate) fn exit_for_status(status: &str) -> ExitCode {
    ExitCode::from(match status {
        "completed" => exit::OK,
        "completed_with_errors" => exit::JOB_WITH_ERRORS,
        _ => exit::JOB_FAILED,
    })
}

async fn submit(
    client: &reqwest::Client,
    streams: &reqwest::Client,
    server: &str,
    file: &Path,
    wait: bool,
) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return fail(exit::USAGE, format!("cannot read {}: {e}", file.display())),
    };
    let body: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            return fail(
                exit::USAGE,
                format!("{} is not valid JSON: {e}", file.display()),
            );
        }
    };
    let job = match answer(
        client
            .post(format!("{server}/v1/jobs"))
            .json(&body)
            .send()
            .await,
        server,
    )
    .await
    {
        Ok(j) => j,
        Err(code) => return code,
    };
    let id = job["id"].as_str().unwrap_or_default().to_owned();
    if !wait {
        print(&job);
        return ExitCode::from(exit::OK);
    }
    eprintln!("ferry: job {id} accepted; following its events");
    crate::watch::watch(streams, server, &id).await
}

/// Prints the job the server answered with.
async fn show(resp: Result<reqwest::Response, reqwest::Error>, server: &str) -> ExitCode {
    match answer(resp, server).await {
        Ok(job) => {
            print(&job);
            ExitCode::from(exit::OK)
        }
        Err(code) => code,
    }
}

pub async fn run(args: JobArgs) -> ExitCode {
    let server = args.server.trim_end_matches('/').to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &args.token {
        let Ok(mut value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        else {
            return fail(
                exit::USAGE,
                "--token: a token is printable ASCII (ferry token create makes one)".into(),
            );
        };
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let built = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(headers.clone())
        .build()
        .and_then(|client| {
            // Streams last as long as the job: no overall timeout.
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .default_headers(headers)
                .build()
                .map(|streams| (client, streams))
        });
    let (client, streams) = match built {
        Ok(c) => c,
        Err(e) => return fail(exit::INTERNAL, format!("cannot build the HTTP client: {e}")),
    };
    match args.command {
        JobCommand::Submit { file, wait } => submit(&client, &streams, &server, &file, wait).await,
        JobCommand::Watch { id } => crate::watch::watch(&streams, &server, &id).await,
        JobCommand::Status { id } => {
            show(
                client.get(format!("{server}/v1/jobs/{id}")).send().await,
                &server,
            )
            .await
        }
        JobCommand::Cancel { id } => {
            show(
                client.delete(format!("{server}/v1/jobs/{id}")).send().await,
                &server,
            )
            .await
        }
    }
}
