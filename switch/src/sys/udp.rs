//! Underlay sockets for VXLAN: a raw IPv4 socket to send packets whose IPv4/UDP headers the
//! switch writes itself (so each inner flow gets its own UDP source port for underlay ECMP), and
//! the path MTU/source address towards a peer.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;

/// A raw IPv4 socket (`IPPROTO_RAW`, header included) for sending.
#[derive(Debug)]
pub struct RawIpSender {
    fd: OwnedFd,
}

impl RawIpSender {
    /// Open the socket in the calling thread's namespace.
    pub fn open() -> io::Result<RawIpSender> {
        // SAFETY: plain socket(2) call; a non-negative result is a new fd we own.
        let fd = cvt(unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        })?;
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(RawIpSender { fd })
    }

    /// Send `pkts[i]` (IPv4 packets, header included) to `dsts[i]` with one `sendmmsg`; how many
    /// went (see [`super::send_batch`]).
    pub fn send_batch(&self, pkts: &[&[u8]], dsts: &[Ipv4Addr]) -> io::Result<usize> {
        super::send_batch(self.fd.as_raw_fd(), pkts, Some(dsts))
    }

    /// Send one IPv4 packet (header included) to `dst`.
    pub fn send_to(&self, pkt: &[u8], dst: Ipv4Addr) -> io::Result<usize> {
        // SAFETY: sockaddr_in is plain data; all-zero is valid.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from(dst).to_be();
        // SAFETY: `pkt` and `sa` are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsRawFd for RawIpSender {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The source address and route MTU the kernel would use towards `peer` (either family).
pub fn route_to(peer: IpAddr) -> io::Result<(IpAddr, u32)> {
    let (s, level, opt) = match peer {
        IpAddr::V4(_) => (
            UdpSocket::bind("0.0.0.0:0")?,
            libc::IPPROTO_IP,
            libc::IP_MTU,
        ),
        IpAddr::V6(_) => (
            UdpSocket::bind("[::]:0")?,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU,
        ),
    };
    s.connect(SocketAddr::new(peer, 4789))?;
    let src = s.local_addr()?.ip();
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: IP_MTU/IPV6_MTU write one int through the pointer; `len` says how much room
    // there is.
    cvt(unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok((src, u32::try_from(mtu).unwrap_or(1500)))
}

/// `a` as a socket address for the kernel, with its length.
fn to_storage(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid value for this plain C struct.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            let sa = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            sa.sin_port = a.port().to_be();
            (
                ss,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in6.
            let sa = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_addr.s6_addr = a.ip().octets();
            sa.sin6_port = a.port().to_be();
            sa.sin6_scope_id = a.scope_id();
            (
                ss,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

/// The socket address the kernel wrote into `ss` (`None` for another family).
fn from_storage(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sa = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
                u16::from_be(sa.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sa =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sa.sin6_addr.s6_addr),
                u16::from_be(sa.sin6_port),
                0,
                sa.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `UDP_SEGMENT` (linux/udp.h): the segment size of a UDP GSO send, as a cmsg or socket option.
const UDP_SEGMENT: libc::c_int = 103;
/// `UDP_GRO` (linux/udp.h): accept coalesced datagrams; the segment size comes as a cmsg.
const UDP_GRO: libc::c_int = 104;
/// Room for one cmsg carrying an int (the largest control message exchanged here).
const CMSG_SPACE: usize = 32;

/// A `msghdr` for one buffer, a socket address of `len` bytes and a control buffer (length
/// left to the caller). The pointers it holds are only valid while the three arguments live.
fn msghdr(
    (sa, len): (&mut libc::sockaddr_storage, libc::socklen_t),
    iov: &mut libc::iovec,
    ctl: &mut [u64; CMSG_SPACE / 8],
) -> libc::msghdr {
    // SAFETY: all-zero is a valid value for this plain C struct.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (sa as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = len;
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    msg
}

/// Let the kernel hand `sock` coalesced datagrams (UDP GRO): one read returns several equally
/// sized datagrams back to back, and [`recv_gro`] reports their size.
pub fn enable_gro(sock: &UdpSocket) -> io::Result<()> {
    let one: libc::c_int = 1;
    super::setsockopt(sock.as_raw_fd(), libc::SOL_UDP, UDP_GRO, &one)
}

/// Receive into `buf`: the byte count, the sender, and the size of each datagram when the
/// kernel coalesced several (`None`: one datagram).
pub fn recv_gro(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<u16>)> {
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut sa: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let sa_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let mut ctl = [0u64; CMSG_SPACE / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut msg = msghdr((&mut sa, sa_len), &mut iov, &mut ctl);
    msg.msg_controllen = CMSG_SPACE;
    // SAFETY: every pointer in `msg` refers to a live buffer of the length recorded with it.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut gso = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel just filled, within
    // `msg_controllen`; the data of a SOL_UDP/UDP_GRO message is one int.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                gso = u16::try_from(v).ok().filter(|&s| s > 0);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let from = from_storage(&sa).ok_or_else(|| io::Error::other("datagram from no address"))?;
    Ok((n as usize, from, gso))
}

/// Send `buf` to `dst` as datagrams of `seg` bytes each (the last may be shorter) with one
/// `sendmsg` (UDP GSO: the kernel, or the NIC, cuts it and writes each outer header).
pub fn send_segments(sock: &UdpSocket, buf: &[u8], dst: SocketAddr, seg: u16) -> io::Result<usize> {
    let (mut sa, sa_len) = to_storage(dst);
    let mut ctl = [0u64; CMSG_SPACE / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut msg = msghdr((&mut sa, sa_len), &mut iov, &mut ctl);
    // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic; the first header lies within `ctl`, which is
    // large enough for one u16 payload, and the kernel only reads `buf` (iov_base is *mut only
    // by the C signature).
    let n = unsafe {
        msg.msg_controllen = libc::CMSG_SPACE(2) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_DONTWAIT)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod test {
    //! On loopback, without privilege. (`RawIpSender` needs `CAP_NET_RAW`: not tested here.)

    use std::time::{Duration, Instant};

    use super::*;

    fn local() -> (UdpSocket, SocketAddr) {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let a = s.local_addr().expect("addr");
        (s, a)
    }

    /// `recv_gro` until `want` bytes arrived (or a second passed): the reads, as
    /// (bytes, sender, segment size).
    fn recv_all(s: &UdpSocket, want: usize) -> Vec<(Vec<u8>, SocketAddr, Option<u16>)> {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65_536];
        while got
            .iter()
            .map(|g: &(Vec<u8>, _, _)| g.0.len())
            .sum::<usize>()
            < want
        {
            match recv_gro(s, &mut buf) {
                Ok((n, from, seg)) => got.push((buf[..n].to_vec(), from, seg)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "only {got:?}");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        got
    }

    #[test]
    fn route_to_loopback() {
        let (src, mtu) = route_to(Ipv4Addr::LOCALHOST.into()).expect("route");
        assert_eq!(src, IpAddr::from(Ipv4Addr::LOCALHOST));
        assert!(mtu >= 1500, "{mtu}");
    }

    #[test]
    fn ipv6_addresses_go_through_gso_sends_and_gro_reads() {
        let Ok(rx) = UdpSocket::bind("[::1]:0") else {
            panic!("no IPv6 loopback (::1) to test the IPv6 underlay's socket calls on");
        };
        let rx_addr = rx.local_addr().expect("addr");
        enable_gro(&rx).expect("UDP GRO");
        let tx = UdpSocket::bind("[::1]:0").expect("bind");
        let data = vec![7u8; 300];
        assert_eq!(send_segments(&tx, &data, rx_addr, 100).expect("send"), 300);
        let got = recv_all(&rx, 300);
        assert!(
            got.iter().all(|g| g.1 == tx.local_addr().unwrap()),
            "{got:?}"
        );
        let (src, _) = route_to(Ipv6Addr::LOCALHOST.into()).expect("route");
        assert_eq!(src, IpAddr::from(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn plain_datagram_has_no_segment_size() {
        let (rx, rx_addr) = local();
        let (tx, tx_addr) = local();
        tx.send_to(b"hello", rx_addr).expect("send");
        let got = recv_all(&rx, 5);
        assert_eq!(got, [(b"hello".to_vec(), tx_addr, None)]);
    }

    #[test]
    fn gso_send_arrives_as_segments_of_the_given_size() {
        let (rx, rx_addr) = local();
        enable_gro(&rx).expect("UDP GRO");
        let (tx, tx_addr) = local();
        let data: Vec<u8> = (0..340u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(send_segments(&tx, &data, rx_addr, 100).expect("send"), 340);
        // Loopback may hand the socket the whole train (segment size 100) or datagram by
        // datagram; either way 100-byte pieces, the last one 40, in order.
        let got = recv_all(&rx, 340);
        let mut all = Vec::new();
        let mut pieces = Vec::new();
        for (bytes, from, seg) in &got {
            assert_eq!(*from, tx_addr);
            let size = seg.map_or(bytes.len(), usize::from);
            assert!(seg.is_none() || size == 100, "{seg:?}");
            pieces.extend(bytes.chunks(size).map(<[u8]>::len));
            all.extend_from_slice(bytes);
        }
        assert_eq!(pieces, [100, 100, 100, 40]);
        assert_eq!(all, data);
    }

    #[test]
    fn send_batch_sends_each_message_and_at_most_a_batch() {
        let (rx, rx_addr) = local();
        let (tx, _) = local();
        tx.connect(rx_addr).expect("connect");
        let msgs: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1 + usize::from(i)]).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let n = super::super::send_batch(tx.as_raw_fd(), &refs, None).expect("sendmmsg");
        assert_eq!(n, super::super::SEND_BATCH_MAX);
        let want: usize = msgs[..n].iter().map(Vec::len).sum();
        let got = recv_all(&rx, want);
        let got: Vec<Vec<u8>> = got.into_iter().map(|g| g.0).collect();
        assert_eq!(got, msgs[..n], "one datagram each, in order");
        assert_eq!(
            super::super::send_batch(tx.as_raw_fd(), &[], None).expect("none"),
            0
        );
    }
}
