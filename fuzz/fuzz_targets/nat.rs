//! NAT translation: parse an IPv4 packet, rewrite its tuple to one taken from the input (the
//! way masquerade, publishing and hairpin do), and check that the translated packet parses to
//! exactly that tuple with valid IP and L4 checksums whenever the original had them. Then drive
//! the connection tracker with the packet's tuple.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use nat::packet::{checksum, checksum_pseudo, parse, rewrite, IcmpKind};
use nat::{Conntrack, FiveTuple, Proto, Timeouts};

/// Whether the L4 checksum of `ip` (parsed, not an ICMP error) is right.
fn l4_ok(ip: &[u8], l4: usize, t: &FiveTuple) -> bool {
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let seg = &ip[l4..total];
    match t.proto {
        Proto::Tcp => checksum_pseudo(t.src, t.dst, 6, seg) == 0,
        Proto::Udp => seg[6..8] == [0, 0] || checksum_pseudo(t.src, t.dst, 17, seg) == 0,
        Proto::Icmp => checksum(seg) == 0,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    let (sel, pkt) = data.split_at(12);
    let mut ip = pkt.to_vec();
    let Ok(info) = parse(&ip) else { return };
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
    let plain = matches!(info.icmp, IcmpKind::NotIcmp | IcmpKind::Echo);
    let was_ok = plain && l4_ok(&ip, info.l4, &info.tuple);
    rewrite(&mut ip, &info, &new, false);
    let after = parse(&ip).expect("a translated packet must still parse");
    if plain {
        assert_eq!(after.tuple, new, "translated tuple");
        if was_ok {
            assert!(
                l4_ok(&ip, after.l4, &after.tuple),
                "L4 checksum broken by the rewrite"
            );
        }
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
        f.seen(nat::FlowDir::Reply, info.tcp_flags, 2);
    }
    let _ = ct.create_dnat(t, Ipv4Addr::new(10, 0, 0, 2), t.dport, 1, 3);
    ct.expire(u64::MAX);
});
