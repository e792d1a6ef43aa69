//! The L3 path (`router.rs`) through the device-less harness: routing between linked networks,
//! isolation of unlinked ones, TTL handling, masquerade to the uplink and back, published ports,
//! hairpin, next-hop resolution on the uplink. Frames are read back from capture sessions on the
//! sink ports and their checksums verified independently (see `lab`).

mod lab;

use std::net::Ipv4Addr;

use lab::*;
use switch::model::PublishRequest;
use switch::Options;

const H_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const H_MAC: Mac = [0x02, 0, 0, 0, 0, 0x07];
const UP_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// Networks `front` (10.9.0.0/24: a) and `back` (10.10.0.0/24: c, d), not linked.
struct Two {
    l: Lab,
    gw_front: Mac,
    gw_back: Mac,
    a: Port,
    c: Port,
    d: Port,
}

fn two() -> Two {
    let mut l = Lab::new(Options::default());
    let f = l.net("front", "10.9.0.0/24");
    let b = l.net("back", "10.10.0.0/24");
    let a = l.attach("a", "front");
    let c = l.attach("c", "back");
    let d = l.attach("d", "back");
    // Everyone talks to its gateway once, so the switch has learned where each MAC is.
    for (p, gw) in [(&a, f.gateway), (&c, b.gateway), (&d, b.gateway)] {
        let out = l.send(p, &arp_request(p.mac, p.ip, gw));
        assert_eq!(parse_arp(out.only(p)).op, 2);
    }
    Two {
        gw_front: mac(&f.gateway_mac),
        gw_back: mac(&b.gateway_mac),
        l,
        a,
        c,
        d,
    }
}

/// A lab with network `front` (a, b) and a sink uplink 198.51.100.1/24 that already knows the
/// outside host H (198.51.100.7) from an ARP exchange, checked on the way.
struct Outside {
    l: Lab,
    gw: Mac,
    a: Port,
    b: Port,
    up: Port,
}

fn outside() -> Outside {
    let mut l = Lab::new(Options::default());
    let net = l.net("front", "10.9.0.0/24");
    let a = l.attach("a", "front");
    let b = l.attach("b", "front");
    let up = l.uplink("198.51.100.1/24", None);
    assert_eq!(up.ip, UP_IP);
    // H asks for the uplink address: answered with the switch's uplink MAC, and H is learned.
    let out = l.send(&up, &arp_request(H_MAC, H_IP, UP_IP));
    assert_eq!(
        parse_arp(out.only(&up)),
        ArpView {
            dst: H_MAC,
            src: up.mac,
            op: 2,
            sha: up.mac,
            spa: UP_IP,
            tha: H_MAC,
            tpa: H_IP,
        }
    );
    let neigh = l.sw.uplink().expect("uplink").neighbours;
    assert!(
        neigh.iter().any(|n| n.ip == H_IP && mac(&n.mac) == H_MAC),
        "{neigh:?}"
    );
    // a and b announce themselves to their gateway.
    for p in [&a, &b] {
        l.send(p, &arp_request(p.mac, p.ip, net.gateway));
    }
    Outside {
        gw: mac(&net.gateway_mac),
        l,
        a,
        b,
        up,
    }
}

#[test]
fn linked_networks_route_with_ttl_decremented_checksums_valid_and_macs_rewritten() {
    let Two {
        l,
        gw_front,
        gw_back,
        a,
        c,
        d,
    } = two();
    let f = tcp_frame(gw_front, a.mac, a.ip, c.ip, 40000, 80, SYN);

    // Not linked: refused and counted.
    l.send(&a, &f).assert_none();
    assert_eq!(l.drops("policy"), 1);
    assert_eq!(l.events("routed"), 0);

    l.sw.link("front", "back", true).expect("link");
    let out = l.send(&a, &f);
    let got = out.only(&c);
    assert!(out.on(&d).is_empty());
    assert_checksums(got);
    let (sent, v) = (parse_ip(&f), parse_ip(got));
    assert_eq!((v.dst_mac, v.src_mac), (c.mac, gw_back), "MACs rewritten");
    assert_eq!(v.ttl, 63, "TTL decremented");
    assert_eq!(v.l4, sent.l4, "TCP header and payload untouched");
    assert_eq!(
        (v.src, v.dst, v.sport, v.dport),
        (a.ip, c.ip, 40000, 80),
        "no translation between linked networks"
    );
    assert_eq!(got.len(), f.len());
    assert_eq!(l.events("routed"), 1);

    // And back, UDP this time.
    let r = udp_frame(gw_back, c.mac, c.ip, a.ip, 53, 5353);
    let out = l.send(&c, &r);
    let got = out.only(&a);
    assert_checksums(got);
    let v = parse_ip(got);
    assert_eq!((v.dst_mac, v.src_mac, v.ttl), (a.mac, gw_front, 63));
    assert_eq!((v.src, v.dst, v.sport, v.dport), (c.ip, a.ip, 53, 5353));

    // Unlinked again: refused again.
    l.sw.link("front", "back", false).expect("unlink");
    l.send(&a, &f).assert_none();
    assert_eq!(l.drops("policy"), 2);
    assert_eq!(l.events("routed"), 2);
}

#[test]
fn ttl_1_is_dropped_and_counted_ttl_2_arrives_with_1() {
    let Two {
        l,
        gw_front,
        gw_back,
        a,
        c,
        ..
    } = two();
    l.sw.link("front", "back", true).expect("link");
    let seg = udp(a.ip, c.ip, 1, 2, b"ttl");
    for ttl in [0, 1] {
        let out = l.send(&a, &ip_frame(gw_front, a.mac, a.ip, c.ip, UDP, ttl, &seg));
        assert!(out.on(&c).is_empty(), "TTL {ttl} forwarded: {out:?}");
    }
    assert_eq!(l.drops("ttl"), 2);
    assert_eq!(l.events("routed"), 0);
    let out = l.send(&a, &ip_frame(gw_front, a.mac, a.ip, c.ip, UDP, 2, &seg));
    let got = out.only(&c);
    assert_checksums(got);
    let v = parse_ip(got);
    assert_eq!((v.ttl, v.src_mac), (1, gw_back));
}

#[test]
fn masquerade_to_the_uplink_and_the_reply_translated_back() {
    let Outside { l, gw, a, b, up } = outside();

    // TCP: the source becomes the uplink address (port kept, it is free).
    let syn = tcp_frame(gw, a.mac, a.ip, H_IP, 40000, 80, SYN);
    let out = l.send(&a, &syn);
    let got = out.only(&up);
    assert_checksums(got);
    let v = parse_ip(got);
    assert_eq!((v.dst_mac, v.src_mac), (H_MAC, up.mac));
    assert_eq!((v.src, v.sport, v.dst, v.dport), (UP_IP, 40000, H_IP, 80));
    assert_eq!((v.ttl, v.flags), (63, SYN));
    assert_eq!(l4_payload(&v), b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(l.events("snat_flows"), 1);

    // H answers the uplink address: translated back to a.
    let synack = tcp_frame(up.mac, H_MAC, H_IP, UP_IP, 80, 40000, SYN | ACK);
    let out = l.send(&up, &synack);
    let got = out.only(&a);
    assert_checksums(got);
    let v = parse_ip(got);
    assert_eq!((v.dst_mac, v.src_mac), (a.mac, gw));
    assert_eq!((v.src, v.sport, v.dst, v.dport), (H_IP, 80, a.ip, 40000));
    assert_eq!((v.ttl, v.flags), (63, SYN | ACK));

    // b uses the same source port to the same place: the switch must pick another port, and
    // fix the TCP checksum for it too.
    let syn_b = tcp_frame(gw, b.mac, b.ip, H_IP, 40000, 80, SYN);
    let got = l.send(&b, &syn_b).only(&up).to_vec();
    assert_checksums(&got);
    let v = parse_ip(&got);
    assert_eq!((v.src, v.dst, v.dport), (UP_IP, H_IP, 80));
    assert_ne!(v.sport, 40000, "two flows share a reply tuple");
    assert!(nat::conntrack::PORT_RANGE.contains(&v.sport), "{}", v.sport);
    let out = l.send(
        &up,
        &tcp_frame(up.mac, H_MAC, H_IP, UP_IP, 80, v.sport, SYN | ACK),
    );
    let back = parse_ip(out.only(&b));
    assert_eq!((back.dst, back.dport), (b.ip, 40000));
    assert_checksums(out.only(&b));

    // UDP with an odd-length payload, both ways.
    let q = udp_frame(gw, a.mac, a.ip, H_IP, 5353, 53);
    let got = l.send(&a, &q).only(&up).to_vec();
    assert_checksums(&got);
    let v = parse_ip(&got);
    assert_eq!((v.src, v.dst, v.dport), (UP_IP, H_IP, 53));
    let ans = udp_frame(up.mac, H_MAC, H_IP, UP_IP, 53, v.sport);
    let back = l.send(&up, &ans);
    assert_checksums(back.only(&a));
    let v = parse_ip(back.only(&a));
    assert_eq!((v.src, v.sport, v.dst, v.dport), (H_IP, 53, a.ip, 5353));

    // ICMP echo: the identifier is the port; the checksum must follow it.
    let ping = ip_frame(
        gw,
        a.mac,
        a.ip,
        H_IP,
        ICMP,
        64,
        &icmp_echo(8, 0x4242, 1, b"abc"),
    );
    let got = l.send(&a, &ping).only(&up).to_vec();
    assert_checksums(&got);
    let v = parse_ip(&got);
    assert_eq!((v.src, v.dst, v.flags), (UP_IP, H_IP, 8));
    let id = be16(&v.l4, 4);
    let pong = ip_frame(
        up.mac,
        H_MAC,
        H_IP,
        UP_IP,
        ICMP,
        64,
        &icmp_echo(0, id, 1, b"abc"),
    );
    let out = l.send(&up, &pong);
    assert_checksums(out.only(&a));
    let v = parse_ip(out.only(&a));
    assert_eq!((v.src, v.dst, v.flags), (H_IP, a.ip, 0));
    assert_eq!(be16(&v.l4, 4), 0x4242, "identifier translated back");

    assert_eq!(l.events("snat_flows"), 4);
    assert_eq!(l.sw.conntrack(None).expect("conntrack").len(), 4);
    // Unsolicited traffic to the uplink address opens nothing.
    let stray = tcp_frame(up.mac, H_MAC, H_IP, UP_IP, 80, 41000, SYN);
    l.send(&up, &stray).assert_none();
    assert_eq!(l.drops("no_route"), 1);
    assert!(
        l.all_drops().keys().all(|k| k == "no_route"),
        "{:?}",
        l.all_drops()
    );
}

#[test]
fn unknown_next_hop_is_resolved_by_arp_and_the_held_packet_sent() {
    let Outside { l, gw, a, up, .. } = outside();
    let (j_ip, j_mac) = (Ipv4Addr::new(198, 51, 100, 8), [0x02, 0, 0, 0, 0, 0x08]);
    let out = l.send(&a, &tcp_frame(gw, a.mac, a.ip, j_ip, 40000, 443, SYN));
    assert_eq!(
        parse_arp(out.only(&up)),
        ArpView {
            dst: BROADCAST,
            src: up.mac,
            op: 1,
            sha: up.mac,
            spa: UP_IP,
            tha: [0; 6],
            tpa: j_ip,
        }
    );
    // J's answer releases the SYN, addressed to J's MAC.
    let out = l.send(&up, &arp(up.mac, j_mac, 2, j_mac, j_ip, up.mac, UP_IP));
    let got = out.only(&up);
    assert_checksums(got);
    let v = parse_ip(got);
    assert_eq!((v.dst_mac, v.src_mac), (j_mac, up.mac));
    assert_eq!((v.src, v.dst, v.dport, v.ttl), (UP_IP, j_ip, 443, 63));
}

#[test]
fn published_port_dnat_keeps_the_client_address_and_hairpin_works() {
    let Outside { l, gw, a, b, up } = outside();
    let p =
        l.sw.publish(&PublishRequest {
            netns: "a".into(),
            spec: "8080:80".into(),
            network: None,
        })
        .expect("publish");
    assert_eq!(
        (p.host_port, p.endpoint_ip, p.endpoint_port),
        (8080, a.ip, 80)
    );

    // H connects to the uplink address, port 8080: a gets it on port 80, from H itself.
    let syn = tcp_frame(up.mac, H_MAC, H_IP, UP_IP, 5555, 8080, SYN);
    let out = l.send(&up, &syn);
    let got = out.only(&a);
    assert_checksums(got);
    let v = parse_ip(got);
    assert_eq!((v.dst_mac, v.src_mac), (a.mac, gw));
    assert_eq!((v.src, v.sport, v.dst, v.dport), (H_IP, 5555, a.ip, 80));
    assert_eq!(v.ttl, 63);
    assert_eq!(l.events("dnat_flows"), 1);

    // a's answer leaves from the published address and port.
    let synack = tcp_frame(gw, a.mac, a.ip, H_IP, 80, 5555, SYN | ACK);
    let got = l.send(&a, &synack).only(&up).to_vec();
    assert_checksums(&got);
    let v = parse_ip(&got);
    assert_eq!((v.dst_mac, v.src_mac), (H_MAC, up.mac));
    assert_eq!((v.src, v.sport, v.dst, v.dport), (UP_IP, 8080, H_IP, 5555));

    // A port nobody published: dropped.
    l.send(&up, &tcp_frame(up.mac, H_MAC, H_IP, UP_IP, 5555, 8081, SYN))
        .assert_none();
    assert_eq!(l.drops("no_route"), 1);

    // Hairpin: b reaches a through the published address; a sees the gateway as the source,
    // so its answer comes back through the switch.
    let syn = tcp_frame(gw, b.mac, b.ip, UP_IP, 6000, 8080, SYN);
    let got = l.send(&b, &syn).only(&a).to_vec();
    assert_checksums(&got);
    let v = parse_ip(&got);
    let gw_ip = Ipv4Addr::new(10, 9, 0, 1);
    assert_eq!((v.src, v.dst, v.dport), (gw_ip, a.ip, 80));
    let ans = tcp_frame(gw, a.mac, a.ip, gw_ip, 80, v.sport, SYN | ACK);
    let out = l.send(&a, &ans);
    assert_checksums(out.only(&b));
    let v = parse_ip(out.only(&b));
    assert_eq!((v.src, v.sport, v.dst, v.dport), (UP_IP, 8080, b.ip, 6000));
}
