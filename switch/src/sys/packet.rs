//! AF_PACKET sockets: the uplink port. Bound to one interface, promiscuous (the switch answers
//! for its own MAC address, which the kernel does not own, so the host's IP stack ignores that
//! traffic), with `PACKET_VNET_HDR` so GSO super-frames and partial checksums arrive with their
//! virtio-net metadata instead of half-finished, and `PACKET_IGNORE_OUTGOING` so the switch does
//! not read back what it sends.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;

const ETH_P_ALL: u16 = 0x0003;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_FANOUT_HASH: u32 = 0;
const PACKET_FANOUT_FLAG_UNIQUEID: u32 = 0x2000;
const PACKET_FANOUT_FLAG_IGNORE_OUTGOING: u32 = 0x4000;

/// Size of the virtio-net header on packet sockets (`struct virtio_net_hdr`, no num_buffers).
pub const VNET_HDR_LEN: usize = 10;

/// A raw packet socket bound to one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifname: String,
    ifindex: u32,
    mac: [u8; 6],
}

use super::setsockopt;

impl PacketSocket {
    /// Open a socket on interface `ifname` of the calling thread's namespace.
    pub fn open(ifname: &str) -> io::Result<PacketSocket> {
        let ifindex = super::if_nametoindex(ifname)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("interface {ifname} not found"),
            )
        })?;
        let proto = ETH_P_ALL.to_be();
        // SAFETY: plain socket(2) call; a non-negative result is a new fd we own.
        let fd = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        })?;
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        let one: libc::c_int = 1;
        setsockopt(raw, libc::SOL_PACKET, PACKET_VNET_HDR, &one)?;
        // Best effort: older kernels lack it, and then our own frames are filtered by MAC.
        let _ = setsockopt(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &one);
        // Best effort: without it the kernel's default buffer is used.
        let _ = super::set_rcvbuf(&fd, super::SOCKET_RCVBUF);
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid starting value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as libc::c_ushort;
        sa.sll_protocol = proto;
        sa.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `sa` is a valid sockaddr_ll of the size given.
        cvt(unsafe {
            libc::bind(
                raw,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        // SAFETY: packet_mreq is plain data; all-zero is valid.
        let mut mr: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mr.mr_ifindex = ifindex as libc::c_int;
        mr.mr_type = PACKET_MR_PROMISC;
        setsockopt(raw, libc::SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr)?;
        let mac = hw_addr(raw, ifname)?;
        Ok(PacketSocket {
            fd,
            ifname: ifname.to_string(),
            ifindex,
            mac,
        })
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface's own MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Read one `[virtio_net_hdr (10 bytes) | frame]`; `WouldBlock` when none is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid writable buffer of the given length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Receive up to `bufs.len()` frames (at most 32) with one `recvmmsg`, without blocking;
    /// frame `i` lands in `bufs[i]` and its length in `lens[i]`. Returns how many arrived
    /// (`WouldBlock` when none was queued).
    pub fn recv_batch(&self, bufs: &mut [&mut [u8]], lens: &mut [usize]) -> io::Result<usize> {
        const MAX: usize = 32;
        let n = bufs.len().min(lens.len()).min(MAX);
        // SAFETY: all-zero iovec and mmsghdr values are valid (null pointers, zero lengths).
        let mut iov: [libc::iovec; MAX] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; MAX] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iov[i] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr().cast(),
                iov_len: bufs[i].len(),
            };
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs[..n]` point at `iov[..n]`, which point at the caller's buffers with
        // their lengths; all outlive the call. The kernel writes only within them.
        let r = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = r as usize;
        for (l, m) in lens.iter_mut().zip(&msgs[..r]) {
            *l = m.msg_len as usize;
        }
        Ok(r)
    }

    /// Send each of `frames` (`[virtio_net_hdr (10 bytes) | frame]`) with one `sendmmsg`; how
    /// many went (see [`super::send_batch`]).
    pub fn send_batch(&self, frames: &[&[u8]]) -> io::Result<usize> {
        super::send_batch(self.fd.as_raw_fd(), frames, None)
    }

    /// Send one `[virtio_net_hdr (10 bytes) | frame]`.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid buffer of the given length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// The uplink's packet sockets, one per worker, all bound to one interface and joined in one
/// `PACKET_FANOUT_HASH` group: the kernel delivers each frame to exactly one of them, chosen by
/// its flow hash, so the uplink's flows are spread over the workers and each flow stays on one
/// (in order). With one queue there is no group.
#[derive(Debug)]
pub struct PacketQueues {
    socks: Vec<PacketSocket>,
}

impl PacketQueues {
    /// Open `n` (at least one) sockets on `ifname` and join them in a new fanout group. A
    /// kernel without fanout flags (before 4.20) gets one socket: check [`Self::queues`].
    pub fn open(ifname: &str, n: usize) -> io::Result<PacketQueues> {
        let first = PacketSocket::open(ifname)?;
        if n > 1 {
            match Self::fanout(first, ifname, n) {
                Ok(q) => return Ok(q),
                Err((first, e)) if e.raw_os_error() == Some(libc::EINVAL) => {
                    return Ok(PacketQueues { socks: vec![first] })
                }
                Err((_, e)) => return Err(e),
            }
        }
        Ok(PacketQueues { socks: vec![first] })
    }

    /// Join `first` and `n - 1` more sockets in a new fanout group; `first` back on failure.
    fn fanout(
        first: PacketSocket,
        ifname: &str,
        n: usize,
    ) -> Result<PacketQueues, (PacketSocket, io::Error)> {
        // The first socket asks the kernel for an unused group id; the others join it. The
        // group hears the interface in place of its sockets, so it needs its own
        // ignore-outgoing flag (the sockets' `PACKET_IGNORE_OUTGOING` no longer applies).
        let raw = first.fd.as_raw_fd();
        let kind = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
        let val = (kind | PACKET_FANOUT_FLAG_UNIQUEID) << 16;
        let mut got: u32 = 0;
        let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
        let r = setsockopt(raw, libc::SOL_PACKET, PACKET_FANOUT, &val).and_then(|()| {
            // SAFETY: `got` is a live u32 and `len` its size; the kernel writes at most `len`
            // bytes.
            cvt(unsafe {
                libc::getsockopt(
                    raw,
                    libc::SOL_PACKET,
                    PACKET_FANOUT,
                    (&mut got as *mut u32).cast(),
                    &mut len,
                )
            })
        });
        if let Err(e) = r {
            return Err((first, e));
        }
        let join = (got & 0xffff) | (kind << 16);
        let mut socks = Vec::with_capacity(n);
        socks.push(first);
        for _ in 1..n {
            let s = PacketSocket::open(ifname).and_then(|s| {
                setsockopt(s.fd.as_raw_fd(), libc::SOL_PACKET, PACKET_FANOUT, &join).map(|()| s)
            });
            match s {
                Ok(s) => socks.push(s),
                Err(e) => return Err((socks.swap_remove(0), e)),
            }
        }
        Ok(PacketQueues { socks })
    }

    /// How many sockets (queues).
    pub fn queues(&self) -> usize {
        self.socks.len()
    }

    /// The socket of queue `q` (modulo the number of queues).
    pub fn queue(&self, q: usize) -> &PacketSocket {
        &self.socks[q % self.socks.len()]
    }
}

fn hw_addr(fd: RawFd, ifname: &str) -> io::Result<[u8; 6]> {
    let name = CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name contains NUL"))?;
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req
        .ifr_name
        .iter_mut()
        .zip(name.as_bytes().iter().take(libc::IFNAMSIZ - 1))
    {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads the name from and writes the address into `req`, a valid ifreq.
    cvt(unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) })?;
    // SAFETY: after SIOCGIFHWADDR the union holds ifru_hwaddr.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(mac)
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod test {
    //! Everything here past the interface lookup is an AF_PACKET socket, which needs
    //! `CAP_NET_RAW` (and would put a host interface in promiscuous mode): only the part that
    //! runs before the socket is tested.

    use super::*;

    #[test]
    fn unknown_interface_is_not_found_before_any_socket() {
        for e in [
            PacketSocket::open("vs-no-such0").expect_err("no such interface"),
            PacketQueues::open("vs-no-such0", 2).expect_err("no such interface"),
        ] {
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
            assert!(e.to_string().contains("vs-no-such0"), "{e}");
        }
        let e = PacketSocket::open("a\0b").expect_err("NUL");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn the_packet_header_is_the_12_byte_one_without_num_buffers() {
        assert_eq!(VNET_HDR_LEN + 2, crate::wire::VirtioNetHdr::LEN);
    }
}
