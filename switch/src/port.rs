//! Switch ports: a device the switch reads frames from and writes frames to ([`Device`]: a TAP
//! endpoint in a namespace, the uplink's packet sockets, a VTEP's UDP and raw sockets, or a sink
//! for the device-less harness), with its counters, flood limiter and capture taps.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::capture::{Dir, Taps};
use crate::counters::{add_shared, Drop, WorkerCounters};
use crate::fdb::PortId;
use crate::model::PortCounters;
use crate::sys::packet::PacketQueues;
use crate::sys::tap::Tap;
use crate::wire::{MacAddr, VirtioNetHdr};

/// The device behind a port.
#[derive(Debug)]
pub enum Device {
    /// A TAP endpoint in a namespace.
    Tap(Tap),
    /// A host interface taken as the uplink (AF_PACKET sockets, one per worker).
    Packet(PacketQueues),
    /// A VTEP: VXLAN in (UDP socket) and out (raw IPv4).
    Vxlan(VxlanDev),
    /// No device: frames written are discarded, nothing is ever read. Frames enter through
    /// [`crate::Switch::inject`] (the fuzzing harness). Its field is the header length
    /// (12 as on a TAP, 10 as on the uplink's packet socket).
    Sink(usize),
    /// The packet tracer's stand-in for a port ([`Port::shadow`]): nothing is read, what is
    /// written is kept for the trace to show.
    Shadow(ShadowDev),
}

/// A [`Device::Shadow`]: the header length of the device it stands in for, the frames written
/// to it, and for a VTEP its outer source address and UDP port.
#[derive(Debug, Default)]
pub struct ShadowDev {
    hdr: usize,
    sent: std::sync::Mutex<Vec<Vec<u8>>>,
    /// A VTEP's outer source and UDP port.
    pub vtep: Option<(std::net::IpAddr, u16)>,
}

impl ShadowDev {
    /// The frames written so far (without their device headers).
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The sockets of one VTEP (one UDP port, every VNI).
#[derive(Debug)]
pub struct VxlanDev {
    /// Receives VXLAN packets.
    pub udp: std::net::UdpSocket,
    /// Sends encapsulated packets with our own outer headers.
    pub raw: crate::sys::udp::RawIpSender,
    /// The UDP port.
    pub port: u16,
    /// Outer source address (`0.0.0.0`: the kernel picks per route). An IPv6 address makes
    /// an IPv6 underlay: the socket is IPv6 and the kernel writes the outer headers.
    pub src: std::net::IpAddr,
}

impl Device {
    /// Bytes of virtio-net header in front of each frame on this device.
    pub fn hdr_len(&self) -> usize {
        match self {
            Device::Tap(_) => VirtioNetHdr::LEN,
            Device::Packet(_) => crate::sys::packet::VNET_HDR_LEN,
            Device::Vxlan(_) => wire::vxlan::HEADER_LEN,
            Device::Sink(n) => *n,
            Device::Shadow(s) => s.hdr,
        }
    }

    /// Receive queues: one per worker on a multi-queue TAP or the uplink's fanout group, else 1.
    pub fn queues(&self) -> usize {
        match self {
            Device::Tap(t) => t.queues(),
            Device::Packet(p) => p.queues(),
            _ => 1,
        }
    }

    /// The fd of TAP or uplink queue `q` (the only fd of other devices).
    pub fn queue_fd(&self, q: usize) -> std::os::fd::RawFd {
        match self {
            Device::Tap(t) => t.queue_fd(q),
            Device::Packet(p) => std::os::fd::AsRawFd::as_raw_fd(p.queue(q)),
            dev => std::os::fd::AsRawFd::as_raw_fd(dev),
        }
    }

    /// Read one `[vnet hdr | frame]` (from TAP queue `q`).
    pub fn read(&self, q: usize, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Device::Tap(t) => t.read(q, buf),
            Device::Packet(p) => p.queue(q).read(buf),
            Device::Vxlan(v) => v.udp.recv(buf),
            Device::Sink(_) | Device::Shadow(_) => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Write one `[vnet hdr | frame]` (through TAP queue `q`).
    pub fn write(&self, q: usize, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Device::Tap(t) => t.write(q, buf),
            Device::Packet(p) => p.queue(q).write(buf),
            Device::Vxlan(_) => Err(std::io::Error::other(
                "VXLAN ports send through encapsulation",
            )),
            Device::Sink(_) => Ok(buf.len()),
            Device::Shadow(s) => {
                let frame = buf.get(s.hdr..).unwrap_or_default().to_vec();
                s.sent.lock().unwrap_or_else(|e| e.into_inner()).push(frame);
                Ok(buf.len())
            }
        }
    }
}

impl std::os::fd::AsRawFd for Device {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Device::Tap(t) => t.as_raw_fd(),
            Device::Packet(p) => p.queue(0).as_raw_fd(),
            Device::Vxlan(v) => std::os::fd::AsRawFd::as_raw_fd(&v.udp),
            Device::Sink(_) | Device::Shadow(_) => -1,
        }
    }
}

/// The network id of the uplink port (no network).
pub const UPLINK_NET: NetId = 0;
/// The network id of VTEP ports (every overlay network).
pub const VXLAN_NET: NetId = NetId::MAX;

/// Identifier of a network; unique for the daemon's lifetime.
pub type NetId = u32;

/// Per-port traffic counters; every worker may write them (each serves its own queue of a
/// multi-queue TAP), so they are added to with atomic read-modify-writes.
#[derive(Debug, Default)]
pub struct PortStats {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    tx_dropped: AtomicU64,
}

impl PortStats {
    /// A snapshot for the API.
    pub fn snapshot(&self) -> PortCounters {
        PortCounters {
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            tx_dropped: self.tx_dropped.load(Ordering::Relaxed),
        }
    }
}

/// Token bucket limiting how many frames a port may flood per second. Updated with plain loads
/// and stores: when two workers serve queues of one port at once, a token may be spent twice,
/// which makes the limit approximate (never unbounded) at no per-frame locking cost.
#[derive(Debug)]
pub struct FloodLimiter {
    tokens: AtomicU64,
    last_ms: AtomicU64,
    rate_per_s: u64,
    /// Refusing since the last allowed take (for the event stream's begin/end).
    limited: std::sync::atomic::AtomicBool,
}

impl FloodLimiter {
    /// A bucket refilled at `rate_per_s` and holding at most that many tokens.
    pub fn new(rate_per_s: u64) -> FloodLimiter {
        FloodLimiter {
            tokens: AtomicU64::new(rate_per_s),
            last_ms: AtomicU64::new(0),
            rate_per_s,
            limited: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Note the outcome of [`Self::allow`]: `Some(true)` when limiting just began, `Some(false)`
    /// when it just ended, `None` otherwise. // HOT PATH (one relaxed load when nothing changed)
    #[inline]
    pub fn transition(&self, allowed: bool) -> Option<bool> {
        if self.limited.load(Ordering::Relaxed) == allowed {
            self.limited.store(!allowed, Ordering::Relaxed);
            return Some(!allowed);
        }
        None
    }

    /// Limiting (refusing since the last allowed take) and a token back by `now_ms`: limiting
    /// has ended even if the port floods nothing more (the housekeeping thread's check, so
    /// `flood_limit_end` is told within a second).
    pub fn recovered(&self, now_ms: u64) -> bool {
        if !self.limited.load(Ordering::Relaxed) {
            return false;
        }
        let last = self.last_ms.load(Ordering::Relaxed);
        let refill = now_ms.saturating_sub(last).saturating_mul(self.rate_per_s) / 1000;
        self.tokens.load(Ordering::Relaxed).saturating_add(refill) > 0
    }

    /// A copy of the bucket as it is now, which changes independently (the packet tracer's).
    pub fn duplicate(&self) -> FloodLimiter {
        let l = |a: &AtomicU64| AtomicU64::new(a.load(Ordering::Relaxed));
        FloodLimiter {
            tokens: l(&self.tokens),
            last_ms: l(&self.last_ms),
            rate_per_s: self.rate_per_s,
            limited: std::sync::atomic::AtomicBool::new(self.limited.load(Ordering::Relaxed)),
        }
    }

    /// Take a token at `now_ms`; false when the bucket is empty. // HOT PATH
    pub fn allow(&self, now_ms: u64) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        let mut tokens = self.tokens.load(Ordering::Relaxed);
        let refill = now_ms.saturating_sub(last).saturating_mul(self.rate_per_s) / 1000;
        if refill > 0 {
            tokens = tokens.saturating_add(refill).min(self.rate_per_s);
            self.last_ms.store(now_ms, Ordering::Relaxed);
        }
        if tokens == 0 {
            self.tokens.store(0, Ordering::Relaxed);
            return false;
        }
        self.tokens.store(tokens - 1, Ordering::Relaxed);
        true
    }
}

/// A switch port: a TAP endpoint in a namespace, or the uplink.
pub struct Port {
    /// Port identifier.
    pub id: PortId,
    /// Port name (`p<id>`).
    pub name: String,
    /// Network the port belongs to.
    pub network: NetId,
    /// The device.
    pub dev: Device,
    /// Endpoint MAC (configured at attach).
    pub mac: MacAddr,
    /// Endpoint address.
    pub ip: Ipv4Addr,
    /// Endpoint IPv6 address (dual-stack networks).
    pub ip6: Option<Ipv6Addr>,
    /// Worker serving this port's receive queue (a multi-queue TAP's queues are served by
    /// every worker, one each).
    pub worker: usize,
    /// Counters.
    pub stats: PortStats,
    /// Capture taps.
    pub taps: Arc<Taps>,
    /// Flooding rate limit for frames received on this port.
    pub flood: FloodLimiter,
    /// Anti-spoofing: only `mac` and `ip` may appear as sources of frames from this port.
    pub spoof_check: bool,
}

impl Port {
    /// Count a received frame of `len` bytes (several workers may read one multi-queue TAP).
    /// // HOT PATH
    #[inline]
    pub fn count_rx(&self, len: usize) {
        add_shared(&self.stats.rx_packets, 1);
        add_shared(&self.stats.rx_bytes, len as u64);
    }

    /// The packet tracer's stand-in for this port: the same identity, addresses and policy,
    /// no device ([`Device::Shadow`]: what is written is kept), counters and taps of its own, a
    /// copy of the flood bucket.
    pub fn shadow(&self) -> Port {
        Port {
            id: self.id,
            name: self.name.clone(),
            network: self.network,
            dev: Device::Shadow(ShadowDev {
                hdr: self.dev.hdr_len(),
                sent: Default::default(),
                vtep: match &self.dev {
                    Device::Vxlan(v) => Some((v.src, v.port)),
                    _ => None,
                },
            }),
            mac: self.mac,
            ip: self.ip,
            ip6: self.ip6,
            worker: self.worker,
            stats: PortStats::default(),
            taps: Arc::default(),
            flood: self.flood.duplicate(),
            spoof_check: self.spoof_check,
        }
    }

    /// Count a frame sent by other means (VXLAN encapsulation).
    pub fn count_tx(&self, len: usize) {
        add_shared(&self.stats.tx_packets, 1);
        add_shared(&self.stats.tx_bytes, len as u64);
    }

    /// Count `packets` datagrams of `bytes` in all sent at once (UDP GSO).
    pub fn count_tx_many(&self, packets: usize, bytes: usize) {
        add_shared(&self.stats.tx_packets, packets as u64);
        add_shared(&self.stats.tx_bytes, bytes as u64);
    }

    /// Count a frame that could not be sent by other means.
    pub fn count_tx_drop(&self) {
        add_shared(&self.stats.tx_dropped, 1);
    }

    /// Write `[vnet hdr | frame]` (the header as long as [`Device::hdr_len`]) to the device,
    /// counting and capturing it. A TAP is written through the calling worker's queue.
    /// // HOT PATH
    #[inline]
    pub fn transmit(&self, wire: &[u8], counters: &WorkerCounters) {
        let frame = &wire[self.dev.hdr_len()..];
        match self.dev.write(counters.queue, wire) {
            Ok(_) => {
                add_shared(&self.stats.tx_packets, 1);
                add_shared(&self.stats.tx_bytes, frame.len() as u64);
            }
            Err(_) => {
                add_shared(&self.stats.tx_dropped, 1);
                counters.drop(Drop::TxError);
            }
        }
        self.capture_tx(frame, counters);
    }

    /// Hand a frame sent on this port to its captures (a full capture queue counts a drop).
    #[inline]
    pub fn capture_tx(&self, frame: &[u8], counters: &WorkerCounters) {
        self.taps.emit_counted(Dir::Tx, frame, counters);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn flood_limiter_refills() {
        let l = FloodLimiter::new(10);
        assert!((0..10).all(|_| l.allow(0)));
        assert!(!l.allow(0));
        assert!(!l.allow(50)); // 0.5 tokens: not yet
        assert!(l.allow(100));
        assert!(!l.allow(100));
        assert!((0..10).all(|_| l.allow(10_000)));
        assert!(!l.allow(10_000));
    }
}
