//! The process's open-file limit (`RLIMIT_NOFILE`): vswitchd raises its soft limit to the hard
//! limit at start, because every API connection, TAP queue and socket takes a descriptor and the
//! usual soft default (1024, from systemd or a login shell) is far below what the kernel allows.

use std::io;

/// The soft and hard limits on open files, as `(soft, hard)`.
pub fn nofile() -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a live, writable rlimit for the call to fill.
    super::cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) })?;
    Ok((r.rlim_cur, r.rlim_max))
}

/// Set the soft limit on open files to `soft` (at most the hard limit), keeping the hard limit.
pub fn set_nofile_soft(soft: u64) -> io::Result<()> {
    let (_, hard) = nofile()?;
    let r = libc::rlimit {
        rlim_cur: soft.min(hard),
        rlim_max: hard,
    };
    // SAFETY: `r` is a live rlimit the call only reads.
    super::cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }).map(|_| ())
}

/// Raise the soft limit on open files as far as the hard limit allows; returns the soft limit
/// before and after. An unlimited hard limit is capped at the kernel's `fs.nr_open` (the most
/// descriptors one process may have), since a soft limit above it is refused.
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    let (soft, hard) = nofile()?;
    let mut target = hard;
    if hard == libc::RLIM_INFINITY {
        target = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20);
    }
    if target > soft {
        set_nofile_soft(target)?;
    }
    Ok((soft, nofile()?.0))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn raise_reaches_the_hard_limit_and_set_goes_back() {
        let (soft, hard) = nofile().expect("getrlimit");
        assert!(soft <= hard);
        let (before, after) = raise_nofile().expect("raise");
        assert_eq!(before, soft);
        assert!(after >= soft);
        if hard != libc::RLIM_INFINITY {
            assert_eq!(after, hard);
        }
        set_nofile_soft(soft).expect("restore");
        assert_eq!(nofile().expect("getrlimit").0, soft);
    }
}
