//! The gateway's embedded DNS: endpoint names and aliases over UDP and TCP, linked networks,
//! forwarding of other names to the daemon's resolver through the uplink, SERVFAIL without an
//! uplink, and the namespaces' resolv.conf.

mod common;

use std::time::{Duration, Instant};

use common::*;
use switch::model::*;

#[test]
fn gateway_dns_answers_names_aliases_over_udp_and_tcp_and_forwards_the_rest() {
    require(&["dig", "python3", "ss", "getent"]);
    let l = Lab::new(&[]);
    // The daemon's resolver: `outside.test` is 10.210.0.99, the rest NXDOMAIN.
    let _upstream = upstream_dns(&l.out, &[("outside.test", "10.210.0.99")]);
    let (a, b, c) = (Netns::new("a"), Netns::new("b"), Netns::new("c"));
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.220.0.0/24"]);
    l.d.ctl_ok(&["network", "create", "back", "--subnet", "10.221.0.0/24"]);
    let ea: EndpointInfo = l.d.ctl_json(&[
        "attach", &a.name, "front", "--alias", "web", "--alias", "www",
    ]);
    assert_eq!(ea.aliases, vec!["web".to_string(), "www".to_string()]);
    let eb: EndpointInfo = l.d.ctl_json(&["attach", &b.name, "front"]);
    let ec: EndpointInfo = l.d.ctl_json(&["attach", &c.name, "back"]);
    let gw = "@10.220.0.1";

    assert_eq!(
        dig(&a, &[gw, "+short", &b.name]),
        eb.ip.to_string(),
        "endpoint name over UDP"
    );
    assert_eq!(
        dig(&b, &[gw, "+short", "WEB"]),
        ea.ip.to_string(),
        "alias, case-insensitive"
    );
    assert_eq!(
        dig(&b, &[gw, "+short", "www."]),
        ea.ip.to_string(),
        "second alias, trailing dot"
    );
    assert_eq!(
        dig(&b, &[gw, "+tcp", "+short", &a.name]),
        ea.ip.to_string(),
        "over TCP"
    );
    // Other networks' names are not ours until linked; they are forwarded (NXDOMAIN upstream).
    assert!(
        dig(&a, &[gw, &c.name]).contains("NXDOMAIN"),
        "an isolated network's name resolved"
    );
    l.d.ctl_ok(&["network", "link", "front", "back"]);
    assert_eq!(
        dig(&a, &[gw, "+short", &c.name]),
        ec.ip.to_string(),
        "linked network's name"
    );
    // Forwarded to the daemon's resolver through the uplink, with NAT.
    assert_eq!(
        dig(&a, &[gw, "+short", "outside.test"]),
        "10.210.0.99",
        "forwarding"
    );
    let s: StatsInfo = l.d.ctl_json(&["stats"]);
    assert!(
        s.events["dns_forwarded"] >= 1 && s.events["dns_answered"] >= 4,
        "{:?}",
        s.events
    );

    // `ip netns exec` programs resolve endpoint names by default.
    let conf = std::fs::read_to_string(format!("/etc/netns/{}/resolv.conf", a.name))
        .expect("resolv.conf written");
    assert!(conf.contains("nameserver 10.220.0.1"), "{conf}");
    let hosts = a.exec_ok(&["getent", "hosts", &b.name]);
    assert!(hosts.starts_with(&eb.ip.to_string()), "{hosts}");
    // Detaching the last network gives the namespace its resolver configuration back.
    l.d.ctl_ok(&["detach", &a.name, "front"]);
    assert!(
        !std::path::Path::new(&format!("/etc/netns/{}/resolv.conf", a.name)).exists(),
        "resolv.conf left behind"
    );
}

#[test]
fn without_uplink_unknown_names_get_servfail_quickly() {
    require(&["dig"]);
    let d = Daemon::start();
    let a = Netns::new("a");
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.230.0.0/24"]);
    d.ctl_ok(&["attach", &a.name, "front"]);
    let t = Instant::now();
    let out = dig(&a, &["@10.230.0.1", "nosuch.example"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "SERVFAIL took {:?}",
        t.elapsed()
    );
    assert_eq!(dig(&a, &["@10.230.0.1", "+short", &a.name]), "10.230.0.2");
}
