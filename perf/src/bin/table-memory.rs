//! Bytes per entry of vswitch's tables: fills a conntrack table with 1 000 000 flows, an FDB
//! and a remote FDB with 100 000 MACs each, and reports the growth of this process's resident
//! memory. Run: `cargo run --release -p vswitch-perf --bin table-memory`.

use vswitch_perf::*;

fn main() {
    let report = |what: &str, n: u32, before: u64, after: u64| {
        let grew = after.saturating_sub(before);
        println!(
            "{what:<28} {n:>9} entries  {:>8.1} MiB  {:>6.0} bytes/entry",
            grew as f64 / 1048576.0,
            grew as f64 / f64::from(n)
        );
    };
    let base = rss_bytes();
    let ct = conntrack_with(1_000_000);
    let after_ct = rss_bytes();
    report("conntrack (masquerade)", 1_000_000, base, after_ct);
    let fdb = fdb_with(100_000);
    let after_fdb = rss_bytes();
    report("fdb (local MACs)", 100_000, after_ct, after_fdb);
    let remote = remote_with(100_000);
    let after_remote = rss_bytes();
    report("remote fdb (VXLAN)", 100_000, after_fdb, after_remote);
    println!(
        "{:<28} {:>9}          {:>8.1} MiB resident in all",
        "process",
        "",
        after_remote as f64 / 1048576.0
    );
    std::hint::black_box((ct.len(), fdb.len(), remote.entries(0).len()));
}
