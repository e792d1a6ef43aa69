//! `vswitchctl trace`: a packet run through the real datapath stages as a dry run. The frame is
//! built from a description ([`crate::packet_spec`]) or given whole, and run over a shadow of
//! the live configuration and tables ([`crate::datapath::trace::Shadow`]): the stages note what
//! they looked up and decided, the shadow ports catch what would have been sent, and fresh
//! counters show the drop or event it would have counted. No live table changes and nothing
//! is sent.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::Switch;
use crate::counters::WorkerCounters;
use crate::datapath::trace::{Shadow, Trace};
use crate::error::Error;
use crate::model::{TraceInfo, TraceOutput, TraceRequest, TraceStep};
use crate::packet_spec::{describe, hex, unhex, Spec};
use crate::port::{Device, Port};
use wire::ethernet::MacAddr;

/// The Ethernet source of a packet traced from the uplink, when the description gives none (a
/// locally administered address: some host on the uplink's link).
const OUTSIDE_MAC: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0x00, 0x53, 0x01]);

/// Where a traced packet enters.
struct Entry {
    port: Arc<Port>,
    from: String,
    network: String,
    /// The network's gateway MAC and the endpoint neighbours, to address the frame.
    gateway_mac: Option<MacAddr>,
    gateway: Option<IpAddr>,
}

impl Switch {
    /// Trace `req`'s packet: see the module documentation.
    pub fn trace(&self, req: &TraceRequest) -> Result<TraceInfo, Error> {
        let entry = self.trace_entry(req)?;
        let frame = self.trace_frame(req, &entry)?;
        let shadow = Shadow::of(&self.shared);
        let Some(port) = shadow.cfg.ports.get(&entry.port.id).cloned() else {
            return Err(Error::Trace(format!(
                "{} has no device yet (pending): nothing would be read from it",
                entry.from
            )));
        };
        let counters = WorkerCounters::default();
        let trace = Trace::default();
        let mut wire = vec![0u8; port.dev.hdr_len()];
        wire.extend_from_slice(&frame);
        {
            let mut s = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
            let s = s.get_or_insert_with(Default::default);
            s.run_traced(&shadow, &self.epolls[0], &counters, &port, &wire, &trace);
        }
        let names = self.trace_names();
        let name_of = |p: &Port| names.get(&p.id).cloned().unwrap_or_else(|| p.name.clone());
        // What the shadow ports were given, in port order.
        let mut ports: Vec<&Arc<Port>> = shadow.cfg.ports.values().collect();
        ports.sort_by_key(|p| p.id);
        let arp_in = is_arp(&frame);
        let mut outputs = Vec::new();
        for p in ports {
            let Device::Shadow(dev) = &p.dev else {
                continue;
            };
            for f in dev.take_sent() {
                outputs.push(TraceOutput {
                    port: p.name.clone(),
                    to: name_of(p),
                    summary: describe(&f),
                    vxlan: None,
                    generated: !arp_in && is_arp(&f),
                    frame: hex(&f),
                });
            }
        }
        for v in trace.vxlan() {
            outputs.push(TraceOutput {
                port: "vtep".into(),
                to: format!("vtep {}", v.dst),
                summary: describe(&v.inner),
                vxlan: Some(format!(
                    "VNI {}, outer {} > {} UDP {} > {}",
                    v.vni, v.src, v.dst, v.sport, v.dport
                )),
                generated: !arp_in && is_arp(&v.inner),
                frame: hex(&v.inner),
            });
        }
        let (mut drops, mut events) = (BTreeMap::new(), BTreeMap::new());
        counters.sum_into(&mut drops, &mut events);
        drops.retain(|_, n| *n > 0);
        events.retain(|_, n| *n > 0);
        let verdict = verdict(&outputs, &drops);
        Ok(TraceInfo {
            port: entry.port.name.clone(),
            from: entry.from,
            network: entry.network,
            packet: describe(&frame),
            frame: hex(&frame),
            steps: trace
                .notes()
                .into_iter()
                .map(|n| TraceStep {
                    stage: n.stage.to_string(),
                    detail: n.detail,
                })
                .collect(),
            outputs,
            drops,
            events,
            verdict,
        })
    }

    /// The port `req.from` names.
    fn trace_entry(&self, req: &TraceRequest) -> Result<Entry, Error> {
        let st = self.read();
        let from = req.from.as_str();
        if from == "uplink" || st.uplink.as_ref().is_some_and(|u| u.port.name == from) {
            let u = st.uplink.as_ref().ok_or(Error::NoUplink)?;
            return Ok(Entry {
                port: u.port.clone(),
                from: "uplink".into(),
                network: String::new(),
                gateway_mac: None,
                gateway: None,
            });
        }
        let (ns, ifname) = match from.split_once('/') {
            Some((ns, i)) => (ns, Some(i)),
            None => (from, None),
        };
        let found: Vec<_> = st
            .networks()
            .values()
            .filter(|n| req.network.as_deref().is_none_or(|w| w == n.name))
            .flat_map(|n| n.endpoints.iter().map(move |e| (n, e)))
            .filter(|(_, e)| {
                e.port.name == from || (e.netns == ns && ifname.is_none_or(|i| i == e.ifname))
            })
            .collect();
        match found.as_slice() {
            [(n, e)] => Ok(Entry {
                port: e.port.clone(),
                from: format!("{}/{}", e.netns, e.ifname),
                network: n.name.clone(),
                gateway_mac: Some(n.gateway_mac),
                gateway: Some(n.gateway.into()),
            }),
            [] => Err(Error::Trace(format!(
                "'{from}' is not an endpoint (NETNS, NETNS/IFNAME or a port name like p3) or \
                 'uplink'{}",
                req.network
                    .as_ref()
                    .map(|n| format!(" of network '{n}'"))
                    .unwrap_or_default()
            ))),
            many => Err(Error::Trace(format!(
                "'{from}' has endpoints on several networks ({}): give NETNS/IFNAME or --network",
                many.iter()
                    .map(|(n, e)| format!("{}/{} on {}", e.netns, e.ifname, n.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The frame to run: given whole, or built from the description and addressed as the
    /// endpoint would address it (to the destination's MAC on its own network, else to the
    /// gateway's; from the uplink, to the switch's uplink MAC).
    fn trace_frame(&self, req: &TraceRequest, entry: &Entry) -> Result<Vec<u8>, Error> {
        match (&req.frame, &req.packet) {
            (Some(h), None) => {
                let f = unhex(h).ok_or_else(|| {
                    Error::Trace("the frame is not hex (two digits a byte)".into())
                })?;
                if !(14..=65_535).contains(&f.len()) {
                    return Err(Error::Trace(format!(
                        "a frame of {} bytes: an Ethernet frame is 14 to 65535 bytes",
                        f.len()
                    )));
                }
                Ok(f)
            }
            (None, Some(text)) => {
                let spec: Spec = text.parse().map_err(Error::Trace)?;
                let dst_mac = match &req.dst_mac {
                    Some(m) => Some(m.parse::<MacAddr>().map_err(|_| {
                        Error::Trace(format!("--dst-mac '{}' is not a MAC address", m))
                    })?),
                    None => None,
                };
                let src_mac = if entry.gateway_mac.is_some() {
                    entry.port.mac
                } else {
                    OUTSIDE_MAC
                };
                let dst_mac = match (dst_mac, spec.dst_mac) {
                    (Some(m), _) | (None, Some(m)) => m,
                    (None, None) => self.trace_next_hop(&spec, entry)?,
                };
                let ip4 = |a: IpAddr| match a {
                    IpAddr::V4(a) => a,
                    IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
                };
                let sender = if entry.gateway_mac.is_some() {
                    entry.port.ip
                } else {
                    ip4(spec.src.ip())
                };
                Ok(spec.frame(src_mac, dst_mac, sender))
            }
            _ => Err(Error::Trace(
                "give the packet either as a description or as a hex frame, not both".into(),
            )),
        }
    }

    /// The Ethernet destination an endpoint (or a host on the uplink) would use for `spec`.
    fn trace_next_hop(&self, spec: &Spec, entry: &Entry) -> Result<MacAddr, Error> {
        if spec.what == crate::packet_spec::What::Arp {
            return Ok(MacAddr::BROADCAST);
        }
        let cfg = self.shared.config.load();
        let Some(gw_mac) = entry.gateway_mac else {
            // From the uplink: to the switch.
            return cfg.uplink.as_ref().map(|u| u.mac).ok_or(Error::NoUplink);
        };
        let dst = spec.dst.ip();
        if Some(dst) == entry.gateway {
            return Ok(gw_mac);
        }
        let Some(net) = cfg.networks.get(&entry.port.network) else {
            return Ok(gw_mac);
        };
        let on_link = match dst {
            IpAddr::V4(d) => net
                .subnet
                .contains(d)
                .then(|| net.neigh.get(&d).map(|m| *m)),
            IpAddr::V6(d) => net.v6.as_ref().and_then(|v6| {
                if v6.is_gateway(d) {
                    return Some(Some(gw_mac));
                }
                v6.subnet.contains(d).then(|| {
                    v6.neigh
                        .get(&d)
                        .copied()
                        .or_else(|| v6.learned.get(&d).map(|m| *m))
                })
            }),
        };
        match on_link {
            None => Ok(gw_mac),
            Some(Some(m)) => Ok(m),
            Some(None) => Err(Error::Trace(format!(
                "the switch knows no MAC for {dst} (a host would ask by ARP first: trace 'arp \
                 who-has {dst}'); give --dst-mac to send to a MAC of your choice"
            ))),
        }
    }

    /// Port ids to `NETNS/IFNAME` (endpoints) or `uplink`.
    fn trace_names(&self) -> BTreeMap<u32, String> {
        let st = self.read();
        let mut m: BTreeMap<u32, String> = st
            .networks()
            .values()
            .flat_map(|n| n.endpoints.iter())
            .map(|e| (e.port.id, format!("{}/{}", e.netns, e.ifname)))
            .collect();
        if let Some(u) = &st.uplink {
            m.insert(u.port.id, "uplink".into());
        }
        m
    }
}

/// The outcome in one line, for the traced packet (ARP requests the switch made on the way
/// are not the packet).
fn verdict(outputs: &[TraceOutput], drops: &BTreeMap<String, u64>) -> String {
    let to: Vec<&str> = outputs
        .iter()
        .filter(|o| !o.generated)
        .map(|o| o.to.as_str())
        .collect();
    let asked = outputs.iter().any(|o| o.generated);
    match (to.as_slice(), drops.keys().next()) {
        ([], Some(d)) if asked => {
            format!("dropped ({d}); the switch asks for the next hop's MAC by ARP")
        }
        ([], Some(d)) => format!("dropped ({d})"),
        ([], None) if asked => {
            "held for the next hop's MAC (up to a second); the switch asks for it by ARP".into()
        }
        ([], None) => "consumed by the switch (nothing sent)".into(),
        ([one], None) => format!("delivered to {one}"),
        (many, None) => format!("sent to {}", many.join(", ")),
        (many, Some(d)) => format!("sent to {}; some copies dropped ({d})", many.join(", ")),
    }
}

/// An ARP frame (the ethertype, past one 802.1Q tag).
fn is_arp(f: &[u8]) -> bool {
    let et = |at: usize| f.get(at..at + 2).map(|b| [b[0], b[1]]);
    match et(12) {
        Some([0x81, 0x00]) => et(16) == Some([0x08, 0x06]),
        e => e == Some([0x08, 0x06]),
    }
}
