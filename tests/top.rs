//! `vswitchctl top`: the live view run in a real terminal (a detached tmux session) against a
//! real vswitchd with namespaces pinging through it; `--once --json` checked against the ping
//! rate; the refusals. tmux servers, namespaces and the daemon are removed even when a test
//! fails.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use switch::model::EndpointInfo;

static SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// `vswitchctl --socket SOCKET top ARGS` running in a detached tmux session of its own tmux
/// server (a 200x50 terminal), wrapped in a shell that records the terminal's settings before and
/// after (`stty -g`) and top's exit status, then waits for Enter. Drop kills the server and
/// removes its socket.
struct Tmux {
    /// `tmux -S` socket: a server of our own in the test's directory, nobody else's sessions
    /// touched.
    server: PathBuf,
    session: String,
    dir: PathBuf,
}

impl Tmux {
    fn start(d: &Daemon, args: &[&str]) -> Tmux {
        let tag = format!(
            "vstop-{}-{}",
            std::process::id(),
            SESSIONS.fetch_add(1, Ordering::Relaxed)
        );
        let dir = d.dir.join(&tag);
        std::fs::create_dir_all(&dir).expect("tmux test dir");
        let t = Tmux {
            server: dir.join("tmux.sock"),
            session: tag,
            dir,
        };
        // Dead panes stay, so their exit status can be read.
        let conf = t.dir.join("tmux.conf");
        std::fs::write(&conf, "set-option -g remain-on-exit on\n").expect("tmux.conf");
        let f = |name: &str| t.dir.join(name).display().to_string();
        let script = format!(
            "stty -g > {before}; {ctl} --socket {socket} top {args} 2> {err}; rc=$?; \
             stty -g > {after}; echo $rc > {rc}; read line; exit $rc",
            before = f("before"),
            ctl = env!("CARGO_BIN_EXE_vswitchctl"),
            socket = d.socket.display(),
            args = args.join(" "),
            err = f("stderr"),
            after = f("after"),
            rc = f("rc"),
        );
        let conf = conf.display().to_string();
        let o = t.tmux(&[
            "-f",
            &conf,
            "new-session",
            "-d",
            "-s",
            &t.session,
            "-x",
            "200",
            "-y",
            "50",
            &script,
        ]);
        assert!(
            o.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        t
    }

    /// `tmux -S SERVER ARGS`.
    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.server)
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// What the pane shows now.
    fn screen(&self) -> String {
        let o = self.tmux(&["capture-pane", "-p", "-t", &self.session]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Type `key` (a tmux key name: `s`, `C-c`, `Enter`).
    fn keys(&self, key: &str) {
        let o = self.tmux(&["send-keys", "-t", &self.session, key]);
        assert!(o.status.success(), "tmux send-keys {key}");
    }

    /// A pane format (`#{alternate_on}`, `#{pane_dead}`).
    fn format(&self, f: &str) -> String {
        let o = self.tmux(&["display-message", "-p", "-t", &self.session, f]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Wait until `cond` holds of the screen (10 s), failing with the screen and top's stderr.
    fn wait_screen(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let ok = wait_until(10, || {
            last = self.screen();
            cond(&last)
        });
        assert!(
            ok,
            "{what}: not seen within 10 s; the screen:\n{last}\ntop's stderr: {}",
            self.file("stderr")
        );
        last
    }

    /// After a key that ends top: top exited 0 and left the terminal as it found it (cooked
    /// settings back, main screen, cursor shown); then the session's command ends.
    fn check_exit_restores_the_terminal(&self, key: &str) {
        self.keys(key);
        assert!(
            wait_until(10, || !self.file("rc").is_empty()),
            "top did not exit within 10 s of {key}; the screen:\n{}",
            self.screen()
        );
        assert_eq!(
            self.file("rc").trim(),
            "0",
            "top's exit status after {key}; stderr: {}",
            self.file("stderr")
        );
        assert!(
            self.file("stderr").is_empty(),
            "top's stderr: {}",
            self.file("stderr")
        );
        let (before, after) = (self.file("before"), self.file("after"));
        assert!(!before.trim().is_empty(), "stty -g printed nothing");
        assert_eq!(before, after, "terminal settings not restored after {key}");
        assert_eq!(
            self.format("#{alternate_on} #{cursor_flag}"),
            "0 1",
            "after {key}: still on the alternate screen or the cursor hidden"
        );
        let screen = self.screen();
        assert!(
            !screen.contains("vswitchctl top"),
            "the main screen shows top's frame after {key}:\n{screen}"
        );
        // The wrapper waits for Enter; then the pane's command has ended (top's own status
        // was checked above: tmux does not always keep the wrapper's).
        self.keys("Enter");
        assert!(
            wait_until(10, || self
                .format("#{pane_dead} #{pane_dead_status}")
                .starts_with('1')),
            "the pane did not end: {}",
            self.format("#{pane_dead} #{pane_dead_status}")
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The table on `screen`: one map per row, from the heading's titles (the sort mark `*`
/// dropped) to the cells.
fn rows(screen: &str) -> Vec<HashMap<String, String>> {
    let mut lines = screen.lines().skip_while(|l| !l.starts_with("PORT"));
    let Some(head) = lines.next() else {
        return vec![];
    };
    let titles: Vec<String> = head
        .split_whitespace()
        .map(|t| t.trim_end_matches('*').to_string())
        .collect();
    lines
        .map(str::split_whitespace)
        .map(|cells| {
            titles
                .iter()
                .cloned()
                .zip(cells.map(String::from))
                .collect()
        })
        .filter(|r: &HashMap<String, String>| r.len() == titles.len())
        .collect()
}

/// The column the heading marks as sorted.
fn sorted_by(screen: &str) -> Option<String> {
    let head = screen.lines().find(|l| l.starts_with("PORT"))?;
    head.split_whitespace()
        .find_map(|t| t.strip_suffix('*'))
        .map(String::from)
}

/// A cell such as `98`, `1.2k` or `3.4M` as a number.
fn unhuman(cell: &str) -> f64 {
    let (num, mult) = match cell.chars().last() {
        Some('k') => (&cell[..cell.len() - 1], 1e3),
        Some('M') => (&cell[..cell.len() - 1], 1e6),
        Some('G') => (&cell[..cell.len() - 1], 1e9),
        Some('T') => (&cell[..cell.len() - 1], 1e12),
        _ => (cell, 1.0),
    };
    num.parse::<f64>()
        .unwrap_or_else(|_| panic!("not a rate: {cell:?}"))
        * mult
}

/// The port names of the table's rows, top to bottom.
fn order(screen: &str) -> Vec<String> {
    rows(screen).iter().map(|r| r["PORT"].clone()).collect()
}

/// A network with three endpoints, the first pinging the second every 10 ms (about 100 frames
/// per second each way), the second also pinging an address no route leads to (dropped as
/// `no_route`, about 20 a second: the network has no uplink); the third idle.
struct Pinging {
    a: EndpointInfo,
    b: EndpointInfo,
    idle: EndpointInfo,
    _pings: [KillOnDrop; 2],
    _ns: [Netns; 3],
}

fn pinging(d: &Daemon, subnet: &str) -> Pinging {
    let ns = [Netns::new("ta"), Netns::new("tb"), Netns::new("tc")];
    d.ctl_ok(&["network", "create", "topnet", "--subnet", subnet]);
    let a = attach(d, &ns[0], "topnet");
    let b = attach(d, &ns[1], "topnet");
    let idle = attach(d, &ns[2], "topnet");
    let to = b.ip.to_string();
    assert!(ns[0].ping(&to, 1), "a cannot ping b");
    let pings = [
        ns[0].spawn(&["ping", "-n", "-q", "-i", "0.01", &to]),
        ns[1].spawn(&["ping", "-n", "-q", "-i", "0.05", "192.0.2.1"]),
    ];
    Pinging {
        a,
        b,
        idle,
        _pings: pings,
        _ns: ns,
    }
}

#[test]
fn live_view_shows_the_rates_sorts_by_key_and_restores_the_terminal_on_q_and_ctrl_c() {
    require(&["tmux", "ping", "stty"]);
    let d = Daemon::start();
    let p = pinging(&d, "10.207.1.0/24");

    let t = Tmux::start(&d, &["--interval", "1"]);
    // The pinging port's row gets a non-zero receive rate (after the first interval).
    let screen = t.wait_screen("a non-zero RX_PPS for the pinging port", |s| {
        rows(s)
            .iter()
            .any(|r| r["PORT"] == p.a.port && unhuman(&r["RX_PPS"]) > 0.0)
    });
    assert_eq!(
        t.format("#{alternate_on} #{cursor_flag}"),
        "1 0",
        "{screen}"
    );
    let head: Vec<&str> = screen.lines().take(4).collect();
    assert!(
        head[0].starts_with("vswitchctl top  ") && head[0].contains("  every 1s  3 port(s)  "),
        "{screen}"
    );
    assert!(head[1].starts_with("rx "), "totals: {screen}");
    // The unroutable pings, named.
    assert!(
        head[2].starts_with("drops ") && head[2].contains(": no_route "),
        "drops: {screen}"
    );
    let a = rows(&screen)
        .into_iter()
        .find(|r| r["PORT"] == p.a.port)
        .expect("a's row");
    let rx = unhuman(&a["RX_PPS"]);
    assert!((10.0..100_000.0).contains(&rx), "a's RX_PPS {rx}: {screen}");
    assert_eq!(a["NETNS"], p.a.netns);
    assert_eq!(a["IFNAME"], "eth0");
    assert_eq!(a["NETWORK"], "topnet");
    // Sorted by RX_PPS, highest first: the idle port last.
    assert_eq!(sorted_by(&screen).as_deref(), Some("RX_PPS"), "{screen}");
    assert!(screen.contains("sort: RX_PPS, highest first"), "{screen}");
    assert_eq!(
        order(&screen).last(),
        Some(&p.idle.port),
        "idle port not last:\n{screen}"
    );

    // s: the next column; r: reversed, the idle port first.
    t.keys("s");
    t.wait_screen("the sort mark on TX_PPS after s", |s| {
        sorted_by(s).as_deref() == Some("TX_PPS") && s.contains("sort: TX_PPS, highest first")
    });
    t.keys("r");
    let screen = t.wait_screen("TX_PPS lowest first after r", |s| {
        s.contains("sort: TX_PPS, lowest first")
    });
    assert_eq!(
        order(&screen).first(),
        Some(&p.idle.port),
        "idle port not first:\n{screen}"
    );
    t.check_exit_restores_the_terminal("q");
    drop(t);

    // --sort from the command line, and Ctrl-C ends the view as q does.
    let t = Tmux::start(&d, &["--interval", "0.5", "--sort", "port"]);
    let screen = t.wait_screen("three ports sorted by PORT", |s| order(s).len() == 3);
    assert_eq!(sorted_by(&screen).as_deref(), Some("PORT"), "{screen}");
    assert_eq!(
        order(&screen),
        [p.a.port.as_str(), &p.b.port, &p.idle.port],
        "{screen}"
    );
    t.check_exit_restores_the_terminal("C-c");
}

#[test]
fn once_json_gives_plausible_rates_for_a_pinging_port_and_zero_for_an_idle_one() {
    require(&["ping"]);
    let d = Daemon::start();
    let p = pinging(&d, "10.207.2.0/24");

    let v: serde_json::Value = d.ctl_json(&["top", "--once", "--interval", "1"]);
    let interval = v["interval_secs"].as_f64().expect("interval_secs");
    assert!((0.9..3.0).contains(&interval), "{v}");
    let ports = v["ports"].as_array().expect("ports array");
    assert_eq!(ports.len(), 3, "{v}");
    let port = |e: &EndpointInfo| {
        ports
            .iter()
            .find(|x| x["port"] == e.port.as_str())
            .unwrap_or_else(|| panic!("no port {} in {v}", e.port))
            .clone()
    };
    let rate = |x: &serde_json::Value, f: &str| {
        x[f].as_f64()
            .unwrap_or_else(|| panic!("no number {f} in {x}"))
    };
    // ping -i 0.01: about 100 requests a second from a, as many replies from b.
    let (a, b, idle) = (port(&p.a), port(&p.b), port(&p.idle));
    for (x, f) in [
        (&a, "rx_pps"),
        (&a, "tx_pps"),
        (&b, "rx_pps"),
        (&b, "tx_pps"),
    ] {
        let r = rate(x, f);
        assert!((10.0..100_000.0).contains(&r), "{f} {r}: {x}");
    }
    // Bits: an echo request is a 98-byte frame.
    assert!(
        rate(&a, "rx_bps") >= rate(&a, "rx_pps") * 98.0 * 8.0 * 0.9,
        "{a}"
    );
    assert_eq!(a["netns"], p.a.netns.as_str());
    assert_eq!(a["kind"], "tap");
    assert_eq!(rate(&a, "tx_drop_ps"), 0.0, "{a}");
    for f in ["rx_pps", "tx_pps", "rx_bps", "tx_bps", "tx_drop_ps"] {
        assert!(rate(&idle, f) < 1.0, "idle port's {f}: {idle}");
    }
    // The named drops, per second, and their total.
    let drops = v["drops"].as_object().expect("drops object");
    // ping -i 0.05 to an address no route leads to: about 20 a second.
    let no_route = drops["no_route"].as_f64().expect("no_route rate");
    assert!((5.0..1000.0).contains(&no_route), "{v}");
    let total: f64 = drops.values().map(|x| x.as_f64().expect("rate")).sum();
    assert_eq!(rate(&v, "drops_total"), total, "{v}");

    // Without --json: the header lines and the table, sorted as asked.
    let out = d.ctl_ok(&["top", "--once", "--interval", "0.5", "--sort", "PORT"]);
    assert!(out.starts_with("over 0."), "{out}");
    assert!(out.contains(", 3 port(s): rx "), "{out}");
    assert!(out.contains("\ndrops "), "{out}");
    assert_eq!(
        order(&out),
        [p.a.port.as_str(), &p.b.port, &p.idle.port],
        "{out}"
    );
    assert!(!out.contains('*'), "a sort mark in --once's table: {out}");
}

#[test]
fn top_refuses_without_a_terminal_and_names_bad_options() {
    require(&[]);
    let d = Daemon::start();
    // Standard output is a pipe here.
    let (code, err) = d.ctl_err(&["top"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("not a terminal") && err.contains("--once"),
        "{err}"
    );
    let (code, err) = d.ctl_err(&["--json", "top"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--json needs --once"), "{err}");
    for (args, names) in [
        (&["top", "--once", "--interval", "0"][..], "--interval"),
        (&["top", "--once", "--interval", "-1"], "--interval"),
        (&["top", "--once", "--interval", "soon"], "soon"),
        (&["top", "--once", "--sort", "nosuch"], "nosuch"),
    ] {
        let (code, err) = d.ctl_err(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(first.contains(names), "{args:?}: {err}");
    }
    // --help teaches the columns and the keys.
    let help = d.ctl_ok(&["top", "--help"]);
    for want in [
        "RX_PPS",
        "TX_DROP/s",
        "bits per second",
        "reverse",
        "quit",
        "--once",
    ] {
        assert!(help.contains(want), "--help lacks {want}: {help}");
    }
}
