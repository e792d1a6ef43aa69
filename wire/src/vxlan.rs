//! VXLAN (RFC 7348): the 8-byte header, and the outer IPv4 + UDP headers the switch pushes in
//! front of a frame (the kernel adds the outer Ethernet header).

use std::net::Ipv4Addr;

use crate::ethernet::EthFrame;
use crate::ipv4::{self, Ipv4Header, Ipv4Packet};
use crate::l4::{self, UDP_HEADER_LEN};
use crate::parsed::Parsed;

/// The IANA-assigned VXLAN UDP port (RFC 7348 section 5).
pub const VXLAN_PORT: u16 = 4789;
/// Bytes VXLAN adds over IPv4 on the wire: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// Bytes VXLAN adds over an IPv6 underlay (outer IPv6, UDP, VXLAN and inner Ethernet headers).
pub const VXLAN_OVERHEAD_V6: u32 = 70;
/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// Outer IPv4 + UDP + VXLAN headers the switch writes.
pub const OUTER_LEN: usize = ipv4::HEADER_LEN + UDP_HEADER_LEN + HEADER_LEN;
/// Largest VNI (24 bits).
pub const VNI_MAX: u32 = 0x00ff_ffff;

/// Why a received VXLAN packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecapError {
    /// Shorter than the VXLAN header plus an Ethernet header.
    Short,
    /// The I flag is not set (RFC 7348: "MUST be set to 1 for a valid VXLAN Network ID").
    NoVni,
}

/// Read the VNI from a VXLAN header; the inner frame follows at [`HEADER_LEN`].
///
/// RFC 7348 section 5: flags (8 bits) `RRRRIRRR`, 24 reserved bits, the 24-bit VNI, 8 reserved
/// bits. Reserved bits are ignored on receipt.
#[inline]
pub fn decap(pkt: &[u8]) -> Result<u32, DecapError> {
    if pkt.len() < HEADER_LEN + EthFrame::HEADER_LEN {
        return Err(DecapError::Short);
    }
    if pkt[0] & 0x08 == 0 {
        return Err(DecapError::NoVni);
    }
    Ok(u32::from_be_bytes([0, pkt[4], pkt[5], pkt[6]]))
}

/// Write a VXLAN header for `vni` into `h`.
#[inline]
pub fn write_header(h: &mut [u8; HEADER_LEN], vni: u32) {
    let v = vni.to_be_bytes();
    *h = [0x08, 0, 0, 0, v[1], v[2], v[3], 0];
}

/// Write outer IPv4 + UDP + VXLAN headers into `out` for an inner frame of `inner_len` bytes.
/// The UDP checksum is zero (RFC 7348 section 5: "SHOULD be transmitted as zero" over IPv4); DF
/// is set so the underlay never fragments (oversize frames are dropped before encapsulation).
#[inline]
pub fn write_outer(
    out: &mut [u8; OUTER_LEN],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    vni: u32,
    inner_len: usize,
) {
    let (ip, rest) = out.split_at_mut(ipv4::HEADER_LEN);
    let (udp, vx) = rest.split_at_mut(UDP_HEADER_LEN);
    Ipv4Header {
        src,
        dst,
        protocol: ipv4::proto::UDP,
        payload_len: UDP_HEADER_LEN + HEADER_LEN + inner_len,
        ttl: 64,
    }
    .write(ip.try_into().expect("20 bytes"));
    l4::write_udp(
        udp.try_into().expect("8 bytes"),
        sport,
        dport,
        HEADER_LEN + inner_len,
    );
    write_header(vx.try_into().expect("8 bytes"), vni);
}

/// Change the outer destination of headers written by [`write_outer`] (head-end replication to
/// the next peer), fixing the checksum.
#[inline]
pub fn set_outer_dst(out: &mut [u8; OUTER_LEN], dst: Ipv4Addr) {
    if let Some(mut ip) = Ipv4Packet::new_quoted(&mut out[..]) {
        ip.set_dst(dst);
    }
}

/// UDP source port from a hash of the inner frame (RFC 7348 section 5: "it is recommended that
/// the UDP source port number be calculated using a hash of fields from the inner packet"), in
/// the dynamic range 49152-65535: for IPv4 the protocol, addresses and ports (so every packet of
/// a flow takes the same underlay path, before and after translation), otherwise the Ethernet
/// addresses.
#[inline]
pub fn source_port(inner: &Parsed) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    let mut mix = |b: &[u8]| {
        for &x in b {
            h ^= u32::from(x);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    match inner.ip4() {
        Some(ip) => {
            mix(&[ip.proto]);
            mix(&ip.src.octets());
            mix(&ip.dst.octets());
            if let Some((s, d)) = ip.ports() {
                mix(&s.to_be_bytes());
                mix(&d.to_be_bytes());
            }
        }
        None => {
            mix(&inner.eth.dst.0);
            mix(&inner.eth.src.0);
        }
    }
    49152 + (h % 16384) as u16
}

#[cfg(test)]
mod test {
    use super::*;

    // A VXLAN packet as the Linux kernel sends it (VNI 42), followed by an inner frame header.
    const KERNEL_VXLAN: [u8; 22] = [
        0x08, 0, 0, 0, 0, 0, 0x2a, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 8, 6,
    ];

    #[test]
    fn decap_kernel_packet() {
        assert_eq!(decap(&KERNEL_VXLAN), Ok(42));
        assert_eq!(decap(&KERNEL_VXLAN[..21]), Err(DecapError::Short));
        let mut no_i = KERNEL_VXLAN;
        no_i[0] = 0;
        assert_eq!(decap(&no_i), Err(DecapError::NoVni));
        // Reserved bits are ignored.
        let mut r = KERNEL_VXLAN;
        r[1] = 0xff;
        r[7] = 0xff;
        assert_eq!(decap(&r), Ok(42));
    }

    #[test]
    fn header_roundtrip_and_max_vni() {
        let mut h = [0u8; HEADER_LEN];
        write_header(&mut h, VNI_MAX);
        let mut pkt = h.to_vec();
        pkt.extend_from_slice(&[0; 14]);
        assert_eq!(decap(&pkt), Ok(VNI_MAX));
        write_header(&mut h, 42);
        assert_eq!(
            &h[..],
            &KERNEL_VXLAN[..8],
            "byte-identical to the kernel's header"
        );
    }

    #[test]
    fn outer_headers_are_valid() {
        let mut out = [0u8; OUTER_LEN];
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        write_outer(&mut out, s, d, 50000, VXLAN_PORT, 42, 100);
        let mut pkt = out.to_vec();
        pkt.extend_from_slice(&[0u8; 100]);
        let ip = Ipv4Packet::new_checked(&pkt[..]).unwrap();
        assert!(ip.header_checksum_ok());
        assert_eq!((ip.src(), ip.dst(), ip.len()), (s, d, OUTER_LEN + 100));
        let udp = l4::UdpHeader::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (udp.dport(), udp.len_field(), udp.checksum()),
            (VXLAN_PORT, 116, 0)
        );
        assert_eq!(decap(udp.payload()), Ok(42));
        let d2 = Ipv4Addr::new(10, 0, 0, 3);
        set_outer_dst(&mut out, d2);
        let ip = Ipv4Packet::new_quoted(&out[..]).unwrap();
        assert!(ip.header_checksum_ok());
        assert_eq!(ip.dst(), d2);
    }

    #[test]
    fn source_port_is_in_the_dynamic_range_and_follows_the_flow() {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&28u16.to_be_bytes());
        f[23] = 17;
        f[14 + 24..14 + 26].copy_from_slice(&8u16.to_be_bytes());
        let p = Parsed::parse(&f).unwrap();
        assert!(p.ip4().is_some());
        let a = source_port(&p);
        assert!(a >= 49152);
        assert_eq!(
            a,
            source_port(&Parsed::parse(&f).unwrap()),
            "stable for a flow"
        );
        let differ = (0..50u8)
            .filter(|&i| {
                f[14 + 20] = i; // another source port
                source_port(&Parsed::parse(&f).unwrap()) != a
            })
            .count();
        assert!(differ > 40, "{differ} of 50 source ports moved the hash");
    }
}
