//! Stage 1, receive: read a batch from a ready port into the worker's buffers (TAP reads, the
//! uplink's `recvmmsg`, UDP GRO reads of VXLAN), and for the overlay check each datagram (VNI,
//! peer), coalesce consecutive TCP segments back into a super-frame, make the inner frame's one
//! parse, learn its source behind the VTEP and hand it to the L2 stage (frames from ports go to
//! the classify stage).

use std::io;

use overlay::rx::Refused;

use wire::checksum;
use wire::{vxlan, Parsed, VirtioNetHdr};

use super::{Ctx, Got, GsoBufs, Ingress, NetRt, BATCH, UPLINK_BATCH};
use crate::capture::Dir;
use crate::counters::Drop;
use crate::port::{Device, Port};

impl Ctx<'_> {
    pub(super) fn drain_port(&mut self, port: &Port) {
        let mut budget = BATCH;
        while budget > 0 {
            let r = match &port.dev {
                Device::Vxlan(v) => crate::sys::udp::recv_gro(&v.udp, &mut self.gso.rx)
                    .map(|(n, a, g)| Got::Vxlan(n, a, g)),
                Device::Packet(p) => self.recv_uplink(p.queue(self.c.queue)).map(Got::Batch),
                dev => dev
                    .read(self.c.queue, self.buf.rx_area(dev.hdr_len()))
                    .map(Got::One),
            };
            match r {
                Ok(Got::One(n)) => {
                    budget -= 1;
                    self.process(port, n);
                }
                Ok(Got::Vxlan(n, from, gso)) => {
                    budget -= 1;
                    self.vxlan_in(port, n, from, gso);
                }
                Ok(Got::Batch(k)) => {
                    // Each frame of the batch is processed in the worker's buffer: swap it in
                    // and out (pointer swaps, no copy).
                    for i in 0..k {
                        std::mem::swap(self.buf, &mut self.gso.batch[i]);
                        self.process(port, self.gso.batch_lens[i]);
                        std::mem::swap(self.buf, &mut self.gso.batch[i]);
                    }
                    budget = budget.saturating_sub(k.max(1));
                    if k < UPLINK_BATCH {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A packet socket reports a link going down once; it is not fatal. Nor is an
                // ICMP error reported on the VXLAN socket.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(
                            libc::ENETDOWN
                                | libc::ECONNREFUSED
                                | libc::EHOSTUNREACH
                                | libc::ENETUNREACH
                        )
                    ) =>
                {
                    return
                }
                Err(e) => {
                    // The device is gone (its namespace was deleted, say): stop polling it so a
                    // dead fd cannot spin the worker. The endpoint stays until it is detached.
                    log::warn!("port {}: read failed: {e}; port stopped", port.name);
                    let _ = self.epoll.delete(port.dev.queue_fd(self.c.queue));
                    return;
                }
            }
        }
    }

    /// Read up to [`UPLINK_BATCH`] frames from the uplink's packet socket with one syscall into
    /// the worker's batch buffers.
    pub(super) fn recv_uplink(
        &mut self,
        p: &crate::sys::packet::PacketSocket,
    ) -> io::Result<usize> {
        let hdr = crate::sys::packet::VNET_HDR_LEN;
        let mut bufs = self.gso.batch.iter_mut();
        let mut areas: [&mut [u8]; UPLINK_BATCH] =
            std::array::from_fn(|_| bufs.next().map(|b| b.rx_area(hdr)).unwrap_or_default());
        p.recv_batch(&mut areas, &mut self.gso.batch_lens)
    }

    /// One UDP read from the VTEP socket: `n` bytes from `from`, several datagrams of `gso`
    /// bytes each when the kernel coalesced them (UDP GRO).
    pub(super) fn vxlan_in(
        &mut self,
        inp: &Port,
        n: usize,
        from: std::net::SocketAddr,
        gso: Option<u16>,
    ) {
        let size = gso.map_or(n, usize::from).max(1);
        let mut off = 0;
        while off < n {
            let end = (off + size).min(n);
            self.vxlan_datagram(inp, off..end, from.ip());
            off = end;
        }
        if n == 0 {
            self.c.drop(Drop::Malformed);
        }
    }

    /// A VXLAN datagram (`self.gso.rx[at]`) from `vtep`: check it, then either append its inner
    /// TCP segment to the super-frame being coalesced or handle the inner frame on its own.
    pub(super) fn vxlan_datagram(
        &mut self,
        inp: &Port,
        at: std::ops::Range<usize>,
        vtep: std::net::IpAddr,
    ) {
        let cfg = self.cfg;
        let c = self.c;
        let GsoBufs {
            rx,
            co,
            co_net,
            co_vtep,
            ..
        } = &mut *self.gso;
        let pkt = &rx[at.clone()];
        inp.count_rx(pkt.len());
        let port = match &inp.dev {
            Device::Vxlan(v) => v.port,
            _ => return,
        };
        let network = |vni| {
            cfg.vnis
                .get(&(port, vni))
                .and_then(|id| cfg.networks.get(id))
        };
        let (net, inner) = match overlay::rx::accept(pkt, vtep, network, |n| &n.peers) {
            Ok(accepted) => accepted,
            Err(Refused::Malformed) => return c.drop(Drop::Malformed),
            Err(Refused::UnknownVni) => return c.drop(Drop::VxlanUnknownVni),
            Err(Refused::UnknownPeer) => return c.drop(Drop::VxlanUnknownPeer),
        };
        if co.segs > 0 {
            if *co_net == net.id
                && *co_vtep == vtep
                && co.accepts(self.buf.data(), self.buf.len(), inner)
            {
                let flags = co.flags_of(inner);
                let payload = &inner[co.hdr_len..];
                if self.buf.append(payload) {
                    co.appended(payload.len(), flags);
                    return;
                }
            }
            // Not a continuation: deliver what was pending (which leaves the receive buffer
            // alone), then start over with this one.
            self.flush_coalesced();
            self.buf
                .set(&self.gso.rx[at.start + vxlan::HEADER_LEN..at.end]);
        } else {
            self.buf.set(inner);
        }
        let Some(p) = Parsed::parse(self.buf.data()) else {
            return c.drop(Drop::Malformed);
        };
        let g = &mut *self.gso;
        if g.co.start(&p, self.buf.data()) {
            (g.co_net, g.co_vtep) = (net.id, vtep);
            return;
        }
        self.vxlan_deliver(net, vtep, p);
    }

    /// Deliver the super-frame coalesced so far (if any) as one frame with GSO metadata.
    pub(super) fn flush_coalesced(&mut self) {
        let cfg = self.cfg;
        let g = &mut *self.gso;
        if g.co.segs == 0 {
            return;
        }
        let (net, vtep) = (g.co_net, g.co_vtep);
        if let Some(v) = g.co.finish(self.buf.data_mut()) {
            self.buf.vnet = v;
        }
        // The merged frame is a new frame: its one parse is here.
        let (Some(net), Some(p)) = (cfg.networks.get(&net), Parsed::parse(self.buf.data())) else {
            return;
        };
        self.vxlan_deliver(net, vtep, p);
    }

    /// The inner frame in `self.buf` came from `vtep` in `net`: learn its source behind the
    /// VTEP and switch it within its network (never back to the overlay: split horizon).
    pub(super) fn vxlan_deliver(&mut self, net: &NetRt, vtep: std::net::IpAddr, p: Parsed) {
        let now = self.now;
        let c = self.c;
        let eth = p.eth;
        if !eth.src.is_valid_unicast() {
            return c.drop(Drop::Malformed);
        }
        if let Some(r) = &net.remote {
            if net.fdb.lookup(eth.src, now).is_some() {
                net.fdb.forget(eth.src); // it moved behind the VTEP
            }
            if !r.learn(eth.src.0, vtep, now) {
                c.drop(Drop::FdbFull);
            }
        }
        if self.buf.vnet.flags & VirtioNetHdr::F_NEEDS_CSUM == 0 {
            checksum::complete_partial_l4(self.buf.data_mut());
        }
        net.taps.emit_counted(Dir::Rx, self.buf.data(), c);
        self.switch_frame(net, Ingress::Remote(vtep), &p);
    }
}
