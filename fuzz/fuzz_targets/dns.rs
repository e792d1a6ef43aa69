//! The gateway's DNS responder: parse a query and answer it from a name table; an answer must be
//! a well-formed response to the same question.
//!
//! Oracles (the question is walked here, independently of `parse_query`): an answer echoes the
//! ID and the question section byte for byte (QNAME, QTYPE, QCLASS), has QR set, opcode 0, RD
//! copied, one question, no authority or additional records; for a known name it carries
//! exactly the records the table has of the type asked (A, AAAA, both for ANY, in class IN),
//! each pointing at the question with the table's address, and none for other types (NODATA);
//! for a known address's reverse name (in-addr.arpa, ip6.arpa) the one PTR record with its
//! name; an unknown name is forwarded when that is possible and SERVFAIL otherwise; a
//! well-formed standard query (ASCII name) is never called malformed.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use switch::dns::{answer, parse_query, reverse_name, Table, Verdict};

const WEB: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const DUAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const DUAL6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
const SIX6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 4);

fn table() -> Table {
    let mut t = Table::default();
    t.insert4("web".into(), WEB);
    t.insert4("dual".into(), DUAL);
    t.insert6("dual".into(), DUAL6);
    t.insert6("six".into(), SIX6);
    t
}

/// The records (type, data) the oracle expects for `name` asked as `qtype`/`qclass`; `None`
/// when the table does not know the name.
fn expected(name: &str, qtype: u16, qclass: u16) -> Option<Vec<(u16, Vec<u8>)>> {
    let want = |t: u16| qclass == 1 && (qtype == t || qtype == 255);
    let (a, aaaa): (Option<Ipv4Addr>, Option<Ipv6Addr>) = match name {
        "web" => (Some(WEB), None),
        "dual" => (Some(DUAL), Some(DUAL6)),
        "six" => (None, Some(SIX6)),
        _ => {
            let target = match reverse_name(name)? {
                std::net::IpAddr::V4(ip) if ip == WEB => "web",
                std::net::IpAddr::V4(ip) if ip == DUAL => "dual",
                std::net::IpAddr::V6(ip) if ip == DUAL6 => "dual",
                std::net::IpAddr::V6(ip) if ip == SIX6 => "six",
                _ => return None,
            };
            let mut wire = vec![target.len() as u8];
            wire.extend_from_slice(target.as_bytes());
            wire.push(0);
            return Some(if want(12) { vec![(12, wire)] } else { vec![] });
        }
    };
    let mut v = Vec::new();
    if let (true, Some(ip)) = (want(1), a) {
        v.push((1, ip.octets().to_vec()));
    }
    if let (true, Some(ip)) = (want(28), aaaa) {
        v.push((28, ip.octets().to_vec()));
    }
    Some(v)
}

/// The question of a standard query (QR 0, opcode 0, QDCOUNT 1) as RFC 1035 lays it out: the
/// offset just past QTYPE/QCLASS, the name (lower case, dotted) when it is ASCII, and whether
/// it is within the usual limits (labels of at most 63 bytes, name of at most 253 characters).
fn question(msg: &[u8]) -> Option<(usize, Option<String>, bool)> {
    if msg.len() < 12 || msg[2] & 0xf8 != 0 || msg[4..6] != [0, 1] {
        return None;
    }
    let mut i = 12;
    let mut name = Vec::with_capacity(64);
    loop {
        let len = usize::from(*msg.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // a compression pointer or a reserved label type
        }
        let label = msg.get(i..i + len)?;
        if !name.is_empty() {
            name.push(b'.');
        }
        name.extend(label.iter().map(u8::to_ascii_lowercase));
        i += len;
    }
    let end = i + 4;
    let short = name.len() <= 253;
    (msg.len() >= end).then(|| {
        (
            end,
            String::from_utf8(name).ok().filter(|n| n.is_ascii()),
            short,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let mut out = [0u8; 512];
    let q = parse_query(data);
    let mine = question(data);
    let table = table();
    for can_forward in [false, true] {
        match answer(data, &table, can_forward, &mut out) {
            Verdict::Answered(n) => {
                let q = q.clone().expect("answered a query that does not parse");
                let (end, name, _) = mine.clone().expect("answered what is not a standard query");
                assert!(n <= out.len() && n >= end);
                let r = &out[..n];
                assert_eq!(r[..2], data[..2], "ID");
                assert!(r[2] & 0x80 != 0, "QR bit of a response");
                assert_eq!(r[2] & 0x78, 0, "opcode of the response");
                assert_eq!(r[2] & 0x01, data[2] & 0x01, "RD copied");
                assert_eq!(r[12..end], data[12..end], "question section echoed");
                assert_eq!(r[4..6], [0, 1], "QDCOUNT");
                assert_eq!(r[8..12], [0, 0, 0, 0], "NSCOUNT, ARCOUNT");
                let ancount = usize::from(u16::from_be_bytes([r[6], r[7]]));
                let rcode = r[3] & 0x0f;
                // Walk the answer records.
                let mut got = Vec::new();
                let mut at = end;
                for _ in 0..ancount {
                    let rr = &r[at..];
                    assert!(rr.len() >= 12, "record cut short");
                    assert_eq!(rr[..2], [0xc0, 0x0c], "points at the question");
                    assert_eq!(rr[4..6], [0, 1], "class IN");
                    let len = usize::from(u16::from_be_bytes([rr[10], rr[11]]));
                    got.push((
                        u16::from_be_bytes([rr[2], rr[3]]),
                        rr[12..12 + len].to_vec(),
                    ));
                    at += 12 + len;
                }
                assert_eq!(at, n, "length for {ancount} answers");
                let (qtype, qclass) = (
                    u16::from_be_bytes([data[end - 4], data[end - 3]]),
                    u16::from_be_bytes([data[end - 2], data[end - 1]]),
                );
                assert_eq!((q.qtype, q.qclass, q.end), (qtype, qclass, end));
                if let Some(name) = name {
                    assert_eq!(q.name, name, "the name looked up");
                    match expected(&name, qtype, qclass) {
                        Some(want) => {
                            assert_eq!(rcode, 0);
                            assert_eq!(got, want, "records for {name:?}");
                        }
                        None => {
                            assert!(!can_forward, "an unknown name was answered, not forwarded");
                            assert_eq!((rcode, ancount), (2, 0), "SERVFAIL for {name:?}");
                        }
                    }
                }
            }
            Verdict::Forward => {
                assert!(can_forward && q.is_some());
                if let Some((_, Some(name), _)) = &mine {
                    assert!(expected(name, 1, 1).is_none(), "a known name was forwarded");
                }
            }
            Verdict::Malformed => {
                assert!(q.is_none());
                if let Some((_, Some(_), true)) = &mine {
                    panic!("a well-formed query was called malformed");
                }
            }
        }
    }
});
