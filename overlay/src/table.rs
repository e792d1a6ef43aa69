//! The one aging MAC table: MAC address -> a value that is a `u32` underneath (a switch port id,
//! a VTEP's IPv4 address), learned from source addresses, refreshed, moved, aged out, with static
//! entries that neither age nor move and a limit on the number of entries. The switch's local FDB
//! (`switch::fdb::Fdb`) and the overlay's remote FDB ([`crate::RemoteFdb`]) are both this table.
//!
//! Lookups and refreshes of a known entry take a shard read lock and an atomic store (no write
//! lock on the per-frame path); only a new MAC takes a shard write lock. Time is passed in as
//! milliseconds on the caller's monotonic clock, so the logic is deterministic under test.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use dashmap::DashMap;
use rustc_hash::FxBuildHasher;
use wire::MacAddr;

/// A known entry's last-seen time is stored at most this often, so a busy source does not dirty
/// its cache line on every frame.
pub const REFRESH_EVERY_MS: u64 = 100;

/// What learning a source address did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned<V> {
    /// The MAC is new.
    New,
    /// The MAC was already known with this value; its age was refreshed.
    Refreshed,
    /// The MAC was known with another value and now has this one.
    Moved {
        /// The value it had before.
        from: V,
    },
    /// The MAC has a static entry with another value; nothing changed.
    Pinned,
    /// The MAC is new and the table is at its limit; nothing was learned.
    Full,
}

/// One entry as listed by [`MacTable::entries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<V> {
    /// The MAC address.
    pub mac: MacAddr,
    /// What it maps to.
    pub value: V,
    /// Milliseconds since it was last seen (0 for static entries).
    pub age_ms: u64,
    /// Added by hand: never ages, never moves by learning.
    pub is_static: bool,
}

/// What the map holds per MAC: 16 bytes (the value, the last-seen time, the static flag).
struct Slot {
    value: AtomicU32,
    last_seen_ms: AtomicU64,
    is_static: bool,
}

// The bytes-per-entry bound (`perf`'s table-memory) rests on this.
const _: () = assert!(std::mem::size_of::<Slot>() == 16);

impl Slot {
    fn expired(&self, now_ms: u64, aging_ms: u64) -> bool {
        !self.is_static
            && now_ms.saturating_sub(self.last_seen_ms.load(Ordering::Relaxed)) > aging_ms
    }
}

/// An aging table from MAC address to `V`, a value stored as a `u32` (`PortId`, `Ipv4Addr`).
pub struct MacTable<V> {
    map: DashMap<MacAddr, Slot, FxBuildHasher>,
    aging_ms: u64,
    /// Upper bound on entries; learning beyond it is refused ([`Learned::Full`]).
    limit: usize,
    value: PhantomData<fn() -> V>,
}

impl<V> MacTable<V>
where
    V: Copy + From<u32>,
    u32: From<V>,
{
    /// An empty table of at most `limit` learned entries, which expire `aging_ms` after they were
    /// last seen.
    pub fn new(aging_ms: u64, limit: usize) -> MacTable<V> {
        MacTable {
            map: DashMap::with_hasher(FxBuildHasher),
            aging_ms,
            limit,
            value: PhantomData,
        }
    }

    /// A copy of the table as it is now, entries and ages, that changes independently (the
    /// packet tracer's dry run learns into a copy).
    pub fn duplicate(&self) -> MacTable<V> {
        let t = MacTable::new(self.aging_ms, self.limit);
        for e in self.map.iter() {
            let (v, seen) = (&e.value, &e.last_seen_ms);
            t.insert(
                *e.key(),
                v.load(Ordering::Relaxed),
                seen.load(Ordering::Relaxed),
                e.is_static,
            );
        }
        t
    }

    /// Learn (or refresh) `mac` with `value` at `now_ms`. // HOT PATH
    #[inline]
    pub fn learn(&self, mac: MacAddr, value: V, now_ms: u64) -> Learned<V> {
        let bits = u32::from(value);
        if let Some(e) = self.map.get(&mac) {
            let old = e.value.load(Ordering::Relaxed);
            if old == bits {
                let seen = e.last_seen_ms.load(Ordering::Relaxed);
                if now_ms.saturating_sub(seen) >= REFRESH_EVERY_MS {
                    e.last_seen_ms.store(now_ms, Ordering::Relaxed);
                }
                return Learned::Refreshed;
            }
            if e.is_static {
                return Learned::Pinned;
            }
            e.value.store(bits, Ordering::Relaxed);
            e.last_seen_ms.store(now_ms, Ordering::Relaxed);
            return Learned::Moved { from: V::from(old) };
        }
        if self.map.len() >= self.limit {
            return Learned::Full;
        }
        self.insert(mac, bits, now_ms, false);
        Learned::New
    }

    /// Add (or replace) a static entry: it never ages and learning does not move it. Not bound
    /// by the limit.
    pub fn add_static(&self, mac: MacAddr, value: V) {
        self.insert(mac, u32::from(value), 0, true);
    }

    fn insert(&self, mac: MacAddr, bits: u32, now_ms: u64, is_static: bool) {
        self.map.insert(
            mac,
            Slot {
                value: AtomicU32::new(bits),
                last_seen_ms: AtomicU64::new(now_ms),
                is_static,
            },
        );
    }

    /// The value of `mac`, unless unknown or expired at `now_ms`. // HOT PATH
    #[inline]
    pub fn lookup(&self, mac: MacAddr, now_ms: u64) -> Option<V> {
        let e = self.map.get(&mac)?;
        if e.expired(now_ms, self.aging_ms) {
            return None;
        }
        Some(V::from(e.value.load(Ordering::Relaxed)))
    }

    /// Forget the learned entry of `mac` (static entries stay); true when one was removed.
    pub fn forget(&self, mac: MacAddr) -> bool {
        self.map.remove_if(&mac, |_, e| !e.is_static).is_some()
    }

    /// Forget the entry of `mac`, static or learned; true when one was removed.
    pub fn remove(&self, mac: MacAddr) -> bool {
        self.map.remove(&mac).is_some()
    }

    /// Forget every entry, static ones too, whose value is `value`; returns how many.
    pub fn forget_where(&self, value: V) -> usize {
        let bits = u32::from(value);
        self.retain(|e| e.value.load(Ordering::Relaxed) != bits)
    }

    /// Remove the entries not seen for longer than the aging time; returns how many.
    pub fn age(&self, now_ms: u64) -> usize {
        self.retain(|e| !e.expired(now_ms, self.aging_ms))
    }

    fn retain(&self, keep: impl Fn(&Slot) -> bool) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| keep(e));
        before.saturating_sub(self.map.len())
    }

    /// Every live entry at `now_ms`, sorted by MAC.
    pub fn entries(&self, now_ms: u64) -> Vec<Entry<V>> {
        let mut v: Vec<Entry<V>> = self
            .map
            .iter()
            .filter(|e| !e.expired(now_ms, self.aging_ms))
            .map(|e| Entry {
                mac: *e.key(),
                value: V::from(e.value.load(Ordering::Relaxed)),
                age_ms: if e.is_static {
                    0
                } else {
                    now_ms.saturating_sub(e.last_seen_ms.load(Ordering::Relaxed))
                },
                is_static: e.is_static,
            })
            .collect();
        v.sort_by_key(|e| e.mac);
        v
    }

    /// Number of entries, including expired ones not yet aged out.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The most entries learning may create.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How long a learned entry lives after it was last seen, in milliseconds.
    pub fn aging_ms(&self) -> u64 {
        self.aging_ms
    }
}

#[cfg(test)]
mod test {
    use std::net::Ipv4Addr;

    use super::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const C: MacAddr = MacAddr([2, 0, 0, 0, 0, 3]);

    #[test]
    fn learns_refreshes_and_moves_between_vteps() {
        let t = MacTable::<Ipv4Addr>::new(1000, 10);
        let (v1, v2) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let steps = [
            (v1, 0, Learned::New),
            (v1, 50, Learned::Refreshed),
            (v2, 70, Learned::Moved { from: v1 }),
            (v1, 90, Learned::Moved { from: v2 }),
        ];
        for (vtep, now, want) in steps {
            assert_eq!(t.learn(A, vtep, now), want, "at {now}");
            assert_eq!(t.lookup(A, now), Some(vtep));
        }
        assert_eq!(t.lookup(B, 90), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn refreshes_are_stored_at_most_every_100_ms() {
        let t = MacTable::<u32>::new(1000, 10);
        t.learn(A, 1, 0);
        t.learn(A, 1, REFRESH_EVERY_MS - 1); // not stored
        assert_eq!(t.lookup(A, 1000), Some(1));
        assert_eq!(t.lookup(A, 1001), None, "aged from 0, not from 99");
        t.learn(A, 1, 1001); // stored, and revives the entry before the sweep
        assert_eq!(t.lookup(A, 2001), Some(1));
        assert_eq!(t.age(2001), 0);
    }

    #[test]
    fn a_move_restarts_the_age() {
        let t = MacTable::<u32>::new(1000, 10);
        t.learn(A, 1, 0);
        assert_eq!(t.learn(A, 2, 50), Learned::Moved { from: 1 });
        assert_eq!(t.lookup(A, 1050), Some(2));
        assert_eq!(t.lookup(A, 1051), None);
    }

    #[test]
    fn static_entries_neither_age_nor_move_nor_are_forgotten() {
        let t = MacTable::<u32>::new(1000, 10);
        t.add_static(A, 7);
        assert_eq!(t.learn(A, 1, 5), Learned::Pinned);
        assert_eq!(t.learn(A, 7, 5), Learned::Refreshed);
        assert_eq!(t.age(1_000_000), 0);
        assert_eq!(t.lookup(A, 1_000_000), Some(7));
        assert!(!t.forget(A));
        assert_eq!(t.lookup(A, 1_000_000), Some(7));
        let e = t.entries(1_000_000);
        assert_eq!(
            e,
            vec![Entry {
                mac: A,
                value: 7,
                age_ms: 0,
                is_static: true
            }]
        );
        // A static entry replaces a learned one.
        t.learn(B, 1, 0);
        t.add_static(B, 2);
        assert_eq!(t.lookup(B, 1_000_000), Some(2));
    }

    #[test]
    fn ages_out_and_hides_expired_entries_before_the_sweep() {
        let t = MacTable::<u32>::new(1000, 10);
        t.learn(A, 1, 0);
        t.learn(B, 2, 900);
        assert_eq!(t.lookup(A, 1000), Some(1));
        assert_eq!(t.lookup(A, 1001), None);
        let e = t.entries(1001);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].mac, e[0].value, e[0].age_ms), (B, 2, 101));
        assert_eq!(t.len(), 2, "expired but not yet swept");
        assert_eq!(t.age(1001), 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.age(1900), 0);
        assert_eq!(t.age(1901), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn the_limit_refuses_new_macs_only() {
        let t = MacTable::<u32>::new(1000, 2);
        assert_eq!(t.limit(), 2);
        assert_eq!(t.learn(A, 1, 0), Learned::New);
        assert_eq!(t.learn(B, 1, 0), Learned::New);
        assert_eq!(t.learn(C, 1, 0), Learned::Full);
        assert_eq!(t.lookup(C, 0), None);
        assert_eq!(
            t.learn(A, 2, 10),
            Learned::Moved { from: 1 },
            "known MACs still move"
        );
        assert_eq!(t.learn(B, 1, 200), Learned::Refreshed);
        t.add_static(C, 3);
        assert_eq!(t.len(), 3, "static entries are not bound by the limit");
        assert!(t.forget(A));
        assert!(!t.forget(A));
        assert_eq!(t.learn(A, 1, 300), Learned::Full, "still at the limit");
    }

    #[test]
    fn forget_where_removes_every_entry_with_that_value() {
        let t = MacTable::<Ipv4Addr>::new(1000, 10);
        let (v1, v2) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        t.learn(A, v1, 0);
        t.learn(B, v2, 0);
        t.add_static(C, v1);
        assert_eq!(t.forget_where(v1), 2, "the static entry too");
        assert_eq!(t.lookup(A, 0), None);
        assert_eq!(t.lookup(C, 0), None);
        assert_eq!(t.lookup(B, 0), Some(v2));
        assert_eq!(t.forget_where(v1), 0);
    }

    #[test]
    fn entries_are_sorted_by_mac() {
        let t = MacTable::<u32>::new(1000, 10);
        t.learn(C, 3, 0);
        t.learn(A, 1, 0);
        t.add_static(B, 2);
        let macs: Vec<MacAddr> = t.entries(10).iter().map(|e| e.mac).collect();
        assert_eq!(macs, vec![A, B, C]);
    }
}
