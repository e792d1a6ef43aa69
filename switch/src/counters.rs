//! Named counters. Every drop on the datapath has a reason ([`Drop`]), and notable non-drop
//! events have one too ([`Event`]). Each worker owns one [`WorkerCounters`] (single writer, no
//! shared cache lines between workers); readers sum them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vm])* $v,)* }
        impl $name {
            /// Every variant, in order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// The counter's name as shown by `vswitchctl stats`.
            pub fn name(self) -> &'static str { match self { $($name::$v => $s,)* } }
        }
    };
}

named_enum!(
    /// Why a frame was dropped.
    Drop {
        /// Runt, truncated or inconsistent headers, invalid source MAC.
        Malformed => "malformed",
        /// Addressed to the gateway for a destination the switch cannot route.
        NoRoute => "no_route",
        /// Broadcast/unknown-unicast flooding over the per-port rate limit.
        FloodLimited => "flood_limited",
        /// A capture session's buffer was full (the frame itself was still forwarded).
        CaptureDropped => "capture_dropped",
        /// Unicast whose destination is on the port it came from.
        SamePort => "same_port",
        /// The destination port's device refused the write.
        TxError => "tx_error",
        /// IPv4 fragments addressed to the gateway (not reassembled).
        Fragment => "fragment",
        /// The forwarding table is full; the source was not learned (frame still forwarded).
        FdbFull => "fdb_full",
        /// Refused by network policy: between isolated networks, `--internal` egress,
        /// `--icc=false` endpoint-to-endpoint traffic.
        Policy => "policy",
        /// TTL expired while routing.
        Ttl => "ttl",
        /// The connection table is full of assured connections (half-open and unanswered ones
        /// make room for new flows), or no translated port was free.
        ConntrackFull => "conntrack_full",
        /// No MAC for the next hop: ARP unanswered within a second, or the queue was full.
        ArpTimeout => "arp_timeout",
        /// A routed protocol the translator does not handle (not TCP, UDP or ICMP).
        Unsupported => "unsupported",
        /// Larger than the overlay network's MTU (or a super-frame) at encapsulation.
        Oversize => "oversize",
        /// VXLAN packet for a VNI no network here has.
        VxlanUnknownVni => "vxlan_unknown_vni",
        /// VXLAN packet from an address that is not a peer of the network.
        VxlanUnknownPeer => "vxlan_unknown_peer",
        /// An endpoint sent from a MAC or IP address that is not its own, or ARP or an IPv6
        /// neighbour advertisement claiming one.
        Spoofed => "spoofed",
        /// An IPv6 router advertisement or redirect from an endpoint (only the gateway is a
        /// router; `--allow-spoof` endpoints may send them).
        RogueRouter => "rogue_router",
        /// No MAC for an IPv6 destination of a linked network (no endpoint has the address).
        NeighborUnknown => "neighbor_unknown",
    }
);

named_enum!(
    /// Events worth counting that are not drops.
    Event {
        /// Frames flooded to every port of their network.
        Flooded => "flooded",
        /// ARP requests answered by the switch for a known endpoint.
        ArpSuppressed => "arp_suppressed",
        /// ARP requests for the gateway answered.
        ArpGateway => "arp_gateway",
        /// ICMP echo requests to the gateway answered.
        IcmpGateway => "icmp_gateway",
        /// MAC addresses learned for the first time.
        Learned => "fdb_learned",
        /// MAC addresses that moved to another port.
        Moved => "fdb_moved",
        /// IPv4 packets routed by the gateway.
        Routed => "routed",
        /// Masquerade flows created.
        SnatFlows => "snat_flows",
        /// Published-port flows created.
        DnatFlows => "dnat_flows",
        /// Frames seen on the uplink that were not for the switch (ignored).
        UplinkOther => "uplink_other",
        /// ARP requests the switch sent on the uplink.
        ArpRequests => "arp_requests",
        /// DNS queries the gateway answered itself.
        DnsAnswered => "dns_answered",
        /// DNS queries forwarded to the upstream resolver.
        DnsForwarded => "dns_forwarded",
        /// MLDv2 membership reports (to ff02::16, which only multicast routers read) kept off
        /// the other ports: no network has a multicast router, and a kernel bridge with its
        /// default multicast snooping sends them only to router ports too.
        MldAbsorbed => "mld_absorbed",
        /// IPv6 neighbour solicitations for the gateway answered.
        NdGateway => "nd_gateway",
        /// IPv6 neighbour solicitations answered by the switch for a known endpoint.
        NdSuppressed => "nd_suppressed",
        /// IPv6 router solicitations answered with a router advertisement.
        RouterAdverts => "router_adverts",
        /// ICMPv6 errors the gateway sent (hop limit exceeded, unreachable, packet too big).
        Icmp6Errors => "icmp6_errors",
        /// ICMPv6 errors not sent: more than the rate allows (1000 a second).
        Icmp6RateLimited => "icmp6_rate_limited",
    }
);

/// One worker's counters.
#[derive(Debug)]
pub struct WorkerCounters {
    drops: Vec<AtomicU64>,
    events: Vec<AtomicU64>,
    /// Nanoseconds spent handling frames (from a wake-up with work to the end of its batch).
    busy_ns: AtomicU64,
    /// The worker's index: the TAP queue it reads and writes.
    pub queue: usize,
}

impl Default for WorkerCounters {
    fn default() -> Self {
        WorkerCounters::for_worker(0)
    }
}

impl WorkerCounters {
    /// Counters of worker `i` (which uses queue `i` of multi-queue TAPs).
    pub fn for_worker(i: usize) -> WorkerCounters {
        WorkerCounters {
            drops: Drop::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            events: Event::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            busy_ns: AtomicU64::new(0),
            queue: i,
        }
    }

    /// Count one drop. // HOT PATH (single writer: a plain load+store, no locked RMW)
    #[inline]
    pub fn drop(&self, reason: Drop) {
        bump(&self.drops[reason as usize]);
    }

    /// Count one event.
    #[inline]
    pub fn event(&self, ev: Event) {
        bump(&self.events[ev as usize]);
    }

    /// Count `ns` nanoseconds of work (the worker's own thread only).
    pub fn add_busy(&self, ns: u64) {
        self.busy_ns.store(
            self.busy_ns.load(Ordering::Relaxed).wrapping_add(ns),
            Ordering::Relaxed,
        );
    }

    /// Nanoseconds this worker spent handling frames.
    pub fn busy_ns(&self) -> u64 {
        self.busy_ns.load(Ordering::Relaxed)
    }

    /// Add these counters into `drops` and `events`, keyed by name.
    pub fn sum_into(&self, drops: &mut BTreeMap<String, u64>, events: &mut BTreeMap<String, u64>) {
        for d in Drop::ALL {
            *drops.entry(d.name().to_string()).or_default() +=
                self.drops[*d as usize].load(Ordering::Relaxed);
        }
        for e in Event::ALL {
            *events.entry(e.name().to_string()).or_default() +=
                self.events[*e as usize].load(Ordering::Relaxed);
        }
    }
}

/// Increment a counter that has exactly one writing thread.
#[inline]
pub fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// Add to a counter that may have several writing threads.
#[inline]
pub fn add_shared(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
