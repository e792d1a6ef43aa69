//! Reliability: `--live-restore` across `kill -9` and graceful restarts. Real vswitchd, real
//! namespaces; everything is removed by the harness's guards, also when a test fails.

mod common;

use std::time::{Duration, Instant};

use common::*;
use switch::model::*;

/// `(ifindex, MAC, IPv4 address/prefix)` of `eth0` in `ns`.
fn eth0(ns: &Netns) -> (String, String, String) {
    let link = ns.exec_ok(&["ip", "-o", "link", "show", "eth0"]);
    let idx = link.split(':').next().unwrap_or("").trim().to_string();
    let (mac, ip) = iface(ns, "eth0");
    (idx, mac, ip)
}

/// How soon traffic must be back after a restarted daemon answers its API. The README states
/// 3 ms (flat) and 7 ms (overlay): the first ping after the restart is answered. 100 ms leaves
/// room for a loaded 2-core machine (running `ip netns exec ping` alone costs a few ms) and is
/// still below the 200 ms that a single lost ping costs, so it fails when the first ping is lost.
const RESTART_MS: u128 = 100;

/// Milliseconds until one ping from `ns` to `addr` is answered (polling with 200 ms pings), or
/// `None` after 10 s.
fn ms_until_ping(ns: &Netns, addr: &str) -> Option<u128> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        let ok = ns
            .exec(&["ping", "-n", "-q", "-c", "1", "-W", "0.2", addr])
            .status
            .success();
        if ok {
            return Some(t0.elapsed().as_millis());
        }
    }
    None
}

#[test]
fn live_restore_keeps_endpoints_through_kill_9_and_nat_flows_through_sigterm() {
    require(&["ping", "socat", "ss", "python3"]);
    let mut l = Lab::new(&["--live-restore"]);
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.230.0.0/24"]);
    l.d.ctl_ok(&["attach", &a.name, "front"]);
    let eb: EndpointInfo = l.d.ctl_json(&["attach", &b.name, "front"]);
    let bip = eb.ip.to_string();
    // An echo server published as 8080 -> 80: a restored flow must translate 80 back to 8080.
    let _echo = echo_server(&a, 80);
    l.d.ctl_ok(&["publish", &a.name, "8080:80"]);
    assert!(a.ping(&bip, 1), "no connectivity before the crash");
    let before = (eth0(&a), eth0(&b));

    // Crash: the devices stay in the namespaces with their addresses.
    l.d.kill9();
    assert_eq!(
        (eth0(&a), eth0(&b)),
        before,
        "devices changed while the daemon was dead"
    );
    l.d.spawn(&["--live-restore"]);
    let ms = ms_until_ping(&a, &bip).expect("no traffic within 10 s of the restart");
    eprintln!("traffic back {ms} ms after the restarted daemon answered");
    assert!(
        ms <= RESTART_MS,
        "traffic took {ms} ms to come back (limit {RESTART_MS} ms)"
    );
    assert_eq!(
        (eth0(&a), eth0(&b)),
        before,
        "the restarted daemon must take the same devices back"
    );
    assert!(l.d.log().contains("restored endpoint"), "{}", l.d.log());
    // The published port came back too.
    assert_eq!(echo_via(&l.out, UPLINK, 8080, "hello"), "hello");

    // An established connection through the published port survives a graceful restart.
    let mut client = HeldConnection::open(&l.out, UPLINK, 8080);
    let flows = established_dnat(&l.d);
    assert_eq!(flows.len(), 1, "{flows:?}");
    assert!(l.d.terminate().success());
    assert!(
        l.d.log().contains("kept 2 endpoint device(s)"),
        "{}",
        l.d.log()
    );
    assert_eq!((eth0(&a), eth0(&b)), before, "SIGTERM removed devices");
    // Without the flag this daemon takes the devices back, and removes them when it stops.
    l.d.spawn(&[]);
    assert_eq!(
        established_dnat(&l.d),
        flows,
        "the tracked connection was not restored"
    );
    assert_eq!(
        client.second().as_deref(),
        Some("two"),
        "the established connection did not survive the restart"
    );
    assert_eq!((eth0(&a), eth0(&b)), before);
    assert!(l.d.terminate().success());
    assert_eq!(a.links(), vec!["lo".to_string()], "a still has devices");
    assert_eq!(b.links(), vec!["lo".to_string()], "b still has devices");
}

#[test]
fn live_restore_brings_an_overlay_endpoint_back_with_its_peers() {
    require(&["ping"]);
    let u = Underlay::new(2);
    let mut d1 = Daemon::start_in(&u.hosts[0], &["--live-restore"]);
    let d2 = Daemon::start_in(&u.hosts[1], &[]);
    overlay_pair(&d1, &d2, "10.234.0.0/24", "77");
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    d1.ctl_ok(&["attach", &a.name, "ov", "--ip", "10.234.0.11"]);
    d2.ctl_ok(&["attach", &b.name, "ov", "--ip", "10.234.0.12"]);
    assert!(a.ping("10.234.0.12", 1));
    let before = eth0(&a);
    d1.kill9();
    d1.spawn(&["--live-restore"]);
    let ms = ms_until_ping(&a, "10.234.0.12").expect("no overlay traffic after the restart");
    eprintln!("overlay traffic back {ms} ms after the restarted daemon answered");
    assert!(
        ms <= RESTART_MS,
        "overlay traffic took {ms} ms to come back (limit {RESTART_MS} ms)"
    );
    assert_eq!(eth0(&a), before);
    let peers: Vec<String> = d1.ctl_json(&["peer", "ls", "ov"]);
    assert_eq!(peers, vec![Underlay::ip(2)]);
}

#[test]
fn without_live_restore_a_crash_takes_the_devices_and_a_restart_recreates_them() {
    require(&["ping"]);
    let mut d = Daemon::start();
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.230.1.0/24"]);
    d.ctl_ok(&["attach", &a.name, "front"]);
    let eb: EndpointInfo = d.ctl_json(&["attach", &b.name, "front"]);
    d.kill9();
    assert_eq!(
        a.links(),
        vec!["lo".to_string()],
        "a device outlived the crash"
    );
    d.spawn(&[]);
    assert!(ms_until_ping(&a, &eb.ip.to_string()).is_some());
    assert!(a.links().contains(&"eth0".to_string()));
}

/// Peak and current resident memory of process `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let s = proc_status(pid);
    (status_field(&s, "VmHWM:"), status_field(&s, "VmRSS:"))
}

/// Ping, TCP and UDP between `x` and the peer servers of `y` at `yip`.
fn still_talking(x: &Netns, yip: &str) {
    assert!(x.ping(yip, 2), "ping to {yip} failed after the attack");
    assert!(
        ask(x, "tcp", yip, 7000).starts_with("peer="),
        "TCP to {yip} failed after the attack"
    );
    assert!(
        ask(x, "udp", yip, 7001).starts_with("peer="),
        "UDP to {yip} failed after the attack"
    );
}

#[test]
fn hostile_frames_floods_and_a_syn_flood_leave_everyone_else_forwarding() {
    require(&["ping", "socat", "ss", "python3"]);
    // --flood-rate 5000: the broadcast storm below must outrun it even when a loaded machine
    // slows the sender (at the default 20 000/s a CI run's storm stayed under the rate).
    let l = Lab::new(&[
        "--fdb-max",
        "1000",
        "--conntrack-max",
        "2000",
        "--flood-rate",
        "5000",
    ]);
    let (m, f, b, c) = (
        Netns::new("m"),
        Netns::new("f"),
        Netns::new("b"),
        Netns::new("c"),
    );
    let net: NetworkInfo =
        l.d.ctl_json(&["network", "create", "front", "--subnet", "10.232.0.0/24"]);
    let em: EndpointInfo = l.d.ctl_json(&["attach", &m.name, "front"]);
    l.d.ctl_ok(&["attach", &f.name, "front", "--allow-spoof"]);
    let eb: EndpointInfo = l.d.ctl_json(&["attach", &b.name, "front"]);
    let ec: EndpointInfo = l.d.ctl_json(&["attach", &c.name, "front"]);
    let (bip, cip) = (eb.ip.to_string(), ec.ip.to_string());
    let _servers = [
        peer_server(&b, "tcp", "0.0.0.0", 7000),
        peer_server(&b, "udp", "0.0.0.0", 7001),
        peer_server(&c, "tcp", "0.0.0.0", 7000),
        peer_server(&c, "udp", "0.0.0.0", 7001),
        peer_server(&b, "tcp", "0.0.0.0", 80),
    ];
    l.d.ctl_ok(&["publish", &b.name, "8080:80"]);
    still_talking(&c, &bip);
    let pid = l.d.pid();
    let (peak0, _) = memory_kib(pid);

    // 1. Malformed frames from an ordinary endpoint, to the gateway (routed and NATed to the
    //    outside), to another endpoint, and to broadcast; then the same with oversized frames
    //    (the attacker raises its own MTU), then lying virtio-net headers.
    let targets = format!(
        "{}={},{}={bip},{}={OUTSIDE},ff:ff:ff:ff:ff:ff={cip}",
        net.gateway_mac, net.gateway, eb.mac, net.gateway_mac
    );
    let (mac, ip) = (em.mac.to_string(), em.ip.to_string());
    let r1 = hostile(&m, &["frames", "eth0", "30000", "1", &mac, &ip, &targets]);
    m.exec_ok(&["ip", "link", "set", "eth0", "mtu", "9000"]);
    let r2 = hostile(&m, &["frames", "eth0", "10000", "2", &mac, &ip, &targets]);
    let r3 = hostile(&m, &["vnet", "eth0", "10000", "3", &mac, &ip, &targets]);
    // Each phase must have sent its frames: the kernel takes every plain frame, and only the
    // virtio-net headers it can parse (about one in six of the lying ones).
    assert!(sent(&r1) >= 29_000, "phase 1 sent too little: {r1}");
    assert!(sent(&r2) >= 9_500, "phase 2 sent too little: {r2}");
    assert!(
        sent(&r3) >= 500,
        "the virtio-net phase sent too little: {r3}"
    );
    assert!(
        r2["kinds"]["oversized"].as_u64().unwrap_or(0) > 0,
        "no oversized frames: {r2}"
    );
    still_talking(&c, &bip);

    // 2. A MAC flood of 200 000 random sources from the --allow-spoof endpoint, and a broadcast
    //    storm of 100 000 ARP requests from the ordinary one.
    //    The TAPs have no queue discipline (noqueue), so when the switch is behind, the kernel
    //    refuses the flooder's sends (ENOBUFS) instead of queueing them: a few percent may be
    //    refused on a loaded machine (2.7% seen with the suite and a package install running).
    let mf = hostile(&f, &["macflood", "eth0", "200000"]);
    assert!(sent(&mf) >= 180_000, "MAC flood sent too little: {mf}");
    let st = hostile(&m, &["storm", "eth0", "100000", &ip]);
    assert!(sent(&st) >= 90_000, "broadcast storm sent too little: {st}");
    let fdb: Vec<FdbEntryInfo> = l.d.ctl_json(&["fdb", "front"]);
    assert!(fdb.len() <= 1000, "FDB grew past --fdb-max: {}", fdb.len());
    still_talking(&c, &bip);

    // 3. A SYN flood at the published port from random sources. The table stays within
    //    --conntrack-max, half-open flows make room for real connections, and a client gets
    //    through while the flood is still going (checked: the flooder has not finished).
    let mut flood = l
        .out
        .spawn(&["python3", HOSTILE, "synflood", UPLINK, "8080", "60000"]);
    let flooding = wait_until(10, || {
        l.d.ctl_json::<StatsInfo>(&["stats"]).events["conntrack_early_drop"] > 0
    });
    assert!(flooding, "the SYN flood never filled the table");
    let during = ask(&l.out, "tcp", UPLINK, 8080);
    let still_flooding = flood
        .0
        .as_mut()
        .expect("flooder")
        .try_wait()
        .expect("poll flooder")
        .is_none();
    assert_eq!(
        during,
        format!("peer={OUTSIDE}"),
        "the published port is locked out during the SYN flood"
    );
    assert!(
        still_flooding,
        "the flood ended before the client's answer came: nothing was shown (raise its count)"
    );
    let out = flood.wait();
    let sf: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "synflood report: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(sent(&sf) >= 59_000, "SYN flood sent too little: {sf}");
    let s: StatsInfo = l.d.ctl_json(&["stats"]);
    let ct: Vec<ConntrackEntry> = l.d.ctl_json(&["conntrack"]);
    assert!(
        ct.len() <= 2000,
        "conntrack grew past its limit: {}",
        ct.len()
    );
    assert!(
        s.events["conntrack_early_drop"] > 0,
        "the flood never filled the table: {:?}",
        s.events
    );
    assert_eq!(
        ask(&l.out, "tcp", UPLINK, 8080),
        format!("peer={OUTSIDE}"),
        "the published port is locked out after the SYN flood"
    );

    // Afterwards: alive, bounded, nothing lost, everyone else still talking, and every drop
    // counter the README lists for this barrage counted.
    let s: StatsInfo = l.d.ctl_json(&["stats"]);
    for d in [
        "malformed",
        "flood_limited",
        "fdb_full",
        "spoofed",
        "fragment",
        "no_route",
        "ttl",
    ] {
        assert!(s.drops[d] > 0, "no {d} drops counted: {:?}", s.drops);
    }
    let inspect: NetworkInfo = l.d.ctl_json(&["network", "inspect", "front"]);
    assert_eq!(inspect.endpoints.len(), 4, "endpoints lost: {inspect:?}");
    still_talking(&c, &bip);
    still_talking(&b, &cip);
    let (peak, rss) = memory_kib(pid);
    eprintln!(
        "vswitchd memory: peak {peak0} KiB before, {peak} KiB after ({rss} KiB resident); drops {:?}",
        s.drops
    );
    // The README states 10 -> 12 MiB. Allow twice that for the peak and 8 MiB of growth
    // (allocator and thread-stack noise between runs), far below what an unbounded table
    // under a 200 000-MAC flood or a SYN flood would take.
    assert!(
        peak <= 24 * 1024,
        "vswitchd peaked at {peak} KiB under hostile traffic (README: 12 MiB)"
    );
    assert!(
        peak <= peak0 + 8 * 1024,
        "vswitchd grew from {peak0} to {peak} KiB under hostile traffic (README: 10 -> 12 MiB)"
    );
}

#[test]
fn vxlan_garbage_and_lying_offload_headers_leave_the_overlay_forwarding() {
    require(&["ping", "socat", "ss", "python3"]);
    let u = Underlay::new(3);
    let d1 = Daemon::start_in(&u.hosts[0], &[]);
    let d2 = Daemon::start_in(&u.hosts[1], &[]);
    overlay_pair(&d1, &d2, "10.251.0.0/24", "42");
    let (a, m, b) = (Netns::new("a"), Netns::new("m"), Netns::new("b"));
    d1.ctl_ok(&["attach", &a.name, "ov", "--ip", "10.251.0.11"]);
    let em: EndpointInfo = d1.ctl_json(&["attach", &m.name, "ov", "--ip", "10.251.0.13"]);
    let eb: EndpointInfo = d2.ctl_json(&["attach", &b.name, "ov", "--ip", "10.251.0.12"]);
    let _servers = [
        peer_server(&b, "tcp", "0.0.0.0", 7000),
        peer_server(&b, "udp", "0.0.0.0", 7001),
    ];
    still_talking(&a, "10.251.0.12");
    let before: StatsInfo = d1.ctl_json(&["stats"]);
    // Garbage at the VXLAN port from a peer (host 2) and from a stranger (host 3).
    let v1 = hostile(
        &u.hosts[1],
        &["vxlan", &Underlay::ip(1), "4789", "20000", "42"],
    );
    let v2 = hostile(
        &u.hosts[2],
        &["vxlan", &Underlay::ip(1), "4789", "10000", "42"],
    );
    assert!(sent(&v1) >= 19_500, "VXLAN garbage from the peer: {v1}");
    assert!(sent(&v2) >= 9_500, "VXLAN garbage from the stranger: {v2}");
    // Lying offload metadata from an overlay endpoint, to a remote endpoint (the switch
    // segments super-frames for the tunnel itself) and to the gateway.
    let net: NetworkInfo = d1.ctl_json(&["network", "inspect", "ov"]);
    let targets = format!("{}=10.251.0.12,{}=10.251.0.1", eb.mac, net.gateway_mac);
    let r4 = hostile(
        &m,
        &[
            "vnet",
            "eth0",
            "10000",
            "4",
            &em.mac.to_string(),
            "10.251.0.13",
            &targets,
        ],
    );
    let r5 = hostile(
        &m,
        &[
            "frames",
            "eth0",
            "10000",
            "5",
            &em.mac.to_string(),
            "10.251.0.13",
            &targets,
        ],
    );
    assert!(
        sent(&r4) >= 500,
        "overlay virtio-net phase sent too little: {r4}"
    );
    assert!(
        sent(&r5) >= 9_500,
        "overlay malformed phase sent too little: {r5}"
    );
    let s: StatsInfo = d1.ctl_json(&["stats"]);
    for d in ["malformed", "vxlan_unknown_vni", "vxlan_unknown_peer"] {
        assert!(
            s.drops[d] > before.drops[d],
            "no {d} drops counted: {:?}",
            s.drops
        );
    }
    still_talking(&a, "10.251.0.12");
    let (peak, _) = memory_kib(d1.pid());
    eprintln!(
        "vswitchd (VTEP 1) peak memory {peak} KiB; drops {:?}",
        s.drops
    );
}

/// Open file descriptors, threads and resident KiB of process `pid`.
fn footprint(pid: u32) -> (usize, u64, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list fds")
        .count();
    let s = proc_status(pid);
    (
        fds,
        status_field(&s, "Threads:"),
        status_field(&s, "VmRSS:"),
    )
}

/// The soak: 100 namespaces attached and detached in a loop while two other endpoints exchange
/// ping and TCP traffic. `VSWITCH_SOAK_SECS` sets the duration (CI: 20 s; on demand, e.g.
/// `VSWITCH_SOAK_SECS=600 cargo test --test reliability soak -- --nocapture`). Each round must
/// leave the daemon with the file descriptors, threads and devices it started with, the
/// namespaces with only `lo`, and its memory flat; the traffic must not notice.
#[test]
fn soak_attach_and_detach_100_namespaces_under_traffic() {
    require(&["ping", "iperf3", "ss"]);
    let secs: u64 = std::env::var("VSWITCH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let host = Netns::new("sh");
    let d = Daemon::start_in(&host, &[]);
    d.ctl_ok(&["network", "create", "soak", "--subnet", "10.233.0.0/22"]);
    let (x, y) = (Netns::new("x"), Netns::new("y"));
    d.ctl_ok(&["attach", &x.name, "soak"]);
    let ey: EndpointInfo = d.ctl_json(&["attach", &y.name, "soak"]);
    let yip = ey.ip.to_string();
    let churn: Vec<Netns> = (0..100).map(|i| Netns::new(&format!("s{i}"))).collect();
    let _server = y.spawn(&["iperf3", "-s", "-p", "5201"]);
    wait_listening(&y, "tcp", 5201);
    let pings = (secs * 20).to_string();
    // -w: wait for every reply (a late last reply is not a lost one).
    let deadline = (secs + 10).to_string();
    let ping = x.spawn(&[
        "ping", "-n", "-q", "-i", "0.05", "-c", &pings, "-w", &deadline, &yip,
    ]);
    let tcp = x.spawn(&[
        "iperf3",
        "-c",
        &yip,
        "-p",
        "5201",
        "-b",
        "50M",
        "-t",
        &secs.to_string(),
        "-J",
    ]);
    let pid = d.pid();
    let host_links = host.links();
    let t0 = Instant::now();
    let mut baseline = None;
    let mut rounds = 0;
    while t0.elapsed() < Duration::from_secs(secs) || rounds < 2 {
        for (i, ns) in churn.iter().enumerate() {
            let e: EndpointInfo = d.ctl_json(&["attach", &ns.name, "soak"]);
            if i % 25 == 0 {
                assert!(ns.ping(&yip, 1), "fresh endpoint {} cannot reach y", e.ip);
            }
        }
        for ns in &churn {
            d.ctl_ok(&["detach", &ns.name, "soak"]);
        }
        rounds += 1;
        for ns in &churn {
            assert_eq!(
                ns.links(),
                vec!["lo".to_string()],
                "{} kept a device",
                ns.name
            );
        }
        assert_eq!(
            host.links(),
            host_links,
            "devices left in the daemon's namespace"
        );
        let now = footprint(pid);
        eprintln!(
            "soak round {rounds} at {:.0} s: {} fds, {} threads, {} KiB resident",
            t0.elapsed().as_secs_f64(),
            now.0,
            now.1,
            now.2
        );
        // Round 1 sets the baseline (allocator pools and tables reach their working size).
        let (fds, threads, rss) = *baseline.get_or_insert(now);
        assert_eq!(now.0, fds, "file descriptors leak");
        // The control API's blocking pool keeps a few idle threads for 10 s: allow for them,
        // not for one per attach.
        assert!(
            now.1 <= threads + 4,
            "threads leak: {threads} after round 1, {} now",
            now.1
        );
        assert!(
            now.2 <= rss + 4096,
            "memory grows: {} KiB after round 1, {} KiB now",
            rss,
            now.2
        );
    }
    let p = ping.wait();
    let out = String::from_utf8_lossy(&p.stdout);
    let (sent, received) =
        ping_summary(&out).unwrap_or_else(|| panic!("no ping summary from the soak: {out}"));
    let t = tcp.wait();
    eprintln!("soak: {rounds} rounds of 100 attach+detach; {received} of {sent} pings answered");
    // The README states 0% loss: no reply may be lost.
    assert!(
        sent >= secs as u32 * 20 && received == sent,
        "ping lost {} of {sent} replies during the soak: {out}",
        sent - received
    );
    assert!(
        t.status.success(),
        "TCP between the steady endpoints failed during the soak: {}",
        String::from_utf8_lossy(&t.stdout)
    );
    let net: NetworkInfo = d.ctl_json(&["network", "inspect", "soak"]);
    assert_eq!(net.endpoints.len(), 2, "{net:?}");
    assert!(!d.log().contains("panicked"), "{}", d.log());
}
