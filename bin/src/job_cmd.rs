//! `ferry job submit|status|cancel`: a client of `ferry serve`'s API.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use ferry_adapters::wire::AttributesDto;
use ferry_domain::SourceUrl;

use crate::cli::{JobArgs, JobCommand};
use crate::exit;
use crate::url_list::ListEntry;

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

/// Every file of job `id` (in state `status`, if given), a page at a
/// time, one JSON line each on stdout.
async fn files(client: &reqwest::Client, server: &str, id: &str, status: Option<&str>) -> ExitCode {
    use std::io::Write;
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "1000".to_owned())];
        if let Some(s) = status {
            query.push(("status", s.to_owned()));
        }
        if let Some(c) = cursor.take() {
            query.push(("cursor", c));
        }
        let url = format!("{server}/v1/jobs/{id}/files");
        let page = match answer(client.get(url).query(&query).send().await, server).await {
            Ok(page) => page,
            Err(code) => return code,
        };
        let mut out = std::io::stdout().lock();
        for file in page["files"].as_array().into_iter().flatten() {
            if let Err(e) = writeln!(out, "{file}") {
                return fail(exit::INTERNAL, format!("cannot write the files: {e}"));
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ExitCode::SUCCESS,
        }
    }
}

pub(crate) fn exit_for_status(status: &str) -> ExitCode {
    ExitCode::from(match status {
        "completed" => exit::OK,
        "completed_with_errors" => exit::JOB_WITH_ERRORS,
        _ => exit::JOB_FAILED,
    })
}

/// What to submit: a JSON job file, or a URL list and a destination.
pub(crate) enum SubmitFrom<'a> {
    Json(&'a Path),
    List {
        list: &'a Path,
        destination: &'a str,
    },
}

/// What the submit flags add to the job: object attributes (laid over
/// the JSON's own) and the existing-key rule.
pub(crate) struct SubmitOptions {
    pub attributes: ferry_domain::RequestedAttributes,
    /// `skip` or `refuse` (`if_exists`), when a flag asks for it.
    pub if_exists: Option<&'static str>,
}

/// The job request body, with the flags' options applied.
fn request_body(from: &SubmitFrom<'_>, options: &SubmitOptions) -> Result<Value, String> {
    let mut body = base_body(from)?;
    if options.attributes != ferry_domain::RequestedAttributes::default() {
        let own: AttributesDto = match body.get("attributes") {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| format!("the job's `attributes` are not valid: {e}"))?,
            None => AttributesDto::default(),
        };
        let merged = ferry_domain::RequestedAttributes::from(own).overlaid(&options.attributes);
        body["attributes"] = serde_json::to_value(AttributesDto::from(&merged))
            .map_err(|e| format!("cannot encode the attributes: {e}"))?;
    }
    if let Some(rule) = options.if_exists {
        body["if_exists"] = Value::from(rule);
    }
    Ok(body)
}

fn base_body(from: &SubmitFrom<'_>) -> Result<Value, String> {
    match from {
        SubmitFrom::Json(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| format!("{} is not valid JSON: {e}", file.display()))
        }
        SubmitFrom::List { list, destination } => {
            let entries = crate::copy::read_list(list).map_err(|e| e.0)?;
            let files = entries
                .into_iter()
                .map(|e| list_file(e, list))
                .collect::<Result<Vec<Value>, String>>()?;
            Ok(serde_json::json!({ "files": files, "destination": destination }))
        }
    }
}

/// One list entry as a job file: the key defaults to the URL's file name.
fn list_file(entry: ListEntry, list: &Path) -> Result<Value, String> {
    let at = |m: String| format!("--files-from {} line {}: {m}", list.display(), entry.line);
    let key = match entry.key {
        Some(k) => k.as_str().to_owned(),
        None => SourceUrl::parse(&entry.source)
            .map_err(|e| at(e.to_string()))?
            .file_name()
            .ok_or_else(|| at("the URL has no file name: give a KEY".into()))?,
    };
    let mut file = serde_json::json!({ "source": entry.source, "key": key });
    if let Some(sha) = entry.sha256 {
        file["sha256"] = Value::from(sha.hex());
    }
    if let Some(md5) = entry.md5 {
        file["md5"] = Value::from(md5.hex());
    }
    if let Some(size) = entry.size {
        file["size"] = Value::from(size);
    }
    Ok(file)
}

async fn submit(
    client: &reqwest::Client,
    streams: &reqwest::Client,
    server: &str,
    from: SubmitFrom<'_>,
    options: &SubmitOptions,
    wait: bool,
) -> ExitCode {
    let body = match request_body(&from, options) {
        Ok(b) => b,
        Err(e) => return fail(exit::USAGE, e),
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
        JobCommand::Submit {
            file,
            files_from,
            destination,
            wait,
            object,
            skip_existing,
            no_clobber,
        } => {
            let from = match (&file, &files_from, &destination) {
                (_, Some(list), Some(destination)) => SubmitFrom::List { list, destination },
                (Some(file), _, _) => SubmitFrom::Json(file),
                // clap requires one of the two forms.
                _ => return fail(exit::USAGE, "give a JSON job file or --files-from".into()),
            };
            // Checked here so a bad flag fails before anything is sent.
            if let Err(e) = object.attributes() {
                return fail(exit::USAGE, e);
            }
            let options = SubmitOptions {
                attributes: match object.requested() {
                    Ok(a) => a,
                    Err(e) => return fail(exit::USAGE, e),
                },
                if_exists: if skip_existing {
                    Some("skip")
                } else if no_clobber {
                    Some("refuse")
                } else {
                    None
                },
            };
            submit(&client, &streams, &server, from, &options, wait).await
        }
        JobCommand::Watch { id } => crate::watch::watch(&streams, &server, &id).await,
        JobCommand::Status { id } => {
            show(
                client.get(format!("{server}/v1/jobs/{id}")).send().await,
                &server,
            )
            .await
        }
        JobCommand::Files { id, status } => files(&client, &server, &id, status.as_deref()).await,
        JobCommand::Cancel { id } => {
            show(
                client.delete(format!("{server}/v1/jobs/{id}")).send().await,
                &server,
            )
            .await
        }
    }
}
