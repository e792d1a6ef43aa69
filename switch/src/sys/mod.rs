//! The only module with `unsafe` code: the operating-system calls the switch needs (TAP ioctls,
//! `setns`, netlink sockets, epoll, umask, the open-file limit), each wrapped in a safe API.
//! Every `unsafe` block carries a `// SAFETY:` note. Errors are `io::Error`s; callers attach the
//! failing step.

#![allow(unsafe_code)]

pub mod epoll;
pub mod netlink;
pub mod netns;
pub mod packet;
pub mod rlimit;
pub mod tap;
pub mod term;
pub mod udp;

use std::ffi::CString;
use std::io;

/// Set the process umask, returning the previous one.
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask has no failure mode and touches only the process's file-creation mask.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// The index of interface `name` in the calling thread's network namespace, `None` if absent.
pub fn if_nametoindex(name: &str) -> io::Result<Option<u32>> {
    let c = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name contains NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODEV) | Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(idx))
}

/// Take an exclusive advisory lock on `file` without waiting (`flock(LOCK_EX | LOCK_NB)`): true
/// when taken, false when another open file description holds it. The kernel drops the lock when
/// the file is closed, so also when the holder dies, however it dies.
pub fn try_lock_exclusive(file: &std::fs::File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock takes a valid open fd (borrowed from `file` for the call) and flags.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        _ => Err(e),
    }
}

/// Receive buffer the switch asks for on its uplink and VTEP sockets. The kernel's default
/// (`net.core.rmem_default`, about 208 KiB) holds three 64 KiB super-frames: a worker busy for
/// a moment behind a TCP burst lost frames there (seen as retransmissions through published
/// ports and the overlay).
pub const SOCKET_RCVBUF: usize = 4 << 20;

/// Set `fd`'s receive buffer to `bytes`: `SO_RCVBUFFORCE` (root may pass `net.core.rmem_max`),
/// else `SO_RCVBUF` (capped by it).
pub fn set_rcvbuf(fd: &impl std::os::fd::AsRawFd, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let fd = fd.as_raw_fd();
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &v)
        .or_else(|_| setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &v))
}

/// `setsockopt(fd, level, name, val)` for an option whose value is the plain `T`.
fn setsockopt<T>(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: `val` points to a live T of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// Most messages one [`send_batch`] call sends.
pub const SEND_BATCH_MAX: usize = 32;

/// Send each of `pkts` as one message with one `sendmmsg`, without blocking. Message `i` goes to
/// `dsts[i]` when `dsts` is given (an IPv4 raw socket), else where the socket is bound (a packet
/// socket). Returns how many were sent; the kernel stops at the first that fails, and reports
/// that failure only when it was the first message.
pub(crate) fn send_batch(
    fd: std::os::fd::RawFd,
    pkts: &[&[u8]],
    dsts: Option<&[std::net::Ipv4Addr]>,
) -> io::Result<usize> {
    let n = pkts
        .len()
        .min(SEND_BATCH_MAX)
        .min(dsts.map_or(usize::MAX, <[_]>::len));
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: all-zero iovec, sockaddr_in and mmsghdr values are valid (null pointers, zero
    // lengths, family 0).
    let mut iov: [libc::iovec; SEND_BATCH_MAX] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut sa: [libc::sockaddr_in; SEND_BATCH_MAX] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; SEND_BATCH_MAX] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iov[i] = libc::iovec {
            // The kernel only reads through it (sendmmsg).
            iov_base: pkts[i].as_ptr() as *mut libc::c_void,
            iov_len: pkts[i].len(),
        };
        msgs[i].msg_hdr.msg_iov = &mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        if let Some(d) = dsts {
            sa[i].sin_family = libc::AF_INET as libc::sa_family_t;
            sa[i].sin_addr.s_addr = u32::from(d[i]).to_be();
            msgs[i].msg_hdr.msg_name = (&mut sa[i] as *mut libc::sockaddr_in).cast();
            msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        }
    }
    // SAFETY: `msgs[..n]` point at `iov[..n]` and `sa[..n]`, which point at the caller's packets
    // with their lengths; all outlive the call, and the kernel only reads the packets.
    let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Convert a `-1`-on-error libc return into an `io::Result`.
fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}
