//! What the cluster keeps in etcd, and the view of it each node follows: key names, the records
//! under them, and how a listing and a stream of watch events make one [`View`]. Pure: no I/O,
//! no threads, so it tests on its own.
//!
//! Under the cluster prefix (`/vswitch/` by default):
//!
//! | key | value | lifetime |
//! |---|---|---|
//! | `nodes/NODE` | [`NodeRecord`]: VTEP address and port | the node's short lease (presence) |
//! | `networks/NAME` | the `network create` request (VNI filled in) | until `network rm` |
//! | `vnis/VNI` | the network's name: one network per VNI | until `network rm` |
//! | `addrs/NET/IP` | [`AddrRecord`]: node and namespace holding the address | until `detach` |
//! | `endpoints/NET/NODE/NETNS` | [`EndpointRecord`]: address, MAC, DNS names | until `detach` |
//! | `links/A/B` | `{}` (A sorts before B): the two networks route to each other | until `unlink` |
//!
//! Presence (the lease) is kept apart from allocations (no lease): a node that restarts or loses
//! its lease for a while keeps its addresses and endpoints.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::model::NetworkCreate;

/// The key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// A node's presence record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Where the node receives VXLAN.
    pub vtep: IpAddr,
    /// Its VXLAN UDP port.
    pub port: u16,
    /// When it registered (seconds since the epoch).
    pub since: u64,
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrRecord {
    /// The node.
    pub node: String,
    /// The namespace on that node.
    pub netns: String,
}

/// An endpoint as the other nodes need it: to reach it without flooding and to resolve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC (`aa:bb:cc:dd:ee:ff`).
    pub mac: String,
    /// The names the gateways' DNS answer with its address (namespace and aliases).
    pub names: Vec<String>,
}

/// One key of the cluster, read.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `nodes/NODE`.
    Node(String, NodeRecord),
    /// `networks/NAME`.
    Network(String, NetworkCreate),
    /// `vnis/VNI`.
    Vni(u32, String),
    /// `addrs/NET/IP`.
    Addr(String, Ipv4Addr, AddrRecord),
    /// `endpoints/NET/NODE/NETNS`.
    Endpoint(EndpointKey, EndpointRecord),
    /// `links/A/B`.
    Link(String, String),
}

/// Where an endpoint is: network, node, namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointKey {
    /// The network.
    pub network: String,
    /// The node.
    pub node: String,
    /// The namespace on that node.
    pub netns: String,
}

impl Keys {
    /// Keys under `prefix` (a trailing `/` is added when missing).
    pub fn new(prefix: &str) -> Keys {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Keys { prefix }
    }

    /// Every key of the cluster starts with this.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `nodes/NODE`.
    pub fn node(&self, node: &str) -> String {
        format!("{}nodes/{node}", self.prefix)
    }

    /// `networks/NAME`.
    pub fn network(&self, name: &str) -> String {
        format!("{}networks/{name}", self.prefix)
    }

    /// `vnis/VNI`.
    pub fn vni(&self, vni: u32) -> String {
        format!("{}vnis/{vni}", self.prefix)
    }

    /// `addrs/NET/IP`.
    pub fn addr(&self, network: &str, ip: Ipv4Addr) -> String {
        format!("{}addrs/{network}/{ip}", self.prefix)
    }

    /// `endpoints/NET/NODE/NETNS`.
    pub fn endpoint(&self, k: &EndpointKey) -> String {
        format!(
            "{}endpoints/{}/{}/{}",
            self.prefix, k.network, k.node, k.netns
        )
    }

    /// `links/A/B`, the two names in order.
    pub fn link(&self, a: &str, b: &str) -> String {
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        format!("{}links/{a}/{b}", self.prefix)
    }

    /// What key `key` holds, read from `value`; an error names what is wrong with it (a key
    /// of the prefix the cluster does not know, or a value that is not its record).
    pub fn parse(&self, key: &str, value: &[u8]) -> Result<Item, String> {
        let rest = key
            .strip_prefix(&self.prefix)
            .ok_or_else(|| format!("key {key} is outside {}", self.prefix))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let bad = |e: serde_json::Error| format!("key {key}: the value is not a valid record: {e}");
        let name_ok = |s: &str| !s.is_empty() && s.len() <= 255 && !s.contains(char::is_control);
        if !parts.iter().copied().all(name_ok) {
            return Err(format!("key {key}: empty or bad name part"));
        }
        match parts.as_slice() {
            ["nodes", node] => Ok(Item::Node(
                node.to_string(),
                serde_json::from_slice(value).map_err(bad)?,
            )),
            ["networks", name] => {
                let spec: NetworkCreate = serde_json::from_slice(value).map_err(bad)?;
                if spec.name != *name {
                    return Err(format!("key {key}: the record names network {}", spec.name));
                }
                if spec.vni.is_none() {
                    return Err(format!("key {key}: a cluster network without a VNI"));
                }
                Ok(Item::Network(name.to_string(), spec))
            }
            ["vnis", vni] => Ok(Item::Vni(
                vni.parse()
                    .map_err(|_| format!("key {key}: {vni} is not a VNI"))?,
                serde_json::from_slice(value).map_err(bad)?,
            )),
            ["addrs", net, ip] => Ok(Item::Addr(
                net.to_string(),
                ip.parse()
                    .map_err(|_| format!("key {key}: {ip} is not an IPv4 address"))?,
                serde_json::from_slice(value).map_err(bad)?,
            )),
            ["endpoints", net, node, netns] => Ok(Item::Endpoint(
                EndpointKey {
                    network: net.to_string(),
                    node: node.to_string(),
                    netns: netns.to_string(),
                },
                serde_json::from_slice(value).map_err(bad)?,
            )),
            ["links", a, b] if a < b => Ok(Item::Link(a.to_string(), b.to_string())),
            ["links", ..] => Err(format!("key {key}: a link names two networks in order")),
            _ => Err(format!("key {key} is not one the cluster uses")),
        }
    }
}

/// The cluster as one node sees it: everything under the prefix, kept current by the watch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// Live nodes (their lease holds).
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Cluster networks by name.
    pub networks: BTreeMap<String, NetworkCreate>,
    /// Taken VNIs.
    pub vnis: BTreeMap<u32, String>,
    /// Taken addresses by network.
    pub addrs: BTreeMap<(String, Ipv4Addr), AddrRecord>,
    /// Published endpoints.
    pub endpoints: BTreeMap<EndpointKey, EndpointRecord>,
    /// Linked network pairs (names in order).
    pub links: std::collections::BTreeSet<(String, String)>,
    /// The etcd revision this view is as of.
    pub revision: i64,
}

impl View {
    /// The view of a listing (`kvs`: key and value) at `revision`; keys that cannot be read
    /// are skipped and returned with the reason.
    pub fn from_list<'a>(
        keys: &Keys,
        kvs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        revision: i64,
    ) -> (View, Vec<String>) {
        let mut v = View {
            revision,
            ..View::default()
        };
        let skipped = kvs
            .into_iter()
            .filter_map(|(k, val)| v.put(keys, k, val).err())
            .collect();
        (v, skipped)
    }

    /// A key was written. An unreadable value is an error, and the key's previous value is
    /// forgotten (it no longer holds).
    pub fn put(&mut self, keys: &Keys, key: &str, value: &[u8]) -> Result<(), String> {
        match keys.parse(key, value) {
            Ok(item) => {
                self.insert(item);
                Ok(())
            }
            Err(e) => {
                self.delete(keys, key);
                Err(e)
            }
        }
    }

    fn insert(&mut self, item: Item) {
        match item {
            Item::Node(n, r) => {
                self.nodes.insert(n, r);
            }
            Item::Network(n, r) => {
                self.networks.insert(n, r);
            }
            Item::Vni(v, n) => {
                self.vnis.insert(v, n);
            }
            Item::Addr(n, ip, r) => {
                self.addrs.insert((n, ip), r);
            }
            Item::Endpoint(k, r) => {
                self.endpoints.insert(k, r);
            }
            Item::Link(a, b) => {
                self.links.insert((a, b));
            }
        }
    }

    /// A key was deleted (or its lease expired).
    pub fn delete(&mut self, keys: &Keys, key: &str) {
        let Some(rest) = key.strip_prefix(keys.prefix()) else {
            return;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["nodes", node] => {
                self.nodes.remove(*node);
            }
            ["networks", name] => {
                self.networks.remove(*name);
            }
            ["vnis", vni] => {
                if let Ok(v) = vni.parse() {
                    self.vnis.remove(&v);
                }
            }
            ["addrs", net, ip] => {
                if let Ok(ip) = ip.parse() {
                    self.addrs.remove(&(net.to_string(), ip));
                }
            }
            ["endpoints", net, node, netns] => {
                self.endpoints.remove(&EndpointKey {
                    network: net.to_string(),
                    node: node.to_string(),
                    netns: netns.to_string(),
                });
            }
            ["links", a, b] => {
                self.links.remove(&(a.to_string(), b.to_string()));
            }
            _ => {}
        }
    }

    /// Whether networks `a` and `b` are linked in the cluster.
    pub fn linked(&self, a: &str, b: &str) -> bool {
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        self.links.contains(&(a.to_string(), b.to_string()))
    }

    /// The VTEPs of every live node but `me`.
    pub fn peers(&self, me: &str) -> Vec<IpAddr> {
        self.nodes
            .iter()
            .filter(|(n, _)| n.as_str() != me)
            .map(|(_, r)| r.vtep)
            .collect()
    }

    /// Endpoints of `network` on live nodes other than `me`, with their node's VTEP.
    pub fn remote_endpoints<'a>(
        &'a self,
        network: &'a str,
        me: &'a str,
    ) -> impl Iterator<Item = (&'a EndpointKey, &'a EndpointRecord, IpAddr)> + 'a {
        self.endpoints
            .iter()
            .filter(move |(k, _)| k.network == network && k.node != me)
            .filter_map(|(k, r)| self.nodes.get(&k.node).map(|n| (k, r, n.vtep)))
    }

    /// The endpoints on `network`, anywhere (for `network rm`'s refusal).
    pub fn endpoints_on<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a EndpointKey> {
        self.endpoints.keys().filter(move |k| k.network == network)
    }

    /// The lowest VNI from `first` up that no network has.
    pub fn free_vni(&self, first: u32) -> Option<u32> {
        (first..=wire_vni_max()).find(|v| !self.vnis.contains_key(v))
    }
}

fn wire_vni_max() -> u32 {
    crate::wire::vxlan::VNI_MAX
}

#[cfg(test)]
mod test {
    use super::*;

    fn keys() -> Keys {
        Keys::new("/vswitch")
    }

    fn spec(name: &str, vni: u32) -> Vec<u8> {
        let mut s = NetworkCreate::flat(name, "10.7.0.0/24");
        s.vni = Some(vni);
        serde_json::to_vec(&s).unwrap()
    }

    #[test]
    fn a_listing_and_events_make_the_view() {
        let k = keys();
        let node = br#"{"vtep":"192.0.2.1","port":4789,"since":1}"#;
        let ep = br#"{"ip":"10.7.0.2","mac":"02:42:0a:07:00:02","names":["web"]}"#;
        let net = spec("front", 42);
        let (mut v, skipped) = View::from_list(
            &k,
            [
                ("/vswitch/nodes/a", &node[..]),
                (
                    "/vswitch/nodes/b",
                    &br#"{"vtep":"192.0.2.2","port":4789,"since":1}"#[..],
                ),
                ("/vswitch/networks/front", &net[..]),
                ("/vswitch/vnis/42", &br#""front""#[..]),
                (
                    "/vswitch/addrs/front/10.7.0.2",
                    &br#"{"node":"b","netns":"web"}"#[..],
                ),
                ("/vswitch/endpoints/front/b/web", &ep[..]),
                ("/vswitch/links/back/front", &b"{}"[..]),
                ("/vswitch/garbage", &b"x"[..]),
                ("/vswitch/nodes/c", &b"not json"[..]),
            ],
            7,
        );
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[1].contains("nodes/c"), "{skipped:?}");
        assert_eq!(v.revision, 7);
        assert_eq!(v.peers("a"), vec!["192.0.2.2".parse::<IpAddr>().unwrap()]);
        let remote: Vec<_> = v.remote_endpoints("front", "a").collect();
        assert_eq!(remote.len(), 1);
        assert_eq!(remote[0].2, "192.0.2.2".parse::<IpAddr>().unwrap());
        assert_eq!(v.remote_endpoints("front", "b").count(), 0, "b's own");
        assert_eq!(v.free_vni(42), Some(43));
        assert!(v.linked("front", "back") && v.linked("back", "front"));
        assert_eq!(k.link("front", "back"), "/vswitch/links/back/front");
        v.delete(&k, "/vswitch/links/back/front");
        assert!(!v.linked("front", "back"));
        // Node b's lease expires: no peer, and its endpoints are not reachable (but kept).
        v.delete(&k, "/vswitch/nodes/b");
        assert!(v.peers("a").is_empty());
        assert_eq!(v.remote_endpoints("front", "a").count(), 0);
        assert_eq!(v.endpoints_on("front").count(), 1);
        // A value overwritten with garbage no longer holds.
        assert!(v.put(&k, "/vswitch/endpoints/front/b/web", b"{}").is_err());
        assert_eq!(v.endpoints_on("front").count(), 0);
        v.delete(&k, "/vswitch/networks/front");
        assert!(v.networks.is_empty());
    }

    #[test]
    fn bad_keys_and_records_are_refused_with_the_reason() {
        let k = keys();
        for (key, value, says) in [
            ("/other/nodes/a", &b"{}"[..], "outside"),
            ("/vswitch/nodes/", &b"{}"[..], "empty"),
            ("/vswitch/vnis/x", &b"\"n\""[..], "not a VNI"),
            ("/vswitch/addrs/n/300.1.1.1", &b"{}"[..], "not an IPv4"),
            (
                "/vswitch/networks/other",
                &spec("front", 1)[..],
                "names network front",
            ),
            (
                "/vswitch/endpoints/n/a",
                &b"{}"[..],
                "not one the cluster uses",
            ),
        ] {
            let e = k.parse(key, value).unwrap_err();
            assert!(e.contains(says), "{key}: {e}");
        }
        let mut plain = NetworkCreate::flat("flat", "10.8.0.0/24");
        plain.vni = None;
        let e = k
            .parse(
                "/vswitch/networks/flat",
                &serde_json::to_vec(&plain).unwrap(),
            )
            .unwrap_err();
        assert!(e.contains("without a VNI"), "{e}");
    }
}
