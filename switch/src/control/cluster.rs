//! Cluster mode's verbs and how a view of the cluster becomes this host's state.
//!
//! With `--cluster`, overlay networks (those with a VNI) are cluster objects: created, removed
//! and addressed through etcd, the same on every host. Flat networks stay host-local. Every
//! change that needs the cluster is written to etcd first, under the control lock; if etcd
//! refuses or cannot be reached, nothing changes here and the client gets one line.
//!
//! [`Switch::reconcile`] makes this host match a view: cluster networks it lacks are created,
//! ones removed elsewhere go (unless endpoints here still use them), and each cluster network's
//! peers (every other live node's VTEP), remote MACs (static entries), ARP answers and DNS
//! names follow the endpoint directory. A node whose lease expired is no peer, and what was
//! known behind it is forgotten.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::journal::Record;
use super::state::{AttachWant, RemoteEndpoint, State};
use super::{Switch, Undo};
use crate::cluster::etcd::EtcdError;
use crate::cluster::{AddrRecord, Agent, EndpointKey, EndpointRecord, View};
use crate::error::Error;
use crate::model::*;
use crate::wire::MacAddr;

/// Automatically allocated VNIs start here (as Docker's overlay driver's do).
const FIRST_VNI: u32 = 4096;

/// An etcd failure as the client sees it.
fn etcd_err(e: EtcdError) -> Error {
    Error::Cluster(format!("{e}; nothing was changed"))
}

impl Switch {
    /// The cluster agent, when in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<Agent>> {
        self.cluster.as_ref()
    }

    /// `cluster status`: the connection, the view's revision and every node seen.
    pub fn cluster_info(&self) -> Result<ClusterInfo, Error> {
        let agent = self.cluster.as_ref().ok_or(Error::NotClustered)?;
        let conn = agent.conn();
        let view = agent.view().clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let nodes = agent
            .seen()
            .into_iter()
            .map(|(name, s)| ClusterNode {
                endpoints: view.endpoints.keys().filter(|k| k.node == name).count(),
                me: name == agent.opts.node,
                vtep: s.record.vtep.to_string(),
                port: s.record.port,
                state: if s.up { "up" } else { "down" }.to_string(),
                last_seen: if s.up { now } else { s.last_seen },
                name,
            })
            .collect();
        Ok(ClusterInfo {
            node: agent.opts.node.clone(),
            vtep: agent.opts.vtep.to_string(),
            etcd: agent.etcd.endpoints(),
            connected: conn.connected,
            error: conn.error,
            revision: view.revision,
            lease: if conn.lease == 0 {
                String::new()
            } else {
                format!("{:x}", conn.lease)
            },
            ttl: agent.opts.ttl.as_secs(),
            skipped: agent.skipped.load(std::sync::atomic::Ordering::Relaxed),
            networks: view.networks.len(),
            endpoints: view.endpoints.len(),
            nodes,
        })
    }

    /// Whether network `spec` is a cluster object here.
    pub(super) fn is_cluster_net(&self, vni: Option<u32>) -> bool {
        self.cluster.is_some() && vni.is_some()
    }

    /// `network create` of an overlay network in cluster mode: the VNI (given, or the lowest
    /// free one from 4096) and the name are taken in etcd, then the network is made here; the
    /// other hosts make it when they see it.
    pub(super) fn create_cluster_network(
        &self,
        agent: &Agent,
        req: &NetworkCreate,
        underlay_mtu: Option<u32>,
    ) -> Result<NetworkInfo, Error> {
        self.mutate(|st| {
            let mut spec = req.clone();
            spec.overlay = false;
            let auto = spec.vni.is_none();
            let mut vni = match spec.vni {
                Some(v) => v,
                None => agent
                    .view()
                    .free_vni(FIRST_VNI)
                    .ok_or_else(|| Error::Cluster("no free VNI left".into()))?,
            };
            for _ in 0..64 {
                spec.vni = Some(vni);
                let plan = st.plan_network(&spec, underlay_mtu)?;
                // Every host uses the creator's MTU and gateway.
                spec.mtu = Some(plan.mtu);
                spec.gateway = Some(plan.gateway.to_string());
                let vni_key = agent.keys.vni(vni);
                let name = serde_json::to_vec(&spec.name).unwrap_or_default();
                let r = agent.etcd.create(&vni_key, &name, 0);
                agent.note(&r);
                if !r.map_err(etcd_err)? {
                    let holder = agent
                        .etcd
                        .get(&vni_key)
                        .ok()
                        .and_then(|(kv, _)| kv)
                        .and_then(|kv| serde_json::from_slice::<String>(&kv.value).ok())
                        .unwrap_or_default();
                    if auto {
                        vni = (vni + 1..=crate::wire::vxlan::VNI_MAX)
                            .find(|v| !agent.view().vnis.contains_key(v))
                            .ok_or_else(|| Error::Cluster("no free VNI left".into()))?;
                        continue;
                    }
                    return Err(Error::VniInUse {
                        vni,
                        network: holder,
                    });
                }
                let value = serde_json::to_vec(&spec).unwrap_or_default();
                let r = agent
                    .etcd
                    .create(&agent.keys.network(&spec.name), &value, 0);
                agent.note(&r);
                match r {
                    Ok(true) => {}
                    Ok(false) => {
                        let _ = agent.etcd.delete(&vni_key);
                        return Err(Error::NetworkExists(spec.name.clone()));
                    }
                    Err(e) => {
                        let _ = agent.etcd.delete(&vni_key);
                        return Err(etcd_err(e));
                    }
                }
                let keys = vec![agent.keys.network(&spec.name), vni_key];
                return match self.create_network_locked(st, &spec, underlay_mtu) {
                    Ok(info) => {
                        // The revision that made it: views older than that do not have it,
                        // and must not take it for removed.
                        let rev = agent
                            .etcd
                            .get(&keys[0])
                            .map_or(i64::MAX, |(kv, rev)| kv.map_or(rev, |kv| kv.mod_revision));
                        if let Ok(n) = st.net_mut(&spec.name) {
                            n.cluster_rev = rev;
                        }
                        st.undo.push(Undo::ClusterKeys(keys));
                        self.follow_view(st, &agent.view());
                        self.sync(st);
                        Ok(info)
                    }
                    Err(e) => {
                        delete_keys(agent, &keys);
                        Err(e)
                    }
                };
            }
            Err(Error::Cluster(
                "every VNI tried was taken meanwhile; try again".into(),
            ))
        })
    }

    /// `network rm` of a cluster network: refused while any host has endpoints on it (named);
    /// removed from etcd, then here.
    pub(super) fn check_cluster_removable(
        &self,
        agent: &Agent,
        st: &State,
        name: &str,
    ) -> Result<Vec<String>, Error> {
        let net = st.net(name)?;
        let prefix = format!("{}endpoints/{name}/", agent.keys.prefix());
        let r = agent.etcd.get_prefix(&prefix);
        agent.note(&r);
        let (kvs, _) = r.map_err(etcd_err)?;
        if !kvs.is_empty() {
            let endpoints = kvs
                .iter()
                .filter_map(|kv| kv.key.strip_prefix(&prefix))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::NetworkInUse {
                network: name.to_string(),
                endpoints,
            });
        }
        let mut keys = vec![agent.keys.network(name)];
        if let Some(vni) = net.vni {
            keys.push(agent.keys.vni(vni));
        }
        // Its links go with it.
        keys.extend(
            agent
                .view()
                .links
                .iter()
                .filter(|(a, b)| a == name || b == name)
                .map(|(a, b)| agent.keys.link(a, b)),
        );
        Ok(keys)
    }

    /// `network link` / `unlink` of two cluster networks: the link key is written to (or
    /// deleted from) etcd; the caller then changes the link here.
    pub(super) fn write_cluster_link(
        &self,
        agent: &Agent,
        st: &mut State,
        a: &str,
        b: &str,
        link: bool,
    ) -> Result<(), Error> {
        let key = agent.keys.link(a, b);
        let r = if link {
            agent.etcd.put(&key, b"{}", 0).map(|_| ())
        } else {
            agent.etcd.delete(&key).map(|_| ())
        };
        agent.note(&r);
        r.map_err(etcd_err)?;
        if link {
            st.undo.push(Undo::ClusterKeys(vec![key.clone()]));
        }
        let rev = written_revision(agent, &key);
        for n in [a, b] {
            if let Ok(n) = st.net_mut(n) {
                n.cluster_rev = rev;
            }
        }
        Ok(())
    }

    /// Delete `keys` from etcd (a removal saved there first).
    pub(super) fn delete_cluster_keys(&self, agent: &Agent, keys: &[String]) -> Result<(), Error> {
        for k in keys {
            let r = agent.etcd.delete(k);
            agent.note(&r);
            r.map_err(etcd_err)?;
        }
        Ok(())
    }

    /// `attach` to a cluster network: the address is taken in etcd (the one asked for, or the
    /// first free one; compare-and-swap, so no two hosts get the same), the endpoint is made
    /// here and published in the directory.
    pub(super) fn attach_cluster(
        &self,
        agent: &Agent,
        req: &AttachRequest,
    ) -> Result<EndpointInfo, Error> {
        self.mutate(|st| {
            let want = AttachWant::parse(req)?;
            st.check_attachable(req)?;
            let net = st.net(&req.network)?;
            let me = &agent.opts.node;
            let holder = AddrRecord {
                node: me.clone(),
                netns: req.netns.clone(),
            };
            let value = serde_json::to_vec(&holder).unwrap_or_default();
            let take = |ip: Ipv4Addr| -> Result<bool, Error> {
                let key = agent.keys.addr(&req.network, ip);
                let r = agent.etcd.create(&key, &value, 0);
                agent.note(&r);
                if r.map_err(etcd_err)? {
                    return Ok(true);
                }
                // Ours already (left by a crash between etcd and here)?
                let r = agent.etcd.get(&key);
                agent.note(&r);
                let kv = r.map_err(etcd_err)?.0;
                Ok(kv.is_some_and(|kv| {
                    serde_json::from_slice::<AddrRecord>(&kv.value).is_ok_and(|h| h == holder)
                }))
            };
            let ip = match want.ip {
                Some(ip) => {
                    net.check_address(ip)?;
                    if !take(ip)? {
                        let holder = agent
                            .view()
                            .addrs
                            .get(&(req.network.clone(), ip))
                            .map(|h| format!("{}/{}", h.node, h.netns))
                            .unwrap_or_else(|| "another node".into());
                        return Err(Error::AddressHeld {
                            ip,
                            network: req.network.clone(),
                            holder,
                        });
                    }
                    ip
                }
                None => {
                    let taken: BTreeSet<Ipv4Addr> = agent
                        .view()
                        .addrs
                        .keys()
                        .filter(|(n, _)| *n == req.network)
                        .map(|(_, ip)| *ip)
                        .collect();
                    let mut found = None;
                    for ip in net.free_addresses().filter(|ip| !taken.contains(ip)) {
                        if take(ip)? {
                            found = Some(ip);
                            break;
                        }
                    }
                    found.ok_or(Error::Ipam(crate::ipam::IpamError::Exhausted(net.subnet)))?
                }
            };
            let addr_key = agent.keys.addr(&req.network, ip);
            let mut local = req.clone();
            local.ip = Some(ip.to_string());
            let info = match self.attach_locked(st, &local, super::endpoints::AttachMode::Create) {
                Ok(info) => info,
                Err(e) => {
                    delete_keys(agent, &[addr_key]);
                    return Err(e);
                }
            };
            let key = EndpointKey {
                network: req.network.clone(),
                node: me.clone(),
                netns: req.netns.clone(),
            };
            let rec = EndpointRecord {
                ip,
                mac: info.mac.clone(),
                names: std::iter::once(req.netns.clone())
                    .chain(req.aliases.iter().cloned())
                    .collect(),
            };
            let ep_key = agent.keys.endpoint(&key);
            let r = agent
                .etcd
                .put(&ep_key, &serde_json::to_vec(&rec).unwrap_or_default(), 0);
            agent.note(&r);
            if let Ok(rev) = r {
                agent.wrote(rev);
            }
            if let Err(e) = r {
                let _ = self.remove_endpoint(st, &req.netns, &req.network);
                st.journal.clear();
                st.undo.clear();
                delete_keys(agent, &[addr_key]);
                return Err(etcd_err(e));
            }
            st.undo.push(Undo::ClusterKeys(vec![ep_key, addr_key]));
            Ok(info)
        })
    }

    /// The etcd keys of `netns`'s endpoint on cluster network `network` (directory entry and
    /// address), for a detach to delete first.
    pub(super) fn cluster_endpoint_keys(
        &self,
        agent: &Agent,
        st: &State,
        netns: &str,
        network: &str,
    ) -> Result<Vec<String>, Error> {
        let ep = st.endpoint(netns, network)?;
        let key = EndpointKey {
            network: network.to_string(),
            node: agent.opts.node.clone(),
            netns: netns.to_string(),
        };
        Ok(vec![
            agent.keys.endpoint(&key),
            agent.keys.addr(network, ep.port.ip),
        ])
    }

    /// Make this host match `view` (called by the cluster agent with every new view).
    pub fn reconcile(&self, view: &View) {
        if self.cluster.is_none() {
            return;
        }
        self.wait_restored();
        let r = self.mutate(|st| {
            self.adopt_networks(st, view);
            self.follow_view(st, view);
            self.sync(st);
            Ok(())
        });
        // What this node has that the cluster lost (etcd's data wiped or restored from an
        // old backup): published again, so the other nodes see it.
        if let (Some(agent), Ok(st)) = (self.cluster.as_ref(), self.lock()) {
            republish(agent, &st, view);
        }
        if let Err(e) = r {
            if !matches!(e, Error::ShuttingDown) {
                log::warn!("cluster: applying the cluster's state failed: {e}");
            }
        }
    }

    /// Create the cluster networks this host lacks; remove the ones gone from the cluster
    /// (unless endpoints here still use them).
    fn adopt_networks(&self, st: &mut State, view: &View) {
        for (name, spec) in &view.networks {
            match st.networks().get(name) {
                None => match self.create_network_locked(st, spec, None) {
                    Ok(_) => log::info!("cluster: network {name} (VNI {:?}) joined", spec.vni),
                    Err(e) => log::warn!("cluster: cannot make cluster network {name} here: {e}"),
                },
                Some(n) if n.vni != spec.vni => log::warn!(
                    "cluster: network {name} here has VNI {:?}, the cluster's has {:?}: left as it is",
                    n.vni,
                    spec.vni
                ),
                Some(_) => {}
            }
        }
        let gone: Vec<String> = st
            .networks()
            .values()
            .filter(|n| {
                n.vni.is_some()
                    && !view.networks.contains_key(&n.name)
                    && view.revision >= n.cluster_rev
            })
            .map(|n| n.name.clone())
            .collect();
        for name in gone {
            let in_use = st.net(&name).is_ok_and(|n| !n.endpoints.is_empty());
            if in_use {
                log::warn!(
                    "cluster: network {name} is not in the cluster (removed, or etcd lost it) \
                     but has endpoints here: kept"
                );
                continue;
            }
            if st.remove_network(&name).is_ok() {
                st.journal.push(Record::NetworkRm { name: name.clone() });
                self.drop_unused_vteps(st);
                log::info!("cluster: network {name} removed (by another host)");
            }
        }
        self.adopt_links(st, view);
    }

    /// Link the cluster networks the cluster links; unlink the ones it does not (unless this
    /// node's own change is newer than the view).
    fn adopt_links(&self, st: &mut State, view: &View) {
        let cluster_nets: Vec<(String, i64, Vec<String>)> = st
            .networks()
            .values()
            .filter(|n| n.vni.is_some())
            .map(|n| {
                (
                    n.name.clone(),
                    n.cluster_rev,
                    n.links.iter().cloned().collect(),
                )
            })
            .collect();
        let rev = |name: &str| {
            cluster_nets
                .iter()
                .find(|(n, ..)| n == name)
                .map(|(_, r, _)| *r)
        };
        let mut changes = Vec::new();
        for (a, b) in &view.links {
            let (Some(ra), Some(rb)) = (rev(a), rev(b)) else {
                continue; // not both here (yet)
            };
            let linked = st.net(a).is_ok_and(|n| n.links.contains(b.as_str()));
            if !linked && view.revision >= ra.max(rb) {
                changes.push((a.clone(), b.clone(), true));
            }
        }
        for (a, r, links) in &cluster_nets {
            for b in links.iter().filter(|b| a < *b) {
                let Some(rb) = rev(b) else { continue };
                if !view.linked(a, b) && view.revision >= (*r).max(rb) {
                    changes.push((a.clone(), b.clone(), false));
                }
            }
        }
        for (a, b, link) in changes {
            match st.link(&a, &b, link) {
                Ok(()) => {
                    st.journal.push(Record::Link {
                        a: a.clone(),
                        b: b.clone(),
                        linked: link,
                    });
                    log::info!(
                        "cluster: networks {a} and {b} {} (by another host)",
                        if link { "linked" } else { "unlinked" }
                    );
                }
                Err(e) => log::warn!("cluster: cannot link {a} and {b} here: {e}"),
            }
        }
    }

    /// Each cluster network's peers, remote MACs, ARP answers and DNS names as `view` has them.
    pub(super) fn follow_view(&self, st: &mut State, view: &View) {
        let Some(agent) = self.cluster.as_ref() else {
            return;
        };
        let me = agent.opts.node.as_str();
        let names: Vec<String> = st
            .networks()
            .values()
            .filter(|n| n.vni.is_some())
            .map(|n| n.name.clone())
            .collect();
        let peers: BTreeSet<Ipv4Addr> = view.peers(me).into_iter().collect();
        for name in names {
            let remote: BTreeMap<EndpointKey, RemoteEndpoint> = view
                .remote_endpoints(&name, me)
                .filter_map(|(k, r, vtep)| {
                    Some((
                        k.clone(),
                        RemoteEndpoint {
                            ip: r.ip,
                            mac: r.mac.parse::<MacAddr>().ok()?,
                            names: r.names.clone(),
                            vtep,
                        },
                    ))
                })
                .collect();
            let Ok(n) = st.net(&name) else { continue };
            if n.member_peers == peers && n.remote_eps == remote {
                continue;
            }
            let Ok(n) = st.net_mut(&name) else { continue };
            for gone in n.member_peers.difference(&peers) {
                n.remote.forget_vtep(*gone);
            }
            for (k, old) in &n.remote_eps {
                if remote.get(k) != Some(old) {
                    n.remote.forget(&old.mac.0);
                    n.neigh.remove_if(&old.ip, |_, m| *m == old.mac);
                }
            }
            for r in remote.values() {
                n.remote.add_static(r.mac.0, r.vtep);
                n.neigh.insert(r.ip, r.mac);
            }
            n.member_peers = peers.clone();
            n.remote_eps = remote;
        }
    }
}

/// The etcd revision that holds this node's write of `key` (at least): a view older than that
/// does not show the write yet. Unknown (etcd did not answer): the highest, so no view is taken
/// to undo the write until one shows it.
fn written_revision(agent: &Agent, key: &str) -> i64 {
    agent.etcd.get(key).map_or(i64::MAX, |(kv, rev)| {
        kv.map_or(rev, |kv| kv.mod_revision.max(rev))
    })
}

/// Put back the directory entries and address claims of this node's endpoints on cluster
/// networks that `view` lacks. A view older than a fresh attach lacks its keys too: putting the
/// same values again changes nothing.
fn republish(agent: &Agent, st: &State, view: &View) {
    if view.revision < agent.written() {
        return; // this node's own latest writes are not in this view yet
    }
    let me = &agent.opts.node;
    for n in st.networks().values().filter(|n| n.vni.is_some()) {
        if !view.networks.contains_key(&n.name) {
            continue; // not a cluster network (yet): nothing to publish it in
        }
        for e in &n.endpoints {
            let key = EndpointKey {
                network: n.name.clone(),
                node: me.clone(),
                netns: e.netns.clone(),
            };
            let ip = e.port.ip;
            if !view.addrs.contains_key(&(n.name.clone(), ip)) {
                let holder = AddrRecord {
                    node: me.clone(),
                    netns: e.netns.clone(),
                };
                let value = serde_json::to_vec(&holder).unwrap_or_default();
                match agent.etcd.create(&agent.keys.addr(&n.name, ip), &value, 0) {
                    Ok(true) => log::warn!(
                        "cluster: the claim of {ip} by {}/{} was missing: put back",
                        me,
                        e.netns
                    ),
                    Ok(false) => {} // there after all (the view is older)
                    Err(err) => log::warn!("cluster: putting back the claim of {ip} failed: {err}"),
                }
            }
            if !view.endpoints.contains_key(&key) {
                let rec = EndpointRecord {
                    ip,
                    mac: e.port.mac.to_string(),
                    names: std::iter::once(e.netns.clone())
                        .chain(e.aliases.iter().cloned())
                        .collect(),
                };
                let value = serde_json::to_vec(&rec).unwrap_or_default();
                if let Err(err) = agent.etcd.put(&agent.keys.endpoint(&key), &value, 0) {
                    log::warn!("cluster: publishing {}/{} failed: {err}", me, e.netns);
                }
            }
        }
    }
}

/// Delete `keys` from etcd, logging what fails (a clean-up after a refused change).
fn delete_keys(agent: &Agent, keys: &[String]) {
    for k in keys {
        if let Err(e) = agent.etcd.delete(k) {
            log::warn!("cluster: removing {k} from etcd failed ({e}); it stays until removed");
        }
    }
}

/// Take back cluster keys a change wrote (its local part could not be saved).
pub(super) fn undo_keys(agent: &Agent, keys: &[String]) {
    delete_keys(agent, keys);
}
