//! Docker's remote IPAM driver (`docker network create --ipam-driver vswitch`), served beside the
//! network driver on the same plugin socket: address pools and the addresses handed out of them.
//!
//! - `RequestPool` takes the subnet asked for (`--subnet`, with `--ip-range` as the part
//!   addresses come from), or picks the first free /24 from 172.18.0.0/24 to 172.31.255.0/24:
//!   free means overlapping no other pool, no vswitch network and no route of vswitchd's
//!   namespace (the uplink's subnet, the host's own networks). A subnet asked for that is
//!   exactly an overlay network's is that network's pool (`-o network=NAME`: on a cluster
//!   network, addresses held on every host are skipped, and the gateway is the network's).
//!   IPv6 pools are refused.
//! - `RequestAddress` hands out the gateway (the first host address unless `--gateway` names
//!   one) and then the lowest free address, skipping addresses any vswitch endpoint holds (an
//!   `ip netns` endpoint attached with `vswitchctl attach` to the same network).
//! - Every change is written durably to `docker-ipam.json` in vswitchd's state directory before
//!   it is answered, or refused and taken back: Docker does not tell a remote IPAM again what
//!   it holds after a restart of either daemon.
//!
//! [`Book`] is the pure part (pools and addresses; unit-tested); [`Ipam`] adds the file.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use switch::ipam::Ipv4Cidr;

/// The file the pools are kept in, in vswitchd's state directory.
pub const FILE: &str = "docker-ipam.json";

/// The address spaces the driver answers `GetDefaultAddressSpaces` with (Docker passes them
/// back in `RequestPool`; there is one space of each kind, so they select nothing).
pub const LOCAL_SPACE: &str = "vswitch-local";
/// See [`LOCAL_SPACE`].
pub const GLOBAL_SPACE: &str = "vswitch-global";

/// What the driver holds: pools by id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Book {
    pools: BTreeMap<String, PoolRec>,
}

/// One pool: its subnet, the range addresses come from, and the addresses handed out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PoolRec {
    subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range: Option<String>,
    #[serde(default)]
    addresses: BTreeSet<Ipv4Addr>,
}

/// What else holds address space when a pool is asked for: vswitch networks (name, subnet) and
/// the routes of vswitchd's namespace (network, prefix length).
#[derive(Debug, Clone, Default)]
pub struct Elsewhere {
    /// vswitch networks.
    pub networks: Vec<(String, Ipv4Cidr)>,
    /// Kernel routes other than the default route.
    pub routes: Vec<(Ipv4Addr, u8)>,
    /// Subnets of overlay networks, which a Docker network may join (`-o network=NAME`): a
    /// pool that is exactly one of them is that network's.
    pub joinable: Vec<Ipv4Cidr>,
}

/// True when `a/alen` and `b/blen` share an address (any prefix length 0..=32).
fn overlap(a: Ipv4Addr, alen: u8, b: Ipv4Addr, blen: u8) -> bool {
    let p = u32::from(alen.min(blen).min(32));
    let m = u32::MAX.checked_shl(32 - p).unwrap_or(0);
    u32::from(a) & m == u32::from(b) & m
}

fn pool_id(subnet: &Ipv4Cidr) -> String {
    format!("vswitch/{subnet}")
}

impl Book {
    /// `RequestPool`: the pool's id and subnet.
    pub fn request_pool(
        &mut self,
        pool: &str,
        sub_pool: &str,
        v6: bool,
        other: &Elsewhere,
    ) -> Result<(String, Ipv4Cidr), String> {
        if v6 {
            return Err("vswitch IPAM: IPv6 pools are not supported yet".into());
        }
        let clash = |c: &Ipv4Cidr| -> Option<String> {
            if let Some(p) = self
                .pools
                .values()
                .find(|p| p.subnet.parse::<Ipv4Cidr>().is_ok_and(|s| s.overlaps(c)))
            {
                return Some(format!("pool {} of another Docker network", p.subnet));
            }
            // A pool that is exactly an overlay network's subnet is that network's (a Docker
            // network on a cluster network another host made: `-o network=NAME`).
            if let Some((n, s)) = other.networks.iter().find(|(_, s)| {
                s.overlaps(c) && (pool.is_empty() || s != c || !other.joinable.contains(s))
            }) {
                return Some(format!("vswitch network {n} ({s})"));
            }
            None
        };
        let subnet = if pool.is_empty() {
            if !sub_pool.is_empty() {
                return Err("vswitch IPAM: --ip-range needs --subnet".into());
            }
            (0u32..14 * 256)
                .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 18, 0, 0)) + (i << 8)))
                .filter_map(|a| Ipv4Cidr::new(a, 24).ok())
                .find(|c| {
                    clash(c).is_none()
                        && !other
                            .routes
                            .iter()
                            .any(|&(r, len)| overlap(r, len, c.network(), 24))
                })
                .ok_or("vswitch IPAM: no free /24 left in 172.18.0.0-172.31.255.0: give --subnet")?
        } else {
            let c: Ipv4Cidr = pool.parse().map_err(|e| format!("vswitch IPAM: {e}"))?;
            if let Some(what) = clash(&c) {
                return Err(format!("vswitch IPAM: {c} overlaps {what}"));
            }
            c
        };
        let range = if sub_pool.is_empty() {
            None
        } else {
            let r: Ipv4Cidr = sub_pool
                .parse()
                .map_err(|e| format!("vswitch IPAM: --ip-range: {e}"))?;
            if !(subnet.contains(r.network()) && r.prefix_len() >= subnet.prefix_len()) {
                return Err(format!(
                    "vswitch IPAM: --ip-range {r} is not inside --subnet {subnet}"
                ));
            }
            Some(r.to_string())
        };
        let id = pool_id(&subnet);
        self.pools.insert(
            id.clone(),
            PoolRec {
                subnet: subnet.to_string(),
                range,
                addresses: BTreeSet::new(),
            },
        );
        Ok((id, subnet))
    }

    /// The subnet of pool `id`.
    pub fn subnet(&self, id: &str) -> Option<Ipv4Cidr> {
        self.pools.get(id)?.subnet.parse().ok()
    }

    /// `ReleasePool` (an unknown pool is already released).
    pub fn release_pool(&mut self, id: &str) {
        self.pools.remove(id);
    }

    /// `RequestAddress`: `addr` when given (empty otherwise), else the gateway (the first host
    /// address) when `gateway`, else the lowest free address of the range that `in_use` does
    /// not hold. Answers `ADDRESS/PREFIX`.
    pub fn request_address(
        &mut self,
        id: &str,
        addr: &str,
        gateway: bool,
        in_use: impl Fn(Ipv4Addr) -> bool,
    ) -> Result<String, String> {
        let p = self
            .pools
            .get_mut(id)
            .ok_or_else(|| format!("vswitch IPAM: unknown pool '{id}'"))?;
        let subnet: Ipv4Cidr = p
            .subnet
            .parse()
            .map_err(|e| format!("vswitch IPAM: pool {id}: {e}"))?;
        let ip = if !addr.is_empty() {
            let ip: Ipv4Addr = addr
                .split('/')
                .next()
                .unwrap_or(addr)
                .parse()
                .map_err(|_| format!("vswitch IPAM: malformed IPv4 address '{addr}'"))?;
            if !subnet.is_host(ip) {
                return Err(format!(
                    "vswitch IPAM: {ip} is not a host address of {subnet}"
                ));
            }
            if p.addresses.contains(&ip) || in_use(ip) {
                return Err(format!("vswitch IPAM: {ip} is already in use"));
            }
            ip
        } else if gateway {
            let g = subnet.first_host();
            if p.addresses.contains(&g) || in_use(g) {
                return Err(format!("vswitch IPAM: gateway {g} is already in use"));
            }
            g
        } else {
            let range = match &p.range {
                Some(r) => r.parse::<Ipv4Cidr>().unwrap_or(subnet),
                None => subnet,
            };
            let first = u32::from(range.network()).max(u32::from(subnet.first_host()));
            let last = u32::from(range.broadcast()).min(u32::from(subnet.broadcast()) - 1);
            (first..=last)
                .map(Ipv4Addr::from)
                .find(|ip| subnet.is_host(*ip) && !p.addresses.contains(ip) && !in_use(*ip))
                .ok_or_else(|| format!("vswitch IPAM: no free address left in {range}"))?
        };
        p.addresses.insert(ip);
        Ok(format!("{ip}/{}", subnet.prefix_len()))
    }

    /// `ReleaseAddress` (an address not held is already released).
    pub fn release_address(&mut self, id: &str, addr: &str) {
        let ip = addr.split('/').next().unwrap_or(addr).parse::<Ipv4Addr>();
        if let (Some(p), Ok(ip)) = (self.pools.get_mut(id), ip) {
            p.addresses.remove(&ip);
        }
    }
}

/// The pools and the file they are kept in.
pub type Ipam = crate::saved::Saved<Book>;

/// The pools kept in `dir` (none yet when the file does not exist).
pub fn load(dir: Option<&Path>) -> Result<Ipam, String> {
    Ipam::load(dir, FILE, "vswitch IPAM")
}

/// The routes of this namespace (`/proc/net/route`) other than default routes.
pub fn kernel_routes() -> Vec<(Ipv4Addr, u8)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dst = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let len = u8::try_from(u32::from_be(mask).leading_ones()).ok()?;
            (len > 0).then(|| (Ipv4Addr::from(u32::from_be(dst)), len))
        })
        .collect()
}

#[cfg(test)]
mod test {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn pools_are_picked_around_what_is_taken() {
        let mut b = Book::default();
        let other = Elsewhere {
            networks: vec![("front".into(), cidr("172.18.0.0/24"))],
            joinable: vec![cidr("172.18.0.0/24")],
            routes: vec![
                (Ipv4Addr::new(172, 18, 1, 0), 24),
                (Ipv4Addr::new(10, 0, 0, 0), 8),
            ],
        };
        let (id, s) = b.request_pool("", "", false, &other).unwrap();
        assert_eq!(s, cidr("172.18.2.0/24"));
        assert_eq!(id, "vswitch/172.18.2.0/24");
        let (_, s2) = b.request_pool("", "", false, &other).unwrap();
        assert_eq!(s2, cidr("172.18.3.0/24"), "not the pool just given");
        // Asked for: overlaps are refused, naming what they overlap.
        let e = b
            .request_pool("172.18.0.0/16", "", false, &other)
            .unwrap_err();
        assert!(e.contains("overlaps"), "{e}");
        let (_, same) = b.request_pool("172.18.0.0/24", "", false, &other).unwrap();
        assert_eq!(
            same,
            cidr("172.18.0.0/24"),
            "a vswitch network's own subnet"
        );
        let flat = Elsewhere {
            networks: vec![("flat".into(), cidr("10.50.0.0/24"))],
            ..Elsewhere::default()
        };
        let e = b
            .request_pool("10.50.0.0/24", "", false, &flat)
            .unwrap_err();
        assert!(e.contains("vswitch network flat"), "not joinable: {e}");
        let e = b.request_pool("172.18.2.0/23", "", false, &Elsewhere::default());
        assert!(e
            .unwrap_err()
            .contains("pool 172.18.2.0/24 of another Docker network"));
        assert!(
            b.request_pool("10.9.0.0/24", "", true, &other).is_err(),
            "v6"
        );
        assert!(
            b.request_pool("10.9.0.1/24", "", false, &other).is_err(),
            "host bits"
        );
        assert!(b.request_pool("junk", "", false, &other).is_err());
        assert!(b
            .request_pool("10.9.0.0/24", "10.8.0.0/25", false, &other)
            .is_err());
        b.release_pool(&id);
        let (_, again) = b.request_pool("", "", false, &other).unwrap();
        assert_eq!(again, s, "released pools are free again");
    }

    #[test]
    fn addresses_skip_the_gateway_the_held_and_the_in_use() {
        let mut b = Book::default();
        let (id, _) = b
            .request_pool("10.9.0.0/24", "", false, &Elsewhere::default())
            .unwrap();
        assert_eq!(
            b.request_address(&id, "", true, |_| false).unwrap(),
            "10.9.0.1/24"
        );
        let busy = |ip: Ipv4Addr| ip == Ipv4Addr::new(10, 9, 0, 2);
        assert_eq!(
            b.request_address(&id, "", false, busy).unwrap(),
            "10.9.0.3/24"
        );
        assert_eq!(
            b.request_address(&id, "", false, busy).unwrap(),
            "10.9.0.4/24"
        );
        let e = b.request_address(&id, "10.9.0.3", false, busy).unwrap_err();
        assert!(e.contains("already in use"), "{e}");
        assert!(b.request_address(&id, "10.9.0.2", false, busy).is_err());
        assert!(b.request_address(&id, "10.9.1.2", false, busy).is_err());
        assert!(b.request_address(&id, "10.9.0.255", false, busy).is_err());
        assert!(b.request_address("vswitch/nope", "", false, busy).is_err());
        b.release_address(&id, "10.9.0.3/24");
        assert_eq!(
            b.request_address(&id, "", false, busy).unwrap(),
            "10.9.0.3/24"
        );
        // A range: addresses come from it only.
        let (r, _) = b
            .request_pool(
                "10.10.0.0/24",
                "10.10.0.128/25",
                false,
                &Elsewhere::default(),
            )
            .unwrap();
        assert_eq!(
            b.request_address(&r, "", false, |_| false).unwrap(),
            "10.10.0.128/24"
        );
    }

    #[test]
    fn changes_are_saved_or_refused() {
        let dir = std::env::temp_dir().join(format!("vsipam-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ipam = load(Some(&dir)).unwrap();
        let (id, _) = ipam
            .change(|b| b.request_pool("10.11.0.0/24", "", false, &Elsewhere::default()))
            .unwrap();
        ipam.change(|b| b.request_address(&id, "", false, |_| false))
            .unwrap();
        let again = load(Some(&dir)).unwrap();
        assert_eq!(again.read(Book::clone), ipam.read(Book::clone));
        // A refusal changes nothing; a failed write neither.
        assert!(ipam
            .change(|b| b.request_address("x", "", false, |_| false))
            .is_err());
        std::fs::remove_file(dir.join(FILE)).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        let before = ipam.read(Book::clone);
        assert!(ipam
            .change(|b| b.request_address(&id, "", false, |_| false))
            .unwrap_err()
            .contains("cannot save"));
        assert_eq!(ipam.read(Book::clone), before, "taken back");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(FILE), "{garbage").unwrap();
        assert!(load(Some(&dir)).unwrap_err().contains(FILE));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn routes_parse() {
        assert!(overlap(
            Ipv4Addr::new(10, 1, 2, 3),
            32,
            Ipv4Addr::new(10, 1, 0, 0),
            16
        ));
        assert!(!overlap(
            Ipv4Addr::new(10, 2, 0, 0),
            16,
            Ipv4Addr::new(10, 1, 0, 0),
            16
        ));
        // Whatever this machine has, no default route is listed and none panics.
        assert!(kernel_routes().iter().all(|&(_, len)| len > 0));
    }
}
