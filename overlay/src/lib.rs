//! VXLAN (RFC 7348) for vswitch overlay networks: header encode/decode, VTEP peers and remote
//! FDB. Pure over bytes (no sockets, no threads); filled in by the overlay issue. This crate fixes
//! the place in the dependency graph: `switch -> overlay`.

#![forbid(unsafe_code)]

/// The IANA-assigned VXLAN UDP port (RFC 7348 section 5).
pub const VXLAN_PORT: u16 = 4789;
/// Bytes VXLAN adds over IPv4: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
pub const VXLAN_OVERHEAD_V4: u32 = 50;
