//! The 5-tuple of an IPv6 packet and its in-place translation (NAT66), as [`crate::packet`] does
//! for IPv4: ICMPv6 echo tracks by its identifier, ICMPv6 errors (destination unreachable,
//! packet too big, time exceeded, parameter problem) by the packet they quote, reversed. IPv6
//! has no header checksum; TCP, UDP and ICMPv6 checksums all cover the pseudo-header, and are
//! updated incrementally (RFC 1624) for the 128-bit addresses.

use std::net::Ipv6Addr;

use wire::checksum::{checksum_pseudo6, update16, update32};
use wire::icmpv6::msg_type;
use wire::ipv6::{self, next_header};
use wire::Ip6;

use crate::packet::{FiveTuple, IcmpKind, L4Info, ParseError, Proto};

/// The translation view of the IPv6 packet `ip` (from its fixed header, bounded by the frame)
/// that the datapath parsed once as `p`. For ICMPv6 errors the quoted packet is read (the only
/// bytes read again); its own extension headers are not walked (such a quote is unsupported).
pub fn classify(p: &Ip6, ip: &[u8]) -> Result<L4Info<Ipv6Addr>, ParseError> {
    use ParseError::*;
    let mut info = L4Info {
        tuple: FiveTuple {
            proto: Proto::Udp,
            src: p.src,
            sport: 0,
            dst: p.dst,
            dport: 0,
        },
        tcp_flags: 0,
        icmp: IcmpKind::NotIcmp,
        l4: p.header_len,
        ttl: p.hop_limit,
        len: p.total_len,
    };
    if let Some((msg_type, ident)) = crate::packet::transport(p.l4, &mut info)? {
        match msg_type {
            msg_type::ECHO_REQUEST | msg_type::ECHO_REPLY => {
                (info.tuple.sport, info.tuple.dport) = (ident, ident);
                info.icmp = IcmpKind::Echo;
            }
            msg_type::DEST_UNREACH
            | msg_type::PACKET_TOO_BIG
            | msg_type::TIME_EXCEEDED
            | msg_type::PARAM_PROBLEM => {
                let inner = p.header_len + 8;
                let q = ip.get(inner..p.total_len).ok_or(Malformed)?;
                let quoted = Quoted::parse(q).ok_or(Malformed)?;
                let (proto, sport, dport) = match quoted.proto {
                    next_header::TCP => (Proto::Tcp, quoted.ports.0, quoted.ports.1),
                    next_header::UDP => (Proto::Udp, quoted.ports.0, quoted.ports.1),
                    next_header::ICMPV6 => match quoted.ports.0 >> 8 {
                        // An echo's first word is type and code; its identifier follows.
                        t if t == u16::from(msg_type::ECHO_REQUEST)
                            || t == u16::from(msg_type::ECHO_REPLY) =>
                        {
                            (Proto::Icmp, quoted.ident, quoted.ident)
                        }
                        _ => return Err(Unsupported),
                    },
                    _ => return Err(Unsupported),
                };
                // The error travels opposite to the packet it quotes.
                info.tuple = FiveTuple {
                    proto,
                    src: quoted.dst,
                    sport: dport,
                    dst: quoted.src,
                    dport: sport,
                };
                info.icmp = IcmpKind::Error { inner };
            }
            _ => return Err(Unsupported),
        }
    }
    Ok(info)
}

/// The packet an ICMPv6 error quotes: its fixed header and the first 8 bytes of its upper
/// layer, which must follow the fixed header directly. Its payload length is not checked (the
/// quote is usually cut short).
struct Quoted {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    proto: u8,
    /// The upper layer's first two words (TCP/UDP: the ports; ICMPv6: type+code, checksum).
    ports: (u16, u16),
    /// ICMPv6: the identifier (the third word).
    ident: u16,
}

impl Quoted {
    fn parse(q: &[u8]) -> Option<Quoted> {
        if q.len() < ipv6::HEADER_LEN + 8 || q[0] >> 4 != 6 {
            return None;
        }
        let l4 = &q[ipv6::HEADER_LEN..];
        Some(Quoted {
            src: addr(q, 8)?,
            dst: addr(q, 24)?,
            proto: q[6],
            ports: (be16(l4, 0)?, be16(l4, 2)?),
            ident: be16(l4, 4)?,
        })
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn addr(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    let a: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(a))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(w) = b.get_mut(at..at + 2) {
        w.copy_from_slice(&v.to_be_bytes());
    }
}

fn put_addr(b: &mut [u8], at: usize, a: Ipv6Addr) {
    if let Some(w) = b.get_mut(at..at + 16) {
        w.copy_from_slice(&a.octets());
    }
}

/// `c` updated for a 128-bit field changing from `old` to `new`.
fn update128(mut c: u16, old: Ipv6Addr, new: Ipv6Addr) -> u16 {
    let (o, n) = (old.to_bits(), new.to_bits());
    for shift in [96, 64, 32, 0] {
        c = update32(c, (o >> shift) as u32, (n >> shift) as u32);
    }
    c
}

/// Rewrite the addresses of the IPv6 header at the start of `ip` and the ports of the TCP or
/// UDP header at `l4`, from `old` to `new`, updating the L4 checksum incrementally (`partial_l4`:
/// the field holds only the pseudo-header sum, virtio `NEEDS_CSUM`, so ports stay out of it).
fn rewrite_headers(
    ip: &mut [u8],
    l4: usize,
    old: &FiveTuple<Ipv6Addr>,
    new: &FiveTuple<Ipv6Addr>,
    partial_l4: bool,
) {
    put_addr(ip, 8, new.src);
    put_addr(ip, 24, new.dst);
    let co = match old.proto {
        Proto::Tcp => 16,
        Proto::Udp => 6,
        Proto::Icmp => return,
    };
    let zero_udp = old.proto == Proto::Udp && !partial_l4 && be16(ip, l4 + co) == Some(0);
    let (Some(mut c), false) = (be16(ip, l4 + co), zero_udp) else {
        // A quote cut before the checksum, or a UDP datagram without one (a tunnel's, RFC
        // 6935): the ports, where present, still follow; no checksum is made up.
        put16(ip, l4, new.sport);
        put16(ip, l4 + 2, new.dport);
        return;
    };
    if partial_l4 {
        c = !c;
    }
    c = update128(c, old.src, new.src);
    c = update128(c, old.dst, new.dst);
    if !partial_l4 {
        c = update16(c, old.sport, new.sport);
        c = update16(c, old.dport, new.dport);
    }
    put16(ip, l4, new.sport);
    put16(ip, l4 + 2, new.dport);
    if partial_l4 {
        c = !c;
    } else if old.proto == Proto::Udp && c == 0 {
        // UDP over IPv6: zero is not a checksum (RFC 8200 §8.1); the computed zero is all ones.
        c = 0xffff;
    }
    put16(ip, l4 + co, c);
}

/// The ICMPv6 checksum of the message at `l4..end` of `ip`, recomputed with the packet's
/// (translated) addresses.
fn fix_icmp6(ip: &mut [u8], l4: usize, end: usize) {
    let (Some(src), Some(dst)) = (addr(ip, 8), addr(ip, 24)) else {
        return;
    };
    if end < l4 + 4 {
        return;
    }
    put16(ip, l4 + 2, 0);
    let c = checksum_pseudo6(src, dst, next_header::ICMPV6, &ip[l4..end]);
    put16(ip, l4 + 2, c);
}

/// Translate the IPv6 packet `ip` (parsed as `info`) so that its tuple becomes `new`, as
/// [`crate::packet::rewrite`] does for IPv4. For ICMPv6 errors `new` is the translated
/// error-direction tuple: the outer destination (and the source, when the flow's far end itself
/// reported the error) and the quoted packet are rewritten, and the ICMPv6 checksum recomputed.
pub fn rewrite(
    ip: &mut [u8],
    info: &L4Info<Ipv6Addr>,
    new: &FiveTuple<Ipv6Addr>,
    partial_l4: bool,
) {
    let total = (ipv6::HEADER_LEN + usize::from(be16(ip, 4).unwrap_or(0))).min(ip.len());
    let l4 = info.l4;
    match info.icmp {
        IcmpKind::Error { inner } => {
            let old_src = addr(ip, 8).unwrap_or(Ipv6Addr::UNSPECIFIED);
            if old_src == info.tuple.src {
                put_addr(ip, 8, new.src);
            }
            put_addr(ip, 24, new.dst);
            if let Some(q) = ip.get_mut(inner..total) {
                let (old_q, new_q) = (info.tuple.reversed(), new.reversed());
                rewrite_headers(q, ipv6::HEADER_LEN, &old_q, &new_q, false);
                if old_q.proto == Proto::Icmp {
                    // The quoted echo: its identifier (its checksum is not checked by anyone:
                    // the quote is usually cut short).
                    let id = if be16(q, ipv6::HEADER_LEN + 4) == Some(old_q.sport) {
                        new_q.sport
                    } else {
                        new_q.dport
                    };
                    put16(q, ipv6::HEADER_LEN + 4, id);
                }
            }
            fix_icmp6(ip, l4, total);
        }
        IcmpKind::Echo => {
            put_addr(ip, 8, new.src);
            put_addr(ip, 24, new.dst);
            // Requests carry the original identifier as `sport`, replies as `dport`.
            let id_old = be16(ip, l4 + 4).unwrap_or(0);
            let id = if id_old == info.tuple.sport {
                new.sport
            } else {
                new.dport
            };
            put16(ip, l4 + 4, id);
            fix_icmp6(ip, l4, total);
        }
        IcmpKind::NotIcmp => rewrite_headers(ip, l4, &info.tuple, new, partial_l4),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const E: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 2);
    const U: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x50, 0, 0, 0, 0, 2);
    const R: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x50, 0, 0, 0, 0, 1);

    /// An IPv6 packet `src -> dst` carrying `l4` of protocol `nh`, with a correct checksum.
    fn packet(nh: u8, src: Ipv6Addr, dst: Ipv6Addr, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        p.extend_from_slice(&[nh, 64]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(l4);
        fix(&mut p);
        p
    }

    fn co(nh: u8) -> usize {
        match nh {
            6 => 16,
            17 => 6,
            _ => 2,
        }
    }

    fn fix(p: &mut [u8]) {
        let nh = p[6];
        let at = 40 + co(nh);
        p[at..at + 2].copy_from_slice(&[0, 0]);
        let (src, dst) = (addr(p, 8).unwrap(), addr(p, 24).unwrap());
        let mut c = checksum_pseudo6(src, dst, nh, &p[40..]);
        if nh == 17 && c == 0 {
            c = 0xffff;
        }
        p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }

    fn checksum_ok(p: &[u8]) -> bool {
        let mut q = p.to_vec();
        fix(&mut q);
        q == p
    }

    fn parse(p: &[u8]) -> L4Info<Ipv6Addr> {
        let ip = Ip6::parse(p).expect("parses");
        classify(&ip, p).expect("classifies")
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = sport.to_be_bytes().to_vec();
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    #[test]
    fn udp_and_tcp_rewrites_match_full_checksums() {
        let mut p = packet(17, E, R, &udp(40000, 53, b"query"));
        let info = parse(&p);
        assert_eq!(info.tuple.to_string(), format!("[{E}]:40000 -> [{R}]:53"));
        let new = FiveTuple {
            src: U,
            sport: 61000,
            ..info.tuple
        };
        rewrite(&mut p, &info, &new, false);
        assert!(checksum_ok(&p));
        assert_eq!(parse(&p).tuple, new);

        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&1234u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = wire::l4::tcp_flags::SYN;
        tcp.extend_from_slice(b"data");
        let mut p = packet(6, E, R, &tcp);
        let info = parse(&p);
        assert_eq!(info.tcp_flags, wire::l4::tcp_flags::SYN);
        let new = FiveTuple {
            src: U,
            sport: 33000,
            ..info.tuple
        };
        rewrite(&mut p, &info, &new, false);
        assert!(checksum_ok(&p));
        assert_eq!(parse(&p).tuple, new);
    }

    #[test]
    fn partial_checksums_take_the_addresses_only() {
        let mut p = packet(17, E, R, &udp(40000, 53, b"query"));
        let pseudo = |p: &[u8]| {
            let (s, d) = (addr(p, 8).unwrap(), addr(p, 24).unwrap());
            wire::checksum::pseudo_sum6(s, d, 17, p.len() - 40)
        };
        let s = pseudo(&p);
        p[46..48].copy_from_slice(&s.to_be_bytes());
        let info = parse(&p);
        let new = FiveTuple {
            src: U,
            sport: 5555,
            ..info.tuple
        };
        rewrite(&mut p, &info, &new, true);
        let got = u16::from_be_bytes([p[46], p[47]]);
        let want = pseudo(&p);
        assert!(
            got == want || (got ^ want) == 0xffff && (got == 0 || want == 0),
            "{got:x} vs {want:x}"
        );
    }

    #[test]
    fn a_udp_datagram_without_checksum_keeps_none() {
        let mut p = packet(17, E, R, &udp(40000, 4789, b"tunnel"));
        p[46..48].copy_from_slice(&[0, 0]); // RFC 6935: a tunnel's zero checksum
        let info = parse(&p);
        let new = FiveTuple {
            src: U,
            sport: 61000,
            ..info.tuple
        };
        rewrite(&mut p, &info, &new, false);
        assert_eq!(p[46..48], [0, 0], "no checksum made up");
        assert_eq!(parse(&p).tuple, new);
    }

    #[test]
    fn echo_translates_its_identifier() {
        let mut icmp = vec![128, 0, 0, 0, 0x12, 0x34, 0, 1];
        icmp.extend_from_slice(b"ping");
        let mut p = packet(58, E, R, &icmp);
        let info = parse(&p);
        assert_eq!(info.icmp, IcmpKind::Echo);
        assert_eq!((info.tuple.sport, info.tuple.dport), (0x1234, 0x1234));
        let new = FiveTuple {
            src: U,
            sport: 999,
            dport: 999,
            ..info.tuple
        };
        rewrite(&mut p, &info, &new, false);
        assert!(checksum_ok(&p));
        assert_eq!(parse(&p).tuple, new);
    }

    #[test]
    fn errors_are_looked_up_by_their_quote_and_translated_with_it() {
        // The translated UDP packet U:61000 -> R:53 gets "port unreachable" back from R.
        let quoted = packet(17, U, R, &udp(61000, 53, b"query"));
        let mut icmp = vec![1, 4, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted);
        let mut p = packet(58, R, U, &icmp);
        let info = parse(&p);
        assert_eq!(info.icmp, IcmpKind::Error { inner: 48 });
        assert_eq!(info.tuple.to_string(), format!("[{R}]:53 -> [{U}]:61000"));
        let new = FiveTuple {
            dst: E,
            dport: 40000,
            ..info.tuple
        };
        rewrite(&mut p, &info, &new, false);
        assert!(checksum_ok(&p), "ICMPv6 checksum");
        assert_eq!(addr(&p, 24), Some(E), "outer destination");
        assert_eq!(addr(&p, 8), Some(R), "the reporter stays");
        assert_eq!(addr(&p, 48 + 8), Some(E), "quoted source");
        assert_eq!(be16(&p, 88), Some(40000), "quoted source port");
        assert!(checksum_ok(&p[48..]), "quoted UDP checksum");
        assert_eq!(parse(&p).tuple, new);
    }

    #[test]
    fn bad_quotes_and_other_protocols_are_refused() {
        let mut icmp = vec![1, 4, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&[0x60; 20]);
        let p = packet(58, R, U, &icmp);
        let ip = Ip6::parse(&p).unwrap();
        assert_eq!(classify(&ip, &p), Err(ParseError::Malformed));
        let p = packet(47, E, R, &[0; 8]);
        let ip = Ip6::parse(&p).unwrap();
        assert_eq!(classify(&ip, &p), Err(ParseError::Unsupported));
        // A router solicitation is not translated.
        let p = packet(58, E, R, &[133, 0, 0, 0, 0, 0, 0, 0]);
        let ip = Ip6::parse(&p).unwrap();
        assert_eq!(classify(&ip, &p), Err(ParseError::Unsupported));
    }
}
