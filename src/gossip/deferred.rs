//! Deferred validation: with `GossipConfig::deferred_validation`, a message that
//! passed the cheap checks and its signature is delivered to the application at
//! once and held, unforwarded and uncached, until the application's verdict
//! (`report_validation`) or its timeout. A mempool runs CheckTx on its own threads
//! this way, not on the loop thread every node of a runtime shares.
//!
//! Bounded in count and in bytes, decided before the signature check; what finds no
//! room is dropped unseen (so a later copy may still get in) and counted.

use super::*;
use crate::gossip::assembly::Assembly;

/// A message waiting for its verdict.
pub(super) enum Held {
    /// A whole message, as received (hops not yet counted).
    Whole {
        from: PeerId,
        origin: Option<PeerId>,
        msg: wire::GossipMessage,
        /// A first fragment had announced it (its IDONTWANTs went out then).
        announced: bool,
    },
    /// A completed stream: its chunks, already cut through to some peers.
    Stream {
        assembly: Box<Assembly>,
        chunks: Vec<Arc<Vec<u8>>>,
        last_from: PeerId,
    },
}

pub(super) struct Deferred {
    held: Held,
    topic: String,
    deadline: Instant,
    bytes: usize,
}

/// The messages waiting for a verdict.
#[derive(Default)]
pub(super) struct DeferredSet {
    waiting: Map<MessageId, Deferred>,
    bytes: usize,
}

impl Router {
    /// Whether a message of `len` bytes may wait for a verdict now.
    pub(super) fn deferral_room(&self, len: usize) -> bool {
        let d = &self.deferred;
        d.waiting.len() < self.config.max_deferred
            && d.bytes + len <= self.config.max_deferred_bytes
    }

    /// Holds `held` until the verdict on `id`; the application gets it now.
    pub(super) fn defer(&mut self, id: MessageId, held: Held, event: GossipEvent, now: Instant) {
        let bytes = event.data.len();
        let topic = event.topic.clone();
        self.deferred.bytes += bytes;
        self.deferred.waiting.insert(
            id,
            Deferred {
                held,
                topic,
                deadline: now + self.config.deferred_timeout,
                bytes,
            },
        );
        self.outputs.push_back(GossipOutput::Deliver(GossipEvent {
            needs_verdict: true,
            ..event
        }));
    }

    /// The application's verdict on message `id`, delivered with `needs_verdict`:
    /// accepted, it is forwarded and cached now; rejected, its sender pays as for a
    /// validator's rejection; ignored, it is dropped. `false` if `id` was not waiting
    /// (never deferred, already decided, or timed out).
    pub fn report_validation(&mut self, id: MessageId, verdict: Validation, now: Instant) -> bool {
        let Some(d) = self.deferred.waiting.remove(&id) else {
            return false;
        };
        self.deferred.bytes -= d.bytes;
        match (verdict, d.held) {
            (
                Validation::Accept,
                Held::Whole {
                    from,
                    origin,
                    msg,
                    announced,
                },
            ) => {
                self.forward_whole(from, id, &d.topic, origin, &msg, announced, now);
            }
            (
                Validation::Accept,
                Held::Stream {
                    assembly,
                    chunks,
                    last_from,
                },
            ) => {
                self.forward_stream(id, *assembly, chunks, last_from, now);
            }
            (Validation::Reject, Held::Whole { from, .. }) => {
                if let Some(t) = self.topics.get_mut(&d.topic) {
                    t.metrics.rejected += 1;
                }
                self.penalize_in(from, Penalty::InvalidMessage, &d.topic);
            }
            (Validation::Reject, Held::Stream { assembly, .. }) => {
                self.reject_stream(&assembly);
            }
            (Validation::Ignore, _) => {}
        }
        self.flush(now);
        true
    }

    /// Messages whose verdict did not come in time are dropped, as if ignored.
    pub(super) fn expire_deferred(&mut self, now: Instant) {
        let late: Vec<MessageId> = self
            .deferred
            .waiting
            .iter()
            .filter(|(_, d)| d.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(d) = self.deferred.waiting.remove(&id) {
                self.deferred.bytes -= d.bytes;
                if let Some(t) = self.topics.get_mut(&d.topic) {
                    t.metrics.verdicts_timed_out += 1;
                }
            }
        }
    }

    /// Messages waiting for a verdict now.
    pub fn awaiting_verdict(&self) -> usize {
        self.deferred.waiting.len()
    }
}
