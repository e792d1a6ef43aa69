//! The packet tracer (`vswitchctl trace`) against real traffic: for each case the trace's
//! frame is then sent for real from the same place (an AF_PACKET socket in the namespace), and
//! what the trace said would leave (the exact bytes, on the port it named) must be what a
//! capture on that port sees, and the drop it said would be counted must be counted. The trace
//! itself must leave the FDB and the connection table as they were.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::*;
use switch::model::{ConntrackEntry, FdbEntryInfo, TraceInfo};

/// What a trace must not change: the FDB's (network, MAC, port) and the connection table.
fn tables(d: &Daemon) -> (BTreeSet<String>, BTreeSet<String>) {
    let fdb: Vec<FdbEntryInfo> = d.ctl_json(&["fdb"]);
    let ct: Vec<ConntrackEntry> = d.ctl_json(&["conntrack"]);
    (
        fdb.iter()
            .map(|e| format!("{} {} {}", e.network, e.mac, e.port))
            .collect(),
        ct.iter()
            .map(|e| format!("{} {} {} {}", e.proto, e.orig, e.reply, e.state))
            .collect(),
    )
}

/// Send `hex` as one Ethernet frame out of `ifname` in `ns`.
fn send_frame(ns: &Netns, ifname: &str, hex: &str) {
    ns.exec_ok(&[
        "python3",
        "-c",
        "import socket,sys\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n\
         s.bind((sys.argv[1],0))\ns.send(bytes.fromhex(sys.argv[2]))",
        ifname,
        hex,
    ]);
}

fn unhex(s: &str) -> Vec<u8> {
    switch::packet_spec::unhex(s).expect("hex from the tracer")
}

fn has(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A capture of `target` into a file, read back as frames.
struct Cap {
    file: PathBuf,
    proc: Option<KillOnDrop>,
}

impl Cap {
    fn start(d: &Daemon, target: &str) -> Cap {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file = d.dir.join(format!("cap-{n}.pcap"));
        let proc = d.capture_bg(target, &["-w", file.to_str().unwrap()]);
        Cap {
            file,
            proc: Some(proc),
        }
    }

    /// The frames captured so far.
    fn frames(&self) -> Vec<Vec<u8>> {
        let data = std::fs::read(&self.file).unwrap_or_default();
        vswitch_cli::pcap::frames(&data).unwrap_or_default()
    }

    /// Wait (up to 3 s) until `frame` was captured.
    fn saw(&self, frame: &[u8]) -> bool {
        wait_until(3, || self.frames().iter().any(|f| f == frame))
    }
}

impl Drop for Cap {
    fn drop(&mut self) {
        drop(self.proc.take());
        let _ = std::fs::remove_file(&self.file);
    }
}

/// One case: trace `packet` entering at `from` (`extra` for `--dst-mac`), check the tables did
/// not change, then send the trace's frame for real from `(ns, ifname)` and check that every
/// output the trace named is seen on its port with the same bytes, that every drop it named is
/// counted, and that nothing reaches `watch` when the trace says it is dropped.
fn agree(
    d: &Daemon,
    (ns, ifname): (&Netns, &str),
    from: &str,
    packet: &str,
    extra: &[&str],
    watch: &str,
) -> TraceInfo {
    let before = tables(d);
    let mut args = vec!["trace", from, packet];
    args.extend_from_slice(extra);
    let t: TraceInfo = d.ctl_json(&args);
    assert_eq!(tables(d), before, "the trace of '{packet}' changed a table");
    let caps: Vec<(String, Cap)> = t
        .outputs
        .iter()
        .filter(|o| o.vxlan.is_none())
        .map(|o| (o.frame.clone(), Cap::start(d, &o.to)))
        .collect();
    let watching = Cap::start(d, watch);
    let drops_before = stats(d).drops;
    send_frame(ns, ifname, &t.frame);
    for (frame, cap) in &caps {
        assert!(
            cap.saw(&unhex(frame)),
            "'{packet}': the trace said it leaves as {frame}; the capture saw {:?}\n{t:#?}",
            cap.frames()
                .iter()
                .map(|f| switch::packet_spec::describe(f))
                .collect::<Vec<_>>()
        );
    }
    for (name, n) in &t.drops {
        let was = drops_before.get(name).copied().unwrap_or(0);
        assert!(
            wait_until(3, || drops(d, name) >= was + n),
            "'{packet}': the trace said {name} +{n}; counted {} -> {}\n{t:#?}",
            was,
            drops(d, name)
        );
    }
    if t.outputs.is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let input = unhex(&t.frame);
        assert!(
            !watching.frames().iter().any(|f| f[14..] == input[14..]),
            "'{packet}': the trace said dropped, yet {watch} got it\n{t:#?}"
        );
    }
    t
}

#[test]
fn the_tracer_agrees_with_real_traffic_on_one_host() {
    require(&["ping", "python3"]);
    let l = Lab::new(&[]);
    let d = &l.d;
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.81.0.0/24"]);
    d.ctl_ok(&["network", "create", "back", "--subnet", "10.82.0.0/24"]);
    d.ctl_ok(&[
        "network",
        "create",
        "quiet",
        "--subnet",
        "10.83.0.0/24",
        "--icc=false",
    ]);
    d.ctl_ok(&[
        "network",
        "create",
        "inner",
        "--subnet",
        "10.84.0.0/24",
        "--internal",
    ]);
    d.ctl_ok(&["network", "link", "front", "back"]);
    let (a1, a2, b1, q1, q2, i1) = (
        Netns::new("a1"),
        Netns::new("a2"),
        Netns::new("b1"),
        Netns::new("q1"),
        Netns::new("q2"),
        Netns::new("i1"),
    );
    for (ns, net) in [
        (&a1, "front"),
        (&a2, "front"),
        (&b1, "back"),
        (&q1, "quiet"),
        (&q2, "quiet"),
        (&i1, "inner"),
    ] {
        attach(d, ns, net);
    }
    // Warm-up: the FDB knows every endpoint, and the uplink its next hop.
    assert!(a1.ping("10.81.0.3", 1) && a1.ping("10.82.0.2", 1) && a1.ping(OUTSIDE, 1));
    assert!(q1.ping("10.83.0.1", 1) && q2.ping("10.83.0.1", 1));
    d.ctl_ok(&["publish", &a2.name, "8080:80"]);
    let a2e = format!("{}/eth0", a2.name);
    let from_a1 = (&a1, "eth0");

    // Endpoint to endpoint: unicast by the FDB, unchanged.
    let t = agree(
        d,
        from_a1,
        &a1.name,
        "tcp 10.81.0.2:40000 > 10.81.0.3:80 flags S",
        &[],
        &a2e,
    );
    assert_eq!(t.verdict, format!("delivered to {a2e}"), "{t:#?}");
    assert!(t
        .steps
        .iter()
        .any(|s| s.stage == "fdb" && s.detail.contains("unicast")));
    assert_eq!(t.outputs[0].frame, t.frame, "switched unchanged");
    // To the gateway: answered to the sender.
    let t = agree(
        d,
        from_a1,
        &a1.name,
        "icmp 10.81.0.2 > 10.81.0.1",
        &[],
        &a2e,
    );
    assert_eq!(
        t.verdict,
        format!("delivered to {}/eth0", a1.name),
        "{t:#?}"
    );
    // An unknown destination MAC: flooded.
    let t = agree(
        d,
        from_a1,
        &a1.name,
        "udp 10.81.0.2:5000 > 10.81.0.3:5001",
        &["--dst-mac", "02:99:99:99:99:99"],
        &a2e,
    );
    assert!(t.steps.iter().any(|s| s.stage == "flood"), "{t:#?}");
    assert_eq!(t.events.get("flooded"), Some(&1), "{t:#?}");
    // Egress NAT: masqueraded to the uplink's address.
    let t = agree(
        d,
        from_a1,
        &a1.name,
        "tcp 10.81.0.2:41000 > 10.210.0.2:80 flags S",
        &[],
        &a2e,
    );
    assert_eq!(t.verdict, "delivered to uplink", "{t:#?}");
    assert!(
        t.outputs[0]
            .summary
            .contains("10.210.0.1:41000 > 10.210.0.2:80"),
        "{t:#?}"
    );
    assert!(t.steps.iter().any(|s| s.stage == "nat"), "{t:#?}");
    // A published port, from outside: to the endpoint, the client's address kept.
    let t = agree(
        d,
        (&l.out, "eth0"),
        "uplink",
        "tcp 10.210.0.2:42000 > 10.210.0.1:8080 flags S",
        &[],
        &a2e,
    );
    assert_eq!(t.verdict, format!("delivered to {a2e}"), "{t:#?}");
    assert!(
        t.outputs[0]
            .summary
            .contains("10.210.0.2:42000 > 10.81.0.3:80"),
        "{t:#?}"
    );
    // Hairpin: an endpoint to the published port through the uplink's address.
    let t = agree(
        d,
        from_a1,
        &a1.name,
        "tcp 10.81.0.2:43000 > 10.210.0.1:8080 flags S",
        &[],
        &a2e,
    );
    assert_eq!(t.verdict, format!("delivered to {a2e}"), "{t:#?}");
    // Linked networks: routed, not translated.
    let b1e = format!("{}/eth0", b1.name);
    let t = agree(
        d,
        from_a1,
        &a1.name,
        "tcp 10.81.0.2:44000 > 10.82.0.2:80 flags S",
        &[],
        &b1e,
    );
    assert_eq!(t.verdict, format!("delivered to {b1e}"), "{t:#?}");
    assert!(t.outputs[0]
        .summary
        .contains("10.81.0.2:44000 > 10.82.0.2:80 TCP [S], ttl 63"));
    // icc=false: endpoints do not reach each other.
    let q2e = format!("{}/eth0", q2.name);
    let t = agree(
        d,
        (&q1, "eth0"),
        &q1.name,
        "tcp 10.83.0.2:1000 > 10.83.0.3:80 flags S",
        &[],
        &q2e,
    );
    assert_eq!(t.verdict, "dropped (policy)", "{t:#?}");
    // An internal network: no way out.
    let t = agree(
        d,
        (&i1, "eth0"),
        &i1.name,
        "tcp 10.84.0.2:1000 > 10.210.0.2:80 flags S",
        &[],
        "uplink",
    );
    assert_eq!(t.verdict, "dropped (policy)", "{t:#?}");
    assert!(
        t.steps.iter().any(|s| s.detail.contains("internal")),
        "{t:#?}"
    );
    // A spoofed source.
    let t = agree(
        d,
        from_a1,
        &a1.name,
        "tcp 10.81.0.99:1000 > 10.81.0.3:80 flags S",
        &[],
        &a2e,
    );
    assert_eq!(t.verdict, "dropped (spoofed)", "{t:#?}");
    // An oversize frame (the endpoint raised its own MTU).
    a1.exec_ok(&["ip", "link", "set", "eth0", "mtu", "9000"]);
    let t = agree(
        d,
        from_a1,
        &a1.name,
        "icmp 10.81.0.2 > 10.81.0.3 len 3000",
        &[],
        &a2e,
    );
    assert_eq!(t.verdict, "dropped (oversize)", "{t:#?}");

    // IPv6 on a dual-stack network: switched by the FDB, the same as real traffic.
    d.ctl_ok(&[
        "network",
        "create",
        "six",
        "--subnet",
        "10.85.0.0/24",
        "--subnet",
        "fd00:85::/64",
    ]);
    let (s1, s2) = (Netns::new("s1"), Netns::new("s2"));
    let e1 = attach(d, &s1, "six");
    let e2 = attach(d, &s2, "six");
    let (ip1, ip2) = (e1.ip6.unwrap(), e2.ip6.unwrap());
    assert!(s1
        .exec(&["ping", "-6", "-c", "1", "-W", "2", &ip2.to_string()])
        .status
        .success());
    let s2e = format!("{}/eth0", s2.name);
    let t = agree(
        d,
        (&s1, "eth0"),
        &s1.name,
        &format!("tcp [{ip1}]:1000 > [{ip2}]:80 flags S"),
        &[],
        &s2e,
    );
    assert_eq!(t.verdict, format!("delivered to {s2e}"), "{t:#?}");

    // Bad input: one line, non-zero exit, nothing traced.
    for (args, says) in [
        (
            vec!["trace", "nope", "icmp 10.81.0.2 > 10.81.0.3"],
            "is not an endpoint",
        ),
        (
            vec!["trace", a1.name.as_str(), "tcp 10.81.0.2 > 10.81.0.3:80"],
            "ADDRESS:PORT",
        ),
        (vec!["trace", a1.name.as_str(), "--hex", "zz"], "not hex"),
        (
            vec!["trace", a1.name.as_str(), "icmp 10.81.0.2 > 10.81.0.77"],
            "knows no MAC",
        ),
    ] {
        let o = d.ctl(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(says) && err.trim().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    // --from-pcap: every frame of a capture traced.
    let file = d.dir.join("in.pcap");
    let t: TraceInfo = d.ctl_json(&["trace", &a1.name, "icmp 10.81.0.2 > 10.81.0.3"]);
    let mut pcap = switch::capture::pcap_header().to_vec();
    for _ in 0..2 {
        let c = switch::capture::Captured {
            ts: std::time::SystemTime::now(),
            orig_len: t.frame.len() / 2,
            data: unhex(&t.frame),
        };
        switch::capture::pcap_record(&c, &mut pcap);
    }
    std::fs::write(&file, &pcap).unwrap();
    let all: Vec<TraceInfo> =
        d.ctl_json(&["trace", &a1.name, "--from-pcap", file.to_str().unwrap()]);
    assert_eq!(all.len(), 2);
    assert!(
        all.iter()
            .all(|x| x.verdict == format!("delivered to {a2e}")),
        "{all:#?}"
    );
}

#[test]
fn the_tracer_agrees_with_real_traffic_over_an_overlay() {
    require(&["ping", "python3", "tcpdump", "bridge"]);
    let u = Underlay::new(2);
    let d = Daemon::start_in(&u.hosts[0], &[]);
    overlay_network(&d, "ov", "10.250.0.0/24", "42", &[&Underlay::ip(2)], &[]);
    let a = Netns::new("a");
    d.ctl_ok(&["attach", &a.name, "ov", "--ip", "10.250.0.11"]);
    let k = &u.hosts[1];
    kernel_vxlan_host(k, "42", "10.240.0.2", "10.240.0.1", "10.250.0.50/24", 1450);
    assert!(a.ping("10.250.0.50", 2), "warm-up across the overlay");
    let before = tables(&d);
    let t: TraceInfo = d.ctl_json(&[
        "trace",
        &a.name,
        "tcp 10.250.0.11:40000 > 10.250.0.50:80 flags S",
    ]);
    assert_eq!(tables(&d), before, "the trace changed a table");
    assert_eq!(t.verdict, "delivered to vtep 10.240.0.2", "{t:#?}");
    let vx = t.outputs[0].vxlan.as_deref().unwrap_or_default();
    assert!(
        vx.contains("VNI 42") && vx.contains("> 10.240.0.2 UDP") && vx.contains("> 4789"),
        "{vx}"
    );
    assert!(t
        .steps
        .iter()
        .any(|s| s.stage == "fdb" && s.detail.contains("behind VTEP 10.240.0.2")));
    // For real: the kernel host's underlay sees the same inner frame behind VNI 42's header.
    let file = d.dir.join("ul.pcap");
    let dump = tcpdump_bg(
        Some(k),
        &["-i", "ul0", "-w", file.to_str().unwrap(), "udp port 4789"],
    );
    send_frame(&a, "eth0", &t.frame);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = dump.interrupt();
    let data = std::fs::read(&file).unwrap_or_default();
    let mut want = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
    want.extend_from_slice(&unhex(&t.outputs[0].frame));
    let seen = vswitch_cli::pcap::frames(&data).unwrap_or_default();
    assert!(
        seen.iter().any(|f| has(f, &want)),
        "the underlay never carried the traced frame ({} frames)",
        seen.len()
    );
    // Oversize for the overlay: the endpoint raised its MTU beyond the overlay's.
    a.exec_ok(&["ip", "link", "set", "eth0", "mtu", "9000"]);
    let t: TraceInfo = d.ctl_json(&["trace", &a.name, "icmp 10.250.0.11 > 10.250.0.50 len 2000"]);
    assert_eq!(t.verdict, "dropped (oversize)", "{t:#?}");
    let was = drops(&d, "oversize");
    send_frame(&a, "eth0", &t.frame);
    assert!(wait_until(3, || drops(&d, "oversize") > was));
}
