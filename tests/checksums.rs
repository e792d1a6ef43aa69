//! Checksums on the wire (issue 13): every path that rewrites or builds packets (NAT egress,
//! published ports, hairpin, the gateway's own answers and DNS forwarding, routing between
//! linked networks, flat TSO, overlay encapsulation and decapsulation with software
//! segmentation and coalescing) carries real TCP, UDP and ICMP load while tcpdump captures on
//! the far side, and every IPv4, TCP, UDP and ICMP checksum in the capture is validated by the
//! test's own code (which also walks VXLAN payloads, UDP GSO batches of them, and the packets
//! quoted in ICMP errors) and, where the capture is a wire, by tshark as a second opinion.
//!
//! What "the wire" is, per place:
//! - The uplink veth and the underlay veths are wires. The capturing side cannot tell a
//!   checksum the kernel will never finish (CHECKSUM_PARTIAL crossing a veth) from a wrong one,
//!   so the sending interface (`up0`, `ul0`) gets transmit checksum offload turned off, as on a
//!   NIC without offloads: the kernel then segments and finishes whatever the switch handed it
//!   with a `NEEDS_CSUM` virtio-net header, using the switch's checksum start and offset, and
//!   every frame on the wire must carry complete checksums ([`Mode::Wire`]).
//! - An endpoint's TAP is not a wire: vswitchd writes frames with a virtio-net header that may
//!   say `NEEDS_CSUM`, and a capture inside the namespace sees the partial checksum (the
//!   pseudo-header sum only). There a TCP/UDP checksum must be complete or hold *exactly* the
//!   pseudo-header sum of the packet's own (translated) addresses and length ([`Mode::Tap`]);
//!   IPv4 header and ICMP checksums must always be complete. The receiving kernel's own
//!   verdict is checked too: every namespace's checksum and header error counters
//!   (`/proc/net/snmp`, `/proc/net/netstat`) must stay 0.
//!
//! Every capture has a positive control (enough packets of the kind the load makes), and every
//! TCP run has a throughput floor and a bound on retransmissions, so "ping works, TCP is slow"
//! fails.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use common::*;
use switch::model::*;

// ---------------------------------------------------------------------------------------------
// Checksum arithmetic (independent of the switch's own code on purpose).

/// Add the big-endian 16-bit words of `data` (odd length: a zero pad byte) to `acc`.
fn add_words(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

/// Fold a sum of 16/32-bit words into 16 bits of one's complement.
fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The one's-complement sum of `data` (0xffff when `data` holds a correct checksum).
fn ones_sum(data: &[u8]) -> u16 {
    fold(add_words(0, data))
}

/// The IPv4 pseudo-header sum for an L4 segment of `len` bytes.
fn pseudo(ip: &[u8], proto: u8, len: usize) -> u64 {
    add_words(0, &ip[12..20]) + u64::from(proto) + len as u64
}

/// One's-complement equality (0x0000 and 0xffff are both zero).
fn same(a: u16, b: u16) -> bool {
    a == b || (a == 0 || a == 0xffff) && (b == 0 || b == 0xffff)
}

/// The checksum a field at `at` of `data` should hold, given `extra` (a pseudo-header sum).
fn expected(extra: u64, data: &[u8], at: usize) -> u16 {
    let field = u16::from_be_bytes([data[at], data[at + 1]]);
    // Remove the field from the sum: adding its complement subtracts it.
    !fold(add_words(extra, data) + u64::from(!field))
}

// ---------------------------------------------------------------------------------------------
// Validation of a capture.

/// What a TCP/UDP checksum in a capture may hold.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// A wire: every checksum complete (a zero UDP checksum only on VXLAN's outer header).
    Wire,
    /// An endpoint's TAP (or a veth whose sender offloads): a TCP/UDP checksum may also hold
    /// exactly the pseudo-header sum, as the kernel hands over a `NEEDS_CSUM` frame. Packets
    /// inside VXLAN must still be complete.
    Tap,
}

/// Counts for one layer (outer packets, or packets inside VXLAN).
#[derive(Default, Debug)]
struct Layer {
    ipv4: u64,
    tcp: u64,
    tcp_data: u64,
    udp: u64,
    icmp: u64,
    icmp_echo: u64,
    icmp_errors: u64,
    /// TCP/UDP with a partial (pseudo-header only) checksum, accepted in [`Mode::Tap`].
    partial: u64,
    /// IPv4 packets longer than 1500 bytes (TSO/GSO/GRO super-frames).
    super_frames: u64,
    max_len: usize,
}

/// The result of validating one capture.
#[derive(Default, Debug)]
struct Tally {
    frames: u64,
    not_ipv4: u64,
    fragments: u64,
    outer: Layer,
    inner: Layer,
    vxlan: u64,
    /// VXLAN datagrams carrying more than one encapsulated frame (a UDP GSO batch).
    vxlan_batches: u64,
    /// Packets quoted in ICMP errors whose IPv4 header (and whole L4 segment, when quoted in
    /// full) were checked.
    quoted: u64,
    bad: u64,
    examples: Vec<String>,
}

impl Tally {
    fn fail(&mut self, frame: u64, what: String) {
        self.bad += 1;
        if self.examples.len() < 8 {
            self.examples.push(format!("frame {frame}: {what}"));
        }
    }

    fn summary(&self) -> String {
        let l = |x: &Layer| {
            format!(
                "{} IPv4 ({} TCP, {} with data; {} UDP; {} ICMP: {} echo, {} errors; {} partial; \
                 {} super-frames, largest {} bytes)",
                x.ipv4,
                x.tcp,
                x.tcp_data,
                x.udp,
                x.icmp,
                x.icmp_echo,
                x.icmp_errors,
                x.partial,
                x.super_frames,
                x.max_len
            )
        };
        let mut s = format!("{} frames: {}", self.frames, l(&self.outer));
        if self.vxlan > 0 {
            let _ = write!(
                s,
                "; {} VXLAN datagrams ({} GSO batches) carrying {}",
                self.vxlan,
                self.vxlan_batches,
                l(&self.inner)
            );
        }
        if self.quoted > 0 {
            let _ = write!(s, "; {} quoted packets", self.quoted);
        }
        let _ = write!(
            s,
            "; {} fragments, {} not IPv4; {} BAD",
            self.fragments, self.not_ipv4, self.bad
        );
        s
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn addr(b: &[u8], at: usize) -> String {
    format!("{}.{}.{}.{}", b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Validate the IPv4 packet at the start of `ip` (which may carry trailing padding).
/// `inner`: the packet was inside VXLAN (counted apart, always checked as on a wire).
fn check_ipv4(t: &mut Tally, n: u64, ip: &[u8], mode: Mode, inner: bool) {
    let mode = if inner { Mode::Wire } else { mode };
    let where_ = if inner { "inner " } else { "" };
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[0] & 0x0f < 5 {
        return t.fail(n, format!("{where_}IPv4 header malformed or truncated"));
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2));
    if total < ihl || total > ip.len() || ip.len() < ihl {
        return t.fail(
            n,
            format!(
                "{where_}IPv4 total length {total} does not fit the {} bytes captured",
                ip.len()
            ),
        );
    }
    let ip = &ip[..total];
    let (src, dst, proto) = (addr(ip, 12), addr(ip, 16), ip[9]);
    {
        let l = if inner { &mut t.inner } else { &mut t.outer };
        l.ipv4 += 1;
        l.max_len = l.max_len.max(total);
        if total > 1500 {
            l.super_frames += 1;
        }
    }
    if ones_sum(&ip[..ihl]) != 0xffff {
        let e = expected(0, &ip[..ihl], 10);
        t.fail(
            n,
            format!(
                "{where_}IPv4 header checksum {:#06x} of {src} > {dst} proto {proto}, should be {e:#06x}",
                be16(ip, 10)
            ),
        );
    }
    if be16(ip, 6) & 0x3fff != 0 {
        t.fragments += 1;
        return;
    }
    let l4 = &ip[ihl..];
    match proto {
        6 | 17 => {
            let (name, at, min) = if proto == 6 {
                ("TCP", 16, 20)
            } else {
                ("UDP", 6, 8)
            };
            if l4.len() < min {
                return t.fail(n, format!("{where_}{name} {src} > {dst}: header truncated"));
            }
            let (sport, dport) = (be16(l4, 0), be16(l4, 2));
            let what = format!(
                "{where_}{name} {src}:{sport} > {dst}:{dport} ({} bytes)",
                l4.len()
            );
            if proto == 6 {
                let l = if inner { &mut t.inner } else { &mut t.outer };
                l.tcp += 1;
                if l4.len() > usize::from(l4[12] >> 4) * 4 {
                    l.tcp_data += 1;
                }
            } else {
                if usize::from(be16(l4, 4)) != l4.len() {
                    t.fail(
                        n,
                        format!("{what}: UDP length {} != {}", be16(l4, 4), l4.len()),
                    );
                }
                let l = if inner { &mut t.inner } else { &mut t.outer };
                l.udp += 1;
            }
            let field = be16(l4, at);
            let ps = pseudo(ip, proto, l4.len());
            let vxlan = proto == 17 && dport == 4789 && !inner;
            if proto == 17 && field == 0 {
                if !vxlan {
                    t.fail(n, format!("{what}: no checksum (zero)"));
                }
            } else if fold(add_words(ps, l4)) == 0xffff {
                // complete
            } else if mode == Mode::Tap && same(field, fold(ps)) {
                let l = if inner { &mut t.inner } else { &mut t.outer };
                l.partial += 1;
            } else {
                let e = expected(ps, l4, at);
                t.fail(
                    n,
                    format!(
                        "{what}: checksum {field:#06x}, complete would be {e:#06x}{}",
                        if mode == Mode::Tap {
                            format!(", partial {:#06x}", fold(ps))
                        } else {
                            String::new()
                        }
                    ),
                );
            }
            if vxlan {
                check_vxlan(t, n, &l4[8..], mode);
            }
        }
        1 => {
            {
                let l = if inner { &mut t.inner } else { &mut t.outer };
                l.icmp += 1;
            }
            if l4.len() < 8 {
                return t.fail(n, format!("{where_}ICMP {src} > {dst}: truncated"));
            }
            if ones_sum(l4) != 0xffff {
                let e = expected(0, l4, 2);
                t.fail(
                    n,
                    format!(
                        "{where_}ICMP type {} {src} > {dst}: checksum {:#06x}, should be {e:#06x}",
                        l4[0],
                        be16(l4, 2)
                    ),
                );
            }
            match l4[0] {
                0 | 8 => {
                    let l = if inner { &mut t.inner } else { &mut t.outer };
                    l.icmp_echo += 1;
                }
                3 | 11 | 12 => {
                    {
                        let l = if inner { &mut t.inner } else { &mut t.outer };
                        l.icmp_errors += 1;
                    }
                    check_quoted(t, n, &l4[8..], mode);
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// The packet quoted in an ICMP error: its IPv4 header checksum, and its TCP/UDP checksum when
/// the whole segment is quoted (the switch translates both).
fn check_quoted(t: &mut Tally, n: u64, q: &[u8], mode: Mode) {
    if q.len() < 20 || q[0] >> 4 != 4 {
        return t.fail(n, "ICMP error quotes no IPv4 header".into());
    }
    let ihl = usize::from(q[0] & 0x0f) * 4;
    if q.len() < ihl + 8 {
        return t.fail(n, "ICMP error quotes less than 8 bytes of L4".into());
    }
    t.quoted += 1;
    if ones_sum(&q[..ihl]) != 0xffff {
        t.fail(
            n,
            format!(
                "quoted IPv4 header {} > {}: checksum {:#06x}, should be {:#06x}",
                addr(q, 12),
                addr(q, 16),
                be16(q, 10),
                expected(0, &q[..ihl], 10)
            ),
        );
    }
    let total = usize::from(be16(q, 2));
    let (proto, at) = match q[9] {
        6 => (6, 16),
        17 => (17, 6),
        _ => return,
    };
    if total > q.len() || total < ihl + at + 2 || be16(q, 6) & 0x3fff != 0 {
        return; // quoted in part: its L4 checksum cannot be checked
    }
    let l4 = &q[ihl..total];
    let field = be16(l4, at);
    if proto == 17 && field == 0 {
        return;
    }
    let ps = pseudo(q, proto, l4.len());
    let complete = fold(add_words(ps, l4)) == 0xffff;
    if !(complete || mode == Mode::Tap && same(field, fold(ps))) {
        t.fail(
            n,
            format!(
                "quoted {} {}:{} > {}:{}: checksum {field:#06x}, complete would be {:#06x}",
                if proto == 6 { "TCP" } else { "UDP" },
                addr(q, 12),
                be16(l4, 0),
                addr(q, 16),
                be16(l4, 2),
                expected(ps, l4, at)
            ),
        );
    }
}

/// A VXLAN payload: one encapsulated frame, or a batch of them back to back (a UDP GSO send the
/// kernel did not segment: every frame but the last the same size).
fn check_vxlan(t: &mut Tally, n: u64, mut p: &[u8], mode: Mode) {
    t.vxlan += 1;
    let mut frames = 0;
    while !p.is_empty() {
        if p.len() < 8 + 14 || p[0] & 0x08 == 0 {
            return t.fail(n, "VXLAN header or inner Ethernet header malformed".into());
        }
        frames += 1;
        let eth = &p[8..];
        if be16(eth, 12) != 0x0800 {
            // ARP and the like: the rest of this datagram.
            break;
        }
        let ip = &eth[14..];
        if ip.len() < 20 {
            return t.fail(n, "inner IPv4 truncated".into());
        }
        let total = usize::from(be16(ip, 2));
        check_ipv4(t, n, ip, mode, true);
        let used = 8 + 14 + total;
        if used > p.len() {
            break;
        }
        p = &p[used..];
    }
    if frames > 1 {
        t.vxlan_batches += 1;
    }
}

/// Validate every frame of the pcap file `file` (Ethernet link type).
fn validate(file: &Path, mode: Mode) -> Tally {
    let data = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let mut t = Tally::default();
    assert!(data.len() >= 24, "{}: no pcap header", file.display());
    let magic = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        _ if magic.swap_bytes() == 0xa1b2_c3d4 || magic.swap_bytes() == 0xa1b2_3c4d => false,
        _ => panic!("{}: not a pcap file (magic {magic:#x})", file.display()),
    };
    let u32_at = |at: usize| {
        let b = [data[at], data[at + 1], data[at + 2], data[at + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    assert_eq!(
        u32_at(20),
        1,
        "{}: link type is not Ethernet",
        file.display()
    );
    let mut at = 24;
    // A record cut short (tcpdump killed while writing) ends the file.
    while at + 16 <= data.len() {
        let (incl, orig) = (u32_at(at + 8) as usize, u32_at(at + 12) as usize);
        let Some(frame) = data.get(at + 16..at + 16 + incl) else {
            break;
        };
        at += 16 + incl;
        t.frames += 1;
        let n = t.frames;
        if incl < orig {
            t.fail(
                n,
                format!("captured {incl} of {orig} bytes (snaplen too small)"),
            );
            continue;
        }
        if frame.len() < 14 || be16(frame, 12) != 0x0800 {
            t.not_ipv4 += 1;
            continue;
        }
        check_ipv4(&mut t, n, &frame[14..], mode, false);
    }
    t
}

/// tshark's opinion of a wire capture.
#[derive(Debug, Default)]
struct Tshark {
    /// Checksums (IPv4, TCP, UDP, ICMP, inner headers of VXLAN included) tshark found good.
    good: u64,
    /// TCP/UDP checksums of 0xffff over data that sums to zero: valid (one's complement's other
    /// zero, which Linux writes when it completes a checksum in software, `CSUM_MANGLED_0`) but
    /// flagged bad by tshark ("see RFC 1624"). Our validator accepts them; they are counted.
    minus_zero: u64,
    /// Frames with any other bad checksum, as tshark prints them.
    bad: Vec<String>,
}

fn tshark_verdicts(file: &Path) -> Tshark {
    let fields = [
        "frame.number",
        "ip.checksum.status",
        "tcp.checksum.status",
        "tcp.checksum",
        "udp.checksum.status",
        "udp.checksum",
        "icmp.checksum.status",
    ];
    let mut args = vec!["tshark", "-n", "-r", file.to_str().expect("utf-8 path")];
    for o in [
        "ip.check_checksum:TRUE",
        "tcp.check_checksum:TRUE",
        "udp.check_checksum:TRUE",
    ] {
        args.extend(["-o", o]);
    }
    args.extend(["-T", "fields", "-E", "separator=/t", "-E", "aggregator=,"]);
    for f in fields {
        args.extend(["-e", f]);
    }
    let out = run_ok(&args);
    // Status values: 0 bad, 1 good, 2 not checked (a zero UDP checksum, say). A field that
    // occurs more than once in a frame (VXLAN, ICMP errors) lists its values with commas.
    let mut t = Tshark::default();
    for line in out.lines() {
        let col: Vec<Vec<&str>> = line
            .split('\t')
            .map(|f| f.split(',').map(str::trim).collect())
            .collect();
        let get = |i: usize| col.get(i).cloned().unwrap_or_default();
        let mut bad = false;
        for st in get(1).iter().chain(&get(6)) {
            match *st {
                "1" => t.good += 1,
                "0" => bad = true,
                _ => {}
            }
        }
        for (status, value) in [(2, 3), (4, 5)] {
            let values = get(value);
            for (k, st) in get(status).iter().enumerate() {
                match *st {
                    "1" => t.good += 1,
                    "0" if values.get(k) == Some(&"0xffff") => t.minus_zero += 1,
                    "0" => bad = true,
                    _ => {}
                }
            }
        }
        if bad && t.bad.len() < 8 {
            t.bad.push(line.to_string());
        } else if bad {
            t.bad.push(String::new());
        }
    }
    t
}

// ---------------------------------------------------------------------------------------------
// Captures.

/// A tcpdump capture running in a namespace, written to a file of the test's daemon directory.
struct Capture {
    label: String,
    file: PathBuf,
    mode: Mode,
    proc: Option<KillOnDrop>,
}

/// Where a test's captures go: its daemon's directory, removed with it.
struct Captures(PathBuf);

impl Captures {
    /// Capture up to `count` whole frames matching `filter` that `ifname` in `ns` receives
    /// (tcpdump `-Q in`, no snaplen: a TCP/UDP checksum covers the whole payload).
    fn rx(
        &self,
        label: &str,
        ns: &Netns,
        ifname: &str,
        filter: &str,
        count: usize,
        mode: Mode,
    ) -> Capture {
        let name = label.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let file = self.0.join(format!("{name}.pcap"));
        let _ = std::fs::remove_file(&file);
        let count = count.to_string();
        let path = file.to_str().expect("utf-8 path");
        // Immediate mode: the last frames must not wait in the kernel's ring for a block
        // timeout that outlives the capture.
        let mut args: Vec<&str> = "-Q in -n -s 0 -B 16384 -U --immediate-mode"
            .split(' ')
            .collect();
        args.extend(["-i", ifname, "-c", &count, "-w", path, filter]);
        let proc = tcpdump_bg(Some(ns), &args);
        Capture {
            label: label.to_string(),
            file,
            mode,
            proc: Some(proc),
        }
    }
}

impl Capture {
    /// Stop the capture and validate it: no bad checksum (tshark agreeing on wire captures);
    /// returns the counts for the caller's positive controls. The file is removed.
    fn finish(mut self) -> Tally {
        // SIGINT: tcpdump writes out what it holds and exits (it may have stopped at its count).
        if let Some(p) = self.proc.take() {
            p.interrupt();
        }
        let t = validate(&self.file, self.mode);
        eprintln!("[{}] {:?} capture: {}", self.label, self.mode, t.summary());
        let tshark = (self.mode == Mode::Wire).then(|| tshark_verdicts(&self.file));
        let _ = std::fs::remove_file(&self.file);
        assert!(
            t.bad == 0,
            "[{}] {} bad checksum(s) in the capture ({:?}): {}\n{}",
            self.label,
            t.bad,
            self.mode,
            t.summary(),
            t.examples.join("\n")
        );
        if let Some(ts) = tshark {
            eprintln!(
                "[{}] tshark: {} checksums good, {} bad, {} of 0xffff (valid)",
                self.label,
                ts.good,
                ts.bad.len(),
                ts.minus_zero
            );
            assert!(
                ts.bad.is_empty(),
                "[{}] tshark finds {} frame(s) with a bad checksum that our validator accepted \
                 (frame; IPv4, TCP status; TCP checksum; UDP status; UDP checksum; ICMP status):\n{}",
                self.label,
                ts.bad.len(),
                ts.bad.join("\n")
            );
            assert!(
                ts.good + ts.minus_zero >= t.outer.ipv4,
                "[{}] tshark verified only {} checksums for {} IPv4 packets",
                self.label,
                ts.good,
                t.outer.ipv4
            );
        }
        t
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        drop(self.proc.take());
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Require `got >= min` of a capture's packets of some kind (the positive control).
fn at_least(label: &str, what: &str, got: u64, min: u64) {
    assert!(
        got >= min,
        "[{label}] the capture saw only {got} {what} (at least {min} expected): the load did not \
         cross the path, so the check proves nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// Offloads and counters.

/// Turn transmit checksum offload of `ifname` in `ns` on or off (`ETHTOOL_STXCSUM`; without it
/// the kernel also drops TSO and every GSO feature that needs it, so it segments and checksums
/// in software before the frame leaves: what a NIC without offloads puts on a wire).
fn tx_csum(ns: &Netns, ifname: &str, on: bool) {
    let script = format!(
        r#"
import ctypes, fcntl, socket, struct
def ethtool(cmd, value=0):
    buf = ctypes.create_string_buffer(struct.pack("II", cmd, value), 8)
    ifr = struct.pack("16sQ16x", b"{ifname}", ctypes.addressof(buf))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, 0x8946, ifr)
    return struct.unpack("II", buf.raw[:8])[1]
ethtool(0x17, {v})
print(ethtool(0x16), ethtool(0x1e))
"#,
        v = u8::from(on)
    );
    let out = ns.exec_ok(&["python3", "-c", &script]);
    let want = if on { "1" } else { "0 0" };
    assert!(
        out.trim().starts_with(want),
        "{ifname} in {}: tx checksum offload, TSO are {out} (wanted tx checksum {on})",
        ns.name
    );
}

/// Every counter of `ns`'s stack in `/proc/net/snmp` and `/proc/net/netstat`, named by its
/// group and its name (`TcpOutRsts`, `IpExtInCsumErrors`, ...).
fn stack_counters(ns: &Netns) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for f in ["/proc/net/snmp", "/proc/net/netstat"] {
        let text = ns.exec_ok(&["cat", f]);
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [h, v] = pair else { continue };
            let (Some((p, names)), Some((_, vals))) = (h.split_once(':'), v.split_once(':')) else {
                continue;
            };
            for (k, v) in names.split_whitespace().zip(vals.split_whitespace()) {
                all.insert(
                    format!("{p}{k}"),
                    v.parse::<i64>().unwrap_or(0).max(0) as u64,
                );
            }
        }
    }
    all
}

/// One counter of `ns`'s stack (`Tcp` `OutRsts`, say).
fn counter(ns: &Netns, group: &str, name: &str) -> u64 {
    stack_counters(ns)
        .get(&format!("{group}{name}"))
        .copied()
        .unwrap_or_else(|| panic!("no {group} {name} in {}'s /proc/net/snmp", ns.name))
}

/// The counters of `ns`'s stack that count packets refused for a bad checksum or header.
fn error_counters(ns: &Netns) -> BTreeMap<String, u64> {
    let all = stack_counters(ns);
    let keys = [
        "IpInHdrErrors",
        "IpExtInCsumErrors",
        "IcmpInCsumErrors",
        "TcpInCsumErrors",
        "UdpInCsumErrors",
    ];
    keys.iter()
        .map(|k| (k.to_string(), known(&all, k)))
        .chain(
            [
                "IcmpInErrors",
                "TcpInErrs",
                "UdpInErrors",
                "UdpRcvbufErrors",
            ]
            .iter()
            .map(|k| (format!("({k})"), known(&all, k))),
        )
        .collect()
}

/// Counter `k` of a namespace's stack: one the kernel does not report fails the test (read as
/// 0 it would pass "no errors").
fn known(all: &BTreeMap<String, u64>, k: &str) -> u64 {
    *all.get(k)
        .unwrap_or_else(|| panic!("the kernel reports no {k}: {all:?}"))
}

/// Every namespace's kernel accepted everything it received: its checksum and header error
/// counters are 0 (the broader error counters, in parentheses, also count overflows and the
/// like: reported only).
fn kernels_accepted_everything(label: &str, nss: &[(&str, &Netns)]) {
    let mut bad = Vec::new();
    for (name, ns) in nss {
        let c = error_counters(ns);
        eprintln!("[{label}] {name} kernel counters: {c:?}");
        for (k, v) in &c {
            if *v != 0 && !k.starts_with('(') {
                bad.push(format!("{name}: {k} = {v}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "[{label}] receiving kernels refused packets: {}",
        bad.join(", ")
    );
}

// ---------------------------------------------------------------------------------------------
// Load.

/// Slowest acceptable TCP stream, in Mbit/s: far below what any path does even on a loaded
/// 2-core machine (hundreds to thousands), far above what TCP does when a share of the
/// segments is dropped for a bad checksum.
const MIN_TCP_MBPS: f64 = 50.0;
/// Most retransmitted segments, as a share of the segments sent, on paths with no socket buffer
/// of the switch in the way (TAP to TAP, TAP to the uplink): healthy runs retransmit 0-0.5%.
const LOSSLESS: f64 = 0.10;
/// The same where the switch receives through a socket whose buffer overflows under load (the
/// uplink's packet sockets, the VTEP's UDP socket: the drops show as packet-socket drops and
/// `UdpRcvbufErrors`, not as checksum errors): healthy runs retransmit 2-20% on a loaded 2-core
/// VM. A checksum bug that makes TCP crawl retransmits most of what it sends, and falls below
/// [`MIN_TCP_MBPS`] too.
const BUFFERED: f64 = 0.40;

/// What one iperf3 run reported. Checked by [`Run::check`] after the captures are validated, so
/// a bad checksum is reported as such before the slowness or failure it causes.
struct Run {
    label: String,
    tcp: bool,
    /// Pings of the same load that went unanswered (see [`pings_then_tcp`]).
    lost: Option<String>,
    error: Option<String>,
    mbps: f64,
    retrans: u64,
    segs: u64,
}

impl Run {
    /// Every ping of the load answered; TCP: the throughput floor and the retransmission bound
    /// (`max_share` of the segments sent); UDP: that it ran.
    fn check(&self, max_share: f64) {
        let label = &self.label;
        if let Some(lost) = &self.lost {
            panic!("[{label}] {lost}");
        }
        if let Some(e) = &self.error {
            panic!("[{label}] iperf3 failed: {e}");
        }
        if !self.tcp {
            return;
        }
        let (mbps, retrans, segs) = (self.mbps, self.retrans, self.segs);
        let share = retrans as f64 / segs.max(1) as f64;
        assert!(
            mbps >= MIN_TCP_MBPS,
            "[{label}] TCP moved only {mbps:.1} Mbit/s (floor {MIN_TCP_MBPS}): ping may work but \
             TCP is slow ({retrans} retransmits)"
        );
        assert!(
            share <= max_share,
            "[{label}] TCP retransmitted {retrans} of ~{segs} segments ({:.1}%, bound {:.0}%)",
            share * 100.0,
            max_share * 100.0
        );
    }
}

/// Run iperf3 from `client` to `target` (`ADDR` or `ADDR:PORT`; served by `server` listening on
/// `bind`, port 5201): TCP for 2 s
/// (`reverse`: the server sends, `-R`), or UDP for 1 s at 200 Mbit/s offered in 1200-byte
/// datagrams (no fragments on any path). Reports throughput and retransmissions (TCP) or loss
/// (UDP); [`Run::check`] judges them.
fn iperf3(
    label: &str,
    udp: bool,
    client: &Netns,
    server: &Netns,
    bind: &str,
    target: &str,
    reverse: bool,
) -> Run {
    let srv = server.spawn(&["iperf3", "-s", "-1", "-B", bind]);
    wait_listening(server, "tcp", 5201);
    let (addr, port) = target.split_once(':').unwrap_or((target, "5201"));
    let mut args = vec![
        "iperf3",
        "-c",
        addr,
        "-p",
        port,
        "-J",
        "--connect-timeout",
        "5000",
    ];
    if udp {
        args.extend(["-u", "-b", "200M", "-l", "1200", "-t", "1"]);
    } else {
        args.extend(["-t", "2"]);
    }
    if reverse {
        args.push("-R");
    }
    let o = client.exec(&args);
    drop(srv);
    let mut run = Run {
        label: label.to_string(),
        tcp: !udp,
        lost: None,
        error: None,
        mbps: 0.0,
        retrans: 0,
        segs: 0,
    };
    let out = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = match serde_json::from_str(&out) {
        Ok(v) => v,
        Err(e) => {
            run.error = Some(format!("no JSON ({e}): {out}"));
            return run;
        }
    };
    if let Some(err) = v.get("error") {
        eprintln!("[{label}] iperf3 failed: {err}");
        run.error = Some(err.to_string());
        return run;
    }
    let e = &v["end"];
    if udp {
        let s = &e["sum"];
        eprintln!(
            "[{label}] iperf3 UDP: {} datagrams, {} lost ({:.1}%)",
            s["packets"],
            s["lost_packets"],
            s["lost_percent"].as_f64().unwrap_or(100.0)
        );
        return run;
    }
    run.mbps = e["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6;
    let field = |k: &str| {
        e["sum_sent"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("[{label}] iperf3 reported no sum_sent.{k}: {e}"))
    };
    let sent = field("bytes");
    run.retrans = field("retransmits");
    let mss = v["start"]["tcp_mss_default"]
        .as_u64()
        .unwrap_or(1448)
        .max(1);
    run.segs = sent.div_ceil(mss).max(1);
    eprintln!(
        "[{label}] iperf3 TCP: {:.0} Mbit/s, {sent} bytes in ~{} segments of {mss}, {} \
         retransmitted ({:.2}%)",
        run.mbps,
        run.segs,
        run.retrans,
        run.retrans as f64 / run.segs as f64 * 100.0
    );
    run
}

/// UDP datagrams of several sizes (odd lengths included) to closed ports of `dst`: each draws an
/// ICMP port unreachable quoting it in full.
fn udp_to_closed_ports(from: &Netns, dst: &str) {
    let script = format!(
        r#"
import socket, time
for i, size in enumerate([1, 2, 33, 100, 255, 480]):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(bytes(j % 256 for j in range(size)), ("{dst}", 9 + i))
    time.sleep(0.02)
"#
    );
    from.exec_ok(&["python3", "-c", &script]);
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// iperf3 listens on 5201; the published port is 5202 (published ports translate ports too).
const TCP: &str = "tcp portrange 5201-5202";
const UDP: &str = "udp portrange 5201-5202";
/// Captures at an endpoint receiving [`pings_then_tcp`].
const TCP_ICMP: &str = "tcp portrange 5201-5202 or icmp";
const PUBLISHED: &str = "10.210.0.1:5202";

/// `count` pings of `size` bytes from `from` to `to`, 10 ms apart: `None` when every reply came.
fn pings(from: &Netns, to: &str, count: u32, size: &str) -> Option<String> {
    let got = from.pings_with(to, count, &["-i", "0.01", "-s", size]);
    (got != count).then(|| format!("ping {to} from {}: {got} of {count} replies", from.name))
}

/// 20 pings of `size` bytes from `client` to `addr`, then a TCP [`iperf3`] run to a server in
/// `server` bound to `addr`: the routed and overlay loads. [`Run::check`] judges the pings too.
fn pings_then_tcp(label: &str, client: &Netns, server: &Netns, addr: &str, size: &str) -> Run {
    let lost = pings(client, addr, 20, size);
    let mut run = iperf3(label, false, client, server, addr, addr, false);
    run.lost = lost;
    run
}

#[test]
fn nat_publish_hairpin_dns_routing_and_flat_tso_keep_every_checksum_valid() {
    use Mode::*;
    require(&[
        "tcpdump", "tshark", "iperf3", "ping", "dig", "python3", "ss",
    ]);
    let l = Lab::new(&[]);
    let cap = Captures(l.d.dir.clone());
    let (a, b, c) = (Netns::new("a"), Netns::new("b"), Netns::new("c"));
    l.d.ctl_ok(&["network", "create", "front", "--subnet", "10.220.0.0/24"]);
    l.d.ctl_ok(&["network", "create", "back", "--subnet", "10.221.0.0/24"]);
    l.d.ctl_ok(&["network", "link", "front", "back"]);
    let ea: EndpointInfo = l.d.ctl_json(&["attach", &a.name, "front"]);
    let eb: EndpointInfo = l.d.ctl_json(&["attach", &b.name, "front"]);
    l.d.ctl_json::<EndpointInfo>(&["attach", &c.name, "back"]);
    let (aip, bip) = (ea.ip.to_string(), eb.ip.to_string());
    l.d.ctl_ok(&["publish", &a.name, "5202:5201"]);
    l.d.ctl_ok(&["publish", &a.name, "5202:5201/udp"]);
    // The uplink is a wire: what the switch sends there is finished by the kernel as by a NIC
    // without offloads. The outside sends complete checksums too (until the published TCP run
    // below): the switch's translation of complete checksums is what reaches a.
    tx_csum(&l.host, "up0", false);
    tx_csum(&l.out, "eth0", false);
    let _upstream = upstream_dns(&l.out, &[("outside.test", "10.210.0.99")]);
    // Warm-up (ARP on both sides); what fails is reported by the checks below.
    a.pings(OUTSIDE, 1);

    // --- ICMP and DNS: egress echo (identifier translated), the gateway's and the uplink's own
    // echo replies, ICMP errors translated back with the packet they quote (odd lengths
    // included), DNS answered by the gateway (UDP and TCP, built by the switch) and forwarded
    // through the uplink. Bad checksums are reported first, then what they broke.
    let label = "icmp+dns";
    let at_out = cap.rx(
        "icmp+dns outside",
        &l.out,
        "eth0",
        "icmp or udp port 53",
        3000,
        Wire,
    );
    let at_a = cap.rx("icmp+dns a", &a, "eth0", "icmp or port 53", 3000, Wire);
    let mut problems: Vec<String> = [
        pings(&a, OUTSIDE, 40, "1200"),
        pings(&a, OUTSIDE, 20, "57"),
        pings(&a, "10.220.0.1", 20, "1001"),
        pings(&l.out, UPLINK, 20, "333"),
    ]
    .into_iter()
    .flatten()
    .collect();
    udp_to_closed_ports(&a, OUTSIDE);
    let mut q = vec!["dig", "@10.220.0.1", "+time=2", "+tries=1", "+short"];
    q.extend(vec!["outside.test"; 20]);
    q.extend(vec![b.name.as_str(); 10]);
    let answers = String::from_utf8_lossy(&a.exec(&q).stdout).into_owned();
    let forwarded = answers.lines().filter(|l| *l == "10.210.0.99").count();
    let local = answers.lines().filter(|l| *l == bip).count();
    if (forwarded, local) != (20, 10) {
        problems.push(format!(
            "DNS over UDP: {forwarded} of 20 forwarded answers, {local} of 10 gateway answers"
        ));
    }
    for _ in 0..3 {
        let o = a.exec(&[
            "dig",
            "@10.220.0.1",
            "+tcp",
            "+time=2",
            "+tries=1",
            "+short",
            &b.name,
        ]);
        let got = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if got != bip {
            problems.push(format!("DNS over TCP answered {got:?}"));
        }
    }
    let (o, t) = (at_out.finish(), at_a.finish());
    assert!(problems.is_empty(), "[{label}] {}", problems.join("; "));
    at_least(
        label,
        "echo requests and replies at the outside",
        o.outer.icmp_echo,
        80,
    );
    at_least(
        label,
        "forwarded DNS queries at the outside",
        o.outer.udp,
        20,
    );
    at_least(label, "echo replies at a", t.outer.icmp_echo, 80);
    at_least(label, "ICMP errors at a", t.outer.icmp_errors, 3);
    at_least(label, "packets quoted in ICMP errors at a", t.quoted, 3);
    at_least(label, "DNS answers over UDP at a", t.outer.udp, 30);
    at_least(label, "DNS answers over TCP at a", t.outer.tcp, 6);

    // --- NAT egress, TCP both ways and UDP: the outside's capture is the wire.
    let label = "egress tcp";
    let at_out = cap.rx("egress tcp outside", &l.out, "eth0", TCP, 3000, Wire);
    let at_a = cap.rx("egress tcp a", &a, "eth0", TCP, 3000, Wire);
    let run = iperf3(label, false, &a, &l.out, OUTSIDE, OUTSIDE, false);
    let (o, t) = (at_out.finish(), at_a.finish());
    run.check(LOSSLESS);
    at_least(
        label,
        "TCP data segments on the wire",
        o.outer.tcp_data,
        2000,
    );
    at_least(label, "ACKs at a", t.outer.tcp, 500);

    let label = "egress tcp reverse";
    let at_out = cap.rx(
        "egress tcp reverse outside",
        &l.out,
        "eth0",
        TCP,
        3000,
        Wire,
    );
    let at_a = cap.rx("egress tcp reverse a", &a, "eth0", TCP, 3000, Wire);
    let run = iperf3(label, false, &a, &l.out, OUTSIDE, OUTSIDE, true);
    let (o, t) = (at_out.finish(), at_a.finish());
    run.check(BUFFERED);
    at_least(label, "ACKs on the wire", o.outer.tcp, 500);
    at_least(label, "TCP data segments at a", t.outer.tcp_data, 2000);

    let label = "egress udp";
    let at_out = cap.rx("egress udp outside", &l.out, "eth0", UDP, 3000, Wire);
    let run = iperf3(label, true, &a, &l.out, OUTSIDE, OUTSIDE, false);
    let o = at_out.finish();
    run.check(LOSSLESS);
    at_least(label, "UDP datagrams on the wire", o.outer.udp, 2000);

    // --- Published port: UDP with complete checksums from the outside, then TCP with the
    // outside's offloads on (GSO super-frames with partial checksums in through AF_PACKET).
    let label = "published udp";
    let at_a = cap.rx("published udp a", &a, "eth0", UDP, 3000, Wire);
    let run = iperf3(label, true, &l.out, &a, &aip, PUBLISHED, false);
    let t = at_a.finish();
    run.check(LOSSLESS);
    at_least(label, "UDP datagrams at a", t.outer.udp, 2000);

    tx_csum(&l.out, "eth0", true);
    let label = "published tcp";
    let at_out = cap.rx("published tcp outside", &l.out, "eth0", TCP, 3000, Wire);
    let at_a = cap.rx("published tcp a", &a, "eth0", TCP, 1000, Tap);
    let run = iperf3(label, false, &l.out, &a, &aip, PUBLISHED, false);
    let (o, t) = (at_out.finish(), at_a.finish());
    run.check(BUFFERED);
    at_least(label, "ACKs on the wire", o.outer.tcp, 500);
    at_least(label, "TCP data segments at a", t.outer.tcp_data, 500);
    at_least(label, "super-frames at a", t.outer.super_frames, 100);

    // --- Hairpin: b -> uplink address:5202 -> a:5201, both addresses and a port translated.
    let label = "hairpin tcp";
    let at_a = cap.rx("hairpin tcp a", &a, "eth0", TCP, 1000, Tap);
    let at_b = cap.rx("hairpin tcp b", &b, "eth0", TCP, 3000, Tap);
    let run = iperf3(label, false, &b, &a, &aip, PUBLISHED, false);
    let (t, tb) = (at_a.finish(), at_b.finish());
    run.check(LOSSLESS);
    at_least(label, "TCP data segments at a", t.outer.tcp_data, 500);
    at_least(label, "ACKs at b", tb.outer.tcp, 300);

    let label = "hairpin udp";
    let at_a = cap.rx("hairpin udp a", &a, "eth0", UDP, 3000, Tap);
    let run = iperf3(label, true, &b, &a, &aip, PUBLISHED, false);
    let t = at_a.finish();
    run.check(LOSSLESS);
    at_least(label, "UDP datagrams at a", t.outer.udp, 2000);

    // --- Routing between linked networks (TTL and header checksum on every packet).
    let label = "routed tcp";
    let at_a = cap.rx("routed tcp a", &a, "eth0", TCP_ICMP, 1000, Tap);
    let run = pings_then_tcp(label, &c, &a, &aip, "1000");
    let t = at_a.finish();
    run.check(LOSSLESS);
    at_least(label, "echo requests at a", t.outer.icmp_echo, 20);
    at_least(label, "TCP data segments at a", t.outer.tcp_data, 500);

    let label = "routed udp";
    let at_a = cap.rx("routed udp a", &a, "eth0", UDP, 3000, Tap);
    let run = iperf3(label, true, &c, &a, &aip, &aip, false);
    let t = at_a.finish();
    run.check(LOSSLESS);
    at_least(label, "UDP datagrams at a", t.outer.udp, 2000);

    // --- Flat: a -> b on one network, TSO super-frames through the switch whole.
    let label = "flat tso";
    let at_b = cap.rx("flat tso b", &b, "eth0", TCP, 1000, Tap);
    let run = iperf3(label, false, &a, &b, &bip, &bip, false);
    let t = at_b.finish();
    run.check(LOSSLESS);
    at_least(label, "TCP data segments at b", t.outer.tcp_data, 500);
    at_least(label, "super-frames at b", t.outer.super_frames, 100);

    let nss = [
        ("host", &l.host),
        ("outside", &l.out),
        ("a", &a),
        ("b", &b),
        ("c", &c),
    ];
    kernels_accepted_everything("lab", &nss);
    let s: StatsInfo = l.d.ctl_json(&["stats"]);
    assert!(s.events["dns_forwarded"] >= 20, "{:?}", s.events);
}

#[test]
fn overlay_encap_decap_segmentation_and_coalescing_keep_every_checksum_valid() {
    use Mode::*;
    require(&["tcpdump", "tshark", "iperf3", "ping", "python3", "ss"]);
    let u = Underlay::new(2);
    let d1 = Daemon::start_in(&u.hosts[0], &[]);
    let d2 = Daemon::start_in(&u.hosts[1], &[]);
    let cap = Captures(d1.dir.clone());
    overlay_pair(&d1, &d2, "10.250.0.0/24", "42");
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let (aip, bip) = ("10.250.0.11", "10.250.0.12");
    d1.ctl_ok(&["attach", &a.name, "ov", "--ip", aip]);
    d2.ctl_ok(&["attach", &b.name, "ov", "--ip", bip]);
    // Warm-up (ARP and learning across the hosts); what fails is reported by the checks below.
    wait_until(10, || a.ping(bip, 1));
    let vx = "udp port 4789";

    // --- Offloads on (the default): host 1's GSO sends cross the underlay unsegmented, as UDP
    // batches of VXLAN frames whose outer checksum is partial (the kernel's), which host 2's
    // GRO socket takes whole. The inner frames, cut by the switch, must be complete; host 2
    // coalesces them back into super-frames for b.
    let label = "overlay gso";
    let wire = cap.rx("overlay gso underlay", &u.bridge, "p1", vx, 2000, Tap);
    let at_b = cap.rx("overlay gso b", &b, "eth0", TCP_ICMP, 1000, Tap);
    let run = pings_then_tcp(label, &a, &b, bip, "1000");
    let (w, t) = (wire.finish(), at_b.finish());
    run.check(BUFFERED);
    at_least(label, "inner TCP data segments", w.inner.tcp_data, 2000);
    at_least(label, "GSO batches of VXLAN frames", w.vxlan_batches, 50);
    at_least(label, "inner echo requests", w.inner.icmp_echo, 20);
    assert_eq!(
        w.inner.super_frames, 0,
        "[{label}] super-frames inside VXLAN: the switch must cut them to the overlay MTU"
    );
    at_least(label, "TCP data segments at b", t.outer.tcp_data, 500);
    at_least(
        label,
        "coalesced super-frames at b",
        t.outer.super_frames,
        100,
    );
    at_least(label, "echo requests at b", t.outer.icmp_echo, 20);

    // --- Offloads off on both underlay interfaces: the underlay is a wire, every datagram
    // complete, outer and inner (tshark decodes the VXLAN and checks both).
    tx_csum(&u.hosts[0], "ul0", false);
    tx_csum(&u.hosts[1], "ul0", false);
    let label = "overlay wire tcp";
    let wire = cap.rx("overlay wire tcp underlay", &u.bridge, "p2", vx, 3000, Wire);
    let at_a = cap.rx("overlay wire tcp a", &a, "eth0", TCP_ICMP, 1000, Tap);
    let run = pings_then_tcp(label, &b, &a, aip, "1400");
    let (w, t) = (wire.finish(), at_a.finish());
    run.check(BUFFERED);
    at_least(label, "inner TCP data segments", w.inner.tcp_data, 2000);
    at_least(label, "inner echo requests", w.inner.icmp_echo, 20);
    at_least(label, "TCP data segments at a", t.outer.tcp_data, 500);
    at_least(
        label,
        "coalesced super-frames at a",
        t.outer.super_frames,
        50,
    );

    let label = "overlay wire udp";
    let wire = cap.rx("overlay wire udp underlay", &u.bridge, "p1", vx, 3000, Wire);
    let at_b = cap.rx("overlay wire udp b", &b, "eth0", UDP, 3000, Tap);
    let run = iperf3(label, true, &a, &b, bip, bip, false);
    let (w, t) = (wire.finish(), at_b.finish());
    run.check(LOSSLESS);
    at_least(label, "inner UDP datagrams", w.inner.udp, 2000);
    at_least(label, "UDP datagrams at b", t.outer.udp, 1500);

    let nss = [
        ("host 1", &u.hosts[0]),
        ("host 2", &u.hosts[1]),
        ("a", &a),
        ("b", &b),
    ];
    kernels_accepted_everything("overlay", &nss);
}

/// Sends bursts of VXLAN-encapsulated TCP segments of one flow (contiguous sequence numbers,
/// 1000 bytes each, plain ACKs to a closed port) from this host's underlay address to a VTEP:
/// `argv`: VTEP address, VNI, inner destination MAC and IP, source port, "good" or "bad" TCP
/// checksums, bursts.
const SEGMENTS: &str = r#"
import socket, struct, sys, time
vtep, vni, dmac, dip, sport, kind, bursts = sys.argv[1:8]
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
src, dst = socket.inet_aton("10.250.0.99"), socket.inet_aton(dip)
def seg(seq):
    payload = bytes((seq + i) % 251 for i in range(1000))
    tcp = struct.pack("!HHIIBBHHH", int(sport), 9, seq, 1, 5 << 4, 0x10, 65535, 0, 0) + payload
    c = csum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    if kind == "bad":
        c ^= 0x0101
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 7, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    eth = bytes.fromhex(dmac.replace(":", "")) + bytes.fromhex("020000000099") + b"\x08\x00"
    return b"\x08\x00\x00\x00" + struct.pack("!I", int(vni) << 8) + eth + ip + tcp
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
seq = 1000
for b in range(int(bursts)):
    frames = []
    for i in range(48):
        frames.append(seg(seq))
        seq += 1000
    for f in frames:
        s.sendto(f, (vtep, 4789))
    time.sleep(0.05)
"#;

#[test]
fn coalescing_never_turns_a_bad_inner_checksum_into_a_good_one() {
    require(&["tcpdump", "python3"]);
    // Host 1 runs vswitchd; host 2 is a peer VTEP that sends hand-made VXLAN.
    let u = Underlay::new(2);
    let d1 = Daemon::start_in(&u.hosts[0], &[]);
    let cap = Captures(d1.dir.clone());
    overlay_network(&d1, "ov", "10.250.0.0/24", "42", &[&Underlay::ip(2)], &[]);
    let a = Netns::new("a");
    let ea: EndpointInfo = d1.ctl_json(&["attach", &a.name, "ov", "--ip", "10.250.0.11"]);
    let send = |sport: &str, kind: &str| {
        u.hosts[1].exec_ok(&[
            "python3",
            "-c",
            SEGMENTS,
            &Underlay::ip(1),
            "42",
            &ea.mac.to_string(),
            "10.250.0.11",
            sport,
            kind,
            "3",
        ]);
    };
    // Positive control: good segments reach a's TCP (which answers them with resets, nothing
    // listens), coalesced into super-frames on the way (the path under test).
    let label = "coalesce good";
    let at_a = cap.rx("coalesce good a", &a, "eth0", "tcp port 9", 1000, Mode::Tap);
    let rsts = counter(&a, "Tcp", "OutRsts");
    send("40000", "good");
    let reached = wait_until(5, || counter(&a, "Tcp", "OutRsts") > rsts);
    let t = at_a.finish();
    assert!(
        reached,
        "[{label}] hand-made VXLAN segments never reached a's TCP"
    );
    at_least(
        label,
        "coalesced super-frames at a",
        t.outer.super_frames,
        1,
    );

    // The same bursts with wrong TCP checksums: a's kernel must refuse every one (the switch
    // may drop them itself, or deliver them as they are for the kernel to count). A coalesced
    // frame handed over with a partial checksum (NEEDS_CSUM) is taken unverified: laundered.
    let label = "coalesce bad";
    let all_drops = |d: &Daemon| stats(d).drops.values().sum::<u64>();
    let before_malformed = stats(&d1).drops["malformed"];
    let (rsts, errs, dropped) = (
        counter(&a, "Tcp", "OutRsts"),
        counter(&a, "Tcp", "InCsumErrors"),
        all_drops(&d1),
    );
    send("40001", "bad");
    // Every bad segment accounted for: refused by a's kernel or dropped by the switch (only
    // the switch's checksum-related counter), or accepted (a reset).
    let accounted = wait_until(10, || {
        counter(&a, "Tcp", "InCsumErrors") - errs + counter(&a, "Tcp", "OutRsts") - rsts
            + stats(&d1).drops["malformed"]
            >= 144 + before_malformed
    });
    let (rsts, errs, dropped) = (
        counter(&a, "Tcp", "OutRsts") - rsts,
        counter(&a, "Tcp", "InCsumErrors") - errs,
        all_drops(&d1) - dropped,
    );
    eprintln!(
        "[{label}] 144 segments with bad TCP checksums: a reset {rsts} (accepted), counted \
         {errs} checksum errors; the switch dropped {dropped}"
    );
    assert_eq!(
        rsts, 0,
        "[{label}] a's kernel accepted segments whose TCP checksum was wrong (it answered {rsts} \
         with a reset): coalescing on the VTEP replaced their checksums with a partial one \
         (NEEDS_CSUM) without verifying them"
    );
    assert!(
        accounted && errs + dropped > 0,
        "[{label}] of 144 bad segments, {errs} were refused by a, {dropped} dropped by the \
         switch, {rsts} accepted: the rest went nowhere"
    );
}

// ---------------------------------------------------------------------------------------------
// The validator itself: it must tell good from bad, or every test above proves nothing.

/// An IPv4 packet (header checksum complete) around `l4`, whose checksum field at `at` (if any)
/// is completed over the pseudo-header.
fn packet(proto: u8, l4: &[u8], at: Option<usize>) -> Vec<u8> {
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 7, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    let total = (20 + l4.len()) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let c = !ones_sum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(l4);
    if let Some(at) = at {
        let at = 20 + at;
        ip[at..at + 2].fill(0);
        let ps = if proto == 1 {
            0
        } else {
            pseudo(&ip, proto, l4.len())
        };
        let c = !fold(add_words(ps, &ip[20..]));
        ip[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    ip
}

fn ethernet(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
    f.extend_from_slice(ip);
    f
}

fn tcp_segment(payload: &[u8]) -> Vec<u8> {
    let mut t = vec![
        0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff,
    ];
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

fn udp_datagram(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0x9c, 0x41];
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// A VXLAN payload (VNI 42) carrying the IPv4 packets `inner` back to back, each in an Ethernet
/// frame (a batch, as a UDP GSO send crosses a veth, when there are several).
fn vxlan_payload(inner: &[&Vec<u8>]) -> Vec<u8> {
    let mut vx = Vec::new();
    for ip in inner {
        vx.extend_from_slice(&[8, 0, 0, 0, 0, 0, 42, 0]);
        vx.extend_from_slice(&ethernet(ip));
    }
    vx
}

fn write_pcap(file: &Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    for w in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 262_144, 1] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    for f in frames {
        for w in [0u32, 0, f.len() as u32, f.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(f);
    }
    std::fs::write(file, out).expect("write pcap");
}

#[test]
fn the_validator_tells_good_checksums_from_bad_ones() {
    require(&["tshark"]);
    let dir = std::env::temp_dir().join(format!("vswitch-checksums-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Remove(dir.clone());
    let odd: Vec<u8> = (0..1001u32).map(|i| (i * 7) as u8).collect();
    let good_tcp = packet(6, &tcp_segment(&odd), Some(16));
    let good_udp = packet(17, &udp_datagram(5201, &odd[..333]), Some(6));
    let echo = packet(1, &[8, 0, 0, 0, 0, 1, 0, 1, 1, 2, 3], Some(2));
    // Partial: the pseudo-header sum alone, as a NEEDS_CSUM frame holds it.
    let mut partial = good_tcp.clone();
    let ps = fold(pseudo(&partial, 6, partial.len() - 20));
    partial[36..38].copy_from_slice(&ps.to_be_bytes());
    let flip = |p: &[u8], at: usize| {
        let mut p = p.to_vec();
        p[at] ^= 0x10;
        p
    };
    let bad_tcp = flip(&good_tcp, 20 + 20 + 500); // payload changed, checksum not
    let bad_ip = flip(&good_udp, 8); // TTL changed, header checksum not
    let bad_icmp = flip(&echo, 20 + 9);
    // 0xffff where 0x0000 is the computed checksum: valid. Two payload bytes make it so.
    let mut minus_zero = packet(6, &tcp_segment(&[0, 0]), None);
    minus_zero[36..38].copy_from_slice(&[0xff, 0xff]);
    let w = !fold(add_words(pseudo(&minus_zero, 6, 22), &minus_zero[20..]));
    minus_zero[40..42].copy_from_slice(&w.to_be_bytes());
    // An ICMP error quoting a UDP datagram whose header checksum was not translated.
    let quoted = flip(&good_udp[..20 + 8 + 333], 8);
    let mut err = vec![3, 3, 0, 0, 0, 0, 0, 0];
    err.extend_from_slice(&quoted);
    let icmp_err = packet(1, &err, Some(2));
    // VXLAN: a batch of two inner frames (as a UDP GSO send crosses a veth), the first one bad
    // (tshark decodes only the first); the outer UDP checksum zero.
    let vx = vxlan_payload(&[&bad_tcp, &good_tcp]);
    let vxlan = packet(17, &udp_datagram(4789, &vx), None);

    // Our verdict in `mode`, and tshark's (which has no notion of partial checksums).
    let check = |name: &str, frames: &[&Vec<u8>], mode: Mode| -> (Tally, Tshark) {
        let file = dir.join(format!("{name}.pcap"));
        let frames: Vec<Vec<u8>> = frames.iter().map(|p| ethernet(p)).collect();
        write_pcap(&file, &frames);
        let ts = if mode == Mode::Wire {
            tshark_verdicts(&file)
        } else {
            Tshark::default()
        };
        (validate(&file, mode), ts)
    };
    let good = [&good_tcp, &good_udp, &echo, &minus_zero];
    let (t, ts) = check("good", &good, Mode::Wire);
    assert_eq!((t.bad, t.outer.ipv4), (0, 4), "{}", t.examples.join("\n"));
    assert!(ts.bad.is_empty() && ts.minus_zero == 1, "{ts:?}");
    let (t, _) = check("partial", &[&partial], Mode::Wire);
    assert_eq!(t.bad, 1, "a partial checksum is bad on a wire");
    let (t, _) = check("partial", &[&partial], Mode::Tap);
    assert_eq!(
        (t.bad, t.outer.partial),
        (0, 1),
        "{}",
        t.examples.join("\n")
    );
    for (name, p, what) in [
        ("tcp", &bad_tcp, "TCP"),
        ("ip", &bad_ip, "IPv4 header"),
        ("icmp", &bad_icmp, "ICMP"),
        ("quoted", &icmp_err, "quoted IPv4 header"),
        ("vxlan", &vxlan, "inner TCP"),
    ] {
        for mode in [Mode::Wire, Mode::Tap] {
            let (t, ts) = check(name, &[p], mode);
            assert_eq!(t.bad, 1, "{name} in {mode:?}: {}", t.summary());
            assert!(t.examples[0].contains(what), "{name}: {:?}", t.examples);
            if mode == Mode::Wire {
                assert_eq!(ts.bad.len(), 1, "tshark on {name}: {ts:?}");
            }
        }
    }
    let (t, _) = check("vxlan", &[&vxlan], Mode::Wire);
    assert_eq!((t.vxlan, t.vxlan_batches, t.inner.tcp), (1, 1, 2));
    // The walk reaches every frame of a batch: the bad one last.
    let vx = vxlan_payload(&[&good_tcp, &good_tcp, &bad_tcp]);
    let batch = packet(17, &udp_datagram(4789, &vx), Some(6));
    let (t, _) = check("batch", &[&batch], Mode::Tap);
    assert_eq!((t.bad, t.inner.tcp), (1, 3), "{}", t.summary());
}
