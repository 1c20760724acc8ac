// Decisions only: nothing here opens a socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

use super::*;

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().unwrap())
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse().unwrap())
}

fn refused(ip: IpAddr) -> Option<Refusal> {
    AddressPolicy::new().check(ip).err()
}

fn range_of(ip: IpAddr) -> Option<Range> {
    refused(ip).map(|r| r.range)
}

/// Every refused IPv4 range with the name it must be refused under. `0.0.0.0/8` and `240/4`
/// have one special address each, tested separately.
const V4_RANGES: &[(&str, Range)] = &[
    ("0.0.0.0/8", Range::ThisNetwork),
    ("10.0.0.0/8", Range::Private),
    ("100.64.0.0/10", Range::SharedAddressSpace),
    ("127.0.0.0/8", Range::Loopback),
    ("169.254.0.0/16", Range::LinkLocal),
    ("172.16.0.0/12", Range::Private),
    ("192.0.0.0/24", Range::IetfProtocolAssignments),
    ("192.0.2.0/24", Range::Documentation),
    ("192.168.0.0/16", Range::Private),
    ("198.18.0.0/15", Range::Benchmarking),
    ("198.51.100.0/24", Range::Documentation),
    ("203.0.113.0/24", Range::Documentation),
    ("224.0.0.0/4", Range::Multicast),
    ("240.0.0.0/4", Range::Reserved),
];

/// Public addresses just outside each refused IPv4 range.
const V4_PUBLIC_NEIGHBOURS: &[&str] = &[
    "1.0.0.0",
    "9.255.255.255",
    "11.0.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "126.255.255.255",
    "128.0.0.0",
    "169.253.255.255",
    "169.255.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "191.255.255.255",
    "192.0.1.0",
    "192.0.1.255",
    "192.0.3.0",
    "192.167.255.255",
    "192.169.0.0",
    "198.17.255.255",
    "198.20.0.0",
    "198.51.99.255",
    "198.51.101.0",
    "203.0.112.255",
    "203.0.114.0",
    "223.255.255.255",
    "8.8.8.8",
    "93.184.215.14",
];

const V6_RANGES: &[(&str, Range)] = &[
    ("fc00::/7", Range::UniqueLocal),
    ("fe80::/10", Range::LinkLocal),
    ("fec0::/10", Range::SiteLocal),
    ("ff00::/8", Range::Multicast),
    ("2001:db8::/32", Range::Documentation),
    ("2001:2::/48", Range::Benchmarking),
    ("100::/64", Range::DiscardOnly),
    ("64:ff9b:1::/48", Range::LocalNat64),
];

const V6_PUBLIC_NEIGHBOURS: &[&str] = &[
    "2000::",
    "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
    "2001:db9::",
    "2001:1:ffff:ffff:ffff:ffff:ffff:ffff",
    "2001:2:1::",
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
];

#[test]
fn every_v4_range_is_refused_from_first_to_last_address() {
    for (cidr, range) in V4_RANGES {
        let net: Ipv4Net = cidr.parse().unwrap();
        let first = u32::from(net.network());
        let last = u32::from(net.broadcast());
        for addr in [first + 1, first + 2, first + (last - first) / 2, last - 1] {
            let ip = IpAddr::V4(Ipv4Addr::from(addr));
            assert_eq!(range_of(ip), Some(*range), "{ip} in {cidr}");
        }
        let expected_first = if *cidr == "0.0.0.0/8" {
            Range::Unspecified
        } else {
            *range
        };
        let expected_last = if *cidr == "240.0.0.0/4" {
            Range::Broadcast
        } else {
            *range
        };
        assert_eq!(
            range_of(IpAddr::V4(net.network())),
            Some(expected_first),
            "{cidr} first"
        );
        assert_eq!(
            range_of(IpAddr::V4(net.broadcast())),
            Some(expected_last),
            "{cidr} last"
        );
    }
}

#[test]
fn just_outside_every_v4_range_is_not_that_range() {
    for (cidr, range) in V4_RANGES {
        let net: Ipv4Net = cidr.parse().unwrap();
        let below = u32::from(net.network()).checked_sub(1);
        let above = u32::from(net.broadcast()).checked_add(1);
        for addr in below.into_iter().chain(above) {
            let ip = IpAddr::V4(Ipv4Addr::from(addr));
            assert_ne!(range_of(ip), Some(*range), "{ip} is outside {cidr}");
        }
    }
    for ip in V4_PUBLIC_NEIGHBOURS {
        assert_eq!(refused(v4(ip)), None, "{ip} is public");
    }
}

#[test]
fn special_v4_addresses() {
    assert_eq!(range_of(v4("0.0.0.0")), Some(Range::Unspecified));
    assert_eq!(range_of(v4("0.0.0.1")), Some(Range::ThisNetwork));
    assert_eq!(range_of(v4("255.255.255.255")), Some(Range::Broadcast));
    assert_eq!(range_of(v4("255.255.255.254")), Some(Range::Reserved));
    assert_eq!(range_of(v4("169.254.169.254")), Some(Range::LinkLocal));
    assert_eq!(range_of(v4("127.0.0.1")), Some(Range::Loopback));
    assert_eq!(range_of(v4("127.255.255.255")), Some(Range::Loopback));
    assert_eq!(range_of(v4("239.255.255.255")), Some(Range::Multicast));
}

#[test]
fn every_v6_range_is_refused_from_first_to_last_address() {
    for (cidr, range) in V6_RANGES {
        let net: Ipv6Net = cidr.parse().unwrap();
        let first = u128::from(net.network());
        let last = u128::from(net.broadcast());
        for addr in [first, first + 1, first / 2 + last / 2, last - 1, last] {
            let ip = IpAddr::V6(Ipv6Addr::from(addr));
            assert_eq!(range_of(ip), Some(*range), "{ip} in {cidr}");
        }
    }
}

#[test]
fn just_outside_every_v6_range_is_not_that_range() {
    for (cidr, range) in V6_RANGES {
        let net: Ipv6Net = cidr.parse().unwrap();
        let below = u128::from(net.network()).checked_sub(1);
        let above = u128::from(net.broadcast()).checked_add(1);
        for addr in below.into_iter().chain(above) {
            let ip = IpAddr::V6(Ipv6Addr::from(addr));
            assert_ne!(range_of(ip), Some(*range), "{ip} is outside {cidr}");
        }
    }
    for ip in V6_PUBLIC_NEIGHBOURS {
        assert_eq!(refused(v6(ip)), None, "{ip} is public");
    }
}

#[test]
fn special_v6_addresses() {
    assert_eq!(range_of(v6("::")), Some(Range::Unspecified));
    assert_eq!(range_of(v6("::1")), Some(Range::Loopback));
    assert_eq!(range_of(v6("fd00:ec2::254")), Some(Range::UniqueLocal));
    assert_eq!(range_of(v6("fe80::1")), Some(Range::LinkLocal));
    assert_eq!(range_of(v6("ff02::1")), Some(Range::Multicast));
    // Outside 2000::/3 and in no named range.
    assert_eq!(range_of(v6("1fff:ffff::")), Some(Range::NotGlobalUnicast));
    assert_eq!(range_of(v6("fe00::")), Some(Range::NotGlobalUnicast));
    assert_eq!(range_of(v6("::2:0:0")), Some(Range::NotGlobalUnicast));
    assert_eq!(range_of(v6("4000::")), Some(Range::NotGlobalUnicast));
}

/// How an address was refused: the carrying form, if any, and the range.
type Judged = Option<(Option<Embedding>, Range)>;

fn embedded(ip: &str) -> Judged {
    refused(v6(ip)).map(|r| (r.embedded_in, r.range))
}

#[test]
fn embedded_ipv4_is_judged_by_the_ipv4_rules() {
    use Embedding::*;
    let cases: &[(&str, Judged)] = &[
        (
            "::ffff:127.0.0.1",
            Some((Some(Ipv4Mapped), Range::Loopback)),
        ),
        ("::ffff:10.1.2.3", Some((Some(Ipv4Mapped), Range::Private))),
        (
            "::ffff:169.254.169.254",
            Some((Some(Ipv4Mapped), Range::LinkLocal)),
        ),
        (
            "::ffff:0.0.0.0",
            Some((Some(Ipv4Mapped), Range::Unspecified)),
        ),
        (
            "::ffff:255.255.255.255",
            Some((Some(Ipv4Mapped), Range::Broadcast)),
        ),
        ("::ffff:8.8.8.8", None),
        (
            "::ffff:0:127.0.0.1",
            Some((Some(Ipv4Translated), Range::Loopback)),
        ),
        ("::ffff:0:8.8.8.8", None),
        ("::127.0.0.1", Some((Some(Ipv4Compatible), Range::Loopback))),
        (
            "::0.0.0.2",
            Some((Some(Ipv4Compatible), Range::ThisNetwork)),
        ),
        (
            "::192.168.1.1",
            Some((Some(Ipv4Compatible), Range::Private)),
        ),
        ("::8.8.8.8", None),
        ("64:ff9b::127.0.0.1", Some((Some(Nat64), Range::Loopback))),
        (
            "64:ff9b::100.64.0.1",
            Some((Some(Nat64), Range::SharedAddressSpace)),
        ),
        ("64:ff9b::8.8.8.8", None),
        ("2002:7f00:1::", Some((Some(SixToFour), Range::Loopback))),
        (
            "2002:a9fe:a9fe:1::1",
            Some((Some(SixToFour), Range::LinkLocal)),
        ),
        (
            "2002:c000:0201::",
            Some((Some(SixToFour), Range::Documentation)),
        ),
        ("2002::", Some((Some(SixToFour), Range::Unspecified))),
        ("2002:808:808::", None),
    ];
    for (ip, expected) in cases {
        assert_eq!(embedded(ip), *expected, "{ip}");
    }
}

#[test]
fn just_outside_the_embedding_prefixes() {
    // 64:ff9b::/96 ends where a sixth segment starts; past it the address is no NAT64 form.
    assert_eq!(
        range_of(v6("64:ff9b::1:7f00:1")),
        Some(Range::NotGlobalUnicast)
    );
    // ::ffff:0:0/96 neighbours: ::fffe:… and ::1:0:0:0 carry no IPv4 address.
    assert_eq!(
        embedded("::fffe:7f00:1"),
        Some((None, Range::NotGlobalUnicast))
    );
    assert_eq!(embedded("::1:0:0:0"), Some((None, Range::NotGlobalUnicast)));
    // 2001::/32 and 2003::/16 are ordinary global unicast, not 6to4.
    assert_eq!(refused(v6("2003:7f00:1::")), None);
    assert_eq!(refused(v6("2001:7f00:1::")), None);
}

#[test]
fn refusals_name_the_range_and_the_form() {
    let show = |ip: IpAddr| refused(ip).unwrap().to_string();
    assert_eq!(show(v4("127.0.0.1")), "loopback");
    assert_eq!(show(v4("100.64.0.1")), "shared address space (CGNAT)");
    assert_eq!(show(v6("::ffff:127.0.0.1")), "IPv4-mapped loopback");
    assert_eq!(show(v6("64:ff9b::10.0.0.1")), "NAT64 private");
    assert_eq!(show(v6("2002:a9fe:a9fe::")), "6to4 link-local");
    assert_eq!(show(v6("fd00::1")), "unique-local");
}

#[test]
fn parse_allow_list_accepts_nets_and_addresses() {
    let policy = AddressPolicy::parse_allow_list("127.0.0.0/8, ::1/128").unwrap();
    assert_eq!(
        policy.allow,
        vec![
            "127.0.0.0/8".parse::<IpNet>().unwrap(),
            "::1/128".parse().unwrap()
        ]
    );
    let policy = AddressPolicy::parse_allow_list(" 10.1.2.3 ,,fd00::/8\t192.168.0.1/16,").unwrap();
    assert_eq!(
        policy.allow,
        vec![
            "10.1.2.3/32".parse::<IpNet>().unwrap(),
            "fd00::/8".parse().unwrap(),
            "192.168.0.0/16".parse().unwrap(),
        ]
    );
    assert_eq!(
        AddressPolicy::parse_allow_list("").unwrap(),
        AddressPolicy::new()
    );
    assert_eq!(
        AddressPolicy::parse_allow_list(" , ").unwrap(),
        AddressPolicy::new()
    );
}

#[test]
fn parse_allow_list_names_the_bad_entry() {
    for bad in [
        "127.0.0.0/33",
        "localhost",
        "1.2.3",
        "::1/129",
        "10.0.0.0/8/8",
        "*",
    ] {
        let text = format!("127.0.0.0/8, {bad}");
        match AddressPolicy::parse_allow_list(&text) {
            Err(DispatchError::InvalidAllowList { entry }) => assert_eq!(entry, bad),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn the_allow_list_lets_chosen_networks_through_and_nothing_else() {
    let policy = AddressPolicy::parse_allow_list("127.0.0.0/8,::1/128,10.1.0.0/16").unwrap();
    for ip in [
        v4("127.0.0.1"),
        v4("127.255.255.255"),
        v6("::1"),
        v6("::ffff:127.0.0.1"),
        v4("10.1.255.255"),
        v4("8.8.8.8"),
    ] {
        assert_eq!(policy.check(ip), Ok(()), "{ip}");
    }
    for ip in [
        v4("10.2.0.0"),
        v4("10.0.255.255"),
        v4("169.254.169.254"),
        v4("0.0.0.0"),
        v6("::"),
        v6("fe80::1"),
        // Only the mapped form counts as the same address; translators do not.
        v6("64:ff9b::127.0.0.1"),
        v6("2002:7f00:1::"),
    ] {
        assert!(policy.check(ip).is_err(), "{ip}");
    }
}

proptest! {
    #[test]
    fn mapped_forms_decide_like_their_ipv4_address(raw in any::<u32>()) {
        let ip = Ipv4Addr::from(raw);
        let plain = refused(IpAddr::V4(ip)).map(|r| r.range);
        let mapped = refused(IpAddr::V6(ip.to_ipv6_mapped()));
        prop_assert_eq!(mapped.map(|r| r.range), plain);
        if let Some(r) = mapped {
            prop_assert_eq!(r.embedded_in, Some(Embedding::Ipv4Mapped));
        }
        let [a, b, c, d] = ip.octets();
        let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
        prop_assert_eq!(range_of(IpAddr::V6(nat64)), plain);
        let six_to_four = Ipv6Addr::new(0x2002, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]), 7, 0, 0, 0, 1);
        prop_assert_eq!(range_of(IpAddr::V6(six_to_four)), plain);
    }

    #[test]
    fn private_nets_are_refused_throughout(host in any::<u32>()) {
        prop_assert_eq!(range_of(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (host & 0x00ff_ffff)))), Some(Range::Private));
        prop_assert_eq!(range_of(IpAddr::V4(Ipv4Addr::from(0xac10_0000 | (host & 0x000f_ffff)))), Some(Range::Private));
        prop_assert_eq!(range_of(IpAddr::V4(Ipv4Addr::from(0xc0a8_0000 | (host & 0x0000_ffff)))), Some(Range::Private));
        prop_assert_eq!(range_of(IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | (host & 0x00ff_ffff)))), Some(Range::Loopback));
    }

    #[test]
    fn ordinary_unicast_passes(first in prop_oneof![1u32..=9, 11u32..=99, 101u32..=126, 128u32..=168, 170u32..=171, 173u32..=191, 193u32..=197, 199u32..=202, 204u32..=223], rest in 0u32..(1 << 24)) {
        let ip = IpAddr::V4(Ipv4Addr::from((first << 24) | rest));
        prop_assert_eq!(refused(ip), None);
    }

    #[test]
    fn anything_inside_an_allowed_net_passes(raw in any::<u128>(), prefix in 0u8..=128) {
        let net = Ipv6Net::new(Ipv6Addr::from(raw), prefix).unwrap().trunc();
        let policy = AddressPolicy::with_allow(vec![IpNet::V6(net)]);
        let host_mask = u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
        let inside = Ipv6Addr::from(u128::from(net.network()) | (raw.rotate_left(17) & host_mask));
        prop_assert_eq!(policy.check(IpAddr::V6(inside)), Ok(()));
    }

    #[test]
    fn check_decides_every_v6_address(raw in any::<u128>()) {
        let ip = Ipv6Addr::from(raw);
        let decision = refused(IpAddr::V6(ip));
        // Whatever is allowed by default is global unicast (or carries a public IPv4 address).
        if decision.is_none() && embedded_v4(ip).is_none() {
            prop_assert_eq!(ip.segments()[0] & 0xe000, 0x2000);
        }
    }
}

#[test]
fn only_allowed_refuses_public_addresses_outside_the_list() {
    let mut policy = AddressPolicy::parse_allow_list("127.0.0.0/8, ::1/128").unwrap();
    policy.only_allowed = true;
    assert!(policy.check(v4("127.0.0.1")).is_ok());
    assert!(policy.check(v6("::1")).is_ok());
    assert!(policy.check(v6("::ffff:127.0.0.1")).is_ok());
    for public in ["93.184.216.34", "8.8.8.8"] {
        let refusal = policy.check(v4(public)).unwrap_err();
        assert_eq!(refusal.range, Range::NotAllowed, "{public}");
    }
    let refusal = policy.check(v6("2606:2800:220:1::1")).unwrap_err();
    assert_eq!(refusal.range, Range::NotAllowed);
    // Internal ranges keep their own, more telling names.
    assert_eq!(
        policy.check(v4("10.0.0.1")).unwrap_err().range,
        Range::Private
    );
    // Without the flag the same public addresses pass.
    policy.only_allowed = false;
    assert!(policy.check(v4("8.8.8.8")).is_ok());
}
