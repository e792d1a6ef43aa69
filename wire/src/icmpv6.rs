//! ICMPv6 (RFC 4443) and neighbour discovery (RFC 4861): message types, the addresses IPv6
//! derives from others (solicited-node group, multicast MAC, EUI-64 interface identifiers), the
//! parse of ND messages with the validity checks a receiver makes, and builders of the frames
//! the switch sends itself (neighbour advertisements and solicitations, router advertisements,
//! errors).
//!
//! A built frame is `[Ethernet (14) | IPv6 (40) | ICMPv6 message]` with its checksum filled in
//! under the IPv6 pseudo-header. Builders write into a caller's buffer and return the frame's
//! length, or `None` when the buffer is too short: they never allocate or panic.

use std::net::Ipv6Addr;

use crate::ethernet::{EthFrame, EtherType, MacAddr};
use crate::ipv6::{self, next_header, Ipv6Header};
use crate::{be16, put16};

/// ICMPv6 message types.
pub mod msg_type {
    /// Destination unreachable (error).
    pub const DEST_UNREACH: u8 = 1;
    /// Packet too big (error; the parameter is the MTU).
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded (error).
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem (error; the parameter is a pointer into the quoted packet).
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Multicast listener query.
    pub const MLD_QUERY: u8 = 130;
    /// Multicast listener report (MLDv1).
    pub const MLD_REPORT: u8 = 131;
    /// Multicast listener done (MLDv1).
    pub const MLD_DONE: u8 = 132;
    /// Router solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Router advertisement.
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbour solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbour advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// Redirect.
    pub const REDIRECT: u8 = 137;
    /// Multicast listener report (MLDv2).
    pub const MLDV2_REPORT: u8 = 143;
}

/// Where the ICMPv6 message starts in a frame the builders write.
pub const MESSAGE_AT: usize = EthFrame::HEADER_LEN + ipv6::HEADER_LEN;
/// Length of an ICMPv6 error's header (type, code, checksum, parameter) before the quote.
pub const ERROR_HEADER_LEN: usize = 8;
/// The most of an offending packet an error quotes: what keeps the error's IPv6 packet within
/// the minimum MTU (RFC 4443 §2.4(c)).
pub const MAX_QUOTE: usize = ipv6::MIN_MTU - ipv6::HEADER_LEN - ERROR_HEADER_LEN;
/// The hop limit every neighbour-discovery message is sent and must be received with.
pub const ND_HOP_LIMIT: u8 = 255;
/// The hop limit of the errors the switch sends.
pub const ERROR_HOP_LIMIT: u8 = 64;

/// Neighbour-discovery option types (RFC 4861 §4.6).
mod opt {
    pub const SOURCE_LL: u8 = 1;
    pub const TARGET_LL: u8 = 2;
    pub const PREFIX_INFO: u8 = 3;
    pub const MTU: u8 = 5;
}

/// Neighbour-advertisement flag bits (the first byte after the checksum).
mod na_flag {
    pub const ROUTER: u8 = 0x80;
    pub const SOLICITED: u8 = 0x40;
    pub const OVERRIDE: u8 = 0x20;
}

/// Prefix-information flag bits.
mod prefix_flag {
    pub const ON_LINK: u8 = 0x80;
    pub const AUTONOMOUS: u8 = 0x40;
}

/// Valid lifetime of the prefix a router advertisement carries, in seconds (one day).
pub const PREFIX_VALID_LIFETIME: u32 = 86_400;
/// Preferred lifetime of the prefix a router advertisement carries, in seconds (four hours).
pub const PREFIX_PREFERRED_LIFETIME: u32 = 14_400;
/// The current hop limit a router advertisement tells hosts to use.
pub const RA_CUR_HOP_LIMIT: u8 = 64;

/// The solicited-node multicast group of `addr`: `ff02::1:ff00:0/104` and its low 24 bits
/// (RFC 4291 §2.7.1), where a neighbour solicitation for `addr` is sent.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet MAC of the IPv6 multicast group `addr`: `33:33` and its last four bytes
/// (RFC 2464 §7).
pub fn multicast_mac(addr: Ipv6Addr) -> MacAddr {
    let o = addr.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The modified EUI-64 interface identifier of `mac`: `ff:fe` in the middle, the
/// universal/local bit flipped (RFC 4291 appendix A).
fn eui64(mac: MacAddr) -> [u8; 8] {
    let m = mac.0;
    [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]
}

/// The link-local address of an interface with `mac`: `fe80::/64` and its modified EUI-64
/// interface identifier.
pub fn link_local_eui64(mac: MacAddr) -> Ipv6Addr {
    eui64_in(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), mac)
}

/// The address stateless autoconfiguration (RFC 4862) gives an interface with `mac` in the /64
/// `prefix`: the prefix's first 64 bits and the modified EUI-64 interface identifier.
pub fn eui64_in(prefix: Ipv6Addr, mac: MacAddr) -> Ipv6Addr {
    let mut o = prefix.octets();
    o[8..].copy_from_slice(&eui64(mac));
    Ipv6Addr::from(o)
}

/// A link-local unicast address (`fe80::/10`).
pub fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// Which neighbour-discovery message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdKind {
    /// Router solicitation.
    Rs,
    /// Router advertisement.
    Ra,
    /// Neighbour solicitation.
    Ns,
    /// Neighbour advertisement.
    Na,
    /// Redirect.
    Redirect,
}

/// A neighbour-discovery message, as [`parse_nd`] found it valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nd {
    /// Which message.
    pub kind: NdKind,
    /// The target address (NS, NA, Redirect).
    pub target: Option<Ipv6Addr>,
    /// The first source link-layer address option holding an Ethernet MAC.
    pub source_mac: Option<MacAddr>,
    /// The first target link-layer address option holding an Ethernet MAC.
    pub target_mac: Option<MacAddr>,
    /// NA: the sender is a router.
    pub router: bool,
    /// NA: sent in answer to a solicitation.
    pub solicited: bool,
    /// NA: the advertisement should override a cached link-layer address.
    pub override_flag: bool,
    /// RA: how long the sender may be a default router, in seconds (0: not a default router).
    pub router_lifetime: u16,
}

/// Why a neighbour-discovery message is invalid (RFC 4861 §6.1, §7.1, §8.1): the receiver
/// silently discards it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NdError {
    /// Not an RS, RA, NS, NA or Redirect.
    #[error("not a neighbour-discovery message")]
    NotNd,
    /// The IPv6 hop limit is not 255: the message may come from off-link.
    #[error("hop limit not 255")]
    HopLimit,
    /// The ICMP code is not 0.
    #[error("ICMP code not 0")]
    Code,
    /// Shorter than the message type's fixed part.
    #[error("message too short")]
    TooShort,
    /// An option with length 0.
    #[error("option of length 0")]
    ZeroLengthOption,
    /// An option runs past the end of the message.
    #[error("option runs past the message")]
    OptionOverrun,
    /// An NS or NA whose target is a multicast address.
    #[error("multicast target")]
    MulticastTarget,
    /// A redirect whose destination is a multicast address.
    #[error("multicast redirect destination")]
    MulticastDestination,
    /// An RS or NS from the unspecified address with a source link-layer address option.
    #[error("source link-layer option from the unspecified address")]
    UnspecifiedWithSourceOption,
    /// An NS from the unspecified address not sent to a solicited-node group.
    #[error("address probe not to a solicited-node group")]
    NotSolicitedNode,
    /// An NA to a multicast address with the solicited flag.
    #[error("solicited advertisement to a multicast address")]
    SolicitedToMulticast,
    /// An RA or Redirect whose IPv6 source is not link-local.
    #[error("router message from a non-link-local source")]
    SourceNotLinkLocal,
}

/// Offset of the options in each message type (its fixed part's length).
fn fixed_len(kind: NdKind) -> usize {
    match kind {
        NdKind::Rs => 8,
        NdKind::Ra => 16,
        NdKind::Ns | NdKind::Na => 24,
        NdKind::Redirect => 40,
    }
}

/// Parse the neighbour-discovery message `icmp` (the whole ICMPv6 message, to the end of the
/// IPv6 payload) received with `hop_limit`, checking RFC 4861's validity rules that need no more
/// of the IPv6 header: hop limit 255, code 0, the type's minimum length, every option non-empty
/// and within the message, an NS/NA target and a Redirect destination not multicast. The rules
/// on the addresses are [`Nd::check_ip`]; the checksum is the caller's
/// ([`crate::checksum::checksum_pseudo6`] over the message is 0). Options other than the
/// link-layer addresses are skipped; a link-layer address option not holding a MAC (length
/// other than 8) is ignored.
pub fn parse_nd(icmp: &[u8], hop_limit: u8) -> Result<Nd, NdError> {
    let kind = match *icmp.first().ok_or(NdError::TooShort)? {
        msg_type::ROUTER_SOLICIT => NdKind::Rs,
        msg_type::ROUTER_ADVERT => NdKind::Ra,
        msg_type::NEIGHBOR_SOLICIT => NdKind::Ns,
        msg_type::NEIGHBOR_ADVERT => NdKind::Na,
        msg_type::REDIRECT => NdKind::Redirect,
        _ => return Err(NdError::NotNd),
    };
    if hop_limit != ND_HOP_LIMIT {
        return Err(NdError::HopLimit);
    }
    let fixed = fixed_len(kind);
    if icmp.len() < fixed {
        return Err(NdError::TooShort);
    }
    if icmp[1] != 0 {
        return Err(NdError::Code);
    }
    let addr = |at: usize| {
        let mut o = [0u8; 16];
        o.copy_from_slice(&icmp[at..at + 16]);
        Ipv6Addr::from(o)
    };
    let mut nd = Nd {
        kind,
        target: None,
        source_mac: None,
        target_mac: None,
        router: false,
        solicited: false,
        override_flag: false,
        router_lifetime: 0,
    };
    match kind {
        NdKind::Rs => {}
        NdKind::Ra => nd.router_lifetime = be16(icmp, 6),
        NdKind::Ns | NdKind::Na | NdKind::Redirect => {
            let target = addr(8);
            if kind != NdKind::Redirect && target.is_multicast() {
                return Err(NdError::MulticastTarget);
            }
            if kind == NdKind::Redirect && addr(24).is_multicast() {
                return Err(NdError::MulticastDestination);
            }
            nd.target = Some(target);
            if kind == NdKind::Na {
                let f = icmp[4];
                nd.router = f & na_flag::ROUTER != 0;
                nd.solicited = f & na_flag::SOLICITED != 0;
                nd.override_flag = f & na_flag::OVERRIDE != 0;
            }
        }
    }
    let mut rest = &icmp[fixed..];
    while !rest.is_empty() {
        let [t, l, ..] = *rest else {
            return Err(NdError::OptionOverrun);
        };
        let len = usize::from(l) * 8;
        if len == 0 {
            return Err(NdError::ZeroLengthOption);
        }
        let Some(o) = rest.get(..len) else {
            return Err(NdError::OptionOverrun);
        };
        if len == 8 {
            let mac = MacAddr([o[2], o[3], o[4], o[5], o[6], o[7]]);
            match t {
                opt::SOURCE_LL => nd.source_mac = nd.source_mac.or(Some(mac)),
                opt::TARGET_LL => nd.target_mac = nd.target_mac.or(Some(mac)),
                _ => {}
            }
        }
        rest = &rest[len..];
    }
    Ok(nd)
}

impl Nd {
    /// RFC 4861's validity rules on the IPv6 addresses the message came with: no source
    /// link-layer option from the unspecified address (RS, NS), an address probe (NS from the
    /// unspecified address) only to a solicited-node group, no solicited NA to a multicast
    /// address, RA and Redirect only from a link-local source.
    pub fn check_ip(&self, src: Ipv6Addr, dst: Ipv6Addr) -> Result<(), NdError> {
        match self.kind {
            NdKind::Rs | NdKind::Ns if src.is_unspecified() && self.source_mac.is_some() => {
                Err(NdError::UnspecifiedWithSourceOption)
            }
            NdKind::Ns if src.is_unspecified() && !is_solicited_node(dst) => {
                Err(NdError::NotSolicitedNode)
            }
            NdKind::Na if dst.is_multicast() && self.solicited => {
                Err(NdError::SolicitedToMulticast)
            }
            NdKind::Ra | NdKind::Redirect if !is_link_local(src) => {
                Err(NdError::SourceNotLinkLocal)
            }
            _ => Ok(()),
        }
    }
}

/// An address in `ff02::1:ff00:0/104`.
fn is_solicited_node(a: Ipv6Addr) -> bool {
    a.octets()[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff]
}

/// Who a built frame is from and to: its Ethernet and IPv6 source and destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    /// Ethernet source.
    pub eth_src: MacAddr,
    /// Ethernet destination.
    pub eth_dst: MacAddr,
    /// IPv6 source.
    pub ip_src: Ipv6Addr,
    /// IPv6 destination.
    pub ip_dst: Ipv6Addr,
}

/// The addresses of a frame a builder writes, and its hop limit.
struct Ends {
    eth_src: MacAddr,
    eth_dst: MacAddr,
    ip_src: Ipv6Addr,
    ip_dst: Ipv6Addr,
    hop_limit: u8,
}

impl Ends {
    fn of(a: Addrs, hop_limit: u8) -> Ends {
        Ends {
            eth_src: a.eth_src,
            eth_dst: a.eth_dst,
            ip_src: a.ip_src,
            ip_dst: a.ip_dst,
            hop_limit,
        }
    }
}

impl Ends {
    /// Write the Ethernet and IPv6 headers for an ICMPv6 message of `len` bytes into `out` and
    /// return the message's bytes, zeroed; `None` when `out` is too short.
    fn headers<'a>(&self, out: &'a mut [u8], len: usize) -> Option<&'a mut [u8]> {
        let frame = out.get_mut(..MESSAGE_AT + len)?;
        let (eth, rest) = frame.split_at_mut(EthFrame::HEADER_LEN);
        let (ip, msg) = rest.split_at_mut(ipv6::HEADER_LEN);
        EthFrame {
            dst: self.eth_dst,
            src: self.eth_src,
            ethertype: EtherType::IPV6,
        }
        .write(eth.try_into().ok()?);
        Ipv6Header {
            src: self.ip_src,
            dst: self.ip_dst,
            next_header: next_header::ICMPV6,
            payload_len: len,
            hop_limit: self.hop_limit,
        }
        .write(ip.try_into().ok()?);
        msg.fill(0);
        Some(msg)
    }

    /// Fill in the checksum of the message in the frame `out` holds and return the frame's
    /// length.
    fn finish(&self, out: &mut [u8], len: usize) -> Option<usize> {
        let msg = out.get_mut(MESSAGE_AT..MESSAGE_AT + len)?;
        crate::l4::fill_checksum6(self.ip_src, self.ip_dst, next_header::ICMPV6, msg);
        Some(MESSAGE_AT + len)
    }
}

/// Write a link-layer address option of type `t` for `mac` into `o` (8 bytes).
fn ll_option(o: &mut [u8], t: u8, mac: MacAddr) {
    o[0] = t;
    o[1] = 1;
    o[2..8].copy_from_slice(&mac.0);
}

/// Write the neighbour advertisement "`target` is at `target_mac`" from `eth_src`/`ip_src` to
/// `eth_dst`/`ip_dst` into `out`, with the override flag, `router` and `solicited` flags, and the
/// target link-layer address option; hop limit 255. Returns the frame's length (86), or `None`
/// when `out` is too short.
pub fn write_na(
    out: &mut [u8],
    to: Addrs,
    target: Ipv6Addr,
    target_mac: MacAddr,
    router: bool,
    solicited: bool,
) -> Option<usize> {
    const LEN: usize = 32;
    let ends = Ends::of(to, ND_HOP_LIMIT);
    let m = ends.headers(out, LEN)?;
    m[0] = msg_type::NEIGHBOR_ADVERT;
    m[4] = na_flag::OVERRIDE
        | if router { na_flag::ROUTER } else { 0 }
        | if solicited { na_flag::SOLICITED } else { 0 };
    m[8..24].copy_from_slice(&target.octets());
    ll_option(&mut m[24..32], opt::TARGET_LL, target_mac);
    ends.finish(out, LEN)
}

/// Write the neighbour solicitation "who has `target`?" from `eth_src`/`ip_src` to `target`'s
/// solicited-node group (and its multicast MAC) into `out`, with the source link-layer address
/// option (left out when `ip_src` is the unspecified address: an address probe, RFC 4862
/// §5.4.2); hop limit 255. Returns the frame's length (86, or 78 for a probe), or `None` when
/// `out` is too short.
pub fn write_ns(
    out: &mut [u8],
    eth_src: MacAddr,
    ip_src: Ipv6Addr,
    target: Ipv6Addr,
) -> Option<usize> {
    let len = if ip_src.is_unspecified() { 24 } else { 32 };
    let group = solicited_node(target);
    let ends = Ends {
        eth_src,
        eth_dst: multicast_mac(group),
        ip_src,
        ip_dst: group,
        hop_limit: ND_HOP_LIMIT,
    };
    let m = ends.headers(out, len)?;
    m[0] = msg_type::NEIGHBOR_SOLICIT;
    m[8..24].copy_from_slice(&target.octets());
    if let Some(o) = m.get_mut(24..32) {
        ll_option(o, opt::SOURCE_LL, eth_src);
    }
    ends.finish(out, len)
}

/// Write a router advertisement from `eth_src`/`ip_src` (the router's link-local address) to
/// `eth_dst`/`ip_dst` into `out`: current hop limit 64, no M/O flags, `router_lifetime_s`, and
/// the options source link-layer address (`eth_src`), MTU (`mtu`) and prefix information
/// (`prefix`/`prefix_len`, its bits past the length cleared; on-link, autonomous if
/// `autonomous`; valid 86400 s, preferred 14400 s); hop limit 255. Returns the frame's length
/// (118), or `None` when `out` is too short or `prefix_len` is over 128.
pub fn write_ra(
    out: &mut [u8],
    to: Addrs,
    prefix: Ipv6Addr,
    prefix_len: u8,
    autonomous: bool,
    mtu: u32,
    router_lifetime_s: u16,
) -> Option<usize> {
    const LEN: usize = 16 + 8 + 8 + 32;
    if prefix_len > 128 {
        return None;
    }
    let ends = Ends::of(to, ND_HOP_LIMIT);
    let m = ends.headers(out, LEN)?;
    m[0] = msg_type::ROUTER_ADVERT;
    m[4] = RA_CUR_HOP_LIMIT;
    put16(m, 6, router_lifetime_s);
    // Reachable time and retransmission timer 0: unspecified by this router.
    ll_option(&mut m[16..24], opt::SOURCE_LL, to.eth_src);
    let o = &mut m[24..32];
    o[0] = opt::MTU;
    o[1] = 1;
    o[4..8].copy_from_slice(&mtu.to_be_bytes());
    let o = &mut m[32..64];
    o[0] = opt::PREFIX_INFO;
    o[1] = 4;
    o[2] = prefix_len;
    o[3] = prefix_flag::ON_LINK
        | if autonomous {
            prefix_flag::AUTONOMOUS
        } else {
            0
        };
    o[4..8].copy_from_slice(&PREFIX_VALID_LIFETIME.to_be_bytes());
    o[8..12].copy_from_slice(&PREFIX_PREFERRED_LIFETIME.to_be_bytes());
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix_len))
        .unwrap_or(0);
    o[16..32].copy_from_slice(&(u128::from(prefix) & mask).to_be_bytes());
    ends.finish(out, LEN)
}

/// Write the ICMPv6 error `msg_type`/`code` (destination unreachable, packet too big, time
/// exceeded, parameter problem) from `eth_src`/`ip_src` to `eth_dst`/`ip_dst` into `out`, with
/// `param` in the 4 bytes after the checksum (the MTU for packet too big, the pointer for
/// parameter problem, 0 otherwise) and as much of the offending IPv6 packet `quoted` as keeps
/// the error within 1280 bytes (RFC 4443 §2.4(c), [`MAX_QUOTE`]); hop limit 64. Whether an
/// error may be sent at all (not about an error, not to a multicast source, rate limits) is the
/// caller's. Returns the frame's length, or `None` when `out` cannot hold it (a buffer of
/// `14 + 1280` bytes always can).
pub fn write_error(
    out: &mut [u8],
    to: Addrs,
    msg_type: u8,
    code: u8,
    param: u32,
    quoted: &[u8],
) -> Option<usize> {
    let quoted = &quoted[..quoted.len().min(MAX_QUOTE)];
    let len = ERROR_HEADER_LEN + quoted.len();
    let ends = Ends::of(to, ERROR_HOP_LIMIT);
    let m = ends.headers(out, len)?;
    m[0] = msg_type;
    m[1] = code;
    m[4..8].copy_from_slice(&param.to_be_bytes());
    m[ERROR_HEADER_LEN..].copy_from_slice(quoted);
    ends.finish(out, len)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::checksum::checksum_pseudo6;
    use crate::parsed::{Parsed, L3, L4};
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        Icmpv6Packet, Icmpv6Repr, NdiscNeighborFlags, NdiscPrefixInfoFlags, NdiscRepr,
        RawHardwareAddress,
    };

    const HOST_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x14, 0, 2]);
    const GW_MAC: MacAddr = MacAddr([0x02, 0x76, 0x73, 1, 2, 3]);

    fn host() -> Ipv6Addr {
        "fd00:0:0:1::2".parse().unwrap()
    }

    fn gw_ll() -> Ipv6Addr {
        link_local_eui64(GW_MAC)
    }

    /// The simple RFC 1071 loop over the IPv6 pseudo-header written out and the message: the
    /// independent check of every checksum here.
    fn verifies(frame: &[u8]) -> bool {
        let ip = &frame[EthFrame::HEADER_LEN..];
        let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let msg = &ip[40..40 + plen];
        let mut all = Vec::new();
        all.extend_from_slice(&ip[8..40]);
        all.extend_from_slice(&(plen as u32).to_be_bytes());
        all.extend_from_slice(&[0, 0, 0, ip[6]]);
        all.extend_from_slice(msg);
        let mut s: u32 = all
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        s == 0xffff
    }

    /// The frame's ICMPv6 message as parsed, with the source, destination and hop limit.
    fn parsed(frame: &[u8]) -> (crate::Ip6, &[u8]) {
        let p = Parsed::parse(frame).unwrap();
        assert_eq!(p.eth.ethertype, EtherType::IPV6);
        let L3::Ipv6(ip) = p.l3 else {
            panic!("not IPv6: {:?}", p.l3)
        };
        assert_eq!(ip.proto, next_header::ICMPV6);
        (ip, &frame[MESSAGE_AT..EthFrame::HEADER_LEN + ip.total_len])
    }

    fn oracle<'a>(ip: &crate::Ip6, msg: &'a [u8]) -> Icmpv6Repr<'a> {
        let caps = ChecksumCapabilities::default();
        let p = Icmpv6Packet::new_checked(msg).unwrap();
        Icmpv6Repr::parse(&ip.src, &ip.dst, &p, &caps).unwrap()
    }

    #[test]
    fn address_helpers() {
        let a: Ipv6Addr = "2001:db8::2aa:ff:fe28:9c5a".parse().unwrap();
        assert_eq!(
            solicited_node(a),
            "ff02::1:ff28:9c5a".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac(solicited_node(a)),
            MacAddr([0x33, 0x33, 0xff, 0x28, 0x9c, 0x5a])
        );
        assert_eq!(
            multicast_mac("ff02::1".parse().unwrap()),
            MacAddr([0x33, 0x33, 0, 0, 0, 1])
        );
        // RFC 4291 appendix A's example: 34-56-78-9A-BC-DE -> 3656:78ff:fe9a:bcde.
        let m = MacAddr([0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde]);
        assert_eq!(
            link_local_eui64(m),
            "fe80::3656:78ff:fe9a:bcde".parse::<Ipv6Addr>().unwrap()
        );
        // A locally administered MAC loses the U/L bit.
        assert_eq!(
            link_local_eui64(HOST_MAC),
            "fe80::42:acff:fe14:2".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            eui64_in("2001:db8:1:2:ffff::1".parse().unwrap(), HOST_MAC),
            "2001:db8:1:2:0042:acff:fe14:2".parse::<Ipv6Addr>().unwrap()
        );
        assert!(is_solicited_node(solicited_node(a)));
        assert!(!is_solicited_node("ff02::1".parse().unwrap()));
    }

    #[test]
    fn na_round_trip() {
        let mut out = [0u8; 128];
        let n = write_na(
            &mut out,
            Addrs {
                eth_src: GW_MAC,
                eth_dst: HOST_MAC,
                ip_src: gw_ll(),
                ip_dst: host(),
            },
            gw_ll(),
            GW_MAC,
            true,
            true,
        )
        .unwrap();
        assert_eq!(n, 86);
        let f = &out[..n];
        assert!(verifies(f));
        let (ip, msg) = parsed(f);
        assert_eq!((ip.src, ip.dst, ip.hop_limit), (gw_ll(), host(), 255));
        assert_eq!(checksum_pseudo6(ip.src, ip.dst, 58, msg), 0);
        assert!(matches!(
            ip.l4,
            L4::Icmp {
                msg_type: msg_type::NEIGHBOR_ADVERT,
                code: 0,
                ..
            }
        ));
        let nd = parse_nd(msg, ip.hop_limit).unwrap();
        assert_eq!(
            nd,
            Nd {
                kind: NdKind::Na,
                target: Some(gw_ll()),
                source_mac: None,
                target_mac: Some(GW_MAC),
                router: true,
                solicited: true,
                override_flag: true,
                router_lifetime: 0,
            }
        );
        assert_eq!(nd.check_ip(ip.src, ip.dst), Ok(()));
        let e = EthFrame::parse(f).unwrap();
        assert_eq!((e.src, e.dst), (GW_MAC, HOST_MAC));
        match oracle(&ip, msg) {
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                flags,
                target_addr,
                lladdr,
            }) => {
                assert_eq!(
                    flags,
                    NdiscNeighborFlags::ROUTER
                        | NdiscNeighborFlags::SOLICITED
                        | NdiscNeighborFlags::OVERRIDE
                );
                assert_eq!(target_addr, gw_ll());
                assert_eq!(lladdr, Some(RawHardwareAddress::from_bytes(&GW_MAC.0)));
            }
            r => panic!("{r:?}"),
        }
        // Unsolicited, not a router: only the override flag.
        let n = write_na(
            &mut out,
            Addrs {
                eth_src: GW_MAC,
                eth_dst: MacAddr([0x33, 0x33, 0, 0, 0, 1]),
                ip_src: gw_ll(),
                ip_dst: "ff02::1".parse().unwrap(),
            },
            gw_ll(),
            GW_MAC,
            false,
            false,
        )
        .unwrap();
        let (ip, msg) = parsed(&out[..n]);
        let nd = parse_nd(msg, 255).unwrap();
        assert!(!nd.router && !nd.solicited && nd.override_flag);
        assert_eq!(nd.check_ip(ip.src, ip.dst), Ok(()));
        // Too short a buffer: None, nothing panics.
        for len in 0..86 {
            let mut o = vec![0u8; len];
            assert_eq!(
                write_na(
                    &mut o,
                    Addrs {
                        eth_src: GW_MAC,
                        eth_dst: HOST_MAC,
                        ip_src: gw_ll(),
                        ip_dst: host()
                    },
                    gw_ll(),
                    GW_MAC,
                    true,
                    true
                ),
                None
            );
        }
    }

    #[test]
    fn ns_round_trip_and_address_probe() {
        let mut out = [0u8; 86];
        let n = write_ns(&mut out, GW_MAC, gw_ll(), host()).unwrap();
        assert_eq!(n, 86);
        let f = &out[..n];
        assert!(verifies(f));
        let e = EthFrame::parse(f).unwrap();
        assert_eq!(e.dst, MacAddr([0x33, 0x33, 0xff, 0, 0, 2]));
        let (ip, msg) = parsed(f);
        assert_eq!(ip.dst, "ff02::1:ff00:2".parse::<Ipv6Addr>().unwrap());
        let nd = parse_nd(msg, ip.hop_limit).unwrap();
        assert_eq!(
            (nd.kind, nd.target, nd.source_mac, nd.target_mac),
            (NdKind::Ns, Some(host()), Some(GW_MAC), None)
        );
        assert_eq!(nd.check_ip(ip.src, ip.dst), Ok(()));
        match oracle(&ip, msg) {
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                target_addr,
                lladdr,
            }) => {
                assert_eq!(target_addr, host());
                assert_eq!(lladdr, Some(RawHardwareAddress::from_bytes(&GW_MAC.0)));
            }
            r => panic!("{r:?}"),
        }
        // From the unspecified address: no source link-layer option (RFC 4861 §4.3).
        let n = write_ns(&mut out, GW_MAC, Ipv6Addr::UNSPECIFIED, host()).unwrap();
        assert_eq!(n, 78);
        assert!(verifies(&out[..n]));
        let (ip, msg) = parsed(&out[..n]);
        let nd = parse_nd(msg, 255).unwrap();
        assert_eq!(nd.source_mac, None);
        assert_eq!(nd.check_ip(ip.src, ip.dst), Ok(()));
        assert_eq!(
            write_ns(&mut out[..77], GW_MAC, Ipv6Addr::UNSPECIFIED, host()),
            None
        );
        assert_eq!(write_ns(&mut out[..85], GW_MAC, gw_ll(), host()), None);
    }

    #[test]
    fn ra_round_trip() {
        let mut out = [0u8; 200];
        let prefix: Ipv6Addr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
        let n = write_ra(
            &mut out,
            Addrs {
                eth_src: GW_MAC,
                eth_dst: multicast_mac(all_nodes),
                ip_src: gw_ll(),
                ip_dst: all_nodes,
            },
            prefix,
            64,
            true,
            1450,
            1800,
        )
        .unwrap();
        assert_eq!(n, 118);
        let f = &out[..n];
        assert!(verifies(f));
        let (ip, msg) = parsed(f);
        assert_eq!(ip.hop_limit, 255);
        let nd = parse_nd(msg, ip.hop_limit).unwrap();
        assert_eq!(
            (nd.kind, nd.router_lifetime, nd.source_mac, nd.target),
            (NdKind::Ra, 1800, Some(GW_MAC), None)
        );
        assert_eq!(nd.check_ip(ip.src, ip.dst), Ok(()));
        match oracle(&ip, msg) {
            Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert {
                hop_limit,
                flags,
                router_lifetime,
                lladdr,
                mtu,
                prefix_info,
                ..
            }) => {
                assert_eq!((hop_limit, flags.bits()), (64, 0));
                assert_eq!(router_lifetime.secs(), 1800);
                assert_eq!(lladdr, Some(RawHardwareAddress::from_bytes(&GW_MAC.0)));
                assert_eq!(mtu, Some(1450));
                let p = prefix_info.unwrap();
                assert_eq!(p.prefix_len, 64);
                assert_eq!(p.prefix, "2001:db8:1:2::".parse::<Ipv6Addr>().unwrap());
                assert_eq!(
                    p.flags,
                    NdiscPrefixInfoFlags::ON_LINK | NdiscPrefixInfoFlags::ADDRCONF
                );
                assert_eq!(p.valid_lifetime.secs(), 86_400);
                assert_eq!(p.preferred_lifetime.secs(), 14_400);
            }
            r => panic!("{r:?}"),
        }
        // Not autonomous, an odd prefix length: only L, the prefix masked to 60 bits.
        let n = write_ra(
            &mut out,
            Addrs {
                eth_src: GW_MAC,
                eth_dst: HOST_MAC,
                ip_src: gw_ll(),
                ip_dst: host(),
            },
            prefix,
            60,
            false,
            1500,
            0,
        )
        .unwrap();
        let (ip, msg) = parsed(&out[..n]);
        match oracle(&ip, msg) {
            Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert { prefix_info, .. }) => {
                let p = prefix_info.unwrap();
                assert_eq!(p.flags, NdiscPrefixInfoFlags::ON_LINK);
                assert_eq!(p.prefix, "2001:db8:1::".parse::<Ipv6Addr>().unwrap());
            }
            r => panic!("{r:?}"),
        }
        for plen in [0, 128] {
            let n = write_ra(
                &mut out,
                Addrs {
                    eth_src: GW_MAC,
                    eth_dst: HOST_MAC,
                    ip_src: gw_ll(),
                    ip_dst: host(),
                },
                prefix,
                plen,
                true,
                1500,
                0,
            );
            assert_eq!(n, Some(118), "{plen}");
            assert_eq!(out[MESSAGE_AT + 32 + 2], plen);
        }
        assert_eq!(out[MESSAGE_AT + 48..MESSAGE_AT + 64], prefix.octets());
        assert_eq!(
            write_ra(
                &mut out,
                Addrs {
                    eth_src: GW_MAC,
                    eth_dst: HOST_MAC,
                    ip_src: gw_ll(),
                    ip_dst: host()
                },
                prefix,
                129,
                true,
                1500,
                0
            ),
            None
        );
        assert_eq!(
            write_ra(
                &mut out[..117],
                Addrs {
                    eth_src: GW_MAC,
                    eth_dst: HOST_MAC,
                    ip_src: gw_ll(),
                    ip_dst: host()
                },
                prefix,
                64,
                true,
                1,
                0
            ),
            None
        );
    }

    #[test]
    fn errors_quote_up_to_the_minimum_mtu() {
        let offending: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
        let mut out = vec![0u8; EthFrame::HEADER_LEN + ipv6::MIN_MTU];
        for (t, code, param, quoted) in [
            (msg_type::PACKET_TOO_BIG, 0, 1400, &offending[..]),
            (msg_type::DEST_UNREACH, 4, 0, &offending[..100]),
            (msg_type::TIME_EXCEEDED, 0, 0, &offending[..MAX_QUOTE]),
            (msg_type::PARAM_PROBLEM, 1, 40, &offending[..MAX_QUOTE + 1]),
            (msg_type::DEST_UNREACH, 1, 0, &[][..]),
        ] {
            let n = write_error(
                &mut out,
                Addrs {
                    eth_src: GW_MAC,
                    eth_dst: HOST_MAC,
                    ip_src: gw_ll(),
                    ip_dst: host(),
                },
                t,
                code,
                param,
                quoted,
            )
            .unwrap();
            let q = quoted.len().min(MAX_QUOTE);
            assert_eq!(n, MESSAGE_AT + 8 + q);
            assert!(n - EthFrame::HEADER_LEN <= ipv6::MIN_MTU);
            let f = &out[..n];
            assert!(verifies(f));
            let (ip, msg) = parsed(f);
            assert_eq!(ip.hop_limit, 64);
            assert_eq!((msg[0], msg[1]), (t, code));
            assert_eq!(u32::from_be_bytes(msg[4..8].try_into().unwrap()), param);
            assert_eq!(&msg[8..], &quoted[..q]);
            assert_eq!(parse_nd(msg, 255), Err(NdError::NotNd));
        }
        // Packet too big, checked by an independent parser (it wants a quoted IPv6 header).
        let inner = crate::ipv6::test::packet(&[], (next_header::UDP, &[0; 1452]));
        let n = write_error(
            &mut out,
            Addrs {
                eth_src: GW_MAC,
                eth_dst: HOST_MAC,
                ip_src: gw_ll(),
                ip_dst: host(),
            },
            msg_type::PACKET_TOO_BIG,
            0,
            1400,
            &inner,
        )
        .unwrap();
        assert_eq!(n - EthFrame::HEADER_LEN, ipv6::MIN_MTU);
        let (ip, msg) = parsed(&out[..n]);
        match oracle(&ip, msg) {
            Icmpv6Repr::PktTooBig { mtu, header, data } => {
                assert_eq!(mtu, 1400);
                assert_eq!(header.payload_len, 1452);
                assert_eq!(data.len(), MAX_QUOTE - 40);
            }
            r => panic!("{r:?}"),
        }
        for len in [0, 61, 62 + 99] {
            let mut o = vec![0u8; len];
            let r = write_error(
                &mut o,
                Addrs {
                    eth_src: GW_MAC,
                    eth_dst: HOST_MAC,
                    ip_src: gw_ll(),
                    ip_dst: host(),
                },
                1,
                0,
                0,
                &offending[..100],
            );
            assert_eq!(r, None, "{len}");
        }
    }

    /// A real echo request (`ping -6 -c 1 -s 16 ::1`, captured on `lo`): the checksum the
    /// kernel computed is what ours computes, and verifies with ours.
    const KERNEL_ECHO: &str = "00000000000000000000000086dd6005ad3300183a40\
        00000000000000000000000000000001000000000000000000000000000000018000c80e30070001fae010\
        6b0000000070480c0000000000";

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn kernel_echo_request_checksum() {
        let f = unhex(KERNEL_ECHO);
        assert_eq!(f.len(), 78);
        assert!(verifies(&f));
        let (ip, msg) = parsed(&f);
        assert_eq!((ip.src, ip.dst), (Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST));
        assert_eq!(
            ip.l4,
            L4::Icmp {
                msg_type: msg_type::ECHO_REQUEST,
                code: 0,
                ident: 0x3007
            }
        );
        assert_eq!(checksum_pseudo6(ip.src, ip.dst, 58, msg), 0);
        let mut m = msg.to_vec();
        crate::l4::fill_checksum6(ip.src, ip.dst, 58, &mut m);
        assert_eq!(m, msg);
        assert_eq!(u16::from_be_bytes([m[2], m[3]]), 0xc80e);
    }

    #[test]
    fn hand_made_echo_request_checksum() {
        // fe80::1 -> fe80::2, echo request id 0x1234 seq 1, data "abcd"; checksum worked out by
        // hand: address words fe80+0001+fe80+0002 = 0x1fd03, length 0x0c, next header 0x3a,
        // message 8000+0000+1234+0001+6162+6364 = 0x156fb; total 0x35444 -> 0x5447 -> !0xabb8.
        let f = unhex(
            "02420000000202420000000186dd 6000000000 0c3a40
             fe800000000000000000000000000001 fe800000000000000000000000000002
             8000 abb8 1234 0001 61626364",
        );
        assert!(verifies(&f));
        let (ip, msg) = parsed(&f);
        assert_eq!(checksum_pseudo6(ip.src, ip.dst, 58, msg), 0);
        let mut m = msg.to_vec();
        m[2..4].copy_from_slice(&[0, 0]);
        crate::l4::fill_checksum6(ip.src, ip.dst, 58, &mut m);
        assert_eq!(m, msg);
        assert_eq!(ip.ports(), Some((0x1234, 0x1234)));
    }

    /// An ND message with hop limit 255 and valid checksum is not needed for these: the parse
    /// looks at the message alone.
    fn ns_message() -> Vec<u8> {
        let mut out = [0u8; 86];
        let n = write_ns(&mut out, GW_MAC, gw_ll(), host()).unwrap();
        out[MESSAGE_AT..n].to_vec()
    }

    #[test]
    fn nd_validity_rules() {
        let ns = ns_message();
        assert!(parse_nd(&ns, 255).is_ok());
        assert_eq!(parse_nd(&ns, 254), Err(NdError::HopLimit));
        assert_eq!(parse_nd(&ns, 64), Err(NdError::HopLimit));
        let mut m = ns.clone();
        m[1] = 1;
        assert_eq!(parse_nd(&m, 255), Err(NdError::Code));
        // Every cut: too short inside the fixed part, an option overrun inside the option.
        for n in 0..ns.len() {
            let r = parse_nd(&ns[..n], 255).map(|nd| nd.source_mac);
            let want = match n {
                0..=23 => Err(NdError::TooShort),
                24 => Ok(None),
                _ => Err(NdError::OptionOverrun),
            };
            assert_eq!(r, want, "{n}");
        }
        // Zero-length option, option running past the end.
        let mut m = ns.clone();
        m[25] = 0;
        assert_eq!(parse_nd(&m, 255), Err(NdError::ZeroLengthOption));
        let mut m = ns.clone();
        m[25] = 2;
        assert_eq!(parse_nd(&m, 255), Err(NdError::OptionOverrun));
        let mut m = ns.clone();
        m.extend_from_slice(&[opt::MTU, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_nd(&m, 255), Err(NdError::ZeroLengthOption));
        let mut m = ns.clone();
        m.push(1);
        assert_eq!(parse_nd(&m, 255), Err(NdError::OptionOverrun));
        // An unknown option and a longer link-layer option (not a MAC) are skipped.
        let mut m = ns[..24].to_vec();
        m.extend_from_slice(&[99, 1, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&[opt::SOURCE_LL, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&ns[24..]);
        let nd = parse_nd(&m, 255).unwrap();
        assert_eq!(nd.source_mac, Some(GW_MAC));
        // A multicast target.
        let mut m = ns.clone();
        m[8..24].copy_from_slice(&"ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(parse_nd(&m, 255), Err(NdError::MulticastTarget));
        m[0] = msg_type::NEIGHBOR_ADVERT;
        assert_eq!(parse_nd(&m, 255), Err(NdError::MulticastTarget));
        // Not ND at all.
        assert_eq!(
            parse_nd(&[128, 0, 0, 0, 0, 0, 0, 0], 255),
            Err(NdError::NotNd)
        );
        assert_eq!(parse_nd(&[], 255), Err(NdError::TooShort));
        // Minimum lengths per type.
        for (t, min) in [(133u8, 8usize), (134, 16), (135, 24), (136, 24), (137, 40)] {
            let mut m = vec![0u8; min];
            m[0] = t;
            assert!(parse_nd(&m, 255).is_ok(), "{t}");
            assert_eq!(parse_nd(&m[..min - 1], 255), Err(NdError::TooShort), "{t}");
        }
        // A redirect to a multicast destination.
        let mut r = vec![0u8; 40];
        r[0] = msg_type::REDIRECT;
        r[24] = 0xff;
        assert_eq!(parse_nd(&r, 255), Err(NdError::MulticastDestination));
        r[24] = 0x20;
        let nd = parse_nd(&r, 255).unwrap();
        assert_eq!(nd.target, Some(Ipv6Addr::UNSPECIFIED));
        assert_eq!(
            nd.check_ip(host(), gw_ll()),
            Err(NdError::SourceNotLinkLocal)
        );
        assert_eq!(nd.check_ip(gw_ll(), host()), Ok(()));
    }

    #[test]
    fn nd_rules_on_the_ip_addresses() {
        let un = Ipv6Addr::UNSPECIFIED;
        let ns = parse_nd(&ns_message(), 255).unwrap();
        assert_eq!(
            ns.check_ip(un, solicited_node(host())),
            Err(NdError::UnspecifiedWithSourceOption)
        );
        let probe = Nd {
            source_mac: None,
            ..ns
        };
        assert_eq!(probe.check_ip(un, solicited_node(host())), Ok(()));
        assert_eq!(probe.check_ip(un, host()), Err(NdError::NotSolicitedNode));
        assert_eq!(ns.check_ip(gw_ll(), host()), Ok(())); // unicast NS (reachability)
        let rs = parse_nd(&[133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1], 255).unwrap();
        assert_eq!(rs.source_mac, Some(MacAddr([2, 0, 0, 0, 0, 1])));
        assert_eq!(
            rs.check_ip(un, "ff02::2".parse().unwrap()),
            Err(NdError::UnspecifiedWithSourceOption)
        );
        let na = Nd {
            kind: NdKind::Na,
            solicited: true,
            ..ns
        };
        assert_eq!(
            na.check_ip(gw_ll(), "ff02::1".parse().unwrap()),
            Err(NdError::SolicitedToMulticast)
        );
        let ra = Nd {
            kind: NdKind::Ra,
            ..ns
        };
        assert_eq!(
            ra.check_ip(host(), host()),
            Err(NdError::SourceNotLinkLocal)
        );
    }

    #[test]
    fn no_prefix_or_byte_flip_of_any_built_frame_panics() {
        let mut frames = Vec::new();
        let mut out = [0u8; 1400];
        let n = write_na(
            &mut out,
            Addrs {
                eth_src: GW_MAC,
                eth_dst: HOST_MAC,
                ip_src: gw_ll(),
                ip_dst: host(),
            },
            gw_ll(),
            GW_MAC,
            true,
            false,
        );
        frames.push(out[..n.unwrap()].to_vec());
        let n = write_ns(&mut out, GW_MAC, gw_ll(), host());
        frames.push(out[..n.unwrap()].to_vec());
        let p = "2001:db8::".parse().unwrap();
        let n = write_ra(
            &mut out,
            Addrs {
                eth_src: GW_MAC,
                eth_dst: HOST_MAC,
                ip_src: gw_ll(),
                ip_dst: host(),
            },
            p,
            64,
            true,
            1500,
            600,
        );
        frames.push(out[..n.unwrap()].to_vec());
        let n = write_error(
            &mut out,
            Addrs {
                eth_src: GW_MAC,
                eth_dst: HOST_MAC,
                ip_src: gw_ll(),
                ip_dst: host(),
            },
            3,
            0,
            0,
            &frames[0][14..],
        );
        frames.push(out[..n.unwrap()].to_vec());
        frames.push(unhex(KERNEL_ECHO));
        for f in &frames {
            for n in 0..=f.len() {
                let _ = Parsed::parse(&f[..n]);
                let _ = crate::ipv6::upper_layer(f.get(14..n).unwrap_or_default());
                let _ = parse_nd(f.get(MESSAGE_AT..n).unwrap_or_default(), 255);
            }
            for at in 0..f.len() {
                for v in [0u8, 1, 8, 0x3a, 0x80, 0xff] {
                    let mut g = f.clone();
                    g[at] = v;
                    let _ = Parsed::parse(&g);
                    let _ = parse_nd(&g[MESSAGE_AT..], 255);
                }
            }
        }
    }
}
