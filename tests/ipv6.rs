//! IPv6 dual stack: networks with an IPv6 subnet, endpoints with both families, and what the
//! switch does for IPv6 (neighbour discovery, the gateway's answers, routing between linked
//! networks, DNS, port security), driven with real tools: ping -6, iperf3 -6, dig, the kernel's
//! own router-advertisement handling.

mod common;

use common::*;
use switch::model::EndpointInfo;

/// `iperf3 -6` from `client` to `server`'s `addr`: TCP for 2 s or UDP for 1 s at 100 Mbit/s in
/// 1200-byte datagrams. Panics naming the run unless TCP moved data without retransmitting
/// more than a tenth of its segments, or UDP lost at most a fifth of its datagrams.
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
        args.extend(["-u", "-b", "100M", "-l", "1200", "-t", "1"]);
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
            packets > 0 && lost <= 20.0,
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
