//! The CNI plugin (`vswitch-cni`) driven by a real runtime: containerd's `ctr run --cni`, with
//! its own containerd (private root, state and socket), containers from a busybox-static rootfs,
//! and the plugin installed where ctr looks (`/opt/cni/bin`, `/etc/cni/net.d`); then direct
//! plugin calls with the spec's bad inputs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;
use switch::model::PortInfo;

/// What this test put on the machine; all of it goes on drop, also when the test fails.
struct Runtime {
    dir: PathBuf,
    /// vswitchd's socket (for the DEL of detached containers on drop).
    socket: PathBuf,
    containerd: Option<KillOnDrop>,
    containers: Vec<String>,
    /// Files this test created outside its directory (conflist, plugin binaries).
    created: Vec<PathBuf>,
}

const CONFLIST: &str = "/etc/cni/net.d/00-vswitch-test.conflist";

impl Runtime {
    fn start(socket: &Path, network: &str) -> Runtime {
        require(&["containerd", "ctr", "runc", "busybox", "mount", "umount"]);
        assert!(
            Path::new("/usr/lib/cni/loopback").exists(),
            "/usr/lib/cni/loopback is missing: install Debian's containernetworking-plugins \
             (ctr run --cni sets up the container's loopback with it)"
        );
        let dir = std::env::temp_dir().join(format!("vsctr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut rt = Runtime {
            dir: dir.clone(),
            socket: socket.to_path_buf(),
            containerd: None,
            containers: Vec::new(),
            created: Vec::new(),
        };
        // The plugin where ctr looks for it, with the loopback plugin it also runs.
        for d in ["/opt/cni/bin", "/etc/cni/net.d"] {
            std::fs::create_dir_all(d).unwrap();
        }
        for (from, to) in [
            (
                env!("CARGO_BIN_EXE_vswitch-cni"),
                "/opt/cni/bin/vswitch-cni",
            ),
            ("/usr/lib/cni/loopback", "/opt/cni/bin/loopback"),
        ] {
            if to.ends_with("vswitch-cni") || !Path::new(to).exists() {
                std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {from} to {to}: {e}"));
                rt.created.push(to.into());
            }
        }
        let first = std::fs::read_dir("/etc/cni/net.d")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.as_str() < "00-vswitch-test.conflist")
            .collect::<Vec<_>>();
        assert!(
            first.is_empty(),
            "/etc/cni/net.d has configurations ctr would take before this test's: {first:?}"
        );
        std::fs::write(
            CONFLIST,
            format!(
                r#"{{"cniVersion":"1.0.0","name":"vstest","plugins":[{{"type":"vswitch-cni","network":"{network}","socket":"{}"}}]}}"#,
                socket.display()
            ),
        )
        .unwrap();
        rt.created.push(CONFLIST.into());
        // A rootfs with busybox's tools.
        let root = dir.join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "etc", "tmp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for tool in ["sh", "ip", "ping", "sleep", "nc", "cat"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
        }
        // containerd of its own.
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{0}/c.sock\"\n",
                dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        rt.containerd = Some(KillOnDrop(Some(child)));
        let up = wait_until(20, || rt.ctr(&["version"]).status.success());
        assert!(up, "containerd did not answer: {}", rt.log());
        rt
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        let sock = self.dir.join("c.sock");
        let mut a = vec!["ctr", "--address", sock.to_str().unwrap()];
        a.extend_from_slice(args);
        run(&a)
    }

    /// `ctr run -d --cni` a container sleeping in the rootfs.
    fn run_detached(&mut self, id: &str) {
        self.containers.push(id.to_string());
        let root = self.dir.join("rootfs");
        let o = self.ctr(&[
            "run",
            "-d",
            "--cni",
            "--rootfs",
            root.to_str().unwrap(),
            id,
            "/bin/sleep",
            "600",
        ]);
        assert!(
            o.status.success(),
            "ctr run {id}: {}{}",
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
    }

    /// `ctr run --cni` in the foreground (ctr itself runs DEL when the task ends).
    fn run_foreground(&mut self, id: &str) -> KillOnDrop {
        self.containers.push(id.to_string());
        let sock = self.dir.join("c.sock");
        let root = self.dir.join("rootfs");
        let child = Command::new("ctr")
            .args([
                "--address",
                sock.to_str().unwrap(),
                "run",
                "--rm",
                "--cni",
                "--rootfs",
            ])
            .arg(root)
            .args([id, "/bin/sleep", "600"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctr run");
        KillOnDrop(Some(child))
    }

    fn exec(&self, id: &str, cmd: &[&str]) -> std::process::Output {
        let mut a = vec!["task", "exec", "--exec-id", "t1", id];
        a.extend_from_slice(cmd);
        self.ctr(&a)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for id in self.containers.clone() {
            let _ = self.ctr(&["task", "kill", "-s", "KILL", id.as_str()]);
            let _ = wait_until(5, || {
                self.ctr(&["task", "delete", id.as_str()]).status.success()
                    || !self
                        .ctr(&["task", "ls"])
                        .stdout
                        .windows(id.len())
                        .any(|w| w == id.as_bytes())
            });
            let _ = self.ctr(&["container", "delete", id.as_str()]);
            // The runtime's DEL for detached containers (ctr does not run it).
            let conf = conf_for("front", Some(&self.socket));
            let _ = plugin("DEL", &format!("default-{id}"), None, &conf);
        }
        self.containerd = None;
        // containerd's mounts under its root (the shim's rootfs bind mounts) go with it.
        unmount_under(&self.dir);
        for f in &self.created {
            let _ = std::fs::remove_file(f);
        }
        for d in ["/etc/cni/net.d", "/etc/cni", "/opt/cni/bin", "/opt/cni"] {
            let _ = std::fs::remove_dir(d); // only when empty
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The network configuration for direct plugin calls.
fn conf_for(network: &str, socket: Option<&Path>) -> String {
    match socket {
        Some(s) => format!(
            r#"{{"cniVersion":"1.0.0","name":"vstest","type":"vswitch-cni","network":"{network}","socket":"{}"}}"#,
            s.display()
        ),
        None => format!(
            r#"{{"cniVersion":"1.0.0","name":"vstest","type":"vswitch-cni","network":"{network}","socket":"/nonexistent/vswitchd.sock"}}"#
        ),
    }
}

/// Run the plugin directly: `(exit code, stdout as JSON or Null)`.
fn plugin(cmd: &str, id: &str, netns: Option<&str>, stdin: &str) -> (i32, Value) {
    plugin_env(
        &[
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", "eth0"),
        ],
        netns,
        stdin,
    )
}

fn plugin_env(vars: &[(&str, &str)], netns: Option<&str>, stdin: &str) -> (i32, Value) {
    use std::io::Write;
    let mut c = Command::new(env!("CARGO_BIN_EXE_vswitch-cni"));
    c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in vars {
        c.env(k, v);
    }
    if let Some(n) = netns {
        c.env("CNI_NETNS", n);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vswitch-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let v = if out.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("plugin output is not JSON ({e}): {out}"))
    };
    (o.status.code().unwrap_or(-1), v)
}

fn ports(d: &Daemon) -> Vec<PortInfo> {
    d.ctl_json(&["ports"])
}

#[test]
fn ctr_run_cni_containers_talk_to_each_other_and_to_namespaces_and_del_cleans_up() {
    let d = Daemon::start();
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.67.0.0/24"]);
    let mut rt = Runtime::start(&d.socket, "front");
    rt.run_detached("c1");
    rt.run_detached("c2");
    let ip_of = |netns: &str| {
        ports(&d)
            .into_iter()
            .find(|p| p.netns == netns)
            .map(|p| p.ip.to_string())
            .unwrap_or_else(|| panic!("no port for {netns}: {:?}", ports(&d)))
    };
    let (ip1, ip2) = (ip_of("vscni-default-c1"), ip_of("vscni-default-c2"));
    let ip2_24 = format!("{ip2}/24");
    assert_ne!(ip1, ip2);
    // Container to container, and both ways with an `ip netns` endpoint of the same network.
    let ping = |id: &str, to: &str| rt.exec(id, &["/bin/ping", "-c", "2", "-W", "2", to]);
    let o = ping("c1", &ip2);
    assert!(
        o.status.success(),
        "c1 -> c2: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let plain = Netns::new("plain");
    let e = attach(&d, &plain, "front");
    let o = ping("c2", &e.ip.to_string());
    assert!(
        o.status.success(),
        "c2 -> netns: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(plain.ping(&ip1, 2), "netns -> c1");
    // CHECK passes for a container that is attached.
    let check = format!(
        r#"{{"cniVersion":"1.0.0","name":"vstest","type":"vswitch-cni","network":"front","socket":"{}","prevResult":{{"cniVersion":"1.0.0","ips":[{{"address":"{ip2_24}"}}]}}}}"#,
        d.socket.display()
    );
    let (code, out) = plugin(
        "CHECK",
        "default-c2",
        Some("/run/netns/vscni-default-c2"),
        &check,
    );
    assert_eq!(code, 0, "{out}");
    // A foreground container: killing its task makes ctr run DEL: no port, address or mount left.
    let fg = rt.run_foreground("c3");
    assert!(
        wait_until(20, || ports(&d)
            .iter()
            .any(|p| p.netns == "vscni-default-c3")),
        "c3 never attached: {}",
        d.log()
    );
    let ip3 = ip_of("vscni-default-c3");
    rt.ctr(&["task", "kill", "-s", "KILL", "c3"]);
    let _ = fg.wait();
    assert!(
        wait_until(10, || !ports(&d)
            .iter()
            .any(|p| p.netns == "vscni-default-c3")),
        "c3's endpoint left after its task was killed: {:?}",
        ports(&d)
    );
    assert!(
        !Path::new("/run/netns/vscni-default-c3").exists(),
        "c3's namespace mount left"
    );
    assert!(
        !ports(&d).iter().any(|p| p.ip.to_string() == ip3),
        "c3's address {ip3} still taken"
    );
    // GC with only c2 valid: c1's endpoint goes.
    let gc = format!(
        r#"{{"cniVersion":"1.1.0","name":"vstest","type":"vswitch-cni","network":"front","socket":"{}","cni.dev/valid-attachments":[{{"containerID":"default-c2","ifname":"eth0"}}]}}"#,
        d.socket.display()
    );
    let (code, out) = plugin_env(&[("CNI_COMMAND", "GC")], None, &gc);
    assert_eq!(code, 0, "{out}");
    let left: Vec<String> = ports(&d).into_iter().map(|p| p.netns).collect();
    assert!(!left.contains(&"vscni-default-c1".to_string()), "{left:?}");
    assert!(left.contains(&"vscni-default-c2".to_string()), "{left:?}");
    // DEL is idempotent: twice, and for a container vswitchd never saw.
    let conf = conf_for("front", Some(&d.socket));
    for id in ["default-c2", "default-c2", "never-seen"] {
        let (code, out) = plugin("DEL", id, None, &conf);
        assert_eq!(code, 0, "DEL {id}: {out}");
    }
    assert!(!Path::new("/run/netns/vscni-default-c2").exists());
}

#[test]
fn direct_plugin_calls_with_bad_input_get_the_spec_error_codes() {
    let d = Daemon::start();
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.68.0.0/24"]);
    let ns = Netns::new("cni");
    let path = format!("/run/netns/{}", ns.name);
    let good = conf_for("front", Some(&d.socket));
    let code_of = |v: &Value| v["code"].as_u64().unwrap_or(0);
    // Missing environment: 4, with the variable named.
    let (code, out) = plugin_env(&[("CNI_COMMAND", "ADD")], Some(&path), &good);
    assert_eq!((code, code_of(&out)), (1, 4), "{out}");
    assert!(
        out["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{out}"
    );
    // Not JSON: 6; a configuration without its fields: 7; a version not spoken: 1.
    for (stdin, want) in [
        ("{oops", 6),
        (r#"{"cniVersion":"1.0.0"}"#, 7),
        (
            r#"{"cniVersion":"0.2.0","name":"x","type":"vswitch-cni"}"#,
            1,
        ),
    ] {
        let (code, out) = plugin("ADD", "c9", Some(&path), stdin);
        assert_eq!((code, code_of(&out)), (1, want), "{stdin}: {out}");
        assert_eq!(
            out["msg"].as_str().map(|m| m.lines().count()),
            Some(1),
            "{out}"
        );
    }
    // A network vswitchd does not have: 7, naming it.
    let (code, out) = plugin("ADD", "c9", Some(&path), &conf_for("nope", Some(&d.socket)));
    assert_eq!((code, code_of(&out)), (1, 7), "{out}");
    assert!(out["msg"].as_str().unwrap().contains("nope"), "{out}");
    // vswitchd not running: 11 (try again later); STATUS: 50.
    let (code, out) = plugin("ADD", "c9", Some(&path), &conf_for("front", None));
    assert_eq!((code, code_of(&out)), (1, 11), "{out}");
    let (code, out) = plugin_env(&[("CNI_COMMAND", "STATUS")], None, &conf_for("front", None));
    assert_eq!((code, code_of(&out)), (1, 50), "{out}");
    let (code, out) = plugin_env(&[("CNI_COMMAND", "STATUS")], None, &good);
    assert_eq!(code, 0, "{out}");
    // VERSION.
    let (code, out) = plugin_env(&[("CNI_COMMAND", "VERSION")], None, "");
    assert_eq!(code, 0);
    assert_eq!(
        out["supportedVersions"],
        serde_json::json!(["1.0.0", "1.1.0"])
    );
    // A good ADD on an `ip netns` namespace (by path, no mount needed): the spec's result,
    // chained after a previous plugin's; CNI_ARGS IP= asks for an address.
    let chained = format!(
        r#"{{"cniVersion":"1.0.0","name":"vstest","type":"vswitch-cni","network":"front","socket":"{}","prevResult":{{"cniVersion":"1.0.0","interfaces":[{{"name":"lo"}}],"ips":[]}}}}"#,
        d.socket.display()
    );
    let (code, out) = plugin_env(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c9"),
            ("CNI_IFNAME", "eth3"),
            ("CNI_ARGS", "IgnoreUnknown=1;IP=10.68.0.77"),
        ],
        Some(&path),
        &chained,
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["interfaces"][1]["name"], "eth3", "{out}");
    assert_eq!(out["ips"][0]["address"], "10.68.0.77/24", "{out}");
    assert_eq!(out["ips"][0]["interface"], 1, "{out}");
    assert_eq!(out["dns"]["nameservers"][0], "10.68.0.1", "{out}");
    assert!(ns.ping("10.68.0.1", 1), "the endpoint reaches its gateway");
    // A second ADD of the same interface is refused (one line, vswitchd's reason).
    let (code, out) = plugin_env(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c9"),
            ("CNI_IFNAME", "eth3"),
        ],
        Some(&path),
        &good,
    );
    assert_eq!((code, code_of(&out)), (1, 100), "{out}");
    // DEL by path removes it; the namespace (not ours) stays.
    let (code, out) = plugin("DEL", "c9", Some(&path), &good);
    assert_eq!(code, 0, "{out}");
    assert!(ports(&d).is_empty(), "{:?}", ports(&d));
    assert!(Path::new(&path).exists());
}

#[test]
fn port_mappings_publish_on_the_uplink_keeping_the_client_address() {
    let l = Lab::new(&[]);
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.69.0.0/24"]);
    let ns = Netns::new("pm");
    let path = format!("/run/netns/{}", ns.name);
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"vstest","type":"vswitch-cni","network":"front","socket":"{}","runtimeConfig":{{"portMappings":[{{"hostPort":8080,"containerPort":80,"protocol":"tcp"}}]}}}}"#,
        l.d.socket.display()
    );
    let (code, out) = plugin("ADD", "pm1", Some(&path), &conf);
    assert_eq!(code, 0, "{out}");
    let _server = peer_server(&ns, "tcp", "0.0.0.0", 80);
    wait_listening(&ns, "tcp", 80);
    assert_eq!(
        ask(&l.out, "tcp", UPLINK, 8080),
        format!("peer={OUTSIDE}"),
        "through the published port, with the client's address"
    );
    let (code, out) = plugin("DEL", "pm1", Some(&path), &conf);
    assert_eq!(code, 0, "{out}");
    let published: Vec<String> = ports(&l.d).into_iter().flat_map(|p| p.published).collect();
    assert!(published.is_empty(), "{published:?}");
}
