//! The oracles' own checksum arithmetic (shared by the targets with `mod oracle;`): a plain
//! RFC 1071 loop over 16-bit words, deliberately not the switch's vectorised
//! `nat::packet::sum16`, so a bug in the code under test cannot vouch for itself.
#![allow(dead_code)]

use std::net::Ipv4Addr;

/// Unfolded one's-complement sum of `data` as big-endian 16-bit words (odd byte padded).
pub fn sum(data: &[u8]) -> u64 {
    data.chunks(2)
        .map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum()
}

/// Fold a one's-complement accumulator to 16 bits.
pub fn fold(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The IPv4 pseudo-header sum (unfolded) for an L4 segment of `len` bytes.
pub fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u64 {
    sum(&src.octets()) + sum(&dst.octets()) + u64::from(proto) + len as u64
}

/// What a virtio-net `NEEDS_CSUM` sender leaves in the L4 checksum field: the folded
/// pseudo-header sum, not inverted.
pub fn partial(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u16 {
    fold(pseudo(src, dst, proto, len))
}

/// Whether the bytes sum to all ones (a region holding its own correct checksum).
pub fn verifies(data: &[u8]) -> bool {
    fold(sum(data)) == 0xffff
}

/// Big-endian 16-bit field at `at`.
pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Store a big-endian 16-bit field at `at`.
pub fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// IPv4 address at `at`.
pub fn addr(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Header length of the IPv4 header starting `ip`, if version, IHL and bounds are sane.
pub fn ihl(ip: &[u8]) -> Option<usize> {
    let v = *ip.first()?;
    let n = usize::from(v & 0x0f) * 4;
    (v >> 4 == 4 && n >= 20 && ip.len() >= n).then_some(n)
}

/// Whether `ip` starts with an IPv4 header whose checksum verifies.
pub fn ipv4_header_ok(ip: &[u8]) -> bool {
    ihl(ip).is_some_and(|n| verifies(&ip[..n]))
}

/// Offset of the checksum field in the L4 header of `proto` (TCP 16, UDP 6, ICMP 2).
pub fn csum_offset(proto: u8) -> Option<usize> {
    match proto {
        6 => Some(16),
        17 => Some(6),
        1 => Some(2),
        _ => None,
    }
}

/// Whether the L4 segment `seg` of `proto` between `src` and `dst` has a valid checksum: TCP and
/// UDP under the pseudo-header (a UDP zero means "no checksum"), ICMP over the message. `None`
/// when the segment is too short to hold one.
pub fn l4_ok(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, seg: &[u8]) -> Option<bool> {
    let co = csum_offset(proto)?;
    if seg.len() < co + 2 {
        return None;
    }
    Some(match proto {
        1 => verifies(seg),
        17 if seg[6..8] == [0, 0] => true,
        _ => fold(pseudo(src, dst, proto, seg.len()) + sum(seg)) == 0xffff,
    })
}

/// Complete a partial (pseudo-header) checksum the way a NIC or the kernel does: the inverted
/// sum over the segment, the field included, stored in the field.
pub fn complete(seg: &mut [u8], co: usize) {
    let c = !fold(sum(seg));
    put16(seg, co, c);
}

/// Whether `a` and `b` differ at most in the bytes `at..at + n`.
pub fn same_but(a: &[u8], b: &[u8], at: usize, n: usize) -> bool {
    a.len() == b.len() && a[..at] == b[..at] && a[at + n..] == b[at + n..]
}
