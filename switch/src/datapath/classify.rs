//! Stage 2, classify: the one parse of a received frame ([`Parsed`]), then for an endpoint port
//! port security, the MTU check and MAC learning before the L2 stage; the uplink port's frames go
//! to the route stage.

use std::net::Ipv4Addr;

use rustc_hash::FxHashMap;
use wire::ethernet::{EthFrame, EtherType};
use wire::{ipv4, Parsed, VirtioNetHdr, L3};

use super::{ip6, Ctx, Ingress, NetRt6};
use crate::capture::Dir;
use crate::counters::{Drop, Event};
use crate::fdb::{Learn, PortId};
use crate::port::{Port, UPLINK_NET};

impl Ctx<'_> {
    /// Decide what to do with the frame just read into `self.buf` from `inp`. // HOT PATH
    pub(super) fn process(&mut self, inp: &Port, n: usize) {
        let cfg = self.cfg;
        let now = self.now;
        let c = self.c;
        if !self.buf.received(n, inp.dev.hdr_len()) {
            c.drop(Drop::Malformed);
            return;
        }
        let frame = self.buf.data();
        inp.count_rx(frame.len());
        inp.taps.emit_counted(Dir::Rx, frame, c);
        let Some(p) = Parsed::parse(frame) else {
            c.drop(Drop::Malformed);
            return;
        };
        if !p.eth.src.is_valid_unicast() {
            c.drop(Drop::Malformed);
            return;
        }
        if inp.network == UPLINK_NET {
            self.uplink_in(inp, &p);
            return;
        }
        let Some(net) = cfg.networks.get(&inp.network) else {
            return;
        };
        self.note("receive", || {
            format!(
                "port {} ({}) of network {}: {} bytes",
                inp.name,
                inp.ip,
                net.name,
                self.buf.len()
            )
        });
        if inp.spoof_check {
            let also = (&cfg.own_addrs, &cfg.own_addrs6);
            if let Some(d) = refused(inp, also, &p, self.buf.data(), net.v6.as_ref()) {
                self.note("port security", || {
                    format!(
                        "refused: the port may send from MAC {} and {} (and its other networks' \
                         addresses) only",
                        inp.mac, inp.ip
                    )
                });
                c.drop(d);
                return;
            }
            self.note("port security", || {
                "source MAC and address are the port's own: passed".into()
            });
        } else {
            self.note("port security", || "off for this port".into());
        }
        if oversize(&p, self.buf.len(), self.buf.vnet, net.mtu) {
            // Larger than the network's MTU (the endpoint raised its own): no other endpoint
            // is set up to take it.
            self.note("mtu", || {
                format!(
                    "{} bytes exceed the network's MTU {}: dropped",
                    self.buf.len(),
                    net.mtu
                )
            });
            c.drop(Drop::Oversize);
            return;
        }
        let learned = self.fdbc.learn(&net.fdb, net.id, p.eth.src, inp.id, now);
        self.note("fdb", || {
            let what = match learned {
                Learn::Refreshed => "known on this port: refreshed".to_string(),
                Learn::New => "learned on this port".to_string(),
                Learn::Moved { from } => format!("moved here from port p{from}"),
                Learn::Ignored => {
                    "not learned: the table is full, or a static entry pins it elsewhere".into()
                }
            };
            format!("source {} {what}", p.eth.src)
        });
        match learned {
            Learn::Refreshed => {}
            Learn::New | Learn::Moved { .. } => {
                let notes = &self.shared.packet_notes;
                let listening = self.shared.bus.listening(crate::events::Topic::Events);
                if let (Learn::Moved { from }, true) = (learned, listening && notes.allow(now)) {
                    let bus = &self.shared.bus;
                    bus.publish(crate::events::Topic::Events, "fdb_moved", || {
                        let name = |id| cfg.ports.get(&id).map(|p| p.name.clone());
                        serde_json::json!({
                            "network": &*net.name,
                            "mac": p.eth.src.to_string(),
                            "from": name(from),
                            "to": inp.name,
                        })
                    });
                }
                c.event(Event::Learned);
                if let Some(r) = &net.remote {
                    r.forget(&p.eth.src.0); // it lives here now
                }
            }
            Learn::Ignored => c.drop(Drop::FdbFull),
        }
        self.switch_frame(net, Ingress::Local(inp), &p);
    }
}

/// Whether a frame from an endpoint is larger than its network's `mtu` allows: a plain frame
/// longer than the MTU plus its Ethernet header (and an 802.1Q tag if it has one), or a GSO
/// TCPv4 super-frame whose segments would be (its parsed headers plus `gso_size`: the virtio
/// header's `hdr_len` may count payload too).
fn oversize(p: &Parsed, len: usize, vnet: VirtioNetHdr, mtu: u32) -> bool {
    let tag = if p.eth.ethertype == EtherType::VLAN {
        EthFrame::VLAN_TAG_LEN
    } else {
        0
    };
    let limit = mtu as usize + EthFrame::HEADER_LEN + tag;
    if vnet.gso_type == 0 {
        len > limit
    } else {
        p.tcp_headers_len()
            .is_some_and(|h| h + usize::from(vnet.gso_size) > limit)
    }
}

/// Port security: the frame's source MAC, its IPv4 source and an ARP sender must be the
/// endpoint's own (`0.0.0.0` is allowed: address probes), or for the IPv4 source and ARP
/// sender, one of the port's entries in `also` (the namespace's addresses on its other
/// networks, [`Config::own_addrs`]); an IPv6 source one of its own (configured, link-local,
/// SLAAC on the network's /64 `v6`, or `::`), and its neighbour discovery no claim on another's
/// address and no router's messages ([`ip6::nd_refusal`]). The drop to count, if refused.
/// Truncated frames are left for the parsers to count as malformed.
#[allow(clippy::type_complexity)]
fn refused(
    port: &Port,
    (also, also6): (
        &FxHashMap<PortId, Vec<Ipv4Addr>>,
        &FxHashMap<PortId, Vec<std::net::Ipv6Addr>>,
    ),
    p: &Parsed,
    frame: &[u8],
    v6: Option<&NetRt6>,
) -> Option<Drop> {
    let ip6_ok = |ip: std::net::Ipv6Addr| {
        let own = match v6 {
            Some(v6) => ip6::own_ip6(ip, port.mac, port.ip6, v6),
            None => ip.is_unspecified() || ip == wire::icmpv6::link_local_eui64(port.mac),
        };
        // The table is looked up only for a source that is not the port's own (rare).
        own || also6.get(&port.id).is_some_and(|a| a.contains(&ip))
    };
    let spoofed = spoofed(port, also, p, frame, ip6_ok);
    if spoofed {
        return Some(Drop::Spoofed);
    }
    match &p.l3 {
        L3::Ipv6(ip) if ip.proto == wire::ipv6::next_header::ICMPV6 => {
            ip6::nd_refusal(frame, ip, port.mac, port.ip6, v6)
        }
        _ => None,
    }
}

/// The source checks of [`refused`].
fn spoofed(
    port: &Port,
    also: &FxHashMap<PortId, Vec<Ipv4Addr>>,
    p: &Parsed,
    frame: &[u8],
    ip6_ok: impl Fn(std::net::Ipv6Addr) -> bool,
) -> bool {
    if p.eth.src != port.mac {
        return true;
    }
    // The table is looked up only for a source that is not the port's own (rare).
    let ip_ok = |ip: Ipv4Addr| {
        ip == port.ip || ip.is_unspecified() || also.get(&port.id).is_some_and(|a| a.contains(&ip))
    };
    match &p.l3 {
        L3::Ipv4(ip) => !ip_ok(ip.src),
        L3::Arp(a) => a.sender_mac != port.mac || !ip_ok(a.sender_ip),
        // An IPv4 header that does not parse is judged by the source it claims.
        L3::Malformed if p.eth.ethertype == EtherType::IPV4 => {
            ipv4::claimed_src(EthFrame::payload(frame)).is_some_and(|ip| !ip_ok(ip))
        }
        L3::Ipv6(ip) => !ip6_ok(ip.src),
        L3::Malformed if p.eth.ethertype == EtherType::IPV6 => {
            wire::ipv6::claimed_src(EthFrame::payload(frame)).is_some_and(|ip| !ip6_ok(ip))
        }
        _ => false,
    }
}
