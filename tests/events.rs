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
        let mut child = Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
            .arg("--socket")
            .arg(&d.socket)
            .arg("events")
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
