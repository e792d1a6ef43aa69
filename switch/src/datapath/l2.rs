//! Stage 3, local answers and switching within a network: ARP (snooping, answers for the
//! gateway and known endpoints, replication of replies to peers), the gateway's ping, then
//! unicast by the FDB, to the VTEP a remote MAC lives behind, or flood (locally and, for frames
//! from local ports, to every peer VTEP). Frames for the gateway MAC go to the route stage.

use wire::arp::{self, Arp};
use wire::ethernet::{EthFrame, EtherType};
use wire::{MacAddr, Parsed, VirtioNetHdr, L3};

use super::{Ctx, Ingress, NetRt};
use crate::capture::Dir;
use crate::counters::{Drop, Event};
use crate::local::{self, NotAnswered};

/// The MAC of ff02::16, all MLDv2-capable routers: where hosts send their membership reports.
const MLDV2_ROUTERS: MacAddr = MacAddr([0x33, 0x33, 0, 0, 0, 0x16]);

impl Ctx<'_> {
    /// L2 decision for a frame of network `net`: local delivery, unicast, or flood.
    pub(super) fn switch_frame(&mut self, net: &NetRt, ing: Ingress<'_>, p: &Parsed) {
        let cfg = self.cfg;
        let now = self.now;
        let c = self.c;
        let eth = &p.eth;
        if let (L3::Ipv6(_), Some(v6)) = (&p.l3, &net.v6) {
            if self.nd(net, v6, ing, p) {
                return;
            }
        }
        if let L3::Arp(arp) = &p.l3 {
            if self.arp(net, ing, eth, arp) {
                return;
            }
        } else if eth.ethertype == EtherType::ARP {
            c.drop(Drop::Malformed);
            return;
        } else if eth.dst == net.gateway_mac {
            self.note("l2", || {
                format!(
                    "destination {} is the gateway's MAC: to the gateway",
                    eth.dst
                )
            });
            self.for_gateway(net, ing, p);
            return;
        }
        if !net.icc {
            // Endpoints of an icc=false network reach only the gateway.
            self.note("policy", || {
                format!(
                    "network {} has icc=false: endpoints reach only the gateway",
                    net.name
                )
            });
            c.drop(Drop::Policy);
            return;
        }
        if eth.dst.is_multicast() {
            if eth.dst == MLDV2_ROUTERS {
                // Every new interface sends a few; flooded, 1000 interfaces coming up at once
                // cost each other a million copies.
                c.event(Event::MldAbsorbed);
                return;
            }
            self.note("l2", || {
                format!("destination {} is multicast: flood", eth.dst)
            });
            self.flood(net, ing, p);
            return;
        }
        match self.fdbc.lookup(&net.fdb, net.id, eth.dst, now) {
            Some(id) if matches!(ing, Ingress::Local(p) if p.id == id) => {
                self.note("fdb", || {
                    format!(
                        "destination {} is on the port it came from: dropped",
                        eth.dst
                    )
                });
                c.drop(Drop::SamePort)
            }
            Some(id) => match cfg.ports.get(&id).filter(|p| p.network == net.id) {
                Some(out) => {
                    self.note("fdb", || {
                        let age = net
                            .fdb
                            .entries(now)
                            .into_iter()
                            .find(|e| e.mac == eth.dst)
                            .map_or(0, |e| e.age_ms);
                        format!(
                            "destination {} is on port {} ({}), seen {} ms ago: unicast",
                            eth.dst, out.name, out.ip, age
                        )
                    });
                    out.transmit(self.buf.tap_bytes(), c)
                }
                None => self.flood(net, ing, p),
            },
            None => match (
                ing,
                net.remote.as_ref().and_then(|r| r.lookup(&eth.dst.0, now)),
            ) {
                (Ingress::Local(_), Some(vtep)) => {
                    self.note("fdb", || {
                        format!("destination {} is behind VTEP {vtep} (remote FDB)", eth.dst)
                    });
                    self.encap(net, &[vtep], p)
                }
                _ => {
                    self.note("fdb", || format!("destination {} unknown: flood", eth.dst));
                    self.flood(net, ing, p)
                }
            },
        }
    }

    /// ARP: snoop the sender, answer for the gateway and for known endpoints. Returns true when
    /// the frame was consumed.
    pub(super) fn arp(&mut self, net: &NetRt, ing: Ingress<'_>, eth: &EthFrame, arp: &Arp) -> bool {
        let c = self.c;
        if arp.sender_mac == eth.src
            && net.subnet.is_host(arp.sender_ip)
            && arp.sender_ip != net.gateway_ip
        {
            let known = net.neigh.get(&arp.sender_ip).map(|m| *m);
            if known != Some(arp.sender_mac) {
                net.neigh.insert(arp.sender_ip, arp.sender_mac);
            }
        }
        if !arp.is_request {
            // Replies to the gateway are consumed; other replies are forwarded as usual. The
            // gateway is the same MAC on every host of an overlay network, so a reply to a
            // probe another host sent ends here: replicate it to the peers so they learn too.
            if eth.dst != net.gateway_mac {
                return false;
            }
            if matches!(ing, Ingress::Local(_)) && !net.peers.is_empty() {
                self.encap(net, &net.peers, &Parsed::arp(*eth, *arp));
            }
            return true;
        }
        let answer = if arp.target_ip == net.gateway_ip {
            c.event(Event::ArpGateway);
            net.gateway_mac
        } else if arp.sender_ip == arp.target_ip {
            self.note("arp", || "gratuitous ARP: switched as any frame".into());
            return false; // gratuitous ARP: let everybody see it
        } else if !net.icc {
            self.note("arp", || {
                format!(
                    "network {} has icc=false: no answer for other endpoints",
                    net.name
                )
            });
            self.c.drop(Drop::Policy);
            return true;
        } else {
            match net.neigh.get(&arp.target_ip).map(|m| *m) {
                // For a requester on another host, answer only for endpoints that live here:
                // the reply's source MAC teaches that host where the endpoint is.
                Some(mac)
                    if matches!(ing, Ingress::Remote(_))
                        && net.fdb.lookup(mac, self.now).is_none() =>
                {
                    return false
                }
                Some(mac) if mac != arp.sender_mac => {
                    c.event(Event::ArpSuppressed);
                    mac
                }
                _ => return false,
            }
        };
        self.note("arp", || {
            format!(
                "who-has {}: answered by the switch, {answer}",
                arp.target_ip
            )
        });
        arp::reply_in_place(self.buf.data_mut(), arp, answer);
        self.reply(net, ing);
        true
    }

    /// A frame addressed to the gateway MAC that is not ARP: answered (ping) or routed.
    pub(super) fn for_gateway(&mut self, net: &NetRt, ing: Ingress<'_>, p: &Parsed) {
        let c = self.c;
        let ip = match p.l3 {
            L3::Ipv4(ip) => ip,
            L3::Ipv6(ip) => return self.for_gateway6(net, ing, p, ip),
            L3::Malformed if p.eth.ethertype == EtherType::IPV4 => return c.drop(Drop::Malformed),
            _ => return c.drop(Drop::NoRoute),
        };
        match local::icmp_echo_reply_in_place(
            self.buf.data_mut(),
            p,
            net.gateway_ip,
            net.gateway_mac,
        ) {
            Ok(len) => {
                self.note("gateway", || {
                    "ICMP echo request to the gateway: answered".into()
                });
                c.event(Event::IcmpGateway);
                self.buf.set_len(len);
                self.reply(net, ing);
            }
            Err(NotAnswered::Malformed) => c.drop(Drop::Malformed),
            Err(NotAnswered::NotForUs) => self.route(Some(net), p.eth, ip),
        }
    }

    /// Send the frame the switch just made in `self.buf` back where the request came from.
    pub(super) fn reply(&mut self, net: &NetRt, ing: Ingress<'_>) {
        // The switch computed every checksum itself: no offload metadata applies.
        self.buf.vnet = Default::default();
        let bytes = self.buf.tap_bytes();
        net.taps
            .emit_counted(Dir::Tx, &bytes[VirtioNetHdr::LEN..], self.c);
        match ing {
            Ingress::Local(inp) => inp.transmit(bytes, self.c),
            Ingress::Remote(vtep) => {
                // The answer is a frame the switch made: parsed here, once, for its encapsulation.
                if let Some(p) = Parsed::parse(self.buf.data()) {
                    self.encap(net, &[vtep], &p);
                }
            }
        }
    }

    /// Send the frame to every local port of the network but the one it came from and, for
    /// frames from local ports of an overlay network, to every peer VTEP (head-end replication).
    pub(crate) fn flood(&mut self, net: &NetRt, ing: Ingress<'_>, p: &Parsed) {
        let now = self.now;
        let c = self.c;
        if let Ingress::Local(inp) = ing {
            let allowed = inp.flood.allow(now);
            if let Some(began) = inp.flood.transition(allowed) {
                let kind = if began {
                    "flood_limit_begin"
                } else {
                    "flood_limit_end"
                };
                self.shared.bus.publish(
                    crate::events::Topic::Events,
                    kind,
                    || serde_json::json!({"port": inp.name, "network": &*net.name}),
                );
            }
            if !allowed {
                self.note("flood", || {
                    format!("port {} is over its flood rate: dropped", inp.name)
                });
                c.drop(Drop::FloodLimited);
                return;
            }
        }
        self.note("flood", || {
            let except = match ing {
                Ingress::Local(inp) => Some(inp.id),
                Ingress::Remote(_) => None,
            };
            let ports: Vec<&str> = net
                .ports
                .iter()
                .filter(|p| Some(p.id) != except)
                .map(|p| p.name.as_str())
                .collect();
            let peers = match ing {
                Ingress::Local(_) if !net.peers.is_empty() => format!(
                    " and peer VTEPs {}",
                    net.peers
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => String::new(),
            };
            format!("to ports [{}]{peers}", ports.join(", "))
        });
        c.event(Event::Flooded);
        match ing {
            Ingress::Local(inp) => self.replicate(net, Some(inp.id), true, p),
            // Split horizon: what came from a VTEP never goes back to the overlay.
            Ingress::Remote(_) => self.replicate(net, None, false, p),
        }
    }
}
