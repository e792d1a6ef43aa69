//! The one parse of a frame: Ethernet, then ARP, IPv4 or IPv6 (its extension headers walked),
//! then TCP, UDP, ICMP or ICMPv6, into a small `Copy` summary ([`Parsed`]) that every stage of
//! the datapath reads instead of parsing again.
//! Lengths are checked here once; a stage that needs bytes (a checksum, a quoted packet) reads
//! them at the offsets the summary gives, through the views.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::arp::Arp;
use crate::ethernet::{EthFrame, EtherType};
use crate::ipv4::{self, Ipv4Packet};
use crate::ipv6::{next_header, Ipv6Packet};
use crate::l4::{IcmpHeader, TcpHeader, UdpHeader};

/// A frame as the datapath sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// The Ethernet header.
    pub eth: EthFrame,
    /// What the Ethernet payload is.
    pub l3: L3,
}

/// The network layer of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    /// Ethernet/IPv4 ARP.
    Arp(Arp),
    /// IPv4 with a valid header layout (the header checksum is not checked here).
    Ipv4(Ip4),
    /// IPv6 with a valid header and extension-header chain.
    Ipv6(Ip6),
    /// The EtherType says ARP, IPv4 or IPv6 but the packet does not parse (for IPv6: the fixed
    /// header, a jumbogram, or a bad extension-header chain, [`crate::ipv6::ExtError`]).
    Malformed,
    /// Another EtherType (a VLAN tag, ...): switched at L2 only.
    Other,
}

/// An IPv4 packet's header fields and transport, as parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ip4 {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol number.
    pub proto: u8,
    /// Time to live.
    pub ttl: u8,
    /// Header length in bytes (where the transport header starts in the packet).
    pub header_len: usize,
    /// Total length (at most what the frame holds after the Ethernet header).
    pub total_len: usize,
    /// The transport header.
    pub l4: L4,
}

/// An IPv6 packet's header fields and upper layer, as parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ip6 {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// The upper-layer protocol after the extension headers ([`crate::ipv6::next_header`]; for a
    /// non-first fragment, what the fragment header names).
    pub proto: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// The fixed header and the extension headers, in bytes: where the upper layer starts in
    /// the packet.
    pub header_len: usize,
    /// Length of the packet: 40 and the payload length (at most what the frame holds after the
    /// Ethernet header).
    pub total_len: usize,
    /// The upper layer.
    pub l4: L4,
}

/// The transport layer of an IPv4 or IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flag bits.
        flags: u8,
        /// Header length in bytes (options included).
        header_len: usize,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP or ICMPv6 (the first 8 bytes).
    Icmp {
        /// Message type.
        msg_type: u8,
        /// Code.
        code: u8,
        /// Echo identifier (meaningful for echo messages).
        ident: u16,
    },
    /// A fragment (for IPv6: not an atomic one): the transport header is not looked at.
    Fragment,
    /// TCP, UDP, ICMP or ICMPv6 whose header the packet cuts short or contradicts.
    Malformed,
    /// Another protocol.
    Other,
}

impl L4 {
    /// The ports (TCP, UDP) or the echo identifier (ICMP of either family: `sport` for a
    /// request, `dport` for a reply, whose type is `echo_reply`) after a translation.
    #[inline]
    fn translate(&mut self, sport: u16, dport: u16, echo_reply: u8) {
        match self {
            L4::Tcp {
                sport: s, dport: d, ..
            }
            | L4::Udp { sport: s, dport: d } => (*s, *d) = (sport, dport),
            L4::Icmp {
                msg_type, ident, ..
            } => {
                *ident = if *msg_type == echo_reply {
                    dport
                } else {
                    sport
                }
            }
            _ => {}
        }
    }
}

impl Ip6 {
    /// The same packet after a translation to `src:sport -> dst:dport` (ports ignored where the
    /// transport has none; for ICMPv6 echo the identifier becomes `sport` for a request and
    /// `dport` for a reply, as NAT66 writes it). The hop limit is left as it was.
    #[inline]
    pub fn translated(mut self, src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Ip6 {
        (self.src, self.dst) = (src, dst);
        self.l4
            .translate(sport, dport, crate::icmpv6::msg_type::ECHO_REPLY);
        self
    }
}

impl Ip4 {
    /// The same packet after a translation to `src:sport -> dst:dport` (ports ignored where the
    /// transport has none; for ICMP echo the identifier becomes `sport` for a request and
    /// `dport` for a reply, as the translation writes it) and one hop (TTL less one).
    #[inline]
    pub fn translated(mut self, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Ip4 {
        (self.src, self.dst) = (src, dst);
        self.ttl = self.ttl.saturating_sub(1);
        self.l4
            .translate(sport, dport, crate::l4::icmp_type::ECHO_REPLY);
        self
    }

    /// Parse the IPv4 packet at the start of `ip` (bounded by the frame); `None` when the header
    /// layout or the lengths do not check out.
    #[inline]
    pub fn parse(ip: &[u8]) -> Option<Ip4> {
        let p = Ipv4Packet::new_checked(ip)?;
        let l4 = if p.is_fragment() {
            L4::Fragment
        } else {
            l4(p.protocol(), ipv4::proto::ICMP, p.payload())
        };
        Some(Ip4 {
            src: p.src(),
            dst: p.dst(),
            proto: p.protocol(),
            ttl: p.ttl(),
            header_len: p.header_len(),
            total_len: p.len(),
            l4,
        })
    }

    /// Source and destination port of TCP and UDP, the identifier twice for ICMP.
    #[inline]
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => Some((sport, dport)),
            L4::Icmp { ident, .. } => Some((ident, ident)),
            _ => None,
        }
    }
}

/// The summary of the upper-layer message `msg` of protocol `proto`; `icmp` is ICMP's number in
/// this IP version (1 for IPv4, 58 for IPv6).
#[inline]
fn l4(proto: u8, icmp: u8, msg: &[u8]) -> L4 {
    match proto {
        ipv4::proto::TCP => TcpHeader::new_checked(msg).map_or(L4::Malformed, |t| L4::Tcp {
            sport: t.sport(),
            dport: t.dport(),
            flags: t.flags(),
            header_len: t.header_len(),
        }),
        ipv4::proto::UDP => UdpHeader::new_checked(msg).map_or(L4::Malformed, |u| L4::Udp {
            sport: u.sport(),
            dport: u.dport(),
        }),
        p if p == icmp => IcmpHeader::new_checked(msg).map_or(L4::Malformed, |i| L4::Icmp {
            msg_type: i.msg_type(),
            code: i.code(),
            ident: i.echo_ident(),
        }),
        _ => L4::Other,
    }
}

impl Ip6 {
    /// Parse the IPv6 packet at the start of `ip` (bounded by the frame) and walk its
    /// extension headers; `None` when the header, the lengths or the chain do not check out
    /// ([`crate::ipv6::upper_layer`]).
    #[inline]
    pub fn parse(ip: &[u8]) -> Option<Ip6> {
        let p = Ipv6Packet::new_checked(ip)?;
        let up = p.upper_layer().ok()?;
        let l4 = if up.fragment {
            L4::Fragment
        } else {
            let msg = p.packet().get(up.offset..).unwrap_or_default();
            l4(up.proto, next_header::ICMPV6, msg)
        };
        Some(Ip6 {
            src: p.src(),
            dst: p.dst(),
            proto: up.proto,
            hop_limit: p.hop_limit(),
            header_len: up.offset,
            total_len: p.len(),
            l4,
        })
    }

    /// Source and destination port of TCP and UDP, the identifier twice for ICMPv6.
    #[inline]
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => Some((sport, dport)),
            L4::Icmp { ident, .. } => Some((ident, ident)),
            _ => None,
        }
    }
}

impl Parsed {
    /// The summary of an ARP frame.
    pub fn arp(eth: EthFrame, arp: Arp) -> Parsed {
        Parsed {
            eth,
            l3: L3::Arp(arp),
        }
    }

    /// Parse `frame`; `None` for a runt (shorter than an Ethernet header).
    #[inline]
    pub fn parse(frame: &[u8]) -> Option<Parsed> {
        let eth = EthFrame::parse(frame)?;
        let l3 = match eth.ethertype {
            EtherType::ARP => Arp::parse(frame).map_or(L3::Malformed, L3::Arp),
            EtherType::IPV4 => Ip4::parse(EthFrame::payload(frame)).map_or(L3::Malformed, L3::Ipv4),
            EtherType::IPV6 => Ip6::parse(EthFrame::payload(frame)).map_or(L3::Malformed, L3::Ipv6),
            _ => L3::Other,
        };
        Some(Parsed { eth, l3 })
    }

    /// The IPv4 packet, if the frame carries one that parsed.
    #[inline]
    pub fn ip4(&self) -> Option<&Ip4> {
        match &self.l3 {
            L3::Ipv4(ip) => Some(ip),
            _ => None,
        }
    }

    /// The IPv6 packet, if the frame carries one that parsed.
    #[inline]
    pub fn ip6(&self) -> Option<&Ip6> {
        match &self.l3 {
            L3::Ipv6(ip) => Some(ip),
            _ => None,
        }
    }

    /// Bytes of Ethernet, IPv4 and TCP headers of an unfragmented TCP/IPv4 frame (where its
    /// payload starts).
    #[inline]
    pub fn tcp4_headers_len(&self) -> Option<usize> {
        self.ip4().and_then(|ip| tcp_end(ip.header_len, ip.l4))
    }

    /// Bytes of Ethernet, IPv6 (extension headers included) and TCP headers of an unfragmented
    /// TCP/IPv6 frame (where its payload starts).
    #[inline]
    pub fn tcp6_headers_len(&self) -> Option<usize> {
        self.ip6().and_then(|ip| tcp_end(ip.header_len, ip.l4))
    }

    /// [`Self::tcp4_headers_len`] or [`Self::tcp6_headers_len`], whichever family the frame is.
    #[inline]
    pub fn tcp_headers_len(&self) -> Option<usize> {
        match &self.l3 {
            L3::Ipv4(ip) => tcp_end(ip.header_len, ip.l4),
            L3::Ipv6(ip) => tcp_end(ip.header_len, ip.l4),
            _ => None,
        }
    }
}

/// Where the payload of a TCP segment starts in its frame: the Ethernet header, `ip_len` bytes
/// of IP headers and the TCP header `l4` gives; `None` when `l4` is not TCP.
#[inline]
fn tcp_end(ip_len: usize, l4: L4) -> Option<usize> {
    match l4 {
        L4::Tcp { header_len, .. } => Some(EthFrame::HEADER_LEN + ip_len + header_len),
        _ => None,
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::ipv4::Ipv4Header;
    use crate::l4::{tcp_flags, TcpRepr};

    fn tcp_frame(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        Ipv4Header {
            src: Ipv4Addr::new(10, 0, 0, 2),
            dst: Ipv4Addr::new(198, 51, 100, 1),
            protocol: ipv4::proto::TCP,
            payload_len: 20 + payload,
            ttl: 64,
        }
        .write((&mut f[14..34]).try_into().unwrap());
        TcpRepr {
            sport: 40000,
            dport: 80,
            seq: 1,
            ack: 0,
            flags: tcp_flags::SYN,
        }
        .write((&mut f[34..54]).try_into().unwrap());
        f
    }

    #[test]
    fn a_tcp_frame_parses_to_its_tuple_and_layout() {
        let f = tcp_frame(10);
        let p = Parsed::parse(&f).unwrap();
        let ip = p.ip4().unwrap();
        assert_eq!(
            (ip.src, ip.dst, ip.ttl, ip.total_len),
            (
                Ipv4Addr::new(10, 0, 0, 2),
                Ipv4Addr::new(198, 51, 100, 1),
                64,
                50
            )
        );
        assert_eq!(ip.ports(), Some((40000, 80)));
        assert!(matches!(
            ip.l4,
            L4::Tcp {
                flags: tcp_flags::SYN,
                ..
            }
        ));
        assert_eq!(p.tcp4_headers_len(), Some(54));
    }

    #[test]
    fn cut_and_lying_packets_are_classified_not_trusted() {
        let f = tcp_frame(0);
        assert!(Parsed::parse(&f[..13]).is_none());
        assert_eq!(Parsed::parse(&f[..30]).unwrap().l3, L3::Malformed);
        let mut g = f.clone();
        g[14 + 20 + 12] = 0xf0; // TCP data offset 60 in a 20-byte segment
        assert_eq!(Parsed::parse(&g).unwrap().ip4().unwrap().l4, L4::Malformed);
        let mut g = f.clone();
        g[14 + 6] = 0x20; // more fragments
        assert_eq!(Parsed::parse(&g).unwrap().ip4().unwrap().l4, L4::Fragment);
        let mut g = f.clone();
        g[12..14].copy_from_slice(&[0x86, 0xdd]); // says IPv6, holds IPv4
        assert_eq!(Parsed::parse(&g).unwrap().l3, L3::Malformed);
        g[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(Parsed::parse(&g).unwrap().l3, L3::Other);
        assert_eq!(Parsed::parse(&g).unwrap().tcp_headers_len(), None);
    }

    const SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 2);
    const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

    /// An Ethernet frame around the IPv6 packet `exts` (next header, bytes) then `upper`.
    fn frame6(exts: &[(u8, Vec<u8>)], upper: (u8, &[u8])) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[..6].copy_from_slice(&[0x02, 0x42, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[0x02, 0x42, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        let mut ip = crate::ipv6::test::packet(exts, upper);
        ip[8..24].copy_from_slice(&SRC6.octets());
        ip[24..40].copy_from_slice(&DST6.octets());
        f.extend_from_slice(&ip);
        f
    }

    fn tcp6(payload: usize) -> Vec<u8> {
        let mut t = vec![0u8; 20 + payload];
        TcpRepr {
            sport: 40000,
            dport: 443,
            seq: 1,
            ack: 0,
            flags: tcp_flags::SYN,
        }
        .write((&mut t[..20]).try_into().unwrap());
        t
    }

    fn opts8() -> Vec<u8> {
        vec![0, 0, 1, 4, 0, 0, 0, 0]
    }

    fn frag(offset: u16, more: bool) -> Vec<u8> {
        let v = (offset << 3) | u16::from(more);
        let mut f = vec![0, 0, 0, 0, 0, 0, 0, 9];
        f[2..4].copy_from_slice(&v.to_be_bytes());
        f
    }

    #[test]
    fn a_tcp6_frame_parses_to_its_tuple_and_layout() {
        let f = frame6(&[], (next_header::TCP, &tcp6(10)));
        let p = Parsed::parse(&f).unwrap();
        assert!(p.ip4().is_none());
        let ip = p.ip6().unwrap();
        assert_eq!(
            (ip.src, ip.dst, ip.hop_limit, ip.proto),
            (SRC6, DST6, 64, next_header::TCP)
        );
        assert_eq!((ip.header_len, ip.total_len), (40, 70));
        assert_eq!(ip.ports(), Some((40000, 443)));
        assert!(matches!(
            ip.l4,
            L4::Tcp {
                flags: tcp_flags::SYN,
                header_len: 20,
                ..
            }
        ));
        assert_eq!(p.tcp6_headers_len(), Some(74));
        assert_eq!(p.tcp_headers_len(), Some(74));
        assert_eq!(p.tcp4_headers_len(), None);
        let v4 = Parsed::parse(&tcp_frame(0)).unwrap();
        assert_eq!(v4.tcp_headers_len(), Some(54));
        assert_eq!((v4.tcp6_headers_len(), v4.ip6()), (None, None));
        // Behind extension headers: the upper layer starts after them.
        let f = frame6(
            &[
                (next_header::HOP_BY_HOP, opts8()),
                (next_header::DEST_OPTS, opts8()),
            ],
            (next_header::TCP, &tcp6(0)),
        );
        let p = Parsed::parse(&f).unwrap();
        let ip = p.ip6().unwrap();
        assert_eq!((ip.header_len, ip.total_len, ip.proto), (56, 76, 6));
        assert_eq!(p.tcp_headers_len(), Some(14 + 56 + 20));
        // Ethernet padding after the packet is not part of it.
        let mut g = f.clone();
        g.extend_from_slice(&[0; 8]);
        assert_eq!(Parsed::parse(&g).unwrap().ip6().unwrap().total_len, 76);
    }

    #[test]
    fn udp_icmpv6_and_other_upper_layers() {
        let mut u = [0u8; 12];
        crate::l4::write_udp((&mut u[..8]).try_into().unwrap(), 546, 547, 4);
        let f = frame6(&[(next_header::DEST_OPTS, opts8())], (next_header::UDP, &u));
        let ip = *Parsed::parse(&f).unwrap().ip6().unwrap();
        assert_eq!(
            ip.l4,
            L4::Udp {
                sport: 546,
                dport: 547
            }
        );
        assert_eq!(ip.ports(), Some((546, 547)));
        let echo = [128u8, 0, 0, 0, 0xbe, 0xef, 0, 1];
        let f = frame6(&[], (next_header::ICMPV6, &echo));
        let ip = *Parsed::parse(&f).unwrap().ip6().unwrap();
        assert_eq!(
            ip.l4,
            L4::Icmp {
                msg_type: 128,
                code: 0,
                ident: 0xbeef
            }
        );
        assert_eq!(ip.ports(), Some((0xbeef, 0xbeef)));
        // ICMPv4's number inside IPv6 is not ICMP; unknown, ESP, no next header: Other.
        for proto in [1, 253, next_header::ESP, next_header::NO_NEXT] {
            let f = frame6(&[], (proto, &echo));
            let ip = *Parsed::parse(&f).unwrap().ip6().unwrap();
            assert_eq!((ip.proto, ip.l4, ip.ports()), (proto, L4::Other, None));
        }
        // Cut short: Malformed upper layer.
        for (proto, bytes) in [
            (next_header::TCP, &tcp6(0)[..19]),
            (next_header::UDP, &u[..7]),
            (next_header::ICMPV6, &echo[..7]),
        ] {
            let f = frame6(&[], (proto, bytes));
            let ip = *Parsed::parse(&f).unwrap().ip6().unwrap();
            assert_eq!(ip.l4, L4::Malformed, "{proto}");
        }
    }

    #[test]
    fn v6_fragments_first_non_first_and_atomic() {
        let t = tcp6(0);
        let parse = |exts: &[(u8, Vec<u8>)]| {
            let f = frame6(exts, (next_header::TCP, &t));
            *Parsed::parse(&f).unwrap().ip6().unwrap()
        };
        let first = parse(&[(next_header::FRAGMENT, frag(0, true))]);
        assert_eq!(
            (first.l4, first.proto, first.header_len),
            (L4::Fragment, 6, 48)
        );
        let later = parse(&[(next_header::FRAGMENT, frag(100, false))]);
        assert_eq!((later.l4, later.ports()), (L4::Fragment, None));
        let atomic = parse(&[(next_header::FRAGMENT, frag(0, false))]);
        assert!(matches!(atomic.l4, L4::Tcp { dport: 443, .. }));
        assert_eq!(atomic.header_len, 48);
        let f = frame6(
            &[(next_header::FRAGMENT, frag(0, true))],
            (next_header::TCP, &t),
        );
        assert_eq!(Parsed::parse(&f).unwrap().tcp_headers_len(), None);
    }

    #[test]
    fn bad_v6_packets_and_chains_are_malformed() {
        let t = tcp6(0);
        let malformed = |f: &[u8]| Parsed::parse(f).unwrap().l3 == L3::Malformed;
        let good = frame6(
            &[(next_header::HOP_BY_HOP, opts8())],
            (next_header::TCP, &t),
        );
        for n in 14..good.len() {
            assert!(malformed(&good[..n]), "{n}");
        }
        // Nine destination-options headers.
        let exts: Vec<_> = (0..9).map(|_| (next_header::DEST_OPTS, opts8())).collect();
        assert!(malformed(&frame6(&exts, (next_header::TCP, &t))));
        let exts: Vec<_> = (0..8).map(|_| (next_header::DEST_OPTS, opts8())).collect();
        assert!(!malformed(&frame6(&exts, (next_header::TCP, &t))));
        // Hop-by-hop after another header.
        let f = frame6(
            &[
                (next_header::ROUTING, opts8()),
                (next_header::HOP_BY_HOP, opts8()),
            ],
            (next_header::TCP, &t),
        );
        assert!(malformed(&f));
        // A jumbogram (payload length 0, hop-by-hop with a jumbo payload option).
        let mut j = frame6(&[], (next_header::HOP_BY_HOP, &[]));
        j.extend_from_slice(&[6, 0, 0xc2, 4, 0, 0, 0, 68]);
        j.extend_from_slice(&t);
        assert!(malformed(&j));
        // A header length past the packet.
        let mut f = good.clone();
        f[14 + 41] = 9;
        assert!(malformed(&f));
        // Version 4 under the IPv6 EtherType.
        let mut f = good.clone();
        f[14] = 0x40;
        assert!(malformed(&f));
    }

    #[test]
    fn no_prefix_or_byte_flip_of_a_v6_frame_panics() {
        let frames = [
            frame6(
                &[
                    (next_header::HOP_BY_HOP, opts8()),
                    (next_header::ROUTING, opts8()),
                    (next_header::FRAGMENT, frag(0, false)),
                    (next_header::AH, vec![0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
                    (next_header::DEST_OPTS, opts8()),
                ],
                (next_header::TCP, &tcp6(4)),
            ),
            frame6(&[], (next_header::ICMPV6, &[135; 32])),
        ];
        for f in &frames {
            for n in 0..=f.len() {
                if let Some(p) = Parsed::parse(&f[..n]) {
                    let _ = (p.tcp_headers_len(), p.ip6().map(Ip6::ports));
                }
            }
            for at in 0..f.len() {
                for v in [0u8, 1, 6, 0x2c, 0x33, 0x60, 0xff] {
                    let mut g = f.clone();
                    g[at] = v;
                    if let Some(p) = Parsed::parse(&g) {
                        if let Some(ip) = p.ip6() {
                            assert!(ip.header_len <= ip.total_len && ip.total_len <= g.len() - 14);
                        }
                    }
                }
            }
        }
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn parsed_stays_small() {
        // 64 bytes before IPv6; an `Ip6` (two 16-byte addresses and two `usize` lengths) makes
        // it 88.
        assert!(std::mem::size_of::<Parsed>() <= 88);
        assert!(std::mem::size_of::<Ip6>() <= 72);
    }
}
