//! Cluster mode (`vswitchd --cluster etcd://...`): many hosts, one set of overlay networks.
//!
//! - [`keys`]: what is kept in etcd and the [`View`] of it each node follows (pure).
//! - [`etcd`]: the etcd v3 client (its JSON gateway, blocking, with failover).
//! - [`Agent`]: this node's two threads. *Presence* holds the node's short lease and its
//!   `nodes/NODE` key; *follow* lists the cluster, then watches it, and hands every new view to
//!   the switch (which makes its networks, peers, remote MACs, ARP answers and DNS names match).
//!   When etcd cannot be reached both retry every second; the datapath keeps forwarding on the
//!   last view, and the verbs that need the cluster fail with one line.
//!
//! The verbs themselves (create a cluster network, take an address, publish an endpoint) run
//! under the switch's control lock in `control/cluster.rs`; this module holds no switch state.

pub mod etcd;
pub mod keys;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use keys::{AddrRecord, EndpointKey, EndpointRecord, Keys, NodeRecord, View};

use etcd::{Etcd, EtcdError, EventKind};

/// How this node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// etcd client URLs (`etcd://HOST:PORT[,HOST:PORT...]`).
    pub urls: String,
    /// This node's name (unique in the cluster).
    pub node: String,
    /// Where the other nodes send this node's VXLAN.
    pub vtep: std::net::IpAddr,
    /// The lease TTL: a node gone this long is dropped by every other node.
    pub ttl: Duration,
    /// Key prefix in etcd.
    pub prefix: String,
}

/// What the switch does with a new view of the cluster.
pub type OnView = Box<dyn Fn(&View) + Send + Sync>;

/// The connection to etcd as `cluster status` shows it.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    /// The last call to etcd succeeded.
    pub connected: bool,
    /// The last failure, while not connected.
    pub error: Option<String>,
    /// This node's lease (0: none yet).
    pub lease: i64,
}

/// When each node that was ever seen was last known to be up.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its lease holds now.
    pub up: bool,
    /// Its record, as last seen.
    pub record: NodeRecord,
    /// When it was last seen up (seconds since the epoch).
    pub last_seen: u64,
}

/// This node's membership: lease, view and the threads that keep them.
pub struct Agent {
    /// How it joined.
    pub opts: ClusterOptions,
    /// The client.
    pub etcd: Etcd,
    /// Key names.
    pub keys: Keys,
    view: Mutex<View>,
    conn: Mutex<Conn>,
    seen: Mutex<BTreeMap<String, Seen>>,
    /// Keys under the prefix that could not be read (logged and skipped).
    pub skipped: AtomicU64,
    /// The highest etcd revision this node's own verbs wrote at.
    written: std::sync::atomic::AtomicI64,
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// How long a call to etcd may take before the next endpoint is tried.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Between attempts while etcd cannot be reached.
const RETRY: Duration = Duration::from_secs(1);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Agent {
    /// An agent for `opts` (the URLs are checked; nothing is contacted yet).
    pub fn new(opts: ClusterOptions) -> Result<Arc<Agent>, String> {
        let etcd = Etcd::new(&opts.urls, CALL_TIMEOUT).map_err(|e| e.to_string())?;
        Ok(Arc::new(Agent {
            keys: Keys::new(&opts.prefix),
            opts,
            etcd,
            view: Mutex::new(View::default()),
            conn: Mutex::new(Conn::default()),
            seen: Mutex::new(BTreeMap::new()),
            skipped: AtomicU64::new(0),
            written: std::sync::atomic::AtomicI64::new(0),
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        }))
    }

    /// The current view.
    pub fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection's state.
    pub fn conn(&self) -> Conn {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every node ever seen, by name.
    pub fn seen(&self) -> BTreeMap<String, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Note that this node wrote at etcd revision `rev`.
    pub fn wrote(&self, rev: i64) {
        self.written.fetch_max(rev, Ordering::SeqCst);
    }

    /// The highest revision this node's verbs wrote at: a view older than that does not show
    /// all of this node's own changes yet.
    pub fn written(&self) -> i64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Note the outcome of a call to etcd.
    pub fn note<T>(&self, r: &Result<T, EtcdError>) {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(_) | Err(EtcdError::Compacted { .. } | EtcdError::LeaseNotFound) => {
                if !c.connected {
                    log::info!("cluster: etcd reachable again");
                }
                c.connected = true;
                c.error = None;
            }
            Err(e) => {
                if c.connected || c.error.is_none() {
                    log::warn!("cluster: {e}");
                }
                c.connected = false;
                c.error = Some(e.to_string());
            }
        }
    }

    /// Start the presence and follow threads; `on_view` gets every new view.
    pub fn start(self: &Arc<Self>, on_view: OnView) -> std::io::Result<()> {
        let a = self.clone();
        let presence = std::thread::Builder::new()
            .name("vs-presence".into())
            .spawn(move || a.presence())?;
        let a = self.clone();
        let follow = std::thread::Builder::new()
            .name("vs-follow".into())
            .spawn(move || a.follow(on_view))?;
        let mut t = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        t.push(presence);
        t.push(follow);
        Ok(())
    }

    /// Stop the threads and give the lease back (the other nodes drop this one at once).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let threads: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for t in threads {
            let _ = t.join();
        }
        let lease = self.conn().lease;
        if lease != 0 {
            let _ = self.etcd.revoke(lease);
        }
    }

    /// Whether [`Agent::stop`] was called.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleep `d`, waking early to stop.
    fn pause(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopping() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
        }
    }

    /// Keep this node's lease and presence key: grant, register, keep alive every third of the
    /// TTL; a lease lost (a partition longer than the TTL) is granted again and the node
    /// registers again.
    fn presence(&self) {
        let ttl = self.opts.ttl.as_secs().max(1) as i64;
        let record = NodeRecord {
            vtep: self.opts.vtep,
            port: wire::vxlan::VXLAN_PORT,
            since: now_secs(),
        };
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let key = self.keys.node(&self.opts.node);
        let mut lease = 0;
        let mut registered_at = 0;
        while !self.stopping() {
            if lease == 0 {
                // Another live daemon with this node name? (Its lease would have to expire
                // first; two daemons with one name confuse every node.)
                if let Ok((Some(kv), _)) = self.etcd.get(&key) {
                    let other = serde_json::from_slice::<NodeRecord>(&kv.value).ok();
                    if kv.lease != 0 && other.as_ref().is_some_and(|o| o.vtep != record.vtep) {
                        log::error!(
                            "cluster: node name {} is registered by another daemon (VTEP {}): \
                             give each daemon its own --node",
                            self.opts.node,
                            other.map_or_else(String::new, |o| o.vtep.to_string())
                        );
                    }
                }
                let r = self.etcd.grant(ttl).and_then(|l| {
                    let rev = self.etcd.put(&key, &value, l)?;
                    Ok((l, rev))
                });
                self.note(&r);
                match r {
                    Ok((l, rev)) => {
                        lease = l;
                        registered_at = rev;
                        self.conn.lock().unwrap_or_else(|p| p.into_inner()).lease = l;
                        log::info!(
                            "cluster: node {} registered (VTEP {}, lease {l:x}, TTL {ttl} s)",
                            self.opts.node,
                            self.opts.vtep
                        );
                    }
                    Err(_) => {
                        self.pause(RETRY);
                        continue;
                    }
                }
            }
            self.pause(self.opts.ttl / 3);
            if self.stopping() {
                break;
            }
            let r = self.etcd.keepalive(lease);
            self.note(&r);
            match r {
                Ok(_) => {
                    // The key deleted by hand while the lease lives: written again.
                    let gone = {
                        let v = self.view();
                        v.revision > registered_at && !v.nodes.contains_key(&self.opts.node)
                    };
                    if gone {
                        log::warn!("cluster: this node's key {key} was deleted; registering again");
                        match self.etcd.put(&key, &value, lease) {
                            Ok(rev) => registered_at = rev,
                            Err(e) => log::warn!("cluster: registering again failed: {e}"),
                        }
                    }
                }
                Err(EtcdError::LeaseNotFound) => {
                    log::warn!("cluster: lease {lease:x} expired; registering again");
                    lease = 0;
                }
                Err(_) => {} // unreachable: keep trying with the same lease
            }
        }
    }

    /// List the cluster, hand the view over, then follow the watch; start again from a new
    /// listing whenever the watch breaks or its revision was compacted.
    fn follow(&self, on_view: OnView) {
        let prefix = self.keys.prefix().to_string();
        while !self.stopping() {
            let listed = self.etcd.get_prefix(&prefix);
            self.note(&listed);
            let Ok((kvs, revision)) = listed else {
                self.pause(RETRY);
                continue;
            };
            let (view, skipped) = View::from_list(
                &self.keys,
                kvs.iter().map(|kv| (kv.key.as_str(), kv.value.as_slice())),
                revision,
            );
            self.skip(&skipped);
            self.publish(view, &on_view);
            let watch = self.etcd.watch(&prefix, revision + 1);
            self.note(&watch);
            let Ok(mut watch) = watch else {
                self.pause(RETRY);
                continue;
            };
            while !self.stopping() {
                match watch.next(Duration::from_millis(500)) {
                    Ok(None) => {}
                    Ok(Some((events, revision))) => {
                        let mut view = self.view().clone();
                        let mut skipped = Vec::new();
                        for ev in &events {
                            match ev.kind {
                                EventKind::Put => {
                                    if let Err(e) = view.put(&self.keys, &ev.kv.key, &ev.kv.value) {
                                        skipped.push(e);
                                    }
                                }
                                EventKind::Delete => view.delete(&self.keys, &ev.kv.key),
                            }
                        }
                        view.revision = view.revision.max(revision);
                        self.skip(&skipped);
                        if !events.is_empty() {
                            self.publish(view, &on_view);
                        } else {
                            self.view().revision = view.revision;
                        }
                    }
                    Err(e) => {
                        if !matches!(e, EtcdError::Compacted { .. }) {
                            let r: Result<(), _> = Err(e);
                            self.note(&r);
                            self.pause(RETRY);
                        }
                        break; // list again
                    }
                }
            }
        }
    }

    fn skip(&self, skipped: &[String]) {
        for s in skipped {
            log::warn!("cluster: skipped {s}");
        }
        self.skipped
            .fetch_add(skipped.len() as u64, Ordering::Relaxed);
    }

    /// Take `view` as the current one, note who is up, and hand it to the switch.
    fn publish(&self, view: View, on_view: &OnView) {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let now = now_secs();
            for (name, s) in seen.iter_mut() {
                if s.up && !view.nodes.contains_key(name) {
                    s.up = false;
                    if *name != self.opts.node {
                        log::warn!(
                            "cluster: node {name} ({}) left or its lease expired",
                            s.record.vtep
                        );
                    }
                }
            }
            for (name, r) in &view.nodes {
                let was = seen.insert(
                    name.clone(),
                    Seen {
                        up: true,
                        record: r.clone(),
                        last_seen: now,
                    },
                );
                if !was.is_some_and(|w| w.up) && *name != self.opts.node {
                    log::info!("cluster: node {name} is up (VTEP {})", r.vtep);
                }
            }
        }
        *self.view() = view.clone();
        on_view(&view);
    }
}
