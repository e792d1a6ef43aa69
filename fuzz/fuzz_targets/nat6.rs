//! NAT66 translation: parse an IPv6 packet, rewrite its tuple to one taken from the input (as
//! masquerade, publishing and hairpin do over IPv6), then drive the IPv6 connection tracker with
//! the packet's tuple. Input: `[mode | new tuple (36) | IPv6 packet]`; mode bit 0 hands a TCP or
//! UDP packet over as a TAP does with virtio `NEEDS_CSUM` (the checksum field holding only the
//! pseudo-header sum, and `partial_l4` set).
//!
//! Oracles (checksums with the target's own arithmetic, `oracle.rs`, over the IPv6
//! pseudo-header):
//! - a translated packet parses again and keeps its length;
//! - TCP/UDP/echo: the tuple is exactly the new one; a valid L4 checksum stays valid (echo:
//!   always valid, it is recomputed); a partial one completes to a valid checksum; a UDP zero
//!   ("no checksum", RFC 6935) stays zero;
//! - ICMPv6 errors: the outer destination is the new one (the source too when the flow's far end
//!   reported it), the ICMPv6 checksum verifies, the quoted packet carries the translated
//!   addresses and ports, and parsing gives the new tuple back.
#![no_main]

mod oracle;

use std::net::Ipv6Addr;

use libfuzzer_sys::fuzz_target;
use nat::packet::{IcmpKind, L4Info};
use nat::packet6::{classify, rewrite};
use nat::{Conntrack, FiveTuple, Proto, Timeouts};
use oracle::be16;
use switch::wire::Ip6;

fn a6(b: &[u8], at: usize) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&b[at..at + 16]).expect("16 bytes"))
}

/// The IPv6 pseudo-header sum (unfolded) for an upper-layer message of `len` bytes.
fn pseudo6(src: Ipv6Addr, dst: Ipv6Addr, nh: u8, len: usize) -> u64 {
    oracle::sum(&src.octets()) + oracle::sum(&dst.octets()) + u64::from(nh) + len as u64
}

/// Whether the message `seg` with its checksum verifies under the IPv6 pseudo-header.
fn ok6(src: Ipv6Addr, dst: Ipv6Addr, nh: u8, seg: &[u8]) -> bool {
    oracle::fold(pseudo6(src, dst, nh, seg.len()) + oracle::sum(seg)) == 0xffff
}

fn nh_of(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
        Proto::Icmp => 58,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 37 {
        return;
    }
    let (mode, rest) = (data[0], &data[1..]);
    let (sel, pkt) = rest.split_at(36);
    let mut ip = pkt.to_vec();
    let Some(p) = Ip6::parse(&ip) else { return };
    let Ok(info) = classify(&p, &ip) else { return };
    let total = p.total_len;
    let l4 = info.l4;
    let nh = nh_of(info.tuple.proto);
    let (src, dst) = (p.src, p.dst);
    let partial = mode & 1 != 0 && info.icmp == IcmpKind::NotIcmp;
    if partial {
        let co = oracle::csum_offset(nh).expect("TCP or UDP");
        let v = oracle::fold(pseudo6(src, dst, nh, total - l4));
        oracle::put16(&mut ip, l4 + co, v);
    }
    let new = FiveTuple {
        proto: info.tuple.proto,
        src: a6(sel, 0),
        sport: u16::from_be_bytes([sel[16], sel[17]]),
        dst: a6(sel, 18),
        dport: u16::from_be_bytes([sel[34], sel[35]]),
    };
    let new = if info.tuple.proto == Proto::Icmp {
        FiveTuple {
            dport: new.sport,
            ..new
        }
    } else {
        new
    };
    let before = ip.clone();
    // A UDP zero is "no checksum" (RFC 6935), which the rewrite leaves alone, even where the
    // datagram's sum happens to make zero verify.
    let no_udp_sum = nh == 17 && be16(&ip, l4 + 6) == 0;
    let was_ok = info.icmp == IcmpKind::NotIcmp && !no_udp_sum && ok6(src, dst, nh, &ip[l4..total]);
    rewrite(&mut ip, &info, &new, partial);
    assert_eq!(ip.len(), before.len());
    let p2 = Ip6::parse(&ip).expect("a translated packet must still parse");
    let after = classify(&p2, &ip).expect("and classify");
    assert_eq!(after.tuple, new, "translated tuple");
    let seg = &ip[l4..total];
    match info.icmp {
        IcmpKind::NotIcmp if partial => {
            let co = oracle::csum_offset(nh).expect("TCP or UDP");
            let mut done = seg.to_vec();
            oracle::complete(&mut done, co);
            assert!(
                ok6(new.src, new.dst, nh, &done),
                "partial checksum after the rewrite"
            );
        }
        IcmpKind::NotIcmp if no_udp_sum => {
            assert_eq!(be16(seg, 6), 0, "no checksum made up for a UDP zero");
        }
        IcmpKind::NotIcmp => {
            if was_ok {
                assert!(
                    ok6(new.src, new.dst, nh, seg),
                    "L4 checksum broken by the rewrite"
                );
            }
        }
        IcmpKind::Echo => assert!(ok6(new.src, new.dst, 58, seg), "echo checksum"),
        IcmpKind::Error { inner } => check_error(&before, &ip, inner, &info, &new, total),
    }

    let ct: Conntrack<Ipv6Addr> = Conntrack::new(4, Timeouts::default());
    let t = info.tuple;
    let up: Ipv6Addr = "2001:db8:60::2".parse().expect("address");
    if let Ok(f) = ct.create_snat(t, up, None, 1, |_, _| false, 0) {
        let (g, d) = ct
            .lookup(&t, 1)
            .expect("a new flow is found by its original tuple");
        assert_eq!(d, nat::FlowDir::Original);
        assert!(std::sync::Arc::ptr_eq(&f, &g));
        let back = f.translate(nat::FlowDir::Original).reversed();
        assert!(
            ct.lookup(&back, 1).is_some(),
            "the answer's tuple finds the flow"
        );
        f.seen(nat::FlowDir::Reply, info.tcp_flags, info.len, 2);
    }
    let _ = ct.create_dnat(t, "fd00::2".parse().expect("address"), t.dport, 1, 3);
    ct.expire(u64::MAX);
});

/// An ICMPv6 error (`before`, quoting the packet at `inner`) translated to the error-direction
/// tuple `new` (`after`).
fn check_error(
    before: &[u8],
    after: &[u8],
    inner: usize,
    info: &L4Info<Ipv6Addr>,
    new: &FiveTuple<Ipv6Addr>,
    total: usize,
) {
    assert_eq!(a6(after, 24), new.dst, "outer destination");
    let old_src = a6(before, 8);
    let want = if old_src == info.tuple.src {
        new.src
    } else {
        old_src
    };
    assert_eq!(a6(after, 8), want, "outer source");
    assert!(
        ok6(a6(after, 8), a6(after, 24), 58, &after[info.l4..total]),
        "ICMPv6 checksum of the translated error"
    );
    let q = &after[inner..total];
    assert_eq!(a6(q, 8), new.dst, "quoted source address");
    assert_eq!(a6(q, 24), new.src, "quoted destination address");
    match info.tuple.proto {
        Proto::Tcp | Proto::Udp => {
            assert_eq!(be16(q, 40), new.dport, "quoted source port");
            assert_eq!(be16(q, 42), new.sport, "quoted destination port");
        }
        Proto::Icmp => assert_eq!(be16(q, 44), new.sport, "quoted echo identifier"),
    }
}
