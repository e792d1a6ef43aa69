//! The event stream and the flow log: JSON lines for whoever listens (`vswitchctl events`,
//! `vswitchctl flows --follow`). Publishing never blocks and costs one atomic load when nobody
//! listens; each listener has a bounded queue, and what does not fit is dropped and counted for
//! that listener (a slow reader loses lines, it never slows the datapath).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// What a listener follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Endpoints, FDB moves, peers, conntrack full, flood limiting (`vswitchctl events`).
    Events,
    /// Connections as conntrack creates, changes and destroys them (`vswitchctl flows`).
    Flows,
}

/// Lines a listener's queue holds before it loses the next ones.
pub const QUEUE: usize = 4096;

struct Sub {
    id: u64,
    topic: Topic,
    tx: Sender<String>,
    lost: Arc<AtomicU64>,
}

/// The listeners.
#[derive(Default)]
pub struct Bus {
    subs: Mutex<Vec<Sub>>,
    /// Listeners per topic (`[events, flows]`): read on every publish, without the lock.
    count: [AtomicUsize; 2],
    next: AtomicU64,
}

/// One listener: its lines, and how many it lost. Unsubscribed when dropped.
pub struct Subscription {
    /// Lines published since it subscribed.
    pub rx: Receiver<String>,
    /// Lines that did not fit its queue.
    pub lost: Arc<AtomicU64>,
    id: u64,
    bus: Arc<Bus>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = self.bus.subs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = subs.iter().position(|s| s.id == self.id) {
            let s = subs.remove(i);
            self.bus.count[s.topic as usize].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Bus {
    /// Follow `topic` from now on.
    pub fn subscribe(self: &Arc<Self>, topic: Topic) -> Subscription {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let lost = Arc::new(AtomicU64::new(0));
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        subs.push(Sub {
            id,
            topic,
            tx,
            lost: lost.clone(),
        });
        self.count[topic as usize].fetch_add(1, Ordering::Relaxed);
        Subscription {
            rx,
            lost,
            id,
            bus: self.clone(),
        }
    }

    /// Whether anyone follows `topic` (one atomic load: check before building a line).
    /// // HOT PATH
    #[inline]
    pub fn listening(&self, topic: Topic) -> bool {
        self.count[topic as usize].load(Ordering::Relaxed) > 0
    }

    /// Give every listener of `topic` the JSON object `fields` as a line, with `time` (Unix
    /// seconds) and `type` in front. Nothing is built when nobody listens.
    pub fn publish(&self, topic: Topic, kind: &str, fields: impl FnOnce() -> serde_json::Value) {
        if !self.listening(topic) {
            return;
        }
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut obj = serde_json::Map::new();
        obj.insert("time".into(), serde_json::json!((time * 1e3).round() / 1e3));
        obj.insert("type".into(), kind.into());
        if let serde_json::Value::Object(m) = fields() {
            obj.extend(m);
        }
        let line = serde_json::Value::Object(obj).to_string();
        let subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        for s in subs.iter().filter(|s| s.topic == topic) {
            match s.tx.try_send(line.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    s.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The family name of an address type (`ipv4`, `ipv6`).
pub fn family<A: nat::Addr>() -> &'static str {
    if A::BRACKETED {
        "ipv6"
    } else {
        "ipv4"
    }
}

/// A tracked flow as the flow log shows it when it goes: its tuples, translation, state, and
/// the packets and bytes seen each way.
pub fn flow_fields<A: nat::Addr>(
    f: &nat::Flow<A>,
    network: Option<&str>,
    reason: &str,
) -> serde_json::Value {
    let ((po, pr), (bo, br)) = f.counts();
    serde_json::json!({
        "family": family::<A>(),
        "proto": f.orig.proto.name(),
        "nat": f.kind.name(),
        "network": network,
        "orig": f.orig.to_string(),
        "reply": f.reply.to_string(),
        "state": f.state_name(),
        "reason": reason,
        "packets": {"orig": po, "reply": pr},
        "bytes": {"orig": bo, "reply": br},
    })
}

#[cfg(test)]
mod test {
    use super::*;
    use serde_json::json;

    #[test]
    fn listeners_get_their_topic_and_a_full_queue_loses_lines_counted() {
        let bus = Arc::new(Bus::default());
        assert!(!bus.listening(Topic::Events));
        bus.publish(Topic::Events, "x", || panic!("nobody listens: not built"));
        let ev = bus.subscribe(Topic::Events);
        let fl = bus.subscribe(Topic::Flows);
        bus.publish(Topic::Events, "endpoint_attached", || json!({"netns": "a"}));
        let line: serde_json::Value = serde_json::from_str(&ev.rx.try_recv().unwrap()).unwrap();
        assert_eq!(line["type"], "endpoint_attached");
        assert_eq!(line["netns"], "a");
        assert!(fl.rx.try_recv().is_err(), "not its topic");
        for _ in 0..QUEUE + 10 {
            bus.publish(Topic::Flows, "new", || json!({}));
        }
        assert_eq!(fl.lost.load(Ordering::Relaxed), 10);
        assert_eq!(fl.rx.len(), QUEUE);
        drop(fl);
        assert!(!bus.listening(Topic::Flows));
        assert!(bus.listening(Topic::Events));
    }
}
