//! The event stream (`vswitchctl events`): what the switch does, as JSON lines, while it does it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// `vswitchctl events` running against `d`: its lines as they come.
struct Follower {
    child: std::process::Child,
    lines: mpsc::Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl Follower {
    fn start(d: &Daemon) -> Follower {
        Self::start_with(d, &["events"])
    }

    /// `vswitchctl --json ARGS` (a stream command) against `d`.
    fn start_with(d: &Daemon, args: &[&str]) -> Follower {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
            .arg("--socket")
            .arg(&d.socket)
            .arg("--json")
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("run vswitchctl events");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&l)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut f = Follower {
            child,
            lines,
            seen: Vec::new(),
        };
        f.wait_for("listening", |_| true);
        f
    }

    /// The first line of `kind` (from now on, or already seen) that `pred` accepts, within 10 s.
    fn wait_for(
        &mut self,
        kind: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let ok = |v: &serde_json::Value| v["type"] == kind && pred(v);
        if let Some(v) = self.seen.iter().find(|v| ok(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if ok(&v) {
                        return v;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no {kind} event; the stream had: {:#?}", self.seen);
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_event_stream_tells_attach_detach_moves_peers_pending_and_flood_limiting() {
    require(&["ping", "python3"]);
    let d = Daemon::start_with(&["--flood-rate", "50"]);
    let mut ev = Follower::start(&d);
    d.ctl_ok(&["network", "create", "evn", "--subnet", "10.92.0.0/24"]);
    let (a, b) = (Netns::new("ea"), Netns::new("eb"));
    let ea = attach(&d, &a, "evn");
    let eb = attach_with(&d, &b, "evn", &["--allow-spoof"]);
    let got = ev.wait_for("endpoint_attached", |v| v["netns"] == a.name.as_str());
    assert_eq!(got["network"], "evn");
    assert_eq!(got["ip"], ea.ip.to_string());
    assert_eq!(got["mac"], ea.mac);
    assert!(got["time"].as_f64().is_some_and(|t| t > 1.7e9), "{got}");
    assert!(a.ping(&eb.ip.to_string(), 1));

    // a's MAC shows up on b's port (b takes it over): a move.
    b.exec_ok(&["ip", "link", "set", "eth0", "down"]);
    b.exec_ok(&["ip", "link", "set", "eth0", "address", &ea.mac]);
    b.exec_ok(&["ip", "link", "set", "eth0", "up"]);
    let _ = b.exec(&["ping", "-c", "2", "-W", "1", "10.92.0.1"]);
    let moved = ev.wait_for("fdb_moved", |v| v["mac"] == ea.mac.as_str());
    assert_eq!(moved["from"], ea.port);
    assert_eq!(moved["to"], eb.port);

    // A broadcast storm from a: limiting begins; a broadcast a while later: it ends.
    hostile(&a, &["storm", "eth0", "500", &ea.ip.to_string()]);
    let began = ev.wait_for("flood_limit_begin", |v| v["port"] == ea.port.as_str());
    assert_eq!(began["network"], "evn");
    std::thread::sleep(Duration::from_millis(1500));
    hostile(&a, &["storm", "eth0", "1", &ea.ip.to_string()]);
    ev.wait_for("flood_limit_end", |v| v["port"] == ea.port.as_str());

    // Peers of an overlay network.
    d.ctl_ok(&[
        "network",
        "create",
        "evo",
        "--subnet",
        "10.91.0.0/24",
        "--vni",
        "91",
    ]);
    d.ctl_ok(&["peer", "add", "evo", "192.0.2.9"]);
    ev.wait_for("peer_added", |v| {
        v["peer"] == "192.0.2.9" && v["network"] == "evo"
    });
    d.ctl_ok(&["peer", "rm", "evo", "192.0.2.9"]);
    ev.wait_for("peer_removed", |v| v["peer"] == "192.0.2.9");

    // A namespace that goes away: its endpoint is pending; detached, it is gone.
    let gone_name = b.name.clone();
    drop(b);
    let pending = ev.wait_for("endpoint_pending", |v| v["netns"] == gone_name.as_str());
    assert!(pending["reason"].as_str().is_some_and(|r| !r.is_empty()));
    d.ctl_ok(&["detach", &a.name, "evn"]);
    let det = ev.wait_for("endpoint_detached", |v| v["netns"] == a.name.as_str());
    assert_eq!(det["port"], ea.port);

    // --count ends the stream by itself.
    let o = d.ctl(&["events", "--count", "0"]);
    assert!(o.status.success());
    let first: serde_json::Value =
        serde_json::from_slice(o.stdout.split(|b| *b == b'\n').next().unwrap_or_default())
            .expect("a JSON line");
    assert_eq!(first["type"], "listening");
}

#[test]
fn the_flow_log_follows_connections_from_new_to_destroy_with_counts_and_refusals() {
    require(&["socat", "dig"]);
    let l = Lab::new(&[]);
    l.d.ctl_ok(&["network", "create", "fl", "--subnet", "10.89.0.0/24"]);
    l.d.ctl_ok(&["network", "create", "other", "--subnet", "10.88.0.0/24"]);
    let (a, b, c) = (Netns::new("fa"), Netns::new("fb"), Netns::new("fc"));
    let ea = attach(&l.d, &a, "fl");
    attach(&l.d, &b, "fl");
    let ec = attach(&l.d, &c, "other");
    let mut all = Follower::start_with(&l.d, &["flows", "--follow"]);
    let mut only_b = Follower::start_with(&l.d, &["flows", "--follow", "--netns", &b.name]);
    let _srv = peer_server(&l.out, "tcp", OUTSIDE, 7100);
    let said = a.exec_ok(&["socat", "-T", "3", "-", &format!("TCP:{OUTSIDE}:7100")]);
    assert!(said.contains("peer=10.210.0.1"), "masqueraded: {said}");
    let me = format!("{}:", ea.ip);
    let new = all.wait_for("new", |v| {
        v["orig"].as_str().is_some_and(|o| o.starts_with(&me))
    });
    assert_eq!(new["nat"], "snat");
    assert_eq!(new["proto"], "tcp");
    assert_eq!(new["network"], "fl");
    assert!(
        new["reply"].as_str().unwrap().contains("10.210.0.1"),
        "{new}"
    );
    all.wait_for("state", |v| v["state"] == "ESTABLISHED");
    // A name the gateway does not know: forwarded to the uplink's resolver, a flow of its own.
    let _ = a.exec(&[
        "dig",
        "+time=1",
        "+tries=1",
        "@10.89.0.1",
        "nothing.example",
    ]);
    let dns = all.wait_for("new", |v| v["nat"] == "dns");
    assert_eq!(dns["proto"], "udp", "{dns}");
    assert!(
        dns["orig"].as_str().unwrap().starts_with(&me)
            && dns["reply"]
                .as_str()
                .unwrap()
                .starts_with("10.210.0.2:53 -> 10.210.0.1:"),
        "{dns}"
    );
    // A packet NAT refuses: to a network that is not linked.
    let _ = a.exec(&[
        "socat",
        "-T",
        "1",
        "-",
        &format!("TCP:{}:80,connect-timeout=1", ec.ip),
    ]);
    let refused = all.wait_for("refused", |v| v["reason"] == "policy");
    assert_eq!(refused["verdict"], "dropped");
    // Flushed: the flow goes with its packets and bytes each way.
    l.d.ctl_ok(&["conntrack", "flush"]);
    let gone = all.wait_for("destroy", |v| {
        v["proto"] == "tcp" && v["orig"].as_str().is_some_and(|o| o.starts_with(&me))
    });
    assert_eq!(gone["reason"], "flushed");
    assert!(gone["packets"]["orig"].as_u64().unwrap() >= 3, "{gone}");
    assert!(gone["packets"]["reply"].as_u64().unwrap() >= 2, "{gone}");
    assert!(gone["bytes"]["reply"].as_u64().unwrap() > 0, "{gone}");
    // The follower filtered to b saw none of a's lines.
    std::thread::sleep(Duration::from_millis(300));
    while let Ok(v) = only_b.lines.try_recv() {
        only_b.seen.push(v);
    }
    assert!(
        only_b.seen.iter().all(|v| v["type"] == "listening"),
        "{:#?}",
        only_b.seen
    );
    // Without --follow: refused, saying what to use.
    let (_, e) = l.d.ctl_err(&["flows"]);
    assert!(e.contains("--follow") && e.contains("conntrack ls"), "{e}");
}

#[test]
fn a_flow_early_drop_evicts_gets_a_destroy_line() {
    require(&["python3"]);
    let l = Lab::new(&["--ct-max", "4"]);
    l.d.ctl_ok(&["network", "create", "ev", "--subnet", "10.87.0.0/24"]);
    let a = Netns::new("ev");
    let ea = attach(&l.d, &a, "ev");
    let mut all = Follower::start_with(&l.d, &["flows", "--follow"]);
    // Six UDP flows into a table of four, to an on-link address nobody has (never answered, not
    // even by a port-unreachable: none is assured): the two oldest go.
    a.exec_ok(&[
        "python3",
        "-c",
        "import socket\nfor p in range(9001, 9007):\n    s = socket.socket(socket.AF_INET, \
         socket.SOCK_DGRAM)\n    s.sendto(b'x', ('10.210.0.3', p))",
    ]);
    let me = format!("{}:", ea.ip);
    let gone = all.wait_for("destroy", |v| {
        v["reason"] == "evicted" && v["orig"].as_str().is_some_and(|o| o.starts_with(&me))
    });
    assert_eq!(gone["proto"], "udp", "{gone}");
    // The two workers may create the flows in another order than they were sent: any of the
    // six may be the oldest.
    let port = gone["orig"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert!(
        (9001..=9006).contains(&port.parse::<u16>().unwrap()),
        "{gone}"
    );
    assert_eq!(conntrack(&l.d, Some("ev")).len(), 4, "the table stays full");
    assert_eq!(gone["state"], "UNREPLIED", "{gone}");
    assert_eq!(gone["packets"]["orig"], 1, "{gone}");
    assert_eq!(gone["bytes"]["orig"], 29, "IPv4 + UDP + 1 byte: {gone}");
}
