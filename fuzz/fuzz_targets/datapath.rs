//! The whole datapath on frames from any port: a switch with three linked networks (two of them
//! dual stack, so IPv6 neighbour discovery, the gateway's answers and routing run too), one of them
//! an overlay (VNI 42, one peer VTEP), four endpoints (one with port security off), a published
//! port and an uplink, all of them sink ports (no devices), and the overlay's VTEP. Each input
//! is `[port selector | virtio-net header | frame]` and runs through everything a worker does
//! with a frame it read: header checks, spoofing checks, learning, flooding, ARP and ICMP
//! answers, DNS, routing, NAT with conntrack, ICMP errors, offload metadata, encapsulation.
//! For the VTEP it is `[selector | sender | GRO size (2, big-endian; 0: one datagram) | VXLAN
//! datagrams]`, run as one read from the VTEP socket (`Switch::inject_vxlan`): decapsulation,
//! VNI and peer checks, remote learning, coalescing of TCP segments, delivery. The tables
//! persist across inputs, as in the daemon (limits kept small so the full-table paths run too).
//!
//! A selector with its top bit set traces the frame from that port instead
//! (`Switch::trace`): the answer is a trace or a one-line refusal, and the FDB and conntrack are
//! as they were.
//!
//! Oracles, after every input:
//! - the tables stay within their limits: each network's FDB and remote FDB hold at most
//!   `fdb_limit` MACs, conntrack at most `ct_max` flows, and no tuple belongs to two flows (the
//!   originals and answers of all flows are distinct); the uplink's neighbours are on its subnet;
//! - what the switch sent (seen through capture sessions): every frame sent to `c`, alone on its
//!   network, comes from its gateway, and every IPv4 one is addressed to `c` (MAC and IP) with a
//!   valid header checksum, a length within the frame and TTL >= 1; every frame sent to the
//!   uplink comes from the uplink's MAC, and every IPv4 one has a valid header checksum, a length
//!   within the frame and TTL >= 1 (both only ever get routed, translated or generated frames);
//!   every IPv6 frame sent to `c` has a payload length within the frame, a hop limit >= 1 and,
//!   unless it is multicast, `c`'s MAC as destination.
//!
//! The overlay's VTEP binds a UDP socket (127.0.0.1, any port) and opens a raw IP socket, which
//! needs CAP_NET_RAW; without it the target fails at start. What it sends goes
//! to its peer 127.0.0.2 on UDP port 0: nothing leaves the host, nothing comes back.
#![no_main]

mod oracle;

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use switch::capture::Session;
use switch::model::*;
use switch::wire::MacAddr;
use switch::{Options, Switch};

const FDB_LIMIT: usize = 16;
const CT_MAX: usize = 64;
const UNDERLAY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const ETH: usize = 14;

/// Where an input goes.
#[derive(Clone, Copy)]
enum Entry {
    /// A port.
    Port(u32),
    /// The overlay's VTEP.
    Vtep(u32),
}

/// A port whose transmitted frames are checked, and what they must look like.
struct Watched {
    port: u32,
    hdr: usize,
    session: Session,
    /// Source MAC of everything sent there.
    from: MacAddr,
    /// Destination MAC and IP of IPv4 frames sent there (an endpoint).
    to: Option<(MacAddr, Ipv4Addr)>,
}

struct Lab {
    sw: Arc<Switch>,
    ports: Vec<Entry>,
    watched: Vec<Watched>,
    uplink_subnet: (u32, u32),
}

fn mac(s: &str) -> MacAddr {
    s.parse().expect("MAC")
}

fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        let sw = Switch::start(Options {
            workers: 1,
            fdb_limit: FDB_LIMIT,
            ct_max: CT_MAX,
            underlay_ip: Some(UNDERLAY.into()),
            ..Options::default()
        })
        .expect("start switch");
        let mut gw_macs = BTreeMap::new();
        for (name, subnet, subnet6) in [
            ("front", "10.9.0.0/24", "fd00:9::/64"),
            ("back", "10.9.1.0/24", "fd00:9:1::/64"),
        ] {
            let n = sw
                .create_network(&NetworkCreate {
                    subnet6: Some(subnet6.into()),
                    ..NetworkCreate::flat(name, subnet)
                })
                .expect("network");
            gw_macs.insert(name, mac(&n.gateway_mac));
        }
        sw.link("front", "back", true).expect("link");
        let mut ports = Vec::new();
        let mut eps = BTreeMap::new();
        for (ns, net, spoof) in [
            ("a", "front", false),
            ("b", "front", true),
            ("c", "back", false),
        ] {
            let e = sw
                .attach_sink(&AttachRequest {
                    aliases: vec!["web".into()],
                    allow_spoof: spoof,
                    ..AttachRequest::new(ns, net)
                })
                .expect("attach");
            let id = sw.port_id(&e.port).expect("port");
            ports.push(Entry::Port(id));
            eps.insert(ns, (id, e));
        }
        let up = sw
            .set_uplink_sink(&UplinkSet {
                iface: "up0".into(),
                ip: "198.51.100.1/24".into(),
                gateway: Some("198.51.100.254".into()),
                ip6: None,
                gateway6: None,
                ipv6_routed: false,
            })
            .expect("uplink");
        let up_id = sw.port_id("uplink").expect("uplink");
        ports.push(Entry::Port(up_id));
        sw.publish(&PublishRequest {
            netns: "a".into(),
            spec: "8080:80".into(),
            network: None,
        })
        .expect("publish");
        // The overlay network: selector 4 is its endpoint d, 5 its VTEP.
        let overlay = sw.create_network(&NetworkCreate {
            vni: Some(42),
            peers: vec![PEER.to_string()],
            vxlan_port: Some(0),
            mtu: Some(1450),
            ..NetworkCreate::flat("ov", "10.9.2.0/24")
        });
        match overlay {
            Ok(_) => {
                sw.link("front", "ov", true).expect("link overlay");
                let e = sw
                    .attach_sink(&AttachRequest::new("d", "ov"))
                    .expect("attach to overlay");
                ports.push(Entry::Port(sw.port_id(&e.port).expect("port")));
                ports.push(Entry::Vtep(sw.port_id("vxlan0").expect("VTEP port")));
            }
            // A missing prerequisite fails the run: the VTEP receive path must be fuzzed.
            Err(e) => panic!(
                "fuzz datapath: cannot create the overlay network ({e}): the VTEP's raw socket \
                 needs CAP_NET_RAW (run fuzz/run.sh as root)"
            ),
        }
        let (c_id, c) = &eps["c"];
        let watched = vec![
            Watched {
                port: *c_id,
                hdr: 12,
                session: sw.capture(&c.port).expect("capture c"),
                from: gw_macs["back"],
                to: Some((mac(&c.mac), c.ip)),
            },
            Watched {
                port: up_id,
                hdr: 10,
                session: sw.capture("uplink").expect("capture uplink"),
                from: mac(&up.mac),
                to: None,
            },
        ];
        let mask = u32::MAX << (32 - u32::from(up.prefix_len));
        Lab {
            sw,
            ports,
            watched,
            uplink_subnet: (u32::from(up.ip) & mask, mask),
        }
    })
}

/// The frames `w`'s port was sent while running an input injected on `port` (the capture also
/// copies what the port receives: the injected frame itself, first).
fn check_sent(w: &Watched, port: u32, wire: &[u8]) {
    let mut rx = (port == w.port && wire.len() >= w.hdr).then(|| &wire[w.hdr..]);
    while let Ok(cap) = w.session.try_recv() {
        if let Some(f) = rx.take() {
            assert_eq!(cap.data, f, "the capture's copy of the received frame");
            continue;
        }
        let f = &cap.data[..];
        assert!(f.len() >= ETH, "a runt frame sent to port {}", w.port);
        assert_eq!(
            f[6..12],
            w.from.0,
            "source MAC of a frame sent to port {}",
            w.port
        );
        if f[12..14] == [0x86, 0xdd] {
            let ip = &f[ETH..];
            assert!(ip.len() >= 40, "a cut IPv6 header sent to port {}", w.port);
            assert!(
                40 + usize::from(oracle::be16(ip, 4)) <= ip.len(),
                "IPv6 length past the frame"
            );
            assert!(ip[7] >= 1, "hop limit 0 sent to port {}", w.port);
            if let Some((m, _)) = w.to {
                assert!(
                    f[0] & 1 == 1 || f[..6] == m.0,
                    "destination MAC of an IPv6 frame sent to port {}",
                    w.port
                );
            }
            continue;
        }
        if f[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &f[ETH..];
        assert!(
            oracle::ipv4_header_ok(ip),
            "IPv4 header checksum of a frame sent to port {}",
            w.port
        );
        assert!(
            usize::from(oracle::be16(ip, 2)) <= ip.len(),
            "IPv4 length past the frame"
        );
        assert!(ip[8] >= 1, "TTL 0 sent to port {}", w.port);
        if let Some((m, a)) = w.to {
            assert_eq!(
                f[..6],
                m.0,
                "destination MAC of an IPv4 frame sent to port {}",
                w.port
            );
            assert_eq!(
                oracle::addr(ip, 16),
                a,
                "IPv4 destination of a frame sent to port {}",
                w.port
            );
        }
    }
    assert!(
        rx.is_none(),
        "the frame received on port {port} was not captured"
    );
    assert_eq!(
        w.session.dropped.load(Ordering::Relaxed),
        0,
        "capture dropped frames"
    );
}

fn check_tables(lab: &Lab) {
    let sw = &lab.sw;
    let mut per: BTreeMap<(String, bool), usize> = BTreeMap::new();
    for e in sw.fdb(None).expect("fdb") {
        *per.entry((e.network, e.vtep.is_some())).or_default() += 1;
    }
    for ((net, remote), n) in per {
        let which = if remote { "remote FDB" } else { "FDB" };
        assert!(
            n <= FDB_LIMIT,
            "{net}: {n} {which} entries, limit {FDB_LIMIT}"
        );
    }
    let flows = sw.conntrack(None).expect("conntrack");
    assert!(
        flows.len() <= CT_MAX,
        "{} flows, limit {CT_MAX}",
        flows.len()
    );
    let mut tuples = HashSet::new();
    for f in &flows {
        for t in [&f.orig, &f.reply] {
            assert!(
                tuples.insert((&f.proto, t)),
                "{} tuple {t} in two flows",
                f.proto
            );
        }
    }
    let (net, mask) = lab.uplink_subnet;
    for n in sw.uplink().expect("uplink").neighbours {
        // The lab's uplink has no IPv6 address: every neighbour is IPv4, on its subnet.
        let std::net::IpAddr::V4(ip) = n.ip else {
            panic!("an IPv6 neighbour {} on an IPv4-only uplink", n.ip);
        };
        assert_eq!(
            u32::from(ip) & mask,
            net,
            "uplink neighbour {} off its subnet",
            n.ip
        );
    }
}

/// What a trace must leave as it was: the FDB (network, MAC, port or VTEP) and conntrack
/// (original, reply, state).
fn table_keys(sw: &Switch) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut fdb = BTreeMap::new();
    for e in sw.fdb(None).expect("fdb") {
        let k = format!("{} {} {} {:?}", e.network, e.mac, e.port, e.vtep);
        *fdb.entry(k).or_default() += 1;
    }
    let mut ct: Vec<String> = sw
        .conntrack(None)
        .expect("conntrack")
        .into_iter()
        .map(|e| format!("{} {} {} {}", e.proto, e.orig, e.reply, e.state))
        .collect();
    ct.sort();
    (fdb, ct)
}

/// The packet tracer on the same frame (`[virtio-net header | frame]` from port `id`): it
/// answers or refuses in one line, and changes no table.
fn trace(lab: &Lab, id: u32, wire: &[u8]) {
    let name = lab
        .sw
        .ports()
        .into_iter()
        .find(|p| lab.sw.port_id(&p.name) == Some(id))
        .map(|p| {
            if p.kind == "uplink" {
                "uplink".to_string()
            } else {
                p.name
            }
        });
    let Some(from) = name else {
        return;
    };
    let hdr = if from == "uplink" { 10 } else { 12 };
    let frame = switch::packet_spec::hex(wire.get(hdr..).unwrap_or_default());
    let before = table_keys(&lab.sw);
    let r = lab.sw.trace(&TraceRequest {
        from,
        frame: Some(frame),
        ..TraceRequest::default()
    });
    if let Err(e) = r {
        let m = e.to_string();
        assert!(!m.trim().is_empty() && !m.contains(['\n', '\r']), "{m:?}");
    }
    assert_eq!(table_keys(&lab.sw), before, "a trace changed a table");
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, wire)) = data.split_first() else {
        return;
    };
    let lab = lab();
    let mut port = u32::MAX;
    // The top bit of the selector: trace the frame instead (the tables must not change).
    if sel & 0x80 != 0 {
        if let Entry::Port(id) = lab.ports[usize::from(sel & 0x7f) % lab.ports.len()] {
            trace(lab, id, wire);
            return;
        }
    }
    match lab.ports[usize::from(sel) % lab.ports.len()] {
        Entry::Port(id) => {
            assert!(lab.sw.inject(id, wire));
            port = id;
        }
        Entry::Vtep(id) => {
            let [from, g0, g1, datagrams @ ..] = wire else {
                return;
            };
            // Even: the peer; odd: a host that is not one.
            let from = if from % 2 == 0 {
                PEER
            } else {
                Ipv4Addr::new(127, 0, 0, *from)
            };
            let gso = Some(u16::from_be_bytes([*g0, *g1])).filter(|&g| g > 0);
            assert!(lab
                .sw
                .inject_vxlan(id, SocketAddrV4::new(from, 4789), datagrams, gso));
        }
    }
    for w in &lab.watched {
        check_sent(w, port, wire);
    }
    check_tables(lab);
});
