//! The connection tracker: flows indexed by both directions' tuples in a sharded map (workers on
//! different cores touch different shards), a TCP state machine, timeouts by state, source-port
//! allocation that keeps the original port when it can, and a table limit.
//!
//! A [`Flow`] has an `orig` tuple (the first packet as it arrived) and a `reply` tuple (what the
//! answer looks like on the wire, after translation). A packet matching either is rewritten to
//! the *other* tuple reversed: that single rule covers masquerade, port publishing and hairpin.
//! Time is passed in (milliseconds on the caller's monotonic clock).

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use rustc_hash::FxBuildHasher;

use wire::l4::tcp_flags;

use crate::packet::{Addr, FiveTuple, Proto};

/// Which way a packet travels relative to the flow's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowDir {
    /// Same direction as the first packet.
    Original,
    /// The answer direction.
    Reply,
}

/// TCP connection states (as Linux names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpState {
    /// SYN seen from the originator.
    SynSent = 1,
    /// SYN+ACK seen from the responder.
    SynRecv = 2,
    /// Three-way handshake completed (or picked up mid-stream).
    Established = 3,
    /// The originator sent FIN.
    FinWait = 4,
    /// The responder sent FIN.
    CloseWait = 5,
    /// Both sides sent FIN.
    LastAck = 6,
    /// The last FIN was acknowledged.
    TimeWait = 7,
    /// Reset.
    Close = 8,
}

impl TcpState {
    fn from_u8(v: u8) -> TcpState {
        match v {
            1 => TcpState::SynSent,
            2 => TcpState::SynRecv,
            4 => TcpState::FinWait,
            5 => TcpState::CloseWait,
            6 => TcpState::LastAck,
            7 => TcpState::TimeWait,
            8 => TcpState::Close,
            _ => TcpState::Established,
        }
    }

    /// Upper-case name as `conntrack -L` prints it.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
        }
    }
}

/// The next TCP state after a segment with `flags` travelling in `dir`.
pub fn tcp_next(state: TcpState, dir: FlowDir, flags: u8) -> TcpState {
    use FlowDir::*;
    use TcpState::*;
    let (syn, ack, fin, rst) = (
        flags & tcp_flags::SYN != 0,
        flags & tcp_flags::ACK != 0,
        flags & tcp_flags::FIN != 0,
        flags & tcp_flags::RST != 0,
    );
    if rst {
        return Close;
    }
    match (state, dir) {
        (SynSent, Reply) if syn && ack => SynRecv,
        (SynSent, Original) if syn => SynSent,
        (SynRecv, Original) if ack && !syn => Established,
        (Established, Original) if fin => FinWait,
        (Established, Reply) if fin => CloseWait,
        (FinWait, Reply) if fin => LastAck,
        (CloseWait, Original) if fin => LastAck,
        (LastAck, _) if ack && !fin => TimeWait,
        (TimeWait | Close, Original) if syn && !ack => SynSent,
        (s, _) => s,
    }
}

/// Timeouts in milliseconds (defaults as in Linux's nf_conntrack sysctls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP SYN_SENT.
    pub tcp_syn_sent: u64,
    /// TCP SYN_RECV.
    pub tcp_syn_recv: u64,
    /// TCP ESTABLISHED.
    pub tcp_established: u64,
    /// TCP FIN_WAIT / CLOSE_WAIT / LAST_ACK.
    pub tcp_closing: u64,
    /// TCP TIME_WAIT.
    pub tcp_time_wait: u64,
    /// TCP CLOSE (after RST).
    pub tcp_close: u64,
    /// UDP seen in one direction only.
    pub udp: u64,
    /// UDP answered (a "stream").
    pub udp_stream: u64,
    /// ICMP echo.
    pub icmp: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent: 120_000,
            tcp_syn_recv: 60_000,
            tcp_established: 432_000_000,
            tcp_closing: 120_000,
            tcp_time_wait: 120_000,
            tcp_close: 10_000,
            udp: 30_000,
            udp_stream: 120_000,
            icmp: 30_000,
        }
    }
}

/// What translation a flow does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// Source NAT to the uplink address (masquerade).
    Snat,
    /// Destination NAT of a published port.
    Dnat,
    /// Both: an endpoint reaching a published port through the uplink address.
    Hairpin,
    /// A DNS query to the gateway forwarded to an upstream resolver.
    Dns,
}

impl NatKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            NatKind::Snat => "snat",
            NatKind::Dnat => "dnat",
            NatKind::Hairpin => "hairpin",
            NatKind::Dns => "dns",
        }
    }

    /// The kind [`NatKind::name`] names.
    pub fn from_name(s: &str) -> Option<NatKind> {
        [NatKind::Snat, NatKind::Dnat, NatKind::Hairpin, NatKind::Dns]
            .into_iter()
            .find(|k| k.name() == s)
    }
}

/// A flow's lasting facts, as saved across a daemon restart (times are not kept: a restored flow
/// counts as just seen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedFlow<A: Addr = Ipv4Addr> {
    /// The first packet's tuple.
    pub orig: FiveTuple<A>,
    /// The answer's tuple.
    pub reply: FiveTuple<A>,
    /// The translation.
    pub kind: NatKind,
    /// The caller's network identifier.
    pub zone: u32,
    /// TCP state ([`TcpState`] as `u8`; 0 for UDP and ICMP).
    pub state: u8,
    /// Whether an answer was seen.
    pub replied: bool,
}

/// A tracked connection.
#[derive(Debug)]
pub struct Flow<A: Addr = Ipv4Addr> {
    /// The first packet's tuple, as it arrived.
    pub orig: FiveTuple<A>,
    /// The answer's tuple, as it arrives (after translation).
    pub reply: FiveTuple<A>,
    /// The translation.
    pub kind: NatKind,
    /// The network of the endpoint side (the caller's identifier).
    pub zone: u32,
    state: AtomicU8,
    last_seen: AtomicU64,
    replied: AtomicBool,
    /// Packets and bytes seen in each direction (`[original, reply]`; a TCP super-frame counts
    /// as one packet of its whole length), each direction on its own cache line: the two
    /// directions are usually handled by different workers.
    counts: [DirCounts; 2],
}

/// One direction's packets and bytes. Updated with a load and a store, not a locked add: one
/// worker handles a direction's packets at a time, and a rare lost increment is a miscount in
/// a log line, not a fault.
#[derive(Debug, Default)]
#[repr(align(64))]
struct DirCounts {
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl<A: Addr> Flow<A> {
    /// Packets and bytes seen `(original, reply)` so far.
    pub fn counts(&self) -> ((u64, u64), (u64, u64)) {
        let [o, r] = &self.counts;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ((l(&o.packets), l(&r.packets)), (l(&o.bytes), l(&r.bytes)))
    }

    /// What a packet travelling in `dir` must be rewritten to.
    pub fn translate(&self, dir: FlowDir) -> FiveTuple<A> {
        match dir {
            FlowDir::Original => self.reply.reversed(),
            FlowDir::Reply => self.orig.reversed(),
        }
    }

    /// TCP state (meaningless for UDP/ICMP).
    pub fn tcp_state(&self) -> TcpState {
        TcpState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// True once a packet was seen in the reply direction.
    pub fn replied(&self) -> bool {
        self.replied.load(Ordering::Relaxed)
    }

    /// Milliseconds (on the caller's clock) of the last packet.
    pub fn last_seen(&self) -> u64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// Record a packet of `len` bytes in `dir` with TCP `flags` at `now`; the TCP state it
    /// moved the flow to, when it changed. // HOT PATH
    pub fn seen(&self, dir: FlowDir, flags: u8, len: usize, now: u64) -> Option<TcpState> {
        if self.last_seen.load(Ordering::Relaxed) != now {
            self.last_seen.store(now, Ordering::Relaxed);
        }
        if dir == FlowDir::Reply && !self.replied.load(Ordering::Relaxed) {
            self.replied.store(true, Ordering::Relaxed);
        }
        self.count(dir, len);
        if self.orig.proto == Proto::Tcp {
            let s = self.tcp_state();
            let n = tcp_next(s, dir, flags);
            if n != s {
                self.state.store(n as u8, Ordering::Relaxed);
                return Some(n);
            }
        }
        None
    }

    /// Count one packet of `len` bytes in direction `dir` (the packet that created the flow:
    /// its state is where creation put it).
    pub fn count(&self, dir: FlowDir, len: usize) {
        let c = &self.counts[usize::from(dir == FlowDir::Reply)];
        let add = |a: &AtomicU64, n: u64| a.store(a.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        add(&c.packets, 1);
        add(&c.bytes, len as u64);
    }

    /// True for a connection worth keeping when the table is full: a TCP connection past its
    /// handshake (and not yet closed), or a UDP/ICMP flow that was answered.
    pub fn assured(&self) -> bool {
        match self.orig.proto {
            Proto::Tcp => matches!(
                self.tcp_state(),
                TcpState::Established | TcpState::FinWait | TcpState::CloseWait | TcpState::LastAck
            ),
            _ => self.replied(),
        }
    }

    /// The state name for listings: TCP state, or `UNREPLIED`/`ASSURED` for UDP and ICMP.
    pub fn state_name(&self) -> &'static str {
        match self.orig.proto {
            Proto::Tcp => self.tcp_state().name(),
            _ if self.replied() => "REPLIED",
            _ => "UNREPLIED",
        }
    }

    /// What [`Conntrack::import`] needs to recreate this flow.
    pub fn saved(&self) -> SavedFlow<A> {
        SavedFlow {
            orig: self.orig,
            reply: self.reply,
            kind: self.kind,
            zone: self.zone,
            state: self.state.load(Ordering::Relaxed),
            replied: self.replied(),
        }
    }

    /// This flow's timeout under `t`.
    pub fn timeout(&self, t: &Timeouts) -> u64 {
        match self.orig.proto {
            Proto::Tcp => match self.tcp_state() {
                TcpState::SynSent => t.tcp_syn_sent,
                TcpState::SynRecv => t.tcp_syn_recv,
                TcpState::Established => t.tcp_established,
                TcpState::FinWait | TcpState::CloseWait | TcpState::LastAck => t.tcp_closing,
                TcpState::TimeWait => t.tcp_time_wait,
                TcpState::Close => t.tcp_close,
            },
            Proto::Udp if self.replied() => t.udp_stream,
            Proto::Udp => t.udp,
            Proto::Icmp => t.icmp,
        }
    }
}

/// Why a flow was not created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtError {
    /// The table holds its maximum number of flows.
    Full,
    /// No translated port is free for this destination.
    NoPort,
}

/// The connection table (one per address family).
pub struct Conntrack<A: Addr = Ipv4Addr> {
    /// Both tuples of every flow map to it; the direction is whether the key is `orig`. (No
    /// direction stored beside the pointer: 8 bytes less per slot, two slots per flow.)
    map: DashMap<FiveTuple<A>, Arc<Flow<A>>, FxBuildHasher>,
    flows: AtomicUsize,
    max: usize,
    /// Flows in creation order, for early drop: when the table is full, the oldest flow that is
    /// not yet assured (see [`Flow::assured`]) makes room for the new one, so a SYN flood cannot
    /// lock out real connections. Touched once per new flow, never per packet.
    young: Mutex<VecDeque<Weak<Flow<A>>>>,
    early_drops: AtomicU64,
    /// Flows removed by early drop since the last [`Conntrack::take_evicted`] (at most
    /// [`EVICTED_KEPT`]), for the flow log's `destroy` lines.
    evicted: Mutex<Vec<Arc<Flow<A>>>>,
    /// Timeouts in force.
    pub timeouts: Timeouts,
}

/// Early-dropped flows kept for [`Conntrack::take_evicted`] between two takes; beyond that
/// they go unreported (the `early_drops` counter still counts them).
pub const EVICTED_KEPT: usize = 4096;

/// At most this many flows are remembered for early drop.
const YOUNG_MAX: usize = 65_536;

/// The port range masquerade allocates from when the original port is taken.
pub const PORT_RANGE: std::ops::RangeInclusive<u16> = 32768..=60999;

/// A place claimed in the table ([`Conntrack::claim_room`]): counted from the claim, given back
/// when dropped unless a new flow took it.
struct Room<'a> {
    flows: &'a AtomicUsize,
    taken: bool,
}

impl Drop for Room<'_> {
    fn drop(&mut self) {
        if !self.taken {
            self.flows.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<A: Addr> Conntrack<A> {
    /// An empty table holding at most `max` flows.
    pub fn new(max: usize, timeouts: Timeouts) -> Conntrack<A> {
        Conntrack {
            map: DashMap::with_hasher(FxBuildHasher),
            flows: AtomicUsize::new(0),
            max,
            young: Mutex::new(VecDeque::new()),
            early_drops: AtomicU64::new(0),
            evicted: Mutex::new(Vec::new()),
            timeouts,
        }
    }

    /// A deep copy of the table as it is now (every flow copied, states, times and counts
    /// included), which changes independently: the packet tracer's dry run creates and
    /// advances flows in a copy.
    pub fn duplicate(&self) -> Conntrack<A> {
        let copy = Conntrack::new(self.max, self.timeouts);
        let mut done: std::collections::HashMap<*const Flow<A>, Arc<Flow<A>>> =
            std::collections::HashMap::new();
        for e in self.map.iter() {
            let f = e.value();
            let dup = done.entry(Arc::as_ptr(f)).or_insert_with(|| {
                let [o, r] = &f.counts;
                let l = |a: &AtomicU64| AtomicU64::new(a.load(Ordering::Relaxed));
                Arc::new(Flow {
                    orig: f.orig,
                    reply: f.reply,
                    kind: f.kind,
                    zone: f.zone,
                    state: AtomicU8::new(f.state.load(Ordering::Relaxed)),
                    last_seen: AtomicU64::new(f.last_seen()),
                    replied: AtomicBool::new(f.replied()),
                    counts: [
                        DirCounts {
                            packets: l(&o.packets),
                            bytes: l(&o.bytes),
                        },
                        DirCounts {
                            packets: l(&r.packets),
                            bytes: l(&r.bytes),
                        },
                    ],
                })
            });
            copy.map.insert(*e.key(), Arc::clone(dup));
        }
        copy.flows.store(done.len(), Ordering::Relaxed);
        // Early drop picks from the same young flows, in the same order.
        let young = self.young.lock().unwrap_or_else(|e| e.into_inner());
        *copy.young.lock().unwrap_or_else(|e| e.into_inner()) = young
            .iter()
            .filter_map(|w| done.get(&w.as_ptr()).map(Arc::downgrade))
            .collect();
        copy
    }

    /// The flows early drop removed since the last call (at most [`EVICTED_KEPT`]).
    pub fn take_evicted(&self) -> Vec<Arc<Flow<A>>> {
        std::mem::take(&mut *self.evicted.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Flows removed to make room for new ones while the table was full.
    pub fn early_drops(&self) -> u64 {
        self.early_drops.load(Ordering::Relaxed)
    }

    /// The flow a packet with tuple `t` belongs to, and its direction. // HOT PATH
    pub fn lookup(&self, t: &FiveTuple<A>, now: u64) -> Option<(Arc<Flow<A>>, FlowDir)> {
        let f = self.map.get(t)?.clone();
        let d = if f.orig == *t {
            FlowDir::Original
        } else {
            FlowDir::Reply
        };
        // An expired flow not yet swept does not match.
        (now.saturating_sub(f.last_seen()) <= f.timeout(&self.timeouts)).then_some((f, d))
    }

    /// Create a flow for `orig` whose answers will look like `reply`, unless `reply` is taken.
    /// Returns the existing flow if another thread created the same one first.
    /// A new flow takes the place claimed in `room`.
    fn insert(
        &self,
        room: &mut Room<'_>,
        orig: FiveTuple<A>,
        reply: FiveTuple<A>,
        kind: NatKind,
        zone: u32,
        now: u64,
    ) -> Result<Option<Arc<Flow<A>>>, CtError> {
        // A flow whose answer looks like itself (source = destination = the NAT address) would
        // index one slot twice and vanish on insertion (found by fuzzing): not a usable tuple.
        if orig == reply {
            return Ok(None);
        }
        let flow = Arc::new(Flow {
            orig,
            reply,
            kind,
            zone,
            state: AtomicU8::new(if orig.proto == Proto::Tcp {
                TcpState::SynSent as u8
            } else {
                0
            }),
            last_seen: AtomicU64::new(now),
            replied: AtomicBool::new(false),
            counts: Default::default(),
        });
        match self.map.entry(reply) {
            Entry::Occupied(_) => return Ok(None),
            Entry::Vacant(v) => {
                v.insert(flow.clone());
            }
        }
        match self.map.entry(orig) {
            Entry::Occupied(o) => {
                let existing = o.get().clone();
                drop(o);
                self.map.remove(&reply);
                Ok(Some(existing))
            }
            Entry::Vacant(v) => {
                v.insert(flow.clone());
                room.taken = true;
                let mut young = self.young.lock().unwrap_or_else(|p| p.into_inner());
                if young.len() >= YOUNG_MAX.min(self.max) {
                    young.pop_front();
                }
                young.push_back(Arc::downgrade(&flow));
                Ok(Some(flow))
            }
        }
    }

    /// Claim room for one more flow: when the table is full, remove the oldest flow that is not
    /// assured first; `Full` when every flow is. The claim counts at once, so workers creating
    /// flows at the same moment cannot all take the last place.
    fn claim_room(&self) -> Result<Room<'_>, CtError> {
        loop {
            let n = self.flows.load(Ordering::Relaxed);
            if n >= self.max {
                self.evict_young()?;
                continue;
            }
            if self
                .flows
                .compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(Room {
                    flows: &self.flows,
                    taken: false,
                });
            }
        }
    }

    /// Remove the oldest flow that is not assured; `Full` when there is none.
    fn evict_young(&self) -> Result<(), CtError> {
        loop {
            let next = self
                .young
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let Some(weak) = next else {
                return Err(CtError::Full);
            };
            let Some(f) = weak.upgrade() else { continue };
            let tracked = self
                .map
                .get(&f.orig)
                .is_some_and(|e| Arc::ptr_eq(e.value(), &f));
            if tracked && !f.assured() {
                self.remove(&f);
                self.early_drops.fetch_add(1, Ordering::Relaxed);
                let mut kept = self.evicted.lock().unwrap_or_else(|p| p.into_inner());
                if kept.len() < EVICTED_KEPT {
                    kept.push(f);
                }
                return Ok(());
            }
        }
    }

    /// Track `orig` with its source translated to `nat_ip` (and, for hairpin, its destination to
    /// `dnat`). The source port is kept when free; otherwise one from [`PORT_RANGE`] (not
    /// `reserved`) is chosen so that no two flows share a reply tuple.
    pub fn create_snat(
        &self,
        orig: FiveTuple<A>,
        nat_ip: A,
        dnat: Option<(A, u16)>,
        zone: u32,
        reserved: impl Fn(Proto, u16) -> bool,
        now: u64,
    ) -> Result<Arc<Flow<A>>, CtError> {
        let kind = if dnat.is_some() {
            NatKind::Hairpin
        } else {
            NatKind::Snat
        };
        self.create_snat_as(kind, orig, nat_ip, dnat, zone, reserved, now)
    }

    /// [`Self::create_snat`] recording the flow as `kind`.
    #[allow(clippy::too_many_arguments)]
    pub fn create_snat_as(
        &self,
        kind: NatKind,
        orig: FiveTuple<A>,
        nat_ip: A,
        dnat: Option<(A, u16)>,
        zone: u32,
        reserved: impl Fn(Proto, u16) -> bool,
        now: u64,
    ) -> Result<Arc<Flow<A>>, CtError> {
        let mut room = self.claim_room()?;
        let (dst, dport) = dnat.unwrap_or((orig.dst, orig.dport));
        let span = u32::from(PORT_RANGE.end() - PORT_RANGE.start()) + 1;
        // Start the search at a hash of the tuple so concurrent flows spread over the range.
        let seed =
            (orig.src.digest() ^ u32::from(orig.sport).rotate_left(16) ^ u32::from(orig.dport))
                .wrapping_mul(0x9e37_79b1);
        let candidates = std::iter::once(orig.sport)
            .chain((0..span).map(|i| PORT_RANGE.start() + ((seed.wrapping_add(i)) % span) as u16))
            .take(1 + 4096);
        for port in candidates {
            if orig.proto != Proto::Icmp && (port == 0 || reserved(orig.proto, port)) {
                continue;
            }
            let reply = FiveTuple {
                proto: orig.proto,
                src: dst,
                sport: dport,
                dst: nat_ip,
                dport: port,
            };
            let reply = if orig.proto == Proto::Icmp {
                FiveTuple {
                    sport: port,
                    ..reply
                }
            } else {
                reply
            };
            if let Some(f) = self.insert(&mut room, orig, reply, kind, zone, now)? {
                return Ok(f);
            }
        }
        Err(CtError::NoPort)
    }

    /// Track `orig` (arriving for a published port) with its destination translated to
    /// `to_ip:to_port`; the client's address is kept.
    pub fn create_dnat(
        &self,
        orig: FiveTuple<A>,
        to_ip: A,
        to_port: u16,
        zone: u32,
        now: u64,
    ) -> Result<Arc<Flow<A>>, CtError> {
        let mut room = self.claim_room()?;
        let reply = FiveTuple {
            proto: orig.proto,
            src: to_ip,
            sport: to_port,
            dst: orig.src,
            dport: orig.sport,
        };
        self.insert(&mut room, orig, reply, NatKind::Dnat, zone, now)?
            .ok_or(CtError::NoPort)
    }

    /// Recreate a saved flow as seen at `now`. `Ok(false)` when either tuple is already tracked
    /// (the saved flow is stale) or the tuples do not belong together.
    pub fn import(&self, f: &SavedFlow<A>, now: u64) -> Result<bool, CtError> {
        let mut room = self.claim_room()?;
        if f.orig.proto != f.reply.proto || f.orig == f.reply {
            return Ok(false);
        }
        match self.insert(&mut room, f.orig, f.reply, f.kind, f.zone, now)? {
            Some(flow) if flow.orig == f.orig && flow.reply == f.reply => {
                if f.orig.proto == Proto::Tcp && (1..=8).contains(&f.state) {
                    flow.state.store(f.state, Ordering::Relaxed);
                }
                flow.replied.store(f.replied, Ordering::Relaxed);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Remove flows idle longer than their timeout; returns how many were removed.
    pub fn expire(&self, now: u64) -> usize {
        self.expire_flows(now).len()
    }

    /// [`Self::expire`], returning the flows removed.
    pub fn expire_flows(&self, now: u64) -> Vec<Arc<Flow<A>>> {
        let dead: Vec<Arc<Flow<A>>> = self
            .map
            .iter()
            .filter(|e| {
                e.value().orig == *e.key()
                    && now.saturating_sub(e.last_seen()) > e.timeout(&self.timeouts)
            })
            .map(|e| e.value().clone())
            .collect();
        dead.into_iter().filter(|f| self.remove(f)).collect()
    }

    /// Remove `f`, giving back its place; false when another caller removed it first.
    fn remove(&self, f: &Flow<A>) -> bool {
        let removed = self.map.remove(&f.orig).is_some();
        if removed {
            self.flows.fetch_sub(1, Ordering::Relaxed);
        }
        self.map.remove(&f.reply);
        removed
    }

    /// Remove every flow (or those of `zone`); returns them.
    pub fn flush(&self, zone: Option<u32>) -> Vec<Arc<Flow<A>>> {
        let all = self.flows(zone);
        all.into_iter().filter(|f| self.remove(f)).collect()
    }

    /// Remove the flows for which `pred` holds; returns them.
    pub fn remove_where(&self, pred: impl Fn(&Flow<A>) -> bool) -> Vec<Arc<Flow<A>>> {
        let all: Vec<Arc<Flow<A>>> = self.flows(None).into_iter().filter(|f| pred(f)).collect();
        all.into_iter().filter(|f| self.remove(f)).collect()
    }

    /// Call `visit` with every flow (for counting: nothing is collected or cloned).
    pub fn for_each(&self, mut visit: impl FnMut(&Flow<A>)) {
        for e in self.map.iter() {
            if e.value().orig == *e.key() {
                visit(e.value());
            }
        }
    }

    /// Every flow (or those of `zone`).
    pub fn flows(&self, zone: Option<u32>) -> Vec<Arc<Flow<A>>> {
        self.map
            .iter()
            .filter(|e| e.value().orig == *e.key() && zone.is_none_or(|z| e.zone == z))
            .map(|e| e.value().clone())
            .collect()
    }

    /// The most flows the table holds.
    pub fn limit(&self) -> usize {
        self.max
    }

    /// Number of flows.
    pub fn len(&self) -> usize {
        self.flows.load(Ordering::Relaxed)
    }

    /// True when no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use wire::l4::tcp_flags::*;

    const E: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const E2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    const R: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 9);
    const U: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

    fn t(proto: Proto, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> FiveTuple {
        FiveTuple {
            proto,
            src,
            sport,
            dst,
            dport,
        }
    }

    fn none(_: Proto, _: u16) -> bool {
        false
    }

    #[test]
    fn workers_creating_flows_at_once_never_pass_the_limit() {
        // Four threads open half-open flows from distinct clients into a table of 50: each
        // claim is counted before the flow goes in, so the table never holds more than 50,
        // and the count matches what is tracked.
        let ct = Conntrack::new(50, Timeouts::default());
        std::thread::scope(|s| {
            for th in 0..4u16 {
                let ct = &ct;
                s.spawn(move || {
                    for i in 0..2_000u16 {
                        let src = Ipv4Addr::from(0x0a00_0000 | u32::from(th) << 16 | u32::from(i));
                        let _ = ct.create_dnat(t(Proto::Tcp, src, 40000, U, 8080), E, 80, 0, 1);
                        assert!(ct.len() <= 50, "{} flows", ct.len());
                    }
                });
            }
        });
        assert_eq!(ct.len(), 50);
        assert_eq!(ct.flows(None).len(), 50);
        assert!(ct.early_drops() >= 8_000 - 50);
    }

    #[test]
    fn saved_flows_come_back_with_state_and_translation() {
        let a = Conntrack::new(10, Timeouts::default());
        let f = a
            .create_dnat(t(Proto::Tcp, R, 40000, U, 8080), E, 80, 7, 1_000)
            .unwrap();
        f.seen(FlowDir::Reply, SYN | ACK, 60, 1_001);
        f.seen(FlowDir::Original, ACK, 60, 1_002);
        let saved: Vec<SavedFlow> = a.flows(None).iter().map(|f| f.saved()).collect();
        assert_eq!(saved.len(), 1);

        let b = Conntrack::new(10, Timeouts::default());
        assert_eq!(b.import(&saved[0], 50), Ok(true));
        assert_eq!(b.import(&saved[0], 50), Ok(false), "already tracked");
        let (g, d) = b.lookup(&t(Proto::Tcp, E, 80, R, 40000), 60).unwrap();
        assert_eq!(d, FlowDir::Reply);
        assert_eq!(g.tcp_state(), TcpState::Established);
        assert!(g.replied());
        assert_eq!(g.zone, 7);
        assert_eq!(g.translate(d), t(Proto::Tcp, U, 8080, R, 40000));
        assert_eq!(b.len(), 1);
        let full = Conntrack::new(0, Timeouts::default());
        assert_eq!(full.import(&saved[0], 50), Err(CtError::Full));
        let bad = SavedFlow {
            reply: saved[0].orig,
            ..saved[0]
        };
        assert_eq!(b.import(&bad, 50), Ok(false));
        assert_eq!(NatKind::from_name("hairpin"), Some(NatKind::Hairpin));
        assert_eq!(NatKind::from_name("x"), None);
    }

    #[test]
    fn tcp_state_machine_full_lifecycle() {
        use FlowDir::*;
        use TcpState::*;
        let mut s = SynSent;
        for (dir, flags, want) in [
            (Reply, SYN | ACK, SynRecv),
            (Original, ACK, Established),
            (Original, ACK, Established),
            (Reply, ACK, Established),
            (Original, FIN | ACK, FinWait),
            (Reply, ACK, FinWait),
            (Reply, FIN | ACK, LastAck),
            (Original, ACK, TimeWait),
            (Original, SYN, SynSent),
        ] {
            s = tcp_next(s, dir, flags);
            assert_eq!(s, want, "{dir:?} {flags:#x}");
        }
        assert_eq!(tcp_next(Established, Reply, FIN), CloseWait);
        assert_eq!(tcp_next(CloseWait, Original, FIN | ACK), LastAck);
        assert_eq!(tcp_next(Established, Original, RST), Close);
        assert_eq!(tcp_next(SynSent, Reply, RST | ACK), Close);
        assert_eq!(
            tcp_next(SynSent, Original, SYN),
            SynSent,
            "retransmitted SYN"
        );
        assert_eq!(tcp_next(SynSent, Reply, ACK), SynSent, "no SYN+ACK yet");
    }

    #[test]
    fn snat_keeps_port_then_allocates_and_translates_both_ways() {
        let ct = Conntrack::new(100, Timeouts::default());
        let o1 = t(Proto::Udp, E, 5000, R, 53);
        let f1 = ct.create_snat(o1, U, None, 1, none, 0).unwrap();
        assert_eq!(
            f1.reply,
            t(Proto::Udp, R, 53, U, 5000),
            "original port kept"
        );
        assert_eq!(
            f1.translate(FlowDir::Original),
            t(Proto::Udp, U, 5000, R, 53)
        );
        assert_eq!(f1.translate(FlowDir::Reply), t(Proto::Udp, R, 53, E, 5000));
        // Same source port from another endpoint to the same server: a new port.
        let o2 = t(Proto::Udp, E2, 5000, R, 53);
        let f2 = ct.create_snat(o2, U, None, 1, none, 0).unwrap();
        assert_ne!(f2.reply.dport, 5000);
        assert!(PORT_RANGE.contains(&f2.reply.dport));
        let (found, dir) = ct.lookup(&f2.reply, 1).unwrap();
        assert!(Arc::ptr_eq(&found, &f2));
        assert_eq!(dir, FlowDir::Reply);
        assert_eq!(ct.len(), 2);
    }

    #[test]
    fn reserved_ports_are_skipped() {
        let ct = Conntrack::new(100, Timeouts::default());
        let f = ct
            .create_snat(
                t(Proto::Tcp, E, 8080, R, 80),
                U,
                None,
                1,
                |p, port| p == Proto::Tcp && port == 8080,
                0,
            )
            .unwrap();
        assert_ne!(f.reply.dport, 8080);
    }

    #[test]
    fn same_flow_twice_returns_the_existing_one() {
        let ct = Conntrack::new(100, Timeouts::default());
        let o = t(Proto::Tcp, E, 1000, R, 80);
        let a = ct.create_snat(o, U, None, 1, none, 0).unwrap();
        let b = ct.create_snat(o, U, None, 1, none, 0).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(ct.len(), 1);
    }

    #[test]
    fn dnat_keeps_client_address() {
        let ct = Conntrack::new(100, Timeouts::default());
        let o = t(Proto::Tcp, R, 40000, U, 8080);
        let f = ct.create_dnat(o, E, 80, 1, 0).unwrap();
        assert_eq!(
            f.translate(FlowDir::Original),
            t(Proto::Tcp, R, 40000, E, 80)
        );
        assert_eq!(
            f.translate(FlowDir::Reply),
            t(Proto::Tcp, U, 8080, R, 40000)
        );
        assert_eq!(
            ct.lookup(&t(Proto::Tcp, E, 80, R, 40000), 0).unwrap().1,
            FlowDir::Reply
        );
    }

    #[test]
    fn hairpin_translates_source_and_destination() {
        let ct = Conntrack::new(100, Timeouts::default());
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let o = t(Proto::Tcp, E2, 3333, U, 8080);
        let f = ct.create_snat(o, gw, Some((E, 80)), 1, none, 0).unwrap();
        assert_eq!(f.kind, NatKind::Hairpin);
        assert_eq!(
            f.translate(FlowDir::Original),
            t(Proto::Tcp, gw, 3333, E, 80)
        );
        assert_eq!(
            f.translate(FlowDir::Reply),
            t(Proto::Tcp, U, 8080, E2, 3333)
        );
    }

    #[test]
    fn a_flow_that_would_answer_itself_gets_another_port() {
        // ICMP from the NAT address to itself, id 0: the first candidate reply tuple equals
        // the original one.
        let ct = Conntrack::new(10, Timeouts::default());
        let o = t(Proto::Icmp, U, 0, U, 0);
        let f = ct.create_snat(o, U, None, 1, none, 0).unwrap();
        assert_ne!(f.reply, f.orig);
        assert!(ct.lookup(&o, 1).is_some(), "the flow is tracked");
        assert_eq!(ct.len(), 1);
    }

    #[test]
    fn table_limit() {
        let ct = Conntrack::new(2, Timeouts::default());
        for p in [1, 2] {
            ct.create_snat(t(Proto::Udp, E, p, R, 53), U, None, 1, none, 0)
                .unwrap()
                .seen(FlowDir::Reply, 0, 60, 1);
        }
        assert_eq!(
            ct.create_snat(t(Proto::Udp, E, 3, R, 53), U, None, 1, none, 0)
                .unwrap_err(),
            CtError::Full
        );
        assert_eq!(
            ct.create_dnat(t(Proto::Tcp, R, 1, U, 80), E, 80, 1, 0)
                .unwrap_err(),
            CtError::Full
        );
    }

    #[test]
    fn a_full_table_drops_the_oldest_unassured_flow_first() {
        use FlowDir::*;
        let ct = Conntrack::new(3, Timeouts::default());
        let est = ct
            .create_dnat(t(Proto::Tcp, R, 1, U, 80), E, 80, 1, 0)
            .unwrap();
        est.seen(Reply, SYN | ACK, 60, 1);
        est.seen(Original, ACK, 60, 2);
        assert!(est.assured());
        // Two half-open connections (a SYN flood answered by the endpoint) fill the table.
        for p in [2, 3] {
            let f = ct
                .create_dnat(t(Proto::Tcp, R, p, U, 80), E, 80, 1, 3)
                .unwrap();
            f.seen(Reply, SYN | ACK, 60, 4);
            assert!(!f.assured());
        }
        assert_eq!(ct.len(), 3);
        // A new connection evicts the oldest half-open one, never the established one.
        ct.create_dnat(t(Proto::Tcp, R, 4, U, 80), E, 80, 1, 5)
            .unwrap();
        assert_eq!((ct.len(), ct.early_drops()), (3, 1));
        let evicted = ct.take_evicted();
        assert_eq!(evicted.len(), 1, "the evicted flow, for the flow log");
        assert_eq!(evicted[0].orig, t(Proto::Tcp, R, 2, U, 80));
        assert!(ct.take_evicted().is_empty(), "taken once");
        assert!(ct.lookup(&t(Proto::Tcp, R, 2, U, 80), 6).is_none());
        assert!(ct.lookup(&t(Proto::Tcp, R, 1, U, 80), 6).is_some());
        assert!(ct.lookup(&t(Proto::Tcp, R, 3, U, 80), 6).is_some());
        // Once every flow is assured, the table refuses.
        for p in [3, 4] {
            let (f, _) = ct.lookup(&t(Proto::Tcp, R, p, U, 80), 6).unwrap();
            f.seen(Reply, SYN | ACK, 60, 7);
            f.seen(Original, ACK, 60, 7);
        }
        assert_eq!(
            ct.create_dnat(t(Proto::Tcp, R, 5, U, 80), E, 80, 1, 8)
                .unwrap_err(),
            CtError::Full
        );
        assert_eq!(ct.len(), 3);
    }

    #[test]
    fn timeouts_by_protocol_and_state() {
        let to = Timeouts {
            udp: 1000,
            udp_stream: 5000,
            icmp: 2000,
            tcp_syn_sent: 3000,
            ..Timeouts::default()
        };
        let ct = Conntrack::new(100, to);
        let u = ct
            .create_snat(t(Proto::Udp, E, 1, R, 53), U, None, 1, none, 0)
            .unwrap();
        let _icmp = ct
            .create_snat(t(Proto::Icmp, E, 7, R, 7), U, None, 1, none, 0)
            .unwrap();
        let c = ct
            .create_snat(t(Proto::Tcp, E, 9, R, 80), U, None, 1, none, 0)
            .unwrap();
        assert_eq!(c.state_name(), "SYN_SENT");
        assert_eq!(u.state_name(), "UNREPLIED");
        assert!(ct.lookup(&u.orig, 1000).is_some());
        assert!(
            ct.lookup(&u.orig, 1001).is_none(),
            "expired flows do not match"
        );
        assert_eq!(ct.expire(1001), 1);
        assert_eq!(ct.expire(2001), 1, "icmp");
        assert_eq!(ct.expire(3001), 1, "tcp syn_sent");
        assert!(ct.is_empty());
        // An answered UDP flow lives longer.
        let u = ct
            .create_snat(t(Proto::Udp, E, 1, R, 53), U, None, 1, none, 10_000)
            .unwrap();
        u.seen(FlowDir::Reply, 0, 60, 10_500);
        assert_eq!(u.state_name(), "REPLIED");
        assert_eq!(ct.expire(14_000), 0);
        assert_eq!(ct.expire(15_501), 1);
    }

    #[test]
    fn tcp_flow_follows_segments_and_flush_by_zone() {
        let ct = Conntrack::new(100, Timeouts::default());
        let f = ct
            .create_snat(t(Proto::Tcp, E, 9, R, 80), U, None, 1, none, 0)
            .unwrap();
        f.seen(FlowDir::Reply, SYN | ACK, 60, 1);
        f.seen(FlowDir::Original, ACK, 60, 2);
        assert_eq!(f.state_name(), "ESTABLISHED");
        ct.create_snat(t(Proto::Udp, E, 9, R, 53), U, None, 2, none, 0)
            .unwrap();
        assert_eq!(ct.flush(Some(2)).len(), 1);
        assert_eq!(ct.len(), 1);
        assert_eq!(ct.flush(None).len(), 1);
        assert!(ct.lookup(&f.reply, 3).is_none());
    }
}
