//! The uplink and what hangs on it: `uplink set`/`rm`, `publish`/`unpublish` (the checks are
//! the state model's) and `conntrack flush`.

use std::sync::Arc;

use super::devices::open_uplink;
use super::journal::Record;
use super::resolv::host_resolver;
use super::state::{zone_of, State, UplinkPlan, UplinkState};
use super::{AfterUnlock, Switch, Undo};
use crate::error::Error;
use crate::model::*;
use crate::neigh::NeighCache;
use crate::port::Device;
use crate::wire::MacAddr;

impl Switch {
    /// `uplink set`.
    pub fn set_uplink(&self, req: &UplinkSet) -> Result<UplinkInfo, Error> {
        self.mutate(|st| {
            self.set_uplink_locked(st, req)?;
            self.uplink_info_locked(st)
        })
    }

    pub(super) fn set_uplink_locked(&self, st: &mut State, req: &UplinkSet) -> Result<(), Error> {
        let plan = st.plan_uplink(req)?;
        let dev = Device::Packet(open_uplink(&req.iface, self.epolls.len())?);
        self.install_uplink(st, req, plan, dev, host_resolver())
    }

    /// Make `dev` the uplink `req` and `plan` describe, in place of the current one.
    pub(super) fn install_uplink(
        &self,
        st: &mut State,
        req: &UplinkSet,
        plan: UplinkPlan,
        dev: Device,
        resolver: Option<std::net::Ipv4Addr>,
    ) -> Result<(), Error> {
        let UplinkPlan {
            ip,
            subnet,
            gateway,
            v6,
        } = plan;
        let ifindex = match &dev {
            Device::Packet(_) => crate::sys::if_nametoindex(&req.iface).ok().flatten(),
            _ => None,
        };
        let prev = self.take_uplink(st);
        let mac = MacAddr::gateway_for(&format!("uplink/{}", req.iface));
        let port = self.infra_port(st, "uplink".into(), crate::port::UPLINK_NET, dev, mac, ip)?;
        st.uplink = Some(UplinkState {
            req: req.clone(),
            ip,
            subnet,
            gateway,
            port,
            neigh: Arc::new(NeighCache::new(300_000)),
            v6,
            neigh6: Arc::new(NeighCache::new(300_000)),
            resolver,
            down: None,
            ifindex,
        });
        st.journal.push(Record::Uplink {
            spec: Some(req.clone()),
        });
        st.undo.push(Undo::Uplink(prev.map(Box::new)));
        self.sync(st);
        log::info!(
            "uplink {} set: {ip}/{} gateway {:?}",
            req.iface,
            subnet.prefix_len(),
            gateway
        );
        Ok(())
    }

    pub(super) fn remove_uplink_locked(&self, st: &mut State) -> bool {
        self.take_uplink(st).is_some()
    }

    /// Remove the uplink (its port released once the lock is), returning it.
    fn take_uplink(&self, st: &mut State) -> Option<UplinkState> {
        let u = st.uplink.take()?;
        self.unregister(&u.port);
        self.sync(st);
        let (gone, gone6) = (self.shared.ct.flush(None), self.shared.ct6.flush(None));
        self.flows_gone(&gone, "uplink_changed");
        self.flows_gone(&gone6, "uplink_changed");
        st.after_unlock.push(AfterUnlock::Release(u.port.clone()));
        Some(u)
    }

    /// `uplink rm`.
    pub fn remove_uplink(&self) -> Result<(), Error> {
        self.mutate(|st| {
            // Saved first: its sockets and the connections through it cannot be given back.
            if st.uplink.is_none() {
                return Err(Error::NoUplink);
            }
            st.journal.push(Record::Uplink { spec: None });
            self.commit(st)?;
            self.remove_uplink_locked(st);
            Ok(())
        })?;
        log::info!("uplink removed");
        Ok(())
    }

    /// `publish`.
    pub fn publish(&self, req: &PublishRequest) -> Result<PublishInfo, Error> {
        self.mutate(|st| self.publish_locked(st, req))
    }

    pub(super) fn publish_locked(
        &self,
        st: &mut State,
        req: &PublishRequest,
    ) -> Result<PublishInfo, Error> {
        let info = st.publish(req)?;
        let ps = st.published.last().expect("just published");
        st.journal.push(Record::Publish { spec: ps.request() });
        st.undo.push(Undo::Publish(ps.proto, ps.host_port));
        self.sync(st);
        log::info!(
            "published {}:{}/{} -> {} {}:{}",
            match info.ip {
                Some(std::net::IpAddr::V6(i)) => format!("[{i}]"),
                Some(i) => i.to_string(),
                None => "*".into(),
            },
            info.host_port,
            info.proto,
            req.netns,
            info.endpoint_ip,
            info.endpoint_port
        );
        Ok(info)
    }

    /// `unpublish`.
    pub fn unpublish(&self, req: &UnpublishRequest) -> Result<(), Error> {
        self.mutate(|st| {
            // Saved first: the connections through the port cannot be given back.
            let i = st.find_published(req)?;
            let p = &st.published[i];
            st.journal.push(Record::Unpublish {
                netns: p.netns.clone(),
                network: p.network.clone(),
                spec: p.spec(),
            });
            self.commit(st)?;
            let gone = st.published.remove(i);
            let flows = self.shared.ct.remove_where(|f| {
                f.kind != nat::conntrack::NatKind::Snat
                    && f.orig.proto == gone.proto
                    && f.orig.dport == gone.host_port
            });
            self.flows_gone(&flows, "unpublished");
            let flows = self.shared.ct6.remove_where(|f| {
                f.kind != nat::conntrack::NatKind::Snat
                    && f.orig.proto == gone.proto
                    && f.orig.dport == gone.host_port
            });
            self.flows_gone(&flows, "unpublished");
            self.sync(st);
            Ok(())
        })
    }

    /// `conntrack flush`.
    pub fn conntrack_flush(&self, network: Option<&str>) -> Result<FlushInfo, Error> {
        // Not `mutate`: the tracked connections are the datapath's, not the control state, and
        // are not persisted; the lock only keeps `network`'s id stable while flushing.
        let st = self.read();
        let zone = zone_of(&st, network)?;
        let (gone, gone6) = (self.shared.ct.flush(zone), self.shared.ct6.flush(zone));
        self.flows_gone(&gone, "flushed");
        self.flows_gone(&gone6, "flushed");
        Ok(FlushInfo {
            flushed: gone.len() + gone6.len(),
        })
    }
}
