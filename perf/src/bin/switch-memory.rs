//! Peak memory of the whole switch (the code vswitchd runs: workers, control state, datapath
//! snapshot, tables) holding 1 000 000 NAT flows and 100 000 learned MACs, filled the way a
//! daemon fills them: by frames through the datapath. Uses the device-less harness (sink ports
//! and `Switch::inject`), so it needs no root and no namespaces; the tokio control API of the
//! vswitchd binary is not included (its footprint does not grow with the tables).
//! Run: `cargo run --release -p vswitch-perf --bin switch-memory`.

use std::net::Ipv4Addr;

use nat::{FiveTuple, Proto};
use switch::model::*;
use switch::wire::MacAddr;
use switch::{Options, Switch};
use vswitch_perf::{mac, udp_frame};

const FLOWS: u32 = 1_000_000;
const MACS: u32 = 100_000;
/// Bounds the run must stay within (README, Benchmarks: 172 bytes per entry and a 186 MiB peak
/// measured; conntrack's target of 200 bytes per flow, and 220 MiB, give the headroom).
const MAX_BYTES_PER_ENTRY: f64 = 200.0;
const MAX_PEAK_KIB: u64 = 220 * 1024;

/// (VmHWM, VmRSS) of this process in KiB.
fn mem() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let f = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in /proc/self/status"))
    };
    (f("VmHWM:"), f("VmRSS:"))
}

/// Prefix a frame with a zeroed virtio-net header of `hdr` bytes.
fn wire(hdr: usize, frame: &[u8]) -> Vec<u8> {
    let mut w = vec![0u8; hdr];
    w.extend_from_slice(frame);
    w
}

fn main() {
    let (hwm0, _) = mem();
    let sw = Switch::start(Options {
        workers: 2,
        ct_max: FLOWS as usize + 1000,
        fdb_limit: MACS as usize + 1000,
        ..Options::default()
    })
    .expect("start switch");
    sw.create_network(&NetworkCreate::flat("front", "10.8.0.0/16"))
        .expect("network");
    let attach = |ns: &str, spoof: bool| {
        sw.attach_sink(&AttachRequest {
            allow_spoof: spoof,
            ..AttachRequest::new(ns, "front")
        })
        .expect("attach")
    };
    let (a, b) = (attach("a", true), attach("b", true));
    sw.set_uplink_sink(&UplinkSet {
        iface: "up0".into(),
        ip: "100.64.0.1/10".into(),
        gateway: Some("100.64.0.254".into()),
        ip6: None,
        gateway6: None,
        ipv6_routed: false,
    })
    .expect("uplink");
    let (pa, pb) = (
        sw.port_id(&a.port).expect("port"),
        sw.port_id(&b.port).expect("port"),
    );
    let pup = sw.port_id("uplink").expect("uplink");
    let gw: MacAddr = sw
        .network("front")
        .expect("net")
        .gateway_mac
        .parse()
        .expect("mac");
    let upmac: MacAddr = sw.uplink().expect("uplink").mac.parse().expect("mac");
    let amac: MacAddr = a.mac.parse().expect("mac");
    // The next hop answers ARP, so translated frames leave at once instead of queueing.
    let mut arp = vec![0u8; 42];
    arp[..6].copy_from_slice(&upmac.0);
    arp[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xfe]);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    arp[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    arp[22..28].copy_from_slice(&[2, 0, 0, 0, 0, 0xfe]);
    arp[28..32].copy_from_slice(&[100, 64, 0, 254]);
    arp[32..38].copy_from_slice(&upmac.0);
    arp[38..42].copy_from_slice(&[100, 64, 0, 1]);
    sw.inject(pup, &wire(10, &arp));
    let (hwm1, rss1) = mem();

    let t0 = std::time::Instant::now();
    for i in 0..FLOWS {
        let t = FiveTuple {
            proto: Proto::Udp,
            src: a.ip,
            sport: 1024 + (i % 60_000) as u16,
            dst: Ipv4Addr::from(0xcb00_0000 | (i / 60_000)),
            dport: 53,
        };
        sw.inject(pa, &wire(12, &udp_frame(&t, amac, gw)));
    }
    for i in 0..MACS {
        let t = FiveTuple {
            proto: Proto::Udp,
            src: b.ip,
            sport: 1,
            dst: a.ip,
            dport: 2,
        };
        sw.inject(pb, &wire(12, &udp_frame(&t, mac(i), amac)));
    }
    let took = t0.elapsed();
    let (hwm2, rss2) = mem();
    let st = sw.stats();
    let flows = st.events["snat_flows"];
    let learned = st.events["fdb_learned"];
    println!(
        "{flows} NAT flows and {learned} learned MACs through the datapath in {:.1} s",
        took.as_secs_f64()
    );
    println!(
        "switch started, empty: {:>7.1} MiB resident (peak {:.1} MiB; process before start {:.1})",
        rss1 as f64 / 1024.0,
        hwm1 as f64 / 1024.0,
        hwm0 as f64 / 1024.0
    );
    println!(
        "with the tables full:  {:>7.1} MiB resident, peak {:.1} MiB",
        rss2 as f64 / 1024.0,
        hwm2 as f64 / 1024.0
    );
    let per_entry = hwm2.saturating_sub(hwm1) as f64 * 1024.0 / (flows + learned).max(1) as f64;
    println!(
        "growth per entry:      {per_entry:>7.0} bytes (flows and MACs together, peak over empty; limit {MAX_BYTES_PER_ENTRY:.0})"
    );
    assert!(
        flows >= u64::from(FLOWS) && learned >= u64::from(MACS),
        "{st:?}"
    );
    assert!(
        per_entry <= MAX_BYTES_PER_ENTRY && hwm2 <= MAX_PEAK_KIB,
        "switch-memory: {per_entry:.0} bytes per entry (limit {MAX_BYTES_PER_ENTRY:.0}), peak {hwm2} KiB (limit {MAX_PEAK_KIB})"
    );
    sw.shutdown();
}
