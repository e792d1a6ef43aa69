//! The control plane: networks, endpoints (attach/detach), capture sessions and table dumps.
//!
//! Control operations serialise on one mutex; the datapath never takes it. After each change a
//! new [`Config`] snapshot is built and swapped in atomically. State is persisted to
//! `STATE_DIR/state.json` (written to a temporary file and renamed) so a restarted daemon
//! recreates its networks and endpoints.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::capture::{Session, Taps};
use crate::counters::WorkerCounters;
use crate::datapath::{Config, NeighTable, NetRt, Shared, Worker};
use crate::error::{check_name, Error};
use crate::fdb::{Fdb, PortId};
use crate::ipam::{parse_ipv4, Ipv4Cidr, Pool};
use crate::model::*;
use crate::port::{FloodLimiter, NetId, Port, PortStats};
use crate::sys::epoll::Epoll;
use crate::sys::netlink::{LinkChange, Netlink};
use crate::sys::netns::Netns;
use crate::sys::tap::Tap;
use crate::wire::MacAddr;

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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 1,
            fdb_aging: Duration::from_secs(300),
            state_dir: None,
            flood_rate: 20_000,
            fdb_limit: 65_536,
        }
    }
}

struct Endpoint {
    netns: String,
    ifname: String,
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
}

impl Net {
    fn info(&self) -> NetworkInfo {
        NetworkInfo {
            name: self.name.clone(),
            subnet: self.subnet.to_string(),
            gateway: self.gateway,
            gateway_mac: self.gateway_mac.to_string(),
            mtu: self.mtu,
            endpoints: self
                .endpoints
                .iter()
                .map(|e| self.endpoint_info(e))
                .collect(),
        }
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
        }
    }
}

#[derive(Default)]
struct State {
    networks: BTreeMap<String, Net>,
    next_net: NetId,
    next_port: PortId,
    shutting_down: bool,
}

/// What is persisted across restarts.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Persisted {
    /// Networks, in creation order.
    networks: Vec<NetworkCreate>,
    /// Endpoints with their resolved address, MAC and interface name.
    endpoints: Vec<AttachRequest>,
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
}

impl Switch {
    /// Start the worker threads and the housekeeping thread, and restore persisted state.
    pub fn start(opts: Options) -> Result<Arc<Switch>, Error> {
        let workers = opts.workers.max(1);
        let shared = Arc::new(Shared {
            config: ArcSwap::from_pointee(Config::default()),
            clock: Instant::now(),
            shutdown: AtomicBool::new(false),
        });
        let mut epolls = Vec::new();
        let mut counters = Vec::new();
        let mut threads = Vec::new();
        for i in 0..workers {
            let ep = Arc::new(Epoll::new().map_err(Error::device("create epoll instance"))?);
            let c = Arc::new(WorkerCounters::default());
            let w = Worker::new(shared.clone(), ep.clone(), c.clone());
            let t = std::thread::Builder::new()
                .name(format!("vs-worker-{i}"))
                .spawn(move || w.run())
                .map_err(Error::device("spawn worker thread"))?;
            epolls.push(ep);
            counters.push(c);
            threads.push(t);
        }
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
                for net in sw.shared.config.load().networks.values() {
                    net.fdb.age(now);
                }
            })
            .map_err(Error::device("spawn housekeeping thread"))?;
        sw.threads.lock().unwrap_or_else(|p| p.into_inner()).push(t);
        sw.restore();
        Ok(sw)
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
        let mut st = self.lock()?;
        let info = self.create_network_locked(&mut st, req)?;
        self.persist(&st);
        Ok(info)
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
        let mtu = req.mtu.unwrap_or(1500);
        if !(68..=65_535).contains(&mtu) {
            return Err(Error::Mtu(mtu));
        }
        if st.networks.contains_key(&req.name) {
            return Err(Error::NetworkExists(req.name.clone()));
        }
        if let Some(o) = st.networks.values().find(|n| n.subnet.overlaps(&subnet)) {
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
        };
        let info = net.info();
        st.networks.insert(req.name.clone(), net);
        self.publish(st);
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
        st.networks.values().map(Net::info).collect()
    }

    /// `network inspect`.
    pub fn network(&self, name: &str) -> Result<NetworkInfo, Error> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.networks
            .get(name)
            .map(Net::info)
            .ok_or_else(|| Error::NetworkNotFound(name.to_string()))
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
        self.publish(&st);
        self.persist(&st);
        log::info!("network {name} removed");
        Ok(())
    }

    /// `attach`: create a TAP endpoint for `req.netns` on `req.network`.
    pub fn attach(&self, req: &AttachRequest) -> Result<EndpointInfo, Error> {
        let mut st = self.lock()?;
        let info = self.attach_locked(&mut st, req)?;
        self.persist(&st);
        Ok(info)
    }

    fn attach_locked(&self, st: &mut State, req: &AttachRequest) -> Result<EndpointInfo, Error> {
        check_name("namespace", &req.netns, 255)?;
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
        let ns = Netns::open(&req.netns).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NetnsNotFound(req.netns.clone()),
            _ => Error::Device {
                step: "open network namespace",
                source: e,
            },
        })?;
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
            let tap = make_endpoint_device(&ns, req, mac, ip, net)?;
            Ok(tap)
        })();
        let (tap, ifname) = match result {
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
            tap,
            mac,
            ip,
            worker,
            stats: PortStats::default(),
            taps: Arc::new(Taps::default()),
            flood: FloodLimiter::new(self.opts.flood_rate),
        });
        net.neigh.insert(ip, mac);
        net.endpoints.push(Endpoint {
            netns: req.netns.clone(),
            ifname,
            port: port.clone(),
        });
        let info = net.endpoint_info(net.endpoints.last().expect("just pushed"));
        st.next_port += 1;
        self.publish(st);
        if let Err(e) = self.epolls[worker].add(port.tap.as_raw_fd(), u64::from(port.id)) {
            // Undo: without a receive queue the endpoint would be silently deaf.
            let _ = self.detach_locked(st, &req.netns, &req.network);
            return Err(Error::Device {
                step: "register port with worker",
                source: e,
            });
        }
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
        let mut st = self.lock()?;
        self.detach_locked(&mut st, netns, network)?;
        self.persist(&st);
        Ok(())
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
        let _ = self.epolls[ep.port.worker].delete(ep.port.tap.as_raw_fd());
        net.fdb.flush_port(ep.port.id);
        net.neigh.remove_if(&ep.port.ip, |_, m| *m == ep.port.mac);
        net.pool.release(ep.port.ip);
        self.publish(st);
        log::info!(
            "detached {}/{} from {network} ({})",
            netns,
            ep.ifname,
            ep.port.name
        );
        release_port(ep.port);
        Ok(())
    }

    /// Build and swap in a new datapath snapshot from the control state.
    fn publish(&self, st: &State) {
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
                }),
            );
        }
        self.shared.config.store(Arc::new(cfg));
    }

    /// `ports`.
    pub fn ports(&self) -> Vec<PortInfo> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
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
                    counters: e.port.stats.snapshot(),
                })
            })
            .collect();
        v.sort_by_key(|p| p.name[1..].parse::<u32>().unwrap_or(0));
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
            // Every frame entering the network from a port, plus what the switch itself sends.
            let mut taps: Vec<_> = n
                .endpoints
                .iter()
                .map(|e| (e.port.taps.clone(), true, false))
                .collect();
            taps.push((n.taps.clone(), false, true));
            return Ok(Session::start(id, taps));
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
        let mut n = 0;
        for net in st.networks.values_mut() {
            for ep in net.endpoints.drain(..) {
                release_port(ep.port);
                n += 1;
            }
        }
        log::info!("shut down: removed {n} endpoint device(s)");
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
                    })
                })
                .collect(),
        };
        let write = || -> std::io::Result<()> {
            let tmp = path.with_extension("json.tmp");
            let data = serde_json::to_vec_pretty(&p).map_err(std::io::Error::other)?;
            std::fs::write(&tmp, data)?;
            std::fs::rename(&tmp, &path)
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
            match self.attach_locked(&mut st, a) {
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
        self.persist(&st);
    }
}

/// Create the TAP device for an endpoint, configure it and move it into the namespace: MAC and
/// MTU first, then move and rename, then (inside the namespace) up, address and default route.
fn make_endpoint_device(
    ns: &Netns,
    req: &AttachRequest,
    mac: MacAddr,
    ip: Ipv4Addr,
    net: &Net,
) -> Result<(Tap, String), Error> {
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
    let tap = Tap::create("vs%d").map_err(Error::device("create TAP device"))?;
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

/// Drop the last reference to a removed port so its TAP closes (which deletes the device).
/// Workers may hold the previous snapshot for the rest of one wake-up; wait briefly for them.
fn release_port(port: Arc<Port>) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Arc::strong_count(&port) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(port);
}
