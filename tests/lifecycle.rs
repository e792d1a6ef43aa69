//! Lifecycle of the switch's objects: the uplink's gateway and its removal, detach (under
//! `--live-restore` too) and what it must take along (flows, FDB entries, DNS names, published
//! ports, the namespace's resolv.conf), plain restarts (devices recreated) and what they must
//! bring back, IPAM under parallel attaches and after restarts, a corrupt state file, and
//! publishing on a given address or network. Real vswitchd, real namespaces, real tools;
//! everything is removed by the harness's guards, also when a test fails.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use switch::model::*;

/// An address beyond the uplink's subnet, reachable only through the outside namespace acting
/// as a router (see [`far_behind_outside`]).
const FAR: &str = "198.51.100.2";

/// The IPv4 addresses configured in `ns` (any interface), as `ADDR/PREFIX`.
fn addresses(ns: &Netns) -> Vec<String> {
    ns.exec_ok(&["ip", "-o", "-4", "addr", "show"])
        .lines()
        .map(|l| word_after(l, "inet "))
        .collect()
}

/// True when the flow's original or reply tuple has `ip` as an address.
fn mentions(e: &ConntrackEntry, ip: &str) -> bool {
    let at = format!("{ip}:");
    let has = |t: &str| t.starts_with(&at) || t.contains(&format!(" {at}"));
    has(&e.orig) || has(&e.reply)
}

/// The `(orig, reply)` tuples of the flows in `v` that are not about to expire (a closed TCP
/// connection's entry lives 10 s): those must still be listed a moment later.
fn lasting(v: &[ConntrackEntry]) -> Vec<(String, String)> {
    v.iter()
        .filter(|e| e.expires_secs >= 5)
        .map(|e| (e.orig.clone(), e.reply.clone()))
        .collect()
}

/// The tuples of `want` that `now` does not list.
fn missing(want: &[(String, String)], now: &[ConntrackEntry]) -> Vec<(String, String)> {
    want.iter()
        .filter(|(o, r)| !now.iter().any(|e| &e.orig == o && &e.reply == r))
        .cloned()
        .collect()
}

/// A TCP server on `port` in `ns` answering `local=<its own address> peer=<client address>`
/// (which of the namespace's addresses a published port led to), ready when this returns.
fn addr_server(ns: &Netns, port: u16) -> KillOnDrop {
    answer_server(
        ns,
        "tcp",
        "0.0.0.0",
        port,
        "local=$SOCAT_SOCKADDR peer=$SOCAT_PEERADDR",
    )
}

/// Make the outside namespace of `l` a router to a "far" namespace holding 198.51.100.2/24:
/// the switch can reach [`FAR`] only by sending to the outside namespace as its next hop.
fn far_behind_outside(l: &Lab) -> Netns {
    let far = Netns::new("far");
    run_ok(&[
        "ip",
        "link",
        "add",
        "r0",
        "netns",
        &l.out.name,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &far.name,
    ]);
    l.out
        .exec_ok(&["ip", "addr", "add", "198.51.100.1/24", "dev", "r0"]);
    l.out.exec_ok(&["ip", "link", "set", "r0", "up"]);
    l.out
        .exec_ok(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
    far.exec_ok(&["ip", "addr", "add", &format!("{FAR}/24"), "dev", "eth0"]);
    far.exec_ok(&["ip", "link", "set", "eth0", "up"]);
    far.exec_ok(&["ip", "route", "add", "default", "via", "198.51.100.1"]);
    far
}

/// The uplink daemon `d` has saved: the snapshot's (`state.json`), as changed by the journals
/// that continue it (`journal.N`, one JSON record per line, `"op": "uplink"` for this).
fn saved_uplink(d: &Daemon) -> serde_json::Value {
    let dir = d.dir.join("state");
    let snap: serde_json::Value = std::fs::read_to_string(dir.join("state.json"))
        .map(|t| serde_json::from_str(&t).expect("state.json is JSON"))
        .unwrap_or_default();
    let from = snap["journal"].as_u64().unwrap_or(0);
    let mut journals: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .expect("read state dir")
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix("journal.")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .filter(|(n, _)| *n >= from)
        .collect();
    journals.sort();
    let mut uplink = snap["uplink"].clone();
    for (_, j) in journals {
        for line in std::fs::read_to_string(&j).expect("read journal").lines() {
            let r: serde_json::Value = serde_json::from_str(line).expect("journal line is JSON");
            if r["op"] == "uplink" {
                uplink = r["spec"].clone();
            }
        }
    }
    uplink
}

#[test]
fn uplink_gateway_carries_egress_beyond_the_subnet_and_uplink_rm_stops_egress_and_ports() {
    require(&["ping", "socat", "ss"]);
    let l = Lab::new(&[]);
    let far = far_behind_outside(&l);
    let _far_srv = peer_server(&far, "tcp", FAR, 7000);
    let a = Netns::new("a");
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.231.0.0/24"]);
    attach(&l.d, &a, "front");

    // Without a gateway only the uplink's own subnet is reachable.
    assert!(
        a.ping(OUTSIDE, 1),
        "on-link egress must work without a gateway"
    );
    let before = drops(&l.d, "no_route");
    assert!(
        a.no_reply(FAR, 1),
        "{FAR} is beyond the uplink subnet: unreachable without a gateway"
    );
    assert!(
        drops(&l.d, "no_route") > before,
        "the gateway-less egress was not counted as no_route"
    );

    // With --gateway, egress to FAR goes through the router, masqueraded.
    let up = l.set_gateway();
    assert_eq!(up.gateway.map(|g| g.to_string()).as_deref(), Some(OUTSIDE));
    assert!(a.ping(FAR, 2), "egress via the uplink gateway failed");
    assert_eq!(
        ask(&a, "tcp", FAR, 7000),
        format!("peer={UPLINK}"),
        "TCP via the gateway must leave with the uplink address"
    );
    let shown: UplinkInfo = l.d.ctl_json(&["uplink", "show"]);
    assert_eq!(shown.gateway, up.gateway, "{shown:?}");
    assert!(
        shown.neighbours.iter().any(|n| n.ip.to_string() == OUTSIDE),
        "the gateway was never resolved: {shown:?}"
    );
    assert!(
        !shown.neighbours.iter().any(|n| n.ip.to_string() == FAR),
        "{FAR} is not on-link and must not be ARPed for: {shown:?}"
    );
    assert!(
        l.d.ctl_ok(&["uplink", "show"])
            .contains(&format!("gateway {OUTSIDE}")),
        "uplink show does not print the gateway"
    );

    // A published port, answering before the uplink goes.
    let _web = peer_server(&a, "tcp", "0.0.0.0", 80);
    l.d.ctl_ok(&["publish", &a.name, "8080:80"]);
    assert_eq!(ask(&l.out, "tcp", UPLINK, 8080), format!("peer={OUTSIDE}"));

    l.d.ctl_ok(&["uplink", "rm"]);
    let (_, err) = l.d.ctl_err(&["uplink", "show"]);
    assert!(err.contains("no uplink"), "uplink show after rm: {err}");
    assert!(
        saved_uplink(&l.d).is_null(),
        "the removed uplink is still in the state file"
    );
    assert!(
        a.ping("10.231.0.1", 1),
        "the gateway must still answer without an uplink"
    );
    assert!(a.no_reply(OUTSIDE, 1), "egress after uplink rm");
    assert_eq!(
        ask_within(&l.out, UPLINK, 8080, 3),
        "",
        "the published port still answers after uplink rm"
    );
    let (_, err) = l.d.ctl_err(&["uplink", "rm"]);
    assert!(err.contains("no uplink"), "a second uplink rm: {err}");

    // Setting it again brings egress and the (kept) published port back.
    l.set_gateway();
    assert!(a.ping(FAR, 1), "egress after the uplink was set again");
    assert_eq!(ask(&l.out, "tcp", UPLINK, 8080), format!("peer={OUTSIDE}"));
}

#[test]
fn detach_under_live_restore_removes_the_device_and_its_address() {
    require(&["ping"]);
    let mut d = Daemon::start_with(&["--live-restore"]);
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.232.0.0/24"]);
    let ea = attach(&d, &a, "front");
    let eb = attach(&d, &b, "front");
    let a_addr = format!("{}/24", ea.ip);
    assert_eq!(a.links(), vec!["lo", "eth0"]);
    assert!(addresses(&a).contains(&a_addr), "{:?}", addresses(&a));
    assert!(a.ping(&eb.ip.to_string(), 1));

    d.ctl_ok(&["detach", &a.name, "front"]);
    assert_eq!(a.links(), vec!["lo"], "detach left a device behind");
    assert_eq!(
        addresses(&a),
        vec!["127.0.0.1/8"],
        "detach left an address behind"
    );

    // Control: the endpoint that stayed attached keeps its device through a stop, as
    // --live-restore promises; the detached one does not come back with the next daemon.
    assert!(d.terminate().success());
    assert_eq!(
        b.links(),
        vec!["lo", "eth0"],
        "--live-restore lost b's device"
    );
    assert_eq!(a.links(), vec!["lo"]);
    d.spawn(&["--live-restore"]);
    let net: NetworkInfo = d.ctl_json(&["network", "inspect", "front"]);
    assert_eq!(
        net.endpoints
            .iter()
            .map(|e| e.netns.as_str())
            .collect::<Vec<_>>(),
        vec![b.name.as_str()],
        "the detached endpoint was restored"
    );
    assert_eq!(a.links(), vec!["lo"]);
    assert!(
        b.ping("10.232.0.1", 1),
        "the kept endpoint does not forward"
    );
}

/// What a restart must not change, checked before and after: the published port answers on
/// the wire, linked networks route (without NAT) and resolve each other's names, the alias
/// resolves at the gateway, egress works through the uplink (with its gateway), and the
/// interfaces keep their names, MACs and addresses.
fn restart_invariants(l: &Lab, a: &Netns, b: &Netns, ea: &EndpointInfo, when: &str) {
    let (aip, bip) = (ea.ip.to_string(), "10.233.1.2");
    assert_eq!(
        echo_via(&l.out, UPLINK, 8080, "hello"),
        "hello",
        "{when}: the published port does not answer from the outside"
    );
    assert_eq!(
        ask(b, "tcp", &aip, 9000),
        format!("peer={bip}"),
        "{when}: routing between the linked networks"
    );
    assert_eq!(
        dig(a, &["@10.233.0.1", "+short", "www"]),
        aip,
        "{when}: the alias at a's gateway"
    );
    assert_eq!(
        dig(b, &["@10.233.1.1", "+short", "www"]),
        aip,
        "{when}: the alias at the linked network's gateway"
    );
    assert!(a.ping(OUTSIDE, 1), "{when}: egress through the uplink");
    let up: UplinkInfo = l.d.ctl_json(&["uplink", "show"]);
    assert_eq!(
        (
            up.iface.as_str(),
            up.ip.to_string(),
            up.prefix_len,
            up.gateway.map(|g| g.to_string())
        ),
        ("up0", UPLINK.to_string(), 24, Some(OUTSIDE.to_string())),
        "{when}: the uplink"
    );
    assert_eq!(
        iface(a, "web0"),
        ("02:00:5e:10:20:30".to_string(), format!("{aip}/24")),
        "{when}: a's interface name, MAC or address"
    );
    let net: NetworkInfo = l.d.ctl_json(&["network", "inspect", "front"]);
    assert_eq!(net.links, vec!["back".to_string()], "{when}: the link");
}

#[test]
fn a_plain_restart_recreates_endpoints_and_brings_back_ports_uplink_links_aliases_and_nat_flows() {
    require(&["ping", "socat", "ss", "dig", "python3"]);
    let mut l = Lab::new(&[]);
    l.set_gateway();
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.233.0.0/24"]);
    l.d.ctl_ok(&["network", "create", "back", "--subnet", "10.233.1.0/24"]);
    l.d.ctl_ok(&["network", "link", "front", "back"]);
    let ea = attach_with(
        &l.d,
        &a,
        "front",
        &[
            "--mac",
            "02:00:5e:10:20:30",
            "--ifname",
            "web0",
            "--alias",
            "www",
        ],
    );
    assert_eq!(
        (ea.ifname.as_str(), ea.mac.as_str()),
        ("web0", "02:00:5e:10:20:30")
    );
    let eb = attach(&l.d, &b, "back");
    assert_eq!(eb.ip.to_string(), "10.233.1.2");
    let b_before = iface(&b, "eth0");
    let _echo = echo_server(&a, 80);
    let _srv = peer_server(&a, "tcp", "0.0.0.0", 9000);
    l.d.ctl_ok(&["publish", &a.name, "8080:80"]);
    restart_invariants(&l, &a, &b, &ea, "before the restart");

    // An established connection through the published port, idle across the restart.
    let mut client = HeldConnection::open(&l.out, UPLINK, 8080);
    let before = established_dnat(&l.d);
    assert_eq!(before.len(), 1, "{before:?}");

    // A plain stop removes the devices; the start recreates them.
    assert!(l.d.terminate().success());
    assert_eq!(a.links(), vec!["lo"], "a plain stop must remove a's device");
    assert_eq!(b.links(), vec!["lo"], "a plain stop must remove b's device");
    l.d.spawn(&[]);
    assert_eq!(
        established_dnat(&l.d),
        before,
        "the tracked connection was not restored"
    );
    assert_eq!(
        client.second().as_deref(),
        Some("two"),
        "the established NAT connection did not survive the plain restart"
    );
    restart_invariants(&l, &a, &b, &ea, "after the restart");
    assert_eq!(iface(&b, "eth0"), b_before, "b's interface changed");

    // A new endpoint gets a fresh address and MAC, not a restored endpoint's.
    let c = Netns::new("c");
    let ec = attach(&l.d, &c, "front");
    assert_ne!(
        ec.ip, ea.ip,
        "IPAM handed out a restored endpoint's address"
    );
    assert_ne!(ec.mac, ea.mac);
    assert!(c.ping(&ea.ip.to_string(), 1), "c cannot reach a");
}

/// Attach every namespace of `nss` to `net` with one `vswitchctl` process each, all started
/// before any is waited for; returns the endpoints in the order of `nss`.
fn attach_parallel(d: &Daemon, nss: &[Netns], net: &str) -> Vec<EndpointInfo> {
    let children: Vec<KillOnDrop> = nss
        .iter()
        .map(|ns| {
            KillOnDrop(Some(
                Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
                    .arg("--socket")
                    .arg(&d.socket)
                    .args(["--json", "attach", &ns.name, net])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start vswitchctl attach"),
            ))
        })
        .collect();
    children
        .into_iter()
        .zip(nss)
        .map(|(c, ns)| {
            let o = c.wait();
            assert!(
                o.status.success(),
                "attach {} failed: {}",
                ns.name,
                String::from_utf8_lossy(&o.stderr)
            );
            serde_json::from_slice(&o.stdout).expect("attach JSON")
        })
        .collect()
}

/// Fail naming the duplicate when two endpoints share an address or a MAC.
fn assert_distinct(eps: &[&EndpointInfo]) {
    let mut ips = BTreeSet::new();
    let mut macs = BTreeSet::new();
    for e in eps {
        assert!(
            ips.insert(e.ip),
            "IPAM duplicate: {} was given {} too",
            e.netns,
            e.ip
        );
        assert!(
            macs.insert(e.mac.clone()),
            "duplicate MAC: {} was given {} too",
            e.netns,
            e.mac
        );
    }
}

#[test]
fn parallel_attaches_get_distinct_addresses_and_macs_and_none_are_reused_after_a_restart() {
    require(&["ping"]);
    let mut d = Daemon::start();
    d.ctl_ok(&["network", "create", "pool", "--subnet", "10.234.0.0/24"]);
    let nss: Vec<Netns> = (0..20).map(|i| Netns::new(&format!("p{i}"))).collect();
    let eps = attach_parallel(&d, &nss, "pool");
    assert_distinct(&eps.iter().collect::<Vec<_>>());
    // What the namespaces really have is what attach said.
    for (ns, e) in nss.iter().zip(&eps) {
        assert_eq!(
            iface(ns, &e.ifname),
            (e.mac.clone(), format!("{}/24", e.ip)),
            "{}",
            ns.name
        );
    }
    let net: NetworkInfo = d.ctl_json(&["network", "inspect", "pool"]);
    assert_eq!(net.endpoints.len(), 20);
    assert!(nss[0].ping(&eps[19].ip.to_string(), 1));

    // After a plain restart, new attaches (in parallel again) get addresses nobody has.
    assert!(d.terminate().success());
    d.spawn(&[]);
    let net: NetworkInfo = d.ctl_json(&["network", "inspect", "pool"]);
    let restored: BTreeSet<_> = net
        .endpoints
        .iter()
        .map(|e| (e.ip, e.mac.clone()))
        .collect();
    let attached: BTreeSet<_> = eps.iter().map(|e| (e.ip, e.mac.clone())).collect();
    assert_eq!(restored, attached, "the restart changed the endpoints");
    let new: Vec<Netns> = (0..3).map(|i| Netns::new(&format!("n{i}"))).collect();
    let new_eps = attach_parallel(&d, &new, "pool");
    assert_distinct(&eps.iter().chain(&new_eps).collect::<Vec<_>>());
    assert!(new[0].ping(&eps[0].ip.to_string(), 1));
    assert!(nss[19].ping(&new_eps[2].ip.to_string(), 1));
}

#[test]
fn detach_removes_the_endpoints_flows_fdb_entries_dns_name_and_published_port() {
    require(&["ping", "socat", "ss", "dig", "python3"]);
    let l = Lab::new(&[]);
    // NXDOMAIN for every name upstream: a name the gateway no longer knows gets a definite "no
    // such name".
    let _upstream = upstream_dns(&l.out, &[]);
    let (a, b, c) = (Netns::new("a"), Netns::new("b"), Netns::new("c"));
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.235.0.0/24"]);
    l.d.ctl_ok(&["network", "create", "back", "--subnet", "10.235.1.0/24"]);
    let ea = attach(&l.d, &a, "front");
    let eb = attach(&l.d, &b, "front");
    attach(&l.d, &c, "back");
    let (aip, bip) = (ea.ip.to_string(), eb.ip.to_string());
    let _web_a = peer_server(&a, "tcp", "0.0.0.0", 80);
    let _web_b = peer_server(&b, "tcp", "0.0.0.0", 80);
    let _out = peer_server(&l.out, "tcp", OUTSIDE, 7000);
    l.d.ctl_ok(&["publish", &b.name, "8080:80"]);
    l.d.ctl_ok(&["publish", &a.name, "8081:80"]);

    // Flows of both: egress, published ports, and a hairpin into b from another network.
    for ns in [&a, &b] {
        assert_eq!(ask(ns, "tcp", OUTSIDE, 7000), format!("peer={UPLINK}"));
    }
    assert_eq!(ask(&l.out, "tcp", UPLINK, 8080), format!("peer={OUTSIDE}"));
    assert_eq!(ask(&l.out, "tcp", UPLINK, 8081), format!("peer={OUTSIDE}"));
    assert_eq!(
        ask(&c, "tcp", UPLINK, 8080),
        "peer=10.235.0.1",
        "hairpin from another network"
    );
    assert!(a.ping(&bip, 1) && b.ping(&aip, 1));
    let gw = "@10.235.0.1";
    assert_eq!(dig(&a, &[gw, "+short", &b.name]), bip, "b's name before");
    assert!(
        dig(&a, &[gw, "nosuch.test"]).contains("status: NXDOMAIN"),
        "unknown names must get NXDOMAIN from the upstream"
    );

    let ct = conntrack(&l.d, None);
    let of_b = ct.iter().filter(|e| mentions(e, &bip)).count();
    let of_a: Vec<_> = ct.iter().filter(|e| mentions(e, &aip)).cloned().collect();
    assert!(of_b >= 3, "b's flows (egress, dnat, hairpin): {ct:?}");
    assert!(of_a.len() >= 2, "a's flows (egress, dnat): {ct:?}");
    let fdb: Vec<FdbEntryInfo> = l.d.ctl_json(&["fdb", "front"]);
    assert!(fdb.iter().any(|e| e.mac == eb.mac), "{fdb:?}");
    assert!(fdb.iter().any(|e| e.mac == ea.mac), "{fdb:?}");

    l.d.ctl_ok(&["detach", &b.name, "front"]);

    let ct = conntrack(&l.d, None);
    let left: Vec<_> = ct.iter().filter(|e| mentions(e, &bip)).collect();
    assert!(left.is_empty(), "flows of the detached endpoint: {left:?}");
    let gone = missing(&lasting(&of_a), &ct);
    assert!(
        gone.is_empty(),
        "the other endpoint's flows must stay: {gone:?}"
    );
    let fdb: Vec<FdbEntryInfo> = l.d.ctl_json(&["fdb", "front"]);
    assert!(
        !fdb.iter().any(|e| e.mac == eb.mac),
        "FDB entry of the detached endpoint: {fdb:?}"
    );
    assert!(fdb.iter().any(|e| e.mac == ea.mac), "{fdb:?}");
    assert_eq!(dig(&a, &[gw, "+short", &a.name]), aip, "a's own name after");
    let out = dig(&a, &[gw, &b.name]);
    assert!(
        out.contains("status: NXDOMAIN"),
        "the detached endpoint's name still resolves: {out}"
    );
    assert_eq!(
        ask(&l.out, "tcp", UPLINK, 8081),
        format!("peer={OUTSIDE}"),
        "the other endpoint's published port"
    );
    assert_eq!(
        ask_within(&l.out, UPLINK, 8080, 3),
        "",
        "the detached endpoint's published port still answers"
    );
    let net: NetworkInfo = l.d.ctl_json(&["network", "inspect", "front"]);
    assert_eq!(
        net.published
            .iter()
            .map(|p| p.host_port)
            .collect::<Vec<_>>(),
        vec![8081]
    );
}

#[test]
fn detach_gives_the_namespace_its_own_resolv_conf_back_byte_for_byte() {
    require(&[]);
    let mut d = Daemon::start();
    let a = Netns::new("a");
    d.ctl_ok(&["network", "create", "n1", "--subnet", "10.236.0.0/24"]);
    d.ctl_ok(&["network", "create", "n2", "--subnet", "10.236.1.0/24"]);
    let dir = Path::new("/etc/netns").join(&a.name);
    std::fs::create_dir_all(&dir).expect("create /etc/netns dir");
    let file = dir.join("resolv.conf");
    // No final newline, odd spacing: restored means byte for byte.
    let original: &[u8] = b"# the namespace's own\nnameserver  192.0.2.53\nsearch example.test\n\noptions ndots:2 timeout:1";
    std::fs::write(&file, original).expect("write resolv.conf");
    let read = || std::fs::read(&file).expect("read resolv.conf");
    let text = || String::from_utf8_lossy(&read()).into_owned();

    attach(&d, &a, "n1");
    assert!(text().contains("nameserver 10.236.0.1"), "{}", text());
    assert!(!text().contains("192.0.2.53"), "{}", text());
    let seen = a.exec_ok(&["cat", "/etc/resolv.conf"]);
    assert!(seen.contains("nameserver 10.236.0.1"), "{seen}");
    attach(&d, &a, "n2");
    assert!(
        text().contains("nameserver 10.236.0.1") && text().contains("nameserver 10.236.1.1"),
        "{}",
        text()
    );
    d.ctl_ok(&["detach", &a.name, "n1"]);
    assert!(
        text().contains("nameserver 10.236.1.1") && !text().contains("10.236.0.1"),
        "one network left: {}",
        text()
    );

    // A plain stop gives it back (the gateways stop answering); the start takes it again.
    assert!(d.terminate().success());
    assert_eq!(read(), original, "resolv.conf while the daemon is stopped");
    d.spawn(&[]);
    assert!(text().contains("nameserver 10.236.1.1"), "{}", text());

    d.ctl_ok(&["detach", &a.name, "n2"]);
    assert_eq!(read(), original, "resolv.conf after the last detach");
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["resolv.conf"], "files left in {}", dir.display());
}

/// The `.bad` copies of the state file in daemon `d`'s state directory, oldest first.
fn bad_copies(d: &Daemon) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(d.dir.join("state"))
        .expect("read state dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("state.json.bad-"))
        })
        .collect();
    v.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    v
}

#[test]
fn a_corrupt_state_file_is_kept_beside_earlier_bad_copies_and_the_daemon_starts_empty() {
    require(&[]);
    let mut d = Daemon::start();
    d.ctl_ok(&["network", "create", "old", "--subnet", "10.237.0.0/24"]);
    assert!(d.terminate().success());
    let state = d.dir.join("state/state.json");
    let good = std::fs::read(&state).expect("a graceful stop writes state.json");

    // Garbage, then a valid state cut short (what a torn write would leave): each kept as a
    // copy of its own, the earlier one not replaced.
    let mut kept = Vec::new();
    for garbage in [
        b"{\"networks\": [ {\"name\": \"old\", \xff\xfe garbage".to_vec(),
        good[..good.len() / 2].to_vec(),
    ] {
        std::fs::write(&state, &garbage).expect("write garbage");
        d.spawn(&[]);
        let nets: Vec<NetworkInfo> = d.ctl_json(&["network", "ls"]);
        assert!(nets.is_empty(), "started from a corrupt state: {nets:?}");
        let copies = bad_copies(&d);
        assert_eq!(copies.len(), kept.len() + 1, "{copies:?}");
        let bad = copies.last().expect("a bad copy").clone();
        assert_eq!(
            std::fs::read(&bad).expect("the bad copy is kept"),
            garbage,
            "the bad copy differs from the corrupt file"
        );
        for (path, content) in &kept {
            assert_eq!(&std::fs::read(path).expect("an earlier copy"), content);
        }
        let log = d.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("unreadable")).collect();
        assert_eq!(lines.len(), 1, "{log}");
        assert!(
            lines[0].contains(&state.display().to_string())
                && lines[0].contains(&bad.display().to_string())
                && lines[0].contains("starting empty"),
            "the message must name the file and its copy: {}",
            lines[0]
        );
        kept.push((bad, garbage));
        // Life goes on: a new network is saved and comes back after a restart.
        d.ctl_ok(&["network", "create", "new", "--subnet", "10.237.1.0/24"]);
        assert!(d.terminate().success());
        d.spawn(&[]);
        let nets: Vec<NetworkInfo> = d.ctl_json(&["network", "ls"]);
        assert_eq!(
            nets.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            vec!["new"]
        );
        d.ctl_ok(&["network", "rm", "new"]);
        assert!(d.terminate().success());
    }
}

#[test]
fn publish_on_an_address_and_a_network_unpublish_and_flush_one_networks_flows() {
    require(&["socat", "ss"]);
    let l = Lab::new(&[]);
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.238.0.0/24"]);
    l.d.ctl_ok(&["network", "create", "back", "--subnet", "10.238.1.0/24"]);
    let af = attach(&l.d, &a, "front");
    let ab = attach(&l.d, &a, "back");
    assert_eq!((af.ifname.as_str(), ab.ifname.as_str()), ("eth0", "eth1"));
    attach(&l.d, &b, "back");
    let (afip, abip) = (af.ip.to_string(), ab.ip.to_string());
    let _srv = addr_server(&a, 80);
    let _out = peer_server(&l.out, "tcp", OUTSIDE, 7000);

    let extra = "10.210.0.5";
    let p1: PublishInfo =
        l.d.ctl_json(&["publish", &a.name, &format!("{extra}:8080:80")]);
    assert_eq!(
        (
            p1.ip.map(|i| i.to_string()),
            p1.network.as_str(),
            p1.endpoint_ip
        ),
        (Some(extra.to_string()), "front", af.ip)
    );
    let p2: PublishInfo =
        l.d.ctl_json(&["publish", &a.name, "9090:80", "--network", "back"]);
    assert_eq!(
        (p2.ip, p2.network.as_str(), p2.endpoint_ip),
        (None, "back", ab.ip)
    );
    let p3: PublishInfo = l.d.ctl_json(&["publish", &a.name, "7070:80"]);
    assert_eq!(
        (p3.network.as_str(), p3.endpoint_ip),
        ("front", af.ip),
        "without --network: the first network joined"
    );
    let answer = |ip: &str| format!("local={ip} peer={OUTSIDE}");
    assert_eq!(
        ask(&l.out, "tcp", extra, 8080),
        answer(&afip),
        "IP:HOSTPORT"
    );
    assert_eq!(
        ask_within(&l.out, UPLINK, 8080, 3),
        "",
        "a port bound to {extra} answers on the uplink address"
    );
    assert_eq!(
        ask(&l.out, "tcp", UPLINK, 9090),
        answer(&abip),
        "--network back"
    );
    assert_eq!(ask(&l.out, "tcp", UPLINK, 7070), answer(&afip));
    assert_eq!(ask(&b, "tcp", OUTSIDE, 7000), format!("peer={UPLINK}"));

    // conntrack ls/flush --network: back's flows go, front's stay.
    let front = conntrack(&l.d, Some("front"));
    let back = conntrack(&l.d, Some("back"));
    assert!(front.len() >= 2, "{front:?}");
    assert!(back.len() >= 2, "{back:?}");
    assert!(front.iter().all(|e| e.network == "front"), "{front:?}");
    assert!(back.iter().all(|e| e.network == "back"), "{back:?}");
    let all = conntrack(&l.d, None);
    assert!(missing(&lasting(&front), &all).is_empty(), "{all:?}");
    assert!(missing(&lasting(&back), &all).is_empty(), "{all:?}");
    let f: FlushInfo = l.d.ctl_json(&["conntrack", "flush", "--network", "back"]);
    assert!(
        (lasting(&back).len()..=back.len()).contains(&f.flushed),
        "flushed {} of {back:?}",
        f.flushed
    );
    assert!(conntrack(&l.d, Some("back")).is_empty());
    let gone = missing(&lasting(&front), &conntrack(&l.d, None));
    assert!(gone.is_empty(), "front's flows were flushed too: {gone:?}");

    // unpublish: the address-bound port closes (and the switch stops owning the address);
    // the others keep answering.
    let neigh = |ip: &str| l.out.exec_ok(&["ip", "neigh", "show", ip]);
    assert!(neigh(extra).contains("lladdr"), "{}", neigh(extra));
    l.d.ctl_ok(&["unpublish", &a.name, &format!("{extra}:8080")]);
    l.out.exec_ok(&["ip", "neigh", "flush", "dev", "eth0"]);
    assert_eq!(
        ask_within(&l.out, extra, 8080, 3),
        "",
        "unpublished port still answers"
    );
    assert!(
        !neigh(extra).contains("lladdr"),
        "the switch still answers ARP for {extra}: {}",
        neigh(extra)
    );
    assert_eq!(ask(&l.out, "tcp", UPLINK, 7070), answer(&afip));
    assert_eq!(ask(&l.out, "tcp", UPLINK, 9090), answer(&abip));
    let (_, err) =
        l.d.ctl_err(&["unpublish", &a.name, &format!("{extra}:8080")]);
    assert!(err.contains("not published"), "{err}");

    // The back-network port stays when a leaves front (and goes with a's back endpoint).
    l.d.ctl_ok(&["detach", &a.name, "front"]);
    assert_eq!(ask(&l.out, "tcp", UPLINK, 9090), answer(&abip));
    let ports: Vec<PortInfo> = l.d.ctl_json(&["ports"]);
    let pa: Vec<_> = ports.iter().filter(|p| p.netns == a.name).collect();
    assert_eq!(pa.len(), 1, "{pa:?}");
    assert_eq!(pa[0].published, vec!["9090->80/tcp".to_string()]);
}

/// `publish NETNS SPEC --network N` for a namespace attached to two networks, set up by the
/// switch alone (its default route via the first network, which is how `attach` leaves it):
/// the port published on the second network must answer from the outside.
///
/// The SYN reaches a's second interface, but a's answer leaves by its default route, through
/// its first network's port, with the second network's address as source: port security must
/// take that address as the namespace's own (it dropped it as `spoofed` before).
#[test]
fn a_port_published_on_a_namespaces_second_network_answers_with_the_default_routes() {
    require(&["socat", "ss"]);
    let l = Lab::new(&[]);
    let a = Netns::new("a");
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.239.0.0/24"]);
    l.d.ctl_ok(&["network", "create", "back", "--subnet", "10.239.1.0/24"]);
    let af = attach(&l.d, &a, "front");
    let ab = attach(&l.d, &a, "back");
    let _srv = addr_server(&a, 80);
    l.d.ctl_ok(&["publish", &a.name, "8080:80"]);
    l.d.ctl_ok(&["publish", &a.name, "9090:80", "--network", "back"]);
    // Control: the first network's port answers.
    assert_eq!(
        ask(&l.out, "tcp", UPLINK, 8080),
        format!("local={} peer={OUTSIDE}", af.ip)
    );
    let spoofed = drops(&l.d, "spoofed");
    let got = ask(&l.out, "tcp", UPLINK, 9090);
    assert_eq!(
        got,
        format!("local={} peer={OUTSIDE}", ab.ip),
        "the port published on the second network does not answer ({} answers dropped as spoofed)",
        drops(&l.d, "spoofed") - spoofed
    );
}
