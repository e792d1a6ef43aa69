//! The embedded DNS responder's message handling: parse a query, answer it from the network's
//! name table (A records for endpoint names and aliases), or say it must be forwarded, or
//! SERVFAIL. Pure: bytes in, bytes out (RFC 1035 sections 4.1.1-4.1.3).

use std::net::Ipv4Addr;

/// Seconds clients may cache an answer (short: endpoints come and go).
pub const TTL: u32 = 10;

/// A parsed question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Query id.
    pub id: u16,
    /// Lower-case name without the trailing dot.
    pub name: String,
    /// QTYPE (1 = A).
    pub qtype: u16,
    /// QCLASS (1 = IN).
    pub qclass: u16,
    /// Offset just after the question section.
    pub end: usize,
    /// Flags word of the query.
    pub flags: u16,
}

/// What to do with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A response of this many bytes was written to `out`.
    Answered(usize),
    /// The name is not ours: forward the query upstream.
    Forward,
    /// Not a well-formed standard query: drop it.
    Malformed,
}

/// Parse a standard query with one question.
pub fn parse_query(msg: &[u8]) -> Option<Question> {
    if msg.len() < 12 {
        return None;
    }
    let be = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
    let (id, flags, qdcount) = (be(0), be(2), be(4));
    if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 || qdcount != 1 {
        return None;
    }
    let mut i = 12;
    let mut name = String::new();
    loop {
        let len = usize::from(*msg.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 || name.len() + len > 253 {
            return None;
        }
        let label = msg.get(i..i + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        for &b in label {
            name.push(char::from(b.to_ascii_lowercase()));
        }
        i += len;
    }
    if msg.len() < i + 4 {
        return None;
    }
    Some(Question {
        id,
        name,
        qtype: be(i),
        qclass: be(i + 2),
        end: i + 4,
        flags,
    })
}

/// Answer `query` into `out`: an A record when `lookup` knows the name, an empty answer for
/// other types of a known name, [`Verdict::Forward`] for unknown names when `can_forward`, and
/// SERVFAIL otherwise (quickly: no uplink means no upstream).
pub fn answer(
    query: &[u8],
    lookup: impl Fn(&str) -> Option<Ipv4Addr>,
    can_forward: bool,
    out: &mut [u8],
) -> Verdict {
    let Some(q) = parse_query(query) else {
        return Verdict::Malformed;
    };
    let found = lookup(&q.name);
    let (rcode, a) = match found {
        Some(ip) if q.qclass == 1 && (q.qtype == 1 || q.qtype == 255) => (0u16, Some(ip)),
        Some(_) => (0, None),
        None if can_forward => return Verdict::Forward,
        None => (2, None), // SERVFAIL
    };
    let need = q.end + if a.is_some() { 16 } else { 0 };
    if out.len() < need {
        return Verdict::Malformed;
    }
    out[..q.end].copy_from_slice(&query[..q.end]);
    // QR, opcode 0, AA, RD copied, RA, rcode.
    let flags = 0x8000 | 0x0400 | (q.flags & 0x0100) | 0x0080 | rcode;
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..8].copy_from_slice(&u16::from(a.is_some()).to_be_bytes());
    out[8..12].copy_from_slice(&[0, 0, 0, 0]); // no authority, no additional (EDNS dropped)
    if let Some(ip) = a {
        let rr = &mut out[q.end..q.end + 16];
        rr[0..2].copy_from_slice(&0xc00cu16.to_be_bytes()); // pointer to the question's name
        rr[2..4].copy_from_slice(&1u16.to_be_bytes());
        rr[4..6].copy_from_slice(&1u16.to_be_bytes());
        rr[6..10].copy_from_slice(&TTL.to_be_bytes());
        rr[10..12].copy_from_slice(&4u16.to_be_bytes());
        rr[12..16].copy_from_slice(&ip.octets());
    }
    Verdict::Answered(need)
}

#[cfg(test)]
mod test {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        // An EDNS OPT record in the additional section, as dig sends.
        q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        q
    }

    fn table(n: &str) -> Option<Ipv4Addr> {
        (n == "web").then_some(Ipv4Addr::new(10, 0, 0, 2))
    }

    #[test]
    fn answers_known_names_case_insensitively() {
        let q = query("WEB", 1);
        let mut out = [0u8; 512];
        let Verdict::Answered(n) = answer(&q, table, true, &mut out) else {
            panic!()
        };
        let r = &out[..n];
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0xf, 0, "NOERROR");
        assert_eq!(r[2] & 0x80, 0x80, "QR");
        assert_eq!(&r[6..8], &[0, 1], "one answer");
        assert_eq!(&r[n - 4..], &[10, 0, 0, 2]);
        assert_eq!(&r[10..12], &[0, 0], "EDNS record dropped");
    }

    #[test]
    fn nodata_forward_and_servfail() {
        let mut out = [0u8; 512];
        let Verdict::Answered(n) = answer(&query("web", 28), table, true, &mut out) else {
            panic!()
        };
        assert_eq!(
            (out[3] & 0xf, &out[6..8]),
            (0, &[0u8, 0][..]),
            "AAAA of a known name: NODATA"
        );
        assert!(n > 12);
        assert_eq!(
            answer(&query("example.org", 1), table, true, &mut out),
            Verdict::Forward
        );
        let Verdict::Answered(_) = answer(&query("example.org", 1), table, false, &mut out) else {
            panic!()
        };
        assert_eq!(out[3] & 0xf, 2, "SERVFAIL without upstream");
    }

    #[test]
    fn malformed_queries() {
        let mut out = [0u8; 512];
        assert_eq!(answer(&[0; 5], table, true, &mut out), Verdict::Malformed);
        let mut q = query("web", 1);
        q[2] |= 0x80; // a response, not a query
        assert_eq!(answer(&q, table, true, &mut out), Verdict::Malformed);
        let q = query("web", 1);
        assert_eq!(answer(&q[..15], table, true, &mut out), Verdict::Malformed);
        let mut q = query("web", 1);
        q[12] = 200; // label too long / past the end
        assert_eq!(answer(&q, table, true, &mut out), Verdict::Malformed);
    }
}
