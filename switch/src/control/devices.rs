//! Device plumbing, the policy half (`sys` is the mechanism): which TAP an endpoint gets and how
//! it is configured in its namespace, taking one over under `--live-restore`, opening the
//! uplink's packet sockets and the VTEPs' UDP sockets, numbering infrastructure ports and
//! giving them to a worker, registering ports with the workers, and releasing removed ports.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::state::{Net, State};
use super::{AfterUnlock, Switch};
use crate::capture::Taps;
use crate::error::Error;
use crate::fdb::PortId;
use crate::model::AttachRequest;
use crate::port::{Device, FloodLimiter, NetId, Port, PortStats};
use crate::sys::netlink::{LinkChange, Netlink};
use crate::sys::netns::Netns;
use crate::sys::packet::PacketQueues;
use crate::sys::tap::Tap;
use crate::wire::MacAddr;

impl Switch {
    /// Queues per endpoint TAP: `--tap-queues`, at most one per worker (0: one per worker).
    pub(super) fn tap_queues(&self) -> usize {
        match self.opts.tap_queues {
            0 => self.epolls.len(),
            n => n.min(self.epolls.len()),
        }
    }

    /// Port `id` (named `pID`, anti-spoofing on) with fresh counters, capture taps and flood
    /// limit; callers change the name or `spoof_check` with struct update syntax.
    pub(super) fn new_port(
        &self,
        id: PortId,
        network: NetId,
        worker: usize,
        dev: Device,
        (mac, ip): (MacAddr, Ipv4Addr),
    ) -> Port {
        Port {
            id,
            name: format!("p{id}"),
            network,
            dev,
            mac,
            ip,
            ip6: None,
            worker,
            stats: PortStats::default(),
            taps: Arc::new(Taps::default()),
            flood: FloodLimiter::new(self.opts.flood_rate),
            spoof_check: true,
        }
    }

    /// The (worker, fd) pairs that receive a port's frames: each worker serves its own queue of
    /// a multi-queue TAP or of the uplink's fanout group; any other device is served by
    /// `port.worker`.
    fn queue_fds(&self, port: &Port) -> Vec<(usize, RawFd)> {
        match &port.dev {
            Device::Sink(_) => Vec::new(),
            dev if dev.queues() > 1 => (0..self.epolls.len())
                .map(|w| (w, dev.queue_fd(w)))
                .collect(),
            dev => vec![(port.worker, dev.as_raw_fd())],
        }
    }

    /// Add a port's receive queues to the workers' epoll sets.
    pub(super) fn register(&self, port: &Port) -> std::io::Result<()> {
        for (w, fd) in self.queue_fds(port) {
            self.epolls[w].add(fd, u64::from(port.id))?;
        }
        Ok(())
    }

    /// Remove a port's receive queues from the workers' epoll sets.
    pub(super) fn unregister(&self, port: &Port) {
        for (w, fd) in self.queue_fds(port) {
            let _ = self.epolls[w].delete(fd);
        }
    }

    /// Open the VTEP sockets for UDP `port` unless they exist.
    pub(super) fn ensure_vtep(&self, st: &mut State, port: u16) -> Result<(), Error> {
        if st.vteps().contains_key(&port) {
            return Ok(());
        }
        let src = self
            .opts
            .underlay_ip
            .unwrap_or(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let udp = std::net::UdpSocket::bind(std::net::SocketAddr::new(src, port))
            .map_err(Error::device("bind VXLAN socket"))?;
        udp.set_nonblocking(true)
            .map_err(Error::device("configure VXLAN socket"))?;
        if let Err(e) = crate::sys::udp::enable_gro(&udp) {
            log::warn!("UDP GRO unavailable on the VXLAN socket ({e}): one datagram per read");
        }
        if let Err(e) = crate::sys::set_rcvbuf(&udp, crate::sys::SOCKET_RCVBUF) {
            log::warn!("VXLAN socket keeps the default receive buffer ({e})");
        }
        let raw = crate::sys::udp::RawIpSender::open()
            .map_err(Error::device("open raw socket for VXLAN"))?;
        let dev = Device::Vxlan(crate::port::VxlanDev {
            udp,
            raw,
            port,
            src,
        });
        let p = self.infra_port(
            st,
            format!("vxlan{port}"),
            crate::port::VXLAN_NET,
            dev,
            MacAddr::default(),
            match src {
                std::net::IpAddr::V4(a) => a,
                std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            },
        )?;
        log::info!("VTEP listening on {src}:{port}");
        st.add_vtep(port, p);
        Ok(())
    }

    /// A port that is not an endpoint (the uplink, a VTEP): numbered, given to the least loaded
    /// worker and registered with it.
    pub(super) fn infra_port(
        &self,
        st: &mut State,
        name: String,
        network: NetId,
        dev: Device,
        mac: MacAddr,
        ip: Ipv4Addr,
    ) -> Result<Arc<Port>, Error> {
        let worker = st.least_loaded_for_infra(self.epolls.len());
        let id = st.next_port;
        st.next_port += 1;
        let port = Arc::new(Port {
            name,
            spoof_check: false,
            ..self.new_port(id, network, worker, dev, (mac, ip))
        });
        self.register(&port)
            .map_err(Error::device("register port with worker"))?;
        Ok(port)
    }

    pub(super) fn drop_unused_vteps(&self, st: &mut State) {
        let used: BTreeSet<u16> = st
            .networks()
            .values()
            .filter(|n| n.vni.is_some())
            .map(|n| n.vxlan_port)
            .collect();
        let gone: Vec<u16> = st
            .vteps()
            .keys()
            .filter(|p| !used.contains(p))
            .copied()
            .collect();
        for p in gone {
            if let Some(v) = st.remove_vtep(p) {
                self.unregister(&v);
                self.sync(st);
                st.after_unlock.push(AfterUnlock::Release(v));
            }
        }
    }
}

/// What an endpoint's device needs of its network.
#[derive(Debug, Clone, Copy)]
pub(super) struct DevNet {
    pub(super) gateway: Ipv4Addr,
    pub(super) prefix: u8,
    /// Dual stack: the IPv6 prefix length and gateway.
    pub(super) v6: Option<(u8, std::net::Ipv6Addr)>,
    pub(super) mtu: u32,
    pub(super) overlay: bool,
}

impl Net {
    pub(super) fn dev_net(&self) -> DevNet {
        DevNet {
            gateway: self.gateway,
            prefix: self.subnet.prefix_len(),
            v6: self.v6.as_ref().map(|v| (v.subnet.prefix_len(), v.gateway)),
            mtu: self.mtu,
            overlay: self.vni.is_some(),
        }
    }
}

/// Create the TAP device for an endpoint with `queues` queues, configure it and move it into the
/// namespace: MAC, MTU and `mark` (its alias: this state directory's devices) first, then move
/// and rename, then (inside the namespace) up, address and default route. With `adopt`, a TAP
/// named `req.ifname` already in the namespace is taken over instead (`--live-restore`).
pub(super) fn make_endpoint_device(
    ns: &Netns,
    req: &AttachRequest,
    mac: MacAddr,
    (ip, ip6): (Ipv4Addr, Option<std::net::Ipv6Addr>),
    net: DevNet,
    (queues, adopt, mark): (usize, bool, &str),
) -> Result<(Tap, String), Error> {
    let offloads = if !net.overlay {
        crate::sys::tap::OFFLOADS_ALL
    } else {
        crate::sys::tap::OFFLOADS_OVERLAY
    };
    if let (true, Some(name)) = (adopt, req.ifname.clone()) {
        if let Some(tap) =
            adopt_endpoint_device(ns, &name, (offloads, queues, mark), mac, (ip, ip6), net)?
        {
            return Ok((tap, name));
        }
    }
    let wanted = req.ifname.clone();
    let netns = req.netns.clone();
    let DevNet {
        gateway,
        prefix,
        mtu,
        ..
    } = net;

    // Everything on one thread inside the namespace: the TAP is created there with its final
    // name (opening /dev/net/tun from inside makes the device in that namespace), so it is
    // never moved. Moving a device between namespaces waits for an RCU grace period in the
    // kernel (~18 ms here), which made that step most of an attach (perf/scale.sh).
    ns.run_in(move || -> Result<(Tap, String), Error> {
        let mut nl = Netlink::open().map_err(Error::device("open netlink socket in namespace"))?;
        let ifname = match wanted {
            Some(name) => match nl
                .link_index(&name)
                .map_err(Error::device("look up interface"))?
            {
                Some(_) => {
                    return Err(Error::IfnameInUse {
                        ifname: name,
                        netns,
                    })
                }
                None => name,
            },
            None => {
                let mut free = None;
                for i in 0..1000 {
                    let name = format!("eth{i}");
                    if nl
                        .link_index(&name)
                        .map_err(Error::device("look up interface"))?
                        .is_none()
                    {
                        free = Some(name);
                        break;
                    }
                }
                free.ok_or_else(|| Error::IfnameInUse {
                    ifname: "eth0..eth999".into(),
                    netns: netns.clone(),
                })?
            }
        };
        let tap = new_tap(
            &mut nl,
            (&ifname, &netns),
            (offloads, queues),
            (mac, mtu, mark),
        )?;
        let idx = tap.ifindex();
        set_up(&mut nl, idx, "bring interface up")?;
        nl.add_addr_v4(idx, ip, prefix)
            .map_err(Error::device("add address"))?;
        nl.add_default_route_v4(gateway, idx)
            .map_err(Error::device("add default route"))?;
        if let (Some(ip6), Some((prefix6, gateway6))) = (ip6, net.v6) {
            enable_ipv6(&ifname)?;
            nl.add_addr_v6(idx, ip6, prefix6)
                .map_err(Error::device("add IPv6 address"))?;
            nl.add_default_route_v6(gateway6, idx)
                .map_err(Error::device("add IPv6 default route"))?;
        }
        Ok((tap, ifname))
    })
    .map_err(Error::device("enter network namespace"))?
}

/// The device of a hand-over attach (`AttachRequest::handoff`): a TAP made in vswitchd's own
/// namespace with the endpoint's MAC and MTU, no address, route or carrier: the runtime moves
/// it into the container and configures it.
pub(super) fn make_handoff_device(
    req: &AttachRequest,
    mac: MacAddr,
    net: DevNet,
    (queues, mark): (usize, &str),
) -> Result<(Tap, String), Error> {
    let offloads = if !net.overlay {
        crate::sys::tap::OFFLOADS_ALL
    } else {
        crate::sys::tap::OFFLOADS_OVERLAY
    };
    let name = req.ifname.clone().ok_or_else(|| Error::Device {
        step: "hand a device over (no interface name given)",
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    let mut nl = Netlink::open().map_err(Error::device("open netlink socket"))?;
    let own = "vswitchd's own";
    let tap = new_tap(
        &mut nl,
        (&name, own),
        (offloads, queues),
        (mac, net.mtu, mark),
    )?;
    Ok((tap, name))
}

/// A new TAP `name` in the calling thread's namespace (`netns` names it in errors) with the
/// endpoint's MAC, MTU and this daemon's mark, and no queue discipline. Not up, no address.
fn new_tap(
    nl: &mut Netlink,
    (name, netns): (&str, &str),
    (offloads, queues): (u32, usize),
    (mac, mtu, mark): (MacAddr, u32, &str),
) -> Result<Tap, Error> {
    let tap = Tap::create(name, offloads, queues).map_err(|e| match e.raw_os_error() {
        // Made meanwhile by someone else, as another kind of device.
        Some(libc::EINVAL | libc::EBUSY | libc::EEXIST) => Error::IfnameInUse {
            ifname: name.to_string(),
            netns: netns.to_string(),
        },
        _ => Error::Device {
            step: "create TAP device",
            source: e,
        },
    })?;
    nl.set_link(
        tap.ifindex(),
        &LinkChange {
            mtu: Some(mtu),
            mac: Some(mac.0),
            alias: Some(mark),
            ..Default::default()
        },
    )
    .map_err(Error::device("set TAP MAC address and MTU"))?;
    // A TAP never pushes back (it drops when its ring is full), so a queue discipline in front
    // of it queues nothing; without one, `up` is several ms faster (256 queues).
    if let Err(e) = nl.set_noqueue(tap.ifindex()) {
        log::debug!("{name}: keeping the default qdisc ({e})");
    }
    Ok(tap)
}

/// Take over the TAP `name` a previous daemon left in namespace `ns` (`--live-restore`), and make
/// sure it still has the endpoint's MAC, MTU, address and default route. `None` when the
/// namespace has no such interface (the caller creates one).
fn adopt_endpoint_device(
    ns: &Netns,
    name: &str,
    (offloads, queues, mark): (u32, usize, &str),
    mac: MacAddr,
    (ip, ip6): (Ipv4Addr, Option<std::net::Ipv6Addr>),
    net: DevNet,
) -> Result<Option<Tap>, Error> {
    let DevNet {
        gateway,
        prefix,
        mtu,
        ..
    } = net;
    ns.run_in(move || -> Result<Option<Tap>, Error> {
        let tap = match Tap::open_existing(name, offloads, queues) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Device {
                    step: "reopen the endpoint's TAP device (is the interface someone else's?)",
                    source: e,
                })
            }
        };
        let mut nl = Netlink::open().map_err(Error::device("open netlink socket in namespace"))?;
        nl.set_link(
            tap.ifindex(),
            &LinkChange {
                mtu: Some(mtu),
                mac: Some(mac.0),
                up: Some(true),
                alias: Some(mark),
                ..Default::default()
            },
        )
        .map_err(Error::device("set TAP MAC address, MTU and up"))?;
        let exists = |r: std::io::Result<_>, step| match r {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                Err(Error::Device { step, source: e })
            }
            _ => Ok(()),
        };
        exists(
            nl.add_addr_v4(tap.ifindex(), ip, prefix).map(|_| ()),
            "add address",
        )?;
        exists(
            nl.add_default_route_v4(gateway, tap.ifindex()).map(|_| ()),
            "add default route",
        )?;
        if let (Some(ip6), Some((prefix6, gateway6))) = (ip6, net.v6) {
            enable_ipv6(name)?;
            exists(
                nl.add_addr_v6(tap.ifindex(), ip6, prefix6),
                "add IPv6 address",
            )?;
            exists(
                nl.add_default_route_v6(gateway6, tap.ifindex()).map(|_| ()),
                "add IPv6 default route",
            )?;
        }
        Ok(Some(tap))
    })
    .map_err(Error::device("enter network namespace"))?
}

/// Turn IPv6 on for interface `ifname` of the calling thread's namespace: an endpoint of a
/// dual-stack network needs it even where the namespace's default has it off.
fn enable_ipv6(ifname: &str) -> Result<(), Error> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    std::fs::write(&path, "0").map_err(|e| Error::Device {
        step: if e.kind() == std::io::ErrorKind::NotFound {
            "enable IPv6 on the interface (is IPv6 off in this kernel? ipv6.disable=1)"
        } else {
            "enable IPv6 on the interface"
        },
        source: e,
    })
}

/// Open host interface `iface` as the uplink: bring it up and bind `queues` packet sockets to
/// it (one per worker, in one fanout group).
pub(super) fn open_uplink(iface: &str, queues: usize) -> Result<PacketQueues, Error> {
    let ifindex = crate::sys::if_nametoindex(iface)
        .map_err(Error::device("look up uplink interface"))?
        .ok_or_else(|| Error::Device {
            step: "open uplink interface",
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no interface named {iface}"),
            ),
        })?;
    let mut nl = Netlink::open().map_err(Error::device("open netlink socket"))?;
    set_up(&mut nl, ifindex, "bring uplink interface up")?;
    let q = PacketQueues::open(iface, queues).map_err(Error::device("open uplink interface"))?;
    if q.queues() < queues {
        log::warn!(
            "uplink {iface}: this kernel refused a packet fanout group; one worker reads it"
        );
    }
    Ok(q)
}

/// The alias that marks the endpoint devices of the daemon on `state_dir`: `vswitchd:` and a
/// hash of the directory's path, so daemons on other state directories (tests run several)
/// never take each other's devices for orphans.
pub(super) fn device_mark(state_dir: Option<&std::path::Path>) -> String {
    let path = state_dir
        .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf()))
        .unwrap_or_default();
    // FNV-1a: stable across builds and releases (std's hasher is not).
    let h = path
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("vswitchd:{h:016x}")
}

/// Remove the devices marked `mark` in every namespace that `keep` does not name as
/// (namespace, interface): left by an earlier daemon on this state directory (under
/// `--live-restore`) for endpoints the state no longer has. Those `keep` names are left to be
/// taken over. Before any attach, so none collides with an orphan's name or address. The
/// devices removed, as `NETNS/IFNAME`.
pub(super) fn remove_orphans(mark: &str, keep: &BTreeSet<(String, String)>) -> Vec<String> {
    let mut removed = Vec::new();
    for name in crate::sys::netns::names() {
        let Ok(ns) = Netns::open(&name) else {
            continue;
        };
        let found = ns.run_in(|| -> std::io::Result<Vec<String>> {
            let mut nl = Netlink::open()?;
            let mut gone = Vec::new();
            for ifname in crate::sys::netns::interfaces_here()? {
                if keep.contains(&(name.clone(), ifname.clone())) {
                    continue;
                }
                let Some(idx) = nl.link_index(&ifname)? else {
                    continue;
                };
                if nl.link_alias(idx)?.as_deref() == Some(mark) {
                    nl.del_link(idx)?;
                    gone.push(format!("{name}/{ifname}"));
                }
            }
            Ok(gone)
        });
        match found.and_then(|r| r) {
            Ok(gone) => removed.extend(gone),
            Err(e) => log::warn!("looking for orphan devices in namespace {name} failed: {e}"),
        }
    }
    removed
}

/// Drop the last reference to a removed port so its TAP closes (which deletes the device).
/// Workers may hold the previous snapshot for the rest of one wake-up; wait briefly for them
/// (up to a second: never with the control lock held, see [`super::AfterUnlock`]).
pub(super) fn release_port(port: Arc<Port>) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Arc::strong_count(&port) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(port);
}

/// Threads [`release_ports`] and [`in_parallel`] use at most. On the 2-core test VM, 300
/// endpoints were released in 6.7 s from one thread, 1.5 s from 8, 0.73 s from 16, 0.47 s from
/// 64 and 0.41 s from 128: beyond that the kernel's rtnl lock, taken by every close, is the limit.
const RELEASE_THREADS: usize = 64;

/// Release many removed ports at once (shutdown). Closing a TAP's last queue deletes the device,
/// and the kernel then waits for RCU (an `rcu_barrier` in `netdev_run_todo`, about 20 ms on the
/// test VM) before the `close` returns; one port after the other, 1000 endpoints took 26 s.
/// Waits that overlap are shared, so the ports are released from up to [`RELEASE_THREADS`]
/// threads.
pub(super) fn release_ports(ports: Vec<Arc<Port>>) {
    in_parallel(ports, release_port);
}

/// Run `f` on every item, from up to [`RELEASE_THREADS`] threads (the calling thread among
/// them, so the work is done even when no thread can be started); returns when all are done.
pub(super) fn in_parallel<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync) {
    let threads = items.len().min(RELEASE_THREADS);
    let queue = Mutex::new(items);
    let work = || loop {
        let item = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match item {
            Some(item) => f(item),
            None => return,
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads {
            if std::thread::Builder::new()
                .name("vs-release".into())
                .spawn_scoped(s, work)
                .is_err()
            {
                break;
            }
        }
        work();
    });
}

/// Open network namespace `netns` (by name, as `ip netns` keeps them).
pub(super) fn open_netns(netns: &str) -> Result<Netns, Error> {
    Netns::open(netns).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NetnsNotFound(netns.to_string()),
        _ => Error::Device {
            step: "open network namespace",
            source: e,
        },
    })
}

/// Bring interface `ifindex` up (`step` names it in the error).
fn set_up(nl: &mut Netlink, ifindex: u32, step: &'static str) -> Result<(), Error> {
    let up = LinkChange {
        up: Some(true),
        ..Default::default()
    };
    nl.set_link(ifindex, &up).map_err(Error::device(step))
}

#[cfg(test)]
mod test {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn in_parallel_runs_each_item_once_on_several_threads() {
        for n in [0, 1, 5, RELEASE_THREADS * 3 + 1] {
            let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            let threads = Mutex::new(std::collections::HashSet::new());
            in_parallel((0..n).collect(), |i: usize| {
                seen[i].fetch_add(1, Ordering::Relaxed);
                threads.lock().unwrap().insert(std::thread::current().id());
                std::thread::sleep(Duration::from_millis(1));
            });
            assert!(
                seen.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                "{n} items"
            );
            let used = threads.lock().unwrap().len();
            assert!(
                used <= n.clamp(1, RELEASE_THREADS),
                "{n} items on {used} threads"
            );
            if n >= 5 {
                assert!(used > 1, "{n} items on one thread");
            }
        }
    }
}
