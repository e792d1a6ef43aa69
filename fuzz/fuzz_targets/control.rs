//! The control API's request decoding: each request body the daemon accepts, decoded from JSON,
//! then run through the checks the daemon applies before it touches anything (names, subnets,
//! addresses, MACs, port specs, address pools).
//!
//! Oracles: every check either accepts or refuses with a message of one non-empty line (no
//! CR/LF: it goes into logs and one-line CLI errors); an accepted name has only the characters
//! and length the rules allow (it becomes a file or interface name); accepted port specs have
//! non-zero ports; an address pool hands out host addresses of its subnet, never the gateway,
//! never twice; accepted MACs and subnets print and parse back to themselves.
#![no_main]

use std::fmt::Display;

use libfuzzer_sys::fuzz_target;
use switch::control::{parse_publish_spec, parse_unpublish_spec};
use switch::error::check_name;
use switch::ipam::{parse_ipv4, Ipv4Cidr, Pool};
use switch::model::*;
use switch::wire::MacAddr;

/// A check's result: refusals are one non-empty line.
fn checked<T, E: Display>(r: Result<T, E>) -> Result<T, E> {
    if let Err(e) = &r {
        let m = e.to_string();
        assert!(!m.trim().is_empty(), "empty error message");
        assert!(
            !m.contains(['\n', '\r']),
            "error message of several lines: {m:?}"
        );
    }
    r
}

/// `check_name`, and what an accepted name must look like.
fn name(what: &'static str, n: &str, max: usize) -> bool {
    let ok = checked(check_name(what, n, max)).is_ok();
    if ok {
        assert!(
            !n.is_empty() && n.len() <= max,
            "{what} name {n:?} of a bad length accepted"
        );
        assert!(!n.starts_with(['-', '.']), "{what} name {n:?} accepted");
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)),
            "{what} name {n:?} accepted"
        );
    }
    ok
}

fn mac(s: &str) -> Option<MacAddr> {
    let m = checked(s.parse::<MacAddr>()).ok()?;
    assert_eq!(
        m.to_string().parse::<MacAddr>().ok(),
        Some(m),
        "MAC round trip"
    );
    Some(m)
}

fn cidr(s: &str) -> Option<Ipv4Cidr> {
    let c = checked(s.parse::<Ipv4Cidr>()).ok()?;
    assert_eq!(
        c.to_string().parse::<Ipv4Cidr>().ok(),
        Some(c),
        "CIDR round trip"
    );
    Some(c)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    match sel % 8 {
        0 => {
            if let Ok(r) = serde_json::from_slice::<NetworkCreate>(body) {
                name("network", &r.name, 64);
                if let Some(subnet) = cidr(r.subnet.trim()) {
                    let gw = match r.gateway.as_deref().map(|g| checked(parse_ipv4(g))) {
                        Some(Ok(g)) => g,
                        Some(Err(_)) => subnet.first_host(),
                        None => subnet.first_host(),
                    };
                    if subnet.is_host(gw) {
                        let mut pool = Pool::new(subnet, gw);
                        for _ in 0..3 {
                            if let Ok(ip) = checked(pool.next_free()) {
                                assert!(subnet.is_host(ip) && ip != gw);
                                assert!(
                                    !checked(pool.take(ip)).unwrap_or(false),
                                    "handed out twice"
                                );
                            }
                        }
                    }
                }
                for p in &r.peers {
                    let _ = checked(parse_ipv4(p));
                }
            }
        }
        1 => {
            if let Ok(r) = serde_json::from_slice::<AttachRequest>(body) {
                name("namespace", &r.netns, 255);
                name("network", &r.network, 64);
                let _ = r.mac.as_deref().map(mac);
                let _ = r.ip.as_deref().map(|ip| checked(parse_ipv4(ip)));
                if let Some(i) = &r.ifname {
                    name("interface", i, 15);
                }
                for a in &r.aliases {
                    name("alias", a, 63);
                }
            }
        }
        2 => {
            if let Ok(r) = serde_json::from_slice::<PublishRequest>(body) {
                name("namespace", &r.netns, 255);
                if let Ok((_, host, ctr, _)) = checked(parse_publish_spec(&r.spec)) {
                    assert!(ctr != 0 && host != Some(0));
                }
            }
        }
        3 => {
            if let Ok(r) = serde_json::from_slice::<UnpublishRequest>(body) {
                name("namespace", &r.netns, 255);
                if let Ok((_, port, _)) = checked(parse_unpublish_spec(&r.spec)) {
                    assert_ne!(port, 0);
                }
            }
        }
        4 => {
            if let Ok(r) = serde_json::from_slice::<UplinkSet>(body) {
                name("interface", &r.iface, 15);
                if let Some(g) = &r.gateway {
                    let _ = checked(parse_ipv4(g));
                }
            }
        }
        5 => {
            if let Ok(r) = serde_json::from_slice::<FdbAdd>(body) {
                name("network", &r.network, 64);
                let _ = mac(&r.mac);
                let _ = checked(parse_ipv4(&r.vtep));
            }
        }
        6 => {
            if let Ok(r) = serde_json::from_slice::<LinkRequest>(body) {
                name("network", &r.peer, 64);
            }
            if let Ok(r) = serde_json::from_slice::<PeerRequest>(body) {
                let _ = checked(parse_ipv4(&r.ip));
            }
        }
        _ => {
            if let Ok(s) = std::str::from_utf8(body) {
                let _ = mac(s);
                let _ = cidr(s);
                let _ = checked(parse_ipv4(s));
                name("network", s, 64);
            }
        }
    }
});
