//! Transmit batching for socket ports (the uplink's packet socket, a VTEP's raw IPv4 socket):
//! the frames a worker sends to one of them during a wake-up are held back and go out with one
//! `sendmmsg` when the worker has drained the port it was reading, when the batch is full, or
//! before anything else is sent on that socket (so a flow's packets keep their order).
//!
//! Only frames of up to [`SLOT`] bytes are held, copied into a preallocated slot: copying a
//! 1.5 KiB frame costs less than the syscall it saves, and it leaves the worker's frame buffer
//! free for the next read. Larger frames (GSO super-frames, jumbo frames) are already one
//! syscall for many packets' worth of bytes and are sent on their own, after the held ones.
//! TAPs have no batched write; their batching is the super-frame (TSO/USO offloads).

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::counters::{Drop, WorkerCounters};
use crate::port::{Device, Port};

/// Frames held at most (one `sendmmsg`).
pub const TX_BATCH: usize = crate::sys::SEND_BATCH_MAX;
/// Largest frame held (with its virtio-net or outer headers); larger ones go at once.
pub const SLOT: usize = 2048;

/// One worker's held frames, all for one port. Allocated once.
pub(crate) struct TxBatch {
    slots: Box<[u8]>,
    lens: [usize; TX_BATCH],
    dsts: [Ipv4Addr; TX_BATCH],
    n: usize,
    port: Option<Arc<Port>>,
}

impl Default for TxBatch {
    fn default() -> Self {
        TxBatch {
            slots: vec![0u8; TX_BATCH * SLOT].into_boxed_slice(),
            lens: [0; TX_BATCH],
            dsts: [Ipv4Addr::UNSPECIFIED; TX_BATCH],
            n: 0,
            port: None,
        }
    }
}

impl TxBatch {
    /// Send `bytes` on `port` (an uplink's `[vnet hdr | frame]`, or a VTEP's outer IPv4 packet
    /// for `dst`): held when it fits a slot, otherwise sent now after the held frames. Counted
    /// on the port when it goes. // HOT PATH
    pub(crate) fn send(
        &mut self,
        port: &Arc<Port>,
        bytes: &[u8],
        dst: Ipv4Addr,
        c: &WorkerCounters,
    ) {
        if self.port.as_ref().is_some_and(|p| !Arc::ptr_eq(p, port)) {
            self.flush(c);
        }
        if bytes.len() > SLOT {
            self.flush(c);
            let r = match &port.dev {
                Device::Vxlan(v) => v.raw.send_to(bytes, dst),
                dev => dev.write(c.queue, bytes),
            };
            count(port, r.is_ok(), bytes.len(), 1, c);
            return;
        }
        let i = self.n;
        self.slots[i * SLOT..i * SLOT + bytes.len()].copy_from_slice(bytes);
        self.lens[i] = bytes.len();
        self.dsts[i] = dst;
        self.n += 1;
        if self.port.is_none() {
            self.port = Some(Arc::clone(port));
        }
        if self.n == TX_BATCH {
            self.flush(c);
        }
    }

    /// Send what is held, with as few `sendmmsg` calls as the kernel takes it in. A frame the
    /// kernel refuses is counted as a transmit drop and skipped.
    pub(crate) fn flush(&mut self, c: &WorkerCounters) {
        let Some(port) = self.port.take() else {
            return;
        };
        let n = std::mem::take(&mut self.n);
        let pkts: [&[u8]; TX_BATCH] = std::array::from_fn(|i| {
            let l = if i < n { self.lens[i] } else { 0 };
            &self.slots[i * SLOT..i * SLOT + l]
        });
        let mut at = 0;
        while at < n {
            let r = match &port.dev {
                Device::Vxlan(v) => v.raw.send_batch(&pkts[at..n], &self.dsts[at..n]),
                Device::Packet(p) => p.queue(c.queue).send_batch(&pkts[at..n]),
                // Other devices are written one frame at a time.
                dev => dev.write(c.queue, pkts[at]).map(|_| 1),
            };
            let sent = match r {
                Ok(k) if k > 0 => k,
                // The frame at `at` was refused (a full queue, an unreachable peer).
                _ => {
                    count(&port, false, pkts[at].len(), 1, c);
                    at += 1;
                    continue;
                }
            };
            let bytes = pkts[at..at + sent].iter().map(|p| p.len()).sum();
            count(&port, true, bytes, sent, c);
            at += sent;
        }
    }

    /// Frames held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.n
    }
}

/// Count `k` frames of `bytes` in all sent on `port` (the virtio-net header of uplink frames
/// left out, as [`Port::transmit`] counts), or one refused.
fn count(port: &Port, sent: bool, bytes: usize, k: usize, c: &WorkerCounters) {
    if sent {
        let hdr = match port.dev {
            Device::Vxlan(_) => 0,
            ref dev => dev.hdr_len(),
        };
        port.count_tx_many(k, bytes.saturating_sub(hdr * k));
    } else {
        port.count_tx_drop();
        c.drop(Drop::TxError);
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::capture::Taps;
    use crate::port::{FloodLimiter, PortStats};

    fn sink(id: u32) -> Arc<Port> {
        Arc::new(Port {
            id,
            name: format!("p{id}"),
            network: 0,
            dev: Device::Sink(10),
            mac: Default::default(),
            ip: Ipv4Addr::UNSPECIFIED,
            ip6: None,
            worker: 0,
            stats: PortStats::default(),
            taps: Arc::new(Taps::default()),
            flood: FloodLimiter::new(1),
            spoof_check: false,
        })
    }

    #[test]
    fn holds_small_frames_sends_large_ones_and_flushes_on_port_change() {
        let c = WorkerCounters::for_worker(0);
        let (a, b) = (sink(1), sink(2));
        let mut t = TxBatch::default();
        let small = [0u8; 10 + 60];
        for _ in 0..TX_BATCH - 1 {
            t.send(&a, &small, Ipv4Addr::UNSPECIFIED, &c);
        }
        assert_eq!(t.held(), TX_BATCH - 1);
        assert_eq!(a.stats.snapshot().tx_packets, 0, "held, not sent");
        t.send(&a, &small, Ipv4Addr::UNSPECIFIED, &c);
        assert_eq!(t.held(), 0, "a full batch goes at once");
        let tx = a.stats.snapshot();
        assert_eq!(
            (tx.tx_packets, tx.tx_bytes),
            (TX_BATCH as u64, 60 * TX_BATCH as u64)
        );

        t.send(&a, &small, Ipv4Addr::UNSPECIFIED, &c);
        t.send(&b, &small, Ipv4Addr::UNSPECIFIED, &c);
        assert_eq!(
            a.stats.snapshot().tx_packets,
            TX_BATCH as u64 + 1,
            "another port flushes"
        );
        assert_eq!(t.held(), 1);
        let big = vec![0u8; SLOT + 1];
        t.send(&b, &big, Ipv4Addr::UNSPECIFIED, &c);
        assert_eq!(t.held(), 0, "a large frame goes after the held ones");
        assert_eq!(b.stats.snapshot().tx_packets, 2);
        t.flush(&c);
        assert_eq!(
            b.stats.snapshot().tx_packets,
            2,
            "nothing held, nothing sent"
        );
    }
}
