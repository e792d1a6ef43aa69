//! VXLAN decapsulation as the VTEP socket receives it: the receive decision the datapath uses
//! (`overlay::rx::accept`: header, VNI, peer), the inner frame and its classification,
//! remote-FDB learning, and the real encapsulation of the inner frame back (`write_outer`, then
//! `set_outer_dst` as head-end replication does for the next peer). (The whole receive path,
//! sockets' side included, is fuzzed by the datapath target through `Switch::inject_vxlan`.)
//!
//! Oracles: the receive decision accepts exactly a long enough packet with the I flag, a VNI
//! that names a network and a sender that is a peer, and refuses the rest with the reason that
//! applies first; the VNI is the header's 24 bits (I flag set); the outer headers `write_outer`
//! wrote parse back (checked here, byte by byte, not with the overlay's code): IPv4 with DF,
//! protocol UDP, the addresses given, total length and UDP length covering the inner frame, a
//! valid IPv4 header checksum (after `set_outer_dst` too), the ports given, the source port in
//! the dynamic range and a function of the inner frame, a VXLAN header with the I flag and the
//! VNI; decapsulating the result gives the VNI and exactly the original inner frame.
#![no_main]

mod oracle;

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use oracle::{addr, be16};
use overlay::rx::{accept, Refused};
use overlay::RemoteFdb;
use switch::wire::vxlan::{decap, set_outer_dst, write_outer, HEADER_LEN, OUTER_LEN};
use switch::wire::EthFrame;

/// Check the encapsulated packet `pkt` (`[outer IPv4 | UDP | VXLAN | inner]`).
fn check_outer(
    pkt: &[u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    vni: u32,
    inner: &[u8],
) {
    let ip = &pkt[..20];
    assert_eq!(ip[0], 0x45, "outer IPv4 version and header length");
    assert_eq!(
        usize::from(be16(ip, 2)),
        pkt.len(),
        "outer IPv4 total length"
    );
    assert_eq!(be16(ip, 6), 0x4000, "outer DF set, not a fragment");
    assert!(ip[8] > 0, "outer TTL");
    assert_eq!(ip[9], 17, "outer protocol");
    assert!(oracle::verifies(ip), "outer IPv4 header checksum");
    assert_eq!((addr(ip, 12), addr(ip, 16)), (src, dst), "outer addresses");
    let udp = &pkt[20..28];
    assert_eq!((be16(udp, 0), be16(udp, 2)), ports, "outer UDP ports");
    assert_eq!(
        usize::from(be16(udp, 4)),
        pkt.len() - 20,
        "outer UDP length"
    );
    // RFC 7348 section 5: the UDP checksum SHOULD be zero over IPv4; if not, it must verify.
    if be16(udp, 6) != 0 {
        assert_eq!(
            oracle::l4_ok(17, src, dst, &pkt[20..]),
            Some(true),
            "outer UDP checksum"
        );
    }
    let vx = &pkt[28..];
    assert_eq!(
        vx[..4],
        [0x08, 0, 0, 0],
        "VXLAN flags (I) and reserved bits"
    );
    assert_eq!(
        u32::from_be_bytes([0, vx[4], vx[5], vx[6]]),
        vni,
        "VNI written"
    );
    assert_eq!(vx[7], 0, "VXLAN reserved byte");
    assert_eq!(decap(vx), Ok(vni), "decapsulating the encapsulation");
    assert_eq!(&vx[HEADER_LEN..], inner, "decapsulated inner frame");
}

/// The one peer VTEP of the networks the receive decision knows.
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 240, 0, 2));

fuzz_target!(|data: &[u8]| {
    // The receive decision: VNIs not divisible by 3 are networks here; the sender is the peer
    // when the input's last byte is even.
    let from = if data.last().is_some_and(|b| b & 1 == 0) {
        PEER
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 240, 0, 9))
    };
    let want = if data.len() < HEADER_LEN + 14 || data[0] & 0x08 == 0 {
        Err(Refused::Malformed)
    } else {
        let vni = u32::from_be_bytes([0, data[4], data[5], data[6]]);
        if vni % 3 == 0 {
            Err(Refused::UnknownVni)
        } else if from != PEER {
            Err(Refused::UnknownPeer)
        } else {
            Ok(vni)
        }
    };
    let got = accept(
        data,
        from,
        |vni| (vni % 3 != 0).then_some(vni),
        |_| &[PEER][..],
    );
    if let Ok((_, inner)) = got {
        assert_eq!(inner, &data[HEADER_LEN..], "the inner frame accepted");
    }
    assert_eq!(got.map(|(vni, _)| vni), want, "the receive decision");
    let Ok(vni) = decap(data) else {
        assert!(
            data.len() < HEADER_LEN + 14 || data[0] & 0x08 == 0,
            "a VXLAN packet refused"
        );
        return;
    };
    assert!(data[0] & 0x08 != 0, "accepted without the I flag");
    assert_eq!(
        vni,
        u32::from_be_bytes([0, data[4], data[5], data[6]]),
        "the VNI read"
    );
    let inner = &data[HEADER_LEN..];
    let eth = EthFrame::parse(inner).expect("decap guarantees an Ethernet header");
    let fdb = RemoteFdb::new(1000, 4);
    // VTEPs of either family (the table numbers them).
    let vtep: IpAddr = if data.len() % 2 == 0 {
        Ipv4Addr::new(10, 240, 0, 2).into()
    } else {
        "2001:db8:240::2".parse().expect("address")
    };
    if eth.src.is_valid_unicast() {
        fdb.learn(eth.src.0, vtep, 1);
        assert_eq!(fdb.lookup(&eth.src.0, 2), Some(vtep));
    }
    let _ = switch::wire::arp::Arp::parse(inner);
    if let Some(ip) = inner.get(EthFrame::HEADER_LEN..) {
        let _ = nat::packet::parse(ip);
    }
    if OUTER_LEN + inner.len() > usize::from(u16::MAX) {
        return; // the datapath never encapsulates more than the overlay MTU
    }
    // Encapsulate the inner frame again with the real encapsulation; the reserved bits of the
    // input header (ignored on receipt) choose the outer addresses and destination port.
    let src = Ipv4Addr::new(10, 240, data[1], data[2]);
    let (dst, dst2) = (
        Ipv4Addr::new(10, 241, data[3], data[7]),
        Ipv4Addr::new(10, 242, data[7], data[1]),
    );
    let parsed = switch::wire::Parsed::parse(inner).expect("decap guarantees an Ethernet header");
    let sport = switch::wire::vxlan::source_port(&parsed);
    assert!(sport >= 49152, "source port outside the dynamic range");
    assert_eq!(
        switch::wire::vxlan::source_port(&parsed),
        sport,
        "source port of one frame varies"
    );
    let dport = switch::wire::vxlan::VXLAN_PORT ^ u16::from_be_bytes([data[3], data[7]]);
    let mut pkt = vec![0u8; OUTER_LEN + inner.len()];
    pkt[OUTER_LEN..].copy_from_slice(inner);
    let hdr: &mut [u8; OUTER_LEN] = (&mut pkt[..OUTER_LEN]).try_into().expect("outer length");
    write_outer(hdr, src, dst, sport, dport, vni, inner.len());
    check_outer(&pkt, src, dst, (sport, dport), vni, inner);
    // Head-end replication: the same packet to the next peer.
    let hdr: &mut [u8; OUTER_LEN] = (&mut pkt[..OUTER_LEN]).try_into().expect("outer length");
    set_outer_dst(hdr, dst2);
    check_outer(&pkt, src, dst2, (sport, dport), vni, inner);
});
