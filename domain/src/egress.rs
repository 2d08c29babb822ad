//! Which network addresses ferry may fetch sources from: the SSRF rule.
//!
//! A service that fetches URLs for its callers must not become their way
//! into the network it runs in (cloud metadata at 169.254.169.254, admin
//! ports on loopback, the private network). [`classify`] names the class of
//! an address, looking through IPv4-mapped, IPv4-compatible, NAT64 and 6to4
//! IPv6 forms to the IPv4 address they carry; [`EgressPolicy`] denies every
//! class but public unless an operator allows a network (CIDR) or a host
//! name explicitly. The adapters apply it where the address is final: at
//! connect time, after DNS, for every redirect hop.
//!
//! IPv4 spellings (`0x7f000001`, `2130706433`, `0177.0.0.1`, `127.1`) are
//! normalised by the URL parser (WHATWG host parsing) before they get here,
//! so they are checked as the address they mean.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use thiserror::Error;

/// The kind of network an address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// Globally routable: the only class allowed by default.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fec0::/10 (site-local).
    Private,
    /// 169.254.0.0/16 (cloud metadata lives here), fe80::/10.
    LinkLocal,
    /// 100.64.0.0/10, carrier-grade NAT.
    SharedAddressSpace,
    /// fc00::/7.
    UniqueLocal,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// Documentation, benchmarking, protocol-assignment, reserved (240/4)
    /// and tunnelling ranges (Teredo) that have no business as a source.
    Reserved,
}

impl AddressClass {
    /// The class in words, as errors show it.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::SharedAddressSpace => "carrier-grade NAT",
            AddressClass::UniqueLocal => "unique-local",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Reserved => "reserved",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of an address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) => AddressClass::Unspecified,
        (127, _, _) => AddressClass::Loopback,
        (10, _, _) | (192, 168, _) => AddressClass::Private,
        (172, b, _) if (16..=31).contains(&b) => AddressClass::Private,
        (169, 254, _) => AddressClass::LinkLocal,
        (100, b, _) if (64..=127).contains(&b) => AddressClass::SharedAddressSpace,
        _ if ip.is_broadcast() => AddressClass::Broadcast,
        (224..=239, _, _) => AddressClass::Multicast,
        (240..=255, _, _) => AddressClass::Reserved,
        // IETF protocol assignments, TEST-NET-1/2/3, benchmarking.
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => AddressClass::Reserved,
        (198, 18 | 19, _) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let s = ip.segments();
    if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if s[0] & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else if s[0] & 0xffc0 == 0xfec0 {
        AddressClass::Private
    } else if s[0] & 0xfe00 == 0xfc00 {
        AddressClass::UniqueLocal
    } else if s[0] & 0xff00 == 0xff00 {
        AddressClass::Multicast
    } else if matches!((s[0], s[1]), (0x2001, 0x0db8) | (0x2001, 0))
        // documentation, Teredo; discard-only; outside 2000::/3 (global unicast)
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])
        || s[0] & 0xe000 != 0x2000
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        // `::` and `::1` are IPv6's own unspecified and loopback.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 || lo > 1 => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

/// One entry of an allowlist: a network, or a host name (`files.internal`,
/// or `*.internal` for every name under it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    Network(IpNet),
    Host(String),
    /// `*.suffix`: any name ending in `.suffix`.
    Domain(String),
}

/// Why an allowlist entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "`{entry}` is neither a network (10.1.0.0/16, 192.0.2.7, fd00::/8) nor a host name (files.internal, *.internal)"
)]
pub struct InvalidAllowEntry {
    pub entry: String,
}

impl AllowEntry {
    pub fn parse(raw: &str) -> Result<Self, InvalidAllowEntry> {
        let raw = raw.trim();
        let invalid = || InvalidAllowEntry {
            entry: raw.chars().take(80).collect(),
        };
        if let Ok(net) = raw.parse::<IpNet>() {
            return Ok(AllowEntry::Network(net.trunc()));
        }
        if let Ok(ip) = raw.parse::<IpAddr>() {
            return Ok(AllowEntry::Network(IpNet::from(ip)));
        }
        let (wildcard, name) = match raw.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let valid_name = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid_name {
            return Err(invalid());
        }
        let name = name.to_ascii_lowercase();
        Ok(if wildcard {
            AllowEntry::Domain(name)
        } else {
            AllowEntry::Host(name)
        })
    }
}

/// A source address refused by the policy.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "it resolves to a {class} address, which ferry does not fetch from; an operator can allow it with --allow-source"
)]
pub struct DeniedAddress {
    pub class: AddressClass,
}

/// Public addresses only, plus what the operator allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow: Vec<AllowEntry>,
}

impl EgressPolicy {
    /// Deny every non-public address.
    pub fn public_only() -> Self {
        Self::default()
    }

    pub fn with_allowed(allow: Vec<AllowEntry>) -> Self {
        Self { allow }
    }

    pub fn allowed(&self) -> &[AllowEntry] {
        &self.allow
    }

    /// Whether a host name is allowed whatever it resolves to.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allow.iter().any(|entry| match entry {
            AllowEntry::Host(h) => *h == host,
            AllowEntry::Domain(d) => host
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.ends_with('.')),
            AllowEntry::Network(_) => false,
        })
    }

    /// Whether ferry may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), DeniedAddress> {
        let ip = ip.to_canonical();
        let allowed = self.allow.iter().any(|entry| match entry {
            AllowEntry::Network(net) => net.contains(&ip),
            AllowEntry::Host(_) | AllowEntry::Domain(_) => false,
        });
        if allowed {
            return Ok(());
        }
        match classify(ip) {
            AddressClass::Public => Ok(()),
            class => Err(DeniedAddress { class }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn classifies_the_ranges_ssrf_aims_at() {
        let table = [
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.255.254", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("100.64.0.1", AddressClass::SharedAddressSpace),
            ("100.127.255.255", AddressClass::SharedAddressSpace),
            ("fc00::1", AddressClass::UniqueLocal),
            ("fd12:3456::1", AddressClass::UniqueLocal),
            ("0.0.0.0", AddressClass::Unspecified),
            ("::", AddressClass::Unspecified),
            ("224.0.0.1", AddressClass::Multicast),
            ("ff02::1", AddressClass::Multicast),
            ("255.255.255.255", AddressClass::Broadcast),
            ("240.0.0.1", AddressClass::Reserved),
            ("192.0.2.1", AddressClass::Reserved),
            ("198.18.0.1", AddressClass::Reserved),
            ("2001:db8::1", AddressClass::Reserved),
            ("2001:0:4136:e378::1", AddressClass::Reserved),
            ("93.184.216.34", AddressClass::Public),
            ("172.32.0.1", AddressClass::Public),
            ("100.128.0.1", AddressClass::Public),
            ("2606:4700::1111", AddressClass::Public),
        ];
        for (ip, expected) in table {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn looks_through_ipv6_forms_of_ipv4() {
        let table = [
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:7f00:1", AddressClass::Loopback),
            ("::127.0.0.1", AddressClass::Loopback),
            ("::ffff:169.254.169.254", AddressClass::LinkLocal),
            ("64:ff9b::10.0.0.1", AddressClass::Private),
            ("2002:a9fe:a9fe::1", AddressClass::LinkLocal),
            ("2002:7f00:1::", AddressClass::Loopback),
            ("::ffff:93.184.216.34", AddressClass::Public),
        ];
        for (ip, expected) in table {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn policy_denies_non_public_unless_allowed() {
        let policy = EgressPolicy::public_only();
        assert_eq!(
            policy.check("127.0.0.1".parse().unwrap()),
            Err(DeniedAddress {
                class: AddressClass::Loopback
            })
        );
        assert!(policy.check("93.184.216.34".parse().unwrap()).is_ok());

        let policy = EgressPolicy::with_allowed(vec![
            AllowEntry::parse("127.0.0.2").unwrap(),
            AllowEntry::parse("10.1.0.0/16").unwrap(),
        ]);
        assert!(policy.check("127.0.0.2".parse().unwrap()).is_ok());
        assert!(policy.check("::ffff:127.0.0.2".parse().unwrap()).is_ok());
        assert!(policy.check("127.0.0.1".parse().unwrap()).is_err());
        assert!(policy.check("10.1.200.3".parse().unwrap()).is_ok());
        assert!(policy.check("10.2.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn host_entries_match_names_exactly_or_by_suffix() {
        let policy = EgressPolicy::with_allowed(vec![
            AllowEntry::parse("Files.Internal").unwrap(),
            AllowEntry::parse("*.corp.example").unwrap(),
        ]);
        assert!(policy.host_allowed("files.internal"));
        assert!(policy.host_allowed("files.internal."));
        assert!(!policy.host_allowed("xfiles.internal"));
        assert!(policy.host_allowed("a.b.corp.example"));
        assert!(!policy.host_allowed("corp.example"));
        assert!(!policy.host_allowed("evilcorp.example"));
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry() {
        for bad in ["", "10.0.0.0/33", "a b", "*.", "http://x", "ex ample.com"] {
            let err = AllowEntry::parse(bad).unwrap_err();
            assert!(err.to_string().contains("neither a network"), "{bad}");
        }
        assert_eq!(
            AllowEntry::parse("10.1.2.3/16").unwrap(),
            AllowEntry::Network("10.1.0.0/16".parse().unwrap())
        );
    }
}
