//! Shared fixtures for vswitch's micro-benchmarks and the table memory report: tables filled
//! with `n` entries and frames that hit them.

use std::net::Ipv4Addr;

use nat::{Conntrack, FiveTuple, Proto};
use switch::fdb::Fdb;
use switch::wire::MacAddr;

/// The `i`-th test MAC (locally administered unicast).
pub fn mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x02, 0x42, b[0], b[1], b[2], b[3]])
}

/// A cheap reproducible sequence of indices below `n` (an LCG), so lookups jump around the
/// table instead of hitting one cache line.
pub fn spread(n: u32, count: usize) -> Vec<u32> {
    let mut x: u64 = 0x9e37_79b9;
    (0..count)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((x >> 33) % u64::from(n)) as u32
        })
        .collect()
}

/// An FDB holding MACs `0..n` on ports `i % 64`.
pub fn fdb_with(n: u32) -> Fdb {
    let f = Fdb::new(300_000, n as usize + 1);
    for i in 0..n {
        f.learn(mac(i), i % 64, 0);
    }
    f
}

/// A remote (VXLAN) FDB holding MACs `0..n` behind 256 VTEPs.
pub fn remote_with(n: u32) -> overlay::RemoteFdb {
    let r = overlay::RemoteFdb::new(300_000, n as usize + 1);
    for i in 0..n {
        r.learn(mac(i).0, Ipv4Addr::new(192, 168, 0, i as u8).into(), 0);
    }
    r
}

/// The original tuple of test flow `i`: UDP from 10.x.y.z:sport to 203.x.y.z:53 (4096 flows
/// per server, so masquerade never runs out of ports).
pub fn flow(i: u32) -> FiveTuple {
    FiveTuple {
        proto: Proto::Udp,
        src: Ipv4Addr::from(0x0a00_0000 | (i >> 4)),
        sport: 1024 + (i & 0xf) as u16,
        dst: Ipv4Addr::from(0xcb00_0000 | (i >> 12)),
        dport: 53,
    }
}

/// A conntrack table holding `n` masqueraded flows ([`flow`]).
pub fn conntrack_with(n: u32) -> Conntrack {
    let ct = Conntrack::new(n as usize + 1, nat::Timeouts::default());
    for i in 0..n {
        ct.create_snat(
            flow(i),
            Ipv4Addr::new(198, 51, 100, 1),
            None,
            1,
            |_, _| false,
            0,
        )
        .expect("room for every flow");
    }
    ct
}

/// An Ethernet/IPv4/UDP frame of flow `t` with 18 bytes of payload (64 bytes in all).
pub fn udp_frame(t: &FiveTuple, src: MacAddr, dst: MacAddr) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + 22];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&50u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&t.src.octets());
    ip[16..20].copy_from_slice(&t.dst.octets());
    let c = wire::checksum::checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip[20..22].copy_from_slice(&t.sport.to_be_bytes());
    ip[22..24].copy_from_slice(&t.dport.to_be_bytes());
    ip[24..26].copy_from_slice(&30u16.to_be_bytes());
    let c = wire::checksum::checksum_pseudo(t.src, t.dst, 17, &ip[20..50]);
    ip[26..28].copy_from_slice(&c.to_be_bytes());
    f
}

/// Resident set size of this process in bytes (VmRSS in /proc/self/status); a value that
/// cannot be read stops the benchmark (read as 0 it would pass every memory bound).
pub fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("VmRSS in /proc/self/status")
        * 1024
}
