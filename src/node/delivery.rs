//! Hands events to the application without ever blocking the loop.
//!
//! Each destination (the shared event queue, a channel's own queue, or a reactor's)
//! is a bounded crossbeam channel. What does not fit waits here, in order, and is
//! retried; a message's receive credit goes back to the peer only once the
//! application's queue took it, so a slow consumer throttles its senders instead of
//! growing memory.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use crate::error::DisconnectReason;
use crate::identity::PeerId;
use crate::mux::ChannelId;
use crate::node::event::Event;
use crate::node::reactor::{ReactorError, ReactorEvent};
use crate::node::PeerInfo;

/// Credit to give back once an event is handed over: (connection, channel, bytes).
pub(crate) type Release = (usize, ChannelId, usize);

/// First retry of a blocked queue; doubles while nothing moves, up to the maximum.
const RETRY_MIN: Duration = Duration::from_millis(1);
const RETRY_MAX: Duration = Duration::from_millis(50);

struct Queue<E> {
    tx: Sender<E>,
    waiting: VecDeque<(E, Option<Release>)>,
    /// The receiver is gone: what comes is released at once.
    gone: bool,
}

impl<E> Queue<E> {
    fn new(tx: Sender<E>) -> Self {
        Queue {
            tx,
            waiting: VecDeque::new(),
            gone: false,
        }
    }

    fn push(&mut self, event: E, release: Option<Release>, released: &mut Vec<Release>) {
        self.waiting.push_back((event, release));
        self.flush(released);
    }

    /// Hands over what fits, in order; returns whether anything was handed over.
    fn flush(&mut self, released: &mut Vec<Release>) -> bool {
        let mut moved = false;
        while let Some((event, release)) = self.waiting.pop_front() {
            match self.tx.try_send(event) {
                Ok(()) => {
                    released.extend(release);
                    moved = true;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.gone = true;
                    released.extend(release);
                    moved = true;
                }
                Err(TrySendError::Full(event)) => {
                    self.waiting.push_front((event, release));
                    break;
                }
            }
        }
        moved
    }
}

/// A queue the application asks for while the node runs.
pub(crate) enum NewQueue {
    /// A reactor taking `channels`; `alive` is cleared when it is dropped.
    Reactor {
        channels: Vec<ChannelId>,
        tx: Sender<ReactorEvent>,
        alive: Arc<AtomicBool>,
    },
    /// The gossip messages of `topic`.
    Topic { topic: String, tx: Sender<Event> },
}

/// A reactor's queue and the channels it takes.
struct ReactorQueue {
    channels: Vec<ChannelId>,
    queue: Queue<ReactorEvent>,
    /// Cleared when the application drops its [`crate::Reactor`].
    alive: Arc<AtomicBool>,
}

impl ReactorQueue {
    fn is_gone(&self) -> bool {
        self.queue.gone || !self.alive.load(Ordering::Acquire)
    }

    /// `peer` left. If the reactor has not yet taken its `PeerAdded` and nothing of
    /// it follows, the two cancel out (a stalled reactor under churn holds no more
    /// than its peers' worth of lifecycle events); otherwise `PeerRemoved` queues.
    fn peer_removed(
        &mut self,
        peer: PeerId,
        reason: DisconnectReason,
        released: &mut Vec<Release>,
    ) {
        let last_of_peer = self.queue.waiting.iter().rposition(|(ev, _)| match ev {
            ReactorEvent::PeerAdded(info) => info.id == peer,
            ReactorEvent::Message { peer: p, .. } | ReactorEvent::PeerRemoved { peer: p, .. } => {
                *p == peer
            }
        });
        if let Some(i) = last_of_peer {
            if matches!(&self.queue.waiting[i].0, ReactorEvent::PeerAdded(_)) {
                self.queue.waiting.remove(i);
                return;
            }
        }
        self.queue
            .push(ReactorEvent::PeerRemoved { peer, reason }, None, released);
    }
}

pub(crate) struct Delivery {
    events: Queue<Event>,
    channels: HashMap<ChannelId, Queue<Event>>,
    reactors: Vec<ReactorQueue>,
    /// Gossip topics with a queue of their own.
    topics: HashMap<String, Queue<Event>>,
    /// The peers announced so far and not yet gone, as events told them: what a
    /// new reactor is told first.
    announced: HashMap<PeerId, PeerInfo>,
    /// Connection events waiting (not bounded by credit): dropped beyond this many.
    max_waiting_control: usize,
    pub(crate) dropped_control: u64,
    /// How long until the next retry while blocked (backs off while nothing moves,
    /// so a stalled application costs a few wake-ups a second, not a thousand).
    retry: Duration,
}

impl Delivery {
    pub(crate) fn new(events: Sender<Event>, channels: HashMap<ChannelId, Sender<Event>>) -> Self {
        Delivery {
            events: Queue::new(events),
            channels: channels
                .into_iter()
                .map(|(c, tx)| (c, Queue::new(tx)))
                .collect(),
            reactors: Vec::new(),
            topics: HashMap::new(),
            announced: HashMap::new(),
            max_waiting_control: 65_536,
            dropped_control: 0,
            retry: RETRY_MIN,
        }
    }

    /// Registers a reactor or a topic queue.
    pub(crate) fn add_queue(
        &mut self,
        queue: NewQueue,
        released: &mut Vec<Release>,
    ) -> Result<(), ReactorError> {
        match queue {
            NewQueue::Reactor {
                channels,
                tx,
                alive,
            } => self.add_reactor(channels, tx, alive, released),
            NewQueue::Topic { topic, tx } => self.add_topic_queue(topic, tx),
        }
    }

    /// A reactor for `channels`, whose events go to `tx`: it hears of every peer
    /// announced now, then of everything as it happens.
    fn add_reactor(
        &mut self,
        channels: Vec<ChannelId>,
        tx: Sender<ReactorEvent>,
        alive: Arc<AtomicBool>,
        released: &mut Vec<Release>,
    ) -> Result<(), ReactorError> {
        self.drop_gone_reactors(released);
        for c in &channels {
            let taken = self.channels.contains_key(c)
                || self.reactors.iter().any(|r| r.channels.contains(c));
            if taken {
                return Err(ReactorError::ChannelTaken(*c));
            }
        }
        let mut r = ReactorQueue {
            channels,
            queue: Queue::new(tx),
            alive,
        };
        let mut peers: Vec<&PeerInfo> = self.announced.values().collect();
        peers.sort_by_key(|p| p.id);
        for p in peers {
            r.queue
                .push(ReactorEvent::PeerAdded(p.clone()), None, released);
        }
        self.reactors.push(r);
        Ok(())
    }

    /// A queue of its own for the gossip messages of `topic`: a slow consumer of one
    /// topic (a mempool) throttles that topic's senders, not the others'.
    fn add_topic_queue(&mut self, topic: String, tx: Sender<Event>) -> Result<(), ReactorError> {
        self.topics.retain(|_, q| !q.gone);
        if self.topics.contains_key(&topic) {
            return Err(ReactorError::TopicTaken(topic));
        }
        self.topics.insert(topic, Queue::new(tx));
        Ok(())
    }

    /// A peer was announced: every reactor hears it before any of its messages.
    pub(crate) fn peer_added(&mut self, info: PeerInfo, released: &mut Vec<Release>) {
        for r in &mut self.reactors {
            r.queue
                .push(ReactorEvent::PeerAdded(info.clone()), None, released);
        }
        self.announced.insert(info.id, info);
    }

    /// A peer's connection ended: every reactor hears it after its last message.
    pub(crate) fn peer_removed(
        &mut self,
        peer: PeerId,
        reason: &DisconnectReason,
        released: &mut Vec<Release>,
    ) {
        if self.announced.remove(&peer).is_none() {
            return;
        }
        for r in &mut self.reactors {
            r.peer_removed(peer, reason.clone(), released);
        }
    }

    /// Queues `event`; returns the releases of whatever was handed over now.
    pub(crate) fn deliver(
        &mut self,
        event: Event,
        release: Option<Release>,
        released: &mut Vec<Release>,
    ) {
        let reactor = match &event {
            Event::Message { channel, .. } => self
                .reactors
                .iter()
                .position(|r| !r.is_gone() && r.channels.contains(channel)),
            _ => None,
        };
        if let Some(i) = reactor {
            if let Event::Message {
                peer,
                channel,
                data,
            } = event
            {
                let ev = ReactorEvent::Message {
                    peer,
                    channel,
                    data,
                };
                self.reactors[i].queue.push(ev, release, released);
            }
            return;
        }
        let queue = match &event {
            Event::Message { channel, .. } => {
                self.channels.get_mut(channel).unwrap_or(&mut self.events)
            }
            Event::Gossip(g) => match self.topics.get_mut(&g.topic) {
                Some(q) if !q.gone => q,
                _ => &mut self.events,
            },
            _ => &mut self.events,
        };
        if release.is_none() && queue.waiting.len() >= self.max_waiting_control {
            self.dropped_control += 1;
            return;
        }
        queue.push(event, release, released);
    }

    /// Retries what waits; returns the releases of what was handed over.
    pub(crate) fn flush(&mut self, released: &mut Vec<Release>) {
        let mut moved = self.events.flush(released);
        for q in self.channels.values_mut() {
            moved |= q.flush(released);
        }
        for r in &mut self.reactors {
            moved |= r.queue.flush(released);
        }
        for q in self.topics.values_mut() {
            moved |= q.flush(released);
        }
        self.drop_gone_reactors(released);
        // Back off only while something waits and nothing moves.
        self.retry = if moved || !self.is_blocked() {
            RETRY_MIN
        } else {
            (self.retry * 2).min(RETRY_MAX)
        };
    }

    /// A dropped reactor's channels go back to the shared queue; the credit of what
    /// waited for it goes back to the senders.
    fn drop_gone_reactors(&mut self, released: &mut Vec<Release>) {
        self.reactors.retain_mut(|r| {
            if !r.is_gone() {
                return true;
            }
            released.extend(r.queue.waiting.drain(..).filter_map(|(_, rel)| rel));
            false
        });
    }

    /// When to retry, if anything waits.
    pub(crate) fn retry_in(&self) -> Option<Duration> {
        self.is_blocked().then_some(self.retry)
    }

    /// Events waiting for room, all queues together.
    pub(crate) fn waiting(&self) -> usize {
        self.events.waiting.len()
            + self
                .channels
                .values()
                .map(|q| q.waiting.len())
                .sum::<usize>()
            + self
                .reactors
                .iter()
                .map(|r| r.queue.waiting.len())
                .sum::<usize>()
            + self.topics.values().map(|q| q.waiting.len()).sum::<usize>()
    }

    /// Whether anything waits for room.
    pub(crate) fn is_blocked(&self) -> bool {
        !self.events.waiting.is_empty()
            || self.channels.values().any(|q| !q.waiting.is_empty())
            || self.reactors.iter().any(|r| !r.queue.waiting.is_empty())
            || self.topics.values().any(|q| !q.waiting.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Direction;

    fn info(i: u32) -> PeerInfo {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_le_bytes());
        PeerInfo {
            id: PeerId::from_bytes(id),
            addr: "127.0.0.1:1".parse().unwrap(),
            direction: Direction::Inbound,
            channels: vec![1],
        }
    }

    #[test]
    fn a_stalled_reactor_under_churn_holds_its_peers_worth_and_loses_no_lifecycle() {
        let (events, shared_rx) = crossbeam_channel::bounded(1);
        let mut d = Delivery::new(events, HashMap::new());
        let (tx, rx) = crossbeam_channel::bounded(1);
        let alive = Arc::new(AtomicBool::new(true));
        let mut released = Vec::new();
        let reactor = NewQueue::Reactor {
            channels: vec![1],
            tx,
            alive: alive.clone(),
        };
        d.add_queue(reactor, &mut released).unwrap();
        let eof = DisconnectReason::Eof;
        // The first peer fills the reactor's queue; a message from it waits.
        let first = info(0);
        d.peer_added(first.clone(), &mut released);
        let msg = Event::Message {
            peer: first.id,
            channel: 1,
            data: vec![7],
        };
        d.deliver(msg, Some((0, 1, 1)), &mut released);
        assert!(released.is_empty(), "its credit waits with it");
        // 10,000 peers come and go while the reactor reads nothing.
        for i in 1..=10_000 {
            d.peer_added(info(i), &mut released);
            d.peer_removed(info(i).id, &eof, &mut released);
        }
        assert_eq!(d.waiting(), 1, "only the message waits");
        d.peer_removed(first.id, &eof, &mut released);
        assert_eq!(d.waiting(), 2);
        // Read: the first peer's whole life, in order; credit goes back.
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(rx.recv().unwrap());
            d.flush(&mut released);
        }
        assert!(matches!(&got[0], ReactorEvent::PeerAdded(p) if p.id == first.id));
        assert!(matches!(&got[1], ReactorEvent::Message { data, .. } if data == &vec![7]));
        assert!(matches!(&got[2], ReactorEvent::PeerRemoved { .. }));
        assert_eq!(released, vec![(0, 1, 1)]);
        // Dropped: its channel's messages go to the shared queue again.
        alive.store(false, Ordering::Release);
        d.flush(&mut released);
        assert!(d.reactors.is_empty());
        d.peer_added(info(1), &mut released);
        let msg = Event::Message {
            peer: info(1).id,
            channel: 1,
            data: vec![8],
        };
        d.deliver(msg, None, &mut released);
        assert!(matches!(shared_rx.try_recv(), Ok(Event::Message { .. })));
    }
}
