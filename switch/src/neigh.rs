//! The uplink's neighbour caches: next-hop address -> MAC (IPv4 learned from ARP, IPv6 from
//! neighbour discovery), with entries that age, and a short queue of frames waiting while a
//! resolution is pending (the slow path: frames are copied only here).

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use dashmap::DashMap;
use rustc_hash::FxBuildHasher;

use crate::wire::MacAddr;

/// Frames queued per cache while resolutions are pending.
pub const PENDING_MAX: usize = 256;
/// How long a queued frame waits for an ARP reply.
pub const PENDING_MS: u64 = 1000;
/// Minimum interval between ARP requests for one address.
pub const REQUEST_INTERVAL_MS: u64 = 200;

/// A frame waiting for its next hop's MAC: `[vnet hdr | frame]` ready to write once the
/// destination MAC is filled in at `dst_mac_at`.
#[derive(Debug)]
pub struct Pending<A = Ipv4Addr> {
    /// Next hop being resolved.
    pub hop: A,
    /// When it was queued.
    pub at_ms: u64,
    /// Offset of the destination MAC within `wire`.
    pub dst_mac_at: usize,
    /// The bytes to write.
    pub wire: Vec<u8>,
}

/// One cache entry as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighEntry<A = Ipv4Addr> {
    /// Address.
    pub ip: A,
    /// MAC address.
    pub mac: MacAddr,
    /// Milliseconds since it was last confirmed.
    pub age_ms: u64,
}

/// The cache, for addresses `A` (IPv4 or IPv6).
pub struct NeighCache<A = Ipv4Addr> {
    map: DashMap<A, (MacAddr, u64), FxBuildHasher>,
    requested: DashMap<A, u64, FxBuildHasher>,
    pending: Mutex<VecDeque<Pending<A>>>,
    ttl_ms: u64,
}

impl<A: Copy + Eq + std::hash::Hash + Ord> NeighCache<A> {
    /// An empty cache whose entries are trusted for `ttl_ms` after the last ARP from them.
    pub fn new(ttl_ms: u64) -> NeighCache<A> {
        NeighCache {
            map: DashMap::with_hasher(FxBuildHasher),
            requested: DashMap::with_hasher(FxBuildHasher),
            pending: Mutex::new(VecDeque::new()),
            ttl_ms,
        }
    }

    /// A copy of the cache as it is now (without the packets waiting for an answer), which
    /// changes independently (the packet tracer's).
    pub fn duplicate(&self) -> NeighCache<A> {
        NeighCache {
            map: self.map.clone(),
            requested: self.requested.clone(),
            pending: Mutex::new(VecDeque::new()),
            ttl_ms: self.ttl_ms,
        }
    }

    /// The MAC of `ip`, unless unknown or stale. // HOT PATH
    pub fn lookup(&self, ip: A, now: u64) -> Option<MacAddr> {
        let e = self.map.get(&ip)?;
        (now.saturating_sub(e.1) <= self.ttl_ms).then_some(e.0)
    }

    /// Record `ip` at `mac` and hand back the frames that were waiting for it.
    pub fn learn(&self, ip: A, mac: MacAddr, now: u64) -> Vec<Pending<A>> {
        self.map.insert(ip, (mac, now));
        self.requested.remove(&ip);
        let mut q = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if q.is_empty() {
            return Vec::new();
        }
        let (ready, rest): (Vec<Pending<A>>, Vec<Pending<A>>) =
            q.drain(..).partition(|p| p.hop == ip);
        q.extend(rest);
        ready
    }

    /// True when `ip` is known or was asked for: an unsolicited answer for any other address is
    /// not learned (the cache stays bounded by what the switch itself resolves).
    pub fn expects(&self, ip: A) -> bool {
        self.map.contains_key(&ip) || self.requested.contains_key(&ip)
    }

    /// Queue a frame for `hop`; false (frame dropped) when the queue is full.
    pub fn enqueue(&self, p: Pending<A>) -> bool {
        let mut q = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= PENDING_MAX {
            return false;
        }
        q.push_back(p);
        true
    }

    /// True when an ARP request for `ip` should be sent now (rate-limited per address).
    pub fn should_request(&self, ip: A, now: u64) -> bool {
        let last = self.requested.get(&ip).map(|v| *v);
        if last.is_some_and(|l| now.saturating_sub(l) < REQUEST_INTERVAL_MS) {
            return false;
        }
        self.requested.insert(ip, now);
        true
    }

    /// Drop queued frames older than [`PENDING_MS`] and stale entries; returns the number of
    /// frames dropped (they count as `arp_timeout`).
    pub fn expire(&self, now: u64) -> usize {
        self.map
            .retain(|_, e| now.saturating_sub(e.1) <= self.ttl_ms * 4);
        let mut q = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let before = q.len();
        q.retain(|p| now.saturating_sub(p.at_ms) <= PENDING_MS);
        before - q.len()
    }

    /// Every entry, sorted by address.
    pub fn entries(&self, now: u64) -> Vec<NeighEntry<A>> {
        let mut v: Vec<NeighEntry<A>> = self
            .map
            .iter()
            .map(|e| NeighEntry {
                ip: *e.key(),
                mac: e.0,
                age_ms: now.saturating_sub(e.1),
            })
            .collect();
        v.sort_by_key(|e| e.ip);
        v
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 9]);

    #[test]
    fn learn_releases_pending_frames_for_that_hop_only() {
        let c = NeighCache::new(60_000);
        assert_eq!(c.lookup(IP, 0), None);
        assert!(c.enqueue(Pending {
            hop: IP,
            at_ms: 0,
            dst_mac_at: 10,
            wire: vec![1]
        }));
        assert!(c.enqueue(Pending {
            hop: Ipv4Addr::new(10, 0, 0, 8),
            at_ms: 0,
            dst_mac_at: 10,
            wire: vec![2]
        }));
        let ready = c.learn(IP, MAC, 5);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].wire, vec![1]);
        assert_eq!(c.lookup(IP, 10), Some(MAC));
        assert_eq!(c.lookup(IP, 60_006), None, "stale");
        assert_eq!(c.expire(2000), 1, "the other frame timed out");
    }

    #[test]
    fn requests_are_rate_limited_and_queue_bounded() {
        let c = NeighCache::new(60_000);
        assert!(c.should_request(IP, 0));
        assert!(!c.should_request(IP, 100));
        assert!(c.should_request(IP, 300));
        for i in 0..PENDING_MAX {
            assert!(c.enqueue(Pending {
                hop: IP,
                at_ms: i as u64,
                dst_mac_at: 10,
                wire: vec![]
            }));
        }
        assert!(!c.enqueue(Pending {
            hop: IP,
            at_ms: 0,
            dst_mac_at: 10,
            wire: vec![]
        }));
    }
}
