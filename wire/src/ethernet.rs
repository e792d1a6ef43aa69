//! Ethernet: the MAC address type used across the project, EtherTypes, and [`EthFrame`], the
//! Ethernet header as the frame's one parse ([`crate::Parsed`]) carries it.

use std::fmt;
use std::str::FromStr;

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
        let err = || MacParseError(crate::shown(s));
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

/// An EtherType (the protocol of an Ethernet frame's payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4.
    pub const IPV4: EtherType = EtherType(0x0800);
    /// ARP.
    pub const ARP: EtherType = EtherType(0x0806);
    /// An 802.1Q VLAN tag.
    pub const VLAN: EtherType = EtherType(0x8100);
    /// IPv6.
    pub const IPV6: EtherType = EtherType(0x86dd);
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
    pub ethertype: EtherType,
}

impl EthFrame {
    /// Length of an untagged Ethernet header.
    pub const HEADER_LEN: usize = 14;
    /// Length of an 802.1Q tag.
    pub const VLAN_TAG_LEN: usize = 4;

    /// Parse the Ethernet header; `None` for a runt (shorter than a header).
    #[inline]
    pub fn parse(frame: &[u8]) -> Option<EthFrame> {
        let h: &[u8; Self::HEADER_LEN] = frame.get(..Self::HEADER_LEN)?.try_into().ok()?;
        let mac =
            |at: usize| MacAddr([h[at], h[at + 1], h[at + 2], h[at + 3], h[at + 4], h[at + 5]]);
        Some(EthFrame {
            dst: mac(0),
            src: mac(6),
            ethertype: EtherType(u16::from_be_bytes([h[12], h[13]])),
        })
    }

    /// Write this header at the start of `frame`, which holds at least [`Self::HEADER_LEN`]
    /// bytes.
    pub fn write(&self, frame: &mut [u8; Self::HEADER_LEN]) {
        frame[..6].copy_from_slice(&self.dst.0);
        frame[6..12].copy_from_slice(&self.src.0);
        frame[12..14].copy_from_slice(&self.ethertype.0.to_be_bytes());
    }

    /// The frame's payload: what follows the (untagged) header.
    pub fn payload(frame: &[u8]) -> &[u8] {
        frame.get(Self::HEADER_LEN..).unwrap_or_default()
    }

    /// The frame's payload, mutable.
    pub fn payload_mut(frame: &mut [u8]) -> &mut [u8] {
        frame.get_mut(Self::HEADER_LEN..).unwrap_or_default()
    }
}

/// Set the source and destination MAC of the frame in `frame` (a no-op on a runt).
#[inline]
pub fn set_addrs(frame: &mut [u8], src: MacAddr, dst: MacAddr) {
    if let Some(h) = frame.get_mut(..12) {
        h[..6].copy_from_slice(&dst.0);
        h[6..12].copy_from_slice(&src.0);
    }
}

/// Length of the Ethernet header of `frame` including one 802.1Q tag if it has one.
pub fn tagged_header_len(frame: &[u8]) -> usize {
    match EthFrame::parse(frame) {
        Some(e) if e.ethertype == EtherType::VLAN => EthFrame::HEADER_LEN + EthFrame::VLAN_TAG_LEN,
        _ => EthFrame::HEADER_LEN,
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
        let e = "02:42\n".parse::<MacAddr>().unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
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
    fn eth_parse_rejects_runts_and_round_trips() {
        assert!(EthFrame::parse(&[0u8; 13]).is_none());
        let mut f = [0u8; 14];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        let e = EthFrame::parse(&f).unwrap();
        assert!(e.dst.is_broadcast());
        assert_eq!(e.ethertype, EtherType::ARP);
        let mut g = [0u8; 14];
        e.write(&mut g);
        assert_eq!(f, g);
        set_addrs(&mut g, MacAddr([2; 6]), MacAddr([4; 6]));
        let e = EthFrame::parse(&g).unwrap();
        assert_eq!((e.src, e.dst), (MacAddr([2; 6]), MacAddr([4; 6])));
        assert_eq!(tagged_header_len(&g), 14);
        g[12..14].copy_from_slice(&[0x81, 0]);
        assert_eq!(tagged_header_len(&g), 18);
    }
}
