//! Hands events to the application without ever blocking the loop.
//!
//! Each destination (the shared event queue, or a channel's own queue) is a bounded
//! crossbeam channel. What does not fit waits here, in order, and is retried; a
//! message's receive credit goes back to the peer only once the application's queue
//! took it, so a slow consumer throttles its senders instead of growing memory.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use crate::mux::ChannelId;
use crate::node::event::Event;

/// Credit to give back once an event is handed over: (connection, channel, bytes).
pub(crate) type Release = (usize, ChannelId, usize);

/// First retry of a blocked queue; doubles while nothing moves, up to the maximum.
const RETRY_MIN: Duration = Duration::from_millis(1);
const RETRY_MAX: Duration = Duration::from_millis(50);

struct Queue {
    tx: Sender<Event>,
    waiting: VecDeque<(Event, Option<Release>)>,
}

impl Queue {
    fn new(tx: Sender<Event>) -> Self {
        Queue {
            tx,
            waiting: VecDeque::new(),
        }
    }

    /// Hands over what fits, in order; returns whether anything was handed over.
    fn flush(&mut self, released: &mut Vec<Release>) -> bool {
        let mut moved = false;
        while let Some((event, release)) = self.waiting.pop_front() {
            match self.tx.try_send(event) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {
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

pub(crate) struct Delivery {
    events: Queue,
    channels: HashMap<ChannelId, Queue>,
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
            max_waiting_control: 65_536,
            dropped_control: 0,
            retry: RETRY_MIN,
        }
    }

    /// Queues `event`; returns the releases of whatever was handed over now.
    pub(crate) fn deliver(
        &mut self,
        event: Event,
        release: Option<Release>,
        released: &mut Vec<Release>,
    ) {
        let queue = match &event {
            Event::Message { channel, .. } => {
                self.channels.get_mut(channel).unwrap_or(&mut self.events)
            }
            _ => &mut self.events,
        };
        if release.is_none() && queue.waiting.len() >= self.max_waiting_control {
            self.dropped_control += 1;
            return;
        }
        queue.waiting.push_back((event, release));
        queue.flush(released);
    }

    /// Retries what waits; returns the releases of what was handed over.
    pub(crate) fn flush(&mut self, released: &mut Vec<Release>) {
        let mut moved = self.events.flush(released);
        for q in self.channels.values_mut() {
            moved |= q.flush(released);
        }
        // Back off only while something waits and nothing moves.
        self.retry = if moved || !self.is_blocked() {
            RETRY_MIN
        } else {
            (self.retry * 2).min(RETRY_MAX)
        };
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
    }

    /// Whether anything waits for room.
    pub(crate) fn is_blocked(&self) -> bool {
        !self.events.waiting.is_empty() || self.channels.values().any(|q| !q.waiting.is_empty())
    }
}
