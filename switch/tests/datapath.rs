//! The L2 datapath (`datapath.rs`) through the device-less harness: learning and forwarding,
//! flooding, port security, malformed frames, what the gateway answers itself (ARP, ping), ARP
//! suppression, FDB aging and size limit, the flood rate limit. Every frame the switch sends is
//! read back from capture sessions on the sink ports.

mod lab;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lab::*;
use switch::model::AttachRequest;
use switch::Options;

/// A lab with network `front` (10.9.0.0/24) and endpoints a, b, c on it.
fn three(opts: Options) -> (Lab, Mac, [Port; 3]) {
    let mut l = Lab::new(opts);
    let net = l.net("front", "10.9.0.0/24");
    let ports = [
        l.attach("a", "front"),
        l.attach("b", "front"),
        l.attach("c", "front"),
    ];
    (l, mac(&net.gateway_mac), ports)
}

/// An MLDv2 report from `from`'s link-local address to ff02::16 (on `dmac`), as a kernel sends
/// one when an interface comes up (no records; hop limit 1).
fn mldv2_report(from: &Port, dmac: Mac) -> Vec<u8> {
    use switch::wire::{icmpv6, ipv6};
    let src = icmpv6::link_local_eui64(switch::wire::MacAddr(from.mac));
    let dst: std::net::Ipv6Addr = "ff02::16".parse().unwrap();
    let mut f = Vec::new();
    f.extend_from_slice(&dmac);
    f.extend_from_slice(&from.mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    let mut h = [0u8; 40];
    ipv6::Ipv6Header {
        src,
        dst,
        next_header: ipv6::next_header::ICMPV6,
        payload_len: 8,
        hop_limit: 1,
    }
    .write(&mut h);
    f.extend_from_slice(&h);
    let mut m = [icmpv6::msg_type::MLDV2_REPORT, 0, 0, 0, 0, 0, 0, 0];
    switch::wire::l4::fill_checksum6(src, dst, ipv6::next_header::ICMPV6, &mut m);
    f.extend_from_slice(&m);
    f
}

fn udp_between(from: &Port, dmac: Mac, dst: Ipv4Addr) -> Vec<u8> {
    udp_frame(dmac, from.mac, from.ip, dst, 5000, 6000)
}

#[test]
fn lab_checksum_is_independent_and_right() {
    // RFC 1071's example: the sum of these words is 0xddf2.
    assert_eq!(
        ones_sum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
        0xddf2
    );
    // A textbook IPv4 header with a correct checksum (0xb861).
    let h = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];
    assert_eq!(ones_sum(&[&h]), 0xffff);
    assert_eq!(ones_sum(&[&[0x12]]), 0x1200, "odd length pads with zero");
}

#[test]
fn learns_sources_and_forwards_unicast_to_the_learned_port_only() {
    let (l, _, [a, b, c]) = three(Options::default());

    // b is unknown yet: flooded to b and c, not back to a; the frame is not altered.
    let f1 = udp_between(&a, b.mac, b.ip);
    let out = l.send(&a, &f1);
    assert_eq!(out.on(&b), std::slice::from_ref(&f1), "{out:?}");
    assert_eq!(out.on(&c), std::slice::from_ref(&f1), "{out:?}");
    assert!(out.on(&a).is_empty(), "flooded back to the source: {out:?}");
    assert_eq!(l.events("flooded"), 1);

    // a was learned from f1: b's answer goes to a alone.
    let f2 = udp_between(&b, a.mac, a.ip);
    assert_eq!(l.send(&b, &f2).only(&a), f2.as_slice());

    // Now both are known: a to b is unicast, c sees nothing.
    let f3 = udp_between(&a, b.mac, b.ip);
    assert_eq!(l.send(&a, &f3).only(&b), f3.as_slice());
    assert_eq!(l.events("flooded"), 1, "no further flooding");
    assert_eq!(l.events("fdb_learned"), 2);

    let fdb = l.sw.fdb(Some("front")).expect("fdb");
    let entries: Vec<(String, String)> = fdb.into_iter().map(|e| (e.mac, e.port)).collect();
    assert_eq!(
        entries,
        [
            (switch::wire::MacAddr(a.mac).to_string(), a.name.clone()),
            (switch::wire::MacAddr(b.mac).to_string(), b.name.clone()),
        ]
    );
    let ports = l.sw.ports();
    let tx = |p: &Port| {
        ports
            .iter()
            .find(|i| i.name == p.name)
            .map(|i| (i.counters.rx_packets, i.counters.tx_packets))
    };
    assert_eq!(tx(&a), Some((2, 1)));
    assert_eq!(tx(&b), Some((1, 2)));
    assert_eq!(tx(&c), Some((0, 1)));
    assert!(l.all_drops().is_empty(), "{:?}", l.all_drops());
}

#[test]
fn broadcast_multicast_and_unknown_unicast_flood_to_every_other_port() {
    let (l, _, [a, b, c]) = three(Options::default());
    let bcast = Ipv4Addr::new(10, 9, 0, 255);
    for (from, others) in [(&a, [&b, &c]), (&b, [&a, &c]), (&c, [&a, &b])] {
        for dmac in [
            BROADCAST,
            [0x01, 0x00, 0x5e, 0, 0, 1],
            [0x02, 0, 0, 0, 0, 0x99],
        ] {
            let f = udp_between(from, dmac, bcast);
            let out = l.send(from, &f);
            assert_eq!(out.total(), 2, "{out:?}");
            for o in others {
                assert_eq!(
                    out.on(o),
                    std::slice::from_ref(&f),
                    "{dmac:02x?} from {}",
                    from.name
                );
            }
        }
    }
    assert_eq!(l.events("flooded"), 9);
    // An MLDv2 report (to ff02::16's MAC: only multicast routers read it) reaches no port; the
    // all-nodes group (ff02::1) still floods.
    let report = mldv2_report(&a, [0x33, 0x33, 0, 0, 0, 0x16]);
    l.send(&a, &report).assert_none();
    assert_eq!(l.events("mld_absorbed"), 1);
    let mut all_nodes = report.clone();
    all_nodes[5] = 0x01;
    assert_eq!(l.send(&a, &all_nodes).total(), 2);
    assert_eq!(l.events("flooded"), 10);
    // A learned destination on the port the frame came from: dropped, not reflected.
    let out = l.send(&a, &udp_between(&a, a.mac, a.ip));
    out.assert_none();
    assert_eq!(l.drops("same_port"), 1);
}

#[test]
fn port_security_drops_spoofed_sources_unless_allowed() {
    let mut l = Lab::new(Options::default());
    l.net("front", "10.9.0.0/24");
    let a = l.attach("a", "front");
    let b = l.attach("b", "front");
    let s = l.attach_req(&AttachRequest {
        allow_spoof: true,
        ..AttachRequest::new("s", "front")
    });
    let other_ip = Ipv4Addr::new(10, 9, 0, 99);
    let other_mac = [0x02, 0, 0, 0, 0, 0x42];

    // Someone else's IPv4 source address.
    l.send(&a, &udp_frame(b.mac, a.mac, other_ip, b.ip, 1, 2))
        .assert_none();
    assert_eq!(l.drops("spoofed"), 1);
    // Someone else's MAC (with a's own address).
    l.send(&a, &udp_frame(b.mac, other_mac, a.ip, b.ip, 1, 2))
        .assert_none();
    assert_eq!(l.drops("spoofed"), 2);
    // An ARP claiming another address (would poison the switch's ARP table).
    l.send(&a, &arp_request(a.mac, other_ip, b.ip))
        .assert_none();
    assert_eq!(l.drops("spoofed"), 3);
    // ... and it did not: a request for that address is flooded, not answered.
    let who = arp_request(b.mac, b.ip, other_ip);
    let out = l.send(&b, &who);
    assert_eq!(out.ports(), [a.name.as_str(), s.name.as_str()], "{out:?}");
    assert_eq!(l.events("arp_suppressed"), 0);

    // 0.0.0.0 is allowed (address probes, DHCP).
    let probe = udp_frame(
        BROADCAST,
        a.mac,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        68,
        67,
    );
    assert_eq!(l.send(&a, &probe).total(), 2);

    // With allow_spoof, the same sources go through.
    let f = udp_frame(b.mac, other_mac, other_ip, b.ip, 1, 2);
    assert_eq!(l.send(&s, &f).only(&b), f.as_slice());
    assert_eq!(l.drops("spoofed"), 3, "{:?}", l.all_drops());
}

/// A namespace on two networks answers from its second address through its first network's
/// port (it routes by its default route): that address is its own, so the frame passes; a third
/// party's does not, and once the namespace leaves the second network, neither does that one.
#[test]
fn a_namespace_may_send_from_its_own_addresses_on_other_networks_only() {
    let mut l = Lab::new(Options::default());
    l.net("front", "10.9.0.0/24");
    l.net("back", "10.9.1.0/24");
    let m = l.attach("m", "front");
    let m_back = l.attach("m", "back");
    let b = l.attach("b", "front");
    let third = l.attach("t", "back");
    // m's back address, sent from m's front port: delivered.
    let f = udp_frame(b.mac, m.mac, m_back.ip, b.ip, 80, 40000);
    assert_eq!(l.send(&m, &f).only(&b), f.as_slice());
    assert_eq!(l.drops("spoofed"), 0, "{:?}", l.all_drops());
    // Another endpoint's address on that network: spoofed.
    l.send(&m, &udp_frame(b.mac, m.mac, third.ip, b.ip, 80, 40000))
        .assert_none();
    assert_eq!(l.drops("spoofed"), 1);
    // After m leaves back, its old back address is no longer its own.
    l.sw.detach("m", "back").expect("detach m from back");
    l.send(&m, &f).assert_none();
    assert_eq!(l.drops("spoofed"), 2);
}

#[test]
fn malformed_frames_are_dropped_and_counted() {
    let (l, gw, [a, b, c]) = three(Options::default());
    let mut expected = 0;
    let mut check = |what: &str, out: Out| {
        expected += 1;
        out.assert_none();
        assert_eq!(
            l.drops("malformed"),
            expected,
            "{what}: {:?}",
            l.all_drops()
        );
    };
    // Shorter than the virtio-net header.
    check("short read", l.send_raw(&a, &[0; 5], &[]));
    // A runt: not even an Ethernet header.
    check("runt", l.send(&a, &[0x02; 10]));
    // A multicast source MAC.
    let mut f = udp_between(&a, b.mac, b.ip);
    f[6] |= 1;
    check("multicast source", l.send(&a, &f));
    // ARP cut short.
    let arp = arp_request(a.mac, a.ip, b.ip);
    check("truncated ARP", l.send(&a, &arp[..30]));
    // IPv4 to the gateway whose total length runs past the frame.
    let mut f = ip_frame(gw, a.mac, a.ip, c.ip, UDP, 64, &udp(a.ip, c.ip, 1, 2, b"x"));
    f[16..18].copy_from_slice(&1400u16.to_be_bytes());
    check("lying IPv4 length", l.send(&a, &f));
    // An echo request to the gateway with a broken ICMP checksum.
    let ping = icmp_echo(8, 1, 1, b"ping");
    let mut f = ip_frame(gw, a.mac, a.ip, Ipv4Addr::new(10, 9, 0, 1), ICMP, 64, &ping);
    f[14 + 20 + 2] ^= 0xff;
    check("bad ICMP checksum", l.send(&a, &f));
    // None of it stops the switch.
    let f = udp_between(&a, BROADCAST, b.ip);
    assert_eq!(l.send(&a, &f).total(), 2);
}

#[test]
fn arp_for_the_gateway_is_answered_with_the_gateway_mac() {
    let (l, gw, [a, _b, _c]) = three(Options::default());
    let gw_ip = Ipv4Addr::new(10, 9, 0, 1);
    // Padded to the Ethernet minimum, as a kernel sends it: the reply keeps the length.
    let mut req = arp_request(a.mac, a.ip, gw_ip);
    req.resize(60, 0);
    let out = l.send(&a, &req);
    let reply = out.only(&a);
    assert_eq!(reply.len(), 60);
    assert_eq!(
        parse_arp(reply),
        ArpView {
            dst: a.mac,
            src: gw,
            op: 2,
            sha: gw,
            spa: gw_ip,
            tha: a.mac,
            tpa: a.ip,
        }
    );
    assert_eq!(l.events("arp_gateway"), 1);
}

#[test]
fn arp_for_a_known_endpoint_is_suppressed_and_unknown_ones_flooded() {
    let (l, _, [a, b, c]) = three(Options::default());
    let out = l.send(&a, &arp_request(a.mac, a.ip, b.ip));
    assert_eq!(
        parse_arp(out.only(&a)),
        ArpView {
            dst: a.mac,
            src: b.mac,
            op: 2,
            sha: b.mac,
            spa: b.ip,
            tha: a.mac,
            tpa: a.ip,
        }
    );
    assert_eq!(l.events("arp_suppressed"), 1);
    // Nobody has 10.9.0.77: the request goes to everyone else.
    let req = arp_request(a.mac, a.ip, Ipv4Addr::new(10, 9, 0, 77));
    let out = l.send(&a, &req);
    assert_eq!(out.on(&b), std::slice::from_ref(&req));
    assert_eq!(out.on(&c), std::slice::from_ref(&req));
    assert_eq!(out.total(), 2);
    // A gratuitous ARP is seen by everyone too.
    let garp = arp_request(c.mac, c.ip, c.ip);
    assert_eq!(l.send(&c, &garp).total(), 2);
    assert_eq!(l.events("arp_suppressed"), 1);
}

#[test]
fn ping_to_the_gateway_is_answered_with_valid_checksums() {
    let (l, gw, [a, _b, _c]) = three(Options::default());
    let gw_ip = Ipv4Addr::new(10, 9, 0, 1);
    for payload in [&b"even payload"[..], b"odd payload", b""] {
        let req = icmp_echo(8, 0x1234, 7, payload);
        let out = l.send(&a, &ip_frame(gw, a.mac, a.ip, gw_ip, ICMP, 64, &req));
        let reply = out.only(&a);
        assert_checksums(reply);
        let v = parse_ip(reply);
        assert_eq!((v.dst_mac, v.src_mac), (a.mac, gw));
        assert_eq!((v.src, v.dst, v.proto), (gw_ip, a.ip, ICMP));
        assert_eq!(v.l4[0..2], [0, 0], "echo reply, code 0");
        assert_eq!(v.l4[4..], req[4..], "identifier, sequence and data kept");
    }
    assert_eq!(l.events("icmp_gateway"), 3);
}

#[test]
fn fdb_entries_age_out_and_the_destination_is_flooded_again() {
    let aging = Duration::from_millis(300);
    let (l, _, [a, b, c]) = three(Options {
        fdb_aging: aging,
        ..Options::default()
    });
    l.send(&b, &udp_between(&b, a.mac, a.ip));
    let learned = Instant::now();
    let f = udp_between(&a, b.mac, b.ip);
    assert_eq!(l.send(&a, &f).only(&b), f.as_slice(), "b is known");
    assert!(learned.elapsed() < aging, "too slow to test aging");
    // The housekeeping thread ages the table once a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let out = l.send(&a, &f);
        if out.on(&c) == std::slice::from_ref(&f) {
            assert_eq!(out.on(&b), std::slice::from_ref(&f), "flooded to b as well");
            break;
        }
        assert!(Instant::now() < deadline, "b never aged out: {out:?}");
    }
    assert!(learned.elapsed() >= aging);
    let fdb = l.sw.fdb(Some("front")).expect("fdb");
    assert!(
        fdb.iter().all(|e| e.port != b.name),
        "b still listed: {fdb:?}"
    );
}

#[test]
fn a_full_fdb_learns_nothing_more_but_still_forwards() {
    let (l, _, [a, b, c]) = three(Options {
        fdb_limit: 2,
        ..Options::default()
    });
    l.send(&a, &udp_between(&a, BROADCAST, b.ip));
    l.send(&b, &udp_between(&b, BROADCAST, a.ip));
    assert_eq!(l.drops("fdb_full"), 0);
    // c does not fit: counted, and its frame still goes out.
    let f = udp_between(&c, a.mac, a.ip);
    assert_eq!(l.send(&c, &f).only(&a), f.as_slice());
    assert_eq!(l.drops("fdb_full"), 1);
    // c stays unknown, so frames for it are flooded.
    let f = udp_between(&a, c.mac, c.ip);
    let out = l.send(&a, &f);
    assert_eq!(out.ports(), [b.name.as_str(), c.name.as_str()]);
    assert_eq!(l.sw.fdb(Some("front")).expect("fdb").len(), 2);
}

#[test]
fn flooding_is_rate_limited_per_port() {
    let (l, _, [a, b, _c]) = three(Options {
        flood_rate: 3,
        ..Options::default()
    });
    let start = Instant::now();
    let f = udp_between(&a, BROADCAST, b.ip);
    let flooded = (0..10).filter(|_| l.send(&a, &f).total() == 2).count() as u64;
    // 3 tokens, plus one per 333 ms if this machine was slow.
    let refill = start.elapsed().as_millis() as u64 * 3 / 1000;
    assert!(
        (3..=3 + refill).contains(&flooded),
        "{flooded} flooded in {:?}",
        start.elapsed()
    );
    assert_eq!(l.drops("flood_limited"), 10 - flooded);
    // The limit is per port: b still floods.
    assert_eq!(l.send(&b, &udp_between(&b, BROADCAST, a.ip)).total(), 2);
}
