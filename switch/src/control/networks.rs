//! The network verbs: `network create`, `network rm`, `network link`/`unlink`, `peer add`/`rm`
//! and `fdb add` (a static remote MAC). The checks are the state model's; this adds the VTEP
//! each overlay network needs and the new snapshot.

use super::journal::Record;
use super::state::{parse_peers, State};
use super::{Switch, Undo};
use crate::error::Error;
use crate::model::*;
use crate::wire::MacAddr;

impl Switch {
    /// `network create`.
    pub fn create_network(&self, req: &NetworkCreate) -> Result<NetworkInfo, Error> {
        // `cluster` is the daemon's to set.
        let req = &NetworkCreate {
            cluster: false,
            ..req.clone()
        };
        for p in parse_peers(req)? {
            self.check_peer_family(p)?;
        }
        let underlay_mtu = underlay_mtu(req);
        if let Some(agent) = self.cluster().filter(|_| req.vni.is_some() || req.overlay) {
            return self.create_cluster_network(agent, req, underlay_mtu);
        }
        if req.overlay {
            return Err(Error::OverlayNeedsVni(req.name.clone()));
        }
        self.mutate(|st| self.create_network_locked(st, req, underlay_mtu))
    }

    /// Create the network (checked against the state under the lock); `underlay_mtu` is
    /// [`underlay_mtu`]'s answer, looked up before the lock was taken.
    pub(super) fn create_network_locked(
        &self,
        st: &mut State,
        req: &NetworkCreate,
        underlay_mtu: Option<u32>,
    ) -> Result<NetworkInfo, Error> {
        let plan = st.plan_network(req, underlay_mtu)?;
        if plan.vni.is_some() {
            self.ensure_vtep(st, plan.vxlan_port)?;
        }
        let info = st.add_network(plan, &self.opts);
        let spec = st.net(&info.name)?.spec();
        st.journal.push(Record::Network { spec });
        st.undo.push(Undo::Network(info.name.clone()));
        self.sync(st);
        log::info!(
            "network {} created: {} gateway {}",
            info.name,
            info.subnet,
            info.gateway
        );
        Ok(info)
    }

    /// `network rm`: refused while endpoints are attached.
    pub fn remove_network(&self, name: &str) -> Result<(), Error> {
        self.mutate(|st| {
            // A cluster network: gone from etcd first (refused while any node has endpoints,
            // named NODE/NETNS).
            let vni = st.net(name)?.vni;
            let cluster = self.cluster().filter(|_| self.is_cluster_net(vni));
            let keys = match cluster {
                Some(agent) => self.check_cluster_removable(agent, st, name)?,
                None => Vec::new(),
            };
            // Saved first: its learned tables and VTEP cannot be given back.
            st.check_removable(name)?;
            if let Some(agent) = cluster {
                self.delete_cluster_keys(agent, &keys)?;
            }
            st.journal.push(Record::NetworkRm {
                name: name.to_string(),
            });
            self.commit(st)?;
            st.remove_network(name)?;
            self.drop_unused_vteps(st);
            self.sync(st);
            Ok(())
        })?;
        log::info!("network {name} removed");
        Ok(())
    }

    /// `network link A B` (or `unlink` with `link == false`).
    pub fn link(&self, a: &str, b: &str, link: bool) -> Result<(), Error> {
        self.mutate(|st| {
            // Two cluster networks: linked on every node, through etcd first.
            let was = st.net(a).is_ok_and(|n| n.links.contains(b));
            let both = [a, b]
                .iter()
                .all(|n| st.net(n).is_ok_and(|n| self.is_cluster_net(n.vni)));
            if let Some(agent) = self.cluster().filter(|_| both && was != link) {
                st.check_link(a, b, link)?;
                self.write_cluster_link(agent, st, a, b, link)?;
            }
            self.link_locked(st, a, b, link)
        })
    }

    pub(super) fn link_locked(
        &self,
        st: &mut State,
        a: &str,
        b: &str,
        link: bool,
    ) -> Result<(), Error> {
        let was = st.net(a).is_ok_and(|n| n.links.contains(b));
        st.link(a, b, link)?;
        if was != link {
            st.journal.push(Record::Link {
                a: a.to_string(),
                b: b.to_string(),
                linked: link,
            });
            st.undo.push(Undo::Link(a.to_string(), b.to_string(), link));
        }
        self.sync(st);
        log::info!(
            "networks {a} and {b} {}",
            if link { "linked" } else { "unlinked" }
        );
        Ok(())
    }

    /// `peer add` (`add == true`) and `peer rm`.
    pub fn peer(&self, network: &str, ip: &str, add: bool) -> Result<NetworkInfo, Error> {
        let ip = crate::ipam::parse_ip(ip)?;
        self.check_peer_family(ip)?;
        let mut changed = false;
        let info = self.mutate(|st| {
            let was = st.net(network).is_ok_and(|n| n.peers.contains(&ip));
            changed = was != add;
            let info = st.peer(network, ip, add)?;
            if was != add {
                let spec = st.net(network)?.spec();
                st.journal.push(Record::Network { spec });
                st.undo.push(Undo::Peer(network.to_string(), ip, add));
            }
            self.sync(st);
            log::info!(
                "network {network}: peer {ip} {}",
                if add { "added" } else { "removed" }
            );
            Ok(info)
        })?;
        // Told once saved (a refused change was taken back and is not news).
        if changed {
            let kind = if add { "peer_added" } else { "peer_removed" };
            self.event(kind, || serde_json::json!({"network": network, "peer": ip}));
        }
        Ok(info)
    }

    /// Refuse a peer VTEP of the other family than the underlay's (`--underlay-ip`; IPv4 when
    /// none is given): the VTEP socket speaks one family.
    fn check_peer_family(&self, peer: std::net::IpAddr) -> Result<(), Error> {
        let u = self.opts.underlay_ip;
        let v6 = u.is_some_and(|a| a.is_ipv6());
        if peer.is_ipv6() == v6 {
            return Ok(());
        }
        Err(Error::PeerFamily {
            peer,
            family: if v6 { "IPv6" } else { "IPv4" },
            underlay: u.map_or_else(|| "not given".into(), |a| a.to_string()),
        })
    }

    /// `fdb add NETWORK MAC --vtep IP`: a static remote entry (not persisted across restarts).
    pub fn fdb_add(&self, req: &FdbAdd) -> Result<(), Error> {
        let mac: MacAddr = req.mac.parse()?;
        if !mac.is_valid_unicast() {
            return Err(Error::MacNotUnicast(mac.to_string()));
        }
        let vtep = crate::ipam::parse_ip(&req.vtep)?;
        self.check_peer_family(vtep)?;
        // Not `mutate`: the entry goes into the network's remote FDB (a datapath table), not
        // into the state, and is not persisted; there is nothing to save.
        let st = self.lock()?;
        let net = st.net(&req.network)?;
        if net.vni.is_none() {
            return Err(Error::NotOverlay(req.network.clone()));
        }
        net.remote.add_static(mac.0, vtep);
        Ok(())
    }
}

/// The MTU of the route to an overlay network's first peer, which its endpoints' MTU is derived
/// from; `None` when it is not needed (an MTU is given, or not an overlay network) or not known.
/// A route lookup: made before the control lock is taken.
pub(super) fn underlay_mtu(req: &NetworkCreate) -> Option<u32> {
    if req.vni.is_none() || req.mtu.is_some() {
        return None;
    }
    let peer = *parse_peers(req).ok()?.iter().next()?;
    crate::sys::udp::route_to(peer).ok().map(|r| r.1)
}
