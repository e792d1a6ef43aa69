//! Integration tests of the L3 gateway: masquerade, published ports, hairpin, conntrack,
//! ICMP error translation, network isolation and links, --internal and --icc=false. Each test
//! builds a [`Lab`]: vswitchd in a "host" namespace with a veth uplink to an "outside" namespace
//! that has no route to the endpoint networks, so only NAT can make traffic work.

mod common;

use common::*;
use switch::model::*;

#[test]
fn egress_ping_tcp_udp_and_http_leave_with_the_uplink_address() {
    require(&["ping", "socat", "ss", "curl", "python3", "iperf3"]);
    let l = Lab::new(&[]);
    let a = Netns::new("a");
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.220.0.0/24"]);
    attach(&l.d, &a, "front");
    let routes = l.out.exec_ok(&["ip", "route"]);
    assert!(
        !routes.contains("10.220."),
        "the outside must not have a route to the network: {routes}"
    );

    assert!(a.ping(OUTSIDE, 2), "egress ping failed");
    let _tcp = peer_server(&l.out, "tcp", OUTSIDE, 7000);
    let _udp = peer_server(&l.out, "udp", OUTSIDE, 7001);
    assert_eq!(
        ask(&a, "tcp", OUTSIDE, 7000),
        format!("peer={UPLINK}"),
        "TCP egress"
    );
    assert_eq!(
        ask(&a, "udp", OUTSIDE, 7001),
        format!("peer={UPLINK}"),
        "UDP egress"
    );

    // HTTP with curl against a real web server outside.
    let www = l.d.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "hello through vswitch\n").unwrap();
    let _http = l.out.spawn(&[
        "python3",
        "-m",
        "http.server",
        "8000",
        "--bind",
        OUTSIDE,
        "--directory",
        www.to_str().unwrap(),
    ]);
    wait_listening(&l.out, "tcp", 8000);
    let body = a.exec_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        &format!("http://{OUTSIDE}:8000/hello.txt"),
    ]);
    assert_eq!(body, "hello through vswitch\n");

    // Bulk TCP both ways (the outside's veth hands over GSO super-frames with partial checksums).
    for reverse in [false, true] {
        let server = l.out.spawn(&["iperf3", "-s", "-1", "-B", OUTSIDE]);
        wait_listening(&l.out, "tcp", 5201);
        let mut args = vec!["iperf3", "-c", OUTSIDE, "-t", "2", "-J"];
        if reverse {
            args.push("-R");
        }
        let out = a.exec_ok(&args);
        let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
        let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        assert!(
            bytes > 1_000_000,
            "TCP (reverse={reverse}) through NAT moved only {bytes} bytes"
        );
        drop(server);
    }

    let ct: Vec<ConntrackEntry> = l.d.ctl_json(&["conntrack"]);
    assert!(
        ct.iter()
            .any(|e| e.kind == "snat" && e.proto == "tcp" && e.reply.contains(UPLINK)),
        "{ct:?}"
    );
    let up: UplinkInfo = l.d.ctl_json(&["uplink", "show"]);
    assert!(
        up.neighbours.iter().any(|n| n.ip.to_string() == OUTSIDE),
        "{up:?}"
    );
}

#[test]
fn published_ports_keep_the_client_address_and_hairpin_works() {
    require(&["socat", "ss"]);
    let l = Lab::new(&[]);
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.220.0.0/24"]);
    let ea = attach(&l.d, &a, "front");
    attach(&l.d, &b, "front");
    let _web = peer_server(&a, "tcp", "0.0.0.0", 80);
    let _dns = peer_server(&a, "udp", "0.0.0.0", 53);

    let p: PublishInfo = l.d.ctl_json(&["publish", &a.name, "8080:80"]);
    assert_eq!(
        (p.host_port, p.endpoint_port, p.endpoint_ip),
        (8080, 80, ea.ip)
    );
    l.d.ctl_ok(&["publish", &a.name, "5353:53/udp"]);
    assert_eq!(
        ask(&l.out, "tcp", UPLINK, 8080),
        format!("peer={OUTSIDE}"),
        "published TCP must keep the client address"
    );
    assert_eq!(
        ask(&l.out, "udp", UPLINK, 5353),
        format!("peer={OUTSIDE}"),
        "published UDP"
    );

    // A random host port.
    let r: PublishInfo = l.d.ctl_json(&["publish", &a.name, "80"]);
    assert!(r.host_port >= 32768, "{r:?}");
    assert_eq!(
        ask(&l.out, "tcp", UPLINK, r.host_port),
        format!("peer={OUTSIDE}")
    );
    let human = l.d.ctl_ok(&["publish", &a.name, "81"]);
    assert!(human.contains(":3"), "the chosen port is printed: {human}");

    // Conflicts name the owner.
    let (code, err) = l.d.ctl_err(&["publish", &b.name, "8080:80"]);
    assert_eq!(code, 1);
    assert!(err.contains(&a.name) && err.contains("8080"), "{err}");
    let (_, err) = l.d.ctl_err(&["publish", &b.name, "80/sctp"]);
    assert!(err.contains("80/sctp"), "{err}");

    // Hairpin: b reaches a through the uplink address; a sees b's network gateway.
    assert_eq!(ask(&b, "tcp", UPLINK, 8080), "peer=10.220.0.1", "hairpin");

    // Published ports show in ports/inspect, survive other endpoints' churn, leave with theirs.
    let net: NetworkInfo = l.d.ctl_json(&["network", "inspect", "front"]);
    assert_eq!(net.published.len(), 4, "{net:?}");
    l.d.ctl_ok(&["detach", &b.name, "front"]);
    attach(&l.d, &b, "front");
    assert_eq!(
        ask(&l.out, "tcp", UPLINK, 8080),
        format!("peer={OUTSIDE}"),
        "publish lost after other endpoint churn"
    );
    l.d.ctl_ok(&["unpublish", &a.name, "8080"]);
    assert_eq!(
        ask(&l.out, "tcp", UPLINK, 8080),
        "",
        "unpublished port still answers"
    );
    // Control: the same server still answers through the port that stays published.
    assert_eq!(
        ask(&l.out, "tcp", UPLINK, r.host_port),
        format!("peer={OUTSIDE}"),
        "unpublish took the other published port with it"
    );
    l.d.ctl_ok(&["detach", &a.name, "front"]);
    let net: NetworkInfo = l.d.ctl_json(&["network", "inspect", "front"]);
    assert!(
        net.published.is_empty(),
        "published ports must go with their endpoint: {net:?}"
    );
    assert!(stats(&l.d).events["dnat_flows"] >= 3);
}

#[test]
fn the_uplink_has_a_socket_per_worker_and_published_flows_spread_over_them_get_through() {
    require(&["iperf3", "ss"]);
    let l = Lab::new(&[]);
    // The test daemon runs two workers: two packet sockets on the uplink, in one fanout group
    // (a group without its ignore-outgoing flag would read back every frame sent).
    let socks = l.host.exec_ok(&["ss", "-0", "-H", "-p"]);
    let ours = socks
        .lines()
        .filter(|s| s.contains(&format!("pid={},", l.d.pid())))
        .count();
    assert_eq!(ours, 2, "packet sockets of vswitchd: {socks}");
    let a = Netns::new("a");
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.220.3.0/24"]);
    attach(&l.d, &a, "front");
    l.d.ctl_ok(&["publish", &a.name, "5203:5203"]);
    let _srv = a.spawn(&["iperf3", "-s", "-p", "5203"]);
    wait_listening(&a, "tcp", 5203);
    // Eight flows in from the outside (the kernel hashes them over the two sockets).
    let o = l.out.exec(&[
        "iperf3", "-c", UPLINK, "-p", "5203", "-P", "8", "-t", "2", "-J",
    ]);
    assert!(
        o.status.success(),
        "iperf3 -P 8 through the published port failed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn conntrack_entries_are_listed_expire_and_flush() {
    require(&["socat", "ss"]);
    let l = Lab::new(&["--ct-udp-timeout", "8", "--ct-udp-stream-timeout", "8"]);
    let a = Netns::new("a");
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.220.0.0/24"]);
    attach(&l.d, &a, "front");
    let _udp = peer_server(&l.out, "udp", OUTSIDE, 7001);
    let _tcp = peer_server(&l.out, "tcp", OUTSIDE, 7000);
    assert_eq!(ask(&a, "udp", OUTSIDE, 7001), format!("peer={UPLINK}"));
    assert_eq!(ask(&a, "tcp", OUTSIDE, 7000), format!("peer={UPLINK}"));
    let ct: Vec<ConntrackEntry> = l.d.ctl_json(&["conntrack", "ls", "--network", "front"]);
    let udp = ct
        .iter()
        .find(|e| e.proto == "udp")
        .unwrap_or_else(|| panic!("no UDP entry: {ct:?}"));
    assert_eq!(udp.state, "REPLIED");
    assert!(
        udp.orig.contains(":7001") && udp.reply.contains(UPLINK),
        "{udp:?}"
    );
    let tcp = ct
        .iter()
        .find(|e| e.proto == "tcp")
        .unwrap_or_else(|| panic!("no TCP entry: {ct:?}"));
    assert!(
        ["TIME_WAIT", "LAST_ACK", "FIN_WAIT", "CLOSE_WAIT", "CLOSE"].contains(&tcp.state.as_str()),
        "{tcp:?}"
    );
    assert!(l.d.ctl_ok(&["conntrack"]).contains("ORIGINAL"));
    // The UDP flow expires after 8 s idle (the housekeeping sweep runs every second).
    assert!(
        wait_until(16, || l
            .d
            .ctl_json::<Vec<ConntrackEntry>>(&["conntrack"])
            .iter()
            .all(|e| e.proto != "udp")),
        "UDP entry did not expire"
    );
    let f: FlushInfo = l.d.ctl_json(&["conntrack", "flush"]);
    assert!(f.flushed >= 1, "{f:?}");
    assert!(l
        .d
        .ctl_json::<Vec<ConntrackEntry>>(&["conntrack"])
        .is_empty());
    let (_, err) = l.d.ctl_err(&["conntrack", "--network", "nosuch"]);
    assert!(err.contains("nosuch"), "{err}");
}

#[test]
fn a_full_conntrack_table_drops_and_counts() {
    require(&["socat", "ss"]);
    let l = Lab::new(&["--ct-max", "1"]);
    let a = Netns::new("a");
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.220.0.0/24"]);
    attach(&l.d, &a, "front");
    let _u1 = peer_server(&l.out, "udp", OUTSIDE, 7001);
    let _u2 = peer_server(&l.out, "udp", OUTSIDE, 7002);
    assert_eq!(ask(&a, "udp", OUTSIDE, 7001), format!("peer={UPLINK}"));
    assert_eq!(
        ask(&a, "udp", OUTSIDE, 7002),
        "",
        "a second flow got through a table of one"
    );
    assert!(
        stats(&l.d).drops["conntrack_full"] >= 1,
        "{:?}",
        stats(&l.d).drops
    );
    // Control: once the table has room, the same server answers the same request.
    l.d.ctl_ok(&["conntrack", "flush"]);
    assert_eq!(
        ask(&a, "udp", OUTSIDE, 7002),
        format!("peer={UPLINK}"),
        "the second server does not answer even with room in the table"
    );
}

#[test]
fn icmp_errors_are_translated_back_to_the_endpoint() {
    require(&["python3"]);
    let l = Lab::new(&[]);
    let a = Netns::new("a");
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.220.0.0/24"]);
    attach(&l.d, &a, "front");
    // A UDP send to a closed port outside: the outside answers port-unreachable to the uplink
    // address; the switch must translate it (outer and quoted headers) back to the endpoint.
    let out = udp_to_closed_port(&a, OUTSIDE, 9);
    assert_eq!(
        out.trim(),
        "refused",
        "port unreachable was not translated back"
    );
}

#[test]
fn networks_are_isolated_at_l3_until_linked() {
    require(&["ping"]);
    let l = Lab::new(&[]);
    let (a, c) = (Netns::new("a"), Netns::new("c"));
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.220.0.0/24"]);
    l.d.ctl_ok(&["network", "create", "back", "--subnet", "10.221.0.0/24"]);
    attach(&l.d, &a, "front");
    let ec = attach(&l.d, &c, "back");
    let before = stats(&l.d).drops["policy"];
    assert!(
        a.no_reply(&ec.ip.to_string(), 1),
        "networks must be isolated"
    );
    assert!(
        stats(&l.d).drops["policy"] > before,
        "isolation drop not counted"
    );
    l.d.ctl_ok(&["network", "link", "front", "back"]);
    assert!(a.ping(&ec.ip.to_string(), 2), "linked networks must route");
    let net: NetworkInfo = l.d.ctl_json(&["network", "inspect", "front"]);
    assert_eq!(net.links, vec!["back".to_string()]);
    // Routed without NAT: c sees a's own address.
    let _srv = peer_server(&c, "tcp", "0.0.0.0", 9000);
    assert_eq!(ask(&a, "tcp", &ec.ip.to_string(), 9000), "peer=10.220.0.2");
    l.d.ctl_ok(&["network", "unlink", "front", "back"]);
    assert!(
        a.no_reply(&ec.ip.to_string(), 1),
        "unlink must isolate again"
    );
    let (_, err) = l.d.ctl_err(&["network", "unlink", "front", "back"]);
    assert!(err.contains("not linked"), "{err}");
}

#[test]
fn internal_networks_have_no_egress_and_icc_false_isolates_endpoints() {
    require(&["ping"]);
    let l = Lab::new(&[]);
    let (i, e1, e2) = (Netns::new("i"), Netns::new("e1"), Netns::new("e2"));
    l.d.ctl_ok(&[
        "network",
        "create",
        "inner",
        "--subnet",
        "10.222.0.0/24",
        "--internal",
    ]);
    l.d.ctl_ok(&[
        "network",
        "create",
        "quiet",
        "--subnet",
        "10.223.0.0/24",
        "--icc=false",
    ]);
    attach(&l.d, &i, "inner");
    attach(&l.d, &e1, "quiet");
    let ee2 = attach(&l.d, &e2, "quiet");
    assert!(
        i.ping("10.222.0.1", 1),
        "internal network's gateway answers"
    );
    assert!(
        i.no_reply(OUTSIDE, 1),
        "--internal must not reach the outside"
    );
    assert!(
        e1.no_reply(&ee2.ip.to_string(), 1),
        "--icc=false endpoints must not reach each other"
    );
    assert!(e2.ping("10.223.0.1", 1), "--icc=false: e2 is up");
    assert!(
        e1.ping("10.223.0.1", 1),
        "--icc=false: gateway still answers"
    );
    assert!(e1.ping(OUTSIDE, 1), "--icc=false: the uplink still works");
    let net: NetworkInfo = l.d.ctl_json(&["network", "inspect", "quiet"]);
    assert!(!net.icc);
}
