//! VXLAN decapsulation as the VTEP socket receives it: header checks, the VNI, the inner frame
//! and its classification, remote-FDB learning, and encapsulation of the inner frame back.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use overlay::{decap, write_header, write_outer, RemoteFdb, HEADER_LEN, OUTER_LEN};
use switch::wire::EthFrame;

fuzz_target!(|data: &[u8]| {
    let Ok(vni) = decap(data) else { return };
    assert!(vni <= overlay::VNI_MAX);
    let inner = &data[HEADER_LEN..];
    let eth = EthFrame::parse(inner).expect("decap guarantees an Ethernet header");
    let fdb = RemoteFdb::new(1000, 4);
    let vtep = Ipv4Addr::new(10, 240, 0, 2);
    if eth.src.is_valid_unicast() {
        fdb.learn(eth.src.0, vtep, 1);
        assert_eq!(fdb.lookup(&eth.src.0, 2), Some(vtep));
    }
    let _ = switch::local::parse_arp(inner);
    if let Some(ip) = inner.get(EthFrame::HEADER_LEN..) {
        let _ = nat::packet::parse(ip);
    }
    // Encapsulate the inner frame again: same VNI on the way out.
    let mut out = vec![0u8; OUTER_LEN + inner.len()];
    out[OUTER_LEN..].copy_from_slice(inner);
    let mut h = [0u8; HEADER_LEN];
    write_header(&mut h, vni);
    out[OUTER_LEN - HEADER_LEN..OUTER_LEN].copy_from_slice(&h);
    let _ = overlay::source_port(inner);
    let _ = write_outer;
    assert_eq!(decap(&out[OUTER_LEN - HEADER_LEN..]), Ok(vni));
});
