//! The endpoint verbs: `attach` (a TAP in the namespace, or one a previous daemon left there)
//! and `detach`, and what a detach leaves to mend: the namespace's default route.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::devices::{self, make_endpoint_device};
use super::journal::Record;
use super::resolv::write_resolv_conf;
use super::state::{AttachWant, Endpoint, State};
use super::{AfterUnlock, Switch, Undo};
use crate::error::Error;
use crate::model::*;
use crate::port::{Device, Port};
use crate::sys::netlink::Netlink;
use crate::sys::netns::Netns;
use crate::wire::VirtioNetHdr;

/// How [`Switch::attach_locked`] gets the endpoint's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AttachMode {
    /// Create a TAP.
    Create,
    /// Take over the TAP named `req.ifname` a previous daemon left in the namespace, or create
    /// one (`--live-restore`).
    Adopt,
    /// No device (the harness's `attach_sink`).
    #[cfg(feature = "harness")]
    Sink,
}

impl Switch {
    /// `attach`: create a TAP endpoint for `req.netns` on `req.network`.
    pub fn attach(&self, req: &AttachRequest) -> Result<EndpointInfo, Error> {
        if let Some(agent) = self.cluster() {
            let vni = self.read().net(&req.network).ok().and_then(|n| n.vni);
            if self.is_cluster_net(vni) {
                return self.attach_cluster(agent, req);
            }
        }
        self.mutate(|st| self.attach_locked(st, req, AttachMode::Create))
    }

    /// Attach: create the device, take over one a previous daemon left (`Adopt`, an existing
    /// TAP named `req.ifname` in the namespace), or use none (`Sink`).
    pub(super) fn attach_locked(
        &self,
        st: &mut State,
        req: &AttachRequest,
        mode: AttachMode,
    ) -> Result<EndpointInfo, Error> {
        let plan = self.plan_attach(st, req)?;
        let made = match mode {
            #[cfg(feature = "harness")]
            AttachMode::Sink => Ok(Made {
                dev: Device::Sink(VirtioNetHdr::LEN),
                ifname: req.ifname.clone().unwrap_or_else(|| "sink0".into()),
                netns_id: None,
            }),
            _ => self.make_device(&plan, mode == AttachMode::Adopt),
        };
        let made = made.inspect_err(|_| unplan(st, &plan))?;
        let real = !matches!(made.dev, Device::Sink(_));
        let (info, port) = self.install_endpoint(st, &plan, made);
        self.sync(st);
        if !real {
            return Ok(info);
        }
        if let Err(e) = self.register(&port) {
            // Undo: without a receive queue the endpoint would be silently deaf.
            let _ = self.remove_endpoint(st, &req.netns, &req.network);
            st.journal.clear();
            st.undo.clear();
            return Err(Error::Device {
                step: "register port with worker",
                source: e,
            });
        }
        write_resolv_conf(st, &req.netns);
        log_attached(&info);
        self.event("endpoint_attached", || {
            serde_json::json!({
                "netns": info.netns, "network": info.network, "port": info.port,
                "ifname": info.ifname, "ip": info.ip, "ip6": info.ip6, "mac": info.mac,
            })
        });
        Ok(info)
    }

    /// The checks of an attach, and what it takes: the address and MAC (reserved), the port
    /// number and the worker.
    pub(super) fn plan_attach(
        &self,
        st: &mut State,
        req: &AttachRequest,
    ) -> Result<AttachPlan, Error> {
        let want = AttachWant::parse(req)?;
        st.check_attachable(req)?;
        let worker = st.least_loaded_for_endpoint(self.epolls.len());
        let port_id = st.next_port;
        let net = st.net_mut(&req.network)?;
        let (ip, ip6, mac) = net.reserve(&want, req)?;
        let dev_net = net.dev_net();
        st.next_port += 1;
        Ok(AttachPlan {
            req: req.clone(),
            ip,
            ip6,
            mac,
            port_id,
            worker,
            dev_net,
        })
    }

    /// The device of a planned attach (no lock needed: it touches only the namespace).
    pub(super) fn make_device(&self, plan: &AttachPlan, adopt: bool) -> Result<Made, Error> {
        if plan.req.handoff {
            // The namespace may not exist yet (Docker makes it when the container starts): its
            // identity is noted later (`Switch::bind_endpoint_namespace`).
            let how = (self.tap_queues(), self.mark.as_str());
            let (tap, ifname) =
                devices::make_handoff_device(&plan.req, plan.mac, plan.dev_net, how)?;
            tap.set_persist(self.opts.live_restore)
                .map_err(Error::device("set TAP persistence"))?;
            return Ok(Made {
                dev: Device::Tap(tap),
                ifname,
                netns_id: None,
            });
        }
        let ns = devices::open_netns(&plan.req.netns)?;
        let how = (self.tap_queues(), adopt, self.mark.as_str());
        let (tap, ifname) = make_endpoint_device(
            &ns,
            &plan.req,
            plan.mac,
            (plan.ip, plan.ip6),
            plan.dev_net,
            how,
        )?;
        // Persistent only under --live-restore; an adopted device of a daemon that had the
        // flag goes with this one when it does not.
        tap.set_persist(self.opts.live_restore)
            .map_err(Error::device("set TAP persistence"))?;
        Ok(Made {
            dev: Device::Tap(tap),
            ifname,
            netns_id: Some(
                ns.id()
                    .map_err(Error::device("identify network namespace"))?,
            ),
        })
    }

    /// Put a planned endpoint with its device in the state and journal it (the caller swaps
    /// the snapshot in and registers the port).
    pub(super) fn install_endpoint(
        &self,
        st: &mut State,
        plan: &AttachPlan,
        made: Made,
    ) -> (EndpointInfo, Arc<Port>) {
        let req = &plan.req;
        let net = st.net_mut(&req.network).expect("planned under this lock");
        let port = Arc::new(Port {
            spoof_check: !req.allow_spoof,
            ip6: plan.ip6,
            ..self.new_port(
                plan.port_id,
                net.id,
                plan.worker,
                made.dev,
                (plan.mac, plan.ip),
            )
        });
        net.neigh.insert(plan.ip, plan.mac);
        net.endpoints.push(Endpoint {
            netns: req.netns.clone(),
            ifname: made.ifname,
            aliases: req.aliases.clone(),
            port: port.clone(),
            pending: None,
            netns_id: made.netns_id,
        });
        let ep = net.endpoints.last().expect("just pushed");
        let info = net.endpoint_info(ep);
        let spec = net.endpoint_spec(ep);
        st.journal.push(Record::Endpoint { spec });
        st.undo.push(Undo::Endpoint {
            netns: req.netns.clone(),
            network: req.network.clone(),
        });
        (info, port)
    }

    /// A handed-over endpoint's namespace now exists under its name (the runtime made it and
    /// it was mounted in /run/netns): note its identity, so that its deletion or replacement
    /// is noticed from now on.
    pub fn bind_endpoint_namespace(&self, netns: &str, network: &str) -> Result<(), Error> {
        let id = crate::sys::netns::id_of(netns)
            .ok_or_else(|| Error::NetnsNotFound(netns.to_string()))?;
        let mut st = self.read();
        let net = st.net_mut(network)?;
        let e = net
            .endpoints
            .iter_mut()
            .find(|e| e.netns == netns)
            .ok_or_else(|| Error::NotAttached {
                netns: netns.to_string(),
                network: network.to_string(),
            })?;
        e.netns_id = Some(id);
        Ok(())
    }

    /// `detach`: remove `netns`'s endpoint on `network` (up or pending). Saved before it is
    /// done: its device and connections cannot be given back.
    pub fn detach(&self, netns: &str, network: &str) -> Result<(), Error> {
        self.mutate(|st| {
            st.endpoint(netns, network)?;
            // A cluster network's endpoint leaves the directory and gives its address back
            // first: if etcd cannot be reached, nothing changes.
            let vni = st.net(network)?.vni;
            if let Some(agent) = self.cluster().filter(|_| self.is_cluster_net(vni)) {
                let keys = self.cluster_endpoint_keys(agent, st, netns, network)?;
                self.delete_cluster_keys(agent, &keys)?;
            }
            st.journal.push(Record::Detach {
                netns: netns.to_string(),
                network: network.to_string(),
            });
            self.commit(st)?;
            self.remove_endpoint(st, netns, network).map(|_| ())
        })
    }

    /// Remove `netns`'s endpoint from `network`: its queues, tables, address, published ports,
    /// connections and (once the lock is released) its device. The endpoint removed.
    pub(super) fn remove_endpoint(
        &self,
        st: &mut State,
        netns: &str,
        network: &str,
    ) -> Result<Endpoint, Error> {
        let (ep, zone, gateway) = st.take_endpoint(netns, network)?;
        self.unregister(&ep.port);
        st.forget_endpoint(network, &ep);
        // Tracked connections go with their endpoint, including hairpin flows into it from
        // other networks (those are in the client's zone; their answers come from the endpoint
        // to its own network's gateway).
        let ip = ep.port.ip;
        let gone = self.shared.ct.remove_where(|f| {
            (f.zone == zone && (f.orig.src == ip || f.reply.src == ip))
                || (f.kind == nat::NatKind::Hairpin && f.reply.src == ip && f.reply.dst == gateway)
        });
        self.flows_gone(&gone, "detached");
        if let Some(ip) = ep.port.ip6 {
            let gateway = st
                .networks()
                .get(network)
                .and_then(|n| n.v6.as_ref())
                .map(|v| v.gateway);
            let gone = self.shared.ct6.remove_where(|f| {
                (f.zone == zone && (f.orig.src == ip || f.reply.src == ip))
                    || (f.kind == nat::NatKind::Hairpin
                        && f.reply.src == ip
                        && Some(f.reply.dst) == gateway)
            });
            self.flows_gone(&gone, "detached");
        }
        self.sync(st);
        // A pending endpoint had a device once (or its namespace's resolv.conf was written at
        // restore): its file goes too. Harness sinks never had one.
        if !matches!(ep.port.dev, Device::Sink(_)) || ep.pending.is_some() {
            write_resolv_conf(st, netns);
        }
        log::info!(
            "detached {}/{} from {network} ({})",
            netns,
            ep.ifname,
            ep.port.name
        );
        self.event("endpoint_detached", || {
            serde_json::json!({
                "netns": netns, "network": network, "port": ep.port.name, "ifname": ep.ifname,
            })
        });
        if let Device::Tap(t) = &ep.port.dev {
            // Detached for good, even under --live-restore.
            let _ = t.set_persist(false);
        }
        // The device goes and the route is mended once the lock is released.
        st.after_unlock.push(AfterUnlock::Release(ep.port.clone()));
        st.after_unlock.extend(next_default_route(st, netns));
        Ok(ep)
    }

    /// Keep the endpoint `req` describes (with its address and MAC, as saved) without a
    /// device, as pending for `reason`: its address stays taken, it is saved and listed, and
    /// `watch` retries it.
    pub(super) fn add_pending(
        &self,
        st: &mut State,
        req: &AttachRequest,
        reason: String,
    ) -> Result<(), Error> {
        let want = AttachWant::parse(req)?;
        st.check_attachable(req)?;
        let port_id = st.next_port;
        let net = st.net_mut(&req.network)?;
        let (ip, ip6, mac) = net.reserve(&want, req)?;
        let port = Arc::new(Port {
            spoof_check: !req.allow_spoof,
            ip6,
            ..self.new_port(
                port_id,
                net.id,
                0,
                Device::Sink(VirtioNetHdr::LEN),
                (mac, ip),
            )
        });
        net.endpoints.push(Endpoint {
            netns: req.netns.clone(),
            // Empty: not chosen yet (the attach that succeeds picks one).
            ifname: req.ifname.clone().unwrap_or_default(),
            aliases: req.aliases.clone(),
            port,
            pending: Some(reason),
            netns_id: None,
        });
        st.next_port += 1;
        Ok(())
    }
}

/// An attach checked and its address reserved ([`Switch::plan_attach`]).
pub(super) struct AttachPlan {
    pub(super) req: AttachRequest,
    ip: Ipv4Addr,
    ip6: Option<std::net::Ipv6Addr>,
    mac: crate::wire::MacAddr,
    port_id: crate::fdb::PortId,
    worker: usize,
    dev_net: devices::DevNet,
}

/// A planned endpoint's device.
pub(super) struct Made {
    dev: Device,
    ifname: String,
    /// The namespace it is in (`None`: a harness sink).
    netns_id: Option<(u64, u64)>,
}

/// Give back what a plan reserved (its device could not be made).
pub(super) fn unplan(st: &mut State, plan: &AttachPlan) {
    if let Ok(net) = st.net_mut(&plan.req.network) {
        net.release(plan.ip, plan.ip6);
    }
}

pub(super) fn log_attached(info: &EndpointInfo) {
    log::info!(
        "attached {}/{} to {} as {} ({} {})",
        info.netns,
        info.ifname,
        info.network,
        info.port,
        info.ip,
        info.mac
    );
}

/// After a detach: if the namespace is still attached elsewhere, the route to add should its
/// default route have gone with the removed interface: by the gateway of its next attachment
/// (as Docker does when the network that gave the default route is disconnected).
fn next_default_route(st: &State, netns: &str) -> Option<AfterUnlock> {
    st.networks().values().find_map(|n| {
        n.endpoints
            .iter()
            .find(|e| e.netns == netns && matches!(e.port.dev, Device::Tap(_)))
            .map(|e| AfterUnlock::DefaultRoute {
                netns: netns.to_string(),
                gateway: n.gateway,
                ifname: e.ifname.clone(),
            })
    })
}

/// Add a default route via `gateway` on `ifname` in `netns` unless it has one. Best effort: the
/// detach is done either way; a failure is logged.
pub(super) fn add_default_route(netns: &str, gateway: Ipv4Addr, ifname: String) {
    let done = Netns::open(netns).and_then(|ns| {
        ns.run_in(move || -> std::io::Result<bool> {
            let mut nl = Netlink::open()?;
            let idx = nl
                .link_index(&ifname)?
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
            nl.add_default_route_v4(gateway, idx)
        })?
    });
    match done {
        Ok(true) => log::info!("{netns}: default route now via {gateway}"),
        Ok(false) => {}
        Err(e) => log::warn!("{netns}: could not add a default route via {gateway}: {e}"),
    }
}
