//! ARP and the gateway's local answers: a frame the switch might answer itself (an ARP request
//! for the gateway or a known endpoint, an ICMP echo request to the gateway) is parsed and
//! rewritten in place into the answer, which must itself parse.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use switch::local::{arp_reply_in_place, icmp_echo_reply_in_place, parse_arp};
use switch::wire::MacAddr;

const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const GW_MAC: MacAddr = MacAddr([0x02, 0x42, 0, 0, 0, 1]);

fuzz_target!(|data: &[u8]| {
    let mut frame = data.to_vec();
    if let Some(arp) = parse_arp(&frame) {
        if arp.is_request {
            arp_reply_in_place(&mut frame, &arp, GW_MAC);
            let reply = parse_arp(&frame).expect("an ARP reply the switch wrote must parse");
            assert!(!reply.is_request);
            assert_eq!((reply.sender_mac, reply.sender_ip), (GW_MAC, arp.target_ip));
            assert_eq!(reply.target_ip, arp.sender_ip);
        }
    }
    let mut frame = data.to_vec();
    if let Ok(len) = icmp_echo_reply_in_place(&mut frame, GW, GW_MAC) {
        assert!(len <= frame.len());
        let ip = &frame[14..len];
        let info = nat::packet::parse(ip).expect("an echo reply the switch wrote must parse");
        assert_eq!(info.tuple.src, GW);
        assert_eq!(nat::packet::checksum(&ip[info.l4..]), 0, "ICMP checksum");
    }
});
