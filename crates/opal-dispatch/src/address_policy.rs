//! The SSRF guard's decision: may a webhook connect to this IP address?
//!
//! Everything that is not plainly a public unicast address is refused, so a callback URL cannot
//! be aimed at the broker's own host, its private network, or cloud metadata services
//! (169.254.169.254). IPv6 forms that carry an IPv4 address are judged by that address, because
//! the kernel or a translator on the path would deliver them to it. The operator may let chosen
//! networks through (`--push-allow-nets`), for example loopback in tests.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::error::DispatchError;

/// Which addresses a webhook may connect to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Networks let through even though they lie in a refused range.
    pub allow: Vec<IpNet>,
    /// Refuse everything outside `allow`, public addresses too: for operators whose webhooks
    /// may only reach known networks, and for test servers that must never reach out.
    pub only_allowed: bool,
    /// Look no host name up but `localhost` (answered as 127.0.0.1 and ::1 without a query,
    /// RFC 6761): for servers where not even a DNS query may leave the host, such as test
    /// servers fed random URLs by a fuzzer.
    pub no_dns: bool,
}

/// The kind of range an address was refused for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Range {
    /// `0.0.0.0` or `::`; Linux connects `0.0.0.0` to the local host.
    Unspecified,
    /// `0.0.0.0/8` other than `0.0.0.0`: "this network" (RFC 791).
    ThisNetwork,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10/8`, `172.16/12`, `192.168/16` (RFC 1918).
    Private,
    /// `100.64.0.0/10`, carrier-grade NAT (RFC 6598).
    SharedAddressSpace,
    /// `169.254/16`, `fe80::/10`; home of cloud metadata services.
    LinkLocal,
    /// `192.0.0.0/24` (RFC 6890).
    IetfProtocolAssignments,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`.
    Documentation,
    /// `198.18.0.0/15`, `2001:2::/48` (RFC 2544, RFC 5180).
    Benchmarking,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `240.0.0.0/4` other than the broadcast address.
    Reserved,
    /// `255.255.255.255`.
    Broadcast,
    /// `fc00::/7` (RFC 4193), IPv6's private networks.
    UniqueLocal,
    /// `fec0::/10`, deprecated but still routed as private by some stacks.
    SiteLocal,
    /// `100::/64`, discard-only (RFC 6666).
    DiscardOnly,
    /// `64:ff9b:1::/48`, NAT64 for local use (RFC 8215), which translates into private networks.
    LocalNat64,
    /// IPv6 outside `2000::/3`, the only block IANA hands out for global unicast; refusing the
    /// rest keeps future special-purpose assignments out without a code change.
    NotGlobalUnicast,
    /// Any address outside the allow list, when only the allow list may be reached.
    NotAllowed,
}

impl Range {
    /// The range's name as people say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Range::Unspecified => "unspecified",
            Range::ThisNetwork => "this-network",
            Range::Loopback => "loopback",
            Range::Private => "private",
            Range::SharedAddressSpace => "shared address space (CGNAT)",
            Range::LinkLocal => "link-local",
            Range::IetfProtocolAssignments => "IETF protocol assignments",
            Range::Documentation => "documentation",
            Range::Benchmarking => "benchmarking",
            Range::Multicast => "multicast",
            Range::Reserved => "reserved",
            Range::Broadcast => "broadcast",
            Range::UniqueLocal => "unique-local",
            Range::SiteLocal => "site-local",
            Range::DiscardOnly => "discard-only",
            Range::LocalNat64 => "local-use NAT64",
            Range::NotGlobalUnicast => "non-global-unicast",
            Range::NotAllowed => "outside the allow list",
        }
    }
}

/// How an IPv6 address carried the IPv4 address that was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Embedding {
    /// `::ffff:a.b.c.d` (the kernel connects straight to `a.b.c.d`).
    Ipv4Mapped,
    /// `::ffff:0:a.b.c.d` (SIIT, RFC 2765).
    Ipv4Translated,
    /// `::a.b.c.d`, deprecated.
    Ipv4Compatible,
    /// `64:ff9b::a.b.c.d`, the well-known NAT64 prefix (RFC 6052).
    Nat64,
    /// `2002:aabb:ccdd::/48`, 6to4 (RFC 3056).
    SixToFour,
}

impl Embedding {
    /// The form's name as people say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Embedding::Ipv4Mapped => "IPv4-mapped",
            Embedding::Ipv4Translated => "IPv4-translated",
            Embedding::Ipv4Compatible => "IPv4-compatible",
            Embedding::Nat64 => "NAT64",
            Embedding::SixToFour => "6to4",
        }
    }
}

/// Why an address was refused: its range, and the IPv6 form that carried it if it was an
/// embedded IPv4 address. Displays as, for example, "IPv4-mapped loopback".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refusal {
    /// The refused range.
    pub range: Range,
    /// Set when the refused address was an IPv4 address inside an IPv6 one.
    pub embedded_in: Option<Embedding>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.embedded_in {
            Some(form) => write!(f, "{} {}", form.as_str(), self.range.as_str()),
            None => f.write_str(self.range.as_str()),
        }
    }
}

impl AddressPolicy {
    /// Refuses every special-purpose range and lets nothing through.
    pub fn new() -> Self {
        Self::default()
    }

    /// A policy letting `allow` through.
    pub fn with_allow(allow: Vec<IpNet>) -> Self {
        AddressPolicy {
            allow,
            only_allowed: false,
            no_dns: false,
        }
    }

    /// Parses a `--push-allow-nets` value: networks (or single addresses) separated by commas
    /// and/or whitespace, such as `"127.0.0.0/8, ::1/128"`. An empty string allows nothing.
    pub fn parse_allow_list(text: &str) -> Result<Self, DispatchError> {
        let allow = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| DispatchError::InvalidAllowList {
                        entry: entry.to_owned(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AddressPolicy::with_allow(allow))
    }

    /// May a webhook connect to `ip`? Addresses in the allow list pass, and so does an
    /// IPv4-mapped address whose IPv4 address is in it (the kernel treats the two alike).
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.allows(ip) {
            return Ok(());
        }
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = v6.to_ipv4_mapped()
            && self.allows(IpAddr::V4(v4))
        {
            return Ok(());
        }
        match classify(ip) {
            Some(refusal) => Err(refusal),
            None if self.only_allowed => Err(Refusal {
                range: Range::NotAllowed,
                embedded_in: None,
            }),
            None => Ok(()),
        }
    }

    fn allows(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// The refused range `ip` lies in, if any.
fn classify(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4).map(|range| Refusal {
            range,
            embedded_in: None,
        }),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Range> {
    let [a, b, c, _] = ip.octets();
    let range = match (a, b, c) {
        _ if ip.is_unspecified() => Range::Unspecified,
        (0, _, _) => Range::ThisNetwork,
        (10, _, _) => Range::Private,
        (100, 64..=127, _) => Range::SharedAddressSpace,
        (127, _, _) => Range::Loopback,
        (169, 254, _) => Range::LinkLocal,
        (172, 16..=31, _) => Range::Private,
        (192, 0, 0) => Range::IetfProtocolAssignments,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Range::Documentation,
        (192, 168, _) => Range::Private,
        (198, 18..=19, _) => Range::Benchmarking,
        (224..=239, _, _) => Range::Multicast,
        _ if ip.is_broadcast() => Range::Broadcast,
        (240..=255, _, _) => Range::Reserved,
        _ => return None,
    };
    Some(range)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Refusal> {
    let plain = |range| {
        Some(Refusal {
            range,
            embedded_in: None,
        })
    };
    if ip.is_unspecified() {
        return plain(Range::Unspecified);
    }
    if ip.is_loopback() {
        return plain(Range::Loopback);
    }
    if let Some((form, v4)) = embedded_v4(ip) {
        return classify_v4(v4).map(|range| Refusal {
            range,
            embedded_in: Some(form),
        });
    }
    let s = ip.segments();
    let range = match s {
        [0x0100, 0, 0, 0, ..] => Range::DiscardOnly,
        [0x0064, 0xff9b, 0x0001, ..] => Range::LocalNat64,
        [0x2001, 0x0002, 0, ..] => Range::Benchmarking,
        [0x2001, 0x0db8, ..] => Range::Documentation,
        [first, ..] if first & 0xfe00 == 0xfc00 => Range::UniqueLocal,
        [first, ..] if first & 0xffc0 == 0xfe80 => Range::LinkLocal,
        [first, ..] if first & 0xffc0 == 0xfec0 => Range::SiteLocal,
        [first, ..] if first & 0xff00 == 0xff00 => Range::Multicast,
        [first, ..] if first & 0xe000 != 0x2000 => Range::NotGlobalUnicast,
        _ => return None,
    };
    plain(range)
}

/// The IPv4 address an IPv6 address carries, for the forms that deliver to it.
fn embedded_v4(ip: Ipv6Addr) -> Option<(Embedding, Ipv4Addr)> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some((Embedding::Ipv4Mapped, low)),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some((Embedding::Ipv4Translated, low)),
        // `::` and `::1` are caught before this, as themselves.
        [0, 0, 0, 0, 0, 0, _, _] => Some((Embedding::Ipv4Compatible, low)),
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some((Embedding::Nat64, low)),
        [0x2002, hi, lo, ..] => Some((
            Embedding::SixToFour,
            Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
