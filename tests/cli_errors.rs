//! Bad input gets a one-line error naming what was wrong and exit status 1; the daemon keeps
//! running and keeps its endpoints.

mod common;

use common::*;
use switch::model::*;

fn assert_one_line_error(d: &Daemon, args: &[&str], mentions: &str) {
    let (code, err) = d.ctl_err(args);
    assert_eq!(code, 1, "vswitchctl {args:?}: exit {code}, stderr {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "vswitchctl {args:?}: expected one line, got {err:?}"
    );
    assert!(lines[0].starts_with("vswitchctl: "), "{err}");
    assert!(
        lines[0].contains(mentions),
        "vswitchctl {args:?}: error should mention {mentions:?}: {err}"
    );
}

#[test]
fn bad_input_is_refused_with_one_line() {
    require(&[]);
    let d = Daemon::start();
    let a = Netns::new("a");
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.202.0.0/24"]);
    let ep: EndpointInfo = d.ctl_json(&["attach", &a.name, "front"]);

    assert_one_line_error(
        &d,
        &["network", "create", "dup", "--subnet", "10.202.0.128/25"],
        "overlaps",
    );
    assert_one_line_error(
        &d,
        &["network", "create", "big", "--subnet", "10.0.0.0/8"],
        "overlaps",
    );
    assert_one_line_error(
        &d,
        &["network", "create", "front", "--subnet", "10.203.0.0/24"],
        "front",
    );
    assert_one_line_error(
        &d,
        &["network", "create", "x", "--subnet", "10.204.0.0/33"],
        "10.204.0.0/33",
    );
    assert_one_line_error(
        &d,
        &["network", "create", "x", "--subnet", "banana"],
        "banana",
    );
    assert_one_line_error(
        &d,
        &["network", "create", "x", "--subnet", "10.204.0.7/24"],
        "10.204.0.0/24",
    );
    assert_one_line_error(
        &d,
        &[
            "network",
            "create",
            "x",
            "--subnet",
            "10.204.0.0/24",
            "--gateway",
            "10.205.0.1",
        ],
        "10.205.0.1",
    );
    assert_one_line_error(
        &d,
        &["network", "create", "bad/name", "--subnet", "10.204.0.0/24"],
        "bad/name",
    );
    assert_one_line_error(&d, &["network", "inspect", "nosuch"], "nosuch");
    assert_one_line_error(&d, &["network", "rm", "nosuch"], "nosuch");

    let b = Netns::new("b");
    assert_one_line_error(&d, &["attach", "vt-no-such-ns", "front"], "vt-no-such-ns");
    assert_one_line_error(&d, &["attach", &b.name, "nosuchnet"], "nosuchnet");
    assert_one_line_error(&d, &["attach", "../etc", "front"], "../etc");
    assert_one_line_error(&d, &["attach", "a/b", "front"], "a/b");
    assert_one_line_error(
        &d,
        &["attach", &b.name, "front", "--ip", "10.99.0.5"],
        "10.99.0.5",
    );
    assert_one_line_error(
        &d,
        &["attach", &b.name, "front", "--ip", "10.202.0.255"],
        "10.202.0.255",
    );
    assert_one_line_error(
        &d,
        &["attach", &b.name, "front", "--ip", &ep.ip.to_string()],
        "already in use",
    );
    assert_one_line_error(
        &d,
        &["attach", &b.name, "front", "--ip", "10.202.0.300"],
        "10.202.0.300",
    );
    assert_one_line_error(&d, &["attach", &b.name, "front", "--mac", "zz:zz"], "zz:zz");
    assert_one_line_error(
        &d,
        &["attach", &b.name, "front", "--mac", "01:00:5e:00:00:01"],
        "01:00:5e:00:00:01",
    );
    assert_one_line_error(
        &d,
        &["attach", &b.name, "front", "--mac", &ep.mac],
        "already in use",
    );
    assert_one_line_error(&d, &["attach", &a.name, "front"], "already attached");
    assert_one_line_error(&d, &["attach", &b.name, "front", "--ifname", "lo"], "lo");
    assert_one_line_error(
        &d,
        &["attach", &b.name, "front", "--ifname", "much-too-long-name"],
        "much-too-long-name",
    );
    assert_one_line_error(&d, &["detach", &b.name, "front"], "not attached");

    // Nothing was lost: the namespace b has no stray device, a keeps its endpoint and address pool.
    assert_eq!(
        b.links(),
        vec!["lo".to_string()],
        "a refused attach left a device behind"
    );
    let net: NetworkInfo = d.ctl_json(&["network", "inspect", "front"]);
    assert_eq!(net.endpoints.len(), 1);
    let eb: EndpointInfo = d.ctl_json(&["attach", &b.name, "front"]);
    assert_eq!(
        eb.ip.to_string(),
        "10.202.0.3",
        "refused attaches must not leak addresses"
    );
}

#[test]
fn no_daemon_gives_a_message_naming_the_socket() {
    let path = std::env::temp_dir().join(format!("vswitch-none-{}.sock", std::process::id()));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
        .args(["--socket", path.to_str().unwrap(), "network", "ls"])
        .output()
        .expect("run vswitchctl");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(path.to_str().unwrap()) && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2_and_help_teaches() {
    let ctl = env!("CARGO_BIN_EXE_vswitchctl");
    let o = std::process::Command::new(ctl)
        .args(["network", "create", "x"])
        .output()
        .expect("run");
    assert_eq!(
        o.status.code(),
        Some(2),
        "missing --subnet should be a usage error"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--subnet"));
    let help = std::process::Command::new(ctl)
        .arg("--help")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&help.stdout);
    for word in ["attach", "capture", "network", "Quick start"] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vswitchd"))
        .args(["--workers", "0"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn second_daemon_on_the_same_state_directory_is_refused_until_the_first_is_gone() {
    require(&[]);
    let mut d = Daemon::start();
    let state = d.dir.join("state");
    let second = |socket: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vswitchd"))
            .args(["--socket", d.dir.join(socket).to_str().unwrap()])
            .args(["--state-dir", state.to_str().unwrap()])
            .output()
            .expect("run")
    };
    let o = second("other.sock");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&format!("state directory {} is in use", state.display()))
            && err.contains(&format!("pid {}", d.pid())),
        "names the directory and the holder: {err}"
    );
    assert!(
        !d.dir.join("other.sock").exists(),
        "the refused daemon bound its socket"
    );
    assert!(
        d.ctl(&["network", "ls"]).status.success(),
        "first daemon disturbed"
    );
    // Control: once the holder is gone (even by SIGKILL), the directory is free again.
    d.kill9();
    let mut again = std::process::Command::new(env!("CARGO_BIN_EXE_vswitchd"))
        .args(["--socket", d.dir.join("again.sock").to_str().unwrap()])
        .args(["--state-dir", state.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !d.dir.join("again.sock").exists() {
        if let Some(st) = again.try_wait().expect("wait") {
            panic!("the daemon after the holder's death exited: {st}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no socket within 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = again.kill();
    let _ = again.wait();
}

#[test]
fn second_daemon_on_the_same_socket_is_refused() {
    require(&[]);
    let d = Daemon::start();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vswitchd"))
        .args([
            "--socket",
            d.socket.to_str().unwrap(),
            "--state-dir",
            d.dir.join("state2").to_str().unwrap(),
        ])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The socket is 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        d.ctl(&["network", "ls"]).status.success(),
        "first daemon disturbed"
    );
}

#[test]
fn non_root_clients_are_refused_even_if_the_socket_mode_is_loosened() {
    require(&["setpriv"]);
    let d = Daemon::start();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666))
        .expect("chmod socket");
    // Run a copy of the client from the test's own directory, which `nobody` can reach wherever
    // the checkout lives.
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let ctl = d.dir.join("vswitchctl");
    std::fs::copy(env!("CARGO_BIN_EXE_vswitchctl"), &ctl).expect("copy vswitchctl");
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755))
        .expect("chmod vswitchctl");
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&ctl)
        .arg("--socket")
        .arg(&d.socket)
        .args(["network", "ls"])
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("permission denied") && err.contains("uid 65534"),
        "{err}"
    );
    assert!(
        d.ctl(&["network", "ls"]).status.success(),
        "root must still be served"
    );
}
