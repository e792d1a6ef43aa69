//! Shared harness for the integration tests: a real `vswitchd` per test, real namespaces, real
//! tools. Everything a test creates is removed by `Drop` guards, also when the test fails.
//! Missing prerequisites fail the test with a message saying what to install; nothing is skipped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Lines, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use switch::model::{ConntrackEntry, EndpointInfo, StatsInfo, UplinkInfo};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name part no other test (in this or another test binary running at the same time) has:
/// the process id and a counter, with a separator so (31, 11) and (311, 1) differ.
fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Fail unless running as root with every tool in `tools` on PATH.
pub fn require(tools: &[&str]) {
    let uid = Command::new("id").arg("-u").output().expect("run id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "missing prerequisite: the integration tests need root (namespaces, TAP devices); run ./test.sh as root"
    );
    assert!(
        Path::new("/dev/net/tun").exists(),
        "missing prerequisite: /dev/net/tun (modprobe tun)"
    );
    for t in ["ip"].iter().chain(tools) {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "missing prerequisite: `{t}` is not installed (./test.sh installs it with apt-get)"
        );
    }
}

/// Run a command, returning its output (never panics on a non-zero exit).
pub fn run(cmd: &[&str]) -> Output {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run a command and require success; returns stdout.
pub fn run_ok(cmd: &[&str]) -> String {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A running vswitchd with its own socket and state directory.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// Namespace the daemon runs in (`None`: the test's own).
    pub netns: Option<String>,
}

impl Daemon {
    /// Start a daemon and wait until its API answers.
    pub fn start() -> Daemon {
        Self::start_with(&[])
    }

    /// Start a daemon with extra arguments.
    pub fn start_with(extra: &[&str]) -> Daemon {
        let dir = std::env::temp_dir().join(format!("vswitch-test-{}", unique()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        let socket = dir.join("vswitchd.sock");
        let mut d = Daemon {
            child: None,
            dir,
            socket,
            netns: None,
        };
        d.spawn(extra);
        d
    }

    /// Start a daemon inside namespace `ns` (its "host"), with extra arguments.
    pub fn start_in(ns: &Netns, extra: &[&str]) -> Daemon {
        let dir = std::env::temp_dir().join(format!("vswitch-test-{}", unique()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        let socket = dir.join("vswitchd.sock");
        let mut d = Daemon {
            child: None,
            dir,
            socket,
            netns: Some(ns.name.clone()),
        };
        d.spawn(extra);
        d
    }

    /// (Re)start the daemon process on this daemon's socket and state directory, and wait until
    /// its API answers.
    pub fn spawn(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "daemon already running");
        let log = std::fs::File::create(self.dir.join("vswitchd.log")).expect("create log");
        let mut cmd = match &self.netns {
            // `ip netns exec` execs the daemon in place: the child's pid is the daemon's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_vswitchd")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_vswitchd")),
        };
        let child = cmd
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .args(["--workers", "2"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn vswitchd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The API answers at once; restore runs behind it (changes are refused until it
            // is done, with a 503): wait for its last log line.
            if self.ctl(&["network", "ls"]).status.success() && self.log().contains("restore done")
            {
                return;
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("vswitchd exited early ({st}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "vswitchd did not answer within 10 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start `vswitchctl capture TARGET ARGS...` in the background.
    pub fn capture_bg(&self, target: &str, args: &[&str]) -> KillOnDrop {
        let c = Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(["capture", target])
            .args(args)
            .spawn()
            .expect("start vswitchctl capture");
        let k = KillOnDrop(Some(c));
        // With `-w FILE`, return once the session is registered (the pcap header is written).
        if let Some(i) = args.iter().position(|a| *a == "-w") {
            wait_pcap_ready(Path::new(args[i + 1]));
        }
        k
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vswitchd.log")).unwrap_or_default()
    }

    /// Run vswitchctl against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run vswitchctl {args:?}: {e}"))
    }

    /// Run vswitchctl and require success; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "vswitchctl {args:?} failed: {}\n--- vswitchd log ---\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Run `vswitchctl --json ...` and decode the answer.
    pub fn ctl_json<T: DeserializeOwned>(&self, args: &[&str]) -> T {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl_ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("bad JSON from vswitchctl {args:?}: {e}: {out}"))
    }

    /// Run vswitchctl expecting failure: returns (exit code, stderr).
    pub fn ctl_err(&self, args: &[&str]) -> (i32, String) {
        let o = self.ctl(args);
        assert!(
            !o.status.success(),
            "vswitchctl {args:?} should have failed but printed: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// `kill -9` the daemon (a crash: no cleanup of any kind) and reap it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("daemon already stopped");
        child.kill().expect("SIGKILL vswitchd");
        child.wait().expect("wait vswitchd");
    }

    /// Send SIGTERM and wait for the exit status (at most 10 s).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon already stopped");
        signal(&child.id().to_string(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait().expect("wait vswitchd") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "vswitchd did not exit within 10 s of SIGTERM: {}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c.id().to_string(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- vswitchd log ({}) ---\n{}",
                self.dir.display(),
                self.log()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A network namespace made by the test, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Create a namespace named after `tag` (made unique), with `lo` up.
    pub fn new(tag: &str) -> Netns {
        let name = format!("vt{}{}", unique(), tag);
        run_ok(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        // The tests are IPv4: keep IPv6 neighbour discovery and MLD chatter of fresh interfaces
        // out of captures and counters.
        ns.exec_ok(&[
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
        ]);
        ns
    }

    /// Run a command inside the namespace.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        let mut a = vec!["ip", "netns", "exec", &self.name];
        a.extend_from_slice(cmd);
        run(&a)
    }

    /// Run a command inside the namespace and require success; returns stdout.
    pub fn exec_ok(&self, cmd: &[&str]) -> String {
        let o = self.exec(cmd);
        assert!(
            o.status.success(),
            "in {}: {cmd:?} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Start a background command inside the namespace.
    pub fn spawn(&self, cmd: &[&str]) -> KillOnDrop {
        use std::os::unix::process::CommandExt;
        let c = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            // Its own process group, so what it forks (socat's per-connection children) goes
            // with it on drop.
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        KillOnDrop(Some(c))
    }

    /// `ping -c COUNT ADDR` from this namespace with a deadline long enough for every reply;
    /// returns how many of the COUNT requests were answered (COUNT minus the requests lost). A
    /// ping whose summary cannot be read fails the test.
    pub fn pings(&self, addr: &str, count: u32) -> u32 {
        self.pings_with(addr, count, &[])
    }

    /// [`Netns::pings`] with more ping options (`-s SIZE`, `-M do`, ...).
    pub fn pings_with(&self, addr: &str, count: u32, extra: &[&str]) -> u32 {
        let (sent, received) = self.ping_counts(addr, count, extra);
        // With -w, ping sends more than COUNT requests when some go unanswered (it stops at
        // COUNT replies): every unanswered request counts as lost, whichever it was.
        let lost = sent.saturating_sub(received);
        received.min(count.saturating_sub(lost))
    }

    /// `(requests sent, replies received)` of `ping -c COUNT -w DEADLINE ADDR`.
    fn ping_counts(&self, addr: &str, count: u32, extra: &[&str]) -> (u32, u32) {
        // -w: ping waits for all COUNT replies (or the deadline), instead of leaving after the
        // last request with whatever arrived; -W only bounds the wait for one reply.
        let deadline = (count as f64 * 0.2 + 3.0).ceil().to_string();
        let n = count.to_string();
        let mut cmd = vec![
            "ping", "-n", "-q", "-c", &n, "-i", "0.2", "-W", "2", "-w", &deadline,
        ];
        cmd.extend_from_slice(extra);
        cmd.push(addr);
        let o = self.exec(&cmd);
        let out = String::from_utf8_lossy(&o.stdout);
        let (sent, received) = ping_summary(&out).unwrap_or_else(|| {
            panic!(
                "in {}: ping {addr} printed no summary: {out}{}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            )
        });
        assert!(
            sent >= count.min(1),
            "in {}: ping {addr} sent nothing: {out}",
            self.name
        );
        (sent, received)
    }

    /// True when every one of `count` pings to `addr` was answered (no loss tolerated).
    pub fn ping(&self, addr: &str, count: u32) -> bool {
        let got = self.pings(addr, count);
        if got != count {
            eprintln!("ping {addr} from {}: {got} of {count} replies", self.name);
        }
        got == count
    }

    /// True when none of `count` pings to `addr` was answered: the negative of [`Netns::ping`]
    /// (`!ping` would only mean "at least one was lost").
    pub fn no_reply(&self, addr: &str, count: u32) -> bool {
        self.ping_counts(addr, count, &[]).1 == 0
    }

    /// Interface names in the namespace.
    pub fn links(&self) -> Vec<String> {
        self.exec_ok(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| {
                l.split(": ")
                    .nth(1)
                    .map(|s| s.split('@').next().unwrap_or(s).to_string())
            })
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        // Per-namespace /etc files (resolv.conf) of namespaces this test made.
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
    }
}

/// A child process killed (and reaped) on drop.
pub struct KillOnDrop(pub Option<Child>);

/// Send signal `sig` (`TERM`, `INT`, `KILL`) to `target`: a process id, or `-PGID` for a
/// process group. Through the shell's builtin `kill`, so no `kill` binary (procps) is needed.
pub fn signal(target: &str, sig: &str) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -{sig} {target} 2>/dev/null")])
        .status();
}

impl KillOnDrop {
    /// Stop the process with SIGINT (tcpdump writes out what it holds and exits) and wait for
    /// it, at most 10 s.
    pub fn interrupt(mut self) -> Output {
        let c = self.0.take().expect("child");
        signal(&c.id().to_string(), "INT");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(c.wait_with_output());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("process did not exit within 10 s of SIGINT")
            .expect("wait child")
    }

    /// Wait for the process to end and return its output.
    pub fn wait(mut self) -> Output {
        self.0
            .take()
            .expect("child")
            .wait_with_output()
            .expect("wait child")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            // Its process group first (for a child started in one: see Netns::spawn).
            signal(&format!("-{}", c.id()), "KILL");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Poll `f` every 50 ms for up to `secs` seconds until it returns true.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `(transmitted, received)` from ping's summary line ("3 packets transmitted, 3 received, ...").
pub fn ping_summary(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut parts = line.split(", ");
    let sent = parts.next()?.split_whitespace().next()?.parse().ok()?;
    let received = parts.next()?.split_whitespace().next()?.parse().ok()?;
    Some((sent, received))
}

/// Wait until the pcap file `file` has its 24-byte header: the capture session is registered
/// with the daemon (the header is sent only after that), so frames from now on are seen.
pub fn wait_pcap_ready(file: &Path) {
    let ready = wait_until(10, || {
        std::fs::metadata(file)
            .map(|m| m.len() >= 24)
            .unwrap_or(false)
    });
    assert!(
        ready,
        "capture {} did not start within 10 s",
        file.display()
    );
}

/// Start `tcpdump ARGS` in `ns` (or the test's namespace) and return once it says it is
/// listening, so no frame sent afterwards is missed.
pub fn tcpdump_bg(ns: Option<&Netns>, args: &[&str]) -> KillOnDrop {
    use std::os::unix::process::CommandExt;
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.name, "tcpdump"]);
            c
        }
        None => Command::new("tcpdump"),
    };
    // Immediate mode: each frame is handed to tcpdump as it arrives, not in blocks the kernel
    // releases on a timeout (tcpdump stopped by SIGINT would leave the last block unwritten).
    if !args.contains(&"--immediate-mode") {
        cmd.arg("--immediate-mode");
    }
    let mut child = cmd
        .args(args)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn tcpdump {args:?}: {e}"));
    let stderr = child.stderr.take().expect("tcpdump stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut said = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = tx.send(Ok(()));
            }
            said.push_str(&line);
            said.push('\n');
        }
        let _ = tx.send(Err(said));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => KillOnDrop(Some(child)),
        Ok(Err(said)) => panic!("tcpdump {args:?} exited before listening: {said}"),
        Err(_) => {
            let _ = child.kill();
            panic!("tcpdump {args:?} did not start listening within 10 s")
        }
    }
}

/// `tcpdump -nr FILE` output (one line per frame).
pub fn tcpdump_read(file: &Path) -> String {
    run_ok(&["tcpdump", "-nr", file.to_str().expect("utf-8 path")])
}

/// A NAT lab: a "host" namespace running vswitchd whose uplink `up0` is a veth to an "outside"
/// namespace at 10.210.0.2/24. The outside has no route to the endpoint networks, so only NAT
/// can make traffic work. The switch owns 10.210.0.1 on the uplink.
pub struct Lab {
    pub d: Daemon,
    pub host: Netns,
    pub out: Netns,
}

/// The lab's uplink cable: veth `up0` in `host` to `eth0` (10.210.0.2/24, up) in `out`.
pub fn wire_uplink(host: &Netns, out: &Netns) {
    run_ok(&[
        "ip", "link", "add", "up0", "netns", &host.name, "type", "veth", "peer", "name", "eth0",
        "netns", &out.name,
    ]);
    out.exec_ok(&["ip", "addr", "add", "10.210.0.2/24", "dev", "eth0"]);
    out.exec_ok(&["ip", "link", "set", "eth0", "up"]);
}

/// The outside server's address in a [`Lab`].
pub const OUTSIDE: &str = "10.210.0.2";
/// The switch's uplink address in a [`Lab`].
pub const UPLINK: &str = "10.210.0.1";

impl Lab {
    /// Build the lab; `extra` goes to vswitchd.
    pub fn new(extra: &[&str]) -> Lab {
        let host = Netns::new("h");
        let out = Netns::new("o");
        wire_uplink(&host, &out);
        // The daemon's resolver (for DNS forwarding) is the outside namespace, never the host's.
        let etc = Path::new("/etc/netns").join(&host.name);
        std::fs::create_dir_all(&etc).expect("create /etc/netns dir");
        std::fs::write(etc.join("resolv.conf"), "nameserver 10.210.0.2\n")
            .expect("write resolv.conf");
        let d = Daemon::start_in(&host, extra);
        d.ctl_ok(&["uplink", "set", "up0", "--ip", "10.210.0.1/24"]);
        Lab { d, host, out }
    }

    /// `uplink set up0 --ip 10.210.0.1/24 --gateway 10.210.0.2`: the outside namespace becomes
    /// the uplink's next hop for every address beyond its subnet. Returns the uplink as set.
    pub fn set_gateway(&self) -> UplinkInfo {
        self.d.ctl_json(&[
            "uplink",
            "set",
            "up0",
            "--ip",
            &format!("{UPLINK}/24"),
            "--gateway",
            OUTSIDE,
        ])
    }
}

/// Start a TCP (or UDP) server in `ns` on `port` that answers every connection (datagram) with
/// `peer=<client address>`.
pub fn peer_server(ns: &Netns, proto: &str, bind: &str, port: u16) -> KillOnDrop {
    answer_server(ns, proto, bind, port, "peer=$SOCAT_PEERADDR")
}

/// Start a TCP (or UDP) server in `ns` on `bind:port` that answers every connection (datagram)
/// with the line `says`, expanded by the shell: socat sets `$SOCAT_PEERADDR` (the client's
/// address) and `$SOCAT_SOCKADDR` (the address the server was reached at). Ready when this
/// returns.
pub fn answer_server(ns: &Netns, proto: &str, bind: &str, port: u16, says: &str) -> KillOnDrop {
    let listen = match proto {
        "udp" => format!("UDP4-RECVFROM:{port},bind={bind},fork"),
        _ => format!("TCP4-LISTEN:{port},bind={bind},fork,reuseaddr"),
    };
    // -t 5: after the client's half-close, wait for the forked `echo` (slow on a loaded machine)
    // instead of socat's default half second. `cat` reads what the client sent: with `echo`
    // alone, socat's write of the request to a child that already exited fails (EPIPE) and,
    // when that happens before it has read the child's answer, it closes the connection
    // without the answer. That race, not the switch, lost one small exchange in a few under
    // load (seen in captures: the server's FIN came without data).
    let k = ns.spawn(&[
        "socat",
        "-t",
        "5",
        &listen,
        &format!("SYSTEM:echo {says}; cat >/dev/null"),
    ]);
    wait_listening(ns, proto, port);
    k
}

/// A TCP echo server on `port` in `ns` (every connection gets back what it sends), ready when
/// this returns.
pub fn echo_server(ns: &Netns, port: u16) -> KillOnDrop {
    let k = ns.spawn(&[
        "socat",
        &format!("TCP4-LISTEN:{port},fork,reuseaddr"),
        "EXEC:cat",
    ]);
    wait_listening(ns, "tcp", port);
    k
}

/// `dig +time=3 +tries=1 ARGS` from `ns`; its trimmed output.
pub fn dig(ns: &Netns, args: &[&str]) -> String {
    let mut a = vec!["dig", "+time=3", "+tries=1"];
    a.extend_from_slice(args);
    String::from_utf8_lossy(&ns.exec(&a).stdout)
        .trim()
        .to_string()
}

/// Wait until something in `ns` listens on `proto` ("tcp" or "udp") `port` (`ss -l`).
pub fn wait_listening(ns: &Netns, proto: &str, port: u16) {
    let probe = if proto == "udp" { "-lnu" } else { "-lnt" };
    let ok = wait_until(10, || {
        ns.exec_ok(&["ss", "-H", probe]).lines().any(|l| {
            l.split_whitespace()
                .any(|w| w.ends_with(&format!(":{port}")))
        })
    });
    assert!(
        ok,
        "nothing listens on {proto} port {port} in {} after 10 s",
        ns.name
    );
}

/// `echo TEXT | timeout TOTAL socat OPTS - TARGET` in `ns`: the trimmed answer, and what socat
/// said on stderr.
fn socat_exchange(
    ns: &Netns,
    text: &str,
    total: u32,
    opts: &str,
    target: &str,
) -> (String, String) {
    let o = ns.exec(&[
        "sh",
        "-c",
        &format!("echo {text} | timeout {total} socat {opts} - {target}"),
    ]);
    (
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).trim().to_string(),
    )
}

/// Ask a [`peer_server`] at `addr:port` from `ns`; returns the answer (empty if none came).
/// (Generous timeouts: CI runs the tests in parallel on two cores next to iperf3 runs.)
pub fn ask(ns: &Netns, proto: &str, addr: &str, port: u16) -> String {
    let target = match proto {
        "udp" => format!("UDP4:{addr}:{port}"),
        _ => format!("TCP4:{addr}:{port},connect-timeout=5"),
    };
    // -t: how long to wait for the answer after our half-close (UDP has no close, so the wait
    // is always spent: keep it shorter there).
    let opts = format!("-t {} -T 8", if proto == "udp" { 4 } else { 5 });
    let (out, said) = socat_exchange(ns, "x", 10, &opts, &target);
    if out.is_empty() {
        eprintln!(
            "ask {target} from {}: no answer; socat said: {said}",
            ns.name
        );
    }
    out
}

/// A TCP probe that must get no answer: like [`ask`], but gives up after `secs` seconds
/// (a positive control beside it shows the same probe answered in milliseconds).
pub fn ask_within(ns: &Netns, addr: &str, port: u16, secs: u32) -> String {
    let target = format!("TCP4:{addr}:{port},connect-timeout={secs}");
    let opts = format!("-t {secs} -T {secs}");
    socat_exchange(ns, "x", 2 * secs + 1, &opts, &target).0
}

/// Send the line `text` to an [`echo_server`] at `addr:port` from `ns`; returns what came back
/// (empty if nothing did).
pub fn echo_via(ns: &Netns, addr: &str, port: u16, text: &str) -> String {
    let target = format!("TCP4:{addr}:{port},connect-timeout=5");
    socat_exchange(ns, text, 10, "-t 3", &target).0
}

/// A client in `ns` holding one TCP connection to an [`echo_server`] at `addr:port` open across
/// whatever the test does in between: it exchanges `one` when it connects and `two` when told
/// to ([`HeldConnection::second`]), over the same connection. Killed on drop.
pub struct HeldConnection {
    client: KillOnDrop,
    lines: Lines<BufReader<ChildStdout>>,
}

impl HeldConnection {
    /// Connect from `ns` and make the first exchange, which must come back.
    pub fn open(ns: &Netns, addr: &str, port: u16) -> HeldConnection {
        let script = format!(
            r#"
import socket, sys
s = socket.create_connection(("{addr}", {port}), timeout=15)
s.sendall(b"one\n"); print(s.recv(100).decode().strip(), flush=True)
sys.stdin.readline()
s.sendall(b"two\n"); print(s.recv(100).decode().strip(), flush=True)
"#
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start client");
        let stdout = child.stdout.take().expect("client stdout");
        let mut held = HeldConnection {
            client: KillOnDrop(Some(child)),
            lines: BufReader::new(stdout).lines(),
        };
        assert_eq!(
            held.lines.next().and_then(Result::ok).as_deref(),
            Some("one"),
            "the held connection from {} to {addr}:{port} did not make its first exchange",
            ns.name
        );
        held
    }

    /// Make the second exchange over the same connection; returns its answer (`None`: the
    /// connection is gone).
    pub fn second(&mut self) -> Option<String> {
        let child = self.client.0.as_mut().expect("client");
        writeln!(child.stdin.as_mut().expect("client stdin")).expect("signal client");
        self.lines.next().and_then(Result::ok)
    }
}

/// The `(orig, reply)` tuples of `d`'s established DNAT flows (connections in through a
/// published port).
pub fn established_dnat(d: &Daemon) -> Vec<(String, String)> {
    conntrack(d, None)
        .into_iter()
        .filter(|e| e.kind == "dnat" && e.state == "ESTABLISHED")
        .map(|e| (e.orig, e.reply))
        .collect()
}

/// A DNS server for the outside namespace of a [`Lab`] (the daemon's upstream resolver, at
/// 10.210.0.2): it answers every query for one of `names` (`(name, IPv4 address)`) with that
/// address, and every other with NXDOMAIN. Ready when this returns.
pub fn upstream_dns(out: &Netns, names: &[(&str, &str)]) -> KillOnDrop {
    const SCRIPT: &str = r#"
import socket, sys
names = dict(a.lower().split("=") for a in sys.argv[1:])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.210.0.2", 53))
while True:
    q, peer = s.recvfrom(512)
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
        i += 1 + q[i]
    end = i + 5
    name = ".".join(labels).lower()
    if name in names:
        r = q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + q[12:end] + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(names[name])
    else:
        r = q[:2] + b"\x81\x83\x00\x01\x00\x00\x00\x00\x00\x00" + q[12:end]
    s.sendto(r, peer)
"#;
    let names: Vec<String> = names.iter().map(|(n, ip)| format!("{n}={ip}")).collect();
    let mut cmd = vec!["python3", "-c", SCRIPT];
    cmd.extend(names.iter().map(String::as_str));
    let k = out.spawn(&cmd);
    wait_listening(out, "udp", 53);
    k
}

/// Bytes iperf3 moved (TCP, `secs` seconds) from `client` to a one-off server in `server` bound
/// to `addr`.
pub fn iperf_bytes(client: &Netns, server: &Netns, addr: &str, secs: u32) -> u64 {
    let srv = server.spawn(&["iperf3", "-s", "-1", "-B", addr]);
    wait_listening(server, "tcp", 5201);
    let out = client.exec_ok(&["iperf3", "-c", addr, "-t", &secs.to_string(), "-J"]);
    drop(srv);
    let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
    v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0)
}

/// Pings with DF of the largest size a path of MTU `mtu` carries between `x` (at `xip`) and `y`
/// (at `yip`): after a warm-up (the first exchange may have to resolve ARP), 3 of 3 must be
/// answered in each direction. `what` names the path in failures.
pub fn full_size_pings_both_ways(what: &str, x: &Netns, xip: &str, y: &Netns, yip: &str, mtu: u32) {
    let size = (mtu - 28).to_string();
    let df = ["-M", "do", "-s", size.as_str()];
    assert!(
        wait_until(5, || x.pings_with(yip, 1, &df) == 1),
        "[{what}] {xip} never reached {yip} with a {mtu}-byte packet"
    );
    assert_eq!(
        x.pings_with(yip, 3, &df),
        3,
        "[{what}] {xip} -> {yip}, {mtu}-byte packets lost"
    );
    assert_eq!(
        y.pings_with(xip, 3, &df),
        3,
        "[{what}] {yip} -> {xip}, {mtu}-byte packets lost"
    );
}

// ---------------------------------------------------------------------------------------------
// The daemon's objects and counters.

/// `vswitchctl attach NETNS NETWORK` on `d`: the new endpoint.
pub fn attach(d: &Daemon, ns: &Netns, net: &str) -> EndpointInfo {
    attach_with(d, ns, net, &[])
}

/// [`attach`] with more options (`--ip`, `--mac`, `--alias`, ...).
pub fn attach_with(d: &Daemon, ns: &Netns, net: &str, extra: &[&str]) -> EndpointInfo {
    let mut a = vec!["attach", &ns.name, net];
    a.extend_from_slice(extra);
    d.ctl_json(&a)
}

/// `vswitchctl stats` of `d`.
pub fn stats(d: &Daemon) -> StatsInfo {
    d.ctl_json(&["stats"])
}

/// The event counter `name` of `d`; a counter the daemon does not report fails the test.
pub fn event(d: &Daemon, name: &str) -> u64 {
    let s = stats(d);
    *s.events
        .get(name)
        .unwrap_or_else(|| panic!("no event counter {name}: {:?}", s.events))
}

/// The drop counter `name` of `d`; a counter the daemon does not report fails the test.
pub fn drops(d: &Daemon, name: &str) -> u64 {
    let s = stats(d);
    *s.drops
        .get(name)
        .unwrap_or_else(|| panic!("no drop counter {name}: {:?}", s.drops))
}

/// The flows `d` tracks (`conntrack ls`), only those of `network` when given.
pub fn conntrack(d: &Daemon, network: Option<&str>) -> Vec<ConntrackEntry> {
    match network {
        Some(n) => d.ctl_json(&["conntrack", "ls", "--network", n]),
        None => d.ctl_json(&["conntrack", "ls"]),
    }
}

/// `(MAC, ADDR/PREFIX)` of interface `ifname` in `ns` (empty strings for what it lacks).
pub fn iface(ns: &Netns, ifname: &str) -> (String, String) {
    let link = ns.exec_ok(&["ip", "-o", "link", "show", "dev", ifname]);
    let addr = ns.exec_ok(&["ip", "-o", "-4", "addr", "show", "dev", ifname]);
    (word_after(&link, "link/ether "), word_after(&addr, "inet "))
}

/// The word after `key` in `text` (empty when absent).
pub fn word_after(text: &str, key: &str) -> String {
    text.split(key)
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("")
        .to_string()
}

/// `/proc/PID/status` of process `pid`.
pub fn proc_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status")
}

/// The number after `name` in a `/proc/PID/status` text; a missing or unreadable field fails
/// the test (a 0 would pass every "at most" check).
pub fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or_else(|| panic!("no {name} in /proc/PID/status: {status}"))
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_field(&proc_status(pid), "VmRSS:")
}

/// `tests/tools/hostile.py`: hostile traffic generators (malformed frames, floods, storms).
pub const HOSTILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/tools/hostile.py");

/// Run `tests/tools/hostile.py ARGS` in `ns`; returns its JSON report.
pub fn hostile(ns: &Netns, args: &[&str]) -> serde_json::Value {
    let mut cmd = vec!["python3", HOSTILE];
    cmd.extend_from_slice(args);
    let out = ns.exec_ok(&cmd);
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("hostile.py {args:?} printed {out:?}: {e}"));
    eprintln!("hostile.py {}: {v}", args[0]);
    v
}

/// The `sent` count of a [`hostile`] report (a report without one fails the test).
pub fn sent(r: &serde_json::Value) -> u64 {
    r["sent"]
        .as_u64()
        .unwrap_or_else(|| panic!("hostile.py report without `sent`: {r}"))
}

/// An underlay for overlay tests: a bridge in its own namespace and `n` "hosts", each a namespace
/// with `ul0` at 10.240.0.<i>/24 (i = 1..=n) plugged into the bridge.
pub struct Underlay {
    pub hosts: Vec<Netns>,
    pub bridge: Netns,
}

impl Underlay {
    /// Build the bridge and `n` hosts.
    pub fn new(n: usize) -> Underlay {
        let bridge = Netns::new("u");
        bridge.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        bridge.exec_ok(&["ip", "link", "set", "br0", "up"]);
        let mut hosts = Vec::new();
        for i in 1..=n {
            let h = Netns::new(&format!("h{i}"));
            let port = format!("p{i}");
            run_ok(&[
                "ip",
                "link",
                "add",
                "ul0",
                "netns",
                &h.name,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &bridge.name,
            ]);
            bridge.exec_ok(&["ip", "link", "set", &port, "master", "br0", "up"]);
            h.exec_ok(&[
                "ip",
                "addr",
                "add",
                &format!("10.240.0.{i}/24"),
                "dev",
                "ul0",
            ]);
            h.exec_ok(&["ip", "link", "set", "ul0", "up"]);
            hosts.push(h);
        }
        Underlay { hosts, bridge }
    }

    /// The underlay address of host `i` (1-based).
    pub fn ip(i: usize) -> String {
        format!("10.240.0.{i}")
    }
}

/// `network create NAME --subnet SUBNET --vni VNI` on `d`, with a `--peer` for each of `peers`
/// and then `extra` (`--mtu`, `--port`, ...).
pub fn overlay_network(
    d: &Daemon,
    name: &str,
    subnet: &str,
    vni: &str,
    peers: &[&str],
    extra: &[&str],
) {
    let mut args = vec!["network", "create", name, "--subnet", subnet, "--vni", vni];
    for p in peers {
        args.extend(["--peer", p]);
    }
    args.extend_from_slice(extra);
    d.ctl_ok(&args);
}

/// Overlay network `ov` on `subnet` with `vni` on two daemons of an [`Underlay`] (hosts 1 and 2),
/// each the other's peer.
pub fn overlay_pair(d1: &Daemon, d2: &Daemon, subnet: &str, vni: &str) {
    for (d, peer) in [(d1, 2), (d2, 1)] {
        overlay_network(d, "ov", subnet, vni, &[&Underlay::ip(peer)], &[]);
    }
}

/// Make `host` (an [`Underlay`] host) a plain Linux VTEP: a kernel vxlan device `vx0` for `vni`
/// (UDP port 4789, from `local` over `ul0`) with head-end replication to `remote` (an all-zeros
/// FDB entry), address `addr` (`ADDR/PREFIX`) and MTU `mtu`, up.
pub fn kernel_vxlan_host(host: &Netns, vni: &str, local: &str, remote: &str, addr: &str, mtu: u32) {
    host.exec_ok(&[
        "ip", "link", "add", "vx0", "type", "vxlan", "id", vni, "dstport", "4789", "local", local,
        "dev", "ul0",
    ]);
    vxlan_flood_to(host, remote);
    host.exec_ok(&["ip", "link", "set", "vx0", "mtu", &mtu.to_string()]);
    host.exec_ok(&["ip", "addr", "add", addr, "dev", "vx0"]);
    host.exec_ok(&["ip", "link", "set", "vx0", "up"]);
}

/// Head-end replication on a [`kernel_vxlan_host`]: broadcasts and unknown unicast of `vx0`
/// also go to `remote` (an all-zeros FDB entry appended).
pub fn vxlan_flood_to(host: &Netns, remote: &str) {
    host.exec_ok(&[
        "bridge",
        "fdb",
        "append",
        "00:00:00:00:00:00",
        "dev",
        "vx0",
        "dst",
        remote,
    ]);
}

/// Unmount (lazily, deepest first) everything mounted under `dir`: what a container runtime
/// the test started left there (rootfs and namespace bind mounts).
pub fn unmount_under(dir: &Path) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "grep -o ' {}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
            dir.display()
        ))
        .status();
}

/// A cluster of real etcd members (Debian's etcd-server), each a process in namespace `ns` on
/// its own address there, with its own data directory; stopped and removed on drop.
pub struct EtcdCluster {
    ns: String,
    addrs: Vec<String>,
    dir: PathBuf,
    members: Vec<Option<KillOnDrop>>,
}

impl EtcdCluster {
    /// Start `n` members on `addrs` (addresses of namespace `ns`, already configured); waits
    /// until every member answers.
    pub fn start(ns: &Netns, addrs: &[&str]) -> EtcdCluster {
        require(&["etcd", "etcdctl"]);
        let dir = std::env::temp_dir().join(format!("vswitch-etcd-{}", unique()));
        std::fs::create_dir_all(&dir).expect("etcd data dir");
        let mut c = EtcdCluster {
            ns: ns.name.clone(),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            dir,
            members: Vec::new(),
        };
        for i in 0..addrs.len() {
            let m = c.spawn(i, "new");
            c.members.push(Some(m));
        }
        for i in 0..addrs.len() {
            c.wait_healthy(i);
        }
        c
    }

    fn spawn(&self, i: usize, state: &str) -> KillOnDrop {
        let initial: Vec<String> = self
            .addrs
            .iter()
            .enumerate()
            .map(|(j, a)| format!("m{j}=http://{a}:2380"))
            .collect();
        let a = &self.addrs[i];
        let log = std::fs::File::create(self.dir.join(format!("m{i}.log"))).expect("etcd log");
        use std::os::unix::process::CommandExt;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "etcd"])
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(self.dir.join(format!("m{i}.etcd")))
            .args(["--listen-client-urls", &format!("http://{a}:2379")])
            .args(["--advertise-client-urls", &format!("http://{a}:2379")])
            .args(["--listen-peer-urls", &format!("http://{a}:2380")])
            .args(["--initial-advertise-peer-urls", &format!("http://{a}:2380")])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", state])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        KillOnDrop(Some(child))
    }

    /// `etcd://A:2379,B:2379,...` for `--cluster`.
    pub fn url(&self) -> String {
        let eps: Vec<String> = self.addrs.iter().map(|a| format!("{a}:2379")).collect();
        format!("etcd://{}", eps.join(","))
    }

    /// Client endpoints for etcdctl.
    pub fn endpoints(&self) -> String {
        let eps: Vec<String> = self
            .addrs
            .iter()
            .map(|a| format!("http://{a}:2379"))
            .collect();
        eps.join(",")
    }

    /// Run `etcdctl ARGS` against the cluster (from its namespace); stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let o = self.etcdctl(&self.endpoints(), args);
        assert!(
            o.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `etcdctl --endpoints ENDPOINTS ARGS` in the cluster's namespace.
    fn etcdctl(&self, endpoints: &str, args: &[&str]) -> Output {
        let mut a = vec![
            "ip",
            "netns",
            "exec",
            &self.ns,
            "env",
            "ETCDCTL_API=3",
            "etcdctl",
        ];
        a.extend(["--endpoints", endpoints, "--dial-timeout", "2s"]);
        a.extend_from_slice(args);
        run(&a)
    }

    fn wait_healthy(&self, i: usize) {
        let ep = format!("http://{}:2379", self.addrs[i]);
        let ok = wait_until(20, || {
            self.etcdctl(&ep, &["endpoint", "health"]).status.success()
        });
        let log = std::fs::read_to_string(self.dir.join(format!("m{i}.log"))).unwrap_or_default();
        assert!(ok, "etcd member m{i} not healthy within 20 s: {log}");
    }

    /// Stop member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.members[i] = None;
    }

    /// Start member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].is_none(), "member m{i} is running");
        let m = self.spawn(i, "existing");
        self.members[i] = Some(m);
        self.wait_healthy(i);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.members.clear();
        if std::thread::panicking() {
            // A failed test: the members' logs go to its output before the directory goes.
            for i in 0..self.addrs.len() {
                let log =
                    std::fs::read_to_string(self.dir.join(format!("m{i}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("--- etcd m{i} (last lines) ---");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A datagram from `ns` to `addr:port` (a closed port; IPv4 or IPv6): "refused" when the
/// port-unreachable error came back to the sending socket, "timeout" when nothing did.
pub fn udp_to_closed_port(ns: &Netns, addr: &str, port: u16) -> String {
    let family = if addr.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    let script = format!(
        r#"
import socket
s = socket.socket(socket.{family}, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect(("{addr}", {port}))
s.send(b"anyone?")
try:
    s.recv(100)
    print("answer")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
"#
    );
    ns.exec_ok(&["python3", "-c", &script]).trim().to_string()
}
