//! Underlay sockets for VXLAN: a raw IPv4 socket to send packets whose IPv4/UDP headers the
//! switch writes itself (so each inner flow gets its own UDP source port for underlay ECMP), and
//! the path MTU/source address towards a peer.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
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

/// The source address and route MTU the kernel would use towards `peer`.
pub fn route_to(peer: Ipv4Addr) -> io::Result<(Ipv4Addr, u32)> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.connect(SocketAddrV4::new(peer, 4789))?;
    let src = match s.local_addr()? {
        std::net::SocketAddr::V4(a) => *a.ip(),
        std::net::SocketAddr::V6(_) => {
            return Err(io::Error::other("IPv6 source for an IPv4 peer"))
        }
    };
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: IP_MTU writes one int through the pointer; `len` says how much room there is.
    cvt(unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok((src, u32::try_from(mtu).unwrap_or(1500)))
}
