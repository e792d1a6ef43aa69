//! Reading the frames of a classic pcap file (`vswitchctl trace --from-pcap`): either byte
//! order, microsecond or nanosecond stamps, Ethernet link type only.

/// The frames of `data`, a pcap file, or what is wrong with it (one line).
pub fn frames(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let head = data.get(..24).ok_or("too short for a pcap file header")?;
    let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        0x0a0d_0d0a => {
            return Err("a pcapng file: write classic pcap (tcpdump -w, or editcap -F pcap)".into())
        }
        _ => return Err("not a pcap file (bad magic number)".into()),
    };
    let u32_at = |b: &[u8], at: usize| {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let link = u32_at(head, 20);
    if link != 1 {
        return Err(format!("link type {link}, not Ethernet (1)"));
    }
    let mut out = Vec::new();
    let mut at = 24;
    while at < data.len() {
        let rec = data
            .get(at..at + 16)
            .ok_or_else(|| format!("record {} is cut short", out.len() + 1))?;
        let len = usize::try_from(u32_at(rec, 8)).unwrap_or(usize::MAX);
        let frame = (at + 16)
            .checked_add(len)
            .and_then(|end| data.get(at + 16..end))
            .ok_or_else(|| format!("record {} is cut short", out.len() + 1))?;
        out.push(frame.to_vec());
        at += 16 + len;
    }
    if out.is_empty() {
        return Err("no frames in it".into());
    }
    Ok(out)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn frames_are_read_and_bad_files_refused() {
        let mut f = switch::capture::pcap_header().to_vec();
        let c = switch::capture::Captured {
            ts: std::time::SystemTime::now(),
            orig_len: 3,
            data: vec![1, 2, 3],
        };
        switch::capture::pcap_record(&c, &mut f);
        switch::capture::pcap_record(&c, &mut f);
        assert_eq!(frames(&f).unwrap(), vec![vec![1, 2, 3], vec![1, 2, 3]]);
        assert!(frames(&f[..f.len() - 1]).unwrap_err().contains("record 2"));
        assert!(frames(&f[..24]).unwrap_err().contains("no frames"));
        assert!(frames(b"junk").unwrap_err().contains("too short"));
        assert!(frames(&[0u8; 24]).unwrap_err().contains("magic"));
    }
}
