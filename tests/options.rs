//! The daemon's options and the behaviours no other test pins down (issue 13): conntrack
//! timeouts, FDB aging, network MTU and the overlay's oversize drops and super-frame cut,
//! captures in every direction and a capture nobody reads, the flood limit, the VTEP's address
//! and port, and worker polling. Real vswitchd, real namespaces, real tools; everything a test
//! makes is removed by the harness's guards, also when it fails.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use switch::model::*;

/// Send one UDP datagram from `ns` to `addr:port` and return the first answer (empty when none
/// came). Unlike [`ask`] it returns as soon as the answer is in, so a flow's last packet is
/// known to within milliseconds; it sends up to three times (2 s apart) when nothing comes back.
fn udp_ask(ns: &Netns, addr: &str, port: u16) -> String {
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
for _ in range(3):
    s.sendto(b"x\n", (sys.argv[1], int(sys.argv[2])))
    try:
        print(s.recv(2048).decode().strip())
        break
    except socket.timeout:
        pass
"#;
    let o = ns.exec(&["python3", "-c", script, addr, &port.to_string()]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `tcpdump -nr FILE` of a capture that may still be written to (a truncated last record is
/// only a warning here).
fn pcap_text(file: &Path) -> String {
    let o = run(&["tcpdump", "-nr", file.to_str().expect("utf-8 path")]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Poll the capture `file` until `pred` holds for its text (at most `secs`); returns the text.
fn wait_pcap(file: &Path, secs: u64, pred: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    wait_until(secs, || {
        text = pcap_text(file);
        pred(&text)
    });
    text
}

/// Wait (at most 5 s) until the capture `file` shows every line of `want` (`tcpdump -n` text),
/// and fail naming the first one `what` (the capture) lacks; returns the text.
fn capture_shows(file: &Path, what: &str, want: &[impl AsRef<str>]) -> String {
    let seen = wait_pcap(file, 5, |t| want.iter().all(|w| t.contains(w.as_ref())));
    for w in want {
        let w = w.as_ref();
        assert!(seen.contains(w), "{what} lacks `{w}`: {seen}");
    }
    seen
}

/// Wait (at most `secs`) for a background process to exit; true when it did.
fn exited(k: &mut KillOnDrop, secs: u64) -> bool {
    let c = k.0.as_mut().expect("child");
    wait_until(secs, || matches!(c.try_wait(), Ok(Some(_))))
}

fn sha256(file: &Path) -> String {
    run_ok(&["sha256sum", file.to_str().expect("utf-8 path")])
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// 1. Conntrack timeouts
// ---------------------------------------------------------------------------------------------

/// The entry of `proto` whose original destination port is `dport`.
fn ct_entry(d: &Daemon, proto: &str, dport: &str) -> Option<ConntrackEntry> {
    conntrack(d, None)
        .into_iter()
        .find(|e| e.proto == proto && e.orig.ends_with(&format!(":{dport}")))
}

#[test]
fn conntrack_timeouts_follow_the_options_and_other_tcp_states_keep_linux_defaults() {
    require(&["ping", "socat", "ss", "python3"]);
    // Distinct values, so each entry shows which timeout it got.
    let l = Lab::new(&[
        "--ct-icmp-timeout",
        "2",
        "--ct-udp-timeout",
        "3",
        "--ct-tcp-timeout",
        "4",
        "--ct-udp-stream-timeout",
        "5",
    ]);
    // A next hop for the documentation range, where the outside drops everything silently: a
    // server that never answers.
    l.set_gateway();
    l.out
        .exec_ok(&["ip", "route", "add", "blackhole", "198.51.100.0/24"]);
    let a = Netns::new("a");
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.230.0.0/24"]);
    attach(&l.d, &a, "front");
    let _tcp = peer_server(&l.out, "tcp", OUTSIDE, 7000);
    let _udp = peer_server(&l.out, "udp", OUTSIDE, 7001);
    let _sink = l.out.spawn(&[
        "socat",
        "-u",
        "UDP4-RECV:7002,bind=10.210.0.2",
        "OPEN:/dev/null",
    ]);
    wait_listening(&l.out, "udp", 7002);
    let _idle_srv = l.out.spawn(&[
        "socat",
        "TCP4-LISTEN:7010,bind=10.210.0.2,reuseaddr",
        "SYSTEM:sleep 60",
    ]);
    wait_listening(&l.out, "tcp", 7010);

    // Long-lived states first: their timeouts are Linux's, not the options'.
    // A closed connection: TIME_WAIT, 120 s (CLOSE, 10 s, if it ended with a reset).
    assert_eq!(ask(&a, "tcp", OUTSIDE, 7000), format!("peer={UPLINK}"));
    let closed = ct_entry(&l.d, "tcp", "7000").expect("no entry for the closed connection");
    eprintln!("closed connection: {closed:?}");
    match closed.state.as_str() {
        "TIME_WAIT" => assert!(
            (110..=120).contains(&closed.expires_secs),
            "TIME_WAIT must keep Linux's 120 s, not --ct-tcp-timeout: {closed:?}"
        ),
        "CLOSE" => assert!(closed.expires_secs <= 10, "{closed:?}"),
        _ => panic!("a closed connection must be in TIME_WAIT or CLOSE: {closed:?}"),
    }
    // A SYN nobody answers: SYN_SENT, 120 s.
    let o = a.exec(&[
        "socat",
        "-u",
        "OPEN:/dev/null",
        "TCP4:198.51.100.7:80,connect-timeout=1",
    ]);
    assert!(!o.status.success(), "something answered in 198.51.100.0/24");
    let syn = ct_entry(&l.d, "tcp", "80").expect("no entry for the unanswered SYN");
    assert_eq!(syn.state, "SYN_SENT", "{syn:?}");
    assert!(
        (115..=120).contains(&syn.expires_secs),
        "SYN_SENT must keep Linux's 120 s: {syn:?}"
    );

    // Short ones, each checked right after its last packet.
    struct Short {
        what: &'static str,
        proto: &'static str,
        dport: String,
        state: &'static str,
        timeout: u64,
        last: Instant,
        gone: Option<Duration>,
    }
    let mut short = Vec::new();
    let mut check = |what, proto, dport: &str, state, timeout: u64| {
        let last = Instant::now();
        let e = ct_entry(&l.d, proto, dport).unwrap_or_else(|| panic!("no {what} entry"));
        assert_eq!(e.state, state, "{what}: {e:?}");
        assert!(
            (timeout - 1..=timeout).contains(&e.expires_secs),
            "{what} must expire in about {timeout} s: {e:?}"
        );
        short.push(Short {
            what,
            proto,
            dport: dport.to_string(),
            state,
            timeout,
            last,
            gone: None,
        });
    };
    // An idle established connection (both ends sleep).
    let _idle = a.spawn(&["socat", "TCP4:10.210.0.2:7010", "SYSTEM:sleep 60"]);
    assert!(
        wait_until(5, || ct_entry(&l.d, "tcp", "7010")
            .is_some_and(|e| e.state == "ESTABLISHED")),
        "the idle connection never became ESTABLISHED: {:?}",
        conntrack(&l.d, None)
    );
    check("idle TCP", "tcp", "7010", "ESTABLISHED", 4);
    assert_eq!(udp_ask(&a, OUTSIDE, 7001), format!("peer={UPLINK}"));
    check("answered UDP", "udp", "7001", "REPLIED", 5);
    a.exec_ok(&["sh", "-c", "echo x | socat -u - UDP4:10.210.0.2:7002"]);
    check("unanswered UDP", "udp", "7002", "UNREPLIED", 3);
    assert!(a.ping(OUTSIDE, 1), "egress ping failed");
    let icmp = conntrack(&l.d, None)
        .into_iter()
        .find(|e| e.proto == "icmp")
        .expect("no ICMP entry");
    assert!((1..=2).contains(&icmp.expires_secs), "{icmp:?}");
    let id = icmp.orig.rsplit(':').next().unwrap_or_default().to_string();
    check("ICMP echo", "icmp", &id, "REPLIED", 2);

    // Each is swept once its timeout has passed (the sweep runs every second), not before.
    let done = wait_until(12, || {
        let ct = conntrack(&l.d, None);
        for s in short.iter_mut().filter(|s| s.gone.is_none()) {
            if !ct
                .iter()
                .any(|e| e.proto == s.proto && e.orig.ends_with(&format!(":{}", s.dport)))
            {
                s.gone = Some(s.last.elapsed());
            }
        }
        short.iter().all(|s| s.gone.is_some())
    });
    let report: Vec<String> = short
        .iter()
        .map(|s| {
            format!(
                "{} ({}): {:?} after {:?}",
                s.what, s.state, s.timeout, s.gone
            )
        })
        .collect();
    eprintln!("conntrack expiry: {report:?}");
    assert!(
        done,
        "entries outlived their timeouts: {report:?} {:?}",
        conntrack(&l.d, None)
    );
    for s in &short {
        let gone = s.gone.expect("checked above").as_secs_f64();
        let t = s.timeout as f64;
        assert!(
            gone >= t - 0.5 && gone <= t + 3.0,
            "{} expired after {gone:.1} s, its timeout is {t} s",
            s.what
        );
    }
    // Positive control beside them: the long-lived entries are still there.
    let mut long = vec![("SYN_SENT", "80")];
    if closed.state == "TIME_WAIT" {
        long.push(("TIME_WAIT", "7000"));
    }
    for (what, dport) in long {
        let e = ct_entry(&l.d, "tcp", dport)
            .unwrap_or_else(|| panic!("the {what} entry went with the short ones"));
        assert!(e.expires_secs >= 100, "{what}: {e:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. FDB aging
// ---------------------------------------------------------------------------------------------

#[test]
fn fdb_aging_forgets_a_silent_mac_and_keeps_an_active_one() {
    require(&["ping"]);
    let d = Daemon::start_with(&["--fdb-aging", "3"]);
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.231.0.0/24"]);
    let ea = attach(&d, &a, "front");
    let eb = attach(&d, &b, "front");
    let fdb = |d: &Daemon| -> Vec<FdbEntryInfo> { d.ctl_json(&["fdb", "front"]) };
    let has = |v: &[FdbEntryInfo], mac: &str| v.iter().any(|e| e.mac == mac);

    assert!(a.ping("10.231.0.3", 2), "a cannot reach b");
    let b_last = Instant::now();
    // Positive control: both learned, on their ports, just seen.
    let now = fdb(&d);
    for e in [&ea, &eb] {
        let entry = now
            .iter()
            .find(|f| f.mac == e.mac)
            .unwrap_or_else(|| panic!("{} not learned: {now:?}", e.mac));
        assert_eq!(entry.port, e.port, "{entry:?}");
        assert!(entry.age_secs <= 1, "{entry:?}");
    }
    // a keeps talking (to the gateway, which b never hears); b is silent from now on.
    let _keepalive = a.spawn(&["ping", "-n", "-q", "-i", "0.2", "10.231.0.1"]);
    let mut seen = Vec::new();
    let gone = wait_until(8, || {
        seen = fdb(&d);
        !has(&seen, &eb.mac)
    });
    let after = b_last.elapsed();
    assert!(gone, "b's MAC outlived --fdb-aging 3: {seen:?}");
    assert!(
        after >= Duration::from_millis(2500),
        "b's MAC was forgotten after {after:?}, before the 3 s aging time"
    );
    assert!(
        has(&seen, &ea.mac),
        "a's MAC aged out although a kept sending: {seen:?}"
    );
    // b is reachable again (flooded, then learned anew).
    assert!(a.ping("10.231.0.3", 2), "a cannot reach b after b aged out");
    assert!(has(&fdb(&d), &eb.mac), "b not learned again");
}

// ---------------------------------------------------------------------------------------------
// 3. Network MTU, oversize frames, the flat -> overlay super-frame cut
// ---------------------------------------------------------------------------------------------

#[test]
fn network_mtu_reaches_the_endpoints_and_full_size_df_frames_cross() {
    require(&["ping"]);
    let d = Daemon::start();
    let (a, b, c) = (Netns::new("a"), Netns::new("b"), Netns::new("c"));
    d.ctl_ok(&[
        "network",
        "create",
        "jumbo",
        "--subnet",
        "10.232.0.0/24",
        "--mtu",
        "9000",
    ]);
    d.ctl_ok(&["network", "create", "plain", "--subnet", "10.232.1.0/24"]);
    let ea = attach(&d, &a, "jumbo");
    attach(&d, &b, "jumbo");
    let ec = attach(&d, &c, "plain");
    assert_eq!(
        (ea.mtu, ec.mtu),
        (9000, 1500),
        "attach reports the network's MTU"
    );
    for (ns, mtu) in [(&a, 9000), (&b, 9000), (&c, 1500)] {
        let link = ns.exec_ok(&["ip", "-o", "link", "show", "dev", "eth0"]);
        assert!(
            link.contains(&format!(" mtu {mtu} ")),
            "{}: {link}",
            ns.name
        );
    }
    let ls: Vec<NetworkInfo> = d.ctl_json(&["network", "ls"]);
    assert!(
        ls.iter().any(|n| n.name == "jumbo" && n.mtu == 9000),
        "{ls:?}"
    );
    // The largest packet that fits, with DF, both ways: 9000 - 28 bytes of ICMP payload.
    full_size_pings_both_ways("a <-> b", &a, "10.232.0.2", &b, "10.232.0.3", 9000);
    let df = ["-M", "do", "-s", "8972"];
    assert_eq!(
        a.pings_with("10.232.0.1", 2, &df),
        2,
        "a -> gateway, 9000-byte packets lost"
    );
    // One byte more does not fit the interface (refused by a's own stack, not the switch).
    let o = a.exec(&[
        "ping",
        "-n",
        "-c",
        "1",
        "-M",
        "do",
        "-s",
        "8973",
        "10.232.0.3",
    ]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("too long"),
        "a 9001-byte packet went out of a 9000-byte interface: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // The other network keeps 1500.
    let c_df = ["-M", "do", "-s", "1472"];
    assert_eq!(
        c.pings_with("10.232.1.1", 2, &c_df),
        2,
        "c -> its gateway at 1500"
    );
    // An endpoint that raises its own MTU past its network's: the larger frames are dropped
    // and counted, not delivered to endpoints set up for 1500 (the control above, at 1500,
    // was answered).
    c.exec_ok(&["ip", "link", "set", "eth0", "mtu", "3000"]);
    let before = drops(&d, "oversize");
    assert_eq!(
        c.pings_with("10.232.1.1", 2, &["-M", "do", "-s", "2000"]),
        0,
        "a 2028-byte packet crossed a 1500-byte network"
    );
    assert!(
        drops(&d, "oversize") >= before + 2,
        "oversize frames from an endpoint not counted: {} -> {}",
        before,
        drops(&d, "oversize")
    );
}

#[test]
fn overlay_mtu_drops_oversize_frames_and_flat_tcp_is_cut_to_fit() {
    require(&["ping", "socat", "ss", "bridge", "sha256sum"]);
    let u = Underlay::new(2);
    let d = Daemon::start_in(&u.hosts[0], &[]);
    // Host 2 is a kernel vxlan host on the overlay, MTU 1400 like the overlay network, with a
    // route to the flat network through the (anycast) gateway.
    let k = &u.hosts[1];
    kernel_vxlan_host(k, "42", "10.240.0.2", "10.240.0.1", "10.233.0.50/24", 1400);
    k.exec_ok(&[
        "ip",
        "route",
        "add",
        "10.233.1.0/24",
        "via",
        "10.233.0.1",
        "dev",
        "vx0",
    ]);
    overlay_network(
        &d,
        "ov",
        "10.233.0.0/24",
        "42",
        &["10.240.0.2"],
        &["--mtu", "1400"],
    );
    d.ctl_ok(&["network", "create", "flat", "--subnet", "10.233.1.0/24"]);
    d.ctl_ok(&["network", "link", "flat", "ov"]);
    let (a, c) = (Netns::new("a"), Netns::new("c"));
    let ea = attach(&d, &a, "flat");
    let ec = attach(&d, &c, "ov");
    assert_eq!((ea.mtu, ec.mtu), (1500, 1400));
    let link = c.exec_ok(&["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains(" mtu 1400 "), "{link}");
    let c_ip = ec.ip.to_string();

    // Full-size frames with DF cross the overlay both ways.
    full_size_pings_both_ways("c <-> kernel host", &c, &c_ip, k, "10.233.0.50", 1400);
    let full = ["-M", "do", "-s", "1372"];

    // c raises its MTU by hand: frames beyond the overlay MTU are dropped and counted (the
    // underlay is never fragmented); full-size ones still pass.
    c.exec_ok(&["ip", "link", "set", "eth0", "mtu", "1500"]);
    let before = drops(&d, "oversize");
    let big = ["-M", "do", "-s", "1472"];
    assert_eq!(
        c.pings_with("10.233.0.50", 2, &big),
        0,
        "a 1500-byte frame crossed a 1400 overlay"
    );
    let after = drops(&d, "oversize");
    assert!(
        after >= before + 2,
        "oversize went from {before} to {after}"
    );
    assert_eq!(
        c.pings_with("10.233.0.50", 2, &full),
        2,
        "full-size frames stopped passing once c raised its MTU"
    );

    // TCP from the flat network (MTU 1500, TSO super-frames) routed into the overlay: the
    // super-frames are cut into segments that fit the overlay; a few MB arrive intact, and
    // nothing of it is counted oversize. Then the other way.
    assert!(
        wait_until(5, || a.pings("10.233.0.50", 1) == 1),
        "a (flat) never reached the kernel host through the link"
    );
    let data = d.dir.join("send.bin");
    run_ok(&[
        "sh",
        "-c",
        &format!("head -c 4194304 /dev/urandom > {}", data.display()),
    ]);
    let want = sha256(&data);
    let oversize0 = drops(&d, "oversize");
    let vtep = |d: &Daemon| -> PortCounters {
        let ports: Vec<PortInfo> = d.ctl_json(&["ports"]);
        ports
            .into_iter()
            .find(|p| p.kind == "vxlan")
            .expect("no VTEP port")
            .counters
    };
    for (from, to, to_ip) in [(&a, k, "10.233.0.50"), (k, &a, "10.233.1.2")] {
        let out = d.dir.join(format!("recv-{}.bin", to.name));
        let mut srv = to.spawn(&[
            "socat",
            "-u",
            &format!("TCP4-LISTEN:7100,bind={to_ip},reuseaddr"),
            &format!("CREATE:{}", out.display()),
        ]);
        wait_listening(to, "tcp", 7100);
        let tx0 = vtep(&d);
        // What a's stack hands the switch: TCP super-frames (TSO), larger than the overlay MTU.
        let cap = d.dir.join("a.pcap");
        let capture = (from.name == a.name).then(|| {
            d.capture_bg(
                &format!("{}/eth0", a.name),
                &["-w", cap.to_str().unwrap(), "--timeout", "60"],
            )
        });
        from.exec_ok(&[
            "timeout",
            "30",
            "socat",
            "-u",
            &format!("OPEN:{}", data.display()),
            &format!("TCP4:{to_ip}:7100,connect-timeout=5"),
        ]);
        assert!(
            exited(&mut srv, 20),
            "the receiver in {} did not finish",
            to.name
        );
        let tx1 = vtep(&d);
        assert_eq!(
            sha256(&out),
            want,
            "{} -> {}: the data arrived damaged or incomplete ({} bytes)",
            from.name,
            to.name,
            std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0)
        );
        if from.name == a.name {
            // Cut to the overlay MTU: at least one datagram per 1348 bytes of data, none larger
            // than VXLAN + a 1400-byte inner packet (+ 14 bytes of Ethernet).
            let (n, bytes) = (tx1.tx_packets - tx0.tx_packets, tx1.tx_bytes - tx0.tx_bytes);
            eprintln!("flat -> overlay: {n} VXLAN datagrams, {bytes} bytes");
            drop(capture);
            let largest = pcap_text(&cap)
                .lines()
                .filter(|l| l.contains("> 10.233.0.50.7100:"))
                .filter_map(|l| l.rsplit("length ").next()?.trim().parse::<u64>().ok())
                .max()
                .unwrap_or(0);
            assert!(
                largest > 1400,
                "a sent no TCP super-frames (largest payload {largest}): nothing was cut"
            );
            assert!(n >= 4_194_304 / 1360, "only {n} VXLAN datagrams for 4 MiB");
            assert!(
                bytes / n <= 8 + 14 + 1400,
                "{n} datagrams of {bytes} bytes: on average larger than the overlay MTU allows"
            );
        }
    }
    assert_eq!(
        drops(&d, "oversize"),
        oversize0,
        "TCP segments were dropped as oversize"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Captures
// ---------------------------------------------------------------------------------------------

#[test]
fn captures_see_both_directions_of_an_endpoint_the_gateway_and_the_uplink() {
    require(&["ping", "tcpdump"]);
    let l = Lab::new(&[]);
    let (a, b, c) = (Netns::new("a"), Netns::new("b"), Netns::new("c"));
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.234.0.0/24"]);
    l.d.ctl_ok(&["network", "create", "back", "--subnet", "10.234.1.0/24"]);
    attach(&l.d, &a, "front");
    attach(&l.d, &b, "front");
    attach(&l.d, &c, "back");
    let net: NetworkInfo = l.d.ctl_json(&["network", "inspect", "front"]);
    assert!(a.ping("10.234.0.3", 1), "warm-up ping failed");
    let file = |n: &str| l.d.dir.join(n);
    let path = |n: &str| file(n).to_str().unwrap().to_string();

    // An endpoint: what it sends and what it is sent.
    let ep =
        l.d.capture_bg(&format!("{}/eth0", a.name), &["-w", &path("a.pcap")]);
    assert!(a.ping("10.234.0.3", 2), "a -> b");
    assert!(b.ping("10.234.0.2", 2), "b -> a");
    let both = [
        "10.234.0.2 > 10.234.0.3: ICMP echo request",
        "10.234.0.3 > 10.234.0.2: ICMP echo reply",
        "10.234.0.3 > 10.234.0.2: ICMP echo request",
        "10.234.0.2 > 10.234.0.3: ICMP echo reply",
    ];
    capture_shows(&file("a.pcap"), "a's capture", &both);

    // A network: frames entering it and what the gateway answers (ARP and ICMP); nothing of
    // the other network.
    let nc = l.d.capture_bg("front", &["-w", &path("front.pcap")]);
    a.exec_ok(&["ip", "neigh", "flush", "all"]);
    assert!(a.ping("10.234.0.1", 2), "a -> its gateway");
    assert!(c.ping("10.234.1.1", 2), "c -> its gateway (other network)");
    let gw = [
        "ARP, Request who-has 10.234.0.1 tell 10.234.0.2".to_string(),
        format!("ARP, Reply 10.234.0.1 is-at {}", net.gateway_mac),
        "10.234.0.2 > 10.234.0.1: ICMP echo request".to_string(),
        "10.234.0.1 > 10.234.0.2: ICMP echo reply".to_string(),
    ];
    let seen = capture_shows(&file("front.pcap"), "the capture of front", &gw);
    assert!(
        !seen.contains("10.234.1."),
        "front's capture saw back's frames: {seen}"
    );
    drop(nc);

    // The uplink: the same ping leaves NATed to the uplink address; the endpoint's own
    // capture (still running) shows it with a's address.
    let up = l.d.capture_bg("uplink", &["-w", &path("up.pcap")]);
    assert!(a.ping(OUTSIDE, 2), "egress ping failed");
    let nat = [
        format!("{UPLINK} > {OUTSIDE}: ICMP echo request"),
        format!("{OUTSIDE} > {UPLINK}: ICMP echo reply"),
    ];
    let seen = capture_shows(&file("up.pcap"), "the uplink capture", &nat);
    assert!(
        !seen.contains("10.234.0.2"),
        "an endpoint address leaked onto the uplink: {seen}"
    );
    let inside = [
        format!("10.234.0.2 > {OUTSIDE}: ICMP echo request"),
        format!("{OUTSIDE} > 10.234.0.2: ICMP echo reply"),
    ];
    capture_shows(&file("a.pcap"), "a's capture", &inside);
    drop((ep, up));
}

/// `vswitchctl capture TARGET` writing into a pipe nobody reads, once the capture is
/// registered (its pcap header came through). The pipe is returned, to stay open and unread.
fn stalled_capture(d: &Daemon, target: &str) -> (KillOnDrop, ChildStdout) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["capture", target])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start vswitchctl capture");
    let mut out = c.stdout.take().expect("capture stdout");
    let k = KillOnDrop(Some(c));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut hdr = [0u8; 24];
        let r = out.read_exact(&mut hdr).map(|_| hdr);
        let _ = tx.send((r, out));
    });
    let (hdr, out) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the capture did not start within 10 s");
    let hdr = hdr.expect("read the pcap header");
    assert_eq!(hdr[..4], [0xd4, 0xc3, 0xb2, 0xa1], "not a pcap header");
    (k, out)
}

#[test]
fn a_capture_nobody_reads_drops_copies_and_forwarding_goes_on() {
    require(&["ping", "iperf3", "ss"]);
    let d = Daemon::start();
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.235.0.0/24"]);
    attach(&d, &a, "front");
    attach(&d, &b, "front");
    assert!(a.ping("10.235.0.3", 1), "warm-up ping failed");
    assert_eq!(drops(&d, "capture_dropped"), 0);
    let rss0 = rss_kib(d.pid());

    let stalled = stalled_capture(&d, &format!("{}/eth0", b.name));
    let bytes = iperf_bytes(&a, &b, "10.235.0.3", 2);
    let dropped = drops(&d, "capture_dropped");
    let rss1 = rss_kib(d.pid());
    eprintln!(
        "stalled capture: iperf3 moved {bytes} bytes, capture_dropped {dropped}, \
         RSS {rss0} -> {rss1} KiB"
    );
    assert!(
        dropped > 0,
        "a capture nobody reads dropped nothing ({bytes} bytes went through)"
    );
    // A session holds at most 8 MiB of frames (TCP super-frames would take 256 MiB in 4096
    // slots): with the workers' own buffers, the daemon grows by far less than 32 MiB.
    assert!(
        rss1 <= rss0 + 32 * 1024,
        "a capture nobody reads grew the daemon from {rss0} to {rss1} KiB"
    );
    assert!(
        bytes > 5_000_000,
        "TCP slowed to {bytes} bytes in 2 s by a stalled capture"
    );
    assert!(
        a.ping("10.235.0.3", 5),
        "ping lost behind a stalled capture"
    );
    assert!(
        drops(&d, "capture_dropped") > dropped,
        "the stalled capture did not count the ping's copies"
    );

    // The client goes: the session ends and no copy is made (or dropped) any more.
    drop(stalled);
    let ended = wait_until(5, || {
        let before = drops(&d, "capture_dropped");
        a.pings("10.235.0.3", 2) == 2 && drops(&d, "capture_dropped") == before
    });
    assert!(ended, "the capture session outlived its client");
    eprintln!("after the session ended: RSS {} KiB", rss_kib(d.pid()));
}

// ---------------------------------------------------------------------------------------------
// 5. Flood limit
// ---------------------------------------------------------------------------------------------

/// Send `count` broadcast ARP requests from `ns`'s eth0 (tests/tools/hostile.py storm); how
/// many went out.
fn storm(ns: &Netns, ip: &str, count: u32) -> u64 {
    sent(&hostile(ns, &["storm", "eth0", &count.to_string(), ip]))
}

#[test]
fn flood_rate_limits_broadcasts_per_port_above_the_rate_only() {
    require(&["ping", "python3"]);
    let d = Daemon::start_with(&["--flood-rate", "200"]);
    let (a, b, c) = (Netns::new("a"), Netns::new("b"), Netns::new("c"));
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.236.0.0/24"]);
    attach(&d, &a, "front");
    attach(&d, &b, "front");
    attach(&d, &c, "front");
    assert!(a.ping("10.236.0.3", 1), "warm-up ping failed");
    let counts = |d: &Daemon| {
        let s = stats(d);
        (s.drops["flood_limited"], s.events["flooded"])
    };

    // Below the rate: 150 a second for three seconds (more than one second's worth in all).
    let (l0, f0) = counts(&d);
    for i in 0..3 {
        if i > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        assert_eq!(storm(&a, "10.236.0.2", 150), 150);
    }
    let (l1, f1) = counts(&d);
    assert_eq!(l1, l0, "broadcasts below --flood-rate were limited");
    assert!(f1 - f0 >= 450, "only {} of 450 broadcasts flooded", f1 - f0);

    // Far above it: most are dropped and counted.
    let t = Instant::now();
    let sent = storm(&a, "10.236.0.2", 4000);
    let secs = t.elapsed().as_secs_f64();
    let (l2, f2) = counts(&d);
    let passed = f2 - f1;
    eprintln!(
        "storm: {sent} sent in {secs:.2} s, {passed} flooded, {} limited",
        l2 - l1
    );
    assert!(sent >= 3900, "the storm sent only {sent}");
    assert!(l2 - l1 >= 2000, "only {} of {sent} limited", l2 - l1);
    // The bucket (200) plus the refill, with room for the limiter being approximate across
    // two workers.
    let allowed = 2.0 * (200.0 + 200.0 * secs) + 50.0;
    assert!(
        (passed as f64) <= allowed,
        "{passed} broadcasts flooded in {secs:.2} s at --flood-rate 200"
    );

    // Per port: b's broadcasts right after are not limited; unicast from a still flows.
    assert_eq!(storm(&b, "10.236.0.3", 100), 100);
    let (l3, _) = counts(&d);
    assert_eq!(l3, l2, "b was limited for a's storm");
    assert!(
        a.ping("10.236.0.3", 2),
        "a's unicast was cut with its broadcasts"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. The VTEP's address and port, worker polling
// ---------------------------------------------------------------------------------------------

/// `(source, destination)` address.port pairs of the UDP packets in `text` (`tcpdump -n`).
fn udp_flows(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.split(" IP ").nth(1)?;
            let mut w = rest.split_whitespace();
            let src = w.next()?.to_string();
            (w.next()? == ">").then_some(())?;
            let dst = w.next()?.trim_end_matches(':').to_string();
            Some((src, dst))
        })
        .collect()
}

#[test]
fn underlay_ip_and_vxlan_port_are_what_the_underlay_carries() {
    require(&["ping", "socat", "ss", "tcpdump"]);
    let u = Underlay::new(2);
    // Host 1 has a second underlay address and uses it as its VTEP address.
    u.hosts[0].exec_ok(&["ip", "addr", "add", "10.240.0.101/24", "dev", "ul0"]);
    let d1 = Daemon::start_in(&u.hosts[0], &["--underlay-ip", "10.240.0.101"]);
    let d2 = Daemon::start_in(&u.hosts[1], &[]);
    for (d, peer) in [(&d1, "10.240.0.2"), (&d2, "10.240.0.101")] {
        overlay_network(d, "ov", "10.237.0.0/24", "77", &[peer], &["--port", "4790"]);
    }
    let net: NetworkInfo = d1.ctl_json(&["network", "inspect", "ov"]);
    assert_eq!(net.vxlan_port, Some(4790), "{net:?}");
    // The VXLAN socket is bound to that address and port.
    let socks = u.hosts[0].exec_ok(&["ss", "-H", "-lnu"]);
    assert!(
        socks.contains("10.240.0.101:4790"),
        "host 1's UDP sockets: {socks}"
    );
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    d1.ctl_ok(&["attach", &a.name, "ov", "--ip", "10.237.0.11"]);
    d2.ctl_ok(&["attach", &b.name, "ov", "--ip", "10.237.0.12"]);

    let pcap = d1.dir.join("underlay.pcap");
    let dump = tcpdump_bg(
        Some(&u.bridge),
        &["-i", "br0", "-n", "-U", "-w", pcap.to_str().unwrap(), "udp"],
    );
    // A network capture on host 1 also sees what enters the network from the other host.
    let ov_cap = d1.dir.join("ov.pcap");
    let cap = d1.capture_bg("ov", &["-w", ov_cap.to_str().unwrap()]);
    assert!(
        wait_until(5, || a.pings("10.237.0.12", 1) == 1),
        "a never reached b across hosts"
    );
    assert!(a.ping("10.237.0.12", 2), "a -> b");
    assert!(b.ping("10.237.0.11", 2), "b -> a");
    let _ta = peer_server(&a, "tcp", "10.237.0.11", 7000);
    let _tb = peer_server(&b, "tcp", "10.237.0.12", 7000);
    let _ub = peer_server(&b, "udp", "10.237.0.12", 7001);
    assert_eq!(ask(&a, "tcp", "10.237.0.12", 7000), "peer=10.237.0.11");
    assert_eq!(ask(&b, "tcp", "10.237.0.11", 7000), "peer=10.237.0.12");
    assert_eq!(udp_ask(&a, "10.237.0.12", 7001), "peer=10.237.0.11");

    let remote = "10.237.0.12 > 10.237.0.11: ICMP echo request";
    let seen = wait_pcap(&ov_cap, 5, |t| t.contains(remote));
    drop(cap);
    assert!(
        seen.contains("10.237.0.11 > 10.237.0.12: ICMP echo request"),
        "the capture of ov lacks a's own frames: {seen}"
    );
    assert!(
        seen.contains(remote),
        "the capture of ov lacks frames entering the network from the other host: {seen}"
    );

    dump.interrupt(); // tcpdump writes out what it holds
    let flows = udp_flows(&tcpdump_read(&pcap));
    let port_of = |s: &str| s.rsplit('.').next().unwrap_or_default().to_string();
    let host_of = |s: &str| s.rsplit_once('.').map_or("", |(h, _)| h).to_string();
    let out1: Vec<_> = flows
        .iter()
        .filter(|(_, d)| host_of(d) == "10.240.0.2")
        .collect();
    let out2: Vec<_> = flows
        .iter()
        .filter(|(s, _)| host_of(s) == "10.240.0.2")
        .collect();
    assert!(
        !out1.is_empty() && !out2.is_empty(),
        "VXLAN missing in one direction: {flows:?}"
    );
    // Host 1 sends from its --underlay-ip, host 2 (positive control) from its route's source.
    assert!(
        out1.iter().all(|(s, _)| host_of(s) == "10.240.0.101"),
        "host 1 sent VXLAN from another address than --underlay-ip: {out1:?}"
    );
    assert!(
        out2.iter().all(|(_, d)| host_of(d) == "10.240.0.101"),
        "host 2 sent to another address than its peer: {out2:?}"
    );
    // Both send to UDP 4790, nothing to 4789.
    assert!(
        flows.iter().all(|(_, d)| port_of(d) == "4790"),
        "VXLAN to another port than 4790: {flows:?}"
    );
}

fn forwards_both_ways_with_poll(poll: &str) {
    require(&["ping", "socat", "ss", "iperf3", "python3"]);
    let d = Daemon::start_with(&["--poll-us", poll]);
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.238.0.0/24"]);
    attach(&d, &a, "front");
    attach(&d, &b, "front");
    assert!(a.ping("10.238.0.3", 3), "a -> b with --poll-us {poll}");
    assert!(b.ping("10.238.0.2", 3), "b -> a with --poll-us {poll}");
    let _servers = [
        peer_server(&a, "tcp", "10.238.0.2", 7000),
        peer_server(&b, "tcp", "10.238.0.3", 7000),
        peer_server(&a, "udp", "10.238.0.2", 7001),
        peer_server(&b, "udp", "10.238.0.3", 7001),
    ];
    for (x, y, yip, xip) in [
        (&a, &b, "10.238.0.3", "10.238.0.2"),
        (&b, &a, "10.238.0.2", "10.238.0.3"),
    ] {
        assert_eq!(
            ask(x, "tcp", yip, 7000),
            format!("peer={xip}"),
            "TCP to {yip}"
        );
        assert_eq!(udp_ask(x, yip, 7001), format!("peer={xip}"), "UDP to {yip}");
        let bytes = iperf_bytes(x, y, yip, 1);
        assert!(bytes > 1_000_000, "TCP to {yip} moved only {bytes} bytes");
    }
}

#[test]
fn poll_us_0_forwards_tcp_and_udp_both_ways() {
    forwards_both_ways_with_poll("0");
}

#[test]
fn poll_us_at_its_maximum_forwards_tcp_and_udp_both_ways_and_beyond_is_refused() {
    forwards_both_ways_with_poll("100000");
    // Refused while parsing its arguments; should that regress, `timeout` ends it, and it
    // never touches the default socket or state directory.
    let dir = std::env::temp_dir().join(format!("vswitch-poll-{}", std::process::id()));
    let (sock, state) = (dir.join("s.sock"), dir.join("state"));
    let o = run(&[
        "timeout",
        "5",
        env!("CARGO_BIN_EXE_vswitchd"),
        "--socket",
        sock.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--poll-us",
        "100001",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "--poll-us 100001 accepted: {err}");
    assert!(err.contains("--poll-us"), "{err}");
}
