//! Network namespaces named by `ip netns` (`/run/netns/NAME`), and running code inside one on a
//! short-lived thread: `setns` changes only the calling thread, so the daemon's own threads never
//! leave the root namespace, and sockets created inside stay bound to the namespace.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use super::cvt;

/// An open handle to a named network namespace.
#[derive(Debug)]
pub struct Netns {
    file: File,
    name: String,
}

impl Netns {
    /// Open `/run/netns/NAME`.
    pub fn open(name: &str) -> io::Result<Netns> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid namespace name {name:?}"),
            ));
        }
        let path = format!("/run/netns/{name}");
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => io::Error::new(
                io::ErrorKind::NotFound,
                format!("network namespace {name} not found ({path})"),
            ),
            _ => e,
        })?;
        Ok(Netns {
            file,
            name: name.to_string(),
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run `f` on a new thread that has entered this namespace, and return its result.
    pub fn run_in<F, R>(&self, f: F) -> io::Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let fd = self.file.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: `fd` is an open namespace fd owned by `self`, which outlives this scoped
                // thread; CLONE_NEWNET only affects this thread, which ends after `f`.
                cvt(unsafe { libc::setns(fd, libc::CLONE_NEWNET) })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
        })
    }
}

impl AsRawFd for Netns {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
