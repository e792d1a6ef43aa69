//! Packet capture: taps on ports that copy frames to capture sessions, and the pcap format those
//! sessions stream.
//!
//! The datapath only checks an atomic flag when nobody captures. When someone does, the frame is
//! copied into a bounded channel with `try_send`: a full channel drops the copy and counts it
//! (`capture_dropped`), it never blocks a worker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Capacity of one session's channel, in frames.
pub const SESSION_QUEUE: usize = 4096;
/// Bytes kept of each frame (pcap snaplen).
pub const SNAPLEN: usize = 65_535;

/// Which direction a tap copies, seen from the switch port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Frames the switch received from the port.
    Rx,
    /// Frames the switch sent to the port.
    Tx,
}

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Captured {
    /// When it was seen.
    pub ts: SystemTime,
    /// Frame length on the wire.
    pub orig_len: usize,
    /// The frame bytes (at most [`SNAPLEN`]).
    pub data: Vec<u8>,
}

struct Sink {
    session: u64,
    rx: bool,
    tx: bool,
    chan: Sender<Captured>,
    dropped: Arc<AtomicU64>,
}

/// The capture taps of one port (or of a network's switch-originated frames).
#[derive(Default)]
pub struct Taps {
    active: AtomicBool,
    sinks: Mutex<Vec<Sink>>,
}

impl Taps {
    /// Copy `frame` to every session tapping direction `dir`. Returns how many copies were
    /// dropped because a session's buffer was full. // HOT PATH: one relaxed load when idle.
    #[inline]
    pub fn emit(&self, dir: Dir, frame: &[u8]) -> u64 {
        if !self.active.load(Ordering::Relaxed) {
            return 0;
        }
        self.emit_slow(dir, frame)
    }

    #[cold]
    fn emit_slow(&self, dir: Dir, frame: &[u8]) -> u64 {
        let Ok(sinks) = self.sinks.lock() else {
            return 0;
        };
        let mut dropped = 0;
        for s in sinks
            .iter()
            .filter(|s| if dir == Dir::Rx { s.rx } else { s.tx })
        {
            let c = Captured {
                ts: SystemTime::now(),
                orig_len: frame.len(),
                data: frame[..frame.len().min(SNAPLEN)].to_vec(),
            };
            match s.chan.try_send(c) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    dropped += 1;
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
        dropped
    }

    /// Start copying frames of the given directions to `chan` for session `session`.
    pub fn add(
        &self,
        session: u64,
        rx: bool,
        tx: bool,
        chan: Sender<Captured>,
        dropped: Arc<AtomicU64>,
    ) {
        if let Ok(mut s) = self.sinks.lock() {
            s.push(Sink {
                session,
                rx,
                tx,
                chan,
                dropped,
            });
            self.active.store(true, Ordering::Relaxed);
        }
    }

    /// Stop copying frames to session `session`.
    pub fn remove(&self, session: u64) {
        if let Ok(mut s) = self.sinks.lock() {
            s.retain(|k| k.session != session);
            self.active.store(!s.is_empty(), Ordering::Relaxed);
        }
    }
}

/// A capture session: the receiving end plus what to detach when it ends.
pub struct Session {
    /// Session identifier.
    pub id: u64,
    /// Frames arrive here.
    pub frames: Receiver<Captured>,
    /// Copies dropped because this session's buffer was full.
    pub dropped: Arc<AtomicU64>,
    taps: Vec<Arc<Taps>>,
}

impl Session {
    /// Attach a new session to `taps` (each with the directions given).
    pub fn start(id: u64, taps: Vec<(Arc<Taps>, bool, bool)>) -> Session {
        let (tx, rx) = crossbeam_channel::bounded(SESSION_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let mut held = Vec::with_capacity(taps.len());
        for (t, d_rx, d_tx) in taps {
            t.add(id, d_rx, d_tx, tx.clone(), dropped.clone());
            held.push(t);
        }
        Session {
            id,
            frames: rx,
            dropped,
            taps: held,
        }
    }
}

impl std::ops::Drop for Session {
    fn drop(&mut self) {
        for t in &self.taps {
            t.remove(self.id);
        }
    }
}

/// pcap link type for Ethernet.
pub const LINKTYPE_ETHERNET: u32 = 1;

/// The 24-byte pcap global header (microsecond timestamps, Ethernet).
pub fn pcap_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone = 0, sigfigs = 0
    h[16..20].copy_from_slice(&(SNAPLEN as u32).to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    h
}

/// Append one pcap record for `c` to `out`.
pub fn pcap_record(c: &Captured, out: &mut Vec<u8>) {
    let d = c.ts.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    out.extend_from_slice(&secs.to_le_bytes());
    out.extend_from_slice(&d.subsec_micros().to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(c.data.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&u32::try_from(c.orig_len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&c.data);
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn idle_taps_copy_nothing() {
        let t = Arc::new(Taps::default());
        assert!(!t.active.load(Ordering::Relaxed), "fresh taps must be idle");
        let s = Session::start(1, vec![(t.clone(), true, true)]);
        assert!(
            t.active.load(Ordering::Relaxed),
            "a session makes them active"
        );
        t.emit(Dir::Rx, &[1]);
        let frames = s.frames.clone();
        drop(s);
        // Idle again: a frame emitted now reaches no one, and nothing is dropped either.
        assert!(
            !t.active.load(Ordering::Relaxed),
            "an ended session left them active"
        );
        assert_eq!(t.emit(Dir::Rx, &[2]), 0);
        assert_eq!(frames.try_recv().map(|c| c.data).ok(), Some(vec![1]));
        assert!(
            frames.try_recv().is_err(),
            "a frame was copied after the session ended"
        );
    }

    #[test]
    fn session_gets_its_directions_and_detaches_on_drop() {
        let t = Arc::new(Taps::default());
        let s = Session::start(1, vec![(t.clone(), true, false)]);
        t.emit(Dir::Rx, &[1, 2, 3]);
        t.emit(Dir::Tx, &[4, 5, 6]);
        assert_eq!(s.frames.try_recv().unwrap().data, vec![1, 2, 3]);
        assert!(s.frames.try_recv().is_err());
        drop(s);
        assert!(!t.active.load(Ordering::Relaxed));
    }

    #[test]
    fn full_session_drops_and_counts() {
        let t = Arc::new(Taps::default());
        let s = Session::start(1, vec![(t.clone(), true, true)]);
        for _ in 0..SESSION_QUEUE {
            assert_eq!(t.emit(Dir::Rx, &[0; 60]), 0);
        }
        assert_eq!(t.emit(Dir::Rx, &[0; 60]), 1);
        assert_eq!(s.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn pcap_layout() {
        let h = pcap_header();
        assert_eq!(&h[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        let mut out = Vec::new();
        let c = Captured {
            ts: UNIX_EPOCH + std::time::Duration::from_micros(1_500_000),
            orig_len: 100,
            data: vec![7; 60],
        };
        pcap_record(&c, &mut out);
        assert_eq!(out.len(), 16 + 60);
        assert_eq!(u32::from_le_bytes(out[0..4].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()), 500_000);
        assert_eq!(u32::from_le_bytes(out[8..12].try_into().unwrap()), 60);
        assert_eq!(u32::from_le_bytes(out[12..16].try_into().unwrap()), 100);
    }
}
