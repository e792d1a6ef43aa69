//! The datapath's configuration as a pure function of the control state ([`build`]), and the
//! one place that installs it ([`Switch::sync`]): after every change the workers get a whole new
//! [`Config`] snapshot, swapped in atomically; they never take the control lock.

use std::net::Ipv4Addr;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::state::{Net, State};
use super::Switch;
use crate::datapath::{Config, NetRt, NetRt6, Published, UplinkRt};
use crate::fdb::PortId;
use crate::port::Port;

/// The snapshot the workers need for state `st`: networks with their ports, tables, links and
/// DNS names; every port by id; VNIs; published ports; the uplink. A network's [`NetRt`] is
/// built again only when it (or a network linked to it) changed since the last build
/// ([`Net::rt`]); the others are shared with the previous snapshot.
pub(super) fn build(st: &mut State) -> Config {
    st.refresh_snapshots(net_rt);
    let st = &*st;
    let mut cfg = Config::default();
    cfg.networks.reserve(st.networks().len());
    for n in st.networks().values() {
        #[cfg(debug_assertions)]
        if let Some(kept) = &n.rt {
            check_same(kept, &net_rt(st, n), &n.name);
        }
        let net = n.rt.clone().unwrap_or_else(|| Arc::new(net_rt(st, n)));
        for p in &net.ports {
            cfg.ports.insert(p.id, p.clone());
        }
        cfg.networks.insert(n.id, net);
        if let Some(vni) = n.vni {
            cfg.vnis.insert((n.vxlan_port, vni), n.id);
        }
    }
    // A namespace's addresses on its other networks (see `Config::own_addrs`).
    let mut by_netns: FxHashMap<&str, Vec<(PortId, Ipv4Addr)>> = FxHashMap::default();
    for n in st.networks().values() {
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
    // The same for IPv6 addresses (dual-stack networks).
    let mut by_netns6: FxHashMap<&str, Vec<(PortId, std::net::Ipv6Addr)>> = FxHashMap::default();
    for n in st.networks().values() {
        for e in n.endpoints.iter().filter(|e| e.is_up()) {
            if let Some(ip6) = e.port.ip6 {
                by_netns6
                    .entry(e.netns.as_str())
                    .or_default()
                    .push((e.port.id, ip6));
            }
        }
    }
    for eps in by_netns6.values().filter(|eps| eps.len() > 1) {
        for &(id, ip) in eps {
            let others = eps.iter().map(|e| e.1).filter(|o| *o != ip).collect();
            cfg.own_addrs6.insert(id, others);
        }
    }
    for v in st.vteps().values() {
        cfg.ports.insert(v.id, v.clone());
    }
    for p in &st.published {
        let Some(n) = st.networks().get(&p.network) else {
            continue;
        };
        let Some(to_ip) = n.live_endpoint_ip(&p.netns) else {
            continue;
        };
        cfg.published.insert(
            (p.proto, p.host_port),
            Published {
                ip: p.ip4(),
                v4: p.v4(),
                net: n.id,
                to_ip,
                to_ip6: p.v6().then(|| n.endpoint_ip6(&p.netns)).flatten(),
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
            .filter_map(|p| p.ip4())
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
            v6: u.v6.map(|v| crate::datapath::UplinkRt6 {
                ip: v.ip,
                subnet: v.subnet,
                gateway: v.gateway,
                link_local: wire::icmpv6::link_local_eui64(u.port.mac),
                neigh: u.neigh6.clone(),
                routed: v.routed,
            }),
        }));
    }
    cfg
}

/// Network `n`'s snapshot.
fn net_rt(st: &State, n: &Net) -> NetRt {
    // Pending endpoints have no device: the datapath does not see them.
    let ports: Vec<Arc<Port>> = n
        .endpoints
        .iter()
        .filter(|e| e.is_up())
        .map(|e| e.port.clone())
        .collect();
    let linked = || n.links.iter().filter_map(|l| st.networks().get(l));
    NetRt {
        id: n.id,
        name: n.name.as_str().into(),
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
        dns: {
            let mut t = crate::dns::Table::default();
            for (name, ip) in n.names().chain(linked().flat_map(|l| l.names())) {
                t.insert4(name, ip);
            }
            for (name, ip) in n.names6().chain(linked().flat_map(|l| l.names6())) {
                t.insert6(name, ip);
            }
            t
        },
        vni: n.vni,
        peers: n.all_peers(),
        remote: n.vni.map(|_| n.remote.clone()),
        vtep: n.vni.and_then(|_| st.vteps().get(&n.vxlan_port).cloned()),
        probes: n.probes.clone(),
        v6: n.v6.as_ref().map(|v| NetRt6 {
            subnet: v.subnet,
            gateway: v.gateway,
            link_local: wire::icmpv6::link_local_eui64(n.gateway_mac),
            neigh: n
                .endpoints
                .iter()
                .filter(|e| e.is_up())
                .flat_map(|e| {
                    let mac = e.port.mac;
                    let slaac = (v.subnet.prefix_len() == 64)
                        .then(|| wire::icmpv6::eui64_in(v.subnet.network(), mac));
                    e.port
                        .ip6
                        .into_iter()
                        .chain(slaac)
                        .chain(std::iter::once(wire::icmpv6::link_local_eui64(mac)))
                        .map(move |ip| (ip, mac))
                })
                // Endpoints on other nodes of a cluster network, by their derived address.
                .chain(
                    n.remote_eps
                        .values()
                        .filter_map(|r| Some((n.derived6(r.ip)?, r.mac))),
                )
                .collect(),
            learned: n.neigh6.clone(),
            probes: n.probes6.clone(),
        }),
    }
}

/// Debug builds (the tests) check every snapshot kept from an earlier build against one built
/// afresh: a change that did not mark its network changed is caught where it happens.
/// [`check_same`] for the IPv6 sides: equal tables, the same shared ones.
#[cfg(debug_assertions)]
fn same_v6(a: Option<&NetRt6>, b: Option<&NetRt6>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.subnet == b.subnet
                && a.gateway == b.gateway
                && a.link_local == b.link_local
                && a.neigh == b.neigh
                && Arc::ptr_eq(&a.learned, &b.learned)
                && Arc::ptr_eq(&a.probes, &b.probes)
        }
        _ => false,
    }
}

#[cfg(debug_assertions)]
fn check_same(kept: &NetRt, fresh: &NetRt, name: &str) {
    let ptr = |p: &Option<Arc<Port>>| p.as_ref().map(Arc::as_ptr);
    let same = kept.id == fresh.id
        && kept.name == fresh.name
        && kept.subnet == fresh.subnet
        && kept.gateway_ip == fresh.gateway_ip
        && kept.gateway_mac == fresh.gateway_mac
        && kept.ports.len() == fresh.ports.len()
        && kept
            .ports
            .iter()
            .zip(&fresh.ports)
            .all(|(a, b)| Arc::ptr_eq(a, b))
        && Arc::ptr_eq(&kept.fdb, &fresh.fdb)
        && Arc::ptr_eq(&kept.neigh, &fresh.neigh)
        && Arc::ptr_eq(&kept.taps, &fresh.taps)
        && kept.internal == fresh.internal
        && kept.icc == fresh.icc
        && kept.links == fresh.links
        && kept.mtu == fresh.mtu
        && kept.dns == fresh.dns
        && kept.vni == fresh.vni
        && kept.peers == fresh.peers
        && kept.remote.as_ref().map(Arc::as_ptr) == fresh.remote.as_ref().map(Arc::as_ptr)
        && ptr(&kept.vtep) == ptr(&fresh.vtep)
        && Arc::ptr_eq(&kept.probes, &fresh.probes)
        && same_v6(kept.v6.as_ref(), fresh.v6.as_ref());
    assert!(
        same,
        "the datapath snapshot of network {name} is stale: a change did not mark it changed"
    );
}

impl Switch {
    /// Build and swap in a new datapath snapshot from the control state.
    pub(super) fn sync(&self, st: &mut State) {
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
        let cfg = build(&mut st);
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
        assert_eq!(na.dns.get("db").and_then(|f| f.a), Some(db.ip));
        assert_eq!(
            cfg.networks[&b.id].dns.get("db").and_then(|f| f.a),
            Some(db.ip)
        );
        assert!(na.dns.get("web").is_some());
        assert!(cfg.networks[&st.net("ov").unwrap().id]
            .dns
            .get("web")
            .is_none());
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

    #[test]
    fn a_change_builds_again_only_the_networks_it_touched() {
        let mut st = State::new();
        for (name, subnet) in [
            ("a", "10.1.0.0/24"),
            ("b", "10.2.0.0/24"),
            ("c", "10.3.0.0/24"),
        ] {
            network(&mut st, name, subnet, None);
        }
        st.link("a", "b", true).unwrap();
        let id = |st: &State, n: &str| st.net(n).unwrap().id;
        let (a, b, c) = (id(&st, "a"), id(&st, "b"), id(&st, "c"));
        let first = build(&mut st);
        // An endpoint on `a`: `a` and the network linked to it (its DNS names) are new; `c` is
        // the same snapshot as before.
        let web = endpoint(&mut st, "web", "a");
        let second = build(&mut st);
        assert!(!Arc::ptr_eq(&first.networks[&a], &second.networks[&a]));
        assert!(!Arc::ptr_eq(&first.networks[&b], &second.networks[&b]));
        assert!(Arc::ptr_eq(&first.networks[&c], &second.networks[&c]));
        assert!(second.networks[&b].dns.get("web").is_some());
        // Nothing changed: nothing is built.
        let third = build(&mut st);
        for n in [a, b, c] {
            assert!(Arc::ptr_eq(&second.networks[&n], &third.networks[&n]));
        }
        // A detached endpoint's port is held by no snapshot the state keeps (its TAP closes
        // when the last snapshot the workers hold goes).
        drop(st.take_endpoint("web", "a").unwrap());
        drop((first, second, third));
        assert_eq!(
            Arc::strong_count(&web),
            1,
            "the state holds no snapshot of a stale network"
        );
        let third = build(&mut st);
        assert!(third.networks[&b].dns.get("web").is_none());
        // A removed network leaves the snapshot and its links.
        st.link("a", "b", false).unwrap();
        st.remove_network("b").unwrap();
        let fourth = build(&mut st);
        assert_eq!(fourth.networks.len(), 2);
        assert!(fourth.networks[&a].links.is_empty());
        assert!(Arc::ptr_eq(&third.networks[&c], &fourth.networks[&c]));
    }
}
