//! Overlay networks over VXLAN: several "hosts" (namespaces on a test-made underlay bridge),
//! each running its own vswitchd, plus a plain Linux host with a kernel vxlan device.

mod common;

use common::*;
use switch::model::*;

/// Create overlay network `ov` (VNI 42, 10.250.0.0/24) on a daemon with the given peers (hosts
/// of the [`Underlay`], 1-based).
fn overlay(d: &Daemon, peers: &[usize]) {
    let ips: Vec<String> = peers.iter().map(|i| Underlay::ip(*i)).collect();
    let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
    overlay_network(d, "ov", "10.250.0.0/24", "42", &ips, &[]);
}

/// The MAC a namespace has in its neighbour table for `ip`.
fn neigh_mac(ns: &Netns, ip: &str) -> String {
    let out = ns.exec_ok(&["ip", "neigh", "show", ip]);
    out.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn two_hosts_share_a_segment_with_anycast_gateway_and_vxlan_on_the_wire() {
    require(&["ping", "socat", "ss", "iperf3", "tcpdump", "tshark"]);
    let u = Underlay::new(2);
    let d1 = Daemon::start_in(&u.hosts[0], &[]);
    let d2 = Daemon::start_in(&u.hosts[1], &[]);
    overlay(&d1, &[2]);
    overlay(&d2, &[1]);
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let ea: EndpointInfo = d1.ctl_json(&["attach", &a.name, "ov", "--ip", "10.250.0.11"]);
    let eb: EndpointInfo = d2.ctl_json(&["attach", &b.name, "ov", "--ip", "10.250.0.12"]);
    assert_eq!(
        (ea.mtu, eb.mtu),
        (1450, 1450),
        "overlay MTU = underlay 1500 - 50"
    );

    // VXLAN on the underlay, decoded by tshark with the right VNI.
    let pcap = d1.dir.join("underlay.pcap");
    let dump = tcpdump_bg(
        Some(&u.bridge),
        &[
            "-i",
            "br0",
            "-w",
            pcap.to_str().unwrap(),
            "-U",
            "udp port 4789",
        ],
    );
    assert!(a.ping("10.250.0.12", 3), "a cannot reach b across hosts");
    assert!(b.ping("10.250.0.11", 2), "b cannot reach a across hosts");
    assert_eq!(
        a.pings_with("10.250.0.12", 2, &["-s", "1422", "-M", "do"]),
        2,
        "full-size frames lost"
    );
    dump.interrupt(); // tcpdump writes out what it holds
    let vnis = run_ok(&[
        "tshark",
        "-r",
        pcap.to_str().unwrap(),
        "-Y",
        "vxlan",
        "-T",
        "fields",
        "-e",
        "vxlan.vni",
    ]);
    assert!(!vnis.trim().is_empty(), "tshark saw no VXLAN");
    assert!(
        vnis.lines().all(|l| l.trim() == "42"),
        "VNIs on the wire: {vnis}"
    );

    // TCP and UDP across hosts.
    let _tcp = peer_server(&b, "tcp", "10.250.0.12", 7000);
    let _udp = peer_server(&b, "udp", "10.250.0.12", 7001);
    assert_eq!(ask(&a, "tcp", "10.250.0.12", 7000), "peer=10.250.0.11");
    assert_eq!(ask(&a, "udp", "10.250.0.12", 7001), "peer=10.250.0.11");
    let bytes = iperf_bytes(&a, &b, "10.250.0.12", 2);
    assert!(
        bytes > 1_000_000,
        "iperf3 across hosts moved only {bytes} bytes"
    );

    // Remote entries carry their VTEP.
    let fdb: Vec<FdbEntryInfo> = d1.ctl_json(&["fdb", "ov"]);
    let remote = fdb
        .iter()
        .find(|e| e.mac == eb.mac)
        .unwrap_or_else(|| panic!("b not learned: {fdb:?}"));
    assert_eq!(remote.vtep.map(|v| v.to_string()), Some(Underlay::ip(2)));

    // ARP suppression across hosts: b's address was learned from its ARP traffic over VXLAN,
    // so host 1 answers a's request itself.
    let before: StatsInfo = d1.ctl_json(&["stats"]);
    a.exec_ok(&["ip", "neigh", "flush", "all"]);
    assert!(a.ping("10.250.0.12", 1));
    let after: StatsInfo = d1.ctl_json(&["stats"]);
    assert!(
        after.events["arp_suppressed"] > before.events["arp_suppressed"],
        "remote endpoint's ARP not suppressed"
    );
    let ports: Vec<PortInfo> = d1.ctl_json(&["ports"]);
    let vtep = ports
        .iter()
        .find(|p| p.kind == "vxlan")
        .unwrap_or_else(|| panic!("no VTEP port: {ports:?}"));
    assert!(
        vtep.counters.rx_packets > 0 && vtep.counters.tx_packets > 0,
        "{vtep:?}"
    );

    // The anycast gateway: the same address and MAC answer on both hosts.
    assert!(
        a.ping("10.250.0.1", 1) && b.ping("10.250.0.1", 1),
        "gateway not pingable on every host"
    );
    let (ga, gb) = (neigh_mac(&a, "10.250.0.1"), neigh_mac(&b, "10.250.0.1"));
    assert!(
        !ga.is_empty() && ga == gb,
        "gateway MACs differ: {ga} vs {gb}"
    );
}

#[test]
fn a_kernel_vxlan_host_joins_the_segment_both_ways_with_full_size_frames() {
    require(&["ping", "socat", "ss", "bridge"]);
    let u = Underlay::new(2);
    let d1 = Daemon::start_in(&u.hosts[0], &[]);
    overlay(&d1, &[2]);
    let a = Netns::new("a");
    d1.ctl_ok(&["attach", &a.name, "ov", "--ip", "10.250.0.11"]);
    // Host 2 is plain Linux: a kernel vxlan device with head-end replication to host 1, at the
    // MTU the kernel gives it over a 1500-byte underlay (1450, the overlay's).
    let k = &u.hosts[1];
    kernel_vxlan_host(k, "42", "10.240.0.2", "10.240.0.1", "10.250.0.50/24", 1450);
    // The warm-up resolves ARP across both VTEPs (flooded to the kernel's all-zeros FDB entry);
    // from then on no full-size packet may be lost in either direction.
    full_size_pings_both_ways(
        "vswitch endpoint <-> kernel host",
        &a,
        "10.250.0.11",
        k,
        "10.250.0.50",
        1450,
    );
    let _srv = peer_server(k, "tcp", "10.250.0.50", 7000);
    assert_eq!(
        ask(&a, "tcp", "10.250.0.50", 7000),
        "peer=10.250.0.11",
        "TCP to the kernel host"
    );
    let _srv2 = peer_server(&a, "tcp", "10.250.0.11", 7002);
    assert_eq!(
        ask(k, "tcp", "10.250.0.11", 7002),
        "peer=10.250.0.50",
        "TCP from the kernel host"
    );
    // Bulk TCP both ways: our software segmentation into the kernel's VTEP, and the kernel's
    // tunnel super-frames into ours.
    for (cl, srv, ip) in [(&a, k, "10.250.0.50"), (k, &a, "10.250.0.11")] {
        let bytes = iperf_bytes(cl, srv, ip, 2);
        assert!(
            bytes > 1_000_000,
            "iperf3 from {} to {ip} moved only {bytes} bytes",
            cl.name
        );
    }
}

#[test]
fn peer_removal_stops_traffic_and_bad_vxlan_is_counted() {
    require(&["ping", "python3"]);
    let u = Underlay::new(3);
    let d1 = Daemon::start_in(&u.hosts[0], &[]);
    let d2 = Daemon::start_in(&u.hosts[1], &[]);
    overlay(&d1, &[2]);
    overlay(&d2, &[1]);
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    d1.ctl_ok(&["attach", &a.name, "ov", "--ip", "10.250.0.11"]);
    d2.ctl_ok(&["attach", &b.name, "ov", "--ip", "10.250.0.12"]);
    assert!(a.ping("10.250.0.12", 1));
    let before: StatsInfo = d1.ctl_json(&["stats"]);
    // From host 3 (not a peer) and host 2 (a peer): garbage, a short header, no I flag, an
    // unknown VNI, and a valid packet from a non-peer.
    let script = |vni_ok: bool| {
        format!(
            r#"
import socket, os
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst = ("10.240.0.1", 4789)
frame = bytes.fromhex("ffffffffffff02000000000108060001080006040001020000000001")
if {vni_ok}:
    s.sendto(os.urandom(200), dst)
    s.sendto(b"\x08\x00\x00", dst)
    s.sendto(b"\x00\x00\x00\x00\x00\x00\x2a\x00" + frame, dst)
    s.sendto(b"\x08\x00\x00\x00\x00\x00\x63\x00" + frame, dst)
else:
    s.sendto(b"\x08\x00\x00\x00\x00\x00\x2a\x00" + frame, dst)
"#,
            vni_ok = if vni_ok { "True" } else { "False" }
        )
    };
    u.hosts[1].exec_ok(&["python3", "-c", &script(true)]);
    u.hosts[2].exec_ok(&["python3", "-c", &script(false)]);
    let ok = wait_until(3, || {
        let s: StatsInfo = d1.ctl_json(&["stats"]);
        s.drops["malformed"] >= before.drops["malformed"] + 2
            && s.drops["vxlan_unknown_vni"] > before.drops["vxlan_unknown_vni"]
            && s.drops["vxlan_unknown_peer"] > before.drops["vxlan_unknown_peer"]
    });
    let after: StatsInfo = d1.ctl_json(&["stats"]);
    assert!(
        ok,
        "bad VXLAN not counted: {:?} -> {:?}",
        before.drops, after.drops
    );
    assert!(
        a.ping("10.250.0.12", 2),
        "forwarding stopped after bad VXLAN"
    );
    // Removing the peer stops traffic to it.
    let peers: Vec<String> = d1.ctl_json(&["peer", "ls", "ov"]);
    assert_eq!(peers, vec![Underlay::ip(2)]);
    d1.ctl_ok(&["peer", "rm", "ov", &Underlay::ip(2)]);
    assert!(
        a.no_reply("10.250.0.12", 2),
        "traffic still flows to a removed peer"
    );
    d1.ctl_ok(&["peer", "add", "ov", &Underlay::ip(2)]);
    assert!(
        a.ping("10.250.0.12", 2),
        "re-adding the peer restores traffic"
    );
}

#[test]
fn overlay_input_errors() {
    require(&[]);
    let u = Underlay::new(1);
    let d = Daemon::start_in(&u.hosts[0], &[]);
    overlay(&d, &[]);
    d.ctl_ok(&["network", "create", "flat", "--subnet", "10.251.0.0/24"]);
    // Each refused `network create x --subnet 10.252.0.0/24 ...` names what was wrong.
    for (extra, says) in [
        (&["--vni", "0"][..], &["VNI 0"][..]),
        (&["--vni", "16777216"], &["16777216"]),
        (&["--vni", "42"], &["VNI 42", "ov"]),
        (&["--peer", "10.240.0.2"], &["not an overlay"]),
    ] {
        let mut args = vec!["network", "create", "x", "--subnet", "10.252.0.0/24"];
        args.extend_from_slice(extra);
        let (_, e) = d.ctl_err(&args);
        assert!(says.iter().all(|w| e.contains(w)), "{extra:?}: {e}");
    }
    let (_, e) = d.ctl_err(&["peer", "add", "flat", "10.240.0.2"]);
    assert!(e.contains("flat"), "{e}");
    let (_, e) = d.ctl_err(&["peer", "rm", "ov", "10.240.0.9"]);
    assert!(e.contains("10.240.0.9"), "{e}");
    let (_, e) = d.ctl_err(&["peer", "add", "ov", "banana"]);
    assert!(e.contains("banana"), "{e}");
    let (_, e) = d.ctl_err(&["fdb", "add", "ov", "zz", "--vtep", "10.240.0.2"]);
    assert!(e.contains("zz"), "{e}");
    d.ctl_ok(&[
        "fdb",
        "add",
        "ov",
        "02:00:00:00:00:99",
        "--vtep",
        "10.240.0.2",
    ]);
    let fdb: Vec<FdbEntryInfo> = d.ctl_json(&["fdb", "ov"]);
    assert!(
        fdb.iter().any(|e| e.mac == "02:00:00:00:00:99"
            && e.vtep.map(|v| v.to_string()) == Some("10.240.0.2".into())),
        "{fdb:?}"
    );
    let net: NetworkInfo = d.ctl_json(&["network", "inspect", "ov"]);
    assert_eq!((net.vni, net.vxlan_port), (Some(42), Some(4789)));
}

#[test]
fn linked_overlay_networks_route_across_hosts_through_the_anycast_gateway() {
    require(&["ping"]);
    let u = Underlay::new(2);
    let d1 = Daemon::start_in(&u.hosts[0], &[]);
    let d2 = Daemon::start_in(&u.hosts[1], &[]);
    for (d, peer) in [(&d1, "10.240.0.2"), (&d2, "10.240.0.1")] {
        overlay_network(d, "red", "10.250.0.0/24", "100", &[peer], &[]);
        overlay_network(d, "blue", "10.251.0.0/24", "200", &[peer], &[]);
        d.ctl_ok(&["network", "link", "red", "blue"]);
    }
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    d1.ctl_ok(&["attach", &a.name, "red", "--ip", "10.250.0.11"]);
    d2.ctl_ok(&["attach", &b.name, "blue", "--ip", "10.251.0.12"]);
    // a (red, host 1) -> b (blue, host 2): routed on host 1 into blue, bridged over VNI 200. The
    // first packets resolve b through the gateway's ARP probe.
    assert!(
        wait_until(10, || a.ping("10.251.0.12", 1)),
        "a never reached b across hosts and networks"
    );
    assert!(
        a.ping("10.251.0.12", 3),
        "routing across hosts is not steady"
    );
    assert!(b.ping("10.250.0.11", 2), "b cannot reach a");
    let s: StatsInfo = d1.ctl_json(&["stats"]);
    assert!(s.events["routed"] > 0, "{:?}", s.events);
}

#[test]
fn overlapping_subnets_on_different_vnis_stay_isolated() {
    require(&["socat", "ss"]);
    let u = Underlay::new(2);
    let d1 = Daemon::start_in(&u.hosts[0], &[]);
    let d2 = Daemon::start_in(&u.hosts[1], &[]);
    for (d, peer) in [(&d1, "10.240.0.2"), (&d2, "10.240.0.1")] {
        overlay_network(d, "red", "10.60.0.0/24", "100", &[peer], &[]);
        overlay_network(d, "green", "10.60.0.0/24", "300", &[peer], &[]);
        // Overlapping networks cannot be linked, and a non-overlay network may not overlap.
        let (_, e) = d.ctl_err(&["network", "link", "red", "green"]);
        assert!(e.contains("overlaps"), "{e}");
        let (_, e) = d.ctl_err(&["network", "create", "flat", "--subnet", "10.60.0.0/24"]);
        assert!(e.contains("overlaps"), "{e}");
    }
    // The same addresses on both VNIs.
    let (r1, r2, g1, g2) = (
        Netns::new("r1"),
        Netns::new("r2"),
        Netns::new("g1"),
        Netns::new("g2"),
    );
    d1.ctl_ok(&["attach", &r1.name, "red", "--ip", "10.60.0.11"]);
    d2.ctl_ok(&["attach", &r2.name, "red", "--ip", "10.60.0.12"]);
    d1.ctl_ok(&["attach", &g1.name, "green", "--ip", "10.60.0.11"]);
    d2.ctl_ok(&["attach", &g2.name, "green", "--ip", "10.60.0.12"]);
    let _r = answer_server(&r2, "tcp", "0.0.0.0", 7000, "red");
    let _g = answer_server(&g2, "tcp", "0.0.0.0", 7000, "green");
    assert_eq!(
        ask(&r1, "tcp", "10.60.0.12", 7000),
        "red",
        "red reached the wrong segment"
    );
    assert_eq!(
        ask(&g1, "tcp", "10.60.0.12", 7000),
        "green",
        "green reached the wrong segment"
    );
}

#[test]
fn overlay_networks_egress_through_the_local_uplink_with_nat() {
    require(&["socat", "ss", "ping"]);
    let l = Lab::new(&[]);
    let a = Netns::new("a");
    // An overlay network whose peer does not exist: egress must not depend on it.
    overlay_network(&l.d, "ov", "10.250.0.0/24", "42", &["10.241.0.9"], &[]);
    l.d.ctl_ok(&["attach", &a.name, "ov", "--ip", "10.250.0.11"]);
    assert!(
        a.ping(OUTSIDE, 2),
        "overlay endpoint cannot reach the outside"
    );
    let _tcp = peer_server(&l.out, "tcp", OUTSIDE, 7000);
    // On failure, show what crossed the endpoint's port.
    let cap = l.d.dir.join("a.pcap");
    let capture = l.d.capture_bg(
        &format!("{}/eth0", a.name),
        &["-w", cap.to_str().unwrap(), "--timeout", "12"],
    );
    let got = ask(&a, "tcp", OUTSIDE, 7000);
    drop(capture);
    if got.is_empty() {
        eprintln!(
            "capture at a: {}",
            run_ok(&["tcpdump", "-nvvr", cap.to_str().unwrap()])
        );
        eprintln!("outside: {}", l.out.exec_ok(&["ss", "-tanp"]));
    }
    assert_eq!(
        got,
        format!("peer={UPLINK}"),
        "overlay egress is not masqueraded"
    );
}

#[test]
fn three_hosts_replicate_to_every_peer() {
    require(&["ping"]);
    let u = Underlay::new(3);
    let ds: Vec<Daemon> = (0..3).map(|i| Daemon::start_in(&u.hosts[i], &[])).collect();
    for (i, d) in ds.iter().enumerate() {
        let peers: Vec<usize> = (1..=3).filter(|p| *p != i + 1).collect();
        overlay(d, &peers);
    }
    let ns: Vec<Netns> = ["a", "b", "c"].iter().map(|t| Netns::new(t)).collect();
    for (i, n) in ns.iter().enumerate() {
        ds[i].ctl_ok(&[
            "attach",
            &n.name,
            "ov",
            "--ip",
            &format!("10.250.0.{}", 11 + i),
        ]);
    }
    // Every pair, both ways: the first packet of each needs ARP flooded to both peers.
    for (i, n) in ns.iter().enumerate() {
        for j in 0..3 {
            if i != j {
                let ip = format!("10.250.0.{}", 11 + j);
                assert!(n.ping(&ip, 1), "host {} cannot reach {ip}", i + 1);
            }
        }
    }
    let fdb: Vec<FdbEntryInfo> = ds[0].ctl_json(&["fdb", "ov"]);
    let vteps: std::collections::BTreeSet<String> = fdb
        .iter()
        .filter_map(|e| e.vtep.map(|v| v.to_string()))
        .collect();
    assert_eq!(
        vteps.into_iter().collect::<Vec<_>>(),
        vec![Underlay::ip(2), Underlay::ip(3)],
        "{fdb:?}"
    );
}
