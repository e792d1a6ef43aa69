//! Stage 5, transmit: VXLAN encapsulation (one copy per VTEP; super-frames cut by software TSO
//! and sent with UDP GSO), and the uplink's and VTEPs' batched sends. TAP ports are written
//! directly by the stage that chose them ([`crate::port::Port::transmit`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use overlay::gso;
use wire::checksum;
use wire::ethernet::EthFrame;
use wire::{vxlan, Parsed, VirtioNetHdr};

use super::{Ctx, NetRt};
use crate::counters::Drop;
use crate::fdb::PortId;
use crate::port::{Device, Port, VxlanDev};

impl Ctx<'_> {
    /// Send the frames held for the uplink or a VTEP.
    pub(crate) fn flush_tx(&mut self) {
        self.gso.txb.flush(self.c);
    }

    /// Send the frame in `self.buf` out of the uplink (`port`), held for a batched send.
    /// // HOT PATH
    pub(crate) fn send_uplink(&mut self, port: &Arc<Port>) {
        let wire = self.buf.wire_bytes(crate::sys::packet::VNET_HDR_LEN);
        port.capture_tx(&wire[crate::sys::packet::VNET_HDR_LEN..], self.c);
        self.gso.txb.send(port, wire, Ipv4Addr::UNSPECIFIED, self.c);
    }

    /// Send `wire` (`[vnet hdr | frame]`) out of the uplink (`port`), after the frames held.
    pub(crate) fn send_uplink_bytes(&mut self, port: &Arc<Port>, wire: &[u8]) {
        self.flush_tx();
        port.transmit(wire, self.c);
    }

    /// Send the frame to every local port of `net` but `except` and, when `to_peers`, to every
    /// peer VTEP of an overlay network (head-end replication).
    pub(super) fn replicate(
        &mut self,
        net: &NetRt,
        except: Option<PortId>,
        to_peers: bool,
        p: &Parsed,
    ) {
        let bytes = self.buf.tap_bytes();
        for port in net.ports.iter().filter(|port| Some(port.id) != except) {
            port.transmit(bytes, self.c);
        }
        if to_peers && !net.peers.is_empty() {
            self.encap(net, &net.peers, p);
        }
    }

    /// Encapsulate the frame in VXLAN for `net` and send one copy to each VTEP in `vteps`.
    pub(crate) fn encap(&mut self, net: &NetRt, vteps: &[IpAddr], p: &Parsed) {
        if self.trace.is_some() && self.traced_encap(net, vteps, p) {
            return;
        }
        let c = self.c;
        let (Some(vni), Some(vtep)) = (net.vni, net.vtep.as_ref()) else {
            return;
        };
        let Device::Vxlan(dev) = &vtep.dev else {
            return;
        };
        let vnet = self.buf.vnet;
        if vnet.gso_type != 0 {
            return self.encap_gso(net, vni, vtep, dev, vteps, p);
        }
        if self.buf.len() > net.mtu as usize + EthFrame::HEADER_LEN {
            // Larger than the overlay MTU: never fragment the underlay.
            return c.drop(Drop::Oversize);
        }
        if vnet.flags & VirtioNetHdr::F_NEEDS_CSUM != 0 {
            checksum::finish(
                self.buf.data_mut(),
                usize::from(vnet.csum_start),
                usize::from(vnet.csum_offset),
            );
            self.buf.vnet = Default::default();
        }
        let IpAddr::V4(src) = dev.src else {
            return self.encap_udp(vni, vtep, dev, vteps);
        };
        let sport = vxlan::source_port(p);
        let inner_len = self.buf.len();
        // Unicast is held for a batched send. Head-end replication rewrites the outer
        // destination in place, so each copy goes at once, after what is held.
        let unicast = vteps.len() == 1;
        if !unicast {
            self.flush_tx();
        }
        let mut written = false;
        for dst in vteps {
            let IpAddr::V4(dst) = dst else {
                c.drop(Drop::TxError); // a peer of the other family (refused at configuration)
                continue;
            };
            let hdr: &mut [u8; vxlan::OUTER_LEN] = self
                .buf
                .headroom_mut(vxlan::OUTER_LEN)
                .try_into()
                .expect("headroom holds outer headers");
            if !written {
                vxlan::write_outer(hdr, src, *dst, sport, dev.port, vni, inner_len);
                written = true;
            } else {
                vxlan::set_outer_dst(hdr, *dst);
            }
            let pkt = self.buf.with_headroom(vxlan::OUTER_LEN);
            if unicast {
                self.gso.txb.send(vtep, pkt, *dst, c);
                continue;
            }
            match dev.raw.send_to(pkt, *dst) {
                Ok(_) => vtep.count_tx(pkt.len()),
                Err(_) => {
                    vtep.count_tx_drop();
                    c.drop(Drop::TxError);
                }
            }
        }
    }

    /// Encapsulate the frame in VXLAN over an IPv6 underlay: the VXLAN header in the headroom,
    /// one UDP send per VTEP (the kernel writes the outer IPv6 and UDP headers and the UDP
    /// checksum IPv6 requires).
    fn encap_udp(&mut self, vni: u32, vtep: &Port, dev: &VxlanDev, vteps: &[IpAddr]) {
        let c = self.c;
        self.flush_tx();
        let hdr: &mut [u8; vxlan::HEADER_LEN] = self
            .buf
            .headroom_mut(vxlan::HEADER_LEN)
            .try_into()
            .expect("headroom holds the VXLAN header");
        vxlan::write_header(hdr, vni);
        let pkt = self.buf.with_headroom(vxlan::HEADER_LEN);
        for dst in vteps {
            match dev.udp.send_to(pkt, SocketAddr::new(*dst, dev.port)) {
                Ok(_) => vtep.count_tx(pkt.len()),
                Err(_) => {
                    vtep.count_tx_drop();
                    c.drop(Drop::TxError);
                }
            }
        }
    }

    /// Encapsulate a TCP super-frame: cut it into segments that fit the overlay MTU (each with
    /// its VXLAN header, in one buffer) and send them with as few UDP GSO sends as the kernel's
    /// limits allow (64 segments, 64 KiB), to each VTEP.
    pub(super) fn encap_gso(
        &mut self,
        net: &NetRt,
        vni: u32,
        vtep: &Port,
        dev: &VxlanDev,
        vteps: &[IpAddr],
        p: &Parsed,
    ) {
        let c = self.c;
        let vnet = self.buf.vnet;
        let Some(t) = gso::Tcp4::of(p, self.buf.len())
            .filter(|t| vnet.gso_type & 0x7f == if t.v6 { gso::GSO_TCPV6 } else { gso::GSO_TCPV4 })
        else {
            // Only TCP super-frames are segmented (overlay TAPs offer TSO4 and TSO6 alone).
            return c.drop(Drop::Oversize);
        };
        // Segments must fit the overlay MTU, whatever MSS the sender's network had.
        let room = (net.mtu as usize + EthFrame::HEADER_LEN).saturating_sub(t.hdr_len);
        let mss = usize::from(vnet.gso_size).min(room);
        let Some(s) = gso::segment_tcp4(self.buf.data(), t, mss, vni, &mut self.gso.tx) else {
            return c.drop(Drop::Oversize);
        };
        // Frames of this flow held for the VTEP go first.
        self.flush_tx();
        let per_send = (MAX_GSO_SEGS).min(MAX_GSO_BYTES / s.size).max(1);
        let chunk = per_send * s.size;
        for dst in vteps {
            let to = SocketAddr::new(*dst, dev.port);
            for part in self.gso.tx[..s.len].chunks(chunk) {
                match crate::sys::udp::send_segments(&dev.udp, part, to, s.size as u16) {
                    Ok(n) => vtep.count_tx_many(part.len().div_ceil(s.size), n),
                    Err(_) => {
                        vtep.count_tx_drop();
                        c.drop(Drop::TxError);
                    }
                }
            }
        }
    }
}

/// Most datagrams in one UDP GSO send (`UDP_MAX_SEGMENTS` of older kernels).
const MAX_GSO_SEGS: usize = 64;
/// Most bytes in one UDP GSO send (one IPv4 datagram's worth, less the headers).
const MAX_GSO_BYTES: usize = 65_000;
