//! The device-less harness (sink ports and `Switch::inject`) runs the real datapath: a frame
//! injected on one port is checked, learned, answered, routed and translated exactly as one
//! read from a TAP, and what the switch sends shows in the ports' counters. No root needed.

use std::net::Ipv4Addr;

use switch::model::*;
use switch::{Options, Switch};

fn csum(b: &[u8]) -> u16 {
    nat::packet::checksum(b)
}

/// `[vnet hdr (hdr) | Ethernet | IPv4 | TCP SYN]` from `src` to `dst`.
#[allow(clippy::too_many_arguments)]
fn syn(
    hdr: usize,
    dmac: [u8; 6],
    smac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    let mut f = vec![0u8; hdr];
    f.extend_from_slice(&dmac);
    f.extend_from_slice(&smac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    let c = nat::packet::checksum_pseudo(src, dst, 6, &tcp);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp);
    f
}

/// Frames port `name` has sent.
fn tx(ports: &[PortInfo], name: &str) -> Option<u64> {
    ports
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.counters.tx_packets)
}

fn mac(s: &str) -> [u8; 6] {
    s.parse::<switch::wire::MacAddr>().expect("mac").0
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
    })
    .expect("uplink");
    let pa = sw.port_id(&a.port).expect("a's port");
    let pup = sw.port_id("uplink").expect("uplink port");
    let gw = mac(&net.gateway_mac);
    let (ma, mb) = (mac(&a.mac.to_string()), mac(&b.mac.to_string()));
    let out = Ipv4Addr::new(198, 51, 100, 7);

    // L2: a to b is forwarded (b's TAP would get it).
    assert!(sw.inject(pa, &syn(12, mb, ma, a.ip, b.ip, 1000, 80, 0x02)));
    // Spoofed source address: dropped and counted.
    assert!(sw.inject(
        pa,
        &syn(
            12,
            mb,
            ma,
            Ipv4Addr::new(10, 9, 0, 99),
            b.ip,
            1000,
            80,
            0x02,
        ),
    ));
    // Routed and masqueraded to the outside: a flow, and an ARP request on the uplink.
    assert!(sw.inject(pa, &syn(12, gw, ma, a.ip, out, 40000, 80, 0x02)));
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
    assert!(sw.inject(
        pup,
        &syn(
            10,
            upmac,
            [2, 0, 0, 0, 0, 7],
            out,
            Ipv4Addr::new(198, 51, 100, 1),
            80,
            40000,
            0x12,
        ),
    ));
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
