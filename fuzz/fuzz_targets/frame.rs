//! A frame as a TAP hands it over: `[virtio-net header (12) | Ethernet frame]`. Runs what the
//! datapath runs on every received frame before it decides where the frame goes: the buffer's
//! header handling, the one Ethernet parse, ARP, IPv4 and IPv6 classification, checksum
//! completion of partial checksums, and the overlay's software segmentation and coalescing of
//! super-frames.
//!
//! Oracles (checked with the target's own checksum arithmetic, `oracle.rs`):
//! - the one parse of an IPv6 frame agrees with a walk of its extension headers worked out here:
//!   malformed exactly when the header, the payload length (a jumbogram included) or the chain
//!   (truncated, overrunning, hop-by-hop not first, more than 8 headers) is bad; otherwise the
//!   addresses, hop limit, lengths, upper-layer protocol and offset, fragment or not (an atomic
//!   fragment is not), and the TCP/UDP/ICMPv6 fields or why they are malformed; a
//!   neighbour-discovery message that parses came with hop limit 255 and code 0;
//! - completion of a partial checksum (virtio `NEEDS_CSUM`, as a TAP hands an IPv4 TCP/UDP
//!   frame over, and as a VTEP on veth leaves it) changes only the L4 checksum field and makes
//!   the TCP/UDP checksum verify; the IPv4 header is untouched; anything else is left alone;
//! - completion at the header's untrusted `csum_start`/`csum_offset` stores exactly the
//!   one's-complement checksum of that range and touches nothing else;
//! - segmentation: every segment has the VXLAN header, a valid IPv4 header (checksum, length,
//!   consecutive IDs), the original headers otherwise, consecutive sequence numbers, the
//!   flags split as TSO does, a valid TCP checksum, and the segments' payloads concatenated are
//!   the super-frame's payload;
//! - coalescing them back: each merged frame's payload is its segments' payloads concatenated,
//!   its IPv4 header verifies, its partial TCP checksum completes to a valid one, its GSO
//!   metadata describes it; and segments of one plain ACK/PSH super-frame merge into one frame.
#![no_main]

mod oracle;

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use oracle::{addr, be16, put16};
use overlay::gso::{segment_tcp4, tcp4, Coalesce};
use switch::frame::FrameBuf;
use switch::wire::checksum::{complete_partial_l4, finish as finish_checksum};
use switch::wire::{icmpv6, EthFrame, EtherType, Parsed, VirtioNetHdr, L3, L4 as Upper};

const ETH: usize = 14;
const VNI: u32 = 42;

/// An unfragmented IPv4 TCP/UDP frame as [`complete_partial_l4`] takes it on (worked out here,
/// not by the code under test): L4 start, end of the IP packet, checksum offset, protocol,
/// addresses, IPv4 header length.
struct L4 {
    l4: usize,
    end: usize,
    co: usize,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ihl: usize,
}

fn l4_layout(frame: &[u8]) -> Option<L4> {
    if frame.len() < ETH + 20 || frame[12..14] != [8, 0] || frame[ETH] >> 4 != 4 {
        return None;
    }
    let ip = &frame[ETH..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 {
        return None; // IHL below 5: not an IPv4 header
    }
    let total = usize::from(be16(ip, 2));
    let proto = ip[9];
    let co = match proto {
        6 => 16,
        17 => 6,
        _ => return None,
    };
    if be16(ip, 6) & 0x3fff != 0 || total > ip.len() || total < ihl + co + 2 {
        return None;
    }
    Some(L4 {
        l4: ETH + ihl,
        end: ETH + total,
        co,
        proto,
        src: addr(ip, 12),
        dst: addr(ip, 16),
        ihl,
    })
}

/// `complete_partial_l4` on `frame`: a frame whose L4 field holds exactly the pseudo-header sum
/// gets a valid checksum in that field and no other change; any other frame stays as it was.
fn check_complete_partial(frame: &mut [u8]) {
    let before = frame.to_vec();
    complete_partial_l4(frame);
    let Some(t) = l4_layout(&before) else {
        assert_eq!(frame, &before[..], "not a TCP/UDP frame, yet changed");
        return;
    };
    let at = t.l4 + t.co;
    if be16(&before, at) != oracle::partial(t.src, t.dst, t.proto, t.end - t.l4) {
        assert_eq!(frame, &before[..], "a finished checksum was changed");
        return;
    }
    assert!(
        oracle::same_but(frame, &before, at, 2),
        "completion changed more than the field"
    );
    assert_eq!(
        oracle::l4_ok(t.proto, t.src, t.dst, &frame[t.l4..t.end]),
        Some(true),
        "completed L4 checksum does not verify"
    );
    if t.proto == 17 {
        assert_ne!(
            be16(frame, at),
            0,
            "a computed UDP checksum of zero goes as all ones"
        );
    }
}

/// A `NEEDS_CSUM` frame as a TAP hands it over (pseudo-header sum in the field, `csum_start` at
/// the L4 header): both completions give a valid checksum and leave the IPv4 header alone.
fn check_needs_csum(frame: &[u8]) {
    let Some(t) = l4_layout(frame).filter(|t| t.ihl >= 20) else {
        return;
    };
    let mut f = frame[..t.end].to_vec();
    put16(
        &mut f,
        t.l4 + t.co,
        oracle::partial(t.src, t.dst, t.proto, t.end - t.l4),
    );
    let ip_ok = oracle::ipv4_header_ok(&f[ETH..]);
    // The encapsulation path (and a TAP write with NEEDS_CSUM): virtio's csum_start/offset.
    let mut g = f.clone();
    finish_checksum(&mut g, t.l4, t.co);
    assert!(
        oracle::same_but(&g, &f, t.l4 + t.co, 2),
        "finish_checksum changed more than the field"
    );
    assert_eq!(
        oracle::l4_ok(t.proto, t.src, t.dst, &g[t.l4..]),
        Some(true),
        "NEEDS_CSUM completed by finish_checksum does not verify"
    );
    if t.proto == 17 {
        assert_ne!(
            be16(&g, t.l4 + 6),
            0,
            "a computed UDP checksum of zero goes as all ones"
        );
    }
    // The overlay receive path (a VTEP on veth leaves the checksum partial).
    complete_partial_l4(&mut f);
    assert!(oracle::same_but(&f, &g, t.l4 + t.co, 2));
    assert_eq!(
        oracle::l4_ok(t.proto, t.src, t.dst, &f[t.l4..]),
        Some(true),
        "NEEDS_CSUM completed by complete_partial_l4 does not verify"
    );
    assert_eq!(
        oracle::ipv4_header_ok(&f[ETH..]),
        ip_ok,
        "IPv4 header checksum changed"
    );
}

/// `finish_checksum` at an untrusted `start`/`offset`: in range, only the field changes and
/// holds the one's-complement checksum of `start..` (the field's old value taken as the
/// pseudo-header sum); out of range, nothing changes.
fn check_finish(frame: &mut [u8], start: usize, off: usize) {
    let before = frame.to_vec();
    finish_checksum(frame, start, off);
    if start >= before.len() || start + off + 2 > before.len() {
        assert_eq!(frame, &before[..], "out-of-range completion wrote");
        return;
    }
    let at = start + off;
    assert!(
        oracle::same_but(frame, &before, at, 2),
        "completion wrote outside its field"
    );
    if off % 2 == 0 {
        let mut zeroed = before[start..].to_vec();
        put16(&mut zeroed, off, 0);
        let s = oracle::sum(&zeroed) + u64::from(be16(&before, at)) + u64::from(be16(frame, at));
        assert_eq!(oracle::fold(s), 0xffff, "completed checksum is wrong");
    }
}

/// An Ethernet/IPv4/TCP frame's layout, worked out independently of `overlay::gso::tcp4`: the
/// IPv4 total length covers the headers and fits the frame.
struct Tcp {
    ihl: usize,
    hdr: usize,
}

fn tcp_layout(frame: &[u8]) -> Option<Tcp> {
    if frame.len() < ETH + 40 || frame[12..14] != [8, 0] || frame[ETH] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(frame[ETH] & 0x0f) * 4;
    if ihl < 20 || frame[ETH + 9] != 6 || be16(frame, ETH + 6) & 0x3fff != 0 {
        return None;
    }
    let total = usize::from(be16(frame, ETH + 2));
    if total > frame.len() - ETH {
        return None;
    }
    let thl = usize::from(*frame.get(ETH + ihl + 12)? >> 4) * 4;
    let hdr = ETH + ihl + thl;
    (thl >= 20 && hdr <= ETH + total).then_some(Tcp { ihl, hdr })
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;
const ECE: u8 = 0x40;
const CWR: u8 = 0x80;

/// Check the segments `segment_tcp4` wrote for `frame` and return each one's inner frame.
fn check_segments<'a>(
    frame: &[u8],
    t: &Tcp,
    mss: usize,
    out: &'a [u8],
    s: &overlay::gso::Segments,
) -> Vec<&'a [u8]> {
    let (ip, tcp) = (ETH, ETH + t.ihl);
    let payload = &frame[t.hdr..];
    let count = payload.len().div_ceil(mss).max(1);
    assert_eq!(s.count, count, "segment count");
    let (src, dst) = (addr(frame, ip + 12), addr(frame, ip + 16));
    let (id0, seq0, flags0) = (
        be16(frame, ip + 4),
        u32::from_be_bytes(frame[tcp + 4..tcp + 8].try_into().unwrap()),
        frame[tcp + 13],
    );
    let mut inners = Vec::with_capacity(count);
    let mut at = 0;
    let mut joined = Vec::with_capacity(payload.len());
    for i in 0..count {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let seg_len = switch::wire::vxlan::HEADER_LEN + t.hdr + chunk.len();
        assert!(
            at + seg_len <= s.len,
            "segment {i} runs past what was written"
        );
        assert!(
            i + 1 == count || seg_len == s.size,
            "segment {i} is not the GSO size"
        );
        let seg = &out[at..at + seg_len];
        assert_eq!(
            seg[..8],
            [0x08, 0, 0, 0, 0, 0, VNI as u8, 0],
            "VXLAN header of {i}"
        );
        let inner = &seg[switch::wire::vxlan::HEADER_LEN..];
        let ih = &inner[ip..];
        assert!(
            oracle::ipv4_header_ok(ih),
            "IPv4 header checksum of segment {i}"
        );
        assert_eq!(
            usize::from(be16(ih, 2)),
            inner.len() - ETH,
            "IPv4 length of {i}"
        );
        assert_eq!(be16(ih, 4), id0.wrapping_add(i as u16), "IPv4 ID of {i}");
        let seq = u32::from_be_bytes(inner[tcp + 4..tcp + 8].try_into().unwrap());
        assert_eq!(
            seq,
            seq0.wrapping_add((i * mss) as u32),
            "sequence number of {i}"
        );
        let mut want = flags0;
        if i + 1 < count {
            want &= !(FIN | PSH);
        }
        if i > 0 {
            want &= !CWR;
        }
        assert_eq!(inner[tcp + 13], want, "TCP flags of {i}");
        // Everything else is the super-frame's: Ethernet, IP version/TOS, flags/TTL/proto,
        // addresses and options, ports, ack, data offset, window, urgent pointer, options.
        same_bytes(
            &inner,
            frame,
            [
                0..ip + 2,
                ip + 6..ip + 10,
                ip + 12..tcp + 4,
                tcp + 8..tcp + 13,
                tcp + 14..tcp + 16,
                tcp + 18..t.hdr,
            ],
            &format!("segment {i}"),
        );
        assert_eq!(
            oracle::l4_ok(6, src, dst, &inner[tcp..]),
            Some(true),
            "TCP checksum of {i}"
        );
        assert_eq!(&inner[t.hdr..], chunk, "payload of {i}");
        joined.extend_from_slice(&inner[t.hdr..]);
        inners.push(inner);
        at += seg_len;
    }
    assert_eq!(at, s.len, "bytes written");
    assert_eq!(joined, payload, "segments' payloads concatenated");
    inners
}

/// `a` and `b` hold the same bytes in each of `ranges` (the header fields that must be copied).
fn same_bytes<const N: usize>(a: &[u8], b: &[u8], ranges: [std::ops::Range<usize>; N], what: &str) {
    for r in ranges {
        assert_eq!(
            a[r.clone()],
            b[r.clone()],
            "header bytes {r:?} of the {what}"
        );
    }
}

/// A coalesced frame `acc` (finished, with header `v`) of the segments whose payloads are
/// `parts`, the first with headers `first`.
fn check_coalesced(acc: &[u8], v: &VirtioNetHdr, t: &Tcp, first: &[u8], parts: &[&[u8]]) {
    let (ip, tcp) = (ETH, ETH + t.ihl);
    let joined: Vec<u8> = parts.concat();
    assert_eq!(
        &acc[t.hdr..],
        &joined[..],
        "coalesced payload is not its segments' payloads"
    );
    assert!(
        oracle::ipv4_header_ok(&acc[ip..]),
        "coalesced IPv4 header checksum"
    );
    assert_eq!(
        usize::from(be16(acc, ip + 2)),
        acc.len() - ETH,
        "coalesced IPv4 length"
    );
    assert_eq!(
        acc[tcp + 13] & !PSH,
        first[tcp + 13] & !PSH,
        "coalesced TCP flags"
    );
    same_bytes(
        acc,
        first,
        [
            0..ip + 2,
            ip + 4..ip + 10,
            ip + 12..tcp + 13,
            tcp + 14..tcp + 16,
            tcp + 18..t.hdr,
        ],
        "coalesced frame",
    );
    assert_eq!(
        (
            v.flags,
            v.gso_type,
            usize::from(v.hdr_len),
            usize::from(v.gso_size)
        ),
        (
            VirtioNetHdr::F_NEEDS_CSUM,
            overlay::gso::GSO_TCPV4,
            t.hdr,
            parts[0].len()
        ),
        "coalesced frame's virtio-net header"
    );
    assert_eq!(
        (usize::from(v.csum_start), v.csum_offset),
        (tcp, 16),
        "csum_start/offset"
    );
    // The partial checksum, completed as the receiving kernel does, verifies.
    let (src, dst) = (addr(acc, ip + 12), addr(acc, ip + 16));
    let mut seg = acc[tcp..].to_vec();
    assert_eq!(
        be16(&seg, 16),
        oracle::partial(src, dst, 6, seg.len()),
        "coalesced frame's partial checksum is not the pseudo-header sum"
    );
    oracle::complete(&mut seg, 16);
    assert_eq!(
        oracle::l4_ok(6, src, dst, &seg),
        Some(true),
        "completed coalesced checksum"
    );
}

/// An IPv6 packet as the one parse must see it, worked out here: `None` for one it must call
/// malformed, else (upper-layer protocol, its offset, fragment or not, packet length).
fn ipv6_layout(ip: &[u8]) -> Option<(u8, usize, bool, usize)> {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return None;
    }
    let total = 40 + usize::from(be16(ip, 4));
    if total > ip.len() || (total == 40 && ip[6] == 0) {
        return None; // cut short, or a jumbogram
    }
    let (mut nh, mut at, mut fragment) = (ip[6], 40, false);
    for n in 0.. {
        let (fixed, len) = match nh {
            0 | 43 | 60 => (2, ip.get(at + 1).map(|&l| (usize::from(l) + 1) * 8)),
            51 => (2, ip.get(at + 1).map(|&l| (usize::from(l) + 2) * 4)),
            44 => (8, Some(8)),
            _ => return Some((nh, at, fragment, total)),
        };
        if (nh == 0 && n > 0) || n == 8 || at + fixed > total {
            return None;
        }
        let len = len?;
        if at + len > total {
            return None;
        }
        if nh == 44 {
            let (offset, more) = (be16(ip, at + 2) >> 3, ip[at + 3] & 1 == 1);
            if offset > 0 {
                return Some((ip[at], at + 8, true, total));
            }
            fragment |= more;
        }
        nh = ip[at];
        at += len;
    }
    None
}

/// The one parse of an IPv6 frame against [`ipv6_layout`].
fn check_ipv6(frame: &[u8]) {
    let p = Parsed::parse(frame).expect("an Ethernet header");
    let ip = &frame[ETH..];
    let (proto, off, fragment, total) = match (ipv6_layout(ip), p.l3) {
        (None, L3::Malformed) => return,
        (Some(l), L3::Ipv6(v)) => {
            assert_eq!(
                (v.proto, v.header_len, v.total_len),
                (l.0, l.1, l.3),
                "IPv6 upper layer, its offset, packet length"
            );
            assert_eq!(v.src.octets(), ip[8..24], "IPv6 source");
            assert_eq!(v.dst.octets(), ip[24..40], "IPv6 destination");
            assert_eq!(v.hop_limit, ip[7], "hop limit");
            assert_eq!(p.ip6(), Some(&v));
            l
        }
        (want, got) => panic!("IPv6 classification: worked out {want:?}, parsed {got:?}"),
    };
    let v = p.ip6().expect("IPv6");
    let seg = &ip[off..total];
    let icmp = 58;
    match v.l4 {
        Upper::Fragment => assert!(fragment, "not a fragment, parsed as one"),
        _ if fragment => panic!("a fragment parsed as {:?}", v.l4),
        Upper::Tcp {
            sport,
            dport,
            flags,
            header_len,
        } => {
            assert_eq!(proto, 6);
            assert!(header_len >= 20 && seg.len() >= header_len, "TCP header");
            assert_eq!(
                (sport, dport, flags, header_len),
                (
                    be16(seg, 0),
                    be16(seg, 2),
                    seg[13],
                    usize::from(seg[12] >> 4) * 4
                )
            );
            assert_eq!(p.tcp_headers_len(), Some(ETH + off + header_len));
        }
        Upper::Udp { sport, dport } => {
            assert_eq!(proto, 17);
            assert!(seg.len() >= 8 && be16(seg, 4) >= 8, "UDP header");
            assert_eq!((sport, dport), (be16(seg, 0), be16(seg, 2)));
        }
        Upper::Icmp {
            msg_type,
            code,
            ident,
        } => {
            assert_eq!(proto, icmp);
            assert!(seg.len() >= 8, "ICMPv6 header");
            assert_eq!((msg_type, code, ident), (seg[0], seg[1], be16(seg, 4)));
        }
        Upper::Malformed => {
            let ok = match proto {
                6 => {
                    seg.len() >= 20
                        && seg[12] >> 4 >= 5
                        && seg.len() >= usize::from(seg[12] >> 4) * 4
                }
                17 => seg.len() >= 8 && be16(seg, 4) >= 8,
                58 => seg.len() >= 8,
                _ => panic!("protocol {proto} parsed as a malformed TCP/UDP/ICMPv6 header"),
            };
            assert!(!ok, "a whole {proto} header parsed as malformed");
        }
        Upper::Other => assert!(
            ![6, 17, icmp].contains(&proto),
            "TCP/UDP/ICMPv6 parsed as another protocol"
        ),
    }
    if proto == icmp && !fragment {
        if let Ok(nd) = icmpv6::parse_nd(seg, ip[7]) {
            assert!(
                ip[7] == 255 && seg[1] == 0,
                "ND accepted off-link or with a code"
            );
            assert!((133..=137).contains(&seg[0]), "not an ND type: {nd:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut buf = FrameBuf::new();
    let area = buf.rx_area(VirtioNetHdr::LEN);
    let n = data.len().min(area.len());
    area[..n].copy_from_slice(&data[..n]);
    if !buf.received(n, VirtioNetHdr::LEN) {
        assert!(n < VirtioNetHdr::LEN);
        return;
    }
    let vnet = VirtioNetHdr::read(data).unwrap_or_default();
    assert_eq!(buf.vnet, vnet, "the buffer's virtio-net header");
    assert_eq!(
        buf.data(),
        &data[VirtioNetHdr::LEN..n],
        "the buffer's frame"
    );
    let Some(eth) = EthFrame::parse(buf.data()) else {
        return;
    };
    let _ = (eth.src.is_valid_unicast(), eth.dst.is_broadcast());
    let _ = switch::wire::arp::Arp::parse(buf.data());
    if eth.ethertype == EtherType::IPV6 {
        check_ipv6(buf.data());
    }
    let frame = buf.data_mut();
    check_needs_csum(frame);
    check_complete_partial(frame);
    check_finish(
        frame,
        usize::from(vnet.csum_start),
        usize::from(vnet.csum_offset),
    );
    if let Some(ip) = frame.get(EthFrame::HEADER_LEN..) {
        if let Ok(info) = nat::packet::parse(ip) {
            assert!(info.l4 <= ip.len());
        }
    }
    // Software segmentation as for a tunnel, with the (untrusted) GSO size from the header.
    let mut out = vec![0u8; 192 * 1024];
    let mss = usize::from(vnet.gso_size).clamp(1, 9000);
    let layout = tcp_layout(frame);
    // (The oracle below knows IPv4 segments; IPv6 ones are checked by overlay's unit tests.)
    let segmented = tcp4(frame)
        .filter(|l| !l.v6)
        .and_then(|l| segment_tcp4(frame, l, mss, VNI, &mut out));
    let Some(s) = segmented else {
        let need = layout.as_ref().map(|t| {
            let count = (frame.len() - t.hdr).div_ceil(mss).max(1);
            count * (switch::wire::vxlan::HEADER_LEN + t.hdr) + frame.len() - t.hdr
        });
        assert!(
            need.is_none_or(|need| need > out.len()),
            "a TCP frame was not segmented"
        );
        return;
    };
    let t = layout.expect("segmented a frame that is not IPv4/TCP");
    let inners = check_segments(frame, &t, mss, &out, &s);
    // Coalesce the segments back, as the receiving VTEP does.
    let mut co = Coalesce::default();
    let mut acc: Vec<u8> = Vec::new();
    let mut parts: Vec<&[u8]> = Vec::new();
    let mut merged = Vec::new(); // segments per finished frame
    let mut finish =
        |co: &mut Coalesce, acc: &mut Vec<u8>, parts: &mut Vec<&[u8]>, first: &[u8]| {
            if co.segs > 1 {
                let n = co.segs;
                let v = co
                    .finish(acc)
                    .expect("a frame of several segments is finished");
                check_coalesced(acc, &v, &t, first, parts);
                merged.push(n);
            }
            parts.clear();
        };
    let mut first: &[u8] = &[];
    for &seg in &inners {
        if co.segs > 0 && co.accepts(&acc, acc.len(), seg) {
            let flags = co.flags_of(seg);
            assert_eq!(co.hdr_len, t.hdr);
            acc.extend_from_slice(&seg[co.hdr_len..]);
            co.appended(seg.len() - co.hdr_len, flags);
            parts.push(&seg[t.hdr..]);
            continue;
        }
        finish(&mut co, &mut acc, &mut parts, first);
        acc.clear();
        acc.extend_from_slice(seg);
        first = seg;
        if switch::wire::Parsed::parse(&acc).is_some_and(|p| co.start(&p, &acc)) {
            parts.push(&seg[t.hdr..]);
        }
    }
    finish(&mut co, &mut acc, &mut parts, first);
    // Segments of a plain ACK (optionally PSH) super-frame merge back into one frame (all of
    // them; a FIN stays on the last, which then arrives on its own).
    let flags0 = frame[ETH + t.ihl + 13];
    let plain = flags0 & ACK != 0 && flags0 & (SYN | RST | URG | ECE | CWR) == 0;
    let want = s.count - usize::from(flags0 & FIN != 0);
    if plain && want >= 2 {
        assert_eq!(
            merged,
            [want],
            "segments of one super-frame did not coalesce back"
        );
    }
});
