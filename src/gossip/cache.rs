//! Bounded caches: ids seen (by size and age), and recent messages for IWANT.

use crate::collections::Map;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gossip::message::MessageId;
use crate::identity::PeerId;
use crate::wire;

/// Ids seen recently: bounded in count and in time.
#[derive(Debug)]
pub struct SeenCache {
    set: Map<MessageId, Instant>,
    order: VecDeque<(Instant, MessageId)>,
    ttl: Duration,
    max: usize,
}

impl SeenCache {
    /// A cache keeping ids for `ttl`, at most `max` of them.
    pub fn new(ttl: Duration, max: usize) -> Self {
        SeenCache {
            set: Map::default(),
            order: VecDeque::new(),
            ttl,
            max: max.max(1),
        }
    }

    /// Records `id`; `false` if it was already there.
    pub fn insert(&mut self, id: MessageId, now: Instant) -> bool {
        self.expire(now);
        if self.set.contains_key(&id) {
            return false;
        }
        while self.set.len() >= self.max {
            match self.order.pop_front() {
                Some((_, old)) => {
                    self.set.remove(&old);
                }
                None => break,
            }
        }
        self.set.insert(id, now);
        self.order.push_back((now, id));
        true
    }

    /// When `id` was first seen, if it was.
    pub fn first_seen(&self, id: &MessageId) -> Option<Instant> {
        self.set.get(id).copied()
    }

    /// Whether `id` was seen.
    pub fn contains(&self, id: &MessageId) -> bool {
        self.set.contains_key(id)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(t, id)) = self.order.front() {
            if now.saturating_duration_since(t) < self.ttl {
                break;
            }
            self.order.pop_front();
            self.set.remove(&id);
        }
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// A cached message, in the form it is forwarded in.
#[derive(Debug, Clone)]
pub enum Cached {
    /// A whole message.
    Whole(wire::GossipMessage),
    /// A streamed message: its head and its encoded chunk RPCs.
    Stream(wire::StreamHead, Vec<Arc<Vec<u8>>>),
}

impl Cached {
    /// Its topic.
    pub fn topic(&self) -> &str {
        match self {
            Cached::Whole(m) => &m.topic,
            Cached::Stream(h, _) => &h.topic,
        }
    }

    /// Bytes it holds.
    pub fn len(&self) -> usize {
        match self {
            Cached::Whole(m) => m.data.len(),
            Cached::Stream(h, chunks) => {
                h.chunk_hashes.len() + chunks.iter().map(|c| c.len()).sum::<usize>()
            }
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Messages of the last few heartbeats, for IWANT answers and IHAVE gossip.
#[derive(Debug)]
pub struct MessageCache {
    /// Each message with how often each peer got it through IWANT.
    msgs: Map<MessageId, (Cached, Vec<(PeerId, u32)>)>,
    windows: VecDeque<Vec<(MessageId, String)>>,
    history: usize,
    gossip: usize,
    /// Windows added to both while the network lags (see `gossip::lag`).
    extra: usize,
    bytes: usize,
    max_bytes: usize,
}

impl MessageCache {
    /// A cache of `history` heartbeat windows, the newest `gossip` of them gossiped.
    pub fn new(history: usize, gossip: usize, max_bytes: usize) -> Self {
        let mut windows = VecDeque::new();
        windows.push_back(Vec::new());
        MessageCache {
            msgs: Map::default(),
            windows,
            history: history.max(1),
            gossip: gossip.max(1),
            extra: 0,
            bytes: 0,
            max_bytes,
        }
    }

    fn drop_oldest_window(&mut self) {
        if let Some(old) = self.windows.pop_front() {
            for (id, _) in old {
                if let Some((m, _)) = self.msgs.remove(&id) {
                    self.bytes -= m.len();
                }
            }
        }
    }

    /// Adds a message to the current window.
    pub fn put(&mut self, id: MessageId, msg: Cached) {
        if self.msgs.contains_key(&id) {
            return;
        }
        self.bytes += msg.len();
        let topic = msg.topic().to_string();
        self.msgs.insert(id, (msg, Vec::new()));
        if let Some(w) = self.windows.back_mut() {
            w.push((id, topic));
        }
        // Over the byte bound, whole old windows go (never the current one).
        while self.bytes > self.max_bytes && self.windows.len() > 1 {
            self.drop_oldest_window();
        }
    }

    /// The message for `peer`'s IWANT; `None` once that peer had it `max_replies`
    /// times (a peer asking again and again is spamming, others are not).
    pub fn get_for_iwant(
        &mut self,
        id: &MessageId,
        peer: PeerId,
        max_replies: u32,
    ) -> Option<&Cached> {
        let (msg, replies) = self.msgs.get_mut(id)?;
        match replies.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, n)) if *n >= max_replies => return None,
            Some((_, n)) => *n += 1,
            None => replies.push((peer, 1)),
        }
        Some(msg)
    }

    /// Ids of `topic` in the gossip windows.
    pub fn gossip_ids(&self, topic: &str) -> Vec<MessageId> {
        self.windows
            .iter()
            .rev()
            .take(self.gossip + self.extra / 2)
            .flat_map(|w| w.iter().filter(|(_, t)| t == topic).map(|(id, _)| *id))
            .collect()
    }

    /// Keeps `extra` more windows than configured (and gossips half of them too).
    pub fn set_extra(&mut self, extra: usize) {
        self.extra = extra;
    }

    /// Starts a new window, dropping the oldest beyond the history.
    pub fn shift(&mut self) {
        self.windows.push_back(Vec::new());
        while self.windows.len() > self.history + self.extra {
            self.drop_oldest_window();
        }
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_cache_is_bounded_in_size_and_time() {
        let t0 = Instant::now();
        let mut s = SeenCache::new(Duration::from_secs(10), 3);
        assert!(s.insert([1; 32], t0));
        assert!(!s.insert([1; 32], t0));
        s.insert([2; 32], t0);
        s.insert([3; 32], t0);
        s.insert([4; 32], t0);
        assert_eq!(s.len(), 3);
        assert!(!s.contains(&[1; 32]), "oldest evicted by size");
        assert!(s.insert([5; 32], t0 + Duration::from_secs(10)));
        assert_eq!(s.len(), 1, "all older ones expired");
    }

    #[test]
    fn message_cache_keeps_history_windows_and_limits_iwant_replies() {
        let mut c = MessageCache::new(3, 2, 1 << 20);
        let m = wire::GossipMessage {
            topic: "t".into(),
            ..Default::default()
        };
        c.put([1; 32], Cached::Whole(m.clone()));
        c.shift();
        c.put([2; 32], Cached::Whole(m.clone()));
        assert_eq!(c.gossip_ids("t").len(), 2);
        c.shift();
        assert_eq!(c.gossip_ids("t"), vec![[2; 32]]);
        let (a, b) = (PeerId::from_bytes([1; 32]), PeerId::from_bytes([2; 32]));
        assert!(c.get_for_iwant(&[1; 32], a, 2).is_some());
        assert!(c.get_for_iwant(&[1; 32], a, 2).is_some());
        assert!(
            c.get_for_iwant(&[1; 32], a, 2).is_none(),
            "a third time for one peer"
        );
        assert!(
            c.get_for_iwant(&[1; 32], b, 2).is_some(),
            "other peers still get it"
        );
        c.shift();
        assert_eq!(c.len(), 1, "oldest window dropped");
    }
}
