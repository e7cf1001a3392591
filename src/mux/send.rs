//! One channel's send side: the bounded queue, its credit and its recent-bytes score.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::error::SendError;
use crate::mux::config::ChannelConfig;
use crate::mux::packet;
use crate::mux::tag::Tag;

/// Per-message send options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Drop the message if it has not started sending by then.
    pub deadline: Option<Instant>,
    /// A newer message with the same key replaces this one while it waits.
    pub replace_key: Option<u64>,
    /// [`crate::mux::Mux::withdraw`] with this key drops the message while it
    /// waits (its receiver has it from elsewhere by now). On a node only the
    /// gossip router withdraws (its own channel); on other channels it is inert.
    pub withdraw_key: Option<u64>,
}

/// A queued message.
#[derive(Debug, Clone)]
pub(crate) struct OutMsg {
    pub(crate) data: Arc<Vec<u8>>,
    pub(crate) offset: usize,
    pub(crate) opts: SendOptions,
    pub(crate) tag: Tag,
}

/// Counters of one channel on one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelCounters {
    /// Payload bytes sent.
    pub sent_bytes: u64,
    /// Messages fully sent.
    pub sent_msgs: u64,
    /// Payload bytes received.
    pub recv_bytes: u64,
    /// Messages received whole.
    pub recv_msgs: u64,
    /// Messages dropped at their deadline before sending.
    pub expired: u64,
    /// Messages replaced by a newer one with the same key.
    pub replaced: u64,
    /// Messages withdrawn while they waited.
    pub withdrawn: u64,
    /// Bytes of the withdrawn messages.
    pub withdrawn_bytes: u64,
}

pub(crate) struct SendChannel {
    pub(crate) config: ChannelConfig,
    queue: VecDeque<OutMsg>,
    /// Bytes of the queued messages not yet sent.
    queued_bytes: usize,
    /// The largest message the peer said it accepts here (never above our own).
    pub(crate) max_message: usize,
    pub(crate) credit: u64,
    /// Bytes sent recently, decaying; divided by priority it orders the channels.
    pub(crate) recent: f64,
    /// Messages that left the queue (sent, expired or replaced) since last taken.
    pub(crate) dequeued: u32,
    /// When this channel last sent data.
    pub(crate) last_sent: Option<std::time::Instant>,
    pub(crate) counters: ChannelCounters,
    /// Whether the peer announced this channel (until told, assumed).
    pub(crate) peer_serves: bool,
}

impl SendChannel {
    pub(crate) fn new(config: ChannelConfig) -> Self {
        SendChannel {
            max_message: config.max_message_size,
            config,
            queue: VecDeque::new(),
            queued_bytes: 0,
            credit: 0,
            peer_serves: true,
            recent: 0.0,
            dequeued: 0,
            last_sent: None,
            counters: ChannelCounters::default(),
        }
    }

    pub(crate) fn push(
        &mut self,
        data: Arc<Vec<u8>>,
        opts: SendOptions,
        tag: Tag,
    ) -> Result<(), SendError> {
        if data.len() > self.max_message {
            return Err(SendError::TooLarge {
                size: data.len(),
                max: self.max_message,
            });
        }
        if let Some(key) = opts.replace_key {
            let waiting = self
                .queue
                .iter_mut()
                .find(|m| m.offset == 0 && m.opts.replace_key == Some(key));
            if let Some(old) = waiting {
                let grown = self.queued_bytes - old.data.len() + data.len();
                if grown > self.config.send_queue_bytes {
                    return Err(SendError::Full);
                }
                self.queued_bytes = grown;
                *old = OutMsg {
                    data,
                    offset: 0,
                    opts,
                    tag,
                };
                self.counters.replaced += 1;
                self.dequeued += 1;
                return Ok(());
            }
        }
        // Bounded in messages and in bytes; one message always fits in an empty queue.
        let bytes_full =
            !self.queue.is_empty() && self.queued_bytes + data.len() > self.config.send_queue_bytes;
        if self.queue.len() >= self.config.send_queue_capacity || bytes_full {
            return Err(SendError::Full);
        }
        self.queued_bytes += data.len();
        self.queue.push_back(OutMsg {
            data,
            offset: 0,
            opts,
            tag,
        });
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Bytes waiting to be sent.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Drops waiting messages whose deadline passed.
    pub(crate) fn drop_expired(&mut self, now: Instant) {
        let (dropped, _) = self.drop_unstarted(|m| m.opts.deadline.is_some_and(|d| d <= now));
        self.counters.expired += dropped as u64;
    }

    /// Drops the waiting messages sent with withdraw key `key`; returns how many.
    pub(crate) fn withdraw(&mut self, key: u64) -> usize {
        let (dropped, bytes) = self.drop_unstarted(|m| m.opts.withdraw_key == Some(key));
        self.counters.withdrawn += dropped as u64;
        self.counters.withdrawn_bytes += bytes as u64;
        dropped
    }

    /// Drops the waiting messages `drop` picks, except one already partly sent
    /// (the peer holds its first fragments, so it is finished); returns how many,
    /// and their bytes.
    fn drop_unstarted(&mut self, drop: impl Fn(&OutMsg) -> bool) -> (usize, usize) {
        let before = self.queue.len();
        let mut freed = 0;
        self.queue.retain(|m| {
            let keep = m.offset > 0 || !drop(m);
            if !keep {
                freed += m.data.len();
            }
            keep
        });
        self.queued_bytes -= freed;
        let dropped = before - self.queue.len();
        self.dequeued += dropped as u32;
        (dropped, freed)
    }

    /// Can send a packet now: a message is waiting and credit allows a byte of it
    /// (an empty message needs no credit).
    pub(crate) fn ready(&self) -> bool {
        match self.queue.front() {
            Some(m) => self.credit > 0 || m.offset == m.data.len(),
            None => false,
        }
    }

    pub(crate) fn score(&self) -> f64 {
        self.recent / f64::from(self.config.priority.max(1))
    }

    /// Writes the next fragment of the head message, at most `max_payload` bytes and
    /// within credit; returns the payload bytes written (`None` if nothing fit).
    pub(crate) fn write_fragment(
        &mut self,
        out: &mut Vec<u8>,
        max_payload: usize,
    ) -> Option<usize> {
        let id = self.config.id;
        let credit = usize::try_from(self.credit).unwrap_or(usize::MAX);
        let msg = self.queue.front_mut()?;
        let remaining = msg.data.len() - msg.offset;
        let n = remaining.min(max_payload).min(credit);
        if n == 0 && remaining > 0 {
            return None;
        }
        let eof = n == remaining;
        let total_len = if msg.offset == 0 && !eof {
            msg.data.len() as u64
        } else {
            0
        };
        let tag = if msg.offset == 0 { msg.tag } else { Tag::Plain };
        packet::put_msg(
            out,
            id,
            eof,
            &msg.data[msg.offset..msg.offset + n],
            total_len,
            tag,
        );
        msg.offset += n;
        self.queued_bytes -= n;
        self.credit -= n as u64;
        self.recent += n as f64;
        self.counters.sent_bytes += n as u64;
        if eof {
            // Only plain messages are counted out: the handle counted them in (a
            // request's legs are bounded by the request limits instead).
            if self.queue.pop_front().is_some_and(|m| m.tag == Tag::Plain) {
                self.dequeued += 1;
            }
            self.counters.sent_msgs += 1;
        }
        Some(n)
    }

    /// Takes every waiting message that has not started sending (for moving them to
    /// another connection to the same peer).
    pub(crate) fn take_unsent(&mut self) -> Vec<OutMsg> {
        let started = self.queue.front().is_some_and(|m| m.offset > 0);
        let keep = usize::from(started);
        let taken: Vec<OutMsg> = self.queue.drain(keep..).collect();
        self.queued_bytes -= taken.iter().map(|m| m.data.len()).sum::<usize>();
        taken
    }
}
