//! Bytes per entry of vswitch's tables: fills a conntrack table with 1 000 000 flows, an FDB
//! and a remote FDB with 100 000 MACs each, and reports the growth of this process's resident
//! memory. Run: `cargo run --release -p vswitch-perf --bin table-memory`.

use vswitch_perf::*;

/// Bytes per entry each table must stay within (README, Benchmarks: 185, 39 and 35 measured;
/// conntrack's target is 200, the FDBs get the same ~25% headroom).
const CONNTRACK_MAX_BYTES: f64 = 200.0;
const FDB_MAX_BYTES: f64 = 50.0;
const REMOTE_MAX_BYTES: f64 = 45.0;

fn main() {
    let report = |what: &str, n: u32, before: u64, after: u64, limit: f64| {
        let grew = after.saturating_sub(before);
        let per = grew as f64 / f64::from(n);
        println!(
            "{what:<28} {n:>9} entries  {:>8.1} MiB  {per:>6.0} bytes/entry (limit {limit:.0})",
            grew as f64 / 1048576.0,
        );
        per <= limit
    };
    let base = rss_bytes();
    let ct = conntrack_with(1_000_000);
    let after_ct = rss_bytes();
    let mut ok = report(
        "conntrack (masquerade)",
        1_000_000,
        base,
        after_ct,
        CONNTRACK_MAX_BYTES,
    );
    let fdb = fdb_with(100_000);
    let after_fdb = rss_bytes();
    ok &= report(
        "fdb (local MACs)",
        100_000,
        after_ct,
        after_fdb,
        FDB_MAX_BYTES,
    );
    let remote = remote_with(100_000);
    let after_remote = rss_bytes();
    ok &= report(
        "remote fdb (VXLAN)",
        100_000,
        after_fdb,
        after_remote,
        REMOTE_MAX_BYTES,
    );
    println!(
        "{:<28} {:>9}          {:>8.1} MiB resident in all",
        "process",
        "",
        after_remote as f64 / 1048576.0
    );
    std::hint::black_box((ct.len(), fdb.len(), remote.entries(0).len()));
    if !ok {
        eprintln!("table-memory: a table passed its bytes-per-entry limit (see above)");
        std::process::exit(1);
    }
}
