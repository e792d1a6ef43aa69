//! IPv4 (RFC 791): a checked view of a packet, and the writer of the one header the switch makes
//! from scratch (gateway answers, VXLAN outer headers).

use std::net::Ipv4Addr;

use crate::checksum;
use crate::{be16, put16};

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

/// IP protocol numbers.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

/// An IPv4 packet over a byte buffer: version 4, a header length of at least 20 bytes that the
/// buffer holds, and (for [`Ipv4Packet::new_checked`]) a total length between the header length
/// and the buffer's. Once made, no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T> {
    buf: T,
    /// Header length in bytes.
    ihl: usize,
    /// End of the packet in `buf`: the total length, or the buffer's end for a quoted header.
    end: usize,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A whole packet: the total length field fits the buffer (trailing bytes, Ethernet padding,
    /// are outside the packet). The header checksum is not checked here
    /// ([`Self::header_checksum_ok`]).
    pub fn new_checked(buf: T) -> Option<Self> {
        let p = Self::new_quoted(buf)?;
        let total = usize::from(be16(p.buf.as_ref(), 2));
        if total < p.ihl || total > p.buf.as_ref().len() {
            return None;
        }
        Some(Ipv4Packet { end: total, ..p })
    }

    /// A packet quoted in an ICMP error: the header is whole, the rest may be cut short (the
    /// payload is what the buffer holds, up to the total length).
    pub fn new_quoted(buf: T) -> Option<Self> {
        let b = buf.as_ref();
        let v = *b.first()?;
        let ihl = usize::from(v & 0x0f) * 4;
        if v >> 4 != 4 || ihl < HEADER_LEN || b.len() < ihl {
            return None;
        }
        let end = usize::from(be16(b, 2)).clamp(ihl, b.len());
        Some(Ipv4Packet { buf, ihl, end })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Header length in bytes (20 to 60).
    pub fn header_len(&self) -> usize {
        self.ihl
    }

    /// The total length field (for a checked packet, the packet's length).
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.b(), 2))
    }

    /// Length of the packet as the view bounds it.
    pub fn len(&self) -> usize {
        self.end
    }

    /// Never true: a view holds at least a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.b()[8]
    }

    /// The protocol number of the payload ([`proto`]).
    pub fn protocol(&self) -> u8 {
        self.b()[9]
    }

    /// The header checksum field.
    pub fn header_checksum(&self) -> u16 {
        be16(self.b(), 10)
    }

    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    /// A fragment (more fragments, or a non-zero offset); an atomic fragment (DF) is not one.
    pub fn is_fragment(&self) -> bool {
        be16(self.b(), 6) & 0x3fff != 0
    }

    /// The header checksum verifies.
    pub fn header_checksum_ok(&self) -> bool {
        checksum::checksum(&self.b()[..self.ihl]) == 0
    }

    /// The header bytes, options included.
    pub fn header(&self) -> &[u8] {
        &self.b()[..self.ihl]
    }

    /// The payload: from the end of the header to the end of the packet.
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.ihl..self.end]
    }

    /// The buffer the view was made over.
    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    /// Set the source address, updating the header checksum incrementally.
    pub fn set_src(&mut self, ip: Ipv4Addr) {
        let old = self.src();
        self.set_addr_at(12, old, ip);
    }

    /// Set the destination address, updating the header checksum incrementally.
    pub fn set_dst(&mut self, ip: Ipv4Addr) {
        let old = self.dst();
        self.set_addr_at(16, old, ip);
    }

    fn set_addr_at(&mut self, at: usize, old: Ipv4Addr, new: Ipv4Addr) {
        let hc = checksum::update32(self.header_checksum(), old.into(), new.into());
        let b = self.bm();
        put16(b, 10, hc);
        b[at..at + 4].copy_from_slice(&new.octets());
    }

    /// Set the time to live, updating the header checksum incrementally.
    pub fn set_ttl(&mut self, ttl: u8) {
        let b = self.bm();
        let old = be16(b, 8);
        b[8] = ttl;
        let new = be16(b, 8);
        let hc = checksum::update16(be16(b, 10), old, new);
        put16(b, 10, hc);
    }

    /// Decrement the time to live (not below zero), updating the header checksum.
    pub fn decrement_ttl(&mut self) {
        let ttl = self.ttl().saturating_sub(1);
        self.set_ttl(ttl);
    }

    /// Compute the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        let ihl = self.ihl;
        let b = self.bm();
        put16(b, 10, 0);
        let c = checksum::checksum(&b[..ihl]);
        put16(b, 10, c);
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (ihl, end) = (self.ihl, self.end);
        &mut self.bm()[ihl..end]
    }

    /// The header and payload, mutable.
    pub fn split_mut(&mut self) -> (&mut [u8], &mut [u8]) {
        let (ihl, end) = (self.ihl, self.end);
        self.bm()[..end].split_at_mut(ihl)
    }
}

/// The source address field of what claims to be an IPv4 header at the start of `ip`, read
/// without checking the header (`None` when it is too short): port security judges every frame
/// that says it is IPv4, valid or not.
pub fn claimed_src(ip: &[u8]) -> Option<Ipv4Addr> {
    let b: &[u8; 4] = ip.get(12..16)?.try_into().ok()?;
    Some(Ipv4Addr::from(*b))
}

/// An IPv4 header without options, as the switch writes it: DF set, identification 0, TTL 64
/// unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol number ([`proto`]).
    pub protocol: u8,
    /// Length of the payload that follows.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
}

impl Ipv4Header {
    /// Write the header, with its checksum, into `out`.
    #[inline]
    pub fn write(&self, out: &mut [u8; HEADER_LEN]) {
        *out = [
            0x45,
            0,
            0,
            0,
            0,
            0,
            0x40,
            0,
            self.ttl,
            self.protocol,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        put16(out, 2, (HEADER_LEN + self.payload_len) as u16);
        out[12..16].copy_from_slice(&self.src.octets());
        out[16..20].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(&out[..]);
        put16(out, 10, c);
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use smoltcp::wire::Ipv4Packet as Oracle;

    fn header() -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        Ipv4Header {
            src: Ipv4Addr::new(172, 20, 0, 2),
            dst: Ipv4Addr::new(198, 51, 100, 7),
            protocol: proto::UDP,
            payload_len: 0,
            ttl: 64,
        }
        .write(&mut h);
        h
    }

    #[test]
    fn written_header_is_valid_for_an_independent_parser() {
        let h = header();
        let o = Oracle::new_checked(&h[..]).unwrap();
        assert!(o.verify_checksum());
        assert_eq!(o.dst_addr(), Ipv4Addr::new(198, 51, 100, 7));
        assert!(o.dont_frag());
        let p = Ipv4Packet::new_checked(&h[..]).unwrap();
        assert!(p.header_checksum_ok());
        assert_eq!((p.ttl(), p.protocol(), p.len()), (64, 17, 20));
    }

    #[test]
    fn setters_keep_the_checksum_valid() {
        let mut h = header();
        let mut p = Ipv4Packet::new_checked(&mut h[..]).unwrap();
        p.set_src(Ipv4Addr::new(203, 0, 113, 1));
        p.set_dst(Ipv4Addr::new(10, 0, 0, 9));
        p.decrement_ttl();
        assert!(p.header_checksum_ok());
        assert_eq!(p.ttl(), 63);
        assert_eq!(p.src(), Ipv4Addr::new(203, 0, 113, 1));
    }

    #[test]
    fn lying_lengths_are_refused() {
        let h = header();
        assert!(Ipv4Packet::new_checked(&h[..19]).is_none());
        let mut b = h;
        b[0] = 0x44; // IHL 4
        assert!(Ipv4Packet::new_checked(&b[..]).is_none());
        let mut b = h;
        b[0] = 0x65; // version 6
        assert!(Ipv4Packet::new_checked(&b[..]).is_none());
        let mut b = h.to_vec();
        b[3] = 40; // total 40 > 20 bytes held
        assert!(Ipv4Packet::new_checked(&b[..]).is_none());
        let q = Ipv4Packet::new_quoted(&b[..]).unwrap();
        assert_eq!(q.payload().len(), 0);
        b[3] = 10; // total below the header length
        assert!(Ipv4Packet::new_checked(&b[..]).is_none());
    }
}
