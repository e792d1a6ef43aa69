//! The device-less harness (sink ports and `Switch::inject`) runs the real datapath: a frame
//! injected on one port is checked, learned, answered, routed and translated exactly as one
//! read from a TAP, and what the switch sends shows in the ports' counters. No root needed.

mod lab;

use std::net::Ipv4Addr;

use lab::{mac, tcp_frame, ACK, SYN, TAP_HDR, UPLINK_HDR};
use switch::model::*;
use switch::{Options, Switch};

/// `frame` behind a zeroed virtio-net header of `hdr` bytes: what [`Switch::inject`] takes.
fn with_hdr(hdr: usize, frame: Vec<u8>) -> Vec<u8> {
    let mut f = vec![0u8; hdr];
    f.extend(frame);
    f
}

/// Frames port `name` has sent.
fn tx(ports: &[PortInfo], name: &str) -> Option<u64> {
    ports
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.counters.tx_packets)
}

#[test]
fn injected_frames_run_the_whole_datapath() {
    let sw = Switch::start(Options::default()).expect("start switch");
    let net = sw
        .create_network(&NetworkCreate::flat("front", "10.9.0.0/24"))
        .expect("network");
    let attach = |ns: &str| {
        sw.attach_sink(&AttachRequest::new(ns, "front"))
            .expect("attach sink")
    };
    let (a, b) = (attach("a"), attach("b"));
    sw.set_uplink_sink(&UplinkSet {
        iface: "up0".into(),
        ip: "198.51.100.1/24".into(),
        gateway: None,
        ip6: None,
        gateway6: None,
        ipv6_routed: false,
    })
    .expect("uplink");
    let pa = sw.port_id(&a.port).expect("a's port");
    let pup = sw.port_id("uplink").expect("uplink port");
    let gw = mac(&net.gateway_mac);
    let (ma, mb) = (mac(&a.mac.to_string()), mac(&b.mac.to_string()));
    let out = Ipv4Addr::new(198, 51, 100, 7);

    // L2: a to b is forwarded (b's TAP would get it).
    let from_a =
        |dmac, src, dst, sport| with_hdr(TAP_HDR, tcp_frame(dmac, ma, src, dst, sport, 80, SYN));
    assert!(sw.inject(pa, &from_a(mb, a.ip, b.ip, 1000)));
    // Spoofed source address: dropped and counted.
    let spoofed = Ipv4Addr::new(10, 9, 0, 99);
    assert!(sw.inject(pa, &from_a(mb, spoofed, b.ip, 1000)));
    // Routed and masqueraded to the outside: a flow, and an ARP request on the uplink.
    assert!(sw.inject(pa, &from_a(gw, a.ip, out, 40000)));
    let st = sw.stats();
    assert_eq!(st.drops["spoofed"], 1, "{:?}", st.drops);
    assert_eq!(st.events["snat_flows"], 1, "{:?}", st.events);
    let ct = sw.conntrack(None).expect("conntrack");
    assert_eq!(ct.len(), 1, "{ct:?}");
    let ports = sw.ports();
    assert_eq!(tx(&ports, &b.port), Some(1), "{ports:?}");
    assert!(
        tx(&ports, "uplink") >= Some(1),
        "the ARP request for the next hop: {ports:?}"
    );
    // The answer from the outside comes back to a through the flow.
    let up = sw.uplink().expect("uplink info");
    let upmac = mac(&up.mac.to_string());
    let synack = tcp_frame(
        upmac,
        [2, 0, 0, 0, 0, 7],
        out,
        Ipv4Addr::new(198, 51, 100, 1),
        80,
        40000,
        SYN | ACK,
    );
    assert!(sw.inject(pup, &with_hdr(UPLINK_HDR, synack)));
    let ports = sw.ports();
    assert_eq!(
        tx(&ports, &a.port),
        Some(1),
        "the SYN+ACK reached a: {ports:?}"
    );
    // Garbage of every length does not stop it.
    for n in 0..200 {
        let junk: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
        assert!(sw.inject(pa, &junk), "a's port exists");
        assert!(sw.inject(pup, &junk), "the uplink port exists");
    }
    assert!(
        sw.stats().drops["malformed"] > 0,
        "the garbage was seen and counted"
    );
    assert!(!sw.inject(9999, &[0; 64]), "no such port");
    sw.shutdown();
}
