//! ARP for IPv4 over Ethernet (RFC 826): parse, turn a request into its reply in place, build a
//! request.

use std::net::Ipv4Addr;

use crate::be16;
use crate::ethernet::{EthFrame, EtherType, MacAddr};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// Length of an Ethernet ARP frame without padding.
pub const FRAME_LEN: usize = EthFrame::HEADER_LEN + PACKET_LEN;

const OP_REQUEST: u16 = 1;
const OP_REPLY: u16 = 2;

/// An ARP packet (Ethernet/IPv4) as the switch sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// Request or reply (other operations do not parse).
    pub is_request: bool,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// Parse the ARP payload of the Ethernet `frame`; `None` when it is truncated, not
    /// Ethernet/IPv4 ARP, or neither a request nor a reply.
    #[inline]
    pub fn parse(frame: &[u8]) -> Option<Arp> {
        let p = frame.get(EthFrame::HEADER_LEN..EthFrame::HEADER_LEN + PACKET_LEN)?;
        if be16(p, 0) != 1 || be16(p, 2) != EtherType::IPV4.0 || p[4] != 6 || p[5] != 4 {
            return None;
        }
        let is_request = match be16(p, 6) {
            OP_REQUEST => true,
            OP_REPLY => false,
            _ => return None,
        };
        let mac =
            |at: usize| MacAddr([p[at], p[at + 1], p[at + 2], p[at + 3], p[at + 4], p[at + 5]]);
        let ip = |at: usize| Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]);
        Some(Arp {
            is_request,
            sender_mac: mac(8),
            sender_ip: ip(14),
            target_mac: mac(18),
            target_ip: ip(24),
        })
    }

    /// Write this ARP message with its Ethernet header (to `eth_dst`) into the first
    /// [`FRAME_LEN`] bytes of `frame`.
    fn write(&self, frame: &mut [u8; FRAME_LEN], eth_dst: MacAddr) {
        let h: &mut [u8; EthFrame::HEADER_LEN] = (&mut frame[..EthFrame::HEADER_LEN])
            .try_into()
            .expect("14 bytes");
        EthFrame {
            dst: eth_dst,
            src: self.sender_mac,
            ethertype: EtherType::ARP,
        }
        .write(h);
        let p = &mut frame[EthFrame::HEADER_LEN..];
        p[..6].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
        let op = if self.is_request {
            OP_REQUEST
        } else {
            OP_REPLY
        };
        p[6..8].copy_from_slice(&op.to_be_bytes());
        p[8..14].copy_from_slice(&self.sender_mac.0);
        p[14..18].copy_from_slice(&self.sender_ip.octets());
        p[18..24].copy_from_slice(&self.target_mac.0);
        p[24..28].copy_from_slice(&self.target_ip.octets());
    }
}

/// Rewrite the ARP request `req` parsed from `frame` into the reply "`req.target_ip` is at
/// `answer`", addressed to the requester. The frame keeps its length (padding stays); a frame
/// shorter than an ARP frame is left as it is.
pub fn reply_in_place(frame: &mut [u8], req: &Arp, answer: MacAddr) {
    let Some(f) = frame.get_mut(..FRAME_LEN) else {
        return;
    };
    let f: &mut [u8; FRAME_LEN] = f.try_into().expect("sized above");
    Arp {
        is_request: false,
        sender_mac: answer,
        sender_ip: req.target_ip,
        target_mac: req.sender_mac,
        target_ip: req.sender_ip,
    }
    .write(f, req.sender_mac);
}

/// Build the broadcast ARP request "who has `target`? tell `sender_ip` (`sender_mac`)" into
/// `frame`.
pub fn request(
    frame: &mut [u8; FRAME_LEN],
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target: Ipv4Addr,
) {
    Arp {
        is_request: true,
        sender_mac,
        sender_ip,
        target_mac: MacAddr::default(),
        target_ip: target,
    }
    .write(frame, MacAddr::BROADCAST);
}

#[cfg(test)]
mod test {
    use super::*;
    use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr};

    const A_MAC: MacAddr = MacAddr([0x02, 0x42, 10, 0, 0, 2]);
    const GW_MAC: MacAddr = MacAddr([0x02, 0x76, 0x73, 1, 2, 3]);
    const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    #[test]
    fn request_is_what_an_independent_parser_reads() {
        let mut f = [0u8; FRAME_LEN];
        request(&mut f, GW_MAC, GW_IP, A_IP);
        let p = ArpPacket::new_checked(&f[14..]).unwrap();
        match ArpRepr::parse(&p).unwrap() {
            ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr,
                source_protocol_addr,
                target_protocol_addr,
                ..
            } => {
                assert_eq!(operation, ArpOperation::Request);
                assert_eq!(source_hardware_addr.0, GW_MAC.0);
                assert_eq!((source_protocol_addr, target_protocol_addr), (GW_IP, A_IP));
            }
            _ => panic!("not Ethernet/IPv4"),
        }
        let e = EthFrame::parse(&f).unwrap();
        assert!(e.dst.is_broadcast());
        assert_eq!(e.ethertype, EtherType::ARP);
    }

    #[test]
    fn reply_swaps_the_parties() {
        let mut f = [0u8; 60];
        let r: &mut [u8; FRAME_LEN] = (&mut f[..FRAME_LEN]).try_into().unwrap();
        request(r, A_MAC, A_IP, GW_IP);
        let req = Arp::parse(&f).unwrap();
        reply_in_place(&mut f, &req, GW_MAC);
        let rep = Arp::parse(&f).unwrap();
        assert!(!rep.is_request);
        assert_eq!((rep.sender_mac, rep.sender_ip), (GW_MAC, GW_IP));
        assert_eq!((rep.target_mac, rep.target_ip), (A_MAC, A_IP));
        let e = EthFrame::parse(&f).unwrap();
        assert_eq!((e.dst, e.src), (A_MAC, GW_MAC));
    }

    #[test]
    fn truncated_or_foreign_does_not_parse() {
        let mut f = [0u8; FRAME_LEN];
        request(&mut f, A_MAC, A_IP, GW_IP);
        assert!(Arp::parse(&f[..FRAME_LEN - 1]).is_none());
        let mut g = f;
        g[14 + 7] = 9; // unknown operation
        assert!(Arp::parse(&g).is_none());
        let mut g = f;
        g[14 + 4] = 8; // hardware address length
        assert!(Arp::parse(&g).is_none());
    }
}
