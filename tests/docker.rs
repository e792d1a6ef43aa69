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
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for t in ["sh", "ip", "ping", "sleep", "httpd"] {
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
    dk.ok(&[
        "run",
        "-d",
        "--name",
        "vsa",
        "--net",
        "dnet",
        "vsbox",
        "/bin/sleep",
        "600",
    ]);
    dk.ok(&[
        "run",
        "-d",
        "--name",
        "vsb",
        "--net",
        "dnet",
        "vsbox",
        "/bin/sleep",
        "600",
    ]);
    let ip_of = |name: &str| {
        dk.ok(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            name,
        ])
    };
    let (ipa, ipb) = (ip_of("vsa"), ip_of("vsb"));
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
    // Container to container both ways, and an `ip netns` endpoint of the same network.
    for (from, to) in [("vsa", &ipb), ("vsb", &ipa)] {
        let o = dk.docker(&["exec", from, "/bin/ping", "-c", "2", "-W", "2", to]);
        assert!(
            o.status.success(),
            "{from} -> {to}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let plain = Netns::new("dk");
    attach(&d, &plain, &vs_net);
    assert!(plain.ping(&ipa, 2), "netns -> container");
    // vswitchd restarted under running containers (--live-restore): they stay connected, and
    // the switch and Docker still agree.
    d.terminate();
    d.spawn(&args);
    let o = dk.docker(&["exec", "vsa", "/bin/ping", "-c", "2", "-W", "2", &ipb]);
    assert!(
        o.status.success(),
        "after a restart: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        d.log()
    );
    assert_eq!(
        ports(&d)
            .iter()
            .filter(|p| p.netns.starts_with("vsd-") && p.ifname == "eth0" && p.state == "up")
            .count(),
        2,
        "{:?}",
        ports(&d)
    );
    // Docker refuses to remove a network in use; disconnect and rm take the endpoints away.
    assert!(!dk.docker(&["network", "rm", "dnet"]).status.success());
    dk.ok(&["network", "disconnect", "dnet", "vsb"]);
    dk.ok(&["rm", "-f", "vsa"]);
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
    dk.ok(&["network", "rm", "dnet"]);
    assert!(
        d.ctl_err(&["network", "inspect", &vs_net]).0 != 0,
        "the vswitch network went"
    );
}

/// The uplink cable in vswitchd's (the root) namespace: veth `NAME` to `eth0` (10.210.0.2/24)
/// in `out`; deleted on drop.
struct RootUplink(String);

impl RootUplink {
    fn new(out: &Netns) -> RootUplink {
        let name = format!("vsup{}", std::process::id() % 100_000);
        run_ok(&[
            "ip", "link", "add", &name, "type", "veth", "peer", "name", "eth0", "netns", &out.name,
        ]);
        let u = RootUplink(name);
        out.exec_ok(&["ip", "addr", "add", "10.210.0.2/24", "dev", "eth0"]);
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
    dk.ok(&[
        "network",
        "create",
        "-d",
        &driver,
        "--subnet",
        "10.76.0.0/24",
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
    let get = || {
        let o = out.exec(&["curl", "-s", "-m", "3", "http://10.210.0.1:8080/index.html"]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(
        wait_until(10, || get().contains("served from a container")),
        "{:?}\n{}",
        ports(&d),
        d.log()
    );
    dk.ok(&["rm", "-f", "vsweb"]);
    assert!(
        wait_until(5, || ports(&d).iter().all(|p| p.published.is_empty())),
        "{:?}",
        ports(&d)
    );
    assert!(!get().contains("served"), "still answered after docker rm");
    dk.ok(&["network", "rm", "pnet"]);
}
