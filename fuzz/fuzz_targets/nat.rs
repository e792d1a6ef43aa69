//! NAT translation: parse an IPv4 packet, rewrite its tuple to one taken from the input (the
//! way masquerade, publishing and hairpin do), then drive the connection tracker with the
//! packet's tuple. Input: `[mode | new tuple (12) | IPv4 packet]`; mode bit 0 hands the packet
//! over as the datapath does a frame with virtio `NEEDS_CSUM`: a TCP/UDP checksum field holding
//! only the pseudo-header sum, and `partial_l4` set.
//!
//! Oracles (checksums verified with the target's own arithmetic, `oracle.rs`):
//! - every translated packet parses, keeps its length and has a valid IPv4 header checksum;
//! - TCP/UDP/echo: the tuple is exactly the new one; a finished L4 checksum that was valid stays
//!   valid (echo: always valid, it is recomputed); a partial one is the new pseudo-header sum,
//!   which completes to a valid checksum;
//! - ICMP errors: the outer destination is the new one (the source too when the flow's far end
//!   reported the error), the ICMP checksum verifies, the quoted packet carries the translated
//!   tuple (its addresses and ports/identifier), its IPv4 header checksum stays valid and, when
//!   it is quoted whole, so does its L4 checksum; parsing gives the new tuple back.
#![no_main]

mod oracle;

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use nat::packet::{parse, rewrite, IcmpKind};
use nat::{Conntrack, FiveTuple, Proto, Timeouts};
use oracle::{addr, be16};

fuzz_target!(|data: &[u8]| {
    if data.len() < 13 {
        return;
    }
    let (mode, rest) = (data[0], &data[1..]);
    let (sel, pkt) = rest.split_at(12);
    let mut ip = pkt.to_vec();
    let Ok(info) = parse(&ip) else { return };
    let total = usize::from(be16(&ip, 2));
    let l4 = info.l4;
    let proto = info.tuple.proto.number();
    let (src, dst) = (info.tuple.src, info.tuple.dst);
    let partial = mode & 1 != 0;
    if partial && info.icmp == IcmpKind::NotIcmp {
        // As a TAP hands it over: the field holds the pseudo-header sum (the data is summed
        // later, by whoever completes it).
        let co = oracle::csum_offset(proto).expect("TCP or UDP");
        oracle::put16(
            &mut ip,
            l4 + co,
            oracle::partial(src, dst, proto, total - l4),
        );
    }
    let new = FiveTuple {
        proto: info.tuple.proto,
        src: Ipv4Addr::new(sel[0], sel[1], sel[2], sel[3]),
        sport: u16::from_be_bytes([sel[4], sel[5]]),
        dst: Ipv4Addr::new(sel[6], sel[7], sel[8], sel[9]),
        dport: u16::from_be_bytes([sel[10], sel[11]]),
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
    let was_ok = oracle::l4_ok(proto, src, dst, &ip[l4..total]) == Some(true);
    // The datapath passes the frame's NEEDS_CSUM flag for every packet it translates.
    rewrite(&mut ip, &info, &new, partial);
    let after = parse(&ip).expect("a translated packet must still parse");
    assert_eq!(ip.len(), before.len());
    assert!(
        oracle::ipv4_header_ok(&ip),
        "IPv4 header checksum broken by the rewrite"
    );
    assert_eq!(after.tuple, new, "translated tuple");
    let seg = &ip[l4..total];
    match info.icmp {
        IcmpKind::NotIcmp if partial => {
            let co = oracle::csum_offset(proto).expect("TCP or UDP");
            let mut done = seg.to_vec();
            oracle::complete(&mut done, co);
            assert_eq!(
                oracle::l4_ok(proto, new.src, new.dst, &done),
                Some(true),
                "partial checksum, completed after the rewrite, does not verify"
            );
        }
        IcmpKind::NotIcmp => {
            if was_ok {
                assert_eq!(
                    oracle::l4_ok(proto, new.src, new.dst, seg),
                    Some(true),
                    "L4 checksum broken by the rewrite"
                );
            }
        }
        IcmpKind::Echo => assert!(oracle::verifies(seg), "echo checksum after the rewrite"),
        IcmpKind::Error { inner } => check_icmp_error(&before, &ip, inner, &info, &new),
    }

    // The tracker: create, look up both ways, translate.
    let ct = Conntrack::new(4, Timeouts::default());
    let t = info.tuple;
    if let Ok(f) = ct.create_snat(t, Ipv4Addr::new(198, 51, 100, 1), None, 1, |_, _| false, 0) {
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
    let _ = ct.create_dnat(t, Ipv4Addr::new(10, 0, 0, 2), t.dport, 1, 3);
    ct.expire(u64::MAX);
});

/// An ICMP error (`before`, quoting the packet at `inner`) translated to the error-direction
/// tuple `new` (`after`).
fn check_icmp_error(
    before: &[u8],
    after: &[u8],
    inner: usize,
    info: &nat::L4Info,
    new: &FiveTuple,
) {
    let total = usize::from(be16(after, 2));
    assert_eq!(addr(after, 16), new.dst, "outer destination");
    let old_src = addr(before, 12);
    let want_src = if old_src == info.tuple.src {
        new.src
    } else {
        old_src
    };
    assert_eq!(addr(after, 12), want_src, "outer source");
    assert!(
        oracle::verifies(&after[info.l4..total]),
        "ICMP checksum of the translated error"
    );
    // The quoted packet travels the other way: its source is the error's destination side.
    let (q0, q) = (&before[inner..total], &after[inner..total]);
    let qihl = usize::from(q[0] & 0x0f) * 4;
    assert_eq!(addr(q, 12), new.dst, "quoted source address");
    assert_eq!(addr(q, 16), new.src, "quoted destination address");
    match info.tuple.proto {
        Proto::Tcp | Proto::Udp => {
            assert_eq!(be16(q, qihl), new.dport, "quoted source port");
            assert_eq!(be16(q, qihl + 2), new.sport, "quoted destination port");
        }
        Proto::Icmp => assert_eq!(be16(q, qihl + 4), new.sport, "quoted echo identifier"),
    }
    if oracle::verifies(&q0[..qihl]) {
        assert!(
            oracle::verifies(&q[..qihl]),
            "quoted IPv4 header checksum broken"
        );
    }
    // Quoted whole (a short packet): its L4 checksum stays valid too.
    let qtotal = usize::from(be16(q, 2));
    if (qihl..=q.len()).contains(&qtotal) && be16(q0, 6) & 0x3fff == 0 {
        let proto = q[9];
        let ok = |p: &[u8]| oracle::l4_ok(proto, addr(p, 12), addr(p, 16), &p[qihl..qtotal]);
        if ok(q0) == Some(true) {
            assert_eq!(ok(q), Some(true), "quoted L4 checksum broken");
        }
    }
}
