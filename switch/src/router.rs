//! The L3 path of the datapath: the gateway routes IPv4 between networks (linked ones only), to
//! and from the uplink, with connection-tracked NAT (masquerade, published ports, hairpin), and
//! resolves uplink next hops by ARP itself.
//!
//! Every routed packet: one parse ([`nat::packet::parse`]), one conntrack lookup (or one flow
//! creation), one in-place rewrite with incremental checksums, a TTL decrement, and one write.

use std::net::Ipv4Addr;

use nat::conntrack::CtError;
use nat::packet::{self, IcmpKind, L4Info, ParseError};
use nat::{FiveTuple, FlowDir};
use smoltcp::wire::{EthernetFrame, EthernetProtocol};

use crate::counters::{Drop, Event};
use crate::datapath::{Config, Ctx, NetRt, UplinkRt};
use crate::local::{self, ARP_FRAME_LEN};
use crate::neigh::Pending;
use crate::port::Port;
use crate::sys::packet::VNET_HDR_LEN as PACKET_HDR_LEN;
use crate::wire::{EthFrame, MacAddr, VirtioNetHdr};

impl Ctx<'_> {
    /// A frame received on the uplink port.
    pub(crate) fn uplink_in(&mut self, cfg: &Config, inp: &Port, eth: &EthFrame, now: u64) {
        let c = self.c;
        let Some(up) = cfg.uplink.as_deref().filter(|u| u.port.id == inp.id) else {
            return;
        };
        match eth.ethertype {
            EthernetProtocol::Arp => {
                let Some(arp) = local::parse_arp(self.buf.data()) else {
                    c.drop(Drop::Malformed);
                    return;
                };
                if arp.sender_mac == eth.src
                    && up.subnet.contains(arp.sender_ip)
                    && arp.sender_ip != up.ip
                {
                    for p in up.neigh.learn(arp.sender_ip, arp.sender_mac, now) {
                        let mut wire = p.wire;
                        wire[p.dst_mac_at..p.dst_mac_at + 6].copy_from_slice(&arp.sender_mac.0);
                        up.port.transmit(&wire, c);
                    }
                }
                if arp.is_request
                    && (arp.target_ip == up.ip || up.extra_ips.contains(&arp.target_ip))
                {
                    local::arp_reply_in_place(self.buf.data_mut(), &arp, up.mac);
                    self.buf.vnet = VirtioNetHdr::default();
                    inp.transmit(self.buf.wire_bytes(PACKET_HDR_LEN), c);
                }
            }
            EthernetProtocol::Ipv4 if eth.dst == up.mac => {
                match local::icmp_echo_reply_in_place(self.buf.data_mut(), up.ip, up.mac) {
                    Ok(len) => {
                        self.buf.set_len(len);
                        self.buf.vnet = VirtioNetHdr::default();
                        inp.transmit(self.buf.wire_bytes(PACKET_HDR_LEN), c);
                    }
                    Err(local::NotAnswered::Malformed) => c.drop(Drop::Malformed),
                    Err(local::NotAnswered::NotForUs) => self.route(cfg, None, now),
                }
            }
            _ => c.event(Event::UplinkOther),
        }
    }

    /// Route the IPv4 packet in the buffer, arriving from network `from` (`None`: the uplink).
    pub(crate) fn route(&mut self, cfg: &Config, from: Option<&NetRt>, now: u64) {
        let c = self.c;
        let partial = self.buf.vnet.flags & VirtioNetHdr::F_NEEDS_CSUM != 0;
        let ct = self.ct;
        let Some(ip) = self.buf.data_mut().get_mut(EthFrame::HEADER_LEN..) else {
            c.drop(Drop::Malformed);
            return;
        };
        let info = match packet::parse(ip) {
            Ok(i) => i,
            Err(ParseError::Malformed) => return c.drop(Drop::Malformed),
            Err(ParseError::Fragment) => return c.drop(Drop::Fragment),
            Err(ParseError::Unsupported) => return c.drop(Drop::Unsupported),
        };
        if info.ttl <= 1 {
            return c.drop(Drop::Ttl);
        }
        let new = match ct.lookup(&info.tuple, now) {
            Some((flow, dir)) => {
                flow.seen(dir, info.tcp_flags, now);
                Some(flow.translate(dir))
            }
            None => match new_flow(ct, cfg, from, &info, now) {
                Ok(Some((t, ev))) => {
                    c.event(ev);
                    Some(t)
                }
                Ok(None) => None,
                Err(reason) => return c.drop(reason),
            },
        };
        if let Some(new) = &new {
            packet::rewrite(ip, &info, new, partial);
        }
        packet::decrement_ttl(ip);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        c.event(Event::Routed);
        self.forward_ip(cfg, dst, now);
    }

    /// Send the (translated) IPv4 packet in the buffer towards `dst`.
    fn forward_ip(&mut self, cfg: &Config, dst: Ipv4Addr, now: u64) {
        let c = self.c;
        if let Some(m) = cfg.network_of(dst) {
            let Some(mac) = m.neigh.get(&dst).map(|m| *m) else {
                return c.drop(Drop::NoRoute);
            };
            set_macs(self.buf.data_mut(), m.gateway_mac, mac);
            let bytes = self.buf.tap_bytes();
            for _ in 0..m
                .taps
                .emit(crate::capture::Dir::Tx, &bytes[VirtioNetHdr::LEN..])
            {
                c.drop(Drop::CaptureDropped);
            }
            match m
                .fdb
                .lookup(mac, now)
                .and_then(|id| cfg.ports.get(&id))
                .filter(|p| p.network == m.id)
            {
                Some(p) => p.transmit(bytes, c),
                None => m.ports.iter().for_each(|p| p.transmit(bytes, c)),
            }
            return;
        }
        let Some(up) = cfg.uplink.as_deref() else {
            return c.drop(Drop::NoRoute);
        };
        let hop = if up.subnet.contains(dst) {
            dst
        } else {
            match up.gateway {
                Some(g) => g,
                None => return c.drop(Drop::NoRoute),
            }
        };
        match up.neigh.lookup(hop, now) {
            Some(mac) => {
                set_macs(self.buf.data_mut(), up.mac, mac);
                up.port.transmit(self.buf.wire_bytes(PACKET_HDR_LEN), c);
            }
            None => {
                set_macs(self.buf.data_mut(), up.mac, MacAddr::default());
                let wire = self.buf.wire_bytes(PACKET_HDR_LEN).to_vec();
                if !up.neigh.enqueue(Pending {
                    hop,
                    at_ms: now,
                    dst_mac_at: PACKET_HDR_LEN,
                    wire,
                }) {
                    c.drop(Drop::ArpTimeout);
                }
                if up.neigh.should_request(hop, now) {
                    send_arp_request(up, hop, c);
                }
            }
        }
    }
}

fn set_macs(frame: &mut [u8], src: MacAddr, dst: MacAddr) {
    let mut eth = EthernetFrame::new_unchecked(frame);
    eth.set_src_addr(src.into());
    eth.set_dst_addr(dst.into());
}

fn send_arp_request(up: &UplinkRt, hop: Ipv4Addr, c: &crate::counters::WorkerCounters) {
    let mut wire = [0u8; PACKET_HDR_LEN + ARP_FRAME_LEN];
    let frame: &mut [u8; ARP_FRAME_LEN] = (&mut wire[PACKET_HDR_LEN..])
        .try_into()
        .expect("sized above");
    local::arp_request(frame, up.mac, up.ip, hop);
    c.event(Event::ArpRequests);
    up.port.transmit(&wire, c);
}

/// Decide what a packet without a flow becomes: `Ok(None)` routes it untranslated,
/// `Ok(Some(tuple))` creates a flow and translates it, `Err` drops it with a reason.
fn new_flow(
    ct: &nat::Conntrack,
    cfg: &Config,
    from: Option<&NetRt>,
    info: &L4Info,
    now: u64,
) -> Result<Option<(FiveTuple, Event)>, Drop> {
    let t = info.tuple;
    let is_error = matches!(info.icmp, IcmpKind::Error { .. });
    let full = |e: CtError| match e {
        CtError::Full | CtError::NoPort => Drop::ConntrackFull,
    };
    let Some(net) = from else {
        // From the uplink: only published ports open a flow.
        let p = cfg
            .published_for(&t)
            .filter(|_| !is_error)
            .ok_or(Drop::NoRoute)?;
        let f = ct
            .create_dnat(t, p.to_ip, p.to_port, p.net, now)
            .map_err(full)?;
        return Ok(Some((f.translate(FlowDir::Original), Event::DnatFlows)));
    };
    if let Some(p) = cfg.published_for(&t).filter(|_| !is_error) {
        // Hairpin: an endpoint reaching a published port through the uplink address. The source
        // becomes the target network's gateway so the answer comes back through the switch.
        let gw = cfg
            .networks
            .get(&p.net)
            .map(|n| n.gateway_ip)
            .ok_or(Drop::NoRoute)?;
        let f = ct
            .create_snat(
                t,
                gw,
                Some((p.to_ip, p.to_port)),
                net.id,
                |proto, port| cfg.published.contains_key(&(proto, port)),
                now,
            )
            .map_err(full)?;
        return Ok(Some((f.translate(FlowDir::Original), Event::DnatFlows)));
    }
    if let Some(m) = cfg.network_of(t.dst) {
        return if m.id == net.id || net.links.contains(&m.id) {
            Ok(None)
        } else {
            Err(Drop::Policy)
        };
    }
    if is_error {
        return Err(Drop::NoRoute);
    }
    if net.internal {
        return Err(Drop::Policy);
    }
    let up = cfg.uplink.as_deref().ok_or(Drop::NoRoute)?;
    if t.dst == up.ip {
        return Err(Drop::NoRoute);
    }
    let f = ct
        .create_snat(
            t,
            up.ip,
            None,
            net.id,
            |proto, port| cfg.published.contains_key(&(proto, port)),
            now,
        )
        .map_err(full)?;
    Ok(Some((f.translate(FlowDir::Original), Event::SnatFlows)))
}
