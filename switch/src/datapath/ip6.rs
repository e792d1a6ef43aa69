//! IPv6 on dual-stack networks, called from the L2 stage: what the gateway answers itself
//! (neighbour solicitations for its addresses and, ND suppression, for known endpoints; router
//! solicitations; echo requests), routing between linked networks (hop limit, packet too big,
//! next hop from the network's endpoint table), and the ICMPv6 errors the gateway sends; and on
//! an uplink with an IPv6 address, routed IPv6 (no translation) out of it and back in, with
//! next hops resolved by neighbour discovery.

use std::net::Ipv6Addr;

use wire::icmpv6::{self, msg_type, NdKind};
use wire::ipv6::next_header;
use wire::{ethernet, EthFrame, Ip6, MacAddr, Parsed, VirtioNetHdr, L4};

use nat::packet::ParseError;
use nat::verdict::{Opened, Refusal, Topology, Verdict};

use super::nat6::From6;
use super::{Config, Ctx, Ingress, NetRt, NetRt6, UplinkRt};
use crate::counters::{Drop, Event};
use crate::local::{self, NotAnswered};
use crate::port::NetId;
use crate::port::Port;
use crate::sys::packet::VNET_HDR_LEN as PACKET_HDR_LEN;

/// Router lifetime the gateway advertises (seconds): a default router while it runs.
const ROUTER_LIFETIME: u16 = 1800;

/// All-nodes multicast (ff02::1), where answers to the unspecified address go.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// What [`Ctx::deliver6`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// Sent towards the endpoint.
    Sent,
    /// Not known yet: the gateway is asking (an overlay network).
    Probing,
    /// No endpoint has the address.
    Unknown,
}

/// The ICMPv6 message of a parsed IPv6 frame: its bytes in `frame`.
fn icmp6<'f>(frame: &'f [u8], ip: &Ip6) -> Option<&'f [u8]> {
    frame.get(EthFrame::HEADER_LEN + ip.header_len..EthFrame::HEADER_LEN + ip.total_len)
}

/// True when the IPv6 packet (parsed as `p`, `ip`) is larger than `mtu`; for a TCP
/// super-frame (offload metadata `vnet`), when its segments would be.
pub(super) fn too_big(p: &Parsed, ip: &Ip6, vnet: VirtioNetHdr, mtu: u32) -> bool {
    if vnet.gso_type == 0 {
        ip.total_len > mtu as usize
    } else {
        p.tcp_headers_len()
            .is_none_or(|h| h - EthFrame::HEADER_LEN + usize::from(vnet.gso_size) > mtu as usize)
    }
}

/// True when `ip` is one of the addresses port security lets an endpoint with `mac` and `ip6`
/// send from on network `v6`: its configured address, its link-local and (on a /64) its
/// SLAAC address, or the unspecified address (duplicate address detection).
#[inline]
pub(super) fn own_ip6(ip: Ipv6Addr, mac: MacAddr, ip6: Option<Ipv6Addr>, v6: &NetRt6) -> bool {
    Some(ip) == ip6
        || ip.is_unspecified()
        || ip == icmpv6::link_local_eui64(mac)
        || (v6.subnet.prefix_len() == 64 && ip == icmpv6::eui64_in(v6.subnet.network(), mac))
}

/// Port security for IPv6 neighbour discovery from an endpoint: a neighbour advertisement only
/// for its own addresses, no router advertisement or redirect (only the gateway routes).
/// Invalid messages (hop limit not 255, bad options) are malformed.
pub(super) fn nd_refusal(
    frame: &[u8],
    ip: &Ip6,
    mac: MacAddr,
    ip6: Option<Ipv6Addr>,
    v6: Option<&NetRt6>,
) -> Option<Drop> {
    let L4::Icmp { msg_type: t, .. } = ip.l4 else {
        return None;
    };
    if !(msg_type::ROUTER_SOLICIT..=msg_type::REDIRECT).contains(&t) {
        return None;
    }
    let nd = icmp6(frame, ip)
        .ok_or(Drop::Malformed)
        .and_then(|m| icmpv6::parse_nd(m, ip.hop_limit).map_err(|_| Drop::Malformed))
        .and_then(|nd| {
            nd.check_ip(ip.src, ip.dst)
                .map(|()| nd)
                .map_err(|_| Drop::Malformed)
        });
    match nd {
        Err(d) => Some(d),
        Ok(nd) => match nd.kind {
            NdKind::Ra | NdKind::Redirect => Some(Drop::RogueRouter),
            NdKind::Na => {
                let target = nd.target.unwrap_or(Ipv6Addr::UNSPECIFIED);
                let own = match v6 {
                    Some(v6) => own_ip6(target, mac, ip6, v6) && !target.is_unspecified(),
                    None => target == icmpv6::link_local_eui64(mac),
                };
                (!own || nd.target_mac.is_some_and(|m| m != mac)).then_some(Drop::Spoofed)
            }
            NdKind::Rs | NdKind::Ns => None,
        },
    }
}

impl Ctx<'_> {
    /// Neighbour and router solicitations the switch answers itself: for the gateway's
    /// addresses, for known endpoints (ND suppression), and router solicitations with a router
    /// advertisement. Returns true when the frame was consumed.
    pub(super) fn nd(&mut self, net: &NetRt, v6: &NetRt6, ing: Ingress<'_>, p: &Parsed) -> bool {
        let Some(ip) = p.ip6() else { return false };
        let L4::Icmp { msg_type: t, .. } = ip.l4 else {
            return false;
        };
        let na = t == msg_type::NEIGHBOR_ADVERT;
        if !na && t != msg_type::NEIGHBOR_SOLICIT && t != msg_type::ROUTER_SOLICIT {
            return false;
        }
        let nd = icmp6(self.buf.data(), ip)
            .and_then(|m| icmpv6::parse_nd(m, ip.hop_limit).ok())
            .filter(|nd| nd.check_ip(ip.src, ip.dst).is_ok());
        let Some(nd) = nd else {
            self.c.drop(Drop::Malformed);
            return true;
        };
        // Learn what neighbours say of themselves (port security has checked local senders):
        // the next hops of endpoints the control plane does not know (on other hosts).
        let said = match nd.kind {
            NdKind::Na => nd.target.zip(nd.target_mac),
            NdKind::Ns if !ip.src.is_unspecified() => Some(ip.src).zip(nd.source_mac),
            _ => None,
        };
        if let Some((a, m)) = said.filter(|(a, _)| v6.subnet.is_host(*a) && !v6.is_gateway(*a)) {
            if v6.learned.get(&a).map(|e| *e) != Some(m)
                && (v6.learned.len() < crate::datapath::NEIGH6_LEARNED_MAX
                    || v6.learned.contains_key(&a))
            {
                v6.learned.insert(a, m);
            }
        }
        if na {
            if p.eth.dst != net.gateway_mac {
                return false; // for an endpoint: forwarded as usual
            }
            // An answer to the gateway's probe. The gateway is the same MAC on every host of an
            // overlay network, so one a host sent ends here: replicate it to the peers too.
            if matches!(ing, Ingress::Local(_)) && !net.peers.is_empty() {
                self.encap(net, &net.peers, p);
            }
            return true;
        }
        let (to_ip, to_mac, solicited) = if ip.src.is_unspecified() {
            (ALL_NODES, icmpv6::multicast_mac(ALL_NODES), false)
        } else {
            (ip.src, p.eth.src, true)
        };
        let mut out = [0u8; 128];
        let n = match nd.kind {
            NdKind::Rs => {
                self.c.event(Event::RouterAdverts);
                icmpv6::write_ra(
                    &mut out,
                    icmpv6::Addrs {
                        eth_src: net.gateway_mac,
                        eth_dst: to_mac,
                        ip_src: v6.link_local,
                        ip_dst: to_ip,
                    },
                    v6.subnet.network(),
                    v6.subnet.prefix_len(),
                    v6.subnet.prefix_len() == 64,
                    net.mtu,
                    ROUTER_LIFETIME,
                )
            }
            _ => {
                let Some(target) = nd.target else {
                    return false;
                };
                if v6.is_gateway(target) {
                    self.c.event(Event::NdGateway);
                    icmpv6::write_na(
                        &mut out,
                        icmpv6::Addrs {
                            eth_src: net.gateway_mac,
                            eth_dst: to_mac,
                            ip_src: target,
                            ip_dst: to_ip,
                        },
                        target,
                        net.gateway_mac,
                        true,
                        solicited,
                    )
                } else {
                    // Suppression: only for an endpoint that is not the asker, to an asker
                    // that has an address (address probes must reach the holder), and
                    // endpoints may talk to each other.
                    let Some(&mac) = v6.neigh.get(&target) else {
                        return false;
                    };
                    if mac == p.eth.src
                        || !solicited
                        || !net.icc
                        || matches!(ing, Ingress::Remote(_))
                    {
                        return false;
                    }
                    self.c.event(Event::NdSuppressed);
                    icmpv6::write_na(
                        &mut out,
                        icmpv6::Addrs {
                            eth_src: mac,
                            eth_dst: to_mac,
                            ip_src: target,
                            ip_dst: to_ip,
                        },
                        target,
                        mac,
                        false,
                        true,
                    )
                }
            }
        };
        let Some(n) = n else { return false };
        self.buf.set(&out[..n]);
        self.reply(net, ing);
        true
    }

    /// An IPv6 frame to the gateway MAC: an echo request to the gateway answered, the rest
    /// routed to a linked network or refused with an ICMPv6 error.
    pub(super) fn for_gateway6(&mut self, net: &NetRt, ing: Ingress<'_>, p: &Parsed, ip: Ip6) {
        let c = self.c;
        let Some(v6) = &net.v6 else {
            return c.drop(Drop::NoRoute);
        };
        match local::icmp6_echo_reply_in_place(
            self.buf.data_mut(),
            p,
            |a| v6.is_gateway(a),
            net.gateway_mac,
        ) {
            Ok(len) => {
                c.event(Event::IcmpGateway);
                self.buf.set_len(len);
                self.reply(net, ing);
            }
            Err(NotAnswered::Malformed) => c.drop(Drop::Malformed),
            Err(NotAnswered::NotForUs) if ip.dst.is_multicast() => c.drop(Drop::NoRoute),
            Err(NotAnswered::NotForUs) => self.route6(net, v6, ing, p, ip),
        }
    }

    /// UDP to port 53 of the gateway's IPv6 address: answered from the network's names, as
    /// over IPv4 (names it does not know get SERVFAIL: there is no IPv6 way upstream yet).
    /// Anything else to the gateway is dropped.
    fn dns6(&mut self, net: &NetRt, ing: Ingress<'_>, p: &Parsed, ip: &Ip6) {
        use super::route::DNS_MAX;
        const HDR: usize = EthFrame::HEADER_LEN + wire::ipv6::HEADER_LEN + wire::l4::UDP_HEADER_LEN;
        let L4::Udp { sport, dport: 53 } = ip.l4 else {
            return self.c.drop(Drop::NoRoute);
        };
        let start = EthFrame::HEADER_LEN + ip.header_len + wire::l4::UDP_HEADER_LEN;
        let end = EthFrame::HEADER_LEN + ip.total_len;
        let Some(query) = self.buf.data().get(start..end) else {
            return self.c.drop(Drop::Malformed);
        };
        let mut out = [0u8; HDR + DNS_MAX];
        let n = match crate::dns::answer(query, &net.dns, false, &mut out[HDR..]) {
            crate::dns::Verdict::Answered(n) => n,
            _ => return self.c.drop(Drop::Malformed),
        };
        self.c.event(Event::DnsAnswered);
        let udp_len = wire::l4::UDP_HEADER_LEN + n;
        wire::l4::write_udp(
            (&mut out[HDR - 8..HDR]).try_into().expect("8 bytes"),
            53,
            sport,
            n,
        );
        wire::l4::fill_checksum6(ip.dst, ip.src, next_header::UDP, &mut out[HDR - 8..HDR + n]);
        wire::ipv6::Ipv6Header {
            src: ip.dst,
            dst: ip.src,
            next_header: next_header::UDP,
            payload_len: udp_len,
            hop_limit: 64,
        }
        .write(
            (&mut out[EthFrame::HEADER_LEN..EthFrame::HEADER_LEN + 40])
                .try_into()
                .expect("40 bytes"),
        );
        out[12..14].copy_from_slice(&[0x86, 0xdd]);
        ethernet::set_addrs(&mut out, net.gateway_mac, p.eth.src);
        self.buf.set(&out[..HDR + n]);
        self.reply(net, ing);
    }

    /// Route an IPv6 packet from `net` through NAT's verdict, as IPv4 is: a tracked flow's
    /// translation, a new masquerade (NAT66), published-port or hairpin flow, plain routing to
    /// `net` itself or a network linked to it, out of a routed uplink, the gateway's DNS, or a
    /// refusal answered with an ICMPv6 error. Hop limit, the target network's MTU and the next
    /// hop from the target's endpoint table are checked on the way. Fragments and protocols
    /// the translator does not handle are routed untranslated where no translation is needed.
    /// The unspecified and link-local addresses are never routed (RFC 4291 §2.5.2, §2.5.6).
    fn route6(&mut self, net: &NetRt, v6: &NetRt6, ing: Ingress<'_>, p: &Parsed, ip: Ip6) {
        let cfg = self.cfg;
        let c = self.c;
        let to_gateway = v6.is_gateway(ip.dst);
        if ip.dst == v6.link_local || (to_gateway && icmpv6::is_link_local(ip.src)) {
            // The gateway's own services, asked from or at a link-local address.
            return self.dns6(net, ing, p, &ip);
        }
        if ip.src.is_unspecified() || icmpv6::is_link_local(ip.src) || icmpv6::is_link_local(ip.dst)
        {
            return c.drop(Drop::NoRoute);
        }
        if ip.hop_limit <= 1 && !to_gateway {
            self.icmp6_error(net, v6, ing, p, &ip, (msg_type::TIME_EXCEEDED, 0, 0));
            return c.drop(Drop::Ttl);
        }
        let from = From6::Net(net, v6, ing);
        let (info, verdict) = match self.verdict6(Some((net, v6)), &ip) {
            Ok((info, v)) => (Some(info), v),
            Err(ParseError::Malformed) => return c.drop(Drop::Malformed),
            Err(e) => match untranslated6(cfg, net, v6, ip.dst) {
                Some(v) => (None, v),
                None if e == ParseError::Fragment => return c.drop(Drop::Fragment),
                None => return c.drop(Drop::Unsupported),
            },
        };
        if ip.hop_limit <= 1 && !matches!(verdict, Verdict::Gateway) {
            // To the gateway's address, yet not for the gateway: a tracked flow's packet (the
            // answer of a hairpin flow), which has a hop to go.
            self.icmp6_error(net, v6, ing, p, &ip, (msg_type::TIME_EXCEEDED, 0, 0));
            return c.drop(Drop::Ttl);
        }
        if let Some(info) = &info {
            Self::flow_log((self.shared, cfg), Some(net.id), info, &verdict);
            self.note("conntrack", || {
                super::route::describe(cfg, Some(net), &info.tuple, &verdict)
            });
        }
        let translated = match verdict {
            Verdict::Gateway => return self.dns6(net, ing, p, &ip),
            Verdict::Tracked { tuple, zone, .. } => (tuple, Some(zone)),
            Verdict::Opened { tuple, kind, zone } => {
                c.event(match kind {
                    Opened::Snat => Event::SnatFlows,
                    Opened::Dnat => Event::DnatFlows,
                });
                (tuple, zone)
            }
            Verdict::Route { zone: Some(z) } => return self.linked6(net, v6, ing, p, ip, z),
            Verdict::Route { zone: None } => {
                let Some((up, u6)) = cfg.uplink6() else {
                    return c.drop(Drop::NoRoute);
                };
                if !self.out6(up, u6, &ip) {
                    self.icmp6_error(net, v6, ing, p, &ip, (msg_type::DEST_UNREACH, 0, 0));
                    c.drop(Drop::NoRoute);
                }
                return;
            }
            Verdict::Refused(r) => {
                // 1: administratively prohibited (an isolated network here); 0: no route.
                let (code, drop) = match r {
                    Refusal::Policy => (1, Drop::Policy),
                    Refusal::NoRoute => (0, Drop::NoRoute),
                    Refusal::Full => return self.conntrack_full("ipv6"),
                };
                self.icmp6_error(net, v6, ing, p, &ip, (msg_type::DEST_UNREACH, code, 0));
                return c.drop(drop);
            }
        };
        match info {
            Some(info) => self.forward6_translated(from, p, &ip, &info, translated),
            None => c.drop(Drop::Unsupported),
        }
    }

    /// Route an IPv6 packet from `net` untranslated to network `zone` (`net` itself or one
    /// linked to it): isolation, the target's MTU, the endpoint's MAC.
    fn linked6(
        &mut self,
        net: &NetRt,
        v6: &NetRt6,
        ing: Ingress<'_>,
        p: &Parsed,
        ip: Ip6,
        zone: NetId,
    ) {
        let c = self.c;
        let Some((to, w)) = self
            .cfg
            .networks
            .get(&zone)
            .and_then(|n| Some((n, n.v6.as_ref()?)))
        else {
            return c.drop(Drop::NoRoute);
        };
        if to.id == net.id && !net.icc {
            // Through the gateway to an endpoint of its own icc=false network: still isolated.
            self.icmp6_error(net, v6, ing, p, &ip, (msg_type::DEST_UNREACH, 1, 0));
            return c.drop(Drop::Policy);
        }
        if too_big(p, &ip, self.buf.vnet, to.mtu) {
            self.icmp6_error(net, v6, ing, p, &ip, (msg_type::PACKET_TOO_BIG, 0, to.mtu));
            return c.drop(Drop::Oversize);
        }
        match self.deliver6(to, w, p, &ip) {
            Delivery::Sent => {}
            // The sender's retransmission gets through once the endpoint answered.
            Delivery::Probing => c.drop(Drop::NeighborUnknown),
            Delivery::Unknown => {
                self.icmp6_error(net, v6, ing, p, &ip, (msg_type::DEST_UNREACH, 3, 0));
                c.drop(Drop::NeighborUnknown);
            }
        }
    }

    /// Send the IPv6 packet in the buffer (hop limit checked) to its destination on network
    /// `to`: one hop spent, from `to`'s gateway to the endpoint's MAC. False when no endpoint
    /// has the address (nothing sent).
    pub(super) fn deliver6(&mut self, to: &NetRt, w: &NetRt6, p: &Parsed, ip: &Ip6) -> Delivery {
        let cfg = self.cfg;
        let now = self.now;
        let c = self.c;
        let known = w.neigh.get(&ip.dst).copied();
        let Some(mac) = known.or_else(|| w.learned.get(&ip.dst).map(|m| *m)) else {
            if to.vni.is_none() {
                return Delivery::Unknown;
            }
            // An overlay network: the endpoint may live on another host. Ask, from the
            // gateway, on every host of the network (rate-limited per address).
            if w.probes.should_request(ip.dst, now) {
                let mut ns = [0u8; 96];
                if let Some(n) = icmpv6::write_ns(&mut ns, to.gateway_mac, w.gateway, ip.dst) {
                    self.buf.set(&ns[..n]);
                    if let Some(q) = Parsed::parse(&ns[..n]) {
                        self.replicate(to, None, true, &q);
                    }
                }
            }
            return Delivery::Probing;
        };
        // Hop limit: the IPv6 header has no checksum to mend.
        if let Some(h) = self.buf.data_mut().get_mut(EthFrame::HEADER_LEN + 7) {
            *h = ip.hop_limit.saturating_sub(1);
        }
        ethernet::set_addrs(self.buf.data_mut(), to.gateway_mac, mac);
        c.event(Event::Routed);
        let bytes = self.buf.tap_bytes();
        to.taps
            .emit_counted(crate::capture::Dir::Tx, &bytes[VirtioNetHdr::LEN..], c);
        match to
            .fdb
            .lookup(mac, now)
            .and_then(|id| cfg.ports.get(&id))
            .filter(|port| port.network == to.id)
        {
            Some(port) => port.transmit(bytes, c),
            None => match to.remote.as_ref().and_then(|r| r.lookup(&mac.0, now)) {
                Some(vtep) => self.encap(to, &[vtep], p),
                None => self.replicate(to, None, true, p),
            },
        }
        Delivery::Sent
    }

    /// An IPv6 frame received on the uplink: neighbour discovery for the switch's uplink
    /// addresses (answered; what neighbours say learned), echo requests to them answered, and
    /// packets for the networks' prefixes routed in (routed IPv6). Anything else is not ours.
    pub(super) fn uplink_in6(&mut self, inp: &Port, up: &UplinkRt, p: &Parsed, ip: Ip6) {
        let cfg = self.cfg;
        let now = self.now;
        let c = self.c;
        let Some(u6) = up.v6.as_ref() else {
            return c.event(Event::UplinkOther);
        };
        let ours = |a: Ipv6Addr| a == u6.ip || a == u6.link_local;
        if let L4::Icmp { msg_type: t, .. } = ip.l4 {
            if t == msg_type::NEIGHBOR_SOLICIT || t == msg_type::NEIGHBOR_ADVERT {
                let nd = icmp6(self.buf.data(), &ip)
                    .and_then(|m| icmpv6::parse_nd(m, ip.hop_limit).ok())
                    .filter(|nd| nd.check_ip(ip.src, ip.dst).is_ok());
                let Some(nd) = nd else {
                    return c.drop(Drop::Malformed);
                };
                let target = nd.target.unwrap_or(Ipv6Addr::UNSPECIFIED);
                // What a neighbour says of itself: learned (only addresses of the uplink's
                // link, and from an advertisement only one asked for or known: RFC 4861
                // §7.2.5), and its waiting frames sent.
                let on_link = |a: Ipv6Addr| u6.subnet.contains(a) || icmpv6::is_link_local(a);
                let learned = match nd.kind {
                    NdKind::Na if on_link(target) && u6.neigh.expects(target) => {
                        nd.target_mac.map(|m| (target, m))
                    }
                    NdKind::Ns if on_link(ip.src) && ours(target) => {
                        nd.source_mac.map(|m| (ip.src, m))
                    }
                    _ => None,
                };
                if let Some((a, m)) = learned {
                    for w in u6.neigh.learn(a, m, now) {
                        let mut wire = w.wire;
                        wire[w.dst_mac_at..w.dst_mac_at + 6].copy_from_slice(&m.0);
                        self.send_uplink_bytes(&up.port, &wire);
                    }
                }
                if nd.kind == NdKind::Ns && ours(target) {
                    let (to_ip, to_mac, solicited) = if ip.src.is_unspecified() {
                        (ALL_NODES, icmpv6::multicast_mac(ALL_NODES), false)
                    } else {
                        (ip.src, p.eth.src, true)
                    };
                    let mut out = [0u8; PACKET_HDR_LEN + 96];
                    if let Some(n) = icmpv6::write_na(
                        &mut out[PACKET_HDR_LEN..],
                        icmpv6::Addrs {
                            eth_src: up.mac,
                            eth_dst: to_mac,
                            ip_src: target,
                            ip_dst: to_ip,
                        },
                        target,
                        up.mac,
                        true,
                        solicited,
                    ) {
                        inp.transmit(&out[..PACKET_HDR_LEN + n], c);
                    }
                } else {
                    c.event(Event::UplinkOther);
                }
                return;
            }
        }
        if p.eth.dst != up.mac {
            return c.event(Event::UplinkOther);
        }
        match local::icmp6_echo_reply_in_place(self.buf.data_mut(), p, ours, up.mac) {
            Ok(len) => {
                self.buf.set_len(len);
                self.buf.vnet = VirtioNetHdr::default();
                return inp.transmit(self.buf.wire_bytes(PACKET_HDR_LEN), c);
            }
            Err(NotAnswered::Malformed) => return c.drop(Drop::Malformed),
            Err(NotAnswered::NotForUs) => {}
        }
        // Routed in (routed IPv6): to an endpoint of a network with that prefix (not an
        // internal one). Anything else (NAT66, the uplink's address): NAT's verdict.
        let to = cfg
            .networks
            .values()
            .filter(|_| u6.routed)
            .find(|n| n.v6.as_ref().is_some_and(|w| w.subnet.contains(ip.dst)));
        let Some((to, w)) = to.and_then(|n| Some((n, n.v6.as_ref()?))) else {
            return self.uplink_nat6(inp, (up, u6), p, &ip);
        };
        let error = if to.internal {
            (Drop::Policy, (msg_type::DEST_UNREACH, 1, 0))
        } else if ip.hop_limit <= 1 {
            (Drop::Ttl, (msg_type::TIME_EXCEEDED, 0, 0))
        } else if too_big(p, &ip, self.buf.vnet, to.mtu) {
            (Drop::Oversize, (msg_type::PACKET_TOO_BIG, 0, to.mtu))
        } else {
            if self.deliver6(to, w, p, &ip) != Delivery::Sent {
                c.drop(Drop::NeighborUnknown);
            }
            return;
        };
        // Told back to the sender on the uplink, from the switch's uplink address.
        if self.error_frame(p, &ip, (up.mac, u6.ip), error.1).is_some() {
            inp.transmit(self.buf.wire_bytes(PACKET_HDR_LEN), c);
        }
        c.drop(error.0);
    }

    /// Put into the buffer the ICMPv6 error `(type, code, param)` about the IPv6 packet in it,
    /// from `(mac, ip)` to its sender, quoting it; `None` (buffer untouched) for a packet that is
    /// itself an error or from an address that cannot be answered (RFC 4443 §2.4(e)), and
    /// beyond [`super::ICMP6_ERRORS_PER_S`] (§2.4(f); counted as `icmp6_rate_limited`).
    pub(super) fn error_frame(
        &mut self,
        p: &Parsed,
        ip: &Ip6,
        (mac, from): (MacAddr, Ipv6Addr),
        (t, code, param): (u8, u8, u32),
    ) -> Option<()> {
        let is_error = ip.proto == next_header::ICMPV6
            && matches!(ip.l4, L4::Icmp { msg_type, .. } if msg_type < 128);
        if is_error || ip.src.is_unspecified() || ip.src.is_multicast() {
            return None;
        }
        if !self.icmp6_limit.allow(self.now) {
            self.c.event(Event::Icmp6RateLimited);
            return None;
        }
        let frame = self.buf.data();
        let end = (EthFrame::HEADER_LEN + ip.total_len).min(frame.len());
        let quoted = &frame[EthFrame::HEADER_LEN..end];
        let mut out = [0u8; EthFrame::HEADER_LEN + wire::ipv6::MIN_MTU];
        let to = icmpv6::Addrs {
            eth_src: mac,
            eth_dst: p.eth.src,
            ip_src: from,
            ip_dst: ip.src,
        };
        let n = icmpv6::write_error(&mut out, to, t, code, param, quoted)?;
        self.c.event(Event::Icmp6Errors);
        self.buf.set(&out[..n]);
        Some(())
    }

    /// Answer the sender of the IPv6 packet in the buffer with the ICMPv6 error
    /// `(type, code, param)` from the gateway, quoting the packet; nothing for a packet that
    /// is itself an error or from an address that cannot be answered (RFC 4443 §2.4(e)).
    pub(super) fn icmp6_error(
        &mut self,
        net: &NetRt,
        v6: &NetRt6,
        ing: Ingress<'_>,
        p: &Parsed,
        ip: &Ip6,
        (t, code, param): (u8, u8, u32),
    ) {
        if self
            .error_frame(p, ip, (net.gateway_mac, v6.gateway), (t, code, param))
            .is_some()
        {
            self.reply(net, ing);
        }
    }
}

/// The verdict for an IPv6 packet from `net` to `dst` that cannot be translated (a fragment, a
/// protocol NAT does not handle): routed where no translation is needed (to `net` or a linked
/// network, out of a routed uplink), refused for another network's prefix; `None` where it
/// would need translation (masquerade).
fn untranslated6(
    cfg: &Config,
    net: &NetRt,
    v6: &NetRt6,
    dst: Ipv6Addr,
) -> Option<Verdict<Ipv6Addr>> {
    if v6.is_gateway(dst) {
        return Some(Verdict::Gateway);
    }
    if let Some(z) = Topology::<Ipv6Addr>::reachable(cfg, net.id, dst) {
        return Some(Verdict::Route { zone: Some(z) });
    }
    if Topology::<Ipv6Addr>::is_internal_address(cfg, dst) {
        return Some(Verdict::Refused(Refusal::Policy));
    }
    let out = Topology::<Ipv6Addr>::routes_out(cfg)
        && !net.internal
        && Topology::<Ipv6Addr>::uplink_ip(cfg) != Some(dst);
    out.then_some(Verdict::Route { zone: None })
}
