//! The one parse of a frame: Ethernet, then ARP or IPv4, then TCP, UDP or ICMP, into a small
//! `Copy` summary ([`Parsed`]) that every stage of the datapath reads instead of parsing again.
//! Lengths are checked here once; a stage that needs bytes (a checksum, a quoted packet) reads
//! them at the offsets the summary gives, through the views.

use std::net::Ipv4Addr;

use crate::arp::Arp;
use crate::ethernet::{EthFrame, EtherType};
use crate::ipv4::{self, Ipv4Packet};
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
    /// The EtherType says ARP or IPv4 but the packet does not parse.
    Malformed,
    /// Another EtherType (IPv6, a VLAN tag, ...): switched at L2 only.
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

/// The transport layer of an IPv4 packet.
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
    /// ICMP (the first 8 bytes).
    Icmp {
        /// Message type.
        msg_type: u8,
        /// Code.
        code: u8,
        /// Echo identifier (meaningful for echo messages).
        ident: u16,
    },
    /// A fragment: the transport header is not looked at.
    Fragment,
    /// TCP, UDP or ICMP whose header the packet cuts short or contradicts.
    Malformed,
    /// Another protocol.
    Other,
}

impl Ip4 {
    /// The same packet after a translation to `src:sport -> dst:dport` (ports ignored where the
    /// transport has none; for ICMP echo the identifier becomes `sport` for a request and
    /// `dport` for a reply, as the translation writes it) and one hop (TTL less one).
    #[inline]
    pub fn translated(mut self, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Ip4 {
        (self.src, self.dst) = (src, dst);
        self.ttl = self.ttl.saturating_sub(1);
        match &mut self.l4 {
            L4::Tcp {
                sport: s, dport: d, ..
            }
            | L4::Udp { sport: s, dport: d } => (*s, *d) = (sport, dport),
            L4::Icmp {
                msg_type, ident, ..
            } => {
                *ident = if *msg_type == crate::l4::icmp_type::ECHO_REPLY {
                    dport
                } else {
                    sport
                }
            }
            _ => {}
        }
        self
    }

    /// Parse the IPv4 packet at the start of `ip` (bounded by the frame); `None` when the header
    /// layout or the lengths do not check out.
    #[inline]
    pub fn parse(ip: &[u8]) -> Option<Ip4> {
        let p = Ipv4Packet::new_checked(ip)?;
        let payload = p.payload();
        let l4 = if p.is_fragment() {
            L4::Fragment
        } else {
            match p.protocol() {
                ipv4::proto::TCP => {
                    TcpHeader::new_checked(payload).map_or(L4::Malformed, |t| L4::Tcp {
                        sport: t.sport(),
                        dport: t.dport(),
                        flags: t.flags(),
                        header_len: t.header_len(),
                    })
                }
                ipv4::proto::UDP => {
                    UdpHeader::new_checked(payload).map_or(L4::Malformed, |u| L4::Udp {
                        sport: u.sport(),
                        dport: u.dport(),
                    })
                }
                ipv4::proto::ICMP => {
                    IcmpHeader::new_checked(payload).map_or(L4::Malformed, |i| L4::Icmp {
                        msg_type: i.msg_type(),
                        code: i.code(),
                        ident: i.echo_ident(),
                    })
                }
                _ => L4::Other,
            }
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

    /// Bytes of Ethernet, IPv4 and TCP headers of an unfragmented TCP/IPv4 frame (where its
    /// payload starts).
    #[inline]
    pub fn tcp4_headers_len(&self) -> Option<usize> {
        match self.ip4()? {
            Ip4 {
                header_len,
                l4: L4::Tcp { header_len: t, .. },
                ..
            } => Some(EthFrame::HEADER_LEN + header_len + t),
            _ => None,
        }
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
        g[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(Parsed::parse(&g).unwrap().l3, L3::Other);
    }
}
