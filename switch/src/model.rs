//! The control-plane data model: serde types shared by the daemon's HTTP/JSON API and the
//! `vswitchctl` client. Every field is documented because these are the wire format of the API.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// `POST /v1/networks`: create a network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkCreate {
    /// Network name: 1-64 characters of `[A-Za-z0-9_.-]`, not starting with `-` or `.`.
    pub name: String,
    /// IPv4 subnet in CIDR form, e.g. `172.20.0.0/24` (prefix length 8..=30).
    pub subnet: String,
    /// Gateway address inside the subnet; defaults to the first host address.
    #[serde(default)]
    pub gateway: Option<String>,
    /// IPv6 subnet in CIDR form, e.g. `fd00:20::/64` (prefix length 16..=120): the network
    /// is dual stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    /// IPv6 gateway address inside `subnet6`; defaults to its first host address (`::1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// MTU given to every endpoint of this network (68-65535); defaults to 1500, and for an
    /// overlay network to the underlay interface's MTU less the 50 bytes VXLAN adds.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// No egress through the uplink (Docker's `--internal`).
    #[serde(default)]
    pub internal: bool,
    /// Whether endpoints may reach each other (Docker's `icc`); defaults to true.
    #[serde(default)]
    pub icc: Option<bool>,
    /// VXLAN network identifier: makes this an overlay network spanning hosts.
    #[serde(default)]
    pub vni: Option<u32>,
    /// Peer VTEP addresses (overlay networks).
    #[serde(default)]
    pub peers: Vec<String>,
    /// VXLAN UDP port (default 4789).
    #[serde(default)]
    pub vxlan_port: Option<u16>,
    /// An overlay network whose VNI the cluster allocates (cluster mode; without `vni`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overlay: bool,
    /// Set by the daemon, not by clients: the network is (or was) in the cluster's etcd, so
    /// its absence there means another node removed it. Saved with the network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster: bool,
}

impl NetworkCreate {
    /// A plain network: `name` on `subnet`, every other setting at its default.
    pub fn flat(name: &str, subnet: &str) -> NetworkCreate {
        NetworkCreate {
            name: name.into(),
            subnet: subnet.into(),
            gateway: None,
            subnet6: None,
            gateway6: None,
            mtu: None,
            internal: false,
            icc: None,
            vni: None,
            peers: vec![],
            vxlan_port: None,
            overlay: false,
            cluster: false,
        }
    }
}

/// A network as reported by `network ls` and `network inspect`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Network name.
    pub name: String,
    /// Subnet in CIDR form.
    pub subnet: String,
    /// Gateway address (answered by the switch itself).
    pub gateway: Ipv4Addr,
    /// IPv6 subnet (dual-stack networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    /// IPv6 gateway address (dual-stack networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    /// Gateway MAC address, derived from the network name.
    pub gateway_mac: String,
    /// Endpoint MTU.
    pub mtu: u32,
    /// No egress through the uplink.
    pub internal: bool,
    /// Endpoints may reach each other.
    pub icc: bool,
    /// Networks routed to without NAT (`network link`).
    pub links: Vec<String>,
    /// VXLAN network identifier (overlay networks).
    pub vni: Option<u32>,
    /// Peer VTEPs (overlay networks).
    pub peers: Vec<std::net::IpAddr>,
    /// VXLAN UDP port (overlay networks).
    pub vxlan_port: Option<u16>,
    /// Endpoints attached to this network.
    pub endpoints: Vec<EndpointInfo>,
    /// Ports published from endpoints of this network.
    pub published: Vec<PublishInfo>,
    /// Cluster mode: the network's endpoints on the other live nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_endpoints: Vec<RemoteEndpointInfo>,
}

/// Cluster mode: an endpoint on another node, from the cluster's directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteEndpointInfo {
    /// The node it is on.
    pub node: String,
    /// Its namespace there.
    pub netns: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: String,
    /// The names the gateways answer with its address.
    pub names: Vec<String>,
    /// The node's VTEP.
    pub vtep: std::net::IpAddr,
    /// Its IPv6 address (a dual-stack network: its IPv4 address in the prefix's last 32 bits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
}

/// `POST /v1/networks/{name}/links`: route between two networks without NAT.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// The other network.
    pub peer: String,
}

/// `PUT /v1/uplink`: take a host interface as the uplink.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UplinkSet {
    /// Host interface (for example one end of a veth pair).
    pub iface: String,
    /// The address the switch owns on it, with prefix length: `192.168.50.2/24`.
    pub ip: String,
    /// Next hop for destinations outside that subnet.
    #[serde(default)]
    pub gateway: Option<String>,
    /// The IPv6 address the switch owns on it, with prefix length: `2001:db8:50::2/64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    /// IPv6 next hop for destinations outside that prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// IPv6 is routed, not translated: the networks' IPv6 prefixes are reachable from outside
    /// (the operator routes them to `ip6`). Without it, IPv6 egress is masqueraded to `ip6`
    /// (NAT66), as IPv4 is to `ip`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6_routed: bool,
}

impl UplinkSet {
    /// Take `iface` with IPv4 address `ip` (with prefix length), no gateway, no IPv6.
    pub fn v4(iface: &str, ip: &str, gateway: Option<&str>) -> UplinkSet {
        UplinkSet {
            iface: iface.into(),
            ip: ip.into(),
            gateway: gateway.map(Into::into),
            ip6: None,
            gateway6: None,
            ipv6_routed: false,
        }
    }
}

/// A resolved next hop on the uplink.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NeighInfo {
    /// Address (IPv4, or IPv6 on an uplink with an IPv6 address).
    pub ip: std::net::IpAddr,
    /// MAC address.
    pub mac: String,
    /// Seconds since it was last confirmed by ARP.
    pub age_secs: u64,
}

/// `GET /v1/uplink`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UplinkInfo {
    /// Host interface.
    pub iface: String,
    /// The switch's address on it.
    pub ip: Ipv4Addr,
    /// Prefix length of the uplink subnet.
    pub prefix_len: u8,
    /// Next hop for other destinations.
    pub gateway: Option<Ipv4Addr>,
    /// The switch's IPv6 address on it (routed IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    /// Prefix length of the uplink's IPv6 prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix6_len: Option<u8>,
    /// IPv6 next hop for other destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    /// IPv6 is routed untranslated (`--ipv6-routed`); otherwise masqueraded (NAT66).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6_routed: bool,
    /// The switch's MAC on the uplink (not the interface's own).
    pub mac: String,
    /// Switch port name.
    pub port: String,
    /// The neighbour cache.
    pub neighbours: Vec<NeighInfo>,
    /// `up`, or `down` (its interface is missing: see `reason`; it comes back by itself when
    /// an interface of that name appears).
    #[serde(default = "up")]
    pub state: String,
    /// Why the uplink is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/publish`: publish an endpoint's port on the uplink address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// Namespace of the endpoint.
    pub netns: String,
    /// `[IP:][HOSTPORT:]CTRPORT[/tcp|/udp]` as Docker's `-p` takes it.
    pub spec: String,
    /// Which of the namespace's networks (default: the first it was attached to).
    #[serde(default)]
    pub network: Option<String>,
}

/// `DELETE /v1/publish`: remove a published port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UnpublishRequest {
    /// Namespace of the endpoint.
    pub netns: String,
    /// `[IP:]HOSTPORT[/tcp|/udp]`.
    pub spec: String,
}

/// A published port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishInfo {
    /// Namespace of the endpoint.
    pub netns: String,
    /// Network of the endpoint.
    pub network: String,
    /// `tcp` or `udp`.
    pub proto: String,
    /// The uplink-side address as given (`0.0.0.0`: IPv4 only, `::`: IPv6 only), when one was.
    pub ip: Option<std::net::IpAddr>,
    /// The uplink-side port.
    pub host_port: u16,
    /// The endpoint's address.
    pub endpoint_ip: Ipv4Addr,
    /// The endpoint's IPv6 address, when the port is published over IPv6 too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_ip6: Option<std::net::Ipv6Addr>,
    /// The endpoint's port.
    pub endpoint_port: u16,
}

/// One tracked connection, as `conntrack ls` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConntrackEntry {
    /// `tcp`, `udp` or `icmp`.
    pub proto: String,
    /// `snat`, `dnat` or `hairpin`.
    pub kind: String,
    /// The endpoint side's network.
    pub network: String,
    /// The first packet's addresses, as it arrived.
    pub orig: String,
    /// The answers' addresses, as they arrive.
    pub reply: String,
    /// TCP state, or REPLIED/UNREPLIED.
    pub state: String,
    /// Seconds until the entry expires without traffic.
    pub expires_secs: u64,
}

/// The answer of `DELETE /v1/conntrack`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlushInfo {
    /// Entries removed.
    pub flushed: usize,
}

/// `POST /v1/endpoints`: attach a namespace to a network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    /// Namespace name, as in `/run/netns/NAME` (`ip netns add NAME`).
    pub netns: String,
    /// Network name.
    pub network: String,
    /// Address inside the network's subnet; defaults to the next free one.
    #[serde(default)]
    pub ip: Option<String>,
    /// IPv6 address inside the network's IPv6 subnet (dual-stack networks); defaults to the
    /// next free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    /// MAC address; defaults to `02:42:` followed by the four bytes of the IP.
    #[serde(default)]
    pub mac: Option<String>,
    /// Interface name inside the namespace; defaults to the first free of eth0, eth1, ...
    #[serde(default)]
    pub ifname: Option<String>,
    /// Further names the gateway's DNS answers with this endpoint's address.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Let the endpoint send from other MAC/IP addresses (a router in a namespace); by default
    /// frames from any source but the endpoint's own are dropped and counted (`spoofed`).
    #[serde(default)]
    pub allow_spoof: bool,
    /// Make the device in vswitchd's own namespace with its MAC and MTU but no address, route
    /// or carrier, for a runtime that moves it into `netns` and configures it itself (Docker's
    /// plugin). Not saved: a restore makes the device inside the namespace as usual.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handoff: bool,
}

impl AttachRequest {
    /// Attach `netns` to `network` with every option at its default.
    pub fn new(netns: &str, network: &str) -> AttachRequest {
        AttachRequest {
            netns: netns.into(),
            network: network.into(),
            ip: None,
            ip6: None,
            mac: None,
            ifname: None,
            aliases: vec![],
            allow_spoof: false,
            handoff: false,
        }
    }
}

/// An endpoint: one namespace's interface on one network, backed by one switch port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Namespace name.
    pub netns: String,
    /// Network name.
    pub network: String,
    /// Interface name inside the namespace.
    pub ifname: String,
    /// Switch port name (`p1`, `p2`, ...), usable as a capture target.
    pub port: String,
    /// Endpoint address.
    pub ip: Ipv4Addr,
    /// Prefix length of the network's subnet.
    pub prefix_len: u8,
    /// Endpoint IPv6 address (dual-stack networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    /// Endpoint MAC address.
    pub mac: String,
    /// Endpoint MTU.
    pub mtu: u32,
    /// DNS aliases (the namespace name always resolves).
    pub aliases: Vec<String>,
    /// Anti-spoofing is off for this endpoint.
    pub allow_spoof: bool,
    /// `up`, or `pending` (no device yet: see `reason`; it is retried until it is up or
    /// detached).
    #[serde(default = "up")]
    pub state: String,
    /// Why a pending endpoint has no device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn up() -> String {
    "up".into()
}

/// Per-port counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortCounters {
    /// Frames received from the port.
    pub rx_packets: u64,
    /// Bytes received from the port (Ethernet frame bytes).
    pub rx_bytes: u64,
    /// Frames sent to the port.
    pub tx_packets: u64,
    /// Bytes sent to the port.
    pub tx_bytes: u64,
    /// Frames that could not be written to the port (device queue full or gone).
    pub tx_dropped: u64,
}

/// A switch port as reported by `ports`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortInfo {
    /// Port name (`p1`, `p2`, ...).
    pub name: String,
    /// Kind of port: `tap` for namespace endpoints.
    pub kind: String,
    /// Namespace the port's device lives in.
    pub netns: String,
    /// Device name inside that namespace.
    pub ifname: String,
    /// Network the port belongs to.
    pub network: String,
    /// Endpoint MAC address.
    pub mac: String,
    /// Endpoint address.
    pub ip: Ipv4Addr,
    /// Endpoint IPv6 address (dual-stack networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    /// Index of the worker thread serving the port's receive queue.
    pub worker: usize,
    /// Ports published from this endpoint, as `[IP:]HOSTPORT->CTRPORT/PROTO`.
    pub published: Vec<String>,
    /// Counters.
    pub counters: PortCounters,
    /// `up`; `pending` for an endpoint without a device yet, `down` for an uplink whose
    /// interface is missing (see `reason`).
    #[serde(default = "up")]
    pub state: String,
    /// Why the port is pending or down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One learned MAC address, as reported by `fdb`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FdbEntryInfo {
    /// Network the entry belongs to.
    pub network: String,
    /// Learned MAC address.
    pub mac: String,
    /// Port it was learned on.
    pub port: String,
    /// Seconds since a frame from this MAC was last seen.
    pub age_secs: u64,
    /// For remote entries of overlay networks: the VTEP the MAC lives behind.
    pub vtep: Option<std::net::IpAddr>,
}

/// `POST /v1/networks/{name}/peers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerRequest {
    /// Peer VTEP address.
    pub ip: String,
}

/// `POST /v1/fdb`: a static remote entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FdbAdd {
    /// Overlay network.
    pub network: String,
    /// MAC address.
    pub mac: String,
    /// The VTEP it lives behind.
    pub vtep: String,
}

/// `GET /v1/stats`: per-port counters and the named drop counters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatsInfo {
    /// Every port with its counters.
    pub ports: Vec<PortInfo>,
    /// Named drop counters, summed over all workers (`malformed`, `no_route`, ...).
    pub drops: BTreeMap<String, u64>,
    /// Named event counters that are not drops (`flooded`, `arp_suppressed`, ...).
    pub events: BTreeMap<String, u64>,
}

/// What `GET /metrics` renders (Prometheus' text format): the counters of `stats` and the
/// tables' sizes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MetricsInfo {
    /// The daemon's version.
    pub version: String,
    /// Ports, drops and events, as `stats` has them.
    pub stats: StatsInfo,
    /// Per network: endpoints and table sizes.
    pub networks: Vec<NetworkMetrics>,
    /// Most MACs one network's FDB holds (`--fdb-limit`).
    pub fdb_limit: u64,
    /// Tracked connections by family (`ipv4`, `ipv6`) and state.
    pub conntrack: Vec<ConntrackCount>,
    /// Most connections one family's table holds (`--ct-max`).
    pub conntrack_limit: u64,
    /// Next hops the uplink has resolved (ARP and neighbour discovery).
    pub uplink_neighbours: u64,
    /// Capture sessions open.
    pub capture_sessions: u64,
    /// Per worker: nanoseconds spent handling frames.
    pub worker_busy_ns: Vec<u64>,
}

/// One network's share of [`MetricsInfo`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkMetrics {
    /// The network.
    pub network: String,
    /// Endpoints attached here (up or pending).
    pub endpoints: u64,
    /// Learned local MACs.
    pub fdb_entries: u64,
    /// MACs behind peer VTEPs (overlay networks).
    pub remote_entries: u64,
    /// IPv4 neighbours the gateway knows (ARP table).
    pub neighbours: u64,
    /// IPv6 neighbours learned from neighbour discovery.
    pub neighbours6: u64,
}

/// Tracked connections of one family in one state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConntrackCount {
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// TCP state, or `REPLIED`/`UNREPLIED` for UDP and ICMP.
    pub state: String,
    /// How many.
    pub count: u64,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// One line naming what was wrong.
    pub error: String,
}

/// Cluster mode as `vswitchctl cluster status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterInfo {
    /// This node's name.
    pub node: String,
    /// This node's VTEP address.
    pub vtep: String,
    /// The etcd client URLs.
    pub etcd: Vec<String>,
    /// Whether the last call to etcd succeeded.
    pub connected: bool,
    /// The last failure, while not connected.
    #[serde(default)]
    pub error: Option<String>,
    /// The etcd revision this node's view is as of.
    pub revision: i64,
    /// This node's lease (hex; empty while it has none).
    pub lease: String,
    /// The lease TTL in seconds.
    pub ttl: u64,
    /// Keys under the cluster's prefix that could not be read (logged and skipped).
    pub skipped: u64,
    /// Cluster networks.
    pub networks: usize,
    /// Endpoints in the directory (all nodes).
    pub endpoints: usize,
    /// Every node seen since this daemon started.
    pub nodes: Vec<ClusterNode>,
}

/// A node of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterNode {
    /// Its name.
    pub name: String,
    /// Its VTEP address.
    pub vtep: String,
    /// Its VXLAN port.
    pub port: u16,
    /// `up` (its lease holds) or `down`.
    pub state: String,
    /// Endpoints it has in the directory.
    pub endpoints: usize,
    /// When it was last seen up (seconds since the epoch; now for a node that is up).
    pub last_seen: u64,
    /// Whether this is the node answering.
    pub me: bool,
}

/// `POST /v1/trace`: run a packet through the datapath as a dry run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TraceRequest {
    /// Where the packet enters: `NETNS`, `NETNS/IFNAME`, a port name (`p3`) or `uplink`.
    pub from: String,
    /// The network, when `NETNS` has endpoints on several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The packet, as `tcp A:P > B:Q flags S` ([`crate::packet_spec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet: Option<String>,
    /// Or a whole Ethernet frame, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<String>,
    /// The Ethernet destination, instead of the one the switch would resolve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_mac: Option<String>,
}

/// One stage of a traced packet's walk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TraceStep {
    /// The stage.
    pub stage: String,
    /// What it looked up, found and decided.
    pub detail: String,
}

/// A frame a traced packet would have left as.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TraceOutput {
    /// Out of this port (`p3`, `uplink`) or, for VXLAN, to this VTEP.
    pub port: String,
    /// The endpoint (`NETNS/IFNAME`), `uplink`, or `vtep ADDRESS`.
    pub to: String,
    /// The frame, as tcpdump would print it.
    pub summary: String,
    /// VXLAN: the VNI and outer header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<String>,
    /// A frame the switch made on the way (an ARP request for a next hop), not the packet.
    #[serde(default)]
    pub generated: bool,
    /// The frame (the inner frame for VXLAN), in hex.
    pub frame: String,
}

/// What `POST /v1/trace` found: nothing was changed and nothing sent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TraceInfo {
    /// The port it entered on.
    pub port: String,
    /// Its endpoint (`NETNS/IFNAME`) or `uplink`.
    pub from: String,
    /// Its network (empty for the uplink).
    pub network: String,
    /// The packet, as tcpdump would print it.
    pub packet: String,
    /// The frame run, in hex (send it for real to compare).
    pub frame: String,
    /// The stages, in order.
    pub steps: Vec<TraceStep>,
    /// Where it would have gone.
    pub outputs: Vec<TraceOutput>,
    /// Drop counters it would have bumped.
    pub drops: BTreeMap<String, u64>,
    /// Event counters it would have bumped.
    pub events: BTreeMap<String, u64>,
    /// The outcome in one line.
    pub verdict: String,
}
