//! Prometheus metrics: `GET /metrics` on the API socket and on `vswitchd --metrics-listen`,
//! checked by `promtool check metrics` and scraped by a real Prometheus (Debian's), whose HTTP
//! API must give back what `vswitchctl stats` says.

mod common;

use common::*;
use switch::model::StatsInfo;

/// A directory removed on drop (Prometheus' configuration and data).
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!(
            "vswitch-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&d).expect("scratch directory");
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One value of an instant query to the Prometheus at `127.0.0.1:9090` in `ns`, if any.
fn query(ns: &Netns, q: &str) -> Option<f64> {
    let o = ns.exec(&[
        "curl",
        "-s",
        "--max-time",
        "3",
        "-G",
        "http://127.0.0.1:9090/api/v1/query",
        "--data-urlencode",
        &format!("query={q}"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_what_stats_says_and_promtool_accepts_the_exposition() {
    require(&["prometheus", "promtool", "curl", "ping"]);
    let h = Netns::new("mh");
    let d = Daemon::start_in(&h, &["--metrics-listen", "127.0.0.1:9469"]);
    d.ctl_ok(&["network", "create", "mnet", "--subnet", "10.93.0.0/24"]);
    let (a, b) = (Netns::new("ma"), Netns::new("mb"));
    attach(&d, &a, "mnet");
    let eb = attach(&d, &b, "mnet");
    assert!(a.ping(&eb.ip.to_string(), 5), "ping across the switch");

    // The exposition passes Prometheus' own linter, on the listener and on the API socket.
    let text = h.exec_ok(&["curl", "-sS", "http://127.0.0.1:9469/metrics"]);
    let scratch = Scratch::new("prom");
    let file = scratch.0.join("metrics.txt");
    std::fs::write(&file, &text).expect("write exposition");
    let check = run(&[
        "sh",
        "-c",
        &format!("promtool check metrics < {}", file.display()),
    ]);
    assert!(
        check.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    for want in [
        "vswitch_build_info{version=",
        "vswitch_port_rx_packets_total{port=\"p",
        "vswitch_network_endpoints{network=\"mnet\"} 2",
        "vswitch_drops_total{reason=\"spoofed\"}",
        "vswitch_worker_busy_seconds_total{worker=\"0\"}",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    let via_ctl = d.ctl_ok(&["metrics"]);
    assert!(via_ctl.contains("# TYPE vswitch_port_rx_packets_total counter"));

    // A real Prometheus scrapes the listener every second.
    let cfg = scratch.0.join("prometheus.yml");
    std::fs::write(
        &cfg,
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vswitch\n    \
         static_configs:\n      - targets: ['127.0.0.1:9469']\n",
    )
    .expect("prometheus config");
    let data = scratch.0.join("data");
    let _prom = h.spawn(&[
        "prometheus",
        &format!("--config.file={}", cfg.display()),
        &format!("--storage.tsdb.path={}", data.display()),
        "--web.listen-address=127.0.0.1:9090",
    ]);
    // Its value for a's port equals what stats says (read in the same round: it settles once
    // a scrape after the last frame has been taken).
    let port = |s: &StatsInfo| {
        s.ports
            .iter()
            .find(|p| p.netns == a.name)
            .map(|p| (p.name.clone(), p.counters.rx_packets, p.counters.tx_bytes))
            .expect("a's port")
    };
    let mut seen = (None, None, (String::new(), 0, 0));
    let agreed = wait_until(30, || {
        let want = port(&stats(&d));
        let q = |m: &str| {
            query(
                &h,
                &format!("{m}{{port=\"{}\",netns=\"{}\"}}", want.0, a.name),
            )
        };
        let got = (
            q("vswitch_port_rx_packets_total"),
            q("vswitch_port_tx_bytes_total"),
        );
        let ok = got.0 == Some(want.1 as f64) && got.1 == Some(want.2 as f64) && want.1 > 0;
        seen = (got.0, got.1, want);
        ok
    });
    assert!(agreed, "Prometheus vs stats: {seen:?}\n{}", d.log());
    let eps = query(&h, "vswitch_network_endpoints{network=\"mnet\"}");
    assert_eq!(eps, Some(2.0));
}

#[test]
fn a_metrics_listener_off_loopback_is_refused_unless_asked_for() {
    let scratch = Scratch::new("mlisten");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vswitchd"))
        .args(["--metrics-listen", "0.0.0.0:9469", "--state-dir"])
        .arg(scratch.0.join("state"))
        .arg("--socket")
        .arg(scratch.0.join("s.sock"))
        .output()
        .expect("run vswitchd");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "started: {err}");
    assert!(
        err.contains("--metrics-listen-any") && err.lines().count() == 1,
        "{err}"
    );
    assert!(
        !scratch.0.join("state").exists(),
        "nothing made before the refusal"
    );
}
