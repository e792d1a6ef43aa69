//! A frame as a TAP hands it over: `[virtio-net header (12) | Ethernet frame]`. Runs what the
//! datapath runs on every received frame before it decides where the frame goes: the buffer's
//! header handling, the one Ethernet parse, ARP and IPv4 classification, checksum completion of
//! partial checksums, and the overlay's software segmentation and coalescing of super-frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switch::frame::FrameBuf;
use switch::gso::{segment_tcp4, Coalesce};
use switch::wire::{EthFrame, VirtioNetHdr};

fuzz_target!(|data: &[u8]| {
    let mut buf = FrameBuf::new();
    let area = buf.rx_area(VirtioNetHdr::LEN);
    let n = data.len().min(area.len());
    area[..n].copy_from_slice(&data[..n]);
    if !buf.received(n, VirtioNetHdr::LEN) {
        return;
    }
    let vnet = VirtioNetHdr::read(data).unwrap_or_default();
    let Some(eth) = EthFrame::parse(buf.data()) else {
        return;
    };
    let _ = (eth.src.is_valid_unicast(), eth.dst.is_broadcast());
    let _ = switch::local::parse_arp(buf.data());
    let frame = buf.data_mut();
    switch::datapath::complete_partial_l4(frame);
    switch::datapath::finish_checksum(
        frame,
        usize::from(vnet.csum_start),
        usize::from(vnet.csum_offset),
    );
    if let Some(ip) = frame.get(EthFrame::HEADER_LEN..) {
        if let Ok(info) = nat::packet::parse(ip) {
            assert!(info.l4 <= ip.len());
        }
    }
    // Software segmentation as for a tunnel, with the (untrusted) GSO size from the header.
    let mut out = vec![0u8; 192 * 1024];
    let mss = usize::from(vnet.gso_size).clamp(1, 9000);
    if let Some(s) = segment_tcp4(frame, mss, 42, &mut out) {
        assert!(s.len <= out.len() && s.size * s.count >= s.len);
        // Coalesce the segments back, as the receiving VTEP does (each segment has the full
        // size but the last, which has the rest).
        let mut co = Coalesce::default();
        let mut acc: Vec<u8> = Vec::new();
        let mut at = 0;
        for i in 0..s.count {
            let seg_len = if i + 1 < s.count { s.size } else { s.len - at };
            assert!(at + seg_len <= s.len);
            assert_eq!(
                overlay::decap(&out[at..at + seg_len]).ok(),
                Some(42).filter(|_| seg_len >= overlay::HEADER_LEN + 14)
            );
            let seg = &out[at + overlay::HEADER_LEN..at + seg_len];
            at += seg_len;
            if co.segs > 0 && co.accepts(&acc, acc.len(), seg) {
                let flags = co.flags_of(seg);
                acc.extend_from_slice(&seg[co.hdr_len..]);
                co.appended(seg.len() - co.hdr_len, flags);
                continue;
            }
            if co.segs > 1 {
                let _ = co.finish(&mut acc);
            }
            acc.clear();
            acc.extend_from_slice(seg);
            co.start(&acc);
        }
        assert_eq!(at, s.len);
        if co.segs > 1 {
            let _ = co.finish(&mut acc);
        }
    }
});
