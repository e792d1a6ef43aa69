//! The datapath: worker threads that run each frame to completion.
//!
//! Each port's receive queue is served by exactly one worker. A worker waits on its epoll set,
//! loads the current configuration snapshot once per wake-up (an `ArcSwap` load: no lock), reads
//! up to [`BATCH`] frames per ready port into its one preallocated [`FrameBuf`], parses each frame
//! once ([`EthFrame`]), decides (learn, local delivery, flood, forward) and writes the frame to
//! the destination port itself. No per-frame hand-off between threads, no allocation per frame.

use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use nat::{Conntrack, FiveTuple, Proto};
use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::capture::{Dir, Taps};
use crate::counters::{Drop, Event, WorkerCounters};
use crate::fdb::{Fdb, FdbCache, Learn, PortId};
use crate::frame::FrameBuf;
use crate::ipam::Ipv4Cidr;
use crate::local::{self, NotAnswered};
use crate::neigh::NeighCache;
use crate::port::{Device, NetId, Port, VxlanDev, UPLINK_NET};
use crate::sys::epoll::Epoll;
use crate::txbatch::TxBatch;
use overlay::gso::{self, Coalesce};
use wire::arp::{self, Arp};
use wire::checksum;
use wire::ethernet::{EthFrame, EtherType, MacAddr};
use wire::{ipv4, vxlan, VirtioNetHdr};
use wire::{Parsed, L3};

/// Frames read from one port before the worker moves on to the next ready port.
pub const BATCH: usize = 64;

/// Endpoint addresses the switch answers ARP for (ARP suppression), per network.
pub type NeighTable = DashMap<Ipv4Addr, MacAddr, FxBuildHasher>;

/// A network as the datapath sees it (part of a [`Config`] snapshot).
pub struct NetRt {
    /// Network identifier.
    pub id: NetId,
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
    /// Names the gateway's DNS answers (endpoints and aliases of this and linked networks).
    pub dns: FxHashMap<String, Ipv4Addr>,
    /// Overlay networks: the VNI.
    pub vni: Option<u32>,
    /// Overlay networks: peer VTEPs (head-end replication list).
    pub peers: Vec<Ipv4Addr>,
    /// Overlay networks: MACs behind remote VTEPs.
    pub remote: Option<Arc<overlay::RemoteFdb>>,
    /// Overlay networks: the VTEP port that sends and receives this network's VXLAN.
    pub vtep: Option<Arc<Port>>,
    /// Rate limit of the gateway's ARP probes for addresses it has to route to.
    pub probes: Arc<NeighCache>,
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
}

/// A published port: traffic for `(proto, port)` on the uplink goes to `to_ip:to_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Only this uplink-side address (default: the uplink address).
    pub ip: Option<Ipv4Addr>,
    /// Network of the endpoint.
    pub net: NetId,
    /// Endpoint address.
    pub to_ip: Ipv4Addr,
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
            .filter(|p| Some(t.dst) == p.ip.or(up_ip))
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
}

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
    Vxlan(usize, std::net::SocketAddrV4, Option<u16>),
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
    co_vtep: Ipv4Addr,
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
            co_vtep: Ipv4Addr::UNSPECIFIED,
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
                buf: &mut self.buf,
                gso: &mut self.gso,
                fdbc: &mut self.fdbc,
                c: &self.counters,
                epoll: &self.epoll,
                ct: &self.shared.ct,
                now: self.shared.now_ms(),
            };
            for &token in &ready {
                let Some(port) = u32::try_from(token).ok().and_then(|id| cfg.ports.get(&id)) else {
                    continue;
                };
                ctx.drain(&cfg, port);
            }
        }
    }
}

/// A worker's buffers, for running frames through the datapath on another thread
/// ([`run_frame`]).
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
    /// The processing context over these buffers, for the harness entries below.
    fn ctx<'a>(
        &'a mut self,
        shared: &'a Shared,
        epoll: &'a Epoll,
        counters: &'a WorkerCounters,
    ) -> Ctx<'a> {
        Ctx {
            buf: &mut self.buf,
            gso: &mut self.gso,
            fdbc: &mut self.fdbc,
            c: counters,
            epoll,
            ct: &shared.ct,
            now: shared.now_ms(),
        }
    }
}

/// Run `wire` (`[virtio-net header | frame]`, the header as long as `port`'s device uses) through
/// the datapath as a worker does after reading it from `port`: every check, table update,
/// answer, translation and transmission. (The fuzzing harness's entry, with sink ports.)
pub fn run_frame(
    shared: &Shared,
    epoll: &Epoll,
    counters: &WorkerCounters,
    s: &mut Scratch,
    cfg: &Config,
    port: &Port,
    wire: &[u8],
) {
    let mut ctx = s.ctx(shared, epoll, counters);
    let area = ctx.buf.rx_area(port.dev.hdr_len());
    let n = wire.len().min(area.len());
    area[..n].copy_from_slice(&wire[..n]);
    let now = ctx.now;
    ctx.process(cfg, port, n, now);
    ctx.end_batch(cfg);
}

/// Run `datagrams` through the datapath as a worker does after one read of them from the socket
/// of the VTEP `port`, sent by `from`: UDP GRO datagrams of `gso` bytes back to back (`None`: one
/// datagram), at most the worker's receive buffer (64 KiB). (The fuzzing and test harness's entry
/// for the overlay's receive path, as [`run_frame`] is for ports; the workers do not use it.)
#[allow(clippy::too_many_arguments)]
pub fn run_vxlan(
    shared: &Shared,
    epoll: &Epoll,
    counters: &WorkerCounters,
    s: &mut Scratch,
    cfg: &Config,
    port: &Port,
    from: std::net::SocketAddrV4,
    datagrams: &[u8],
    gso: Option<u16>,
) {
    let mut ctx = s.ctx(shared, epoll, counters);
    let n = datagrams.len().min(ctx.gso.rx.len());
    ctx.gso.rx[..n].copy_from_slice(&datagrams[..n]);
    let now = ctx.now;
    ctx.vxlan_in(cfg, port, n, from, gso, now);
    ctx.end_batch(cfg);
}

/// What processing one wake-up's frames needs: the worker's buffer, its counters, the time.
pub(crate) struct Ctx<'a> {
    pub(crate) buf: &'a mut FrameBuf,
    gso: &'a mut GsoBufs,
    fdbc: &'a mut FdbCache,
    pub(crate) c: &'a WorkerCounters,
    pub(crate) epoll: &'a Epoll,
    pub(crate) ct: &'a Conntrack,
    pub(crate) now: u64,
}

/// Where a frame entered its network: a local port, or a remote VTEP (decapsulated VXLAN).
#[derive(Clone, Copy)]
pub(crate) enum Ingress<'a> {
    /// A local port.
    Local(&'a Port),
    /// A peer VTEP.
    Remote(Ipv4Addr),
}

impl Ctx<'_> {
    fn drain(&mut self, cfg: &Config, port: &Port) {
        self.drain_port(cfg, port);
        self.end_batch(cfg);
    }

    /// The end of one read batch: a super-frame coalesced from its VXLAN datagrams goes out
    /// now, and then what the batch sent to the uplink or a VTEP.
    fn end_batch(&mut self, cfg: &Config) {
        self.flush_coalesced(cfg);
        self.flush_tx();
    }

    /// Send the frames held for the uplink or a VTEP.
    pub(crate) fn flush_tx(&mut self) {
        self.gso.txb.flush(self.c);
    }

    /// Send the frame in `self.buf` out of the uplink (`port`), held for a batched send.
    /// // HOT PATH
    pub(crate) fn send_uplink(&mut self, port: &Arc<Port>) {
        let wire = self.buf.wire_bytes(crate::sys::packet::VNET_HDR_LEN);
        port.capture_tx(&wire[crate::sys::packet::VNET_HDR_LEN..], self.c);
        self.gso.txb.send(port, wire, Ipv4Addr::UNSPECIFIED, self.c);
    }

    /// Send `wire` (`[vnet hdr | frame]`) out of the uplink (`port`), after the frames held.
    pub(crate) fn send_uplink_bytes(&mut self, port: &Arc<Port>, wire: &[u8]) {
        self.flush_tx();
        port.transmit(wire, self.c);
    }

    fn drain_port(&mut self, cfg: &Config, port: &Port) {
        let now = self.now;
        let mut budget = BATCH;
        while budget > 0 {
            let r = match &port.dev {
                Device::Vxlan(v) => crate::sys::udp::recv_gro(&v.udp, &mut self.gso.rx)
                    .map(|(n, a, g)| Got::Vxlan(n, a, g)),
                Device::Packet(p) => self.recv_uplink(p.queue(self.c.queue)).map(Got::Batch),
                dev => dev
                    .read(self.c.queue, self.buf.rx_area(dev.hdr_len()))
                    .map(Got::One),
            };
            match r {
                Ok(Got::One(n)) => {
                    budget -= 1;
                    self.process(cfg, port, n, now);
                }
                Ok(Got::Vxlan(n, from, gso)) => {
                    budget -= 1;
                    self.vxlan_in(cfg, port, n, from, gso, now);
                }
                Ok(Got::Batch(k)) => {
                    // Each frame of the batch is processed in the worker's buffer: swap it in
                    // and out (pointer swaps, no copy).
                    for i in 0..k {
                        std::mem::swap(self.buf, &mut self.gso.batch[i]);
                        self.process(cfg, port, self.gso.batch_lens[i], now);
                        std::mem::swap(self.buf, &mut self.gso.batch[i]);
                    }
                    budget = budget.saturating_sub(k.max(1));
                    if k < UPLINK_BATCH {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A packet socket reports a link going down once; it is not fatal. Nor is an
                // ICMP error reported on the VXLAN socket.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(
                            libc::ENETDOWN
                                | libc::ECONNREFUSED
                                | libc::EHOSTUNREACH
                                | libc::ENETUNREACH
                        )
                    ) =>
                {
                    return
                }
                Err(e) => {
                    // The device is gone (its namespace was deleted, say): stop polling it so a
                    // dead fd cannot spin the worker. The endpoint stays until it is detached.
                    log::warn!("port {}: read failed: {e}; port stopped", port.name);
                    let _ = self.epoll.delete(port.dev.queue_fd(self.c.queue));
                    return;
                }
            }
        }
    }

    /// Read up to [`UPLINK_BATCH`] frames from the uplink's packet socket with one syscall into
    /// the worker's batch buffers.
    fn recv_uplink(&mut self, p: &crate::sys::packet::PacketSocket) -> io::Result<usize> {
        let hdr = crate::sys::packet::VNET_HDR_LEN;
        let mut bufs = self.gso.batch.iter_mut();
        let mut areas: [&mut [u8]; UPLINK_BATCH] =
            std::array::from_fn(|_| bufs.next().map(|b| b.rx_area(hdr)).unwrap_or_default());
        p.recv_batch(&mut areas, &mut self.gso.batch_lens)
    }

    /// Decide what to do with the frame just read into `self.buf` from `inp`. // HOT PATH
    fn process(&mut self, cfg: &Config, inp: &Port, n: usize, now: u64) {
        let c = self.c;
        if !self.buf.received(n, inp.dev.hdr_len()) {
            c.drop(Drop::Malformed);
            return;
        }
        let frame = self.buf.data();
        inp.count_rx(frame.len());
        for _ in 0..inp.taps.emit(Dir::Rx, frame) {
            c.drop(Drop::CaptureDropped);
        }
        let Some(p) = Parsed::parse(frame) else {
            c.drop(Drop::Malformed);
            return;
        };
        if !p.eth.src.is_valid_unicast() {
            c.drop(Drop::Malformed);
            return;
        }
        if inp.network == UPLINK_NET {
            self.uplink_in(cfg, inp, &p, now);
            return;
        }
        if inp.spoof_check && spoofed(inp, &cfg.own_addrs, &p, self.buf.data()) {
            c.drop(Drop::Spoofed);
            return;
        }
        let Some(net) = cfg.networks.get(&inp.network) else {
            return;
        };
        if oversize(&p, self.buf.len(), self.buf.vnet, net.mtu) {
            // Larger than the network's MTU (the endpoint raised its own): no other endpoint
            // is set up to take it.
            c.drop(Drop::Oversize);
            return;
        }
        match self.fdbc.learn(&net.fdb, net.id, p.eth.src, inp.id, now) {
            Learn::Refreshed => {}
            Learn::New | Learn::Moved { .. } => {
                c.event(Event::Learned);
                if let Some(r) = &net.remote {
                    r.forget(&p.eth.src.0); // it lives here now
                }
            }
            Learn::Ignored => c.drop(Drop::FdbFull),
        }
        self.switch_frame(cfg, net, Ingress::Local(inp), &p, now);
    }

    /// One UDP read from the VTEP socket: `n` bytes from `from`, several datagrams of `gso`
    /// bytes each when the kernel coalesced them (UDP GRO).
    fn vxlan_in(
        &mut self,
        cfg: &Config,
        inp: &Port,
        n: usize,
        from: std::net::SocketAddrV4,
        gso: Option<u16>,
        now: u64,
    ) {
        let size = gso.map_or(n, usize::from).max(1);
        let mut off = 0;
        while off < n {
            let end = (off + size).min(n);
            self.vxlan_datagram(cfg, inp, off..end, *from.ip(), now);
            off = end;
        }
        if n == 0 {
            self.c.drop(Drop::Malformed);
        }
    }

    /// A VXLAN datagram (`self.gso.rx[at]`) from `vtep`: check it, then either append its inner
    /// TCP segment to the super-frame being coalesced or handle the inner frame on its own.
    fn vxlan_datagram(
        &mut self,
        cfg: &Config,
        inp: &Port,
        at: std::ops::Range<usize>,
        vtep: Ipv4Addr,
        now: u64,
    ) {
        let c = self.c;
        let GsoBufs {
            rx,
            co,
            co_net,
            co_vtep,
            ..
        } = &mut *self.gso;
        let pkt = &rx[at.clone()];
        inp.count_rx(pkt.len());
        if pkt.len() < vxlan::HEADER_LEN {
            return c.drop(Drop::Malformed);
        }
        let vni = match vxlan::decap(pkt) {
            Ok(v) => v,
            Err(_) => return c.drop(Drop::Malformed),
        };
        let port = match &inp.dev {
            Device::Vxlan(v) => v.port,
            _ => return,
        };
        let Some(net) = cfg
            .vnis
            .get(&(port, vni))
            .and_then(|id| cfg.networks.get(id))
        else {
            return c.drop(Drop::VxlanUnknownVni);
        };
        if !net.peers.contains(&vtep) {
            return c.drop(Drop::VxlanUnknownPeer);
        }
        let inner = &pkt[vxlan::HEADER_LEN..];
        if co.segs > 0 {
            if *co_net == net.id
                && *co_vtep == vtep
                && co.accepts(self.buf.data(), self.buf.len(), inner)
            {
                let flags = co.flags_of(inner);
                let payload = &inner[co.hdr_len..];
                if self.buf.append(payload) {
                    co.appended(payload.len(), flags);
                    return;
                }
            }
            // Not a continuation: deliver what was pending (which leaves the receive buffer
            // alone), then start over with this one.
            self.flush_coalesced(cfg);
            self.buf
                .set(&self.gso.rx[at.start + vxlan::HEADER_LEN..at.end]);
        } else {
            self.buf.set(inner);
        }
        let Some(p) = Parsed::parse(self.buf.data()) else {
            return c.drop(Drop::Malformed);
        };
        let g = &mut *self.gso;
        if g.co.start(&p, self.buf.data()) {
            (g.co_net, g.co_vtep) = (net.id, vtep);
            return;
        }
        self.vxlan_deliver(cfg, net, vtep, p, now);
    }

    /// Deliver the super-frame coalesced so far (if any) as one frame with GSO metadata.
    fn flush_coalesced(&mut self, cfg: &Config) {
        let g = &mut *self.gso;
        if g.co.segs == 0 {
            return;
        }
        let (net, vtep) = (g.co_net, g.co_vtep);
        if let Some(v) = g.co.finish(self.buf.data_mut()) {
            self.buf.vnet = v;
        }
        // The merged frame is a new frame: its one parse is here.
        let (Some(net), Some(p)) = (cfg.networks.get(&net), Parsed::parse(self.buf.data())) else {
            return;
        };
        self.vxlan_deliver(cfg, net, vtep, p, self.now);
    }

    /// The inner frame in `self.buf` came from `vtep` in `net`: learn its source behind the
    /// VTEP and switch it within its network (never back to the overlay: split horizon).
    fn vxlan_deliver(&mut self, cfg: &Config, net: &NetRt, vtep: Ipv4Addr, p: Parsed, now: u64) {
        let c = self.c;
        let eth = p.eth;
        if !eth.src.is_valid_unicast() {
            return c.drop(Drop::Malformed);
        }
        if let Some(r) = &net.remote {
            if net.fdb.lookup(eth.src, now).is_some() {
                net.fdb.forget(eth.src); // it moved behind the VTEP
            }
            if !r.learn(eth.src.0, vtep, now) {
                c.drop(Drop::FdbFull);
            }
        }
        if self.buf.vnet.flags & VirtioNetHdr::F_NEEDS_CSUM == 0 {
            checksum::complete_partial_l4(self.buf.data_mut());
        }
        for _ in 0..net.taps.emit(Dir::Rx, self.buf.data()) {
            c.drop(Drop::CaptureDropped);
        }
        self.switch_frame(cfg, net, Ingress::Remote(vtep), &p, now);
    }

    /// L2 decision for a frame of network `net`: local delivery, unicast, or flood.
    fn switch_frame(&mut self, cfg: &Config, net: &NetRt, ing: Ingress<'_>, p: &Parsed, now: u64) {
        let c = self.c;
        let eth = &p.eth;
        if let L3::Arp(arp) = &p.l3 {
            if self.arp(net, ing, eth, arp) {
                return;
            }
        } else if eth.ethertype == EtherType::ARP {
            c.drop(Drop::Malformed);
            return;
        } else if eth.dst == net.gateway_mac {
            self.for_gateway(cfg, net, ing, p, now);
            return;
        }
        if !net.icc {
            // Endpoints of an icc=false network reach only the gateway.
            c.drop(Drop::Policy);
            return;
        }
        if eth.dst.is_multicast() {
            self.flood(net, ing, p, now);
            return;
        }
        match self.fdbc.lookup(&net.fdb, net.id, eth.dst, now) {
            Some(id) if matches!(ing, Ingress::Local(p) if p.id == id) => c.drop(Drop::SamePort),
            Some(id) => match cfg.ports.get(&id).filter(|p| p.network == net.id) {
                Some(out) => out.transmit(self.buf.tap_bytes(), c),
                None => self.flood(net, ing, p, now),
            },
            None => match (
                ing,
                net.remote.as_ref().and_then(|r| r.lookup(&eth.dst.0, now)),
            ) {
                (Ingress::Local(_), Some(vtep)) => self.encap(net, &[vtep], p),
                _ => self.flood(net, ing, p, now),
            },
        }
    }

    /// ARP: snoop the sender, answer for the gateway and for known endpoints. Returns true when
    /// the frame was consumed.
    fn arp(&mut self, net: &NetRt, ing: Ingress<'_>, eth: &EthFrame, arp: &Arp) -> bool {
        let c = self.c;
        if arp.sender_mac == eth.src
            && net.subnet.is_host(arp.sender_ip)
            && arp.sender_ip != net.gateway_ip
        {
            let known = net.neigh.get(&arp.sender_ip).map(|m| *m);
            if known != Some(arp.sender_mac) {
                net.neigh.insert(arp.sender_ip, arp.sender_mac);
            }
        }
        if !arp.is_request {
            // Replies to the gateway are consumed; other replies are forwarded as usual. The
            // gateway is the same MAC on every host of an overlay network, so a reply to a
            // probe another host sent ends here: replicate it to the peers so they learn too.
            if eth.dst != net.gateway_mac {
                return false;
            }
            if matches!(ing, Ingress::Local(_)) && !net.peers.is_empty() {
                self.encap(net, &net.peers, &Parsed::arp(*eth, *arp));
            }
            return true;
        }
        let answer = if arp.target_ip == net.gateway_ip {
            c.event(Event::ArpGateway);
            net.gateway_mac
        } else if arp.sender_ip == arp.target_ip {
            return false; // gratuitous ARP: let everybody see it
        } else if !net.icc {
            self.c.drop(Drop::Policy);
            return true;
        } else {
            match net.neigh.get(&arp.target_ip).map(|m| *m) {
                // For a requester on another host, answer only for endpoints that live here:
                // the reply's source MAC teaches that host where the endpoint is.
                Some(mac)
                    if matches!(ing, Ingress::Remote(_))
                        && net.fdb.lookup(mac, self.now).is_none() =>
                {
                    return false
                }
                Some(mac) if mac != arp.sender_mac => {
                    c.event(Event::ArpSuppressed);
                    mac
                }
                _ => return false,
            }
        };
        arp::reply_in_place(self.buf.data_mut(), arp, answer);
        self.reply(net, ing);
        true
    }

    /// A frame addressed to the gateway MAC that is not ARP: answered (ping) or routed.
    fn for_gateway(&mut self, cfg: &Config, net: &NetRt, ing: Ingress<'_>, p: &Parsed, now: u64) {
        let c = self.c;
        let ip = match p.l3 {
            L3::Ipv4(ip) => ip,
            L3::Malformed if p.eth.ethertype == EtherType::IPV4 => return c.drop(Drop::Malformed),
            _ => return c.drop(Drop::NoRoute),
        };
        match local::icmp_echo_reply_in_place(
            self.buf.data_mut(),
            p,
            net.gateway_ip,
            net.gateway_mac,
        ) {
            Ok(len) => {
                c.event(Event::IcmpGateway);
                self.buf.set_len(len);
                self.reply(net, ing);
            }
            Err(NotAnswered::Malformed) => c.drop(Drop::Malformed),
            Err(NotAnswered::NotForUs) => self.route(cfg, Some(net), p.eth, ip, now),
        }
    }

    /// Send the frame the switch just made in `self.buf` back where the request came from.
    fn reply(&mut self, net: &NetRt, ing: Ingress<'_>) {
        // The switch computed every checksum itself: no offload metadata applies.
        self.buf.vnet = Default::default();
        let bytes = self.buf.tap_bytes();
        for _ in 0..net.taps.emit(Dir::Tx, &bytes[VirtioNetHdr::LEN..]) {
            self.c.drop(Drop::CaptureDropped);
        }
        match ing {
            Ingress::Local(inp) => inp.transmit(bytes, self.c),
            Ingress::Remote(vtep) => {
                // The answer is a frame the switch made: parsed here, once, for its encapsulation.
                if let Some(p) = Parsed::parse(self.buf.data()) {
                    self.encap(net, &[vtep], &p);
                }
            }
        }
    }

    /// Send the frame to every local port of the network but the one it came from and, for
    /// frames from local ports of an overlay network, to every peer VTEP (head-end replication).
    pub(crate) fn flood(&mut self, net: &NetRt, ing: Ingress<'_>, p: &Parsed, now: u64) {
        let c = self.c;
        if let Ingress::Local(inp) = ing {
            if !inp.flood.allow(now) {
                c.drop(Drop::FloodLimited);
                return;
            }
        }
        c.event(Event::Flooded);
        let from = match ing {
            Ingress::Local(p) => p.id,
            Ingress::Remote(_) => PortId::MAX,
        };
        let bytes = self.buf.tap_bytes();
        for p in net.ports.iter().filter(|p| p.id != from) {
            p.transmit(bytes, c);
        }
        if matches!(ing, Ingress::Local(_)) && !net.peers.is_empty() {
            self.encap(net, &net.peers, p);
        }
    }

    /// Encapsulate the frame in VXLAN for `net` and send one copy to each VTEP in `vteps`.
    pub(crate) fn encap(&mut self, net: &NetRt, vteps: &[Ipv4Addr], p: &Parsed) {
        let c = self.c;
        let (Some(vni), Some(vtep)) = (net.vni, net.vtep.as_ref()) else {
            return;
        };
        let Device::Vxlan(dev) = &vtep.dev else {
            return;
        };
        let vnet = self.buf.vnet;
        if vnet.gso_type != 0 {
            return self.encap_gso(net, vni, vtep, dev, vteps, p);
        }
        if self.buf.len() > net.mtu as usize + EthFrame::HEADER_LEN {
            // Larger than the overlay MTU: never fragment the underlay.
            return c.drop(Drop::Oversize);
        }
        if vnet.flags & VirtioNetHdr::F_NEEDS_CSUM != 0 {
            checksum::finish(
                self.buf.data_mut(),
                usize::from(vnet.csum_start),
                usize::from(vnet.csum_offset),
            );
            self.buf.vnet = Default::default();
        }
        let sport = vxlan::source_port(p);
        let inner_len = self.buf.len();
        // Unicast is held for a batched send. Head-end replication rewrites the outer
        // destination in place, so each copy goes at once, after what is held.
        let unicast = vteps.len() == 1;
        if !unicast {
            self.flush_tx();
        }
        for (i, dst) in vteps.iter().enumerate() {
            let hdr: &mut [u8; vxlan::OUTER_LEN] = self
                .buf
                .headroom_mut(vxlan::OUTER_LEN)
                .try_into()
                .expect("headroom holds outer headers");
            if i == 0 {
                vxlan::write_outer(hdr, dev.src, *dst, sport, dev.port, vni, inner_len);
            } else {
                vxlan::set_outer_dst(hdr, *dst);
            }
            let pkt = self.buf.with_headroom(vxlan::OUTER_LEN);
            if unicast {
                self.gso.txb.send(vtep, pkt, *dst, c);
                continue;
            }
            match dev.raw.send_to(pkt, *dst) {
                Ok(_) => vtep.count_tx(pkt.len()),
                Err(_) => {
                    vtep.count_tx_drop();
                    c.drop(Drop::TxError);
                }
            }
        }
    }
}

impl Ctx<'_> {
    /// Encapsulate a TCP super-frame: cut it into segments that fit the overlay MTU (each with
    /// its VXLAN header, in one buffer) and send them with as few UDP GSO sends as the kernel's
    /// limits allow (64 segments, 64 KiB), to each VTEP.
    fn encap_gso(
        &mut self,
        net: &NetRt,
        vni: u32,
        vtep: &Port,
        dev: &VxlanDev,
        vteps: &[Ipv4Addr],
        p: &Parsed,
    ) {
        let c = self.c;
        let vnet = self.buf.vnet;
        let Some(t) =
            gso::Tcp4::of(p, self.buf.len()).filter(|_| vnet.gso_type & 0x7f == gso::GSO_TCPV4)
        else {
            // Only TCPv4 super-frames are segmented (overlay TAPs offer TSO4 alone).
            return c.drop(Drop::Oversize);
        };
        // Segments must fit the overlay MTU, whatever MSS the sender's network had.
        let room = (net.mtu as usize + EthFrame::HEADER_LEN).saturating_sub(t.hdr_len);
        let mss = usize::from(vnet.gso_size).min(room);
        let Some(s) = gso::segment_tcp4(self.buf.data(), t, mss, vni, &mut self.gso.tx) else {
            return c.drop(Drop::Oversize);
        };
        // Frames of this flow held for the VTEP go first.
        self.flush_tx();
        let per_send = (MAX_GSO_SEGS).min(MAX_GSO_BYTES / s.size).max(1);
        let chunk = per_send * s.size;
        for dst in vteps {
            let to = std::net::SocketAddrV4::new(*dst, dev.port);
            for part in self.gso.tx[..s.len].chunks(chunk) {
                match crate::sys::udp::send_segments(&dev.udp, part, to, s.size as u16) {
                    Ok(n) => vtep.count_tx_many(part.len().div_ceil(s.size), n),
                    Err(_) => {
                        vtep.count_tx_drop();
                        c.drop(Drop::TxError);
                    }
                }
            }
        }
    }
}

/// Most datagrams in one UDP GSO send (`UDP_MAX_SEGMENTS` of older kernels).
const MAX_GSO_SEGS: usize = 64;
/// Most bytes in one UDP GSO send (one IPv4 datagram's worth, less the headers).
const MAX_GSO_BYTES: usize = 65_000;

/// Whether a frame from an endpoint is larger than its network's `mtu` allows: a plain frame
/// longer than the MTU plus its Ethernet header (and an 802.1Q tag if it has one), or a GSO
/// TCPv4 super-frame whose segments would be (its parsed headers plus `gso_size`: the virtio
/// header's `hdr_len` may count payload too).
fn oversize(p: &Parsed, len: usize, vnet: VirtioNetHdr, mtu: u32) -> bool {
    let tag = if p.eth.ethertype == EtherType::VLAN {
        EthFrame::VLAN_TAG_LEN
    } else {
        0
    };
    let limit = mtu as usize + EthFrame::HEADER_LEN + tag;
    if vnet.gso_type == 0 {
        len > limit
    } else {
        p.tcp4_headers_len()
            .is_some_and(|h| h + usize::from(vnet.gso_size) > limit)
    }
}

/// Port security: the frame's source MAC, its IPv4 source and an ARP sender must be the
/// endpoint's own (`0.0.0.0` is allowed: address probes), or for the IPv4 source and ARP
/// sender, one of the port's entries in `also` (the namespace's addresses on its other
/// networks, [`Config::own_addrs`]). Truncated frames
/// are left for the parsers to count as malformed.
fn spoofed(port: &Port, also: &FxHashMap<PortId, Vec<Ipv4Addr>>, p: &Parsed, frame: &[u8]) -> bool {
    if p.eth.src != port.mac {
        return true;
    }
    // The table is looked up only for a source that is not the port's own (rare).
    let ip_ok = |ip: Ipv4Addr| {
        ip == port.ip || ip.is_unspecified() || also.get(&port.id).is_some_and(|a| a.contains(&ip))
    };
    match &p.l3 {
        L3::Ipv4(ip) => !ip_ok(ip.src),
        L3::Arp(a) => a.sender_mac != port.mac || !ip_ok(a.sender_ip),
        // An IPv4 header that does not parse is judged by the source it claims.
        L3::Malformed if p.eth.ethertype == EtherType::IPV4 => {
            ipv4::claimed_src(EthFrame::payload(frame)).is_some_and(|ip| !ip_ok(ip))
        }
        _ => false,
    }
}
