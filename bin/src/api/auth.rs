//! Bearer-token authentication and per-caller limits for the API.
//!
//! Tokens are configured as SHA-256 hashes in a tokens file, one per line:
//!
//! ```text
//! # sha256:<64 hex> <name> [admin] [scope=<scope>]... [active-jobs=N] [queued-files=N] [active-exports=N]
//! sha256:9f86d0…0f00a08 ci-pipeline
//! sha256:5e8848…2d0c    team-a  scope=s3://exports/team-a scope=dir:team-a
//! sha256:2c26b4…e7ae    ops admin
//! ```
//!
//! Scopes say where a token's jobs may write (`DestinationScope`): a token
//! with none may write only under its own name (`dir:NAME` and
//! `s3://*/NAME`), an admin token anywhere. Quota fields replace the
//! server's per-owner defaults (`--quota-*`) for that token (0: no limit).
//!
//! A presented token is hashed and compared with every configured hash in
//! constant time (no early exit, no length leak: the hashes are all 32
//! bytes). Tokens are 256-bit random strings (`ferry token create`), so a
//! fast hash is enough: there is nothing to brute-force. The caller's name
//! owns the jobs it submits; a non-admin caller sees only its own jobs.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use ferry_application::jobs::{Access, OwnerQuota};
use ferry_domain::{DestinationScope, WriteScopes};

use super::{ApiError, AppState};

/// Prefix of tokens made by `ferry token create`.
pub const TOKEN_PREFIX: &str = "fy_";

/// One configured token.
#[derive(Clone)]
struct TokenEntry {
    name: String,
    hash: [u8; 32],
    admin: bool,
    scopes: WriteScopes,
    quota: QuotaOverride,
}

/// A token's own quotas (`None`: the server's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaOverride {
    pub active_jobs: Option<u64>,
    pub queued_files: Option<u64>,
    pub active_exports: Option<u64>,
}

impl QuotaOverride {
    /// The quotas in force: this token's, else `defaults`.
    pub fn over(&self, defaults: OwnerQuota) -> OwnerQuota {
        OwnerQuota {
            active_jobs: self.active_jobs.unwrap_or(defaults.active_jobs),
            queued_files: self.queued_files.unwrap_or(defaults.queued_files),
            active_exports: self.active_exports.unwrap_or(defaults.active_exports),
        }
    }

    /// Takes a `NAME=N` tokens-file field if it is a quota.
    fn take(&mut self, field: &str) -> Option<Result<(), String>> {
        let (name, value) = field.split_once('=')?;
        let slot = match name {
            "active-jobs" => &mut self.active_jobs,
            "queued-files" => &mut self.queued_files,
            "active-exports" => &mut self.active_exports,
            _ => return None,
        };
        Some(match value.parse() {
            Ok(n) => {
                *slot = Some(n);
                Ok(())
            }
            Err(_) => Err(format!(
                "`{field}`: a quota is a whole number (0: no limit)"
            )),
        })
    }
}

/// The configured tokens.
#[derive(Clone, Default)]
pub struct Tokens(Vec<TokenEntry>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: even hashes stay out of logs.
        f.debug_list()
            .entries(self.0.iter().map(|t| &t.name))
            .finish()
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name; `None` when the API is open (no tokens).
    pub name: Option<String>,
    pub admin: bool,
    /// Where its jobs may write.
    pub scopes: WriteScopes,
    /// Its own quotas.
    pub quota: QuotaOverride,
}

impl Caller {
    /// The caller of an open API: sees everything, owns nothing.
    pub fn anonymous() -> Self {
        Self {
            name: None,
            admin: true,
            scopes: WriteScopes::Anywhere,
            quota: QuotaOverride::default(),
        }
    }

    /// What this caller may see.
    pub fn access(&self) -> Access {
        match (&self.name, self.admin) {
            (Some(name), false) => Access::Owner(name.clone()),
            _ => Access::All,
        }
    }

    /// The key of per-caller limits.
    fn limit_key(&self) -> String {
        self.name.clone().unwrap_or_else(|| "anonymous".into())
    }
}

pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The tokens-file line for `token`.
pub fn token_line(token: &str, name: &str, admin: bool, scopes: &[String]) -> String {
    let hash = hex::encode(sha256(token.as_bytes()));
    let mut line = format!("sha256:{hash} {name}");
    if admin {
        line.push_str(" admin");
    }
    for scope in scopes {
        line.push_str(" scope=");
        line.push_str(scope);
    }
    line
}

/// A fresh random token (256 bits, URL-safe).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

impl Tokens {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Parses a tokens file; errors name the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries: Vec<TokenEntry> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |what: &str| format!("line {}: {what}", n + 1);
            let mut fields = line.split_whitespace();
            let hash = fields
                .next()
                .and_then(|h| h.strip_prefix("sha256:"))
                .ok_or_else(|| at("expected `sha256:<64 hex> <name> [admin] [scope=...]`"))?;
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(hash, &mut bytes).map_err(|_| {
                at("the hash must be 64 hex characters (ferry token create makes one)")
            })?;
            let name = fields.next().ok_or_else(|| at("the token has no name"))?;
            if !valid_name(name) {
                return Err(at("a token name is 1-64 letters, digits or `-_.@`"));
            }
            let mut admin = false;
            let mut scopes = Vec::new();
            let mut quota = QuotaOverride::default();
            for field in fields {
                if let Some(taken) = quota.take(field) {
                    taken.map_err(|e| at(&e))?;
                    continue;
                }
                match field.strip_prefix("scope=") {
                    Some(raw) => {
                        scopes.push(DestinationScope::parse(raw).map_err(|e| at(&e.to_string()))?)
                    }
                    None if field == "admin" && !admin && scopes.is_empty() => admin = true,
                    None => {
                        return Err(at(
                            "after the name come `admin` (once), `scope=...` and quota fields (`active-jobs=N`, `queued-files=N`, `active-exports=N`) only",
                        ));
                    }
                }
            }
            let scopes = match (admin, scopes.is_empty()) {
                (true, true) => WriteScopes::Anywhere,
                (false, true) => WriteScopes::Only(
                    DestinationScope::own_prefix(name)
                        .map_err(|e| {
                            at(&format!(
                                "`{name}` cannot be its own prefix ({e}): give the token a scope="
                            ))
                        })?
                        .to_vec(),
                ),
                (_, false) => WriteScopes::Only(scopes),
            };
            if entries.iter().any(|e| e.name == name) {
                return Err(at(&format!("the name `{name}` is used twice")));
            }
            entries.push(TokenEntry {
                name: name.to_owned(),
                hash: bytes,
                admin,
                scopes,
                quota,
            });
        }
        Ok(Self(entries))
    }

    /// The caller a presented token stands for. Every configured hash is
    /// compared, in constant time.
    pub fn verify(&self, presented: &str) -> Option<Caller> {
        let hash = sha256(presented.as_bytes());
        let mut found: Option<&TokenEntry> = None;
        for entry in &self.0 {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some(entry);
            }
        }
        found.map(|e| Caller {
            name: Some(e.name.clone()),
            admin: e.admin,
            scopes: e.scopes.clone(),
            quota: e.quota,
        })
    }
}

/// Per-caller limits: job submissions per minute and concurrent streams.
#[derive(Debug)]
pub struct Limits {
    /// The per-owner quotas of tokens that set none of their own.
    quota: OwnerQuota,
    submissions: Option<DefaultKeyedRateLimiter<String>>,
    max_streams: usize,
    streams: Arc<Mutex<HashMap<String, usize>>>,
}

/// A held stream slot; freed when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    key: String,
    streams: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = match self.streams.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if let Some(n) = streams.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                streams.remove(&self.key);
            }
        }
    }
}

impl Limits {
    /// `jobs_per_minute` 0 and `max_streams` 0 mean unlimited.
    pub fn new(jobs_per_minute: u32, max_streams: usize) -> Self {
        Self {
            quota: OwnerQuota::default(),
            submissions: NonZeroU32::new(jobs_per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            max_streams,
            streams: Arc::default(),
        }
    }

    /// With per-owner quotas for tokens that set none of their own.
    #[must_use]
    pub fn with_quota(mut self, quota: OwnerQuota) -> Self {
        self.quota = quota;
        self
    }

    /// The quotas `caller`'s jobs are held to.
    pub fn quota(&self, caller: &Caller) -> OwnerQuota {
        caller.quota.over(self.quota)
    }

    /// One submission by `caller`, or how long to wait.
    pub fn submit(&self, caller: &Caller) -> Result<(), ApiError> {
        let Some(limiter) = &self.submissions else {
            return Ok(());
        };
        limiter.check_key(&caller.limit_key()).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            let secs = wait.max(Duration::from_secs(1)).as_secs_f64().ceil() as u64;
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many jobs submitted; retry in {secs} s"),
            )
            .retry_after(secs)
        })
    }

    /// A stream slot for `caller`, or 429.
    pub fn stream(&self, caller: &Caller) -> Result<StreamSlot, ApiError> {
        let key = caller.limit_key();
        let mut streams = match self.streams.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let n = streams.entry(key.clone()).or_insert(0);
        if self.max_streams > 0 && *n >= self.max_streams {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "this caller already has {} open event streams (the limit); close one first",
                    self.max_streams
                ),
            )
            .retry_after(1));
        }
        *n += 1;
        Ok(StreamSlot {
            key,
            streams: self.streams.clone(),
        })
    }
}

/// Which requests need a token.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `None`: the API is open (loopback without tokens, or --auth off).
    pub tokens: Option<Tokens>,
    /// `/metrics` answers without a token.
    pub public_metrics: bool,
}

fn unauthorized(message: &str) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Whether `host` (a `Host` header: name or IP literal, optional port) may
/// reach an API without tokens: `localhost` or an IP literal. A web page
/// that DNS-rebinds its own name to 127.0.0.1 still sends its name as
/// `Host`, so it is refused (421) before anything runs.
pub fn open_api_host_allowed(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok()
                    && (port.is_empty() || port.strip_prefix(':').is_some_and(valid_port));
            }
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// On an API without tokens, refuses requests whose `Host` is a name other
/// than `localhost` (DNS rebinding) with 421.
pub async fn check_host(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.auth.tokens.is_none() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        if !host.is_some_and(open_api_host_allowed) {
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected_request",
                "this server has no tokens and answers only to localhost or an IP address as Host; configure --tokens to serve other names",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Puts the [`Caller`] in the request's extensions, or answers 401.
/// `/healthz`, `/readyz` and `/v1/openapi.json` are open; `/metrics` is open
/// when configured so.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let open_path = matches!(path, "/healthz" | "/readyz" | "/v1/openapi.json")
        || (path == "/metrics" && state.auth.public_metrics);
    let caller = match &state.auth.tokens {
        None => Caller::anonymous(),
        Some(_) if open_path => Caller::anonymous(),
        Some(tokens) => {
            let presented = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim);
            let Some(presented) = presented else {
                return unauthorized(
                    "this server needs a token: send `Authorization: Bearer <token>`",
                );
            };
            match tokens.verify(presented) {
                Some(caller) => caller,
                None => return unauthorized("the token is not valid"),
            }
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_api_hosts_are_localhost_or_ip_literals() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:8080",
            "10.1.2.3:80",
        ] {
            assert!(open_api_host_allowed(ok), "{ok}");
        }
        for bad in [
            "rebind.evil.example",
            "rebind.evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "[::1",
            "[evil]:80",
            "localhost:http",
            "",
        ] {
            assert!(!open_api_host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn tokens_verify_by_hash() {
        let ci = new_token();
        let ops = new_token();
        assert!(ci.starts_with(TOKEN_PREFIX) && ci.len() == 3 + 64);
        let file = format!(
            "# comment\n\n{}\n{}\n",
            token_line(&ci, "ci", false, &[]),
            token_line(&ops, "ops", true, &[])
        );
        assert!(!file.contains(&ci) && !file.contains(&ops));
        let tokens = Tokens::parse(&file).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(
            tokens.verify(&ci),
            Some(Caller {
                name: Some("ci".into()),
                admin: false,
                scopes: WriteScopes::Only(DestinationScope::own_prefix("ci").unwrap().to_vec()),
                quota: QuotaOverride::default(),
            })
        );
        assert!(tokens.verify(&ops).unwrap().admin);
        assert_eq!(tokens.verify("fy_wrong"), None);
        assert_eq!(tokens.verify(""), None);
        assert!(!format!("{tokens:?}").contains("sha256"));
    }

    #[test]
    fn bad_token_files_name_the_line() {
        let cases = [
            ("nothash ci", "line 1: expected"),
            ("sha256:abcd ci", "line 1: the hash must be 64 hex"),
            (
                &format!("sha256:{} ", "a".repeat(64)),
                "line 1: the token has no name",
            ),
            (
                &format!("#\nsha256:{} ci root", "a".repeat(64)),
                "line 2: after the name come",
            ),
            (
                &format!("sha256:{} ci admin admin", "a".repeat(64)),
                "line 1: after the name come",
            ),
            (
                &format!("sha256:{} ci scope=ftp://x", "a".repeat(64)),
                "line 1: `ftp://x` is not a destination scope",
            ),
            (
                &format!("sha256:{} .. ", "a".repeat(64)),
                "line 1: `..` cannot be its own prefix",
            ),
            (
                &format!("sha256:{} ci\nsha256:{} ci", "a".repeat(64), "b".repeat(64)),
                "line 2: the name `ci` is used twice",
            ),
            (
                &format!("sha256:{} bad/name", "a".repeat(64)),
                "line 1: a token name",
            ),
        ];
        for (text, expected) in cases {
            let err = Tokens::parse(text).unwrap_err();
            assert!(err.starts_with(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn scoped_callers_see_their_own_jobs() {
        let scoped = Caller {
            name: Some("ci".into()),
            admin: false,
            scopes: WriteScopes::Anywhere,
            quota: QuotaOverride::default(),
        };
        assert_eq!(scoped.access(), Access::Owner("ci".into()));
        assert_eq!(Caller::anonymous().access(), Access::All);
    }

    #[test]
    fn stream_slots_are_counted_per_caller_and_freed() {
        let limits = Limits::new(0, 2);
        let a = Caller {
            name: Some("a".into()),
            admin: false,
            scopes: WriteScopes::Anywhere,
            quota: QuotaOverride::default(),
        };
        let one = limits.stream(&a).unwrap();
        let _two = limits.stream(&a).unwrap();
        assert_eq!(limits.stream(&a).unwrap_err().code, "too_many_streams");
        assert!(limits.stream(&Caller::anonymous()).is_ok());
        drop(one);
        assert!(limits.stream(&a).is_ok());
    }

    #[test]
    fn submissions_are_rate_limited_per_caller() {
        let limits = Limits::new(3, 0);
        let a = Caller {
            name: Some("a".into()),
            admin: false,
            scopes: WriteScopes::Anywhere,
            quota: QuotaOverride::default(),
        };
        for _ in 0..3 {
            limits.submit(&a).unwrap();
        }
        let err = limits.submit(&a).unwrap_err();
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(err.retry_after.is_some_and(|s| s >= 1));
        assert!(limits.submit(&Caller::anonymous()).is_ok());
    }

    #[test]
    fn scopes_come_from_the_tokens_file_with_the_own_prefix_by_default() {
        let (plain, scoped, admin, scoped_admin) =
            (new_token(), new_token(), new_token(), new_token());
        let hash = |t: &str| hex::encode(sha256(t.as_bytes()));
        let file = format!(
            "sha256:{} alice\nsha256:{} team-a scope=s3://exports/team-a scope=dir:team-a\nsha256:{} ops admin\nsha256:{} audit admin scope=dir:audit\n",
            hash(&plain),
            hash(&scoped),
            hash(&admin),
            hash(&scoped_admin)
        );
        let tokens = Tokens::parse(&file).unwrap();
        let scopes = |t: &str| tokens.verify(t).unwrap().scopes.to_string();
        assert_eq!(scopes(&plain), "dir:alice, s3://*/alice");
        assert_eq!(scopes(&scoped), "s3://exports/team-a, dir:team-a");
        assert_eq!(scopes(&admin), "*");
        assert_eq!(scopes(&scoped_admin), "dir:audit");
        assert!(tokens.verify(&scoped_admin).unwrap().admin);
    }
}
