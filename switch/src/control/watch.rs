//! What appears and vanishes under a running daemon, checked every second by the housekeeping
//! thread (a periodic check: one `stat` per endpoint and one interface lookup; namespaces come
//! and go as bind mounts, which inotify does not report reliably):
//! - an endpoint whose namespace is deleted (`ip netns del`) or replaced by another of the same
//!   name turns *pending*: its device and connections are freed, its address, MAC and published
//!   ports are kept, and it comes back when a namespace of that name exists again, until it is
//!   detached;
//! - a pending endpoint (from restore, or as above) is attached as soon as its namespace exists;
//! - an uplink whose interface is deleted turns *down* (its sockets closed, so nothing is sent
//!   into the void and no counter climbs) and is opened again when an interface of that name
//!   exists.
//!
//! None of this changes the saved state: pending and down are what the state already says,
//! without a device.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::devices::open_uplink;
use super::endpoints::AttachMode;
use super::resolv::host_resolver;
use super::state::State;
use super::Switch;
use crate::model::{AttachRequest, UplinkSet};
use crate::port::{Device, Port};
use crate::sys::netns;
use crate::wire::VirtioNetHdr;

/// What one look at the state found to check outside the lock.
struct Look {
    /// Up endpoints: (netns, network, the namespace they were put in).
    up: Vec<(String, String, (u64, u64))>,
    /// Pending endpoints: (netns, network).
    pending: Vec<(String, String)>,
    /// The uplink: (interface, its index when opened, down).
    uplink: Option<(String, Option<u32>, bool)>,
}

impl Switch {
    /// One round of checks (see the module comment). Not while restoring: restore does the
    /// first round itself.
    pub(super) fn watch(&self) {
        if self.restoring.load(Ordering::Acquire) {
            return;
        }
        self.follow_renames();
        let look = {
            let st = self.read();
            if st.shutting_down {
                return;
            }
            let mut look = Look {
                up: Vec::new(),
                pending: Vec::new(),
                uplink: st
                    .uplink
                    .as_ref()
                    .filter(|u| !matches!(u.port.dev, Device::Sink(_)) || u.down.is_some())
                    .map(|u| (u.req.iface.clone(), u.ifindex, u.down.is_some())),
            };
            for n in st.networks().values() {
                for e in &n.endpoints {
                    match (&e.pending, e.netns_id) {
                        (Some(_), _) => look.pending.push((e.netns.clone(), n.name.clone())),
                        (None, Some(id)) => look.up.push((e.netns.clone(), n.name.clone(), id)),
                        (None, None) => {} // a harness sink
                    }
                }
            }
            look
        };
        // Outside the lock: one stat per endpoint.
        let gone: Vec<_> = look
            .up
            .into_iter()
            .filter_map(|(ns, net, id)| {
                let why = match netns::id_of(&ns) {
                    None => format!("namespace {ns} was deleted"),
                    Some(now) if now != id => format!("namespace {ns} was replaced"),
                    Some(_) => return None,
                };
                Some((ns, net, id, why))
            })
            .collect();
        let back: Vec<_> = look
            .pending
            .into_iter()
            .filter(|(ns, _)| netns::id_of(ns).is_some())
            .collect();
        let uplink = look.uplink.and_then(|(iface, idx, down)| {
            let now = crate::sys::if_nametoindex(&iface).ok().flatten();
            match (down, now) {
                (false, None) => Some(format!("interface {iface} was deleted")),
                (false, Some(i)) if Some(i) != idx => {
                    Some(format!("interface {iface} was replaced"))
                }
                (true, Some(_)) => Some(String::new()), // back: reopen
                _ => None,
            }
        });
        if gone.is_empty() && back.is_empty() && uplink.is_none() {
            return;
        }
        let mut st = self.read();
        if st.shutting_down {
            return;
        }
        for (ns, net, id, why) in gone {
            self.endpoint_gone(&mut st, &ns, &net, id, why);
        }
        for (ns, net) in back {
            self.retry_pending(&mut st, &ns, &net);
        }
        match uplink {
            Some(why) if why.is_empty() => self.retry_uplink(&mut st),
            Some(why) => self.uplink_down(&mut st, why),
            None => {}
        }
        st.journal.clear();
        st.undo.clear();
        Self::unlock(st);
    }

    /// Endpoint devices renamed by someone else (Docker names the interface a plugin hands it
    /// `ethN` in the container): the new name is kept and saved, so a restart makes the
    /// device under the name the container knows.
    fn follow_renames(&self) {
        let renamed: Vec<(String, String, String)> = {
            let st = self.read();
            st.networks()
                .values()
                .flat_map(|n| n.endpoints.iter().map(move |e| (n, e)))
                .filter_map(|(n, e)| {
                    let Device::Tap(tap) = &e.port.dev else {
                        return None;
                    };
                    let now = tap.current_name().ok()?;
                    (now != e.ifname).then(|| (n.name.clone(), e.netns.clone(), now))
                })
                .collect()
        };
        if renamed.is_empty() {
            return;
        }
        let r = self.mutate(|st| {
            for (network, netns, now) in &renamed {
                let Ok(net) = st.net_mut(network) else {
                    continue;
                };
                let Some(i) = net.endpoints.iter().position(|e| e.netns == *netns) else {
                    continue;
                };
                log::info!(
                    "{netns}/{} on {network} was renamed {now}",
                    net.endpoints[i].ifname
                );
                net.endpoints[i].ifname = now.clone();
                let spec = net.endpoint_spec(&net.endpoints[i]);
                st.journal.push(super::journal::Record::Endpoint { spec });
            }
            Ok(())
        });
        if let Err(e) = r {
            log::warn!("saving renamed endpoint interfaces failed: {e}");
        }
    }

    /// The namespace of `netns`'s endpoint on `network` went away: free its device, keep the
    /// rest as pending.
    fn endpoint_gone(
        &self,
        st: &mut State,
        netns: &str,
        network: &str,
        id: (u64, u64),
        why: String,
    ) {
        let Ok(net) = st.net_mut(network) else {
            return;
        };
        let Some(e) = net
            .endpoints
            .iter_mut()
            .find(|e| e.netns == netns && e.netns_id == Some(id) && e.pending.is_none())
        else {
            return; // detached or changed meanwhile
        };
        let old = e.port.clone();
        e.port = Arc::new(Port {
            spoof_check: old.spoof_check,
            ..self.new_port(
                old.id,
                old.network,
                0,
                Device::Sink(VirtioNetHdr::LEN),
                (old.mac, old.ip),
            )
        });
        e.pending = Some(why.clone());
        e.netns_id = None;
        net.fdb.flush_port(old.id);
        net.neigh.remove_if(&old.ip, |_, m| *m == old.mac);
        let zone = net.id;
        self.unregister(&old);
        let ip = old.ip;
        let gone = self
            .shared
            .ct
            .remove_where(|f| f.zone == zone && (f.orig.src == ip || f.reply.src == ip));
        self.flows_gone(&gone, "pending");
        if let Some(ip) = old.ip6 {
            let gone = self
                .shared
                .ct6
                .remove_where(|f| f.zone == zone && (f.orig.src == ip || f.reply.src == ip));
            self.flows_gone(&gone, "pending");
        }
        if let Device::Tap(t) = &old.dev {
            let _ = t.set_persist(false);
        }
        self.sync(st);
        log::warn!(
            "endpoint {netns} on {network} ({}) is pending: {why}; its address {ip} is kept \
             until it is detached, and it is attached again when a namespace {netns} exists",
            old.name
        );
        self.event("endpoint_pending", || {
            serde_json::json!({
                "netns": netns, "network": network, "port": old.name, "reason": why,
            })
        });
        st.after_unlock.push(super::AfterUnlock::Release(old));
    }

    /// Try to attach a pending endpoint (its namespace exists now). On a refusal it stays
    /// pending with the new reason (logged when the reason changes).
    fn retry_pending(&self, st: &mut State, netns: &str, network: &str) {
        let Ok(net) = st.net_mut(network) else {
            return;
        };
        let Some(i) = net
            .endpoints
            .iter()
            .position(|e| e.netns == netns && e.pending.is_some())
        else {
            return;
        };
        let e = net.endpoints.remove(i);
        let spec: AttachRequest = net.endpoint_spec(&e);
        net.release(e.port.ip, e.port.ip6);
        let old_reason = e.pending.unwrap_or_default();
        match self.attach_locked(st, &spec, AttachMode::Adopt) {
            Ok(info) => log::info!(
                "endpoint {netns} on {network} is up again: {}/{} {} ({})",
                info.netns,
                info.ifname,
                info.ip,
                info.port
            ),
            Err(err) => {
                let reason = err.to_string();
                if reason != old_reason {
                    log::warn!("endpoint {netns} on {network} is still pending: {reason}");
                }
                if let Err(e2) = self.add_pending(st, &spec, reason) {
                    log::error!(
                        "endpoint {netns} on {network} could not be kept as pending ({e2}); \
                         kept in the state as it was"
                    );
                    st.unrestored.endpoints.push(spec);
                }
            }
        }
    }

    /// The uplink's interface went away: close its sockets, keep it as down.
    fn uplink_down(&self, st: &mut State, why: String) {
        let Some(u) = st.uplink.as_mut() else {
            return;
        };
        let old = u.port.clone();
        u.port = Arc::new(Port {
            name: old.name.clone(),
            spoof_check: false,
            ..self.new_port(
                old.id,
                old.network,
                old.worker,
                Device::Sink(crate::sys::packet::VNET_HDR_LEN),
                (old.mac, old.ip),
            )
        });
        u.down = Some(why.clone());
        u.ifindex = None;
        let iface = u.req.iface.clone();
        self.unregister(&old);
        self.sync(st);
        log::warn!(
            "uplink {iface} is down: {why}; nothing goes out through it until an interface \
             {iface} exists again"
        );
        st.after_unlock.push(super::AfterUnlock::Release(old));
    }

    /// Open a down uplink's interface again (it exists now).
    fn retry_uplink(&self, st: &mut State) {
        let Some(u) = st.uplink.as_ref() else {
            return;
        };
        let (req, old_reason) = (u.req.clone(), u.down.clone().unwrap_or_default());
        let r = st.plan_uplink(&req).and_then(|plan| {
            let dev = Device::Packet(open_uplink(&req.iface, self.epolls.len())?);
            self.install_uplink(st, &req, plan, dev, host_resolver())
        });
        match r {
            Ok(()) => log::info!("uplink {} is up again", req.iface),
            Err(e) => {
                let reason = e.to_string();
                if reason != old_reason {
                    log::warn!("uplink {} is still down: {reason}", req.iface);
                }
                if let Some(u) = st.uplink.as_mut() {
                    u.down = Some(reason);
                }
            }
        }
    }

    /// Restore the uplink `req`: opened, or kept as down with the reason when its interface
    /// cannot be opened (missing while the host boots, say), or (when even that is refused)
    /// kept in the state as it was.
    pub(super) fn restore_uplink(&self, st: &mut State, req: &UplinkSet) {
        let err = match self.set_uplink_locked(st, req) {
            Ok(()) => return,
            Err(e) => e,
        };
        let reason = err.to_string();
        let r = st.plan_uplink(req).and_then(|plan| {
            let dev = Device::Sink(crate::sys::packet::VNET_HDR_LEN);
            self.install_uplink(st, req, plan, dev, host_resolver())
        });
        match r {
            Ok(()) => {
                if let Some(u) = st.uplink.as_mut() {
                    u.down = Some(reason.clone());
                }
                self.sync(st);
                log::warn!(
                    "uplink {} is down: {reason}; it is opened when the interface exists",
                    req.iface
                );
            }
            Err(e) => {
                log::error!(
                    "restoring uplink {} failed: {reason} ({e}); kept in the state as it was",
                    req.iface
                );
                st.unrestored.uplink = Some(req.clone());
            }
        }
    }
}
