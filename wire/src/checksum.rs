//! The Internet checksum (RFC 1071) and everything built on it: the IPv4 and IPv6
//! pseudo-headers, incremental updates for rewritten fields (RFC 1624), and completing a partial
//! checksum left by a sender that offloaded it (virtio `NEEDS_CSUM`, a kernel VTEP). The one copy
//! in the project.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ethernet::{EthFrame, EtherType};
use crate::ipv4::{self, Ipv4Packet};
use crate::l4;

/// One's-complement sum of `data` as big-endian 16-bit words (an odd last byte is padded with
/// zero), folded to 16 bits and not inverted. It adds native-order 32-bit words into a 64-bit
/// accumulator (a loop the compiler vectorises) and swaps the folded sum to network order at the
/// end, which RFC 1071 shows gives the same result: this runs over every segment the overlay
/// cuts.
// Not inlined: the loop vectorises best as a function of its own (inlined into the segment
// loop of software TSO it ran 30-40% slower: `cargo bench -p vswitch-perf -- gso`).
#[inline(never)]
pub fn sum16(data: &[u8]) -> u16 {
    sum_words(data)
}

#[inline(always)]
fn sum_words(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
    }
    let mut last = [0u8; 4];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    acc += u64::from(u32::from_ne_bytes(last));
    u16::from_be(fold(acc))
}

/// Fold a 64-bit one's-complement accumulator to 16 bits.
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Full one's-complement checksum of `data`. A header (up to 64 bytes) is summed inline where
/// it is checked (the router checks every IPv4 header it translates).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    if data.len() <= 64 {
        !sum_words(data)
    } else {
        !sum16(data)
    }
}

/// The IPv4 pseudo-header sum for a TCP/UDP segment of `len` bytes (folded, not inverted): what
/// the checksum field holds while the checksum is partial (virtio `NEEDS_CSUM`).
#[inline]
pub fn pseudo_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u16 {
    let (s, d) = (u32::from(src), u32::from(dst));
    fold(
        u64::from(s >> 16)
            + u64::from(s & 0xffff)
            + u64::from(d >> 16)
            + u64::from(d & 0xffff)
            + u64::from(proto)
            + len as u64,
    )
}

/// Checksum of `data` under the IPv4 pseudo-header for `proto` (TCP/UDP checksums).
#[inline]
pub fn checksum_pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, data: &[u8]) -> u16 {
    !fold(u64::from(pseudo_sum(src, dst, proto, data.len())) + u64::from(sum16(data)))
}

/// The IPv6 pseudo-header sum (RFC 8200 §8.1: source, destination, a 32-bit upper-layer length,
/// three zero bytes and the next header) for an upper-layer message of `len` bytes (folded, not
/// inverted): what a partial checksum field holds.
#[inline]
pub fn pseudo_sum6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: usize) -> u16 {
    let words = |a: Ipv6Addr| a.segments().iter().map(|&w| u64::from(w)).sum::<u64>();
    fold(words(src) + words(dst) + u64::from(proto) + (len as u64 & 0xffff_ffff))
}

/// Checksum of `data` under the IPv6 pseudo-header for `proto` (TCP, UDP and ICMPv6 checksums).
#[inline]
pub fn checksum_pseudo6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, data: &[u8]) -> u16 {
    !fold(u64::from(pseudo_sum6(src, dst, proto, data.len())) + u64::from(sum16(data)))
}

/// RFC 1624 incremental update of a 16-bit one's-complement checksum: `HC' = ~(~HC + ~m + m')`
/// for a 16-bit field changing from `old` to `new`.
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// [`update16`] for a 32-bit field (an IPv4 address), as two 16-bit words.
#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let hc = update16(hc, (old >> 16) as u16, (new >> 16) as u16);
    update16(hc, old as u16, new as u16)
}

/// Complete a partial checksum (virtio `NEEDS_CSUM`): the one's-complement sum from `start` to
/// the end, stored at `start + offset` (the field holds the pseudo-header sum already). A result
/// of zero is stored as all ones, as the kernel does: for UDP zero would mean "no checksum"
/// (RFC 768), for TCP the two are the same (found by the frame fuzz target's oracle). Offsets
/// outside the frame leave it unchanged.
pub fn finish(frame: &mut [u8], start: usize, offset: usize) {
    if start >= frame.len() || start + offset + 2 > frame.len() {
        return;
    }
    let c = match checksum(&frame[start..]) {
        0 => 0xffff,
        c => c,
    };
    frame[start + offset..start + offset + 2].copy_from_slice(&c.to_be_bytes());
}

/// A VTEP on a veth underlay (the Linux kernel's, say) leaves the inner TCP/UDP checksum of an
/// Ethernet `frame` partial: the field holds only the pseudo-header sum, which a UDP socket hands
/// over as it is. If the field is exactly that sum, complete the checksum; otherwise (a finished
/// checksum, right or wrong) leave it for the endpoint to verify. The test costs no pass over
/// the data. IPv4 and IPv6 (TCP and UDP after any extension headers; not fragments).
pub fn complete_partial_l4(frame: &mut [u8]) {
    match EthFrame::parse(frame).map(|e| e.ethertype) {
        Some(EtherType::IPV4) => {}
        Some(EtherType::IPV6) => return complete_partial_l4_v6(frame),
        _ => return,
    }
    let eth = EthFrame::HEADER_LEN;
    let Some(ip) = Ipv4Packet::new_checked(&frame[eth..]) else {
        return;
    };
    let (proto, ihl, total) = (ip.protocol(), ip.header_len(), ip.total_len());
    let Some(co) = l4::csum_offset(proto).filter(|_| proto != ipv4::proto::ICMP) else {
        return;
    };
    if ip.is_fragment() || total < ihl + co + 2 {
        return;
    }
    let sum = pseudo_sum(ip.src(), ip.dst(), proto, total - ihl);
    let at = eth + ihl + co;
    if crate::be16(frame, at) != sum {
        return;
    }
    finish(&mut frame[..eth + total], eth + ihl, co);
}

/// [`complete_partial_l4`] for an IPv6 frame.
fn complete_partial_l4_v6(frame: &mut [u8]) {
    let eth = EthFrame::HEADER_LEN;
    let Some(ip) = crate::ipv6::Ipv6Packet::new_checked(&frame[eth..]) else {
        return;
    };
    let (src, dst, total) = (ip.src(), ip.dst(), ip.len());
    let Ok(up) = crate::ipv6::upper_layer(&frame[eth..eth + total]) else {
        return;
    };
    let proto = up.proto;
    if up.fragment
        || !(proto == crate::ipv6::next_header::TCP || proto == crate::ipv6::next_header::UDP)
    {
        return;
    }
    let Some(co) = l4::csum_offset(proto) else {
        return;
    };
    if total < up.offset + co + 2 {
        return;
    }
    let sum = pseudo_sum6(src, dst, proto, total - up.offset);
    let at = eth + up.offset + co;
    if crate::be16(frame, at) != sum {
        return;
    }
    finish(&mut frame[..eth + total], eth + up.offset, co);
}

#[cfg(test)]
mod test {
    use super::*;

    /// The straightforward 16-bit loop the fast sum must agree with.
    fn slow(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for c in data.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn full(words: &[u16]) -> u16 {
        let mut s: u32 = words.iter().map(|&w| u32::from(w)).sum();
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn fast_sum_matches_the_simple_loop_for_every_length_and_alignment() {
        let data: Vec<u8> = (0..2000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..9 {
            for len in (0..300).chain([1499, 1500, 1991]) {
                let d = &data[start..(start + len).min(data.len())];
                assert_eq!(checksum(d), slow(d), "start {start} len {len}");
            }
        }
        assert_eq!(checksum(&[0xff; 65_536]), slow(&[0xff; 65_536]));
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut words = [
            0x4500u16, 0x0073, 0x0000, 0x4000, 0x4011, 0xc0a8, 0x0001, 0xc0a8, 0x00c7,
        ];
        let hc = full(&words);
        let old = words[6];
        words[6] = 0x1234;
        assert_eq!(update16(hc, old, 0x1234), full(&words));
        let hc = full(&words);
        let old = (u32::from(words[7]) << 16) | u32::from(words[8]);
        words[7] = 0x0a00;
        words[8] = 0x0002;
        assert_eq!(update32(hc, old, 0x0a00_0002), full(&words));
    }

    #[test]
    fn incremental_update_edge_values() {
        // All-ones and zero words (the +0/-0 cases RFC 1624 is about).
        for (a, b) in [
            (0u16, 0xffffu16),
            (0xffff, 0),
            (0x8000, 0x7fff),
            (1, 0xfffe),
        ] {
            let mut w = [0x1234u16, a, 0xabcd];
            let hc = full(&w);
            w[1] = b;
            let inc = update16(hc, a, b);
            let f = full(&w);
            assert!(
                inc == f || (inc == 0xffff && f == 0) || (inc == 0 && f == 0xffff),
                "{a:x}->{b:x}: {inc:x} vs {f:x}"
            );
        }
    }

    #[test]
    fn ipv6_pseudo_header_is_the_rfc_8200_layout() {
        let src: Ipv6Addr = "fe80::1:2:3:4".parse().unwrap();
        let dst: Ipv6Addr = "ff02::1:ff00:abcd".parse().unwrap();
        let data = [0x87u8, 0, 0, 0, 1, 2, 3, 4, 5];
        for len in [0usize, 9, 0xffff, 0x1_0000, 0x12_3456] {
            // The pseudo-header written out byte by byte, summed by the simple loop.
            let mut ph = Vec::new();
            ph.extend_from_slice(&src.octets());
            ph.extend_from_slice(&dst.octets());
            ph.extend_from_slice(&(len as u32).to_be_bytes());
            ph.extend_from_slice(&[0, 0, 0, 58]);
            assert_eq!(pseudo_sum6(src, dst, 58, len), !slow(&ph), "{len}");
        }
        let mut all = Vec::new();
        all.extend_from_slice(&src.octets());
        all.extend_from_slice(&dst.octets());
        all.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 58]);
        all.extend_from_slice(&data);
        assert_eq!(checksum_pseudo6(src, dst, 58, &data), slow(&all));
    }

    #[test]
    fn finish_stores_all_ones_for_zero_and_ignores_bad_offsets() {
        let mut f = [0u8; 8];
        finish(&mut f, 0, 2);
        assert_eq!(f[2..4], [0xff, 0xff]);
        let before = f;
        finish(&mut f, 7, 2);
        finish(&mut f, 8, 0);
        assert_eq!(f, before);
    }

    #[test]
    fn partial_ipv6_checksums_are_completed_behind_extension_headers() {
        let (src, dst): (Ipv6Addr, Ipv6Addr) =
            ("fd00::2".parse().unwrap(), "fd00::3".parse().unwrap());
        for ext in [false, true] {
            let data = b"partial udp over ipv6";
            let udp_len = 8 + data.len();
            let mut f = vec![0u8; 14];
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            let plen = udp_len + if ext { 8 } else { 0 };
            let mut h = [0u8; 40];
            crate::ipv6::Ipv6Header {
                src,
                dst,
                next_header: if ext { 60 } else { 17 },
                payload_len: plen,
                hop_limit: 64,
            }
            .write(&mut h);
            f.extend_from_slice(&h);
            if ext {
                f.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
            }
            let at = f.len();
            f.extend_from_slice(&5000u16.to_be_bytes());
            f.extend_from_slice(&53u16.to_be_bytes());
            f.extend_from_slice(&(udp_len as u16).to_be_bytes());
            f.extend_from_slice(&pseudo_sum6(src, dst, 17, udp_len).to_be_bytes());
            f.extend_from_slice(data);
            complete_partial_l4(&mut f);
            assert_eq!(checksum_pseudo6(src, dst, 17, &f[at..]), 0, "ext {ext}");
            // A finished checksum (right or wrong) is left alone.
            let before = f.clone();
            complete_partial_l4(&mut f);
            assert_eq!(f, before);
        }
    }
}
