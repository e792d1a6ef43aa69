//! TCP, UDP and ICMP headers: checked views, the TCP flag bits, where each keeps its checksum
//! and how it is filled in under IPv4 and IPv6. The ICMP view reads ICMPv6's common header too
//! (same layout; its message types are in [`crate::icmpv6`]).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ipv4::proto;
use crate::{be16, be32, put16};

/// TCP flag bits (the 13th byte of the header).
pub mod tcp_flags {
    /// FIN
    pub const FIN: u8 = 0x01;
    /// SYN
    pub const SYN: u8 = 0x02;
    /// RST
    pub const RST: u8 = 0x04;
    /// PSH
    pub const PSH: u8 = 0x08;
    /// ACK
    pub const ACK: u8 = 0x10;
    /// URG
    pub const URG: u8 = 0x20;
    /// ECE
    pub const ECE: u8 = 0x40;
    /// CWR
    pub const CWR: u8 = 0x80;
}

/// Length of a TCP header without options.
pub const TCP_HEADER_LEN: usize = 20;
/// Length of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// Length of the ICMP header the switch reads (type, code, checksum, and four bytes: the echo
/// identifier and sequence, or unused before an error's quoted packet).
pub const ICMP_HEADER_LEN: usize = 8;

/// Offset of the checksum field in the L4 header of protocol `p`; `None` for another protocol.
#[inline]
pub fn csum_offset(p: u8) -> Option<usize> {
    match p {
        proto::TCP => Some(16),
        proto::UDP => Some(6),
        proto::ICMP => Some(2),
        _ => None,
    }
}

/// Fill in the checksum of the TCP or UDP segment `seg` (header and data) sent `src -> dst`:
/// zeroed, then the sum under the IPv4 pseudo-header; a UDP checksum that comes out zero is sent
/// as all ones (RFC 768). Another protocol, or a segment too short for its checksum field, is
/// left as it is.
pub fn fill_checksum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, seg: &mut [u8]) {
    let Some(at) = csum_offset(protocol).filter(|&at| seg.len() >= at + 2) else {
        return;
    };
    put16(seg, at, 0);
    let c = match crate::checksum::checksum_pseudo(src, dst, protocol, seg) {
        0 if protocol == proto::UDP => 0xffff,
        c => c,
    };
    put16(seg, at, c);
}

/// Offset of the checksum field in the upper-layer header of IPv6 next header `p` (TCP, UDP,
/// ICMPv6); `None` for another protocol.
#[inline]
pub fn csum_offset6(p: u8) -> Option<usize> {
    match p {
        crate::ipv6::next_header::TCP => Some(16),
        crate::ipv6::next_header::UDP => Some(6),
        crate::ipv6::next_header::ICMPV6 => Some(2),
        _ => None,
    }
}

/// Fill in the checksum of the TCP, UDP or ICMPv6 message `seg` (header and data) sent
/// `src -> dst` over IPv6: zeroed, then the sum under the IPv6 pseudo-header (which ICMPv6's
/// checksum covers too, unlike ICMPv4's); a UDP checksum that comes out zero is sent as all
/// ones (RFC 8200 §8.1). Another protocol, or a message too short for its checksum field, is
/// left as it is.
pub fn fill_checksum6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, seg: &mut [u8]) {
    let Some(at) = csum_offset6(proto).filter(|&at| seg.len() >= at + 2) else {
        return;
    };
    put16(seg, at, 0);
    let c = match crate::checksum::checksum_pseudo6(src, dst, proto, seg) {
        0 if proto == crate::ipv6::next_header::UDP => 0xffff,
        c => c,
    };
    put16(seg, at, c);
}

/// A TCP segment: a header whose data offset is at least 20 bytes and within the buffer.
#[derive(Debug, Clone, Copy)]
pub struct TcpHeader<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpHeader<T> {
    /// Check the buffer holds a whole TCP header (options included).
    pub fn new_checked(buf: T) -> Option<Self> {
        let b = buf.as_ref();
        let off = usize::from(*b.get(12)? >> 4) * 4;
        (off >= TCP_HEADER_LEN && b.len() >= off).then_some(TcpHeader { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Source port.
    pub fn sport(&self) -> u16 {
        be16(self.b(), 0)
    }

    /// Destination port.
    pub fn dport(&self) -> u16 {
        be16(self.b(), 2)
    }

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        be32(self.b(), 4)
    }

    /// Acknowledgement number.
    pub fn ack(&self) -> u32 {
        be32(self.b(), 8)
    }

    /// Header length (data offset) in bytes.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[12] >> 4) * 4
    }

    /// Flag bits ([`tcp_flags`]).
    pub fn flags(&self) -> u8 {
        self.b()[13]
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.b(), 16)
    }

    /// The segment's data (after the header).
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }
}

/// A TCP header the switch writes (no options; window 65535).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flag bits.
    pub flags: u8,
}

impl TcpRepr {
    /// Write the header (checksum zero) into `out`.
    pub fn write(&self, out: &mut [u8; TCP_HEADER_LEN]) {
        *out = [0; TCP_HEADER_LEN];
        put16(out, 0, self.sport);
        put16(out, 2, self.dport);
        out[4..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..12].copy_from_slice(&self.ack.to_be_bytes());
        out[12] = 5 << 4;
        out[13] = self.flags;
        put16(out, 14, 0xffff);
    }
}

/// A UDP datagram: an 8-byte header within the buffer and a length field of at least 8.
#[derive(Debug, Clone, Copy)]
pub struct UdpHeader<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpHeader<T> {
    /// Check the buffer holds a UDP header whose length field is at least its own length.
    pub fn new_checked(buf: T) -> Option<Self> {
        let b = buf.as_ref();
        (b.len() >= UDP_HEADER_LEN && usize::from(be16(b, 4)) >= UDP_HEADER_LEN)
            .then_some(UdpHeader { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Source port.
    pub fn sport(&self) -> u16 {
        be16(self.b(), 0)
    }

    /// Destination port.
    pub fn dport(&self) -> u16 {
        be16(self.b(), 2)
    }

    /// The length field (header and data).
    pub fn len_field(&self) -> usize {
        usize::from(be16(self.b(), 4))
    }

    /// The checksum field (zero: none).
    pub fn checksum(&self) -> u16 {
        be16(self.b(), 6)
    }

    /// The datagram's data: after the header, up to the length field or the buffer's end.
    pub fn payload(&self) -> &[u8] {
        let b = self.b();
        &b[UDP_HEADER_LEN..self.len_field().min(b.len())]
    }
}

/// Write a UDP header (checksum zero) for `data_len` bytes of data into `out`.
#[inline]
pub fn write_udp(out: &mut [u8; UDP_HEADER_LEN], sport: u16, dport: u16, data_len: usize) {
    put16(out, 0, sport);
    put16(out, 2, dport);
    put16(out, 4, (UDP_HEADER_LEN + data_len) as u16);
    put16(out, 6, 0);
}

/// ICMP message types the switch handles.
pub mod icmp_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// An ICMP message with at least its 8-byte header.
#[derive(Debug, Clone, Copy)]
pub struct IcmpHeader<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> IcmpHeader<T> {
    /// Check the buffer holds the 8-byte header.
    pub fn new_checked(buf: T) -> Option<Self> {
        (buf.as_ref().len() >= ICMP_HEADER_LEN).then_some(IcmpHeader { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Message type ([`icmp_type`]).
    pub fn msg_type(&self) -> u8 {
        self.b()[0]
    }

    /// Code.
    pub fn code(&self) -> u8 {
        self.b()[1]
    }

    /// Echo identifier (meaningful for echo messages).
    pub fn echo_ident(&self) -> u16 {
        be16(self.b(), 4)
    }

    /// An echo request or reply.
    pub fn is_echo(&self) -> bool {
        matches!(
            self.msg_type(),
            icmp_type::ECHO_REPLY | icmp_type::ECHO_REQUEST
        )
    }

    /// An error that quotes the packet it is about (unreachable, time exceeded, parameter
    /// problem).
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            icmp_type::DEST_UNREACHABLE | icmp_type::TIME_EXCEEDED | icmp_type::PARAMETER_PROBLEM
        )
    }

    /// The message's checksum verifies (over the whole buffer).
    pub fn checksum_ok(&self) -> bool {
        crate::checksum::checksum(self.b()) == 0
    }

    /// What follows the 8-byte header (an error's quoted packet, an echo's data).
    pub fn payload(&self) -> &[u8] {
        &self.b()[ICMP_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpHeader<T> {
    /// Set the message type (the checksum is not updated: [`Self::fill_checksum`]).
    pub fn set_msg_type(&mut self, t: u8) {
        self.buf.as_mut()[0] = t;
    }

    /// Set the echo identifier (the checksum is not updated).
    pub fn set_echo_ident(&mut self, id: u16) {
        put16(self.buf.as_mut(), 4, id);
    }

    /// Compute the checksum over the whole buffer from scratch.
    pub fn fill_checksum(&mut self) {
        let b = self.buf.as_mut();
        put16(b, 2, 0);
        let c = crate::checksum::checksum(b);
        put16(b, 2, c);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn tcp_view_checks_the_data_offset() {
        let mut h = [0u8; TCP_HEADER_LEN];
        TcpRepr {
            sport: 40000,
            dport: 53,
            seq: 7,
            ack: 9,
            flags: tcp_flags::SYN,
        }
        .write(&mut h);
        let t = TcpHeader::new_checked(&h[..]).unwrap();
        assert_eq!((t.sport(), t.dport(), t.seq(), t.ack()), (40000, 53, 7, 9));
        assert_eq!((t.flags(), t.header_len(), t.payload().len()), (2, 20, 0));
        assert!(TcpHeader::new_checked(&h[..19]).is_none());
        let mut bad = h;
        bad[12] = 4 << 4;
        assert!(TcpHeader::new_checked(&bad[..]).is_none());
        bad[12] = 6 << 4; // 24 bytes of header in 20
        assert!(TcpHeader::new_checked(&bad[..]).is_none());
    }

    #[test]
    fn filled_checksums_verify() {
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut seg = [0u8; 24];
        let h: &mut [u8; UDP_HEADER_LEN] = (&mut seg[..8]).try_into().unwrap();
        write_udp(h, 53, 5353, 16);
        fill_checksum(s, d, proto::UDP, &mut seg);
        assert_ne!(UdpHeader::new_checked(&seg[..]).unwrap().checksum(), 0);
        assert_eq!(crate::checksum::checksum_pseudo(s, d, proto::UDP, &seg), 0);
        let mut short = [0u8; 7];
        fill_checksum(s, d, proto::UDP, &mut short);
        assert_eq!(short, [0; 7]);
    }

    #[test]
    fn filled_v6_checksums_verify_under_the_v6_pseudo_header() {
        use crate::ipv6::next_header;
        let s: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let d: Ipv6Addr = "fd00::2".parse().unwrap();
        let mut udp = [0u8; 13];
        let h: &mut [u8; UDP_HEADER_LEN] = (&mut udp[..8]).try_into().unwrap();
        write_udp(h, 53, 5353, 5);
        fill_checksum6(s, d, next_header::UDP, &mut udp);
        assert_eq!(crate::checksum::checksum_pseudo6(s, d, 17, &udp), 0);
        let mut tcp = [0u8; 24];
        TcpRepr {
            sport: 1,
            dport: 2,
            seq: 3,
            ack: 4,
            flags: tcp_flags::ACK,
        }
        .write((&mut tcp[..20]).try_into().unwrap());
        fill_checksum6(s, d, next_header::TCP, &mut tcp);
        assert_eq!(crate::checksum::checksum_pseudo6(s, d, 6, &tcp), 0);
        let mut icmp = [128u8, 0, 0xde, 0xad, 0, 7, 0, 1, 0x61];
        fill_checksum6(s, d, next_header::ICMPV6, &mut icmp);
        assert_eq!(crate::checksum::checksum_pseudo6(s, d, 58, &icmp), 0);
        // The sum over the message alone (ICMPv4's rule) does not verify it.
        assert_ne!(crate::checksum::checksum(&icmp), 0);
        // A UDP sum of zero is sent as all ones: find a payload word that makes it zero.
        let mut u = [0u8; 10];
        write_udp((&mut u[..8]).try_into().unwrap(), 1, 2, 2);
        fill_checksum6(s, d, next_header::UDP, &mut u);
        let c = u16::from_be_bytes([u[6], u[7]]);
        u[6..8].copy_from_slice(&[0, 0]);
        u[8..10].copy_from_slice(&c.to_be_bytes());
        fill_checksum6(s, d, next_header::UDP, &mut u);
        assert_eq!(u[6..8], [0xff, 0xff]);
        assert_eq!(crate::checksum::checksum_pseudo6(s, d, 17, &u), 0);
        // Too short, or not a protocol with a checksum: untouched.
        let mut short = [0u8; 3];
        fill_checksum6(s, d, next_header::ICMPV6, &mut short);
        assert_eq!(short, [0; 3]);
        let mut other = [1u8; 20];
        fill_checksum6(s, d, next_header::NO_NEXT, &mut other);
        assert_eq!(other, [1; 20]);
    }

    #[test]
    fn udp_and_icmp_views_check_lengths() {
        let mut u = [0u8; 10];
        let h: &mut [u8; 8] = (&mut u[..8]).try_into().unwrap();
        write_udp(h, 5353, 53, 2);
        let v = UdpHeader::new_checked(&u[..]).unwrap();
        assert_eq!(
            (v.sport(), v.dport(), v.len_field(), v.payload().len()),
            (5353, 53, 10, 2)
        );
        assert!(UdpHeader::new_checked(&u[..7]).is_none());
        u[4..6].copy_from_slice(&[0, 7]);
        assert!(UdpHeader::new_checked(&u[..]).is_none());
        let mut m = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, 0xaa];
        let mut i = IcmpHeader::new_checked(&mut m[..]).unwrap();
        assert!(i.is_echo() && !i.is_error());
        assert_eq!(i.echo_ident(), 0x1234);
        i.fill_checksum();
        assert!(i.checksum_ok());
        assert!(IcmpHeader::new_checked(&m[..7]).is_none());
    }
}
