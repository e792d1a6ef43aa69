//! Local delivery: what the switch answers itself instead of forwarding, as pure functions that
//! turn a received frame into the reply in place (no allocation), unit-tested without devices.
//! ARP answers (for the gateway, and for known endpoints: ARP suppression) are
//! [`wire::arp::reply_in_place`]; here is the gateway's answer to ICMP echo requests, of both
//! families.

use std::net::{Ipv4Addr, Ipv6Addr};

use wire::ethernet::{self, EthFrame};
use wire::ipv4::{self, Ipv4Packet};
use wire::l4::{icmp_type, IcmpHeader};
use wire::{MacAddr, Parsed, L4};

/// Why an IPv4 frame to the gateway was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAnswered {
    /// Truncated or inconsistent headers.
    Malformed,
    /// A valid packet the gateway does not answer (not for the gateway, not an echo request, a
    /// fragment): the caller routes or drops it.
    NotForUs,
}

/// If `frame` (parsed once as `p`) is an ICMP echo request to `gateway_ip`, rewrite it into the
/// echo reply from the gateway (`gateway_mac`) back to the sender, and return the new frame
/// length (trailing Ethernet padding is cut).
pub fn icmp_echo_reply_in_place(
    frame: &mut [u8],
    p: &Parsed,
    gateway_ip: Ipv4Addr,
    gateway_mac: MacAddr,
) -> Result<usize, NotAnswered> {
    let Some(ip) = p.ip4() else {
        return Err(NotAnswered::Malformed);
    };
    let echo_request = matches!(
        ip.l4,
        L4::Icmp {
            msg_type: icmp_type::ECHO_REQUEST,
            code: 0,
            ..
        }
    );
    if ip.dst != gateway_ip || ip.proto != ipv4::proto::ICMP || ip.l4 == L4::Fragment {
        return Err(NotAnswered::NotForUs);
    }
    if ip.l4 == L4::Malformed {
        return Err(NotAnswered::Malformed);
    }
    let mut pkt =
        Ipv4Packet::new_checked(EthFrame::payload_mut(frame)).ok_or(NotAnswered::Malformed)?;
    if !pkt.header_checksum_ok() {
        return Err(NotAnswered::Malformed);
    }
    if !echo_request {
        return Err(NotAnswered::NotForUs);
    }
    let icmp = IcmpHeader::new_checked(pkt.payload()).ok_or(NotAnswered::Malformed)?;
    if !icmp.checksum_ok() {
        return Err(NotAnswered::Malformed);
    }
    pkt.set_src(gateway_ip);
    pkt.set_dst(ip.src);
    pkt.set_ttl(64);
    pkt.fill_checksum();
    let new_len = EthFrame::HEADER_LEN + pkt.len();
    let mut icmp = IcmpHeader::new_checked(pkt.payload_mut()).ok_or(NotAnswered::Malformed)?;
    icmp.set_msg_type(icmp_type::ECHO_REPLY);
    icmp.fill_checksum();
    ethernet::set_addrs(frame, gateway_mac, p.eth.src);
    Ok(new_len)
}

/// If `frame` (parsed once as `p`) is an ICMPv6 echo request to one of the gateway's addresses
/// (`is_gateway`), rewrite it into the echo reply from that address and `gateway_mac` back to
/// the sender (hop limit 64), and return the new frame length (trailing padding cut).
pub fn icmp6_echo_reply_in_place(
    frame: &mut [u8],
    p: &Parsed,
    is_gateway: impl Fn(Ipv6Addr) -> bool,
    gateway_mac: MacAddr,
) -> Result<usize, NotAnswered> {
    use wire::icmpv6::msg_type;
    use wire::ipv6::{next_header, Ipv6Packet};
    let Some(ip) = p.ip6() else {
        return Err(NotAnswered::Malformed);
    };
    if !is_gateway(ip.dst) || ip.proto != next_header::ICMPV6 || ip.l4 == L4::Fragment {
        return Err(NotAnswered::NotForUs);
    }
    match ip.l4 {
        L4::Malformed => return Err(NotAnswered::Malformed),
        L4::Icmp {
            msg_type: msg_type::ECHO_REQUEST,
            code: 0,
            ..
        } => {}
        _ => return Err(NotAnswered::NotForUs),
    }
    let end = EthFrame::HEADER_LEN + ip.total_len;
    let at = EthFrame::HEADER_LEN + ip.header_len;
    let icmp = frame.get(at..end).ok_or(NotAnswered::Malformed)?;
    if wire::checksum::checksum_pseudo6(ip.src, ip.dst, next_header::ICMPV6, icmp) != 0 {
        return Err(NotAnswered::Malformed);
    }
    let mut pkt =
        Ipv6Packet::new_checked(EthFrame::payload_mut(frame)).ok_or(NotAnswered::Malformed)?;
    pkt.set_src(ip.dst);
    pkt.set_dst(ip.src);
    pkt.set_hop_limit(64);
    // Type 128 -> 129; the pseudo-header holds the same two addresses: one word changes.
    let icmp = &mut frame[at..end];
    icmp[0] = msg_type::ECHO_REPLY;
    let old = u16::from_be_bytes([icmp[2], icmp[3]]);
    let sum = wire::checksum::update16(
        old,
        u16::from(msg_type::ECHO_REQUEST) << 8,
        u16::from(msg_type::ECHO_REPLY) << 8,
    );
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    ethernet::set_addrs(frame, gateway_mac, p.eth.src);
    Ok(end)
}

/// [`icmp_echo_reply_in_place`] for a frame not parsed yet (tests, fuzzing).
pub fn icmp_echo_reply(
    frame: &mut [u8],
    gateway_ip: Ipv4Addr,
    gateway_mac: MacAddr,
) -> Result<usize, NotAnswered> {
    let p = Parsed::parse(frame).ok_or(NotAnswered::Malformed)?;
    icmp_echo_reply_in_place(frame, &p, gateway_ip, gateway_mac)
}

#[cfg(test)]
mod test {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet, Icmpv4Repr,
        IpProtocol, Ipv4Packet, Ipv4Repr,
    };

    use super::*;

    const A_MAC: MacAddr = MacAddr([0x02, 0x42, 10, 0, 0, 2]);
    const GW_MAC: MacAddr = MacAddr([0x02, 0x76, 0x73, 1, 2, 3]);
    const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

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
            src_addr: EthernetAddress(A_MAC.0),
            dst_addr: EthernetAddress(GW_MAC.0),
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
    fn echo_request_to_gateway_is_answered() {
        let mut f = echo_request(GW_IP, b"hello vswitch");
        f.extend_from_slice(&[0; 4]); // trailing padding gets cut
        let n = icmp_echo_reply(&mut f, GW_IP, GW_MAC).unwrap();
        assert_eq!(n, f.len() - 4);
        let eth = EthernetFrame::new_checked(&f[..n]).unwrap();
        assert_eq!(MacAddr(eth.dst_addr().0), A_MAC);
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
            icmp_echo_reply(&mut f, GW_IP, GW_MAC),
            Err(NotAnswered::NotForUs)
        );
        let mut f = echo_request(GW_IP, b"x");
        let last = f.len() - 1;
        f[last] ^= 0xff; // bad ICMP checksum
        assert_eq!(
            icmp_echo_reply(&mut f, GW_IP, GW_MAC),
            Err(NotAnswered::Malformed)
        );
        let mut f = echo_request(GW_IP, b"x");
        assert_eq!(
            icmp_echo_reply(&mut f[..30], GW_IP, GW_MAC),
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
            icmp_echo_reply(&mut crash.to_vec(), GW_IP, GW_MAC),
            Err(NotAnswered::Malformed)
        );
    }
}
