//! IPv6 (RFC 8200): a checked view of a packet, the writer of the header the switch makes from
//! scratch (neighbour discovery, ICMPv6 errors), next-header numbers, and the walk over the
//! extension headers to the upper layer ([`upper_layer`]).
//!
//! ```text
//!  0       4      12              16      24      32 bits
//! +-------+-------+---------------+-------+-------+
//! |version| class |          flow label           |   0
//! +-------+-------+---------------+-------+-------+
//! |        payload length         | next  | hop   |   4
//! +-------------------------------+-------+-------+
//! |          source address (16 bytes)            |   8
//! |        destination address (16 bytes)         |  24
//! +-----------------------------------------------+  40: extension headers, upper layer
//! ```

use std::net::Ipv6Addr;

use crate::{be16, put16};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// The IPv6 minimum link MTU (RFC 8200 §5): the largest packet an ICMPv6 error may be.
pub const MIN_MTU: usize = 1280;
/// The most extension headers [`upper_layer`] follows before it gives up.
pub const MAX_EXT_HEADERS: usize = 8;

/// Next-header (IP protocol) numbers an IPv6 packet carries.
pub mod next_header {
    /// Hop-by-hop options (only directly after the IPv6 header).
    pub const HOP_BY_HOP: u8 = 0;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// Routing header.
    pub const ROUTING: u8 = 43;
    /// Fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Encapsulating security payload (opaque: the walk stops there).
    pub const ESP: u8 = 50;
    /// Authentication header.
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// No next header: nothing follows.
    pub const NO_NEXT: u8 = 59;
    /// Destination options.
    pub const DEST_OPTS: u8 = 60;
}

/// Length of a fragment header.
const FRAGMENT_HEADER_LEN: usize = 8;

/// An IPv6 packet over a byte buffer: version 6, a whole fixed header, and a payload length the
/// buffer holds (trailing bytes, Ethernet padding, are outside the packet). A payload length of
/// zero before a hop-by-hop header announces a jumbogram (RFC 2675), which is refused. Once
/// made, no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Check the version, the fixed header's length and that the payload length fits the
    /// buffer; `None` otherwise (and for a jumbogram).
    pub fn new_checked(buf: T) -> Option<Self> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN || b[0] >> 4 != 6 {
            return None;
        }
        let payload = usize::from(be16(b, 4));
        if HEADER_LEN + payload > b.len() || (payload == 0 && b[6] == next_header::HOP_BY_HOP) {
            return None;
        }
        Some(Ipv6Packet { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        let b = self.b();
        (b[0] << 4) | (b[1] >> 4)
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }

    /// The payload length field: bytes after the fixed header, extension headers included.
    pub fn payload_len(&self) -> usize {
        usize::from(be16(self.b(), 4))
    }

    /// Length of the packet: the fixed header and the payload.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// Never true: a view holds at least a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The next-header field: the first extension header or the upper layer ([`next_header`]).
    pub fn next_header(&self) -> u8 {
        self.b()[6]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.b()[7]
    }

    /// Source address.
    pub fn src(&self) -> Ipv6Addr {
        addr_at(self.b(), 8)
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv6Addr {
        addr_at(self.b(), 24)
    }

    /// The fixed header bytes.
    pub fn header(&self) -> &[u8] {
        &self.b()[..HEADER_LEN]
    }

    /// The payload: extension headers and upper layer, up to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.len()]
    }

    /// The packet: fixed header and payload, without trailing bytes.
    pub fn packet(&self) -> &[u8] {
        &self.b()[..self.len()]
    }

    /// The buffer the view was made over.
    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Set the hop limit (IPv6 has no header checksum to update).
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buf.as_mut()[7] = hop_limit;
    }

    /// Set the source address. The upper layer's checksum covers it (pseudo-header) and is not
    /// updated here.
    pub fn set_src(&mut self, ip: Ipv6Addr) {
        self.buf.as_mut()[8..24].copy_from_slice(&ip.octets());
    }

    /// Set the destination address. The upper layer's checksum covers it (pseudo-header) and is
    /// not updated here.
    pub fn set_dst(&mut self, ip: Ipv6Addr) {
        self.buf.as_mut()[24..40].copy_from_slice(&ip.octets());
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.len();
        &mut self.buf.as_mut()[HEADER_LEN..end]
    }
}

/// The address at `at`; the caller has checked the length.
fn addr_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(o)
}

/// The source address field of what claims to be an IPv6 header at the start of `ip`, read
/// without checking the header (`None` when it is too short): port security judges every frame
/// that says it is IPv6, valid or not.
pub fn claimed_src(ip: &[u8]) -> Option<Ipv6Addr> {
    let b: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
    Some(Ipv6Addr::from(b))
}

/// An IPv6 header as the switch writes it: traffic class and flow label zero, no extension
/// headers of its own (`next_header` is the upper layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Header {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// What follows the header ([`next_header`]).
    pub next_header: u8,
    /// Length of the payload that follows (at most 65535).
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
}

impl Ipv6Header {
    /// Write the header into `out`.
    #[inline]
    pub fn write(&self, out: &mut [u8; HEADER_LEN]) {
        out[..4].copy_from_slice(&[0x60, 0, 0, 0]);
        put16(out, 4, self.payload_len as u16);
        out[6] = self.next_header;
        out[7] = self.hop_limit;
        out[8..24].copy_from_slice(&self.src.octets());
        out[24..40].copy_from_slice(&self.dst.octets());
    }
}

/// Where the extension headers of a packet lead ([`upper_layer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upper {
    /// The upper-layer protocol ([`next_header`]; `NO_NEXT`, `ESP` or any number the walk does
    /// not know as an extension header). For a non-first fragment: the next header named by
    /// the fragment header.
    pub proto: u8,
    /// Offset of the upper-layer header in the packet (from the start of the IPv6 header).
    pub offset: usize,
    /// The packet is a fragment of a larger one: a non-first fragment (its upper-layer header is
    /// not here; `offset` is where its fragment data starts), or a first fragment with more to
    /// come (its upper-layer header is here, its data is not all here). An atomic fragment
    /// (offset 0, no more fragments, RFC 6946) is not a fragment.
    pub fragment: bool,
}

/// Why an extension-header chain was refused ([`upper_layer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtError {
    /// Not an IPv6 packet: version, fixed header, payload length or a jumbogram.
    #[error("not a valid IPv6 header")]
    Header,
    /// The packet ends inside an extension header's fixed part.
    #[error("extension header truncated")]
    Truncated,
    /// An extension header's length runs past the end of the packet.
    #[error("extension header length runs past the packet")]
    LengthOverrun,
    /// More than [`MAX_EXT_HEADERS`] extension headers.
    #[error("too many extension headers")]
    TooManyHeaders,
    /// A hop-by-hop header anywhere but directly after the IPv6 header (RFC 8200 §4.1).
    #[error("hop-by-hop options not first")]
    HopByHopNotFirst,
}

/// Follow the extension headers (hop-by-hop, routing, destination options, authentication,
/// fragment) of the IPv6 `packet` (from its fixed header; trailing bytes after the payload
/// length are ignored) to the upper layer. At most [`MAX_EXT_HEADERS`]; hop-by-hop only first.
/// Errors are values: no input makes this panic.
pub fn upper_layer(packet: &[u8]) -> Result<Upper, ExtError> {
    Ipv6Packet::new_checked(packet)
        .ok_or(ExtError::Header)?
        .upper_layer()
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// [`upper_layer`] of this packet.
    pub fn upper_layer(&self) -> Result<Upper, ExtError> {
        walk(self.packet(), self.next_header())
    }
}

/// The walk of [`upper_layer`] over a checked `packet` whose fixed header names `nh` next.
fn walk(packet: &[u8], mut nh: u8) -> Result<Upper, ExtError> {
    let mut at = HEADER_LEN;
    let mut fragment = false;
    for count in 0..=MAX_EXT_HEADERS {
        let fixed = match nh {
            next_header::HOP_BY_HOP if count > 0 => return Err(ExtError::HopByHopNotFirst),
            next_header::FRAGMENT => FRAGMENT_HEADER_LEN,
            next_header::HOP_BY_HOP
            | next_header::ROUTING
            | next_header::DEST_OPTS
            | next_header::AH => 2,
            _ => {
                return Ok(Upper {
                    proto: nh,
                    offset: at,
                    fragment,
                })
            }
        };
        if count == MAX_EXT_HEADERS {
            return Err(ExtError::TooManyHeaders);
        }
        let h = packet.get(at..).unwrap_or_default();
        if h.len() < fixed {
            return Err(ExtError::Truncated);
        }
        let len = match nh {
            next_header::FRAGMENT => FRAGMENT_HEADER_LEN,
            // RFC 4302 §2.2: in 4-byte units, less 2.
            next_header::AH => (usize::from(h[1]) + 2) * 4,
            _ => (usize::from(h[1]) + 1) * 8,
        };
        if len > h.len() {
            return Err(ExtError::LengthOverrun);
        }
        if nh == next_header::FRAGMENT {
            let off_m = be16(h, 2);
            let (offset, more) = (off_m >> 3, off_m & 1 != 0);
            if offset != 0 {
                // The upper-layer header went with the first fragment.
                return Ok(Upper {
                    proto: h[0],
                    offset: at + len,
                    fragment: true,
                });
            }
            fragment |= more;
        }
        nh = h[0];
        at += len;
    }
    Err(ExtError::TooManyHeaders)
}

#[cfg(test)]
pub(crate) mod test {
    use super::*;
    use smoltcp::wire::Ipv6Packet as Oracle;

    const SRC: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    const DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);

    /// An IPv6 packet: `exts` as (next-header number of the header, its bytes), then `upper`
    /// (protocol, bytes).
    pub(crate) fn packet(exts: &[(u8, Vec<u8>)], upper: (u8, &[u8])) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, (_, bytes)) in exts.iter().enumerate() {
            let mut b = bytes.clone();
            b[0] = exts.get(i + 1).map_or(upper.0, |e| e.0);
            body.extend_from_slice(&b);
        }
        body.extend_from_slice(upper.1);
        let mut p = vec![0u8; HEADER_LEN];
        Ipv6Header {
            src: SRC,
            dst: DST,
            next_header: exts.first().map_or(upper.0, |e| e.0),
            payload_len: body.len(),
            hop_limit: 64,
        }
        .write((&mut p[..]).try_into().unwrap());
        p.extend_from_slice(&body);
        p
    }

    /// An 8-byte options header (hop-by-hop, destination options, routing): a PadN option.
    fn opts8() -> Vec<u8> {
        vec![0, 0, 1, 4, 0, 0, 0, 0]
    }

    /// A fragment header with `offset` (in 8-byte units) and the M flag.
    fn frag(offset: u16, more: bool) -> Vec<u8> {
        let v = (offset << 3) | u16::from(more);
        let mut f = vec![0, 0, 0, 0, 0, 0, 0x12, 0x34];
        f[2..4].copy_from_slice(&v.to_be_bytes());
        f
    }

    #[test]
    fn written_header_is_what_an_independent_parser_reads() {
        let p = packet(&[], (next_header::UDP, &[0; 8]));
        let o = Oracle::new_checked(&p[..]).unwrap();
        assert_eq!((o.src_addr(), o.dst_addr()), (SRC, DST));
        assert_eq!((o.hop_limit(), o.payload_len(), o.version()), (64, 8, 6));
        assert_eq!(o.next_header(), smoltcp::wire::IpProtocol::Udp);
        assert_eq!((o.traffic_class(), o.flow_label()), (0, 0));
        let v = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!((v.src(), v.dst(), v.hop_limit()), (SRC, DST, 64));
        assert_eq!((v.next_header(), v.payload_len(), v.len()), (17, 8, 48));
        assert_eq!((v.traffic_class(), v.flow_label()), (0, 0));
        assert_eq!((v.payload().len(), v.header().len()), (8, 40));
        assert_eq!(claimed_src(&p), Some(SRC));
        assert_eq!(claimed_src(&p[..23]), None);
    }

    #[test]
    fn setters_write_the_fields() {
        let mut p = packet(&[], (next_header::NO_NEXT, &[]));
        p.extend_from_slice(&[0xee; 6]); // Ethernet padding: not part of the packet
        let mut v = Ipv6Packet::new_checked(&mut p[..]).unwrap();
        v.set_hop_limit(3);
        v.set_src(DST);
        v.set_dst(SRC);
        assert_eq!(
            (v.src(), v.dst(), v.hop_limit(), v.len()),
            (DST, SRC, 3, 40)
        );
        assert!(v.payload_mut().is_empty());
        assert_eq!(v.packet().len(), 40);
        let mut b = [0u8; 40];
        b[0] = 0x6a;
        b[1] = 0xbc;
        b[2] = 0xde;
        b[3] = 0xf0;
        b[6] = 59;
        let v = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!((v.traffic_class(), v.flow_label()), (0xab, 0xcdef0));
    }

    #[test]
    fn lying_lengths_and_jumbograms_are_refused() {
        let p = packet(&[], (next_header::UDP, &[0; 8]));
        for n in 0..p.len() {
            assert!(Ipv6Packet::new_checked(&p[..n]).is_none(), "{n}");
            assert_eq!(upper_layer(&p[..n]), Err(ExtError::Header), "{n}");
        }
        let mut b = p.clone();
        b[0] = 0x45;
        assert!(Ipv6Packet::new_checked(&b[..]).is_none());
        let mut b = p.clone();
        b[5] = 9; // payload 9 > 8 held
        assert!(Ipv6Packet::new_checked(&b[..]).is_none());
        // A jumbogram: payload length 0, a hop-by-hop header with the jumbo payload option.
        let mut j = packet(&[], (next_header::HOP_BY_HOP, &[]));
        j.extend_from_slice(&[17, 0, 0xc2, 4, 0, 1, 0, 0]);
        assert_eq!(Ipv6Packet::new_checked(&j[..]).map(|v| v.len()), None);
        assert_eq!(upper_layer(&j), Err(ExtError::Header));
        // Payload length 0 and nothing next: a valid empty packet.
        let e = packet(&[], (next_header::NO_NEXT, &[]));
        assert_eq!(Ipv6Packet::new_checked(&e[..]).unwrap().len(), 40);
    }

    #[test]
    fn the_walk_follows_every_extension_header_kind() {
        let ah = vec![0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]; // 12 bytes: (1 + 2) * 4
        let exts = [
            (next_header::HOP_BY_HOP, opts8()),
            (next_header::DEST_OPTS, opts8()),
            (
                next_header::ROUTING,
                vec![0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (next_header::AH, ah),
            (next_header::FRAGMENT, frag(0, false)),
            (next_header::DEST_OPTS, opts8()),
        ];
        let p = packet(&exts, (next_header::TCP, &[0; 20]));
        let u = upper_layer(&p).unwrap();
        assert_eq!(
            u,
            Upper {
                proto: next_header::TCP,
                offset: 40 + 8 + 8 + 16 + 12 + 8 + 8,
                fragment: false,
            }
        );
        // Trailing bytes (padding) change nothing.
        let mut q = p.clone();
        q.extend_from_slice(&[0; 10]);
        assert_eq!(upper_layer(&q), Ok(u));
        // No extension headers at all.
        let p = packet(&[], (next_header::ICMPV6, &[128, 0, 0, 0]));
        assert_eq!(upper_layer(&p).unwrap().offset, 40);
    }

    #[test]
    fn unknown_esp_and_no_next_end_the_walk() {
        for proto in [next_header::ESP, next_header::NO_NEXT, 253, 135] {
            let p = packet(&[(next_header::DEST_OPTS, opts8())], (proto, &[1, 2, 3]));
            assert_eq!(
                upper_layer(&p),
                Ok(Upper {
                    proto,
                    offset: 48,
                    fragment: false,
                })
            );
        }
    }

    #[test]
    fn fragments_first_non_first_and_atomic() {
        let upper: (u8, &[u8]) = (next_header::UDP, &[0; 16]);
        let first = packet(&[(next_header::FRAGMENT, frag(0, true))], upper);
        assert_eq!(
            upper_layer(&first),
            Ok(Upper {
                proto: next_header::UDP,
                offset: 48,
                fragment: true,
            })
        );
        for more in [false, true] {
            let later = packet(&[(next_header::FRAGMENT, frag(185, more))], upper);
            assert_eq!(
                upper_layer(&later),
                Ok(Upper {
                    proto: next_header::UDP,
                    offset: 48,
                    fragment: true,
                })
            );
        }
        // A non-first fragment's data is not walked, even if it looks like a header.
        let later = packet(
            &[(next_header::FRAGMENT, frag(1, false))],
            (next_header::HOP_BY_HOP, &[0xff; 3]),
        );
        assert!(upper_layer(&later).unwrap().fragment);
        let atomic = packet(&[(next_header::FRAGMENT, frag(0, false))], upper);
        assert_eq!(
            upper_layer(&atomic),
            Ok(Upper {
                proto: next_header::UDP,
                offset: 48,
                fragment: false,
            })
        );
        // A first fragment whose chain goes on past the fragment header.
        let first = packet(
            &[
                (next_header::FRAGMENT, frag(0, true)),
                (next_header::DEST_OPTS, opts8()),
            ],
            upper,
        );
        assert_eq!(
            upper_layer(&first),
            Ok(Upper {
                proto: next_header::UDP,
                offset: 56,
                fragment: true,
            })
        );
    }

    #[test]
    fn long_chains_are_refused_after_eight() {
        for n in 1..=12 {
            let exts: Vec<_> = (0..n).map(|_| (next_header::DEST_OPTS, opts8())).collect();
            let p = packet(&exts, (next_header::UDP, &[0; 8]));
            let r = upper_layer(&p);
            if n <= MAX_EXT_HEADERS {
                assert_eq!(r.map(|u| u.offset), Ok(40 + 8 * n), "{n}");
            } else {
                assert_eq!(r, Err(ExtError::TooManyHeaders), "{n}");
            }
        }
        // Eight headers then a ninth that would be cut short: still too many.
        let exts: Vec<_> = (0..8).map(|_| (next_header::ROUTING, opts8())).collect();
        let p = packet(&exts, (next_header::ROUTING, &[]));
        assert_eq!(upper_layer(&p), Err(ExtError::TooManyHeaders));
    }

    #[test]
    fn hop_by_hop_only_first() {
        let p = packet(
            &[
                (next_header::HOP_BY_HOP, opts8()),
                (next_header::HOP_BY_HOP, opts8()),
            ],
            (next_header::UDP, &[0; 8]),
        );
        assert_eq!(upper_layer(&p), Err(ExtError::HopByHopNotFirst));
        let p = packet(
            &[
                (next_header::DEST_OPTS, opts8()),
                (next_header::HOP_BY_HOP, opts8()),
            ],
            (next_header::UDP, &[0; 8]),
        );
        assert_eq!(upper_layer(&p), Err(ExtError::HopByHopNotFirst));
        // A header naming itself as the next, over and over: stopped by the count.
        let mut p = packet(&[], (next_header::DEST_OPTS, &[]));
        for _ in 0..20 {
            p.extend_from_slice(&[next_header::DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        p[5] = 160;
        assert_eq!(upper_layer(&p), Err(ExtError::TooManyHeaders));
    }

    #[test]
    fn truncated_and_overrunning_headers_are_errors() {
        let exts = [
            (next_header::HOP_BY_HOP, opts8()),
            (next_header::FRAGMENT, frag(0, false)),
            (next_header::AH, vec![0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
        ];
        let full = packet(&exts, (next_header::TCP, &[]));
        assert!(upper_layer(&full).is_ok());
        // Cut the packet (and its payload length) at every length inside the chain.
        for end in 40..full.len() {
            let mut p = full[..end].to_vec();
            p[4..6].copy_from_slice(&((end - 40) as u16).to_be_bytes());
            let r = upper_layer(&p);
            if end == 40 {
                assert_eq!(r, Err(ExtError::Header), "{end}"); // jumbogram
            } else {
                assert!(
                    matches!(r, Err(ExtError::Truncated | ExtError::LengthOverrun)),
                    "{end}: {r:?}"
                );
            }
        }
        // A header length that points past the packet.
        let mut p = packet(&[(next_header::ROUTING, opts8())], (next_header::TCP, &[]));
        p[41] = 1; // 16 bytes in 8
        assert_eq!(upper_layer(&p), Err(ExtError::LengthOverrun));
        p[41] = 255;
        assert_eq!(upper_layer(&p), Err(ExtError::LengthOverrun));
        let mut p = packet(&[(next_header::AH, vec![0; 12])], (next_header::TCP, &[]));
        p[41] = 255;
        assert_eq!(upper_layer(&p), Err(ExtError::LengthOverrun));
        // A fragment header cut short.
        let p = packet(&[], (next_header::FRAGMENT, &[6, 0, 0, 0]));
        assert_eq!(upper_layer(&p), Err(ExtError::Truncated));
    }

    #[test]
    fn no_prefix_or_byte_flip_panics() {
        let exts = [
            (next_header::HOP_BY_HOP, opts8()),
            (next_header::FRAGMENT, frag(0, true)),
            (next_header::AH, vec![0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
        ];
        let p = packet(&exts, (next_header::TCP, &[0; 20]));
        for n in 0..=p.len() {
            let _ = upper_layer(&p[..n]);
            let _ = Ipv6Packet::new_checked(&p[..n]).map(|v| (v.payload().len(), v.src()));
        }
        for at in 0..p.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut q = p.clone();
                q[at] = v;
                let _ = upper_layer(&q);
            }
        }
    }
}
