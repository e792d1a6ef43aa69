//! Packet capture: taps on ports that copy frames to capture sessions, and the pcap format those
//! sessions stream.
//!
//! The datapath only checks an atomic flag when nobody captures. When someone does, the frame is
//! copied into a bounded channel with `try_send`: a full channel (in frames, or in bytes: a
//! queue of TCP super-frames would otherwise hold 256 MiB) drops the copy and counts it
//! (`capture_dropped`), it never blocks a worker.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::counters::{Drop, WorkerCounters};

/// Capacity of one session's channel, in frames.
pub const SESSION_QUEUE: usize = 4096;
/// Capacity of one session's channel, in bytes of frame data.
pub const SESSION_BYTES: usize = 8 << 20;
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
    queued: Arc<AtomicUsize>,
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

    /// [`Self::emit`] with each copy a full session could not take counted as a
    /// `capture_dropped` drop on the worker's counters. // HOT PATH
    #[inline]
    pub fn emit_counted(&self, dir: Dir, frame: &[u8], counters: &WorkerCounters) {
        for _ in 0..self.emit(dir, frame) {
            counters.drop(Drop::CaptureDropped);
        }
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
            let len = frame.len().min(SNAPLEN);
            let full = s.queued.fetch_add(len, Ordering::Relaxed) + len > SESSION_BYTES;
            let sent = !full && {
                let c = Captured {
                    ts: SystemTime::now(),
                    orig_len: frame.len(),
                    data: frame[..len].to_vec(),
                };
                match s.chan.try_send(c) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => false,
                    Err(TrySendError::Disconnected(_)) => {
                        s.queued.fetch_sub(len, Ordering::Relaxed);
                        continue;
                    }
                }
            };
            if !sent {
                s.queued.fetch_sub(len, Ordering::Relaxed);
                s.dropped.fetch_add(1, Ordering::Relaxed);
                dropped += 1;
            }
        }
        dropped
    }

    /// Start copying frames of the given directions to session `session`'s channel.
    fn add(&self, session: u64, rx: bool, tx: bool, q: &Session, chan: Sender<Captured>) {
        if let Ok(mut s) = self.sinks.lock() {
            s.push(Sink {
                session,
                rx,
                tx,
                chan,
                dropped: q.dropped.clone(),
                queued: q.queued.clone(),
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
    /// Frames arrive here (read them with [`Session::recv_timeout`] and [`Session::try_recv`],
    /// which give their bytes back to the session's budget).
    frames: Receiver<Captured>,
    /// Copies dropped because this session's buffer was full.
    pub dropped: Arc<AtomicU64>,
    /// Bytes of frame data queued and not read yet.
    queued: Arc<AtomicUsize>,
    taps: Vec<Arc<Taps>>,
}

impl Session {
    /// Attach a new session to `taps` (each with the directions given).
    pub fn start(id: u64, taps: Vec<(Arc<Taps>, bool, bool)>) -> Session {
        let (tx, rx) = crossbeam_channel::bounded(SESSION_QUEUE);
        let mut s = Session {
            id,
            frames: rx,
            dropped: Arc::new(AtomicU64::new(0)),
            queued: Arc::new(AtomicUsize::new(0)),
            taps: Vec::with_capacity(taps.len()),
        };
        for (t, d_rx, d_tx) in taps {
            t.add(id, d_rx, d_tx, &s, tx.clone());
            s.taps.push(t);
        }
        s
    }

    /// The next captured frame, waiting up to `wait`.
    pub fn recv_timeout(
        &self,
        wait: std::time::Duration,
    ) -> Result<Captured, crossbeam_channel::RecvTimeoutError> {
        self.frames.recv_timeout(wait).inspect(|c| self.release(c))
    }

    /// The next captured frame if one is queued.
    pub fn try_recv(&self) -> Result<Captured, crossbeam_channel::TryRecvError> {
        self.frames.try_recv().inspect(|c| self.release(c))
    }

    fn release(&self, c: &Captured) {
        self.queued.fetch_sub(c.data.len(), Ordering::Relaxed);
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
        assert_eq!(s.try_recv().unwrap().data, vec![1, 2, 3]);
        assert!(s.try_recv().is_err());
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
    fn a_session_holds_at_most_its_byte_budget_and_gets_it_back_when_read() {
        let t = Arc::new(Taps::default());
        let s = Session::start(1, vec![(t.clone(), true, true)]);
        let big = vec![0u8; SNAPLEN];
        let fits = SESSION_BYTES / SNAPLEN;
        for _ in 0..fits {
            assert_eq!(t.emit(Dir::Rx, &big), 0);
        }
        assert_eq!(t.emit(Dir::Rx, &big), 1, "past the byte budget");
        assert_eq!(s.dropped.load(Ordering::Relaxed), 1);
        assert!(
            fits < SESSION_QUEUE,
            "the byte budget binds before the frame count"
        );
        s.try_recv().expect("a queued frame");
        assert_eq!(t.emit(Dir::Rx, &big), 0, "reading gives the bytes back");
        assert_eq!(s.queued.load(Ordering::Relaxed), fits * SNAPLEN);
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
