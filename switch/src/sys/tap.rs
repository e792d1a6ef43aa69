//! TAP devices: open `/dev/net/tun`, ask for a multi-queue TAP with the virtio-net header, set
//! the header size. Each queue is one fd (a `File`); closing the last deletes the
//! (non-persistent) device, wherever it lives. The kernel spreads the namespace's flows over
//! the queues (and sends a flow's packets out the queue its answers were written to), so each
//! worker thread can serve one queue of every endpoint.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::cvt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNGETFEATURES: libc::c_ulong = 0x8004_54cf;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;

const IFF_TAP: libc::c_short = 0x0002;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// `TUNSETOFFLOAD` flag: the switch accepts frames with partial checksums.
pub const TUN_F_CSUM: u32 = 0x01;
/// TCP segmentation offload, IPv4.
pub const TUN_F_TSO4: u32 = 0x02;
/// TCP segmentation offload, IPv6.
pub const TUN_F_TSO6: u32 = 0x04;
/// TSO with ECN.
pub const TUN_F_TSO_ECN: u32 = 0x08;
/// Every offload the switch handles on endpoints of flat networks.
pub const OFFLOADS_ALL: u32 = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
/// Offloads of overlay endpoints: checksums and TSO (IPv4 and IPv6), which the switch segments
/// itself.
pub const OFFLOADS_OVERLAY: u32 = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
/// UDP segmentation offload, IPv4.
pub const TUN_F_USO4: u32 = 0x20;
/// UDP segmentation offload, IPv6.
pub const TUN_F_USO6: u32 = 0x40;

/// Size of the virtio-net header configured on every TAP.
pub const VNET_HDR_LEN: usize = 12;

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TAP device with one or more queues.
#[derive(Debug)]
pub struct Tap {
    queues: Vec<File>,
    name: String,
    ifindex: u32,
}

impl Tap {
    /// Create a TAP whose name follows `name_pattern` (`%d` lets the kernel pick a free number),
    /// non-blocking, with a 12-byte virtio-net header in front of every frame and `queues`
    /// queues (at least one).
    pub fn create(name_pattern: &str, offloads: u32, queues: usize) -> io::Result<Tap> {
        let first = Self::open(name_pattern, offloads, true)?;
        first.with_queues(offloads, queues, true)
    }

    /// Open queues until there are `n` (the first one is `self`'s).
    fn with_queues(mut self, offloads: u32, n: usize, mq: bool) -> io::Result<Tap> {
        while self.queues.len() < n.clamp(1, 256) {
            let q = Self::open(&self.name, offloads, mq)?;
            self.queues.extend(q.queues);
        }
        Ok(self)
    }

    /// Open the existing TAP `name` of the calling thread's namespace (a persistent device left
    /// by a previous daemon, `--live-restore`) with the same header and offloads as
    /// [`Tap::create`]. Fails with `NotFound` when there is no such device, and with the
    /// kernel's error (`EBUSY`, `EINVAL`) when it is not a free TAP of the same kind.
    pub fn open_existing(name: &str, offloads: u32, queues: usize) -> io::Result<Tap> {
        if name.contains('%') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad TAP name {name:?}"),
            ));
        }
        if super::if_nametoindex(name)?.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface {name}"),
            ));
        }
        match Self::open(name, offloads, true) {
            Ok(t) => t.with_queues(offloads, queues, true),
            // A single-queue TAP (made by an older vswitchd) is taken back as it is.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Self::open(name, offloads, false),
            Err(e) => Err(e),
        }
    }

    /// Keep the device after the fd closes (`true`), or let closing the fd delete it.
    pub fn set_persist(&self, on: bool) -> io::Result<()> {
        // SAFETY: TUNSETPERSIST takes its argument by value.
        cvt(unsafe {
            libc::ioctl(
                self.queues[0].as_raw_fd(),
                TUNSETPERSIST,
                libc::c_ulong::from(on),
            )
        })
        .map(|_| ())
    }

    /// Open one queue of the TAP `name_pattern` (creating the device if it does not exist).
    fn open(name_pattern: &str, offloads: u32, mq: bool) -> io::Result<Tap> {
        if name_pattern.len() >= libc::IFNAMSIZ || name_pattern.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad TAP name pattern {name_pattern:?}"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("open /dev/net/tun: {e}")))?;
        let fd = file.as_raw_fd();
        let mut features: libc::c_uint = 0;
        // SAFETY: TUNGETFEATURES writes one unsigned int through the pointer, which is valid.
        cvt(unsafe { libc::ioctl(fd, TUNGETFEATURES, &mut features) })?;
        if features & (IFF_VNET_HDR as libc::c_uint) == 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel's TUN driver lacks IFF_VNET_HDR",
            ));
        }
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | if mq { IFF_MULTI_QUEUE } else { 0 },
            _pad: [0; 22],
        };
        for (d, s) in req.name.iter_mut().zip(name_pattern.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads and writes a struct ifreq; `IfReq` has its layout and size.
        cvt(unsafe { libc::ioctl(fd, TUNSETIFF, &mut req) })?;
        let hdr_len: libc::c_int = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid.
        cvt(unsafe { libc::ioctl(fd, TUNSETVNETHDRSZ, &hdr_len) })?;
        // The switch carries the virtio-net header end to end, so the kernel may hand over
        // partial checksums and TCP super-frames (up to 64 KiB) instead of segmenting first.
        // `offloads` says which (`TUN_F_*`): overlay endpoints get TSO4 and TSO6 without ECN,
        // since the switch segments their super-frames itself.
        let flags = offloads;
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        cvt(unsafe { libc::ioctl(fd, TUNSETOFFLOAD, flags as libc::c_ulong) })?;
        // SAFETY: the kernel NUL-terminates the name within IFNAMSIZ bytes.
        let name = unsafe { CStr::from_ptr(req.name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let ifindex = super::if_nametoindex(&name)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("TAP {name} vanished after creation"),
            )
        })?;
        Ok(Tap {
            queues: vec![file],
            name,
            ifindex,
        })
    }

    /// Number of queues.
    pub fn queues(&self) -> usize {
        self.queues.len()
    }

    /// The fd of queue `q` (modulo the number of queues).
    pub fn queue_fd(&self, q: usize) -> RawFd {
        self.queues[q % self.queues.len()].as_raw_fd()
    }

    /// The device name in the namespace it was created in.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's name now (another process may have renamed it, or moved it to another
    /// namespace and renamed it there, as Docker does with the interface a plugin hands it).
    pub fn current_name(&self) -> io::Result<String> {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        };
        // SAFETY: TUNGETIFF writes a struct ifreq; `IfReq` has its layout and size.
        cvt(unsafe { libc::ioctl(self.queues[0].as_raw_fd(), TUNGETIFF, &mut req) })?;
        // SAFETY: the kernel NUL-terminates the name within IFNAMSIZ bytes.
        Ok(unsafe { CStr::from_ptr(req.name.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }

    /// The device's interface index at creation.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Read one `[virtio-net header | frame]` from queue `q` (modulo the number of queues);
    /// `WouldBlock` when none is queued.
    pub fn read(&self, q: usize, buf: &mut [u8]) -> io::Result<usize> {
        (&self.queues[q % self.queues.len()]).read(buf)
    }

    /// Write one `[virtio-net header | frame]` through queue `q` (modulo the number of queues).
    pub fn write(&self, q: usize, buf: &[u8]) -> io::Result<usize> {
        (&self.queues[q % self.queues.len()]).write(buf)
    }

    /// Tell the kernel which offloads the reader handles (`TUN_F_*`).
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        cvt(unsafe {
            libc::ioctl(
                self.queues[0].as_raw_fd(),
                TUNSETOFFLOAD,
                flags as libc::c_ulong,
            )
        })
        .map(|_| ())
    }
}

impl AsRawFd for Tap {
    /// The first queue's fd.
    fn as_raw_fd(&self) -> RawFd {
        self.queues[0].as_raw_fd()
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.queues[0].as_fd()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn create_tap_with_kernel_chosen_name() {
        let t = Tap::create("vst%d", OFFLOADS_ALL, 2)
            .expect("create TAP (needs root and /dev/net/tun)");
        assert!(t.name().starts_with("vst"), "{}", t.name());
        assert!(t.ifindex() > 0);
        let name = t.name().to_string();
        assert_eq!(
            super::super::if_nametoindex(&name).unwrap(),
            Some(t.ifindex())
        );
        drop(t);
        assert_eq!(
            super::super::if_nametoindex(&name).unwrap(),
            None,
            "closing the fd deletes the device"
        );
    }

    #[test]
    fn a_persistent_tap_outlives_its_fd_and_is_reopened_by_name() {
        let t = Tap::create("vsp%d", OFFLOADS_ALL, 2).expect("create TAP (needs root)");
        let (name, idx) = (t.name().to_string(), t.ifindex());
        // A persistent device outlives a failed assertion: remove it whatever happens.
        struct Cleanup(String);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::process::Command::new("ip")
                    .args(["link", "del", &self.0])
                    .output();
            }
        }
        let _cleanup = Cleanup(name.clone());
        t.set_persist(true).unwrap();
        drop(t);
        assert_eq!(super::super::if_nametoindex(&name).unwrap(), Some(idx));
        let t = Tap::open_existing(&name, OFFLOADS_ALL, 2).expect("reopen persistent TAP");
        assert_eq!(t.ifindex(), idx, "the same device");
        assert_eq!(t.queues(), 2);
        assert_ne!(t.queue_fd(0), t.queue_fd(1));
        assert_eq!(t.queue_fd(2), t.queue_fd(0), "queue numbers wrap");
        t.set_persist(false).unwrap();
        drop(t);
        assert_eq!(super::super::if_nametoindex(&name).unwrap(), None);
        let e = Tap::open_existing(&name, OFFLOADS_ALL, 2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
