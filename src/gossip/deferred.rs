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

/// A whole message that passed its checks, as received (hops not yet counted).
pub(super) struct Whole {
    pub(super) from: PeerId,
    pub(super) origin: Option<PeerId>,
    pub(super) msg: wire::GossipMessage,
    /// A first fragment had announced it (its IDONTWANTs went out then).
    pub(super) announced: bool,
    /// It answered our IWANT.
    pub(super) via_iwant: bool,
}

/// A message waiting for its verdict.
pub(super) enum Held {
    Whole(Whole),
    /// A completed stream: its chunks, already cut through to some peers; `from` is
    /// the peer credited with it.
    Stream {
        assembly: Box<Assembly>,
        chunks: Vec<Arc<Vec<u8>>>,
        from: PeerId,
        via_iwant: bool,
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
            (Validation::Accept, Held::Whole(arrival)) => {
                self.forward_whole(id, &d.topic, &arrival, now);
            }
            (
                Validation::Accept,
                Held::Stream {
                    assembly,
                    chunks,
                    from,
                    via_iwant,
                },
            ) => {
                self.forward_stream(id, *assembly, chunks, from, via_iwant, now);
            }
            (Validation::Reject, Held::Whole(arrival)) => {
                if let Some(t) = self.topics.get_mut(&d.topic) {
                    t.metrics.rejected += 1;
                }
                self.penalize_in(arrival.from, Penalty::InvalidMessage, &d.topic);
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

#[cfg(test)]
mod tests {
    use super::super::hostile_tests::{key, Harness, T};
    use super::*;

    #[test]
    fn a_copy_that_answered_our_iwant_keeps_the_promise_however_long_the_verdict_takes() {
        let config = GossipConfig {
            deferred_validation: true,
            deferred_timeout: Duration::from_secs(60),
            ..GossipConfig::default()
        };
        let mut h = Harness::with(config.clone(), None);
        let b = h.peer(2, &[T]);
        let mut m = message::build(Some(&key(50)), T, 1, 0, b"tx".to_vec());
        m.hops = 1;
        let id = message::message_id(&m);
        h.ihave(b, &[id]);
        // The IWANT goes out (after its delay) and b answers with the message.
        h.now += config.iwant_delay + config.heartbeat;
        h.r.heartbeat(h.now);
        h.drain();
        assert!(Harness::asked(&h.take(), b, &id), "we asked b for it");
        h.rpc(
            b,
            &wire::GossipRpc {
                publish: vec![m],
                ..Default::default()
            },
        );
        let delivered = h
            .take()
            .into_iter()
            .any(|o| matches!(o, GossipOutput::Deliver(ev) if ev.id == id && ev.needs_verdict));
        assert!(delivered);
        // The verdict takes a long while: b kept its promise all the same.
        for _ in 0..20 {
            h.now += config.heartbeat;
            h.r.heartbeat(h.now);
        }
        assert_eq!(h.r.peers[&b].score.broken_promises, 0.0);
        assert!(h.r.report_validation(id, Validation::Accept, h.now));
    }
}
