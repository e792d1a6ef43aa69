//! The device-less lab the datapath and router tests share: a [`Switch`] whose ports are sinks
//! ([`Switch::attach_sink`], [`Switch::set_uplink_sink`]), each with a capture session
//! ([`Switch::capture`]) so a test sees exactly which frames the switch sent to which port, frame
//! builders, and checksum checks.
//!
//! Frames are built with the project's own checksum helpers (`wire::checksum::checksum`,
//! `checksum_pseudo`), but every checksum is *verified* here with an independent RFC 1071 sum
//! (the folded sum over a correct header, or pseudo-header plus segment, is `0xffff`): a bug in
//! those helpers fails the builders' self-check, a bug in the switch's incremental updates fails
//! the checks on what it sends.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use switch::capture::Session;
use switch::model::*;
use switch::{Options, Switch};

/// Virtio-net header length in front of frames injected on an endpoint (as read from a TAP).
pub const TAP_HDR: usize = 12;
/// ... and on the uplink (as read from a packet socket).
pub const UPLINK_HDR: usize = 10;

pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_ARP: u16 = 0x0806;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

pub type Mac = [u8; 6];
pub const BROADCAST: Mac = [0xff; 6];

pub fn mac(s: &str) -> Mac {
    s.parse::<switch::wire::MacAddr>().expect("mac").0
}

/// A port of the lab: its switch name and id, the header it takes on injection, its address.
#[derive(Debug, Clone)]
pub struct Port {
    pub name: String,
    pub id: u32,
    pub hdr: usize,
    pub mac: Mac,
    pub ip: Ipv4Addr,
}

/// A switch with sink ports, every one of them captured.
pub struct Lab {
    pub sw: Arc<Switch>,
    caps: Vec<(String, Session)>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.sw.shutdown();
    }
}

/// What the switch sent, port by port, while it handled one injected frame.
#[derive(Debug, Default)]
pub struct Out(pub BTreeMap<String, Vec<Vec<u8>>>);

impl Out {
    /// Frames sent to `p`.
    pub fn on(&self, p: &Port) -> &[Vec<u8>] {
        self.0.get(&p.name).map_or(&[], |v| v.as_slice())
    }

    /// Frames sent in all.
    pub fn total(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    /// The one frame sent, which must have gone to `p` (and nowhere else).
    pub fn only(&self, p: &Port) -> &[u8] {
        assert_eq!(
            self.total(),
            1,
            "expected one frame, to {}: {self:?}",
            p.name
        );
        let f = self.on(p);
        assert_eq!(f.len(), 1, "expected the frame on {}: {self:?}", p.name);
        &f[0]
    }

    /// Nothing was sent anywhere.
    pub fn assert_none(&self) {
        assert_eq!(self.total(), 0, "expected no frame at all: {self:?}");
    }

    /// Names of the ports that got something.
    pub fn ports(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

impl Lab {
    pub fn new(opts: Options) -> Lab {
        Lab {
            sw: Switch::start(opts).expect("start switch"),
            caps: Vec::new(),
        }
    }

    pub fn net(&self, name: &str, subnet: &str) -> NetworkInfo {
        self.sw
            .create_network(&NetworkCreate::flat(name, subnet))
            .expect("create network")
    }

    pub fn attach(&mut self, netns: &str, network: &str) -> Port {
        self.attach_req(&AttachRequest::new(netns, network))
    }

    pub fn attach_req(&mut self, req: &AttachRequest) -> Port {
        let e = self.sw.attach_sink(req).expect("attach sink");
        self.port(&e.port, TAP_HDR, mac(&e.mac), e.ip)
    }

    /// Set a sink uplink `ip` (`ADDR/PREFIX`), optionally with a next hop.
    pub fn uplink(&mut self, ip: &str, gateway: Option<&str>) -> Port {
        let u = self
            .sw
            .set_uplink_sink(&UplinkSet {
                iface: "up0".into(),
                ip: ip.into(),
                gateway: gateway.map(Into::into),
                ip6: None,
                gateway6: None,
                ipv6_routed: false,
            })
            .expect("uplink");
        self.port(&u.port, UPLINK_HDR, mac(&u.mac), u.ip)
    }

    fn port(&mut self, name: &str, hdr: usize, mac: Mac, ip: Ipv4Addr) -> Port {
        let id = self.sw.port_id(name).expect("port id");
        let cap = self.sw.capture(name).expect("capture on a sink port");
        self.caps.push((name.to_string(), cap));
        Port {
            name: name.into(),
            id,
            hdr,
            mac,
            ip,
        }
    }

    /// Inject `frame` on `from` (behind a zeroed virtio-net header of the port's length) and
    /// return what the switch sent. The copy of the frame itself that the capture on `from`
    /// sees (the received direction) is taken out: anything left on `from` was sent to it.
    pub fn send(&self, from: &Port, frame: &[u8]) -> Out {
        let mut wire = vec![0u8; from.hdr];
        wire.extend_from_slice(frame);
        self.send_raw(from, &wire, frame)
    }

    /// Inject `wire` as it is (header included); `frame` is what the receive capture shows.
    pub fn send_raw(&self, from: &Port, wire: &[u8], frame: &[u8]) -> Out {
        assert!(self.sw.inject(from.id, wire), "inject on {}", from.name);
        let mut out = Out::default();
        for (name, s) in &self.caps {
            let mut v: Vec<Vec<u8>> = std::iter::from_fn(|| s.try_recv().ok())
                .map(|c| c.data)
                .collect();
            if *name == from.name && v.first().is_some_and(|f| f == frame) {
                v.remove(0);
            }
            if !v.is_empty() {
                out.0.insert(name.clone(), v);
            }
        }
        out
    }

    pub fn drops(&self, name: &str) -> u64 {
        *self.sw.stats().drops.get(name).expect("drop counter")
    }

    pub fn events(&self, name: &str) -> u64 {
        *self.sw.stats().events.get(name).expect("event counter")
    }

    /// Every non-zero drop counter.
    pub fn all_drops(&self) -> BTreeMap<String, u64> {
        self.sw
            .stats()
            .drops
            .into_iter()
            .filter(|(_, v)| *v != 0)
            .collect()
    }
}

// ---- frame builders (checksums from the project's helpers, self-checked independently) ----

pub fn eth(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet (20-byte header, DF) carrying `l4`, whose checksum must already be right.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0x40, 0, ttl, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = switch::wire::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(l4);
    assert_ip_checksums(&ip);
    ip
}

/// A TCP segment (no options) with its checksum for `src -> dst`.
pub fn tcp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    if flags & ACK != 0 {
        t[8..12].copy_from_slice(&0x0a0b_0c0du32.to_be_bytes());
    }
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(data);
    let c = switch::wire::checksum::checksum_pseudo(src, dst, TCP, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// A UDP datagram with its checksum for `src -> dst`.
pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(data);
    let c = match switch::wire::checksum::checksum_pseudo(src, dst, UDP, &u) {
        0 => 0xffff,
        c => c,
    };
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// An ICMP echo request (`ty` 8) or reply (`ty` 0).
pub fn icmp_echo(ty: u8, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    let c = switch::wire::checksum::checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// `[Ethernet | IPv4 | l4]` with TTL `ttl`.
#[allow(clippy::too_many_arguments)]
pub fn ip_frame(
    dmac: Mac,
    smac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ttl: u8,
    l4: &[u8],
) -> Vec<u8> {
    eth(dmac, smac, ETH_IPV4, &ipv4(src, dst, proto, ttl, l4))
}

/// A TCP frame with TTL 64 and a little payload.
#[allow(clippy::too_many_arguments)]
pub fn tcp_frame(
    dmac: Mac,
    smac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    let seg = tcp(src, dst, sport, dport, flags, b"GET / HTTP/1.0\r\n\r\n");
    ip_frame(dmac, smac, src, dst, TCP, 64, &seg)
}

/// A UDP frame with TTL 64 (odd-length payload: the checksum's padding byte matters).
pub fn udp_frame(
    dmac: Mac,
    smac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let d = udp(src, dst, sport, dport, b"odd-length datagram");
    ip_frame(dmac, smac, src, dst, UDP, 64, &d)
}

/// An Ethernet/IPv4 ARP frame (`op` 1 request, 2 reply).
pub fn arp(
    dmac: Mac,
    smac: Mac,
    op: u16,
    sha: Mac,
    spa: Ipv4Addr,
    tha: Mac,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    eth(dmac, smac, ETH_ARP, &a)
}

/// Broadcast "who has `tpa`? tell `spa` (`sha`)".
pub fn arp_request(sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    arp(BROADCAST, sha, 1, sha, spa, [0; 6], tpa)
}

// ---- reading what the switch sent ----

/// The fields of an Ethernet/IPv4 ARP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpView {
    pub dst: Mac,
    pub src: Mac,
    pub op: u16,
    pub sha: Mac,
    pub spa: Ipv4Addr,
    pub tha: Mac,
    pub tpa: Ipv4Addr,
}

pub fn parse_arp(f: &[u8]) -> ArpView {
    assert!(f.len() >= 42, "ARP frame too short: {f:?}");
    assert_eq!(be16(f, 12), ETH_ARP, "not ARP: {f:?}");
    assert_eq!(&f[14..20], &[0, 1, 0x08, 0, 6, 4], "ARP hardware/protocol");
    let m = |i: usize| -> Mac { f[i..i + 6].try_into().unwrap() };
    let a = |i: usize| Ipv4Addr::new(f[i], f[i + 1], f[i + 2], f[i + 3]);
    ArpView {
        dst: m(0),
        src: m(6),
        op: be16(f, 20),
        sha: m(22),
        spa: a(28),
        tha: m(32),
        tpa: a(38),
    }
}

/// An Ethernet/IPv4 frame's fields (ports are 0 for ICMP; `id` is the ICMP echo identifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpView {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub ttl: u8,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    /// TCP flags, or the ICMP type.
    pub flags: u8,
    /// The L4 header and payload.
    pub l4: Vec<u8>,
}

pub fn parse_ip(f: &[u8]) -> IpView {
    assert!(f.len() >= 34, "IPv4 frame too short: {f:?}");
    assert_eq!(be16(f, 12), ETH_IPV4, "not IPv4: {f:?}");
    let ip = &f[14..];
    assert_eq!(ip[0] >> 4, 4, "IP version");
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2));
    assert!(
        total <= ip.len() && total >= ihl,
        "IPv4 total length {total}"
    );
    let l4 = &ip[ihl..total];
    let (sport, dport, flags) = match ip[9] {
        TCP => (be16(l4, 0), be16(l4, 2), l4[13]),
        UDP => (be16(l4, 0), be16(l4, 2), 0),
        ICMP => (0, 0, l4[0]),
        _ => (0, 0, 0),
    };
    IpView {
        dst_mac: f[0..6].try_into().unwrap(),
        src_mac: f[6..12].try_into().unwrap(),
        ttl: ip[8],
        proto: ip[9],
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        sport,
        dport,
        flags,
        l4: l4.to_vec(),
    }
}

/// The payload after a TCP (no options) or UDP header.
pub fn l4_payload(v: &IpView) -> &[u8] {
    match v.proto {
        TCP => &v.l4[usize::from(v.l4[12] >> 4) * 4..],
        UDP => &v.l4[8..],
        _ => &v.l4[8..],
    }
}

pub fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// RFC 1071 one's-complement sum, folded, not inverted: the straightforward 16-bit loop, kept
/// apart from `wire::checksum`'s vectorised one on purpose.
pub fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for p in parts {
        for w in p.chunks(2) {
            sum += u64::from(w[0]) << 8 | u64::from(*w.get(1).unwrap_or(&0));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Check the IPv4 header checksum and the TCP/UDP/ICMP checksum of the frame `f`.
pub fn assert_checksums(f: &[u8]) {
    assert_eq!(be16(f, 12), ETH_IPV4, "not IPv4");
    assert_ip_checksums(&f[14..]);
}

/// [`assert_checksums`] on an IPv4 packet.
pub fn assert_ip_checksums(ip: &[u8]) {
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2));
    assert_eq!(
        ones_sum(&[&ip[..ihl]]),
        0xffff,
        "IPv4 header checksum wrong: {:02x?}",
        &ip[..ihl]
    );
    let l4 = &ip[ihl..total];
    let proto = ip[9];
    match proto {
        TCP | UDP => {
            if proto == UDP && be16(l4, 6) == 0 {
                panic!("UDP checksum missing");
            }
            let len = (l4.len() as u16).to_be_bytes();
            let pseudo = [&ip[12..20], &[0, proto], &len[..]].concat();
            assert_eq!(
                ones_sum(&[&pseudo, l4]),
                0xffff,
                "{} checksum wrong: {:02x?}",
                if proto == TCP { "TCP" } else { "UDP" },
                ip
            );
        }
        ICMP => assert_eq!(ones_sum(&[l4]), 0xffff, "ICMP checksum wrong: {ip:02x?}"),
        _ => {}
    }
}
