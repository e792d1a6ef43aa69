//! The overlay's remote forwarding table: MACs behind peer VTEPs (MAC -> VTEP), with learning,
//! static entries and aging, pure over time (no sockets, no threads). The VXLAN header and the
//! outer headers are in the wire layer (`wire::vxlan`).

#![forbid(unsafe_code)]

pub mod gso;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use dashmap::DashMap;
use rustc_hash::FxBuildHasher;

/// A remote MAC as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteEntry {
    /// MAC address.
    pub mac: [u8; 6],
    /// The VTEP it lives behind.
    pub vtep: Ipv4Addr,
    /// Milliseconds since last seen (0 for static entries).
    pub age_ms: u64,
    /// Added by hand (`fdb add`): never ages, never moves by learning.
    pub is_static: bool,
}

struct Entry {
    vtep: AtomicU32,
    last_seen: AtomicU64,
    is_static: bool,
}

/// The remote forwarding table of one overlay network: inner MAC -> VTEP, learned from decapsulated
/// frames' source MACs and outer source addresses, aged like local entries.
pub struct RemoteFdb {
    map: DashMap<[u8; 6], Entry, FxBuildHasher>,
    aging_ms: u64,
    limit: usize,
}

impl RemoteFdb {
    /// An empty table.
    pub fn new(aging_ms: u64, limit: usize) -> RemoteFdb {
        RemoteFdb {
            map: DashMap::with_hasher(FxBuildHasher),
            aging_ms,
            limit,
        }
    }

    /// Learn `mac` behind `vtep` at `now`; false when the table is full. // HOT PATH
    pub fn learn(&self, mac: [u8; 6], vtep: Ipv4Addr, now: u64) -> bool {
        if let Some(e) = self.map.get(&mac) {
            if e.is_static {
                return true;
            }
            if e.vtep.load(Ordering::Relaxed) != u32::from(vtep) {
                e.vtep.store(u32::from(vtep), Ordering::Relaxed);
            }
            if now.saturating_sub(e.last_seen.load(Ordering::Relaxed)) >= 100 {
                e.last_seen.store(now, Ordering::Relaxed);
            }
            return true;
        }
        if self.map.len() >= self.limit {
            return false;
        }
        self.map.insert(
            mac,
            Entry {
                vtep: AtomicU32::new(u32::from(vtep)),
                last_seen: AtomicU64::new(now),
                is_static: false,
            },
        );
        true
    }

    /// Add a static entry.
    pub fn add_static(&self, mac: [u8; 6], vtep: Ipv4Addr) {
        self.map.insert(
            mac,
            Entry {
                vtep: AtomicU32::new(u32::from(vtep)),
                last_seen: AtomicU64::new(0),
                is_static: true,
            },
        );
    }

    /// The VTEP of `mac`, unless unknown or expired. // HOT PATH
    pub fn lookup(&self, mac: &[u8; 6], now: u64) -> Option<Ipv4Addr> {
        let e = self.map.get(mac)?;
        if !e.is_static && now.saturating_sub(e.last_seen.load(Ordering::Relaxed)) > self.aging_ms {
            return None;
        }
        Some(Ipv4Addr::from(e.vtep.load(Ordering::Relaxed)))
    }

    /// Forget `mac` (it showed up on a local port).
    pub fn forget(&self, mac: &[u8; 6]) {
        self.map.remove_if(mac, |_, e| !e.is_static);
    }

    /// Forget everything behind `vtep` (the peer was removed).
    pub fn forget_vtep(&self, vtep: Ipv4Addr) {
        self.map
            .retain(|_, e| e.vtep.load(Ordering::Relaxed) != u32::from(vtep));
    }

    /// Remove expired entries.
    pub fn age(&self, now: u64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| {
            e.is_static || now.saturating_sub(e.last_seen.load(Ordering::Relaxed)) <= self.aging_ms
        });
        before - self.map.len()
    }

    /// Live entries, sorted by MAC.
    pub fn entries(&self, now: u64) -> Vec<RemoteEntry> {
        let mut v: Vec<RemoteEntry> = self
            .map
            .iter()
            .map(|e| RemoteEntry {
                mac: *e.key(),
                vtep: Ipv4Addr::from(e.vtep.load(Ordering::Relaxed)),
                age_ms: if e.is_static {
                    0
                } else {
                    now.saturating_sub(e.last_seen.load(Ordering::Relaxed))
                },
                is_static: e.is_static,
            })
            .filter(|e| e.is_static || e.age_ms <= self.aging_ms)
            .collect();
        v.sort_by_key(|e| e.mac);
        v
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn remote_fdb_learns_moves_ages() {
        let t = RemoteFdb::new(1000, 2);
        let (m1, m2, m3) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]);
        let (v1, v2) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert!(t.learn(m1, v1, 0));
        assert_eq!(t.lookup(&m1, 500), Some(v1));
        assert!(t.learn(m1, v2, 600));
        assert_eq!(t.lookup(&m1, 700), Some(v2), "moved");
        assert!(t.learn(m2, v1, 0));
        assert!(!t.learn(m3, v1, 0), "limit");
        assert_eq!(t.lookup(&m2, 1001), None, "expired");
        assert_eq!(t.age(1001), 1);
        t.add_static(m3, v2);
        assert_eq!(t.lookup(&m3, 1_000_000), Some(v2));
        t.forget_vtep(v2);
        assert_eq!(t.lookup(&m1, 700), None);
        assert_eq!(t.entries(0).len(), 0);
    }
}
