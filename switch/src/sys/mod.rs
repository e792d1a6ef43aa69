//! The only module with `unsafe` code: the operating-system calls the switch needs (TAP ioctls,
//! `setns`, netlink sockets, epoll, umask), each wrapped in a safe API. Every `unsafe` block
//! carries a `// SAFETY:` note. Errors are `io::Error`s; callers attach the failing step.

#![allow(unsafe_code)]

pub mod epoll;
pub mod netlink;
pub mod netns;
pub mod packet;
pub mod tap;
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

/// Convert a `-1`-on-error libc return into an `io::Result`.
fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}
