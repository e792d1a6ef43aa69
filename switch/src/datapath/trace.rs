//! The packet tracer's side of the datapath: a *shadow* of the live configuration and tables
//! (the same networks, ports and policy; copies of the FDB, neighbour caches, remote FDB,
//! conntrack and flood buckets; devices that send nothing) that a frame is run through by the
//! real stages, and the notes those stages leave on the way ([`Trace`]). The live tables are
//! only read (to copy them); the copies are dropped after the run.
//!
//! Each stage notes what it looked up and found with [`Ctx::note`]: one branch on a `None`
//! when no trace is running, nothing built.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;

use super::{Config, Ctx, NetRt, NetRt6, Shared, UplinkRt, UplinkRt6};
use crate::fdb::PortId;
use crate::port::{FloodLimiter, Port};

/// One stage's note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The stage (`classify`, `l2`, `arp`, `route`, `nat`, `encap`, ...).
    pub stage: &'static str,
    /// What it looked up, found and decided.
    pub detail: String,
}

/// A VXLAN copy the dry run would have sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanOut {
    /// The VNI.
    pub vni: u32,
    /// Outer source (`0.0.0.0`: the kernel picks by route) and destination VTEP.
    pub src: IpAddr,
    /// The destination VTEP.
    pub dst: IpAddr,
    /// Outer UDP source port (the inner flow's hash) and destination port.
    pub sport: u16,
    /// Outer UDP destination port.
    pub dport: u16,
    /// The inner frame.
    pub inner: Vec<u8>,
}

/// What a traced frame's run left: the stages' notes and the VXLAN it would have sent.
#[derive(Debug, Default)]
pub struct Trace {
    notes: RefCell<Vec<Note>>,
    vxlan: RefCell<Vec<VxlanOut>>,
}

impl Trace {
    /// The notes, in the order the stages made them.
    pub fn notes(&self) -> Vec<Note> {
        self.notes.borrow().clone()
    }

    /// The VXLAN copies.
    pub fn vxlan(&self) -> Vec<VxlanOut> {
        self.vxlan.borrow().clone()
    }
}

/// [`Ctx::note`] where the context is partly borrowed (`note(self.trace, ...)`).
#[inline]
pub(crate) fn note(t: Option<&Trace>, stage: &'static str, detail: impl FnOnce() -> String) {
    if let Some(t) = t {
        t.notes.borrow_mut().push(Note {
            stage,
            detail: detail(),
        });
    }
}

impl Ctx<'_> {
    /// Note what a stage looked up and decided, when a trace is running. // HOT PATH (a branch)
    #[inline]
    pub(crate) fn note(&self, stage: &'static str, detail: impl FnOnce() -> String) {
        note(self.trace, stage, detail);
    }

    /// Under a trace, encapsulation stops before the sockets: what would be sent is noted.
    /// True when a trace took the frame.
    #[cold]
    pub(super) fn traced_encap(&mut self, net: &NetRt, vteps: &[IpAddr], p: &wire::Parsed) -> bool {
        let Some(t) = self.trace else {
            return false;
        };
        let (Some(vni), Some(vtep)) = (net.vni, net.vtep.as_ref()) else {
            return true;
        };
        let (src, dport) = match &vtep.dev {
            crate::port::Device::Shadow(s) => s.vtep,
            _ => None,
        }
        .unwrap_or((
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            wire::vxlan::VXLAN_PORT,
        ));
        if self.buf.vnet.gso_type == 0
            && self.buf.len() > net.mtu as usize + wire::ethernet::EthFrame::HEADER_LEN
        {
            self.note("encap", || {
                format!(
                    "{} bytes do not fit the overlay MTU {}: dropped (never fragment the underlay)",
                    self.buf.len(),
                    net.mtu
                )
            });
            self.c.drop(crate::counters::Drop::Oversize);
            return true;
        }
        let sport = wire::vxlan::source_port(p);
        for dst in vteps {
            self.note("encap", || {
                format!("VXLAN VNI {vni}: outer {src}:{sport} -> {dst}:{dport} (UDP)")
            });
            t.vxlan.borrow_mut().push(VxlanOut {
                vni,
                src,
                dst: *dst,
                sport,
                dport,
                inner: self.buf.data().to_vec(),
            });
        }
        true
    }
}

/// The tracer's world: a shadow configuration and shared state, over copies of the live tables.
pub struct Shadow {
    /// The shadow configuration (its ports have no devices).
    pub cfg: Arc<Config>,
    /// Shared state over copies of conntrack and the rate limits, with an event bus nobody
    /// listens to.
    pub shared: Shared,
}

impl Shadow {
    /// Copy `live`'s configuration and tables.
    pub fn of(live: &Shared) -> Shadow {
        let cfg = live.config.load();
        let ports: FxHashMap<PortId, Arc<Port>> = cfg
            .ports
            .iter()
            .map(|(id, p)| (*id, Arc::new(p.shadow())))
            .collect();
        let port = |p: &Arc<Port>| {
            ports
                .get(&p.id)
                .cloned()
                .unwrap_or_else(|| Arc::new(p.shadow()))
        };
        let networks = cfg
            .networks
            .iter()
            .map(|(id, n)| (*id, Arc::new(shadow_net(n, &port))))
            .collect();
        let uplink = cfg.uplink.as_ref().map(|u| {
            Arc::new(UplinkRt {
                port: port(&u.port),
                ip: u.ip,
                subnet: u.subnet,
                gateway: u.gateway,
                mac: u.mac,
                neigh: Arc::new(u.neigh.duplicate()),
                extra_ips: u.extra_ips.clone(),
                resolver: u.resolver,
                v6: u.v6.as_ref().map(|v| UplinkRt6 {
                    ip: v.ip,
                    subnet: v.subnet,
                    gateway: v.gateway,
                    link_local: v.link_local,
                    neigh: Arc::new(v.neigh.duplicate()),
                    routed: v.routed,
                }),
            })
        });
        let shadow = Arc::new(Config {
            networks,
            uplink,
            published: cfg.published.clone(),
            vnis: cfg.vnis.clone(),
            own_addrs: cfg.own_addrs.clone(),
            own_addrs6: cfg.own_addrs6.clone(),
            ports,
        });
        let shared = Shared {
            config: ArcSwap::new(shadow.clone()),
            clock: live.clock,
            shutdown: std::sync::atomic::AtomicBool::new(false),
            ct: Arc::new(live.ct.duplicate()),
            ct6: Arc::new(live.ct6.duplicate()),
            icmp6_errors: live.icmp6_errors.duplicate(),
            bus: Arc::new(crate::events::Bus::default()),
            ct_full_note: FloodLimiter::new(1),
            packet_notes: FloodLimiter::new(super::NOTES_PER_S),
        };
        Shadow {
            cfg: shadow,
            shared,
        }
    }
}

/// A network's shadow: its ports (the VTEP's too) the shadow ports, its tables copies.
fn shadow_net(n: &NetRt, port: &impl Fn(&Arc<Port>) -> Arc<Port>) -> NetRt {
    NetRt {
        id: n.id,
        name: n.name.clone(),
        subnet: n.subnet,
        gateway_ip: n.gateway_ip,
        gateway_mac: n.gateway_mac,
        ports: n.ports.iter().map(port).collect(),
        fdb: Arc::new(n.fdb.duplicate()),
        neigh: Arc::new((*n.neigh).clone()),
        taps: Arc::default(),
        internal: n.internal,
        icc: n.icc,
        links: n.links.clone(),
        mtu: n.mtu,
        dns: n.dns.clone(),
        vni: n.vni,
        peers: n.peers.clone(),
        remote: n.remote.as_ref().map(|r| Arc::new(r.duplicate())),
        vtep: n.vtep.as_ref().map(port),
        probes: Arc::new(n.probes.duplicate()),
        v6: n.v6.as_ref().map(|v| NetRt6 {
            subnet: v.subnet,
            gateway: v.gateway,
            link_local: v.link_local,
            neigh: v.neigh.clone(),
            learned: Arc::new((*v.learned).clone()),
            probes: Arc::new(v.probes.duplicate()),
        }),
    }
}
