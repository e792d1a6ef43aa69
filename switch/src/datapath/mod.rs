//! The datapath: worker threads that run each frame to completion, in stages called in one
//! direction. A frame's walk:
//!
//! 1. [`rx`]: a worker wakes on its epoll set, loads the configuration snapshot once (an
//!    `ArcSwap` load: no lock) into its [`Ctx`], and reads up to [`BATCH`] frames per ready port
//!    into its one preallocated [`FrameBuf`]: a TAP read, a `recvmmsg` batch from the uplink, or
//!    a UDP GRO read of VXLAN datagrams (decapsulated, coalesced back into TCP super-frames);
//! 2. [`classify`]: the one parse ([`wire::Parsed`]), then port security, the MTU check and
//!    MAC learning for endpoint ports; for the uplink, its ARP and pings answered;
//! 3. [`l2`]: local answers (ARP for the gateway and known endpoints, the gateway's ping) and
//!    the L2 decision: unicast by the FDB, to a remote VTEP, or flood;
//! 4. [`route`]: frames for the gateway MAC are routed: NAT's verdict ([`nat::verdict`]), the
//!    rewrite, the gateway's DNS, next-hop resolution;
//! 5. [`tx`]: VXLAN encapsulation (software TSO for super-frames) and the batched sends to the
//!    uplink and VTEPs; TAP writes go straight out of the port ([`Port::transmit`]).
//!
//! No per-frame hand-off between threads, no allocation per frame. Per-frame state is the
//! frame buffer and its parse; per-wake-up state (snapshot, clock, counters, buffers) is [`Ctx`].

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use nat::{Conntrack, FiveTuple, Proto};
use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::capture::Taps;
use crate::counters::WorkerCounters;
use crate::fdb::{Fdb, FdbCache, PortId};
use crate::frame::FrameBuf;
use crate::ipam::Ipv4Cidr;
use crate::neigh::NeighCache;
use crate::port::{NetId, Port};
use crate::sys::epoll::Epoll;
use crate::txbatch::TxBatch;
use overlay::gso::Coalesce;
use wire::ethernet::MacAddr;

/// Frames read from one port before the worker moves on to the next ready port.
pub const BATCH: usize = 64;

/// Endpoint addresses the switch answers ARP for (ARP suppression), per network.
pub type NeighTable = DashMap<Ipv4Addr, MacAddr, FxBuildHasher>;

/// A network as the datapath sees it (part of a [`Config`] snapshot).
pub struct NetRt {
    /// Network identifier.
    pub id: NetId,
    /// The network's name (for the event stream and the flow log).
    pub name: Arc<str>,
    /// Subnet.
    pub subnet: Ipv4Cidr,
    /// Gateway address.
    pub gateway_ip: Ipv4Addr,
    /// Gateway MAC.
    pub gateway_mac: MacAddr,
    /// Ports of the network (the flooding list).
    pub ports: Vec<Arc<Port>>,
    /// Learned MACs (shared across snapshots).
    pub fdb: Arc<Fdb>,
    /// Known endpoint addresses (shared across snapshots).
    pub neigh: Arc<NeighTable>,
    /// Capture taps for frames the switch itself originates in this network.
    pub taps: Arc<Taps>,
    /// No egress through the uplink.
    pub internal: bool,
    /// Endpoints may talk to each other (Docker's inter-container communication).
    pub icc: bool,
    /// Networks this one routes to without NAT (`network link`).
    pub links: Vec<NetId>,
    /// Endpoint MTU.
    pub mtu: u32,
    /// Names the gateway's DNS answers (endpoints and aliases of this and linked networks),
    /// and their addresses' PTR records.
    pub dns: crate::dns::Table,
    /// Overlay networks: the VNI.
    pub vni: Option<u32>,
    /// Overlay networks: peer VTEPs (head-end replication list).
    pub peers: Vec<std::net::IpAddr>,
    /// Overlay networks: MACs behind remote VTEPs.
    pub remote: Option<Arc<overlay::RemoteFdb>>,
    /// Overlay networks: the VTEP port that sends and receives this network's VXLAN.
    pub vtep: Option<Arc<Port>>,
    /// Rate limit of the gateway's ARP probes for addresses it has to route to.
    pub probes: Arc<NeighCache>,
    /// Dual-stack networks: the IPv6 side.
    pub v6: Option<NetRt6>,
}

/// IPv6 neighbours a network learned from neighbour discovery (endpoints on other hosts of an
/// overlay, whose addresses the control plane does not know), shared across snapshots.
pub type Neigh6Table = DashMap<std::net::Ipv6Addr, MacAddr, FxBuildHasher>;

/// Most IPv6 neighbours one network learns.
pub const NEIGH6_LEARNED_MAX: usize = 4096;

/// A dual-stack network's IPv6 side, as the datapath sees it.
pub struct NetRt6 {
    /// The IPv6 subnet.
    pub subnet: crate::ipam::Ipv6Cidr,
    /// The gateway's address in it.
    pub gateway: std::net::Ipv6Addr,
    /// The gateway's link-local address (from its MAC), the source of its router
    /// advertisements.
    pub link_local: std::net::Ipv6Addr,
    /// Endpoint addresses (configured, link-local and, on a /64, SLAAC) to their MACs: the
    /// neighbour solicitations the switch answers, and the next hops it routes to.
    pub neigh: FxHashMap<std::net::Ipv6Addr, MacAddr>,
    /// Neighbours learned from neighbour discovery (shared across snapshots).
    pub learned: Arc<Neigh6Table>,
    /// Rate limit of the gateway's neighbour solicitations for addresses it routes to.
    pub probes: Arc<NeighCache<std::net::Ipv6Addr>>,
}

impl NetRt6 {
    /// True for the gateway's own addresses.
    #[inline]
    pub fn is_gateway(&self, ip: std::net::Ipv6Addr) -> bool {
        ip == self.gateway || ip == self.link_local
    }
}

/// The uplink as the datapath sees it.
pub struct UplinkRt {
    /// The AF_PACKET port.
    pub port: Arc<Port>,
    /// The address the switch owns on the uplink.
    pub ip: Ipv4Addr,
    /// The uplink's on-link subnet.
    pub subnet: Ipv4Cidr,
    /// Next hop for destinations outside `subnet`.
    pub gateway: Option<Ipv4Addr>,
    /// The switch's MAC on the uplink.
    pub mac: MacAddr,
    /// Next-hop resolution.
    pub neigh: Arc<NeighCache>,
    /// Further addresses the switch answers ARP for (published on a specific IP).
    pub extra_ips: Vec<Ipv4Addr>,
    /// Upstream DNS resolver for names the gateway does not know (from the host's
    /// /etc/resolv.conf when the uplink was set).
    pub resolver: Option<Ipv4Addr>,
    /// Routed IPv6 (the uplink has an IPv6 address).
    pub v6: Option<UplinkRt6>,
}

/// The uplink's IPv6 side: masqueraded (NAT66) or routed.
pub struct UplinkRt6 {
    /// The switch's address on the uplink.
    pub ip: std::net::Ipv6Addr,
    /// The uplink's on-link prefix.
    pub subnet: crate::ipam::Ipv6Cidr,
    /// Next hop for destinations outside `subnet`.
    pub gateway: Option<std::net::Ipv6Addr>,
    /// The switch's link-local address on the uplink (from its MAC).
    pub link_local: std::net::Ipv6Addr,
    /// Next-hop resolution by neighbour discovery.
    pub neigh: Arc<NeighCache<std::net::Ipv6Addr>>,
    /// The networks' IPv6 leaves untranslated (`--ipv6-routed`), not masqueraded.
    pub routed: bool,
}

/// A published port: traffic for `(proto, port)` on the uplink goes to `to_ip:to_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Only this uplink-side address (default: the uplink address).
    pub ip: Option<Ipv4Addr>,
    /// Published over IPv4.
    pub v4: bool,
    /// Network of the endpoint.
    pub net: NetId,
    /// Endpoint address.
    pub to_ip: Ipv4Addr,
    /// The endpoint's IPv6 address, when the port is published over IPv6 (on the uplink's
    /// IPv6 address) too.
    pub to_ip6: Option<std::net::Ipv6Addr>,
    /// Endpoint port.
    pub to_port: u16,
}

/// The configuration snapshot workers read; replaced whole by the control plane.
#[derive(Default)]
pub struct Config {
    /// Networks by id.
    pub networks: FxHashMap<NetId, Arc<NetRt>>,
    /// Ports by id.
    pub ports: FxHashMap<PortId, Arc<Port>>,
    /// The uplink, if one is set.
    pub uplink: Option<Arc<UplinkRt>>,
    /// Published ports by protocol and uplink port.
    pub published: FxHashMap<(Proto, u16), Published>,
    /// Overlay networks by (VXLAN UDP port, VNI).
    pub vnis: FxHashMap<(u16, u32), NetId>,
    /// For the ports of a namespace attached to several networks: the namespace's addresses on
    /// its other networks, which port security lets the port send from too. A namespace routes
    /// by destination, so an answer from its second network's address (a port published there)
    /// leaves by its default route, through its first network's port; that is not spoofing.
    pub own_addrs: FxHashMap<PortId, Vec<Ipv4Addr>>,
    /// [`Config::own_addrs`] for IPv6 (dual-stack networks).
    pub own_addrs6: FxHashMap<PortId, Vec<std::net::Ipv6Addr>>,
}

impl Config {
    /// The network whose subnet holds `ip`. // HOT PATH (a handful of networks)
    pub fn network_of(&self, ip: Ipv4Addr) -> Option<&Arc<NetRt>> {
        self.networks.values().find(|n| n.subnet.contains(ip))
    }

    /// The published port a packet with tuple `t` arriving for the uplink side hits.
    pub fn published_for(&self, t: &FiveTuple) -> Option<&Published> {
        if t.proto == Proto::Icmp {
            return None;
        }
        let up_ip = self.uplink.as_ref().map(|u| u.ip);
        self.published
            .get(&(t.proto, t.dport))
            .filter(|p| p.v4 && Some(t.dst) == p.ip.or(up_ip))
    }

    /// The uplink and its IPv6 side, when it has one.
    pub fn uplink6(&self) -> Option<(&UplinkRt, &UplinkRt6)> {
        let u = self.uplink.as_deref()?;
        Some((u, u.v6.as_ref()?))
    }

    /// The published port an IPv6 packet with tuple `t` arriving for the uplink side hits
    /// (addressed to the uplink's IPv6 address), with the endpoint's IPv6 address.
    pub fn published_for6(
        &self,
        t: &FiveTuple<std::net::Ipv6Addr>,
    ) -> Option<(&Published, std::net::Ipv6Addr)> {
        if t.proto == Proto::Icmp {
            return None;
        }
        let up = self.uplink.as_ref()?.v6.as_ref()?;
        let p = self.published.get(&(t.proto, t.dport))?;
        Some((p, p.to_ip6?)).filter(|_| t.dst == up.ip)
    }
}

/// State shared by the control plane and all workers.
pub struct Shared {
    /// Current configuration.
    pub config: ArcSwap<Config>,
    /// Monotonic clock origin for table ages.
    pub clock: Instant,
    /// Set to stop the workers.
    pub shutdown: AtomicBool,
    /// Connection tracking for NAT.
    pub ct: Arc<Conntrack>,
    /// Connection tracking for NAT66 (IPv6 masquerade, IPv6 published ports).
    pub ct6: Arc<Conntrack<std::net::Ipv6Addr>>,
    /// The rate the switch sends ICMPv6 errors at (RFC 4443 §2.4(f)), all workers together.
    pub icmp6_errors: crate::port::FloodLimiter,
    /// The event stream's and flow log's listeners.
    pub bus: Arc<crate::events::Bus>,
    /// At most one `conntrack_full` event a second.
    pub ct_full_note: crate::port::FloodLimiter,
    /// At most [`NOTES_PER_S`] per-packet lines a second (`refused`, `fdb_moved`): a scan or a
    /// flapping MAC does not turn every packet into a line.
    pub packet_notes: crate::port::FloodLimiter,
}

/// ICMPv6 errors the switch sends per second at most (a burst of as many), as Linux's
/// `net.ipv6.icmp.ratelimit` bounds its own.
pub const ICMP6_ERRORS_PER_S: u64 = 1000;

/// Per-packet event and flow-log lines (`refused`, `fdb_moved`) per second at most.
pub const NOTES_PER_S: u64 = 1000;

impl Shared {
    /// Milliseconds since the daemon started.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// One worker thread's state.
pub struct Worker {
    shared: Arc<Shared>,
    epoll: Arc<Epoll>,
    counters: Arc<WorkerCounters>,
    buf: FrameBuf,
    gso: GsoBufs,
    fdbc: FdbCache,
    /// How long to keep polling (without sleeping) after the last frame.
    poll: std::time::Duration,
}

/// What one receive on a port brought.
enum Got {
    /// One frame, in the worker's buffer.
    One(usize),
    /// A UDP GRO read from the VTEP socket: bytes, sender, segment size.
    Vxlan(usize, std::net::SocketAddr, Option<u16>),
    /// This many frames in the batch buffers (the uplink).
    Batch(usize),
}

/// Frames read from the uplink with one `recvmmsg`.
pub const UPLINK_BATCH: usize = 16;

/// Per-worker buffers of the overlay's software offloads and the uplink's batched receive,
/// allocated once.
struct GsoBufs {
    /// A UDP GRO read: many VXLAN datagrams back to back.
    rx: Box<[u8]>,
    /// Segments of one super-frame, each behind its VXLAN header, for one UDP GSO send.
    tx: Box<[u8]>,
    /// The super-frame being coalesced in the frame buffer, and where it came from.
    co: Coalesce,
    co_net: NetId,
    co_vtep: std::net::IpAddr,
    /// Frame buffers a `recvmmsg` on the uplink fills, and the lengths it reported.
    batch: Vec<FrameBuf>,
    batch_lens: [usize; UPLINK_BATCH],
    /// Small frames for the uplink or a VTEP, held for one `sendmmsg`.
    txb: TxBatch,
}

impl GsoBufs {
    fn new() -> GsoBufs {
        GsoBufs {
            rx: vec![0u8; 65_536].into_boxed_slice(),
            // 64 KiB of payload plus a VXLAN + Ethernet + IP + TCP header per segment.
            tx: vec![0u8; 192 * 1024].into_boxed_slice(),
            co: Coalesce::default(),
            co_net: 0,
            co_vtep: Ipv4Addr::UNSPECIFIED.into(),
            batch: (0..UPLINK_BATCH).map(|_| FrameBuf::new()).collect(),
            batch_lens: [0; UPLINK_BATCH],
            txb: TxBatch::default(),
        }
    }
}

impl Worker {
    /// A worker waiting on `epoll` (whose tokens are port ids) that keeps polling for `poll`
    /// after its last frame before it sleeps.
    pub fn new(
        shared: Arc<Shared>,
        epoll: Arc<Epoll>,
        counters: Arc<WorkerCounters>,
        poll: std::time::Duration,
    ) -> Worker {
        Worker {
            shared,
            epoll,
            counters,
            buf: FrameBuf::new(),
            gso: GsoBufs::new(),
            fdbc: FdbCache::default(),
            poll,
        }
    }

    /// Run until [`Shared::shutdown`] is set.
    pub fn run(mut self) {
        let mut ready: Vec<u64> = Vec::with_capacity(64);
        // Polling a little after the last frame (instead of sleeping in epoll at once) saves
        // the sender the wake-up of this thread for the next one, and the round trip a
        // reschedule per hop; a runnable task on this core still gets it (yield).
        let mut last_work = std::time::Instant::now();
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            let spin = !self.poll.is_zero() && last_work.elapsed() < self.poll;
            if let Err(e) = self.epoll.wait(&mut ready, if spin { 0 } else { 100 }) {
                log::error!("epoll wait failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
            if ready.is_empty() {
                if spin {
                    std::thread::yield_now();
                }
                continue;
            }
            last_work = std::time::Instant::now();
            let cfg = self.shared.config.load();
            let mut ctx = Ctx {
                cfg: &cfg,
                buf: &mut self.buf,
                gso: &mut self.gso,
                fdbc: &mut self.fdbc,
                c: &self.counters,
                epoll: &self.epoll,
                ct: &self.shared.ct,
                ct6: &self.shared.ct6,
                icmp6_limit: &self.shared.icmp6_errors,
                shared: &self.shared,
                now: self.shared.now_ms(),
                trace: None,
            };
            for &token in &ready {
                let Some(port) = u32::try_from(token).ok().and_then(|id| cfg.ports.get(&id)) else {
                    continue;
                };
                ctx.drain(port);
            }
            let busy = last_work.elapsed().as_nanos();
            self.counters
                .add_busy(u64::try_from(busy).unwrap_or(u64::MAX));
        }
    }
}

/// A worker's buffers, for running frames through the datapath on another thread: the
/// harness's entries and the packet tracer.
pub struct Scratch {
    buf: FrameBuf,
    gso: GsoBufs,
    fdbc: FdbCache,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            buf: FrameBuf::new(),
            gso: GsoBufs::new(),
            fdbc: FdbCache::default(),
        }
    }
}

impl Scratch {
    /// Run `wire` from `port` through the datapath of `shadow` (a [`trace::Shadow`]) with
    /// `trace` collecting the stages' notes, and `counters` what it counts.
    pub fn run_traced(
        &mut self,
        shadow: &trace::Shadow,
        epoll: &Epoll,
        counters: &WorkerCounters,
        port: &Port,
        wire: &[u8],
        trace: &trace::Trace,
    ) {
        // The FDB cache holds answers from the tables it last saw: none carried into or out
        // of a trace's copies.
        self.fdbc = FdbCache::default();
        let mut ctx = self.ctx(&shadow.shared, epoll, counters, &shadow.cfg);
        ctx.trace = Some(trace);
        ctx.run_frame(port, wire);
        self.fdbc = FdbCache::default();
    }

    /// The processing context over these buffers, for the harness entries
    /// ([`Ctx::run_frame`], [`Ctx::run_vxlan`]).
    pub(crate) fn ctx<'a>(
        &'a mut self,
        shared: &'a Shared,
        epoll: &'a Epoll,
        counters: &'a WorkerCounters,
        cfg: &'a Config,
    ) -> Ctx<'a> {
        Ctx {
            cfg,
            buf: &mut self.buf,
            gso: &mut self.gso,
            fdbc: &mut self.fdbc,
            c: counters,
            epoll,
            ct: &shared.ct,
            ct6: &shared.ct6,
            icmp6_limit: &shared.icmp6_errors,
            shared,
            now: shared.now_ms(),
            trace: None,
        }
    }
}

/// What processing one wake-up's frames needs: the worker's buffer, its counters, the time.
pub(crate) struct Ctx<'a> {
    /// The configuration snapshot of this wake-up.
    pub(crate) cfg: &'a Config,
    pub(crate) buf: &'a mut FrameBuf,
    gso: &'a mut GsoBufs,
    fdbc: &'a mut FdbCache,
    pub(crate) c: &'a WorkerCounters,
    pub(crate) epoll: &'a Epoll,
    pub(crate) ct: &'a Conntrack,
    pub(crate) ct6: &'a Conntrack<std::net::Ipv6Addr>,
    pub(crate) icmp6_limit: &'a crate::port::FloodLimiter,
    pub(crate) shared: &'a Shared,
    pub(crate) now: u64,
    /// The packet tracer's notes, when this is a traced dry run ([`trace`]).
    pub(crate) trace: Option<&'a trace::Trace>,
}

/// Where a frame entered its network: a local port, or a remote VTEP (decapsulated VXLAN).
#[derive(Clone, Copy)]
pub(crate) enum Ingress<'a> {
    /// A local port.
    Local(&'a Port),
    /// A peer VTEP.
    Remote(std::net::IpAddr),
}

mod classify;
mod ip6;
mod l2;
mod nat6;
mod route;
mod rx;
pub mod trace;
mod tx;

impl Ctx<'_> {
    /// Run `wire` (`[virtio-net header | frame]`, the header as long as `port`'s device uses)
    /// through the datapath as a worker does after reading it from `port`: every check, table
    /// update, answer, translation and transmission. (The fuzzing harness's entry, with sink
    /// ports.)
    pub(crate) fn run_frame(&mut self, port: &Port, wire: &[u8]) {
        let area = self.buf.rx_area(port.dev.hdr_len());
        let n = wire.len().min(area.len());
        area[..n].copy_from_slice(&wire[..n]);
        self.process(port, n);
        self.end_batch();
    }

    #[cfg(feature = "harness")]
    /// Run `datagrams` through the datapath as a worker does after one read of them from the
    /// socket of the VTEP `port`, sent by `from`: UDP GRO datagrams of `gso` bytes back to back
    /// (`None`: one datagram), at most the worker's receive buffer (64 KiB). (The fuzzing and
    /// test harness's entry for the overlay's receive path, as [`Self::run_frame`] is for
    /// ports; the workers do not use it.)
    pub(crate) fn run_vxlan(
        &mut self,
        port: &Port,
        from: std::net::SocketAddr,
        datagrams: &[u8],
        gso: Option<u16>,
    ) {
        let n = datagrams.len().min(self.gso.rx.len());
        self.gso.rx[..n].copy_from_slice(&datagrams[..n]);
        self.vxlan_in(port, n, from, gso);
        self.end_batch();
    }

    fn drain(&mut self, port: &Port) {
        self.drain_port(port);
        self.end_batch();
    }

    /// The end of one read batch: a super-frame coalesced from its VXLAN datagrams goes out
    /// now, and then what the batch sent to the uplink or a VTEP.
    fn end_batch(&mut self) {
        self.flush_coalesced();
        self.flush_tx();
    }
}
