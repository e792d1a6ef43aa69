//! Cluster mode on a real etcd: several vswitchd "hosts" (each in its own namespace on a shared
//! underlay bridge), real etcd members on that bridge, endpoints in further namespaces.

mod common;

use common::*;
use switch::model::{ClusterInfo, EndpointInfo, FdbEntryInfo, NetworkInfo};

/// The etcd members' addresses on the underlay bridge.
const ETCD: [&str; 3] = ["10.240.0.101", "10.240.0.102", "10.240.0.103"];
/// Lease TTL the test daemons use (seconds).
const TTL: u64 = 3;

/// An underlay of `hosts` hosts with `members` etcd members on its bridge.
fn lab(hosts: usize, members: usize) -> (Underlay, EtcdCluster) {
    require(&["ip", "ping", "etcd", "etcdctl", "socat", "dig"]);
    let u = Underlay::new(hosts);
    for a in &ETCD[..members] {
        u.bridge
            .exec_ok(&["ip", "addr", "add", &format!("{a}/24"), "dev", "br0"]);
    }
    let etcd = EtcdCluster::start(&u.bridge, &ETCD[..members]);
    (u, etcd)
}

/// vswitchd on host `i` (1-based) of `u`, in cluster mode.
fn node(u: &Underlay, etcd: &EtcdCluster, i: usize, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--cluster".to_string(),
        etcd.url(),
        "--node".into(),
        format!("h{i}"),
        "--underlay-ip".into(),
        Underlay::ip(i),
        "--cluster-ttl".into(),
        TTL.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start_in(&u.hosts[i - 1], &a)
}

fn cluster(d: &Daemon) -> ClusterInfo {
    d.ctl_json(&["cluster", "status"])
}

/// Wait until `d` sees `n` nodes up.
fn wait_nodes_up(d: &Daemon, n: usize) {
    let ok = wait_until(10, || {
        cluster(d).nodes.iter().filter(|x| x.state == "up").count() == n
    });
    assert!(ok, "not {n} nodes up: {:?}\n{}", cluster(d), d.log());
}

fn network_on(d: &Daemon, name: &str) -> Option<NetworkInfo> {
    let nets: Vec<NetworkInfo> = d.ctl_json(&["network", "ls"]);
    nets.into_iter().find(|n| n.name == name)
}

fn remote_macs(d: &Daemon, network: &str) -> Vec<String> {
    let fdb: Vec<FdbEntryInfo> = d.ctl_json(&["fdb", network]);
    fdb.into_iter()
        .filter(|e| e.vtep.is_some())
        .map(|e| e.mac)
        .collect()
}

#[test]
fn a_network_created_once_spans_every_host_with_cluster_wide_addresses() {
    let (u, mut etcd) = lab(4, 3);
    let nodes: Vec<Daemon> = (1..=4).map(|i| node(&u, &etcd, i, &[])).collect();
    for d in &nodes {
        wait_nodes_up(d, 4);
    }
    // Created once, on host 1; the VNI comes from the cluster.
    let created = nodes[0].ctl_ok(&[
        "network",
        "create",
        "ov",
        "--subnet",
        "10.77.0.0/24",
        "--overlay",
    ]);
    assert!(created.contains("network ov created"), "{created}");
    for d in &nodes {
        assert!(
            wait_until(5, || network_on(d, "ov").is_some()),
            "network ov not on a host: {}",
            d.log()
        );
    }
    let vni = network_on(&nodes[0], "ov")
        .unwrap()
        .vni
        .expect("an overlay");
    assert!(vni >= 4096, "allocated VNI {vni}");
    for d in &nodes[1..] {
        assert_eq!(network_on(d, "ov").unwrap().vni, Some(vni));
    }
    // 40 attaches at once, 10 per host: every address distinct.
    let ns: Vec<Netns> = (0..40).map(|i| Netns::new(&format!("e{i}"))).collect();
    let infos: Vec<(usize, EndpointInfo)> = std::thread::scope(|s| {
        let handles: Vec<_> = ns
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let d = &nodes[i % 4];
                s.spawn(move || (i % 4, attach(d, n, "ov")))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<String> = infos.iter().map(|(_, e)| e.ip.to_string()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 40, "addresses handed out twice: {infos:?}");
    // Every host knows every remote endpoint's MAC before any traffic (no flooding needed).
    for (h, d) in nodes.iter().enumerate() {
        let want: Vec<String> = infos
            .iter()
            .filter(|(on, _)| *on != h)
            .map(|(_, e)| e.mac.clone())
            .collect();
        let ok = wait_until(5, || {
            let have = remote_macs(d, "ov");
            want.iter().all(|m| have.contains(m))
        });
        assert!(
            ok,
            "host h{} lacks remote MACs: {:?}",
            h + 1,
            remote_macs(d, "ov")
        );
    }
    // Ping between every pair of hosts (the first endpoint of each).
    let first: Vec<usize> = (0..4).collect(); // endpoint i lives on host i % 4
    for &a in &first {
        for &b in &first {
            if a != b {
                let to = infos[b].1.ip.to_string();
                assert!(ns[a].ping(&to, 2), "h{} -> h{}: no ping", a + 1, b + 1);
            }
        }
    }
    // TCP and UDP across hosts; the names resolve at every host's gateway.
    let _tcp = answer_server(&ns[1], "tcp", "0.0.0.0", 7000, "tcp-from-h2");
    let _udp = answer_server(&ns[1], "udp", "0.0.0.0", 7001, "udp-from-h2");
    let to = infos[1].1.ip.to_string();
    assert_eq!(ask(&ns[0], "tcp", &to, 7000), "tcp-from-h2");
    assert_eq!(ask(&ns[2], "udp", &to, 7001), "udp-from-h2");
    let gw = network_on(&nodes[0], "ov").unwrap().gateway.to_string();
    let name = ns[1].name.clone();
    let a = dig(&ns[0], &[&format!("@{gw}"), &name, "+short"]);
    assert_eq!(
        a.trim(),
        to,
        "{name} at h1's gateway: {}",
        dig(&ns[0], &[&format!("@{gw}"), &name])
    );
    // network rm is refused while any host has endpoints, naming them.
    let (code, err) = nodes[3].ctl_err(&["network", "rm", "ov"]);
    assert_eq!(code, 1);
    assert!(err.contains("h1/") && err.contains("h2/"), "{err}");
    // One etcd member down: nothing noticeable.
    etcd.kill(2);
    let extra = Netns::new("x");
    let e = attach(&nodes[2], &extra, "ov");
    assert!(!ips.contains(&e.ip.to_string()), "{e:?}");
    assert!(
        ns[0].ping(&e.ip.to_string(), 2),
        "to the endpoint attached with a member down"
    );
    etcd.restart(2);
    // Detach gives the address back to the cluster.
    nodes[2].ctl_ok(&["detach", &extra.name, "ov"]);
    // ... and every other host forgets its MAC (a static entry from the directory).
    for d in [&nodes[0], &nodes[1], &nodes[3]] {
        assert!(
            wait_until(5, || !remote_macs(d, "ov").contains(&e.mac)),
            "{:?}",
            remote_macs(d, "ov")
        );
    }
    let listed = etcd.ctl(&["get", "--prefix", "--keys-only", "/vswitch/addrs/ov/"]);
    assert!(!listed.contains(&e.ip.to_string()), "{listed}");
}

#[test]
fn a_dead_node_is_dropped_and_etcd_outages_keep_traffic_flowing() {
    // Hosts 1-3 run vswitchd; host 4 is a plain Linux VTEP (kernel vxlan), a static peer.
    let (u, mut etcd) = lab(4, 1);
    let mut nodes: Vec<Daemon> = (1..=3)
        .map(|i| node(&u, &etcd, i, &["--live-restore"]))
        .collect();
    for d in &nodes {
        wait_nodes_up(d, 3);
    }
    let kernel = Underlay::ip(4);
    nodes[0].ctl_ok(&[
        "network",
        "create",
        "ov",
        "--subnet",
        "10.78.0.0/24",
        "--vni",
        "42",
        "--peer",
        &kernel,
    ]);
    let ns: Vec<Netns> = (0..3).map(|i| Netns::new(&format!("d{i}"))).collect();
    for d in &nodes {
        assert!(
            wait_until(5, || network_on(d, "ov").is_some()),
            "{}",
            d.log()
        );
    }
    let eps: Vec<EndpointInfo> = (0..3).map(|i| attach(&nodes[i], &ns[i], "ov")).collect();
    assert!(ns[0].ping(&eps[2].ip.to_string(), 2));
    // Inspect lists the other nodes' endpoints with their node.
    let info: NetworkInfo = nodes[0].ctl_json(&["network", "inspect", "ov"]);
    let mut remote: Vec<(String, String)> = info
        .remote_endpoints
        .iter()
        .map(|r| (r.node.clone(), r.netns.clone()))
        .collect();
    remote.sort();
    assert_eq!(
        remote,
        vec![
            ("h2".to_string(), ns[1].name.clone()),
            ("h3".to_string(), ns[2].name.clone())
        ]
    );
    // The kernel host joins with head-end replication to every vswitch host.
    let k = &u.hosts[3];
    kernel_vxlan_host(k, "42", &kernel, &Underlay::ip(1), "10.78.0.200/24", 1450);
    for i in [2, 3] {
        vxlan_flood_to(k, &Underlay::ip(i));
    }
    for e in &eps[..2] {
        assert!(
            wait_until(10, || k.ping(&e.ip.to_string(), 1)),
            "kernel host -> {}",
            e.ip
        );
    }
    // A link made on one host routes on every host; unlinked on another, it is gone everywhere.
    nodes[1].ctl_ok(&[
        "network",
        "create",
        "ov2",
        "--subnet",
        "10.82.0.0/24",
        "--overlay",
    ]);
    for d in &nodes {
        assert!(
            wait_until(5, || network_on(d, "ov2").is_some()),
            "{}",
            d.log()
        );
    }
    nodes[0].ctl_ok(&["network", "link", "ov", "ov2"]);
    let blue = Netns::new("blue");
    let b = attach(&nodes[2], &blue, "ov2");
    for d in &nodes {
        assert!(
            wait_until(5, || network_on(d, "ov").unwrap().links == ["ov2"]),
            "{}",
            d.log()
        );
    }
    assert!(
        wait_until(10, || ns[1].ping(&b.ip.to_string(), 1)),
        "h2 (ov) -> h3 (ov2) through the link"
    );
    nodes[1].ctl_ok(&["network", "unlink", "ov2", "ov"]);
    for d in &nodes {
        assert!(
            wait_until(5, || network_on(d, "ov").unwrap().links.is_empty()),
            "{}",
            d.log()
        );
    }
    nodes[0].ctl_ok(&["network", "link", "ov", "ov2"]);
    nodes[2].ctl_ok(&["detach", &blue.name, "ov2"]);
    nodes[0].ctl_ok(&["network", "rm", "ov2"]);
    for d in &nodes {
        assert!(
            wait_until(5, || network_on(d, "ov2").is_none()),
            "{}",
            d.log()
        );
    }
    let left = etcd.ctl(&["get", "--prefix", "--keys-only", "/vswitch/links/"]);
    assert!(left.trim().is_empty(), "links left behind: {left}");
    // kill -9 host 3: the others drop it as a peer, and what was behind it, within TTL + 1 s.
    nodes[2].kill9();
    let t = std::time::Instant::now();
    for d in &nodes[..2] {
        let gone = wait_until(TTL + 3, || {
            let info: NetworkInfo = d.ctl_json(&["network", "inspect", "ov"]);
            !info.peers.contains(&Underlay::ip(3).parse().unwrap())
                && !remote_macs(d, "ov").contains(&eps[2].mac)
        });
        assert!(gone, "h3 still a peer: {:?}", cluster(d));
    }
    // TTL + 1 s is the daemons' bound; the second on top is this test's own polling (two
    // vswitchctl calls per daemon and round) on a loaded 2-core machine.
    let took = t.elapsed().as_secs_f64();
    assert!(took <= (TTL + 2) as f64, "dropped after {took:.1} s");
    let down = cluster(&nodes[0]);
    assert!(
        down.nodes
            .iter()
            .any(|n| n.name == "h3" && n.state == "down"),
        "{down:?}"
    );
    // Restarted with --live-restore: it rejoins with its endpoint and address.
    nodes[2].spawn(&[
        "--cluster",
        &etcd.url(),
        "--node",
        "h3",
        "--underlay-ip",
        &Underlay::ip(3),
        "--cluster-ttl",
        &TTL.to_string(),
        "--live-restore",
    ]);
    wait_nodes_up(&nodes[0], 3);
    assert!(
        wait_until(10, || ns[0].ping(&eps[2].ip.to_string(), 1)),
        "h1 -> h3 after the restart: {}\n{}\nh3: {}\n{}\n{}",
        nodes[2].log(),
        nodes[0].ctl_ok(&["fdb", "ov"]),
        nodes[2].ctl_ok(&["fdb", "ov"]),
        nodes[2].ctl_ok(&["network", "inspect", "ov"]),
        nodes[2].ctl_ok(&["stats"]),
    );
    // A partition longer than the TTL (host 2's underlay link down): the others drop it; when
    // it is back it registers again, by itself.
    u.hosts[1].exec_ok(&["ip", "link", "set", "ul0", "down"]);
    let dropped = wait_until(TTL + 3, || {
        cluster(&nodes[0])
            .nodes
            .iter()
            .any(|n| n.name == "h2" && n.state == "down")
    });
    assert!(dropped, "{:?}", cluster(&nodes[0]));
    u.hosts[1].exec_ok(&["ip", "link", "set", "ul0", "up"]);
    wait_nodes_up(&nodes[0], 3);
    assert!(
        wait_until(10, || ns[0].ping(&eps[1].ip.to_string(), 1)),
        "h1 -> h2 after the partition: {}",
        nodes[1].log()
    );
    // etcd gone: traffic keeps flowing, changes that need it fail with one line.
    etcd.kill(0);
    assert!(
        ns[1].ping(&eps[0].ip.to_string(), 2),
        "h2 -> h1 with etcd down"
    );
    let late = Netns::new("late");
    let (code, err) = nodes[1].ctl_err(&["attach", &late.name, "ov"]);
    assert_eq!(code, 1);
    assert!(err.contains("cluster") && err.contains("etcd"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!cluster(&nodes[1]).connected);
    // etcd back: the nodes resync and changes work again.
    etcd.restart(0);
    assert!(
        wait_until(10, || cluster(&nodes[1]).connected),
        "{:?}",
        cluster(&nodes[1])
    );
    let e = attach(&nodes[1], &late, "ov");
    assert!(
        wait_until(10, || ns[0].ping(&e.ip.to_string(), 1)),
        "to an endpoint attached after the outage"
    );
    assert!(ns[0].ping(&e.ip.to_string(), 3), "steady after the outage");
}

#[test]
fn bad_cluster_input_is_refused_or_skipped_never_a_crash() {
    let (u, etcd) = lab(1, 1);
    // Garbage under the prefix (written with etcdctl before and after the node starts).
    etcd.ctl(&["put", "/vswitch/nodes/evil", "not json"]);
    etcd.ctl(&["put", "/vswitch/networks/x", "{\"name\":\"y\"}"]);
    // The daemon ran without --cluster first and made an overlay network: joining the cluster
    // puts it there, nothing is dropped.
    let mut d = Daemon::start_in(&u.hosts[0], &[]);
    d.ctl_ok(&[
        "network",
        "create",
        "pre",
        "--subnet",
        "10.83.0.0/24",
        "--vni",
        "77",
    ]);
    d.terminate();
    let url = etcd.url();
    d.spawn(&[
        "--cluster",
        &url,
        "--node",
        "h1",
        "--underlay-ip",
        &Underlay::ip(1),
        "--cluster-ttl",
        "3",
    ]);
    assert!(
        wait_until(5, || etcd
            .ctl(&["get", "--keys-only", "/vswitch/networks/pre"])
            .contains("pre")),
        "{}",
        d.log()
    );
    assert!(network_on(&d, "pre").is_some());
    etcd.ctl(&["put", "/vswitch/endpoints/ov/h9/n", "\u{1}\u{2}"]);
    etcd.ctl(&["put", "/vswitch/what/is/this", "{}"]);
    assert!(
        wait_until(5, || cluster(&d).skipped >= 4),
        "skipped: {:?}",
        cluster(&d)
    );
    d.ctl_ok(&[
        "network",
        "create",
        "ov",
        "--subnet",
        "10.79.0.0/24",
        "--overlay",
    ]);
    let ns = Netns::new("b");
    let e = attach(&d, &ns, "ov");
    // etcd loses the node's keys (wiped by hand): the node puts them back.
    etcd.ctl(&["del", "--prefix", "/vswitch/endpoints/"]);
    etcd.ctl(&["del", "--prefix", "/vswitch/addrs/"]);
    let back = wait_until(5, || {
        let keys = etcd.ctl(&["get", "--prefix", "--keys-only", "/vswitch/"]);
        keys.contains(&format!("/vswitch/endpoints/ov/h1/{}", ns.name))
            && keys.contains(&format!("/vswitch/addrs/ov/{}", e.ip))
    });
    assert!(back, "{}", d.log());
    // An --ip another node holds (written by hand) is refused, naming the holder.
    etcd.ctl(&[
        "put",
        "/vswitch/addrs/ov/10.79.0.9",
        "{\"node\":\"h7\",\"netns\":\"web\"}",
    ]);
    let other = Netns::new("c");
    let (code, err) = d.ctl_err(&["attach", &other.name, "ov", "--ip", "10.79.0.9"]);
    assert_eq!(code, 1);
    assert!(err.contains("held by h7/web"), "{err}");
    // An unreachable --cluster address, and a server that is not etcd: the daemon runs, says
    // why, and refuses cluster changes with one line.
    let lone = |url: &str, subnet: &str| {
        let args = [
            "--cluster",
            url,
            "--node",
            "lonely",
            "--underlay-ip",
            "10.240.0.1",
        ];
        let x = Daemon::start_in(&u.hosts[0], &args);
        let (code, err) = x.ctl_err(&["network", "create", "o2", "--subnet", subnet, "--overlay"]);
        assert_eq!(code, 1, "{err}");
        (x, err)
    };
    let (dead, err) = lone("etcd://10.240.0.1:1", "10.80.0.0/24");
    assert!(
        err.contains("etcd unreachable") && err.contains("10.240.0.1:1"),
        "{err}"
    );
    let _http = u.hosts[0].spawn(&[
        "python3",
        "-m",
        "http.server",
        "--bind",
        "10.240.0.1",
        "2390",
    ]);
    wait_listening(&u.hosts[0], "tcp", 2390);
    let (notetcd, err) = lone("etcd://10.240.0.1:2390", "10.81.0.0/24");
    assert!(err.contains("10.240.0.1:2390"), "{err}");
    assert!(!cluster(&notetcd).connected);
    // Nothing crashed.
    for x in [&d, &dead, &notetcd] {
        assert!(x.ctl(&["status"]).status.success(), "{}", x.log());
    }
    // Options: --cluster without --underlay-ip is refused at start.
    let o = run(&[
        env!("CARGO_BIN_EXE_vswitchd"),
        "--cluster",
        "etcd://127.0.0.1:1",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--underlay-ip"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn dual_stack_cluster_networks_give_cluster_wide_ipv6_addresses_and_names() {
    let (u, _etcd) = lab(2, 1);
    let nodes: Vec<Daemon> = (1..=2).map(|i| node(&u, &_etcd, i, &[])).collect();
    for d in &nodes {
        wait_nodes_up(d, 2);
    }
    // The IPv6 prefix must leave 32 bits for the IPv4 address.
    let (_, e) = nodes[0].ctl_err(&[
        "network",
        "create",
        "narrow",
        "--subnet",
        "10.76.0.0/24",
        "--subnet",
        "fd00:76::/112",
        "--overlay",
    ]);
    assert!(e.contains("/96"), "{e}");
    nodes[0].ctl_ok(&[
        "network",
        "create",
        "ds",
        "--subnet",
        "10.78.0.0/24",
        "--subnet",
        "fd00:78::/64",
        "--overlay",
    ]);
    assert!(
        wait_until(5, || network_on(&nodes[1], "ds")
            .is_some_and(|n| n.subnet6.is_some())),
        "the dual-stack network reached host 2: {}",
        nodes[1].log()
    );
    let (a, b) = (Netns::new("da"), Netns::new("db"));
    let ea = attach(&nodes[0], &a, "ds");
    let eb = attach(&nodes[1], &b, "ds");
    // Each IPv6 address is the endpoint's cluster-wide IPv4 address in the prefix.
    for e in [&ea, &eb] {
        let v4 = u32::from(e.ip);
        let want = std::net::Ipv6Addr::from((0xfd00_0078u128 << 96) | u128::from(v4));
        assert_eq!(e.ip6, Some(want), "{e:?}");
    }
    assert_ne!(ea.ip6, eb.ip6);
    // --ip6 other than the one the IPv4 address gives is refused, saying how to choose.
    let c = Netns::new("dc");
    let (_, e) = nodes[0].ctl_err(&["attach", &c.name, "ds", "--ip6", "fd00:78::99"]);
    assert!(e.contains("--ip"), "{e}");
    // IPv6 across hosts, and the other host's endpoint by name (AAAA) at the local gateway.
    let b6 = eb.ip6.unwrap().to_string();
    let ok = wait_until(10, || {
        a.exec(&["ping", "-6", "-n", "-c", "1", "-W", "1", &b6])
            .status
            .success()
    });
    assert!(
        ok,
        "ping -6 across hosts\n{}\n{}",
        nodes[0].log(),
        nodes[1].log()
    );
    let ok = wait_until(5, || {
        a.exec(&["dig", "+short", "@10.78.0.1", &b.name, "AAAA"])
            .stdout
            .starts_with(b6.as_bytes())
    });
    assert!(ok, "AAAA for the remote endpoint");
    let info = network_on(&nodes[0], "ds").unwrap();
    assert!(
        info.remote_endpoints
            .iter()
            .any(|r| r.ip6 == eb.ip6 && r.netns == b.name),
        "{:?}",
        info.remote_endpoints
    );
}
