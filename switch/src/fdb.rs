//! The forwarding database: MAC address -> port, learned from source addresses, aged out.
//!
//! One [`Fdb`] per network: an [`overlay::table::MacTable`] of port ids (the aging table the
//! remote FDB uses too; lookups and refreshes of a known entry take a shard read lock and an
//! atomic store, no write lock on the per-frame path) plus what only the local table has: source
//! addresses that are not unicast are not learned, and a generation counter. Time is passed in as
//! milliseconds on the daemon's monotonic clock, so the logic is deterministic under test.
//!
//! In front of it each worker keeps an [`FdbCache`]: a small direct-mapped table of answers it
//! got, valid while the FDB's generation (bumped by every move and removal) is unchanged. A frame
//! of a known conversation is then switched without touching the shared map at all: no shard
//! lock, one shared read of the generation.

use std::sync::atomic::{AtomicU64, Ordering};

use overlay::table::{Learned, MacTable};

use crate::wire::MacAddr;

/// Identifier of a switch port; unique for the daemon's lifetime (never reused).
pub type PortId = u32;

/// What learning a source address did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// The MAC was already known on this port; its age was refreshed.
    Refreshed,
    /// The MAC is new.
    New,
    /// The MAC moved from another port.
    Moved {
        /// The port it was on before.
        from: PortId,
    },
    /// Nothing was learned: the address is not a unicast source, the MAC has a static entry on
    /// another port, or the table is full.
    Ignored,
}

/// A learned MAC as listed by [`Fdb::entries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    /// The MAC address.
    pub mac: MacAddr,
    /// Port it was learned on.
    pub port: PortId,
    /// Milliseconds since it was last seen.
    pub age_ms: u64,
}

/// A forwarding database with aging.
pub struct Fdb {
    table: MacTable<PortId>,
    /// Bumped by every change that can make a cached answer wrong: a move, a removal, a static
    /// entry. (A new MAC is not: caches hold only answers found.)
    gen: AtomicU64,
}

impl Fdb {
    /// An empty table whose entries expire `aging_ms` after they were last seen; learning beyond
    /// `limit` entries is refused (counted by the caller).
    pub fn new(aging_ms: u64, limit: usize) -> Fdb {
        Fdb {
            table: MacTable::new(aging_ms, limit),
            gen: AtomicU64::new(1),
        }
    }

    /// A copy of the table as it is now, which changes independently (the packet tracer's).
    pub fn duplicate(&self) -> Fdb {
        Fdb {
            table: self.table.duplicate(),
            gen: AtomicU64::new(self.generation()),
        }
    }

    /// The current generation (see [`FdbCache`]).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.gen.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.gen.fetch_add(1, Ordering::Release);
    }

    /// Learn (or refresh) `mac` on `port` at time `now_ms`. // HOT PATH
    pub fn learn(&self, mac: MacAddr, port: PortId, now_ms: u64) -> Learn {
        if !mac.is_valid_unicast() {
            return Learn::Ignored;
        }
        match self.table.learn(mac, port, now_ms) {
            Learned::New => Learn::New,
            Learned::Refreshed => Learn::Refreshed,
            Learned::Moved { from } => {
                // Bumped after the new port is stored: a cache that read the old generation
                // holds a stale slot at once.
                self.changed();
                Learn::Moved { from }
            }
            Learned::Pinned | Learned::Full => Learn::Ignored,
        }
    }

    /// Add a static entry that never ages.
    pub fn add_static(&self, mac: MacAddr, port: PortId) {
        self.table.add_static(mac, port);
        self.changed();
    }

    /// The port `mac` was learned on, unless unknown or expired at `now_ms`. // HOT PATH
    pub fn lookup(&self, mac: MacAddr, now_ms: u64) -> Option<PortId> {
        self.table.lookup(mac, now_ms)
    }

    /// Remove entries not seen for longer than the aging time; returns how many were removed.
    pub fn age(&self, now_ms: u64) -> usize {
        let removed = self.table.age(now_ms);
        if removed > 0 {
            self.changed();
        }
        removed
    }

    /// Forget `mac` (it moved behind a remote VTEP).
    pub fn forget(&self, mac: MacAddr) {
        if self.table.forget(mac) {
            self.changed();
        }
    }

    /// Forget everything learned on `port` (the port was removed).
    pub fn flush_port(&self, port: PortId) {
        self.table.forget_where(port);
        self.changed();
    }

    /// All live entries, sorted by MAC.
    pub fn entries(&self, now_ms: u64) -> Vec<FdbEntry> {
        self.table
            .entries(now_ms)
            .into_iter()
            .map(|e| FdbEntry {
                mac: e.mac,
                port: e.value,
                age_ms: e.age_ms,
            })
            .collect()
    }

    /// Number of entries, including expired ones not yet aged out.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// One worker's cache of FDB answers (see the module notes). Direct-mapped by MAC and network:
/// a collision just replaces the slot.
pub struct FdbCache {
    slots: Box<[Slot]>,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    net: u32,
    mac: [u8; 6],
    port: PortId,
    /// The FDB generation read *before* the answer was taken from the map: a change racing with
    /// it leaves the slot already stale.
    gen: u64,
    /// When this worker last refreshed the entry in the map (0: the slot came from a lookup).
    learned_ms: u64,
}

const CACHE_SLOTS: usize = 1024;
/// How often a cached source is refreshed in the shared map (far below any aging time).
const REFRESH_MS: u64 = 1000;

impl Default for FdbCache {
    fn default() -> Self {
        FdbCache {
            slots: vec![Slot::default(); CACHE_SLOTS].into_boxed_slice(),
        }
    }
}

impl FdbCache {
    #[inline]
    fn slot(&mut self, net: u32, mac: &MacAddr) -> &mut Slot {
        let m = &mac.0;
        let h = u32::from_le_bytes([m[2], m[3], m[4], m[5]]) ^ u32::from(m[1]) << 8 ^ net;
        let i = (h.wrapping_mul(0x9e37_79b1) >> 22) as usize % CACHE_SLOTS;
        &mut self.slots[i]
    }

    /// [`Fdb::learn`] through the cache: a source already learned on this port in the current
    /// generation and refreshed within the last second costs no map access. // HOT PATH
    #[inline]
    pub fn learn(&mut self, fdb: &Fdb, net: u32, mac: MacAddr, port: PortId, now_ms: u64) -> Learn {
        let gen = fdb.generation();
        let s = self.slot(net, &mac);
        if s.gen == gen
            && s.net == net
            && s.mac == mac.0
            && s.port == port
            && s.learned_ms != 0
            && now_ms.saturating_sub(s.learned_ms) < REFRESH_MS
        {
            return Learn::Refreshed;
        }
        let r = fdb.learn(mac, port, now_ms);
        if r != Learn::Ignored {
            *s = Slot {
                net,
                mac: mac.0,
                port,
                gen,
                learned_ms: now_ms.max(1),
            };
        }
        r
    }

    /// [`Fdb::lookup`] through the cache. // HOT PATH
    #[inline]
    pub fn lookup(&mut self, fdb: &Fdb, net: u32, mac: MacAddr, now_ms: u64) -> Option<PortId> {
        let gen = fdb.generation();
        let s = self.slot(net, &mac);
        if s.gen == gen && s.net == net && s.mac == mac.0 {
            return Some(s.port);
        }
        let port = fdb.lookup(mac, now_ms)?;
        let keep = s.learned_ms != 0 && s.gen == gen && s.net == net && s.mac == mac.0;
        *s = Slot {
            net,
            mac: mac.0,
            port,
            gen,
            learned_ms: if keep { s.learned_ms } else { 0 },
        };
        Some(port)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_cache_answers_like_the_table_through_moves_and_removals() {
        let fdb = Fdb::new(300_000, 100);
        let mut c = FdbCache::default();
        let mut other = FdbCache::default(); // another worker
        assert_eq!(c.learn(&fdb, 1, A, 1, 10), Learn::New);
        assert_eq!(c.learn(&fdb, 1, A, 1, 20), Learn::Refreshed);
        assert_eq!(c.lookup(&fdb, 1, A, 20), Some(1));
        assert_eq!(
            c.lookup(&fdb, 2, A, 20),
            Some(1),
            "the FDB is per network; so are slots"
        );
        // Another worker sees A move to port 2: our cached answers are stale at once.
        assert_eq!(other.learn(&fdb, 1, A, 2, 30), Learn::Moved { from: 1 });
        assert_eq!(c.lookup(&fdb, 1, A, 31), Some(2));
        // A comes back to port 1 through our worker: a move, not a cached refresh.
        assert_eq!(c.learn(&fdb, 1, A, 1, 40), Learn::Moved { from: 2 });
        assert_eq!(other.lookup(&fdb, 1, A, 41), Some(1));
        // Refreshes reach the map at least once a second.
        assert_eq!(c.learn(&fdb, 1, A, 1, 50), Learn::Refreshed);
        fdb.age(299_000);
        assert_eq!(c.learn(&fdb, 1, A, 1, 1_100), Learn::Refreshed);
        assert_eq!(fdb.age(300_500), 0, "refreshed at 1.1 s, alive at 300.5 s");
        // Removals invalidate: port flush, forget, aging.
        fdb.flush_port(1);
        assert_eq!(c.lookup(&fdb, 1, A, 1_200), None);
        fdb.learn(B, 3, 1_300);
        assert_eq!(c.lookup(&fdb, 1, B, 1_300), Some(3));
        fdb.forget(B);
        assert_eq!(c.lookup(&fdb, 1, B, 1_400), None);
        fdb.add_static(B, 4);
        assert_eq!(c.lookup(&fdb, 1, B, 1_500), Some(4));
        assert_eq!(
            c.learn(&fdb, 1, B, 5, 1_600),
            Learn::Ignored,
            "static entries stay"
        );
        assert_eq!(c.lookup(&fdb, 1, B, 1_700), Some(4));
    }

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    #[test]
    fn learns_refreshes_and_moves() {
        let fdb = Fdb::new(300_000, 1000);
        assert_eq!(fdb.learn(A, 1, 0), Learn::New);
        assert_eq!(fdb.learn(A, 1, 10), Learn::Refreshed);
        assert_eq!(fdb.lookup(A, 20), Some(1));
        assert_eq!(fdb.learn(A, 2, 30), Learn::Moved { from: 1 });
        assert_eq!(fdb.lookup(A, 40), Some(2));
        assert_eq!(fdb.lookup(B, 40), None);
    }

    #[test]
    fn ignores_group_and_zero_sources() {
        let fdb = Fdb::new(1000, 1000);
        assert_eq!(fdb.learn(MacAddr::BROADCAST, 1, 0), Learn::Ignored);
        assert_eq!(
            fdb.learn(MacAddr([1, 0, 0x5e, 0, 0, 1]), 1, 0),
            Learn::Ignored
        );
        assert_eq!(fdb.learn(MacAddr([0; 6]), 1, 0), Learn::Ignored);
        assert!(fdb.is_empty());
    }

    #[test]
    fn ages_out() {
        let fdb = Fdb::new(1000, 1000);
        fdb.learn(A, 1, 0);
        fdb.learn(B, 2, 900);
        assert_eq!(fdb.lookup(A, 1000), Some(1));
        // Expired entries are invisible before the sweep removes them.
        assert_eq!(fdb.lookup(A, 1001), None);
        assert_eq!(fdb.entries(1001).len(), 1);
        assert_eq!(fdb.age(1001), 1);
        assert_eq!(fdb.len(), 1);
        assert_eq!(fdb.lookup(B, 1500), Some(2));
        // Refreshing keeps an entry alive.
        fdb.learn(B, 2, 1800);
        assert_eq!(fdb.age(2500), 0);
        assert_eq!(fdb.age(2801), 1);
    }

    #[test]
    fn static_entries_do_not_age_or_move() {
        let fdb = Fdb::new(1000, 1000);
        fdb.add_static(A, 7);
        assert_eq!(fdb.learn(A, 1, 5), Learn::Ignored);
        assert_eq!(fdb.age(1_000_000), 0);
        assert_eq!(fdb.lookup(A, 1_000_000), Some(7));
    }

    #[test]
    fn the_generation_changes_with_moves_and_removals_only() {
        let fdb = Fdb::new(1000, 1000);
        let g = fdb.generation();
        fdb.learn(A, 1, 0);
        fdb.learn(A, 1, 500);
        fdb.forget(B);
        assert_eq!(fdb.age(600), 0);
        assert_eq!(fdb.generation(), g, "new, refreshed, nothing removed");
        fdb.learn(A, 2, 700);
        assert_eq!(fdb.generation(), g + 1, "moved");
        fdb.add_static(B, 3);
        assert_eq!(fdb.learn(B, 4, 800), Learn::Ignored);
        assert_eq!(fdb.generation(), g + 2, "static added, not moved");
        fdb.forget(A);
        assert_eq!(fdb.generation(), g + 3, "forgotten");
        fdb.flush_port(9);
        assert_eq!(fdb.generation(), g + 4, "a flush always counts");
    }

    #[test]
    fn flush_port_and_limit() {
        let fdb = Fdb::new(1000, 2);
        fdb.learn(A, 1, 0);
        fdb.learn(B, 2, 0);
        assert_eq!(fdb.learn(MacAddr([2, 0, 0, 0, 0, 3]), 3, 0), Learn::Ignored);
        fdb.flush_port(1);
        assert_eq!(fdb.lookup(A, 0), None);
        assert_eq!(fdb.lookup(B, 0), Some(2));
    }
}
