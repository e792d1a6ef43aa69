//! The API stays up whatever its clients do (issue 15): a flood of idle connections does not lock
//! `vswitchctl` out or exhaust the daemon's descriptors, a client that sends half a request is
//! cut off by the header timeout (a capture streaming is not), `vswitchctl --timeout` gives up on
//! a socket that never answers, and captures do not cost a thread each. Real vswitchd; the
//! sockets are the test's own; everything is removed by guards, also when a test fails.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use switch::sys::rlimit;
use vswitch_cli::StatusInfo;

/// The tests that change this process's open-file limit take turns.
static NOFILE: Mutex<()> = Mutex::new(());

/// Puts this process's soft open-file limit back as it was, also when the test fails.
struct SoftLimit(u64);

impl Drop for SoftLimit {
    fn drop(&mut self) {
        let _ = rlimit::set_nofile_soft(self.0);
    }
}

/// The daemon's soft and hard "Max open files" from /proc/PID/limits.
fn daemon_nofile(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let mut w = line["Max open files".len()..].split_whitespace();
    (
        w.next().unwrap_or_default().to_string(),
        w.next().unwrap_or_default().to_string(),
    )
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Run vswitchctl against `socket`, killed if it is not done within `limit`: (output, time
/// taken), `None` when it had to be killed.
fn ctl_within(socket: &Path, args: &[&str], limit: Duration) -> (Option<Output>, Duration) {
    let start = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vswitchctl");
    let mut child = KillOnDrop(Some(child));
    loop {
        let c = child.0.as_mut().expect("child");
        if c.try_wait().expect("wait vswitchctl").is_some() {
            let out = child.0.take().expect("child").wait_with_output();
            return (Some(out.expect("vswitchctl output")), start.elapsed());
        }
        if start.elapsed() > limit {
            return (None, start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The daemon's `GET /v1/status`.
fn status(d: &Daemon) -> StatusInfo {
    d.ctl_json(&["status"])
}

/// How the daemon ended a connection the test holds: the time until it read end-of-stream (or
/// an error: a reset), and what it sent before. `None` if it stayed open `limit` long.
fn closed_within(s: &mut UnixStream, limit: Duration) -> (Option<Duration>, Vec<u8>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        s.set_read_timeout(Some(limit - start.elapsed() + Duration::from_millis(1)))
            .expect("read timeout");
        match s.read(&mut buf) {
            Ok(0) => return (Some(start.elapsed()), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock) => break,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(_) => return (Some(start.elapsed()), got),
        }
    }
    (None, got)
}

#[test]
fn idle_connections_do_not_lock_the_api_out() {
    require(&[]);
    let _turn = NOFILE.lock().unwrap_or_else(|e| e.into_inner());
    let (soft, hard) = rlimit::nofile().expect("getrlimit");
    let _restore = SoftLimit(soft);
    // The daemon starts with the soft limit a service usually gets (systemd's 1024, the hard
    // limit left higher), which it has to raise itself; the test raises its own back to hold
    // its 1100 connections.
    rlimit::set_nofile_soft(1024).expect("lower the soft limit for the daemon");
    let d = Daemon::start();
    rlimit::set_nofile_soft(hard).expect("raise the test's own soft limit");
    let pid = d.pid();
    let (dsoft, dhard) = daemon_nofile(pid);
    assert_eq!(
        dsoft, dhard,
        "vswitchd left its open-file limit at {dsoft} (hard {dhard})"
    );

    let mut idle = Vec::new();
    for i in 0..1100 {
        match UnixStream::connect(&d.socket) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connection {i} to the API failed: {e}"),
        }
    }
    // The daemon accepts (or closes) them while vswitchctl asks: it must answer promptly, and
    // again.
    for round in 0..3 {
        let (out, took) = ctl_within(&d.socket, &["network", "ls"], Duration::from_secs(10));
        let out = out.unwrap_or_else(|| {
            panic!(
                "vswitchctl network ls (round {round}) did not answer within 10 s with 1100 \
                 idle connections open ({} descriptors open in vswitchd): {}",
                open_fds(pid),
                d.log()
            )
        });
        assert!(
            out.status.success(),
            "network ls failed with 1100 idle connections open: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            took < Duration::from_secs(3),
            "network ls took {took:?} with 1100 idle connections open"
        );
    }
    let st = status(&d);
    assert!(st.api.max_connections < 1100, "{:?}", st.api);
    assert!(
        st.api.connections <= st.api.max_connections,
        "{} connections open, above the cap: {:?}",
        st.api.connections,
        st.api
    );
    assert!(
        st.api.closed_idle + st.api.timed_out >= (1100 - st.api.max_connections) as u64,
        "the connections over the cap were neither closed nor timed out: {:?}",
        st.api
    );
    // The descriptors stay bounded by the cap (plus the daemon's own: sockets, epoll, TAPs).
    let fds = open_fds(pid);
    assert!(
        fds <= st.api.max_connections + 128,
        "vswitchd holds {fds} descriptors with a cap of {} connections",
        st.api.max_connections
    );
    // The refusals are in the log, once, not once per connection.
    assert!(
        wait_until(15, || d.log().contains("at its cap of")),
        "no log line about the connection cap: {}",
        d.log()
    );
    let lines = d.log().matches("at its cap of").count();
    assert!(
        lines <= 3,
        "{lines} log lines about the cap: rate-limiting failed"
    );
    drop(idle);
}

#[test]
fn a_half_sent_request_is_cut_off_but_a_capture_streams_on() {
    require(&[]);
    let d = Daemon::start_with(&["--api-header-timeout", "1", "--api-idle-timeout", "2"]);
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.231.0.0/24"]);

    // Half a request head: closed by the header timeout, with nothing sent.
    let mut half = UnixStream::connect(&d.socket).expect("connect");
    half.write_all(b"GET /v1/networks HTTP/1.1\r\nHost: localhost\r\n")
        .expect("send half a head");
    let half_start = Instant::now();
    // Nothing at all: the first head is owed as well.
    let mut silent = UnixStream::connect(&d.socket).expect("connect");
    let silent_start = Instant::now();
    // A whole request kept alive: answered, then closed by the idle timeout (2 s), later than
    // the header timeout.
    let mut kept = UnixStream::connect(&d.socket).expect("connect");
    kept.write_all(b"GET /v1/networks HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send a request");
    let kept_start = Instant::now();
    // A capture for 4 s, longer than either timeout, with nothing to capture: not idle.
    let mut capture = UnixStream::connect(&d.socket).expect("connect");
    capture
        .write_all(
            b"GET /v1/capture?target=front&timeout=4 HTTP/1.1\r\nHost: localhost\r\n\
              Connection: close\r\n\r\n",
        )
        .expect("send a capture request");
    let capture_start = Instant::now();

    let (t, got) = closed_within(&mut half, Duration::from_secs(10));
    t.expect("half a request head was still open after 10 s (header timeout 1 s)");
    let t = half_start.elapsed();
    assert!(
        t >= Duration::from_millis(700) && t < Duration::from_secs(3),
        "half a head was closed after {t:?}, not about 1 s"
    );
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    let (t, _) = closed_within(&mut silent, Duration::from_secs(10));
    t.expect("a silent connection was still open after 10 s (header timeout 1 s)");
    let t = silent_start.elapsed();
    assert!(
        t >= Duration::from_millis(700) && t < Duration::from_secs(3),
        "a silent connection was closed after {t:?}, not about 1 s"
    );

    let (t, got) = closed_within(&mut kept, Duration::from_secs(10));
    t.expect("an idle kept-alive connection was still open after 10 s (idle timeout 2 s)");
    let t = kept_start.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        t >= Duration::from_millis(1700) && t < Duration::from_secs(5),
        "an idle kept-alive connection was closed after {t:?}, not about 2 s"
    );

    let (ended, got) = closed_within(&mut capture, Duration::from_secs(15));
    ended.expect("the capture did not end within 15 s");
    let t = capture_start.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        got.ends_with(b"0\r\n\r\n"),
        "the capture's stream was cut, not ended: {text:?}"
    );
    assert!(
        t >= Duration::from_millis(3500),
        "the capture (4 s) ended after {t:?}: cut by a timeout"
    );

    let st = status(&d);
    assert!(st.api.timed_out >= 3, "{:?}", st.api);
    d.ctl_ok(&["network", "ls"]);
}

/// A socket that accepts connections and never answers, in a directory of its own; both go on
/// drop.
struct MuteListener {
    dir: PathBuf,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MuteListener {
    fn new() -> MuteListener {
        let dir = std::env::temp_dir().join(format!(
            "vswitch-api-mute-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create dir");
        let path = dir.join("mute.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for s in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    held.extend(s.ok());
                }
            })
        };
        MuteListener {
            dir,
            path,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for MuteListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accepting thread so that it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn vswitchctl_gives_up_after_its_timeout() {
    require(&[]);
    let mute = MuteListener::new();
    let path = mute.path.display().to_string();
    for args in [
        &["--timeout", "1", "network", "ls"][..],
        &[
            "--timeout",
            "1",
            "network",
            "create",
            "x",
            "--subnet",
            "10.1.0.0/24",
        ],
        // The wait for a capture's head is bounded too (its own --timeout is the capture's).
        &["--timeout", "1", "capture", "front", "--timeout", "30"],
    ] {
        let (out, took) = ctl_within(&mute.path, args, Duration::from_secs(10));
        let out = out.unwrap_or_else(|| panic!("vswitchctl {args:?} still waiting after 10 s"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "vswitchctl {args:?} gave up after {took:?}, not about 1 s"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains(&path) && err.contains("1 s"),
            "the error names neither the socket nor the timeout: {err}"
        );
    }

    // Against a real daemon, the timeout does not cut a capture longer than it.
    let d = Daemon::start();
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.232.0.0/24"]);
    let file = d.dir.join("capture.pcap");
    let file_arg = file.display().to_string();
    let (out, took) = ctl_within(
        &d.socket,
        &[
            "--timeout",
            "1",
            "capture",
            "front",
            "--timeout",
            "3",
            "-w",
            &file_arg,
        ],
        Duration::from_secs(15),
    );
    let out = out.expect("a 3 s capture still running after 15 s");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took >= Duration::from_millis(2800),
        "capture ended after {took:?}"
    );
    let pcap = std::fs::read(&file).expect("read the capture");
    assert_eq!(pcap.len(), 24, "just the pcap header: nothing was sent");
    // 0 waits for ever; out of range is a usage error.
    d.ctl_ok(&["--timeout", "0", "network", "ls"]);
    let (code, err) = d.ctl_err(&["--timeout", "-1", "network", "ls"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn captures_do_not_cost_a_thread_each() {
    require(&["ping"]);
    const CAPTURES: usize = 300;
    let d = Daemon::start();
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.233.0.0/24"]);
    let ns = Netns::new("cap");
    attach(&d, &ns, "front");
    let pid = d.pid();
    let before = threads(pid);

    let mut sessions = Vec::new();
    for i in 0..CAPTURES {
        let mut s = UnixStream::connect(&d.socket).expect("connect");
        s.write_all(
            b"GET /v1/capture?target=front HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .unwrap_or_else(|e| panic!("capture request {i}: {e}"));
        sessions.push(s);
    }
    // Every session is registered once its head is back.
    let mut bodies = Vec::new();
    for (i, s) in sessions.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => panic!(
                    "capture {i}: no answer head ({:?}): {}",
                    String::from_utf8_lossy(&got),
                    d.log()
                ),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "capture {i}: {}",
            String::from_utf8_lossy(&got)
        );
        bodies.push(got);
    }
    let during = threads(pid);
    assert!(
        during < before + 40,
        "{CAPTURES} captures took vswitchd from {before} to {during} threads"
    );

    // They all stream: a ping to the gateway enters the network and reaches every session.
    assert!(ns.ping("10.233.0.1", 1), "ping the gateway");
    for (i, (s, got)) in sessions.iter_mut().zip(&mut bodies).enumerate() {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        // Head, the pcap header's chunk (24 bytes), then at least one record (16 + 42 bytes
        // for the smallest frame, ARP).
        let head = got.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
        while got.len() - head < 24 + 16 + 42 + 12 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "capture {i} got no frame: {} bytes",
                got.len() - head
            );
            match s.read(&mut buf) {
                Ok(0) => panic!("capture {i} ended early"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("capture {i}: {e}"),
            }
        }
    }

    // A session ends when its client goes.
    drop(sessions);
    assert!(
        wait_until(10, || d.log().matches("ended:").count() >= CAPTURES),
        "{} of {CAPTURES} sessions ended after their clients went",
        d.log().matches("ended:").count()
    );
    d.ctl_ok(&["network", "ls"]);
}
