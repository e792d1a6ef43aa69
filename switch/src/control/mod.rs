//! The control plane: the [`Switch`] facade. It starts the datapath's workers and the
//! housekeeping thread, serialises every API verb on one lock (`Switch::mutate` persists the
//! state after each change) and shuts down. The verbs and everything they use live beside it,
//! one concern per file:
//! - `state`: the state model, the API's spec parsers and the checks made before any device is
//!   touched (pure, unit-tested without devices);
//! - `networks`, `endpoints`, `uplink`: the verbs (networks, links, peers and static remote MACs;
//!   attach and detach; the uplink, published ports and connection tracking);
//! - `snapshot`: the datapath's configuration built from the state, and its installation;
//! - `devices`: the policy of TAP, namespace, uplink and VTEP plumbing (`sys` is the mechanism);
//! - `persist`: durable file writes, restore at start-up and the saved connections;
//! - `journal`: the state on disk, written in O(change) (a snapshot and an append-only journal);
//! - `watch`: pending endpoints and a missing uplink retried, deleted namespaces and vanished
//!   uplink interfaces noticed (the housekeeping thread runs it every second);
//! - `resolv`: the namespaces' resolv.conf;
//! - `views`: read-only listings (networks, ports, FDB, stats, capture, conntrack, uplink);
//! - `harness` (feature `harness`): device-less entries for fuzzing and tests.
//!
//! The datapath never takes the control lock: it reads the snapshot `Switch::sync` swaps in.
//! Every change is saved in `STATE_DIR` before it is answered (or taken back and refused), so a
//! restarted daemon recreates its networks and endpoints.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::counters::WorkerCounters;
use crate::datapath::{Config, Shared, Worker};
use crate::error::Error;
use crate::port::{Device, Port};
use crate::sys::epoll::Epoll;
use nat::{Conntrack, Timeouts};
use state::State;

mod cluster;
mod devices;
mod endpoints;
#[cfg(feature = "harness")]
mod harness;
mod journal;
mod networks;
mod persist;
mod resolv;
mod snapshot;
mod state;
mod trace;
mod uplink;
mod views;
mod watch;

use journal::Store;

pub use persist::{write_atomic, StateDirLock};
pub use state::{parse_publish_spec, parse_unpublish_spec};

/// Work a verb leaves for after the control lock is released (see [`Switch::mutate`]): what
/// waits for the workers or depends on a device being gone, so no lock is held across it.
pub(super) enum AfterUnlock {
    /// Drop a removed port once the workers have let go of it (closing its device).
    Release(Arc<Port>),
    /// After a detach, route the namespace by its next attachment's gateway, once the device
    /// that had the default route is gone.
    DefaultRoute {
        netns: String,
        gateway: Ipv4Addr,
        ifname: String,
    },
}

impl AfterUnlock {
    fn run(self) {
        match self {
            AfterUnlock::Release(port) => devices::release_port(port),
            AfterUnlock::DefaultRoute {
                netns,
                gateway,
                ifname,
            } => endpoints::add_default_route(&netns, gateway, ifname),
        }
    }
}

/// How to take back a change whose save failed (see [`Switch::mutate`]): the inverse of each
/// verb that adds something. Verbs that remove something the switch cannot give back (a device,
/// tracked connections) save first and act after, so they have no undo.
pub(in crate::control) enum Undo {
    /// Remove the network created.
    Network(String),
    /// Unlink (`true`) or link again (`false`) two networks.
    Link(String, String, bool),
    /// Remove (`true`) or add back (`false`) a peer.
    Peer(String, std::net::IpAddr, bool),
    /// Detach the endpoint attached (its device goes).
    Endpoint { netns: String, network: String },
    /// Remove the published port (protocol, host port).
    Publish(nat::Proto, u16),
    /// Put the previous uplink back (or none), with its sockets: its release is called off.
    Uplink(Option<Box<state::UplinkState>>),
    /// Delete the keys written to etcd (cluster mode).
    ClusterKeys(Vec<String>),
}

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
    /// Local VTEP address (the source of VXLAN packets), IPv4 or IPv6 (an IPv6 underlay: the
    /// peers are IPv6 too); `None` lets the kernel pick per route (IPv4).
    pub underlay_ip: Option<std::net::IpAddr>,
    /// Keep endpoint devices when the daemon stops or dies (persistent TAPs), and take them back
    /// by name on the next start.
    pub live_restore: bool,
    /// Queues per endpoint TAP (at most one per worker; 0: one per worker).
    pub tap_queues: usize,
    /// How long a worker keeps polling its ports after the last frame before it sleeps.
    pub poll: Duration,
    /// Cluster mode: how this node joins (`vswitchd --cluster`).
    pub cluster: Option<crate::cluster::ClusterOptions>,
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
            cluster: None,
        }
    }
}

/// The switch: datapath workers plus the control state.
pub struct Switch {
    opts: Options,
    shared: Arc<Shared>,
    epolls: Vec<Arc<Epoll>>,
    counters: Vec<Arc<WorkerCounters>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    state: Mutex<State>,
    /// The state directory's files (`None` without `--state-dir`). Taken under the control
    /// lock only.
    store: Mutex<Option<Store>>,
    /// The alias of this daemon's endpoint devices (see `devices::device_mark`).
    mark: String,
    /// Cluster mode: this node's agent.
    cluster: Option<Arc<crate::cluster::Agent>>,
    /// Restore is running: (endpoints done, endpoints in the state file).
    restoring: AtomicBool,
    restored: AtomicUsize,
    to_restore: AtomicUsize,
    next_session: AtomicU64,
    /// Buffers for `Switch::inject` (feature `harness`) and the packet tracer: one frame at a
    /// time.
    scratch: Mutex<Option<crate::datapath::Scratch>>,
}

impl Switch {
    /// Start the worker threads and the housekeeping thread, and restore persisted state.
    pub fn start(opts: Options) -> Result<Arc<Switch>, Error> {
        let underlay_v6 = opts.underlay_ip.is_some_and(|a| a.is_ipv6());
        let workers = opts.workers.max(1);
        let shared = Arc::new(Shared {
            config: ArcSwap::from_pointee(Config::default()),
            clock: Instant::now(),
            shutdown: AtomicBool::new(false),
            ct: Arc::new(Conntrack::new(opts.ct_max, opts.ct_timeouts)),
            ct6: Arc::new(Conntrack::new(opts.ct_max, opts.ct_timeouts)),
            icmp6_errors: crate::port::FloodLimiter::new(crate::datapath::ICMP6_ERRORS_PER_S),
            bus: Arc::new(crate::events::Bus::default()),
            ct_full_note: crate::port::FloodLimiter::new(1),
            packet_notes: crate::port::FloodLimiter::new(crate::datapath::NOTES_PER_S),
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
        let mark = devices::device_mark(opts.state_dir.as_deref());
        let cluster = match &opts.cluster {
            Some(c) => Some(crate::cluster::Agent::new(c.clone()).map_err(Error::Cluster)?),
            None => None,
        };
        let sw = Arc::new(Switch {
            cluster,
            opts,
            shared: shared.clone(),
            epolls,
            counters,
            threads: Mutex::new(threads),
            state: Mutex::new({
                let mut st = State::new();
                st.underlay_v6 = underlay_v6;
                st
            }),
            store: Mutex::new(None),
            mark,
            restoring: AtomicBool::new(false),
            restored: AtomicUsize::new(0),
            to_restore: AtomicUsize::new(0),
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
                    // Flood limiting that ended without a further flood from the port.
                    for p in &net.ports {
                        if p.flood.recovered(now) && p.flood.transition(true) == Some(false) {
                            sw.shared.bus.publish(
                                crate::events::Topic::Events,
                                "flood_limit_end",
                                || serde_json::json!({"port": p.name, "network": &*net.name}),
                            );
                        }
                    }
                }
                let gone = sw.shared.ct.expire_flows(now);
                let gone6 = sw.shared.ct6.expire_flows(now);
                sw.flows_gone(&gone, "timeout");
                sw.flows_gone(&gone6, "timeout");
                sw.flows_gone(&sw.shared.ct.take_evicted(), "evicted");
                sw.flows_gone(&sw.shared.ct6.take_evicted(), "evicted");
                if let Some(up) = &cfg.uplink {
                    for _ in 0..up.neigh.expire(now) {
                        WorkerCounters::drop(&hk_counters, crate::counters::Drop::ArpTimeout);
                    }
                    let unresolved = up.v6.as_ref().map_or(0, |v| v.neigh.expire(now));
                    for _ in 0..unresolved {
                        WorkerCounters::drop(&hk_counters, crate::counters::Drop::NeighborUnknown);
                    }
                }
                drop(cfg);
                sw.watch();
            })
            .map_err(Error::device("spawn housekeeping thread"))?;
        sw.threads.lock().unwrap_or_else(|p| p.into_inner()).push(t);
        if let Some(dir) = &sw.opts.state_dir {
            let loaded = Store::open(dir).map_err(|source| Error::Device {
                step: "read the state in the state directory",
                source,
            })?;
            *sw.store.lock().unwrap_or_else(|p| p.into_inner()) = Some(loaded.store);
            let empty = state::Persisted {
                journal: loaded.state.journal,
                ..Default::default()
            };
            if loaded.state == empty {
                // Nothing to restore (a first start): changes are taken at once. Orphans of
                // an earlier daemon whose state was lost still go, before the API answers.
                sw.restore(loaded.state);
                sw.join_cluster()?;
                return Ok(sw);
            }
            sw.restoring.store(true, Ordering::Release);
            sw.to_restore
                .store(loaded.state.endpoints.len(), Ordering::Release);
            let bg = sw.clone();
            std::thread::Builder::new()
                .name("vs-restore".into())
                .spawn(move || bg.restore(loaded.state))
                .map_err(Error::device("spawn restore thread"))?;
        }
        sw.join_cluster()?;
        Ok(sw)
    }

    /// Cluster mode: start the agent's threads, once restore is under way (the views it hands
    /// over are applied when restore is done, on the restored state).
    fn join_cluster(self: &Arc<Self>) -> Result<(), Error> {
        let Some(agent) = &self.cluster else {
            return Ok(());
        };
        let me = Arc::downgrade(self);
        agent
            .start(Box::new(move |view| {
                if let Some(sw) = me.upgrade() {
                    sw.reconcile(view);
                }
            }))
            .map_err(Error::device("spawn cluster threads"))
    }

    /// While the state file is being restored: (endpoints done, endpoints to restore). Reads
    /// answer meanwhile with what is restored so far; changes are refused.
    pub fn restoring(&self) -> Option<(usize, usize)> {
        self.restoring.load(Ordering::Acquire).then(|| {
            (
                self.restored.load(Ordering::Acquire),
                self.to_restore.load(Ordering::Acquire),
            )
        })
    }

    /// Wait until restore has finished (for embedders and tests; the API does not wait).
    pub fn wait_restored(&self) {
        while self.restoring.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Run a state change under the control lock, save it (see [`Switch::commit`]) and answer;
    /// if it cannot be saved, take it back ([`Undo`]) and refuse. Then, with the lock released,
    /// do what the change left for after it ([`AfterUnlock`]), before returning: a removed
    /// port's device is gone when the verb answers.
    fn mutate<T>(&self, f: impl FnOnce(&mut State) -> Result<T, Error>) -> Result<T, Error> {
        let mut st = self.lock()?;
        let r = f(&mut st).and_then(|v| match self.commit(&mut st) {
            Ok(()) => Ok(v),
            Err(e) => {
                self.take_back(&mut st);
                Err(e)
            }
        });
        if r.is_ok() {
            self.maybe_compact(&st);
        }
        // A refused change left nothing to save (its checks come before any change, or it
        // undid itself).
        st.journal.clear();
        st.undo.clear();
        Self::unlock(st);
        r
    }

    /// Save the change the verb recorded in `st.journal`: appended to the journal and on disk
    /// when this returns. Verbs that remove what cannot be given back call it themselves
    /// before acting.
    fn commit(&self, st: &mut State) -> Result<(), Error> {
        let recs = std::mem::take(&mut st.journal);
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = store.as_mut() else {
            st.undo.clear();
            return Ok(());
        };
        if let Err(source) = s.append(&recs) {
            let path = s.journal_path().display().to_string();
            log::error!("saving a change to {path} failed: {source}; the change is taken back");
            return Err(Error::Save {
                path: crate::error::shown(&path),
                source,
            });
        }
        st.undo.clear();
        Ok(())
    }

    /// Compact the journal if it has grown enough: only once a verb is done, when the state
    /// holds everything journaled (a verb that saves before acting has not acted yet when it
    /// commits).
    fn maybe_compact(&self, st: &State) {
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = store.as_mut().filter(|s| s.wants_compaction()) {
            s.compact(st.persisted());
        }
    }

    /// Take back a change that could not be saved, last step first. Each undo is the inverse
    /// of a step that succeeded a moment ago; one that fails anyway is logged.
    fn take_back(&self, st: &mut State) {
        while let Some(u) = st.undo.pop() {
            let r = match u {
                Undo::Network(name) => st.remove_network(&name).map(|()| {
                    self.drop_unused_vteps(st);
                }),
                Undo::Link(a, b, linked) => st.link(&a, &b, !linked),
                Undo::Peer(net, ip, added) => st.peer(&net, ip, !added).map(|_| ()),
                Undo::Endpoint { netns, network } => {
                    self.remove_endpoint(st, &netns, &network).map(|_| ())
                }
                Undo::ClusterKeys(keys) => {
                    if let Some(agent) = &self.cluster {
                        cluster::delete_keys(agent, &keys);
                    }
                    Ok(())
                }
                Undo::Publish(proto, port) => {
                    st.published
                        .retain(|p| !(p.proto == proto && p.host_port == port));
                    Ok(())
                }
                Undo::Uplink(prev) => {
                    self.remove_uplink_locked(st);
                    if let Some(u) = prev {
                        st.after_unlock.retain(
                            |j| !matches!(j, AfterUnlock::Release(p) if Arc::ptr_eq(p, &u.port)),
                        );
                        let r = self.register(&u.port);
                        st.uplink = Some(*u);
                        r.map_err(Error::device("register port with worker"))
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(e) = r {
                log::error!("taking back a change that could not be saved failed: {e}");
            }
        }
        st.journal.clear();
        self.sync(st);
    }

    /// Release the control lock, then run the work left in `after_unlock`, in order.
    fn unlock(mut st: MutexGuard<'_, State>) {
        let after = std::mem::take(&mut st.after_unlock);
        drop(st);
        for job in after {
            job.run();
        }
    }

    /// The control lock for a change: refused while the state is being restored (the change
    /// could collide with what is not restored yet) and once the switch is shutting down.
    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        if let Some((done, total)) = self.restoring() {
            return Err(Error::Restoring { done, total });
        }
        let st = self.read();
        if st.shutting_down {
            return Err(Error::ShuttingDown);
        }
        Ok(st)
    }

    /// The control lock, also while shutting down (for the read-only views).
    fn read(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stop the workers and remove every device the daemon created. Persisted state is kept, so
    /// the next start recreates the endpoints.
    pub fn shutdown(&self) {
        // First, without the lock (a view being applied waits for it): the other nodes drop
        // this one now, not after its lease's TTL.
        if let Some(agent) = &self.cluster {
            agent.stop();
        }
        let mut st = self.read();
        if st.shutting_down {
            return;
        }
        st.shutting_down = true;
        // The whole state as one snapshot, before anything is taken down below (a failure
        // loses nothing: the journal holds every change). Not while restoring: the state is
        // only partly rebuilt, and the files already hold all of it.
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let restoring = self.restoring.load(Ordering::Acquire);
        if let Some(s) = store.as_mut().filter(|_| !restoring) {
            if let Err(e) = s.compact_now(st.persisted()) {
                log::warn!("writing the state snapshot on stop failed ({e}); the journal is kept");
            }
        }
        drop(store);
        if let Some(u) = st.uplink.take() {
            self.unregister(&u.port);
        }
        self.shared.shutdown.store(true, Ordering::Relaxed);
        // The workers see the flag within 100 ms and must be gone before their ports are. The
        // housekeeping thread sleeps a second between rounds: it is joined last, so that wait
        // overlaps the devices' removal instead of coming before it.
        let (workers, housekeeping): (Vec<_>, Vec<_>) = self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .partition(|t| t.thread().name() != Some("vs-housekeeping"));
        for t in workers {
            let _ = t.join();
        }
        self.shared.config.store(Arc::new(Config::default()));
        self.save_conntrack(&st);
        let namespaces: BTreeSet<String> = st
            .networks()
            .values()
            .flat_map(|n| n.endpoints.iter())
            .filter(|e| !matches!(e.port.dev, Device::Sink(_)))
            .map(|e| e.netns.clone())
            .collect();
        let ports: Vec<Arc<Port>> = st
            .take_all_endpoints()
            .into_iter()
            .map(|ep| ep.port)
            .collect();
        let n = ports.len();
        if self.opts.live_restore {
            // The devices stay (persistent TAPs) and so does the namespaces' resolver
            // configuration: the next daemon takes both over.
            Self::unlock(st);
            devices::release_ports(ports);
            housekeeping.into_iter().for_each(|t| drop(t.join()));
            log::info!("shut down: kept {n} endpoint device(s) for --live-restore");
            return;
        }
        // The gateways stop answering DNS with the daemon: give the namespaces their resolver
        // configuration back (a restart writes it again when it restores the endpoints). Each
        // one put back removes a file, and on a filesystem mounted with `discard` a removal
        // waits for the disk (300 namespaces on the test VM: 0.52 s one after the other, 0.05 s
        // in parallel).
        devices::in_parallel(namespaces.into_iter().collect(), |ns| {
            resolv::write_resolv_conf(&st, &ns)
        });
        // The devices go once the lock is released (no lock is held across a device wait).
        Self::unlock(st);
        devices::release_ports(ports);
        housekeeping.into_iter().for_each(|t| drop(t.join()));
        log::info!("shut down: removed {n} endpoint device(s)");
    }
}

#[cfg(all(test, feature = "harness"))]
mod test {
    use super::*;
    use crate::model::*;

    use super::journal::test::{files_starting, TempDir};

    /// A switch on a fresh state directory named after `tag`.
    fn with_state(tag: &str) -> (Arc<Switch>, TempDir) {
        let dir = std::env::temp_dir().join(format!("vswitch-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dir = TempDir(dir);
        let sw = Switch::start(Options {
            state_dir: Some(dir.0.clone()),
            ..Options::default()
        })
        .expect("start");
        sw.wait_restored();
        (sw, dir)
    }

    /// `p` in a canonical order (the journal appends; the state lists by network).
    fn sorted(mut p: state::Persisted) -> state::Persisted {
        p.endpoints
            .sort_by(|a, b| (&a.network, &a.netns).cmp(&(&b.network, &b.netns)));
        p.links.sort();
        p.published.sort_by(|a, b| a.spec.cmp(&b.spec));
        p.journal = 0;
        p
    }

    fn on_disk(dir: &std::path::Path) -> state::Persisted {
        sorted(Store::open(dir).expect("read state").state)
    }

    fn overlay(name: &str, subnet: &str, vni: u32) -> NetworkCreate {
        NetworkCreate {
            vni: Some(vni),
            // Its own port per test: the tests run at once.
            vxlan_port: Some(40_000 + vni as u16),
            peers: vec!["192.0.2.1".into()],
            ..NetworkCreate::flat(name, subnet)
        }
    }

    #[test]
    fn while_restoring_reads_answer_and_changes_are_refused_with_the_progress() {
        let sw = Switch::start(Options::default()).expect("start");
        sw.create_network(&NetworkCreate::flat("a", "10.1.0.0/24"))
            .unwrap();
        sw.restoring.store(true, Ordering::Release);
        sw.restored.store(3, Ordering::Release);
        sw.to_restore.store(10, Ordering::Release);
        assert_eq!(sw.restoring(), Some((3, 10)));
        assert_eq!(sw.networks().len(), 1);
        assert!(sw.capture("a").is_ok(), "captures are reads");
        let e = sw
            .create_network(&NetworkCreate::flat("b", "10.2.0.0/24"))
            .unwrap_err();
        assert!(matches!(e, Error::Restoring { done: 3, total: 10 }), "{e}");
        assert_eq!(e.status(), 503);
        assert!(e.to_string().contains("3 of 10"), "{e}");
        sw.restoring.store(false, Ordering::Release);
        assert!(sw
            .create_network(&NetworkCreate::flat("b", "10.2.0.0/24"))
            .is_ok());
        sw.shutdown();
    }

    #[test]
    fn what_is_on_disk_is_the_state_after_every_kind_of_change() {
        let (sw, dir) = with_state("journal");
        sw.create_network(&NetworkCreate::flat("a", "10.1.0.0/24"))
            .unwrap();
        sw.create_network(&NetworkCreate::flat("b", "10.2.0.0/24"))
            .unwrap();
        sw.create_network(&overlay("c", "10.3.0.0/24", 41)).unwrap();
        sw.link("a", "b", true).unwrap();
        sw.peer("c", "192.0.2.2", true).unwrap();
        sw.peer("c", "192.0.2.1", false).unwrap();
        sw.attach_sink(&AttachRequest::new("x", "a")).unwrap();
        sw.attach_sink(&AttachRequest::new("y", "b")).unwrap();
        sw.attach_sink(&AttachRequest::new("z", "c")).unwrap();
        sw.set_uplink_sink(&UplinkSet {
            iface: "up0".into(),
            ip: "192.168.50.2/24".into(),
            gateway: None,
            ip6: None,
            gateway6: None,
            ipv6_routed: false,
        })
        .unwrap();
        for (ns, spec) in [("x", "8080:80"), ("y", "8081:80/udp"), ("z", "8082:22")] {
            sw.publish(&PublishRequest {
                netns: ns.into(),
                spec: spec.into(),
                network: None,
            })
            .unwrap();
        }
        assert_eq!(on_disk(&dir), sorted(sw.read().persisted()));
        sw.unpublish(&UnpublishRequest {
            netns: "x".into(),
            spec: "8080".into(),
        })
        .unwrap();
        sw.detach("y", "b").unwrap();
        sw.link("a", "b", false).unwrap();
        sw.remove_network("b").unwrap();
        assert_eq!(on_disk(&dir), sorted(sw.read().persisted()));
        let p = on_disk(&dir);
        assert_eq!(p.networks.len(), 2);
        assert_eq!(p.endpoints.len(), 2);
        assert_eq!(p.published.len(), 1, "y's port went with it: {p:?}");
        sw.remove_uplink().unwrap();
        assert_eq!(on_disk(&dir), sorted(sw.read().persisted()));
        sw.shutdown();
    }

    #[test]
    fn the_journal_is_compacted_in_the_background_and_nothing_is_lost() {
        let (sw, dir) = with_state("compact");
        sw.store.lock().unwrap().as_mut().unwrap().compact_min = 8;
        for i in 0..40u32 {
            let name = format!("n{i}");
            sw.create_network(&NetworkCreate::flat(&name, &format!("10.{i}.0.0/24")))
                .unwrap();
            sw.attach_sink(&AttachRequest::new("x", &name)).unwrap();
            if i % 3 == 0 {
                sw.detach("x", &name).unwrap();
                sw.remove_network(&name).unwrap();
            }
            assert_eq!(on_disk(&dir), sorted(sw.read().persisted()), "after {i}");
        }
        sw.store.lock().unwrap().as_ref().unwrap().settle();
        let snap: state::Persisted =
            serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
        assert!(snap.journal > 2, "compacted only {} times", snap.journal);
        let journals = files_starting(&dir, "journal.");
        assert!(journals <= 2, "{journals} journals kept");
        sw.shutdown();
    }

    #[test]
    fn a_change_that_cannot_be_saved_is_taken_back_and_refused() {
        let (sw, _dir) = with_state("refuse");
        sw.create_network(&NetworkCreate::flat("a", "10.1.0.0/24"))
            .unwrap();
        sw.create_network(&overlay("c", "10.3.0.0/24", 42)).unwrap();
        sw.create_network(&NetworkCreate::flat("d", "10.4.0.0/24"))
            .unwrap();
        sw.attach_sink(&AttachRequest::new("x", "a")).unwrap();
        sw.set_uplink_sink(&UplinkSet {
            iface: "up0".into(),
            ip: "192.168.50.2/24".into(),
            gateway: None,
            ip6: None,
            gateway6: None,
            ipv6_routed: false,
        })
        .unwrap();
        sw.publish(&PublishRequest {
            netns: "x".into(),
            spec: "8080:80".into(),
            network: None,
        })
        .unwrap();
        let before = sorted(sw.read().persisted());
        let config = |sw: &Switch| {
            let c = sw.shared.config.load();
            (c.networks.len(), c.ports.len(), c.published.len())
        };
        let cfg_before = config(&sw);
        let vteps = sw.read().vteps().len();
        sw.store.lock().unwrap().as_mut().unwrap().full = true;
        let refused: Vec<(&str, Result<(), Error>)> = vec![
            (
                "create",
                sw.create_network(&overlay("e", "10.5.0.0/24", 43))
                    .map(drop),
            ),
            ("rm", sw.remove_network("d")),
            ("link", sw.link("a", "d", true)),
            ("peer add", sw.peer("c", "192.0.2.9", true).map(drop)),
            ("peer rm", sw.peer("c", "192.0.2.1", false).map(drop)),
            (
                "attach",
                sw.attach_sink(&AttachRequest::new("y", "a")).map(drop),
            ),
            ("detach", sw.detach("x", "a")),
            (
                "publish",
                sw.publish(&PublishRequest {
                    netns: "x".into(),
                    spec: "9090:90".into(),
                    network: None,
                })
                .map(drop),
            ),
            (
                "unpublish",
                sw.unpublish(&UnpublishRequest {
                    netns: "x".into(),
                    spec: "8080".into(),
                }),
            ),
            (
                "uplink set",
                sw.set_uplink_sink(&UplinkSet {
                    iface: "up1".into(),
                    ip: "192.168.60.2/24".into(),
                    gateway: None,
                    ip6: None,
                    gateway6: None,
                    ipv6_routed: false,
                })
                .map(drop),
            ),
            ("uplink rm", sw.remove_uplink()),
        ];
        for (verb, r) in refused {
            match r {
                Err(e @ Error::Save { .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("journal.") && msg.contains("No space"),
                        "{msg}"
                    );
                    assert_eq!(e.status(), 507);
                }
                other => panic!("{verb}: {other:?}"),
            }
            assert_eq!(sorted(sw.read().persisted()), before, "{verb}");
            assert_eq!(config(&sw), cfg_before, "{verb}");
        }
        assert_eq!(sw.read().vteps().len(), vteps, "the new VTEP went");
        // An address a refused attach took is free again.
        sw.store.lock().unwrap().as_mut().unwrap().full = false;
        let y = sw.attach_sink(&AttachRequest::new("y", "a")).unwrap();
        assert_eq!(y.ip.to_string(), "10.1.0.3");
        sw.shutdown();
    }

    #[test]
    fn a_port_waiting_for_release_does_not_hold_the_lock() {
        let sw = Switch::start(Options::default()).expect("start");
        sw.create_network(&NetworkCreate::flat("n", "10.1.0.0/24"))
            .expect("network");
        sw.attach_sink(&AttachRequest::new("a", "n"))
            .expect("attach");
        // A worker still on the old snapshot: the detach waits for it to let go of the port.
        let held = sw.shared.config.load_full();
        let detach = std::thread::spawn({
            let sw = sw.clone();
            move || sw.detach("a", "n")
        });
        let t0 = Instant::now();
        while !sw.network("n").expect("network").endpoints.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "the lock was held"
        );
        assert!(!detach.is_finished(), "the detach waits for the port");
        assert!(sw.networks().len() == 1, "views answer meanwhile");
        drop(held);
        detach.join().expect("detach thread").expect("detach");
        sw.shutdown();
    }
}
