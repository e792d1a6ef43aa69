//! Connection tracking and address translation as pure functions over packet bytes: bytes and
//! time in, verdict out. No sockets, no threads: everything here is unit-testable and fuzzable.
//!
//! - [`packet`]: the 5-tuple of an IPv4 TCP/UDP/ICMP-echo packet and its in-place rewrite with
//!   incremental checksum updates (RFC 1624);
//! - [`conntrack`]: the flow table (both directions indexed), the TCP state machine, timeouts,
//!   source-port allocation and the table limit.

#![forbid(unsafe_code)]

pub mod conntrack;
pub mod packet;

pub use conntrack::{Conntrack, Flow, FlowDir, NatKind, SavedFlow, Timeouts};
pub use packet::{FiveTuple, L4Info, Proto};

/// RFC 1624 incremental update of a 16-bit one's-complement checksum: `HC' = ~(~HC + ~m + m')`
/// for a 16-bit field changing from `old` to `new`.
pub fn checksum_update16(hc: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// [`checksum_update16`] for a 32-bit field (an IPv4 address), as two 16-bit words.
pub fn checksum_update32(hc: u16, old: u32, new: u32) -> u16 {
    let hc = checksum_update16(hc, (old >> 16) as u16, (new >> 16) as u16);
    checksum_update16(hc, old as u16, new as u16)
}

#[cfg(test)]
mod test {
    use super::*;

    pub(crate) fn full(words: &[u16]) -> u16 {
        let mut s: u32 = words.iter().map(|&w| u32::from(w)).sum();
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut words = [
            0x4500u16, 0x0073, 0x0000, 0x4000, 0x4011, 0xc0a8, 0x0001, 0xc0a8, 0x00c7,
        ];
        let hc = full(&words);
        let old = words[6];
        words[6] = 0x1234;
        assert_eq!(checksum_update16(hc, old, 0x1234), full(&words));
        let hc = full(&words);
        let old = (u32::from(words[7]) << 16) | u32::from(words[8]);
        words[7] = 0x0a00;
        words[8] = 0x0002;
        assert_eq!(checksum_update32(hc, old, 0x0a00_0002), full(&words));
    }

    #[test]
    fn incremental_update_edge_values() {
        // All-ones and zero words (the +0/-0 cases RFC 1624 is about).
        for (a, b) in [
            (0u16, 0xffffu16),
            (0xffff, 0),
            (0x8000, 0x7fff),
            (1, 0xfffe),
        ] {
            let mut w = [0x1234u16, a, 0xabcd];
            let hc = full(&w);
            w[1] = b;
            let inc = checksum_update16(hc, a, b);
            let f = full(&w);
            assert!(
                inc == f || (inc == 0xffff && f == 0) || (inc == 0 && f == 0xffff),
                "{a:x}->{b:x}: {inc:x} vs {f:x}"
            );
        }
    }
}
