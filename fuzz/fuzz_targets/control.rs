//! The control API's request decoding: each request body the daemon accepts, decoded from JSON,
//! then run through the checks the daemon applies before it touches anything (names, subnets,
//! addresses, MACs, port specs, address pools).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switch::control::{parse_publish_spec, parse_unpublish_spec};
use switch::error::check_name;
use switch::ipam::{parse_ipv4, Ipv4Cidr, Pool};
use switch::model::*;
use switch::wire::MacAddr;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    match sel % 8 {
        0 => {
            if let Ok(r) = serde_json::from_slice::<NetworkCreate>(body) {
                let _ = check_name("network", &r.name, 64);
                if let Ok(subnet) = r.subnet.trim().parse::<Ipv4Cidr>() {
                    let gw = r
                        .gateway
                        .as_deref()
                        .map(parse_ipv4)
                        .transpose()
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| subnet.first_host());
                    if subnet.is_host(gw) {
                        let mut pool = Pool::new(subnet, gw);
                        for _ in 0..3 {
                            if let Ok(ip) = pool.next_free() {
                                assert!(subnet.is_host(ip) && ip != gw);
                                assert!(!pool.take(ip).unwrap_or(false), "handed out twice");
                            }
                        }
                    }
                }
                for p in &r.peers {
                    let _ = parse_ipv4(p);
                }
            }
        }
        1 => {
            if let Ok(r) = serde_json::from_slice::<AttachRequest>(body) {
                let _ = check_name("namespace", &r.netns, 255);
                let _ = r.mac.as_deref().map(str::parse::<MacAddr>);
                let _ = r.ip.as_deref().map(parse_ipv4);
                if let Some(i) = &r.ifname {
                    let _ = check_name("interface", i, 15);
                }
                for a in &r.aliases {
                    let _ = check_name("alias", a, 63);
                }
            }
        }
        2 => {
            if let Ok(r) = serde_json::from_slice::<PublishRequest>(body) {
                if let Ok((_, host, ctr, _)) = parse_publish_spec(&r.spec) {
                    assert!(ctr != 0 && host != Some(0));
                }
            }
        }
        3 => {
            if let Ok(r) = serde_json::from_slice::<UnpublishRequest>(body) {
                let _ = parse_unpublish_spec(&r.spec);
            }
        }
        4 => {
            if let Ok(r) = serde_json::from_slice::<UplinkSet>(body) {
                let _ = check_name("interface", &r.iface, 15);
            }
        }
        5 => {
            if let Ok(r) = serde_json::from_slice::<FdbAdd>(body) {
                let _ = r.mac.parse::<MacAddr>();
                let _ = parse_ipv4(&r.vtep);
            }
        }
        6 => {
            let _ = serde_json::from_slice::<LinkRequest>(body);
            let _ = serde_json::from_slice::<PeerRequest>(body);
        }
        _ => {
            if let Ok(s) = std::str::from_utf8(body) {
                if let Ok(m) = s.parse::<MacAddr>() {
                    assert_eq!(m.to_string().parse::<MacAddr>().ok(), Some(m));
                }
                if let Ok(c) = s.parse::<Ipv4Cidr>() {
                    assert_eq!(c.to_string().parse::<Ipv4Cidr>().ok(), Some(c));
                }
            }
        }
    }
});
