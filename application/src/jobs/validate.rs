//! Everything in a job request is validated up front; the first problem is
//! reported with the field that holds it (e.g. `files[3].sha256`), and
//! nothing is stored.

use std::collections::HashMap;

use thiserror::Error;

use ferry_domain::{Checksum, Destination, FileSpec, ObjectKey, SourceScheme, SourceUrl};

/// One file as the caller wrote it.
#[derive(Debug, Clone, Default)]
pub struct FileRequest {
    pub source: String,
    pub key: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub md5: Option<String>,
}

/// A job as the caller wrote it.
#[derive(Debug, Clone, Default)]
pub struct SubmitJobRequest {
    pub files: Vec<FileRequest>,
    pub destination: String,
    pub task_token: Option<String>,
    pub owner: Option<String>,
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

/// A request that passed validation.
#[derive(Debug, Clone)]
pub struct ValidatedJob {
    pub files: Vec<FileSpec>,
    pub destination: Destination,
}

/// Longest Step Functions task token accepted (AWS's limit).
const MAX_TASK_TOKEN: usize = 1024;

/// Validates a request; `max_files` bounds its size; `allow_file_sources`
/// is false for the API (a server must not read its own disk for callers).
pub fn validate(
    request: &SubmitJobRequest,
    max_files: usize,
    allow_file_sources: bool,
) -> Result<ValidatedJob, InvalidJobRequest> {
    if request.files.is_empty() {
        return Err(invalid("files", "a job needs at least one file"));
    }
    if request.files.len() > max_files {
        return Err(invalid(
            "files",
            format!(
                "{} files is more than the {max_files} allowed per job",
                request.files.len()
            ),
        ));
    }
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
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut files = Vec::with_capacity(request.files.len());
    for (i, f) in request.files.iter().enumerate() {
        let at = |field: &str| format!("files[{i}].{field}");
        let source = SourceUrl::parse(&f.source).map_err(|e| invalid(at("source"), e))?;
        if source.scheme() == SourceScheme::File && !allow_file_sources {
            return Err(invalid(
                at("source"),
                "file:// sources are not accepted here; use http:// or https://",
            ));
        }
        let key = ObjectKey::parse(&f.key).map_err(|e| invalid(at("key"), e))?;
        if let Some(first) = seen.insert(key.as_str().to_owned(), i) {
            return Err(invalid(
                at("key"),
                format!("`{key}` is also the key of files[{first}]; each file needs its own key"),
            ));
        }
        let mut expected = Vec::new();
        if let Some(hex) = &f.sha256 {
            expected.push(Checksum::sha256(hex).map_err(|e| invalid(at("sha256"), e))?);
        }
        if let Some(hex) = &f.md5 {
            expected.push(Checksum::md5(hex).map_err(|e| invalid(at("md5"), e))?);
        }
        files.push(FileSpec {
            source,
            key,
            expected_size: f.size,
            expected,
        });
    }
    Ok(ValidatedJob { files, destination })
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

    #[test]
    fn file_sources_only_where_allowed() {
        let mut r = request(vec![file(0)]);
        r.files[0].source = "file:///data/x.bin".into();
        assert!(validate(&r, 10, true).is_ok());
        assert!(validate(&r, 10, false).is_err());
    }
}
