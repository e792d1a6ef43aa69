//! VXLAN (RFC 7348) for vswitch overlay networks, pure over bytes and time (no sockets, no
//! threads): the VXLAN header, the outer IPv4/UDP headers the switch pushes in front of a frame,
//! the UDP source port chosen from the inner flow for underlay ECMP, and the remote forwarding
//! table (MAC -> VTEP) with learning and aging.

#![forbid(unsafe_code)]

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use dashmap::DashMap;
use rustc_hash::FxBuildHasher;

/// The IANA-assigned VXLAN UDP port (RFC 7348 section 5).
pub const VXLAN_PORT: u16 = 4789;
/// Bytes VXLAN adds over IPv4 on the wire: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// Outer IPv4 + UDP + VXLAN headers the switch writes (the kernel adds Ethernet).
pub const OUTER_LEN: usize = 20 + 8 + HEADER_LEN;
/// Largest VNI (24 bits).
pub const VNI_MAX: u32 = 0x00ff_ffff;

/// Why a received VXLAN packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecapError {
    /// Shorter than the VXLAN header plus an Ethernet header.
    Short,
    /// The I flag is not set (RFC 7348: "MUST be set to 1 for a valid VXLAN Network ID").
    NoVni,
}

/// Read the VNI from a VXLAN header; the inner frame follows at [`HEADER_LEN`].
///
/// RFC 7348 section 5: flags (8 bits) `RRRRIRRR`, 24 reserved bits, the 24-bit VNI, 8 reserved
/// bits. Reserved bits are ignored on receipt.
pub fn decap(pkt: &[u8]) -> Result<u32, DecapError> {
    if pkt.len() < HEADER_LEN + 14 {
        return Err(DecapError::Short);
    }
    if pkt[0] & 0x08 == 0 {
        return Err(DecapError::NoVni);
    }
    Ok(u32::from_be_bytes([0, pkt[4], pkt[5], pkt[6]]))
}

/// Write a VXLAN header for `vni` into `h`.
pub fn write_header(h: &mut [u8; HEADER_LEN], vni: u32) {
    *h = [
        0x08,
        0,
        0,
        0,
        (vni >> 16) as u8,
        (vni >> 8) as u8,
        vni as u8,
        0,
    ];
}

/// Write outer IPv4 + UDP + VXLAN headers into `out` for an inner frame of `inner_len` bytes.
/// The UDP checksum is zero (RFC 7348 section 5: "SHOULD be transmitted as zero" over IPv4); DF
/// is set so the underlay never fragments (oversize frames are dropped before encapsulation).
pub fn write_outer(
    out: &mut [u8; OUTER_LEN],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    vni: u32,
    inner_len: usize,
) {
    let total = (OUTER_LEN + inner_len) as u16;
    let udp_len = (8 + HEADER_LEN + inner_len) as u16;
    out[..20].copy_from_slice(&[
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    out[2..4].copy_from_slice(&total.to_be_bytes());
    out[12..16].copy_from_slice(&src.octets());
    out[16..20].copy_from_slice(&dst.octets());
    let c = ip_checksum(&out[..20]);
    out[10..12].copy_from_slice(&c.to_be_bytes());
    out[20..22].copy_from_slice(&sport.to_be_bytes());
    out[22..24].copy_from_slice(&dport.to_be_bytes());
    out[24..26].copy_from_slice(&udp_len.to_be_bytes());
    out[26..28].copy_from_slice(&[0, 0]);
    let h: &mut [u8; HEADER_LEN] = (&mut out[28..]).try_into().expect("8 bytes");
    write_header(h, vni);
}

/// Change the outer destination (head-end replication to the next peer), fixing the checksum.
pub fn set_outer_dst(out: &mut [u8], dst: Ipv4Addr) {
    out[16..20].copy_from_slice(&dst.octets());
    out[10..12].copy_from_slice(&[0, 0]);
    let c = ip_checksum(&out[..20]);
    out[10..12].copy_from_slice(&c.to_be_bytes());
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// UDP source port from a hash of the inner frame's addresses and ports (RFC 7348 section 5:
/// "it is recommended that the UDP source port number be calculated using a hash of fields from
/// the inner packet"), in the dynamic range 49152-65535.
pub fn source_port(inner: &[u8]) -> u16 {
    // Ethernet addresses, and for IPv4 the addresses, protocol and first 4 L4 bytes (ports).
    let mut h: u32 = 0x811c_9dc5;
    let mut mix = |b: &[u8]| {
        for &x in b {
            h ^= u32::from(x);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    mix(inner.get(..12).unwrap_or(inner));
    if inner.get(12..14) == Some(&[0x08, 0x00][..]) {
        if let Some(ip) = inner.get(14..34) {
            mix(&ip[9..10]);
            mix(&ip[12..20]);
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if let Some(ports) = inner.get(14 + ihl..14 + ihl + 4) {
                mix(ports);
            }
        }
    }
    49152 + (h % 16384) as u16
}

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

    // A VXLAN packet as the Linux kernel sends it (VNI 42), followed by an inner frame header.
    const KERNEL_VXLAN: [u8; 22] = [
        0x08, 0, 0, 0, 0, 0, 0x2a, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 8, 6,
    ];

    #[test]
    fn decap_kernel_packet() {
        assert_eq!(decap(&KERNEL_VXLAN), Ok(42));
        assert_eq!(decap(&KERNEL_VXLAN[..21]), Err(DecapError::Short));
        let mut no_i = KERNEL_VXLAN;
        no_i[0] = 0;
        assert_eq!(decap(&no_i), Err(DecapError::NoVni));
        // Reserved bits are ignored.
        let mut r = KERNEL_VXLAN;
        r[1] = 0xff;
        r[7] = 0xff;
        assert_eq!(decap(&r), Ok(42));
    }

    #[test]
    fn header_roundtrip_and_max_vni() {
        let mut h = [0u8; HEADER_LEN];
        write_header(&mut h, VNI_MAX);
        let mut pkt = h.to_vec();
        pkt.extend_from_slice(&[0; 14]);
        assert_eq!(decap(&pkt), Ok(VNI_MAX));
        write_header(&mut h, 42);
        assert_eq!(
            &h[..],
            &KERNEL_VXLAN[..8],
            "byte-identical to the kernel's header"
        );
    }

    #[test]
    fn outer_headers() {
        let mut o = [0u8; OUTER_LEN];
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        write_outer(&mut o, s, d, 50000, VXLAN_PORT, 42, 100);
        assert_eq!(ip_checksum(&o[..20]), 0);
        assert_eq!(u16::from_be_bytes([o[2], o[3]]), 136);
        assert_eq!(u16::from_be_bytes([o[24], o[25]]), 116);
        assert_eq!(u16::from_be_bytes([o[22], o[23]]), 4789);
        assert_eq!(o[6] & 0x40, 0x40, "DF");
        let mut pkt = o[28..].to_vec();
        pkt.extend_from_slice(&[0; 14]);
        assert_eq!(decap(&pkt), Ok(42));
        set_outer_dst(&mut o, Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(ip_checksum(&o[..20]), 0);
        assert_eq!(&o[16..20], &[10, 0, 0, 3]);
    }

    #[test]
    fn source_port_is_in_range_and_follows_the_flow() {
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 6;
        let a = source_port(&f);
        assert!(a >= 49152);
        assert_eq!(a, source_port(&f), "stable for a flow");
        let differ = (0..50u8).map(|p| {
            f[36] = p;
            source_port(&f)
        });
        assert!(
            differ.collect::<std::collections::BTreeSet<_>>().len() > 10,
            "ports spread flows"
        );
        assert!(source_port(&[1, 2]) >= 49152, "short frames do not panic");
    }

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
