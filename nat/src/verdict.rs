//! The NAT verdict for a routed packet: an existing flow's translation, or the decision for a
//! packet without one (masquerade, a published port, hairpin, plain routing between linked
//! networks, or a refusal and why), as a function of the packet's tuple, the switch's topology
//! and the connection table. The switch's router performs what it returns.

use std::net::Ipv4Addr;

use crate::conntrack::{Conntrack, CtError};
use crate::packet::{Addr, FiveTuple, IcmpKind, L4Info, Proto};
use crate::FlowDir;

/// A network, as the switch numbers them (the conntrack zone of its flows).
pub type Zone = u32;

/// A published port: traffic for it on the uplink side goes to `to_ip:to_port` in `zone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<A: Addr = Ipv4Addr> {
    /// The endpoint's network.
    pub zone: Zone,
    /// The endpoint's address.
    pub to_ip: A,
    /// The endpoint's port.
    pub to_port: u16,
}

/// What the verdict needs to know of the switch's networks, uplink and published ports, in
/// address family `A`.
pub trait Topology<A: Addr = Ipv4Addr> {
    /// The published port a packet with tuple `t` (TCP or UDP) addressed to the uplink side hits.
    fn published(&self, t: &FiveTuple<A>) -> Option<Target<A>>;
    /// Whether `port` of `proto` is published on the uplink (masquerade must not take it).
    fn is_published(&self, proto: Proto, port: u16) -> bool;
    /// The gateway address of network `zone`.
    fn gateway(&self, zone: Zone) -> Option<A>;
    /// The network `dst` is in as seen from network `from`: `from` itself or one linked to it.
    fn reachable(&self, from: Zone, dst: A) -> Option<Zone>;
    /// Whether any network holds `dst`.
    fn is_internal_address(&self, dst: A) -> bool;
    /// Whether network `zone` may not leave through the uplink (`--internal`).
    fn is_internal_network(&self, zone: Zone) -> bool;
    /// The uplink's address, when an uplink is set.
    fn uplink_ip(&self) -> Option<A>;
    /// Whether traffic to the outside leaves untranslated (routed: the operator owns the
    /// networks' prefixes and routes them to the switch) rather than masqueraded.
    fn routes_out(&self) -> bool {
        false
    }
}

/// How a packet that opened a flow is translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Masquerade through the uplink.
    Snat,
    /// A published port, from the uplink or (hairpin) from an endpoint.
    Dnat,
}

/// What to do with a routed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<A: Addr = Ipv4Addr> {
    /// A tracked flow: rewrite to `tuple`; the destination is in `zone` when known.
    Tracked {
        /// The translated tuple.
        tuple: FiveTuple<A>,
        /// The flow's network.
        zone: Zone,
        /// The TCP state this packet moved the flow to, when it changed.
        state: Option<crate::conntrack::TcpState>,
    },
    /// A new flow was created: rewrite to `tuple`, into network `zone` when the destination is
    /// an endpoint.
    Opened {
        /// The translated tuple.
        tuple: FiveTuple<A>,
        /// Which kind of translation.
        kind: Opened,
        /// The destination's network, when it is an endpoint.
        zone: Option<Zone>,
    },
    /// Route untranslated (between linked networks, or out of a routed uplink), into `zone`
    /// when known.
    Route {
        /// The destination's network.
        zone: Option<Zone>,
    },
    /// Addressed to the gateway of the network it came from, and not a tracked flow: the
    /// gateway's own services (DNS) answer it.
    Gateway,
    /// Refused.
    Refused(Refusal),
}

/// Why a packet is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Nowhere to send it (no uplink, no published port, an ICMP error without a flow, ...).
    NoRoute,
    /// Policy forbids it (networks not linked, an internal network to the uplink).
    Policy,
    /// The connection table is full (or no source port is free).
    Full,
}

impl From<CtError> for Refusal {
    fn from(_: CtError) -> Refusal {
        Refusal::Full
    }
}

/// The verdict for the packet parsed as `info`, arriving from network `from` (`None`: the
/// uplink) at `now`. A tracked flow is refreshed (TCP state, timers); a new flow is created in
/// `ct` when the verdict opens one.
pub fn decide<A: Addr>(
    ct: &Conntrack<A>,
    topo: &impl Topology<A>,
    from: Option<Zone>,
    gateway: Option<A>,
    info: &L4Info<A>,
    now: u64,
) -> Verdict<A> {
    if let Some((flow, dir)) = ct.lookup(&info.tuple, now) {
        let state = flow.seen(dir, info.tcp_flags, info.len, now);
        return Verdict::Tracked {
            tuple: flow.translate(dir),
            zone: flow.zone,
            state,
        };
    }
    if from.is_some() && gateway == Some(info.tuple.dst) {
        return Verdict::Gateway;
    }
    match open(ct, topo, from, info, now) {
        Ok(v) => v,
        Err(r) => Verdict::Refused(r),
    }
}

/// The decision for a packet without a flow.
fn open<A: Addr>(
    ct: &Conntrack<A>,
    topo: &impl Topology<A>,
    from: Option<Zone>,
    info: &L4Info<A>,
    now: u64,
) -> Result<Verdict<A>, Refusal> {
    let t = info.tuple;
    let is_error = matches!(info.icmp, IcmpKind::Error { .. });
    let published = || {
        (!is_error && t.proto != Proto::Icmp)
            .then(|| topo.published(&t))
            .flatten()
    };
    let reserved = |proto, port| topo.is_published(proto, port);
    let opened = |f: std::sync::Arc<crate::Flow<A>>, kind, zone| {
        // The packet that made the flow is its first (the flow log's counts).
        f.count(FlowDir::Original, info.len);
        Verdict::Opened {
            tuple: f.translate(FlowDir::Original),
            kind,
            zone,
        }
    };
    let Some(net) = from else {
        // From the uplink: only published ports open a flow.
        let p = published().ok_or(Refusal::NoRoute)?;
        let f = ct.create_dnat(t, p.to_ip, p.to_port, p.zone, now)?;
        return Ok(opened(f, Opened::Dnat, Some(p.zone)));
    };
    if let Some(p) = published() {
        // Hairpin: an endpoint reaching a published port through the uplink address. The source
        // becomes the target network's gateway so the answer comes back through the switch.
        let gw = topo.gateway(p.zone).ok_or(Refusal::NoRoute)?;
        let f = ct.create_snat(t, gw, Some((p.to_ip, p.to_port)), net, reserved, now)?;
        return Ok(opened(f, Opened::Dnat, Some(p.zone)));
    }
    if let Some(zone) = topo.reachable(net, t.dst) {
        return Ok(Verdict::Route { zone: Some(zone) });
    }
    if topo.is_internal_address(t.dst) {
        return Err(Refusal::Policy);
    }
    if is_error && !topo.routes_out() {
        return Err(Refusal::NoRoute);
    }
    if topo.is_internal_network(net) {
        return Err(Refusal::Policy);
    }
    let up = topo.uplink_ip().ok_or(Refusal::NoRoute)?;
    if t.dst == up {
        return Err(Refusal::NoRoute);
    }
    if topo.routes_out() {
        return Ok(Verdict::Route { zone: None });
    }
    let f = ct.create_snat(t, up, None, net, reserved, now)?;
    Ok(opened(f, Opened::Snat, None))
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::Timeouts;

    const GW_A: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 1);
    const A: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(172, 21, 0, 2);
    const UP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
    const OUT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

    /// Network 1 is 172.20.0.0/24, network 2 172.21.0.0/24 (linked to 1 when `linked`), 8080
    /// on the uplink is published to A:80; network 2 is internal.
    struct Topo {
        linked: bool,
    }

    fn zone_of(ip: Ipv4Addr) -> Option<Zone> {
        match ip.octets()[..3] {
            [172, 20, 0] => Some(1),
            [172, 21, 0] => Some(2),
            _ => None,
        }
    }

    impl Topology for Topo {
        fn published(&self, t: &FiveTuple) -> Option<Target> {
            (t.dst == UP && t.dport == 8080 && t.proto == Proto::Tcp).then_some(Target {
                zone: 1,
                to_ip: A,
                to_port: 80,
            })
        }
        fn is_published(&self, proto: Proto, port: u16) -> bool {
            proto == Proto::Tcp && port == 8080
        }
        fn gateway(&self, zone: Zone) -> Option<Ipv4Addr> {
            (zone == 1).then_some(GW_A)
        }
        fn reachable(&self, from: Zone, dst: Ipv4Addr) -> Option<Zone> {
            zone_of(dst).filter(|&z| z == from || self.linked)
        }
        fn is_internal_address(&self, dst: Ipv4Addr) -> bool {
            zone_of(dst).is_some()
        }
        fn is_internal_network(&self, zone: Zone) -> bool {
            zone == 2
        }
        fn uplink_ip(&self) -> Option<Ipv4Addr> {
            Some(UP)
        }
    }

    fn info(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> L4Info {
        L4Info {
            len: 100,
            tuple: FiveTuple {
                proto: Proto::Tcp,
                src,
                sport,
                dst,
                dport,
            },
            tcp_flags: wire::l4::tcp_flags::SYN,
            icmp: IcmpKind::NotIcmp,
            l4: 20,
            ttl: 64,
        }
    }

    #[test]
    fn every_branch_of_the_new_flow_decision() {
        let ct = Conntrack::new(100, Timeouts::default());
        let topo = Topo { linked: false };
        let d = |from, i: &L4Info| {
            decide(
                &ct,
                &topo,
                from,
                Some(GW_A).filter(|_| from == Some(1)),
                i,
                0,
            )
        };
        // Masquerade out of the uplink.
        match d(Some(1), &info(A, 40000, OUT, 443)) {
            Verdict::Opened {
                tuple,
                kind: Opened::Snat,
                zone: None,
            } => assert_eq!(tuple.src, UP),
            v => panic!("masquerade: {v:?}"),
        }
        // The reply finds the flow.
        let back = decide(
            &ct,
            &topo,
            None,
            None,
            &info(OUT, 443, UP, ct.flows(None)[0].reply.dport),
            1,
        );
        assert!(
            matches!(back, Verdict::Tracked { tuple, zone: 1, .. } if tuple.dst == A),
            "{back:?}"
        );
        // A published port from outside, and hairpin from inside.
        match d(None, &info(OUT, 5000, UP, 8080)) {
            Verdict::Opened {
                tuple,
                kind: Opened::Dnat,
                zone: Some(1),
            } => {
                assert_eq!((tuple.dst, tuple.dport, tuple.src), (A, 80, OUT))
            }
            v => panic!("dnat: {v:?}"),
        }
        match d(Some(1), &info(A, 5001, UP, 8080)) {
            Verdict::Opened {
                tuple,
                kind: Opened::Dnat,
                zone: Some(1),
            } => {
                assert_eq!((tuple.src, tuple.dst), (GW_A, A))
            }
            v => panic!("hairpin: {v:?}"),
        }
        // Not published, from outside; to the gateway itself; to an unlinked network; from an
        // internal network to the outside.
        assert_eq!(
            d(None, &info(OUT, 5000, UP, 22)),
            Verdict::Refused(Refusal::NoRoute)
        );
        assert_eq!(d(Some(1), &info(A, 5353, GW_A, 53)), Verdict::Gateway);
        assert_eq!(
            d(Some(1), &info(A, 5000, B, 80)),
            Verdict::Refused(Refusal::Policy)
        );
        assert_eq!(
            d(Some(2), &info(B, 5000, OUT, 80)),
            Verdict::Refused(Refusal::Policy)
        );
        // Linked networks route untranslated.
        let linked = Topo { linked: true };
        let v = decide(&ct, &linked, Some(1), Some(GW_A), &info(A, 5002, B, 80), 0);
        assert_eq!(v, Verdict::Route { zone: Some(2) });
    }

    #[test]
    fn a_full_table_refuses_new_flows() {
        let ct = Conntrack::new(1, Timeouts::default());
        let topo = Topo { linked: false };
        let udp = |src, sport, dst, dport| L4Info {
            len: 100,
            tuple: FiveTuple {
                proto: Proto::Udp,
                ..info(src, sport, dst, dport).tuple
            },
            tcp_flags: 0,
            ..info(src, sport, dst, dport)
        };
        let Verdict::Opened { tuple, .. } =
            decide(&ct, &topo, Some(1), None, &udp(A, 1, OUT, 53), 0)
        else {
            panic!("the first flow opens");
        };
        // Answered, the flow is assured: early drop may not evict it for a newcomer.
        let reply = udp(OUT, 53, tuple.src, tuple.sport);
        assert!(matches!(
            decide(&ct, &topo, None, None, &reply, 1),
            Verdict::Tracked { .. }
        ));
        assert_eq!(
            decide(&ct, &topo, Some(1), None, &udp(A, 2, OUT, 53), 2),
            Verdict::Refused(Refusal::Full)
        );
    }
}
