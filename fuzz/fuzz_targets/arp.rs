//! ARP and the gateway's local answers: a frame the switch might answer itself (an ARP request
//! for the gateway or a known endpoint, an ICMP echo request to the gateway) is parsed and
//! rewritten in place into the answer, which must itself parse.
//!
//! Oracles: an ARP reply parses as a reply from the answering MAC for the address asked about,
//! to the requester (ARP and Ethernet addresses), the frame keeps its length; an echo reply
//! parses, goes from the gateway (IP and MAC) back to the requester (IP and MAC), is an echo
//! reply with the request's identifier, sequence and data, and its IPv4 and ICMP checksums
//! verify (checked with the target's own arithmetic).
#![no_main]

mod oracle;

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use switch::local::icmp_echo_reply;
use switch::wire::arp::{reply_in_place as arp_reply_in_place, Arp};
use switch::wire::MacAddr;

const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const GW_MAC: MacAddr = MacAddr([0x02, 0x42, 0, 0, 0, 1]);

fuzz_target!(|data: &[u8]| {
    let mut frame = data.to_vec();
    if let Some(arp) = Arp::parse(&frame) {
        if arp.is_request {
            arp_reply_in_place(&mut frame, &arp, GW_MAC);
            let reply = Arp::parse(&frame).expect("an ARP reply the switch wrote must parse");
            assert!(!reply.is_request);
            assert_eq!((reply.sender_mac, reply.sender_ip), (GW_MAC, arp.target_ip));
            assert_eq!(
                (reply.target_mac, reply.target_ip),
                (arp.sender_mac, arp.sender_ip)
            );
            assert_eq!(frame.len(), data.len());
            assert_eq!(
                frame[..6],
                arp.sender_mac.0,
                "Ethernet destination: the requester"
            );
            assert_eq!(frame[6..12], GW_MAC.0, "Ethernet source: the answer");
            assert_eq!(
                frame[32..38],
                arp.sender_mac.0,
                "ARP target MAC: the requester"
            );
        }
    }
    let mut frame = data.to_vec();
    if let Ok(len) = icmp_echo_reply(&mut frame, GW, GW_MAC) {
        assert!(len <= frame.len());
        let ip = &frame[14..len];
        let info = nat::packet::parse(ip).expect("an echo reply the switch wrote must parse");
        assert_eq!(info.tuple.src, GW);
        assert_eq!(
            info.tuple.dst,
            oracle::addr(data, 14 + 12),
            "reply to the requester"
        );
        assert_eq!(
            frame[..6],
            data[6..12],
            "Ethernet destination: the requester"
        );
        assert_eq!(frame[6..12], GW_MAC.0, "Ethernet source: the gateway");
        assert!(oracle::ipv4_header_ok(ip), "IPv4 header checksum");
        let (l4, rq) = (&ip[info.l4..], &data[14 + info.l4..len]);
        assert_eq!((l4[0], l4[1]), (0, 0), "an echo reply");
        assert_eq!(
            l4[4..],
            rq[4..],
            "identifier, sequence and data of the request"
        );
        assert!(oracle::verifies(l4), "ICMP checksum");
    }
});
