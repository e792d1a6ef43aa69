//! Read-only views of the switch: `network ls`/`inspect`, `ports`, `fdb`, `stats`, `conntrack
//! ls`, `uplink show`, port lookup by name, and the lookup of a capture target. None changes the
//! state; all but `capture` answer while the switch shuts down.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::state::{zone_of, State};
use super::Switch;
use crate::capture::Session;
use crate::error::Error;
use crate::fdb::PortId;
use crate::model::*;
use crate::wire::MacAddr;

impl Switch {
    /// `network ls`.
    pub fn networks(&self) -> Vec<NetworkInfo> {
        let st = self.read();
        st.networks()
            .values()
            .map(|n| n.info(&st.published))
            .collect()
    }

    /// `network inspect`.
    pub fn network(&self, name: &str) -> Result<NetworkInfo, Error> {
        let st = self.read();
        st.net(name).map(|n| n.info(&st.published))
    }

    /// The id of the port named `name` (`p3`, `uplink`).
    pub fn port_id(&self, name: &str) -> Option<PortId> {
        let cfg = self.shared.config.load();
        cfg.ports.values().find(|p| p.name == name).map(|p| p.id)
    }

    /// `ports`.
    pub fn ports(&self) -> Vec<PortInfo> {
        let guard = self.read();
        let st: &State = &guard;
        let mut v: Vec<PortInfo> = st
            .networks()
            .values()
            .flat_map(|n| {
                n.endpoints.iter().map(move |e| PortInfo {
                    name: e.port.name.clone(),
                    kind: "tap".into(),
                    netns: e.netns.clone(),
                    ifname: e.ifname.clone(),
                    network: n.name.clone(),
                    mac: e.port.mac.to_string(),
                    ip: e.port.ip,
                    ip6: e.port.ip6,
                    worker: e.port.worker,
                    published: st
                        .published
                        .iter()
                        .filter(|p| p.netns == e.netns && p.network == n.name)
                        .map(|p| p.shown())
                        .collect(),
                    counters: e.port.stats.snapshot(),
                    state: if e.is_up() { "up" } else { "pending" }.into(),
                    reason: e.pending.clone(),
                })
            })
            .collect();
        v.sort_by_key(|p| p.name[1..].parse::<u32>().unwrap_or(0));
        for vt in st.vteps().values() {
            v.push(PortInfo {
                name: vt.name.clone(),
                kind: "vxlan".into(),
                netns: "-".into(),
                ifname: "-".into(),
                network: "-".into(),
                mac: "-".into(),
                ip: vt.ip,
                ip6: None,
                worker: vt.worker,
                published: Vec::new(),
                counters: vt.stats.snapshot(),
                state: "up".into(),
                reason: None,
            });
        }
        if let Some(u) = &st.uplink {
            v.push(PortInfo {
                name: u.port.name.clone(),
                kind: "uplink".into(),
                netns: "-".into(),
                ifname: u.req.iface.clone(),
                network: "-".into(),
                mac: u.port.mac.to_string(),
                ip: u.ip,
                ip6: None,
                worker: u.port.worker,
                published: Vec::new(),
                counters: u.port.stats.snapshot(),
                state: if u.down.is_none() { "up" } else { "down" }.into(),
                reason: u.down.clone(),
            });
        }
        v
    }

    /// `fdb [NETWORK]`.
    pub fn fdb(&self, network: Option<&str>) -> Result<Vec<FdbEntryInfo>, Error> {
        let st = self.read();
        zone_of(&st, network)?;
        let now = self.shared.now_ms();
        let mut out = Vec::new();
        for n in st
            .networks()
            .values()
            .filter(|n| network.is_none_or(|f| f == n.name))
        {
            let names: BTreeMap<PortId, &str> = n
                .endpoints
                .iter()
                .map(|e| (e.port.id, e.port.name.as_str()))
                .collect();
            for e in n.fdb.entries(now) {
                out.push(FdbEntryInfo {
                    network: n.name.clone(),
                    mac: e.mac.to_string(),
                    port: names
                        .get(&e.port)
                        .map_or_else(|| format!("p{}", e.port), |s| s.to_string()),
                    age_secs: e.age_ms / 1000,
                    vtep: None,
                });
            }
            for e in n.remote.entries(now) {
                out.push(FdbEntryInfo {
                    network: n.name.clone(),
                    mac: MacAddr(e.mac).to_string(),
                    port: format!("vxlan{}", n.vxlan_port),
                    age_secs: e.age_ms / 1000,
                    vtep: Some(e.vtep),
                });
            }
        }
        Ok(out)
    }

    /// `stats`.
    pub fn stats(&self) -> StatsInfo {
        let mut drops = BTreeMap::new();
        let mut events = BTreeMap::new();
        for c in &self.counters {
            c.sum_into(&mut drops, &mut events);
        }
        events.insert(
            "conntrack_early_drop".to_string(),
            self.shared.ct.early_drops() + self.shared.ct6.early_drops(),
        );
        StatsInfo {
            ports: self.ports(),
            drops,
            events,
        }
    }

    /// Tell the event stream (`vswitchctl events`) of `kind` with `fields` (a JSON object,
    /// built only when someone listens).
    pub(super) fn event(&self, kind: &str, fields: impl FnOnce() -> serde_json::Value) {
        self.shared
            .bus
            .publish(crate::events::Topic::Events, kind, fields);
    }

    /// Tell the flow log of `flows` gone (`reason`: `timeout`, `flushed`, `detached`, ...).
    /// Network names come from the datapath's snapshot: no lock is taken.
    pub(super) fn flows_gone<A: nat::Addr>(
        &self,
        flows: &[std::sync::Arc<nat::Flow<A>>],
        reason: &str,
    ) {
        use crate::events::{flow_fields, Topic};
        if flows.is_empty() || !self.shared.bus.listening(Topic::Flows) {
            return;
        }
        let cfg = self.shared.config.load();
        for f in flows {
            let net = cfg.networks.get(&f.zone).map(|n| n.name.clone());
            self.shared.bus.publish(Topic::Flows, "destroy", || {
                flow_fields(f, net.as_deref(), reason)
            });
        }
    }

    /// Follow the event stream or the flow log.
    pub fn subscribe(&self, topic: crate::events::Topic) -> crate::events::Subscription {
        self.shared.bus.subscribe(topic)
    }

    /// `GET /metrics`: what the Prometheus exposition renders.
    pub fn metrics(&self) -> MetricsInfo {
        let stats = self.stats();
        let now = self.shared.now_ms();
        let mut conntrack = BTreeMap::new();
        self.shared
            .ct
            .for_each(|f| *conntrack.entry(("ipv4", f.state_name())).or_insert(0u64) += 1);
        self.shared
            .ct6
            .for_each(|f| *conntrack.entry(("ipv6", f.state_name())).or_insert(0u64) += 1);
        let st = self.read();
        let networks = st
            .networks()
            .values()
            .map(|n| NetworkMetrics {
                network: n.name.clone(),
                endpoints: n.endpoints.len() as u64,
                fdb_entries: n.fdb.len() as u64,
                remote_entries: n.vni.map_or(0, |_| n.remote.entries(now).len() as u64),
                neighbours: n.neigh.len() as u64,
                neighbours6: n.neigh6.len() as u64,
            })
            .collect();
        let uplink_neighbours = st.uplink.as_ref().map_or(0, |u| {
            (u.neigh.entries(now).len() + u.neigh6.entries(now).len()) as u64
        });
        MetricsInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            stats,
            networks,
            fdb_limit: self.opts.fdb_limit as u64,
            conntrack: conntrack
                .into_iter()
                .map(|((family, state), count)| ConntrackCount {
                    family: family.into(),
                    state: state.into(),
                    count,
                })
                .collect(),
            conntrack_limit: self.opts.ct_max as u64,
            uplink_neighbours,
            capture_sessions: crate::capture::active_sessions() as u64,
            // The datapath workers' (the housekeeping thread's counters come after them).
            worker_busy_ns: self
                .counters
                .iter()
                .take(self.epolls.len())
                .map(|c| c.busy_ns())
                .collect(),
        }
    }

    /// Start a capture session on `target`: a port name, `NETNS/IFNAME`, or a network name.
    pub fn capture(&self, target: &str) -> Result<Session, Error> {
        // Also while restoring (what is restored so far can be captured); not once stopping.
        let st = self.read();
        if st.shutting_down {
            return Err(Error::ShuttingDown);
        }
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let endpoint = st
            .networks()
            .values()
            .flat_map(|n| n.endpoints.iter())
            .find(|e| {
                e.port.name == target
                    || target
                        .split_once('/')
                        .is_some_and(|(ns, ifn)| ns == e.netns && ifn == e.ifname)
            });
        if let Some(e) = endpoint {
            return Ok(Session::start(id, vec![(e.port.taps.clone(), true, true)]));
        }
        if let Some(n) = st.networks().get(target) {
            // Every frame entering the network from a port or from a peer VTEP (the network's
            // own taps, Rx), plus what the switch itself sends into it (Tx).
            let mut taps: Vec<_> = n
                .endpoints
                .iter()
                .map(|e| (e.port.taps.clone(), true, false))
                .collect();
            taps.push((n.taps.clone(), true, true));
            return Ok(Session::start(id, taps));
        }
        if let Some(u) = st
            .uplink
            .as_ref()
            .filter(|u| target == "uplink" || target == u.req.iface || target == u.port.name)
        {
            return Ok(Session::start(id, vec![(u.port.taps.clone(), true, true)]));
        }
        Err(Error::TargetNotFound(target.to_string()))
    }

    /// `conntrack ls`.
    pub fn conntrack(&self, network: Option<&str>) -> Result<Vec<ConntrackEntry>, Error> {
        let st = self.read();
        let zone = zone_of(&st, network)?;
        let names = st.net_names();
        let now = self.shared.now_ms();
        let mut v = entries(&self.shared.ct, zone, &names, now);
        v.extend(entries(&self.shared.ct6, zone, &names, now));
        v.sort_by(|a, b| (&a.proto, &a.orig).cmp(&(&b.proto, &b.orig)));
        Ok(v)
    }

    /// `uplink show`.
    pub fn uplink(&self) -> Result<UplinkInfo, Error> {
        let st = self.read();
        self.uplink_info_locked(&st)
    }

    pub(super) fn uplink_info_locked(&self, st: &State) -> Result<UplinkInfo, Error> {
        let u = st.uplink.as_ref().ok_or(Error::NoUplink)?;
        let now = self.shared.now_ms();
        Ok(UplinkInfo {
            iface: u.req.iface.clone(),
            ip: u.ip,
            prefix_len: u.subnet.prefix_len(),
            gateway: u.gateway,
            ip6: u.v6.map(|v| v.ip),
            prefix6_len: u.v6.map(|v| v.subnet.prefix_len()),
            gateway6: u.v6.and_then(|v| v.gateway),
            ipv6_routed: u.v6.is_some_and(|v| v.routed),
            mac: u.port.mac.to_string(),
            port: u.port.name.clone(),
            neighbours: u
                .neigh
                .entries(now)
                .into_iter()
                .map(|e| NeighInfo {
                    ip: e.ip.into(),
                    mac: e.mac.to_string(),
                    age_secs: e.age_ms / 1000,
                })
                .chain(u.neigh6.entries(now).into_iter().map(|e| NeighInfo {
                    ip: e.ip.into(),
                    mac: e.mac.to_string(),
                    age_secs: e.age_ms / 1000,
                }))
                .collect(),
            state: if u.down.is_none() { "up" } else { "down" }.into(),
            reason: u.down.clone(),
        })
    }
}

/// The flows of `ct` (those of `zone`, when given) as `conntrack ls` shows them.
fn entries<A: nat::Addr>(
    ct: &nat::Conntrack<A>,
    zone: Option<crate::port::NetId>,
    names: &BTreeMap<crate::port::NetId, &str>,
    now: u64,
) -> Vec<ConntrackEntry> {
    ct.flows(zone)
        .iter()
        .map(|f| ConntrackEntry {
            proto: f.orig.proto.name().into(),
            kind: f.kind.name().into(),
            network: names
                .get(&f.zone)
                .map_or_else(|| "-".into(), |s| s.to_string()),
            orig: f.orig.to_string(),
            reply: f.reply.to_string(),
            state: f.state_name().into(),
            expires_secs: (f.last_seen() + f.timeout(&ct.timeouts)).saturating_sub(now) / 1000,
        })
        .collect()
}
