//! `vswitchctl top`: live per-port rates. This module is the pure part: the rates between two
//! `GET /v1/stats` samples ([`Rates::between`]), the sort order and its keys ([`View`]), and the
//! lines the screen and `--once` print. Time comes in as the measured gap between the samples and
//! as a clock string, so everything here is tested without a daemon or a terminal. [`run`]
//! (in `top/live.rs`) samples the daemon and drives the screen; `top/term.rs` holds the few
//! terminal calls (raw mode, signals, window size).

mod live;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

pub use live::run;
use serde::{Deserialize, Serialize};
use switch::model::{PortInfo, StatsInfo};

/// `vswitchctl top`'s own options.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Seconds between samples, more than 0 (fractions allowed: 0.5).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_interval, allow_hyphen_values = true)]
    pub interval: Duration,
    /// Column to sort the ports by (the `s` key cycles it): rates highest first, names in
    /// alphabetical order.
    #[arg(long, value_name = "COLUMN", value_enum, ignore_case = true, default_value_t = Column::RxPps)]
    pub sort: Column,
    /// Reverse the sort order (the `r` key toggles it).
    #[arg(long)]
    pub reverse: bool,
    /// Take two samples one interval apart, print the rates once and exit (no terminal
    /// needed); with vswitchctl --json, as JSON.
    #[arg(long)]
    pub once: bool,
}

/// The help `vswitchctl top --help` ends with: what the screen shows and the keys.
pub const AFTER_HELP: &str = "\
Columns (rates over the last interval; k, M, G are powers of 1000):
  PORT       switch port (p1, p2, ...; a VXLAN port; uplink)
  NETNS      namespace of the endpoint (- for the uplink and VXLAN ports)
  IFNAME     interface in that namespace (the uplink: its host interface)
  NETWORK    network of the port
  RX_PPS     frames per second the switch received from the port
  TX_PPS     frames per second the switch sent to the port
  RX_BPS     bits per second received from the port (Ethernet frames)
  TX_BPS     bits per second sent to the port
  TX_DROP/s  frames per second that could not be written to the port (queue full or gone)
The header has the clock, the interval, the totals of every port, and the switch's named
drops per second (the DROP counters of vswitchctl stats): their total, then the busiest by name.
A port that appeared, or whose counters went back (a new endpoint on the same port name),
shows 0 until the next sample. The sorted column is marked with '*'.

Keys (live view):
  s          sort by the next column      r   reverse the order
  q, Ctrl-C  quit (the terminal is restored)

Scripts: vswitchctl --json top --once [--interval SECS] prints
  {\"interval_secs\", \"ports\": [{\"port\", \"kind\", \"netns\", \"ifname\", \"network\", \"rx_pps\",
  \"tx_pps\", \"rx_bps\", \"tx_bps\", \"tx_drop_ps\"}], \"drops\": {NAME: per second},
  \"drops_total\"} (bps: bits per second).";

/// `--interval`: seconds, more than 0 and at most a day.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "{s} is out of range: give seconds more than 0, at most 86400"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A column of the table: what `--sort` and the `s` key choose from, in screen order.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// Port name.
    #[value(name = "port")]
    Port,
    /// Namespace.
    #[value(name = "netns")]
    Netns,
    /// Interface name.
    #[value(name = "ifname")]
    Ifname,
    /// Network.
    #[value(name = "network")]
    Network,
    /// Frames received per second.
    #[value(name = "rx_pps", alias = "rx-pps")]
    RxPps,
    /// Frames sent per second.
    #[value(name = "tx_pps", alias = "tx-pps")]
    TxPps,
    /// Bits received per second.
    #[value(name = "rx_bps", alias = "rx-bps")]
    RxBps,
    /// Bits sent per second.
    #[value(name = "tx_bps", alias = "tx-bps")]
    TxBps,
    /// Frames per second not written to the port.
    #[value(name = "tx_drop", alias = "tx-drop")]
    TxDrop,
}

impl Column {
    /// Every column, in screen order.
    pub const ALL: [Column; 9] = [
        Column::Port,
        Column::Netns,
        Column::Ifname,
        Column::Network,
        Column::RxPps,
        Column::TxPps,
        Column::RxBps,
        Column::TxBps,
        Column::TxDrop,
    ];

    /// The column's heading.
    pub fn title(self) -> &'static str {
        match self {
            Column::Port => "PORT",
            Column::Netns => "NETNS",
            Column::Ifname => "IFNAME",
            Column::Network => "NETWORK",
            Column::RxPps => "RX_PPS",
            Column::TxPps => "TX_PPS",
            Column::RxBps => "RX_BPS",
            Column::TxBps => "TX_BPS",
            Column::TxDrop => "TX_DROP/s",
        }
    }

    /// Whether it holds a rate (sorted highest first) rather than a name (alphabetical).
    fn is_rate(self) -> bool {
        !matches!(
            self,
            Column::Port | Column::Netns | Column::Ifname | Column::Network
        )
    }

    /// The next column in screen order, wrapping around.
    pub fn next(self) -> Column {
        let i = Column::ALL.iter().position(|c| *c == self).unwrap_or(0);
        Column::ALL[(i + 1) % Column::ALL.len()]
    }

    /// The rate this column shows of `p` (names: none).
    fn rate(self, p: &PortRate) -> Option<f64> {
        match self {
            Column::RxPps => Some(p.rx_pps),
            Column::TxPps => Some(p.tx_pps),
            Column::RxBps => Some(p.rx_bps),
            Column::TxBps => Some(p.tx_bps),
            Column::TxDrop => Some(p.tx_drop_ps),
            Column::Port | Column::Netns | Column::Ifname | Column::Network => None,
        }
    }

    /// The cell this column shows of `p`.
    fn cell(self, p: &PortRate) -> String {
        match self {
            Column::Port => p.port.clone(),
            Column::Netns => p.netns.clone(),
            Column::Ifname => p.ifname.clone(),
            Column::Network => p.network.clone(),
            rate => human(rate.rate(p).unwrap_or_default()),
        }
    }
}

/// One port's rates over an interval: `vswitchctl --json top --once`'s stable field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortRate {
    /// Port name (`p1`, ...).
    pub port: String,
    /// `tap`, `vxlan` or `uplink`.
    pub kind: String,
    /// Namespace of the endpoint (`-` for others).
    pub netns: String,
    /// Interface name in that namespace (the uplink: its host interface).
    pub ifname: String,
    /// Network (`-` for others).
    pub network: String,
    /// Frames received from the port per second.
    pub rx_pps: f64,
    /// Frames sent to the port per second.
    pub tx_pps: f64,
    /// Bits received from the port per second (Ethernet frames).
    pub rx_bps: f64,
    /// Bits sent to the port per second.
    pub tx_bps: f64,
    /// Frames per second that could not be written to the port.
    pub tx_drop_ps: f64,
}

/// The rates between two samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Seconds between the two samples (0: one sample so far, every rate 0).
    pub interval_secs: f64,
    /// Every port of the later sample, in its order.
    pub ports: Vec<PortRate>,
    /// Each named drop counter, per second.
    pub drops: BTreeMap<String, f64>,
    /// All named drops together, per second.
    pub drops_total: f64,
}

/// `(later - earlier) / secs`; 0 when there is no earlier value, when the counter went back (a
/// port recreated, a daemon restarted) or when no time passed.
fn per_sec(earlier: Option<u64>, later: u64, secs: f64) -> f64 {
    match earlier {
        Some(e) if later >= e && secs > 0.0 => (later - e) as f64 / secs,
        _ => 0.0,
    }
}

/// Whether `a` and `b` are the same port: the name alone may be reused by a new endpoint.
fn same_port(a: &PortInfo, b: &PortInfo) -> bool {
    a.name == b.name
        && a.kind == b.kind
        && a.netns == b.netns
        && a.ifname == b.ifname
        && a.network == b.network
}

impl Rates {
    /// The rates from `earlier` to `later`, taken `elapsed` apart.
    pub fn between(earlier: &StatsInfo, later: &StatsInfo, elapsed: Duration) -> Rates {
        let secs = elapsed.as_secs_f64();
        let ports = later
            .ports
            .iter()
            .map(|p| {
                let e = earlier.ports.iter().find(|e| same_port(e, p));
                let (was, now) = (e.map(|e| &e.counters), &p.counters);
                let rate =
                    |f: fn(&switch::model::PortCounters) -> u64| per_sec(was.map(f), f(now), secs);
                PortRate {
                    port: p.name.clone(),
                    kind: p.kind.clone(),
                    netns: p.netns.clone(),
                    ifname: p.ifname.clone(),
                    network: p.network.clone(),
                    rx_pps: rate(|c| c.rx_packets),
                    tx_pps: rate(|c| c.tx_packets),
                    rx_bps: rate(|c| c.rx_bytes) * 8.0,
                    tx_bps: rate(|c| c.tx_bytes) * 8.0,
                    tx_drop_ps: rate(|c| c.tx_dropped),
                }
            })
            .collect();
        let drops: BTreeMap<String, f64> = later
            .drops
            .iter()
            .map(|(k, v)| (k.clone(), per_sec(earlier.drops.get(k).copied(), *v, secs)))
            .collect();
        Rates {
            interval_secs: secs,
            ports,
            drops_total: drops.values().sum(),
            drops,
        }
    }

    /// Every port's rates added up (the names are empty).
    pub fn totals(&self) -> PortRate {
        let mut t = PortRate {
            port: String::new(),
            kind: String::new(),
            netns: String::new(),
            ifname: String::new(),
            network: String::new(),
            rx_pps: 0.0,
            tx_pps: 0.0,
            rx_bps: 0.0,
            tx_bps: 0.0,
            tx_drop_ps: 0.0,
        };
        for p in &self.ports {
            t.rx_pps += p.rx_pps;
            t.tx_pps += p.tx_pps;
            t.rx_bps += p.rx_bps;
            t.tx_bps += p.tx_bps;
            t.tx_drop_ps += p.tx_drop_ps;
        }
        t
    }
}

/// `v` in at most four characters and a unit (powers of 1000): `0`, `0.5`, `950`, `12.3k`,
/// `123k`, `1.5M`, `2.0G`. A value that rounds to 1000 takes the next unit (`1.0k`, not `1000`).
pub fn human(v: f64) -> String {
    if !(v.is_finite() && v > 0.0) {
        return "0".into();
    }
    if v < 9.95 {
        let s = format!("{v:.1}");
        return s.strip_suffix(".0").map_or(s.clone(), str::to_string);
    }
    if v < 999.5 {
        return format!("{v:.0}");
    }
    let mut x = v / 1000.0;
    for unit in ["k", "M", "G"] {
        if x < 99.95 {
            return format!("{x:.1}{unit}");
        }
        if x < 999.5 {
            return format!("{x:.0}{unit}");
        }
        x /= 1000.0;
    }
    if x < 99.95 {
        format!("{x:.1}T")
    } else {
        format!("{x:.0}T")
    }
}

/// `p2` before `p10`: a name's letters, then its trailing number as a number.
fn natural(a: &str, b: &str) -> Ordering {
    let split = |s: &str| {
        let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (head, tail) = s.split_at(s.len() - digits);
        (head.to_string(), tail.parse::<u64>().ok())
    };
    split(a).cmp(&split(b)).then_with(|| a.cmp(b))
}

/// What a key pressed in the live view does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// Leave.
    Quit,
    /// The order changed: draw again.
    Redraw,
    /// Nothing.
    Ignore,
}

/// How the ports are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// The column sorted by.
    pub sort: Column,
    /// The column's usual order reversed (rates lowest first, names from z to a).
    pub reverse: bool,
}

impl View {
    /// Sort by `sort`, `reverse`d or not.
    pub fn new(sort: Column, reverse: bool) -> View {
        View { sort, reverse }
    }

    /// Apply key `k` (a byte read from the terminal in raw mode): `s` sorts by the next column
    /// in its usual order, `r` reverses, `q`, `Q`, Ctrl-C and Ctrl-\ quit.
    pub fn key(&mut self, k: u8) -> Key {
        match k {
            b'q' | b'Q' | 0x03 | 0x1c => Key::Quit,
            b's' | b'S' => {
                self.sort = self.sort.next();
                self.reverse = false;
                Key::Redraw
            }
            b'r' | b'R' => {
                self.reverse = !self.reverse;
                Key::Redraw
            }
            _ => Key::Ignore,
        }
    }

    /// Apply what one read from the terminal gave, key by key; a quit ends it. A read that
    /// starts with ESC is a function or arrow key's sequence (F2 is `ESC O Q`), not letters,
    /// and is ignored whole.
    pub fn keys(&mut self, read: &[u8]) -> Key {
        if read.first() == Some(&0x1b) {
            return Key::Ignore;
        }
        let mut out = Key::Ignore;
        for k in read {
            match self.key(*k) {
                Key::Quit => return Key::Quit,
                Key::Redraw => out = Key::Redraw,
                Key::Ignore => {}
            }
        }
        out
    }

    /// What the header says of the order: `RX_PPS, highest first`.
    pub fn describe(&self) -> String {
        let how = match (self.sort.is_rate(), self.reverse) {
            (true, false) => "highest first",
            (true, true) => "lowest first",
            (false, false) => "a to z",
            (false, true) => "z to a",
        };
        format!("{}, {how}", self.sort.title())
    }

    /// `ports` in this order; ties in port-name order.
    pub fn sorted<'a>(&self, ports: &'a [PortRate]) -> Vec<&'a PortRate> {
        let mut v: Vec<&PortRate> = ports.iter().collect();
        let by_column = |a: &PortRate, b: &PortRate| match self.sort {
            Column::Port => natural(&a.port, &b.port),
            Column::Netns => a.netns.cmp(&b.netns),
            Column::Ifname => a.ifname.cmp(&b.ifname),
            Column::Network => a.network.cmp(&b.network),
            // Highest first.
            rate => rate
                .rate(b)
                .unwrap_or_default()
                .total_cmp(&rate.rate(a).unwrap_or_default()),
        };
        v.sort_by(|a, b| {
            let o = by_column(a, b);
            let o = if self.reverse { o.reverse() } else { o };
            o.then_with(|| natural(&a.port, &b.port))
        });
        v
    }

    /// The port table: a heading (the sorted column marked with `*` when `mark`) and a row per
    /// port, in this order.
    pub fn table(&self, r: &Rates, mark: bool) -> String {
        let titles: Vec<String> = Column::ALL
            .iter()
            .map(|c| {
                if mark && *c == self.sort {
                    format!("{}*", c.title())
                } else {
                    c.title().to_string()
                }
            })
            .collect();
        let header: Vec<&str> = titles.iter().map(String::as_str).collect();
        let rows: Vec<Vec<String>> = self
            .sorted(&r.ports)
            .into_iter()
            .map(|p| Column::ALL.iter().map(|c| c.cell(p)).collect())
            .collect();
        crate::table::render(&header, &rows)
    }
}

/// The totals of every port: `rx 1.2k pkt/s 3.4M bit/s  tx 1.1k pkt/s 3.0M bit/s  tx drops 0/s`.
pub fn summary(r: &Rates) -> String {
    let t = r.totals();
    format!(
        "rx {} pkt/s {} bit/s  tx {} pkt/s {} bit/s  tx drops {}/s",
        human(t.rx_pps),
        human(t.rx_bps),
        human(t.tx_pps),
        human(t.tx_bps),
        human(t.tx_drop_ps),
    )
}

/// The named drops per second, their total then the busiest: `drops 13/s: no_route 12,
/// spoofed 1`, or `drops 0/s`.
pub fn drops_line(r: &Rates) -> String {
    let mut d: Vec<(&String, &f64)> = r.drops.iter().filter(|(_, v)| **v > 0.0).collect();
    let total = format!("drops {}/s", human(r.drops_total));
    if d.is_empty() {
        return total;
    }
    d.sort_by(|a, b| b.1.total_cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let named: Vec<String> = d
        .iter()
        .map(|(k, v)| format!("{k} {}", human(**v)))
        .collect();
    format!("{total}: {}", named.join(", "))
}

/// What the live view shows.
pub struct Frame<'a> {
    /// The rates to show.
    pub rates: &'a Rates,
    /// The order.
    pub view: View,
    /// The local time of the last sample (`12:34:56`).
    pub clock: &'a str,
    /// `--interval`.
    pub interval: Duration,
    /// Why the last sample failed, if it did (the rates are then the previous ones).
    pub error: Option<&'a str>,
}

impl Frame<'_> {
    /// The screen's lines, fitted to `cols` x `rows` characters: lines cut at `cols`, and when
    /// the ports do not all fit, the last line says how many more there are.
    pub fn lines(&self, cols: usize, rows: usize) -> Vec<String> {
        let state = match (self.error, self.rates.interval_secs > 0.0) {
            (Some(e), _) => format!("ERROR: {e}"),
            (None, false) => "first sample taken, rates after one interval".into(),
            (None, true) => summary(self.rates),
        };
        let mut lines = vec![
            format!(
                "vswitchctl top  {}  every {}s  {} port(s)  keys: s sort, r reverse, q quit",
                self.clock,
                self.interval.as_secs_f64(),
                self.rates.ports.len()
            ),
            state,
            drops_line(self.rates),
            format!("sort: {}", self.view.describe()),
            String::new(),
        ];
        let table = self.view.table(self.rates, true);
        let table: Vec<&str> = table.lines().collect();
        let room = rows.saturating_sub(lines.len());
        if table.len() <= room {
            lines.extend(table.iter().map(|l| l.to_string()));
        } else if room > 0 {
            lines.extend(table[..room - 1].iter().map(|l| l.to_string()));
            lines.push(format!(
                "({} more port(s) below: a taller window shows them)",
                table.len() - (room - 1)
            ));
        }
        lines.truncate(rows);
        lines
            .into_iter()
            .map(|l| l.chars().take(cols).collect())
            .collect()
    }
}

#[cfg(test)]
mod test {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use switch::model::{PortCounters, PortInfo, StatsInfo};

    use super::*;

    fn port(name: &str, netns: &str, c: [u64; 5]) -> PortInfo {
        PortInfo {
            name: name.into(),
            kind: "tap".into(),
            netns: netns.into(),
            ifname: "eth0".into(),
            network: "front".into(),
            mac: "02:42:0a:00:00:02".into(),
            ip: Ipv4Addr::new(10, 0, 0, 2),
            ip6: None,
            worker: 0,
            published: vec![],
            counters: PortCounters {
                rx_packets: c[0],
                rx_bytes: c[1],
                tx_packets: c[2],
                tx_bytes: c[3],
                tx_dropped: c[4],
            },
            state: "up".into(),
            reason: None,
        }
    }

    fn stats(ports: Vec<PortInfo>, drops: &[(&str, u64)]) -> StatsInfo {
        StatsInfo {
            ports,
            drops: drops.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            events: BTreeMap::new(),
        }
    }

    fn rate(name: &str, rx_pps: f64, tx_pps: f64) -> PortRate {
        PortRate {
            port: name.into(),
            kind: "tap".into(),
            netns: format!("ns-{name}"),
            ifname: "eth0".into(),
            network: "front".into(),
            rx_pps,
            tx_pps,
            rx_bps: rx_pps * 800.0,
            tx_bps: tx_pps * 800.0,
            tx_drop_ps: 0.0,
        }
    }

    fn names(v: &[&PortRate]) -> Vec<String> {
        v.iter().map(|p| p.port.clone()).collect()
    }

    #[test]
    fn rates_are_differences_over_the_measured_time() {
        let a = stats(
            vec![port("p1", "a", [100, 10_000, 50, 5_000, 1])],
            &[("no_route", 10), ("spoofed", 0)],
        );
        let b = stats(
            vec![port("p1", "a", [300, 30_000, 150, 15_000, 5])],
            &[("no_route", 30), ("spoofed", 4)],
        );
        let r = Rates::between(&a, &b, Duration::from_secs(2));
        assert_eq!(r.interval_secs, 2.0);
        let p = &r.ports[0];
        assert_eq!((p.rx_pps, p.tx_pps, p.tx_drop_ps), (100.0, 50.0, 2.0));
        // Bits, not bytes.
        assert_eq!((p.rx_bps, p.tx_bps), (80_000.0, 40_000.0));
        assert_eq!(r.drops["no_route"], 10.0);
        assert_eq!(r.drops["spoofed"], 2.0);
        assert_eq!(r.drops_total, 12.0);
        let t = r.totals();
        assert_eq!((t.rx_pps, t.tx_bps), (100.0, 40_000.0));
    }

    #[test]
    fn a_new_port_a_reset_counter_or_no_time_shows_zero_never_negative() {
        let a = stats(
            vec![
                port("p1", "a", [100, 10_000, 50, 5_000, 7]),
                port("p2", "b", [100, 10_000, 50, 5_000, 0]),
            ],
            &[("no_route", 10)],
        );
        let b = stats(
            vec![
                // Counters went back: the daemon restarted, or the port was recreated.
                port("p1", "a", [10, 1_000, 5, 500, 0]),
                // The same name for another endpoint: not the same port.
                port("p2", "c", [500, 50_000, 250, 25_000, 9]),
                // Appeared.
                port("p3", "d", [u64::MAX, u64::MAX, 1, 1, 1]),
            ],
            &[("no_route", 3), ("malformed", 8)],
        );
        let r = Rates::between(&a, &b, Duration::from_secs(1));
        assert_eq!(r.ports.len(), 3);
        for p in &r.ports {
            assert_eq!(
                [p.rx_pps, p.tx_pps, p.rx_bps, p.tx_bps, p.tx_drop_ps],
                [0.0; 5],
                "{p:?}"
            );
        }
        assert_eq!(r.drops_total, 0.0);
        // No time between the samples: zero, not a division by zero.
        let a = stats(vec![port("p1", "a", [0; 5])], &[]);
        let b = stats(vec![port("p1", "a", [10; 5])], &[]);
        let r = Rates::between(&a, &b, Duration::ZERO);
        assert_eq!(r.ports[0].rx_pps, 0.0);
        assert!(r.ports[0].rx_pps.is_finite());
    }

    #[test]
    fn human_units_stay_short_and_round_up_into_the_next_unit() {
        let cases = [
            (0.0, "0"),
            (-3.0, "0"),
            (f64::NAN, "0"),
            (0.5, "0.5"),
            (1.0, "1"),
            (9.94, "9.9"),
            (99.6, "100"),
            (950.0, "950"),
            (999.4, "999"),
            (999.6, "1.0k"),
            (1_000.0, "1.0k"),
            (12_345.0, "12.3k"),
            (123_456.0, "123k"),
            (1_500_000.0, "1.5M"),
            (999_999_999.0, "1.0G"),
            (2.5e9, "2.5G"),
            (4.2e12, "4.2T"),
            (5e15, "5000T"),
        ];
        for (v, want) in cases {
            assert_eq!(human(v), want, "human({v})");
        }
    }

    #[test]
    fn sorting_by_rates_is_highest_first_and_names_naturally() {
        let ports = vec![
            rate("p10", 5.0, 1.0),
            rate("p2", 50.0, 1.0),
            rate("p3", 0.0, 9.0),
            rate("uplink", 5.0, 0.0),
        ];
        let v = View::new(Column::RxPps, false);
        // Ties (p10, uplink) in port-name order.
        assert_eq!(names(&v.sorted(&ports)), ["p2", "p10", "uplink", "p3"]);
        let v = View::new(Column::RxPps, true);
        assert_eq!(names(&v.sorted(&ports)), ["p3", "p10", "uplink", "p2"]);
        let v = View::new(Column::Port, false);
        assert_eq!(names(&v.sorted(&ports)), ["p2", "p3", "p10", "uplink"]);
        let v = View::new(Column::TxPps, false);
        assert_eq!(names(&v.sorted(&ports)), ["p3", "p2", "p10", "uplink"]);
        let v = View::new(Column::Netns, true);
        assert_eq!(names(&v.sorted(&ports)), ["uplink", "p3", "p2", "p10"]);
    }

    #[test]
    fn keys_cycle_the_column_reverse_and_quit() {
        let mut v = View::new(Column::RxPps, false);
        assert_eq!(v.key(b'r'), Key::Redraw);
        assert!(v.reverse);
        assert_eq!(v.describe(), "RX_PPS, lowest first");
        assert_eq!(v.key(b's'), Key::Redraw);
        assert_eq!(v, View::new(Column::TxPps, false));
        assert_eq!(v.describe(), "TX_PPS, highest first");
        // Around every column and back.
        for _ in 0..Column::ALL.len() {
            v.key(b's');
        }
        assert_eq!(v.sort, Column::TxPps);
        v.sort = Column::TxDrop;
        v.key(b's');
        assert_eq!(v.sort, Column::Port);
        assert_eq!(v.describe(), "PORT, a to z");
        assert_eq!(v.key(b'x'), Key::Ignore);
        for q in [b'q', b'Q', 0x03, 0x1c] {
            assert_eq!(v.key(q), Key::Quit);
        }
        // Keys read together: applied in order, up to a quit.
        let mut v = View::new(Column::RxPps, false);
        assert_eq!(v.keys(b"sr"), Key::Redraw);
        assert_eq!(v, View::new(Column::TxPps, true));
        assert_eq!(v.keys(b"xq s"), Key::Quit);
        assert_eq!(v, View::new(Column::TxPps, true));
        // F2, F3, F4 and an arrow key: escape sequences, not q, r, s.
        for seq in [&b"\x1bOQ"[..], b"\x1bOR", b"\x1bOS", b"\x1b[A"] {
            assert_eq!(v.keys(seq), Key::Ignore, "{seq:?}");
        }
        assert_eq!(v, View::new(Column::TxPps, true));
        assert_eq!(v.keys(b""), Key::Ignore);
    }

    #[test]
    fn the_table_marks_the_sorted_column_and_shows_human_rates() {
        let r = Rates {
            interval_secs: 1.0,
            ports: vec![rate("p1", 0.0, 0.0), rate("p2", 1234.0, 98.0)],
            drops: BTreeMap::new(),
            drops_total: 0.0,
        };
        let t = View::new(Column::RxPps, false).table(&r, true);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "PORT",
                "NETNS",
                "IFNAME",
                "NETWORK",
                "RX_PPS*",
                "TX_PPS",
                "RX_BPS",
                "TX_BPS",
                "TX_DROP/s"
            ]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["p2", "ns-p2", "eth0", "front", "1.2k", "98", "987k", "78.4k", "0"]
        );
        assert!(lines[2].starts_with("p1 "), "{t}");
        let plain = View::new(Column::TxBps, false).table(&r, false);
        assert!(!plain.contains('*'), "{plain}");
    }

    #[test]
    fn the_screen_fits_the_window_and_says_what_is_cut() {
        let r = Rates {
            interval_secs: 1.0,
            ports: (1..=30)
                .map(|i| rate(&format!("p{i}"), i as f64, 0.0))
                .collect(),
            drops: [("no_route".to_string(), 12.0), ("spoofed".to_string(), 0.0)].into(),
            drops_total: 12.0,
        };
        let f = Frame {
            rates: &r,
            view: View::new(Column::RxPps, false),
            clock: "12:34:56",
            interval: Duration::from_secs(1),
            error: None,
        };
        let big = f.lines(200, 100);
        assert_eq!(
            big[0],
            "vswitchctl top  12:34:56  every 1s  30 port(s)  keys: s sort, r reverse, q quit"
        );
        assert_eq!(
            big[1],
            "rx 465 pkt/s 372k bit/s  tx 0 pkt/s 0 bit/s  tx drops 0/s"
        );
        assert_eq!(big[2], "drops 12/s: no_route 12");
        assert_eq!(big[3], "sort: RX_PPS, highest first");
        assert_eq!(big.len(), 5 + 1 + 30);
        assert!(big[6].starts_with("p30 "), "{}", big[6]);
        let small = f.lines(20, 10);
        assert_eq!(small.len(), 10);
        assert!(small.iter().all(|l| l.chars().count() <= 20), "{small:?}");
        // Heading, three ports, and what is missing.
        assert!(small[6].starts_with("p30 "), "{small:?}");
        assert!(small[9].starts_with("(27 more port(s)"), "{small:?}");
        // A failed sample is said in the header; before a second sample, no rates are claimed.
        let e = Frame {
            error: Some("cannot connect"),
            ..f
        };
        assert_eq!(e.lines(200, 50)[1], "ERROR: cannot connect");
        let first = Rates {
            interval_secs: 0.0,
            ..r.clone()
        };
        let f = Frame {
            rates: &first,
            error: None,
            ..f
        };
        assert!(f.lines(200, 50)[1].starts_with("first sample"));
        assert_eq!(f.lines(200, 0).len(), 0);
    }

    #[test]
    fn intervals_must_be_positive_seconds() {
        assert_eq!(parse_interval("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "nan", "inf", "1e9", "x", ""] {
            assert!(parse_interval(bad).is_err(), "{bad} accepted");
        }
    }
}
