//! IPv4 and IPv6 subnets and address management: parse CIDRs, check overlap, hand out the next
//! free host address with no duplicates.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 subnet (network address and prefix length; host bits are zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix_len: u8,
}

/// Why a CIDR or address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Not `A.B.C.D/N`.
    #[error("malformed CIDR '{0}' (expected an IPv4 subnet like 172.20.0.0/24)")]
    MalformedCidr(String),
    /// The prefix leaves too few host addresses.
    #[error("subnet '{0}' is too small: the prefix length must be between 8 and 30")]
    PrefixOutOfRange(String),
    /// Host bits set in the network address.
    #[error("'{given}' has host bits set: did you mean {suggested}?")]
    HostBitsSet {
        /// What was given.
        given: String,
        /// The subnet with host bits cleared.
        suggested: String,
    },
    /// Not an IPv4 address.
    #[error("malformed IPv4 address '{0}'")]
    MalformedAddr(String),
    /// The address is not a usable host address of the subnet.
    #[error("address {addr} is outside subnet {subnet} (or is its network or broadcast address)")]
    OutsideSubnet {
        /// The address.
        addr: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Cidr,
    },
    /// Every host address is taken.
    #[error("subnet {0} has no free address left")]
    Exhausted(Ipv4Cidr),
    /// Not `ADDR/N` with an IPv6 address.
    #[error("malformed IPv6 CIDR '{0}' (expected an IPv6 subnet like fd00:20::/64)")]
    MalformedCidr6(String),
    /// An IPv6 prefix out of range.
    #[error("IPv6 subnet '{0}': the prefix length must be between 16 and 120")]
    PrefixOutOfRange6(String),
    /// Not an IPv6 address.
    #[error("malformed IPv6 address '{0}'")]
    MalformedAddr6(String),
    /// The address is not a usable host address of the IPv6 subnet.
    #[error("address {addr} is outside subnet {subnet} (or is its subnet-router anycast address)")]
    OutsideSubnet6 {
        /// The address.
        addr: Ipv6Addr,
        /// The subnet.
        subnet: Ipv6Cidr,
    },
    /// Every host address is taken (or the search for one gave up).
    #[error("subnet {0} has no free address left")]
    Exhausted6(Ipv6Cidr),
}

impl Ipv4Cidr {
    /// A subnet from a network address and prefix length (host bits must be zero).
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Ipv4Cidr, IpamError> {
        let text = format!("{addr}/{prefix_len}");
        if !(8..=30).contains(&prefix_len) {
            return Err(IpamError::PrefixOutOfRange(text));
        }
        let c = Ipv4Cidr { addr, prefix_len };
        if u32::from(addr) & !c.mask() != 0 {
            let suggested = Ipv4Cidr {
                addr: Ipv4Addr::from(u32::from(addr) & c.mask()),
                prefix_len,
            };
            return Err(IpamError::HostBitsSet {
                given: text,
                suggested: suggested.to_string(),
            });
        }
        Ok(c)
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix_len))
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// True when `ip` lies in the subnet (network and broadcast addresses included).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// True when `ip` is a usable host address (not the network or broadcast address).
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.addr && ip != self.broadcast()
    }

    /// The first host address (the default gateway).
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }

    /// True when the two subnets share any address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        let p = self.prefix_len.min(other.prefix_len);
        let m = u32::MAX << (32 - u32::from(p));
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = IpamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || IpamError::MalformedCidr(crate::error::shown(s));
        let (a, p) = s.split_once('/').ok_or_else(malformed)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| malformed())?;
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let prefix_len: u8 = p.parse().map_err(|_| malformed())?;
        if prefix_len > 32 {
            return Err(malformed());
        }
        Ipv4Cidr::new(addr, prefix_len)
    }
}

/// Parse an IPv4 address with an error that names the text.
pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, IpamError> {
    s.parse()
        .map_err(|_| IpamError::MalformedAddr(crate::error::shown(s)))
}

/// Parse an IPv4 or IPv6 address (a VTEP's).
pub fn parse_ip(s: &str) -> Result<std::net::IpAddr, IpamError> {
    s.parse()
        .map_err(|_| IpamError::MalformedAddr(crate::error::shown(s)))
}

/// An IPv6 subnet (network address and prefix length; host bits are zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Cidr {
    addr: Ipv6Addr,
    prefix_len: u8,
}

impl Ipv6Cidr {
    /// A subnet from a network address and prefix length (16..=120; host bits must be zero).
    pub fn new(addr: Ipv6Addr, prefix_len: u8) -> Result<Ipv6Cidr, IpamError> {
        let text = format!("{addr}/{prefix_len}");
        if !(16..=120).contains(&prefix_len) {
            return Err(IpamError::PrefixOutOfRange6(text));
        }
        let c = Ipv6Cidr { addr, prefix_len };
        if u128::from(addr) & !c.mask() != 0 {
            let suggested = Ipv6Cidr {
                addr: Ipv6Addr::from(u128::from(addr) & c.mask()),
                prefix_len,
            };
            return Err(IpamError::HostBitsSet {
                given: text,
                suggested: suggested.to_string(),
            });
        }
        Ok(c)
    }

    /// The network address.
    pub fn network(&self) -> Ipv6Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    fn mask(&self) -> u128 {
        u128::MAX << (128 - u32::from(self.prefix_len))
    }

    /// True when `ip` lies in the subnet.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.addr)
    }

    /// True when `ip` is a usable host address (in the subnet, not the subnet-router anycast
    /// address, which is the network address).
    pub fn is_host(&self, ip: Ipv6Addr) -> bool {
        self.contains(ip) && ip != self.addr
    }

    /// The first host address (the default gateway, `::1` of the subnet).
    pub fn first_host(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) + 1)
    }

    /// The last address of the subnet.
    pub fn last(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) | !self.mask())
    }

    /// True when the two subnets share any address.
    pub fn overlaps(&self, other: &Ipv6Cidr) -> bool {
        let p = self.prefix_len.min(other.prefix_len);
        let m = u128::MAX << (128 - u32::from(p));
        u128::from(self.addr) & m == u128::from(other.addr) & m
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv6Cidr {
    type Err = IpamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || IpamError::MalformedCidr6(crate::error::shown(s));
        let (a, p) = s.split_once('/').ok_or_else(malformed)?;
        let addr: Ipv6Addr = a.parse().map_err(|_| malformed())?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let prefix_len: u8 = p.parse().map_err(|_| malformed())?;
        if prefix_len > 128 {
            return Err(malformed());
        }
        Ipv6Cidr::new(addr, prefix_len)
    }
}

/// Parse an IPv6 address with an error that names the text.
pub fn parse_ipv6(s: &str) -> Result<Ipv6Addr, IpamError> {
    s.parse()
        .map_err(|_| IpamError::MalformedAddr6(crate::error::shown(s)))
}

/// The IPv6 addresses in use in one subnet (the gateway is reserved at creation).
#[derive(Debug, Clone)]
pub struct Pool6 {
    subnet: Ipv6Cidr,
    used: BTreeSet<Ipv6Addr>,
}

impl Pool6 {
    /// A pool for `subnet` with `reserved` (the gateway) taken.
    pub fn new(subnet: Ipv6Cidr, reserved: Ipv6Addr) -> Pool6 {
        Pool6 {
            subnet,
            used: BTreeSet::from([reserved]),
        }
    }

    /// Take a specific address; `Ok(false)` when it is already taken.
    pub fn take(&mut self, ip: Ipv6Addr) -> Result<bool, IpamError> {
        if !self.subnet.is_host(ip) {
            return Err(IpamError::OutsideSubnet6 {
                addr: ip,
                subnet: self.subnet,
            });
        }
        Ok(self.used.insert(ip))
    }

    /// Take the lowest free host address (at most as many tries as addresses are taken, plus
    /// one: the used set is walked in order).
    pub fn next_free(&mut self) -> Result<Ipv6Addr, IpamError> {
        let mut want = u128::from(self.subnet.first_host());
        for &u in self.used.range(self.subnet.first_host()..) {
            match u128::from(u).cmp(&want) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => want += 1,
                std::cmp::Ordering::Greater => break,
            }
        }
        let ip = Ipv6Addr::from(want);
        if !self.subnet.contains(ip) || want == 0 {
            return Err(IpamError::Exhausted6(self.subnet));
        }
        self.used.insert(ip);
        Ok(ip)
    }

    /// Give an address back.
    pub fn release(&mut self, ip: Ipv6Addr) {
        self.used.remove(&ip);
    }

    /// True when `ip` is taken.
    pub fn is_used(&self, ip: Ipv6Addr) -> bool {
        self.used.contains(&ip)
    }
}

/// The addresses in use in one subnet (the gateway is reserved at creation).
#[derive(Debug, Clone)]
pub struct Pool {
    subnet: Ipv4Cidr,
    used: BTreeSet<Ipv4Addr>,
}

impl Pool {
    /// A pool for `subnet` with `reserved` (the gateway) taken.
    pub fn new(subnet: Ipv4Cidr, reserved: Ipv4Addr) -> Pool {
        let mut used = BTreeSet::new();
        used.insert(reserved);
        Pool { subnet, used }
    }

    /// True when `ip` is taken.
    pub fn is_used(&self, ip: Ipv4Addr) -> bool {
        self.used.contains(&ip)
    }

    /// Take a specific address; `Ok(false)` when it is already taken.
    pub fn take(&mut self, ip: Ipv4Addr) -> Result<bool, IpamError> {
        if !self.subnet.is_host(ip) {
            return Err(IpamError::OutsideSubnet {
                addr: ip,
                subnet: self.subnet,
            });
        }
        Ok(self.used.insert(ip))
    }

    /// Take the lowest free host address.
    pub fn next_free(&mut self) -> Result<Ipv4Addr, IpamError> {
        let first = u32::from(self.subnet.first_host());
        let last = u32::from(self.subnet.broadcast()) - 1;
        let ip = (first..=last)
            .map(Ipv4Addr::from)
            .find(|ip| !self.used.contains(ip))
            .ok_or(IpamError::Exhausted(self.subnet))?;
        self.used.insert(ip);
        Ok(ip)
    }

    /// Give an address back.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_rejects() {
        let c = cidr("172.20.0.0/24");
        assert_eq!(c.to_string(), "172.20.0.0/24");
        assert_eq!(c.broadcast(), Ipv4Addr::new(172, 20, 0, 255));
        assert_eq!(c.first_host(), Ipv4Addr::new(172, 20, 0, 1));
        for bad in [
            "banana",
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0/24",
            "10.0.0.0/-1",
            "10.0.0.0/2a",
        ] {
            assert!(
                matches!(bad.parse::<Ipv4Cidr>(), Err(IpamError::MalformedCidr(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "10.0.0.0/31".parse::<Ipv4Cidr>(),
            Err(IpamError::PrefixOutOfRange(_))
        ));
        assert!(matches!(
            "10.0.0.0/4".parse::<Ipv4Cidr>(),
            Err(IpamError::PrefixOutOfRange(_))
        ));
        let e = "10.0.0.5/24".parse::<Ipv4Cidr>().unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/24"), "{e}");
    }

    #[test]
    fn overlap() {
        assert!(cidr("10.0.0.0/16").overlaps(&cidr("10.0.5.0/24")));
        assert!(cidr("10.0.5.0/24").overlaps(&cidr("10.0.0.0/16")));
        assert!(!cidr("10.0.0.0/24").overlaps(&cidr("10.0.1.0/24")));
    }

    #[test]
    fn pool_allocates_lowest_free_without_duplicates() {
        let c = cidr("10.9.0.0/29"); // hosts .1 - .6
        let mut p = Pool::new(c, c.first_host());
        assert_eq!(p.next_free().unwrap(), Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(p.take(Ipv4Addr::new(10, 9, 0, 4)), Ok(true));
        assert_eq!(p.take(Ipv4Addr::new(10, 9, 0, 4)), Ok(false));
        assert_eq!(p.next_free().unwrap(), Ipv4Addr::new(10, 9, 0, 3));
        assert_eq!(p.next_free().unwrap(), Ipv4Addr::new(10, 9, 0, 5));
        assert_eq!(p.next_free().unwrap(), Ipv4Addr::new(10, 9, 0, 6));
        assert!(matches!(p.next_free(), Err(IpamError::Exhausted(_))));
        p.release(Ipv4Addr::new(10, 9, 0, 3));
        assert_eq!(p.next_free().unwrap(), Ipv4Addr::new(10, 9, 0, 3));
    }

    #[test]
    fn ipv6_subnets_and_pools() {
        let c: Ipv6Cidr = "fd00:20::/64".parse().unwrap();
        assert_eq!(c.first_host(), "fd00:20::1".parse::<Ipv6Addr>().unwrap());
        assert!(c.overlaps(&"fd00::/16".parse().unwrap()));
        assert!(!c.overlaps(&"fd00:21::/64".parse().unwrap()));
        for bad in [
            "fd00::",
            "fd00::/",
            "fd00::/129",
            "10.0.0.0/24",
            "fd00::/6x",
            "zz::/64",
        ] {
            assert!(
                matches!(bad.parse::<Ipv6Cidr>(), Err(IpamError::MalformedCidr6(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "fd00::/8".parse::<Ipv6Cidr>(),
            Err(IpamError::PrefixOutOfRange6(_))
        ));
        let e = "fd00::5/64".parse::<Ipv6Cidr>().unwrap_err();
        assert!(e.to_string().contains("fd00::/64"), "{e}");
        let mut p = Pool6::new(c, c.first_host());
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(p.next_free().unwrap(), a("fd00:20::2"));
        assert_eq!(p.take(a("fd00:20::4")), Ok(true));
        assert_eq!(p.take(a("fd00:20::4")), Ok(false));
        assert_eq!(p.next_free().unwrap(), a("fd00:20::3"));
        assert_eq!(p.next_free().unwrap(), a("fd00:20::5"));
        assert!(p.take(a("fd00:21::1")).is_err());
        assert!(p.take(a("fd00:20::")).is_err(), "subnet-router anycast");
        p.release(a("fd00:20::3"));
        assert_eq!(p.next_free().unwrap(), a("fd00:20::3"));
        let small: Ipv6Cidr = "fd00::/120".parse().unwrap();
        let mut p = Pool6::new(small, small.first_host());
        for _ in 0..254 {
            p.next_free().unwrap();
        }
        assert!(matches!(p.next_free(), Err(IpamError::Exhausted6(_))));
    }

    #[test]
    fn pool_refuses_outside_network_and_broadcast() {
        let c = cidr("10.9.0.0/24");
        let mut p = Pool::new(c, c.first_host());
        for ip in ["10.9.1.1", "10.9.0.0", "10.9.0.255"] {
            assert!(
                matches!(
                    p.take(ip.parse().unwrap()),
                    Err(IpamError::OutsideSubnet { .. })
                ),
                "{ip}"
            );
        }
        assert_eq!(p.take(c.first_host()), Ok(false), "gateway is reserved");
    }
}
