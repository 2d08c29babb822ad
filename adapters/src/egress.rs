//! The SSRF guard for outgoing HTTP: the domain's [`EgressPolicy`] applied
//! where the address is final.
//!
//! - Host names go through [`GuardedResolver`], reqwest's DNS resolver: it
//!   looks the name up, keeps only the addresses the policy allows and hands
//!   exactly those to the connector, so the connection goes to a checked
//!   address and DNS rebinding (a second lookup answering differently) cannot
//!   swap it: every new connection is a new, checked lookup.
//! - IP literals never reach a resolver (hyper's connector parses them), so
//!   [`SourceGuard::check_url`] checks them before a request is sent, and the
//!   redirect policy checks every hop's scheme and literal address.
//! - Proxies from the environment are ignored when the guard is on: a proxy
//!   would make the connection, out of the guard's sight.

use crate::error_text::find_cause;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use ferry_domain::{DeniedAddress, EgressPolicy};

/// A source refused by the guard: the host and the class of the address,
/// never the address itself.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{denied}")]
pub struct SourceDenied {
    pub denied: DeniedAddress,
}

/// A redirect to something other than http(s).
#[derive(Debug, Clone, thiserror::Error)]
#[error("it redirected to a {scheme}:// URL; only http:// and https:// are followed")]
pub struct RedirectSchemeRefused {
    pub scheme: String,
}

/// Name lookup, replaceable in tests (a resolver that answers differently
/// each time).
#[async_trait]
pub trait Lookup: Send + Sync + 'static {
    async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>>;
}

/// The system resolver (getaddrinfo through tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemLookup;

#[async_trait]
impl Lookup for SystemLookup {
    async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let addrs = tokio::net::lookup_host((host, 0)).await?;
        Ok(addrs.map(|a| a.ip()).collect())
    }
}

/// The policy and the lookup it checks.
#[derive(Clone)]
pub struct SourceGuard {
    policy: Arc<EgressPolicy>,
    lookup: Arc<dyn Lookup>,
}

impl std::fmt::Debug for SourceGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceGuard")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl SourceGuard {
    pub fn new(policy: EgressPolicy) -> Self {
        Self::with_lookup(policy, Arc::new(SystemLookup))
    }

    pub fn with_lookup(policy: EgressPolicy, lookup: Arc<dyn Lookup>) -> Self {
        Self {
            policy: Arc::new(policy),
            lookup,
        }
    }

    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// Checks a URL whose host is an IP literal (names are checked when
    /// they resolve).
    pub fn check_url(&self, url: &url::Url) -> Result<(), SourceDenied> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        self.policy
            .check(ip)
            .map_err(|denied| SourceDenied { denied })
    }
}

/// Sets a client's redirects (at most `max_redirects`, http/https only) and,
/// with a guard, makes it connect only where the policy allows: the guarded
/// resolver, every redirect hop checked, environment proxies ignored.
///
/// `same_origin_only`: the client stops at a redirect to another origin
/// (scheme, host, port) than the first URL's and hands the 3xx answer back,
/// so that the caller follows it without the headers meant for the first
/// origin.
pub fn configure(
    builder: reqwest::ClientBuilder,
    guard: Option<&SourceGuard>,
    max_redirects: usize,
    same_origin_only: bool,
) -> reqwest::ClientBuilder {
    let policy = redirect_policy(max_redirects, guard.cloned(), same_origin_only);
    match guard {
        None => builder.redirect(policy),
        Some(guard) => builder
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                guard: guard.clone(),
            }))
            .redirect(policy),
    }
}

/// Whether a redirect to `url` may be followed: http(s) only, and allowed
/// by the guard when there is one. The one rule for every hop, whether
/// reqwest or the caller follows it.
pub fn check_redirect(url: &url::Url, guard: Option<&SourceGuard>) -> Result<(), RedirectRefused> {
    let scheme = url.scheme();
    if scheme != "http" && scheme != "https" {
        return Err(RedirectRefused::Scheme(RedirectSchemeRefused {
            scheme: scheme.to_owned(),
        }));
    }
    if let Some(guard) = guard {
        guard.check_url(url).map_err(RedirectRefused::Denied)?;
    }
    Ok(())
}

/// Why a redirect hop is not followed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedirectRefused {
    #[error(transparent)]
    Scheme(RedirectSchemeRefused),
    #[error(transparent)]
    Denied(SourceDenied),
}

/// Follows at most `max` redirects, each checked by [`check_redirect`].
fn redirect_policy(
    max: usize,
    guard: Option<SourceGuard>,
    same_origin_only: bool,
) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > max {
            return attempt.error(TooManyRedirects);
        }
        if let Err(refused) = check_redirect(attempt.url(), guard.as_ref()) {
            return match refused {
                RedirectRefused::Scheme(e) => attempt.error(e),
                RedirectRefused::Denied(e) => attempt.error(e),
            };
        }
        if same_origin_only
            && attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() != attempt.url().origin())
        {
            return attempt.stop();
        }
        attempt.follow()
    })
}

/// More redirects than allowed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("too many redirects")]
pub struct TooManyRedirects;

/// reqwest's resolver with the policy applied to every answer.
struct GuardedResolver {
    guard: SourceGuard,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let ips = guard.lookup.lookup(&host).await?;
            if guard.policy.host_allowed(&host) {
                let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
                return Ok(addrs);
            }
            let mut allowed = Vec::new();
            let mut first_denied = None;
            for ip in ips {
                match guard.policy.check(ip) {
                    Ok(()) => allowed.push(SocketAddr::new(ip, 0)),
                    Err(denied) => {
                        first_denied.get_or_insert(denied);
                    }
                }
            }
            match first_denied {
                // One denied address condemns the name: an answer mixing
                // public and private addresses is a rebinding attempt.
                Some(denied) => Err(Box::new(SourceDenied { denied }) as _),
                None if allowed.is_empty() => Err(Box::new(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the name has no address",
                )) as _),
                None => {
                    let addrs: Addrs = Box::new(allowed.into_iter());
                    Ok(addrs)
                }
            }
        })
    }
}

/// Why a request was refused by the guard or the redirect policy (a denied
/// address, a redirect to another scheme), if that is why it failed.
pub fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    find_cause::<SourceDenied>(error)
        .map(|d| d.to_string())
        .or_else(|| find_cause::<RedirectSchemeRefused>(error).map(|r| r.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_domain::{AddressClass, AllowEntry};

    #[test]
    fn literal_hosts_are_checked_in_every_spelling() {
        let guard = SourceGuard::new(EgressPolicy::public_only());
        for raw in [
            "http://127.0.0.1/x",
            "http://127.1/x",
            "http://0x7f000001/x",
            "http://2130706433/x",
            "http://0177.0.0.1/x",
            "http://[::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://0.0.0.0:8080/",
        ] {
            let url = url::Url::parse(raw).unwrap();
            assert!(guard.check_url(&url).is_err(), "{raw} was let through");
        }
        let url = url::Url::parse("http://2130706433/x").unwrap();
        assert_eq!(
            guard.check_url(&url).unwrap_err().denied.class,
            AddressClass::Loopback
        );
        // Names are left to the resolver.
        assert!(
            guard
                .check_url(&url::Url::parse("http://localhost/x").unwrap())
                .is_ok()
        );
        assert!(
            guard
                .check_url(&url::Url::parse("http://93.184.216.34/x").unwrap())
                .is_ok()
        );
    }

    struct Fixed(Vec<IpAddr>);

    #[async_trait]
    impl Lookup for Fixed {
        async fn lookup(&self, _host: &str) -> io::Result<Vec<IpAddr>> {
            Ok(self.0.clone())
        }
    }

    async fn resolve(guard: &SourceGuard, host: &str) -> Result<Vec<SocketAddr>, String> {
        let resolver = GuardedResolver {
            guard: guard.clone(),
        };
        let name: Name = host.parse().unwrap();
        resolver
            .resolve(name)
            .await
            .map(Iterator::collect)
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn resolver_refuses_any_denied_answer() {
        let mixed = SourceGuard::with_lookup(
            EgressPolicy::public_only(),
            Arc::new(Fixed(vec![
                "93.184.216.34".parse().unwrap(),
                "10.0.0.5".parse().unwrap(),
            ])),
        );
        let err = resolve(&mixed, "mixed.example").await.unwrap_err();
        assert!(err.contains("private address"), "{err}");
        assert!(!err.contains("10.0.0.5"), "the address leaked: {err}");

        let public = SourceGuard::with_lookup(
            EgressPolicy::public_only(),
            Arc::new(Fixed(vec!["93.184.216.34".parse().unwrap()])),
        );
        assert_eq!(
            resolve(&public, "ok.example").await.unwrap(),
            vec!["93.184.216.34:0".parse().unwrap()]
        );
    }

    #[tokio::test]
    async fn allowed_names_and_networks_pass() {
        let guard = SourceGuard::with_lookup(
            EgressPolicy::with_allowed(vec![
                AllowEntry::parse("files.internal").unwrap(),
                AllowEntry::parse("10.9.0.0/16").unwrap(),
            ]),
            Arc::new(Fixed(vec!["10.0.0.5".parse().unwrap()])),
        );
        assert_eq!(resolve(&guard, "files.internal").await.unwrap().len(), 1);
        assert!(resolve(&guard, "other.internal").await.is_err());
        let net = SourceGuard::with_lookup(
            guard.policy().clone(),
            Arc::new(Fixed(vec!["10.9.3.4".parse().unwrap()])),
        );
        assert_eq!(resolve(&net, "db.internal").await.unwrap().len(), 1);
    }
}
