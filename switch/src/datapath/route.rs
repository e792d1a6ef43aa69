//! Stage 4, route: frames for the gateway MAC (and the uplink's own frames). The gateway routes
//! IPv4 between linked networks and to and from the uplink: NAT's verdict
//! ([`nat::verdict::decide`]: a tracked flow, masquerade, a published port, hairpin, plain
//! routing, or a refusal), the in-place rewrite with incremental checksums, a TTL decrement, the
//! gateway's DNS (UDP answered or forwarded, TCP answered statelessly), and next hops resolved by
//! ARP on the networks and the uplink. Every routed packet: the parse made on receive, the header
//! checksum checked, one conntrack lookup (or one flow creation), one rewrite, one write.

use std::net::Ipv4Addr;

use nat::conntrack::NatKind;
use nat::packet::{self, IcmpKind, L4Info, ParseError};
use nat::verdict::{self, Opened, Refusal, Target, Topology, Verdict, Zone};
use nat::Proto;
use nat::{FiveTuple, FlowDir};

use super::{Config, Ctx, NetRt, Shared, UplinkRt};
use crate::counters::{Drop, Event};
use crate::dns;
use crate::local;
use crate::neigh::Pending;
use crate::port::NetId;
use crate::port::Port;
use crate::sys::packet::VNET_HDR_LEN as PACKET_HDR_LEN;
use wire::arp;
use wire::ethernet::{self, EthFrame, EtherType, MacAddr};
use wire::ipv4::{self, Ipv4Header, Ipv4Packet};
use wire::l4::{self, tcp_flags::*, TcpHeader, TcpRepr};
use wire::{Ip4, Parsed, VirtioNetHdr, L3};

impl Ctx<'_> {
    /// A frame received on the uplink port.
    pub(crate) fn uplink_in(&mut self, inp: &Port, p: &Parsed) {
        let cfg = self.cfg;
        let now = self.now;
        let c = self.c;
        let Some(up) = cfg.uplink.as_deref().filter(|u| u.port.id == inp.id) else {
            return;
        };
        let eth = &p.eth;
        match p.l3 {
            L3::Malformed if eth.ethertype == EtherType::ARP => c.drop(Drop::Malformed),
            L3::Arp(arp) => {
                if arp.sender_mac == eth.src
                    && up.subnet.contains(arp.sender_ip)
                    && arp.sender_ip != up.ip
                {
                    for p in up.neigh.learn(arp.sender_ip, arp.sender_mac, now) {
                        let mut wire = p.wire;
                        wire[p.dst_mac_at..p.dst_mac_at + 6].copy_from_slice(&arp.sender_mac.0);
                        self.send_uplink_bytes(&up.port, &wire);
                    }
                }
                if arp.is_request
                    && (arp.target_ip == up.ip || up.extra_ips.contains(&arp.target_ip))
                {
                    arp::reply_in_place(self.buf.data_mut(), &arp, up.mac);
                    self.buf.vnet = VirtioNetHdr::default();
                    inp.transmit(self.buf.wire_bytes(PACKET_HDR_LEN), c);
                }
            }
            L3::Ipv6(ip) => self.uplink_in6(inp, up, p, ip),
            L3::Ipv4(_) | L3::Malformed if eth.dst == up.mac => {
                match local::icmp_echo_reply_in_place(self.buf.data_mut(), p, up.ip, up.mac) {
                    Ok(len) => {
                        self.buf.set_len(len);
                        self.buf.vnet = VirtioNetHdr::default();
                        inp.transmit(self.buf.wire_bytes(PACKET_HDR_LEN), c);
                    }
                    Err(local::NotAnswered::Malformed) => c.drop(Drop::Malformed),
                    Err(local::NotAnswered::NotForUs) => match p.ip4() {
                        Some(ip) => self.route(None, p.eth, *ip),
                        None => c.drop(Drop::Malformed),
                    },
                }
            }
            _ => c.event(Event::UplinkOther),
        }
    }

    /// Route the IPv4 packet in the buffer (parsed as `eth` and `ip4`), arriving from network
    /// `from` (`None`: the uplink).
    pub(crate) fn route(&mut self, from: Option<&NetRt>, eth: EthFrame, ip4: Ip4) {
        let cfg = self.cfg;
        let now = self.now;
        let c = self.c;
        let partial = self.buf.vnet.flags & VirtioNetHdr::F_NEEDS_CSUM != 0;
        let ct = self.ct;
        let Some(ip) = self.buf.data_mut().get_mut(EthFrame::HEADER_LEN..) else {
            c.drop(Drop::Malformed);
            return;
        };
        let info = match packet::classify(&ip4, ip) {
            Ok(i) => i,
            Err(ParseError::Malformed) => return c.drop(Drop::Malformed),
            Err(ParseError::Fragment) => return c.drop(Drop::Fragment),
            Err(ParseError::Unsupported) => return c.drop(Drop::Unsupported),
        };
        if info.ttl <= 1 {
            self.note("route", || {
                format!("{}: TTL {} expires here: dropped", info.tuple, info.ttl)
            });
            return c.drop(Drop::Ttl);
        }
        // `zone`: the network the destination should be in, when known (overlay networks may
        // share a subnet, so the address alone does not always say).
        let verdict = verdict::decide(
            ct,
            cfg,
            from.map(|n| n.id),
            from.map(|n| n.gateway_ip),
            &info,
            now,
        );
        Self::flow_log((self.shared, cfg), from.map(|n| n.id), &info, &verdict);
        super::trace::note(self.trace, "conntrack", || {
            describe(cfg, from, &info.tuple, &verdict)
        });
        let (new, zone) = match verdict {
            Verdict::Tracked { tuple, zone, .. } => (Some(tuple), Some(zone)),
            Verdict::Opened { tuple, kind, zone } => {
                c.event(match kind {
                    Opened::Snat => Event::SnatFlows,
                    Opened::Dnat => Event::DnatFlows,
                });
                (Some(tuple), zone)
            }
            Verdict::Route { zone } => (None, zone),
            Verdict::Gateway => {
                if let Some(net) = from {
                    self.gateway_l4(net, &info, partial, (eth, ip4));
                }
                return;
            }
            Verdict::Refused(Refusal::Full) => return self.conntrack_full("ipv4"),
            Verdict::Refused(r) => {
                return c.drop(match r {
                    Refusal::Policy => Drop::Policy,
                    _ => Drop::NoRoute,
                })
            }
        };
        if let Some(new) = &new {
            packet::rewrite(ip, &info, new, partial);
            if new != &info.tuple {
                super::trace::note(self.trace, "nat", || {
                    format!("rewritten: {} becomes {new}", info.tuple)
                });
            }
        }
        let Some(mut pkt) = Ipv4Packet::new_quoted(ip) else {
            return c.drop(Drop::Malformed);
        };
        pkt.decrement_ttl();
        let dst = pkt.dst();
        let routed = match (&new, info.icmp) {
            (Some(n), IcmpKind::NotIcmp | IcmpKind::Echo) => {
                ip4.translated(n.src, n.sport, n.dst, n.dport)
            }
            (Some(_), IcmpKind::Error { .. }) | (None, _) => Ip4 {
                src: pkt.src(),
                dst,
                ..ip4
            },
        };
        c.event(Event::Routed);
        let p = Parsed {
            eth,
            l3: L3::Ipv4(routed),
        };
        self.forward_ip(dst, zone, &p);
    }

    /// Send the (translated) IPv4 packet in the buffer towards `dst`.
    pub(crate) fn forward_ip(&mut self, dst: Ipv4Addr, zone: Option<NetId>, p: &Parsed) {
        let cfg = self.cfg;
        let now = self.now;
        let c = self.c;
        let m = zone
            .and_then(|z| cfg.networks.get(&z))
            .filter(|n| n.subnet.contains(dst))
            .or_else(|| cfg.network_of(dst));
        if let Some(m) = m {
            let Some(mac) = m.neigh.get(&dst).map(|m| *m) else {
                self.note("route", || {
                    format!(
                        "{dst} in network {}: MAC unknown, this packet is dropped and the \
                         gateway asks by ARP (at most once a second)",
                        m.name
                    )
                });
                // Unknown (an endpoint on another host that never spoke here): ask, from the
                // gateway, and drop this packet; the sender's retransmission gets through.
                if m.probes.should_request(dst, now) {
                    let mut req = [0u8; arp::FRAME_LEN];
                    arp::request(&mut req, m.gateway_mac, m.gateway_ip, dst);
                    self.buf.set(&req);
                    c.event(Event::ArpRequests);
                    if let Some(p) = Parsed::parse(&req) {
                        self.replicate(m, None, true, &p);
                    }
                }
                return c.drop(Drop::ArpTimeout);
            };
            self.note("route", || {
                format!(
                    "{dst} in network {}: next hop {mac}, from the gateway's MAC",
                    m.name
                )
            });
            ethernet::set_addrs(self.buf.data_mut(), m.gateway_mac, mac);
            let bytes = self.buf.tap_bytes();
            m.taps
                .emit_counted(crate::capture::Dir::Tx, &bytes[VirtioNetHdr::LEN..], c);
            match m
                .fdb
                .lookup(mac, now)
                .and_then(|id| cfg.ports.get(&id))
                .filter(|p| p.network == m.id)
            {
                Some(p) => p.transmit(bytes, c),
                None => match m.remote.as_ref().and_then(|r| r.lookup(&mac.0, now)) {
                    // The endpoint lives on another host of this overlay network.
                    Some(vtep) => self.encap(m, &[vtep], p),
                    None => self.replicate(m, None, true, p),
                },
            }
            return;
        }
        let Some(up) = cfg.uplink.as_deref() else {
            self.note("route", || {
                format!("{dst} is in no network and there is no uplink")
            });
            return c.drop(Drop::NoRoute);
        };
        let hop = if up.subnet.contains(dst) {
            dst
        } else {
            match up.gateway {
                Some(g) => g,
                None => {
                    self.note("route", || {
                        format!("{dst} is off the uplink's subnet and the uplink has no gateway")
                    });
                    return c.drop(Drop::NoRoute);
                }
            }
        };
        self.note("route", || {
            let mac = up.neigh.lookup(hop, now).map_or(
                "unknown: the packet waits up to a second (if the queue has room) while the \
                 switch asks by ARP (at most once a second)"
                    .to_string(),
                |m| m.to_string(),
            );
            format!("out of the uplink to next hop {hop}, MAC {mac}")
        });
        if self.send_to_uplink_hop(up, &up.neigh, hop, Drop::ArpTimeout) {
            send_arp_request(up, hop, c);
        }
    }

    /// Send the frame in the buffer out of the uplink `up` to next hop `hop`, whose MAC `neigh`
    /// resolves: at once when it is known, else queued (for up to a second; `full` counted when
    /// the queue is). True when the caller should ask for `hop`'s MAC now (rate-limited).
    pub(super) fn send_to_uplink_hop<A: Copy + Eq + std::hash::Hash + Ord>(
        &mut self,
        up: &UplinkRt,
        neigh: &crate::neigh::NeighCache<A>,
        hop: A,
        full: Drop,
    ) -> bool {
        let now = self.now;
        if let Some(mac) = neigh.lookup(hop, now) {
            ethernet::set_addrs(self.buf.data_mut(), up.mac, mac);
            self.send_uplink(&up.port);
            return false;
        }
        ethernet::set_addrs(self.buf.data_mut(), up.mac, MacAddr::default());
        let wire = self.buf.wire_bytes(PACKET_HDR_LEN).to_vec();
        if !neigh.enqueue(Pending {
            hop,
            at_ms: now,
            dst_mac_at: PACKET_HDR_LEN,
            wire,
        }) {
            self.c.drop(full);
        }
        neigh.should_request(hop, now)
    }
}

impl Ctx<'_> {
    /// Tell the flow log (`vswitchctl flows --follow`) what NAT's verdict did with a packet
    /// (parsed as `info`) from network `from` (`None`: the uplink): a new flow, a TCP state
    /// change, or a refusal. Nothing is built when nobody listens. // HOT PATH (one load)
    pub(super) fn flow_log<A: nat::Addr>(
        (shared, cfg): (&Shared, &Config),
        from: Option<NetId>,
        info: &L4Info<A>,
        v: &Verdict<A>,
    ) {
        use crate::events::{family, Topic};
        let bus = &shared.bus;
        if !bus.listening(Topic::Flows) {
            return;
        }
        let name = |z: Option<NetId>| {
            z.and_then(|z| cfg.networks.get(&z))
                .map(|n| n.name.to_string())
        };
        let t = info.tuple;
        match *v {
            Verdict::Opened { tuple, kind, zone } => {
                bus.publish(Topic::Flows, "new", || {
                    serde_json::json!({
                        "family": family::<A>(), "proto": t.proto.name(),
                        "nat": match kind {
                            Opened::Snat => "snat",
                            // From a network to a published port: the conntrack kind.
                            Opened::Dnat if from.is_some() => "hairpin",
                            Opened::Dnat => "dnat",
                        },
                        "network": name(from.or(zone)), "orig": t.to_string(),
                        "reply": tuple.reversed().to_string(), "verdict": "forwarded",
                    })
                });
            }
            Verdict::Tracked {
                tuple,
                zone,
                state: Some(s),
            } => bus.publish(Topic::Flows, "state", || {
                serde_json::json!({
                    "family": family::<A>(), "proto": t.proto.name(), "network": name(Some(zone)),
                    "packet": t.to_string(), "to": tuple.to_string(), "state": s.name(),
                })
            }),
            Verdict::Refused(r) if shared.packet_notes.allow(shared.now_ms()) => {
                bus.publish(Topic::Flows, "refused", || {
                    serde_json::json!({
                        "family": family::<A>(), "proto": t.proto.name(), "network": name(from),
                        "packet": t.to_string(), "verdict": "dropped",
                        "reason": match r {
                            Refusal::NoRoute => "no_route",
                            Refusal::Policy => "policy",
                            Refusal::Full => "conntrack_full",
                        },
                    })
                })
            }
            _ => {}
        }
    }

    /// A new flow refused because the `family` connection table is full: counted, and told to
    /// the event stream (at most once a second).
    pub(super) fn conntrack_full(&self, family: &str) {
        self.c.drop(Drop::ConntrackFull);
        if self.shared.bus.listening(crate::events::Topic::Events)
            && self.shared.ct_full_note.allow(self.now)
        {
            let limit = self.shared.ct.limit();
            self.shared.bus.publish(
                crate::events::Topic::Events,
                "conntrack_full",
                || serde_json::json!({"family": family, "limit": limit}),
            );
        }
    }
}

/// Largest DNS message the gateway handles in one datagram or segment.
pub(super) const DNS_MAX: usize = 1232;

impl Ctx<'_> {
    /// TCP/UDP/ICMP-error addressed to a network's gateway address (ping was answered before):
    /// DNS on port 53, nothing else.
    fn gateway_l4(
        &mut self,
        net: &NetRt,
        info: &L4Info,
        partial: bool,
        (eth, ip4): (EthFrame, Ip4),
    ) {
        let cfg = self.cfg;
        let now = self.now;
        let c = self.c;
        let t = info.tuple;
        if t.dport != 53 || matches!(info.icmp, IcmpKind::Error { .. }) {
            return c.drop(Drop::NoRoute);
        }
        let l4 = EthFrame::HEADER_LEN + info.l4;
        let frame = self.buf.data();
        // The receive parse checked that the total length fits the frame.
        let total = EthFrame::HEADER_LEN + ip4.total_len;
        let mut out = [0u8; DNS_MAX + 2];
        match t.proto {
            Proto::Udp => {
                let query = frame
                    .get(l4 + l4::UDP_HEADER_LEN..total)
                    .unwrap_or_default();
                let upstream = cfg
                    .uplink
                    .as_deref()
                    .filter(|_| !net.internal)
                    .and_then(|u| u.resolver.map(|r| (u, r)));
                match dns::answer(query, &net.dns, upstream.is_some(), &mut out) {
                    dns::Verdict::Malformed => c.drop(Drop::Malformed),
                    dns::Verdict::Answered(n) => {
                        self.note("dns", || "answered by the gateway".into());
                        c.event(Event::DnsAnswered);
                        let mut udp = [0u8; DNS_MAX + l4::UDP_HEADER_LEN];
                        let (h, data) = udp.split_at_mut(l4::UDP_HEADER_LEN);
                        l4::write_udp(h.try_into().expect("8 bytes"), 53, t.sport, n);
                        data[..n].copy_from_slice(&out[..n]);
                        let len = n + l4::UDP_HEADER_LEN;
                        let p =
                            self.emit_l4(net.gateway_ip, t.src, ipv4::proto::UDP, &mut udp[..len]);
                        self.forward_ip(t.src, Some(net.id), &p);
                    }
                    dns::Verdict::Forward => {
                        let Some((up, resolver)) = upstream else {
                            return;
                        };
                        let published = |proto, port| cfg.published.contains_key(&(proto, port));
                        let flow = match self.ct.create_snat_as(
                            NatKind::Dns,
                            t,
                            up.ip,
                            Some((resolver, 53)),
                            net.id,
                            published,
                            now,
                        ) {
                            Ok(f) => f,
                            Err(_) => return self.conntrack_full("ipv4"),
                        };
                        c.event(Event::DnsForwarded);
                        flow.count(FlowDir::Original, info.len);
                        let n = flow.translate(FlowDir::Original);
                        self.note("dns", || {
                            format!(
                                "a name the gateway does not know: forwarded to {resolver} as {n}"
                            )
                        });
                        let bus = &self.shared.bus;
                        if bus.listening(crate::events::Topic::Flows) {
                            bus.publish(crate::events::Topic::Flows, "new", || {
                                serde_json::json!({
                                    "family": "ipv4", "proto": "udp", "nat": "dns",
                                    "network": &*net.name, "orig": t.to_string(),
                                    "reply": n.reversed().to_string(), "verdict": "forwarded",
                                })
                            });
                        }
                        let ip = EthFrame::payload_mut(self.buf.data_mut());
                        packet::rewrite(ip, info, &n, partial);
                        packet::decrement_ttl(ip);
                        let p = Parsed {
                            eth,
                            l3: L3::Ipv4(ip4.translated(n.src, n.sport, n.dst, n.dport)),
                        };
                        self.forward_ip(resolver, None, &p);
                    }
                }
            }
            Proto::Tcp => self.dns_tcp(net, (ip4.src, ip4.dst), l4, total),
            Proto::Icmp => c.drop(Drop::NoRoute),
        }
    }

    /// DNS over TCP, answered statelessly: SYN gets SYN+ACK with a sequence number derived from
    /// the connection, a query segment gets the answer with FIN, a FIN gets its ACK. Our sequence
    /// number is always the client's acknowledgement, so no per-connection state is kept. Names
    /// the gateway does not know get SERVFAIL over TCP (forwarding is UDP only).
    fn dns_tcp(&mut self, net: &NetRt, (src, dst): (Ipv4Addr, Ipv4Addr), l4: usize, total: usize) {
        let frame = self.buf.data();
        let Some(tcp) = frame.get(l4..total).and_then(TcpHeader::new_checked) else {
            return self.c.drop(Drop::Malformed);
        };
        let (sport, seq, ack, flags) = (tcp.sport(), tcp.seq(), tcp.ack(), tcp.flags());
        let payload = tcp.payload();
        const HDR: usize = l4::TCP_HEADER_LEN;
        let mut seg = [0u8; DNS_MAX + 2 + HDR];
        let fin_in = u32::from(flags & FIN != 0);
        let (rflags, rseq, rack, data) = if flags & RST != 0 {
            return;
        } else if flags & SYN != 0 && flags & ACK == 0 {
            let isn = u32::from(src).wrapping_mul(0x9e37_79b1)
                ^ (u32::from(sport) << 7)
                ^ seq.rotate_left(13);
            (SYN | ACK, isn, seq.wrapping_add(1), 0)
        } else if payload.len() >= 2 {
            // DNS over TCP: a two-byte length, then the message (RFC 1035 section 4.2.2).
            let (len, msg) = payload.split_at(2);
            let qlen = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let Some(query) = msg.get(..qlen) else {
                return self.c.drop(Drop::Malformed); // a query split over segments: unsupported
            };
            match dns::answer(query, &net.dns, false, &mut seg[HDR + 2..]) {
                dns::Verdict::Answered(n) => {
                    seg[HDR..HDR + 2].copy_from_slice(&(n as u16).to_be_bytes());
                    self.c.event(Event::DnsAnswered);
                    (
                        PSH | ACK | FIN,
                        ack,
                        seq.wrapping_add(payload.len() as u32 + fin_in),
                        n + 2,
                    )
                }
                _ => return self.c.drop(Drop::Malformed),
            }
        } else if fin_in == 1 {
            (ACK, ack, seq.wrapping_add(1), 0)
        } else {
            return; // a bare ACK
        };
        TcpRepr {
            sport: 53,
            dport: sport,
            seq: rseq,
            ack: rack,
            flags: rflags,
        }
        .write((&mut seg[..HDR]).try_into().expect("20 bytes"));
        let p = self.emit_l4(dst, src, ipv4::proto::TCP, &mut seg[..HDR + data]);
        self.forward_ip(src, Some(net.id), &p);
    }

    /// Replace the buffer's frame with a fresh IPv4 packet `src -> dst` carrying the TCP or UDP
    /// segment `l4` (whose checksum is filled in here). Ethernet addresses are set by
    /// `forward_ip`. Returns the new frame's parse.
    fn emit_l4(&mut self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &mut [u8]) -> Parsed {
        l4::fill_checksum(src, dst, proto, l4);
        let total = ipv4::HEADER_LEN + l4.len();
        self.buf.set_len(EthFrame::HEADER_LEN + total);
        self.buf.vnet = VirtioNetHdr::default();
        let eth = EthFrame {
            dst: MacAddr::default(),
            src: MacAddr::default(),
            ethertype: EtherType::IPV4,
        };
        let f = self.buf.data_mut();
        let (head, ip) = f.split_at_mut(EthFrame::HEADER_LEN);
        eth.write(head.try_into().expect("14 bytes"));
        let (hdr, rest) = ip.split_at_mut(ipv4::HEADER_LEN);
        Ipv4Header {
            src,
            dst,
            protocol: proto,
            payload_len: l4.len(),
            ttl: 64,
        }
        .write(hdr.try_into().expect("20 bytes"));
        rest[..l4.len()].copy_from_slice(l4);
        let ip = Ip4::parse(EthFrame::payload(self.buf.data()));
        Parsed {
            eth,
            l3: ip.map_or(L3::Malformed, L3::Ipv4),
        }
    }
}

fn send_arp_request(up: &UplinkRt, hop: Ipv4Addr, c: &crate::counters::WorkerCounters) {
    let mut wire = [0u8; PACKET_HDR_LEN + arp::FRAME_LEN];
    let frame: &mut [u8; arp::FRAME_LEN] = (&mut wire[PACKET_HDR_LEN..])
        .try_into()
        .expect("sized above");
    arp::request(frame, up.mac, up.ip, hop);
    c.event(Event::ArpRequests);
    up.port.transmit(&wire, c);
}

/// The switch's networks, uplink and published ports as NAT's verdict asks about them.
impl Topology for Config {
    fn published(&self, t: &FiveTuple) -> Option<Target> {
        self.published_for(t).map(|p| Target {
            zone: p.net,
            to_ip: p.to_ip,
            to_port: p.to_port,
        })
    }

    fn is_published(&self, proto: Proto, port: u16) -> bool {
        self.published.contains_key(&(proto, port))
    }

    fn gateway(&self, zone: Zone) -> Option<Ipv4Addr> {
        self.networks.get(&zone).map(|n| n.gateway_ip)
    }

    fn reachable(&self, from: Zone, dst: Ipv4Addr) -> Option<Zone> {
        let from = self.networks.get(&from)?;
        if from.subnet.contains(dst) {
            return Some(from.id);
        }
        from.links
            .iter()
            .filter_map(|l| self.networks.get(l))
            .find(|n| n.subnet.contains(dst))
            .map(|n| n.id)
    }

    fn is_internal_address(&self, dst: Ipv4Addr) -> bool {
        self.network_of(dst).is_some()
    }

    fn is_internal_network(&self, zone: Zone) -> bool {
        self.networks.get(&zone).is_some_and(|n| n.internal)
    }

    fn uplink_ip(&self) -> Option<Ipv4Addr> {
        self.uplink.as_ref().map(|u| u.ip)
    }
}

/// The conntrack stage's note: what NAT's verdict was for a packet with tuple `t` from `from`.
pub(super) fn describe<A: nat::Addr>(
    cfg: &Config,
    from: Option<&NetRt>,
    t: &FiveTuple<A>,
    v: &Verdict<A>,
) -> String {
    let name = |z: NetId| {
        cfg.networks
            .get(&z)
            .map_or_else(|| format!("#{z}"), |n| n.name.to_string())
    };
    let src = from.map_or_else(
        || "the uplink".to_string(),
        |n| format!("network {}", n.name),
    );
    match v {
        Verdict::Tracked { tuple, zone, state } => format!(
            "{t} from {src}: an existing flow (network {}){}; sent as {tuple}",
            name(*zone),
            state
                .map(|s| format!(", TCP state now {}", s.name()))
                .unwrap_or_default()
        ),
        Verdict::Opened { tuple, kind, zone } => format!(
            "{t} from {src}: a new flow, {} ({}); sent as {tuple}, answers come back as {}",
            match kind {
                Opened::Snat => "masqueraded to the uplink's address",
                Opened::Dnat => "to a published port",
            },
            zone.map_or_else(
                || "to the uplink".to_string(),
                |z| format!("network {}", name(z))
            ),
            tuple.reversed()
        ),
        Verdict::Route { zone } => format!(
            "{t} from {src}: routed without translation{}",
            zone.map(|z| format!(" to network {}", name(z)))
                .unwrap_or_default()
        ),
        Verdict::Gateway => format!(
            "{t} from {src}: for the gateway itself (its DNS answers on port 53; anything else \
             is dropped)"
        ),
        Verdict::Refused(r) => format!(
            "{t} from {src}: refused ({})",
            match r {
                Refusal::NoRoute => "no route to the destination",
                Refusal::Policy => {
                    "policy: an internal network has no way out, an icc=false network none to \
                     its own endpoints, networks not linked none to each other"
                }
                Refusal::Full => "the connection table is full",
            }
        ),
    }
}
