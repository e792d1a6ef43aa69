//! The gateway's DNS responder: parse a query and answer it from a name table; an answer must be
//! a well-formed response to the same question.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use switch::dns::{answer, parse_query, Verdict};

fuzz_target!(|data: &[u8]| {
    let lookup = |name: &str| (name.len() % 3 == 0).then_some(Ipv4Addr::new(10, 0, 0, 2));
    let mut out = [0u8; 512];
    let q = parse_query(data);
    for can_forward in [false, true] {
        match answer(data, lookup, can_forward, &mut out) {
            Verdict::Answered(n) => {
                let q = q.clone().expect("answered a query that does not parse");
                assert!(n <= out.len() && n >= 12);
                assert_eq!(u16::from_be_bytes([out[0], out[1]]), q.id);
                assert!(out[2] & 0x80 != 0, "QR bit of a response");
            }
            Verdict::Forward => assert!(can_forward && q.is_some()),
            Verdict::Malformed => assert!(q.is_none()),
        }
    }
});
