//! A minimal synchronous rtnetlink client: just the requests the switch makes (set link
//! attributes, move a link to a namespace, add an address, add a default route, delete a link).
//! The socket lives in the network namespace of the thread that opens it, so to configure a
//! namespace, open it inside [`super::netns::Netns::run_in`].
//!
//! Messages are built in a byte vector with explicit little-endian/host layout of `nlmsghdr`,
//! `ifinfomsg`, `ifaddrmsg`, `rtmsg` and 4-byte-aligned `rtattr`s (see rtnetlink(7)).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;

const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_NEWQDISC: u16 = 36;
const NLM_F_REPLACE: u16 = 0x100;
const TCA_KIND: u16 = 1;
const TC_H_ROOT: u32 = 0xFFFF_FFFF;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_IFALIAS: u16 = 20;
const IFLA_NET_NS_FD: u16 = 28;
/// `struct ifinfomsg`'s size: the attributes of a link message start after it.
const IFINFOMSG_LEN: usize = 16;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;

const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

const NLMSG_HDRLEN: usize = 16;

/// Attributes to change on a link; `None` leaves an attribute as it is.
#[derive(Debug, Default, Clone)]
pub struct LinkChange<'a> {
    /// Bring the link up or down.
    pub up: Option<bool>,
    /// New MTU.
    pub mtu: Option<u32>,
    /// New MAC address.
    pub mac: Option<[u8; 6]>,
    /// New name (with `netns_fd`: the name in the target namespace).
    pub name: Option<&'a str>,
    /// Move the link into the namespace of this fd.
    pub netns_fd: Option<RawFd>,
    /// New alias (`ip link show` prints it as `alias`).
    pub alias: Option<&'a str>,
}

/// A message under construction.
struct Msg(Vec<u8>);

impl Msg {
    fn new(ty: u16, flags: u16, seq: u32) -> Msg {
        let mut v = Vec::with_capacity(256);
        v.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in `finish`
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        Msg(v)
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// A NETLINK_ROUTE socket in the calling thread's network namespace.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// Open the socket.
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2) call; a non-negative result is a new fd we own.
        let fd = cvt(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        })?;
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all-zero is valid (kernel assigns the port id).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `sa` is a valid sockaddr_nl of the size given.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        })?;
        Ok(Netlink { fd, seq: 1 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Send a request and wait for its acknowledgement.
    fn request(&mut self, msg: Vec<u8>, seq: u32) -> io::Result<()> {
        self.exchange(msg, seq, |_, _| {})
    }

    /// Send a request, hand each answer to it (type, payload) to `each`, and wait for its
    /// acknowledgement.
    fn exchange(
        &mut self,
        msg: Vec<u8>,
        seq: u32,
        mut each: impl FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        // SAFETY: `msg` is a valid buffer of the given length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // SAFETY: `buf` is a valid writable buffer of the given length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + NLMSG_HDRLEN <= n {
                let h = &buf[off..];
                let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
                let ty = u16::from_ne_bytes([h[4], h[5]]);
                let mseq = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
                if len < NLMSG_HDRLEN || off + len > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                if ty == NLMSG_ERROR && mseq == seq && len >= NLMSG_HDRLEN + 4 {
                    let code = i32::from_ne_bytes([h[16], h[17], h[18], h[19]]);
                    return if code == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-code))
                    };
                }
                if mseq == seq && ty != NLMSG_ERROR {
                    each(ty, &h[NLMSG_HDRLEN..len]);
                }
                off += (len + 3) & !3;
            }
        }
    }

    fn ifinfo(msg: &mut Msg, ifindex: u32, flags: u32, change: u32) {
        msg.bytes(&[libc::AF_UNSPEC as u8, 0])
            .bytes(&0u16.to_ne_bytes())
            .bytes(&(ifindex as i32).to_ne_bytes())
            .bytes(&flags.to_ne_bytes())
            .bytes(&change.to_ne_bytes());
    }

    /// Change attributes of link `ifindex` (see [`LinkChange`]).
    pub fn set_link(&mut self, ifindex: u32, change: &LinkChange<'_>) -> io::Result<()> {
        let seq = self.next_seq();
        let mut m = Msg::new(RTM_NEWLINK, 0, seq);
        let iff_up = libc::IFF_UP as u32;
        let (flags, mask) = match change.up {
            Some(true) => (iff_up, iff_up),
            Some(false) => (0, iff_up),
            None => (0, 0),
        };
        Self::ifinfo(&mut m, ifindex, flags, mask);
        if let Some(mtu) = change.mtu {
            m.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        if let Some(mac) = change.mac {
            m.attr(IFLA_ADDRESS, &mac);
        }
        if let Some(name) = change.name {
            let mut b = name.as_bytes().to_vec();
            b.push(0);
            m.attr(IFLA_IFNAME, &b);
        }
        if let Some(fd) = change.netns_fd {
            m.attr(IFLA_NET_NS_FD, &(fd as u32).to_ne_bytes());
        }
        if let Some(alias) = change.alias {
            m.attr(IFLA_IFALIAS, alias.as_bytes());
        }
        self.request(m.finish(), seq)
    }

    /// Give link `ifindex` the `noqueue` root qdisc (`tc qdisc replace dev X root noqueue`).
    /// Before the link goes up, so the kernel does not build its default one: a multi-queue
    /// TAP has 256 transmit queues, and building a qdisc for each took most of an attach.
    pub fn set_noqueue(&mut self, ifindex: u32) -> io::Result<()> {
        let seq = self.next_seq();
        let mut m = Msg::new(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_REPLACE, seq);
        m.bytes(&[libc::AF_UNSPEC as u8, 0])
            .bytes(&0u16.to_ne_bytes())
            .bytes(&(ifindex as i32).to_ne_bytes())
            .bytes(&0u32.to_ne_bytes()) // handle: the kernel picks
            .bytes(&TC_H_ROOT.to_ne_bytes())
            .bytes(&0u32.to_ne_bytes()) // info
            .attr(TCA_KIND, b"noqueue\0");
        self.request(m.finish(), seq)
    }

    /// The alias of link `ifindex` (`None`: it has none).
    pub fn link_alias(&mut self, ifindex: u32) -> io::Result<Option<String>> {
        let seq = self.next_seq();
        let mut m = Msg::new(RTM_GETLINK, 0, seq);
        Self::ifinfo(&mut m, ifindex, 0, 0);
        let mut alias = None;
        self.exchange(m.finish(), seq, |ty, payload| {
            if ty == RTM_NEWLINK {
                alias = attr(payload, IFINFOMSG_LEN, IFLA_IFALIAS).map(|a| {
                    let a = a.split(|b| *b == 0).next().unwrap_or(a);
                    String::from_utf8_lossy(a).into_owned()
                });
            }
        })?;
        Ok(alias.filter(|a| !a.is_empty()))
    }

    /// Delete link `ifindex`.
    pub fn del_link(&mut self, ifindex: u32) -> io::Result<()> {
        let seq = self.next_seq();
        let mut m = Msg::new(RTM_DELLINK, 0, seq);
        Self::ifinfo(&mut m, ifindex, 0, 0);
        self.request(m.finish(), seq)
    }

    /// Add `addr/prefix_len` to link `ifindex`.
    pub fn add_addr_v4(&mut self, ifindex: u32, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let seq = self.next_seq();
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, seq);
        m.bytes(&[libc::AF_INET as u8, prefix_len, 0, 0])
            .bytes(&ifindex.to_ne_bytes());
        let mask = if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix_len.min(32)))
        };
        let brd = Ipv4Addr::from(u32::from(addr) | !mask);
        m.attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        if prefix_len < 31 {
            m.attr(IFA_BROADCAST, &brd.octets());
        }
        self.request(m.finish(), seq)
    }

    /// Add `addr/prefix_len` to link `ifindex` without duplicate address detection (the
    /// switch hands out the addresses: no other holder to detect, and no tentative wait).
    pub fn add_addr_v6(&mut self, ifindex: u32, addr: Ipv6Addr, prefix_len: u8) -> io::Result<()> {
        const IFA_F_NODAD: u8 = 0x02;
        let seq = self.next_seq();
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, seq);
        m.bytes(&[libc::AF_INET6 as u8, prefix_len, IFA_F_NODAD, 0])
            .bytes(&ifindex.to_ne_bytes());
        m.attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        self.request(m.finish(), seq)
    }

    /// Add an IPv6 default route via `gateway` on link `ifindex` in the main table.
    /// `Ok(false)` when one already exists (it is left alone).
    pub fn add_default_route_v6(&mut self, gateway: Ipv6Addr, ifindex: u32) -> io::Result<bool> {
        self.add_default_route(libc::AF_INET6 as u8, &gateway.octets(), ifindex)
    }

    /// Add a default route via `gateway` on link `ifindex` in the main table. `Ok(false)` when
    /// a default route already exists (it is left alone).
    pub fn add_default_route_v4(&mut self, gateway: Ipv4Addr, ifindex: u32) -> io::Result<bool> {
        self.add_default_route(libc::AF_INET as u8, &gateway.octets(), ifindex)
    }

    /// A default route of address `family` via `gateway` (its bytes) on link `ifindex`.
    fn add_default_route(&mut self, family: u8, gateway: &[u8], ifindex: u32) -> io::Result<bool> {
        let seq = self.next_seq();
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, seq);
        m.bytes(&[
            family,
            0,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_STATIC,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ])
        .bytes(&0u32.to_ne_bytes());
        m.attr(RTA_GATEWAY, gateway)
            .attr(RTA_OIF, &ifindex.to_ne_bytes());
        match self.request(m.finish(), seq) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The index of link `name` in this socket's namespace (the calling thread's), if any.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        super::if_nametoindex(name)
    }
}

/// The data of the first attribute of type `ty` in `payload` after its fixed `header` bytes.
fn attr(payload: &[u8], header: usize, ty: u16) -> Option<&[u8]> {
    let mut rest = payload.get(header..)?;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let t = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        if t == ty {
            return Some(&rest[4..len]);
        }
        rest = rest.get((len + 3) & !3..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn attributes_are_found_and_malformed_ones_end_the_walk() {
        let mut m = Msg::new(RTM_NEWLINK, 0, 1);
        Netlink::ifinfo(&mut m, 7, 0, 0);
        m.attr(IFLA_MTU, &1500u32.to_ne_bytes())
            .attr(IFLA_IFALIAS, b"vswitchd:ab\0");
        let b = m.finish();
        let payload = &b[NLMSG_HDRLEN..];
        assert_eq!(
            attr(payload, IFINFOMSG_LEN, IFLA_IFALIAS),
            Some(&b"vswitchd:ab\0"[..])
        );
        assert_eq!(attr(payload, IFINFOMSG_LEN, IFLA_IFNAME), None);
        let mut cut = payload.to_vec();
        cut[IFINFOMSG_LEN] = 200; // the first attribute claims more than there is
        assert_eq!(attr(&cut, IFINFOMSG_LEN, IFLA_IFALIAS), None);
        assert_eq!(attr(&payload[..3], IFINFOMSG_LEN, IFLA_MTU), None);
    }

    fn u16_at(b: &[u8], i: usize) -> u16 {
        u16::from_ne_bytes([b[i], b[i + 1]])
    }

    fn u32_at(b: &[u8], i: usize) -> u32 {
        u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
    }

    #[test]
    fn message_layout_header_and_padded_attributes() {
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, 7);
        m.bytes(&[1, 2, 3, 4])
            .attr(IFLA_MTU, &1400u32.to_ne_bytes())
            .attr(IFLA_IFNAME, b"eth0\0");
        let b = m.finish();
        // nlmsghdr: length of the whole message, type, flags, sequence, port id.
        assert_eq!(u32_at(&b, 0) as usize, b.len());
        assert_eq!(u16_at(&b, 4), RTM_NEWADDR);
        assert_eq!(
            u16_at(&b, 6),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
        assert_eq!(u32_at(&b, 8), 7);
        assert_eq!(u32_at(&b, 12), 0);
        assert_eq!(&b[16..20], &[1, 2, 3, 4]);
        // rtattr: length (header + data, unpadded), type, data, padding to 4 bytes.
        assert_eq!((u16_at(&b, 20), u16_at(&b, 22)), (8, IFLA_MTU));
        assert_eq!(u32_at(&b, 24), 1400);
        assert_eq!((u16_at(&b, 28), u16_at(&b, 30)), (9, IFLA_IFNAME));
        assert_eq!(&b[32..37], b"eth0\0");
        assert_eq!(&b[37..40], &[0, 0, 0], "padding");
        assert_eq!(b.len(), 40);
    }

    #[test]
    fn empty_attribute_is_just_its_header() {
        let mut m = Msg::new(RTM_DELLINK, 0, 1);
        m.attr(IFLA_ADDRESS, &[]);
        let b = m.finish();
        assert_eq!(b.len(), NLMSG_HDRLEN + 4);
        assert_eq!(u16_at(&b, 16), 4);
    }

    #[test]
    fn link_index_of_loopback_and_of_nothing() {
        // No privilege needed: a NETLINK_ROUTE socket and if_nametoindex.
        let mut nl = Netlink::open().expect("netlink socket");
        assert_eq!(nl.link_index("lo").expect("lo"), Some(1));
        assert_eq!(nl.link_index("vs-no-such0").expect("lookup"), None);
        assert_eq!(
            nl.link_index("a\0b").expect_err("NUL").kind(),
            io::ErrorKind::InvalidInput
        );
    }

    /// Each request on a link index that does not exist comes back as the kernel's error for
    /// it: the message was well-formed enough for the kernel to look the link up (a layout
    /// mistake would be `EINVAL`), and the acknowledgement was matched and decoded. Without
    /// `CAP_NET_ADMIN` the kernel says `EPERM` before parsing, which still tests the latter.
    #[test]
    fn requests_for_a_missing_link_get_the_kernels_error() {
        const NO_SUCH: u32 = 0x7fff_fff0;
        // SAFETY: geteuid has no failure mode and no side effect.
        let root = unsafe { libc::geteuid() } == 0;
        // The route's gateway is looked up through the missing device: no route to it.
        let want = |i| match (root, i) {
            (false, _) => &[libc::EPERM][..],
            (true, 2) => &[libc::ENETUNREACH, libc::ENODEV][..],
            (true, _) => &[libc::ENODEV][..],
        };
        let mut nl = Netlink::open().expect("netlink socket");
        let errors = [
            nl.set_link(
                NO_SUCH,
                &LinkChange {
                    up: Some(true),
                    mtu: Some(1400),
                    mac: Some([2, 0, 0, 0, 0, 1]),
                    name: Some("vs-test0"),
                    netns_fd: None,
                    alias: Some("vswitchd:test"),
                },
            ),
            nl.add_addr_v4(NO_SUCH, Ipv4Addr::new(192, 0, 2, 1), 24),
            nl.add_default_route_v4(Ipv4Addr::new(192, 0, 2, 254), NO_SUCH)
                .map(drop),
            nl.del_link(NO_SUCH),
        ];
        for (i, e) in errors.into_iter().enumerate() {
            let e = e.expect_err("no such link");
            let code = e.raw_os_error().unwrap_or(0);
            assert!(want(i).contains(&code), "request {i}: {e}");
        }
        assert!(nl.seq >= 5, "each request has its own sequence number");
    }
}
