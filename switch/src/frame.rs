//! The frame buffer: one preallocated buffer per worker, reused for every frame (no allocation on
//! the datapath). Layout:
//!
//! ```text
//! | headroom (HEADROOM) ........... | frame bytes (Ethernet) ......... | tailroom |
//!                      | vnet hdr | ^ start
//! ```
//!
//! A TAP read lands the virtio-net header immediately before `start`, so the frame is parsed in
//! place; a TAP write sends `[vnet hdr | frame]` as one contiguous slice. The headroom leaves
//! space to push outer Ethernet + IPv6 + UDP + VXLAN headers without copying the frame.

use crate::wire::VirtioNetHdr;

/// Bytes reserved in front of the frame: outer Ethernet (14) + 802.1Q (4) + IPv6 (40) + UDP (8) +
/// VXLAN (8) = 74, rounded up, plus the virtio-net header.
pub const HEADROOM: usize = 128;
/// Largest frame the buffer holds: a 64 KiB GSO super-frame plus Ethernet and VLAN headers.
pub const MAX_FRAME: usize = 65_536 + 18;

/// A frame buffer with headroom and the frame's virtio-net metadata.
pub struct FrameBuf {
    buf: Box<[u8]>,
    len: usize,
    /// Offload metadata carried with the frame.
    pub vnet: VirtioNetHdr,
}

impl Default for FrameBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameBuf {
    /// Allocate a buffer (once per worker).
    pub fn new() -> FrameBuf {
        FrameBuf {
            buf: vec![0u8; HEADROOM + MAX_FRAME].into_boxed_slice(),
            len: 0,
            vnet: VirtioNetHdr::default(),
        }
    }

    /// The area a device read fills: a virtio-net header of `hdr_len` bytes (12 on TAPs, 10
    /// on packet sockets) followed by the frame.
    pub fn rx_area(&mut self, hdr_len: usize) -> &mut [u8] {
        &mut self.buf[HEADROOM - hdr_len..]
    }

    /// Record that a device read put `n` bytes into [`Self::rx_area`]. Returns false when the
    /// read was shorter than the virtio-net header (a malformed read).
    pub fn received(&mut self, n: usize, hdr_len: usize) -> bool {
        if n < hdr_len || hdr_len > VirtioNetHdr::LEN {
            self.len = 0;
            return false;
        }
        // The 10-byte legacy header is the 12-byte one without `num_buffers`.
        let mut raw = [0u8; VirtioNetHdr::LEN];
        raw[..hdr_len].copy_from_slice(&self.buf[HEADROOM - hdr_len..HEADROOM]);
        self.vnet = VirtioNetHdr::read(&raw).unwrap_or_default();
        self.len = (n - hdr_len).min(MAX_FRAME);
        true
    }

    /// Append `bytes` to the frame (coalescing); false when they do not fit.
    pub fn append(&mut self, bytes: &[u8]) -> bool {
        let end = self.len + bytes.len();
        if end > MAX_FRAME {
            return false;
        }
        self.buf[HEADROOM + self.len..HEADROOM + end].copy_from_slice(bytes);
        self.len = end;
        true
    }

    /// Replace the contents with `frame` and clear the offload metadata (frames the switch makes).
    pub fn set(&mut self, frame: &[u8]) {
        let n = frame.len().min(MAX_FRAME);
        self.buf[HEADROOM..HEADROOM + n].copy_from_slice(&frame[..n]);
        self.len = n;
        self.vnet = VirtioNetHdr::default();
    }

    /// Record a read of `n` bytes into [`Self::rx_area`] whose first `hdr_len` bytes are a
    /// protocol header (VXLAN), not a virtio-net header: the frame has no offload metadata.
    pub fn received_raw(&mut self, n: usize, hdr_len: usize) -> bool {
        self.vnet = VirtioNetHdr::default();
        if n < hdr_len {
            self.len = 0;
            return false;
        }
        self.len = (n - hdr_len).min(MAX_FRAME);
        true
    }

    /// The `n` bytes of headroom right in front of the frame (a received protocol header, or
    /// room to write outer headers).
    pub fn headroom_mut(&mut self, n: usize) -> &mut [u8] {
        &mut self.buf[HEADROOM - n.min(HEADROOM)..HEADROOM]
    }

    /// The frame with the `n` bytes in front of it.
    pub fn with_headroom(&self, n: usize) -> &[u8] {
        &self.buf[HEADROOM - n.min(HEADROOM)..HEADROOM + self.len]
    }

    /// Resize the frame (after an in-place rewrite that changed its length).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(MAX_FRAME);
    }

    /// Frame length in bytes (Ethernet header onwards).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The frame bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[HEADROOM..HEADROOM + self.len]
    }

    /// The frame bytes, writable (for in-place rewrites).
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[HEADROOM..HEADROOM + self.len]
    }

    /// Write a virtio-net header of `hdr_len` bytes in front of the frame and return
    /// `[vnet hdr | frame]`, ready for one device write.
    pub fn wire_bytes(&mut self, hdr_len: usize) -> &[u8] {
        let hdr_len = hdr_len.min(VirtioNetHdr::LEN);
        let start = HEADROOM - hdr_len;
        let mut hdr = [0u8; VirtioNetHdr::LEN];
        self.vnet.write(&mut hdr);
        self.buf[start..HEADROOM].copy_from_slice(&hdr[..hdr_len]);
        &self.buf[start..HEADROOM + self.len]
    }

    /// [`Self::wire_bytes`] with the TAP header size.
    pub fn tap_bytes(&mut self) -> &[u8] {
        self.wire_bytes(VirtioNetHdr::LEN)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn rx_then_tap_bytes_roundtrip() {
        let mut f = FrameBuf::new();
        let area = f.rx_area(12);
        area[0] = VirtioNetHdr::F_NEEDS_CSUM;
        area[12..18].copy_from_slice(&[0xff; 6]);
        assert!(f.received(12 + 60, 12));
        assert_eq!(f.len(), 60);
        assert_eq!(f.vnet.flags, VirtioNetHdr::F_NEEDS_CSUM);
        assert_eq!(&f.data()[..6], &[0xff; 6]);
        let out = f.tap_bytes();
        assert_eq!(out.len(), 72);
        assert_eq!(out[0], VirtioNetHdr::F_NEEDS_CSUM);
        assert_eq!(f.wire_bytes(10).len(), 70);
    }

    #[test]
    fn short_read_is_rejected() {
        let mut f = FrameBuf::new();
        assert!(!f.received(5, 12));
        assert!(f.is_empty());
    }
}
