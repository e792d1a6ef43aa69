//! Wire formats the datapath needs beyond smoltcp's views: the MAC address type used across the
//! control plane, the virtio-net header that precedes every frame on a TAP with `IFF_VNET_HDR`,
//! and [`EthFrame`], the single parse of a frame's Ethernet header that everything else reuses.
//!
//! Protocol headers above Ethernet (ARP, IPv4, ICMP, UDP, TCP) are read through smoltcp's
//! checked zero-copy views (`smoltcp::wire`), never through raw offsets.

use std::fmt;
use std::str::FromStr;

use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol};

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// True for broadcast and multicast (group bit set).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// True for ff:ff:ff:ff:ff:ff.
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }

    /// True for 00:00:00:00:00:00.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// A MAC usable as an endpoint's source address: unicast and not all-zero.
    pub fn is_valid_unicast(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// The default endpoint MAC for an address: `02:42:` and the four address bytes (Docker's
    /// scheme; locally administered, unicast).
    pub fn from_ipv4(ip: std::net::Ipv4Addr) -> MacAddr {
        let o = ip.octets();
        MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }

    /// The gateway MAC of a network: `02:76:73` and three bytes of a hash of the network name, so
    /// every host derives the same gateway MAC for the same network (anycast gateway).
    pub fn gateway_for(network: &str) -> MacAddr {
        // FNV-1a, 32 bit: stable across builds and hosts.
        let mut h: u32 = 0x811c_9dc5;
        for b in network.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        let b = h.to_be_bytes();
        MacAddr([0x02, 0x76, 0x73, b[1], b[2], b[3]])
    }
}

impl From<EthernetAddress> for MacAddr {
    fn from(a: EthernetAddress) -> Self {
        MacAddr(a.0)
    }
}

impl From<MacAddr> for EthernetAddress {
    fn from(a: MacAddr) -> Self {
        EthernetAddress(a.0)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The MAC text was not six `:`- or `-`-separated hex bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed MAC address '{0}' (expected six hex bytes like 02:42:ac:14:00:02)")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(crate::error::shown(s));
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let p = parts.next().ok_or_else(err)?;
            if p.is_empty() || p.len() > 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

/// The virtio-net header (`struct virtio_net_hdr_v1`, 12 bytes, little-endian as negotiated by
/// `TUNSETVNETHDRSZ` on a little-endian host) that precedes each frame read from or written to a
/// TAP opened with `IFF_VNET_HDR`. It carries checksum and segmentation offload metadata; the
/// switch keeps it with the frame end to end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM` (1) and `VIRTIO_NET_HDR_F_DATA_VALID` (2).
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_NONE` (0), `_TCPV4` (1), `_UDP` (3), `_TCPV6` (4), `_UDP_L4` (5),
    /// with `_ECN` (0x80) or-ed in.
    pub gso_type: u8,
    /// Length of the headers to replicate in each segment.
    pub hdr_len: u16,
    /// Segment payload size for GSO frames.
    pub gso_size: u16,
    /// Where checksumming starts, from the start of the Ethernet frame.
    pub csum_start: u16,
    /// Where the checksum is stored, from `csum_start`.
    pub csum_offset: u16,
    /// Mergeable receive buffers (always 1 on TAP reads, ignored on writes).
    pub num_buffers: u16,
}

impl VirtioNetHdr {
    /// Size of the header on the wire.
    pub const LEN: usize = 12;
    /// The checksum of this frame is partial and must be completed (`csum_start`/`csum_offset`).
    pub const F_NEEDS_CSUM: u8 = 1;

    /// Read the header from the first [`Self::LEN`] bytes; `None` if `b` is shorter.
    pub fn read(b: &[u8]) -> Option<VirtioNetHdr> {
        let b: &[u8; Self::LEN] = b.get(..Self::LEN)?.try_into().ok()?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VirtioNetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: u16_at(10),
        })
    }

    /// Write the header into the first [`Self::LEN`] bytes of `b`; `b` must be long enough.
    pub fn write(&self, b: &mut [u8; Self::LEN]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
    }
}

/// The one parse of a frame's Ethernet header, done once on receive and passed down the
/// pipeline. 802.1Q tags are not carried on endpoint ports and are treated as a plain EtherType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthFrame {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// EtherType of the payload.
    pub ethertype: EthernetProtocol,
}

impl EthFrame {
    /// Length of an untagged Ethernet header.
    pub const HEADER_LEN: usize = 14;

    /// Parse the Ethernet header; `None` for a runt (shorter than a header).
    pub fn parse(frame: &[u8]) -> Option<EthFrame> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        Some(EthFrame {
            dst: eth.dst_addr().into(),
            src: eth.src_addr().into(),
            ethertype: eth.ethertype(),
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn mac_parse_and_display() {
        let m: MacAddr = "02:42:AC:14:00:02".parse().unwrap();
        assert_eq!(m.to_string(), "02:42:ac:14:00:02");
        assert_eq!("02-42-ac-14-00-02".parse::<MacAddr>().unwrap(), m);
        for bad in [
            "",
            "zz:zz",
            "02:42:ac:14:00",
            "02:42:ac:14:00:02:03",
            "002:42:ac:14:00:02",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mac_kinds() {
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::BROADCAST.is_valid_unicast());
        assert!(!MacAddr([0; 6]).is_valid_unicast());
        let m = MacAddr::from_ipv4("172.20.0.2".parse().unwrap());
        assert_eq!(m.to_string(), "02:42:ac:14:00:02");
        assert!(m.is_valid_unicast());
        let g = MacAddr::gateway_for("front");
        assert!(g.is_valid_unicast());
        assert_eq!(g, MacAddr::gateway_for("front"));
        assert_ne!(g, MacAddr::gateway_for("back"));
    }

    #[test]
    fn vnet_roundtrip() {
        let h = VirtioNetHdr {
            flags: 1,
            gso_type: 1,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 1,
        };
        let mut b = [0u8; VirtioNetHdr::LEN];
        h.write(&mut b);
        assert_eq!(VirtioNetHdr::read(&b), Some(h));
        assert_eq!(VirtioNetHdr::read(&b[..11]), None);
    }

    #[test]
    fn eth_parse_rejects_runts() {
        assert!(EthFrame::parse(&[0u8; 13]).is_none());
        let mut f = [0u8; 14];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        let e = EthFrame::parse(&f).unwrap();
        assert!(e.dst.is_broadcast());
        assert_eq!(e.ethertype, EthernetProtocol::Arp);
    }
}
