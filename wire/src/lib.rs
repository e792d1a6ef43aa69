//! vswitch's wire layer: every protocol header the switch reads or writes, as checked zero-copy
//! views in smoltcp's style, and the one checksum module. Used by `switch`, `nat` and `overlay`;
//! nothing outside this crate reads a header through a raw offset.
//!
//! A view (`Ipv4Packet<T>`, `TcpHeader<T>`, ...) wraps a byte buffer. `new_checked` verifies the
//! lengths once (and the fields that give lengths); after that no accessor can panic. Setters
//! exist only where the buffer is mutable (`T: AsMut<[u8]>`). Small fixed headers the switch
//! writes from scratch have a `Repr`-like writer beside their view ([`ipv4::Ipv4Header`]).
//!
//! - [`checksum`]: RFC 1071 sums, IPv4 and IPv6 pseudo-headers, RFC 1624 incremental updates,
//!   completing a partial checksum;
//! - [`ethernet`]: [`MacAddr`], [`EtherType`], [`EthFrame`] (the one Ethernet parse per frame);
//! - [`arp`]: Ethernet/IPv4 ARP: parse, reply in place, request;
//! - [`ipv4`]: the IPv4 view and header writer, protocol numbers;
//! - [`ipv6`]: the IPv6 view and header writer, next-header numbers, the walk over extension
//!   headers to the upper layer;
//! - [`l4`]: TCP, UDP and ICMP views, TCP flag bits, filling checksums under IPv4 and IPv6;
//! - [`icmpv6`]: ICMPv6 message types, the addresses IPv6 derives (solicited-node, multicast
//!   MAC, EUI-64), neighbour discovery: parse with RFC 4861's checks, NA/NS/RA and error
//!   builders;
//! - [`parsed`]: the one parse of a frame into a `Copy` summary every stage reads;
//! - [`vnet`]: the virtio-net header carried with every frame (offload metadata);
//! - [`vxlan`]: the VXLAN header and the outer IPv4/UDP headers in front of it.

#![forbid(unsafe_code)]

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod l4;
pub mod parsed;
pub mod vnet;
pub mod vxlan;

pub use ethernet::{EthFrame, EtherType, MacAddr, MacParseError};
pub use parsed::{Ip4, Ip6, Parsed, L3, L4};
pub use vnet::VirtioNetHdr;

/// Text from a client or the wire, made fit for a one-line message: control characters (a
/// newline, an escape sequence) are shown escaped.
pub fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Big-endian 16-bit word at `at`; the caller has checked the length.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Big-endian 32-bit word at `at`; the caller has checked the length.
#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Store a big-endian 16-bit word at `at`; the caller has checked the length.
#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
