//! `vswitchctl`: the command line for vswitchd.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switch::model::*;
use vswitch_cli::client::{encode, Client, ClientError};
use vswitch_cli::table::table;
use vswitch_cli::{routes, StatusInfo, DEFAULT_SOCKET, SOCKET_ENV};

/// vswitchctl: control vswitchd, the userspace virtual switch for network namespaces.
///
/// Quick start:
///   ip netns add a; ip netns add b
///   vswitchctl network create front --subnet 172.20.0.0/24
///   vswitchctl attach a front; vswitchctl attach b front
///   ip netns exec a ping 172.20.0.3
///   vswitchctl capture front -c 10 | tcpdump -nr -
///
/// Errors are one line on stderr with exit status 1 (usage errors: 2).
#[derive(Parser, Debug)]
#[command(version, about, long_about, verbatim_doc_comment)]
struct Cli {
    /// vswitchd's control socket.
    #[arg(long, global = true, env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print JSON (the API's own types) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for vswitchd: connecting, sending the request and reading the whole
    /// answer. Past it, vswitchctl gives up with a one-line error naming the socket (exit 1).
    /// 0 waits for ever. For `capture` it bounds the wait for the stream to start, not the
    /// stream (capture's own --timeout, after the command, says how long to capture). Give it
    /// before the command: vswitchctl --timeout 5 network ls.
    #[arg(long, value_name = "SECONDS", env = TIMEOUT_ENV, default_value = "30", value_parser = parse_timeout, allow_hyphen_values = true)]
    timeout: Timeout,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Environment variable that sets vswitchctl's default `--timeout`.
const TIMEOUT_ENV: &str = "VSWITCH_TIMEOUT";

/// `--timeout`: `None` waits for ever.
#[derive(Debug, Clone, Copy)]
struct Timeout(Option<Duration>);

fn parse_timeout(s: &str) -> Result<Timeout, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!(
            "{s} is out of range: give seconds from 0 (no timeout) to 1e9"
        ));
    }
    Ok(Timeout((secs > 0.0).then(|| Duration::from_secs_f64(secs))))
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create, list, inspect and remove networks.
    #[command(subcommand)]
    Network(NetCmd),
    /// Attach a network namespace to a network: creates its interface (eth0, eth1, ...).
    ///
    /// The namespace must exist (ip netns add NETNS). The interface gets the next free address
    /// of the network (or --ip), a MAC derived from it (or --mac), the network's MTU, and a
    /// default route via the gateway if the namespace has none.
    Attach {
        /// Namespace name, as listed by `ip netns`.
        netns: String,
        /// Network name.
        network: String,
        /// Address in the network's subnet [default: next free].
        #[arg(long)]
        ip: Option<String>,
        /// IPv6 address in the network's IPv6 subnet (dual-stack networks) [default: next
        /// free].
        #[arg(long)]
        ip6: Option<String>,
        /// MAC address [default: 02:42 followed by the four bytes of the IP].
        #[arg(long)]
        mac: Option<String>,
        /// Interface name in the namespace [default: first free of eth0, eth1, ...].
        #[arg(long)]
        ifname: Option<String>,
        /// A further DNS name for this endpoint (repeatable); the namespace name always
        /// resolves at the gateway.
        #[arg(long = "alias", value_name = "NAME")]
        aliases: Vec<String>,
        /// Let the endpoint send from other MAC/IP addresses (a router in the namespace). By
        /// default frames from any address but its own are dropped and counted (spoofed).
        #[arg(long)]
        allow_spoof: bool,
    },
    /// Remove a namespace's interface on a network.
    Detach {
        /// Namespace name.
        netns: String,
        /// Network name.
        network: String,
    },
    /// List switch ports with their counters.
    Ports,
    /// List learned MAC addresses (the forwarding database).
    #[command(args_conflicts_with_subcommands = true)]
    Fdb {
        /// Only this network.
        network: Option<String>,
        #[command(subcommand)]
        cmd: Option<FdbCmd>,
    },
    /// Peer VTEPs of an overlay network: `peer add|rm|ls NETWORK [IP]`.
    #[command(subcommand)]
    Peer(PeerCmd),
    /// Per-port counters and named drop counters.
    Stats,
    /// Follow what happens, as JSON lines: endpoints attached, detached or pending, MACs that
    /// moved between ports (`fdb_moved`), peers added and removed, flood limiting beginning
    /// and ending on a port, a full connection table. The first line (`"type":"listening"`)
    /// says the stream is live; a `"type":"lost"` line counts lines a slow reader missed.
    Events {
        /// Stop after N events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Stop after SECS seconds.
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
    },
    /// The counters and table sizes in Prometheus' text format (what `GET /metrics` answers
    /// here and on `vswitchd --metrics-listen`), for a look at what a scraper gets.
    Metrics,
    /// Live per-port rates: packets, bits and drops per second, redrawn in place.
    ///
    /// Samples the counters (what `stats` shows) every --interval and shows each port's rates
    /// between the last two samples, with the totals and the named drops per second in the
    /// header. Keys: s sorts by the next column, r reverses, q quits. Needs a terminal; --once
    /// prints the rates once instead (vswitchctl --json top --once for scripts).
    #[command(after_help = vswitch_cli::top::AFTER_HELP)]
    Top(vswitch_cli::top::Args),
    /// Whether vswitchd is up and done restoring its saved state; its API connections.
    ///
    /// While vswitchd restores its state after a start, reads answer with what is restored so
    /// far and changes are refused; this says how far it got.
    Status,
    /// The uplink: a host interface through which networks reach the outside (with NAT).
    #[command(subcommand)]
    Uplink(UplinkCmd),
    /// Cluster mode (vswitchd --cluster): the connection to etcd and the nodes.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Publish an endpoint's port on the uplink address (like `docker run -p`).
    ///
    /// SPEC is [IP:][HOSTPORT:]CTRPORT[/tcp|/udp]. Without HOSTPORT a free port >= 32768 is
    /// chosen and printed. Examples:
    ///   vswitchctl publish web 8080:80
    ///   vswitchctl publish dns 5353:53/udp
    ///   vswitchctl publish web 80            # random host port
    #[command(verbatim_doc_comment)]
    Publish {
        /// Namespace of the endpoint.
        netns: String,
        /// [IP:][HOSTPORT:]CTRPORT[/tcp|/udp]
        spec: String,
        /// Which of the namespace's networks [default: the first it joined].
        #[arg(long)]
        network: Option<String>,
    },
    /// Remove a published port: SPEC is [IP:]HOSTPORT[/tcp|/udp].
    Unpublish {
        /// Namespace of the endpoint.
        netns: String,
        /// [IP:]HOSTPORT[/tcp|/udp]
        spec: String,
    },
    /// Trace a packet through the switch as a dry run: it is built (or given), run through the
    /// real datapath code over copies of the tables, and every stage says what it looked up
    /// and decided: port security, FDB, ARP, flood set, policy, route, conntrack, NAT rewrite,
    /// VXLAN encapsulation, the output port(s) or the drop counter. No table changes and
    /// nothing is sent.
    ///
    /// Examples:
    ///   vswitchctl trace ns1 'tcp 10.0.0.2:40000 > 198.51.100.2:80 flags S'
    ///   vswitchctl trace ns1/eth0 'arp who-has 10.0.0.3'
    ///   vswitchctl trace uplink 'tcp 203.0.113.9:5000 > 10.210.0.1:8080 flags S'
    ///   vswitchctl trace ns1 --from-pcap ns1.pcap
    Trace {
        /// Where the packet enters: NETNS, NETNS/IFNAME, a port (p3) or `uplink`.
        from: String,
        /// The packet: 'tcp A:P > B:Q [flags S]', 'udp A:P > B:Q', 'icmp A > B', 'arp who-has
        /// B [tell A]', each optionally with 'len N' (payload bytes) and 'ttl N', and after
        /// 'ether SRC_MAC > DST_MAC'; IPv6 addresses as [ADDR]:PORT. Sent, as the endpoint
        /// would, to the destination's MAC on its own network, else to the gateway.
        #[arg(required_unless_present_any = ["hex", "from_pcap"])]
        packet: Option<String>,
        /// The network, when the namespace is on several.
        #[arg(long)]
        network: Option<String>,
        /// Send to this Ethernet destination instead (an unknown MAC: see the flood).
        #[arg(long, value_name = "MAC")]
        dst_mac: Option<String>,
        /// A whole Ethernet frame in hex instead of a description.
        #[arg(long, value_name = "HEX", conflicts_with_all = ["packet", "from_pcap"])]
        hex: Option<String>,
        /// Trace every frame of this pcap file (Ethernet): each over the switch as it is now
        /// (a trace changes nothing, so frames do not build on each other: a SYN-ACK does not
        /// find the flow its SYN would have made).
        #[arg(long, value_name = "FILE", conflicts_with = "packet")]
        from_pcap: Option<std::path::PathBuf>,
    },
    /// Tracked connections (NAT): `conntrack [ls]`, `conntrack flush`.
    Conntrack {
        /// `ls` (default) or `flush`.
        #[arg(value_parser = ["ls", "flush"], default_value = "ls")]
        action: String,
        /// Only connections of this network.
        #[arg(long)]
        network: Option<String>,
    },
    /// The flow log: one line per connection as conntrack creates it (`new`), as its TCP
    /// state changes (`state`) and as it goes (`destroy`, with packets and bytes each way and
    /// why: timeout, flushed, detached), and one per packet NAT refused (`refused`, with the
    /// reason), like `conntrack -E`. Lines a slow reader missed are counted (`lost`). The
    /// current table is `conntrack ls`.
    ///
    /// Example: vswitchctl flows --follow --netns ns1
    Flows {
        /// Follow (required: the flow log is a stream).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only this network's connections.
        #[arg(long)]
        network: Option<String>,
        /// Only connections of this namespace's addresses.
        #[arg(long)]
        netns: Option<String>,
        /// Stop after N lines.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Stop after SECS seconds.
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
    },
    /// Capture frames as pcap (both directions) from a port, an endpoint or a whole network.
    ///
    /// Examples:
    ///   vswitchctl capture ns1/eth0 -w ns1.pcap --timeout 10
    ///   vswitchctl capture front -c 20 | tcpdump -nr -
    ///
    /// --timeout here is how long to capture; vswitchctl's own --timeout (before the command)
    /// bounds only the wait for the capture to start.
    #[command(verbatim_doc_comment)]
    Capture {
        /// NETNS/IFNAME, a port name (p1), or a network name (frames entering the network).
        target: String,
        /// Write to FILE instead of standard output.
        #[arg(short = 'w', long = "write", value_name = "FILE")]
        write: Option<PathBuf>,
        /// Stop after COUNT frames.
        #[arg(short = 'c', long = "count")]
        count: Option<u64>,
        /// Stop after SECONDS of capture [default: until COUNT frames, or Ctrl-C].
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
    },
}

#[derive(Subcommand, Debug)]
enum FdbCmd {
    /// Add a static remote entry to an overlay network: MAC lives behind VTEP.
    Add {
        /// Overlay network.
        network: String,
        /// MAC address.
        mac: String,
        /// The VTEP's address.
        #[arg(long)]
        vtep: String,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCmd {
    /// This node, the etcd endpoints, whether etcd answers, the revision seen, and the nodes.
    Status,
    /// The nodes: name, VTEP, state (up while its lease holds), endpoints, last seen.
    Nodes,
}

#[derive(Subcommand, Debug)]
enum PeerCmd {
    /// Add a peer VTEP: broadcasts and unknown unicast are replicated to it.
    Add {
        /// Overlay network.
        network: String,
        /// Peer VTEP address.
        ip: String,
    },
    /// Remove a peer VTEP: traffic to and from it stops.
    Rm {
        /// Overlay network.
        network: String,
        /// Peer VTEP address.
        ip: String,
    },
    /// List the peers of an overlay network.
    Ls {
        /// Overlay network.
        network: String,
    },
}

#[derive(Subcommand, Debug)]
enum UplinkCmd {
    /// Take IFACE (for example one end of a veth pair) as the uplink. The switch owns ADDR on
    /// it: it answers ARP for it with its own MAC and resolves next hops itself.
    Set {
        /// Host interface.
        iface: String,
        /// ADDR/PREFIX the switch owns on the uplink, e.g. 192.168.50.2/24; a second --ip with
        /// an IPv6 address (2001:db8:50::2/64) takes the networks' IPv6 out of it too,
        /// masqueraded to that address (NAT66) unless --ipv6-routed.
        #[arg(long, required = true, value_name = "ADDR/PREFIX")]
        ip: Vec<String>,
        /// Next hop for destinations outside that subnet; one per family.
        #[arg(long, value_name = "IP")]
        gateway: Vec<String>,
        /// Route IPv6 without translation: the outside reaches the endpoints' IPv6 addresses
        /// (the operator routes the networks' IPv6 prefixes to the uplink's IPv6 address).
        /// Without it, IPv6 is masqueraded (NAT66), as IPv4 is.
        #[arg(long)]
        ipv6_routed: bool,
    },
    /// Show the uplink and its neighbour cache.
    Show,
    /// Stop using the uplink.
    Rm,
}

#[derive(Subcommand, Debug)]
enum NetCmd {
    /// Create a network: an isolated L2 segment with a gateway address on the switch.
    Create {
        /// Network name.
        name: String,
        /// IPv4 subnet, e.g. 172.20.0.0/24 (must not overlap another network); give a second
        /// --subnet with an IPv6 subnet (fd00:20::/64) for a dual-stack network.
        #[arg(long, required = true, value_name = "CIDR")]
        subnet: Vec<String>,
        /// Gateway address [default: first host address of the subnet]; one per family.
        #[arg(long, value_name = "IP")]
        gateway: Vec<String>,
        /// MTU of the network's endpoints.
        /// Endpoint MTU [default: 1500; overlay networks: the underlay route's MTU minus 50].
        #[arg(long)]
        mtu: Option<u32>,
        /// No egress through the uplink (like `docker network create --internal`).
        #[arg(long)]
        internal: bool,
        /// Whether endpoints may reach each other (`--icc=false`: only the gateway and the
        /// uplink).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
        icc: bool,
        /// VXLAN network identifier: an overlay network spanning hosts (1..=16777215).
        #[arg(long)]
        vni: Option<u32>,
        /// A peer VTEP's underlay address (repeatable; overlay networks).
        #[arg(long = "peer", value_name = "IP")]
        peers: Vec<String>,
        /// VXLAN UDP port (overlay networks) [default: 4789].
        #[arg(long = "port", value_name = "PORT")]
        vxlan_port: Option<u16>,
        /// An overlay network whose VNI the cluster allocates (cluster mode: vswitchd
        /// --cluster). With --cluster, every overlay network is created on every node.
        #[arg(long, conflicts_with = "vni")]
        overlay: bool,
    },
    /// Route between two networks through their gateways, without NAT.
    Link {
        /// One network.
        a: String,
        /// The other.
        b: String,
    },
    /// Undo `network link`.
    Unlink {
        /// One network.
        a: String,
        /// The other.
        b: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls,
    /// Show a network and its endpoints (JSON).
    Inspect {
        /// Network name.
        name: String,
    },
    /// Remove a network (refused while endpoints are attached).
    #[command(alias = "remove")]
    Rm {
        /// Network name.
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string();
            eprintln!("vswitchctl: {}", msg.lines().next().unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), ClientError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| ClientError::Protocol(e.to_string()))?;
    println!("{s}");
    Ok(())
}

const NONE: Option<&()> = None;

/// Print `v` as JSON, or the line `human` makes of it.
/// A trace as people read it: the packet, each stage, each output, the counters, the verdict.
fn trace_text(t: &TraceInfo) -> String {
    let mut out = format!(
        "trace from {} ({}{}): {}\n",
        t.from,
        t.port,
        if t.network.is_empty() {
            String::new()
        } else {
            format!(", network {}", t.network)
        },
        t.packet
    );
    for s in &t.steps {
        out.push_str(&format!("  {:<14} {}\n", s.stage, s.detail));
    }
    for o in &t.outputs {
        let vx = o
            .vxlan
            .as_ref()
            .map(|v| format!(" [{v}]"))
            .unwrap_or_default();
        let what = if o.generated {
            "switch's ARP"
        } else {
            "output"
        };
        out.push_str(&format!("  {what:<14} {}: {}{vx}\n", o.to, o.summary));
    }
    for (d, n) in &t.drops {
        out.push_str(&format!("  {:<14} {d} +{n}\n", "drop"));
    }
    out.push_str(&format!("verdict: {}", t.verdict));
    out
}

fn show<T: serde::Serialize>(
    json: bool,
    v: &T,
    human: impl FnOnce(&T) -> String,
) -> Result<(), ClientError> {
    if json {
        return print_json(v);
    }
    println!("{}", human(v));
    Ok(())
}

/// `GET path`: a list, printed as JSON or as a table (`header`, a row per item).
fn list<T: serde::de::DeserializeOwned + serde::Serialize>(
    c: &Client,
    path: &str,
    json: bool,
    header: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> Result<(), ClientError> {
    let v: Vec<T> = c.call("GET", path, NONE)?;
    if json {
        return print_json(&v);
    }
    print!("{}", table(header, &v, row));
    Ok(())
}

fn run(cli: Cli) -> Result<(), ClientError> {
    let c = Client::new(&cli.socket).with_timeout(cli.timeout.0);
    let r = command(&c, cli.json, cli.cmd);
    // A list read while the daemon restores its state may be incomplete: say so, once, beside
    // the answer (not on a refusal, whose own line already says why).
    if let (Ok(()), Some(progress)) = (&r, c.restoring()) {
        eprintln!(
            "vswitchctl: note: vswitchd is still restoring its saved state ({progress} \
             restored): this answer may be incomplete"
        );
    }
    r
}

/// `secs` (seconds since the epoch) as "now" or "12 s ago".
fn ago(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match now.saturating_sub(secs) {
        0 | 1 => "now".to_string(),
        d => format!("{d} s ago"),
    }
}

/// Split repeated `--subnet`/`--gateway` values by address family: (IPv4, IPv6), at most one
/// each. A value with a ':' is IPv6; the daemon checks the values themselves.
fn by_family(
    flag: &str,
    values: Vec<String>,
) -> Result<(Option<String>, Option<String>), ClientError> {
    let (mut v4, mut v6) = (None, None);
    for v in values {
        let slot = if v.contains(':') { &mut v6 } else { &mut v4 };
        if slot.replace(v).is_some() {
            return Err(ClientError::Api(format!(
                "{flag}: give at most one IPv4 and one IPv6 value"
            )));
        }
    }
    Ok((v4, v6))
}

fn command(c: &Client, json: bool, cmd: Cmd) -> Result<(), ClientError> {
    match cmd {
        Cmd::Network(NetCmd::Create {
            name,
            subnet,
            gateway,
            mtu,
            internal,
            icc,
            vni,
            peers,
            vxlan_port,
            overlay,
        }) => {
            let (subnet, subnet6) = by_family("--subnet", subnet)?;
            let subnet = subnet.ok_or_else(|| {
                ClientError::Api(
                    "--subnet: an IPv4 subnet is needed (IPv6-only networks are not supported)"
                        .into(),
                )
            })?;
            let (gateway, gateway6) = by_family("--gateway", gateway)?;
            let req = NetworkCreate {
                name,
                subnet,
                gateway,
                subnet6,
                gateway6,
                mtu,
                internal,
                icc: Some(icc),
                vni,
                peers,
                vxlan_port,
                overlay,
                cluster: false,
            };
            let n: NetworkInfo = c.call("POST", routes::NETWORKS, Some(&req))?;
            show(json, &n, |n| {
                let v6 = match (&n.subnet6, n.gateway6) {
                    (Some(s), Some(g)) => format!(", subnet {s} gateway {g}"),
                    _ => String::new(),
                };
                format!(
                    "network {} created: subnet {} gateway {}{v6} ({})",
                    n.name, n.subnet, n.gateway, n.gateway_mac
                )
            })?;
        }
        Cmd::Network(NetCmd::Ls) => {
            let header = ["NAME", "SUBNET", "GATEWAY", "MTU", "ENDPOINTS"];
            list(c, routes::NETWORKS, json, &header, |n: &NetworkInfo| {
                let both = |a: String, b: Option<String>| match b {
                    Some(b) => format!("{a},{b}"),
                    None => a,
                };
                vec![
                    n.name.clone(),
                    both(n.subnet.clone(), n.subnet6.clone()),
                    both(n.gateway.to_string(), n.gateway6.map(|g| g.to_string())),
                    n.mtu.to_string(),
                    n.endpoints.len().to_string(),
                ]
            })?;
        }
        Cmd::Network(NetCmd::Inspect { name }) => {
            let n: NetworkInfo = c.call(
                "GET",
                &format!("{}/{}", routes::NETWORKS, encode(&name)),
                NONE,
            )?;
            print_json(&n)?;
        }
        Cmd::Network(NetCmd::Rm { name }) => {
            let () = c.call(
                "DELETE",
                &format!("{}/{}", routes::NETWORKS, encode(&name)),
                NONE,
            )?;
            if !json {
                println!("network {name} removed");
            }
        }
        Cmd::Attach {
            netns,
            network,
            ip,
            ip6,
            mac,
            ifname,
            aliases,
            allow_spoof,
        } => {
            let req = AttachRequest {
                allow_spoof,
                netns,
                network,
                ip,
                ip6,
                mac,
                ifname,
                aliases,
                handoff: false,
            };
            let e: EndpointInfo = c.call("POST", routes::ENDPOINTS, Some(&req))?;
            show(json, &e, |e| {
                let v6 = e.ip6.map(|a| format!(" {a}")).unwrap_or_default();
                format!(
                    "{} {}: {} {}/{}{v6} mac {} mtu {} (port {})",
                    e.netns, e.network, e.ifname, e.ip, e.prefix_len, e.mac, e.mtu, e.port
                )
            })?;
        }
        Cmd::Detach { netns, network } => {
            let () = c.call(
                "DELETE",
                &format!(
                    "{}/{}/{}",
                    routes::ENDPOINTS,
                    encode(&netns),
                    encode(&network)
                ),
                NONE,
            )?;
            if !json {
                println!("{netns} detached from {network}");
            }
        }
        Cmd::Network(NetCmd::Link { a, b }) => {
            let req = LinkRequest { peer: b.clone() };
            let () = c.call(
                "POST",
                &format!("{}/{}/links", routes::NETWORKS, encode(&a)),
                Some(&req),
            )?;
            if !json {
                println!("networks {a} and {b} linked");
            }
        }
        Cmd::Network(NetCmd::Unlink { a, b }) => {
            let () = c.call(
                "DELETE",
                &format!("{}/{}/links/{}", routes::NETWORKS, encode(&a), encode(&b)),
                NONE,
            )?;
            if !json {
                println!("networks {a} and {b} unlinked");
            }
        }
        Cmd::Uplink(UplinkCmd::Set {
            iface,
            ip,
            gateway,
            ipv6_routed,
        }) => {
            let (ip, ip6) = by_family("--ip", ip)?;
            let ip = ip.ok_or_else(|| {
                ClientError::Api("--ip: an IPv4 address is needed (ADDR/PREFIX)".into())
            })?;
            let (gateway, gateway6) = by_family("--gateway", gateway)?;
            let req = UplinkSet {
                iface,
                ip,
                gateway,
                ip6,
                gateway6,
                ipv6_routed,
            };
            let u: UplinkInfo = c.call("PUT", routes::UPLINK, Some(&req))?;
            show(json, &u, uplink_line)?;
        }
        Cmd::Uplink(UplinkCmd::Show) => {
            let u: UplinkInfo = c.call("GET", routes::UPLINK, NONE)?;
            let header = ["NEIGHBOUR", "MAC", "AGE"];
            let neighbours = table(&header, &u.neighbours, |n| {
                vec![n.ip.to_string(), n.mac.clone(), format!("{}s", n.age_secs)]
            });
            show(json, &u, |u| {
                format!("{}\n{}", uplink_line(u), neighbours.trim_end())
            })?;
        }
        Cmd::Uplink(UplinkCmd::Rm) => {
            let () = c.call("DELETE", routes::UPLINK, NONE)?;
            if !json {
                println!("uplink removed");
            }
        }
        Cmd::Publish {
            netns,
            spec,
            network,
        } => {
            let p: PublishInfo = c.call(
                "POST",
                routes::PUBLISH,
                Some(&PublishRequest {
                    netns,
                    spec,
                    network,
                }),
            )?;
            if json {
                return print_json(&p);
            }
            let ip = match p.ip {
                None => "uplink".to_string(),
                Some(std::net::IpAddr::V6(i)) => format!("[{i}]"),
                Some(i) => i.to_string(),
            };
            let to6 = p
                .endpoint_ip6
                .map_or_else(String::new, |a| format!(", [{a}]:{}", p.endpoint_port));
            println!(
                "{ip}:{}/{} -> {} {}:{}{to6} ({})",
                p.host_port, p.proto, p.netns, p.endpoint_ip, p.endpoint_port, p.network
            );
        }
        Cmd::Unpublish { netns, spec } => {
            let () = c.call(
                "DELETE",
                routes::PUBLISH,
                Some(&UnpublishRequest {
                    netns: netns.clone(),
                    spec: spec.clone(),
                }),
            )?;
            if !json {
                println!("{spec} of {netns} unpublished");
            }
        }
        Cmd::Trace {
            from,
            packet,
            network,
            dst_mac,
            hex,
            from_pcap,
        } => {
            let req = |packet: Option<String>, frame: Option<String>| TraceRequest {
                from: from.clone(),
                network: network.clone(),
                packet,
                frame,
                dst_mac: dst_mac.clone(),
            };
            let Some(file) = from_pcap else {
                let t: TraceInfo = c.call("POST", routes::TRACE, Some(&req(packet, hex)))?;
                return show(json, &t, trace_text);
            };
            let data = std::fs::read(&file)
                .map_err(|e| ClientError::Api(format!("--from-pcap {}: {e}", file.display())))?;
            let frames = vswitch_cli::pcap::frames(&data)
                .map_err(|e| ClientError::Api(format!("--from-pcap {}: {e}", file.display())))?;
            let mut all = Vec::new();
            for (i, f) in frames.iter().enumerate() {
                let hex = switch::packet_spec::hex(f);
                let t: TraceInfo = c.call("POST", routes::TRACE, Some(&req(None, Some(hex))))?;
                if !json {
                    println!("packet {}:\n{}\n", i + 1, trace_text(&t));
                }
                all.push(t);
            }
            if json {
                print_json(&all)?;
            }
        }
        Cmd::Conntrack { action, network } => {
            let path = filtered(routes::CONNTRACK, network.as_deref());
            if action == "flush" {
                let f: FlushInfo = c.call("DELETE", &path, NONE)?;
                show(json, &f, |f| format!("{} connection(s) flushed", f.flushed))?;
                return Ok(());
            }
            let header = [
                "PROTO", "NAT", "NETWORK", "ORIGINAL", "REPLY", "STATE", "EXPIRES",
            ];
            list(c, &path, json, &header, |e: &ConntrackEntry| {
                vec![
                    e.proto.clone(),
                    e.kind.clone(),
                    e.network.clone(),
                    e.orig.clone(),
                    e.reply.clone(),
                    e.state.clone(),
                    format!("{}s", e.expires_secs),
                ]
            })?;
        }
        Cmd::Ports => list(c, routes::PORTS, json, &PORT_HEADER, port_row)?,
        Cmd::Fdb {
            cmd: Some(FdbCmd::Add { network, mac, vtep }),
            ..
        } => {
            let () = c.call(
                "POST",
                routes::FDB,
                Some(&FdbAdd {
                    network: network.clone(),
                    mac: mac.clone(),
                    vtep: vtep.clone(),
                }),
            )?;
            if !json {
                println!("{mac} -> VTEP {vtep} added to {network}");
            }
        }
        Cmd::Peer(cmd) => {
            let n: NetworkInfo = match &cmd {
                PeerCmd::Add { network, ip } => c.call(
                    "POST",
                    &format!("{}/{}/peers", routes::NETWORKS, encode(network)),
                    Some(&PeerRequest { ip: ip.clone() }),
                )?,
                PeerCmd::Rm { network, ip } => c.call(
                    "DELETE",
                    &format!(
                        "{}/{}/peers/{}",
                        routes::NETWORKS,
                        encode(network),
                        encode(ip)
                    ),
                    NONE,
                )?,
                PeerCmd::Ls { network } => c.call(
                    "GET",
                    &format!("{}/{}", routes::NETWORKS, encode(network)),
                    NONE,
                )?,
            };
            if json {
                return print_json(&n.peers);
            }
            print!("{}", table(&["PEER"], &n.peers, |p| vec![p.to_string()]));
        }
        Cmd::Fdb { network, cmd: None } => {
            let path = filtered(routes::FDB, network.as_deref());
            let header = ["NETWORK", "MAC", "PORT", "VTEP", "AGE"];
            list(c, &path, json, &header, |e: &FdbEntryInfo| {
                vec![
                    e.network.clone(),
                    e.mac.clone(),
                    e.port.clone(),
                    e.vtep.map_or_else(|| "-".to_string(), |v| v.to_string()),
                    format!("{}s", e.age_secs),
                ]
            })?;
        }
        Cmd::Cluster(cmd) => {
            let s: ClusterInfo = c.call("GET", routes::CLUSTER, NONE)?;
            let nodes = |s: &ClusterInfo| {
                table(
                    &["NODE", "VTEP", "STATE", "ENDPOINTS", "LAST SEEN"],
                    &s.nodes,
                    |n| {
                        vec![
                            if n.me {
                                format!("{} (this node)", n.name)
                            } else {
                                n.name.clone()
                            },
                            format!("{}:{}", n.vtep, n.port),
                            n.state.clone(),
                            n.endpoints.to_string(),
                            ago(n.last_seen),
                        ]
                    },
                )
            };
            match cmd {
                ClusterCmd::Nodes if json => return print_json(&s.nodes),
                ClusterCmd::Nodes => print!("{}", nodes(&s)),
                ClusterCmd::Status => show(json, &s, |s| {
                    let conn = if s.connected {
                        "connected".to_string()
                    } else {
                        format!(
                            "NOT connected ({})",
                            s.error.as_deref().unwrap_or("not yet contacted")
                        )
                    };
                    format!(
                        "node {} (VTEP {}), etcd {}: {conn}; revision {}, lease {} (TTL {} s); \
                         {} cluster network(s), {} endpoint(s) in the directory, {} key(s) \
                         skipped\n{}",
                        s.node,
                        s.vtep,
                        s.etcd.join(","),
                        s.revision,
                        if s.lease.is_empty() { "none" } else { &s.lease },
                        s.ttl,
                        s.networks,
                        s.endpoints,
                        s.skipped,
                        nodes(s).trim_end()
                    )
                })?,
            }
        }
        Cmd::Status => {
            let s: StatusInfo = c.call("GET", routes::STATUS, NONE)?;
            show(json, &s, |s| {
                let state = if s.restoring {
                    format!(
                        "restoring its saved state ({} of {} restored)",
                        s.restored, s.total
                    )
                } else {
                    "running".to_string()
                };
                format!(
                    "vswitchd {}: {state}; {} network(s), {} endpoint(s); API: {} of at most {} \
                     connection(s) open, {} refused, {} idle closed for room, {} timed out",
                    s.version,
                    s.networks,
                    s.endpoints,
                    s.api.connections,
                    s.api.max_connections,
                    s.api.refused,
                    s.api.closed_idle,
                    s.api.timed_out
                )
            })?;
        }
        Cmd::Events { count, timeout } => {
            let mut q = Vec::new();
            if let Some(n) = count {
                q.push(format!("count={n}"));
            }
            if let Some(t) = timeout {
                q.push(format!("timeout={t}"));
            }
            let path = if q.is_empty() {
                routes::EVENTS.to_string()
            } else {
                format!("{}?{}", routes::EVENTS, q.join("&"))
            };
            let mut out = std::io::stdout().lock();
            c.stream(&path, &mut out)?;
        }
        Cmd::Flows {
            follow,
            network,
            netns,
            count,
            timeout,
        } => {
            if !follow {
                return Err(ClientError::Api(
                    "flows is a stream: add --follow (the current table is `vswitchctl \
                     conntrack ls`)"
                        .into(),
                ));
            }
            // The namespace's addresses, to match in the tuples.
            let addrs: Option<Vec<String>> = match &netns {
                Some(ns) => {
                    let ports: Vec<PortInfo> = c.call("GET", routes::PORTS, NONE)?;
                    let mine: Vec<String> = ports
                        .iter()
                        .filter(|p| &p.netns == ns)
                        .flat_map(|p| {
                            std::iter::once(format!("{}:", p.ip))
                                .chain(p.ip6.map(|a| format!("[{a}]:")))
                        })
                        .collect();
                    if mine.is_empty() {
                        return Err(ClientError::Api(format!(
                            "namespace '{ns}' has no endpoint"
                        )));
                    }
                    Some(mine)
                }
                None => None,
            };
            let mut q = Vec::new();
            if let Some(n) = count {
                q.push(format!("count={n}"));
            }
            if let Some(t) = timeout {
                q.push(format!("timeout={t}"));
            }
            let path = format!("{}?{}", routes::FLOWS, q.join("&"));
            let mut out = FlowLines {
                out: std::io::stdout().lock(),
                buf: Vec::new(),
                json,
                network,
                addrs,
            };
            c.stream(&path, &mut out)?;
        }
        Cmd::Metrics => {
            let mut out = std::io::stdout().lock();
            c.stream(routes::METRICS, &mut out)?;
        }
        Cmd::Top(args) => vswitch_cli::top::run(c, json, &args)?,
        Cmd::Stats => {
            let s: StatsInfo = c.call("GET", routes::STATS, NONE)?;
            if json {
                return print_json(&s);
            }
            let count = |(k, v): (&String, &u64)| vec![k.clone(), v.to_string()];
            print!("{}", table(&PORT_HEADER, &s.ports, port_row));
            println!();
            print!("{}", table(&["DROP", "FRAMES"], &s.drops, count));
            println!();
            print!("{}", table(&["EVENT", "COUNT"], &s.events, count));
        }
        Cmd::Capture {
            target,
            write,
            count,
            timeout,
        } => {
            let mut path = format!("{}?target={}", routes::CAPTURE, encode(&target));
            if let Some(n) = count {
                path.push_str(&format!("&count={n}"));
            }
            if let Some(t) = timeout {
                if !(t.is_finite() && t >= 0.0) {
                    return Err(ClientError::Api(format!(
                        "invalid --timeout {t}: give a number of seconds >= 0"
                    )));
                }
                path.push_str(&format!("&timeout={t}"));
            }
            match write {
                Some(p) => {
                    let mut f = File::create(&p).map_err(|e| {
                        ClientError::Api(format!("cannot create {}: {e}", p.display()))
                    })?;
                    c.stream(&path, &mut f)?;
                }
                None => {
                    let stdout = io::stdout();
                    let mut lock = stdout.lock();
                    c.stream(&path, &mut lock)?;
                    let _ = lock.flush();
                }
            }
        }
    }
    Ok(())
}

/// One line describing the uplink.
fn uplink_line(u: &UplinkInfo) -> String {
    let gw = u.gateway.map_or(String::new(), |g| format!(" gateway {g}"));
    let state = match &u.reason {
        Some(r) => format!(" {} ({r})", u.state),
        None => format!(" {}", u.state),
    };
    let v6 = match (u.ip6, u.prefix6_len) {
        (Some(a), Some(l)) => {
            let g = u
                .gateway6
                .map_or(String::new(), |g| format!(" gateway {g}"));
            let mode = if u.ipv6_routed { "routed" } else { "nat66" };
            format!(", {a}/{l}{g} ({mode})")
        }
        _ => String::new(),
    };
    format!(
        "uplink {}: {}/{} mac {}{gw}{v6}{state}",
        u.iface, u.ip, u.prefix_len, u.mac
    )
}

/// `ROUTE` or `ROUTE?network=NAME`.
fn filtered(route: &str, network: Option<&str>) -> String {
    match network {
        Some(n) => format!("{route}?network={}", encode(n)),
        None => route.to_string(),
    }
}

/// The columns of `ports` and `stats`.
const PORT_HEADER: [&str; 13] = [
    "PORT",
    "NETNS",
    "IFNAME",
    "NETWORK",
    "MAC",
    "IP",
    "STATE",
    "RX_PKTS",
    "RX_BYTES",
    "TX_PKTS",
    "TX_BYTES",
    "TX_DROP",
    "PUBLISHED",
];

fn port_row(p: &PortInfo) -> Vec<String> {
    vec![
        p.name.clone(),
        p.netns.clone(),
        p.ifname.clone(),
        p.network.clone(),
        p.mac.clone(),
        // Both families of a dual-stack endpoint in one column.
        match p.ip6 {
            Some(a) => format!("{},{a}", p.ip),
            None => p.ip.to_string(),
        },
        match &p.reason {
            Some(r) => format!("{} ({r})", p.state),
            None => p.state.clone(),
        },
        p.counters.rx_packets.to_string(),
        p.counters.rx_bytes.to_string(),
        p.counters.tx_packets.to_string(),
        p.counters.tx_bytes.to_string(),
        p.counters.tx_dropped.to_string(),
        if p.published.is_empty() {
            "-".to_string()
        } else {
            p.published.join(",")
        },
    ]
}

/// The flow log's lines on their way to stdout: filtered by network and namespace addresses,
/// as they are (`--json`) or one readable line each.
struct FlowLines<W: std::io::Write> {
    out: W,
    buf: Vec<u8>,
    json: bool,
    network: Option<String>,
    addrs: Option<Vec<String>>,
}

impl<W: std::io::Write> FlowLines<W> {
    fn line(&mut self, l: &[u8]) -> std::io::Result<()> {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(l) else {
            return Ok(());
        };
        let kind = v["type"].as_str().unwrap_or("");
        let meta = kind == "listening" || kind == "lost";
        if !meta {
            if let Some(n) = &self.network {
                if v["network"].as_str() != Some(n) {
                    return Ok(());
                }
            }
            if let Some(addrs) = &self.addrs {
                // Each tuple is `ADDR:PORT -> ADDR:PORT`: an end matches when it starts with
                // one of the namespace's `ADDR:` (exactly: 10.0.0.1 is not 110.0.0.1).
                let mine = ["orig", "reply", "packet", "to"]
                    .iter()
                    .filter_map(|k| v[*k].as_str())
                    .flat_map(|t| t.split(" -> "))
                    .any(|end| addrs.iter().any(|a| end.starts_with(a.as_str())));
                if !mine {
                    return Ok(());
                }
            }
        }
        if self.json {
            self.out.write_all(l)?;
            return self.out.write_all(b"\n");
        }
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        let text = match kind {
            "listening" => "following the flow log".to_string(),
            "lost" => format!("lost {} lines (reading too slowly)", v["count"]),
            "new" => format!(
                "new     {} {} {} {} | reply {}",
                s("proto"),
                s("nat"),
                s("network"),
                s("orig"),
                s("reply")
            ),
            "state" => format!(
                "state   {} {} {} -> {}",
                s("proto"),
                s("network"),
                s("packet"),
                s("state")
            ),
            "destroy" => format!(
                "destroy {} {} {} {} ({}, {}) packets {}/{} bytes {}/{}",
                s("proto"),
                s("nat"),
                s("network"),
                s("orig"),
                s("state"),
                s("reason"),
                v["packets"]["orig"],
                v["packets"]["reply"],
                v["bytes"]["orig"],
                v["bytes"]["reply"]
            ),
            "refused" => format!(
                "refused {} {} {} ({})",
                s("proto"),
                s("network"),
                s("packet"),
                s("reason")
            ),
            other => format!("{other} {v}"),
        };
        writeln!(self.out, "{text}")
    }
}

impl<W: std::io::Write> std::io::Write for FlowLines<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            let l: Vec<u8> = self.buf.drain(..=i).collect();
            self.line(&l[..l.len() - 1])?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
