//! The VXLAN core, pure over bytes and time (no sockets, no threads; the switch performs what it
//! decides on its sockets):
//! - [`rx`]: the VTEP's receive decision (header, VNI, peer) for a datagram;
//! - [`RemoteFdb`] (here): MACs behind peer VTEPs (MAC -> VTEP), with learning, static entries
//!   and aging; it is a [`table::MacTable`], the aging table the switch's local FDB uses too;
//! - [`gso`]: software offloads: cutting TCP super-frames into segments for the underlay, and
//!   coalescing received segments back.
//!
//! The VXLAN header and the outer headers are in the wire layer (`wire::vxlan`).

#![forbid(unsafe_code)]

pub mod gso;
pub mod rx;
pub mod table;

use std::net::Ipv4Addr;

use wire::MacAddr;

use crate::table::{Learned, MacTable};

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

/// The remote forwarding table of one overlay network: inner MAC -> VTEP, learned from decapsulated
/// frames' source MACs and outer source addresses, aged like local entries.
pub struct RemoteFdb {
    table: MacTable<Ipv4Addr>,
}

impl RemoteFdb {
    /// An empty table.
    pub fn new(aging_ms: u64, limit: usize) -> RemoteFdb {
        RemoteFdb {
            table: MacTable::new(aging_ms, limit),
        }
    }

    /// Learn `mac` behind `vtep` at `now`; false when the table is full. A static entry is kept
    /// as it is. // HOT PATH
    pub fn learn(&self, mac: [u8; 6], vtep: Ipv4Addr, now: u64) -> bool {
        self.table.learn(MacAddr(mac), vtep, now) != Learned::Full
    }

    /// Add a static entry.
    pub fn add_static(&self, mac: [u8; 6], vtep: Ipv4Addr) {
        self.table.add_static(MacAddr(mac), vtep);
    }

    /// The VTEP of `mac`, unless unknown or expired. // HOT PATH
    pub fn lookup(&self, mac: &[u8; 6], now: u64) -> Option<Ipv4Addr> {
        self.table.lookup(MacAddr(*mac), now)
    }

    /// Forget `mac` (it showed up on a local port).
    pub fn forget(&self, mac: &[u8; 6]) {
        self.table.forget(MacAddr(*mac));
    }

    /// Remove `mac`'s entry, static ones too (a remote endpoint gone from the directory).
    pub fn remove(&self, mac: &[u8; 6]) {
        self.table.remove(MacAddr(*mac));
    }

    /// Forget everything behind `vtep` (the peer was removed).
    pub fn forget_vtep(&self, vtep: Ipv4Addr) {
        self.table.forget_where(vtep);
    }

    /// Remove expired entries.
    pub fn age(&self, now: u64) -> usize {
        self.table.age(now)
    }

    /// Live entries, sorted by MAC.
    pub fn entries(&self, now: u64) -> Vec<RemoteEntry> {
        self.table
            .entries(now)
            .into_iter()
            .map(|e| RemoteEntry {
                mac: e.mac.0,
                vtep: e.value,
                age_ms: e.age_ms,
                is_static: e.is_static,
            })
            .collect()
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

    #[test]
    fn remote_fdb_keeps_static_entries_and_refuses_only_when_full() {
        let t = RemoteFdb::new(1000, 1);
        let m = [2, 0, 0, 0, 0, 1];
        let (v1, v2) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        t.add_static(m, v1);
        assert!(t.learn(m, v2, 0), "a static entry is not a full table");
        assert_eq!(t.lookup(&m, 0), Some(v1));
        t.forget(&m);
        assert_eq!(
            t.lookup(&m, 0),
            Some(v1),
            "static entries are not forgotten"
        );
        assert!(!t.learn([2, 0, 0, 0, 0, 2], v2, 0), "full");
        let e = t.entries(5_000);
        assert_eq!(
            e,
            vec![RemoteEntry {
                mac: m,
                vtep: v1,
                age_ms: 0,
                is_static: true
            }]
        );
    }
}
