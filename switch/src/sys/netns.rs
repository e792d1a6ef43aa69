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

    /// The namespace's identity (device and inode of its nsfs file): the same for every handle
    /// of one namespace, different for a namespace made later under the same name.
    pub fn id(&self) -> io::Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let m = self.file.metadata()?;
        Ok((m.dev(), m.ino()))
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

/// The names of the namespaces `ip netns` knows (`/run/netns`).
pub fn names() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The interfaces of the calling thread's network namespace (inside [`Netns::run_in`]: the
/// namespace entered), from `/proc/thread-self/net/dev`.
pub fn interfaces_here() -> io::Result<Vec<String>> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev")?;
    Ok(text
        .lines()
        .skip(2)
        .filter_map(|l| Some(l.split_once(':')?.0.trim().to_string()))
        .collect())
}

/// The identity (see [`Netns::id`]) of the namespace named `name` now, or `None` when there is
/// none of that name.
pub fn id_of(name: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(format!("/run/netns/{name}")).ok()?;
    Some((m.dev(), m.ino()))
}

impl AsRawFd for Netns {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
