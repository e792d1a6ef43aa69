//! `vswitchd`: the vswitch daemon. Runs in the foreground, logs to stderr, serves the control API
//! on a Unix socket, and on SIGINT/SIGTERM removes every device it created and exits (with
//! `--live-restore` it keeps them, and the next start takes them back).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use switch::control::StateDirLock;
use switch::{Options, Switch};
use vswitch_cli::{server, DEFAULT_SOCKET, SOCKET_ENV};

/// vswitchd: a userspace virtual switch for Linux network namespaces.
///
/// Creates a TAP endpoint in each attached namespace and switches frames between them in
/// userspace (MAC learning, ARP, the gateway). Control it with vswitchctl.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Control socket (HTTP/JSON, mode 0600).
    #[arg(long, env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Directory for persisted state (networks and endpoints are recreated on restart).
    #[arg(long, default_value = "/var/lib/vswitchd")]
    state_dir: PathBuf,
    /// Datapath worker threads [default: number of cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
    /// Seconds a learned MAC address stays in the forwarding table without traffic.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    fdb_aging: u64,
    /// Broadcast/unknown-unicast frames per second one port may flood (excess is dropped and
    /// counted as flood_limited).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    flood_rate: u64,
    /// Maximum learned MAC addresses per network (local and remote tables each); beyond it
    /// sources are not learned and the drop is counted (fdb_full).
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    fdb_max: u64,
    /// Maximum tracked connections (NAT); new flows beyond it are dropped and counted
    /// (conntrack_full).
    #[arg(long, alias = "conntrack-max", default_value_t = 262_144, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    ct_max: u64,
    /// Seconds an established TCP connection lives without traffic.
    #[arg(long, default_value_t = 432_000, value_parser = clap::value_parser!(u64).range(1..))]
    ct_tcp_timeout: u64,
    /// Seconds a UDP flow lives without traffic before it was answered.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    ct_udp_timeout: u64,
    /// Seconds an answered UDP flow lives without traffic.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    ct_udp_stream_timeout: u64,
    /// Seconds an ICMP echo flow lives without traffic.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    ct_icmp_timeout: u64,
    /// Local VTEP address: source of VXLAN packets and the address the VXLAN socket binds;
    /// an IPv6 address makes an IPv6 underlay (peers are then IPv6 addresses too)
    /// [default: the kernel picks the source of the route to each peer, over IPv4].
    #[arg(long, value_name = "IP")]
    underlay_ip: Option<std::net::IpAddr>,
    /// Serve `GET /metrics` (Prometheus' text format) on this TCP address too, for a scraper
    /// (the API socket answers `GET /metrics` as well). Loopback only unless
    /// --metrics-listen-any.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Let --metrics-listen take an address other than loopback (the counters name every
    /// namespace and network).
    #[arg(long, requires = "metrics_listen")]
    metrics_listen_any: bool,
    /// Serve Docker's network plugin protocol (a remote network driver and IPAM driver) on this
    /// socket, where dockerd finds it: `docker network create -d vswitch --ipam-driver vswitch
    /// NET`. The drivers' name is the socket's file name without `.sock`; the IPAM driver's
    /// pools are kept in the state directory (docker-ipam.json). `-o network=NAME` puts the
    /// Docker network on vswitch network NAME (in cluster mode, one network across hosts).
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = vswitch_cli::docker::DEFAULT_PLUGIN_SOCKET)]
    docker_plugin: Option<PathBuf>,
    /// Cluster mode: join the cluster whose state is in etcd at these client URLs
    /// (`etcd://HOST:PORT[,HOST:PORT...]`, several members for failover). Overlay networks then
    /// are cluster objects: created once, on every host; VNIs and addresses allocated
    /// cluster-wide; peers, remote MACs and DNS names learned from the other nodes. Needs
    /// --underlay-ip (where the other nodes send this node's VXLAN).
    #[arg(long, value_name = "URLS")]
    cluster: Option<String>,
    /// This node's name in the cluster (unique) [default: the host name].
    #[arg(long, value_name = "NAME", requires = "cluster")]
    node: Option<String>,
    /// Seconds a node may be silent before every other node drops it (its etcd lease's TTL).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(2..=3600), requires = "cluster")]
    cluster_ttl: u64,
    /// Key prefix of the cluster's state in etcd (several clusters can share one etcd).
    #[arg(
        long,
        default_value = "/vswitch/",
        value_name = "PREFIX",
        requires = "cluster"
    )]
    cluster_prefix: String,
    /// Keep the endpoints' devices when vswitchd stops or crashes (persistent TAPs stay in
    /// their namespaces with their addresses), and take them back by name on the next start:
    /// traffic resumes as soon as the new daemon runs. Without it, stopping removes every
    /// device and the next start recreates them.
    #[arg(long)]
    live_restore: bool,
    /// Queues per endpoint TAP, each served by its own worker [default: one per worker].
    /// With 1, each endpoint is served by one worker (the least loaded when it attached).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    tap_queues: Option<u16>,
    /// Microseconds a worker keeps polling its ports after the last frame before it sleeps.
    /// Saves a thread wake-up per hop: on the 2-core test VM it halves the round trip and adds
    /// 10-20% to one TCP stream, at the price of CPU time while traffic trickles (a worker
    /// that sees a frame every 50 µs or more often never sleeps). 0 turns it off.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    poll_us: u32,
    /// Seconds an API client has to send a complete request head, from connecting (or, on a
    /// kept-alive connection, from the first byte of the next request), and as long again for
    /// its body; past it the connection is closed. Keeps a client that connects and says
    /// nothing from holding a connection.
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    api_header_timeout: u64,
    /// Seconds a kept-alive API connection may sit between requests before it is closed. A
    /// response being sent (a capture streaming, however quiet) is not idle.
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    api_idle_timeout: u64,
    /// API connections served at once (at most half the open-file limit, which vswitchd raises
    /// to its hard limit at start). At the cap, the longest-idle connection is closed to make
    /// room; when every connection is busy, a new one is refused at once with a one-line error.
    #[arg(long, default_value_t = 1024, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    api_max_connections: u64,
}

/// The cluster options, checked: a VTEP address is needed, the node name is one the keys can
/// hold.
fn cluster_options(args: &Args) -> Result<Option<switch::cluster::ClusterOptions>, String> {
    let Some(urls) = &args.cluster else {
        return Ok(None);
    };
    let vtep = args.underlay_ip.ok_or(
        "--cluster needs --underlay-ip: the address the other nodes send this node's VXLAN to",
    )?;
    let node = match &args.node {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .map_err(|e| format!("--node not given and the host name is unreadable: {e}"))?,
    };
    switch::error::check_name("node", &node, 64).map_err(|e| e.to_string())?;
    if !args.cluster_prefix.starts_with('/') {
        return Err(format!(
            "--cluster-prefix '{}' must start with '/'",
            args.cluster_prefix
        ));
    }
    Ok(Some(switch::cluster::ClusterOptions {
        urls: urls.clone(),
        node,
        vtep,
        ttl: Duration::from_secs(args.cluster_ttl),
        prefix: args.cluster_prefix.clone(),
    }))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitchd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The API's limits from the options, with the connection cap kept to half the open-file limit
/// (raised to the hard limit first): the other half is left for the devices and sockets.
fn api_limits(args: &Args) -> server::Limits {
    let nofile = match switch::sys::rlimit::raise_nofile() {
        Ok((before, after)) => {
            if after > before {
                log::info!("open-file limit raised from {before} to {after}");
            }
            after
        }
        Err(e) => {
            let soft = switch::sys::rlimit::nofile().map_or(1024, |(soft, _)| soft);
            log::warn!("raising the open-file limit failed: {e}; it stays at {soft}");
            soft
        }
    };
    let wanted = usize::try_from(args.api_max_connections).unwrap_or(usize::MAX);
    let room = usize::try_from(nofile / 2).unwrap_or(usize::MAX).max(1);
    if wanted > room {
        log::warn!(
            "--api-max-connections {wanted} lowered to {room}: half the open-file limit \
             ({nofile}), the rest is for devices and sockets"
        );
    }
    server::Limits {
        header_timeout: Duration::from_secs(args.api_header_timeout),
        idle_timeout: Duration::from_secs(args.api_idle_timeout),
        max_connections: wanted.min(room),
    }
}

fn run(args: Args) -> Result<(), String> {
    let workers = args
        .workers
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let cluster = cluster_options(&args)?;
    if let Some(a) = args.metrics_listen {
        if !a.ip().is_loopback() && !args.metrics_listen_any {
            return Err(format!(
                "--metrics-listen {a}: not a loopback address (the metrics name every namespace \
                 and network); add --metrics-listen-any to serve them there"
            ));
        }
    }
    std::fs::create_dir_all(&args.state_dir).map_err(|e| {
        format!(
            "create state directory {} failed: {e}",
            args.state_dir.display()
        )
    })?;
    // Before anything else: one daemon per state directory (two would hand out the same
    // addresses and overwrite each other's state file).
    let _lock = StateDirLock::acquire(&args.state_dir).map_err(|e| e.to_string())?;
    let limits = api_limits(&args);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // The control verbs run on blocking threads and queue on the control lock anyway: more
        // threads than this would only wait there (and 300 captures starting at once would
        // otherwise start up to 512 of them).
        .max_blocking_threads(16)
        .build()
        .map_err(|e| format!("start runtime failed: {e}"))?;
    rt.block_on(async move {
        // Bind first: a second daemon on the same socket must fail before touching any device.
        let listener = server::listen(&args.socket).map_err(|e| e.to_string())?;
        let opts = Options {
            workers,
            fdb_aging: Duration::from_secs(args.fdb_aging),
            state_dir: Some(args.state_dir.clone()),
            flood_rate: args.flood_rate,
            ct_max: usize::try_from(args.ct_max).unwrap_or(usize::MAX),
            ct_timeouts: nat::Timeouts {
                tcp_established: args.ct_tcp_timeout * 1000,
                udp: args.ct_udp_timeout * 1000,
                udp_stream: args.ct_udp_stream_timeout * 1000,
                icmp: args.ct_icmp_timeout * 1000,
                ..nat::Timeouts::default()
            },
            underlay_ip: args.underlay_ip,
            fdb_limit: usize::try_from(args.fdb_max).unwrap_or(usize::MAX),
            live_restore: args.live_restore,
            tap_queues: args.tap_queues.map_or(0, usize::from),
            poll: std::time::Duration::from_micros(u64::from(args.poll_us)),
            cluster,
        };
        let sw = tokio::task::spawn_blocking(move || Switch::start(opts))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        log::info!(
            "vswitchd {} listening on {} ({workers} workers, state in {}; API: at most {} \
             connections, header timeout {} s, idle timeout {} s)",
            env!("CARGO_PKG_VERSION"),
            args.socket.display(),
            args.state_dir.display(),
            limits.max_connections,
            limits.header_timeout.as_secs(),
            limits.idle_timeout.as_secs()
        );
        if let Some(addr) = args.metrics_listen {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
            log::info!("metrics on http://{addr}/metrics");
            let app = server::metrics_router(sw.clone());
            let l = server::CappedListener::new(l, server::METRICS_MAX_CONNECTIONS);
            tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).await {
                    log::error!("metrics listener stopped: {e}");
                }
            });
        }
        if let Some(path) = &args.docker_plugin {
            let app = vswitch_cli::docker::router(sw.clone(), Some(&args.state_dir))
                .map_err(|e| format!("--docker-plugin: {e}"))?;
            let plugin = server::listen(path).map_err(|e| format!("--docker-plugin: {e}"))?;
            log::info!("Docker network plugin listening on {}", path.display());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(plugin, app).await {
                    log::error!("Docker network plugin stopped: {e}");
                }
            });
        }
        let conns = Arc::new(server::Connections::new(limits));
        let app = server::router_with(sw.clone(), conns.clone());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        tokio::select! {
            () = server::serve(listener, app, conns) => {}
            _ = term.recv() => log::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => log::info!("SIGINT: shutting down"),
        }
        let _ = std::fs::remove_file(&args.socket);
        if let Some(path) = &args.docker_plugin {
            let _ = std::fs::remove_file(path);
        }
        tokio::task::spawn_blocking(move || sw.shutdown())
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}
