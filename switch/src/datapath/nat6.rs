//! IPv6 through NAT's verdict (NAT66), called from [`super::ip6`]: the switch's networks, uplink
//! and published ports as the verdict asks about them in IPv6 ([`Topology`] for `Ipv6Addr`),
//! the decision for a routed IPv6 packet (a tracked flow, masquerade to the uplink's IPv6
//! address, a published port, hairpin, plain routing, or a refusal), and a translated packet's
//! way on: into a network, or out of the uplink. The same verdict as IPv4's, over the IPv6
//! connection table; the rewrite is `nat::packet6`'s.

use std::net::Ipv6Addr;

use nat::packet::{IcmpKind, L4Info, ParseError};
use nat::packet6;
use nat::verdict::{self, Target, Topology, Verdict, Zone};
use nat::{FiveTuple, Proto};
use wire::icmpv6::msg_type;
use wire::{EthFrame, Ip6, Parsed, VirtioNetHdr, L3};

use super::ip6::{too_big, Delivery};
use super::{Config, Ctx, Ingress, NetRt, NetRt6, UplinkRt, UplinkRt6};
use crate::counters::{Drop, Event};
use crate::port::Port;

/// The switch's IPv6 networks, uplink and published ports as NAT's verdict asks about them.
impl Topology<Ipv6Addr> for Config {
    fn published(&self, t: &FiveTuple<Ipv6Addr>) -> Option<Target<Ipv6Addr>> {
        self.published_for6(t).map(|(p, to_ip)| Target {
            zone: p.net,
            to_ip,
            to_port: p.to_port,
        })
    }

    fn is_published(&self, proto: Proto, port: u16) -> bool {
        self.published.contains_key(&(proto, port))
    }

    fn gateway(&self, zone: Zone) -> Option<Ipv6Addr> {
        Some(self.networks.get(&zone)?.v6.as_ref()?.gateway)
    }

    fn reachable(&self, from: Zone, dst: Ipv6Addr) -> Option<Zone> {
        let from = self.networks.get(&from)?;
        let holds = |n: &NetRt| n.v6.as_ref().is_some_and(|w| w.subnet.contains(dst));
        if holds(from) {
            return Some(from.id);
        }
        from.links
            .iter()
            .filter_map(|l| self.networks.get(l))
            .find(|n| holds(n))
            .map(|n| n.id)
    }

    fn is_internal_address(&self, dst: Ipv6Addr) -> bool {
        self.networks
            .values()
            .any(|n| n.v6.as_ref().is_some_and(|w| w.subnet.contains(dst)))
    }

    fn is_internal_network(&self, zone: Zone) -> bool {
        self.networks.get(&zone).is_some_and(|n| n.internal)
    }

    fn uplink_ip(&self) -> Option<Ipv6Addr> {
        Some(self.uplink.as_ref()?.v6.as_ref()?.ip)
    }

    fn routes_out(&self) -> bool {
        self.uplink
            .as_ref()
            .and_then(|u| u.v6.as_ref())
            .is_some_and(|u6| u6.routed)
    }
}

/// Where a routed IPv6 packet came from, and so where a refusal is told.
#[derive(Clone, Copy)]
pub(super) enum From6<'a> {
    /// An endpoint's network (told by its gateway).
    Net(&'a NetRt, &'a NetRt6, Ingress<'a>),
    /// The uplink (told from the switch's uplink address).
    Uplink(&'a Port, &'a UplinkRt, &'a UplinkRt6),
}

impl Ctx<'_> {
    /// NAT's verdict for the IPv6 packet in the buffer (parsed as `ip`) from network `from`
    /// (`None`: the uplink), with its translation view. A fragment or a protocol the translator
    /// does not handle is `Err` (the caller may still route it untranslated).
    pub(super) fn verdict6(
        &self,
        from: Option<(&NetRt, &NetRt6)>,
        ip: &Ip6,
    ) -> Result<(L4Info<Ipv6Addr>, Verdict<Ipv6Addr>), ParseError> {
        let info = packet6::classify(ip, EthFrame::payload(self.buf.data()))?;
        let v = verdict::decide(
            self.ct6,
            self.cfg,
            from.map(|(n, _)| n.id),
            from.map(|(_, w)| w.gateway),
            &info,
            self.now,
        );
        Ok((info, v))
    }

    /// Tell the sender of the IPv6 packet in the buffer why it goes no further (ICMPv6 error
    /// `err`), from where it came in.
    pub(super) fn refuse6(&mut self, from: From6<'_>, p: &Parsed, ip: &Ip6, err: (u8, u8, u32)) {
        match from {
            From6::Net(net, v6, ing) => self.icmp6_error(net, v6, ing, p, ip, err),
            From6::Uplink(inp, up, u6) => {
                if self.error_frame(p, ip, (up.mac, u6.ip), err).is_some() {
                    inp.transmit(
                        self.buf.wire_bytes(crate::sys::packet::VNET_HDR_LEN),
                        self.c,
                    );
                }
            }
        }
    }

    /// Send on an IPv6 packet NAT translates to `new` (a tracked flow, or one just opened,
    /// whose endpoint side is network `zone`): into the network that holds the new destination,
    /// or out of the uplink. What stops it (too big for the network, no way out) is told to the
    /// sender before the rewrite, so that the error quotes what the sender sent.
    pub(super) fn forward6_translated(
        &mut self,
        from: From6<'_>,
        p: &Parsed,
        ip: &Ip6,
        info: &L4Info<Ipv6Addr>,
        (new, zone): (FiveTuple<Ipv6Addr>, Option<Zone>),
    ) {
        let cfg = self.cfg;
        let c = self.c;
        let holds =
            |n: &&std::sync::Arc<NetRt>| n.v6.as_ref().is_some_and(|w| w.subnet.contains(new.dst));
        let into = zone
            .and_then(|z| cfg.networks.get(&z))
            .filter(holds)
            .or_else(|| cfg.networks.values().find(holds))
            .and_then(|n| Some((n, n.v6.as_ref()?)));
        if let Some((to, w)) = into {
            if too_big(p, ip, self.buf.vnet, to.mtu) {
                self.refuse6(from, p, ip, (msg_type::PACKET_TOO_BIG, 0, to.mtu));
                return c.drop(Drop::Oversize);
            }
            let (p2, ip2) = self.translate6(p, ip, info, &new);
            if self.deliver6(to, w, &p2, &ip2) != Delivery::Sent {
                c.drop(Drop::NeighborUnknown);
            }
            return;
        }
        let Some((up, u6)) = cfg.uplink6() else {
            return c.drop(Drop::NoRoute);
        };
        if !(u6.subnet.contains(new.dst) || u6.gateway.is_some()) {
            self.refuse6(from, p, ip, (msg_type::DEST_UNREACH, 0, 0));
            return c.drop(Drop::NoRoute);
        }
        let (_, ip2) = self.translate6(p, ip, info, &new);
        self.out6(up, u6, &ip2);
    }

    /// Rewrite the IPv6 packet in the buffer (parsed as `p`, `ip`, `info`) to the tuple `new`;
    /// the packet's parse after the rewrite.
    fn translate6(
        &mut self,
        p: &Parsed,
        ip: &Ip6,
        info: &L4Info<Ipv6Addr>,
        new: &FiveTuple<Ipv6Addr>,
    ) -> (Parsed, Ip6) {
        let partial = self.buf.vnet.flags & VirtioNetHdr::F_NEEDS_CSUM != 0;
        let bytes = EthFrame::payload_mut(self.buf.data_mut());
        packet6::rewrite(bytes, info, new, partial);
        let ip2 = match info.icmp {
            // An error keeps its reporter as source unless the flow's far end reported it.
            IcmpKind::Error { .. } => Ip6 {
                src: if ip.src == info.tuple.src {
                    new.src
                } else {
                    ip.src
                },
                dst: new.dst,
                ..*ip
            },
            _ => ip.translated(new.src, new.sport, new.dst, new.dport),
        };
        (
            Parsed {
                eth: p.eth,
                l3: L3::Ipv6(ip2),
            },
            ip2,
        )
    }

    /// An IPv6 packet from the uplink that routed IPv6 does not take (NAT66, or the uplink's
    /// own address): a tracked flow's answer or a published port, translated into its
    /// network; anything else is dropped.
    pub(super) fn uplink_nat6(
        &mut self,
        inp: &Port,
        (up, u6): (&UplinkRt, &UplinkRt6),
        p: &Parsed,
        ip: &Ip6,
    ) {
        let c = self.c;
        let (info, verdict) = match self.verdict6(None, ip) {
            Ok(v) => v,
            Err(ParseError::Malformed) => return c.drop(Drop::Malformed),
            Err(ParseError::Fragment) => return c.drop(Drop::Fragment),
            Err(ParseError::Unsupported) => return c.drop(Drop::NoRoute),
        };
        let from = From6::Uplink(inp, up, u6);
        Self::flow_log((self.shared, self.cfg), None, &info, &verdict);
        self.note("conntrack", || {
            super::route::describe(self.cfg, None, &info.tuple, &verdict)
        });
        match verdict {
            Verdict::Tracked { tuple, zone, .. } => {
                self.inbound6(from, p, ip, &info, (tuple, Some(zone)))
            }
            Verdict::Opened { tuple, zone, .. } => {
                c.event(Event::DnatFlows);
                self.inbound6(from, p, ip, &info, (tuple, zone));
            }
            Verdict::Refused(nat::verdict::Refusal::Full) => self.conntrack_full("ipv6"),
            _ => c.drop(Drop::NoRoute),
        }
    }

    /// A translated packet from the uplink into its network: one hop spent on the way.
    fn inbound6(
        &mut self,
        from: From6<'_>,
        p: &Parsed,
        ip: &Ip6,
        info: &L4Info<Ipv6Addr>,
        to: (FiveTuple<Ipv6Addr>, Option<Zone>),
    ) {
        if ip.hop_limit <= 1 {
            self.refuse6(from, p, ip, (msg_type::TIME_EXCEEDED, 0, 0));
            return self.c.drop(Drop::Ttl);
        }
        self.forward6_translated(from, p, ip, info, to);
    }

    /// Send the IPv6 packet in the buffer (parsed as `ip`, hop limit checked) out of the
    /// uplink: one hop spent, to the destination on the uplink's prefix or to its IPv6
    /// gateway, resolved by neighbour discovery (the packet waits up to a second while a
    /// solicitation is out). False when there is no next hop (nothing sent).
    pub(super) fn out6(&mut self, up: &UplinkRt, u6: &UplinkRt6, ip: &Ip6) -> bool {
        use crate::sys::packet::VNET_HDR_LEN as PACKET_HDR_LEN;
        let c = self.c;
        let hop = if u6.subnet.contains(ip.dst) {
            ip.dst
        } else if let Some(g) = u6.gateway {
            g
        } else {
            return false;
        };
        if let Some(h) = self.buf.data_mut().get_mut(EthFrame::HEADER_LEN + 7) {
            *h = ip.hop_limit.saturating_sub(1);
        }
        c.event(Event::Routed);
        if self.send_to_uplink_hop(up, &u6.neigh, hop, Drop::NeighborUnknown) {
            let mut ns = [0u8; PACKET_HDR_LEN + 96];
            if let Some(n) = wire::icmpv6::write_ns(&mut ns[PACKET_HDR_LEN..], up.mac, u6.ip, hop) {
                up.port.transmit(&ns[..PACKET_HDR_LEN + n], c);
            }
        }
        true
    }
}
