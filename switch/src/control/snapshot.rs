//! The datapath's configuration as a pure function of the control state ([`build`]), and the
//! one place that installs it ([`Switch::sync`]): after every change the workers get a whole new
//! [`Config`] snapshot, swapped in atomically; they never take the control lock.

use std::net::Ipv4Addr;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::state::State;
use super::Switch;
use crate::datapath::{Config, NetRt, Published, UplinkRt};
use crate::fdb::PortId;
use crate::port::Port;

/// The snapshot the workers need for state `st`: networks with their ports, tables, links and
/// DNS names; every port by id; VNIs; published ports; the uplink.
pub(super) fn build(st: &State) -> Config {
    let mut cfg = Config::default();
    for n in st.networks.values() {
        // Pending endpoints have no device: the datapath does not see them.
        let ports: Vec<Arc<Port>> = n
            .endpoints
            .iter()
            .filter(|e| e.is_up())
            .map(|e| e.port.clone())
            .collect();
        for p in &ports {
            cfg.ports.insert(p.id, p.clone());
        }
        let linked = || n.links.iter().filter_map(|l| st.networks.get(l));
        cfg.networks.insert(
            n.id,
            Arc::new(NetRt {
                id: n.id,
                subnet: n.subnet,
                gateway_ip: n.gateway,
                gateway_mac: n.gateway_mac,
                ports,
                fdb: n.fdb.clone(),
                neigh: n.neigh.clone(),
                taps: n.taps.clone(),
                internal: n.internal,
                icc: n.icc,
                links: linked().map(|l| l.id).collect(),
                mtu: n.mtu,
                dns: n.names().chain(linked().flat_map(|l| l.names())).collect(),
                vni: n.vni,
                peers: n.peers.iter().copied().collect(),
                remote: n.vni.map(|_| n.remote.clone()),
                vtep: n.vni.and_then(|_| st.vteps.get(&n.vxlan_port).cloned()),
                probes: n.probes.clone(),
            }),
        );
        if let Some(vni) = n.vni {
            cfg.vnis.insert((n.vxlan_port, vni), n.id);
        }
    }
    // A namespace's addresses on its other networks (see `Config::own_addrs`).
    let mut by_netns: FxHashMap<&str, Vec<(PortId, Ipv4Addr)>> = FxHashMap::default();
    for n in st.networks.values() {
        for e in n.endpoints.iter().filter(|e| e.is_up()) {
            by_netns
                .entry(e.netns.as_str())
                .or_default()
                .push((e.port.id, e.port.ip));
        }
    }
    for eps in by_netns.values().filter(|eps| eps.len() > 1) {
        for &(id, ip) in eps {
            let others = eps.iter().map(|e| e.1).filter(|o| *o != ip).collect();
            cfg.own_addrs.insert(id, others);
        }
    }
    for v in st.vteps.values() {
        cfg.ports.insert(v.id, v.clone());
    }
    for p in &st.published {
        let Some(n) = st.networks.get(&p.network) else {
            continue;
        };
        let Some(to_ip) = n.live_endpoint_ip(&p.netns) else {
            continue;
        };
        cfg.published.insert(
            (p.proto, p.host_port),
            Published {
                ip: p.ip,
                net: n.id,
                to_ip,
                to_port: p.ctr_port,
            },
        );
    }
    // A down uplink (its interface is missing) has no device: nothing goes out.
    if let Some(u) = st.uplink.as_ref().filter(|u| u.down.is_none()) {
        cfg.ports.insert(u.port.id, u.port.clone());
        let mut extra_ips: Vec<Ipv4Addr> = st
            .published
            .iter()
            .filter_map(|p| p.ip)
            .filter(|ip| *ip != u.ip)
            .collect();
        extra_ips.sort();
        extra_ips.dedup();
        cfg.uplink = Some(Arc::new(UplinkRt {
            port: u.port.clone(),
            ip: u.ip,
            subnet: u.subnet,
            gateway: u.gateway,
            mac: u.port.mac,
            neigh: u.neigh.clone(),
            extra_ips,
            resolver: u.resolver,
        }));
    }
    cfg
}

impl Switch {
    /// Build and swap in a new datapath snapshot from the control state.
    pub(super) fn sync(&self, st: &State) {
        self.shared.config.store(Arc::new(build(st)));
    }
}

#[cfg(test)]
mod test {
    use super::super::state::testing::{endpoint, network};
    use super::*;
    use crate::model::PublishRequest;

    #[test]
    fn the_snapshot_follows_the_state() {
        let mut st = State::new();
        network(&mut st, "a", "10.1.0.0/24", None);
        network(&mut st, "b", "10.2.0.0/24", None);
        network(&mut st, "ov", "10.3.0.0/24", Some(42));
        let web_a = endpoint(&mut st, "web", "a");
        let web_b = endpoint(&mut st, "web", "b");
        let db = endpoint(&mut st, "DB", "b");
        st.link("a", "b", true).unwrap();
        st.publish(&PublishRequest {
            netns: "web".into(),
            spec: "8080:80".into(),
            network: Some("b".into()),
        })
        .unwrap();
        let cfg = build(&st);
        let (a, b) = (st.net("a").unwrap(), st.net("b").unwrap());
        assert_eq!(cfg.networks.len(), 3);
        assert_eq!(cfg.ports.len(), 3, "three endpoints, no VTEP, no uplink");
        let na = &cfg.networks[&a.id];
        assert_eq!(na.links, vec![b.id]);
        assert_eq!(
            na.ports.iter().map(|p| p.id).collect::<Vec<_>>(),
            [web_a.id]
        );
        // DNS: the network's own names and the linked network's, lower case.
        assert_eq!(na.dns.get("db"), Some(&db.ip));
        assert_eq!(cfg.networks[&b.id].dns.get("db"), Some(&db.ip));
        assert!(na.dns.contains_key("web"));
        assert!(!cfg.networks[&st.net("ov").unwrap().id]
            .dns
            .contains_key("web"));
        // The namespace on two networks may send from either address on both ports.
        assert_eq!(cfg.own_addrs[&web_a.id], vec![web_b.ip]);
        assert_eq!(cfg.own_addrs[&web_b.id], vec![web_a.ip]);
        assert!(!cfg.own_addrs.contains_key(&db.id));
        let p = cfg.published[&(nat::Proto::Tcp, 8080)];
        assert_eq!((p.net, p.to_ip, p.to_port), (b.id, web_b.ip, 80));
        // The overlay network, by VXLAN port and VNI; its VTEP is not open here.
        let ov = st.net("ov").unwrap();
        assert_eq!(cfg.vnis[&(ov.vxlan_port, 42)], ov.id);
        assert!(cfg.networks[&ov.id].remote.is_some());
        assert!(cfg.networks[&ov.id].vtep.is_none());
        assert!(cfg.uplink.is_none());
    }
}
