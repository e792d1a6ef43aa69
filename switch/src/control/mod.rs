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
//! - `persist`: durable file writes, the state file and the saved connections;
//! - `resolv`: the namespaces' resolv.conf;
//! - `views`: read-only listings (networks, ports, FDB, stats, capture, conntrack, uplink);
//! - `harness` (feature `harness`): device-less entries for fuzzing and tests.
//!
//! The datapath never takes the control lock: it reads the snapshot `Switch::sync` swaps in.
//! State is persisted to `STATE_DIR/state.json` so a restarted daemon recreates its networks
//! and endpoints.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

mod devices;
mod endpoints;
#[cfg(feature = "harness")]
mod harness;
mod networks;
mod persist;
mod resolv;
mod snapshot;
mod state;
mod uplink;
mod views;

pub use persist::StateDirLock;
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

/// The switch: datapath workers plus the control state.
pub struct Switch {
    opts: Options,
    shared: Arc<Shared>,
    epolls: Vec<Arc<Epoll>>,
    counters: Vec<Arc<WorkerCounters>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    state: Mutex<State>,
    next_session: AtomicU64,
    /// Buffers for `Switch::inject` (feature `harness`).
    #[cfg(feature = "harness")]
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
            state: Mutex::new(State::new()),
            next_session: AtomicU64::new(1),
            #[cfg(feature = "harness")]
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

    /// Run a state change under the control lock and persist the state when it succeeds; then,
    /// with the lock released, do what the change left for after it ([`AfterUnlock`]), before
    /// returning: a removed port's device is gone when the verb answers.
    fn mutate<T>(&self, f: impl FnOnce(&mut State) -> Result<T, Error>) -> Result<T, Error> {
        let mut st = self.lock()?;
        let r = f(&mut st);
        if r.is_ok() {
            self.persist(&st);
        }
        Self::unlock(st);
        r
    }

    /// Release the control lock, then run the work left in `after_unlock`, in order.
    fn unlock(mut st: MutexGuard<'_, State>) {
        let after = std::mem::take(&mut st.after_unlock);
        drop(st);
        for job in after {
            job.run();
        }
    }

    /// The control lock, refused once the switch is shutting down (for changes).
    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
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
        let mut st = self.read();
        if st.shutting_down {
            return;
        }
        st.shutting_down = true;
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
            .networks
            .values()
            .flat_map(|n| n.endpoints.iter())
            .filter(|e| !matches!(e.port.dev, Device::Sink(_)))
            .map(|e| e.netns.clone())
            .collect();
        let ports: Vec<Arc<Port>> = st
            .networks
            .values_mut()
            .flat_map(|net| net.endpoints.drain(..))
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
    use crate::model::{AttachRequest, NetworkCreate};

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
