//! Per-frame cost of the datapath's decisions, each with 1, 10 000 and 1 000 000 table entries
//! (the cost should stay flat). Run: `cargo bench -p vswitch-perf`.
//!
//! - `l2`: parse the Ethernet header, learn (refresh) the source, look up the destination.
//! - `nat`: parse the 5-tuple of an established flow's packet, look it up in conntrack, update
//!   its state and rewrite the packet in place (addresses, ports, incremental checksums). The
//!   64-byte packet is first copied from a template (a few ns, included).
//! - `vxlan_encap`: remote FDB lookup of the destination MAC, the UDP source-port hash, outer
//!   IPv4/UDP/VXLAN headers written into the headroom.
//! - `vxlan_decap`: check the VXLAN header, parse the inner Ethernet header, learn (refresh) the
//!   inner source behind the outer source.
//! - `gso_segment`: cut a 64 KiB TCP super-frame into 1398-byte VXLAN segments with checksums
//!   (per super-frame, not per entry count).
//! - `floor`: one lookup of a random key in a plain `FxHashMap<u64, [u64; 4]>` of the same size,
//!   nothing else: what one random access into a table that large costs on this machine (cache
//!   and TLB misses). Each lookup's key depends on the previous answer, as in the datapath, where
//!   the locked instructions between two frames' lookups keep the CPU from overlapping their
//!   misses (`floor_overlapped` lets it overlap them, for comparison). `l2` does two lookups per
//!   frame (learn and forward), so at 1 000 000 entries it cannot be cheaper than twice `floor`.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switch::fdb::FdbCache;
use switch::wire::EthFrame;
use vswitch_perf::*;

const SIZES: [u32; 3] = [1, 10_000, 1_000_000];
const PICKS: usize = 4096;

fn l2(c: &mut Criterion) {
    let mut g = c.benchmark_group("l2");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let fdb = fdb_with(n);
        // Each source arrives on the port it was learned on (the common case: a refresh).
        let frames: Vec<(Vec<u8>, u32)> = spread(n, PICKS)
            .chunks(2)
            .map(|p| (udp_frame(&flow(0), mac(p[0]), mac(p[1])), p[0] % 64))
            .collect();
        // Through a worker's cache, as the datapath does. With one entry every frame hits it;
        // with 10k and 1M the 4096 random MACs in play overflow its 1024 slots, so most frames
        // also pay the shared map (the cost of traffic with thousands of active MACs per worker).
        let mut cache = FdbCache::default();
        let mut i = 0;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                let (frame, port) = &frames[i];
                let eth = EthFrame::parse(black_box(frame)).expect("frame");
                cache.learn(&fdb, 1, eth.src, *port, 1);
                black_box(cache.lookup(&fdb, 1, eth.dst, 1))
            })
        });
    }
    g.finish();
}

fn nat(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let ct = conntrack_with(n);
        let frames: Vec<Vec<u8>> = spread(n, PICKS)
            .into_iter()
            .map(|p| udp_frame(&flow(p), mac(1), mac(2)))
            .collect();
        let mut work = vec![0u8; 64];
        let mut i = 0;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                work.copy_from_slice(&frames[i]);
                let ip = &mut work[14..];
                let info = nat::packet::parse(ip).expect("udp");
                let (f, dir) = ct.lookup(&info.tuple, 1).expect("established");
                f.seen(dir, info.tcp_flags, info.len, 1);
                nat::packet::rewrite(ip, &info, &f.translate(dir), false);
                black_box(&work);
            })
        });
    }
    g.finish();
}

fn vxlan(c: &mut Criterion) {
    let mut g = c.benchmark_group("vxlan_encap");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let r = remote_with(n);
        let picks = spread(n, PICKS);
        let mut pkt = vec![0u8; wire::vxlan::OUTER_LEN + 64];
        let inner = udp_frame(&flow(0), mac(1), mac(2));
        pkt[wire::vxlan::OUTER_LEN..].copy_from_slice(&inner);
        // The frame's one parse is the classify stage's, before encapsulation; the destination
        // MAC that changes below is not part of what the source port hashes for IPv4.
        let parsed = wire::Parsed::parse(&inner).expect("frame");
        let mut i = 0;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % picks.len();
                let dst = mac(picks[i]);
                pkt[wire::vxlan::OUTER_LEN..wire::vxlan::OUTER_LEN + 6].copy_from_slice(&dst.0);
                let std::net::IpAddr::V4(vtep) = r.lookup(&dst.0, 1).expect("known") else {
                    unreachable!("IPv4 VTEPs only here")
                };
                let (hdr, frame) = pkt.split_at_mut(wire::vxlan::OUTER_LEN);
                black_box(&frame);
                let sport = wire::vxlan::source_port(black_box(&parsed));
                let hdr: &mut [u8; wire::vxlan::OUTER_LEN] = hdr.try_into().expect("outer");
                wire::vxlan::write_outer(
                    hdr,
                    Ipv4Addr::new(192, 168, 1, 1),
                    vtep,
                    sport,
                    4789,
                    42,
                    64,
                );
                black_box(&pkt);
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("vxlan_decap");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let r = remote_with(n);
        let pkts: Vec<Vec<u8>> = spread(n, PICKS)
            .into_iter()
            .map(|p| {
                let mut v = vec![0u8; wire::vxlan::HEADER_LEN];
                wire::vxlan::write_header((&mut v[..]).try_into().expect("8"), 42);
                v.extend(udp_frame(&flow(0), mac(p), mac(2)));
                v
            })
            .collect();
        let mut i = 0;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % pkts.len();
                let p = black_box(&pkts[i]);
                let vni = wire::vxlan::decap(p).expect("vxlan");
                let eth = EthFrame::parse(&p[wire::vxlan::HEADER_LEN..]).expect("inner");
                black_box(r.learn(eth.src.0, Ipv4Addr::new(192, 168, 0, 7).into(), 1));
                black_box(vni)
            })
        });
    }
    g.finish();
}

fn gso(c: &mut Criterion) {
    let mut g = c.benchmark_group("gso_segment");
    let payload = 65_000;
    g.throughput(Throughput::Bytes(payload as u64));
    let mut sup = udp_frame(&flow(0), mac(1), mac(2));
    sup.truncate(14 + 20);
    sup[14 + 9] = 6;
    sup.extend_from_slice(&[
        0x04, 0x00, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0x01, 0,
    ]);
    sup.extend_from_slice(&[0; 4]);
    sup.extend((0..payload).map(|i| i as u8));
    let mut out = vec![0u8; 192 * 1024];
    g.bench_function("64KiB_mss1398", |b| {
        b.iter(|| {
            let sup = black_box(&sup);
            let layout = overlay::gso::tcp4(sup).expect("TCP/IPv4");
            black_box(overlay::gso::segment_tcp4(sup, layout, 1398, 42, &mut out))
        })
    });
    g.finish();
}

fn floor(c: &mut Criterion) {
    let mut g = c.benchmark_group("floor");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let map: rustc_hash::FxHashMap<u64, [u64; 4]> = (0..u64::from(n))
            .map(|k| (k.wrapping_mul(0x9e37_79b9_7f4a_7c15), [k; 4]))
            .collect();
        let keys: Vec<u64> = spread(n, PICKS)
            .into_iter()
            .map(|k| u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let mut i = 0;
        g.bench_with_input(BenchmarkId::new("dependent", n), &n, |b, _| {
            b.iter(|| {
                // The next index needs this lookup's value: a chain of misses, not a stream.
                let v = map.get(&keys[i]).map_or(0, |v| v[0]);
                i = (i + 1 + (v & 1) as usize) % keys.len();
                v
            })
        });
        let mut j = 0;
        g.bench_with_input(BenchmarkId::new("overlapped", n), &n, |b, _| {
            b.iter(|| {
                j = (j + 1) % keys.len();
                black_box(map.get(black_box(&keys[j])).map(|v| v[0]))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, l2, nat, vxlan, gso, floor);
criterion_main!(benches);
