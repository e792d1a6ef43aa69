//! The control plane: networks, endpoints (attach/detach), capture sessions and table dumps.
//!
//! Control operations serialise on one mutex; the datapath never takes it. After each change a
//! new [`Config`] snapshot is built and swapped in atomically. State is persisted to
//! `STATE_DIR/state.json` (written to a temporary file and renamed) so a restarted daemon
//! recreates its networks and endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::capture::{Session, Taps};
use crate::counters::WorkerCounters;
use crate::datapath::{Config, NeighTable, NetRt, Published, Shared, UplinkRt, Worker};
use crate::error::{check_name, Error};
use crate::fdb::{Fdb, PortId};
use crate::ipam::{parse_ipv4, Ipv4Cidr, Pool};
use crate::model::*;
use crate::neigh::NeighCache;
use crate::port::{Device, FloodLimiter, NetId, Port, PortStats};
use crate::sys::epoll::Epoll;
use crate::sys::netlink::{LinkChange, Netlink};
use crate::sys::netns::Netns;
use crate::sys::packet::PacketQueues;
use crate::sys::tap::Tap;
use crate::wire::{MacAddr, VirtioNetHdr};
use nat::{Conntrack, Proto, Timeouts};
use overlay::RemoteFdb;

mod persist;

/// Daemon-wide settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker threads.
    pub workers: usize,
    /// FDB aging time.
    pub fdb_aging: Duration,
    /// Where state is persisted; `None` keeps nothing.
    pub state_dir: Option<PathBuf>,
    /// Frames per second a port may flood (broadcast and unknown unicast).
    pub flood_rate: u64,
    /// Maximum learned MACs per network.
    pub fdb_limit: usize,
    /// Maximum tracked connections.
    pub ct_max: usize,
    /// Connection-tracking timeouts.
    pub ct_timeouts: Timeouts,
    /// Local VTEP address (the source of VXLAN packets); `None` lets the kernel pick per route.
    pub underlay_ip: Option<Ipv4Addr>,
    /// Keep endpoint devices when the daemon stops or dies (persistent TAPs), and take them back
    /// by name on the next start.
    pub live_restore: bool,
    /// Queues per endpoint TAP (at most one per worker; 0: one per worker).
    pub tap_queues: usize,
    /// How long a worker keeps polling its ports after the last frame before it sleeps.
    pub poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 1,
            fdb_aging: Duration::from_secs(300),
            state_dir: None,
            flood_rate: 20_000,
            fdb_limit: 65_536,
            ct_max: 262_144,
            ct_timeouts: Timeouts::default(),
            underlay_ip: None,
            live_restore: false,
            tap_queues: 0,
            poll: Duration::from_micros(50),
        }
    }
}

struct Endpoint {
    netns: String,
    ifname: String,
    aliases: Vec<String>,
    port: Arc<Port>,
}

struct Net {
    id: NetId,
    name: String,
    subnet: Ipv4Cidr,
    gateway: Ipv4Addr,
    gateway_mac: MacAddr,
    mtu: u32,
    pool: Pool,
    fdb: Arc<Fdb>,
    neigh: Arc<NeighTable>,
    taps: Arc<Taps>,
    endpoints: Vec<Endpoint>,
    internal: bool,
    icc: bool,
    links: BTreeSet<String>,
    /// Overlay: VNI, peer VTEPs, VXLAN port, remote MACs.
    vni: Option<u32>,
    peers: BTreeSet<Ipv4Addr>,
    vxlan_port: u16,
    remote: Arc<RemoteFdb>,
    probes: Arc<NeighCache>,
}

impl Net {
    fn info(&self, published: &[PublishState]) -> NetworkInfo {
        NetworkInfo {
            name: self.name.clone(),
            subnet: self.subnet.to_string(),
            gateway: self.gateway,
            gateway_mac: self.gateway_mac.to_string(),
            mtu: self.mtu,
            internal: self.internal,
            icc: self.icc,
            links: self.links.iter().cloned().collect(),
            vni: self.vni,
            peers: self.peers.iter().copied().collect(),
            vxlan_port: self.vni.map(|_| self.vxlan_port),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| self.endpoint_info(e))
                .collect(),
            published: published
                .iter()
                .filter(|p| p.network == self.name)
                .filter_map(|p| p.info(self))
                .collect(),
        }
    }

    fn endpoint_ip(&self, netns: &str) -> Option<Ipv4Addr> {
        self.endpoints
            .iter()
            .find(|e| e.netns == netns)
            .map(|e| e.port.ip)
    }

    fn endpoint_info(&self, e: &Endpoint) -> EndpointInfo {
        EndpointInfo {
            netns: e.netns.clone(),
            network: self.name.clone(),
            ifname: e.ifname.clone(),
            port: e.port.name.clone(),
            ip: e.port.ip,
            prefix_len: self.subnet.prefix_len(),
            mac: e.port.mac.to_string(),
            mtu: self.mtu,
            aliases: e.aliases.clone(),
            allow_spoof: !e.port.spoof_check,
        }
    }

    /// DNS names of this network's endpoints (namespace names and aliases, lower case).
    fn names(&self) -> impl Iterator<Item = (String, Ipv4Addr)> + '_ {
        self.endpoints.iter().flat_map(|e| {
            std::iter::once(&e.netns)
                .chain(e.aliases.iter())
                .map(|n| (n.to_ascii_lowercase(), e.port.ip))
        })
    }
}

/// The uplink: a host interface taken as an AF_PACKET port.
struct UplinkState {
    req: UplinkSet,
    ip: Ipv4Addr,
    subnet: Ipv4Cidr,
    gateway: Option<Ipv4Addr>,
    port: Arc<Port>,
    neigh: Arc<NeighCache>,
    resolver: Option<Ipv4Addr>,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PublishState {
    netns: String,
    network: String,
    proto: Proto,
    ip: Option<Ipv4Addr>,
    host_port: u16,
    ctr_port: u16,
}

impl PublishState {
    fn info(&self, net: &Net) -> Option<PublishInfo> {
        Some(PublishInfo {
            netns: self.netns.clone(),
            network: self.network.clone(),
            proto: self.proto.name().to_string(),
            ip: self.ip,
            host_port: self.host_port,
            endpoint_ip: net.endpoint_ip(&self.netns)?,
            endpoint_port: self.ctr_port,
        })
    }

    fn spec(&self) -> String {
        match self.ip {
            Some(ip) => format!(
                "{ip}:{}:{}/{}",
                self.host_port,
                self.ctr_port,
                self.proto.name()
            ),
            None => format!("{}:{}/{}", self.host_port, self.ctr_port, self.proto.name()),
        }
    }
}

#[derive(Default)]
struct State {
    networks: BTreeMap<String, Net>,
    next_net: NetId,
    next_port: PortId,
    shutting_down: bool,
    uplink: Option<UplinkState>,
    published: Vec<PublishState>,
    /// VTEP ports by UDP port (one socket pair serves every VNI on that port).
    vteps: BTreeMap<u16, Arc<Port>>,
}

/// What is persisted across restarts.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Persisted {
    /// Networks, in creation order.
    networks: Vec<NetworkCreate>,
    /// Endpoints with their resolved address, MAC and interface name.
    endpoints: Vec<AttachRequest>,
    /// Linked network pairs.
    #[serde(default)]
    links: Vec<(String, String)>,
    /// The uplink.
    #[serde(default)]
    uplink: Option<UplinkSet>,
    /// Published ports with their resolved host port.
    #[serde(default)]
    published: Vec<PublishRequest>,
}

/// One tracked connection as saved on a graceful stop (`conntrack.json`), so established NAT
/// flows survive a restart.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedConn {
    network: String,
    kind: String,
    proto: String,
    /// The first packet's `[src, sport, dst, dport]`.
    orig: (Ipv4Addr, u16, Ipv4Addr, u16),
    /// The answer's `[src, sport, dst, dport]`.
    reply: (Ipv4Addr, u16, Ipv4Addr, u16),
    state: u8,
    replied: bool,
}

impl SavedConn {
    fn tuple(proto: Proto, t: (Ipv4Addr, u16, Ipv4Addr, u16)) -> nat::FiveTuple {
        nat::FiveTuple {
            proto,
            src: t.0,
            sport: t.1,
            dst: t.2,
            dport: t.3,
        }
    }

    fn to_flow(&self, zone: NetId) -> Option<nat::SavedFlow> {
        let proto = [Proto::Tcp, Proto::Udp, Proto::Icmp]
            .into_iter()
            .find(|p| p.name() == self.proto)?;
        Some(nat::SavedFlow {
            orig: Self::tuple(proto, self.orig),
            reply: Self::tuple(proto, self.reply),
            kind: nat::NatKind::from_name(&self.kind)?,
            zone,
            state: self.state,
            replied: self.replied,
        })
    }
}

/// How [`Switch::attach_locked`] gets the endpoint's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttachMode {
    Create,
    Adopt,
    Sink,
}

/// The switch: datapath workers plus the control state.
pub struct Switch {
    opts: Options,
    shared: Arc<Shared>,
    epolls: Vec<Arc<Epoll>>,
    counters: Vec<Arc<WorkerCounters>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    state: Mutex<State>,
    next_session: AtomicU64,
    /// Buffers for [`Switch::inject`].
    scratch: Mutex<Option<crate::datapath::Scratch>>,
}

impl Switch {
    /// Start the worker threads and the housekeeping thread, and restore persisted state.
    pub fn start(opts: Options) -> Result<Arc<Switch>, Error> {
        let workers = opts.workers.max(1);
        let shared = Arc::new(Shared {
            config: ArcSwap::from_pointee(Config::default()),
            clock: Instant::now(),
            shutdown: AtomicBool::new(false),
            ct: Arc::new(Conntrack::new(opts.ct_max, opts.ct_timeouts)),
        });
        let mut epolls = Vec::new();
        let mut counters = Vec::new();
        let mut threads = Vec::new();
        for i in 0..workers {
            let ep = Arc::new(Epoll::new().map_err(Error::device("create epoll instance"))?);
            let c = Arc::new(WorkerCounters::for_worker(i));
            let w = Worker::new(shared.clone(), ep.clone(), c.clone(), opts.poll);
            let t = std::thread::Builder::new()
                .name(format!("vs-worker-{i}"))
                .spawn(move || w.run())
                .map_err(Error::device("spawn worker thread"))?;
            epolls.push(ep);
            counters.push(c);
            threads.push(t);
        }
        // The housekeeping thread's own counters (queued frames that timed out, ...).
        let hk_counters = Arc::new(WorkerCounters::default());
        counters.push(hk_counters.clone());
        let sw = Arc::new(Switch {
            opts,
            shared: shared.clone(),
            epolls,
            counters,
            threads: Mutex::new(threads),
            state: Mutex::new(State {
                next_net: 1,
                next_port: 1,
                ..Default::default()
            }),
            next_session: AtomicU64::new(1),
            scratch: Mutex::new(None),
        });
        let hk = Arc::downgrade(&sw);
        let t = std::thread::Builder::new()
            .name("vs-housekeeping".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(1));
                let Some(sw) = hk.upgrade() else { return };
                if sw.shared.shutdown.load(Ordering::Relaxed) {
                    return;
                }
                let now = sw.shared.now_ms();
                let cfg = sw.shared.config.load();
                for net in cfg.networks.values() {
                    net.fdb.age(now);
                    if let Some(r) = &net.remote {
                        r.age(now);
                    }
                }
                sw.shared.ct.expire(now);
                if let Some(up) = &cfg.uplink {
                    for _ in 0..up.neigh.expire(now) {
                        WorkerCounters::drop(&hk_counters, crate::counters::Drop::ArpTimeout);
                    }
                }
            })
            .map_err(Error::device("spawn housekeeping thread"))?;
        sw.threads.lock().unwrap_or_else(|p| p.into_inner()).push(t);
        sw.restore();
        Ok(sw)
    }

    /// Run a state change under the control lock and persist the state when it succeeds.
    fn mutate<T>(&self, f: impl FnOnce(&mut State) -> Result<T, Error>) -> Result<T, Error> {
        let mut st = self.lock()?;
        let r = f(&mut st)?;
        self.persist(&st);
        Ok(r)
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.shutting_down {
            return Err(Error::ShuttingDown);
        }
        Ok(st)
    }

    /// `network create`.
    pub fn create_network(&self, req: &NetworkCreate) -> Result<NetworkInfo, Error> {
        self.mutate(|st| self.create_network_locked(st, req))
    }

    fn create_network_locked(
        &self,
        st: &mut State,
        req: &NetworkCreate,
    ) -> Result<NetworkInfo, Error> {
        check_name("network", &req.name, 64)?;
        let subnet: Ipv4Cidr = req.subnet.trim().parse()?;
        let gateway = match &req.gateway {
            Some(g) => parse_ipv4(g)?,
            None => subnet.first_host(),
        };
        if !subnet.is_host(gateway) {
            return Err(Error::GatewayOutside {
                gateway,
                subnet: subnet.to_string(),
            });
        }
        let vxlan_port = req.vxlan_port.unwrap_or(overlay::VXLAN_PORT);
        let peers: BTreeSet<Ipv4Addr> = req
            .peers
            .iter()
            .map(|p| parse_ipv4(p))
            .collect::<Result<_, _>>()?;
        if let Some(vni) = req.vni {
            if vni == 0 || vni > overlay::VNI_MAX {
                return Err(Error::BadVni(vni));
            }
            if let Some(o) = st
                .networks
                .values()
                .find(|n| n.vni == Some(vni) && n.vxlan_port == vxlan_port)
            {
                return Err(Error::VniInUse {
                    vni,
                    network: o.name.clone(),
                });
            }
        } else if !peers.is_empty() || req.vxlan_port.is_some() {
            return Err(Error::NotOverlay(req.name.clone()));
        }
        // Overlay endpoints get the underlay MTU minus VXLAN's 50 bytes, so nothing fragments.
        let underlay_mtu = peers
            .iter()
            .next()
            .and_then(|p| crate::sys::udp::route_to(*p).ok())
            .map_or(1500, |r| r.1);
        let mtu = req.mtu.unwrap_or(if req.vni.is_some() {
            underlay_mtu.saturating_sub(overlay::VXLAN_OVERHEAD_V4)
        } else {
            1500
        });
        if !(68..=65_535).contains(&mtu) {
            return Err(Error::Mtu(mtu));
        }
        if st.networks.contains_key(&req.name) {
            return Err(Error::NetworkExists(req.name.clone()));
        }
        // Overlay networks (distinct VNIs) may share a subnet: they are separate segments.
        if let Some(o) = st
            .networks
            .values()
            .find(|n| n.subnet.overlaps(&subnet) && !(req.vni.is_some() && n.vni.is_some()))
        {
            return Err(Error::SubnetOverlap {
                subnet: subnet.to_string(),
                other: o.name.clone(),
                other_subnet: o.subnet.to_string(),
            });
        }
        let id = st.next_net;
        st.next_net += 1;
        let net = Net {
            id,
            name: req.name.clone(),
            subnet,
            gateway,
            gateway_mac: MacAddr::gateway_for(&req.name),
            mtu,
            pool: Pool::new(subnet, gateway),
            fdb: Arc::new(Fdb::new(
                u64::try_from(self.opts.fdb_aging.as_millis()).unwrap_or(u64::MAX),
                self.opts.fdb_limit,
            )),
            neigh: Arc::new(NeighTable::default()),
            taps: Arc::new(Taps::default()),
            endpoints: Vec::new(),
            internal: req.internal,
            icc: req.icc.unwrap_or(true),
            links: BTreeSet::new(),
            vni: req.vni,
            peers,
            vxlan_port,
            probes: Arc::new(NeighCache::new(0)),
            remote: Arc::new(RemoteFdb::new(
                u64::try_from(self.opts.fdb_aging.as_millis()).unwrap_or(u64::MAX),
                self.opts.fdb_limit,
            )),
        };
        if req.vni.is_some() {
            self.ensure_vtep(st, vxlan_port)?;
        }
        let info = net.info(&st.published);
        st.networks.insert(req.name.clone(), net);
        self.sync(st);
        log::info!(
            "network {} created: {} gateway {}",
            info.name,
            info.subnet,
            info.gateway
        );
        Ok(info)
    }

    /// `network ls`.
    pub fn networks(&self) -> Vec<NetworkInfo> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.networks
            .values()
            .map(|n| n.info(&st.published))
            .collect()
    }

    /// `network inspect`.
    pub fn network(&self, name: &str) -> Result<NetworkInfo, Error> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.networks
            .get(name)
            .map(|n| n.info(&st.published))
            .ok_or_else(|| Error::NetworkNotFound(name.to_string()))
    }

    /// Run `wire` (`[virtio-net header | frame]`, the header as long as the port's device uses:
    /// 12 bytes on endpoints, 10 on the uplink) through the datapath on the calling thread, as if
    /// port `port` had received it. False when there is no such port. With
    /// [`Switch::attach_sink`] and [`Switch::set_uplink_sink`], this runs the whole datapath
    /// without devices: the fuzzing harness.
    pub fn inject(&self, port: PortId, wire: &[u8]) -> bool {
        let cfg = self.shared.config.load();
        let Some(p) = cfg.ports.get(&port) else {
            return false;
        };
        if matches!(p.dev, Device::Vxlan(_)) {
            return false;
        }
        let mut s = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let s = s.get_or_insert_with(Default::default);
        let counters = self.counters.last().expect("housekeeping counters");
        crate::datapath::run_frame(&self.shared, &self.epolls[0], counters, s, &cfg, p, wire);
        true
    }

    /// Fuzzing and test hook, the overlay's counterpart of [`Switch::inject`]: run `datagrams`
    /// through the datapath on the calling thread as if the socket of the VTEP port `port` had
    /// received them from `from` in one read (UDP GRO: datagrams of `gso` bytes back to back;
    /// `None`: one datagram; at most 64 KiB). False when `port` is not a VTEP. Nothing else calls
    /// it: the workers read the socket themselves.
    pub fn inject_vxlan(
        &self,
        port: PortId,
        from: std::net::SocketAddrV4,
        datagrams: &[u8],
        gso: Option<u16>,
    ) -> bool {
        let cfg = self.shared.config.load();
        let Some(p) = cfg
            .ports
            .get(&port)
            .filter(|p| matches!(p.dev, Device::Vxlan(_)))
        else {
            return false;
        };
        let mut s = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let s = s.get_or_insert_with(Default::default);
        let counters = self.counters.last().expect("housekeeping counters");
        crate::datapath::run_vxlan(
            &self.shared,
            &self.epolls[0],
            counters,
            s,
            &cfg,
            p,
            from,
            datagrams,
            gso,
        );
        true
    }

    /// The (worker, fd) pairs that receive a port's frames: each worker serves its own queue of
    /// a multi-queue TAP or of the uplink's fanout group; any other device is served by
    /// `port.worker`.
    fn queue_fds(&self, port: &Port) -> Vec<(usize, std::os::fd::RawFd)> {
        match &port.dev {
            Device::Sink(_) => Vec::new(),
            dev if dev.queues() > 1 => (0..self.epolls.len())
                .map(|w| (w, dev.queue_fd(w)))
                .collect(),
            dev => vec![(port.worker, dev.as_raw_fd())],
        }
    }

    /// Add a port's receive queues to the workers' epoll sets.
    fn register(&self, port: &Port) -> std::io::Result<()> {
        for (w, fd) in self.queue_fds(port) {
            self.epolls[w].add(fd, u64::from(port.id))?;
        }
        Ok(())
    }

    /// Remove a port's receive queues from the workers' epoll sets.
    fn unregister(&self, port: &Port) {
        for (w, fd) in self.queue_fds(port) {
            let _ = self.epolls[w].delete(fd);
        }
    }

    /// The id of the port named `name` (`p3`, `uplink`).
    pub fn port_id(&self, name: &str) -> Option<PortId> {
        let cfg = self.shared.config.load();
        cfg.ports.values().find(|p| p.name == name).map(|p| p.id)
    }

    /// `network rm`: refused while endpoints are attached.
    pub fn remove_network(&self, name: &str) -> Result<(), Error> {
        let mut st = self.lock()?;
        let net = st
            .networks
            .get(name)
            .ok_or_else(|| Error::NetworkNotFound(name.to_string()))?;
        if !net.endpoints.is_empty() {
            let endpoints = net
                .endpoints
                .iter()
                .map(|e| format!("{}/{}", e.netns, e.ifname))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::NetworkInUse {
                network: name.to_string(),
                endpoints,
            });
        }
        st.networks.remove(name);
        for n in st.networks.values_mut() {
            n.links.remove(name);
        }
        self.drop_unused_vteps(&mut st);
        self.sync(&st);
        self.persist(&st);
        log::info!("network {name} removed");
        Ok(())
    }

    /// `attach`: create a TAP endpoint for `req.netns` on `req.network`.
    pub fn attach(&self, req: &AttachRequest) -> Result<EndpointInfo, Error> {
        self.mutate(|st| self.attach_locked(st, req, AttachMode::Create))
    }

    /// Attach an endpoint with no device ([`Device::Sink`]): frames reach it only through
    /// [`Switch::inject`], and what the switch sends it is discarded (counted as sent). A
    /// capture session on its port ([`Switch::capture`]) sees those frames, as on any port:
    /// that is how tests read what the switch sent. No namespace is touched (`req.netns` is
    /// only a name). For fuzzing and tests.
    pub fn attach_sink(&self, req: &AttachRequest) -> Result<EndpointInfo, Error> {
        self.mutate(|st| self.attach_locked(st, req, AttachMode::Sink))
    }

    /// Attach: create the device, take over one a previous daemon left (`Adopt`, an existing
    /// TAP named `req.ifname` in the namespace), or use none (`Sink`).
    fn attach_locked(
        &self,
        st: &mut State,
        req: &AttachRequest,
        mode: AttachMode,
    ) -> Result<EndpointInfo, Error> {
        check_name("namespace", &req.netns, 255)?;
        for a in &req.aliases {
            check_name("alias", a, 63)?;
        }
        if let Some(ifname) = &req.ifname {
            check_name("interface", ifname, 15)?;
        }
        let mac = req.mac.as_deref().map(str::parse::<MacAddr>).transpose()?;
        if let Some(m) = mac.filter(|m| !m.is_valid_unicast()) {
            return Err(Error::MacNotUnicast(m.to_string()));
        }
        let ip = req.ip.as_deref().map(parse_ipv4).transpose()?;
        let port_id = st.next_port;
        let net = st
            .networks
            .get_mut(&req.network)
            .ok_or_else(|| Error::NetworkNotFound(req.network.clone()))?;
        if net.endpoints.iter().any(|e| e.netns == req.netns) {
            return Err(Error::AlreadyAttached {
                netns: req.netns.clone(),
                network: req.network.clone(),
            });
        }
        let ns = match mode {
            AttachMode::Sink => None,
            _ => Some(Netns::open(&req.netns).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::NetnsNotFound(req.netns.clone()),
                _ => Error::Device {
                    step: "open network namespace",
                    source: e,
                },
            })?),
        };
        let ip = match ip {
            Some(ip) => {
                if !net.pool.take(ip)? {
                    return Err(Error::AddressInUse {
                        ip,
                        network: req.network.clone(),
                    });
                }
                ip
            }
            None => net.pool.next_free()?,
        };
        let mac = mac.unwrap_or_else(|| MacAddr::from_ipv4(ip));
        let result = (|| {
            if mac == net.gateway_mac || net.endpoints.iter().any(|e| e.port.mac == mac) {
                return Err(Error::MacInUse {
                    mac: mac.to_string(),
                    network: req.network.clone(),
                });
            }
            let Some(ns) = &ns else {
                let ifname = req.ifname.clone().unwrap_or_else(|| "sink0".into());
                return Ok((Device::Sink(VirtioNetHdr::LEN), ifname));
            };
            let adopt = mode == AttachMode::Adopt;
            let queues = match self.opts.tap_queues {
                0 => self.epolls.len(),
                n => n.min(self.epolls.len()),
            };
            let (tap, ifname) = make_endpoint_device(ns, req, mac, ip, net, (queues, adopt))?;
            // Persistent only under --live-restore; an adopted device of a daemon that had the
            // flag goes with this one when it does not.
            tap.set_persist(self.opts.live_restore)
                .map_err(Error::device("set TAP persistence"))?;
            Ok((Device::Tap(tap), ifname))
        })();
        let (dev, ifname) = match result {
            Ok(t) => t,
            Err(e) => {
                net.pool.release(ip);
                return Err(e);
            }
        };
        // The worker with the fewest ports serves the new one.
        let mut load = vec![0usize; self.epolls.len()];
        for n in st.networks.values() {
            for e in &n.endpoints {
                load[e.port.worker] += 1;
            }
        }
        let worker = (0..load.len()).min_by_key(|&w| load[w]).unwrap_or(0);
        let net = st
            .networks
            .get_mut(&req.network)
            .ok_or_else(|| Error::NetworkNotFound(req.network.clone()))?;
        let port = Arc::new(Port {
            id: port_id,
            name: format!("p{port_id}"),
            network: net.id,
            dev,
            mac,
            ip,
            worker,
            stats: PortStats::default(),
            taps: Arc::new(Taps::default()),
            flood: FloodLimiter::new(self.opts.flood_rate),
            spoof_check: !req.allow_spoof,
        });
        net.neigh.insert(ip, mac);
        net.endpoints.push(Endpoint {
            netns: req.netns.clone(),
            ifname,
            aliases: req.aliases.clone(),
            port: port.clone(),
        });
        let info = net.endpoint_info(net.endpoints.last().expect("just pushed"));
        st.next_port += 1;
        self.sync(st);
        if mode == AttachMode::Sink {
            return Ok(info);
        }
        if let Err(e) = self.register(&port) {
            // Undo: without a receive queue the endpoint would be silently deaf.
            let _ = self.detach_locked(st, &req.netns, &req.network);
            return Err(Error::Device {
                step: "register port with worker",
                source: e,
            });
        }
        write_resolv_conf(st, &req.netns);
        log::info!(
            "attached {}/{} to {} as {} ({} {})",
            info.netns,
            info.ifname,
            info.network,
            info.port,
            info.ip,
            info.mac
        );
        Ok(info)
    }

    /// `detach`: remove `netns`'s endpoint on `network`.
    pub fn detach(&self, netns: &str, network: &str) -> Result<(), Error> {
        self.mutate(|st| self.detach_locked(st, netns, network))
    }

    fn detach_locked(&self, st: &mut State, netns: &str, network: &str) -> Result<(), Error> {
        check_name("namespace", netns, 255)?;
        let net = st
            .networks
            .get_mut(network)
            .ok_or_else(|| Error::NetworkNotFound(network.to_string()))?;
        let i = net
            .endpoints
            .iter()
            .position(|e| e.netns == netns)
            .ok_or_else(|| Error::NotAttached {
                netns: netns.to_string(),
                network: network.to_string(),
            })?;
        let ep = net.endpoints.remove(i);
        self.unregister(&ep.port);
        net.fdb.flush_port(ep.port.id);
        net.neigh.remove_if(&ep.port.ip, |_, m| *m == ep.port.mac);
        net.pool.release(ep.port.ip);
        let (zone, ip, gateway) = (net.id, ep.port.ip, net.gateway);
        // Published ports and tracked connections go with their endpoint, including hairpin
        // flows into it from other networks (those are in the client's zone; their answers
        // come from the endpoint to its own network's gateway).
        st.published
            .retain(|p| !(p.netns == netns && p.network == network));
        self.shared.ct.remove_where(|f| {
            (f.zone == zone && (f.orig.src == ip || f.reply.src == ip))
                || (f.kind == nat::NatKind::Hairpin && f.reply.src == ip && f.reply.dst == gateway)
        });
        self.sync(st);
        if !matches!(ep.port.dev, Device::Sink(_)) {
            write_resolv_conf(st, netns);
        }
        log::info!(
            "detached {}/{} from {network} ({})",
            netns,
            ep.ifname,
            ep.port.name
        );
        if let Device::Tap(t) = &ep.port.dev {
            // Detached for good, even under --live-restore.
            let _ = t.set_persist(false);
        }
        release_port(ep.port);
        keep_default_route(st, netns);
        Ok(())
    }

    /// Build and swap in a new datapath snapshot from the control state.
    fn sync(&self, st: &State) {
        let mut cfg = Config::default();
        for n in st.networks.values() {
            let ports: Vec<Arc<Port>> = n.endpoints.iter().map(|e| e.port.clone()).collect();
            for p in &ports {
                cfg.ports.insert(p.id, p.clone());
            }
            cfg.networks.insert(
                n.id,
                Arc::new(NetRt {
                    id: n.id,
                    subnet: n.subnet,
                    gateway_ip: n.gateway,
                    gateway_mac: n.gateway_mac,
                    ports,
                    fdb: n.fdb.clone(),
                    neigh: n.neigh.clone(),
                    taps: n.taps.clone(),
                    internal: n.internal,
                    icc: n.icc,
                    links: n
                        .links
                        .iter()
                        .filter_map(|l| st.networks.get(l))
                        .map(|l| l.id)
                        .collect(),
                    mtu: n.mtu,
                    dns: n
                        .names()
                        .chain(
                            n.links
                                .iter()
                                .filter_map(|l| st.networks.get(l))
                                .flat_map(|l| l.names()),
                        )
                        .collect(),
                    vni: n.vni,
                    peers: n.peers.iter().copied().collect(),
                    remote: n.vni.map(|_| n.remote.clone()),
                    vtep: n.vni.and_then(|_| st.vteps.get(&n.vxlan_port).cloned()),
                    probes: n.probes.clone(),
                }),
            );
            if let Some(vni) = n.vni {
                cfg.vnis.insert((n.vxlan_port, vni), n.id);
            }
        }
        // A namespace's addresses on its other networks (see `Config::own_addrs`).
        let mut by_netns: FxHashMap<&str, Vec<(PortId, Ipv4Addr)>> = FxHashMap::default();
        for n in st.networks.values() {
            for e in &n.endpoints {
                by_netns
                    .entry(e.netns.as_str())
                    .or_default()
                    .push((e.port.id, e.port.ip));
            }
        }
        for eps in by_netns.values().filter(|eps| eps.len() > 1) {
            for &(id, ip) in eps {
                let others = eps.iter().map(|e| e.1).filter(|o| *o != ip).collect();
                cfg.own_addrs.insert(id, others);
            }
        }
        for v in st.vteps.values() {
            cfg.ports.insert(v.id, v.clone());
        }
        for p in &st.published {
            let Some(n) = st.networks.get(&p.network) else {
                continue;
            };
            let Some(to_ip) = n.endpoint_ip(&p.netns) else {
                continue;
            };
            cfg.published.insert(
                (p.proto, p.host_port),
                Published {
                    ip: p.ip,
                    net: n.id,
                    to_ip,
                    to_port: p.ctr_port,
                },
            );
        }
        if let Some(u) = &st.uplink {
            cfg.ports.insert(u.port.id, u.port.clone());
            let mut extra_ips: Vec<Ipv4Addr> = st
                .published
                .iter()
                .filter_map(|p| p.ip)
                .filter(|ip| *ip != u.ip)
                .collect();
            extra_ips.sort();
            extra_ips.dedup();
            cfg.uplink = Some(Arc::new(UplinkRt {
                port: u.port.clone(),
                ip: u.ip,
                subnet: u.subnet,
                gateway: u.gateway,
                mac: u.port.mac,
                neigh: u.neigh.clone(),
                extra_ips,
                resolver: u.resolver,
            }));
        }
        self.shared.config.store(Arc::new(cfg));
    }

    /// `ports`.
    pub fn ports(&self) -> Vec<PortInfo> {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let st: &State = &guard;
        let mut v: Vec<PortInfo> = st
            .networks
            .values()
            .flat_map(|n| {
                n.endpoints.iter().map(move |e| PortInfo {
                    name: e.port.name.clone(),
                    kind: "tap".into(),
                    netns: e.netns.clone(),
                    ifname: e.ifname.clone(),
                    network: n.name.clone(),
                    mac: e.port.mac.to_string(),
                    ip: e.port.ip,
                    worker: e.port.worker,
                    published: st
                        .published
                        .iter()
                        .filter(|p| p.netns == e.netns && p.network == n.name)
                        .map(|p| match p.ip {
                            Some(ip) => {
                                format!("{ip}:{}->{}/{}", p.host_port, p.ctr_port, p.proto.name())
                            }
                            None => format!("{}->{}/{}", p.host_port, p.ctr_port, p.proto.name()),
                        })
                        .collect(),
                    counters: e.port.stats.snapshot(),
                })
            })
            .collect();
        v.sort_by_key(|p| p.name[1..].parse::<u32>().unwrap_or(0));
        for vt in st.vteps.values() {
            v.push(PortInfo {
                name: vt.name.clone(),
                kind: "vxlan".into(),
                netns: "-".into(),
                ifname: "-".into(),
                network: "-".into(),
                mac: "-".into(),
                ip: vt.ip,
                worker: vt.worker,
                published: Vec::new(),
                counters: vt.stats.snapshot(),
            });
        }
        if let Some(u) = &st.uplink {
            v.push(PortInfo {
                name: u.port.name.clone(),
                kind: "uplink".into(),
                netns: "-".into(),
                ifname: u.req.iface.clone(),
                network: "-".into(),
                mac: u.port.mac.to_string(),
                ip: u.ip,
                worker: u.port.worker,
                published: Vec::new(),
                counters: u.port.stats.snapshot(),
            });
        }
        v
    }

    /// `fdb [NETWORK]`.
    pub fn fdb(&self, network: Option<&str>) -> Result<Vec<FdbEntryInfo>, Error> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = network {
            if !st.networks.contains_key(n) {
                return Err(Error::NetworkNotFound(n.to_string()));
            }
        }
        let now = self.shared.now_ms();
        let mut out = Vec::new();
        for n in st
            .networks
            .values()
            .filter(|n| network.is_none_or(|f| f == n.name))
        {
            let names: BTreeMap<PortId, &str> = n
                .endpoints
                .iter()
                .map(|e| (e.port.id, e.port.name.as_str()))
                .collect();
            for e in n.fdb.entries(now) {
                out.push(FdbEntryInfo {
                    network: n.name.clone(),
                    mac: e.mac.to_string(),
                    port: names
                        .get(&e.port)
                        .map_or_else(|| format!("p{}", e.port), |s| s.to_string()),
                    age_secs: e.age_ms / 1000,
                    vtep: None,
                });
            }
            for e in n.remote.entries(now) {
                out.push(FdbEntryInfo {
                    network: n.name.clone(),
                    mac: MacAddr(e.mac).to_string(),
                    port: format!("vxlan{}", n.vxlan_port),
                    age_secs: e.age_ms / 1000,
                    vtep: Some(e.vtep),
                });
            }
        }
        Ok(out)
    }

    /// `stats`.
    pub fn stats(&self) -> StatsInfo {
        let mut drops = BTreeMap::new();
        let mut events = BTreeMap::new();
        for c in &self.counters {
            c.sum_into(&mut drops, &mut events);
        }
        events.insert(
            "conntrack_early_drop".to_string(),
            self.shared.ct.early_drops(),
        );
        StatsInfo {
            ports: self.ports(),
            drops,
            events,
        }
    }

    /// Start a capture session on `target`: a port name, `NETNS/IFNAME`, or a network name.
    pub fn capture(&self, target: &str) -> Result<Session, Error> {
        let st = self.lock()?;
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let endpoint = st
            .networks
            .values()
            .flat_map(|n| n.endpoints.iter())
            .find(|e| {
                e.port.name == target
                    || target
                        .split_once('/')
                        .is_some_and(|(ns, ifn)| ns == e.netns && ifn == e.ifname)
            });
        if let Some(e) = endpoint {
            return Ok(Session::start(id, vec![(e.port.taps.clone(), true, true)]));
        }
        if let Some(n) = st.networks.get(target) {
            // Every frame entering the network from a port or from a peer VTEP (the network's
            // own taps, Rx), plus what the switch itself sends into it (Tx).
            let mut taps: Vec<_> = n
                .endpoints
                .iter()
                .map(|e| (e.port.taps.clone(), true, false))
                .collect();
            taps.push((n.taps.clone(), true, true));
            return Ok(Session::start(id, taps));
        }
        if let Some(u) = st
            .uplink
            .as_ref()
            .filter(|u| target == "uplink" || target == u.req.iface || target == u.port.name)
        {
            return Ok(Session::start(id, vec![(u.port.taps.clone(), true, true)]));
        }
        Err(Error::TargetNotFound(target.to_string()))
    }

    /// Stop the workers and remove every device the daemon created. Persisted state is kept, so
    /// the next start recreates the endpoints.
    pub fn shutdown(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.shutting_down {
            return;
        }
        st.shutting_down = true;
        if let Some(u) = st.uplink.take() {
            self.unregister(&u.port);
        }
        self.shared.shutdown.store(true, Ordering::Relaxed);
        for t in self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = t.join();
        }
        self.shared.config.store(Arc::new(Config::default()));
        self.save_conntrack(&st);
        let mut n = 0;
        let namespaces: BTreeSet<String> = st
            .networks
            .values()
            .flat_map(|n| n.endpoints.iter())
            .filter(|e| !matches!(e.port.dev, Device::Sink(_)))
            .map(|e| e.netns.clone())
            .collect();
        for net in st.networks.values_mut() {
            for ep in net.endpoints.drain(..) {
                release_port(ep.port);
                n += 1;
            }
        }
        if self.opts.live_restore {
            // The devices stay (persistent TAPs) and so does the namespaces' resolver
            // configuration: the next daemon takes both over.
            log::info!("shut down: kept {n} endpoint device(s) for --live-restore");
            return;
        }
        // The gateways stop answering DNS with the daemon: give the namespaces their resolver
        // configuration back (a restart writes it again when it restores the endpoints).
        for ns in &namespaces {
            write_resolv_conf(&st, ns);
        }
        log::info!("shut down: removed {n} endpoint device(s)");
    }

    /// Write the tracked connections (except DNS forwards, which are short-lived) for the next
    /// start to take back.
    fn save_conntrack(&self, st: &State) {
        let Some(dir) = &self.opts.state_dir else {
            return;
        };
        let names: BTreeMap<NetId, &str> = st
            .networks
            .values()
            .map(|n| (n.id, n.name.as_str()))
            .collect();
        let t = |t: nat::FiveTuple| (t.src, t.sport, t.dst, t.dport);
        let conns: Vec<SavedConn> = self
            .shared
            .ct
            .flows(None)
            .iter()
            .map(|f| f.saved())
            .filter(|f| f.kind != nat::NatKind::Dns)
            .filter_map(|f| {
                Some(SavedConn {
                    network: names.get(&f.zone)?.to_string(),
                    kind: f.kind.name().into(),
                    proto: f.orig.proto.name().into(),
                    orig: t(f.orig),
                    reply: t(f.reply),
                    state: f.state,
                    replied: f.replied,
                })
            })
            .collect();
        let path = dir.join("conntrack.json");
        let r = serde_json::to_vec(&conns)
            .map_err(std::io::Error::other)
            .and_then(|d| persist::write_atomic(&path, &d));
        match r {
            Ok(()) => log::info!("saved {} tracked connection(s)", conns.len()),
            Err(e) => log::error!("saving connections to {} failed: {e}", path.display()),
        }
    }

    /// Take back the connections a graceful stop saved; the file is used once.
    fn restore_conntrack(&self, st: &State) {
        let Some(dir) = &self.opts.state_dir else {
            return;
        };
        let path = dir.join("conntrack.json");
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                log::error!("reading {} failed: {e}", path.display());
                return;
            }
        };
        let _ = std::fs::remove_file(&path);
        let conns: Vec<SavedConn> = match serde_json::from_slice(&data) {
            Ok(c) => c,
            Err(e) => {
                log::error!(
                    "{} is unreadable ({e}); connections not restored",
                    path.display()
                );
                return;
            }
        };
        let now = self.shared.now_ms();
        let (mut ok, mut skipped) = (0, 0);
        for c in &conns {
            let flow = st.networks.get(&c.network).and_then(|n| c.to_flow(n.id));
            match flow.map(|f| self.shared.ct.import(&f, now)) {
                Some(Ok(true)) => ok += 1,
                _ => skipped += 1,
            }
        }
        log::info!("restored {ok} tracked connection(s), skipped {skipped}");
    }

    fn state_path(&self) -> Option<PathBuf> {
        self.opts.state_dir.as_ref().map(|d| d.join("state.json"))
    }

    fn persist(&self, st: &State) {
        let Some(path) = self.state_path() else {
            return;
        };
        let mut nets: Vec<&Net> = st.networks.values().collect();
        nets.sort_by_key(|n| n.id);
        let p = Persisted {
            networks: nets
                .iter()
                .map(|n| NetworkCreate {
                    name: n.name.clone(),
                    subnet: n.subnet.to_string(),
                    gateway: Some(n.gateway.to_string()),
                    mtu: Some(n.mtu),
                    internal: n.internal,
                    icc: Some(n.icc),
                    vni: n.vni,
                    peers: n.peers.iter().map(|p| p.to_string()).collect(),
                    vxlan_port: n.vni.map(|_| n.vxlan_port),
                })
                .collect(),
            links: nets
                .iter()
                .flat_map(|n| {
                    n.links
                        .iter()
                        .filter(|l| **l > n.name)
                        .map(|l| (n.name.clone(), l.clone()))
                })
                .collect(),
            uplink: st.uplink.as_ref().map(|u| u.req.clone()),
            published: st
                .published
                .iter()
                .map(|p| PublishRequest {
                    netns: p.netns.clone(),
                    spec: p.spec(),
                    network: Some(p.network.clone()),
                })
                .collect(),
            endpoints: nets
                .iter()
                .flat_map(|n| {
                    n.endpoints.iter().map(|e| AttachRequest {
                        netns: e.netns.clone(),
                        network: n.name.clone(),
                        ip: Some(e.port.ip.to_string()),
                        mac: Some(e.port.mac.to_string()),
                        ifname: Some(e.ifname.clone()),
                        aliases: e.aliases.clone(),
                        allow_spoof: !e.port.spoof_check,
                    })
                })
                .collect(),
        };
        let write = || -> std::io::Result<()> {
            let data = serde_json::to_vec_pretty(&p).map_err(std::io::Error::other)?;
            persist::write_atomic(&path, &data)
        };
        if let Err(e) = write() {
            log::error!("saving state to {} failed: {e}", path.display());
        }
    }

    fn restore(&self) {
        let Some(path) = self.state_path() else {
            return;
        };
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                log::error!(
                    "reading state {} failed: {e}; starting empty",
                    path.display()
                );
                return;
            }
        };
        let p: Persisted = match serde_json::from_slice(&data) {
            Ok(p) => p,
            Err(e) => {
                let bad = path.with_extension("json.bad");
                log::error!(
                    "state {} is unreadable ({e}); kept as {} and starting empty",
                    path.display(),
                    bad.display()
                );
                let _ = std::fs::rename(&path, bad);
                return;
            }
        };
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for n in &p.networks {
            if let Err(e) = self.create_network_locked(&mut st, n) {
                log::warn!("restoring network {} failed: {e}", n.name);
            }
        }
        for a in &p.endpoints {
            match self.attach_locked(&mut st, a, AttachMode::Adopt) {
                Ok(i) => log::info!(
                    "restored endpoint {}/{} on {}",
                    i.netns,
                    i.ifname,
                    i.network
                ),
                Err(e) => log::warn!(
                    "restoring endpoint {} on {} failed: {e}; dropped",
                    a.netns,
                    a.network
                ),
            }
        }
        for (a, b) in &p.links {
            if let Err(e) = self.link_locked(&mut st, a, b, true) {
                log::warn!("restoring link {a} <-> {b} failed: {e}");
            }
        }
        if let Some(u) = &p.uplink {
            if let Err(e) = self.set_uplink_locked(&mut st, u) {
                log::warn!("restoring uplink {} failed: {e}", u.iface);
            }
        }
        for r in &p.published {
            if let Err(e) = self.publish_locked(&mut st, r) {
                log::warn!(
                    "restoring published port {} of {} failed: {e}",
                    r.spec,
                    r.netns
                );
            }
        }
        self.restore_conntrack(&st);
        self.persist(&st);
    }
}

/// After a detach: if the namespace is still attached elsewhere and its default route went with
/// the removed interface, route by the gateway of its next attachment instead (as Docker does
/// when the network that gave the default route is disconnected). Best effort: the detach is
/// done either way; a failure is logged.
fn keep_default_route(st: &State, netns: &str) {
    let Some((gateway, ifname)) = st.networks.values().find_map(|n| {
        n.endpoints
            .iter()
            .find(|e| e.netns == netns && matches!(e.port.dev, Device::Tap(_)))
            .map(|e| (n.gateway, e.ifname.clone()))
    }) else {
        return;
    };
    let done = Netns::open(netns).and_then(|ns| {
        ns.run_in(move || -> std::io::Result<bool> {
            let mut nl = Netlink::open()?;
            let idx = nl
                .link_index(&ifname)?
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
            nl.add_default_route_v4(gateway, idx)
        })?
    });
    match done {
        Ok(true) => log::info!("{netns}: default route now via {gateway}"),
        Ok(false) => {}
        Err(e) => log::warn!("{netns}: could not add a default route via {gateway}: {e}"),
    }
}

/// Create the TAP device for an endpoint with `queues` queues, configure it and move it into the
/// namespace: MAC and MTU first, then move and rename, then (inside the namespace) up, address
/// and default route. With `adopt`, a TAP named `req.ifname` already in the namespace is taken
/// over instead (`--live-restore`).
fn make_endpoint_device(
    ns: &Netns,
    req: &AttachRequest,
    mac: MacAddr,
    ip: Ipv4Addr,
    net: &Net,
    (queues, adopt): (usize, bool),
) -> Result<(Tap, String), Error> {
    let offloads = if net.vni.is_none() {
        crate::sys::tap::OFFLOADS_ALL
    } else {
        crate::sys::tap::OFFLOADS_OVERLAY
    };
    if let (true, Some(name)) = (adopt, req.ifname.clone()) {
        if let Some(tap) = adopt_endpoint_device(ns, &name, (offloads, queues), mac, ip, net)? {
            return Ok((tap, name));
        }
    }
    let wanted = req.ifname.clone();
    let netns = req.netns.clone();
    let ifname = ns
        .run_in(move || -> Result<String, Error> {
            let mut nl =
                Netlink::open().map_err(Error::device("open netlink socket in namespace"))?;
            match wanted {
                Some(name) => match nl
                    .link_index(&name)
                    .map_err(Error::device("look up interface"))?
                {
                    Some(_) => Err(Error::IfnameInUse {
                        ifname: name,
                        netns,
                    }),
                    None => Ok(name),
                },
                None => {
                    for i in 0..1000 {
                        let name = format!("eth{i}");
                        if nl
                            .link_index(&name)
                            .map_err(Error::device("look up interface"))?
                            .is_none()
                        {
                            return Ok(name);
                        }
                    }
                    Err(Error::IfnameInUse {
                        ifname: "eth0..eth999".into(),
                        netns,
                    })
                }
            }
        })
        .map_err(Error::device("enter network namespace"))??;
    let tap = Tap::create("vs%d", offloads, queues).map_err(Error::device("create TAP device"))?;
    let mut nl = Netlink::open().map_err(Error::device("open netlink socket"))?;
    nl.set_link(
        tap.ifindex(),
        &LinkChange {
            mtu: Some(net.mtu),
            mac: Some(mac.0),
            ..Default::default()
        },
    )
    .map_err(Error::device("set TAP MAC address and MTU"))?;
    nl.set_link(
        tap.ifindex(),
        &LinkChange {
            netns_fd: Some(ns.as_raw_fd()),
            name: Some(&ifname),
            ..Default::default()
        },
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::EEXIST) => Error::IfnameInUse {
            ifname: ifname.clone(),
            netns: req.netns.clone(),
        },
        _ => Error::Device {
            step: "move TAP device into namespace",
            source: e,
        },
    })?;
    let (gateway, prefix) = (net.gateway, net.subnet.prefix_len());
    let name = ifname.clone();
    ns.run_in(move || -> Result<(), Error> {
        let mut nl = Netlink::open().map_err(Error::device("open netlink socket in namespace"))?;
        let idx = nl
            .link_index(&name)
            .map_err(Error::device("look up moved interface"))?
            .ok_or_else(|| Error::Device {
                step: "find moved interface",
                source: std::io::ErrorKind::NotFound.into(),
            })?;
        nl.set_link(
            idx,
            &LinkChange {
                up: Some(true),
                ..Default::default()
            },
        )
        .map_err(Error::device("bring interface up"))?;
        nl.add_addr_v4(idx, ip, prefix)
            .map_err(Error::device("add address"))?;
        nl.add_default_route_v4(gateway, idx)
            .map_err(Error::device("add default route"))?;
        Ok(())
    })
    .map_err(Error::device("enter network namespace"))??;
    Ok((tap, ifname))
}

/// Take over the TAP `name` a previous daemon left in namespace `ns` (`--live-restore`), and make
/// sure it still has the endpoint's MAC, MTU, address and default route. `None` when the
/// namespace has no such interface (the caller creates one).
fn adopt_endpoint_device(
    ns: &Netns,
    name: &str,
    (offloads, queues): (u32, usize),
    mac: MacAddr,
    ip: Ipv4Addr,
    net: &Net,
) -> Result<Option<Tap>, Error> {
    let (gateway, prefix, mtu) = (net.gateway, net.subnet.prefix_len(), net.mtu);
    ns.run_in(move || -> Result<Option<Tap>, Error> {
        let tap = match Tap::open_existing(name, offloads, queues) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Device {
                    step: "reopen the endpoint's TAP device (is the interface someone else's?)",
                    source: e,
                })
            }
        };
        let mut nl = Netlink::open().map_err(Error::device("open netlink socket in namespace"))?;
        nl.set_link(
            tap.ifindex(),
            &LinkChange {
                mtu: Some(mtu),
                mac: Some(mac.0),
                up: Some(true),
                ..Default::default()
            },
        )
        .map_err(Error::device("set TAP MAC address, MTU and up"))?;
        let exists = |r: std::io::Result<_>, step| match r {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                Err(Error::Device { step, source: e })
            }
            _ => Ok(()),
        };
        exists(
            nl.add_addr_v4(tap.ifindex(), ip, prefix).map(|_| ()),
            "add address",
        )?;
        exists(
            nl.add_default_route_v4(gateway, tap.ifindex()).map(|_| ()),
            "add default route",
        )?;
        Ok(Some(tap))
    })
    .map_err(Error::device("enter network namespace"))?
}

/// Open host interface `iface` as the uplink: bring it up and bind `queues` packet sockets to
/// it (one per worker, in one fanout group).
fn open_uplink(iface: &str, queues: usize) -> Result<PacketQueues, Error> {
    let ifindex = crate::sys::if_nametoindex(iface)
        .map_err(Error::device("look up uplink interface"))?
        .ok_or_else(|| Error::Device {
            step: "open uplink interface",
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no interface named {iface}"),
            ),
        })?;
    let mut nl = Netlink::open().map_err(Error::device("open netlink socket"))?;
    nl.set_link(
        ifindex,
        &LinkChange {
            up: Some(true),
            ..Default::default()
        },
    )
    .map_err(Error::device("bring uplink interface up"))?;
    let q = PacketQueues::open(iface, queues).map_err(Error::device("open uplink interface"))?;
    if q.queues() < queues {
        log::warn!(
            "uplink {iface}: this kernel refused a packet fanout group; one worker reads it"
        );
    }
    Ok(q)
}

/// Drop the last reference to a removed port so its TAP closes (which deletes the device).
/// Workers may hold the previous snapshot for the rest of one wake-up; wait briefly for them.
fn release_port(port: Arc<Port>) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Arc::strong_count(&port) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(port);
}

/// Split a port spec's `/tcp` or `/udp` suffix off (default tcp).
fn split_proto(spec: &str) -> Result<(&str, Proto), Error> {
    match spec.rsplit_once('/') {
        Some((b, "tcp")) => Ok((b, Proto::Tcp)),
        Some((b, "udp")) => Ok((b, Proto::Udp)),
        Some(_) => Err(Error::BadPortSpec(crate::error::shown(spec))),
        None => Ok((spec, Proto::Tcp)),
    }
}

/// The id of network `name`, when a name is given.
fn zone_of(st: &State, name: Option<&str>) -> Result<Option<NetId>, Error> {
    name.map(|n| {
        st.networks
            .get(n)
            .map(|n| n.id)
            .ok_or_else(|| Error::NetworkNotFound(n.to_string()))
    })
    .transpose()
}

/// Parse `[IP:][HOSTPORT:]CTRPORT[/tcp|/udp]` into (IP, host port, container port, protocol).
/// An empty or missing host port means "pick a free one".
pub fn parse_publish_spec(
    spec: &str,
) -> Result<(Option<Ipv4Addr>, Option<u16>, u16, Proto), Error> {
    let bad = || Error::BadPortSpec(crate::error::shown(spec));
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, "tcp")) => (b, Proto::Tcp),
        Some((b, "udp")) => (b, Proto::Udp),
        Some(_) => return Err(bad()),
        None => (spec, Proto::Tcp),
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
    let parts: Vec<&str> = body.split(':').collect();
    let opt_port = |p: &str| {
        if p.is_empty() {
            Ok(None)
        } else {
            port(p).map(Some)
        }
    };
    match parts.as_slice() {
        [c] => Ok((None, None, port(c)?, proto)),
        [h, c] => Ok((None, opt_port(h)?, port(c)?, proto)),
        [ip, h, c] => Ok((
            Some(ip.parse().map_err(|_| bad())?),
            opt_port(h)?,
            port(c)?,
            proto,
        )),
        _ => Err(bad()),
    }
}

/// Parse `[IP:]HOSTPORT[/tcp|/udp]` (what `unpublish` takes).
pub fn parse_unpublish_spec(spec: &str) -> Result<(Option<Ipv4Addr>, u16, Proto), Error> {
    let bad = || Error::BadPortSpec(crate::error::shown(spec));
    let (body, proto) = split_proto(spec)?;
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
    match body.rsplit_once(':') {
        Some((ip, h)) => Ok((Some(ip.parse().map_err(|_| bad())?), port(h)?, proto)),
        None => Ok((None, port(body)?, proto)),
    }
}

/// Parse an uplink address `ADDR/PREFIX` (host bits set, unlike a network's subnet).
fn parse_uplink_addr(s: &str) -> Result<(Ipv4Addr, Ipv4Cidr), Error> {
    let bad = || Error::BadUplinkAddr(crate::error::shown(s));
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let prefix: u8 = p.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&prefix) {
        return Err(bad());
    }
    let mask = u32::MAX << (32 - u32::from(prefix));
    let subnet = Ipv4Cidr::new(Ipv4Addr::from(u32::from(ip) & mask), prefix).map_err(|_| bad())?;
    if !subnet.is_host(ip) {
        return Err(bad());
    }
    Ok((ip, subnet))
}

impl Switch {
    fn least_loaded_worker(&self, st: &State) -> usize {
        let mut load = vec![0usize; self.epolls.len()];
        for e in st.networks.values().flat_map(|n| n.endpoints.iter()) {
            load[e.port.worker] += 1;
        }
        if let Some(u) = &st.uplink {
            load[u.port.worker] += 1;
        }
        (0..load.len()).min_by_key(|&w| load[w]).unwrap_or(0)
    }

    /// `network link A B` (or `unlink` with `link == false`).
    pub fn link(&self, a: &str, b: &str, link: bool) -> Result<(), Error> {
        self.mutate(|st| self.link_locked(st, a, b, link))
    }

    fn link_locked(&self, st: &mut State, a: &str, b: &str, link: bool) -> Result<(), Error> {
        for n in [a, b] {
            if !st.networks.contains_key(n) {
                return Err(Error::NetworkNotFound(n.to_string()));
            }
        }
        if a == b {
            return Err(Error::SelfLink(a.to_string()));
        }
        if let (Some(x), Some(y)) = (st.networks.get(a), st.networks.get(b)) {
            if link && x.subnet.overlaps(&y.subnet) {
                return Err(Error::SubnetOverlap {
                    subnet: x.subnet.to_string(),
                    other: b.to_string(),
                    other_subnet: y.subnet.to_string(),
                });
            }
        }
        for (x, y) in [(a, b), (b, a)] {
            let links = &mut st
                .networks
                .get_mut(x)
                .ok_or_else(|| Error::NetworkNotFound(x.to_string()))?
                .links;
            if link {
                links.insert(y.to_string());
            } else if !links.remove(y) {
                return Err(Error::NotLinked(a.to_string(), b.to_string()));
            }
        }
        self.sync(st);
        log::info!(
            "networks {a} and {b} {}",
            if link { "linked" } else { "unlinked" }
        );
        Ok(())
    }

    /// An uplink with no device ([`Device::Sink`]; `req.iface` is only a name): what the switch
    /// sends out is discarded (a capture on `uplink` sees it), frames arrive through
    /// [`Switch::inject`]. For fuzzing and tests.
    pub fn set_uplink_sink(&self, req: &UplinkSet) -> Result<UplinkInfo, Error> {
        self.mutate(|st| {
            self.set_uplink_locked_with(st, req, true)?;
            self.uplink_info_locked(st)
        })
    }

    /// `uplink set`.
    pub fn set_uplink(&self, req: &UplinkSet) -> Result<UplinkInfo, Error> {
        self.mutate(|st| {
            self.set_uplink_locked(st, req)?;
            self.uplink_info_locked(st)
        })
    }

    fn set_uplink_locked(&self, st: &mut State, req: &UplinkSet) -> Result<(), Error> {
        self.set_uplink_locked_with(st, req, false)
    }

    fn set_uplink_locked_with(
        &self,
        st: &mut State,
        req: &UplinkSet,
        sink: bool,
    ) -> Result<(), Error> {
        check_name("interface", &req.iface, 15)?;
        let (ip, subnet) = parse_uplink_addr(&req.ip)?;
        let gateway = req.gateway.as_deref().map(parse_ipv4).transpose()?;
        if let Some(g) = gateway {
            if !subnet.is_host(g) || g == ip {
                return Err(Error::GatewayOutside {
                    gateway: g,
                    subnet: subnet.to_string(),
                });
            }
        }
        if let Some(n) = st.networks.values().find(|n| n.subnet.overlaps(&subnet)) {
            return Err(Error::UplinkOverlap {
                uplink: subnet.to_string(),
                network: n.name.clone(),
                subnet: n.subnet.to_string(),
            });
        }
        let dev = if sink {
            Device::Sink(crate::sys::packet::VNET_HDR_LEN)
        } else {
            Device::Packet(open_uplink(&req.iface, self.epolls.len())?)
        };
        self.remove_uplink_locked(st);
        let mac = MacAddr::gateway_for(&format!("uplink/{}", req.iface));
        let port = self.infra_port(st, "uplink".into(), crate::port::UPLINK_NET, dev, mac, ip)?;
        st.uplink = Some(UplinkState {
            req: req.clone(),
            ip,
            subnet,
            gateway,
            port,
            neigh: Arc::new(NeighCache::new(300_000)),
            resolver: if sink { None } else { host_resolver() },
        });
        self.sync(st);
        log::info!(
            "uplink {} set: {ip}/{} gateway {:?}",
            req.iface,
            subnet.prefix_len(),
            gateway
        );
        Ok(())
    }

    fn remove_uplink_locked(&self, st: &mut State) -> bool {
        let Some(u) = st.uplink.take() else {
            return false;
        };
        self.unregister(&u.port);
        self.sync(st);
        self.shared.ct.flush(None);
        release_port(u.port);
        true
    }

    /// `uplink rm`.
    pub fn remove_uplink(&self) -> Result<(), Error> {
        self.mutate(|st| {
            if self.remove_uplink_locked(st) {
                Ok(())
            } else {
                Err(Error::NoUplink)
            }
        })?;
        log::info!("uplink removed");
        Ok(())
    }

    /// `uplink show`.
    pub fn uplink(&self) -> Result<UplinkInfo, Error> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.uplink_info_locked(&st)
    }

    fn uplink_info_locked(&self, st: &State) -> Result<UplinkInfo, Error> {
        let u = st.uplink.as_ref().ok_or(Error::NoUplink)?;
        let now = self.shared.now_ms();
        Ok(UplinkInfo {
            iface: u.req.iface.clone(),
            ip: u.ip,
            prefix_len: u.subnet.prefix_len(),
            gateway: u.gateway,
            mac: u.port.mac.to_string(),
            port: u.port.name.clone(),
            neighbours: u
                .neigh
                .entries(now)
                .into_iter()
                .map(|e| NeighInfo {
                    ip: e.ip,
                    mac: e.mac.to_string(),
                    age_secs: e.age_ms / 1000,
                })
                .collect(),
        })
    }

    /// `publish`.
    pub fn publish(&self, req: &PublishRequest) -> Result<PublishInfo, Error> {
        self.mutate(|st| self.publish_locked(st, req))
    }

    fn publish_locked(&self, st: &mut State, req: &PublishRequest) -> Result<PublishInfo, Error> {
        check_name("namespace", &req.netns, 255)?;
        let (ip, host, ctr, proto) = parse_publish_spec(req.spec.trim())?;
        let net = match &req.network {
            Some(n) => st
                .networks
                .get(n)
                .ok_or_else(|| Error::NetworkNotFound(n.clone()))?,
            None => {
                let mut nets: Vec<&Net> = st
                    .networks
                    .values()
                    .filter(|n| n.endpoint_ip(&req.netns).is_some())
                    .collect();
                nets.sort_by_key(|n| n.id);
                nets.first()
                    .copied()
                    .ok_or_else(|| Error::NoEndpoint(req.netns.clone()))?
            }
        };
        if net.endpoint_ip(&req.netns).is_none() {
            return Err(Error::NotAttached {
                netns: req.netns.clone(),
                network: net.name.clone(),
            });
        }
        let taken = |port: u16| {
            st.published
                .iter()
                .find(|p| p.proto == proto && p.host_port == port)
        };
        let host_port = match host {
            Some(h) => {
                if let Some(o) = taken(h) {
                    return Err(Error::PortInUse {
                        proto: proto.name(),
                        port: h,
                        owner: format!("{} (network {})", o.netns, o.network),
                    });
                }
                h
            }
            None => {
                let (lo, hi) = (
                    *nat::conntrack::PORT_RANGE.start(),
                    *nat::conntrack::PORT_RANGE.end(),
                );
                (lo..=hi)
                    .find(|p| taken(*p).is_none())
                    .ok_or(Error::NoFreePort)?
            }
        };
        let ps = PublishState {
            netns: req.netns.clone(),
            network: net.name.clone(),
            proto,
            ip,
            host_port,
            ctr_port: ctr,
        };
        let info = ps
            .info(net)
            .ok_or_else(|| Error::NoEndpoint(req.netns.clone()))?;
        st.published.push(ps);
        self.sync(st);
        log::info!(
            "published {}:{}/{} -> {} {}:{}",
            ip.map_or("*".into(), |i| i.to_string()),
            host_port,
            proto.name(),
            req.netns,
            info.endpoint_ip,
            ctr
        );
        Ok(info)
    }

    /// `unpublish`.
    pub fn unpublish(&self, req: &UnpublishRequest) -> Result<(), Error> {
        let mut st = self.lock()?;
        let (ip, host_port, proto) = parse_unpublish_spec(req.spec.trim())?;
        let i = st
            .published
            .iter()
            .position(|p| {
                p.netns == req.netns
                    && p.proto == proto
                    && p.host_port == host_port
                    && ip.is_none_or(|ip| p.ip == Some(ip))
            })
            .ok_or_else(|| Error::NotPublished {
                spec: req.spec.clone(),
                netns: req.netns.clone(),
            })?;
        st.published.remove(i);
        self.shared.ct.remove_where(|f| {
            f.kind != nat::conntrack::NatKind::Snat
                && f.orig.proto == proto
                && f.orig.dport == host_port
        });
        self.sync(&st);
        self.persist(&st);
        Ok(())
    }

    /// `conntrack ls`.
    pub fn conntrack(&self, network: Option<&str>) -> Result<Vec<ConntrackEntry>, Error> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let zone = zone_of(&st, network)?;
        let names: BTreeMap<NetId, &str> = st
            .networks
            .values()
            .map(|n| (n.id, n.name.as_str()))
            .collect();
        let now = self.shared.now_ms();
        let ct = &self.shared.ct;
        let mut v: Vec<ConntrackEntry> = ct
            .flows(zone)
            .iter()
            .map(|f| ConntrackEntry {
                proto: f.orig.proto.name().into(),
                kind: f.kind.name().into(),
                network: names
                    .get(&f.zone)
                    .map_or_else(|| "-".into(), |s| s.to_string()),
                orig: f.orig.to_string(),
                reply: f.reply.to_string(),
                state: f.state_name().into(),
                expires_secs: (f.last_seen() + f.timeout(&ct.timeouts)).saturating_sub(now) / 1000,
            })
            .collect();
        v.sort_by(|a, b| (&a.proto, &a.orig).cmp(&(&b.proto, &b.orig)));
        Ok(v)
    }

    /// `conntrack flush`.
    pub fn conntrack_flush(&self, network: Option<&str>) -> Result<FlushInfo, Error> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let zone = zone_of(&st, network)?;
        Ok(FlushInfo {
            flushed: self.shared.ct.flush(zone),
        })
    }
}

/// The first usable IPv4 nameserver of the daemon's /etc/resolv.conf (loopback stubs such as
/// systemd-resolved's 127.0.0.53 are not reachable through the uplink and are skipped).
fn host_resolver() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|v| v.trim().parse::<Ipv4Addr>().ok())
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

/// Point `/etc/netns/NETNS/resolv.conf` at the gateways of the networks `netns` is attached to
/// (so `ip netns exec NETNS` programs resolve endpoint names), keeping the original aside; with
/// no attachment left, put the original back. Failures are logged, never fatal.
fn write_resolv_conf(st: &State, netns: &str) {
    let dir = PathBuf::from("/etc/netns").join(netns);
    let file = dir.join("resolv.conf");
    let saved = dir.join("resolv.conf.vswitchd-orig");
    let mut nets: Vec<&Net> = st
        .networks
        .values()
        .filter(|n| n.endpoint_ip(netns).is_some())
        .collect();
    nets.sort_by_key(|n| n.id);
    let result = (|| -> std::io::Result<()> {
        if nets.is_empty() {
            if saved.exists() {
                std::fs::rename(&saved, &file)?;
            } else if is_ours(&file) {
                std::fs::remove_file(&file)?;
                let _ = std::fs::remove_dir(&dir); // only if empty
            }
            return Ok(());
        }
        std::fs::create_dir_all(&dir)?;
        if file.exists() && !is_ours(&file) && !saved.exists() {
            std::fs::rename(&file, &saved)?;
        }
        let mut text = String::from("# written by vswitchd: the network gateways answer DNS\n");
        for n in nets {
            text.push_str(&format!("nameserver {}\n", n.gateway));
        }
        persist::write_atomic(&file, text.as_bytes())
    })();
    if let Err(e) = result {
        log::warn!("updating {} failed: {e}", file.display());
    }
}

fn is_ours(file: &std::path::Path) -> bool {
    std::fs::read_to_string(file).is_ok_and(|t| t.starts_with("# written by vswitchd"))
}

impl Switch {
    /// Open the VTEP sockets for UDP `port` unless they exist.
    fn ensure_vtep(&self, st: &mut State, port: u16) -> Result<(), Error> {
        if st.vteps.contains_key(&port) {
            return Ok(());
        }
        let src = self.opts.underlay_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let udp = std::net::UdpSocket::bind(std::net::SocketAddrV4::new(src, port))
            .map_err(Error::device("bind VXLAN socket"))?;
        udp.set_nonblocking(true)
            .map_err(Error::device("configure VXLAN socket"))?;
        if let Err(e) = crate::sys::udp::enable_gro(&udp) {
            log::warn!("UDP GRO unavailable on the VXLAN socket ({e}): one datagram per read");
        }
        if let Err(e) = crate::sys::set_rcvbuf(&udp, crate::sys::SOCKET_RCVBUF) {
            log::warn!("VXLAN socket keeps the default receive buffer ({e})");
        }
        let raw = crate::sys::udp::RawIpSender::open()
            .map_err(Error::device("open raw socket for VXLAN"))?;
        let dev = Device::Vxlan(crate::port::VxlanDev {
            udp,
            raw,
            port,
            src,
        });
        let p = self.infra_port(
            st,
            format!("vxlan{port}"),
            crate::port::VXLAN_NET,
            dev,
            MacAddr::default(),
            src,
        )?;
        log::info!("VTEP listening on {src}:{port}");
        st.vteps.insert(port, p);
        Ok(())
    }

    /// A port that is not an endpoint (the uplink, a VTEP): numbered, given to the least loaded
    /// worker and registered with it.
    fn infra_port(
        &self,
        st: &mut State,
        name: String,
        network: NetId,
        dev: Device,
        mac: MacAddr,
        ip: Ipv4Addr,
    ) -> Result<Arc<Port>, Error> {
        let worker = self.least_loaded_worker(st);
        let id = st.next_port;
        st.next_port += 1;
        let port = Arc::new(Port {
            id,
            name,
            network,
            dev,
            mac,
            ip,
            worker,
            stats: PortStats::default(),
            taps: Arc::new(Taps::default()),
            flood: FloodLimiter::new(self.opts.flood_rate),
            spoof_check: false,
        });
        self.register(&port)
            .map_err(Error::device("register port with worker"))?;
        Ok(port)
    }

    fn drop_unused_vteps(&self, st: &mut State) {
        let used: BTreeSet<u16> = st
            .networks
            .values()
            .filter(|n| n.vni.is_some())
            .map(|n| n.vxlan_port)
            .collect();
        let gone: Vec<u16> = st
            .vteps
            .keys()
            .filter(|p| !used.contains(p))
            .copied()
            .collect();
        for p in gone {
            if let Some(v) = st.vteps.remove(&p) {
                self.unregister(&v);
                self.sync(st);
                release_port(v);
            }
        }
    }

    /// `peer add` (`add == true`) and `peer rm`.
    pub fn peer(&self, network: &str, ip: &str, add: bool) -> Result<NetworkInfo, Error> {
        let ip = parse_ipv4(ip)?;
        self.mutate(|st| {
            let net = st
                .networks
                .get_mut(network)
                .ok_or_else(|| Error::NetworkNotFound(network.to_string()))?;
            if net.vni.is_none() {
                return Err(Error::NotOverlay(network.to_string()));
            }
            if add {
                net.peers.insert(ip);
            } else if net.peers.remove(&ip) {
                // Traffic to the peer stops now: forget what was learned behind it.
                net.remote.forget_vtep(ip);
            } else {
                return Err(Error::NotAPeer {
                    ip,
                    network: network.to_string(),
                });
            }
            let info = net.info(&st.published);
            self.sync(st);
            log::info!(
                "network {network}: peer {ip} {}",
                if add { "added" } else { "removed" }
            );
            Ok(info)
        })
    }

    /// `fdb add NETWORK MAC --vtep IP`: a static remote entry (not persisted across restarts).
    pub fn fdb_add(&self, req: &FdbAdd) -> Result<(), Error> {
        let mac: MacAddr = req.mac.parse()?;
        if !mac.is_valid_unicast() {
            return Err(Error::MacNotUnicast(mac.to_string()));
        }
        let vtep = parse_ipv4(&req.vtep)?;
        let st = self.lock()?;
        let net = st
            .networks
            .get(&req.network)
            .ok_or_else(|| Error::NetworkNotFound(req.network.clone()))?;
        if net.vni.is_none() {
            return Err(Error::NotOverlay(req.network.clone()));
        }
        net.remote.add_static(mac.0, vtep);
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn publish_specs() {
        assert_eq!(
            parse_publish_spec("80").unwrap(),
            (None, None, 80, Proto::Tcp)
        );
        assert_eq!(
            parse_publish_spec("8080:80").unwrap(),
            (None, Some(8080), 80, Proto::Tcp)
        );
        assert_eq!(
            parse_publish_spec("5353:53/udp").unwrap(),
            (None, Some(5353), 53, Proto::Udp)
        );
        assert_eq!(
            parse_publish_spec("10.0.0.1:8080:80/tcp").unwrap(),
            (Some(Ipv4Addr::new(10, 0, 0, 1)), Some(8080), 80, Proto::Tcp)
        );
        assert_eq!(
            parse_publish_spec("10.0.0.1::80").unwrap(),
            (Some(Ipv4Addr::new(10, 0, 0, 1)), None, 80, Proto::Tcp)
        );
        for bad in [
            "",
            "0",
            "x",
            "80/sctp",
            "70000",
            "1:2:3:4",
            "banana:80:80",
            "8080:0",
        ] {
            assert!(
                matches!(parse_publish_spec(bad), Err(Error::BadPortSpec(_))),
                "{bad}"
            );
        }
        assert_eq!(
            parse_unpublish_spec("8080").unwrap(),
            (None, 8080, Proto::Tcp)
        );
        assert_eq!(
            parse_unpublish_spec("10.0.0.1:53/udp").unwrap(),
            (Some(Ipv4Addr::new(10, 0, 0, 1)), 53, Proto::Udp)
        );
        assert!(parse_unpublish_spec("x/udp").is_err());
    }

    #[test]
    fn uplink_addresses() {
        let (ip, sn) = parse_uplink_addr("192.168.50.2/24").unwrap();
        assert_eq!(
            (ip.to_string(), sn.to_string()),
            ("192.168.50.2".into(), "192.168.50.0/24".into())
        );
        for bad in [
            "192.168.50.2",
            "192.168.50.0/24",
            "192.168.50.255/24",
            "x/24",
            "1.2.3.4/33",
        ] {
            assert!(parse_uplink_addr(bad).is_err(), "{bad}");
        }
    }
}
