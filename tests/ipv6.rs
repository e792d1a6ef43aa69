//! IPv6 dual stack: networks with an IPv6 subnet, endpoints with both families, and what the
//! switch does for IPv6 (neighbour discovery, the gateway's answers, routing between linked
//! networks, DNS, port security), driven with real tools: ping -6, iperf3 -6, dig, the kernel's
//! own router-advertisement handling.

mod common;

use common::*;
use switch::model::EndpointInfo;

/// `iperf3 -6` from `client` to `server`'s `addr`: TCP for 2 s or UDP for 1 s at 20 Mbit/s in
/// 1200-byte datagrams. Panics naming the run unless TCP moved data without retransmitting
/// more than a tenth of its segments, or UDP delivered at least half its datagrams. (A checksum
/// or offload fault loses all of them; the margin is for the suite's other tests sharing the
/// two cores, which is what cost 20% at 100 Mbit/s on a CI run.)
fn iperf3_6(label: &str, client: &Netns, server: &Netns, addr: &str, udp: bool) {
    let srv = server.spawn(&["iperf3", "-s", "-1", "-B", addr]);
    wait_listening(server, "tcp", 5201);
    let mut args = vec![
        "iperf3",
        "-6",
        "-c",
        addr,
        "-J",
        "--connect-timeout",
        "5000",
    ];
    if udp {
        args.extend(["-u", "-b", "20M", "-l", "1200", "-t", "1"]);
    } else {
        args.extend(["-t", "2"]);
    }
    let o = client.exec(&args);
    drop(srv);
    let out = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("[{label}] no JSON ({e}): {out}"));
    assert!(v.get("error").is_none(), "[{label}] iperf3: {}", v["error"]);
    let e = &v["end"];
    if udp {
        let lost = e["sum"]["lost_percent"].as_f64().unwrap_or(100.0);
        let packets = e["sum"]["packets"].as_u64().unwrap_or(0);
        assert!(
            packets > 0 && lost <= 50.0,
            "[{label}] UDP: {packets} datagrams, {lost:.1}% lost"
        );
    } else {
        let bytes = e["sum_received"]["bytes"].as_u64().unwrap_or(0);
        let retrans = e["sum_sent"]["retransmits"].as_u64().unwrap_or(u64::MAX);
        let segs = e["sum_sent"]["bytes"].as_u64().unwrap_or(0) / 1400;
        assert!(
            bytes > 1_000_000 && retrans <= segs / 10,
            "[{label}] TCP: {bytes} bytes received, {retrans} retransmits of ~{segs} segments"
        );
    }
}

/// The global IPv6 addresses of `ns`'s `dev` (`ip -6 -o addr show`), with flags.
fn addrs6(ns: &Netns, dev: &str) -> String {
    ns.exec_ok(&[
        "ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "global",
    ])
}

#[test]
fn dual_stack_endpoints_talk_both_families_and_resolve_aaaa_and_ptr() {
    require(&["iperf3", "dig", "ping"]);
    let mut d = Daemon::start();
    let out = d.ctl_ok(&[
        "network",
        "create",
        "ds",
        "--subnet",
        "10.80.0.0/24",
        "--subnet",
        "fd00:80::/64",
    ]);
    assert!(out.contains("fd00:80::/64 gateway fd00:80::1"), "{out}");
    let (a, b) = (Netns::new("v6a"), Netns::new("v6b"));
    let ea: EndpointInfo = attach(&d, &a, "ds");
    let eb: EndpointInfo = attach_with(&d, &b, "ds", &["--ip6", "fd00:80::99", "--alias", "db"]);
    assert_eq!(ea.ip6, Some("fd00:80::2".parse().unwrap()));
    assert_eq!(eb.ip6, Some("fd00:80::99".parse().unwrap()));
    // Configured in the namespace: the address (no duplicate address detection to wait for)
    // and an IPv6 default route via the gateway.
    assert!(
        addrs6(&a, "eth0").contains("fd00:80::2/64"),
        "{}",
        addrs6(&a, "eth0")
    );
    let routes = a.exec_ok(&["ip", "-6", "route", "show", "default"]);
    assert!(routes.contains("via fd00:80::1 dev eth0"), "{routes}");
    // Both families, both ways, ICMP, TCP and UDP.
    assert!(a.ping("10.80.0.3", 2));
    let p = a.exec(&["ping", "-6", "-c", "2", "-W", "2", "fd00:80::99"]);
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stdout));
    iperf3_6("a -> b TCP", &a, &b, "fd00:80::99", false);
    iperf3_6("a -> b UDP", &a, &b, "fd00:80::99", true);
    iperf3_6("b -> a TCP", &b, &a, "fd00:80::2", false);

    // The gateway's DNS: AAAA and A for a dual-stack name and its alias, PTR for both
    // families; NODATA (not NXDOMAIN) for a family the name has no address of.
    let ask = |args: &[&str]| {
        let mut a2 = vec!["@10.80.0.1", "+short"];
        a2.extend_from_slice(args);
        dig(&a, &a2)
    };
    assert_eq!(ask(&["AAAA", &b.name]), "fd00:80::99");
    assert_eq!(ask(&["AAAA", "db"]), "fd00:80::99");
    // Over IPv6 too, at the gateway's IPv6 address.
    assert_eq!(
        dig(&a, &["@fd00:80::1", "+short", "A", &b.name]),
        "10.80.0.3"
    );
    assert_eq!(ask(&["A", "db"]), "10.80.0.3");
    assert_eq!(ask(&["-x", "10.80.0.3"]), format!("{}.", b.name));
    assert_eq!(ask(&["-x", "fd00:80::99"]), format!("{}.", b.name));
    d.ctl_ok(&["network", "create", "plain", "--subnet", "10.81.0.0/24"]);
    d.ctl_ok(&["network", "link", "ds", "plain"]);
    let c = Netns::new("v4c");
    let ec = attach(&d, &c, "plain");
    assert_eq!(ec.ip6, None, "no IPv6 on a v4-only network");
    assert!(
        d.ctl_err(&["attach", &c.name, "ds", "--ip6", "fd00:80::2"])
            .1
            .contains("already in use"),
        "a taken IPv6 address is refused"
    );
    let nodata = dig(&a, &["@10.80.0.1", "AAAA", &c.name]);
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );
    assert_eq!(ask(&["A", &c.name]), "10.81.0.2");

    // Refusals name what was wrong.
    let lone = Netns::new("v6x");
    let (code, e) = d.ctl_err(&["attach", &lone.name, "plain", "--ip6", "fd00:81::5"]);
    assert!(code != 0 && e.contains("no IPv6 subnet"), "{e}");
    let (_, e) = d.ctl_err(&[
        "network",
        "create",
        "x",
        "--subnet",
        "10.82.0.0/24",
        "--subnet",
        "fd00:80::/96",
    ]);
    assert!(e.contains("overlaps network 'ds'"), "{e}");
    let (_, e) = d.ctl_err(&[
        "network",
        "create",
        "x",
        "--subnet",
        "fd00:82::/64",
        "--subnet",
        "fd00:83::/64",
    ]);
    assert!(e.contains("at most one IPv4 and one IPv6"), "{e}");
    let (_, e) = d.ctl_err(&["network", "create", "x", "--subnet", "fd00:82::/64"]);
    assert!(e.contains("an IPv4 subnet is needed"), "{e}");
    let (_, e) = d.ctl_err(&[
        "network",
        "create",
        "x",
        "--subnet",
        "10.82.0.0/24",
        "--subnet",
        "fd00:82::/64",
        "--gateway",
        "fd00:99::1",
    ]);
    assert!(
        e.contains("not a host address of subnet fd00:82::/64"),
        "{e}"
    );

    // A restart brings both families back.
    d.terminate();
    d.spawn(&[]);
    assert!(addrs6(&b, "eth0").contains("fd00:80::99/64"));
    let p = a.exec(&["ping", "-6", "-c", "2", "-W", "2", "fd00:80::99"]);
    assert!(p.status.success(), "after a restart: {}", d.log());
}

/// Send one ICMPv6 message from `ns` with a raw socket (the kernel fills in the checksum):
/// `msg` as hex, to `dst` on `dev`, with hop limit `hops`.
fn send_icmp6(ns: &Netns, dev: &str, dst: &str, hops: u32, msg: &str) {
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)\n\
         s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, {hops})\n\
         s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, {hops})\n\
         s.sendto(bytes.fromhex('{msg}'), ('{dst}', 0, 0, socket.if_nametoindex('{dev}')))\n"
    );
    ns.exec_ok(&["python3", "-c", &script]);
}

/// `ping -6` from `ns` with extra arguments; (success, output).
fn ping6(ns: &Netns, args: &[&str]) -> (bool, String) {
    let mut a = vec!["ping", "-6", "-n", "-c", "2", "-W", "2"];
    a.extend_from_slice(args);
    let o = ns.exec(&a);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn the_gateway_answers_nd_ping_and_rs_and_routes_linked_networks_with_icmpv6_errors() {
    require(&["ping", "iperf3", "python3"]);
    let d = Daemon::start();
    for (name, v4, v6, mtu) in [
        ("r1", "10.90.0.0/24", "fd00:90::/64", "1500"),
        ("r2", "10.91.0.0/24", "fd00:91::/64", "1280"),
    ] {
        d.ctl_ok(&[
            "network", "create", name, "--subnet", v4, "--subnet", v6, "--mtu", mtu,
        ]);
    }
    let (a, a2, b) = (Netns::new("ra"), Netns::new("ra2"), Netns::new("rb"));
    attach(&d, &a, "r1");
    attach(&d, &a2, "r1");
    attach(&d, &b, "r2");
    // The gateway: neighbour discovery and echo, on its global and its link-local address.
    let (ok, out) = ping6(&a, &["fd00:90::1"]);
    assert!(ok, "ping the gateway: {out}\n{}", d.log());
    assert!(event(&d, "nd_gateway") >= 1 && event(&d, "icmp_gateway") >= 2);
    // Between endpoints of one network the switch answers neighbour solicitations itself.
    let (ok, out) = ping6(&a, &["fd00:90::3"]);
    assert!(ok, "{out}");
    assert!(event(&d, "nd_suppressed") >= 1, "{:?}", stats(&d).events);

    // Not linked: refused, and the sender told so (administratively prohibited).
    let policy = drops(&d, "policy");
    let (ok, out) = ping6(&a, &["fd00:91::2"]);
    assert!(!ok && out.contains("prohibited"), "{out}");
    assert!(drops(&d, "policy") > policy);
    let (ok, out) = ping6(&a, &["2001:db8::1"]);
    assert!(
        !ok && out.to_lowercase().contains("no route"),
        "no IPv6 egress yet: {out}"
    );

    // Linked: routed both ways, ICMP, TCP and UDP; the hop limit is spent on the way.
    d.ctl_ok(&["network", "link", "r1", "r2"]);
    let (ok, out) = ping6(&a, &["fd00:91::2"]);
    assert!(ok, "routed: {out}\n{}", d.log());
    let (ok, out) = ping6(&b, &["fd00:90::2"]);
    assert!(ok, "routed back: {out}");
    let (ok, out) = ping6(&a, &["-t", "1", "fd00:91::2"]);
    assert!(!ok && out.contains("Time exceeded"), "hop limit 1: {out}");
    iperf3_6("r1 -> r2 TCP", &a, &b, "fd00:91::2", false);
    iperf3_6("r2 -> r1 TCP", &b, &a, "fd00:90::2", false);
    iperf3_6("r1 -> r2 UDP", &a, &b, "fd00:91::2", true);
    // r2's MTU is 1280: a 1400-byte packet gets "packet too big", the sender's kernel learns
    // the path MTU, and its next tries go through fragmented at the source.
    let (_, out) = ping6(&a, &["-M", "do", "-s", "1400", "-c", "1", "fd00:91::2"]);
    assert!(out.contains("mtu=1280") || out.contains("too big"), "{out}");
    let route = a.exec_ok(&["ip", "-6", "route", "get", "fd00:91::2"]);
    assert!(route.contains("mtu 1280"), "PMTU not learned: {route}");
    let (ok, out) = ping6(&a, &["-s", "1400", "fd00:91::2"]);
    assert!(ok, "after PMTU discovery: {out}");
    assert!(event(&d, "icmp6_errors") >= 3);

    // Router solicitations get an advertisement: the kernel's own RA handling makes a SLAAC
    // address in the prefix and a default route via the gateway's link-local address, and
    // port security lets the SLAAC address through.
    let slaac = wait_until(15, || {
        a.exec_ok(&["ip", "-6", "-o", "addr", "show", "dev", "eth0", "dynamic"])
            .contains("fd00:90::")
    });
    assert!(slaac, "no SLAAC address: {}", addrs6(&a, "eth0"));
    assert!(event(&d, "router_adverts") >= 1);
    let ra = a.exec_ok(&["ip", "-6", "route", "show", "default", "proto", "ra"]);
    assert!(ra.contains("via fe80::"), "{ra}");
    let dynamic = a.exec_ok(&["ip", "-6", "-o", "addr", "show", "dev", "eth0", "dynamic"]);
    let sl = dynamic
        .split_whitespace()
        .find(|w| w.starts_with("fd00:90::"))
        .and_then(|w| w.split('/').next())
        .unwrap()
        .to_string();
    let (ok, out) = ping6(&a, &["-I", &sl, "fd00:91::2"]);
    assert!(ok, "from the SLAAC address {sl}: {out}");

    // Port security: another address, a neighbour advertisement claiming a neighbour's
    // address, a router advertisement from an endpoint, an ND message with hop limit 64.
    let spoofed = drops(&d, "spoofed");
    a.exec_ok(&[
        "ip",
        "addr",
        "add",
        "fd00:90::77/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    let (ok, _) = ping6(&a, &["-I", "fd00:90::77", "fd00:90::3"]);
    assert!(!ok, "a foreign source got through");
    assert!(drops(&d, "spoofed") > spoofed);
    let spoofed = drops(&d, "spoofed");
    // NA (type 136), override flag, target fd00:90::3 (a2's address).
    let na = [
        "88",
        "00",
        "0000",
        "20000000",
        "fd000090000000000000000000000003",
    ]
    .concat();
    send_icmp6(&a, "eth0", "ff02::1", 255, &na);
    assert!(wait_until(2, || drops(&d, "spoofed") > spoofed), "NA spoof");
    let rogue = drops(&d, "rogue_router");
    // RA: hop limit 64, router lifetime 1800, no options.
    send_icmp6(
        &a,
        "eth0",
        "ff02::1",
        255,
        "86000000400007080000000000000000",
    );
    assert!(
        wait_until(2, || drops(&d, "rogue_router") > rogue),
        "rogue RA"
    );
    // a2 took no route via a (its link-local address, from its MAC 02:42:0a:5a:00:02).
    let routes = a2.exec_ok(&["ip", "-6", "route", "show", "default"]);
    assert!(!routes.contains("fe80::42:aff:fe5a:2"), "{routes}");
    let malformed = drops(&d, "malformed");
    // NS for fd00:90::3 with hop limit 64: invalid neighbour discovery.
    send_icmp6(
        &a,
        "eth0",
        "ff02::1:ff00:3",
        64,
        "8700000000000000fd000090000000000000000000000003",
    );
    assert!(
        wait_until(2, || drops(&d, "malformed") > malformed),
        "NS with hop limit 64"
    );
}

#[test]
fn hostile_ipv6_frames_are_counted_drops_and_forwarding_goes_on() {
    require(&["python3", "ping"]);
    let d = Daemon::start();
    for (name, v4, v6) in [
        ("h1", "10.95.0.0/24", "fd00:95::/64"),
        ("h2", "10.96.0.0/24", "fd00:96::/64"),
    ] {
        d.ctl_ok(&["network", "create", name, "--subnet", v4, "--subnet", v6]);
    }
    d.ctl_ok(&["network", "link", "h1", "h2"]);
    let (m, b, c) = (Netns::new("hm"), Netns::new("hb"), Netns::new("hc"));
    let em = attach(&d, &m, "h1");
    let eb = attach(&d, &b, "h1");
    let ec = attach(&d, &c, "h2");
    let net: switch::model::NetworkInfo = d.ctl_json(&["network", "inspect", "h1"]);
    let (ip6, bip6, cip6) = (
        em.ip6.unwrap().to_string(),
        eb.ip6.unwrap().to_string(),
        ec.ip6.unwrap().to_string(),
    );
    let (ok, out) = ping6(&b, &[&cip6]);
    assert!(ok, "before: {out}");
    // To the gateway, to another endpoint, to all nodes, and routed to the linked network.
    let gw = &net.gateway_mac;
    let targets = format!(
        "{gw}=fd00:95::1,{}={bip6},33:33:00:00:00:01=ff02::1,{gw}={cip6}",
        eb.mac
    );
    let r = hostile(
        &m,
        &["frames6", "eth0", "20000", "6", &em.mac, &ip6, &targets],
    );
    assert!(sent(&r) >= 19_000, "sent too little: {r}");
    for kind in [
        "ext_long",
        "ext_loop",
        "jumbogram",
        "frag_later",
        "nd_hop_limit",
        "rogue_ra",
    ] {
        assert!(r["kinds"][kind].as_u64().unwrap_or(0) > 0, "no {kind}: {r}");
    }
    // Alive, everyone else still talking both families, and the drops counted by name.
    let (ok, out) = ping6(&b, &[&cip6]);
    assert!(ok, "after: {out}\n{}", d.log());
    let (ok, out) = ping6(&c, &["fd00:96::1"]);
    assert!(ok, "the gateway after: {out}");
    assert!(b.ping(&ec.ip.to_string(), 2), "IPv4 after");
    for name in ["malformed", "spoofed", "rogue_router", "ttl"] {
        assert!(
            drops(&d, name) > 0,
            "no {name} drops: {:?}",
            stats(&d).drops
        );
    }
    let inspect: switch::model::NetworkInfo = d.ctl_json(&["network", "inspect", "h1"]);
    assert_eq!(inspect.endpoints.len(), 2, "endpoints lost");
}

#[test]
fn ipv6_inside_an_overlay_with_a_kernel_vxlan_host_both_ways() {
    require(&["ping", "iperf3", "bridge"]);
    let u = Underlay::new(2);
    let d1 = Daemon::start_in(&u.hosts[0], &[]);
    overlay_network(
        &d1,
        "ov",
        "10.250.0.0/24",
        "42",
        &[&Underlay::ip(2)],
        &["--subnet", "fd00:250::/64"],
    );
    let a = Netns::new("oa");
    d1.ctl_ok(&[
        "attach",
        &a.name,
        "ov",
        "--ip",
        "10.250.0.11",
        "--ip6",
        "fd00:250::11",
    ]);
    // Host 2 is plain Linux: a kernel vxlan device, IPv6 on, an address of the same prefix.
    let k = &u.hosts[1];
    kernel_vxlan_host(k, "42", "10.240.0.2", "10.240.0.1", "10.250.0.50/24", 1450);
    k.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.vx0.disable_ipv6=0"]);
    k.exec_ok(&[
        "ip",
        "addr",
        "add",
        "fd00:250::50/64",
        "dev",
        "vx0",
        "nodad",
    ]);
    let up = wait_until(10, || ping6(&a, &["-c", "1", "fd00:250::50"]).0);
    assert!(up, "ping -6 across the overlay\n{}", d1.log());
    let (ok, out) = ping6(k, &["fd00:250::11"]);
    assert!(ok, "from the kernel host: {out}");
    // Full-size packets: 1450 - 40 - 8 bytes of ICMPv6 payload, unfragmented.
    let (ok, out) = ping6(&a, &["-M", "do", "-s", "1402", "fd00:250::50"]);
    assert!(ok, "full size: {out}");
    // TCP and UDP both ways: the kernel's VTEP leaves inner checksums partial.
    iperf3_6("overlay a -> kernel TCP", &a, k, "fd00:250::50", false);
    iperf3_6("overlay kernel -> a TCP", k, &a, "fd00:250::11", false);
    iperf3_6("overlay a -> kernel UDP", &a, k, "fd00:250::50", true);
    iperf3_6("overlay kernel -> a UDP", k, &a, "fd00:250::11", true);
}

#[test]
fn routed_ipv6_out_of_the_uplink_and_back_with_neighbour_discovery() {
    require(&["ping", "iperf3"]);
    let l = Lab::new(&[]);
    // The outside: 2001:db8:50::1 on the uplink's cable, the networks' prefix routed to the
    // switch's uplink address (what an operator who owns the prefix configures).
    l.out
        .exec_ok(&["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0"]);
    l.out.exec_ok(&[
        "ip",
        "addr",
        "add",
        "2001:db8:50::1/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    l.out.exec_ok(&[
        "ip",
        "-6",
        "route",
        "add",
        "fd00:97::/64",
        "via",
        "2001:db8:50::2",
    ]);
    let up = l.d.ctl_ok(&[
        "uplink",
        "set",
        "up0",
        "--ip",
        "10.210.0.1/24",
        "--ip",
        "2001:db8:50::2/64",
        "--ipv6-routed",
    ]);
    assert!(up.contains("2001:db8:50::2/64 (routed)"), "{up}");
    l.d.ctl_ok(&[
        "network",
        "create",
        "pub",
        "--subnet",
        "10.97.0.0/24",
        "--subnet",
        "fd00:97::/64",
    ]);
    l.d.ctl_ok(&[
        "network",
        "create",
        "int",
        "--subnet",
        "10.98.0.0/24",
        "--subnet",
        "fd00:98::/64",
        "--internal",
    ]);
    let (a, i) = (Netns::new("ua"), Netns::new("ui"));
    attach(&l.d, &a, "pub");
    attach(&l.d, &i, "int");
    // Out and back, the outside seeing the endpoint's own address (no translation).
    let up = wait_until(5, || ping6(&a, &["-c", "1", "2001:db8:50::1"]).0);
    assert!(up, "ping -6 out of the uplink\n{}", l.d.log());
    let (ok, out) = ping6(&l.out, &["fd00:97::2"]);
    assert!(ok, "from the outside in: {out}");
    let _srv = answer_server_v6(&l.out, 7000);
    let said = a.exec_ok(&["socat", "-T", "3", "-", "TCP6:[2001:db8:50::1]:7000"]);
    // (socat writes the address in full, bracketed.)
    assert_eq!(
        said.trim(),
        "peer=[fd00:0097:0000:0000:0000:0000:0000:0002]",
        "the outside sees the endpoint's address"
    );
    iperf3_6("routed out TCP", &a, &l.out, "2001:db8:50::1", false);
    iperf3_6("routed in TCP", &l.out, &a, "fd00:97::2", false);
    iperf3_6("routed out UDP", &a, &l.out, "2001:db8:50::1", true);
    // The uplink learned its neighbour by neighbour discovery.
    let info: switch::model::UplinkInfo = l.d.ctl_json(&["uplink", "show"]);
    assert!(
        info.neighbours
            .iter()
            .any(|n| n.ip.to_string() == "2001:db8:50::1"),
        "{info:?}"
    );
    // --internal: no IPv6 egress either, and nothing in: the outside is told so.
    let (ok, out) = ping6(&i, &["2001:db8:50::1"]);
    assert!(!ok && out.to_lowercase().contains("unreachable"), "{out}");
    l.out.exec_ok(&[
        "ip",
        "-6",
        "route",
        "add",
        "fd00:98::/64",
        "via",
        "2001:db8:50::2",
    ]);
    let (ok, out) = ping6(&l.out, &["fd00:98::2"]);
    assert!(
        !ok && out.contains("prohibited"),
        "into an internal network: {out}"
    );
    // The hop limit spent coming in is reported to the outside too.
    let (ok, out) = ping6(&l.out, &["-t", "1", "fd00:97::2"]);
    assert!(
        !ok && out.contains("Time exceeded") && out.contains("2001:db8:50::2"),
        "{out}"
    );
}

/// A TCP server on `port` (IPv6) in `ns` that answers `peer=ADDR` (the client's address).
fn answer_server_v6(ns: &Netns, port: u16) -> KillOnDrop {
    let k = ns.spawn(&[
        "socat",
        &format!("TCP6-LISTEN:{port},fork,reuseaddr"),
        "SYSTEM:echo peer=$SOCAT_PEERADDR",
    ]);
    wait_listening(ns, "tcp", port);
    k
}

#[test]
fn icc_false_isolates_ipv6_endpoints_but_not_from_the_gateway() {
    require(&["ping"]);
    let d = Daemon::start();
    d.ctl_ok(&[
        "network",
        "create",
        "iso",
        "--subnet",
        "10.99.0.0/24",
        "--subnet",
        "fd00:99::/64",
        "--icc=false",
    ]);
    let (a, b) = (Netns::new("ia"), Netns::new("ib"));
    attach(&d, &a, "iso");
    attach(&d, &b, "iso");
    let (ok, out) = ping6(&a, &["fd00:99::1"]);
    assert!(ok, "the gateway stays reachable: {out}");
    let policy = drops(&d, "policy");
    let (ok, out) = ping6(&a, &["fd00:99::3"]);
    assert!(!ok, "icc=false let IPv6 through: {out}");
    assert!(drops(&d, "policy") > policy, "{:?}", stats(&d).drops);
    assert_eq!(
        event(&d, "nd_suppressed"),
        0,
        "no answers for other endpoints"
    );
    assert!(!a.ping("10.99.0.3", 1), "nor IPv4");
}

#[test]
fn linked_dual_stack_overlays_route_ipv6_across_hosts_by_probing_for_remote_endpoints() {
    require(&["ping", "iperf3"]);
    let u = Underlay::new(2);
    let d1 = Daemon::start_in(&u.hosts[0], &[]);
    let d2 = Daemon::start_in(&u.hosts[1], &[]);
    for (d, peer) in [(&d1, "10.240.0.2"), (&d2, "10.240.0.1")] {
        overlay_network(
            d,
            "red",
            "10.250.0.0/24",
            "100",
            &[peer],
            &["--subnet", "fd00:250::/64"],
        );
        overlay_network(
            d,
            "blue",
            "10.251.0.0/24",
            "200",
            &[peer],
            &["--subnet", "fd00:251::/64"],
        );
        d.ctl_ok(&["network", "link", "red", "blue"]);
    }
    let (a, b) = (Netns::new("a6"), Netns::new("b6"));
    d1.ctl_ok(&[
        "attach",
        &a.name,
        "red",
        "--ip",
        "10.250.0.11",
        "--ip6",
        "fd00:250::11",
    ]);
    d2.ctl_ok(&[
        "attach",
        &b.name,
        "blue",
        "--ip",
        "10.251.0.12",
        "--ip6",
        "fd00:251::12",
    ]);
    // a (red, host 1) -> b (blue, host 2): host 1 does not know b; its gateway asks on blue's
    // every host, b's answer to the (anycast) gateway comes back over the overlay, and the
    // sender's next try gets through.
    assert!(
        wait_until(10, || ping6(&a, &["-c", "1", "fd00:251::12"]).0),
        "a never reached b across hosts and networks\n{}",
        d1.log()
    );
    let (ok, out) = ping6(&b, &["fd00:250::11"]);
    assert!(ok, "b -> a: {out}");
    iperf3_6("red -> blue across hosts", &a, &b, "fd00:251::12", false);
    assert!(drops(&d1, "neighbor_unknown") >= 1, "no probe was needed?");
}

/// An HTTP server on `[::]:port` in `ns` (both families) answering every GET with
/// `peer=<client address>` (IPv4 clients as `::ffff:a.b.c.d`). It reads the request before
/// answering, as curl expects.
fn http_peer_server(ns: &Netns, port: u16) -> KillOnDrop {
    let script = format!(
        r#"
import http.server, socket
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("peer=" + self.client_address[0]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
S(("::", {port}), H).serve_forever()
"#
    );
    let k = ns.spawn(&["python3", "-c", &script]);
    wait_listening(ns, "tcp", port);
    k
}

#[test]
fn nat66_masquerades_out_and_publishes_ports_over_ipv6_keeping_the_client_address() {
    require(&["ping", "iperf3", "socat", "curl", "python3"]);
    let l = Lab::new(&[]);
    // The outside knows nothing of the networks' prefix: only translation gets answers back.
    l.out
        .exec_ok(&["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0"]);
    l.out.exec_ok(&[
        "ip",
        "addr",
        "add",
        "2001:db8:60::1/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    let up = l.d.ctl_ok(&[
        "uplink",
        "set",
        "up0",
        "--ip",
        "10.210.0.1/24",
        "--ip",
        "2001:db8:60::2/64",
    ]);
    assert!(up.contains("2001:db8:60::2/64 (nat66)"), "{up}");
    l.d.ctl_ok(&[
        "network",
        "create",
        "front",
        "--subnet",
        "10.96.0.0/24",
        "--subnet",
        "fd00:96::/64",
    ]);
    let (a, b) = (Netns::new("na"), Netns::new("nb"));
    attach(&l.d, &a, "front");
    attach(&l.d, &b, "front");
    let out_ok = wait_until(5, || ping6(&a, &["-c", "1", "2001:db8:60::1"]).0);
    assert!(out_ok, "ping -6 out through NAT66\n{}", l.d.log());
    // The outside sees the uplink's address, not the endpoint's.
    let _srv = answer_server_v6(&l.out, 7000);
    let said = a.exec_ok(&["socat", "-T", "3", "-", "TCP6:[2001:db8:60::1]:7000"]);
    assert_eq!(
        said.trim(),
        "peer=[2001:0db8:0060:0000:0000:0000:0000:0002]",
        "masqueraded to the uplink's IPv6 address"
    );
    let ct = l.d.ctl_ok(&["conntrack", "ls"]);
    assert!(
        ct.contains("[fd00:96::2]") && ct.contains("snat"),
        "the IPv6 flow is tracked:\n{ct}"
    );
    iperf3_6("nat66 out TCP", &a, &l.out, "2001:db8:60::1", false);
    iperf3_6("nat66 out UDP", &a, &l.out, "2001:db8:60::1", true);
    // An ICMPv6 error about a translated flow finds its way back (outer and quoted headers).
    assert_eq!(
        udp_to_closed_port(&a, "2001:db8:60::1", 9),
        "refused",
        "port unreachable was not translated back"
    );
    // Nothing comes in unasked: the endpoints' addresses are not reachable from outside.
    l.out.exec_ok(&[
        "ip",
        "-6",
        "route",
        "add",
        "fd00:96::/64",
        "via",
        "2001:db8:60::2",
    ]);
    let (ok, _) = ping6(&l.out, &["-c", "1", "fd00:96::2"]);
    assert!(!ok, "NAT66 lets nothing in unasked");

    // A published port over IPv6, answered by the endpoint, which sees the client's address.
    let _web = http_peer_server(&b, 80);
    let info: switch::model::PublishInfo = l.d.ctl_json(&["publish", &b.name, "[::]:8080:80"]);
    assert_eq!(
        info.endpoint_ip6.map(|a| a.to_string()).as_deref(),
        Some("fd00:96::3")
    );
    let got = l.out.exec_ok(&[
        "curl",
        "-6",
        "-sS",
        "--max-time",
        "5",
        "http://[2001:db8:60::2]:8080/",
    ]);
    assert_eq!(
        got.trim(),
        "peer=2001:db8:60::1",
        "curl -6 through the published port keeps the client's address"
    );
    // Hairpin: an endpoint reaching the published port through the uplink's address.
    let said = a.exec_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        "http://[2001:db8:60::2]:8080/",
    ]);
    assert_eq!(said.trim(), "peer=fd00:96::1", "hairpin: from the gateway");
    let ports = l.d.ctl_ok(&["ports"]);
    assert!(ports.contains("[::]:8080->80/tcp"), "{ports}");
    // IPv6 only: IPv4 to the same port finds nothing.
    let v4 = l.out.exec(&[
        "curl",
        "-4",
        "-s",
        "--max-time",
        "2",
        "http://10.210.0.1:8080/",
    ]);
    assert!(!v4.status.success(), "[::] publishes IPv6 only");
    // A specific IPv6 address other than the uplink's is refused with the way to say it.
    let (_, e) =
        l.d.ctl_err(&["publish", &b.name, "[2001:db8:60::9]:8081:80"]);
    assert!(e.contains("[::]"), "{e}");
    l.d.ctl_ok(&["unpublish", &b.name, "[::]:8080"]);
    let gone = l.out.exec(&[
        "curl",
        "-6",
        "-s",
        "--max-time",
        "2",
        "http://[2001:db8:60::2]:8080/",
    ]);
    assert!(!gone.status.success(), "unpublished");
    // No address: both families.
    l.d.ctl_ok(&["publish", &b.name, "9090:80"]);
    for url in ["http://[2001:db8:60::2]:9090/", "http://10.210.0.1:9090/"] {
        let o = l.out.exec(&["curl", "-sS", "--max-time", "5", url]);
        let got = String::from_utf8_lossy(&o.stdout);
        assert!(
            got.starts_with("peer="),
            "{url}: {got:?} {}\n{}\n{}\n{:?}",
            String::from_utf8_lossy(&o.stderr),
            l.d.ctl_ok(&["ports"]),
            l.d.ctl_ok(&["conntrack", "ls"]),
            stats(&l.d).drops
        );
    }
    let s = stats(&l.d);
    assert!(
        s.events.get("snat_flows").copied().unwrap_or(0) > 0,
        "{:?}",
        s.events
    );
    assert!(
        s.events.get("dnat_flows").copied().unwrap_or(0) > 0,
        "{:?}",
        s.events
    );
}

#[test]
fn an_ipv6_underlay_carries_the_overlay_to_a_kernel_vxlan_host_and_another_switch() {
    require(&["ping", "iperf3", "bridge"]);
    let u = Underlay::new(3);
    let v6 = |i: usize| format!("2001:db8:240::{i}");
    for (i, h) in u.hosts.iter().enumerate() {
        h.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.ul0.disable_ipv6=0"]);
        h.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/64", v6(i + 1)),
            "dev",
            "ul0",
            "nodad",
        ]);
    }
    let d1 = Daemon::start_in(&u.hosts[0], &["--underlay-ip", &v6(1)]);
    let d3 = Daemon::start_in(&u.hosts[2], &["--underlay-ip", &v6(3)]);
    // An IPv4 peer on an IPv6 underlay is refused with the reason.
    let (_, e) = d1.ctl_err(&[
        "network",
        "create",
        "bad",
        "--subnet",
        "10.251.9.0/24",
        "--vni",
        "9",
        "--peer",
        "10.240.0.2",
    ]);
    assert!(e.contains("IPv6"), "{e}");
    // The MTU follows the underlay's family even before any peer is known.
    let late: switch::model::NetworkInfo = d1.ctl_json(&[
        "network",
        "create",
        "late",
        "--subnet",
        "10.251.5.0/24",
        "--vni",
        "44",
    ]);
    assert_eq!(late.mtu, 1430, "{late:?}");
    for (d, peers) in [(&d1, [v6(2), v6(3)]), (&d3, [v6(1), v6(2)])] {
        overlay_network(
            d,
            "ov",
            "10.251.0.0/24",
            "43",
            &[&peers[0], &peers[1]],
            &["--subnet", "fd00:252::/64"],
        );
    }
    let (a, c) = (Netns::new("ua6"), Netns::new("uc6"));
    let ea = attach_with(
        &d1,
        &a,
        "ov",
        &["--ip", "10.251.0.11", "--ip6", "fd00:252::11"],
    );
    attach_with(
        &d3,
        &c,
        "ov",
        &["--ip", "10.251.0.13", "--ip6", "fd00:252::13"],
    );
    // The endpoint MTU leaves room for VXLAN over IPv6: 70 bytes.
    assert_eq!(ea.mtu, 1430, "{ea:?}");
    // Host 2 is plain Linux: a kernel vxlan device over IPv6, flooding to the switch.
    let k = &u.hosts[1];
    kernel_vxlan_host(k, "43", &v6(2), &v6(1), "10.251.0.50/24", 1430);
    vxlan_flood_to(k, &v6(3));
    k.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.vx0.disable_ipv6=0"]);
    k.exec_ok(&[
        "ip",
        "addr",
        "add",
        "fd00:252::50/64",
        "dev",
        "vx0",
        "nodad",
    ]);
    let up = wait_until(10, || {
        a.exec(&["ping", "-n", "-c", "1", "-W", "1", "10.251.0.50"])
            .status
            .success()
    });
    assert!(up, "ping over the IPv6 underlay\n{}", d1.log());
    let (ok, out) = ping6(k, &["fd00:252::11"]);
    assert!(ok, "ping -6 from the kernel host: {out}");
    // Full size, unfragmented: 1430 - 20 - 8 bytes of ICMP payload.
    let full = a.exec(&[
        "ping",
        "-n",
        "-c",
        "2",
        "-W",
        "2",
        "-M",
        "do",
        "-s",
        "1402",
        "10.251.0.50",
    ]);
    assert!(full.status.success(), "full size over the IPv6 underlay");
    // TCP and UDP both ways with the kernel's VTEP (its UDP checksums over IPv6 are real).
    iperf3_6("v6 underlay a -> kernel TCP", &a, k, "fd00:252::50", false);
    iperf3_6("v6 underlay kernel -> a TCP", k, &a, "fd00:252::11", false);
    iperf3_6("v6 underlay a -> kernel UDP", &a, k, "fd00:252::50", true);
    // Switch to switch over the IPv6 underlay, both families inside.
    let up = wait_until(10, || ping6(&a, &["-c", "1", "fd00:252::13"]).0);
    assert!(up, "switch to switch\n{}\n{}", d1.log(), d3.log());
    let o = c.exec(&["ping", "-n", "-c", "2", "-W", "2", "10.251.0.11"]);
    assert!(o.status.success(), "IPv4 inside, switch to switch");
    iperf3_6("v6 underlay a -> c TCP", &a, &c, "fd00:252::13", false);
    // The remote FDB shows IPv6 VTEPs.
    let fdb = d1.ctl_ok(&["fdb", "ov"]);
    assert!(fdb.contains(&v6(3)) && fdb.contains(&v6(2)), "{fdb}");
}

#[test]
fn icmpv6_errors_are_rate_limited_and_every_one_is_accounted_for() {
    require(&["ping", "python3"]);
    let l = Lab::new(&[]);
    l.d.ctl_ok(&[
        "network",
        "create",
        "rl",
        "--subnet",
        "10.95.0.0/24",
        "--subnet",
        "fd00:95::/64",
    ]);
    let a = Netns::new("rl");
    attach(&l.d, &a, "rl");
    let up = wait_until(5, || ping6(&a, &["-c", "1", "fd00:95::1"]).0);
    assert!(up, "ping -6 the gateway");
    let before = stats(&l.d);
    // 20 000 datagrams with hop limit 1 through the gateway: each one is a time-exceeded error
    // the switch would send, far more than the 1000 a second it allows.
    let script = r#"
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 1)
s.setblocking(False)
sent = 0
for i in range(20000):
    try:
        s.sendto(b"x", ("2001:db8:99::1", 9))
        sent += 1
    except (BlockingIOError, OSError):
        pass
print(sent)
"#;
    let sent: u64 = a
        .exec_ok(&["python3", "-c", script])
        .trim()
        .parse()
        .unwrap();
    assert!(sent > 5000, "only {sent} datagrams went out");
    let delta = |s: &switch::model::StatsInfo, b: &switch::model::StatsInfo, k: &str, ev: bool| {
        let m = |x: &switch::model::StatsInfo| {
            if ev { x.events.get(k) } else { x.drops.get(k) }
                .copied()
                .unwrap_or(0)
        };
        m(s) - m(b)
    };
    // Settled when the hop-limit drops stop growing.
    let mut last = u64::MAX;
    let after = loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let s = stats(&l.d);
        let ttl = delta(&s, &before, "ttl", false);
        if ttl == last {
            break s;
        }
        last = ttl;
    };
    let ttl = delta(&after, &before, "ttl", false);
    let errors = delta(&after, &before, "icmp6_errors", true);
    let limited = delta(&after, &before, "icmp6_rate_limited", true);
    assert!(ttl > 5000, "the switch saw {ttl} of {sent}");
    assert_eq!(
        ttl,
        errors + limited,
        "each refusal: an error sent or one counted as limited"
    );
    assert!(limited > 0, "{errors} errors sent for {ttl} refusals");
    assert!(errors < ttl / 2, "{errors} errors sent for {ttl} refusals");
}
