//! Control-plane errors: one variant per way a request can be refused or fail, each rendering as
//! one line that names what was wrong.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ipam::IpamError;
use crate::wire::MacParseError;

/// Why a control request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another daemon holds the state directory's lock.
    #[error(
        "state directory {dir} is in use by another vswitchd (pid {pid}): one daemon per state \
         directory; stop it or give this one another --state-dir"
    )]
    StateDirInUse {
        /// The state directory.
        dir: String,
        /// The holder's process id, as it wrote it in the lock file.
        pid: String,
    },
    /// A name with characters or a shape that is not allowed.
    #[error("invalid {what} name '{name}': {why}")]
    InvalidName {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        name: String,
        /// The rule it broke.
        why: &'static str,
    },
    /// A malformed subnet or address, or an address outside its subnet.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// A malformed MAC address.
    #[error(transparent)]
    Mac(#[from] MacParseError),
    /// A MAC that cannot be an endpoint's address.
    #[error("MAC address {0} is not a unicast address")]
    MacNotUnicast(String),
    /// An invalid MTU.
    #[error("MTU {0} is out of range (68..=65535)")]
    Mtu(u32),
    /// No such network.
    #[error("network '{0}' not found")]
    NetworkNotFound(String),
    /// A network of that name exists.
    #[error("network '{0}' already exists")]
    NetworkExists(String),
    /// The subnet overlaps another network's.
    #[error("subnet {subnet} overlaps network '{other}' ({other_subnet})")]
    SubnetOverlap {
        /// The requested subnet.
        subnet: String,
        /// The network it overlaps.
        other: String,
        /// That network's subnet.
        other_subnet: String,
    },
    /// The gateway is not a host address of the subnet.
    #[error("gateway {gateway} is not a host address of subnet {subnet}")]
    GatewayOutside {
        /// The gateway given.
        gateway: Ipv4Addr,
        /// The subnet.
        subnet: String,
    },
    /// The IPv6 gateway is not a host address of the IPv6 subnet.
    #[error("IPv6 gateway {gateway} is not a host address of subnet {subnet}")]
    Gateway6Outside {
        /// The gateway given.
        gateway: Ipv6Addr,
        /// The subnet.
        subnet: String,
    },
    /// An IPv6 address or gateway for a network without an IPv6 subnet.
    #[error(
        "network '{0}' has no IPv6 subnet (make it dual stack at creation: a second --subnet, \
         e.g. --subnet fd00:20::/64)"
    )]
    NoIpv6(String),
    /// A peer VTEP of the other address family than the underlay's.
    #[error(
        "peer {peer}: the underlay is {family} (vswitchd --underlay-ip {underlay}); peers must be \
         {family} addresses"
    )]
    PeerFamily {
        /// The peer.
        peer: std::net::IpAddr,
        /// "IPv4" or "IPv6".
        family: &'static str,
        /// The underlay address, or "(none)".
        underlay: String,
    },
    /// A port published on a specific IPv6 address.
    #[error(
        "publish: IPv6 ports are published on the uplink's IPv6 address: give [::] instead of \
         [{0}] (or no address, for both families)"
    )]
    Publish6Addr(String),
    /// More than one subnet of a family.
    #[error("{0}: give at most one IPv4 and one IPv6 subnet (and gateway)")]
    TwoSubnets(String),
    /// The IPv6 address is taken in the network.
    #[error("address {ip} is already in use in network '{network}'")]
    Address6InUse {
        /// The address.
        ip: Ipv6Addr,
        /// The network.
        network: String,
    },
    /// The network still has endpoints.
    #[error("network '{network}' has endpoints attached: {endpoints} (detach them first)")]
    NetworkInUse {
        /// The network.
        network: String,
        /// The attached namespaces.
        endpoints: String,
    },
    /// No such namespace.
    #[error("network namespace '{0}' not found (create it with: ip netns add {0})")]
    NetnsNotFound(String),
    /// The namespace already has an endpoint on the network.
    #[error("namespace '{netns}' is already attached to network '{network}'")]
    AlreadyAttached {
        /// Namespace.
        netns: String,
        /// Network.
        network: String,
    },
    /// The namespace has no endpoint on the network.
    #[error("namespace '{netns}' is not attached to network '{network}'")]
    NotAttached {
        /// Namespace.
        netns: String,
        /// Network.
        network: String,
    },
    /// The address is taken in the network.
    #[error("address {ip} is already in use in network '{network}'")]
    AddressInUse {
        /// The address.
        ip: Ipv4Addr,
        /// The network.
        network: String,
    },
    /// Cluster mode: another node (or namespace) holds the address.
    #[error("address {ip} in network '{network}' is held by {holder}")]
    AddressHeld {
        /// The address.
        ip: Ipv4Addr,
        /// The network.
        network: String,
        /// `NODE/NETNS` holding it.
        holder: String,
    },
    /// `--overlay` without `--vni` outside cluster mode.
    #[error(
        "network '{0}': --overlay without --vni needs cluster mode (vswitchd --cluster ...), \
         where the cluster allocates the VNI; give --vni"
    )]
    OverlayNeedsVni(String),
    /// A cluster verb on a daemon not in cluster mode.
    #[error("vswitchd is not in cluster mode (start it with --cluster etcd://HOST:PORT)")]
    NotClustered,
    /// Cluster mode: etcd refused or could not be reached.
    #[error("cluster: {0}")]
    Cluster(String),
    /// The MAC is taken in the network.
    #[error("MAC address {mac} is already in use in network '{network}'")]
    MacInUse {
        /// The MAC.
        mac: String,
        /// The network.
        network: String,
    },
    /// The interface name exists in the namespace.
    #[error("interface '{ifname}' already exists in namespace '{netns}'")]
    IfnameInUse {
        /// Interface name.
        ifname: String,
        /// Namespace.
        netns: String,
    },
    /// A capture target that names no port, endpoint or network.
    #[error("capture target '{0}' is not a port (p1), an endpoint (NETNS/IFNAME) or a network")]
    TargetNotFound(String),
    /// A device or namespace operation failed.
    #[error("{step} failed: {source}")]
    Device {
        /// The step that failed.
        step: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No uplink is set.
    #[error("no uplink is set (vswitchctl uplink set IFACE --ip ADDR/PREFIX)")]
    NoUplink,
    /// The uplink subnet overlaps a network.
    #[error("uplink subnet {uplink} overlaps network '{network}' ({subnet})")]
    UplinkOverlap {
        /// Uplink subnet.
        uplink: String,
        /// The network.
        network: String,
        /// Its subnet.
        subnet: String,
    },
    /// A malformed uplink address.
    #[error("malformed uplink address '{0}' (expected ADDR/PREFIX like 192.168.50.2/24)")]
    BadUplinkAddr(String),
    /// An MTU too small for IPv6.
    #[error("MTU {0} is below IPv6's minimum of 1280 (the network is dual stack)")]
    Mtu6(u32),
    /// A dual-stack cluster network whose IPv6 prefix cannot hold the IPv4 addresses.
    #[error(
        "network '{0}': a cluster network's IPv6 subnet must be a /96 or shorter (an endpoint's \
         IPv6 address is its cluster-wide IPv4 address in the prefix's last 32 bits)"
    )]
    ClusterIpv6(String),
    /// `--ip6` on a cluster network other than the one its IPv4 address gives.
    #[error(
        "network '{network}': on cluster networks the IPv6 address follows the IPv4 one ({want} \
         for {ip}); choose the endpoint with --ip"
    )]
    ClusterIp6 {
        /// The network.
        network: String,
        /// The IPv4 address.
        ip: Ipv4Addr,
        /// The IPv6 address it gives.
        want: String,
    },
    /// A malformed IPv6 uplink address.
    #[error("malformed IPv6 uplink address '{0}' (expected ADDR/PREFIX, e.g. 2001:db8:50::2/64)")]
    BadUplinkAddr6(String),
    /// An IPv6 uplink gateway that is neither in the uplink's prefix nor link-local.
    #[error("uplink IPv6 gateway {gateway} is neither in {prefix} nor link-local (fe80::/10)")]
    Gateway6OffLink {
        /// The gateway.
        gateway: Ipv6Addr,
        /// The uplink's prefix.
        prefix: String,
    },
    /// An IPv6 uplink gateway without an IPv6 uplink address.
    #[error("uplink: an IPv6 --gateway needs an IPv6 --ip")]
    Gateway6WithoutIp,
    /// A malformed publish/unpublish spec.
    #[error(
        "malformed port spec '{0}' (expected [IP:][HOSTPORT:]CTRPORT[/tcp|/udp], e.g. 8080:80/tcp)"
    )]
    BadPortSpec(String),
    /// The host port is taken.
    #[error("{proto} port {port} is already published by {owner}")]
    PortInUse {
        /// tcp or udp.
        proto: &'static str,
        /// Host port.
        port: u16,
        /// Who has it.
        owner: String,
    },
    /// Nothing published matches.
    #[error("{spec} is not published by '{netns}'")]
    NotPublished {
        /// The spec given.
        spec: String,
        /// Namespace.
        netns: String,
    },
    /// The namespace has no endpoint (on the network given).
    #[error("namespace '{0}' has no endpoint to publish from (attach it first)")]
    NoEndpoint(String),
    /// Linking a network to itself.
    #[error("a network cannot be linked to itself ('{0}')")]
    SelfLink(String),
    /// Unlinking networks that are not linked.
    #[error("networks '{0}' and '{1}' are not linked")]
    NotLinked(String, String),
    /// Every port of the random range is published.
    #[error("no free host port left in 32768-60999")]
    NoFreePort,
    /// A VNI outside 1..=16777215.
    #[error("VNI {0} is out of range (1..=16777215)")]
    BadVni(u32),
    /// Another network has the VNI.
    #[error("VNI {vni} is already used by network '{network}'")]
    VniInUse {
        /// The VNI.
        vni: u32,
        /// Its network.
        network: String,
    },
    /// An overlay-only operation on a network without a VNI.
    #[error("network '{0}' is not an overlay network (create it with --vni)")]
    NotOverlay(String),
    /// Removing a peer that is not one.
    #[error("{ip} is not a peer of network '{network}'")]
    NotAPeer {
        /// The address.
        ip: std::net::IpAddr,
        /// The network.
        network: String,
    },
    /// A packet trace that cannot run as asked.
    #[error("trace: {0}")]
    Trace(String),
    /// The daemon is shutting down.
    #[error("vswitchd is shutting down")]
    ShuttingDown,
    /// A change could not be saved to the state directory: it was taken back.
    #[error("saving the change to {path} failed: {source}; nothing was changed")]
    Save {
        /// The file written.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// A change asked for while the daemon is still restoring its saved state (reads answer
    /// with what is restored so far).
    #[error(
        "vswitchd is restoring its saved state ({done} of {total} endpoints restored): changes \
         are refused until it is done; try again in a moment (vswitchctl status shows the \
         progress)"
    )]
    Restoring {
        /// Endpoints restored so far.
        done: usize,
        /// Endpoints in the state to restore.
        total: usize,
    },
}

impl Error {
    /// The HTTP status the API answers with for this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::NetworkNotFound(_)
            | Error::NetnsNotFound(_)
            | Error::NotAttached { .. }
            | Error::TargetNotFound(_)
            | Error::NoUplink
            | Error::NotPublished { .. }
            | Error::NoEndpoint(_)
            | Error::NotLinked(..)
            | Error::NotAPeer { .. }
            | Error::NotClustered => 404,
            Error::NetworkExists(_)
            | Error::SubnetOverlap { .. }
            | Error::NetworkInUse { .. }
            | Error::AlreadyAttached { .. }
            | Error::AddressInUse { .. }
            | Error::Address6InUse { .. }
            | Error::AddressHeld { .. }
            | Error::MacInUse { .. }
            | Error::IfnameInUse { .. }
            | Error::UplinkOverlap { .. }
            | Error::PortInUse { .. }
            | Error::NoFreePort
            | Error::VniInUse { .. } => 409,
            Error::Device { .. } => 500,
            Error::ShuttingDown | Error::Restoring { .. } | Error::Cluster(_) => 503,
            Error::Save { .. } => 507,
            _ => 400,
        }
    }

    /// Wrap an OS error with the step that failed.
    pub fn device(step: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Device { step, source }
    }
}

/// User-supplied text as an error message shows it: control characters (a newline, say) escaped,
/// so the message stays one line (one function for the switch's errors and the wire layer's MAC
/// parse errors).
pub use wire::shown;

/// Check a namespace, network or interface name: `[A-Za-z0-9_.-]`, not starting with `-` or
/// `.`, at most `max` bytes.
pub fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), Error> {
    let bad = |why| {
        Err(Error::InvalidName {
            what,
            name: shown(name),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > max {
        return bad(if max == 15 {
            "at most 15 characters"
        } else {
            "too long"
        });
    }
    if name.starts_with(['-', '.']) {
        return bad("it must not start with '-' or '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return bad("use only letters, digits, '_', '-' and '.'");
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("namespace", "ns1", 64).is_ok());
        assert!(check_name("namespace", "a.b-c_d", 64).is_ok());
        for bad in ["", "../etc", "a/b", ".", "..", "-x", "a b", "ä"] {
            let e = check_name("namespace", bad, 64).unwrap_err().to_string();
            assert!(e.contains("invalid namespace name"), "{e}");
        }
        assert!(check_name("interface", "eth0123456789012", 15).is_err());
    }
}
