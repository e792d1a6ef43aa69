//! The embedded DNS responder's message handling: parse a query, answer it from the network's
//! name table ([`Table`]: A and AAAA records for endpoint names and aliases, PTR records for
//! their addresses of both families), or say it must be forwarded, or SERVFAIL. Pure: bytes
//! in, bytes out (RFC 1035 sections 4.1.1-4.1.3, RFC 3596 for AAAA and ip6.arpa).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustc_hash::FxHashMap;

/// A name's addresses, one of each family at most.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    /// The IPv4 address (A).
    pub a: Option<Ipv4Addr>,
    /// The IPv6 address (AAAA).
    pub aaaa: Option<Ipv6Addr>,
}

/// What the gateway's DNS knows: names (lower case) to addresses, and addresses back to the
/// first name given for them (PTR).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    names: FxHashMap<String, Found>,
    reverse: FxHashMap<IpAddr, String>,
}

impl Table {
    /// `name` has IPv4 address `ip` (a later call for the same name wins).
    pub fn insert4(&mut self, name: String, ip: Ipv4Addr) {
        self.reverse
            .entry(IpAddr::V4(ip))
            .or_insert_with(|| name.clone());
        self.names.entry(name).or_default().a = Some(ip);
    }

    /// `name` has IPv6 address `ip` (a later call for the same name wins).
    pub fn insert6(&mut self, name: String, ip: Ipv6Addr) {
        self.reverse
            .entry(IpAddr::V6(ip))
            .or_insert_with(|| name.clone());
        self.names.entry(name).or_default().aaaa = Some(ip);
    }

    /// The addresses of `name` (lower case).
    pub fn get(&self, name: &str) -> Option<Found> {
        self.names.get(name).copied()
    }

    /// The name of address `ip`.
    pub fn name_of(&self, ip: IpAddr) -> Option<&str> {
        self.reverse.get(&ip).map(String::as_str)
    }
}

/// The address a reverse-lookup name stands for (`4.3.2.1.in-addr.arpa`, or 32 nibbles and
/// `ip6.arpa`); `None` for any other name.
pub fn reverse_name(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut o = [0u8; 4];
        let mut labels = rest.split('.');
        for slot in o.iter_mut().rev() {
            let l = labels.next()?;
            if l.is_empty() || l.len() > 3 || (l.len() > 1 && l.starts_with('0')) {
                return None;
            }
            *slot = l.parse().ok()?;
        }
        return labels
            .next()
            .is_none()
            .then(|| IpAddr::V4(Ipv4Addr::from(o)));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let mut v: u128 = 0;
    let mut n = 0;
    for (i, l) in rest.split('.').enumerate() {
        if i >= 32 || l.len() != 1 {
            return None;
        }
        let d = u128::from(char::from(l.as_bytes()[0]).to_digit(16)?);
        v |= d << (4 * i);
        n += 1;
    }
    (n == 32).then(|| IpAddr::V6(Ipv6Addr::from(v)))
}

/// Seconds clients may cache an answer (short: endpoints come and go).
pub const TTL: u32 = 10;

/// A parsed question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Query id.
    pub id: u16,
    /// Lower-case name without the trailing dot.
    pub name: String,
    /// QTYPE (1 = A, 12 = PTR, 28 = AAAA, 255 = ANY).
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

/// Record types answered.
mod qtype {
    pub const A: u16 = 1;
    pub const PTR: u16 = 12;
    pub const AAAA: u16 = 28;
    pub const ANY: u16 = 255;
}

/// Answer `query` into `out` from `table`: A and AAAA records of a known name (an empty answer,
/// NODATA, for a type it has no record of, such as AAAA of an IPv4-only endpoint), a PTR record
/// for a known address, [`Verdict::Forward`] for unknown names when `can_forward`, and
/// SERVFAIL otherwise (quickly: no uplink means no upstream).
pub fn answer(query: &[u8], table: &Table, can_forward: bool, out: &mut [u8]) -> Verdict {
    let Some(q) = parse_query(query) else {
        return Verdict::Malformed;
    };
    let class_in = q.qclass == 1;
    let want = |t: u16| class_in && (q.qtype == t || q.qtype == qtype::ANY);
    // The records of the answer: (type, data).
    let mut name_buf = [0u8; 256];
    let mut rrs: [Option<(u16, &[u8])>; 2] = [None, None];
    let (a, aaaa);
    let rcode = if let Some(f) = table.get(&q.name) {
        a = f.a.map(|ip| ip.octets());
        aaaa = f.aaaa.map(|ip| ip.octets());
        if let (true, Some(o)) = (want(qtype::A), &a) {
            rrs[0] = Some((qtype::A, &o[..]));
        }
        if let (true, Some(o)) = (want(qtype::AAAA), &aaaa) {
            rrs[1] = Some((qtype::AAAA, &o[..]));
        }
        0u16
    } else if let Some(name) = reverse_name(&q.name).and_then(|ip| table.name_of(ip)) {
        if want(qtype::PTR) {
            let Some(n) = encode_name(name, &mut name_buf) else {
                return Verdict::Malformed;
            };
            rrs[0] = Some((qtype::PTR, &name_buf[..n]));
        }
        0
    } else if can_forward {
        return Verdict::Forward;
    } else {
        2 // SERVFAIL
    };
    let count = rrs.iter().flatten().count();
    let need = q.end
        + rrs
            .iter()
            .flatten()
            .map(|(_, d)| 12 + d.len())
            .sum::<usize>();
    if out.len() < need {
        return Verdict::Malformed;
    }
    out[..q.end].copy_from_slice(&query[..q.end]);
    // QR, opcode 0, AA, RD copied, RA, rcode.
    let flags = 0x8000 | 0x0400 | (q.flags & 0x0100) | 0x0080 | rcode;
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..8].copy_from_slice(&(count as u16).to_be_bytes());
    out[8..12].copy_from_slice(&[0, 0, 0, 0]); // no authority, no additional (EDNS dropped)
    let mut at = q.end;
    for (t, data) in rrs.iter().flatten() {
        let rr = &mut out[at..at + 12 + data.len()];
        rr[0..2].copy_from_slice(&0xc00cu16.to_be_bytes()); // pointer to the question's name
        rr[2..4].copy_from_slice(&t.to_be_bytes());
        rr[4..6].copy_from_slice(&1u16.to_be_bytes());
        rr[6..10].copy_from_slice(&TTL.to_be_bytes());
        rr[10..12].copy_from_slice(&(data.len() as u16).to_be_bytes());
        rr[12..].copy_from_slice(data);
        at += 12 + data.len();
    }
    Verdict::Answered(need)
}

/// `name` in DNS wire form (labels, then the root) into `out`; its length, or `None` for a name
/// that does not fit or has an empty or over-long label.
fn encode_name(name: &str, out: &mut [u8]) -> Option<usize> {
    let mut at = 0;
    for label in name.split('.') {
        let l = label.len();
        if l == 0 || l > 63 || at + 1 + l + 1 > out.len().min(255) {
            return None;
        }
        out[at] = l as u8;
        out[at + 1..at + 1 + l].copy_from_slice(label.as_bytes());
        at += 1 + l;
    }
    out[at] = 0;
    Some(at + 1)
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

    fn names() -> Table {
        let mut t = Table::default();
        t.insert4("web".into(), Ipv4Addr::new(10, 0, 0, 2));
        t.insert4("dual".into(), Ipv4Addr::new(10, 0, 0, 3));
        t.insert6("dual".into(), "fd00::3".parse().unwrap());
        t.insert6("six".into(), "fd00::4".parse().unwrap());
        t
    }

    #[test]
    fn answers_known_names_case_insensitively() {
        let q = query("WEB", 1);
        let mut out = [0u8; 512];
        let Verdict::Answered(n) = answer(&q, &names(), true, &mut out) else {
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
        let Verdict::Answered(n) = answer(&query("web", 28), &names(), true, &mut out) else {
            panic!()
        };
        assert_eq!(
            (out[3] & 0xf, &out[6..8]),
            (0, &[0u8, 0][..]),
            "AAAA of a known name: NODATA"
        );
        assert!(n > 12);
        assert_eq!(
            answer(&query("example.org", 1), &names(), true, &mut out),
            Verdict::Forward
        );
        let Verdict::Answered(_) = answer(&query("example.org", 1), &names(), false, &mut out)
        else {
            panic!()
        };
        assert_eq!(out[3] & 0xf, 2, "SERVFAIL without upstream");
    }

    #[test]
    fn aaaa_ptr_and_nodata_across_families() {
        let t = names();
        let mut out = [0u8; 512];
        let ask = |name: &str, ty: u16, out: &mut [u8]| {
            let Verdict::Answered(n) = answer(&query(name, ty), &t, false, out) else {
                panic!("{name}")
            };
            n
        };
        let n = ask("dual", 28, &mut out);
        assert_eq!((out[3] & 0xf, out[7]), (0, 1));
        let fd00_3: Ipv6Addr = "fd00::3".parse().unwrap();
        assert_eq!(&out[n - 16..n], &fd00_3.octets());
        ask("dual", 255, &mut out);
        assert_eq!(out[7], 2, "ANY: both records");
        ask("six", 1, &mut out);
        assert_eq!(
            (out[3] & 0xf, out[7]),
            (0, 0),
            "A of a v6-only name: NODATA"
        );
        // PTR for both families.
        let n = ask("2.0.0.10.in-addr.arpa", 12, &mut out);
        assert_eq!((out[3] & 0xf, out[7]), (0, 1));
        assert_eq!(&out[n - 5..n], b"\x03web\x00");
        let rev6 = "4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        let n = ask(rev6, 12, &mut out);
        assert_eq!(&out[n - 5..n], b"\x03six\x00");
        // Unknown addresses: not ours.
        ask("9.0.0.10.in-addr.arpa", 12, &mut out);
        assert_eq!(out[3] & 0xf, 2);
        for bad in [
            "1.2.3.in-addr.arpa",
            "01.2.3.4.in-addr.arpa",
            "256.2.3.4.in-addr.arpa",
            "1.2.3.4.5.in-addr.arpa",
            "0.0.ip6.arpa",
            "g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa",
        ] {
            assert_eq!(reverse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn malformed_queries() {
        let mut out = [0u8; 512];
        assert_eq!(
            answer(&[0; 5], &names(), true, &mut out),
            Verdict::Malformed
        );
        let mut q = query("web", 1);
        q[2] |= 0x80; // a response, not a query
        assert_eq!(answer(&q, &names(), true, &mut out), Verdict::Malformed);
        let q = query("web", 1);
        assert_eq!(
            answer(&q[..15], &names(), true, &mut out),
            Verdict::Malformed
        );
        let mut q = query("web", 1);
        q[12] = 200; // label too long / past the end
        assert_eq!(answer(&q, &names(), true, &mut out), Verdict::Malformed);
    }
}
