//! The Prometheus text exposition (format 0.0.4) of the switch's counters and table sizes:
//! what `GET /metrics` answers on the API socket and on `vswitchd --metrics-listen`. A pure
//! function of [`MetricsInfo`]. Names follow Prometheus' conventions (`vswitch_` prefix, base
//! units, `_total` for counters) and stay stable: dashboards and alerts are built on them.

use std::fmt::Write;

use switch::model::MetricsInfo;

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value escaped as the format wants (backslash, double quote, newline).
fn esc(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// One metric family: its HELP and TYPE lines, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    /// A sample with `labels` (name, value pairs).
    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{}", self.name);
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// The exposition of `m`.
pub fn render(m: &MetricsInfo) -> String {
    let mut out = String::with_capacity(4096 + m.stats.ports.len() * 800);
    let o = &mut out;
    Family::new(
        o,
        "vswitch_build_info",
        "gauge",
        "The daemon's version (value 1).",
    )
    .sample(&[("version", &m.version)], 1);

    type PortField = fn(&switch::model::PortCounters) -> u64;
    let port_metrics: [(&'static str, &str, PortField); 5] = [
        (
            "vswitch_port_rx_packets_total",
            "Frames received from the port.",
            |c| c.rx_packets,
        ),
        (
            "vswitch_port_rx_bytes_total",
            "Bytes received from the port.",
            |c| c.rx_bytes,
        ),
        (
            "vswitch_port_tx_packets_total",
            "Frames sent to the port.",
            |c| c.tx_packets,
        ),
        (
            "vswitch_port_tx_bytes_total",
            "Bytes sent to the port.",
            |c| c.tx_bytes,
        ),
        (
            "vswitch_port_tx_drops_total",
            "Frames the port's device did not take (full queue, send error).",
            |c| c.tx_dropped,
        ),
    ];
    for (name, help, field) in port_metrics {
        let mut f = Family::new(o, name, "counter", help);
        for p in &m.stats.ports {
            f.sample(
                &[
                    ("port", &p.name),
                    ("netns", &p.netns),
                    ("network", &p.network),
                ],
                field(&p.counters),
            );
        }
    }
    let mut f = Family::new(
        o,
        "vswitch_port_up",
        "gauge",
        "1 when the port has its device, 0 when pending or down.",
    );
    for p in &m.stats.ports {
        f.sample(
            &[
                ("port", &p.name),
                ("netns", &p.netns),
                ("network", &p.network),
            ],
            u8::from(p.state == "up"),
        );
    }
    let mut f = Family::new(
        o,
        "vswitch_drops_total",
        "counter",
        "Frames dropped, by reason (the names vswitchctl stats shows).",
    );
    for (reason, n) in &m.stats.drops {
        f.sample(&[("reason", reason)], n);
    }
    let mut f = Family::new(
        o,
        "vswitch_events_total",
        "counter",
        "Things the datapath did that are not drops (flooded, arp_suppressed, snat_flows, ...).",
    );
    for (event, n) in &m.stats.events {
        f.sample(&[("event", event)], n);
    }
    type NetField = fn(&switch::model::NetworkMetrics) -> u64;
    let per_network: [(&'static str, &str, NetField); 5] = [
        (
            "vswitch_network_endpoints",
            "Endpoints attached to the network.",
            |n| n.endpoints,
        ),
        (
            "vswitch_fdb_entries",
            "Learned local MACs in the network's FDB.",
            |n| n.fdb_entries,
        ),
        (
            "vswitch_remote_fdb_entries",
            "MACs behind peer VTEPs (overlay networks).",
            |n| n.remote_entries,
        ),
        (
            "vswitch_neighbour_entries",
            "IPv4 neighbours the network's gateway knows.",
            |n| n.neighbours,
        ),
        (
            "vswitch_neighbour6_entries",
            "IPv6 neighbours learned from neighbour discovery.",
            |n| n.neighbours6,
        ),
    ];
    for (name, help, field) in per_network {
        let mut f = Family::new(o, name, "gauge", help);
        for n in &m.networks {
            f.sample(&[("network", &n.network)], field(n));
        }
    }
    Family::new(
        o,
        "vswitch_fdb_limit",
        "gauge",
        "Most MACs one network's FDB holds.",
    )
    .sample(&[], m.fdb_limit);
    let mut f = Family::new(
        o,
        "vswitch_conntrack_entries",
        "gauge",
        "Tracked connections by address family and state.",
    );
    for c in &m.conntrack {
        f.sample(&[("family", &c.family), ("state", &c.state)], c.count);
    }
    Family::new(
        o,
        "vswitch_conntrack_limit",
        "gauge",
        "Most connections one address family's table holds.",
    )
    .sample(&[], m.conntrack_limit);
    Family::new(
        o,
        "vswitch_uplink_neighbour_entries",
        "gauge",
        "Next hops the uplink has resolved (ARP and neighbour discovery).",
    )
    .sample(&[], m.uplink_neighbours);
    Family::new(
        o,
        "vswitch_capture_sessions",
        "gauge",
        "Capture sessions open.",
    )
    .sample(&[], m.capture_sessions);
    let mut f = Family::new(
        o,
        "vswitch_worker_busy_seconds_total",
        "counter",
        "Time each datapath worker spent handling frames.",
    );
    for (i, ns) in m.worker_busy_ns.iter().enumerate() {
        f.sample(
            &[("worker", &i.to_string())],
            format!("{:.6}", *ns as f64 / 1e9),
        );
    }
    out
}

#[cfg(test)]
mod test {
    use super::*;
    use switch::model::*;

    #[test]
    fn label_values_are_escaped_and_families_typed() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let m = MetricsInfo {
            version: "0.1.0".into(),
            stats: StatsInfo {
                ports: vec![],
                drops: [("spoofed".to_string(), 3)].into(),
                events: [("flooded".to_string(), 5)].into(),
            },
            networks: vec![NetworkMetrics {
                network: "we\"ird".into(),
                endpoints: 2,
                fdb_entries: 2,
                remote_entries: 0,
                neighbours: 2,
                neighbours6: 0,
            }],
            fdb_limit: 65536,
            conntrack: vec![ConntrackCount {
                family: "ipv4".into(),
                state: "ESTABLISHED".into(),
                count: 7,
            }],
            conntrack_limit: 100,
            uplink_neighbours: 1,
            capture_sessions: 0,
            worker_busy_ns: vec![1_500_000_000],
        };
        let t = render(&m);
        assert!(t.contains("# TYPE vswitch_drops_total counter\n"));
        assert!(t.contains("vswitch_drops_total{reason=\"spoofed\"} 3\n"));
        assert!(t.contains("vswitch_network_endpoints{network=\"we\\\"ird\"} 2\n"));
        assert!(t.contains("vswitch_conntrack_entries{family=\"ipv4\",state=\"ESTABLISHED\"} 7\n"));
        assert!(t.contains("vswitch_worker_busy_seconds_total{worker=\"0\"} 1.500000\n"));
        // Every sample's family was declared before it.
        let mut typed = std::collections::HashSet::new();
        for l in t.lines() {
            if let Some(r) = l.strip_prefix("# TYPE ") {
                typed.insert(r.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert!(typed.contains(name), "{l}");
            }
        }
    }
}
