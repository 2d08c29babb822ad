//! Everything in a job request is validated up front; the first problem is
//! reported with the field that holds it (e.g. `files[3].sha256`), and
//! nothing is stored.

use std::collections::HashMap;
use std::time::Duration;

use thiserror::Error;

use ferry_domain::{
    Checksum, Destination, ExportSpec, FileSpec, IfExists, InvalidAttributes, JobOptions,
    ObjectAttributes, ObjectKey, PollPolicy, RequestedAttributes, SourceScheme, SourceUrl,
};

/// One file as the caller (or a provider's manifest) wrote it.
pub use ferry_domain::ports::ManifestEntry as FileRequest;

/// An export to start at a provider, as the caller wrote it.
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    pub start_url: String,
    /// JSON text sent as the start request's body.
    pub request_body: Option<String>,
    pub base_interval_ms: Option<u64>,
    pub max_interval_ms: Option<u64>,
    pub deadline_ms: Option<u64>,
}

/// A job as the caller wrote it: either `files` or an `export`.
#[derive(Debug, Clone, Default)]
pub struct SubmitJobRequest {
    pub files: Vec<FileRequest>,
    pub export: Option<ExportRequest>,
    pub destination: String,
    pub task_token: Option<String>,
    pub owner: Option<String>,
    /// Where the submitter may write (its token's scopes).
    pub scopes: ferry_domain::WriteScopes,
    /// What the submitter may have unfinished (default: no limit).
    pub quota: super::quota::OwnerQuota,
    /// Attributes of every object; a file's own are laid over them.
    pub attributes: RequestedAttributes,
    pub if_exists: IfExists,
}

/// The first problem found in a request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct InvalidJobRequest {
    /// Where the problem is, e.g. `files[3].source`.
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl ToString) -> InvalidJobRequest {
    InvalidJobRequest {
        field: field.into(),
        message: message.to_string(),
    }
}

/// A request that passed validation: files to download now, or an export
/// whose manifest will bring them.
#[derive(Debug, Clone)]
pub struct ValidatedJob {
    pub files: Vec<FileSpec>,
    pub export: Option<ExportSpec>,
    pub destination: Destination,
    pub options: JobOptions,
}

/// Longest export request body accepted (bytes of JSON).
const MAX_EXPORT_BODY: usize = 64 * 1024;

/// Longest Step Functions task token accepted (AWS's limit).
const MAX_TASK_TOKEN: usize = 1024;

/// Validates a request; `max_files` bounds its size; `allow_file_sources`
/// is false for the API (a server must not read its own disk for callers).
pub fn validate(
    request: &SubmitJobRequest,
    max_files: usize,
    allow_file_sources: bool,
) -> Result<ValidatedJob, InvalidJobRequest> {
    let export = match (&request.export, request.files.is_empty()) {
        (Some(_), false) => {
            return Err(invalid(
                "export",
                "a job has either `files` or an `export`, not both",
            ));
        }
        (None, true) => {
            return Err(invalid(
                "files",
                "a job needs at least one file (or an `export` to start at a provider)",
            ));
        }
        (Some(e), true) => Some(validate_export(e)?),
        (None, false) => None,
    };
    let destination =
        Destination::parse(&request.destination).map_err(|e| invalid("destination", e))?;
    if let Some(token) = &request.task_token
        && (token.is_empty() || token.len() > MAX_TASK_TOKEN)
    {
        return Err(invalid(
            "task_token",
            format!("a task token has 1 to {MAX_TASK_TOKEN} characters"),
        ));
    }
    let options = JobOptions {
        attributes: request
            .attributes
            .clone()
            .validate()
            .map_err(attribute_error("attributes"))?,
        if_exists: request.if_exists,
    };
    let files = if export.is_some() {
        Vec::new()
    } else {
        validate_files(
            &request.files,
            "files",
            max_files,
            allow_file_sources,
            &options.attributes,
        )?
    };
    if options.if_exists == IfExists::Skip
        && let Some(i) = files.iter().position(|f| {
            !f.expected
                .iter()
                .any(|c| c.algorithm() == ferry_domain::ChecksumAlgorithm::Sha256)
        })
    {
        return Err(invalid(
            format!("files[{i}].sha256"),
            "if_exists `skip` recognises a stored file by its SHA-256: give every file its sha256, or use `overwrite`",
        ));
    }
    Ok(ValidatedJob {
        files,
        export,
        destination,
        options,
    })
}

fn validate_export(e: &ExportRequest) -> Result<ExportSpec, InvalidJobRequest> {
    let start_url =
        SourceUrl::parse(&e.start_url).map_err(|err| invalid("export.start_url", err))?;
    if !matches!(start_url.scheme(), SourceScheme::Http | SourceScheme::Https) {
        return Err(invalid(
            "export.start_url",
            "an export provider is reached over http:// or https://",
        ));
    }
    if let Some(body) = &e.request_body
        && body.len() > MAX_EXPORT_BODY
    {
        return Err(invalid(
            "export.request",
            format!("the request is more than {MAX_EXPORT_BODY} bytes of JSON"),
        ));
    }
    let defaults = PollPolicy::default();
    let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
    let poll = PollPolicy::new(
        ms(e.base_interval_ms, defaults.base_interval()),
        ms(e.max_interval_ms, defaults.max_interval()),
        ms(e.deadline_ms, defaults.deadline()),
    )
    .map_err(|err| invalid("export.poll", err))?;
    Ok(ExportSpec {
        start_url,
        request_body: e.request_body.clone(),
        poll,
    })
}

fn attribute_error(prefix: &str) -> impl Fn(InvalidAttributes) -> InvalidJobRequest + '_ {
    move |e| invalid(format!("{prefix}.{}", e.field), e.message)
}

/// Validates a list of files (a request's `files`, or a provider's manifest
/// when `field` is `manifest.files`); problems name `{field}[i].{name}`.
/// Each file's attributes are laid over `base` (the job's).
pub fn validate_files(
    entries: &[FileRequest],
    field: &str,
    max_files: usize,
    allow_file_sources: bool,
    base: &ObjectAttributes,
) -> Result<Vec<FileSpec>, InvalidJobRequest> {
    if entries.is_empty() {
        return Err(invalid(field, "the list of files is empty"));
    }
    if entries.len() > max_files {
        return Err(invalid(
            field,
            format!(
                "{} files is more than the {max_files} allowed per job",
                entries.len()
            ),
        ));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut files = Vec::with_capacity(entries.len());
    for (i, f) in entries.iter().enumerate() {
        let at = |name: &str| format!("{field}[{i}].{name}");
        let source = SourceUrl::parse(&f.source).map_err(|e| invalid(at("source"), e))?;
        if source.scheme() == SourceScheme::File && !allow_file_sources {
            return Err(invalid(
                at("source"),
                "file:// sources are not accepted here; use http:// or https://",
            ));
        }
        if source.scheme() == SourceScheme::S3 {
            return Err(invalid(
                at("source"),
                "s3:// sources are read by ferry copy only; give the job an http(s) URL (e.g. a presigned GET)",
            ));
        }
        let key = ObjectKey::parse(&f.key).map_err(|e| invalid(at("key"), e))?;
        if let Some(first) = seen.insert(key.as_str().to_owned(), i) {
            return Err(invalid(
                at("key"),
                format!("`{key}` is also the key of {field}[{first}]; each file needs its own key"),
            ));
        }
        let mut expected = Vec::new();
        if let Some(hex) = &f.sha256 {
            expected.push(Checksum::sha256(hex).map_err(|e| invalid(at("sha256"), e))?);
        }
        if let Some(hex) = &f.md5 {
            expected.push(Checksum::md5(hex).map_err(|e| invalid(at("md5"), e))?);
        }
        let headers = f
            .headers
            .validate()
            .map_err(|e| invalid(at("headers"), e))?;
        if !headers.is_empty()
            && !matches!(source.scheme(), SourceScheme::Http | SourceScheme::Https)
        {
            return Err(invalid(
                at("headers"),
                "headers are sent to http(s) sources only",
            ));
        }
        let attributes = if f.attributes == RequestedAttributes::default() {
            base.clone()
        } else {
            base.to_requested()
                .overlaid(&f.attributes)
                .validate()
                .map_err(attribute_error(&at("attributes")))?
        };
        files.push(FileSpec {
            source,
            key,
            expected_size: f.size,
            expected,
            headers,
            attributes,
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(i: usize) -> FileRequest {
        FileRequest {
            source: format!("https://origin.example/{i}.bin"),
            key: format!("k/{i}.bin"),
            ..FileRequest::default()
        }
    }

    fn request(files: Vec<FileRequest>) -> SubmitJobRequest {
        SubmitJobRequest {
            files,
            destination: "s3://bucket/exports".into(),
            ..SubmitJobRequest::default()
        }
    }

    #[test]
    fn a_good_request_validates() {
        let mut f = file(0);
        f.sha256 = Some("A".repeat(64));
        let v = validate(&request(vec![f, file(1)]), 100, false).unwrap();
        assert_eq!(v.files.len(), 2);
        assert_eq!(v.files[0].expected.len(), 1);
        assert_eq!(v.destination.to_string(), "s3://bucket/exports");
    }

    #[test]
    fn each_problem_names_its_field_and_index() {
        type Mutation = Box<dyn Fn(&mut SubmitJobRequest)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|r| r.files[1].source = "ftp://x/y".into()),
                "files[1].source",
            ),
            (
                Box::new(|r| r.files[1].source = "file:///etc/passwd".into()),
                "files[1].source",
            ),
            (Box::new(|r| r.files[0].key = "../x".into()), "files[0].key"),
            (
                Box::new(|r| r.files[1].key = "k/0.bin".into()),
                "files[1].key",
            ),
            (
                Box::new(|r| r.files[1].sha256 = Some("abc".into())),
                "files[1].sha256",
            ),
            (
                Box::new(|r| r.files[0].md5 = Some("z".repeat(32))),
                "files[0].md5",
            ),
            (Box::new(|r| r.destination = "../up".into()), "destination"),
            (
                Box::new(|r| r.destination = "s3://B/x".into()),
                "destination",
            ),
            (
                Box::new(|r| r.task_token = Some(String::new())),
                "task_token",
            ),
            (Box::new(|r| r.files.clear()), "files"),
        ];
        for (mutate, field) in cases {
            let mut r = request(vec![file(0), file(1)]);
            mutate(&mut r);
            let err = validate(&r, 100, false).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
        let too_many = request((0..5).map(file).collect());
        assert_eq!(validate(&too_many, 4, false).unwrap_err().field, "files");
    }

    fn export(start: &str) -> ExportRequest {
        ExportRequest {
            start_url: start.into(),
            ..ExportRequest::default()
        }
    }

    #[test]
    fn an_export_job_validates_without_files() {
        let mut r = request(vec![]);
        r.export = Some(ExportRequest {
            request_body: Some("{}".into()),
            base_interval_ms: Some(10),
            max_interval_ms: Some(100),
            deadline_ms: Some(1000),
            ..export("https://provider.example/exports")
        });
        let v = validate(&r, 100, false).unwrap();
        assert!(v.files.is_empty());
        let spec = v.export.unwrap();
        assert_eq!(spec.poll.max_interval(), Duration::from_millis(100));
        assert_eq!(spec.request_body.as_deref(), Some("{}"));
    }

    #[test]
    fn export_problems_name_their_field() {
        let cases = [
            (export("ftp://p/x"), "export.start_url"),
            (export("file:///tmp/x"), "export.start_url"),
            (
                ExportRequest {
                    base_interval_ms: Some(100),
                    max_interval_ms: Some(10),
                    ..export("https://p.example/x")
                },
                "export.poll",
            ),
            (
                ExportRequest {
                    request_body: Some("x".repeat(MAX_EXPORT_BODY + 1)),
                    ..export("https://p.example/x")
                },
                "export.request",
            ),
        ];
        for (e, field) in cases {
            let mut r = request(vec![]);
            r.export = Some(e);
            assert_eq!(validate(&r, 10, false).unwrap_err().field, field);
        }
        let mut both = request(vec![file(0)]);
        both.export = Some(export("https://p.example/x"));
        assert_eq!(validate(&both, 10, false).unwrap_err().field, "export");
    }

    #[test]
    fn manifest_problems_name_the_manifest() {
        let mut entries = vec![file(0), file(1)];
        entries[1].key = "/abs".into();
        let err = validate_files(
            &entries,
            "manifest.files",
            10,
            false,
            &ObjectAttributes::default(),
        )
        .unwrap_err();
        assert_eq!(err.field, "manifest.files[1].key");
        assert_eq!(
            validate_files(
                &[],
                "manifest.files",
                10,
                false,
                &ObjectAttributes::default()
            )
            .unwrap_err()
            .field,
            "manifest.files"
        );
    }

    #[test]
    fn file_sources_only_where_allowed() {
        let mut r = request(vec![file(0)]);
        r.files[0].source = "file:///data/x.bin".into();
        assert!(validate(&r, 10, true).is_ok());
        assert!(validate(&r, 10, false).is_err());
    }
}
