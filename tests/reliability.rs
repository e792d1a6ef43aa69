//! Reliability: `--live-restore` across `kill -9` and graceful restarts. Real vswitchd, real
//! namespaces; everything is removed by the harness's guards, also when a test fails.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use switch::model::*;

/// `(ifindex, MAC, IPv4 address)` of `eth0` in `ns`.
fn eth0(ns: &Netns) -> (String, String, String) {
    let link = ns.exec_ok(&["ip", "-o", "link", "show", "eth0"]);
    let idx = link.split(':').next().unwrap_or("").trim().to_string();
    let mac = link
        .split("link/ether ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("")
        .to_string();
    let addr = ns.exec_ok(&["ip", "-o", "-4", "addr", "show", "eth0"]);
    let ip = addr
        .split("inet ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("")
        .to_string();
    (idx, mac, ip)
}

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
    let _echo = a.spawn(&["socat", "TCP4-LISTEN:80,fork,reuseaddr", "EXEC:cat"]);
    assert!(wait_until(5, || a
        .exec_ok(&["ss", "-Hlnt"])
        .contains(":80")));
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
    assert!(ms <= 1000, "traffic took {ms} ms to come back (limit 1 s)");
    assert_eq!(
        (eth0(&a), eth0(&b)),
        before,
        "the restarted daemon must take the same devices back"
    );
    assert!(l.d.log().contains("restored endpoint"), "{}", l.d.log());
    // The published port came back too.
    let o = l.out.exec(&[
        "sh",
        "-c",
        &format!("echo hello | timeout 10 socat -t 3 - TCP4:{UPLINK}:8080,connect-timeout=5"),
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "hello");

    // An established connection through the published port survives a graceful restart.
    let script = format!(
        r#"
import socket, sys
s = socket.create_connection(("{UPLINK}", 8080), timeout=15)
s.sendall(b"one\n"); print(s.recv(100).decode().strip(), flush=True)
sys.stdin.readline()
s.sendall(b"two\n"); print(s.recv(100).decode().strip(), flush=True)
"#
    );
    let mut client = KillOnDrop(Some(
        Command::new("ip")
            .args(["netns", "exec", &l.out.name, "python3", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start client"),
    ));
    let child = client.0.as_mut().expect("client");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("one"));
    let est = |l: &Lab| -> Vec<ConntrackEntry> {
        l.d.ctl_json::<Vec<ConntrackEntry>>(&["conntrack", "ls"])
            .into_iter()
            .filter(|e| e.kind == "dnat" && e.state == "ESTABLISHED")
            .collect()
    };
    let flows = est(&l);
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
    let after = est(&l);
    assert_eq!(
        after
            .iter()
            .map(|e| (&e.orig, &e.reply))
            .collect::<Vec<_>>(),
        flows
            .iter()
            .map(|e| (&e.orig, &e.reply))
            .collect::<Vec<_>>(),
        "the tracked connection was not restored"
    );
    writeln!(child.stdin.as_mut().expect("stdin")).expect("signal client");
    assert_eq!(
        lines.next().and_then(Result::ok).as_deref(),
        Some("two"),
        "the established connection did not survive the restart"
    );
    assert_eq!((eth0(&a), eth0(&b)), before);
    assert!(l.d.terminate().success());
    assert_eq!(a.links(), vec!["lo".to_string()], "a still has devices");
    assert_eq!(b.links(), vec!["lo".to_string()], "b still has devices");
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
