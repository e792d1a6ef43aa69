//! The device-less entries for fuzzing and tests: endpoints and an uplink with no device
//! ([`Device::Sink`]), and frames or VXLAN datagrams run through the datapath on the calling
//! thread as if a port had received them. With these the whole datapath runs in one process
//! without root, namespaces or TAPs.

use std::net::SocketAddrV4;

use super::endpoints::AttachMode;
use super::Switch;
use crate::datapath::{Config, Ctx, Scratch};
use crate::error::Error;
use crate::fdb::PortId;
use crate::model::*;
use crate::port::Device;

impl Switch {
    /// Attach an endpoint with no device ([`Device::Sink`]): frames reach it only through
    /// [`Switch::inject`], and what the switch sends it is discarded (counted as sent). A
    /// capture session on its port ([`Switch::capture`]) sees those frames, as on any port:
    /// that is how tests read what the switch sent. No namespace is touched (`req.netns` is
    /// only a name). For fuzzing and tests.
    pub fn attach_sink(&self, req: &AttachRequest) -> Result<EndpointInfo, Error> {
        self.mutate(|st| self.attach_locked(st, req, AttachMode::Sink))
    }

    /// An uplink with no device ([`Device::Sink`]; `req.iface` is only a name): what the switch
    /// sends out is discarded (a capture on `uplink` sees it), frames arrive through
    /// [`Switch::inject`]. For fuzzing and tests.
    pub fn set_uplink_sink(&self, req: &UplinkSet) -> Result<UplinkInfo, Error> {
        self.mutate(|st| {
            let plan = st.plan_uplink(req)?;
            let dev = Device::Sink(crate::sys::packet::VNET_HDR_LEN);
            self.install_uplink(st, req, plan, dev, None)?;
            self.uplink_info_locked(st)
        })
    }

    /// Run `wire` (`[virtio-net header | frame]`, the header as long as the port's device uses:
    /// 12 bytes on endpoints, 10 on the uplink) through the datapath on the calling thread, as if
    /// port `port` had received it. False when there is no such port. With
    /// [`Switch::attach_sink`] and [`Switch::set_uplink_sink`], this runs the whole datapath
    /// without devices: the fuzzing harness.
    pub fn inject(&self, port: PortId, wire: &[u8]) -> bool {
        let cfg = self.shared.config.load();
        let Some(p) = cfg.ports.get(&port) else {
            return false;
        };
        if matches!(p.dev, Device::Vxlan(_)) {
            return false;
        }
        self.on_scratch(&cfg, |ctx| ctx.run_frame(p, wire));
        true
    }

    /// Fuzzing and test hook, the overlay's counterpart of [`Switch::inject`]: run `datagrams`
    /// through the datapath on the calling thread as if the socket of the VTEP port `port` had
    /// received them from `from` in one read (UDP GRO: datagrams of `gso` bytes back to back;
    /// `None`: one datagram; at most 64 KiB). False when `port` is not a VTEP. Nothing else calls
    /// it: the workers read the socket themselves.
    pub fn inject_vxlan(
        &self,
        port: PortId,
        from: SocketAddrV4,
        datagrams: &[u8],
        gso: Option<u16>,
    ) -> bool {
        let cfg = self.shared.config.load();
        let Some(p) = cfg
            .ports
            .get(&port)
            .filter(|p| matches!(p.dev, Device::Vxlan(_)))
        else {
            return false;
        };
        self.on_scratch(&cfg, |ctx| ctx.run_vxlan(p, from.into(), datagrams, gso));
        true
    }

    /// Run `f` on the harness's buffers (one set, behind a lock: one frame at a time), with the
    /// housekeeping thread's counters and the first worker's epoll set.
    fn on_scratch(&self, cfg: &Config, f: impl FnOnce(&mut Ctx<'_>)) {
        let mut s = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let s: &mut Scratch = s.get_or_insert_with(Default::default);
        let counters = self.counters.last().expect("housekeeping counters");
        f(&mut s.ctx(&self.shared, &self.epolls[0], counters, cfg));
    }
}
