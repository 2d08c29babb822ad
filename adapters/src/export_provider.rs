//! `ExportProviderPort` over HTTP+JSON (reqwest). The protocol is in
//! `docs/export-provider.md`:
//!
//! - start: `POST start_url` with the job's request JSON (or `{}`) and
//!   `Idempotency-Key: <job id>`; a 2xx answer names the status URL in its
//!   JSON `status_url` (absolute or relative to the start URL) or in
//!   `Location`.
//! - poll: `GET status_url` -> `{"status": "pending" | "running" | "ready" |
//!   "failed", "files": [...], "manifest_url": "...", "error": "..."}`; a
//!   ready export carries its files inline or at `manifest_url` (a JSON list
//!   or `{"files": [...]}`).
//!
//! 4xx (except 408 and 429) is a refusal; 5xx, 408, 429 and network errors
//! are transient; anything that is not the protocol is a bad response.
//! Answers are size-limited, and URLs never appear in errors.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::Value;

use ferry_domain::ports::{ExportPoll, ExportProviderError, ExportProviderPort, ManifestEntry};
use ferry_domain::{ExportSpec, JobId, SourceUrl};

use crate::egress::{self, SourceGuard};

/// Settings of the provider client.
#[derive(Debug, Clone)]
pub struct ExportProviderConfig {
    /// Per request.
    pub timeout: Duration,
    /// Largest status or start answer read.
    pub max_status_bytes: usize,
    /// Largest manifest read.
    pub max_manifest_bytes: usize,
    /// Most files a manifest may list (a job's file limit): reading stops
    /// at the first one more.
    pub max_files: usize,
    /// The SSRF guard for the start, status and manifest URLs (which come
    /// from callers and providers).
    pub guard: Option<SourceGuard>,
}

impl Default for ExportProviderConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_status_bytes: 1024 * 1024,
            max_manifest_bytes: 64 * 1024 * 1024,
            max_files: 10_000,
            guard: None,
        }
    }
}

/// The HTTP export provider client.
#[derive(Debug, Clone)]
pub struct HttpExportProvider {
    client: reqwest::Client,
    config: ExportProviderConfig,
}

impl HttpExportProvider {
    pub fn new(config: ExportProviderConfig) -> Result<Self, String> {
        let builder = reqwest::Client::builder().timeout(config.timeout);
        let client = egress::configure(builder, config.guard.as_ref(), 5, false)
            .build()
            .map_err(|e| {
                format!(
                    "cannot build the export provider client: {}",
                    e.without_url()
                )
            })?;
        Ok(Self { client, config })
    }

    /// Sends `request` and reads a JSON answer of at most `limit` bytes.
    async fn json(
        &self,
        request: reqwest::RequestBuilder,
        limit: usize,
        what: &str,
    ) -> Result<(Value, Option<String>), ExportProviderError> {
        let (body, location) = self.fetch(request, limit, what).await?;
        Ok((json_of(&body, what)?, location))
    }

    /// Sends `request` and reads a 2xx answer's body, at most `limit`
    /// bytes, with its `Location`.
    async fn fetch(
        &self,
        request: reqwest::RequestBuilder,
        limit: usize,
        what: &str,
    ) -> Result<(Vec<u8>, Option<String>), ExportProviderError> {
        let request = request
            .header("accept", "application/json")
            .build()
            .map_err(|e| ExportProviderError::Unexpected(Box::new(e.without_url())))?;
        if let Some(guard) = &self.config.guard
            && let Err(denied) = guard.check_url(request.url())
        {
            return Err(ExportProviderError::Forbidden(denied.to_string()));
        }
        let resp = self.client.execute(request).await.map_err(|e| {
            if let Some(reason) = egress::refusal(&e) {
                ExportProviderError::Forbidden(reason)
            } else {
                ExportProviderError::Unavailable(e.without_url().to_string())
            }
        })?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_limited(resp, limit, what).await?;
        if !(200..300).contains(&status) {
            let message = message_of(&body);
            return Err(if ferry_domain::retry::is_transient_status(status) {
                ExportProviderError::Unavailable(format!("{what}: HTTP {status}: {message}"))
            } else {
                ExportProviderError::Rejected { status, message }
            });
        }
        Ok((body, location))
    }
}

/// An answer's JSON (`null` when it is empty).
fn json_of(body: &[u8], what: &str) -> Result<Value, ExportProviderError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body)
        .map_err(|e| ExportProviderError::BadResponse(format!("{what} is not JSON: {e}")))
}

async fn read_limited(
    resp: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, ExportProviderError> {
    // Sized once from the declared length (within the limit): a body grown
    // by doubling would briefly need half as much again.
    let declared = resp
        .content_length()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n <= limit);
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ExportProviderError::Unavailable(e.without_url().to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ExportProviderError::BadResponse(format!(
                "{what} is larger than the {limit} bytes accepted"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A short, single-line excerpt of an error answer.
fn message_of(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        v.get("error")
            .and_then(|e| e.as_str().or_else(|| e.get("message")?.as_str()))
            .or_else(|| v.get("message")?.as_str())
            .map(str::to_owned)
    });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if line.trim().is_empty() {
        "no details".into()
    } else {
        line.trim().to_owned()
    }
}

/// Resolves `reference` against `base` and checks it is an http(s) source.
fn resolve(
    base: &SourceUrl,
    reference: &str,
    field: &str,
) -> Result<SourceUrl, ExportProviderError> {
    let joined = url::Url::parse(base.expose())
        .and_then(|b| b.join(reference))
        .map_err(|e| ExportProviderError::BadResponse(format!("`{field}` is not a URL: {e}")))?;
    let url = SourceUrl::parse(joined.as_str())
        .map_err(|e| ExportProviderError::BadResponse(format!("`{field}`: {e}")))?;
    if !matches!(
        url.scheme(),
        ferry_domain::SourceScheme::Http | ferry_domain::SourceScheme::Https
    ) {
        return Err(ExportProviderError::BadResponse(format!(
            "`{field}` must be an http(s) URL"
        )));
    }
    Ok(url)
}

const NOT_A_MANIFEST: &str = "the manifest is neither a list of files nor {\"files\": [...]}";

fn not_a_manifest() -> ExportProviderError {
    ExportProviderError::BadResponse(NOT_A_MANIFEST.into())
}

/// Reads a manifest (a JSON list of files, or an object whose `files` is
/// one: a manifest of its own or a ready status answer) entry by entry (one file's JSON in memory
/// at a time, never the whole document as a tree), stopping at the first
/// entry past `max_files` or the first bad one.
pub fn read_manifest(
    text: &[u8],
    max_files: usize,
) -> Result<Vec<ManifestEntry>, ExportProviderError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let entries = serde::Deserializer::deserialize_any(&mut de, manifest::Top { max_files })
        .map_err(|e| match manifest::take_problem(&e) {
            Some(problem) => problem,
            // Valid JSON of the wrong shape (e.g. `{"files": 5}`).
            None if e.is_data() => not_a_manifest(),
            None => ExportProviderError::BadResponse(format!("the manifest is not JSON: {e}")),
        })?;
    de.end()
        .map_err(|e| ExportProviderError::BadResponse(format!("the manifest is not JSON: {e}")))?;
    Ok(entries)
}

/// The serde visitors of [`read_manifest`].
mod manifest {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde_json::Value;

    use ferry_domain::ports::{ExportProviderError, ManifestEntry};

    /// A problem of the manifest's content (not of its JSON syntax),
    /// carried through serde's error as its message with this prefix.
    const PROBLEM: &str = "ferry-manifest-problem: ";

    pub(super) fn take_problem(e: &serde_json::Error) -> Option<ExportProviderError> {
        let text = e.to_string();
        let rest = text.strip_prefix(PROBLEM)?;
        // serde_json appends " at line L column C".
        let message = rest.rsplit_once(" at line ").map_or(rest, |(m, _)| m);
        Some(ExportProviderError::BadResponse(message.to_owned()))
    }

    fn problem<E: de::Error>(message: impl fmt::Display) -> E {
        E::custom(format!("{PROBLEM}{message}"))
    }

    /// The document: a list of files, or an object whose `files` is one.
    pub(super) struct Top {
        pub(super) max_files: usize,
    }

    impl<'de> Visitor<'de> for Top {
        type Value = Vec<ManifestEntry>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of files or {\"files\": [...]}")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Files {
                max_files: self.max_files,
            }
            .visit_seq(seq)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut files = None;
            while let Some(key) = map.next_key::<String>()? {
                if key == "files" && files.is_none() {
                    files = Some(map.next_value_seed(Files {
                        max_files: self.max_files,
                    })?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            files.ok_or_else(|| problem(super::NOT_A_MANIFEST))
        }

        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(problem(super::NOT_A_MANIFEST))
        }

        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(problem(super::NOT_A_MANIFEST))
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(problem(super::NOT_A_MANIFEST))
        }

        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(problem(super::NOT_A_MANIFEST))
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(problem(super::NOT_A_MANIFEST))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(problem(super::NOT_A_MANIFEST))
        }
    }

    /// The list of files, each read alone and checked at once.
    struct Files {
        max_files: usize,
    }

    impl<'de> DeserializeSeed<'de> for Files {
        type Value = Vec<ManifestEntry>;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Files {
        type Value = Vec<ManifestEntry>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of files")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::new();
            while let Some(value) = seq.next_element::<Value>()? {
                if entries.len() == self.max_files {
                    return Err(problem(format!(
                        "the manifest lists more than {} files, the most a job may have",
                        self.max_files
                    )));
                }
                let entry = super::manifest_entry(entries.len(), &value).map_err(|e| match e {
                    ExportProviderError::BadResponse(message) => problem(message),
                    other => problem(other),
                })?;
                entries.push(entry);
            }
            Ok(entries)
        }
    }
}

/// One manifest entry, checked; `i` is its place in the list.
fn manifest_entry(i: usize, f: &Value) -> Result<ManifestEntry, ExportProviderError> {
    let bad = |what: &str| ExportProviderError::BadResponse(format!("manifest.files[{i}]: {what}"));
    let text = |k: &str| -> Result<Option<String>, ExportProviderError> {
        match f.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(&format!("`{k}` must be a string"))),
        }
    };
    if !f.is_object() {
        return Err(bad("each file is a JSON object"));
    }
    let size = match f.get("size") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| bad("`size` must be a non-negative integer"))?,
        ),
    };
    Ok(ManifestEntry {
        source: text("source")?.ok_or_else(|| bad("`source` is missing"))?,
        key: text("key")?.ok_or_else(|| bad("`key` is missing"))?,
        size,
        sha256: text("sha256")?,
        md5: text("md5")?,
        headers: Default::default(),
        attributes: Default::default(),
    })
}

#[async_trait]
impl ExportProviderPort for HttpExportProvider {
    async fn start(
        &self,
        job: &JobId,
        spec: &ExportSpec,
    ) -> Result<SourceUrl, ExportProviderError> {
        let body = spec.request_body.clone().unwrap_or_else(|| "{}".into());
        let request = self
            .client
            .post(spec.start_url.expose())
            .header("content-type", "application/json")
            .header("idempotency-key", job.as_str())
            .header("x-ferry-job-id", job.as_str())
            .body(body);
        let (answer, location) = self
            .json(request, self.config.max_status_bytes, "the start answer")
            .await?;
        let reference = answer
            .get("status_url")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or(location)
            .ok_or_else(|| {
                ExportProviderError::BadResponse(
                    "the start answer has neither `status_url` nor a Location header".into(),
                )
            })?;
        resolve(&spec.start_url, &reference, "status_url")
    }

    async fn poll(&self, status_url: &SourceUrl) -> Result<ExportPoll, ExportProviderError> {
        let what = "the status answer";
        let (body, _) = self
            .fetch(
                self.client.get(status_url.expose()),
                self.config.max_status_bytes,
                what,
            )
            .await?;
        let answer = json_of(&body, what)?;
        let status = answer
            .get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ExportProviderError::BadResponse("the status answer has no `status`".into())
            })?;
        match status {
            "pending" | "running" | "queued" => Ok(ExportPoll::Pending),
            "failed" | "error" => Ok(ExportPoll::Failed(message_of(
                answer.to_string().as_bytes(),
            ))),
            "ready" | "completed" | "succeeded" => {
                if answer.get("files").is_some() {
                    // Bounded by the status answer's size; the job's own
                    // validation counts its files, as before.
                    return read_manifest(&body, usize::MAX).map(ExportPoll::Ready);
                }
                let reference = answer
                    .get("manifest_url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ExportProviderError::BadResponse(
                            "a ready export has neither `files` nor `manifest_url`".into(),
                        )
                    })?;
                let url = resolve(status_url, reference, "manifest_url")?;
                let (manifest, _) = self
                    .fetch(
                        self.client.get(url.expose()),
                        self.config.max_manifest_bytes,
                        "the manifest",
                    )
                    .await?;
                read_manifest(&manifest, self.config.max_files).map(ExportPoll::Ready)
            }
            other => Err(ExportProviderError::BadResponse(format!(
                "unknown export status `{}`",
                other.chars().take(40).collect::<String>()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn manifests_in_both_shapes_parse() {
        let files = json!([{ "source": "https://o/a", "key": "a", "size": 3, "sha256": null }]);
        let read = |v: &Value| read_manifest(&serde_json::to_vec(v).unwrap(), 10).unwrap();
        let a = read(&files);
        let b = read(&json!({ "status": "ready", "files": files }));
        assert_eq!(a, b);
        assert_eq!(a[0].size, Some(3));
        assert_eq!(a[0].key, "a");
    }

    #[test]
    fn bad_manifests_name_the_entry() {
        for (v, needle) in [
            (json!({"nope": 1}), "neither"),
            (json!([{"key": "a"}]), "files[0]: `source` is missing"),
            (
                json!([{"source": "https://o/a", "key": "a"}, {"source": "https://o/b", "key": 7}]),
                "files[1]: `key` must be a string",
            ),
            (
                json!([{"source": "https://o/a", "key": "a", "size": -1}]),
                "`size` must be",
            ),
            (json!([1]), "JSON object"),
        ] {
            let text = serde_json::to_vec(&v).unwrap();
            let err = read_manifest(&text, 10).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn a_manifest_is_read_entry_by_entry_up_to_the_file_limit() {
        let files = json!([
            { "source": "https://o/a", "key": "a", "size": 3 },
            { "source": "https://o/b", "key": "b", "extra": [1, 2, {"x": null}] },
        ]);
        let text = serde_json::to_vec(&files).unwrap();
        let read = read_manifest(&text, 2).unwrap();
        assert_eq!((read[0].key.as_str(), read[0].size), ("a", Some(3)));
        assert_eq!((read[1].key.as_str(), read[1].size), ("b", None));
        let wrapped = serde_json::to_vec(&json!({ "status": "x", "files": files })).unwrap();
        assert_eq!(read_manifest(&wrapped, 2).unwrap().len(), 2);
        let over = read_manifest(&text, 1).unwrap_err().to_string();
        assert!(over.contains("more than 1 files"), "{over}");
        // A list of a million empty lists stops at the first entry.
        let mut hostile = b"[".to_vec();
        for _ in 0..1_000_000 {
            hostile.extend_from_slice(b"[],");
        }
        hostile.extend_from_slice(b"[]]");
        let err = read_manifest(&hostile, 10_000).unwrap_err().to_string();
        assert!(
            err.contains("files[0]: each file is a JSON object"),
            "{err}"
        );
        for (bad, needle) in [
            (&b"["[..], "not JSON"),
            (&br#"{"files": ["#[..], "not JSON"),
            (&b"[] x"[..], "not JSON"),
            (&b"\"text\""[..], "neither a list"),
            (&b"{}"[..], "neither a list"),
            (&br#"{"files": 5}"#[..], "neither a list"),
        ] {
            let err = read_manifest(bad, 10).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn error_messages_are_short_single_lines() {
        assert_eq!(
            message_of(br#"{"error":"no such dataset"}"#),
            "no such dataset"
        );
        assert_eq!(message_of(br#"{"error":{"message":"quota"}}"#), "quota");
        assert_eq!(message_of(b"line1\nline2"), "line1 line2");
        assert_eq!(message_of(b""), "no details");
        assert_eq!(message_of(&[b'x'; 500]).len(), 200);
    }

    #[test]
    fn status_urls_resolve_against_the_start_url() {
        let base = SourceUrl::parse("https://p.example/v1/exports").unwrap();
        assert_eq!(
            resolve(&base, "/v1/exports/7", "status_url")
                .unwrap()
                .expose(),
            "https://p.example/v1/exports/7"
        );
        assert!(resolve(&base, "file:///etc/passwd", "status_url").is_err());
    }
}
