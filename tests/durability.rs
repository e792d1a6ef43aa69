//! Nothing lost: a change the state directory cannot take is refused and taken back; what a
//! restart cannot restore yet waits as pending; namespaces and uplink interfaces that vanish
//! under the daemon, and come back. Real vswitchd, real namespaces, a real full tmpfs; every
//! namespace, mount and process is removed by guards, also when a test fails.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use switch::model::*;

/// A tmpfs mounted on a directory, unmounted on drop (lazily: the daemon may still hold files).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mount a `size` tmpfs on `dir`, keeping the files `dir` held.
    fn over(dir: &Path, size: &str) -> Tmpfs {
        require(&["mount", "umount", "cp"]);
        let saved = dir.with_extension("saved");
        run_ok(&[
            "cp",
            "-a",
            &dir.display().to_string(),
            &saved.display().to_string(),
        ]);
        run_ok(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            &dir.display().to_string(),
        ]);
        let t = Tmpfs(dir.to_path_buf());
        run_ok(&[
            "sh",
            "-c",
            &format!("cp -a {}/. {}/", saved.display(), dir.display()),
        ]);
        let _ = std::fs::remove_dir_all(&saved);
        t
    }

    /// Fill it up: a file takes every free page.
    fn fill(&self) {
        let fill = self.0.join("filler");
        // dd stops with "No space left on device": that is the point.
        let _ = run(&[
            "dd",
            "if=/dev/zero",
            &format!("of={}", fill.display()),
            "bs=4096",
        ]);
        let df = run_ok(&["df", "--output=avail", &self.0.display().to_string()]);
        assert!(
            df.lines().nth(1).is_some_and(|l| l.trim() == "0"),
            "the tmpfs is not full: {df}"
        );
    }

    /// Give the space back.
    fn drain(&self) {
        std::fs::remove_file(self.0.join("filler")).expect("remove the filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run(&["umount", "-l", &self.0.display().to_string()]);
        // What was under the mount (the state before it): the daemon's guard removes the rest.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ports(d: &Daemon) -> Vec<PortInfo> {
    d.ctl_json(&["ports"])
}

fn port_of<'a>(ports: &'a [PortInfo], netns: &str) -> &'a PortInfo {
    ports
        .iter()
        .find(|p| p.netns == netns)
        .unwrap_or_else(|| panic!("no port for {netns}: {ports:?}"))
}

/// Names of the networks and endpoints daemon `d` lists.
fn listing(d: &Daemon) -> Vec<String> {
    let nets: Vec<NetworkInfo> = d.ctl_json(&["network", "ls"]);
    let mut v = Vec::new();
    for n in nets {
        v.push(n.name.clone());
        for e in n.endpoints {
            v.push(format!("{}/{}={}", n.name, e.netns, e.ip));
        }
    }
    v
}

#[test]
fn a_change_a_full_state_directory_cannot_take_is_refused_and_nothing_changes() {
    require(&["ping", "dd", "df"]);
    let mut d = Daemon::start();
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.239.0.0/24"]);
    d.ctl_ok(&["network", "create", "spare", "--subnet", "10.239.9.0/24"]);
    attach(&d, &a, "front");
    assert!(d.terminate().success());
    let tmpfs = Tmpfs::over(&d.dir.join("state"), "1m");
    d.spawn(&[]);
    let before = listing(&d);
    tmpfs.fill();

    // attach: refused in one line naming the file and the OS error, no device left behind.
    let (code, err) = d.ctl_err(&["attach", &b.name, "front"]);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("/state/journal.") && err.contains("No space left on device"),
        "the refusal must name the state file and the OS error: {err}"
    );
    assert_eq!(b.links(), ["lo"], "the refused attach left a device");
    // Other changes, additions and removals alike.
    for args in [
        &["network", "create", "back", "--subnet", "10.239.1.0/24"][..],
        &["detach", &a.name, "front"],
        &["network", "rm", "spare"],
    ] {
        let (_, err) = d.ctl_err(args);
        assert!(err.contains("No space left on device"), "{args:?}: {err}");
    }
    assert_eq!(listing(&d), before, "a refused change changed the state");
    assert!(a.ping("10.239.0.1", 1), "the kept endpoint stopped working");

    // A restart (its snapshot cannot be written either) shows the state as it was.
    assert!(d.terminate().success());
    d.spawn(&[]);
    assert_eq!(
        listing(&d),
        before,
        "the restart lost or invented something"
    );

    // With room again the refused attach goes through, with the address it would have had.
    tmpfs.drain();
    let eb = attach(&d, &b, "front");
    assert_eq!(eb.ip.to_string(), "10.239.0.3");
    assert!(b.ping("10.239.0.2", 1));
}

#[test]
fn an_endpoint_whose_namespace_is_missing_at_start_waits_as_pending_and_is_attached_when_it_appears(
) {
    require(&["ping"]);
    let mut d = Daemon::start();
    let a = Netns::new("a");
    let b = Netns::new("b");
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.240.0.0/24"]);
    let ea = attach(&d, &a, "front");
    attach(&d, &b, "front");
    d.ctl_ok(&["publish", &a.name, "8080:80"]);
    assert!(d.terminate().success());
    // While the daemon is down, a's namespace goes (a host booting: not made yet).
    let name = a.name.clone();
    drop(a);

    for _ in 0..2 {
        d.spawn(&[]);
        let ps = ports(&d);
        let p = port_of(&ps, &name);
        assert_eq!(p.state, "pending", "{p:?}");
        let reason = p.reason.clone().unwrap_or_default();
        assert!(
            reason.contains(&name),
            "the reason must name the namespace: {reason}"
        );
        assert_eq!(p.ip, ea.ip, "a pending endpoint keeps its address");
        assert_eq!(p.published.len(), 1, "and its published port: {p:?}");
        let net: NetworkInfo = d.ctl_json(&["network", "inspect", "front"]);
        let e = net
            .endpoints
            .iter()
            .find(|e| e.netns == name)
            .expect("listed");
        assert_eq!(e.state, "pending");
        assert!(
            d.ctl_ok(&["ports"]).contains("pending"),
            "the table shows it"
        );
        // A new endpoint does not get its address.
        let c = Netns::new("c");
        let ec = attach(&d, &c, "front");
        assert_ne!(ec.ip, ea.ip, "IPAM handed out a pending endpoint's address");
        d.ctl_ok(&["detach", &c.name, "front"]);
        // Kept through a restart too (nothing is dropped from the state).
        assert!(d.terminate().success());
    }
    d.spawn(&[]);
    // The namespace appears: the endpoint is attached, as it was.
    run_ok(&["ip", "netns", "add", &name]);
    let a = Netns { name: name.clone() };
    a.exec_ok(&["ip", "link", "set", "lo", "up"]);
    assert!(
        wait_until(5, || port_of(&ports(&d), &name).state == "up"),
        "the endpoint was not attached when its namespace appeared: {}",
        d.log()
    );
    assert_eq!(iface(&a, "eth0").1, format!("{}/24", ea.ip));
    assert!(a.ping("10.240.0.1", 1) && b.ping(&ea.ip.to_string(), 1));
    // Only an explicit detach removes it.
    d.ctl_ok(&["detach", &name, "front"]);
    assert!(d.terminate().success());
    d.spawn(&[]);
    assert!(ports(&d).iter().all(|p| p.netns != name));
}

#[test]
fn a_namespace_deleted_under_a_running_endpoint_turns_it_pending_until_it_returns() {
    require(&["ping"]);
    let d = Daemon::start();
    let a = Netns::new("a");
    let b = Netns::new("b");
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.241.0.0/24"]);
    let ea = attach(&d, &a, "front");
    attach(&d, &b, "front");
    let aip = ea.ip.to_string();
    assert!(b.ping(&aip, 1));
    let name = a.name.clone();
    drop(a); // ip netns del

    assert!(
        wait_until(5, || port_of(&ports(&d), &name).state == "pending"),
        "a deleted namespace still lists its endpoint as up"
    );
    let p = port_of(&ports(&d), &name).clone();
    assert!(
        p.reason.as_deref().is_some_and(|r| r.contains("deleted")),
        "{p:?}"
    );
    let lines = d
        .log()
        .lines()
        .filter(|l| l.contains(&name) && l.contains("pending"))
        .count();
    assert_eq!(lines, 1, "logged once: {}", d.log());
    // Its traffic has nowhere to go; nothing is sent to the freed port.
    assert!(b.no_reply(&aip, 2));
    let tx = port_of(&ports(&d), &name).counters.tx_packets;
    assert!(b.no_reply(&aip, 2));
    assert_eq!(port_of(&ports(&d), &name).counters.tx_packets, tx);

    // The namespace comes back: so does the endpoint, with its address.
    run_ok(&["ip", "netns", "add", &name]);
    let a = Netns { name: name.clone() };
    a.exec_ok(&["ip", "link", "set", "lo", "up"]);
    assert!(
        wait_until(5, || port_of(&ports(&d), &name).state == "up"),
        "the endpoint did not come back with its namespace: {}",
        d.log()
    );
    assert!(b.ping(&aip, 1), "no traffic to the endpoint that came back");

    // Deleted again (by hand: the guard would also remove its /etc/netns files), then
    // detached while pending: the resolv.conf vswitchd wrote for it goes with it.
    let etc = Path::new("/etc/netns").join(&name);
    assert!(etc.join("resolv.conf").exists());
    run_ok(&["ip", "netns", "del", &name]);
    assert!(wait_until(5, || port_of(&ports(&d), &name).state == "pending"));
    d.ctl_ok(&["detach", &name, "front"]);
    assert!(
        !etc.exists(),
        "the detached endpoint's resolv.conf stayed behind"
    );
}

#[test]
fn an_uplink_whose_interface_is_deleted_goes_down_and_comes_back_with_it() {
    require(&["ping"]);
    let l = Lab::new(&[]);
    let a = Netns::new("a");
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.242.0.0/24"]);
    attach(&l.d, &a, "front");
    assert!(a.ping(OUTSIDE, 1));
    l.host.exec_ok(&["ip", "link", "del", "up0"]);

    let uplink = || -> UplinkInfo { l.d.ctl_json(&["uplink", "show"]) };
    assert!(
        wait_until(5, || uplink().state == "down"),
        "a deleted uplink interface is still shown as up"
    );
    let u = uplink();
    assert!(
        u.reason.as_deref().is_some_and(|r| r.contains("up0")),
        "{u:?}"
    );
    assert!(l.d.ctl_ok(&["uplink", "show"]).contains("down"));
    let tx = |d: &Daemon| {
        ports(d)
            .iter()
            .find(|p| p.kind == "uplink")
            .expect("uplink port")
            .counters
            .tx_packets
    };
    let (before, errors) = (tx(&l.d), drops(&l.d, "tx_error"));
    assert!(a.no_reply(OUTSIDE, 2));
    assert_eq!(tx(&l.d), before, "the down uplink's counters climb");
    assert_eq!(
        drops(&l.d, "tx_error"),
        errors,
        "sends into a vanished interface"
    );

    // The interface comes back (the same veth pair as the lab made).
    wire_uplink(&l.host, &l.out);
    assert!(
        wait_until(5, || uplink().state == "up"),
        "the uplink did not come back with its interface: {}",
        l.d.log()
    );
    assert!(a.ping(OUTSIDE, 2), "no egress after the uplink came back");
}

#[test]
fn devices_left_for_a_lost_state_are_removed_at_start_and_other_daemons_devices_are_not() {
    require(&["ping"]);
    let mut d = Daemon::start_with(&["--live-restore"]);
    let other = Daemon::start_with(&["--live-restore"]);
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.243.0.0/24"]);
    other.ctl_ok(&["network", "create", "front", "--subnet", "10.243.1.0/24"]);
    let ea = attach(&d, &a, "front");
    attach(&other, &b, "front");
    // A crash under --live-restore leaves the device; then the state is lost.
    d.kill9();
    assert_eq!(a.links(), ["lo", "eth0"]);
    for e in std::fs::read_dir(d.dir.join("state")).expect("state dir") {
        let p = e.expect("entry").path();
        if p.file_name().is_some_and(|n| n != "vswitchd.lock") {
            std::fs::remove_file(&p).expect("lose the state");
        }
    }
    d.spawn(&["--live-restore"]);
    assert_eq!(a.links(), ["lo"], "the orphan device was left: {}", d.log());
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("orphan") && l.contains(&format!("{}/eth0", a.name))),
        "the removal is reported: {}",
        d.log()
    );
    assert_eq!(
        b.links(),
        ["lo", "eth0"],
        "another daemon's device was taken"
    );
    // A new attach gets eth0 and the address back, and works (no dead eth0 with the routes).
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.243.0.0/24"]);
    let again = attach(&d, &a, "front");
    assert_eq!((again.ifname.as_str(), again.ip), ("eth0", ea.ip));
    assert!(a.ping("10.243.0.1", 1), "the new endpoint does not work");
    drop(other);
}
