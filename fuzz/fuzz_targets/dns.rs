//! The gateway's DNS responder: parse a query and answer it from a name table; an answer must be
//! a well-formed response to the same question.
//!
//! Oracles (the question is walked here, independently of `parse_query`): an answer echoes the
//! ID and the question section byte for byte (QNAME, QTYPE, QCLASS), has QR set, opcode 0, RD
//! copied, one question, no authority or additional records; for a known name it carries the
//! one A record pointing at the question with the table's address (A or ANY in class IN) or no
//! answer (other types); an unknown name is forwarded when that is possible and SERVFAIL
//! otherwise; a well-formed standard query (ASCII name) is never called malformed.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use switch::dns::{answer, parse_query, Verdict};

const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn lookup(name: &str) -> Option<Ipv4Addr> {
    (name.len() % 3 == 0).then_some(ADDR)
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
    for can_forward in [false, true] {
        match answer(data, lookup, can_forward, &mut out) {
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
                let ancount = u16::from_be_bytes([r[6], r[7]]);
                let rcode = r[3] & 0x0f;
                assert_eq!(
                    n,
                    end + 16 * usize::from(ancount),
                    "length for {ancount} answers"
                );
                if ancount == 1 {
                    let rr = &r[end..];
                    assert_eq!(
                        rr[..6],
                        [0xc0, 0x0c, 0, 1, 0, 1],
                        "A IN record for the question"
                    );
                    assert_eq!(rr[10..12], [0, 4], "RDLENGTH");
                    assert_eq!(rr[12..16], ADDR.octets(), "address");
                    assert_eq!(rcode, 0);
                } else {
                    assert_eq!(ancount, 0);
                }
                let (qtype, qclass) = (
                    u16::from_be_bytes([data[end - 4], data[end - 3]]),
                    u16::from_be_bytes([data[end - 2], data[end - 1]]),
                );
                assert_eq!((q.qtype, q.qclass, q.end), (qtype, qclass, end));
                if let Some(name) = name {
                    assert_eq!(q.name, name, "the name looked up");
                    let want = match lookup(&name) {
                        Some(_) if qclass == 1 && (qtype == 1 || qtype == 255) => (0, 1),
                        Some(_) => (0, 0),
                        None => {
                            assert!(!can_forward, "an unknown name was answered, not forwarded");
                            (2, 0)
                        }
                    };
                    assert_eq!((rcode, ancount), want, "rcode and answers for {name:?}");
                }
            }
            Verdict::Forward => {
                assert!(can_forward && q.is_some());
                if let Some((_, Some(name), _)) = &mine {
                    assert!(lookup(name).is_none(), "a known name was forwarded");
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
