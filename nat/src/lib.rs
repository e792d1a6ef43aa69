//! Connection tracking and address translation as pure functions over packet bytes: bytes and
//! time in, verdict out. No sockets, no threads: everything here is unit-testable and fuzzable.
//!
//! - [`packet`]: the 5-tuple of an IPv4 TCP/UDP/ICMP-echo packet and its in-place rewrite with
//!   incremental checksum updates (RFC 1624); [`packet6`] the same for IPv6 (NAT66);
//! - [`conntrack`]: the flow table (one per address family, generic over [`packet::Addr`]) (both directions indexed), the TCP state machine, timeouts,
//!   source-port allocation and the table limit;
//! - [`verdict`]: what a routed packet becomes (a tracked flow's rewrite, a new masquerade,
//!   published-port or hairpin flow, plain routing, or a refusal), given the switch's topology.

#![forbid(unsafe_code)]

pub mod conntrack;
pub mod packet;
pub mod packet6;
pub mod verdict;

pub use conntrack::{Conntrack, Flow, FlowDir, NatKind, SavedFlow, Timeouts};
pub use packet::{Addr, FiveTuple, L4Info, Proto};
