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

/// Addresses an attach tries to take before it gives up (others were taking them meanwhile).
const MAX_TRIES: usize = 32;

/// Automatically allocated VNIs start here (as Docker's overlay driver's do).
const FIRST_VNI: u32 = 4096;

/// Refuse at once while etcd is known to be unreachable (the follow thread retries every
/// second), instead of waiting for every member's timeout under the control lock.
fn connected(agent: &Agent) -> Result<(), Error> {
    let c = agent.conn();
    if c.connected {
        return Ok(());
    }
    Err(Error::Cluster(format!(
        "{}; nothing was changed",
        c.error.as_deref().unwrap_or("etcd not reached yet")
    )))
}

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
        if let Some(s6) = &req.subnet6 {
            // IPv6 addresses follow the IPv4 ones, which etcd's claims keep unique: the prefix
            // must leave 32 bits for them.
            let short = s6
                .split_once('/')
                .and_then(|(_, l)| l.parse::<u8>().ok())
                .is_some_and(|l| l <= 96);
            if !short {
                return Err(Error::ClusterIpv6(req.name.clone()));
            }
        }
        self.mutate(|st| {
            connected(agent)?;
            let mut spec = req.clone();
            spec.overlay = false;
            spec.cluster = true;
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
        connected(agent)?;
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
        connected(agent)?;
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
        connected(agent)?;
        for k in keys {
            let r = agent.etcd.delete(k);
            agent.note(&r);
            r.map_err(etcd_err)?;
        }
        if let Some(k) = keys.first() {
            written_revision(agent, k);
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
            connected(agent)?;
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
                    // The claims as etcd has them now (one range read), then compare-and-swap
                    // on the first free ones: another node may take one meanwhile.
                    let prefix = format!("{}addrs/{}/", agent.keys.prefix(), req.network);
                    let r = agent.etcd.get_prefix(&prefix);
                    agent.note(&r);
                    let taken: BTreeSet<Ipv4Addr> = r
                        .map_err(etcd_err)?
                        .0
                        .iter()
                        .filter_map(|kv| kv.key.strip_prefix(&prefix)?.parse().ok())
                        .collect();
                    let mut found = None;
                    let mut tried = 0;
                    let free = net.free_addresses().filter(|ip| !taken.contains(ip));
                    for ip in free.take(MAX_TRIES) {
                        tried += 1;
                        if take(ip)? {
                            found = Some(ip);
                            break;
                        }
                    }
                    match found {
                        Some(ip) => ip,
                        None if tried < MAX_TRIES => {
                            return Err(Error::Ipam(crate::ipam::IpamError::Exhausted(net.subnet)))
                        }
                        None => {
                            return Err(Error::Cluster(format!(
                                "{MAX_TRIES} free addresses of {} were taken by other nodes \
                                 meanwhile; try again",
                                req.network
                            )))
                        }
                    }
                }
            };
            let addr_key = agent.keys.addr(&req.network, ip);
            let mut local = req.clone();
            local.ip = Some(ip.to_string());
            // Dual stack: the IPv6 address is the IPv4 one in the prefix (unique as it is).
            let net = st.net(&req.network)?;
            if let Some(ip6) = net.derived6(ip) {
                if want.ip6.is_some_and(|a| a != ip6) {
                    delete_keys(agent, &[addr_key]);
                    return Err(Error::ClusterIp6 {
                        network: req.network.clone(),
                        ip,
                        want: ip6.to_string(),
                    });
                }
                local.ip6 = Some(ip6.to_string());
            }
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
        let Some(agent) = self.cluster.clone() else {
            return;
        };
        // Applied on the restored state; a stop meanwhile ends the wait (the agent's threads
        // are joined before the switch takes its lock to stop).
        while self.restoring().is_some() {
            if agent.stopping() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // A view older than this node's own latest change would take it back: the view that
        // has it is on its way.
        if view.revision < agent.written() {
            return;
        }
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
                None => {
                    let spec = NetworkCreate {
                        cluster: true,
                        ..spec.clone()
                    };
                    match self.create_network_locked(st, &spec, None) {
                        Ok(_) => log::info!("cluster: network {name} (VNI {:?}) joined", spec.vni),
                        Err(e) => {
                            log::warn!("cluster: cannot make cluster network {name} here: {e}")
                        }
                    }
                }
                Some(n) if n.vni != spec.vni => log::warn!(
                    "cluster: network {name} here has VNI {:?}, the cluster's has {:?}: left as it is",
                    n.vni,
                    spec.vni
                ),
                Some(n) if !n.cluster => {
                    // Made here before, the same as the cluster's: it is the cluster's now.
                    if let Ok(n) = st.net_mut(name) {
                        n.cluster = true;
                        let spec = n.spec();
                        st.journal.push(Record::Network { spec });
                    }
                }
                Some(_) => {}
            }
        }
        let missing: Vec<(String, bool, bool)> = st
            .networks()
            .values()
            .filter(|n| n.vni.is_some() && !view.networks.contains_key(&n.name))
            .map(|n| (n.name.clone(), n.cluster, n.endpoints.is_empty()))
            .collect();
        for (name, was_in_cluster, unused) in missing {
            if was_in_cluster && unused {
                if st.remove_network(&name).is_ok() {
                    st.journal.push(Record::NetworkRm { name: name.clone() });
                    self.drop_unused_vteps(st);
                    log::info!("cluster: network {name} removed (by another node)");
                }
                continue;
            }
            // Made here before cluster mode, or the cluster lost it (etcd wiped) while this
            // node has endpoints on it: published (again), nothing dropped.
            self.publish_network(st, &name);
        }
        self.adopt_links(st, view);
    }

    /// Put network `name` of this node into the cluster (its name and VNI, if free there).
    fn publish_network(&self, st: &mut State, name: &str) {
        let Some(agent) = self.cluster.as_ref() else {
            return;
        };
        let Ok(n) = st.net(name) else { return };
        let Some(vni) = n.vni else { return };
        let spec = NetworkCreate {
            cluster: true,
            ..n.spec()
        };
        let value = serde_json::to_vec(&spec).unwrap_or_default();
        let name_json = serde_json::to_vec(name).unwrap_or_default();
        let vni_key = agent.keys.vni(vni);
        let r = agent
            .etcd
            .create(&vni_key, &name_json, 0)
            .and_then(|fresh| {
                if !fresh {
                    return Ok(false);
                }
                let made = agent.etcd.create(&agent.keys.network(name), &value, 0)?;
                if !made {
                    let _ = agent.etcd.delete(&vni_key);
                }
                Ok(made)
            });
        agent.note(&r);
        match r {
            Ok(true) => {
                written_revision(agent, &vni_key);
                if let Ok(n) = st.net_mut(name) {
                    n.cluster = true;
                }
                st.journal.push(Record::Network { spec });
                log::warn!("cluster: network {name} (VNI {vni}) of this node put into the cluster");
            }
            Ok(false) => log::warn!(
                "cluster: network {name} (VNI {vni}) of this node cannot join the cluster: its \
                 name or VNI is another network's there; kept here only"
            ),
            Err(e) => log::warn!("cluster: publishing network {name} failed: {e}"),
        }
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
        let peers: BTreeSet<std::net::IpAddr> = view.peers(me).into_iter().collect();
        for name in names {
            let Ok(n) = st.net(&name) else { continue };
            let remote: BTreeMap<EndpointKey, RemoteEndpoint> =
                view.remote_endpoints(&name, me)
                    .filter_map(|(k, r, vtep)| {
                        let mac = r.mac.parse::<MacAddr>().ok();
                        // Only what cannot take over another's traffic: an address of the subnet
                        // that the node holds for that namespace, a unicast MAC that is not the
                        // gateway's or a local endpoint's.
                        let held = view
                            .addrs
                            .get(&(name.clone(), r.ip))
                            .is_some_and(|h| h.node == k.node && h.netns == k.netns);
                        let sound = mac.is_some_and(|m| {
                            m.is_valid_unicast()
                                && m != n.gateway_mac
                                && n.endpoints
                                    .iter()
                                    .all(|e| e.port.mac != m && e.port.ip != r.ip)
                        }) && n.subnet.is_host(r.ip)
                            && r.ip != n.gateway;
                        if !(held && sound) {
                            log::debug!(
                            "cluster: directory entry {}/{} on {name} ({} {}) not installed: {}",
                            k.node,
                            k.netns,
                            r.ip,
                            r.mac,
                            if held { "bad address or MAC" } else { "address not held by it" }
                        );
                            return None;
                        }
                        Some((
                            k.clone(),
                            RemoteEndpoint {
                                ip: r.ip,
                                mac: mac?,
                                names: r.names.clone(),
                                vtep,
                            },
                        ))
                    })
                    .collect();
            if n.member_peers == peers && n.remote_eps == remote {
                continue;
            }
            let Ok(n) = st.net_mut(&name) else { continue };
            for gone in n.member_peers.difference(&peers) {
                n.remote.forget_vtep(*gone);
                self.event(
                    "peer_removed",
                    || serde_json::json!({"network": name, "peer": gone, "source": "cluster"}),
                );
            }
            for new in peers.difference(&n.member_peers) {
                self.event(
                    "peer_added",
                    || serde_json::json!({"network": name, "peer": new, "source": "cluster"}),
                );
            }
            for (k, old) in &n.remote_eps {
                if remote.get(k) != Some(old) {
                    n.remote.remove(&old.mac.0);
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

/// The etcd revision that holds this node's write of `key` (at least), noted as written: a view
/// older than that does not show the write yet. Unknown (etcd did not answer): 0.
fn written_revision(agent: &Agent, key: &str) -> i64 {
    let rev = agent
        .etcd
        .get(key)
        .map_or(0, |(kv, rev)| kv.map_or(rev, |kv| kv.mod_revision.max(rev)));
    agent.wrote(rev);
    rev
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
                let addr_key = agent.keys.addr(&n.name, ip);
                match agent.etcd.create(&addr_key, &value, 0) {
                    Ok(true) => log::warn!(
                        "cluster: the claim of {ip} by {}/{} was missing: put back",
                        me,
                        e.netns
                    ),
                    Ok(false) => {
                        // There after all: whose?
                        let holder_now = agent.etcd.get(&addr_key).ok().and_then(|(kv, _)| {
                            serde_json::from_slice::<AddrRecord>(&kv?.value).ok()
                        });
                        if holder_now.as_ref().is_some_and(|h| *h != holder) {
                            let h = holder_now.unwrap_or(holder.clone());
                            log::error!(
                                "cluster: {ip} of {}/{} on {} is claimed by {}/{} in the \
                                 cluster: two endpoints with one address; detach one",
                                me,
                                e.netns,
                                n.name,
                                h.node,
                                h.netns
                            );
                            continue; // not published: the other holder keeps the directory
                        }
                    }
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
    // And the other way: this node's keys for endpoints it no longer has (a detach or a
    // refused attach whose clean-up did not reach etcd) go, so they block no `network rm` and
    // hold no address.
    let has = |net: &str, netns: &str| {
        st.networks()
            .get(net)
            .is_some_and(|n| n.endpoints.iter().any(|e| e.netns == netns))
    };
    let has_ip = |net: &str, netns: &str, ip: Ipv4Addr| {
        st.networks().get(net).is_some_and(|n| {
            n.endpoints
                .iter()
                .any(|e| e.netns == netns && e.port.ip == ip)
        })
    };
    let stale_eps = view
        .endpoints
        .keys()
        .filter(|k| k.node == *me && !has(&k.network, &k.netns))
        .map(|k| agent.keys.endpoint(k));
    let stale_addrs = view
        .addrs
        .iter()
        .filter(|((net, ip), h)| h.node == *me && !has_ip(net, &h.netns, *ip))
        .map(|((net, ip), _)| agent.keys.addr(net, *ip));
    let stale: Vec<String> = stale_eps.chain(stale_addrs).collect();
    for k in &stale {
        log::warn!("cluster: {k} names an endpoint this node does not have: removed");
    }
    delete_keys(agent, &stale);
}

/// Delete `keys` from etcd, logging what fails (a clean-up after a refused change, or a change
/// taken back because its local part could not be saved).
pub(super) fn delete_keys(agent: &Agent, keys: &[String]) {
    for k in keys {
        if let Err(e) = agent.etcd.delete(k) {
            log::warn!("cluster: removing {k} from etcd failed ({e}); it stays until removed");
        }
    }
}
