//! The datapath: worker threads that run each frame to completion.
//!
//! Each port's receive queue is served by exactly one worker. A worker waits on its epoll set,
//! loads the current configuration snapshot once per wake-up (an `ArcSwap` load: no lock), reads
//! up to [`BATCH`] frames per ready port into its one preallocated [`FrameBuf`], parses each frame
//! once ([`EthFrame`]), decides (learn, local delivery, flood, forward) and writes the frame to
//! the destination port itself. No per-frame hand-off between threads, no allocation per frame.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use nat::{Conntrack, FiveTuple, Proto};
use rustc_hash::{FxBuildHasher, FxHashMap};
use smoltcp::wire::EthernetProtocol;

use crate::capture::{Dir, Taps};
use crate::counters::{Drop, Event, WorkerCounters};
use crate::fdb::{Fdb, Learn, PortId};
use crate::frame::FrameBuf;
use crate::ipam::Ipv4Cidr;
use crate::local::{self, Arp, NotAnswered};
use crate::neigh::NeighCache;
use crate::port::{NetId, Port, UPLINK_NET};
use crate::sys::epoll::Epoll;
use crate::wire::{EthFrame, MacAddr};

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
}

impl Worker {
    /// A worker waiting on `epoll` (whose tokens are port ids).
    pub fn new(shared: Arc<Shared>, epoll: Arc<Epoll>, counters: Arc<WorkerCounters>) -> Worker {
        Worker {
            shared,
            epoll,
            counters,
            buf: FrameBuf::new(),
        }
    }

    /// Run until [`Shared::shutdown`] is set.
    pub fn run(mut self) {
        let mut ready: Vec<u64> = Vec::with_capacity(64);
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            if let Err(e) = self.epoll.wait(&mut ready, 100) {
                log::error!("epoll wait failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
            if ready.is_empty() {
                continue;
            }
            let cfg = self.shared.config.load();
            let mut ctx = Ctx {
                buf: &mut self.buf,
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

/// What processing one wake-up's frames needs: the worker's buffer, its counters, the time.
pub(crate) struct Ctx<'a> {
    pub(crate) buf: &'a mut FrameBuf,
    pub(crate) c: &'a WorkerCounters,
    pub(crate) epoll: &'a Epoll,
    pub(crate) ct: &'a Conntrack,
    pub(crate) now: u64,
}

impl Ctx<'_> {
    fn drain(&mut self, cfg: &Config, port: &Port) {
        let now = self.now;
        for _ in 0..BATCH {
            match port.dev.read(self.buf.rx_area(port.dev.hdr_len())) {
                Ok(n) => self.process(cfg, port, n, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A packet socket reports a link going down once; it is not fatal.
                Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => return,
                Err(e) => {
                    // The device is gone (its namespace was deleted, say): stop polling it so a
                    // dead fd cannot spin the worker. The endpoint stays until it is detached.
                    log::warn!("port {}: read failed: {e}; port stopped", port.name);
                    let _ = self.epoll.delete(port.dev.as_raw_fd());
                    return;
                }
            }
        }
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
        let Some(eth) = EthFrame::parse(frame) else {
            c.drop(Drop::Malformed);
            return;
        };
        if !eth.src.is_valid_unicast() {
            c.drop(Drop::Malformed);
            return;
        }
        if inp.network == UPLINK_NET {
            self.uplink_in(cfg, inp, &eth, now);
            return;
        }
        let Some(net) = cfg.networks.get(&inp.network) else {
            return;
        };
        match net.fdb.learn(eth.src, inp.id, now) {
            Learn::Refreshed => {}
            Learn::New => c.event(Event::Learned),
            Learn::Moved { .. } => c.event(Event::Moved),
            Learn::Ignored => c.drop(Drop::FdbFull),
        }

        if eth.ethertype == EthernetProtocol::Arp {
            let Some(arp) = local::parse_arp(frame) else {
                c.drop(Drop::Malformed);
                return;
            };
            if self.arp(net, inp, &eth, &arp) {
                return;
            }
        } else if eth.dst == net.gateway_mac {
            self.for_gateway(cfg, net, inp, &eth, now);
            return;
        }
        if !net.icc {
            // Endpoints of an icc=false network reach only the gateway.
            c.drop(Drop::Policy);
            return;
        }

        if eth.dst.is_multicast() {
            self.flood(net, inp, now);
            return;
        }
        match net.fdb.lookup(eth.dst, now) {
            Some(id) if id == inp.id => c.drop(Drop::SamePort),
            Some(id) => match cfg.ports.get(&id).filter(|p| p.network == inp.network) {
                Some(out) => out.transmit(self.buf.tap_bytes(), c),
                None => self.flood(net, inp, now),
            },
            None => self.flood(net, inp, now),
        }
    }

    /// ARP: snoop the sender, answer for the gateway and for known endpoints. Returns true when
    /// the frame was consumed.
    fn arp(&mut self, net: &NetRt, inp: &Port, eth: &EthFrame, arp: &Arp) -> bool {
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
            // Replies to the gateway are consumed; other replies are forwarded as usual.
            return eth.dst == net.gateway_mac;
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
                Some(mac) if mac != arp.sender_mac => {
                    c.event(Event::ArpSuppressed);
                    mac
                }
                _ => return false,
            }
        };
        local::arp_reply_in_place(self.buf.data_mut(), arp, answer);
        self.reply(net, inp);
        true
    }

    /// A frame addressed to the gateway MAC that is not ARP: answered (ping) or routed.
    fn for_gateway(&mut self, cfg: &Config, net: &NetRt, inp: &Port, eth: &EthFrame, now: u64) {
        let c = self.c;
        if eth.ethertype != EthernetProtocol::Ipv4 {
            c.drop(Drop::NoRoute);
            return;
        }
        match local::icmp_echo_reply_in_place(self.buf.data_mut(), net.gateway_ip, net.gateway_mac)
        {
            Ok(len) => {
                c.event(Event::IcmpGateway);
                self.buf.set_len(len);
                self.reply(net, inp);
            }
            Err(NotAnswered::Malformed) => c.drop(Drop::Malformed),
            Err(NotAnswered::NotForUs) => self.route(cfg, Some(net), now),
        }
    }

    /// Send the frame the switch just made in `self.buf` back out of `inp`.
    fn reply(&mut self, net: &NetRt, inp: &Port) {
        // The switch computed every checksum itself: no offload metadata applies.
        self.buf.vnet = Default::default();
        let bytes = self.buf.tap_bytes();
        for _ in 0..net
            .taps
            .emit(Dir::Tx, &bytes[crate::wire::VirtioNetHdr::LEN..])
        {
            self.c.drop(Drop::CaptureDropped);
        }
        inp.transmit(bytes, self.c);
    }

    /// Send the frame to every port of the network but the one it came from.
    fn flood(&mut self, net: &NetRt, inp: &Port, now: u64) {
        let c = self.c;
        if !inp.flood.allow(now) {
            c.drop(Drop::FloodLimited);
            return;
        }
        c.event(Event::Flooded);
        let bytes = self.buf.tap_bytes();
        for p in net.ports.iter().filter(|p| p.id != inp.id) {
            p.transmit(bytes, c);
        }
    }
}
