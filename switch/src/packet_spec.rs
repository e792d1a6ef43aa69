//! The packet tracer's packet descriptions, written as tcpdump prints packets, and the frames
//! built from them (checksums and lengths right, so the datapath sees what a host would send):
//!
//! ```text
//! [ether SRC_MAC > DST_MAC] tcp 10.0.0.2:40000 > 198.51.100.2:80 [flags S] [len N] [ttl N]
//! [ether SRC_MAC > DST_MAC] udp 10.0.0.2:5353 > 10.0.0.3:53 [len N] [ttl N]
//! [ether SRC_MAC > DST_MAC] icmp 10.0.0.2 > 10.0.0.1 [len N] [ttl N]   (echo request)
//! tcp [2001:db8::2]:40000 > [2001:db8::1]:80 ...                        (IPv6; icmp too)
//! arp who-has 10.0.0.3 [tell 10.0.0.2]
//! ```
//!
//! MACs not given are the caller's to fill in (the port's own, the next hop's).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use wire::checksum;
use wire::ethernet::MacAddr;

/// The layer above Ethernet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// TCP with these flags (`tcp_flags` bits).
    Tcp(u8),
    /// UDP.
    Udp,
    /// An ICMP (or ICMPv6) echo request.
    Icmp,
    /// An ARP request for `target`.
    Arp,
}

/// A parsed description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Ethernet source, if given.
    pub src_mac: Option<MacAddr>,
    /// Ethernet destination, if given.
    pub dst_mac: Option<MacAddr>,
    /// The protocol.
    pub what: What,
    /// Source address and port (0 where there is none). ARP: the sender (unspecified when not
    /// given: the port's own).
    pub src: SocketAddr,
    /// Destination address and port. ARP: the address asked for.
    pub dst: SocketAddr,
    /// Payload bytes.
    pub len: usize,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
}

fn addr(s: &str, with_port: bool, proto: &str) -> Result<SocketAddr, String> {
    if with_port {
        s.parse::<SocketAddr>().map_err(|_| {
            format!("'{s}' is not ADDRESS:PORT ({proto} needs ports; IPv6 as [ADDRESS]:PORT)")
        })
    } else {
        let a = s.trim_start_matches('[').trim_end_matches(']');
        a.parse::<IpAddr>()
            .map(|ip| SocketAddr::new(ip, 0))
            .map_err(|_| format!("'{s}' is not an IP address"))
    }
}

fn flags(s: &str) -> Result<u8, String> {
    use wire::l4::tcp_flags::*;
    let mut f = 0;
    for c in s.trim_start_matches('[').trim_end_matches(']').chars() {
        f |= match c.to_ascii_uppercase() {
            'S' => SYN,
            'A' | '.' => ACK,
            'F' => FIN,
            'R' => RST,
            'P' => PSH,
            _ => return Err(format!("TCP flag '{c}' unknown (use S, A, F, R, P)")),
        };
    }
    Ok(f)
}

impl std::str::FromStr for Spec {
    type Err = String;

    fn from_str(text: &str) -> Result<Spec, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut w = words.as_slice();
        let (mut src_mac, mut dst_mac) = (None, None);
        if let ["ether", s, ">", d, rest @ ..] = w {
            let mac = |m: &str| {
                m.parse::<MacAddr>()
                    .map_err(|_| format!("'{m}' is not a MAC address"))
            };
            (src_mac, dst_mac) = (Some(mac(s)?), Some(mac(d)?));
            w = rest;
        }
        let (what, src, dst, rest) = match w {
            ["arp", "who-has", target, rest @ ..] => {
                let (tell, rest) = match rest {
                    ["tell", s, rest @ ..] => (addr(s, false, "arp")?, rest),
                    _ => (SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0), rest),
                };
                (What::Arp, tell, addr(target, false, "arp")?, rest)
            }
            [p @ ("tcp" | "udp"), s, ">", d, rest @ ..] => {
                let what = if *p == "tcp" { What::Tcp(0) } else { What::Udp };
                (what, addr(s, true, p)?, addr(d, true, p)?, rest)
            }
            [p @ ("icmp" | "icmp6"), s, ">", d, rest @ ..] => {
                (What::Icmp, addr(s, false, p)?, addr(d, false, p)?, rest)
            }
            _ => {
                return Err(format!(
                    "cannot read packet '{text}': expected 'tcp A:P > B:Q [flags S]', 'udp A:P > \
                     B:Q', 'icmp A > B' or 'arp who-has B [tell A]', optionally after 'ether \
                     SRC_MAC > DST_MAC'"
                ))
            }
        };
        if src.is_ipv4() != dst.is_ipv4() && (what != What::Arp || !src.ip().is_unspecified()) {
            return Err(format!(
                "{} and {} are of different families",
                src.ip(),
                dst.ip()
            ));
        }
        if what == What::Arp && !dst.is_ipv4() {
            return Err("ARP is IPv4 only".into());
        }
        let mut spec = Spec {
            src_mac,
            dst_mac,
            what,
            src,
            dst,
            len: 0,
            ttl: 64,
        };
        let mut rest = rest;
        while !rest.is_empty() {
            let n = |v: &str, max: usize| {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| *n <= max)
                    .ok_or_else(|| format!("'{v}' is not a number up to {max}"))
            };
            rest = match rest {
                ["flags", f, r @ ..] if matches!(spec.what, What::Tcp(_)) => {
                    spec.what = What::Tcp(flags(f)?);
                    r
                }
                ["len", v, r @ ..] if spec.what != What::Arp => {
                    spec.len = n(v, 65_000)?;
                    r
                }
                ["ttl" | "hlim", v, r @ ..] if spec.what != What::Arp => {
                    spec.ttl = u8::try_from(n(v, 255)?).unwrap_or(64);
                    r
                }
                [x, ..] => return Err(format!("unexpected '{x}' in packet '{text}'")),
                [] => break,
            };
        }
        Ok(spec)
    }
}

impl Spec {
    /// The frame, from `src_mac` to `dst_mac` (the spec's own MACs win), and for ARP the
    /// sender address `sender` when the spec names none.
    pub fn frame(&self, src_mac: MacAddr, dst_mac: MacAddr, sender: Ipv4Addr) -> Vec<u8> {
        let (smac, dmac) = (
            self.src_mac.unwrap_or(src_mac),
            self.dst_mac.unwrap_or(dst_mac),
        );
        if self.what == What::Arp {
            let mut f = [0u8; wire::arp::FRAME_LEN];
            let (IpAddr::V4(target), s) = (self.dst.ip(), self.src.ip()) else {
                return f.to_vec();
            };
            let s = match s {
                IpAddr::V4(s) if !s.is_unspecified() => s,
                _ => sender,
            };
            wire::arp::request(&mut f, smac, s, target);
            if self.dst_mac.is_some() {
                f[..6].copy_from_slice(&dmac.0);
            }
            return f.to_vec();
        }
        let payload = vec![0x61u8; self.len];
        let (proto, l4) = match self.what {
            What::Tcp(fl) => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&self.src.port().to_be_bytes());
                h[2..4].copy_from_slice(&self.dst.port().to_be_bytes());
                h[4..8].copy_from_slice(&1000u32.to_be_bytes());
                if fl & wire::l4::tcp_flags::ACK != 0 {
                    h[8..12].copy_from_slice(&1u32.to_be_bytes());
                }
                h[12] = 5 << 4;
                h[13] = fl;
                h[14..16].copy_from_slice(&64240u16.to_be_bytes());
                h.extend_from_slice(&payload);
                (6u8, h)
            }
            What::Udp => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&self.src.port().to_be_bytes());
                h[2..4].copy_from_slice(&self.dst.port().to_be_bytes());
                let l = u16::try_from(8 + payload.len()).unwrap_or(u16::MAX);
                h[4..6].copy_from_slice(&l.to_be_bytes());
                h.extend_from_slice(&payload);
                (17u8, h)
            }
            _ => {
                let v6 = self.dst.is_ipv6();
                let mut h = vec![if v6 { 128 } else { 8 }, 0, 0, 0, 0, 1, 0, 1];
                h.extend_from_slice(&payload);
                (if v6 { 58 } else { 1 }, h)
            }
        };
        let mut l4 = l4;
        let at = match (proto, self.dst.is_ipv6()) {
            (6, _) => 16,
            (17, _) => 6,
            _ => 2,
        };
        let mut f = Vec::with_capacity(14 + 40 + l4.len());
        f.extend_from_slice(&dmac.0);
        f.extend_from_slice(&smac.0);
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let sum = match proto {
                    1 => checksum::checksum(&l4),
                    _ => checksum::checksum_pseudo(s, d, proto, &l4),
                };
                l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
                f.extend_from_slice(&[0x08, 0x00]);
                let total = u16::try_from(20 + l4.len()).unwrap_or(u16::MAX);
                let mut ip = [0u8; 20];
                ip[0] = 0x45;
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
                ip[6] = 0x40; // DF
                ip[8] = self.ttl;
                ip[9] = proto;
                ip[12..16].copy_from_slice(&s.octets());
                ip[16..20].copy_from_slice(&d.octets());
                let c = checksum::checksum(&ip);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
            }
            (s, IpAddr::V6(d)) => {
                let s = match s {
                    IpAddr::V6(s) => s,
                    IpAddr::V4(_) => std::net::Ipv6Addr::UNSPECIFIED,
                };
                let sum = checksum::checksum_pseudo6(s, d, proto, &l4);
                l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
                f.extend_from_slice(&[0x86, 0xdd]);
                let mut ip = [0u8; 40];
                ip[0] = 0x60;
                let plen = u16::try_from(l4.len()).unwrap_or(u16::MAX);
                ip[4..6].copy_from_slice(&plen.to_be_bytes());
                ip[6] = proto;
                ip[7] = self.ttl;
                ip[8..24].copy_from_slice(&s.octets());
                ip[24..40].copy_from_slice(&d.octets());
                f.extend_from_slice(&ip);
            }
            (IpAddr::V6(_), IpAddr::V4(_)) => {}
        }
        f.extend_from_slice(&l4);
        f
    }
}

/// A frame as tcpdump prints it: `SRC > DST, IPv4 A:P > B:Q TCP [S], ttl 64, 54 bytes`.
pub fn describe(f: &[u8]) -> String {
    let Some(l3) = f.get(14..) else {
        return format!("{} bytes: too short for Ethernet", f.len());
    };
    let mac = |b: &[u8]| {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let be = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let ports = |l4: &[u8]| (l4.len() >= 4).then(|| (be(l4, 0), be(l4, 2)));
    let l4 = |proto: u8, src: IpAddr, dst: IpAddr, l4: &[u8]| -> String {
        let at = |a: IpAddr, p: u16| SocketAddr::new(a, p).to_string();
        match (proto, ports(l4)) {
            (6, Some((sp, dp))) if l4.len() >= 14 => {
                let fl = l4[13];
                let mut t = String::new();
                for (bit, c) in [
                    (0x02, 'S'),
                    (0x01, 'F'),
                    (0x04, 'R'),
                    (0x08, 'P'),
                    (0x10, '.'),
                ] {
                    if fl & bit != 0 {
                        t.push(c);
                    }
                }
                format!("{} > {} TCP [{t}]", at(src, sp), at(dst, dp))
            }
            (17, Some((sp, dp))) => format!("{} > {} UDP", at(src, sp), at(dst, dp)),
            (1 | 58, _) if l4.len() >= 2 => {
                format!("{src} > {dst} ICMP type {} code {}", l4[0], l4[1])
            }
            (p, _) => format!("{src} > {dst} protocol {p}"),
        }
    };
    let et = be(f, 12);
    let body = match et {
        0x0806 if l3.len() >= 28 => {
            let ip = |at: usize| Ipv4Addr::new(l3[at], l3[at + 1], l3[at + 2], l3[at + 3]);
            if be(l3, 6) == 1 {
                format!("ARP who-has {} tell {}", ip(24), ip(14))
            } else {
                format!("ARP {} is-at {}", ip(14), mac(&l3[8..14]))
            }
        }
        0x0800 if l3.len() >= 20 => {
            let ip = |at: usize| IpAddr::from([l3[at], l3[at + 1], l3[at + 2], l3[at + 3]]);
            let ihl = usize::from(l3[0] & 15) * 4;
            let rest = l3.get(ihl..).unwrap_or_default();
            format!("IPv4 {}, ttl {}", l4(l3[9], ip(12), ip(16), rest), l3[8])
        }
        0x86dd if l3.len() >= 40 => {
            let ip = |at: usize| {
                let b: [u8; 16] = l3[at..at + 16].try_into().unwrap_or_default();
                IpAddr::from(b)
            };
            format!(
                "IPv6 {}, hlim {}",
                l4(l3[6], ip(8), ip(24), &l3[40..]),
                l3[7]
            )
        }
        _ => format!("ethertype 0x{et:04x}"),
    };
    format!(
        "{} > {}, {body}, {} bytes",
        mac(&f[6..12]),
        mac(&f[..6]),
        f.len()
    )
}

/// Bytes as hex, two digits a byte (the tracer's frames).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hex back to bytes (white space and colons ignored); `None` unless two hex digits a byte.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod test {
    use super::*;
    use wire::{Parsed, L3};

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    #[test]
    fn descriptions_build_frames_that_parse_with_right_checksums() {
        let (a, b) = (mac("02:00:00:00:00:01"), mac("02:00:00:00:00:02"));
        let s: Spec = "tcp 10.0.0.2:40000 > 198.51.100.2:80 flags S len 10"
            .parse()
            .unwrap();
        assert_eq!(s.what, What::Tcp(wire::l4::tcp_flags::SYN));
        let f = s.frame(a, b, Ipv4Addr::UNSPECIFIED);
        let p = Parsed::parse(&f).unwrap();
        let L3::Ipv4(ip) = p.l3 else { panic!("{p:?}") };
        assert_eq!(
            (ip.src, ip.dst),
            ("10.0.0.2".parse().unwrap(), "198.51.100.2".parse().unwrap())
        );
        assert_eq!(f.len(), 14 + 20 + 20 + 10);
        assert_eq!(checksum::checksum(&f[14..34]), 0, "IPv4 header checksum");
        let src = Ipv4Addr::new(10, 0, 0, 2);
        let dst = Ipv4Addr::new(198, 51, 100, 2);
        assert_eq!(
            checksum::checksum_pseudo(src, dst, 6, &f[34..]),
            0,
            "TCP checksum"
        );
        assert_eq!((p.eth.src, p.eth.dst), (a, b));

        let u: Spec = "ether 02:00:00:00:00:09 > ff:ff:ff:ff:ff:ff udp 10.0.0.2:1 > 10.0.0.3:53"
            .parse()
            .unwrap();
        let f = u.frame(a, b, Ipv4Addr::UNSPECIFIED);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(
            checksum::checksum_pseudo(src, Ipv4Addr::new(10, 0, 0, 3), 17, &f[34..]),
            0
        );

        let i: Spec = "icmp 10.0.0.2 > 10.0.0.1 ttl 1".parse().unwrap();
        let f = i.frame(a, b, Ipv4Addr::UNSPECIFIED);
        assert_eq!((f[22], f[34]), (1, 8), "TTL 1, echo request");
        assert_eq!(checksum::checksum(&f[34..]), 0);

        let v6: Spec = "tcp [2001:db8::2]:1000 > [2001:db8::1]:80 flags SA"
            .parse()
            .unwrap();
        let f = v6.frame(a, b, Ipv4Addr::UNSPECIFIED);
        assert!(matches!(Parsed::parse(&f).unwrap().l3, L3::Ipv6(_)));
        let (s6, d6) = (
            "2001:db8::2".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        );
        assert_eq!(checksum::checksum_pseudo6(s6, d6, 6, &f[54..]), 0);

        let arp: Spec = "arp who-has 10.0.0.3".parse().unwrap();
        let f = arp.frame(a, b, Ipv4Addr::new(10, 0, 0, 2));
        let L3::Arp(r) = Parsed::parse(&f).unwrap().l3 else {
            panic!()
        };
        assert!(r.is_request);
        assert_eq!(
            (r.sender_ip, r.target_ip),
            (src, Ipv4Addr::new(10, 0, 0, 3))
        );
    }

    #[test]
    fn frames_are_described_as_tcpdump_would() {
        let (a, b) = (mac("02:00:00:00:00:01"), mac("02:00:00:00:00:02"));
        let f = "tcp 10.0.0.2:40000 > 198.51.100.2:80 flags SA"
            .parse::<Spec>()
            .unwrap()
            .frame(a, b, Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            describe(&f),
            "02:00:00:00:00:01 > 02:00:00:00:00:02, IPv4 10.0.0.2:40000 > 198.51.100.2:80 TCP \
             [S.], ttl 64, 54 bytes"
        );
        let f =
            "arp who-has 10.0.0.3"
                .parse::<Spec>()
                .unwrap()
                .frame(a, b, Ipv4Addr::new(10, 0, 0, 2));
        assert!(describe(&f).contains("ARP who-has 10.0.0.3 tell 10.0.0.2"));
        assert!(describe(&[0; 3]).contains("too short"));
        assert!(describe(&[0; 20]).contains("ethertype 0x0000"));
    }

    #[test]
    fn bad_descriptions_say_what_is_wrong() {
        for (bad, says) in [
            ("tcp 10.0.0.2 > 10.0.0.3:80", "ADDRESS:PORT"),
            ("udp 10.0.0.2:1 > [2001:db8::1]:2", "different families"),
            ("tcp [::]:1 > 10.0.0.1:2", "different families"),
            ("tcp 10.0.0.2:1 > 10.0.0.3:2 flags X", "flag 'X'"),
            ("icmp 10.0.0.2 > 10.0.0.3 len lots", "not a number"),
            ("icmp 10.0.0.2 > 10.0.0.3 ttl 300", "not a number"),
            ("gre 10.0.0.2 > 10.0.0.3", "cannot read packet"),
            ("arp who-has 2001:db8::1", "IPv4 only"),
            ("icmp 10.0.0.2 > 10.0.0.3 extra", "unexpected 'extra'"),
            (
                "ether 02:00 > 02:00:00:00:00:01 icmp 10.0.0.2 > 10.0.0.3",
                "not a MAC",
            ),
            ("", "cannot read packet"),
        ] {
            let e = bad.parse::<Spec>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
