//! Docker's remote network driver (`vswitchd --docker-plugin`) driven by a real dockerd: its own
//! data root, exec root, pid file and socket, no iptables, no bridge; containers from an image
//! imported from a busybox-static rootfs.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;
use switch::model::PortInfo;

/// A private dockerd; stopped, with its containers and mounts, on drop.
struct Dockerd {
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl Dockerd {
    fn start() -> Dockerd {
        require(&[
            "dockerd",
            "docker",
            "containerd",
            "runc",
            "busybox",
            "mount",
            "tar",
        ]);
        // One directory per daemon (two tests may run at once in this process).
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vsdk-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("d.pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("d.sock").display()))
            .args(["--iptables=false", "--ip-forward=false", "--bridge=none"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        let d = Dockerd {
            dir,
            child: Some(child),
        };
        let up = wait_until(30, || d.docker(&["version"]).status.success());
        assert!(up, "dockerd did not answer: {}", d.log());
        // An image from busybox-static: sh, ip, ping, sleep.
        let root = d.dir.join("rootfs");
        for sub in ["bin", "proc", "dev", "sys", "etc", "www"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(root.join("www/index.html"), "served from a container\n").unwrap();
        // A CGI script that answers with the address the request came from.
        std::fs::create_dir_all(root.join("www/cgi-bin")).unwrap();
        let cgi = root.join("www/cgi-bin/peer");
        std::fs::write(
            &cgi,
            "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"peer=$REMOTE_ADDR\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&cgi, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for t in ["sh", "ip", "ping", "sleep", "httpd", "nc", "echo"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(t)).unwrap();
        }
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -C {} -c . | docker -H unix://{} import - vsbox",
                root.display(),
                d.dir.join("d.sock").display()
            ))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        let host = format!("unix://{}", self.dir.join("d.sock").display());
        let mut a = vec!["docker", "-H", &host];
        a.extend_from_slice(args);
        run(&a)
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?}: {}{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let all = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&all.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        if let Some(mut c) = self.child.take() {
            signal(&c.id().to_string(), "TERM");
            let _ = wait_until(20, || c.try_wait().ok().flatten().is_some());
            let _ = c.kill();
            let _ = c.wait();
        }
        unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ports(d: &Daemon) -> Vec<PortInfo> {
    d.ctl_json(&["ports"])
}

#[test]
fn docker_containers_on_a_vswitch_network_talk_and_leave_nothing_behind() {
    let driver = format!("vstest{}", std::process::id());
    let plugin = format!("/run/docker/plugins/{driver}.sock");
    let args = ["--docker-plugin", plugin.as_str(), "--live-restore"];
    let mut d = Daemon::start_with(&args);
    let dk = Dockerd::start();
    let net_id = dk.ok(&[
        "network",
        "create",
        "-d",
        &driver,
        "--subnet",
        "10.75.0.0/24",
        "dnet",
    ]);
    let vs_net = format!("d-{}", &net_id[..12]);
    d.ctl_ok(&["network", "inspect", &vs_net]);
    for name in ["vsa", "vsb"] {
        dk.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--net",
            "dnet",
            "vsbox",
            "/bin/sleep",
            "600",
        ]);
    }
    let ip_on = |name: &str, net: &str| {
        dk.ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
            name,
        ])
    };
    let (ipa, ipb) = (ip_on("vsa", "dnet"), ip_on("vsb", "dnet"));
    // vswitch sees both, under the names Docker gave the interfaces in the containers.
    assert!(
        wait_until(5, || {
            let p = ports(&d);
            p.len() == 2 && p.iter().all(|p| p.ifname == "eth0" && p.network == vs_net)
        }),
        "{:?}\n{}",
        ports(&d),
        d.log()
    );
    let mut listed: Vec<String> = ports(&d).iter().map(|p| p.ip.to_string()).collect();
    listed.sort();
    let mut docker_ips = vec![ipa.clone(), ipb.clone()];
    docker_ips.sort();
    assert_eq!(
        listed, docker_ips,
        "vswitchctl ports and docker inspect agree"
    );
    // Container to container both ways, by address and by name (Docker's embedded DNS), and
    // TCP; and an `ip netns` endpoint of the same network.
    let pings = |from: &str, to: &str| {
        dk.docker(&["exec", from, "/bin/ping", "-c", "2", "-W", "2", to])
            .status
            .success()
    };
    for (from, to) in [("vsa", ipb.as_str()), ("vsb", ipa.as_str()), ("vsa", "vsb")] {
        assert!(pings(from, to), "{from} -> {to}\n{}", d.log());
    }
    let tcp = |server: &str, client: &str| {
        let said = format!("tcp-from-{server}");
        dk.ok(&[
            "exec",
            "-d",
            server,
            "/bin/sh",
            "-c",
            &format!("echo {said} | /bin/nc -l -p 7000"),
        ]);
        wait_until(5, || {
            let o = dk.docker(&["exec", client, "/bin/nc", "-w", "2", server, "7000"]);
            String::from_utf8_lossy(&o.stdout).contains(&said)
        })
    };
    assert!(tcp("vsb", "vsa"), "TCP vsa -> vsb by name");
    let plain = Netns::new("dk");
    attach(&d, &plain, &vs_net);
    assert!(plain.ping(&ipa, 2), "netns -> container");

    // A second network with vswitch's own IPAM (no --subnet: it picks a free /24), connected
    // to a running container as eth1.
    let inet_id = dk.ok(&[
        "network",
        "create",
        "-d",
        &driver,
        "--ipam-driver",
        &driver,
        "inet",
    ]);
    let vs_inet = format!("d-{}", &inet_id[..12]);
    let subnet = dk.ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}",
        "inet",
    ]);
    let info: serde_json::Value = d.ctl_json(&["network", "inspect", &vs_inet]);
    assert_eq!(
        format!(
            "{} {}",
            info["subnet"].as_str().unwrap(),
            info["gateway"].as_str().unwrap()
        ),
        subnet,
        "the pool vswitch's IPAM gave is the vswitch network's subnet and gateway"
    );
    assert!(
        !subnet.starts_with("10.75."),
        "the pool overlaps dnet: {subnet}"
    );
    dk.ok(&["network", "connect", "inet", "vsa"]);
    dk.ok(&[
        "run",
        "-d",
        "--name",
        "vsc",
        "--net",
        "inet",
        "vsbox",
        "/bin/sleep",
        "600",
    ]);
    let eth1 = dk.ok(&["exec", "vsa", "/bin/ip", "-o", "-4", "addr", "show", "eth1"]);
    assert!(
        eth1.contains(&format!("{}/", ip_on("vsa", "inet"))),
        "vsa's eth1: {eth1}"
    );
    assert!(pings("vsa", "vsc"), "over inet by name\n{}", d.log());
    assert!(pings("vsc", &ip_on("vsa", "inet")), "vsc -> vsa over inet");

    // vswitchd restarted under running containers (--live-restore): they stay connected, and
    // the switch and Docker still agree; the IPAM driver still knows what it gave.
    d.terminate();
    d.spawn(&args);
    assert!(
        pings("vsa", &ipb) && pings("vsa", "vsc"),
        "after a restart\n{}",
        d.log()
    );
    let agree = |d: &Daemon| {
        let mut have: Vec<(String, String, String)> = ports(d)
            .iter()
            .filter(|p| p.netns.starts_with("vsd-") && p.state == "up")
            .map(|p| (p.network.clone(), p.ifname.clone(), p.ip.to_string()))
            .collect();
        have.sort();
        let mut want = vec![
            (vs_net.clone(), "eth0".to_string(), ipa.clone()),
            (vs_net.clone(), "eth0".to_string(), ipb.clone()),
            (vs_inet.clone(), "eth1".to_string(), ip_on("vsa", "inet")),
            (vs_inet.clone(), "eth0".to_string(), ip_on("vsc", "inet")),
        ];
        want.sort();
        (have == want, format!("vswitch {have:?}\ndocker {want:?}"))
    };
    assert!(wait_until(5, || agree(&d).0), "{}", agree(&d).1);
    dk.ok(&[
        "run",
        "-d",
        "--name",
        "vsd",
        "--net",
        "inet",
        "vsbox",
        "/bin/sleep",
        "600",
    ]);
    let mut inet_ips = vec![
        ip_on("vsa", "inet"),
        ip_on("vsc", "inet"),
        ip_on("vsd", "inet"),
    ];
    inet_ips.sort();
    inet_ips.dedup();
    assert_eq!(
        inet_ips.len(),
        3,
        "an address handed out twice: {inet_ips:?}"
    );
    dk.ok(&["rm", "-f", "vsd"]);

    // docker kill, then docker start: the container comes back on the switch.
    dk.ok(&["kill", "vsb"]);
    assert!(
        wait_until(5, || ports(&d).len() == 4),
        "vsb's port stays after kill: {:?}",
        ports(&d)
    );
    dk.ok(&["start", "vsb"]);
    let ipb2 = ip_on("vsb", "dnet");
    assert!(pings("vsa", "vsb"), "after docker start\n{}", d.log());
    assert!(
        wait_until(5, || ports(&d).iter().any(|p| p.ip.to_string() == ipb2
            && p.ifname == "eth0"
            && p.state == "up")),
        "{:?}",
        ports(&d)
    );

    // Docker refuses to remove a network in use; disconnect and rm take the endpoints away.
    assert!(!dk.docker(&["network", "rm", "dnet"]).status.success());
    dk.ok(&["network", "disconnect", "inet", "vsa"]);
    assert!(
        wait_until(5, || !ports(&d)
            .iter()
            .any(|p| p.network == vs_inet && p.ifname == "eth1")),
        "{:?}",
        ports(&d)
    );
    dk.ok(&["network", "disconnect", "dnet", "vsb"]);
    dk.ok(&["rm", "-f", "vsa", "vsc"]);
    assert!(
        wait_until(5, || ports(&d).iter().all(|p| p.netns == plain.name)),
        "{:?}",
        ports(&d)
    );
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("vsd-"))
        .collect();
    assert!(left.is_empty(), "namespace mounts left: {left:?}");
    d.ctl_ok(&["detach", &plain.name, &vs_net]);
    dk.ok(&["network", "rm", "dnet", "inet"]);
    for net in [&vs_net, &vs_inet] {
        assert!(
            d.ctl_err(&["network", "inspect", net]).0 != 0,
            "the vswitch network {net} went"
        );
    }
    // The IPAM driver gave everything back.
    let book = std::fs::read_to_string(d.dir.join("state/docker-ipam.json")).unwrap();
    let book: serde_json::Value = serde_json::from_str(&book).unwrap();
    assert_eq!(book["pools"], serde_json::json!({}), "{book}");
}

/// A cable from vswitchd's (the root) namespace: veth `TAGPID` to `eth0` (`addr`) in `out`;
/// deleted on drop.
struct RootUplink(String);

impl RootUplink {
    fn new(out: &Netns) -> RootUplink {
        RootUplink::cable(out, "vsup", "10.210.0.2/24")
    }

    fn cable(out: &Netns, tag: &str, addr: &str) -> RootUplink {
        let name = format!("{tag}{}", std::process::id() % 100_000);
        run_ok(&[
            "ip", "link", "add", &name, "type", "veth", "peer", "name", "eth0", "netns", &out.name,
        ]);
        let u = RootUplink(name);
        out.exec_ok(&["ip", "addr", "add", addr, "dev", "eth0"]);
        out.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        u
    }
}

impl Drop for RootUplink {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.0]);
    }
}

#[test]
fn docker_run_p_publishes_on_the_uplink() {
    require(&["curl"]);
    let driver = format!("vspub{}", std::process::id());
    let plugin = format!("/run/docker/plugins/{driver}.sock");
    let out = Netns::new("dout");
    let cable = RootUplink::new(&out);
    let d = Daemon::start_with(&["--docker-plugin", &plugin]);
    d.ctl_ok(&["uplink", "set", &cable.0, "--ip", "10.210.0.1/24"]);
    let dk = Dockerd::start();
    // Dual stack (Docker's IPAM hands out both families; the switch takes them).
    let pnet_id = dk.ok(&[
        "network",
        "create",
        "-d",
        &driver,
        "--subnet",
        "10.76.0.0/24",
        "--ipv6",
        "--subnet",
        "fd00:76::/64",
        "pnet",
    ]);
    dk.ok(&[
        "run",
        "-d",
        "--name",
        "vsweb",
        "--net",
        "pnet",
        "-p",
        "8080:80",
        "vsbox",
        "/bin/httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let get = |path: &str| {
        let url = format!("http://10.210.0.1:8080/{path}");
        let o = out.exec(&["curl", "-s", "-m", "3", &url]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(
        wait_until(10, || get("index.html").contains("served from a container")),
        "{:?}\n{}",
        ports(&d),
        d.log()
    );
    // Both families agree with Docker, and IPv6 works between the container and an `ip netns`
    // endpoint of the same network.
    let ip6 = dk.ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.GlobalIPv6Address}}{{end}}",
        "vsweb",
    ]);
    let web = ports(&d)
        .into_iter()
        .find(|p| p.netns.starts_with("vsd-"))
        .unwrap();
    assert_eq!(web.ip6.map(|a| a.to_string()), Some(ip6.clone()), "{web:?}");
    let plain = Netns::new("dk6");
    attach(&d, &plain, &format!("d-{}", &pnet_id[..12]));
    let p = plain.exec(&["ping", "-6", "-c", "2", "-W", "2", &ip6]);
    assert!(
        p.status.success(),
        "ping -6 {ip6}: {}",
        String::from_utf8_lossy(&p.stdout)
    );
    d.ctl_ok(&["detach", &plain.name, &format!("d-{}", &pnet_id[..12])]);
    // The container sees the client's own address, not the uplink's.
    let peer = get("cgi-bin/peer");
    // (busybox httpd listens on a dual-stack socket: a v4 client shows as ::ffff:A.B.C.D.)
    assert!(
        ["peer=10.210.0.2", "peer=[::ffff:10.210.0.2]"].contains(&peer.trim()),
        "{peer}"
    );
    dk.ok(&["rm", "-f", "vsweb"]);
    assert!(
        wait_until(5, || ports(&d).iter().all(|p| p.published.is_empty())),
        "{:?}",
        ports(&d)
    );
    assert!(
        !get("index.html").contains("served"),
        "still answered after docker rm"
    );
    dk.ok(&["network", "rm", "pnet"]);
}

/// Cluster mode: `-o network=NAME` puts Docker's containers on a cluster network another host
/// made, with addresses no host holds, and they reach that host's endpoints over the overlay.
/// Host A is vswitchd with the plugin in the root namespace (where dockerd is); host B is
/// vswitchd in namespace `hb`, which also runs etcd; a veth between them is the underlay.
#[test]
fn docker_containers_join_a_cluster_network_made_on_another_host() {
    require(&["etcd", "etcdctl", "socat"]);
    let driver = format!("vscl{}", std::process::id());
    let plugin = format!("/run/docker/plugins/{driver}.sock");
    let hb = Netns::new("dkhb");
    let cable = RootUplink::cable(&hb, "vscl", "10.243.0.2/24");
    run_ok(&["ip", "addr", "add", "10.243.0.1/24", "dev", &cable.0]);
    run_ok(&["ip", "link", "set", &cable.0, "up"]);
    let etcd = EtcdCluster::start(&hb, &["10.243.0.2"]);
    let url = etcd.url();
    let node = |name: &'static str, ip: &'static str| {
        vec![
            "--cluster",
            url.as_str(),
            "--node",
            name,
            "--underlay-ip",
            ip,
            "--cluster-ttl",
            "3",
        ]
    };
    let b = Daemon::start_in(&hb, &node("hb", "10.243.0.2"));
    let mut a_args = node("ha", "10.243.0.1");
    a_args.extend(["--docker-plugin", plugin.as_str()]);
    let a = Daemon::start_with(&a_args);
    // Host B makes the cluster network and an `ip netns` endpoint on it.
    b.ctl_ok(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.244.0.0/24",
        "--overlay",
    ]);
    let nb = Netns::new("dkb");
    let eb = attach(&b, &nb, "blue");
    let remote_on = |d: &Daemon, ip: &str| -> Option<String> {
        let n: serde_json::Value = d.ctl_json(&["network", "inspect", "blue"]);
        n["remote_endpoints"]
            .as_array()?
            .iter()
            .find(|r| r["ip"] == ip)
            .map(|r| r["node"].as_str().unwrap_or_default().to_string())
    };
    let eb_ip = eb.ip.to_string();
    assert!(
        wait_until(10, || remote_on(&a, &eb_ip).is_some()),
        "host A never saw B's endpoint\n{}",
        a.log()
    );
    let dk = Dockerd::start();
    // Docker's pool must be the network's: a different subnet is refused, naming the right one.
    let o = dk.docker(&[
        "network",
        "create",
        "-d",
        &driver,
        "--subnet",
        "10.245.0.0/24",
        "-o",
        "network=blue",
        "wrong",
    ]);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && said.contains("vswitch network blue is 10.244.0.0/24"),
        "{said}"
    );
    // With Docker's own IPAM, which knows nothing of host B, the first container is given B's
    // endpoint's address: refused at Join by the cluster's claim, naming the holder.
    dk.ok(&[
        "network",
        "create",
        "-d",
        &driver,
        "--subnet",
        "10.244.0.0/24",
        "-o",
        "network=blue",
        "plain",
    ]);
    let o = dk.docker(&[
        "run",
        "-d",
        "--name",
        "c0",
        "--net",
        "plain",
        "vsbox",
        "/bin/sleep",
        "600",
    ]);
    let said = String::from_utf8_lossy(&o.stderr);
    eprintln!("docker run on Docker's IPAM: {said}");
    assert!(!o.status.success() && said.contains(&eb_ip), "{said}");
    dk.ok(&["rm", "-f", "c0"]);
    dk.ok(&["network", "rm", "plain"]);
    a.ctl_ok(&["network", "inspect", "blue"]);
    // With vswitch's IPAM, addresses held on every host are skipped.
    dk.ok(&[
        "network",
        "create",
        "-d",
        &driver,
        "--ipam-driver",
        &driver,
        "--subnet",
        "10.244.0.0/24",
        "-o",
        "network=blue",
        "blue",
    ]);
    dk.ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        "--net",
        "blue",
        "vsbox",
        "/bin/sleep",
        "600",
    ]);
    let c1 = dk.ok(&[
        "inspect",
        "-f",
        "{{(index .NetworkSettings.Networks \"blue\").IPAddress}}",
        "c1",
    ]);
    let gw = dk.ok(&[
        "inspect",
        "-f",
        "{{(index .NetworkSettings.Networks \"blue\").Gateway}}",
        "c1",
    ]);
    assert_eq!(gw, "10.244.0.1", "the network's gateway");
    assert!(
        c1 != eb_ip && c1.starts_with("10.244.0."),
        "the container got {c1}; host B's endpoint holds {eb_ip}"
    );
    // The container is an endpoint of the cluster network on host A, known to host B.
    assert!(
        wait_until(10, || remote_on(&b, &c1).as_deref() == Some("ha")),
        "host B never saw the container {c1}\n{}",
        b.log()
    );
    // Across the overlay both ways: ping, and TCP.
    assert!(
        dk.docker(&["exec", "c1", "/bin/ping", "-c", "2", "-W", "2", &eb_ip])
            .status
            .success(),
        "container -> host B's namespace\n{}",
        a.log()
    );
    assert!(nb.ping(&c1, 2), "host B's namespace -> container");
    dk.ok(&[
        "exec",
        "-d",
        "c1",
        "/bin/sh",
        "-c",
        "echo tcp-from-c1 | /bin/nc -l -p 7000",
    ]);
    let got = wait_until(5, || {
        let o = nb.exec(&[
            "socat",
            "-u",
            &format!("TCP:{c1}:7000,connect-timeout=2"),
            "-",
        ]);
        String::from_utf8_lossy(&o.stdout).contains("tcp-from-c1")
    });
    assert!(got, "TCP from host B's namespace to the container");
    // A second container gets an address no host holds either.
    dk.ok(&[
        "run",
        "-d",
        "--name",
        "c2",
        "--net",
        "blue",
        "vsbox",
        "/bin/sleep",
        "600",
    ]);
    let c2 = dk.ok(&[
        "inspect",
        "-f",
        "{{(index .NetworkSettings.Networks \"blue\").IPAddress}}",
        "c2",
    ]);
    assert!(c2 != c1 && c2 != eb_ip, "{c2}");
    // Containers gone: host B forgets them. `docker network rm` forgets the mapping and leaves
    // the cluster network to its other users.
    dk.ok(&["rm", "-f", "c1", "c2"]);
    assert!(
        wait_until(10, || remote_on(&b, &c1).is_none()
            && remote_on(&b, &c2).is_none()),
        "host B still lists the containers\n{}",
        b.log()
    );
    dk.ok(&["network", "rm", "blue"]);
    a.ctl_ok(&["network", "inspect", "blue"]);
    assert!(nb.ping(&eb_ip, 1));
    let mapped =
        std::fs::read_to_string(a.dir.join("state/docker-networks.json")).unwrap_or_default();
    assert!(!mapped.contains("blue"), "{mapped}");
}
