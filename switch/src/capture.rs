//! Packet capture: taps on ports that copy frames to capture sessions, and the pcap format those
//! sessions stream.
//!
//! The datapath only checks an atomic flag when nobody captures. When someone does, the frame is
//! copied into a bounded channel with `try_send`: a full channel (in frames, or in bytes: a
//! queue of TCP super-frames would otherwise hold 256 MiB) drops the copy and counts it
//! (`capture_dropped`), it never blocks a worker.
//!
//! A session is read without a thread of its own: [`Session::poll_recv`] is a future's poll
//! (the API streams each session from a task on its runtime). The reader parks its waker in the
//! session, and a worker that queues a frame wakes it only when it is parked, so a busy reader
//! costs the worker no wake-up at all and an idle one a single wake-up per batch of frames.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

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
    wake: Arc<Wake>,
}

impl std::ops::Drop for Sink {
    /// A reader waiting on a session whose last sink goes sees the channel closed: wake it.
    fn drop(&mut self) {
        self.wake.wake();
    }
}

/// How a worker wakes the task reading a session, without a lock while the reader is busy.
///
/// The reader stores its waker, sets `parked`, then looks at the channel once more; a worker
/// queues its frame, then looks at `parked`. A `SeqCst` fence on each side between its write
/// and its read means at least one of them sees the other's write: either the reader finds the
/// frame, or the worker finds it parked and wakes it. No frame is left unseen.
#[derive(Default)]
struct Wake {
    parked: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Wake {
    /// Worker side, after queueing a frame: wake the reader if it waits. // HOT PATH
    #[inline]
    fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::AcqRel) {
            // `wake_by_ref` does not block (a runtime's wake queues the task and, at most, writes
            // its eventfd); the lock is only ever contended by the reader storing a new waker.
            if let Ok(w) = self.waker.lock() {
                if let Some(w) = w.as_ref() {
                    w.wake_by_ref();
                }
            }
        }
    }

    /// Reader side, before its last look at the channel: park `waker`.
    fn park(&self, waker: &Waker) {
        if let Ok(mut w) = self.waker.lock() {
            if !w.as_ref().is_some_and(|old| old.will_wake(waker)) {
                *w = Some(waker.clone());
            }
        }
        self.parked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }
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
                    Ok(()) => {
                        s.wake.wake();
                        true
                    }
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
                wake: q.wake.clone(),
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
    /// Frames arrive here (read them with [`Session::poll_recv`], [`Session::try_recv`] or
    /// [`Session::recv_timeout`], which give their bytes back to the session's budget).
    frames: Receiver<Captured>,
    /// Copies dropped because this session's buffer was full.
    pub dropped: Arc<AtomicU64>,
    /// Bytes of frame data queued and not read yet.
    queued: Arc<AtomicUsize>,
    /// Where the reader waits (see [`Session::poll_recv`]).
    wake: Arc<Wake>,
    taps: Vec<Arc<Taps>>,
}

impl Session {
    /// Attach a new session to `taps` (each with the directions given).
    pub fn start(id: u64, taps: Vec<(Arc<Taps>, bool, bool)>) -> Session {
        let (tx, rx) = crossbeam_channel::bounded(SESSION_QUEUE);
        ACTIVE.fetch_add(1, Ordering::Relaxed);
        let mut s = Session {
            id,
            frames: rx,
            dropped: Arc::new(AtomicU64::new(0)),
            queued: Arc::new(AtomicUsize::new(0)),
            wake: Arc::new(Wake::default()),
            taps: Vec::with_capacity(taps.len()),
        };
        for (t, d_rx, d_tx) in taps {
            t.add(id, d_rx, d_tx, &s, tx.clone());
            s.taps.push(t);
        }
        s
    }

    /// The next captured frame, for a task: `Ready(Some)` with a frame, `Ready(None)` when no
    /// frame can arrive any more (every tap is gone), or `Pending` with `cx`'s waker parked, to
    /// be woken by the next frame queued.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Captured>> {
        match self.try_recv() {
            Ok(c) => return Poll::Ready(Some(c)),
            Err(TryRecvError::Disconnected) => return Poll::Ready(None),
            Err(TryRecvError::Empty) => {}
        }
        self.wake.park(cx.waker());
        // A frame queued between the first look and parking woke nobody: look again.
        match self.try_recv() {
            Ok(c) => Poll::Ready(Some(c)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }

    /// The next captured frame, waiting up to `wait` (blocks the calling thread).
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
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Capture sessions open in this process.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// How many capture sessions are open (the metrics' `vswitch_capture_sessions`).
pub fn active_sessions() -> usize {
    ACTIVE.load(Ordering::Relaxed)
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

    /// A waker that counts its wakes and unparks the thread that made it.
    struct Unpark {
        thread: std::thread::Thread,
        wakes: AtomicUsize,
    }

    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
            self.thread.unpark();
        }
    }

    fn unpark_waker() -> (Arc<Unpark>, Waker) {
        let u = Arc::new(Unpark {
            thread: std::thread::current(),
            wakes: AtomicUsize::new(0),
        });
        (u.clone(), Waker::from(u))
    }

    #[test]
    fn a_parked_reader_is_woken_once_and_a_busy_one_not_at_all() {
        let t = Arc::new(Taps::default());
        let s = Session::start(1, vec![(t.clone(), true, true)]);
        let (u, waker) = unpark_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(s.poll_recv(&mut cx).is_pending());
        t.emit(Dir::Rx, &[1]);
        t.emit(Dir::Rx, &[2]);
        assert_eq!(u.wakes.load(Ordering::SeqCst), 1, "one wake for a batch");
        for want in [1, 2] {
            match s.poll_recv(&mut cx) {
                Poll::Ready(Some(c)) => assert_eq!(c.data, vec![want]),
                other => panic!("expected frame {want}, got {other:?}"),
            }
        }
        // Frames that find the reader not parked wake nobody.
        t.emit(Dir::Rx, &[3]);
        assert!(matches!(s.poll_recv(&mut cx), Poll::Ready(Some(_))));
        assert_eq!(u.wakes.load(Ordering::SeqCst), 1);
        assert!(s.poll_recv(&mut cx).is_pending());
    }

    #[test]
    fn no_frame_is_left_unseen_with_a_worker_on_another_thread() {
        // Ping-pong: the worker emits a frame and waits for this thread (reading as a task
        // would) to take it, so every frame is one chance for the wake-up to be lost. A lost one
        // leaves this thread parked with the frame queued (caught by the park timeout).
        const FRAMES: u64 = 20_000;
        let t = Arc::new(Taps::default());
        let s = Session::start(1, vec![(t.clone(), true, true)]);
        let read = Arc::new(AtomicU64::new(0));
        let worker = {
            let (t, read) = (t.clone(), read.clone());
            std::thread::spawn(move || {
                for i in 0..FRAMES {
                    t.emit(Dir::Rx, &i.to_le_bytes());
                    let start = std::time::Instant::now();
                    while read.load(Ordering::SeqCst) <= i {
                        if start.elapsed() > std::time::Duration::from_secs(5) {
                            return false;
                        }
                        std::thread::yield_now();
                    }
                }
                true
            })
        };
        let (_u, waker) = unpark_waker();
        let mut cx = Context::from_waker(&waker);
        while read.load(Ordering::SeqCst) < FRAMES && !worker.is_finished() {
            match s.poll_recv(&mut cx) {
                Poll::Ready(Some(c)) => {
                    let n = read.load(Ordering::SeqCst);
                    assert_eq!(c.data, n.to_le_bytes(), "frames in order");
                    read.store(n + 1, Ordering::SeqCst);
                }
                Poll::Ready(None) => unreachable!("the taps are alive"),
                Poll::Pending => {
                    std::thread::park_timeout(std::time::Duration::from_secs(10));
                }
            }
        }
        assert!(
            worker.join().expect("worker"),
            "frame {} was not read within 5 s: its wake-up was lost",
            read.load(Ordering::SeqCst)
        );
        assert_eq!(s.dropped.load(Ordering::SeqCst), 0);
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
