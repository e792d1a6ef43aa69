//! Tunnel offloads in software, so TCP super-frames cross the overlay whole.
//!
//! Send: [`segment_tcp4`] cuts a TAP super-frame (TCP over IPv4 or IPv6, up to 64 KiB, with its
//! virtio-net GSO metadata) into MSS-sized inner segments written back to back into one buffer,
//! each behind its VXLAN header, with IP lengths, IDs (IPv4), sequence numbers, flags and
//! checksums fixed. The
//! buffer goes out with one UDP GSO `sendmsg` (`UDP_SEGMENT`): the kernel writes the outer
//! IPv4/UDP headers of every datagram.
//!
//! Receive: the VTEP socket has `UDP_GRO`, so one read returns many datagrams. [`Coalesce`]
//! merges consecutive in-order TCP segments of one flow (identical headers but the sequence
//! number, as Linux GRO requires) back into one super-frame, which goes to the TAP with GSO
//! metadata and a partial checksum (IPv4; IPv6 segments go to the TAP one by one). Pure code: no
//! sockets, unit-tested below.

use std::net::{Ipv4Addr, Ipv6Addr};

use wire::l4::tcp_flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};
use wire::{EthFrame, Parsed, VirtioNetHdr, L4};

const ETH: usize = EthFrame::HEADER_LEN;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = VirtioNetHdr::GSO_TCPV4;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = VirtioNetHdr::GSO_TCPV6;
/// Largest IPv4 total length: a coalesced frame never grows past it.
const IP_MAX: usize = 65_535;

/// Layout of an Ethernet/IPv4/TCP or Ethernet/IPv6/TCP frame (the name is older than IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp4 {
    /// Bytes of IP header (IPv6: with its extension headers).
    pub ihl: usize,
    /// Bytes of Ethernet + IPv4 + TCP headers (where the payload starts).
    pub hdr_len: usize,
    /// Payload bytes (from the frame length, not the IP total length).
    pub payload: usize,
    /// IPv6 (no header checksum, no ID; a payload length instead of a total length).
    pub v6: bool,
}

impl Tcp4 {
    /// The layout of a frame of `len` bytes parsed as `p`, if it is an unfragmented IPv4/TCP
    /// frame whose headers fit.
    pub fn of(p: &Parsed, len: usize) -> Option<Tcp4> {
        let hdr_len = p.tcp_headers_len()?;
        let (ihl, v6) = match (p.ip4(), p.ip6()) {
            (Some(ip), _) => (ip.header_len, false),
            (None, Some(ip)) => (ip.header_len, true),
            _ => return None,
        };
        Some(Tcp4 {
            ihl,
            hdr_len,
            payload: len.checked_sub(hdr_len)?,
            v6,
        })
    }
}

/// The layout of `frame` if it is an unfragmented IPv4/TCP frame whose headers fit (parsing it:
/// for tests and fuzzing; the datapath has the parse already, [`Tcp4::of`]).
pub fn tcp4(frame: &[u8]) -> Option<Tcp4> {
    Tcp4::of(&Parsed::parse(frame)?, frame.len())
}

/// What [`segment_tcp4`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    /// Bytes per datagram (VXLAN header + inner frame); the last may be shorter.
    pub size: usize,
    /// Number of datagrams.
    pub count: usize,
    /// Bytes written.
    pub len: usize,
}

/// Cut the TCP super-frame `frame` (laid out as `t`) into segments of at most `mss` payload
/// bytes, each written to `out` as `[VXLAN header for vni | Ethernet | IPv4 | TCP | payload]`,
/// back to back, with complete IPv4 and TCP checksums. `None` when `mss` is 0, or `out` is too
/// small.
pub fn segment_tcp4(
    frame: &[u8],
    t: Tcp4,
    mss: usize,
    vni: u32,
    out: &mut [u8],
) -> Option<Segments> {
    if mss == 0 || frame.len() != t.hdr_len + t.payload {
        return None;
    }
    let count = t.payload.div_ceil(mss).max(1);
    let size = wire::vxlan::HEADER_LEN + t.hdr_len + mss.min(t.payload);
    let len = count * (wire::vxlan::HEADER_LEN + t.hdr_len) + t.payload;
    if out.len() < len {
        return None;
    }
    let (hdr, payload) = frame.split_at(t.hdr_len);
    let ip = ETH;
    let tcp = ETH + t.ihl;
    let id0 = u16::from_be_bytes([hdr[ip + 4], hdr[ip + 5]]);
    let seq0 = u32::from_be_bytes([hdr[tcp + 4], hdr[tcp + 5], hdr[tcp + 6], hdr[tcp + 7]]);
    let flags0 = hdr[tcp + 13];
    let addr6 = |at: usize| -> Ipv6Addr {
        let b: [u8; 16] = hdr[at..at + 16]
            .try_into()
            .expect("an IPv6 header's address");
        Ipv6Addr::from(b)
    };
    let (src6, dst6) = if t.v6 {
        (addr6(ip + 8), addr6(ip + 24))
    } else {
        (Ipv6Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED)
    };
    let src = Ipv4Addr::new(hdr[ip + 12], hdr[ip + 13], hdr[ip + 14], hdr[ip + 15]);
    let dst = Ipv4Addr::new(hdr[ip + 16], hdr[ip + 17], hdr[ip + 18], hdr[ip + 19]);
    let mut at = 0;
    for i in 0..count {
        let chunk = &payload[(i * mss).min(t.payload)..((i + 1) * mss).min(t.payload)];
        let seg_len = wire::vxlan::HEADER_LEN + t.hdr_len + chunk.len();
        let seg = &mut out[at..at + seg_len];
        let (vx, inner) = seg.split_at_mut(wire::vxlan::HEADER_LEN);
        wire::vxlan::write_header(vx.try_into().expect("8-byte VXLAN header"), vni);
        inner[..t.hdr_len].copy_from_slice(hdr);
        inner[t.hdr_len..].copy_from_slice(chunk);
        let ip_len = (t.hdr_len - ETH + chunk.len()) as u16;
        if t.v6 {
            // The payload length: all but the 40-byte fixed header.
            let plen = ip_len - wire::ipv6::HEADER_LEN as u16;
            inner[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
        } else {
            inner[ip + 2..ip + 4].copy_from_slice(&ip_len.to_be_bytes());
            inner[ip + 4..ip + 6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            inner[ip + 10..ip + 12].fill(0);
            let ipc = wire::checksum::checksum(&inner[ip..ip + t.ihl]);
            inner[ip + 10..ip + 12].copy_from_slice(&ipc.to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        inner[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i + 1 < count {
            flags &= !(FIN | PSH);
        }
        if i > 0 {
            flags &= !CWR;
        }
        inner[tcp + 13] = flags;
        inner[tcp + 16..tcp + 18].fill(0);
        let c = if t.v6 {
            wire::checksum::checksum_pseudo6(src6, dst6, 6, &inner[tcp..])
        } else {
            wire::checksum::checksum_pseudo(src, dst, 6, &inner[tcp..])
        };
        inner[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
        at += seg_len;
    }
    Some(Segments { size, count, len })
}

/// A super-frame being built from consecutive TCP segments of one flow (the frame itself lives
/// in the worker's frame buffer; this is its bookkeeping).
#[derive(Debug, Default, Clone, Copy)]
pub struct Coalesce {
    /// Segments merged so far (0: nothing pending).
    pub segs: usize,
    /// Headers of the pending frame.
    pub hdr_len: usize,
    /// Bytes of IP header (IPv6: with extension headers).
    ihl: usize,
    /// IPv6 segments.
    v6: bool,
    /// Payload bytes of each merged segment (the first's).
    pub mss: usize,
    /// Sequence number the next segment must carry.
    next_seq: u32,
    /// The last segment was short or carried PSH: nothing more may follow.
    closed: bool,
    /// A merged segment carried PSH.
    psh: bool,
}

/// Whether the TCP segment `frame` (IP header of `ihl` bytes, IPv6 if `v6`, no padding after
/// the packet) may be merged as far as its checksums go: the IPv4 header checksum verifies, and
/// the TCP
/// checksum verifies or is partial (only the pseudo-header sum, as a kernel VTEP on a veth
/// leaves it). A merged frame goes to the endpoint with a partial checksum that its kernel
/// trusts, so a segment that would fail its own checksum must be delivered alone instead,
/// for the endpoint to drop and count (Linux GRO validates before merging too).
fn checksums_ok(frame: &[u8], ihl: usize, v6: bool) -> bool {
    let ip = &frame[ETH..];
    if v6 {
        let addr = |at: usize| -> Ipv6Addr {
            let b: [u8; 16] = ip[at..at + 16].try_into().expect("an IPv6 address");
            Ipv6Addr::from(b)
        };
        let (src, dst) = (addr(8), addr(24));
        let seg = &ip[ihl..];
        let field = u16::from_be_bytes([seg[16], seg[17]]);
        return field == wire::checksum::pseudo_sum6(src, dst, 6, seg.len())
            || wire::checksum::checksum_pseudo6(src, dst, 6, seg) == 0;
    }
    if wire::checksum::checksum(&ip[..ihl]) != 0 {
        return false;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let seg = &ip[ihl..];
    let field = u16::from_be_bytes([seg[16], seg[17]]);
    field == wire::checksum::pseudo_sum(src, dst, 6, seg.len())
        || wire::checksum::checksum_pseudo(src, dst, 6, seg) == 0
}

/// Whether a segment with these TCP flags may be merged: plain ACK, optionally PSH.
fn mergeable_flags(flags: u8) -> bool {
    flags & (FIN | SYN | RST | URG | ECE | CWR) == 0 && flags & ACK != 0
}

impl Coalesce {
    /// Start a pending frame with `frame` if it is a TCP segment that more may follow; returns
    /// false (and stays empty) otherwise.
    pub fn start(&mut self, p: &Parsed, frame: &[u8]) -> bool {
        *self = Coalesce::default();
        let Some(t) = Tcp4::of(p, frame.len()) else {
            return false;
        };
        let (ip_total, l4) = match (p.ip4(), p.ip6()) {
            (Some(ip), _) => (ip.total_len, ip.l4),
            (None, Some(ip)) => (ip.total_len, ip.l4),
            _ => return false,
        };
        let L4::Tcp { flags, .. } = l4 else {
            return false;
        };
        // Padding after the IP packet (tiny frames) or an empty payload: deliver as it is.
        if t.payload == 0
            || ip_total != frame.len() - ETH
            || !mergeable_flags(flags)
            || !checksums_ok(frame, t.ihl, t.v6)
        {
            return false;
        }
        let tcp = ETH + t.ihl;
        let seq = u32::from_be_bytes([
            frame[tcp + 4],
            frame[tcp + 5],
            frame[tcp + 6],
            frame[tcp + 7],
        ]);
        *self = Coalesce {
            segs: 1,
            hdr_len: t.hdr_len,
            ihl: t.ihl,
            v6: t.v6,
            mss: t.payload,
            next_seq: seq.wrapping_add(t.payload as u32),
            closed: flags & PSH != 0,
            psh: flags & PSH != 0,
        };
        true
    }

    /// Whether `seg` continues the pending frame `head` (its first `hdr_len` bytes at least)
    /// whose length is now `len`: same headers but for length, ID, checksums and sequence; the
    /// expected sequence number; no more payload than the first segment; room left.
    pub fn accepts(&self, head: &[u8], len: usize, seg: &[u8]) -> bool {
        if self.segs == 0 || self.closed || seg.len() <= self.hdr_len {
            return false;
        }
        let (h, ip, tcp) = (self.hdr_len, ETH, ETH + self.ihl);
        let payload = seg.len() - h;
        if payload > self.mss || len + payload - ETH > IP_MAX {
            return false;
        }
        let be16 = |at: usize| usize::from(u16::from_be_bytes([seg[at], seg[at + 1]]));
        let seq = u32::from_be_bytes([seg[tcp + 4], seg[tcp + 5], seg[tcp + 6], seg[tcp + 7]]);
        let flags = seg[tcp + 13];
        let ip_same = if self.v6 {
            be16(ip + 4) + wire::ipv6::HEADER_LEN == seg.len() - ETH
                && head[..ip + 4] == seg[..ip + 4] // Ethernet, version, class, flow label
                && head[ip + 6..tcp + 4] == seg[ip + 6..tcp + 4] // next header, hop limit,
                                                                 // addresses, ext headers, ports
        } else {
            be16(ip + 2) == seg.len() - ETH
                && head[..ip + 2] == seg[..ip + 2] // Ethernet, IP version/IHL, TOS
                && head[ip + 6..ip + 10] == seg[ip + 6..ip + 10] // flags/fragment, TTL, protocol
                && head[ip + 12..tcp + 4] == seg[ip + 12..tcp + 4] // addresses, options, ports
        };
        // The data offset byte (tcp + 12) is compared below, so the header lengths agree.
        ip_same
            && seq == self.next_seq
            && mergeable_flags(flags)
            && head[tcp + 8..tcp + 13] == seg[tcp + 8..tcp + 13] // ack, data offset
            && head[tcp + 14..tcp + 16] == seg[tcp + 14..tcp + 16] // window
            && head[tcp + 18..h] == seg[tcp + 18..h] // urgent pointer, options (timestamps)
            && checksums_ok(seg, self.ihl, self.v6)
    }

    /// Record that a segment of `payload` bytes with TCP `flags` was appended.
    pub fn appended(&mut self, payload: usize, flags: u8) {
        self.segs += 1;
        self.next_seq = self.next_seq.wrapping_add(payload as u32);
        if payload < self.mss || flags & PSH != 0 {
            self.closed = true;
        }
        self.psh |= flags & PSH != 0;
    }

    /// TCP flags of a segment (for [`Self::appended`]).
    pub fn flags_of(&self, seg: &[u8]) -> u8 {
        seg[ETH + self.ihl + 13]
    }

    /// Fix the headers of the finished frame (`frame`, all merged segments) and return the
    /// virtio-net header it goes to a TAP with: GSO TCPv4 with the first segment's size and a
    /// partial checksum. A single segment is left as it arrived (`None`).
    pub fn finish(&mut self, frame: &mut [u8]) -> Option<VirtioNetHdr> {
        let done = std::mem::take(self);
        if done.segs < 2 {
            return None;
        }
        let (ip, tcp) = (ETH, ETH + done.ihl);
        if done.psh {
            frame[tcp + 13] |= PSH;
        }
        if done.v6 {
            let plen = (frame.len() - ETH - wire::ipv6::HEADER_LEN) as u16;
            frame[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
            let addr = |at: usize| -> Ipv6Addr {
                let b: [u8; 16] = frame[at..at + 16].try_into().expect("an IPv6 address");
                Ipv6Addr::from(b)
            };
            let (src, dst) = (addr(ip + 8), addr(ip + 24));
            let partial = wire::checksum::pseudo_sum6(src, dst, 6, frame.len() - tcp);
            frame[tcp + 16..tcp + 18].copy_from_slice(&partial.to_be_bytes());
            return Some(done.vnet(GSO_TCPV6, tcp));
        }
        let total = (frame.len() - ETH) as u16;
        frame[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
        frame[ip + 10..ip + 12].fill(0);
        let c = wire::checksum::checksum(&frame[ip..ip + done.ihl]);
        frame[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
        let src = Ipv4Addr::new(
            frame[ip + 12],
            frame[ip + 13],
            frame[ip + 14],
            frame[ip + 15],
        );
        let dst = Ipv4Addr::new(
            frame[ip + 16],
            frame[ip + 17],
            frame[ip + 18],
            frame[ip + 19],
        );
        let partial = wire::checksum::pseudo_sum(src, dst, 6, frame.len() - tcp);
        frame[tcp + 16..tcp + 18].copy_from_slice(&partial.to_be_bytes());
        Some(done.vnet(GSO_TCPV4, tcp))
    }

    /// The virtio-net header of a finished frame: `gso_type`, the first segment's size, the
    /// TCP checksum at `tcp` partial.
    fn vnet(&self, gso_type: u8, tcp: usize) -> VirtioNetHdr {
        VirtioNetHdr {
            flags: VirtioNetHdr::F_NEEDS_CSUM,
            gso_type,
            hdr_len: self.hdr_len as u16,
            gso_size: self.mss as u16,
            csum_start: tcp as u16,
            csum_offset: 16,
            num_buffers: 0,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn start(c: &mut Coalesce, f: &[u8]) -> bool {
        Parsed::parse(f).is_some_and(|p| c.start(&p, f))
    }

    /// An Ethernet/IPv4/TCP frame with `payload` bytes (a counting pattern), timestamps option,
    /// complete checksums.
    fn frame(seq: u32, payload: usize, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; ETH + 20 + 32 + payload];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[8, 0]);
        let ip = ETH;
        f[ip] = 0x45;
        f[ip + 2..ip + 4].copy_from_slice(&((20 + 32 + payload) as u16).to_be_bytes());
        f[ip + 4..ip + 6].copy_from_slice(&7u16.to_be_bytes());
        f[ip + 6] = 0x40;
        f[ip + 8] = 64;
        f[ip + 9] = 6;
        f[ip + 12..ip + 16].copy_from_slice(&[10, 0, 0, 1]);
        f[ip + 16..ip + 20].copy_from_slice(&[10, 0, 0, 2]);
        let c = wire::checksum::checksum(&f[ip..ip + 20]);
        f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
        let tcp = ip + 20;
        f[tcp..tcp + 4].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
        f[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
        f[tcp + 8..tcp + 12].copy_from_slice(&99u32.to_be_bytes());
        f[tcp + 12] = 8 << 4;
        f[tcp + 13] = flags;
        f[tcp + 14..tcp + 16].copy_from_slice(&512u16.to_be_bytes());
        f[tcp + 20..tcp + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6]);
        for (i, b) in f[tcp + 32..].iter_mut().enumerate() {
            *b = (seq as usize + i) as u8;
        }
        let c = wire::checksum::checksum_pseudo(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            6,
            &f[tcp..],
        );
        f[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
        f
    }

    /// [`frame`] as IPv6 (fd00::1 -> fd00::2): the same TCP segment behind a 40-byte header.
    fn frame6(seq: u32, payload: usize, flags: u8) -> Vec<u8> {
        let v4 = frame(seq, payload, flags);
        let tcp = &v4[ETH + 20..];
        let (src, dst): (Ipv6Addr, Ipv6Addr) =
            ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let mut f = v4[..ETH].to_vec();
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        let mut h = [0u8; 40];
        wire::ipv6::Ipv6Header {
            src,
            dst,
            next_header: 6,
            payload_len: tcp.len(),
            hop_limit: 64,
        }
        .write(&mut h);
        f.extend_from_slice(&h);
        let at = f.len();
        f.extend_from_slice(tcp);
        f[at + 16..at + 18].fill(0);
        let c = wire::checksum::checksum_pseudo6(src, dst, 6, &f[at..]);
        f[at + 16..at + 18].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn ipv6_super_frames_are_segmented_with_lengths_and_checksums_fixed() {
        let sup = frame6(1000, 10_000, 0x18);
        let t = tcp4(&sup).unwrap();
        assert!(t.v6);
        assert_eq!((t.ihl, t.hdr_len), (40, ETH + 40 + 32));
        let mut out = vec![0u8; 20_000];
        let s = segment_tcp4(&sup, t, 1378, 42, &mut out).expect("segments");
        assert_eq!(s.count, 8);
        let mut payload = Vec::new();
        for i in 0..s.count {
            let seg = &out[i * s.size..((i + 1) * s.size).min(s.len)];
            let inner = &seg[8..];
            let p = Parsed::parse(inner).expect("parses");
            let ip = p.ip6().expect("IPv6");
            assert_eq!(ip.total_len, inner.len() - ETH, "payload length of {i}");
            let c = wire::checksum::checksum_pseudo6(
                "fd00::1".parse().unwrap(),
                "fd00::2".parse().unwrap(),
                6,
                &inner[ETH + 40..],
            );
            assert_eq!(c, 0, "tcp csum {i}");
            let seq = u32::from_be_bytes(inner[ETH + 44..ETH + 48].try_into().unwrap());
            assert_eq!(seq, 1000 + (i * 1378) as u32);
            payload.extend_from_slice(&inner[ETH + 40 + 32..]);
        }
        assert_eq!(payload, sup[ETH + 40 + 32..]);
        // And coalesced back into the super-frame, with a partial checksum.
        let h = ETH + 40 + 32;
        let mut c = Coalesce::default();
        let mut buf: Vec<u8> = out[8..s.size].to_vec();
        assert!(start(&mut c, &buf));
        for i in 1..s.count {
            let seg = &out[i * s.size + 8..((i + 1) * s.size).min(s.len)];
            assert!(c.accepts(&buf, buf.len(), seg), "segment {i}");
            let f = c.flags_of(seg);
            buf.extend_from_slice(&seg[h..]);
            c.appended(seg.len() - h, f);
        }
        let v = c.finish(&mut buf).expect("merged");
        assert_eq!(
            (v.gso_type, v.gso_size, v.hdr_len),
            (GSO_TCPV6, 1378, h as u16)
        );
        assert_eq!(buf[..ETH + 40], sup[..ETH + 40], "payload length restored");
        let mut full = buf.clone();
        let sum = wire::checksum::checksum(&full[ETH + 40..]);
        full[ETH + 56..ETH + 58].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(full, sup, "the checksum completes to the original");
        // A segment of another flow (other addresses) is not merged.
        let mut c = Coalesce::default();
        let first = frame6(1, 100, 0x10);
        assert!(start(&mut c, &first));
        let mut other = frame6(101, 100, 0x10);
        other[ETH + 8 + 15] ^= 1;
        assert!(!c.accepts(&first, first.len(), &other));
    }

    #[test]
    fn segmenting_a_super_frame_gives_valid_mss_sized_segments() {
        let sup = frame(1000, 10_000, 0x18 | CWR); // ACK|PSH|CWR
        let mut out = vec![0u8; 20_000];
        let s = segment_tcp4(&sup, tcp4(&sup).unwrap(), 1398, 42, &mut out).expect("segments");
        assert_eq!(s.count, 8); // 7 full + 216 bytes
        assert_eq!(s.size, 8 + 66 + 1398);
        assert_eq!(s.len, 8 * (8 + 66) + 10_000);
        let mut payload = Vec::new();
        for i in 0..s.count {
            let seg = &out[i * s.size..((i + 1) * s.size).min(s.len)];
            assert_eq!(wire::vxlan::decap(seg), Ok(42));
            let inner = &seg[8..];
            let want = frame(1000 + (i * 1398) as u32, inner.len() - 66, 0);
            // Headers: checksums verify, lengths/seq/flags fixed.
            assert_eq!(
                wire::checksum::checksum(&inner[ETH..ETH + 20]),
                0,
                "ip csum {i}"
            );
            let c = wire::checksum::checksum_pseudo(
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 2),
                6,
                &inner[ETH + 20..],
            );
            assert_eq!(c, 0, "tcp csum {i}");
            assert_eq!(inner[ETH + 4..ETH + 6], (7 + i as u16).to_be_bytes());
            assert_eq!(
                inner[ETH + 20 + 4..ETH + 20 + 8],
                want[ETH + 20 + 4..ETH + 20 + 8]
            );
            let flags = inner[ETH + 20 + 13];
            assert_eq!(flags & PSH != 0, i == s.count - 1, "PSH only on the last");
            assert_eq!(flags & CWR != 0, i == 0, "CWR only on the first");
            payload.extend_from_slice(&inner[66..]);
        }
        assert_eq!(payload, sup[66..]);
    }

    #[test]
    fn segments_coalesce_back_into_the_super_frame() {
        let sup = frame(5000, 4000, 0x18);
        let mut out = vec![0u8; 8000];
        let s = segment_tcp4(&sup, tcp4(&sup).unwrap(), 1000, 1, &mut out).expect("segments");
        let mut c = Coalesce::default();
        let mut buf: Vec<u8> = out[8..s.size].to_vec();
        assert!(start(&mut c, &buf));
        for i in 1..s.count {
            let seg = &out[i * s.size + 8..((i + 1) * s.size).min(s.len)];
            assert!(c.accepts(&buf, buf.len(), seg), "segment {i}");
            let f = c.flags_of(seg);
            buf.extend_from_slice(&seg[66..]);
            c.appended(seg.len() - 66, f);
        }
        let v = c.finish(&mut buf).expect("merged");
        assert_eq!((v.gso_type, v.gso_size, v.hdr_len), (GSO_TCPV4, 1000, 66));
        assert_eq!(buf[66..], sup[66..]);
        assert_eq!(buf[..ETH + 4], sup[..ETH + 4], "total length restored");
        assert_eq!(wire::checksum::checksum(&buf[ETH..ETH + 20]), 0);
        assert_eq!(buf[ETH + 20 + 13] & PSH, PSH);
        // Partial checksum: completing it over the segment gives a valid checksum.
        let mut full = buf.clone();
        let sum = wire::checksum::checksum(&full[ETH + 20..]);
        full[ETH + 36..ETH + 38].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(full[ETH + 36..ETH + 38], sup[ETH + 36..ETH + 38]);
    }

    #[test]
    fn coalescing_refuses_gaps_other_flows_and_control_segments() {
        let a = frame(0, 100, 0x10);
        let mut c = Coalesce::default();
        assert!(start(&mut c, &a));
        assert!(!c.accepts(&a, a.len(), &frame(200, 100, 0x10)), "gap");
        assert!(
            !c.accepts(&a, a.len(), &frame(100, 101, 0x10)),
            "longer than mss"
        );
        assert!(!c.accepts(&a, a.len(), &frame(100, 100, 0x11)), "FIN");
        let mut other = frame(100, 100, 0x10);
        other[ETH + 20 + 1] ^= 1; // another port
        assert!(!c.accepts(&a, a.len(), &other), "other flow");
        let mut ts = frame(100, 100, 0x10);
        ts[ETH + 20 + 27] ^= 1; // another timestamp
        assert!(!c.accepts(&a, a.len(), &ts), "timestamps differ");
        assert!(c.accepts(&a, a.len(), &frame(100, 100, 0x10)));
        assert!(
            !start(&mut Coalesce::default(), &frame(0, 0, 0x10)),
            "pure ACK"
        );
        assert!(!start(&mut Coalesce::default(), &frame(0, 10, 0x02)), "SYN");
        assert!(!start(&mut Coalesce::default(), &a[..40]), "truncated");
        // Checksums: a segment that fails its own (TCP or IPv4 header) is never merged, where
        // the merged frame's partial checksum would hide it; a partial one (a kernel VTEP's) is.
        let mut bad = frame(100, 100, 0x10);
        bad[ETH + 20 + 40] ^= 0x40; // one payload bit
        assert!(!c.accepts(&a, a.len(), &bad), "bad TCP checksum");
        assert!(
            !start(&mut Coalesce::default(), &bad),
            "bad TCP checksum starts nothing"
        );
        let mut bad_ip = frame(100, 100, 0x10);
        bad_ip[ETH + 10] ^= 1;
        assert!(!c.accepts(&a, a.len(), &bad_ip), "bad IPv4 header checksum");
        let mut partial = frame(100, 100, 0x10);
        let ps = wire::checksum::pseudo_sum(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            6,
            32 + 100,
        );
        partial[ETH + 36..ETH + 38].copy_from_slice(&ps.to_be_bytes());
        assert!(c.accepts(&a, a.len(), &partial), "partial checksum");
        // A short segment closes the frame.
        c.appended(50, 0x10);
        assert!(!c.accepts(&a, a.len() + 50, &frame(150, 100, 0x10)));
        assert_eq!(c.finish(&mut a.clone()).map(|v| v.gso_size), Some(100));
    }
}
