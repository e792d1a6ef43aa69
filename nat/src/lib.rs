//! Connection tracking and address translation as pure functions over frame bytes (bytes and
//! time in, verdict out; no sockets, no threads). Filled in by the NAT issue; this crate fixes
//! the place in the dependency graph: `switch -> nat`.

#![forbid(unsafe_code)]

/// RFC 1624 incremental update of a 16-bit one's-complement checksum: `hc' = ~(~hc + ~m + m')`
/// for a 16-bit field changing from `old` to `new`.
pub fn checksum_update16(hc: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod test {
    use super::*;

    fn full(words: &[u16]) -> u16 {
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
    }
}
