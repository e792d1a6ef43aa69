//! The whole datapath on frames from any port: a switch with two linked networks, three
//! endpoints (one with port security off), a published port and an uplink, all of them sink
//! ports (no devices). Each input is `[port selector | virtio-net header | frame]` and runs
//! through everything a worker does with a frame it read: header checks, spoofing checks,
//! learning, flooding, ARP and ICMP answers, DNS, routing, NAT with conntrack, ICMP errors,
//! offload metadata. The tables persist across inputs, as in the daemon (limits kept small so
//! the full-table paths run too).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use switch::model::*;
use switch::{Options, Switch};

struct Lab {
    sw: Arc<Switch>,
    ports: Vec<(u32, usize)>,
}

fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        let sw = Switch::start(Options {
            workers: 1,
            fdb_limit: 64,
            ct_max: 256,
            ..Options::default()
        })
        .expect("start switch");
        for (name, subnet) in [("front", "10.9.0.0/24"), ("back", "10.9.1.0/24")] {
            sw.create_network(&NetworkCreate::flat(name, subnet))
                .expect("network");
        }
        sw.link("front", "back", true).expect("link");
        let mut ports = Vec::new();
        for (ns, net, spoof) in [
            ("a", "front", false),
            ("b", "front", true),
            ("c", "back", false),
        ] {
            let e = sw
                .attach_sink(&AttachRequest {
                    aliases: vec!["web".into()],
                    allow_spoof: spoof,
                    ..AttachRequest::new(ns, net)
                })
                .expect("attach");
            ports.push((sw.port_id(&e.port).expect("port"), 12));
        }
        sw.set_uplink_sink(&UplinkSet {
            iface: "up0".into(),
            ip: "198.51.100.1/24".into(),
            gateway: Some("198.51.100.254".into()),
        })
        .expect("uplink");
        ports.push((sw.port_id("uplink").expect("uplink"), 10));
        sw.publish(&PublishRequest {
            netns: "a".into(),
            spec: "8080:80".into(),
            network: None,
        })
        .expect("publish");
        Lab { sw, ports }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, wire)) = data.split_first() else {
        return;
    };
    let lab = lab();
    let (port, _hdr) = lab.ports[usize::from(sel) % lab.ports.len()];
    assert!(lab.sw.inject(port, wire));
});
