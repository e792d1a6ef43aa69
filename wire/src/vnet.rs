//! The virtio-net header that precedes every frame on a TAP with `IFF_VNET_HDR` (and, 10 bytes
//! long, on a packet socket with `PACKET_VNET_HDR`): checksum and segmentation offload metadata
//! the switch keeps with the frame end to end.

/// The virtio-net header (`struct virtio_net_hdr_v1`, 12 bytes, little-endian as negotiated by
/// `TUNSETVNETHDRSZ` on a little-endian host) that precedes each frame read from or written to a
/// TAP opened with `IFF_VNET_HDR`. It carries checksum and segmentation offload metadata; the
/// switch keeps it with the frame end to end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM` (1) and `VIRTIO_NET_HDR_F_DATA_VALID` (2).
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_NONE` (0), `_TCPV4` (1), `_UDP` (3), `_TCPV6` (4), `_UDP_L4` (5),
    /// with `_ECN` (0x80) or-ed in.
    pub gso_type: u8,
    /// Length of the headers to replicate in each segment.
    pub hdr_len: u16,
    /// Segment payload size for GSO frames.
    pub gso_size: u16,
    /// Where checksumming starts, from the start of the Ethernet frame.
    pub csum_start: u16,
    /// Where the checksum is stored, from `csum_start`.
    pub csum_offset: u16,
    /// Mergeable receive buffers (always 1 on TAP reads, ignored on writes).
    pub num_buffers: u16,
}

impl VirtioNetHdr {
    /// Size of the header on the wire.
    pub const LEN: usize = 12;
    /// The checksum of this frame is partial and must be completed (`csum_start`/`csum_offset`).
    pub const F_NEEDS_CSUM: u8 = 1;
    /// `VIRTIO_NET_HDR_GSO_TCPV4`: a TCP/IPv4 super-frame to be cut into `gso_size` segments.
    pub const GSO_TCPV4: u8 = 1;
    /// `VIRTIO_NET_HDR_GSO_TCPV6`: a TCP/IPv6 super-frame to be cut into `gso_size` segments.
    pub const GSO_TCPV6: u8 = 4;

    /// Read the header from the first [`Self::LEN`] bytes; `None` if `b` is shorter.
    #[inline]
    pub fn read(b: &[u8]) -> Option<VirtioNetHdr> {
        let b: &[u8; Self::LEN] = b.get(..Self::LEN)?.try_into().ok()?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VirtioNetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: u16_at(10),
        })
    }

    /// Write the header into the first [`Self::LEN`] bytes of `b`; `b` must be long enough.
    #[inline]
    pub fn write(&self, b: &mut [u8; Self::LEN]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn vnet_roundtrip() {
        let h = VirtioNetHdr {
            flags: 1,
            gso_type: 1,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 1,
        };
        let mut b = [0u8; VirtioNetHdr::LEN];
        h.write(&mut b);
        assert_eq!(VirtioNetHdr::read(&b), Some(h));
        assert_eq!(VirtioNetHdr::read(&b[..11]), None);
    }
}
