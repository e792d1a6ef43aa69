//! Local delivery: what the switch answers itself instead of forwarding. Pure functions that turn
//! a received frame into the reply in place (no allocation), so they are unit-tested without
//! devices:
//! - ARP requests for the gateway address, answered with the gateway MAC;
//! - ARP requests for endpoints the switch knows (ARP suppression), answered with their MAC;
//! - ICMP echo requests to the gateway address.

use std::net::Ipv4Addr;

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, Icmpv4Message, Icmpv4Packet,
    IpProtocol, Ipv4Packet,
};

use crate::wire::{EthFrame, MacAddr};

/// An ARP packet (Ethernet/IPv4) as the switch sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// Request or reply (other operations are `None` and dropped as malformed).
    pub is_request: bool,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

/// Parse the ARP payload of `frame`; `None` when it is truncated or not Ethernet/IPv4 ARP.
pub fn parse_arp(frame: &[u8]) -> Option<Arp> {
    let pkt = ArpPacket::new_checked(frame.get(EthFrame::HEADER_LEN..)?).ok()?;
    match ArpRepr::parse(&pkt).ok()? {
        ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } => {
            let is_request = match operation {
                ArpOperation::Request => true,
                ArpOperation::Reply => false,
                _ => return None,
            };
            Some(Arp {
                is_request,
                sender_mac: source_hardware_addr.into(),
                sender_ip: source_protocol_addr,
                target_ip: target_protocol_addr,
            })
        }
        _ => None,
    }
}

/// Rewrite the ARP request in `frame` into the reply "`req.target_ip` is at `answer`", addressed
/// to the requester. The frame keeps its length (padding stays).
pub fn arp_reply_in_place(frame: &mut [u8], req: &Arp, answer: MacAddr) {
    let reply = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: answer.into(),
        source_protocol_addr: req.target_ip,
        target_hardware_addr: req.sender_mac.into(),
        target_protocol_addr: req.sender_ip,
    };
    {
        let mut eth = EthernetFrame::new_unchecked(&mut *frame);
        eth.set_dst_addr(req.sender_mac.into());
        eth.set_src_addr(answer.into());
    }
    // `parse_arp` succeeded on this frame, so the ARP area is long enough for the same repr.
    let mut pkt = ArpPacket::new_unchecked(&mut frame[EthFrame::HEADER_LEN..]);
    reply.emit(&mut pkt);
}

/// Length of an Ethernet ARP frame without padding.
pub const ARP_FRAME_LEN: usize = 42;

/// Build the broadcast ARP request "who has `target`? tell `sender_ip` (`sender_mac`)" into
/// `frame`.
pub fn arp_request(
    frame: &mut [u8; ARP_FRAME_LEN],
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target: Ipv4Addr,
) {
    let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.set_dst_addr(EthernetAddress::BROADCAST);
    eth.set_src_addr(sender_mac.into());
    eth.set_ethertype(smoltcp::wire::EthernetProtocol::Arp);
    let req = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: sender_mac.into(),
        source_protocol_addr: sender_ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    req.emit(&mut ArpPacket::new_unchecked(
        &mut frame[EthFrame::HEADER_LEN..],
    ));
}

/// Why an IPv4 frame to the gateway was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAnswered {
    /// Truncated or inconsistent headers.
    Malformed,
    /// A valid packet the gateway does not answer (not for the gateway, not an echo request, a
    /// fragment): the caller routes or drops it.
    NotForUs,
}

/// If `frame` is an ICMP echo request to `gateway_ip`, rewrite it into the echo reply from the
/// gateway (`gateway_mac`) back to the sender, and return the new frame length (trailing Ethernet
/// padding is cut).
pub fn icmp_echo_reply_in_place(
    frame: &mut [u8],
    gateway_ip: Ipv4Addr,
    gateway_mac: MacAddr,
) -> Result<usize, NotAnswered> {
    let (l3_len, src, dst) = {
        let ip = Ipv4Packet::new_checked(
            frame
                .get(EthFrame::HEADER_LEN..)
                .ok_or(NotAnswered::Malformed)?,
        )
        .map_err(|_| NotAnswered::Malformed)?;
        // smoltcp's check accepts a header length below 20 bytes (IHL < 5): refuse it here, or
        // the "reply" would be built from the addresses as if they were ICMP (found by fuzzing).
        if ip.version() != 4 || ip.header_len() < 20 || !ip.verify_checksum() {
            return Err(NotAnswered::Malformed);
        }
        if ip.dst_addr() != gateway_ip
            || ip.next_header() != IpProtocol::Icmp
            || ip.more_frags()
            || ip.frag_offset() != 0
        {
            return Err(NotAnswered::NotForUs);
        }
        let icmp = Icmpv4Packet::new_checked(ip.payload()).map_err(|_| NotAnswered::Malformed)?;
        if icmp.msg_type() != Icmpv4Message::EchoRequest || icmp.msg_code() != 0 {
            return Err(NotAnswered::NotForUs);
        }
        if !icmp.verify_checksum() {
            return Err(NotAnswered::Malformed);
        }
        (usize::from(ip.total_len()), ip.src_addr(), ip.dst_addr())
    };
    let new_len = EthFrame::HEADER_LEN + l3_len;
    let frame = &mut frame[..new_len];
    {
        let mut eth = EthernetFrame::new_unchecked(&mut *frame);
        let requester: EthernetAddress = eth.src_addr();
        eth.set_dst_addr(requester);
        eth.set_src_addr(gateway_mac.into());
    }
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[EthFrame::HEADER_LEN..]);
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    ip.set_hop_limit(64);
    ip.fill_checksum();
    let mut icmp = Icmpv4Packet::new_unchecked(ip.payload_mut());
    icmp.set_msg_type(Icmpv4Message::EchoReply);
    icmp.fill_checksum();
    Ok(new_len)
}

#[cfg(test)]
mod test {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{EthernetProtocol, EthernetRepr, Icmpv4Repr, Ipv4Repr};

    use super::*;

    const A_MAC: MacAddr = MacAddr([0x02, 0x42, 10, 0, 0, 2]);
    const GW_MAC: MacAddr = MacAddr([0x02, 0x76, 0x73, 1, 2, 3]);
    const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn request_frame(target: Ipv4Addr) -> Vec<u8> {
        let repr = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: A_MAC.into(),
            source_protocol_addr: A_IP,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        };
        let mut buf = vec![0u8; 60]; // padded to the Ethernet minimum
        let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
        EthernetRepr {
            src_addr: A_MAC.into(),
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        }
        .emit(&mut eth);
        repr.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
        buf
    }

    fn echo_request(dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let icmp = Icmpv4Repr::EchoRequest {
            ident: 0x1234,
            seq_no: 7,
            data: payload,
        };
        let ip = Ipv4Repr {
            src_addr: A_IP,
            dst_addr: dst,
            next_header: IpProtocol::Icmp,
            payload_len: icmp.buffer_len(),
            hop_limit: 64,
        };
        let mut buf = vec![0u8; 14 + ip.buffer_len() + icmp.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
        EthernetRepr {
            src_addr: A_MAC.into(),
            dst_addr: GW_MAC.into(),
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut eth);
        let caps = ChecksumCapabilities::default();
        let mut ipp = Ipv4Packet::new_unchecked(eth.payload_mut());
        ip.emit(&mut ipp, &caps);
        icmp.emit(&mut Icmpv4Packet::new_unchecked(ipp.payload_mut()), &caps);
        buf
    }

    #[test]
    fn arp_request_parses_and_becomes_reply() {
        let mut f = request_frame(GW_IP);
        let req = parse_arp(&f).unwrap();
        assert_eq!(
            req,
            Arp {
                is_request: true,
                sender_mac: A_MAC,
                sender_ip: A_IP,
                target_ip: GW_IP
            }
        );
        arp_reply_in_place(&mut f, &req, GW_MAC);
        let eth = EthFrame::parse(&f).unwrap();
        assert_eq!((eth.dst, eth.src), (A_MAC, GW_MAC));
        let rep = parse_arp(&f).unwrap();
        assert_eq!(
            rep,
            Arp {
                is_request: false,
                sender_mac: GW_MAC,
                sender_ip: GW_IP,
                target_ip: A_IP
            }
        );
    }

    #[test]
    fn arp_request_builds_and_parses_back() {
        let mut f = [0u8; ARP_FRAME_LEN];
        super::arp_request(&mut f, GW_MAC, GW_IP, A_IP);
        let a = parse_arp(&f).unwrap();
        assert_eq!(
            a,
            Arp {
                is_request: true,
                sender_mac: GW_MAC,
                sender_ip: GW_IP,
                target_ip: A_IP
            }
        );
        assert!(EthFrame::parse(&f).unwrap().dst.is_broadcast());
    }

    #[test]
    fn arp_truncated_or_foreign_is_none() {
        let f = request_frame(GW_IP);
        assert!(parse_arp(&f[..14 + 27]).is_none());
        assert!(parse_arp(&f[..10]).is_none());
        let mut g = f.clone();
        g[14 + 7] = 9; // unknown operation
        assert!(parse_arp(&g).is_none());
    }

    #[test]
    fn echo_request_to_gateway_is_answered() {
        let mut f = echo_request(GW_IP, b"hello vswitch");
        f.extend_from_slice(&[0; 4]); // trailing padding gets cut
        let n = icmp_echo_reply_in_place(&mut f, GW_IP, GW_MAC).unwrap();
        assert_eq!(n, f.len() - 4);
        let eth = EthernetFrame::new_checked(&f[..n]).unwrap();
        assert_eq!(MacAddr::from(eth.dst_addr()), A_MAC);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr()), (GW_IP, A_IP));
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        let repr = Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap();
        assert_eq!(
            repr,
            Icmpv4Repr::EchoReply {
                ident: 0x1234,
                seq_no: 7,
                data: b"hello vswitch"
            }
        );
    }

    #[test]
    fn echo_to_other_host_or_broken_is_refused() {
        let mut f = echo_request(Ipv4Addr::new(10, 0, 0, 9), b"x");
        assert_eq!(
            icmp_echo_reply_in_place(&mut f, GW_IP, GW_MAC),
            Err(NotAnswered::NotForUs)
        );
        let mut f = echo_request(GW_IP, b"x");
        let last = f.len() - 1;
        f[last] ^= 0xff; // bad ICMP checksum
        assert_eq!(
            icmp_echo_reply_in_place(&mut f, GW_IP, GW_MAC),
            Err(NotAnswered::Malformed)
        );
        let mut f = echo_request(GW_IP, b"x");
        assert_eq!(
            icmp_echo_reply_in_place(&mut f[..30], GW_IP, GW_MAC),
            Err(NotAnswered::Malformed)
        );
        // The fuzzer's find: a 12-byte IP header (IHL 3) with a matching header checksum.
        let crash: &[u8] = &[
            0x02, 0x41, 0xff, 0xff, 0xf9, 0x01, 0x02, 0x42, 0x0a, 0x00, 0x00, 0x02, 0x08, 0x00,
            0x43, 0x00, 0x00, 0x21, 0x00, 0x01, 0x40, 0x00, 0x40, 0x01, 0x26, 0xbe, 0x08, 0x00,
            0x00, 0x02, 0x0a, 0x00, 0x00, 0x01, 0x08, 0x00, 0x02, 0x08, 0x00, 0x45, 0x00, 0x00,
            0x34, 0x6e, 0x06, 0x6e, 0x67,
        ];
        assert_eq!(
            icmp_echo_reply_in_place(&mut crash.to_vec(), GW_IP, GW_MAC),
            Err(NotAnswered::Malformed)
        );
    }
}
