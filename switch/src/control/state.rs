//! The control plane's state model: networks, endpoints, the uplink and published ports as the
//! control lock guards them, what is persisted, the parsers of the API's specs, and the checks a
//! verb makes before it touches a device. No devices and no I/O here: everything in this module
//! is testable on its own (an endpoint's port may be a [`Device::Sink`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::journal::Record;
use super::{AfterUnlock, Options, Undo};
use crate::capture::Taps;
use crate::datapath::{NeighTable, NetRt};
use crate::error::{check_name, Error};
use crate::fdb::{Fdb, PortId};
use crate::ipam::{parse_ipv4, parse_ipv6, Ipv4Cidr, Ipv6Cidr, Pool, Pool6};
use crate::model::*;
use crate::neigh::NeighCache;
use crate::port::{NetId, Port};
use crate::wire::MacAddr;
use nat::Proto;
use overlay::RemoteFdb;

/// An attached endpoint: a namespace's interface on a network, and its port.
pub(super) struct Endpoint {
    pub(super) netns: String,
    pub(super) ifname: String,
    pub(super) aliases: Vec<String>,
    pub(super) port: Arc<Port>,
    /// Why the endpoint has no device yet (its namespace does not exist, or went away), or
    /// `None` when it is up. A pending endpoint keeps its address, MAC and published ports, is
    /// persisted, and is retried until it is up or detached; the datapath does not see it.
    pub(super) pending: Option<String>,
    /// The namespace the device was put in (device and inode of its `/run/netns` file), to
    /// notice that it was deleted, or replaced by another of the same name.
    pub(super) netns_id: Option<(u64, u64)>,
}

impl Endpoint {
    /// Up: it has a device the datapath serves.
    pub(super) fn is_up(&self) -> bool {
        self.pending.is_none()
    }
}

/// A network with its tables (shared with the datapath's snapshots) and endpoints.
pub(super) struct Net {
    pub(super) id: NetId,
    pub(super) name: String,
    pub(super) subnet: Ipv4Cidr,
    pub(super) gateway: Ipv4Addr,
    pub(super) gateway_mac: MacAddr,
    pub(super) mtu: u32,
    pub(super) pool: Pool,
    /// Dual stack: the IPv6 subnet, gateway and addresses in use.
    pub(super) v6: Option<Net6>,
    pub(super) fdb: Arc<Fdb>,
    pub(super) neigh: Arc<NeighTable>,
    pub(super) taps: Arc<Taps>,
    pub(super) endpoints: Vec<Endpoint>,
    pub(super) internal: bool,
    pub(super) icc: bool,
    pub(super) links: BTreeSet<String>,
    /// Overlay: VNI, peer VTEPs, VXLAN port, remote MACs.
    pub(super) vni: Option<u32>,
    pub(super) peers: BTreeSet<IpAddr>,
    pub(super) vxlan_port: u16,
    pub(super) remote: Arc<RemoteFdb>,
    pub(super) probes: Arc<NeighCache>,
    /// Dual stack: IPv6 neighbours learned from neighbour discovery, and the probe limit.
    pub(super) neigh6: Arc<crate::datapath::Neigh6Table>,
    pub(super) probes6: Arc<NeighCache<Ipv6Addr>>,
    /// The datapath's snapshot of this network as last built; `None` once it changed (see
    /// [`RtCache`]).
    pub(super) rt: Option<Arc<NetRt>>,
    /// Cluster mode: the other live nodes' VTEPs (peers besides the static `peers`; not saved).
    pub(super) member_peers: BTreeSet<IpAddr>,
    /// Cluster mode: endpoints on other live nodes, from the directory (not saved).
    pub(super) remote_eps: BTreeMap<crate::cluster::EndpointKey, RemoteEndpoint>,
    /// Cluster mode: the network is (or was) in the cluster (saved).
    pub(super) cluster: bool,
    /// Cluster mode: the etcd revision of this node's last change to this network or its
    /// links (0: none): a view older than that does not show the change yet (not saved).
    pub(super) cluster_rev: i64,
}

/// A dual-stack network's IPv6 side.
#[derive(Debug, Clone)]
pub(super) struct Net6 {
    pub(super) subnet: Ipv6Cidr,
    pub(super) gateway: Ipv6Addr,
    pub(super) pool: Pool6,
}

/// An endpoint of a cluster network on another node, as this node installs it: a static remote
/// MAC behind the node's VTEP, an ARP answer and DNS names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RemoteEndpoint {
    pub(super) ip: Ipv4Addr,
    pub(super) mac: MacAddr,
    pub(super) names: Vec<String>,
    pub(super) vtep: IpAddr,
}

/// A `network create` request, checked against the state: what the new network will be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NetworkPlan {
    pub(super) name: String,
    pub(super) subnet: Ipv4Cidr,
    pub(super) gateway: Ipv4Addr,
    /// Dual stack: the IPv6 subnet and gateway.
    pub(super) v6: Option<(Ipv6Cidr, Ipv6Addr)>,
    pub(super) mtu: u32,
    pub(super) internal: bool,
    pub(super) icc: bool,
    pub(super) vni: Option<u32>,
    pub(super) peers: BTreeSet<IpAddr>,
    pub(super) vxlan_port: u16,
    pub(super) cluster: bool,
}

impl Net {
    /// A new, empty network `id` as `plan` describes it, with tables sized by `opts`.
    pub(super) fn new(id: NetId, plan: NetworkPlan, opts: &Options) -> Net {
        let aging_ms = u64::try_from(opts.fdb_aging.as_millis()).unwrap_or(u64::MAX);
        Net {
            id,
            gateway_mac: MacAddr::gateway_for(&plan.name),
            pool: Pool::new(plan.subnet, plan.gateway),
            v6: plan.v6.map(|(subnet, gateway)| Net6 {
                subnet,
                gateway,
                pool: Pool6::new(subnet, gateway),
            }),
            fdb: Arc::new(Fdb::new(aging_ms, opts.fdb_limit)),
            neigh: Arc::new(NeighTable::default()),
            taps: Arc::new(Taps::default()),
            endpoints: Vec::new(),
            links: BTreeSet::new(),
            probes: Arc::new(NeighCache::new(0)),
            neigh6: Arc::default(),
            probes6: Arc::new(NeighCache::new(0)),
            rt: None,
            member_peers: BTreeSet::new(),
            remote_eps: BTreeMap::new(),
            cluster_rev: 0,
            remote: Arc::new(RemoteFdb::new(aging_ms, opts.fdb_limit)),
            name: plan.name,
            subnet: plan.subnet,
            gateway: plan.gateway,
            mtu: plan.mtu,
            internal: plan.internal,
            icc: plan.icc,
            cluster: plan.cluster,
            vni: plan.vni,
            peers: plan.peers,
            vxlan_port: plan.vxlan_port,
        }
    }

    pub(super) fn info(&self, published: &[PublishState]) -> NetworkInfo {
        NetworkInfo {
            name: self.name.clone(),
            subnet: self.subnet.to_string(),
            gateway: self.gateway,
            subnet6: self.v6.as_ref().map(|v| v.subnet.to_string()),
            gateway6: self.v6.as_ref().map(|v| v.gateway),
            gateway_mac: self.gateway_mac.to_string(),
            mtu: self.mtu,
            internal: self.internal,
            icc: self.icc,
            links: self.links.iter().cloned().collect(),
            vni: self.vni,
            peers: self.all_peers(),
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
            remote_endpoints: self
                .remote_eps
                .iter()
                .map(|(k, r)| RemoteEndpointInfo {
                    node: k.node.clone(),
                    netns: k.netns.clone(),
                    ip: r.ip,
                    mac: r.mac.to_string(),
                    names: r.names.clone(),
                    vtep: r.vtep,
                    ip6: self.derived6(r.ip),
                })
                .collect(),
        }
    }

    pub(super) fn endpoint_ip(&self, netns: &str) -> Option<Ipv4Addr> {
        self.endpoints
            .iter()
            .find(|e| e.netns == netns)
            .map(|e| e.port.ip)
    }

    /// The address of `netns`'s endpoint if it is up (what the datapath may send to).
    pub(super) fn live_endpoint_ip(&self, netns: &str) -> Option<Ipv4Addr> {
        self.endpoints
            .iter()
            .find(|e| e.netns == netns && e.is_up())
            .map(|e| e.port.ip)
    }

    /// The IPv6 address of `netns`'s endpoint, when it has one.
    pub(super) fn endpoint_ip6(&self, netns: &str) -> Option<Ipv6Addr> {
        self.endpoints
            .iter()
            .find(|e| e.netns == netns)
            .and_then(|e| e.port.ip6)
    }

    /// The request that recreates this network as it is (what is persisted).
    pub(super) fn spec(&self) -> NetworkCreate {
        NetworkCreate {
            name: self.name.clone(),
            subnet: self.subnet.to_string(),
            gateway: Some(self.gateway.to_string()),
            subnet6: self.v6.as_ref().map(|v| v.subnet.to_string()),
            gateway6: self.v6.as_ref().map(|v| v.gateway.to_string()),
            mtu: Some(self.mtu),
            internal: self.internal,
            icc: Some(self.icc),
            vni: self.vni,
            peers: self.peers.iter().map(|p| p.to_string()).collect(),
            vxlan_port: self.vni.map(|_| self.vxlan_port),
            overlay: false,
            cluster: self.cluster,
        }
    }

    /// The request that recreates endpoint `e` of this network as it is (what is persisted).
    pub(super) fn endpoint_spec(&self, e: &Endpoint) -> AttachRequest {
        AttachRequest {
            netns: e.netns.clone(),
            network: self.name.clone(),
            ip: Some(e.port.ip.to_string()),
            ip6: e.port.ip6.map(|i| i.to_string()),
            mac: Some(e.port.mac.to_string()),
            ifname: (!e.ifname.is_empty()).then(|| e.ifname.clone()),
            aliases: e.aliases.clone(),
            allow_spoof: !e.port.spoof_check,
            handoff: false,
        }
    }

    pub(super) fn endpoint_info(&self, e: &Endpoint) -> EndpointInfo {
        EndpointInfo {
            netns: e.netns.clone(),
            network: self.name.clone(),
            ifname: e.ifname.clone(),
            port: e.port.name.clone(),
            ip: e.port.ip,
            prefix_len: self.subnet.prefix_len(),
            ip6: e.port.ip6,
            mac: e.port.mac.to_string(),
            mtu: self.mtu,
            aliases: e.aliases.clone(),
            allow_spoof: !e.port.spoof_check,
            state: if e.is_up() { "up" } else { "pending" }.into(),
            reason: e.pending.clone(),
        }
    }

    /// DNS names of this network's endpoints (namespace names and aliases, lower case).
    pub(super) fn names(&self) -> impl Iterator<Item = (String, Ipv4Addr)> + '_ {
        // Endpoints on other nodes first: a name here wins over the same name elsewhere.
        let remote = self
            .remote_eps
            .values()
            .flat_map(|r| r.names.iter().map(|n| (n.to_ascii_lowercase(), r.ip)));
        remote.chain(self.endpoints.iter().filter(|e| e.is_up()).flat_map(|e| {
            std::iter::once(&e.netns)
                .chain(e.aliases.iter())
                .map(|n| (n.to_ascii_lowercase(), e.port.ip))
        }))
    }

    /// DNS names of this network's endpoints that have an IPv6 address (on a cluster network,
    /// those on other nodes too).
    pub(super) fn names6(&self) -> impl Iterator<Item = (String, Ipv6Addr)> + '_ {
        let remote = self.remote_eps.values().flat_map(|r| {
            let ip6 = self.derived6(r.ip);
            r.names
                .iter()
                .filter_map(move |n| Some((n.to_ascii_lowercase(), ip6?)))
        });
        remote.chain(self.endpoints.iter().filter(|e| e.is_up()).flat_map(|e| {
            let ip6 = e.port.ip6;
            std::iter::once(&e.netns)
                .chain(e.aliases.iter())
                .filter_map(move |n| Some((n.to_ascii_lowercase(), ip6?)))
        }))
    }

    /// Every peer VTEP: the static ones and, in cluster mode, the other live nodes'.
    pub(super) fn all_peers(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.peers.union(&self.member_peers).copied().collect();
        v.dedup();
        v
    }

    /// A cluster network's IPv6 address for the endpoint with IPv4 address `ip`: `ip` in the
    /// last 32 bits of the IPv6 prefix (a /96 or shorter), so that etcd's claims on IPv4
    /// addresses keep the IPv6 ones unique too. `None` off the cluster or without IPv6.
    pub(super) fn derived6(&self, ip: Ipv4Addr) -> Option<Ipv6Addr> {
        let v6 = self.v6.as_ref().filter(|_| self.cluster)?;
        (v6.subnet.prefix_len() <= 96)
            .then(|| Ipv6Addr::from(u128::from(v6.subnet.network()) | u128::from(u32::from(ip))))
    }

    /// Addresses a new endpoint could get here, in order: the subnet's hosts that are not the
    /// gateway and not taken on this host.
    pub(super) fn free_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let first = u32::from(self.subnet.network()) + 1;
        let last = u32::from(self.subnet.broadcast()).saturating_sub(1);
        (first..=last)
            .map(Ipv4Addr::from)
            .filter(move |ip| *ip != self.gateway && !self.pool.is_used(*ip))
    }

    /// Refuse address `ip` for a new endpoint of this network (outside the subnet, the
    /// gateway, taken here) with the error a local attach would give.
    pub(super) fn check_address(&self, ip: Ipv4Addr) -> Result<(), Error> {
        if !self.pool.clone().take(ip)? {
            return Err(Error::AddressInUse {
                ip,
                network: self.name.clone(),
            });
        }
        Ok(())
    }

    /// Take the endpoint's address (the one asked for, or the next free one) and settle its MAC
    /// (the one asked for, or one derived from the address), refusing one the network already
    /// has. On an error no address stays taken.
    pub(super) fn reserve(
        &mut self,
        want: &AttachWant,
        req: &AttachRequest,
    ) -> Result<(Ipv4Addr, Option<Ipv6Addr>, MacAddr), Error> {
        let ip = match want.ip {
            Some(ip) => {
                if !self.pool.take(ip)? {
                    return Err(Error::AddressInUse {
                        ip,
                        network: req.network.clone(),
                    });
                }
                ip
            }
            None => self.pool.next_free()?,
        };
        let ip6 = match self.reserve6(want, req) {
            Ok(ip6) => ip6,
            Err(e) => {
                self.pool.release(ip);
                return Err(e);
            }
        };
        let mac = want.mac.unwrap_or_else(|| MacAddr::from_ipv4(ip));
        if mac == self.gateway_mac || self.endpoints.iter().any(|e| e.port.mac == mac) {
            self.release(ip, ip6);
            return Err(Error::MacInUse {
                mac: mac.to_string(),
                network: req.network.clone(),
            });
        }
        Ok((ip, ip6, mac))
    }

    /// The IPv6 side of [`Net::reserve`]: the address asked for or the next free one on a
    /// dual-stack network; `--ip6` on a network without an IPv6 subnet is refused.
    fn reserve6(
        &mut self,
        want: &AttachWant,
        req: &AttachRequest,
    ) -> Result<Option<Ipv6Addr>, Error> {
        let Some(v6) = &mut self.v6 else {
            return match want.ip6 {
                Some(_) => Err(Error::NoIpv6(req.network.clone())),
                None => Ok(None),
            };
        };
        match want.ip6 {
            Some(ip) => {
                // Another endpoint's SLAAC address (on a /64) is taken too.
                let slaac = v6.subnet.prefix_len() == 64
                    && self
                        .endpoints
                        .iter()
                        .any(|e| wire::icmpv6::eui64_in(v6.subnet.network(), e.port.mac) == ip);
                if slaac || !v6.pool.take(ip)? {
                    return Err(Error::Address6InUse {
                        ip,
                        network: req.network.clone(),
                    });
                }
                Ok(Some(ip))
            }
            None => Ok(Some(v6.pool.next_free()?)),
        }
    }

    /// Give back an endpoint's addresses.
    pub(super) fn release(&mut self, ip: Ipv4Addr, ip6: Option<Ipv6Addr>) {
        self.pool.release(ip);
        if let (Some(v6), Some(ip6)) = (&mut self.v6, ip6) {
            v6.pool.release(ip6);
        }
    }
}

/// The uplink: a host interface taken as an AF_PACKET port.
pub(super) struct UplinkState {
    pub(super) req: UplinkSet,
    pub(super) ip: Ipv4Addr,
    pub(super) subnet: Ipv4Cidr,
    pub(super) gateway: Option<Ipv4Addr>,
    pub(super) port: Arc<Port>,
    pub(super) neigh: Arc<NeighCache>,
    /// Routed IPv6: the address, prefix and gateway, and the IPv6 neighbour cache.
    pub(super) v6: Option<Uplink6>,
    pub(super) neigh6: Arc<NeighCache<Ipv6Addr>>,
    pub(super) resolver: Option<Ipv4Addr>,
    /// Why the uplink is down (its interface is missing), or `None` when it is up. A down
    /// uplink is kept, saved and listed; `watch` brings it back when the interface returns.
    pub(super) down: Option<String>,
    /// The interface's index when it was opened (a packet socket is bound to it: an interface
    /// deleted and made again under the same name has another).
    pub(super) ifindex: Option<u32>,
}

/// An `uplink set` request, checked against the state: the address, its subnet, the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct UplinkPlan {
    pub(super) ip: Ipv4Addr,
    pub(super) subnet: Ipv4Cidr,
    pub(super) gateway: Option<Ipv4Addr>,
    pub(super) v6: Option<Uplink6>,
}

/// The uplink's IPv6 side: the switch's address, its prefix, the next hop, and whether the
/// networks' IPv6 is routed (`--ipv6-routed`) or masqueraded (NAT66).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Uplink6 {
    pub(super) ip: Ipv6Addr,
    pub(super) subnet: Ipv6Cidr,
    pub(super) gateway: Option<Ipv6Addr>,
    pub(super) routed: bool,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PublishState {
    pub(super) netns: String,
    pub(super) network: String,
    pub(super) proto: Proto,
    /// The uplink-side address as given: none for both families on the uplink's addresses,
    /// `0.0.0.0` for IPv4 only, `::` for IPv6 only, another IPv4 address for that one only.
    pub(super) ip: Option<IpAddr>,
    pub(super) host_port: u16,
    pub(super) ctr_port: u16,
}

impl PublishState {
    pub(super) fn info(&self, net: &Net) -> Option<PublishInfo> {
        Some(PublishInfo {
            netns: self.netns.clone(),
            network: self.network.clone(),
            proto: self.proto.name().to_string(),
            ip: self.ip,
            host_port: self.host_port,
            endpoint_ip: net.endpoint_ip(&self.netns)?,
            endpoint_ip6: self.v6().then(|| net.endpoint_ip6(&self.netns)).flatten(),
            endpoint_port: self.ctr_port,
        })
    }

    /// Published over IPv4 (no address given, or an IPv4 one).
    pub(super) fn v4(&self) -> bool {
        !matches!(self.ip, Some(IpAddr::V6(_)))
    }

    /// Published over IPv6, to the endpoint's IPv6 address (no address given, or `::`).
    pub(super) fn v6(&self) -> bool {
        !matches!(self.ip, Some(IpAddr::V4(_)))
    }

    /// The specific uplink-side IPv4 address it is published on, when not the uplink's own.
    pub(super) fn ip4(&self) -> Option<Ipv4Addr> {
        match self.ip {
            Some(IpAddr::V4(a)) if !a.is_unspecified() => Some(a),
            _ => None,
        }
    }

    /// The request that publishes this port again (the host port resolved), as persisted.
    pub(super) fn request(&self) -> PublishRequest {
        PublishRequest {
            netns: self.netns.clone(),
            spec: self.spec(),
            network: Some(self.network.clone()),
        }
    }

    /// The spec `publish` takes back (`[IP:]HOSTPORT:CTRPORT/PROTO`), as persisted.
    pub(super) fn spec(&self) -> String {
        self.joined(":")
    }

    /// As `ports` shows it: `[IP:]HOSTPORT->CTRPORT/PROTO`.
    pub(super) fn shown(&self) -> String {
        self.joined("->")
    }

    fn joined(&self, arrow: &str) -> String {
        let (h, c, p) = (self.host_port, self.ctr_port, self.proto.name());
        match self.ip {
            Some(IpAddr::V6(ip)) => format!("[{ip}]:{h}{arrow}{c}/{p}"),
            Some(ip) => format!("{ip}:{h}{arrow}{c}/{p}"),
            None => format!("{h}{arrow}{c}/{p}"),
        }
    }
}

/// Networks changed since the datapath's snapshots were last built. Each network keeps its
/// snapshot ([`Net::rt`]) from one change to the next, so that a change builds only the networks
/// it touched and the networks linked to them (whose DNS names and links include theirs): the
/// cost of a change does not grow with the number of networks. A change drops the changed
/// network's snapshot at once (so a removed port is not kept open by it); the linked networks'
/// snapshots, which hold no port of it, are dropped at the next build.
#[derive(Default)]
pub(super) struct RtCache {
    dirty: BTreeSet<String>,
}

/// What the control lock guards.
#[derive(Default)]
pub(super) struct State {
    /// Read with [`State::networks`]; changed only through [`State::net_mut`] and the methods
    /// here, which note the change for the next datapath snapshot (see [`RtCache`]).
    networks: BTreeMap<String, Net>,
    /// The datapath's per-network snapshots, kept between changes.
    pub(super) rt: RtCache,
    pub(super) next_net: NetId,
    pub(super) next_port: PortId,
    /// The underlay is IPv6 (`--underlay-ip` an IPv6 address): overlays leave 70 bytes, not 50.
    pub(super) underlay_v6: bool,
    pub(super) shutting_down: bool,
    pub(super) uplink: Option<UplinkState>,
    pub(super) published: Vec<PublishState>,
    /// VTEP ports by UDP port (one socket pair serves every VNI on that port).
    /// Read with [`State::vteps`]; changed with [`State::add_vtep`] and [`State::remove_vtep`],
    /// which drop every network's datapath snapshot.
    vteps: BTreeMap<u16, Arc<Port>>,
    /// What the verb holding the lock leaves for after it is released.
    pub(super) after_unlock: Vec<AfterUnlock>,
    /// The change the verb holding the lock made, to be saved before it is answered.
    pub(super) journal: Vec<Record>,
    /// How to take that change back if it cannot be saved (last first).
    pub(super) undo: Vec<Undo>,
    /// What the state file holds that could not be restored and is not an endpoint or the
    /// uplink (those wait as pending): kept, and saved with the rest, never dropped.
    pub(super) unrestored: Persisted,
}

/// An `attach` request's own fields, checked: the MAC and address asked for, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AttachWant {
    pub(super) mac: Option<MacAddr>,
    pub(super) ip: Option<Ipv4Addr>,
    pub(super) ip6: Option<Ipv6Addr>,
}

impl AttachWant {
    /// Check the names (namespace, aliases, interface) and parse the MAC and address.
    pub(super) fn parse(req: &AttachRequest) -> Result<AttachWant, Error> {
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
        let ip6 = req.ip6.as_deref().map(parse_ipv6).transpose()?;
        Ok(AttachWant { mac, ip, ip6 })
    }
}

impl State {
    /// An empty state; ids start at 1.
    pub(super) fn new() -> State {
        State {
            next_net: 1,
            next_port: 1,
            ..Default::default()
        }
    }

    pub(super) fn net(&self, name: &str) -> Result<&Net, Error> {
        self.networks
            .get(name)
            .ok_or_else(|| Error::NetworkNotFound(name.to_string()))
    }

    /// Every network by name.
    pub(super) fn networks(&self) -> &BTreeMap<String, Net> {
        &self.networks
    }

    /// Give every network whose snapshot is stale (changed, or linked to one that changed since
    /// the last call) a new one made by `build`.
    pub(super) fn refresh_snapshots(&mut self, build: impl Fn(&State, &Net) -> NetRt) {
        let RtCache { dirty } = std::mem::take(&mut self.rt);
        for name in &dirty {
            let links = match self.networks.get(name) {
                Some(n) => n.links.iter().cloned().collect(),
                None => Vec::new(),
            };
            for l in links {
                if let Some(n) = self.networks.get_mut(&l) {
                    n.rt = None;
                }
            }
        }
        let fresh: Vec<(String, NetRt)> = self
            .networks
            .values()
            .filter(|n| n.rt.is_none())
            .map(|n| (n.name.clone(), build(self, n)))
            .collect();
        for (name, rt) in fresh {
            if let Some(n) = self.networks.get_mut(&name) {
                n.rt = Some(Arc::new(rt));
            }
        }
    }

    /// Drop every network's snapshot (they hold the ports and VTEPs a change may release).
    fn drop_snapshots(&mut self) {
        self.networks.values_mut().for_each(|n| n.rt = None);
    }

    /// Take every endpoint off its network (the daemon is stopping).
    pub(super) fn take_all_endpoints(&mut self) -> Vec<Endpoint> {
        self.drop_snapshots();
        self.networks
            .values_mut()
            .flat_map(|net| net.endpoints.drain(..))
            .collect()
    }

    /// The VTEP ports by UDP port.
    pub(super) fn vteps(&self) -> &BTreeMap<u16, Arc<Port>> {
        &self.vteps
    }

    /// Open VTEP `p` on UDP port `port` (the overlay networks on that port send through it).
    pub(super) fn add_vtep(&mut self, port: u16, p: Arc<Port>) {
        self.vteps.insert(port, p);
        self.drop_snapshots();
    }

    /// Close the VTEP on UDP port `port`.
    pub(super) fn remove_vtep(&mut self, port: u16) -> Option<Arc<Port>> {
        self.drop_snapshots();
        self.vteps.remove(&port)
    }

    /// The network named `name`, to change: marked changed for the next datapath snapshot.
    pub(super) fn net_mut(&mut self, name: &str) -> Result<&mut Net, Error> {
        let net = self
            .networks
            .get_mut(name)
            .ok_or_else(|| Error::NetworkNotFound(name.to_string()))?;
        net.rt = None;
        self.rt.dirty.insert(name.to_string());
        Ok(net)
    }

    /// Network names by id (for tables that hold ids).
    pub(super) fn net_names(&self) -> BTreeMap<NetId, &str> {
        self.networks
            .values()
            .map(|n| (n.id, n.name.as_str()))
            .collect()
    }

    /// Check a `network create` request against the state. `underlay_mtu` is the MTU of the
    /// route to the first peer (probed by the caller, without the lock), if known.
    pub(super) fn plan_network(
        &self,
        req: &NetworkCreate,
        underlay_mtu: Option<u32>,
    ) -> Result<NetworkPlan, Error> {
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
        let vxlan_port = req.vxlan_port.unwrap_or(wire::vxlan::VXLAN_PORT);
        let peers = parse_peers(req)?;
        if let Some(vni) = req.vni {
            if vni == 0 || vni > wire::vxlan::VNI_MAX {
                return Err(Error::BadVni(vni));
            }
            if let Some(o) = self
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
        // Overlay endpoints get the underlay MTU minus VXLAN's 50 bytes (70 over IPv6), so
        // nothing fragments.
        let overhead = if self.underlay_v6 {
            wire::vxlan::VXLAN_OVERHEAD_V6
        } else {
            wire::vxlan::VXLAN_OVERHEAD_V4
        };
        let mtu = req.mtu.unwrap_or(if req.vni.is_some() {
            underlay_mtu.unwrap_or(1500).saturating_sub(overhead)
        } else {
            1500
        });
        if !(68..=65_535).contains(&mtu) {
            return Err(Error::Mtu(mtu));
        }
        if self.networks.contains_key(&req.name) {
            return Err(Error::NetworkExists(req.name.clone()));
        }
        // Overlay networks (distinct VNIs) may share a subnet: they are separate segments.
        if let Some(o) = self
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
        let v6 = self.plan_v6(req)?;
        if v6.is_some() && mtu < 1280 {
            return Err(Error::Mtu6(mtu));
        }
        Ok(NetworkPlan {
            name: req.name.clone(),
            subnet,
            gateway,
            v6,
            mtu,
            internal: req.internal,
            icc: req.icc.unwrap_or(true),
            vni: req.vni,
            peers,
            vxlan_port,
            cluster: req.cluster,
        })
    }

    /// The IPv6 side of a `network create`: subnet and gateway, checked like the IPv4 ones.
    fn plan_v6(&self, req: &NetworkCreate) -> Result<Option<(Ipv6Cidr, Ipv6Addr)>, Error> {
        let Some(s) = &req.subnet6 else {
            return match req.gateway6 {
                Some(_) => Err(Error::NoIpv6(req.name.clone())),
                None => Ok(None),
            };
        };
        let subnet: Ipv6Cidr = s.trim().parse()?;
        let gateway = match &req.gateway6 {
            Some(g) => parse_ipv6(g)?,
            None => subnet.first_host(),
        };
        if !subnet.is_host(gateway) {
            return Err(Error::Gateway6Outside {
                gateway,
                subnet: subnet.to_string(),
            });
        }
        // Unlike IPv4 subnets, IPv6 prefixes never overlap, overlays included: routed IPv6 comes
        // back in from the uplink by prefix alone.
        if let Some((o, os)) = self.networks.values().find_map(|n| {
            let v = n.v6.as_ref()?;
            v.subnet
                .overlaps(&subnet)
                .then(|| (n.name.clone(), v.subnet))
        }) {
            return Err(Error::SubnetOverlap {
                subnet: subnet.to_string(),
                other: o,
                other_subnet: os.to_string(),
            });
        }
        Ok(Some((subnet, gateway)))
    }

    /// Add the network `plan` describes (checked by [`State::plan_network`]); its info.
    pub(super) fn add_network(&mut self, plan: NetworkPlan, opts: &Options) -> NetworkInfo {
        let id = self.next_net;
        self.next_net += 1;
        let net = Net::new(id, plan, opts);
        let info = net.info(&self.published);
        self.rt.dirty.insert(net.name.clone());
        self.networks.insert(net.name.clone(), net);
        info
    }

    /// `network rm`: refused while endpoints are attached; links to it go with it.
    pub(super) fn remove_network(&mut self, name: &str) -> Result<(), Error> {
        self.check_removable(name)?;
        self.networks.remove(name);
        self.rt.dirty.insert(name.to_string());
        for n in self.networks.values_mut() {
            if n.links.remove(name) {
                n.rt = None;
            }
        }
        Ok(())
    }

    /// `network link A B` (`link == false`: unlink).
    pub(super) fn link(&mut self, a: &str, b: &str, link: bool) -> Result<(), Error> {
        self.check_link(a, b, link)?;
        for (x, y) in [(a, b), (b, a)] {
            let links = &mut self.net_mut(x)?.links;
            if link {
                links.insert(y.to_string());
            } else {
                links.remove(y);
            }
        }
        Ok(())
    }

    /// Refuse a `network link A B` (or unlink) that [`State::link`] would refuse.
    pub(super) fn check_link(&self, a: &str, b: &str, link: bool) -> Result<(), Error> {
        let (x, y) = (self.net(a)?, self.net(b)?);
        if a == b {
            return Err(Error::SelfLink(a.to_string()));
        }
        if link && x.subnet.overlaps(&y.subnet) {
            return Err(Error::SubnetOverlap {
                subnet: x.subnet.to_string(),
                other: b.to_string(),
                other_subnet: y.subnet.to_string(),
            });
        }
        if let (true, Some(v), Some(w)) = (link, &x.v6, &y.v6) {
            if v.subnet.overlaps(&w.subnet) {
                return Err(Error::SubnetOverlap {
                    subnet: v.subnet.to_string(),
                    other: b.to_string(),
                    other_subnet: w.subnet.to_string(),
                });
            }
        }
        if !link && !x.links.contains(b) {
            return Err(Error::NotLinked(a.to_string(), b.to_string()));
        }
        Ok(())
    }

    /// `peer add` (`add == true`) and `peer rm` on overlay network `network`.
    pub(super) fn peer(
        &mut self,
        network: &str,
        ip: IpAddr,
        add: bool,
    ) -> Result<NetworkInfo, Error> {
        let net = self
            .networks
            .get_mut(network)
            .ok_or_else(|| Error::NetworkNotFound(network.to_string()))?;
        net.rt = None;
        self.rt.dirty.insert(network.to_string());
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
        Ok(net.info(&self.published))
    }

    /// Refuse an attach to a network that does not exist or that `req.netns` is already on.
    pub(super) fn check_attachable(&self, req: &AttachRequest) -> Result<(), Error> {
        let net = self.net(&req.network)?;
        if net.endpoints.iter().any(|e| e.netns == req.netns) {
            return Err(Error::AlreadyAttached {
                netns: req.netns.clone(),
                network: req.network.clone(),
            });
        }
        Ok(())
    }

    /// The worker serving the fewest endpoints.
    pub(super) fn least_loaded_for_endpoint(&self, workers: usize) -> usize {
        least_loaded(workers, self.endpoint_ports())
    }

    /// The worker serving the fewest endpoints and uplinks (for a port that is not an
    /// endpoint).
    pub(super) fn least_loaded_for_infra(&self, workers: usize) -> usize {
        let uplink = self.uplink.iter().map(|u| &u.port);
        least_loaded(workers, self.endpoint_ports().chain(uplink))
    }

    fn endpoint_ports(&self) -> impl Iterator<Item = &Arc<Port>> {
        self.networks
            .values()
            .flat_map(|n| n.endpoints.iter().map(|e| &e.port))
    }

    /// `netns`'s endpoint on `network`.
    pub(super) fn endpoint(&self, netns: &str, network: &str) -> Result<&Endpoint, Error> {
        check_name("namespace", netns, 255)?;
        self.net(network)?
            .endpoints
            .iter()
            .find(|e| e.netns == netns)
            .ok_or_else(|| Error::NotAttached {
                netns: netns.to_string(),
                network: network.to_string(),
            })
    }

    /// Refuse `network rm` while endpoints (up or pending) are attached.
    pub(super) fn check_removable(&self, name: &str) -> Result<(), Error> {
        let net = self.net(name)?;
        if net.endpoints.is_empty() {
            return Ok(());
        }
        let endpoints = net
            .endpoints
            .iter()
            .map(|e| format!("{}/{}", e.netns, e.ifname))
            .collect::<Vec<_>>()
            .join(", ");
        Err(Error::NetworkInUse {
            network: name.to_string(),
            endpoints,
        })
    }

    /// Take `netns`'s endpoint off `network`'s list (the caller stops its queues next, then
    /// calls [`State::forget_endpoint`]); with the network's id and gateway.
    pub(super) fn take_endpoint(
        &mut self,
        netns: &str,
        network: &str,
    ) -> Result<(Endpoint, NetId, Ipv4Addr), Error> {
        check_name("namespace", netns, 255)?;
        let net = self.net_mut(network)?;
        let i = net
            .endpoints
            .iter()
            .position(|e| e.netns == netns)
            .ok_or_else(|| Error::NotAttached {
                netns: netns.to_string(),
                network: network.to_string(),
            })?;
        Ok((net.endpoints.remove(i), net.id, net.gateway))
    }

    /// Forget what the network knew of a removed endpoint: its FDB entries, its ARP entry, its
    /// address and its published ports.
    pub(super) fn forget_endpoint(&mut self, network: &str, ep: &Endpoint) {
        if let Ok(net) = self.net_mut(network) {
            net.fdb.flush_port(ep.port.id);
            net.neigh.remove_if(&ep.port.ip, |_, m| *m == ep.port.mac);
            net.release(ep.port.ip, ep.port.ip6);
        }
        self.published
            .retain(|p| !(p.netns == ep.netns && p.network == network));
    }

    /// Check an `uplink set` request against the state.
    pub(super) fn plan_uplink(&self, req: &UplinkSet) -> Result<UplinkPlan, Error> {
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
        if let Some(n) = self.networks.values().find(|n| n.subnet.overlaps(&subnet)) {
            return Err(Error::UplinkOverlap {
                uplink: subnet.to_string(),
                network: n.name.clone(),
                subnet: n.subnet.to_string(),
            });
        }
        Ok(UplinkPlan {
            ip,
            subnet,
            gateway,
            v6: self.plan_uplink6(req)?,
        })
    }

    /// The IPv6 side of an `uplink set`: an address and prefix that overlap no network's, a
    /// gateway in the prefix or link-local.
    fn plan_uplink6(&self, req: &UplinkSet) -> Result<Option<Uplink6>, Error> {
        let Some(a) = &req.ip6 else {
            return match req.gateway6 {
                Some(_) => Err(Error::Gateway6WithoutIp),
                None => Ok(None),
            };
        };
        let bad = || Error::BadUplinkAddr6(crate::error::shown(a));
        let (addr, p) = a.trim().split_once('/').ok_or_else(bad)?;
        let ip: Ipv6Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if !(16..=120).contains(&prefix) {
            return Err(bad());
        }
        let mask = u128::MAX << (128 - u32::from(prefix));
        let subnet =
            Ipv6Cidr::new(Ipv6Addr::from(u128::from(ip) & mask), prefix).map_err(|_| bad())?;
        if !subnet.is_host(ip) {
            return Err(bad());
        }
        let gateway = req.gateway6.as_deref().map(parse_ipv6).transpose()?;
        if let Some(g) = gateway {
            let link_local = g.segments()[0] & 0xffc0 == 0xfe80;
            if g == ip || !(subnet.is_host(g) || link_local) {
                return Err(Error::Gateway6OffLink {
                    gateway: g,
                    prefix: subnet.to_string(),
                });
            }
        }
        if let Some((n, s)) = self.networks.values().find_map(|n| {
            let v = n.v6.as_ref()?;
            v.subnet
                .overlaps(&subnet)
                .then(|| (n.name.clone(), v.subnet))
        }) {
            return Err(Error::UplinkOverlap {
                uplink: subnet.to_string(),
                network: n,
                subnet: s.to_string(),
            });
        }
        Ok(Some(Uplink6 {
            ip,
            subnet,
            gateway,
            routed: req.ipv6_routed,
        }))
    }

    /// `publish`: a port of `req.netns`'s endpoint (on `req.network`, or on its first network)
    /// on a free host port (the one asked for, or the first free one of NAT's range).
    pub(super) fn publish(&mut self, req: &PublishRequest) -> Result<PublishInfo, Error> {
        check_name("namespace", &req.netns, 255)?;
        let (ip, host, ctr, proto) = parse_publish_spec(req.spec.trim())?;
        let net = match &req.network {
            Some(n) => self.net(n)?,
            None => self
                .networks
                .values()
                .filter(|n| n.endpoint_ip(&req.netns).is_some())
                .min_by_key(|n| n.id)
                .ok_or_else(|| Error::NoEndpoint(req.netns.clone()))?,
        };
        if net.endpoint_ip(&req.netns).is_none() {
            return Err(Error::NotAttached {
                netns: req.netns.clone(),
                network: net.name.clone(),
            });
        }
        if let Some(IpAddr::V6(a)) = ip {
            if !a.is_unspecified() {
                return Err(Error::Publish6Addr(a.to_string()));
            }
            if net.v6.is_none() {
                return Err(Error::NoIpv6(net.name.clone()));
            }
        }
        let taken = |port: u16| {
            self.published
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
        self.published.push(ps);
        Ok(info)
    }

    /// `unpublish`: the removed entry.
    #[cfg(test)]
    pub(super) fn unpublish(&mut self, req: &UnpublishRequest) -> Result<PublishState, Error> {
        let i = self.find_published(req)?;
        Ok(self.published.remove(i))
    }

    /// The index of the published port `unpublish` `req` would remove.
    pub(super) fn find_published(&self, req: &UnpublishRequest) -> Result<usize, Error> {
        let (ip, host_port, proto) = parse_unpublish_spec(req.spec.trim())?;
        self.published
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
            })
    }

    /// What the state file keeps: enough to recreate everything on the next start (and what
    /// could not be restored, kept as it was).
    pub(super) fn persisted(&self) -> Persisted {
        let mut nets: Vec<&Net> = self.networks.values().collect();
        nets.sort_by_key(|n| n.id);
        let kept = &self.unrestored;
        Persisted {
            networks: nets
                .iter()
                .map(|n| n.spec())
                .chain(kept.networks.iter().cloned())
                .collect(),
            links: nets
                .iter()
                .flat_map(|n| {
                    n.links
                        .iter()
                        .filter(|l| **l > n.name)
                        .map(|l| (n.name.clone(), l.clone()))
                })
                .chain(kept.links.iter().cloned())
                .collect(),
            uplink: self
                .uplink
                .as_ref()
                .map(|u| u.req.clone())
                .or_else(|| kept.uplink.clone()),
            published: self
                .published
                .iter()
                .map(|p| p.request())
                .chain(kept.published.iter().cloned())
                .collect(),
            endpoints: nets
                .iter()
                .flat_map(|n| n.endpoints.iter().map(|e| n.endpoint_spec(e)))
                .chain(kept.endpoints.iter().cloned())
                .collect(),
            journal: 0,
        }
    }
}

/// The worker with the fewest of `ports`, of `workers`.
fn least_loaded<'a>(workers: usize, ports: impl Iterator<Item = &'a Arc<Port>>) -> usize {
    let mut load = vec![0usize; workers];
    for p in ports {
        load[p.worker] += 1;
    }
    (0..load.len()).min_by_key(|&w| load[w]).unwrap_or(0)
}

/// A `network create` request's peers.
pub(super) fn parse_peers(req: &NetworkCreate) -> Result<BTreeSet<IpAddr>, Error> {
    let peers: Result<_, _> = req.peers.iter().map(|p| crate::ipam::parse_ip(p)).collect();
    Ok(peers?)
}

/// What is persisted across restarts.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Persisted {
    /// Networks, in creation order.
    pub(super) networks: Vec<NetworkCreate>,
    /// Endpoints with their resolved address, MAC and interface name.
    pub(super) endpoints: Vec<AttachRequest>,
    /// Linked network pairs.
    #[serde(default)]
    pub(super) links: Vec<(String, String)>,
    /// The uplink.
    #[serde(default)]
    pub(super) uplink: Option<UplinkSet>,
    /// Published ports with their resolved host port.
    #[serde(default)]
    pub(super) published: Vec<PublishRequest>,
    /// The journal that continues this snapshot (`journal.N`, see `journal.rs`).
    #[serde(default)]
    pub(super) journal: u64,
}

/// One tracked connection as saved on a graceful stop (`conntrack.json`, and
/// `conntrack6.json` for IPv6), so established NAT flows survive a restart.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SavedConn<A: nat::Addr = Ipv4Addr> {
    network: String,
    kind: String,
    proto: String,
    /// The first packet's `[src, sport, dst, dport]`.
    orig: (A, u16, A, u16),
    /// The answer's `[src, sport, dst, dport]`.
    reply: (A, u16, A, u16),
    state: u8,
    replied: bool,
}

impl<A: nat::Addr> SavedConn<A> {
    /// A flow of the network `network` as saved.
    pub(super) fn from_flow(f: &nat::SavedFlow<A>, network: &str) -> SavedConn<A> {
        let t = |t: nat::FiveTuple<A>| (t.src, t.sport, t.dst, t.dport);
        SavedConn {
            network: network.to_string(),
            kind: f.kind.name().into(),
            proto: f.orig.proto.name().into(),
            orig: t(f.orig),
            reply: t(f.reply),
            state: f.state,
            replied: f.replied,
        }
    }

    /// The network the connection belongs to.
    pub(super) fn network(&self) -> &str {
        &self.network
    }

    fn tuple(proto: Proto, t: (A, u16, A, u16)) -> nat::FiveTuple<A> {
        nat::FiveTuple {
            proto,
            src: t.0,
            sport: t.1,
            dst: t.2,
            dport: t.3,
        }
    }

    /// The flow to import into zone `zone`; `None` when a name in the file is unknown.
    pub(super) fn to_flow(&self, zone: NetId) -> Option<nat::SavedFlow<A>> {
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

/// Split a port spec's `/tcp` or `/udp` suffix off (default tcp).
pub(super) fn split_proto(spec: &str) -> Result<(&str, Proto), Error> {
    match spec.rsplit_once('/') {
        Some((b, "tcp")) => Ok((b, Proto::Tcp)),
        Some((b, "udp")) => Ok((b, Proto::Udp)),
        Some(_) => Err(Error::BadPortSpec(crate::error::shown(spec))),
        None => Ok((spec, Proto::Tcp)),
    }
}

/// The id of network `name`, when a name is given.
pub(super) fn zone_of(st: &State, name: Option<&str>) -> Result<Option<NetId>, Error> {
    name.map(|n| st.net(n).map(|n| n.id)).transpose()
}

/// Split a leading `IP:` off a port spec: an IPv6 address in brackets (`[::]:8080:80`), or an
/// IPv4 address when the spec has `ports` colons after it. `bad` is the spec's error.
fn split_spec_ip(
    body: &str,
    ports: usize,
    bad: impl Fn() -> Error,
) -> Result<(Option<IpAddr>, &str), Error> {
    if let Some(r) = body.strip_prefix('[') {
        let (a, rest) = r.split_once(']').ok_or_else(&bad)?;
        let rest = rest.strip_prefix(':').ok_or_else(&bad)?;
        let ip: Ipv6Addr = a.parse().map_err(|_| bad())?;
        return Ok((Some(IpAddr::V6(ip)), rest));
    }
    if body.matches(':').count() == ports {
        let (ip, rest) = body.split_once(':').ok_or_else(&bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        return Ok((Some(IpAddr::V4(ip)), rest));
    }
    Ok((None, body))
}

/// Parse `[IP:][HOSTPORT:]CTRPORT[/tcp|/udp]` into (IP, host port, container port, protocol).
/// An empty or missing host port means "pick a free one". IP is IPv4 or, in brackets, IPv6
/// (`[::]:8080:80`).
pub fn parse_publish_spec(spec: &str) -> Result<(Option<IpAddr>, Option<u16>, u16, Proto), Error> {
    let bad = || Error::BadPortSpec(crate::error::shown(spec));
    let (body, proto) = split_proto(spec)?;
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
    let (ip, body) = split_spec_ip(body, 2, bad)?;
    let opt_port = |p: &str| {
        if p.is_empty() {
            Ok(None)
        } else {
            port(p).map(Some)
        }
    };
    match body.split(':').collect::<Vec<_>>().as_slice() {
        [c] if ip.is_none() => Ok((None, None, port(c)?, proto)),
        [h, c] => Ok((ip, opt_port(h)?, port(c)?, proto)),
        _ => Err(bad()),
    }
}

/// Parse `[IP:]HOSTPORT[/tcp|/udp]` (what `unpublish` takes; IPv6 in brackets).
pub fn parse_unpublish_spec(spec: &str) -> Result<(Option<IpAddr>, u16, Proto), Error> {
    let bad = || Error::BadPortSpec(crate::error::shown(spec));
    let (body, proto) = split_proto(spec)?;
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
    let (ip, body) = split_spec_ip(body, 1, bad)?;
    Ok((ip, port(body)?, proto))
}

/// Parse an uplink address `ADDR/PREFIX` (host bits set, unlike a network's subnet).
pub(super) fn parse_uplink_addr(s: &str) -> Result<(Ipv4Addr, Ipv4Cidr), Error> {
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

/// Building states without devices, for this module's tests and the snapshot's.
#[cfg(test)]
pub(super) mod testing {
    use super::*;
    use crate::port::{Device, FloodLimiter, PortStats};
    use crate::wire::VirtioNetHdr;

    /// Add network `name` on `subnet` (flat, or overlay with `vni`), panicking on a refusal.
    pub(crate) fn network(st: &mut State, name: &str, subnet: &str, vni: Option<u32>) {
        let req = NetworkCreate {
            vni,
            ..NetworkCreate::flat(name, subnet)
        };
        let plan = st.plan_network(&req, None).expect("network plan");
        st.add_network(plan, &Options::default());
    }

    /// Attach `netns` to `network` with a device-less port, as `attach_sink` does.
    pub(crate) fn endpoint(st: &mut State, netns: &str, network: &str) -> Arc<Port> {
        let req = AttachRequest::new(netns, network);
        let want = AttachWant::parse(&req).expect("attach request");
        st.check_attachable(&req).expect("attachable");
        let id = st.next_port;
        st.next_port += 1;
        let net = st.net_mut(network).expect("network");
        let (ip, ip6, mac) = net.reserve(&want, &req).expect("address");
        let port = Arc::new(Port {
            id,
            name: format!("p{id}"),
            network: net.id,
            dev: Device::Sink(VirtioNetHdr::LEN),
            mac,
            ip,
            ip6,
            worker: 0,
            stats: PortStats::default(),
            taps: Arc::new(Taps::default()),
            flood: FloodLimiter::new(1000),
            spoof_check: true,
        });
        net.endpoints.push(Endpoint {
            netns: netns.to_string(),
            ifname: "sink0".into(),
            aliases: Vec::new(),
            port: port.clone(),
            pending: None,
            netns_id: None,
        });
        port
    }
}

#[cfg(test)]
mod test {
    use super::testing::{endpoint, network};
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
            (Some([10, 0, 0, 1].into()), Some(8080), 80, Proto::Tcp)
        );
        assert_eq!(
            parse_publish_spec("10.0.0.1::80").unwrap(),
            (Some([10, 0, 0, 1].into()), None, 80, Proto::Tcp)
        );
        assert_eq!(
            parse_publish_spec("[::]:8080:80/udp").unwrap(),
            (
                Some(Ipv6Addr::UNSPECIFIED.into()),
                Some(8080),
                80,
                Proto::Udp
            )
        );
        assert_eq!(
            parse_publish_spec("[2001:db8::1]::80").unwrap(),
            (Some("2001:db8::1".parse().unwrap()), None, 80, Proto::Tcp)
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
            "[::]:80",
            "[::]8080:80",
            "[::1:8080:80",
            "[10.0.0.1]:8080:80",
            "::1:8080:80",
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
            (Some([10, 0, 0, 1].into()), 53, Proto::Udp)
        );
        assert_eq!(
            parse_unpublish_spec("[::]:8080").unwrap(),
            (Some(Ipv6Addr::UNSPECIFIED.into()), 8080, Proto::Tcp)
        );
        assert!(parse_unpublish_spec("x/udp").is_err());
        assert!(parse_unpublish_spec("[::]8080").is_err());
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

    fn plan(st: &State, req: &NetworkCreate) -> Result<NetworkPlan, Error> {
        st.plan_network(req, None)
    }

    #[test]
    fn network_requests_are_checked_against_the_state() {
        let mut st = State::new();
        network(&mut st, "front", "10.1.0.0/24", None);
        network(&mut st, "ov", "10.9.0.0/24", Some(42));
        let flat = NetworkCreate::flat;
        let p = plan(&st, &flat("back", "10.2.0.0/24")).unwrap();
        assert_eq!(
            (p.gateway, p.mtu, p.icc, p.vni),
            (Ipv4Addr::new(10, 2, 0, 1), 1500, true, None)
        );
        assert!(matches!(
            plan(&st, &flat("front", "10.3.0.0/24")),
            Err(Error::NetworkExists(_))
        ));
        assert!(matches!(
            plan(&st, &flat("back", "10.1.0.128/25")),
            Err(Error::SubnetOverlap { other, .. }) if other == "front"
        ));
        let outside = NetworkCreate {
            gateway: Some("10.3.1.1".into()),
            ..flat("back", "10.3.0.0/24")
        };
        assert!(matches!(
            plan(&st, &outside),
            Err(Error::GatewayOutside { .. })
        ));
        for mtu in [67, 65_536] {
            let req = NetworkCreate {
                mtu: Some(mtu),
                ..flat("back", "10.3.0.0/24")
            };
            assert!(matches!(plan(&st, &req), Err(Error::Mtu(m)) if m == mtu));
        }
        // Peers and a VXLAN port only on an overlay network.
        let peers = NetworkCreate {
            peers: vec!["192.0.2.1".into()],
            ..flat("back", "10.3.0.0/24")
        };
        assert!(matches!(plan(&st, &peers), Err(Error::NotOverlay(_))));
        // VNIs: in range, once per VXLAN port; overlay networks may share a subnet.
        let ov = |vni, port| NetworkCreate {
            vni: Some(vni),
            vxlan_port: port,
            ..flat("ov2", "10.9.0.0/24")
        };
        for vni in [0, wire::vxlan::VNI_MAX + 1] {
            assert!(matches!(plan(&st, &ov(vni, None)), Err(Error::BadVni(_))));
        }
        assert!(matches!(
            plan(&st, &ov(42, None)),
            Err(Error::VniInUse { network, .. }) if network == "ov"
        ));
        let p = plan(&st, &ov(42, Some(4790))).unwrap();
        assert_eq!(p.mtu, 1500 - wire::vxlan::VXLAN_OVERHEAD_V4);
        let p = st.plan_network(&ov(43, None), Some(9000)).unwrap();
        assert_eq!(
            p.mtu,
            9000 - wire::vxlan::VXLAN_OVERHEAD_V4,
            "the probed MTU"
        );
    }

    #[test]
    fn links_and_removal() {
        let mut st = State::new();
        network(&mut st, "a", "10.1.0.0/24", None);
        network(&mut st, "b", "10.2.0.0/24", None);
        // Overlay networks may share a subnet, but not be linked.
        network(&mut st, "ov", "10.9.0.0/24", Some(7));
        network(&mut st, "ov2", "10.9.0.0/24", Some(8));
        assert!(matches!(st.link("a", "a", true), Err(Error::SelfLink(_))));
        assert!(matches!(
            st.link("a", "x", true),
            Err(Error::NetworkNotFound(_))
        ));
        assert!(matches!(
            st.link("ov", "ov2", true),
            Err(Error::SubnetOverlap { .. })
        ));
        assert!(matches!(
            st.link("a", "b", false),
            Err(Error::NotLinked(..))
        ));
        st.link("a", "b", true).unwrap();
        assert!(st.net("b").unwrap().links.contains("a"));
        endpoint(&mut st, "ns1", "b");
        assert!(matches!(
            st.remove_network("b"),
            Err(Error::NetworkInUse { endpoints, .. }) if endpoints == "ns1/sink0"
        ));
        st.remove_network("a").unwrap();
        assert!(st.net("b").unwrap().links.is_empty(), "the link went too");
    }

    #[test]
    fn attach_requests_and_addresses() {
        let mut st = State::new();
        network(&mut st, "a", "10.1.0.0/29", None);
        let req = |mac: Option<&str>, ip: Option<&str>| AttachRequest {
            mac: mac.map(Into::into),
            ip: ip.map(Into::into),
            ..AttachRequest::new("ns", "a")
        };
        assert!(matches!(
            AttachWant::parse(&req(Some("01:00:00:00:00:01"), None)),
            Err(Error::MacNotUnicast(_))
        ));
        assert!(AttachWant::parse(&req(Some("nonsense"), None)).is_err());
        assert!(AttachWant::parse(&AttachRequest {
            ifname: Some("x".repeat(16)),
            ..req(None, None)
        })
        .is_err());
        let first = endpoint(&mut st, "ns1", "a");
        assert_eq!(first.ip, Ipv4Addr::new(10, 1, 0, 2));
        assert!(matches!(
            st.check_attachable(&AttachRequest::new("ns1", "a")),
            Err(Error::AlreadyAttached { .. })
        ));
        let net = st.net_mut("a").unwrap();
        let taken = AttachWant::parse(&req(None, Some("10.1.0.2"))).unwrap();
        assert!(matches!(
            net.reserve(&taken, &req(None, None)),
            Err(Error::AddressInUse { .. })
        ));
        // A MAC in use: refused, and the address it would have had is free again.
        let dup = AttachWant::parse(&req(Some(&first.mac.to_string()), Some("10.1.0.3"))).unwrap();
        assert!(matches!(
            net.reserve(&dup, &req(None, None)),
            Err(Error::MacInUse { .. })
        ));
        let free = AttachWant::parse(&req(None, Some("10.1.0.3"))).unwrap();
        assert!(net.reserve(&free, &req(None, None)).is_ok());
    }

    #[test]
    fn dual_stack_networks_hand_out_both_families() {
        let mut st = State::new();
        let opts = Options::default();
        let create = |name: &str, s6: Option<&str>, g6: Option<&str>| NetworkCreate {
            subnet6: s6.map(Into::into),
            gateway6: g6.map(Into::into),
            ..NetworkCreate::flat(name, "10.1.0.0/24")
        };
        let plan = st
            .plan_network(&create("a", Some("fd00:1::/64"), None), None)
            .unwrap();
        assert_eq!(
            plan.v6,
            Some(("fd00:1::/64".parse().unwrap(), "fd00:1::1".parse().unwrap()))
        );
        st.add_network(plan, &opts);
        let mut b = create("b", Some("fd00:1::/80"), None);
        b.subnet = "10.2.0.0/24".into();
        assert!(matches!(
            st.plan_network(&b, None),
            Err(Error::SubnetOverlap { .. })
        ));
        b.subnet6 = Some("fd00:2::/64".into());
        b.gateway6 = Some("fd00:3::1".into());
        assert!(matches!(
            st.plan_network(&b, None),
            Err(Error::Gateway6Outside { .. })
        ));
        b.subnet6 = None;
        assert!(matches!(st.plan_network(&b, None), Err(Error::NoIpv6(_))));
        b.gateway6 = None;
        let plan = st.plan_network(&b, None).unwrap();
        st.add_network(plan, &opts);
        let req = |net: &str, ip6: Option<&str>| AttachRequest {
            ip6: ip6.map(Into::into),
            ..AttachRequest::new("ns", net)
        };
        let want = |r: &AttachRequest| AttachWant::parse(r).unwrap();
        let net = st.net_mut("a").unwrap();
        let r = req("a", None);
        let (_, ip6, _) = net.reserve(&want(&r), &r).unwrap();
        assert_eq!(ip6, Some("fd00:1::2".parse().unwrap()));
        let r = req("a", Some("fd00:1::2"));
        assert!(matches!(
            net.reserve(&want(&r), &r),
            Err(Error::Address6InUse { .. })
        ));
        // Refused: the IPv4 address it took is free again.
        assert!(!net.pool.is_used(Ipv4Addr::new(10, 1, 0, 3)));
        let r = req("a", Some("fd00:9::2"));
        assert!(net.reserve(&want(&r), &r).is_err());
        let r = req("b", Some("fd00:2::5"));
        let net = st.net_mut("b").unwrap();
        assert!(matches!(net.reserve(&want(&r), &r), Err(Error::NoIpv6(_))));
        let r = req("b", None);
        assert_eq!(net.reserve(&want(&r), &r).unwrap().1, None, "v4 only");
        assert!(AttachWant::parse(&req("a", Some("nonsense"))).is_err());
        // Another endpoint's SLAAC address on the /64 is refused as taken.
        let taken = endpoint(&mut st, "slaac", "a");
        let sl = wire::icmpv6::eui64_in("fd00:1::".parse().unwrap(), taken.mac).to_string();
        let r = req("a", Some(&sl));
        let net = st.net_mut("a").unwrap();
        assert!(matches!(
            net.reserve(&want(&r), &r),
            Err(Error::Address6InUse { .. })
        ));
        // No IPv6 below 1280 bytes; IPv6 prefixes never overlap, overlays included.
        let mut small = create("c", Some("fd00:3::/64"), None);
        small.subnet = "10.3.0.0/24".into();
        small.mtu = Some(1200);
        assert!(matches!(
            st.plan_network(&small, None),
            Err(Error::Mtu6(1200))
        ));
        let mut ov = create("d", Some("fd00:1::/64"), None);
        ov.subnet = "10.4.0.0/24".into();
        ov.vni = Some(77);
        assert!(matches!(
            st.plan_network(&ov, None),
            Err(Error::SubnetOverlap { .. })
        ));
    }

    #[test]
    fn publish_and_unpublish() {
        let mut st = State::new();
        network(&mut st, "a", "10.1.0.0/24", None);
        network(&mut st, "b", "10.2.0.0/24", None);
        endpoint(&mut st, "web", "b");
        endpoint(&mut st, "web", "a");
        let publish = |spec: &str, network: Option<&str>| PublishRequest {
            netns: "web".into(),
            spec: spec.into(),
            network: network.map(Into::into),
        };
        // No network given: the namespace's first network (by creation).
        let i = st.publish(&publish("8080:80", None)).unwrap();
        assert_eq!((i.network.as_str(), i.host_port), ("a", 8080));
        assert!(matches!(
            st.publish(&publish("8080:81", Some("b"))),
            Err(Error::PortInUse { port: 8080, .. })
        ));
        let i = st.publish(&publish("53/udp", Some("b"))).unwrap();
        assert_eq!(i.host_port, *nat::conntrack::PORT_RANGE.start());
        assert!(matches!(
            st.publish(&PublishRequest {
                netns: "nobody".into(),
                ..publish("80", None)
            }),
            Err(Error::NoEndpoint(_))
        ));
        let unpublish = |spec: &str| UnpublishRequest {
            netns: "web".into(),
            spec: spec.into(),
        };
        assert!(matches!(
            st.unpublish(&unpublish("8081")),
            Err(Error::NotPublished { .. })
        ));
        let gone = st.unpublish(&unpublish("8080/tcp")).unwrap();
        assert_eq!(
            (gone.spec(), gone.shown()),
            ("8080:80/tcp".into(), "8080->80/tcp".into())
        );
        assert_eq!(st.published.len(), 1);
    }

    #[test]
    fn uplink_requests() {
        let mut st = State::new();
        network(&mut st, "a", "10.1.0.0/24", None);
        let up = |ip: &str, gw: Option<&str>| UplinkSet {
            iface: "eth0".into(),
            ip: ip.into(),
            gateway: gw.map(Into::into),
            ip6: None,
            gateway6: None,
            ipv6_routed: false,
        };
        let p = st
            .plan_uplink(&up("192.168.1.2/24", Some("192.168.1.1")))
            .unwrap();
        assert_eq!(p.gateway, Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert!(matches!(
            st.plan_uplink(&up("192.168.1.2/24", Some("192.168.1.2"))),
            Err(Error::GatewayOutside { .. })
        ));
        assert!(matches!(
            st.plan_uplink(&up("10.1.0.200/16", None)),
            Err(Error::UplinkOverlap { .. })
        ));
    }
}
