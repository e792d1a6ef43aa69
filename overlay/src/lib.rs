//! The VXLAN core, pure over bytes and time (no sockets, no threads; the switch performs what it
//! decides on its sockets):
//! - [`rx`]: the VTEP's receive decision (header, VNI, peer) for a datagram;
//! - [`RemoteFdb`] (here): MACs behind peer VTEPs (MAC -> VTEP, IPv4 or IPv6), with learning,
//!   static entries and aging; it is a [`table::MacTable`], the aging table the switch's local
//!   FDB uses too, of VTEP numbers (the addresses are numbered as they are first seen);
//! - [`gso`]: software offloads: cutting TCP super-frames into segments for the underlay, and
//!   coalescing received segments back.
//!
//! The VXLAN header and the outer headers are in the wire layer (`wire::vxlan`).

#![forbid(unsafe_code)]

pub mod gso;
pub mod rx;
pub mod table;

use std::net::IpAddr;
use std::sync::RwLock;

use wire::MacAddr;

use crate::table::{Learned, MacTable};

/// A remote MAC as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteEntry {
    /// MAC address.
    pub mac: [u8; 6],
    /// The VTEP it lives behind.
    pub vtep: IpAddr,
    /// Milliseconds since last seen (0 for static entries).
    pub age_ms: u64,
    /// Added by hand (`fdb add`): never ages, never moves by learning.
    pub is_static: bool,
}

/// The remote forwarding table of one overlay network: inner MAC -> VTEP, learned from decapsulated
/// frames' source MACs and outer source addresses, aged like local entries.
pub struct RemoteFdb {
    /// MAC -> VTEP number (an index into `vteps`: the table's values are 32 bits, and an IPv6
    /// VTEP is 128).
    table: MacTable<u32>,
    /// The VTEP addresses seen, numbered in the order they were first seen (at most
    /// [`MAX_VTEPS`]; only peers' datagrams are learned from, so the list stays short).
    vteps: RwLock<Vec<IpAddr>>,
}

/// Most VTEP addresses one network's table numbers.
pub const MAX_VTEPS: usize = 65_536;

impl RemoteFdb {
    /// An empty table.
    pub fn new(aging_ms: u64, limit: usize) -> RemoteFdb {
        RemoteFdb {
            table: MacTable::new(aging_ms, limit),
            vteps: RwLock::new(Vec::new()),
        }
    }

    /// A copy of the table as it is now, which changes independently (the packet tracer's).
    pub fn duplicate(&self) -> RemoteFdb {
        RemoteFdb {
            table: self.table.duplicate(),
            vteps: RwLock::new(self.vteps.read().unwrap_or_else(|p| p.into_inner()).clone()),
        }
    }

    /// The number of `vtep`, numbering it if `add` and it is new (`None`: unknown and not
    /// added, or no number left). // HOT PATH (a short scan under a read lock)
    fn number(&self, vtep: IpAddr, add: bool) -> Option<u32> {
        let known = |v: &[IpAddr]| v.iter().position(|a| *a == vtep).map(|i| i as u32);
        if let Some(i) = known(&self.vteps.read().unwrap_or_else(|p| p.into_inner())) {
            return Some(i);
        }
        if !add {
            return None;
        }
        let mut v = self.vteps.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = known(&v) {
            return Some(i);
        }
        if v.len() >= MAX_VTEPS {
            return None;
        }
        v.push(vtep);
        Some(v.len() as u32 - 1)
    }

    /// The address of VTEP number `n`.
    fn address(&self, n: u32) -> Option<IpAddr> {
        self.vteps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(n as usize)
            .copied()
    }

    /// Learn `mac` behind `vtep` at `now`; false when the table is full. A static entry is kept
    /// as it is. // HOT PATH
    pub fn learn(&self, mac: [u8; 6], vtep: IpAddr, now: u64) -> bool {
        self.number(vtep, true)
            .is_some_and(|n| self.table.learn(MacAddr(mac), n, now) != Learned::Full)
    }

    /// Add a static entry (none when no VTEP number is left).
    pub fn add_static(&self, mac: [u8; 6], vtep: IpAddr) {
        if let Some(n) = self.number(vtep, true) {
            self.table.add_static(MacAddr(mac), n);
        }
    }

    /// The VTEP of `mac`, unless unknown or expired. // HOT PATH
    pub fn lookup(&self, mac: &[u8; 6], now: u64) -> Option<IpAddr> {
        self.address(self.table.lookup(MacAddr(*mac), now)?)
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
    pub fn forget_vtep(&self, vtep: IpAddr) {
        if let Some(n) = self.number(vtep, false) {
            self.table.forget_where(n);
        }
    }

    /// Remove expired entries.
    pub fn age(&self, now: u64) -> usize {
        self.table.age(now)
    }

    /// Live entries, sorted by MAC.
    pub fn entries(&self, now: u64) -> Vec<RemoteEntry> {
        let vteps = self.vteps.read().unwrap_or_else(|p| p.into_inner());
        self.table
            .entries(now)
            .into_iter()
            .filter_map(|e| {
                Some(RemoteEntry {
                    mac: e.mac.0,
                    vtep: *vteps.get(e.value as usize)?,
                    age_ms: e.age_ms,
                    is_static: e.is_static,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn ipv6_vteps_are_numbered_and_found_again() {
        let r = RemoteFdb::new(1000, 16);
        let (v1, v2): (IpAddr, IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        assert!(r.learn([2, 0, 0, 0, 0, 1], v1, 0));
        assert!(r.learn([2, 0, 0, 0, 0, 2], v2, 0));
        assert!(r.learn([2, 0, 0, 0, 0, 3], v1, 0));
        assert_eq!(r.lookup(&[2, 0, 0, 0, 0, 2], 10), Some(v2));
        assert_eq!(r.lookup(&[2, 0, 0, 0, 0, 3], 10), Some(v1));
        r.forget_vtep(v1);
        assert_eq!(r.lookup(&[2, 0, 0, 0, 0, 1], 10), None);
        assert_eq!(r.entries(10).len(), 1);
        // An address never seen is not numbered by forgetting it.
        r.forget_vtep("2001:db8::9".parse().unwrap());
        assert_eq!(r.vteps.read().unwrap().len(), 2);
    }

    #[test]
    fn remote_fdb_learns_moves_ages() {
        let t = RemoteFdb::new(1000, 2);
        let (m1, m2, m3) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]);
        let (v1, v2): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
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
        let (v1, v2): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
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
